/* The pieces of fast whole-guest reads in common/: the output queue's
 * spare frames (kept only when sent whole and within the queue's limit,
 * handed back only when large enough, freed with the queue), replies packed
 * into them (fconn_reply_encode_reuse), and the in-place PhysRead reply
 * reader (frame_view_phys_read) checked against protobuf-c's decoding of
 * the same bytes, whole, cut short and mutated. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fconn.h"
#include "frame.h"
#include "outq.h"
#include "tap.h"

#define ST(name) MDLMAP__V1__NT_STATUS__STATUS_##name
#define BIG (200u * 1024u)

/* A peer that takes at most `room` bytes per call. */
static size_t room;
static long take_some(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    (void)ctx, (void)p, (void)fds, (void)nfds;
    if (room == 0)
        return -EAGAIN;
    size_t k = n < room ? n : room;
    room -= k;
    return (long)k;
}

static uint8_t *frame_of(size_t n, uint8_t fill)
{
    uint8_t *p = malloc(n);
    if (p)
        memset(p, fill, n);
    return p;
}

static void test_spares(void)
{
    struct outq q;
    outq_init(&q);
    size_t cap = 0;
    /* no limit (the default): nothing is kept */
    CHECK_EQ(outq_push_owned(&q, frame_of(BIG, 1), BIG, NULL, 0, 0), 0);
    room = SIZE_MAX;
    CHECK_EQ(outq_flush(&q, take_some, NULL), 0);
    CHECK_EQ(q.nspare, 0);
    CHECK(outq_take_spare(&q, 1, &cap) == NULL);

    /* limit of two large frames: sent frames are kept up to it */
    q.spare_limit = 2 * BIG;
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ(outq_push_owned(&q, frame_of(BIG, (uint8_t)i), BIG, NULL, 0, 0), 0);
    room = BIG + 10; /* one whole, one begun */
    CHECK_EQ(outq_flush(&q, take_some, NULL), 0);
    /* unsent bytes count against the limit: 2*BIG-10 queued + BIG > 2*BIG */
    CHECK_EQ(q.nspare, 0);
    room = SIZE_MAX;
    CHECK_EQ(outq_flush(&q, take_some, NULL), 0);
    CHECK_EQ(q.nspare, 2);
    CHECK_EQ(q.spare_bytes, 2 * BIG);
    /* a small frame is never kept; a frame withdrawn unsent is not either */
    CHECK_EQ(outq_push_owned(&q, frame_of(100, 7), 100, NULL, 0, 0), 0);
    CHECK_EQ(outq_flush(&q, take_some, NULL), 0);
    CHECK_EQ(q.nspare, 2);
    uint8_t *a = outq_take_spare(&q, BIG + 1, &cap);
    CHECK(a == NULL); /* none large enough */
    a = outq_take_spare(&q, BIG, &cap);
    CHECK(a != NULL);
    CHECK_EQ(cap, BIG);
    CHECK_EQ(q.nspare, 1);
    CHECK_EQ(outq_push_owned(&q, a, BIG, NULL, 0, 5), 0);
    CHECK_EQ(outq_withdraw(&q, 5), 1);
    CHECK_EQ(q.nspare, 1);

    /* a reply packed into a spare goes out of that very buffer */
    uint8_t *s = q.spare[0];
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtReadResponse vr = MDLMAP__V1__VIRT_READ_RESPONSE__INIT;
    uint8_t data[1000];
    memset(data, 0x5a, sizeof(data));
    vr.data.data = data;
    vr.data.len = sizeof(data);
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_READ_REPLY;
    env.virt_read_reply = &vr;
    uint8_t *f = NULL;
    size_t n = 0;
    CHECK_EQ(fconn_reply_encode_reuse(&env, 9, 0, NULL, &q, &f, &n), 0);
    CHECK(f == s);
    CHECK_EQ(q.nspare, 0);
    mdl_envelope *back = NULL;
    CHECK_EQ(frame_decode(f + MDLMAP_FRAME_HDR, n - MDLMAP_FRAME_HDR, &back), 0);
    CHECK(back && back->request_id == 9 && back->virt_read_reply->data.len == sizeof(data) &&
          !memcmp(back->virt_read_reply->data.data, data, sizeof(data)));
    frame_envelope_free(back);
    /* without a spare the reply is a fresh buffer */
    uint8_t *g = NULL;
    size_t gn = 0;
    CHECK_EQ(fconn_reply_encode_reuse(&env, 10, 0, NULL, &q, &g, &gn), 0);
    CHECK(g != NULL && g != s);
    free(g);
    CHECK_EQ(outq_push_owned(&q, f, n, NULL, 0, 0), 0); /* queued unsent: outq_free frees it */
    /* and spares go with the queue (LeakSanitizer checks) */
    CHECK_EQ(outq_push_owned(&q, frame_of(BIG, 3), BIG, NULL, 0, 0), 0);
    outq_free(&q);
    CHECK_EQ(q.nspare, 0);
}

/* An Envelope with a PhysReadResponse of n ranges, encoded (payload only). */
static uint8_t *encode_reply(size_t n, const int32_t *st, uint8_t *const *data, const size_t *len,
                             const char *detail, size_t *plen)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysReadResponse rp = MDLMAP__V1__PHYS_READ_RESPONSE__INIT;
    Mdlmap__V1__RangeData rd[8], *rdp[8];
    for (size_t i = 0; i < n; i++) {
        mdlmap__v1__range_data__init(&rd[i]);
        rd[i].status = st[i];
        rd[i].data.data = data[i];
        rd[i].data.len = len[i];
        rdp[i] = &rd[i];
    }
    rp.n_ranges = n;
    rp.ranges = rdp;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY;
    env.phys_read_reply = &rp;
    env.version = 1;
    env.request_id = 0x123456789ull;
    env.status = detail ? ST(INVALID_PARAMETER) : 0;
    env.detail = (char *)(detail ? detail : "");
    uint8_t *f = NULL;
    size_t fl = 0;
    if (frame_encode(&env, &f, &fl) < 0)
        return NULL;
    memmove(f, f + MDLMAP_FRAME_HDR, fl - MDLMAP_FRAME_HDR);
    *plen = fl - MDLMAP_FRAME_HDR;
    return f;
}

/* When the view takes the bytes, protobuf-c must read the same from them;
 * when protobuf-c reads a PhysRead reply with at most max ranges, the view
 * must not call it malformed. Returns the view's answer. */
static int agree(const uint8_t *p, size_t len, size_t max, bool *same)
{
    struct frame_phys_read_view v;
    struct frame_range_view r[8];
    int rc = frame_view_phys_read(p, len, &v, r, max);
    mdl_envelope *e = len ? mdlmap__v1__envelope__unpack(NULL, len, p) : NULL;
    *same = true;
    if (rc == 0) {
        *same = e && e->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY && e->version == v.version &&
                e->request_id == v.request_id && e->status == v.status &&
                /* protobuf-c's detail is a C string: it ends at an embedded NUL */
                strlen(e->detail) == (v.detail_len ? strnlen(v.detail, v.detail_len) : 0) &&
                !memcmp(e->detail, v.detail ? v.detail : "", strlen(e->detail)) &&
                e->phys_read_reply->n_ranges == v.n_ranges;
        for (size_t i = 0; *same && i < v.n_ranges; i++) {
            const Mdlmap__V1__RangeData *d = e->phys_read_reply->ranges[i];
            *same = d->status == r[i].status && d->data.len == r[i].len &&
                    (!r[i].len || !memcmp(d->data.data, r[i].data, r[i].len));
            /* in place: inside the payload */
            *same = *same && (!r[i].len || (r[i].data >= p && r[i].data + r[i].len <= p + len));
        }
    } else if (rc == -EBADMSG && e && e->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY &&
               e->phys_read_reply->n_ranges <= max) {
        *same = false;
    }
    if (e)
        mdlmap__v1__envelope__free_unpacked(e, NULL);
    return rc;
}

static void test_view(void)
{
    uint8_t a[300], b[5], c[1];
    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = (uint8_t)(i * 7);
    memset(b, 0xee, sizeof(b));
    uint8_t *data[3] = { a, NULL, b };
    size_t len[3] = { sizeof(a), 0, sizeof(b) };
    int32_t st[3] = { 0, ST(ACCESS_VIOLATION), 0 };
    size_t plen = 0;
    uint8_t *p = encode_reply(3, st, data, len, NULL, &plen);
    CHECK(p != NULL);
    struct frame_phys_read_view v;
    struct frame_range_view r[8];
    CHECK_EQ(frame_view_phys_read(p, plen, &v, r, 8), 0);
    CHECK_EQ(v.n_ranges, 3);
    CHECK_EQ(v.request_id, 0x123456789ull);
    CHECK_EQ(v.version, 1);
    CHECK(r[0].len == sizeof(a) && !memcmp(r[0].data, a, sizeof(a)) && r[0].status == 0);
    CHECK(r[1].len == 0 && r[1].status == ST(ACCESS_VIOLATION)); /* negative: a 10-byte varint */
    CHECK(r[2].len == sizeof(b) && !memcmp(r[2].data, b, sizeof(b)));
    CHECK_EQ(frame_view_phys_read(p, plen, &v, r, 2), -ENOMSG); /* more ranges than room */
    bool same;
    /* every cut: never a read past the end, never disagreement */
    unsigned bad = 0;
    for (size_t cut = 0; cut < plen; cut++) {
        agree(p, cut, 8, &same);
        bad += !same;
    }
    CHECK_EQ(bad, 0);
    /* mutations of one byte and of two, compared with protobuf-c */
    srand(9);
    bad = 0;
    unsigned taken = 0;
    uint8_t *m = malloc(plen);
    for (unsigned k = 0; k < 20000 && m; k++) {
        memcpy(m, p, plen);
        unsigned edits = 1 + (unsigned)rand() % 2;
        for (unsigned e = 0; e < edits; e++)
            m[(size_t)rand() % (plen < 40 ? plen : 40)] = (uint8_t)rand(); /* the header and first lengths */
        int vrc = agree(m, plen, 8, &same);
        taken += vrc == 0;
        bad += !same;
        if (!same) {
            char hex[200] = "";
            for (size_t i = 0; i < 40 && i < plen; i++)
                snprintf(hex + strlen(hex), sizeof(hex) - strlen(hex), "%02x", m[i]);
            tap_diag("view %d disagrees with protobuf-c on %s...", vrc, hex);
        }
    }
    free(m);
    CHECK_EQ(bad, 0);
    tap_check(taken > 0, "some mutated replies are still read in place (%u)", taken);
    free(p);

    /* failure envelope with a detail and no ranges */
    p = encode_reply(0, st, data, len, "no such VM", &plen);
    CHECK_EQ(frame_view_phys_read(p, plen, &v, r, 8), 0);
    CHECK(v.status == ST(INVALID_PARAMETER) && v.detail_len == 10 && !memcmp(v.detail, "no such VM", 10) &&
          v.n_ranges == 0);
    free(p);
    /* another body: not this reader's */
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtReadResponse vr = MDLMAP__V1__VIRT_READ_RESPONSE__INIT;
    vr.data.data = c;
    vr.data.len = 1;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_READ_REPLY;
    env.virt_read_reply = &vr;
    env.detail = "";
    uint8_t *f;
    size_t fl;
    CHECK_EQ(frame_encode(&env, &f, &fl), 0);
    CHECK_EQ(frame_view_phys_read(f + MDLMAP_FRAME_HDR, fl - MDLMAP_FRAME_HDR, &v, r, 8), -ENOMSG);
    free(f);
    /* hand-made malformed ones: a length past the end, an 11-byte varint, wire type 7 */
    const uint8_t past[] = { 0x9a, 0x03, 0x05, 0x0a, 0x10 };
    CHECK_EQ(frame_view_phys_read(past, sizeof(past), &v, r, 8), -EBADMSG);
    const uint8_t longv[] = { 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    CHECK_EQ(frame_view_phys_read(longv, sizeof(longv), &v, r, 8), -EBADMSG);
    const uint8_t wt7[] = { 0x0f };
    CHECK_EQ(frame_view_phys_read(wt7, sizeof(wt7), &v, r, 8), -EBADMSG);
    /* a key padded past 5 bytes: protobuf-c refuses it, so the view leaves it to protobuf-c */
    const uint8_t longkey[] = { 0x90, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 0x9a, 0x03, 0x00 };
    CHECK_EQ(frame_view_phys_read(longkey, sizeof(longkey), &v, r, 8), -ENOMSG);
    const uint8_t longlen[] = { 0x2a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x9a, 0x03, 0x00 };
    CHECK_EQ(frame_view_phys_read(longlen, sizeof(longlen), &v, r, 8), -ENOMSG);
}

/* frame_read_fd_buf: frames of different sizes through one growing buffer. */
static void test_read_buf(void)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uint8_t hdr[4] = { 3, 0, 0, 0 }, body[3] = { 1, 2, 3 };
    uint8_t hdr2[4] = { 0, 0, 0, 0 };
    CHECK_EQ(write(sv[0], hdr, 4), 4);
    CHECK_EQ(write(sv[0], body, 3), 3);
    CHECK_EQ(write(sv[0], hdr2, 4), 4);
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    CHECK_EQ(frame_read_fd_buf(sv[1], &buf, &cap, &len), 0);
    CHECK(len == 3 && cap >= 3 && !memcmp(buf, body, 3));
    CHECK_EQ(frame_read_fd_buf(sv[1], &buf, &cap, &len), -EMSGSIZE); /* length 0 */
    close(sv[0]);
    CHECK_EQ(frame_read_fd_buf(sv[1], &buf, &cap, &len), -ECONNRESET);
    close(sv[1]);
    free(buf);
}

int main(void)
{
    test_spares();
    test_view();
    test_read_buf();
    return tap_done();
}
