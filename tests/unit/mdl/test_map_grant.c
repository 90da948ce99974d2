/* The engine's grant table (map_grant.c) against two memfd-backed fake VMs:
 * slices of a copy never pass the budget and land byte for byte; revocation
 * while a copy is in progress fails the rest of it with the bytes copied
 * before; the notice hook gets the peer connection's context once per
 * connection; the revoked-refs memory holds the last 256 per peer (older
 * refs are "unknown"); removing the peer VM revokes grants naming it; the
 * peer connection's end leaves no use behind. */
#include <errno.h>
#include <string.h>

#include "fake_vm.h"
#include "map_grant.h"
#include "tap.h"

#define PG 4096u
#define DL 200

static char detail[DL];
static unsigned notices;
static void *notice_ctx;
static char notice_reason[64];

static bool allow(void *ctx, const char *a, const char *b)
{
    return true;
}

static void on_notice(void *ctx, uint64_t cid, uint64_t ref, const char *why)
{
    notices++;
    notice_ctx = ctx;
    snprintf(notice_reason, sizeof(notice_reason), "%s", why);
}

/* n pages from pfn, one run */
static uint64_t lock_run(struct map_engine *e, struct map_owner *o, uint64_t pfn, uint32_t n, uint32_t op)
{
    struct map_frames fr = { pfn, n };
    uint64_t h = 0;
    CHECK_EQ(map_engine_lock_runs(e, o, 0, n * PG, &fr, 1, op, &h, detail, DL), 0);
    return h;
}

int main(void)
{
    struct fake_vm fa, fb;
    if (fake_vm_init(&fa, "a", 3) < 0 || fake_vm_init(&fb, "b", 4) < 0)
        return 1;
    struct map_engine *e = map_engine_new(NULL);
    struct map_grant_hooks gh = { .allowed = allow, .notice = on_notice };
    map_engine_set_grant_hooks(e, &gh);
    struct map_vm *va = fake_vm_add(&fa, e), *vb = fake_vm_add(&fb, e);
    struct map_owner oa = { va, 1 }, ob = { vb, 2 };

    /* 1 MiB + 3 pages in A (region A of the fake VM), copied in 64 KiB slices */
    uint32_t pages = 256 + 3;
    uint64_t ma = lock_run(e, &oa, 0x100, pages, 0), mb = lock_run(e, &ob, 0x100, pages, 1);
    for (uint32_t i = 0; i < pages * PG; i++)
        fa.file[0x100 * PG + i] = (uint8_t)(i * 31 + 7);
    memset(fb.file + 0x100 * PG, 0, pages * PG);
    uint64_t ref = 0;
    CHECK_EQ(map_grant_create(e, &oa, ma, 4, MAP_GRANT_READ, &ref, detail, DL), 0);
    struct map_copy_op op = { { 3, ref, 0 }, { 0, mb, 0 }, (uint64_t)pages * PG };
    struct map_copy *c = NULL;
    int conn_b;
    CHECK_EQ(map_copy_begin(e, &ob, &op, 1, &conn_b, &c, detail, DL), 0);
    bool done = false;
    unsigned slices = 0;
    uint64_t most = 0;
    while (!done) {
        uint64_t k = map_copy_step(e, c, 64 * 1024, &done);
        most = k > most ? k : most;
        slices++;
    }
    CHECK_EQ(most, 64 * 1024);
    CHECK_EQ(slices, (pages * PG + 65535) / 65536);
    int err = 1;
    uint64_t copied = 0;
    map_copy_result(c, 0, &err, &copied);
    CHECK_EQ(err, 0);
    CHECK_EQ(copied, (uint64_t)pages * PG);
    CHECK(memcmp(fa.file + 0x100 * PG, fb.file + 0x100 * PG, pages * PG) == 0);
    map_copy_free(e, c);

    /* revoked between two slices: the rest fails, the prefix is reported */
    CHECK_EQ(map_copy_begin(e, &ob, &op, 1, &conn_b, &c, detail, DL), 0);
    CHECK_EQ(map_copy_step(e, c, 100000, &done), 100000);
    CHECK_EQ(map_grant_revoke(e, &ob, ref, true, detail, DL), -EBADF); /* not B's to revoke */
    CHECK_EQ(map_grant_revoke(e, &oa, ref, false, detail, DL), 0);
    CHECK_EQ(notices, 1);
    CHECK(notice_ctx == &conn_b);
    CHECK(strcmp(notice_reason, "revoked") == 0);
    map_copy_step(e, c, 100000, &done);
    CHECK(done);
    map_copy_result(c, 0, &err, &copied);
    CHECK_EQ(err, -EKEYREVOKED);
    CHECK_EQ(copied, 100000);
    map_copy_free(e, c);
    /* later: revoked, as long as the ring remembers it */
    CHECK_EQ(map_copy_begin(e, &ob, &op, 1, NULL, &c, detail, DL), 0);
    map_copy_result(c, 0, &err, &copied);
    CHECK_EQ(err, -EKEYREVOKED);
    map_copy_free(e, c);
    for (unsigned i = 0; i < MAP_GRANT_TOMBSTONES; i++) {
        uint64_t r;
        CHECK_EQ(map_grant_create(e, &oa, ma, 4, MAP_GRANT_READ, &r, detail, DL), 0);
        CHECK_EQ(map_grant_revoke(e, &oa, r, false, detail, DL), 0);
    }
    CHECK_EQ(notices, 1); /* nobody used those */
    op.src.ref = ref;
    CHECK_EQ(map_copy_begin(e, &ob, &op, 1, NULL, &c, detail, DL), 0);
    map_copy_result(c, 0, &err, &copied);
    CHECK_EQ(err, -EBADF); /* 256 revocations later: forgotten */
    map_copy_free(e, c);

    /* a peer connection's end leaves no use behind: no notice for it */
    CHECK_EQ(map_grant_create(e, &oa, ma, 4, MAP_GRANT_READ, &ref, detail, DL), 0);
    op.src.ref = ref;
    CHECK_EQ(map_copy_begin(e, &ob, &op, 1, &conn_b, &c, detail, DL), 0);
    map_copy_free(e, c);
    map_engine_release(e, &ob, false, "connection closed");
    unsigned granted, held;
    map_grant_vm_counts(va, &granted, &held);
    CHECK_EQ(granted, 1);
    map_grant_vm_counts(vb, &granted, &held);
    CHECK_EQ(held, 1);
    CHECK_EQ(map_grant_revoke(e, &oa, ref, false, detail, DL), 0);
    CHECK_EQ(notices, 1);

    /* the peer VM leaves the engine: grants naming it are revoked */
    CHECK_EQ(map_grant_create(e, &oa, ma, 4, MAP_GRANT_READ, &ref, detail, DL), 0);
    map_engine_vm_remove(e, vb, "VM removed");
    map_grant_vm_counts(va, &granted, &held);
    CHECK_EQ(granted, 0);
    CHECK(map_grant_next(e, NULL) == NULL);
    /* and a VM cannot grant to itself */
    CHECK_EQ(map_grant_create(e, &oa, ma, 3, MAP_GRANT_READ, &ref, detail, DL), -EINVAL); /* itself */
    map_engine_free(e);
    fake_vm_fini(&fa);
    fake_vm_fini(&fb);
    return tap_done();
}
