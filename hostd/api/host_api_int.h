/* Internals of the host API server shared with host_api_consumer.c. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "fconn.h"
#include "frame.h"
#include "evloop.h"
#include "map_engine.h"

#define API_MAX_CLIENTS 64
#define API_OUTQ_HIGH (2u * 1024u * 1024u)

struct api_client {
    struct host_api *api;
    int fd;
    struct ev_handler h;
    struct fconn fc;        /* framing, output queue, protocol errors */
    bool dead;              /* closed; memory freed after the event batch */
    uint64_t consumer_id;   /* registered UserMode consumer, or 0 */
    struct api_client *prev, *next;
};

#define API_CONSUMER_TIMEOUT_MS 10000u /* a UserMode consumer must answer MapInto by then */

struct host_api {
    struct evloop *loop;
    struct map_engine *eng;
    char path[108];
    int fd;
    struct ev_handler h;
    int tfd;                /* timerfd: expires unanswered MapInto requests */
    struct ev_handler th;
    bool timer_armed;
    struct api_client *clients;
    unsigned nclients;
};

/* Re-arm epoll only (safe from any context: never closes the client). */
void api_client_arm(struct api_client *c);
/* Start the 1 s expiry tick (idempotent). */
void api_timer_arm(struct host_api *api);
/* host_api_consumer.c: true if req was a consumer message (handled, maybe answered). */
bool api_consumer_message(struct api_client *c, const mdl_envelope *req);
