/* UserMode consumers on the host API: registration, MapInto/UnmapFrom pushes
 * (the region fds travel with SCM_RIGHTS), and the consumers' answers.
 * A consumer can map any part of the regions whose fds it receives: that is
 * what it is trusted with (docs/architecture.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host_api_int.h"
#include "log.h"
#include "map_engine.h"
#include "fconn.h"

/* Queue a message for the consumer (takes fds). tag: a MapInto's map
 * handle, which may be withdrawn and must fit the queue's bound; 0: an
 * UnmapFrom, always queued (bounded by the consumer's mappings). */
static int push(struct api_client *c, mdl_envelope *env, const int *fds, unsigned nfds, uint64_t tag)
{
    uint8_t *f;
    size_t n;
    env->version = MDLMAP_PROTO_VERSION;
    env->detail = "";
    int rc = frame_encode(env, &f, &n);
    const struct outq *q = &c->fc.out;
    if (rc == 0 && tag && !outq_empty(q) &&
        (q->nfds + nfds > API_CONSUMER_QUEUE_FDS || q->bytes + n > API_CONSUMER_QUEUE_BYTES)) {
        free(f);
        rc = -ENOSPC;
        if (!c->over_since_ms) {
            c->over_since_ms = map_now_ms();
            c->sent_at_over = c->sent_bytes;
            log_warn_limited(&c->api->refuse_log, "api: connection drops",
                             "api: consumer (pid %d) is not reading: %u fds, %zu bytes queued; refusing maps",
                             (int)c->peer.pid, q->nfds, q->bytes);
            api_timer_arm(c->api);
        }
    }
    if (rc < 0) {
        for (unsigned i = 0; i < nfds; i++)
            close(fds[i]);
        return rc;
    }
    rc = fconn_push(&c->fc, f, n, fds, nfds, tag);
    if (rc == 0)
        api_client_arm(c); /* the event loop flushes: never close from here */
    return rc;
}

int api_reopen_read_only(int fd)
{
    char path[40];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    return open(path, O_RDONLY | O_CLOEXEC);
}

static int map_into(void *ctx, const struct map_obj *mo, const struct map_run *runs, uint32_t nruns)
{
    struct map_info mi, *m = &mi;
    map_obj_info(mo, m);
    struct api_client *c = ctx;
    if (c->dead || c->fc.closing)
        return -ENOTCONN;
    Mdlmap__V1__MapIntoRun *rv = calloc(nruns, sizeof(*rv));
    Mdlmap__V1__MapIntoRun **rp = calloc(nruns, sizeof(*rp));
    int fds[OUTQ_MAX_FDS], src[OUTQ_MAX_FDS];
    unsigned nfds = 0;
    int rc = rv && rp ? 0 : -ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < nruns; i++) {
        unsigned k = 0;
        while (k < nfds && src[k] != runs[i].fd)
            k++;
        if (k == nfds) {
            if (nfds == OUTQ_MAX_FDS) {
                rc = -E2BIG;
                break;
            }
            /* our own copy: the memtable may close its fd before the send.
             * NoWrite: a new read-only file description, so the consumer
             * cannot map the region writable (a dup would share O_RDWR) */
            fds[nfds] = m->read_only ? api_reopen_read_only(runs[i].fd) : dup(runs[i].fd);
            if (fds[nfds] < 0) {
                rc = -errno;
                break;
            }
            src[nfds++] = runs[i].fd;
        }
        mdlmap__v1__map_into_run__init(&rv[i]);
        rv[i].offset = (uint64_t)runs[i].first * MAP_PAGE_SIZE;
        rv[i].length = (uint64_t)runs[i].npages * MAP_PAGE_SIZE;
        rv[i].fd_offset = runs[i].fd_off;
        rv[i].fd_index = k;
        rp[i] = &rv[i];
    }
    if (rc == 0) {
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__MapIntoRequest rq = MDLMAP__V1__MAP_INTO_REQUEST__INIT;
        rq.map_handle = m->handle;
        rq.requested_address = (uint64_t)(uintptr_t)m->base;
        rq.length = m->reserve_len;
        rq.byte_offset = m->byte_offset;
        rq.byte_count = m->byte_count;
        rq.read_only = m->read_only;
        rq.runs = rp;
        rq.n_runs = nruns;
        rq.vm_name = (char *)m->vm_name;
        rq.guest_cid = m->cid;
        rq.cache_type = (Mdlmap__V1__CacheType)m->cache_type;
        env.request_id = m->handle;
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_INTO;
        env.map_into = &rq;
        rc = push(c, &env, fds, nfds, m->handle); /* takes the fds */
        nfds = 0;
        if (rc == 0)
            api_timer_arm(c->api);
    }
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    free(rv);
    free(rp);
    return rc;
}

static void send_unmap(struct api_client *c, uint64_t map_handle, uint64_t base, uint64_t len)
{
    if (c->dead || c->fc.closing)
        return;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__UnmapFromRequest rq = MDLMAP__V1__UNMAP_FROM_REQUEST__INIT;
    rq.map_handle = map_handle;
    rq.base_address = base;
    rq.length = len;
    env.request_id = map_handle;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_FROM;
    env.unmap_from = &rq;
    if (push(c, &env, NULL, 0, 0) < 0)
        log_warn("api: cannot queue UnmapFrom for map 0x%llx", (unsigned long long)map_handle);
}

static void unmap_from(void *ctx, uint64_t map_handle, uint64_t base, uint64_t len)
{
    send_unmap(ctx, map_handle, base, len);
}

/* The map went before the consumer answered: a MapInto not yet sent is
 * dropped with its fds (a stalled consumer would otherwise make hostd hold
 * one more fd per expired map). */
static void withdraw(void *ctx, uint64_t map_handle)
{
    struct api_client *c = ctx;
    fconn_withdraw(&c->fc, map_handle);
}

static const struct map_consumer_ops consumer_ops = {
    .map_into = map_into,
    .unmap_from = unmap_from,
    .withdraw = withdraw,
};

void api_consumer_lost(struct api_client *c, const char *why)
{
    char detail[160];
    snprintf(detail, sizeof(detail), "consumer id %llu, pid %d: %s", (unsigned long long)c->consumer_id,
             (int)c->peer.pid, why);
    struct event ev = { .type = EV_CONSUMER_LOST, .consumer = c->consumer_name, .detail = detail };
    api_publish(c->api, &ev);
    map_engine_consumer_remove(c->api->eng, c->consumer_id);
}

bool api_consumer_stalled(struct api_client *c, uint64_t now_ms)
{
    const struct outq *q = &c->fc.out;
    if (!c->over_since_ms)
        return false;
    if (c->sent_bytes != c->sent_at_over && q->nfds <= API_CONSUMER_QUEUE_FDS / 2 &&
        q->bytes <= API_CONSUMER_QUEUE_BYTES / 2) {
        c->over_since_ms = 0; /* it reads again (or its maps expired) */
        return false;
    }
    return now_ms - c->over_since_ms >= c->api->cfg.consumer_timeout_ms;
}

/* A consumer's failure as the guest will see it: these statuses pass
 * through; any other failure reads as a bad request (STATUS_INVALID_PARAMETER). */
static int errno_of(int32_t status)
{
    switch (status) {
    case MDLMAP__V1__NT_STATUS__STATUS_CONFLICTING_ADDRESSES:
    case MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES:
    case MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED:
        return ntstatus_to_errno(status);
    default:
        return -EINVAL;
    }
}

bool api_consumer_message(struct api_client *c, const mdl_envelope *req)
{
    struct map_engine *e = c->api->eng;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER: {
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__RegisterConsumerResponse rp = MDLMAP__V1__REGISTER_CONSUMER_RESPONSE__INIT;
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER_REPLY;
        env.register_consumer_reply = &rp;
        const char *name = req->register_consumer->name;
        if (!api_peer_may_register(c->api, &c->peer, name)) {
            char what[100];
            snprintf(what, sizeof(what), "register consumer '%.63s' (--consumer)", name ? name : "");
            api_deny(c, req, what);
            return true;
        }
        char detail[160] = "";
        int rc = c->consumer_id ? -EBUSY : 0;
        if (rc)
            snprintf(detail, sizeof(detail), "this connection is already a consumer");
        else if ((rc = map_engine_consumer_add(e, name, &consumer_ops, c,
                                               &c->consumer_id)) < 0)
            snprintf(detail, sizeof(detail), rc == -EBUSY ? "consumer name taken"
                                             : rc == -EINVAL ? "bad consumer name (1..63 of A-Za-z0-9._-)"
                                                             : "too many consumers");
        rp.consumer_id = c->consumer_id;
        if (rc == 0) {
            snprintf(c->consumer_name, sizeof(c->consumer_name), "%s", name);
            snprintf(detail, sizeof(detail), "consumer id %llu, pid %d, uid %u", (unsigned long long)c->consumer_id,
                     (int)c->peer.pid, (unsigned)c->peer.uid);
            struct event ev = { .type = EV_CONSUMER_REGISTERED, .consumer = name, .detail = detail };
            api_publish(c->api, &ev); /* detail goes out with failures only: reusing it is safe */
        }
        uint8_t *f;
        size_t n;
        if (fconn_reply_encode(&env, req->request_id, rc, detail, &f, &n) == 0)
            fconn_queue(&c->fc, f, n);
        return true;
    }
    case MDLMAP__V1__ENVELOPE__BODY_MAP_INTO_REPLY: {
        uint64_t h = req->request_id, base = req->map_into_reply->base_address;
        int err = req->status ? errno_of(req->status) : 0;
        char detail[300];
        snprintf(detail, sizeof(detail), "consumer: %s%s%s", ntstatus_name(req->status),
                 req->detail && *req->detail ? ": " : "", req->detail ? req->detail : "");
        if (!c->consumer_id ||
            map_engine_user_complete(e, c->consumer_id, h, err, base, err ? detail : NULL) == -ENOENT) {
            if (err == 0 && base) { /* nobody waits any more (guest gone): undo */
                log_info("api: consumer mapped 0x%llx after the guest left; asking it to unmap",
                         (unsigned long long)h);
                send_unmap(c, h, base, 0);
            }
        }
        return true;
    }
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP_FROM_REPLY:
        return true; /* informational */
    default:
        return false;
    }
}
