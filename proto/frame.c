#include "frame.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void frame_reader_init(struct frame_reader *r, size_t max_frame)
{
    memset(r, 0, sizeof(*r));
    r->max_frame = max_frame ? max_frame : MDLMAP_MAX_FRAME;
}

void frame_reader_free(struct frame_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

size_t frame_reader_room(const struct frame_reader *r)
{
    size_t limit = r->max_frame + MDLMAP_FRAME_HDR;
    size_t held = r->len - r->consumed;
    return held >= limit ? 0 : limit - held;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t frame_reader_cap_after(const struct frame_reader *r, size_t len)
{
    size_t need = r->len - r->consumed + len;
    if (need <= r->cap)
        return r->cap;
    /* Grow geometrically but never past one maximal frame plus its header:
     * frame_reader_room() guarantees need fits in that. */
    size_t limit = r->max_frame + MDLMAP_FRAME_HDR;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < need && cap < limit)
        cap *= 2;
    return cap > limit ? limit : cap;
}

int frame_reader_feed(struct frame_reader *r, const void *data, size_t len)
{
    if (len > frame_reader_room(r))
        return -ENOBUFS;
    if (r->consumed) { /* compact: drop frames already handed out */
        memmove(r->buf, r->buf + r->consumed, r->len - r->consumed);
        r->len -= r->consumed;
        r->consumed = 0;
    }
    if (r->len + len > r->cap) {
        size_t cap = frame_reader_cap_after(r, len);
        uint8_t *nb = realloc(r->buf, cap);
        if (!nb)
            return -ENOMEM;
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    return 0;
}

int frame_reader_next(struct frame_reader *r, const uint8_t **payload, size_t *plen)
{
    size_t held = r->len - r->consumed;
    if (held < MDLMAP_FRAME_HDR)
        return 0;
    uint32_t n = le32(r->buf + r->consumed);
    if (n == 0 || n > r->max_frame)
        return -EMSGSIZE;
    if (held - MDLMAP_FRAME_HDR < n)
        return 0;
    *payload = r->buf + r->consumed + MDLMAP_FRAME_HDR;
    *plen = n;
    r->consumed += MDLMAP_FRAME_HDR + n;
    return 1;
}

int frame_encode(const mdl_envelope *env, uint8_t **out, size_t *out_len)
{
    size_t n = mdlmap__v1__envelope__get_packed_size(env);
    if (n == 0 || n > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    uint8_t *buf = malloc(MDLMAP_FRAME_HDR + n);
    if (!buf)
        return -ENOMEM;
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    buf[2] = (uint8_t)(n >> 16);
    buf[3] = (uint8_t)(n >> 24);
    mdlmap__v1__envelope__pack(env, buf + MDLMAP_FRAME_HDR);
    *out = buf;
    *out_len = MDLMAP_FRAME_HDR + n;
    return 0;
}

int frame_decode(const uint8_t *payload, size_t len, mdl_envelope **out)
{
    *out = NULL;
    if (len == 0 || len > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    mdl_envelope *env = mdlmap__v1__envelope__unpack(NULL, len, payload);
    if (!env)
        return -EBADMSG;
    if (env->body_case == MDLMAP__V1__ENVELOPE__BODY__NOT_SET) {
        mdlmap__v1__envelope__free_unpacked(env, NULL);
        return -EPROTO;
    }
    *out = env;
    return 0;
}

void frame_envelope_free(mdl_envelope *env)
{
    if (env)
        mdlmap__v1__envelope__free_unpacked(env, NULL);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -ECONNRESET;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int frame_write_fd(int fd, const mdl_envelope *env)
{
    uint8_t *buf;
    size_t len;
    int rc = frame_encode(env, &buf, &len);
    if (rc < 0)
        return rc;
    rc = write_all(fd, buf, len);
    free(buf);
    return rc;
}

int frame_read_fd(int fd, mdl_envelope **out)
{
    uint8_t hdr[MDLMAP_FRAME_HDR];
    *out = NULL;
    int rc = read_all(fd, hdr, sizeof(hdr));
    if (rc < 0)
        return rc;
    uint32_t n = le32(hdr);
    if (n == 0 || n > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    uint8_t *buf = malloc(n);
    if (!buf)
        return -ENOMEM;
    rc = read_all(fd, buf, n);
    if (rc == 0)
        rc = frame_decode(buf, n, out);
    free(buf);
    return rc;
}

const char *ntstatus_name(int32_t status)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&mdlmap__v1__nt_status__descriptor, status);
    if (v)
        return v->name;
    static __thread char buf[24];
    snprintf(buf, sizeof(buf), "STATUS_0x%08x", (uint32_t)status);
    return buf;
}
