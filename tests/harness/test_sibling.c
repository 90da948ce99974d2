/* 8. sibling routing: two VMs in one hostd talk to each other through it
 * (VM 4 listens, VM 3 connects), both ways, with credit flow control; close
 * works; the peer of a VM that disappears gets RST. With --sibling-routing off
 * the connect is refused by RST. */
#include <string.h>

#include "tcommon.h"

#define N (4u << 20)

static void settle(int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        vdev_pump(20);
}

/* ca <-> cb: n bytes each way; the reader on cb side is throttled first so that
 * the sender runs out of credit. */
static bool both_ways(struct vc_conn *ca, struct vc_conn *cb, size_t n, const char *tag)
{
    uint8_t *oa = malloc(n), *ob = malloc(n), *ia = malloc(n), *ib = malloc(n);
    fill_pattern(oa, n, 3);
    fill_pattern(ob, n, 4);
    size_t sa = 0, sb = 0, ra = 0, rb = 0;
    long long t0 = now_ms(), deadline = t0 + 60000;
    bool ok = true;
    while ((ra < n || rb < n) && ok) {
        long x1 = sa < n ? vc_try_send(ca, oa + sa, n - sa) : 0;
        long x2 = sb < n ? vc_try_send(cb, ob + sb, n - sb) : 0;
        /* B reads slowly during the first 300 ms */
        size_t lim = now_ms() - t0 < 300 ? 4096 : n;
        long x3 = vc_try_recv(cb, ib + rb, (n - rb) < lim ? n - rb : lim);
        long x4 = vc_try_recv(ca, ia + ra, n - ra);
        if (x1 < 0 || x2 < 0 || x3 < 0 || x4 < 0) {
            tap_diag("%s: transfer error %ld %ld %ld %ld", tag, x1, x2, x3, x4);
            ok = false;
            break;
        }
        sa += (size_t)x1;
        sb += (size_t)x2;
        rb += (size_t)x3;
        ra += (size_t)x4;
        if (now_ms() > deadline) {
            tap_diag("%s: stalled: A sent %zu got %zu, B sent %zu got %zu", tag, sa, ra, sb, rb);
            ok = false;
        }
        vdev_pump(x1 || x2 || x3 || x4 ? 0 : 50);
    }
    ok = ok && !memcmp(oa, ib, n) && !memcmp(ob, ia, n);
    tap_check(ok, "%s: %zu bytes each way intact (%lld ms)", tag, n, now_ms() - t0);
    free(oa);
    free(ob);
    free(ia);
    free(ib);
    return ok;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct hd_proc p;
    uint64_t cids[2] = { 3, 4 };
    start_or_die(&p, bin, 2, cids, NULL);
    struct vdev *a = vdev_alloc(), *b = vdev_alloc();
    if (!up_or_report(a, &p, 0, NULL, "sibling A") || !up_or_report(b, &p, 1, NULL, "sibling B")) {
        hd_kill(&p);
        return tap_done();
    }
    a->default_buf_alloc = b->default_buf_alloc = 64 * 1024;
    a->max_pkt = b->max_pkt = 16384;
    vc_listen(b, 5000);

    int err = 0;
    long long t0 = now_ms();
    struct vc_conn *ca = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5000, 3000, &err);
    tap_check(ca != NULL, "cid 3 connects to cid 4 port 5000 (%s, %lld ms)", err ? strerror(-err) : "ok", now_ms() - t0);
    struct vc_conn *cb = vc_accept(b, 5000, 2000);
    tap_check(cb != NULL, "cid 4 accepted the REQUEST");
    if (ca && cb) {
        tap_check(cb->peer_cid == 3 && cb->pport == ca->lport && cb->type == VSOCK_TYPE_STREAM,
                  "cid 4 sees the REQUEST from cid 3 port %u (got cid %llu port %u)", ca->lport,
                  (unsigned long long)cb->peer_cid, cb->pport);
        both_ways(ca, cb, N, "stream 3<->4");
        tap_check(ca->credit_violations == 0 && cb->credit_violations == 0, "credit respected in both directions");
        tap_diag("credit requests sent: A %u, B %u; credit updates received: A %u, B %u", ca->credit_requests_tx,
                 cb->credit_requests_tx, ca->credit_updates_rx, cb->credit_updates_rx);
        long long ms = 0;
        int rc = vc_close(ca, 3000, &ms);
        tap_check(rc == 0 && ms < 1000, "close from cid 3: SHUTDOWN reaches cid 4, its RST comes back (%lld ms)", ms);
        tap_check(cb->peer_shutdown == 3 && cb->st == VC_CLOSED, "cid 4 saw SHUTDOWN(both) and closed");
        vc_forget(cb);
    }

    /* the other direction, SEQPACKET */
    vc_listen(a, 6000);
    struct vc_conn *sb = vc_connect(b, VSOCK_TYPE_SEQPACKET, 3, 6000, 3000, &err);
    struct vc_conn *sa = vc_accept(a, 6000, 2000);
    if (tap_check(sb && sa, "SEQPACKET: cid 4 connects to cid 3 port 6000")) {
        static const size_t sizes[] = { 1, 100, 4096, 10000, 65536 };
        uint8_t *o = malloc(65536), *i = malloc(65536);
        bool ok = true;
        for (unsigned k = 0; k < 5 && ok; k++) {
            fill_pattern(o, sizes[k], k);
            ok = vc_send_msg(sb, o, sizes[k], 5000) == 0 && vc_recv_msg(sa, i, 65536, 5000) == (long)sizes[k] &&
                 !memcmp(o, i, sizes[k]);
        }
        tap_check(ok, "SEQPACKET 4->3: messages of 1..65536 bytes keep boundaries");
        fill_pattern(o, 3000, 77);
        ok = vc_send_msg(sa, o, 3000, 5000) == 0 && vc_recv_msg(sb, i, 65536, 5000) == 3000 && !memcmp(o, i, 3000);
        tap_check(ok, "SEQPACKET 3->4: reply message");
        free(o);
        free(i);
        long long ms;
        tap_check(vc_close(sb, 3000, &ms) == 0, "SEQPACKET close from cid 4 (%lld ms)", ms);
        vc_forget(sa);
    }

    /* refused / unroutable */
    struct vc_conn *x = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5001, 2000, &err);
    tap_check(!x && err == -ECONNREFUSED, "connect to a port nobody listens on in cid 4: RST (%s)", strerror(-err));
    x = vc_connect(a, VSOCK_TYPE_STREAM, 5, 5000, 2000, &err);
    tap_check(!x && err == -ECONNREFUSED, "connect to cid 5 (not served): RST (%s)", strerror(-err));
    x = vc_connect(a, VSOCK_TYPE_STREAM, 3, 6000, 2000, &err);
    tap_check(!x, "connect to its own cid through hostd is not routed (%s)", err ? strerror(-err) : "connected!");
    if (x)
        vc_forget(x);

    /* the peer VM disappears: the other side gets RST */
    ca = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5000, 3000, &err);
    cb = vc_accept(b, 5000, 2000);
    if (tap_check(ca && cb, "second connection 3->4")) {
        vdev_down(a);
        t0 = now_ms();
        while (!cb->got_rst && now_ms() - t0 < 2000)
            vdev_pump(50);
        tap_check(cb->got_rst, "cid 3's frontend went away: cid 4 gets RST (%lld ms)", now_ms() - t0);
        vc_forget(cb);
    } else
        vdev_down(a);
    tap_check(a->errors == 0 && b->errors == 0, "no protocol violations (A %u, B %u)%s%s", a->errors, b->errors,
              a->errors || b->errors ? ": " : "", a->errors ? a->last_err : b->last_err);
    vdev_down(b);
    stop_and_check(&p);

    /* routing off */
    const char *off[] = { "--sibling-routing", "off", NULL };
    start_or_die(&p, bin, 2, cids, off);
    if (up_or_report(a, &p, 0, NULL, "routing off A") && up_or_report(b, &p, 1, NULL, "routing off B")) {
        vc_listen(b, 5000);
        unsigned mark = vdev_log_mark(b);
        x = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5000, 2000, &err);
        tap_check(!x && err == -ECONNREFUSED, "--sibling-routing off: connect 3->4 refused by RST (%s)",
                  x ? "connected!" : strerror(-err));
        settle(100);
        tap_check(vdev_count_pkts(b, mark, 0, 0, 0) == 0, "--sibling-routing off: cid 4 saw nothing");
        char why[256] = "";
        tap_check(vdev_echo_check(a, 10000, 3000, why, sizeof(why)) == 0, "--sibling-routing off: echo still works%s%s",
                  why[0] ? ": " : "", why);
    }
    vdev_down(a);
    vdev_down(b);
    free(a);
    free(b);
    stop_and_check(&p);
    return tap_done();
}
