/* Figures of the harness-driven benchmarks: one line per measured quantity,
 * median, min and max over the runs, and the number of runs. */
#pragma once
#include <stdio.h>
#include <stdlib.h>

static int bench_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v (n > 0 values) and prints "what median M min A max B unit (runs n)". */
static inline void bench_report(const char *what, const char *unit, double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), bench_cmp_d);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    printf("%-34s median %9.2f  min %9.2f  max %9.2f %s  (runs %u)\n", what, med, v[0], v[n - 1], unit, n);
}
