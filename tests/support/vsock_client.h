/* A small socket-like virtio-vsock client on top of the fake guest driver:
 * connect / listen / accept / send / recv / close with credit flow control
 * both ways, and raw packet injection for hostile tests.
 *
 * Everything is single-threaded: vdev_pump() waits on the call eventfds of
 * every live vdev (so two guests served by one hostd progress together),
 * reaps tx completions, parses rx packets and runs the per-connection state
 * machines. Every packet from hostd is checked; violations are counted in
 * vdev.errors with the last one in vdev.last_err.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vu_guest.h"

#define VSOCK_TYPE_STREAM 1
#define VSOCK_TYPE_SEQPACKET 2
enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };
#define SHUT_RCV_F 1u
#define SHUT_SEND_F 2u
#define SEQ_EOM_F 1u
#define SEQ_EOR_F 2u
#define HOST_CID 2

struct vhdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port;
    uint32_t len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
};
void vhdr_encode(const struct vhdr *h, uint8_t w[44]);
void vhdr_decode(const uint8_t w[44], struct vhdr *h);
const char *vop_name(unsigned op);

enum vc_state { VC_FREE = 0, VC_CONNECTING, VC_CONNECTED, VC_CLOSING, VC_CLOSED };

#define VC_MAX_CONNS 32
#define VC_MAX_MSGS 8192
#define VC_LOG 512

struct vdev;

struct vc_conn {
    struct vdev *d;
    enum vc_state st;
    uint16_t type;
    uint64_t peer_cid;
    uint32_t lport, pport;
    /* peer's credit as last advertised, and what we sent */
    uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
    bool credit_req_pending;
    /* ours */
    uint32_t buf_alloc, fwd_cnt, fwd_sent;  /* buf_alloc: what we advertise (may change) */
    uint64_t rx_allowed;            /* max over our adverts of rx_out + buf_alloc */
    uint8_t *rxbuf;                 /* FIFO of rx_cap bytes */
    size_t rx_cap;
    size_t rx_head, rx_len;
    uint64_t rx_in, rx_out;         /* absolute byte counts */
    uint64_t *msg_end;              /* SEQPACKET: rx_in at each EOM (VC_MAX_MSGS; heap,
                                     * so a vdev stays small for the 1000-VM test) */
    unsigned msg_head, msg_count;
    uint32_t peer_shutdown;
    bool got_rst, accepted_pending, incoming;
    unsigned credit_violations, credit_updates_rx, credit_requests_tx, pkts_rx;
    long long last_creq_ms;     /* when we last sent CREDIT_REQUEST */
};

struct vdev {
    struct guest g;
    uint64_t cid;
    struct vc_conn c[VC_MAX_CONNS];
    uint32_t listen_port[8];
    unsigned nlisten;
    uint32_t next_port;
    uint32_t next_priv_port;  /* vc_connect_priv's next port, counted from 512 */
    int tx_layout;           /* enum tx_layout */
    uint32_t max_pkt;        /* payload per packet we send (<= 64 KiB) */
    uint32_t default_buf_alloc;
    bool auto_rst;           /* answer packets for unknown connections with RST (as Linux) */
    bool strict_irq;         /* count entries found without an interrupt */
    /* every packet received (ring of the last VC_LOG) */
    struct vhdr log[VC_LOG];
    unsigned nlog;
    unsigned errors;
    char last_err[256];
    unsigned missed_irqs;
    unsigned rx_pkts;
    bool dead;               /* vhost-user connection closed by hostd */
    bool registered;
    bool paused;             /* vdev_pump/poll leave it alone (a guest that stopped reading) */
    bool quiet;              /* count violations but do not print them (expected ones) */
};

/* Defaults only (no I/O); then bring d->g up by hand and vdev_register(d). */
void vdev_init(struct vdev *d, uint64_t cid);
int vdev_register(struct vdev *d);
/* Bring up a guest (handshake + rings) and register it for pumping. */
int vdev_up(struct vdev *d, const char *sock, uint64_t cid, const struct guest_opts *o);
/* Unregister, close everything. */
void vdev_down(struct vdev *d);
/* Forget all connections (after a ring restart), keep the device. */
void vdev_forget_conns(struct vdev *d);

/* Wait up to timeout_ms for activity on any live vdev and process it.
 * Returns the number of packets processed (rx+tx). */
int vdev_pump(int timeout_ms);
/* Process whatever is pending without waiting. */
int vdev_poll(void);

/* Raw: send one packet with this header (len field as given) and payload. */
int vdev_send_pkt(struct vdev *d, const struct vhdr *h, const void *payload, uint32_t len);
/* Packet log: index of the next packet that will be logged; find one after mark. */
unsigned vdev_log_mark(struct vdev *d);
/* Wait until a packet matching (op, src_port, dst_port; 0 = any port) arrives
 * after mark; returns its log entry or NULL on timeout. */
const struct vhdr *vdev_wait_pkt(struct vdev *d, unsigned mark, uint16_t op, uint32_t src_port,
                                 uint32_t dst_port, int timeout_ms);
/* Count logged packets after mark that match (op 0 = any). */
unsigned vdev_count_pkts(struct vdev *d, unsigned mark, uint16_t op, uint32_t src_port, uint32_t dst_port);

/* ---- socket-like API ---- */
/* Connect; NULL on failure with *err = -ECONNREFUSED (RST) / -ETIMEDOUT / ... */
struct vc_conn *vc_connect(struct vdev *d, uint16_t type, uint64_t cid, uint32_t port, int timeout_ms, int *err);
/* The same from a chosen local port (e.g. a privileged one, < 1024, as root's
 * programs in a Linux guest use for the RPC port). */
struct vc_conn *vc_connect_from(struct vdev *d, uint16_t type, uint64_t cid, uint32_t port, uint32_t lport,
                                int timeout_ms, int *err);
/* From the next privileged port in 512..1023, rotating. */
struct vc_conn *vc_connect_priv(struct vdev *d, uint16_t type, uint64_t cid, uint32_t port, int timeout_ms, int *err);
int vc_listen(struct vdev *d, uint32_t port);
struct vc_conn *vc_accept(struct vdev *d, uint32_t port, int timeout_ms);
/* Non-blocking: queue as much as credit and ring allow; returns bytes queued or -errno.
 * SEQPACKET: use vc_send_msg. */
long vc_try_send(struct vc_conn *c, const void *buf, size_t len);
/* Non-blocking: copy out received bytes; 0 = nothing now; -ECONNRESET after RST with nothing left. */
long vc_try_recv(struct vc_conn *c, void *buf, size_t len);
int vc_send_all(struct vc_conn *c, const void *buf, size_t len, int timeout_ms);
int vc_recv_all(struct vc_conn *c, void *buf, size_t len, int timeout_ms);
/* Send len bytes and receive len bytes back (echo), interleaved. */
int vc_echo(struct vc_conn *c, const void *out, void *in, size_t len, int timeout_ms);
/* SEQPACKET: one message (split into packets, EOM on the last). */
int vc_send_msg(struct vc_conn *c, const void *buf, size_t len, int timeout_ms);
/* SEQPACKET: one whole message; returns its length or -errno. */
long vc_recv_msg(struct vc_conn *c, void *buf, size_t cap, int timeout_ms);
/* SHUTDOWN(both) and wait for the peer's RST; 0 if it came, -ETIMEDOUT. *rst_ms = delay. */
int vc_close(struct vc_conn *c, int timeout_ms, long long *rst_ms);
/* Drop local state without telling the peer. */
void vc_forget(struct vc_conn *c);
/* Send a CREDIT_UPDATE now. */
int vc_send_ctrl(struct vc_conn *c, uint16_t op, uint32_t flags);

/* Connect to the echo service, echo n bytes, close. 0 on success. */
int vdev_echo_check(struct vdev *d, size_t n, int timeout_ms, char *why, size_t whylen);

/* simple deterministic data */
void fill_pattern(uint8_t *buf, size_t len, uint32_t seed);
uint32_t crc32_buf(uint32_t crc, const void *buf, size_t len);
