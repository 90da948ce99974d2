/* epoll event loop. Handlers are owned by their users; the loop only keeps
 * pointers to them in epoll data. Deferred frees run after each batch so that
 * a handler freed by an earlier callback in the batch is never touched:
 * evloop_del() marks it dead and dispatch skips dead handlers. */
#include "evloop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"

#define EV_BATCH 64

struct deferred {
    void (*fn)(void *);
    void *ptr;
};

struct evloop {
    int epfd;
    bool stopped;
    bool in_batch;
    struct epoll_event evs[EV_BATCH];
    int nevs;
    struct deferred *defer;
    size_t ndefer, capdefer;
};

struct evloop *evloop_new(void)
{
    struct evloop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        log_err("evloop: epoll_create1: %m");
        free(loop);
        return NULL;
    }
    return loop;
}

static void run_deferred(struct evloop *loop)
{
    /* fn may defer more work: loop until the list is empty */
    while (loop->ndefer) {
        struct deferred d = loop->defer[--loop->ndefer];
        d.fn(d.ptr);
    }
}

void evloop_free(struct evloop *loop)
{
    if (!loop)
        return;
    run_deferred(loop);
    free(loop->defer);
    close(loop->epfd);
    free(loop);
}

int evloop_add(struct evloop *loop, struct ev_handler *h, int fd, uint32_t events, ev_cb cb, void *opaque)
{
    if (!loop || !h || fd < 0 || !cb)
        return -EINVAL;
    if (h->registered)
        return -EBUSY;
    h->fd = fd;
    h->cb = cb;
    h->opaque = opaque;
    h->dead = false;
    struct epoll_event ev = { .events = events, .data.ptr = h };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;
        log_err("evloop: add fd %d: %m", fd);
        return -e;
    }
    h->registered = true;
    return 0;
}

int evloop_mod(struct evloop *loop, struct ev_handler *h, uint32_t events)
{
    if (!loop || !h || !h->registered)
        return -EINVAL;
    struct epoll_event ev = { .events = events, .data.ptr = h };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0) {
        int e = errno;
        log_err("evloop: mod fd %d: %m", h->fd);
        return -e;
    }
    return 0;
}

void evloop_del(struct evloop *loop, struct ev_handler *h)
{
    if (!loop || !h || !h->registered)
        return;
    /* Fails harmlessly if the fd was already closed (it left the epoll set). */
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    h->registered = false;
    /* Events for h already fetched in this batch must be skipped. Handlers
     * are usually reused (embedded), so also clear pointers from the batch. */
    h->dead = true;
    if (loop->in_batch) {
        for (int i = 0; i < loop->nevs; i++)
            if (loop->evs[i].data.ptr == h)
                loop->evs[i].data.ptr = NULL;
    }
}

int evloop_defer_free(struct evloop *loop, void (*fn)(void *), void *ptr)
{
    if (!loop || !fn)
        return -EINVAL;
    if (!loop->in_batch) {
        fn(ptr);
        return 0;
    }
    if (loop->ndefer == loop->capdefer) {
        size_t cap = loop->capdefer ? loop->capdefer * 2 : 16;
        struct deferred *d = realloc(loop->defer, cap * sizeof(*d));
        if (!d) {
            log_err("evloop: defer: out of memory");
            return -ENOMEM;
        }
        loop->defer = d;
        loop->capdefer = cap;
    }
    loop->defer[loop->ndefer++] = (struct deferred){ fn, ptr };
    return 0;
}

int evloop_run_once(struct evloop *loop, int timeout_ms)
{
    if (!loop)
        return -EINVAL;
    if (loop->stopped)
        return 0;
    int n = epoll_wait(loop->epfd, loop->evs, EV_BATCH, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        int e = errno;
        log_err("evloop: epoll_wait: %m");
        return -e;
    }
    loop->nevs = n;
    loop->in_batch = true;
    for (int i = 0; i < n; i++) {
        struct ev_handler *h = loop->evs[i].data.ptr;
        if (!h || h->dead || !h->registered)
            continue;
        h->cb(h->opaque, loop->evs[i].events);
    }
    loop->in_batch = false;
    loop->nevs = 0;
    run_deferred(loop);
    return n;
}

void evloop_stop(struct evloop *loop)
{
    if (loop)
        loop->stopped = true;
}

bool evloop_stopped(const struct evloop *loop)
{
    return !loop || loop->stopped;
}
