/* Guest memory table: the regions QEMU registers through vhost-user
 * (SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG). Each region is an fd (memfd)
 * mapped MAP_SHARED into hostd. Translates guest-physical addresses (GPA) and
 * QEMU user-space addresses (UVA, used for ring addresses) to hostd pointers,
 * always checking that [addr, addr+len) lies wholly inside one region. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define MEMTABLE_MAX_REGIONS 64

struct mem_region {
    uint64_t gpa;         /* guest physical start */
    uint64_t size;        /* bytes */
    uint64_t uva;         /* QEMU user-space address of gpa */
    uint64_t mmap_offset; /* offset of gpa within fd */
    int fd;               /* owned */
    uint8_t *hva;         /* hostd address of gpa */
    void *map_base;       /* what mmap returned (may start before hva) */
    size_t map_len;
};

/* The region array grows with the table (up to MEMTABLE_MAX_REGIONS) and
 * is freed by memtable_clear: a VM without QEMU, or with the usual one or
 * two regions, does not carry 64 slots (one hostd serves a thousand VMs).
 * Pointers into it are valid until the next change (generation). */
struct memtable {
    struct mem_region *r;
    unsigned n, cap;
    uint64_t generation; /* bumped on every change; users re-translate cached pointers */
};

void memtable_init(struct memtable *mt);
/* Takes ownership of fd on success AND on failure (closes it). Rejects zero size,
 * wrap-around, overlap with an existing region's GPA range, table full. */
int memtable_add(struct memtable *mt, uint64_t gpa, uint64_t size, uint64_t uva, uint64_t mmap_offset, int fd);
/* Removes the region with exactly this gpa and size (uva must match too). */
int memtable_remove(struct memtable *mt, uint64_t gpa, uint64_t size, uint64_t uva);
void memtable_clear(struct memtable *mt); /* unmap and close everything, free the array */

/* NULL unless [gpa, gpa+len) is inside one region. len 0 is allowed (checks gpa). */
void *memtable_gpa_to_hva(const struct memtable *mt, uint64_t gpa, uint64_t len);
void *memtable_uva_to_hva(const struct memtable *mt, uint64_t uva, uint64_t len);
/* Region containing gpa, or NULL; *avail gets bytes from gpa to region end. */
const struct mem_region *memtable_find_gpa(const struct memtable *mt, uint64_t gpa, uint64_t *avail);
/* Total guest RAM bytes registered. */
uint64_t memtable_total(const struct memtable *mt);
