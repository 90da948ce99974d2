/* State of one vhost-user backend, shared by the server (vhost_user.c) and
 * the request handlers (vhost_user_handlers.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "usock.h"
#include "vhost_user.h"

/* Returned by handlers when the connection must be dropped (reply could not
 * be sent, protocol violation). Other negative values are request failures. */
#define VU_FATAL (-ECONNABORTED)

/* Ring features the transport implements; the device adds its own bits. */
#define VU_TRANSPORT_FEATURES                                                                \
    ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |                  \
     (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES))
#define VU_OFFERED_PROTOCOL_FEATURES                                                         \
    ((1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |    \
     (1ull << VHOST_USER_PROTOCOL_F_RESET_DEVICE) |                                          \
     (1ull << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

#define VU_PAYLOAD_INLINE 64u

/* A queue's kick eventfd registration; knows its backend, so the kick
 * handler needs no pointer arithmetic. */
struct vu_kick {
    struct vu_backend *be;
    unsigned qidx;
    struct ev_handler h;
};

struct vu_backend {
    char name[64];
    char socket_path[108];
    struct evloop *loop;
    bool socket_group_set;
    unsigned socket_gid;
    bool owner_uid_set, owner_gid_set;
    unsigned owner_uid, owner_gid;
    const struct vu_dev_ops *ops;
    void *dev;
    struct events *events;       /* NULL: none */
    uint64_t cid;                /* for events */
    bool dev_running;            /* a ring started since the device last stopped */

    int listen_fd;
    struct ev_handler listen_h;
    int conn_fd;                 /* one front-end at a time */
    struct ev_handler conn_h;

    /* reassembly of one message from the non-blocking stream */
    uint8_t hdr[VHOST_USER_HDR_SIZE];
    size_t hdr_got;
    /* Payloads up to VU_PAYLOAD_INLINE bytes (nearly every request) land in
     * payload_inline; larger ones (memory tables, config) in a heap buffer
     * of the message's size, freed once it was handled. A connected idle VM
     * thus keeps no 4 KiB buffer (one hostd serves a thousand VMs). */
    uint8_t payload_inline[VU_PAYLOAD_INLINE];
    uint8_t *payload;            /* payload_inline or the heap buffer */
    size_t pay_got;
    struct usock_fds fds;        /* received with the message so far */

    struct log_limit rl;         /* warnings the front-end can cause */
    uint64_t features;           /* acked by SET_FEATURES */
    uint64_t protocol_features;  /* acked by SET_PROTOCOL_FEATURES */
    bool owner_set;

    struct memtable mem;
    unsigned nq;                 /* queues the device serves */
    struct virtq vq[VU_MAX_QUEUES];
    struct vu_kick kick[VU_MAX_QUEUES];

    /* rings started with a NOFD kick are polled by this timerfd */
    int poll_fd;
    struct ev_handler poll_h;
    uint16_t polled_avail[VU_MAX_QUEUES]; /* avail idx seen at the last poll tick */

    /* vu_backend_export's reader (vu_backend_config.state_changed) */
    void (*state_changed)(void *ctx);
    void *state_ctx;
    bool socket_outlives;        /* free leaves the socket file (vu_backend_keep_socket) */
};

/* Warnings a front-end (or its guest) can cause, through the backend's limiter. */
#define vu_warn(be, ...) log_warn_limited(&(be)->rl, (be)->name, __VA_ARGS__)

/* Validate, handle and answer one complete message (vhost_user_handlers.c). */
int vu_process_msg(struct vu_backend *be, const struct vu_msg_hdr *hdr, const uint8_t *payload, int *fds,
                   unsigned nfds);
/* Publish a VM event of this backend (if anyone wants its type). */
void vu_event(struct vu_backend *be, enum event_type t, const char *detail);
/* Stop the device and every ring (RESET_*, hangup). Keeps the memory table
 * and the connection. */
void vu_device_teardown(struct vu_backend *be, const char *why);

/* Helpers shared by the handlers and the state restore (vhost_user_state.c). */
uint64_t vu_offered_features(const struct vu_backend *be);
void vu_stop_kick(struct vu_backend *be, unsigned q);
int vu_watch_kick(struct vu_backend *be, unsigned q);   /* epoll on vq[q].kick_fd */
void vu_queue_event(struct vu_backend *be, unsigned q);
void vu_update_poll(struct vu_backend *be);
bool vu_is_eventfd(int fd);
/* Takes fd: 0 when sealed against shrinking (sealed here if it can be), else closed and -EPERM. */
int vu_region_fd_sealed(struct vu_backend *be, int fd);
