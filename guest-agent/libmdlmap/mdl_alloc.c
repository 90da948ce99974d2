/* IoAllocateMdl / IoFreeMdl storage: hidden header + MDL + PFN array. */
#include <stdlib.h>
#include <string.h>

#include "mdl_internal.h"

struct mdl *mdl_alloc(void *va, uint32_t length)
{
    if (length == 0 || length > MDL_MAX_BYTES)
        return NULL;
    size_t npages = MDL_SPAN_PAGES(va, length);
    size_t bytes = sizeof(struct mdl_priv) + npages * sizeof(uint64_t);
    struct mdl_priv *p = calloc(1, bytes);
    if (!p)
        return NULL;
    p->magic = MDL_MAGIC;
    p->npages_max = npages;
    p->pin.pass_fd = -1;
    struct mdl *m = &p->mdl;
    size_t sz = sizeof(struct mdl) + npages * sizeof(uint64_t);
    m->size = (int16_t)(sz > 0x7fff ? 0x7fff : sz);
    m->start_va = (void *)((uintptr_t)va & ~MDL_PAGE_MASK);
    m->byte_offset = (uint32_t)((uintptr_t)va & MDL_PAGE_MASK);
    m->byte_count = length;
    return m;
}

struct mdl_priv *mdl_priv_checked(const struct mdl *m)
{
    if (!m)
        return NULL;
    struct mdl_priv *p = mdl_priv_of(m);
    return p->magic == MDL_MAGIC ? p : NULL;
}

void mdl_free(struct mdl *m)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    if (!p)
        return;
    p->magic = MDL_MAGIC_FREED;
    free(p);
}

uint64_t mdl_lock_handle(const struct mdl *m)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    return p ? p->lock_handle : 0;
}

unsigned mdl_user_mapping_count(const struct mdl *m)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    return p ? p->nuser : 0;
}

void mdl_test_set_lock_handle(struct mdl *m, uint64_t handle)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    if (p)
        p->lock_handle = handle;
}

enum mdl_frames_from mdl_test_frames_from(const struct mdl *m)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    return p ? p->frames_from : MDL_FRAMES_OWN;
}
