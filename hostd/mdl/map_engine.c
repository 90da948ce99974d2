/* MDL mapping engine: object lifetime, accounting and the host mappings. */
#include "map_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "map_budget.h"
#include "map_handle.h"
#include "map_table.h"
#include "map_engine_int.h"

bool map_owner_eq(const struct map_owner *a, const struct map_owner *b)
{
    return a->vm == b->vm && a->conn_id == b->conn_id;
}

struct map_vm *map_engine_vm_add(struct map_engine *e, const struct map_vm_view *view)
{
    if (!view || !view->mem)
        return NULL;
    struct map_vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return NULL;
    snprintf(vm->name, sizeof(vm->name), "%s", view->name ? view->name : "?");
    vm->cid = view->cid;
    vm->mem = view->mem;
    if (view->alias_addresses) {
        /* a random page-aligned offset into [1 TiB, 64 TiB): the alias looks
         * like a user address, says nothing of hostd's layout, and differs
         * per VM */
        uint64_t span = (64ull << 40) - (1ull << 40);
        vm->alias = ((1ull << 40) + map_handle_next(&e->gen) % span) & ~(uint64_t)(MAP_PAGE_SIZE - 1);
    }
    vm->next = e->vms;
    if (e->vms)
        e->vms->prev = vm;
    e->vms = vm;
    e->nvms++;
    return vm;
}

void map_engine_vm_remove(struct map_engine *e, struct map_vm *vm, const char *why)
{
    if (!vm)
        return;
    struct map_owner o = { .vm = vm, .conn_id = 0 };
    map_engine_release(e, &o, true, why ? why : "VM removed");
    for (unsigned i = 0; i < map_leaks_count(&vm->leaks); i++)
        map_leaks_add(&e->removed_leaks, map_leaks_get(&vm->leaks, i));
    map_grant_vm_gone(e, vm);
    if (vm->prev)
        vm->prev->next = vm->next;
    else
        e->vms = vm->next;
    if (vm->next)
        vm->next->prev = vm->prev;
    e->nvms--;
    free(vm->tombs);
    free(vm);
}

const char *map_vm_name(const struct map_vm *vm)
{
    return vm ? vm->name : "?";
}

uint64_t map_vm_cid(const struct map_vm *vm)
{
    return vm ? vm->cid : 0;
}

struct map_engine *map_engine_new(const struct map_limits *lim)
{
    struct map_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    if (lim)
        e->lim = *lim;
    if (!e->lim.vm_page_quota)
        e->lim.vm_page_quota = MAP_DEFAULT_VM_PAGES;
    if (!e->lim.global_page_quota)
        e->lim.global_page_quota = MAP_DEFAULT_GLOBAL_PAGES;
    if (!e->lim.max_vmas)
        e->lim.max_vmas = map_budget_default_vmas();
    if (!e->lim.consumer_vmas)
        e->lim.consumer_vmas = MAP_DEFAULT_CONSUMER_VMAS;
    /* a bus always: the map path then tests one mask word, never a pointer */
    e->events = e->lim.events;
    if (!e->events && !(e->events = e->own_events = events_new())) {
        free(e);
        return NULL;
    }
    map_handle_gen_init(&e->gen);
    map_table_init(&e->mdls);
    map_table_init(&e->maps);
    map_table_init(&e->grants);
    return e;
}

enum map_prio map_prio_of(uint32_t priority)
{
    uint32_t v = priority & MAP_PRIO_VALUE_MASK;
    return v < 16 ? MAP_PRIO_LOW : v < 32 ? MAP_PRIO_NORMAL : MAP_PRIO_HIGH;
}

bool map_prio_allows(enum map_prio p, uint64_t used, uint64_t want, uint64_t limit)
{
    static const unsigned pct[] = { 75, 90, 100 };
    unsigned __int128 after = (unsigned __int128)used + want;
    return after * 100 <= (unsigned __int128)limit * pct[p];
}

const char *map_prio_name(enum map_prio p)
{
    return p == MAP_PRIO_LOW ? "Low" : p == MAP_PRIO_NORMAL ? "Normal" : "High";
}

/* ---- events ---- */

static void publish_mdl(struct map_engine *e, enum event_type t, const struct mdl_obj *m, const char *detail)
{
    struct event ev = { .type = t,
                        .vm_name = m->vm_name,
                        .cid = m->cid,
                        .conn_id = m->owner.conn_id,
                        .mdl_handle = m->handle,
                        .page_count = m->npages,
                        .detail = detail };
    events_publish(e->events, &ev);
}

static inline void mdl_event(struct map_engine *e, enum event_type t, const struct mdl_obj *m, const char *detail)
{
    if (events_wanted(e->events, t))
        publish_mdl(e, t, m, detail);
}

void map_publish_map(struct map_engine *e, enum event_type t, const struct map_obj *m, const char *detail)
{
    struct map_info mi;
    map_obj_info(m, &mi);
    struct event ev = { .type = t,
                        .vm_name = mi.vm_name,
                        .cid = mi.cid,
                        .conn_id = mi.conn_id,
                        .mdl_handle = mi.mdl_handle,
                        .map_handle = mi.handle,
                        .page_count = mi.page_count,
                        .guest_address = mi.guest_address,
                        .consumer = mi.consumer,
                        .detail = detail };
    events_publish(e->events, &ev);
}

/* A lock or map refused for a quota, share, budget or bound (-ENOSPC). */
static void refused(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle, uint32_t pages,
                    const char *consumer, const char *detail)
{
    if (!events_wanted(e->events, EV_QUOTA_REFUSED) || !o->vm)
        return;
    struct event ev = { .type = EV_QUOTA_REFUSED,
                        .vm_name = o->vm->name,
                        .cid = o->vm->cid,
                        .conn_id = o->conn_id,
                        .mdl_handle = mdl_handle,
                        .page_count = pages,
                        .consumer = consumer,
                        .detail = detail };
    events_publish(e->events, &ev);
}

/* ---- MDLs ---- */

/* why: the MDL_UNLOCKED detail and the reason its grants are revoked;
 * NULL: publish nothing (engine freed). */
static void mdl_destroy(struct map_engine *e, struct mdl_obj *m, const char *why)
{
    map_grant_mdl_gone(e, m, why);
    if (why)
        mdl_event(e, EV_MDL_UNLOCKED, m, why);
    map_table_del(&e->mdls, m->handle);
    if (m->prev)
        m->prev->next = m->next;
    else
        e->mdl_head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    struct vm_acct *a = map_acct_of(m->owner.vm);
    a->mdls--;
    a->locked_pages -= m->npages;
    e->nmdls--;
    free(m->frames);
    map_layout_cache_drop(&m->layout);
    free(m);
}

/* Validate the frames (geometry already checked) and store the MDL; fr is
 * the MDL's own copy, owned by the MDL on success and freed on failure. */
static int lock_store(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                      uint32_t byte_count, uint32_t npages, struct map_frames *fr, uint32_t nfr,
                      uint32_t operation, uint64_t *mdl_handle, char *detail, size_t dlen)
{
    struct map_layout_cache lc;
    int rc = map_layout_cache_fill(&lc, o->vm->mem, fr, nfr, npages, detail, dlen);
    if (rc < 0) {
        free(fr);
        return rc;
    }
    struct vm_acct *a = map_acct_of(o->vm);
    if (a->mdls >= MAP_MAX_MDLS_PER_VM || a->locked_pages + npages > MAP_MAX_LOCKED_PAGES_PER_VM) {
        snprintf(detail, dlen, "VM holds %llu locked MDLs / %llu pages (limits %u / %llu)",
                 (unsigned long long)a->mdls, (unsigned long long)a->locked_pages,
                 MAP_MAX_MDLS_PER_VM, (unsigned long long)MAP_MAX_LOCKED_PAGES_PER_VM);
        map_layout_cache_drop(&lc);
        free(fr);
        a->quota_refusals++;
        return -ENOSPC;
    }
    struct mdl_obj *m = calloc(1, sizeof(*m));
    if (!m) {
        map_layout_cache_drop(&lc);
        free(fr);
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    m->handle = map_handle_next(&e->gen);
    m->owner = *o;
    snprintf(m->vm_name, sizeof(m->vm_name), "%s", o->vm->name);
    m->cid = o->vm->cid;
    m->byte_offset = byte_offset;
    m->byte_count = byte_count;
    m->npages = npages;
    m->operation = operation;
    m->frames = fr;
    m->nframes = nfr;
    m->layout = lc;
    if (map_table_put(&e->mdls, m->handle, m) < 0) {
        map_layout_cache_drop(&m->layout);
        free(fr);
        free(m);
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    m->next = e->mdl_head;
    if (m->next)
        m->next->prev = m;
    e->mdl_head = m;
    a->mdls++;
    a->locked_pages += npages;
    e->nmdls++;
    *mdl_handle = m->handle;
    mdl_event(e, EV_MDL_LOCKED, m, NULL);
    log_debug("mdl: vm %s conn %llu locked mdl 0x%llx: %u pages in %u frame runs, offset %u, %u bytes",
              m->vm_name, (unsigned long long)o->conn_id, (unsigned long long)m->handle, m->npages, nfr,
              byte_offset, byte_count);
    return 0;
}

static int lock_args_ok(const struct map_owner *o, uint32_t operation, char *detail, size_t dlen)
{
    if (!o->vm) {
        snprintf(detail, dlen, "no VM");
        return -EINVAL;
    }
    if (operation > 2) {
        snprintf(detail, dlen, "unknown lock operation %u", operation);
        return -EINVAL;
    }
    return 0;
}

/* Pages an MDL of this geometry spans (for a refusal's event; bounded inputs). */
static uint32_t pages_spanned(uint32_t byte_offset, uint32_t byte_count)
{
    return (uint32_t)(((uint64_t)byte_offset + byte_count + MAP_PAGE_SIZE - 1) >> MAP_PAGE_SHIFT);
}

static int lock_pfns(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                     uint32_t byte_count, const uint64_t *pfns, size_t npfns, uint32_t operation,
                     uint64_t *mdl_handle, char *detail, size_t dlen)
{
    int rc = lock_args_ok(o, operation, detail, dlen);
    if (rc < 0)
        return rc;
    rc = map_layout_check_geometry(byte_offset, byte_count, npfns, MAP_MAX_MDL_PAGES, detail, dlen);
    if (rc < 0)
        return rc;
    /* kept as runs like any MDL: a contiguous one costs one entry, a
     * scattered one an entry per page */
    struct map_frames *fr;
    uint32_t nfr;
    rc = map_layout_frames_of_pfns(pfns, npfns, &fr, &nfr);
    if (rc < 0) {
        snprintf(detail, dlen, "out of memory");
        return rc;
    }
    return lock_store(e, o, byte_offset, byte_count, (uint32_t)npfns, fr, nfr, operation, mdl_handle, detail,
                      dlen);
}

int map_engine_lock(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                    uint32_t byte_count, const uint64_t *pfns, size_t npfns, uint32_t operation,
                    uint64_t *mdl_handle, char *detail, size_t dlen)
{
    int rc = lock_pfns(e, o, byte_offset, byte_count, pfns, npfns, operation, mdl_handle, detail, dlen);
    if (rc == -ENOSPC)
        refused(e, o, 0, pages_spanned(byte_offset, byte_count), NULL, detail);
    return rc;
}

static int lock_runs(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                     uint32_t byte_count, const struct map_frames *fr, size_t nfr, uint32_t operation,
                     uint64_t *mdl_handle, char *detail, size_t dlen)
{
    int rc = lock_args_ok(o, operation, detail, dlen);
    if (rc < 0)
        return rc;
    rc = map_layout_check_frame_runs(byte_offset, byte_count, fr, nfr, MAP_MAX_MDL_PAGES, detail, dlen);
    if (rc < 0)
        return rc;
    /* nfr <= pages spanned <= MAP_MAX_MDL_PAGES: the copy is bounded */
    struct map_frames *copy = malloc(nfr * sizeof(*copy));
    if (!copy) {
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(copy, fr, nfr * sizeof(*copy));
    return lock_store(e, o, byte_offset, byte_count, pages_spanned(byte_offset, byte_count), copy, (uint32_t)nfr,
                      operation, mdl_handle, detail, dlen);
}

int map_engine_lock_runs(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                         uint32_t byte_count, const struct map_frames *fr, size_t nfr, uint32_t operation,
                         uint64_t *mdl_handle, char *detail, size_t dlen)
{
    int rc = lock_runs(e, o, byte_offset, byte_count, fr, nfr, operation, mdl_handle, detail, dlen);
    if (rc == -ENOSPC)
        refused(e, o, 0, pages_spanned(byte_offset, byte_count), NULL, detail);
    return rc;
}

static struct mdl_obj *mdl_get(struct map_engine *e, const struct map_owner *o, uint64_t h)
{
    struct mdl_obj *m = map_table_get(&e->mdls, h);
    return m && map_owner_eq(&m->owner, o) ? m : NULL;
}

/* ---- mappings ---- */

static void map_list_del(struct map_engine *e, struct map_obj *m)
{
    struct map_obj **head = m->orphaned ? &e->orphan_head : &e->map_head;
    if (m->prev)
        m->prev->next = m->next;
    else
        *head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

/* Undo what map_link() counted (pages and VMAs against the quotas). */
static void map_unaccount(struct map_engine *e, struct map_obj *m)
{
    struct vm_acct *a = map_acct_of(m->owner.vm);
    a->pages -= m->page_count;
    a->maps--;
    a->vmas -= m->vmas_accounted;
    e->pages -= m->page_count;
    e->vmas -= m->vmas_accounted;
    e->nmaps--;
}

void map_destroy(struct map_engine *e, struct map_obj *m, const char *why)
{
    if (why && !m->pending) /* a pending UserMode map was never created */
        map_event_map(e, EV_MAPPING_REMOVED, m, why);
    if (m->mode == MAP_MODE_KERNEL && m->base && munmap(m->base, m->reserve_len) < 0)
        log_err("mdl: munmap map 0x%llx at %p len %zu: %m", (unsigned long long)m->handle,
                (void *)m->base, m->reserve_len);
    if (m->mode == MAP_MODE_USER && !m->pending && !m->orphaned && m->consumer_id)
        map_user_unmap_from(e, m);
    if (m->mode == MAP_MODE_USER && m->pending && m->consumer_id)
        map_user_withdraw(e, m);
    if (m->mode == MAP_MODE_USER && m->consumer_id)
        map_user_uncharge(e, m);
    map_table_del(&e->maps, m->handle);
    map_list_del(e, m);
    if (m->orphaned)
        e->norphans--; /* accounting went when it was orphaned */
    else
        map_unaccount(e, m);
    if (m->mdl) {
        m->mdl->nmaps--;
        if (m->mdl->system_map == m)
            m->mdl->system_map = NULL;
    }
    free(m);
}

void map_orphan(struct map_engine *e, struct map_obj *m)
{
    if (m->orphaned || m->mode != MAP_MODE_USER || m->pending)
        return;
    map_list_del(e, m);
    map_unaccount(e, m);
    m->orphaned = true;
    m->consumer_id = 0;
    m->next = e->orphan_head;
    if (m->next)
        m->next->prev = m;
    e->orphan_head = m;
    e->norphans++;
}

int map_check_params(const struct map_params *p, char *detail, size_t dlen)
{
    if (p->access_mode > MAP_MODE_USER) {
        snprintf(detail, dlen, "unknown access mode %u", p->access_mode);
        return -EINVAL;
    }
    if (p->cache_type > MAP_CACHE_MAX) {
        snprintf(detail, dlen, "unknown cache type %u", p->cache_type);
        return -EINVAL;
    }
    uint32_t known = MAP_PRIO_VALUE_MASK | MAP_FLAG_NOWRITE | MAP_FLAG_NOEXEC | MAP_FLAG_GUARDPTES;
    if (p->priority & ~known) {
        snprintf(detail, dlen, "unknown priority bits 0x%08x", p->priority & ~known);
        return -EINVAL;
    }
    return 0;
}

/* A VM's guaranteed share of a pool: an equal part for every VM. */
static uint64_t fair_share(const struct map_engine *e, uint64_t pool)
{
    return pool / (e->nvms ? e->nvms : 1);
}

/* What the other VMs are guaranteed and do not use yet. */
static uint64_t others_unused(const struct map_engine *e, const struct map_vm *self, bool vmas)
{
    uint64_t g = fair_share(e, vmas ? e->lim.max_vmas : e->lim.global_page_quota);
    if (!vmas && g > e->lim.vm_page_quota)
        g = e->lim.vm_page_quota; /* no VM can use more than its quota anyway */
    uint64_t sum = 0;
    for (const struct map_vm *v = e->vms; v; v = v->next) {
        uint64_t used = vmas ? v->acct.vmas : v->acct.pages;
        if (v != self && used < g)
            sum += g - used;
    }
    return sum;
}

/* Two rules per pool: the priority share of the whole pool (Windows: Low
 * fails first when the system runs short), and a hard one that leaves every
 * other VM its unused guarantee. */
static int pool_check(const char *pool, enum map_prio pr, uint64_t used, uint64_t held, uint64_t want,
                      uint64_t limit, char *detail, size_t dlen)
{
    if (!map_prio_allows(pr, used, want, limit)) {
        snprintf(detail, dlen, "%s: %llu used + %llu > %s share of %llu", pool, (unsigned long long)used,
                 (unsigned long long)want, map_prio_name(pr), (unsigned long long)limit);
        return -ENOSPC;
    }
    if (used + held + want > limit) {
        snprintf(detail, dlen, "%s: %llu used + %llu guaranteed to other VMs + %llu > %llu", pool,
                 (unsigned long long)used, (unsigned long long)held, (unsigned long long)want,
                 (unsigned long long)limit);
        return -ENOSPC;
    }
    return 0;
}

int map_check_budget(struct map_engine *e, const struct map_vm *vm, enum map_prio pr, uint64_t pages,
                     uint64_t vmas, char *detail, size_t dlen)
{
    const struct vm_acct *a = &vm->acct;
    if (!map_prio_allows(pr, a->pages, pages, e->lim.vm_page_quota)) {
        snprintf(detail, dlen, "VM page quota: %llu mapped + %llu > %s share of %llu",
                 (unsigned long long)a->pages, (unsigned long long)pages, map_prio_name(pr),
                 (unsigned long long)e->lim.vm_page_quota);
        return -ENOSPC;
    }
    int rc = pool_check("global page quota", pr, e->pages, others_unused(e, vm, false), pages,
                        e->lim.global_page_quota, detail, dlen);
    if (rc == 0)
        rc = pool_check("VMA budget", pr, e->vmas, others_unused(e, vm, true), vmas, e->lim.max_vmas, detail,
                        dlen);
    return rc;
}

/* Put m on the live list and count it against the quotas (map_unaccount undoes it). */
void map_link(struct map_engine *e, struct map_obj *m, struct vm_acct *a)
{
    m->next = e->map_head;
    if (m->next)
        m->next->prev = m;
    e->map_head = m;
    m->mdl->nmaps++;
    a->pages += m->page_count;
    a->maps++;
    a->vmas += m->vmas_accounted;
    e->pages += m->page_count;
    e->vmas += m->vmas_accounted;
    e->nmaps++;
}

/* Reserve [pages + guard] and map every run over it. dontdump: keep it out
 * of core dumps by hand (the process did not arrange it globally). */
static int map_runs(const struct map_run *runs, uint32_t nruns, uint32_t pages, bool ro, bool dontdump,
                    uint8_t **base_out, size_t *len_out, char *detail, size_t dlen)
{
    size_t len = ((size_t)pages + 1) * MAP_PAGE_SIZE;
    void *base = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        int err = errno;
        snprintf(detail, dlen, "reserving %zu bytes of address space: %s", len, strerror(err));
        return -ENOMEM;
    }
    int prot = ro ? PROT_READ : PROT_READ | PROT_WRITE;
    for (uint32_t i = 0; i < nruns; i++) {
        uint8_t *at = (uint8_t *)base + (size_t)runs[i].first * MAP_PAGE_SIZE;
        size_t rlen = (size_t)runs[i].npages * MAP_PAGE_SIZE;
        void *p = mmap(at, rlen, prot, MAP_SHARED | MAP_FIXED, runs[i].fd, (off_t)runs[i].fd_off);
        if (p == MAP_FAILED) {
            int err = errno;
            snprintf(detail, dlen, "mapping run %u (%u pages at fd offset 0x%llx): %s", i,
                     runs[i].npages, (unsigned long long)runs[i].fd_off, strerror(err));
            munmap(base, len);
            return -ENOMEM;
        }
    }
    if (dontdump)
        madvise(base, len, MADV_DONTDUMP);
    *base_out = base;
    *len_out = len;
    return 0;
}

/* The VM's account and the MDL's runs (cached at lock time while the memory
 * table is unchanged): what every map, KernelMode or UserMode, starts from. */
int map_prepare(struct map_engine *e, const struct map_owner *o, struct mdl_obj *mdl, struct vm_acct **acct,
                struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    *acct = map_acct_of(o->vm);
    return map_layout_runs_cached(&mdl->layout, o->vm->mem, mdl->frames, mdl->nframes, runs, nruns, detail, dlen);
}

static int map_do(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle,
                  const struct map_params *p, const struct map_obj **out, char *detail, size_t dlen)
{
    struct mdl_obj *mdl = mdl_get(e, o, mdl_handle);
    if (!mdl) {
        snprintf(detail, dlen, "unknown MDL handle 0x%llx", (unsigned long long)mdl_handle);
        return -EBADF;
    }
    int rc = map_check_params(p, detail, dlen);
    if (rc < 0)
        return rc;
    if (p->access_mode == MAP_MODE_USER)
        return map_user_start(e, o, mdl, p, out, detail, dlen);
    if (mdl->system_map) {
        snprintf(detail, dlen, "MDL 0x%llx is already mapped to system VA (map 0x%llx)",
                 (unsigned long long)mdl->handle, (unsigned long long)mdl->system_map->handle);
        return -EBUSY;
    }
    struct vm_acct *a;
    struct map_run *runs;
    uint32_t nruns;
    rc = map_prepare(e, o, mdl, &a, &runs, &nruns, detail, dlen);
    if (rc < 0)
        return rc;
    enum map_prio pr = map_prio_of(p->priority);
    rc = map_check_budget(e, o->vm, pr, mdl->npages, (uint64_t)nruns + 1, detail, dlen);
    struct map_obj *m = NULL;
    if (rc == 0) {
        m = calloc(1, sizeof(*m));
        if (!m) {
            snprintf(detail, dlen, "out of memory");
            rc = -ENOMEM;
        }
    }
    if (rc == 0) {
        m->read_only = (p->priority & MAP_FLAG_NOWRITE) != 0;
        rc = map_runs(runs, nruns, mdl->npages, m->read_only, !e->lim.dumps_exclude_shared, &m->base,
                      &m->reserve_len, detail, dlen);
    }
    free(runs);
    if (rc < 0) {
        free(m);
        map_vm_warn(o->vm, "mdl: vm %s conn %llu map mdl 0x%llx (%u pages, %s): %s", mdl->vm_name,
                 (unsigned long long)o->conn_id, (unsigned long long)mdl->handle, mdl->npages,
                 map_prio_name(pr), detail);
        return rc;
    }
    m->handle = map_handle_next(&e->gen);
    m->mdl = mdl;
    if (map_table_put(&e->maps, m->handle, m) < 0) {
        munmap(m->base, m->reserve_len);
        free(m);
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    m->owner = *o;
    m->address = (uint64_t)(uintptr_t)m->base + mdl->byte_offset;
    m->page_count = mdl->npages;
    m->runs = nruns;
    m->vmas_accounted = nruns + 1;
    m->mode = MAP_MODE_KERNEL;
    m->cache_type = p->cache_type;
    m->priority = p->priority;
    map_link(e, m, a);
    mdl->system_map = m;
    /* guest RAM mapped by a host process is always cache-coherent with the
     * guest; the requested type is recorded and reported, not applied */
    log_debug("mdl: vm %s conn %llu mapped mdl 0x%llx -> map 0x%llx at %p: %u pages, %u runs, %s%s, "
             "cache type %u recorded%s",
             mdl->vm_name, (unsigned long long)o->conn_id, (unsigned long long)mdl->handle,
             (unsigned long long)m->handle, (void *)(uintptr_t)m->address, m->page_count, nruns,
             map_prio_name(pr), m->read_only ? ", read-only" : "", m->cache_type,
             m->cache_type == 1 ? "" : " (host mapping stays cache-coherent)");
    map_event_map(e, EV_MAPPING_CREATED, m, NULL);
    *out = m;
    return 0;
}

int map_engine_map(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle,
                   const struct map_params *p, const struct map_obj **out, char *detail, size_t dlen)
{
    *out = NULL;
    int rc = map_do(e, o, mdl_handle, p, out, detail, dlen);
    if (rc == -ENOSPC) {   /* only quotas and budgets answer ENOSPC on this path */
        const struct mdl_obj *mdl = mdl_get(e, o, mdl_handle);
        map_acct_of(o->vm)->quota_refusals++;
        refused(e, o, mdl_handle, mdl ? mdl->npages : 0,
                p->access_mode == MAP_MODE_USER && p->consumer ? p->consumer : NULL, detail);
    }
    return rc;
}

void map_engine_vm_stats(const struct map_vm *vm, struct map_vm_stats *s)
{
    s->mappings = vm->acct.maps;
    s->mapped_pages = vm->acct.pages;
    s->vmas = vm->acct.vmas;
    s->locked_mdls = vm->acct.mdls;
    s->locked_pages = vm->acct.locked_pages;
    s->quota_refusals = vm->acct.quota_refusals;
    s->leaks = vm->leaks.total;
}

int map_engine_unmap(struct map_engine *e, const struct map_owner *o, uint64_t map_handle,
                     uint64_t address, uint64_t mdl_handle, char *detail, size_t dlen)
{
    struct map_obj *m = NULL;
    if (map_handle) {
        m = map_table_get(&e->maps, map_handle);
        if (!m || !map_owner_eq(&m->owner, o)) {
            snprintf(detail, dlen, "unknown map handle 0x%llx", (unsigned long long)map_handle);
            return -EBADF;
        }
        if (m->address + m->owner.vm->alias != address) {
            snprintf(detail, dlen, "address 0x%llx is not the address of map 0x%llx",
                     (unsigned long long)address, (unsigned long long)map_handle);
            return -ENXIO;
        }
    } else {
        for (struct map_obj *it = e->map_head; it && !m; it = it->next)
            if (map_owner_eq(&it->owner, o) && it->address + o->vm->alias == address)
                m = it;
        for (struct map_obj *it = e->orphan_head; it && !m; it = it->next)
            if (map_owner_eq(&it->owner, o) && it->address + o->vm->alias == address)
                m = it;
        if (!m) {
            snprintf(detail, dlen, "no mapping at address 0x%llx", (unsigned long long)address);
            return -ENXIO;
        }
    }
    if (!m->mdl || m->mdl->handle != mdl_handle) {
        snprintf(detail, dlen, "map 0x%llx was not made from MDL 0x%llx", (unsigned long long)m->handle,
                 (unsigned long long)mdl_handle);
        return -EINVAL;
    }
    if (m->orphaned)
        log_debug("mdl: vm %s conn %llu unmapped orphaned map 0x%llx (consumer '%s' is gone: nothing to undo)",
                 m->mdl->vm_name, (unsigned long long)o->conn_id, (unsigned long long)m->handle, m->consumer);
    else
        log_debug("mdl: vm %s conn %llu unmapped map 0x%llx (%u pages)", m->mdl->vm_name,
                 (unsigned long long)o->conn_id, (unsigned long long)m->handle, m->page_count);
    map_destroy(e, m, "unmapped");
    return 0;
}

static unsigned release_list(struct map_engine *e, struct mdl_obj *mdl, bool orphans)
{
    unsigned n = 0;
    struct map_obj *it = orphans ? e->orphan_head : e->map_head;
    while (it && mdl->nmaps) {
        struct map_obj *next = it->next;
        if (it->mdl == mdl) {
            map_destroy(e, it, "unlocked");
            n++;
        }
        it = next;
    }
    return n;
}

/* All of mdl's mappings, orphans included (they count in mdl->nmaps). */
static unsigned release_maps_of(struct map_engine *e, struct mdl_obj *mdl)
{
    unsigned n = release_list(e, mdl, false);
    return n + release_list(e, mdl, true);
}

int map_engine_unlock(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle,
                      unsigned *released, char *detail, size_t dlen)
{
    *released = 0;
    /* another VM's or connection's MDL is "not locked" from the caller's point
     * of view (like an unknown handle: its existence is not revealed) */
    struct mdl_obj *mdl = mdl_get(e, o, mdl_handle);
    if (!mdl) {
        snprintf(detail, dlen, "MDL 0x%llx is not locked", (unsigned long long)mdl_handle);
        return -ENOLCK;
    }
    *released = release_maps_of(e, mdl);
    log_debug("mdl: vm %s conn %llu unlocked mdl 0x%llx (%u mappings released)", mdl->vm_name,
              (unsigned long long)o->conn_id, (unsigned long long)mdl_handle, *released);
    map_grant_mdl_gone(e, mdl, "MDL unlocked"); /* the notice's reason; the event says "unlocked" */
    mdl_destroy(e, mdl, "unlocked");
    return 0;
}

static bool owned(const struct map_owner *mine, const struct map_owner *o, bool vm_only)
{
    return vm_only ? mine->vm == o->vm : map_owner_eq(mine, o);
}

static void leak_add(struct map_engine *e, struct map_vm *vm, struct map_leak *rec)
{
    rec->seq = ++e->leak_seq;
    map_leaks_add(&vm->leaks, rec);
    if (!events_wanted(e->events, EV_LEAK_RECORDED))
        return;
    struct event ev = { .type = EV_LEAK_RECORDED,
                        .vm_name = rec->vm_name,
                        .cid = vm->cid,
                        .conn_id = rec->conn_id,
                        .mdl_handle = rec->mdl_handle,
                        .map_handle = rec->map_handle,
                        .page_count = rec->page_count,
                        .detail = rec->reason };
    events_publish(e->events, &ev);
}

void map_leak_record(struct map_engine *e, const struct map_obj *m, const char *reason)
{
    struct map_leak rec = { .conn_id = m->owner.conn_id,
                            .mdl_handle = m->mdl ? m->mdl->handle : 0,
                            .map_handle = m->handle,
                            .page_count = m->page_count,
                            .was_mapped = true };
    snprintf(rec.vm_name, sizeof(rec.vm_name), "%s", m->mdl ? m->mdl->vm_name : "?");
    snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
    leak_add(e, m->owner.vm, &rec);
}

unsigned map_engine_release(struct map_engine *e, const struct map_owner *o, bool vm_only,
                            const char *reason)
{
    unsigned nmaps = 0, nmdls = 0;
    uint64_t pages = 0;
    for (unsigned pass = 0; pass < 2; pass++) {
        /* pass 1: orphans (their consumer died first; the guest still never unmapped) */
        struct map_obj *it = pass ? e->orphan_head : e->map_head, *next;
        for (; it; it = next) {
            next = it->next;
            if (!owned(&it->owner, o, vm_only))
                continue;
            map_leak_record(e, it, reason);
            map_vm_warn(o->vm, "mdl: leak (0xCB-style, mapped%s): vm %s conn %llu mdl 0x%llx map 0x%llx, %u pages: %s",
                     it->orphaned ? ", orphaned" : "", it->mdl ? it->mdl->vm_name : "?",
                     (unsigned long long)it->owner.conn_id, (unsigned long long)(it->mdl ? it->mdl->handle : 0),
                     (unsigned long long)it->handle, it->page_count, reason);
            if (!it->orphaned)
                pages += it->page_count;
            nmaps++;
            map_destroy(e, it, reason);
        }
    }
    for (struct mdl_obj *it = e->mdl_head, *next; it; it = next) {
        next = it->next;
        if (!owned(&it->owner, o, vm_only))
            continue;
        struct map_leak rec = { .conn_id = it->owner.conn_id,
                                .mdl_handle = it->handle,
                                .page_count = it->npages,
                                .was_mapped = false };
        snprintf(rec.vm_name, sizeof(rec.vm_name), "%s", it->vm_name);
        snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
        leak_add(e, it->owner.vm, &rec);
        map_vm_warn(o->vm, "mdl: leak (0x76-style, locked): vm %s conn %llu mdl 0x%llx, %u pages%s: %s", rec.vm_name,
                 (unsigned long long)rec.conn_id, (unsigned long long)rec.mdl_handle, rec.page_count,
                 it->grants ? ", its grants to other VMs revoked" : "", reason);
        nmdls++;
        mdl_destroy(e, it, reason);
    }
    map_grant_owner_gone(e, o, vm_only);
    if (nmaps || nmdls)
        map_vm_warn(o->vm, "mdl: %s conn %llu went away (%s): released %u mappings (%llu pages) and %u MDLs",
                 vm_only ? "VM" : "connection", (unsigned long long)o->conn_id, reason, nmaps,
                 (unsigned long long)pages, nmdls);
    return nmaps + nmdls;
}

void map_engine_free(struct map_engine *e)
{
    if (!e)
        return;
    e->nconsumers = 0; /* hostd is stopping: nobody to tell */
    memset(&e->gh, 0, sizeof(e->gh));
    while (e->map_head)
        map_destroy(e, e->map_head, NULL);
    while (e->orphan_head)
        map_destroy(e, e->orphan_head, NULL);
    while (e->mdl_head)
        mdl_destroy(e, e->mdl_head, NULL);
    map_grant_fini(e);
    map_table_free(&e->mdls);
    map_table_free(&e->maps);
    while (e->vms) {
        struct map_vm *vm = e->vms;
        e->vms = vm->next;
        free(vm->tombs);
        free(vm);
    }
    free(e->consumers);
    events_free(e->own_events);
    free(e);
}

const struct map_obj *map_engine_find_map(const struct map_engine *e, uint64_t map_handle)
{
    const struct map_obj *m = map_table_get(&e->maps, map_handle);
    return m && !m->orphaned ? m : NULL;
}

const struct map_obj *map_engine_next_map(const struct map_engine *e, const struct map_obj *prev)
{
    return prev ? prev->next : e->map_head;
}

void map_obj_info(const struct map_obj *m, struct map_info *out)
{
    *out = (struct map_info){
        .handle = m->handle,
        .mdl_handle = m->mdl ? m->mdl->handle : 0,
        .vm_name = m->mdl ? m->mdl->vm_name : "",
        .cid = m->mdl ? m->mdl->cid : 0,
        .conn_id = m->owner.conn_id,
        .base = m->base,
        .reserve_len = m->reserve_len,
        .address = m->address,
        .guest_address = m->address + m->owner.vm->alias,
        .byte_offset = m->mdl ? m->mdl->byte_offset : 0,
        .byte_count = m->mdl ? m->mdl->byte_count : 0,
        .page_count = m->page_count,
        .runs = m->runs,
        .mode = m->mode,
        .cache_type = m->cache_type,
        .priority = m->priority,
        .read_only = m->read_only,
        .pending = m->pending,
        .consumer = m->consumer,
    };
}

void map_engine_stats(const struct map_engine *e, struct map_stats *s)
{
    memset(s, 0, sizeof(*s));
    s->mappings = e->nmaps;
    s->mapped_pages = e->pages;
    s->vmas = e->vmas;
    s->locked_mdls = e->nmdls;
    s->leaks_reported = e->leak_seq;
    s->orphaned = e->norphans;
    s->vma_budget = e->lim.max_vmas;
    s->global_page_quota = e->lim.global_page_quota;
    s->vm_page_quota = e->lim.vm_page_quota;
}

const struct map_leaks *map_engine_vm_leaks(const struct map_vm *vm)
{
    return &vm->leaks;
}

const struct map_vm *map_engine_vm_by_name(const struct map_engine *e, const char *name)
{
    for (const struct map_vm *vm = e->vms; vm; vm = vm->next)
        if (name && !strcmp(vm->name, name))
            return vm;
    return NULL;
}

unsigned map_engine_recent_leaks(const struct map_engine *e, const struct map_leak **out, unsigned max)
{
    /* Merge the VMs' rings by sequence number, newest first, then reverse:
     * at most max passes over a few records per VM. */
    unsigned n = 0;
    uint64_t below = UINT64_MAX;
    while (n < max) {
        const struct map_leak *best = NULL;
        for (const struct map_vm *vm = e->vms; vm; vm = vm->next)
            for (unsigned i = map_leaks_count(&vm->leaks); i-- > 0;) {
                const struct map_leak *l = map_leaks_get(&vm->leaks, i);
                if (l->seq < below) {
                    if (!best || l->seq > best->seq)
                        best = l;
                    break; /* older ones in this ring are older still */
                }
            }
        for (unsigned i = 0; i < map_leaks_count(&e->removed_leaks); i++) {
            const struct map_leak *l = map_leaks_get(&e->removed_leaks, i);
            if (l->seq < below && (!best || l->seq > best->seq))
                best = l;
        }
        if (!best)
            break;
        out[n++] = best;
        below = best->seq;
    }
    for (unsigned i = 0; i < n / 2; i++) {
        const struct map_leak *t = out[i];
        out[i] = out[n - 1 - i];
        out[n - 1 - i] = t;
    }
    return n;
}

void map_engine_vm_usage(const struct map_engine *e, const struct map_vm *vm, uint64_t *pages, uint64_t *maps)
{
    *pages = vm ? vm->acct.pages : 0;
    *maps = vm ? vm->acct.maps : 0;
}

uint64_t map_engine_vm_mdls(const struct map_vm *vm)
{
    return vm ? vm->acct.mdls : 0;
}
