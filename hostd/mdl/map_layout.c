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

/* Pages spanned by the buffer, after checking its geometry. */
static int span_pages(uint32_t byte_offset, uint32_t byte_count, uint32_t max_pages, uint32_t *pages,
                      char *detail, size_t dlen)
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
    uint64_t n = (end + MAP_PAGE_SIZE - 1) >> MAP_PAGE_SHIFT;
    if (n > max_pages) {
        snprintf(detail, dlen, "MDL spans %llu pages, limit %u", (unsigned long long)n, max_pages);
        return -EINVAL;
    }
    *pages = (uint32_t)n;
    return 0;
}

int map_layout_check_geometry(uint32_t byte_offset, uint32_t byte_count, size_t npfns,
                              uint32_t max_pages, char *detail, size_t dlen)
{
    uint32_t pages;
    int rc = span_pages(byte_offset, byte_count, max_pages, &pages, detail, dlen);
    if (rc < 0)
        return rc;
    if (npfns != pages) {
        snprintf(detail, dlen, "%zu pfns for a buffer spanning %u pages", npfns, pages);
        return -EINVAL;
    }
    return 0;
}

int map_layout_check_frame_runs(uint32_t byte_offset, uint32_t byte_count, const struct map_frames *fr,
                                size_t nfr, uint32_t max_pages, char *detail, size_t dlen)
{
    uint32_t pages;
    int rc = span_pages(byte_offset, byte_count, max_pages, &pages, detail, dlen);
    if (rc < 0)
        return rc;
    /* every run holds a page, so more runs than pages can never add up; this
     * also bounds the loop below by the MDL size, not by what the peer sent */
    if (nfr == 0 || nfr > pages) {
        snprintf(detail, dlen, "%zu frame runs for a buffer spanning %u pages", nfr, pages);
        return -EINVAL;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < nfr; i++) {
        if (fr[i].count == 0) {
            snprintf(detail, dlen, "frame run %zu is empty", i);
            return -EINVAL;
        }
        /* the run's last frame must have an address (pfn << 12 in 64 bits);
         * checked as a difference so that first_pfn + count cannot wrap */
        if (fr[i].first_pfn > (UINT64_MAX >> MAP_PAGE_SHIFT) - (fr[i].count - 1)) {
            snprintf(detail, dlen, "frame run %zu (0x%llx + %u): address overflows", i,
                     (unsigned long long)fr[i].first_pfn, fr[i].count);
            return -EINVAL;
        }
        sum += fr[i].count; /* nfr <= 2^20 counts of < 2^32: no 64-bit overflow */
        if (sum > pages)
            break;
    }
    if (sum > pages) { /* the loop stopped early: sum is not the total */
        snprintf(detail, dlen, "frame runs hold more than the %u pages the buffer spans", pages);
        return -EINVAL;
    }
    if (sum < pages) {
        snprintf(detail, dlen, "frame runs hold %llu pages for a buffer spanning %u pages",
                 (unsigned long long)sum, pages);
        return -EINVAL;
    }
    return 0;
}

int map_layout_frames_of_pfns(const uint64_t *pfns, size_t n, struct map_frames **out, uint32_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (n == 0 || n > UINT32_MAX)
        return -EINVAL;
    /* count first: the array is sized exactly (a contiguous MDL: one entry) */
    size_t nr = 1;
    for (size_t i = 1; i < n; i++)
        if (pfns[i] != pfns[i - 1] + 1)
            nr++;
    struct map_frames *fr = malloc(nr * sizeof(*fr));
    if (!fr)
        return -ENOMEM;
    size_t k = 0;
    fr[0] = (struct map_frames){ .first_pfn = pfns[0], .count = 1 };
    for (size_t i = 1; i < n; i++) {
        if (pfns[i] == pfns[i - 1] + 1)
            fr[k].count++;
        else
            fr[++k] = (struct map_frames){ .first_pfn = pfns[i], .count = 1 };
    }
    *out = fr;
    *nout = (uint32_t)nr;
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

/* Where validation stands in a list of frame runs. */
struct frame_cursor {
    const struct map_frames *fr;
    uint32_t nfr;
    uint32_t k;     /* current run */
    uint32_t in;    /* frames of run k already covered */
    uint32_t page;  /* index in the MDL of the next frame */
};

/* Validate the cursor's next frame and extend it over the rest of its run as
 * far as the pages stay wholly inside the same region; advance the cursor.
 * Returns the number of frames covered (>= 1) or a negative errno.
 *
 * Why the extension needs no per-frame check: the first frame passed
 * frame_region, so its page lies in r with avail bytes to the region end.
 * Frame pfn+j then starts j pages later; it is wholly inside r iff (j+1) pages
 * fit in avail, hence j < avail/4096. Its gpa cannot overflow (it is below the
 * region end, which memtable_add keeps representable) and its file offset is
 * off + j*4096: aligned, and no larger than mmap_offset + size, which
 * memtable_add checked. The first frame that leaves the region (region
 * boundary, MMIO hole, beyond RAM) or starts a new run gets a full lookup. */
static int frame_segment(const struct memtable *mt, const struct mem_region *hint, struct frame_cursor *c,
                         const struct mem_region **r, uint64_t *off, char *detail, size_t dlen)
{
    const struct map_frames *f = &c->fr[c->k];
    if (f->count == 0) {
        snprintf(detail, dlen, "frame run %u is empty", c->k);
        return -EINVAL;
    }
    uint64_t avail;
    /* first_pfn + in cannot wrap: in < count < 2^32, and a first_pfn that
     * large fails frame_region when the run's first frame is looked up */
    int rc = frame_region(mt, hint, f->first_pfn + c->in, c->page, r, off, &avail, detail, dlen);
    if (rc < 0)
        return rc;
    uint64_t fit = avail >> MAP_PAGE_SHIFT; /* >= 1 */
    uint32_t left = f->count - c->in;
    uint32_t k = fit < left ? (uint32_t)fit : left;
    if (k > (uint32_t)INT_MAX) /* keep the count representable as int */
        k = (uint32_t)INT_MAX;
    c->in += k;
    c->page += k;
    if (c->in == f->count) {
        c->k++;
        c->in = 0;
    }
    return (int)k;
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
static int build_runs(const struct memtable *mt, const struct map_frames *fr, uint32_t nfr, uint32_t max_runs,
                      struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    *runs = NULL;
    *nruns = 0;
    if (nfr == 0) {
        snprintf(detail, dlen, "empty MDL");
        return -EINVAL;
    }
    struct map_run *rv = NULL;
    uint32_t nr = 0, cap = 0;
    bool keep = true; /* false: past max_runs, only validating */
    struct file_ids ids = { 0 };
    const struct mem_region *prev_r = NULL;
    struct frame_cursor c = { .fr = fr, .nfr = nfr };
    while (c.k < c.nfr) {
        const struct mem_region *r;
        uint64_t off;
        uint32_t first = c.page;
        int k = frame_segment(mt, prev_r, &c, &r, &off, detail, dlen);
        if (k < 0) {
            free(rv);
            return k;
        }
        if (!keep) {
            prev_r = r;
            continue;
        }
        /* A segment continues the previous run when the file offsets line up
         * in the same file (e.g. two regions split from one memfd, or frame
         * runs the peer did not coalesce). */
        if (nr) {
            struct map_run *last = &rv[nr - 1];
            uint64_t next_off = last->fd_off + (uint64_t)last->npages * MAP_PAGE_SIZE;
            if (off == next_off && same_file(&ids, mt, prev_r, r)) {
                last->npages += (uint32_t)k;
                prev_r = r;
                continue;
            }
        }
        if (nr == max_runs) { /* not worth keeping: just validate the rest */
            free(rv);
            rv = NULL;
            keep = false;
            prev_r = r;
            continue;
        }
        if (nr == cap) {
            /* a run needs a frame run or a region crossing: growth is bounded
             * by those, not by the pages */
            uint32_t ncap = cap ? (cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2) : 8;
            struct map_run *t = realloc(rv, (size_t)ncap * sizeof(*rv));
            if (!t) {
                free(rv);
                snprintf(detail, dlen, "out of memory");
                return -ENOMEM;
            }
            rv = t;
            cap = ncap;
        }
        rv[nr++] = (struct map_run){ .fd = r->fd, .fd_off = off, .first = first, .npages = (uint32_t)k };
        prev_r = r;
    }
    if (!keep)
        return 0;
    *runs = rv;
    *nruns = nr;
    return 0;
}

int map_layout_frame_runs(const struct memtable *mt, const struct map_frames *fr, uint32_t nfr,
                          struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    return build_runs(mt, fr, nfr, UINT32_MAX, runs, nruns, detail, dlen);
}

/* build_runs over a pfn array (old clients' LockRequest.pfns, tests). */
static int build_runs_of_pfns(const struct memtable *mt, const uint64_t *pfns, size_t n, uint32_t max_runs,
                              struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    *runs = NULL;
    *nruns = 0;
    if (n == 0 || n > UINT32_MAX) {
        snprintf(detail, dlen, n ? "%zu frames" : "empty MDL", n);
        return -EINVAL;
    }
    struct map_frames *fr;
    uint32_t nfr;
    int rc = map_layout_frames_of_pfns(pfns, n, &fr, &nfr);
    if (rc < 0) {
        snprintf(detail, dlen, "out of memory");
        return rc;
    }
    rc = build_runs(mt, fr, nfr, max_runs, runs, nruns, detail, dlen);
    free(fr);
    return rc;
}

int map_layout_check_frames(const struct memtable *mt, const uint64_t *pfns, size_t n,
                            char *detail, size_t dlen)
{
    struct map_run *rv;
    uint32_t nr;
    return build_runs_of_pfns(mt, pfns, n, 0, &rv, &nr, detail, dlen); /* 0: validate only */
}

int map_layout_runs(const struct memtable *mt, const uint64_t *pfns, uint32_t n,
                    struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen)
{
    return build_runs_of_pfns(mt, pfns, n, UINT32_MAX, runs, nruns, detail, dlen);
}

int map_layout_cache_fill(struct map_layout_cache *c, const struct memtable *mt, const struct map_frames *fr,
                          uint32_t nfr, uint32_t npages, char *detail, size_t dlen)
{
    *c = (struct map_layout_cache){ 0 };
    struct map_run *rv;
    uint32_t nr;
    /* Keep only compact layouts: a scattered MDL's runs cost more than its
     * frame list, and recomputing them is cheap next to its one-mmap-per-run
     * map cost. Past the limit build_runs stops building and only validates. */
    int rc = build_runs(mt, fr, nfr, npages / 8 + 1, &rv, &nr, detail, dlen);
    if (rc < 0 || !rv)
        return rc;
    struct map_run *t = realloc(rv, (size_t)nr * sizeof(*rv)); /* trim growth slack */
    c->runs = t ? t : rv;
    c->nruns = nr;
    c->generation = mt->generation;
    return 0;
}

int map_layout_runs_cached(const struct map_layout_cache *c, const struct memtable *mt,
                           const struct map_frames *fr, uint32_t nfr, struct map_run **runs, uint32_t *nruns,
                           char *detail, size_t dlen)
{
    if (!c->runs || c->generation != mt->generation)
        return map_layout_frame_runs(mt, fr, nfr, runs, nruns, detail, dlen);
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
