/* 2. echo_stream: 8 MiB through the echo service (host CID 2, port 7) in each tx
 * chain layout, with EVENT_IDX on and off; checksums compared. Also: ring
 * indices wrapping past 65535, a starved rx ring, a tiny receive credit, the
 * peer's fwd_cnt accounting, and half-close. */
#include <string.h>

#include "harness.h"

static uint8_t *out, *in;

static void settle_ms(int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        vdev_pump(20);
}

static void check_fwd_cnt(struct vc_conn *c, const char *tag)
{
    unsigned u0 = c->credit_updates_rx;
    vc_send_ctrl(c, OP_CREDIT_REQUEST, 0);
    long long end = now_ms() + 2000;
    while (c->credit_updates_rx == u0 && now_ms() < end)
        vdev_pump(50);
    tap_check(c->credit_updates_rx > u0, "%s: CREDIT_REQUEST answered by CREDIT_UPDATE", tag);
    tap_check(c->peer_fwd_cnt == c->tx_cnt, "%s: hostd's fwd_cnt %u == bytes we sent %u", tag, c->peer_fwd_cnt,
              c->tx_cnt);
    tap_check(c->peer_buf_alloc > 0, "%s: hostd advertises buf_alloc %u", tag, c->peer_buf_alloc);
}

/* one connection: echo n bytes with layout l; returns success */
static bool echo_one(struct vdev *d, int l, size_t n, uint32_t seed, const char *mode)
{
    char tag[128];
    snprintf(tag, sizeof(tag), "%s/%s", mode, tx_layout_name(l));
    d->tx_layout = l;
    unsigned err0 = d->errors;
    int err = 0;
    long long t0 = now_ms();
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (!tap_check(c != NULL, "%s: connect to port 7 (%s)", tag, err ? strerror(-err) : "ok"))
        return false;
    fill_pattern(out, n, seed);
    memset(in, 0, n);
    uint32_t crc_out = crc32_buf(0, out, n);
    int rc = vc_echo(c, out, in, n, 60000);
    uint32_t crc_in = crc32_buf(0, in, n);
    bool ok = tap_check(rc == 0 && crc_in == crc_out, "%s: %zu bytes echoed, crc32 %08x == %08x (%lld ms)%s%s", tag, n,
                        crc_out, crc_in, now_ms() - t0, rc ? ": " : "", rc ? strerror(-rc) : "");
    if (rc)
        tap_diag("  tx_cnt %u peer_fwd_cnt %u peer_buf_alloc %u rx_in %llu, vhost-user %s", c->tx_cnt,
                 c->peer_fwd_cnt, c->peer_buf_alloc, (unsigned long long)c->rx_in, d->dead ? "closed" : "open");
    tap_check(c->credit_violations == 0, "%s: hostd respected our credit (buf_alloc %u)", tag, c->buf_alloc);
    if (rc == 0)
        check_fwd_cnt(c, tag);
    long long ms = 0;
    rc = vc_close(c, 3000, &ms);
    tap_check(rc == 0 && ms < 1000, "%s: SHUTDOWN answered by RST in %lld ms", tag, ms);
    tap_check(d->errors == err0, "%s: no protocol violations seen (%u)%s%s", tag, d->errors - err0,
              d->errors != err0 ? ": " : "", d->errors != err0 ? d->last_err : "");
    return ok;
}

static struct vdev *session(const struct hd_proc *p, const struct guest_opts *o, const char *mode)
{
    struct vdev *d = vdev_alloc();
    if (!up_or_report(d, p, 0, o, mode)) {
        free(d);
        return NULL;
    }
    return d;
}

static void end_session(struct vdev *d, const char *mode)
{
    tap_check(d->missed_irqs == 0, "%s: no used entries left without an interrupt (%u seen)", mode, d->missed_irqs);
    tap_diag("%s: kicks tx %u (suppressed %u), rx %u (suppressed %u); calls rx %u tx %u", mode, d->g.q[1].kicks,
             d->g.q[1].kicks_suppressed, d->g.q[0].kicks, d->g.q[0].kicks_suppressed, d->g.q[0].calls,
             d->g.q[1].calls);
    vdev_down(d);
    free(d);
}

static void layouts(const struct hd_proc *p, bool event_idx, int rxl, size_t big, size_t small)
{
    struct guest_opts o;
    guest_default_opts(&o);
    o.event_idx = event_idx;
    o.rx_layout = rxl;
    const char *mode = event_idx ? "EVENT_IDX" : "no EVENT_IDX";
    struct vdev *d = session(p, &o, mode);
    if (!d)
        return;
    for (int l = 0; l < TXL_COUNT; l++)
        echo_one(d, l, l == TXL_ONE || event_idx ? big : small, (uint32_t)(l * 77 + event_idx), mode);
    end_session(d, mode);
}

static void wrap(const struct hd_proc *p, bool event_idx, uint16_t start, size_t n)
{
    struct guest_opts o;
    guest_default_opts(&o);
    o.event_idx = event_idx;
    o.start_idx = start;
    char mode[64];
    snprintf(mode, sizeof(mode), "ring idx from %u%s", start, event_idx ? "" : " no EVENT_IDX");
    struct vdev *d = session(p, &o, mode);
    if (!d)
        return;
    echo_one(d, TXL_ONE, n, 11, mode);
    echo_one(d, TXL_INDIRECT, n / 4, 12, mode);
    tap_check((uint16_t)(d->g.q[0].last_used - start) > 300 || d->g.q[0].last_used < start,
              "%s: rx ring index wrapped past 65535 (now %u)", mode, d->g.q[0].last_used);
    end_session(d, mode);
}

static void starved(const struct hd_proc *p, unsigned limit, int rxl)
{
    struct guest_opts o;
    guest_default_opts(&o);
    o.rx_limit = limit;
    o.rx_layout = rxl;
    char mode[64];
    snprintf(mode, sizeof(mode), "rx ring with %u buffer(s)", limit);
    struct vdev *d = session(p, &o, mode);
    if (!d)
        return;
    echo_one(d, TXL_SPLIT, 1u << 20, 21, mode);
    end_session(d, mode);
}

static void tight_credit(const struct hd_proc *p, uint32_t buf_alloc)
{
    char mode[64];
    snprintf(mode, sizeof(mode), "our buf_alloc %u", buf_alloc);
    struct vdev *d = session(p, NULL, mode);
    if (!d)
        return;
    d->default_buf_alloc = buf_alloc;
    echo_one(d, TXL_ONE, 1u << 20, 31, mode);
    end_session(d, mode);
}

static void half_close(const struct hd_proc *p)
{
    const char *mode = "half-close";
    struct vdev *d = session(p, NULL, mode);
    if (!d)
        return;
    int err;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (tap_check(c != NULL, "%s: connect", mode)) {
        size_t n = 200000;
        fill_pattern(out, n, 41);
        int rc = vc_send_all(c, out, n, 5000);
        vc_send_ctrl(c, OP_SHUTDOWN, SHUT_SEND_F); /* we will send no more; still want the echo */
        rc = rc ? rc : vc_recv_all(c, in, n, 5000);
        tap_check(rc == 0 && !memcmp(out, in, n), "%s: data sent before SHUTDOWN(SEND) still echoed in full (%s)",
                  mode, rc ? strerror(-rc) : "ok");
        long long t0 = now_ms();
        while (!c->got_rst && !(c->peer_shutdown & SHUT_SEND_F) && now_ms() - t0 < 2000)
            vdev_pump(50);
        tap_diag("%s: afterwards hostd %s", mode,
                 c->got_rst ? "reset the connection" : c->peer_shutdown ? "sent SHUTDOWN" : "kept it open");
        long long ms;
        rc = vc_close(c, 3000, &ms);
        tap_check(rc == 0 || c->got_rst, "%s: connection ends with RST (%lld ms)", mode, ms);
    }
    /* the guest shrinks its window to 0: hostd must stop sending, and resume when it reopens */
    c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (tap_check(c != NULL, "%s: connect (window test)", mode)) {
        fill_pattern(out, 100000, 43);
        int rc = vc_echo(c, out, in, 100000, 5000);
        uint32_t ba = c->buf_alloc;
        c->buf_alloc = 0;
        vc_send_ctrl(c, OP_CREDIT_UPDATE, 0);
        uint64_t rx0 = c->rx_in;
        unsigned v0 = c->credit_violations;
        rc = rc ? rc : vc_send_all(c, out, 10000, 5000);
        settle_ms(300);
        tap_check(rc == 0 && c->rx_in == rx0 && c->credit_violations == v0,
                  "%s: after we advertise buf_alloc 0, hostd sends nothing (%llu bytes came)", mode,
                  (unsigned long long)(c->rx_in - rx0));
        c->buf_alloc = ba;
        vc_send_ctrl(c, OP_CREDIT_UPDATE, 0);
        rc = rc ? rc : vc_recv_all(c, in, 10000, 5000);
        tap_check(rc == 0 && !memcmp(in, out, 10000), "%s: reopening the window releases the held data", mode);
        long long ms;
        vc_close(c, 3000, &ms);
    }
    /* close with data still in flight both ways: RST must still be prompt */
    c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (c) {
        fill_pattern(out, 1u << 20, 42);
        long sent = vc_try_send(c, out, 1u << 20);
        long long ms;
        int rc = vc_close(c, 3000, &ms);
        tap_check(rc == 0 && ms < 1000, "%s: close with %ld bytes in flight: RST in %lld ms", mode, sent, ms);
    }
    tap_check(d->errors == 0, "%s: no protocol violations (%u)%s%s", mode, d->errors, d->errors ? ": " : "",
              d->last_err);
    end_session(d, mode);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct hd_proc p;
    uint64_t cids[1] = { 3 };
    start_or_die(&p, bin, 1, cids, NULL);
    out = malloc(8u << 20);
    in = malloc(8u << 20);
    layouts(&p, true, RXL_ONE, 8u << 20, 8u << 20);
    layouts(&p, false, RXL_TWO, 8u << 20, 1u << 20);
    wrap(&p, true, 65500, 8u << 20);
    wrap(&p, false, 65530, 2u << 20);
    starved(&p, 1, RXL_ONE);
    starved(&p, 3, RXL_TWO);
    {
        struct guest_opts o;
        guest_default_opts(&o);
        o.rx_layout = RXL_SMALL;
        struct vdev *d = session(&p, &o, "rx buffers of 44+256");
        if (d) {
            echo_one(d, TXL_MANY, 1u << 20, 51, "rx buffers of 44+256");
            end_session(d, "rx buffers of 44+256");
        }
    }
    tight_credit(&p, 5000);
    tight_credit(&p, 100);
    half_close(&p);
    free(out);
    free(in);
    tap_check(hd_alive(&p), "hostd still running");
    stop_and_check(&p);
    return tap_done();
}
