/* virtio-vsock device for one VM: connection table, credit flow control both
 * ways, host services on CID 2, and routing between sibling VMs. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "evloop.h"
#include "vhost_user.h"
#include "virtq.h"
#include "vsock_pkt.h"

#define VSOCK_HOST_CID 2
#define VSOCK_VQ_RX 0
#define VSOCK_VQ_TX 1
#define VSOCK_NUM_VQ 2           /* the event queue (2) stays in QEMU */
#define MDLMAP_PORT_ECHO 7       /* the built-in echo service */

struct vsock_dev;

struct vsock_dev_config {
    const char *name;            /* for log lines (the VM's name) */
    uint64_t cid;                /* the guest's CID (config space) */
    struct evloop *loop;         /* NULL: no timers or deferred pumps (tests, fuzzing) */
    struct virtq *rx, *tx;       /* the transport's queues 0 and 1 */
    /* Sibling routing: the device of the VM with that CID, or NULL. The
     * device only forwards between devices this returns. */
    struct vsock_dev *(*peer)(void *ctx, uint64_t cid);
    void *peer_ctx;
    bool sibling_routing;        /* false: guest-to-guest connections are refused (RST) */
};

struct vsock_dev *vsock_dev_new(const struct vsock_dev_config *cfg);
void vsock_dev_free(struct vsock_dev *dev);     /* reset + free */
/* The transport's side of the device (features, config space, queue events, stop). */
extern const struct vu_dev_ops vsock_vu_ops;
/* The queue was kicked, enabled or (re)mapped: process what it holds. */
void vsock_dev_queue_event(struct vsock_dev *dev, unsigned qidx);
/* The device went away (QEMU exit, RESET_OWNER/RESET_DEVICE, rings stopped,
 * guest reboot): RST sibling peers, close every connection (services see closed()),
 * free all state. The device can start again afterwards. */
void vsock_dev_reset(struct vsock_dev *dev, const char *why);
uint64_t vsock_dev_cid(const struct vsock_dev *dev);
const char *vsock_dev_name(const struct vsock_dev *dev);
/* Counters for tests and diagnostics. */
/* rx_*: packets/payload bytes from the guest (its tx queue); tx_*: to the guest. */
struct vsock_stats {
    uint64_t rx_pkts, tx_pkts, rx_bytes, tx_bytes;
    uint64_t dropped_pkts, bad_pkts, rst_sent;
    unsigned conns;
    uint64_t conns_accepted;     /* connections to a host service ever accepted */
    /* Sibling packets refused for not fitting a connection hostd tracks
     * (answered with RST unless they were RSTs). */
    uint64_t sib_refused;
};
void vsock_dev_stats(const struct vsock_dev *dev, struct vsock_stats *out);

/* ---- services on the host CID (echo, MDL RPC, ...) ---- */
struct vsock_conn;

struct vsock_service {
    const char *name;
    uint32_t port;
    bool stream, seqpacket;   /* which socket types it accepts */
    /* A guest connects. Return 0 to accept (set *priv), negative to refuse (RST). */
    int (*accept)(struct vsock_conn *c, void *ctx, void **priv);
    /* Bytes from the guest, in order. Return how many were consumed (0..len);
     * the rest stays buffered (counted against our credit) and is offered again
     * after writable(). eom: the last byte is the end of a SEQPACKET message. */
    size_t (*recv)(struct vsock_conn *c, void *priv, const uint8_t *data, size_t len, bool eom);
    /* Outbound space was freed (optional). */
    void (*writable)(struct vsock_conn *c, void *priv);
    /* The connection is gone (peer closed, reset, VM died). Free priv here. */
    void (*closed)(struct vsock_conn *c, void *priv, const char *why);
};

/* Callbacks are never re-entered: the vsock_conn_* calls below never call back
 * into a service (recv, writable, closed) before they return, wherever they are
 * called from (a callback, a timer, another socket's handler). Output queued
 * outside device processing goes out from the event loop's next iteration.
 * closed() never runs while recv() or writable() of the same connection is on
 * the stack; it comes right after that callback returns. */

#define VSOCK_MAX_SERVICES 16
/* Serve svc on this device's host ports; accept() gets ctx. svc and ctx
 * must outlive the device (or its next vsock_dev_reset, for ctx). */
int vsock_dev_add_service(struct vsock_dev *dev, const struct vsock_service *svc, void *ctx);
/* Queue bytes to the guest. All or nothing: -EAGAIN when vsock_conn_send_space() < len,
 * -ENOTCONN after close. For SEQPACKET, eom marks the message end. After the
 * guest's SHUTDOWN(RCV) bytes are accepted and dropped. */
int vsock_conn_send(struct vsock_conn *c, const void *data, size_t len, bool eom);
/* Same with SEQPACKET flags: VSOCK_SEQ_EOM ends a message, VSOCK_SEQ_EOR (with EOM)
 * also sets MSG_EOR for the guest. */
int vsock_conn_send_flags(struct vsock_conn *c, const void *data, size_t len, uint32_t seq_flags);
size_t vsock_conn_send_space(const struct vsock_conn *c);
/* Valid inside recv(): the guest's SEQPACKET flags for the message this call
 * ends (VSOCK_SEQ_EOM, plus VSOCK_SEQ_EOR when the guest sent MSG_EOR); 0 when
 * eom is false or for STREAM. */
uint32_t vsock_conn_last_flags(const struct vsock_conn *c);
/* Graceful close from the service side: flush, SHUTDOWN, then RST. closed() follows,
 * later (never inside this call); c stays valid until then. */
void vsock_conn_close(struct vsock_conn *c);
struct vsock_dev *vsock_conn_dev(const struct vsock_conn *c);
uint32_t vsock_conn_peer_port(const struct vsock_conn *c);
uint64_t vsock_conn_id(const struct vsock_conn *c);   /* unique for hostd's lifetime */

/* Built-in echo service (port MDLMAP_PORT_ECHO). */
extern const struct vsock_service vsock_echo_service;
