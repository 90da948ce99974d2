/* --guest-addresses alias: a MapResponse tells the guest a per-VM alias of
 * the mapping's address, never hostd's own (which would give a hostile guest
 * hostd's address-space layout); unmap takes the alias; the host API shows
 * both. Without the option the guest is told the real address, as before.
 * VM B is served throughout. */
#include "rpc_session.h"

#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define BUF_PFN 0x800u

/* The host API's view of one mapping: (real address, guest address). */
static bool host_view(const char *api, uint64_t map, uint64_t *real, uint64_t *told)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *r;
    Mdlmap__V1__ListMappingsRequest rq = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
    e.list = &rq;
    bool found = false;
    if ((r = api_call(api, &e)) && r->list_reply)
        for (size_t i = 0; i < r->list_reply->n_mappings; i++)
            if (r->list_reply->mappings[i]->map_handle == map) {
                *real = r->list_reply->mappings[i]->address;
                *told = r->list_reply->mappings[i]->guest_address;
                found = true;
            }
    if (r)
        frame_envelope_free(r);
    return found;
}

static void one_run(const char *bin, bool alias)
{
    const char *what = alias ? "alias" : "real";
    const char *more[] = { "--guest-addresses", "alias", NULL };
    struct rig R;
    uint64_t cids[2] = { 3, 4 };
    rig_start_with(&R, bin, "mdlmap-alias", 2, cids, alias ? more : NULL);
    struct vdev *a = rig_vm_up(&R, 0, NULL, "VM A"), *b = rig_vm_up(&R, 1, NULL, "VM B");
    struct rpc_session s;
    if (a && b && rpc_open(&s, a)) {
        uint64_t pfn = BUF_PFN, mdl = 0;
        tap_check(rpc_lock(&s, 100, 200, &pfn, 1, 1, &mdl) == ST_OK, "[%s] lock", what);
        Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
        rq.mdl_handle = mdl;
        rq.cache_type = 1;
        rq.priority = 16;
        struct rpc_mapping m;
        tap_check(rpc_map(&s, &rq, &m) == ST_OK, "[%s] map", what);
        uint64_t real = 0, told = 0;
        tap_check(host_view(R.api, m.map, &real, &told) && told == m.address,
                  "[%s] the host API lists the mapping with the address the guest was told", what);
        if (alias) {
            tap_check(real != m.address && (m.address & 0xfff) == 100 && (real & 0xfff) == 100,
                      "[alias] the guest was told an alias (0x%llx), not hostd's address; ByteOffset kept",
                      (unsigned long long)m.address);
            tap_check(rpc_unmap(&s, m.map, real, mdl) == MDLMAP__V1__NT_STATUS__STATUS_NOT_MAPPED_VIEW,
                      "[alias] unmap with hostd's real address is refused");
        } else {
            tap_check(real == m.address, "[real] the guest was told the real address");
        }
        tap_check(rpc_unmap(&s, m.map, m.address, mdl) == ST_OK, "[%s] unmap with the address it was told", what);
        tap_check(rpc_unlock(&s, mdl, NULL) == ST_OK, "[%s] unlock", what);
        rpc_close(&s);
        char why[256] = "";
        int rc = vdev_echo_check(b, 4096, 4000, why, sizeof(why));
        tap_check(rc == 0, "[%s] VM B echoes%s%s", what, rc ? ": " : "", why);
    }
    if (a)
        vdev_down(a);
    if (b)
        vdev_down(b);
    free(a);
    free(b);
    rig_stop(&R);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    one_run(bin, false);
    one_run(bin, true);
    return tap_done();
}
