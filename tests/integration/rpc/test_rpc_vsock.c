/* Guest RPC over virtio-vsock against a real mdlmap-hostd (harness frontend
 * plays QEMU + the guest), with the host API on its Unix socket:
 * lock/map, zero copy both ways through mdlmapctl's client library,
 * MMIO frames refused, coalescing across regions of one memfd, and the
 * run-down when the guest connection closes or QEMU goes away (R12). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdlmap_client.h"
#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (8u << 20) /* free low RAM in the harness layout */

static int lock(struct rpc_session *r, uint32_t off, uint32_t count, uint64_t *pfns, size_t n, uint64_t *h)
{
    return rpc_lock(r, off, count, pfns, n, 0, h);
}

static int map(struct rpc_session *r, uint64_t mdl, struct rpc_mapping *m)
{
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.mdl_handle = mdl;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = 16;
    return rpc_map(r, &rq, m);
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
    struct rig rig;
    uint64_t cids[1] = { 3 };
    rig_start(&rig, bin, "mdl-rpc-vsock", 1, cids);
    struct mdlmap_client cl;
    if (!tap_check(mdlmap_client_open(&cl, rig.api) == 0, "host API socket %s accepts a client", rig.api)) {
        rig_abort(&rig);
        return tap_done();
    }
    struct guest_opts o;
    guest_default_opts(&o);
    struct vdev *d = rig_vm_up(&rig, 0, &o, "mdl");
    if (!d) {
        rig_abort(&rig);
        return tap_done();
    }
    struct rpc_session c;
    if (!tap_check(rpc_open(&c, d), "connect to the RPC port %d", RPC_PORT)) {
        rig_abort(&rig);
        return tap_done();
    }
    struct rpc_hello_info hi;
    int st = rpc_hello(&c, 1, 1, "harness", &hi);
    tap_check(st == 0 && hi.guest_cid == 3, "Hello answered, guest_cid 3");

    /* 3 bytes across a page boundary, the two pages not adjacent */
    uint64_t pf[2] = { BUF_GPA / PG, BUF_GPA / PG + 5 }, mdl = 0;
    struct rpc_mapping m;
    tap_check(lock(&c, 4094, 3, pf, 2, &mdl) == 0, "lock a 3-byte buffer across a page boundary");
    st = map(&c, mdl, &m);
    tap_check(st == 0 && (m.address & 4095) == 4094 && m.vmas == 2,
              "map it: address ends in 0xffe, 2 runs (got %u)", m.vmas);
    uint64_t mh = m.map;
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
    uint64_t mdl2 = 0;
    m.vmas = 0;
    st = lock(&c, 0, 16 * PG, xr, 16, &mdl2);
    if (st == 0)
        st = map(&c, mdl2, &m);
    tap_check(st == 0 && m.vmas == 1,
              "16 pages across the RAM hole but contiguous in the memfd coalesce into 1 run (got %u)", m.vmas);

    /* a frame in the hole between the regions */
    uint64_t hole[1] = { (GM_HIGH_GPA - (1u << 20)) / PG }, mdl3;
    st = lock(&c, 0, 100, hole, 1, &mdl3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION, "a frame in the MMIO hole: %s", ntstatus_name(st));

    /* the guest program dies holding two mappings and two MDLs */
    uint64_t l0 = 0, leaks = 0, m0 = 0, k0 = 0;
    stats(&cl, &m0, &k0, &l0);
    tap_check(m0 == 2 && k0 == 2, "hostd holds 2 mappings, 2 MDLs (%llu, %llu)", (unsigned long long)m0,
              (unsigned long long)k0);
    rpc_close(&c);
    bool empty = wait_empty(&cl, &leaks);
    tap_check(empty && leaks == l0 + 4,
              "connection closed: everything unmapped, 4 leak records (%llu)", (unsigned long long)(leaks - l0));

    /* QEMU goes away with a mapping held */
    bool again = rpc_open(&c, d);
    tap_check(again && lock(&c, 0, PG, pf, 1, &mdl) == 0 && map(&c, mdl, &m) == 0, "map again");
    vdev_down(d);
    if (again)
        rpc_forget(&c);
    free(d);
    tap_check(wait_empty(&cl, &leaks), "QEMU gone: no mapping left");
    tap_check(hd_alive(&rig.p), "hostd still running");
    mdlmap_client_close(&cl);
    rig_stop(&rig);
    return tap_done();
}
