/* Stream pump and SEQPACKET exchange used by echo and bench. */
#include "agent_xfer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent_util.h"

static void fail(struct xfer_result *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct xfer_result *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
    r->status = status;
}

static void result_init(struct xfer_result *r)
{
    memset(r, 0, sizeof(*r));
    r->fnv_tx = r->fnv_rx = FNV1A64_INIT;
    r->t_start = now_sec();
}

/* Index of the first differing byte, or len. */
static size_t first_diff(const uint8_t *a, const uint8_t *b, size_t len)
{
    size_t i = 0;
    while (i < len && a[i] == b[i])
        i++;
    return i;
}

static int socket_error(int fd)
{
    int e = 0;
    socklen_t l = sizeof(e);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
        return 0;   /* not a socket (virtio-serial port) */
    return e;
}

/* Bytes moved at time t: record the wait that just ended if it is the longest. */
static void progress_at(struct xfer_result *r, double *last_progress, double t)
{
    if (t - *last_progress > r->max_gap) {
        r->max_gap = t - *last_progress;
        r->max_gap_end = t - r->t_start;
    }
    *last_progress = t;
}

static void progress_print(const struct xfer_progress *pg, const struct xfer_result *r, double t,
                           uint64_t rcvd_before, double dt)
{
    /* one printf per line: concurrent connections do not interleave within it */
    printf("PROGRESS conn=%u t=%.2f sent=%llu rcvd=%llu rx_MBps=%.2f gap=%.3f\n", pg->id,
           t - r->t_start, (unsigned long long)r->sent, (unsigned long long)r->rcvd,
           dt > 0 ? (double)(r->rcvd - rcvd_before) / dt / 1e6 : 0.0, r->max_gap);
    fflush(stdout);
}

void xfer_stream(int fd, uint64_t total, size_t chunk, uint64_t seed, unsigned stall_s,
                 const struct xfer_progress *pg, bool verify, struct xfer_result *r)
{
    result_init(r);
    uint8_t *wbuf = malloc(chunk), *rbuf = malloc(chunk), *ebuf = verify ? malloc(chunk) : NULL;
    if (!wbuf || !rbuf || (verify && !ebuf)) {
        fail(r, AGENT_EIO, "out of memory");
        goto out;
    }
    /* Unverified: every write sends the same chunk, filled once, and nothing
     * received is looked at, so the loop touches no byte itself. */
    if (!verify)
        pattern_fill(wbuf, seed, 0, chunk);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);

    size_t wlen = 0, woff = 0;   /* pending write buffer */
    double last_progress = r->t_start;
    double next_report = pg ? r->t_start + pg->interval_s : 0, last_report = r->t_start;
    uint64_t rcvd_at_report = 0;
    if (total == 0)
        r->t_tx_done = r->t_first_rx = r->t_start;
    while (r->rcvd < total) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (r->sent < total)
            p.events |= POLLOUT;
        int n = poll(&p, 1, 200);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail(r, AGENT_EIO, "poll: %s", strerror(errno));
            goto out;
        }
        double t = now_sec();
        if (pg && t >= next_report) {
            progress_print(pg, r, t, rcvd_at_report, t - last_report);
            rcvd_at_report = r->rcvd;
            last_report = t;
            next_report = t + pg->interval_s;
        }
        if (n == 0) {
            if (t - last_progress > stall_s) {
                progress_at(r, &last_progress, t);   /* the wait that failed is the longest */
                fail(r, AGENT_ETIMEOUT, "stalled for %us: sent %llu, received %llu of %llu",
                     stall_s, (unsigned long long)r->sent, (unsigned long long)r->rcvd,
                     (unsigned long long)total);
                goto out;
            }
            continue;
        }
        if ((p.revents & POLLOUT) && r->sent < total) {
            if (woff == wlen) {
                uint64_t left = total - r->sent;
                wlen = left < chunk ? (size_t)left : chunk;
                woff = 0;
                if (verify)
                    pattern_fill(wbuf, seed, r->sent, wlen);
            }
            ssize_t w = write(fd, wbuf + woff, wlen - woff);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                int e = errno;
                fail(r, errno_to_exit(e), "write after %llu bytes: %s",
                     (unsigned long long)r->sent, strerror(e));
                goto out;
            }
            if (w > 0) {
                if (verify)
                    r->fnv_tx = fnv1a64(r->fnv_tx, wbuf + woff, (size_t)w);
                woff += (size_t)w;
                r->sent += (uint64_t)w;
                progress_at(r, &last_progress, t);
                if (r->sent == total)
                    r->t_tx_done = t;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t rd = read(fd, rbuf, chunk);
            if (rd < 0 && errno != EAGAIN && errno != EINTR) {
                int e = errno;
                fail(r, errno_to_exit(e), "read after %llu bytes: %s",
                     (unsigned long long)r->rcvd, strerror(e));
                goto out;
            }
            if (rd == 0) {
                int e = socket_error(fd);
                fail(r, e ? errno_to_exit(e) : AGENT_EIO,
                     "peer closed after %llu of %llu bytes%s%s", (unsigned long long)r->rcvd,
                     (unsigned long long)total, e ? ": " : "", e ? strerror(e) : "");
                goto out;
            }
            if (rd > 0) {
                if (r->rcvd + (uint64_t)rd > total) {
                    fail(r, AGENT_EVERIFY, "received %llu bytes more than sent",
                         (unsigned long long)(r->rcvd + (uint64_t)rd - total));
                    goto out;
                }
                if (r->rcvd == 0)
                    r->t_first_rx = t;
                size_t d = (size_t)rd;
                if (verify) {
                    pattern_fill(ebuf, seed, r->rcvd, (size_t)rd);
                    d = first_diff(rbuf, ebuf, (size_t)rd);
                    r->fnv_rx = fnv1a64(r->fnv_rx, rbuf, (size_t)rd);
                }
                if (d < (size_t)rd) {
                    fail(r, AGENT_EVERIFY, "data mismatch at offset %llu: got 0x%02x, want 0x%02x",
                         (unsigned long long)(r->rcvd + d), rbuf[d], ebuf[d]);
                    r->rcvd += (uint64_t)rd;
                    goto out;
                }
                r->rcvd += (uint64_t)rd;
                progress_at(r, &last_progress, t);
            }
        }
    }
    r->t_rx_done = now_sec();
    if (pg)
        progress_print(pg, r, r->t_rx_done, rcvd_at_report, r->t_rx_done - last_report);
out:
    free(wbuf);
    free(rbuf);
    free(ebuf);
}

size_t seq_msg_size(uint64_t seed, uint64_t i, size_t max_msg)
{
    /* A few edge sizes first, then pseudo-random ones. */
    static const size_t edges[] = { 1, 4096, 4097, 4052, 65536, 2, 1500 };
    if (i < sizeof(edges) / sizeof(edges[0]))
        return edges[i] < max_msg ? edges[i] : max_msg;
    if (i % 16 == 15)
        return max_msg;
    return 1 + (size_t)(mix64(seed * 0x1000193ULL + i) % max_msg);
}

/* Wait for fd to become ready for `events`; 0 ok, -1 timeout, -2 error. */
static int wait_fd(int fd, short events, unsigned stall_s)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        int n = poll(&p, 1, (int)stall_s * 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -2;
        return n == 0 ? -1 : 0;
    }
}

void xfer_seqpacket(int fd, uint64_t total, size_t max_msg, uint64_t seed, unsigned stall_s,
                    struct xfer_result *r)
{
    result_init(r);
    uint8_t *wbuf = malloc(max_msg), *rbuf = malloc(max_msg + 1);
    if (!wbuf || !rbuf) {
        fail(r, AGENT_EIO, "out of memory");
        goto out;
    }
    for (uint64_t i = 0; r->sent < total; i++) {
        size_t len = seq_msg_size(seed, i, max_msg);
        if (len > total - r->sent)
            len = (size_t)(total - r->sent);
        pattern_fill(wbuf, seed + i, 0, len);
        if (wait_fd(fd, POLLOUT, stall_s) == -1) {
            fail(r, AGENT_ETIMEOUT, "send of message %llu stalled", (unsigned long long)i);
            goto out;
        }
        ssize_t w = send(fd, wbuf, len, MSG_NOSIGNAL);
        if (w < 0) {
            int e = errno;
            fail(r, errno_to_exit(e), "send message %llu (%zu bytes): %s",
                 (unsigned long long)i, len, strerror(e));
            goto out;
        }
        if ((size_t)w != len) {
            fail(r, AGENT_EVERIFY, "message %llu: sent %zd of %zu bytes", (unsigned long long)i,
                 w, len);
            goto out;
        }
        r->sent += len;
        r->fnv_tx = fnv1a64(r->fnv_tx, wbuf, len);
        if (i == 0)
            r->t_first_rx = now_sec();

        if (wait_fd(fd, POLLIN, stall_s) == -1) {
            fail(r, AGENT_ETIMEOUT, "no reply to message %llu (%zu bytes) within %us",
                 (unsigned long long)i, len, stall_s);
            goto out;
        }
        struct iovec iov = { .iov_base = rbuf, .iov_len = max_msg + 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t rd = recvmsg(fd, &mh, 0);
        if (rd < 0) {
            int e = errno;
            fail(r, errno_to_exit(e), "recv reply %llu: %s", (unsigned long long)i, strerror(e));
            goto out;
        }
        if (rd == 0) {
            fail(r, AGENT_EIO, "peer closed before reply %llu", (unsigned long long)i);
            goto out;
        }
        r->fnv_rx = fnv1a64(r->fnv_rx, rbuf, (size_t)rd);
        r->rcvd += (uint64_t)rd;
        if ((size_t)rd != len || (mh.msg_flags & MSG_TRUNC)) {
            fail(r, AGENT_EVERIFY, "boundary lost: message %llu sent as %zu bytes, came back as %zd%s",
                 (unsigned long long)i, len, rd, (mh.msg_flags & MSG_TRUNC) ? " (truncated)" : "");
            goto out;
        }
        size_t d = first_diff(rbuf, wbuf, len);
        if (d < len) {
            fail(r, AGENT_EVERIFY, "message %llu (%zu bytes): mismatch at byte %zu", (unsigned long long)i,
                 len, d);
            goto out;
        }
        r->msgs++;
    }
    r->t_tx_done = r->t_rx_done = now_sec();
out:
    free(wbuf);
    free(rbuf);
}
