#include "tap.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int tap_failures;
int tap_count;

/* Where TAP lines go: stdout, or the real stdout while tap_adopt has
 * redirected fd 1 into its pipe. */
static FILE *tap_out;
static pthread_mutex_t tap_lock = PTHREAD_MUTEX_INITIALIZER;

static FILE *out(void)
{
    return tap_out ? tap_out : stdout;
}

__attribute__((format(printf, 2, 0), nonnull(2))) static bool vcheck(bool cond, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&tap_lock);
    FILE *f = out();
    tap_count++;
    fprintf(f, "%s %d - ", cond ? "ok" : "not ok", tap_count);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    if (!cond)
        tap_failures++;
    fflush(f);
    pthread_mutex_unlock(&tap_lock);
    return cond;
}

bool tap_check(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vcheck(cond, fmt, ap);
    va_end(ap);
    return cond;
}

void tap_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&tap_lock);
    FILE *f = out();
    fputs("# ", f);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
    pthread_mutex_unlock(&tap_lock);
    va_end(ap);
}

int tap_done(void)
{
    FILE *f = out();
    fprintf(f, "1..%d\n", tap_count);
    if (tap_failures)
        fprintf(f, "# FAILED %d of %d checks\n", tap_failures, tap_count);
    else
        fprintf(f, "# all %d checks passed\n", tap_count);
    fflush(f);
    return tap_failures ? 1 : 0;
}

/* __FILE__ carries the build's relative path; the file name is enough. */
static const char *base(const char *file)
{
    const char *s = strrchr(file, '/');
    return s ? s + 1 : file;
}

bool tap_check_expr(bool cond, const char *file, int line, const char *expr)
{
    return tap_check(cond, "%s:%d: %s", base(file), line, expr);
}

bool tap_check_eq(long long a, long long b, const char *file, int line, const char *ea, const char *eb)
{
    if (tap_check(a == b, "%s:%d: %s == %s", base(file), line, ea, eb))
        return true;
    tap_diag("  %s == %lld, expected %s == %lld", ea, a, eb, b);
    return false;
}

/* ---------------------------------------------------------------- adopt */
/* A line that cannot come from the adopted code: tells the reader to stop
 * even if a forked child of that code still holds the pipe open. */
#define ADOPT_END "\n#tap-adopt-end#\n"

static int adopt_saved = -1, adopt_pipe[2] = { -1, -1 };
static pthread_t adopt_thread;

static void adopt_line(char *l)
{
    if (strncmp(l, "ok - ", 5) == 0)
        tap_check(true, "%s", l + 5);
    else if (strncmp(l, "not ok - ", 9) == 0)
        tap_check(false, "%s", l + 9);
    else if (*l)
        tap_diag("%s", l);
}

static void *adopt_reader(void *arg)
{
    FILE *in = fdopen(adopt_pipe[0], "r");
    char line[4096];
    (void)arg;
    while (in && fgets(line, sizeof(line), in)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "#tap-adopt-end#") == 0)
            break;
        adopt_line(line);
    }
    if (in)
        fclose(in);
    else
        close(adopt_pipe[0]);
    return NULL;
}

int tap_adopt_begin(void)
{
    fflush(stdout);
    if (pipe(adopt_pipe) < 0)
        return -1;
    adopt_saved = dup(STDOUT_FILENO);
    FILE *f = adopt_saved >= 0 ? fdopen(adopt_saved, "w") : NULL;
    if (!f)
        goto fail;
    pthread_mutex_lock(&tap_lock);
    tap_out = f;
    pthread_mutex_unlock(&tap_lock);
    if (dup2(adopt_pipe[1], STDOUT_FILENO) < 0 || pthread_create(&adopt_thread, NULL, adopt_reader, NULL) != 0) {
        dup2(adopt_saved, STDOUT_FILENO);
        pthread_mutex_lock(&tap_lock);
        tap_out = NULL;
        pthread_mutex_unlock(&tap_lock);
        fclose(f);
        adopt_saved = -1;
        goto fail;
    }
    return 0;
fail:
    if (adopt_saved >= 0)
        close(adopt_saved);
    adopt_saved = -1;
    close(adopt_pipe[0]);
    close(adopt_pipe[1]);
    return -1;
}

void tap_adopt_end(void)
{
    if (adopt_saved < 0)
        return;
    fputs(ADOPT_END, stdout);
    fflush(stdout);
    pthread_join(adopt_thread, NULL);
    dup2(adopt_saved, STDOUT_FILENO);
    close(adopt_pipe[1]);
    pthread_mutex_lock(&tap_lock);
    FILE *f = tap_out;
    tap_out = NULL;
    pthread_mutex_unlock(&tap_lock);
    fclose(f);   /* closes adopt_saved */
    adopt_saved = -1;
}

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
