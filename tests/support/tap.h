/* The check dialect of every C test (TAP):
 *   ok N - what          one line per check, passed or not
 *   not ok N - what
 *   # ...                diagnostics (why a check failed, progress)
 *   1..N                 the plan, printed last by tap_done()
 * A test binary ends with `return tap_done();`: exit status 1 when any check
 * failed, else 0. Single-threaded use, except that tap_check/tap_diag may be
 * called from the tap_adopt reader thread (they are serialised). */
#pragma once
#include <stdbool.h>

extern int tap_failures;
extern int tap_count;

/* Report one check; returns cond so callers can branch on it. */
bool tap_check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Informational line ("# ..."). */
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2), nonnull(1)));
/* Print the plan and a summary; returns the exit code (0 only if nothing failed). */
int tap_done(void);

/* CHECK(cond): a check described by its source position and expression.
 * CHECK_EQ(a, b): compares as long long; on failure a "#" line shows both
 * expressions and their values. Both return whether the check passed. */
#define CHECK(cond) tap_check_expr(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_EQ(a, b) tap_check_eq((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)
bool tap_check_expr(bool cond, const char *file, int line, const char *expr);
bool tap_check_eq(long long a, long long b, const char *file, int line, const char *ea, const char *eb);

/* Code that prints its own "ok - what" / "not ok - what" lines (the guest
 * library's selftest, which the tests cannot change): between begin and end,
 * stdout goes through a pipe and each such line becomes a numbered check
 * here, anything else a "#" line, so the plan counts them too. */
int tap_adopt_begin(void);
void tap_adopt_end(void);

/* Monotonic milliseconds. */
long long now_ms(void);
