/* Mapping engine unit tests against a memfd-backed memtable. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "map_engine.h"
#include "fake_vm.h"
#include "tap.h"

#define PG 4096u
#define DL 200

static char detail[DL];

static struct map_engine *engine(uint64_t vmq, uint64_t gq, uint64_t vmas)
{
    struct map_limits lim = { .vm_page_quota = vmq, .global_page_quota = gq, .max_vmas = vmas };
    return map_engine_new(&lim);
}

/* lock pages [pfns] with a buffer of n pages (offset 0, full pages) */
static int lock_pages(struct map_engine *e, struct map_owner *o, const uint64_t *pfns, uint32_t n, uint64_t *h)
{
    return map_engine_lock(e, o, 0, n * PG, pfns, n, 1, h, detail, DL);
}

static int map_k(struct map_engine *e, struct map_owner *o, uint64_t h, uint32_t prio, const struct map_obj **m)
{
    struct map_params p = { .access_mode = MAP_MODE_KERNEL, .cache_type = 1, .priority = prio };
    return map_engine_map(e, o, h, &p, m, detail, DL);
}

static void test_coalescing(struct fake_vm *f)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct map_owner o = { fv, 1 };
    uint64_t pfns[16], h;
    const struct map_obj *m;
    struct map_stats st;

    for (int i = 0; i < 16; i++)
        pfns[i] = 100 + (uint64_t)i; /* contiguous */
    CHECK_EQ(lock_pages(e, &o, pfns, 16, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    map_engine_stats(e, &st);
    CHECK_EQ(st.vmas, 2); /* run + guard */
    CHECK_EQ(st.mapped_pages, 16);

    for (int i = 0; i < 16; i++)
        pfns[i] = 1000 + 2 * (uint64_t)i; /* scattered */
    CHECK_EQ(lock_pages(e, &o, pfns, 16, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).runs, 16);

    for (int i = 0; i < 16; i++)
        pfns[i] = 3000 - (uint64_t)i; /* descending: not contiguous in the file order */
    CHECK_EQ(lock_pages(e, &o, pfns, 16, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).runs, 16);

    /* last page of region A + first page of region B: different regions, same
     * file, adjacent file offsets -> one run */
    uint64_t cross[2] = { (FAKE_HOLE_GPA >> 12) - 1, FAKE_B_GPA >> 12 };
    CHECK_EQ(lock_pages(e, &o, cross, 2, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    map_engine_stats(e, &st);
    CHECK_EQ(st.vmas, 2 + 17 + 17 + 2);
    CHECK_EQ(st.mappings, 4);
    map_engine_free(e);
}

static void test_bounds(struct fake_vm *f)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct map_owner o = { fv, 1 };
    uint64_t h, p1[1], p2[2];

    p1[0] = FAKE_HOLE_GPA >> 12; /* MMIO hole */
    CHECK_EQ(lock_pages(e, &o, p1, 1, &h), -EFAULT);
    p1[0] = (48ull << 20) >> 12; /* just past region B */
    CHECK_EQ(lock_pages(e, &o, p1, 1, &h), -EFAULT);
    p1[0] = (1ull << 40); /* far out of range */
    CHECK_EQ(lock_pages(e, &o, p1, 1, &h), -EFAULT);
    p1[0] = (1ull << 60); /* pfn << 12 overflows */
    CHECK_EQ(lock_pages(e, &o, p1, 1, &h), -EINVAL);
    p1[0] = UINT64_MAX;
    CHECK_EQ(lock_pages(e, &o, p1, 1, &h), -EINVAL);
    p1[0] = 5;
    CHECK_EQ(map_engine_lock(e, &o, 4096, 1, p1, 1, 0, &h, detail, DL), -EINVAL);   /* offset >= page */
    CHECK_EQ(map_engine_lock(e, &o, 0, 0, p1, 1, 0, &h, detail, DL), -EINVAL);      /* count 0 */
    CHECK_EQ(map_engine_lock(e, &o, 100, UINT32_MAX, p1, 1, 0, &h, detail, DL), -EINVAL); /* overflow */
    CHECK_EQ(map_engine_lock(e, &o, 4095, 2, p1, 1, 0, &h, detail, DL), -EINVAL);   /* spans 2, 1 pfn */
    p2[0] = 5;
    p2[1] = 9;
    CHECK_EQ(map_engine_lock(e, &o, 4095, 2, p2, 2, 0, &h, detail, DL), 0);         /* 3 bytes over the edge */
    CHECK_EQ(map_engine_lock(e, &o, 0, 10, p2, 2, 0, &h, detail, DL), -EINVAL);     /* too many pfns */
    CHECK_EQ(map_engine_lock(e, &o, 0, 10, p2, 1, 7, &h, detail, DL), -EINVAL);     /* bad operation */
    /* too many pages for one MDL */
    uint64_t *big = calloc(MAP_MAX_MDL_PAGES + 1, sizeof(*big));
    CHECK_EQ(map_engine_lock(e, &o, 0, (MAP_MAX_MDL_PAGES + 1) * PG - 1, big, MAP_MAX_MDL_PAGES + 1, 0, &h,
                             detail, DL), -EINVAL);
    free(big);
    /* bad map parameters */
    const struct map_obj *m;
    p1[0] = 5;
    CHECK_EQ(lock_pages(e, &o, p1, 1, &h), 0);
    struct map_params bad = { .access_mode = 0, .cache_type = 6, .priority = 16 };
    CHECK_EQ(map_engine_map(e, &o, h, &bad, &m, detail, DL), -EINVAL);
    bad.cache_type = 0;
    bad.priority = 0x10000;
    CHECK_EQ(map_engine_map(e, &o, h, &bad, &m, detail, DL), -EINVAL);
    bad.priority = 16;
    bad.access_mode = 2;
    CHECK_EQ(map_engine_map(e, &o, h, &bad, &m, detail, DL), -EINVAL);
    bad.access_mode = MAP_MODE_KERNEL;
    CHECK_EQ(map_engine_map(e, &o, h, &bad, &m, detail, DL), 0);
    CHECK_EQ(MI(m).cache_type, 0); /* MmNonCached recorded */
    CHECK_EQ(map_engine_map(e, &o, h, &bad, &m, detail, DL), -EBUSY); /* mapped twice */
    map_engine_free(e);
}

/* permissions of the /proc/self/maps line containing addr, e.g. "r--s" */
static void perms_of(uint64_t addr, char out[5])
{
    FILE *fp = fopen("/proc/self/maps", "r");
    char line[512];
    strcpy(out, "????");
    while (fp && fgets(line, sizeof(line), fp)) {
        unsigned long lo, hi;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && addr >= lo && addr < hi) {
            memcpy(out, perm, 5);
            break;
        }
    }
    if (fp)
        fclose(fp);
}

static bool write_faults(volatile uint8_t *p)
{
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* sanitizers would report instead of dying */
        *p = 1;
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    /* the child reaches _exit(0) only if the write went through */
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_nowrite(struct fake_vm *f)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct map_owner o = { fv, 1 };
    uint64_t pfns[2] = { 50, 51 }, h;
    const struct map_obj *m;
    char perm[5];
    CHECK_EQ(lock_pages(e, &o, pfns, 2, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16 | MAP_FLAG_NOWRITE | MAP_FLAG_NOEXEC, &m), 0);
    CHECK(MI(m).read_only);
    perms_of(MI(m).address, perm);
    CHECK(strcmp(perm, "r--s") == 0);
    perms_of((uint64_t)(uintptr_t)MI(m).base + 2 * PG, perm); /* guard page */
    CHECK(strcmp(perm, "---p") == 0);
    CHECK(write_faults((volatile uint8_t *)(uintptr_t)MI(m).address));
    uint64_t h2;
    CHECK_EQ(lock_pages(e, &o, pfns, 2, &h2), 0);
    CHECK_EQ(map_k(e, &o, h2, 16, &m), 0);
    perms_of(MI(m).address, perm);
    CHECK(strcmp(perm, "rw-s") == 0);
    CHECK(!write_faults((volatile uint8_t *)(uintptr_t)MI(m).address));
    map_engine_free(e);
}

static void test_quota_priority(struct fake_vm *f, struct fake_vm *g)
{
    /* 100 pages per VM, 150 global */
    struct map_engine *e = engine(100, 150, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    /* the second VM joins after the first mapped: alone, a VM's guaranteed
     * share is the whole pool, and the priority shares are what is tested */
    struct map_owner o = { fv, 1 }, o2 = { NULL, 2 };
    uint64_t pfns[80], h, h2, h3;
    const struct map_obj *m;
    for (int i = 0; i < 80; i++)
        pfns[i] = 200 + (uint64_t)i;
    CHECK_EQ(lock_pages(e, &o, pfns, 80, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 0, &m), -ENOSPC);  /* Low: 80 > 75% of 100 */
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);       /* Normal: 80 <= 90 */
    CHECK_EQ(lock_pages(e, &o, pfns, 15, &h2), 0);
    CHECK_EQ(map_k(e, &o, h2, 16, &m), -ENOSPC); /* Normal: 95 > 90 */
    CHECK_EQ(map_k(e, &o, h2, 32, &m), 0);       /* High: 95 <= 100 */
    CHECK_EQ(lock_pages(e, &o, pfns, 6, &h3), 0);
    CHECK_EQ(map_k(e, &o, h3, 32, &m), -ENOSPC); /* High: 101 > 100 */
    uint64_t pages, maps;
    map_engine_vm_usage(e, fv, &pages, &maps);
    CHECK_EQ(pages, 95);
    CHECK_EQ(maps, 2);
    /* global: 95 used of 150; other VM maps 40 Normal: 135 <= 135 ok, then Low 1 fails */
    o2.vm = fake_vm_add(g, e);
    uint64_t k1, k2;
    CHECK_EQ(lock_pages(e, &o2, pfns, 40, &k1), 0);
    CHECK_EQ(map_k(e, &o2, k1, 16, &m), 0);
    CHECK_EQ(lock_pages(e, &o2, pfns, 1, &k2), 0);
    CHECK_EQ(map_k(e, &o2, k2, 0, &m), -ENOSPC);
    CHECK_EQ(map_k(e, &o2, k2, 32, &m), 0);
    map_engine_free(e);

    /* VMA budget: 10 VMAs; a fully scattered 8-page MDL needs 9 */
    e = engine(0, 0, 10);
    o.vm = fake_vm_add(f, e);
    for (int i = 0; i < 8; i++)
        pfns[i] = 400 + 2 * (uint64_t)i;
    CHECK_EQ(lock_pages(e, &o, pfns, 8, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);     /* 9 <= 9 */
    CHECK_EQ(map_engine_unlock(e, &o, h, &(unsigned){ 0 }, detail, DL), 0);
    CHECK_EQ(lock_pages(e, &o, pfns, 8, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 0, &m), -ENOSPC); /* Low: 9 > 7.5 */
    map_engine_free(e);
}

static void test_zero_copy(struct fake_vm *f)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct map_owner o = { fv, 1 };
    /* 3 pages, scattered across both regions, buffer at offset 100 */
    uint64_t pfns[3] = { 700, (FAKE_B_GPA >> 12) + 10, 3 }, h;
    const struct map_obj *m;
    CHECK_EQ(map_engine_lock(e, &o, 100, 3 * PG - 200, pfns, 3, 2, &h, detail, DL), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    uint8_t *buf = (uint8_t *)(uintptr_t)MI(m).address;
    CHECK_EQ((uintptr_t)buf & (PG - 1), 100);
    /* guest side writes (through the memfd) are visible through the mapping */
    for (int pg = 0; pg < 3; pg++) {
        uint8_t *gp = f->file + fake_gpa_to_file(pfns[pg] << 12);
        memset(gp, 0xA0 + pg, PG);
    }
    CHECK_EQ(buf[0], 0xA0);
    CHECK_EQ(buf[PG - 100], 0xA1);
    CHECK_EQ(buf[2 * PG - 100], 0xA2);
    /* host writes through the mapping land in the guest's pages */
    memcpy(buf + PG - 102, "xyzw", 4); /* across the page boundary */
    uint8_t *g0 = f->file + fake_gpa_to_file(pfns[0] << 12);
    uint8_t *g1 = f->file + fake_gpa_to_file(pfns[1] << 12);
    CHECK(memcmp(g0 + PG - 2, "xy", 2) == 0);
    CHECK(memcmp(g1, "zw", 2) == 0);
    map_engine_free(e);
}

static void test_scoping(struct fake_vm *f, struct fake_vm *g)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct map_vm *gv = fake_vm_add(g, e); (void)gv;
    struct map_owner a = { fv, 7 }, b = { gv, 7 }, a2 = { fv, 8 };
    uint64_t pfns[1] = { 10 }, h;
    const struct map_obj *m;
    unsigned rel;
    CHECK_EQ(lock_pages(e, &a, pfns, 1, &h), 0);
    CHECK_EQ(map_k(e, &b, h, 16, &m), -EBADF);   /* other VM */
    CHECK_EQ(map_k(e, &a2, h, 16, &m), -EBADF);  /* other connection */
    CHECK_EQ(map_engine_unlock(e, &b, h, &rel, detail, DL), -ENOLCK);  /* other VM: not locked by it */
    CHECK_EQ(map_engine_unlock(e, &a2, h, &rel, detail, DL), -ENOLCK); /* other connection */
    CHECK_EQ(map_engine_unlock(e, &a, h ^ 1, &rel, detail, DL), -ENOLCK); /* never locked */
    CHECK_EQ(map_k(e, &a, h, 16, &m), 0);
    uint64_t mh = MI(m).handle, addr = MI(m).address;
    CHECK(mh != h);
    CHECK_EQ(map_engine_unmap(e, &b, mh, addr, h, detail, DL), -EBADF);
    CHECK_EQ(map_engine_unmap(e, &a2, mh, addr, h, detail, DL), -EBADF);
    CHECK_EQ(map_engine_unmap(e, &a, mh, addr + 1, h, detail, DL), -ENXIO);
    CHECK_EQ(map_engine_unmap(e, &a, mh, addr, h + 1, detail, DL), -EINVAL);
    CHECK_EQ(map_engine_unmap(e, &a, 0, addr + 1, h, detail, DL), -ENXIO);
    CHECK_EQ(map_engine_unmap(e, &a, 0, addr, h, detail, DL), 0);  /* by address + MDL */
    CHECK_EQ(map_engine_unmap(e, &a, mh, addr, h, detail, DL), -EBADF);
    /* unlock releases the mapping (R10); unlocking twice: not locked */
    CHECK_EQ(map_k(e, &a, h, 16, &m), 0);
    CHECK_EQ(map_engine_unlock(e, &a, h, &rel, detail, DL), 0);
    CHECK_EQ(rel, 1);
    CHECK_EQ(map_engine_unlock(e, &a, h, &rel, detail, DL), -ENOLCK);
    CHECK(map_engine_next_map(e, NULL) == NULL);
    /* connection teardown: leaks recorded, everything released */
    uint64_t h2;
    CHECK_EQ(lock_pages(e, &a, pfns, 1, &h), 0);
    CHECK_EQ(lock_pages(e, &a, pfns, 1, &h2), 0);
    CHECK_EQ(map_k(e, &a, h, 16, &m), 0);
    CHECK_EQ(lock_pages(e, &b, pfns, 1, &h2), 0);
    CHECK_EQ(map_engine_release(e, &a, false, "connection closed"), 3);
    struct map_stats st;
    map_engine_stats(e, &st);
    CHECK_EQ(st.mappings, 0);
    CHECK_EQ(st.locked_mdls, 1); /* the other VM's */
    CHECK_EQ(st.leaks_reported, 3);
    const struct map_leaks *lk = map_engine_vm_leaks(a.vm);
    CHECK_EQ(map_leaks_count(lk), 3);
    CHECK(map_leaks_get(lk, 0)->was_mapped);
    CHECK(!map_leaks_get(lk, 1)->was_mapped);
    /* VM reset releases every connection of the VM */
    CHECK_EQ(map_engine_release(e, &b, true, "device reset"), 1);
    map_engine_stats(e, &st);
    CHECK_EQ(st.locked_mdls, 0);
    CHECK_EQ(st.vmas, 0);
    map_engine_free(e);
}

static void test_memtable_change(struct fake_vm *f)
{
    /* a mapping survives the region being removed from the memtable */
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct fake_vm t;
    CHECK_EQ(fake_vm_init(&t, "tmp", 9), 0);
    struct map_owner o = { fake_vm_add(&t, e), 1 };
    uint64_t pfns[1] = { 20 }, h;
    const struct map_obj *m;
    CHECK_EQ(lock_pages(e, &o, pfns, 1, &h), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    t.file[20 * PG] = 0x5a;
    memtable_clear(&t.mem);
    CHECK_EQ(((uint8_t *)(uintptr_t)MI(m).address)[0], 0x5a);
    /* a new map of the locked MDL now fails: frames are no longer RAM */
    uint64_t h2;
    CHECK_EQ(lock_pages(e, &o, pfns, 1, &h2), -EFAULT);
    map_engine_free(e);
    fake_vm_fini(&t);
    (void)f;
}

/* A UserMode consumer stub: counts what hostd asks of it. */
struct fake_consumer {
    unsigned map_into, unmap_from;
    uint64_t last_handle;
};

static int fc_map_into(void *ctx, const struct map_obj *m, const struct map_run *runs, uint32_t nruns)
{
    struct fake_consumer *fc = ctx;
    fc->map_into++;
    fc->last_handle = MI(m).handle;
    return 0;
}

static void fc_unmap_from(void *ctx, uint64_t map_handle, uint64_t base, uint64_t len)
{
    ((struct fake_consumer *)ctx)->unmap_from++;
}

static const struct map_consumer_ops fc_ops = { .map_into = fc_map_into, .unmap_from = fc_unmap_from };

struct done_rec {
    unsigned calls;
    int err;
};

static void done_cb(void *ctx, int err, const struct map_obj *m, const char *why)
{
    struct done_rec *d = ctx;
    d->calls++;
    d->err = err;
}

/* Map n pages of h UserMode into consumer name; the consumer answers at base. */
static const struct map_obj *map_u(struct map_engine *e, struct map_owner *o, uint64_t h, const char *name,
                                   struct fake_consumer *fc, uint64_t cid, uint64_t base, struct done_rec *d)
{
    struct map_params p = { .access_mode = MAP_MODE_USER, .cache_type = 1, .priority = 16, .consumer = name,
                            .done = done_cb, .done_ctx = d };
    const struct map_obj *m = NULL;
    int rc = map_engine_map(e, o, h, &p, &m, detail, DL);
    CHECK_EQ(rc, -EINPROGRESS);
    if (rc != -EINPROGRESS)
        return NULL;
    if (base)
        CHECK_EQ(map_engine_user_complete(e, cid, fc->last_handle, 0, base, NULL), 0);
    return m;
}

/* A consumer dying with mappings established orphans them (accounting
 * released, stub kept for the guest's unmap); pending ones fail. */
static void test_user_orphans(struct fake_vm *f)
{
    struct map_engine *e = engine(14, 0, 0); /* Normal share: 12 pages */
    struct map_vm *fv = fake_vm_add(f, e); (void)fv;
    struct map_owner o = { fv, 7 };
    struct fake_consumer fc = { 0 }, fc2 = { 0 };
    struct done_rec d1 = { 0 }, d2 = { 0 }, d3 = { 0 }, d4 = { 0 };
    uint64_t id, id2, pfns[4] = { 300, 301, 302, 303 }, h;
    CHECK_EQ(map_engine_consumer_add(e, "view", &fc_ops, &fc, &id), 0);
    CHECK_EQ(lock_pages(e, &o, pfns, 4, &h), 0);
    const struct map_obj *a = map_u(e, &o, h, "view", &fc, id, 0x100000, &d1);
    const struct map_obj *b = map_u(e, &o, h, "view", &fc, id, 0x200000, &d2);
    const struct map_obj *pend = map_u(e, &o, h, "view", &fc, id, 0, &d3); /* unanswered */
    uint64_t ha = a ? MI(a).handle : 0, hp = pend ? MI(pend).handle : 0;
    uint64_t aaddr = a ? MI(a).address : 0, baddr = b ? MI(b).address : 0;
    CHECK_EQ(d1.calls + d2.calls, 2);
    struct map_stats st;
    map_engine_stats(e, &st);
    CHECK_EQ(st.mappings, 3);
    CHECK_EQ(st.mapped_pages, 12);
    /* quota is full: another Normal map does not fit */
    struct map_params p = { .access_mode = MAP_MODE_USER, .cache_type = 1, .priority = 16, .consumer = "view",
                            .done = done_cb, .done_ctx = &d4 };
    const struct map_obj *m;
    CHECK_EQ(map_engine_map(e, &o, h, &p, &m, detail, DL), -ENOSPC);

    map_engine_consumer_remove(e, id);
    CHECK_EQ(d3.calls, 1);
    CHECK_EQ(d3.err, -ENOTCONN);
    CHECK_EQ(fc.unmap_from, 0); /* nobody left to tell */
    map_engine_stats(e, &st);
    CHECK_EQ(st.mappings, 0);
    CHECK_EQ(st.mapped_pages, 0);
    CHECK_EQ(st.orphaned, 2);
    CHECK_EQ(st.leaks_reported, 2);
    const struct map_leaks *lk = map_engine_vm_leaks(o.vm);
    const struct map_leak *l = map_leaks_get(lk, 0);
    CHECK(l && strcmp(l->reason, "consumer gone: view") == 0 && l->was_mapped && l->page_count == 4 &&
          l->mdl_handle == h && l->conn_id == 7);
    CHECK(map_engine_next_map(e, NULL) == NULL);
    CHECK(map_engine_find_map(e, ha) == NULL);
    CHECK(map_engine_find_map(e, hp) == NULL);
    uint64_t pages, maps;
    map_engine_vm_usage(e, fv, &pages, &maps);
    CHECK_EQ(pages, 0);
    CHECK_EQ(maps, 0);
    /* a late answer for the failed one finds nothing */
    CHECK_EQ(map_engine_user_complete(e, id, hp, 0, 0x300000, NULL), -ENOENT);

    /* the released quota is usable again, by a new consumer of the same name */
    CHECK_EQ(map_engine_consumer_add(e, "view", &fc_ops, &fc2, &id2), 0);
    CHECK(id2 != id);
    const struct map_obj *c = map_u(e, &o, h, "view", &fc2, id2, 0x100000, &d4);
    CHECK(c != NULL);
    CHECK_EQ(d4.err, 0);
    /* the guest's unmap of an orphan: address and MDL still checked, then 0 */
    CHECK_EQ(map_engine_unmap(e, &o, ha, aaddr + PG, h, detail, DL), -ENXIO);
    CHECK_EQ(map_engine_unmap(e, &o, ha, aaddr, h + 1, detail, DL), -EINVAL);
    struct map_owner other = { fv, 8 };
    CHECK_EQ(map_engine_unmap(e, &other, ha, aaddr, h, detail, DL), -EBADF);
    CHECK_EQ(map_engine_unmap(e, &o, ha, aaddr, h, detail, DL), 0);
    CHECK_EQ(map_engine_unmap(e, &o, ha, aaddr, h, detail, DL), -EBADF);
    /* by address (handle 0): the new mapping sits at the same address as a
     * was; b (orphan) is found by its own */
    CHECK_EQ(map_engine_unmap(e, &o, 0, baddr, h, detail, DL), 0);
    CHECK_EQ(fc2.unmap_from, 0); /* orphans are never sent to the new consumer */
    map_engine_stats(e, &st);
    CHECK_EQ(st.orphaned, 0);
    CHECK_EQ(st.mappings, 1);
    CHECK_EQ(st.mapped_pages, 4);

    /* orphans left at unlock and at the guest's end are freed too */
    CHECK(map_u(e, &o, h, "view", &fc2, id2, 0x400000, &d4) != NULL);
    map_engine_consumer_remove(e, id2); /* orphans c and the new one */
    map_engine_stats(e, &st);
    CHECK_EQ(st.orphaned, 2);
    unsigned released = 0;
    CHECK_EQ(map_engine_unlock(e, &o, h, &released, detail, DL), 0);
    CHECK_EQ(released, 2);
    map_engine_stats(e, &st);
    CHECK_EQ(st.orphaned, 0);
    CHECK_EQ(st.locked_mdls, 0);
    CHECK_EQ(map_engine_consumer_add(e, "view", &fc_ops, &fc, &id), 0);
    CHECK_EQ(lock_pages(e, &o, pfns, 2, &h), 0);
    CHECK(map_u(e, &o, h, "view", &fc, id, 0x500000, &d4) != NULL);
    map_engine_consumer_remove(e, id);
    uint64_t before = map_engine_vm_leaks(o.vm)->total;
    CHECK_EQ(map_engine_release(e, &o, false, "connection closed"), 2); /* the orphan + the MDL */
    CHECK_EQ(map_engine_vm_leaks(o.vm)->total, before + 2);
    map_engine_stats(e, &st);
    CHECK_EQ(st.orphaned, 0);
    CHECK_EQ(st.locked_mdls, 0);
    /* and map_engine_free() frees orphans (ASan's leak check) */
    CHECK_EQ(map_engine_consumer_add(e, "view", &fc_ops, &fc, &id), 0);
    CHECK_EQ(lock_pages(e, &o, pfns, 2, &h), 0);
    CHECK(map_u(e, &o, h, "view", &fc, id, 0x600000, &d4) != NULL);
    map_engine_consumer_remove(e, id);
    map_engine_free(e);
}

/* One VM cannot take another's share of the VMA budget or of the global
 * page quota: a guest repeating frames (one VMA each) used to fill the whole
 * budget and starve every other VM. */
static void test_fair_share(struct fake_vm *f, struct fake_vm *g)
{
    struct map_engine *e = engine(1000, 1000, 100);
    struct map_owner a = { fake_vm_add(f, e), 1 }, b = { fake_vm_add(g, e), 1 };
    uint64_t pfns[64], h;
    const struct map_obj *m;
    /* A: repeated frames, 64 pages in 64 runs = 65 VMAs > its 50 */
    for (int i = 0; i < 64; i++)
        pfns[i] = 300;
    CHECK_EQ(lock_pages(e, &a, pfns, 64, &h), 0);
    CHECK_EQ(map_k(e, &a, h, 32, &m), -ENOSPC);
    /* ... 48 of them (49 VMAs) fit its share, and then nothing more */
    uint64_t h2, h3;
    CHECK_EQ(lock_pages(e, &a, pfns, 48, &h2), 0);
    CHECK_EQ(map_k(e, &a, h2, 32, &m), 0);
    CHECK_EQ(MI(m).runs, 48);
    CHECK_EQ(lock_pages(e, &a, pfns, 2, &h3), 0);
    CHECK_EQ(map_k(e, &a, h3, 32, &m), -ENOSPC);
    /* B still gets its guaranteed 50 VMAs */
    uint64_t k;
    for (int i = 0; i < 48; i++)
        pfns[i] = 600 + 2 * (uint64_t)i;
    CHECK_EQ(lock_pages(e, &b, pfns, 48, &k), 0);
    CHECK_EQ(map_k(e, &b, k, 32, &m), 0);
    map_engine_free(e);

    /* pages: 1000 global, two VMs, 500 each guaranteed */
    e = engine(1000, 1000, 1000);
    a.vm = fake_vm_add(f, e);
    b.vm = fake_vm_add(g, e);
    uint64_t big[600];
    for (int i = 0; i < 600; i++)
        big[i] = 1000 + (uint64_t)i;
    CHECK_EQ(lock_pages(e, &a, big, 600, &h), 0);
    CHECK_EQ(map_k(e, &a, h, 32, &m), -ENOSPC);   /* 600 > 1000 - B's unused 500 */
    CHECK_EQ(lock_pages(e, &a, big, 500, &h2), 0);
    CHECK_EQ(map_k(e, &a, h2, 32, &m), 0);
    CHECK_EQ(lock_pages(e, &b, big, 500, &k), 0);
    CHECK_EQ(map_k(e, &b, k, 32, &m), 0);         /* B's share was kept for it */
    map_engine_free(e);
}

/* A consumer's VMAs are metered against its own budget: a frame-repeating
 * MDL mapped UserMode made the consumer create one VMA per page, unbounded. */
static void test_consumer_vmas(struct fake_vm *f)
{
    struct map_limits lim = { .max_vmas = 1000, .consumer_vmas = 10 };
    struct map_engine *e = map_engine_new(&lim);
    struct map_owner o = { fake_vm_add(f, e), 1 };
    struct fake_consumer fc = { 0 };
    uint64_t id, h, h2, h3;
    CHECK_EQ(map_engine_consumer_add(e, "view", &fc_ops, &fc, &id), 0);
    uint64_t pfns[16];
    for (int i = 0; i < 16; i++)
        pfns[i] = 500; /* the same frame 16 times: 16 runs, 17 VMAs */
    CHECK_EQ(lock_pages(e, &o, pfns, 16, &h), 0);
    struct map_params p = { .access_mode = MAP_MODE_USER, .cache_type = 1, .priority = 16, .consumer = "view" };
    const struct map_obj *m = NULL;
    CHECK_EQ(map_engine_map(e, &o, h, &p, &m, detail, DL), -ENOSPC);
    CHECK_EQ(fc.map_into, 0);
    /* 8 runs (9 VMAs) fit; 2 more runs (3 VMAs) do not, until the first goes */
    struct done_rec d1 = { 0 }, d2 = { 0 };
    CHECK_EQ(lock_pages(e, &o, pfns, 8, &h2), 0);
    const struct map_obj *a = map_u(e, &o, h2, "view", &fc, id, 0x100000, &d1);
    CHECK(a != NULL);
    CHECK_EQ(lock_pages(e, &o, pfns, 2, &h3), 0);
    CHECK_EQ(map_engine_map(e, &o, h3, &p, &m, detail, DL), -ENOSPC);
    CHECK_EQ(map_engine_unmap(e, &o, MI(a).handle, MI(a).address, h2, detail, DL), 0);
    CHECK(map_u(e, &o, h3, "view", &fc, id, 0x200000, &d2) != NULL);
    map_engine_consumer_remove(e, id);
    map_engine_free(e);
}

/* --guest-addresses alias: the guest is told a per-VM alias of each mapping
 * address, not hostd's own (an ASLR leak to an untrusted party); unmap takes
 * the alias; host tools still see the real address. */
static void test_address_alias(struct fake_vm *f, struct fake_vm *g)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_vm_view va = { .name = f->name, .cid = f->cid, .mem = &f->mem, .alias_addresses = true };
    struct map_vm_view vb = { .name = g->name, .cid = g->cid, .mem = &g->mem, .alias_addresses = true };
    struct map_owner a = { map_engine_vm_add(e, &va), 1 }, b = { map_engine_vm_add(e, &vb), 1 };
    uint64_t pfns[2] = { 70, 71 }, h, k;
    const struct map_obj *m, *n;
    CHECK_EQ(map_engine_lock(e, &a, 100, 5000, pfns, 2, 1, &h, detail, DL), 0);
    CHECK_EQ(map_k(e, &a, h, 16, &m), 0);
    CHECK_EQ(lock_pages(e, &b, pfns, 2, &k), 0);
    CHECK_EQ(map_k(e, &b, k, 16, &n), 0);
    struct map_info im = MI(m), in = MI(n);
    CHECK(im.guest_address != im.address);
    CHECK_EQ(im.guest_address & (MAP_PAGE_SIZE - 1), 100);   /* ByteOffset kept */
    CHECK_EQ(im.address & (MAP_PAGE_SIZE - 1), 100);
    CHECK(im.guest_address - im.address != in.guest_address - in.address); /* per VM */
    CHECK_EQ(((uint8_t *)(uintptr_t)im.address)[0], f->file[70 * PG + 100]); /* real one works */
    CHECK_EQ(map_engine_unmap(e, &a, im.handle, im.address, h, detail, DL), -ENXIO);
    CHECK_EQ(map_engine_unmap(e, &a, im.handle, im.guest_address, h, detail, DL), 0);
    CHECK_EQ(map_engine_unmap(e, &b, 0, in.guest_address, k, detail, DL), 0);  /* by address + MDL */
    map_engine_free(e);
}

/* Leak records are kept per VM: a guest leaking many MDLs must not push
 * another VM's records out (a single engine-wide ring did). */
static void test_leaks_per_vm(struct fake_vm *f, struct fake_vm *g)
{
    struct map_engine *e = engine(0, 0, 1000);
    struct map_owner a = { fake_vm_add(f, e), 1 }, b = { fake_vm_add(g, e), 1 };
    uint64_t pfn = 40, h;
    CHECK_EQ(lock_pages(e, &b, &pfn, 1, &h), 0);
    CHECK_EQ(map_engine_release(e, &b, false, "program exited"), 1);
    for (int i = 0; i < 200; i++)
        CHECK_EQ(lock_pages(e, &a, &pfn, 1, &h), 0);
    CHECK_EQ(map_engine_release(e, &a, false, "program exited"), 200);
    const struct map_leaks *lb = map_engine_vm_leaks(b.vm);
    CHECK(map_leaks_count(lb) == 1 && strcmp(map_leaks_get(lb, 0)->vm_name, g->name) == 0);
    CHECK_EQ(map_leaks_count(map_engine_vm_leaks(a.vm)), MAP_LEAK_RING);
    struct map_stats st;
    map_engine_stats(e, &st);
    CHECK_EQ(st.leaks_reported, 201);
    /* the engine-wide view: newest first across VMs, B's record among them */
    const struct map_leak *rec[64];
    unsigned n = map_engine_recent_leaks(e, rec, 64);
    CHECK_EQ(n, MAP_LEAK_RING + 1);
    bool ordered = true, has_b = false;
    for (unsigned i = 0; i < n; i++) {
        ordered &= i == 0 || rec[i - 1]->seq < rec[i]->seq;
        has_b |= strcmp(rec[i]->vm_name, g->name) == 0;
    }
    CHECK(ordered && has_b);
    CHECK_EQ(rec[n - 1]->seq, 201);
    map_engine_free(e);
}

/* Large MDLs arrive as frame runs: a contiguous 1 GiB MDL (262144 pages) is
 * one run, locks in O(1) frames and maps with a single mmap over a sparse
 * 4 GiB VM; the largest MDL Windows allows (4 GiB - 1 page) locks and maps
 * too; the locked-page and page quotas still apply. */
static void test_large_mdl(void)
{
    struct fake_vm big;
    const uint64_t ram = (4ull << 30) + (16ull << 20);
    if (!CHECK_EQ(fake_vm_init_ram(&big, "vm-big", 7, ram), 0)) {
        fake_vm_fini(&big);
        return;
    }
    /* quotas beyond the largest MDL, so that only what is tested limits */
    struct map_engine *e = engine(1ull << 21, 1ull << 22, 1000);
    struct map_owner o = { fake_vm_add(&big, e), 1 };
    const uint32_t gib_pages = 262144;
    struct map_frames one = { .first_pfn = 0x1000, .count = gib_pages }; /* gpa 16 MiB .. 1 GiB + 16 MiB */
    uint64_t h;
    CHECK_EQ(map_engine_lock_runs(e, &o, 0, 1u << 30, &one, 1, 1, &h, detail, DL), 0);
    const struct map_obj *m;
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).page_count, gib_pages);
    CHECK_EQ(MI(m).runs, 1); /* one mmap: one run of contiguous frames */
    /* zero copy at the far end: the guest's last byte is the mapping's */
    big.file[(16ull << 20) + (1ull << 30) - 1] = 0xa5;
    CHECK_EQ(((volatile uint8_t *)(uintptr_t)MI(m).address)[(1u << 30) - 1], 0xa5);
    CHECK_EQ(map_engine_unmap(e, &o, MI(m).handle, MI(m).address, h, detail, DL), 0);
    /* a memory table change drops the cached layout: the map re-validates
     * from the stored runs, still one mmap */
    CHECK_EQ(memtable_add(&big.mem, ram + (1ull << 30), 1u << 20, 0x7f8000000000ull, 0, dup(big.fd)), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    unsigned rel;
    CHECK_EQ(map_engine_unlock(e, &o, h, &rel, detail, DL), 0);
    CHECK_EQ(rel, 1);

    /* the largest MDL: offset 0, 4 GiB - 1 page, as one run; one page more
     * is refused */
    one.first_pfn = 0;
    one.count = MAP_MAX_MDL_PAGES;
    CHECK_EQ(map_engine_lock_runs(e, &o, 0, MAP_MAX_MDL_PAGES * PG, &one, 1, 1, &h, detail, DL), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), 0);
    CHECK_EQ(MI(m).runs, 1);
    CHECK_EQ(map_engine_unlock(e, &o, h, &rel, detail, DL), 0);
    one.count = MAP_MAX_MDL_PAGES + 1;
    CHECK_EQ(map_engine_lock_runs(e, &o, 1, MAP_MAX_MDL_PAGES * PG, &one, 1, 1, &h, detail, DL), -EINVAL);
    map_engine_free(e);

    /* quotas: the default page quota (1 GiB per VM) lets a 1 GiB mapping
     * through at High priority only (Normal may use 90%) */
    e = engine(0, 0, 1000);
    o.vm = fake_vm_add(&big, e);
    one = (struct map_frames){ .first_pfn = 0x1000, .count = gib_pages };
    CHECK_EQ(map_engine_lock_runs(e, &o, 0, 1u << 30, &one, 1, 1, &h, detail, DL), 0);
    CHECK_EQ(map_k(e, &o, h, 16, &m), -ENOSPC);
    CHECK_EQ(map_k(e, &o, h, 32, &m), 0);
    /* a VM may keep 4 Mi pages locked: 16 GiB MDLs in all, the next is refused */
    uint64_t k;
    unsigned locked = 1;
    while (locked < 20 && map_engine_lock_runs(e, &o, 0, 1u << 30, &one, 1, 1, &k, detail, DL) == 0)
        locked++;
    CHECK_EQ(locked, 16);
    CHECK(strstr(detail, "locked") != NULL);
    map_engine_free(e);
    fake_vm_fini(&big);
}

int main(void)
{
    struct fake_vm f, g;
    if (fake_vm_init(&f, "vm-a", 3) < 0 || fake_vm_init(&g, "vm-b", 4) < 0) {
        perror("fake_vm_init");
        return 1;
    }
    test_coalescing(&f);
    test_bounds(&f);
    test_nowrite(&f);
    test_quota_priority(&f, &g);
    test_fair_share(&f, &g);
    test_leaks_per_vm(&f, &g);
    test_consumer_vmas(&f);
    test_address_alias(&f, &g);
    test_zero_copy(&f);
    test_scoping(&f, &g);
    test_memtable_change(&f);
    test_user_orphans(&f);
    test_large_mdl();
    fake_vm_fini(&f);
    fake_vm_fini(&g);
    return tap_done();
}
