/* mdlmap-agent echo / listen: vsock echo client and echo server.
 *
 *   echo   [--cid 2] [--port 7] [--bytes 1M] [--type stream|seqpacket] [--conns 1]
 *          [--msg-size 64K] [--timeout 30] [--connect-timeout 10] [--progress SECS]
 *     K concurrent connections (one thread each); each sends --bytes of a
 *     deterministic pattern and verifies the echo (STREAM: byte for byte;
 *     SEQPACKET: messages of 1..--msg-size bytes, each must come back as one
 *     message of the same size and content). Prints FNV-1a 64 of what was sent
 *     and what was received per connection, then one "ECHO OK" / "ECHO FAIL" line.
 *     --progress (STREAM): a "PROGRESS conn=..." line every SECS seconds (bytes
 *     so far, receive rate, longest wait without progress) and, per connection,
 *     "echo: conn N: longest gap without progress G s ending at T s", so a test
 *     can tell a flow-control stall from a slow but moving stream.
 *   listen [--port 7] [--type stream|seqpacket] [--once | --count K]
 *     echo server for sibling tests: prints "LISTEN READY port=P" when bound.
 *
 * Exit codes: see agent_util.h (3 = refused/reset, 4 = timeout, 1 = mismatch). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "agent.h"
#include "agent_util.h"
#include "agent_xfer.h"

struct echo_opts {
    uint64_t cid, bytes, msg_size;
    uint32_t port;
    int type;
    unsigned conns, stall_s, connect_s;
    double progress_s;   /* 0: no progress lines */
};

struct echo_job {
    const struct echo_opts *o;
    unsigned idx;
    struct xfer_result r;
    double t_connected;
};

static int opt_value(int argc, char **argv, int *i, const char **val)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: missing value\n", argv[*i]);
        return -1;
    }
    *val = argv[++*i];
    return 0;
}

static void *echo_thread(void *arg)
{
    struct echo_job *j = arg;
    const struct echo_opts *o = j->o;
    int fd = vsock_connect(o->cid, o->port, o->type, o->connect_s);
    if (fd < 0) {
        memset(&j->r, 0, sizeof(j->r));
        j->r.status = errno_to_exit(-fd);
        snprintf(j->r.err, sizeof(j->r.err), "connect to cid %llu port %u: %s%s",
                 (unsigned long long)o->cid, o->port, strerror(-fd),
                 j->r.status == AGENT_EREFUSED ? " (refused)" : "");
        return NULL;
    }
    j->t_connected = now_sec();
    uint64_t seed = 0x6d646c6dULL + j->idx;
    if (o->type == SOCK_SEQPACKET)
        xfer_seqpacket(fd, o->bytes, (size_t)o->msg_size, seed, o->stall_s, &j->r);
    else {
        struct xfer_progress pg = { .interval_s = o->progress_s, .id = j->idx };
        xfer_stream(fd, o->bytes, (size_t)o->msg_size, seed, o->stall_s, o->progress_s > 0 ? &pg : NULL, true,
                    &j->r);
    }
    close(fd);
    return NULL;
}

int cmd_echo(int argc, char **argv)
{
    struct echo_opts o = { .cid = VMADDR_CID_HOST, .port = 7, .bytes = 1 << 20,
                           .msg_size = 64 << 10, .type = SOCK_STREAM, .conns = 1,
                           .stall_s = 30, .connect_s = 10 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        uint64_t n;
        if (opt_value(argc, argv, &i, &v) < 0)
            return AGENT_EUSAGE;
        if (!strcmp(a, "--cid") && !parse_u64(v, &n))
            o.cid = n;
        else if (!strcmp(a, "--port") && !parse_u64(v, &n) && n <= 0xffffffffULL)
            o.port = (uint32_t)n;
        else if (!strcmp(a, "--bytes") && !parse_size(v, &n))
            o.bytes = n;
        else if (!strcmp(a, "--msg-size") && !parse_size(v, &n) && n > 0 && n <= (16 << 20))
            o.msg_size = n;
        else if (!strcmp(a, "--type") && parse_socktype(v) >= 0)
            o.type = parse_socktype(v);
        else if (!strcmp(a, "--conns") && !parse_u64(v, &n) && n > 0 && n <= 256)
            o.conns = (unsigned)n;
        else if (!strcmp(a, "--timeout") && !parse_u64(v, &n) && n > 0 && n < 100000)
            o.stall_s = (unsigned)n;
        else if (!strcmp(a, "--connect-timeout") && !parse_u64(v, &n) && n < 100000)
            o.connect_s = (unsigned)n;
        else if (!strcmp(a, "--progress") && !parse_u64(v, &n) && n > 0 && n < 100000)
            o.progress_s = (double)n;
        else {
            fprintf(stderr, "echo: bad option %s %s\n", a, v);
            return AGENT_EUSAGE;
        }
    }

    struct echo_job *jobs = calloc(o.conns, sizeof(*jobs));
    pthread_t *th = calloc(o.conns, sizeof(*th));
    if (!jobs || !th)
        return AGENT_EIO;
    printf("echo: %u %s connection(s) to cid %llu port %u, %llu bytes each, chunk/max message %llu\n",
           o.conns, socktype_name(o.type), (unsigned long long)o.cid, o.port,
           (unsigned long long)o.bytes, (unsigned long long)o.msg_size);
    fflush(stdout);
    double t0 = now_sec();
    for (unsigned i = 0; i < o.conns; i++) {
        jobs[i].o = &o;
        jobs[i].idx = i;
        if (pthread_create(&th[i], NULL, echo_thread, &jobs[i]) != 0) {
            fprintf(stderr, "echo: pthread_create failed\n");
            return AGENT_EIO;
        }
    }
    int status = AGENT_OK;
    unsigned ok = 0;
    uint64_t total = 0;
    for (unsigned i = 0; i < o.conns; i++) {
        pthread_join(th[i], NULL);
        struct xfer_result *r = &jobs[i].r;
        double dt = r->t_rx_done > r->t_start ? r->t_rx_done - r->t_start : 0;
        if (r->t_start == 0) {   /* never connected */
            printf("echo: conn %u: FAIL: %s\n", i, r->err);
            if (status == AGENT_OK)
                status = r->status;
            continue;
        }
        printf("echo: conn %u: sent %llu B fnv1a=0x%016llx, received %llu B fnv1a=0x%016llx",
               i, (unsigned long long)r->sent, (unsigned long long)r->fnv_tx,
               (unsigned long long)r->rcvd, (unsigned long long)r->fnv_rx);
        if (o.type == SOCK_SEQPACKET)
            printf(", %llu messages", (unsigned long long)r->msgs);
        if (r->status == AGENT_OK) {
            printf(", %.2f s, %.2f MB/s: OK\n", dt, dt > 0 ? (double)r->rcvd / dt / 1e6 : 0.0);
            ok++;
            total += r->rcvd;
        } else {
            printf(": FAIL: %s\n", r->err);
            if (status == AGENT_OK)
                status = r->status;
        }
        if (o.progress_s > 0 && o.type == SOCK_STREAM)
            printf("echo: conn %u: longest gap without progress %.3f s ending at %.2f s\n", i,
                   r->max_gap, r->max_gap_end);
    }
    double dt = now_sec() - t0;
    if (status == AGENT_OK)
        printf("ECHO OK: type=%s conns=%u bytes=%llu each, %llu total echoed in %.2f s (%.2f MB/s)\n",
               socktype_name(o.type), o.conns, (unsigned long long)o.bytes,
               (unsigned long long)total, dt, dt > 0 ? (double)total / dt / 1e6 : 0.0);
    else
        printf("ECHO FAIL: type=%s conns=%u: %u ok, %u failed, exit %d\n", socktype_name(o.type),
               o.conns, ok, o.conns - ok, status);
    fflush(stdout);
    free(jobs);
    free(th);
    return status;
}

/* ---- listen ---- */

struct peer {
    int fd, type;
    unsigned idx;
    struct sockaddr_vm sa;
    int status;
};

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void *serve_peer(void *arg)
{
    struct peer *pe = arg;
    size_t cap = 256 << 10;
    uint8_t *buf = malloc(cap + 1);
    uint64_t bytes = 0, msgs = 0, h = FNV1A64_INIT;
    const char *why = "eof";
    int err = 0;
    pe->status = AGENT_OK;
    while (buf) {
        struct iovec iov = { .iov_base = buf, .iov_len = cap + (pe->type == SOCK_SEQPACKET) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n = recvmsg(pe->fd, &mh, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            why = "recv error";
            pe->status = errno_to_exit(err);
            break;
        }
        if (n == 0)
            break;
        if (mh.msg_flags & MSG_TRUNC) {
            why = "message larger than 256 KiB";
            pe->status = AGENT_EVERIFY;
            break;
        }
        h = fnv1a64(h, buf, (size_t)n);
        bytes += (uint64_t)n;
        msgs++;
        int e = write_all(pe->fd, buf, (size_t)n);
        if (e < 0) {
            err = -e;
            why = "send error";
            pe->status = errno_to_exit(err);
            break;
        }
    }
    printf("listen: conn %u from cid %u port %u: echoed %llu B in %llu %s fnv1a=0x%016llx, end: %s%s%s\n",
           pe->idx, pe->sa.svm_cid, pe->sa.svm_port, (unsigned long long)bytes,
           (unsigned long long)msgs, pe->type == SOCK_SEQPACKET ? "messages" : "reads",
           (unsigned long long)h, why, err ? ": " : "", err ? strerror(err) : "");
    fflush(stdout);
    free(buf);
    close(pe->fd);
    return NULL;
}

/* This guest's CID (from /dev/vsock), or VMADDR_CID_ANY if unknown. */
static unsigned local_cid(void)
{
    unsigned cid = VMADDR_CID_ANY;
    int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0)
            cid = VMADDR_CID_ANY;
        close(fd);
    }
    return cid;
}

int cmd_listen(int argc, char **argv)
{
    uint32_t port = 7;
    int type = SOCK_STREAM;
    uint64_t count = 0;   /* 0: forever */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        uint64_t n;
        if (!strcmp(a, "--once")) {
            count = 1;
            continue;
        }
        if (opt_value(argc, argv, &i, &v) < 0)
            return AGENT_EUSAGE;
        if (!strcmp(a, "--port") && !parse_u64(v, &n) && n <= 0xffffffffULL)
            port = (uint32_t)n;
        else if (!strcmp(a, "--type") && parse_socktype(v) >= 0)
            type = parse_socktype(v);
        else if (!strcmp(a, "--count") && !parse_u64(v, &n) && n > 0 && n <= 4096)
            count = n;
        else {
            fprintf(stderr, "listen: bad option %s %s\n", a, v);
            return AGENT_EUSAGE;
        }
    }
    int lfd = vsock_listen(port, type, 64);
    if (lfd < 0) {
        fprintf(stderr, "listen: port %u: %s\n", port, strerror(-lfd));
        return AGENT_EIO;
    }
    printf("LISTEN READY port=%u type=%s cid=%u\n", port, socktype_name(type), local_cid());
    fflush(stdout);

    struct peer *peers = calloc(count ? count : 1, sizeof(*peers));
    pthread_t *th = calloc(count ? count : 1, sizeof(*th));
    if (!peers || !th)
        return AGENT_EIO;
    int status = AGENT_OK;
    for (uint64_t k = 0; count == 0 || k < count; k++) {
        struct sockaddr_vm sa;
        socklen_t sl = sizeof(sa);
        int fd = accept(lfd, (struct sockaddr *)&sa, &sl);
        if (fd < 0) {
            if (errno == EINTR) {
                k--;
                continue;
            }
            fprintf(stderr, "listen: accept: %s\n", strerror(errno));
            return AGENT_EIO;
        }
        if (count == 0) {
            /* forever: one detached thread per connection */
            struct peer *pe = calloc(1, sizeof(*pe));
            pthread_t t;
            if (!pe)
                return AGENT_EIO;
            *pe = (struct peer){ .fd = fd, .type = type, .idx = (unsigned)k, .sa = sa };
            if (pthread_create(&t, NULL, serve_peer, pe) == 0)
                pthread_detach(t);
            continue;
        }
        peers[k] = (struct peer){ .fd = fd, .type = type, .idx = (unsigned)k, .sa = sa };
        if (pthread_create(&th[k], NULL, serve_peer, &peers[k]) != 0)
            return AGENT_EIO;
    }
    for (uint64_t k = 0; k < count; k++) {
        pthread_join(th[k], NULL);
        if (peers[k].status != AGENT_OK && status == AGENT_OK)
            status = peers[k].status;
    }
    close(lfd);
    printf("LISTEN DONE: %llu connection(s), exit %d\n", (unsigned long long)count, status);
    fflush(stdout);
    free(peers);
    free(th);
    return status;
}
