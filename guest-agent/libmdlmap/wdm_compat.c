/* The Windows MDL routines: IRQL rules, verifier checks and the documented
 * failure behaviour (bug check / exception / NULL) over the plain operations. */
#include "wdm_compat.h"

#include "mdl_internal.h"

/* Parameter 4 of IRQL bug checks: which routine was called too high. */
enum routine_id {
    R_IO_ALLOCATE_MDL = 0x10, R_IO_FREE_MDL, R_PROBE_AND_LOCK, R_UNLOCK_PAGES,
    R_MAP_LOCKED_PAGES, R_MAP_SPECIFY_CACHE, R_SYSTEM_ADDRESS_SAFE, R_UNMAP_LOCKED_PAGES,
};

static uint64_t u(const void *p) { return (uint64_t)(uintptr_t)p; }

PMDL IoAllocateMdl(PVOID VirtualAddress, ULONG Length, BOOLEAN SecondaryBuffer,
                   BOOLEAN ChargeQuota, PIRP Irp)
{
    (void)SecondaryBuffer;
    (void)ChargeQuota;
    (void)Irp;
    if (!mdl_irql_check(DISPATCH_LEVEL, u(VirtualAddress), R_IO_ALLOCATE_MDL))
        return NULL;
    return wdm_from_mdl(mdl_alloc(VirtualAddress, Length));
}

VOID IoFreeMdl(PMDL Mdl)
{
    struct mdl *m = mdl_from_wdm(Mdl);
    if (!mdl_priv_checked(m) || !mdl_irql_check(DISPATCH_LEVEL, u(Mdl), R_IO_FREE_MDL))
        return;
    mdl_verifier_report(mdl_verifier_check(m, MDL_VOP_FREE, 0), m, (uint16_t)m->flags, 0);
    /* Reported (or verifier off): do not leave hostd holding pages for freed memory. */
    if (m->flags & MDL_F_PAGES_LOCKED)
        mdl_unlock(m);
    mdl_free(m);
}

VOID MmProbeAndLockPages(PMDL Mdl, KPROCESSOR_MODE AccessMode, LOCK_OPERATION Operation)
{
    (void)AccessMode;   /* both modes probe the buffer the same way here */
    struct mdl *m = mdl_from_wdm(Mdl);
    if (!mdl_irql_check(APC_LEVEL, u(Mdl), R_PROBE_AND_LOCK))
        return;
    if (mdl_verifier_report(mdl_verifier_check(m, MDL_VOP_LOCK, 0), m, (uint16_t)m->flags, 0))
        return;
    /* Probe first: a bad buffer raises without needing hostd. */
    if ((unsigned)Operation > IoModifyAccess)
        mdl_raise(STATUS_INVALID_PARAMETER);
    if (mdl_probe_range((uintptr_t)m->start_va + m->byte_offset, m->byte_count, Operation != IoReadAccess) < 0) {
        mdl_set_last_status(STATUS_ACCESS_VIOLATION, "buffer not accessible");
        mdl_raise(STATUS_ACCESS_VIOLATION);
    }
    struct mdl_session *s = mdl_default_session();
    mdl_status st = s ? mdl_probe_and_lock(s, m, (enum mdl_lock_op)Operation)
                      : MDL_STATUS_DEVICE_NOT_READY;
    if (!MDL_SUCCESS(st))
        mdl_raise(st);
}

VOID MmUnlockPages(PMDL Mdl)
{
    struct mdl *m = mdl_from_wdm(Mdl);
    if (!mdl_irql_check(DISPATCH_LEVEL, u(Mdl), R_UNLOCK_PAGES))
        return;
    enum mdl_verifier_sub sub = mdl_verifier_check(m, MDL_VOP_UNLOCK, 0);
    mdl_verifier_report(sub, m, (uint16_t)m->flags, mdl_user_mapping_count(m));
    if (sub == MDL_VF_UNLOCK_NOT_LOCKED)
        return;
    mdl_unlock(m);
}

static PVOID map_common(PMDL Mdl, KPROCESSOR_MODE mode, int cache, PVOID requested,
                        ULONG bug_check_on_failure, ULONG priority, enum routine_id rid)
{
    struct mdl *m = mdl_from_wdm(Mdl);
    if (!mdl_irql_check(mode == UserMode ? APC_LEVEL : DISPATCH_LEVEL, u(Mdl), rid))
        return NULL;
    enum mdl_verifier_sub sub = mdl_verifier_check(m, MDL_VOP_MAP, (uint64_t)mode);
    if (mdl_verifier_report(sub, m, (uint16_t)m->flags, (uint64_t)mode))
        return NULL;
    struct mdl_map_params p = {
        .mode = mode == UserMode ? MDL_USER_MODE : MDL_KERNEL_MODE,
        .cache = cache, .requested_address = u(requested), .priority = priority,
        .bug_check_on_failure = bug_check_on_failure != 0,
    };
    struct mdl_map_info mi;
    mdl_status st = (mode == KernelMode || mode == UserMode)
                        ? mdl_map(m, &p, &mi) : MDL_STATUS_INVALID_PARAMETER;
    if (MDL_SUCCESS(st))
        return (PVOID)(uintptr_t)mi.address;
    if (mode == UserMode)
        mdl_raise(st);                 /* R6: callers wrap UserMode maps in try/except */
    if (bug_check_on_failure)          /* R5 */
        mdl_bugcheck(NO_MORE_SYSTEM_PTES, 0, mdl_page_count(m), (uint32_t)st, u(Mdl));
    return NULL;                       /* R8 */
}

PVOID MmMapLockedPages(PMDL Mdl, KPROCESSOR_MODE AccessMode)
{
    return map_common(Mdl, AccessMode, MmCached, NULL, TRUE, HighPagePriority, R_MAP_LOCKED_PAGES);
}

PVOID MmMapLockedPagesSpecifyCache(PMDL Mdl, KPROCESSOR_MODE AccessMode,
                                   MEMORY_CACHING_TYPE CacheType, PVOID RequestedAddress,
                                   ULONG BugCheckOnFailure, ULONG Priority)
{
    return map_common(Mdl, AccessMode, CacheType, RequestedAddress, BugCheckOnFailure, Priority,
                      R_MAP_SPECIFY_CACHE);
}

PVOID MmGetSystemAddressForMdlSafe(PMDL Mdl, ULONG Priority)
{
    if (Mdl->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL))
        return Mdl->MappedSystemVa;
    return map_common(Mdl, KernelMode, MmCached, NULL, FALSE, Priority, R_SYSTEM_ADDRESS_SAFE);
}

VOID MmUnmapLockedPages(PVOID BaseAddress, PMDL Mdl)
{
    struct mdl *m = mdl_from_wdm(Mdl);
    struct mdl_map_info mi;
    bool found = mdl_find_mapping(m, u(BaseAddress), &mi) && BaseAddress;
    KIRQL max = found && mi.mode == MDL_USER_MODE ? APC_LEVEL : DISPATCH_LEVEL;
    if (!mdl_irql_check(max, u(Mdl), R_UNMAP_LOCKED_PAGES))
        return;
    enum mdl_verifier_sub sub = BaseAddress ? mdl_verifier_check(m, MDL_VOP_UNMAP, u(BaseAddress))
                                            : MDL_VF_UNMAP_WRONG_ADDRESS;
    if (mdl_verifier_report(sub, m, u(BaseAddress), u(m->mapped_system_va)))
        return;
    mdl_unmap(m, u(BaseAddress));
}
