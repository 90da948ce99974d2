/* Internals of the host API server shared by host_api.c, host_api_access.c
 * and host_api_consumer.c. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "fconn.h"
#include "frame.h"
#include "evloop.h"
#include "host_api.h"
#include "host_api_handlers.h"
#include "log.h"
#include "map_engine.h"

/* Connections: API_MAX_CLIENTS for everyone; privileged peers (root,
 * hostd's uid, --api-admin) may use API_PRIV_RESERVE more, so that filling
 * the limit never locks the administrator out. */
#define API_MAX_CLIENTS 64
#define API_PRIV_RESERVE 16
#define API_OUTQ_HIGH (2u * 1024u * 1024u)
#define API_SNDBUF (int)(MDLMAP_MAX_FRAME + 64u * 1024u) /* API socket send buffer (host_api.c) */

#define API_FRAME_TIMEOUT_MS 5000u     /* a started frame must complete by then */
#define API_CONSUMER_TIMEOUT_MS 10000u /* a UserMode consumer must answer MapInto by then */
/* A consumer's queue of MapInto messages hostd could not send yet (the
 * consumer is not reading): at most this many fds and bytes. A MapInto that
 * does not fit fails (STATUS_INSUFFICIENT_RESOURCES to the guest); a
 * consumer that stays over its bound for its answer timeout is disconnected.
 * UnmapFrom messages are not refused (the consumer must learn of every
 * unmap); they are bounded by its established mappings. */
#define API_CONSUMER_QUEUE_FDS 64u
#define API_CONSUMER_QUEUE_BYTES (1024u * 1024u)

/* Descriptors of replies (PhysMap) a client has not read yet, held by hostd
 * per connection: one PhysMap of the largest memory table. A request that
 * would pass it is refused (STATUS_INSUFFICIENT_RESOURCES) until the client
 * reads. */
#define API_REPLY_QUEUE_FDS 64u
_Static_assert(API_REPLY_QUEUE_FDS <= OUTQ_MAX_FDS, "one reply's fds fit one queued frame");
_Static_assert(HOST_API_MAX_REPLY_FDS <= OUTQ_MAX_FDS, "one reply's fds fit one queued frame");

_Static_assert(HOST_API_MAX_CONSUMER_RULES <= 64, "consumer rules are a 64-bit mask per peer");

/* A subscriber's events wait in its connection's output queue. An event is
 * dropped (and counted in the next one's Event.dropped) while that queue
 * holds API_EVENT_QUEUE_BYTES of output (answers included) or
 * API_EVENT_QUEUE_EVENTS events not yet taken by the kernel: per subscriber
 * at most 1024 events and 256 KiB of data (an event frame is at most about
 * 600 bytes: strings are bounded), about 600 KiB of hostd memory with the
 * queue's per-frame overhead. */
#define API_EVENT_QUEUE_EVENTS 1024u
#define API_EVENT_QUEUE_BYTES (256u * 1024u)
#define API_EVENT_DETAIL_MAX 255u /* an event's detail is cut to this many bytes */

/* A connection's subscription (host_api_events.c). */
struct api_sub {
    unsigned id;              /* on the bus; 0: not subscribed */
    uint64_t request_id;      /* the Subscribe's: every event carries it */
    char vm[64];              /* filter; "": all VMs */
    uint64_t dropped;         /* events lost since the last one queued */
    uint64_t *ends;           /* ring: stream offset where each queued event ends */
    unsigned head, n;         /* oldest entry, entries */
};

/* What a peer may do, fixed at accept from its credentials. */
struct api_peer {
    uid_t uid;
    pid_t pid;
    bool privileged;         /* root, hostd's uid, --api-admin: every right, admitted beyond the limit */
    bool can_read, can_write;
    uint64_t consumer_rules; /* bit i: cfg.consumers[i] names this peer */
};

struct api_qmp_pending;

struct api_client {
    struct host_api *api;
    int fd;
    struct ev_handler h;
    struct fconn fc;        /* framing, output queue, protocol errors */
    bool dead;              /* closed; memory freed after the event batch */
    uint64_t consumer_id;   /* registered UserMode consumer, or 0 */
    bool big_sndbuf;        /* SO_SNDBUF raised for guest-memory reads */
    struct api_peer peer;
    uint64_t last_active_ms;  /* last byte in or out: the oldest idle client is evicted first */
    uint64_t partial_since_ms; /* an incomplete frame is buffered since then; 0: none */
    uint64_t partial_requests; /* fc.requests when partial_since_ms was set */
    uint64_t over_since_ms;   /* consumer: a MapInto did not fit its queue at this time; 0: not over */
    uint64_t sent_bytes;      /* bytes the peer has taken */
    uint64_t sent_at_over;    /* sent_bytes when over_since_ms was set */
    char consumer_name[64];   /* the registered consumer's name (events) */
    struct api_sub sub;       /* event subscription */
    struct api_qmp_pending *qmp_pending; /* the request waiting for QEMU (at most one: FCONN_LATER) */
    struct api_client *prev, *next;
};

struct host_api {
    struct evloop *loop;
    struct map_engine *eng;
    struct api_ctx ctx;         /* what the request handlers see */
    struct host_api_config cfg; /* path points into path[] */
    char path[108];
    int fd;
    struct ev_handler h;
    int tfd;                /* timerfd: expiries and timeouts */
    struct ev_handler th;
    bool timer_armed;
    unsigned tick_ms;
    struct api_client *clients;
    unsigned nclients;
    struct log_limit refuse_log; /* connection refusals and evictions */
    struct log_limit deny_log;   /* requests refused for lack of rights */
    struct log_limit op_log;     /* per-request audit lines (api_ctx.op_log) */
};

/* Re-arm epoll only (safe from any context: never closes the client). */
void api_client_arm(struct api_client *c);
/* Start the expiry tick (idempotent). */
void api_timer_arm(struct host_api *api);
/* host_api_consumer.c: true if req was a consumer message (handled, maybe answered). */
bool api_consumer_message(struct api_client *c, const mdl_envelope *req);
/* host_api_consumer.c: the client, a consumer, goes away (CONSUMER_LOST, then
 * the engine fails or orphans its mappings). */
void api_consumer_lost(struct api_client *c, const char *why);
/* host_api_events.c: true if req was a Subscribe (answered). The read right
 * was checked by the caller. */
bool api_events_message(struct api_client *c, const mdl_envelope *req);
/* host_api_events.c: the client goes away: leave the bus, free the queue. */
void api_events_stop(struct api_client *c);
/* host_api_events.c: publish ev if anyone wants its type. */
void api_publish(struct host_api *api, struct event *ev);
/* host_api_consumer.c: the consumer's queue went over its bound at
 * over_since_ms and the consumer has not read it back under half of the bound
 * within its answer timeout: it is to be disconnected. Clears over_since_ms
 * once it has read and is under half. (Withdrawn maps do not count as
 * reading: a consumer that takes nothing would otherwise stay forever.) */
bool api_consumer_stalled(struct api_client *c, uint64_t now_ms);
/* A request dispatch() deferred (FCONN_LATER) is answered: queue frame
 * (NULL: it could not be encoded, the client is dropped), take the
 * requests that waited behind it, flush. May close c. */
void api_deferred_answer(struct api_client *c, uint8_t *frame, size_t len);
/* host_api_qmp.c: VcpuState and RunState (QEMU's QMP socket). */
bool api_qmp_request(const mdl_envelope *req);
/* Answer now (0), or start the QMP calls and return FCONN_LATER; a negative
 * errno when no answer could be encoded. */
int api_qmp_dispatch(struct api_client *c, const mdl_envelope *req);
/* The client is going away: cancel its pending QMP call, if any. */
void api_qmp_cancel(struct api_client *c);
/* host_api_access.c */
int api_peer_rights(const struct host_api *api, int fd, struct api_peer *p);
bool api_peer_may_register(const struct host_api *api, const struct api_peer *p, const char *name);
/* Answer req with STATUS_ACCESS_DENIED (detail: what is missing) and log it. */
void api_deny(struct api_client *c, const mdl_envelope *req, const char *what);
