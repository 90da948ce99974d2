/* Guest RPC stream handling: an fconn dispatching to rpc_handle_request().
 *
 * No re-entrancy guards: fconn is not re-entrant, and nothing here re-enters
 * it. send is the transport's, and the vsock service contract (vsock.h) says
 * vsock_conn_send() never calls back into the service. dispatch() runs the
 * engine, which never completes a UserMode map inside map_engine_map(): it
 * returns -EINPROGRESS after queueing MapInto for the consumer (that push
 * only queues and re-arms, never closes), and done() comes later from the
 * host API (consumer answer or departure) or its expiry timer. So
 * rpc_conn_map_done() never runs inside fconn_input/fconn_pump, and when it
 * runs the connection is paused (FCONN_LATER) until it resumes it. */
#include "rpc_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void rpc_rx_budget_init(struct fconn_budget *b)
{
    memset(b, 0, sizeof(*b));
    b->cap = RPC_RX_VM_CAP;
    b->refusal = "too much RPC input buffered for this VM";
}

size_t rpc_rx_budget_buffered(const struct fconn_budget *b)
{
    return b->used;
}

/* The RPC port never passes descriptors. */
static long conn_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct rpc_conn *c = ctx;
    return c->send(c->send_ctx, p, n);
}

static int conn_dispatch(void *ctx, struct fconn *fc, const mdl_envelope *req)
{
    struct rpc_conn *c = ctx;
    uint8_t *f;
    size_t n;
    int rc = rpc_handle_request(&c->sess, req, &f, &n);
    if (rc == 0)
        fconn_queue(fc, f, n);
    return rc == 1 ? FCONN_LATER : rc;
}

static void conn_stopping(void *ctx, int err, const char *what)
{
    struct rpc_conn *c = ctx;
    const char *vm = map_vm_name(c->sess.owner.vm);
    if (err == -ENOSPC && c->fc.cfg.budget)
        log_warn_limited(c->rl, vm, "rpc: vm %s: RPC input buffered across its connections would pass %u MiB", vm,
                         (unsigned)(c->fc.cfg.budget->cap >> 20));
    log_warn_limited(c->rl, vm, "rpc: vm %s conn %llu: %s (%s); closing", vm,
                     (unsigned long long)c->sess.owner.conn_id, what, strerror(-err));
}

static const struct fconn_ops conn_ops = {
    .send = conn_send,
    .dispatch = conn_dispatch,
    .stopping = conn_stopping,
};

void rpc_conn_init(struct rpc_conn *c, struct map_engine *eng, struct map_vm *vm, uint64_t conn_id,
                   rpc_send_fn send, void *send_ctx, struct fconn_budget *budget)
{
    memset(c, 0, sizeof(*c));
    c->sess.eng = eng;
    c->sess.owner.vm = vm;
    c->sess.owner.conn_id = conn_id;
    c->sess.version = 0;
    c->sess.done = rpc_conn_map_done;
    c->sess.done_ctx = c;
    c->sess.notice_ctx = c;
    c->send = send;
    c->send_ctx = send_ctx;
    struct fconn_config cfg = { .out_high = RPC_OUTQ_HIGH, .budget = budget, .name_empty_body = true };
    fconn_init(&c->fc, &conn_ops, c, &cfg);
}

/* A UserMode Map was answered by its consumer: send the response, go on. */
void rpc_conn_map_done(void *ctx, int err, const struct map_obj *m, const char *detail)
{
    struct rpc_conn *c = ctx;
    uint8_t *f;
    size_t n;
    if (!c->sess.pending)
        return;
    c->sess.pending = false;
    if (rpc_encode_map_reply(c->sess.pending_id, err, detail, m, &f, &n) == 0)
        fconn_queue(&c->fc, f, n);
    else
        fconn_fail(&c->fc, -EINVAL, "response could not be encoded");
    fconn_resume(&c->fc);
}

bool rpc_conn_copy_step(struct rpc_conn *c, uint64_t budget)
{
    if (!c->sess.copy)
        return true;
    bool done = false;
    map_copy_step(c->sess.eng, c->sess.copy, budget, &done);
    if (!done)
        return false;
    uint8_t *f;
    size_t n;
    if (rpc_encode_copy_reply(&c->sess, &f, &n) == 0)
        fconn_queue(&c->fc, f, n);
    else
        fconn_fail(&c->fc, -EINVAL, "response could not be encoded");
    fconn_resume(&c->fc);
    return true;
}

void rpc_conn_grant_notice(void *ctx, uint64_t granter_cid, uint64_t ref, const char *reason)
{
    struct rpc_conn *c = ctx;
    uint8_t *f;
    size_t n;
    if (rpc_encode_revoked_notice(granter_cid, ref, reason, &f, &n) < 0 || fconn_push(&c->fc, f, n, NULL, 0, 0) < 0)
        log_warn_limited(c->rl, map_vm_name(c->sess.owner.vm), "rpc: conn %llu: grant notice lost (out of memory)",
                         (unsigned long long)c->sess.owner.conn_id);
    if (c->sess.later)
        c->sess.later(c->sess.later_ctx);
}

size_t rpc_conn_input(struct rpc_conn *c, const uint8_t *data, size_t len)
{
    return fconn_input(&c->fc, data, len);
}

void rpc_conn_pump(struct rpc_conn *c)
{
    fconn_pump(&c->fc);
}

bool rpc_conn_done(const struct rpc_conn *c)
{
    return fconn_done(&c->fc);
}

void rpc_conn_fini(struct rpc_conn *c, const char *why)
{
    if (c->sess.copy) {
        map_copy_free(c->sess.eng, c->sess.copy);
        c->sess.copy = NULL;
    }
    if (c->sess.eng)
        map_engine_release(c->sess.eng, &c->sess.owner, false, why ? why : "connection closed");
    fconn_fini(&c->fc);
}
