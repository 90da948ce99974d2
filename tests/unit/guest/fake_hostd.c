#include "fake_hostd.h"

#include <endian.h>
#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define FAKE_BASE 0x7f1000000000ull

static struct mdl_pinner_linear lin;

/* Room for n more bytes at the end of the answer queue. */
static uint8_t *outq_room(struct fake_hostd *f, size_t n)
{
    if (f->outq_off) {
        memmove(f->outq, f->outq + f->outq_off, f->outq_len - f->outq_off);
        f->outq_len -= f->outq_off;
        f->outq_off = 0;
    }
    return n <= sizeof(f->outq) - f->outq_len ? f->outq + f->outq_len : NULL;
}

int fake_inject(struct fake_hostd *f, const void *p, size_t n)
{
    uint8_t *d = outq_room(f, n);
    if (!d)
        return -ENOBUFS;
    memcpy(d, p, n);
    f->outq_len += n;
    return 0;
}

/* Queue e as one frame. */
static int finish(struct fake_hostd *f, const Mdlmap__V1__Envelope *e)
{
    uint8_t *d = outq_room(f, 0);
    size_t len;
    int rc = frame_encode_to(e, d, sizeof(f->outq) - f->outq_len, &len);
    if (rc == 0)
        f->outq_len += len;
    return rc;
}

static void *fa_alloc(void *ctx, size_t n)
{
    struct fake_hostd *f = ctx;
    size_t a = alignof(max_align_t);
    n = (n + a - 1) & ~(a - 1);
    if (n > sizeof(f->arena) - f->arena_used)
        return NULL;
    void *p = f->arena + f->arena_used;
    f->arena_used += n;
    return p;
}

static void fa_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p;
}

static int answer(struct fake_hostd *f, const Mdlmap__V1__Envelope *req)
{
    Mdlmap__V1__Envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__HelloResponse h = MDLMAP__V1__HELLO_RESPONSE__INIT;
    Mdlmap__V1__LockResponse l = MDLMAP__V1__LOCK_RESPONSE__INIT;
    Mdlmap__V1__MapResponse m = MDLMAP__V1__MAP_RESPONSE__INIT;
    Mdlmap__V1__UnmapResponse u = MDLMAP__V1__UNMAP_RESPONSE__INIT;
    Mdlmap__V1__UnlockResponse k = MDLMAP__V1__UNLOCK_RESPONSE__INIT;
    e.version = 1;
    e.request_id = req->request_id;
    f->requests++;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_HELLO:
        h.version = 1;
        h.guest_cid = 3;
        h.page_size = 4096;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY;
        e.hello_reply = &h;
        break;
    case MDLMAP__V1__ENVELOPE__BODY_LOCK:
        l.mdl_handle = ++f->next_handle;
        l.pfns = (uint64_t *)f->lock_pfns;
        l.n_pfns = f->lock_npfns;
        l.runs = f->lock_runs;
        l.n_runs = f->lock_nruns;
        f->locked++;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY;
        e.lock_reply = &l;
        break;
    case MDLMAP__V1__ENVELOPE__BODY_MAP:
        f->last_priority = req->map->priority;
        f->last_requested = req->map->requested_address;
        f->last_cache = req->map->cache_type;
        snprintf(f->last_consumer, sizeof(f->last_consumer), "%s", req->map->consumer);
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY;
        e.map_reply = &m;
        if (f->fail_map) {
            e.status = f->fail_map;
            e.detail = "injected";
            f->fail_map = 0;
            break;
        }
        m.map_handle = ++f->next_handle;
        m.base_address = FAKE_BASE + (m.map_handle << 20);
        m.address = m.base_address + 0x123;   /* tests use ByteOffset 0x123 */
        m.cache_type = req->map->cache_type;
        m.read_only = (req->map->priority & MDL_MAPPING_NO_WRITE) != 0;
        f->mapped++;
        for (int i = 0; i < 64; i++)
            if (!f->map_mdl[i][0]) {
                f->map_mdl[i][0] = m.map_handle;
                f->map_mdl[i][1] = req->map->mdl_handle;
                break;
            }
        break;
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP:
        if (f->fail_unmap) {   /* refused: the mapping stays until its MDL is unlocked */
            e.status = f->fail_unmap;
            e.detail = "injected";
            f->fail_unmap = 0;
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY;
            e.unmap_reply = &u;
            break;
        }
        for (int i = 0; i < 64; i++)
            if (f->map_mdl[i][0] == req->unmap->map_handle) {
                f->map_mdl[i][0] = 0;
                f->mapped--;
            }
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY;
        e.unmap_reply = &u;
        break;
    case MDLMAP__V1__ENVELOPE__BODY_UNLOCK:
        f->locked--;
        for (int i = 0; i < 64; i++)   /* hostd drops the MDL's mappings with it (R10) */
            if (f->map_mdl[i][0] && f->map_mdl[i][1] == req->unlock->mdl_handle) {
                f->map_mdl[i][0] = 0;
                f->mapped--;
                k.mappings_released++;
            }
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK_REPLY;
        e.unlock_reply = &k;
        break;
    default:
        e.status = MDL_STATUS_INVALID_DEVICE_REQUEST;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY;
        e.unmap_reply = &u;
    }
    return finish(f, &e);
}

/* The library sends whole frames: answer each. */
static int fake_send(struct mdl_transport *t, const uint8_t *buf, size_t len, int pass_fd)
{
    (void)pass_fd;
    struct fake_hostd *f = (struct fake_hostd *)t;
    while (len) {
        uint32_t n;
        if (len < MDLMAP_FRAME_HDR)
            return -EPROTO;
        memcpy(&n, buf, sizeof(n));
        n = le32toh(n);
        if (n > len - MDLMAP_FRAME_HDR)
            return -EPROTO;
        f->arena_used = 0;
        ProtobufCAllocator a = { fa_alloc, fa_free, f };
        Mdlmap__V1__Envelope *req;
        int rc = frame_decode_with(buf + MDLMAP_FRAME_HDR, n, &a, &req);
        if (rc < 0)
            return rc;
        if ((rc = answer(f, req)) < 0)
            return rc;
        buf += MDLMAP_FRAME_HDR + n;
        len -= MDLMAP_FRAME_HDR + n;
    }
    return 0;
}

static long fake_recv(struct mdl_transport *t, uint8_t *buf, size_t cap)
{
    struct fake_hostd *f = (struct fake_hostd *)t;
    size_t n = f->outq_len - f->outq_off;
    if (!n)
        return -ECONNRESET;   /* a real stream would wait forever */
    if (n > cap)
        n = cap;
    if (f->recv_chunk && n > f->recv_chunk)
        n = f->recv_chunk;
    memcpy(buf, f->outq + f->outq_off, n);
    f->outq_off += n;
    f->recvs++;
    return (long)n;
}

static void fake_close(struct mdl_transport *t)
{
    (void)t;
}

static const struct mdl_transport_ops fake_ops = { fake_send, fake_recv, fake_close };

struct mdl_session *fake_session_pinner(struct fake_hostd *f, struct mdl_pinner *pinner)
{
    memset(f, 0, sizeof(*f));
    f->t.ops = &fake_ops;
    struct mdl_session *s = NULL;
    return mdl_session_open(&f->t, pinner, &s) == 0 ? s : NULL;
}

struct mdl_session *fake_session(struct fake_hostd *f, void *buf, size_t len)
{
    mdl_pinner_linear_init(&lin, buf, len, 0x1000);
    return fake_session_pinner(f, &lin.pinner);
}
