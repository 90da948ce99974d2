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

/* Frame runs as the guest sends them (LockRequest.runs): the geometry checks
 * on the peer's values, then the layout built from runs without a per-page
 * array. */
static void test_frame_runs_check(void)
{
#define FR(...) ((const struct map_frames[]){ __VA_ARGS__ })
#define CHK(off, cnt, fr, n) map_layout_check_frame_runs(off, cnt, fr, n, MAP_MAX_MDL_PAGES, detail, sizeof(detail))
    /* 3 pages spanned (offset 100, 2 pages + 100 bytes) */
    CHECK(CHK(100, 8292, FR({ 0x10, 3 }), 1) == 0);
    CHECK(CHK(100, 8292, FR({ 0x10, 1 }, { 0x20, 2 }), 2) == 0);
    /* a zero count, even where the sum would come out right */
    CHECK(CHK(100, 8292, FR({ 0x10, 3 }, { 0x20, 0 }), 2) == -EINVAL);
    CHECK(strstr(detail, "empty") != NULL);
    /* counts summing to fewer or more pages than spanned */
    CHECK(CHK(100, 8292, FR({ 0x10, 2 }), 1) == -EINVAL);
    CHECK(CHK(100, 8292, FR({ 0x10, 4 }), 1) == -EINVAL);
    CHECK(CHK(100, 8292, FR({ 0x10, 2 }, { 0x20, UINT32_MAX }), 2) == -EINVAL);
    /* counts whose 32-bit sum would wrap to the page count */
    CHECK(CHK(0, 8192, FR({ 0x10, UINT32_MAX }, { 0x20, 3 }), 2) == -EINVAL);
    /* a run whose last frame has no 64-bit address, or whose end wraps */
    CHECK(CHK(0, 2 * 4096, FR({ (UINT64_MAX >> 12), 2 }), 1) == -EINVAL);
    CHECK(strstr(detail, "overflows") != NULL);
    CHECK(CHK(0, 2 * 4096, FR({ UINT64_MAX, 2 }), 1) == -EINVAL);
    CHECK(CHK(0, 4096, FR({ (UINT64_MAX >> 12), 1 }), 1) == 0); /* the last addressable frame */
    /* more runs than pages (every run holds one): refused before any sum */
    CHECK(CHK(0, 4096, FR({ 0x10, 1 }, { 0x11, 0 }), 2) == -EINVAL);
    CHECK(strstr(detail, "2 frame runs") != NULL);
    CHECK(CHK(0, 4096, FR({ 0x10, 1 }), 0) == -EINVAL);
    /* buffer geometry as for pfns: offset, zero count, above the MDL limit */
    CHECK(CHK(4096, 1, FR({ 0x10, 1 }), 1) == -EINVAL);
    CHECK(CHK(0, 0, FR({ 0x10, 1 }), 1) == -EINVAL);
    CHECK(CHK(4095, UINT32_MAX, FR({ 0x10, 1048576 }), 1) == -EINVAL);
    /* the largest MDL (4 GiB - 1 page) as one run, and one page more */
    CHECK(CHK(0, 0xFFFFF000u, FR({ 0x100000, MAP_MAX_MDL_PAGES }), 1) == 0);
    CHECK(CHK(1, 0xFFFFF000u, FR({ 0x100000, MAP_MAX_MDL_PAGES + 1 }), 1) == -EINVAL);
#undef CHK
}

static void test_frame_runs_layout(void)
{
    struct memtable mt;
    int fda;
    setup(&mt, &fda);
    struct map_run *rv;
    uint32_t nr;
    /* one run across A -> B: split at the region boundary, as for pfns */
    CHECK(map_layout_frame_runs(&mt, FR({ 0x1c, 8 }), 1, &rv, &nr, detail, sizeof(detail)) == 0);
    CHECK(nr == 2 && rv[0].npages == 4 && rv[1].first == 4 && rv[1].npages == 4);
    free(rv);
    /* runs the peer did not coalesce still make one mapping */
    CHECK(map_layout_frame_runs(&mt, FR({ 0x10, 2 }, { 0x12, 3 }, { 0x15, 1 }), 3, &rv, &nr, detail,
                                sizeof(detail)) == 0);
    CHECK(nr == 1 && rv[0].npages == 6 && rv[0].fd_off == 0);
    free(rv);
    /* a run into the hole: the error names the MDL's page index */
    CHECK(map_layout_frame_runs(&mt, FR({ 0x10, 1 }, { 0x26, 4 }), 2, &rv, &nr, detail, sizeof(detail)) ==
          -EFAULT);
    CHECK(rv == NULL && strstr(detail, "pfn[3]") != NULL);
    /* an unaddressable first frame, and a zero count reaching the layout */
    CHECK(map_layout_frame_runs(&mt, FR({ UINT64_MAX, 1 }), 1, &rv, &nr, detail, sizeof(detail)) == -EINVAL);
    CHECK(map_layout_frame_runs(&mt, FR({ 0x10, 0 }), 1, &rv, &nr, detail, sizeof(detail)) == -EINVAL);

    /* pfns coalesce into runs: contiguous -> 1, scattered -> one per break */
    uint64_t p[6] = { 5, 6, 7, 9, 10, 3 };
    struct map_frames *fr;
    uint32_t nfr;
    CHECK(map_layout_frames_of_pfns(p, 3, &fr, &nfr) == 0 && nfr == 1 && fr[0].first_pfn == 5 &&
          fr[0].count == 3);
    free(fr);
    CHECK(map_layout_frames_of_pfns(p, 6, &fr, &nfr) == 0 && nfr == 3 && fr[1].first_pfn == 9 &&
          fr[1].count == 2 && fr[2].first_pfn == 3 && fr[2].count == 1);
    free(fr);
    CHECK(map_layout_frames_of_pfns(p, 0, &fr, &nfr) == -EINVAL);
    memtable_clear(&mt);
    close(fda);
#undef FR
}

int main(void)
{
    test_runs();
    test_unaligned();
    test_generation();
    test_frame_runs_check();
    test_frame_runs_layout();
    return tap_done();
}