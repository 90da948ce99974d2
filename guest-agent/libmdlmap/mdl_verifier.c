/* Verifier decisions for MDL misuse (R1, R4, R11) and their reports (0xC4). */
#include <stdlib.h>
#include <string.h>

#include "mdl_internal.h"

static int forced = -1;

void mdl_verifier_set(int on)
{
    forced = on;
}

bool mdl_verifier_enabled(void)
{
    if (forced >= 0)
        return forced;
    const char *e = getenv("MDLMAP_VERIFIER");
    return !(e && strcmp(e, "0") == 0);
}

const char *mdl_verifier_sub_name(enum mdl_verifier_sub sub)
{
    switch (sub) {
    case MDL_VF_NONE: return "none";
    case MDL_VF_MAP_UNLOCKED: return "map of an MDL whose pages are not locked";
    case MDL_VF_FREE_MAPPED: return "IoFreeMdl of a mapped MDL";
    case MDL_VF_FREE_LOCKED: return "IoFreeMdl of an MDL with locked pages";
    case MDL_VF_UNLOCK_NOT_LOCKED: return "MmUnlockPages of an MDL that is not locked";
    case MDL_VF_MAP_TWICE_SYSTEM: return "second system-space mapping of an MDL";
    case MDL_VF_UNMAP_WRONG_ADDRESS: return "MmUnmapLockedPages address does not match the MDL";
    case MDL_VF_LOCK_TWICE: return "MmProbeAndLockPages of an MDL already locked";
    case MDL_VF_UNLOCK_USER_MAPPED: return "MmUnlockPages with a UserMode mapping left";
    case MDL_VF_UNMAP_FAILED_LATE: return "asynchronous MmUnmapLockedPages refused by hostd";
    }
    return "unknown";
}

enum mdl_verifier_sub mdl_verifier_check(const struct mdl *m, enum mdl_verifier_op op, uint64_t arg)
{
    const struct mdl_priv *p = mdl_priv_checked(m);
    bool locked = m->flags & MDL_F_PAGES_LOCKED;
    bool sys = m->flags & MDL_F_MAPPED_TO_SYSTEM_VA;
    unsigned nuser = p ? p->nuser : 0;
    switch (op) {
    case MDL_VOP_FREE:
        if (sys || nuser)
            return MDL_VF_FREE_MAPPED;
        return locked ? MDL_VF_FREE_LOCKED : MDL_VF_NONE;
    case MDL_VOP_LOCK:
        return locked ? MDL_VF_LOCK_TWICE : MDL_VF_NONE;
    case MDL_VOP_UNLOCK:
        if (!locked)
            return MDL_VF_UNLOCK_NOT_LOCKED;
        return nuser ? MDL_VF_UNLOCK_USER_MAPPED : MDL_VF_NONE;
    case MDL_VOP_MAP:
        if (!locked)
            return MDL_VF_MAP_UNLOCKED;
        return (arg == MDL_KERNEL_MODE && sys) ? MDL_VF_MAP_TWICE_SYSTEM : MDL_VF_NONE;
    case MDL_VOP_UNMAP:
        if (sys && arg == (uint64_t)(uintptr_t)m->mapped_system_va)
            return MDL_VF_NONE;
        for (unsigned i = 0; p && i < p->nuser; i++)
            if (p->user[i].address == arg)
                return MDL_VF_NONE;
        return MDL_VF_UNMAP_WRONG_ADDRESS;
    }
    return MDL_VF_NONE;
}

bool mdl_verifier_report(enum mdl_verifier_sub sub, const struct mdl *m, uint64_t p3, uint64_t p4)
{
    if (sub == MDL_VF_NONE || !mdl_verifier_enabled())
        return false;
    mdl_bugcheck(MDL_BUG_DRIVER_VERIFIER_DETECTED_VIOLATION, sub, (uint64_t)(uintptr_t)m, p3, p4);
    return true;
}
