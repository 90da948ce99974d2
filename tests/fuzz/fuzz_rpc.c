/* Fuzz target: the guest RPC decoder and handlers, plus the host API
 * handlers, against a small memfd-backed VM. Input byte 0 picks the mode:
 *  even: the rest is a raw guest byte stream fed in fuzzed chunk sizes;
 *  odd:  the rest is a program of structured operations (lock/map/unmap/
 *        unlock/read/write/raw, lock by frame runs; grant, revoke, and grant
 *        copies from a second VM's connection) that reuse the handles and
 *        grant refs hostd returned, so the handlers are reached past the
 *        handle checks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fake_vm.h"
#include "host_api_handlers.h"
#include "log.h"
#include "rpc_conn.h"

static struct fake_vm vm, peer_vm;
static struct map_vm *fuzz_vm, *fuzz_peer;
static struct map_engine *eng;
static uint64_t conn_ids;
static uint64_t consumer_id;
static uint64_t last_user_map; /* handle the fake consumer was last asked to map */

/* a fake UserMode consumer: remembers the request, answers when the input says so */
static int fake_map_into(void *ctx, const struct map_obj *m, const struct map_run *runs, uint32_t nruns)
{
    struct map_info mi;
    map_obj_info(m, &mi);
    last_user_map = mi.handle;
    return runs && nruns ? 0 : -22;
}

static void fake_unmap_from(void *ctx, uint64_t map_handle, uint64_t base, uint64_t len)
{
}

static const struct map_consumer_ops fake_ops = { .map_into = fake_map_into, .unmap_from = fake_unmap_from };

struct sink {
    struct frame_reader rd;
    size_t budget;
    uint64_t mdl, map, addr, ref;
};

static long sink_send(void *ctx, const uint8_t *p, size_t n)
{
    struct sink *s = ctx;
    if (!s->budget)
        return -11; /* -EAGAIN */
    if (n > s->budget)
        n = s->budget;
    s->budget -= n;
    if (frame_reader_room(&s->rd) < n) { /* keep only the recent responses */
        frame_reader_free(&s->rd);
        frame_reader_init(&s->rd, MDLMAP_MAX_FRAME);
    }
    if (n <= frame_reader_room(&s->rd))
        frame_reader_feed(&s->rd, p, n);
    return (long)n;
}

/* learn handles from responses */
static void drain(struct sink *s)
{
    const uint8_t *p;
    size_t n;
    int r;
    while ((r = frame_reader_next(&s->rd, &p, &n)) == 1) {
        mdl_envelope *e;
        if (frame_decode(p, n, &e) < 0)
            continue;
        if (e->status == 0 && e->body_case == MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY)
            s->mdl = e->lock_reply->mdl_handle;
        if (e->status == 0 && e->body_case == MDLMAP__V1__ENVELOPE__BODY_GRANT_REPLY)
            s->ref = e->grant_reply->grant_ref;
        if (e->status == 0 && e->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY) {
            s->map = e->map_reply->map_handle;
            s->addr = e->map_reply->address;
        }
        frame_envelope_free(e);
    }
    if (r < 0) {
        frame_reader_free(&s->rd);
        frame_reader_init(&s->rd, MDLMAP_MAX_FRAME);
    }
}

struct in {
    const uint8_t *p;
    size_t n;
};

static uint64_t take(struct in *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes && in->n; i++, in->p++, in->n--)
        v |= (uint64_t)in->p[0] << (8 * i);
    return v;
}

static void feed(struct rpc_conn *c, const uint8_t *p, size_t n)
{
    for (int guard = 0; n && guard < 64; guard++) {
        size_t k = rpc_conn_input(c, p, n);
        p += k;
        n -= k;
        if (!k)
            rpc_conn_pump(c);
    }
}

static void send_env(struct rpc_conn *c, mdl_envelope *env, uint64_t id)
{
    uint8_t *f;
    size_t n;
    env->version = 1;
    env->request_id = id;
    if (frame_encode(env, &f, &n) == 0) {
        feed(c, f, n);
        free(f);
    }
}

static void api(mdl_envelope *env)
{
    uint8_t *f;
    size_t n;
    struct api_ctx ctx = { .eng = eng };
    if (host_api_handle(&ctx, env, &f, &n) == 0)
        free(f);
}

static bool allow_all(void *ctx, const char *a, const char *b)
{
    return true;
}

/* One end of a copy: the grant (as the peer names it), the peer's own MDL,
 * or something wrong. */
static void copy_end(Mdlmap__V1__CopyEnd *e, struct in *in, const struct sink *s, const struct sink *ps)
{
    mdlmap__v1__copy_end__init(e);
    uint8_t sel = (uint8_t)take(in, 1);
    switch (sel & 3) {
    case 0:
        e->granter_cid = 3;
        e->ref = s->ref;
        break;
    case 1:
        e->ref = ps->mdl;
        break;
    case 2:
        e->granter_cid = sel & 4 ? 4 : 3;
        e->ref = sel & 8 ? s->mdl : s->ref ^ sel;
        break;
    default:
        e->granter_cid = take(in, 1);
        e->ref = take(in, 8);
        break;
    }
    e->offset = sel & 0x10 ? take(in, 8) : take(in, 3);
}

/* Requests of the peer VM's connection pc: lock its own buffer, copy. */
static void peer_request(struct rpc_conn *pc, struct sink *ps, const struct sink *s, struct in *in, uint64_t *id)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    uint8_t sel = (uint8_t)take(in, 1);
    if (sel & 1) {
        Mdlmap__V1__LockRequest rq = MDLMAP__V1__LOCK_REQUEST__INIT;
        Mdlmap__V1__FrameRun fr = MDLMAP__V1__FRAME_RUN__INIT, *frp = &fr;
        rq.byte_offset = (uint32_t)take(in, 2) % 4096;
        fr.first_pfn = take(in, 2) % 0x1000;
        fr.count = 1 + (uint32_t)take(in, 1) % 32;
        rq.byte_count = fr.count * 4096 - rq.byte_offset;
        rq.runs = &frp;
        rq.n_runs = 1;
        rq.operation = (Mdlmap__V1__LockOperation)(sel >> 1 & 1);
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
        env.lock = &rq;
        send_env(pc, &env, (*id)++);
        return;
    }
    Mdlmap__V1__GrantCopyRequest rq = MDLMAP__V1__GRANT_COPY_REQUEST__INIT;
    Mdlmap__V1__CopyOp ops[66], *ptrs[66];
    Mdlmap__V1__CopyEnd ends[2 * 66];
    size_t n = (size_t)take(in, 1) % 67;
    for (size_t i = 0; i < n; i++) {
        mdlmap__v1__copy_op__init(&ops[i]);
        copy_end(&ends[2 * i], in, s, ps);
        copy_end(&ends[2 * i + 1], in, s, ps);
        ops[i].src = &ends[2 * i];
        ops[i].dst = take(in, 1) & 0x80 ? NULL : &ends[2 * i + 1];
        ops[i].length = sel & 2 ? take(in, 8) : take(in, 2);
        ptrs[i] = &ops[i];
    }
    rq.ops = ptrs;
    rq.n_ops = n;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY;
    env.grant_copy = &rq;
    send_env(pc, &env, (*id)++);
}

static void program(struct rpc_conn *c, struct sink *s, struct rpc_conn *pc, struct sink *ps, struct in *in)
{
    uint64_t pfns[64];
    uint64_t id = 1;
    while (in->n) {
        unsigned op = (unsigned)take(in, 1) % 13;
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
        switch (op) {
        case 0: {
            Mdlmap__V1__LockRequest rq = MDLMAP__V1__LOCK_REQUEST__INIT;
            rq.byte_offset = (uint32_t)take(in, 2) % 4200;
            rq.byte_count = (uint32_t)take(in, 3);
            size_t np = (size_t)take(in, 1) % 64;
            for (size_t i = 0; i < np; i++) {
                uint64_t v = take(in, 2);
                /* mostly RAM frames; sometimes the hole, the end, or wild values */
                pfns[i] = (v & 0xC000) == 0xC000 ? v << 40 : v % 0x3400;
            }
            rq.pfns = pfns;
            rq.n_pfns = np;
            rq.operation = (Mdlmap__V1__LockOperation)(take(in, 1) % 4);
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
            env.lock = &rq;
            send_env(c, &env, id++);
            break;
        }
        case 1: {
            Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
            uint8_t sel = (uint8_t)take(in, 1);
            rq.mdl_handle = sel & 1 ? s->mdl : s->mdl ^ sel;
            rq.access_mode = (Mdlmap__V1__AccessMode)(sel >> 6);
            rq.cache_type = (Mdlmap__V1__CacheType)(take(in, 1) % 8);
            rq.priority = (uint32_t)take(in, 4);
            if (sel & 2)
                rq.priority &= 0xC000003F;
            rq.consumer = "fuzz";
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
            env.map = &rq;
            send_env(c, &env, id++);
            break;
        }
        case 2: {
            Mdlmap__V1__UnmapRequest rq = MDLMAP__V1__UNMAP_REQUEST__INIT;
            uint8_t sel = (uint8_t)take(in, 1);
            rq.map_handle = sel & 1 ? s->map : 0;
            rq.address = sel & 2 ? s->addr : s->addr + sel;
            rq.mdl_handle = sel & 4 ? s->mdl : sel;
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP;
            env.unmap = &rq;
            send_env(c, &env, id++);
            break;
        }
        case 3: {
            Mdlmap__V1__UnlockRequest rq = MDLMAP__V1__UNLOCK_REQUEST__INIT;
            rq.mdl_handle = take(in, 1) & 1 ? s->mdl : 7;
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK;
            env.unlock = &rq;
            send_env(c, &env, id++);
            break;
        }
        case 4: {
            Mdlmap__V1__ReadRequest rq = MDLMAP__V1__READ_REQUEST__INIT;
            rq.map_handle = s->map;
            rq.offset = take(in, 3);
            rq.length = (uint32_t)take(in, 3);
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_READ;
            env.read = &rq;
            api(&env);
            break;
        }
        case 5: {
            Mdlmap__V1__WriteRequest rq = MDLMAP__V1__WRITE_REQUEST__INIT;
            uint8_t buf[64] = { 0 };
            rq.map_handle = s->map;
            rq.offset = take(in, 3);
            rq.data.len = (size_t)take(in, 1) % sizeof(buf);
            rq.data.data = buf;
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
            env.write = &rq;
            api(&env);
            Mdlmap__V1__ListMappingsRequest lr = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
            env.list = &lr;
            api(&env);
            break;
        }
        case 7: { /* the consumer answers (or answers something else) */
            uint8_t sel = (uint8_t)take(in, 1);
            uint64_t base = sel & 1 ? 0x7f0000000000ull + (take(in, 2) << 12) : take(in, 8);
            map_engine_user_complete(eng, sel & 2 ? consumer_id : consumer_id + 1,
                                     sel & 4 ? last_user_map : last_user_map ^ sel, sel & 8 ? -16 : 0, base,
                                     "fuzz");
            break;
        }
        case 8: { /* UserMode map into the fake consumer */
            Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
            uint8_t sel = (uint8_t)take(in, 1);
            rq.mdl_handle = s->mdl;
            rq.access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
            rq.consumer = sel & 1 ? "fuzz" : "other";
            rq.requested_address = sel & 2 ? take(in, 8) : 0;
            rq.priority = 16;
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
            env.map = &rq;
            send_env(c, &env, id++);
            break;
        }
        case 9: { /* Lock with LockRequest.runs: sel bits 0-2 runs, 6 wild counts, 7 pfns too */
            Mdlmap__V1__LockRequest rq = MDLMAP__V1__LOCK_REQUEST__INIT;
            Mdlmap__V1__FrameRun fr[8], *frp[8];
            uint8_t sel = (uint8_t)take(in, 1);
            rq.byte_offset = (uint32_t)take(in, 2) % 4200;
            rq.byte_count = (uint32_t)take(in, 4);
            size_t nr = sel & 7;
            for (size_t i = 0; i < nr; i++) {
                uint64_t v = take(in, 2);
                mdlmap__v1__frame_run__init(&fr[i]);
                /* mostly RAM frames (runs may cross into the hole or past RAM) */
                fr[i].first_pfn = (v & 0xC000) == 0xC000 ? v << 40 : v % 0x3400;
                fr[i].count = (uint32_t)(sel & 0x40 ? take(in, 4) : take(in, 2) % 0x1400);
                frp[i] = &fr[i];
            }
            rq.runs = frp;
            rq.n_runs = nr;
            if (sel & 0x80) {
                pfns[0] = take(in, 2) % 0x3400;
                rq.pfns = pfns;
                rq.n_pfns = 1;
            }
            rq.operation = (Mdlmap__V1__LockOperation)(take(in, 1) % 4);
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
            env.lock = &rq;
            send_env(c, &env, id++);
            break;
        }
        case 10: { /* Grant to the peer VM (or elsewhere), ListGrants */
            Mdlmap__V1__GrantRequest rq = MDLMAP__V1__GRANT_REQUEST__INIT;
            uint8_t sel = (uint8_t)take(in, 1);
            rq.mdl_handle = sel & 1 ? s->mdl : sel;
            rq.peer_cid = sel & 2 ? 4 : sel & 4 ? 3 : take(in, 8);
            rq.access = (Mdlmap__V1__GrantAccess)(sel >> 4 & 3);
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT;
            env.grant = &rq;
            send_env(c, &env, id++);
            Mdlmap__V1__ListGrantsRequest lr = MDLMAP__V1__LIST_GRANTS_REQUEST__INIT;
            lr.vm_name = sel & 8 ? "peer" : "";
            mdl_envelope le = MDLMAP__V1__ENVELOPE__INIT;
            le.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST_GRANTS;
            le.list_grants = &lr;
            api(&le);
            break;
        }
        case 11: { /* Revoke: by the granter, or by the peer (refused) */
            Mdlmap__V1__RevokeRequest rq = MDLMAP__V1__REVOKE_REQUEST__INIT;
            uint8_t sel = (uint8_t)take(in, 1);
            rq.grant_ref = sel & 1 ? s->ref : take(in, 8);
            env.body_case = MDLMAP__V1__ENVELOPE__BODY_REVOKE;
            env.revoke = &rq;
            send_env(sel & 2 ? pc : c, &env, id++);
            break;
        }
        case 12:
            peer_request(pc, ps, s, in, &id);
            drain(ps);
            break;
        default: {
            size_t n = (size_t)take(in, 1);
            if (n > in->n)
                n = in->n;
            feed(c, in->p, n);
            in->p += n;
            in->n -= n;
            break;
        }
        }
        drain(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!eng) {
        log_threshold = -1; /* quiet */
        if (fake_vm_init(&vm, "fuzz", 3) < 0)
            abort(); /* test setup, not guest input */
        struct map_limits lim = { .vm_page_quota = 4096, .global_page_quota = 8192, .max_vmas = 512 };
        eng = map_engine_new(&lim);
        if (!eng || map_engine_consumer_add(eng, "fuzz", &fake_ops, NULL, &consumer_id) < 0)
            abort();
        fuzz_vm = fake_vm_add(&vm, eng);
        if (!fuzz_vm || fake_vm_init(&peer_vm, "peer", 4) < 0 || !(fuzz_peer = fake_vm_add(&peer_vm, eng)))
            abort();
        struct map_grant_hooks gh = { .allowed = allow_all, .notice = rpc_conn_grant_notice };
        map_engine_set_grant_hooks(eng, &gh);
    }
    if (size < 1)
        return 0;
    struct sink s = { .budget = data[0] & 0x80 ? 64 + data[0] * 16u : SIZE_MAX };
    frame_reader_init(&s.rd, MDLMAP_MAX_FRAME);
    struct rpc_conn c;
    struct fconn_budget rx;
    rpc_rx_budget_init(&rx);
    rpc_conn_init(&c, eng, fuzz_vm, ++conn_ids, sink_send, &s, &rx);
    struct sink ps = { .budget = SIZE_MAX };
    frame_reader_init(&ps.rd, MDLMAP_MAX_FRAME);
    struct rpc_conn pc;
    struct fconn_budget prx;
    rpc_rx_budget_init(&prx);
    rpc_conn_init(&pc, eng, fuzz_peer, ++conn_ids, sink_send, &ps, &prx);
    struct in in = { data + 1, size - 1 };
    if (data[0] & 1) {
        program(&c, &s, &pc, &ps, &in);
    } else {
        while (in.n) {
            size_t n = 1 + (size_t)(in.p[0] % 97);
            if (n > in.n)
                n = in.n;
            feed(&c, in.p, n);
            in.p += n;
            in.n -= n;
        }
    }
    s.budget = SIZE_MAX;
    rpc_conn_pump(&c);
    rpc_conn_fini(&c, "fuzz input done"); /* revokes its grants: notices to pc */
    rpc_conn_pump(&pc);
    rpc_conn_fini(&pc, "fuzz input done");
    frame_reader_free(&s.rd);
    frame_reader_free(&ps.rd);
    return 0;
}
