/* A backend's state as a record plus descriptors, and the resume from them
 * (vhost_user.h, "state export / restore"). The record is written by this
 * process for the next one; it is still checked like peer input: a torn or
 * corrupt record, a missing or wrong descriptor, rings outside the memory
 * table all end in a clean refusal (the backend as new, every fd closed). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "vu_internal.h"

#define REC_MAGIC 0x5355564du   /* "MVUS" */
#define REC_VERSION 1u

enum { QF_ENABLED = 1, QF_STARTED = 2, QF_KICK = 4, QF_CALL = 8, QF_ERR = 16 };

struct rec_region {
    uint64_t gpa, size, uva, mmap_offset;
};

struct rec_queue {
    uint64_t desc, avail, used;
    uint32_t addr_flags;
    uint16_t num, flags;
    uint16_t last_avail_idx, used_idx; /* only their distance is used on restore */
    uint32_t pad;
};

struct rec {
    uint32_t magic, version, size;
    uint32_t connected;
    uint64_t features, protocol_features;
    uint32_t owner_set, nq, nregions, pad;
    struct rec_region region[VU_MAX_MEM_SLOTS];
    struct rec_queue q[VU_MAX_QUEUES];
};
/* the last 8 bytes of the record: FNV-1a 64 of all before them */
#define REC_CHECK_AT (VU_STATE_REC_SIZE - 8u)
_Static_assert(sizeof(struct rec) <= REC_CHECK_AT, "record outgrew VU_STATE_REC_SIZE");

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

void vu_state_fds_init(struct vu_state_fds *f)
{
    f->listen = f->conn = -1;
    for (unsigned i = 0; i < VU_MAX_MEM_SLOTS; i++)
        f->region[i] = -1;
    for (unsigned q = 0; q < VU_MAX_QUEUES; q++)
        f->kick[q] = f->call[q] = f->err[q] = -1;
}

void vu_backend_export(const struct vu_backend *be, uint8_t out[VU_STATE_REC_SIZE], struct vu_state_fds *f)
{
    struct rec r;
    memset(&r, 0, sizeof(r));
    vu_state_fds_init(f);
    f->listen = be->listen_fd;
    r.magic = REC_MAGIC;
    r.version = REC_VERSION;
    r.size = sizeof(r);
    if (be->conn_fd >= 0 && be->mem.n <= VU_MAX_MEM_SLOTS) {
        r.connected = 1;
        f->conn = be->conn_fd;
        r.features = be->features;
        r.protocol_features = be->protocol_features;
        r.owner_set = be->owner_set;
        r.nq = be->nq;
        r.nregions = be->mem.n;
        for (unsigned i = 0; i < be->mem.n; i++) {
            const struct mem_region *m = &be->mem.r[i];
            r.region[i] = (struct rec_region){ m->gpa, m->size, m->uva, m->mmap_offset };
            f->region[i] = m->fd;
        }
        for (unsigned q = 0; q < be->nq; q++) {
            const struct virtq *vq = &be->vq[q];
            struct rec_queue *o = &r.q[q];
            o->desc = vq->desc_uva;
            o->avail = vq->avail_uva;
            o->used = vq->used_uva;
            o->addr_flags = vq->addr_flags;
            o->num = vq->num;
            o->last_avail_idx = vq->last_avail_idx;
            o->used_idx = vq->used_idx;
            o->flags = (uint16_t)((vq->enabled ? QF_ENABLED : 0) | (vq->started ? QF_STARTED : 0) |
                                  (vq->kick_fd >= 0 ? QF_KICK : 0) | (vq->call_fd >= 0 ? QF_CALL : 0) |
                                  (vq->err_fd >= 0 ? QF_ERR : 0));
            f->kick[q] = vq->kick_fd;
            f->call[q] = vq->call_fd;
            f->err[q] = vq->err_fd;
        }
    }
    memset(out, 0, VU_STATE_REC_SIZE);
    memcpy(out, &r, sizeof(r));
    uint64_t check = fnv1a(out, REC_CHECK_AT);
    memcpy(out + REC_CHECK_AT, &check, sizeof(check));
}

static int take(int *slot)
{
    int fd = *slot;
    *slot = -1;
    return fd;
}

static void close_all(struct vu_state_fds *f)
{
    if (f->conn >= 0)
        close(take(&f->conn));
    for (unsigned i = 0; i < VU_MAX_MEM_SLOTS; i++)
        if (f->region[i] >= 0)
            close(take(&f->region[i]));
    for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
        if (f->kick[q] >= 0)
            close(take(&f->kick[q]));
        if (f->call[q] >= 0)
            close(take(&f->call[q]));
        if (f->err[q] >= 0)
            close(take(&f->err[q]));
    }
}

/* An eventfd the record says is there (want), or none where it says none. */
static int ring_fd(struct vu_backend *be, unsigned q, const char *what, bool want, int *slot, int *out)
{
    int fd = take(slot);
    *out = -1;
    if (!want) {
        if (fd >= 0) {
            close(fd);
            log_warn("vm %s: restore: vq %u has a %s fd the record does not name", be->name, q, what);
            return -EINVAL;
        }
        return 0;
    }
    if (fd < 0 || !vu_is_eventfd(fd)) {
        log_warn("vm %s: restore: vq %u %s fd %s", be->name, q, what, fd < 0 ? "missing" : "not an eventfd");
        if (fd >= 0)
            close(fd);
        return -EBADF;
    }
    *out = fd;
    return 0;
}

/* Everything from the record but the connection; the backend is as new on entry. */
static int restore_body(struct vu_backend *be, const struct rec *r, struct vu_state_fds *f)
{
    if ((r->features & ~vu_offered_features(be)) || (r->protocol_features & ~VU_OFFERED_PROTOCOL_FEATURES)) {
        log_warn("vm %s: restore: features 0x%llx / protocol features 0x%llx not offered", be->name,
                 (unsigned long long)r->features, (unsigned long long)r->protocol_features);
        return -EINVAL;
    }
    if (r->nq != be->nq || r->nregions > VU_MAX_MEM_SLOTS || r->owner_set > 1) {
        log_warn("vm %s: restore: %u queues (device: %u), %u regions", be->name, r->nq, be->nq, r->nregions);
        return -EINVAL;
    }
    be->features = r->features;
    be->protocol_features = r->protocol_features;
    be->owner_set = r->owner_set;
    for (unsigned i = 0; i < r->nregions; i++) {
        const struct rec_region *m = &r->region[i];
        int fd = take(&f->region[i]);
        int ret = fd < 0 ? -EBADF : vu_region_fd_sealed(be, fd);
        if (ret == 0)
            ret = memtable_add(&be->mem, m->gpa, m->size, m->uva, m->mmap_offset, fd);
        if (ret < 0) {
            log_warn("vm %s: restore: memory region %u refused: %s", be->name, i, strerror(-ret));
            return ret;
        }
    }
    be->mem.generation += 2;
    for (unsigned q = 0; q < r->nq; q++) {
        const struct rec_queue *o = &r->q[q];
        struct virtq *vq = &be->vq[q];
        bool started = o->flags & QF_STARTED;
        if ((o->flags & ~(QF_ENABLED | QF_STARTED | QF_KICK | QF_CALL | QF_ERR)) ||
            (o->num && ((o->num & (o->num - 1)) || o->num > VIRTQ_MAX_SIZE)) || (started && !o->num)) {
            log_warn("vm %s: restore: vq %u: num %u flags 0x%x invalid", be->name, q, o->num, o->flags);
            return -EINVAL;
        }
        int ret = ring_fd(be, q, "kick", o->flags & QF_KICK, &f->kick[q], &vq->kick_fd);
        if (ret == 0)
            ret = ring_fd(be, q, "call", o->flags & QF_CALL, &f->call[q], &vq->call_fd);
        if (ret == 0)
            ret = ring_fd(be, q, "err", o->flags & QF_ERR, &f->err[q], &vq->err_fd);
        if (ret < 0)
            return ret;
        vq->num = o->num;
        vq->desc_uva = o->desc;
        vq->avail_uva = o->avail;
        vq->used_uva = o->used;
        vq->addr_flags = o->addr_flags;
        vq->event_idx = r->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
        vq->indirect = r->features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
        vq->enabled = o->flags & QF_ENABLED;
        if (o->desc || o->avail || o->used) {
            /* not started yet: takes the used index from guest memory */
            ret = virtq_map_rings(vq);
            if (ret < 0 && started) {
                log_warn("vm %s: restore: vq %u rings not in the memory table", be->name, q);
                return ret;
            }
        } else if (started) {
            log_warn("vm %s: restore: vq %u started without ring addresses", be->name, q);
            return -EINVAL;
        }
        /* Every chain popped was completed before the record's process
         * went back to its loop: avail - used is what it was then. */
        vq->last_avail_idx = (uint16_t)(vq->used_idx + (uint16_t)(o->last_avail_idx - o->used_idx));
        vq->signalled_used_valid = false;
        vq->started = started;
        if (vq->kick_fd >= 0 && (ret = vu_watch_kick(be, q)) < 0)
            return ret;
    }
    vu_update_poll(be);
    return 0;
}

int vu_backend_restore(struct vu_backend *be, const uint8_t *buf, size_t len, struct vu_state_fds *f)
{
    struct rec r;
    int ret = 0;
    if (be->conn_fd >= 0) {
        ret = -EBUSY;
        goto fail;
    }
    if (!buf || len != VU_STATE_REC_SIZE) {
        log_warn("vm %s: restore: record of %zu bytes (want %u)", be->name, len, VU_STATE_REC_SIZE);
        ret = -EINVAL;
        goto fail;
    }
    uint64_t check;
    memcpy(&check, buf + REC_CHECK_AT, sizeof(check));
    memcpy(&r, buf, sizeof(r));
    if (check != fnv1a(buf, REC_CHECK_AT) || r.magic != REC_MAGIC || r.version != REC_VERSION ||
        r.size != sizeof(r)) {
        log_warn("vm %s: restore: record damaged (magic 0x%x version %u size %u, checksum %s)", be->name, r.magic,
                 r.version, r.size, check == fnv1a(buf, REC_CHECK_AT) ? "ok" : "wrong");
        ret = -EINVAL;
        goto fail;
    }
    if (!r.connected) {
        ret = -ENODATA;
        goto fail;
    }
    int conn = take(&f->conn);
    ret = conn < 0 ? -EBADF : usock_adopt_stream(conn);
    if (ret < 0) {
        log_warn("vm %s: restore: connection fd %s", be->name, conn < 0 ? "missing" : "not a connected Unix stream");
        if (conn >= 0)
            close(conn);
        goto fail;
    }
    ret = vu_backend_adopt_conn(be, conn);   /* takes conn */
    if (ret == 0)
        ret = restore_body(be, &r, f);
    if (ret < 0) {
        /* not told to QEMU: it goes on seeing a backend that does not answer (as before) */
        close_all(f);
        vu_backend_disconnect(be, "state restore refused");
        return ret;
    }
    close_all(f);   /* fds the record does not name (none from our own export) */
    log_info("vm %s: resumed the front-end connection: %u regions, features 0x%llx", be->name, be->mem.n,
             (unsigned long long)be->features);
    return 0;
fail:
    close_all(f);
    return ret;
}

void vu_backend_kick(struct vu_backend *be)
{
    for (unsigned q = 0; q < be->nq; q++)
        vu_queue_event(be, q);
}
