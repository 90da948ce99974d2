/* 8. sibling routing: two VMs in one hostd talk to each other through it
 * (VM 4 listens, VM 3 connects), both ways, with credit flow control; close
 * works; the peer of a VM that disappears gets RST. With --sibling-routing off
 * the connect is refused by RST. */
#include <string.h>

#include "harness.h"

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

/* Isolation between siblings: C misbehaves towards B (floods it beyond B's
 * credit while B is not reading); A's well-behaved connection to B, which
 * stays within credit, must not be hurt. Then: several well-behaved
 * connections whose credits add up to more than hostd's forward queue. */
static void isolation(const char *bin)
{
    struct hd_proc p;
    uint64_t cids[3] = { 3, 4, 5 };
    start_or_die(&p, bin, 3, cids, NULL);
    struct vdev *a = vdev_alloc(), *b = vdev_alloc(), *c = vdev_alloc();
    if (!up_or_report(a, &p, 0, NULL, "isolation A") || !up_or_report(b, &p, 1, NULL, "isolation B") ||
        !up_or_report(c, &p, 2, NULL, "isolation C")) {
        hd_kill(&p);
        return;
    }
    vc_listen(b, 5000);
    int err;
    struct vc_conn *ca = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5000, 3000, &err);
    struct vc_conn *ba = vc_accept(b, 5000, 2000);
    struct vc_conn *cc = vc_connect(c, VSOCK_TYPE_STREAM, 4, 5000, 3000, &err);
    struct vc_conn *bc = vc_accept(b, 5000, 2000);
    if (tap_check(ca && ba && cc && bc, "isolation: A->B and C->B connected")) {
        b->paused = true; /* B stops reading */
        b->quiet = true;
        /* C ignores B's credit: 8 MiB. Credit is end to end (hostd forwards
         * unchanged), so B will see C's excess: that is C's fault, not counted. */
        tap_diag("isolation: C floods B beyond credit; B's credit-exceeded reports for C's port are expected");
        struct vhdr h = { .src_cid = 5, .dst_cid = 4, .src_port = cc->lport, .dst_port = 5000, .len = 65536,
                          .type = VSOCK_TYPE_STREAM, .op = OP_RW, .buf_alloc = 65536 };
        static uint8_t junk[65536];
        unsigned cmark = vdev_log_mark(c);
        for (int i = 0; i < 128; i++)
            if (vdev_send_pkt(c, &h, junk, sizeof(junk)))
                break;
        /* A stays within credit */
        uint8_t *msg = malloc(65536);
        fill_pattern(msg, 65536, 8);
        unsigned amark = vdev_log_mark(a);
        long sent = vc_try_send(ca, msg, 65536);
        for (int i = 0; i < 10; i++)
            vdev_pump(20);
        tap_diag("isolation: C got %u RST while flooding", vdev_count_pkts(c, cmark, OP_RST, 5000, cc->lport));
        b->paused = false;
        uint8_t *got = malloc(65536);
        int rc = sent == 65536 ? vc_recv_all(ba, got, 65536, 5000) : -EIO;
        tap_check(rc == 0 && !memcmp(got, msg, 65536),
                  "isolation: B receives A's 64 KiB (sent within credit) despite C's flood (%s)", rc ? strerror(-rc) : "ok");
        tap_check(vdev_count_pkts(a, amark, OP_RST, 5000, ca->lport) == 0 && !ca->got_rst,
                  "isolation: A's connection was not reset because of C");
        free(msg);
        free(got);
        vc_forget(ca);
        vc_forget(ba);
        vc_forget(cc);
        vc_forget(bc);
    }
    vdev_down(c);
    settle(200);

    /* many well-behaved connections A->B while B is briefly not reading: each
     * within its credit (Linux default buf_alloc 256 KiB), together more than
     * hostd's per-VM forward queue */
    b->errors = 0;
    b->last_err[0] = 0;
    b->quiet = false;
    enum { NCONN = 24 };
    struct vc_conn *as[NCONN], *bs[NCONN];
    int n = 0;
    for (; n < NCONN; n++) {
        as[n] = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5000, 3000, &err);
        bs[n] = as[n] ? vc_accept(b, 5000, 2000) : NULL;
        if (!as[n] || !bs[n])
            break;
    }
    if (tap_check(n == NCONN, "isolation: %d connections A->B", n)) {
        b->paused = true;
        uint8_t *buf = malloc(256 * 1024);
        fill_pattern(buf, 256 * 1024, 9);
        long total = 0;
        for (int i = 0; i < NCONN; i++) {
            long r = vc_try_send(as[i], buf, 256 * 1024); /* each exactly within its credit */
            total += r > 0 ? r : 0;
        }
        for (int i = 0; i < 10; i++)
            vdev_pump(20);
        b->paused = false;
        int intact = 0, reset = 0;
        uint8_t *in = malloc(256 * 1024);
        for (int i = 0; i < NCONN; i++) {
            long want = (long)as[i]->tx_cnt;
            if (vc_recv_all(bs[i], in, (size_t)want, 3000) == 0 && !memcmp(in, buf, (size_t)want))
                intact++;
            reset += as[i]->got_rst;
        }
        tap_check(intact == NCONN && reset == 0,
                  "isolation: %ld bytes in flight within credit on %d connections while B was busy: %d intact, %d reset",
                  total, NCONN, intact, reset);
        tap_check(b->errors == 0, "isolation: B saw no protocol violations on well-behaved traffic (%u)%s%s",
                  b->errors, b->errors ? ": " : "", b->last_err);
        free(buf);
        free(in);
    }
    for (int i = 0; i < n; i++) {
        if (as[i])
            vc_forget(as[i]);
        if (i < NCONN && bs[i])
            vc_forget(bs[i]);
    }
    vdev_down(a);
    vdev_down(b);
    free(a);
    free(b);
    free(c);
    stop_and_check(&p);
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
    /* B's device goes away: connecting to it is refused */
    {
        struct vdev *a2 = vdev_alloc();
        vdev_down(b);
        if (up_or_report(a2, &p, 0, NULL, "sibling A again")) {
            x = vc_connect(a2, VSOCK_TYPE_STREAM, 4, 5000, 2000, &err);
            tap_check(!x && err == -ECONNREFUSED, "cid 4 has no frontend: connect 3->4 refused by RST (%s)",
                      x ? "connected!" : strerror(-err));
        }
        vdev_down(a2);
        free(a2);
    }
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
    isolation(bin);
    return tap_done();
}
