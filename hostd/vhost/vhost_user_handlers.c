/* vhost-user request handlers for the vsock device (rx = vq 0, tx = vq 1;
 * QEMU keeps the event queue). Messages reaching here passed vu_msg_validate,
 * so payload sizes and fd counts are right; values are still untrusted. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "log.h"
#include "mdl_services.h"
#include "vsock.h"
#include "vu_internal.h"

/* ---- replies ---- */

static int send_reply(struct vm *vm, uint32_t request, const void *payload, uint32_t size)
{
    uint8_t buf[VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD];
    struct vu_msg_hdr h = { request, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, size };
    if (size > VHOST_USER_MAX_PAYLOAD || vm->conn_fd < 0)
        return VU_FATAL;
    memcpy(buf, &h, sizeof(h));
    if (size)
        memcpy(buf + sizeof(h), payload, size);
    size_t len = sizeof(h) + size;
    /* Non-blocking: a front-end that does not read its replies is dropped. */
    ssize_t n = send(vm->conn_fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n != (ssize_t)len) {
        log_warn("vm %s: cannot send %s reply: %s", vm->name, vu_request_name(request),
                 n < 0 ? strerror(errno) : "short write");
        return VU_FATAL;
    }
    return 0;
}

static int reply_u64(struct vm *vm, uint32_t request, uint64_t v)
{
    return send_reply(vm, request, &v, sizeof(v));
}

/* ---- helpers ---- */

static struct evloop *vm_loop(const struct vm *vm)
{
    return vm->hostd ? vm->hostd->loop : NULL;
}

static void stop_kick(struct vm *vm, unsigned q)
{
    evloop_del(vm_loop(vm), &vm->kick_h[q]); /* before close: the fd is shared with QEMU/KVM */
    if (vm->vq[q].kick_fd >= 0)
        close(vm->vq[q].kick_fd);
    vm->vq[q].kick_fd = -1;
}

static void queue_event(struct vm *vm, unsigned q)
{
    if (virtq_ready(&vm->vq[q]))
        vsock_dev_queue_event(vm, q);
}

static void on_kick(void *opaque, uint32_t events)
{
    struct virtq *vq = opaque;
    struct vm *vm = (struct vm *)(void *)((char *)(vq - vq->index) - offsetof(struct vm, vq));
    virtq_drain_kick(vq);
    queue_event(vm, vq->index);
}

struct vu_conn *vu_conn_get(struct vm *vm)
{
    if (!vm->vu) {
        vm->vu = calloc(1, sizeof(*vm->vu));
        if (vm->vu)
            vm->vu->poll_fd = -1;
    }
    return vm->vu;
}

#define VU_POLL_NS 10000000L /* 10 ms */

static void on_poll(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    uint64_t ticks;
    if (read(vm->vu->poll_fd, &ticks, sizeof(ticks)) < 0) {
        /* spurious wakeup: nothing to drain */
    }
    /* Act like a kick when the driver published new buffers since the last tick. */
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++) {
        struct virtq *vq = &vm->vq[q];
        if (vq->kick_fd >= 0 || !virtq_ready(vq))
            continue;
        uint16_t idx;
        memcpy(&idx, (const uint8_t *)vq->avail + 2, sizeof(idx));
        if (idx != vm->vu->polled_avail[q]) {
            vm->vu->polled_avail[q] = idx;
            vsock_dev_queue_event(vm, q);
        }
    }
}

/* Run the poll timer exactly while some started ring has no kick fd. */
static void update_poll(struct vm *vm)
{
    bool need = false;
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++)
        need |= vm->vq[q].started && vm->vq[q].kick_fd < 0;
    struct vu_conn *c = need ? vu_conn_get(vm) : vm->vu;
    if (!c)
        return;
    if (need && c->poll_fd < 0) {
        int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct itimerspec its = { { 0, VU_POLL_NS }, { 0, VU_POLL_NS } };
        if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0 ||
            evloop_add(vm_loop(vm), &c->poll_h, fd, EPOLLIN, on_poll, vm) < 0) {
            log_warn("vm %s: cannot start ring polling for NOFD kick", vm->name);
            if (fd >= 0)
                close(fd);
            return;
        }
        c->poll_fd = fd;
        log_debug("vm %s: polling rings (no kick fd)", vm->name);
    } else if (!need && c->poll_fd >= 0) {
        evloop_del(vm_loop(vm), &c->poll_h);
        close(c->poll_fd);
        c->poll_fd = -1;
    }
}

/* Memory changed: re-translate ring addresses, let the device look again. */
static void remap_rings(struct vm *vm)
{
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++) {
        struct virtq *vq = &vm->vq[q];
        if (!vq->desc_uva && !vq->avail_uva && !vq->used_uva)
            continue;
        if (virtq_map_rings(vq) < 0) {
            if (vq->started)
                log_warn("vm %s: vq %u rings not in the new memory table", vm->name, q);
            continue;
        }
        queue_event(vm, q);
    }
}

void vu_device_teardown(struct vm *vm, const char *why)
{
    if (vm->vsock)
        vsock_dev_reset(vm, why);
    if (vm->hostd)
        mdl_services_vm_reset(vm->hostd, vm, why);
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++) {
        stop_kick(vm, q);
        virtq_reset(&vm->vq[q]);
    }
    update_poll(vm);
    vm->instance++;
}

static int vring_index(const struct vm *vm, uint32_t index, const char *req)
{
    if (index >= VSOCK_NUM_VQ) {
        log_warn("vm %s: %s for vq %u refused (backend serves rx/tx only)", vm->name, req, index);
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

/* ---- handlers: return 0 / -errno (failure, NACKed) / VU_FATAL ---- */

static int h_set_features(struct vm *vm, const uint8_t *p)
{
    uint64_t f;
    memcpy(&f, p, sizeof(f));
    if (f & ~VU_OFFERED_FEATURES) {
        log_warn("vm %s: SET_FEATURES 0x%llx has unoffered bits", vm->name, (unsigned long long)f);
        return -EINVAL;
    }
    vm->features = f;
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++) {
        struct virtq *vq = &vm->vq[q];
        vq->event_idx = f & (1ull << VIRTIO_RING_F_EVENT_IDX);
        vq->indirect = f & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
        /* without PROTOCOL_FEATURES rings start enabled (vhost-user spec) */
        if (!(f & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)))
            vq->enabled = true;
    }
    remap_rings(vm); /* ring sizes depend on EVENT_IDX */
    return 0;
}

static int h_set_protocol_features(struct vm *vm, const uint8_t *p)
{
    uint64_t f;
    memcpy(&f, p, sizeof(f));
    if (f & ~VU_OFFERED_PROTOCOL_FEATURES) {
        log_warn("vm %s: SET_PROTOCOL_FEATURES 0x%llx has unoffered bits", vm->name, (unsigned long long)f);
        return -EINVAL;
    }
    vm->protocol_features = f;
    return 0;
}

static int h_set_mem_table(struct vm *vm, const uint8_t *p, int *fds, unsigned nfds)
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
        int ret = memtable_add(nt, r.gpa, r.size, r.uva, r.mmap_offset, fd);
        if (ret < 0) {
            log_warn("vm %s: SET_MEM_TABLE region %u refused: %s", vm->name, i, strerror(-ret));
            memtable_clear(nt);
            free(nt);
            return ret;
        }
    }
    uint64_t gen = vm->mem.generation;
    memtable_clear(&vm->mem);
    vm->mem = *nt;
    vm->mem.generation = gen + 2 + nt->generation; /* strictly newer than anything cached */
    free(nt);
    log_info("vm %s: memory table: %u regions, %llu MiB", vm->name, vm->mem.n,
             (unsigned long long)(memtable_total(&vm->mem) >> 20));
    remap_rings(vm);
    return 0;
}

static int h_add_mem_reg(struct vm *vm, const uint8_t *p, int *fds)
{
    struct vu_mem_reg m;
    memcpy(&m, p, sizeof(m));
    int fd = fds[0];
    fds[0] = -1;
    /* Re-adding an identical region is harmless: accept it, keep the mapping we have. */
    for (unsigned i = 0; i < vm->mem.n; i++) {
        const struct mem_region *r = &vm->mem.r[i];
        if (r->gpa == m.r.gpa && r->size == m.r.size && r->uva == m.r.uva && r->mmap_offset == m.r.mmap_offset) {
            close(fd);
            return 0;
        }
    }
    if (vm->mem.n >= VU_MAX_MEM_SLOTS) {
        close(fd);
        log_warn("vm %s: ADD_MEM_REG: all %u slots used", vm->name, VU_MAX_MEM_SLOTS);
        return -ENOSPC;
    }
    int ret = memtable_add(&vm->mem, m.r.gpa, m.r.size, m.r.uva, m.r.mmap_offset, fd);
    if (ret < 0)
        return ret;
    remap_rings(vm);
    return 0;
}

static int h_rem_mem_reg(struct vm *vm, const uint8_t *p)
{
    struct vu_mem_reg m;
    memcpy(&m, p, sizeof(m));
    int ret = memtable_remove(&vm->mem, m.r.gpa, m.r.size, m.r.uva);
    if (ret < 0)
        return ret;
    remap_rings(vm);
    return 0;
}

static int h_vring_num(struct vm *vm, const struct vu_vring_state *s)
{
    int q = vring_index(vm, s->index, "SET_VRING_NUM");
    if (q < 0)
        return q;
    if (s->num == 0 || s->num > VIRTQ_MAX_SIZE || (s->num & (s->num - 1))) {
        log_warn("vm %s: SET_VRING_NUM %u invalid", vm->name, s->num);
        return -EINVAL;
    }
    if (vm->vq[q].started) {
        log_warn("vm %s: SET_VRING_NUM on running vq %d", vm->name, q);
        return -EBUSY;
    }
    struct virtq *vq = &vm->vq[q];
    vq->num = (uint16_t)s->num;
    /* Ring sizes follow num: rings mapped for the old size must be checked
     * again (a bigger ring may no longer fit in guest memory). */
    if (vq->desc_uva || vq->avail_uva || vq->used_uva)
        (void)virtq_map_rings(vq);
    return 0;
}

static int h_vring_addr(struct vm *vm, const uint8_t *p)
{
    struct vu_vring_addr a;
    memcpy(&a, p, sizeof(a));
    int q = vring_index(vm, a.index, "SET_VRING_ADDR");
    if (q < 0)
        return q;
    struct virtq *vq = &vm->vq[q];
    vq->desc_uva = a.desc;
    vq->avail_uva = a.avail;
    vq->used_uva = a.used;
    vq->addr_flags = a.flags;
    int ret = virtq_map_rings(vq);
    if (ret < 0)
        return ret;
    queue_event(vm, (unsigned)q);
    return 0;
}

static int h_vring_base(struct vm *vm, const struct vu_vring_state *s)
{
    int q = vring_index(vm, s->index, "SET_VRING_BASE");
    if (q < 0)
        return q;
    if (s->num > 0xffff || vm->vq[q].started)
        return -EINVAL;
    vm->vq[q].last_avail_idx = (uint16_t)s->num;
    vm->vq[q].signalled_used_valid = false;
    return 0;
}

static int h_get_vring_base(struct vm *vm, const struct vu_vring_state *s)
{
    int q = vring_index(vm, s->index, "GET_VRING_BASE");
    struct vu_vring_state r = { s->index, 0 };
    if (q >= 0) {
        struct virtq *vq = &vm->vq[q];
        r.num = vq->last_avail_idx;
        bool was_running = vq->started;
        /* Stop the ring; keep last_avail_idx, num and negotiated flags. */
        stop_kick(vm, (unsigned)q);
        vq->started = false;
        vq->enabled = false;
        vq->broken = false;
        update_poll(vm);
        /* The device is stopping (guest reset/reboot, QEMU stop): drop its connections and mappings. */
        if (was_running) {
            log_info("vm %s: vq %d stopped at avail idx %u", vm->name, q, r.num);
            if (vm->vsock)
                vsock_dev_reset(vm, "vring stopped");
            if (vm->hostd)
                mdl_services_vm_reset(vm->hostd, vm, "vring stopped");
            vm->instance++;
        }
    }
    /* Always answer: QEMU waits for this reply. */
    return send_reply(vm, VHOST_USER_GET_VRING_BASE, &r, sizeof(r));
}

static int h_vring_fd(struct vm *vm, uint32_t req, const uint8_t *p, int *fds, unsigned nfds)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    int q = vring_index(vm, (uint32_t)(v & VHOST_USER_VRING_IDX_MASK), vu_request_name(req));
    if (q < 0)
        return q;
    struct virtq *vq = &vm->vq[q];
    int fd = (v & VHOST_USER_VRING_NOFD_MASK) || nfds == 0 ? -1 : take_fd(fds, 0);

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
    stop_kick(vm, (unsigned)q);
    vq->kick_fd = fd;
    if (fd >= 0) {
        int ret = evloop_add(vm_loop(vm), &vm->kick_h[q], fd, EPOLLIN, on_kick, vq);
        if (ret < 0) {
            log_warn("vm %s: cannot watch kick fd of vq %d: %s", vm->name, q, strerror(-ret));
            close(fd);
            vq->kick_fd = -1;
            return ret;
        }
    }
    vq->started = true;
    vq->broken = false;
    update_poll(vm);
    queue_event(vm, (unsigned)q);
    return 0;
}

static int h_vring_enable(struct vm *vm, const struct vu_vring_state *s)
{
    int q = vring_index(vm, s->index, "SET_VRING_ENABLE");
    if (q < 0)
        return q;
    if (s->num > 1)
        return -EINVAL;
    struct virtq *vq = &vm->vq[q];
    vq->enabled = s->num == 1;
    if (s->num) {
        log_info("vm %s: vq %d enabled: num %u, avail idx %u, %s%s%s", vm->name, q, vq->num, vq->last_avail_idx,
                 vq->desc ? "mapped" : "NOT MAPPED", vq->event_idx ? ", event_idx" : "",
                 vq->indirect ? ", indirect" : "");
        queue_event(vm, (unsigned)q); /* scan on enable, not only on kick */
    }
    return 0;
}

static int h_get_config(struct vm *vm, const uint8_t *p)
{
    struct vu_config c;
    memcpy(&c, p, sizeof(c));
    uint8_t cfg[8];
    uint64_t cid = vm->cid; /* le64 guest_cid; x86 is little-endian */
    memcpy(cfg, &cid, sizeof(cid));
    if (c.size == 0 || c.offset > sizeof(cfg) || c.size > sizeof(cfg) - c.offset) {
        log_warn("vm %s: GET_CONFIG offset %u size %u out of range", vm->name, c.offset, c.size);
        return send_reply(vm, VHOST_USER_GET_CONFIG, NULL, 0); /* empty payload = error */
    }
    uint8_t out[sizeof(struct vu_config) + sizeof(cfg)];
    memcpy(out, &c, sizeof(c));
    memcpy(out + sizeof(c), cfg + c.offset, c.size);
    return send_reply(vm, VHOST_USER_GET_CONFIG, out, (uint32_t)(sizeof(c) + c.size));
}

/* Does this request have a reply of its own (so REPLY_ACK does not apply)? */
static bool has_own_reply(uint32_t req)
{
    switch (req) {
    case VHOST_USER_GET_FEATURES:
    case VHOST_USER_GET_PROTOCOL_FEATURES:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_GET_QUEUE_NUM:
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return true;
    default:
        return false;
    }
}

static int dispatch(struct vm *vm, const struct vu_msg_hdr *hdr, const uint8_t *p, int *fds, unsigned nfds)
{
    struct vu_vring_state s = { 0, 0 };
    if (hdr->size == sizeof(s))
        memcpy(&s, p, sizeof(s));

    switch (hdr->request) {
    case VHOST_USER_GET_FEATURES:
        return reply_u64(vm, hdr->request, VU_OFFERED_FEATURES);
    case VHOST_USER_SET_FEATURES:
        return h_set_features(vm, p);
    case VHOST_USER_GET_PROTOCOL_FEATURES:
        return reply_u64(vm, hdr->request, VU_OFFERED_PROTOCOL_FEATURES);
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        return h_set_protocol_features(vm, p);
    case VHOST_USER_SET_OWNER:
        vm->owner_set = true;
        return 0;
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_RESET_DEVICE:
        vu_device_teardown(vm, vu_request_name(hdr->request));
        vm->features = 0;
        if (hdr->request == VHOST_USER_RESET_OWNER)
            vm->owner_set = false;
        return 0;
    case VHOST_USER_GET_QUEUE_NUM:
        return reply_u64(vm, hdr->request, VSOCK_NUM_VQ);
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return reply_u64(vm, hdr->request, VU_MAX_MEM_SLOTS);
    case VHOST_USER_SET_MEM_TABLE:
        return h_set_mem_table(vm, p, fds, nfds);
    case VHOST_USER_ADD_MEM_REG:
        return h_add_mem_reg(vm, p, fds);
    case VHOST_USER_REM_MEM_REG:
        return h_rem_mem_reg(vm, p);
    case VHOST_USER_SET_VRING_NUM:
        return h_vring_num(vm, &s);
    case VHOST_USER_SET_VRING_ADDR:
        return h_vring_addr(vm, p);
    case VHOST_USER_SET_VRING_BASE:
        return h_vring_base(vm, &s);
    case VHOST_USER_GET_VRING_BASE:
        return h_get_vring_base(vm, &s);
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return h_vring_fd(vm, hdr->request, p, fds, nfds);
    case VHOST_USER_SET_VRING_ENABLE:
        return h_vring_enable(vm, &s);
    case VHOST_USER_GET_CONFIG:
        return h_get_config(vm, p);
    case VHOST_USER_SET_CONFIG:
        log_warn("vm %s: SET_CONFIG refused (config space is read-only)", vm->name);
        return -EPERM;
    case VHOST_USER_SET_LOG_BASE:
    case VHOST_USER_SET_LOG_FD:
        log_warn("vm %s: %s refused (dirty logging not offered)", vm->name, vu_request_name(hdr->request));
        return -ENOTSUP;
    default:
        return VU_FATAL; /* unreachable: validate refuses unknown requests */
    }
}

int vu_process_msg(struct vm *vm, const struct vu_msg_hdr *hdr, const uint8_t *payload, int *fds, unsigned nfds)
{
    int ret = vu_msg_validate(hdr, payload, nfds);
    if (ret < 0) {
        log_warn("vm %s: invalid vhost-user message: request %u (%s) flags 0x%x size %u fds %u",
                 vm->name, hdr->request, vu_request_name(hdr->request), hdr->flags, hdr->size, nfds);
        ret = VU_FATAL;
        goto out;
    }
    log_debug("vm %s: %s size %u fds %u", vm->name, vu_request_name(hdr->request), hdr->size, nfds);
    ret = dispatch(vm, hdr, payload, fds, nfds);
    if (ret == VU_FATAL)
        goto out;
    if (ret < 0)
        log_warn("vm %s: %s failed: %s", vm->name, vu_request_name(hdr->request), strerror(-ret));
    if ((hdr->flags & VHOST_USER_NEED_REPLY_MASK) && !has_own_reply(hdr->request) &&
        (vm->protocol_features & (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK))) {
        ret = reply_u64(vm, hdr->request, ret < 0 ? 1 : 0);
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
