/* vhost-user request handlers driven directly through vu_backend_process():
 * the test plays a (hostile) front-end on a backend that has no event loop,
 * with a two-queue device that does nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memtable.h"
#include "tap.h"
#include "vhost_user.h"
#include "vu_direct.h"

#define MEM_SZ (1u << 20)
#define UVA_BASE 0x7f3400000000ull

static int set_num(struct vu_backend *be, uint32_t q, uint32_t num)
{
    struct vu_vring_state s = { q, num };
    return vu_direct_send(be, VHOST_USER_SET_VRING_NUM, &s, sizeof(s), -1);
}

/* A ring mapped for one size must never stay mapped after SET_VRING_NUM grows
 * it past the end of guest memory: hostd would read descriptors and write used
 * elements outside the region. */
static void test_vring_num_after_addr(void)
{
    struct vu_backend *be = vu_backend_new(&(struct vu_backend_config){ .name = "t" });
    CHECK(be != NULL);
    vu_backend_attach(be, &vu_direct_null_dev, NULL);
    const struct memtable *mem = vu_backend_mem(be);

    int fd = memfd_create("vu-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0 && ftruncate(fd, MEM_SZ) == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, MEM_SZ, UVA_BASE, 0 };
    CHECK(vu_direct_send(be, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), fd) == 0);
    CHECK(mem->n == 1);

    struct virtq *vq = vu_backend_queue(be, 1);
    CHECK(set_num(be, 1, 256) == 0);
    /* 256 descriptors fill the last 4 KiB of guest memory exactly */
    struct vu_vring_addr a = { .index = 1, .desc = UVA_BASE + MEM_SZ - 4096,
                               .avail = UVA_BASE + 0x1000, .used = UVA_BASE + 0x2000 };
    CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), -1) == 0);
    CHECK(vq->desc != NULL && vq->num == 256);

    /* grow the ring: the descriptor table would now run 508 KiB past the end */
    CHECK(set_num(be, 1, 32768) == 0);
    CHECK(vq->num == 32768);
    CHECK(vq->desc == NULL || memtable_uva_to_hva(mem, vq->desc_uva, 16ull * vq->num) != NULL);
    CHECK(vq->used == NULL || memtable_uva_to_hva(mem, vq->used_uva, 4 + 8ull * vq->num) != NULL);

    /* shrinking again: the rings fit and are mapped for the new size */
    CHECK(set_num(be, 1, 128) == 0);
    CHECK(vq->desc != NULL && vq->num == 128);

    vu_backend_free(be);
}

static int one_region(struct vu_backend *be, int fd)
{
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, MEM_SZ, UVA_BASE, 0 };
    return vu_direct_send(be, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), fd);
}

/* A region whose file the front-end can still shrink would SIGBUS hostd (and
 * every VM) on the next ring access: hostd seals it, or refuses it. */
static void test_region_seals(void)
{
    struct vu_backend *be = vu_backend_new(&(struct vu_backend_config){ .name = "t" });
    CHECK(be != NULL);
    vu_backend_attach(be, &vu_direct_null_dev, NULL);
    const struct memtable *mem = vu_backend_mem(be);

    /* not sealable (memfd without MFD_ALLOW_SEALING, like shared memory or a
     * plain file; a pipe): refused (NACKed), the table stays empty */
    int fd = memfd_create("vu-nosealing", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, MEM_SZ) == 0);
    one_region(be, fd);
    CHECK(mem->n == 0);
    int p[2];
    CHECK(pipe(p) == 0);
    one_region(be, p[0]);
    CHECK(mem->n == 0);
    close(p[1]);

    /* sealable but not sealed: hostd adds F_SEAL_SHRINK; the front-end's
     * later truncate fails instead of pulling pages from under hostd */
    fd = memfd_create("vu-unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0 && ftruncate(fd, MEM_SZ) == 0);
    int keep = dup(fd);
    CHECK(one_region(be, fd) == 0 && mem->n == 1);
    CHECK((fcntl(keep, F_GET_SEALS) & F_SEAL_SHRINK) != 0);
    CHECK(ftruncate(keep, 4096) < 0 && errno == EPERM);
    close(keep);
    vu_backend_free(be);
}

/* Kick/call/error fds must be eventfds: a pipe whose writer has gone reports
 * EOF forever and made hostd spin at 100 % CPU. */
static void test_vring_fd_type(void)
{
    struct vu_backend *be = vu_backend_new(&(struct vu_backend_config){ .name = "t" });
    CHECK(be != NULL);
    vu_backend_attach(be, &vu_direct_null_dev, NULL);
    uint64_t idx = 1;
    int p[2];
    CHECK(pipe(p) == 0);
    close(p[1]);
    vu_direct_send(be, VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), p[0]);
    CHECK(!vu_backend_queue(be, 1)->started && vu_backend_queue(be, 1)->kick_fd < 0);
    CHECK(pipe(p) == 0);
    close(p[1]);
    vu_direct_send(be, VHOST_USER_SET_VRING_CALL, &idx, sizeof(idx), p[0]);
    CHECK(vu_backend_queue(be, 1)->call_fd < 0);
    int efd = eventfd(0, EFD_CLOEXEC);
    CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), efd) == 0);
    CHECK(vu_backend_queue(be, 1)->started && vu_backend_queue(be, 1)->kick_fd >= 0);
    vu_backend_free(be);
}

int main(void)
{
    test_vring_num_after_addr();
    test_region_seals();
    test_vring_fd_type();
    return tap_done();
}
