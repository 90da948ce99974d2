/* A pinner for memory whose frame numbers are known by construction: the
 * harness's memfd guest RAM (pfn = gpa >> 12) and host unit tests. */
#include <errno.h>

#include "mdlmap.h"

static int linear_pin(struct mdl_pinner *self, uintptr_t va, size_t npages, uint64_t *pfns,
                      struct mdl_pin *out)
{
    struct mdl_pinner_linear *l = (struct mdl_pinner_linear *)self;
    if (va < l->base || npages * MDL_PAGE_SIZE > l->len || va - l->base > l->len - npages * MDL_PAGE_SIZE)
        return -EFAULT;
    for (size_t i = 0; i < npages; i++)
        pfns[i] = l->base_pfn + ((va - l->base) >> MDL_PAGE_SHIFT) + i;
    out->cookie = NULL;
    out->pass_fd = -1;
    out->pfns_from_peer = false;
    return 0;
}

static void linear_unpin(struct mdl_pinner *self, struct mdl_pin *pin)
{
    (void)self;
    (void)pin;
}

void mdl_pinner_linear_init(struct mdl_pinner_linear *l, void *base, size_t len, uint64_t base_pfn)
{
    l->pinner.pin = linear_pin;
    l->pinner.unpin = linear_unpin;
    l->base = (uintptr_t)base;
    l->len = len;
    l->base_pfn = base_pfn;
}
