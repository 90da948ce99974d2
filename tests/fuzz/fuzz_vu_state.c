/* Fuzz vu_backend_restore, the resume of a back-end from the state record a
 * previous hostd kept (vhost_user.h): a real record is exported once from a
 * back-end brought up by vhost-user messages (one memfd region, two started
 * rings with kick and call eventfds); each input edits it and picks which
 * descriptors come back, then a fresh back-end is restored from it.
 * Input: flags byte (bit 0: keep the damaged checksum; bits 1..7: leave out
 * the connection, the region, kick 0, kick 1, call 0, call 1, swap in an
 * eventfd for the connection), then (offset le16, value) edits to the end.
 * Invariants: no crash; a refusal leaves the back-end unconnected with no
 * memory; no fd outlives the input. Seeds: tests/fuzz/gen_corpus.py. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_input.h"
#include "log.h"
#include "vhost_user.h"
#include "vu_direct.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEM_SZ (1u << 20)
#define UVA_BASE 0x7f3400000000ull

static struct vu_backend *src;
static uint8_t base[VU_STATE_REC_SIZE];
static struct vu_state_fds kept;
static int peer = -1;

static int setup_once(void)
{
    if (src)
        return 0;
    log_threshold = getenv("FUZZ_LOG") ? LOG_DEBUG : -1;
    src = vu_backend_new(&(struct vu_backend_config){ .name = "fuzz" });
    int sp[2];
    if (!src || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return -1;
    vu_backend_attach(src, &vu_direct_null_dev, NULL);
    if (vu_backend_adopt_conn(src, sp[0]) < 0)
        return -1;
    peer = sp[1];
    uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                 (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
    vu_direct_send(src, VHOST_USER_SET_FEATURES, &f, sizeof(f), -1);
    int fd = memfd_create("fuzz-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, MEM_SZ) < 0)
        return -1;
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, MEM_SZ, UVA_BASE, 0 };
    vu_direct_send(src, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), fd);
    for (uint32_t q = 0; q < 2; q++) {
        uint64_t ring = UVA_BASE + 0x10000ull * (q + 1), idx = q;
        struct vu_vring_state s = { q, 256 };
        vu_direct_send(src, VHOST_USER_SET_VRING_NUM, &s, sizeof(s), -1);
        struct vu_vring_addr a = { .index = q, .desc = ring, .avail = ring + 0x1000, .used = ring + 0x2000 };
        vu_direct_send(src, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), -1);
        vu_direct_send(src, VHOST_USER_SET_VRING_CALL, &idx, sizeof(idx), eventfd(0, EFD_CLOEXEC));
        vu_direct_send(src, VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), eventfd(0, EFD_CLOEXEC));
        s.num = 1;
        vu_direct_send(src, VHOST_USER_SET_VRING_ENABLE, &s, sizeof(s), -1);
    }
    vu_backend_export(src, base, &kept);
    return kept.conn >= 0 && kept.region[0] >= 0 ? 0 : -1;
}

static int copy_fd(int fd, bool leave_out)
{
    return fd < 0 || leave_out ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (setup_once() < 0)
        abort();
    /* Counted per input, not once: libFuzzer itself opens fds between
     * inputs (the llvm-symbolizer pipes behind a NEW_FUNC line stay open),
     * and only the fds this input handles are its to account for. */
    int fds0 = vu_direct_open_fds();
    struct fuzz_in in = { data, size };
    uint8_t flags = fuzz_take8(&in);
    uint8_t rec[VU_STATE_REC_SIZE];
    memcpy(rec, base, sizeof(rec));
    while (in.n >= 3) {
        uint16_t off;
        fuzz_take(&in, &off, sizeof(off));
        rec[off % (VU_STATE_REC_SIZE - 8)] = fuzz_take8(&in);
    }
    if (!(flags & 1)) {   /* reseal: FNV-1a 64 of all but the last 8 bytes */
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < VU_STATE_REC_SIZE - 8; i++)
            h = (h ^ rec[i]) * 0x100000001b3ull;
        memcpy(rec + VU_STATE_REC_SIZE - 8, &h, 8);
    }
    struct vu_state_fds f;
    vu_state_fds_init(&f);
    f.conn = (flags & 0x80) ? eventfd(0, EFD_CLOEXEC) : copy_fd(kept.conn, flags & 2);
    f.region[0] = copy_fd(kept.region[0], flags & 4);
    f.kick[0] = copy_fd(kept.kick[0], flags & 8);
    f.kick[1] = copy_fd(kept.kick[1], flags & 16);
    f.call[0] = copy_fd(kept.call[0], flags & 32);
    f.call[1] = copy_fd(kept.call[1], flags & 64);
    struct vu_backend *be = vu_backend_new(&(struct vu_backend_config){ .name = "fuzz" });
    if (!be)
        abort();
    vu_backend_attach(be, &vu_direct_null_dev, NULL);
    int r = vu_backend_restore(be, rec, sizeof(rec), &f);
    if (r < 0 && (vu_backend_connected(be) || vu_backend_mem(be)->n != 0))
        abort();   /* a refusal must leave the back-end as new */
    vu_backend_free(be);
    if (vu_direct_open_fds() != fds0)
        abort();   /* every fd handed over is consumed or closed */
    return 0;
}
