/* Cross-VM grants over the guest RPC port, four harness guests on one real
 * hostd (--sharing on, pairs vm0,vm1 and vm0,vm3): A (vm0, cid 3) grants, B
 * (vm1, cid 4) copies, C (vm2, cid 5) is the third VM no grant names, D
 * (vm3, cid 6) copies alongside B (fairness between VMs). Every
 * validation rule of GrantCopy (ranges, overflow, rights, wrong peer, stale
 * and rebooted refs, a batch with one bad op, the batch bound), the grant
 * bounds and policy, revocation (explicit, during a sliced copy, by unlock,
 * by the granting connection closing, by device reset, by QEMU going away,
 * by the granting VM's removal at run time)
 * with its notice, the host view (ListGrants), and a hostd without
 * --sharing; `mdlmapctl grants` when its path is given.
 * usage: test_grants HOSTD [MDLMAPCTL] */
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "rpc_session.h"

#define PG 4096u
#define MIB (1u << 20)
#define A_CID 3u
#define B_CID 4u
#define C_CID 5u
#define D_CID 6u
#define BIG_GPA (32ull << 20)   /* 64 MiB buffers (low region of a 512 MiB guest) */
#define BIG_LEN (64u << 20)
#define RW_GPA (128ull << 20)   /* 1 MiB buffers */
#define SCAT_LOW_PFN ((160ull << 20) / PG)
#define SCAT_HIGH_PFN ((GM_HIGH_GPA + (8ull << 20)) / PG)
#define IO_READ 0u
#define IO_WRITE 1u

#define ST_SUCCESS 0
#define ST_INVALID_HANDLE ((int32_t)0xC0000008)
#define ST_INVALID_PARAMETER ((int32_t)0xC000000D)
#define ST_ACCESS_DENIED ((int32_t)0xC0000022)
#define ST_INSUFFICIENT ((int32_t)0xC000009A)
#define ST_REVOKED ((int32_t)0xE0010001)

struct world {
    struct rig rig;
    struct vdev *a, *b, *c, *d;
    struct rpc_session ra, rb, rc, rd;
};

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(p + i, &x, n - i < 4 ? n - i : 4);
    }
}

static uint8_t *ram(struct vdev *d, uint64_t gpa, uint64_t len)
{
    return gm_ptr(&d->g.gm, gpa, len);
}

static uint64_t lock_buf(struct rpc_session *r, uint64_t gpa, uint32_t len, uint32_t op, const char *what)
{
    uint64_t mdl = 0;
    int32_t st = rpc_lock_run(r, 0, len, gpa / PG, len / PG, op, &mdl);
    tap_check(st == 0 && mdl, "%s: lock %u bytes at GPA 0x%" PRIx64 " -> %s %s", what, len, gpa,
              rpc_status_name(st), st ? r->detail : "");
    return mdl;
}

static bool open_hello(struct rpc_session *r, struct vdev *d, const char *who)
{
    if (!tap_check(rpc_open(r, d), "%s connects to the RPC port", who))
        return false;
    return tap_check(rpc_hello(r, 1, 1, who, NULL) == 0, "%s: Hello", who);
}

/* One op copy: its status (envelope failures as themselves). */
static int32_t copy1(struct rpc_session *r, struct rpc_copy op, uint64_t *copied)
{
    int32_t st1 = 0;
    uint64_t c = 0;
    int32_t st = rpc_grant_copy(r, &op, 1, &st1, &c);
    if (copied)
        *copied = c;
    return st ? st : st1;
}

static Mdlmap__V1__ListGrantsResponse *list_grants(struct world *w, const char *vm, mdl_envelope **keep)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListGrantsRequest q = MDLMAP__V1__LIST_GRANTS_REQUEST__INIT;
    q.vm_name = (char *)vm;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST_GRANTS;
    e.list_grants = &q;
    *keep = api_call(w->rig.api, &e);
    if (!*keep || (*keep)->status != 0 || (*keep)->body_case != MDLMAP__V1__ENVELOPE__BODY_LIST_GRANTS_REPLY)
        return NULL;
    return (*keep)->list_grants_reply;
}

static size_t count_grants(struct world *w, const char *vm)
{
    mdl_envelope *k;
    Mdlmap__V1__ListGrantsResponse *l = list_grants(w, vm, &k);
    size_t n = l ? l->n_grants : (size_t)-1;
    if (k)
        frame_envelope_free(k);
    return n;
}

/* A grants its 64 MiB buffer read-only to B; B copies it whole into its own. */
static void basic(struct world *w, uint64_t a_big, uint64_t b_big, uint64_t *ref_out)
{
    uint8_t *src = ram(w->a, BIG_GPA, BIG_LEN), *dst = ram(w->b, BIG_GPA, BIG_LEN);
    fill(src, BIG_LEN, 1);
    memset(dst, 0, BIG_LEN);
    uint64_t ref = 0;
    int32_t st = rpc_grant(&w->ra, a_big, B_CID, 0, &ref);
    tap_check(st == 0 && ref, "A grants its 64 MiB MDL read-only to cid %u -> %s, ref 0x%" PRIx64, B_CID,
              rpc_status_name(st), ref);
    *ref_out = ref;
    uint64_t copied = 0;
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_big, 0, BIG_LEN }, &copied);
    tap_check(st == 0 && copied == BIG_LEN, "B copies all 64 MiB from the grant in one op -> %s, %" PRIu64 " bytes",
              rpc_status_name(st), copied);
    tap_check(!memcmp(src, dst, BIG_LEN), "B's buffer now holds exactly A's 64 MiB");

    mdl_envelope *k;
    Mdlmap__V1__ListGrantsResponse *l = list_grants(w, "vm1", &k);
    bool found = false;
    for (size_t i = 0; l && i < l->n_grants; i++) {
        Mdlmap__V1__GrantInfo *g = l->grants[i];
        if (g->grant_ref == ref)
            found = !strcmp(g->granter_vm, "vm0") && g->granter_cid == A_CID && !strcmp(g->grantee_vm, "vm1") &&
                    g->grantee_cid == B_CID && g->access == 0 && g->byte_count == BIG_LEN && g->copies == 1 &&
                    g->bytes_copied == BIG_LEN && g->mdl_handle == a_big;
    }
    tap_check(found, "host API ListGrants (vm1): the grant with both VMs, read-only, 64 MiB, 1 copy, 64 MiB copied");
    if (k)
        frame_envelope_free(k);
}

/* One event of the subscription on fd within 5 s, or NULL. */
static mdl_envelope *next_event(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    mdl_envelope *r = NULL;
    if (poll(&p, 1, 5000) != 1 || frame_read_fd(fd, &r) != 0)
        return NULL;
    if (r->body_case != MDLMAP__V1__ENVELOPE__BODY_EVENT) {
        frame_envelope_free(r);
        return NULL;
    }
    return r;
}

/* GRANT_CREATED and GRANT_REVOKED on the host event stream. */
static void grant_events(struct world *w, uint64_t a_big)
{
    int fd = api_connect(w->rig.api);
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__SubscribeRequest rq = MDLMAP__V1__SUBSCRIBE_REQUEST__INIT;
    Mdlmap__V1__EventType types[2] = { MDLMAP__V1__EVENT_TYPE__GRANT_CREATED, MDLMAP__V1__EVENT_TYPE__GRANT_REVOKED };
    rq.types = types;
    rq.n_types = 2;
    rq.vm_name = "";
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = 77;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE;
    e.subscribe = &rq;
    bool subscribed = fd >= 0 && frame_write_fd(fd, &e) == 0 && frame_read_fd(fd, &r) == 0 && r->status == 0;
    if (r)
        frame_envelope_free(r);
    if (!tap_check(subscribed, "events: subscribed to GRANT_CREATED and GRANT_REVOKED")) {
        if (fd >= 0)
            close(fd);
        return;
    }
    uint64_t ref = 0;
    rpc_grant(&w->ra, a_big, B_CID, 0, &ref);
    rpc_revoke(&w->ra, ref);
    char hex[32];
    snprintf(hex, sizeof(hex), "ref 0x%" PRIx64 " ", ref);
    mdl_envelope *c = next_event(fd), *v = c ? next_event(fd) : NULL;
    tap_check(c && c->event->type == MDLMAP__V1__EVENT_TYPE__GRANT_CREATED && !strcmp(c->event->vm_name, "vm0") &&
                  c->event->guest_cid == A_CID && c->event->mdl_handle == a_big && strstr(c->event->detail, hex) &&
                  strstr(c->event->detail, "to vm1 (cid 4), read-only"),
              "events: GRANT_CREATED (granter vm0, its MDL; detail \"%s\")", c ? c->event->detail : "none");
    tap_check(v && v->event->type == MDLMAP__V1__EVENT_TYPE__GRANT_REVOKED && v->event->seq == c->event->seq + 1 &&
                  strstr(v->event->detail, hex) && strstr(v->event->detail, ": revoked"),
              "events: GRANT_REVOKED next (detail \"%s\")", v ? v->event->detail : "none");
    if (c)
        frame_envelope_free(c);
    if (v)
        frame_envelope_free(v);
    close(fd);
}

/* mdlmapctl grants (argv[2]): the same grant as the host API shows it. */
static void ctl_grants(struct world *w, const char *ctl, uint64_t ref)
{
    if (!ctl)
        return;
    char cmd[512], line[512], want[64];
    snprintf(cmd, sizeof(cmd), "'%s' --api '%s' grants vm1 2>&1", ctl, w->rig.api);
    snprintf(want, sizeof(want), "0x%016" PRIx64 " vm0", ref);
    FILE *f = popen(cmd, "r");
    bool row = false, total = false;
    while (f && fgets(line, sizeof(line), f)) {
        row |= strncmp(line, want, strlen(want)) == 0 && strstr(line, " vm1 ") && strstr(line, " read ") &&
               strstr(line, " 67108864 ");
        total |= strcmp(line, "1 grant\n") == 0;
    }
    int rc = f ? pclose(f) : -1;
    tap_check(rc == 0 && row && total, "mdlmapctl grants vm1: the grant's row (vm0 -> vm1, read, 64 MiB), 1 grant");
}

static void validation(struct world *w, uint64_t ref, uint64_t a_big, uint64_t b_big, uint64_t b_small)
{
    /* rights: a write through a read-only grant */
    int32_t st = copy1(&w->rb, (struct rpc_copy){ 0, b_big, 0, A_CID, ref, 0, 4096 }, NULL);
    tap_check(st == ST_ACCESS_DENIED, "write through a read-only grant -> %s", rpc_status_name(st));
    /* ranges */
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, BIG_LEN - 4095, 0, b_big, 0, 4096 }, NULL);
    tap_check(st == ST_INVALID_PARAMETER, "src range one byte past the grant's end -> %s", rpc_status_name(st));
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_small, MIB - 10, 11 }, NULL);
    tap_check(st == ST_INVALID_PARAMETER, "dst range one byte past the own MDL's end -> %s", rpc_status_name(st));
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, UINT64_MAX - 1, 0, b_big, 0, 4 }, NULL);
    tap_check(st == ST_INVALID_PARAMETER, "offset near 2^64 (offset + length wraps) -> %s", rpc_status_name(st));
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 8, 0, b_big, 0, UINT64_MAX - 4 }, NULL);
    tap_check(st == ST_INVALID_PARAMETER, "length near 2^64 -> %s", rpc_status_name(st));
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, BIG_LEN, 0, b_big, 0, 0 }, NULL);
    tap_check(st == ST_SUCCESS, "a zero-length op at the very end is fine -> %s", rpc_status_name(st));
    /* wrong peer: C names A's grant correctly; B names it with the wrong granter */
    st = copy1(&w->rc, (struct rpc_copy){ A_CID, ref, 0, 0, 0x1234, 0, 16 }, NULL);
    tap_check(st == ST_INVALID_HANDLE || st == ST_INVALID_PARAMETER,
              "third VM C uses A's grant (ref and granter right) -> %s", rpc_status_name(st));
    {
        /* C with a real own MDL, so only the grant can be what is refused */
        uint64_t c_mdl = lock_buf(&w->rc, 8ull << 20, 4096, IO_WRITE, "C");
        int32_t s1 = 0;
        struct rpc_copy op = { A_CID, ref, 0, 0, c_mdl, 0, 16 };
        st = rpc_grant_copy(&w->rc, &op, 1, &s1, NULL);
        tap_check(st == 0 && s1 == ST_INVALID_HANDLE, "C's copy from A's grant into its own MDL -> %s",
                  rpc_status_name(s1));
        rpc_unlock(&w->rc, c_mdl, NULL);
    }
    st = copy1(&w->rb, (struct rpc_copy){ C_CID, ref, 0, 0, b_big, 0, 16 }, NULL);
    tap_check(st == ST_INVALID_HANDLE, "B names the grant with the wrong granter cid -> %s", rpc_status_name(st));
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref ^ 1, 0, 0, b_big, 0, 16 }, NULL);
    tap_check(st == ST_INVALID_HANDLE, "a guessed ref (the real one ^ 1) -> %s", rpc_status_name(st));
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, a_big, 0, 16 }, NULL);
    tap_check(st == ST_INVALID_HANDLE, "A's MDL handle as B's own MDL -> %s", rpc_status_name(st));
    /* a read-locked own MDL is no destination */
    uint64_t b_ro = lock_buf(&w->rb, RW_GPA + 2 * MIB, 4096, IO_READ, "B read-locked");
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_ro, 0, 16 }, NULL);
    tap_check(st == ST_ACCESS_DENIED, "copy into an own MDL locked for IoReadAccess -> %s", rpc_status_name(st));
    rpc_unlock(&w->rb, b_ro, NULL);

    /* a batch with one bad op: the others are done */
    uint8_t *src = ram(w->a, BIG_GPA, BIG_LEN), *dst = ram(w->b, RW_GPA, MIB);
    memset(dst, 0, MIB);
    struct rpc_copy ops[3] = {
        { A_CID, ref, 0, 0, b_small, 0, 1000 },
        { A_CID, ref, 0, 0, b_small, 1000, MIB },            /* dst past the end */
        { A_CID, ref, 5 * MIB + 3, 0, b_small, 4096, 70000 }, /* unaligned, across pages */
    };
    int32_t sts[3];
    uint64_t cps[3];
    st = rpc_grant_copy(&w->rb, ops, 3, sts, cps);
    tap_check(st == 0 && sts[0] == 0 && sts[1] == ST_INVALID_PARAMETER && sts[2] == 0,
              "batch of 3 with the middle op bad -> %s / %s / %s", rpc_status_name(sts[0]), rpc_status_name(sts[1]),
              rpc_status_name(sts[2]));
    tap_check(cps[0] == 1000 && cps[1] == 0 && cps[2] == 70000, "bytes copied per op: %" PRIu64 " %" PRIu64 " %" PRIu64,
              cps[0], cps[1], cps[2]);
    tap_check(!memcmp(dst, src, 1000) && !memcmp(dst + 4096, src + 5 * MIB + 3, 70000) && dst[1000] == 0,
              "the good ops' bytes landed; the bad op wrote nothing");
    /* the batch bound */
    struct rpc_copy many[65];
    for (int i = 0; i < 65; i++)
        many[i] = (struct rpc_copy){ A_CID, ref, 0, 0, b_small, 0, 1 };
    st = rpc_grant_copy(&w->rb, many, 65, NULL, NULL);
    tap_check(st == ST_INVALID_PARAMETER, "65 ops in one batch -> %s", rpc_status_name(st));
    st = rpc_grant_copy(&w->rb, many, 64, NULL, NULL);
    tap_check(st == ST_SUCCESS, "64 ops in one batch -> %s", rpc_status_name(st));
}

/* Read-write grants, and an MDL whose pages are scattered over both RAM regions. */
static void rw_and_scattered(struct world *w, uint64_t b_small)
{
    uint64_t a_ro = lock_buf(&w->ra, RW_GPA, MIB, IO_READ, "A read-locked 1 MiB");
    uint64_t ref = 0;
    int32_t st = rpc_grant(&w->ra, a_ro, B_CID, 1, &ref);
    tap_check(st == ST_ACCESS_DENIED, "read-write grant of an MDL locked for IoReadAccess -> %s", rpc_status_name(st));
    rpc_unlock(&w->ra, a_ro, NULL);
    uint64_t a_rw = lock_buf(&w->ra, RW_GPA, MIB, IO_WRITE, "A write-locked 1 MiB");
    st = rpc_grant(&w->ra, a_rw, B_CID, 1, &ref);
    tap_check(st == 0 && ref, "read-write grant of a write-locked MDL -> %s", rpc_status_name(st));
    uint8_t *bsrc = ram(w->b, RW_GPA, MIB), *adst = ram(w->a, RW_GPA, MIB);
    fill(bsrc, MIB, 7);
    memset(adst, 0, MIB);
    uint64_t copied = 0;
    st = copy1(&w->rb, (struct rpc_copy){ 0, b_small, 100, A_CID, ref, 200, 300000 }, &copied);
    tap_check(st == 0 && copied == 300000 && !memcmp(adst + 200, bsrc + 100, 300000) && adst[199] == 0 &&
                  adst[200 + 300000] == 0,
              "B writes 300000 bytes into A's buffer through the read-write grant, exactly there -> %s",
              rpc_status_name(st));
    rpc_unlock(&w->ra, a_rw, NULL);

    /* 8 pages, in the MDL's order: high+7, low+0, high+5, low+2, ... (offset 100 in the first page) */
    uint64_t pfns[8];
    for (int i = 0; i < 8; i++)
        pfns[i] = i % 2 ? SCAT_LOW_PFN + (uint64_t)(i - 1) : SCAT_HIGH_PFN + (uint64_t)(7 - i);
    for (int i = 0; i < 8; i++)
        fill(ram(w->a, pfns[i] * PG, PG), PG, 100 + (uint32_t)i);
    uint32_t len = 8 * PG - 100 - 50;
    uint64_t a_sc = 0;
    st = rpc_lock(&w->ra, 100, len, pfns, 8, IO_READ, &a_sc);
    tap_check(st == 0, "A locks a scattered 8-page MDL over both RAM regions -> %s", rpc_status_name(st));
    st = rpc_grant(&w->ra, a_sc, B_CID, 0, &ref);
    tap_check(st == 0, "A grants it -> %s", rpc_status_name(st));
    uint8_t *bdst = ram(w->b, RW_GPA, MIB);
    memset(bdst, 0, MIB);
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_small, 0, len }, &copied);
    bool same = st == 0 && copied == len;
    for (uint32_t off = 0; same && off < len;) {
        uint64_t b = 100 + off;
        uint32_t in_page = PG - (uint32_t)(b % PG), k = in_page < len - off ? in_page : len - off;
        same = !memcmp(bdst + off, ram(w->a, pfns[b / PG] * PG + b % PG, k), k);
        off += k;
    }
    tap_check(same, "B copies the scattered MDL whole: every byte from the right page, run by run -> %s",
              rpc_status_name(st));
    rpc_unlock(&w->ra, a_sc, NULL);
}

static void policy_and_bounds(struct world *w, uint64_t a_big)
{
    uint64_t ref;
    int32_t st = rpc_grant(&w->ra, a_big, A_CID, 0, &ref);
    tap_check(st == ST_INVALID_PARAMETER, "A grants to itself -> %s", rpc_status_name(st));
    st = rpc_grant(&w->ra, a_big, C_CID, 0, &ref);
    tap_check(st == ST_ACCESS_DENIED, "A grants to C (pair not in --sharing-pair) -> %s", rpc_status_name(st));
    st = rpc_grant(&w->ra, a_big, 99, 0, &ref);
    tap_check(st == ST_ACCESS_DENIED, "A grants to an unknown cid (answered as not allowed) -> %s", rpc_status_name(st));
    st = rpc_grant(&w->ra, 0x1234, B_CID, 0, &ref);
    tap_check(st == ST_INVALID_HANDLE, "grant of an unknown MDL -> %s", rpc_status_name(st));
    st = rpc_grant(&w->ra, a_big, B_CID, 7, &ref);
    tap_check(st == ST_INVALID_PARAMETER, "grant with access 7 -> %s", rpc_status_name(st));

    /* the bound: a second connection of A makes grants until refused */
    struct rpc_session r2;
    if (!open_hello(&r2, w->a, "A (bounds)"))
        return;
    uint64_t m = lock_buf(&r2, RW_GPA + 4 * MIB, 4096, IO_READ, "A (bounds)");
    size_t before = count_grants(w, "vm0");
    unsigned made = 0;
    for (; made < 1100; made++) {
        st = rpc_grant(&r2, m, B_CID, 0, &ref);
        if (st != 0)
            break;
    }
    tap_check(st == ST_INSUFFICIENT && before + made == 1024,
              "grants are refused at 1024 live grants of one VM (%zu before + %u made, then %s)", before, made,
              rpc_status_name(st));
    rpc_close(&r2);
    /* closing the connection revoked its grants: the bound is free again */
    size_t left = before;
    for (int i = 0; i < 100 && (left = count_grants(w, "vm0")) != before; i++)
        vdev_pump(20);
    tap_check(left == before, "the closed connection's %u grants are gone (%zu left)", made, left);
}

/* Revocation while B copies in slices; later uses; notices. */
static void revoke_during_copy(struct world *w, uint64_t ref, uint64_t b_big)
{
    /* 8 x 64 MiB: 512 slices of 1 MiB; the revoke is served between slices */
    struct rpc_copy ops[8];
    for (int i = 0; i < 8; i++)
        ops[i] = (struct rpc_copy){ A_CID, ref, 0, 0, b_big, 0, BIG_LEN };
    unsigned seen = w->rb.notices;
    uint64_t id = rpc_grant_copy_send(&w->rb, ops, 8);
    /* while B's copy runs, another VM's request is served (the loop is not held) */
    struct rpc_hello_info hi;
    int32_t hs = rpc_hello(&w->rc, 1, 1, "C", &hi);
    uint64_t so_far = UINT64_MAX;
    mdl_envelope *k;
    Mdlmap__V1__ListGrantsResponse *l = list_grants(w, "vm0", &k);
    for (size_t i = 0; l && i < l->n_grants; i++)
        if (l->grants[i]->grant_ref == ref)
            so_far = l->grants[i]->bytes_copied - BIG_LEN - 70000 - 1000 - 64; /* minus the earlier copies */
    if (k)
        frame_envelope_free(k);
    int32_t st = rpc_revoke(&w->ra, ref);
    tap_check(hs == 0, "C is answered while B's 512 MiB copy runs -> %s", rpc_status_name(hs));
    tap_check(so_far > 0 && so_far < 8ull * BIG_LEN,
              "the host API is answered meanwhile too, and B's copy is under way (%" PRIu64 " of %llu bytes)", so_far,
              8ull * BIG_LEN);
    tap_check(st == 0, "A revokes the grant while B copies -> %s", rpc_status_name(st));
    int32_t sts[8];
    uint64_t cps[8];
    st = rpc_grant_copy_reply(&w->rb, id, 8, sts, cps, 30000);
    uint64_t total = 0;
    int revoked = 0, ok = 0;
    for (int i = 0; i < 8; i++) {
        total += cps[i];
        revoked += sts[i] == ST_REVOKED;
        ok += sts[i] == 0;
    }
    tap_check(st == 0 && revoked >= 1 && ok + revoked == 8 && total < 8ull * BIG_LEN,
              "B's copy ends with %d op(s) STATUS_MDLMAP_GRANT_REVOKED, %d done, %" PRIu64 " of %llu bytes copied", revoked,
              ok, total, 8ull * BIG_LEN);
    bool partial_ok = true;
    for (int i = 0; i < 8; i++)
        if (sts[i] == ST_REVOKED && cps[i] >= BIG_LEN)
            partial_ok = false;
    tap_check(partial_ok, "a revoked op reports the bytes it copied before (less than its length)");
    bool got = rpc_wait_notice(&w->rb, seen, 5000);
    tap_check(got && w->rb.notice_ref == ref && w->rb.notice_cid == A_CID && !strcmp(w->rb.notice_reason, "revoked"),
              "B received GrantRevokedNotice (cid %" PRIu64 ", ref 0x%" PRIx64 ", \"%s\")", w->rb.notice_cid,
              w->rb.notice_ref, w->rb.notice_reason);
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_big, 0, 16 }, NULL);
    tap_check(st == ST_REVOKED, "a later copy with the revoked ref -> %s", rpc_status_name(st));
    st = rpc_revoke(&w->ra, ref);
    tap_check(st == ST_INVALID_HANDLE, "revoking it again -> %s", rpc_status_name(st));
}

static uint64_t bytes_copied(struct world *w, uint64_t ref)
{
    mdl_envelope *k;
    Mdlmap__V1__ListGrantsResponse *l = list_grants(w, "vm0", &k);
    uint64_t n = UINT64_MAX;
    for (size_t i = 0; l && i < l->n_grants; i++)
        if (l->grants[i]->grant_ref == ref)
            n = l->grants[i]->bytes_copied;
    if (k)
        frame_envelope_free(k);
    return n;
}

/* Fairness between VMs: B copies 512 MiB on each of 3 connections, D 512 MiB
 * on one, all at once. Slices go round-robin between VMs first, so D is done
 * when B's three together have copied about as much (512 MiB), not all 1.5 GiB
 * (which round-robin between connections would give). */
static void fairness(struct world *w, uint64_t a_big)
{
    uint64_t rb_ref = 0, rd_ref = 0;
    int32_t st = rpc_grant(&w->ra, a_big, B_CID, 0, &rb_ref);
    int32_t st2 = rpc_grant(&w->ra, a_big, D_CID, 0, &rd_ref);
    tap_check(st == 0 && st2 == 0, "fairness: A grants its 64 MiB to B and to D");
    struct rpc_session bs[3];
    uint64_t ids[3] = { 0, 0, 0 }, d_mdl = lock_buf(&w->rd, BIG_GPA, BIG_LEN, IO_WRITE, "D");
    struct rpc_copy ops[8];
    unsigned opened = 0;
    for (unsigned i = 0; i < 3; i++) {
        if (!open_hello(&bs[i], w->b, "B (fairness)"))
            break;
        bs[i].timeout_ms = 60000;
        opened++;
        uint64_t m = lock_buf(&bs[i], BIG_GPA, BIG_LEN, IO_WRITE, "B (fairness)");
        for (int k = 0; k < 8; k++)
            ops[k] = (struct rpc_copy){ A_CID, rb_ref, 0, 0, m, 0, BIG_LEN };
        ids[i] = rpc_grant_copy_send(&bs[i], ops, 8);
    }
    for (int k = 0; k < 8; k++)
        ops[k] = (struct rpc_copy){ A_CID, rd_ref, 0, 0, d_mdl, 0, BIG_LEN };
    int32_t sts[8];
    w->rd.timeout_ms = 60000;
    st = rpc_grant_copy(&w->rd, ops, 8, sts, NULL);
    uint64_t b_then = bytes_copied(w, rb_ref);
    tap_check(st == 0 && sts[7] == 0, "fairness: D's 512 MiB copy completes -> %s", rpc_status_name(st));
    tap_check(opened == 3 && b_then < 1024ull * MIB,
              "fairness: meanwhile B's 3 copies moved %" PRIu64 " MiB of 1536 (VMs take turns, not connections)",
              b_then / MIB);
    for (unsigned i = 0; i < opened; i++) {
        st = rpc_grant_copy_reply(&bs[i], ids[i], 8, sts, NULL, 60000);
        tap_check(st == 0 && sts[7] == 0, "fairness: B's copy %u completes too -> %s", i, rpc_status_name(st));
        rpc_close(&bs[i]);
    }
    rpc_revoke(&w->ra, rb_ref);
    rpc_revoke(&w->ra, rd_ref);
    rpc_unlock(&w->rd, d_mdl, NULL);
}

/* A grant of a fresh MDL on session r that B has used once; its ref. */
static uint64_t granted_and_used(struct world *w, struct rpc_session *r, uint64_t gpa, uint64_t b_small,
                                 uint64_t *mdl_out, const char *what)
{
    uint64_t m = lock_buf(r, gpa, 4096, IO_READ, what), ref = 0;
    int32_t st = rpc_grant(r, m, B_CID, 0, &ref);
    int32_t cs = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_small, 0, 4096 }, NULL);
    tap_check(st == 0 && cs == 0, "%s: granted and used by B -> %s / %s", what, rpc_status_name(st), rpc_status_name(cs));
    if (mdl_out)
        *mdl_out = m;
    return ref;
}

static void expect_revoked(struct world *w, unsigned seen, uint64_t ref, uint64_t b_small, const char *reason,
                           const char *what)
{
    bool got = rpc_wait_notice(&w->rb, seen, 5000);
    tap_check(got && w->rb.notice_ref == ref && (!reason || !strcmp(w->rb.notice_reason, reason)),
              "%s: B is told (reason \"%s\")", what, got ? w->rb.notice_reason : "none");
    int32_t st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_small, 0, 16 }, NULL);
    tap_check(st == ST_REVOKED, "%s: B's next copy -> %s", what, rpc_status_name(st));
}

static void implicit_revocations(struct world *w, uint64_t b_small)
{
    /* unlock */
    uint64_t m;
    unsigned seen = w->rb.notices;
    uint64_t ref = granted_and_used(w, &w->ra, RW_GPA + 6 * MIB, b_small, &m, "unlock");
    rpc_unlock(&w->ra, m, NULL);
    expect_revoked(w, seen, ref, b_small, "MDL unlocked", "A unlocks the MDL");

    /* the granting connection closes (the program exits) */
    struct rpc_session r2;
    if (open_hello(&r2, w->a, "A (exits)")) {
        seen = w->rb.notices;
        ref = granted_and_used(w, &r2, RW_GPA + 7 * MIB, b_small, NULL, "connection close");
        rpc_close(&r2);
        expect_revoked(w, seen, ref, b_small, NULL, "A's granting connection closes");
    }

    /* A's device is reset (reboot): refs of a rebooted VM */
    seen = w->rb.notices;
    ref = granted_and_used(w, &w->ra, RW_GPA + 8 * MIB, b_small, NULL, "reboot");
    uint32_t base[2];
    int rc = guest_stop(&w->a->g, base);
    rc = rc ? rc : guest_restart(&w->a->g, false);
    tap_check(rc == 0, "A's device stopped and restarted (reboot) %s", rc ? w->a->g.err : "");
    vdev_forget_conns(w->a);
    rpc_forget(&w->ra);
    expect_revoked(w, seen, ref, b_small, NULL, "A reboots");
    tap_check(open_hello(&w->ra, w->a, "A (after reboot)"), "A talks to hostd again after its reboot");
}

/* B's copies must end cleanly when A's QEMU goes, and hostd keep nothing of A. */
static void granter_qemu_gone(struct world *w, uint64_t b_big, uint64_t b_small)
{
    uint64_t a_big = lock_buf(&w->ra, BIG_GPA, BIG_LEN, IO_READ, "A (QEMU kill)");
    uint64_t ref = 0;
    rpc_grant(&w->ra, a_big, B_CID, 0, &ref);
    unsigned seen = w->rb.notices;
    struct rpc_copy ops[8];
    for (int i = 0; i < 8; i++)
        ops[i] = (struct rpc_copy){ A_CID, ref, 0, 0, b_big, 0, BIG_LEN };
    uint64_t id = rpc_grant_copy_send(&w->rb, ops, 8);
    vdev_pump(5);
    vdev_down(w->a); /* QEMU is gone: socket closed, memory table with it */
    rpc_forget(&w->ra);
    int32_t sts[8];
    uint64_t cps[8];
    int32_t st = rpc_grant_copy_reply(&w->rb, id, 8, sts, cps, 30000);
    int bad = 0;
    for (int i = 0; i < 8; i++)
        bad += sts[i] != 0 && sts[i] != ST_REVOKED;
    tap_check(st == 0 && bad == 0 && sts[7] == ST_REVOKED, "B's running copy ends cleanly (last op %s)",
              rpc_status_name(sts[7]));
    tap_check(rpc_wait_notice(&w->rb, seen, 5000), "B is told (reason \"%s\")", w->rb.notice_reason);
    st = copy1(&w->rb, (struct rpc_copy){ A_CID, ref, 0, 0, b_small, 0, 16 }, NULL);
    tap_check(st == ST_REVOKED, "B's next copy from the dead VM's grant -> %s", rpc_status_name(st));
    tap_check(count_grants(w, "vm0") == 0, "hostd lists no grant of A any more");
    mdl_envelope *s = api_stats(w->rig.api);
    tap_check(s && s->stats_reply->locked_mdls == 2, "hostd holds only B's 2 locked MDLs (%" PRIu64 ")",
              s ? s->stats_reply->locked_mdls : 0);
    bool leak = false;
    for (size_t i = 0; s && i < s->stats_reply->n_recent_leaks; i++)
        leak |= !strcmp(s->stats_reply->recent_leaks[i]->vm_name, "vm0");
    tap_check(leak, "A's MDLs were reported as leaks");
    if (s)
        frame_envelope_free(s);
}

/* The peer dies with a copy running: nothing of it stays; A can still revoke. */
static void peer_gone(struct world *w, struct guest_opts *o)
{
    w->a = rig_vm_up(&w->rig, 0, o, "A again");
    if (!w->a || !open_hello(&w->ra, w->a, "A (new QEMU)"))
        return;
    uint64_t a_big = lock_buf(&w->ra, BIG_GPA, BIG_LEN, IO_READ, "A (peer dies)"), ref = 0;
    rpc_grant(&w->ra, a_big, B_CID, 0, &ref);
    uint64_t b_big = lock_buf(&w->rb, BIG_GPA, BIG_LEN, IO_WRITE, "B (dies)");
    struct rpc_copy ops[8];
    for (int i = 0; i < 8; i++)
        ops[i] = (struct rpc_copy){ A_CID, ref, 0, 0, b_big, 0, BIG_LEN };
    rpc_grant_copy_send(&w->rb, ops, 8);
    vdev_pump(5);
    vdev_down(w->b);
    rpc_forget(&w->rb);
    free(w->b);
    w->b = NULL;
    int32_t st = rpc_revoke(&w->ra, ref);
    tap_check(st == 0, "B's QEMU died mid-copy; A revokes its grant to B -> %s", rpc_status_name(st));
    tap_check(count_grants(w, "vm1") == 0, "no grant names B any more");
    rpc_unlock(&w->ra, a_big, NULL);
}

/* The granting VM removed at run time (host API VmRemove): the grant goes
 * with it, D is told, and nothing of it is left. */
static void granter_removed(struct world *w)
{
    if (!w->a)
        return;
    uint64_t m = lock_buf(&w->ra, RW_GPA, 4096, IO_READ, "A (removed)"), ref = 0;
    uint64_t dm = lock_buf(&w->rd, RW_GPA, 4096, IO_WRITE, "D (removed)");
    int32_t st = rpc_grant(&w->ra, m, D_CID, 0, &ref);
    int32_t cs = copy1(&w->rd, (struct rpc_copy){ A_CID, ref, 0, 0, dm, 0, 4096 }, NULL);
    tap_check(st == 0 && cs == 0, "A grants to D, D copies -> %s / %s", rpc_status_name(st), rpc_status_name(cs));
    unsigned seen = w->rd.notices;
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *r;
    Mdlmap__V1__VmRemoveRequest rq = MDLMAP__V1__VM_REMOVE_REQUEST__INIT;
    rq.name = "vm0";
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE;
    e.vm_remove = &rq;
    r = api_call(w->rig.api, &e);
    tap_check(r && r->status == 0, "host API VmRemove vm0 (A) -> %s", r ? rpc_status_name(r->status) : "no reply");
    if (r)
        frame_envelope_free(r);
    rpc_forget(&w->ra);
    vdev_down(w->a);
    free(w->a);
    w->a = NULL;
    tap_check(rpc_wait_notice(&w->rd, seen, 5000) && w->rd.notice_ref == ref, "D is told (reason \"%s\")",
              w->rd.notice_reason);
    st = copy1(&w->rd, (struct rpc_copy){ A_CID, ref, 0, 0, dm, 0, 16 }, NULL);
    tap_check(st == ST_REVOKED, "D's next copy from the removed VM's grant -> %s", rpc_status_name(st));
    tap_check(count_grants(w, "") == 0, "no grant left in hostd");
    rpc_unlock(&w->rd, dm, NULL);
}

static void sharing_off(const char *bin)
{
    struct rig rig;
    uint64_t cids[2] = { A_CID, B_CID };
    rig_start(&rig, bin, "grants-off", 2, cids);
    struct vdev *a = rig_vm_up(&rig, 0, NULL, "off A");
    struct rpc_session r;
    if (a && open_hello(&r, a, "off A")) {
        uint64_t m = lock_buf(&r, 8ull << 20, 4096, IO_READ, "off A"), ref = 1;
        int32_t st = rpc_grant(&r, m, B_CID, 0, &ref);
        tap_check(st == ST_ACCESS_DENIED && ref == 0, "without --sharing a grant -> %s (%s)", rpc_status_name(st),
                  r.detail);
        rpc_close(&r);
    }
    if (a) {
        vdev_down(a);
        free(a);
    }
    rig_stop(&rig);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct world w;
    memset(&w, 0, sizeof(w));
    uint64_t cids[4] = { A_CID, B_CID, C_CID, D_CID };
    const char *more[] = { "--sharing", "on", "--sharing-pair", "vm0,vm1", "--sharing-pair", "vm0,vm3", NULL };
    rig_start_with(&w.rig, bin, "grants", 4, cids, more);
    struct guest_opts o;
    guest_default_opts(&o);
    o.mem_size = 512ull << 20; /* sparse: only touched pages cost memory */
    w.a = rig_vm_up(&w.rig, 0, &o, "A");
    w.b = rig_vm_up(&w.rig, 1, &o, "B");
    w.c = rig_vm_up(&w.rig, 2, NULL, "C");
    w.d = rig_vm_up(&w.rig, 3, &o, "D");
    if (!w.a || !w.b || !w.c || !w.d || !open_hello(&w.ra, w.a, "A") || !open_hello(&w.rb, w.b, "B") ||
        !open_hello(&w.rc, w.c, "C") || !open_hello(&w.rd, w.d, "D")) {
        rig_abort(&w.rig);
        return tap_done();
    }
    w.rb.timeout_ms = 30000;
    uint64_t a_big = lock_buf(&w.ra, BIG_GPA, BIG_LEN, IO_READ, "A");
    uint64_t b_big = lock_buf(&w.rb, BIG_GPA, BIG_LEN, IO_WRITE, "B");
    uint64_t b_small = lock_buf(&w.rb, RW_GPA, MIB, IO_WRITE, "B small");
    uint64_t ref = 0;
    basic(&w, a_big, b_big, &ref);
    ctl_grants(&w, argc > 2 ? argv[2] : NULL, ref);
    grant_events(&w, a_big);
    validation(&w, ref, a_big, b_big, b_small);
    rw_and_scattered(&w, b_small);
    policy_and_bounds(&w, a_big);
    revoke_during_copy(&w, ref, b_big);
    fairness(&w, a_big);
    implicit_revocations(&w, b_small);
    granter_qemu_gone(&w, b_big, b_small);
    free(w.a);
    w.a = NULL;
    peer_gone(&w, &o);
    granter_removed(&w);
    tap_check(hd_alive(&w.rig.p), "hostd is alive");
    if (tap_failures || getenv("MDL_TEST_HOSTD_LOG"))
        hd_log_tail(&w.rig.p, 60);
    rpc_close(&w.rc);
    rpc_close(&w.rd);
    rpc_close(&w.ra);
    for (struct vdev **d = (struct vdev *[]){ w.a, w.b, w.c, w.d }, **e = d + 4; d < e; d++)
        if (*d) {
            vdev_down(*d);
            free(*d);
        }
    rig_stop(&w.rig);
    sharing_off(bin);
    return tap_done();
}
