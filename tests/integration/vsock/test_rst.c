/* 5. RST rules: unknown port => RST; packets for unknown connections => RST;
 * never an RST in answer to an RST. */
#include <string.h>

#include "harness.h"

static struct vhdr mk(struct vdev *d, uint16_t type, uint16_t op, uint32_t sport, uint64_t dcid, uint32_t dport,
                      uint32_t flags)
{
    struct vhdr h = { .src_cid = d->cid, .dst_cid = dcid, .src_port = sport, .dst_port = dport, .len = 0,
                      .type = type, .op = op, .flags = flags, .buf_alloc = 65536, .fwd_cnt = 0 };
    return h;
}

/* send h (no payload, or `len` bytes) and expect an RST back for that tuple within 1 s */
static void expect_rst(struct vdev *d, struct vhdr h, const char *what)
{
    uint8_t pl[16] = { 1, 2, 3 };
    unsigned mark = vdev_log_mark(d);
    long long t0 = now_ms();
    int rc = vdev_send_pkt(d, &h, h.len ? pl : NULL, h.len);
    const struct vhdr *r = rc ? NULL : vdev_wait_pkt(d, mark, OP_RST, h.dst_port, h.src_port, 1000);
    tap_check(r != NULL, "%s => RST within 1 s (%lld ms)", what, now_ms() - t0);
    if (r)
        tap_check(r->type == h.type && r->src_cid == h.dst_cid && r->len == 0,
                  "%s: the RST has type %u, src_cid %llu, len 0", what, h.type, (unsigned long long)h.dst_cid);
    unsigned others = vdev_count_pkts(d, mark, 0, h.dst_port, h.src_port) - vdev_count_pkts(d, mark, OP_RST, h.dst_port, h.src_port);
    tap_check(others == 0, "%s: nothing but the RST came back (%u other packets)", what, others);
}

static void expect_silence(struct vdev *d, struct vhdr h, const char *what)
{
    unsigned mark = vdev_log_mark(d);
    vdev_send_pkt(d, &h, NULL, 0);
    long long end = now_ms() + 500;
    while (now_ms() < end)
        vdev_pump(50);
    unsigned n = vdev_count_pkts(d, mark, 0, h.dst_port, h.src_port);
    tap_check(n == 0, "%s => no answer within 500 ms (%u packets)", what, n);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct hd_proc p;
    struct vdev *d = start_one_vm(&p, bin, 3, "rst");
    d->auto_rst = false; /* we answer nothing on our own in this test */

    int err = 0;
    long long t0 = now_ms();
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 12345, 2000, &err);
    tap_check(!c && err == -ECONNREFUSED, "STREAM connect to unknown port 12345 refused by RST (%s, %lld ms)",
              err ? strerror(-err) : "connected!", now_ms() - t0);
    c = vc_connect(d, VSOCK_TYPE_SEQPACKET, HOST_CID, 12346, 2000, &err);
    tap_check(!c && err == -ECONNREFUSED, "SEQPACKET connect to unknown port 12346 refused by RST (%s)",
              err ? strerror(-err) : "connected!");

    struct vhdr h = mk(d, VSOCK_TYPE_STREAM, OP_RW, 41000, HOST_CID, 7, 0);
    h.len = 3;
    expect_rst(d, h, "RW for an unknown connection to port 7");
    expect_rst(d, mk(d, VSOCK_TYPE_STREAM, OP_SHUTDOWN, 41001, HOST_CID, 7, 3), "SHUTDOWN for an unknown connection");
    expect_rst(d, mk(d, VSOCK_TYPE_STREAM, OP_CREDIT_REQUEST, 41002, HOST_CID, 7, 0),
               "CREDIT_REQUEST for an unknown connection");
    expect_rst(d, mk(d, VSOCK_TYPE_STREAM, OP_CREDIT_UPDATE, 41003, HOST_CID, 7, 0),
               "CREDIT_UPDATE for an unknown connection");
    expect_rst(d, mk(d, VSOCK_TYPE_SEQPACKET, OP_RW, 41004, HOST_CID, 7, 1),
               "SEQPACKET RW for an unknown connection");
    expect_rst(d, mk(d, VSOCK_TYPE_STREAM, OP_REQUEST, 41005, 99, 7, 0), "REQUEST to cid 99 (nobody)");
    expect_rst(d, mk(d, VSOCK_TYPE_STREAM, OP_RESPONSE, 41006, HOST_CID, 7, 0),
               "RESPONSE for a connection never requested");
    expect_silence(d, mk(d, VSOCK_TYPE_STREAM, OP_RST, 41007, HOST_CID, 7, 0), "RST for an unknown connection");
    expect_silence(d, mk(d, VSOCK_TYPE_STREAM, OP_RST, 41008, HOST_CID, 12345, 0), "RST to an unknown port");
    expect_silence(d, mk(d, VSOCK_TYPE_STREAM, OP_RST, 41009, 99, 7, 0), "RST to cid 99");

    /* an established connection that we reset: gone afterwards, and no RST back */
    c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 2000, &err);
    if (tap_check(c != NULL, "connect to echo")) {
        uint32_t lport = c->lport;
        struct vhdr rh = mk(d, VSOCK_TYPE_STREAM, OP_RST, lport, HOST_CID, 7, 0);
        vc_forget(c);
        expect_silence(d, rh, "RST on an established connection");
        struct vhdr w = mk(d, VSOCK_TYPE_STREAM, OP_RW, lport, HOST_CID, 7, 0);
        w.len = 3;
        expect_rst(d, w, "RW on the connection we reset");
    }
    /* RST while hostd has data queued for us: still no RST back */
    c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 2000, &err);
    if (c) {
        uint8_t buf[1000];
        memset(buf, 7, sizeof(buf));
        vc_send_all(c, buf, sizeof(buf), 2000);
        struct vhdr rh = mk(d, VSOCK_TYPE_STREAM, OP_RST, c->lport, HOST_CID, 7, 0);
        uint32_t lport = c->lport;
        vc_forget(c);
        unsigned mark = vdev_log_mark(d);
        vdev_send_pkt(d, &rh, NULL, 0);
        long long end = now_ms() + 500;
        while (now_ms() < end)
            vdev_pump(50);
        tap_check(vdev_count_pkts(d, mark, OP_RST, 7, lport) == 0, "RST on a busy connection: no RST back");
    }
    /* half-close, receive side only (guest shutdown(SHUT_RD)): per virtio 5.10.6.4
     * the RST answers a clean disconnect (no more send AND receive), so the
     * connection must stay open for guest->host data */
    d->auto_rst = true;
    c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 2000, &err);
    if (c) {
        uint32_t lport = c->lport;
        unsigned mark = vdev_log_mark(d);
        vc_send_ctrl(c, OP_SHUTDOWN, SHUT_RCV_F);
        uint8_t b[1000];
        memset(b, 3, sizeof(b));
        long long end = now_ms() + 300;
        while (now_ms() < end)
            vdev_pump(20);
        long sent = c->got_rst ? -1 : vc_try_send(c, b, sizeof(b));
        end = now_ms() + 300;
        while (now_ms() < end)
            vdev_pump(20);
        tap_check(vdev_count_pkts(d, mark, OP_RST, 7, lport) == 0 && sent == (long)sizeof(b),
                  "SHUTDOWN(RCV only) keeps the connection open for guest data (no RST; sent %ld)", sent);
        tap_check(vdev_count_pkts(d, mark, OP_RW, 7, lport) == 0,
                  "SHUTDOWN(RCV only): hostd sends no data to a guest that will not receive");
        long long ms;
        int rc = vc_close(c, 2000, &ms);
        tap_check(rc == 0 || c == NULL, "SHUTDOWN(RCV) then SHUTDOWN(both): RST (%lld ms)", ms);
    }
    d->auto_rst = false;
    char why[256] = "";
    tap_check(vdev_echo_check(d, 5000, 5000, why, sizeof(why)) == 0, "echo still works after all that%s%s",
              why[0] ? ": " : "", why);
    stop_one_vm(&p, d);
    return tap_done();
}
