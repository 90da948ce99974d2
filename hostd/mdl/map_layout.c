/* MDL validation and run coalescing. All values come from the guest: every
 * shift and sum is checked before use. */
#include "map_layout.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int map_layout_check_geometry(uint32_t byte_offset, uint32_t byte_count, size_t npfns,
                              uint32_t max_pages, char *detail, size_t dlen)
{
    if (byte_offset >= MAP_PAGE_SIZE) {
        snprintf(detail, dlen, "byte_offset %u not below the page size", byte_offset);
        return -EINVAL;
    }
    if (byte_count == 0) {
        snprintf(detail, dlen, "byte_count is 0");
        return -EINVAL;
    }
    uint64_t end = (uint64_t)byte_offset + byte_count;
    if (end > UINT32_MAX) {
        snprintf(detail, dlen, "byte_offset %u + byte_count %u overflows", byte_offset, byte_count);
        return -EINVAL;
    }
    uint64_t pages = (end + MAP_PAGE_SIZE - 1) >> MAP_PAGE_SHIFT;
    if (pages > max_pages) {
        snprintf(detail, dlen, "MDL spans %llu pages, limit %u", (unsigned long long)pages, max_pages);
        return -EINVAL;
    }
    if (npfns != pages) {
        snprintf(detail, dlen, "%zu pfns for a buffer spanning %llu pages", npfns,
                 (unsigned long long)pages);
        return -EINVAL;
    }
    return 0;
}

/* Region holding the whole page at pfn; fd offset of the page in *fd_off.
 * hint (may be NULL) is tried before the table scan: consecutive runs of an
 * MDL usually sit in the same region. */
static int frame_region(const struct memtable *mt, const struct mem_region *hint, uint64_t pfn,
                        size_t idx, const struct mem_region **out, uint64_t *fd_off, uint64_t *avail,
                        char *detail, size_t dlen)
{
    if (pfn > (UINT64_MAX >> MAP_PAGE_SHIFT)) {
        snprintf(detail, dlen, "pfn[%zu] 0x%llx: address overflows", idx, (unsigned long long)pfn);
        return -EINVAL;
    }
    uint64_t gpa = pfn << MAP_PAGE_SHIFT, av = 0;
    const struct mem_region *r;
    if (hint && gpa >= hint->gpa && gpa - hint->gpa < hint->size) {
        r = hint;
        av = hint->size - (gpa - hint->gpa);
    } else {
        r = memtable_find_gpa(mt, gpa, &av);
    }
    if (!r || av < MAP_PAGE_SIZE) {
        snprintf(detail, dlen, "pfn[%zu] 0x%llx (gpa 0x%llx) is not guest RAM", idx,
                 (unsigned long long)pfn, (unsigned long long)gpa);
        return -EFAULT;
    }
    uint64_t off = r->mmap_offset + (gpa - r->gpa);
    if (off < r->mmap_offset || (off & (MAP_PAGE_SIZE - 1))) {
        snprintf(detail, dlen, "pfn[%zu] 0x%llx: backing offset 0x%llx not page aligned", idx,
                 (unsigned long long)pfn, (unsigned long long)off);
        return -EFAULT;
    }
    *out = r;
    *fd_off = off;
    *avail = av;
    return 0;
}

/* Validate the frame at pfns[i] and extend it over the following frames that
 * are pfn-consecutive and still wholly inside the same region. Returns the
 * number of frames covered (>= 1) or a negative errno.
 *
 * Why the extension needs no per-frame check: frame i passed frame_region, so
 * its page lies in r with avail bytes to the region end. Frame i+k (pfn+k) then
 * starts k pages later; it is wholly inside r iff (k+1) pages fit in avail,
 * hence k < avail/4096. Its gpa cannot overflow (it is below the region end,
 * which memtable_add keeps representable) and its file offset is off + k*4096:
 * aligned, and no larger than mmap_offset + size, which memtable_add checked.
 * The first frame that leaves the region (region boundary, MMIO hole, beyond
 * RAM) or breaks consecutiveness starts a new segment and gets a full lookup. */
static int frame_segment(const struct memtable *mt, const struct mem_region *hint,
                         const uint64_t *pfns, size_t i, size_t n, const struct mem_region **r,
                         uint64_t *off, char *detail, size_t dlen)
{
    uint64_t avail;
    int rc = frame_region(mt, hint, pfns[i], i, r, off, &avail, detail, dlen);
    if (rc < 0)
        return rc;
    uint64_t fit = avail >> MAP_PAGE_SHIFT; /* >= 1 */
    size_t end = n - i > fit ? i + (size_t)fit : n;
    if (end - i > (size_t)INT_MAX) /* keep the count representable as int */
        end = i + (size_t)INT_MAX;
    size_t j = i + 1;
    while (j < end && pfns[j] == pfns[j - 1] + 1)
        j++;
    return (int)(j - i);
}

/* Validate frames [i, n); r is a region hint (may be NULL). */
static int check_from(const struct memtable *mt, const uint64_t *pfns, size_t i, size_t n,
                      const struct mem_region *r, char *detail, size_t dlen)
{
    while (i < n) {
        uint64_t off;
        int k = frame_segment(mt, r, pfns, i, n, &r, &off, detail, dlen);
        if (k < 0)
            return k;
        i += (size_t)k;
    }
    return 0;
}

int map_layout_check_frames(const struct memtable *mt, const uint64_t *pfns, size_t n,
                            char *detail, size_t dlen)
{
    return check_from(mt, pfns, 0, n, NULL, detail, dlen);
}

/* Identity of the file behind each region, fetched once per call. */
struct file_ids {
    bool have[MEMTABLE_MAX_REGIONS];
    dev_t dev[MEMTABLE_MAX_REGIONS];
    ino_t ino[MEMTABLE_MAX_REGIONS];
};

static bool same_file(struct file_ids *ids, const struct memtable *mt,
                      const struct mem_region *a, const struct mem_region *b)
{
    if (a == b || a->fd == b->fd)
        return true;
    const struct mem_region *rs[2] = { a, b };
    for (int k = 0; k < 2; k++) {
        size_t i = (size_t)(rs[k] - mt->r);
        if (!ids->have[i]) {
            struct stat st;
            if (fstat(rs[k]->fd, &st) < 0)
                return false;
            ids->dev[i] = st.st_dev;
            ids->ino[i] = st.st_ino;
            ids->have[i] = true;
        }
    }
    size_t ia = (size_t)(a - mt->r), ib = (size_t)(b - mt->r);
    return ids->dev[ia] == ids->dev[ib] && ids->ino[ia] == ids->ino[ib];
}

/* Validate all frames and build their runs. If more than max_runs runs are
 * needed, the rest is only validated and *runs is left NULL. */
static int build_runs(const struct memtable *mt, const uint64_t *pfns, uint32_t n, uint32_t max_runs,
                      struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    *runs = NULL;
    *nruns = 0;
    if (n == 0) {
        snprintf(detail, dlen, "empty MDL");
        return -EINVAL;
    }
    struct map_run *rv = NULL;
    uint32_t nr = 0, cap = 0;
    struct file_ids ids = { 0 };
    const struct mem_region *prev_r = NULL;
    for (uint32_t i = 0; i < n;) {
        const struct mem_region *r;
        uint64_t off;
        int k = frame_segment(mt, prev_r, pfns, i, n, &r, &off, detail, dlen);
        if (k < 0) {
            free(rv);
            return k;
        }
        /* A segment continues the previous run when the file offsets line up
         * in the same file (e.g. two regions split from one memfd). */
        if (nr) {
            struct map_run *last = &rv[nr - 1];
            uint64_t next_off = last->fd_off + (uint64_t)last->npages * MAP_PAGE_SIZE;
            if (off == next_off && same_file(&ids, mt, prev_r, r)) {
                last->npages += (uint32_t)k;
                prev_r = r;
                i += (uint32_t)k;
                continue;
            }
        }
        if (nr == max_runs) { /* not worth keeping: just validate the rest */
            free(rv);
            return check_from(mt, pfns, i + (uint32_t)k, n, r, detail, dlen);
        }
        if (nr == cap) {
            uint32_t ncap = cap ? cap * 2 : 8;
            if (ncap > n)
                ncap = n;
            struct map_run *t = realloc(rv, (size_t)ncap * sizeof(*rv));
            if (!t) {
                free(rv);
                snprintf(detail, dlen, "out of memory");
                return -ENOMEM;
            }
            rv = t;
            cap = ncap;
        }
        rv[nr++] = (struct map_run){ .fd = r->fd, .fd_off = off, .first = i, .npages = (uint32_t)k };
        prev_r = r;
        i += (uint32_t)k;
    }
    *runs = rv;
    *nruns = nr;
    return 0;
}

int map_layout_runs(const struct memtable *mt, const uint64_t *pfns, uint32_t n,
                    struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    return build_runs(mt, pfns, n, UINT32_MAX, runs, nruns, detail, dlen);
}

int map_layout_cache_fill(struct map_layout_cache *c, const struct memtable *mt, const uint64_t *pfns,
                          uint32_t n, char *detail, size_t dlen)
{
    *c = (struct map_layout_cache){ 0 };
    struct map_run *rv;
    uint32_t nr;
    /* Keep only compact layouts: a scattered MDL's runs cost 3x its pfn list,
     * and recomputing them is cheap next to its one-mmap-per-run map cost.
     * Past the limit build_runs stops building and only validates. */
    int rc = build_runs(mt, pfns, n, n / 8 + 1, &rv, &nr, detail, dlen);
    if (rc < 0 || !rv)
        return rc;
    struct map_run *t = realloc(rv, (size_t)nr * sizeof(*rv)); /* trim growth slack */
    c->runs = t ? t : rv;
    c->nruns = nr;
    c->generation = mt->generation;
    return 0;
}

int map_layout_runs_cached(const struct map_layout_cache *c, const struct memtable *mt,
                           const uint64_t *pfns, uint32_t n, struct map_run **runs, uint32_t *nruns,
                           char *detail, size_t dlen)
{
    if (!c->runs || c->generation != mt->generation)
        return map_layout_runs(mt, pfns, n, runs, nruns, detail, dlen);
    struct map_run *rv = malloc((size_t)c->nruns * sizeof(*rv));
    if (!rv) {
        *runs = NULL;
        *nruns = 0;
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(rv, c->runs, (size_t)c->nruns * sizeof(*rv));
    *runs = rv;
    *nruns = c->nruns;
    return 0;
}

void map_layout_cache_drop(struct map_layout_cache *c)
{
    free(c->runs);
    *c = (struct map_layout_cache){ 0 };
}
