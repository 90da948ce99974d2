/* Response encoding shared by every mdlmap server. */
#include "fconn.h"

#include <stdlib.h>

static void fill(mdl_envelope *env, uint64_t request_id, int err, const char *detail)
{
    env->version = MDLMAP_PROTO_VERSION;
    env->request_id = request_id;
    env->status = ntstatus_from_errno(err);
    /* protobuf-c wants a non-NULL string; the empty default is fine */
    env->detail = (char *)(err && detail && *detail ? detail : "");
}

int fconn_reply_encode(mdl_envelope *env, uint64_t request_id, int err, const char *detail,
                       uint8_t **out, size_t *out_len)
{
    fill(env, request_id, err, detail);
    return frame_encode(env, out, out_len);
}

int fconn_reply_encode_reuse(mdl_envelope *env, uint64_t request_id, int err, const char *detail,
                             struct outq *q, uint8_t **out, size_t *out_len)
{
    fill(env, request_id, err, detail);
    size_t need = MDLMAP_FRAME_HDR + mdlmap__v1__envelope__get_packed_size(env), cap = 0;
    uint8_t *buf = q && need <= MDLMAP_FRAME_HDR + MDLMAP_MAX_FRAME ? outq_take_spare(q, need, &cap) : NULL;
    if (!buf)
        return frame_encode(env, out, out_len);
    int rc = frame_encode_to(env, buf, cap, out_len);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

int fconn_reply_error(uint64_t request_id, int err, const char *detail, uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ErrorResponse body = MDLMAP__V1__ERROR_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_ERROR_REPLY;
    env.error_reply = &body;
    return fconn_reply_encode(&env, request_id, err, detail, out, out_len);
}
