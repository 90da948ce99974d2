/* One guest RPC stream: incremental framing with flow control, dispatch to
 * the handlers, a bounded output queue. Transport-neutral: the transport
 * gives a send function (bytes sent, or -EAGAIN) and feeds input. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "rpc_handlers.h"
#include "rpc_outq.h"

#define RPC_OUTQ_HIGH (256u * 1024u) /* stop taking input while this much output waits */

typedef long (*rpc_send_fn)(void *ctx, const uint8_t *p, size_t n);

struct rpc_conn {
    struct rpc_session sess;
    struct frame_reader rd;
    struct rpc_outq out;
    rpc_send_fn send;
    void *send_ctx;
    bool closing;        /* protocol error: no more input; close once output drained */
    bool flushing, processing; /* re-entrancy guards: send may call writable() */
    uint64_t requests;
    /* called after an asynchronous completion was queued (the transport may
     * need to close or re-arm); optional */
    void (*kick)(void *kick_ctx);
    void *kick_ctx;
};

void rpc_conn_init(struct rpc_conn *c, struct map_engine *eng, struct vm *vm, uint64_t conn_id,
                   rpc_send_fn send, void *send_ctx);
/* Offer stream bytes; returns how many were consumed (the rest is offered again later). */
size_t rpc_conn_input(struct rpc_conn *c, const uint8_t *data, size_t len);
/* Output space freed: flush, then handle frames still buffered. */
void rpc_conn_pump(struct rpc_conn *c);
/* True once a protocol error was answered and all output is sent: close now. */
bool rpc_conn_done(const struct rpc_conn *c);
/* The stream is gone: release everything the connection held (leak report). */
void rpc_conn_fini(struct rpc_conn *c, const char *why);
