/* Host API socket server: accepts clients (admission by credentials and a
 * connection limit), frames requests, checks rights and answers through
 * host_api_handlers.c. A malformed frame gets an error status, then the
 * client is closed once the answer is out. */
#include "host_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "fconn.h"
#include "frame.h"
#include "host_api_handlers.h"
#include "host_api_int.h"
#include "log.h"
#include "usock.h"

_Static_assert(OUTQ_MAX_FDS <= USOCK_MAX_FDS, "a queued frame's fds must fit one sendmsg");

static void client_free(void *ptr)
{
    struct api_client *c = ptr;
    fconn_fini(&c->fc);
    free(c);
}

static void client_close(struct api_client *c, const char *why)
{
    struct host_api *api = c->api;
    log_debug("api: client fd %d closed: %s", c->fd, why);
    c->dead = true;
    api_events_stop(c); /* before anything below publishes */
    api_qmp_cancel(c);
    if (c->consumer_id)
        api_consumer_lost(c, why);
    evloop_del(api->loop, &c->h);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        api->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    api->nclients--;
    if (evloop_defer_free(api->loop, client_free, c) < 0)
        client_free(c);
}

static long client_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct api_client *c = ctx;
    long w = usock_send(c->fd, p, n, fds, nfds, MSG_DONTWAIT);
    if (w > 0)
        c->sent_bytes += (uint64_t)w;
    return w == -EINTR ? -EAGAIN : w;
}

/* Consumer messages first (registration and answers), then host API requests. */
void api_deny(struct api_client *c, const mdl_envelope *req, const char *what)
{
    char detail[160];
    snprintf(detail, sizeof(detail), "uid %u may not %s", (unsigned)c->peer.uid, what);
    log_warn_limited(&c->api->deny_log, "api: access denials", "api: pid %d: %s", (int)c->peer.pid, detail);
    uint8_t *f;
    size_t n;
    if (fconn_reply_error(req->request_id, -EACCES, detail, &f, &n) == 0)
        fconn_queue(&c->fc, f, n);
}

/* The right a host API request needs, as the denial names it; NULL: none
 * (unknown requests are answered STATUS_NOT_IMPLEMENTED by the handler). */
static const char *missing_right(const struct api_client *c, const mdl_envelope *req)
{
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_LIST:
    case MDLMAP__V1__ENVELOPE__BODY_READ:
    case MDLMAP__V1__ENVELOPE__BODY_STATS:
    case MDLMAP__V1__ENVELOPE__BODY_LIST_GRANTS:
        return c->peer.can_read ? NULL : "list, read or stats (--api-read)";
    case MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE:
        return c->peer.can_read ? NULL : "subscribe to events (--api-read)";
    case MDLMAP__V1__ENVELOPE__BODY_VM_LIST:
        return c->peer.can_read ? NULL : "list VMs (--api-read)";
    case MDLMAP__V1__ENVELOPE__BODY_VM_ADD:
    case MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE:
        return c->peer.privileged ? NULL : "add or remove VMs (--api-admin)";
    case MDLMAP__V1__ENVELOPE__BODY_WRITE:
        return c->peer.can_write ? NULL : "write guest memory (--api-write)";
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_READ:
    case MDLMAP__V1__ENVELOPE__BODY_TRANSLATE:
    case MDLMAP__V1__ENVELOPE__BODY_VIRT_READ:
        return c->peer.can_read ? NULL : "read guest memory (--api-read)";
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_WRITE:
    case MDLMAP__V1__ENVELOPE__BODY_VIRT_WRITE:
        return c->peer.can_write ? NULL : "write guest memory (--api-write)";
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP:
        if (req->phys_map->writable)
            return c->peer.can_write ? NULL : "map guest memory writable (--api-write)";
        return c->peer.can_read ? NULL : "map guest memory (--api-read)";
    case MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE:
        return c->peer.can_read ? NULL : "read vCPU state (--api-read)";
    case MDLMAP__V1__ENVELOPE__BODY_RUN_STATE:
        if (req->run_state->op == MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY)
            return c->peer.can_read ? NULL : "query the run state (--api-read)";
        return c->peer.can_write ? NULL : "pause or resume a VM (--api-write)";
    default:
        return NULL;
    }
}

static int client_dispatch(void *ctx, struct fconn *fc, const mdl_envelope *req)
{
    struct api_client *c = ctx;
    if (api_consumer_message(c, req))
        return 0;
    const char *missing = missing_right(c, req);
    if (missing) {
        api_deny(c, req, missing);
        return 0;
    }
    if (api_events_message(c, req))
        return 0;
    if (api_qmp_request(req))
        return api_qmp_dispatch(c, req);
    uint8_t *f;
    size_t n;
    int fds[HOST_API_MAX_REPLY_FDS];
    unsigned nfds = 0;
    /* fds of replies the client has not read yet stay in hostd: bounded */
    unsigned queued = fc->out.nfds, room = queued < API_REPLY_QUEUE_FDS ? API_REPLY_QUEUE_FDS - queued : 0;
    if (!c->big_sndbuf && !c->consumer_id && (req->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_READ ||
                                              req->body_case == MDLMAP__V1__ENVELOPE__BODY_VIRT_READ)) {
        /* A reader of guest memory gets a send buffer that holds one
         * maximal reply: a 512 KiB PhysRead goes out in one sendmsg instead
         * of three (the default ~208 KiB) and the client wakes once per
         * reply. Only readers: small frames carrying fds (a consumer's
         * MapInto) would pile up in a larger buffer past their bound. The
         * kernel clamps to wmem_max. */
        int sndbuf = API_SNDBUF;
        if (setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
            log_debug("api: SO_SNDBUF: %m");
        c->big_sndbuf = true;
    }
    c->api->ctx.reply_q = &fc->out;
    int rc = host_api_handle_fds(&c->api->ctx, req, room, &f, &n, fds, &nfds);
    c->api->ctx.reply_q = NULL;
    if (rc < 0)
        return rc;
    if (nfds)
        return fconn_push(fc, f, n, fds, nfds, 0); /* takes the fds; failure closes the client */
    fconn_queue(fc, f, n);
    return 0;
}

static void client_stopping(void *ctx, int err, const char *what)
{
    struct api_client *c = ctx;
    log_debug("api: client fd %d: %s; closing", c->fd, what);
}

static const struct fconn_ops client_ops = {
    .send = client_send,
    .dispatch = client_dispatch,
    .stopping = client_stopping,
};

/* Re-arm epoll for what the client can do now (never flushes nor closes). */
void api_client_arm(struct api_client *c)
{
    if (c->dead)
        return;
    uint32_t ev = 0;
    if (fconn_input_room(&c->fc))
        ev |= EPOLLIN;
    if (!outq_empty(&c->fc.out) || c->fc.closing)
        ev |= EPOLLOUT;
    evloop_mod(c->api->loop, &c->h, ev);
}

/* Flush and re-arm; returns false if the client was closed. */
static bool client_settle(struct api_client *c)
{
    if (fconn_flush(&c->fc) < 0) {
        client_close(c, "send failed");
        return false;
    }
    if (fconn_done(&c->fc)) {
        client_close(c, "protocol error");
        return false;
    }
    api_client_arm(c);
    return true;
}

static void client_drop(struct api_client *c, int err, const char *why);

void api_deferred_answer(struct api_client *c, uint8_t *frame, size_t len)
{
    if (!frame) {
        client_drop(c, -EINVAL, "response could not be encoded");
        return;
    }
    if (fconn_queue(&c->fc, frame, len) == 0)
        fconn_resume(&c->fc);
    client_settle(c);
}

/* Track the incomplete frame the client has buffered: the time its first
 * bytes came (at read granularity), restarted whenever a frame completes. */
static void track_partial(struct api_client *c, uint64_t now)
{
    if (!frame_reader_partial(&c->fc.rd)) {
        c->partial_since_ms = 0;
        return;
    }
    if (!c->partial_since_ms || c->partial_requests != c->fc.requests) {
        c->partial_since_ms = now;
        c->partial_requests = c->fc.requests;
        api_timer_arm(c->api);
    }
}

static void client_event(void *opaque, uint32_t events)
{
    struct api_client *c = opaque;
    uint64_t now = map_now_ms();
    c->last_active_ms = now;
    if (events & EPOLLOUT) {
        fconn_pump(&c->fc); /* frames held back while output was full */
        if (!client_settle(c))
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        /* Dispatch what is buffered first: then the room below is what
         * fconn_input() takes, and no byte read is left over. */
        fconn_pump(&c->fc);
        size_t room = fconn_input_room(&c->fc);
        if (room > 65536)
            room = 65536;
        uint8_t buf[65536];
        ssize_t r = room ? recv(c->fd, buf, room, MSG_DONTWAIT) : 0;
        if (room && r == 0) {
            client_close(c, "peer closed");
            return;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            client_close(c, "recv failed");
            return;
        }
        if (r > 0 && fconn_input(&c->fc, buf, (size_t)r) != (size_t)r) {
            client_close(c, "input not taken");
            return;
        }
        if (client_settle(c))
            track_partial(c, now);
    }
}

static void timer_set(struct host_api *api, bool on)
{
    struct itimerspec its = { 0 };
    if (on) {
        its.it_value.tv_sec = api->tick_ms / 1000;
        its.it_value.tv_nsec = (long)(api->tick_ms % 1000) * 1000000L;
        its.it_interval = its.it_value;
    }
    if (api->tfd >= 0 && timerfd_settime(api->tfd, 0, &its, NULL) == 0)
        api->timer_armed = on;
}

void api_timer_arm(struct host_api *api)
{
    if (!api->timer_armed)
        timer_set(api, true);
}

/* Drop c with an error reply (best effort: it is not waited for). */
static void client_drop(struct api_client *c, int err, const char *why)
{
    fconn_fail(&c->fc, err, why);
    fconn_flush(&c->fc);
    client_close(c, why);
}

/* Clients whose started frame did not complete in time, and consumers that
 * stayed over their queue bound. Returns how many clients still need the tick. */
static unsigned check_clients(struct host_api *api, uint64_t now)
{
    unsigned waiting = 0;
    for (struct api_client *c = api->clients, *next; c; c = next) {
        next = c->next;
        if (c->partial_since_ms && now - c->partial_since_ms >= api->cfg.frame_timeout_ms) {
            char why[96];
            snprintf(why, sizeof(why), "a frame did not complete within %u ms", api->cfg.frame_timeout_ms);
            log_warn_limited(&api->refuse_log, "api: connection drops", "api: pid %d uid %u: %s; closing",
                             (int)c->peer.pid, (unsigned)c->peer.uid, why);
            client_drop(c, -ETIMEDOUT, why);
            continue;
        }
        if (c->consumer_id && api_consumer_stalled(c, now)) {
            log_warn_limited(&api->refuse_log, "api: connection drops",
                             "api: pid %d uid %u: consumer stayed over its queue bound (%u fds, %u bytes) for %u ms; "
                             "disconnecting it", (int)c->peer.pid, (unsigned)c->peer.uid, API_CONSUMER_QUEUE_FDS,
                             API_CONSUMER_QUEUE_BYTES, api->cfg.consumer_timeout_ms);
            client_close(c, "consumer not reading");
            continue;
        }
        waiting += c->partial_since_ms || c->over_since_ms;
    }
    return waiting;
}

static void timer_event(void *opaque, uint32_t events)
{
    struct host_api *api = opaque;
    uint64_t ticks;
    if (read(api->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        log_warn("api: timerfd read: %m");
    uint64_t now = map_now_ms();
    unsigned left = map_engine_user_expire(api->eng, now, api->cfg.consumer_timeout_ms);
    left += check_clients(api, now);
    if (left == 0)
        timer_set(api, false);
}

static bool client_idle(const struct api_client *c)
{
    return !c->partial_since_ms && outq_empty(&c->fc.out) && !c->fc.later && !c->fc.closing;
}

/* The least recently active client of a kind (never a consumer: its
 * mappings would go with it), or NULL. */
static struct api_client *oldest(struct host_api *api, bool privileged, bool idle_only)
{
    struct api_client *best = NULL;
    for (struct api_client *c = api->clients; c; c = c->next)
        if (!c->consumer_id && !c->dead && c->peer.privileged == privileged && (!idle_only || client_idle(c)) &&
            (!best || c->last_active_ms <= best->last_active_ms)) /* the list is newest first: ties go to the older */
            best = c;
    return best;
}

/* May a newcomer with these rights have a connection? At the limit, the
 * least recently active idle unprivileged client makes room. A privileged
 * newcomer may also take a busy unprivileged client's place (a stalled
 * partial frame), then use the reserve, then take an idle privileged one's. */
static bool admit(struct host_api *api, const struct api_peer *p)
{
    if (api->nclients < API_MAX_CLIENTS)
        return true;
    struct api_client *v = oldest(api, false, true);
    if (!v && p->privileged)
        v = oldest(api, false, false);
    if (!v && p->privileged && api->nclients < API_MAX_CLIENTS + API_PRIV_RESERVE)
        return true;
    if (!v && p->privileged)
        v = oldest(api, true, true);
    if (!v)
        return false;
    log_warn_limited(&api->refuse_log, "api: connection drops",
                     "api: %u clients (the limit): dropping %s client pid %d uid %u for pid %d uid %u",
                     api->nclients, client_idle(v) ? "idle" : "busy", (int)v->peer.pid, (unsigned)v->peer.uid,
                     (int)p->pid, (unsigned)p->uid);
    client_drop(v, -ENOSPC, "dropped: the host API reached its client limit and a newcomer needed the place");
    return true;
}

/* No room: tell the peer why (STATUS_INSUFFICIENT_RESOURCES) before closing.
 * The socket is new and its buffer empty: the short reply fits without
 * blocking, or is lost if the peer already went. */
static void refuse(struct host_api *api, int fd, const struct api_peer *p)
{
    char detail[96];
    snprintf(detail, sizeof(detail), "the host API has %u clients (its limit); try again later", api->nclients);
    log_warn_limited(&api->refuse_log, "api: connection drops", "api: refusing pid %d uid %u: %s",
                     (int)p->pid, (unsigned)p->uid, detail);
    uint8_t *f;
    size_t n;
    if (fconn_reply_error(0, -ENOSPC, detail, &f, &n) == 0) {
        usock_send(fd, f, n, NULL, 0, MSG_DONTWAIT);
        free(f);
    }
    /* what the peer already sent is read and dropped: a close with unread
     * input would make the peer's reads fail with ECONNRESET */
    uint8_t sink[4096];
    for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ; /* bounded: a peer that keeps writing cannot hold the loop */
    close(fd);
}

static void listen_event(void *opaque, uint32_t events)
{
    struct host_api *api = opaque;
    for (;;) {
        int fd = accept4(api->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                log_warn_limited(&api->refuse_log, "api: connection drops", "api: accept: %m");
            return;
        }
        struct api_peer peer;
        if (api_peer_rights(api, fd, &peer) < 0) {
            log_warn_limited(&api->refuse_log, "api: connection drops", "api: no peer credentials: %m");
            close(fd);
            continue;
        }
        if (!admit(api, &peer)) {
            refuse(api, fd, &peer);
            continue;
        }
        struct api_client *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->api = api;
        c->fd = fd;
        c->peer = peer;
        c->last_active_ms = map_now_ms();
        /* the host API names every undecodable frame alike */
        struct fconn_config cfg = { .out_high = API_OUTQ_HIGH, .name_empty_body = false };
        fconn_init(&c->fc, &client_ops, c, &cfg);
        /* sent PhysRead frames are packed into again (reply_q): kept within
         * the bound of unsent output, so no client holds more than before */
        c->fc.out.spare_limit = API_OUTQ_HIGH;
        if (evloop_add(api->loop, &c->h, fd, EPOLLIN, client_event, c) < 0) {
            close(fd);
            client_free(c);
            continue;
        }
        c->next = api->clients;
        if (c->next)
            c->next->prev = c;
        api->clients = c;
        api->nclients++;
        log_debug("api: client fd %d (pid %d uid %u%s) connected", fd, (int)peer.pid, (unsigned)peer.uid,
                  peer.privileged ? ", privileged" : "");
    }
}

static unsigned min_u(unsigned a, unsigned b)
{
    return a < b ? a : b;
}

struct host_api *host_api_start(struct evloop *loop, struct map_engine *eng, const struct host_api_config *cfg)
{
    const char *path = cfg ? cfg->path : NULL;
    if (!eng || !loop || !path || strlen(path) >= sizeof(((struct host_api *)0)->path)) {
        log_err("api: bad socket path or no engine");
        return NULL;
    }
    int fd = cfg->inherited ? cfg->inherited_fd : usock_listen(path, 0660, USOCK_NO_GROUP, 16, SOCK_NONBLOCK);
    if (fd < 0) {
        log_err("api: %s: %s", path,
                fd == -EADDRINUSE ? "in use by another process" :
                fd == -EEXIST ? "exists and is not a socket" : strerror(-fd));
        return NULL;
    }
    struct host_api *api = calloc(1, sizeof(*api));
    if (!api) {
        close(fd);
        unlink(path);
        return NULL;
    }
    api->loop = loop;
    api->eng = eng;
    api->fd = fd;
    api->cfg = *cfg;
    snprintf(api->path, sizeof(api->path), "%s", path);
    api->cfg.path = api->path;
    api->ctx = (struct api_ctx){ .eng = eng, .vm_ops = cfg->vm_ops, .vm_ctx = cfg->vm_ctx, .op_log = &api->op_log };
    if (!api->cfg.frame_timeout_ms)
        api->cfg.frame_timeout_ms = API_FRAME_TIMEOUT_MS;
    if (!api->cfg.consumer_timeout_ms)
        api->cfg.consumer_timeout_ms = API_CONSUMER_TIMEOUT_MS;
    /* a timeout is noticed within a quarter of itself, at most a second late */
    api->tick_ms = min_u(1000, min_u(api->cfg.frame_timeout_ms, api->cfg.consumer_timeout_ms) / 4);
    if (api->tick_ms < 10)
        api->tick_ms = 10;
    api->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (api->tfd < 0 || evloop_add(loop, &api->th, api->tfd, EPOLLIN, timer_event, api) < 0 ||
        evloop_add(loop, &api->h, fd, EPOLLIN, listen_event, api) < 0) {
        log_err("api: event setup failed");
        evloop_del(loop, &api->th);
        if (api->tfd >= 0)
            close(api->tfd);
        close(fd);
        unlink(path);
        free(api);
        return NULL;
    }
    log_info("api: listening on %s (%u users/groups may read, %u write, %u admin, %u consumer names bound; "
             "frame timeout %u ms, consumer timeout %u ms)", path, cfg->read.n, cfg->write.n, cfg->admin.n,
             cfg->nconsumers, api->cfg.frame_timeout_ms, api->cfg.consumer_timeout_ms);
    return api;
}

void host_api_stop(struct host_api *api)
{
    if (!api)
        return;
    while (api->clients)
        client_close(api->clients, "hostd stopping");
    evloop_del(api->loop, &api->h);
    evloop_del(api->loop, &api->th);
    close(api->tfd);
    close(api->fd);
    if (!api->cfg.keep_path)
        unlink(api->path);
    free(api);
}

int host_api_listener(const struct host_api *api)
{
    return api ? api->fd : -1;
}
