/* Guest request handlers: translate envelopes to engine calls and back. */
#include "rpc_handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "fconn.h"
#include "ntstatus.h"

#define DETAIL_LEN 200

static int do_hello(struct rpc_session *s, const Mdlmap__V1__HelloRequest *rq, mdl_envelope *env,
                    Mdlmap__V1__HelloResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY;
    env->hello_reply = rp;
    uint32_t lo = rq->min_version, hi = rq->max_version ? rq->max_version : rq->min_version;
    if (lo > hi || hi < RPC_MIN_VERSION || lo > RPC_MAX_VERSION) {
        snprintf(detail, DETAIL_LEN, "client speaks versions %u..%u, hostd %u..%u", lo, hi,
                 RPC_MIN_VERSION, RPC_MAX_VERSION);
        return -EPROTO;
    }
    s->version = hi < RPC_MAX_VERSION ? hi : RPC_MAX_VERSION;
    rp->version = s->version;
    rp->guest_cid = map_vm_cid(s->owner.vm);
    rp->page_size = MAP_PAGE_SIZE;
    rp->max_frame = MDLMAP_MAX_FRAME;
    rp->max_mdl_pages = MAP_MAX_MDL_PAGES;
    return 0;
}

/* Any process in a guest can speak the protocol; frames of the guest kernel
 * must not be lockable (and so readable and writable by host tools) by an
 * unprivileged one. Linux only lets CAP_NET_BIND_SERVICE bind vsock ports
 * below 1024, so the port tells (as NFS's reserved ports do). */
static int check_privileged(const struct rpc_session *s, const char *what, char *detail)
{
    if (!s->require_privileged || s->peer_port < 1024)
        return 0;
    snprintf(detail, DETAIL_LEN, "%s from guest port %u refused: only privileged ports (< 1024) may lock or map "
             "guest memory; unprivileged programs go through the agent daemon", what, s->peer_port);
    return -EACCES;
}

int rpc_frame_runs(const Mdlmap__V1__LockRequest *rq, struct map_frames **out, char *detail, size_t dlen)
{
    *out = NULL;
    /* one form or the other: with both, which frames are meant is unclear */
    if (rq->n_pfns && rq->n_runs) {
        snprintf(detail, dlen, "LockRequest carries both pfns (%zu) and runs (%zu)", rq->n_pfns,
                 rq->n_runs);
        return -EINVAL;
    }
    /* A run holds at least a page, so an MDL can have no more runs than
     * MAP_MAX_MDL_PAGES (the engine checks against the pages actually
     * spanned); refusing here keeps the copy below bounded by that too, not
     * only by the frame size (a 1 MiB frame holds up to 256 Ki 4-byte runs). */
    if (rq->n_runs > MAP_MAX_MDL_PAGES) {
        snprintf(detail, dlen, "%zu frame runs, at most %u", rq->n_runs, MAP_MAX_MDL_PAGES);
        return -EINVAL;
    }
    struct map_frames *fr = malloc(rq->n_runs * sizeof(*fr));
    if (!fr) {
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < rq->n_runs; i++) {
        const Mdlmap__V1__FrameRun *r = rq->runs[i];
        fr[i] = (struct map_frames){ .first_pfn = r ? r->first_pfn : 0, .count = r ? r->count : 0 };
    }
    *out = fr;
    return 0;
}

static int do_lock(struct rpc_session *s, const Mdlmap__V1__LockRequest *rq, mdl_envelope *env,
                   Mdlmap__V1__LockResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY;
    env->lock_reply = rp;
    int prc = check_privileged(s, "lock", detail);
    if (prc < 0)
        return prc;
    /* invalid frames: -EFAULT (STATUS_ACCESS_VIOLATION, as MmProbeAndLockPages raises);
     * malformed geometry or frame runs: -EINVAL (STATUS_INVALID_PARAMETER) */
    if (!rq->n_runs)
        return map_engine_lock(s->eng, &s->owner, rq->byte_offset, rq->byte_count, rq->pfns, rq->n_pfns,
                               (uint32_t)rq->operation, &rp->mdl_handle, detail, DETAIL_LEN);
    struct map_frames *fr;
    int rc = rpc_frame_runs(rq, &fr, detail, DETAIL_LEN);
    if (rc < 0)
        return rc;
    rc = map_engine_lock_runs(s->eng, &s->owner, rq->byte_offset, rq->byte_count, fr, rq->n_runs,
                              (uint32_t)rq->operation, &rp->mdl_handle, detail, DETAIL_LEN);
    free(fr);
    return rc;
}

static void fill_map_reply(Mdlmap__V1__MapResponse *rp, const struct map_obj *mo)
{
    struct map_info mi, *m = &mi;
    map_obj_info(mo, m);
    rp->address = m->guest_address;
    rp->map_handle = m->handle;
    rp->base_address = (uint64_t)(uintptr_t)m->base + (m->guest_address - m->address);
    rp->page_count = m->page_count;
    rp->vma_count = m->runs;
    rp->read_only = m->read_only;
    rp->cache_type = (Mdlmap__V1__CacheType)m->cache_type;
}

int rpc_encode_map_reply(uint64_t request_id, int err, const char *detail, const struct map_obj *m,
                         uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapResponse rp = MDLMAP__V1__MAP_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY;
    env.map_reply = &rp;
    if (err == 0 && m)
        fill_map_reply(&rp, m);
    return fconn_reply_encode(&env, request_id, err, detail, out, out_len);
}

static int do_map(struct rpc_session *s, const Mdlmap__V1__MapRequest *rq, mdl_envelope *env,
                  Mdlmap__V1__MapResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY;
    env->map_reply = rp;
    struct map_params p = {
        .access_mode = (uint32_t)rq->access_mode,
        .cache_type = (uint32_t)rq->cache_type,
        .priority = rq->priority,
        .requested_address = rq->requested_address,
        .consumer = rq->consumer,
        .done = s->done,
        .done_ctx = s->done_ctx,
    };
    const struct map_obj *m;
    int prc = check_privileged(s, "map", detail);
    if (prc < 0)
        return prc;
    if (p.access_mode == MAP_MODE_USER && !s->done) {
        snprintf(detail, DETAIL_LEN, "UserMode is not available on this connection");
        return -EOPNOTSUPP;
    }
    int rc = map_engine_map(s->eng, &s->owner, rq->mdl_handle, &p, &m, detail, DETAIL_LEN);
    if (rc < 0)
        return rc;
    fill_map_reply(rp, m);
    return 0;
}

static int do_unmap(struct rpc_session *s, const Mdlmap__V1__UnmapRequest *rq, mdl_envelope *env,
                    Mdlmap__V1__UnmapResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY;
    env->unmap_reply = rp;
    return map_engine_unmap(s->eng, &s->owner, rq->map_handle, rq->address, rq->mdl_handle, detail,
                            DETAIL_LEN);
}

static int do_unlock(struct rpc_session *s, const Mdlmap__V1__UnlockRequest *rq, mdl_envelope *env,
                     Mdlmap__V1__UnlockResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK_REPLY;
    env->unlock_reply = rp;
    unsigned released = 0;
    int rc = map_engine_unlock(s->eng, &s->owner, rq->mdl_handle, &released, detail, DETAIL_LEN);
    rp->mappings_released = released;
    return rc;
}

static bool may_revoke_any(const struct rpc_session *s)
{
    return !s->require_privileged || s->peer_port < 1024;
}

static int do_grant(struct rpc_session *s, const Mdlmap__V1__GrantRequest *rq, mdl_envelope *env,
                    Mdlmap__V1__GrantResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_REPLY;
    env->grant_reply = rp;
    int prc = check_privileged(s, "grant", detail);
    if (prc < 0)
        return prc;
    return map_grant_create(s->eng, &s->owner, rq->mdl_handle, rq->peer_cid, (uint32_t)rq->access, &rp->grant_ref,
                            detail, DETAIL_LEN);
}

static int do_revoke(struct rpc_session *s, const Mdlmap__V1__RevokeRequest *rq, mdl_envelope *env,
                     Mdlmap__V1__RevokeResponse *rp, char *detail)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_REVOKE_REPLY;
    env->revoke_reply = rp;
    /* the granting connection may always revoke; root in the granting VM
     * (a privileged port) may revoke any grant of its VM */
    return map_grant_revoke(s->eng, &s->owner, rq->grant_ref, may_revoke_any(s), detail, DETAIL_LEN);
}

static void copy_end_of(const Mdlmap__V1__CopyEnd *w, struct map_copy_end *e)
{
    *e = (struct map_copy_end){ 0, 0, 0 };
    if (w)
        *e = (struct map_copy_end){ w->granter_cid, w->ref, w->offset };
}

int rpc_encode_copy_reply(struct rpc_session *s, uint8_t **out, size_t *out_len)
{
    struct map_copy *c = s->copy;
    size_t n = map_copy_count(c);
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__GrantCopyResponse rp = MDLMAP__V1__GRANT_COPY_RESPONSE__INIT;
    Mdlmap__V1__NtStatus st[MAP_COPY_MAX_OPS];
    uint64_t copied[MAP_COPY_MAX_OPS];
    for (size_t i = 0; i < n; i++) {
        int err;
        map_copy_result(c, i, &err, &copied[i]);
        st[i] = (Mdlmap__V1__NtStatus)ntstatus_from_errno(err);
    }
    rp.n_status = rp.n_copied = n;
    rp.status = st;
    rp.copied = copied;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY_REPLY;
    env.grant_copy_reply = &rp;
    if (map_copy_detail(c)[0])
        log_debug("rpc: conn %llu grant copy %llu: %s", (unsigned long long)s->owner.conn_id,
                  (unsigned long long)s->copy_id, map_copy_detail(c));
    int rc = fconn_reply_encode(&env, s->copy_id, 0, NULL, out, out_len);
    map_copy_free(s->eng, c);
    s->copy = NULL;
    return rc;
}

int rpc_encode_revoked_notice(uint64_t granter_cid, uint64_t ref, const char *reason, uint8_t **out,
                              size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__GrantRevokedNotice n = MDLMAP__V1__GRANT_REVOKED_NOTICE__INIT;
    n.granter_cid = granter_cid;
    n.grant_ref = ref;
    n.reason = (char *)(reason ? reason : "revoked");
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_REVOKED;
    env.grant_revoked = &n;
    return fconn_reply_encode(&env, 0, 0, NULL, out, out_len);
}

/* Validate every op, copy the first slice now; the rest later (when the
 * service schedules slices) or here (no scheduler: unit tests, fuzzing). */
static int do_grant_copy(struct rpc_session *s, const Mdlmap__V1__GrantCopyRequest *rq, uint64_t request_id,
                         mdl_envelope *env, Mdlmap__V1__GrantCopyResponse *rp, char *detail, uint8_t **out,
                         size_t *out_len)
{
    env->body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY_REPLY;
    env->grant_copy_reply = rp;
    int prc = check_privileged(s, "grant copy", detail);
    if (prc < 0)
        return prc;
    if (rq->n_ops > MAP_COPY_MAX_OPS) {
        snprintf(detail, DETAIL_LEN, "%zu copy operations, at most %u", rq->n_ops, MAP_COPY_MAX_OPS);
        return -EINVAL;
    }
    struct map_copy_op ops[MAP_COPY_MAX_OPS];
    for (size_t i = 0; i < rq->n_ops; i++) {
        const Mdlmap__V1__CopyOp *o = rq->ops[i];
        copy_end_of(o ? o->src : NULL, &ops[i].src);
        copy_end_of(o ? o->dst : NULL, &ops[i].dst);
        ops[i].length = o ? o->length : 0;
    }
    int rc = map_copy_begin(s->eng, &s->owner, ops, rq->n_ops, s->notice_ctx, &s->copy, detail, DETAIL_LEN);
    if (rc < 0)
        return rc;
    s->copy_id = request_id;
    bool done = false;
    do
        map_copy_step(s->eng, s->copy, RPC_COPY_SLICE, &done);
    while (!done && !s->later);
    if (!done) {
        s->later(s->later_ctx);
        return -EINPROGRESS;
    }
    rc = rpc_encode_copy_reply(s, out, out_len);
    return rc < 0 ? rc : 1;
}

int rpc_handle_request(struct rpc_session *s, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__HelloResponse hello = MDLMAP__V1__HELLO_RESPONSE__INIT;
    Mdlmap__V1__LockResponse lock = MDLMAP__V1__LOCK_RESPONSE__INIT;
    Mdlmap__V1__MapResponse map = MDLMAP__V1__MAP_RESPONSE__INIT;
    Mdlmap__V1__UnmapResponse unmap = MDLMAP__V1__UNMAP_RESPONSE__INIT;
    Mdlmap__V1__UnlockResponse unlock = MDLMAP__V1__UNLOCK_RESPONSE__INIT;
    Mdlmap__V1__ErrorResponse error = MDLMAP__V1__ERROR_RESPONSE__INIT;
    Mdlmap__V1__GrantResponse grant = MDLMAP__V1__GRANT_RESPONSE__INIT;
    Mdlmap__V1__RevokeResponse revoke = MDLMAP__V1__REVOKE_RESPONSE__INIT;
    Mdlmap__V1__GrantCopyResponse copy = MDLMAP__V1__GRANT_COPY_RESPONSE__INIT;
    char detail[DETAIL_LEN] = "";
    int rc;

    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_HELLO:
        rc = do_hello(s, req->hello, &env, &hello, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_LOCK:
        rc = do_lock(s, req->lock, &env, &lock, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_MAP:
        rc = do_map(s, req->map, &env, &map, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP:
        rc = do_unmap(s, req->unmap, &env, &unmap, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_UNLOCK:
        rc = do_unlock(s, req->unlock, &env, &unlock, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_GRANT:
        rc = do_grant(s, req->grant, &env, &grant, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_REVOKE:
        rc = do_revoke(s, req->revoke, &env, &revoke, detail);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY:
        rc = do_grant_copy(s, req->grant_copy, req->request_id, &env, &copy, detail, out, out_len);
        if (rc == 1)
            return 0; /* answered in full */
        if (rc == -EINPROGRESS) {
            *out = NULL;
            *out_len = 0;
            return 1;
        }
        break;
    default:
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_ERROR_REPLY;
        env.error_reply = &error;
        snprintf(detail, sizeof(detail), "request type %d is not served on the guest RPC port",
                 (int)req->body_case);
        rc = -ENOSYS;
        break;
    }
    if (rc == -EINPROGRESS) {
        s->pending = true;
        s->pending_id = req->request_id;
        *out = NULL;
        *out_len = 0;
        return 1;
    }
    if (rc < 0)
        log_debug("rpc: conn %llu request %llu (type %d) failed: %s",
                  (unsigned long long)s->owner.conn_id, (unsigned long long)req->request_id,
                  (int)req->body_case, detail);
    return fconn_reply_encode(&env, req->request_id, rc, detail, out, out_len);
}
