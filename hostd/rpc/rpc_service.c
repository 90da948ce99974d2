/* vsock glue for the guest RPC service: one rpc_conn per guest connection.
 * The connection owns the MDLs and mappings made through it; closed()
 * releases them (R12) whatever the reason (program exit, reboot, QEMU exit). */
#include "rpc_service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map_engine.h"
#include "rpc_conn.h"
#include "vsock.h"

/* Lifetime: vsock calls closed() when the stream is gone. The device defers
 * its pump, so vsock_conn_send()/vsock_conn_close() never call closed()
 * synchronously today; this layer does not rely on that (UserMode
 * completions, consumer removal and expiry arrive from outside device
 * processing, and an older device pumped inline). So every entry into
 * the rpc code -- recv, writable, the engine's done() -- holds p (busy);
 * closed() while busy only marks p gone (vsend then fails without touching
 * the freed vsock_conn) and the last entry out releases it. */
/* Each VM's receive budget (RPC_RX_VM_CAP), shared by its connections;
 * it goes away with the VM's last connection. */
struct rpc_vm_budget {
    struct rpc_vm_budget *next;
    const struct vm *vm;
    unsigned conns;
    struct fconn_budget b;
};

/* The registration: the vsock service and what its connections share. */
struct rpc_service {
    struct vsock_service svc;
    struct hostd *h;
    struct rpc_vm_budget *budgets;
};

static struct rpc_vm_budget *budget_get(struct rpc_service *s, const struct vm *vm)
{
    struct rpc_vm_budget *b;
    for (b = s->budgets; b; b = b->next)
        if (b->vm == vm)
            break;
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b)
            return NULL;
        b->vm = vm;
        rpc_rx_budget_init(&b->b);
        b->next = s->budgets;
        s->budgets = b;
    }
    b->conns++;
    return b;
}

static void budget_put(struct rpc_service *s, struct rpc_vm_budget *b)
{
    if (--b->conns)
        return;
    for (struct rpc_vm_budget **pp = &s->budgets; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    free(b);
}

struct rpc_vconn {
    struct rpc_conn rc;
    struct rpc_service *svc;
    struct rpc_vm_budget *budget;
    struct vsock_conn *vc; /* NULL once gone */
    unsigned busy;         /* entries into the rpc code in progress */
    bool gone;             /* closed() ran while busy: release on the way out */
    bool close_requested;
    char *why;             /* closed()'s reason, kept for the deferred release */
};

static long vsend(void *ctx, const uint8_t *p, size_t n)
{
    struct rpc_vconn *v = ctx;
    if (v->gone)
        return -EPIPE; /* the stream went away inside an earlier send */
    struct vsock_conn *vc = v->vc;
    size_t space = vsock_conn_send_space(vc);
    if (space == 0)
        return -EAGAIN;
    if (n > space)
        n = space;
    int rc = vsock_conn_send(vc, p, n, false);
    if (rc < 0)
        return rc;
    return (long)n;
}

static void map_done(void *ctx, int err, const struct map_obj *m, const char *detail);

static int rpc_accept(struct vsock_conn *vc, void *ctx, void **priv)
{
    struct rpc_service *s = ctx;
    struct hostd *h = s->h;
    struct vm *vm = vsock_conn_vm(vc);
    if (!h->maps || !vm)
        return -ECONNREFUSED;
    struct rpc_vconn *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->budget = budget_get(s, vm);
    if (!p->budget) {
        free(p);
        return -ENOMEM;
    }
    p->svc = s;
    p->vc = vc;
    rpc_conn_init(&p->rc, h->maps, vm, vsock_conn_id(vc), vsend, p, &p->budget->b);
    p->rc.sess.done = map_done;
    p->rc.sess.done_ctx = p;
    *priv = p;
    log_info("rpc: vm %s (cid %llu) conn %llu opened from port %u", vm->name, (unsigned long long)vm->cid,
             (unsigned long long)vsock_conn_id(vc), vsock_conn_peer_port(vc));
    return 0;
}

static void release(struct rpc_vconn *p, const char *why)
{
    log_info("rpc: conn %llu closed after %llu requests: %s", (unsigned long long)p->rc.sess.owner.conn_id,
             (unsigned long long)p->rc.fc.requests, why ? why : "closed");
    rpc_conn_fini(&p->rc, why ? why : "connection closed");
    budget_put(p->svc, p->budget);
    free(p->why);
    free(p);
}

static void enter(struct rpc_vconn *p)
{
    p->busy++;
}

/* Leave the rpc code: the caller's last use of p (p may be freed here, by
 * release(), or by a closed() that arrived while busy). */
static void leave(struct rpc_vconn *p)
{
    if (--p->busy)
        return;
    if (p->gone) {
        release(p, p->why ? p->why : "connection closed");
        return;
    }
    if (!p->close_requested && rpc_conn_done(&p->rc)) {
        p->close_requested = true;
        vsock_conn_close(p->vc);
    }
}

/* an asynchronous (UserMode) answer from the engine (consumer answered,
 * consumer went away, answer timed out) */
static void map_done(void *ctx, int err, const struct map_obj *m, const char *detail)
{
    struct rpc_vconn *p = ctx;
    enter(p);
    rpc_conn_map_done(&p->rc, err, m, detail);
    leave(p);
}

static size_t rpc_recv(struct vsock_conn *vc, void *priv, const uint8_t *data, size_t len, bool eom)
{
    struct rpc_vconn *p = priv;
    enter(p);
    size_t n = rpc_conn_input(&p->rc, data, len);
    leave(p);
    return n;
}

static void rpc_writable(struct vsock_conn *vc, void *priv)
{
    struct rpc_vconn *p = priv;
    enter(p);
    rpc_conn_pump(&p->rc);
    leave(p);
}

static void rpc_closed(struct vsock_conn *vc, void *priv, const char *why)
{
    struct rpc_vconn *p = priv;
    if (!p)
        return;
    if (p->busy) {
        /* inside one of our own calls: no more sends; release on the way out */
        log_debug("rpc: conn %llu: stream gone while busy (%s); release deferred",
                  (unsigned long long)p->rc.sess.owner.conn_id, why ? why : "closed");
        p->gone = true;
        p->vc = NULL;
        p->rc.fc.closing = true;
        p->why = why ? strdup(why) : NULL;
        return;
    }
    release(p, why);
}

static const struct vsock_service rpc_svc = {
    .name = "mdlmap-rpc",
    .port = MDLMAP_PORT_RPC,
    .stream = true,
    .seqpacket = false,
    .accept = rpc_accept,
    .recv = rpc_recv,
    .writable = rpc_writable,
    .closed = rpc_closed,
    .ctx = NULL,
};

int rpc_service_register(struct hostd *h)
{
    /* the service struct must outlive hostd and carry the registration as ctx */
    static struct rpc_service svc;
    svc.svc = rpc_svc;
    svc.svc.ctx = &svc;
    svc.h = h;
    h->rpc = &svc;
    return vsock_register_service(h, &svc.svc);
}
