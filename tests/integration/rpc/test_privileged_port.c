/* Any process in a guest can speak the RPC protocol. Locking and mapping
 * expose guest-physical frames (the guest kernel's included) to host tools,
 * so by default hostd serves them only from privileged guest ports (< 1024),
 * which Linux lets only root (CAP_NET_BIND_SERVICE) bind; unprivileged
 * programs go through the agent daemon. --rpc-privileged-ports off restores
 * the open behaviour. */
#include "rpc_session.h"

#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define ST_DENIED MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED
#define BUF_PFN 0x800u /* GPA 8 MiB: unused by the harness rings */

static void one_run(const char *bin, bool policy_on)
{
    const char *what = policy_on ? "default" : "--rpc-privileged-ports off";
    struct rig R;
    uint64_t cid = 3;
    const char *off[] = { "--rpc-privileged-ports", "off", NULL };
    rig_start_with(&R, bin, "mdlmap-privport", 1, &cid, policy_on ? NULL : off);
    struct vdev *d = rig_vm_up(&R, 0, NULL, what);
    if (!d) {
        rig_abort(&R);
        return;
    }
    uint64_t pfn = BUF_PFN, mdl = 0;
    struct rpc_session u;
    if (tap_check(rpc_open_from(&u, d, 40001), "[%s] unprivileged port 40001 connects", what)) {
        tap_check(rpc_hello(&u, 1, 1, "unprivileged", NULL) == ST_OK, "[%s] Hello from port 40001 is served", what);
        int32_t st = rpc_lock(&u, 0, 4096, &pfn, 1, 2, &mdl);
        tap_check(st == (policy_on ? ST_DENIED : ST_OK), "[%s] Lock from port 40001: %s (%s)", what,
                  rpc_status_name(st), u.detail);
        Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
        rq.mdl_handle = mdl ? mdl : 1;
        rq.cache_type = 1;
        rq.priority = 16;
        struct rpc_mapping m;
        st = rpc_map(&u, &rq, &m);
        tap_check(st == (policy_on ? ST_DENIED : ST_OK), "[%s] Map from port 40001: %s", what, rpc_status_name(st));
        if (!policy_on && st == ST_OK)
            tap_check(rpc_unmap(&u, m.map, m.address, mdl) == ST_OK, "[%s] unmap", what);
        if (mdl)
            rpc_unlock(&u, mdl, NULL);
        rpc_close(&u);
    }
    struct rpc_session p;
    if (tap_check(rpc_open_from(&p, d, 700), "[%s] privileged port 700 connects", what)) {
        int32_t st = rpc_lock(&p, 0, 4096, &pfn, 1, 2, &mdl);
        tap_check(st == ST_OK, "[%s] Lock from port 700: %s", what, rpc_status_name(st));
        if (st == ST_OK)
            tap_check(rpc_unlock(&p, mdl, NULL) == ST_OK, "[%s] unlock", what);
        rpc_close(&p);
    }
    vdev_down(d);
    free(d);
    rig_stop(&R);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    one_run(bin, true);
    one_run(bin, false);
    return tap_done();
}
