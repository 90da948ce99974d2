/* The host API introspection handlers (hostd/api/host_api_introspect.c) over
 * the fake VM plus a region right after its second one (A 0..16 MiB, hole,
 * B 32..48 MiB, C 48..64 MiB): one PhysRead mixing ranges packed straight
 * from guest RAM, ranges spanning B and C (copied) and failed ones; the
 * PhysMap fds (read-only descriptions unless writable, the bound on fds a
 * reply may add to a client's queue); unknown VM, introspection off, bounds. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "fake_vm.h"
#include "host_api_handlers.h"
#include "introspect.h"
#include "tap.h"

#define MiB (1ull << 20)
#define C_GPA (48 * MiB)
#define ST(x) MDLMAP__V1__NT_STATUS__STATUS_##x

static struct fake_vm vm;

static int lookup(void *ctx, const char *name, struct host_api_vm *out)
{
    if (strcmp(name, "vm") && strcmp(name, "closed"))
        return -ENOENT;
    *out = (struct host_api_vm){ .name = name, .cid = 3, .mem = &vm.mem, .introspect = !strcmp(name, "vm") };
    return 0;
}
static const struct host_api_vm_ops ops = { .lookup = lookup };
static const struct api_ctx ctx = { .vm_ops = &ops };

/* Handle e; the decoded reply (free it) and its fds. */
static mdl_envelope *handle(mdl_envelope *e, unsigned fd_room, int *fds, unsigned *nfds)
{
    uint8_t *f = NULL;
    size_t n = 0;
    mdl_envelope *r = NULL;
    e->request_id = 7;
    if (host_api_handle_fds(&ctx, e, fd_room, &f, &n, fds, nfds) == 0)
        frame_decode(f + MDLMAP_FRAME_HDR, n - MDLMAP_FRAME_HDR, &r);
    free(f);
    return r;
}

static mdl_envelope *phys_read(const char *name, const uint64_t *gpa, const uint32_t *len, size_t n)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysReadRequest rq = MDLMAP__V1__PHYS_READ_REQUEST__INIT;
    Mdlmap__V1__PhysRange r[8], *rp[8];
    for (size_t i = 0; i < n; i++) {
        mdlmap__v1__phys_range__init(&r[i]);
        r[i].gpa = gpa[i];
        r[i].length = len[i];
        rp[i] = &r[i];
    }
    rq.vm_name = (char *)name;
    rq.ranges = rp;
    rq.n_ranges = n;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ;
    e.phys_read = &rq;
    unsigned nfds = 0;
    return handle(&e, 0, NULL, &nfds);
}

static void test_phys_read(void)
{
    for (unsigned i = 0; i < 4096; i++) {
        vm.file[fake_gpa_to_file(0x5000) + i] = (uint8_t)(i * 3);
        vm.file[fake_gpa_to_file(C_GPA - 2048) + i] = (uint8_t)(i * 11 + 1);
    }
    uint64_t gpa[6] = { 0x5000, C_GPA - 2048, 17 * MiB, 0x5000 + 100, 16 * MiB - 4, 0x5000 };
    uint32_t len[6] = { 4096, 4096, 64, 0, 8, 1 };
    mdl_envelope *r = phys_read("vm", gpa, len, 6);
    CHECK(r && r->status == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY);
    if (!r || r->status || r->phys_read_reply->n_ranges != 6) {
        tap_check(false, "PhysRead answered 6 ranges");
        frame_envelope_free(r);
        return;
    }
    Mdlmap__V1__RangeData **d = r->phys_read_reply->ranges;
    CHECK(d[0]->status == 0 && d[0]->data.len == 4096 && !memcmp(d[0]->data.data, vm.file + 0x5000, 4096));
    /* B's end and C's start are two places in the file: copied piecewise */
    CHECK(d[1]->status == 0 && d[1]->data.len == 4096 &&
          !memcmp(d[1]->data.data, vm.file + fake_gpa_to_file(C_GPA - 2048), 2048) &&
          !memcmp(d[1]->data.data + 2048, vm.file + fake_gpa_to_file(C_GPA), 2048));
    CHECK_EQ(d[2]->status, ST(MEMORY_NOT_ALLOCATED));
    CHECK_EQ(d[2]->data.len, 0);
    CHECK(d[3]->status == 0 && d[3]->data.len == 0);
    CHECK_EQ(d[4]->status, ST(MEMORY_NOT_ALLOCATED));
    CHECK(d[5]->status == 0 && d[5]->data.len == 1 && d[5]->data.data[0] == vm.file[0x5000]);
    frame_envelope_free(r);

    r = phys_read("closed", gpa, len, 1);
    CHECK(r && r->status == ST(ACCESS_DENIED));
    frame_envelope_free(r);
    r = phys_read("nosuch", gpa, len, 1);
    CHECK(r && r->status == ST(NOT_FOUND));
    frame_envelope_free(r);
    uint32_t big[2] = { 512 * 1024, 1 };
    r = phys_read("vm", gpa, big, 2);
    CHECK(r && r->status == ST(INVALID_PARAMETER) && strstr(r->detail, "bytes"));
    frame_envelope_free(r);
}

static mdl_envelope *phys_map(bool writable, unsigned room, int *fds, unsigned *nfds)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysMapRequest rq = MDLMAP__V1__PHYS_MAP_REQUEST__INIT;
    rq.vm_name = "vm";
    rq.writable = writable;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP;
    e.phys_map = &rq;
    return handle(&e, room, fds, nfds);
}

static void test_phys_map(void)
{
    int fds[HOST_API_MAX_REPLY_FDS];
    unsigned nfds = 0;
    mdl_envelope *r = phys_map(false, HOST_API_MAX_REPLY_FDS, fds, &nfds);
    CHECK(r && r->status == 0 && nfds == 3 && r->phys_map_reply->n_regions == 3);
    for (size_t i = 0; r && i < r->phys_map_reply->n_regions && i < 3; i++) {
        const Mdlmap__V1__RamRegion *rr = r->phys_map_reply->regions[i];
        static const uint64_t want_gpa[3] = { 0, 32 * MiB, 48 * MiB }, want_off[3] = { 0, 16 * MiB, 32 * MiB };
        CHECK(rr->gpa == want_gpa[i] && rr->size == 16 * MiB && rr->fd_offset == want_off[i] && rr->fd_index == i);
    }
    for (unsigned i = 0; i < nfds; i++) {
        CHECK_EQ(fcntl(fds[i], F_GETFL) & O_ACCMODE, O_RDONLY);
        CHECK(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
        close(fds[i]);
    }
    frame_envelope_free(r);
    nfds = 0;
    r = phys_map(true, HOST_API_MAX_REPLY_FDS, fds, &nfds);
    CHECK(r && r->status == 0 && nfds == 3);
    for (unsigned i = 0; i < nfds; i++) {
        CHECK_EQ(fcntl(fds[i], F_GETFL) & O_ACCMODE, O_RDWR);
        close(fds[i]);
    }
    frame_envelope_free(r);
    /* the client's queue holds fds it has not read: no room for 3 more */
    nfds = 0;
    r = phys_map(false, 2, fds, &nfds);
    CHECK(r && r->status == ST(INSUFFICIENT_RESOURCES) && nfds == 0);
    frame_envelope_free(r);
    /* the fd-less entry point closes the fds itself */
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysMapRequest rq = MDLMAP__V1__PHYS_MAP_REQUEST__INIT;
    rq.vm_name = "vm";
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP;
    e.phys_map = &rq;
    int probe = dup(0);
    close(probe);
    uint8_t *f = NULL;
    size_t n;
    CHECK_EQ(host_api_handle(&ctx, &e, &f, &n), 0);
    free(f);
    int after = dup(0);
    CHECK_EQ(after, probe); /* no fd left open */
    close(after);
}

int main(void)
{
    if (!tap_check(fake_vm_init(&vm, "api-introspect", 3) == 0, "fake VM") ||
        !tap_check(memtable_add(&vm.mem, C_GPA, 16 * MiB, 0x7f0004000000ull, 32 * MiB, dup(vm.fd)) == 0,
                   "region C after B"))
        return tap_done();
    test_phys_read();
    test_phys_map();
    fake_vm_fini(&vm);
    return tap_done();
}
