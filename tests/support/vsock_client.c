/* Socket-like virtio-vsock client over the fake guest driver. */
#include "vsock_client.h"

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"

/* Registered vdevs (NULL: free slot). Grows on demand: the scale test
 * registers a thousand. */
static struct vdev **live;
static int live_cap;

static void dev_err(struct vdev *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dev_err(struct vdev *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_err, sizeof(d->last_err), fmt, ap);
    va_end(ap);
    if (d->errors < 20 && !d->quiet)
        tap_diag("vm cid %llu: protocol violation by hostd: %s", (unsigned long long)d->cid, d->last_err);
    d->errors++;
}

/* ---------------------------------------------------------------- header */

/* the header is packed little-endian on the wire, whatever the host's order */
static void put16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, sizeof(v)); }
static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, sizeof(v)); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, sizeof(v)); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, sizeof(v)); return le16toh(v); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, sizeof(v)); return le32toh(v); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, sizeof(v)); return le64toh(v); }

void vhdr_encode(const struct vhdr *h, uint8_t w[44])
{
    put64(w, h->src_cid);
    put64(w + 8, h->dst_cid);
    put32(w + 16, h->src_port);
    put32(w + 20, h->dst_port);
    put32(w + 24, h->len);
    put16(w + 28, h->type);
    put16(w + 30, h->op);
    put32(w + 32, h->flags);
    put32(w + 36, h->buf_alloc);
    put32(w + 40, h->fwd_cnt);
}

void vhdr_decode(const uint8_t w[44], struct vhdr *h)
{
    h->src_cid = get64(w);
    h->dst_cid = get64(w + 8);
    h->src_port = get32(w + 16);
    h->dst_port = get32(w + 20);
    h->len = get32(w + 24);
    h->type = get16(w + 28);
    h->op = get16(w + 30);
    h->flags = get32(w + 32);
    h->buf_alloc = get32(w + 36);
    h->fwd_cnt = get32(w + 40);
}

const char *vop_name(unsigned op)
{
    static const char *const n[] = { "INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN",
                                     "RW", "CREDIT_UPDATE", "CREDIT_REQUEST" };
    return op < 8 ? n[op] : "UNKNOWN";
}

/* ---------------------------------------------------------------- data */

void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

uint32_t crc32_buf(uint32_t crc, const void *buf, size_t len)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    const uint8_t *p = buf;
    crc = ~crc;
    while (len--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---------------------------------------------------------------- device */

void vdev_init(struct vdev *d, uint64_t cid)
{
    memset(d, 0, sizeof(*d));
    d->cid = cid;
    d->next_port = 40000;
    d->tx_layout = TXL_ONE;
    d->max_pkt = TX_MAX_PAYLOAD;
    d->default_buf_alloc = 256 * 1024;
    d->auto_rst = true;
    d->strict_irq = true;
}

int vdev_register(struct vdev *d)
{
    for (int i = 0; i < live_cap; i++)
        if (!live[i]) {
            live[i] = d;
            d->registered = true;
            return 0;
        }
    int cap = live_cap ? live_cap * 2 : 8;
    struct vdev **l = realloc(live, (size_t)cap * sizeof(*l));
    if (!l)
        return -ENOMEM;
    for (int i = live_cap; i < cap; i++)
        l[i] = NULL;
    l[live_cap] = d;
    live = l;
    live_cap = cap;
    d->registered = true;
    return 0;
}

int vdev_up(struct vdev *d, const char *sock, uint64_t cid, const struct guest_opts *o)
{
    vdev_init(d, cid);
    int rc = guest_up(&d->g, sock, cid, o);
    if (rc) {
        snprintf(d->last_err, sizeof(d->last_err), "%s", d->g.err);
        guest_close(&d->g);
        return rc;
    }
    return vdev_register(d);
}

void vc_forget(struct vc_conn *c)
{
    free(c->rxbuf);
    free(c->msg_end);
    struct vdev *d = c->d;
    memset(c, 0, sizeof(*c));
    c->d = d;
}

void vdev_forget_conns(struct vdev *d)
{
    for (int i = 0; i < VC_MAX_CONNS; i++)
        if (d->c[i].st != VC_FREE)
            vc_forget(&d->c[i]);
}

void vdev_down(struct vdev *d)
{
    for (int i = 0; i < live_cap; i++)
        if (live[i] == d)
            live[i] = NULL;
    d->registered = false;
    vdev_forget_conns(d);
    guest_close(&d->g);
}

static int raw_tx(struct vdev *d, const struct vhdr *h, const void *payload, uint32_t len)
{
    uint8_t w[44];
    vhdr_encode(h, w);
    int rc = guest_tx(&d->g, d->tx_layout, w, payload, len);
    if (rc == -EAGAIN) {
        guest_reap_tx(&d->g);
        rc = guest_tx(&d->g, d->tx_layout, w, payload, len);
    }
    return rc;
}

int vdev_send_pkt(struct vdev *d, const struct vhdr *h, const void *payload, uint32_t len)
{
    long long deadline = now_ms() + 5000;
    for (;;) {
        int rc = raw_tx(d, h, payload, len);
        if (rc != -EAGAIN)
            return rc;
        if (now_ms() > deadline || d->dead)
            return -ETIMEDOUT;
        vdev_pump(50);
    }
}

static void conn_hdr(struct vc_conn *c, struct vhdr *h, uint16_t op, uint32_t len, uint32_t flags)
{
    memset(h, 0, sizeof(*h));
    h->src_cid = c->d->cid;
    h->dst_cid = c->peer_cid;
    h->src_port = c->lport;
    h->dst_port = c->pport;
    h->len = len;
    h->type = c->type;
    h->op = op;
    h->flags = flags;
    h->buf_alloc = c->buf_alloc;
    h->fwd_cnt = c->fwd_cnt;
    if (c->rx_out + c->buf_alloc > c->rx_allowed)
        c->rx_allowed = c->rx_out + c->buf_alloc;
}

/* Control packets: retried while the tx ring drains, pumping if needed. */
int vc_send_ctrl(struct vc_conn *c, uint16_t op, uint32_t flags)
{
    struct vhdr h;
    conn_hdr(c, &h, op, 0, flags);
    int rc = raw_tx(c->d, &h, NULL, 0);
    if (rc == -EAGAIN) {
        /* tx ring full: wait for completions without processing rx (no recursion) */
        long long deadline = now_ms() + 3000;
        while (rc == -EAGAIN && now_ms() < deadline) {
            struct pollfd p = { c->d->g.q[GVQ_TX].call_fd, POLLIN, 0 };
            gvq_enable_cb(&c->d->g.q[GVQ_TX]);
            poll(&p, 1, 20);
            gvq_drain_call(&c->d->g.q[GVQ_TX]);
            rc = raw_tx(c->d, &h, NULL, 0);
        }
    }
    if (rc == 0)
        c->fwd_sent = c->fwd_cnt;
    else
        dev_err(c->d, "harness could not send %s (tx ring stuck: %d)", vop_name(op), rc);
    return rc;
}

static void send_rst_for(struct vdev *d, const struct vhdr *in)
{
    struct vc_conn tmp = { .d = d, .type = in->type, .peer_cid = in->src_cid,
                           .lport = in->dst_port, .pport = in->src_port };
    vc_send_ctrl(&tmp, OP_RST, 0);
}

static struct vc_conn *conn_find(struct vdev *d, uint64_t peer_cid, uint32_t pport, uint32_t lport)
{
    for (int i = 0; i < VC_MAX_CONNS; i++) {
        struct vc_conn *c = &d->c[i];
        if (c->st != VC_FREE && c->peer_cid == peer_cid && c->pport == pport && c->lport == lport)
            return c;
    }
    return NULL;
}

static struct vc_conn *conn_new(struct vdev *d, uint16_t type, uint64_t peer_cid, uint32_t pport, uint32_t lport)
{
    for (int i = 0; i < VC_MAX_CONNS; i++) {
        struct vc_conn *c = &d->c[i];
        if (c->st == VC_FREE) {
            memset(c, 0, sizeof(*c));
            c->d = d;
            c->type = type;
            c->peer_cid = peer_cid;
            c->pport = pport;
            c->lport = lport;
            c->buf_alloc = d->default_buf_alloc;
            c->rx_cap = c->buf_alloc ? c->buf_alloc : 1;
            c->rxbuf = malloc(c->rx_cap);
            if (type == VSOCK_TYPE_SEQPACKET)
                c->msg_end = malloc(VC_MAX_MSGS * sizeof(*c->msg_end));
            if (!c->rxbuf || (type == VSOCK_TYPE_SEQPACKET && !c->msg_end)) {
                vc_forget(c);
                return NULL;
            }
            c->rx_allowed = c->buf_alloc; /* our REQUEST / RESPONSE advertise it */
            c->st = VC_CONNECTING;
            return c;
        }
    }
    return NULL;
}

static bool is_listening(struct vdev *d, uint32_t port)
{
    for (unsigned i = 0; i < d->nlisten; i++)
        if (d->listen_port[i] == port)
            return true;
    return false;
}

static void conn_rx_data(struct vc_conn *c, const struct vhdr *h, const uint8_t *p)
{
    struct vdev *d = c->d;
    if (c->rx_in + h->len > c->rx_allowed || c->rx_len + h->len > c->rx_cap) {
        c->credit_violations++;
        dev_err(d, "port %u->%u: %u bytes arrived; we allowed up to byte %llu, this ends at %llu (credit exceeded)",
                h->src_port, h->dst_port, h->len, (unsigned long long)c->rx_allowed,
                (unsigned long long)(c->rx_in + h->len));
        return; /* dropped, as a Linux guest does */
    }
    for (uint32_t i = 0; i < h->len;) {
        size_t tail = (c->rx_head + c->rx_len) % c->rx_cap;
        size_t n = c->rx_cap - tail;
        if (n > h->len - i)
            n = h->len - i;
        memcpy(c->rxbuf + tail, p + i, n);
        c->rx_len += n;
        i += (uint32_t)n;
    }
    c->rx_in += h->len;
    if (c->type == VSOCK_TYPE_SEQPACKET && c->msg_end && (h->flags & SEQ_EOM_F)) {
        if (c->msg_count == VC_MAX_MSGS)
            dev_err(d, "harness: too many queued SEQPACKET messages");
        else {
            c->msg_end[(c->msg_head + c->msg_count) % VC_MAX_MSGS] = c->rx_in;
            c->msg_count++;
        }
    }
}

static void handle_pkt(struct vdev *d, const uint8_t *w, uint32_t len)
{
    if (len < 44) {
        dev_err(d, "rx packet of %u bytes, shorter than the header", len);
        return;
    }
    struct vhdr h;
    vhdr_decode(w, &h);
    d->log[d->nlog % VC_LOG] = h;
    d->nlog++;
    d->rx_pkts++;
    if (len != 44 + (uint64_t)h.len) {
        dev_err(d, "%s: used len %u but header len %u (+44)", vop_name(h.op), len, h.len);
        return;
    }
    if (h.dst_cid != d->cid)
        dev_err(d, "%s: dst_cid %llu, we are %llu", vop_name(h.op), (unsigned long long)h.dst_cid,
                (unsigned long long)d->cid);
    /* an RST answers as if from the address we sent to, whatever that was */
    if (h.op != OP_RST && (h.src_cid == d->cid || h.src_cid == 0 || h.src_cid == 1 || h.src_cid == 0xffffffffull ||
        h.src_cid > 0xffffffffull))
        dev_err(d, "%s: bad src_cid %llu", vop_name(h.op), (unsigned long long)h.src_cid);
    if (h.type != VSOCK_TYPE_STREAM && h.type != VSOCK_TYPE_SEQPACKET)
        dev_err(d, "%s: bad type %u", vop_name(h.op), h.type);
    if (h.op < OP_REQUEST || h.op > OP_CREDIT_REQUEST) {
        dev_err(d, "unknown op %u", h.op);
        return;
    }
    if (h.op != OP_RW && h.len)
        dev_err(d, "%s carries %u payload bytes", vop_name(h.op), h.len);

    struct vc_conn *c = conn_find(d, h.src_cid, h.src_port, h.dst_port);
    if (!c) {
        if (h.op == OP_REQUEST && is_listening(d, h.dst_port)) {
            c = conn_new(d, h.type, h.src_cid, h.src_port, h.dst_port);
            if (!c) {
                send_rst_for(d, &h);
                return;
            }
            c->peer_buf_alloc = h.buf_alloc;
            c->peer_fwd_cnt = h.fwd_cnt;
            c->incoming = true;
            c->accepted_pending = true;
            c->st = VC_CONNECTED;
            vc_send_ctrl(c, OP_RESPONSE, 0);
            return;
        }
        if (h.op != OP_RST && d->auto_rst)
            send_rst_for(d, &h);
        return;
    }
    c->pkts_rx++;
    c->peer_buf_alloc = h.buf_alloc;
    c->peer_fwd_cnt = h.fwd_cnt;
    if (h.type != c->type)
        dev_err(d, "%s on a type-%u connection has type %u", vop_name(h.op), c->type, h.type);
    switch (h.op) {
    case OP_RESPONSE:
        if (c->st == VC_CONNECTING)
            c->st = VC_CONNECTED;
        else
            dev_err(d, "RESPONSE on an established connection (port %u)", c->lport);
        break;
    case OP_RST:
        c->got_rst = true;
        c->st = VC_CLOSED;
        break;
    case OP_SHUTDOWN:
        c->peer_shutdown |= h.flags & 3;
        if (c->peer_shutdown == 3 && c->rx_len == 0 && c->st != VC_CLOSED) {
            vc_send_ctrl(c, OP_RST, 0);
            c->st = VC_CLOSED;
        }
        break;
    case OP_RW:
        if (c->st == VC_CONNECTING)
            dev_err(d, "RW before RESPONSE (port %u)", c->lport);
        conn_rx_data(c, &h, w + 44);
        break;
    case OP_CREDIT_UPDATE:
        c->credit_updates_rx++;
        c->credit_req_pending = false;
        break;
    case OP_CREDIT_REQUEST:
        vc_send_ctrl(c, OP_CREDIT_UPDATE, 0);
        break;
    case OP_REQUEST:
        dev_err(d, "REQUEST for an existing connection (port %u)", c->lport);
        break;
    }
}

static int poll_one(struct vdev *d)
{
    if (!d->g.running || d->paused)
        return 0;
    unsigned perr = d->g.proto_errors;
    int n = guest_reap_tx(&d->g);
    static uint8_t wire[44 + RXBUF_PAYLOAD + 64];
    uint32_t len;
    int r;
    while ((r = guest_reap_rx(&d->g, wire, &len)) == 1) {
        handle_pkt(d, wire, len);
        n++;
    }
    if (d->g.proto_errors != perr)
        dev_err(d, "%s", d->g.err);
    guest_post_rx(&d->g);
    return n;
}

int vdev_poll(void)
{
    int n = 0;
    for (int i = 0; i < live_cap; i++)
        if (live[i])
            n += poll_one(live[i]);
    return n;
}

int vdev_pump(int timeout_ms)
{
    int n = vdev_poll();
    if (n > 0)
        return n;
    /* sized with the live table (kept between calls) */
    static struct pollfd *p;
    static struct vdev **who;
    static int pcap;
    if (pcap < live_cap * 3) {
        struct pollfd *np2 = realloc(p, (size_t)live_cap * 3 * sizeof(*p));
        if (np2)
            p = np2;
        struct vdev **nw = np2 ? realloc(who, (size_t)live_cap * 3 * sizeof(*who)) : NULL;
        if (!nw)
            return vdev_poll();   /* out of memory: no waiting, nothing lost */
        who = nw;
        pcap = live_cap * 3;
    }
    int np = 0;
    bool pending = false;
    for (int i = 0; i < live_cap; i++) {
        struct vdev *d = live[i];
        if (!d || !d->g.running || d->paused)
            continue;
        for (int q = 0; q < 2; q++) {
            if (gvq_enable_cb(&d->g.q[q]))
                pending = true;
            who[np] = d;
            p[np++] = (struct pollfd){ d->g.q[q].call_fd, POLLIN, 0 };
        }
        if (!d->dead) {
            who[np] = d;
            p[np++] = (struct pollfd){ d->g.fe.fd, POLLIN, 0 };
        }
    }
    if (pending)
        return vdev_poll();
    int r = np ? poll(p, (nfds_t)np, timeout_ms) : 0;
    for (int i = 0; i < np && r > 0; i++) {
        if (!p[i].revents)
            continue;
        struct vdev *d = who[i];
        if (p[i].fd == d->g.fe.fd) {
            char b[256];
            ssize_t k = recv(p[i].fd, b, sizeof(b), MSG_DONTWAIT);
            if (k == 0 || (k < 0 && errno != EAGAIN)) {
                d->dead = true;
            } else if (k > 0) {
                dev_err(d, "unsolicited %zd bytes on the vhost-user socket", k);
            }
        } else {
            uint64_t v;
            if (read(p[i].fd, &v, sizeof(v)) == sizeof(v)) {
                d->g.q[0].calls += p[i].fd == d->g.q[0].call_fd;
                d->g.q[1].calls += p[i].fd == d->g.q[1].call_fd;
            }
        }
    }
    if (r == 0 && timeout_ms >= 50) {
        /* The wait ended without an interrupt. If used entries are there anyway,
         * give the device 200 ms more to signal (it may just have been preempted
         * between publishing and signalling) before calling it a missed one. */
        for (int i = 0; i < live_cap; i++) {
            struct vdev *d = live[i];
            if (!d || !d->g.running || !d->strict_irq || d->paused)
                continue;
            for (int q = 0; q < 2; q++) {
                if (!gvq_has_used(&d->g.q[q]))
                    continue;
                struct pollfd cp = { d->g.q[q].call_fd, POLLIN, 0 };
                if (poll(&cp, 1, 200) == 1)
                    gvq_drain_call(&d->g.q[q]);
                else
                    d->missed_irqs++;
            }
        }
    }
    return vdev_poll();
}

unsigned vdev_log_mark(struct vdev *d)
{
    return d->nlog;
}

static bool log_match(const struct vhdr *h, uint16_t op, uint32_t sp, uint32_t dp)
{
    return (!op || h->op == op) && (!sp || h->src_port == sp) && (!dp || h->dst_port == dp);
}

unsigned vdev_count_pkts(struct vdev *d, unsigned mark, uint16_t op, uint32_t sp, uint32_t dp)
{
    unsigned n = 0, start = d->nlog - mark > VC_LOG ? d->nlog - VC_LOG : mark;
    for (unsigned i = start; i != d->nlog; i++)
        n += log_match(&d->log[i % VC_LOG], op, sp, dp);
    return n;
}

const struct vhdr *vdev_wait_pkt(struct vdev *d, unsigned mark, uint16_t op, uint32_t sp, uint32_t dp,
                                 int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    unsigned i = mark;
    for (;;) {
        if (d->nlog - i > VC_LOG)
            i = d->nlog - VC_LOG;
        for (; i != d->nlog; i++)
            if (log_match(&d->log[i % VC_LOG], op, sp, dp))
                return &d->log[i % VC_LOG];
        long long left = deadline - now_ms();
        if (left <= 0 || d->dead)
            return NULL;
        vdev_pump(left < 50 ? (int)left : 50);
    }
}

/* ---------------------------------------------------------------- sockets */

struct vc_conn *vc_connect(struct vdev *d, uint16_t type, uint64_t cid, uint32_t port, int timeout_ms, int *err)
{
    return vc_connect_from(d, type, cid, port, d->next_port++, timeout_ms, err);
}

struct vc_conn *vc_connect_priv(struct vdev *d, uint16_t type, uint64_t cid, uint32_t port, int timeout_ms, int *err)
{
    return vc_connect_from(d, type, cid, port, 512 + d->next_priv_port++ % 512, timeout_ms, err);
}

struct vc_conn *vc_connect_from(struct vdev *d, uint16_t type, uint64_t cid, uint32_t port, uint32_t lport,
                                int timeout_ms, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    struct vc_conn *c = conn_new(d, type, cid, port, lport);
    if (!c) {
        *err = -EMFILE;
        return NULL;
    }
    if (vc_send_ctrl(c, OP_REQUEST, 0)) {
        vc_forget(c);
        *err = -EIO;
        return NULL;
    }
    long long deadline = now_ms() + timeout_ms;
    while (c->st == VC_CONNECTING && now_ms() < deadline && !d->dead)
        vdev_pump(50);
    if (c->st == VC_CONNECTED) {
        *err = 0;
        return c;
    }
    *err = c->got_rst ? -ECONNREFUSED : -ETIMEDOUT;
    vc_forget(c);
    return NULL;
}

int vc_listen(struct vdev *d, uint32_t port)
{
    if (d->nlisten >= 8)
        return -ENOSPC;
    d->listen_port[d->nlisten++] = port;
    return 0;
}

struct vc_conn *vc_accept(struct vdev *d, uint32_t port, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        for (int i = 0; i < VC_MAX_CONNS; i++) {
            struct vc_conn *c = &d->c[i];
            if (c->st != VC_FREE && c->accepted_pending && c->lport == port) {
                c->accepted_pending = false;
                return c;
            }
        }
        if (now_ms() >= deadline || d->dead)
            return NULL;
        vdev_pump(50);
    }
}

static uint32_t peer_credit(const struct vc_conn *c)
{
    uint32_t inflight = c->tx_cnt - c->peer_fwd_cnt;
    return inflight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - inflight;
}

static long send_some(struct vc_conn *c, const uint8_t *buf, size_t len, bool seq_eom_at_end)
{
    if (c->got_rst)
        return -ECONNRESET;
    if (c->st != VC_CONNECTED)
        return -ENOTCONN;
    size_t sent = 0;
    while (sent < len) {
        uint32_t credit = peer_credit(c);
        if (credit == 0) {
            long long t = now_ms();
            if (!c->credit_req_pending || t - c->last_creq_ms > 200) {
                c->credit_req_pending = true;
                c->last_creq_ms = t;
                c->credit_requests_tx++;
                vc_send_ctrl(c, OP_CREDIT_REQUEST, 0);
            }
            break;
        }
        size_t chunk = len - sent;
        if (chunk > credit)
            chunk = credit;
        if (chunk > c->d->max_pkt)
            chunk = c->d->max_pkt;
        struct vhdr h;
        conn_hdr(c, &h, OP_RW, (uint32_t)chunk,
                 seq_eom_at_end && sent + chunk == len ? (SEQ_EOM_F | SEQ_EOR_F) : 0);
        int rc = raw_tx(c->d, &h, buf + sent, (uint32_t)chunk);
        if (rc == -EAGAIN)
            break;
        if (rc)
            return rc;
        c->fwd_sent = c->fwd_cnt;
        c->tx_cnt += (uint32_t)chunk;
        sent += chunk;
    }
    return (long)sent;
}

long vc_try_send(struct vc_conn *c, const void *buf, size_t len)
{
    return send_some(c, buf, len, false);
}

static void maybe_credit_update(struct vc_conn *c)
{
    /* the peer believes it may still send buf_alloc - (rx_in - fwd_sent): top it up at half */
    uint32_t peer_view_used = (uint32_t)c->rx_in - c->fwd_sent;
    if (peer_view_used > c->buf_alloc / 2 && c->st == VC_CONNECTED && !c->got_rst)
        vc_send_ctrl(c, OP_CREDIT_UPDATE, 0);
}

static void consume(struct vc_conn *c, uint8_t *out, size_t n)
{
    size_t first = c->rx_cap - c->rx_head;
    if (first > n)
        first = n;
    if (out) {
        memcpy(out, c->rxbuf + c->rx_head, first);
        memcpy(out + first, c->rxbuf, n - first);
    }
    c->rx_head = (c->rx_head + n) % c->rx_cap;
    c->rx_len -= n;
    c->rx_out += n;
    c->fwd_cnt += (uint32_t)n;
    maybe_credit_update(c);
}

long vc_try_recv(struct vc_conn *c, void *buf, size_t len)
{
    size_t n = c->rx_len < len ? c->rx_len : len;
    if (n == 0)
        return c->got_rst ? -ECONNRESET : 0;
    consume(c, buf, n);
    return (long)n;
}

int vc_send_all(struct vc_conn *c, const void *buf, size_t len, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    size_t done = 0;
    while (done < len) {
        long r = vc_try_send(c, (const uint8_t *)buf + done, len - done);
        if (r < 0)
            return (int)r;
        done += (size_t)r;
        if (done < len) {
            if (now_ms() > deadline || c->d->dead)
                return -ETIMEDOUT;
            vdev_pump(r ? 0 : 50);
        }
    }
    return 0;
}

int vc_recv_all(struct vc_conn *c, void *buf, size_t len, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    size_t done = 0;
    while (done < len) {
        long r = vc_try_recv(c, (uint8_t *)buf + done, len - done);
        if (r < 0)
            return (int)r;
        done += (size_t)r;
        if (done < len) {
            if (now_ms() > deadline || c->d->dead)
                return -ETIMEDOUT;
            vdev_pump(r ? 0 : 50);
        }
    }
    return 0;
}

int vc_echo(struct vc_conn *c, const void *out, void *in, size_t len, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    size_t s = 0, r = 0;
    while (r < len) {
        long a = 0, b;
        if (s < len) {
            a = vc_try_send(c, (const uint8_t *)out + s, len - s);
            if (a < 0)
                return (int)a;
            s += (size_t)a;
        }
        b = vc_try_recv(c, (uint8_t *)in + r, len - r);
        if (b < 0)
            return (int)b;
        r += (size_t)b;
        if (r < len) {
            if (now_ms() > deadline || c->d->dead)
                return -ETIMEDOUT;
            vdev_pump(a || b ? 0 : 50);
        }
    }
    return 0;
}

int vc_send_msg(struct vc_conn *c, const void *buf, size_t len, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    const uint8_t *p = buf;
    size_t done = 0;
    if (len == 0) { /* an empty message: one RW packet of length 0 with EOM */
        if (c->got_rst)
            return -ECONNRESET;
        struct vhdr h;
        conn_hdr(c, &h, OP_RW, 0, SEQ_EOM_F | SEQ_EOR_F);
        int rc = vdev_send_pkt(c->d, &h, NULL, 0);
        if (rc == 0)
            c->fwd_sent = c->fwd_cnt;
        return rc;
    }
    while (done < len) {
        /* one packet at a time: the last one carries EOM */
        size_t chunk = len - done;
        if (chunk > c->d->max_pkt)
            chunk = c->d->max_pkt;
        bool last = done + chunk == len;
        long r = send_some(c, p + done, chunk, last);
        if (r < 0)
            return (int)r;
        if (r > 0 && !last && (size_t)r < chunk) {
            /* middle packets may be cut by credit: fine, keep going */
        }
        done += (size_t)r;
        if (done < len) {
            if (now_ms() > deadline || c->d->dead)
                return -ETIMEDOUT;
            vdev_pump(r ? 0 : 50);
        }
    }
    return 0;
}

long vc_recv_msg(struct vc_conn *c, void *buf, size_t cap, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (c->msg_count == 0) {
        if (c->got_rst)
            return -ECONNRESET;
        if (now_ms() > deadline || c->d->dead)
            return -ETIMEDOUT;
        vdev_pump(50);
    }
    uint64_t end = c->msg_end[c->msg_head];
    c->msg_head = (c->msg_head + 1) % VC_MAX_MSGS;
    c->msg_count--;
    size_t mlen = (size_t)(end - c->rx_out);
    size_t take = mlen < cap ? mlen : cap;
    consume(c, buf, take);
    if (mlen > take)
        consume(c, NULL, mlen - take);
    return (long)mlen;
}

int vc_close(struct vc_conn *c, int timeout_ms, long long *rst_ms)
{
    long long t0 = now_ms();
    struct vdev *d = c->d;
    int rc = 0;
    if (!c->got_rst) {
        if (c->st == VC_CONNECTED) {
            vc_send_ctrl(c, OP_SHUTDOWN, SHUT_RCV_F | SHUT_SEND_F);
            c->st = VC_CLOSING;
        }
        while (!c->got_rst && now_ms() - t0 < timeout_ms && !d->dead)
            vdev_pump(50);
        rc = c->got_rst ? 0 : -ETIMEDOUT;
    }
    if (rst_ms)
        *rst_ms = now_ms() - t0;
    vc_forget(c);
    return rc;
}

int vdev_echo_check(struct vdev *d, size_t n, int timeout_ms, char *why, size_t whylen)
{
    int err = 0;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 7, timeout_ms, &err);
    if (!c) {
        snprintf(why, whylen, "connect to echo: %s%s", strerror(-err), d->dead ? " (vhost-user closed)" : "");
        return err;
    }
    uint8_t *out = malloc(n), *in = malloc(n);
    fill_pattern(out, n, (uint32_t)n);
    int rc = vc_echo(c, out, in, n, timeout_ms);
    if (rc)
        snprintf(why, whylen, "echo of %zu bytes: %s", n, strerror(-rc));
    else if (memcmp(out, in, n) != 0) {
        snprintf(why, whylen, "echo of %zu bytes came back different", n);
        rc = -EBADMSG;
    }
    free(out);
    free(in);
    long long ms;
    int crc = vc_close(c, 2000, &ms);
    if (!rc && crc) {
        snprintf(why, whylen, "no RST within 2 s after SHUTDOWN");
        rc = crc;
    }
    return rc;
}
