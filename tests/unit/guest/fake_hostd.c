#include "fake_hostd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define FAKE_BASE 0x7f1000000000ull

static struct mdl_pinner_linear lin;

/* Answer via a packed/unpacked round trip so the caller owns a real heap envelope. */
static int finish(Mdlmap__V1__Envelope *e, Mdlmap__V1__Envelope **resp)
{
    uint8_t *buf;
    size_t len;
    int rc = frame_encode(e, &buf, &len);
    if (rc < 0)
        return rc;
    rc = frame_decode(buf + MDLMAP_FRAME_HDR, len - MDLMAP_FRAME_HDR, resp);
    free(buf);
    return rc;
}

static int fake_call(struct mdl_transport *t, const Mdlmap__V1__Envelope *req, int pass_fd,
                     Mdlmap__V1__Envelope **resp)
{
    (void)pass_fd;
    struct fake_hostd *f = (struct fake_hostd *)t;
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
    return finish(&e, resp);
}

static void fake_close(struct mdl_transport *t)
{
    (void)t;
}

static const struct mdl_transport_ops fake_ops = { fake_call, fake_close };

struct mdl_session *fake_session(struct fake_hostd *f, void *buf, size_t len)
{
    memset(f, 0, sizeof(*f));
    f->t.ops = &fake_ops;
    mdl_pinner_linear_init(&lin, buf, len, 0x1000);
    struct mdl_session *s = NULL;
    return mdl_session_open(&f->t, &lin.pinner, &s) == 0 ? s : NULL;
}
