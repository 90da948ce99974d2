/* Event subscribers on the host API. A Subscribe (read right) puts the
 * connection on the daemon's event bus with a filter (types, VM); every
 * event the filter takes is pushed on the connection as an Envelope with the
 * Subscribe's request_id. A subscriber that does not read loses events
 * (counted in the next event's dropped), never hostd memory: see
 * API_EVENT_QUEUE_* in host_api_int.h. A second Subscribe on a connection
 * replaces the first (its filter and request_id apply from its answer on). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fconn.h"
#include "host_api_int.h"
#include "log.h"

void api_publish(struct host_api *api, struct event *ev)
{
    struct events *b = api->cfg.events;
    if (b && events_wanted(b, ev->type))
        events_publish(b, ev);
}

/* Forget queued events the kernel has taken (their end is behind what was sent). */
static void retire(struct api_client *c)
{
    struct api_sub *s = &c->sub;
    if (outq_empty(&c->fc.out)) {
        s->n = 0;
        return;
    }
    while (s->n && s->ends[s->head] <= c->sent_bytes) {
        s->head = (s->head + 1) % API_EVENT_QUEUE_EVENTS;
        s->n--;
    }
}

static bool vm_matches(const struct api_sub *s, const struct event *ev)
{
    return !s->vm[0] || (ev->vm_name && !strcmp(ev->vm_name, s->vm));
}

static char *str(const char *s)
{
    return (char *)(s ? s : "");
}

static void on_event(void *ctx, const struct event *ev)
{
    struct api_client *c = ctx;
    struct api_sub *s = &c->sub;
    if (c->dead || c->fc.closing || !vm_matches(s, ev))
        return;
    retire(c);
    if (s->n >= API_EVENT_QUEUE_EVENTS || c->fc.out.bytes >= API_EVENT_QUEUE_BYTES) {
        if (s->dropped++ == 0) /* slow: its queue is at the bound */
            log_debug("api: pid %d: subscriber is not reading (%u events, %zu bytes queued): dropping events",
                      (int)c->peer.pid, s->n, c->fc.out.bytes);
        return;
    }
    char detail[API_EVENT_DETAIL_MAX + 1];
    snprintf(detail, sizeof(detail), "%s", str(ev->detail));
    Mdlmap__V1__Event e = MDLMAP__V1__EVENT__INIT;
    e.seq = ev->seq;
    e.type = (Mdlmap__V1__EventType)ev->type;
    e.time_ns = ev->time_ns;
    e.vm_name = str(ev->vm_name);
    e.guest_cid = ev->cid;
    e.conn_id = ev->conn_id;
    e.mdl_handle = ev->mdl_handle;
    e.map_handle = ev->map_handle;
    e.page_count = ev->page_count;
    e.guest_address = ev->guest_address;
    e.consumer = str(ev->consumer);
    e.detail = detail;
    e.dropped = s->dropped;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_EVENT;
    env.event = &e;
    uint8_t *f;
    size_t n;
    if (fconn_reply_encode(&env, s->request_id, 0, NULL, &f, &n) < 0 || fconn_push(&c->fc, f, n, NULL, 0, 0) < 0) {
        s->dropped++; /* out of memory: lost like any other */
        return;
    }
    s->dropped = 0;
    /* where this event ends in the stream: everything sent plus everything queued */
    s->ends[(s->head + s->n) % API_EVENT_QUEUE_EVENTS] = c->sent_bytes + c->fc.out.bytes;
    s->n++;
    api_client_arm(c); /* the event loop sends it: never flush or close from here */
}

/* The filter of rq as a bus mask; -EINVAL (detail) for an unknown type. */
static int types_of(const Mdlmap__V1__SubscribeRequest *rq, uint32_t *mask, char *detail, size_t dlen)
{
    *mask = 0;
    for (size_t i = 0; i < rq->n_types; i++) {
        int t = (int)rq->types[i];
        if (t <= EV_NONE || t >= EV_TYPE_COUNT) {
            snprintf(detail, dlen, "unknown event type %d", t);
            return -EINVAL;
        }
        *mask |= 1u << t;
    }
    return 0;
}

static int subscribe(struct api_client *c, const Mdlmap__V1__SubscribeRequest *rq, uint64_t request_id,
                     char *detail, size_t dlen)
{
    struct events *b = c->api->cfg.events;
    struct api_sub *s = &c->sub;
    uint32_t mask;
    int rc = types_of(rq, &mask, detail, dlen);
    if (rc < 0)
        return rc;
    const char *vm = rq->vm_name ? rq->vm_name : "";
    if (strlen(vm) >= sizeof(s->vm)) {
        snprintf(detail, dlen, "VM name longer than %zu bytes", sizeof(s->vm) - 1);
        return -EINVAL;
    }
    if (!b) {
        snprintf(detail, dlen, "this hostd has no event bus");
        return -ENOTSUP;
    }
    if (s->id) { /* a second Subscribe replaces the first */
        events_set_types(b, s->id, mask);
    } else {
        if (!s->ends && !(s->ends = calloc(API_EVENT_QUEUE_EVENTS, sizeof(*s->ends)))) {
            snprintf(detail, dlen, "out of memory");
            return -ENOMEM;
        }
        rc = events_subscribe(b, mask, on_event, c);
        if (rc < 0) {
            snprintf(detail, dlen, rc == -ENOSPC ? "too many subscribers" : "out of memory");
            return rc;
        }
        s->id = (unsigned)rc;
    }
    s->request_id = request_id;
    snprintf(s->vm, sizeof(s->vm), "%s", vm);
    log_debug("api: pid %d subscribed to events (types 0x%x, vm '%s')", (int)c->peer.pid, mask, s->vm);
    return 0;
}

bool api_events_message(struct api_client *c, const mdl_envelope *req)
{
    if (req->body_case != MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE)
        return false;
    char detail[120] = "";
    int rc = subscribe(c, req->subscribe, req->request_id, detail, sizeof(detail));
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__SubscribeResponse rp = MDLMAP__V1__SUBSCRIBE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE_REPLY;
    env.subscribe_reply = &rp;
    rp.next_seq = c->api->cfg.events ? events_next_seq(c->api->cfg.events) : 0;
    uint8_t *f;
    size_t n;
    if (fconn_reply_encode(&env, req->request_id, rc, detail, &f, &n) == 0)
        fconn_queue(&c->fc, f, n);
    return true;
}

void api_events_stop(struct api_client *c)
{
    struct api_sub *s = &c->sub;
    if (s->id)
        events_unsubscribe(c->api->cfg.events, s->id);
    s->id = 0;
    free(s->ends);
    s->ends = NULL;
    s->n = 0;
}
