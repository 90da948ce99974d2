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
};

static long long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000ll + ts.tv_nsec / 1000000;
}

static int ht_send(struct mdl_transport *t, const uint8_t *buf, size_t len, int pass_fd)
{
    struct harness_transport *h = (struct harness_transport *)t;
    if (pass_fd >= 0)
        return -EOPNOTSUPP;
    return vc_send_all(h->c, buf, len, CALL_TIMEOUT_MS);
}

/* The session's reply path over the harness: whatever the device has
 * delivered, pumping it until something arrives. */
static long ht_recv(struct mdl_transport *t, uint8_t *buf, size_t cap)
{
    struct harness_transport *h = (struct harness_transport *)t;
    long long deadline = ms_now() + CALL_TIMEOUT_MS;
    for (;;) {
        long n = vc_try_recv(h->c, buf, cap);
        if (n != 0)
            return n;
        if (ms_now() > deadline)
            return -ETIMEDOUT;
        vdev_pump(50);
    }
}

static void ht_close(struct mdl_transport *t)
{
    struct harness_transport *h = (struct harness_transport *)t;
    vc_close(h->c, 3000, NULL);
    free(h);
}

static const struct mdl_transport_ops ht_ops = { ht_send, ht_recv, ht_close };

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
