/* The event bus: sequence numbers, type filters and the mask publishers
 * test, subscribers leaving or joining during a publish, bounds. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "events.h"
#include "tap.h"

#define MAXREC 64

struct rec {
    struct events *bus;
    unsigned n;
    uint64_t seq[MAXREC];
    enum event_type type[MAXREC];
    uint64_t time_ns[MAXREC];
    char vm[MAXREC][16];
    /* what the callback does to the bus when called */
    unsigned unsub_id;        /* unsubscribe this id */
    struct rec *join;         /* subscribe join (all types) */
    int joined_id;
};

static void on_event(void *ctx, const struct event *ev)
{
    struct rec *r = ctx;
    if (r->n < MAXREC) {
        r->seq[r->n] = ev->seq;
        r->type[r->n] = ev->type;
        r->time_ns[r->n] = ev->time_ns;
        snprintf(r->vm[r->n], sizeof(r->vm[0]), "%s", ev->vm_name ? ev->vm_name : "");
    }
    r->n++;
    if (r->unsub_id) {
        events_unsubscribe(r->bus, r->unsub_id);
        r->unsub_id = 0;
    }
    if (r->join) {
        r->joined_id = events_subscribe(r->bus, 0, on_event, r->join);
        r->join = NULL;
    }
}

static void publish(struct events *b, enum event_type t, const char *vm)
{
    struct event ev = { .type = t, .vm_name = vm };
    events_publish(b, &ev);
}

static void test_seq_and_mask(void)
{
    struct events *b = events_new();
    CHECK(b != NULL);
    /* nobody listens: no type is wanted, and nothing needs to be built */
    for (int t = 0; t < EV_TYPE_COUNT; t++)
        CHECK(!events_wanted(b, (enum event_type)t));
    CHECK_EQ(events_next_seq(b), 1);
    struct rec all = { .bus = b };
    int id = events_subscribe(b, 0, on_event, &all);
    CHECK(id > 0);
    CHECK(events_wanted(b, EV_MAPPING_CREATED) && events_wanted(b, EV_QUOTA_REFUSED));
    CHECK(!events_wanted(b, EV_NONE)); /* 0 is "all real types", not NONE */
    for (int i = 0; i < 5; i++)
        publish(b, EV_MDL_LOCKED, "a");
    CHECK_EQ(all.n, 5);
    for (unsigned i = 0; i < 5; i++)
        CHECK_EQ(all.seq[i], i + 1); /* hostd-wide, +1 per event */
    CHECK(all.time_ns[0] > 1600000000ull * 1000000000ull); /* CLOCK_REALTIME, after 2020 */
    CHECK(all.time_ns[4] >= all.time_ns[0]);
    CHECK_EQ(events_next_seq(b), 6);
    events_unsubscribe(b, (unsigned)id);
    CHECK_EQ(events_subscribers(b), 0);
    for (int t = 0; t < EV_TYPE_COUNT; t++)
        CHECK(!events_wanted(b, (enum event_type)t));
    events_unsubscribe(b, 12345); /* unknown ids are ignored */
    events_free(b);
}

static void test_filters(void)
{
    struct events *b = events_new();
    struct rec maps = { .bus = b }, vms = { .bus = b };
    int a = events_subscribe(b, 1u << EV_MAPPING_CREATED | 1u << EV_MAPPING_REMOVED, on_event, &maps);
    int v = events_subscribe(b, 1u << EV_VM_CONNECTED, on_event, &vms);
    CHECK(a > 0 && v > 0 && a != v);
    /* the union of the filters is what publishers test */
    CHECK(events_wanted(b, EV_MAPPING_CREATED) && events_wanted(b, EV_VM_CONNECTED));
    CHECK(!events_wanted(b, EV_MDL_LOCKED) && !events_wanted(b, EV_LEAK_RECORDED));
    publish(b, EV_MAPPING_CREATED, "x");
    publish(b, EV_VM_CONNECTED, "x");
    publish(b, EV_MAPPING_REMOVED, "x");
    CHECK_EQ(maps.n, 2);
    CHECK_EQ(vms.n, 1);
    CHECK(maps.type[0] == EV_MAPPING_CREATED && maps.type[1] == EV_MAPPING_REMOVED);
    CHECK_EQ(maps.seq[0], 1);
    CHECK_EQ(vms.seq[0], 2);
    CHECK_EQ(maps.seq[1], 3); /* a filtered subscriber sees the others' events as gaps */
    /* a published event nobody's filter takes still numbers: publishers do
     * not publish it (events_wanted), but the bus delivers to nobody */
    publish(b, EV_LEAK_RECORDED, "x");
    CHECK_EQ(maps.n + vms.n, 3);
    /* changing a filter changes the union */
    CHECK_EQ(events_set_types(b, (unsigned)v, 1u << EV_LEAK_RECORDED), 0);
    CHECK(!events_wanted(b, EV_VM_CONNECTED) && events_wanted(b, EV_LEAK_RECORDED));
    CHECK_EQ(events_set_types(b, 999, 0), -ENOENT);
    publish(b, EV_LEAK_RECORDED, "y");
    CHECK_EQ(vms.n, 2);
    CHECK(vms.type[1] == EV_LEAK_RECORDED && !strcmp(vms.vm[1], "y"));
    /* bits outside the known types are ignored: such a filter takes nothing */
    events_set_types(b, (unsigned)v, 1u << 31);
    CHECK(!events_wanted(b, EV_VM_ADDED) && !events_wanted(b, EV_LEAK_RECORDED));
    events_free(b); /* with subscribers: freed with them */
}

static void test_removal_during_publish(void)
{
    struct events *b = events_new();
    struct rec r1 = { .bus = b }, r2 = { .bus = b }, r3 = { .bus = b };
    int i1 = events_subscribe(b, 0, on_event, &r1);
    int i2 = events_subscribe(b, 0, on_event, &r2);
    int i3 = events_subscribe(b, 0, on_event, &r3);
    /* r1's callback removes r2, which comes later in the same publish */
    r1.unsub_id = (unsigned)i2;
    publish(b, EV_VM_ADDED, "a");
    CHECK_EQ(r1.n, 1);
    CHECK_EQ(r2.n, 0); /* removed before its turn: not called */
    CHECK_EQ(r3.n, 1);
    CHECK_EQ(events_subscribers(b), 2);
    /* r3 removes itself; r1 still gets the next one */
    r3.unsub_id = (unsigned)i3;
    publish(b, EV_VM_ADDED, "b");
    publish(b, EV_VM_ADDED, "c");
    CHECK_EQ(r3.n, 1 + 1);
    CHECK_EQ(r1.n, 3);
    CHECK_EQ(events_subscribers(b), 1);
    /* a subscriber joining from a callback starts with the next event */
    struct rec late = { .bus = b };
    r1.join = &late;
    publish(b, EV_VM_ADDED, "d");
    CHECK(r1.joined_id > 0);
    CHECK_EQ(late.n, 0);
    publish(b, EV_VM_ADDED, "e");
    CHECK_EQ(late.n, 1);
    CHECK_EQ(late.seq[0], 5);
    CHECK_EQ(r1.seq[r1.n - 1], 5);
    /* the last one leaving clears the mask */
    events_unsubscribe(b, (unsigned)i1);
    events_unsubscribe(b, (unsigned)r1.joined_id);
    CHECK(!events_wanted(b, EV_VM_ADDED));
    CHECK_EQ(events_subscribers(b), 0);
    events_free(b);
}

static void test_bounds(void)
{
    struct events *b = events_new();
    struct rec r = { .bus = b };
    int last = 0;
    for (unsigned i = 0; i < EVENTS_MAX_SUBS; i++)
        last = events_subscribe(b, 0, on_event, &r);
    CHECK(last > 0);
    CHECK_EQ(events_subscribe(b, 0, on_event, &r), -ENOSPC);
    events_unsubscribe(b, (unsigned)last);
    CHECK(events_subscribe(b, 0, on_event, &r) > 0); /* a freed place can be taken */
    publish(b, EV_VM_RESET, NULL);
    CHECK_EQ(r.n, EVENTS_MAX_SUBS);
    CHECK_EQ(events_subscribe(b, 0, NULL, &r), -EINVAL);
    CHECK(!strcmp(event_type_name(EV_QUOTA_REFUSED), "QUOTA_REFUSED"));
    CHECK(!strcmp(event_type_name((enum event_type)99), "?"));
    events_free(b);
}

int main(void)
{
    test_seq_and_mask();
    test_filters();
    test_removal_during_publish();
    test_bounds();
    return tap_done();
}
