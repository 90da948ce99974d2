/* vu_backend_export / vu_backend_restore: a backend brought up through
 * vhost-user messages is exported and resumed in a second backend (as a
 * restarted hostd does, with the descriptors dup'ed as the fd store would
 * hand them back); then every kind of damage to the record or its
 * descriptors must be refused cleanly: a negative errno, the backend as new
 * (not connected, no memory, no ring), and no descriptor left open. The
 * mutation sweep recomputes the record's checksum (the last 8 bytes: FNV-1a
 * 64 of the others, vhost_user.h) so the field checks behind it are reached. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "memtable.h"
#include "tap.h"
#include "vhost_user.h"
#include "vu_direct.h"

#define MEM_SZ (1u << 20)
#define UVA_BASE 0x7f3400000000ull
#define RING(q) (0x10000ull * (q + 1)) /* GPA of queue q's descriptor table; avail +4K, used +8K */

static uint8_t *ram;   /* our mapping of the guest memory memfd */

static void set_used_idx(unsigned q, uint16_t v)
{
    memcpy(ram + RING(q) + 0x2000 + 2, &v, 2);
}

static struct vu_backend *backend(void)
{
    struct vu_backend *be = vu_backend_new(&(struct vu_backend_config){ .name = "t" });
    CHECK(be != NULL);
    vu_backend_attach(be, &vu_direct_null_dev, NULL);
    return be;
}

/* A running backend: features, one region, both rings (base 7 while the used
 * index in memory is 3), kick and call eventfds, enabled. */
static struct vu_backend *bring_up(int *peer)
{
    struct vu_backend *be = backend();
    int sp[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
    CHECK(vu_backend_adopt_conn(be, sp[0]) == 0);
    *peer = sp[1];
    uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                 (1ull << VHOST_USER_F_PROTOCOL_FEATURES);
    CHECK(vu_direct_send(be, VHOST_USER_SET_FEATURES, &f, sizeof(f), -1) == 0);
    int fd = memfd_create("vu-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0 && ftruncate(fd, MEM_SZ) == 0);
    ram = mmap(NULL, MEM_SZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(ram != MAP_FAILED);
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    t.nregions = 1;
    t.r[0] = (struct vu_region){ 0, MEM_SZ, UVA_BASE, 0 };
    CHECK(vu_direct_send(be, VHOST_USER_SET_MEM_TABLE, &t, 8 + sizeof(t.r[0]), fd) == 0);
    for (uint32_t q = 0; q < 2; q++) {
        set_used_idx(q, 3);
        struct vu_vring_state s = { q, 256 };
        CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_NUM, &s, sizeof(s), -1) == 0);
        s.num = 7;
        CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_BASE, &s, sizeof(s), -1) == 0);
        struct vu_vring_addr a = { .index = q, .desc = UVA_BASE + RING(q), .avail = UVA_BASE + RING(q) + 0x1000,
                                   .used = UVA_BASE + RING(q) + 0x2000 };
        CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), -1) == 0);
        uint64_t idx = q;
        CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_CALL, &idx, sizeof(idx), eventfd(0, EFD_CLOEXEC)) == 0);
        CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_KICK, &idx, sizeof(idx), eventfd(0, EFD_CLOEXEC)) == 0);
        s.num = 1;
        CHECK(vu_direct_send(be, VHOST_USER_SET_VRING_ENABLE, &s, sizeof(s), -1) == 0);
    }
    return be;
}

/* The exported descriptors as the fd store would hand them back (copies). */
static void dup_fds(const struct vu_state_fds *src, struct vu_state_fds *dst)
{
    vu_state_fds_init(dst);
    dst->conn = src->conn >= 0 ? fcntl(src->conn, F_DUPFD_CLOEXEC, 0) : -1;
    for (unsigned i = 0; i < VU_MAX_MEM_SLOTS; i++)
        dst->region[i] = src->region[i] >= 0 ? fcntl(src->region[i], F_DUPFD_CLOEXEC, 0) : -1;
    for (unsigned q = 0; q < VU_MAX_QUEUES; q++) {
        dst->kick[q] = src->kick[q] >= 0 ? fcntl(src->kick[q], F_DUPFD_CLOEXEC, 0) : -1;
        dst->call[q] = src->call[q] >= 0 ? fcntl(src->call[q], F_DUPFD_CLOEXEC, 0) : -1;
        dst->err[q] = src->err[q] >= 0 ? fcntl(src->err[q], F_DUPFD_CLOEXEC, 0) : -1;
    }
}

static uint64_t fnv1a(const uint8_t *b, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void reseal(uint8_t *rec)
{
    uint64_t c = fnv1a(rec, VU_STATE_REC_SIZE - 8);
    memcpy(rec + VU_STATE_REC_SIZE - 8, &c, 8);
}

static bool as_new(struct vu_backend *be)
{
    for (unsigned q = 0; q < 2; q++) {
        const struct virtq *vq = vu_backend_queue(be, q);
        if (vq->started || vq->kick_fd >= 0 || vq->call_fd >= 0 || vq->err_fd >= 0)
            return false;
    }
    return !vu_backend_connected(be) && vu_backend_mem(be)->n == 0;
}

/* restore rec with copies of f into a fresh backend; the result */
static int try_restore(const uint8_t *rec, size_t len, const struct vu_state_fds *f, bool *clean)
{
    struct vu_state_fds g;
    dup_fds(f, &g);
    struct vu_backend *be = backend();
    int r = vu_backend_restore(be, rec, len, &g);
    *clean = r == 0 || as_new(be);
    vu_backend_free(be);
    return r;
}

static void test_roundtrip(void)
{
    int peer;
    struct vu_backend *a = bring_up(&peer);
    uint8_t rec[VU_STATE_REC_SIZE];
    struct vu_state_fds f;
    vu_backend_export(a, rec, &f);
    CHECK(f.conn >= 0 && f.region[0] >= 0 && f.region[1] < 0);
    CHECK(f.kick[0] >= 0 && f.kick[1] >= 0 && f.call[0] >= 0 && f.call[1] >= 0 && f.err[0] < 0);

    /* the old process completed 5 more chains on queue 1 after the record */
    set_used_idx(1, 8);
    struct vu_state_fds g;
    dup_fds(&f, &g);
    struct vu_backend *b = backend();
    CHECK(vu_backend_restore(b, rec, sizeof(rec), &g) == 0);
    CHECK(vu_backend_connected(b) && vu_backend_mem(b)->n == 1 && vu_backend_mem(b)->r[0].size == MEM_SZ);
    for (unsigned q = 0; q < 2; q++) {
        const struct virtq *vq = vu_backend_queue(b, q);
        CHECK(vq->started && vq->enabled && vq->event_idx && !vq->indirect && vq->num == 256);
        CHECK(vq->kick_fd >= 0 && vq->call_fd >= 0 && vq->desc != NULL && vq->used != NULL);
        CHECK(vq->desc_uva == UVA_BASE + RING(q));
        /* avail - used as at the record (7 - 3), from the used index in memory */
        CHECK_EQ(vq->used_idx, q ? 8 : 3);
        CHECK_EQ(vq->last_avail_idx, q ? 12 : 7);
    }
    vu_backend_free(b);
    vu_backend_free(a);
    close(peer);
}

static void test_refusals(void)
{
    int peer;
    struct vu_backend *a = bring_up(&peer);
    uint8_t rec[VU_STATE_REC_SIZE], bad[VU_STATE_REC_SIZE];
    struct vu_state_fds f, g;
    vu_backend_export(a, rec, &f);
    int fds0 = vu_direct_open_fds();
    bool clean;

    memcpy(bad, rec, sizeof(bad));
    bad[40] ^= 1;
    CHECK(try_restore(bad, sizeof(bad), &f, &clean) == -EINVAL && clean);   /* checksum */
    CHECK(try_restore(rec, sizeof(rec) - 1, &f, &clean) == -EINVAL && clean);   /* torn */
    CHECK(try_restore(NULL, 0, &f, &clean) < 0 && clean);

    g = f;
    g.conn = -1;
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) == -EBADF && clean);   /* connection missing */
    int ev = eventfd(0, EFD_CLOEXEC);
    g = f;
    g.conn = ev;
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) < 0 && clean);   /* not a socket */
    g = f;
    g.region[0] = -1;
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) < 0 && clean);   /* region missing */
    g = f;
    g.region[0] = ev;
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) < 0 && clean);   /* region not a memfd */
    int p[2];
    CHECK(pipe(p) == 0);
    g = f;
    g.kick[1] = p[0];
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) == -EBADF && clean);   /* kick not an eventfd */
    g = f;
    g.call[0] = -1;
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) == -EBADF && clean);   /* call missing */
    g = f;
    g.err[0] = ev;
    CHECK(try_restore(rec, sizeof(rec), &g, &clean) == -EINVAL && clean);   /* one the record does not name */
    close(p[0]);
    close(p[1]);
    close(ev);

    /* every single-byte change that keeps a valid checksum: accepted or
     * refused cleanly, never a crash, never a leak */
    unsigned refused = 0, accepted = 0;
    for (unsigned off = 0; off < VU_STATE_REC_SIZE - 8; off++) {
        for (unsigned v = 0; v < 2; v++) {
            memcpy(bad, rec, sizeof(bad));
            bad[off] = v ? 0xff : (uint8_t)(bad[off] + 1);
            reseal(bad);
            int r = try_restore(bad, sizeof(bad), &f, &clean);
            if (!clean)
                tap_diag("byte %u = 0x%02x: refused (%d) but the backend is not as new", off, bad[off], r);
            CHECK(clean);
            r < 0 ? refused++ : accepted++;
        }
    }
    tap_diag("mutations: %u refused, %u accepted (e.g. other ring addresses inside guest memory)", refused,
             accepted);
    CHECK(refused > 0);
    CHECK_EQ(vu_direct_open_fds(), fds0);

    /* a backend that had no front-end: nothing to resume */
    struct vu_backend *idle = backend();
    vu_state_fds_init(&g);
    vu_backend_export(idle, bad, &g);
    CHECK(g.conn < 0);
    CHECK(try_restore(bad, sizeof(bad), &g, &clean) == -ENODATA && clean);
    vu_backend_free(idle);
    vu_backend_free(a);
    close(peer);
}

int main(void)
{
    log_threshold = LOG_ERROR;   /* thousands of refusals follow, each logged */
    test_roundtrip();
    test_refusals();
    return tap_done();
}
