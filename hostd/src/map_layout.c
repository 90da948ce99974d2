/* MDL validation and run coalescing. All values come from the guest: every
 * shift and sum is checked before use. */
#include "map_layout.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Region holding the whole page at pfn; fd offset of the page in *fd_off. */
static int frame_region(const struct memtable *mt, uint64_t pfn, size_t idx,
                        const struct mem_region **out, uint64_t *fd_off, char *detail, size_t dlen)
{
    if (pfn > (UINT64_MAX >> MAP_PAGE_SHIFT)) {
        snprintf(detail, dlen, "pfn[%zu] 0x%llx: address overflows", idx, (unsigned long long)pfn);
        return -EINVAL;
    }
    uint64_t gpa = pfn << MAP_PAGE_SHIFT, avail = 0;
    const struct mem_region *r = memtable_find_gpa(mt, gpa, &avail);
    if (!r || avail < MAP_PAGE_SIZE) {
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
    return 0;
}

int map_layout_check_frames(const struct memtable *mt, const uint64_t *pfns, size_t n,
                            char *detail, size_t dlen)
{
    for (size_t i = 0; i < n; i++) {
        const struct mem_region *r;
        uint64_t off;
        int rc = frame_region(mt, pfns[i], i, &r, &off, detail, dlen);
        if (rc < 0)
            return rc;
    }
    return 0;
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

int map_layout_runs(const struct memtable *mt, const uint64_t *pfns, uint32_t n,
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
    for (uint32_t i = 0; i < n; i++) {
        const struct mem_region *r;
        uint64_t off;
        int rc = frame_region(mt, pfns[i], i, &r, &off, detail, dlen);
        if (rc < 0) {
            free(rv);
            return rc;
        }
        if (nr && prev_r) {
            struct map_run *last = &rv[nr - 1];
            uint64_t next_off = last->fd_off + (uint64_t)last->npages * MAP_PAGE_SIZE;
            if (off == next_off && same_file(&ids, mt, prev_r, r)) {
                last->npages++;
                prev_r = r;
                continue;
            }
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
        rv[nr++] = (struct map_run){ .fd = r->fd, .fd_off = off, .first = i, .npages = 1 };
        prev_r = r;
    }
    *runs = rv;
    *nruns = nr;
    return 0;
}
