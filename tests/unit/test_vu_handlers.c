/* vhost-user request handlers driven directly through vu_process_msg(): the
 * test plays a (hostile) front-end on a VM that has no event loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hostd.h"
#include "memtable.h"
#include "unit_check.h"
#include "vhost_user.h"
#include "vu_internal.h"

#define MEM_SZ (1u << 20)
#define UVA_BASE 0x7f3400000000ull

static int send_msg(struct vm *vm, uint32_t req, const void *pl, uint32_t size, int fd)
{
    struct vu_msg_hdr h = { req, VHOST_USER_VERSION, size };
    uint8_t buf[VHOST_USER_MAX_PAYLOAD];
    memcpy(buf, pl, size);
    int fds[1] = { fd };
    return vu_process_msg(vm, &h, buf, fds, fd >= 0 ? 1 : 0);
}

static int set_num(struct vm *vm, uint32_t q, uint32_t num)
{
    struct vu_vring_state s = { q, num };
    return send_msg(vm, VHOST_USER_SET_VRING_NUM, &s, sizeof(s), -1);
}

/* A ring mapped for one size must never stay mapped after SET_VRING_NUM grows
 * it past the end of guest memory: hostd would read descriptors and write used
 * elements outside the region. */
static void test_vring_num_after_addr(void)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    snprintf(vm->name, sizeof(vm->name), "t");
    vm->conn_fd = -1;
    memtable_init(&vm->mem);
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++)
        virtq_init(&vm->vq[q], q, &vm->mem);

    int fd = memfd_create("vu-test", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, MEM_SZ) == 0);
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, MEM_SZ, UVA_BASE, 0 };
    CHECK(send_msg(vm, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), fd) == 0);
    CHECK(vm->mem.n == 1);

    struct virtq *vq = &vm->vq[1];
    CHECK(set_num(vm, 1, 256) == 0);
    /* 256 descriptors fill the last 4 KiB of guest memory exactly */
    struct vu_vring_addr a = { .index = 1, .desc = UVA_BASE + MEM_SZ - 4096,
                               .avail = UVA_BASE + 0x1000, .used = UVA_BASE + 0x2000 };
    CHECK(send_msg(vm, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), -1) == 0);
    CHECK(vq->desc != NULL && vq->num == 256);

    /* grow the ring: the descriptor table would now run 508 KiB past the end */
    CHECK(set_num(vm, 1, 32768) == 0);
    CHECK(vq->num == 32768);
    CHECK(vq->desc == NULL || memtable_uva_to_hva(&vm->mem, vq->desc_uva, 16ull * vq->num) != NULL);
    CHECK(vq->used == NULL || memtable_uva_to_hva(&vm->mem, vq->used_uva, 4 + 8ull * vq->num) != NULL);

    /* shrinking again: the rings fit and are mapped for the new size */
    CHECK(set_num(vm, 1, 128) == 0);
    CHECK(vq->desc != NULL && vq->num == 128);

    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++)
        virtq_reset(&vm->vq[q]);
    memtable_clear(&vm->mem);
    free(vm->vu);
    free(vm);
}

int main(void)
{
    test_vring_num_after_addr();
    return UNIT_DONE();
}
