/* vhost-user backend (device side) for one VM: one listening socket, one
 * front-end (QEMU) at a time, the guest memory table, the virtqueues and
 * their eventfds. The backend knows no device: a device plugs in through
 * struct vu_dev_ops (the shape of libvhost-user's VuDevIface) and reads its
 * queues with vu_backend_queue(). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "events.h"
#include "evloop.h"
#include "memtable.h"
#include "vhost_user_proto.h"
#include "virtq.h"

/* What a device tells the transport. Called from the event loop only. */
struct vu_dev_ops {
    /* Device-specific feature bits offered to the driver, on top of the ring
     * features the transport implements (VERSION_1, INDIRECT_DESC, EVENT_IDX). */
    uint64_t (*features)(void *dev);
    /* Queues served by this backend (GET_QUEUE_NUM); at most VU_MAX_QUEUES. */
    unsigned (*queue_count)(void *dev);
    /* Device config space: copy len bytes at offset into buf. 0, or -EINVAL
     * when [offset, offset+len) is outside it. */
    int (*get_config)(void *dev, uint32_t offset, void *buf, uint32_t len);
    /* Queue qidx is ready and may hold work: kicked, enabled, started,
     * re-mapped after a memory table change, or polled (NOFD kick). */
    void (*queue_event)(void *dev, unsigned qidx);
    /* The device stops: a running ring was stopped (GET_VRING_BASE: guest
     * reset or reboot, QEMU stop), RESET_OWNER / RESET_DEVICE, or the
     * front-end went away. Drop all state tied to the guest's driver; the
     * queues may start again afterwards. */
    void (*stop)(void *dev, const char *why);
};

struct vu_backend_config {
    const char *name;            /* for log lines (the VM's name) */
    const char *socket_path;
    struct evloop *loop;         /* NULL: no listening (tests drive vu_backend_process) */
    bool socket_group_set;       /* socket gets group socket_gid, mode 0660 */
    unsigned socket_gid;
    /* Who may be this VM's front-end, checked with SO_PEERCRED at accept
     * (root always may): with owner_uid_set only that user (the socket file
     * is also chowned to it); with owner_gid_set only members of that group
     * (primary or supplementary; the socket file gets that group). Without
     * either, whoever the socket's mode lets connect. */
    bool owner_uid_set, owner_gid_set;
    unsigned owner_uid, owner_gid;
    /* Called (from the event loop) after the state vu_backend_export
     * describes may have changed: a batch of vhost-user messages was
     * handled, a front-end connected or went away. Never per packet. */
    void (*state_changed)(void *ctx);
    void *state_ctx;
    /* The daemon's event bus (NULL: none): VM_CONNECTED when a front-end is
     * taken, VM_DISCONNECTED when it goes (before the device stops, so what
     * the stop releases follows it), VM_RESET when a running device stops
     * with the front-end still there (rings stopped, RESET_OWNER/DEVICE).
     * cid only labels these events. */
    struct events *events;
    uint64_t cid;
};

struct vu_backend;

struct vu_backend *vu_backend_new(const struct vu_backend_config *cfg);
/* Plug the device in (before listening). */
void vu_backend_attach(struct vu_backend *be, const struct vu_dev_ops *ops, void *dev);
/* Create/bind/listen on the socket path (replacing a stale socket) and serve. */
int vu_backend_listen(struct vu_backend *be);
/* Close the front-end connection (if any); the device is stopped and the
 * memory table dropped. The backend keeps listening. */
void vu_backend_disconnect(struct vu_backend *be, const char *why);
/* The listening socket outlives this process (the service manager's fd
 * store holds it for the next hostd): vu_backend_free leaves its file. */
void vu_backend_keep_socket(struct vu_backend *be);
/* Stop listening, disconnect, free. */
void vu_backend_free(struct vu_backend *be);

/* The device's queues and the guest memory they live in. Pointers stay
 * valid for the backend's lifetime. */
struct virtq *vu_backend_queue(struct vu_backend *be, unsigned qidx);
const struct memtable *vu_backend_mem(const struct vu_backend *be);
bool vu_backend_connected(const struct vu_backend *be);

/* Take fd (a connected stream socket) as the front-end connection, as an
 * accepted one would be. Ownership passes on success and on failure. */
int vu_backend_adopt_conn(struct vu_backend *be, int fd);
/* Handle one complete message as if it had arrived on the connection
 * (fuzzing and unit tests drive the backend without a socket peer). Every fd
 * in fds[] is consumed or closed. 0, or negative when the connection must be
 * dropped. */
int vu_backend_process(struct vu_backend *be, const struct vu_msg_hdr *hdr, const uint8_t *payload, int *fds,
                       unsigned nfds);

/* ---- state export / restore (a new hostd process resumes a front-end) ----
 *
 * What a new process needs to go on serving a connected front-end without
 * any vhost-user message: the record (features, memory table layout, per
 * ring: size, addresses, flags, indices) and the descriptors it refers to.
 * The backend knows nothing about where they are kept. A ring's next avail
 * index is not kept (it changes per packet): the device completes every
 * chain it pops before it returns to the event loop, so the used index in
 * guest memory, plus the distance between the two at the time of the
 * record, gives it back. */
#define VU_STATE_REC_SIZE 1536u  /* bytes of a record (fixed); the last 8: FNV-1a 64 of the others */

struct vu_state_fds {
    int listen;                   /* export only; restore ignores it */
    int conn;
    int region[VU_MAX_MEM_SLOTS];
    int kick[VU_MAX_QUEUES], call[VU_MAX_QUEUES], err[VU_MAX_QUEUES];
};

/* All -1. */
void vu_state_fds_init(struct vu_state_fds *f);
/* Fill rec (VU_STATE_REC_SIZE bytes) and f (borrowed: still the backend's).
 * Without a front-end the record says so and f holds only the listener. */
void vu_backend_export(const struct vu_backend *be, uint8_t rec[VU_STATE_REC_SIZE], struct vu_state_fds *f);
/* Resume from a record and its fds, validated as if they came from a peer
 * (the record is ours, but a corrupt one must fail cleanly): every fd in f
 * (but listen) is taken on success and on failure. 0; -ENODATA when the
 * record says no front-end was connected; else -EINVAL/-EBADF/... with
 * detail logged, and the backend is as new (not connected). The device is
 * not called: vu_backend_kick once its peers are there too. */
int vu_backend_restore(struct vu_backend *be, const uint8_t *rec, size_t len, struct vu_state_fds *f);
/* Let the device look at every ready queue once (work that arrived, with
 * or without a kick, while no process served the rings). */
void vu_backend_kick(struct vu_backend *be);
/* Take fd, an inherited listening Unix socket bound to the configured
 * path, instead of vu_backend_listen (fd is taken on failure too). */
int vu_backend_listen_on(struct vu_backend *be, int fd);
