/* Guest-to-guest routing between sibling VMs of this hostd. Packets are
 * forwarded unchanged (credit is end to end between the guests), but only
 * for connections hostd saw being set up: a REQUEST creates a tracked
 * connection (an entry in each VM's table), the side that received it may
 * answer once with RESPONSE, and only then do RW, CREDIT_* and SHUTDOWN
 * pass. Anything else is refused with an RST to the sender (never for an
 * RST) and counted. Entries go on RST from either side, once both sides
 * sent SHUTDOWN(RCV|SEND), and on a VM reset (the peer gets an RST). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vsock_internal.h"

static unsigned sib_hash(uint64_t peer_cid, uint32_t local_port, uint32_t peer_port, uint16_t type)
{
    uint64_t x = peer_cid * 0x9e3779b97f4a7c15ull ^ local_port * 0x85ebca6bu ^ (uint64_t)peer_port << 20 ^ type;
    return (unsigned)((x ^ (x >> 29)) % VSOCK_SIB_HASH);
}

static struct vsock_sib **sib_find(struct vsock_dev *dev, uint64_t peer_cid, uint32_t local_port,
                                   uint32_t peer_port, uint16_t type)
{
    static struct vsock_sib *none;  /* no table yet: an empty chain (never written: *pp is NULL) */
    if (!dev->sibs)
        return &none;
    struct vsock_sib **pp = &dev->sibs[sib_hash(peer_cid, local_port, peer_port, type)];
    for (; *pp; pp = &(*pp)->next) {
        struct vsock_sib *s = *pp;
        if (s->peer_cid == peer_cid && s->local_port == local_port && s->peer_port == peer_port && s->type == type)
            break;
    }
    return pp;
}

static struct vsock_sib *sib_add(struct vsock_dev *dev, uint64_t peer_cid, uint32_t local_port,
                                 uint32_t peer_port, uint16_t type, bool initiator)
{
    if (!dev->sibs)
        dev->sibs = calloc(VSOCK_SIB_HASH, sizeof(*dev->sibs));
    struct vsock_sib *s = dev->sibs ? calloc(1, sizeof(*s)) : NULL;
    if (!s)
        return NULL;
    s->peer_cid = peer_cid;
    s->local_port = local_port;
    s->peer_port = peer_port;
    s->type = type;
    s->initiator = initiator;
    unsigned b = sib_hash(peer_cid, local_port, peer_port, type);
    s->next = dev->sibs[b];
    dev->sibs[b] = s;
    dev->nsibs++;
    dev->nsibs_out += initiator;
    return s;
}

static void sib_unlink(struct vsock_dev *dev, struct vsock_sib **pp)
{
    struct vsock_sib *s = *pp;
    *pp = s->next;
    dev->nsibs--;
    dev->nsibs_out -= s->initiator;
    free(s);
}

static void sib_del(struct vsock_dev *dev, uint64_t peer_cid, uint32_t local_port, uint32_t peer_port, uint16_t type)
{
    struct vsock_sib **pp = sib_find(dev, peer_cid, local_port, peer_port, type);
    if (*pp)
        sib_unlink(dev, pp);
}

static size_t fwd_cost(const struct fwd_pkt *p)
{
    return sizeof(*p) + p->h.len;
}

/* Drop packets from src_cid still waiting in dev's forward queue: all of
 * them, or (one_conn) those of one connection. */
static void fwd_purge(struct vsock_dev *dev, uint64_t src_cid, bool one_conn, uint32_t src_port,
                      uint32_t dst_port, uint16_t type)
{
    struct fwd_pkt **pp = &dev->fwd_head;
    dev->fwd_tail = NULL;
    while (*pp) {
        struct fwd_pkt *p = *pp;
        if (p->h.src_cid == src_cid && p->h.op != VSOCK_OP_RST &&
            (!one_conn || (p->h.src_port == src_port && p->h.dst_port == dst_port && p->h.type == type))) {
            *pp = p->next;
            dev->fwd_bytes -= fwd_cost(p);
            dev->fwd_n--;
            free(p);
        } else {
            dev->fwd_tail = p;
            pp = &p->next;
        }
    }
}

/* An RST from sibling src_cid to dev's guest. The RST queue is small (it
 * also carries our own refusals); past it, RSTs wait in the forward queue
 * so that a VM reset with many sibling connections ends all of them. */
static void rst_to(struct vsock_dev *dev, uint64_t src_cid, uint32_t src_port, uint32_t dst_port, uint16_t type)
{
    if (dev->rst_n < VSOCK_RSTQ_MAX / 2) {
        vsock_rstq_push(dev, src_cid, src_port, dst_port, type);
        return;
    }
    struct fwd_pkt *p = NULL;
    if (dev->fwd_bytes + sizeof(*p) <= VSOCK_FWD_MAX)
        p = calloc(1, sizeof(*p));
    if (!p) {
        dev->st.dropped_pkts++;
        return;
    }
    p->h = (struct vsock_hdr){ .src_cid = src_cid, .dst_cid = dev->cid, .src_port = src_port,
                               .dst_port = dst_port, .type = type, .op = VSOCK_OP_RST };
    if (dev->fwd_tail)
        dev->fwd_tail->next = p;
    else
        dev->fwd_head = p;
    dev->fwd_tail = p;
    dev->fwd_bytes += sizeof(*p);
    dev->fwd_n++;
}

static void rst_back(struct vsock_dev *dev, const struct vsock_hdr *h)
{
    if (h->op != VSOCK_OP_RST)
        vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
}

/* End the tracked connection h belongs to: forget both entries, drop what
 * still waits for the peer and RST it. The sender is answered by the caller. */
static void sib_abort(struct vsock_dev *dev, struct vsock_dev *td, const struct vsock_hdr *h)
{
    uint64_t cid = dev->cid;
    sib_del(dev, h->dst_cid, h->src_port, h->dst_port, h->type);
    if (!td)
        return;
    sib_del(td, cid, h->dst_port, h->src_port, h->type);
    /* Drop its queued packets, within a bounded walk (a guest can abort
     * connections at will); left-overs only draw an RST from the peer. */
    if (td->fwd_n <= VSOCK_PURGE_MAX)
        fwd_purge(td, cid, true, h->src_port, h->dst_port, h->type);
    rst_to(td, cid, h->src_port, h->dst_port, h->type);
    vsock_dev_enter(td);
    vsock_dev_leave(td);
}

static void refuse(struct vsock_dev *dev, const struct vsock_hdr *h, const char *why)
{
    dev->st.sib_refused++;
    if (vsock_ratelimit(dev))
        log_warn("vm %s: vsock: sibling packet op %u %u -> %llu:%u refused: %s", dev->name, h->op,
                 h->src_port, (unsigned long long)h->dst_cid, h->dst_port, why);
    rst_back(dev, h);
}

static bool sib_queue(struct vsock_dev *td, const struct vsock_hdr *h, const struct virtq_elem *elem)
{
    size_t cost = sizeof(struct fwd_pkt) + h->len;
    if (td->fwd_bytes + cost > VSOCK_FWD_MAX)
        return false;
    struct fwd_pkt *p = malloc(cost);
    if (!p)
        return false;
    p->next = NULL;
    p->h = *h;
    p->off = 0;
    if (h->len)
        iov_to_buf(elem->iov, elem->n_out, VSOCK_HDR_SIZE, p->data, h->len);
    if (td->fwd_tail)
        td->fwd_tail->next = p;
    else
        td->fwd_head = p;
    td->fwd_tail = p;
    td->fwd_bytes += cost;
    td->fwd_n++;
    return true;
}

/* Backpressure: a packet the target's queue cannot take stays in the
 * sender's tx ring (credit-respecting traffic can exceed the queue when the
 * target is slow to post rx buffers). After VSOCK_FWD_STALL_MS without room
 * the target is stuck: the packet's connection is reset instead, so a hung
 * sibling cannot stall this VM's vsock for good. */
static bool fwd_wait(struct vsock_dev *dev, const struct vsock_dev *td, const struct vsock_hdr *h)
{
    if (td->fwd_bytes + sizeof(struct fwd_pkt) + h->len <= VSOCK_FWD_MAX) {
        dev->fwd_stall_since = 0;
        return false;
    }
    int64_t now = vsock_now_ms();
    if (!dev->fwd_stall_since)
        dev->fwd_stall_since = now;
    if (now - dev->fwd_stall_since >= VSOCK_FWD_STALL_MS)
        return false;   /* sib_queue fails below: reset */
    dev->fwd_blocked = true;
    return true;
}

/* The device of the sibling VM with this CID (never dev itself), or NULL. */
static struct vsock_dev *peer_of(struct vsock_dev *dev, uint64_t cid)
{
    if (!dev->peer || cid == dev->cid || vsock_cid_reserved(cid))
        return NULL;
    struct vsock_dev *t = dev->peer(dev->peer_ctx, cid);
    return t != dev ? t : NULL;
}

bool vsock_route_rx(struct vsock_dev *dev, const struct vsock_hdr *h, const struct virtq_elem *elem)
{
    struct vsock_dev *td = peer_of(dev, h->dst_cid);
    struct vsock_sib **pp = sib_find(dev, h->dst_cid, h->src_port, h->dst_port, h->type);
    struct vsock_sib *s = *pp;
    if (!td || !dev->sibling_routing || td->rx_broken || !virtq_ready(td->rxq)) {
        if (s)
            sib_abort(dev, td, h);
        rst_back(dev, h);
        return true;
    }
    struct vsock_sib *ps = NULL;   /* the peer's mirror entry */
    if (s) {
        ps = *sib_find(td, dev->cid, h->dst_port, h->src_port, h->type);
        if (!ps) {   /* cannot happen: entries come and go in pairs */
            sib_abort(dev, td, h);
            refuse(dev, h, "tracking lost");
            return true;
        }
    }
    bool finished = false;
    switch (h->op) {
    case VSOCK_OP_REQUEST:
        if (s) {
            sib_abort(dev, td, h);
            refuse(dev, h, "request for a live connection");
            return true;
        }
        if (dev->nsibs_out >= VSOCK_MAX_SIBS || dev->nsibs >= VSOCK_MAX_SIBS_ALL ||
            td->nsibs >= VSOCK_MAX_SIBS_ALL) {
            refuse(dev, h, "too many sibling connections");
            return true;
        }
        if (fwd_wait(dev, td, h))
            return false;
        s = sib_add(dev, td->cid, h->src_port, h->dst_port, h->type, true);
        ps = s ? sib_add(td, dev->cid, h->dst_port, h->src_port, h->type, false) : NULL;
        if (!ps) {
            if (s)
                sib_del(dev, td->cid, h->src_port, h->dst_port, h->type);
            refuse(dev, h, "out of memory");
            return true;
        }
        break;
    case VSOCK_OP_RST:
        if (!s) {
            dev->st.sib_refused++;   /* nothing to reset; never answer an RST */
            return true;
        }
        /* forget the connection and pass the RST ahead of queued data */
        sib_abort(dev, td, h);
        return true;
    case VSOCK_OP_RESPONSE:
        if (!s || s->initiator || s->established) {
            if (s)
                sib_abort(dev, td, h);
            refuse(dev, h, s ? "unexpected response" : "no such connection");
            return true;
        }
        if (fwd_wait(dev, td, h))
            return false;
        s->established = ps->established = true;
        break;
    default:   /* RW, CREDIT_UPDATE, CREDIT_REQUEST, SHUTDOWN */
        if (!s || !s->established) {
            if (s)
                sib_abort(dev, td, h);
            refuse(dev, h, s ? "connection not established" : "no such connection");
            return true;
        }
        if (fwd_wait(dev, td, h))
            return false;
        if (h->op == VSOCK_OP_SHUTDOWN) {
            uint8_t f = (uint8_t)(h->flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND));
            s->shut_local |= f;
            ps->shut_peer |= f;
            finished = s->shut_local == 3 && s->shut_peer == 3;
        }
        break;
    }
    if (!sib_queue(td, h, elem)) {
        /* Dropping data would corrupt the stream (no retransmission): end it. */
        dev->st.dropped_pkts++;
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock: forward queue to vm %s full: connection %u -> %u reset", dev->name,
                     td->name, h->src_port, h->dst_port);
        sib_abort(dev, td, h);
        rst_back(dev, h);
        return true;
    }
    if (finished) {   /* both sides said they are done: stop tracking */
        sib_del(dev, td->cid, h->src_port, h->dst_port, h->type);
        sib_del(td, dev->cid, h->dst_port, h->src_port, h->type);
    }
    vsock_dev_enter(td);
    vsock_dev_leave(td);  /* fill the target's rx queue now */
    return true;
}

/* The head forwarded packet into one rx chain. Payload larger than the
 * buffer is split; SEQPACKET end-of-message flags stay on the last piece. */
uint32_t vsock_fwd_build(struct vsock_dev *dev, const struct virtq_elem *elem)
{
    struct fwd_pkt *p = dev->fwd_head;
    const struct iovec *iov = elem->iov + elem->n_out;
    uint64_t room64 = elem->in_len - VSOCK_HDR_SIZE;
    uint32_t room = room64 > VSOCK_MAX_PKT ? VSOCK_MAX_PKT : (uint32_t)room64;
    uint32_t rest = p->h.len - p->off;
    uint32_t n = rest < room ? rest : room;
    if (rest && !n)
        return 0;
    struct vsock_hdr h = p->h;
    h.len = n;
    if (p->off + n < p->h.len && h.type == VSOCK_TYPE_SEQPACKET)
        h.flags &= ~(VSOCK_SEQ_EOM | VSOCK_SEQ_EOR);
    uint8_t wire[VSOCK_HDR_SIZE];
    vsock_hdr_encode(&h, wire);
    iov_from_buf(iov, elem->n_in, 0, wire, sizeof(wire));
    if (n)
        iov_from_buf(iov, elem->n_in, VSOCK_HDR_SIZE, p->data + p->off, n);
    p->off += n;
    if (p->off == p->h.len) {
        dev->fwd_head = p->next;
        if (!dev->fwd_head)
            dev->fwd_tail = NULL;
        dev->fwd_bytes -= fwd_cost(p);
        dev->fwd_n--;
        free(p);
    }
    return VSOCK_HDR_SIZE + n;
}

void vsock_route_reset(struct vsock_dev *dev)
{
    /* Kicking a sibling may route a packet back to us and add an entry to a
     * bucket already emptied: sweep until the table stays empty. */
    for (unsigned pass = 0; pass < 8 && dev->nsibs && dev->sibs; pass++) {
        for (unsigned b = 0; b < VSOCK_SIB_HASH; b++) {
            while (dev->sibs[b]) {
                struct vsock_sib *s = dev->sibs[b];
                dev->sibs[b] = s->next;
                dev->nsibs--;
                dev->nsibs_out -= s->initiator;
                struct vsock_dev *td = peer_of(dev, s->peer_cid);
                if (td) {
                    sib_del(td, dev->cid, s->peer_port, s->local_port, s->type);
                    fwd_purge(td, dev->cid, false, 0, 0, 0);
                    rst_to(td, dev->cid, s->local_port, s->peer_port, s->type);
                    vsock_dev_enter(td);
                    vsock_dev_leave(td);
                }
                free(s);
            }
        }
    }
    for (unsigned b = 0; dev->sibs && b < VSOCK_SIB_HASH; b++)  /* left after 8 passes: no more kicks */
        while (dev->sibs[b]) {
            struct vsock_sib *s = dev->sibs[b];
            dev->sibs[b] = s->next;
            struct vsock_dev *td = peer_of(dev, s->peer_cid);
            if (td) {
                sib_del(td, dev->cid, s->peer_port, s->local_port, s->type);
                rst_to(td, dev->cid, s->local_port, s->peer_port, s->type);
            }
            free(s);
        }
    dev->nsibs = dev->nsibs_out = 0;
    free(dev->sibs);   /* every chain is empty now */
    dev->sibs = NULL;
    while (dev->fwd_head) {
        struct fwd_pkt *p = dev->fwd_head;
        dev->fwd_head = p->next;
        free(p);
    }
    dev->fwd_tail = NULL;
    dev->fwd_bytes = 0;
    dev->fwd_n = 0;
}
