/* One guest RPC stream: a framed connection (fconn) whose requests go to the
 * RPC handlers. Transport-neutral: the transport gives a send function
 * (bytes sent, or -EAGAIN) and feeds input. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fconn.h"
#include "log.h"
#include "frame.h"
#include "rpc_handlers.h"

#define RPC_OUTQ_HIGH (256u * 1024u) /* stop taking input while this much output waits */
/* Input buffered in the frame readers of all RPC connections of one VM.
 * A reader grows to at most one maximal frame plus its header (1 MiB + 4)
 * and keeps its capacity until the connection closes, so without this a
 * guest could pin VSOCK_MAX_CONNS (256) x 1 MiB = 256 MiB per VM by leaving
 * a partial maximal frame on every connection. With it the worst case is
 * RPC_RX_VM_CAP per VM (16 MiB):
 * growth is checked before the reader reallocates, so it is never passed
 * even transiently. The connection whose input would pass it gets
 * STATUS_INSUFFICIENT_RESOURCES and is closed. */
#define RPC_RX_VM_CAP (16u * 1024u * 1024u)

typedef long (*rpc_send_fn)(void *ctx, const uint8_t *p, size_t n);

struct rpc_conn {
    struct rpc_session sess;
    struct fconn fc;
    rpc_send_fn send;
    void *send_ctx;
    struct log_limit *rl;        /* the VM's limiter for the warnings it causes (NULL: none) */
};

/* The receive budget of one VM (RPC_RX_VM_CAP), shared by all its RPC
 * connections. Owned by whoever owns the VM's connections; it must outlive
 * them. */
void rpc_rx_budget_init(struct fconn_budget *b);
/* Bytes of frame reader capacity held by the connections sharing b. */
size_t rpc_rx_budget_buffered(const struct fconn_budget *b);

/* budget: the VM's receive budget (see above). */
void rpc_conn_init(struct rpc_conn *c, struct map_engine *eng, struct map_vm *vm, uint64_t conn_id,
                   rpc_send_fn send, void *send_ctx, struct fconn_budget *budget);
/* The session's UserMode completion (the default sess.done). It runs outside
 * any call into the connection: the engine completes UserMode maps from the
 * host API side and its timer, never from inside map_engine_map. */
void rpc_conn_map_done(void *ctx, int err, const struct map_obj *m, const char *detail);
/* Run up to budget bytes of the connection's grant copy; when it finishes,
 * its reply is queued and the connection resumes. True when no copy is left. */
bool rpc_conn_copy_step(struct rpc_conn *c, uint64_t budget);
/* The engine's notice hook (map_grant_hooks.notice): a grant this
 * connection used was revoked. Queues a GrantRevokedNotice and asks for a
 * later flush (sess.later); never sends from inside the engine. */
void rpc_conn_grant_notice(void *ctx, uint64_t granter_cid, uint64_t ref, const char *reason);
/* Offer stream bytes; returns how many were consumed (the rest is offered again later). */
size_t rpc_conn_input(struct rpc_conn *c, const uint8_t *data, size_t len);
/* Output space freed: flush, then handle frames still buffered. */
void rpc_conn_pump(struct rpc_conn *c);
/* True once a protocol error was answered and all output is sent: close now. */
bool rpc_conn_done(const struct rpc_conn *c);
/* The stream is gone: release everything the connection held (leak report). */
void rpc_conn_fini(struct rpc_conn *c, const char *why);
