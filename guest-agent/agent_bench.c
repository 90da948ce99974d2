/* mdlmap-agent bench: echo throughput over vsock or a virtio-serial port.
 *
 *   bench [--transport vsock|serial] [--bytes 16M] [--chunk 64K] [--timeout 60]
 *         [--runs 1] [--no-verify] [--mark TAG]
 *         [--cid 2] [--port 7]            (vsock: the host echo service)
 *         [--dev PATH | --name mdlmap.bench] (serial: a port whose host side echoes)
 *
 * What is measured: one full-duplex echo stream per run, all runs on one
 * connection. The guest writes --bytes as fast as the transport accepts them
 * while reading the echo back. Figures:
 *   g2h  = bytes written / (last write done - first write)   guest -> host
 *   h2g  = bytes read / (last byte read - first byte read)    host -> guest
 *   echo = bytes echoed / total time                          round trip
 * Both directions run at the same time (the echo couples them), so g2h and h2g
 * are rates under bidirectional load, not one-way maxima.
 *
 * Verification is kept out of the timed runs: first one untimed run sends a
 * position-dependent pattern and checks every byte that comes back (and the
 * checksums of both directions); it prints "BENCH-VERIFY ... ok". Then the
 * --runs timed runs send one buffer, filled once, over and over and only count
 * bytes, so no per-byte work of the guest's own is in the figures. --no-verify
 * skips the checked run (a script that verified the transport in this boot).
 * Each timed run prints one line:
 *   "BENCH transport=... run=K bytes=... secs=... g2h_MBps=... h2g_MBps=... echo_MBps=... max_gap=..."
 * --mark TAG: around each timed run, print "BENCH-CPU b:TAG-K <cpu line of
 * /proc/stat>" and "BENCH-CPU e:TAG-K ..." (bench/lib.sh samples the host
 * side's CPU when it sees them). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "agent.h"
#include "agent_util.h"
#include "agent_xfer.h"

/* Find /dev/vportXpY whose /sys/class/virtio-ports/.../name is `name`. */
static int find_port(const char *name, char *path, size_t cap)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    int found = -1;
    if (!d)
        return -1;
    while (found < 0 && (e = readdir(d))) {
        char f[512], buf[128] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(f, sizeof(f), "/sys/class/virtio-ports/%s/name", e->d_name);
        FILE *fp = fopen(f, "r");
        if (!fp)
            continue;
        if (fgets(buf, sizeof(buf), fp)) {
            buf[strcspn(buf, "\n")] = 0;
            if (!strcmp(buf, name)) {
                snprintf(path, cap, "/dev/%s", e->d_name);
                found = 0;
            }
        }
        fclose(fp);
    }
    closedir(d);
    return found;
}

static double rate(uint64_t bytes, double t0, double t1)
{
    return t1 > t0 ? (double)bytes / (t1 - t0) / 1e6 : 0.0;
}

/* "BENCH-CPU TAG cpu  user nice system idle ..." (the guest's CPU time so far). */
static void cpu_mark(char phase, const char *tag, unsigned run)
{
    char line[256] = "cpu";
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        if (!fgets(line, sizeof(line), f))
            snprintf(line, sizeof(line), "cpu");
        fclose(f);
    }
    line[strcspn(line, "\n")] = 0;
    printf("BENCH-CPU %c:%s-%u %s\n", phase, tag, run, line);
    fflush(stdout);
}

int cmd_bench(int argc, char **argv)
{
    const char *transport = "vsock", *dev = NULL, *pname = "mdlmap.bench";
    const char *mark = NULL;
    uint64_t bytes = 16 << 20, chunk = 64 << 10, cid = VMADDR_CID_HOST, port = 7, tmo = 60, runs = 1;
    bool verify = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--no-verify")) {
            verify = false;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench: %s needs a value\n", a);
            return AGENT_EUSAGE;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--transport"))
            transport = v;
        else if (!strcmp(a, "--dev"))
            dev = v;
        else if (!strcmp(a, "--name"))
            pname = v;
        else if (!strcmp(a, "--bytes"))
            bad = parse_size(v, &bytes);
        else if (!strcmp(a, "--chunk"))
            bad = parse_size(v, &chunk) || chunk == 0 || chunk > (16 << 20);
        else if (!strcmp(a, "--cid"))
            bad = parse_u64(v, &cid);
        else if (!strcmp(a, "--port"))
            bad = parse_u64(v, &port) || port > 0xffffffffULL;
        else if (!strcmp(a, "--timeout"))
            bad = parse_u64(v, &tmo) || tmo == 0 || tmo > 100000;
        else if (!strcmp(a, "--runs"))
            bad = parse_u64(v, &runs) || runs > 1000;
        else if (!strcmp(a, "--mark"))
            mark = v;
        else
            bad = 1;
        if (bad) {
            fprintf(stderr, "bench: bad option %s %s\n", a, v);
            return AGENT_EUSAGE;
        }
    }

    int fd;
    char path[300];
    if (!strcmp(transport, "vsock")) {
        fd = vsock_connect(cid, (uint32_t)port, SOCK_STREAM, 10);
        if (fd < 0) {
            printf("BENCH FAIL transport=vsock: connect cid %llu port %llu: %s\n",
                   (unsigned long long)cid, (unsigned long long)port, strerror(-fd));
            return errno_to_exit(-fd);
        }
        snprintf(path, sizeof(path), "cid %llu port %llu", (unsigned long long)cid,
                 (unsigned long long)port);
    } else if (!strcmp(transport, "serial")) {
        if (dev)
            snprintf(path, sizeof(path), "%s", dev);
        else if (find_port(pname, path, sizeof(path)) < 0) {
            printf("BENCH FAIL transport=serial: no virtio-serial port named %s\n", pname);
            return AGENT_EIO;
        }
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            printf("BENCH FAIL transport=serial: open %s: %s\n", path, strerror(errno));
            return AGENT_EIO;
        }
    } else {
        fprintf(stderr, "bench: --transport vsock|serial\n");
        return AGENT_EUSAGE;
    }

    struct xfer_result r;
    int rc = AGENT_OK;
    if (verify) {
        xfer_stream(fd, bytes, (size_t)chunk, 0xbe0c4ULL, (unsigned)tmo, NULL, true, &r);
        if (r.status == AGENT_OK && r.fnv_tx != r.fnv_rx) {
            snprintf(r.err, sizeof(r.err), "checksums differ: sent 0x%016llx, received 0x%016llx",
                     (unsigned long long)r.fnv_tx, (unsigned long long)r.fnv_rx);
            r.status = AGENT_EVERIFY;
        }
        if (r.status != AGENT_OK) {
            printf("BENCH FAIL transport=%s (%s): checked run: %s\n", transport, path, r.err);
            rc = r.status;
        } else {
            printf("BENCH-VERIFY transport=%s bytes=%llu ok every byte, fnv=0x%016llx (untimed)\n", transport,
                   (unsigned long long)bytes, (unsigned long long)r.fnv_rx);
        }
        fflush(stdout);
    }
    for (unsigned k = 1; rc == AGENT_OK && k <= runs; k++) {
        if (mark)
            cpu_mark('b', mark, k);
        xfer_stream(fd, bytes, (size_t)chunk, 0xbe0c4ULL, (unsigned)tmo, NULL, false, &r);
        if (mark)
            cpu_mark('e', mark, k);
        if (r.status != AGENT_OK) {
            printf("BENCH FAIL transport=%s (%s): run %u: %s\n", transport, path, k, r.err);
            rc = r.status;
            break;
        }
        printf("BENCH transport=%s run=%u path=\"%s\" bytes=%llu chunk=%llu secs=%.3f g2h_MBps=%.2f "
               "h2g_MBps=%.2f echo_MBps=%.2f max_gap=%.3f\n",
               transport, k, path, (unsigned long long)bytes, (unsigned long long)chunk, r.t_rx_done - r.t_start,
               rate(r.sent, r.t_start, r.t_tx_done), rate(r.rcvd, r.t_first_rx, r.t_rx_done),
               rate(r.rcvd, r.t_start, r.t_rx_done), r.max_gap);
        fflush(stdout);
    }
    close(fd);
    return rc;
}
