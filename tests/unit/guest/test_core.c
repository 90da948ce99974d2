/* libmdlmap without hostd: MDL arithmetic, IRQL emulation, try/except,
 * bug check hook and its default action. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "wdm_compat.h"

static struct mdl_bugcheck last_bc;
static unsigned n_bc;
static void record(const struct mdl_bugcheck *bc, void *ctx)
{
    (void)ctx;
    last_bc = *bc;
    n_bc++;
}

static void test_arithmetic(void)
{
    uint8_t *base = (uint8_t *)(uintptr_t)0x200000;
    tap_check(ADDRESS_AND_SIZE_TO_SPAN_PAGES(base + 4094, 3) == 2, "unaligned 3-byte buffer across a page boundary spans 2 pages");
    tap_check(ADDRESS_AND_SIZE_TO_SPAN_PAGES(base + 4093, 3) == 1, "3 bytes ending at the page end span 1 page");
    tap_check(ADDRESS_AND_SIZE_TO_SPAN_PAGES(base, 8192) == 2 && ADDRESS_AND_SIZE_TO_SPAN_PAGES(base + 1, 8192) == 3,
          "8 KiB aligned: 2 pages, unaligned: 3");
    tap_check(BYTE_OFFSET(base + 0x1234) == 0x234 && PAGE_ALIGN(base + 0x1234) == base + 0x1000, "BYTE_OFFSET/PAGE_ALIGN");
    PMDL m = IoAllocateMdl(base + 4094, 3, FALSE, FALSE, NULL);
    tap_check(m && m->StartVa == base && m->ByteOffset == 4094 && m->ByteCount == 3 && m->MdlFlags == 0,
          "IoAllocateMdl: StartVa page-aligned, ByteOffset, ByteCount, no flags");
    tap_check(m && (void *)MmGetMdlPfnArray(m) == (void *)(m + 1) && MmGetMdlVirtualAddress(m) == base + 4094 &&
          MmGetMdlByteCount(m) == 3 && MmGetMdlByteOffset(m) == 4094, "PFN array follows the MDL; accessors");
    tap_check(m && m->Size == (CSHORT)(sizeof(MDL) + 2 * sizeof(PFN_NUMBER)), "Size = MDL + 2 PFNs (%d)", m ? m->Size : -1);
    tap_check(sizeof(MDL) == 48 && offsetof(MDL, ByteOffset) == 44, "MDL has the x64 Windows layout");
    IoFreeMdl(m);
    tap_check(!IoAllocateMdl(base, 0, FALSE, FALSE, NULL), "zero-length MDL refused");
}

static void *thread_irql(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)KeGetCurrentIrql();
}

static void test_irql(void)
{
    mdl_set_bugcheck_handler(record, NULL);
    n_bc = 0;
    KIRQL old;
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    tap_check(old == PASSIVE_LEVEL && KeGetCurrentIrql() == DISPATCH_LEVEL, "KeRaiseIrql to DISPATCH_LEVEL");
    pthread_t th;
    void *other;
    pthread_create(&th, NULL, thread_irql, NULL);
    pthread_join(th, &other);
    tap_check((uintptr_t)other == PASSIVE_LEVEL, "IRQL is per thread (other thread at PASSIVE_LEVEL)");
    KeLowerIrql(HIGH_LEVEL);
    tap_check(n_bc == 1 && last_bc.code == 0xA && last_bc.p[0] == HIGH_LEVEL && last_bc.p[1] == DISPATCH_LEVEL,
          "KeLowerIrql to a higher level: bug check 0xA (new, current)");
    tap_check(KeGetCurrentIrql() == DISPATCH_LEVEL, "IRQL unchanged after the refused lowering");
    KIRQL o2;
    KeRaiseIrql(APC_LEVEL, &o2);
    tap_check(n_bc == 2 && last_bc.code == 0x9, "KeRaiseIrql to a lower level: bug check 0x9");
    tap_check(mdl_irql_check(DISPATCH_LEVEL, 1, 2) && n_bc == 2, "check at the limit passes");
    tap_check(!mdl_irql_check(APC_LEVEL, 0x1234, 7) && n_bc == 3 && last_bc.code == 0xA && last_bc.p[0] == 0x1234 &&
          last_bc.p[1] == DISPATCH_LEVEL && last_bc.p[2] == APC_LEVEL && last_bc.p[3] == 7,
          "check above the limit: 0xA (object, irql, max, routine)");
    KeLowerIrql(old);
    tap_check(KeGetCurrentIrql() == PASSIVE_LEVEL, "back to PASSIVE_LEVEL");
    mdl_set_bugcheck_handler(NULL, NULL);
}

static int filter_calls;
static int filter(NTSTATUS s, NTSTATUS want)
{
    filter_calls++;
    return s == want ? EXCEPTION_EXECUTE_HANDLER : EXCEPTION_CONTINUE_SEARCH;
}

static void *thread_try(void *arg)
{
    volatile intptr_t got = 0;
    MDL_TRY {
        ExRaiseStatus((NTSTATUS)(intptr_t)arg);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        got = GetExceptionCode();
    } MDL_END_TRY;
    return (void *)got;
}

static void test_try(void)
{
    volatile int where = 0;
    MDL_TRY {
        where = 1;
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        where = 2;
    } MDL_END_TRY;
    tap_check(where == 1 && mdl_try_depth() == 0, "no exception: body runs, handler does not, frame popped");
    volatile int inner = 0, outer = 0;
    MDL_TRY {
        MDL_TRY {
            ExRaiseStatus(STATUS_NOT_LOCKED);
        } MDL_EXCEPT(filter(GetExceptionCode(), STATUS_ACCESS_VIOLATION)) {
            inner = 1;
        } MDL_END_TRY;
    } MDL_EXCEPT(filter(GetExceptionCode(), STATUS_NOT_LOCKED)) {
        outer = GetExceptionCode() == STATUS_NOT_LOCKED;
    } MDL_END_TRY;
    tap_check(!inner && outer && filter_calls == 2, "CONTINUE_SEARCH reaches the outer frame, filters ran twice");
    tap_check(mdl_try_depth() == 0, "frames balanced after nested raise");
    pthread_t th;
    void *got;
    pthread_create(&th, NULL, thread_try, (void *)(intptr_t)STATUS_QUOTA_EXCEEDED);
    pthread_join(th, &got);
    tap_check((NTSTATUS)(intptr_t)got == STATUS_QUOTA_EXCEEDED, "frames are per thread");
}

static int run_child(void (*fn)(void), char *out, size_t len)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        fn();
        _exit(0);
    }
    close(p[1]);
    ssize_t n, tot = 0;
    while ((n = read(p[0], out + tot, len - 1 - (size_t)tot)) > 0)
        tot += n;
    out[tot] = 0;
    close(p[0]);
    int ws;
    waitpid(pid, &ws, 0);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static void child_unhandled(void) { ExRaiseStatus(STATUS_ACCESS_VIOLATION); }
static void child_bugcheck(void) { KeBugCheckEx(0xC4, 0x1004, 0x10, 0x2, 0); }

static void test_process_death(void)
{
    char out[512];
    int st = run_child(child_unhandled, out, sizeof(out));
    tap_check(st == MDL_EXCEPTION_EXIT && strstr(out, "*** UNHANDLED EXCEPTION 0xC0000005 (STATUS_ACCESS_VIOLATION)"),
          "unhandled exception: message, exit %d (got %d)", MDL_EXCEPTION_EXIT, st);
    st = run_child(child_bugcheck, out, sizeof(out));
    tap_check(st == MDL_BUGCHECK_EXIT &&
          strstr(out, "*** BUGCHECK 0x000000C4 (0x0000000000001004,0x0000000000000010,0x0000000000000002,"
                      "0x0000000000000000) DRIVER_VERIFIER_DETECTED_VIOLATION"),
          "default bug check: code and parameters printed, exit %d (got %d)", MDL_BUGCHECK_EXIT, st);
    mdl_set_bugcheck_handler(record, NULL);
    n_bc = 0;
    KeBugCheckEx(0x3F, 1, 2, 3, 4);
    tap_check(n_bc == 1 && last_bc.code == 0x3F && last_bc.p[3] == 4, "a registered handler replaces the default");
    mdl_set_bugcheck_handler(NULL, NULL);
}

int main(void)
{
    test_arithmetic();
    test_irql();
    test_try();
    test_process_death();
    return tap_done();
}
