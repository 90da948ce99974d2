/* 3. seqpacket: messages keep their boundaries (EOM) through the echo service. */
#include <string.h>

#include "tcommon.h"

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct hd_proc p;
    uint64_t cids[1] = { 5 };
    start_or_die(&p, bin, 1, cids, NULL);
    struct vdev *d = vdev_alloc();
    if (!up_or_report(d, &p, 0, NULL, "seqpacket")) {
        hd_kill(&p);
        return tap_done();
    }
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
    stop_and_check(&p);
    return tap_done();
}
