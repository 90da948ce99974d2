/* Whole-guest memory access for host introspection tools: guest-physical
 * reads and writes (vectored, a range may span adjacent RAM regions) and an
 * x86-64 page-table walker with guest-virtual reads and writes on top.
 *
 * Pure functions over a memory table: nothing here keeps state, allocates or
 * logs. Everything they read from guest RAM (page-table entries) is
 * guest-controlled: every walk is at most 5 entry reads, every copy at most
 * INTROSPECT_MAX_BYTES, every loop bounded by the request or the region
 * count, never by guest data.
 *
 * Errors (negative errnos, mapped to NTSTATUS by common/ntstatus.c):
 *   -EADDRNOTAVAIL  a guest-physical range, a page table or the target page
 *                   is not guest RAM (MMIO hole, beyond RAM, gpa+len wraps)
 *   -EFAULT         non-canonical address, or a not-present entry (as the
 *                   access would fault in the guest); also PS set in a
 *                   PML5E/PML4E (a reserved bit: the CPU faults with RSVD)
 *   -EINVAL         a request beyond the bounds below
 *
 * Reserved bits: the walker takes table and page addresses from bits 12..51
 * (2 MiB pages: 21..51, 1 GiB pages: 30..51) and ignores every other bit but
 * P, RW, US, PS and NX. The guest's MAXPHYADDR is unknown here, so an entry
 * whose reserved bits are set (a walk the CPU would fault with RSVD) is
 * followed as if they were clear; only PS at levels 4 and 5, which would
 * change the shape of the walk, is reported as a fault.
 *
 * Writes through guest-virtual addresses do not check RW (nor US, SMAP, SMEP
 * or protection keys): a debugger writes through read-only pages, as a
 * breakpoint into code does. The walk reports RW for tools that care. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct memtable;

#define INTROSPECT_MAX_RANGES 1024u           /* ranges per vectored request */
#define INTROSPECT_MAX_BYTES (512u * 1024u)   /* bytes per request (= MDLMAP_MAX_IO_CHUNK) */
#define INTROSPECT_MAX_VADDRS 4096u           /* addresses per translation request */
#define INTROSPECT_PAGE 4096u

/* ---------------------------------------------------------- guest-physical */

/* One range of a vectored request: [gpa, gpa+len) <-> buf. status: 0 or
 * -EADDRNOTAVAIL, filled in per range. */
struct introspect_iov {
    uint64_t gpa;
    void *buf;
    size_t len;
    int status;
};

/* Whether n ranges of total bytes in all fit one request: 0, or -EINVAL
 * with the reason in detail. */
int introspect_check_bounds(size_t n, uint64_t total, char *detail, size_t detail_len);

/* Copy one guest-physical range (len 0: only checks that gpa is RAM). A
 * range that is not wholly RAM copies nothing: -EADDRNOTAVAIL. */
int introspect_phys_read(const struct memtable *mt, uint64_t gpa, void *buf, size_t len);
int introspect_phys_write(const struct memtable *mt, uint64_t gpa, const void *buf, size_t len);

/* Vectored: -EINVAL (detail) when the request is out of bounds and nothing
 * is copied; else 0 with each range's status in v[i].status (a failed range
 * copies nothing, the others are copied). */
int introspect_phys_readv(const struct memtable *mt, struct introspect_iov *v, size_t n, char *detail,
                          size_t detail_len);
int introspect_phys_writev(const struct memtable *mt, struct introspect_iov *v, size_t n, char *detail,
                           size_t detail_len);

/* ------------------------------------------------------------ page tables */

#define PTE_P (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_US (1ull << 2)
#define PTE_PS (1ull << 7)
#define PTE_NX (1ull << 63)
#define PTE_ADDR_MASK 0x000ffffffffff000ull /* bits 12..51 */

struct introspect_walk {
    uint64_t gpa;        /* translated address (also when the page is not RAM) */
    uint64_t page_size;  /* 4096, 2 MiB or 1 GiB; 0 when the walk failed */
    unsigned level;      /* level of the last entry read: 1 = PTE .. 5 = PML5E; 0: none read */
    bool writable;       /* RW set at every level */
    bool user;           /* US set at every level */
    bool nx;             /* NX set at any level */
};

/* True when va is canonical for 4-level (48-bit) or 5-level (57-bit) paging. */
bool introspect_canonical(uint64_t va, bool la57);

/* Walk the tables from cr3 (bits 12..51; PCID and flag bits ignored) for va.
 * 0: w filled. -EFAULT: non-canonical (level 0) or an entry not present (or
 * PS in a PML5E/PML4E) at w->level. -EADDRNOTAVAIL: the table at w->level
 * is not RAM, or (w->page_size set, w->gpa filled) the page itself is not. */
int introspect_translate(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va,
                         struct introspect_walk *w);

/* Guest-virtual read or write of len bytes (at most INTROSPECT_MAX_BYTES,
 * else -EINVAL before anything is done), page by page. Stops at the first
 * page that does not translate or is not RAM: returns its error, *done =
 * bytes copied before it, *fault_va = the first address not copied. 0 when
 * all was copied (*fault_va = 0). */
int introspect_virt_read(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va, void *buf, size_t len,
                         size_t *done, uint64_t *fault_va);
int introspect_virt_write(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va, const void *buf,
                          size_t len, size_t *done, uint64_t *fault_va);
