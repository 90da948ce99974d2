/* MDL geometry checks and the host layout of an MDL: which guest frames are
 * RAM of this VM, and which runs of frames are contiguous in one backing file
 * (each run becomes one host mapping = one VMA). Pure: no mapping is made. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "memtable.h"

#define MAP_PAGE_SHIFT 12
#define MAP_PAGE_SIZE 4096u
/* Windows' largest MDL: byte_count is 32-bit, so 4 GiB - 1 page of pages. */
#define MAP_MAX_MDL_PAGES 1048575u

/* Guest frames first_pfn .. first_pfn + count - 1, as LockRequest.runs
 * carries them: what a locked MDL keeps (O(runs), not O(pages)). */
struct map_frames {
    uint64_t first_pfn;
    uint32_t count;
};

struct map_run {
    int fd;            /* region fd (borrowed; valid while the memtable is unchanged) */
    uint64_t fd_off;   /* page-aligned offset in fd */
    uint32_t first;    /* index of the first page of the run in the MDL */
    uint32_t npages;
};

/* Geometry: byte_offset < 4096, byte_count > 0, offset+count <= UINT32_MAX,
 * npfns == pages spanned, npfns <= max_pages. -EINVAL with detail otherwise. */
int map_layout_check_geometry(uint32_t byte_offset, uint32_t byte_count, size_t npfns,
                              uint32_t max_pages, char *detail, size_t dlen);
/* The same for frames given as runs (all from the peer): the buffer geometry
 * as above, 1 <= nfr <= pages spanned, every count >= 1, every run's last
 * frame address representable, counts summing to the pages spanned.
 * -EINVAL with detail otherwise. O(nfr). */
int map_layout_check_frame_runs(uint32_t byte_offset, uint32_t byte_count, const struct map_frames *fr,
                                size_t nfr, uint32_t max_pages, char *detail, size_t dlen);
/* Coalesce a pfn array into runs of consecutive frames (*out malloc'ed,
 * caller frees). 0, -EINVAL (n is 0 or above UINT32_MAX) or -ENOMEM. */
int map_layout_frames_of_pfns(const uint64_t *pfns, size_t n, struct map_frames **out, uint32_t *nout);
/* Every frame must be a whole page of guest RAM in mt:
 * -EINVAL if pfn << 12 overflows, -EFAULT if the page is not wholly inside one
 * registered region (MMIO hole, beyond RAM) or its file offset is unaligned. */
int map_layout_check_frames(const struct memtable *mt, const uint64_t *pfns, size_t n,
                            char *detail, size_t dlen);
/* Check frames and coalesce them into runs (*runs malloc'ed, caller frees).
 * Same errors as map_layout_check_frames, plus -ENOMEM. */
int map_layout_runs(const struct memtable *mt, const uint64_t *pfns, uint32_t n,
                    struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen);
/* The same from frame runs: O(nfr + region boundaries crossed), however many
 * pages the runs hold. */
int map_layout_frame_runs(const struct memtable *mt, const struct map_frames *fr, uint32_t nfr,
                          struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen);

/* Runs of a locked MDL, kept from lock to map so that an unchanged memory
 * table is not walked twice. Valid only while mt->generation == generation
 * (runs borrow region fds). Zero-initialised = empty. */
struct map_layout_cache {
    struct map_run *runs; /* NULL: nothing cached */
    uint32_t nruns;
    uint64_t generation;
};
/* map_layout_frame_runs, remembering the result in c when it is small enough
 * to be worth keeping (few runs relative to the npages pages). Same errors; on
 * error c is empty. */
int map_layout_cache_fill(struct map_layout_cache *c, const struct memtable *mt, const struct map_frames *fr,
                          uint32_t nfr, uint32_t npages, char *detail, size_t dlen);
/* Like map_layout_frame_runs (caller frees *runs), but copies c's runs when
 * mt's generation is unchanged since c was filled; otherwise re-validates the
 * frames against the current table. */
int map_layout_runs_cached(const struct map_layout_cache *c, const struct memtable *mt,
                           const struct map_frames *fr, uint32_t nfr, struct map_run **runs, uint32_t *nruns,
                           char *detail, size_t dlen);
void map_layout_cache_drop(struct map_layout_cache *c);
