/* Building response frames (shared by the guest RPC service and the host API). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

/* Fill version/request_id/status/detail of env (body already set by the caller)
 * and encode it. err: 0 or negative errno (see rpc_status.c). */
int rpc_reply_encode(mdl_envelope *env, uint64_t request_id, int err, const char *detail,
                     uint8_t **out, size_t *out_len);
/* A response with an ErrorResponse body. */
int rpc_reply_error(uint64_t request_id, int err, const char *detail, uint8_t **out, size_t *out_len);
