/* Large MDLs over the guest RPC port: a harness guest with 2.5 GiB of sparse
 * RAM (memfd: only touched pages cost memory) locks a contiguous 1 GiB buffer
 * as one FrameRun, maps it to system VA in a single host mapping, and the
 * host reads and writes its far end through the host API. Before frame runs
 * a 1 GiB MDL needed 2 MiB of pfns, over the 1 MiB frame limit, and more than
 * 65536 pages were refused anyway.
 * usage: test_large_mdl HOSTD */
#include <inttypes.h>
#include <string.h>

#include "mdlmap_client.h"
#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (128ull << 20) /* low region: GPA 0 .. 1.25 GiB */
#define BUF_LEN (1u << 30)
#define BUF_PAGES (BUF_LEN / PG)

static void large(struct rig *rig, struct vdev *d)
{
    struct rpc_session r;
    if (!tap_check(rpc_open(&r, d), "guest connects to port %d", RPC_PORT))
        return;
    struct rpc_hello_info hi;
    int32_t hst = rpc_hello(&r, 1, 1, "large", &hi);
    tap_check(hst == 0 && hi.max_mdl_pages == 1048575,
              "Hello: max_mdl_pages %" PRIu64 " (4 GiB - 1 page)", hi.max_mdl_pages);
    uint8_t *first = gm_ptr(&d->g.gm, BUF_GPA, 16), *last = gm_ptr(&d->g.gm, BUF_GPA + BUF_LEN - 16, 16);
    if (!tap_check(first && last, "the 1 GiB buffer is guest RAM of one region"))
        goto out;
    memcpy(first, "first guest page", 16);
    memcpy(last, "last guest bytes", 16);
    uint64_t mdl = 0;
    int32_t st = rpc_lock_run(&r, 0, BUF_LEN, BUF_GPA / PG, BUF_PAGES, 1, &mdl);
    tap_check(st == 0 && mdl, "Lock of a contiguous 1 GiB MDL as one run -> %s%s%s", rpc_status_name(st),
              st ? ": " : "", st ? r.detail : "");
    /* High priority: the default per-VM page quota is 1 GiB, Normal may use 90% */
    Mdlmap__V1__MapRequest mq = MDLMAP__V1__MAP_REQUEST__INIT;
    mq.mdl_handle = mdl;
    mq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    mq.priority = 32;
    struct rpc_mapping m = { 0, 0, 0, 0 };
    st = rpc_map(&r, &mq, &m);
    tap_check(st == 0 && m.map && m.vmas == 1, "Map to system VA: one host mapping (vma_count %u) -> %s%s%s", m.vmas,
              rpc_status_name(st), st ? ": " : "", st ? r.detail : "");
    /* the host side: the host API client library, as a host tool reads */
    struct mdlmap_client hc;
    if (tap_check(mdlmap_client_open(&hc, rig->api) == 0, "host API client connects")) {
        char got[16] = "";
        int rc = mdlmap_client_read(&hc, m.map, BUF_LEN - 16, got, 16);
        tap_check(rc == 0 && !memcmp(got, "last guest bytes", 16),
                  "host API reads the buffer's last 16 bytes (1 GiB - 16 in): the guest's");
        rc = mdlmap_client_read(&hc, m.map, 0, got, 16);
        tap_check(rc == 0 && !memcmp(got, "first guest page", 16), "host API reads the buffer's first bytes");
        rc = mdlmap_client_write(&hc, m.map, BUF_LEN - 1, "!", 1);
        tap_check(rc == 0 && last[15] == '!', "host API writes the last byte; the guest sees it");
        rc = mdlmap_client_read(&hc, m.map, BUF_LEN - 1, got, 2);
        tap_check(rc < 0, "a read past the buffer's end is refused (%d)", rc);
        mdlmap_client_close(&hc);
    }
    st = rpc_unmap(&r, m.map, m.address, mdl);
    tap_check(st == 0, "Unmap -> %s", rpc_status_name(st));
    unsigned rel = 0;
    st = rpc_unlock(&r, mdl, &rel);
    tap_check(st == 0, "Unlock -> %s", rpc_status_name(st));
    /* the same buffer with a run too short for it is a parameter error */
    st = rpc_lock_run(&r, 0, BUF_LEN, BUF_GPA / PG, BUF_PAGES - 1, 1, &mdl);
    tap_check(st == (int32_t)0xC000000D, "Lock of 1 GiB with a run one page short -> %s", rpc_status_name(st));
out:
    rpc_close(&r);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cids[1] = { 3 };
    rig_start(&rig, bin, "mdl-large", 1, cids);
    struct guest_opts o;
    guest_default_opts(&o);
    o.mem_size = 2560ull << 20; /* sparse: two 1.25 GiB halves */
    struct vdev *d = rig_vm_up(&rig, 0, &o, "large");
    if (d) {
        large(&rig, d);
        char why[128] = "";
        tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0 && hd_alive(&rig.p), "hostd healthy %s",
                  why);
        vdev_down(d);
        free(d);
    }
    if (tap_failures || getenv("MDL_TEST_HOSTD_LOG"))
        hd_log_tail(&rig.p, 60);
    rig_stop(&rig);
    return tap_done();
}
