/* A thousand VMs on one hostd (issue 8 item 5). Every VM gets a harness
 * "QEMU" (vhost-user handshake, rings), one RPC connection that stays open,
 * and two locked and mapped one-page MDLs. hostd's memory and fds are read
 * from /proc at these points: with one VM configured (a separate run),
 * with all of them configured before any connects, with every VM
 * connected, right after each opened its connection, once the connections
 * went idle, and with the mappings; the per-VM and per-mapping costs are printed as "#" lines
 * (docs/operations.md, benchmarks). Checked are only bounded properties:
 * every VM came up, every connection worked, hostd lived, its fds went back
 * to the start after every VM left, and its RSS per VM stayed under a
 * generous bound. No timing is checked.
 *
 * MDLMAP_SCALE_VMS overrides the VM count (by hand; CI runs 1000, also
 * under ASan, where the memory figures mean little: its allocator and
 * quarantine dominate). */
#include <sys/resource.h>
#include <unistd.h>

#include "rpc_session.h"

#define DEFAULT_VMS 1000u
#define MAPS_PER_VM 2u
#define FIRST_CID 3u
#define BUF_PFN 0x800u             /* 8 MiB into the low region of the harness RAM */
#define RSS_PER_VM_BOUND_KB 256    /* generous: the measured idle cost is a few KiB */
#define FDS_PER_HARNESS_VM 7u      /* vhost-user socket, memfd, 2 x (kick, call), spare */
#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define TRIM_WAIT_MS 11000         /* > 2 x VSOCK_TRIM_MS (hostd/vsock/vsock_internal.h) */

struct mem_figures {
    long rss, anon, shmem;  /* KiB: VmRSS, RssAnon, RssShmem */
    int fds;
};

static struct mem_figures figures(pid_t pid)
{
    struct mem_figures m = {
        .rss = proc_status_kb(pid, "VmRSS"),
        .anon = proc_status_kb(pid, "RssAnon"),
        .shmem = proc_status_kb(pid, "RssShmem"),
        .fds = proc_count_fds(pid),
    };
    return m;
}

static void print_figures(const char *when, const struct mem_figures *m)
{
    tap_diag("hostd %-28s RSS %6ld KiB (anon %6ld, guest RAM touched %6ld), %5d fds", when, m->rss, m->anon,
             m->shmem, m->fds);
}

/* Per-unit difference in KiB, one decimal (printed as integer tenths). */
static void print_cost(const char *what, long before_kb, long after_kb, unsigned n)
{
    long tenths = n ? ((after_kb - before_kb) * 10 + (long)n / 2) / (long)n : 0;
    tap_diag("%s: %ld.%ld KiB", what, tenths / 10, labs(tenths % 10));
}

/* The harness itself needs about FDS_PER_HARNESS_VM fds per VM: take the
 * hard limit and fit the VM count to it (said in a "#" line). */
static unsigned fit_fd_limit(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return want;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    unsigned long long cur = rl.rlim_cur == RLIM_INFINITY ? ~0ull : (unsigned long long)rl.rlim_cur;
    unsigned long long fit = cur > 64 ? (cur - 64) / FDS_PER_HARNESS_VM : 0;
    if (fit < want) {
        tap_diag("fd limit %llu fits %llu VMs only: running %llu", cur, fit, fit);
        return (unsigned)fit;
    }
    return want;
}

static unsigned vm_count(void)
{
    const char *e = getenv("MDLMAP_SCALE_VMS");
    long n = e && *e ? strtol(e, NULL, 10) : DEFAULT_VMS;
    if (n < 1 || n > HD_MAX_VMS)
        n = DEFAULT_VMS;
    return (unsigned)n;
}

struct vm_state {
    struct vdev *d;
    struct rpc_session s;
    bool open;
    uint64_t mdl[MAPS_PER_VM];
    struct rpc_mapping m[MAPS_PER_VM];
    unsigned nmapped;
};

static bool lock_and_map(struct vm_state *v, unsigned i)
{
    for (unsigned k = 0; k < MAPS_PER_VM; k++) {
        uint64_t pfn = BUF_PFN + k;
        int32_t st = rpc_lock(&v->s, 0, 4096, &pfn, 1, 1, &v->mdl[k]);
        Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
        rq.mdl_handle = v->mdl[k];
        rq.cache_type = 1;
        rq.priority = 16;
        if (st == ST_OK)
            st = rpc_map(&v->s, &rq, &v->m[k]);
        if (st != ST_OK) {
            tap_diag("VM %u MDL %u lock/map: %s (%s)", i, k, rpc_status_name(st), v->s.detail);
            return false;
        }
        v->nmapped++;
    }
    return true;
}

static bool unmap_and_unlock(struct vm_state *v, unsigned i)
{
    bool ok = true;
    for (unsigned k = v->nmapped; k-- > 0;) {
        int32_t st = rpc_unmap(&v->s, v->m[k].map, v->m[k].address, v->mdl[k]);
        if (st == ST_OK)
            st = rpc_unlock(&v->s, v->mdl[k], NULL);
        if (st != ST_OK) {
            tap_diag("VM %u MDL %u unmap/unlock: %s (%s)", i, k, rpc_status_name(st), v->s.detail);
            ok = false;
        }
    }
    v->nmapped = 0;
    return ok;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    unsigned n = fit_fd_limit(vm_count());
    if (n == 0) {
        tap_check(false, "the fd limit leaves room for at least one VM");
        return tap_done();
    }
    long self_before = proc_rss_kb(getpid());
    long long t0 = now_ms();

    uint64_t *cids = calloc(n, sizeof(*cids));
    struct vm_state *vs = calloc(n, sizeof(*vs));
    if (!cids || !vs) {
        tap_check(false, "harness memory for %u VMs", n);
        return tap_done();
    }
    for (unsigned i = 0; i < n; i++)
        cids[i] = FIRST_CID + i;
    /* hostd with one VM: the difference to n VMs is what an unconnected VM costs */
    struct rig r;
    rig_start(&r, bin, "mdlmap-scale", 1, cids);
    struct mem_figures one = figures(r.p.pid);
    rig_stop(&r);
    rig_start(&r, bin, "mdlmap-scale", n, cids);
    pid_t pid = r.p.pid;
    long long t_start = now_ms();
    struct mem_figures base = figures(pid);
    print_figures("with no VM connected:", &base);

    /* every VM's QEMU: handshake, memory table, rings */
    unsigned up = 0;
    for (unsigned i = 0; i < n; i++) {
        vs[i].d = vdev_alloc();
        if (vdev_up(vs[i].d, r.p.vm[i].sock, r.p.vm[i].cid, NULL) != 0) {
            tap_diag("VM %u bring-up: %s", i, vs[i].d->last_err);
            free(vs[i].d);
            vs[i].d = NULL;
            continue;
        }
        up++;
    }
    tap_check(up == n, "all %u VMs came up (vhost-user handshake and rings): %u", n, up);
    long long t_up = now_ms();
    struct mem_figures conn = figures(pid);
    print_figures("with every VM connected:", &conn);

    /* one RPC connection per VM, kept open */
    unsigned opened = 0, hello = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!vs[i].d || !rpc_open(&vs[i].s, vs[i].d))
            continue;
        vs[i].open = true;
        opened++;
        struct rpc_hello_info hi;
        if (rpc_hello(&vs[i].s, 1, 1, "scale", &hi) == ST_OK && hi.guest_cid == r.p.vm[i].cid)
            hello++;
    }
    tap_check(opened == n, "every VM opened an RPC connection: %u of %u", opened, n);
    tap_check(hello == n, "every connection answers Hello with its own CID: %u of %u", hello, n);
    long long t_open = now_ms();
    struct mem_figures busy = figures(pid);
    print_figures("right after the Hellos:", &busy);
    /* A connection's vsock rings are freed once they stayed empty for a trim
     * period (VSOCK_TRIM_MS, 5 s; two sweeps at most): idle is after that. */
    usleep(TRIM_WAIT_MS * 1000);
    struct mem_figures idle = figures(pid);
    print_figures("with an idle connection per VM:", &idle);

    /* two locked and mapped MDLs per VM */
    unsigned mapped = 0;
    for (unsigned i = 0; i < n; i++)
        if (vs[i].open && lock_and_map(&vs[i], i))
            mapped++;
    tap_check(mapped == n, "every VM locked and mapped %u MDLs: %u of %u VMs", MAPS_PER_VM, mapped, n);
    long long t_map = now_ms();
    usleep(TRIM_WAIT_MS * 1000);   /* again: compare idle with idle */
    struct mem_figures maps = figures(pid);
    print_figures("with the mappings (idle):", &maps);
    long self_peak = proc_rss_kb(getpid());

    /* anon: hostd's own memory; RSS adds the guest RAM pages hostd touched
     * (rings, rx buffers it wrote: shared with the guest, not extra memory) */
    tap_diag("VMs: %u, mappings: %u", n, MAPS_PER_VM * mapped);
    if (n > 1)
        print_cost("per VM, configured, no QEMU (anon)", one.anon, base.anon, n - 1);
    print_cost("per VM, QEMU connected (anon)", one.anon, conn.anon, n);
    print_cost("idle per VM: QEMU connected, one idle connection (anon)", one.anon, idle.anon, n);
    print_cost("idle per VM, the same in RSS (with guest RAM touched)", one.rss, idle.rss, n);
    print_cost("  of which the idle connection (anon)", conn.anon, idle.anon, n);
    print_cost("  a connection right after use (anon)", conn.anon, busy.anon, n);
    print_cost("per mapping (anon)", idle.anon, maps.anon, MAPS_PER_VM * mapped);
    print_cost("per mapping (RSS)", idle.rss, maps.rss, MAPS_PER_VM * mapped);
    tap_diag("hostd fds per connected VM: %.1f (%d with no VM, %d with %u connected)",
             n ? (double)(conn.fds - base.fds) / n : 0.0, base.fds, conn.fds, n);
    print_cost("harness RAM per VM (RSS)", self_before, self_peak, n);
    tap_diag("time: hostd start %lld ms, bring-up %lld ms, connections %lld ms, mappings %lld ms (+%d ms idle)",
             t_start - t0, t_up - t_start, t_open - t_up, t_map - t_open - TRIM_WAIT_MS, 2 * TRIM_WAIT_MS);

    long bound = RSS_PER_VM_BOUND_KB + rss_slack_kb() / (long)n;
    long per_vm = (maps.rss - base.rss) / (long)n;
    tap_check(per_vm < bound, "hostd RSS per VM with connection and mappings %ld KiB < %ld KiB", per_vm, bound);
    tap_check(hd_alive(&r.p), "hostd alive with %u VMs connected", n);

    /* everything goes: mappings, connections, QEMUs */
    unsigned released = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!vs[i].open)
            continue;
        released += unmap_and_unlock(&vs[i], i);
        rpc_close(&vs[i].s);
    }
    tap_check(released == opened, "every VM unmapped and unlocked: %u of %u", released, opened);
    for (unsigned i = 0; i < n; i++)
        if (vs[i].d) {
            vdev_down(vs[i].d);
            free(vs[i].d);
        }
    /* hostd notices each hang-up on its own schedule: wait for the count */
    int fds = proc_count_fds(pid);
    for (long long deadline = now_ms() + 10000; fds != base.fds && now_ms() < deadline;) {
        usleep(20000);
        fds = proc_count_fds(pid);
    }
    tap_check(fds == base.fds, "hostd fds back to the start after every VM left: %d (start %d)", fds, base.fds);
    tap_check(hd_alive(&r.p), "hostd alive after every VM left");
    free(vs);
    free(cids);
    rig_stop(&r);
    return tap_done();
}
