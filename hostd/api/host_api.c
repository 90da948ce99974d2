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

static long client_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct api_client *c = ctx;
    long w = usock_send(c->fd, p, n, fds, nfds, MSG_DONTWAIT);
    return w == -EINTR ? -EAGAIN : w;
}

/* Consumer messages first (registration and answers), then host API requests. */
static int client_dispatch(void *ctx, struct fconn *fc, const mdl_envelope *req)
{
    struct api_client *c = ctx;
    if (api_consumer_message(c, req))
        return 0;
    uint8_t *f;
    size_t n;
    int rc = host_api_handle(c->api->eng, req, &f, &n);
    if (rc < 0)
        return rc;
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

static void client_event(void *opaque, uint32_t events)
{
    struct api_client *c = opaque;
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
        client_settle(c);
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
        /* the host API names every undecodable frame alike */
        struct fconn_config cfg = { .out_high = API_OUTQ_HIGH, .name_empty_body = false };
        fconn_init(&c->fc, &client_ops, c, &cfg);
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
    if (!eng || !loop || !path) {
        log_err("api: bad socket path or no engine");
        return NULL;
    }
    int fd = usock_listen(path, 0660, USOCK_NO_GROUP, 16, SOCK_NONBLOCK);
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
