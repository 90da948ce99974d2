/* Host API socket server: accepts clients, frames requests, answers through
 * host_api_handlers.c. A malformed frame gets an error status, then the
 * client is closed once the answer is out. */
#include "host_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "host_api_handlers.h"
#include "host_api_int.h"
#include "log.h"
#include "rpc_outq.h"
#include "rpc_reply.h"

static void client_free(void *ptr)
{
    struct api_client *c = ptr;
    frame_reader_free(&c->rd);
    rpc_outq_free(&c->out);
    free(c);
}

static void client_close(struct api_client *c, const char *why)
{
    struct host_api *api = c->api;
    log_debug("api: client fd %d closed: %s", c->fd, why);
    c->dead = true;
    if (c->consumer_id)
        map_engine_consumer_remove(api->eng, c->consumer_id);
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

static long sock_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct api_client *c = ctx;
    struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
    union {
        char buf[CMSG_SPACE(sizeof(int) * RPC_OUTQ_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds) {
        memset(&u, 0, sizeof(u));
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
    return (long)w;
}

void api_client_queue(struct api_client *c, uint8_t *f, size_t n)
{
    if (rpc_outq_push(&c->out, f, n) < 0)
        c->closing = true;
    free(f);
}

static void process(struct api_client *c)
{
    struct map_engine *e = c->api->eng;
    while (!c->closing && c->out.bytes < API_OUTQ_HIGH) {
        const uint8_t *p;
        size_t plen;
        uint8_t *f;
        size_t n;
        int r = frame_reader_next(&c->rd, &p, &plen);
        if (r == 0)
            break;
        if (r < 0) {
            if (rpc_reply_error(0, -EINVAL, "frame length is 0 or exceeds the 1 MiB limit", &f, &n) == 0)
                api_client_queue(c, f, n);
            c->closing = true;
            break;
        }
        mdl_envelope *req;
        if (frame_decode(p, plen, &req) < 0) {
            if (rpc_reply_error(0, -EINVAL, "undecodable envelope", &f, &n) == 0)
                api_client_queue(c, f, n);
            c->closing = true;
            break;
        }
        if (req->version > MDLMAP_PROTO_VERSION) {
            /* Version 0 is an unset field (proto3 default): read as version 1. */
            char detail[64];
            snprintf(detail, sizeof(detail), "envelope version %u, hostd speaks %u", req->version,
                     MDLMAP_PROTO_VERSION);
            r = rpc_reply_error(req->request_id, -EPROTO, detail, &f, &n);
            frame_envelope_free(req);
            if (r == 0)
                api_client_queue(c, f, n);
            continue;
        }
        if (api_consumer_message(c, req)) { /* consumer registration and answers */
            frame_envelope_free(req);
            continue;
        }
        r = host_api_handle(e, req, &f, &n);
        frame_envelope_free(req);
        if (r < 0) {
            if (rpc_reply_error(0, -EINVAL, "response could not be encoded", &f, &n) == 0)
                api_client_queue(c, f, n);
            c->closing = true;
            break;
        }
        api_client_queue(c, f, n);
    }
}

/* Re-arm epoll for what the client can do now (never flushes nor closes). */
void api_client_arm(struct api_client *c)
{
    if (c->dead)
        return;
    uint32_t ev = 0;
    if (!c->closing && c->out.bytes < API_OUTQ_HIGH && frame_reader_room(&c->rd))
        ev |= EPOLLIN;
    if (!rpc_outq_empty(&c->out) || c->closing)
        ev |= EPOLLOUT;
    evloop_mod(c->api->loop, &c->h, ev);
}

/* Flush and re-arm; returns false if the client was closed. */
bool api_client_settle(struct api_client *c)
{
    int rc = rpc_outq_flush_fds(&c->out, sock_send, c);
    if (rc < 0) {
        client_close(c, "send failed");
        return false;
    }
    if (c->closing && rpc_outq_empty(&c->out)) {
        client_close(c, "protocol error");
        return false;
    }
    api_client_arm(c);
    return true;
}

static void client_event(void *opaque, uint32_t events)
{
    struct api_client *c = opaque;
    if (events & EPOLLOUT) {
        process(c); /* frames held back while output was full */
        if (!api_client_settle(c))
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        size_t room = frame_reader_room(&c->rd);
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
        if (r > 0 && frame_reader_feed(&c->rd, buf, (size_t)r) < 0) {
            client_close(c, "out of memory");
            return;
        }
        process(c);
        api_client_settle(c);
    }
}

static void timer_set(struct host_api *api, bool on)
{
    struct itimerspec its = { 0 };
    if (on) {
        its.it_value.tv_sec = 1;
        its.it_interval.tv_sec = 1;
    }
    if (api->tfd >= 0 && timerfd_settime(api->tfd, 0, &its, NULL) == 0)
        api->timer_armed = on;
}

void api_timer_arm(struct host_api *api)
{
    if (!api->timer_armed)
        timer_set(api, true);
}

static void timer_event(void *opaque, uint32_t events)
{
    struct host_api *api = opaque;
    uint64_t ticks;
    if (read(api->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        log_warn("api: timerfd read: %m");
    if (map_engine_user_expire(api->eng, map_now_ms(), API_CONSUMER_TIMEOUT_MS) == 0)
        timer_set(api, false);
}

static void listen_event(void *opaque, uint32_t events)
{
    struct host_api *api = opaque;
    for (;;) {
        int fd = accept4(api->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                log_warn("api: accept: %m");
            return;
        }
        if (api->nclients >= API_MAX_CLIENTS) {
            log_warn("api: too many clients (%u); refusing one", api->nclients);
            close(fd);
            continue;
        }
        struct api_client *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->api = api;
        c->fd = fd;
        frame_reader_init(&c->rd, MDLMAP_MAX_FRAME);
        rpc_outq_init(&c->out);
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
        log_debug("api: client fd %d connected", fd);
    }
}

struct host_api *host_api_start(struct evloop *loop, struct map_engine *eng, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!eng || !loop || !path || strlen(path) >= sizeof(sa.sun_path)) {
        log_err("api: bad socket path or no engine");
        return NULL;
    }
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            log_err("api: %s is in use by another process", path);
            return NULL;
        }
        unlink(path); /* stale socket of an earlier hostd */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_err("api: socket: %m");
        return NULL;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        log_err("api: %s: %m", path);
        close(fd);
        return NULL; /* the path is not ours: leave it */
    }
    if (chmod(path, 0660) < 0 || listen(fd, 16) < 0) {
        log_err("api: %s: %m", path);
        close(fd);
        unlink(path); /* the socket file we just bound */
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
    snprintf(api->path, sizeof(api->path), "%s", path);
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
    log_info("api: listening on %s", path);
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
    unlink(api->path);
    free(api);
}
