/* The selftest suite (R1..R13) against a real mdlmap-hostd, with the
 * vhost-user frontend harness playing QEMU and the guest's vsock driver.
 * argv[1]: path of mdlmap-hostd. Afterwards hostd's host API must show no
 * mapping or locked MDL left, and the R12 leaks reported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness_link.h"
#include "mdl_selftest.h"
#include "rpc_session.h"
#include "wdm_compat.h"

static struct mdl_session *open_second(void *ctx)
{
    return harness_session(ctx);
}

/* Zero copy: hostd reads the guest's bytes through its mapping, and a host
 * write shows up in guest RAM. */
static void check_host_view(const char *api, struct harness_link *link)
{
    uint8_t *buf = harness_alloc_pages(2, link);
    if (!tap_check(buf != NULL, "2 pages of guest RAM for the host view"))
        return;
    for (int i = 0; i < 8192; i++)
        buf[i] = (uint8_t)(i * 7);
    PMDL m = IoAllocateMdl(buf + 4000, 200, FALSE, FALSE, NULL);
    MmProbeAndLockPages(m, KernelMode, IoModifyAccess);
    PVOID a = MmGetSystemAddressForMdlSafe(m, NormalPagePriority);
    struct mdl_map_info mi;
    int bad = !a || !mdl_find_mapping(mdl_from_wdm(m), (uint64_t)(uintptr_t)a, &mi);
    Mdlmap__V1__Envelope e = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__ReadRequest rd = MDLMAP__V1__READ_REQUEST__INIT;
    rd.map_handle = bad ? 0 : mi.map_handle;
    rd.length = 200;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_READ;
    e.read = &rd;
    bad |= (r = api_call(api, &e)) == NULL || r->status != 0 || r->body_case != MDLMAP__V1__ENVELOPE__BODY_READ_REPLY ||
           r->read_reply->data.len != 200 || memcmp(r->read_reply->data.data, buf + 4000, 200) != 0;
    tap_check(!bad, "host reads the guest bytes through the mapping (page-crossing buffer)");
    if (r)
        frame_envelope_free(r);
    r = NULL;
    Mdlmap__V1__WriteRequest wr = MDLMAP__V1__WRITE_REQUEST__INIT;
    wr.map_handle = rd.map_handle;
    wr.offset = 90;
    wr.data.data = (uint8_t *)"HOST";
    wr.data.len = 4;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
    e.write = &wr;
    int wbad = (r = api_call(api, &e)) == NULL || r->status != 0 || memcmp(buf + 4090, "HOST", 4) != 0;
    tap_check(!wbad, "a host write through the mapping lands in guest RAM");
    if (r)
        frame_envelope_free(r);
    MmUnmapLockedPages(a, m);
    MmUnlockPages(m);
    IoFreeMdl(m);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cid = 3;
    rig_start(&rig, bin, "mdlmap-mdltest", 1, &cid);
    struct guest_opts o;
    guest_default_opts(&o);
    struct vdev *d = rig_vm_up(&rig, 0, &o, "harness guest");
    if (!d)
        goto out;
    struct harness_link link;
    harness_link_init(&link, d);
    struct mdl_session *s = harness_session(&link);
    if (!tap_check(s != NULL, "session to hostd port %d (Hello)", RPC_PORT))
        goto down;
    struct mdl_selftest_env env = {
        .session = s, .filter = argc > 2 ? argv[2] : NULL,
        .alloc_pages = harness_alloc_pages, .free_pages = harness_free_pages, .alloc_ctx = &link,
        .open_session = open_second,
    };
    /* the suite prints "ok - R.." lines of its own: count them as checks */
    bool adopted = tap_adopt_begin() == 0;
    int failed = mdl_selftest_run(&env);
    if (adopted)
        tap_adopt_end();
    else
        tap_check(failed == 0, "selftest suite: %d failed", failed);
    mdl_set_default_session(s);
    check_host_view(rig.api, &link);
    mdl_set_default_session(NULL);
    mdl_session_close(s);
    Mdlmap__V1__Envelope *st = NULL;
    for (int i = 0; i < 20 && st == NULL; i++) {   /* let hostd finish the run-down */
        vdev_pump(50);
        st = api_stats(rig.api);
    }
    if (tap_check(st != NULL, "host API stats")) {
        Mdlmap__V1__StatsResponse *r = st->stats_reply;
        bool clean = r->mappings == 0 && r->locked_mdls == 0;
        bool leaks = env.filter || r->leaks_reported >= 2;
        tap_check(clean, "hostd holds nothing afterwards (mappings %llu, locked MDLs %llu)",
                  (unsigned long long)r->mappings, (unsigned long long)r->locked_mdls);
        tap_check(leaks, "hostd reported the R12 leaks (%llu)", (unsigned long long)r->leaks_reported);
        frame_envelope_free(st);
    }
down:
    vdev_down(d);
    free(d);
out:
    rig_stop(&rig);
    return tap_done();
}
