/* Fuzz the guest library's reading of the agent daemon's frame runs
 * (LockResponse.runs, mdl_env_runs_expand) and check: an accepted set of
 * runs covers exactly the pages, in order, without wrapping; a refused one
 * leaves the PFN array untouched; what is accepted survives
 * mdl_env_runs_build + expand unchanged, in no more runs.
 * Input: u16 npages (mod 1024; bit 15: the sum of the counts instead, capped,
 * so that accepted inputs are common), u8 nruns (mod 64), then per run: u8 mode,
 * u64 first_pfn (mode bit 0: counted down from UINT64_MAX), u32 count (mode
 * bit 1: taken whole, else mod 8: small runs that can add up). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "mdl_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SENTINEL 0x5a5a5a5a5a5a5a5aull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    uint16_t np16;
    fuzz_take(&in, &np16, sizeof(np16));
    size_t npages = (np16 & 0x7fff) % 1024;
    size_t nruns = fuzz_take8(&in) % 64;
    Mdlmap__V1__FrameRun runs[64], *ptrs[64];
    for (size_t i = 0; i < nruns; i++) {
        uint8_t mode = fuzz_take8(&in);
        uint64_t first;
        uint32_t count;
        fuzz_take(&in, &first, sizeof(first));
        fuzz_take(&in, &count, sizeof(count));
        mdlmap__v1__frame_run__init(&runs[i]);
        runs[i].first_pfn = (mode & 1) ? UINT64_MAX - (first % 16) : first;
        runs[i].count = (mode & 2) ? count : count % 8;
        ptrs[i] = &runs[i];
    }
    if (np16 & 0x8000) {
        uint64_t sum = 0;
        for (size_t i = 0; i < nruns; i++)
            sum += runs[i].count;
        npages = sum < 1024 ? (size_t)sum : 1023;
    }
    uint64_t pfns[1024 + 1], again[1024 + 1];
    for (size_t i = 0; i <= npages; i++)
        pfns[i] = SENTINEL;
    int rc = mdl_env_runs_expand(ptrs, nruns, pfns, npages);
    if (pfns[npages] != SENTINEL)
        __builtin_trap();   /* wrote past the pages */
    if (rc < 0) {
        for (size_t i = 0; i < npages; i++)
            if (pfns[i] != SENTINEL)
                __builtin_trap();
        return 0;
    }
    size_t k = 0;
    for (size_t i = 0; i < nruns; i++) {
        if (runs[i].count == 0 || runs[i].first_pfn + (runs[i].count - 1) < runs[i].first_pfn)
            __builtin_trap();   /* an empty or wrapping run accepted */
        for (uint32_t j = 0; j < runs[i].count; j++, k++)
            if (k >= npages || pfns[k] != runs[i].first_pfn + j)
                __builtin_trap();
    }
    if (k != npages)
        __builtin_trap();
    struct mdl_env_runs rs;
    if (mdl_env_runs_build(pfns, npages, &rs) == 0) {
        if (rs.n > nruns || mdl_env_runs_expand(rs.ptrs, rs.n, again, npages) != 0 ||
            memcmp(again, pfns, npages * sizeof(uint64_t)))
            __builtin_trap();
    }
    mdl_env_runs_free(&rs);
    return 0;
}
