#include "rpc_session.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ntstatus.h"

/* ---------------------------------------------------------------- rig */
void rig_start(struct rig *r, const char *bin, const char *tag, unsigned n, const uint64_t *cids)
{
    rig_start_with(r, bin, tag, n, cids, NULL);
}

void rig_start_with(struct rig *r, const char *bin, const char *tag, unsigned n, const uint64_t *cids,
                    const char *const *more)
{
    rig_start_opts(r, bin, tag, n, cids, NULL, more);
}

void rig_start_opts(struct rig *r, const char *bin, const char *tag, unsigned n, const uint64_t *cids,
                    const char *const *vm_opts, const char *const *more)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->dir, sizeof(r->dir), "/tmp/%s.XXXXXX", tag);
    if (!mkdtemp(r->dir)) {
        tap_check(false, "temp directory %s: %s", r->dir, strerror(errno));
        exit(tap_done());
    }
    snprintf(r->api, sizeof(r->api), "%s/api.sock", r->dir);
    const char *extra[16] = { "--api", r->api };
    for (unsigned i = 0; more && more[i] && i + 3 < sizeof(extra) / sizeof(extra[0]); i++)
        extra[2 + i] = more[i];
    if (!tap_check(hd_start_opts(&r->p, bin, n, cids, vm_opts, extra) == 0, "hostd starts and logs ready (%u VMs)", n)) {
        rmdir(r->dir);
        exit(tap_done());
    }
}

struct vdev *rig_vm_up(struct rig *r, unsigned vm, const struct guest_opts *o, const char *what)
{
    struct vdev *d = vdev_alloc();
    if (!up_or_report(d, &r->p, vm, o, what)) {
        free(d);
        return NULL;
    }
    return d;
}

static void rig_clean(struct rig *r)
{
    unlink(r->api);
    rmdir(r->dir);
}

void rig_stop(struct rig *r)
{
    stop_and_check(&r->p);
    rig_clean(r);
}

void rig_abort(struct rig *r)
{
    hd_kill(&r->p);
    rig_clean(r);
}

/* ------------------------------------------------------------ session */
bool rpc_open(struct rpc_session *r, struct vdev *d)
{
    /* as root's programs do in a Linux guest: only they may lock and map */
    return rpc_open_from(r, d, 0);
}

bool rpc_open_from(struct rpc_session *r, struct vdev *d, uint32_t lport)
{
    memset(r, 0, sizeof(*r));
    int err = 0;
    r->c = lport ? vc_connect_from(d, VSOCK_TYPE_STREAM, HOST_CID, RPC_PORT, lport, 3000, &err)
                 : vc_connect_priv(d, VSOCK_TYPE_STREAM, HOST_CID, RPC_PORT, 3000, &err);
    if (!r->c) {
        tap_diag("connect to port %d: %s", RPC_PORT, strerror(-err));
        return false;
    }
    frame_reader_init(&r->rd, MDLMAP_MAX_FRAME);
    r->next_id = 1;
    r->timeout_ms = 5000;
    return true;
}

void rpc_close(struct rpc_session *r)
{
    if (r->c)
        vc_close(r->c, 3000, NULL);
    r->c = NULL;
    frame_reader_free(&r->rd);
}

void rpc_forget(struct rpc_session *r)
{
    r->c = NULL;
    frame_reader_free(&r->rd);
}

bool rpc_peer_closed(const struct rpc_session *r)
{
    return r->c->got_rst || (r->c->peer_shutdown & SHUT_SEND_F) || r->c->d->dead;
}

int rpc_send(struct rpc_session *r, mdl_envelope *e)
{
    e->version = MDLMAP_PROTO_VERSION;
    e->request_id = r->next_id++;
    uint8_t *buf;
    size_t len;
    int rc = frame_encode(e, &buf, &len);
    if (rc < 0)
        return rc;
    rc = vc_send_all(r->c, buf, len, r->timeout_ms);
    free(buf);
    return rc;
}

int rpc_wait(struct rpc_session *r, mdl_envelope **out, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        const uint8_t *p;
        size_t n;
        int rc = frame_reader_next(&r->rd, &p, &n);
        if (rc == 1)
            return frame_decode(p, n, out) == 0 ? 1 : -EBADMSG;
        if (rc < 0)
            return rc;
        uint8_t tmp[16384];
        size_t room = frame_reader_room(&r->rd);
        long got = vc_try_recv(r->c, tmp, room < sizeof(tmp) ? room : sizeof(tmp));
        if (got > 0) {
            if (frame_reader_feed(&r->rd, tmp, (size_t)got) < 0)
                return -ENOBUFS;
            continue;
        }
        if (got < 0 || rpc_peer_closed(r))
            return 0;
        if (now_ms() > deadline)
            return -ETIMEDOUT;
        vdev_pump(20);
    }
}

static bool take_notice(struct rpc_session *r, mdl_envelope *o)
{
    if (o->request_id != 0 || o->body_case != MDLMAP__V1__ENVELOPE__BODY_GRANT_REVOKED)
        return false;
    r->notices++;
    r->notice_cid = o->grant_revoked->granter_cid;
    r->notice_ref = o->grant_revoked->grant_ref;
    snprintf(r->notice_reason, sizeof(r->notice_reason), "%s", o->grant_revoked->reason ? o->grant_revoked->reason : "");
    return true;
}

int rpc_reply(struct rpc_session *r, uint64_t id, mdl_envelope **out, int timeout_ms)
{
    *out = NULL;
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - now_ms());
        int rc = rpc_wait(r, out, left > 0 ? left : 0);
        if (rc != 1 || !take_notice(r, *out))
            return rc;
        frame_envelope_free(*out);
        *out = NULL;
        (void)id;
    }
}

bool rpc_wait_notice(struct rpc_session *r, unsigned seen, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (r->notices <= seen) {
        mdl_envelope *o;
        int left = (int)(deadline - now_ms());
        if (left <= 0 || rpc_wait(r, &o, left) != 1)
            return false;
        if (!take_notice(r, o))
            tap_diag("unexpected frame (request %" PRIu64 ", body %d) while waiting for a notice", o->request_id,
                     (int)o->body_case);
        frame_envelope_free(o);
    }
    return true;
}

int32_t rpc_grant(struct rpc_session *r, uint64_t mdl, uint64_t peer_cid, uint32_t access, uint64_t *ref)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    Mdlmap__V1__GrantRequest g = MDLMAP__V1__GRANT_REQUEST__INIT;
    g.mdl_handle = mdl;
    g.peer_cid = peer_cid;
    g.access = (Mdlmap__V1__GrantAccess)access;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT;
    e.grant = &g;
    int32_t st = rpc_call(r, &e, &o);
    if (ref)
        *ref = st == 0 && o->body_case == MDLMAP__V1__ENVELOPE__BODY_GRANT_REPLY ? o->grant_reply->grant_ref : 0;
    if (o)
        frame_envelope_free(o);
    return st;
}

int32_t rpc_revoke(struct rpc_session *r, uint64_t ref)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    Mdlmap__V1__RevokeRequest q = MDLMAP__V1__REVOKE_REQUEST__INIT;
    q.grant_ref = ref;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_REVOKE;
    e.revoke = &q;
    int32_t st = rpc_call(r, &e, &o);
    if (o)
        frame_envelope_free(o);
    return st;
}

uint64_t rpc_grant_copy_send(struct rpc_session *r, const struct rpc_copy *ops, size_t n)
{
    Mdlmap__V1__CopyEnd *ends = calloc(2 * (n ? n : 1), sizeof(*ends));
    Mdlmap__V1__CopyOp *w = calloc(n ? n : 1, sizeof(*w));
    Mdlmap__V1__CopyOp **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    uint64_t id = 0;
    if (ends && w && ptrs) {
        for (size_t i = 0; i < n; i++) {
            mdlmap__v1__copy_end__init(&ends[2 * i]);
            mdlmap__v1__copy_end__init(&ends[2 * i + 1]);
            ends[2 * i] = (Mdlmap__V1__CopyEnd){ ends[2 * i].base, ops[i].src_cid, ops[i].src_ref, ops[i].src_off };
            ends[2 * i + 1] =
                (Mdlmap__V1__CopyEnd){ ends[2 * i + 1].base, ops[i].dst_cid, ops[i].dst_ref, ops[i].dst_off };
            mdlmap__v1__copy_op__init(&w[i]);
            w[i].src = &ends[2 * i];
            w[i].dst = &ends[2 * i + 1];
            w[i].length = ops[i].len;
            ptrs[i] = &w[i];
        }
        mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__GrantCopyRequest q = MDLMAP__V1__GRANT_COPY_REQUEST__INIT;
        q.n_ops = n;
        q.ops = ptrs;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY;
        e.grant_copy = &q;
        if (rpc_send(r, &e) == 0)
            id = e.request_id;
    }
    free(ends);
    free(w);
    free(ptrs);
    return id;
}

int32_t rpc_grant_copy_reply(struct rpc_session *r, uint64_t id, size_t n, int32_t *status, uint64_t *copied,
                             int timeout_ms)
{
    if (status)
        memset(status, 0, n * sizeof(*status));
    if (copied)
        memset(copied, 0, n * sizeof(*copied));
    mdl_envelope *o = NULL;
    r->detail[0] = 0;
    if (!id || rpc_reply(r, id, &o, timeout_ms) != 1)
        return RPC_NO_REPLY;
    snprintf(r->detail, sizeof(r->detail), "%s", o->detail ? o->detail : "");
    int32_t st = o->request_id == id ? o->status : RPC_NO_REPLY;
    if (st == 0 && o->body_case == MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY_REPLY &&
        o->grant_copy_reply->n_status == n && o->grant_copy_reply->n_copied == n) {
        for (size_t i = 0; i < n; i++) {
            if (status)
                status[i] = o->grant_copy_reply->status[i];
            if (copied)
                copied[i] = o->grant_copy_reply->copied[i];
        }
    } else if (st == 0) {
        st = RPC_NO_REPLY;
    }
    frame_envelope_free(o);
    return st;
}

int32_t rpc_grant_copy(struct rpc_session *r, const struct rpc_copy *ops, size_t n, int32_t *status,
                       uint64_t *copied)
{
    return rpc_grant_copy_reply(r, rpc_grant_copy_send(r, ops, n), n, status, copied, r->timeout_ms);
}

int32_t rpc_call(struct rpc_session *r, mdl_envelope *e, mdl_envelope **out)
{
    *out = NULL;
    r->detail[0] = 0;
    r->body = 0;
    if (rpc_send(r, e) < 0 || rpc_reply(r, e->request_id, out, r->timeout_ms) != 1)
        return RPC_NO_REPLY;
    snprintf(r->detail, sizeof(r->detail), "%s", (*out)->detail ? (*out)->detail : "");
    r->body = (int)(*out)->body_case;
    if ((*out)->request_id != e->request_id) {
        tap_diag("response id %" PRIu64 " for request %" PRIu64, (*out)->request_id, e->request_id);
        return RPC_NO_REPLY;
    }
    return (*out)->status;
}

const char *rpc_status_name(int32_t st)
{
    return st == RPC_NO_REPLY ? "no reply (connection closed)" : ntstatus_name(st);
}

int32_t rpc_hello(struct rpc_session *r, uint32_t min_version, uint32_t max_version, const char *client,
                  struct rpc_hello_info *out)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    Mdlmap__V1__HelloRequest h = MDLMAP__V1__HELLO_REQUEST__INIT;
    h.min_version = min_version;
    h.max_version = max_version;
    h.client = (char *)client;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    int32_t st = rpc_call(r, &e, &o);
    if (out) {
        memset(out, 0, sizeof(*out));
        if (st == 0 && o->body_case == MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY) {
            out->guest_cid = o->hello_reply->guest_cid;
            out->max_mdl_pages = o->hello_reply->max_mdl_pages;
        }
    }
    frame_envelope_free(o);
    return st;
}

int32_t rpc_lock_req(struct rpc_session *r, Mdlmap__V1__LockRequest *l, uint64_t *mdl)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    e.lock = l;
    int32_t st = rpc_call(r, &e, &o);
    if (mdl)
        *mdl = st == 0 && o->body_case == MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY ? o->lock_reply->mdl_handle : 0;
    frame_envelope_free(o);
    return st;
}

int32_t rpc_lock(struct rpc_session *r, uint32_t byte_offset, uint32_t byte_count, const uint64_t *pfns,
                 size_t n, uint32_t operation, uint64_t *mdl)
{
    Mdlmap__V1__LockRequest l = MDLMAP__V1__LOCK_REQUEST__INIT;
    l.byte_offset = byte_offset;
    l.byte_count = byte_count;
    l.pfns = (uint64_t *)pfns;
    l.n_pfns = n;
    l.operation = (Mdlmap__V1__LockOperation)operation;
    return rpc_lock_req(r, &l, mdl);
}

int32_t rpc_lock_run(struct rpc_session *r, uint32_t byte_offset, uint32_t byte_count, uint64_t first_pfn,
                     uint32_t count, uint32_t operation, uint64_t *mdl)
{
    Mdlmap__V1__LockRequest l = MDLMAP__V1__LOCK_REQUEST__INIT;
    Mdlmap__V1__FrameRun run = MDLMAP__V1__FRAME_RUN__INIT, *runs[1] = { &run };
    run.first_pfn = first_pfn;
    run.count = count;
    l.byte_offset = byte_offset;
    l.byte_count = byte_count;
    l.runs = runs;
    l.n_runs = 1;
    l.operation = (Mdlmap__V1__LockOperation)operation;
    return rpc_lock_req(r, &l, mdl);
}

int32_t rpc_map(struct rpc_session *r, Mdlmap__V1__MapRequest *rq, struct rpc_mapping *out)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    e.map = rq;
    int32_t st = rpc_call(r, &e, &o);
    if (out) {
        memset(out, 0, sizeof(*out));
        if (st == 0 && o->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY) {
            out->map = o->map_reply->map_handle;
            out->address = o->map_reply->address;
            out->base = o->map_reply->base_address;
            out->vmas = o->map_reply->vma_count;
        }
    }
    frame_envelope_free(o);
    return st;
}

int32_t rpc_map_kernel(struct rpc_session *r, uint64_t mdl, uint32_t priority, struct rpc_mapping *out)
{
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.mdl_handle = mdl;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = priority;
    return rpc_map(r, &rq, out);
}

int32_t rpc_unmap(struct rpc_session *r, uint64_t map, uint64_t address, uint64_t mdl)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    Mdlmap__V1__UnmapRequest u = MDLMAP__V1__UNMAP_REQUEST__INIT;
    u.map_handle = map;
    u.address = address;
    u.mdl_handle = mdl;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP;
    e.unmap = &u;
    int32_t st = rpc_call(r, &e, &o);
    frame_envelope_free(o);
    return st;
}

int32_t rpc_unlock(struct rpc_session *r, uint64_t mdl, unsigned *released)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT, *o;
    Mdlmap__V1__UnlockRequest u = MDLMAP__V1__UNLOCK_REQUEST__INIT;
    u.mdl_handle = mdl;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK;
    e.unlock = &u;
    int32_t st = rpc_call(r, &e, &o);
    if (released)
        *released = st == 0 && o->body_case == MDLMAP__V1__ENVELOPE__BODY_UNLOCK_REPLY
                        ? o->unlock_reply->mappings_released : 0;
    frame_envelope_free(o);
    return st;
}

/* ----------------------------------------------------------- host API */
int api_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

mdl_envelope *api_call(const char *path, mdl_envelope *e)
{
    static uint64_t next_id = 1;
    int fd = api_connect(path);
    mdl_envelope *r = NULL;
    if (fd < 0)
        return NULL;
    e->version = MDLMAP_PROTO_VERSION;
    e->request_id = next_id++;
    if (frame_write_fd(fd, e) < 0 || frame_read_fd(fd, &r) < 0)
        r = NULL;
    close(fd);
    return r;
}

mdl_envelope *api_stats(const char *path)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    e.stats = &rq;
    mdl_envelope *r = api_call(path, &e);
    if (r && (r->status || r->body_case != MDLMAP__V1__ENVELOPE__BODY_STATS_REPLY || !r->stats_reply)) {
        frame_envelope_free(r);
        r = NULL;
    }
    return r;
}

int api_register_consumer(const char *path, const char *name)
{
    int fd = api_connect(path);
    if (fd < 0) {
        tap_diag("register '%s': cannot connect to %s", name, path);
        return -1;
    }
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__RegisterConsumerRequest rq = MDLMAP__V1__REGISTER_CONSUMER_REQUEST__INIT;
    rq.name = (char *)name;
    env.version = MDLMAP_PROTO_VERSION;
    env.request_id = 1;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER;
    env.register_consumer = &rq;
    int w = frame_write_fd(fd, &env), rd = w < 0 ? 0 : frame_read_fd(fd, &r);
    if (w < 0 || rd < 0 || r->status != 0) {
        tap_diag("register '%s': write %d read %d status %s %s", name, w, rd, r ? ntstatus_name(r->status) : "-",
                 r && r->detail ? r->detail : "");
        frame_envelope_free(r);
        close(fd);
        return -1;
    }
    frame_envelope_free(r);
    return fd;
}

bool file_has(const char *path, const char *s, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        char buf[8192] = "";
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n > 0 && strstr(buf, s))
                return true;
        }
        vdev_poll();
        usleep(20000);
    }
    return false;
}
