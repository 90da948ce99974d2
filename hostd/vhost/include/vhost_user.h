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
