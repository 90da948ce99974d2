/* Whole-guest reads through hostd's host API: a real mdlmap-hostd process
 * serving one harness VM (introspect=on) with 256 MiB of guest RAM (two
 * regions: GPA 0 and 4 GiB).
 *
 *   introspect_bench PATH-TO-mdlmap-hostd [R runs] [T translate requests per run]
 *
 * Each run reads all 256 MiB four ways into one client buffer:
 *   chunked  PhysRead requests of 512 KiB (one range each), 8 in flight;
 *            hostd's own CPU time (user+system, /proc/PID/stat) per GiB read
 *   bulk     PhysMap (read-only region fds), mmap with MAP_POPULATE, memcpy
 *            from the mappings, munmap: what a one-shot dump costs
 *   kept     the same with the mappings of the first run kept: later runs
 *            only copy (a tool that reads the same VM repeatedly)
 *   memcpy   a plain memcpy of the same bytes from the harness's own mapping
 *            of guest RAM (the floor)
 * then T Translate requests of 4096 guest-virtual addresses each (4-level
 * page tables in guest RAM, 4 KiB pages) for translations per second.
 * The chunked client reads every reply into one reused buffer and decodes
 * it in place (frame_view_phys_read): each byte is copied once, into the
 * destination. Other replies go through protobuf-c; freed buffers stay in
 * the heap (mallopt). Prints median/min/max over the R runs. Figures, never a pass/fail verdict
 * (exit 1 only when the harness or a request fails). */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "bench_stats.h"
#include "harness.h"
#include "hostile.h"
#include "usock.h"

#define RAM (256ull << 20)
#define CHUNK (512u * 1024u)
#define WINDOW 8u
#define NVA 4096u
#define TABLES (64ull << 20) /* page tables here (low region) */
#define VA_BASE 0x00007f0000000000ull

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_env(int fd, mdl_envelope *e, uint64_t id)
{
    e->version = MDLMAP_PROTO_VERSION;
    e->request_id = id;
    return frame_write_fd(fd, e);
}

/* The 256 MiB as 512 KiB PhysReads, WINDOW in flight; every byte copied into dst. */
static int chunked(int fd, const struct guest_mem *gm, uint8_t *dst, uint8_t **rbuf, size_t *rcap)
{
    unsigned per_region = (unsigned)(gm->r[0].size / CHUNK), total = per_region * gm->n;
    unsigned sent = 0, got = 0;
    while (got < total) {
        while (sent < total && sent - got < WINDOW) {
            mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
            Mdlmap__V1__PhysReadRequest rq = MDLMAP__V1__PHYS_READ_REQUEST__INIT;
            Mdlmap__V1__PhysRange r = MDLMAP__V1__PHYS_RANGE__INIT, *rp = &r;
            r.gpa = gm->r[sent / per_region].gpa + (uint64_t)(sent % per_region) * CHUNK;
            r.length = CHUNK;
            rq.vm_name = "vm0";
            rq.ranges = &rp;
            rq.n_ranges = 1;
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ;
            e.phys_read = &rq;
            if (send_env(fd, &e, sent + 1) < 0) {
                fprintf(stderr, "PhysRead %u: send failed\n", sent);
                return -EIO;
            }
            sent++;
        }
        /* the reply read into one reused buffer and decoded in place: its
         * data is copied once, into dst (frame_view_phys_read) */
        size_t len = 0;
        int rr = frame_read_fd_buf(fd, rbuf, rcap, &len);
        if (rr < 0) {
            fprintf(stderr, "PhysRead %u: reading the reply: %s\n", got, strerror(-rr));
            return -EIO;
        }
        struct frame_phys_read_view v;
        struct frame_range_view rv;
        rr = frame_view_phys_read(*rbuf, len, &v, &rv, 1);
        bool ok = rr == 0 && v.status == 0 && v.request_id == got + 1 && v.n_ranges == 1 && rv.status == 0 &&
                  rv.len == CHUNK;
        if (!ok) {
            fprintf(stderr, "PhysRead %u: %s (status %s) %.*s\n", got, rr ? strerror(-rr) : "unexpected reply",
                    ntstatus_name(v.status), (int)v.detail_len, v.detail ? v.detail : "");
            return -EIO;
        }
        memcpy(dst + (uint64_t)got * CHUNK, rv.data, CHUNK);
        got++;
    }
    return 0;
}

/* The client's mappings of guest RAM, kept across runs when asked (a dump
 * tool that reads the same VM again maps once). */
struct bulk_maps {
    unsigned n;
    void *m[8];
    size_t len[8];
};

static void bulk_unmap(struct bulk_maps *bm)
{
    while (bm->n) {
        bm->n--;
        munmap(bm->m[bm->n], bm->len[bm->n]);
    }
}

/* PhysMap, map each region (MAP_POPULATE: one call faults in every page
 * table entry instead of 65536 faults during the copy), copy it into dst.
 * keep: the mappings stay in *bm and later calls only copy. */
static int bulk(int fd, uint8_t *dst, struct bulk_maps *bm, bool keep)
{
    if (bm->n) {
        uint64_t off = 0;
        for (unsigned i = 0; i < bm->n; i++) {
            memcpy(dst + off, bm->m[i], bm->len[i]);
            off += bm->len[i];
        }
        return 0;
    }
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__PhysMapRequest rq = MDLMAP__V1__PHYS_MAP_REQUEST__INIT;
    rq.vm_name = "vm0";
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP;
    e.phys_map = &rq;
    struct usock_fds fds = { .n = 0 };
    if (send_env(fd, &e, 1) < 0 || frame_read_fd_fds(fd, &r, &fds) < 0) {
        fprintf(stderr, "PhysMap: no reply\n");
        return -EIO;
    }
    int rc = r->status == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP_REPLY ? 0 : -EIO;
    if (rc < 0)
        fprintf(stderr, "PhysMap: %s %s\n", ntstatus_name(r->status), r->detail ? r->detail : "");
    uint64_t off = 0;
    for (size_t i = 0; rc == 0 && i < r->phys_map_reply->n_regions; i++) {
        const Mdlmap__V1__RamRegion *rr = r->phys_map_reply->regions[i];
        if (rr->fd_index >= fds.n || off + rr->size > RAM || bm->n == 8) {
            rc = -EIO;
            break;
        }
        void *m = mmap(NULL, rr->size, PROT_READ, MAP_SHARED | MAP_POPULATE, fds.fd[rr->fd_index],
                       (off_t)rr->fd_offset);
        if (m == MAP_FAILED) {
            rc = -errno;
            break;
        }
        memcpy(dst + off, m, rr->size);
        off += rr->size;
        bm->m[bm->n] = m;
        bm->len[bm->n++] = rr->size;
    }
    if (rc == 0 && off != RAM)
        rc = -EIO;
    if (rc < 0)
        fprintf(stderr, "PhysMap: mapping the regions: %s\n", strerror(-rc));
    if (rc < 0 || !keep)
        bulk_unmap(bm);
    frame_envelope_free(r);
    usock_fds_close(&fds);
    return rc;
}

static uint64_t *pte_at(const struct guest_mem *gm, uint64_t table, unsigned idx)
{
    return (uint64_t *)gm_ptr(gm, table + idx * 8ull, 8);
}

/* PML4 -> PDPT -> PD -> NVA/512 page tables: VA_BASE + i * 4 KiB -> frame 1 MiB + i * 4 KiB. */
static uint64_t build_tables(const struct guest_mem *gm)
{
    uint64_t pml4 = TABLES, pdpt = TABLES + 4096, pd = TABLES + 8192, pt = TABLES + 12288;
    memset(gm_ptr(gm, TABLES, 4096 * (3 + NVA / 512)), 0, 4096 * (3 + NVA / 512));
    *pte_at(gm, pml4, (VA_BASE >> 39) & 511) = pdpt | 7;
    *pte_at(gm, pdpt, (VA_BASE >> 30) & 511) = pd | 7;
    for (unsigned t = 0; t < NVA / 512; t++) {
        *pte_at(gm, pd, ((VA_BASE >> 21) & 511) + t) = (pt + t * 4096ull) | 7;
        for (unsigned i = 0; i < 512; i++)
            *pte_at(gm, pt + t * 4096ull, i) = ((1ull << 20) + (t * 512ull + i) * 4096) | 7;
    }
    return pml4;
}

static int translate(int fd, uint64_t cr3, const uint64_t *va, unsigned reqs)
{
    for (unsigned k = 0; k < reqs; k++) {
        mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
        Mdlmap__V1__TranslateRequest rq = MDLMAP__V1__TRANSLATE_REQUEST__INIT;
        rq.vm_name = "vm0";
        rq.cr3 = cr3;
        rq.vaddrs = (uint64_t *)va;
        rq.n_vaddrs = NVA;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_TRANSLATE;
        e.translate = &rq;
        if (send_env(fd, &e, k + 1) < 0 || frame_read_fd(fd, &r) < 0)
            return -EIO;
        bool ok = r->status == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_TRANSLATE_REPLY &&
                  r->translate_reply->n_results == NVA && r->translate_reply->results[NVA - 1]->status == 0 &&
                  r->translate_reply->results[NVA - 1]->gpa == (1ull << 20) + (NVA - 1) * 4096ull;
        if (!ok)
            fprintf(stderr, "Translate %u: %s %s\n", k, ntstatus_name(r->status), r->detail ? r->detail : "");
        frame_envelope_free(r);
        if (!ok)
            return -EIO;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    /* a throughput client reuses its buffers: keep freed 1 MiB frames in
     * the heap instead of a fresh mmap (and page faults) per reply */
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    unsigned runs = argc > 2 ? (unsigned)atoi(argv[2]) : 5, treqs = argc > 3 ? (unsigned)atoi(argv[3]) : 50;
    if (runs < 1 || runs > 100 || treqs < 1)
        return 2;
    char dir[] = "/tmp/mdlmap-ibench.XXXXXX", api[160];
    if (!mkdtemp(dir))
        return 1;
    snprintf(api, sizeof(api), "%s/api.sock", dir);
    const char *extra[] = { "--api", api, NULL };
    const char *vm_opts[] = { "introspect=on" };
    uint64_t cid = 3;
    struct hd_proc p;
    if (hd_start_opts(&p, bin, 1, &cid, vm_opts, extra) < 0) {
        fprintf(stderr, "hostd did not start\n");
        rmdir(dir);
        return 1;
    }
    struct vdev *d = vdev_alloc();
    struct guest_opts o;
    guest_default_opts(&o);
    o.mem_size = RAM;
    int rc = vdev_up(d, p.vm[0].sock, cid, &o);
    int fd = rc == 0 ? usock_connect(api, 0) : -1;
    uint8_t *dst = malloc(RAM);
    uint64_t *va = malloc(NVA * sizeof(*va));
    if (rc < 0 || fd < 0 || !dst || !va) {
        fprintf(stderr, "bring-up: %s\n", rc < 0 ? d->last_err : "host API");
        hd_kill(&p);
        rmdir(dir);
        return 1;
    }
    const struct guest_mem *gm = &d->g.gm;
    /* guest RAM and the client buffer are touched once: no first-touch faults are measured */
    for (uint64_t i = 0; i < RAM; i += 4096)
        gm->base[i] = (uint8_t)(i >> 12);
    memset(dst, 1, RAM);
    uint64_t cr3 = build_tables(gm);
    for (unsigned i = 0; i < NVA; i++)
        va[i] = VA_BASE + i * 4096ull;

    enum { NV = 6 };
    double *v[NV];
    struct bulk_maps kept = { .n = 0 }, fresh = { .n = 0 };
    long tick = sysconf(_SC_CLK_TCK);
    uint8_t *rbuf = NULL;
    size_t rcap = 0;
    for (unsigned k = 0; k < NV; k++)
        v[k] = calloc(runs, sizeof(double));
    printf("hostd %s: one VM, %llu MiB of guest RAM in %u regions; %u runs\n", bin,
           (unsigned long long)(RAM >> 20), gm->n, runs);
    printf("chunked: PhysRead of %u KiB, %u in flight; bulk: PhysMap + mmap + memcpy; translate: %u requests "
           "of %u addresses (4 KiB pages, 4-level)\n", CHUNK / 1024, WINDOW, treqs, NVA);
    int failed = 0;
    for (unsigned r = 0; r < runs && !failed; r++) {
        long c0 = proc_cpu_ticks(p.pid);
        double t0 = now_s();
        failed |= chunked(fd, gm, dst, &rbuf, &rcap) < 0;
        double t1 = now_s();
        long c1 = proc_cpu_ticks(p.pid);
        if (!failed && memcmp(dst + RAM - 4096, gm_ptr(gm, gm->r[1].gpa + gm->r[1].size - 4096, 4096), 4096)) {
            fprintf(stderr, "chunked: the last page read differs from guest RAM\n");
            failed = 1;
        }
        memset(dst, 1, 4096);
        failed |= bulk(fd, dst, &fresh, false) < 0;
        double t2 = now_s();
        if (!failed && dst[0] != gm->base[0]) {
            fprintf(stderr, "bulk: the first byte differs from guest RAM\n");
            failed = 1;
        }
        memset(dst, 1, 4096);
        double t5 = now_s();
        failed |= bulk(fd, dst, &kept, true) < 0;
        double t6 = now_s();
        if (!failed && dst[0] != gm->base[0]) {
            fprintf(stderr, "bulk (kept mapping): the first byte differs from guest RAM\n");
            failed = 1;
        }
        double t7 = now_s();
        memcpy(dst, gm->base, RAM);
        double t3 = now_s();
        failed |= translate(fd, cr3, va, treqs) < 0;
        double t4 = now_s();
        double mib = (double)RAM / (1 << 20);
        v[0][r] = mib / (t1 - t0);
        v[1][r] = mib / (t2 - t1);
        v[2][r] = mib / (t3 - t7);
        v[3][r] = (double)treqs * NVA / (t4 - t3) / 1e6;
        v[4][r] = mib / (t6 - t5);
        /* hostd's user+system CPU for the chunked reads, ms per GiB (clock-tick resolution) */
        v[5][r] = c0 < 0 || c1 < 0 ? -1 : (double)(c1 - c0) * 1000.0 / (double)tick * 1024.0 / mib;
    }
    if (failed) {
        fprintf(stderr, "a request failed or the data differed\n");
    } else {
        bench_report("chunked PhysRead (512 KiB)", "MiB/s", v[0], runs);
        bench_report("  hostd CPU for chunked reads", "ms/GiB", v[5], runs);
        bench_report("bulk PhysMap + memcpy", "MiB/s", v[1], runs);
        bench_report("bulk, mapping kept", "MiB/s", v[4], runs);
        bench_report("plain memcpy (floor)", "MiB/s", v[2], runs);
        bench_report("Translate", "M translations/s", v[3], runs);
    }
    for (unsigned k = 0; k < NV; k++)
        free(v[k]);
    bulk_unmap(&kept);
    free(rbuf);
    close(fd);
    free(dst);
    free(va);
    vdev_down(d);
    free(d);
    int st = hd_stop(&p);
    rmdir(dir);
    unlink(api);
    return failed || st ? 1 : 0;
}
