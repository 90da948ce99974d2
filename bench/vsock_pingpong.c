/* hostd's CPU and syscalls per 1-byte ping-pong and per bulk packet, through a
 * real mdlmap-hostd process driven by the vhost-user harness (no VM).
 *
 *   vsock_pingpong PATH-TO-mdlmap-hostd [N pingpongs] [M bulk packets] [R repetitions]
 *
 * Each repetition: N ping-pongs of 1 byte to the echo service (port 7) on one
 * connection, then M packets of 4 KiB each way echoed on another. Around each
 * phase we read hostd's on-CPU time (/proc/PID/task/N/schedstat, ns, summed
 * over threads) and its read/write syscall counts (/proc/PID/io syscr+syscw:
 * eventfd/timerfd reads and writes count, epoll_wait/epoll_ctl/timerfd_settime
 * do not) and how often it was scheduled in (schedstat's third field: about
 * one per wake-up). Prints median/min/max over the R repetitions. Figures, never a
 * pass/fail verdict (exit 1 only when the harness itself fails). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_stats.h"
#include "harness.h"

#define BULK_PKT 4096u

struct sample {
    uint64_t cpu_ns;
    uint64_t slices; /* times scheduled onto a CPU: ~ wake-ups */
    uint64_t sysc;   /* syscr + syscw */
};

static uint64_t cpu_ns(pid_t pid, uint64_t *slices)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    uint64_t sum = 0;
    if (!dir)
        return 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        char p2[384];
        snprintf(p2, sizeof(p2), "%s/%s/schedstat", path, e->d_name);
        FILE *f = fopen(p2, "r");
        unsigned long long ns = 0, wait = 0, n = 0;
        if (f) {
            if (fscanf(f, "%llu %llu %llu", &ns, &wait, &n) == 3) {
                sum += ns;
                *slices += n;
            }
            fclose(f);
        }
    }
    closedir(dir);
    return sum;
}

static uint64_t syscalls(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    uint64_t sum = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (sscanf(line, "syscr: %llu", &v) == 1 || sscanf(line, "syscw: %llu", &v) == 1)
            sum += v;
    }
    fclose(f);
    return sum;
}

static struct sample snap(pid_t pid)
{
    struct sample s = { 0 };
    s.cpu_ns = cpu_ns(pid, &s.slices);
    s.sysc = syscalls(pid);
    return s;
}

static int pingpong(struct vdev *d, unsigned n)
{
    int err = 0;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (!c) {
        fprintf(stderr, "connect to echo: %s\n", strerror(-err));
        return -1;
    }
    for (unsigned i = 0; i < n; i++) {
        uint8_t b = (uint8_t)i, r = 0;
        if (vc_send_all(c, &b, 1, 3000) || vc_recv_all(c, &r, 1, 3000) || r != b) {
            fprintf(stderr, "ping-pong %u failed\n", i);
            return -1;
        }
    }
    vc_close(c, 3000, NULL);
    return 0;
}

static int bulk(struct vdev *d, unsigned m, uint8_t *out, uint8_t *in)
{
    int err = 0;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (!c) {
        fprintf(stderr, "connect to echo: %s\n", strerror(-err));
        return -1;
    }
    size_t len = (size_t)m * BULK_PKT;
    int rc = vc_echo(c, out, in, len, 60000);
    if (rc || memcmp(out, in, len)) {
        fprintf(stderr, "bulk echo failed: %s\n", rc ? strerror(-rc) : "data differs");
        return -1;
    }
    vc_close(c, 3000, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    unsigned n = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 2000;
    unsigned m = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 0) : 2000;
    unsigned r = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 0) : 7;
    if (!n || !m || !r)
        return 2;
    uint64_t cid = 3;
    struct hd_proc p;
    if (hd_start(&p, bin, 1, &cid, NULL)) {
        fprintf(stderr, "hostd did not start\n");
        return 1;
    }
    struct vdev *d = vdev_alloc();
    if (vdev_up(d, p.vm[0].sock, cid, NULL)) {
        fprintf(stderr, "bring-up: %s\n", d->last_err);
        hd_kill(&p);
        return 1;
    }
    d->max_pkt = BULK_PKT;   /* M packets of this size each way */
    size_t len = (size_t)m * BULK_PKT;
    uint8_t *out = malloc(len), *in = malloc(len);
    double *pp_us = calloc(r, sizeof(double)), *pp_sc = calloc(r, sizeof(double));
    double *bk_us = calloc(r, sizeof(double)), *bk_sc = calloc(r, sizeof(double));
    double *pp_wk = calloc(r, sizeof(double)), *bk_wk = calloc(r, sizeof(double));
    if (!out || !in || !pp_us || !pp_sc || !bk_us || !bk_sc || !pp_wk || !bk_wk)
        return 2;
    fill_pattern(out, len, 7);
    int rc = 0;
    pingpong(d, n / 10 + 1);   /* warm-up: first-touch page faults, allocations */
    for (unsigned i = 0; i < r && !rc; i++) {
        struct sample a = snap(p.pid);
        rc = pingpong(d, n);
        struct sample b = snap(p.pid);
        rc = rc ? rc : bulk(d, m, out, in);
        struct sample c = snap(p.pid);
        pp_us[i] = (double)(b.cpu_ns - a.cpu_ns) / 1e3 / n;
        pp_sc[i] = (double)(b.sysc - a.sysc) / n;
        bk_us[i] = (double)(c.cpu_ns - b.cpu_ns) / 1e3 / m;
        bk_sc[i] = (double)(c.sysc - b.sysc) / m;
        pp_wk[i] = (double)(b.slices - a.slices) / n;
        bk_wk[i] = (double)(c.slices - b.slices) / m;
    }
    if (!rc) {
        printf("hostd %s: %u ping-pongs (1 byte), %u bulk packets (%u B) per run\n", bin, n, m, BULK_PKT);
        bench_report("ping-pong: hostd CPU per round trip", "us", pp_us, r);
        bench_report("ping-pong: read+write syscalls/rt", "", pp_sc, r);
        bench_report("ping-pong: hostd wake-ups/rt", "", pp_wk, r);
        bench_report("bulk: hostd CPU per packet", "us", bk_us, r);
        bench_report("bulk: read+write syscalls/packet", "", bk_sc, r);
        bench_report("bulk: hostd wake-ups/packet", "", bk_wk, r);
    }
    vdev_down(d);
    free(d);
    if (hd_stop(&p))
        rc = -1;
    free(out);
    free(in);
    free(pp_us);
    free(pp_sc);
    free(bk_us);
    free(bk_sc);
    free(pp_wk);
    free(bk_wk);
    return rc ? 1 : 0;
}
