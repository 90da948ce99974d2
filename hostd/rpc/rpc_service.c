/* vsock glue for the guest RPC service: one rpc_conn per guest connection.
 * The connection owns the MDLs and mappings made through it; closed()
 * releases them (R12) whatever the reason (program exit, reboot, QEMU exit).
 *
 * Lifetime rests on the vsock service contract (vsock.h): no vsock_conn_*
 * call re-enters a callback, and closed() never runs while recv() or
 * writable() is on the stack. The engine's done() runs from the host API
 * side, outside any vsock callback. So a connection is freed only in
 * closed(), and nothing here can be running on it then. */
#include "rpc_service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map_engine.h"
#include "rpc_conn.h"
#include "vsock.h"

/* What the service holds for one VM's device (the accept ctx): the engine's
 * VM and the receive budget (RPC_RX_VM_CAP) its connections share. */
struct rpc_vm {
    struct rpc_service *svc;
    struct map_vm *vm;
    struct fconn_budget budget;
    struct log_limit rl;         /* warnings this VM's connections cause */
    struct rpc_vm *next;
};

struct rpc_service {
    struct map_engine *eng;
    bool privileged_only;
    struct rpc_vm *vms;
};

struct rpc_vconn {
    struct rpc_conn rc;
    struct vsock_conn *vc;
    bool close_requested;
};

static long vsend(void *ctx, const uint8_t *p, size_t n)
{
    struct rpc_vconn *v = ctx;
    size_t space = vsock_conn_send_space(v->vc);
    if (space == 0)
        return -EAGAIN;
    if (n > space)
        n = space;
    int rc = vsock_conn_send(v->vc, p, n, false);
    return rc < 0 ? rc : (long)n;
}

/* After each entry: a protocol error was answered and drained, so close. */
static void settle(struct rpc_vconn *p)
{
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
    rpc_conn_map_done(&p->rc, err, m, detail);
    settle(p);
}

static int rpc_accept(struct vsock_conn *vc, void *ctx, void **priv)
{
    struct rpc_vm *rv = ctx;
    struct rpc_vconn *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->vc = vc;
    rpc_conn_init(&p->rc, rv->svc->eng, rv->vm, vsock_conn_id(vc), vsend, p, &rv->budget);
    p->rc.sess.done = map_done;
    p->rc.sess.done_ctx = p;
    p->rc.rl = &rv->rl;
    p->rc.sess.require_privileged = rv->svc->privileged_only;
    p->rc.sess.peer_port = vsock_conn_peer_port(vc);
    *priv = p;
    log_debug("rpc: vm %s (cid %llu) conn %llu opened from port %u", map_vm_name(rv->vm),
             (unsigned long long)map_vm_cid(rv->vm), (unsigned long long)vsock_conn_id(vc),
             vsock_conn_peer_port(vc));
    return 0;
}

static size_t rpc_recv(struct vsock_conn *vc, void *priv, const uint8_t *data, size_t len, bool eom)
{
    struct rpc_vconn *p = priv;
    size_t n = rpc_conn_input(&p->rc, data, len);
    settle(p);
    return n;
}

static void rpc_writable(struct vsock_conn *vc, void *priv)
{
    struct rpc_vconn *p = priv;
    rpc_conn_pump(&p->rc);
    settle(p);
}

static void rpc_closed(struct vsock_conn *vc, void *priv, const char *why)
{
    struct rpc_vconn *p = priv;
    if (!p)
        return;
    log_debug("rpc: conn %llu closed after %llu requests: %s", (unsigned long long)p->rc.sess.owner.conn_id,
             (unsigned long long)p->rc.fc.requests, why ? why : "closed");
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
};

struct rpc_service *rpc_service_new(struct map_engine *eng, bool privileged_only)
{
    if (!eng)
        return NULL;
    struct rpc_service *s = calloc(1, sizeof(*s));
    if (s) {
        s->eng = eng;
        s->privileged_only = privileged_only;
    }
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

void rpc_service_detach(struct rpc_service *s, const struct map_vm *vm)
{
    for (struct rpc_vm **pp = s ? &s->vms : NULL; pp && *pp; pp = &(*pp)->next)
        if ((*pp)->vm == vm) {
            struct rpc_vm *rv = *pp;
            *pp = rv->next;
            free(rv);
            return;
        }
}

int rpc_service_attach(struct rpc_service *s, struct vsock_dev *dev, struct map_vm *vm)
{
    struct rpc_vm *rv = calloc(1, sizeof(*rv));
    if (!rv)
        return -ENOMEM;
    rv->svc = s;
    rv->vm = vm;
    rpc_rx_budget_init(&rv->budget);
    int rc = vsock_dev_add_service(dev, &rpc_svc, rv);
    if (rc < 0) {
        free(rv);
        return rc;
    }
    rv->next = s->vms;
    s->vms = rv;
    return 0;
}
