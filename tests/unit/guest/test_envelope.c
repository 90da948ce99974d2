/* Request envelopes: fields, validation, and a frame round trip. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "mdl_internal.h"
#include "tap.h"

static Mdlmap__V1__Envelope *roundtrip(Mdlmap__V1__Envelope *e)
{
    uint8_t *buf;
    size_t len;
    Mdlmap__V1__Envelope *out = NULL;
    if (frame_encode(e, &buf, &len) == 0) {
        frame_decode(buf + MDLMAP_FRAME_HDR, len - MDLMAP_FRAME_HDR, &out);
        free(buf);
    }
    return out;
}

int main(void)
{
    static uint8_t page[3 * 4096] __attribute__((aligned(4096)));
    struct mdl *m = mdl_alloc(page + 4000, 5000);
    uint64_t pfns[3] = { 7, 9, 11 };
    Mdlmap__V1__Envelope e, *r;
    Mdlmap__V1__LockRequest lb;
    struct mdl_env_runs rs;
    tap_check(mdl_env_lock(&e, &lb, m, MDL_IO_MODIFY, pfns, mdl_page_count(m), &rs) == 0, "LockRequest built");
    r = roundtrip(&e);
    mdl_env_runs_free(&rs);
    /* scattered frames: one run each, in order, and no pfns */
    tap_check(r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_LOCK && r->lock->byte_offset == 4000 &&
          r->lock->byte_count == 5000 && r->lock->n_pfns == 0 && r->lock->n_runs == 3 &&
          r->lock->runs[0]->first_pfn == 7 && r->lock->runs[2]->first_pfn == 11 && r->lock->runs[1]->count == 1 &&
          r->lock->start_va == (uint64_t)(uintptr_t)page && r->lock->operation == MDLMAP__V1__LOCK_OPERATION__IO_MODIFY_ACCESS &&
          r->version == MDLMAP_PROTO_VERSION, "LockRequest: offset, count, 3 scattered frames as 3 runs, start_va, operation");
    frame_envelope_free(r);

    /* a contiguous MDL is one run however large: 1 GiB (262144 frames) in a
     * request of a few dozen bytes */
    size_t big = 262144;
    uint64_t *many = malloc(big * sizeof(*many));
    for (size_t i = 0; i < big; i++)
        many[i] = 0x40000 + i;
    struct mdl gib = { .start_va = (void *)0x10000000, .byte_count = 1u << 30 };
    tap_check(mdl_env_lock(&e, &lb, &gib, MDL_IO_READ, many, mdl_page_count(&gib), &rs) == 0, "1 GiB LockRequest built");
    size_t packed = mdlmap__v1__envelope__get_packed_size(&e);
    r = roundtrip(&e);
    mdl_env_runs_free(&rs);
    tap_check(r && r->lock->n_runs == 1 && r->lock->runs[0]->first_pfn == 0x40000 &&
          r->lock->runs[0]->count == 262144 && r->lock->n_pfns == 0 && packed < 64,
          "contiguous 1 GiB MDL: one run of 262144 frames, %zu bytes", packed);
    frame_envelope_free(r);
    /* two contiguous stretches and a repeat: runs break where frames do not follow */
    many[1000] = 5;
    many[1001] = 5;
    tap_check(mdl_env_lock(&e, &lb, &gib, MDL_IO_READ, many, big, &rs) == 0 && rs.n == 4 &&
          lb.runs[0]->count == 1000 && lb.runs[1]->first_pfn == 5 && lb.runs[1]->count == 1 &&
          lb.runs[2]->first_pfn == 5 && lb.runs[3]->first_pfn == 0x40000 + 1002 && lb.runs[3]->count == big - 1002,
          "broken stretches: 4 runs (1000, 1, 1, rest)");
    mdl_env_runs_free(&rs);
    free(many);
    /* the agent daemon pins: no frames at all */
    tap_check(mdl_env_lock(&e, &lb, m, MDL_IO_READ, pfns, 0, &rs) == 0 && lb.n_runs == 0 && lb.n_pfns == 0,
          "LockRequest for the agent daemon: no frames");
    mdl_env_runs_free(&rs);

    Mdlmap__V1__MapRequest mb;
    struct mdl_map_params p = { .mode = MDL_KERNEL_MODE, .cache = MDL_WRITE_COMBINED, .requested_address = 0x5000,
                                .priority = MDL_PRIORITY_HIGH | MDL_MAPPING_NO_WRITE | MDL_MAPPING_NO_EXECUTE,
                                .bug_check_on_failure = true };
    tap_check(mdl_env_map(&e, &mb, 42, &p, "viewer") == 0, "MapRequest built");
    r = roundtrip(&e);
    tap_check(r && r->map->mdl_handle == 42 && r->map->access_mode == MDLMAP__V1__ACCESS_MODE__KERNEL_MODE &&
          r->map->cache_type == MDLMAP__V1__CACHE_TYPE__MM_WRITE_COMBINED && r->map->requested_address == 0 &&
          !*r->map->consumer && r->map->bug_check_on_failure &&
          r->map->priority == (32u | 0x80000000u | 0x40000000u),
          "KernelMode MapRequest: no RequestedAddress/consumer, priority flags kept");
    frame_envelope_free(r);
    p.mode = MDL_USER_MODE;
    mdl_env_map(&e, &mb, 42, &p, "viewer");
    r = roundtrip(&e);
    tap_check(r && r->map->access_mode == MDLMAP__V1__ACCESS_MODE__USER_MODE && r->map->requested_address == 0x5000 &&
          !strcmp(r->map->consumer, "viewer"), "UserMode MapRequest: RequestedAddress and consumer passed");
    frame_envelope_free(r);
    p.cache = MDL_CACHE_MAX;
    tap_check(mdl_env_map(&e, &mb, 42, &p, NULL) == -EINVAL, "MmMaximumCacheType refused");
    p.cache = -1;
    tap_check(mdl_env_map(&e, &mb, 42, &p, NULL) == -EINVAL, "MmNotMapped refused");
    p.cache = MDL_CACHED;
    p.mode = 2;
    tap_check(mdl_env_map(&e, &mb, 42, &p, NULL) == -EINVAL, "access mode 2 refused");

    Mdlmap__V1__UnmapRequest ub;
    mdl_env_unmap(&e, &ub, 5, 0x7000123, 6);
    r = roundtrip(&e);
    tap_check(r && r->unmap->map_handle == 5 && r->unmap->address == 0x7000123 && r->unmap->mdl_handle == 6,
          "UnmapRequest: handle, address, MDL");
    frame_envelope_free(r);
    Mdlmap__V1__UnlockRequest kb;
    mdl_env_unlock(&e, &kb, 6);
    r = roundtrip(&e);
    tap_check(r && r->unlock->mdl_handle == 6, "UnlockRequest");
    frame_envelope_free(r);
    mdl_free(m);
    tap_check(!strcmp(mdl_status_name(MDL_STATUS_NOT_LOCKED), "STATUS_NOT_LOCKED"), "status names");
    return tap_done();
}
