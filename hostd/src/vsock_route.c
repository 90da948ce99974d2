/* Guest-to-guest routing between sibling VMs of this hostd. Packets are
 * forwarded unchanged (credit is end to end between the guests); we only
 * track REQUEST..RST so that a VM reset can RST the other side. */
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
    struct vsock_sib **pp = &dev->sibs[sib_hash(peer_cid, local_port, peer_port, type)];
    for (; *pp; pp = &(*pp)->next) {
        struct vsock_sib *s = *pp;
        if (s->peer_cid == peer_cid && s->local_port == local_port && s->peer_port == peer_port && s->type == type)
            break;
    }
    return pp;
}

static int sib_add(struct vsock_dev *dev, uint64_t peer_cid, uint32_t local_port, uint32_t peer_port, uint16_t type)
{
    struct vsock_sib **pp = sib_find(dev, peer_cid, local_port, peer_port, type);
    if (*pp)
        return 0;
    if (dev->nsibs >= VSOCK_MAX_SIBS)
        return -ENOSPC;
    struct vsock_sib *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->peer_cid = peer_cid;
    s->local_port = local_port;
    s->peer_port = peer_port;
    s->type = type;
    unsigned b = sib_hash(peer_cid, local_port, peer_port, type);
    s->next = dev->sibs[b];
    dev->sibs[b] = s;
    dev->nsibs++;
    return 0;
}

static void sib_del(struct vsock_dev *dev, uint64_t peer_cid, uint32_t local_port, uint32_t peer_port, uint16_t type)
{
    struct vsock_sib **pp = sib_find(dev, peer_cid, local_port, peer_port, type);
    struct vsock_sib *s = *pp;
    if (!s)
        return;
    *pp = s->next;
    free(s);
    dev->nsibs--;
}

static size_t fwd_cost(const struct fwd_pkt *p)
{
    return sizeof(*p) + p->h.len;
}

static void rst_back(struct vsock_dev *dev, const struct vsock_hdr *h)
{
    if (h->op != VSOCK_OP_RST)
        vsock_rstq_push(dev, h->dst_cid, h->dst_port, h->src_port, h->type);
}

void vsock_route_rx(struct vsock_dev *dev, const struct vsock_hdr *h, const struct virtq_elem *elem)
{
    struct vm *vm = dev->vm;
    struct hostd *hd = vm->hostd;
    struct vm *t = NULL;
    if (hd && hd->sibling_routing && h->dst_cid != vm->cid && !vsock_cid_reserved(h->dst_cid))
        t = hostd_vm_by_cid(hd, h->dst_cid);
    if (!t || t == vm || !t->vsock || t->vsock->rx_broken || !virtq_ready(&t->vq[VSOCK_VQ_RX])) {
        sib_del(dev, h->dst_cid, h->src_port, h->dst_port, h->type);
        rst_back(dev, h);
        return;
    }
    struct vsock_dev *td = t->vsock;
    if (h->op == VSOCK_OP_REQUEST) {
        if (sib_add(dev, t->cid, h->src_port, h->dst_port, h->type) < 0 ||
            sib_add(td, vm->cid, h->dst_port, h->src_port, h->type) < 0) {
            sib_del(dev, t->cid, h->src_port, h->dst_port, h->type);
            if (vsock_ratelimit(dev))
                log_warn("vm %s: vsock: too many sibling connections, refusing %llu:%u", vm->name,
                         (unsigned long long)h->dst_cid, h->dst_port);
            rst_back(dev, h);
            return;
        }
    } else if (h->op == VSOCK_OP_RST) {
        sib_del(dev, t->cid, h->src_port, h->dst_port, h->type);
        sib_del(td, vm->cid, h->dst_port, h->src_port, h->type);
    }
    size_t cost = sizeof(struct fwd_pkt) + h->len;
    if (td->fwd_bytes + cost > VSOCK_FWD_MAX) {
        dev->st.dropped_pkts++;
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock: forward queue to vm %s full, packet dropped", vm->name, t->name);
        goto refuse;
    }
    struct fwd_pkt *p = malloc(cost);
    if (!p) {
        dev->st.dropped_pkts++;
        goto refuse;
    }
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
    vsock_dev_enter(td);
    vsock_dev_leave(td);  /* fill the target's rx queue now */
    return;
refuse:
    /* a dropped REQUEST would leave the guest's connect() hanging: refuse it */
    if (h->op == VSOCK_OP_REQUEST) {
        sib_del(dev, t->cid, h->src_port, h->dst_port, h->type);
        sib_del(td, vm->cid, h->dst_port, h->src_port, h->type);
        rst_back(dev, h);
    }
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
        free(p);
    }
    return VSOCK_HDR_SIZE + n;
}

/* Drop packets from src_cid still waiting in dev's forward queue. */
static void fwd_purge_from(struct vsock_dev *dev, uint64_t src_cid)
{
    struct fwd_pkt **pp = &dev->fwd_head;
    dev->fwd_tail = NULL;
    while (*pp) {
        struct fwd_pkt *p = *pp;
        if (p->h.src_cid == src_cid) {
            *pp = p->next;
            dev->fwd_bytes -= fwd_cost(p);
            free(p);
        } else {
            dev->fwd_tail = p;
            pp = &p->next;
        }
    }
}

void vsock_route_reset(struct vsock_dev *dev)
{
    struct vm *vm = dev->vm;
    /* Kicking a sibling may route a packet back to us and add an entry to a
     * bucket already emptied: sweep until the table stays empty. */
    for (unsigned pass = 0; pass < 8 && dev->nsibs; pass++) {
        for (unsigned b = 0; b < VSOCK_SIB_HASH; b++) {
            while (dev->sibs[b]) {
                struct vsock_sib *s = dev->sibs[b];
                dev->sibs[b] = s->next;
                dev->nsibs--;
                struct vm *t = vm->hostd ? hostd_vm_by_cid(vm->hostd, s->peer_cid) : NULL;
                if (t && t != vm && t->vsock) {
                    struct vsock_dev *td = t->vsock;
                    sib_del(td, vm->cid, s->peer_port, s->local_port, s->type);
                    fwd_purge_from(td, vm->cid);
                    vsock_rstq_push(td, vm->cid, s->local_port, s->peer_port, s->type);
                    vsock_dev_enter(td);
                    vsock_dev_leave(td);
                }
                free(s);
            }
        }
    }
    for (unsigned b = 0; b < VSOCK_SIB_HASH; b++)  /* left after 8 passes: drop silently */
        while (dev->sibs[b]) {
            struct vsock_sib *s = dev->sibs[b];
            dev->sibs[b] = s->next;
            free(s);
        }
    dev->nsibs = 0;
    while (dev->fwd_head) {
        struct fwd_pkt *p = dev->fwd_head;
        dev->fwd_head = p->next;
        free(p);
    }
    dev->fwd_tail = NULL;
    dev->fwd_bytes = 0;
}
