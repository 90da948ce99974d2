/* vhost-user server socket for one VM: listen, accept one QEMU at a time,
 * reassemble messages (with SCM_RIGHTS fds) from the non-blocking stream and
 * hand them to vu_process_msg. Any error drops the connection and stops the
 * device; the backend keeps listening for the next QEMU. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"
#include "usock.h"
#include "vu_internal.h"

#define VU_MSGS_PER_EVENT 32 /* fairness between VMs: level-triggered epoll resumes us */

/* Back to waiting for a header; a heap payload buffer goes. */
static void rx_next(struct vu_backend *c)
{
    if (c->payload != c->payload_inline)
        free(c->payload);
    c->payload = c->payload_inline;
    c->hdr_got = 0;
    c->pay_got = 0;
}

static void rx_reset(struct vu_backend *c)
{
    usock_fds_close(&c->fds);
    rx_next(c);
}

static uint32_t hdr_size(const struct vu_backend *c)
{
    struct vu_msg_hdr h;
    memcpy(&h, c->hdr, sizeof(h));
    return h.size;
}

/* 1: a whole message is buffered; 0: need more data; <0: drop connection. */
static int rx_step(struct vu_backend *c)
{
    for (;;) {
        if (c->hdr_got == VHOST_USER_HDR_SIZE) {
            uint32_t sz = hdr_size(c);
            if (sz > VHOST_USER_MAX_PAYLOAD) {
                vu_warn(c, "vm %s: message payload %u too large", c->name, sz);
                return -EMSGSIZE;
            }
            if (c->pay_got == sz)
                return 1;
            if (c->pay_got == 0 && sz > sizeof(c->payload_inline) && c->payload == c->payload_inline) {
                c->payload = malloc(sz);
                if (!c->payload) {
                    c->payload = c->payload_inline;
                    vu_warn(c, "vm %s: no memory for a %u-byte message", c->name, sz);
                    return -ENOMEM;
                }
            }
        }
        uint8_t *dst;
        size_t want;
        if (c->hdr_got < VHOST_USER_HDR_SIZE) {
            dst = c->hdr + c->hdr_got;
            want = VHOST_USER_HDR_SIZE - c->hdr_got;
        } else {
            dst = c->payload + c->pay_got;
            want = hdr_size(c) - c->pay_got;
        }
        long n = usock_recv(c->conn_fd, dst, want, &c->fds, MSG_DONTWAIT);
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN)
            return 0;
        if (n < 0) {
            vu_warn(c, "vm %s: vhost-user receive: %s", c->name, strerror((int)-n));
            return (int)n;
        }
        if (c->fds.dropped || c->fds.n > VHOST_USER_MAX_FDS) {
            vu_warn(c, "vm %s: too many fds in one message", c->name);
            return -EPROTO;
        }
        if (n == 0)
            return -ECONNRESET;
        if (c->hdr_got < VHOST_USER_HDR_SIZE)
            c->hdr_got += (size_t)n;
        else
            c->pay_got += (size_t)n;
    }
}

/* Requests that only ask: no reason to tell the state's keeper. */
static bool only_asks(uint32_t req)
{
    return req == VHOST_USER_GET_FEATURES || req == VHOST_USER_GET_PROTOCOL_FEATURES ||
           req == VHOST_USER_GET_QUEUE_NUM || req == VHOST_USER_GET_MAX_MEM_SLOTS || req == VHOST_USER_GET_CONFIG;
}

static void state_changed(struct vu_backend *be)
{
    if (be->state_changed)
        be->state_changed(be->state_ctx);
}

static void on_conn(void *opaque, uint32_t events)
{
    struct vu_backend *be = opaque;
    int fd = be->conn_fd;
    bool handled = false;
    for (int budget = VU_MSGS_PER_EVENT; budget > 0; budget--) {
        if (be->conn_fd != fd || fd < 0)
            return;
        int r = rx_step(be);
        if (r == 0)
            break;
        if (r < 0) {
            vu_backend_disconnect(be, r == -ECONNRESET ? "front-end closed the connection" : "receive error");
            return;
        }
        struct vu_msg_hdr h;
        memcpy(&h, be->hdr, sizeof(h));
        unsigned nfds = be->fds.n;
        be->fds.n = 0; /* vu_process_msg owns them now */
        r = vu_process_msg(be, &h, be->payload, be->fds.fd, nfds);
        rx_next(be);
        handled |= !only_asks(h.request);
        if (r < 0) {
            vu_backend_disconnect(be, "protocol violation");
            return;
        }
    }
    if (be->conn_fd == fd && !(events & EPOLLIN) && (events & (EPOLLHUP | EPOLLERR)))
        vu_backend_disconnect(be, "connection hung up");
    else if (handled && be->conn_fd == fd)
        state_changed(be);
}

void vu_event(struct vu_backend *be, enum event_type t, const char *detail)
{
    if (!be->events || !events_wanted(be->events, t))
        return;
    struct event ev = { .type = t, .vm_name = be->name, .cid = be->cid, .detail = detail };
    events_publish(be->events, &ev);
}

static int adopt(struct vu_backend *be, int fd, const char *detail)
{
    if (be->conn_fd >= 0) {
        close(fd);
        return -EBUSY;
    }
    if (be->loop) {
        int ret = evloop_add(be->loop, &be->conn_h, fd, EPOLLIN, on_conn, be);
        if (ret < 0) {
            close(fd);
            return ret;
        }
    }
    be->conn_fd = fd;
    rx_reset(be);
    vu_event(be, EV_VM_CONNECTED, detail);
    return 0;
}

int vu_backend_adopt_conn(struct vu_backend *be, int fd)
{
    return adopt(be, fd, "connection adopted");
}

/* Is the peer this VM's front-end by the configured owner? */
static bool peer_allowed(const struct vu_backend *be, int fd, const struct ucred *cred)
{
    if (cred->uid == 0 || (!be->owner_uid_set && !be->owner_gid_set))
        return true;
    if (be->owner_uid_set && cred->uid != be->owner_uid)
        return false;
    if (!be->owner_gid_set || cred->gid == be->owner_gid)
        return true;
    gid_t groups[256];
    socklen_t len = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
        return false; /* more groups than we look at, or no answer: not proven a member */
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        if (groups[i] == be->owner_gid)
            return true;
    return false;
}

static void on_accept(void *opaque, uint32_t events)
{
    struct vu_backend *be = opaque;
    int fd = accept4(be->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            log_warn("vm %s: accept: %m", be->name);
        return;
    }
    struct ucred cred = { 0, (uid_t)-1, (gid_t)-1 };
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || !peer_allowed(be, fd, &cred)) {
        /* another VM's QEMU must not take this VM's socket (and its CID) */
        vu_warn(be, "vm %s: refusing vhost-user connection from uid %d gid %d (pid %d): not this VM's owner",
                be->name, (int)cred.uid, (int)cred.gid, (int)cred.pid);
        close(fd);
        return;
    }
    if (be->conn_fd >= 0) {
        vu_warn(be, "vm %s: refusing second vhost-user connection (pid %d): one front-end at a time",
                 be->name, (int)cred.pid);
        close(fd);
        return;
    }
    char detail[64];
    snprintf(detail, sizeof(detail), "front-end pid %d uid %d", (int)cred.pid, (int)cred.uid);
    if (adopt(be, fd, detail) == 0) {
        log_info("vm %s: vhost-user front-end connected (pid %d)", be->name, (int)cred.pid);
        state_changed(be);
    }
}

struct vu_backend *vu_backend_new(const struct vu_backend_config *cfg)
{
    if (!cfg || !cfg->name)
        return NULL;
    struct vu_backend *be = calloc(1, sizeof(*be));
    if (!be)
        return NULL;
    snprintf(be->name, sizeof(be->name), "%s", cfg->name);
    if (cfg->socket_path)
        snprintf(be->socket_path, sizeof(be->socket_path), "%s", cfg->socket_path);
    be->loop = cfg->loop;
    be->socket_group_set = cfg->socket_group_set;
    be->socket_gid = cfg->socket_gid;
    be->owner_uid_set = cfg->owner_uid_set;
    be->owner_gid_set = cfg->owner_gid_set;
    be->owner_uid = cfg->owner_uid;
    be->owner_gid = cfg->owner_gid;
    be->state_changed = cfg->state_changed;
    be->state_ctx = cfg->state_ctx;
    be->events = cfg->events;
    be->cid = cfg->cid;
    be->listen_fd = -1;
    be->conn_fd = -1;
    be->poll_fd = -1;
    be->payload = be->payload_inline;
    memtable_init(&be->mem);
    for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
        virtq_init(&be->vq[q], q, &be->mem);
        be->vq[q].owner = be->name;
        be->kick[q].be = be;
        be->kick[q].qidx = q;
    }
    return be;
}

void vu_backend_attach(struct vu_backend *be, const struct vu_dev_ops *ops, void *dev)
{
    be->ops = ops;
    be->dev = dev;
    unsigned n = ops && ops->queue_count ? ops->queue_count(dev) : 0;
    be->nq = n > VU_MAX_QUEUES ? VU_MAX_QUEUES : n;
}

struct virtq *vu_backend_queue(struct vu_backend *be, unsigned qidx)
{
    return qidx < VU_MAX_QUEUES ? &be->vq[qidx] : NULL;
}

const struct memtable *vu_backend_mem(const struct vu_backend *be)
{
    return &be->mem;
}

bool vu_backend_connected(const struct vu_backend *be)
{
    return be->conn_fd >= 0;
}

int vu_backend_process(struct vu_backend *be, const struct vu_msg_hdr *hdr, const uint8_t *payload, int *fds,
                       unsigned nfds)
{
    return vu_process_msg(be, hdr, payload, fds, nfds);
}

int vu_backend_listen(struct vu_backend *be)
{
    if (!be || !be->loop || !be->ops)
        return -EINVAL;
    /* Without a group only hostd's user (QEMU as root or as hostd's user)
     * may connect; with one, QEMU as another user of that group (libvirt).
     * A VM's own owner group wins over --socket-group. */
    bool grp = be->owner_gid_set || be->socket_group_set;
    gid_t gid = be->owner_gid_set ? (gid_t)be->owner_gid : be->socket_group_set ? (gid_t)be->socket_gid : USOCK_NO_GROUP;
    int fd = usock_listen(be->socket_path, grp ? 0660 : 0600, gid, 4, SOCK_NONBLOCK);
    if (fd < 0) {
        log_err("vm %s: socket path %s: %s", be->name, be->socket_path,
                fd == -EEXIST ? "exists and is not a socket" :
                fd == -EADDRINUSE ? "another server is listening" : strerror(-fd));
        return fd;
    }
    /* The owner user can reach its socket; until this chown only root can,
     * so there is no window where it is more open than configured. */
    if (be->owner_uid_set && chown(be->socket_path, (uid_t)be->owner_uid, (gid_t)-1) < 0) {
        int e = -errno;
        log_err("vm %s: chown %s to uid %u: %m", be->name, be->socket_path, be->owner_uid);
        close(fd);
        unlink(be->socket_path);
        return e;
    }
    int ret = evloop_add(be->loop, &be->listen_h, fd, EPOLLIN, on_accept, be);
    if (ret < 0) {
        close(fd);
        unlink(be->socket_path);
        return ret;
    }
    be->listen_fd = fd;
    log_info("vm %s: listening on %s", be->name, be->socket_path);
    return 0;
}

int vu_backend_listen_on(struct vu_backend *be, int fd)
{
    /* not bound to the configured path any more (moved, or its file gone):
     * no QEMU could connect to it */
    int ret = be && be->loop && be->ops ? usock_adopt_listener_at(fd, be->socket_path) : -EINVAL;
    if (ret == 0)
        ret = evloop_add(be->loop, &be->listen_h, fd, EPOLLIN, on_accept, be);
    if (ret < 0) {
        log_err("vm %s: inherited listening socket refused: %s", be ? be->name : "?", strerror(-ret));
        close(fd);
        return ret;
    }
    be->listen_fd = fd;
    log_info("vm %s: listening on %s (inherited socket)", be->name, be->socket_path);
    return 0;
}

void vu_backend_disconnect(struct vu_backend *be, const char *why)
{
    bool was = be->conn_fd >= 0;
    if (was) {
        log_info("vm %s: vhost-user front-end disconnected: %s", be->name, why);
        if (be->loop)
            evloop_del(be->loop, &be->conn_h);
        close(be->conn_fd);
        be->conn_fd = -1;
        vu_event(be, EV_VM_DISCONNECTED, why);
    }
    rx_reset(be);
    vu_device_teardown(be, why);
    memtable_clear(&be->mem);
    be->features = 0;
    be->protocol_features = 0;
    be->owner_set = false;
    if (was)
        state_changed(be);
}

void vu_backend_keep_socket(struct vu_backend *be)
{
    if (be)
        be->socket_outlives = true;
}

void vu_backend_free(struct vu_backend *be)
{
    if (!be)
        return;
    vu_backend_disconnect(be, "hostd shutting down");
    if (be->listen_fd >= 0) {
        evloop_del(be->loop, &be->listen_h);
        close(be->listen_fd);
        be->listen_fd = -1;
        if (!be->socket_outlives)
            unlink(be->socket_path);
    }
    free(be);
}
