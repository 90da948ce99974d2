/* hostd/introspect against a memfd-backed memory table (the fake VM plus a
 * third region right after its second one):
 *   A: gpa 0..16 MiB   | hole 16..32 MiB | B: 32..48 MiB | C: 48..64 MiB
 * Vectored physical reads and writes (hole, region edges, gpa near 2^64,
 * ranges spanning B and C, bounds), page-table walks built in guest RAM
 * (4 KiB / 2 MiB / 1 GiB pages, 4- and 5-level, a missing entry at each
 * level, RW/US/NX across levels, non-canonical addresses, tables outside
 * RAM, PCID bits in CR3) and guest-virtual reads and writes across pages. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fake_vm.h"
#include "introspect.h"
#include "tap.h"

#define MiB (1ull << 20)
#define C_GPA (48 * MiB)
#define RAM_END (64 * MiB)
#define NOT_RAM (-EADDRNOTAVAIL)

static struct fake_vm vm;
static uint64_t next_table = 1 * MiB; /* page tables are allocated from here, in region A */

static uint8_t *g(uint64_t gpa)
{
    return vm.file + fake_gpa_to_file(gpa);
}

static uint64_t new_table(void)
{
    uint64_t t = next_table;
    next_table += 4096;
    memset(g(t), 0, 4096);
    return t;
}

static uint64_t *entry(uint64_t table, uint64_t va, unsigned level)
{
    return (uint64_t *)g(table + ((va >> (12 + 9 * (level - 1))) & 511) * 8);
}

/* Map va to pa with a leaf at leaf_level (1: 4 KiB, 2: 2 MiB, 3: 1 GiB);
 * intermediate entries get inter flags (tables made on the way), the leaf
 * leaf flags. Returns the entry at level stop (for the tests that break it). */
static uint64_t *map_at(uint64_t root, bool la57, uint64_t va, uint64_t pa, unsigned leaf_level, uint64_t inter,
                        uint64_t leaf, unsigned stop)
{
    uint64_t table = root, *stop_e = NULL;
    for (unsigned level = la57 ? 5 : 4; level >= leaf_level; level--) {
        uint64_t *e = entry(table, va, level);
        if (level == stop)
            stop_e = e;
        if (level == leaf_level) {
            *e = pa | leaf | (leaf_level > 1 ? PTE_PS : 0);
            break;
        }
        if (!(*e & PTE_P))
            *e = new_table() | inter;
        else
            *e |= inter;
        table = *e & PTE_ADDR_MASK;
    }
    return stop_e;
}

#define RWU (PTE_P | PTE_RW | PTE_US)

static void fill(uint64_t gpa, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        g(gpa + i)[0] = (uint8_t)(seed + i * 7);
}

static bool same(const uint8_t *buf, uint64_t gpa, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != g(gpa + i)[0])
            return false;
    return true;
}

static void test_phys(void)
{
    const struct memtable *mt = &vm.mem;
    uint8_t buf[4096];
    fill(0x1000, 4096, 1);
    CHECK_EQ(introspect_phys_read(mt, 0x1000, buf, 4096), 0);
    CHECK(same(buf, 0x1000, 4096));
    /* region edges: A's last byte, A's end into the hole, the hole, RAM's end */
    CHECK_EQ(introspect_phys_read(mt, 16 * MiB - 1, buf, 1), 0);
    CHECK_EQ(introspect_phys_read(mt, 16 * MiB - 8, buf, 16), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, 16 * MiB, buf, 1), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, 20 * MiB, buf, 4096), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, 32 * MiB - 1, buf, 2), NOT_RAM); /* hole into B */
    CHECK_EQ(introspect_phys_read(mt, RAM_END - 1, buf, 1), 0);
    CHECK_EQ(introspect_phys_read(mt, RAM_END - 1, buf, 2), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, RAM_END, buf, 0), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, 0, buf, 0), 0);
    /* gpa + len wraps, or lies at the top of the address space */
    CHECK_EQ(introspect_phys_read(mt, UINT64_MAX - 7, buf, 16), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, UINT64_MAX, buf, 1), NOT_RAM);
    CHECK_EQ(introspect_phys_read(mt, UINT64_MAX, buf, 2), NOT_RAM);
    /* B and C are adjacent: one range spans both, copied piecewise */
    fill(C_GPA - 300, 600, 9);
    CHECK_EQ(introspect_phys_read(mt, C_GPA - 300, buf, 600), 0);
    CHECK(same(buf, C_GPA - 300, 600));
    uint8_t w[600];
    for (size_t i = 0; i < sizeof(w); i++)
        w[i] = (uint8_t)(0xa0 ^ i);
    CHECK_EQ(introspect_phys_write(mt, C_GPA - 300, w, sizeof(w)), 0);
    CHECK(memcmp(g(C_GPA - 300), w, 300) == 0 && memcmp(g(C_GPA), w + 300, 300) == 0);
    /* a failed write writes nothing, not even its part inside RAM */
    memset(g(16 * MiB - 8), 0x55, 8);
    CHECK_EQ(introspect_phys_write(mt, 16 * MiB - 8, w, 16), NOT_RAM);
    CHECK(g(16 * MiB - 8)[0] == 0x55 && g(16 * MiB - 1)[0] == 0x55);
}

static void test_vectored(void)
{
    const struct memtable *mt = &vm.mem;
    char detail[200] = "";
    static uint8_t big[INTROSPECT_MAX_BYTES + 1];
    uint8_t a[64], b[64], c[64];
    fill(0x2000, 64, 3);
    fill(C_GPA - 32, 64, 4);
    struct introspect_iov v[4] = {
        { .gpa = 0x2000, .buf = a, .len = 64 },
        { .gpa = 17 * MiB, .buf = b, .len = 64 },          /* hole */
        { .gpa = C_GPA - 32, .buf = c, .len = 64 },        /* spans B and C */
        { .gpa = UINT64_MAX - 10, .buf = b, .len = 64 },   /* wraps */
    };
    CHECK_EQ(introspect_phys_readv(mt, v, 4, detail, sizeof(detail)), 0);
    CHECK_EQ(v[0].status, 0);
    CHECK_EQ(v[1].status, NOT_RAM);
    CHECK_EQ(v[2].status, 0);
    CHECK_EQ(v[3].status, NOT_RAM);
    CHECK(same(a, 0x2000, 64) && same(c, C_GPA - 32, 64));
    /* writes: per chunk, the failed one writes nothing */
    memset(a, 0x11, sizeof(a));
    memset(c, 0x22, sizeof(c));
    memset(g(16 * MiB - 4), 0x33, 4);
    struct introspect_iov wv[3] = {
        { .gpa = 0x3000, .buf = a, .len = 64 },
        { .gpa = 16 * MiB - 4, .buf = b, .len = 8 },       /* A's end into the hole */
        { .gpa = C_GPA - 1, .buf = c, .len = 2 },
    };
    CHECK_EQ(introspect_phys_writev(mt, wv, 3, detail, sizeof(detail)), 0);
    CHECK(wv[0].status == 0 && wv[1].status == NOT_RAM && wv[2].status == 0);
    CHECK(g(0x3000)[0] == 0x11 && g(0x3000 + 63)[0] == 0x11);
    CHECK(g(16 * MiB - 4)[0] == 0x33);
    CHECK(g(C_GPA - 1)[0] == 0x22 && g(C_GPA)[0] == 0x22);
    /* bounds: ranges and bytes per request */
    static struct introspect_iov many[INTROSPECT_MAX_RANGES + 1];
    for (unsigned i = 0; i <= INTROSPECT_MAX_RANGES; i++)
        many[i] = (struct introspect_iov){ .gpa = i * 8ull, .buf = big + i * 8, .len = 8 };
    CHECK_EQ(introspect_phys_readv(mt, many, INTROSPECT_MAX_RANGES, detail, sizeof(detail)), 0);
    detail[0] = 0;
    many[0].status = 12345;
    CHECK_EQ(introspect_phys_readv(mt, many, INTROSPECT_MAX_RANGES + 1, detail, sizeof(detail)), -EINVAL);
    CHECK(strstr(detail, "ranges") != NULL);
    CHECK_EQ(many[0].status, 12345); /* refused as a whole: nothing done */
    struct introspect_iov one = { .gpa = 0, .buf = big, .len = INTROSPECT_MAX_BYTES };
    CHECK_EQ(introspect_phys_readv(mt, &one, 1, detail, sizeof(detail)), 0);
    struct introspect_iov two[2] = { { .gpa = 0, .buf = big, .len = INTROSPECT_MAX_BYTES },
                                     { .gpa = 0, .buf = big, .len = 1 } };
    detail[0] = 0;
    CHECK_EQ(introspect_phys_readv(mt, two, 2, detail, sizeof(detail)), -EINVAL);
    CHECK(strstr(detail, "bytes") != NULL);
    struct introspect_iov huge = { .gpa = 0, .buf = big, .len = SIZE_MAX };
    CHECK_EQ(introspect_phys_writev(mt, &huge, 1, detail, sizeof(detail)), -EINVAL);
}

static void check_walk(uint64_t root, bool la57, uint64_t va, int want_rc, uint64_t gpa, uint64_t size,
                       unsigned level)
{
    struct introspect_walk w;
    int rc = introspect_translate(&vm.mem, root, la57, va, &w);
    CHECK_EQ(rc, want_rc);
    CHECK_EQ(w.level, level);
    if (want_rc == 0 || size) {
        CHECK_EQ(w.gpa, gpa);
        CHECK_EQ(w.page_size, size);
    }
}

static void test_page_sizes(void)
{
    uint64_t root = new_table();
    uint64_t va4k = 0x00007f1234567000ull, va2m = 0x00007f0000200000ull, va1g = 0x0000004000000000ull;
    map_at(root, false, va4k, C_GPA + 0x5000, 1, RWU, RWU, 0);
    map_at(root, false, va2m, 4 * MiB, 2, RWU, RWU, 0);
    map_at(root, false, va1g, 0, 3, RWU, RWU, 0);
    check_walk(root, false, va4k + 0x123, 0, C_GPA + 0x5123, 4096, 1);
    check_walk(root, false, va2m + 0x1ff123, 0, 4 * MiB + 0x1ff123, 2 * MiB, 2);
    check_walk(root, false, va1g + 0xabc123, 0, 0xabc123, 1ull << 30, 3);
    /* a 1 GiB page whose target offset lies in the hole: translated, not RAM */
    check_walk(root, false, va1g + 20 * MiB, NOT_RAM, 20 * MiB, 1ull << 30, 3);
    /* a 2 MiB leaf's frame bits 12..20 are ignored (PAT and reserved bits) */
    uint64_t *pde = entry(*entry(*entry(root, va2m, 4) & PTE_ADDR_MASK, va2m, 3) & PTE_ADDR_MASK, va2m, 2);
    *pde |= 0x1ff000;
    check_walk(root, false, va2m + 5, 0, 4 * MiB + 5, 2 * MiB, 2);
    /* CR3: PCID (bits 0..11) and bit 63 (no-flush) are not address bits */
    check_walk(root | 0xfff | (1ull << 63), false, va4k, 0, C_GPA + 0x5000, 4096, 1);

    /* 5-level: an address with bits above 47 (canonical only with LA57) */
    uint64_t root5 = new_table();
    uint64_t va5 = 0x00ab123456789000ull;
    map_at(root5, true, va5, 0x7000, 1, RWU, RWU, 0);
    check_walk(root5, true, va5 + 0x10, 0, 0x7010, 4096, 1);
    check_walk(root5, false, va5, -EFAULT, 0, 0, 0); /* not canonical for 4-level */
    uint64_t va5g = 0xff00000040000000ull;            /* upper half, 1 GiB page */
    map_at(root5, true, va5g, 0, 3, RWU, RWU, 0);
    check_walk(root5, true, va5g + 0x42, 0, 0x42, 1ull << 30, 3);
}

static void test_not_present(void)
{
    for (int la57 = 0; la57 <= 1; la57++) {
        unsigned top = la57 ? 5 : 4;
        for (unsigned stop = 1; stop <= top; stop++) {
            uint64_t root = new_table(), va = 0x0000123456789000ull;
            uint64_t *e = map_at(root, la57, va, 0x9000, 1, RWU, RWU, stop);
            check_walk(root, la57, va, 0, 0x9000, 4096, 1);
            *e &= ~PTE_P;
            tap_diag("not present at level %u of %u", stop, top);
            check_walk(root, la57, va, -EFAULT, 0, 0, stop);
            *e = 0;
            check_walk(root, la57, va, -EFAULT, 0, 0, stop);
        }
    }
    /* PS in a PML4E is reserved: a fault, not a 512 GiB page */
    uint64_t root = new_table(), va = 0x0000008000000000ull;
    uint64_t *pml4e = map_at(root, false, va, 0x9000, 1, RWU, RWU, 4);
    *pml4e |= PTE_PS;
    check_walk(root, false, va, -EFAULT, 0, 0, 4);
}

static void test_flags(void)
{
    uint64_t root = new_table();
    struct introspect_walk w;
    uint64_t va1 = 0x0000100000000000ull, va2 = 0x0000200000000000ull, va3 = 0x0000300000000000ull;
    /* RW clear in the PDPTE only: not writable; leaf has US clear: not user */
    uint64_t *pdpte = map_at(root, false, va1, 0xa000, 1, RWU, PTE_P | PTE_RW, 3);
    *pdpte &= ~PTE_RW;
    CHECK_EQ(introspect_translate(&vm.mem, root, false, va1, &w), 0);
    CHECK(!w.writable && !w.user && !w.nx);
    /* NX at the PML4E only */
    uint64_t *pml4e = map_at(root, false, va2, 0xb000, 1, RWU, RWU, 4);
    *pml4e |= PTE_NX;
    CHECK_EQ(introspect_translate(&vm.mem, root, false, va2, &w), 0);
    CHECK(w.writable && w.user && w.nx);
    /* everything set everywhere */
    map_at(root, false, va3, 0xc000, 2, RWU, RWU, 0);
    CHECK_EQ(introspect_translate(&vm.mem, root, false, va3, &w), 0);
    CHECK(w.writable && w.user && !w.nx && w.page_size == 2 * MiB);
    /* NX on the leaf of a 2 MiB page */
    *entry(*entry(*entry(root, va3, 4) & PTE_ADDR_MASK, va3, 3) & PTE_ADDR_MASK, va3, 2) |= PTE_NX;
    CHECK_EQ(introspect_translate(&vm.mem, root, false, va3, &w), 0);
    CHECK(w.nx);
}

static void test_canonical_and_outside(void)
{
    CHECK(introspect_canonical(0x00007fffffffffffull, false));
    CHECK(!introspect_canonical(0x0000800000000000ull, false));
    CHECK(introspect_canonical(0xffff800000000000ull, false));
    CHECK(!introspect_canonical(0xfff7800000000000ull, false));
    CHECK(introspect_canonical(0x00ffffffffffffffull, true));
    CHECK(!introspect_canonical(0x0100000000000000ull, true));
    CHECK(introspect_canonical(0xff00000000000000ull, true));
    CHECK(!introspect_canonical(0xfe00000000000000ull, true));
    uint64_t root = new_table();
    check_walk(root, false, 0x0000800000000000ull, -EFAULT, 0, 0, 0);
    check_walk(root, false, 0x8000000000000000ull, -EFAULT, 0, 0, 0);
    /* CR3 in the hole, and beyond RAM */
    check_walk(20 * MiB, false, 0x1000, NOT_RAM, 0, 0, 4);
    check_walk(0x000ffffffffff000ull, true, 0x1000, NOT_RAM, 0, 0, 5);
    /* a page directory in the hole, a page table beyond the end of RAM */
    uint64_t va = 0x0000000040000000ull;
    uint64_t *pdpte = map_at(root, false, va, 0x1000, 1, RWU, RWU, 3);
    uint64_t pd = *pdpte & PTE_ADDR_MASK;
    *pdpte = (20 * MiB) | RWU;
    check_walk(root, false, va, NOT_RAM, 0, 0, 2);
    *pdpte = pd | RWU;
    *entry(pd, va, 2) = (1ull << 40) | RWU;
    check_walk(root, false, va, NOT_RAM, 0, 0, 1);
    /* a 4 KiB leaf whose frame is in the hole: the gpa is reported */
    uint64_t va2 = 0x0000000080000000ull;
    uint64_t *pte = map_at(root, false, va2, 0x1000, 1, RWU, RWU, 1);
    *pte = (24 * MiB) | RWU;
    check_walk(root, false, va2 + 8, NOT_RAM, 24 * MiB + 8, 4096, 1);
}

static void test_virtual(void)
{
    const struct memtable *mt = &vm.mem;
    uint64_t root = new_table();
    uint64_t va = 0x0000555500000000ull;
    /* three virtual pages: 0 -> C+0x3000, 1 -> 0x20000 (not contiguous), 2 absent */
    map_at(root, false, va, C_GPA + 0x3000, 1, RWU, RWU, 0);
    map_at(root, false, va + 4096, 0x20000, 1, RWU, PTE_P | PTE_US /* read-only */, 0);
    fill(C_GPA + 0x3000, 4096, 5);
    fill(0x20000, 4096, 6);
    uint8_t buf[3 * 4096];
    size_t done = 99;
    uint64_t fault = 99;
    CHECK_EQ(introspect_virt_read(mt, root, false, va + 4000, buf, 200, &done, &fault), 0);
    CHECK(done == 200 && fault == 0);
    CHECK(same(buf, C_GPA + 0x3000 + 4000, 96) && same(buf + 96, 0x20000, 104));
    /* into the non-present third page: stops at its first byte */
    CHECK_EQ(introspect_virt_read(mt, root, false, va + 8000, buf, 400, &done, &fault), -EFAULT);
    CHECK_EQ(done, 8192 - 8000);
    CHECK_EQ(fault, va + 8192);
    CHECK(same(buf, 0x20000 + 8000 - 4096, done));
    /* starting in it: nothing done */
    CHECK_EQ(introspect_virt_read(mt, root, false, va + 8192 + 5, buf, 10, &done, &fault), -EFAULT);
    CHECK(done == 0 && fault == va + 8192 + 5);
    /* writes go through read-only pages (a debugger's breakpoint) */
    uint8_t w[64];
    memset(w, 0xcc, sizeof(w));
    CHECK_EQ(introspect_virt_write(mt, root, false, va + 4096 - 32, w, 64, &done, &fault), 0);
    CHECK(done == 64 && g(C_GPA + 0x3000 + 4095)[0] == 0xcc && g(0x20000 + 31)[0] == 0xcc &&
          g(0x20000 + 32)[0] != 0xcc);
    /* a write that runs into the absent page writes the pages before it */
    CHECK_EQ(introspect_virt_write(mt, root, false, va + 8192 - 16, w, 64, &done, &fault), -EFAULT);
    CHECK(done == 16 && fault == va + 8192 && g(0x20000 + 4095)[0] == 0xcc);
    /* a page that is not RAM ends the access with that status */
    map_at(root, false, va + 8192, 18 * MiB, 1, RWU, RWU, 0);
    CHECK_EQ(introspect_virt_read(mt, root, false, va + 8000, buf, 400, &done, &fault), NOT_RAM);
    CHECK(done == 192 && fault == va + 8192);
    /* bound */
    static uint8_t big[INTROSPECT_MAX_BYTES + 1];
    CHECK_EQ(introspect_virt_read(mt, root, false, va, big, sizeof(big), &done, &fault), -EINVAL);
    CHECK(done == 0);
    /* non-canonical start */
    CHECK_EQ(introspect_virt_read(mt, root, false, 0x0000800000000000ull, buf, 1, &done, &fault), -EFAULT);
}

int main(void)
{
    if (!tap_check(fake_vm_init(&vm, "introspect", 3) == 0, "fake VM") ||
        !tap_check(memtable_add(&vm.mem, C_GPA, 16 * MiB, 0x7f0004000000ull, 32 * MiB, dup(vm.fd)) == 0,
                   "region C after B"))
        return tap_done();
    test_phys();
    test_vectored();
    test_page_sizes();
    test_not_present();
    test_flags();
    test_canonical_and_outside();
    test_virtual();
    fake_vm_fini(&vm);
    return tap_done();
}
