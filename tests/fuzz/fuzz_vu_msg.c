/* Fuzz the vhost-user server: vu_msg_validate on raw bytes, then a sequence
 * of structure-aware messages (request, flags, size, payload, fds) through
 * the real message handler of one VM. fds are memfds or eventfds made here,
 * so memory-table and ring setup paths run for real. The echo and MDL RPC
 * services are registered, so guest packets placed in the rings by the input
 * reach them through the vsock device (seeds: tests/fuzz/gen_corpus.py).
 * Invariant: no fd outlives the input (every fd hostd received is closed by
 * the disconnect at the end). */
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

#include "hostd.h"
#include "log.h"
#include "vhost_user.h"
#include "vsock.h"
#include "vu_internal.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hostd h;
static struct vm *vm;
static int peer = -1;

static int reconnect(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return -1;
    if (peer >= 0)
        close(peer);
    peer = sv[1];
    return vu_backend_adopt_conn(vm->vu, sv[0]);
}

/* The whole daemon stack for one VM (echo and MDL RPC services included),
 * with no socket: the input is the front-end. */
static int setup_once(void)
{
    if (vm)
        return 0;
    log_threshold = getenv("FUZZ_LOG") ? LOG_DEBUG : -1;
    struct hostd_options o = { .sibling_routing = true, .vm_page_quota = 64, .global_page_quota = 128,
                               .max_vmas = 64 };
    struct vm_config c = { .name = "fuzz", .cid = 3 };
    if (hostd_init(&h, &o) < 0 || hostd_vm_add(&h, &c) < 0)
        return -1;
    vm = h.vms[0];
    return 0;
}

/* fds of the kinds hostd gets from the front-end or makes per connection
 * (memfds and eventfds made here, sockets, timerfds). Others (the sanitizer's
 * symbolizer pipes, ...) appear lazily and stay; they are not counted. */
static int count_fds(bool show)
{
    static const char *const kinds[] = { "/memfd:fuzz_vu", "anon_inode:[eventfd]", "socket:", "anon_inode:[timerfd]" };
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[300], target[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof(target) - 1);
        if (k <= 0)
            continue;
        target[k] = 0;
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
            if (!strncmp(target, kinds[i], strlen(kinds[i]))) {
                n++;
                if (show)
                    fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
            }
    }
    closedir(d);
    return n;
}

/* The size a well-formed request of this type has (for steering). */
static uint32_t natural_size(uint32_t req, unsigned nreg)
{
    switch (req) {
    case VHOST_USER_SET_FEATURES:
    case VHOST_USER_SET_PROTOCOL_FEATURES:
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE:
        return 8;
    case VHOST_USER_SET_VRING_ADDR:
        return sizeof(struct vu_vring_addr);
    case VHOST_USER_SET_MEM_TABLE:
        return 8 + nreg * (uint32_t)sizeof(struct vu_region);
    case VHOST_USER_ADD_MEM_REG:
    case VHOST_USER_REM_MEM_REG:
        return sizeof(struct vu_mem_reg);
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_SET_CONFIG:
        return sizeof(struct vu_config) + 8;
    case VHOST_USER_SET_LOG_BASE:
        return 16;
    default:
        return 0;
    }
}

#define MEMFD_SIZE 0x20000ull
#define UVA_OFF 0x7f0000000000ull

static int make_memfd(void)
{
    int fd = memfd_create("fuzz_vu", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd >= 0 && (ftruncate(fd, MEMFD_SIZE) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A region that maps (the fuzzer picks which 128K slot of guest memory). */
static void sane_region(struct vu_region *r, uint8_t slot)
{
    r->gpa = (uint64_t)(slot % 8) * MEMFD_SIZE;
    r->size = MEMFD_SIZE;
    r->uva = r->gpa + UVA_OFF;
    r->mmap_offset = 0;
}

static void send_msg(uint32_t req, uint32_t flags, const void *p, uint32_t size, int fd)
{
    struct vu_msg_hdr hdr = { req, flags, size };
    int fds[1] = { fd };
    if (vu_backend_process(vm->vu, &hdr, p, fds, fd >= 0 ? 1 : 0) < 0) {
        vu_backend_disconnect(vm->vu, "fuzz: setup");
        reconnect();
    }
    uint8_t sink[512];
    while (read(peer, sink, sizeof(sink)) > 0) {
    }
}

/* A well-formed start as QEMU does it, so later random messages and kicks hit
 * a running device whose rings live in the fuzzer-controlled memfd. */
static void canned_start(struct fuzz_in *in)
{
    uint64_t f = VU_OFFERED_PROTOCOL_FEATURES;
    send_msg(VHOST_USER_SET_PROTOCOL_FEATURES, 1, &f, 8, -1);
    f = (VU_TRANSPORT_FEATURES | (1ull << VIRTIO_VSOCK_F_SEQPACKET)) & ~(fuzz_take8(in) & 1 ? 0 : (1ull << VIRTIO_RING_F_EVENT_IDX));
    send_msg(VHOST_USER_SET_FEATURES, 1, &f, 8, -1);
    int mfd = make_memfd();
    if (mfd < 0)
        return;
    /* Ring contents, from the input as patches (offset, length, bytes) over
     * the first 8K of the region; the rest stays zero. Each queue q has its
     * descriptor table at q*0x1000, avail at +0x100, used at +0x400; any other
     * address inside the 128K region is fine for buffers. */
    static uint8_t ring[0x2000];
    memset(ring, 0, sizeof(ring));
    unsigned npatch = fuzz_take8(in) % 16;
    for (unsigned i = 0; i < npatch; i++) {
        size_t off = (size_t)(fuzz_take8(in) | (fuzz_take8(in) << 8)) % sizeof(ring);
        size_t len = fuzz_take8(in);
        if (len > sizeof(ring) - off)
            len = sizeof(ring) - off;
        fuzz_take(in, ring + off, len);
    }
    if (pwrite(mfd, ring, sizeof(ring), 0) < 0) { /* ignore */ }
    struct vu_mem_reg m = { 0, { 0, MEMFD_SIZE, UVA_OFF, 0 } };
    send_msg(VHOST_USER_ADD_MEM_REG, 1 | VHOST_USER_NEED_REPLY_MASK, &m, sizeof(m), mfd);
    for (uint32_t q = 0; q < VSOCK_NUM_VQ; q++) {
        struct vu_vring_state s = { q, 16 };
        send_msg(VHOST_USER_SET_VRING_NUM, 1, &s, sizeof(s), -1);
        struct vu_vring_addr a = { q, 0, UVA_OFF + q * 0x1000, UVA_OFF + q * 0x1000 + 0x400,
                                   UVA_OFF + q * 0x1000 + 0x100, 0 };
        send_msg(VHOST_USER_SET_VRING_ADDR, 1, &a, sizeof(a), -1);
        uint64_t v = q;
        send_msg(VHOST_USER_SET_VRING_KICK, 1, &v, 8, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        send_msg(VHOST_USER_SET_VRING_CALL, 1, &v, 8, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        s.num = 1;
        send_msg(VHOST_USER_SET_VRING_ENABLE, 1, &s, sizeof(s), -1);
    }
}

static void run_one(struct fuzz_in *in)
{
    uint8_t sel = fuzz_take8(in);
    struct vu_msg_hdr hdr;
    hdr.request = fuzz_take8(in) % 40;
    hdr.flags = (sel & 1) ? fuzz_take8(in) : (VHOST_USER_VERSION | ((sel & 2) ? VHOST_USER_NEED_REPLY_MASK : 0));
    unsigned nreg = fuzz_take8(in) % 9;
    if (sel & 0x80)
        hdr.size = (uint32_t)(fuzz_take8(in) | (fuzz_take8(in) << 8)) % (VHOST_USER_MAX_PAYLOAD + 64);
    else
        hdr.size = natural_size(hdr.request, nreg);
    if (hdr.size > VHOST_USER_MAX_PAYLOAD)
        hdr.size = VHOST_USER_MAX_PAYLOAD; /* the socket layer refuses larger ones before this */

    static uint8_t payload[VHOST_USER_MAX_PAYLOAD];
    fuzz_take(in, payload, hdr.size);

    unsigned nfds = 0;
    bool mem_req = hdr.request == VHOST_USER_SET_MEM_TABLE || hdr.request == VHOST_USER_ADD_MEM_REG ||
                   hdr.request == VHOST_USER_REM_MEM_REG;
    if (sel & 0x40)
        nfds = fuzz_take8(in) % (VHOST_USER_MAX_FDS + 1);
    else if (hdr.request == VHOST_USER_SET_MEM_TABLE)
        nfds = nreg;
    else if (hdr.request == VHOST_USER_ADD_MEM_REG)
        nfds = 1;
    else if (hdr.request >= VHOST_USER_SET_VRING_KICK && hdr.request <= VHOST_USER_SET_VRING_ERR && hdr.size == 8 &&
             !(payload[1] & 1))
        nfds = 1;

    /* steer toward well-formed content */
    if (!(sel & 0x20)) {
        if (hdr.request == VHOST_USER_SET_MEM_TABLE && hdr.size >= 8) {
            memcpy(payload, &nreg, 4);
            for (unsigned i = 0; i < nreg && 8 + (i + 1) * sizeof(struct vu_region) <= hdr.size; i++) {
                struct vu_region r;
                sane_region(&r, payload[8 + i * sizeof(r)]);
                memcpy(payload + 8 + i * sizeof(r), &r, sizeof(r));
            }
        } else if ((hdr.request == VHOST_USER_ADD_MEM_REG || hdr.request == VHOST_USER_REM_MEM_REG) &&
                   hdr.size == sizeof(struct vu_mem_reg)) {
            struct vu_region r;
            sane_region(&r, payload[8]);
            memcpy(payload + 8, &r, sizeof(r));
        } else if (hdr.request == VHOST_USER_SET_VRING_ADDR && hdr.size == sizeof(struct vu_vring_addr)) {
            struct vu_vring_addr a;
            memcpy(&a, payload, sizeof(a));
            a.index %= 3;
            a.desc = UVA_OFF + (a.desc % (8 * MEMFD_SIZE)) / 16 * 16;
            a.avail = UVA_OFF + (a.avail % (8 * MEMFD_SIZE)) / 2 * 2;
            a.used = UVA_OFF + (a.used % (8 * MEMFD_SIZE)) / 4 * 4;
            memcpy(payload, &a, sizeof(a));
        } else if ((hdr.request == VHOST_USER_GET_CONFIG || hdr.request == VHOST_USER_SET_CONFIG) &&
                   hdr.size >= sizeof(struct vu_config)) {
            struct vu_config c;
            memcpy(&c, payload, sizeof(c));
            c.size = hdr.size - (uint32_t)sizeof(c);
            c.offset %= 10;
            memcpy(payload, &c, sizeof(c));
        } else if (hdr.request == VHOST_USER_SET_FEATURES && hdr.size == 8) {
            uint64_t f;
            memcpy(&f, payload, 8);
            f &= VU_TRANSPORT_FEATURES | (1ull << VIRTIO_VSOCK_F_SEQPACKET);
            memcpy(payload, &f, 8);
        } else if (hdr.request == VHOST_USER_SET_PROTOCOL_FEATURES && hdr.size == 8) {
            uint64_t f;
            memcpy(&f, payload, 8);
            f &= VU_OFFERED_PROTOCOL_FEATURES;
            memcpy(payload, &f, 8);
        } else if (hdr.size == 8 && hdr.request >= VHOST_USER_SET_VRING_NUM && hdr.request <= VHOST_USER_SET_VRING_ERR) {
            payload[0] %= 3; /* vring index mostly valid */
            if (hdr.request == VHOST_USER_SET_VRING_NUM) {
                uint32_t num = 1u << (payload[4] % 16);
                memcpy(payload + 4, &num, 4);
            }
        }
    }

    int fds[VHOST_USER_MAX_FDS];
    for (unsigned i = 0; i < nfds; i++)
        fds[i] = mem_req ? make_memfd() : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    for (unsigned i = 0; i < nfds; i++)
        if (fds[i] < 0) { /* out of fds: give up on this message cleanly */
            for (unsigned j = 0; j < nfds; j++)
                if (fds[j] >= 0)
                    close(fds[j]);
            return;
        }

    int r = vu_backend_process(vm->vu, &hdr, payload, fds, nfds);
    /* drain replies */
    uint8_t sink[8192];
    while (peer >= 0 && read(peer, sink, sizeof(sink)) > 0) {
    }
    if (r < 0) {
        vu_backend_disconnect(vm->vu, "fuzz: protocol violation");
        reconnect();
    }
    /* The guest makes one more avail entry visible (rx: sel bit 2 set, tx:
     * clear), as the canned start laid the rings out; the ring contents came
     * with the input. Lets a seed wait for the RESPONSE before sending data. */
    if (sel & 0x08) {
        uint64_t gpa = (sel & 0x04 ? VSOCK_VQ_RX : VSOCK_VQ_TX) * 0x1000ull + 0x100 + 2;
        uint16_t *idx = memtable_gpa_to_hva(vu_backend_mem(vm->vu), gpa, sizeof(*idx));
        if (idx)
            __atomic_store_n(idx, (uint16_t)(*idx + 1), __ATOMIC_RELEASE);
    }
    /* a guest kick on each ring now and then */
    if (sel & 0x10)
        for (unsigned q = 0; q < VSOCK_NUM_VQ; q++)
            if (virtq_ready(vu_backend_queue(vm->vu, q)))
                vsock_dev_queue_event(vm->vsock, q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int base_fds = -1;
    if (setup_once() < 0)
        return 0;
    if (base_fds < 0)
        base_fds = count_fds(false);
    /* raw bytes straight into the validator */
    if (size >= sizeof(struct vu_msg_hdr)) {
        struct vu_msg_hdr hdr;
        memcpy(&hdr, data, sizeof(hdr));
        size_t avail = size - sizeof(hdr);
        if (hdr.size <= avail)
            (void)vu_msg_validate(&hdr, data + sizeof(hdr), (unsigned)(data[0] % 10));
    }
    if (reconnect() < 0)
        return 0;
    struct fuzz_in in = { data, size };
    if (fuzz_take8(&in) & 1)
        canned_start(&in);
    for (int i = 0; i < 64 && in.n; i++)
        run_one(&in);
    vu_backend_disconnect(vm->vu, "fuzz: end of input");
    close(peer);
    peer = -1;
    if (base_fds >= 0 && count_fds(false) > base_fds) {
        fprintf(stderr, "fuzz_vu_msg: fd leak: %d fds at the start, now:\n", base_fds);
        count_fds(true);
        abort();
    }
    return 0;
}
