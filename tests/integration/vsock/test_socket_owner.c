/* A VM's socket belongs to that VM's QEMU. With --socket-group every VM
 * socket is reachable by the group, so another VM's QEMU (another user of
 * that group) could connect first and take the VM's CID. `--vm ...,uid=` and
 * `group=` name the VM's owner; hostd checks SO_PEERCRED at accept. The
 * front-ends here run in child processes under other uids/gids; VM 0 (owned
 * by nobody in particular) keeps echoing throughout. */
#include <errno.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define SHARED_GID 65534u   /* --socket-group: every VM socket's group */
#define OWNER_A 65533u      /* VM a: uid= */
#define OWNER_B 65532u      /* VM b: uid= */
#define GROUP_C 65531u      /* VM c: group= */

/* In a child with these credentials: connect to sock and ask GET_FEATURES.
 * Returns 0 when hostd answered, 1 when it refused (closed or unreachable),
 * 2 when the child could not take the credentials. */
static int try_as(const char *sock, uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups)
{
    pid_t pid = fork();
    if (pid < 0)
        return 2;
    if (pid == 0) {
        if (setgroups(ngroups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
            _exit(2);
        struct vu_fe fe;
        vu_fe_init(&fe);
        fe.timeout_ms = 2000;
        uint64_t f = 0;
        int rc = vu_fe_connect(&fe, sock, 1000);
        if (rc == 0)
            rc = vu_fe_get_u64(&fe, VHOST_USER_GET_FEATURES, &f);
        vu_fe_close(&fe);
        _exit(rc == 0 && f ? 0 : 1);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
        return 2;
    return WEXITSTATUS(st);
}

static void check_mode(const char *sock, uid_t uid, gid_t gid, const char *what)
{
    struct stat st;
    bool ok = stat(sock, &st) == 0;
    tap_check(ok && st.st_uid == uid && st.st_gid == gid && (st.st_mode & 0777) == 0660,
              "%s: socket owned by %u:%u mode 0660 (is %u:%u %03o)", what, (unsigned)uid, (unsigned)gid,
              ok ? (unsigned)st.st_uid : 0, ok ? (unsigned)st.st_gid : 0, ok ? (unsigned)(st.st_mode & 0777) : 0);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    if (geteuid() != 0) {
        printf("1..0 # SKIP needs root to run front-ends under other uids\n");
        return 77;
    }
    /* the harness's own directory is private (0700): the owned VMs' sockets
     * live in a directory their users can reach */
    char dir[] = "/tmp/mdlmap-owner-XXXXXX";
    if (!mkdtemp(dir) || chmod(dir, 0755) < 0) {
        perror("mkdtemp");
        return 1;
    }
    char sa[128], sb[128], sc[128], va[192], vb[192], vc[192], grp[16];
    snprintf(sa, sizeof(sa), "%s/a.sock", dir);
    snprintf(sb, sizeof(sb), "%s/b.sock", dir);
    snprintf(sc, sizeof(sc), "%s/c.sock", dir);
    snprintf(va, sizeof(va), "name=a,cid=5,socket=%s,uid=%u", sa, OWNER_A);
    snprintf(vb, sizeof(vb), "name=b,cid=6,socket=%s,uid=%u", sb, OWNER_B);
    snprintf(vc, sizeof(vc), "name=c,cid=7,socket=%s,group=%u", sc, GROUP_C);
    snprintf(grp, sizeof(grp), "%u", SHARED_GID);
    const char *extra[] = { "--socket-group", grp, "--vm", va, "--vm", vb, "--vm", vc, NULL };
    struct hd_proc P;
    uint64_t cids[1] = { 3 };
    start_or_die(&P, bin, 1, cids, extra);

    check_mode(sa, OWNER_A, SHARED_GID, "VM a (uid=)");
    check_mode(sc, 0, GROUP_C, "VM c (group=)");

    gid_t shared[1] = { SHARED_GID };
    tap_check(try_as(sa, OWNER_B, SHARED_GID, shared, 1) == 1,
              "VM b's QEMU (uid %u, in the shared group) cannot take VM a's socket", OWNER_B);
    tap_check(try_as(sb, OWNER_B, SHARED_GID, shared, 1) == 0, "VM b's QEMU connects to its own socket");
    tap_check(try_as(sa, OWNER_A, SHARED_GID, shared, 1) == 0, "VM a's QEMU connects to its own socket");
    gid_t both[2] = { SHARED_GID, GROUP_C };
    tap_check(try_as(sc, OWNER_B, SHARED_GID, both, 2) == 0,
              "a member of VM c's group (supplementary) connects to VM c");
    tap_check(try_as(sc, OWNER_B, SHARED_GID, shared, 1) == 1, "a non-member cannot connect to VM c");
    tap_check(try_as(sa, 0, 0, NULL, 0) == 0, "root may connect to an owned VM");

    struct vdev *d = vdev_alloc();
    if (up_or_report(d, &P, 0, NULL, "VM 0")) {
        char why[256] = "";
        int rc = vdev_echo_check(d, 4096, 4000, why, sizeof(why));
        tap_check(rc == 0, "VM 0 still echoes%s%s", rc ? ": " : "", why);
    }
    vdev_down(d);
    free(d);
    tap_check(hd_alive(&P), "hostd alive");
    stop_and_check(&P);
    rmdir(dir);
    return tap_done();
}
