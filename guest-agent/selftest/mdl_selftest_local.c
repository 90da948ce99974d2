/* Selftest cases that need no mapping: IRQL (R7), try/except (R6), probes. */
#include <string.h>
#include <sys/mman.h>

#include "mdl_selftest_int.h"

static bool irql_lower_to_higher(struct st *t)
{
    struct st_rec r;
    rec_begin(&r);
    KIRQL old;
    KeRaiseIrql(APC_LEVEL, &old);
    KeLowerIrql(DISPATCH_LEVEL);
    CHECK(t, r.count == 1 && r.last.code == IRQL_NOT_LESS_OR_EQUAL, "no 0xA (count %u code %#x)",
          r.count, r.last.code);
    CHECK(t, KeGetCurrentIrql() == APC_LEVEL, "IRQL changed to %u", KeGetCurrentIrql());
    KeLowerIrql(old);
    CHECK(t, KeGetCurrentIrql() == PASSIVE_LEVEL && r.count == 1, "lowering back failed");
    return true;
}

static bool irql_raise_to_lower(struct st *t)
{
    struct st_rec r;
    rec_begin(&r);
    KIRQL old;
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    KIRQL old2;
    KeRaiseIrql(APC_LEVEL, &old2);
    CHECK(t, r.count == 1 && r.last.code == IRQL_NOT_GREATER_OR_EQUAL, "no 0x9 (count %u)", r.count);
    KeLowerIrql(old);
    return true;
}

static bool irql_per_thread_default(struct st *t)
{
    CHECK(t, KeGetCurrentIrql() == PASSIVE_LEVEL, "IRQL %u at start", KeGetCurrentIrql());
    KIRQL old = KeRaiseIrqlToDpcLevel();
    CHECK(t, old == PASSIVE_LEVEL && KeGetCurrentIrql() == DISPATCH_LEVEL, "raise to DPC level");
    KeLowerIrql(old);
    return true;
}

static bool except_catches(struct st *t)
{
    volatile int handled = 0;
    MDL_TRY {
        ExRaiseStatus(STATUS_INSUFFICIENT_RESOURCES);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        handled = GetExceptionCode() == STATUS_INSUFFICIENT_RESOURCES ? 1 : 2;
    } MDL_END_TRY;
    CHECK(t, handled == 1, "handler %s", handled ? "saw the wrong code" : "did not run");
    CHECK(t, mdl_try_depth() == 0, "try frames left: %u", mdl_try_depth());
    return true;
}

static int only_access_violation(NTSTATUS s)
{
    return s == STATUS_ACCESS_VIOLATION ? EXCEPTION_EXECUTE_HANDLER : EXCEPTION_CONTINUE_SEARCH;
}

static bool except_continue_search(struct st *t)
{
    volatile int inner = 0, outer = 0;
    MDL_TRY {
        MDL_TRY {
            ExRaiseStatus(STATUS_NOT_LOCKED);
        } MDL_EXCEPT(only_access_violation(GetExceptionCode())) {
            inner = 1;
        } MDL_END_TRY;
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        outer = GetExceptionCode() == STATUS_NOT_LOCKED;
    } MDL_END_TRY;
    CHECK(t, !inner && outer, "inner %d outer %d", inner, outer);
    CHECK(t, mdl_try_depth() == 0, "try frames left: %u", mdl_try_depth());
    return true;
}

static bool probe_unmapped_raises(struct st *t)
{
    uint8_t *p = mmap(NULL, 2 * MDL_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(t, p != MAP_FAILED, "mmap");
    munmap(p + MDL_PAGE_SIZE, MDL_PAGE_SIZE);   /* the buffer runs into a hole */
    PMDL m = IoAllocateMdl(p + 100, MDL_PAGE_SIZE, FALSE, FALSE, NULL);
    volatile NTSTATUS code = 0;
    MDL_TRY {
        MmProbeAndLockPages(m, KernelMode, IoReadAccess);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    } MDL_END_TRY;
    bool locked = m->MdlFlags & MDL_PAGES_LOCKED;
    IoFreeMdl(m);
    munmap(p, MDL_PAGE_SIZE);
    CHECK(t, code == STATUS_ACCESS_VIOLATION, "raised 0x%08X", (uint32_t)code);
    CHECK(t, !locked, "MDL_PAGES_LOCKED set after a failed probe");
    return true;
}

static bool probe_readonly_for_write_raises(struct st *t)
{
    uint8_t *p = mmap(NULL, MDL_PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(t, p != MAP_FAILED, "mmap");
    PMDL m = IoAllocateMdl(p, 16, FALSE, FALSE, NULL);
    volatile NTSTATUS code = 0;
    MDL_TRY {
        MmProbeAndLockPages(m, UserMode, IoWriteAccess);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        code = GetExceptionCode();
    } MDL_END_TRY;
    IoFreeMdl(m);
    munmap(p, MDL_PAGE_SIZE);
    CHECK(t, code == STATUS_ACCESS_VIOLATION, "raised 0x%08X", (uint32_t)code);
    return true;
}

static bool mdl_arithmetic(struct st *t)
{
    uint8_t *base = (uint8_t *)(uintptr_t)0x10000;
    CHECK(t, ADDRESS_AND_SIZE_TO_SPAN_PAGES(base + 4094, 3) == 2, "3 bytes across a page boundary");
    CHECK(t, ADDRESS_AND_SIZE_TO_SPAN_PAGES(base, 4096) == 1, "one full page");
    CHECK(t, ADDRESS_AND_SIZE_TO_SPAN_PAGES(base + 1, 4096) == 2, "one page, unaligned");
    PMDL m = IoAllocateMdl(base + 4094, 3, FALSE, FALSE, NULL);
    CHECK(t, m, "IoAllocateMdl");
    bool ok = m->StartVa == base && m->ByteOffset == 4094 && m->ByteCount == 3 &&
              MmGetMdlVirtualAddress(m) == base + 4094 && (void *)MmGetMdlPfnArray(m) == (void *)(m + 1) &&
              m->Size == (CSHORT)(sizeof(MDL) + 2 * sizeof(PFN_NUMBER)) && m->MdlFlags == 0;
    IoFreeMdl(m);
    CHECK(t, ok, "MDL fields wrong");
    CHECK(t, !IoAllocateMdl(base, 0, FALSE, FALSE, NULL), "zero length accepted");
    return true;
}

const struct st_case st_cases_local[] = {
    { "R1", "MDL arithmetic: 3 bytes across a page boundary span 2 pages", mdl_arithmetic, false },
    { "R6", "MDL_TRY/MDL_EXCEPT catches a raised status", except_catches, false },
    { "R6", "EXCEPTION_CONTINUE_SEARCH passes to the outer handler", except_continue_search, false },
    { "R6", "MmProbeAndLockPages of an unmapped buffer raises STATUS_ACCESS_VIOLATION",
      probe_unmapped_raises, false },
    { "R6", "IoWriteAccess probe of a read-only buffer raises STATUS_ACCESS_VIOLATION",
      probe_readonly_for_write_raises, false },
    { "R7", "IRQL is per thread, PASSIVE_LEVEL by default", irql_per_thread_default, false },
    { "R7", "KeLowerIrql to a higher level bug checks 0xA", irql_lower_to_higher, false },
    { "R7", "KeRaiseIrql to a lower level bug checks 0x9", irql_raise_to_lower, false },
    { 0, 0, 0, false },
};
