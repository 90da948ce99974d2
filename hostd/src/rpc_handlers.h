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
};

/* Handle one request; *out gets the encoded response frame (free()).
 * Returns 0, or a negative errno when no response could be encoded. */
int rpc_handle_request(struct rpc_session *s, const mdl_envelope *req, uint8_t **out, size_t *out_len);
