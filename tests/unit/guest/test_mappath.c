/* The lean map path (issue 8): map/unmap pairs cost no heap allocation in
 * the steady state, replies are read however the stream cuts them (one byte
 * per read, two replies in one read), a bad length prefix is still a
 * protocol error, and an asynchronous unmap reports hostd's late refusal at
 * the next call (docs/semantics.md). Against the in-process fake hostd. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fake_hostd.h"
#include "frame.h"
#include "mdl_internal.h"
#include "tap.h"
#include "wdm_compat.h"

/* ---- counting the process's heap calls ----
 * Under ASan the sanitizer owns malloc: count through its hooks. Otherwise
 * this executable replaces malloc & co. (glibc supports that) and forwards to
 * glibc's own entry points. Either way every allocation in the process
 * counts: the library, protobuf-c, libc; the fake hostd allocates nothing. */
#if defined(__SANITIZE_ADDRESS__)
#define COUNT_VIA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNT_VIA_ASAN 1
#endif
#endif

static volatile unsigned long n_alloc, n_free;
static volatile int counting;

#ifdef COUNT_VIA_ASAN
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                              void (*f)(const volatile void *));
static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    if (counting)
        n_alloc++;
}
static void on_free(const volatile void *p)
{
    if (counting && p)
        n_free++;
}
static bool counter_init(void)
{
    return __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) != 0;
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
void *malloc(size_t n)
{
    if (counting)
        n_alloc++;
    return __libc_malloc(n);
}
void *calloc(size_t k, size_t n)
{
    if (counting)
        n_alloc++;
    return __libc_calloc(k, n);
}
void *realloc(void *p, size_t n)
{
    if (counting)
        n_alloc++;
    return __libc_realloc(p, n);
}
void free(void *p)
{
    if (counting && p)
        n_free++;
    __libc_free(p);
}
static bool counter_init(void)
{
    return true;
}
#endif

static void count_start(void)
{
    n_alloc = n_free = 0;
    counting = 1;
}
static void count_stop(void)
{
    counting = 0;
}

static struct mdl_bugcheck bc, first_bc;
static unsigned nbc;
static void record(const struct mdl_bugcheck *b, void *ctx)
{
    (void)ctx;
    if (!nbc)
        first_bc = *b;
    bc = *b;
    nbc++;
}

static uint8_t *ram;
#define RAM_LEN (16 * 4096)
static const struct mdl_map_params kparams = { .mode = MDL_KERNEL_MODE, .cache = MDL_CACHED };

static struct mdl *lock_one(struct mdl_session *s)
{
    struct mdl *m = mdl_alloc(ram + 0x123, 4096);
    if (m && !MDL_SUCCESS(mdl_probe_and_lock(s, m, MDL_IO_WRITE))) {
        mdl_free(m);
        return NULL;
    }
    return m;
}

/* A fresh session over f with one locked MDL (NULL, and a failed check). */
static struct mdl *setup(struct fake_hostd *f, struct mdl_session **s, const char *what)
{
    *s = fake_session(f, ram, RAM_LEN);
    struct mdl *m = *s ? lock_one(*s) : NULL;
    tap_check(m != NULL, "%s: session and a locked MDL", what);
    return m;
}

static void unlock_free(struct mdl *m)
{
    if (m) {
        mdl_unlock(m);
        mdl_free(m);
    }
}

/* N map/unmap pairs after a warm-up: no malloc, no free. */
static void test_steady_state(bool async)
{
    struct fake_hostd f;
    struct mdl_session *s;
    struct mdl *m = setup(&f, &s, async ? "async" : "sync");
    if (!m)
        return;
    mdl_session_set_async_unmap(s, async);
    struct mdl_map_info mi;
    bool ok = true;
    for (int i = 0; i < 3; i++)   /* warm-up: buffers and arena reach their size */
        ok &= MDL_SUCCESS(mdl_map(m, &kparams, &mi)) && MDL_SUCCESS(mdl_unmap(m, mi.address));
    const int n = 200;
    unsigned req0 = f.requests;
    count_start();
    for (int i = 0; i < n; i++) {
        ok &= MDL_SUCCESS(mdl_map(m, &kparams, &mi));
        ok &= MDL_SUCCESS(mdl_unmap(m, mi.address));
    }
    count_stop();
    tap_check(ok && f.requests - req0 == 2u * n, "%s: %d map/unmap pairs succeed (%u requests)",
              async ? "async" : "sync", n, f.requests - req0);
    tap_check(n_alloc == 0 && n_free == 0, "%s: no heap allocation in the steady state (%lu allocations, %lu frees)",
              async ? "async" : "sync", (unsigned long)n_alloc, (unsigned long)n_free);
    unlock_free(m);
    mdl_session_close(s);
    tap_check(f.mapped == 0 && f.locked == 0, "%s: nothing left at the fake hostd", async ? "async" : "sync");
}

/* One byte per read: the length prefix and the payload arrive in pieces. */
static void test_split_reply(void)
{
    struct fake_hostd f;
    struct mdl_session *s;
    struct mdl *m = setup(&f, &s, "split");
    if (!m)
        return;
    f.recv_chunk = 1;
    unsigned r0 = f.recvs;
    struct mdl_map_info mi;
    mdl_status st = mdl_map(m, &kparams, &mi);
    tap_check(MDL_SUCCESS(st) && mi.address && f.recvs - r0 > MDLMAP_FRAME_HDR,
              "a reply read one byte at a time decodes (%u reads)", f.recvs - r0);
    f.recv_chunk = 3;   /* the header split across reads, the payload joined to its tail */
    tap_check(MDL_SUCCESS(mdl_unmap(m, mi.address)), "a reply in 3-byte pieces decodes");
    f.recv_chunk = 0;
    r0 = f.recvs;
    st = mdl_map(m, &kparams, &mi);
    tap_check(MDL_SUCCESS(st) && f.recvs - r0 == 1, "a whole reply takes one read (%u)", f.recvs - r0);
    mdl_unmap(m, mi.address);
    unlock_free(m);
    mdl_session_close(s);
}

/* An asynchronous unmap's reply and the next call's arrive in one read. */
static void test_two_in_one_read(void)
{
    struct fake_hostd f;
    struct mdl_session *s;
    struct mdl *m = setup(&f, &s, "pipelined");
    if (!m)
        return;
    mdl_session_set_async_unmap(s, true);
    struct mdl_map_info mi, mi2;
    mdl_map(m, &kparams, &mi);
    unsigned r0 = f.recvs;
    mdl_status st = mdl_unmap(m, mi.address);
    tap_check(st == MDL_STATUS_PENDING && f.recvs == r0, "async unmap returns PENDING without reading");
    tap_check(!(m->flags & MDL_F_MAPPED_TO_SYSTEM_VA) && !m->mapped_system_va, "the mapping is forgotten at once");
    st = mdl_map(m, &kparams, &mi2);
    tap_check(MDL_SUCCESS(st) && mi2.address && f.recvs - r0 == 1,
              "the next map reads both replies in one read (%u) and succeeds", f.recvs - r0);
    tap_check(f.mapped == 1, "hostd saw the unmap then the map (%u mapped)", f.mapped);
    /* Two replies in one read and the second split: 5 bytes cut the map
     * reply's header off the unmap reply's tail. */
    mdl_unmap(m, mi2.address);
    f.recv_chunk = 5;
    st = mdl_map(m, &kparams, &mi);
    tap_check(MDL_SUCCESS(st), "pipelined replies cut at odd places decode");
    f.recv_chunk = 0;
    mdl_unmap(m, mi.address);
    tap_check(mdl_session_flush(s) == MDL_STATUS_SUCCESS && f.mapped == 0, "flush collects the last unmap");
    unlock_free(m);
    mdl_session_close(s);
}

/* A length prefix of 0 or above the maximum is a protocol error, and the
 * stream is not read again. */
static void test_bad_length(uint32_t len, const char *what)
{
    struct fake_hostd f;
    struct mdl_session *s;
    struct mdl *m = setup(&f, &s, what);
    if (!m)
        return;
    uint32_t le = htole32(len);
    fake_inject(&f, &le, sizeof(le));
    struct mdl_map_info mi;
    mdl_status st = mdl_map(m, &kparams, &mi);
    tap_check(st == MDL_STATUS_DEVICE_NOT_READY && strstr(mdl_last_detail(), "transport"),
              "%s: the call fails as a transport error (%s: %s)", what, mdl_status_name(st), mdl_last_detail());
    tap_check(!(m->flags & MDL_F_MAPPED_TO_SYSTEM_VA), "%s: nothing recorded", what);
    unsigned r0 = f.recvs, q0 = f.requests;
    st = mdl_map(m, &kparams, &mi);
    tap_check(st == MDL_STATUS_DEVICE_NOT_READY && f.recvs == r0 && f.requests == q0,
              "%s: the session stays broken, nothing sent or read", what);
    unlock_free(m);
    mdl_session_close(s);
}

/* hostd refuses an asynchronous unmap: reported through the verifier at the
 * next call; with the verifier off, left as that thread's last status. */
static void test_late_failure(void)
{
    mdl_set_bugcheck_handler(record, NULL);
    nbc = 0;
    struct fake_hostd f;
    struct mdl_session *s = fake_session(&f, ram, RAM_LEN);
    struct mdl_session *prev = mdl_default_session_peek();
    mdl_set_default_session(s);
    mdl_session_set_async_unmap(s, true);
    PMDL w = IoAllocateMdl(ram + 0x123, 4096, FALSE, FALSE, NULL);
    MmProbeAndLockPages(w, KernelMode, IoWriteAccess);
    PVOID a = MmMapLockedPagesSpecifyCache(w, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    if (!tap_check(a != NULL, "late: mapped through the Windows routines"))
        return;
    f.fail_unmap = MDL_STATUS_INVALID_PARAMETER;
    MmUnmapLockedPages(a, w);
    tap_check(nbc == 0 && !(w->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA), "MmUnmapLockedPages returns before hostd's answer");
    PVOID b = MmMapLockedPagesSpecifyCache(w, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    tap_check(nbc == 1 && bc.code == 0xC4 && bc.p[0] == MDL_VF_UNMAP_FAILED_LATE && bc.p[1] == (uintptr_t)w &&
                  bc.p[2] == (uintptr_t)a && bc.p[3] == (uint32_t)MDL_STATUS_INVALID_PARAMETER,
              "the next call reports it: 0xC4 (0x1009, MDL, address, status) (%u: %#x %#llx)", nbc, bc.code,
              (unsigned long long)bc.p[0]);
    tap_check(b != NULL, "and the next call itself goes on (map succeeds)");
    nbc = 0;
    /* A local error stays immediate: the wrong address is the verifier's now. */
    MmUnmapLockedPages((char *)b + 1, w);
    tap_check(nbc == 1 && bc.p[0] == MDL_VF_UNMAP_WRONG_ADDRESS, "a wrong address is still reported at once (0x1006)");
    nbc = 0;
    /* A refusal still outstanding at close is reported by the close. */
    f.fail_unmap = MDL_STATUS_NOT_FOUND;
    MmUnmapLockedPages(b, w);
    mdl_session_flush(s);
    tap_check(nbc == 1 && bc.p[0] == MDL_VF_UNMAP_FAILED_LATE && bc.p[3] == (uint32_t)MDL_STATUS_NOT_FOUND,
              "mdl_session_flush collects and reports it");
    nbc = 0;
    /* Verifier off: no bug check; the thread that collects it sees the status. */
    mdl_verifier_set(0);
    a = MmMapLockedPagesSpecifyCache(w, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    f.fail_unmap = MDL_STATUS_INVALID_PARAMETER;
    MmUnmapLockedPages(a, w);
    mdl_set_last_status(MDL_STATUS_SUCCESS, "");
    b = MmMapLockedPagesSpecifyCache(w, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
    tap_check(nbc == 0 && b && mdl_last_status() == MDL_STATUS_INVALID_PARAMETER &&
                  strstr(mdl_last_detail(), "asynchronous unmap"),
              "verifier off: no bug check, last status %s (%s)", mdl_status_name(mdl_last_status()),
              mdl_last_detail());
    mdl_verifier_set(-1);
    /* The last refusal comes at close, before the leak report (the MDL is
     * left locked here). */
    f.fail_unmap = MDL_STATUS_INVALID_PARAMETER;
    MmUnmapLockedPages(b, w);
    nbc = 0;
    mdl_set_default_session(prev);
    mdl_session_close(s);
    tap_check(nbc == 2 && first_bc.code == 0xC4 && first_bc.p[0] == MDL_VF_UNMAP_FAILED_LATE && bc.code == 0x76,
              "a refusal still outstanding is reported at close, then the locked MDL (0x76)");
    IoFreeMdl(w);
    mdl_set_bugcheck_handler(NULL, NULL);
}

/* MDLMAP_ASYNC_UNMAP=1 at open turns it on. */
static void test_env(void)
{
    struct fake_hostd f;
    setenv("MDLMAP_ASYNC_UNMAP", "1", 1);
    struct mdl_session *s = fake_session(&f, ram, RAM_LEN);
    unsetenv("MDLMAP_ASYNC_UNMAP");
    tap_check(s && mdl_session_async_unmap(s), "MDLMAP_ASYNC_UNMAP=1 at open: asynchronous unmap");
    mdl_session_close(s);
    s = fake_session(&f, ram, RAM_LEN);
    tap_check(s && !mdl_session_async_unmap(s), "default: synchronous unmap");
    mdl_session_close(s);
}

int main(void)
{
    ram = mmap(NULL, RAM_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!tap_check(counter_init(), "allocation counter installed"))
        return tap_done();
    test_steady_state(false);
    test_steady_state(true);
    test_split_reply();
    test_two_in_one_read();
    test_bad_length(0, "length 0");
    test_bad_length(MDLMAP_MAX_FRAME + 1, "length above the maximum");
    test_late_failure();
    test_env();
    return tap_done();
}
