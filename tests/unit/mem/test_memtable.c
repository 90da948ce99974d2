/* memtable: real memfds; add/overlap/remove/translate edge cases. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memtable.h"
#include "tap.h"

static int make_memfd(size_t size)
{
    int fd = memfd_create("test_memtable", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        return -1;
    return fd;
}

static bool fd_closed(int fd)
{
    return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
}

static void test_basic(void)
{
    struct memtable mt;
    memtable_init(&mt);
    int fd = make_memfd(0x4000);
    CHECK(fd >= 0);
    uint64_t gen = mt.generation;
    CHECK(memtable_add(&mt, 0x1000, 0x4000, 0x7f0000001000, 0, fd) == 0);
    CHECK(mt.generation != gen);
    CHECK(mt.n == 1);
    CHECK(memtable_total(&mt) == 0x4000);

    uint8_t *p = memtable_gpa_to_hva(&mt, 0x1000, 0x4000);
    CHECK(p != NULL);
    /* the mapping is shared with the file */
    p[0x123] = 0xab;
    uint8_t b = 0;
    CHECK(pread(fd, &b, 1, 0x123) == 1 && b == 0xab);

    CHECK(memtable_gpa_to_hva(&mt, 0x1000 + 0x3fff, 1) == p + 0x3fff); /* last byte */
    CHECK(memtable_gpa_to_hva(&mt, 0x1000 + 0x3fff, 2) == NULL);       /* crosses end */
    CHECK(memtable_gpa_to_hva(&mt, 0x1000, 0x4001) == NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x0fff, 1) == NULL);                /* before start */
    CHECK(memtable_gpa_to_hva(&mt, 0x0fff, 2) == NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x5000, 0) == NULL);                /* end, len 0 */
    CHECK(memtable_gpa_to_hva(&mt, 0x4fff, 0) == p + 0x3fff);
    CHECK(memtable_gpa_to_hva(&mt, 0x1000, 0) == p);
    CHECK(memtable_gpa_to_hva(&mt, UINT64_MAX, 2) == NULL);            /* wrap-around */
    CHECK(memtable_gpa_to_hva(&mt, 0x2000, UINT64_MAX) == NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x2000, UINT64_MAX - 0x1000) == NULL);

    CHECK(memtable_uva_to_hva(&mt, 0x7f0000001000, 0x4000) == p);
    CHECK(memtable_uva_to_hva(&mt, 0x7f0000004fff, 1) == p + 0x3fff);
    CHECK(memtable_uva_to_hva(&mt, 0x7f0000004fff, 2) == NULL);
    CHECK(memtable_uva_to_hva(&mt, 0x1000, 1) == NULL); /* a GPA is not a UVA */

    uint64_t avail = 0;
    const struct mem_region *r = memtable_find_gpa(&mt, 0x2000, &avail);
    CHECK(r != NULL && avail == 0x3000);
    CHECK(memtable_find_gpa(&mt, 0x5000, &avail) == NULL);

    /* overlaps are refused and the fd is closed */
    int fd2 = make_memfd(0x4000);
    CHECK(memtable_add(&mt, 0x4000, 0x2000, 0x7f1000000000, 0, fd2) == -EEXIST);
    CHECK(fd_closed(fd2));
    fd2 = make_memfd(0x4000);
    CHECK(memtable_add(&mt, 0x0, 0x1001, 0x7f1000000000, 0, fd2) == -EEXIST);
    fd2 = make_memfd(0x10000);
    CHECK(memtable_add(&mt, 0x0, 0x10000, 0x7f1000000000, 0, fd2) == -EEXIST); /* encloses */
    /* adjacent on both sides is fine */
    fd2 = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0x5000, 0x2000, 0x7f2000000000, 0, fd2) == 0);
    fd2 = make_memfd(0x1000);
    CHECK(memtable_add(&mt, 0x0, 0x1000, 0x7f3000000000, 0, fd2) == 0);
    CHECK(mt.n == 3);
    /* adjacent regions still never translate a range spanning both */
    CHECK(memtable_gpa_to_hva(&mt, 0x4fff, 2) == NULL);

    /* remove needs an exact match */
    gen = mt.generation;
    CHECK(memtable_remove(&mt, 0x5000, 0x2000, 0x7f2000000001) == -ENOENT);
    CHECK(memtable_remove(&mt, 0x5000, 0x1000, 0x7f2000000000) == -ENOENT);
    CHECK(memtable_remove(&mt, 0x5000, 0x2000, 0x7f2000000000) == 0);
    CHECK(mt.generation != gen);
    CHECK(mt.n == 2);
    CHECK(memtable_gpa_to_hva(&mt, 0x5000, 1) == NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x1000, 1) != NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x0, 1) != NULL);

    memtable_clear(&mt);
    CHECK(mt.n == 0 && memtable_total(&mt) == 0);
    CHECK(memtable_gpa_to_hva(&mt, 0x1000, 1) == NULL);
    CHECK(fd_closed(fd));
}

static void test_bad_regions(void)
{
    struct memtable mt;
    memtable_init(&mt);
    int fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0x1000, 0, 0x1000, 0, fd) == -EINVAL);
    CHECK(fd_closed(fd));
    fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0xfffffffffffff000ull, 0x2000, 0x1000, 0, fd) == -EINVAL); /* gpa wraps */
    fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0xfffffffffffff000ull, 0x1000, 0x1000, 0, fd) == -EINVAL); /* ends at 2^64 */
    fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0x1000, 0x2000, 0xfffffffffffff000ull, 0, fd) == -EINVAL); /* uva wraps */
    fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0x1000, 0x2000, 0x1000, UINT64_MAX, fd) == -EINVAL); /* offset wraps */
    fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0x1000, 0x3000, 0x1000, 0, fd) == -EINVAL); /* beyond file */
    fd = make_memfd(0x2000);
    CHECK(memtable_add(&mt, 0x1000, 0x1000, 0x1000, 0x1001, fd) == -EINVAL); /* beyond file */
    CHECK(memtable_add(&mt, 0x1000, 0x1000, 0x1000, 0, -1) == -EBADF);
    CHECK(mt.n == 0);

    /* unaligned mmap offset: mapped from the aligned-down offset */
    fd = make_memfd(0x3000);
    uint8_t pat[16] = "0123456789abcdef";
    CHECK(pwrite(fd, pat, sizeof(pat), 0x1800) == (ssize_t)sizeof(pat));
    CHECK(memtable_add(&mt, 0x10000, 0x1000, 0x20000, 0x1800, fd) == 0);
    uint8_t *p = memtable_gpa_to_hva(&mt, 0x10000, 16);
    CHECK(p != NULL && memcmp(p, pat, 16) == 0);
    CHECK(memtable_gpa_to_hva(&mt, 0x10fff, 1) != NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x10fff, 2) == NULL);
    memtable_clear(&mt);
}

static void test_full(void)
{
    struct memtable mt;
    memtable_init(&mt);
    int fd = make_memfd(0x1000);
    int ok = 0;
    for (unsigned i = 0; i < MEMTABLE_MAX_REGIONS; i++)
        if (memtable_add(&mt, (uint64_t)i * 0x1000, 0x1000, 0x100000 + (uint64_t)i * 0x1000, 0, dup(fd)) == 0)
            ok++;
    CHECK(ok == MEMTABLE_MAX_REGIONS);
    CHECK(memtable_add(&mt, 0x1000000, 0x1000, 0x2000000, 0, dup(fd)) == -ENOSPC);
    /* lookups across many regions */
    CHECK(memtable_gpa_to_hva(&mt, 0x3f000, 0x1000) != NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x40000, 1) == NULL);
    /* remove from the middle keeps the rest reachable */
    CHECK(memtable_remove(&mt, 0x5000, 0x1000, 0x105000) == 0);
    CHECK(memtable_gpa_to_hva(&mt, 0x5000, 1) == NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x6000, 1) != NULL);
    CHECK(memtable_gpa_to_hva(&mt, 0x3f000, 1) != NULL);
    memtable_clear(&mt);
    close(fd);
}

int main(void)
{
    test_basic();
    test_bad_regions();
    test_full();
    return tap_done();
}
