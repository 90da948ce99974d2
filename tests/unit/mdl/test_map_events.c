/* The MDL engine's events on a bus: lock/map/unmap/unlock with their handles;
 * UserMode mappings exist (MAPPING_CREATED) only once the consumer answered,
 * a map that never completed has no MAPPING_REMOVED; refusals for quotas,
 * the consumer's VMA budget and its full queue are QUOTA_REFUSED; a dying
 * consumer's mappings are LEAK_RECORDED when orphaned and removed when the
 * guest unmaps; a connection's end records leaks before removals; every
 * created mapping and locked MDL is removed exactly once; freeing the engine
 * publishes nothing. */
#include <errno.h>
#include <string.h>

#include "fake_vm.h"
#include "log.h"
#include "tap.h"

#define PG 4096u
#define DL 200
static char detail[DL];

#define MAXEV 64
struct seen {
    unsigned n;
    struct {
        enum event_type type;
        uint64_t mdl, map, conn, addr;
        uint32_t pages;
        char consumer[64], detail[200];
    } e[MAXEV];
    unsigned count[EV_TYPE_COUNT];
};

static void on_event(void *ctx, const struct event *ev)
{
    struct seen *s = ctx;
    s->count[ev->type]++;
    if (s->n >= MAXEV)
        return;
    s->e[s->n].type = ev->type;
    s->e[s->n].mdl = ev->mdl_handle;
    s->e[s->n].map = ev->map_handle;
    s->e[s->n].conn = ev->conn_id;
    s->e[s->n].addr = ev->guest_address;
    s->e[s->n].pages = ev->page_count;
    snprintf(s->e[s->n].consumer, sizeof(s->e[0].consumer), "%s", ev->consumer ? ev->consumer : "");
    snprintf(s->e[s->n].detail, sizeof(s->e[0].detail), "%s", ev->detail ? ev->detail : "");
    s->n++;
}

/* the type of the i-th event from the end (0: the last) */
static enum event_type last(const struct seen *s, unsigned i)
{
    return s->n > i ? s->e[s->n - 1 - i].type : EV_NONE;
}

struct fake_consumer {
    int answer; /* what map_into returns */
    uint64_t handle;
};

static int fc_map_into(void *ctx, const struct map_obj *m, const struct map_run *runs, uint32_t nruns)
{
    struct fake_consumer *fc = ctx;
    fc->handle = MI(m).handle;
    return fc->answer;
}

static void fc_unmap_from(void *ctx, uint64_t map_handle, uint64_t base, uint64_t len)
{
}

static const struct map_consumer_ops fc_ops = { .map_into = fc_map_into, .unmap_from = fc_unmap_from };

static int map_p(struct map_engine *e, struct map_owner *o, uint64_t h, uint32_t mode, uint32_t prio,
                 const char *consumer, const struct map_obj **m)
{
    struct map_params p = { .access_mode = mode, .cache_type = 1, .priority = prio, .consumer = consumer };
    return map_engine_map(e, o, h, &p, m, detail, DL);
}

int main(void)
{
    log_threshold = LOG_ERROR;
    struct fake_vm f;
    if (fake_vm_init(&f, "ev", 5) < 0)
        return 1;
    struct events *bus = events_new();
    struct seen s = { 0 };
    CHECK(events_subscribe(bus, 0, on_event, &s) > 0);
    struct map_limits lim = { .vm_page_quota = 16, .max_vmas = 1000, .consumer_vmas = 4, .events = bus };
    struct map_engine *e = map_engine_new(&lim);
    struct map_vm *vm = fake_vm_add(&f, e);
    struct map_owner o = { vm, 42 };
    uint64_t pfns[8] = { 100, 101, 102, 103, 200, 201, 202, 203 }, h, h2;
    const struct map_obj *m;

    /* KernelMode: the four events with their handles */
    CHECK_EQ(map_engine_lock(e, &o, 0, 2 * PG, pfns, 2, 1, &h, detail, DL), 0);
    CHECK(s.n == 1 && s.e[0].type == EV_MDL_LOCKED && s.e[0].mdl == h && s.e[0].pages == 2 && s.e[0].conn == 42);
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_KERNEL, 16, NULL, &m), 0);
    struct map_info mi = MI(m);
    CHECK(last(&s, 0) == EV_MAPPING_CREATED && s.e[1].map == mi.handle && s.e[1].mdl == h &&
          s.e[1].addr == mi.guest_address && s.e[1].pages == 2);
    CHECK_EQ(map_engine_unmap(e, &o, mi.handle, mi.guest_address, h, detail, DL), 0);
    CHECK(last(&s, 0) == EV_MAPPING_REMOVED && !strcmp(s.e[2].detail, "unmapped") && s.e[2].map == mi.handle);
    /* unlock removes a mapping still there first */
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_KERNEL, 16, NULL, &m), 0);
    unsigned rel;
    CHECK_EQ(map_engine_unlock(e, &o, h, &rel, detail, DL), 0);
    CHECK(last(&s, 1) == EV_MAPPING_REMOVED && !strcmp(s.e[s.n - 2].detail, "unlocked"));
    CHECK(last(&s, 0) == EV_MDL_UNLOCKED && s.e[s.n - 1].mdl == h);
    unsigned before = s.n;
    /* failures that are not refusals publish nothing */
    CHECK_EQ(map_p(e, &o, 12345, MAP_MODE_KERNEL, 16, NULL, &m), -EBADF);
    CHECK_EQ(map_engine_lock(e, &o, 0, 0, pfns, 0, 1, &h2, detail, DL), -EINVAL);
    CHECK_EQ(s.n, before);

    /* quota refusal: 15 pages at Normal (90 % of 16 = 14) */
    uint64_t many[15];
    for (unsigned i = 0; i < 15; i++)
        many[i] = 300 + i;
    CHECK_EQ(map_engine_lock(e, &o, 0, 15 * PG, many, 15, 1, &h2, detail, DL), 0);
    CHECK_EQ(map_p(e, &o, h2, MAP_MODE_KERNEL, 16, NULL, &m), -ENOSPC);
    CHECK(last(&s, 0) == EV_QUOTA_REFUSED && s.e[s.n - 1].mdl == h2 && s.e[s.n - 1].pages == 15 &&
          strstr(s.e[s.n - 1].detail, "quota") != NULL);
    CHECK_EQ(map_engine_unlock(e, &o, h2, &rel, detail, DL), 0);

    /* UserMode: created when the consumer answers */
    struct fake_consumer fc = { 0 };
    uint64_t cid;
    CHECK_EQ(map_engine_consumer_add(e, "tool", &fc_ops, &fc, &cid), 0);
    CHECK_EQ(map_engine_lock(e, &o, 0, 2 * PG, pfns + 4, 2, 1, &h, detail, DL), 0);
    /* one that the consumer fails never existed */
    before = s.n;
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_USER, 16, "tool", &m), -EINPROGRESS);
    CHECK_EQ(map_engine_user_complete(e, cid, fc.handle, -EINVAL, 0, "no"), 0);
    CHECK_EQ(s.n, before);
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_USER, 16, "tool", &m), -EINPROGRESS);
    CHECK_EQ(s.n, before); /* pending: not a mapping yet */
    CHECK_EQ(map_engine_user_complete(e, cid, fc.handle, 0, 0x700000000000ull, NULL), 0);
    CHECK(last(&s, 0) == EV_MAPPING_CREATED && !strcmp(s.e[s.n - 1].consumer, "tool") && s.e[s.n - 1].map == fc.handle);
    uint64_t established = fc.handle;
    /* its queue is full: refused, and nothing to remove */
    fc.answer = -ENOSPC;
    before = s.n;
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_USER, 16, "tool", &m), -ENOSPC);
    CHECK(s.n == before + 1 && last(&s, 0) == EV_QUOTA_REFUSED && !strcmp(s.e[s.n - 1].consumer, "tool") &&
          strstr(s.e[s.n - 1].detail, "not reading") != NULL);
    fc.answer = 0;
    /* its VMA budget (4: the established map costs 2, a two-run one 3) */
    uint64_t split[2] = { 500, 502 }, h3;
    CHECK_EQ(map_engine_lock(e, &o, 0, 2 * PG, split, 2, 1, &h3, detail, DL), 0);
    CHECK_EQ(map_p(e, &o, h3, MAP_MODE_USER, 16, "tool", &m), -ENOSPC);
    CHECK(last(&s, 0) == EV_QUOTA_REFUSED && s.e[s.n - 1].mdl == h3 && strstr(s.e[s.n - 1].detail, "VMA budget") != NULL);
    CHECK_EQ(map_engine_unlock(e, &o, h3, &rel, detail, DL), 0);
    /* the consumer dies: its mapping is orphaned (a leak record), removed
     * only when the guest unmaps it */
    before = s.n;
    map_engine_consumer_remove(e, cid);
    CHECK(s.n == before + 1 && last(&s, 0) == EV_LEAK_RECORDED && s.e[s.n - 1].map == established &&
          !strcmp(s.e[s.n - 1].detail, "consumer gone: tool"));
    CHECK_EQ(map_engine_unmap(e, &o, established, 0x700000000000ull, h, detail, DL), 0);
    CHECK(last(&s, 0) == EV_MAPPING_REMOVED && s.e[s.n - 1].map == established);

    /* the connection ends holding a mapping: leak, removal, leak, unlock */
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_KERNEL, 16, NULL, &m), 0);
    uint64_t kmap = MI(m).handle;
    before = s.n;
    CHECK_EQ(map_engine_release(e, &o, false, "connection closed"), 2);
    CHECK_EQ(s.n, before + 4);
    CHECK(s.e[before].type == EV_LEAK_RECORDED && s.e[before].map == kmap);
    CHECK(s.e[before + 1].type == EV_MAPPING_REMOVED && !strcmp(s.e[before + 1].detail, "connection closed"));
    CHECK(s.e[before + 2].type == EV_LEAK_RECORDED && s.e[before + 2].map == 0 && s.e[before + 2].mdl == h);
    CHECK(s.e[before + 3].type == EV_MDL_UNLOCKED && !strcmp(s.e[before + 3].detail, "connection closed"));

    /* one MDL and mapping still there when the engine goes */
    CHECK_EQ(map_engine_lock(e, &o, 0, 2 * PG, pfns, 2, 1, &h, detail, DL), 0);
    CHECK_EQ(map_p(e, &o, h, MAP_MODE_KERNEL, 16, NULL, &m), 0);
    CHECK_EQ(s.count[EV_MAPPING_CREATED], s.count[EV_MAPPING_REMOVED] + 1);
    CHECK_EQ(s.count[EV_MDL_LOCKED], s.count[EV_MDL_UNLOCKED] + 1);
    /* freeing the engine (hostd stopping) is not an event */
    before = s.n;
    map_engine_free(e);
    CHECK_EQ(s.n, before);
    /* every MDL and mapping that ended in the test was announced once */
    CHECK_EQ(s.count[EV_MDL_LOCKED], 5);
    CHECK_EQ(s.count[EV_MAPPING_CREATED], 5);
    events_free(bus);
    fake_vm_fini(&f);
    return tap_done();
}
