/* Fuzz target: hostd/introspect and the host API introspection handlers
 * against guest-controlled page tables and attacker-chosen requests.
 *
 * Guest RAM (a memfd): A gpa 0..256 KiB, B 256..512 KiB right after it, a
 * hole, C at 4 GiB (64 KiB). The first 16 pages of A are page tables the
 * input writes (pokes: an entry pointing at another table with fuzzed
 * flags, or a raw 64-bit value anywhere in them); then up to 64 operations:
 * translations, guest-virtual reads and writes, vectored physical reads and
 * writes with addresses near every edge (region ends, the hole, 2^64), and
 * the same as host API envelopes through host_api_handle (bounds, statuses,
 * encoding). Invariants (done <= len, levels <= 5, per-range statuses) abort. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_input.h"
#include "host_api_handlers.h"
#include "introspect.h"
#include "log.h"
#include "memtable.h"

#define KiB 1024ull
#define A_SIZE (256 * KiB)
#define B_GPA A_SIZE
#define B_SIZE (256 * KiB)
#define C_GPA (4ull << 30)
#define C_SIZE (64 * KiB)
#define FILE_SIZE (A_SIZE + B_SIZE + C_SIZE)
#define NTABLES 16u

static struct memtable mt;
static uint8_t *file; /* our mapping of the memfd */
static bool dirty;    /* an input wrote guest RAM beyond the tables */
static uint8_t buf[INTROSPECT_MAX_BYTES + 64];

static int lookup(void *ctx, const char *name, struct host_api_vm *out)
{
    if (strcmp(name, "vm") && strcmp(name, "closed"))
        return -ENOENT;
    *out = (struct host_api_vm){ .name = name, .cid = 3, .mem = &mt, .introspect = !strcmp(name, "vm") };
    return 0;
}
static const struct host_api_vm_ops vm_ops = { .lookup = lookup };

static int setup(void)
{
    log_threshold = -1; /* quiet */
    memtable_init(&mt);
    int fd = memfd_create("fuzz-introspect", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, FILE_SIZE) < 0)
        return -1;
    file = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (file == MAP_FAILED || memtable_add(&mt, 0, A_SIZE, 0x10000000, 0, dup(fd)) < 0 ||
        memtable_add(&mt, B_GPA, B_SIZE, 0x20000000, A_SIZE, dup(fd)) < 0 ||
        memtable_add(&mt, C_GPA, C_SIZE, 0x30000000, A_SIZE + B_SIZE, dup(fd)) < 0)
        return -1;
    close(fd);
    return 0;
}

static uint64_t take64(struct fuzz_in *in)
{
    uint64_t v;
    fuzz_take(in, &v, sizeof(v));
    return v;
}

static uint32_t take32(struct fuzz_in *in)
{
    uint32_t v;
    fuzz_take(in, &v, sizeof(v));
    return v;
}

/* An address near an edge worth probing. */
static uint64_t edge_addr(struct fuzz_in *in)
{
    static const uint64_t base[] = { 0, A_SIZE, B_GPA + B_SIZE, C_GPA, C_GPA + C_SIZE, UINT64_MAX, 1ull << 47 };
    uint8_t k = fuzz_take8(in);
    int16_t delta;
    fuzz_take(in, &delta, sizeof(delta));
    if (k >= 2 * sizeof(base) / sizeof(base[0]))
        return take64(in);
    return base[k % (sizeof(base) / sizeof(base[0]))] + (uint64_t)(int64_t)delta;
}

/* A virtual address: mostly one whose table indices are small (the entries
 * poke() fills), canonical for the paging mode; else an edge. */
static uint64_t fuzz_va(struct fuzz_in *in, bool la57)
{
    uint8_t k = fuzz_take8(in);
    if (k & 1)
        return edge_addr(in);
    uint64_t va = take32(in) & 0xfff;
    for (unsigned level = 1; level <= 5; level++)
        va |= (uint64_t)(fuzz_take8(in) & 3) << (12 + 9 * (level - 1));
    unsigned bits = la57 ? 57 : 48;
    if (va >> (bits - 1) & 1)
        va |= ~0ull << bits; /* sign-extend: canonical */
    else
        va &= (1ull << bits) - 1;
    return va;
}

static uint32_t small_len(struct fuzz_in *in)
{
    uint8_t k = fuzz_take8(in);
    uint32_t v = take32(in);
    return k & 0x80 ? v % (INTROSPECT_MAX_BYTES + 2) : v % 9000;
}

static void poke(struct fuzz_in *in)
{
    uint8_t kind = fuzz_take8(in);
    uint16_t where;
    fuzz_take(in, &where, sizeof(where));
    uint64_t *tables = (uint64_t *)file; /* gpa 0.. of region A */
    /* mostly the first entries, which the addresses of fuzz_va() index */
    unsigned slot = (unsigned)(kind >> 4) % NTABLES * 512 + (where & (kind & 8 ? 511 : 3));
    if (kind & 1) {
        tables[slot] = take64(in);
    } else {
        uint8_t flags = fuzz_take8(in), target = fuzz_take8(in);
        /* targets past the 16 tables or at 4 GiB: tables outside them, or outside RAM */
        uint64_t to = (uint64_t)(target % (NTABLES + 4)) * 4096 + (kind & 2 ? C_GPA : 0);
        tables[slot] = to | flags | (kind & 4 ? PTE_NX : PTE_P);
    }
}

static uint64_t fuzz_cr3(struct fuzz_in *in)
{
    uint8_t k = fuzz_take8(in);
    return (uint64_t)(k % 4) * 4096 | (k & 0x80 ? 0x8000000000000fffull : 0);
}

static void check_walk(int rc, const struct introspect_walk *w)
{
    if (w->level > 5 || (rc == 0 && w->page_size != 4096 && w->page_size != (2u << 20) && w->page_size != (1u << 30)))
        abort();
    if (rc != 0 && rc != -EFAULT && rc != -EADDRNOTAVAIL)
        abort();
}

static void api_call(const mdl_envelope *e)
{
    struct api_ctx ctx = { .vm_ops = &vm_ops };
    uint8_t *f = NULL;
    size_t n = 0;
    if (host_api_handle(&ctx, e, &f, &n) == 0) {
        mdl_envelope *r;
        if (n < MDLMAP_FRAME_HDR || frame_decode(f + MDLMAP_FRAME_HDR, n - MDLMAP_FRAME_HDR, &r) < 0)
            abort(); /* hostd must answer with a frame it can decode itself */
        frame_envelope_free(r);
    }
    free(f);
}

static void op(struct fuzz_in *in)
{
    uint8_t o = fuzz_take8(in);
    bool la57 = o & 0x80;
    char detail[200];
    size_t done;
    uint64_t fault;
    switch (o % 8) {
    case 0: {
        struct introspect_walk w;
        uint64_t cr3 = fuzz_cr3(in), va = fuzz_va(in, la57);
        check_walk(introspect_translate(&mt, cr3, la57, va, &w), &w);
        break;
    }
    case 1:
    case 2: {
        uint64_t cr3 = fuzz_cr3(in), va = fuzz_va(in, la57);
        uint32_t len = small_len(in);
        int rc = o % 8 == 1 ? introspect_virt_read(&mt, cr3, la57, va, buf, len, &done, &fault)
                            : introspect_virt_write(&mt, cr3, la57, va, buf, len, &done, &fault);
        if (done > len || (rc == 0 && done != len) || (rc == -EINVAL && len <= INTROSPECT_MAX_BYTES))
            abort();
        dirty |= o % 8 == 2 && done;
        break;
    }
    case 3:
    case 4: {
        struct introspect_iov v[8];
        unsigned n = fuzz_take8(in) % 9;
        size_t off = 0;
        for (unsigned i = 0; i < n; i++) {
            v[i].gpa = edge_addr(in);
            v[i].len = small_len(in) % 4096;
            v[i].buf = buf + off;
            v[i].status = 1;
            off += v[i].len;
        }
        int rc = o % 8 == 3 ? introspect_phys_readv(&mt, v, n, detail, sizeof(detail))
                            : introspect_phys_writev(&mt, v, n, detail, sizeof(detail));
        for (unsigned i = 0; rc == 0 && i < n; i++)
            if (v[i].status != 0 && v[i].status != -EADDRNOTAVAIL)
                abort();
        dirty |= o % 8 == 4;
        break;
    }
    case 5: { /* PhysRead / PhysWrite envelopes, up to past the range bound */
        unsigned n = (unsigned)(take32(in) % (INTROSPECT_MAX_RANGES + 3));
        Mdlmap__V1__PhysRange *r = calloc(n + 1, sizeof(*r)), **rp = calloc(n + 1, sizeof(*rp));
        Mdlmap__V1__PhysChunk *c = calloc(n + 1, sizeof(*c)), **cp = calloc(n + 1, sizeof(*cp));
        if (!r || !rp || !c || !cp)
            abort();
        for (unsigned i = 0; i < n; i++) {
            mdlmap__v1__phys_range__init(&r[i]);
            mdlmap__v1__phys_chunk__init(&c[i]);
            r[i].gpa = c[i].gpa = i < 16 ? edge_addr(in) : i * 64ull;
            r[i].length = i < 16 ? small_len(in) : 64;
            c[i].data.data = buf;
            c[i].data.len = r[i].length > sizeof(buf) ? sizeof(buf) : r[i].length;
            rp[i] = &r[i];
            cp[i] = &c[i];
        }
        mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__PhysReadRequest rq = MDLMAP__V1__PHYS_READ_REQUEST__INIT;
        Mdlmap__V1__PhysWriteRequest wq = MDLMAP__V1__PHYS_WRITE_REQUEST__INIT;
        rq.vm_name = wq.vm_name = la57 ? "closed" : o & 0x40 ? "nosuch" : "vm";
        rq.ranges = rp;
        rq.n_ranges = n;
        wq.chunks = cp;
        wq.n_chunks = n;
        if (o & 0x20) {
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_WRITE;
            e.phys_write = &wq;
            dirty = true;
        } else {
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ;
            e.phys_read = &rq;
        }
        api_call(&e);
        free(r);
        free(rp);
        free(c);
        free(cp);
        break;
    }
    case 6: { /* Translate, VirtRead, VirtWrite, PhysMap envelopes */
        uint64_t va[8];
        unsigned n = fuzz_take8(in) % 9;
        for (unsigned i = 0; i < n; i++)
            va[i] = fuzz_va(in, la57);
        mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__TranslateRequest tq = MDLMAP__V1__TRANSLATE_REQUEST__INIT;
        Mdlmap__V1__VirtReadRequest vr = MDLMAP__V1__VIRT_READ_REQUEST__INIT;
        Mdlmap__V1__VirtWriteRequest vw = MDLMAP__V1__VIRT_WRITE_REQUEST__INIT;
        Mdlmap__V1__PhysMapRequest pm = MDLMAP__V1__PHYS_MAP_REQUEST__INIT;
        tq.vm_name = vr.vm_name = vw.vm_name = pm.vm_name = "vm";
        tq.cr3 = vr.cr3 = vw.cr3 = fuzz_cr3(in);
        tq.la57 = vr.la57 = vw.la57 = la57;
        tq.vaddrs = va;
        tq.n_vaddrs = n;
        vr.vaddr = vw.vaddr = n ? va[0] : 0;
        vr.length = small_len(in);
        vw.data.data = buf;
        vw.data.len = small_len(in);
        pm.writable = o & 0x40;
        switch ((o >> 4) & 3) {
        case 0:
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_TRANSLATE;
            e.translate = &tq;
            break;
        case 1:
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_READ;
            e.virt_read = &vr;
            break;
        case 2:
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_WRITE;
            e.virt_write = &vw;
            dirty = true;
            break;
        default:
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP;
            e.phys_map = &pm;
            break;
        }
        api_call(&e);
        break;
    }
    default:
        poke(in);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready)
        ready = setup() == 0 ? 1 : -1;
    if (ready < 0)
        abort();
    /* the same input always meets the same RAM */
    memset(file, 0, dirty ? FILE_SIZE : NTABLES * 4096);
    dirty = false;
    struct fuzz_in in = { data, size };
    unsigned pokes = fuzz_take8(&in) % 64;
    for (unsigned i = 0; i < pokes; i++)
        poke(&in);
    for (unsigned i = 0; i < 64 && in.n; i++)
        op(&in);
    return 0;
}
