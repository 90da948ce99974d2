/* Selftest cases of failure semantics: bug checks, exceptions, verifier. */
#include <string.h>
#include <unistd.h>

#include "mdl_internal.h"
#include "mdl_selftest_int.h"

#define ABSENT_CONSUMER "mdlmap-selftest-no-such-consumer"
#define BOGUS_HANDLE 0x0badbad0badbad0ull

static uint64_t u(const void *p) { return (uint64_t)(uintptr_t)p; }

static bool rec_is(struct st *t, const struct st_rec *r, uint32_t code, uint64_t p1)
{
    CHECK(t, r->count == 1, "%u bug checks (expected one 0x%X)", r->count, code);
    CHECK(t, r->last.code == code, "bug check 0x%X, expected 0x%X", r->last.code, code);
    CHECK(t, p1 == UINT64_MAX || r->last.p[0] == p1, "parameter 1 %#llx, expected %#llx",
          (unsigned long long)r->last.p[0], (unsigned long long)p1);
    return true;
}

static bool map_unlocked_verifier(struct st *t)
{
    struct fx f;
    bool ok = fx_alloc(t, &f, 1, 0, 64);
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, TRUE, NormalPagePriority);
        rec_end();
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_MAP_UNLOCKED) &&
             (a == NULL || st_fail(t, "mapped an unlocked MDL"));
    }
    fx_done(t, &f);
    return ok;
}

static bool user_no_consumer_raises(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        mdl_session_set_consumer(t->env->session, ABSENT_CONSUMER);
        volatile NTSTATUS code = 0;
        PVOID volatile a = NULL;
        MDL_TRY {
            a = MmMapLockedPagesSpecifyCache(f.mdl, UserMode, MmCached, NULL, FALSE, NormalPagePriority);
        } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
            code = GetExceptionCode();
        } MDL_END_TRY;
        if (a)
            ok = st_fail(t, "mapped into an absent consumer");
        else if (NT_SUCCESS(code))
            ok = st_fail(t, "no exception raised");
    }
    fx_done(t, &f);
    return ok;
}

static bool unmap_wrong_address(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    PVOID a = ok ? MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority) : NULL;
    if (ok && !a)
        ok = st_fail(t, "map failed");
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        MmUnmapLockedPages((char *)a + MDL_PAGE_SIZE, f.mdl);
        rec_end();
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_UNMAP_WRONG_ADDRESS) &&
             ((f.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA) || st_fail(t, "mapping dropped"));
        mdl_verifier_set(0);   /* off: refused quietly, mapping kept */
        MmUnmapLockedPages((char *)a + 1, f.mdl);
        if (ok && (mdl_last_status() != STATUS_NOT_MAPPED_VIEW || !(f.mdl->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA)))
            ok = st_fail(t, "verifier off: status %s", mdl_status_name(mdl_last_status()));
        mdl_verifier_set(1);
        MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

static bool unmap_other_mdl(struct st *t)
{
    struct fx f, g;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    ok = ok && fx_lock(t, &g, 1, 0, 64, IoReadAccess);
    PVOID a = ok ? MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority) : NULL;
    PVOID b = ok ? MmGetSystemAddressForMdlSafe(g.mdl, NormalPagePriority) : NULL;
    if (ok && (!a || !b))
        ok = st_fail(t, "map failed");
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        MmUnmapLockedPages(a, g.mdl);   /* f's address with g */
        rec_end();
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_UNMAP_WRONG_ADDRESS);
    }
    fx_done(t, &f);
    fx_done(t, &g);
    return ok;
}

static bool kernel_failure_bugcheck(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        struct mdl *m = mdl_from_wdm(f.mdl);
        uint64_t h = mdl_lock_handle(m);
        mdl_test_set_lock_handle(m, BOGUS_HANDLE);   /* hostd cannot map this */
        struct st_rec r;
        rec_begin(&r);
        PVOID a = MmMapLockedPages(f.mdl, KernelMode);
        rec_end();
        mdl_test_set_lock_handle(m, h);
        ok = rec_is(t, &r, NO_MORE_SYSTEM_PTES, 0) && (a == NULL || st_fail(t, "mapped"));
        if (ok && (NT_SUCCESS((NTSTATUS)r.last.p[2]) || r.last.p[1] != 1 || r.last.p[3] != u(f.mdl)))
            ok = st_fail(t, "parameters %#llx %#llx %#llx", (unsigned long long)r.last.p[1],
                         (unsigned long long)r.last.p[2], (unsigned long long)r.last.p[3]);
    }
    fx_done(t, &f);
    return ok;
}

static bool kernel_failure_null(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        struct mdl *m = mdl_from_wdm(f.mdl);
        uint64_t h = mdl_lock_handle(m);
        mdl_test_set_lock_handle(m, BOGUS_HANDLE);
        struct st_rec r;
        rec_begin(&r);
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        rec_end();
        mdl_test_set_lock_handle(m, h);
        if (a || r.count)
            ok = st_fail(t, "address %p, %u bug checks", a, r.count);
        else if (NT_SUCCESS(mdl_last_status()))
            ok = st_fail(t, "no failure status");
    }
    fx_done(t, &f);
    return ok;
}

/* ---- process death (forked children, default handlers) ---- */
static void child_kernel_bugcheck(void *arg)
{
    MmMapLockedPagesSpecifyCache(arg, KernelMode, (MEMORY_CACHING_TYPE)42, NULL, TRUE, NormalPagePriority);
    _exit(0);   /* not reached: the bug check terminates */
}

static void child_user_unhandled(void *arg)
{
    MmMapLockedPagesSpecifyCache(arg, UserMode, (MEMORY_CACHING_TYPE)42, NULL, FALSE, NormalPagePriority);
    _exit(0);
}

static bool death_test(struct st *t, void (*fn)(void *), int want_status, const char *want_text)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        char out[1024];
        int status = -1;
        if (st_child(fn, f.mdl, &status, out, sizeof(out)) < 0)
            ok = st_fail(t, "fork failed");
        else if (status != want_status || !strstr(out, want_text))
            ok = st_fail(t, "child exit %d, stderr \"%.120s\"", status, out);
    }
    /* The caller's session, hostd and the VM are still fine. */
    if (ok && !MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority))
        ok = st_fail(t, "mapping after the child died failed: %s", mdl_status_name(mdl_last_status()));
    fx_done(t, &f);
    return ok;
}

static bool default_bugcheck_kills_process(struct st *t)
{
    return death_test(t, child_kernel_bugcheck, MDL_BUGCHECK_EXIT, "*** BUGCHECK 0x0000003F");
}

static bool unhandled_exception_kills_process(struct st *t)
{
    return death_test(t, child_user_unhandled, MDL_EXCEPTION_EXIT, "*** UNHANDLED EXCEPTION 0xC000000D");
}

static bool user_failure_raises(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        volatile NTSTATUS code = 0;
        struct st_rec r;
        rec_begin(&r);
        MDL_TRY {
            MmMapLockedPagesSpecifyCache(f.mdl, UserMode, (MEMORY_CACHING_TYPE)-5, NULL, TRUE, NormalPagePriority);
        } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
            code = GetExceptionCode();
        } MDL_END_TRY;
        rec_end();
        if (code != STATUS_INVALID_PARAMETER || r.count)
            ok = st_fail(t, "code 0x%08X, %u bug checks", (uint32_t)code, r.count);
    }
    fx_done(t, &f);
    return ok;
}

/* ---- IRQL of the map routine (R7) ---- */
static bool map_at_irql(struct st *t, KPROCESSOR_MODE mode, KIRQL irql, bool want_bugcheck)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        mdl_session_set_consumer(t->env->session, ABSENT_CONSUMER);
        struct st_rec r;
        rec_begin(&r);
        KIRQL old;
        KeRaiseIrql(irql, &old);
        PVOID volatile a = NULL;
        MDL_TRY {
            a = MmMapLockedPagesSpecifyCache(f.mdl, mode, MmCached, NULL, FALSE, NormalPagePriority);
        } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        } MDL_END_TRY;
        KeLowerIrql(old);
        rec_end();
        if (want_bugcheck)
            ok = rec_is(t, &r, IRQL_NOT_LESS_OR_EQUAL, u(f.mdl)) &&
                 (r.last.p[1] == irql || st_fail(t, "IRQL parameter %llu", (unsigned long long)r.last.p[1]));
        else if (r.count || !a)
            ok = st_fail(t, "%u bug checks, address %p (%s)", r.count, a, mdl_status_name(mdl_last_status()));
        if (a)
            MmUnmapLockedPages(a, f.mdl);
    }
    fx_done(t, &f);
    return ok;
}

static bool kernel_at_dispatch_ok(struct st *t) { return map_at_irql(t, KernelMode, DISPATCH_LEVEL, false); }
static bool kernel_above_dispatch(struct st *t) { return map_at_irql(t, KernelMode, DISPATCH_LEVEL + 1, true); }
static bool user_at_dispatch(struct st *t) { return map_at_irql(t, UserMode, DISPATCH_LEVEL, true); }

/* ---- verifier (R11) ---- */
static bool free_while_mapped(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok && !MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority))
        ok = st_fail(t, "map failed");
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        IoFreeMdl(f.mdl);   /* reported, then released anyway */
        rec_end();
        f.mdl = NULL;
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_FREE_MAPPED);
    }
    fx_done(t, &f);
    return ok;
}

static bool free_while_locked(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        IoFreeMdl(f.mdl);
        rec_end();
        f.mdl = NULL;
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_FREE_LOCKED);
    }
    fx_done(t, &f);
    return ok;
}

static bool unlock_never_locked(struct st *t)
{
    struct fx f;
    bool ok = fx_alloc(t, &f, 1, 0, 64);
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        MmUnlockPages(f.mdl);
        rec_end();
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_UNLOCK_NOT_LOCKED);
    }
    fx_done(t, &f);
    return ok;
}

static bool map_twice_system(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    PVOID a = ok ? MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority) : NULL;
    if (ok && !a)
        ok = st_fail(t, "first map failed");
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        PVOID b = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        rec_end();
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_MAP_TWICE_SYSTEM) &&
             (!b || st_fail(t, "second mapping made"));
    }
    fx_done(t, &f);
    return ok;
}

static bool lock_twice(struct st *t)
{
    struct fx f;
    bool ok = fx_lock(t, &f, 1, 0, 64, IoReadAccess);
    if (ok) {
        struct st_rec r;
        rec_begin(&r);
        MmProbeAndLockPages(f.mdl, KernelMode, IoReadAccess);
        rec_end();
        ok = rec_is(t, &r, DRIVER_VERIFIER_DETECTED_VIOLATION, MDL_VF_LOCK_TWICE);
    }
    fx_done(t, &f);
    return ok;
}

static bool verifier_off_silent(struct st *t)
{
    struct fx f;
    bool ok = fx_alloc(t, &f, 1, 0, 64);
    if (ok) {
        mdl_verifier_set(0);
        struct st_rec r;
        rec_begin(&r);
        MmUnlockPages(f.mdl);
        PVOID a = MmMapLockedPagesSpecifyCache(f.mdl, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        rec_end();
        if (r.count || a)
            ok = st_fail(t, "%u reports, address %p", r.count, a);
    }
    fx_done(t, &f);
    return ok;
}

/* ---- R12: the "process" (session) ends with pages locked or mapped ---- */
static bool session_leak(struct st *t, bool map, uint32_t want)
{
    mdl_set_last_status(MDL_STATUS_SUCCESS, "");
    struct mdl_session *s = st_open_session(t);
    CHECK(t, s, "cannot open a second session (%s)", mdl_last_detail());
    struct mdl_session *prev = mdl_default_session_peek();
    mdl_set_default_session(s);
    struct fx f;
    bool ok = fx_lock(t, &f, 2, 0, 2 * MDL_PAGE_SIZE, IoReadAccess);
    if (ok && map && !MmGetSystemAddressForMdlSafe(f.mdl, NormalPagePriority))
        ok = st_fail(t, "map failed");
    mdl_set_default_session(prev);
    struct st_rec r;
    rec_begin(&r);
    mdl_session_close(s);   /* hostd runs the connection down */
    rec_end();
    if (ok)
        ok = rec_is(t, &r, want, UINT64_MAX);
    fx_done(t, &f);   /* orphaned MDL: only memory is left to free */
    /* hostd survived and serves the remaining session. */
    struct fx g;
    if (ok && fx_lock(t, &g, 1, 0, 8, IoReadAccess) && !MmGetSystemAddressForMdlSafe(g.mdl, NormalPagePriority))
        ok = st_fail(t, "hostd unusable after the leak");
    else if (ok && !g.mdl)
        ok = false;
    if (ok || g.mdl)
        fx_done(t, &g);
    return ok;
}

static bool leak_mapped(struct st *t) { return session_leak(t, true, DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS); }
static bool leak_locked(struct st *t) { return session_leak(t, false, PROCESS_HAS_LOCKED_PAGES); }

const struct st_case st_cases_fail[] = {
    { "R1", "map of an unlocked MDL: verifier 0xC4/0x1001", map_unlocked_verifier, false },
    { "R2", "UserMode with no such host consumer raises an exception", user_no_consumer_raises, false },
    { "R4", "unmap with a wrong address: verifier 0xC4/0x1006 (off: refused, kept)", unmap_wrong_address, false },
    { "R4", "unmap with another MDL's address: verifier 0xC4/0x1006", unmap_other_mdl, false },
    { "R5", "KernelMode map failure bug checks 0x3F (recording handler)", kernel_failure_bugcheck, false },
    { "R5", "default bug check prints *** BUGCHECK and ends only the process", default_bugcheck_kills_process, false },
    { "R6", "UserMode map failure raises, caught by MDL_TRY/MDL_EXCEPT", user_failure_raises, false },
    { "R6", "unhandled UserMode exception terminates the process", unhandled_exception_kills_process, false },
    { "R7", "KernelMode map at DISPATCH_LEVEL is allowed", kernel_at_dispatch_ok, false },
    { "R7", "KernelMode map above DISPATCH_LEVEL bug checks 0xA", kernel_above_dispatch, false },
    { "R7", "UserMode map above APC_LEVEL bug checks 0xA", user_at_dispatch, false },
    { "R8", "SpecifyCache KernelMode failure, BugCheckOnFailure FALSE: NULL + status", kernel_failure_null, false },
    { "R11", "IoFreeMdl while mapped: verifier 0xC4/0x1002", free_while_mapped, false },
    { "R11", "IoFreeMdl while locked: verifier 0xC4/0x1003", free_while_locked, false },
    { "R11", "unlocking a never-locked MDL: verifier 0xC4/0x1004", unlock_never_locked, false },
    { "R11", "mapping twice to system space: verifier 0xC4/0x1005", map_twice_system, false },
    { "R11", "probe-and-lock of a locked MDL: verifier 0xC4/0x1007", lock_twice, false },
    { "R11", "verifier off (MDLMAP_VERIFIER=0): no reports, plain failures", verifier_off_silent, false },
    { "R12", "session ends with mapped pages: 0xCB reported, hostd runs it down", leak_mapped, true },
    { "R12", "session ends with locked pages: 0x76 reported, hostd runs it down", leak_locked, true },
    { 0, 0, 0, false },
};
