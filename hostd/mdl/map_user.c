/* UserMode mappings (R2): the pages go into a registered host consumer
 * process. hostd hands the consumer the region fds and the runs; the consumer
 * maps them and answers with its address, which completes the guest's Map. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "map_engine_int.h"

static struct map_consumer *consumer_by_name(struct map_engine *e, const char *name)
{
    for (unsigned i = 0; i < e->nconsumers; i++)
        if (strcmp(e->consumers[i].name, name) == 0)
            return &e->consumers[i];
    return NULL;
}

static struct map_consumer *consumer_by_id(struct map_engine *e, uint64_t id)
{
    for (unsigned i = 0; id && i < e->nconsumers; i++)
        if (e->consumers[i].id == id)
            return &e->consumers[i];
    return NULL;
}

static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
            return false;
    return true;
}

int map_engine_consumer_add(struct map_engine *e, const char *name, const struct map_consumer_ops *ops,
                            void *ctx, uint64_t *id)
{
    if (!valid_name(name))
        return -EINVAL;
    if (consumer_by_name(e, name))
        return -EBUSY;
    if (e->nconsumers >= MAP_MAX_CONSUMERS)
        return -ENOSPC;
    if (!e->consumers) {
        e->consumers = calloc(MAP_MAX_CONSUMERS, sizeof(*e->consumers));
        if (!e->consumers)
            return -ENOMEM;
    }
    struct map_consumer *c = &e->consumers[e->nconsumers++];
    c->id = ++e->next_consumer_id;
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->ops = ops;
    c->ctx = ctx;
    *id = c->id;
    log_info("mdl: consumer '%s' registered (id %llu)", name, (unsigned long long)c->id);
    return 0;
}

void map_engine_consumer_remove(struct map_engine *e, uint64_t id)
{
    struct map_consumer *c = consumer_by_id(e, id);
    if (!c)
        return;
    char name[64], reason[64];
    snprintf(name, sizeof(name), "%s", c->name);
    snprintf(reason, sizeof(reason), MAP_ORPHAN_REASON "%.48s", name); /* fits the record */
    *c = e->consumers[--e->nconsumers]; /* nothing can reach it from here on */
    /* established mappings: their address space is gone. Release their
     * accounting, record the event, keep a stub for the guest's unmap. No
     * callbacks run here, so a plain walk is safe. */
    unsigned norphaned = 0;
    uint64_t pages = 0;
    for (struct map_obj *m = e->map_head, *next; m; m = next) {
        next = m->next;
        if (m->mode != MAP_MODE_USER || m->consumer_id != id || m->pending)
            continue;
        map_leak_record(e, m, reason);
        map_vm_warn(m->owner.vm, "mdl: map 0x%llx (vm %s conn %llu mdl 0x%llx, %u pages): consumer '%s' died with it mapped; "
                 "orphaned: quota released, the guest's unmap will succeed",
                 (unsigned long long)m->handle, m->mdl ? m->mdl->vm_name : "?",
                 (unsigned long long)m->owner.conn_id, (unsigned long long)(m->mdl ? m->mdl->handle : 0),
                 m->page_count, name);
        pages += m->page_count;
        norphaned++;
        map_orphan(e, m);
    }
    /* pending maps fail now (STATUS_DEVICE_NOT_READY to the guest). done()
     * may run connection teardown that frees other mappings: rescan. */
    unsigned nfailed = 0;
    bool again = true;
    while (again) {
        again = false;
        for (struct map_obj *m = e->map_head; m; m = m->next) {
            if (m->mode != MAP_MODE_USER || m->consumer_id != id || !m->pending)
                continue;
            map_done_fn done = m->done;
            void *ctx = m->done_ctx;
            m->pending = false;
            m->consumer_id = 0; /* nothing was mapped there */
            map_destroy(e, m, reason);
            nfailed++;
            if (done)
                done(ctx, -ENOTCONN, NULL, "the consumer went away before mapping");
            again = true;
            break;
        }
    }
    log_info("mdl: consumer '%s' (id %llu) went away: %u mappings orphaned (%llu pages released), "
             "%u pending maps failed",
             name, (unsigned long long)id, norphaned, (unsigned long long)pages, nfailed);
}

int map_user_start(struct map_engine *e, const struct map_owner *o, struct mdl_obj *mdl,
                   const struct map_params *p, const struct map_obj **out, char *detail, size_t dlen)
{
    const char *name = p->consumer ? p->consumer : "";
    struct map_consumer *c = consumer_by_name(e, name);
    if (!c) {
        snprintf(detail, dlen, "no host consumer named '%.64s'", name);
        return -ENOENT;
    }
    if (p->requested_address & (MAP_PAGE_SIZE - 1)) {
        snprintf(detail, dlen, "RequestedAddress 0x%llx is not page aligned",
                 (unsigned long long)p->requested_address);
        return -EINVAL;
    }
    struct vm_acct *a;
    struct map_run *runs;
    uint32_t nruns;
    int rc = map_prepare(e, o, mdl, &a, &runs, &nruns, detail, dlen);
    if (rc < 0)
        return rc;
    enum map_prio pr = map_prio_of(p->priority);
    /* the VMAs live in the consumer: only pages count against hostd's quotas;
     * the VMAs count against the consumer's own budget (a frame-repeating MDL
     * would otherwise make it create one VMA per page) */
    rc = map_check_budget(e, o->vm, pr, mdl->npages, 0, detail, dlen);
    uint64_t cost = (uint64_t)nruns + 1;
    if (rc == 0 && c->vmas + cost > e->lim.consumer_vmas) {
        snprintf(detail, dlen, "consumer '%s' VMA budget: %llu used + %llu > %llu", c->name,
                 (unsigned long long)c->vmas, (unsigned long long)cost,
                 (unsigned long long)e->lim.consumer_vmas);
        rc = -ENOSPC;
    }
    struct map_obj *m = rc == 0 ? calloc(1, sizeof(*m)) : NULL;
    if (rc == 0 && !m) {
        snprintf(detail, dlen, "out of memory");
        rc = -ENOMEM;
    }
    if (rc == 0) {
        m->handle = map_handle_next(&e->gen);
        m->mdl = mdl;
        m->owner = *o;
        m->page_count = mdl->npages;
        m->runs = nruns;
        m->mode = MAP_MODE_USER;
        m->cache_type = p->cache_type;
        m->priority = p->priority;
        m->read_only = (p->priority & MAP_FLAG_NOWRITE) != 0;
        m->reserve_len = (size_t)mdl->npages * MAP_PAGE_SIZE;
        m->base = (uint8_t *)(uintptr_t)p->requested_address; /* requested; replaced by the answer */
        snprintf(m->consumer, sizeof(m->consumer), "%s", c->name);
        m->consumer_id = c->id;
        m->pending = true;
        m->pending_since_ms = map_now_ms();
        m->done = p->done;
        m->done_ctx = p->done_ctx;
        if (map_table_put(&e->maps, m->handle, m) < 0) {
            free(m);
            snprintf(detail, dlen, "out of memory");
            rc = -ENOMEM;
        }
    }
    if (rc == 0) {
        map_link(e, m, a);
        m->consumer_vmas = (uint32_t)cost;
        c->vmas += cost;
        rc = c->ops->map_into(c->ctx, m, runs, nruns);
        if (rc < 0) {
            if (rc == -ENOSPC)
                snprintf(detail, dlen, "consumer '%s' is not reading: its queue is full", c->name);
            else
                snprintf(detail, dlen, "cannot reach consumer '%s': %s", c->name, strerror(-rc));
            m->pending = false;
            c->vmas -= m->consumer_vmas;
            m->consumer_id = 0;
            map_destroy(e, m, NULL); /* never created: no MAPPING_REMOVED */
        }
    }
    free(runs);
    if (rc < 0) {
        map_vm_warn(o->vm, "mdl: vm %s conn %llu UserMode map of mdl 0x%llx into '%s': %s", mdl->vm_name,
                 (unsigned long long)o->conn_id, (unsigned long long)mdl->handle, name, detail);
        return rc;
    }
    log_debug("mdl: vm %s conn %llu map 0x%llx: asked consumer '%s' to map %u pages (%u runs)", mdl->vm_name,
             (unsigned long long)o->conn_id, (unsigned long long)m->handle, c->name, m->page_count, nruns);
    *out = m;
    return -EINPROGRESS;
}

int map_engine_user_complete(struct map_engine *e, uint64_t consumer_id, uint64_t map_handle, int err,
                             uint64_t base, const char *detail)
{
    struct map_obj *m = map_table_get(&e->maps, map_handle);
    if (!m || m->mode != MAP_MODE_USER || !m->pending || m->consumer_id != consumer_id)
        return -ENOENT;
    if (err == 0 && (base == 0 || (base & (MAP_PAGE_SIZE - 1)))) {
        err = -EINVAL;
        detail = "consumer answered with an unaligned address";
    }
    map_done_fn done = m->done;
    void *ctx = m->done_ctx;
    if (err < 0) {
        log_warn("mdl: map 0x%llx: consumer '%s' could not map: %s", (unsigned long long)map_handle,
                 m->consumer, detail ? detail : strerror(-err));
        /* still pending: nothing mapped there (no UnmapFrom), and the
         * consumer gets its VMA charge back */
        map_destroy(e, m, "consumer could not map");
        if (done)
            done(ctx, err, NULL, detail ? detail : "consumer could not map");
        return 0;
    }
    m->pending = false;
    m->base = (uint8_t *)(uintptr_t)base;
    m->address = base + m->mdl->byte_offset;
    map_event_map(e, EV_MAPPING_CREATED, m, NULL);
    log_debug("mdl: map 0x%llx: consumer '%s' mapped %u pages at 0x%llx", (unsigned long long)map_handle,
             m->consumer, m->page_count, (unsigned long long)base);
    if (done)
        done(ctx, 0, m, NULL);
    return 0;
}

void map_user_uncharge(struct map_engine *e, const struct map_obj *m)
{
    struct map_consumer *c = consumer_by_id(e, m->consumer_id);
    if (c)
        c->vmas -= m->consumer_vmas;
}

void map_user_unmap_from(struct map_engine *e, const struct map_obj *m)
{
    struct map_consumer *c = consumer_by_id(e, m->consumer_id);
    if (c)
        c->ops->unmap_from(c->ctx, m->handle, (uint64_t)(uintptr_t)m->base, m->reserve_len);
}

void map_user_withdraw(struct map_engine *e, const struct map_obj *m)
{
    struct map_consumer *c = consumer_by_id(e, m->consumer_id);
    if (c && c->ops->withdraw)
        c->ops->withdraw(c->ctx, m->handle);
}

uint64_t map_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

unsigned map_engine_user_expire(struct map_engine *e, uint64_t now_ms, uint64_t max_age_ms)
{
    unsigned left = 0;
    bool again = true;
    while (again) { /* done() may free other mappings: rescan after each */
        again = false;
        left = 0;
        for (struct map_obj *m = e->map_head; m; m = m->next) {
            if (m->mode != MAP_MODE_USER || !m->pending)
                continue;
            if (now_ms - m->pending_since_ms < max_age_ms) {
                left++;
                continue;
            }
            log_warn("mdl: map 0x%llx: consumer '%s' did not answer within %llu ms", (unsigned long long)m->handle,
                     m->consumer, (unsigned long long)max_age_ms);
            map_done_fn done = m->done;
            void *ctx = m->done_ctx;
            /* destroyed while pending: its MapInto is withdrawn if still
             * queued, the consumer's VMA charge returned; a late answer finds
             * no map and is undone */
            map_destroy(e, m, "consumer did not answer");
            if (done)
                done(ctx, -ETIMEDOUT, NULL, "the consumer did not answer in time");
            again = true;
            break;
        }
    }
    return left;
}
