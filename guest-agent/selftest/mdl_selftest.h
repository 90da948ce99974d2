/* The conformance suite of the MDL rules R1..R13 (docs/semantics.md).
 * Prints one TAP-like line per test ("ok - R3 ..." / "not ok - ...") and
 * "N passed, M failed". Tests whose subject is process death run in a forked
 * child. Needs a live hostd behind env->session. */
#pragma once
#include <stdbool.h>

#include "mdlmap.h"

struct mdl_selftest_env {
    struct mdl_session *session;   /* becomes the default session while running */
    const char *filter;            /* run only tests whose id contains this (e.g. "R5") */
    /* Buffer allocator: NULL = anonymous mmap (guest); the harness passes one
     * that carves page-aligned buffers out of its fake guest RAM. */
    void *(*alloc_pages)(size_t npages, void *ctx);
    void (*free_pages)(void *p, size_t npages, void *ctx);
    void *alloc_ctx;
    /* A second, independent session (own connection) for the R12 tests;
     * NULL: AF_VSOCK. */
    struct mdl_session *(*open_session)(void *ctx);
};

/* For open_session callbacks: the session open by rc (0 or -errno) gave s;
 * on failure, records why as the last status (named by what) for the R12
 * test's message. Returns s or NULL. */
struct mdl_session *mdl_selftest_opened(const char *what, int rc, struct mdl_session *s);

/* Returns the number of failed tests (0: all passed). */
int mdl_selftest_run(const struct mdl_selftest_env *env);
