/* vhost-user request handlers. Messages reaching here passed vu_msg_validate,
 * so payload sizes and fd counts are right; values are still untrusted.
 * Everything device-specific (feature bits, queue count, config space, what
 * a queue event or a stop means) is asked of the device's vu_dev_ops. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "log.h"
#include "vu_internal.h"

/* ---- replies ---- */

static int send_reply(struct vu_backend *be, uint32_t request, const void *payload, uint32_t size)
{
    uint8_t buf[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
    struct vu_msg_hdr h = { request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, size };
    if (size > VHOST_USER_MAX_PAYLOAD || be->conn_fd < 0)
        return VU_FATAL;
    memcpy(buf, &h, sizeof(h));
    if (size)
        memcpy(buf + sizeof(h), payload, size);
    size_t len = sizeof(h) + size;
    /* Non-blocking: a front-end that does not read its replies is dropped. */
    ssize_t n = send(be->conn_fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != (ssize_t)len) {
        vu_warn(be, "vm %s: cannot send %s reply: %s", be->name, vu_request_name(request),
                 n < 0 ? strerror(errno) : "short write");
        return VU_FATAL;
    }
    return 0;
}

static int reply_u64(struct vu_backend *be, uint32_t request, uint64_t v)
{
    return send_reply(be, request, &v, sizeof(v));
}

/* ---- helpers ---- */

uint64_t vu_offered_features(const struct vu_backend *be)
{
    return VU_TRANSPORT_FEATURES | (be->ops && be->ops->features ? be->ops->features(be->dev) : 0);
}

void vu_stop_kick(struct vu_backend *be, unsigned q)
{
    if (be->loop)
        evloop_del(be->loop, &be->kick[q].h); /* before close: the fd is shared with QEMU/KVM */
    if (be->vq[q].kick_fd >= 0)
        close(be->vq[q].kick_fd);
    be->vq[q].kick_fd = -1;
}

void vu_queue_event(struct vu_backend *be, unsigned q)
{
    if (virtq_ready(&be->vq[q]) && be->ops && be->ops->queue_event)
        be->ops->queue_event(be->dev, q);
}

static void device_stop(struct vu_backend *be, const char *why)
{
    /* with the front-end gone this is part of VM_DISCONNECTED */
    if (be->dev_running && be->conn_fd >= 0)
        vu_event(be, EV_VM_RESET, why);
    be->dev_running = false;
    if (be->ops && be->ops->stop)
        be->ops->stop(be->dev, why);
}

static void on_kick(void *opaque, uint32_t events)
{
    struct vu_kick *k = opaque;
    /* An eventfd never hangs up; a kick fd that does is not what the
     * front-end promised, and level-triggered epoll would report it forever. */
    if (events & (EPOLLHUP | EPOLLERR)) {
        vu_warn(k->be, "vm %s: kick fd of vq %u hung up: protocol violation", k->be->name, k->qidx);
        vu_backend_disconnect(k->be, "kick fd hung up");
        return;
    }
    virtq_drain_kick(&k->be->vq[k->qidx]);
    vu_queue_event(k->be, k->qidx);
}

#define VU_POLL_NS 10000000L /* 10 ms */

static void on_poll(void *opaque, uint32_t events)
{
    struct vu_backend *be = opaque;
    uint64_t ticks;
    if (read(be->poll_fd, &ticks, sizeof(ticks)) < 0) {
        /* spurious wakeup: nothing to drain */
    }
    /* Act like a kick when the driver published new buffers since the last tick. */
    for (unsigned q = 0; q < be->nq; q++) {
        struct virtq *vq = &be->vq[q];
        if (vq->kick_fd >= 0 || !virtq_ready(vq))
            continue;
        uint16_t idx = virtq_avail_idx(vq);
        if (idx != be->polled_avail[q]) {
            be->polled_avail[q] = idx;
            vu_queue_event(be, q);
        }
    }
}

int vu_watch_kick(struct vu_backend *be, unsigned q)
{
    return be->loop ? evloop_add(be->loop, &be->kick[q].h, be->vq[q].kick_fd, EPOLLIN, on_kick, &be->kick[q]) : 0;
}

/* Run the poll timer exactly while some started ring has no kick fd. */
void vu_update_poll(struct vu_backend *be)
{
    bool need = false;
    for (unsigned q = 0; q < be->nq; q++)
        need |= be->vq[q].started && be->vq[q].kick_fd < 0;
    if (need && be->poll_fd < 0 && be->loop) {
        int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct itimerspec its = { { 0, VU_POLL_NS }, { 0, VU_POLL_NS } };
        if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0 ||
            evloop_add(be->loop, &be->poll_h, fd, EPOLLIN, on_poll, be) < 0) {
            vu_warn(be, "vm %s: cannot start ring polling for NOFD kick", be->name);
            if (fd >= 0)
                close(fd);
            return;
        }
        be->poll_fd = fd;
        log_debug("vm %s: polling rings (no kick fd)", be->name);
    } else if (!need && be->poll_fd >= 0) {
        evloop_del(be->loop, &be->poll_h);
        close(be->poll_fd);
        be->poll_fd = -1;
    }
}

/* Memory changed: re-translate ring addresses, let the device look again. */
static void remap_rings(struct vu_backend *be)
{
    for (unsigned q = 0; q < be->nq; q++) {
        struct virtq *vq = &be->vq[q];
        if (!vq->desc_uva && !vq->avail_uva && !vq->used_uva)
            continue;
        if (virtq_map_rings(vq) < 0) {
            if (vq->started)
                vu_warn(be, "vm %s: vq %u rings not in the new memory table", be->name, q);
            continue;
        }
        vu_queue_event(be, q);
    }
}

void vu_device_teardown(struct vu_backend *be, const char *why)
{
    device_stop(be, why);
    for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
        vu_stop_kick(be, q);
        virtq_reset(&be->vq[q]);
    }
    vu_update_poll(be);
}

static int vring_index(struct vu_backend *be, uint32_t index, const char *req)
{
    if (index >= be->nq) {
        vu_warn(be, "vm %s: %s for vq %u refused (the device serves %u queues)", be->name, req, index, be->nq);
        return -EINVAL;
    }
    return (int)index;
}

/* Take an fd out of the message, making it non-blocking and close-on-exec. */
static int take_fd(int *fds, unsigned i)
{
    int fd = fds[i];
    fds[i] = -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return fd;
}

/* Kick, call and error fds are eventfds (vhost-user spec). Anything else (a
 * pipe whose writer is gone, a socket, a file) could hang up or never drain. */
bool vu_is_eventfd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n <= 0)
        return false;
    target[n] = 0;
    return strcmp(target, "anon_inode:[eventfd]") == 0;
}

/* A region's file must not be able to shrink under hostd: every access to
 * the lost tail would be a SIGBUS that kills hostd and every VM it serves
 * (the size is checked once, in memtable_add). QEMU's memory-backend-memfd
 * seals against shrinking by default; a sealable memfd without the seal gets
 * it here. Anything that cannot be sealed (memory-backend-file, hugetlbfs
 * files, plain shared memory) is refused: memory-backend-memfd,hugetlb=on
 * gives huge pages with sealing. Takes fd (closed on failure). */
int vu_region_fd_sealed(struct vu_backend *be, int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals >= 0 && (seals & F_SEAL_SHRINK))
        return 0;
    if (seals >= 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0)
        return 0;
    vu_warn(be, "vm %s: memory region fd cannot be sealed against shrinking (%s): refused; use "
             "memory-backend-memfd", be->name, seals < 0 ? "not a memfd" : "sealing not allowed");
    close(fd);
    return -EPERM;
}

/* ---- handlers: return 0 / -errno (failure, NACKed) / VU_FATAL ---- */

static int h_set_features(struct vu_backend *be, const uint8_t *p)
{
    uint64_t f;
    memcpy(&f, p, sizeof(f));
    if (f & ~vu_offered_features(be)) {
        vu_warn(be, "vm %s: SET_FEATURES 0x%llx has unoffered bits", be->name, (unsigned long long)f);
        return -EINVAL;
    }
    be->features = f;
    for (unsigned q = 0; q < be->nq; q++) {
        struct virtq *vq = &be->vq[q];
        vq->event_idx = f & (1ull << VIRTIO_RING_F_EVENT_IDX);
        vq->indirect = f & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
        /* without PROTOCOL_FEATURES rings start enabled (vhost-user spec) */
        if (!(f & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)))
            vq->enabled = true;
    }
    remap_rings(be); /* ring sizes depend on EVENT_IDX */
    return 0;
}

static int h_set_protocol_features(struct vu_backend *be, const uint8_t *p)
{
    uint64_t f;
    memcpy(&f, p, sizeof(f));
    if (f & ~VU_OFFERED_PROTOCOL_FEATURES) {
        vu_warn(be, "vm %s: SET_PROTOCOL_FEATURES 0x%llx has unoffered bits", be->name, (unsigned long long)f);
        return -EINVAL;
    }
    be->protocol_features = f;
    return 0;
}

static int h_set_mem_table(struct vu_backend *be, const uint8_t *p, int *fds, unsigned nfds)
{
    uint32_t n;
    memcpy(&n, p, sizeof(n));
    /* Build the new table aside so that a bad request leaves the old one intact. */
    struct memtable *nt = malloc(sizeof(*nt));
    if (!nt)
        return -ENOMEM;
    memtable_init(nt);
    for (uint32_t i = 0; i < n && i < nfds; i++) {
        struct vu_region r;
        memcpy(&r, p + 8 + i * sizeof(r), sizeof(r));
        int fd = fds[i];
        fds[i] = -1;
        int ret = vu_region_fd_sealed(be, fd);
        if (ret == 0)
            ret = memtable_add(nt, r.gpa, r.size, r.uva, r.mmap_offset, fd);
        if (ret < 0) {
            vu_warn(be, "vm %s: SET_MEM_TABLE region %u refused: %s", be->name, i, strerror(-ret));
            memtable_clear(nt);
            free(nt);
            return ret;
        }
    }
    uint64_t gen = be->mem.generation;
    memtable_clear(&be->mem);
    be->mem = *nt;
    be->mem.generation = gen + 2 + nt->generation; /* strictly newer than anything cached */
    free(nt);
    log_info("vm %s: memory table: %u regions, %llu MiB", be->name, be->mem.n,
             (unsigned long long)(memtable_total(&be->mem) >> 20));
    remap_rings(be);
    return 0;
}

static int h_add_mem_reg(struct vu_backend *be, const uint8_t *p, int *fds)
{
    struct vu_mem_reg m;
    memcpy(&m, p, sizeof(m));
    int fd = fds[0];
    fds[0] = -1;
    /* Re-adding an identical region is harmless: accept it, keep the mapping we have. */
    for (unsigned i = 0; i < be->mem.n; i++) {
        const struct mem_region *r = &be->mem.r[i];
        if (r->gpa == m.r.gpa && r->size == m.r.size && r->uva == m.r.uva && r->mmap_offset == m.r.mmap_offset) {
            close(fd);
            return 0;
        }
    }
    if (be->mem.n >= VU_MAX_MEM_SLOTS) {
        close(fd);
        vu_warn(be, "vm %s: ADD_MEM_REG: all %u slots used", be->name, VU_MAX_MEM_SLOTS);
        return -ENOSPC;
    }
    int ret = vu_region_fd_sealed(be, fd);
    if (ret == 0)
        ret = memtable_add(&be->mem, m.r.gpa, m.r.size, m.r.uva, m.r.mmap_offset, fd);
    if (ret < 0)
        return ret;
    remap_rings(be);
    return 0;
}

static int h_rem_mem_reg(struct vu_backend *be, const uint8_t *p)
{
    struct vu_mem_reg m;
    memcpy(&m, p, sizeof(m));
    int ret = memtable_remove(&be->mem, m.r.gpa, m.r.size, m.r.uva);
    if (ret < 0)
        return ret;
    remap_rings(be);
    return 0;
}

static int h_vring_num(struct vu_backend *be, const struct vu_vring_state *s)
{
    int q = vring_index(be, s->index, "SET_VRING_NUM");
    if (q < 0)
        return q;
    if (s->num == 0 || s->num > VIRTQ_MAX_SIZE || (s->num & (s->num - 1))) {
        vu_warn(be, "vm %s: SET_VRING_NUM %u invalid", be->name, s->num);
        return -EINVAL;
    }
    if (be->vq[q].started) {
        vu_warn(be, "vm %s: SET_VRING_NUM on running vq %d", be->name, q);
        return -EBUSY;
    }
    struct virtq *vq = &be->vq[q];
    vq->num = (uint16_t)s->num;
    /* Ring sizes follow num: rings mapped for the old size must be checked
     * again (a bigger ring may no longer fit in guest memory). */
    if (vq->desc_uva || vq->avail_uva || vq->used_uva)
        (void)virtq_map_rings(vq);
    return 0;
}

static int h_vring_addr(struct vu_backend *be, const uint8_t *p)
{
    struct vu_vring_addr a;
    memcpy(&a, p, sizeof(a));
    int q = vring_index(be, a.index, "SET_VRING_ADDR");
    if (q < 0)
        return q;
    struct virtq *vq = &be->vq[q];
    vq->desc_uva = a.desc;
    vq->avail_uva = a.avail;
    vq->used_uva = a.used;
    vq->addr_flags = a.flags;
    int ret = virtq_map_rings(vq);
    if (ret < 0)
        return ret;
    vu_queue_event(be, (unsigned)q);
    return 0;
}

static int h_vring_base(struct vu_backend *be, const struct vu_vring_state *s)
{
    int q = vring_index(be, s->index, "SET_VRING_BASE");
    if (q < 0)
        return q;
    if (s->num > 0xffff || be->vq[q].started)
        return -EINVAL;
    be->vq[q].last_avail_idx = (uint16_t)s->num;
    be->vq[q].signalled_used_valid = false;
    return 0;
}

static int h_get_vring_base(struct vu_backend *be, const struct vu_vring_state *s)
{
    int q = vring_index(be, s->index, "GET_VRING_BASE");
    struct vu_vring_state r = { s->index, 0 };
    if (q >= 0) {
        struct virtq *vq = &be->vq[q];
        r.num = vq->last_avail_idx;
        bool was_running = vq->started;
        /* Stop the ring; keep last_avail_idx, num and negotiated flags. */
        vu_stop_kick(be, (unsigned)q);
        vq->started = false;
        vq->enabled = false;
        vq->broken = false;
        vu_update_poll(be);
        /* The device is stopping (guest reset/reboot, QEMU stop). */
        if (was_running) {
            log_info("vm %s: vq %d stopped at avail idx %u", be->name, q, r.num);
            device_stop(be, "vring stopped");
        }
    }
    /* Always answer: QEMU waits for this reply. */
    return send_reply(be, VHOST_USER_GET_VRING_BASE, &r, sizeof(r));
}

static int h_vring_fd(struct vu_backend *be, uint32_t req, const uint8_t *p, int *fds, unsigned nfds)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    int q = vring_index(be, (uint32_t)(v & VHOST_USER_VRING_IDX_MASK), vu_request_name(req));
    if (q < 0)
        return q;
    struct virtq *vq = &be->vq[q];
    int fd = (v & VHOST_USER_VRING_NOFD_MASK) || nfds == 0 ? -1 : take_fd(fds, 0);
    if (fd >= 0 && !vu_is_eventfd(fd)) {
        vu_warn(be, "vm %s: %s for vq %d: the fd is not an eventfd", be->name, vu_request_name(req), q);
        close(fd);
        return -EINVAL;
    }

    if (req == VHOST_USER_SET_VRING_CALL) {
        if (vq->call_fd >= 0)
            close(vq->call_fd);
        vq->call_fd = fd;
        vq->signalled_used_valid = false;
        return 0;
    }
    if (req == VHOST_USER_SET_VRING_ERR) {
        if (vq->err_fd >= 0)
            close(vq->err_fd);
        vq->err_fd = fd;
        return 0;
    }
    /* SET_VRING_KICK starts the ring; with NOFD the ring is scanned when
     * enabled and whenever the device runs (no kicks arrive). */
    vu_stop_kick(be, (unsigned)q);
    vq->kick_fd = fd;
    if (fd >= 0) {
        int ret = vu_watch_kick(be, (unsigned)q);
        if (ret < 0) {
            vu_warn(be, "vm %s: cannot watch kick fd of vq %d: %s", be->name, q, strerror(-ret));
            close(fd);
            vq->kick_fd = -1;
            return ret;
        }
    }
    vq->started = true;
    vq->broken = false;
    be->dev_running = true;
    vu_update_poll(be);
    vu_queue_event(be, (unsigned)q);
    return 0;
}

static int h_vring_enable(struct vu_backend *be, const struct vu_vring_state *s)
{
    int q = vring_index(be, s->index, "SET_VRING_ENABLE");
    if (q < 0)
        return q;
    if (s->num > 1)
        return -EINVAL;
    struct virtq *vq = &be->vq[q];
    vq->enabled = s->num == 1;
    if (s->num) {
        log_info("vm %s: vq %d enabled: num %u, avail idx %u, %s%s%s", be->name, q, vq->num, vq->last_avail_idx,
                 vq->desc ? "mapped" : "NOT MAPPED", vq->event_idx ? ", event_idx" : "",
                 vq->indirect ? ", indirect" : "");
        vu_queue_event(be, (unsigned)q); /* scan on enable, not only on kick */
    }
    return 0;
}

static int h_get_config(struct vu_backend *be, const uint8_t *p)
{
    struct vu_config c;
    memcpy(&c, p, sizeof(c));
    uint8_t out[sizeof(struct vu_config) + VHOST_USER_MAX_PAYLOAD - sizeof(struct vu_config)];
    uint32_t room = (uint32_t)(sizeof(out) - sizeof(c));
    if (c.size == 0 || c.size > room || !be->ops || !be->ops->get_config ||
        be->ops->get_config(be->dev, c.offset, out + sizeof(c), c.size) < 0) {
        vu_warn(be, "vm %s: GET_CONFIG offset %u size %u out of range", be->name, c.offset, c.size);
        return send_reply(be, VHOST_USER_GET_CONFIG, NULL, 0); /* empty payload = error */
    }
    memcpy(out, &c, sizeof(c));
    return send_reply(be, VHOST_USER_GET_CONFIG, out, (uint32_t)(sizeof(c) + c.size));
}

static int dispatch(struct vu_backend *be, const struct vu_msg_hdr *hdr, const uint8_t *p, int *fds, unsigned nfds)
{
    struct vu_vring_state s = { 0, 0 };
    if (hdr->size == sizeof(s))
        memcpy(&s, p, sizeof(s));

    switch (hdr->request) {
    case VHOST_USER_GET_FEATURES:
        return reply_u64(be, hdr->request, vu_offered_features(be));
    case VHOST_USER_SET_FEATURES:
        return h_set_features(be, p);
    case VHOST_USER_GET_PROTOCOL_FEATURES:
        return reply_u64(be, hdr->request, VU_OFFERED_PROTOCOL_FEATURES);
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        return h_set_protocol_features(be, p);
    case VHOST_USER_SET_OWNER:
        be->owner_set = true;
        return 0;
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_RESET_DEVICE:
        vu_device_teardown(be, vu_request_name(hdr->request));
        be->features = 0;
        if (hdr->request == VHOST_USER_RESET_OWNER)
            be->owner_set = false;
        return 0;
    case VHOST_USER_GET_QUEUE_NUM:
        return reply_u64(be, hdr->request, be->nq);
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return reply_u64(be, hdr->request, VU_MAX_MEM_SLOTS);
    case VHOST_USER_SET_MEM_TABLE:
        return h_set_mem_table(be, p, fds, nfds);
    case VHOST_USER_ADD_MEM_REG:
        return h_add_mem_reg(be, p, fds);
    case VHOST_USER_REM_MEM_REG:
        return h_rem_mem_reg(be, p);
    case VHOST_USER_SET_VRING_NUM:
        return h_vring_num(be, &s);
    case VHOST_USER_SET_VRING_ADDR:
        return h_vring_addr(be, p);
    case VHOST_USER_SET_VRING_BASE:
        return h_vring_base(be, &s);
    case VHOST_USER_GET_VRING_BASE:
        return h_get_vring_base(be, &s);
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return h_vring_fd(be, hdr->request, p, fds, nfds);
    case VHOST_USER_SET_VRING_ENABLE:
        return h_vring_enable(be, &s);
    case VHOST_USER_GET_CONFIG:
        return h_get_config(be, p);
    case VHOST_USER_SET_CONFIG:
        vu_warn(be, "vm %s: SET_CONFIG refused (config space is read-only)", be->name);
        return -EPERM;
    case VHOST_USER_SET_LOG_BASE:
    case VHOST_USER_SET_LOG_FD:
        vu_warn(be, "vm %s: %s refused (dirty logging not offered)", be->name, vu_request_name(hdr->request));
        return -ENOTSUP;
    default:
        return VU_FATAL; /* unreachable: validate refuses unknown requests */
    }
}

int vu_process_msg(struct vu_backend *be, const struct vu_msg_hdr *hdr, const uint8_t *payload, int *fds, unsigned nfds)
{
    int ret = vu_msg_validate(hdr, payload, nfds);
    if (ret < 0) {
        vu_warn(be, "vm %s: invalid vhost-user message: request %u (%s) flags 0x%x size %u fds %u",
                 be->name, hdr->request, vu_request_name(hdr->request), hdr->flags, hdr->size, nfds);
        ret = VU_FATAL;
        goto out;
    }
    log_debug("vm %s: %s size %u fds %u", be->name, vu_request_name(hdr->request), hdr->size, nfds);
    ret = dispatch(be, hdr, payload, fds, nfds);
    if (ret == VU_FATAL)
        goto out;
    if (ret < 0)
        vu_warn(be, "vm %s: %s failed: %s", be->name, vu_request_name(hdr->request), strerror(-ret));
    if ((hdr->flags & VHOST_USER_NEED_REPLY_MASK) && !vu_request_has_reply(hdr->request) &&
        (be->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK))) {
        ret = reply_u64(be, hdr->request, ret < 0 ? 1 : 0);
        goto out;
    }
    ret = 0;
out:
    for (unsigned i = 0; i < nfds; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
    return ret;
}
