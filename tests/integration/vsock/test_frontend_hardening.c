/* A hostile front-end (QEMU) on VM A, VM B served by the same hostd:
 * - a memory region whose file can still shrink: a later truncate + kick made
 *   hostd die of SIGBUS, taking every VM down. hostd seals sealable memfds
 *   and refuses what cannot be sealed;
 * - a kick "eventfd" that is a pipe whose writer has gone: epoll reported the
 *   hang-up forever and hostd spun at 100 % CPU. Only eventfds are taken.
 * After each case hostd is alive, calm, and VM B still echoes. */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

#define BIT(n) (1ull << (n))

static struct hd_proc P;
static struct vdev *B;

static void after_case(const char *name)
{
    tap_check(hd_alive(&P), "[%s] hostd alive", name);
    char why[256] = "";
    int rc = vdev_echo_check(B, 8192, 4000, why, sizeof(why));
    tap_check(rc == 0, "[%s] VM B still echoes%s%s", name, rc ? ": " : "", why);
}

/* hostd's user+system CPU time in clock ticks, -1 on error. */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}

/* A's front-end after the handshake, with REPLY_ACK answers awaited. */
static bool front_end(struct guest *g, const char *name)
{
    memset(g, 0, sizeof(*g));
    if (!tap_check(guest_connect(g, P.vm[0].sock, P.vm[0].cid, NULL) == 0, "[%s] VM A handshake%s%s", name,
                   g->err[0] ? ": " : "", g->err))
        return false;
    g->fe.need_reply = true;
    return tap_check(vu_fe_set_u64(&g->fe, VHOST_USER_SET_FEATURES, g->fe.features & (BIT(32) | BIT(30))) == 0,
                     "[%s] SET_FEATURES acked", name);
}

static int one_region(struct guest *g, int fd)
{
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, 16u << 20, 0x7f5500000000ull, 0 };
    return vu_fe_req(&g->fe, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), &fd, 1);
}

static void c_region_seals(void)
{
    const char *name = "unsealed-region";
    struct guest g;
    if (front_end(&g, name)) {
        int fd = memfd_create("not-sealable", MFD_CLOEXEC);
        tap_check(fd >= 0 && ftruncate(fd, 16u << 20) == 0, "[%s] memfd without MFD_ALLOW_SEALING", name);
        tap_check(one_region(&g, fd) == -EREMOTEIO, "[%s] a region that cannot be sealed is refused", name);
        close(fd);
        fd = memfd_create("sealable", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        tap_check(fd >= 0 && ftruncate(fd, 16u << 20) == 0, "[%s] sealable memfd, not sealed", name);
        tap_check(one_region(&g, fd) == 0, "[%s] a sealable region is taken", name);
        tap_check((fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK) != 0, "[%s] ... and hostd sealed it against shrinking",
                  name);
        tap_check(ftruncate(fd, 4096) < 0 && errno == EPERM,
                  "[%s] the front-end can no longer shrink it under hostd", name);
        close(fd);
    }
    guest_close(&g);
    after_case(name);
}

static void c_kick_pipe(void)
{
    const char *name = "kick-pipe-hangup";
    struct guest g;
    if (front_end(&g, name)) {
        int p[2];
        tap_check(pipe2(p, O_CLOEXEC) == 0, "[%s] pipe", name);
        close(p[1]); /* the read end reports EOF/HUP forever */
        tap_check(vu_fe_vring_fd(&g.fe, VHOST_USER_SET_VRING_KICK, 1, p[0]) == -EREMOTEIO,
                  "[%s] a pipe as kick fd is refused", name);
        close(p[0]);
        long t0 = cpu_ticks(P.pid);
        usleep(1000 * 1000);
        long t1 = cpu_ticks(P.pid);
        long hz = sysconf(_SC_CLK_TCK);
        tap_check(t0 >= 0 && t1 >= 0 && t1 - t0 < hz / 5, "[%s] hostd idle meanwhile (%ld of %ld ticks in 1 s)",
                  name, t1 - t0, hz);
    }
    guest_close(&g);
    after_case(name);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    uint64_t cids[2] = { 3, 4 };
    start_or_die(&P, bin, 2, cids, NULL);
    B = vdev_alloc();
    if (!up_or_report(B, &P, 1, NULL, "VM B")) {
        hd_kill(&P);
        return tap_done();
    }
    c_region_seals();
    c_kick_pipe();
    vdev_down(B);
    free(B);
    stop_and_check(&P);
    return tap_done();
}
