/* UserMode (R2) against a real hostd: `mdlmapctl consume` registers as a host
 * consumer; the (harness) guest maps a buffer into it, at any address and at
 * a RequestedAddress; the consumer sees the guest's bytes and its writes
 * reach the guest; unmap goes to the consumer; unknown consumer and a taken
 * RequestedAddress fail with a status; a consumer that never answers fails
 * the map after the timeout, one that dies with a map pending fails it at once
 * (STATUS_DEVICE_NOT_READY). A consumer that dies with mappings established
 * orphans them: hostd releases their pages (stats), drops them from the list,
 * records an event in the leak ring; the guest's later unmap of such a handle
 * succeeds, unlock frees the rest, and a new consumer of the same name works.
 * usage: test_usermode HOSTD MDLMAPCTL */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (8u << 20)

/* The scattered 2-page MDL of every case: pfn and pfn + 3, 16 bytes in. */
static int lock1(struct rpc_session *c, uint64_t pfn, uint64_t *h)
{
    uint64_t pfns[2] = { pfn, pfn + 3 };
    return rpc_lock(c, 16, PG, pfns, 2, 0, h);
}

static void map_req(Mdlmap__V1__MapRequest *rq, uint64_t mdl, const char *consumer, uint64_t want)
{
    mdlmap__v1__map_request__init(rq);
    rq->mdl_handle = mdl;
    rq->access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
    rq->cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq->priority = 16;
    rq->consumer = (char *)consumer;
    rq->requested_address = want;
}

static int map_user(struct rpc_session *c, uint64_t mdl, const char *consumer, uint64_t want, uint64_t *mh,
                    uint64_t *addr, uint64_t *base)
{
    Mdlmap__V1__MapRequest rq;
    map_req(&rq, mdl, consumer, want);
    struct rpc_mapping m;
    int st = rpc_map(c, &rq, &m);
    if (st == 0) {
        *mh = m.map;
        *addr = m.address;
        *base = m.base;
    }
    return st;
}

/* Is map handle h in the host API list? -1 if list failed. */
static int api_listed(const char *api, uint64_t h)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListMappingsRequest rq = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
    env.list = &rq;
    mdl_envelope *r = api_call(api, &env);
    int found = r && r->status == 0 && r->list_reply ? 0 : -1;
    for (size_t i = 0; found == 0 && i < r->list_reply->n_mappings; i++)
        if (r->list_reply->mappings[i]->map_handle == h)
            found = 1;
    frame_envelope_free(r);
    return found;
}

/* The leak/event record of map handle h in stats, or NULL. */
static const Mdlmap__V1__LeakRecord *leak_of(const mdl_envelope *st, uint64_t h)
{
    for (size_t i = 0; st && i < st->stats_reply->n_recent_leaks; i++)
        if (st->stats_reply->recent_leaks[i]->map_handle == h)
            return st->stats_reply->recent_leaks[i];
    return NULL;
}

/* Wait for the next MapInto pushed to a raw consumer fd (its fds are dropped). */
static bool await_map_into(int fd, int ms)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    for (long long end = now_ms() + ms; now_ms() < end;) {
        if (poll(&pf, 1, 20) == 1) {
            mdl_envelope *r = NULL;
            bool is_map = frame_read_fd(fd, &r) == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_INTO;
            frame_envelope_free(r);
            if (is_map)
                return true;
        }
        vdev_poll();
    }
    return false;
}

static pid_t spawn_consumer(const char *ctl, const char *api, const char *out, const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        const char *argv[12] = { ctl, "--api", api, "consume" };
        for (int i = 0; args[i] && i < 7; i++)
            argv[4 + i] = args[i];
        execv(ctl, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    const char *ctl = argc > 2 ? argv[2] : getenv("MDLMAPCTL");
    if (!ctl) {
        fprintf(stderr, "usage: %s HOSTD MDLMAPCTL\n", argv[0]);
        return 2;
    }
    struct rig rig;
    uint64_t cids[1] = { 3 };
    rig_start(&rig, bin, "mdl-user", 1, cids);
    const char *dir = rig.dir, *api = rig.api;
    char out[160];
    snprintf(out, sizeof(out), "%s/consumer.out", dir);

    const char *c1_args[] = { "--write", "CONSUMER-WAS-HERE", "--exit-after", "1", "c1", NULL };
    pid_t cons = spawn_consumer(ctl, api, out, c1_args);
    tap_check(file_has(out, "CONSUMER REGISTERED name=c1", 5000), "mdlmapctl consume registers as 'c1'");

    struct guest_opts o;
    guest_default_opts(&o);
    struct vdev *d = rig_vm_up(&rig, 0, &o, "user");
    struct rpc_session cs, *c = &cs;
    if (!tap_check(d && rpc_open(c, d), "guest connects to port %d", RPC_PORT)) {
        kill(cons, SIGKILL);
        rig_abort(&rig);
        return tap_done();
    }
    c->timeout_ms = 20000;   /* longer than hostd's wait for a mute consumer */
    uint8_t *g0 = gm_ptr(&d->g.gm, BUF_GPA, PG), *g1 = gm_ptr(&d->g.gm, BUF_GPA + 3 * PG, PG);
    memset(g0, '.', PG);
    memcpy(g0 + 16, "GUEST-DATA-FOR-THE-CONSUMER", 27);
    uint64_t mdl = 0, mh = 0, addr = 0, base = 0, x1, x2, x3;
    tap_check(lock1(c, BUF_GPA / PG, &mdl) == 0, "lock 2 scattered pages");
    int st = map_user(c, mdl, "nobody", 0, &x1, &x2, &x3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_NOT_FOUND, "UserMode map into an unknown consumer: %s",
              ntstatus_name(st));
    st = map_user(c, mdl, "c1", 0, &mh, &addr, &base);
    tap_check(st == 0 && (addr & 4095) == 16 && base == addr - 16, "UserMode map into c1: %s at 0x%llx",
              ntstatus_name(st), (unsigned long long)addr);
    tap_check(file_has(out, "CONSUMER SAW: \"GUEST-DATA-FOR-THE-CONSUMER", 3000),
              "the consumer sees the guest's bytes at its own address");
    tap_check(file_has(out, "CONSUMER WROTE", 3000) && memcmp(g0 + 16, "CONSUMER-WAS-HERE", 17) == 0,
              "the consumer's write lands in the guest's page");
    (void)g1;
    /* a RequestedAddress that is taken in the consumer (its first mapping) */
    st = map_user(c, mdl, "c1", base, &x1, &x2, &x3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_CONFLICTING_ADDRESSES,
              "RequestedAddress already in use in the consumer: %s", ntstatus_name(st));
    st = map_user(c, mdl, "c1", 0x123, &x1, &x2, &x3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER, "unaligned RequestedAddress: %s",
              ntstatus_name(st));
    st = rpc_unmap(c, mh, addr, mdl);
    tap_check(st == 0, "guest unmaps the UserMode mapping: %s", ntstatus_name(st));
    tap_check(file_has(out, "CONSUMER UNMAPPED", 3000), "the unmap reached the consumer");
    int ws = -1;
    for (int i = 0; i < 100 && waitpid(cons, &ws, WNOHANG) == 0; i++)
        usleep(20000);
    tap_check(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "consumer exits 0 after --exit-after 1");
    /* the consumer is gone: its name is free, maps into it fail */
    /* until hostd has seen the consumer's socket close, a map may still reach
     * it and fail with DEVICE_NOT_READY; then the name is gone */
    for (int i = 0; i < 50; i++) {
        st = map_user(c, mdl, "c1", 0, &x1, &x2, &x3);
        if (st != MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY)
            break;
        usleep(20000);
    }
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_NOT_FOUND, "after the consumer left: %s", ntstatus_name(st));
    /* a consumer that never answers: the guest gets a status after the timeout */
    int mute = api_register_consumer(api, "mute");
    tap_check(mute >= 0, "a second consumer 'mute' registers");
    long long t0 = now_ms();
    st = map_user(c, mdl, "mute", 0, &x1, &x2, &x3);
    long long waited = now_ms() - t0;
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY && waited >= 9000,
              "consumer that never answers: %s after %lld ms", ntstatus_name(st), waited);
    tap_check(lock1(c, BUF_GPA / PG, &x1) == 0, "the connection still works afterwards");

    /* a consumer that dies while a map into it is pending: the guest's map
     * fails at once, not after the timeout */
    if (mute >= 0) {
        struct pollfd pf = { .fd = mute, .events = POLLIN };
        while (poll(&pf, 1, 0) == 1) { /* the MapInto that timed out above */
            mdl_envelope *r = NULL;
            int rc = frame_read_fd(mute, &r);
            frame_envelope_free(r);
            if (rc < 0)
                break;
        }
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__MapRequest rq;
        map_req(&rq, mdl, "mute", 0);
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
        env.map = &rq;
        bool sent = rpc_send(c, &env) == 0;
        bool asked = sent && await_map_into(mute, 5000);
        tap_check(asked, "a map into 'mute' reaches it");
        close(mute);
        mute = -1;
        t0 = now_ms();
        mdl_envelope *r = NULL;
        if (sent && rpc_wait(c, &r, 20000) != 1)
            r = NULL;
        waited = now_ms() - t0;
        st = r ? r->status : -1;
        tap_check(r && r->request_id == env.request_id && st == MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY &&
                      waited < 3000,
                  "consumer dies with the map pending: %s after %lld ms", ntstatus_name(st), waited);
        frame_envelope_free(r);
    }

    /* a consumer that dies with two mappings established (SIGKILL) */
    char out2[160], out3[160];
    snprintf(out2, sizeof(out2), "%s/consumer2.out", dir);
    snprintf(out3, sizeof(out3), "%s/consumer3.out", dir);
    const char *c2_args[] = { "c2", NULL };
    pid_t cons2 = spawn_consumer(ctl, api, out2, c2_args);
    tap_check(file_has(out2, "CONSUMER REGISTERED name=c2", 5000), "consumer 'c2' registers");
    mdl_envelope *s0 = api_stats(api), *s1 = NULL, *s2 = NULL;
    uint64_t mdl2 = 0, mh2 = 0, addr2 = 0, mh3 = 0, addr3 = 0;
    tap_check(lock1(c, BUF_GPA / PG, &mdl2) == 0, "lock another MDL");
    st = map_user(c, mdl2, "c2", 0, &mh2, &addr2, &x3);
    int st3 = map_user(c, mdl2, "c2", 0, &mh3, &addr3, &x3);
    tap_check(st == 0 && st3 == 0, "two UserMode maps into c2: %s, %s", ntstatus_name(st), ntstatus_name(st3));
    s1 = api_stats(api);
    tap_check(s0 && s1 && s1->stats_reply->mappings == s0->stats_reply->mappings + 2 &&
                  s1->stats_reply->mapped_pages == s0->stats_reply->mapped_pages + 4,
              "stats count them: %llu mappings, %llu pages",
              s1 ? (unsigned long long)s1->stats_reply->mappings : 0ull,
              s1 ? (unsigned long long)s1->stats_reply->mapped_pages : 0ull);
    tap_check(api_listed(api, mh2) == 1 && api_listed(api, mh3) == 1, "list shows both");
    kill(cons2, SIGKILL);
    waitpid(cons2, NULL, 0);
    for (int i = 0; i < 150; i++) {
        frame_envelope_free(s2);
        s2 = api_stats(api);
        if (s0 && s2 && s2->stats_reply->mapped_pages == s0->stats_reply->mapped_pages)
            break;
        usleep(20000);
    }
    tap_check(s0 && s2 && s2->stats_reply->mapped_pages == s0->stats_reply->mapped_pages &&
                  s2->stats_reply->mappings == s0->stats_reply->mappings,
              "consumer killed: hostd released its mappings' pages (%llu mappings, %llu pages)",
              s2 ? (unsigned long long)s2->stats_reply->mappings : 0ull,
              s2 ? (unsigned long long)s2->stats_reply->mapped_pages : 0ull);
    tap_check(api_listed(api, mh2) == 0 && api_listed(api, mh3) == 0, "list no longer shows them");
    const Mdlmap__V1__LeakRecord *l2 = leak_of(s2, mh2), *l3 = leak_of(s2, mh3);
    tap_check(s0 && s2 && s2->stats_reply->leaks_reported == s0->stats_reply->leaks_reported + 2 && l2 && l3 &&
                  strcmp(l2->reason, "consumer gone: c2") == 0 && l2->was_mapped && l2->page_count == 2 &&
                  l2->mdl_handle == mdl2 && strcmp(l2->vm_name, "vm0") == 0,
              "stats hold an event record per orphaned mapping (reason \"%s\")", l2 ? l2->reason : "-");
    frame_envelope_free(s0);
    frame_envelope_free(s1);
    frame_envelope_free(s2);
    st = rpc_unmap(c, mh2, addr2 + 1, mdl2);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_NOT_MAPPED_VIEW, "orphan: unmap at a wrong address: %s",
              ntstatus_name(st));
    st = rpc_unmap(c, mh2, addr2, mdl2);
    tap_check(st == 0, "guest unmaps the orphaned mapping: %s", ntstatus_name(st));
    st = rpc_unmap(c, mh2, addr2, mdl2);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_INVALID_HANDLE, "... a second time: %s", ntstatus_name(st));
    unsigned released = 0;
    st = rpc_unlock(c, mdl2, &released);
    tap_check(st == 0 && released == 1, "guest unlocks the MDL: %s, %u mapping released (the other orphan)",
              ntstatus_name(st), released);
    st = rpc_unmap(c, mh3, addr3, mdl2);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_INVALID_HANDLE, "the unlock freed the other orphan: %s",
              ntstatus_name(st));

    /* a new consumer under the same name */
    const char *c2b_args[] = { "--write", "SECOND-C2", "--exit-after", "1", "c2", NULL };
    cons2 = spawn_consumer(ctl, api, out3, c2b_args);
    tap_check(file_has(out3, "CONSUMER REGISTERED name=c2", 5000), "a new consumer 'c2' registers");
    memcpy(g0 + 16, "GUEST-DATA-FOR-C2-AGAIN", 23);
    tap_check(lock1(c, BUF_GPA / PG, &mdl2) == 0, "lock again");
    st = map_user(c, mdl2, "c2", 0, &mh2, &addr2, &x3);
    tap_check(st == 0, "UserMode map into the new c2: %s", ntstatus_name(st));
    tap_check(file_has(out3, "CONSUMER SAW: \"GUEST-DATA-FOR-C2-AGAIN", 3000) &&
                  file_has(out3, "CONSUMER WROTE", 3000) && memcmp(g0 + 16, "SECOND-C2", 9) == 0,
              "the new c2 sees the guest's bytes and its write lands");
    st = rpc_unmap(c, mh2, addr2, mdl2);
    tap_check(st == 0 && file_has(out3, "CONSUMER UNMAPPED", 3000), "unmap reaches the new c2: %s",
              ntstatus_name(st));
    ws = -1;
    for (int i = 0; i < 100 && waitpid(cons2, &ws, WNOHANG) == 0; i++)
        usleep(20000);
    tap_check(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the new c2 exits 0");
    tap_check(rpc_unlock(c, mdl2, &released) == 0 && released == 0, "unlock");
    mdl_envelope *s3 = api_stats(api);
    tap_check(s3 && s3->stats_reply->mappings == 0 && s3->stats_reply->mapped_pages == 0,
              "hostd holds no mappings");
    frame_envelope_free(s3);
    if (mute >= 0)
        close(mute);
    rpc_close(c);
    vdev_down(d);
    free(d);
    tap_check(hd_alive(&rig.p), "hostd still running");
    if (tap_failures) {
        char buf[4096] = "";
        int fd = open(out, O_RDONLY);
        if (fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0)
            tap_diag("consumer output:\n%s", buf);
        if (fd >= 0)
            close(fd);
        hd_log_tail(&rig.p, 30);
    }
    unlink(out);
    unlink(out2);
    unlink(out3);
    rig_stop(&rig);
    return tap_done();
}
