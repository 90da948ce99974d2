/* Minimal TAP-like reporting for the harness tests: "ok - ..." / "not ok - ...".
 * A test binary exits nonzero when any check failed. */
#pragma once
#include <stdbool.h>

extern int tap_failures;
extern int tap_count;

/* Report one check; returns cond so callers can branch on it. */
bool tap_check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Informational line ("# ..."). */
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print the summary; returns the exit code (0 only if nothing failed). */
int tap_done(void);

/* Monotonic milliseconds. */
long long now_ms(void);
