#include "frame.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "usock.h"

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

/* The length prefix is little-endian on the wire whatever the host order. */
static uint32_t hdr_get(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

static void hdr_put(uint8_t *p, size_t n)
{
    uint32_t v = htole32((uint32_t)n);
    memcpy(p, &v, sizeof(v));
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
    uint32_t n = hdr_get(r->buf + r->consumed);
    if (n == 0 || n > r->max_frame)
        return -EMSGSIZE;
    if (held - MDLMAP_FRAME_HDR < n)
        return 0;
    *payload = r->buf + r->consumed + MDLMAP_FRAME_HDR;
    *plen = n;
    r->consumed += MDLMAP_FRAME_HDR + n;
    return 1;
}

int frame_reader_space(struct frame_reader *r, uint8_t **p, size_t *room)
{
    size_t held = r->len - r->consumed;
    if (r->consumed) { /* frames handed out are gone: keep only the tail */
        memmove(r->buf, r->buf + r->consumed, held);
        r->len = held;
        r->consumed = 0;
    }
    size_t want = held + 1;
    if (held >= MDLMAP_FRAME_HDR) {
        uint32_t n = hdr_get(r->buf);
        if (n == 0 || n > r->max_frame)
            return -EMSGSIZE;
        /* Grow once to the whole frame rather than doubling per read. */
        if (MDLMAP_FRAME_HDR + (size_t)n > want)
            want = MDLMAP_FRAME_HDR + (size_t)n;
    }
    if (want > r->max_frame + MDLMAP_FRAME_HDR)
        return -ENOBUFS;
    if (want > r->cap) {
        size_t cap = frame_reader_cap_after(r, want - held);
        uint8_t *nb = realloc(r->buf, cap);
        if (!nb)
            return -ENOMEM;
        r->buf = nb;
        r->cap = cap;
    }
    *p = r->buf + r->len;
    *room = r->cap - r->len;
    return 0;
}

void frame_reader_commit(struct frame_reader *r, size_t n)
{
    /* Never past the buffer, whatever a transport claims to have written. */
    r->len += n < r->cap - r->len ? n : r->cap - r->len;
}

bool frame_reader_partial(const struct frame_reader *r)
{
    size_t held = r->len - r->consumed;
    if (held == 0)
        return false;
    if (held < MDLMAP_FRAME_HDR)
        return true;
    uint32_t n = hdr_get(r->buf + r->consumed);
    return n > 0 && n <= r->max_frame && held - MDLMAP_FRAME_HDR < n;
}

int frame_encode_to(const mdl_envelope *env, uint8_t *buf, size_t cap, size_t *out_len)
{
    size_t n = mdlmap__v1__envelope__get_packed_size(env);
    if (n == 0 || n > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    *out_len = MDLMAP_FRAME_HDR + n;
    if (cap < MDLMAP_FRAME_HDR + n)
        return -ENOBUFS;
    hdr_put(buf, n);
    mdlmap__v1__envelope__pack(env, buf + MDLMAP_FRAME_HDR);
    return 0;
}

int frame_encode(const mdl_envelope *env, uint8_t **out, size_t *out_len)
{
    size_t n = mdlmap__v1__envelope__get_packed_size(env);
    if (n == 0 || n > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    uint8_t *buf = malloc(MDLMAP_FRAME_HDR + n);
    if (!buf)
        return -ENOMEM;
    int rc = frame_encode_to(env, buf, MDLMAP_FRAME_HDR + n, out_len);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

int frame_decode_with(const uint8_t *payload, size_t len, ProtobufCAllocator *a, mdl_envelope **out)
{
    *out = NULL;
    if (len == 0 || len > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    mdl_envelope *env = mdlmap__v1__envelope__unpack(a, len, payload);
    if (!env)
        return -EBADMSG;
    if (env->body_case == MDLMAP__V1__ENVELOPE__BODY__NOT_SET) {
        mdlmap__v1__envelope__free_unpacked(env, a);
        return -EPROTO;
    }
    *out = env;
    return 0;
}

int frame_decode(const uint8_t *payload, size_t len, mdl_envelope **out)
{
    return frame_decode_with(payload, len, NULL, out);
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

/* fds NULL: plain read() (works on pipes and files too); else recvmsg()
 * collecting passed fds. */
static int read_all(int fd, uint8_t *p, size_t n, struct usock_fds *fds)
{
    while (n) {
        ssize_t r = fds ? usock_recv(fd, p, n, fds, 0) : read(fd, p, n);
        if (r < 0 && !fds)
            r = -errno;
        if (r == -EINTR)
            continue;
        if (r < 0)
            return (int)r;
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
    return frame_read_fd_fds(fd, out, NULL);
}

/* The length prefix of the next frame, checked against the frame bounds. */
static int read_frame_len(int fd, struct usock_fds *fds, uint32_t *n)
{
    uint8_t hdr[MDLMAP_FRAME_HDR];
    int rc = read_all(fd, hdr, sizeof(hdr), fds);
    if (rc < 0)
        return rc;
    *n = hdr_get(hdr);
    return *n == 0 || *n > MDLMAP_MAX_FRAME ? -EMSGSIZE : 0;
}

int frame_read_fd_fds(int fd, mdl_envelope **out, struct usock_fds *fds)
{
    uint32_t n;
    *out = NULL;
    int rc = read_frame_len(fd, fds, &n);
    if (rc < 0)
        return rc;
    uint8_t *buf = malloc(n);
    if (!buf)
        return -ENOMEM;
    rc = read_all(fd, buf, n, fds);
    if (rc == 0)
        rc = frame_decode(buf, n, out);
    free(buf);
    return rc;
}

int frame_read_fd_buf(int fd, uint8_t **buf, size_t *cap, size_t *len)
{
    uint32_t n;
    int rc = read_frame_len(fd, NULL, &n);
    if (rc < 0)
        return rc;
    if (n > *cap) {
        uint8_t *nb = realloc(*buf, n);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        *cap = n;
    }
    rc = read_all(fd, *buf, n, NULL);
    if (rc == 0)
        *len = n;
    return rc;
}

/* ---- PhysRead replies in place (protobuf wire format, by hand) ---------- */

struct wire {
    const uint8_t *p, *end;
};

/* A varint of at most 10 bytes; -EBADMSG past the end or longer. */
static int wire_varint(struct wire *w, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (w->p == w->end)
            return -EBADMSG;
        uint8_t b = *w->p++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -EBADMSG;
}

/* The next field: its number, wire type, and for a length-delimited one
 * its bytes (checked against the end); other values are read or skipped. */
struct wire_fld {
    uint32_t num;
    unsigned type;
    uint64_t val;
    struct wire sub;
};

static int wire_field(struct wire *w, struct wire_fld *f)
{
    uint64_t key;
    const uint8_t *at = w->p;
    *f = (struct wire_fld){ 0, 0, 0, { NULL, NULL } };
    if (wire_varint(w, &key) < 0)
        return -EBADMSG;
    if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff || w->p - at > 5)
        return -ENOMSG; /* decoders differ on these keys (protobuf-c: 5 bytes at most): the full one says */
    f->num = (uint32_t)(key >> 3);
    f->type = key & 7;
    switch (f->type) {
    case 0:
        return wire_varint(w, &f->val);
    case 1:
    case 5: {
        size_t n = f->type == 1 ? 8 : 4;
        if ((size_t)(w->end - w->p) < n)
            return -EBADMSG;
        w->p += n;
        return 0;
    }
    case 2: {
        uint64_t n;
        at = w->p;
        if (wire_varint(w, &n) < 0)
            return -EBADMSG;
        if (w->p - at > 5 || n > UINT32_MAX)
            return -ENOMSG; /* protobuf-c reads lengths as 32-bit varints of at most 5 bytes */
        if (n > (uint64_t)(w->end - w->p))
            return -EBADMSG;
        f->sub.p = w->p;
        f->sub.end = w->p + n;
        w->p += n;
        return 0;
    }
    default: /* groups (3, 4) are not proto3; 6, 7 do not exist */
        return -EBADMSG;
    }
}

/* One RangeData: status (field 1) and data (field 2), last one wins as in
 * protobuf; unknown fields skipped. */
static int view_range(struct wire w, struct frame_range_view *r)
{
    *r = (struct frame_range_view){ 0, NULL, 0 };
    while (w.p < w.end) {
        struct wire_fld f;
        int fr = wire_field(&w, &f);
        if (fr < 0)
            return fr;
        if (f.num == 1 && f.type == 0)
            r->status = (int32_t)f.val;
        else if (f.num == 2 && f.type == 2) {
            r->data = f.sub.p;
            r->len = (size_t)(f.sub.end - f.sub.p);
        } else if (f.num <= 2)
            return -ENOMSG; /* a known field with an unexpected wire type: the full decoder says */
    }
    return 0;
}

int frame_view_phys_read(const uint8_t *payload, size_t len, struct frame_phys_read_view *v,
                         struct frame_range_view *r, size_t max)
{
    struct wire w = { payload, payload + len }, body = { NULL, NULL };
    memset(v, 0, sizeof(*v));
    if (len == 0 || len > MDLMAP_MAX_FRAME)
        return -EMSGSIZE;
    bool have_body = false;
    while (w.p < w.end) {
        struct wire_fld f;
        int fr = wire_field(&w, &f);
        if (fr < 0)
            return fr;
        if (f.num == 1 && f.type == 0)
            v->version = (uint32_t)f.val;
        else if (f.num == 2 && f.type == 0)
            v->request_id = f.val;
        else if (f.num == 3 && f.type == 0)
            v->status = (int32_t)f.val;
        else if (f.num == 4 && f.type == 2) {
            v->detail = (const char *)f.sub.p;
            v->detail_len = (size_t)(f.sub.end - f.sub.p);
        } else if (f.num == 51 && f.type == 2 && !have_body) {
            body = f.sub;
            have_body = true;
        } else if (f.num <= 4 || f.num >= 10) {
            return -ENOMSG; /* another body, a repeated body (merged by protobuf), an odd wire type */
        }
    }
    if (!have_body)
        return -ENOMSG;
    while (body.p < body.end) {
        struct wire_fld f;
        int fr = wire_field(&body, &f);
        if (fr < 0)
            return fr;
        if (f.num != 1)
            continue; /* unknown to this version: skipped */
        if (f.type != 2 || v->n_ranges == max)
            return -ENOMSG;
        int rc = view_range(f.sub, &r[v->n_ranges]);
        if (rc < 0)
            return rc;
        v->n_ranges++;
    }
    return 0;
}
