/* 4. concurrency: 8 echo connections (stream and seqpacket mixed) interleaved. */
#include <string.h>

#include "harness.h"

#define NC 8

static void settle_ms(int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        vdev_pump(20);
}
#define PER (512u * 1024u)

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct hd_proc p;
    struct vdev *d = start_one_vm(&p, bin, 3, "concurrency");
    d->default_buf_alloc = 64 * 1024; /* keep credit tight so flow control matters */
    d->max_pkt = 16384;
    struct vc_conn *c[NC];
    uint8_t *out[NC], *in[NC];
    size_t sent[NC], got[NC];
    int opened = 0;
    for (int i = 0; i < NC; i++) {
        int err = 0;
        c[i] = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
        out[i] = malloc(PER);
        in[i] = malloc(PER);
        fill_pattern(out[i], PER, (uint32_t)i * 13 + 1);
        sent[i] = got[i] = 0;
        opened += c[i] != NULL;
    }
    tap_check(opened == NC, "%d of %d connections to port 7 open at once", opened, NC);
    long long deadline = now_ms() + 60000;
    bool done = false, failed = false;
    while (!done && !failed && now_ms() < deadline) {
        bool progress = false;
        done = true;
        for (int i = 0; i < NC; i++) {
            if (!c[i])
                continue;
            /* small, rotating slices so that the connections interleave */
            size_t slice = 3000 + (size_t)i * 1111;
            if (sent[i] < PER) {
                size_t n = PER - sent[i] < slice ? PER - sent[i] : slice;
                long r = vc_try_send(c[i], out[i] + sent[i], n);
                if (r < 0) {
                    tap_diag("conn %d: send: %s", i, strerror((int)-r));
                    failed = true;
                    break;
                }
                sent[i] += (size_t)r;
                progress |= r > 0;
            }
            long r = vc_try_recv(c[i], in[i] + got[i], PER - got[i]);
            if (r < 0) {
                tap_diag("conn %d: recv: %s", i, strerror((int)-r));
                failed = true;
                break;
            }
            got[i] += (size_t)r;
            progress |= r > 0;
            if (got[i] < PER)
                done = false;
        }
        if (!done)
            vdev_pump(progress ? 0 : 50);
    }
    for (int i = 0; i < NC; i++) {
        if (!c[i])
            continue;
        tap_check(got[i] == PER && memcmp(in[i], out[i], PER) == 0, "conn %d: %u bytes echoed intact (got %zu)", i,
                  PER, got[i]);
    }
    int closed = 0;
    for (int i = 0; i < NC; i++) {
        long long ms;
        if (c[i] && vc_close(c[i], 3000, &ms) == 0 && ms < 1000)
            closed++;
        free(out[i]);
        free(in[i]);
    }
    tap_check(closed == opened, "all %d connections closed with a prompt RST (%d)", opened, closed);
    /* many short connections one after another: hostd's state must not grow */
    settle_ms(200);
    long rss0 = proc_rss_kb(p.pid);
    int fds0 = proc_count_fds(p.pid);
    int okc = 0;
    long long t0 = now_ms();
    for (int i = 0; i < 300; i++) {
        char why[256];
        okc += vdev_echo_check(d, 1000 + (size_t)i, 3000, why, sizeof(why)) == 0;
    }
    settle_ms(200);
    tap_check(okc == 300, "300 sequential connect/echo/close cycles (%d ok, %lld ms)", okc, now_ms() - t0);
    long rss1 = proc_rss_kb(p.pid);
    tap_check(rss1 - rss0 < 4096 + rss_slack_kb(), "hostd RSS stable over them (%+ld KiB)", rss1 - rss0);
    tap_check(proc_count_fds(p.pid) == fds0, "hostd fd count stable over them");
    /* as many connections open at once as the harness allows, abandoned with RST */
    int n = 0;
    struct vc_conn *cs[VC_MAX_CONNS];
    for (; n < VC_MAX_CONNS; n++) {
        int err;
        cs[n] = vc_connect(d, n % 2 ? VSOCK_TYPE_SEQPACKET : VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
        if (!cs[n])
            break;
        uint8_t b[100] = { 0 };
        vc_try_send(cs[n], b, sizeof(b));
    }
    tap_check(n == VC_MAX_CONNS, "%d connections open at once", n);
    for (int i = 0; i < n; i++) {
        vc_send_ctrl(cs[i], OP_RST, 0);
        vc_forget(cs[i]);
    }
    settle_ms(300);
    char why[256] = "";
    tap_check(vdev_echo_check(d, 5000, 3000, why, sizeof(why)) == 0, "echo works after resetting them all%s%s",
              why[0] ? ": " : "", why);
    stop_one_vm(&p, d);
    return tap_done();
}
