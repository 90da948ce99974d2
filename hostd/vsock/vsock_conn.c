/* Connections to host services on CID 2: table, credit flow control both
 * ways, SEQPACKET boundaries, close handshake, and the service registry. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vsock_internal.h"

#define RING_CAP VSOCK_BUF_ALLOC
#define RING_MASK (RING_CAP - 1)
_Static_assert(VSOCK_BUF_ALLOC == VSOCK_OUT_MAX, "one ring size for both directions");
_Static_assert((RING_CAP & RING_MASK) == 0, "ring size must be a power of two");

/* ---- services: per device ---- */

int vsock_dev_add_service(struct vsock_dev *dev, const struct vsock_service *svc, void *ctx)
{
    if (!dev || !svc || (!svc->stream && !svc->seqpacket))
        return -EINVAL;
    for (unsigned i = 0; i < dev->nsvcs; i++)
        if (dev->svcs[i].svc->port == svc->port) {
            log_err("vm %s: vsock port %u already has service %s", dev->name, svc->port, dev->svcs[i].svc->name);
            return -EEXIST;
        }
    if (dev->nsvcs >= VSOCK_MAX_SERVICES) {
        log_err("vm %s: vsock: cannot add service %s on port %u: %u services", dev->name, svc->name, svc->port,
                dev->nsvcs);
        return -ENOSPC;
    }
    dev->svcs[dev->nsvcs++] = (struct vsock_svc_entry){ svc, ctx };
    log_debug("vm %s: vsock service %s on port %u", dev->name, svc->name ? svc->name : "?", svc->port);
    return 0;
}

const struct vsock_svc_entry *vsock_service_find(const struct vsock_dev *dev, uint32_t port)
{
    for (unsigned i = 0; i < dev->nsvcs; i++)
        if (dev->svcs[i].svc->port == port)
            return &dev->svcs[i];
    return NULL;
}

/* ---- rings ---- */

/* A ring gets storage on its first bytes; the trim sweep takes it back. */
static int ring_alloc(struct vsock_dev *dev, struct byte_ring *r)
{
    if (r->buf)
        return 0;
    r->buf = malloc(RING_CAP);
    if (!r->buf)
        return -ENOMEM;
    r->trim_seen = r->tail - 1;   /* not idle before the next sweep */
    if (!dev->trim_at_ms) {
        dev->trim_at_ms = vsock_now_ms() + VSOCK_TRIM_MS;
        vsock_dev_timer_by(dev, dev->trim_at_ms);
    }
    return 0;
}

static uint32_t ring_used(const struct byte_ring *r)
{
    return r->tail - r->head;
}

static int msgq_push(struct msg_fifo *q, uint32_t end, uint32_t flags)
{
    if (q->n == q->cap) {
        if (q->cap >= VSOCK_MAX_MSGS)
            return -ENOBUFS;
        uint32_t ncap = q->cap ? q->cap * 2 : 16;
        struct msg_end *v = malloc(ncap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        for (uint32_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = ncap;
        q->head = 0;
    }
    q->v[(q->head + q->n) % q->cap] = (struct msg_end){ end, flags };
    q->n++;
    return 0;
}

static const struct msg_end *msgq_front(const struct msg_fifo *q)
{
    return q->n ? &q->v[q->head] : NULL;
}

static void msgq_pop(struct msg_fifo *q)
{
    q->head = (q->head + 1) % q->cap;
    q->n--;
}

static void conn_free_buffers(struct vsock_conn *c)
{
    free(c->in.buf);
    free(c->out.buf);
    free(c->in_msgs.v);
    free(c->out_msgs.v);
    c->in.buf = c->out.buf = NULL;
    memset(&c->in_msgs, 0, sizeof(c->in_msgs));
    memset(&c->out_msgs, 0, sizeof(c->out_msgs));
    c->in.head = c->in.tail;
    c->out.head = c->out.tail;
}

/* ---- table ---- */

static unsigned conn_hash(uint32_t peer_port, uint32_t local_port, uint16_t type)
{
    uint32_t x = peer_port * 0x9e3779b1u ^ local_port * 0x85ebca6bu ^ type;
    return (x ^ (x >> 16)) % VSOCK_CONN_HASH;
}

struct vsock_conn *vsock_conn_lookup(struct vsock_dev *dev, uint32_t peer_port, uint32_t local_port, uint16_t type)
{
    if (!dev->hash)
        return NULL;
    for (struct vsock_conn *c = dev->hash[conn_hash(peer_port, local_port, type)]; c; c = c->hnext)
        if (c->peer_port == peer_port && c->local_port == local_port && c->type == type)
            return c;
    return NULL;
}

static void hash_unlink(struct vsock_conn *c)
{
    if (!c->dev->hash)
        return;
    struct vsock_conn **pp = &c->dev->hash[conn_hash(c->peer_port, c->local_port, c->type)];
    for (; *pp; pp = &(*pp)->hnext)
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    c->hnext = NULL;
}

void vsock_conn_free(struct vsock_conn *c)
{
    conn_free_buffers(c);
    free(c);
}

/* ---- credit ---- */

/* Bytes the guest can take now: peer_buf_alloc - (tx_cnt - peer_fwd_cnt).
 * A fwd_cnt ahead of what we sent, or a shrunk buffer, gives 0. */
static uint32_t peer_credit(const struct vsock_conn *c)
{
    uint32_t in_flight = c->out.head - c->peer_fwd_cnt;
    return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* SEQPACKET: an empty message is at the head of the outbound queue. */
static bool zero_msg_next(const struct vsock_conn *c)
{
    const struct msg_end *m = msgq_front(&c->out_msgs);
    return m && m->end == c->out.head;
}

static bool out_empty(const struct vsock_conn *c)
{
    return c->out.tail == c->out.head && !c->out_msgs.n;
}

static bool sendable(const struct vsock_conn *c)
{
    if (c->state == CONN_DEAD)
        return false;
    if (c->pending & (PEND_RESPONSE | PEND_CREDIT_UPDATE))
        return true;
    if (zero_msg_next(c))
        return true;
    if (c->out.tail != c->out.head && (peer_credit(c) > 0 || !c->credit_req_sent))
        return true;
    return (c->pending & PEND_SHUTDOWN) && out_empty(c);
}

void vsock_conn_update_pend(struct vsock_conn *c)
{
    bool want = sendable(c);
    if (want && !c->in_pend) {
        vlist_add_tail(&c->dev->pend, &c->pend);
        c->in_pend = true;
    } else if (!want && c->in_pend) {
        vlist_del(&c->pend);
        c->in_pend = false;
    }
}

/* Tell the guest about freed receive space once enough accumulated, or when
 * its view of our window is nearly closed (a Linux sender then just waits). */
static void maybe_credit_update(struct vsock_conn *c)
{
    uint32_t freed = c->in.head - c->fwd_cnt_sent;
    if (!freed)
        return;
    uint32_t seen_free = c->in_limit - c->in.tail;   /* what the guest may still send */
    if (freed >= VSOCK_BUF_ALLOC / 4 || seen_free < VSOCK_MAX_PKT)
        c->pending |= PEND_CREDIT_UPDATE;
}

/* ---- receive window: a per-VM budget shared by the connections ---- */

/* The window to advertise now, recorded as the new in_limit. It is what is
 * left of the VM's budget, at most VSOCK_BUF_ALLOC, and never less than the
 * credit already given (a Linux sender computes credit in u32 and would
 * underflow if its bytes in flight exceeded buf_alloc). */
static uint32_t conn_window(struct vsock_conn *c)
{
    struct vsock_dev *dev = c->dev;
    uint32_t committed = c->in_limit - c->in.head;
    uint64_t others = dev->in_committed - committed;
    uint64_t room = dev->in_budget > others ? dev->in_budget - others : 0;
    uint32_t w = room < VSOCK_BUF_ALLOC ? (uint32_t)room : VSOCK_BUF_ALLOC;
    if (w < committed)
        w = committed;
    bool shrt = w < VSOCK_BUF_ALLOC;
    if (shrt && !c->window_short)
        dev->nshort++;
    else if (!shrt && c->window_short)
        dev->nshort--;
    c->window_short = shrt;
    dev->in_committed += w - committed;
    c->in_limit = c->in.head + w;
    return w;
}

/* Budget freed: connections that got a short window hear about the rest. */
static void wake_short(struct vsock_dev *dev)
{
    if (!dev->nshort || dev->in_committed + VSOCK_MAX_PKT > dev->in_budget)
        return;
    for (struct vlist *l = dev->conns.next; l != &dev->conns; l = l->next) {
        struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
        if (c->state != CONN_DEAD && c->window_short && !(c->pending & PEND_CREDIT_UPDATE)) {
            c->pending |= PEND_CREDIT_UPDATE;
            vsock_conn_update_pend(c);
        }
    }
}

/* ---- lifecycle ---- */

static void conn_closed(struct vsock_conn *c, const char *why)
{
    conn_free_buffers(c);
    if (c->accepted && c->svc->closed)
        c->svc->closed(c, c->priv, why);
    c->priv = NULL;
}

/* Around recv()/writable(): a connection that dies meanwhile (say the VM is
 * torn down from inside the callback) keeps its buffers (the data passed to
 * recv()) and its priv until the callback returns; closed() comes then. */
static void cb_enter(struct vsock_conn *c)
{
    c->in_cb++;
}

static void cb_leave(struct vsock_conn *c)
{
    if (--c->in_cb == 0 && c->close_deferred) {
        c->close_deferred = false;
        conn_closed(c, c->close_why);
    }
}

void vsock_conn_terminate(struct vsock_conn *c, const char *why, bool send_rst)
{
    struct vsock_dev *dev = c->dev;
    if (c->state == CONN_DEAD)
        return;
    if (send_rst)
        vsock_rstq_push(dev, VSOCK_HOST_CID, c->local_port, c->peer_port, c->type);
    hash_unlink(c);
    if (c->in_pend) {
        vlist_del(&c->pend);
        c->in_pend = false;
    }
    c->state = CONN_DEAD;
    dev->nconns--;
    dev->in_committed -= c->in_limit - c->in.head;
    if (c->window_short)
        dev->nshort--;
    c->window_short = false;
    wake_short(dev);
    log_debug("vm %s: vsock conn %llu (guest port %u -> %u) closed: %s", dev->name,
              (unsigned long long)c->id, c->peer_port, c->local_port, why);
    if (c->in_cb) {
        c->close_deferred = true;
        snprintf(c->close_why, sizeof(c->close_why), "%s", why);
        return;
    }
    conn_closed(c, why);
}

/* After the guest's SHUTDOWN(SEND) the connection must finish within
 * halfclose_ms of its last progress (bytes consumed or sent). */
static void halfclose_progress(struct vsock_conn *c)
{
    if (c->state == CONN_PEER_SENT_ALL)
        c->deadline_ms = vsock_now_ms() + c->dev->halfclose_ms;
}

static void check_finish(struct vsock_conn *c)
{
    if (c->state == CONN_PEER_SENT_ALL && !ring_used(&c->in) && !c->in_msgs.n && out_empty(c) &&
        !(c->pending & PEND_RESPONSE))
        vsock_conn_terminate(c, "peer finished sending", true);
}

/* Offer buffered guest bytes to the service, in order, one contiguous piece
 * at a time; SEQPACKET pieces never cross a message end. */
static void deliver(struct vsock_conn *c)
{
    static uint8_t empty;
    uint32_t head0 = c->in.head;
    while (c->state == CONN_OPEN || c->state == CONN_PEER_SENT_ALL) {
        uint32_t upto = ring_used(&c->in);
        bool eom = false;
        const struct msg_end *m = msgq_front(&c->in_msgs);
        if (m && m->end - c->in.head <= upto) {
            upto = m->end - c->in.head;
            eom = true;
        }
        if (!upto && !eom)
            break;
        uint32_t pos = c->in.head & RING_MASK;
        uint32_t chunk = upto < RING_CAP - pos ? upto : RING_CAP - pos;
        bool chunk_eom = eom && chunk == upto;
        const uint8_t *data = c->in.buf ? c->in.buf + pos : &empty;
        c->recv_flags = chunk_eom ? m->flags : 0;
        size_t n = chunk;
        if (c->svc->recv) {
            cb_enter(c);
            n = c->svc->recv(c, c->priv, data, chunk, chunk_eom);
            cb_leave(c);
        }
        c->recv_flags = 0;
        if (c->state == CONN_DEAD)
            return;
        if (n > chunk)
            n = chunk;
        c->in.head += (uint32_t)n;
        c->dev->in_committed -= n;
        if (n < chunk)
            break;
        if (chunk_eom)
            msgq_pop(&c->in_msgs);  /* an empty message counts as consumed */
    }
    if (c->in.head != head0)
        halfclose_progress(c);
    maybe_credit_update(c);
    wake_short(c->dev);
    check_finish(c);
}

static void accept_conn(struct vsock_dev *dev, const struct vsock_hdr *h)
{
    static uint64_t next_id = 1; /* process-wide: ids stay unique across devices */
    const struct vsock_svc_entry *se = vsock_service_find(dev, h->dst_port);
    const struct vsock_service *svc = se ? se->svc : NULL;
    if (!svc || (h->type == VSOCK_TYPE_STREAM && !svc->stream) ||
        (h->type == VSOCK_TYPE_SEQPACKET && !svc->seqpacket)) {
        vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
        return;
    }
    if (dev->nconns >= VSOCK_MAX_CONNS) {
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock: %u connections, refusing port %u", dev->name, dev->nconns, h->dst_port);
        vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
        return;
    }
    if (!dev->hash)
        dev->hash = calloc(VSOCK_CONN_HASH, sizeof(*dev->hash));
    struct vsock_conn *c = dev->hash ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
        return;
    }
    c->dev = dev;
    c->id = next_id++;
    c->local_port = h->dst_port;
    c->peer_port = h->src_port;
    c->type = h->type;
    c->state = CONN_OPEN;
    c->svc = svc;
    c->peer_buf_alloc = h->buf_alloc;
    c->peer_fwd_cnt = h->fwd_cnt;
    c->pending = PEND_RESPONSE;
    vlist_init(&c->pend);
    unsigned b = conn_hash(c->peer_port, c->local_port, c->type);
    c->hnext = dev->hash[b];
    dev->hash[b] = c;
    vlist_add_tail(&dev->conns, &c->all);
    dev->nconns++;
    conn_window(c);   /* the window the RESPONSE will advertise */
    int r = svc->accept ? svc->accept(c, se->ctx, &c->priv) : 0;
    if (r < 0) {
        log_debug("vm %s: vsock service %s refused guest port %u: %s", dev->name, svc->name, h->src_port,
                  strerror(-r));
        vsock_conn_terminate(c, "refused", true);
        return;
    }
    c->accepted = true;
    dev->st.conns_accepted++;
    log_debug("vm %s: vsock conn %llu: guest port %u -> %s (%s)", dev->name, (unsigned long long)c->id,
              h->src_port, svc->name, h->type == VSOCK_TYPE_STREAM ? "stream" : "seqpacket");
    vsock_conn_update_pend(c);
}

static void conn_rx_data(struct vsock_conn *c, const struct vsock_hdr *h, const struct virtq_elem *elem)
{
    struct vsock_dev *dev = c->dev;
    if (c->state == CONN_CLOSING)
        return;  /* we are closing: the service wants no more */
    uint32_t len = h->len;
    bool eom = c->type == VSOCK_TYPE_SEQPACKET && (h->flags & VSOCK_SEQ_EOM);
    if (!len && !eom)
        return;
    /* Bounded memory whatever the guest does: data beyond the window we
     * advertised (per connection, within the VM's budget) is a protocol
     * violation. */
    uint32_t window = c->in_limit - c->in.head;
    if (ring_used(&c->in) + (uint64_t)len > window) {
        dev->st.bad_pkts++;
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock guest port %u -> %u sent %llu bytes beyond credit: reset", dev->name,
                     c->peer_port, c->local_port,
                     (unsigned long long)(ring_used(&c->in) + (uint64_t)len - window));
        vsock_conn_terminate(c, "credit exceeded", true);
        return;
    }
    if (len) {
        if (ring_alloc(dev, &c->in) < 0) {
            vsock_conn_terminate(c, "out of memory", true);
            return;
        }
        uint32_t pos = c->in.tail & RING_MASK;
        uint32_t first = len < RING_CAP - pos ? len : RING_CAP - pos;
        iov_to_buf(elem->iov, elem->n_out, VSOCK_HDR_SIZE, c->in.buf + pos, first);
        if (len > first)
            iov_to_buf(elem->iov, elem->n_out, VSOCK_HDR_SIZE + first, c->in.buf, len - first);
        c->in.tail += len;
    }
    if (eom && msgq_push(&c->in_msgs, c->in.tail, h->flags & (VSOCK_SEQ_EOM | VSOCK_SEQ_EOR)) < 0) {
        dev->st.bad_pkts++;
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock guest port %u: too many buffered messages: reset", dev->name, c->peer_port);
        vsock_conn_terminate(c, "too many messages", true);
        return;
    }
    deliver(c);
}

/* A valid packet from the guest addressed to CID 2. */
void vsock_host_rx(struct vsock_dev *dev, const struct vsock_hdr *h, const struct virtq_elem *elem)
{
    struct vsock_conn *c = vsock_conn_lookup(dev, h->src_port, h->dst_port, h->type);
    if (h->op == VSOCK_OP_REQUEST) {
        if (c) {
            /* The guest no longer knows this connection: drop our stale one too. */
            vsock_conn_terminate(c, "duplicate request", false);
            vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
            return;
        }
        accept_conn(dev, h);
        return;
    }
    if (!c) {
        if (h->op != VSOCK_OP_RST)
            vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
        return;
    }
    c->peer_buf_alloc = h->buf_alloc;
    c->peer_fwd_cnt = h->fwd_cnt;
    if (peer_credit(c) > 0)
        c->credit_req_sent = false;
    switch (h->op) {
    case VSOCK_OP_RESPONSE:
        dev->st.bad_pkts++;
        vsock_conn_terminate(c, "unexpected response", true);
        return;
    case VSOCK_OP_RST:
        vsock_conn_terminate(c, "peer reset", false);
        return;
    case VSOCK_OP_SHUTDOWN:
        c->peer_shut |= (uint8_t)(h->flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND));
        /* Linux waits up to 8 s for our RST after SHUTDOWN(RCV|SEND): answer now. */
        if (c->state == CONN_CLOSING || c->peer_shut == (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)) {
            vsock_conn_terminate(c, "peer shutdown", true);
            return;
        }
        if (h->flags & VSOCK_SHUTDOWN_RCV) {
            /* the guest reads no more: what we hold or get for it is discarded */
            c->out.head = c->out.tail;
            c->out_msgs.n = 0;
            c->out_msgs.head = 0;
            c->out_freed = true;
        }
        if ((h->flags & VSOCK_SHUTDOWN_SEND) && c->state == CONN_OPEN) {
            /* the service must finish (consume, flush) without stalling */
            c->state = CONN_PEER_SENT_ALL;
            halfclose_progress(c);
            vsock_dev_timer_by(dev, c->deadline_ms);
            deliver(c);
        }
        break;
    case VSOCK_OP_RW:
        conn_rx_data(c, h, elem);
        break;
    case VSOCK_OP_CREDIT_UPDATE:
        break;
    case VSOCK_OP_CREDIT_REQUEST:
        c->pending |= PEND_CREDIT_UPDATE;  /* a flag: a flood costs nothing */
        break;
    default:
        break;
    }
    if (c->state != CONN_DEAD)
        vsock_conn_update_pend(c);
}

uint32_t vsock_conn_build(struct vsock_conn *c, const struct virtq_elem *elem)
{
    struct vsock_dev *dev = c->dev;
    const struct iovec *iov = elem->iov + elem->n_out;
    unsigned niov = elem->n_in;
    uint64_t room64 = elem->in_len - VSOCK_HDR_SIZE;
    uint32_t room = room64 > VSOCK_MAX_PKT ? VSOCK_MAX_PKT : (uint32_t)room64;
    struct vsock_hdr h = {
        .src_cid = VSOCK_HOST_CID, .dst_cid = dev->cid,
        .src_port = c->local_port, .dst_port = c->peer_port,
        .type = c->type,
    };
    uint32_t credit = peer_credit(c);
    bool zero_msg = zero_msg_next(c);
    bool have_data = c->out.tail != c->out.head;
    if (c->state == CONN_DEAD)
        return 0;
    if (c->pending & PEND_RESPONSE) {
        h.op = VSOCK_OP_RESPONSE;
        c->pending &= ~PEND_RESPONSE;
    } else if (zero_msg || (have_data && credit && room)) {
        uint32_t n = c->out.tail - c->out.head;
        if (n > credit)
            n = credit;
        if (n > room)
            n = room;
        const struct msg_end *m = msgq_front(&c->out_msgs);
        if (c->type == VSOCK_TYPE_SEQPACKET && m && m->end - c->out.head <= n) {
            n = m->end - c->out.head;
            h.flags = m->flags;
            msgq_pop(&c->out_msgs);
        }
        uint32_t pos = c->out.head & RING_MASK;
        uint32_t first = n < RING_CAP - pos ? n : RING_CAP - pos;
        if (n) {
            iov_from_buf(iov, niov, VSOCK_HDR_SIZE, c->out.buf + pos, first);
            if (n > first)
                iov_from_buf(iov, niov, VSOCK_HDR_SIZE + first, c->out.buf, n - first);
            c->out.head += n;
            c->out_freed = true;
            halfclose_progress(c);
        }
        h.op = VSOCK_OP_RW;
        h.len = n;
    } else if (c->pending & PEND_CREDIT_UPDATE) {
        h.op = VSOCK_OP_CREDIT_UPDATE;
    } else if (have_data && !credit && !c->credit_req_sent) {
        h.op = VSOCK_OP_CREDIT_REQUEST;
        c->credit_req_sent = true;
    } else if ((c->pending & PEND_SHUTDOWN) && out_empty(c)) {
        h.op = VSOCK_OP_SHUTDOWN;
        h.flags = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;
        c->pending &= ~PEND_SHUTDOWN;
        c->shutdown_sent = true;
        c->deadline_ms = vsock_now_ms() + VSOCK_CLOSE_TIMEOUT_MS;
        vsock_dev_timer_by(dev, c->deadline_ms);
    } else {
        return 0;
    }
    /* every packet carries our credit, so it also serves as a credit update */
    h.buf_alloc = conn_window(c);
    h.fwd_cnt = c->in.head;
    c->fwd_cnt_sent = c->in.head;
    c->pending &= ~PEND_CREDIT_UPDATE;
    uint8_t wire[VSOCK_HDR_SIZE];
    vsock_hdr_encode(&h, wire);
    iov_from_buf(iov, niov, 0, wire, sizeof(wire));
    if (c->state == CONN_PEER_SENT_ALL && out_empty(c))
        c->out_freed = true;  /* lets the pump finish the half-closed connection */
    return VSOCK_HDR_SIZE + h.len;
}

void vsock_conn_after_output(struct vsock_conn *c)
{
    if ((c->state == CONN_OPEN || c->state == CONN_PEER_SENT_ALL) && c->svc->writable) {
        cb_enter(c);
        c->svc->writable(c, c->priv);
        cb_leave(c);
    }
    if (c->state == CONN_DEAD)
        return;
    deliver(c);
    if (c->state != CONN_DEAD)
        vsock_conn_update_pend(c);
}

void vsock_conns_expire(struct vsock_dev *dev, int64_t now)
{
    for (struct vlist *l = dev->conns.next; l != &dev->conns; l = l->next) {
        struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
        if (c->state != CONN_DEAD && c->deadline_ms && now >= c->deadline_ms)
            vsock_conn_terminate(c,
                                 c->shutdown_sent                  ? "no RST from guest after SHUTDOWN"
                                 : c->state == CONN_PEER_SENT_ALL ? "service did not finish after guest shutdown"
                                                                   : "flush timeout",
                                 true);
    }
}

static bool ring_trim(struct byte_ring *r, struct msg_fifo *q)
{
    if (!r->buf)
        return false;
    if (r->tail == r->head && r->tail == r->trim_seen && !q->n) {
        free(r->buf);
        r->buf = NULL;
        free(q->v);
        memset(q, 0, sizeof(*q));
        return false;
    }
    r->trim_seen = r->tail;
    return true;
}

bool vsock_conns_trim(struct vsock_dev *dev)
{
    bool left = false;
    for (struct vlist *l = dev->conns.next; l != &dev->conns; l = l->next) {
        struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
        if (c->state == CONN_DEAD)
            continue;
        left |= ring_trim(&c->in, &c->in_msgs);
        left |= ring_trim(&c->out, &c->out_msgs);
    }
    return left;
}

int64_t vsock_conns_next_deadline(struct vsock_dev *dev)
{
    int64_t next = 0;
    for (struct vlist *l = dev->conns.next; l != &dev->conns; l = l->next) {
        struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
        if (c->state != CONN_DEAD && c->deadline_ms && (!next || c->deadline_ms < next))
            next = c->deadline_ms;
    }
    return next;
}

/* ---- service-side API ---- */

/* The service API never pumps inline: a pump runs service callbacks (writable,
 * recv, and closed() when a connection finishes), and the caller may be a
 * service in the middle of its own work (an async RPC reply from a timer or
 * another socket's callback). Output goes out on the device's way out of
 * processing, or from the event loop's next iteration. */
static void kick(struct vsock_dev *dev)
{
    vsock_dev_schedule_pump(dev);
}

size_t vsock_conn_send_space(const struct vsock_conn *c)
{
    if (!c || (c->state != CONN_OPEN && c->state != CONN_PEER_SENT_ALL))
        return 0;
    if (c->type == VSOCK_TYPE_SEQPACKET && c->out_msgs.n >= VSOCK_MAX_MSGS)
        return 0;
    return VSOCK_OUT_MAX - ring_used(&c->out);
}

int vsock_conn_send(struct vsock_conn *c, const void *data, size_t len, bool eom)
{
    return vsock_conn_send_flags(c, data, len, eom ? VSOCK_SEQ_EOM : 0);
}

int vsock_conn_send_flags(struct vsock_conn *c, const void *data, size_t len, uint32_t seq_flags)
{
    if (!c || (c->state != CONN_OPEN && c->state != CONN_PEER_SENT_ALL))
        return -ENOTCONN;
    bool seq = c->type == VSOCK_TYPE_SEQPACKET;
    bool eom = (seq_flags & (VSOCK_SEQ_EOM | VSOCK_SEQ_EOR)) != 0;
    if (len > VSOCK_OUT_MAX - ring_used(&c->out) || (seq && eom && c->out_msgs.n >= VSOCK_MAX_MSGS))
        return -EAGAIN;
    if (c->peer_shut & VSOCK_SHUTDOWN_RCV)
        return 0;   /* the guest shut its receive side: accepted and dropped */
    if (len) {
        if (ring_alloc(c->dev, &c->out) < 0)
            return -ENOMEM;
        uint32_t pos = c->out.tail & RING_MASK;
        uint32_t n = (uint32_t)len;
        uint32_t first = n < RING_CAP - pos ? n : RING_CAP - pos;
        memcpy(c->out.buf + pos, data, first);
        if (n > first)
            memcpy(c->out.buf, (const uint8_t *)data + first, n - first);
        c->out.tail += n;
    }
    if (seq && eom) {
        int r = msgq_push(&c->out_msgs, c->out.tail, VSOCK_SEQ_EOM | (seq_flags & VSOCK_SEQ_EOR));
        if (r < 0)
            return r;  /* only -ENOMEM here: the bytes stay, the message continues */
    }
    vsock_conn_update_pend(c);
    kick(c->dev);
    return 0;
}

void vsock_conn_close(struct vsock_conn *c)
{
    if (!c || c->state == CONN_DEAD || c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    c->pending |= PEND_SHUTDOWN;
    c->deadline_ms = vsock_now_ms() + VSOCK_FLUSH_TIMEOUT_MS;
    vsock_dev_timer_by(c->dev, c->deadline_ms);
    vsock_conn_update_pend(c);
    kick(c->dev);
}

struct vsock_dev *vsock_conn_dev(const struct vsock_conn *c)
{
    return c->dev;
}

uint32_t vsock_conn_peer_port(const struct vsock_conn *c)
{
    return c->peer_port;
}

uint64_t vsock_conn_id(const struct vsock_conn *c)
{
    return c->id;
}

uint32_t vsock_conn_last_flags(const struct vsock_conn *c)
{
    return c ? c->recv_flags : 0;
}
