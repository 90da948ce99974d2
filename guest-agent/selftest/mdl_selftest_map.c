/* Selftest cases of successful paths: R1-R4, R8-R10, R13. */
#include <string.h>

#include "mdl_internal.h"
#include "mdl_selftest_int.h"

static uint64_t u(const void *p) { return (uint64_t)(uintptr_t)p; }

static bool lock_fills_pfns(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 3, 4000, 2 * MDL_PAGE_SIZE, IoModifyAccess);
    if (ok) {
        PPFN_NUMBER pfn = MmGetMdlPfnArray(f.mdl);
        ok = (f.mdl->MdlFlags & MDL_PAGES_LOCKED) && (f.mdl->MdlFlags & MDL_WRITE_OPERATION);
        if (!ok)
            st_fail(t, "flags %#x", (uint16_t)f.mdl->MdlFlags);
        for (unsigned i = 0; ok && i < 3; i++)
            if (!pfn[i])
                ok = st_fail(t, "PFN %u is 0", i);
        if (ok && !mdl_lock_handle(mdl_from_wdm(f.mdl)))
            ok = st_fail(t, "no hostd MDL handle");
    }
    fx_done(t, &f);
    return ok;
}

/* Where the frames came from: read by this process (pagemap, or the
 * harness's linear RAM), or, through the agent daemon, from its LockResponse,
 * which current daemons send as frame runs. Either way one distinct frame
 * per page. */
static bool lock_frames_source(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 8, 0, 8 * MDL_PAGE_SIZE, IoReadAccess);
    if (ok) {
        struct mdl *m = mdl_from_wdm(f.mdl);
        bool peer = mdl_priv_of(m)->pin.pfns_from_peer;
        enum mdl_frames_from want = peer ? MDL_FRAMES_PEER_RUNS : MDL_FRAMES_OWN, got = mdl_test_frames_from(m);
        if (got != want)
            ok = st_fail(t, "frames came %s, want %s", got == MDL_FRAMES_OWN ? "from this process" :
                         got == MDL_FRAMES_PEER_PFNS ? "as pfns" : "as runs", peer ? "as runs" : "from this process");
        PPFN_NUMBER pfn = MmGetMdlPfnArray(f.mdl);
        for (unsigned i = 0; ok && i < 8; i++)
            for (unsigned j = 0; ok && j <= i; j++)
                if (!pfn[i] || (j < i && pfn[j] == pfn[i]))
                    ok = st_fail(t, "PFN %u is %#llx (PFN %u %#llx)", i, (unsigned long long)pfn[i], j,
                                 (unsigned long long)pfn[j]);
    }
    fx_done(t, &f);
    return ok;
}

static bool kernel_map_base_plus_offset(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 2, 0x123, 5000, IoModifyAccess);
    if (ok) {
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        struct mdl_map_info mi;
        if (!a)
            ok = st_fail(t, "map failed: %s %s", mdl_status_name(mdl_last_status()), mdl_last_detail());
        else if (!mdl_find_mapping(mdl_from_wdm(f.mdl), u(a), &mi))
            ok = st_fail(t, "mapping not recorded");
        else if (mi.address != mi.base_address + 0x123 || (u(a) & MDL_PAGE_MASK) != 0x123)
            ok = st_fail(t, "address %#llx base %#llx", (unsigned long long)mi.address,
                         (unsigned long long)mi.base_address);
        else if (mi.page_count != 2 || !mi.map_handle)
            ok = st_fail(t, "pages %u handle %#llx", mi.page_count, (unsigned long long)mi.map_handle);
        else if (f.mdl->MappedSystemVa != a || !(f.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA))
            ok = st_fail(t, "MappedSystemVa/MDL_MAPPED_TO_SYSTEM_VA not set");
        if (a)
            MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

static bool unmap_matching(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 8, 64, IoReadAccess);
    if (ok) {
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        uint64_t h = 0;
        struct mdl_map_info mi;
        if (a && mdl_find_mapping(mdl_from_wdm(f.mdl), u(a), &mi))
            h = mi.map_handle;
        if (!a)
            ok = st_fail(t, "map failed: %s", mdl_status_name(mdl_last_status()));
        else {
            MmUnmapLockedPages(a, f.mdl);
            if (f.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA || f.mdl->MappedSystemVa)
                ok = st_fail(t, "system mapping still recorded");
            /* hostd must have forgotten it too: the same unmap again is refused. */
            Mdlmap__V1__Envelope e;
            const Mdlmap__V1__Envelope *r;
            Mdlmap__V1__UnmapRequest b;
            mdl_env_unmap(&e, &b, h, u(a), mdl_lock_handle(mdl_from_wdm(f.mdl)));
            mdl_status st = mdl_session_call(t->env->session, &e, -1, &r);
            mdl_session_release(t->env->session);
            if (ok && MDL_SUCCESS(st))
                ok = st_fail(t, "hostd still knew the mapping");
        }
    }
    fx_done(t, &f);
    return ok;
}

static bool cache_type_recorded(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 100, IoReadAccess);
    if (ok) {
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmNonCached, NULL, FALSE, LowPagePriority);
        struct mdl_map_info mi;
        if (!a || !mdl_find_mapping(mdl_from_wdm(f.mdl), u(a), &mi))
            ok = st_fail(t, "map failed: %s", mdl_status_name(mdl_last_status()));
        else if (mi.cache != MmNonCached)
            ok = st_fail(t, "cache type recorded as %d", mi.cache);
        if (a)
            MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

static bool no_write_read_only(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 100, IoReadAccess);
    if (ok) {
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE,
                                               NormalPagePriority | MdlMappingNoWrite | MdlMappingNoExecute);
        struct mdl_map_info mi;
        if (!a || !mdl_find_mapping(mdl_from_wdm(f.mdl), u(a), &mi))
            ok = st_fail(t, "map failed: %s", mdl_status_name(mdl_last_status()));
        else if (!mi.read_only)
            ok = st_fail(t, "mapping is writable");
        if (a)
            MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

static bool bad_cache_null(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 100, IoReadAccess);
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, (MEMORY_CACHING_TYPE)42, NULL, FALSE,
                                               NormalPagePriority);
        rec_end();
        if (a)
            ok = st_fail(t, "mapped with cache type 42");
        else if (mdl_last_status() != STATUS_INVALID_PARAMETER)
            ok = st_fail(t, "status %s", mdl_status_name(mdl_last_status()));
        else if (r.count)
            ok = st_fail(t, "bug checked with BugCheckOnFailure FALSE");
    }
    fx_done(t, &f);
    return ok;
}

static bool requested_address_kernel_ignored(struct st *t)
{
    Mdlmap__V1__Envelope e;
    Mdlmap__V1__MapRequest b;
    struct mdl_map_params p = { .mode = MDL_KERNEL_MODE, .cache = MDL_CACHED, .requested_address = 0x7000 };
    mdl_env_map(&e, &b, 1, &p, "c");
    CHECK(t, b.requested_address == 0 && !*b.consumer, "KernelMode request carries %#llx/%s",
          (unsigned long long)b.requested_address, b.consumer);
    p.mode = MDL_USER_MODE;
    p.priority = HighPagePriority | MdlMappingNoWrite;
    mdl_env_map(&e, &b, 1, &p, "c");
    CHECK(t, b.requested_address == 0x7000 && !strcmp(b.consumer, "c") &&
          b.priority == (HighPagePriority | MdlMappingNoWrite), "UserMode request fields lost");
    return true;
}

static bool system_address_safe(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 10, 100, IoReadAccess);
    if (ok) {
        PVOID a = MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority);
        PVOID b = MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority);
        if (!a)
            ok = st_fail(t, "first call returned NULL: %s", mdl_status_name(mdl_last_status()));
        else if (a != b)
            ok = st_fail(t, "second call mapped again");
        else if (!(f.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA) || f.mdl->MappedSystemVa != a)
            ok = st_fail(t, "MDL_MAPPED_TO_SYSTEM_VA not kept");
        if (a)
            MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

static bool system_address_safe_null(struct st *t)
{
    struct fx f;
    bool ok = fx_alloc(t, &f, 1, 0, 100);
    if (ok) {
        mdl_verifier_set(0);   /* an unlocked MDL: fails, and the verifier is off */
        PVOID a = MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority);
        if (a || mdl_last_status() != STATUS_NOT_LOCKED)
            ok = st_fail(t, "got %p, status %s", a, mdl_status_name(mdl_last_status()));
    }
    fx_done(t, &f);
    return ok;
}

static bool unlock_releases_mapping(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 2, 0, 2 * MDL_PAGE_SIZE, IoModifyAccess);
    if (ok) {
        PVOID a = MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority);
        uint64_t lh = mdl_lock_handle(mdl_from_wdm(f.mdl));
        struct st_rec r;
        rec_begin(&r);
        MmUnlockPages(f.mdl);
        rec_end();
        if (!a)
            ok = st_fail(t, "map failed");
        else if (r.count)
            ok = st_fail(t, "bug check %#x", r.last.code);
        else if (f.mdl->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_PAGES_LOCKED) || f.mdl->MappedSystemVa)
            ok = st_fail(t, "flags %#x after unlock", (uint16_t)f.mdl->MdlFlags);
        else {
            Mdlmap__V1__Envelope e;
            const Mdlmap__V1__Envelope *resp;
            Mdlmap__V1__UnlockRequest b;
            mdl_env_unlock(&e, &b, lh);
            mdl_status st = mdl_session_call(t->env->session, &e, -1, &resp);
            mdl_session_release(t->env->session);
            if (MDL_SUCCESS(st))
                ok = st_fail(t, "hostd still knew the MDL");
        }
    }
    fx_done(t, &f);
    return ok;
}

static bool obsolete_map(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        PVOID a = MmMapLockedPages(f.mdl, KernelMode);
        struct mdl_map_info mi;
        if (!a || !mdl_find_mapping(mdl_from_wdm(f.mdl), u(a), &mi))
            ok = st_fail(t, "map failed: %s", mdl_status_name(mdl_last_status()));
        else if (mi.cache != MmCached || f.mdl->MappedSystemVa != a)
            ok = st_fail(t, "cache %d", mi.cache);
        if (a)
            MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

const struct st_case st_cases_map[] = {
    { "R1", "MmProbeAndLockPages fills the PFN array, sets MDL_PAGES_LOCKED", lock_fills_pfns, false },
    { "R1", "one distinct frame per page; through the agent daemon they come as frame runs", lock_frames_source,
      false },
    { "R2", "KernelMode maps into hostd's address space", kernel_map_base_plus_offset, false },
    { "R3", "map returns base+ByteOffset and a handle", kernel_map_base_plus_offset, false },
    { "R4", "MmUnmapLockedPages with the matching address and MDL unmaps (hostd too)", unmap_matching, false },
    { "R8", "CacheType is recorded (MmNonCached)", cache_type_recorded, false },
    { "R8", "MdlMappingNoWrite gives a read-only host mapping", no_write_read_only, false },
    { "R8", "invalid CacheType: NULL and STATUS_INVALID_PARAMETER, no bug check", bad_cache_null, false },
    { "R8", "RequestedAddress and consumer only for UserMode; Priority passed through",
      requested_address_kernel_ignored, false },
    { "R9", "MmGetSystemAddressForMdlSafe maps once, then returns the existing mapping",
      system_address_safe, false },
    { "R9", "MmGetSystemAddressForMdlSafe returns NULL on failure", system_address_safe_null, false },
    { "R10", "MmUnlockPages also releases the system mapping", unlock_releases_mapping, false },
    { "R13", "MmMapLockedPages (obsolete) maps like SpecifyCache(MmCached)", obsolete_map, false },
    { 0, 0, 0, false },
};
