/* mdl_bench: hostd's mapping engine time for a 64 MiB MDL, contiguous and
 * fully scattered, next to the bare mmap calls the same layout needs (the
 * system floor: one PROT_NONE reservation, one MAP_FIXED mmap per run, one
 * munmap); then a contiguous 1 GiB MDL locked as one frame run (what
 * LockRequest.runs carries); last the per-call cost of the map path itself:
 * map + unmap pairs of a one-page MDL, where the engine's bookkeeping (not
 * the mmap calls of a large layout) is what the figure shows. Host only: a sparse memfd-backed memtable stands
 * in for guest RAM.
 * Prints figures; never fails on timing.   Usage: mdl_bench [iterations] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "map_engine.h"

#define PG 4096u
#define MDL_BYTES (64u << 20)
#define NPAGES (MDL_BYTES / PG)
#define RAM_BYTES (1280ull << 20) /* sparse: only touched pages cost memory */
#define GIB_PAGES (262144u)

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* bare floor: reserve + one mmap per run + munmap */
static int floor_once(int fd, const uint64_t *pfns, double *map_us, double *unmap_us, unsigned *runs)
{
    double t0 = now_us();
    size_t len = ((size_t)NPAGES + 1) * PG;
    uint8_t *base = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return -1;
    unsigned n = 0;
    for (uint32_t i = 0; i < NPAGES;) {
        uint32_t j = i + 1;
        while (j < NPAGES && pfns[j] == pfns[j - 1] + 1)
            j++;
        if (mmap(base + (size_t)i * PG, (size_t)(j - i) * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                 (off_t)(pfns[i] * PG)) == MAP_FAILED)
            return -1;
        n++;
        i = j;
    }
    double t1 = now_us();
    munmap(base, len);
    *map_us = t1 - t0;
    *unmap_us = now_us() - t1;
    *runs = n;
    return 0;
}

/* Map the locked MDL h, unmap, unlock: map and unmap times, runs (= mmaps). */
static int map_cycle(struct map_engine *e, struct map_owner *o, uint64_t h, double *map_us, double *unmap_us,
                     unsigned *runs, char detail[200])
{
    const struct map_obj *m;
    unsigned rel;
    double t1 = now_us();
    struct map_params p = { .access_mode = MAP_MODE_KERNEL, .cache_type = 1, .priority = 32 };
    if (map_engine_map(e, o, h, &p, &m, detail, 200) < 0)
        return -1;
    double t2 = now_us();
    struct map_info mi;
    map_obj_info(m, &mi);
    *runs = mi.runs;
    if (map_engine_unmap(e, o, mi.handle, mi.address, h, detail, 200) < 0)
        return -1;
    double t3 = now_us();
    map_engine_unlock(e, o, h, &rel, detail, 200);
    *map_us = t2 - t1;
    *unmap_us = t3 - t2;
    return 0;
}

static int engine_once(struct map_engine *e, struct map_owner *o, const uint64_t *pfns, double *lock_us,
                       double *map_us, double *unmap_us, unsigned *runs)
{
    char detail[200];
    uint64_t h;
    double t0 = now_us();
    if (map_engine_lock(e, o, 0, MDL_BYTES, pfns, NPAGES, 1, &h, detail, sizeof(detail)) < 0)
        goto fail;
    *lock_us = now_us() - t0;
    if (map_cycle(e, o, h, map_us, unmap_us, runs, detail) == 0)
        return 0;
fail:
    fprintf(stderr, "mdl_bench: %s\n", detail);
    return -1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return v[n / 2];
}

static void stats3(double *v, int n, double *med, double *mn, double *mx)
{
    *med = median(v, n); /* sorts v */
    *mn = v[0];
    *mx = v[n - 1];
}

/* A contiguous 1 GiB MDL as one frame run: validation (lock) and map time,
 * and how many mmaps the map made (its runs). a holds 3 * iters doubles. */
static int gib_case(struct map_engine *e, struct map_owner *o, double *a, int iters)
{
    char detail[200];
    struct map_frames run = { .first_pfn = 4096, .count = GIB_PAGES };
    unsigned mmaps_min = UINT32_MAX, mmaps_max = 0;
    for (int it = 0; it < iters; it++) {
        uint64_t h;
        unsigned mmaps;
        double t0 = now_us();
        if (map_engine_lock_runs(e, o, 0, GIB_PAGES * PG, &run, 1, 1, &h, detail, sizeof(detail)) < 0)
            goto fail;
        a[it] = now_us() - t0;
        if (map_cycle(e, o, h, &a[iters + it], &a[2 * iters + it], &mmaps, detail) < 0)
            goto fail;
        mmaps_min = mmaps < mmaps_min ? mmaps : mmaps_min;
        mmaps_max = mmaps > mmaps_max ? mmaps : mmaps_max;
    }
    double v[3][3];
    for (int k = 0; k < 3; k++)
        stats3(a + k * iters, iters, &v[k][0], &v[k][1], &v[k][2]);
    printf("\n1 GiB contiguous MDL (%u pages) as one frame run, %d iterations, microseconds median/min/max\n",
           GIB_PAGES, iters);
    printf("  validation (eng.lock) %.1f/%.1f/%.1f  eng.map %.1f/%.1f/%.1f  eng.unmap %.1f/%.1f/%.1f  "
           "mmaps %u..%u\n", v[0][0], v[0][1], v[0][2], v[1][0], v[1][1], v[1][2], v[2][0], v[2][1], v[2][2],
           mmaps_min, mmaps_max);
    return 0;
fail:
    fprintf(stderr, "mdl_bench: 1 GiB: %s\n", detail);
    return -1;
}

/* map + unmap of a one-page MDL, SMALL_PAIRS pairs per sample: nanoseconds
 * per pair. What every small map costs on top of its two mmaps and munmap. */
#define SMALL_PAIRS 2000
#define SMALL_SAMPLES 21
static int small_case(struct map_engine *e, struct map_owner *o, const char *what)
{
    char detail[200];
    uint64_t h, pfn = 4096;
    if (map_engine_lock(e, o, 0, PG, &pfn, 1, 1, &h, detail, sizeof(detail)) < 0)
        goto fail;
    double v[SMALL_SAMPLES];
    struct map_params p = { .access_mode = MAP_MODE_KERNEL, .cache_type = 1, .priority = 32 };
    for (int s = 0; s < SMALL_SAMPLES; s++) {
        double t0 = now_us();
        for (int i = 0; i < SMALL_PAIRS; i++) {
            const struct map_obj *m;
            struct map_info mi;
            if (map_engine_map(e, o, h, &p, &m, detail, sizeof(detail)) < 0)
                goto fail;
            map_obj_info(m, &mi);
            if (map_engine_unmap(e, o, mi.handle, mi.address, h, detail, sizeof(detail)) < 0)
                goto fail;
        }
        v[s] = (now_us() - t0) * 1000.0 / SMALL_PAIRS;
    }
    unsigned rel;
    map_engine_unlock(e, o, h, &rel, detail, sizeof(detail));
    double md, mn, mx;
    stats3(v, SMALL_SAMPLES, &md, &mn, &mx);
    printf("  map+unmap, %s: %.0f/%.0f/%.0f\n", what, md, mn, mx);
    return 0;
fail:
    fprintf(stderr, "mdl_bench: 1 page: %s\n", detail);
    return -1;
}

/* A subscriber that takes every event and does nothing with it: what
 * publishing itself costs (two events per pair). */
static void count_event(void *ctx, const struct event *ev)
{
    ++*(unsigned long *)ctx;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 5;
    if (iters < 1 || iters > 1000)
        iters = 5;
    log_threshold = LOG_WARN;
    struct memtable mem;
    memtable_init(&mem);
    int fd = memfd_create("mdl_bench", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)RAM_BYTES) < 0 ||
        memtable_add(&mem, 0, RAM_BYTES, 0x7f0000000000ull, 0, dup(fd)) < 0) {
        perror("mdl_bench: guest RAM");
        return 1;
    }
    /* as mdlmap-hostd runs it: the process keeps shared memory out of core
     * dumps (coredump_filter), so no MADV_DONTDUMP per mapping */
    struct events *bus = events_new();
    struct map_limits lim = { .vm_page_quota = 1u << 20, .global_page_quota = 1u << 20, .max_vmas = 40000,
                              .dumps_exclude_shared = true, .events = bus };
    struct map_engine *e = map_engine_new(&lim);
    struct map_vm *vm = e ? map_engine_vm_add(e, &(struct map_vm_view){ .name = "bench", .cid = 3, .mem = &mem }) : NULL;
    struct map_owner o = { vm, 1 };
    uint64_t *pfns = malloc(NPAGES * sizeof(*pfns));
    double *a = malloc(sizeof(double) * (size_t)iters * 6);
    if (!bus || !e || !vm || !pfns || !a)
        return 1;
    printf("mdl_bench: 64 MiB MDL (%u pages), %d iterations (runs), median microseconds, then min/max\n", NPAGES,
           iters);
    printf("%-12s %6s | %10s %10s %10s | %10s %10s | %s\n", "layout", "runs", "eng.lock", "eng.map", "eng.unmap",
           "floor.map", "floor.unm", "map/floor");
    for (int layout = 0; layout < 2; layout++) {
        for (uint32_t i = 0; i < NPAGES; i++)
            pfns[i] = layout == 0 ? 1000 + i : 2 * (uint64_t)i + 1; /* every other page: no two adjacent */
        unsigned runs = 0, fruns = 0;
        for (int it = 0; it < iters; it++) {
            if (engine_once(e, &o, pfns, &a[it], &a[iters + it], &a[2 * iters + it], &runs) < 0 ||
                floor_once(fd, pfns, &a[3 * iters + it], &a[4 * iters + it], &fruns) < 0) {
                perror("mdl_bench");
                return 1;
            }
        }
        double lk = median(a, iters), mp = median(a + iters, iters), um = median(a + 2 * iters, iters);
        double fm = median(a + 3 * iters, iters), fu = median(a + 4 * iters, iters);
        printf("%-12s %6u | %10.1f %10.1f %10.1f | %10.1f %10.1f | %.2fx\n", layout ? "scattered" : "contiguous",
               runs, lk, mp, um, fm, fu, fm > 0 ? mp / fm : 0.0);
        /* the spread of each column, so a reader sees what the median hides */
        const char *col[5] = { "eng.lock", "eng.map", "eng.unmap", "floor.map", "floor.unm" };
        printf("  min/max:");
        for (int c = 0; c < 5; c++) {
            double md, mn, mx;
            stats3(a + c * iters, iters, &md, &mn, &mx);
            printf(" %s %.1f/%.1f%s", col[c], mn, mx, c < 4 ? "," : "\n");
        }
        if (runs != fruns)
            printf("  (engine made %u runs, floor %u)\n", runs, fruns);
    }
    printf("eng.lock = MDL validation (every frame against the memtable); eng.map = layout + reserve + mmaps\n");
    if (gib_case(e, &o, a, iters) < 0)
        return 1;
    printf("\n1-page MDL, map + unmap pairs (%d per run, %d runs), nanoseconds per pair median/min/max\n",
           SMALL_PAIRS, SMALL_SAMPLES);
    unsigned long seen = 0;
    if (small_case(e, &o, "nobody subscribed to events") < 0 || events_subscribe(bus, 0, count_event, &seen) < 0 ||
        small_case(e, &o, "one subscriber of every event") < 0)
        return 1;
    map_engine_free(e);
    events_free(bus);
    memtable_clear(&mem);
    close(fd);
    free(pfns);
    free(a);
    return 0;
}
