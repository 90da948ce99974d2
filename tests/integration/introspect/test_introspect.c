/* Introspection through the host API against a real hostd: VM vm0 runs with
 * introspect=on, vm1 without. The harness guest's RAM is a memfd with two
 * regions (GPA 0 and 4 GiB, a hole between); the test writes page tables and
 * data into it directly and checks what hostd serves:
 *   PhysRead/PhysWrite (vectored, per-range statuses, hole, bounds),
 *   Translate (4 KiB and 2 MiB pages, a missing entry, flags),
 *   VirtRead/VirtWrite (across pages into a non-present page),
 *   PhysMap (the region fds: mapped and compared; read-only fds cannot be
 *   mapped writable; writable ones write the guest's RAM),
 * the refusals (a VM without introspect=on, an unknown VM), and a client with
 * the read right only (--api-read user:65534): reads, no writes. Runs as root. */
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "rpc_session.h"
#include "usock.h"

#define ST(x) MDLMAP__V1__NT_STATUS__STATUS_##x
#define MiB (1ull << 20)
#define HIGH GM_HIGH_GPA
#define DATA_LOW (8 * MiB)            /* free in the harness guest's low region */
#define DATA_HIGH (HIGH + 8 * MiB)    /* and in its high region */
#define TABLES (12 * MiB)             /* page tables from here (low region) */
#define NOBODY 65534u
#define P_RW_US 7ull
#define PS (1ull << 7)
#define NX (1ull << 63)

static struct guest_mem *gm;
static const char *api;
static uint64_t next_table = TABLES;

static uint8_t *gp(uint64_t gpa, size_t len)
{
    return gm_ptr(gm, gpa, len);
}

/* ------------------------------------------------------------ requests */
static mdl_envelope *call(int fd, mdl_envelope *e, struct usock_fds *fds)
{
    static uint64_t id = 1;
    mdl_envelope *r = NULL;
    e->version = MDLMAP_PROTO_VERSION;
    e->request_id = id++;
    if (frame_write_fd(fd, e) < 0 || frame_read_fd_fds(fd, &r, fds) < 0)
        return NULL;
    return r;
}

static int32_t status_of(mdl_envelope *r)
{
    int32_t st = r ? r->status : INT32_MIN;
    if (r && st)
        tap_diag("  %s: %s", ntstatus_name(st), r->detail ? r->detail : "");
    return st;
}

static mdl_envelope *phys_read(int fd, const char *vm, const uint64_t *gpa, const uint32_t *len, size_t n)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysReadRequest rq = MDLMAP__V1__PHYS_READ_REQUEST__INIT;
    Mdlmap__V1__PhysRange *r = calloc(n, sizeof(*r)), **rp = calloc(n, sizeof(*rp));
    for (size_t i = 0; i < n; i++) {
        mdlmap__v1__phys_range__init(&r[i]);
        r[i].gpa = gpa[i];
        r[i].length = len[i];
        rp[i] = &r[i];
    }
    rq.vm_name = (char *)vm;
    rq.ranges = rp;
    rq.n_ranges = n;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ;
    e.phys_read = &rq;
    mdl_envelope *resp = call(fd, &e, NULL);
    free(r);
    free(rp);
    return resp;
}

static int32_t phys_write1(int fd, const char *vm, uint64_t gpa, const void *data, size_t len, int32_t *chunk_st)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysWriteRequest rq = MDLMAP__V1__PHYS_WRITE_REQUEST__INIT;
    Mdlmap__V1__PhysChunk c = MDLMAP__V1__PHYS_CHUNK__INIT, *cp = &c;
    c.gpa = gpa;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    rq.vm_name = (char *)vm;
    rq.chunks = &cp;
    rq.n_chunks = 1;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_WRITE;
    e.phys_write = &rq;
    mdl_envelope *r = call(fd, &e, NULL);
    int32_t st = status_of(r);
    *chunk_st = st == 0 && r->phys_write_reply->n_status == 1 ? r->phys_write_reply->status[0] : INT32_MIN;
    frame_envelope_free(r);
    return st;
}

static mdl_envelope *phys_map(int fd, const char *vm, bool writable, struct usock_fds *fds)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysMapRequest rq = MDLMAP__V1__PHYS_MAP_REQUEST__INIT;
    rq.vm_name = (char *)vm;
    rq.writable = writable;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP;
    e.phys_map = &rq;
    return call(fd, &e, fds);
}

static mdl_envelope *translate(int fd, uint64_t cr3, const uint64_t *va, size_t n)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__TranslateRequest rq = MDLMAP__V1__TRANSLATE_REQUEST__INIT;
    rq.vm_name = "vm0";
    rq.cr3 = cr3;
    rq.vaddrs = (uint64_t *)va;
    rq.n_vaddrs = n;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_TRANSLATE;
    e.translate = &rq;
    return call(fd, &e, NULL);
}

static mdl_envelope *virt_read(int fd, uint64_t cr3, uint64_t va, uint32_t len)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtReadRequest rq = MDLMAP__V1__VIRT_READ_REQUEST__INIT;
    rq.vm_name = "vm0";
    rq.cr3 = cr3;
    rq.vaddr = va;
    rq.length = len;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_READ;
    e.virt_read = &rq;
    return call(fd, &e, NULL);
}

static mdl_envelope *virt_write(int fd, uint64_t cr3, uint64_t va, const void *data, size_t len)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtWriteRequest rq = MDLMAP__V1__VIRT_WRITE_REQUEST__INIT;
    rq.vm_name = "vm0";
    rq.cr3 = cr3;
    rq.vaddr = va;
    rq.data.data = (uint8_t *)data;
    rq.data.len = len;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_WRITE;
    e.virt_write = &rq;
    return call(fd, &e, NULL);
}

/* --------------------------------------------------------- page tables */
static uint64_t new_table(void)
{
    uint64_t t = next_table;
    next_table += 4096;
    memset(gp(t, 4096), 0, 4096);
    return t;
}

/* 4-level map of va to pa with its leaf at level (1: 4 KiB, 2: 2 MiB) */
static void map_va(uint64_t root, uint64_t va, uint64_t pa, unsigned leaf, uint64_t leaf_flags)
{
    uint64_t table = root;
    for (unsigned level = 4;; level--) {
        uint64_t *e = (uint64_t *)gp(table + ((va >> (12 + 9 * (level - 1))) & 511) * 8, 8);
        if (level == leaf) {
            *e = pa | leaf_flags | (leaf > 1 ? PS : 0);
            return;
        }
        if (!(*e & 1))
            *e = new_table() | P_RW_US;
        table = *e & 0x000ffffffffff000ull;
    }
}

/* --------------------------------------------------------------- tests */
static void test_phys(int fd)
{
    for (unsigned i = 0; i < 8192; i++) {
        gp(DATA_LOW, 8192)[i] = (uint8_t)(i * 13 + 1);
        gp(DATA_HIGH, 8192)[i] = (uint8_t)(i * 5 + 2);
    }
    uint64_t low_end = gm->r[0].size;
    uint64_t gpa[4] = { DATA_LOW, 2 * HIGH / 3, DATA_HIGH, low_end - 8 };
    uint32_t len[4] = { 8192, 16, 100, 16 };
    mdl_envelope *r = phys_read(fd, "vm0", gpa, len, 4);
    bool ok = status_of(r) == 0 && r->phys_read_reply->n_ranges == 4;
    tap_check(ok, "PhysRead of 4 ranges answers 4 results");
    if (ok) {
        Mdlmap__V1__RangeData **d = r->phys_read_reply->ranges;
        tap_check(d[0]->status == 0 && d[0]->data.len == 8192 && !memcmp(d[0]->data.data, gp(DATA_LOW, 8192), 8192),
                  "low RAM read matches the guest's bytes");
        tap_check(d[1]->status == ST(MEMORY_NOT_ALLOCATED) && d[1]->data.len == 0,
                  "a range in the MMIO hole is STATUS_MEMORY_NOT_ALLOCATED (%s)", ntstatus_name(d[1]->status));
        tap_check(d[2]->status == 0 && d[2]->data.len == 100 && !memcmp(d[2]->data.data, gp(DATA_HIGH, 100), 100),
                  "high RAM (4 GiB) read matches");
        tap_check(d[3]->status == ST(MEMORY_NOT_ALLOCATED), "a range from RAM's end into the hole is refused (%s)",
                  ntstatus_name(d[3]->status));
    }
    frame_envelope_free(r);

    /* bounds: 1025 ranges, 512 KiB + 1 bytes */
    uint64_t *many = calloc(1025, sizeof(*many));
    uint32_t *lens = calloc(1025, sizeof(*lens));
    for (unsigned i = 0; i < 1025; i++)
        lens[i] = 1;
    r = phys_read(fd, "vm0", many, lens, 1025);
    tap_check(r && r->status == ST(INVALID_PARAMETER), "1025 ranges: STATUS_INVALID_PARAMETER");
    frame_envelope_free(r);
    lens[0] = 512 * 1024;
    lens[1] = 1;
    r = phys_read(fd, "vm0", many, lens, 2);
    tap_check(r && r->status == ST(INVALID_PARAMETER), "512 KiB + 1 byte: STATUS_INVALID_PARAMETER");
    frame_envelope_free(r);
    r = phys_read(fd, "vm0", many, lens, 1);
    tap_check(status_of(r) == 0 && r->phys_read_reply->ranges[0]->data.len == 512 * 1024,
              "512 KiB in one request is served");
    frame_envelope_free(r);
    free(many);
    free(lens);

    int32_t cst;
    const char msg[] = "written by the host";
    tap_check(phys_write1(fd, "vm0", DATA_HIGH + 4000, msg, sizeof(msg), &cst) == 0 && cst == 0 &&
                  !memcmp(gp(DATA_HIGH + 4000, sizeof(msg)), msg, sizeof(msg)),
              "PhysWrite lands in the guest's RAM");
    uint8_t before = *gp(low_end - 1, 1);
    tap_check(phys_write1(fd, "vm0", low_end - 1, msg, 2, &cst) == 0 && cst == ST(MEMORY_NOT_ALLOCATED) &&
                  *gp(low_end - 1, 1) == before,
              "a chunk running into the hole writes nothing (%s)", ntstatus_name(cst));
}

/* Large replies go out of reused frames (hostd keeps a client's sent
 * PhysRead frames and packs the next replies into them): replies of
 * changing sizes, several in flight, with guest RAM rewritten between
 * rounds, must each carry exactly the bytes of their own range now, never
 * a tail or a stale copy from an earlier reply in the same buffer. */
static void test_reused_frames(int fd)
{
    static const uint32_t sizes[] = { 512 * 1024, 300 * 1024, 512 * 1024, 140 * 1024, 200 * 1024, 512 * 1024 };
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    unsigned bad = 0, replies = 0;
    for (unsigned round = 0; round < 4; round++) {
        uint64_t gpa[N], off = 0x100000;
        for (unsigned i = 0; i < N; i++) {
            gpa[i] = off;
            uint8_t *p = gp(off, sizes[i]);
            for (uint32_t k = 0; k < sizes[i]; k += 4096)
                memset(p + k, (int)(round * 31 + i * 7 + k / 4096), 4096);
            off += sizes[(i + round) % N]; /* ranges shift between rounds */
        }
        for (unsigned i = 0; i < N; i++) { /* all in flight */
            mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
            Mdlmap__V1__PhysReadRequest rq = MDLMAP__V1__PHYS_READ_REQUEST__INIT;
            Mdlmap__V1__PhysRange r = MDLMAP__V1__PHYS_RANGE__INIT, *rp = &r;
            r.gpa = gpa[i];
            r.length = sizes[(i + round) % N];
            rq.vm_name = "vm0";
            rq.ranges = &rp;
            rq.n_ranges = 1;
            e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ;
            e.phys_read = &rq;
            e.version = MDLMAP_PROTO_VERSION;
            e.request_id = 1000 + i;
            if (frame_write_fd(fd, &e) < 0)
                bad++;
        }
        for (unsigned i = 0; i < N; i++) {
            mdl_envelope *r = NULL;
            uint32_t len = sizes[(i + round) % N];
            if (frame_read_fd(fd, &r) < 0) {
                bad++;
                continue;
            }
            replies++;
            bool ok = r->status == 0 && r->request_id == 1000 + i &&
                      r->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY && r->phys_read_reply->n_ranges == 1 &&
                      r->phys_read_reply->ranges[0]->data.len == len &&
                      !memcmp(r->phys_read_reply->ranges[0]->data.data, gp(gpa[i], len), len);
            bad += !ok;
            frame_envelope_free(r);
        }
    }
    tap_check(bad == 0 && replies == 4 * N, "%u PhysRead replies of changing sizes, 6 in flight, out of reused frames: "
              "each holds exactly its range's current bytes (%u wrong)", replies, bad);
}

static void test_walks(int fd)
{
    uint64_t root = new_table();
    uint64_t va = 0x00007f0000001000ull, va2m = 0x00007f0040000000ull;
    map_va(root, va, DATA_HIGH, 1, P_RW_US);
    map_va(root, va + 4096, DATA_LOW, 1, 1 | 4 | NX); /* read-only, user, NX */
    map_va(root, va2m, 2 * MiB, 2, P_RW_US);
    uint64_t vas[5] = { va + 0x10, va + 4096 + 0x20, va2m + 0x12345, va + 2 * 4096, 0x0000800000000000ull };
    mdl_envelope *r = translate(fd, root | 0x5 /* PCID bits */, vas, 5);
    bool ok = status_of(r) == 0 && r->translate_reply->n_results == 5;
    tap_check(ok, "Translate of 5 addresses answers 5 results");
    if (ok) {
        Mdlmap__V1__Translation **t = r->translate_reply->results;
        tap_check(t[0]->status == 0 && t[0]->gpa == DATA_HIGH + 0x10 && t[0]->page_size == 4096 && t[0]->level == 1 &&
                      t[0]->writable && t[0]->user && !t[0]->nx,
                  "4 KiB page: gpa 0x%llx, level %u", (unsigned long long)t[0]->gpa, t[0]->level);
        tap_check(t[1]->status == 0 && t[1]->gpa == DATA_LOW + 0x20 && !t[1]->writable && t[1]->user && t[1]->nx,
                  "read-only NX page: writable %d nx %d", t[1]->writable, t[1]->nx);
        tap_check(t[2]->status == 0 && t[2]->gpa == 2 * MiB + 0x12345 && t[2]->page_size == 2 * MiB &&
                      t[2]->level == 2, "2 MiB page: gpa 0x%llx size %llu", (unsigned long long)t[2]->gpa,
                  (unsigned long long)t[2]->page_size);
        tap_check(t[3]->status == ST(ACCESS_VIOLATION) && t[3]->level == 1,
                  "not present PTE: STATUS_ACCESS_VIOLATION at level %u", t[3]->level);
        tap_check(t[4]->status == ST(ACCESS_VIOLATION) && t[4]->level == 0, "non-canonical: STATUS_ACCESS_VIOLATION");
    }
    frame_envelope_free(r);

    /* VirtRead across two mapped pages (not contiguous in RAM) into the third, absent */
    r = virt_read(fd, root, va + 4000, 4096 + 200);
    uint32_t want = 2 * 4096 - 4000;
    ok = r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_VIRT_READ_REPLY;
    tap_check(ok && r->status == ST(ACCESS_VIOLATION) && r->virt_read_reply->data.len == want &&
                  r->virt_read_reply->fault_vaddr == va + 2 * 4096,
              "VirtRead stops at the absent page: %zu bytes, fault 0x%llx", ok ? r->virt_read_reply->data.len : 0,
              ok ? (unsigned long long)r->virt_read_reply->fault_vaddr : 0ull);
    tap_check(ok && r->virt_read_reply->data.len == want &&
                  !memcmp(r->virt_read_reply->data.data, gp(DATA_HIGH + 4000, 96), 96) &&
                  !memcmp(r->virt_read_reply->data.data + 96, gp(DATA_LOW, 4096), 4096),
              "the bytes read are the guest's, page by page");
    frame_envelope_free(r);
    r = virt_read(fd, root, va + 8, 64);
    tap_check(status_of(r) == 0 && r->virt_read_reply->data.len == 64 &&
                  !memcmp(r->virt_read_reply->data.data, gp(DATA_HIGH + 8, 64), 64), "VirtRead inside one page");
    frame_envelope_free(r);
    /* writes go through a read-only page */
    uint8_t cc[32];
    memset(cc, 0xcc, sizeof(cc));
    r = virt_write(fd, root, va + 4096 + 100, cc, sizeof(cc));
    tap_check(status_of(r) == 0 && r->virt_write_reply->written == 32 && gp(DATA_LOW + 100, 32)[31] == 0xcc,
              "VirtWrite through a read-only guest page");
    frame_envelope_free(r);
}

/* Map every region the reply names and compare it with the guest's RAM. */
static void check_regions(mdl_envelope *r, struct usock_fds *fds, bool writable)
{
    Mdlmap__V1__PhysMapResponse *m = r->phys_map_reply;
    tap_check(m->n_regions == 2 && fds->n == 2, "PhysMap: %zu regions, %u fds", m->n_regions, fds->n);
    for (size_t i = 0; i < m->n_regions && i < 2; i++) {
        const Mdlmap__V1__RamRegion *rr = m->regions[i];
        bool match = rr->gpa == gm->r[i].gpa && rr->size == gm->r[i].size && rr->fd_index < fds->n;
        tap_check(match, "region %zu: gpa 0x%llx size 0x%llx", i, (unsigned long long)rr->gpa,
                  (unsigned long long)rr->size);
        if (!match)
            continue;
        int fd = fds->fd[rr->fd_index];
        void *w = mmap(NULL, rr->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)rr->fd_offset);
        tap_check((w != MAP_FAILED) == writable, "region %zu: a shared writable mapping %s", i,
                  writable ? "works" : "is refused");
        if (w != MAP_FAILED) {
            uint8_t *p = (uint8_t *)w + (DATA_LOW + 77 - rr->gpa) % rr->size;
            *p ^= 0xff;
            tap_check(*gp(rr->gpa + (uint64_t)(p - (uint8_t *)w), 1) == *p, "region %zu: a write shows in the guest", i);
            munmap(w, rr->size);
        }
        uint8_t *ro = mmap(NULL, rr->size, PROT_READ, MAP_SHARED, fd, (off_t)rr->fd_offset);
        tap_check(ro != MAP_FAILED && !memcmp(ro, gp(rr->gpa, rr->size), rr->size),
                  "region %zu: the mapping holds the guest's RAM", i);
        if (ro != MAP_FAILED)
            munmap(ro, rr->size);
    }
}

static void test_map(int fd)
{
    struct usock_fds fds = { .n = 0 };
    mdl_envelope *r = phys_map(fd, "vm0", false, &fds);
    if (tap_check(status_of(r) == 0, "PhysMap read-only"))
        check_regions(r, &fds, false);
    frame_envelope_free(r);
    usock_fds_close(&fds);
    r = phys_map(fd, "vm0", true, &fds);
    if (tap_check(status_of(r) == 0, "PhysMap writable"))
        check_regions(r, &fds, true);
    frame_envelope_free(r);
    usock_fds_close(&fds);
}

static void test_refusals(int fd)
{
    uint64_t gpa = DATA_LOW;
    uint32_t len = 16;
    mdl_envelope *r = phys_read(fd, "vm1", &gpa, &len, 1);
    tap_check(r && r->status == ST(ACCESS_DENIED), "vm1 (no introspect=on): STATUS_ACCESS_DENIED (%s)",
              r ? r->detail : "no reply");
    frame_envelope_free(r);
    struct usock_fds fds = { .n = 0 };
    r = phys_map(fd, "vm1", false, &fds);
    tap_check(r && r->status == ST(ACCESS_DENIED) && fds.n == 0, "vm1: PhysMap refused, no fds");
    frame_envelope_free(r);
    r = phys_read(fd, "nosuch", &gpa, &len, 1);
    tap_check(r && r->status == ST(NOT_FOUND), "unknown VM: STATUS_NOT_FOUND");
    frame_envelope_free(r);
}

/* Lines a client causes per request are bounded (rate-limited): many
 * PhysMaps (the read right is enough) and writes leave a few lines each,
 * not one per request. The bound is far below the request count so that
 * a slow run (several limiter windows) still passes. */
static void test_log_bound(struct hd_proc *p, int fd)
{
    enum { N = 200 };
    unsigned maps0 = hd_log_count(p, "RAM region fds handed out");
    unsigned pw0 = hd_log_count(p, "of guest-physical memory");
    unsigned vw0 = hd_log_count(p, "of guest-virtual memory");
    int ok = 0;
    for (int i = 0; i < N; i++) {
        struct usock_fds fds = { .n = 0 };
        mdl_envelope *r = phys_map(fd, "vm0", false, &fds);
        ok += status_of(r) == 0;
        frame_envelope_free(r);
        usock_fds_close(&fds);
        int32_t cst;
        ok += phys_write1(fd, "vm0", DATA_LOW, "x", 1, &cst) == 0;
        r = virt_write(fd, 0, 0, "x", 1); /* answered (a fault): still a write request */
        ok += r != NULL;
        frame_envelope_free(r);
    }
    unsigned maps = hd_log_count(p, "RAM region fds handed out") - maps0;
    unsigned pw = hd_log_count(p, "of guest-physical memory") - pw0;
    unsigned vw = hd_log_count(p, "of guest-virtual memory") - vw0;
    tap_check(ok == 3 * N, "%d PhysMap, PhysWrite and VirtWrite requests answered (%d)", N, ok);
    tap_check(maps < N / 4 && pw < N / 4 && vw < N / 4,
              "their log lines are rate-limited: %u PhysMap, %u PhysWrite, %u VirtWrite lines for %d each", maps,
              pw, vw, N);
}

/* A client with the read right only: its statuses as exit code bits. */
static void test_read_only_client(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(100);
        int fd = usock_connect(api, 0);
        if (fd < 0)
            _exit(101);
        int bits = 0;
        uint64_t gpa = DATA_LOW;
        uint32_t len = 16;
        mdl_envelope *r = phys_read(fd, "vm0", &gpa, &len, 1);
        bits |= r && r->status == 0 ? 1 : 0;
        frame_envelope_free(r);
        int32_t cst;
        bits |= phys_write1(fd, "vm0", DATA_LOW, "x", 1, &cst) == ST(ACCESS_DENIED) ? 2 : 0;
        struct usock_fds fds = { .n = 0 };
        r = phys_map(fd, "vm0", true, &fds);
        bits |= r && r->status == ST(ACCESS_DENIED) && fds.n == 0 ? 4 : 0;
        frame_envelope_free(r);
        r = phys_map(fd, "vm0", false, &fds);
        bits |= r && r->status == 0 && fds.n == 2 ? 8 : 0;
        frame_envelope_free(r);
        usock_fds_close(&fds);
        r = virt_write(fd, 0, 0, "x", 1);
        bits |= r && r->status == ST(ACCESS_DENIED) ? 16 : 0;
        frame_envelope_free(r);
        _exit(bits);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int bits = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    tap_check(bits >= 0 && (bits & 1), "read right: PhysRead served (exit %d)", bits);
    tap_check(bits >= 0 && (bits & 2), "read right only: PhysWrite denied");
    tap_check(bits >= 0 && (bits & 4), "read right only: writable PhysMap denied, no fds");
    tap_check(bits >= 0 && (bits & 8), "read right: read-only PhysMap served");
    tap_check(bits >= 0 && (bits & 16), "read right only: VirtWrite denied");
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cids[2] = { 3, 4 };
    const char *opts[2] = { "introspect=on", NULL };
    const char *more[] = { "--api-read", "user:65534", NULL };
    rig_start_opts(&rig, bin, "introspect", 2, cids, opts, more);
    api = rig.api;
    /* the read-only client (nobody) must reach the socket: rights, not modes, decide */
    chmod(rig.dir, 0755);
    chmod(api, 0666);
    struct vdev *d0 = rig_vm_up(&rig, 0, NULL, "vm0");
    struct vdev *d1 = rig_vm_up(&rig, 1, NULL, "vm1");
    int fd = d0 && d1 ? api_connect(api) : -1;
    if (!tap_check(fd >= 0, "guests up, host API connected")) {
        rig_abort(&rig);
        return tap_done();
    }
    gm = &d0->g.gm;
    test_phys(fd);
    test_reused_frames(fd);
    test_walks(fd);
    test_map(fd);
    test_refusals(fd);
    test_log_bound(&rig.p, fd);
    test_read_only_client();
    close(fd);
    tap_check(hd_alive(&rig.p), "hostd alive");
    vdev_down(d0);
    vdev_down(d1);
    free(d0);
    free(d1);
    rig_stop(&rig);
    return tap_done();
}
