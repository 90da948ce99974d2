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
#include <sys/wait.h>
#include <unistd.h>

#include "tcommon.h"

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

static void check_baseline(const char *what)
{
    long long end = now_ms() + 3000;
    int fds, maps;
    do {
        fds = proc_count_fds(P.pid);
        maps = proc_count_maps(P.pid);
        if (fds == base_fds && maps == base_maps)
            break;
        settle(50);
    } while (now_ms() < end);
    tap_check(fds == base_fds, "%s: hostd fds back to baseline (%d, baseline %d)", what, fds, base_fds);
    tap_check(maps == base_maps, "%s: hostd maps back to baseline (%d, baseline %d)", what, maps, base_maps);
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
    uint16_t rx_used = *gvq_used_idx_p(&a->g.q[0]);
    tap_check(base[1] == a->g.q[1].avail_idx, "reboot: tx GET_VRING_BASE = %u, the next avail index (%u)", base[1],
              a->g.q[1].avail_idx);
    tap_check(base[0] == rx_used, "reboot: rx GET_VRING_BASE = %u, buffers consumed (used idx %u, avail %u)", base[0],
              rx_used, a->g.q[0].avail_idx);
    /* the device is stopped: nothing may land in the old rings any more */
    uint16_t tx_used = *gvq_used_idx_p(&a->g.q[1]);
    settle(200);
    tap_check(*gvq_used_idx_p(&a->g.q[0]) == rx_used && *gvq_used_idx_p(&a->g.q[1]) == tx_used,
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
    uint16_t used0 = *gvq_used_idx_p(&a->g.q[0]);
    mark = vdev_log_mark(a);
    send_request(a, 47001);
    settle(300);
    tap_check(rc == 0 && *gvq_used_idx_p(&a->g.q[0]) == used0,
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
    tap_diag("baseline: %d fds, %d maps", base_fds, base_maps);

    case_close_mid_transfer();
    case_sigkill();
    case_reboot();
    case_mem_table();
    case_enable();

    free(out);
    free(in);
    stop_and_check(&P);
    return tap_done();
}
