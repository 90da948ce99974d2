/* Guest virtio-vsock driver side: split virtqueues in guest RAM and the
 * QEMU 7.2 vhost-user bring-up sequence. */
#include "vu_guest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tap.h"

#define RX_RING_GPA 0x10000ull
#define RX_RING_GPA_MOVED 0x20000ull
#define RX_POOL_GPA 0x100000ull
#define TX_RING_GPA (GM_HIGH_GPA + 15ull * 1024 * 1024)
#define TX_RING_GPA_MOVED (TX_RING_GPA + 0x10000ull)
#define TX_POOL_GPA GM_HIGH_GPA

#define fence() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Ring fields are little-endian in guest memory (virtio 1.x); the driver
 * side converts at every access, as the device side does. */

static int g_fail(struct guest *g, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int g_fail(struct guest *g, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof(g->err), fmt, ap);
    va_end(ap);
    return rc;
}

/* ------------------------------------------------------------ ring access */

static void *ring_ptr(struct gvq *q, uint64_t gpa, uint64_t len)
{
    return gm_ptr(q->gm, gpa, len);
}

struct vring_desc *gvq_desc(struct gvq *q, unsigned i)
{
    return ring_ptr(q, q->desc_gpa + 16ull * (i % q->num), 16);
}

volatile uint16_t *gvq_avail_idx_p(struct gvq *q)
{
    return ring_ptr(q, q->avail_gpa + 2, 2);
}

volatile uint16_t *gvq_avail_ring_p(struct gvq *q, unsigned i)
{
    return ring_ptr(q, q->avail_gpa + 4 + 2ull * (i % q->num), 2);
}

static volatile uint16_t *used_event_p(struct gvq *q)
{
    return ring_ptr(q, q->avail_gpa + 4 + 2ull * q->num, 2);
}

static volatile uint16_t *avail_flags_p(struct gvq *q)
{
    return ring_ptr(q, q->avail_gpa, 2);
}

static volatile uint16_t *used_flags_p(struct gvq *q)
{
    return ring_ptr(q, q->used_gpa, 2);
}

volatile uint16_t *gvq_used_idx_p(struct gvq *q)
{
    return ring_ptr(q, q->used_gpa + 2, 2);
}

static volatile uint32_t *used_elem_p(struct gvq *q, unsigned i)
{
    return ring_ptr(q, q->used_gpa + 4 + 8ull * (i % q->num), 8);
}

static volatile uint16_t *avail_event_p(struct gvq *q)
{
    return ring_ptr(q, q->used_gpa + 4 + 8ull * q->num, 2);
}

void gvq_reset(struct gvq *q, struct guest_mem *gm, unsigned index, uint64_t ring_gpa, bool event_idx,
               uint16_t start)
{
    if (q->gm) {
        if (q->kick_fd >= 0)
            close(q->kick_fd);
        if (q->call_fd >= 0)
            close(q->call_fd);
    }
    memset(q, 0, sizeof(*q));
    q->gm = gm;
    q->index = index;
    q->num = GVQ_NUM;
    q->event_idx = event_idx;
    q->desc_gpa = ring_gpa;
    q->avail_gpa = ring_gpa + 16ull * q->num;
    q->used_gpa = (q->avail_gpa + 6 + 2ull * q->num + 3) & ~3ull;
    uint64_t end = q->used_gpa + 6 + 8ull * q->num;
    void *p = gm_ptr(gm, ring_gpa, end - ring_gpa);
    if (p)
        memset(p, 0, end - ring_gpa);
    q->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    q->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    for (unsigned i = 0; i < q->num; i++)
        q->link[i] = (uint16_t)(i + 1);
    q->free_head = 0;
    q->nfree = q->num;
    if (p) {
        q->avail_idx = q->kicked_idx = q->last_used = start;
        *gvq_avail_idx_p(q) = htole16(start);
        *gvq_used_idx_p(q) = htole16(start);
        *used_event_p(q) = htole16(start);
    }
}

static void gvq_release(struct gvq *q)
{
    if (!q->gm)
        return;
    if (q->kick_fd >= 0)
        close(q->kick_fd);
    if (q->call_fd >= 0)
        close(q->call_fd);
    q->kick_fd = q->call_fd = -1;
    q->gm = NULL;
}

int gvq_add(struct gvq *q, const struct gseg *s, unsigned n, uint64_t cookie)
{
    if (n == 0 || n > q->nfree)
        return -ENOSPC;
    uint16_t head = q->free_head, i = head;
    for (unsigned k = 0; k < n; k++) {
        struct vring_desc *d = gvq_desc(q, i);
        d->addr = htole64(s[k].gpa);
        d->len = htole32(s[k].len);
        d->flags = htole16((uint16_t)((s[k].write ? VRING_DESC_F_WRITE : 0) | (k + 1 < n ? VRING_DESC_F_NEXT : 0)));
        d->next = htole16(k + 1 < n ? q->link[i] : 0);
        if (k + 1 < n)
            i = q->link[i];
    }
    q->free_head = q->link[i];
    q->nfree = (uint16_t)(q->nfree - n);
    q->chain_n[head] = (uint16_t)n;
    q->busy[head] = true;
    q->cookie[head] = cookie;
    return head;
}

int gvq_add_indirect(struct gvq *q, uint64_t table_gpa, const struct gseg *s, unsigned n, uint64_t cookie)
{
    struct vring_desc *t = gm_ptr(q->gm, table_gpa, 16ull * n);
    if (!t || n == 0)
        return -EINVAL;
    for (unsigned k = 0; k < n; k++) {
        t[k].addr = htole64(s[k].gpa);
        t[k].len = htole32(s[k].len);
        t[k].flags = htole16((uint16_t)((s[k].write ? VRING_DESC_F_WRITE : 0) | (k + 1 < n ? VRING_DESC_F_NEXT : 0)));
        t[k].next = htole16((uint16_t)(k + 1 < n ? k + 1 : 0));
    }
    int head = gvq_add(q, &(struct gseg){ table_gpa, 16u * n, false }, 1, cookie);
    if (head >= 0)
        gvq_desc(q, (unsigned)head)->flags = htole16(VRING_DESC_F_INDIRECT);
    return head;
}

void gvq_publish_raw(struct gvq *q, uint16_t head)
{
    if (head < q->num && !q->busy[head]) { /* the device may legitimately return it */
        q->busy[head] = true;
        q->chain_n[head] = 0;
        q->cookie[head] = UINT64_MAX;
    }
    *gvq_avail_ring_p(q, q->avail_idx) = htole16(head);
    fence();
    q->avail_idx++;
    __atomic_store_n(gvq_avail_idx_p(q), htole16(q->avail_idx), __ATOMIC_RELEASE);
}

void gvq_publish(struct gvq *q, uint16_t head)
{
    gvq_publish_raw(q, head);
}

void gvq_kick(struct gvq *q, bool force)
{
    fence();
    uint16_t old = q->kicked_idx, nw = q->avail_idx;
    q->kicked_idx = nw;
    bool need;
    if (force)
        need = true;
    else if (old == nw)
        need = false;
    else if (q->event_idx) {
        uint16_t ev = le16toh(__atomic_load_n(avail_event_p(q), __ATOMIC_ACQUIRE));
        need = (uint16_t)(nw - ev - 1) < (uint16_t)(nw - old);
    } else
        need = !(le16toh(__atomic_load_n(used_flags_p(q), __ATOMIC_ACQUIRE)) & VRING_USED_F_NO_NOTIFY);
    if (!need) {
        q->kicks_suppressed++;
        return;
    }
    uint64_t one = 1;
    if (write(q->kick_fd, &one, sizeof(one)) == sizeof(one))
        q->kicks++;
}

bool gvq_has_used(struct gvq *q)
{
    return le16toh(__atomic_load_n(gvq_used_idx_p(q), __ATOMIC_ACQUIRE)) != q->last_used;
}

int gvq_pop_used(struct gvq *q, uint64_t *cookie, uint32_t *len)
{
    uint16_t uidx = le16toh(__atomic_load_n(gvq_used_idx_p(q), __ATOMIC_ACQUIRE));
    if (uidx == q->last_used)
        return 0;
    if ((uint16_t)(uidx - q->last_used) > q->num) {
        q->bad_used++;
        return -EPROTO;
    }
    volatile uint32_t *e = used_elem_p(q, q->last_used);
    uint32_t id = le32toh(e[0]), l = le32toh(e[1]);
    q->last_used++;
    if (id >= q->num || !q->busy[id]) {
        q->bad_used++;
        return -EPROTO;
    }
    if (q->chain_n[id] == 0) { /* raw head published by a hostile test: nothing to free */
        q->busy[id] = false;
        *cookie = q->cookie[id];
        *len = l;
        return 1;
    }
    /* free the chain */
    uint16_t i = (uint16_t)id;
    for (unsigned k = 1; k < q->chain_n[id]; k++)
        i = q->link[i];
    q->link[i] = q->free_head;
    q->free_head = (uint16_t)id;
    q->nfree = (uint16_t)(q->nfree + q->chain_n[id]);
    q->busy[id] = false;
    *cookie = q->cookie[id];
    *len = l;
    return 1;
}

bool gvq_enable_cb(struct gvq *q)
{
    if (q->event_idx)
        __atomic_store_n(used_event_p(q), htole16(q->last_used), __ATOMIC_RELEASE);
    else
        __atomic_store_n(avail_flags_p(q), htole16(0), __ATOMIC_RELEASE);
    fence();
    return gvq_has_used(q);
}

bool gvq_drain_call(struct gvq *q)
{
    uint64_t v;
    if (read(q->call_fd, &v, sizeof(v)) == sizeof(v)) {
        q->calls++;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------ bring-up */

const char *tx_layout_name(int l)
{
    static const char *const n[] = { "one-desc", "split", "many-small", "indirect", "indirect-many" };
    return l >= 0 && l < TXL_COUNT ? n[l] : "?";
}

void guest_default_opts(struct guest_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->event_idx = true;
    o->indirect = true;
    o->mem_slots = false;
    o->reply_ack = true;
    o->rx_layout = RXL_ONE;
    o->mem_size = 32u << 20;
}

#define BIT(n) (1ull << (n))

int guest_connect(struct guest *g, const char *sock, uint64_t cid, const struct guest_opts *o)
{
    memset(g, 0, sizeof(*g));
    g->gm.fd = -1;
    g->q[0].kick_fd = g->q[0].call_fd = g->q[1].kick_fd = g->q[1].call_fd = -1;
    if (o)
        g->o = *o;
    else
        guest_default_opts(&g->o);
    if (!g->o.mem_size)
        g->o.mem_size = 32u << 20;
    g->cid = cid;
    snprintf(g->sock, sizeof(g->sock), "%s", sock);
    struct vu_fe *fe = &g->fe;
    int rc = vu_fe_connect(fe, sock, 3000);
    if (rc)
        return g_fail(g, rc, "%s", fe->err);
    if ((rc = vu_fe_get_u64(fe, VHOST_USER_GET_FEATURES, &fe->features)))
        return g_fail(g, rc, "GET_FEATURES: %s", fe->err);
    if (!(fe->features & BIT(VHOST_USER_F_PROTOCOL_FEATURES)))
        return g_fail(g, -ENOTSUP, "backend does not offer PROTOCOL_FEATURES (0x%llx)",
                      (unsigned long long)fe->features);
    if ((rc = vu_fe_get_u64(fe, VHOST_USER_GET_PROTOCOL_FEATURES, &fe->proto)))
        return g_fail(g, rc, "GET_PROTOCOL_FEATURES: %s", fe->err);
    uint64_t want = BIT(VHOST_USER_PROTOCOL_F_CONFIG);
    if (g->o.reply_ack)
        want |= BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    if (g->o.mem_slots)
        want |= BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
    fe->proto_acked = want & fe->proto;
    if ((rc = vu_fe_set_u64(fe, VHOST_USER_SET_PROTOCOL_FEATURES, fe->proto_acked)))
        return g_fail(g, rc, "SET_PROTOCOL_FEATURES: %s", fe->err);
    fe->need_reply = !!(fe->proto_acked & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK));
    if (fe->proto_acked & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) {
        uint64_t slots = 0;
        if ((rc = vu_fe_get_u64(fe, VHOST_USER_GET_MAX_MEM_SLOTS, &slots)))
            return g_fail(g, rc, "GET_MAX_MEM_SLOTS: %s", fe->err);
        if (slots < 2)
            return g_fail(g, -EPROTO, "GET_MAX_MEM_SLOTS answered %llu", (unsigned long long)slots);
    }
    if ((rc = vu_fe_req(fe, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0)))
        return g_fail(g, rc, "SET_OWNER: %s", fe->err);
    uint64_t got = 0;
    if ((rc = vu_fe_get_config(fe, 0, 8, &got)))
        return g_fail(g, rc, "GET_CONFIG: %s", fe->err);
    if (got != cid)
        return g_fail(g, -EPROTO, "GET_CONFIG guest_cid %llu, expected %llu", (unsigned long long)got,
                      (unsigned long long)cid);
    rc = gm_create(&g->gm, g->o.mem_size);
    if (rc)
        return g_fail(g, rc, "guest RAM: %s", strerror(-rc));
    g->ring_gpa[0] = RX_RING_GPA;
    g->ring_gpa[1] = TX_RING_GPA;
    return 0;
}

int guest_rings_start(struct guest *g)
{
    struct vu_fe *fe = &g->fe;
    bool ev = !!(g->acked_features & BIT(VIRTIO_RING_F_EVENT_IDX));
    int rc;
    for (unsigned i = 0; i < 2; i++) {
        struct gvq *q = &g->q[i];
        gvq_reset(q, &g->gm, i, g->ring_gpa[i], ev, g->o.start_idx);
        if ((rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_NUM, i, q->num)))
            return g_fail(g, rc, "SET_VRING_NUM %u: %s", i, fe->err);
        if ((rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_BASE, i, g->o.start_idx)))
            return g_fail(g, rc, "SET_VRING_BASE %u: %s", i, fe->err);
        if ((rc = vu_fe_vring_addr(fe, i, gm_uva(&g->gm, q->desc_gpa), gm_uva(&g->gm, q->avail_gpa),
                                   gm_uva(&g->gm, q->used_gpa))))
            return g_fail(g, rc, "SET_VRING_ADDR %u: %s", i, fe->err);
        if ((rc = vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_KICK, i, q->kick_fd)))
            return g_fail(g, rc, "SET_VRING_KICK %u: %s", i, fe->err);
        if ((rc = vu_fe_vring_fd(fe, VHOST_USER_SET_VRING_CALL, i, q->call_fd)))
            return g_fail(g, rc, "SET_VRING_CALL %u: %s", i, fe->err);
        gvq_enable_cb(q);
    }
    for (unsigned i = 0; i < 2; i++)
        if ((rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, i, 1)))
            return g_fail(g, rc, "SET_VRING_ENABLE %u 1: %s", i, fe->err);
    memset(g->rx_busy, 0, sizeof(g->rx_busy));
    memset(g->tx_busy, 0, sizeof(g->tx_busy));
    g->tx_inflight = 0;
    g->running = true;
    guest_post_rx(g);
    return 0;
}

static int set_features_and_mem(struct guest *g, bool mem)
{
    struct vu_fe *fe = &g->fe;
    uint64_t want = BIT(VIRTIO_F_VERSION_1) | BIT(VHOST_USER_F_PROTOCOL_FEATURES) |
                    BIT(VIRTIO_VSOCK_F_SEQPACKET);
    if (g->o.event_idx)
        want |= BIT(VIRTIO_RING_F_EVENT_IDX);
    if (g->o.indirect)
        want |= BIT(VIRTIO_RING_F_INDIRECT_DESC);
    g->acked_features = want & fe->features;
    int rc = vu_fe_set_u64(fe, VHOST_USER_SET_FEATURES, g->acked_features);
    if (rc)
        return g_fail(g, rc, "SET_FEATURES: %s", fe->err);
    if (!mem)
        return 0;
    if (fe->proto_acked & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))
        rc = vu_fe_add_mem_regs(fe, &g->gm);
    else
        rc = vu_fe_set_mem_table(fe, &g->gm);
    if (rc)
        return g_fail(g, rc, "memory table: %s", fe->err);
    return 0;
}

int guest_start(struct guest *g)
{
    int rc = set_features_and_mem(g, true);
    return rc ? rc : guest_rings_start(g);
}

int guest_up(struct guest *g, const char *sock, uint64_t cid, const struct guest_opts *o)
{
    int rc = guest_connect(g, sock, cid, o);
    return rc ? rc : guest_start(g);
}

int guest_stop(struct guest *g, uint32_t bases[2])
{
    struct vu_fe *fe = &g->fe;
    int rc;
    g->running = false;
    for (unsigned i = 0; i < 2; i++)
        if ((rc = vu_fe_vring_state(fe, VHOST_USER_SET_VRING_ENABLE, i, 0)))
            return g_fail(g, rc, "SET_VRING_ENABLE %u 0: %s", i, fe->err);
    for (unsigned i = 0; i < 2; i++) {
        uint32_t b = 0;
        if ((rc = vu_fe_get_vring_base(fe, i, &b)))
            return g_fail(g, rc, "GET_VRING_BASE %u: %s", i, fe->err);
        if (bases)
            bases[i] = b;
    }
    return 0;
}

int guest_restart(struct guest *g, bool move_rings)
{
    if (move_rings) {
        g->ring_gpa[0] = g->ring_gpa[0] == RX_RING_GPA ? RX_RING_GPA_MOVED : RX_RING_GPA;
        g->ring_gpa[1] = g->ring_gpa[1] == TX_RING_GPA ? TX_RING_GPA_MOVED : TX_RING_GPA;
    }
    /* QEMU's vhost_dev_start: SET_FEATURES, SET_MEM_TABLE (ADD_MEM_REG mode: only changes) */
    bool slots = !!(g->fe.proto_acked & BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS));
    int rc = set_features_and_mem(g, !slots);
    return rc ? rc : guest_rings_start(g);
}

void guest_close(struct guest *g)
{
    vu_fe_close(&g->fe);
    gvq_release(&g->q[0]);
    gvq_release(&g->q[1]);
    gm_destroy(&g->gm);
    g->running = false;
}

/* ------------------------------------------------------------ rx / tx */

static uint64_t rx_buf_gpa(unsigned i)
{
    return RX_POOL_GPA + (uint64_t)i * RX_STRIDE;
}

void guest_post_rx(struct guest *g)
{
    struct gvq *q = &g->q[GVQ_RX];
    if (!g->running || !q->gm)
        return;
    unsigned need = g->o.rx_layout == RXL_TWO ? 2 : 1;
    bool added = false;
    unsigned posted = 0;
    for (unsigned i = 0; i < RX_NBUF; i++)
        posted += g->rx_busy[i];
    for (unsigned i = 0; i < RX_NBUF && q->nfree >= need; i++) {
        if (g->rx_busy[i])
            continue;
        if (g->o.rx_limit && posted >= g->o.rx_limit)
            break;
        posted++;
        struct gseg s[2];
        uint64_t b = rx_buf_gpa(i);
        switch (g->o.rx_layout) {
        case RXL_TWO:
            s[0] = (struct gseg){ b, VSOCK_HDR_LEN, true };
            s[1] = (struct gseg){ b + 4096, RXBUF_PAYLOAD, true };
            break;
        case RXL_SMALL:
            s[0] = (struct gseg){ b, VSOCK_HDR_LEN + 256, true };
            break;
        default:
            s[0] = (struct gseg){ b, VSOCK_HDR_LEN + RXBUF_PAYLOAD, true };
        }
        int h = gvq_add(q, s, need, i);
        if (h < 0)
            break;
        g->rx_busy[i] = true;
        gvq_publish(q, (uint16_t)h);
        added = true;
    }
    if (added)
        gvq_kick(q, false);
}

int guest_reap_rx(struct guest *g, uint8_t *wire, uint32_t *len)
{
    struct gvq *q = &g->q[GVQ_RX];
    uint64_t ck;
    uint32_t l;
    int r = gvq_pop_used(q, &ck, &l);
    if (r <= 0) {
        if (r < 0) {
            g->proto_errors++;
            g_fail(g, r, "rx used ring: bogus entry from device");
        }
        return r;
    }
    if (ck >= RX_NBUF) /* a raw head a hostile test published */
        return guest_reap_rx(g, wire, len);
    unsigned i = (unsigned)ck;
    uint64_t b = rx_buf_gpa(i);
    uint32_t cap = g->o.rx_layout == RXL_SMALL ? VSOCK_HDR_LEN + 256 : VSOCK_HDR_LEN + RXBUF_PAYLOAD;
    g->rx_busy[i] = false;
    if (l > cap) {
        g->proto_errors++;
        g_fail(g, -EPROTO, "rx used len %u exceeds the %u-byte buffer", l, cap);
        l = cap;
    }
    if (g->o.rx_layout == RXL_TWO) {
        uint32_t h = l < VSOCK_HDR_LEN ? l : VSOCK_HDR_LEN;
        memcpy(wire, gm_ptr(&g->gm, b, VSOCK_HDR_LEN), h);
        if (l > VSOCK_HDR_LEN)
            memcpy(wire + VSOCK_HDR_LEN, gm_ptr(&g->gm, b + 4096, RXBUF_PAYLOAD), l - VSOCK_HDR_LEN);
    } else {
        memcpy(wire, gm_ptr(&g->gm, b, cap), l);
    }
    *len = l;
    g->rx_pkts++;
    return 1;
}

int guest_reap_tx(struct guest *g)
{
    struct gvq *q = &g->q[GVQ_TX];
    int n = 0;
    for (;;) {
        uint64_t ck;
        uint32_t l;
        int r = gvq_pop_used(q, &ck, &l);
        if (r == 0)
            break;
        if (r < 0) {
            g->proto_errors++;
            g_fail(g, r, "tx used ring: bogus entry from device");
            break;
        }
        if (ck == UINT64_MAX)
            continue;
        if (ck < TX_NSLOT && g->tx_busy[ck]) {
            g->tx_busy[ck] = false;
            g->tx_inflight--;
        }
        n++;
    }
    return n;
}

int guest_tx(struct guest *g, int layout, const uint8_t *hdr, const void *payload, uint32_t len)
{
    struct gvq *q = &g->q[GVQ_TX];
    if (!g->running || !q->gm)
        return -ENOTCONN;
    if (len > TX_MAX_PAYLOAD)
        return -EMSGSIZE;
    if (!(g->acked_features & BIT(VIRTIO_RING_F_INDIRECT_DESC))) {
        if (layout == TXL_INDIRECT)
            layout = TXL_SPLIT;
        else if (layout == TXL_INDIRECT_MANY)
            layout = TXL_MANY;
    }
    int slot = -1;
    for (int i = 0; i < TX_NSLOT; i++)
        if (!g->tx_busy[i]) {
            slot = i;
            break;
        }
    if (slot < 0)
        return -EAGAIN;
    uint64_t sg = TX_POOL_GPA + (uint64_t)slot * TX_SLOT_SIZE;
    uint8_t *sp = gm_ptr(&g->gm, sg, TX_SLOT_SIZE);
    struct gseg s[64];
    unsigned n = 0;
    bool many = layout == TXL_MANY || layout == TXL_INDIRECT_MANY;
    if (layout == TXL_ONE) {
        memcpy(sp, hdr, VSOCK_HDR_LEN);
        if (len)
            memcpy(sp + VSOCK_HDR_LEN, payload, len);
        s[n++] = (struct gseg){ sg, VSOCK_HDR_LEN + len, false };
    } else if (!many) {
        memcpy(sp, hdr, VSOCK_HDR_LEN);
        s[n++] = (struct gseg){ sg, VSOCK_HDR_LEN, false };
        if (len) {
            memcpy(sp + 256, payload, len);
            s[n++] = (struct gseg){ sg + 256, len, false };
        }
    } else {
        /* header itself split 20 + 24, payload in <= 48 pieces */
        memcpy(sp, hdr, VSOCK_HDR_LEN);
        if (len)
            memcpy(sp + VSOCK_HDR_LEN, payload, len);
        s[n++] = (struct gseg){ sg, 20, false };
        s[n++] = (struct gseg){ sg + 20, VSOCK_HDR_LEN - 20, false };
        uint32_t piece = (len + 47) / 48;
        if (piece < 256)
            piece = 256;
        for (uint32_t off = 0; off < len; off += piece) {
            uint32_t l = len - off < piece ? len - off : piece;
            s[n++] = (struct gseg){ sg + VSOCK_HDR_LEN + off, l, false };
        }
    }
    int head;
    if (layout == TXL_INDIRECT || layout == TXL_INDIRECT_MANY)
        head = gvq_add_indirect(q, sg + TX_SLOT_TABLE, s, n, (uint64_t)slot);
    else
        head = gvq_add(q, s, n, (uint64_t)slot);
    if (head < 0)
        return -EAGAIN;
    g->tx_busy[slot] = true;
    g->tx_inflight++;
    g->tx_pkts++;
    gvq_publish(q, (uint16_t)head);
    gvq_kick(q, false);
    return 0;
}
