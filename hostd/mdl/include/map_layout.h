/* MDL geometry checks and the host layout of an MDL: which guest frames are
 * RAM of this VM, and which runs of frames are contiguous in one backing file
 * (each run becomes one host mapping = one VMA). Pure: no mapping is made. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "memtable.h"

#define MAP_PAGE_SHIFT 12
#define MAP_PAGE_SIZE 4096u
#define MAP_MAX_MDL_PAGES 65536u /* 256 MiB per MDL */

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
/* Every frame must be a whole page of guest RAM in mt:
 * -EINVAL if pfn << 12 overflows, -EFAULT if the page is not wholly inside one
 * registered region (MMIO hole, beyond RAM) or its file offset is unaligned. */
int map_layout_check_frames(const struct memtable *mt, const uint64_t *pfns, size_t n,
                            char *detail, size_t dlen);
/* Check frames and coalesce them into runs (*runs malloc'ed, caller frees).
 * Same errors as map_layout_check_frames, plus -ENOMEM. */
int map_layout_runs(const struct memtable *mt, const uint64_t *pfns, uint32_t n,
                    struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen);

/* Runs of a locked MDL, kept from lock to map so that an unchanged memory
 * table is not walked twice. Valid only while mt->generation == generation
 * (runs borrow region fds). Zero-initialised = empty. */
struct map_layout_cache {
    struct map_run *runs; /* NULL: nothing cached */
    uint32_t nruns;
    uint64_t generation;
};
/* map_layout_runs, remembering the result in c when it is small enough to be
 * worth keeping (few runs relative to pages). Same errors; on error c is empty. */
int map_layout_cache_fill(struct map_layout_cache *c, const struct memtable *mt, const uint64_t *pfns,
                          uint32_t n, char *detail, size_t dlen);
/* Like map_layout_runs (caller frees *runs), but copies c's runs when mt's
 * generation is unchanged since c was filled; otherwise re-validates every
 * frame against the current table. */
int map_layout_runs_cached(const struct map_layout_cache *c, const struct memtable *mt,
                           const uint64_t *pfns, uint32_t n, struct map_run **runs, uint32_t *nruns,
                           char *detail, size_t dlen);
void map_layout_cache_drop(struct map_layout_cache *c);
