/* Guest RPC request handlers (Hello, Lock, Map, Unmap, Unlock), independent
 * of the transport: the vsock service and the fuzz target both call
 * rpc_handle_request() with a decoded envelope. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "map_engine.h"
#include "map_grant.h"

#define RPC_MIN_VERSION 1u
#define RPC_MAX_VERSION 1u

struct rpc_session {
    struct map_engine *eng;
    struct map_owner owner;   /* VM + connection id */
    uint32_t version;         /* negotiated by Hello; 0 before */
    /* UserMode maps complete later: the engine calls done(done_ctx, ...) */
    map_done_fn done;
    void *done_ctx;
    bool pending;             /* a UserMode Map awaits its consumer */
    uint64_t pending_id;      /* its request_id */
    /* Only a privileged guest port (< 1024: root in a Linux guest) may lock or
     * map guest memory, when the service asks for it (--rpc-privileged-ports). */
    bool require_privileged;
    uint32_t peer_port;
    /* Grant copy: a copy larger than one slice (RPC_COPY_SLICE) continues
     * outside the request when later() is set (the service runs its slices
     * round-robin with other connections' across loop iterations, see
     * rpc_conn_copy_step); without it, the whole copy runs in the request. */
    struct map_copy *copy;    /* in progress; its reply is owed */
    uint64_t copy_id;         /* its request_id */
    void (*later)(void *ctx);
    void *later_ctx;
    void *notice_ctx;         /* handed to the engine for GrantRevokedNotice (the rpc_conn) */
};

/* Bytes a grant copy moves per slice: the most one connection's copy holds
 * hostd's loop before the next connection's turn. */
#define RPC_COPY_SLICE (1u << 20)

/* Handle one request whose envelope version is served (the framed
 * connection answers newer ones); *out gets the encoded response frame (free()).
 * Returns 0; 1 when the answer comes later (UserMode Map: *out is NULL, the
 * session is pending until s->done runs); or a negative errno when no
 * response could be encoded. */
int rpc_handle_request(struct rpc_session *s, const mdl_envelope *req, uint8_t **out, size_t *out_len);
/* The MapResponse (or failure) for request_id; m may be NULL on failure. */
int rpc_encode_map_reply(uint64_t request_id, int err, const char *detail, const struct map_obj *m,
                         uint8_t **out, size_t *out_len);
/* The GrantCopyResponse for s's finished copy (frees it). */
int rpc_encode_copy_reply(struct rpc_session *s, uint8_t **out, size_t *out_len);
/* A GrantRevokedNotice frame (request_id 0). */
int rpc_encode_revoked_notice(uint64_t granter_cid, uint64_t ref, const char *reason, uint8_t **out,
                              size_t *out_len);
/* LockRequest.runs as engine frame runs (*out malloc'ed, caller frees; an
 * empty array for no runs). -EINVAL when the request carries both pfns and
 * runs, or more runs than any MDL can have; -ENOMEM. The runs themselves are
 * checked by map_engine_lock_runs. */
int rpc_frame_runs(const Mdlmap__V1__LockRequest *rq, struct map_frames **out, char *detail, size_t dlen);
