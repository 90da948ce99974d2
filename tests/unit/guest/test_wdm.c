/* The Windows routines against an in-process fake hostd: flags, R9/R10
 * bookkeeping, failure semantics (R5/R6/R8), IRQL (R7), verifier (R1/R4/R11),
 * leak reports (R12). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fake_hostd.h"
#include "mdl_internal.h"
#include "tap.h"
#include "wdm_compat.h"

static struct mdl_bugcheck bc;
static unsigned nbc;
static void record(const struct mdl_bugcheck *b, void *ctx) { (void)ctx; bc = *b; nbc++; }
static bool got(uint32_t code, uint64_t p1)
{
    bool ok = nbc == 1 && bc.code == code && bc.p[0] == p1;
    nbc = 0;
    return ok;
}

static uint8_t *ram;
#define RAM_LEN (64 * 4096)

static PMDL locked(size_t off, size_t len, LOCK_OPERATION op)
{
    PMDL m = IoAllocateMdl(ram + off, (ULONG)len, FALSE, FALSE, NULL);
    MmProbeAndLockPages(m, KernelMode, op);
    return m;
}

static void test_verifier_decisions(void)
{
    struct mdl *m = mdl_alloc(ram + 5, 10);
    tap_check(mdl_verifier_check(m, MDL_VOP_MAP, MDL_KERNEL_MODE) == MDL_VF_MAP_UNLOCKED, "R1: map unlocked -> 0x1001");
    tap_check(mdl_verifier_check(m, MDL_VOP_UNLOCK, 0) == MDL_VF_UNLOCK_NOT_LOCKED, "unlock never locked -> 0x1004");
    tap_check(mdl_verifier_check(m, MDL_VOP_FREE, 0) == MDL_VF_NONE, "free unlocked: fine");
    m->flags |= MDL_F_PAGES_LOCKED;
    tap_check(mdl_verifier_check(m, MDL_VOP_FREE, 0) == MDL_VF_FREE_LOCKED, "free locked -> 0x1003");
    tap_check(mdl_verifier_check(m, MDL_VOP_LOCK, 0) == MDL_VF_LOCK_TWICE, "lock twice -> 0x1007");
    tap_check(mdl_verifier_check(m, MDL_VOP_MAP, MDL_KERNEL_MODE) == MDL_VF_NONE, "map locked: fine");
    m->flags |= MDL_F_MAPPED_TO_SYSTEM_VA;
    m->mapped_system_va = (void *)0x7000123;
    tap_check(mdl_verifier_check(m, MDL_VOP_MAP, MDL_KERNEL_MODE) == MDL_VF_MAP_TWICE_SYSTEM, "second system map -> 0x1005");
    tap_check(mdl_verifier_check(m, MDL_VOP_MAP, MDL_USER_MODE) == MDL_VF_NONE, "UserMode map of a system-mapped MDL: fine");
    tap_check(mdl_verifier_check(m, MDL_VOP_FREE, 0) == MDL_VF_FREE_MAPPED, "free mapped -> 0x1002");
    tap_check(mdl_verifier_check(m, MDL_VOP_UNMAP, 0x7000123) == MDL_VF_NONE, "unmap matching address: fine");
    tap_check(mdl_verifier_check(m, MDL_VOP_UNMAP, 0x7000000) == MDL_VF_UNMAP_WRONG_ADDRESS, "unmap base instead of base+offset -> 0x1006");
    m->flags = 0;
    mdl_free(m);
    setenv("MDLMAP_VERIFIER", "0", 1);
    mdl_verifier_set(-1);
    tap_check(!mdl_verifier_enabled(), "MDLMAP_VERIFIER=0 turns the verifier off");
    unsetenv("MDLMAP_VERIFIER");
    tap_check(mdl_verifier_enabled(), "verifier on by default");
}

static void test_success_paths(struct fake_hostd *f)
{
    PMDL m = locked(0x123 + 4096, 5000, IoModifyAccess);
    PPFN_NUMBER pfn = MmGetMdlPfnArray(m);
    tap_check((m->MdlFlags & (MDL_PAGES_LOCKED | MDL_WRITE_OPERATION)) == (MDL_PAGES_LOCKED | MDL_WRITE_OPERATION),
          "R1: MmProbeAndLockPages sets MDL_PAGES_LOCKED (+WRITE_OPERATION)");
    tap_check(pfn[0] == 0x1001 && pfn[1] == 0x1002 && f->locked == 1, "PFN array filled by the pinner, hostd registered");
    PVOID a = MmMapLockedPagesSpecifyCache(m, KernelMode, MmNonCached, (PVOID)0x9000, FALSE, NormalPagePriority);
    tap_check(a && ((uintptr_t)a & 0xfff) == 0x123 && m->MappedSystemVa == a && (m->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA),
          "R3: address = base + ByteOffset, MappedSystemVa and MDL_MAPPED_TO_SYSTEM_VA set");
    tap_check(f->last_cache == MmNonCached && f->last_requested == 0, "R8: cache type sent; RequestedAddress dropped for KernelMode");
    unsigned req = f->requests;
    tap_check(MmGetSystemAddressForMdlSafe(m, NormalPagePriority) == a && f->requests == req,
          "R9: MmGetSystemAddressForMdlSafe returns the existing mapping without a request");
    mdl_set_bugcheck_handler(record, NULL);
    tap_check(!MmMapLockedPagesSpecifyCache(m, KernelMode, MmCached, NULL, FALSE, NormalPagePriority) &&
          got(0xC4, MDL_VF_MAP_TWICE_SYSTEM) && f->mapped == 1, "R11: second system mapping -> 0xC4/0x1005, none made");
    MmUnmapLockedPages((char *)a - 0x123, m);
    tap_check(got(0xC4, MDL_VF_UNMAP_WRONG_ADDRESS) && f->mapped == 1, "R4: unmap with the wrong address -> 0xC4/0x1006");
    MmUnlockPages(m);
    tap_check(nbc == 0 && !(m->MdlFlags & (MDL_PAGES_LOCKED | MDL_MAPPED_TO_SYSTEM_VA)) && !m->MappedSystemVa && f->locked == 0,
          "R10: MmUnlockPages drops the system mapping and the lock");
    MmUnlockPages(m);
    tap_check(got(0xC4, MDL_VF_UNLOCK_NOT_LOCKED), "R11: unlocking again -> 0xC4/0x1004");
    IoFreeMdl(m);
    tap_check(nbc == 0, "IoFreeMdl of an unlocked MDL is quiet");

    m = locked(0, 100, IoReadAccess);
    a = MmMapLockedPages(m, KernelMode);
    tap_check(a && f->last_cache == MmCached && f->last_priority == HighPagePriority,
          "R13: MmMapLockedPages = SpecifyCache(MmCached, HighPagePriority)");
    MmUnmapLockedPages(a, m);
    tap_check(nbc == 0 && !(m->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA) && f->mapped == 0, "R4: matching unmap");
    a = MmGetSystemAddressForMdlSafe(m, LowPagePriority | MdlMappingNoWrite);
    IoFreeMdl(m);
    tap_check(a && got(0xC4, MDL_VF_FREE_MAPPED) && f->locked == 0 && f->mapped == 0,
          "R11: IoFreeMdl while mapped -> 0xC4/0x1002, then released");
    mdl_set_bugcheck_handler(NULL, NULL);
}

static void test_failures(struct fake_hostd *f)
{
    mdl_set_bugcheck_handler(record, NULL);
    PMDL m = locked(0, 4096, IoReadAccess);
    f->fail_map = STATUS_INSUFFICIENT_RESOURCES;
    tap_check(!MmMapLockedPagesSpecifyCache(m, KernelMode, MmCached, NULL, FALSE, NormalPagePriority) && nbc == 0 &&
          mdl_last_status() == STATUS_INSUFFICIENT_RESOURCES && !strcmp(mdl_last_detail(), "injected"),
          "R8: KernelMode failure, BugCheckOnFailure FALSE: NULL, last status + detail");
    f->fail_map = STATUS_INSUFFICIENT_RESOURCES;
    tap_check(!MmMapLockedPages(m, KernelMode) && got(0x3F, 0) && bc.p[1] == 1 &&
          bc.p[2] == (uint32_t)STATUS_INSUFFICIENT_RESOURCES && bc.p[3] == (uintptr_t)m,
          "R5: KernelMode failure of MmMapLockedPages: bug check 0x3F (0, pages, status, MDL)");
    f->fail_map = STATUS_ACCESS_DENIED;
    volatile NTSTATUS code = 0;
    MDL_TRY {
        MmMapLockedPagesSpecifyCache(m, UserMode, MmCached, NULL, FALSE, NormalPagePriority);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    } MDL_END_TRY;
    tap_check(code == STATUS_ACCESS_DENIED && nbc == 0, "R6: UserMode failure raises the status (even with BugCheckOnFailure FALSE)");
    tap_check(!MmMapLockedPagesSpecifyCache(m, KernelMode, (MEMORY_CACHING_TYPE)9, NULL, FALSE, NormalPagePriority) &&
          mdl_last_status() == STATUS_INVALID_PARAMETER && nbc == 0, "R8: bad cache type: NULL, STATUS_INVALID_PARAMETER");
    mdl_session_set_consumer(mdl_default_session(), "viewer");
    PVOID a = MmMapLockedPagesSpecifyCache(m, UserMode, MmCached, (PVOID)0x50000000, FALSE, NormalPagePriority | MdlMappingNoExecute);
    tap_check(a && !strcmp(f->last_consumer, "viewer") && f->last_requested == 0x50000000 &&
          f->last_priority == (NormalPagePriority | MdlMappingNoExecute) && !(m->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA),
          "R2/R8: UserMode map names the consumer, passes RequestedAddress and Priority");
    MmUnlockPages(m);
    tap_check(got(0xC4, MDL_VF_UNLOCK_USER_MAPPED) && f->mapped == 0 && f->locked == 0,
          "MmUnlockPages with a UserMode mapping left: 0xC4/0x1008, mapping and lock released");
    IoFreeMdl(m);

    /* hostd refuses the Unmap with a status the library forgets the mapping on:
     * the unlock must not count that mapping twice. */
    m = locked(0, 4096, IoReadAccess);
    a = MmMapLockedPagesSpecifyCache(m, UserMode, MmCached, NULL, FALSE, NormalPagePriority);
    f->fail_unmap = STATUS_INVALID_HANDLE;
    tap_check(a && mdl_unlock(mdl_from_wdm(m)) == STATUS_SUCCESS &&
          mdl_user_mapping_count(mdl_from_wdm(m)) == 0 && f->mapped == 0 && f->locked == 0,
          "unlock after a refused Unmap: no UserMode mapping left, lock and mapping released");
    IoFreeMdl(m);

    m = locked(0, 4096, IoReadAccess);
    KIRQL old;
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    a = MmMapLockedPagesSpecifyCache(m, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    tap_check(a && nbc == 0, "R7: KernelMode map at DISPATCH_LEVEL allowed");
    MmUnmapLockedPages(a, m);
    tap_check(!MmMapLockedPagesSpecifyCache(m, UserMode, MmCached, NULL, FALSE, NormalPagePriority) &&
          got(0xA, (uintptr_t)m) && bc.p[1] == DISPATCH_LEVEL && bc.p[2] == APC_LEVEL,
          "R7: UserMode map at DISPATCH_LEVEL: 0xA (MDL, irql 2, max 1)");
    KeRaiseIrql(DISPATCH_LEVEL + 1, &old);
    tap_check(!MmMapLockedPages(m, KernelMode) && got(0xA, (uintptr_t)m), "R7: KernelMode map above DISPATCH_LEVEL: 0xA");
    KeLowerIrql(PASSIVE_LEVEL);
    MmUnlockPages(m);
    IoFreeMdl(m);

    m = IoAllocateMdl(ram, 10, FALSE, FALSE, NULL);
    tap_check(!MmMapLockedPagesSpecifyCache(m, KernelMode, MmCached, NULL, TRUE, NormalPagePriority) &&
          got(0xC4, MDL_VF_MAP_UNLOCKED), "R1: map of an unlocked MDL: 0xC4/0x1001");
    mdl_verifier_set(0);
    tap_check(!MmGetSystemAddressForMdlSafe(m, NormalPagePriority) && nbc == 0 && mdl_last_status() == STATUS_NOT_LOCKED,
          "R9 / verifier off: unlocked MDL gives NULL + STATUS_NOT_LOCKED, no report");
    mdl_verifier_set(-1);
    IoFreeMdl(m);

    uint8_t *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    m = IoAllocateMdl(hole, 10, FALSE, FALSE, NULL);
    code = 0;
    MDL_TRY {
        MmProbeAndLockPages(m, UserMode, IoReadAccess);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    } MDL_END_TRY;
    tap_check(code == STATUS_ACCESS_VIOLATION && !(m->MdlFlags & MDL_PAGES_LOCKED),
          "MmProbeAndLockPages of an inaccessible buffer raises STATUS_ACCESS_VIOLATION");
    IoFreeMdl(m);
    munmap(hole, 4096);
    mdl_set_bugcheck_handler(NULL, NULL);
}

static void test_leaks(void)
{
    mdl_set_bugcheck_handler(record, NULL);
    struct fake_hostd f2;
    struct mdl_session *s2 = fake_session(&f2, ram, RAM_LEN);
    struct mdl_session *prev = mdl_default_session_peek();
    mdl_set_default_session(s2);
    PMDL m = locked(0, 8192, IoReadAccess);
    mdl_set_default_session(prev);
    mdl_session_close(s2);
    tap_check(nbc == 1 && bc.code == 0x76 && bc.p[2] == 2 && bc.p[3] == 1, "R12: session closed with locked pages: 0x76 (pages 2, MDLs 1)");
    tap_check(!(m->MdlFlags & MDL_PAGES_LOCKED), "the orphaned MDL is no longer locked");
    IoFreeMdl(m);
    nbc = 0;
    s2 = fake_session(&f2, ram, RAM_LEN);
    mdl_set_default_session(s2);
    m = locked(0, 100, IoReadAccess);
    MmGetSystemAddressForMdlSafe(m, NormalPagePriority);
    mdl_set_default_session(prev);
    mdl_session_close(s2);
    tap_check(nbc == 1 && bc.code == 0xCB && bc.p[2] == (uintptr_t)m, "R12: session closed with a mapping: 0xCB (MDL)");
    IoFreeMdl(m);
    mdl_set_bugcheck_handler(NULL, NULL);
}

int main(void)
{
    ram = mmap(NULL, RAM_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct fake_hostd f;
    struct mdl_session *s = fake_session(&f, ram, RAM_LEN);
    if (!tap_check(s != NULL, "session over the fake hostd"))
        return tap_done();
    mdl_set_default_session(s);
    test_verifier_decisions();
    test_success_paths(&f);
    test_failures(&f);
    test_leaks();
    mdl_set_default_session(NULL);
    mdl_session_close(s);
    return tap_done();
}
