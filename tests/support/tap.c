#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

int tap_failures;
int tap_count;

bool tap_check(bool cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap_count++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_count);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!cond)
        tap_failures++;
    fflush(stdout);
    return cond;
}

void tap_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

int tap_done(void)
{
    printf("1..%d\n", tap_count);
    if (tap_failures)
        printf("# FAILED %d of %d checks\n", tap_failures, tap_count);
    else
        printf("# all %d checks passed\n", tap_count);
    fflush(stdout);
    return tap_failures ? 1 : 0;
}

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
