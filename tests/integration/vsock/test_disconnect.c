/* 7. disconnect / reboot / memory-table changes:
 *  - close the vhost-user socket in the middle of an 8 MiB transfer, and a
 *    SIGKILLed frontend process: hostd's fds and maps return to baseline and
 *    a new frontend for the same VM works;
 *  - "reboot": stop the rings (GET_VRING_BASE) and start fresh ones elsewhere:
 *    old connections are gone, new ones work;
 *  - SET_MEM_TABLE again while running (re-split table during a transfer;
 *    a new memfd with another file layout) keeps working. */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define BIG (8u << 20)

static struct hd_proc P;
static int base_fds, base_maps;
static uint8_t *out, *in;

static void settle(int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        vdev_pump(20);
}

static int base_memfd;

static void check_baseline(const char *what)
{
    long long end = now_ms() + 3000;
    int fds, maps, memfd;
    do {
        fds = proc_count_fds(P.pid);
        maps = proc_count_maps(P.pid);
        memfd = proc_count_maps_matching(P.pid, "memfd:");
        if (fds == base_fds && maps <= base_maps + maps_slack() && memfd == base_memfd)
            break;
        settle(50);
    } while (now_ms() < end);
    tap_check(fds == base_fds, "%s: hostd fds back to baseline (%d, baseline %d)", what, fds, base_fds);
    tap_check(memfd == base_memfd, "%s: hostd has no guest RAM mapped any more (%d memfd maps, baseline %d)", what,
              memfd, base_memfd);
    tap_check(maps <= base_maps + maps_slack(), "%s: hostd maps back to baseline (%d, baseline %d%s)", what, maps,
              base_maps, maps_slack() ? ", ASan slack" : "");
}

static void echo_again(const char *what)
{
    struct vdev *a = vdev_alloc();
    if (vdev_up(a, P.vm[0].sock, P.vm[0].cid, NULL) == 0) {
        char why[256] = "";
        int rc = vdev_echo_check(a, 100000, 5000, why, sizeof(why));
        tap_check(rc == 0, "%s: a new frontend for the same VM echoes%s%s", what, rc ? ": " : "", why);
    } else
        tap_check(false, "%s: new frontend bring-up: %s", what, a->last_err);
    vdev_down(a);
    free(a);
}

/* Echo `len` bytes; call `mid` once `at` bytes came back (may be NULL). */
static int echo_with_hook(struct vc_conn *c, size_t len, size_t at, void (*mid)(struct vdev *), int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    size_t s = 0, r = 0;
    bool hooked = false;
    fill_pattern(out, len, (uint32_t)len ^ 0x55);
    while (r < len) {
        long a = s < len ? vc_try_send(c, out + s, len - s) : 0;
        long b = vc_try_recv(c, in + r, len - r);
        if (a < 0 || b < 0)
            return (int)(a < 0 ? a : b);
        s += (size_t)a;
        r += (size_t)b;
        if (!hooked && r >= at && mid) {
            hooked = true;
            mid(c->d);
            if (!c->d->registered)
                return 1; /* the hook tore the frontend down */
        }
        if (r < len) {
            if (now_ms() > deadline || c->d->dead)
                return -ETIMEDOUT;
            vdev_pump(a || b ? 0 : 50);
        }
    }
    return memcmp(out, in, len) == 0 ? 0 : -EBADMSG;
}

static void hook_close(struct vdev *d)
{
    vdev_down(d); /* closes the vhost-user socket, eventfds and RAM */
}

static void case_close_mid_transfer(void)
{
    struct vdev *a = vdev_alloc();
    if (!up_or_report(a, &P, 0, NULL, "close-mid-transfer")) {
        free(a);
        return;
    }
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (tap_check(c != NULL, "close-mid-transfer: connect")) {
        int rc = echo_with_hook(c, BIG, 2u << 20, hook_close, 30000);
        tap_check(rc == 1, "close-mid-transfer: vhost-user socket closed after 2 MiB of 8 MiB");
    }
    if (a->registered)
        vdev_down(a);
    free(a);
    tap_check(hd_alive(&P), "close-mid-transfer: hostd alive");
    check_baseline("close-mid-transfer");
    echo_again("close-mid-transfer");
}

static void case_sigkill(void)
{
    fflush(stdout);
    int pfd[2];
    if (pipe(pfd) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        struct vdev *a = vdev_alloc();
        if (vdev_up(a, P.vm[0].sock, P.vm[0].cid, NULL) != 0)
            _exit(3);
        int err;
        struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
        if (!c)
            _exit(4);
        if (echo_with_hook(c, 1u << 20, 0, NULL, 10000) != 0)
            _exit(5);
        if (write(pfd[1], "x", 1) != 1)
            _exit(6);
        for (;;)
            echo_with_hook(c, BIG, BIG, NULL, 30000);
    }
    /* let it get going, then kill it like the OOM killer would kill QEMU */
    close(pfd[1]);
    struct pollfd pp = { pfd[0], POLLIN, 0 };
    char x = 0;
    bool going = poll(&pp, 1, 10000) == 1 && read(pfd[0], &x, 1) == 1;
    close(pfd[0]);
    usleep(150000);
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    tap_check(going && r == 0, "sigkill: frontend child echoed 1 MiB and is mid-transfer (%s)",
              r == 0 ? "running" : "exited early");
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    tap_check(hd_alive(&P), "sigkill: hostd alive after its frontend was SIGKILLed mid-transfer");
    check_baseline("sigkill");
    echo_again("sigkill");
}

static void case_reboot(void)
{
    struct vdev *a = vdev_alloc();
    if (!up_or_report(a, &P, 0, NULL, "reboot")) {
        free(a);
        return;
    }
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (!tap_check(c != NULL, "reboot: connect")) {
        vdev_down(a);
        free(a);
        return;
    }
    tap_check(echo_with_hook(c, 300000, 0, NULL, 5000) == 0, "reboot: echo before the reboot");
    settle(100);
    uint32_t base[2] = { 0, 0 };
    int rc = guest_stop(&a->g, base);
    tap_check(rc == 0, "reboot: SET_VRING_ENABLE 0 + GET_VRING_BASE answered%s%s", rc ? ": " : "", rc ? a->g.err : "");
    uint16_t rx_used = le16toh(*gvq_used_idx_p(&a->g.q[0]));
    tap_check(base[1] == a->g.q[1].avail_idx, "reboot: tx GET_VRING_BASE = %u, the next avail index (%u)", base[1],
              a->g.q[1].avail_idx);
    tap_check(base[0] == rx_used, "reboot: rx GET_VRING_BASE = %u, buffers consumed (used idx %u, avail %u)", base[0],
              rx_used, a->g.q[0].avail_idx);
    /* the device is stopped: nothing may land in the old rings any more */
    uint16_t tx_used = le16toh(*gvq_used_idx_p(&a->g.q[1]));
    settle(200);
    tap_check(le16toh(*gvq_used_idx_p(&a->g.q[0])) == rx_used && le16toh(*gvq_used_idx_p(&a->g.q[1])) == tx_used,
              "reboot: stopped rings are left alone");
    rc = guest_restart(&a->g, true);
    tap_check(rc == 0, "reboot: fresh rings at new addresses started%s%s", rc ? ": " : "", rc ? a->g.err : "");
    /* the old connection: hostd must not know it */
    unsigned mark = vdev_log_mark(a);
    uint32_t lport = c->lport;
    uint8_t b[100];
    memset(b, 1, sizeof(b));
    c->tx_cnt = 0; /* credit view is stale; just push a little */
    c->peer_buf_alloc = 65536;
    c->peer_fwd_cnt = 0;
    vc_try_send(c, b, sizeof(b));
    settle(500);
    unsigned rw = vdev_count_pkts(a, mark, OP_RW, 7, lport);
    unsigned rst = vdev_count_pkts(a, mark, OP_RST, 7, lport);
    tap_check(rw == 0, "reboot: data on the old connection is not echoed (%u RW)", rw);
    tap_diag("reboot: old connection answered with %s", rst ? "RST" : "nothing");
    vc_forget(c);
    char why[256] = "";
    rc = vdev_echo_check(a, 1u << 20, 5000, why, sizeof(why));
    tap_check(rc == 0, "reboot: new connections work after the restart%s%s", rc ? ": " : "", why);
    tap_check(a->errors == 0, "reboot: no protocol violations (%u)%s%s", a->errors, a->errors ? ": " : "", a->last_err);
    vdev_down(a);
    free(a);
    check_baseline("reboot");
}

static void hook_resplit(struct vdev *d)
{
    gm_resplit(&d->g.gm);
    int rc = vu_fe_set_mem_table(&d->g.fe, &d->g.gm);
    tap_check(rc == 0, "mem-table: SET_MEM_TABLE (3 regions, same RAM) accepted mid-transfer%s%s", rc ? ": " : "",
              rc ? d->g.fe.err : "");
}

static void case_mem_table(void)
{
    struct vdev *a = vdev_alloc();
    if (!up_or_report(a, &P, 0, NULL, "mem-table")) {
        free(a);
        return;
    }
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (tap_check(c != NULL, "mem-table: connect")) {
        int rc = echo_with_hook(c, BIG, 2u << 20, hook_resplit, 30000);
        tap_check(rc == 0, "mem-table: 8 MiB echo intact across the table change (%s)", rc ? strerror(-rc) : "ok");
        /* quiescent point: new memfd, regions at other file offsets, then more traffic */
        settle(100);
        rc = gm_relayout(&a->g.gm);
        rc = rc ? rc : vu_fe_set_mem_table(&a->g.fe, &a->g.gm);
        tap_check(rc == 0, "mem-table: SET_MEM_TABLE with a new memfd and swapped offsets accepted");
        int oldm = proc_count_maps_matching(P.pid, "memfd:harness-guest-ram (deleted)");
        int newm = proc_count_maps_matching(P.pid, "memfd:harness-guest-ram-2");
        tap_check(oldm == 0 && newm > 0, "mem-table: hostd dropped the old memfd's mappings (%d) and maps the new one (%d)",
                  oldm, newm);
        rc = echo_with_hook(c, BIG, 0, NULL, 30000);
        tap_check(rc == 0, "mem-table: 8 MiB echo on the new memory (%s)", rc ? strerror(-rc) : "ok");
        long long ms;
        rc = vc_close(c, 2000, &ms);
        tap_check(rc == 0, "mem-table: close gets RST in %lld ms", ms);
    }
    tap_check(a->errors == 0, "mem-table: no protocol violations (%u)%s%s", a->errors, a->errors ? ": " : "", a->last_err);
    vdev_down(a);
    free(a);
    check_baseline("mem-table");
}

static void send_request(struct vdev *a, uint32_t sport)
{
    uint8_t w[44];
    struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = sport, .dst_port = 7,
                      .type = VSOCK_TYPE_STREAM, .op = OP_REQUEST, .buf_alloc = 65536 };
    vhdr_encode(&h, w);
    guest_tx(&a->g, TXL_ONE, w, NULL, 0);
}

/* SET_VRING_ENABLE 0 parks a ring; SET_VRING_ENABLE 1 must make hostd look at it
 * again without a kick (DESIGN 2: scan a ring when it is enabled). */
static void case_enable(void)
{
    const char *name = "vring-enable";
    struct vdev *a = vdev_alloc();
    if (!up_or_report(a, &P, 0, NULL, name)) {
        free(a);
        return;
    }
    struct vu_fe *fe = &a->g.fe;
    int rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, 1, 0);
    unsigned mark = vdev_log_mark(a);
    send_request(a, 47000);
    settle(300);
    tap_check(rc == 0 && vdev_count_pkts(a, mark, 0, 7, 47000) == 0,
              "%s: a REQUEST on a disabled tx ring is not processed", name);
    rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, 1, 1);
    tap_check(rc == 0 && vdev_wait_pkt(a, mark, OP_RESPONSE, 7, 47000, 1000) != NULL,
              "%s: enabling the tx ring processes it without a kick", name);
    rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, 0, 0);
    uint16_t used0 = le16toh(*gvq_used_idx_p(&a->g.q[0]));
    mark = vdev_log_mark(a);
    send_request(a, 47001);
    settle(300);
    tap_check(rc == 0 && le16toh(*gvq_used_idx_p(&a->g.q[0])) == used0,
              "%s: nothing is written to a disabled rx ring", name);
    rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, 0, 1);
    tap_check(rc == 0 && vdev_wait_pkt(a, mark, OP_RESPONSE, 7, 47001, 1000) != NULL,
              "%s: the RESPONSE held back is delivered once the rx ring is enabled", name);
    settle(100);
    char why[256] = "";
    rc = vdev_echo_check(a, 100000, 5000, why, sizeof(why));
    tap_check(rc == 0, "%s: echo works afterwards%s%s", name, rc ? ": " : "", why);
    tap_check(a->errors == 0, "%s: no protocol violations (%u)%s%s", name, a->errors, a->errors ? ": " : "", a->last_err);
    vdev_down(a);
    free(a);
    check_baseline(name);
}

static void hook_swap_call(struct vdev *d)
{
    /* like QEMU masking/unmasking the vector: new call eventfds while running */
    for (unsigned i = 0; i < 2; i++) {
        struct gvq *q = &d->g.q[i];
        int nfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        int rc = vu_fe_vring_fd(&d->g.fe, VHOST_USER_SET_VRING_CALL, i, nfd);
        tap_check(rc == 0, "call-fd-swap: SET_VRING_CALL %u with a new eventfd mid-transfer", i);
        close(q->call_fd);
        q->call_fd = nfd;
    }
}

static void case_call_swap(void)
{
    const char *name = "call-fd-swap";
    struct vdev *a = vdev_alloc();
    if (!up_or_report(a, &P, 0, NULL, name)) {
        free(a);
        return;
    }
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    if (tap_check(c != NULL, "%s: connect", name)) {
        unsigned calls0 = a->g.q[0].calls;
        int rc = echo_with_hook(c, BIG, 1u << 20, hook_swap_call, 30000);
        tap_check(rc == 0, "%s: 8 MiB echo across the swap (%s)", name, rc ? strerror(-rc) : "ok");
        tap_check(a->missed_irqs == 0, "%s: hostd signals the new call eventfds (%u waits ended without one)",
                  name, a->missed_irqs);
        tap_diag("%s: rx calls %u", name, a->g.q[0].calls - calls0);
        long long ms;
        vc_close(c, 2000, &ms);
    }
    vdev_down(a);
    free(a);
    check_baseline(name);
}

/* call NOFD: no interrupts at all, the driver polls */
static void case_call_nofd(void)
{
    const char *name = "call-nofd";
    struct vdev *a = vdev_alloc();
    vdev_init(a, P.vm[0].cid);
    struct guest *g = &a->g;
    int rc = guest_connect(g, P.vm[0].sock, P.vm[0].cid, NULL);
    if (rc == 0) {
        /* guest_start, but with SET_VRING_CALL NOFD */
        struct vu_fe *fe = &g->fe;
        g->acked_features = fe->features & ((1ull << VIRTIO_F_VERSION_1) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
                                            (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_RING_F_INDIRECT_DESC));
        rc = vu_fe_set_u64(fe, VHOST_USER_SET_FEATURES, g->acked_features);
        rc = rc ? rc : vu_fe_set_mem_table(fe, &g->gm);
        for (unsigned i = 0; i < 2 && !rc; i++) {
            struct gvq *q = &g->q[i];
            gvq_reset(q, &g->gm, i, g->ring_gpa[i], true, 0);
            rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_NUM, i, q->num);
            rc = rc ? rc : vu_fe_vring_state(fe, VHOST_USER_SET_VRING_BASE, i, 0);
            rc = rc ? rc : vu_fe_vring_addr(fe, i, gm_uva(&g->gm, q->desc_gpa), gm_uva(&g->gm, q->avail_gpa),
                                            gm_uva(&g->gm, q->used_gpa));
            rc = rc ? rc : vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_KICK, i, q->kick_fd);
            rc = rc ? rc : vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_CALL, i, -1);
        }
        for (unsigned i = 0; i < 2 && !rc; i++)
            rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, i, 1);
    }
    if (!tap_check(rc == 0, "%s: bring-up with SET_VRING_CALL NOFD on both rings%s%s", name, rc ? ": " : "",
                   rc ? (g->err[0] ? g->err : g->fe.err) : "")) {
        guest_close(g);
        free(a);
        return;
    }
    g->running = true;
    guest_post_rx(g);
    vdev_register(a);
    a->strict_irq = false;
    char why[256] = "";
    rc = vdev_echo_check(a, 1u << 20, 10000, why, sizeof(why));
    tap_check(rc == 0, "%s: 1 MiB echo works with a polling driver%s%s", name, rc ? ": " : "", why);
    vdev_down(a);
    free(a);
    check_baseline(name);
}

/* RESET_DEVICE (offered as a protocol feature): state gone, device usable again */
static void case_reset_device(void)
{
    const char *name = "reset-device";
    struct vdev *a = vdev_alloc();
    if (!up_or_report(a, &P, 0, NULL, name)) {
        free(a);
        return;
    }
    if (!(a->g.fe.proto & (1ull << VHOST_USER_PROTOCOL_F_RESET_DEVICE))) {
        tap_diag("%s: RESET_DEVICE not offered; skipped", name);
        vdev_down(a);
        free(a);
        return;
    }
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 3000, &err);
    tap_check(c != NULL, "%s: connect", name);
    /* ack it so that it is negotiated (our default set does not include it) */
    int rc = vu_fe_req(&a->g.fe, VHOST_USER_RESET_DEVICE, NULL, 0, NULL, 0);
    tap_diag("%s: RESET_DEVICE without negotiating the feature -> %s", name, rc ? a->g.fe.err : "acked");
    if (vu_fe_peer_closed(&a->g.fe)) {
        tap_diag("%s: hostd closed the connection", name);
    } else {
        a->g.o.event_idx = false; /* renegotiate different features */
        rc = guest_restart(&a->g, false);
        tap_check(rc == 0, "%s: rings restarted with different features%s%s", name, rc ? ": " : "", rc ? a->g.err : "");
        if (c) {
            unsigned mark = vdev_log_mark(a);
            uint32_t lport = c->lport;
            uint8_t b[10] = { 0 };
            vc_try_send(c, b, sizeof(b));
            settle(300);
            tap_check(vdev_count_pkts(a, mark, OP_RW, 7, lport) == 0, "%s: the old connection is gone", name);
            vc_forget(c);
            c = NULL;
        }
        char why[256] = "";
        rc = vdev_echo_check(a, 100000, 5000, why, sizeof(why));
        tap_check(rc == 0, "%s: echo works afterwards (EVENT_IDX now off)%s%s", name, rc ? ": " : "", why);
    }
    if (c)
        vc_forget(c);
    vdev_down(a);
    free(a);
    check_baseline(name);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    uint64_t cids[1] = { 3 };
    start_or_die(&P, bin, 1, cids, NULL);
    out = malloc(BIG);
    in = malloc(BIG);
    echo_again("warm-up");
    settle(200);
    base_fds = proc_count_fds(P.pid);
    base_maps = proc_count_maps(P.pid);
    base_memfd = proc_count_maps_matching(P.pid, "memfd:");
    tap_diag("baseline: %d fds, %d maps", base_fds, base_maps);

    case_close_mid_transfer();
    case_sigkill();
    case_reboot();
    case_mem_table();
    case_enable();
    case_call_swap();
    case_call_nofd();
    case_reset_device();

    free(out);
    free(in);
    stop_and_check(&P);
    return tap_done();
}
