/* 6. hostile: a malicious guest (bad rings, bad packets) and a malicious
 * frontend (bad vhost-user messages) on VM A must never take hostd down nor
 * disturb VM B, served by the same hostd. After every case: hostd alive, an
 * echo on VM B works, and VM A works again after its frontend reconnects.
 * Packet-level cases (valid chains, bad contents) must not even break VM A's
 * rings: an echo on A in the same session must work. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

#define BIT(n) (1ull << (n))
#define SCRATCH 0x800000ull       /* unused guest RAM in the low region */
#define LOW_END (16ull << 20)     /* end of the low region (32 MiB RAM) */
#define HOLE_GPA 0x40000000ull    /* between the regions */

static struct hd_proc P;
static struct vdev *B;
static int base_fds = -1;

static void settle(int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        vdev_pump(20);
}

static bool echo_ok(struct vdev *d, const char *who, const char *cname)
{
    char why[256] = "";
    int rc = vdev_echo_check(d, 20000, 4000, why, sizeof(why));
    return tap_check(rc == 0, "[%s] %s echo works%s%s", cname, who, rc ? ": " : "", why);
}

/* the checks that follow every case */
static void after_case(const char *cname)
{
    if (!tap_check(hd_alive(&P), "[%s] hostd alive", cname)) {
        char b[64];
        tap_diag("hostd %s", hd_describe_exit(&P, b, sizeof(b)));
        hd_log_tail(&P, 40);
        exit(tap_done());
    }
    echo_ok(B, "VM B", cname);
    struct vdev *a = vdev_alloc();
    if (vdev_up(a, P.vm[0].sock, P.vm[0].cid, NULL) == 0)
        echo_ok(a, "VM A after reconnect", cname);
    else
        tap_check(false, "[%s] VM A frontend reconnects: %s", cname, a->last_err);
    vdev_down(a);
    free(a);
}

static struct vdev *fresh_a(const char *cname)
{
    struct vdev *a = vdev_alloc();
    if (vdev_up(a, P.vm[0].sock, P.vm[0].cid, NULL) != 0) {
        tap_check(false, "[%s] VM A bring-up: %s", cname, a->last_err);
        free(a);
        return NULL;
    }
    a->auto_rst = false;
    return a;
}

/* --------------------------------------------------- ring-level (tx queue) */

static struct gvq *txq(struct vdev *a) { return &a->g.q[GVQ_TX]; }

static void put_hdr(struct vdev *a, uint64_t gpa, uint16_t op, uint32_t sport, uint32_t len)
{
    struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = sport, .dst_port = 7, .len = len,
                      .type = VSOCK_TYPE_STREAM, .op = op, .buf_alloc = 65536 };
    uint8_t *p = gm_ptr(&a->g.gm, gpa, 44);
    vhdr_encode(&h, p);
}

static void desc(struct vdev *a, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    *gvq_desc(txq(a), i) = gvq_desc_le(addr, len, flags, next);
}

static void go(struct vdev *a, uint16_t head)
{
    gvq_publish_raw(txq(a), head);
    gvq_kick(txq(a), true);
    settle(300);
}

typedef void (*ring_case_fn)(struct vdev *a);

static void c_loop(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    desc(a, 200, SCRATCH, 44, VRING_DESC_F_NEXT, 201);
    desc(a, 201, SCRATCH + 64, 8, VRING_DESC_F_NEXT, 200);
    go(a, 200);
}
static void c_self_loop(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    desc(a, 200, SCRATCH, 44, VRING_DESC_F_NEXT, 200);
    go(a, 200);
}
static void c_whole_ring_chain(struct vdev *a)
{
    /* every descriptor chained, the last pointing back to the first */
    put_hdr(a, SCRATCH, OP_RW, 45000, 255 * 4);
    for (unsigned i = 0; i < GVQ_NUM; i++)
        desc(a, i, i ? SCRATCH + 64 + 4 * i : SCRATCH, i ? 4 : 44, VRING_DESC_F_NEXT, (uint16_t)((i + 1) % GVQ_NUM));
    go(a, 0);
}
static void c_next_out_of_range(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    desc(a, 200, SCRATCH, 44, VRING_DESC_F_NEXT, 5000);
    go(a, 200);
}
static void c_chain_65(struct vdev *a)
{
    /* legal per spec, longer than most backends accept (VIRTQ_MAX_SG 64) */
    put_hdr(a, SCRATCH, OP_RW, 45000, 64);
    desc(a, 100, SCRATCH, 44, VRING_DESC_F_NEXT, 101);
    for (unsigned i = 1; i <= 64; i++)
        desc(a, 100 + i, SCRATCH + 64 + i, 1, i < 64 ? VRING_DESC_F_NEXT : 0, (uint16_t)(101 + i));
    go(a, 100);
}
static void c_indirect_300(struct vdev *a)
{
    uint64_t t = SCRATCH + 0x10000;
    struct vring_desc *tab = gm_ptr(&a->g.gm, t, 300 * 16);
    put_hdr(a, SCRATCH, OP_RW, 45000, 299);
    for (unsigned i = 0; i < 300; i++) {
        tab[i] = gvq_desc_le(i ? SCRATCH + 64 + i : SCRATCH, i ? 1 : 44, i < 299 ? VRING_DESC_F_NEXT : 0,
                             (uint16_t)(i + 1));
    }
    desc(a, 200, t, 300 * 16, VRING_DESC_F_INDIRECT, 0);
    go(a, 200);
}
static void c_indirect_loop(struct vdev *a)
{
    uint64_t t = SCRATCH + 0x10000;
    struct vring_desc *tab = gm_ptr(&a->g.gm, t, 2 * 16);
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    tab[0] = gvq_desc_le(SCRATCH, 44, VRING_DESC_F_NEXT, 1);
    tab[1] = gvq_desc_le(SCRATCH + 64, 4, VRING_DESC_F_NEXT, 0);
    desc(a, 200, t, 32, VRING_DESC_F_INDIRECT, 0);
    go(a, 200);
}
static void c_gpa_out_of_range(struct vdev *a)
{
    desc(a, 200, 64ull << 30, 44, 0, 0);
    go(a, 200);
}
static void c_gpa_in_hole(struct vdev *a)
{
    desc(a, 200, HOLE_GPA, 44, 0, 0);
    go(a, 200);
}
static void c_gpa_straddles_region_end(struct vdev *a)
{
    desc(a, 200, LOW_END - 20, 44, 0, 0);
    go(a, 200);
}
static void c_payload_in_hole(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_RW, 45000, 100);
    desc(a, 200, SCRATCH, 44, VRING_DESC_F_NEXT, 201);
    desc(a, 201, HOLE_GPA, 100, 0, 0);
    go(a, 200);
}
static void c_addr_wraps(struct vdev *a)
{
    desc(a, 200, 0xfffffffffffffff0ull, 0x20, 0, 0);
    go(a, 200);
}
static void c_payload_wraps(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_RW, 45000, 0x20);
    desc(a, 200, SCRATCH, 44, VRING_DESC_F_NEXT, 201);
    desc(a, 201, 0xfffffffffffffff0ull, 0x20, 0, 0);
    go(a, 200);
}
static void c_huge_len(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_RW, 45000, 0xffffff00u);
    desc(a, 200, SCRATCH, 0xffffffffu, 0, 0);
    go(a, 200);
}
static void c_zero_len_descs(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    desc(a, 200, SCRATCH, 0, VRING_DESC_F_NEXT, 201);
    desc(a, 201, SCRATCH, 44, VRING_DESC_F_NEXT, 202);
    desc(a, 202, SCRATCH + 64, 0, 0, 0);
    go(a, 200);
    desc(a, 210, SCRATCH, 0, 0, 0); /* a packet of zero bytes */
    go(a, 210);
    desc(a, 211, 0, 0, 0, 0);
    go(a, 211);
}
static void c_writable_in_tx(struct vdev *a)
{
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    desc(a, 200, SCRATCH, 44, VRING_DESC_F_WRITE, 0);
    go(a, 200);
    put_hdr(a, SCRATCH, OP_RW, 45001, 10);
    desc(a, 201, SCRATCH, 44, VRING_DESC_F_NEXT, 202);
    desc(a, 202, SCRATCH + 64, 10, VRING_DESC_F_WRITE, 0);
    go(a, 201);
}
static void c_indirect_in_indirect(struct vdev *a)
{
    uint64_t t = SCRATCH + 0x10000, t2 = SCRATCH + 0x11000;
    struct vring_desc *tab = gm_ptr(&a->g.gm, t, 32), *tab2 = gm_ptr(&a->g.gm, t2, 32);
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    tab2[0] = gvq_desc_le(SCRATCH, 44, 0, 0);
    tab[0] = gvq_desc_le(t2, 16, VRING_DESC_F_INDIRECT, 0);
    desc(a, 200, t, 16, VRING_DESC_F_INDIRECT, 0);
    go(a, 200);
    tab[0] = gvq_desc_le(SCRATCH, 44, VRING_DESC_F_NEXT, 1);
    tab[1] = gvq_desc_le(t, 32, VRING_DESC_F_INDIRECT, 0);
    desc(a, 201, t, 32, VRING_DESC_F_INDIRECT, 0);
    go(a, 201);
}
static void c_indirect_bad_len(struct vdev *a)
{
    uint64_t t = SCRATCH + 0x10000;
    struct vring_desc *tab = gm_ptr(&a->g.gm, t, 48);
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    tab[0] = gvq_desc_le(SCRATCH, 44, VRING_DESC_F_NEXT, 1);
    tab[1] = gvq_desc_le(SCRATCH + 64, 4, 0, 0);
    desc(a, 200, t, 40, VRING_DESC_F_INDIRECT, 0);
    go(a, 200);
    desc(a, 201, t, 0, VRING_DESC_F_INDIRECT, 0);
    go(a, 201);
    desc(a, 202, HOLE_GPA, 32, VRING_DESC_F_INDIRECT, 0);
    go(a, 202);
    desc(a, 203, t, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 204); /* spec: not both */
    desc(a, 204, SCRATCH, 44, 0, 0);
    go(a, 203);
}
static void c_indirect_next_out_of_table(struct vdev *a)
{
    uint64_t t = SCRATCH + 0x10000;
    struct vring_desc *tab = gm_ptr(&a->g.gm, t, 32);
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    tab[0] = gvq_desc_le(SCRATCH, 44, VRING_DESC_F_NEXT, 7);
    tab[1] = gvq_desc_le(SCRATCH + 64, 4, 0, 0);
    desc(a, 200, t, 32, VRING_DESC_F_INDIRECT, 0);
    go(a, 200);
}
static void c_avail_jump(struct vdev *a)
{
    struct gvq *q = txq(a);
    put_hdr(a, SCRATCH, OP_REQUEST, 45000, 0);
    desc(a, 200, SCRATCH, 44, 0, 0);
    *gvq_avail_ring_p(q, q->avail_idx) = htole16(200);
    q->avail_idx = (uint16_t)(q->avail_idx + 1000);
    __atomic_store_n(gvq_avail_idx_p(q), htole16(q->avail_idx), __ATOMIC_RELEASE);
    gvq_kick(q, true);
    settle(300);
}
static void c_avail_backwards(struct vdev *a)
{
    struct gvq *q = txq(a);
    __atomic_store_n(gvq_avail_idx_p(q), htole16((uint16_t)(q->avail_idx - 5)), __ATOMIC_RELEASE);
    gvq_kick(q, true);
    settle(300);
}
static void c_head_out_of_range(struct vdev *a)
{
    go(a, 300);
    go(a, 0xffff);
}
static void c_rx_bad_buffers(struct vdev *a)
{
    /* every posted rx buffer now points into the hole; then make hostd answer */
    struct gvq *q = &a->g.q[GVQ_RX];
    for (unsigned i = 0; i < GVQ_NUM; i++) {
        struct vring_desc *d = gvq_desc(q, i);
        if (i % 3 == 0)
            d->addr = htole64(HOLE_GPA);
        else if (i % 3 == 1)
            d->flags = htole16(0); /* read-only rx buffer */
        else
            d->len = htole32(10);  /* smaller than a header */
    }
    uint8_t w[44];
    struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = 45000, .dst_port = 7,
                      .type = VSOCK_TYPE_STREAM, .op = OP_REQUEST, .buf_alloc = 65536 };
    for (int i = 0; i < 8; i++) {
        h.src_port = 45000 + (uint32_t)i;
        vhdr_encode(&h, w);
        guest_tx(&a->g, TXL_ONE, w, NULL, 0);
    }
    settle(300);
}
static void c_rx_head_out_of_range(struct vdev *a)
{
    struct gvq *q = &a->g.q[GVQ_RX];
    gvq_publish_raw(q, 4000);
    gvq_kick(q, true);
    settle(100);
    uint8_t w[44];
    struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = 45000, .dst_port = 7,
                      .type = VSOCK_TYPE_STREAM, .op = OP_REQUEST, .buf_alloc = 65536 };
    vhdr_encode(&h, w);
    guest_tx(&a->g, TXL_ONE, w, NULL, 0);
    settle(300);
}

/* structural: the chain is malformed, so its REQUEST (port 45000) must not be acted upon */
static void ring_case2(const char *name, ring_case_fn fn, bool structural)
{
    struct vdev *a = fresh_a(name);
    if (a) {
        unsigned mark = vdev_log_mark(a);
        fn(a);
        if (structural)
            tap_check(vdev_count_pkts(a, mark, OP_RESPONSE, 7, 45000) == 0,
                      "[%s] the malformed chain's REQUEST got no RESPONSE", name);
        tap_diag("[%s] vhost-user connection %s after the case", name, a->dead || vu_fe_peer_closed(&a->g.fe) ? "closed by hostd" : "kept");
        vdev_down(a);
        free(a);
    }
    after_case(name);
}

static void ring_case(const char *name, ring_case_fn fn)
{
    ring_case2(name, fn, false);
}

/* ------------------------------------------------ packet-level (valid chains) */

typedef void (*pkt_case_fn)(struct vdev *a, const char *name);

static void send_raw(struct vdev *a, struct vhdr h, uint32_t real_len)
{
    static uint8_t pl[65536];
    memset(pl, 0x5a, sizeof(pl));
    vdev_send_pkt(a, &h, pl, real_len);
}

static struct vhdr base_hdr(struct vdev *a, uint16_t op, uint32_t sport, uint32_t len)
{
    struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = sport, .dst_port = 7, .len = len,
                      .type = VSOCK_TYPE_STREAM, .op = op, .buf_alloc = 65536 };
    return h;
}

static void p_len_mismatch(struct vdev *a, const char *name)
{
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 2000, &err);
    if (!tap_check(c != NULL, "[%s] connect", name))
        return;
    struct vhdr h = base_hdr(a, OP_RW, c->lport, 1000);
    h.fwd_cnt = c->fwd_cnt;
    h.buf_alloc = c->buf_alloc;
    send_raw(a, h, 10);               /* len says 1000, 10 bytes present */
    h.len = 100000;                   /* > 64 KiB */
    send_raw(a, h, 10);
    h.len = 0xffffffffu;
    send_raw(a, h, 10);
    h.len = 5;                        /* len smaller than the payload present */
    send_raw(a, h, 100);
    settle(200);
    /* the echo may have been reset by hostd; whatever it did, the data it echoed must be sane */
    vc_forget(c);
}
static void p_wrong_src_cid(struct vdev *a, const char *name)
{
    unsigned markb = vdev_log_mark(B);
    unsigned mark = vdev_log_mark(a);
    uint64_t bad[] = { 99, 0, 1, 2, 0xffffffffull, 0x100000003ull, B->cid };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct vhdr h = base_hdr(a, OP_REQUEST, 46000 + i, 0);
        h.src_cid = bad[i];
        send_raw(a, h, 0);
    }
    settle(300);
    unsigned resp = 0;
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        resp += vdev_count_pkts(a, mark, OP_RESPONSE, 7, 46000 + i);
    tap_check(resp == 0, "[%s] no RESPONSE to REQUESTs with a forged src_cid (%u)", name, resp);
    unsigned tob = 0;
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        tob += vdev_count_pkts(B, markb, 0, 7, 46000 + i);
    tap_check(tob == 0, "[%s] VM B got nothing for a REQUEST forged with its CID (%u)", name, tob);
}
static void p_unknown_op_type(struct vdev *a, const char *name)
{
    struct vhdr h = base_hdr(a, 99, 46100, 0);
    send_raw(a, h, 0);
    h = base_hdr(a, 0, 46101, 0);
    send_raw(a, h, 0);
    h = base_hdr(a, OP_REQUEST, 46102, 0);
    h.type = 7;
    send_raw(a, h, 0);
    h = base_hdr(a, OP_REQUEST, 46103, 0);
    h.type = 0;
    send_raw(a, h, 0);
    h = base_hdr(a, OP_REQUEST, 46104, 10); /* REQUEST with payload */
    send_raw(a, h, 10);
    h = base_hdr(a, OP_REQUEST, 46105, 0);
    h.dst_cid = 0x1000000000ull;
    send_raw(a, h, 0);
    settle(300);
    unsigned mark = 0;
    (void)mark;
    tap_check(vdev_count_pkts(a, 0, OP_RESPONSE, 7, 46102) + vdev_count_pkts(a, 0, OP_RESPONSE, 7, 46103) == 0,
              "[%s] no RESPONSE for a REQUEST of unknown type", name);
}
static void p_beyond_credit(struct vdev *a, const char *name)
{
    a->default_buf_alloc = 0; /* the echo can never send back: its buffer fills */
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 2000, &err);
    if (!tap_check(c != NULL, "[%s] connect", name))
        return;
    long rss0 = proc_rss_kb(P.pid);
    uint32_t lport = c->lport, pba = c->peer_buf_alloc;
    unsigned mark = vdev_log_mark(a);
    struct vhdr h = base_hdr(a, OP_RW, lport, 65536);
    h.buf_alloc = 0;
    size_t total = 0;
    long long t0 = now_ms();
    const struct vhdr *rst = NULL;
    /* 64 MiB, ignoring the advertised credit */
    for (int i = 0; i < 1024 && now_ms() - t0 < 20000; i++) {
        send_raw(a, h, 65536);
        total += 65536;
        if (i % 16 == 0) {
            vdev_pump(0);
            if (!rst)
                rst = vdev_wait_pkt(a, mark, OP_RST, 7, lport, 0);
        }
    }
    if (!rst)
        rst = vdev_wait_pkt(a, mark, OP_RST, 7, lport, 1000);
    long rss1 = proc_rss_kb(P.pid);
    tap_check(rst != NULL, "[%s] %zu MiB sent against a credit of %u bytes: connection reset", name, total >> 20, pba);
    tap_check(rss1 - rss0 < 24 * 1024 + rss_slack_kb(), "[%s] hostd RSS grew %ld KiB (< 24 MiB)", name, rss1 - rss0);
    tap_check(c->credit_violations == 0, "[%s] hostd never sent data beyond our zero credit", name);
    vc_forget(c);
    a->default_buf_alloc = 256 * 1024;
}
static void p_credit_request_flood(struct vdev *a, const char *name)
{
    int err;
    struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, HOST_CID, 7, 2000, &err);
    if (!tap_check(c != NULL, "[%s] connect", name))
        return;
    long rss0 = proc_rss_kb(P.pid);
    unsigned upd0 = c->credit_updates_rx;
    long long t0 = now_ms();
    int sent = 0;
    for (; sent < 100000 && now_ms() - t0 < 30000; sent++) {
        if (vc_send_ctrl(c, OP_CREDIT_REQUEST, 0) != 0)
            break;
        if (sent % 64 == 0)
            vdev_pump(0);
    }
    settle(300);
    long rss1 = proc_rss_kb(P.pid);
    unsigned upd = c->credit_updates_rx - upd0;
    tap_check(sent == 100000, "[%s] %d CREDIT_REQUESTs sent in %lld ms", name, sent, now_ms() - t0);
    tap_check(upd > 0, "[%s] answered with CREDIT_UPDATEs (%u)", name, upd);
    tap_check(rss1 - rss0 < 16 * 1024 + rss_slack_kb(), "[%s] hostd RSS grew %ld KiB (< 16 MiB)", name, rss1 - rss0);
    uint8_t o[5000], i2[5000];
    fill_pattern(o, sizeof(o), 9);
    int rc = c->got_rst ? -ECONNRESET : vc_echo(c, o, i2, sizeof(o), 4000);
    tap_check(rc == 0 && !memcmp(o, i2, sizeof(o)), "[%s] the flooded connection still echoes", name);
    long long ms;
    vc_close(c, 2000, &ms);
}

static void pkt_case(const char *name, pkt_case_fn fn)
{
    struct vdev *a = fresh_a(name);
    if (a) {
        fn(a, name);
        if (tap_check(hd_alive(&P), "[%s] hostd alive", name))
            echo_ok(a, "VM A (same session)", name);
        vdev_down(a);
        free(a);
    }
    after_case(name);
}

/* ------------------------------------------------------- vhost-user messages */

/* Connect and complete the init handshake (REPLY_ACK negotiated), no rings. */
static struct vdev *fe_a(const char *name)
{
    struct vdev *a = vdev_alloc();
    vdev_init(a, P.vm[0].cid);
    if (guest_connect(&a->g, P.vm[0].sock, P.vm[0].cid, NULL) != 0) {
        tap_check(false, "[%s] handshake: %s", name, a->g.err);
        guest_close(&a->g);
        free(a);
        return NULL;
    }
    return a;
}

/* Send a raw message expecting NEED_REPLY; outcome: "nack", "ack", "closed", "silent" */
static const char *raw_outcome(struct vu_fe *fe, uint32_t req, uint32_t size, const void *pl, size_t pl_len,
                               const int *fds, unsigned nfds)
{
    if (vu_fe_send_raw(fe, req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, size, pl, pl_len, fds, nfds))
        return "closed";
    struct vu_msg_hdr h;
    uint64_t st = 0;
    int rc = vu_fe_recv(fe, &h, &st, 8, 1000);
    if (rc == -ECONNRESET)
        return "closed";
    if (rc == -ETIMEDOUT)
        return "silent";
    if (rc)
        return "error";
    return st ? "nack" : "ack";
}

static void vu_case_done(struct vdev *a, const char *name, const char *what, const char *outcome, bool ack_is_bug)
{
    tap_diag("[%s] %s -> %s", name, what, outcome);
    if (ack_is_bug)
        tap_check(strcmp(outcome, "ack") != 0, "[%s] %s is refused (not acked)", name, what);
    (void)a;
}

static void v_unknown_requests(void)
{
    const char *name = "vu-unknown-requests";
    uint32_t reqs[] = { 0, 99, 1000, 0xffffffffu, 26 /* CREATE_CRYPTO_SESSION */, 6 /* SET_LOG_BASE */ };
    for (unsigned i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct vdev *a = fe_a(name);
        if (!a)
            break;
        uint64_t v = 0;
        char what[64];
        snprintf(what, sizeof(what), "request %u", reqs[i]);
        vu_case_done(a, name, what, raw_outcome(&a->g.fe, reqs[i], 8, &v, 8, NULL, 0), reqs[i] != 6 || true);
        guest_close(&a->g);
        free(a);
    }
    after_case(name);
}

static void v_bad_sizes(void)
{
    const char *name = "vu-bad-sizes";
    struct { uint32_t req, size, send; const char *what; } m[] = {
        { VHOST_USER_SET_FEATURES, 0, 0, "SET_FEATURES size 0" },
        { VHOST_USER_SET_FEATURES, 4, 4, "SET_FEATURES size 4" },
        { VHOST_USER_SET_VRING_NUM, 4, 4, "SET_VRING_NUM size 4" },
        { VHOST_USER_SET_VRING_NUM, 16, 16, "SET_VRING_NUM size 16" },
        { VHOST_USER_SET_VRING_ADDR, 8, 8, "SET_VRING_ADDR size 8" },
        { VHOST_USER_GET_CONFIG, 4, 4, "GET_CONFIG size 4 (shorter than its header)" },
        { VHOST_USER_SET_MEM_TABLE, 4, 4, "SET_MEM_TABLE size 4" },
        { VHOST_USER_SET_VRING_BASE, 0, 0, "SET_VRING_BASE size 0" },
    };
    uint8_t pl[4096];
    memset(pl, 0, sizeof(pl));
    for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        struct vdev *a = fe_a(name);
        if (!a)
            break;
        vu_case_done(a, name, m[i].what, raw_outcome(&a->g.fe, m[i].req, m[i].size, pl, m[i].send, NULL, 0), true);
        guest_close(&a->g);
        free(a);
    }
    /* GET_CONFIG asking for more than the config space / absurd offsets */
    struct vdev *a = fe_a(name);
    if (a) {
        uint8_t cfg[sizeof(struct vu_config) + 8];
        memset(cfg, 0, sizeof(cfg));
        struct vu_config c = { .offset = 0, .size = 4000, .flags = 0 };
        memcpy(cfg, &c, sizeof(c));
        vu_case_done(a, name, "GET_CONFIG size field 4000 in a 20-byte message",
                     raw_outcome(&a->g.fe, VHOST_USER_GET_CONFIG, sizeof(cfg), cfg, sizeof(cfg), NULL, 0), false);
        guest_close(&a->g);
        free(a);
    }
    a = fe_a(name);
    if (a) {
        uint8_t cfg[sizeof(struct vu_config) + 8];
        struct vu_config c = { .offset = 0xfffffff8u, .size = 8, .flags = 0 };
        memset(cfg, 0, sizeof(cfg));
        memcpy(cfg, &c, sizeof(c));
        vu_case_done(a, name, "GET_CONFIG offset 0xfffffff8",
                     raw_outcome(&a->g.fe, VHOST_USER_GET_CONFIG, sizeof(cfg), cfg, sizeof(cfg), NULL, 0), false);
        guest_close(&a->g);
        free(a);
    }
    /* header announcing a huge payload, then nothing / then close */
    a = fe_a(name);
    if (a) {
        vu_fe_send_raw(&a->g.fe, VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 0x7fffffffu, pl, 64, NULL, 0);
        settle(200);
        guest_close(&a->g);
        free(a);
    }
    /* a truncated header */
    a = fe_a(name);
    if (a) {
        if (write(a->g.fe.fd, pl, 5) != 5)
            tap_diag("short write");
        settle(100);
        guest_close(&a->g);
        free(a);
    }
    /* wrong version bits */
    a = fe_a(name);
    if (a) {
        uint64_t v = 0;
        vu_fe_send_raw(&a->g.fe, VHOST_USER_SET_OWNER, 0x2, 0, &v, 0, NULL, 0);
        vu_fe_send_raw(&a->g.fe, VHOST_USER_GET_FEATURES, 0x0, 0, &v, 0, NULL, 0);
        settle(200);
        guest_close(&a->g);
        free(a);
    }
    after_case(name);
}

static void v_mem_table(void)
{
    const char *name = "vu-mem-table";
    struct {
        unsigned nregions, nfds;
        uint64_t gpa1, size1, off1;
        const char *what;
    } m[] = {
        { 9, 8, GM_HIGH_GPA, 16 << 20, 16 << 20, "nregions 9" },
        { 2, 1, GM_HIGH_GPA, 16 << 20, 16 << 20, "2 regions, 1 fd" },
        { 2, 3, GM_HIGH_GPA, 16 << 20, 16 << 20, "2 regions, 3 fds" },
        { 2, 2, 0x800000, 16 << 20, 16 << 20, "overlapping regions" },
        { 2, 2, GM_HIGH_GPA, 0, 16 << 20, "zero-size region" },
        { 2, 2, 0xffffffffff000000ull, 32 << 20, 0, "region wrapping 2^64" },
        { 2, 2, GM_HIGH_GPA, 16 << 20, 0xfffffffffff00000ull, "absurd mmap_offset" },
        { 2, 2, GM_HIGH_GPA, 1ull << 40, 16 << 20, "1 TiB region on a 32 MiB fd" },
        { 0, 0, 0, 0, 0, "nregions 0" },
    };
    for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        struct vdev *a = fe_a(name);
        if (!a)
            break;
        struct vu_mem_table t;
        memset(&t, 0, sizeof(t));
        t.nregions = m[i].nregions;
        t.r[0] = (struct vu_region){ 0, 16 << 20, GM_UVA_BASE, 0 };
        t.r[1] = (struct vu_region){ m[i].gpa1, m[i].size1, GM_UVA_BASE + m[i].gpa1, m[i].off1 };
        int fds[8];
        for (int k = 0; k < 8; k++)
            fds[k] = a->g.gm.fd;
        uint32_t size = 8 + (m[i].nregions > 8 ? 8 : m[i].nregions) * 32;
        if (m[i].nregions == 9)
            size = 8 + 8 * 32;
        vu_case_done(a, name, m[i].what,
                     raw_outcome(&a->g.fe, VHOST_USER_SET_MEM_TABLE, size, &t, size, fds, m[i].nfds),
                     i != 8);
        guest_close(&a->g);
        free(a);
    }
    /* a region larger than its file: touching it would SIGBUS an unchecked backend */
    struct vdev *a = fe_a(name);
    if (a) {
        int small = memfd_create("small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        /* sealed, so that it is the size check that must refuse it */
        if (small >= 0 && ftruncate(small, 4096) == 0 && fcntl(small, F_ADD_SEALS, F_SEAL_SHRINK) == 0) {
            struct vu_mem_table t;
            memset(&t, 0, sizeof(t));
            t.nregions = 2;
            t.r[0] = (struct vu_region){ 0, 16 << 20, GM_UVA_BASE, 0 };
            t.r[1] = (struct vu_region){ GM_HIGH_GPA, 16 << 20, GM_UVA_BASE + GM_HIGH_GPA, 0 };
            int fds[2] = { a->g.gm.fd, small };
            a->g.fe.need_reply = true;
            vu_fe_set_u64(&a->g.fe, VHOST_USER_SET_FEATURES, a->g.fe.features & (BIT(32) | BIT(30)));
            const char *o = raw_outcome(&a->g.fe, VHOST_USER_SET_MEM_TABLE, 8 + 64, &t, 8 + 64, fds, 2);
            tap_diag("[%s] region of 16 MiB on a 4 KiB memfd -> %s", name, o);
            if (!strcmp(o, "ack")) {
                /* rings in the high region (beyond the file's end) */
                a->g.acked_features = a->g.fe.features & (BIT(32) | BIT(30));
                guest_rings_start(&a->g);
                vdev_register(a);
                a->auto_rst = false;
                uint8_t w[44];
                struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = 45000, .dst_port = 7,
                                  .type = VSOCK_TYPE_STREAM, .op = OP_REQUEST, .buf_alloc = 65536 };
                vhdr_encode(&h, w);
                guest_tx(&a->g, TXL_ONE, w, NULL, 0);
                settle(300);
            }
        }
        if (small >= 0)
            close(small);
        vdev_down(a);
        free(a);
    }
    after_case(name);
}

static void v_fds(void)
{
    const char *name = "vu-fds";
    int efd[20];
    for (int i = 0; i < 20; i++)
        efd[i] = eventfd(0, EFD_CLOEXEC);
    struct vdev *a = fe_a(name);
    if (a) {
        uint64_t v = 0;
        vu_case_done(a, name, "SET_OWNER with 20 fds", raw_outcome(&a->g.fe, VHOST_USER_SET_OWNER, 0, &v, 0, efd, 20), false);
        guest_close(&a->g);
        free(a);
    }
    a = fe_a(name);
    if (a) {
        uint64_t v = 1ull << 32;
        vu_case_done(a, name, "SET_FEATURES with 3 stray fds",
                     raw_outcome(&a->g.fe, VHOST_USER_SET_FEATURES, 8, &v, 8, efd, 3), false);
        uint64_t k = 0 | VHOST_USER_VRING_NOFD_MASK;
        vu_case_done(a, name, "SET_VRING_KICK with NOFD and an fd",
                     raw_outcome(&a->g.fe, VHOST_USER_SET_VRING_KICK, 8, &k, 8, efd, 1), false);
        k = 1;
        vu_case_done(a, name, "SET_VRING_CALL without fd nor NOFD",
                     raw_outcome(&a->g.fe, VHOST_USER_SET_VRING_CALL, 8, &k, 8, NULL, 0), true);
        k = 7;
        vu_case_done(a, name, "SET_VRING_KICK for vq 7",
                     raw_outcome(&a->g.fe, VHOST_USER_SET_VRING_KICK, 8, &k, 8, efd, 1), true);
        k = 0;
        vu_case_done(a, name, "SET_VRING_KICK with 8 fds",
                     raw_outcome(&a->g.fe, VHOST_USER_SET_VRING_KICK, 8, &k, 8, efd, 8), false);
        guest_close(&a->g);
        free(a);
    }
    /* sending 20 fds repeatedly must not leak them in hostd */
    for (int r = 0; r < 5; r++) {
        a = fe_a(name);
        if (!a)
            break;
        uint64_t v = 0;
        raw_outcome(&a->g.fe, VHOST_USER_SET_OWNER, 0, &v, 0, efd, 20);
        guest_close(&a->g);
        free(a);
    }
    for (int i = 0; i < 20; i++)
        close(efd[i]);
    settle(200);
    after_case(name);
}

static void v_vring_params(void)
{
    const char *name = "vu-vring-params";
    struct { uint32_t req, idx, num; const char *what; } m[] = {
        { VHOST_USER_SET_VRING_NUM, 0, 0, "SET_VRING_NUM 0" },
        { VHOST_USER_SET_VRING_NUM, 0, 3, "SET_VRING_NUM 3 (not a power of 2)" },
        { VHOST_USER_SET_VRING_NUM, 0, 65536, "SET_VRING_NUM 65536 (> 32768)" },
        { VHOST_USER_SET_VRING_NUM, 1, 0xffffffffu, "SET_VRING_NUM 0xffffffff" },
        { VHOST_USER_SET_VRING_NUM, 2, 256, "SET_VRING_NUM for vq 2 (the event queue stays in QEMU)" },
        { VHOST_USER_SET_VRING_NUM, 200, 256, "SET_VRING_NUM for vq 200" },
        { VHOST_USER_SET_VRING_BASE, 9, 0, "SET_VRING_BASE for vq 9" },
        { VHOST_USER_SET_VRING_ENABLE, 5, 1, "SET_VRING_ENABLE for vq 5" },
        { VHOST_USER_GET_VRING_BASE, 7, 0, "GET_VRING_BASE for vq 7" },
    };
    for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        struct vdev *a = fe_a(name);
        if (!a)
            break;
        struct vu_vring_state s = { m[i].idx, m[i].num };
        const char *o;
        if (m[i].req == VHOST_USER_GET_VRING_BASE) {
            struct vu_vring_state r;
            int rc = vu_fe_call(&a->g.fe, m[i].req, &s, sizeof(s), &r, sizeof(r));
            o = rc == -ECONNRESET ? "closed" : rc ? "error/closed" : "answered";
        } else
            o = raw_outcome(&a->g.fe, m[i].req, sizeof(s), &s, sizeof(s), NULL, 0);
        vu_case_done(a, name, m[i].what, o, m[i].req == VHOST_USER_SET_VRING_NUM);
        guest_close(&a->g);
        free(a);
    }
    /* full bring-up with a bad ring size, then enable and kick */
    uint32_t bad_nums[] = { 0, 3, 65536 };
    for (unsigned i = 0; i < 3; i++) {
        struct vdev *a = fe_a(name);
        if (!a)
            break;
        struct vu_fe *fe = &a->g.fe;
        vu_fe_set_u64(fe, VHOST_USER_SET_FEATURES, fe->features & (BIT(32) | BIT(30)));
        vu_fe_set_mem_table(fe, &a->g.gm);
        gvq_reset(&a->g.q[1], &a->g.gm, 1, GM_HIGH_GPA + (15ull << 20), false, 0);
        struct gvq *q = &a->g.q[1];
        vu_fe_vring_state(fe, VHOST_USER_SET_VRING_NUM, 1, bad_nums[i]);
        vu_fe_vring_state(fe, VHOST_USER_SET_VRING_BASE, 1, 0);
        vu_fe_vring_addr(fe, 1, gm_uva(&a->g.gm, q->desc_gpa), gm_uva(&a->g.gm, q->avail_gpa), gm_uva(&a->g.gm, q->used_gpa));
        vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_KICK, 1, q->kick_fd);
        vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_CALL, 1, q->call_fd);
        vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, 1, 1);
        *gvq_avail_idx_p(q) = htole16(17);
        uint64_t one = 1;
        if (write(q->kick_fd, &one, 8) != 8)
            tap_diag("kick failed");
        settle(200);
        tap_diag("[%s] bring-up with SET_VRING_NUM %u then kick: done", name, bad_nums[i]);
        guest_close(&a->g);
        free(a);
    }
    after_case(name);
}

static void v_ring_addr_outside(void)
{
    const char *name = "vu-ring-addr-outside";
    uint64_t bad[][3] = {
        { 0x1000, 0x2000, 0x3000 },                                         /* not a UVA of any region */
        { GM_UVA_BASE + (16ull << 20) - 8, GM_UVA_BASE + 0x1000, GM_UVA_BASE + 0x2000 }, /* desc straddles end */
        { GM_UVA_BASE, GM_UVA_BASE + 0x1000, GM_UVA_BASE + (16ull << 20) - 4 },         /* used straddles */
        { 0xfffffffffffff000ull, GM_UVA_BASE, GM_UVA_BASE + 0x2000 },                   /* wraps */
        { GM_UVA_BASE + 0x40000000ull, GM_UVA_BASE + 0x1000, GM_UVA_BASE + 0x2000 },   /* in the hole */
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct vdev *a = fe_a(name);
        if (!a)
            break;
        struct vu_fe *fe = &a->g.fe;
        vu_fe_set_u64(fe, VHOST_USER_SET_FEATURES, fe->features & (BIT(32) | BIT(30)));
        vu_fe_set_mem_table(fe, &a->g.gm);
        int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
        vu_fe_vring_state(fe, VHOST_USER_SET_VRING_NUM, 1, 256);
        vu_fe_vring_state(fe, VHOST_USER_SET_VRING_BASE, 1, 0);
        struct vu_vring_addr va = { .index = 1, .desc = bad[i][0], .avail = bad[i][1], .used = bad[i][2] };
        const char *o = raw_outcome(fe, VHOST_USER_SET_VRING_ADDR, sizeof(va), &va, sizeof(va), NULL, 0);
        vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_KICK, 1, kick);
        vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_CALL, 1, call);
        const char *o2 = raw_outcome(fe, VHOST_USER_SET_VRING_ENABLE, 8, &(struct vu_vring_state){ 1, 1 }, 8, NULL, 0);
        uint64_t one = 1;
        if (write(kick, &one, 8) != 8)
            tap_diag("kick failed");
        settle(150);
        tap_diag("[%s] case %u: SET_VRING_ADDR -> %s, ENABLE -> %s", name, i, o, o2);
        close(kick);
        close(call);
        guest_close(&a->g);
        free(a);
    }
    after_case(name);
}

/* Memory under the rings goes away while they run: hostd must stop using them,
 * never touch the unmapped range. */
static void v_mem_removed_under_rings(bool slots)
{
    const char *name = slots ? "rem-mem-reg-under-rings" : "mem-table-drops-ring-region";
    struct guest_opts o;
    guest_default_opts(&o);
    o.mem_slots = slots;
    struct vdev *a = vdev_alloc();
    if (vdev_up(a, P.vm[0].sock, P.vm[0].cid, &o) != 0) {
        tap_check(false, "[%s] bring-up: %s", name, a->last_err);
        free(a);
        return;
    }
    echo_ok(a, "VM A before", name);
    const char *out;
    struct gm_region hi = a->g.gm.r[1];
    if (slots && (a->g.fe.proto_acked & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))) {
        struct vu_mem_reg m;
        memset(&m, 0, sizeof(m));
        m.r = (struct vu_region){ hi.gpa, hi.size, hi.uva, hi.foff };
        out = raw_outcome(&a->g.fe, VHOST_USER_REM_MEM_REG, sizeof(m), &m, sizeof(m), NULL, 0);
    } else {
        struct vu_mem_table t;
        memset(&t, 0, sizeof(t));
        t.nregions = 1;
        t.r[0] = (struct vu_region){ a->g.gm.r[0].gpa, a->g.gm.r[0].size, a->g.gm.r[0].uva, a->g.gm.r[0].foff };
        int fd = a->g.gm.fd;
        out = raw_outcome(&a->g.fe, VHOST_USER_SET_MEM_TABLE, 8 + 32, &t, 8 + 32, &fd, 1);
    }
    tap_diag("[%s] removing the region holding the tx ring -> %s", name, out);
    /* traffic on both rings: tx ring and tx buffers are in the removed region */
    a->auto_rst = false;
    for (int i = 0; i < 4; i++) {
        uint8_t w[44];
        struct vhdr h = { .src_cid = a->cid, .dst_cid = HOST_CID, .src_port = 48000 + (uint32_t)i, .dst_port = 7,
                          .type = VSOCK_TYPE_STREAM, .op = OP_REQUEST, .buf_alloc = 65536 };
        vhdr_encode(&h, w);
        guest_tx(&a->g, TXL_ONE, w, NULL, 0);
    }
    gvq_kick(&a->g.q[0], true);
    settle(300);
    vdev_down(a);
    free(a);
    after_case(name);
}

/* Many connections that are never closed: hostd must bound what it keeps. */
static void p_conn_flood(struct vdev *a, const char *name)
{
    long rss0 = proc_rss_kb(P.pid);
    long long t0 = now_ms();
    unsigned mark = vdev_log_mark(a);
    int n = 0;
    for (; n < 20000 && now_ms() - t0 < 30000; n++) {
        struct vhdr h = base_hdr(a, OP_REQUEST, 100000 + (uint32_t)n, 0);
        if (vdev_send_pkt(a, &h, NULL, 0))
            break;
        if (n % 64 == 0)
            vdev_pump(0);
    }
    settle(300);
    long rss1 = proc_rss_kb(P.pid);
    unsigned resp = vdev_count_pkts(a, mark, OP_RESPONSE, 0, 0), rst = vdev_count_pkts(a, mark, OP_RST, 0, 0);
    tap_check(n == 20000, "[%s] %d REQUESTs (never closed) sent in %lld ms", name, n, now_ms() - t0);
    tap_diag("[%s] answers seen in the last %u logged: %u RESPONSE, %u RST; %u packets total", name, VC_LOG, resp, rst,
             a->rx_pkts);
    tap_check(rss1 - rss0 < 64 * 1024 + rss_slack_kb(), "[%s] hostd RSS grew %ld KiB (< 64 MiB) for 20000 open connections", name,
              rss1 - rss0);
    /* refusing more connections once a per-guest limit is reached is fine; resetting
     * them must give the slots back */
    for (int i = 0; i < n; i++) {
        struct vhdr h = base_hdr(a, OP_RST, 100000 + (uint32_t)i, 0);
        if (vdev_send_pkt(a, &h, NULL, 0))
            break;
        if (i % 64 == 0)
            vdev_pump(0);
    }
    settle(300);
}

/* The guest stops taking rx buffers while it floods packets that each need an
 * answer (CREDIT_REQUEST for unknown connections => RST): the answers cannot be
 * delivered; hostd must bound what it queues (backpressure on tx is fine), and
 * everything must flow again once the guest reads. */
static void p_flood_rx_blocked(struct vdev *a, const char *name)
{
    long rss0 = proc_rss_kb(P.pid);
    long long t0 = now_ms();
    int n = 0;
    struct gvq *tq = &a->g.q[GVQ_TX];
    bool stalled = false;
    /* no vdev_pump here: rx is never reaped, only tx completions */
    for (; n < 50000 && now_ms() - t0 < 20000; n++) {
        struct vhdr h = base_hdr(a, OP_CREDIT_REQUEST, 200000 + (uint32_t)n, 0);
        uint8_t w[44];
        vhdr_encode(&h, w);
        int rc;
        long long t1 = now_ms();
        while ((rc = guest_tx(&a->g, TXL_ONE, w, NULL, 0)) == -EAGAIN && now_ms() - t1 < 500) {
            gvq_enable_cb(tq);
            struct pollfd pf = { tq->call_fd, POLLIN, 0 };
            poll(&pf, 1, 20);
            gvq_drain_call(tq);
            guest_reap_tx(&a->g);
        }
        if (rc) {
            stalled = true;
            break;
        }
    }
    long rss1 = proc_rss_kb(P.pid);
    tap_diag("[%s] hostd took %d packets with the rx ring full%s", name, n,
             stalled ? ", then stopped taking tx (backpressure)" : "");
    tap_check(rss1 - rss0 < 64 * 1024 + rss_slack_kb(), "[%s] hostd RSS grew %ld KiB (< 64 MiB)", name, rss1 - rss0);
    /* the guest reads again: the rest must go through */
    int rest = 0;
    for (; n < 50000; n++, rest++) {
        struct vhdr h = base_hdr(a, OP_CREDIT_REQUEST, 200000 + (uint32_t)n, 0);
        if (vdev_send_pkt(a, &h, NULL, 0))
            break;
        if (n % 64 == 0)
            vdev_pump(0);
    }
    tap_check(n == 50000, "[%s] once rx buffers are consumed again, tx flows: all 50000 sent (%d after unblocking)",
              name, rest);
    settle(300);
}

static void v_second_frontend(void)
{
    const char *name = "second-frontend";
    struct vdev *a = fresh_a(name);
    if (!a)
        return;
    struct vu_fe fe2;
    int rc = vu_fe_connect(&fe2, P.vm[0].sock, 1000);
    const char *o = "refused";
    if (rc == 0) {
        uint64_t f = 0;
        fe2.timeout_ms = 1000;
        rc = vu_fe_get_u64(&fe2, VHOST_USER_GET_FEATURES, &f);
        o = rc == 0 ? "answered GET_FEATURES" : rc == -ETIMEDOUT ? "accepted, silent" : "closed";
    }
    tap_diag("[%s] a second frontend connecting while the first is active: %s", name, o);
    echo_ok(a, "the first frontend (second one connected)", name);
    vu_fe_close(&fe2);
    settle(100);
    echo_ok(a, "the first frontend (second one gone)", name);
    vdev_down(a);
    free(a);
    after_case(name);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    uint64_t cids[2] = { 3, 4 };
    start_or_die(&P, bin, 2, cids, NULL);
    B = vdev_alloc();
    if (!up_or_report(B, &P, 1, NULL, "VM B")) {
        hd_kill(&P);
        return tap_done();
    }
    {
        struct vdev *a = fresh_a("warm-up");
        if (a) {
            echo_ok(a, "VM A", "warm-up");
            vdev_down(a);
            free(a);
        }
        settle(200);
        base_fds = proc_count_fds(P.pid);
    }

    ring_case2("desc-loop", c_loop, true);
    ring_case2("desc-self-loop", c_self_loop, true);
    ring_case("chain-longer-than-queue", c_whole_ring_chain);
    ring_case2("next-out-of-range", c_next_out_of_range, true);
    ring_case("chain-of-65", c_chain_65);
    ring_case("indirect-300-entries", c_indirect_300);
    ring_case2("indirect-next-loop", c_indirect_loop, true);
    ring_case2("indirect-next-outside-table", c_indirect_next_out_of_table, true);
    ring_case("gpa-out-of-range", c_gpa_out_of_range);
    ring_case2("gpa-in-hole", c_gpa_in_hole, true);
    ring_case("gpa-straddles-region-end", c_gpa_straddles_region_end);
    ring_case("payload-in-hole", c_payload_in_hole);
    ring_case("addr-len-wraps", c_addr_wraps);
    ring_case("payload-wraps", c_payload_wraps);
    ring_case("desc-len-4GiB", c_huge_len);
    ring_case("zero-length-descs", c_zero_len_descs);
    ring_case("writable-desc-in-tx", c_writable_in_tx);
    ring_case2("indirect-in-indirect", c_indirect_in_indirect, true);
    ring_case2("indirect-bad-table", c_indirect_bad_len, true);
    ring_case("avail-idx-jump", c_avail_jump);
    ring_case("avail-idx-backwards", c_avail_backwards);
    ring_case("head-out-of-range", c_head_out_of_range);
    ring_case("rx-bad-buffers", c_rx_bad_buffers);
    ring_case("rx-head-out-of-range", c_rx_head_out_of_range);

    pkt_case("hdr-len-mismatch", p_len_mismatch);
    pkt_case("wrong-src-cid", p_wrong_src_cid);
    pkt_case("unknown-op-type", p_unknown_op_type);
    pkt_case("beyond-credit", p_beyond_credit);
    pkt_case("credit-request-flood", p_credit_request_flood);
    pkt_case("connection-flood", p_conn_flood);
    pkt_case("flood-with-rx-blocked", p_flood_rx_blocked);
    v_mem_removed_under_rings(true);
    v_mem_removed_under_rings(false);

    v_second_frontend();
    v_unknown_requests();
    v_bad_sizes();
    v_mem_table();
    v_fds();
    v_vring_params();
    v_ring_addr_outside();

    settle(300);
    int fds = proc_count_fds(P.pid);
    tap_check(fds == base_fds, "hostd fd count back to baseline after all cases (%d, baseline %d)", fds, base_fds);
    tap_check(B->errors == 0, "VM B saw no protocol violations (%u)%s%s", B->errors, B->errors ? ": " : "", B->last_err);
    vdev_down(B);
    free(B);
    stop_and_check(&P);
    return tap_done();
}
