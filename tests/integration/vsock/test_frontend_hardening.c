/* A hostile front-end (QEMU) on VM A, VM B served by the same hostd:
 * - a memory region whose file can still shrink: a later truncate + kick made
 *   hostd die of SIGBUS, taking every VM down. hostd seals sealable memfds
 *   and refuses what cannot be sealed;
 * - a kick "eventfd" that is a pipe whose writer has gone: epoll reported the
 *   hang-up forever and hostd spun at 100 % CPU. Only eventfds are taken.
 * After each case hostd is alive, calm, and VM B still echoes. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "hostile.h"

static struct hd_proc P;
static struct vdev *B;

static void after_case(const char *name)
{
    tap_check(hd_alive(&P), "[%s] hostd alive", name);
    char why[256] = "";
    int rc = vdev_echo_check(B, 8192, 4000, why, sizeof(why));
    tap_check(rc == 0, "[%s] VM B still echoes%s%s", name, rc ? ": " : "", why);
}

static void c_region_seals(void)
{
    const char *name = "unsealed-region";
    struct guest g;
    if (hostile_front_end(&g, P.vm[0].sock, P.vm[0].cid, name)) {
        int fd = memfd_create("not-sealable", MFD_CLOEXEC);
        tap_check(fd >= 0 && ftruncate(fd, 16u << 20) == 0, "[%s] memfd without MFD_ALLOW_SEALING", name);
        tap_check(hostile_mem_table_one(&g, fd) == -EREMOTEIO, "[%s] a region that cannot be sealed is refused", name);
        close(fd);
        fd = memfd_create("sealable", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        tap_check(fd >= 0 && ftruncate(fd, 16u << 20) == 0, "[%s] sealable memfd, not sealed", name);
        tap_check(hostile_mem_table_one(&g, fd) == 0, "[%s] a sealable region is taken", name);
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
    if (hostile_front_end(&g, P.vm[0].sock, P.vm[0].cid, name)) {
        int p[2];
        tap_check(pipe2(p, O_CLOEXEC) == 0, "[%s] pipe", name);
        close(p[1]); /* the read end reports EOF/HUP forever */
        tap_check(vu_fe_vring_fd(&g.fe, VHOST_USER_SET_VRING_KICK, 1, p[0]) == -EREMOTEIO,
                  "[%s] a pipe as kick fd is refused", name);
        close(p[0]);
        long t0 = proc_cpu_ticks(P.pid);
        usleep(1000 * 1000);
        long t1 = proc_cpu_ticks(P.pid);
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
    /* guest RAM and its MDL mappings are shared memory: out of hostd's core
     * dumps for the whole process (coredump_filter bit 1: anonymous shared) */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/coredump_filter", (int)P.pid);
    FILE *f = fopen(path, "r");
    unsigned long filter = ~0ul;
    if (f) {
        if (fscanf(f, "%lx", &filter) != 1)
            filter = ~0ul;
        fclose(f);
    }
    tap_check(!(filter & 2), "hostd keeps shared memory (guest RAM) out of its core dumps (filter 0x%lx)", filter);
    c_region_seals();
    c_kick_pipe();
    vdev_down(B);
    free(B);
    stop_and_check(&P);
    return tap_done();
}
