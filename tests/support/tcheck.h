/* Minimal TAP output for the libmdlmap host tests. */
#pragma once
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static int t_num, t_failed;

__attribute__((format(printf, 2, 3), unused))
static bool check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", ok ? "ok" : "not ok", ++t_num);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok)
        t_failed++;
    return ok;
}

__attribute__((unused)) static int check_done(void)
{
    printf("1..%d\n", t_num);
    return t_failed ? 1 : 0;
}
