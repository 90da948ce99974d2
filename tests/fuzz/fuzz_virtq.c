/* Fuzz the split virtqueue parser: the input becomes a descriptor table, an
 * avail ring and buffer/indirect-table memory inside a memfd-backed memtable;
 * virtq_pop/virtq_push/virtq_notify then run against it repeatedly. */
#include <endian.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "memtable.h"
#include "virtq.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GPA 0x10000ull
#define MEMSZ 0x10000ull
#define UVA_OFF 0x1000000ull
#define DESC_OFF 0x0000
#define AVAIL_OFF 0x1000
#define USED_OFF 0x2000
#define BUF_OFF 0x3000

static struct memtable mt;
static uint8_t *mem;
static int call_fd = -1;

static int setup_once(void)
{
    if (mem)
        return 0;
    log_threshold = LOG_ERROR;
    memtable_init(&mt);
    int fd = memfd_create("fuzz_virtq", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, MEMSZ) < 0)
        return -1;
    if (memtable_add(&mt, GPA, MEMSZ, GPA + UVA_OFF, 0, fd) < 0)
        return -1;
    mem = memtable_gpa_to_hva(&mt, GPA, MEMSZ);
    call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return mem ? 0 : -1;
}

/* Ring fields are little-endian in guest memory: the input is read as
 * little-endian too, steered in host order and stored back little-endian. */
static void desc_from_le(struct vring_desc *d)
{
    d->addr = le64toh(d->addr);
    d->len = le32toh(d->len);
    d->flags = le16toh(d->flags);
    d->next = le16toh(d->next);
}

static void desc_to_le(struct vring_desc *d)
{
    d->addr = htole64(d->addr);
    d->len = htole32(d->len);
    d->flags = htole16(d->flags);
    d->next = htole16(d->next);
}

/* Most addresses land in guest memory so the parser gets past translation. */
static uint64_t steer_addr(uint64_t a)
{
    if (a >> 63)
        return a;
    return GPA + (a % MEMSZ);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (setup_once() < 0)
        return 0;
    struct fuzz_in in = { data, size };
    memset(mem, 0, MEMSZ);

    uint8_t cfg = fuzz_take8(&in);
    struct virtq vq;
    virtq_init(&vq, 0, &mt);
    vq.num = (uint16_t)(1u << (cfg % 9)); /* 1..256 */
    vq.event_idx = cfg & 0x10;
    vq.indirect = cfg & 0x20;
    vq.desc_uva = GPA + DESC_OFF + UVA_OFF;
    vq.avail_uva = GPA + AVAIL_OFF + UVA_OFF;
    vq.used_uva = GPA + USED_OFF + UVA_OFF;
    if (cfg & 0x40)
        vq.desc_uva += fuzz_take8(&in); /* sometimes misaligned or shifted */
    vq.call_fd = call_fd;
    if (virtq_map_rings(&vq) < 0) {
        vq.call_fd = -1;
        return 0;
    }
    vq.enabled = vq.started = true;
    vq.last_avail_idx = (uint16_t)(fuzz_take8(&in) | (fuzz_take8(&in) << 8));

    /* descriptor table */
    for (unsigned i = 0; i < vq.num && in.n; i++) {
        struct vring_desc d;
        fuzz_take(&in, &d, sizeof(d));
        desc_from_le(&d);
        d.addr = steer_addr(d.addr);
        if (!(cfg & 0x80)) {
            d.next %= (uint16_t)(vq.num + 1);
            d.len %= 0x1000;
            d.flags &= 7;
        }
        desc_to_le(&d);
        memcpy(mem + DESC_OFF + i * sizeof(d), &d, sizeof(d));
    }
    /* avail ring: flags, idx, entries, used_event */
    uint16_t aflags = fuzz_take8(&in) & 1;
    uint16_t aidx = (uint16_t)(vq.last_avail_idx + (fuzz_take8(&in) % (vq.num + 2u)));
    aflags = htole16(aflags);
    aidx = htole16(aidx);
    memcpy(mem + AVAIL_OFF, &aflags, 2);
    memcpy(mem + AVAIL_OFF + 2, &aidx, 2);
    for (unsigned i = 0; i <= vq.num; i++) {
        uint16_t v = fuzz_take8(&in);
        if (!(cfg & 0x80))
            v %= (uint16_t)(vq.num + 1);
        v = htole16(v);
        memcpy(mem + AVAIL_OFF + 4 + 2 * i, &v, 2);
    }
    /* the rest: buffer memory, where indirect tables may live */
    size_t rest = in.n < MEMSZ - BUF_OFF ? in.n : MEMSZ - BUF_OFF;
    memcpy(mem + BUF_OFF, in.p, rest);
    for (size_t off = BUF_OFF; off + 16 <= BUF_OFF + rest; off += 16) {
        struct vring_desc d;
        memcpy(&d, mem + off, sizeof(d));
        desc_from_le(&d);
        d.addr = steer_addr(d.addr);
        if (!(cfg & 0x80)) {
            d.len %= 0x1000;
            d.flags &= 7;
            d.next %= 80;
        }
        desc_to_le(&d);
        memcpy(mem + off, &d, sizeof(d));
    }

    uint8_t scratch[512];
    memset(scratch, 0x5a, sizeof(scratch));
    for (int round = 0; round < 64; round++) {
        struct virtq_elem e;
        int r = virtq_pop(&vq, &e);
        if (r < 0)
            break;
        if (r == 0) {
            virtq_set_notify(&vq, true);
            if (!virtq_has_avail(&vq))
                break;
            continue;
        }
        /* touch every byte the element claims, as the device would */
        size_t got = iov_to_buf(e.iov, e.n_out, 0, scratch, sizeof(scratch));
        size_t off = 0;
        while (off < e.in_len) {
            size_t w = iov_from_buf(e.iov + e.n_out, e.n_in, off, scratch, sizeof(scratch));
            if (!w)
                break;
            off += w;
        }
        if (round & 1) {
            virtq_unpop(&vq);
            round++;
            continue;
        }
        virtq_push(&vq, &e, (uint32_t)(got * 3 + round));
        virtq_notify(&vq);
    }
    uint64_t v;
    if (read(call_fd, &v, sizeof(v)) < 0) { /* drain */ }
    vq.call_fd = -1; /* shared across inputs: not closed by reset */
    virtq_reset(&vq);
    return 0;
}
