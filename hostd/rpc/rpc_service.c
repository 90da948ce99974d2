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
struct rpc_vconn {
    struct rpc_conn rc;
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

/* The service, and what it serves on one VM's device (the accept ctx). */
struct rpc_vm {
    struct rpc_service *svc;
    struct map_vm *vm;
    struct rpc_vm *next;
};

struct rpc_service {
    struct map_engine *eng;
    struct rpc_vm *vms;
};

static int rpc_accept(struct vsock_conn *vc, void *ctx, void **priv)
{
    struct rpc_vm *rv = ctx;
    struct rpc_vconn *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->vc = vc;
    rpc_conn_init(&p->rc, rv->svc->eng, rv->vm, vsock_conn_id(vc), vsend, p);
    p->rc.sess.done = map_done;
    p->rc.sess.done_ctx = p;
    *priv = p;
    log_info("rpc: vm %s (cid %llu) conn %llu opened from port %u", map_vm_name(rv->vm),
             (unsigned long long)map_vm_cid(rv->vm), (unsigned long long)vsock_conn_id(vc),
             vsock_conn_peer_port(vc));
    return 0;
}

static void release(struct rpc_vconn *p, const char *why)
{
    log_info("rpc: conn %llu closed after %llu requests: %s", (unsigned long long)p->rc.sess.owner.conn_id,
             (unsigned long long)p->rc.requests, why ? why : "closed");
    rpc_conn_fini(&p->rc, why ? why : "connection closed");
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
        p->rc.closing = true;
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
};

struct rpc_service *rpc_service_new(struct map_engine *eng)
{
    if (!eng)
        return NULL;
    struct rpc_service *s = calloc(1, sizeof(*s));
    if (s)
        s->eng = eng;
    return s;
}

void rpc_service_free(struct rpc_service *s)
{
    if (!s)
        return;
    while (s->vms) {
        struct rpc_vm *rv = s->vms;
        s->vms = rv->next;
        free(rv);
    }
    free(s);
}

int rpc_service_attach(struct rpc_service *s, struct vsock_dev *dev, struct map_vm *vm)
{
    struct rpc_vm *rv = calloc(1, sizeof(*rv));
    if (!rv)
        return -ENOMEM;
    rv->svc = s;
    rv->vm = vm;
    int rc = vsock_dev_add_service(dev, &rpc_svc, rv);
    if (rc < 0) {
        free(rv);
        return rc;
    }
    rv->next = s->vms;
    s->vms = rv;
    return 0;
}
