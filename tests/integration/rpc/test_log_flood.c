/* A guest must not be able to flood hostd's log: it used to write one info
 * line per lock/map/unmap/unlock and one warning per leaked MDL, about
 * 1 MB/s. Per-operation lines are debug now, and guest-triggered warnings go
 * through a per-VM limiter. Here VM A maps and unmaps 500 times and leaks 200
 * MDLs over 50 connections; hostd's log grows by a few KiB at most, and VM B
 * still echoes. */
#include <sys/stat.h>

#include "rpc_session.h"

#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define BUF_PFN 0x800u
#define LOG_BOUND (16 * 1024) /* 10 lines per 5 s per limiter, a handful of limiters */

static long log_size(const struct rig *r)
{
    struct stat st;
    return stat(r->p.log, &st) == 0 ? (long)st.st_size : -1;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig R;
    uint64_t cids[2] = { 3, 4 };
    rig_start(&R, bin, "mdlmap-logflood", 2, cids);
    struct vdev *a = rig_vm_up(&R, 0, NULL, "VM A");
    struct vdev *b = rig_vm_up(&R, 1, NULL, "VM B");
    if (!a || !b) {
        rig_abort(&R);
        return tap_done();
    }
    long before = log_size(&R);
    struct rpc_session s;
    unsigned ops = 0, leaked = 0;
    if (rpc_open(&s, a)) {
        uint64_t pfn = BUF_PFN, mdl;
        if (rpc_lock(&s, 0, 4096, &pfn, 1, 2, &mdl) == ST_OK) {
            for (int i = 0; i < 500; i++) {
                Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
                rq.mdl_handle = mdl;
                rq.cache_type = 1;
                rq.priority = 16;
                struct rpc_mapping m;
                if (rpc_map(&s, &rq, &m) == ST_OK && rpc_unmap(&s, m.map, m.address, mdl) == ST_OK)
                    ops++;
            }
            rpc_unlock(&s, mdl, NULL);
        }
        rpc_close(&s);
    }
    tap_check(ops == 500, "VM A mapped and unmapped 500 times (%u)", ops);
    for (int c = 0; c < 50; c++) {
        if (!rpc_open(&s, a))
            break;
        for (int i = 0; i < 4; i++) {
            uint64_t pfn = BUF_PFN + (uint64_t)i, mdl;
            leaked += rpc_lock(&s, 0, 4096, &pfn, 1, 2, &mdl) == ST_OK;
        }
        rpc_close(&s); /* the MDLs are leaked: hostd runs them down */
    }
    tap_check(leaked == 200, "VM A leaked 200 locked MDLs over 50 connections (%u)", leaked);
    mdl_envelope *st = api_stats(R.api);
    tap_check(st && st->stats_reply && st->stats_reply->leaks_reported >= 200 && st->stats_reply->locked_mdls == 0,
              "hostd ran them all down (%llu leaks reported)",
              st && st->stats_reply ? (unsigned long long)st->stats_reply->leaks_reported : 0ull);
    if (st)
        frame_envelope_free(st);
    long after = log_size(&R);
    tap_check(before >= 0 && after >= 0 && after - before < LOG_BOUND, "hostd's log grew by %ld bytes (< %d)",
              after - before, LOG_BOUND);
    char why[256] = "";
    int rc = vdev_echo_check(b, 8192, 4000, why, sizeof(why));
    tap_check(rc == 0, "VM B still echoes%s%s", rc ? ": " : "", why);
    vdev_down(a);
    vdev_down(b);
    free(a);
    free(b);
    rig_stop(&R);
    return tap_done();
}
