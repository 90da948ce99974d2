#include "harness_link.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "frame.h"
#include "mdlmap_ports.h"

#define MDL_RAM_GPA (8ull << 20)
#define MDL_RAM_END (16ull << 20)
#define CALL_TIMEOUT_MS 10000

struct harness_transport {
    struct mdl_transport t;
    struct vc_conn *c;
    struct frame_reader rd;
};

static long long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

static int ht_call(struct mdl_transport *t, const Mdlmap__V1__Envelope *req, int pass_fd,
                   Mdlmap__V1__Envelope **resp)
{
    struct harness_transport *h = (struct harness_transport *)t;
    if (pass_fd >= 0)
        return -EOPNOTSUPP;
    uint8_t *buf;
    size_t len;
    int rc = frame_encode(req, &buf, &len);
    if (rc < 0)
        return rc;
    rc = vc_send_all(h->c, buf, len, CALL_TIMEOUT_MS);
    free(buf);
    if (rc < 0)
        return rc;
    long long deadline = ms_now() + CALL_TIMEOUT_MS;
    for (;;) {
        const uint8_t *payload;
        size_t plen;
        rc = frame_reader_next(&h->rd, &payload, &plen);
        if (rc == 1)
            return frame_decode(payload, plen, resp);
        if (rc < 0)
            return rc;
        uint8_t tmp[16384];
        size_t room = frame_reader_room(&h->rd);
        long n = vc_try_recv(h->c, tmp, room < sizeof(tmp) ? room : sizeof(tmp));
        if (n < 0)
            return (int)n;
        if (n > 0) {
            if ((rc = frame_reader_feed(&h->rd, tmp, (size_t)n)) < 0)
                return rc;
            continue;
        }
        if (ms_now() > deadline)
            return -ETIMEDOUT;
        vdev_pump(50);
    }
}

static void ht_close(struct mdl_transport *t)
{
    struct harness_transport *h = (struct harness_transport *)t;
    vc_close(h->c, 3000, NULL);
    frame_reader_free(&h->rd);
    free(h);
}

static const struct mdl_transport_ops ht_ops = { ht_call, ht_close };

void harness_link_init(struct harness_link *l, struct vdev *d)
{
    l->d = d;
    l->next_gpa = MDL_RAM_GPA;
    l->end_gpa = MDL_RAM_END;
    mdl_pinner_linear_init(&l->pin, gm_ptr(&d->g.gm, MDL_RAM_GPA, MDL_RAM_END - MDL_RAM_GPA),
                           MDL_RAM_END - MDL_RAM_GPA, MDL_RAM_GPA >> 12);
}

struct mdl_session *harness_session(struct harness_link *l)
{
    int err = 0;
    struct vc_conn *c = vc_connect_priv(l->d, VSOCK_TYPE_STREAM, HOST_CID, MDLMAP_PORT_RPC, 3000, &err);
    if (!c)
        return NULL;
    struct harness_transport *h = calloc(1, sizeof(*h));
    if (!h) {
        vc_close(c, 1000, NULL);
        return NULL;
    }
    h->t.ops = &ht_ops;
    h->c = c;
    frame_reader_init(&h->rd, MDLMAP_MAX_FRAME);
    struct mdl_session *s = NULL;
    return mdl_session_open(&h->t, &l->pin.pinner, &s) == 0 ? s : NULL;
}

void *harness_alloc_pages(size_t npages, void *ctx)
{
    struct harness_link *l = ctx;
    uint64_t len = npages << 12;
    if (l->end_gpa - l->next_gpa < len)
        return NULL;
    void *p = gm_ptr(&l->d->g.gm, l->next_gpa, len);
    l->next_gpa += len;
    return p;
}

void harness_free_pages(void *p, size_t npages, void *ctx)
{
    (void)p;
    (void)npages;
    (void)ctx;
}
