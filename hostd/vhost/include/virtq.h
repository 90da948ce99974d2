/* Split virtqueue (virtio 1.x, section 2.7), device side. Every guest-provided
 * index, address and length is checked; a malformed ring marks the queue
 * broken (virtq_pop returns -EIO) and the device stops using it. Never aborts. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "memtable.h"
#include "virtio_ring.h"

#define VIRTQ_MAX_SIZE 32768   /* virtio limit on queue size */
#define VIRTQ_MAX_SG 64        /* max iovecs in one element; longer chains are refused */

struct virtq {
    unsigned index;
    uint16_t num;           /* from SET_VRING_NUM; power of two, <= VIRTQ_MAX_SIZE */
    uint64_t desc_uva, avail_uva, used_uva; /* from SET_VRING_ADDR (QEMU UVAs) */
    uint32_t addr_flags;
    struct vring_desc *desc;   /* translated; NULL until mapped */
    struct vring_avail *avail;
    struct vring_used *used;
    uint64_t mapped_gen;       /* memtable generation the pointers belong to */
    uint16_t last_avail_idx;   /* next avail entry to consume (SET/GET_VRING_BASE) */
    uint16_t used_idx;         /* shadow of used->idx */
    uint16_t signalled_used;   /* EVENT_IDX: used idx at last interrupt */
    bool signalled_used_valid;
    bool event_idx;            /* VIRTIO_RING_F_EVENT_IDX negotiated */
    bool indirect;             /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
    bool enabled;              /* SET_VRING_ENABLE */
    bool started;              /* has addresses and a kick fd (or NOFD) */
    bool broken;               /* guest broke the ring: stop using it */
    int kick_fd, call_fd, err_fd; /* -1 when absent */
    const struct memtable *mem;
    uint64_t pops, pushes;     /* statistics */
    const char *owner;         /* for log messages (VM name); may be NULL; kept by virtq_reset */
};

/* One descriptor chain, translated to hostd iovecs: out (device-readable) first, then in. */
struct virtq_elem {
    uint16_t head;
    unsigned n_out, n_in;
    struct iovec iov[VIRTQ_MAX_SG];
    uint64_t out_len, in_len;  /* total bytes */
};

void virtq_init(struct virtq *vq, unsigned index, const struct memtable *mem);
/* Forget rings and fds (closes fds). */
void virtq_reset(struct virtq *vq);
/* (Re)translate ring addresses through the memtable; 0 or -EFAULT (queue then not usable). */
int virtq_map_rings(struct virtq *vq);
/* True when the queue can be used: enabled, started, mapped, not broken. */
bool virtq_ready(const struct virtq *vq);

/* 1: elem filled; 0: ring empty; -EIO: ring broken (marked). */
int virtq_pop(struct virtq *vq, struct virtq_elem *elem);
/* Return the last popped element without using it (e.g. rx buffer not needed). */
void virtq_unpop(struct virtq *vq);
/* Publish elem as used with `written` bytes written into its in-buffers. */
void virtq_push(struct virtq *vq, const struct virtq_elem *elem, uint32_t written);
/* Interrupt the driver if it wants one (EVENT_IDX / NO_INTERRUPT aware). */
void virtq_notify(struct virtq *vq);
/* Are there avail entries not consumed yet? */
bool virtq_has_avail(const struct virtq *vq);
/* The driver's avail index as it is now (0 when the ring is not mapped). */
uint16_t virtq_avail_idx(const struct virtq *vq);
/* Ask for (or suppress) kicks from the driver. With notify re-enabled, callers re-check virtq_has_avail. */
void virtq_set_notify(struct virtq *vq, bool enable);
/* Drain a kick eventfd (non-blocking). */
void virtq_drain_kick(struct virtq *vq);

/* iovec helpers (bounded copies) */
size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t offset, void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t offset, const void *buf, size_t len);
