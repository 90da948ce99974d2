/* Request envelopes for hostd, built on caller-provided storage (a Lock's
 * frame runs excepted: their count is known only from the frames). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "frame.h"
#include "mdl_internal.h"

void mdl_env_init(Mdlmap__V1__Envelope *e)
{
    mdlmap__v1__envelope__init(e);
    e->version = MDLMAP_PROTO_VERSION;
}

void mdl_env_hello(Mdlmap__V1__Envelope *e, Mdlmap__V1__HelloRequest *b, const char *client)
{
    mdl_env_init(e);
    mdlmap__v1__hello_request__init(b);
    b->min_version = MDLMAP_PROTO_VERSION;
    b->max_version = MDLMAP_PROTO_VERSION;
    b->client = (char *)client;
    e->body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    e->hello = b;
}

/* pfns[i] continues the run of pfns[i - 1] without wrapping past UINT64_MAX */
static bool follows(const uint64_t *pfns, size_t i)
{
    return pfns[i - 1] != UINT64_MAX && pfns[i] == pfns[i - 1] + 1;
}

int mdl_env_runs_build(const uint64_t *pfns, size_t n, struct mdl_env_runs *rs)
{
    *rs = (struct mdl_env_runs){ 0 };
    if (n == 0)
        return 0;
    /* Count first so that both arrays are exact: a contiguous MDL is one
     * run, whatever its size (1 GiB would be 2 MiB of pfns, over the frame
     * limit). A run ends where the next frame does not follow, or where its
     * count would pass the 32-bit field (never, for an MDL below 4 GiB), or
     * after frame UINT64_MAX: frame 0 "follows" it only by wrapping, and
     * mdl_env_runs_expand refuses a wrapping run. */
    size_t nr = 1;
    for (size_t i = 1, len = 1; i < n; i++, len++)
        if (!follows(pfns, i) || len == UINT32_MAX) {
            nr++;
            len = 0;
        }
    rs->runs = calloc(nr, sizeof(*rs->runs));
    rs->ptrs = calloc(nr, sizeof(*rs->ptrs));
    if (!rs->runs || !rs->ptrs) {
        mdl_env_runs_free(rs);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        Mdlmap__V1__FrameRun *r = k ? &rs->runs[k - 1] : NULL;
        if (r && follows(pfns, i) && r->count < UINT32_MAX) {
            r->count++;
            continue;
        }
        r = &rs->runs[k];
        mdlmap__v1__frame_run__init(r);
        r->first_pfn = pfns[i];
        r->count = 1;
        rs->ptrs[k++] = r;
    }
    rs->n = k;
    return 0;
}

int mdl_env_set_runs(Mdlmap__V1__LockRequest *b, const uint64_t *pfns, size_t n, struct mdl_env_runs *rs)
{
    b->n_pfns = 0;
    b->pfns = NULL;
    int rc = mdl_env_runs_build(pfns, n, rs);
    b->runs = rs->ptrs;
    b->n_runs = rs->n;
    return rc;
}

int mdl_env_runs_expand(Mdlmap__V1__FrameRun *const *runs, size_t nruns, uint64_t *pfns, size_t npages)
{
    /* Check every run before writing: a peer's reply that does not cover
     * the buffer exactly leaves pfns untouched. */
    size_t total = 0;
    for (size_t i = 0; i < nruns; i++) {
        const Mdlmap__V1__FrameRun *r = runs[i];
        if (!r || r->count == 0 || r->count > npages - total || r->first_pfn > UINT64_MAX - (r->count - 1))
            return -EPROTO;
        total += r->count;
    }
    if (total != npages)
        return -EPROTO;
    for (size_t i = 0; i < nruns; i++)
        for (uint32_t j = 0; j < runs[i]->count; j++)
            *pfns++ = runs[i]->first_pfn + j;
    return 0;
}

void mdl_env_runs_free(struct mdl_env_runs *rs)
{
    free(rs->runs);
    free(rs->ptrs);
    *rs = (struct mdl_env_runs){ 0 };
}

int mdl_env_lock(Mdlmap__V1__Envelope *e, Mdlmap__V1__LockRequest *b, const struct mdl *m, enum mdl_lock_op op,
                 const uint64_t *pfns, size_t npages, struct mdl_env_runs *rs)
{
    mdl_env_init(e);
    mdlmap__v1__lock_request__init(b);
    b->start_va = (uint64_t)(uintptr_t)m->start_va;
    b->byte_offset = m->byte_offset;
    b->byte_count = m->byte_count;
    b->operation = (Mdlmap__V1__LockOperation)op;
    e->body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    e->lock = b;
    return mdl_env_set_runs(b, pfns, npages, rs);
}

int mdl_env_map(Mdlmap__V1__Envelope *e, Mdlmap__V1__MapRequest *b, uint64_t lock_handle,
                const struct mdl_map_params *p, const char *consumer)
{
    if (p->cache < 0 || p->cache >= MDL_CACHE_MAX)
        return -EINVAL;
    if (p->mode != MDL_KERNEL_MODE && p->mode != MDL_USER_MODE)
        return -EINVAL;
    mdl_env_init(e);
    mdlmap__v1__map_request__init(b);
    b->mdl_handle = lock_handle;
    b->access_mode = p->mode == MDL_USER_MODE ? MDLMAP__V1__ACCESS_MODE__USER_MODE
                                              : MDLMAP__V1__ACCESS_MODE__KERNEL_MODE;
    b->cache_type = (Mdlmap__V1__CacheType)p->cache;
    /* RequestedAddress only means something in a user address space. */
    b->requested_address = p->mode == MDL_USER_MODE ? p->requested_address : 0;
    b->bug_check_on_failure = p->bug_check_on_failure;
    b->priority = p->priority;
    b->consumer = (char *)(p->mode == MDL_USER_MODE && consumer ? consumer : "");
    e->body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    e->map = b;
    return 0;
}

void mdl_env_unmap(Mdlmap__V1__Envelope *e, Mdlmap__V1__UnmapRequest *b, uint64_t map_handle,
                   uint64_t address, uint64_t lock_handle)
{
    mdl_env_init(e);
    mdlmap__v1__unmap_request__init(b);
    b->map_handle = map_handle;
    b->address = address;
    b->mdl_handle = lock_handle;
    e->body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP;
    e->unmap = b;
}

void mdl_env_unlock(Mdlmap__V1__Envelope *e, Mdlmap__V1__UnlockRequest *b, uint64_t lock_handle)
{
    mdl_env_init(e);
    mdlmap__v1__unlock_request__init(b);
    b->mdl_handle = lock_handle;
    e->body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK;
    e->unlock = b;
}
