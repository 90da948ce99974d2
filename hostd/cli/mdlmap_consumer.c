/* UserMode consumer: maps the runs hostd sends at the requested address
 * (MAP_FIXED_NOREPLACE) or anywhere, and answers with the base address. */
#include "mdlmap_consumer.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "usock.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

int mdlmap_consumer_register(struct mdlmap_consumer *co, struct mdlmap_client *cl, const char *name,
                             mdlmap_consumer_cb cb, void *ctx)
{
    memset(co, 0, sizeof(*co));
    co->cl = cl;
    co->cb = cb;
    co->cb_ctx = ctx;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *r;
    Mdlmap__V1__RegisterConsumerRequest rq = MDLMAP__V1__REGISTER_CONSUMER_REQUEST__INIT;
    rq.name = (char *)name;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER;
    env.register_consumer = &rq;
    int rc = mdlmap_client_call(cl, &env, &r);
    if (rc == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER_REPLY)
        co->id = r->register_consumer_reply->consumer_id;
    frame_envelope_free(r);
    return rc;
}

static int reply(struct mdlmap_consumer *co, uint64_t id, int32_t status, const char *detail, uint64_t base,
                 bool is_map)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapIntoResponse mr = MDLMAP__V1__MAP_INTO_RESPONSE__INIT;
    Mdlmap__V1__UnmapFromResponse ur = MDLMAP__V1__UNMAP_FROM_RESPONSE__INIT;
    env.version = MDLMAP_PROTO_VERSION;
    env.request_id = id;
    env.status = status;
    env.detail = (char *)(detail ? detail : "");
    if (is_map) {
        mr.base_address = base;
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_INTO_REPLY;
        env.map_into_reply = &mr;
    } else {
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_FROM_REPLY;
        env.unmap_from_reply = &ur;
    }
    return frame_write_fd(co->cl->fd, &env);
}

static int do_map(struct mdlmap_consumer *co, const Mdlmap__V1__MapIntoRequest *rq, uint64_t id, const int *fds,
                  unsigned nfds)
{
    char detail[160] = "";
    int32_t st = 0;
    uint8_t *base = MAP_FAILED;
    size_t len = (size_t)rq->length;
    if (len == 0 || (len & 4095) || rq->byte_offset >= 4096 || (uint64_t)rq->byte_offset + rq->byte_count > len) {
        st = MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER;
        snprintf(detail, sizeof(detail), "bad geometry");
    }
    if (!st) {
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        void *want = (void *)(uintptr_t)rq->requested_address;
        if (want)
            flags |= MAP_FIXED_NOREPLACE;
        base = mmap(want, len, PROT_NONE, flags, -1, 0);
        if (base == MAP_FAILED || (want && (void *)base != want)) {
            int e = base == MAP_FAILED ? errno : EEXIST;
            if (base != MAP_FAILED)
                munmap(base, len); /* old kernels ignore NOREPLACE and return another address */
            base = MAP_FAILED;
            st = e == EEXIST ? MDLMAP__V1__NT_STATUS__STATUS_CONFLICTING_ADDRESSES
                             : MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES;
            snprintf(detail, sizeof(detail), "reserving %zu bytes at %p: %s", len, want, strerror(e));
        }
    }
    int prot = rq->read_only ? PROT_READ : PROT_READ | PROT_WRITE;
    for (size_t i = 0; !st && i < rq->n_runs; i++) {
        const Mdlmap__V1__MapIntoRun *r = rq->runs[i];
        if (r->fd_index >= nfds || r->offset > len || r->length > len - r->offset || (r->offset & 4095) ||
            (r->length & 4095) || (r->fd_offset & 4095)) {
            st = MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER;
            snprintf(detail, sizeof(detail), "bad run %zu", i);
            break;
        }
        if (mmap(base + r->offset, r->length, prot, MAP_SHARED | MAP_FIXED, fds[r->fd_index], (off_t)r->fd_offset) ==
            MAP_FAILED) {
            st = MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES;
            snprintf(detail, sizeof(detail), "mapping run %zu: %s", i, strerror(errno));
        }
    }
    struct mdlmap_consumer_map *m = NULL;
    if (!st && co->nmaps == co->cap) {
        size_t cap = co->cap ? co->cap * 2 : 8;
        void *t = realloc(co->maps, cap * sizeof(*co->maps));
        if (t) {
            co->maps = t;
            co->cap = cap;
        }
    }
    if (!st && co->nmaps < co->cap) {
        m = &co->maps[co->nmaps++];
        memset(m, 0, sizeof(*m));
        m->map_handle = rq->map_handle;
        m->base = base;
        m->length = len;
        m->buffer = base + rq->byte_offset;
        m->byte_count = rq->byte_count;
        m->read_only = rq->read_only;
        snprintf(m->vm_name, sizeof(m->vm_name), "%s", rq->vm_name ? rq->vm_name : "");
        m->guest_cid = rq->guest_cid;
        m->runs = (unsigned)rq->n_runs;
    } else if (!st) {
        st = MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES;
        snprintf(detail, sizeof(detail), "out of memory");
    }
    if (st && base != MAP_FAILED)
        munmap(base, len);
    int rc = reply(co, id, st, detail, st ? 0 : (uint64_t)(uintptr_t)base, true);
    if (m && co->cb)
        co->cb(co->cb_ctx, m, true);
    return rc;
}

static int do_unmap(struct mdlmap_consumer *co, const Mdlmap__V1__UnmapFromRequest *rq, uint64_t id)
{
    for (size_t i = 0; i < co->nmaps; i++) {
        struct mdlmap_consumer_map *m = &co->maps[i];
        if (m->map_handle != rq->map_handle)
            continue;
        if (co->cb)
            co->cb(co->cb_ctx, m, false);
        munmap(m->base, m->length);
        co->maps[i] = co->maps[--co->nmaps];
        return reply(co, id, 0, NULL, 0, false);
    }
    return reply(co, id, MDLMAP__V1__NT_STATUS__STATUS_NOT_MAPPED_VIEW, "no such mapping here", 0, false);
}

int mdlmap_consumer_serve(struct mdlmap_consumer *co, int timeout_ms)
{
    struct pollfd pfd = { .fd = co->cl->fd, .events = POLLIN };
    int pr = poll(&pfd, 1, timeout_ms);
    if (pr < 0)
        return errno == EINTR ? -ETIMEDOUT : -errno;
    if (pr == 0)
        return -ETIMEDOUT;
    struct usock_fds fds = { .n = 0 };
    mdl_envelope *env = NULL;
    int rc = frame_read_fd_fds(co->cl->fd, &env, &fds);
    if (rc == 0) {
        if (env->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_INTO)
            rc = do_map(co, env->map_into, env->request_id, fds.fd, fds.n);
        else if (env->body_case == MDLMAP__V1__ENVELOPE__BODY_UNMAP_FROM)
            rc = do_unmap(co, env->unmap_from, env->request_id);
    }
    frame_envelope_free(env);
    usock_fds_close(&fds); /* the mappings keep the files */
    return rc;
}

void mdlmap_consumer_fini(struct mdlmap_consumer *co)
{
    for (size_t i = 0; i < co->nmaps; i++)
        munmap(co->maps[i].base, co->maps[i].length);
    free(co->maps);
    co->maps = NULL;
    co->nmaps = co->cap = 0;
}
