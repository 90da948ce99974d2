/* virtq: split rings laid out in a memfd-backed memtable, driven as a guest
 * driver would, including malformed rings. */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memtable.h"
#include "tap.h"
#include "virtq.h"

#define GPA_BASE 0x100000ull
#define MEM_SIZE 0x100000ull
#define UVA_OFF 0x7f0000000000ull /* QEMU address = GPA + UVA_OFF */
#define NUM 8
#define DESC_GPA (GPA_BASE + 0x0000)
#define AVAIL_GPA (GPA_BASE + 0x1000)
#define USED_GPA (GPA_BASE + 0x2000)
#define BUF_GPA (GPA_BASE + 0x10000)
#define IND_GPA (GPA_BASE + 0x8000)

static struct memtable mt;
static struct virtq vq;

static void *g2h(uint64_t gpa) { return memtable_gpa_to_hva(&mt, gpa, 1); }
static struct vring_desc *desc_tab(void) { return g2h(DESC_GPA); }
static uint16_t *avail_w(unsigned i) { return (uint16_t *)g2h(AVAIL_GPA) + i; } /* 0 flags, 1 idx, 2+ ring */
static uint16_t *used_w(unsigned i) { return (uint16_t *)g2h(USED_GPA) + i; }  /* 0 flags, 1 idx */
static struct vring_used_elem *used_elem(unsigned i) { return (struct vring_used_elem *)((uint8_t *)g2h(USED_GPA) + 4 + 8 * i); }
static uint16_t *used_event(void) { return avail_w(2 + NUM); }
static uint16_t *avail_event(void) { return (uint16_t *)((uint8_t *)g2h(USED_GPA) + 4 + 8 * NUM); }
/* ring fields are little-endian in guest memory; the test reads and writes
 * them as the driver does */
static uint16_t rd(const uint16_t *p) { return le16toh(*p); }
static void wr(uint16_t *p, uint16_t v) { *p = htole16(v); }

static void set_desc(struct vring_desc *t, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    struct vring_desc d = { htole64(addr), htole32(len), htole16(flags), htole16(next) };
    memcpy(&t[i], &d, sizeof(d));
}

/* driver side: make head available */
static void post(uint16_t head)
{
    uint16_t idx = rd(avail_w(1));
    wr(avail_w(2 + (idx % NUM)), head);
    wr(avail_w(1), (uint16_t)(idx + 1));
}

static void setup(bool event_idx, bool indirect)
{
    memset(g2h(GPA_BASE), 0, 0x3000);
    virtq_reset(&vq);
    vq.num = NUM;
    vq.desc_uva = DESC_GPA + UVA_OFF;
    vq.avail_uva = AVAIL_GPA + UVA_OFF;
    vq.used_uva = USED_GPA + UVA_OFF;
    vq.event_idx = event_idx;
    vq.indirect = indirect;
    int r = virtq_map_rings(&vq);
    if (r != 0)
        tap_diag("map_rings failed %d", r);
    vq.enabled = vq.started = true;
}

static void test_normal_chain(void)
{
    setup(false, false);
    struct virtq_elem e;
    CHECK(virtq_ready(&vq));
    CHECK(!virtq_has_avail(&vq));
    CHECK(virtq_pop(&vq, &e) == 0);

    memcpy(g2h(BUF_GPA), "hello world 1234", 16);
    set_desc(desc_tab(), 0, BUF_GPA, 16, VRING_DESC_F_NEXT, 3);
    set_desc(desc_tab(), 3, BUF_GPA + 0x100, 0, VRING_DESC_F_NEXT, 5); /* zero length: skipped */
    set_desc(desc_tab(), 5, BUF_GPA + 0x1000, 32, VRING_DESC_F_WRITE, 0);
    post(0);
    CHECK(virtq_has_avail(&vq));
    CHECK(virtq_pop(&vq, &e) == 1);
    CHECK(e.head == 0 && e.n_out == 1 && e.n_in == 1);
    CHECK(e.out_len == 16 && e.in_len == 32);
    char buf[32];
    CHECK(iov_to_buf(e.iov, e.n_out, 0, buf, sizeof(buf)) == 16 && memcmp(buf, "hello world 1234", 16) == 0);
    CHECK(iov_to_buf(e.iov, e.n_out, 6, buf, 5) == 5 && memcmp(buf, "world", 5) == 0);
    CHECK(iov_from_buf(e.iov + e.n_out, e.n_in, 30, "xyz", 3) == 2); /* bounded */
    CHECK(memcmp((char *)g2h(BUF_GPA + 0x1000) + 30, "xy", 2) == 0);
    CHECK(!virtq_has_avail(&vq));
    CHECK(virtq_pop(&vq, &e) == 0);

    virtq_push(&vq, &e, 10);
    CHECK(rd(used_w(1)) == 1);
    CHECK(le32toh(used_elem(0)->id) == 0 && le32toh(used_elem(0)->len) == 10);
    virtq_push(&vq, &e, 1000); /* clamped to the writable length */
    CHECK(rd(used_w(1)) == 2 && le32toh(used_elem(1)->len) == 32);
    CHECK(vq.pops == 1 && vq.pushes == 2);

    /* unpop returns the element */
    post(5);
    CHECK(virtq_pop(&vq, &e) == 1 && e.head == 5 && e.n_out == 0 && e.n_in == 1);
    virtq_unpop(&vq);
    CHECK(virtq_has_avail(&vq));
    CHECK(virtq_pop(&vq, &e) == 1 && e.head == 5);

    /* index wrap-around of the 16-bit avail index */
    setup(false, false);
    vq.last_avail_idx = 0xffff;
    wr(avail_w(1), 0xffff);
    set_desc(desc_tab(), 1, BUF_GPA, 8, 0, 0);
    post(1);
    post(1);
    CHECK(rd(avail_w(1)) == 1);
    CHECK(virtq_pop(&vq, &e) == 1 && virtq_pop(&vq, &e) == 1 && virtq_pop(&vq, &e) == 0);
}

static void expect_broken(const char *what)
{
    struct virtq_elem e;
    int r = virtq_pop(&vq, &e);
    tap_diag("(%s)", what);
    CHECK(r == -EIO);
    CHECK(vq.broken);
    CHECK(virtq_pop(&vq, &e) == -EIO); /* stays broken */
    CHECK(!virtq_ready(&vq));
}

static void test_malformed(void)
{
    setup(false, false);
    set_desc(desc_tab(), 0, BUF_GPA, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
    set_desc(desc_tab(), 1, BUF_GPA + 16, 16, 0, 0);
    post(0);
    expect_broken("readable after writable");

    setup(false, false);
    set_desc(desc_tab(), 0, BUF_GPA, 16, VRING_DESC_F_NEXT, 1);
    set_desc(desc_tab(), 1, BUF_GPA, 16, VRING_DESC_F_NEXT, 0);
    post(0);
    expect_broken("loop");

    setup(false, false);
    set_desc(desc_tab(), 2, BUF_GPA, 16, VRING_DESC_F_NEXT, 2);
    post(2);
    expect_broken("self loop");

    setup(false, false);
    set_desc(desc_tab(), 0, BUF_GPA, 16, VRING_DESC_F_NEXT, NUM);
    post(0);
    expect_broken("next out of range");

    setup(false, false);
    post(NUM);
    expect_broken("head out of range");

    setup(false, false);
    set_desc(desc_tab(), 0, BUF_GPA, 16, 0, 0);
    wr(avail_w(1), NUM + 1);
    expect_broken("avail idx jumped more than num");

    setup(false, false);
    wr(avail_w(1), NUM); /* exactly num ahead is legal */
    struct virtq_elem e;
    CHECK(virtq_pop(&vq, &e) == 1);

    setup(false, false);
    set_desc(desc_tab(), 0, GPA_BASE + MEM_SIZE - 8, 16, 0, 0);
    post(0);
    expect_broken("buffer crosses end of memory");

    setup(false, false);
    set_desc(desc_tab(), 0, 0x10, 16, 0, 0);
    post(0);
    expect_broken("buffer outside memory");

    setup(false, false);
    set_desc(desc_tab(), 0, UINT64_MAX - 4, 16, 0, 0);
    post(0);
    expect_broken("buffer address wraps");

    setup(false, false);
    set_desc(desc_tab(), 0, IND_GPA, 32, VRING_DESC_F_INDIRECT, 0);
    post(0);
    expect_broken("indirect not negotiated");
}

static void test_indirect(void)
{
    struct virtq_elem e;
    struct vring_desc *ind = g2h(IND_GPA);

    setup(false, true);
    set_desc(ind, 0, BUF_GPA, 44, VRING_DESC_F_NEXT, 2);
    set_desc(ind, 2, BUF_GPA + 64, 100, VRING_DESC_F_NEXT, 1);
    set_desc(ind, 1, BUF_GPA + 0x1000, 200, VRING_DESC_F_WRITE, 0);
    set_desc(desc_tab(), 4, IND_GPA, 3 * 16, VRING_DESC_F_INDIRECT, 0);
    post(4);
    CHECK(virtq_pop(&vq, &e) == 1);
    CHECK(e.head == 4 && e.n_out == 2 && e.n_in == 1 && e.out_len == 144 && e.in_len == 200);

    setup(false, true);
    set_desc(desc_tab(), 4, IND_GPA, 3 * 16 + 1, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("indirect length not a multiple of 16");

    setup(false, true);
    set_desc(desc_tab(), 4, IND_GPA, 0, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("indirect length 0");

    setup(false, true);
    set_desc(desc_tab(), 4, GPA_BASE + MEM_SIZE - 16, 32, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("indirect table crosses end of memory");

    setup(false, true);
    set_desc(ind, 0, IND_GPA + 0x100, 16, VRING_DESC_F_INDIRECT, 0);
    set_desc(desc_tab(), 4, IND_GPA, 16, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("nested indirect");

    setup(false, true);
    set_desc(ind, 0, BUF_GPA, 1, VRING_DESC_F_NEXT, 1);
    set_desc(ind, 1, BUF_GPA, 1, VRING_DESC_F_NEXT, 0);
    set_desc(desc_tab(), 4, IND_GPA, 2 * 16, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("loop inside indirect table");

    setup(false, true);
    set_desc(ind, 0, BUF_GPA, 1, VRING_DESC_F_NEXT, 2);
    set_desc(desc_tab(), 4, IND_GPA, 2 * 16, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("next beyond indirect table");

    setup(false, true);
    set_desc(desc_tab(), 0, BUF_GPA, 8, VRING_DESC_F_NEXT, 4);
    set_desc(ind, 0, BUF_GPA, 8, 0, 0);
    set_desc(desc_tab(), 4, IND_GPA, 16, VRING_DESC_F_INDIRECT, 0);
    post(0);
    expect_broken("indirect in the middle of a chain");

    /* too many buffers for one element */
    setup(false, true);
    for (unsigned i = 0; i < VIRTQ_MAX_SG + 1; i++)
        set_desc(ind, i, BUF_GPA + i, 1, i < VIRTQ_MAX_SG ? VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
    set_desc(desc_tab(), 4, IND_GPA, (VIRTQ_MAX_SG + 1) * 16, VRING_DESC_F_INDIRECT, 0);
    post(4);
    expect_broken("chain longer than VIRTQ_MAX_SG");

    setup(false, true);
    for (unsigned i = 0; i < VIRTQ_MAX_SG; i++)
        set_desc(ind, i, BUF_GPA + i, 1, i + 1 < VIRTQ_MAX_SG ? VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
    set_desc(desc_tab(), 4, IND_GPA, VIRTQ_MAX_SG * 16, VRING_DESC_F_INDIRECT, 0);
    post(4);
    CHECK(virtq_pop(&vq, &e) == 1 && e.n_out == VIRTQ_MAX_SG);
}

static uint64_t read_call(int efd)
{
    uint64_t v = 0;
    if (read(efd, &v, sizeof(v)) != sizeof(v))
        return 0;
    return v;
}

static void test_notify(void)
{
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct virtq_elem e;

    /* without EVENT_IDX: honour NO_INTERRUPT */
    setup(false, false);
    vq.call_fd = dup(efd);
    set_desc(desc_tab(), 0, BUF_GPA, 8, VRING_DESC_F_WRITE, 0);
    post(0);
    CHECK(virtq_pop(&vq, &e) == 1);
    virtq_push(&vq, &e, 8);
    virtq_notify(&vq);
    CHECK(read_call(efd) == 1);
    wr(avail_w(0), VRING_AVAIL_F_NO_INTERRUPT);
    virtq_notify(&vq);
    CHECK(read_call(efd) == 0);
    virtq_set_notify(&vq, false);
    CHECK(rd(used_w(0)) & VRING_USED_F_NO_NOTIFY);
    virtq_set_notify(&vq, true);
    CHECK(!(rd(used_w(0)) & VRING_USED_F_NO_NOTIFY));

    /* EVENT_IDX: vring_need_event with used_event */
    setup(true, false);
    vq.call_fd = dup(efd);
    set_desc(desc_tab(), 0, BUF_GPA, 8, VRING_DESC_F_WRITE, 0);
    for (int i = 0; i < 4; i++)
        post(0);
    CHECK(virtq_pop(&vq, &e) == 1);
    CHECK(rd(avail_event()) == 1); /* device asks to be kicked after the next entry */
    virtq_push(&vq, &e, 8);     /* used idx 1 */
    wr(used_event(), 0);
    virtq_notify(&vq);          /* first notify always goes */
    CHECK(read_call(efd) == 1);
    virtq_notify(&vq);          /* nothing new used */
    CHECK(read_call(efd) == 0);
    CHECK(virtq_pop(&vq, &e) == 1);
    virtq_push(&vq, &e, 8);     /* used idx 2; driver wants an interrupt after idx 5 only */
    wr(used_event(), 5);
    virtq_notify(&vq);
    CHECK(read_call(efd) == 0);
    CHECK(virtq_pop(&vq, &e) == 1);
    virtq_push(&vq, &e, 8);     /* used idx 3; driver now wants one once idx passes 2 */
    wr(used_event(), 2);
    virtq_notify(&vq);
    CHECK(read_call(efd) == 1);
    /* set_notify(true) publishes the current avail idx as avail_event */
    wr(avail_event(), 0);
    virtq_set_notify(&vq, true);
    CHECK(rd(avail_event()) == 4);

    /* no call fd: nothing happens, no crash */
    setup(true, false);
    virtq_notify(&vq);
    close(efd);
}

static void test_mapping(void)
{
    struct virtq_elem e;
    setup(false, false);
    vq.desc_uva = DESC_GPA; /* a GPA, not a QEMU address */
    CHECK(virtq_map_rings(&vq) == -EFAULT);
    CHECK(!virtq_ready(&vq));
    CHECK(virtq_pop(&vq, &e) == 0);

    setup(false, false);
    vq.used_uva = USED_GPA + UVA_OFF + 2; /* misaligned */
    CHECK(virtq_map_rings(&vq) == -EFAULT);

    setup(false, false);
    vq.used_uva = GPA_BASE + MEM_SIZE - 8 + UVA_OFF; /* used ring crosses end */
    CHECK(virtq_map_rings(&vq) == -EFAULT);

    setup(false, false);
    vq.num = 3; /* not a power of two */
    CHECK(virtq_map_rings(&vq) == -EFAULT);

    /* a memory table change invalidates the pointers until remapped */
    setup(false, false);
    mt.generation++;
    CHECK(!virtq_ready(&vq));
    set_desc(desc_tab(), 0, BUF_GPA, 8, 0, 0);
    post(0);
    CHECK(virtq_pop(&vq, &e) == 0);
    CHECK(virtq_map_rings(&vq) == 0);
    CHECK(virtq_pop(&vq, &e) == 1);

    /* not enabled / not started: not ready */
    setup(false, false);
    vq.enabled = false;
    post(0);
    CHECK(virtq_pop(&vq, &e) == 0);
}

/* A buffer crossing from one region into a GPA-adjacent one is split. */
static void test_split_regions(void)
{
    struct memtable m2;
    memtable_init(&m2);
    int fa = memfd_create("a", MFD_CLOEXEC), fb = memfd_create("b", MFD_CLOEXEC);
    CHECK(ftruncate(fa, 0x10000) == 0 && ftruncate(fb, 0x10000) == 0);
    CHECK(memtable_add(&m2, 0x0, 0x10000, 0x500000, 0, fa) == 0);
    CHECK(memtable_add(&m2, 0x10000, 0x10000, 0x900000, 0, fb) == 0);
    struct virtq q;
    virtq_init(&q, 1, &m2);
    q.num = 4;
    q.desc_uva = 0x500000;
    q.avail_uva = 0x501000;
    q.used_uva = 0x502000;
    CHECK(virtq_map_rings(&q) == 0);
    q.enabled = q.started = true;
    struct vring_desc *d = memtable_gpa_to_hva(&m2, 0, 64);
    set_desc(d, 0, 0xff00, 0x200, 0, 0);
    uint16_t *av = memtable_gpa_to_hva(&m2, 0x1000, 8);
    av[2] = htole16(0);
    av[1] = htole16(1);
    struct virtq_elem e;
    CHECK(virtq_pop(&q, &e) == 1);
    CHECK(e.n_out == 2 && e.iov[0].iov_len == 0x100 && e.iov[1].iov_len == 0x100 && e.out_len == 0x200);
    CHECK(e.iov[1].iov_base == memtable_gpa_to_hva(&m2, 0x10000, 1));
    virtq_reset(&q);
    memtable_clear(&m2);
}

int main(void)
{
    memtable_init(&mt);
    int fd = memfd_create("test_virtq", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, MEM_SIZE) < 0 || memtable_add(&mt, GPA_BASE, MEM_SIZE, GPA_BASE + UVA_OFF, 0, fd) < 0) {
        tap_check(false, "setup: guest memory");
        return tap_done();
    }
    virtq_init(&vq, 0, &mt);
    test_normal_chain();
    test_malformed();
    test_indirect();
    test_notify();
    test_mapping();
    test_split_regions();
    virtq_reset(&vq);
    memtable_clear(&mt);
    return tap_done();
}
