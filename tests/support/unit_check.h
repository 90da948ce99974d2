/* Minimal check helpers for the unit tests: print every check, count failures. */
#pragma once
#include <stdio.h>

static int unit_failures, unit_checks;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        unit_checks++;                                                                   \
        if (cond) {                                                                      \
            printf("ok   %s:%d %s\n", __FILE__, __LINE__, #cond);                        \
        } else {                                                                         \
            unit_failures++;                                                             \
            printf("FAIL %s:%d %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                \
    } while (0)

#define UNIT_DONE()                                                                      \
    (printf("%d checks, %d failures\n", unit_checks, unit_failures), unit_failures ? 1 : 0)
