/* vsock glue for the guest RPC service: one rpc_conn per guest connection.
 * The connection owns the MDLs and mappings made through it; closed()
 * releases them (R12) whatever the reason (program exit, reboot, QEMU exit). */
#include "rpc_service.h"

#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "map_engine.h"
#include "rpc_conn.h"
#include "vsock.h"

struct rpc_vconn {
    struct rpc_conn rc;
    struct vsock_conn *vc;
    bool close_requested;
};

static long vsend(void *ctx, const uint8_t *p, size_t n)
{
    struct vsock_conn *vc = ctx;
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

static void kick(void *ctx);

static int rpc_accept(struct vsock_conn *vc, void *ctx, void **priv)
{
    struct hostd *h = ctx;
    struct vm *vm = vsock_conn_vm(vc);
    if (!h->maps || !vm)
        return -ECONNREFUSED;
    struct rpc_vconn *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->vc = vc;
    rpc_conn_init(&p->rc, h->maps, vm, vsock_conn_id(vc), vsend, vc);
    p->rc.kick = kick;
    p->rc.kick_ctx = p;
    *priv = p;
    log_info("rpc: vm %s (cid %llu) conn %llu opened from port %u", vm->name, (unsigned long long)vm->cid,
             (unsigned long long)vsock_conn_id(vc), vsock_conn_peer_port(vc));
    return 0;
}

/* Must be the caller's last use of p: closed() may run inside vsock_conn_close(). */
static void maybe_close(struct rpc_vconn *p)
{
    if (!p->close_requested && rpc_conn_done(&p->rc)) {
        p->close_requested = true;
        vsock_conn_close(p->vc);
    }
}

/* an asynchronous (UserMode) answer was queued */
static void kick(void *ctx)
{
    maybe_close(ctx);
}

static size_t rpc_recv(struct vsock_conn *vc, void *priv, const uint8_t *data, size_t len, bool eom)
{
    struct rpc_vconn *p = priv;
    size_t n = rpc_conn_input(&p->rc, data, len);
    maybe_close(p);
    return n;
}

static void rpc_writable(struct vsock_conn *vc, void *priv)
{
    struct rpc_vconn *p = priv;
    rpc_conn_pump(&p->rc);
    maybe_close(p);
}

static void rpc_closed(struct vsock_conn *vc, void *priv, const char *why)
{
    struct rpc_vconn *p = priv;
    if (!p)
        return;
    log_info("rpc: conn %llu closed after %llu requests: %s", (unsigned long long)p->rc.sess.owner.conn_id,
             (unsigned long long)p->rc.requests, why ? why : "closed");
    rpc_conn_fini(&p->rc, why ? why : "connection closed");
    free(p);
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
    /* the service struct must outlive hostd and carry h as ctx */
    static struct vsock_service svc;
    svc = rpc_svc;
    svc.ctx = h;
    return vsock_register_service(h, &svc);
}
