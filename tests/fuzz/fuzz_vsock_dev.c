/* Fuzz the virtio-vsock device through its tx queue: the input is a script of
 * guest packets (header fields lightly steered towards valid values so the
 * connection, credit and routing paths are reached), rx drains, resets and
 * rx starvation, for two sibling VMs served by one hostd with the echo
 * service (the second VM with a receive budget of little more than one
 * window). Invariants: no crash or sanitizer report, bounded connection
 * count, every rx packet well formed and addressed to its guest, receive
 * windows within the budget, sibling tracking mirrored in both VMs. */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "evloop.h"
#include "log.h"
#include "vsock.h"
#include "vsock_internal.h"
#include "vsock_pkt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A VM as the device sees it: memory, its two queues, the device. */
struct fvm {
    char name[64];
    uint64_t cid;
    struct memtable mem;
    struct virtq vq[VSOCK_NUM_VQ];
    struct vsock_dev *vsock;
};

static struct fvm *fvms[2];
static unsigned nfvms;

static struct vsock_dev *peer_dev(void *ctx, uint64_t cid)
{
    for (unsigned i = 0; i < nfvms; i++)
        if (fvms[i]->cid == cid)
            return fvms[i]->vsock;
    return NULL;
}

#define MEM_SZ (2u << 20)
#define UVA 0x500000000000ull
#define QN 64
#define GPA_TXD 0x0000
#define GPA_TXA 0x1000
#define GPA_TXU 0x2000
#define GPA_RXD 0x3000
#define GPA_RXA 0x4000
#define GPA_RXU 0x5000
#define GPA_TXBUF 0x10000           /* QN slots of 8 KiB */
#define GPA_RXBUF 0x100000          /* QN slots of 4 KiB */
#define TXSLOT 8192
#define RXSLOT 4096

struct fguest {
    struct fvm vm;
    uint8_t *mem;
    uint16_t tx_avail, tx_used, rx_avail, rx_used;
    uint16_t tx_inflight;
    bool hold;
};

static struct fguest guests[2];
static bool ready;

static void *gp(struct fguest *g, uint64_t gpa) { return g->mem + gpa; }

/* ring fields are little-endian in guest memory, as the device expects */
static struct vring_desc desc_le(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    return (struct vring_desc){ htole64(addr), htole32(len), htole16(flags), htole16(next) };
}

static void post_rx(struct fguest *g, uint16_t slot)
{
    struct vring_desc *d = gp(g, GPA_RXD);
    struct vring_avail *a = gp(g, GPA_RXA);
    d[slot] = desc_le(GPA_RXBUF + (uint64_t)slot * RXSLOT, RXSLOT, VRING_DESC_F_WRITE, 0);
    a->ring[g->rx_avail % QN] = htole16(slot);
    g->rx_avail++;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    a->idx = htole16(g->rx_avail);
}

static void vq_setup(struct fguest *g, unsigned i, uint64_t d, uint64_t a, uint64_t u)
{
    struct virtq *vq = &g->vm.vq[i];
    virtq_init(vq, i, &g->vm.mem);
    vq->num = QN;
    vq->desc_uva = UVA + d;
    vq->avail_uva = UVA + a;
    vq->used_uva = UVA + u;
    vq->enabled = true;
    if (virtq_map_rings(vq) < 0)
        abort();
    vq->started = true;
}

static void guest_setup(struct fguest *g, uint64_t cid)
{
    memset(g, 0, sizeof(*g));
    g->vm.cid = cid;
    snprintf(g->vm.name, sizeof(g->vm.name), "fz%llu", (unsigned long long)cid);
    memtable_init(&g->vm.mem);
    int fd = memfd_create("fz", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, MEM_SZ) < 0 || memtable_add(&g->vm.mem, 0, MEM_SZ, UVA, 0, fd) < 0)
        abort();
    g->mem = memtable_gpa_to_hva(&g->vm.mem, 0, MEM_SZ);
    struct vsock_dev_config dc = { .name = g->vm.name, .cid = cid, .rx = &g->vm.vq[VSOCK_VQ_RX],
                                   .tx = &g->vm.vq[VSOCK_VQ_TX], .peer = peer_dev, .sibling_routing = true };
    g->vm.vsock = vsock_dev_new(&dc);
    if (!g->vm.vsock || vsock_dev_add_service(g->vm.vsock, &vsock_echo_service, NULL) < 0)
        abort();
    fvms[nfvms++] = &g->vm;
}

/* Fresh rings and memory contents for one input (device state is reset too). */
static void guest_restart(struct fguest *g)
{
    vsock_dev_reset(g->vm.vsock, "fuzz restart");
    memset(g->mem, 0, 0x6000);
    g->tx_avail = g->tx_used = g->rx_avail = g->rx_used = g->tx_inflight = 0;
    g->hold = false;
    vq_setup(g, VSOCK_VQ_RX, GPA_RXD, GPA_RXA, GPA_RXU);
    vq_setup(g, VSOCK_VQ_TX, GPA_TXD, GPA_TXA, GPA_TXU);
    for (uint16_t i = 0; i < QN; i++)
        post_rx(g, i);
    if (g->vm.cid == 4)
        g->vm.vsock->in_budget = 300000;
}

static void drain(struct fguest *g)
{
    struct vring_used *tu = gp(g, GPA_TXU);
    while (g->tx_used != le16toh(tu->idx)) {
        g->tx_used++;
        g->tx_inflight--;
    }
    struct vring_used *ru = gp(g, GPA_RXU);
    bool posted = false;
    while (!g->hold && g->rx_used != le16toh(ru->idx)) {
        struct vring_used_elem e = ru->ring[g->rx_used % QN];
        e.id = le32toh(e.id);
        e.len = le32toh(e.len);
        g->rx_used++;
        if (e.id >= QN)
            abort();
        if (e.len >= VSOCK_HDR_SIZE) {
            struct vsock_hdr h;
            vsock_hdr_decode(gp(g, GPA_RXBUF + (uint64_t)e.id * RXSLOT), VSOCK_HDR_SIZE, &h);
            if (h.dst_cid != g->vm.cid || h.len != e.len - VSOCK_HDR_SIZE || h.len > RXSLOT - VSOCK_HDR_SIZE)
                abort();
        } else if (e.len != 0) {
            abort();
        }
        post_rx(g, (uint16_t)e.id);
        posted = true;
    }
    if (posted)
        vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_RX);
}

static void send_tx(struct fguest *g, const uint8_t *bytes, size_t n, unsigned layout)
{
    if (g->tx_inflight >= QN / 2) {
        vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_TX);
        drain(g);
        if (g->tx_inflight >= QN / 2)
            return;
    }
    uint16_t slot = (uint16_t)(g->tx_avail % (QN / 2));
    uint64_t buf = GPA_TXBUF + (uint64_t)slot * TXSLOT;
    if (n > TXSLOT - 64)
        n = TXSLOT - 64;
    memcpy(gp(g, buf), bytes, n);
    struct vring_desc *d = gp(g, GPA_TXD);
    uint16_t head = (uint16_t)(slot * 2);
    size_t cut = layout % 3 == 0 ? n : (layout % 3 == 1 ? (n < 44 ? n : 44) : n / 2);
    if (cut == n) {
        d[head] = desc_le(buf, (uint32_t)n, (uint16_t)(layout & 8 ? VRING_DESC_F_NEXT : 0), (uint16_t)(head + 1));
        /* layout bit 3: a trailing writable descriptor (malformed for tx) */
        d[head + 1] = desc_le(buf + TXSLOT - 64, 64, VRING_DESC_F_WRITE, 0);
    } else {
        d[head] = desc_le(buf, (uint32_t)cut, VRING_DESC_F_NEXT, (uint16_t)(head + 1));
        d[head + 1] = desc_le(buf + cut, (uint32_t)(n - cut), 0, 0);
    }
    struct vring_avail *a = gp(g, GPA_TXA);
    a->ring[g->tx_avail % QN] = htole16(head);
    g->tx_avail++;
    g->tx_inflight++;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    a->idx = htole16(g->tx_avail);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        log_threshold = LOG_ERROR;
        guest_setup(&guests[0], 3);
        guest_setup(&guests[1], 4);
        ready = true;
    }
    guest_restart(&guests[0]);
    guest_restart(&guests[1]);
    static const uint32_t ports[] = { MDLMAP_PORT_ECHO, 1001, 5000, 0xffffffffu };   /* 1001: a steered port too */
    size_t i = 0;
    while (i < size) {
        uint8_t cmd = data[i++];
        struct fguest *g = &guests[cmd >> 7];
        switch (cmd & 7) {
        case 0: case 1: case 2: case 3: case 4: {
            uint8_t pkt[VSOCK_HDR_SIZE + 4096];
            uint8_t raw[VSOCK_HDR_SIZE] = { 0 };
            size_t take = size - i < VSOCK_HDR_SIZE ? size - i : VSOCK_HDR_SIZE;
            memcpy(raw, data + i, take);
            i += take;
            struct vsock_hdr h;
            vsock_hdr_decode(raw, sizeof(raw), &h);
            uint8_t steer = raw[0];
            if (steer & 1)
                h.src_cid = g->vm.cid;
            if (steer & 2)
                h.dst_cid = steer & 4 ? guests[(cmd >> 7) ^ 1].vm.cid : VSOCK_HOST_CID;
            if (steer & 8)
                h.dst_port = ports[(steer >> 4) & 3];
            if (steer & 0x40) {
                h.type = (uint16_t)(1 + (h.type & 1));
                h.op = (uint16_t)(1 + h.op % 7);
                h.src_port = 1000 + (h.src_port & 3);
            }
            size_t plen = h.len & 0xfff;
            if (plen > size - i)
                plen = size - i;
            if (steer & 0x80)
                h.len = (uint32_t)plen;
            vsock_hdr_encode(&h, pkt);
            memcpy(pkt + VSOCK_HDR_SIZE, data + i, plen);
            i += plen;
            send_tx(g, pkt, VSOCK_HDR_SIZE + plen, cmd >> 3);
            break;
        }
        case 5:
            vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_TX);
            drain(g);
            break;
        case 6:
            switch ((cmd >> 3) % 8) {
            case 0:
                vsock_dev_reset(g->vm.vsock, "fuzz");
                break;
            case 1:   /* drain, then two sweeps: idle rings go */
                vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_TX);
                drain(g);
                /* fall through */
            case 2:
                vsock_dev_enter(g->vm.vsock);
                vsock_conns_trim(g->vm.vsock);
                vsock_conns_trim(g->vm.vsock);
                vsock_dev_leave(g->vm.vsock);
                break;
            case 3:   /* every deadline due now (close, flush, half-close) */
                vsock_dev_enter(g->vm.vsock);
                vsock_conns_expire(g->vm.vsock, INT64_MAX);
                vsock_dev_leave(g->vm.vsock);
                break;
            case 7: {   /* scripted sibling handshake on the steered ports */
                struct fguest *o = &guests[(cmd >> 7) ^ 1];
                uint8_t k = i < size ? data[i++] : 0;
                struct vsock_hdr h = { .src_cid = g->vm.cid, .dst_cid = o->vm.cid, .src_port = 1000 + (k & 3u),
                                       .dst_port = 1000 + (k >> 2 & 3u), .type = (uint16_t)(1 + (k >> 4 & 1)),
                                       .op = VSOCK_OP_REQUEST, .buf_alloc = 65536 };
                uint8_t pkt[VSOCK_HDR_SIZE];
                vsock_hdr_encode(&h, pkt);
                send_tx(g, pkt, sizeof(pkt), 0);
                vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_TX);
                drain(g);
                if (k & 0x40) {   /* to the host echo instead: REQUEST above went to o; add data */
                    h.dst_cid = VSOCK_HOST_CID;
                    h.dst_port = MDLMAP_PORT_ECHO;
                    vsock_hdr_encode(&h, pkt);
                    send_tx(g, pkt, sizeof(pkt), 0);
                    uint8_t dp[VSOCK_HDR_SIZE + 64];
                    h.op = VSOCK_OP_RW;
                    h.len = 64;
                    h.flags = k >> 7 ? VSOCK_SEQ_EOM | VSOCK_SEQ_EOR : VSOCK_SEQ_EOM;
                    vsock_hdr_encode(&h, dp);
                    memset(dp + VSOCK_HDR_SIZE, k, 64);
                    send_tx(g, dp, sizeof(dp), 0);
                    vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_TX);
                    drain(g);
                    vsock_dev_enter(g->vm.vsock);   /* echoed and idle: rings freed */
                    vsock_conns_trim(g->vm.vsock);
                    vsock_conns_trim(g->vm.vsock);
                    vsock_dev_leave(g->vm.vsock);
                    break;
                }
                struct vsock_hdr r = h;
                r.src_cid = o->vm.cid;
                r.dst_cid = g->vm.cid;
                r.src_port = h.dst_port;
                r.dst_port = h.src_port;
                r.op = k & 0x20 ? VSOCK_OP_RESPONSE : VSOCK_OP_RST;
                vsock_hdr_encode(&r, pkt);
                send_tx(o, pkt, sizeof(pkt), 0);
                vsock_dev_queue_event(o->vm.vsock, VSOCK_VQ_TX);
                drain(o);
                if (r.op == VSOCK_OP_RESPONSE && (k & 0x80)) {   /* both close */
                    h.op = r.op = VSOCK_OP_SHUTDOWN;
                    h.flags = r.flags = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;
                    vsock_hdr_encode(&h, pkt);
                    send_tx(g, pkt, sizeof(pkt), 0);
                    vsock_hdr_encode(&r, pkt);
                    send_tx(o, pkt, sizeof(pkt), 0);
                    vsock_dev_queue_event(g->vm.vsock, VSOCK_VQ_TX);
                    vsock_dev_queue_event(o->vm.vsock, VSOCK_VQ_TX);
                    drain(g);
                    drain(o);
                }
                break;
            }
            default:
                vsock_dev_timer_tick(g->vm.vsock);
                break;
            }
            break;
        case 7:
            g->hold = !g->hold;
            drain(g);
            break;
        }
        struct vsock_stats st;
        vsock_dev_stats(g->vm.vsock, &st);
        if (st.conns > VSOCK_MAX_CONNS)
            abort();
        const struct vsock_dev *d0 = guests[0].vm.vsock, *d1 = guests[1].vm.vsock;
        if (d0->nsibs != d1->nsibs || d0->nsibs_out + d1->nsibs_out != d0->nsibs)
            abort();
        if (d0->in_committed > d0->in_budget || d1->in_committed > d1->in_budget)
            abort();
        for (int k = 0; k < 2; k++) {   /* forward queue accounting */
            const struct vsock_dev *d = guests[k].vm.vsock;
            unsigned np = 0;
            size_t nb = 0;
            for (const struct fwd_pkt *p = d->fwd_head; p; p = p->next, np++)
                nb += sizeof(*p) + p->h.len;
            if (np != d->fwd_n || nb != d->fwd_bytes || nb > VSOCK_FWD_MAX)
                abort();
        }
    }
    for (int k = 0; k < 2; k++) {
        guests[k].hold = false;
        vsock_dev_queue_event(guests[k].vm.vsock, VSOCK_VQ_TX);
        drain(&guests[k]);
    }
    return 0;
}
