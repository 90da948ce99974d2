/* Shared fixtures of the selftest suite. */
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "mdl_selftest.h"
#include "wdm_compat.h"

struct st {
    const struct mdl_selftest_env *env;
    char why[256];
};

struct st_case {
    const char *id;       /* "R5" */
    const char *desc;
    bool (*fn)(struct st *t);
    bool needs_own_session;   /* opens a second hostd connection (guest only) */
};

/* A buffer, its MDL, and what a test mapped. */
struct fx {
    uint8_t *buf;
    size_t npages;
    bool own_mmap;
    PMDL mdl;
};

/* Fail the test with a reason (printf-style); always returns false. */
bool st_fail(struct st *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define CHECK(t, cond, ...) do { if (!(cond)) return st_fail((t), __VA_ARGS__); } while (0)

/* Buffer of npages, MDL over [off, off+len), probed and locked with op.
 * false (with t->why) on failure; fx_done releases whatever is left. */
bool fx_lock(struct st *t, struct fx *f, size_t npages, size_t off, size_t len, LOCK_OPERATION op);
/* Only the buffer and an unlocked MDL. */
bool fx_alloc(struct st *t, struct fx *f, size_t npages, size_t off, size_t len);
void fx_done(struct st *t, struct fx *f);

/* Bug check recorder: install, read, remove. */
struct st_rec {
    unsigned count;
    struct mdl_bugcheck last;
};
void rec_begin(struct st_rec *r);
void rec_end(void);

/* Run fn in a forked child with the default bug check handler; *status gets
 * the exit status (or 128+signal), out the child's stderr (NUL-terminated). */
int st_child(void (*fn)(void *), void *arg, int *status, char *out, size_t outlen);

/* A second session to hostd (its own connection), or NULL if unavailable. */
struct mdl_session *st_open_session(struct st *t);

extern const struct st_case st_cases_map[], st_cases_fail[], st_cases_local[];
