/* Selftest runner and fixtures. */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mdl_selftest_int.h"

bool st_fail(struct st *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->why, sizeof(t->why), fmt, ap);
    va_end(ap);
    return false;
}

static struct st_rec *cur_rec;

static void rec_handler(const struct mdl_bugcheck *bc, void *ctx)
{
    struct st_rec *r = ctx;
    r->count++;
    r->last = *bc;
}

void rec_begin(struct st_rec *r)
{
    memset(r, 0, sizeof(*r));
    cur_rec = r;
    mdl_set_bugcheck_handler(rec_handler, r);
}

void rec_end(void)
{
    cur_rec = NULL;
    mdl_set_bugcheck_handler(NULL, NULL);
}

bool fx_alloc(struct st *t, struct fx *f, size_t npages, size_t off, size_t len)
{
    const struct mdl_selftest_env *e = t->env;
    memset(f, 0, sizeof(*f));
    f->npages = npages;
    if (e->alloc_pages) {
        f->buf = e->alloc_pages(npages, e->alloc_ctx);
    } else {
        void *p = mmap(NULL, npages * MDL_PAGE_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        f->buf = p == MAP_FAILED ? NULL : p;
        f->own_mmap = true;
    }
    CHECK(t, f->buf, "cannot allocate %zu pages", npages);
    memset(f->buf, 0x5a, npages * MDL_PAGE_SIZE);
    f->mdl = IoAllocateMdl(f->buf + off, (ULONG)len, FALSE, FALSE, NULL);
    CHECK(t, f->mdl, "IoAllocateMdl failed");
    return true;
}

bool fx_lock(struct st *t, struct fx *f, size_t npages, size_t off, size_t len, LOCK_OPERATION op)
{
    if (!fx_alloc(t, f, npages, off, len))
        return false;
    volatile NTSTATUS st = STATUS_SUCCESS;
    MDL_TRY {
        MmProbeAndLockPages(f->mdl, KernelMode, op);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        st = GetExceptionCode();
    } MDL_END_TRY;
    CHECK(t, NT_SUCCESS(st), "MmProbeAndLockPages raised 0x%08X (%s) %s", (uint32_t)st,
          mdl_status_name(st), mdl_last_detail());
    return true;
}

void fx_done(struct st *t, struct fx *f)
{
    if (f->mdl) {
        struct mdl *m = mdl_from_wdm(f->mdl);
        while (mdl_user_mapping_count(m) || (m->flags & MDL_F_MAPPED_TO_SYSTEM_VA)) {
            struct mdl_map_info mi;
            if (!mdl_find_mapping(m, 0, &mi) && !mdl_user_mapping_count(m))
                break;
            if (m->flags & MDL_F_MAPPED_TO_SYSTEM_VA)
                mdl_unmap(m, (uint64_t)(uintptr_t)m->mapped_system_va);
            else
                break;   /* mdl_unlock removes UserMode mappings */
        }
        if (m->flags & MDL_F_PAGES_LOCKED)
            mdl_unlock(m);
        mdl_free(m);
    }
    if (f->buf) {
        if (f->own_mmap)
            munmap(f->buf, f->npages * MDL_PAGE_SIZE);
        else
            t->env->free_pages(f->buf, f->npages, t->env->alloc_ctx);
    }
    memset(f, 0, sizeof(*f));
}

int st_child(void (*fn)(void *), void *arg, int *status, char *out, size_t outlen)
{
    int pfd[2];
    if (pipe(pfd) < 0)
        return -errno;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        mdl_set_bugcheck_handler(NULL, NULL);
        fn(arg);
        _exit(0);
    }
    close(pfd[1]);
    size_t n = 0;
    for (;;) {
        /* Until EOF (the child's exit closes the pipe): waitpid below waits
         * for the child anyway, so a timeout here would only cut its output
         * short on a slow machine. */
        ssize_t r = read(pfd[0], out + n, outlen - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n >= outlen - 1)
            break;
    }
    out[n] = 0;
    close(pfd[0]);
    int ws;
    if (waitpid(pid, &ws, 0) < 0)
        return -errno;
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    return 0;
}

struct mdl_session *st_open_session(struct st *t)
{
    if (t->env->open_session)
        return t->env->open_session(t->env->alloc_ctx);
    struct mdl_session *s = NULL;
    int rc = mdl_session_open_vsock(NULL, &s);
    return mdl_selftest_opened("vsock session", rc, s);
}

struct mdl_session *mdl_selftest_opened(const char *what, int rc, struct mdl_session *s)
{
    if (rc < 0) {
        char why[96];
        snprintf(why, sizeof(why), "%s: %s%s%s", what, strerror(-rc), *mdl_last_detail() ? ", " : "",
                 mdl_last_detail());
        mdl_set_last_status(MDL_STATUS_DEVICE_NOT_READY, why);
    }
    return rc == 0 ? s : NULL;
}

static bool matches(const char *filter, const struct st_case *c)
{
    if (!filter || !*filter)
        return true;
    if (!strcmp(filter, c->id))
        return true;
    /* "R1" must not select R10..R13: match a prefix only when the id is longer. */
    return strstr(c->desc, filter) != NULL;
}

int mdl_selftest_run(const struct mdl_selftest_env *env)
{
    const struct st_case *groups[] = { st_cases_local, st_cases_map, st_cases_fail };
    struct mdl_session *saved = mdl_default_session_peek();
    mdl_set_default_session(env->session);
    unsigned pass = 0, failed = 0;
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++)
        for (const struct st_case *c = groups[g]; c->fn; c++) {
            if (!matches(env->filter, c))
                continue;
            struct st t = { .env = env };
            mdl_verifier_set(1);
            mdl_session_set_consumer(env->session, "");
            bool ok = c->fn(&t);
            rec_end();
            mdl_verifier_set(-1);
            while (mdl_irql_get() > PASSIVE_LEVEL)
                mdl_irql_lower(PASSIVE_LEVEL);
            if (ok) {
                pass++;
                printf("ok - %s %s\n", c->id, c->desc);
            } else {
                failed++;
                printf("not ok - %s %s: %s\n", c->id, c->desc, t.why);
            }
            fflush(stdout);
        }
    printf("%u passed, %u failed\n", pass, failed);
    fflush(stdout);
    mdl_set_default_session(saved);
    return (int)failed;
}
