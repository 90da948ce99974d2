/* ListMappings lookups against a real hostd with two harness guests, each
 * mapping buffers: by guest address (the buffer [guest_address,
 * guest_address + byte_count) holds it, per VM) and by map handle, through
 * the client library (mdlmap_client_find / _find_handle / _list_filter).
 * hostd runs with --guest-addresses alias, so the addresses the guests were
 * told are not hostd's. */
#include <stdlib.h>
#include <string.h>

#include "mdlmap_client.h"
#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (8u << 20)

struct buf {
    uint64_t map, address;
};

static bool map_buf(struct rpc_session *s, unsigned k, uint32_t off, uint32_t count, struct buf *b)
{
    uint64_t pfn = BUF_GPA / PG + 4 * k, mdl = 0;
    struct rpc_mapping m;
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = MDLMAP__V1__PAGE_PRIORITY__NORMAL_PAGE_PRIORITY;
    if (rpc_lock_run(s, off, count, pfn, (off + count + PG - 1) / PG, 0, &mdl) != 0)
        return false;
    rq.mdl_handle = mdl;
    if (rpc_map(s, &rq, &m) != 0)
        return false;
    b->map = m.map;
    b->address = m.address;
    return true;
}

/* Number of mappings the filtered list returns, -1 on failure; *first: the first's handle. */
static int count(struct mdlmap_client *c, const char *vm, uint64_t addr, uint64_t handle, uint64_t *first)
{
    mdl_envelope *r;
    int rc = mdlmap_client_list_filter(c, vm, addr, handle, &r);
    int n = rc == 0 ? (int)r->list_reply->n_mappings : -1;
    if (n > 0 && first)
        *first = r->list_reply->mappings[0]->map_handle;
    frame_envelope_free(r);
    return n;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cids[2] = { 3, 4 };
    const char *more[] = { "--guest-addresses", "alias", NULL };
    rig_start_with(&rig, bin, "mdl-api-lookup", 2, cids, more);
    struct vdev *d[2] = { rig_vm_up(&rig, 0, NULL, "vm0"), rig_vm_up(&rig, 1, NULL, "vm1") };
    struct rpc_session s[2];
    struct buf b[2][2];
    bool ok = d[0] && d[1];
    for (unsigned v = 0; ok && v < 2; v++)
        ok = rpc_open(&s[v], d[v]) && map_buf(&s[v], 0, 100, 200, &b[v][0]) && map_buf(&s[v], 1, 0, 3 * PG, &b[v][1]);
    if (!tap_check(ok, "two guests each map two buffers (100+200 bytes, 3 pages)")) {
        rig_abort(&rig);
        return tap_done();
    }
    struct mdlmap_client c;
    tap_check(mdlmap_client_open(&c, rig.api) == 0, "host API client");

    uint64_t h = 0;
    const struct buf *a = &b[0][0];
    tap_check(count(&c, "vm0", a->address, 0, &h) == 1 && h == a->map, "the first byte of a buffer finds it");
    tap_check(count(&c, "vm0", a->address + 199, 0, &h) == 1 && h == a->map, "its last byte too");
    tap_check(count(&c, "vm0", a->address + 200, 0, NULL) == 0, "the byte after it does not");
    tap_check(count(&c, "vm0", a->address - 1, 0, NULL) == 0, "nor the byte before it (same page)");
    tap_check(count(&c, "vm1", a->address, 0, NULL) == 0, "another VM's filter does not find it");
    const struct buf *big = &b[1][1];
    tap_check(count(&c, "vm1", big->address + 2 * PG + 5, 0, &h) == 1 && h == big->map,
              "an address in the third page of a 3-page buffer");
    tap_check(count(&c, NULL, 0, 0, NULL) == 4, "no filter: all 4 mappings");
    tap_check(count(&c, NULL, 0, b[1][0].map, &h) == 1 && h == b[1][0].map, "by map handle");
    tap_check(count(&c, "vm0", 0, b[1][0].map, NULL) == 0, "by map handle, in another VM: none");
    tap_check(count(&c, NULL, 0, b[1][0].map ^ 0x10, NULL) == 0, "an unknown handle: none");
    tap_check(count(&c, NULL, b[0][1].address + 1, b[0][1].map, &h) == 1 && h == b[0][1].map &&
                  count(&c, NULL, b[0][0].address, b[0][1].map, NULL) == 0,
              "handle and address together: both must match");

    struct mdlmap_mapping m;
    tap_check(mdlmap_client_find(&c, "vm1", big->address + 17, &m) == 0 && m.map_handle == big->map &&
                  m.guest_address == big->address && m.address != m.guest_address && strcmp(m.vm_name, "vm1") == 0 &&
                  m.byte_count == 3 * PG,
              "mdlmap_client_find: the mapping, its alias and real address differ");
    tap_check(mdlmap_client_find(&c, "vm0", big->address + 17, &m) == -ENOENT, "not in vm0: -ENOENT");
    tap_check(mdlmap_client_find(&c, NULL, 0, &m) == -EINVAL, "address 0 is not a lookup: -EINVAL");
    tap_check(mdlmap_client_find_handle(&c, a->map, &m) == 0 && m.guest_address == a->address &&
                  m.byte_offset == 100,
              "mdlmap_client_find_handle");
    /* hostd's real address is not a guest address: no lookup by it */
    mdl_envelope *r;
    uint64_t real = 0;
    if (mdlmap_client_list_filter(&c, NULL, 0, a->map, &r) == 0 && r->list_reply->n_mappings == 1)
        real = r->list_reply->mappings[0]->address;
    frame_envelope_free(r);
    tap_check(real && real != a->address && count(&c, "vm0", real, 0, NULL) == 0,
              "the real (hostd) address finds nothing: lookups use what the guest was told");

    mdlmap_client_close(&c);
    for (unsigned v = 0; v < 2; v++) {
        rpc_close(&s[v]);
        vdev_down(d[v]);
        free(d[v]);
    }
    rig_stop(&rig);
    return tap_done();
}
