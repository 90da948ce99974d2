/* Private state of the vsock device, shared by vsock_dev.c (queues),
 * vsock_conn.c (connections, credit, services) and vsock_route.c (sibling
 * VMs), and their white-box tests; the rest of hostd uses include/vsock.h. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "log.h"
#include "virtq.h"
#include "vsock.h"
#include "vsock_pkt.h"

#define VSOCK_BUF_ALLOC (256u * 1024)   /* our receive window per connection */
#define VSOCK_OUT_MAX (256u * 1024)     /* outbound queue per connection (power of 2) */
#define VSOCK_MAX_PKT (64u * 1024)      /* largest payload per packet (Linux's limit too) */
#define VSOCK_MAX_CONNS 256             /* host connections per VM */
#define VSOCK_MAX_SIBS 1024             /* tracked sibling connections a VM initiated */
#define VSOCK_MAX_SIBS_ALL 4096         /* tracked sibling connections a VM is part of */
#define VSOCK_MAX_MSGS 4096             /* queued SEQPACKET message ends per direction */
#define VSOCK_RSTQ_MAX 256              /* connectionless RSTs waiting for rx buffers */
#define VSOCK_FWD_MAX (4u << 20)        /* bytes of sibling packets queued per target */
#define VSOCK_PURGE_MAX 1024           /* longest forward queue walked per aborted conn */
#define VSOCK_FWD_RETRY_MS 5            /* target queue full: retry the sender's tx */
#define VSOCK_FWD_STALL_MS 2000         /* ... and reset what still does not fit after this */
#define VSOCK_TX_BATCH 256              /* tx chains per event before yielding */
#define VSOCK_IN_BUDGET (32u << 20)     /* receive window committed across a VM's conns */
#define VSOCK_CLOSE_TIMEOUT_MS 2000     /* wait for the guest's RST after our SHUTDOWN */
#define VSOCK_HALFCLOSE_TIMEOUT_MS 10000 /* guest SHUTDOWN(SEND): service must finish by then */
#define VSOCK_TRIM_MS 5000              /* free rings idle (empty, unused) for one period */
#define VSOCK_FLUSH_TIMEOUT_MS 30000    /* bound on flushing before our SHUTDOWN */
#define VSOCK_CONN_HASH 256
#define VSOCK_SIB_HASH 256

struct vlist { struct vlist *prev, *next; };

static inline void vlist_init(struct vlist *l) { l->prev = l->next = l; }
static inline bool vlist_empty(const struct vlist *l) { return l->next == l; }
static inline void vlist_add_tail(struct vlist *head, struct vlist *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void vlist_del(struct vlist *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define vlist_entry(ptr, type, member) ((type *)((char *)(ptr) - __builtin_offsetof(type, member)))

/* Byte FIFO with free-running u32 counters (so head/tail are directly the
 * fwd_cnt/rx_cnt or tx_cnt of the credit protocol). Storage is allocated on
 * first data in that direction, freed when it stayed empty and unused for a
 * trim period, and dropped when a connection dies.
 *
 * Per-VM memory worst case (hostile guest, every limit reached):
 *   inbound rings   VSOCK_IN_BUDGET                          32 MiB
 *     (the receive windows we advertise never sum above it; data beyond a
 *     window is a credit violation and resets the connection)
 *   outbound rings  VSOCK_MAX_CONNS * VSOCK_OUT_MAX          64 MiB
 *   message ends    VSOCK_MAX_CONNS * 2 * VSOCK_MAX_MSGS * 8 16 MiB
 *   forward queue   VSOCK_FWD_MAX (+ per-packet overhead)    ~5 MiB
 *   sibling table   VSOCK_MAX_SIBS_ALL * ~48 B               ~0.2 MiB
 *   connections     VSOCK_MAX_CONNS * ~200 B                 ~0.05 MiB
 * about 117 MiB; an idle VM holds only the device struct (~1 KiB), plus
 * the 2 KiB connection hash while it has connections. */
struct byte_ring {
    uint8_t *buf;
    uint32_t head, tail;
    uint32_t trim_seen;          /* tail at the last trim sweep */
};

/* SEQPACKET message ends: ring position where a message ends, plus flags. */
struct msg_end { uint32_t end; uint32_t flags; };
struct msg_fifo {
    struct msg_end *v;
    uint32_t head, n, cap;
};

enum conn_state {
    CONN_OPEN,
    CONN_PEER_SENT_ALL,  /* guest SHUTDOWN(SEND): flush ours, then RST */
    CONN_CLOSING,        /* service closed: flush, SHUTDOWN, wait for RST */
    CONN_DEAD,           /* terminated; freed when the device is idle */
};

#define PEND_RESPONSE 1u
#define PEND_CREDIT_UPDATE 2u
#define PEND_SHUTDOWN 4u

struct vsock_conn {
    struct vsock_dev *dev;
    uint64_t id;
    struct vsock_conn *hnext;    /* hash chain */
    struct vlist all;            /* dev->conns (kept until freed) */
    struct vlist pend;           /* dev->pend when it has something to send */
    bool in_pend;
    uint32_t local_port, peer_port;
    uint16_t type;
    enum conn_state state;
    bool accepted;
    bool credit_req_sent;        /* CREDIT_REQUEST out, waiting for credit */
    bool shutdown_sent;
    bool out_freed;              /* outbound space freed: writable() + re-offer */
    uint8_t peer_shut;           /* VSOCK_SHUTDOWN_* flags the guest sent so far */
    unsigned pending;            /* PEND_* control packets */
    const struct vsock_service *svc;
    void *priv;
    struct byte_ring in, out;    /* in.tail = rx_cnt, in.head = fwd_cnt, out.head = tx_cnt */
    struct msg_fifo in_msgs, out_msgs;
    uint32_t peer_buf_alloc, peer_fwd_cnt;
    uint32_t fwd_cnt_sent;       /* fwd_cnt carried by our last packet */
    uint32_t in_limit;           /* highest fwd_cnt + buf_alloc advertised: the guest
                                  * may send up to here (never lowered) */
    bool window_short;           /* advertised less than VSOCK_BUF_ALLOC (budget) */
    uint32_t recv_flags;         /* SEQPACKET flags of the message recv() ends */
    int64_t deadline_ms;         /* 0: none */
    unsigned in_cb;              /* recv()/writable() of this conn on the stack */
    bool close_deferred;         /* terminated inside one: closed() when it returns */
    char close_why[64];
};

struct rst_ent { uint64_t src_cid; uint32_t src_port, dst_port; uint16_t type; };

struct fwd_pkt {
    struct fwd_pkt *next;
    struct vsock_hdr h;
    uint32_t off;                /* payload bytes already delivered (split over rx buffers) */
    uint8_t data[];
};

/* A sibling connection as seen from one VM; the peer VM holds the mirror
 * entry (local/peer swapped, initiator inverted). */
struct vsock_sib {
    struct vsock_sib *next;
    uint64_t peer_cid;
    uint32_t local_port, peer_port;
    uint16_t type;
    bool initiator;              /* this VM sent the REQUEST */
    bool established;            /* the RESPONSE went through */
    uint8_t shut_local, shut_peer;  /* SHUTDOWN flags sent by this VM / by the peer */
};


struct vsock_svc_entry {
    const struct vsock_service *svc;
    void *ctx;
};

struct vsock_dev {
    char name[64];
    uint64_t cid;
    struct evloop *loop;
    struct virtq *rxq, *txq;
    struct vsock_dev *(*peer)(void *ctx, uint64_t cid);
    void *peer_ctx;
    bool sibling_routing;
    struct vsock_svc_entry svcs[VSOCK_MAX_SERVICES];
    unsigned nsvcs;
    /* The three tables below are allocated on first use and freed when
     * they empty (conn hash, RST queue) or at reset (sibling table): an idle
     * device holds only this struct (one hostd serves a thousand VMs). */
    struct vsock_conn **hash;    /* VSOCK_CONN_HASH buckets; NULL: no conns */
    struct vlist conns;
    unsigned nconns;             /* live (not dead) */
    struct vlist pend;           /* round robin of conns with output */
    struct vsock_sib **sibs;     /* VSOCK_SIB_HASH buckets; NULL: none yet */
    unsigned nsibs, nsibs_out;   /* entries / entries this VM initiated */
    struct rst_ent *rstq;        /* VSOCK_RSTQ_MAX entries; NULL while empty */
    unsigned rst_head, rst_n;
    struct fwd_pkt *fwd_head, *fwd_tail;
    size_t fwd_bytes;
    unsigned fwd_n;              /* packets in the forward queue */
    bool fwd_turn;               /* alternate sibling traffic with our conns */
    int depth;                   /* >0 while processing: defer frees and pumps */
    bool pump_pending;           /* kick_fd signalled, pump not yet run */
    int kick_fd;                 /* eventfd: pump from the loop (-1: no loop) */
    struct ev_handler kick_h;
    bool tx_broken, rx_broken;
    bool tx_blocked;             /* RST queue full: resume tx after rx drains */
    bool tx_more;                /* batch limit hit: resume from the timer */
    bool fwd_blocked;            /* a sibling's forward queue is full: tx waits */
    int64_t fwd_stall_since;     /* first refusal for a full queue; 0: none */
    uint32_t in_budget;          /* VSOCK_IN_BUDGET (tests lower it) */
    uint64_t in_committed;       /* sum over live conns of in_limit - in.head */
    unsigned nshort;             /* conns with window_short */
    int64_t halfclose_ms;        /* VSOCK_HALFCLOSE_TIMEOUT_MS (tests lower it) */
    int64_t trim_at_ms;          /* next ring trim sweep; 0: none scheduled */
    int64_t armed_ms;            /* timerfd expiry set; 0: disarmed */
    bool timer_live;             /* an expiry is set and its tick not yet read */
    bool timer_asap;             /* ... and it is a 1 ns one (fires at once) */
    unsigned timer_sets;         /* timerfd_settime calls (tests count them) */
    bool rx_call, tx_call;       /* used entries pushed: notify once, at the
                                  * outermost leave (one call per queue per
                                  * dispatch, not one per pump round) */
    int timer_fd;
    struct ev_handler timer_h;
    struct vsock_stats st;
    struct log_limit rl;         /* guest-triggered warnings */
};

/* vsock_dev.c */
int64_t vsock_now_ms(void);
bool vsock_ratelimit(struct vsock_dev *dev);
void vsock_dev_enter(struct vsock_dev *dev);
void vsock_dev_leave(struct vsock_dev *dev);   /* outermost: pump output, free dead */
/* Output was queued by the service API: make sure a pump runs, but never on
 * the caller's stack (inside processing: on the way out; outside: from the
 * event loop, next iteration, via kick_fd; without a loop: at the next
 * queue event or timer tick). */
void vsock_dev_schedule_pump(struct vsock_dev *dev);
void vsock_rstq_push(struct vsock_dev *dev, uint64_t src_cid, uint32_t src_port, uint32_t dst_port, uint16_t type);
void vsock_dev_arm_timer(struct vsock_dev *dev);
/* Expire close deadlines and resume tx (the timerfd callback; tests call it). */
void vsock_dev_timer_tick(struct vsock_dev *dev);

/* vsock_conn.c */
const struct vsock_svc_entry *vsock_service_find(const struct vsock_dev *dev, uint32_t port);
struct vsock_conn *vsock_conn_lookup(struct vsock_dev *dev, uint32_t peer_port, uint32_t local_port, uint16_t type);
void vsock_host_rx(struct vsock_dev *dev, const struct vsock_hdr *h, const struct virtq_elem *elem);
void vsock_conn_terminate(struct vsock_conn *c, const char *why, bool send_rst);
void vsock_conn_update_pend(struct vsock_conn *c);
/* Write the connection's next packet into an rx chain; bytes written or 0. */
uint32_t vsock_conn_build(struct vsock_conn *c, const struct virtq_elem *elem);
/* After output: writable() and re-offer buffered input; finish half-closed conns. */
void vsock_conn_after_output(struct vsock_conn *c);
void vsock_conn_free(struct vsock_conn *c);
void vsock_conns_expire(struct vsock_dev *dev, int64_t now);
int64_t vsock_conns_next_deadline(struct vsock_dev *dev);
/* Free rings that stayed empty and unused since the previous sweep. */
bool vsock_conns_trim(struct vsock_dev *dev);   /* true: rings remain */
/* Make sure the timer fires by `when` (cheap when it already does). */
void vsock_dev_timer_by(struct vsock_dev *dev, int64_t when);

/* vsock_route.c */
/* false: the target's forward queue is full; leave the packet in the ring, retry later */
bool vsock_route_rx(struct vsock_dev *dev, const struct vsock_hdr *h, const struct virtq_elem *elem);
uint32_t vsock_fwd_build(struct vsock_dev *dev, const struct virtq_elem *elem);
void vsock_route_reset(struct vsock_dev *dev);
