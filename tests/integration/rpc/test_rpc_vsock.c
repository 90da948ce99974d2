/* Guest RPC over virtio-vsock against a real mdlmap-hostd (harness frontend
 * plays QEMU + the guest), with the host API on its Unix socket:
 * lock/map, zero copy both ways through mdlmapctl's client library,
 * MMIO frames refused, coalescing across regions of one memfd, and the
 * run-down when the guest connection closes or QEMU goes away (R12). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "mdlmap_client.h"
#include "harness.h"

#define PG 4096u
#define BUF_GPA (8u << 20) /* free low RAM in the harness layout */

static uint64_t next_id = 1;

static mdl_envelope *rpc(struct vc_conn *c, mdl_envelope *req)
{
    uint8_t *f, hdr[4];
    size_t n;
    req->version = 1;
    req->request_id = next_id++;
    if (frame_encode(req, &f, &n) < 0)
        return NULL;
    int rc = vc_send_all(c, f, n, 5000);
    free(f);
    if (rc < 0 || vc_recv_all(c, hdr, 4, 5000) < 0)
        return NULL;
    uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
    if (!len || len > MDLMAP_MAX_FRAME)
        return NULL;
    uint8_t *p = malloc(len);
    mdl_envelope *r = NULL;
    if (p && vc_recv_all(c, p, len, 5000) == 0)
        frame_decode(p, len, &r);
    free(p);
    if (r && r->request_id != req->request_id) {
        frame_envelope_free(r);
        r = NULL;
    }
    return r;
}

static int lock(struct vc_conn *c, uint32_t off, uint32_t count, uint64_t *pfns, size_t n, uint64_t *h)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__LockRequest rq = MDLMAP__V1__LOCK_REQUEST__INIT;
    rq.byte_offset = off;
    rq.byte_count = count;
    rq.pfns = pfns;
    rq.n_pfns = n;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    env.lock = &rq;
    mdl_envelope *r = rpc(c, &env);
    if (!r)
        return -1;
    int st = r->status;
    if (st == 0)
        *h = r->lock_reply->mdl_handle;
    frame_envelope_free(r);
    return st;
}

static int map(struct vc_conn *c, uint64_t mdl, uint64_t *mh, uint64_t *addr, uint32_t *vmas)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.mdl_handle = mdl;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = 16;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    env.map = &rq;
    mdl_envelope *r = rpc(c, &env);
    if (!r)
        return -1;
    int st = r->status;
    if (st == 0) {
        *mh = r->map_reply->map_handle;
        *addr = r->map_reply->address;
        *vmas = r->map_reply->vma_count;
    }
    frame_envelope_free(r);
    return st;
}

static bool stats(struct mdlmap_client *cl, uint64_t *maps, uint64_t *mdls, uint64_t *leaks)
{
    mdl_envelope *r;
    int rc = mdlmap_client_stats(cl, &r);
    if (rc == 0) {
        *maps = r->stats_reply->mappings;
        *mdls = r->stats_reply->locked_mdls;
        *leaks = r->stats_reply->leaks_reported;
    }
    frame_envelope_free(r);
    return rc == 0;
}

/* wait until hostd has run the connection down */
static bool wait_empty(struct mdlmap_client *cl, uint64_t *leaks)
{
    uint64_t maps = 1, mdls = 1;
    for (int i = 0; i < 100 && (maps || mdls); i++) {
        vdev_poll();
        if (!stats(cl, &maps, &mdls, leaks))
            return false;
        if (maps || mdls)
            usleep(20000);
    }
    return maps == 0 && mdls == 0;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    char dir[] = "/tmp/mdl-rpc-vsock.XXXXXX", api[160];
    if (!mkdtemp(dir))
        return 2;
    snprintf(api, sizeof(api), "%s/api.sock", dir);
    const char *extra[] = { "--api", api, NULL };
    struct hd_proc p;
    uint64_t cids[1] = { 3 };
    start_or_die(&p, bin, 1, cids, extra);
    struct mdlmap_client cl;
    if (!tap_check(mdlmap_client_open(&cl, api) == 0, "host API socket %s accepts a client", api)) {
        hd_kill(&p);
        return tap_done();
    }
    struct vdev *d = vdev_alloc();
    struct guest_opts o;
    guest_default_opts(&o);
    if (!up_or_report(d, &p, 0, &o, "mdl")) {
        hd_kill(&p);
        return tap_done();
    }
    int err = 0;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 1100, 3000, &err);
    if (!tap_check(c != NULL, "connect to the RPC port 1100")) {
        hd_kill(&p);
        return tap_done();
    }
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__HelloRequest hello = MDLMAP__V1__HELLO_REQUEST__INIT;
    hello.min_version = hello.max_version = 1;
    hello.client = "harness";
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    mdl_envelope *r = rpc(c, &env);
    tap_check(r && r->status == 0 && r->hello_reply->guest_cid == 3, "Hello answered, guest_cid 3");
    frame_envelope_free(r);

    /* 3 bytes across a page boundary, the two pages not adjacent */
    int st;
    uint64_t pf[2] = { BUF_GPA / PG, BUF_GPA / PG + 5 }, mdl = 0, mh = 0, addr = 0;
    uint32_t vmas = 0;
    tap_check(lock(c, 4094, 3, pf, 2, &mdl) == 0, "lock a 3-byte buffer across a page boundary");
    st = map(c, mdl, &mh, &addr, &vmas);
    tap_check(st == 0 && (addr & 4095) == 4094 && vmas == 2,
              "map it: address ends in 0xffe, 2 runs (got %u)", vmas);
    uint8_t *g0 = gm_ptr(&d->g.gm, pf[0] * PG, PG), *g1 = gm_ptr(&d->g.gm, pf[1] * PG, PG);
    memcpy(g0 + 4094, "AB", 2); /* the guest writes after mapping */
    g1[0] = 'C';
    char got[4] = "";
    tap_check(mdlmap_client_read(&cl, mh, 0, got, 3) == 0 && memcmp(got, "ABC", 3) == 0,
              "host reads the guest's bytes through hostd's mapping");
    tap_check(mdlmap_client_write(&cl, mh, 0, "xyz", 3) == 0 && memcmp(g0 + 4094, "xy", 2) == 0 && g1[0] == 'z',
              "host writes land in the guest's pages");
    tap_check(mdlmap_client_read(&cl, mh, 1, got, 3) == -EREMOTEIO &&
                  cl.last_status == MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER,
              "read past byte_count refused");

    /* last 8 pages of the low region + first 8 of the high one: one memfd, one run */
    uint64_t xr[16];
    uint64_t low_end = (uint64_t)(o.mem_size ? o.mem_size : 32u << 20) / 2;
    for (int i = 0; i < 8; i++) {
        xr[i] = (low_end - 8 * PG) / PG + (uint64_t)i;
        xr[8 + i] = GM_HIGH_GPA / PG + (uint64_t)i;
    }
    uint64_t mdl2 = 0, mh2 = 0, addr2 = 0;
    vmas = 0;
    st = lock(c, 0, 16 * PG, xr, 16, &mdl2);
    if (st == 0)
        st = map(c, mdl2, &mh2, &addr2, &vmas);
    tap_check(st == 0 && vmas == 1,
              "16 pages across the RAM hole but contiguous in the memfd coalesce into 1 run (got %u)", vmas);

    /* a frame in the hole between the regions */
    uint64_t hole[1] = { (GM_HIGH_GPA - (1u << 20)) / PG }, mdl3;
    st = lock(c, 0, 100, hole, 1, &mdl3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION, "a frame in the MMIO hole: %s", ntstatus_name(st));

    /* the guest program dies holding two mappings and two MDLs */
    uint64_t l0 = 0, leaks = 0, m0 = 0, k0 = 0;
    stats(&cl, &m0, &k0, &l0);
    tap_check(m0 == 2 && k0 == 2, "hostd holds 2 mappings, 2 MDLs (%llu, %llu)", (unsigned long long)m0,
              (unsigned long long)k0);
    vc_close(c, 3000, NULL);
    bool empty = wait_empty(&cl, &leaks);
    tap_check(empty && leaks == l0 + 4,
              "connection closed: everything unmapped, 4 leak records (%llu)", (unsigned long long)(leaks - l0));

    /* QEMU goes away with a mapping held */
    c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 1100, 3000, &err);
    tap_check(c && lock(c, 0, PG, pf, 1, &mdl) == 0 && map(c, mdl, &mh, &addr, &vmas) == 0, "map again");
    vdev_down(d);
    free(d);
    tap_check(wait_empty(&cl, &leaks), "QEMU gone: no mapping left");
    tap_check(hd_alive(&p), "hostd still running");
    mdlmap_client_close(&cl);
    stop_and_check(&p);
    unlink(api);
    rmdir(dir);
    return tap_done();
}
