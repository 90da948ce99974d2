/* Grant copy inside hostd next to a plain memcpy of the same size: a real
 * mdlmap-hostd (--sharing on) driven by the vhost-user harness with two
 * guests of 512 MiB (sparse memfd RAM). A locks SIZE bytes and grants them
 * read-only to B; B copies them into its own locked buffer in one GrantCopy
 * op, R times. The time is B's request to its reply (the RPC round trip
 * included, a few microseconds against milliseconds of copying); memcpy is
 * this process copying between two pre-faulted buffers of the same size.
 * Prints MiB/s median/min/max over the runs. Figures, never a verdict
 * (exit 1 only when the harness itself fails).
 *
 *   grant_bench PATH-TO-mdlmap-hostd [SIZE-MiB (64)] [R runs (9)] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "rpc_session.h"

#define BUF_GPA (32ull << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *mibs, unsigned n)
{
    qsort(mibs, n, sizeof(*mibs), cmp);
    printf("%-34s median %8.0f  min %8.0f  max %8.0f MiB/s  (runs %u)\n", what, mibs[n / 2], mibs[0], mibs[n - 1], n);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    unsigned mib = argc > 2 ? (unsigned)atoi(argv[2]) : 64, runs = argc > 3 ? (unsigned)atoi(argv[3]) : 9;
    if (!mib || mib > 200 || !runs || runs > 1000) {
        fprintf(stderr, "usage: %s HOSTD [SIZE-MiB 1..200] [RUNS]\n", argv[0]);
        return 2;
    }
    uint64_t len = (uint64_t)mib << 20;
    struct rig rig;
    uint64_t cids[2] = { 3, 4 };
    const char *more[] = { "--sharing", "on", NULL };
    rig_start_with(&rig, bin, "grant-bench", 2, cids, more);
    struct guest_opts o;
    guest_default_opts(&o);
    o.mem_size = 512ull << 20;
    struct vdev *a = rig_vm_up(&rig, 0, &o, "A"), *b = rig_vm_up(&rig, 1, &o, "B");
    struct rpc_session ra, rb;
    int rc = 1;
    if (!a || !b || !rpc_open(&ra, a) || !rpc_open(&rb, b) || rpc_hello(&ra, 1, 1, "bench", NULL) ||
        rpc_hello(&rb, 1, 1, "bench", NULL)) {
        fprintf(stderr, "grant_bench: harness setup failed\n");
        rig_abort(&rig);
        return 1;
    }
    rb.timeout_ms = 60000;
    memset(gm_ptr(&a->g.gm, BUF_GPA, len), 0x5a, len);
    memset(gm_ptr(&b->g.gm, BUF_GPA, len), 0, len);
    uint64_t ma = 0, mb = 0, ref = 0;
    if (rpc_lock_run(&ra, 0, (uint32_t)len, BUF_GPA / 4096, (uint32_t)(len / 4096), 0, &ma) ||
        rpc_lock_run(&rb, 0, (uint32_t)len, BUF_GPA / 4096, (uint32_t)(len / 4096), 1, &mb) ||
        rpc_grant(&ra, ma, 4, 0, &ref)) {
        fprintf(stderr, "grant_bench: lock/grant failed: %s %s\n", ra.detail, rb.detail);
        goto out;
    }
    double *gc = calloc(runs, sizeof(double)), *mc = calloc(runs, sizeof(double));
    struct rpc_copy op = { 3, ref, 0, 0, mb, 0, len };
    for (unsigned i = 0; i < runs; i++) {
        int32_t st = 0;
        uint64_t copied = 0;
        double t0 = now();
        int32_t env = rpc_grant_copy(&rb, &op, 1, &st, &copied);
        double dt = now() - t0;
        if (env || st || copied != len) {
            fprintf(stderr, "grant_bench: copy %u: %s / %s\n", i, rpc_status_name(env), rpc_status_name(st));
            goto out2;
        }
        gc[i] = (double)mib / dt;
    }
    uint8_t *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    uint8_t *d = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (s == MAP_FAILED || d == MAP_FAILED)
        goto out2;
    memset(s, 0x5a, len);
    memset(d, 0, len);
    for (unsigned i = 0; i < runs; i++) {
        double t0 = now();
        memcpy(d, s, len);
        __asm__ volatile("" ::"r"(d) : "memory");
        mc[i] = (double)mib / (now() - t0);
    }
    printf("%u MiB, guest A -> guest B (harness guests, memfd RAM):\n", mib);
    report("grant copy (one op, through hostd)", gc, runs);
    report("memcpy in one process", mc, runs);
    printf("grant copy / memcpy (medians): %.2f\n", gc[runs / 2] / mc[runs / 2]);
    munmap(s, len);
    munmap(d, len);
    rc = 0;
out2:
    free(gc);
    free(mc);
out:
    rpc_close(&ra);
    rpc_close(&rb);
    vdev_down(a);
    vdev_down(b);
    free(a);
    free(b);
    rig_stop(&rig);
    return rc;
}
