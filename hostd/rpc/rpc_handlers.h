/* Guest RPC request handlers (Hello, Lock, Map, Unmap, Unlock), independent
 * of the transport: the vsock service and the fuzz target both call
 * rpc_handle_request() with a decoded envelope. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "map_engine.h"

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
};

/* Handle one request whose envelope version is served (the framed
 * connection answers newer ones); *out gets the encoded response frame (free()).
 * Returns 0; 1 when the answer comes later (UserMode Map: *out is NULL, the
 * session is pending until s->done runs); or a negative errno when no
 * response could be encoded. */
int rpc_handle_request(struct rpc_session *s, const mdl_envelope *req, uint8_t **out, size_t *out_len);
/* The MapResponse (or failure) for request_id; m may be NULL on failure. */
int rpc_encode_map_reply(uint64_t request_id, int err, const char *detail, const struct map_obj *m,
                         uint8_t **out, size_t *out_len);
/* LockRequest.runs as engine frame runs (*out malloc'ed, caller frees; an
 * empty array for no runs). -EINVAL when the request carries both pfns and
 * runs, or more runs than any MDL can have; -ENOMEM. The runs themselves are
 * checked by map_engine_lock_runs. */
int rpc_frame_runs(const Mdlmap__V1__LockRequest *rq, struct map_frames **out, char *detail, size_t dlen);
