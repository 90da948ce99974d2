/* mdlmap-agent mapbench: MDL map/unmap round trips against hostd, next to
 * echo round trips of the same frame sizes over the same vsock transport.
 *
 * For each --bytes size (default 4K, 64K and 1M): allocate and touch an
 * anonymous buffer, IoAllocateMdl + MmProbeAndLockPages once, then K times
 * MmMapLockedPagesSpecifyCache(KernelMode) + MmUnmapLockedPages (two RPCs to
 * hostd, CID 2 port 1100), and, on one connection to the echo service (CID 2
 * port 7), K pairs of request/response exchanges whose sizes are those of the
 * Map and Unmap frames (each exchange sends max(request, response) bytes and
 * reads as many back): the transport floor under the RPCs. The two run in
 * alternating blocks of K/10 so that drift affects both alike.
 *
 * Prints one line per size (parsed by bench/mdl_rpc_bench.sh):
 *   MAPBENCH bytes=N pages=P vmas=V iters=K lock_us=.. map_us=.. unmap_us=..
 *     pairs_per_s=.. rpc_per_s=.. echo_pairs_per_s=.. echo_rtt_us=..
 *     map_frames=REQ/RESP unmap_frames=REQ/RESP overhead_us=..
 * then a table. Exit: 0 ok, 1 a lock/map/unmap/echo failed, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "agent_util.h"
#include "frame.h"
#include "mdlmap.h"
#include "wdm_compat.h"

#define MAX_SIZES 8

struct mb_result {
    uint64_t bytes;
    unsigned pages, vmas, iters;
    double lock_us, map_us, unmap_us, pairs_per_s;
    double echo_pairs_per_s, echo_rtt_us;
    size_t map_req, map_resp, unmap_req, unmap_resp;
};

static void mb_usage(void)
{
    fprintf(stderr, "usage: mdlmap-agent mapbench [--bytes N]... [--iterations K] [--warmup W]\n"
                    "  default sizes 4K 64K 1M, K 1000, W 20\n");
}

static size_t frame_len(const Mdlmap__V1__Envelope *e)
{
    uint8_t *buf;
    size_t len;
    if (frame_encode(e, &buf, &len) < 0)
        return 0;
    free(buf);
    return len;
}

/* Sizes of the four frames of a map/unmap pair, with the real handles. */
static void rpc_frame_sizes(uint64_t mdl_handle, const struct mdl_map_info *mi, uint64_t request_id,
                            struct mb_result *r)
{
    Mdlmap__V1__Envelope e = MDLMAP__V1__ENVELOPE__INIT;
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = request_id;
    Mdlmap__V1__MapRequest mq = MDLMAP__V1__MAP_REQUEST__INIT;
    mq.mdl_handle = mdl_handle;
    mq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    mq.priority = NormalPagePriority;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    e.map = &mq;
    r->map_req = frame_len(&e);
    Mdlmap__V1__MapResponse mr = MDLMAP__V1__MAP_RESPONSE__INIT;
    mr.address = mi->address;
    mr.map_handle = mi->map_handle;
    mr.base_address = mi->base_address;
    mr.page_count = mi->page_count;
    mr.vma_count = mi->vma_count;
    mr.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY;
    e.map_reply = &mr;
    r->map_resp = frame_len(&e);
    Mdlmap__V1__UnmapRequest uq = MDLMAP__V1__UNMAP_REQUEST__INIT;
    uq.map_handle = mi->map_handle;
    uq.address = mi->address;
    uq.mdl_handle = mdl_handle;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP;
    e.unmap = &uq;
    r->unmap_req = frame_len(&e);
    Mdlmap__V1__UnmapResponse ur = MDLMAP__V1__UNMAP_RESPONSE__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY;
    e.unmap_reply = &ur;
    r->unmap_resp = frame_len(&e);
}

static const char *status_text(void)
{
    static char buf[200];
    snprintf(buf, sizeof(buf), "%s: %s", mdl_status_name(mdl_last_status()), mdl_last_detail());
    return buf;
}

static int xfer(int fd, uint8_t *buf, size_t n, bool out)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = out ? send(fd, buf + done, n - done, MSG_NOSIGNAL) : recv(fd, buf + done, n - done, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 ? -ECONNRESET : -errno;
        done += (size_t)k;
    }
    return 0;
}

/* n pairs of echo exchanges of a and b bytes; adds the time to *t. */
static int echo_block(int fd, size_t a, size_t b, unsigned n, double *t)
{
    uint8_t buf[256];
    if (a > sizeof(buf) || b > sizeof(buf))
        return -EMSGSIZE;
    memset(buf, 0xa5, sizeof(buf));
    double t0 = now_sec();
    for (unsigned i = 0; i < n; i++) {
        int rc = xfer(fd, buf, a, true);
        if (!rc)
            rc = xfer(fd, buf, a, false);
        if (!rc)
            rc = xfer(fd, buf, b, true);
        if (!rc)
            rc = xfer(fd, buf, b, false);
        if (rc)
            return rc;
    }
    *t += now_sec() - t0;
    return 0;
}

/* n map/unmap pairs of the locked MDL; adds the times. */
static int map_block(PMDL m, unsigned n, double *tmap, double *tunmap, struct mb_result *r)
{
    for (unsigned i = 0; i < n; i++) {
        double a = now_sec();
        PVOID va = MmMapLockedPagesSpecifyCache(m, KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        double b = now_sec();
        if (!va) {
            fprintf(stderr, "mapbench: map of %llu bytes failed (%s)\n", (unsigned long long)r->bytes, status_text());
            return -1;
        }
        if (!r->map_req) {
            struct mdl_map_info mi;
            if (mdl_find_mapping(mdl_from_wdm(m), (uint64_t)(uintptr_t)va, &mi)) {
                r->pages = mi.page_count;
                r->vmas = mi.vma_count;
                rpc_frame_sizes(mdl_lock_handle(mdl_from_wdm(m)), &mi, 2000, r);
            }
        }
        MmUnmapLockedPages(va, m);
        double c = now_sec();
        if (m->MdlFlags & MDL_MAPPED_TO_SYSTEM_VA) {
            fprintf(stderr, "mapbench: unmap failed (%s)\n", status_text());
            return -1;
        }
        *tmap += b - a;
        *tunmap += c - b;
    }
    return 0;
}

#define BLOCKS 10

/* Lock once; then BLOCKS rounds of (iters/BLOCKS map/unmap pairs, the same
 * number of echo pairs), alternating so that drift in the guest's or the
 * host's speed hits both alike. */
static int bench_size(uint64_t bytes, unsigned iters, unsigned warmup, struct mb_result *r)
{
    size_t len = (size_t)((bytes + 4095) & ~4095ull);
    uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        fprintf(stderr, "mapbench: mmap %zu: %s\n", len, strerror(errno));
        return 1;
    }
    memset(buf, 0x5a, len);
    int rc = 1, fd = -1;
    PMDL m = IoAllocateMdl(buf, (ULONG)bytes, FALSE, FALSE, NULL);
    if (!m) {
        fprintf(stderr, "mapbench: IoAllocateMdl failed\n");
        goto out;
    }
    volatile bool locked = true;
    double t0 = now_sec();
    MDL_TRY {
        MmProbeAndLockPages(m, KernelMode, IoModifyAccess);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        locked = false;
    } MDL_END_TRY;
    r->lock_us = (now_sec() - t0) * 1e6;
    if (!locked) {
        fprintf(stderr, "mapbench: lock of %llu bytes failed (%s)\n", (unsigned long long)bytes, status_text());
        IoFreeMdl(m);
        goto out;
    }
    fd = vsock_connect(2, 7, SOCK_STREAM, 5);
    if (fd < 0) {
        fprintf(stderr, "mapbench: connect to echo (CID 2 port 7): %s\n", strerror(-fd));
        goto unlock;
    }
    double tmap = 0, tunmap = 0, techo = 0, junk = 0;
    if (map_block(m, warmup ? warmup : 1, &junk, &junk, r) < 0)
        goto unlock;
    size_t ea = r->map_req > r->map_resp ? r->map_req : r->map_resp;
    size_t eb = r->unmap_req > r->unmap_resp ? r->unmap_req : r->unmap_resp;
    int erc = echo_block(fd, ea, eb, warmup, &junk);
    unsigned done = 0;
    for (unsigned blk = 0; blk < BLOCKS && erc == 0; blk++) {
        unsigned n = iters / BLOCKS + (blk < iters % BLOCKS);
        if (map_block(m, n, &tmap, &tunmap, r) < 0)
            goto unlock;
        erc = echo_block(fd, ea, eb, n, &techo);
        done += n;
    }
    if (erc) {
        fprintf(stderr, "mapbench: echo exchange failed: %s\n", strerror(-erc));
        goto unlock;
    }
    r->iters = done;
    r->map_us = tmap / done * 1e6;
    r->unmap_us = tunmap / done * 1e6;
    r->pairs_per_s = done / (tmap + tunmap);
    r->echo_pairs_per_s = done / techo;
    r->echo_rtt_us = techo / (2.0 * done) * 1e6;
    rc = 0;
unlock:
    if (fd >= 0)
        close(fd);
    MmUnlockPages(m);
    IoFreeMdl(m);
out:
    munmap(buf, len);
    return rc;
}

static const char *human(uint64_t b, char *s, size_t n)
{
    if (b >= (1u << 20) && b % (1u << 20) == 0)
        snprintf(s, n, "%llu MiB", (unsigned long long)(b >> 20));
    else if (b >= 1024 && b % 1024 == 0)
        snprintf(s, n, "%llu KiB", (unsigned long long)(b >> 10));
    else
        snprintf(s, n, "%llu B", (unsigned long long)b);
    return s;
}

int cmd_mapbench(int argc, char **argv)
{
    static const struct option lo[] = {
        { "bytes", 1, 0, 'b' }, { "iterations", 1, 0, 'k' }, { "warmup", 1, 0, 'w' }, { 0, 0, 0, 0 },
    };
    uint64_t sizes[MAX_SIZES], v;
    unsigned nsizes = 0, iters = 1000, warmup = 20;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (parse_size(optarg, &v) < 0 || v == 0 || v > (256ull << 20) || nsizes == MAX_SIZES) {
                mb_usage();
                return 2;
            }
            sizes[nsizes++] = v;
            break;
        case 'k':
        case 'w':
            if (parse_u64(optarg, &v) < 0 || v > 10000000 || (c == 'k' && v == 0)) {
                mb_usage();
                return 2;
            }
            *(c == 'k' ? &iters : &warmup) = (unsigned)v;
            break;
        default:
            mb_usage();
            return 2;
        }
    }
    if (optind < argc) {
        mb_usage();
        return 2;
    }
    if (!nsizes) {
        sizes[0] = 4096;
        sizes[1] = 64 << 10;
        sizes[2] = 1 << 20;
        nsizes = 3;
    }
    if (!mdl_default_session()) {
        fprintf(stderr, "mapbench: no session to hostd (%s)\n", status_text());
        return 1;
    }
    struct mb_result res[MAX_SIZES];
    int rc = 0;
    unsigned done = 0;
    for (unsigned i = 0; i < nsizes && rc == 0; i++) {
        struct mb_result *r = &res[i];
        memset(r, 0, sizeof(*r));
        r->bytes = sizes[i];
        rc = bench_size(sizes[i], iters, warmup, r);
        if (rc)
            break;
        double rtt = 1e6 / r->echo_pairs_per_s;
        printf("MAPBENCH bytes=%llu pages=%u vmas=%u iters=%u lock_us=%.1f map_us=%.1f unmap_us=%.1f "
               "pairs_per_s=%.0f rpc_per_s=%.0f echo_pairs_per_s=%.0f echo_rtt_us=%.1f "
               "map_frames=%zu/%zu unmap_frames=%zu/%zu overhead_us=%.1f\n",
               (unsigned long long)r->bytes, r->pages, r->vmas, r->iters, r->lock_us, r->map_us, r->unmap_us,
               r->pairs_per_s, 2 * r->pairs_per_s, r->echo_pairs_per_s, r->echo_rtt_us, r->map_req, r->map_resp,
               r->unmap_req, r->unmap_resp, r->map_us + r->unmap_us - rtt);
        fflush(stdout);
        done++;
    }
    if (done) {
        printf("\nmap+unmap round trips (lock once, K=%u) vs echo exchanges of the same frame sizes, CID 2\n", iters);
        printf("%-8s %5s %4s %9s %9s %11s %11s %12s %9s %8s\n", "buffer", "pages", "vmas", "map_us", "unmap_us",
               "map+unmap/s", "echo pair/s", "echo_rtt_us", "rpc/echo", "lock_us");
        for (unsigned i = 0; i < done; i++) {
            char h[24];
            struct mb_result *r = &res[i];
            printf("%-8s %5u %4u %9.1f %9.1f %11.0f %11.0f %12.1f %8.2fx %8.0f\n", human(r->bytes, h, sizeof(h)),
                   r->pages, r->vmas, r->map_us, r->unmap_us, r->pairs_per_s, r->echo_pairs_per_s, r->echo_rtt_us,
                   r->echo_pairs_per_s / r->pairs_per_s, r->lock_us);
        }
        printf("frames (bytes incl. 4-byte length): map %zu/%zu, unmap %zu/%zu (request/response)\n",
               res[0].map_req, res[0].map_resp, res[0].unmap_req, res[0].unmap_resp);
    }
    return rc;
}
