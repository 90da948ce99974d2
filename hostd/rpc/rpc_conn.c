/* Guest RPC stream handling. */
#include "rpc_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rpc_reply.h"

/* Frame reader capacity per VM across its RPC connections (RPC_RX_VM_CAP).
 * Few VMs: a list; an entry goes away when its VM holds nothing. */
struct rx_acct {
    struct rx_acct *next;
    const struct map_vm *vm;
    size_t bytes;
};
static struct rx_acct *rx_accts;

static struct rx_acct *rx_acct_of(const struct map_vm *vm, bool create)
{
    for (struct rx_acct *a = rx_accts; a; a = a->next)
        if (a->vm == vm)
            return a;
    if (!create)
        return NULL;
    struct rx_acct *a = calloc(1, sizeof(*a));
    if (a) {
        a->vm = vm;
        a->next = rx_accts;
        rx_accts = a;
    }
    return a;
}

/* Charge this connection `bytes` (replacing its previous charge). Fails
 * (charging nothing new) when the VM would pass RPC_RX_VM_CAP. */
static int rx_charge(struct rpc_conn *c, size_t bytes)
{
    if (bytes == c->rx_charged)
        return 0;
    struct rx_acct *a = rx_acct_of(c->sess.owner.vm, bytes > c->rx_charged);
    if (!a)
        return bytes > c->rx_charged ? -ENOMEM : 0;
    size_t others = a->bytes - c->rx_charged;
    if (bytes > c->rx_charged && (bytes > RPC_RX_VM_CAP || others > RPC_RX_VM_CAP - bytes))
        return -ENOSPC;
    a->bytes = others + bytes;
    c->rx_charged = bytes;
    if (a->bytes == 0) {
        for (struct rx_acct **pp = &rx_accts; *pp; pp = &(*pp)->next)
            if (*pp == a) {
                *pp = a->next;
                break;
            }
        free(a);
    }
    return 0;
}

size_t rpc_conn_vm_buffered(const struct map_vm *vm)
{
    struct rx_acct *a = rx_acct_of(vm, false);
    return a ? a->bytes : 0;
}

void rpc_conn_init(struct rpc_conn *c, struct map_engine *eng, struct map_vm *vm, uint64_t conn_id,
                   rpc_send_fn send, void *send_ctx)
{
    memset(c, 0, sizeof(*c));
    c->sess.eng = eng;
    c->sess.owner.vm = vm;
    c->sess.owner.conn_id = conn_id;
    c->sess.version = 0;
    c->sess.done = rpc_conn_map_done;
    c->sess.done_ctx = c;
    frame_reader_init(&c->rd, MDLMAP_MAX_FRAME);
    rpc_outq_init(&c->out);
    c->send = send;
    c->send_ctx = send_ctx;
    c->closing = false;
    c->requests = 0;
}

static void flush(struct rpc_conn *c)
{
    if (c->flushing)
        return; /* the transport called back from inside our send */
    c->flushing = true;
    int rc = rpc_outq_flush(&c->out, c->send, c->send_ctx);
    c->flushing = false;
    if (rc < 0 && !c->closing) {
        log_warn("rpc: conn %llu: send failed: %s", (unsigned long long)c->sess.owner.conn_id,
                 strerror(-rc));
        c->closing = true;
    }
}

static void queue(struct rpc_conn *c, uint8_t *frame, size_t len)
{
    if (rpc_outq_push(&c->out, frame, len) < 0) {
        log_err("rpc: conn %llu: out of memory queueing a response", (unsigned long long)c->sess.owner.conn_id);
        c->closing = true;
    }
    free(frame);
}

/* Answer a frame that cannot be handled (err: its status), then stop reading. */
static void fail(struct rpc_conn *c, int err, const char *what)
{
    uint8_t *f;
    size_t n;
    log_warn("rpc: conn %llu: %s; closing", (unsigned long long)c->sess.owner.conn_id, what);
    if (rpc_reply_error(0, err, what, &f, &n) == 0)
        queue(c, f, n);
    c->closing = true;
}

static void protocol_error(struct rpc_conn *c, const char *what)
{
    fail(c, -EINVAL, what);
}

static void process(struct rpc_conn *c)
{
    if (c->processing)
        return;
    c->processing = true;
    while (!c->closing && !c->sess.pending && c->out.bytes < RPC_OUTQ_HIGH) {
        const uint8_t *p;
        size_t plen;
        int r = frame_reader_next(&c->rd, &p, &plen);
        if (r == 0)
            break;
        if (r < 0) {
            protocol_error(c, "frame length is 0 or exceeds the 1 MiB limit");
            break;
        }
        mdl_envelope *req;
        int rc = frame_decode(p, plen, &req);
        if (rc < 0) {
            protocol_error(c, rc == -EPROTO ? "envelope has no body" : "undecodable envelope");
            break;
        }
        uint8_t *f;
        size_t n;
        c->requests++;
        rc = rpc_handle_request(&c->sess, req, &f, &n);
        frame_envelope_free(req);
        if (rc < 0) {
            protocol_error(c, "response could not be encoded");
            break;
        }
        if (rc == 0) {
            queue(c, f, n);
            flush(c);
        }
    }
    c->processing = false;
    flush(c);
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
        queue(c, f, n);
    else
        protocol_error(c, "response could not be encoded");
    process(c);
    if (c->kick)
        c->kick(c->kick_ctx);
}

size_t rpc_conn_input(struct rpc_conn *c, const uint8_t *data, size_t len)
{
    if (c->closing)
        return len; /* discard: the connection is being closed */
    process(c);
    if (c->closing || c->out.bytes >= RPC_OUTQ_HIGH)
        return c->closing ? len : 0;
    size_t n = frame_reader_room(&c->rd);
    if (n > len)
        n = len;
    if (n && rx_charge(c, frame_reader_cap_after(&c->rd, n)) < 0) {
        log_warn("rpc: vm %s: RPC input buffered across its connections would pass %u MiB",
                 map_vm_name(c->sess.owner.vm), RPC_RX_VM_CAP >> 20);
        fail(c, -ENOMEM, "too much RPC input buffered for this VM");
        flush(c);
        return len;
    }
    if (n && frame_reader_feed(&c->rd, data, n) < 0) {
        log_err("rpc: conn %llu: out of memory buffering input", (unsigned long long)c->sess.owner.conn_id);
        c->closing = true;
        return len;
    }
    rx_charge(c, c->rd.cap); /* the actual capacity: never more than charged above */
    process(c);
    return n;
}

void rpc_conn_pump(struct rpc_conn *c)
{
    flush(c);
    process(c);
}

bool rpc_conn_done(const struct rpc_conn *c)
{
    return c->closing && rpc_outq_empty(&c->out);
}

void rpc_conn_fini(struct rpc_conn *c, const char *why)
{
    if (c->sess.eng)
        map_engine_release(c->sess.eng, &c->sess.owner, false, why ? why : "connection closed");
    frame_reader_free(&c->rd);
    rx_charge(c, 0);
    rpc_outq_free(&c->out);
}
