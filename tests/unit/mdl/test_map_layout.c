/* map_layout: run coalescing and frame validation edge cases of the
 * one-lookup-per-run walk (region boundaries, MMIO holes, overflow). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "map_layout.h"
#include "memtable.h"
#include "tap.h"

static int make_memfd(size_t size)
{
    int fd = memfd_create("test_map_layout", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        return -1;
    return fd;
}

static char detail[256];

static int runs_of(const struct memtable *mt, const uint64_t *pfns, uint32_t n, struct map_run **rv,
                   uint32_t *nr)
{
    int rc = map_layout_runs(mt, pfns, n, rv, nr, detail, sizeof(detail));
    /* check_frames must agree with the run builder on every input */
    CHECK(map_layout_check_frames(mt, pfns, n, detail, sizeof(detail)) == rc);
    return rc;
}

/* RAM: A = pfn 0x10..0x1f (fd a, off 0), B = pfn 0x20..0x27 (fd b, off 0),
 * hole pfn 0x28..0x2f, C = pfn 0x30..0x33 (fd a, off 0x10000: same file as A,
 * offsets continue A's). */
static void setup(struct memtable *mt, int *fda)
{
    memtable_init(mt);
    *fda = make_memfd(0x20000);
    CHECK(memtable_add(mt, 0x10000, 0x10000, 0x7f0000000000, 0, dup(*fda)) == 0);
    CHECK(memtable_add(mt, 0x20000, 0x8000, 0x7f1000000000, 0, make_memfd(0x8000)) == 0);
    CHECK(memtable_add(mt, 0x30000, 0x4000, 0x7f2000000000, 0x10000, dup(*fda)) == 0);
}

static void test_runs(void)
{
    struct memtable mt;
    int fda;
    setup(&mt, &fda);
    struct map_run *rv;
    uint32_t nr;

    /* contiguous inside one region: one run */
    uint64_t p1[16];
    for (unsigned i = 0; i < 16; i++)
        p1[i] = 0x10 + i;
    CHECK(runs_of(&mt, p1, 16, &rv, &nr) == 0);
    CHECK(nr == 1 && rv[0].first == 0 && rv[0].npages == 16 && rv[0].fd_off == 0);
    free(rv);

    /* pfn-contiguous run crossing A -> B (different files): split at the boundary */
    uint64_t p2[8] = { 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23 };
    CHECK(runs_of(&mt, p2, 8, &rv, &nr) == 0);
    CHECK(nr == 2);
    CHECK(rv[0].first == 0 && rv[0].npages == 4 && rv[0].fd_off == 0xc000);
    CHECK(rv[1].first == 4 && rv[1].npages == 4 && rv[1].fd_off == 0 && rv[1].fd != rv[0].fd);
    free(rv);

    /* contiguous run into the MMIO hole after B: rejected at the first hole frame */
    uint64_t p3[4] = { 0x26, 0x27, 0x28, 0x29 };
    CHECK(runs_of(&mt, p3, 4, &rv, &nr) == -EFAULT && rv == NULL && nr == 0);
    CHECK(strstr(detail, "pfn[2]") != NULL);

    /* run ending exactly at the end of RAM (last page of C), then one past */
    uint64_t p4[5] = { 0x30, 0x31, 0x32, 0x33, 0x34 };
    CHECK(runs_of(&mt, p4, 4, &rv, &nr) == 0 && nr == 1 && rv[0].npages == 4);
    free(rv);
    CHECK(runs_of(&mt, p4, 5, &rv, &nr) == -EFAULT);

    /* frames not pfn-consecutive but file-consecutive (A's last page, then C's
     * first page, same file, offsets 0xf000 then 0x10000): one run, as before */
    uint64_t p5[3] = { 0x1e, 0x1f, 0x30 };
    CHECK(runs_of(&mt, p5, 3, &rv, &nr) == 0 && nr == 1 && rv[0].npages == 3);
    free(rv);

    /* backwards and repeated frames never coalesce */
    uint64_t p6[4] = { 0x12, 0x11, 0x11, 0x12 };
    CHECK(runs_of(&mt, p6, 4, &rv, &nr) == 0 && nr == 3);
    CHECK(rv[0].npages == 1 && rv[1].npages == 1 && rv[2].first == 2 && rv[2].npages == 2);
    free(rv);

    /* overflowing pfns, alone and after a valid contiguous prefix */
    uint64_t p7[3] = { 0x10, 0x11, UINT64_MAX };
    CHECK(runs_of(&mt, p7, 3, &rv, &nr) == -EINVAL);
    uint64_t p8[2] = { (UINT64_MAX >> 12) + 1, 0x10 };
    CHECK(runs_of(&mt, p8, 2, &rv, &nr) == -EINVAL);
    /* hostile pfn whose +1 wraps: never treated as a continuation */
    uint64_t p9[2] = { UINT64_MAX >> 12, 0 };
    CHECK(runs_of(&mt, p9, 2, &rv, &nr) == -EFAULT);

    memtable_clear(&mt);
    close(fda);
}

/* A region whose backing offset is not page aligned: every frame rejected */
static void test_unaligned(void)
{
    struct memtable mt;
    memtable_init(&mt);
    CHECK(memtable_add(&mt, 0x10000, 0x2000, 0x7f0000000000, 0x800, make_memfd(0x3000)) == 0);
    uint64_t p[2] = { 0x10, 0x11 };
    struct map_run *rv;
    uint32_t nr;
    CHECK(runs_of(&mt, p, 2, &rv, &nr) == -EFAULT);
    memtable_clear(&mt);
}

/* Region change between two layouts (what lock and map see): the second walk
 * must use the new table, so a removed region is caught. */
static void test_generation(void)
{
    struct memtable mt;
    int fda;
    setup(&mt, &fda);
    uint64_t p[4] = { 0x20, 0x21, 0x22, 0x23 };
    struct map_run *rv;
    uint32_t nr;
    uint64_t g = mt.generation;
    CHECK(runs_of(&mt, p, 4, &rv, &nr) == 0 && nr == 1);
    free(rv);
    CHECK(memtable_remove(&mt, 0x20000, 0x8000, 0x7f1000000000) == 0);
    CHECK(mt.generation != g);
    CHECK(runs_of(&mt, p, 4, &rv, &nr) == -EFAULT);
    memtable_clear(&mt);
    close(fda);
}

int main(void)
{
    test_runs();
    test_unaligned();
    test_generation();
    return tap_done();
}
