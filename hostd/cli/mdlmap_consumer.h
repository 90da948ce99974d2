/* UserMode consumer side of the host client library: register under a name,
 * then serve hostd's MapInto / UnmapFrom pushes (region fds arrive with
 * SCM_RIGHTS). Mapped buffers live in this process. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdlmap_client.h"

struct mdlmap_consumer_map {
    uint64_t map_handle;
    uint8_t *base;          /* page-aligned start in this process */
    size_t length;
    uint8_t *buffer;        /* base + byte_offset: what the guest's MDL describes */
    uint32_t byte_count;
    bool read_only;
    char vm_name[64];
    uint64_t guest_cid;
    unsigned runs;
};

/* mapped: true after a MapInto was served, false just before an UnmapFrom. */
typedef void (*mdlmap_consumer_cb)(void *ctx, const struct mdlmap_consumer_map *m, bool mapped);

struct mdlmap_consumer {
    struct mdlmap_client *cl;
    uint64_t id;
    struct mdlmap_consumer_map *maps;
    size_t nmaps, cap;
    mdlmap_consumer_cb cb;
    void *cb_ctx;
};

/* Register name on the open client. 0, -EREMOTEIO (status in cl->last_status). */
int mdlmap_consumer_register(struct mdlmap_consumer *co, struct mdlmap_client *cl, const char *name,
                             mdlmap_consumer_cb cb, void *ctx);
/* Wait up to timeout_ms (-1: forever) for one push and serve it.
 * 0 served, -ETIMEDOUT nothing came, -ECONNRESET hostd closed, other -errno. */
int mdlmap_consumer_serve(struct mdlmap_consumer *co, int timeout_ms);
/* Unmap everything still mapped. */
void mdlmap_consumer_fini(struct mdlmap_consumer *co);
