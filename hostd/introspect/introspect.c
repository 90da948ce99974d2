/* Guest-physical and guest-virtual access for introspection (introspect.h).
 * Guest RAM and the page tables in it change under our feet (the guest runs
 * on): every value is read once and only used after it was checked. */
#include "introspect.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "memtable.h"

int introspect_check_bounds(size_t n, uint64_t total, char *detail, size_t detail_len)
{
    if (n > INTROSPECT_MAX_RANGES) {
        snprintf(detail, detail_len, "%zu ranges: at most %u per request", n, INTROSPECT_MAX_RANGES);
        return -EINVAL;
    }
    if (total > INTROSPECT_MAX_BYTES) {
        snprintf(detail, detail_len, "%llu bytes: at most %u per request", (unsigned long long)total,
                 INTROSPECT_MAX_BYTES);
        return -EINVAL;
    }
    return 0;
}

/* Walk [gpa, gpa+len) region by region; with copy, move the bytes. Each
 * piece but the last ends its region, and regions do not overlap: at most
 * one piece per region, whatever the range. */
static int phys_pieces(const struct memtable *mt, uint64_t gpa, uint8_t *buf, size_t len, bool write, bool copy)
{
    if (len == 0)
        return memtable_find_gpa(mt, gpa, NULL) ? 0 : -EADDRNOTAVAIL;
    if (gpa + (len - 1) < gpa)
        return -EADDRNOTAVAIL; /* wraps past 2^64 */
    uint64_t a = gpa;
    size_t left = len;
    for (unsigned piece = 0; left; piece++) {
        uint64_t avail = 0;
        const struct mem_region *r = piece < mt->n ? memtable_find_gpa(mt, a, &avail) : NULL;
        if (!r)
            return -EADDRNOTAVAIL;
        size_t k = avail < left ? (size_t)avail : left;
        if (copy) {
            uint8_t *h = r->hva + (a - r->gpa);
            if (write)
                memcpy(h, buf, k);
            else
                memcpy(buf, h, k);
        }
        buf += k;
        a += k; /* may reach 2^64 (wrapping to 0) only with left == 0 */
        left -= k;
    }
    return 0;
}

/* All or nothing: check every piece, then copy. */
static int phys_copy(const struct memtable *mt, uint64_t gpa, uint8_t *buf, size_t len, bool write)
{
    int rc = phys_pieces(mt, gpa, buf, len, write, false);
    if (rc == 0)
        phys_pieces(mt, gpa, buf, len, write, true);
    return rc;
}

int introspect_phys_read(const struct memtable *mt, uint64_t gpa, void *buf, size_t len)
{
    return phys_copy(mt, gpa, buf, len, false);
}

int introspect_phys_write(const struct memtable *mt, uint64_t gpa, const void *buf, size_t len)
{
    return phys_copy(mt, gpa, (uint8_t *)(uintptr_t)buf, len, true);
}

static int phys_vec(const struct memtable *mt, struct introspect_iov *v, size_t n, bool write, char *detail,
                    size_t detail_len)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n && i <= INTROSPECT_MAX_RANGES && total <= INTROSPECT_MAX_BYTES; i++)
        total += v[i].len > INTROSPECT_MAX_BYTES ? INTROSPECT_MAX_BYTES + 1ull : v[i].len;
    int rc = introspect_check_bounds(n, total, detail, detail_len);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        v[i].status = phys_copy(mt, v[i].gpa, v[i].buf, v[i].len, write);
    return 0;
}

int introspect_phys_readv(const struct memtable *mt, struct introspect_iov *v, size_t n, char *detail,
                          size_t detail_len)
{
    return phys_vec(mt, v, n, false, detail, detail_len);
}

int introspect_phys_writev(const struct memtable *mt, struct introspect_iov *v, size_t n, char *detail,
                           size_t detail_len)
{
    return phys_vec(mt, v, n, true, detail, detail_len);
}

bool introspect_canonical(uint64_t va, bool la57)
{
    unsigned unused = la57 ? 64 - 57 : 64 - 48;
    uint64_t top = va >> (63 - unused); /* the sign bit and every bit above it */
    return top == 0 || top == (1ull << (unused + 1)) - 1;
}

int introspect_translate(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va,
                         struct introspect_walk *w)
{
    memset(w, 0, sizeof(*w));
    if (!introspect_canonical(va, la57))
        return -EFAULT;
    uint64_t table = cr3 & PTE_ADDR_MASK;
    bool rw = true, us = true, nx = false;
    /* at most 5 entry reads: the loop runs on the level, never on guest data */
    for (unsigned level = la57 ? 5 : 4; level >= 1; level--) {
        unsigned shift = 12 + 9 * (level - 1);
        uint64_t ea = table + ((va >> shift) & 511) * 8;
        w->level = level;
        const void *p = memtable_gpa_to_hva(mt, ea, 8);
        if (!p)
            return -EADDRNOTAVAIL;
        uint64_t e;
        memcpy(&e, p, sizeof(e)); /* once: the guest may rewrite it meanwhile */
        if (!(e & PTE_P))
            return -EFAULT;
        rw = rw && (e & PTE_RW);
        us = us && (e & PTE_US);
        nx = nx || (e & PTE_NX);
        w->writable = rw;
        w->user = us;
        w->nx = nx;
        if ((e & PTE_PS) && level >= 4)
            return -EFAULT; /* reserved in PML5E/PML4E: the CPU faults (RSVD) */
        if (level == 1 || (e & PTE_PS)) {
            uint64_t size = 1ull << shift;
            w->page_size = size;
            w->gpa = (e & PTE_ADDR_MASK & ~(size - 1)) | (va & (size - 1));
            return memtable_find_gpa(mt, w->gpa, NULL) ? 0 : -EADDRNOTAVAIL;
        }
        table = e & PTE_ADDR_MASK;
    }
    return -EFAULT; /* not reached: level 1 always ends the walk */
}

/* Page by page, in 4 KiB steps even inside large pages: a fault names the
 * first 4 KiB page that could not be copied, and a large page that runs off
 * RAM still yields its part inside RAM. */
static int virt_rw(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va, uint8_t *buf, size_t len,
                   bool write, size_t *done, uint64_t *fault_va)
{
    *done = 0;
    *fault_va = 0;
    if (len > INTROSPECT_MAX_BYTES)
        return -EINVAL;
    size_t off = 0;
    while (off < len) { /* at most len / 4096 + 1 steps */
        uint64_t a = va + off;
        size_t k = INTROSPECT_PAGE - (size_t)(a & (INTROSPECT_PAGE - 1));
        if (k > len - off)
            k = len - off;
        struct introspect_walk w;
        int rc = introspect_translate(mt, cr3, la57, a, &w);
        if (rc == 0)
            rc = phys_copy(mt, w.gpa, buf + off, k, write);
        if (rc < 0) {
            *done = off;
            *fault_va = a;
            return rc;
        }
        off += k;
    }
    *done = len;
    return 0;
}

int introspect_virt_read(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va, void *buf, size_t len,
                         size_t *done, uint64_t *fault_va)
{
    return virt_rw(mt, cr3, la57, va, buf, len, false, done, fault_va);
}

int introspect_virt_write(const struct memtable *mt, uint64_t cr3, bool la57, uint64_t va, const void *buf,
                          size_t len, size_t *done, uint64_t *fault_va)
{
    return virt_rw(mt, cr3, la57, va, (uint8_t *)(uintptr_t)buf, len, true, done, fault_va);
}
