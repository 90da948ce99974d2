/* vhost-user request handlers driven directly through vu_backend_process():
 * the test plays a (hostile) front-end on a backend that has no event loop,
 * with a two-queue device that does nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memtable.h"
#include "tap.h"
#include "vhost_user.h"

#define MEM_SZ (1u << 20)
#define UVA_BASE 0x7f3400000000ull

static unsigned two_queues(void *dev)
{
    return 2;
}

static const struct vu_dev_ops null_dev = { .queue_count = two_queues };

static int send_msg(struct vu_backend *be, uint32_t req, const void *pl, uint32_t size, int fd)
{
    struct vu_msg_hdr h = { req, VHOST_USER_VERSION, size };
    uint8_t buf[VHOST_USER_MAX_PAYLOAD];
    memcpy(buf, pl, size);
    int fds[1] = { fd };
    return vu_backend_process(be, &h, buf, fds, fd >= 0 ? 1 : 0);
}

static int set_num(struct vu_backend *be, uint32_t q, uint32_t num)
{
    struct vu_vring_state s = { q, num };
    return send_msg(be, VHOST_USER_SET_VRING_NUM, &s, sizeof(s), -1);
}

/* A ring mapped for one size must never stay mapped after SET_VRING_NUM grows
 * it past the end of guest memory: hostd would read descriptors and write used
 * elements outside the region. */
static void test_vring_num_after_addr(void)
{
    struct vu_backend *be = vu_backend_new(&(struct vu_backend_config){ .name = "t" });
    CHECK(be != NULL);
    vu_backend_attach(be, &null_dev, NULL);
    const struct memtable *mem = vu_backend_mem(be);

    int fd = memfd_create("vu-test", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, MEM_SZ) == 0);
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, MEM_SZ, UVA_BASE, 0 };
    CHECK(send_msg(be, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), fd) == 0);
    CHECK(mem->n == 1);

    struct virtq *vq = vu_backend_queue(be, 1);
    CHECK(set_num(be, 1, 256) == 0);
    /* 256 descriptors fill the last 4 KiB of guest memory exactly */
    struct vu_vring_addr a = { .index = 1, .desc = UVA_BASE + MEM_SZ - 4096,
                               .avail = UVA_BASE + 0x1000, .used = UVA_BASE + 0x2000 };
    CHECK(send_msg(be, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), -1) == 0);
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

int main(void)
{
    test_vring_num_after_addr();
    return tap_done();
}
