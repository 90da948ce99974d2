/* The in-place PhysRead reply reader (common/frame.c frame_view_phys_read)
 * against protobuf-c on the same bytes. Input: a mode byte; odd: the rest
 * is the payload as is; even: a valid reply is built from the next bytes
 * (ranges, statuses, lengths, detail) and then edited by the remaining
 * (position, value) pairs, so mutations land in real structure. The view
 * must never read outside the payload; what it takes, protobuf-c must read
 * the same; what protobuf-c reads as a PhysRead reply with at most max
 * ranges, the view must not call malformed. Disagreement aborts. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXR 4

static void check(const uint8_t *p, size_t len)
{
    struct frame_phys_read_view v;
    struct frame_range_view r[MAXR];
    int rc = frame_view_phys_read(p, len, &v, r, MAXR);
    if (rc != 0 && rc != -ENOMSG && rc != -EBADMSG && rc != -EMSGSIZE)
        abort();
    mdl_envelope *e = len ? mdlmap__v1__envelope__unpack(NULL, len, p) : NULL;
    bool pr = e && e->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY;
    if (rc == 0) {
        if (!pr || e->version != v.version || e->request_id != v.request_id || e->status != v.status ||
            e->phys_read_reply->n_ranges != v.n_ranges)
            abort();
        /* protobuf-c's detail is a C string: it ends at an embedded NUL */
        size_t dl = v.detail_len ? strnlen(v.detail, v.detail_len) : 0;
        if (strlen(e->detail) != dl || memcmp(e->detail, v.detail ? v.detail : "", dl))
            abort();
        for (size_t i = 0; i < v.n_ranges; i++) {
            const Mdlmap__V1__RangeData *d = e->phys_read_reply->ranges[i];
            if (d->status != r[i].status || d->data.len != r[i].len)
                abort();
            if (r[i].len && (r[i].data < p || r[i].data + r[i].len > p + len || memcmp(d->data.data, r[i].data, r[i].len)))
                abort();
        }
    } else if (rc == -EBADMSG && pr && e->phys_read_reply->n_ranges <= MAXR) {
        abort();
    }
    if (e)
        mdlmap__v1__envelope__free_unpacked(e, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        uint8_t *copy = malloc(size - 1 ? size - 1 : 1); /* exact size: ASan sees any overread */
        if (!copy)
            return 0;
        memcpy(copy, data + 1, size - 1);
        check(copy, size - 1);
        free(copy);
        return 0;
    }
    size_t i = 1;
#define NEXT() (i < size ? data[i++] : 0)
    static uint8_t bytes[512];
    for (size_t k = 0; k < sizeof(bytes); k++)
        bytes[k] = (uint8_t)(k * 13);
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysReadResponse rp = MDLMAP__V1__PHYS_READ_RESPONSE__INIT;
    Mdlmap__V1__RangeData rd[MAXR + 2], *rdp[MAXR + 2];
    size_t n = NEXT() % (MAXR + 3);
    for (size_t k = 0; k < n; k++) {
        mdlmap__v1__range_data__init(&rd[k]);
        rd[k].status = (NEXT() & 1) ? MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION : 0;
        rd[k].data.data = bytes;
        rd[k].data.len = (size_t)NEXT() * 2;
        rdp[k] = &rd[k];
    }
    rp.n_ranges = n;
    rp.ranges = rdp;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY;
    env.phys_read_reply = &rp;
    env.version = NEXT();
    uint64_t id = NEXT();
    env.request_id = id << (NEXT() % 57);
    env.detail = (NEXT() & 1) ? "not RAM" : "";
    uint8_t *f;
    size_t fl;
    if (frame_encode(&env, &f, &fl) < 0)
        return 0;
    uint8_t *p = f + MDLMAP_FRAME_HDR;
    size_t len = fl - MDLMAP_FRAME_HDR;
    while (i + 1 < size) { /* edits: a position (scaled over the payload) and a byte */
        size_t at = (size_t)data[i] * len / 256;
        p[at] = data[i + 1];
        i += 2;
    }
    check(p, len);
    free(f);
    return 0;
}
