/* Request envelopes for hostd, built on caller-provided storage. */
#include <errno.h>

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

void mdl_env_lock(Mdlmap__V1__Envelope *e, Mdlmap__V1__LockRequest *b, const struct mdl *m,
                  enum mdl_lock_op op, uint64_t *pfns, size_t npages)
{
    mdl_env_init(e);
    mdlmap__v1__lock_request__init(b);
    b->start_va = (uint64_t)(uintptr_t)m->start_va;
    b->byte_offset = m->byte_offset;
    b->byte_count = m->byte_count;
    b->n_pfns = npages;
    b->pfns = pfns;
    b->operation = (Mdlmap__V1__LockOperation)op;
    e->body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    e->lock = b;
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
