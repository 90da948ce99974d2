/* hostd restarts without losing its guests: hostd runs under fdstore-sup
 * (a stand-in for systemd's fd store and Restart=always). The harness guest
 * (playing QEMU too) connects, echoes, locks and maps; hostd is killed with
 * SIGTERM, then SIGKILL, and started again by the supervisor. After each,
 * on the SAME vhost-user connection (no new handshake: the harness would
 * see its socket close otherwise), a new echo connection works, the old one
 * gets RST, the old RPC session is gone, a new lock + map works, and hostd
 * holds nothing of before (host API stats, fd count as in the first run).
 * Before the SIGKILL the VM's socket file is removed: the new hostd
 * replaces the useless kept listener. Last, a corrupt state record: the next hostd refuses it cleanly (closes
 * the connection, stays up) and a new front-end is served as usual.
 * usage: test_restart HOSTD FDSTORE-SUP */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (8u << 20)

static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

static bool store_has(const char *list, const char *name)
{
    char want[128];
    snprintf(want, sizeof(want), "%s\n", name);
    FILE *f = fopen(list, "r");
    char line[256];
    bool found = false;
    while (f && !found && fgets(line, sizeof(line), f))
        found = !strcmp(line, want);
    if (f)
        fclose(f);
    return found;
}

static uint64_t stat_field(const char *api, int which)
{
    mdl_envelope *r = api_stats(api);
    uint64_t v = ~0ull;
    if (r)
        v = which == 0 ? r->stats_reply->mappings : r->stats_reply->locked_mdls;
    frame_envelope_free(r);
    return v;
}

/* A lock and a map on a fresh RPC session; true when both succeed. */
static bool lock_and_map(struct vdev *d, struct rpc_session *s, const char *what)
{
    if (!tap_check(rpc_open(s, d), "%s: RPC connection opens", what))
        return false;
    uint64_t pfns[2] = { BUF_GPA / PG, BUF_GPA / PG + 1 }, mdl = 0;
    int32_t st = rpc_lock(s, 0, 2 * PG, pfns, 2, 0, &mdl);
    tap_check(st == 0 && mdl, "%s: lock 2 pages (%s)", what, rpc_status_name(st));
    struct rpc_mapping m;
    st = rpc_map_kernel(s, mdl, 16, &m);
    return tap_check(st == 0 && m.address, "%s: map (%s)", what, rpc_status_name(st));
}

/* Kill hostd (sig) and wait for the supervisor's next one to be ready. */
static pid_t restart(struct rig *rig, const char *pidfile, int sig, unsigned *readies, const char *what)
{
    pid_t old = read_pid(pidfile);
    kill(old, sig);
    (*readies)++;
    pid_t now = 0;
    for (int i = 0; i < 2000; i++) {
        now = read_pid(pidfile);
        if (now != old && hd_log_count(&rig->p, "ready:") >= *readies)
            break;
        usleep(10000);
    }
    tap_check(now != old && hd_log_count(&rig->p, "ready:") >= *readies,
              "%s: the supervisor started a new hostd (pid %d -> %d) and it is ready", what, (int)old, (int)now);
    return now;
}

static void pump(int rounds)
{
    for (int i = 0; i < rounds; i++)
        vdev_pump(10);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    const char *sup = argc > 2 ? argv[2] : getenv("MDLMAP_FDSTORE_SUP");
    if (!sup) {
        fprintf(stderr, "usage: %s HOSTD FDSTORE-SUP\n", argv[0]);
        return 2;
    }
    char dir[] = "/tmp/mdl-restart.XXXXXX", pidfile[64], list[64];
    if (!mkdtemp(dir))
        return 2;
    snprintf(pidfile, sizeof(pidfile), "%s/hostd.pid", dir);
    snprintf(list, sizeof(list), "%s/store", dir);
    const char *wrap[] = { sup, "--pidfile", pidfile, "--list", list, "--", NULL };
    hd_set_wrapper(wrap);

    struct rig rig;
    uint64_t cids[1] = { 3 };
    unsigned readies = 1;
    rig_start(&rig, bin, "mdl-restart", 1, cids);
    struct guest_opts o;
    guest_default_opts(&o);
    struct vdev *d = rig_vm_up(&rig, 0, &o, "restart");
    if (!d) {
        rig_abort(&rig);
        return tap_done();
    }
    pump(5);
    const char *kept[] = { "api.listen", "vm.vm0.listen", "vm.vm0.state", "vm.vm0.conn", "vm.vm0.mem0",
                           "vm.vm0.mem1", "vm.vm0.kick0", "vm.vm0.kick1", "vm.vm0.call0", "vm.vm0.call1" };
    bool all = false;
    for (int t = 0; t < 300 && !all; t++) {   /* the supervisor writes its list as messages arrive */
        all = true;
        for (unsigned i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
            if (!store_has(list, kept[i])) {
                if (t == 299)
                    tap_diag("not in the fd store: %s", kept[i]);
                all = false;
            }
        if (!all)
            vdev_pump(10);
    }
    tap_check(all, "the fd store holds the sockets, regions, eventfds and the state record");
    pid_t pid = read_pid(pidfile);
    int fds0 = proc_count_fds(pid);
    char why[160] = "";
    tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0, "first hostd echoes %s", why);

    const int sigs[2] = { SIGTERM, SIGKILL };
    for (unsigned round = 0; round < 2; round++) {
        char what[32];
        snprintf(what, sizeof(what), "after %s", sigs[round] == SIGTERM ? "SIGTERM" : "SIGKILL");
        int err = 0;
        struct vc_conn *old = vc_connect(d, VSOCK_TYPE_STREAM, 2, 7, 3000, &err);
        uint8_t b[8] = "ping", in[8];
        tap_check(old && vc_echo(old, b, in, 4, 3000) == 0, "%s: an echo connection before the restart",
                  what);
        struct rpc_session s;
        lock_and_map(d, &s, what);
        tap_check(stat_field(rig.api, 0) == 1, "%s: hostd reports the mapping before the restart", what);

        /* the second time, the socket file goes away meanwhile (someone
         * cleaned /run): the kept listener is then useless and replaced */
        if (sigs[round] == SIGKILL)
            unlink(rig.p.vm[0].sock);
        pid = restart(&rig, pidfile, sigs[round], &readies, what);
        if (sigs[round] == SIGKILL) {
            struct stat st;
            tap_check(stat(rig.p.vm[0].sock, &st) == 0 && S_ISSOCK(st.st_mode) &&
                          hd_log_count(&rig.p, "inherited listening socket refused") == 1,
                      "%s: a kept listener whose file was removed is replaced by a new socket", what);
        }
        tap_check(!d->dead && !vu_fe_peer_closed(&d->g.fe), "%s: the vhost-user connection stayed open", what);
        tap_check(vdev_echo_check(d, 4096, 5000, why, sizeof(why)) == 0, "%s: a new echo connection works %s",
                  what, why);
        if (old) {
            vc_try_send(old, b, 4);
            for (int i = 0; i < 200 && !old->got_rst; i++)
                vdev_pump(10);
            tap_check(old->got_rst, "%s: the old echo connection gets RST on its next packet", what);
            vc_forget(old);
        }
        mdl_envelope *r = NULL;
        mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__HelloRequest hr = MDLMAP__V1__HELLO_REQUEST__INIT;
        hr.min_version = hr.max_version = 1;
        hr.client = "old";
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
        e.hello = &hr;
        rpc_send(&s, &e);
        tap_check(rpc_wait(&s, &r, 3000) <= 0 && rpc_peer_closed(&s), "%s: the old RPC session is reset", what);
        frame_envelope_free(r);
        rpc_forget(&s);
        tap_check(stat_field(rig.api, 0) == 0 && stat_field(rig.api, 1) == 0,
                  "%s: the new hostd holds no mapping or locked MDL of before", what);
        struct rpc_session s2;
        lock_and_map(d, &s2, what);
        tap_check(stat_field(rig.api, 0) == 1, "%s: the new mapping is the only one", what);
        rpc_close(&s2);
        pump(20);
        tap_check(stat_field(rig.api, 0) == 0, "%s: closing the session unmaps it", what);
        int fds = proc_count_fds(pid);
        for (int i = 0; i < 200 && fds != fds0; i++) {   /* the stats clients' closes reach hostd */
            vdev_pump(10);
            fds = proc_count_fds(pid);
        }
        tap_check(fds == fds0, "%s: hostd holds %d fds (first run: %d)", what, fds, fds0);
    }

    /* A corrupt record: refused, the connection closed, hostd serves the next front-end. */
    char fddir[64], path[400], target[128];
    snprintf(fddir, sizeof(fddir), "/proc/%d/fd", (int)pid);
    DIR *dd = opendir(fddir);
    bool corrupted = false;
    struct dirent *de;
    while (dd && (de = readdir(dd)) && !corrupted) {
        snprintf(path, sizeof(path), "%s/%s", fddir, de->d_name);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = 0;
        if (!strstr(target, "mdlmap-vm-state"))
            continue;
        int fd = open(path, O_RDWR);
        uint8_t junk[64];
        memset(junk, 0x5a, sizeof(junk));
        corrupted = fd >= 0 && pwrite(fd, junk, sizeof(junk), 96) == (ssize_t)sizeof(junk);
        if (fd >= 0)
            close(fd);
    }
    if (dd)
        closedir(dd);
    tap_check(corrupted, "the state record is overwritten with junk");
    pid = restart(&rig, pidfile, SIGKILL, &readies, "corrupt record");
    tap_check(file_has(rig.p.log, "kept state refused", 3000), "the new hostd logs the refusal");
    bool closed = false;
    for (int i = 0; i < 300 && !closed; i++) {
        closed = vu_fe_peer_closed(&d->g.fe);
        usleep(10000);
    }
    tap_check(closed, "the refused front-end's connection is closed (QEMU's device stays dead, as before)");
    for (int i = 0; i < 300 && store_has(list, "vm.vm0.conn"); i++)
        usleep(10000);
    tap_check(!store_has(list, "vm.vm0.conn") && store_has(list, "vm.vm0.listen"),
              "the store dropped the refused connection and kept the listening socket");
    vdev_down(d);
    free(d);
    d = rig_vm_up(&rig, 0, &o, "after the refusal");
    if (d) {
        tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0, "a new front-end is served %s", why);
        vdev_down(d);
        free(d);
        bool gone = false;
        for (int i = 0; i < 300 && !gone; i++) {
            gone = !store_has(list, "vm.vm0.conn");
            usleep(10000);
        }
        tap_check(gone, "a front-end that goes leaves the fd store");
    }
    if (tap_failures || getenv("MDL_TEST_HOSTD_LOG"))
        hd_log_tail(&rig.p, 60);
    rig_stop(&rig);
    unlink(list);
    unlink(pidfile);
    rmdir(dir);
    return tap_done();
}
