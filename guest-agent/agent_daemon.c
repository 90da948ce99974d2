/* The agent daemon (see agent_daemon.h): pins pages for unprivileged programs
 * and relays their Lock/Map/Unmap/Unlock to hostd, one hostd connection per
 * program; the program's mappings live as long as its Unix connection.
 * Framing, the version check, error replies for bad frames and the output
 * queue are the framed connection's (common/fconn.h), as in hostd. */
#include "agent_daemon.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fconn.h"
#include "mdl_internal.h"
#include "usock.h"

#define AD_MAX_CLIENTS 64
#define AD_MAX_FDS 8          /* memfds held per client for LockRequests to come */
#define AD_OUTQ_HIGH (256u * 1024u) /* replies waiting: stop reading requests */
#define AD_RECV_CHUNK 16384u

struct ad_pin {
    uint64_t mdl_handle;
    void *va;
    size_t len;
    struct mdl_pin pin;
};
struct ad_map {
    uint64_t map_handle, mdl_handle, address;
};
struct ad_client {
    int fd;
    struct mdl_session *s;
    struct fconn fc;
    int fds[AD_MAX_FDS];  /* received, oldest first: one per LockRequest */
    unsigned nfds;
    struct ad_pin *pins;
    size_t npins;
    struct ad_map *maps;
    size_t nmaps;
};

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

/* ---- replies ---- */
/* Queue resp as the answer to request id. 0, or a negative errno when it
 * could not be encoded or queued (the connection is then closing). */
static int reply(struct ad_client *c, const Mdlmap__V1__Envelope *resp, uint64_t id)
{
    uint8_t *f;
    size_t n;
    Mdlmap__V1__Envelope e = *resp;   /* resp may be the session's: renumber a copy */
    e.request_id = id;
    int rc = frame_encode(&e, &f, &n);
    return rc < 0 ? rc : fconn_queue(&c->fc, f, n);
}

/* A failure answered by the daemon itself, with the reply body of the request. */
static int reply_status(struct ad_client *c, const Mdlmap__V1__Envelope *req, mdl_status st,
                        const char *detail)
{
    Mdlmap__V1__Envelope e;
    Mdlmap__V1__HelloResponse h = MDLMAP__V1__HELLO_RESPONSE__INIT;
    Mdlmap__V1__LockResponse l = MDLMAP__V1__LOCK_RESPONSE__INIT;
    Mdlmap__V1__MapResponse m = MDLMAP__V1__MAP_RESPONSE__INIT;
    Mdlmap__V1__UnmapResponse u = MDLMAP__V1__UNMAP_RESPONSE__INIT;
    Mdlmap__V1__UnlockResponse k = MDLMAP__V1__UNLOCK_RESPONSE__INIT;
    mdl_env_init(&e);
    e.status = st;
    e.detail = (char *)detail;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_LOCK: e.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY; e.lock_reply = &l; break;
    case MDLMAP__V1__ENVELOPE__BODY_MAP: e.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY; e.map_reply = &m; break;
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP: e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY; e.unmap_reply = &u; break;
    case MDLMAP__V1__ENVELOPE__BODY_UNLOCK: e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK_REPLY; e.unlock_reply = &k; break;
    default: e.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY; e.hello_reply = &h; break;
    }
    return reply(c, &e, req->request_id);
}

/* Forward to hostd and relay its answer. out NULL: done. out set: *out is
 * hostd's answer (NULL when there was none), borrowed from the session,
 * which stays held until the caller's mdl_session_release(c->s). The
 * request is copied: the session numbers it with its own request id. */
static int forward(struct ad_client *c, const Mdlmap__V1__Envelope *req, const Mdlmap__V1__Envelope **out)
{
    Mdlmap__V1__Envelope e = *req;
    const Mdlmap__V1__Envelope *r;
    mdl_status st = mdl_session_call(c->s, &e, -1, &r);
    int rc = r ? reply(c, r, req->request_id) : reply_status(c, req, st, mdl_last_detail());
    if (out)
        *out = MDL_SUCCESS(st) ? r : NULL;
    else
        mdl_session_release(c->s);
    return rc;
}

/* ---- ownership records ---- */
static struct ad_pin *find_pin(struct ad_client *c, uint64_t h)
{
    for (size_t i = 0; i < c->npins; i++)
        if (c->pins[i].mdl_handle == h)
            return &c->pins[i];
    return NULL;
}

static void drop_pin(struct ad_client *c, struct ad_pin *p)
{
    uint64_t h = p->mdl_handle;   /* *p is overwritten by the last record below */
    mdl_pinner_iouring()->unpin(mdl_pinner_iouring(), &p->pin);
    munmap(p->va, p->len);
    *p = c->pins[--c->npins];
    for (size_t i = 0; i < c->nmaps;)   /* hostd released the MDL's mappings with it */
        if (c->maps[i].mdl_handle == h)
            c->maps[i] = c->maps[--c->nmaps];
        else
            i++;
}

static int take_fd(struct ad_client *c)
{
    if (!c->nfds)
        return -1;
    int fd = c->fds[0];
    memmove(c->fds, c->fds + 1, --c->nfds * sizeof(int));
    return fd;
}

/* ---- requests ---- */
static int handle_lock(struct ad_client *c, const Mdlmap__V1__Envelope *req)
{
    const Mdlmap__V1__LockRequest *l = req->lock;
    int fd = take_fd(c);
    struct stat sb;
    size_t npages = MDL_SPAN_PAGES(l->byte_offset, l->byte_count);
    size_t len = npages * MDL_PAGE_SIZE;
    if (fd < 0 || l->n_pfns || l->n_runs || !l->byte_count || l->byte_offset >= MDL_PAGE_SIZE ||
        (l->memfd_offset & MDL_PAGE_MASK) || fstat(fd, &sb) < 0 ||
        l->memfd_offset > (uint64_t)sb.st_size || len > (uint64_t)sb.st_size - l->memfd_offset) {
        if (fd >= 0)
            close(fd);
        return reply_status(c, req, MDL_STATUS_INVALID_PARAMETER, "agent: need a memfd covering the buffer");
    }
    void *va = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, (off_t)l->memfd_offset);
    close(fd);
    uint64_t *pfns = calloc(npages, sizeof(*pfns));
    struct ad_pin *grown = realloc(c->pins, (c->npins + 1) * sizeof(*c->pins));
    if (grown)
        c->pins = grown;
    if (va == MAP_FAILED || !pfns || !grown) {
        if (va != MAP_FAILED)
            munmap(va, len);
        free(pfns);
        return reply_status(c, req, MDL_STATUS_INSUFFICIENT_RESOURCES, "agent: cannot map the memfd");
    }
    struct mdl_pin pin = { .pass_fd = -1 };
    struct mdl_pinner *pinner = mdl_pinner_iouring();
    int rc = pinner->pin(pinner, (uintptr_t)va, npages, pfns, &pin);
    if (rc < 0) {
        munmap(va, len);
        free(pfns);
        /* The daemon pins pages it has just mapped itself: short of being
         * refused the right to, every failure is the daemon's lack of
         * resources, whatever the errno (so not the library's pin_status()). */
        return reply_status(c, req,
                            rc == -EPERM ? MDL_STATUS_ACCESS_DENIED : MDL_STATUS_INSUFFICIENT_RESOURCES,
                            "agent: cannot pin the pages");
    }
    /* hostd gets the program's request with the frames filled in (copies:
     * the decoded request belongs to the framed connection). */
    Mdlmap__V1__LockRequest lk = *l;
    Mdlmap__V1__Envelope e = *req;
    const Mdlmap__V1__Envelope *r = NULL;
    struct mdl_env_runs rs;
    mdl_status st = MDL_STATUS_INSUFFICIENT_RESOURCES;
    bool called = false;
    e.lock = &lk;
    if (mdl_env_set_runs(&lk, pfns, npages, &rs) == 0) { /* as runs: a large contiguous buffer stays small */
        st = mdl_session_call(c->s, &e, -1, &r);
        called = true;
    }
    if (MDL_SUCCESS(st) && r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY) {
        c->pins[c->npins++] = (struct ad_pin){ r->lock_reply->mdl_handle, va, len, pin };
        /* the program needs the frames (it has no pagemap rights); hostd
         * does not echo them: answer with a copy of hostd's reply carrying
         * ours (the reply itself is the session's), as the runs just sent
         * to hostd, so that a large contiguous buffer stays a small reply */
        Mdlmap__V1__Envelope out = *r;
        Mdlmap__V1__LockResponse lr = *r->lock_reply;
        lr.pfns = NULL;
        lr.n_pfns = 0;
        lr.runs = rs.ptrs;
        lr.n_runs = rs.n;
        out.lock_reply = &lr;
        rc = reply(c, &out, req->request_id);
    } else {
        pinner->unpin(pinner, &pin);
        munmap(va, len);
        rc = r ? reply(c, r, req->request_id) : reply_status(c, req, st, mdl_last_detail());
    }
    mdl_env_runs_free(&rs);
    if (called)
        mdl_session_release(c->s);
    free(pfns);
    return rc;
}

static int handle(struct ad_client *c, const Mdlmap__V1__Envelope *req)
{
    const Mdlmap__V1__Envelope *r = NULL;
    bool held = false;   /* forward(.., &r) left the session to release */
    int rc;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_HELLO:
        rc = forward(c, req, NULL);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_LOCK:
        rc = handle_lock(c, req);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_MAP: {
        uint64_t mdl = req->map->mdl_handle;
        if (!find_pin(c, mdl)) {
            rc = reply_status(c, req, MDL_STATUS_INVALID_HANDLE, "agent: not your MDL");
            break;
        }
        rc = forward(c, req, &r);
        held = true;
        /* a success without a MapResponse records nothing */
        bool mapped = r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY;
        struct ad_map *grown = mapped ? realloc(c->maps, (c->nmaps + 1) * sizeof(*c->maps)) : NULL;
        if (grown) {
            c->maps = grown;
            c->maps[c->nmaps++] = (struct ad_map){ r->map_reply->map_handle, mdl, r->map_reply->address };
        }
        break;
    }
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP: {
        size_t i = 0;
        while (i < c->nmaps && c->maps[i].map_handle != req->unmap->map_handle)
            i++;
        if (i == c->nmaps) {
            rc = reply_status(c, req, MDL_STATUS_NOT_FOUND, "agent: not your mapping");
            break;
        }
        rc = forward(c, req, &r);
        held = true;
        if (r)
            c->maps[i] = c->maps[--c->nmaps];
        break;
    }
    case MDLMAP__V1__ENVELOPE__BODY_UNLOCK: {
        struct ad_pin *p = find_pin(c, req->unlock->mdl_handle);
        if (!p) {
            rc = reply_status(c, req, MDL_STATUS_INVALID_HANDLE, "agent: not your MDL");
            break;
        }
        rc = forward(c, req, NULL);
        drop_pin(c, p);   /* unpinned whatever hostd said, as MmUnlockPages */
        break;
    }
    default:
        rc = reply_status(c, req, MDL_STATUS_INVALID_DEVICE_REQUEST, "agent: request not served here");
    }
    if (held)
        mdl_session_release(c->s);
    return rc;
}

/* ---- connections ---- */
static long client_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct ad_client *c = ctx;
    long w = usock_send(c->fd, p, n, fds, nfds, MSG_DONTWAIT);
    return w == -EINTR ? -EAGAIN : w;
}

/* Requests whose version this side serves; fconn answered the rest. */
static int client_dispatch(void *ctx, struct fconn *fc, const mdl_envelope *req)
{
    (void)fc;
    int rc = handle(ctx, req);
    return rc < 0 ? rc : 0;
}

static void client_stopping(void *ctx, int err, const char *what)
{
    (void)err;
    struct ad_client *c = ctx;
    fprintf(stderr, "mdlmap-agent daemon: client fd %d: %s; closing\n", c->fd, what);
}

static const struct fconn_ops client_ops = {
    .send = client_send,
    .dispatch = client_dispatch,
    .stopping = client_stopping,
};

static void client_close(struct ad_client *c)
{
    /* The program went away: undo what it left, as hostd would for a guest. */
    while (c->nmaps) {
        Mdlmap__V1__Envelope e;
        const Mdlmap__V1__Envelope *r;
        Mdlmap__V1__UnmapRequest b;
        struct ad_map *m = &c->maps[--c->nmaps];
        mdl_env_unmap(&e, &b, m->map_handle, m->address, m->mdl_handle);
        mdl_session_call(c->s, &e, -1, &r);
        mdl_session_release(c->s);
    }
    while (c->npins) {
        Mdlmap__V1__Envelope e;
        const Mdlmap__V1__Envelope *r;
        Mdlmap__V1__UnlockRequest b;
        mdl_env_unlock(&e, &b, c->pins[0].mdl_handle);
        mdl_session_call(c->s, &e, -1, &r);
        mdl_session_release(c->s);
        drop_pin(c, &c->pins[0]);
    }
    while (c->nfds)
        close(take_fd(c));
    free(c->pins);
    free(c->maps);
    fconn_fini(&c->fc);
    mdl_session_close(c->s);
    close(c->fd);
    free(c);
}

/* Descriptors that came with the bytes join the client's queue (a
 * LockRequest takes the oldest); past AD_MAX_FDS they are closed and the
 * request they came for finds no memfd. */
static void keep_fds(struct ad_client *c, struct usock_fds *got)
{
    for (unsigned i = 0; i < got->n; i++) {
        if (c->nfds < AD_MAX_FDS)
            c->fds[c->nfds++] = got->fd[i];
        else
            close(got->fd[i]);
    }
    got->n = 0;
}

/* What poll() should wait for: requests while there is room for them,
 * writability while replies wait. */
static short client_events(const struct ad_client *c)
{
    short ev = 0;
    if (fconn_input_room(&c->fc))
        ev |= POLLIN;
    if (!outq_empty(&c->fc.out))
        ev |= POLLOUT;
    return ev;
}

/* poll() reported revents. 0, or negative: close the client. */
static int client_event(struct ad_client *c, short revents)
{
    /* Send what waits and dispatch what is buffered first: then the room
     * below is what fconn_input() takes, and descriptors are never read
     * ahead of a frame still waiting for its own. */
    fconn_pump(&c->fc);
    size_t room = fconn_input_room(&c->fc);
    if (room > AD_RECV_CHUNK)
        room = AD_RECV_CHUNK;
    if ((revents & (POLLIN | POLLHUP | POLLERR)) && room) {
        uint8_t buf[AD_RECV_CHUNK];
        struct usock_fds got = { .n = 0 };
        long n = usock_recv(c->fd, buf, room, &got, MSG_DONTWAIT);
        keep_fds(c, &got);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0 && n != -EAGAIN && n != -EINTR)
            return (int)n;
        if (n > 0 && fconn_input(&c->fc, buf, (size_t)n) != (size_t)n)
            return -ENOBUFS;
    }
    if (fconn_flush(&c->fc) < 0)
        return -EPIPE;
    return fconn_done(&c->fc) ? -ECONNRESET : 0;   /* a bad frame was answered */
}

static struct ad_client *client_open(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct ad_client *c = calloc(1, sizeof(*c));
    int rc = c ? mdl_session_open_vsock(mdl_pinner_iouring(), &c->s) : -ENOMEM;
    if (rc < 0) {
        fprintf(stderr, "mdlmap-agent daemon: cannot reach hostd: %s\n", strerror(-rc));
        free(c);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    /* programs speak to the daemon as to hostd's RPC port: same replies */
    struct fconn_config cfg = { .out_high = AD_OUTQ_HIGH, .name_empty_body = true };
    fconn_init(&c->fc, &client_ops, c, &cfg);
    return c;
}

int agent_daemon_run(const char *socket_path)
{
    /* 0666: any program may connect; the daemon checks per connection that
     * the handles it is given are that connection's. */
    int lfd = usock_listen(socket_path, 0666, USOCK_NO_GROUP, 16, 0);
    if (lfd < 0) {
        fprintf(stderr, "mdlmap-agent daemon: %s: %s\n", socket_path,
                lfd == -EADDRINUSE ? "in use by another daemon" :
                lfd == -EEXIST ? "exists and is not a socket" : strerror(-lfd));
        return lfd;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    mdl_verifier_set(0);   /* leak reports belong to hostd here, not to a bug check */
    struct ad_client *cl[AD_MAX_CLIENTS] = { 0 };
    printf("DAEMON listening on %s\n", socket_path);
    fflush(stdout);
    while (!stopping) {
        struct pollfd pf[AD_MAX_CLIENTS + 1];
        pf[0] = (struct pollfd){ lfd, POLLIN, 0 };
        for (int i = 0; i < AD_MAX_CLIENTS; i++)
            pf[i + 1] = (struct pollfd){ cl[i] ? cl[i]->fd : -1, cl[i] ? client_events(cl[i]) : 0, 0 };
        if (poll(pf, AD_MAX_CLIENTS + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < AD_MAX_CLIENTS; i++)
            if (cl[i] && pf[i + 1].revents && client_event(cl[i], pf[i + 1].revents) < 0) {
                client_close(cl[i]);
                cl[i] = NULL;
            }
        if (pf[0].revents & POLLIN) {
            int i = 0;
            while (i < AD_MAX_CLIENTS && cl[i])
                i++;
            if (i < AD_MAX_CLIENTS) {
                cl[i] = client_open(lfd);
            } else {
                /* full: the program sees its connection closed, and no
                 * hostd session is opened for it */
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0)
                    close(fd);
            }
        }
    }
    for (int i = 0; i < AD_MAX_CLIENTS; i++)
        if (cl[i])
            client_close(cl[i]);
    close(lfd);
    unlink(socket_path);
    return 0;
}
