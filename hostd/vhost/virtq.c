/* Split virtqueue, device side (virtio 1.x section 2.7).
 *
 * The rings live in guest memory, which the guest may change at any time:
 * every index is read once into a local and range-checked before use, and
 * descriptors are copied before they are interpreted.
 *
 * Descriptor buffers whose GPA range crosses from one memory region into an
 * adjacent one are split into one iovec per region (bounded by VIRTQ_MAX_SG).
 * An indirect descriptor is accepted only as the head of a chain (as Linux and
 * QEMU use it); nested indirect tables are refused.
 *
 * Every ring field is little-endian in guest memory (virtio 1.x); it is
 * converted at each access so the code does not depend on the host's byte
 * order. */
#include "virtq.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- ring field accessors (rings are alignment-checked in virtq_map_rings) ---- */

static inline uint16_t *avail_flags_p(const struct virtq *vq) { return (uint16_t *)(void *)vq->avail; }
static inline uint16_t *avail_idx_p(const struct virtq *vq) { return (uint16_t *)(void *)((uint8_t *)vq->avail + 2); }
static inline uint16_t *avail_ring_p(const struct virtq *vq, unsigned i)
{
    return (uint16_t *)(void *)((uint8_t *)vq->avail + 4 + 2 * (size_t)i);
}
/* used_event lives right after the avail ring */
static inline uint16_t *used_event_p(const struct virtq *vq) { return avail_ring_p(vq, vq->num); }
static inline uint16_t *used_flags_p(const struct virtq *vq) { return (uint16_t *)(void *)vq->used; }
static inline uint16_t *used_idx_p(const struct virtq *vq) { return (uint16_t *)(void *)((uint8_t *)vq->used + 2); }
static inline struct vring_used_elem *used_elem_p(const struct virtq *vq, unsigned i)
{
    return (struct vring_used_elem *)(void *)((uint8_t *)vq->used + 4 + 8 * (size_t)i);
}
/* avail_event lives right after the used ring */
static inline uint16_t *avail_event_p(const struct virtq *vq)
{
    return (uint16_t *)(void *)((uint8_t *)vq->used + 4 + 8 * (size_t)vq->num);
}

/* 16-bit ring fields (le16 in guest memory), host order on our side */
static inline uint16_t load16(const uint16_t *p) { return le16toh(__atomic_load_n(p, __ATOMIC_RELAXED)); }
static inline void store16(uint16_t *p, uint16_t v) { __atomic_store_n(p, htole16(v), __ATOMIC_RELAXED); }

/* ---- lifecycle ---- */

void virtq_init(struct virtq *vq, unsigned index, const struct memtable *mem)
{
    memset(vq, 0, sizeof(*vq));
    vq->index = index;
    vq->mem = mem;
    vq->kick_fd = vq->call_fd = vq->err_fd = -1;
}

void virtq_reset(struct virtq *vq)
{
    if (vq->kick_fd >= 0)
        close(vq->kick_fd);
    if (vq->call_fd >= 0)
        close(vq->call_fd);
    if (vq->err_fd >= 0)
        close(vq->err_fd);
    const char *owner = vq->owner;
    virtq_init(vq, vq->index, vq->mem);
    vq->owner = owner;
}

static const char *owner(const struct virtq *vq)
{
    return vq->owner ? vq->owner : "?";
}

/* Ring sizes in bytes for a queue of num entries (event fields included
 * only when EVENT_IDX is negotiated). */
static size_t avail_size(const struct virtq *vq) { return 4 + 2 * (size_t)vq->num + (vq->event_idx ? 2 : 0); }
static size_t used_size(const struct virtq *vq) { return 4 + 8 * (size_t)vq->num + (vq->event_idx ? 2 : 0); }

int virtq_map_rings(struct virtq *vq)
{
    vq->desc = NULL;
    vq->avail = NULL;
    vq->used = NULL;
    if (!vq->mem || vq->num == 0 || (vq->num & (vq->num - 1)) || vq->num > VIRTQ_MAX_SIZE)
        return -EFAULT;
    /* alignment required by the spec (2.7): desc 16, avail 2, used 4 */
    if ((vq->desc_uva & 15) || (vq->avail_uva & 1) || (vq->used_uva & 3)) {
        log_warn("vm %s: vq %u: misaligned ring addresses", owner(vq), vq->index);
        return -EFAULT;
    }
    void *d = memtable_uva_to_hva(vq->mem, vq->desc_uva, 16 * (uint64_t)vq->num);
    void *a = memtable_uva_to_hva(vq->mem, vq->avail_uva, avail_size(vq));
    void *u = memtable_uva_to_hva(vq->mem, vq->used_uva, used_size(vq));
    if (!d || !a || !u) {
        log_warn("vm %s: vq %u: ring addresses not in guest memory (desc 0x%llx avail 0x%llx used 0x%llx num %u)",
                 owner(vq), vq->index, (unsigned long long)vq->desc_uva, (unsigned long long)vq->avail_uva,
                 (unsigned long long)vq->used_uva, vq->num);
        return -EFAULT;
    }
    /* Also reject host pointers that would be misaligned (region hva may be offset). */
    if (((uintptr_t)a & 1) || ((uintptr_t)u & 3))
        return -EFAULT;
    vq->desc = d;
    vq->avail = a;
    vq->used = u;
    vq->mapped_gen = vq->mem->generation;
    if (!vq->started) {
        /* A ring that is not running resumes from what the driver sees;
         * while running (remap after a memory table change) our shadow rules. */
        vq->used_idx = load16(used_idx_p(vq));
        vq->signalled_used_valid = false;
    }
    return 0;
}

bool virtq_ready(const struct virtq *vq)
{
    return vq->enabled && vq->started && !vq->broken && vq->desc && vq->avail && vq->used && vq->mem &&
           vq->mapped_gen == vq->mem->generation;
}

static void mark_broken(struct virtq *vq, const char *why)
{
    if (!vq->broken) {
        log_warn("vm %s: vq %u: ring broken by driver: %s", owner(vq), vq->index, why);
        /* tell the front-end (QEMU reports "vhost vring error") */
        uint64_t one = 1;
        if (vq->err_fd >= 0 && write(vq->err_fd, &one, sizeof(one)) < 0)
            log_debug("vm %s: vq %u: err eventfd write: %m", owner(vq), vq->index);
    }
    vq->broken = true;
}

/* ---- chain parsing ---- */

/* Append guest buffer [gpa, gpa+len) as one iovec per memory region it covers. */
static int add_buffer(struct virtq *vq, struct virtq_elem *e, uint64_t gpa, uint32_t len, bool in)
{
    if (len == 0)
        return 0; /* harmless: contributes nothing */
    uint64_t left = len;
    while (left) {
        uint64_t avail;
        const struct mem_region *r = memtable_find_gpa(vq->mem, gpa, &avail);
        if (!r)
            return -EFAULT;
        uint64_t chunk = left < avail ? left : avail;
        unsigned n = e->n_out + e->n_in;
        if (n >= VIRTQ_MAX_SG)
            return -E2BIG;
        e->iov[n].iov_base = r->hva + (gpa - r->gpa);
        e->iov[n].iov_len = (size_t)chunk;
        if (in) {
            e->n_in++;
            e->in_len += chunk;
        } else {
            e->n_out++;
            e->out_len += chunk;
        }
        gpa += chunk; /* stays <= region end, which never wraps */
        left -= chunk;
    }
    return 0;
}

static int read_chain(struct virtq *vq, uint16_t head, struct virtq_elem *e, const char **why)
{
    const struct vring_desc *table = vq->desc;
    unsigned table_n = vq->num;
    unsigned max = vq->num; /* loop guard: a chain visits at most table_n descriptors */
    unsigned count = 0;
    unsigned idx = head;
    bool in_table = false;

    e->head = head;
    e->n_out = e->n_in = 0;
    e->out_len = e->in_len = 0;
    for (;;) {
        if (idx >= table_n) {
            *why = "descriptor index out of range";
            return -EIO;
        }
        if (++count > max) {
            *why = "descriptor chain loop or too long";
            return -EIO;
        }
        struct vring_desc d;
        memcpy(&d, &table[idx], sizeof(d)); /* copy once: the guest may change it */
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        d.addr = le64toh(d.addr);
        d.len = le32toh(d.len);
        d.flags = le16toh(d.flags);
        d.next = le16toh(d.next);

        if (d.flags & VRING_DESC_F_INDIRECT) {
            if (!vq->indirect) {
                *why = "indirect descriptor not negotiated";
                return -EIO;
            }
            if (in_table) {
                *why = "nested indirect descriptor";
                return -EIO;
            }
            if (count != 1 || (d.flags & VRING_DESC_F_NEXT)) {
                *why = "indirect descriptor not alone in chain";
                return -EIO;
            }
            if (d.len == 0 || d.len % sizeof(struct vring_desc) ||
                d.len / sizeof(struct vring_desc) > VIRTQ_MAX_SIZE) {
                *why = "bad indirect table length";
                return -EIO;
            }
            table = memtable_gpa_to_hva(vq->mem, d.addr, d.len);
            if (!table) {
                *why = "indirect table outside guest memory";
                return -EIO;
            }
            in_table = true;
            table_n = d.len / sizeof(struct vring_desc);
            max = table_n;
            count = 0;
            idx = 0;
            continue;
        }

        bool in = d.flags & VRING_DESC_F_WRITE;
        if (!in && e->n_in) {
            *why = "readable descriptor after writable one";
            return -EIO;
        }
        int r = add_buffer(vq, e, d.addr, d.len, in);
        if (r == -E2BIG) {
            *why = "too many buffers in chain";
            return -EIO;
        }
        if (r < 0) {
            *why = "buffer outside guest memory";
            return -EIO;
        }
        if (!(d.flags & VRING_DESC_F_NEXT))
            return 0;
        idx = d.next;
    }
}

int virtq_pop(struct virtq *vq, struct virtq_elem *elem)
{
    if (vq->broken)
        return -EIO;
    if (!virtq_ready(vq))
        return 0;
    uint16_t avail_idx = load16(avail_idx_p(vq));
    uint16_t pending = (uint16_t)(avail_idx - vq->last_avail_idx);
    if (pending == 0)
        return 0;
    if (pending > vq->num) {
        mark_broken(vq, "avail index ran more than queue size ahead");
        return -EIO;
    }
    /* read ring entries only after seeing the index that covers them */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint16_t head = load16(avail_ring_p(vq, vq->last_avail_idx & (vq->num - 1)));
    if (head >= vq->num) {
        mark_broken(vq, "head index out of range");
        return -EIO;
    }
    const char *why = "?";
    if (read_chain(vq, head, elem, &why) < 0) {
        mark_broken(vq, why);
        return -EIO;
    }
    vq->last_avail_idx++;
    vq->pops++;
    if (vq->event_idx)
        store16(avail_event_p(vq), vq->last_avail_idx);
    return 1;
}

void virtq_unpop(struct virtq *vq)
{
    vq->last_avail_idx--;
    if (vq->pops)
        vq->pops--;
}

void virtq_push(struct virtq *vq, const struct virtq_elem *elem, uint32_t written)
{
    if (!vq->used || vq->broken || vq->mapped_gen != vq->mem->generation || elem->head >= vq->num)
        return;
    if (written > elem->in_len)
        written = (uint32_t)elem->in_len; /* never claim more than the driver offered */
    struct vring_used_elem *u = used_elem_p(vq, vq->used_idx & (vq->num - 1));
    __atomic_store_n(&((uint32_t *)(void *)u)[0], htole32((uint32_t)elem->head), __ATOMIC_RELAXED);
    __atomic_store_n(&((uint32_t *)(void *)u)[1], htole32(written), __ATOMIC_RELAXED);
    /* the element must be visible before the index that publishes it */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    vq->used_idx++;
    store16(used_idx_p(vq), vq->used_idx);
    vq->pushes++;
}

/* virtio spec 2.7.7.2: notify if event_idx lies in [old, new) */
static bool vring_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

void virtq_notify(struct virtq *vq)
{
    if (vq->call_fd < 0 || !vq->avail || !vq->used || vq->mapped_gen != vq->mem->generation)
        return;
    /* used idx store must be visible before we read the driver's suppression state */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    bool notify;
    if (vq->event_idx) {
        uint16_t old = vq->signalled_used;
        bool valid = vq->signalled_used_valid;
        uint16_t now = vq->used_idx;
        vq->signalled_used = now;
        vq->signalled_used_valid = true;
        notify = !valid || vring_need_event(load16(used_event_p(vq)), now, old);
    } else {
        notify = !(load16(avail_flags_p(vq)) & VRING_AVAIL_F_NO_INTERRUPT);
    }
    if (!notify)
        return;
    uint64_t one = 1;
    if (write(vq->call_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_debug("vm %s: vq %u: call eventfd write: %m", owner(vq), vq->index);
}

bool virtq_has_avail(const struct virtq *vq)
{
    if (!virtq_ready(vq))
        return false;
    return load16(avail_idx_p(vq)) != vq->last_avail_idx;
}

void virtq_set_notify(struct virtq *vq, bool enable)
{
    if (!vq->used || !vq->avail || vq->mapped_gen != vq->mem->generation)
        return;
    if (vq->event_idx) {
        /* With EVENT_IDX, "enabled" means: kick me once avail idx moves past what I saw. */
        if (enable)
            store16(avail_event_p(vq), load16(avail_idx_p(vq)));
    } else {
        uint16_t f = load16(used_flags_p(vq));
        if (enable)
            f &= (uint16_t)~VRING_USED_F_NO_NOTIFY;
        else
            f |= VRING_USED_F_NO_NOTIFY;
        store16(used_flags_p(vq), f);
    }
    /* make the change visible before the caller re-checks virtq_has_avail */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void virtq_drain_kick(struct virtq *vq)
{
    if (vq->kick_fd < 0)
        return;
    uint64_t v;
    /* the fd is non-blocking (set when received); one read empties an eventfd */
    if (read(vq->kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN && errno != EINTR)
        log_debug("vm %s: vq %u: kick eventfd read: %m", owner(vq), vq->index);
}

/* ---- iovec helpers ---- */

/* Copy len bytes between buf and the iovec, starting offset bytes into it;
 * returns how many were copied (fewer when the iovec ends first). */
static size_t iov_copy(const struct iovec *iov, unsigned n, size_t offset, uint8_t *buf, size_t len, bool to_iov)
{
    size_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t chunk = iov[i].iov_len - offset;
        if (chunk > len - done)
            chunk = len - done;
        uint8_t *at = (uint8_t *)iov[i].iov_base + offset;
        if (to_iov)
            memcpy(at, buf + done, chunk);
        else
            memcpy(buf + done, at, chunk);
        done += chunk;
        offset = 0;
    }
    return done;
}

size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t offset, void *buf, size_t len)
{
    return iov_copy(iov, n, offset, buf, len, false);
}

size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t offset, const void *buf, size_t len)
{
    return iov_copy(iov, n, offset, (uint8_t *)(uintptr_t)buf, len, true);
}

uint16_t virtq_avail_idx(const struct virtq *vq)
{
    return vq->avail ? load16(avail_idx_p(vq)) : 0;
}
