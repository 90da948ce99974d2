/* virtio-vsock device for one VM: the tx queue (guest -> host) is parsed and
 * dispatched, the rx queue (host -> guest) is filled from connectionless RSTs,
 * sibling-forwarded packets and our connections, round robin. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "vsock_internal.h"

int64_t vsock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* At most 10 per-packet warnings per 5 s per device. */
bool vsock_ratelimit(struct vsock_dev *dev)
{
    return log_limit_allow(&dev->rl, dev->name);
}

void vsock_rstq_push(struct vsock_dev *dev, uint64_t src_cid, uint32_t src_port, uint32_t dst_port, uint16_t type)
{
    if (!dev->rstq)
        dev->rstq = malloc(VSOCK_RSTQ_MAX * sizeof(*dev->rstq));
    if (dev->rst_n >= VSOCK_RSTQ_MAX || !dev->rstq) {
        dev->st.dropped_pkts++;   /* as when full: the guest times out instead */
        return;
    }
    struct rst_ent *e = &dev->rstq[(dev->rst_head + dev->rst_n) % VSOCK_RSTQ_MAX];
    e->src_cid = src_cid;
    e->src_port = src_port;
    e->dst_port = dst_port;
    e->type = type;
    dev->rst_n++;
}

/* RSTs come in bursts (a guest probing closed ports); between bursts the
 * queue's 6 KiB are not kept. */
static void rstq_release(struct vsock_dev *dev)
{
    free(dev->rstq);
    dev->rstq = NULL;
    dev->rst_n = 0;
    dev->rst_head = 0;
}

static uint32_t rst_build(struct vsock_dev *dev, const struct virtq_elem *elem)
{
    struct rst_ent *e = &dev->rstq[dev->rst_head];
    struct vsock_hdr h = {
        .src_cid = e->src_cid, .dst_cid = dev->cid,
        .src_port = e->src_port, .dst_port = e->dst_port,
        .type = e->type, .op = VSOCK_OP_RST,
    };
    uint8_t wire[VSOCK_HDR_SIZE];
    vsock_hdr_encode(&h, wire);
    iov_from_buf(elem->iov + elem->n_out, elem->n_in, 0, wire, sizeof(wire));
    dev->rst_head = (dev->rst_head + 1) % VSOCK_RSTQ_MAX;
    if (--dev->rst_n == 0)
        rstq_release(dev);
    dev->st.rst_sent++;
    return VSOCK_HDR_SIZE;
}

static bool have_output(const struct vsock_dev *dev)
{
    return dev->rst_n || dev->fwd_head || !vlist_empty(&dev->pend);
}

/* One packet into one rx chain. RSTs first (they end connections and are
 * what a blocked guest connect() waits for), then alternate between sibling
 * traffic and our own connections. */
static uint32_t rx_build(struct vsock_dev *dev, const struct virtq_elem *elem)
{
    if (dev->rst_n)
        return rst_build(dev, elem);
    bool use_fwd = dev->fwd_head && (dev->fwd_turn || vlist_empty(&dev->pend));
    dev->fwd_turn = !dev->fwd_turn;
    if (use_fwd)
        return vsock_fwd_build(dev, elem);
    /* Round robin; a connection that cannot use this buffer (no room for
     * its payload) must not block the others: try each at most once. */
    unsigned tries = 0;
    for (struct vlist *l = dev->pend.next; l != &dev->pend; l = l->next)
        tries++;
    while (tries-- && !vlist_empty(&dev->pend)) {
        struct vsock_conn *c = vlist_entry(dev->pend.next, struct vsock_conn, pend);
        vlist_del(&c->pend);
        vlist_add_tail(&dev->pend, &c->pend);
        uint32_t w = vsock_conn_build(c, elem);
        vsock_conn_update_pend(c);
        if (w)
            return w;
    }
    return dev->fwd_head ? vsock_fwd_build(dev, elem) : 0;
}

static bool rx_fill(struct vsock_dev *dev)
{
    struct virtq *vq = dev->rxq;
    bool pushed = false;
    if (dev->rx_broken || !virtq_ready(vq) || !have_output(dev))
        return false;
    virtq_set_notify(vq, false);  /* kicks are only useful once we run dry */
    while (have_output(dev)) {
        struct virtq_elem elem;
        int r = virtq_pop(vq, &elem);
        if (r < 0) {
            dev->rx_broken = true;
            log_err("vm %s: vsock rx queue broken (%d): stopped until reset", dev->name, r);
            break;
        }
        if (r == 0) {
            /* out of buffers: ask for a kick, re-check to close the race */
            virtq_set_notify(vq, true);
            if (virtq_has_avail(vq))
                continue;
            break;
        }
        if (elem.n_out || elem.in_len < VSOCK_HDR_SIZE) {
            dev->st.bad_pkts++;
            if (vsock_ratelimit(dev))
                log_warn("vm %s: vsock rx buffer unusable (out %u, in %llu bytes)", dev->name,
                         elem.n_out, (unsigned long long)elem.in_len);
            virtq_push(vq, &elem, 0);
            pushed = true;
            continue;
        }
        uint32_t w = rx_build(dev, &elem);
        if (!w) {
            virtq_unpop(vq);
            break;
        }
        virtq_push(vq, &elem, w);
        pushed = true;
        dev->st.tx_pkts++;
        dev->st.tx_bytes += w - VSOCK_HDR_SIZE;
    }
    if (pushed)
        dev->rx_call = true;   /* notified once at the outermost leave */
    return pushed;
}

/* false: not consumed (sibling backpressure); the chain goes back to the ring */
static bool tx_handle(struct vsock_dev *dev, const struct virtq_elem *elem)
{
    uint8_t wire[VSOCK_HDR_SIZE];
    struct vsock_hdr h;
    if (elem->n_in || elem->out_len < VSOCK_HDR_SIZE) {
        dev->st.bad_pkts++;
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock tx chain malformed (out %llu bytes, %u in-buffers): dropped", dev->name,
                     (unsigned long long)elem->out_len, elem->n_in);
        return true;
    }
    iov_to_buf(elem->iov, elem->n_out, 0, wire, sizeof(wire));
    vsock_hdr_decode(wire, sizeof(wire), &h);
    int r = vsock_hdr_check(&h, dev->cid, elem->out_len - VSOCK_HDR_SIZE, VSOCK_MAX_PKT);
    if (r < 0) {
        dev->st.bad_pkts++;
        if (vsock_ratelimit(dev))
            log_warn("vm %s: vsock bad packet (%s): src %llu:%u dst %llu:%u type %u op %u len %u: dropped",
                     dev->name, strerror(-r), (unsigned long long)h.src_cid, h.src_port,
                     (unsigned long long)h.dst_cid, h.dst_port, h.type, h.op, h.len);
        return true;
    }
    if (h.dst_cid == VSOCK_HOST_CID)
        vsock_host_rx(dev, &h, elem);
    else if (!vsock_route_rx(dev, &h, elem))
        return false;
    dev->st.rx_pkts++;
    dev->st.rx_bytes += h.len;
    return true;
}

static void tx_process(struct vsock_dev *dev)
{
    struct virtq *vq = dev->txq;
    unsigned budget = VSOCK_TX_BATCH;
    bool pushed = false;
    dev->tx_more = false;
    dev->tx_blocked = false;
    dev->fwd_blocked = false;
    if (dev->tx_broken || !virtq_ready(vq))
        return;
    virtq_set_notify(vq, false);
    for (;;) {
        /* Replies we cannot place are the guest's backpressure: leave its
         * packets in the ring until rx buffers drain the RST queue. */
        if (dev->rst_n >= VSOCK_RSTQ_MAX - 1) {
            dev->tx_blocked = true;
            virtq_set_notify(vq, true);
            break;
        }
        if (!budget) {
            dev->tx_more = true;  /* the timer resumes us: other VMs get a turn */
            if (dev->timer_fd < 0)
                virtq_set_notify(vq, true);  /* no timer: the next kick resumes */
            break;
        }
        struct virtq_elem elem;
        int r = virtq_pop(vq, &elem);
        if (r < 0) {
            dev->tx_broken = true;
            log_err("vm %s: vsock tx queue broken (%d): stopped until reset", dev->name, r);
            break;
        }
        if (r == 0) {
            virtq_set_notify(vq, true);
            if (!virtq_has_avail(vq))
                break;
            virtq_set_notify(vq, false);
            continue;
        }
        if (!tx_handle(dev, &elem)) {
            virtq_unpop(vq);   /* a sibling's queue is full: retry from the timer or a kick */
            virtq_set_notify(vq, true);
            break;
        }
        budget--;
        virtq_push(vq, &elem, 0);
        pushed = true;
    }
    if (pushed)
        dev->tx_call = true;   /* notified once at the outermost leave */
    if (dev->tx_more || dev->fwd_blocked)
        vsock_dev_arm_timer(dev);
}

static void free_dead(struct vsock_dev *dev)
{
    struct vlist *l = dev->conns.next;
    while (l != &dev->conns) {
        struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
        l = l->next;
        if (c->state == CONN_DEAD && !c->in_cb) {
            vlist_del(&c->all);
            vsock_conn_free(c);
        }
    }
    if (vlist_empty(&dev->conns)) {   /* no conn left to hash */
        free(dev->hash);
        dev->hash = NULL;
    }
}

/* Move output to the guest until nothing moves: sending frees outbound space,
 * services then produce more (writable / re-offered input). Bounded rounds;
 * whatever is left waits for the next rx kick. */
static void pump(struct vsock_dev *dev)
{
    for (int round = 0; round < 64; round++) {
        bool moved = rx_fill(dev);
        bool woke = false;
        for (struct vlist *l = dev->conns.next; l != &dev->conns; l = l->next) {
            struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
            if (c->out_freed && c->state != CONN_DEAD) {
                c->out_freed = false;
                vsock_conn_after_output(c);
                woke = true;
            }
        }
        if (dev->tx_blocked && dev->rst_n < VSOCK_RSTQ_MAX / 2) {
            tx_process(dev);
            woke = true;
        }
        if (!moved && !woke)
            break;
    }
}

/* One call eventfd write per queue per dispatch at most: pump() may fill
 * the rx ring in several rounds and tx may be processed more than once;
 * virtq_notify covers everything pushed since its last call (EVENT_IDX
 * range check or NO_INTERRUPT flag), so a single call after the last push
 * interrupts the driver whenever one of the per-round calls would have. */
static void flush_calls(struct vsock_dev *dev)
{
    if (dev->tx_call) {
        dev->tx_call = false;
        virtq_notify(dev->txq);
    }
    if (dev->rx_call) {
        dev->rx_call = false;
        virtq_notify(dev->rxq);
    }
}

void vsock_dev_enter(struct vsock_dev *dev)
{
    dev->depth++;
}

void vsock_dev_leave(struct vsock_dev *dev)
{
    if (dev->depth > 1) {
        dev->depth--;
        return;
    }
    pump(dev);
    flush_calls(dev);
    if (dev->kick_fd < 0)
        dev->pump_pending = false;   /* no loop: this was the pump it waited for */
    dev->depth = 0;
    free_dead(dev);
}

void vsock_dev_schedule_pump(struct vsock_dev *dev)
{
    if (dev->depth > 0 || dev->pump_pending)
        return;   /* the outermost leave, or the pending kick, pumps */
    dev->pump_pending = true;
    if (dev->kick_fd < 0)
        return;   /* no loop (tests, fuzzing): the next queue event or tick pumps */
    uint64_t one = 1;
    if (write(dev->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        log_err("vm %s: vsock eventfd write: %s", dev->name, strerror(errno));
        /* the timer pumps instead, as soon as the loop comes round */
        struct itimerspec its = { .it_value.tv_nsec = 1 };
        if (dev->timer_fd >= 0 && timerfd_settime(dev->timer_fd, 0, &its, NULL) == 0) {
            dev->armed_ms = vsock_now_ms();
            dev->timer_live = dev->timer_asap = true;
        }
    }
}

static void kick_cb(void *opaque, uint32_t events)
{
    struct vsock_dev *dev = opaque;
    /* kick_fd is edge-triggered: each write is a new edge, so the counter
     * is never read back (one syscall less per deferred pump). */
    dev->pump_pending = false;
    vsock_dev_enter(dev);
    vsock_dev_leave(dev);
}

void vsock_dev_arm_timer(struct vsock_dev *dev)
{
    if (dev->timer_fd < 0)
        return;
    int64_t next = vsock_conns_next_deadline(dev);
    if (dev->trim_at_ms && (!next || dev->trim_at_ms < next))
        next = dev->trim_at_ms;
    int64_t now = vsock_now_ms();
    struct itimerspec its = { 0 };
    int64_t was = dev->armed_ms;
    dev->armed_ms = 0;
    if (dev->fwd_blocked && (!next || now + VSOCK_FWD_RETRY_MS < next))
        next = now + VSOCK_FWD_RETRY_MS;
    if (dev->tx_more) {
        /* A 1 ns expiry still pending (or fired, not yet read) fires as
         * soon as the loop comes round, which is all a new one would do. */
        if (dev->timer_live && dev->timer_asap) {
            dev->armed_ms = was;
            return;
        }
        its.it_value.tv_nsec = 1;  /* as soon as the loop comes round */
        dev->armed_ms = now;
    } else if (next) {
        int64_t d = next - now;
        if (d < 1)
            d = 1;
        its.it_value.tv_sec = d / 1000;
        its.it_value.tv_nsec = (d % 1000) * 1000000;
        dev->armed_ms = now + d;
    }
    /* The same expiry (to the ms), still pending, or already disarmed:
     * nothing to tell the kernel. */
    if (dev->timer_live ? dev->armed_ms && dev->armed_ms == was : !dev->armed_ms)
        return;
    dev->timer_sets++;
    if (timerfd_settime(dev->timer_fd, 0, &its, NULL) < 0) {
        log_err("vm %s: vsock timerfd_settime: %s", dev->name, strerror(errno));
        return;
    }
    dev->timer_live = dev->armed_ms != 0;
    dev->timer_asap = dev->tx_more;
}

void vsock_dev_timer_by(struct vsock_dev *dev, int64_t when)
{
    if (dev->timer_fd >= 0 && (!dev->armed_ms || when < dev->armed_ms))
        vsock_dev_arm_timer(dev);
}

void vsock_dev_timer_tick(struct vsock_dev *dev)
{
    int64_t now = vsock_now_ms();
    vsock_dev_enter(dev);
    vsock_conns_expire(dev, now);
    if (dev->trim_at_ms && now >= dev->trim_at_ms)
        dev->trim_at_ms = vsock_conns_trim(dev) ? now + VSOCK_TRIM_MS : 0;
    if (dev->tx_more || dev->fwd_blocked)
        tx_process(dev);
    vsock_dev_leave(dev);
    vsock_dev_arm_timer(dev);
}

static void timer_cb(void *opaque, uint32_t events)
{
    struct vsock_dev *dev = opaque;
    uint64_t ticks;
    if (read(dev->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        log_warn("vm %s: vsock timerfd read: %s", dev->name, strerror(errno));
    dev->timer_live = false;   /* expired: the next arm must set it again */
    vsock_dev_timer_tick(dev);
}

struct vsock_dev *vsock_dev_new(const struct vsock_dev_config *cfg)
{
    if (!cfg || !cfg->rx || !cfg->tx)
        return NULL;
    struct vsock_dev *dev = calloc(1, sizeof(*dev));
    if (!dev)
        return NULL;
    snprintf(dev->name, sizeof(dev->name), "%s", cfg->name ? cfg->name : "?");
    dev->cid = cfg->cid;
    dev->loop = cfg->loop;
    dev->rxq = cfg->rx;
    dev->txq = cfg->tx;
    dev->peer = cfg->peer;
    dev->peer_ctx = cfg->peer_ctx;
    dev->sibling_routing = cfg->sibling_routing;
    vlist_init(&dev->conns);
    vlist_init(&dev->pend);
    dev->timer_fd = -1;
    dev->kick_fd = -1;
    dev->in_budget = VSOCK_IN_BUDGET;
    dev->halfclose_ms = VSOCK_HALFCLOSE_TIMEOUT_MS;
    if (dev->loop) {
        dev->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (dev->timer_fd < 0) {
            log_err("vm %s: vsock timerfd_create: %m", dev->name);
            free(dev);
            return NULL;
        }
        int r = evloop_add(dev->loop, &dev->timer_h, dev->timer_fd, EPOLLIN, timer_cb, dev);
        if (r < 0) {
            log_err("vm %s: vsock timer registration: %s", dev->name, strerror(-r));
            close(dev->timer_fd);
            free(dev);
            return NULL;
        }
        dev->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r = dev->kick_fd < 0 ? -errno
                             : evloop_add(dev->loop, &dev->kick_h, dev->kick_fd, EPOLLIN | EPOLLET, kick_cb, dev);
        if (r < 0) {
            log_err("vm %s: vsock eventfd: %s", dev->name, strerror(-r));
            if (dev->kick_fd >= 0)
                close(dev->kick_fd);
            evloop_del(dev->loop, &dev->timer_h);
            close(dev->timer_fd);
            free(dev);
            return NULL;
        }
    }
    return dev;
}

void vsock_dev_reset(struct vsock_dev *dev, const char *why)
{
    if (!dev)
        return;
    if (!why)
        why = "device reset";
    vsock_dev_enter(dev);
    vsock_route_reset(dev);
    for (struct vlist *l = dev->conns.next; l != &dev->conns; l = l->next) {
        struct vsock_conn *c = vlist_entry(l, struct vsock_conn, all);
        vsock_conn_terminate(c, why, false);
    }
    rstq_release(dev);
    dev->tx_broken = dev->rx_broken = false;
    dev->tx_blocked = dev->tx_more = false;
    dev->fwd_blocked = false;
    dev->fwd_stall_since = 0;
    dev->trim_at_ms = 0;
    if (dev->depth > 1) {  /* called from inside processing: frees happen on the way out */
        dev->depth--;
        return;
    }
    dev->depth = 0;
    free_dead(dev);
    if (dev->timer_fd >= 0) {
        struct itimerspec its = { 0 };
        timerfd_settime(dev->timer_fd, 0, &its, NULL);
        dev->armed_ms = 0;
        dev->timer_live = false;
    }
}

void vsock_dev_free(struct vsock_dev *dev)
{
    if (!dev)
        return;
    vsock_dev_reset(dev, "device destroyed");
    if (dev->timer_fd >= 0) {
        if (dev->loop)
            evloop_del(dev->loop, &dev->timer_h);
        close(dev->timer_fd);
    }
    if (dev->kick_fd >= 0) {
        if (dev->loop)
            evloop_del(dev->loop, &dev->kick_h);
        close(dev->kick_fd);
    }
    /* a timer event may already be fetched in the current batch */
    if (!(dev->loop && evloop_defer_free(dev->loop, free, dev) == 0))
        free(dev);
}

void vsock_dev_queue_event(struct vsock_dev *dev, unsigned qidx)
{
    if (!dev)
        return;
    vsock_dev_enter(dev);
    vsock_conns_expire(dev, vsock_now_ms());
    if (qidx == VSOCK_VQ_TX)
        tx_process(dev);
    /* rx: buffers arrived; pump() in leave fills them either way */
    vsock_dev_leave(dev);
}

void vsock_dev_stats(const struct vsock_dev *dev, struct vsock_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!dev)
        return;
    *out = dev->st;
    out->conns = dev->nconns;
}

uint64_t vsock_dev_cid(const struct vsock_dev *dev)
{
    return dev->cid;
}

const char *vsock_dev_name(const struct vsock_dev *dev)
{
    return dev->name;
}

/* ---- the transport's view of the device ---- */

static uint64_t vu_features(void *opaque)
{
    return 1ull << VIRTIO_VSOCK_F_SEQPACKET;
}

static unsigned vu_queue_count(void *opaque)
{
    return VSOCK_NUM_VQ;
}

/* struct virtio_vsock_config: le64 guest_cid */
static int vu_get_config(void *opaque, uint32_t offset, void *buf, uint32_t len)
{
    struct vsock_dev *dev = opaque;
    uint8_t cfg[8];
    uint64_t cid = htole64(dev->cid);
    memcpy(cfg, &cid, sizeof(cid));
    if (offset > sizeof(cfg) || len > sizeof(cfg) - offset)
        return -EINVAL;
    memcpy(buf, cfg + offset, len);
    return 0;
}

static void vu_queue_event(void *opaque, unsigned qidx)
{
    vsock_dev_queue_event(opaque, qidx);
}

static void vu_stop(void *opaque, const char *why)
{
    vsock_dev_reset(opaque, why);
}

const struct vu_dev_ops vsock_vu_ops = {
    .features = vu_features,
    .queue_count = vu_queue_count,
    .get_config = vu_get_config,
    .queue_event = vu_queue_event,
    .stop = vu_stop,
};
