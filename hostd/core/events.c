/* The event bus (see events.h): a subscriber array owned by the bus,
 * compacted after a publish during which some left. */
#include "events.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct events *events_new(void)
{
    struct events *b = calloc(1, sizeof(*b));
    if (b)
        b->next_seq = 1;
    return b;
}

void events_free(struct events *b)
{
    if (!b)
        return;
    free(b->subs);
    free(b);
}

static uint32_t mask_of(uint32_t types)
{
    return types ? types & EVENTS_ALL_TYPES : EVENTS_ALL_TYPES;
}

static void recompute_want(struct events *b)
{
    uint32_t w = 0;
    for (unsigned i = 0; i < b->nsubs; i++)
        if (b->subs[i].fn)
            w |= b->subs[i].types;
    b->want = w;
}

/* Drop the entries removed during a publish (only once no publish runs:
 * a publish walks the array by index). */
static void compact(struct events *b)
{
    if (!b->removed || b->publishing)
        return;
    unsigned k = 0;
    for (unsigned i = 0; i < b->nsubs; i++)
        if (b->subs[i].fn)
            b->subs[k++] = b->subs[i];
    b->nsubs = k;
    b->removed = false;
}

int events_subscribe(struct events *b, uint32_t types, event_fn fn, void *ctx)
{
    if (!b || !fn)
        return -EINVAL;
    if (events_subscribers(b) >= EVENTS_MAX_SUBS)
        return -ENOSPC;
    if (b->nsubs == b->cap) {
        unsigned cap = b->cap ? b->cap * 2 : 8;
        struct event_sub *s = realloc(b->subs, cap * sizeof(*s));
        if (!s)
            return -ENOMEM;
        b->subs = s;
        b->cap = cap;
    }
    unsigned id = ++b->next_id;
    if (id == 0 || id > (unsigned)INT32_MAX) /* ids are returned as int */
        id = b->next_id = 1;
    b->subs[b->nsubs++] = (struct event_sub){ .fn = fn, .ctx = ctx, .types = mask_of(types), .id = id };
    b->want |= mask_of(types);
    return (int)id;
}

static struct event_sub *find(struct events *b, unsigned id)
{
    for (unsigned i = 0; id && i < b->nsubs; i++)
        if (b->subs[i].id == id && b->subs[i].fn)
            return &b->subs[i];
    return NULL;
}

int events_set_types(struct events *b, unsigned id, uint32_t types)
{
    struct event_sub *s = b ? find(b, id) : NULL;
    if (!s)
        return -ENOENT;
    s->types = mask_of(types);
    recompute_want(b);
    return 0;
}

void events_unsubscribe(struct events *b, unsigned id)
{
    struct event_sub *s = b ? find(b, id) : NULL;
    if (!s)
        return;
    s->fn = NULL;
    s->id = 0;
    b->removed = true;
    recompute_want(b);
    compact(b);
}

unsigned events_subscribers(const struct events *b)
{
    unsigned n = 0;
    for (unsigned i = 0; b && i < b->nsubs; i++)
        n += b->subs[i].fn != NULL;
    return n;
}

void events_publish(struct events *b, struct event *ev)
{
    if (!b || !ev)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ev->seq = b->next_seq++;
    ev->time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    uint32_t bit = ev->type < EV_TYPE_COUNT ? 1u << ev->type : 0;
    /* subscribers added by a callback join after this event: walk only
     * those present now (the array may move, so index it afresh) */
    unsigned n = b->nsubs;
    b->publishing++;
    for (unsigned i = 0; i < n; i++) {
        struct event_sub s = b->subs[i];
        if (s.fn && (s.types & bit))
            s.fn(s.ctx, ev);
    }
    b->publishing--;
    compact(b);
}

const char *event_type_name(enum event_type t)
{
    static const char *const names[EV_TYPE_COUNT] = {
        "NONE", "VM_ADDED", "VM_REMOVED", "VM_CONNECTED", "VM_DISCONNECTED", "VM_RESET", "MDL_LOCKED",
        "MDL_UNLOCKED", "MAPPING_CREATED", "MAPPING_REMOVED", "LEAK_RECORDED", "CONSUMER_REGISTERED",
        "CONSUMER_LOST", "QUOTA_REFUSED",
    };
    return (unsigned)t < EV_TYPE_COUNT ? names[t] : "?";
}
