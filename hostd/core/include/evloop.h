/* A small epoll event loop. Handlers are embedded in their owners; an owner
 * that frees itself from inside a callback must use evloop_defer_free() so
 * that events already fetched in the same batch never touch freed memory. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct evloop;

typedef void (*ev_cb)(void *opaque, uint32_t events);

struct ev_handler {
    int fd;
    ev_cb cb;
    void *opaque;
    bool registered;
    bool dead; /* removed during this batch: skip remaining events */
};

struct evloop *evloop_new(void);
void evloop_free(struct evloop *loop);

/* events: EPOLLIN | EPOLLOUT | ...; returns 0 or -errno */
int evloop_add(struct evloop *loop, struct ev_handler *h, int fd, uint32_t events, ev_cb cb, void *opaque);
int evloop_mod(struct evloop *loop, struct ev_handler *h, uint32_t events);
void evloop_del(struct evloop *loop, struct ev_handler *h); /* does not close fd */

/* Run fn(ptr) after the current batch of events has been dispatched. */
int evloop_defer_free(struct evloop *loop, void (*fn)(void *), void *ptr);

/* Run one batch, waiting at most timeout_ms (-1: forever). Returns number of events or -errno. */
int evloop_run_once(struct evloop *loop, int timeout_ms);
void evloop_stop(struct evloop *loop);
bool evloop_stopped(const struct evloop *loop);
