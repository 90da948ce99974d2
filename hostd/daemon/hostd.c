/* Process-wide helpers shared by the daemon and the tests (core library). */
#include "hostd.h"

struct vm *hostd_vm_by_cid(struct hostd *h, uint64_t cid)
{
    if (!h)
        return NULL;
    for (unsigned i = 0; i < h->nvms && i < HOSTD_MAX_VMS; i++)
        if (h->vms[i] && h->vms[i]->cid == cid)
            return h->vms[i];
    return NULL;
}
