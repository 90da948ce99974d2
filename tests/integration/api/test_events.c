/* The host event stream against a real hostd (harness guests on two VMs):
 * Subscribe needs the read right; lock/map/unmap/unlock arrive in order with
 * consecutive seq numbers and the right handles; a guest connection closed
 * with a mapping gives LEAK_RECORDED and MAPPING_REMOVED; a quota refusal
 * QUOTA_REFUSED; consumers CONSUMER_REGISTERED/LOST; a device reset
 * VM_RESET; QEMU leaving VM_DISCONNECTED, then its leaks; type and VM
 * filters take exactly their part of the stream; a subscriber that does not
 * read while thousands of events happen costs hostd a bounded amount of
 * memory and later sees dropped > 0, with seq numbers that account for
 * every event it lost.   usage: test_events HOSTD */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rpc_session.h"
#include "usock.h"

#define PG 4096u
#define BUF_PFN ((8u << 20) / PG) /* free low RAM in the harness layout */
#define QUOTA_PAGES 64            /* --vm-page-quota: a Normal map may take 57 */
#define FLOOD_PAIRS 10000         /* lock + unlock: two events each */
#define LOG_MAX 256

#define T(x) MDLMAP__V1__EVENT_TYPE__##x

struct logged {
    uint64_t seq;
    int type;
    char vm[16];
};

struct sub {
    const char *name;
    int fd;
    uint64_t rid;            /* the Subscribe's request id: every event carries it */
    uint64_t next_seq;       /* from the SubscribeResponse */
    uint64_t last_seq;       /* of the last event read (0: none yet) */
    uint64_t dropped;        /* sum of Event.dropped */
    unsigned got;            /* events read */
    unsigned foreign;        /* frames that were not events of this subscription */
    unsigned gaps;           /* seq != last + 1 + dropped (an unfiltered stream must have none) */
    struct logged log[LOG_MAX];
};

static int32_t subscribe_on(int fd, uint64_t rid, const int *types, unsigned ntypes, const char *vm, uint64_t *next)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__SubscribeRequest rq = MDLMAP__V1__SUBSCRIBE_REQUEST__INIT;
    Mdlmap__V1__EventType tv[16];
    for (unsigned i = 0; i < ntypes && i < 16; i++)
        tv[i] = (Mdlmap__V1__EventType)types[i];
    rq.types = tv;
    rq.n_types = ntypes;
    rq.vm_name = (char *)(vm ? vm : "");
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = rid;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE;
    e.subscribe = &rq;
    int32_t st = RPC_NO_REPLY;
    if (frame_write_fd(fd, &e) == 0 && frame_read_fd(fd, &r) == 0 && r->request_id == rid) {
        st = r->status;
        if (st == 0 && r->body_case != MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE_REPLY)
            st = RPC_NO_REPLY;
        if (st == 0 && next)
            *next = r->subscribe_reply->next_seq;
    }
    frame_envelope_free(r);
    return st;
}

static bool sub_open(struct sub *s, const char *api, const char *name, uint64_t rid, const int *types,
                     unsigned ntypes, const char *vm)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    s->rid = rid;
    s->fd = api_connect(api);
    int32_t st = s->fd < 0 ? RPC_NO_REPLY : subscribe_on(s->fd, rid, types, ntypes, vm, &s->next_seq);
    return tap_check(st == 0 && s->next_seq > 0, "%s: Subscribe answered (next_seq %llu, %s)", name,
                     (unsigned long long)s->next_seq, rpc_status_name(st));
}

static void sub_close(struct sub *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* The next event of s within ms (guests pumped meanwhile), or NULL. */
static Mdlmap__V1__Event *sub_next(struct sub *s, int ms, mdl_envelope **env)
{
    *env = NULL;
    for (int waited = 0; waited <= ms; waited += 5) {
        vdev_poll();
        struct pollfd pf = { s->fd, POLLIN, 0 };
        if (poll(&pf, 1, 5) != 1)
            continue;
        if (frame_read_fd(s->fd, env) < 0)
            return NULL;
        if ((*env)->request_id != s->rid || (*env)->body_case != MDLMAP__V1__ENVELOPE__BODY_EVENT) {
            s->foreign++;
            frame_envelope_free(*env);
            *env = NULL;
            continue;
        }
        Mdlmap__V1__Event *ev = (*env)->event;
        uint64_t expect = (s->last_seq ? s->last_seq : s->next_seq - 1) + 1 + ev->dropped;
        s->gaps += ev->seq != expect;
        s->last_seq = ev->seq;
        s->dropped += ev->dropped;
        if (s->got < LOG_MAX) {
            s->log[s->got] = (struct logged){ .seq = ev->seq, .type = ev->type };
            snprintf(s->log[s->got].vm, sizeof(s->log[0].vm), "%s", ev->vm_name);
        }
        s->got++;
        return ev;
    }
    return NULL;
}

/* Read the next event and check it is of type t (and of vm, when given). */
static Mdlmap__V1__Event *expect(struct sub *s, int t, const char *vm, mdl_envelope **env, const char *what)
{
    Mdlmap__V1__Event *ev = sub_next(s, 3000, env);
    bool ok = ev && (int)ev->type == t && (!vm || !strcmp(ev->vm_name, vm)) && ev->time_ns > 0;
    tap_check(ok, "%s: %s event %d%s%s (got %d, vm '%s', seq %llu)", s->name, what, t, vm ? " of " : "",
              vm ? vm : "", ev ? (int)ev->type : -1, ev ? ev->vm_name : "-",
              ev ? (unsigned long long)ev->seq : 0ull);
    return ok ? ev : NULL;
}

/* Read what s still has (until ms of silence). */
static void drain(struct sub *s, int ms)
{
    mdl_envelope *env;
    while (sub_next(s, ms, &env))
        frame_envelope_free(env);
}

/* Subscribe as another user (a forked child drops to uid): its status. */
static int32_t subscribe_as(const char *api, uid_t uid)
{
    pid_t pid = fork();
    if (pid == 0) {
        gid_t g = 65534;
        if (setgroups(0, &g) < 0 || setgid(65534) < 0 || setuid(uid) < 0)
            _exit(100);
        int fd = usock_connect(api, 0);
        int32_t st = fd < 0 ? RPC_NO_REPLY : subscribe_on(fd, 7, NULL, 0, NULL, NULL);
        _exit(st == 0 ? 0 : st == (int32_t)MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED ? 1 : 2);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
        return RPC_NO_REPLY;
    return WEXITSTATUS(status) == 0 ? 0
           : WEXITSTATUS(status) == 1 ? (int32_t)MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED
                                      : RPC_NO_REPLY;
}

static void test_rights(struct rig *rig)
{
    chmod(rig->dir, 0755);
    chmod(rig->api, 0666);
    tap_check(subscribe_as(rig->api, 65533) == (int32_t)MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED,
              "Subscribe without the read right: STATUS_ACCESS_DENIED");
    tap_check(subscribe_as(rig->api, 65534) == 0, "Subscribe with --api-read user:65534: answered");
    /* an unknown type is refused, the connection stays usable */
    int fd = api_connect(rig->api);
    int bad[1] = { 99 }, good[1] = { T(MDL_LOCKED) };
    uint64_t next = 0;
    tap_check(subscribe_on(fd, 1, bad, 1, NULL, NULL) == (int32_t)MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER,
              "Subscribe to an unknown event type: STATUS_INVALID_PARAMETER");
    tap_check(subscribe_on(fd, 2, good, 1, NULL, &next) == 0 && next > 0,
              "then a valid Subscribe on the same connection is answered");
    close(fd);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cids[2] = { 3, 4 };
    const char *more[] = { "--vm-page-quota", "64", "--api-read", "user:65534", NULL };
    rig_start_with(&rig, bin, "mdl-events", 2, cids, more);
    test_rights(&rig);

    /* A: everything. F: mappings of vm1. V: everything of vm0. */
    struct sub A, F, V;
    int maps[2] = { T(MAPPING_CREATED), T(MAPPING_REMOVED) };
    bool subs_ok = sub_open(&A, rig.api, "all", 1001, NULL, 0, NULL);
    subs_ok &= sub_open(&F, rig.api, "mappings of vm1", 1002, maps, 2, "vm1");
    subs_ok &= sub_open(&V, rig.api, "vm0", 1003, NULL, 0, "vm0");
    struct guest_opts o;
    guest_default_opts(&o);
    struct vdev *d0 = subs_ok ? rig_vm_up(&rig, 0, &o, "vm0") : NULL;
    struct vdev *d1 = d0 ? rig_vm_up(&rig, 1, &o, "vm1") : NULL;
    if (!d1) {
        rig_abort(&rig);
        return tap_done();
    }
    mdl_envelope *env;
    Mdlmap__V1__Event *ev = expect(&A, T(VM_CONNECTED), "vm0", &env, "QEMU connects to vm0");
    tap_check(ev && ev->guest_cid == 3 && ev->seq == A.next_seq, "VM_CONNECTED carries cid 3 and the first seq");
    frame_envelope_free(env);
    ev = expect(&A, T(VM_CONNECTED), "vm1", &env, "QEMU connects to vm1");
    frame_envelope_free(env);

    /* R subscribes to resets, then replaces that with MDL_LOCKED under
     * another request id: only the second applies */
    struct sub R;
    int resets[1] = { T(VM_RESET) }, locks[1] = { T(MDL_LOCKED) };
    sub_open(&R, rig.api, "replaced", 1004, resets, 1, NULL);
    uint64_t next2 = 0;
    tap_check(subscribe_on(R.fd, 1005, locks, 1, NULL, &next2) == 0 && next2 == A.next_seq + 2,
              "a second Subscribe on the connection is answered (next_seq %llu)", (unsigned long long)next2);
    R.rid = 1005;

    /* ---- lock, map, unmap, unlock on vm0 ---- */
    struct rpc_session c0;
    if (!tap_check(rpc_open(&c0, d0), "vm0: connect to the RPC port")) {
        rig_abort(&rig);
        return tap_done();
    }
    uint64_t mdl = 0;
    struct rpc_mapping m = { 0 };
    unsigned rel = 0;
    tap_check(rpc_lock_run(&c0, 100, 2 * PG, BUF_PFN, 3, 0, &mdl) == 0, "vm0: lock 3 pages");
    tap_check(rpc_map_kernel(&c0, mdl, 16, &m) == 0, "vm0: map them");
    tap_check(rpc_unmap(&c0, m.map, m.address, mdl) == 0, "vm0: unmap");
    tap_check(rpc_unlock(&c0, mdl, &rel) == 0, "vm0: unlock");
    uint64_t conn = 0;
    ev = expect(&A, T(MDL_LOCKED), "vm0", &env, "lock");
    if (ev) {
        conn = ev->conn_id;
        tap_check(ev->mdl_handle == mdl && ev->page_count == 3 && ev->guest_cid == 3 && conn != 0,
                  "MDL_LOCKED: the MDL's handle, 3 pages, cid 3, a connection id");
    }
    frame_envelope_free(env);
    ev = expect(&A, T(MAPPING_CREATED), "vm0", &env, "map");
    tap_check(ev && ev->map_handle == m.map && ev->mdl_handle == mdl && ev->guest_address == m.address &&
                  ev->page_count == 3 && ev->conn_id == conn,
              "MAPPING_CREATED: map and MDL handles, the address the guest was told, pages, connection");
    frame_envelope_free(env);
    ev = expect(&A, T(MAPPING_REMOVED), "vm0", &env, "unmap");
    tap_check(ev && ev->map_handle == m.map && ev->mdl_handle == mdl && !strcmp(ev->detail, "unmapped"),
              "MAPPING_REMOVED: the map handle, detail 'unmapped'");
    frame_envelope_free(env);
    ev = expect(&A, T(MDL_UNLOCKED), "vm0", &env, "unlock");
    tap_check(ev && ev->mdl_handle == mdl && !strcmp(ev->detail, "unlocked"), "MDL_UNLOCKED: the MDL, 'unlocked'");
    frame_envelope_free(env);

    ev = expect(&R, T(MDL_LOCKED), "vm0", &env, "after the second Subscribe");
    tap_check(ev && ev->mdl_handle == mdl && R.foreign == 0,
              "the replaced subscription: its new filter and request id, nothing under the old one");
    frame_envelope_free(env);
    sub_close(&R);

    /* ---- a quota refusal ---- */
    uint64_t big = 0;
    tap_check(rpc_lock_run(&c0, 0, 60 * PG, BUF_PFN, 60, 0, &big) == 0, "vm0: lock 60 pages");
    int32_t st = rpc_map_kernel(&c0, big, 16, &m);
    tap_check(st == (int32_t)MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES,
              "vm0: a Normal map of 60 pages with a 64-page quota is refused (%s)", rpc_status_name(st));
    tap_check(rpc_unlock(&c0, big, &rel) == 0, "vm0: unlock the 60 pages");
    expect(&A, T(MDL_LOCKED), "vm0", &env, "lock 60");
    frame_envelope_free(env);
    ev = expect(&A, T(QUOTA_REFUSED), "vm0", &env, "refused map");
    tap_check(ev && ev->mdl_handle == big && ev->page_count == 60 && ev->conn_id == conn &&
                  strstr(ev->detail, "quota"),
              "QUOTA_REFUSED: the MDL, 60 pages, the connection, the reason ('%s')", ev ? ev->detail : "-");
    frame_envelope_free(env);
    expect(&A, T(MDL_UNLOCKED), "vm0", &env, "unlock 60");
    frame_envelope_free(env);

    /* ---- a consumer comes and goes ---- */
    int cons = api_register_consumer(rig.api, "watched");
    ev = expect(&A, T(CONSUMER_REGISTERED), NULL, &env, "consumer registers");
    tap_check(ev && !strcmp(ev->consumer, "watched") && !ev->vm_name[0], "CONSUMER_REGISTERED names it, no VM");
    frame_envelope_free(env);
    close(cons);
    ev = expect(&A, T(CONSUMER_LOST), NULL, &env, "consumer closes");
    tap_check(ev && !strcmp(ev->consumer, "watched"), "CONSUMER_LOST names it");
    frame_envelope_free(env);

    /* ---- vm1: a connection closed with a mapping ---- */
    struct rpc_session c1;
    uint64_t mdl1 = 0;
    struct rpc_mapping m1 = { 0 };
    tap_check(rpc_open(&c1, d1), "vm1: connect to the RPC port");
    tap_check(rpc_lock_run(&c1, 0, PG, BUF_PFN + 50, 1, 0, &mdl1) == 0 && rpc_map_kernel(&c1, mdl1, 16, &m1) == 0,
              "vm1: lock and map a page");
    rpc_close(&c1);
    expect(&A, T(MDL_LOCKED), "vm1", &env, "vm1 lock");
    frame_envelope_free(env);
    expect(&A, T(MAPPING_CREATED), "vm1", &env, "vm1 map");
    frame_envelope_free(env);
    ev = expect(&A, T(LEAK_RECORDED), "vm1", &env, "connection closed with a mapping");
    tap_check(ev && ev->map_handle == m1.map && ev->mdl_handle == mdl1 && ev->detail[0],
              "LEAK_RECORDED: the mapping (0xCB-style) with a reason ('%s')", ev ? ev->detail : "-");
    frame_envelope_free(env);
    ev = expect(&A, T(MAPPING_REMOVED), "vm1", &env, "the leaked mapping goes");
    tap_check(ev && ev->map_handle == m1.map, "MAPPING_REMOVED: the leaked mapping");
    frame_envelope_free(env);
    ev = expect(&A, T(LEAK_RECORDED), "vm1", &env, "the MDL left locked");
    tap_check(ev && ev->map_handle == 0 && ev->mdl_handle == mdl1, "LEAK_RECORDED: the MDL (0x76-style)");
    frame_envelope_free(env);
    expect(&A, T(MDL_UNLOCKED), "vm1", &env, "the leaked MDL goes");
    frame_envelope_free(env);

    /* ---- vm1: device reset (rings stopped), then QEMU leaves holding an MDL ---- */
    tap_check(guest_stop(&d1->g, NULL) == 0, "vm1: rings stopped (GET_VRING_BASE: a guest reboot)");
    ev = expect(&A, T(VM_RESET), "vm1", &env, "rings stopped");
    frame_envelope_free(env);
    vdev_forget_conns(d1);
    tap_check(guest_restart(&d1->g, false) == 0, "vm1: rings start again");
    tap_check(rpc_open(&c1, d1) && rpc_lock_run(&c1, 0, PG, BUF_PFN + 60, 1, 0, &mdl1) == 0,
              "vm1: lock a page on a new connection");
    expect(&A, T(MDL_LOCKED), "vm1", &env, "lock before QEMU leaves");
    frame_envelope_free(env);
    rpc_forget(&c1);
    vdev_down(d1);
    free(d1);
    ev = expect(&A, T(VM_DISCONNECTED), "vm1", &env, "QEMU leaves vm1");
    tap_check(ev && ev->guest_cid == 4 && ev->detail[0], "VM_DISCONNECTED: cid 4, why ('%s')", ev ? ev->detail : "-");
    frame_envelope_free(env);
    ev = expect(&A, T(LEAK_RECORDED), "vm1", &env, "what QEMU's exit released follows it");
    tap_check(ev && ev->mdl_handle == mdl1, "LEAK_RECORDED after VM_DISCONNECTED: the MDL");
    frame_envelope_free(env);
    expect(&A, T(MDL_UNLOCKED), "vm1", &env, "its MDL goes");
    frame_envelope_free(env);
    drain(&A, 300);
    tap_check(A.gaps == 0 && A.dropped == 0 && A.foreign == 0,
              "all: consecutive seq numbers, nothing dropped, only its events (%u gaps, %llu dropped)", A.gaps,
              (unsigned long long)A.dropped);

    /* ---- filters: exactly their part of A's stream ---- */
    drain(&F, 300);
    drain(&V, 300);
    unsigned nf = 0, nv = 0, fbad = 0, vbad = 0;
    for (unsigned i = 0; i < A.got && i < LOG_MAX; i++) {
        const struct logged *l = &A.log[i];
        if (!strcmp(l->vm, "vm1") && (l->type == T(MAPPING_CREATED) || l->type == T(MAPPING_REMOVED)))
            fbad += nf >= F.got || F.log[nf++].seq != l->seq;
        if (!strcmp(l->vm, "vm0"))
            vbad += nv >= V.got || V.log[nv++].seq != l->seq;
    }
    tap_check(nf == 2 && F.got == nf && fbad == 0, "type + VM filter: the %u mapping events of vm1, nothing else "
              "(got %u)", nf, F.got);
    /* VM_CONNECTED, lock, map, unmap, unlock, lock, refusal, unlock */
    tap_check(nv == 8 && V.got == nv && vbad == 0, "VM filter: the %u events of vm0, nothing else (got %u)", nv,
              V.got);
    sub_close(&A);
    sub_close(&F);
    sub_close(&V);

    /* ---- a subscriber that does not read ---- */
    struct sub S;
    sub_open(&S, rig.api, "stalled", 2001, NULL, 0, NULL);
    long rss0 = proc_status_kb(rig.p.pid, "RssAnon");
    unsigned pairs = 0;
    for (; pairs < FLOOD_PAIRS; pairs++) {
        uint64_t h = 0;
        if (rpc_lock_run(&c0, 0, PG, BUF_PFN + 200, 1, 0, &h) != 0 || rpc_unlock(&c0, h, &rel) != 0)
            break;
    }
    long rss1 = proc_status_kb(rig.p.pid, "RssAnon");
    tap_check(pairs == FLOOD_PAIRS, "vm0: %u lock/unlock pairs (%u events) while the subscriber does not read",
              pairs, 2 * pairs);
    long bound = 4096 + rss_slack_kb();
    tap_diag("hostd RssAnon %ld -> %ld KiB over %u events to a subscriber that does not read", rss0, rss1,
             2 * pairs);
    tap_check(rss1 - rss0 < bound, "hostd memory stays bounded: RssAnon grew %ld KiB (< %ld)", rss1 - rss0, bound);
    /* now it reads: what was queued, then a gap that dropped accounts for */
    unsigned before_drop = 0;
    bool seen_drop = false;
    while ((ev = sub_next(&S, 500, &env))) {
        seen_drop |= ev->dropped > 0;
        before_drop += !seen_drop;
        frame_envelope_free(env);
    }
    /* two more events once it is drained: the tail it lost is counted in the first */
    uint64_t h = 0;
    tap_check(rpc_lock_run(&c0, 0, PG, BUF_PFN + 200, 1, 0, &h) == 0 && rpc_unlock(&c0, h, &rel) == 0,
              "vm0: one more lock/unlock");
    ev = expect(&S, T(MDL_LOCKED), "vm0", &env, "a drained subscriber gets events again");
    frame_envelope_free(env);
    ev = expect(&S, T(MDL_UNLOCKED), "vm0", &env, "and the next");
    tap_check(ev && ev->dropped == 0, "nothing lost once it reads");
    frame_envelope_free(env);
    struct sub T2;
    sub_open(&T2, rig.api, "late", 2002, NULL, 0, NULL);
    tap_diag("stalled subscriber: %u events before the first loss, %u received, %llu dropped", before_drop, S.got,
             (unsigned long long)S.dropped);
    tap_check(S.dropped > 0, "it lost events (%llu) and was told so in Event.dropped",
              (unsigned long long)S.dropped);
    /* hostd keeps at most 1024 events for it; the kernel's socket buffer
     * holds the rest of what it got before the first loss */
    unsigned bound_events = 1024 + 212992 / 40;
    tap_check(before_drop <= bound_events && before_drop < 2 * pairs,
              "events queued for it were bounded: %u before the first loss (<= %u)", before_drop, bound_events);
    tap_check(S.gaps == 0 && S.last_seq + 1 == T2.next_seq && S.got + S.dropped == T2.next_seq - S.next_seq,
              "every seq number is accounted for: received %u + dropped %llu = %llu published", S.got,
              (unsigned long long)S.dropped, (unsigned long long)(T2.next_seq - S.next_seq));
    sub_close(&S);
    sub_close(&T2);

    rpc_close(&c0);
    tap_check(d0->errors == 0, "vm0: no vsock protocol violations (%u)", d0->errors);
    vdev_down(d0);
    free(d0);
    rig_stop(&rig);
    return tap_done();
}
