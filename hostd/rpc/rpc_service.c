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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "evloop.h"
#include "log.h"
#include "map_engine.h"
#include "rpc_conn.h"
#include "vsock.h"

/* Work outside the requests, in two round-robin levels: VMs with work wait
 * in the service's FIFO, and in each VM its connections with work (a grant
 * copy in progress, or notices to flush). One intrusive FIFO serves both. */
struct wlink {
    struct wlink *next, *prev;
    bool on;
};
struct wlist {
    struct wlink *head, *tail;
};

static void wl_push(struct wlist *l, struct wlink *k)
{
    if (k->on)
        return;
    k->next = NULL;
    k->prev = l->tail;
    if (l->tail)
        l->tail->next = k;
    else
        l->head = k;
    l->tail = k;
    k->on = true;
}

static void wl_del(struct wlist *l, struct wlink *k)
{
    if (!k->on)
        return;
    if (k->prev)
        k->prev->next = k->next;
    else
        l->head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        l->tail = k->prev;
    k->next = k->prev = NULL;
    k->on = false;
}

#define wl_entry(k, type, member) ((type *)((char *)(k) - __builtin_offsetof(type, member)))

/* What the service holds for one VM's device (the accept ctx): the engine's
 * VM and the receive budget (RPC_RX_VM_CAP) its connections share. */
struct rpc_vm {
    struct rpc_service *svc;
    struct map_vm *vm;
    struct fconn_budget budget;
    struct log_limit rl;         /* warnings this VM's connections cause */
    struct wlist work;           /* its connections with work */
    struct wlink work_link;      /* on the service's list of VMs with work */
    struct rpc_vm *next;
};

/* Grant copies run in slices outside the requests. While any VM has work an
 * eventfd stays readable (level-triggered: no syscall per round), so every
 * loop iteration runs one round: at most RPC_WORK_PER_ROUND slices, each
 * taken from the VM at the head of the list (from its connection at the
 * head of its own list: one slice of RPC_COPY_SLICE), both put back at the
 * tail when they have more. So VMs take turns whatever their number of
 * connections, a VM's connections take turns within its turns, and the loop
 * polls every other fd between rounds: no copy holds it longer than
 * RPC_WORK_PER_ROUND slices. */
#define RPC_WORK_PER_ROUND 4u

struct rpc_service {
    struct map_engine *eng;
    bool privileged_only;
    struct rpc_vm *vms;
    struct evloop *loop;
    int work_fd;                 /* eventfd: readable while work waits; -1 without a loop */
    struct ev_handler work_h;
    bool work_armed;
    struct wlist work;           /* VMs with work */
};

struct rpc_vconn {
    struct rpc_conn rc;
    struct vsock_conn *vc;
    struct rpc_vm *rv;
    bool close_requested;
    struct wlink work_link;      /* on its VM's work list */
};

static void work_arm(struct rpc_service *s, bool on)
{
    if (s->work_fd < 0 || s->work_armed == on)
        return;
    uint64_t v = 1;
    if (on ? write(s->work_fd, &v, sizeof(v)) == sizeof(v) : read(s->work_fd, &v, sizeof(v)) == sizeof(v))
        s->work_armed = on;
}

static void work_unlink(struct rpc_vconn *p)
{
    struct rpc_vm *rv = p->rv;
    wl_del(&rv->work, &p->work_link);
    if (!rv->work.head)
        wl_del(&rv->svc->work, &rv->work_link);
}

/* sess.later: the connection has work outside its requests. */
static void work_queue(void *ctx)
{
    struct rpc_vconn *p = ctx;
    struct rpc_vm *rv = p->rv;
    wl_push(&rv->work, &p->work_link);
    wl_push(&rv->svc->work, &rv->work_link);
    work_arm(rv->svc, true);
}

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

static void work_cb(void *opaque, uint32_t events)
{
    struct rpc_service *s = opaque;
    for (unsigned i = 0; i < RPC_WORK_PER_ROUND && s->work.head; i++) {
        struct rpc_vm *rv = wl_entry(s->work.head, struct rpc_vm, work_link);
        struct rpc_vconn *p = wl_entry(rv->work.head, struct rpc_vconn, work_link);
        wl_del(&s->work, &rv->work_link);   /* the VM's turn: to the tail after it */
        wl_del(&rv->work, &p->work_link);
        if (!rpc_conn_copy_step(&p->rc, RPC_COPY_SLICE))
            work_queue(p);  /* more to copy: behind the VM's other connections */
        else
            rpc_conn_pump(&p->rc);  /* notices to flush, answers the copy released */
        if (rv->work.head)
            wl_push(&s->work, &rv->work_link);
        settle(p);  /* may free p (closed() unlinks it) */
    }
    if (!s->work.head)
        work_arm(s, false);
}

static int rpc_accept(struct vsock_conn *vc, void *ctx, void **priv)
{
    struct rpc_vm *rv = ctx;
    struct rpc_vconn *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->vc = vc;
    p->rv = rv;
    rpc_conn_init(&p->rc, rv->svc->eng, rv->vm, vsock_conn_id(vc), vsend, p, &rv->budget);
    p->rc.sess.done = map_done;
    p->rc.sess.done_ctx = p;
    p->rc.rl = &rv->rl;
    p->rc.sess.require_privileged = rv->svc->privileged_only;
    p->rc.sess.peer_port = vsock_conn_peer_port(vc);
    if (rv->svc->work_fd >= 0) {
        p->rc.sess.later = work_queue;
        p->rc.sess.later_ctx = p;
    }
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
    work_unlink(p);
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

struct rpc_service *rpc_service_new(struct map_engine *eng, bool privileged_only, struct evloop *loop)
{
    if (!eng)
        return NULL;
    struct rpc_service *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->eng = eng;
    s->privileged_only = privileged_only;
    s->work_fd = -1;
    if (loop) {
        s->work_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        int rc = s->work_fd < 0 ? -errno : evloop_add(loop, &s->work_h, s->work_fd, EPOLLIN, work_cb, s);
        if (rc < 0) {
            log_err("rpc: grant copy scheduler: %s", strerror(-rc));
            if (s->work_fd >= 0)
                close(s->work_fd);
            free(s);
            return NULL;
        }
        s->loop = loop;
    }
    map_engine_set_grant_notice(eng, rpc_conn_grant_notice);
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
    if (s->work_fd >= 0) {
        evloop_del(s->loop, &s->work_h);
        close(s->work_fd);
    }
    map_engine_set_grant_notice(s->eng, NULL);
    free(s);
}

void rpc_service_detach(struct rpc_service *s, const struct map_vm *vm)
{
    for (struct rpc_vm **pp = s ? &s->vms : NULL; pp && *pp; pp = &(*pp)->next)
        if ((*pp)->vm == vm) {
            struct rpc_vm *rv = *pp;
            *pp = rv->next;
            wl_del(&s->work, &rv->work_link); /* empty already: its connections unlinked themselves */
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
