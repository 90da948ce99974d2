/* Guest memory table. All arithmetic on guest/QEMU supplied values is
 * overflow-checked; a range is valid only if it lies wholly in one region. */
#include "memtable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

void memtable_init(struct memtable *mt)
{
    memset(mt, 0, sizeof(*mt));
}

/* Room for one more region; slots beyond n are never read. */
static int reserve_slot(struct memtable *mt)
{
    if (mt->n < mt->cap)
        return 0;
    unsigned cap = mt->cap ? mt->cap * 2 : 2;
    if (cap > MEMTABLE_MAX_REGIONS)
        cap = MEMTABLE_MAX_REGIONS;
    struct mem_region *r = realloc(mt->r, cap * sizeof(*r));
    if (!r)
        return -ENOMEM;
    mt->r = r;
    mt->cap = cap;
    return 0;
}

/* [a, a+alen) and [b, b+blen) intersect; both lengths nonzero and non-wrapping */
static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

int memtable_add(struct memtable *mt, uint64_t gpa, uint64_t size, uint64_t uva, uint64_t mmap_offset, int fd)
{
    int ret;
    if (fd < 0)
        return -EBADF;
    if (size == 0 || gpa + size < gpa || uva + size < uva || mmap_offset + size < mmap_offset ||
        gpa + size == 0 /* ends exactly at 2^64: keep "end" representable */) {
        log_warn("memtable: bad region gpa 0x%llx size 0x%llx uva 0x%llx off 0x%llx",
                 (unsigned long long)gpa, (unsigned long long)size, (unsigned long long)uva,
                 (unsigned long long)mmap_offset);
        ret = -EINVAL;
        goto fail;
    }
    if (mt->n >= MEMTABLE_MAX_REGIONS) {
        log_warn("memtable: table full (%u regions)", mt->n);
        ret = -ENOSPC;
        goto fail;
    }
    for (unsigned i = 0; i < mt->n; i++) {
        if (ranges_overlap(gpa, size, mt->r[i].gpa, mt->r[i].size)) {
            log_warn("memtable: region gpa 0x%llx+0x%llx overlaps gpa 0x%llx+0x%llx",
                     (unsigned long long)gpa, (unsigned long long)size,
                     (unsigned long long)mt->r[i].gpa, (unsigned long long)mt->r[i].size);
            ret = -EEXIST;
            goto fail;
        }
    }

    ret = reserve_slot(mt);
    if (ret < 0)
        goto fail;

    /* Mapping past the end of the file would SIGBUS on access: refuse it. */
    struct stat st;
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        log_warn("memtable: fstat fd %d: %m", fd);
        goto fail;
    }
    if (S_ISREG(st.st_mode) && (st.st_size < 0 || mmap_offset + size > (uint64_t)st.st_size)) {
        log_warn("memtable: region off 0x%llx size 0x%llx beyond file size 0x%llx",
                 (unsigned long long)mmap_offset, (unsigned long long)size,
                 (unsigned long long)st.st_size);
        ret = -EINVAL;
        goto fail;
    }

    /* mmap needs a page-aligned offset: map from the aligned-down offset. */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t aligned = mmap_offset & ~(page - 1);
    uint64_t delta = mmap_offset - aligned;
    uint64_t map_len = size + delta;
    if (map_len < size || map_len > (uint64_t)SIZE_MAX || aligned > (uint64_t)INT64_MAX) {
        ret = -EINVAL;
        goto fail;
    }
    void *base = mmap(NULL, (size_t)map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                      (off_t)aligned);
    if (base == MAP_FAILED) {
        ret = -errno;
        log_warn("memtable: mmap fd %d len 0x%llx off 0x%llx: %m", fd, (unsigned long long)map_len,
                 (unsigned long long)aligned);
        goto fail;
    }
    /* Don't put guest RAM into hostd core dumps. */
    madvise(base, (size_t)map_len, MADV_DONTDUMP);

    struct mem_region *r = &mt->r[mt->n++];
    r->gpa = gpa;
    r->size = size;
    r->uva = uva;
    r->mmap_offset = mmap_offset;
    r->fd = fd;
    r->map_base = base;
    r->map_len = (size_t)map_len;
    r->hva = (uint8_t *)base + delta;
    mt->generation++;
    log_debug("memtable: add gpa 0x%llx size 0x%llx uva 0x%llx off 0x%llx (%u regions)",
              (unsigned long long)gpa, (unsigned long long)size, (unsigned long long)uva,
              (unsigned long long)mmap_offset, mt->n);
    return 0;
fail:
    close(fd);
    return ret;
}

static void region_release(struct mem_region *r)
{
    if (r->map_base)
        munmap(r->map_base, r->map_len);
    if (r->fd >= 0)
        close(r->fd);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

int memtable_remove(struct memtable *mt, uint64_t gpa, uint64_t size, uint64_t uva)
{
    for (unsigned i = 0; i < mt->n; i++) {
        struct mem_region *r = &mt->r[i];
        if (r->gpa == gpa && r->size == size && r->uva == uva) {
            region_release(r);
            /* keep the array dense */
            mt->r[i] = mt->r[mt->n - 1];
            mt->r[mt->n - 1].fd = -1;
            mt->r[mt->n - 1].map_base = NULL;
            mt->n--;
            mt->generation++;
            return 0;
        }
    }
    log_warn("memtable: remove: no region gpa 0x%llx size 0x%llx uva 0x%llx", (unsigned long long)gpa,
             (unsigned long long)size, (unsigned long long)uva);
    return -ENOENT;
}

void memtable_clear(struct memtable *mt)
{
    for (unsigned i = 0; i < mt->n; i++)
        region_release(&mt->r[i]);
    free(mt->r);
    mt->r = NULL;
    mt->n = mt->cap = 0;
    mt->generation++;
}

/* Offset of [addr, addr+len) inside [start, start+size), or false. */
static bool in_range(uint64_t start, uint64_t size, uint64_t addr, uint64_t len, uint64_t *off)
{
    if (addr < start)
        return false;
    uint64_t o = addr - start;
    if (o >= size || len > size - o)
        return false;
    *off = o;
    return true;
}

void *memtable_gpa_to_hva(const struct memtable *mt, uint64_t gpa, uint64_t len)
{
    uint64_t off;
    for (unsigned i = 0; i < mt->n; i++)
        if (in_range(mt->r[i].gpa, mt->r[i].size, gpa, len, &off))
            return mt->r[i].hva + off;
    return NULL;
}

void *memtable_uva_to_hva(const struct memtable *mt, uint64_t uva, uint64_t len)
{
    uint64_t off;
    for (unsigned i = 0; i < mt->n; i++)
        if (in_range(mt->r[i].uva, mt->r[i].size, uva, len, &off))
            return mt->r[i].hva + off;
    return NULL;
}

const struct mem_region *memtable_find_gpa(const struct memtable *mt, uint64_t gpa, uint64_t *avail)
{
    uint64_t off;
    for (unsigned i = 0; i < mt->n; i++) {
        if (in_range(mt->r[i].gpa, mt->r[i].size, gpa, 0, &off)) {
            if (avail)
                *avail = mt->r[i].size - off;
            return &mt->r[i];
        }
    }
    return NULL;
}

uint64_t memtable_total(const struct memtable *mt)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < mt->n; i++)
        t += mt->r[i].size;
    return t;
}
