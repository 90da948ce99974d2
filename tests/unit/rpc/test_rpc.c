/* RPC stream + handlers and host API handlers, without vsock: a fake
 * transport collects response frames. */
#include <errno.h>
#include <string.h>

#include "host_api_handlers.h"
#include "fake_vm.h"
#include "tap.h"
#include "rpc_conn.h"
#include "rpc_handlers.h"

struct sink {
    struct frame_reader rd;
    size_t budget; /* bytes the fake transport accepts before -EAGAIN */
};

static long sink_send(void *ctx, const uint8_t *p, size_t n)
{
    struct sink *s = ctx;
    if (!s->budget)
        return -EAGAIN;
    if (n > s->budget)
        n = s->budget;
    s->budget -= n;
    if (frame_reader_feed(&s->rd, p, n) < 0)
        return -EIO;
    return (long)n;
}

/* next response from the sink, or NULL */
static mdl_envelope *next_resp(struct sink *s)
{
    const uint8_t *p;
    size_t n;
    mdl_envelope *env = NULL;
    if (frame_reader_next(&s->rd, &p, &n) != 1)
        return NULL;
    if (frame_decode(p, n, &env) < 0)
        return NULL;
    return env;
}

static void send_req(struct rpc_conn *c, mdl_envelope *env, uint64_t id)
{
    uint8_t *f;
    size_t n;
    env->version = 1;
    env->request_id = id;
    if (frame_encode(env, &f, &n) < 0) {
        CHECK(0);
        return;
    }
    size_t done = 0;
    while (done < n) { /* feed in odd-sized pieces */
        size_t k = n - done < 7 ? n - done : 7;
        size_t used = rpc_conn_input(c, f + done, k);
        done += used;
        if (!used)
            break;
    }
    CHECK_EQ(done, n);
    free(f);
}

static mdl_envelope *call(struct rpc_conn *c, struct sink *s, mdl_envelope *env, uint64_t id)
{
    send_req(c, env, id);
    mdl_envelope *r = next_resp(s);
    CHECK(r != NULL);
    if (r)
        CHECK_EQ(r->request_id, id);
    return r;
}

static mdl_envelope *api_call(struct map_engine *e, mdl_envelope *req)
{
    uint8_t *f;
    size_t n;
    mdl_envelope *r = NULL;
    req->version = 1;
    req->request_id = 99;
    struct api_ctx ctx = { .eng = e };
    CHECK_EQ(host_api_handle(&ctx, req, &f, &n), 0);
    CHECK_EQ(frame_decode(f + 4, n - 4, &r), 0);
    free(f);
    return r;
}

int main(void)
{
    struct fake_vm f;
    if (fake_vm_init(&f, "vm-rpc", 3) < 0)
        return 1;
    struct map_limits lim = { .max_vmas = 1000 };
    struct map_engine *e = map_engine_new(&lim);
    struct map_vm *fv = fake_vm_add(&f, e);
    struct sink s;
    frame_reader_init(&s.rd, MDLMAP_MAX_FRAME);
    s.budget = SIZE_MAX;
    struct fconn_budget rx; /* the VM's receive budget: owned here, shared by its connections */
    rpc_rx_budget_init(&rx);
    struct rpc_conn c;
    rpc_conn_init(&c, e, fv, 42, sink_send, &s, &rx);

    /* Hello: version ranges */
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__HelloRequest hello = MDLMAP__V1__HELLO_REQUEST__INIT;
    hello.min_version = 2;
    hello.max_version = 5;
    hello.client = "test";
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    mdl_envelope *r = call(&c, &s, &env, 1);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_REVISION_MISMATCH);
    frame_envelope_free(r);
    hello.min_version = 1;
    r = call(&c, &s, &env, 2);
    CHECK_EQ(r->status, 0);
    CHECK_EQ(r->hello_reply->version, 1);
    CHECK_EQ(r->hello_reply->guest_cid, 3);
    CHECK_EQ(r->hello_reply->max_mdl_pages, MAP_MAX_MDL_PAGES); /* 4 GiB - 1 page */
    frame_envelope_free(r);

    /* Lock: an MMIO frame => ACCESS_VIOLATION; then a good 2-page MDL */
    Mdlmap__V1__LockRequest lock = MDLMAP__V1__LOCK_REQUEST__INIT;
    uint64_t pfns[2] = { FAKE_HOLE_GPA >> 12, 11 };
    lock.byte_offset = 4000;
    lock.byte_count = 200;
    lock.n_pfns = 2;
    lock.pfns = pfns;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    env.lock = &lock;
    r = call(&c, &s, &env, 3);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION);
    CHECK(r->detail && strstr(r->detail, "not guest RAM"));
    frame_envelope_free(r);
    /* the same frames as runs: both forms at once, a zero count, too many
     * runs and a count mismatch are refused as parameters */
    Mdlmap__V1__FrameRun fr0 = MDLMAP__V1__FRAME_RUN__INIT, fr1 = MDLMAP__V1__FRAME_RUN__INIT;
    Mdlmap__V1__FrameRun *frs[2] = { &fr0, &fr1 };
    fr0.first_pfn = 10;
    fr0.count = 2;
    pfns[0] = 10;
    lock.runs = frs;
    lock.n_runs = 1;
    r = call(&c, &s, &env, 40);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER);
    CHECK(r->detail && strstr(r->detail, "both"));
    frame_envelope_free(r);
    lock.n_pfns = 0;
    fr1.first_pfn = 11;
    /* (count 0, 1 run), (1 + 2 pages for 2) */
    const uint32_t bad_runs[2][2] = { { 0, 0 }, { 1, 2 } };
    for (unsigned i = 0; i < 2; i++) {
        fr0.count = bad_runs[i][0];
        fr1.count = bad_runs[i][1];
        lock.n_runs = i + 1;
        r = call(&c, &s, &env, 41 + i);
        CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER);
        frame_envelope_free(r);
    }
    fr0.count = 1;
    fr1.count = 1;
    r = call(&c, &s, &env, 43);
    CHECK_EQ(r->status, 0);
    uint64_t mdl_runs = r->lock_reply->mdl_handle;
    frame_envelope_free(r);
    unsigned released;
    char dt[200];
    CHECK_EQ(map_engine_unlock(e, &(struct map_owner){ .vm = fv, .conn_id = 42 }, mdl_runs, &released, dt,
                               sizeof(dt)), 0);
    /* more runs than any MDL can have: refused before anything is copied */
    lock.n_runs = (size_t)MAP_MAX_MDL_PAGES + 1;
    struct map_frames *frc;
    CHECK_EQ(rpc_frame_runs(&lock, &frc, dt, sizeof(dt)), -EINVAL);
    lock.n_runs = 0;
    lock.runs = NULL;
    lock.n_pfns = 2;

    r = call(&c, &s, &env, 4);
    CHECK_EQ(r->status, 0);
    uint64_t mdl = r->lock_reply->mdl_handle;
    frame_envelope_free(r);

    /* Map */
    Mdlmap__V1__MapRequest map = MDLMAP__V1__MAP_REQUEST__INIT;
    map.mdl_handle = mdl;
    map.cache_type = MDLMAP__V1__CACHE_TYPE__MM_WRITE_COMBINED;
    map.priority = 16;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    env.map = &map;
    r = call(&c, &s, &env, 5);
    CHECK_EQ(r->status, 0);
    uint64_t addr = r->map_reply->address, mh = r->map_reply->map_handle;
    CHECK_EQ(addr & 4095, 4000);
    CHECK_EQ(r->map_reply->page_count, 2);
    CHECK_EQ(r->map_reply->vma_count, 1);
    CHECK_EQ(r->map_reply->cache_type, 2);
    frame_envelope_free(r);
    map.access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
    map.consumer = "nobody";
    r = call(&c, &s, &env, 6);
    CHECK(r->status != 0);
    frame_envelope_free(r);

    /* host API: list, write, read, read-out-of-bounds */
    mdl_envelope q = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListMappingsRequest lr = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    q.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
    q.list = &lr;
    r = api_call(e, &q);
    CHECK_EQ(r->list_reply->n_mappings, 1);
    CHECK_EQ(r->list_reply->mappings[0]->map_handle, mh);
    CHECK_EQ(r->list_reply->mappings[0]->byte_count, 200);
    CHECK(strcmp(r->list_reply->mappings[0]->vm_name, "vm-rpc") == 0);
    frame_envelope_free(r);
    lr.vm_name = "other";
    r = api_call(e, &q);
    CHECK_EQ(r->list_reply->n_mappings, 0);
    frame_envelope_free(r);

    Mdlmap__V1__WriteRequest wr = MDLMAP__V1__WRITE_REQUEST__INIT;
    wr.map_handle = mh;
    wr.offset = 94;
    wr.data.data = (uint8_t *)"hello";
    wr.data.len = 5;
    q.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
    q.write = &wr;
    r = api_call(e, &q);
    CHECK_EQ(r->status, 0);
    CHECK_EQ(r->write_reply->written, 5);
    frame_envelope_free(r);
    /* the bytes are in the guest's pages: 96 bytes into page 10 ends page 10 */
    CHECK(memcmp(f.file + 10 * 4096 + 4000 + 94, "he", 2) == 0);
    CHECK(memcmp(f.file + 11 * 4096, "llo", 3) == 0);
    wr.offset = 196;
    r = api_call(e, &q);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER);
    frame_envelope_free(r);

    memcpy(f.file + 10 * 4096 + 4000, "GUEST", 5);
    Mdlmap__V1__ReadRequest rd = MDLMAP__V1__READ_REQUEST__INIT;
    rd.map_handle = mh;
    rd.length = 5;
    q.body_case = MDLMAP__V1__ENVELOPE__BODY_READ;
    q.read = &rd;
    r = api_call(e, &q);
    CHECK_EQ(r->status, 0);
    CHECK(r->read_reply->data.len == 5 && memcmp(r->read_reply->data.data, "GUEST", 5) == 0);
    frame_envelope_free(r);
    rd.offset = 1;
    rd.length = 200;
    r = api_call(e, &q);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER);
    frame_envelope_free(r);
    rd.map_handle = 12345;
    rd.offset = 0;
    rd.length = 1;
    r = api_call(e, &q);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_INVALID_HANDLE);
    frame_envelope_free(r);

    /* Unmap with a wrong address, then right; Unlock twice */
    Mdlmap__V1__UnmapRequest um = MDLMAP__V1__UNMAP_REQUEST__INIT;
    um.map_handle = mh;
    um.address = addr + 1;
    um.mdl_handle = mdl;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP;
    env.unmap = &um;
    r = call(&c, &s, &env, 7);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_NOT_MAPPED_VIEW);
    frame_envelope_free(r);
    um.address = addr;
    r = call(&c, &s, &env, 8);
    CHECK_EQ(r->status, 0);
    frame_envelope_free(r);
    Mdlmap__V1__UnlockRequest ul = MDLMAP__V1__UNLOCK_REQUEST__INIT;
    ul.mdl_handle = mdl;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK;
    env.unlock = &ul;
    r = call(&c, &s, &env, 9);
    CHECK_EQ(r->status, 0);
    frame_envelope_free(r);
    r = call(&c, &s, &env, 10);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_NOT_LOCKED);
    frame_envelope_free(r);

    /* a host API request on the guest port */
    q.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    Mdlmap__V1__StatsRequest sr = MDLMAP__V1__STATS_REQUEST__INIT;
    q.stats = &sr;
    r = call(&c, &s, &q, 11);
    CHECK_EQ(r->status, MDLMAP__V1__NT_STATUS__STATUS_INVALID_DEVICE_REQUEST);
    CHECK_EQ(r->body_case, MDLMAP__V1__ENVELOPE__BODY_ERROR_REPLY);
    frame_envelope_free(r);

    /* back-pressure: the transport takes nothing; responses queue; input stops */
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    s.budget = 0;
    size_t queued = 0;
    for (int i = 0; i < 100000 && c.fc.out.bytes < RPC_OUTQ_HIGH; i++) {
        uint8_t *fr;
        size_t n;
        env.request_id = 1000 + (uint64_t)i;
        frame_encode(&env, &fr, &n);
        queued += rpc_conn_input(&c, fr, n) == n;
        free(fr);
    }
    CHECK(c.fc.out.bytes >= RPC_OUTQ_HIGH);
    uint8_t *fr;
    size_t n;
    frame_encode(&env, &fr, &n);
    CHECK_EQ(rpc_conn_input(&c, fr, n), 0); /* not consuming while output is backed up */
    free(fr);
    s.budget = SIZE_MAX;
    rpc_conn_pump(&c);
    CHECK_EQ(c.fc.out.bytes, 0);
    size_t got = 0;
    while ((r = next_resp(&s))) {
        got++;
        frame_envelope_free(r);
    }
    CHECK_EQ(got, queued);

    /* teardown with locked and mapped MDLs: leak records */
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    env.lock = &lock;
    for (int i = 0; i < 3; i++) {
        r = call(&c, &s, &env, 2000 + (uint64_t)i);
        CHECK_EQ(r->status, 0);
        map.mdl_handle = r->lock_reply->mdl_handle;
        frame_envelope_free(r);
    }
    map.access_mode = 0;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    env.map = &map;
    r = call(&c, &s, &env, 2010);
    CHECK_EQ(r->status, 0);
    frame_envelope_free(r);
    rpc_conn_fini(&c, "test close");
    struct map_stats st;
    map_engine_stats(e, &st);
    CHECK_EQ(st.locked_mdls, 0);
    CHECK_EQ(st.mappings, 0);
    CHECK_EQ(st.leaks_reported, 4);

    /* oversize frame: error reply, then the connection closes */
    rpc_conn_init(&c, e, fv, 43, sink_send, &s, &rx);
    uint8_t bad[8] = { 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4 };
    CHECK_EQ(rpc_conn_input(&c, bad, sizeof(bad)), sizeof(bad));
    CHECK(rpc_conn_done(&c));
    r = next_resp(&s);
    CHECK(r && r->status == MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER);
    frame_envelope_free(r);
    rpc_conn_fini(&c, "test");
    /* undecodable envelope */
    rpc_conn_init(&c, e, fv, 44, sink_send, &s, &rx);
    uint8_t junk[7] = { 3, 0, 0, 0, 0xff, 0xff, 0xff };
    rpc_conn_input(&c, junk, sizeof(junk));
    CHECK(rpc_conn_done(&c));
    r = next_resp(&s);
    CHECK(r && r->status == MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER);
    frame_envelope_free(r);
    rpc_conn_fini(&c, "test");

    /* RPC_RX_VM_CAP: partial maximal frames on many connections of one VM.
     * Each holds 1 MiB + 4 of reader capacity; the connection that would pass
     * 16 MiB gets INSUFFICIENT_RESOURCES and closes; closing frees the charge. */
    {
        enum { NC = 20 };
        static struct rpc_conn cs[NC];
        static struct sink ss[NC];
        size_t chunk = 64 * 1024, want = MDLMAP_MAX_FRAME + MDLMAP_FRAME_HDR - 1;
        uint8_t *blob = calloc(1, want);
        CHECK(blob != NULL);
        blob[0] = 0; /* length prefix: 1 MiB frame, never completed */
        blob[1] = 0;
        blob[2] = 0x10;
        blob[3] = 0;
        int refused = -1;
        for (int i = 0; i < NC && blob; i++) {
            frame_reader_init(&ss[i].rd, MDLMAP_MAX_FRAME);
            ss[i].budget = SIZE_MAX;
            rpc_conn_init(&cs[i], e, fv, 100 + (uint64_t)i, sink_send, &ss[i], &rx);
            for (size_t off = 0; off < want && !rpc_conn_done(&cs[i]);) {
                size_t k = want - off < chunk ? want - off : chunk;
                size_t used = rpc_conn_input(&cs[i], blob + off, k);
                if (!used)
                    break;
                off += used;
            }
            CHECK(rpc_rx_budget_buffered(&rx) <= RPC_RX_VM_CAP);
            if (rpc_conn_done(&cs[i])) {
                if (refused < 0)
                    refused = i;
                r = next_resp(&ss[i]);
                CHECK(r && r->status == MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES);
                frame_envelope_free(r);
            }
        }
        /* 15 maximal readers fit in 16 MiB; the 16th does not */
        CHECK_EQ(refused, (int)(RPC_RX_VM_CAP / (MDLMAP_MAX_FRAME + MDLMAP_FRAME_HDR)));
        rpc_conn_fini(&cs[0], "test");
        /* the freed share is usable again */
        rpc_conn_init(&cs[0], e, fv, 200, sink_send, &ss[0], &rx);
        CHECK_EQ(rpc_conn_input(&cs[0], blob, chunk), chunk);
        CHECK(!rpc_conn_done(&cs[0]));
        for (int i = 0; i < NC && blob; i++) {
            rpc_conn_fini(&cs[i], "test");
            frame_reader_free(&ss[i].rd);
        }
        CHECK_EQ(rpc_rx_budget_buffered(&rx), 0);
        free(blob);
    }

    frame_reader_free(&s.rd);
    map_engine_free(e);
    fake_vm_fini(&f);
    return tap_done();
}
