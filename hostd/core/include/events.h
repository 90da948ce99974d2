/* hostd's event bus: what happens in the daemon (VMs come and go, MDLs are
 * locked and mapped, leaks, refusals, consumers), told to whoever subscribed
 * without polling. The daemon owns one bus and hands its pointer to every
 * publisher at creation; a subscriber is a callback with a type filter.
 *
 * Cost when nobody listens: a publisher tests events_wanted() first (one
 * load of the bus's mask and one branch) and builds nothing otherwise; no
 * clock is read, no sequence number used. Publishing is synchronous: every
 * subscriber whose filter takes the event is called before events_publish()
 * returns, in subscription order. No protobuf here (core is below it). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* The values of mdlmap.v1.EventType (proto/mdlmap.proto). */
enum event_type {
    EV_NONE = 0,
    EV_VM_ADDED = 1,
    EV_VM_REMOVED = 2,
    EV_VM_CONNECTED = 3,      /* QEMU connected to the VM's vhost-user socket */
    EV_VM_DISCONNECTED = 4,   /* QEMU went away */
    EV_VM_RESET = 5,          /* the device was stopped or reset with QEMU still connected */
    EV_MDL_LOCKED = 6,
    EV_MDL_UNLOCKED = 7,
    EV_MAPPING_CREATED = 8,
    EV_MAPPING_REMOVED = 9,
    EV_LEAK_RECORDED = 10,
    EV_CONSUMER_REGISTERED = 11,
    EV_CONSUMER_LOST = 12,
    EV_QUOTA_REFUSED = 13,
    EV_GRANT_CREATED = 14,    /* a cross-VM grant (hostd/mdl/map_grant.c) */
    EV_GRANT_REVOKED = 15,
    EV_TYPE_COUNT
};
#define EVENTS_ALL_TYPES (((1u << EV_TYPE_COUNT) - 1u) & ~1u) /* every type but EV_NONE */
_Static_assert(EV_TYPE_COUNT <= 32, "a filter is one 32-bit mask");

/* One event. Strings are borrowed for the duration of the publish call
 * (NULL reads as empty); subscribers copy what they keep. */
struct event {
    uint64_t seq;             /* set by events_publish: hostd-wide, +1 per published event */
    uint64_t time_ns;         /* set by events_publish: CLOCK_REALTIME */
    enum event_type type;
    const char *vm_name;
    uint64_t cid;
    uint64_t conn_id;         /* the guest connection (MDL events) */
    uint64_t mdl_handle, map_handle;
    uint32_t page_count;
    uint64_t guest_address;   /* the address the guest was told (MAPPING_*) */
    const char *consumer;     /* UserMode consumer name */
    const char *detail;       /* reason: leaks, refusals, resets, removals */
};

/* Called for each event its filter takes. It may unsubscribe any
 * subscriber (itself included) and subscribe new ones (they see the next
 * event, not this one); it must not publish. */
typedef void (*event_fn)(void *ctx, const struct event *ev);

/* Subscribers per bus: each host API connection has at most one, and the
 * host API at most 80 connections. */
#define EVENTS_MAX_SUBS 256u

struct event_sub {
    event_fn fn;              /* NULL: removed during a publish (compacted after it) */
    void *ctx;
    uint32_t types;           /* bit t: wants type t */
    unsigned id;
};

/* Readable by the inline below; changed only through the functions. */
struct events {
    uint32_t want;            /* union of the subscribers' type masks */
    uint64_t next_seq;        /* seq of the next published event (starts at 1) */
    struct event_sub *subs;
    unsigned nsubs, cap;
    unsigned next_id;
    unsigned publishing;      /* nesting depth of events_publish */
    bool removed;             /* a subscriber left during a publish: compact afterwards */
};

struct events *events_new(void);
void events_free(struct events *b);

/* Does anyone want events of this type? The test every publisher makes
 * before building an event. b must not be NULL. */
static inline bool events_wanted(const struct events *b, enum event_type t)
{
    return (b->want >> t) & 1u;
}

/* Assign seq and time, then call every subscriber whose mask takes ev->type. */
void events_publish(struct events *b, struct event *ev);

/* Subscribe fn for the types in mask (0: all). Returns an id (> 0) or
 * -ENOSPC (EVENTS_MAX_SUBS), -ENOMEM. */
int events_subscribe(struct events *b, uint32_t types, event_fn fn, void *ctx);
/* Change a subscriber's type mask (0: all). 0 or -ENOENT. */
int events_set_types(struct events *b, unsigned id, uint32_t types);
/* Remove a subscriber (safe during a publish). Unknown ids are ignored. */
void events_unsubscribe(struct events *b, unsigned id);
/* The seq the next published event will carry. */
static inline uint64_t events_next_seq(const struct events *b)
{
    return b->next_seq;
}
/* Subscribers (for tests and diagnostics). */
unsigned events_subscribers(const struct events *b);
/* The name of a type ("MAPPING_CREATED"), "?" when unknown. */
const char *event_type_name(enum event_type t);
