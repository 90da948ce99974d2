/* 3. seqpacket: messages keep their boundaries (EOM) through the echo service. */
#include <string.h>

#include "harness.h"

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct hd_proc p;
    struct vdev *d = start_one_vm(&p, bin, 5, "seqpacket");
    if (!(d->g.acked_features & (1ull << VIRTIO_VSOCK_F_SEQPACKET)))
        tap_diag("note: hostd does not offer VIRTIO_VSOCK_F_SEQPACKET; trying SEQPACKET anyway");
    static const size_t sizes[] = { 1, 100, 4096, 10000, 65536 };
    enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
    for (int layout = TXL_ONE; layout <= TXL_INDIRECT; layout += 3) {
        d->tx_layout = layout;
        int err = 0;
        struct vc_conn *c = vc_connect(d, VSOCK_TYPE_SEQPACKET, HOST_CID, 7, 3000, &err);
        if (!tap_check(c != NULL, "[%s] SEQPACKET connect to port 7 (%s)", tx_layout_name(layout),
                       err ? strerror(-err) : "ok"))
            continue;
        uint8_t *out = malloc(65536), *in = malloc(65536 + 16);
        /* one at a time */
        for (int i = 0; i < NS; i++) {
            fill_pattern(out, sizes[i], (uint32_t)i + 100);
            int rc = vc_send_msg(c, out, sizes[i], 5000);
            long got = rc ? rc : vc_recv_msg(c, in, 65536 + 16, 5000);
            tap_check(got == (long)sizes[i] && crc32_buf(0, in, sizes[i]) == crc32_buf(0, out, sizes[i]),
                      "[%s] message of %zu bytes comes back as one message of %ld bytes, same crc32",
                      tx_layout_name(layout), sizes[i], got);
        }
        /* an empty message between two others */
        {
            uint8_t b1[3] = { 1, 2, 3 }, b3[2] = { 9, 9 }, r[16];
            int rc = vc_send_msg(c, b1, 3, 2000);
            rc = rc ? rc : vc_send_msg(c, NULL, 0, 2000);
            rc = rc ? rc : vc_send_msg(c, b3, 2, 2000);
            long g1 = rc ? rc : vc_recv_msg(c, r, sizeof(r), 3000);
            long g2 = g1 < 0 ? g1 : vc_recv_msg(c, r, sizeof(r), 3000);
            long g3 = g2 < 0 ? g2 : vc_recv_msg(c, r, sizeof(r), 3000);
            tap_check(g1 == 3 && g2 == 0 && g3 == 2, "[%s] messages of 3, 0 and 2 bytes come back as 3, 0, 2 (%ld, %ld, %ld)",
                      tx_layout_name(layout), g1, g2, g3);
        }
        /* all five queued back to back, then read: boundaries kept */
        for (int i = 0; i < NS; i++) {
            fill_pattern(out, sizes[i], (uint32_t)i + 200);
            if (vc_send_msg(c, out, sizes[i], 5000) != 0)
                break;
        }
        bool all = true;
        for (int i = 0; i < NS; i++) {
            fill_pattern(out, sizes[i], (uint32_t)i + 200);
            long got = vc_recv_msg(c, in, 65536 + 16, 5000);
            if (got != (long)sizes[i] || memcmp(in, out, sizes[i]) != 0) {
                tap_diag("  message %d: expected %zu bytes, got %ld", i, sizes[i], got);
                all = false;
                break;
            }
        }
        tap_check(all, "[%s] five back-to-back messages come back with their boundaries", tx_layout_name(layout));
        /* 64 small messages in flight */
        for (int i = 0; i < 64; i++) {
            uint8_t b[8];
            memset(b, i, sizeof(b));
            vc_send_msg(c, b, (size_t)(i % 8) + 1, 5000);
        }
        all = true;
        for (int i = 0; i < 64 && all; i++) {
            uint8_t b[16];
            long got = vc_recv_msg(c, b, sizeof(b), 5000);
            if (got != (i % 8) + 1 || b[0] != (uint8_t)i)
                all = false;
        }
        tap_check(all, "[%s] 64 tiny messages: order and sizes kept", tx_layout_name(layout));
        tap_check(c->credit_violations == 0, "[%s] hostd respected our credit", tx_layout_name(layout));
        long long ms = 0;
        int rc = vc_close(c, 3000, &ms);
        tap_check(rc == 0 && ms < 1000, "[%s] close: RST after SHUTDOWN in %lld ms", tx_layout_name(layout), ms);
        free(out);
        free(in);
    }
    /* many tiny messages in flight before the guest reads any reply: 6000 bytes
     * in all, far within credit */
    {
        int e2 = 0;
        struct vc_conn *c3 = vc_connect(d, VSOCK_TYPE_SEQPACKET, HOST_CID, 7, 3000, &e2);
        if (c3) {
            int sent = 0;
            for (; sent < 6000; sent++) {
                uint8_t b = (uint8_t)sent;
                if (vc_send_msg(c3, &b, 1, 3000) != 0 || c3->got_rst)
                    break;
                if (sent % 256 == 0) /* let hostd work, but read nothing */
                    for (int k = 0; k < 3; k++)
                        vdev_pump(5);
            }
            int okm = 0;
            for (int i = 0; i < sent; i++) {
                uint8_t b = 0;
                if (vc_recv_msg(c3, &b, 1, 2000) != 1 || b != (uint8_t)i)
                    break;
                okm++;
            }
            tap_check(sent == 6000 && okm == 6000 && !c3->got_rst,
                      "6000 one-byte messages sent before reading: all echoed in order (sent %d, got %d%s)", sent, okm,
                      c3->got_rst ? ", connection reset" : "");
            if (c3->got_rst)
                vc_forget(c3);
            else {
                long long ms;
                vc_close(c3, 2000, &ms);
            }
        }
    }
    /* the largest message a Linux guest may send: exactly the peer's buf_alloc
     * (virtio_transport_seqpacket_enqueue refuses larger ones with EMSGSIZE) */
    int err = 0;
    d->tx_layout = TXL_ONE;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_SEQPACKET, HOST_CID, 7, 3000, &err);
    if (c) {
        size_t big = c->peer_buf_alloc ? c->peer_buf_alloc : 65536;
        if (big > c->buf_alloc)
            big = c->buf_alloc;
        uint8_t *o = malloc(big), *i = malloc(big);
        fill_pattern(o, big, 5);
        long long end = now_ms() + 10000;
        size_t s = 0;
        long got = -ETIMEDOUT;
        while (now_ms() < end) {
            if (s < big) {
                size_t chunk = big - s < d->max_pkt ? big - s : d->max_pkt;
                struct vhdr h;
                (void)h;
                long r = s + chunk == big ? (vc_send_msg(c, o + s, chunk, 5000) == 0 ? (long)chunk : -1)
                                          : vc_try_send(c, o + s, chunk);
                if (r < 0)
                    break;
                s += (size_t)r;
            }
            if (c->msg_count) {
                got = vc_recv_msg(c, i, big, 1000);
                break;
            }
            vdev_pump(s < big ? 0 : 50);
        }
        tap_check(got == (long)big && !memcmp(o, i, big), "message of %zu bytes (= buf_alloc) echoed as one message (%ld)",
                  big, got);
        free(o);
        free(i);
        long long ms;
        vc_close(c, 2000, &ms);
    }
    tap_check(d->errors == 0, "no protocol violations seen (%u)%s%s", d->errors, d->errors ? ": " : "", d->last_err);
    vdev_down(d);
    free(d);
    /* messages spread over many small rx buffers: EOM only on the last packet */
    {
        struct guest_opts o;
        guest_default_opts(&o);
        o.rx_layout = RXL_SMALL;
        struct vdev *s2 = vdev_alloc();
        if (up_or_report(s2, &p, 0, &o, "seqpacket, rx buffers of 44+256")) {
            struct vc_conn *c2 = vc_connect(s2, VSOCK_TYPE_SEQPACKET, HOST_CID, 7, 3000, &err);
            if (tap_check(c2 != NULL, "small rx buffers: SEQPACKET connect")) {
                uint8_t *o2 = malloc(65536), *i2 = malloc(65536);
                bool ok = true;
                for (int i = 0; i < NS && ok; i++) {
                    fill_pattern(o2, sizes[i], (uint32_t)i + 300);
                    ok = vc_send_msg(c2, o2, sizes[i], 5000) == 0 &&
                         vc_recv_msg(c2, i2, 65536, 5000) == (long)sizes[i] && !memcmp(o2, i2, sizes[i]);
                    if (!ok)
                        tap_diag("  message of %zu bytes failed", sizes[i]);
                }
                tap_check(ok, "small rx buffers: messages of 1..65536 bytes keep their boundaries");
                free(o2);
                free(i2);
                long long ms;
                vc_close(c2, 2000, &ms);
            }
            tap_check(s2->errors == 0, "small rx buffers: no protocol violations (%u)%s%s", s2->errors,
                      s2->errors ? ": " : "", s2->last_err);
        }
        vdev_down(s2);
        free(s2);
    }
    stop_and_check(&p);
    return tap_done();
}
