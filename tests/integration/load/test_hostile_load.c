/* Load under attack (bounded in count and time): 8 VMs on one hostd. VM 0
 * runs every guest and front-end attack the hardening work closed, in a loop;
 * VMs 1..7 echo and map/unmap meanwhile. At the end the well-behaved VMs saw
 * no failure, hostd's fds, VMAs and RSS are back to the baseline, and its log
 * stayed under a stated size. The attacks:
 *   - a front-end registering memory that cannot be sealed, and a pipe as a
 *     kick fd (each once per round, on a fresh connection);
 *   - lock requests from an unprivileged guest port;
 *   - MDLs repeating one frame (a VMA per repeat) to eat the VMA budget;
 *   - locked MDLs leaked by dropping connections (a leak record each);
 *   - a map/unmap flood (a log line each, once);
 *   - on the host side, host API clients stalled in half a frame, and a
 *     UserMode consumer that never reads while VM 0 maps into it. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostile.h"
#include "rpc_session.h"

#define NVM 8
#define ROUNDS 4
#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define ST_DENIED MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED
#define BUF_PFN 0x800u
#define LOG_BOUND (64 * 1024)

static struct rig R;
static struct vdev *V[NVM];
static unsigned good_fail;
static unsigned denied, vma_refused, attack_rounds, user_expired; /* proof the attacks ran */

static int stalled[16];
static int stall_consumer = -1;

/* Host API attacks: clients stalled in half a frame (hostd drops them after
 * the frame timeout), and a consumer that registers and never reads. */
static void host_attacks(void)
{
    for (unsigned i = 0; i < 16; i++) {
        if (stalled[i] >= 0)
            close(stalled[i]);
        stalled[i] = api_connect(R.api);
        uint8_t half[3] = { 0x40, 0, 0 }; /* a length prefix cut short */
        if (stalled[i] >= 0 && write(stalled[i], half, sizeof(half)) < 0) {
            close(stalled[i]);
            stalled[i] = -1;
        }
    }
    if (stall_consumer < 0)
        stall_consumer = api_register_consumer(R.api, "stall");
}

static long log_size(void)
{
    struct stat st;
    return stat(R.p.log, &st) == 0 ? (long)st.st_size : -1;
}

static Mdlmap__V1__MapRequest map_rq(uint64_t mdl)
{
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.mdl_handle = mdl;
    rq.cache_type = 1;
    rq.priority = 16;
    return rq;
}

/* One well-behaved VM's turn: an echo and a full lock/map/unmap/unlock. */
static void good_turn(unsigned i)
{
    char why[256] = "";
    if (vdev_echo_check(V[i], 8192, 4000, why, sizeof(why)) != 0) {
        good_fail++;
        tap_diag("VM %u echo: %s", i, why);
    }
    struct rpc_session s;
    if (!rpc_open(&s, V[i])) {
        good_fail++;
        return;
    }
    uint64_t pfn = BUF_PFN + i, mdl = 0;
    int32_t st = rpc_lock(&s, 0, 4096, &pfn, 1, 1, &mdl);
    Mdlmap__V1__MapRequest rq = map_rq(mdl);
    struct rpc_mapping m;
    if (st == ST_OK)
        st = rpc_map(&s, &rq, &m);
    if (st == ST_OK)
        st = rpc_unmap(&s, m.map, m.address, mdl);
    if (st == ST_OK)
        st = rpc_unlock(&s, mdl, NULL);
    if (st != ST_OK) {
        good_fail++;
        tap_diag("VM %u lock/map/unmap/unlock: %s (%s)", i, rpc_status_name(st), s.detail);
    }
    rpc_close(&s);
}

/* VM 0's front-end attacks: QEMU goes away, a hostile one comes, goes, and
 * the regular one comes back. */
static void frontend_attacks(unsigned round)
{
    vdev_down(V[0]);
    struct guest g;
    char what[32];
    snprintf(what, sizeof(what), "round %u front-end", round);
    if (hostile_front_end(&g, R.p.vm[0].sock, R.p.vm[0].cid, what)) {
        int fd = memfd_create("unsealable", MFD_CLOEXEC);
        if (fd >= 0 && ftruncate(fd, 16u << 20) == 0 && hostile_mem_table_one(&g, fd) != -EREMOTEIO)
            tap_check(false, "[%s] an unsealable region was taken", what);
        if (fd >= 0)
            close(fd);
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) {
            close(p[1]);
            if (vu_fe_vring_fd(&g.fe, VHOST_USER_SET_VRING_KICK, 1, p[0]) != -EREMOTEIO)
                tap_check(false, "[%s] a pipe was taken as kick fd", what);
            close(p[0]);
        }
    }
    guest_close(&g);
    if (vdev_up(V[0], R.p.vm[0].sock, R.p.vm[0].cid, NULL) != 0)
        tap_check(false, "[%s] VM 0's own front-end comes back: %s", what, V[0]->last_err);
}

/* VM 0's guest attacks. */
static void guest_attacks(bool flood)
{
    struct rpc_session s;
    uint64_t pfn = BUF_PFN, mdl = 0;
    if (rpc_open_from(&s, V[0], 40000 + (uint32_t)(rand() % 1000))) {
        if (rpc_lock(&s, 0, 4096, &pfn, 1, 1, &mdl) == ST_DENIED)
            denied++;
        else
            tap_check(false, "unprivileged lock was not denied");
        rpc_close(&s);
    }
    if (!rpc_open(&s, V[0]))
        return;
    uint64_t rep[64];
    for (int i = 0; i < 64; i++)
        rep[i] = BUF_PFN;
    for (int k = 0; k < 3; k++) { /* repeated frames: the VM's VMA share runs out */
        if (rpc_lock(&s, 0, 64 * 4096, rep, 64, 1, &mdl) == ST_OK) {
            Mdlmap__V1__MapRequest rq = map_rq(mdl);
            struct rpc_mapping m;
            vma_refused += rpc_map(&s, &rq, &m) == MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES;
        }
    }
    for (int k = 0; k < 20; k++) { /* leaked when the connection drops */
        uint64_t f = BUF_PFN + (uint64_t)k;
        (void)rpc_lock(&s, 0, 4096, &f, 1, 1, &mdl);
    }
    /* UserMode into the consumer that never answers: each expires */
    if (rpc_lock(&s, 0, 4096, &pfn, 1, 1, &mdl) == ST_OK) {
        Mdlmap__V1__MapRequest rq = map_rq(mdl);
        rq.access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
        rq.consumer = "stall";
        struct rpc_mapping m;
        user_expired += rpc_map(&s, &rq, &m) == MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY;
    }
    if (flood && rpc_lock(&s, 0, 4096, &pfn, 1, 1, &mdl) == ST_OK)
        for (int k = 0; k < 200; k++) {
            Mdlmap__V1__MapRequest rq = map_rq(mdl);
            struct rpc_mapping m;
            if (rpc_map(&s, &rq, &m) == ST_OK)
                (void)rpc_unmap(&s, m.map, m.address, mdl);
        }
    rpc_close(&s);
    attack_rounds++;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    uint64_t cids[NVM];
    for (unsigned i = 0; i < NVM; i++)
        cids[i] = 3 + i;
    /* a small VMA budget: 100 per VM guaranteed */
    const char *more[] = { "--max-vmas", "800", "--consumer-timeout-ms", "200", "--api-frame-timeout-ms", "500",
                           NULL };
    for (unsigned i = 0; i < 16; i++)
        stalled[i] = -1;
    rig_start_with(&R, bin, "mdlmap-load", NVM, cids, more);
    for (unsigned i = 0; i < NVM; i++) {
        char what[16];
        snprintf(what, sizeof(what), "VM %u", i);
        V[i] = rig_vm_up(&R, i, NULL, what);
        if (!V[i]) {
            rig_abort(&R);
            return tap_done();
        }
    }
    /* VM 1 leaks one MDL before VM 0 leaks a hundred: its record must stay */
    struct rpc_session l1;
    if (rpc_open(&l1, V[1])) {
        uint64_t pfn = BUF_PFN, mdl;
        tap_check(rpc_lock(&l1, 0, 4096, &pfn, 1, 1, &mdl) == ST_OK, "VM 1 locks an MDL it will leak");
        rpc_close(&l1);
    }
    /* warm-up: every path once, then the baseline */
    guest_attacks(false);
    for (unsigned i = 1; i < NVM; i++)
        good_turn(i);
    usleep(300 * 1000);
    int fd0 = proc_count_fds(R.p.pid), maps0 = proc_count_maps(R.p.pid);
    long rss0 = proc_rss_kb(R.p.pid), log0 = log_size();
    tap_diag("baseline: %d fds, %d maps, %ld KiB RSS", fd0, maps0, rss0);

    long long t0 = now_ms();
    for (unsigned r = 0; r < ROUNDS; r++) {
        frontend_attacks(r);
        host_attacks();
        guest_attacks(r == 0);
        for (unsigned i = 1; i < NVM; i++)
            good_turn(i);
    }
    tap_diag("%u rounds in %lld ms", ROUNDS, now_ms() - t0);
    tap_check(good_fail == 0, "the well-behaved VMs saw no failure (%u)", good_fail);
    tap_check(hd_alive(&R.p), "hostd alive");
    mdl_envelope *st = api_stats(R.api);
    tap_check(st && st->stats_reply && st->stats_reply->mappings == 0 && st->stats_reply->locked_mdls == 0,
              "every mapping and MDL of VM 0 was run down");
    /* the attacks really ran: denied, refused for VMAs, and leaked */
    tap_check(attack_rounds == ROUNDS + 1 && denied == ROUNDS + 1, "unprivileged locks denied (%u of %u rounds)",
              denied, attack_rounds);
    tap_check(vma_refused >= ROUNDS, "repeated-frame maps ran into VM 0's VMA share (%u refusals)", vma_refused);
    tap_check(stall_consumer >= 0 && user_expired >= ROUNDS,
              "UserMode maps into a consumer that never reads expired (%u)", user_expired);
    for (unsigned i = 0; i < 16; i++)
        if (stalled[i] >= 0)
            close(stalled[i]);
    if (stall_consumer >= 0)
        close(stall_consumer);
    unsigned long long leaks = st && st->stats_reply ? (unsigned long long)st->stats_reply->leaks_reported : 0;
    tap_check(leaks >= 20ull * (ROUNDS + 1), "VM 0's leaked MDLs were reported (%llu)", leaks);
    mdl_envelope q = MDLMAP__V1__ENVELOPE__INIT, *vm1 = NULL;
    Mdlmap__V1__StatsRequest sq = MDLMAP__V1__STATS_REQUEST__INIT;
    sq.vm_name = R.p.vm[1].name;
    q.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    q.stats = &sq;
    vm1 = api_call(R.api, &q);
    tap_check(vm1 && vm1->stats_reply && vm1->stats_reply->n_recent_leaks == 1 &&
                  !strcmp(vm1->stats_reply->recent_leaks[0]->vm_name, R.p.vm[1].name),
              "VM 1's leak record survived VM 0's flood of leaks (its own ring)");
    if (vm1)
        frame_envelope_free(vm1);
    if (st)
        frame_envelope_free(st);
    usleep(300 * 1000);
    int fd1 = proc_count_fds(R.p.pid), maps1 = proc_count_maps(R.p.pid);
    long rss1 = proc_rss_kb(R.p.pid), log1 = log_size();
    tap_check(fd1 >= 0 && fd1 <= fd0, "hostd's fds back to the baseline (%d, was %d)", fd1, fd0);
    tap_check(maps1 >= 0 && maps1 <= maps0 + maps_slack(), "hostd's VMAs back to the baseline (%d, was %d)", maps1,
              maps0);
    tap_check(rss1 >= 0 && rss1 <= rss0 + 2048 + rss_slack_kb(), "hostd's RSS back to the baseline (%ld KiB, was %ld)",
              rss1, rss0);
    tap_check(log0 >= 0 && log1 - log0 < LOG_BOUND, "hostd's log grew by %ld bytes under attack (< %d)", log1 - log0,
              LOG_BOUND);
    for (unsigned i = 0; i < NVM; i++) {
        vdev_down(V[i]);
        free(V[i]);
    }
    rig_stop(&R);
    return tap_done();
}
