/* A hostile guest on the mdlmap RPC port (CID 2, port 1100) of a real
 * mdlmap-hostd, driven through the vhost-user frontend harness: forged frames
 * (RAM the guest does not have, MMIO holes, bad geometry, pfn overflow),
 * unknown / stale / foreign handles (two VMs on one hostd), and broken
 * framing (truncated, zero, oversized, garbage, no body, wrong version).
 * Every refusal must carry a clear NTSTATUS (printed); hostd must stay
 * healthy (the other VM maps, echo works) and end with nothing held.
 * argv[1]: path of mdlmap-hostd.
 *
 * Harness guest RAM (gm_create, 32 MiB): pfns 0x0..0xfff at GPA 0 and
 * 0x100000..0x100fff at GPA 4 GiB; everything between is a hole. */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "mdlmap_client.h"
#include "rpc_session.h"

#define CALL_MS 5000
#define BUF_PFN 0x800u            /* GPA 8 MiB: unused by the harness rings */
#define HIGH_PFN 0x100000u        /* GPA 4 GiB: start of the high region */
#define RAM_END_PFN 0x101000u     /* first pfn past the high region */

enum {
    ST_OK = MDLMAP__V1__NT_STATUS__STATUS_SUCCESS,
    ST_PARAM = MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER,
    ST_AV = MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION,
    ST_HANDLE = MDLMAP__V1__NT_STATUS__STATUS_INVALID_HANDLE,
    ST_NOT_MAPPED = MDLMAP__V1__NT_STATUS__STATUS_NOT_MAPPED_VIEW,
    ST_NOT_LOCKED = MDLMAP__V1__NT_STATUS__STATUS_NOT_LOCKED,
    ST_REVISION = MDLMAP__V1__NT_STATUS__STATUS_REVISION_MISMATCH,
    ST_DEVREQ = MDLMAP__V1__NT_STATUS__STATUS_INVALID_DEVICE_REQUEST,
};

static struct rig RIG;
static uint64_t max_mdl_pages;

static bool expect(int32_t got, int32_t want, const struct rpc_session *r, const char *what)
{
    char hex[16] = "";
    if (got != RPC_NO_REPLY)
        snprintf(hex, sizeof(hex), " (0x%08x)", (uint32_t)got);
    bool ok = tap_check(got == want, "%s -> %s%s%s%s", what, rpc_status_name(got), hex, got == want ? "" : ", expected ",
                        got == want ? "" : rpc_status_name(want));
    if (r->detail[0])
        tap_diag("  detail: %s", r->detail);
    return ok;
}

/* ------------------------------------------------------- requests */
static int32_t do_hello(struct rpc_session *r, uint32_t lo, uint32_t hi)
{
    struct rpc_hello_info h;
    int32_t st = rpc_hello(r, lo, hi, "hostile-rpc test", &h);
    if (st == ST_OK && h.max_mdl_pages)
        max_mdl_pages = h.max_mdl_pages;
    return st;
}

/* A valid MDL over npages frames from pfn0, byte_offset 100. */
static int32_t lock_ok(struct rpc_session *r, uint64_t pfn0, unsigned npages, uint64_t *handle)
{
    uint64_t pfns[16];
    for (unsigned i = 0; i < npages; i++)
        pfns[i] = pfn0 + i;
    return rpc_lock(r, 100, npages * 4096u - 200, pfns, npages, 1, handle);
}

static int32_t do_map(struct rpc_session *r, uint64_t mdl, uint32_t mode, uint32_t cache, struct rpc_mapping *out)
{
    Mdlmap__V1__MapRequest m = MDLMAP__V1__MAP_REQUEST__INIT;
    m.mdl_handle = mdl;
    m.access_mode = (Mdlmap__V1__AccessMode)mode;
    m.cache_type = (Mdlmap__V1__CacheType)cache;
    m.priority = MDLMAP__V1__PAGE_PRIORITY__NORMAL_PAGE_PRIORITY;
    return rpc_map(r, &m, out);
}

/* ------------------------------------------------------- host API */
static int api_open(struct mdlmap_client *c)
{
    return mdlmap_client_open(c, RIG.api);
}

/* Mappings the host API lists for vm ("" all); -1 on error. If map != 0,
 * *found_vm gets the vm_name of that mapping ("" when not listed). */
static int api_list(const char *vm, uint64_t map, char *found_vm, size_t fl)
{
    struct mdlmap_client c;
    if (api_open(&c) < 0)
        return -1;
    mdl_envelope *resp = NULL;
    int n = -1;
    if (found_vm)
        found_vm[0] = 0;
    if (mdlmap_client_list(&c, vm, &resp) == 0 && resp->body_case == MDLMAP__V1__ENVELOPE__BODY_LIST_REPLY) {
        n = (int)resp->list_reply->n_mappings;
        for (int i = 0; i < n; i++) {
            Mdlmap__V1__MappingInfo *mi = resp->list_reply->mappings[i];
            if (map && mi->map_handle == map && found_vm)
                snprintf(found_vm, fl, "%s/cid%" PRIu64, mi->vm_name, mi->guest_cid);
        }
    }
    if (resp)
        frame_envelope_free(resp);
    mdlmap_client_close(&c);
    return n;
}

static bool stats_counts(uint64_t *mappings, uint64_t *mdls, uint64_t *leaks)
{
    mdl_envelope *resp = api_stats(RIG.api);
    if (resp) {
        *mappings = resp->stats_reply->mappings;
        *mdls = resp->stats_reply->locked_mdls;
        *leaks = resp->stats_reply->leaks_reported;
    }
    frame_envelope_free(resp);
    return resp != NULL;
}

/* ------------------------------------------------------- health */
static struct vdev *A, *B;

static void settle(int ms)
{
    long long end = now_ms() + ms;
    while (now_ms() < end)
        vdev_pump(20);
}

/* hostd alive, echo on both VMs, and VM vd can still lock+map+unmap+unlock. */
static bool healthy(struct vdev *vd, const char *after)
{
    char why[320] = "";
    bool ok = hd_alive(&RIG.p);
    ok = ok && vdev_echo_check(A, 3000, 5000, why, sizeof(why)) == 0;
    ok = ok && vdev_echo_check(B, 3000, 5000, why, sizeof(why)) == 0;
    struct rpc_session r;
    if (ok && rpc_open(&r, vd)) {
        uint64_t h = 0;
        struct rpc_mapping m = { 0, 0, 0, 0 };
        ok = do_hello(&r, 1, 1) == ST_OK && lock_ok(&r, BUF_PFN + 32, 2, &h) == ST_OK &&
             do_map(&r, h, 0, 1, &m) == ST_OK && rpc_unmap(&r, m.map, m.address, h) == ST_OK &&
             rpc_unlock(&r, h, NULL) == ST_OK;
        if (!ok)
            snprintf(why, sizeof(why), "map round trip failed: %s", r.detail);
        rpc_close(&r);
    } else if (ok) {
        ok = false;
        snprintf(why, sizeof(why), "cannot connect to the RPC port");
    }
    tap_check(ok, "hostd healthy after %s (echo on both VMs, cid %" PRIu64 " maps)", after, vd->cid);
    if (!ok)
        tap_diag("  %s", why);
    return ok;
}

/* ------------------------------------------------------- cases */
static void forged_locks(struct rpc_session *r)
{
    uint64_t h = 0;
    uint64_t one[1];
#define LOCK1(pfn, want, what)                                                                   \
    do {                                                                                         \
        one[0] = (pfn);                                                                          \
        expect(rpc_lock(r, 0, 4096, one, 1, 1, &h), want, r, what);                               \
    } while (0)
    LOCK1(RAM_END_PFN, ST_AV, "Lock of the first frame past the RAM (pfn 0x101000)");
    LOCK1(0x7fffffffull, ST_AV, "Lock of a frame far beyond the RAM (pfn 0x7fffffff)");
    LOCK1(0x1000, ST_AV, "Lock of the first hole frame after low RAM (pfn 0x1000, GPA 16 MiB)");
    LOCK1(0xfee00, ST_AV, "Lock of an MMIO-hole frame (pfn 0xfee00, the LAPIC page)");
    LOCK1(0xc0000, ST_AV, "Lock of an MMIO-hole frame (pfn 0xc0000, GPA 3 GiB)");
    LOCK1(1ull << 52, ST_PARAM, "Lock with pfn 1<<52 (pfn << 12 overflows)");
    LOCK1(UINT64_MAX, ST_PARAM, "Lock with pfn 0xffffffffffffffff");
    LOCK1((UINT64_MAX >> 12), ST_AV, "Lock with the largest pfn that does not overflow");
    uint64_t mixed[3] = { BUF_PFN, BUF_PFN + 1, 0x1000 };
    expect(rpc_lock(r, 0, 3 * 4096, mixed, 3, 1, &h), ST_AV, r, "Lock of RAM frames + one hole frame at the end");
    uint64_t straddle[2] = { 0xfff, 0x1000 };
    expect(rpc_lock(r, 4000, 200, straddle, 2, 1, &h), ST_AV, r, "Lock straddling the end of low RAM");
    uint64_t hi[2] = { RAM_END_PFN - 1, RAM_END_PFN };
    expect(rpc_lock(r, 4000, 200, hi, 2, 1, &h), ST_AV, r, "Lock straddling the end of high RAM");
    one[0] = BUF_PFN;
    expect(rpc_lock(r, 4096, 1, one, 1, 1, &h), ST_PARAM, r, "Lock with byte_offset 4096");
    expect(rpc_lock(r, UINT32_MAX, 1, one, 1, 1, &h), ST_PARAM, r, "Lock with byte_offset 0xffffffff");
    expect(rpc_lock(r, 0, 0, one, 1, 1, &h), ST_PARAM, r, "Lock with byte_count 0");
    expect(rpc_lock(r, 4095, UINT32_MAX, one, 1, 1, &h), ST_PARAM, r,
           "Lock with byte_offset 4095 + byte_count 0xffffffff (overflows 32 bits)");
    expect(rpc_lock(r, 0, 4096, NULL, 0, 1, &h), ST_PARAM, r, "Lock with no pfns");
    expect(rpc_lock(r, 0, 8192, one, 1, 1, &h), ST_PARAM, r, "Lock: 1 pfn for a buffer spanning 2 pages");
    uint64_t three[3] = { BUF_PFN, BUF_PFN + 1, BUF_PFN + 2 };
    expect(rpc_lock(r, 0, 8192, three, 3, 1, &h), ST_PARAM, r, "Lock: 3 pfns for a buffer spanning 2 pages");
    expect(rpc_lock(r, 4000, 100, three, 1, 1, &h), ST_PARAM, r,
           "Lock: 1 pfn for 100 bytes at offset 4000 (spans 2 pages)");
    expect(rpc_lock(r, 0, 4096, one, 1, 3, &h), ST_PARAM, r, "Lock with LockOperation 3");

    /* huge counts: more than max_mdl_pages, with and without a matching span */
    size_t big = (size_t)(max_mdl_pages ? max_mdl_pages : 65536) + 1;
    uint64_t *many = malloc(big * sizeof(*many));
    for (size_t i = 0; i < big; i++)
        many[i] = BUF_PFN + i % 2048;
    uint64_t span = (uint64_t)big * 4096u;
    if (span <= UINT32_MAX) {
        char w[120];
        snprintf(w, sizeof(w), "Lock of %zu pages (max_mdl_pages + 1, matching span)", big);
        expect(rpc_lock(r, 0, (uint32_t)span, many, big, 1, &h), ST_PARAM, r, w);
    }
    /* more pfns than a frame holds close the connection (oversized frame):
     * an old client's pfns stop at what fits in 1 MiB; as a run the same
     * count is a small request, refused as a parameter */
    size_t nfit = big < 100000 ? big : 100000;
    char w2[120];
    snprintf(w2, sizeof(w2), "Lock of %zu pfns for a 4 KiB buffer", nfit);
    expect(rpc_lock(r, 0, 4096, many, nfit, 1, &h), ST_PARAM, r, w2);
    snprintf(w2, sizeof(w2), "Lock of a %zu-page run for a 4 KiB buffer", big);
    expect(rpc_lock_run(r, 0, 4096, BUF_PFN, (uint32_t)big, 1, &h), ST_PARAM, r, w2);
    expect(rpc_lock_run(r, 0, 4096, BUF_PFN, 0, 1, &h), ST_PARAM, r, "Lock of an empty run");
    expect(rpc_lock_run(r, 0, 8192, UINT64_MAX >> 12, 2, 1, &h), ST_PARAM, r,
           "Lock of a run past the last addressable frame");
    {
        Mdlmap__V1__LockRequest both = MDLMAP__V1__LOCK_REQUEST__INIT;
        Mdlmap__V1__FrameRun run = MDLMAP__V1__FRAME_RUN__INIT, *runs[1] = { &run };
        run.first_pfn = BUF_PFN;
        run.count = 1;
        both.byte_count = 4096;
        both.pfns = one;
        both.n_pfns = 1;
        both.runs = runs;
        both.n_runs = 1;
        expect(rpc_lock_req(r, &both, &h), ST_PARAM, r, "Lock with both pfns and runs");
    }
    expect(rpc_lock(r, 0, UINT32_MAX, many, 1, 1, &h), ST_PARAM, r,
           "Lock with byte_count 0xffffffff (1 Mi pages) and 1 pfn");
    free(many);
    /* the largest frame hostd takes: 1 MiB of pfns (about 100k varints) */
    size_t nmax = 120000;
    many = malloc(nmax * sizeof(*many));
    for (size_t i = 0; i < nmax; i++)
        many[i] = 0x1ffffffffull + i;   /* 5-byte varints: ~600 KB */
    expect(rpc_lock(r, 0, 4096, many, nmax, 1, &h), ST_PARAM, r, "Lock of 120000 out-of-RAM pfns for a 4 KiB buffer");
    free(many);
#undef LOCK1
}

static void handles(struct rpc_session *ra, struct rpc_session *rb, struct rpc_session *ra2)
{
    uint64_t ha = 0, ha2 = 0, hb = 0;
    struct rpc_mapping ma = { 0, 0, 0, 0 }, mb = { 0, 0, 0, 0 }, tmp = { 0, 0, 0, 0 };
    bool ok = lock_ok(ra, BUF_PFN, 3, &ha) == ST_OK && ha;
    tap_check(ok, "VM A locks a 3-page MDL (0x%" PRIx64 ")", ha);
    ok = do_map(ra, ha, 0, 1, &ma) == ST_OK && ma.map;
    tap_check(ok, "VM A maps it (map 0x%" PRIx64 " at 0x%" PRIx64 ")", ma.map, ma.address);
    ok = lock_ok(ra, BUF_PFN + 8, 1, &ha2) == ST_OK;
    tap_check(ok, "VM A locks a second MDL (0x%" PRIx64 ")", ha2);
    ok = lock_ok(rb, BUF_PFN, 2, &hb) == ST_OK && do_map(rb, hb, 0, 1, &mb) == ST_OK;
    tap_check(ok, "VM B locks and maps its own MDL (map 0x%" PRIx64 ")", mb.map);

    /* unknown handles */
    expect(do_map(ra, 0, 0, 1, &tmp), ST_HANDLE, ra, "Map of MDL handle 0");
    expect(do_map(ra, 0xdeadbeefcafe, 0, 1, &tmp), ST_HANDLE, ra, "Map of an unknown MDL handle");
    expect(do_map(ra, ma.map, 0, 1, &tmp), ST_HANDLE, ra, "Map naming a map handle as MDL handle");
    expect(rpc_unmap(ra, 0xdeadbeefcafe, ma.address, ha), ST_HANDLE, ra, "Unmap of an unknown map handle");
    expect(rpc_unmap(ra, ha, ma.address, ha), ST_HANDLE, ra, "Unmap naming an MDL handle as map handle");
    expect(rpc_unlock(ra, 0xdeadbeefcafe, NULL), ST_NOT_LOCKED, ra, "Unlock of an unknown MDL handle");
    expect(rpc_unlock(ra, 0, NULL), ST_NOT_LOCKED, ra, "Unlock of MDL handle 0");
    expect(do_map(ra, ha2, 0, 9, &tmp), ST_PARAM, ra, "Map with cache type 9");
    expect(do_map(ra, ha2, 7, 1, &tmp), ST_PARAM, ra, "Map with access mode 7");

    /* mismatches */
    expect(rpc_unmap(ra, ma.map, ma.address + 4096, ha), ST_NOT_MAPPED, ra, "Unmap with the address + 4096");
    expect(rpc_unmap(ra, ma.map, ma.address - 100, ha), ST_NOT_MAPPED, ra,
           "Unmap with the page-aligned base instead of the returned address");
    expect(rpc_unmap(ra, ma.map, 0, ha), ST_NOT_MAPPED, ra, "Unmap with address 0");
    expect(rpc_unmap(ra, ma.map, ma.address, ha2), ST_PARAM, ra, "Unmap with another (locked) MDL of the same VM");
    expect(rpc_unmap(ra, ma.map, ma.address, 0xdeadbeef), ST_PARAM, ra, "Unmap with an unknown MDL handle");

    /* foreign: VM B names VM A's handles (and A B's) */
    expect(do_map(rb, ha, 0, 1, &tmp), ST_HANDLE, rb, "VM B maps VM A's MDL");
    expect(rpc_unmap(rb, ma.map, ma.address, ha), ST_HANDLE, rb, "VM B unmaps VM A's mapping (right address + MDL)");
    expect(rpc_unmap(rb, ma.map, ma.address, hb), ST_HANDLE, rb, "VM B unmaps VM A's mapping with its own MDL");
    expect(rpc_unlock(rb, ha, NULL), ST_NOT_LOCKED, rb, "VM B unlocks VM A's MDL");
    expect(rpc_unlock(rb, ha2, NULL), ST_NOT_LOCKED, rb, "VM B unlocks VM A's unmapped MDL");
    expect(rpc_unmap(ra, mb.map, mb.address, hb), ST_HANDLE, ra, "VM A unmaps VM B's mapping");
    expect(rpc_unlock(ra, hb, NULL), ST_NOT_LOCKED, ra, "VM A unlocks VM B's MDL");
    /* another connection of VM A owns nothing of the first one's */
    expect(do_map(ra2, ha, 0, 1, &tmp), ST_HANDLE, ra2, "a second connection of VM A maps the first one's MDL");
    expect(rpc_unmap(ra2, ma.map, ma.address, ha), ST_HANDLE, ra2,
           "a second connection of VM A unmaps the first one's mapping");
    expect(rpc_unlock(ra2, ha, NULL), ST_NOT_LOCKED, ra2, "a second connection of VM A unlocks the first one's MDL");

    /* the host API shows each mapping under its own VM */
    char vm[64];
    int na = api_list("vm0", ma.map, vm, sizeof(vm));
    tap_check(na == 1 && strcmp(vm, "vm0/cid3") == 0, "host API: vm0 lists 1 mapping, VM A's (%d, %s)", na, vm);
    int nb = api_list("vm1", ma.map, vm, sizeof(vm));
    tap_check(nb == 1 && vm[0] == 0, "host API: vm1 lists 1 mapping, not VM A's (%d)", nb);
    api_list("vm1", mb.map, vm, sizeof(vm));
    tap_check(strcmp(vm, "vm1/cid4") == 0, "host API: VM B's mapping listed under vm1/cid4 (%s)", vm);
    int nall = api_list("", 0, NULL, 0);
    tap_check(nall == 2, "host API: 2 mappings in all (%d)", nall);
    /* the mappings are of each VM's own RAM: a host write lands in that VM */
    struct mdlmap_client c;
    if (api_open(&c) == 0) {
        int wa = mdlmap_client_write(&c, ma.map, 0, "AAAA", 4);
        int wb = mdlmap_client_write(&c, mb.map, 0, "BBBB", 4);
        const uint8_t *pa = gm_ptr(&A->g.gm, (uint64_t)BUF_PFN * 4096 + 100, 4);
        const uint8_t *pb = gm_ptr(&B->g.gm, (uint64_t)BUF_PFN * 4096 + 100, 4);
        tap_check(wa == 0 && wb == 0 && pa && pb && !memcmp(pa, "AAAA", 4) && !memcmp(pb, "BBBB", 4),
                  "host writes through each mapping land in that VM's RAM only");
        mdlmap_client_close(&c);
    }

    /* A's mapping survived the foreign attempts; now the stale handles */
    expect(rpc_unmap(ra, ma.map, ma.address, ha), ST_OK, ra, "VM A unmaps its mapping");
    expect(rpc_unmap(ra, ma.map, ma.address, ha), ST_HANDLE, ra, "VM A unmaps it again (already unmapped)");
    expect(do_map(ra, ha, 0, 1, &ma), ST_OK, ra, "VM A maps the MDL again");
    unsigned rel = 0;
    expect(rpc_unlock(ra, ha, &rel), ST_OK, ra, "VM A unlocks the mapped MDL");
    tap_check(rel == 1, "Unlock released the system mapping (%u)", rel);
    expect(rpc_unmap(ra, ma.map, ma.address, ha), ST_HANDLE, ra, "Unmap after Unlock (mapping released)");
    expect(rpc_unlock(ra, ha, NULL), ST_NOT_LOCKED, ra, "Unlock again (duplicate)");
    expect(do_map(ra, ha, 0, 1, &tmp), ST_HANDLE, ra, "Map of the unlocked MDL");
    expect(rpc_unlock(ra, ha2, &rel), ST_OK, ra, "VM A unlocks its second MDL");
    expect(rpc_unmap(rb, mb.map, mb.address, hb), ST_OK, rb, "VM B unmaps its mapping");
    expect(rpc_unlock(rb, hb, NULL), ST_OK, rb, "VM B unlocks its MDL");
}

/* Send raw bytes on a fresh connection of A; expect an error response with
 * want (or none when want == RPC_NO_REPLY), then hostd closing the connection. */
static void framing_case(const char *what, const void *bytes, size_t n, int32_t want, bool expect_close)
{
    struct rpc_session r;
    if (!tap_check(rpc_open(&r, A), "%s: connect", what))
        return;
    do_hello(&r, 1, 1);
    int rc = vc_send_all(r.c, bytes, n, CALL_MS);
    mdl_envelope *o = NULL;
    int w = rc == 0 ? rpc_wait(&r, &o, 3000) : rc;
    int32_t st = w == 1 ? o->status : RPC_NO_REPLY;
    if (w == 1)
        snprintf(r.detail, sizeof(r.detail), "%s", o->detail ? o->detail : "");
    bool body_ok = w != 1 || o->body_case == MDLMAP__V1__ENVELOPE__BODY_ERROR_REPLY;
    expect(st, want, &r, what);
    if (w == 1 && !body_ok)
        tap_check(false, "%s: answered with body %d, not error_reply", what, (int)o->body_case);
    if (o)
        frame_envelope_free(o);
    if (expect_close) {
        long long t0 = now_ms();
        while (!rpc_peer_closed(&r) && now_ms() - t0 < 3000)
            vdev_pump(20);
        tap_check(rpc_peer_closed(&r), "%s: hostd closes the connection (%lld ms)", what, now_ms() - t0);
    }
    rpc_close(&r);
}

static void framing(void)
{
    uint8_t zero[4] = { 0, 0, 0, 0 };
    framing_case("frame length 0", zero, 4, ST_PARAM, true);
    uint8_t big[4] = { 0x01, 0x00, 0x10, 0x00 };   /* 1 MiB + 1 */
    framing_case("frame length 1 MiB + 1", big, 4, ST_PARAM, true);
    uint8_t huge[4] = { 0xff, 0xff, 0xff, 0xff };
    framing_case("frame length 0xffffffff", huge, 4, ST_PARAM, true);
    uint8_t garbage[4 + 16] = { 16, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    framing_case("garbage protobuf (16 bytes of 0xff)", garbage, sizeof(garbage), ST_PARAM, true);
    uint8_t badwire[4 + 3] = { 3, 0, 0, 0, 0x62, 0x7f, 0x01 };   /* field 12 (lock), length 127, 1 byte */
    framing_case("protobuf with a sub-message longer than the frame", badwire, sizeof(badwire), ST_PARAM, true);
    /* Envelope{version 1, request_id 5}, no body */
    uint8_t nobody[4 + 4] = { 4, 0, 0, 0, 0x08, 0x01, 0x10, 0x05 };
    framing_case("envelope with no body", nobody, sizeof(nobody), ST_PARAM, true);
    /* truncated: hostd gets part of a frame and then the close */
    uint8_t part[4 + 10] = { 100, 0, 0, 0, 0x08, 0x01, 0x10, 0x05, 0x62, 0x5c, 0, 0, 0, 0 };
    framing_case("truncated frame (10 of 100 bytes, then close)", part, sizeof(part), RPC_NO_REPLY, false);
    framing_case("truncated header (2 of 4 bytes, then close)", part, 2, RPC_NO_REPLY, false);
}

/* A connection holding a mapped MDL dies mid-frame: hostd runs it down. */
static void truncated_with_state(void)
{
    struct rpc_session r;
    if (!rpc_open(&r, A))
        return;
    uint64_t h = 0;
    struct rpc_mapping m = { 0, 0, 0, 0 };
    bool ok = do_hello(&r, 1, 1) == ST_OK && lock_ok(&r, BUF_PFN + 40, 2, &h) == ST_OK && do_map(&r, h, 0, 1, &m) == ST_OK;
    tap_check(ok, "a connection locks and maps, then sends half a frame and vanishes");
    uint64_t mp0 = 0, md0 = 0, lk0 = 0, mp1 = 0, md1 = 0, lk1 = 0;
    stats_counts(&mp0, &md0, &lk0);
    uint8_t part[4 + 6] = { 200, 0, 0, 0, 0x08, 0x01, 0x10, 0x07, 0x62, 0x40 };
    vc_send_all(r.c, part, sizeof(part), CALL_MS);
    settle(100);
    rpc_close(&r);
    for (int i = 0; i < 40; i++) {
        settle(50);
        if (stats_counts(&mp1, &md1, &lk1) && mp1 + 1 == mp0 && md1 + 1 == md0)
            break;
    }
    tap_check(mp1 + 1 == mp0 && md1 + 1 == md0 && lk1 > lk0,
              "hostd released its mapping + MDL and reported the leaks (mappings %" PRIu64 "->%" PRIu64
              ", MDLs %" PRIu64 "->%" PRIu64 ", leaks %" PRIu64 "->%" PRIu64 ")",
              mp0, mp1, md0, md1, lk0, lk1);
}

static void versions(void)
{
    struct rpc_session r;
    if (!rpc_open(&r, A))
        return;
    expect(do_hello(&r, 2, 9), ST_REVISION, &r, "Hello speaking versions 2..9");
    expect(do_hello(&r, 0, 0), ST_REVISION, &r, "Hello speaking version 0 only");
    expect(do_hello(&r, 3, 1), ST_REVISION, &r, "Hello with min_version 3 > max_version 1");
    expect(do_hello(&r, 1, 7), ST_OK, &r, "Hello 1..7 after the refusals (connection still usable)");
    /* host-only request types on the guest port */
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    Mdlmap__V1__ListMappingsRequest l = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
    e.list = &l;
    expect(rpc_call(&r, &e, &o), ST_DEVREQ, &r, "ListMappings (host API only) on the guest port");
    if (o)
        frame_envelope_free(o);
    Mdlmap__V1__WriteRequest wr = MDLMAP__V1__WRITE_REQUEST__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
    e.write = &wr;
    expect(rpc_call(&r, &e, &o), ST_DEVREQ, &r, "Write (host API only) on the guest port");
    if (o)
        frame_envelope_free(o);
    Mdlmap__V1__LockResponse lr = MDLMAP__V1__LOCK_RESPONSE__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY;
    e.lock_reply = &lr;
    expect(rpc_call(&r, &e, &o), ST_DEVREQ, &r, "a LockResponse sent as a request");
    if (o)
        frame_envelope_free(o);
    /* an envelope whose own version is wrong: hostd answers by its body */
    Mdlmap__V1__HelloRequest h = MDLMAP__V1__HELLO_REQUEST__INIT;
    h.min_version = h.max_version = 1;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    uint8_t *buf;
    size_t len;
    e.version = 77;
    e.request_id = 99;
    frame_encode(&e, &buf, &len);
    vc_send_all(r.c, buf, len, CALL_MS);
    free(buf);
    int w = rpc_wait(&r, &o, CALL_MS);
    tap_check(w == 1, "an envelope with version 77 is answered (%s)",
              w == 1 ? rpc_status_name(o->status) : "no reply");
    if (w == 1)
        frame_envelope_free(o);
    rpc_close(&r);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    uint64_t cids[2] = { 3, 4 };
    rig_start(&RIG, bin, "mdlmap-hostile-rpc", 2, cids);
    A = rig_vm_up(&RIG, 0, NULL, "VM A");
    B = A ? rig_vm_up(&RIG, 1, NULL, "VM B") : NULL;
    if (!A || !B) {
        rig_abort(&RIG);
        return tap_done();
    }
    struct rpc_session ra, rb, ra2;
    if (!tap_check(rpc_open(&ra, A) && rpc_open(&rb, B) && rpc_open(&ra2, A), "RPC connections from both VMs")) {
        rig_abort(&RIG);
        return tap_done();
    }
    expect(do_hello(&ra, 1, 1), ST_OK, &ra, "VM A Hello");
    tap_diag("max_mdl_pages %" PRIu64, max_mdl_pages);
    expect(do_hello(&rb, 1, 1), ST_OK, &rb, "VM B Hello");

    forged_locks(&ra);
    healthy(B, "forged Lock requests");
    handles(&ra, &rb, &ra2);
    healthy(B, "handle abuse");
    healthy(A, "handle abuse");
    framing();
    healthy(B, "broken framing");
    truncated_with_state();
    versions();
    healthy(A, "version mismatches");

    rpc_close(&ra);
    rpc_close(&rb);
    rpc_close(&ra2);
    uint64_t mp = 1, md = 1, lk = 0;
    for (int i = 0; i < 40; i++) {
        settle(50);
        if (stats_counts(&mp, &md, &lk) && mp == 0 && md == 0)
            break;
    }
    tap_check(mp == 0 && md == 0, "hostd ends with zero mappings and zero locked MDLs (%" PRIu64 ", %" PRIu64 ")", mp,
              md);
    tap_check(A->errors == 0 && B->errors == 0, "no vsock protocol violations by hostd (%u, %u)%s%s", A->errors,
              B->errors, A->errors ? A->last_err : "", B->errors ? B->last_err : "");
    vdev_down(A);
    vdev_down(B);
    free(A);
    free(B);
    rig_stop(&RIG);
    return tap_done();
}
