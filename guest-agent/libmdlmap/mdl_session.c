/* A session with hostd: transport, pinner, request ids, the locked MDLs. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "mdl_internal.h"

/* An asynchronous unmap whose reply is still in the stream. */
struct pending_unmap {
    bool on;
    uint64_t id, mdl, address;
};
/* The failure such a reply reported, held until the call collecting it has
 * let go of the session (the verifier's handler may call the library). */
struct late_failure {
    bool on;
    mdl_status st;
    uint64_t mdl, address;
    char detail[96];
};

struct mdl_session {
    struct mdl_transport *t;
    struct mdl_pinner *pinner;
    pthread_mutex_t lock;
    uint64_t next_id;
    uint64_t guest_cid;
    uint64_t max_mdl_pages;
    char consumer[128];
    struct mdl_priv *live;      /* locked MDLs (R12 leak report on close) */
    /* The wire, kept for the session so that a call costs no malloc in the
     * steady state: the request frame is encoded into out, replies are read
     * into rd (one read takes the length prefix and the payload, or two
     * replies, as they come) and decoded into arena, reset per call. All
     * three grow to the largest frame seen, bounded by MDLMAP_MAX_FRAME
     * plus the header (the arena by MDL_ARENA_KEEP). */
    uint8_t *out;
    size_t out_cap;
    struct frame_reader rd;
    struct mdl_arena arena;
    /* Negative errno once the stream is out of step (a send or read failed
     * half way, a bad length prefix): later calls fail at once rather than
     * take one reply for another. */
    int broken;
    bool async_unmap;
    struct pending_unmap pending;
    struct late_failure late;
    /* GrantRevokedNotices hostd pushed (request_id 0) between replies:
     * newest MDL_GRANT_NOTICES kept until taken, older ones counted */
    struct mdl_grant_notice notices[MDL_GRANT_NOTICES];
    unsigned nnotices;
    uint64_t notices_dropped;
};

/* An unsolicited frame: a GrantRevokedNotice (request_id 0) is kept for
 * mdl_session_grant_notices and is never taken for a reply. */
static bool take_notice(struct mdl_session *s, const Mdlmap__V1__Envelope *r)
{
    if (r->request_id != 0 || r->body_case != MDLMAP__V1__ENVELOPE__BODY_GRANT_REVOKED || !r->grant_revoked)
        return false;
    if (s->nnotices == MDL_GRANT_NOTICES) {
        memmove(&s->notices[0], &s->notices[1], sizeof(s->notices[0]) * (MDL_GRANT_NOTICES - 1));
        s->nnotices--;
        s->notices_dropped++;
    }
    struct mdl_grant_notice *n = &s->notices[s->nnotices++];
    n->granter_cid = r->grant_revoked->granter_cid;
    n->ref = r->grant_revoked->grant_ref;
    snprintf(n->reason, sizeof(n->reason), "%s", r->grant_revoked->reason ? r->grant_revoked->reason : "");
    return true;
}

size_t mdl_session_grant_notices(struct mdl_session *s, struct mdl_grant_notice *out, size_t max,
                                 uint64_t *dropped)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->nnotices < max ? s->nnotices : max;
    memcpy(out, s->notices, n * sizeof(*out));
    memmove(&s->notices[0], &s->notices[n], (s->nnotices - n) * sizeof(s->notices[0]));
    s->nnotices -= (unsigned)n;
    if (dropped)
        *dropped = s->notices_dropped;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Encode req into the session's frame buffer, growing it if need be. */
static int encode(struct mdl_session *s, const Mdlmap__V1__Envelope *req, size_t *len)
{
    int rc = frame_encode_to(req, s->out, s->out_cap, len);
    if (rc != -ENOBUFS)
        return rc;
    /* *len is a frame frame_encode_to accepted: at most MDLMAP_MAX_FRAME
     * plus the header, so the buffer never grows past that. */
    size_t cap = s->out_cap ? s->out_cap : 256;
    while (cap < *len)
        cap *= 2;
    if (cap > MDLMAP_MAX_FRAME + MDLMAP_FRAME_HDR)
        cap = MDLMAP_MAX_FRAME + MDLMAP_FRAME_HDR;
    uint8_t *nb = realloc(s->out, cap);
    if (!nb)
        return -ENOMEM;
    s->out = nb;
    s->out_cap = cap;
    return frame_encode_to(req, s->out, s->out_cap, len);
}

/* Errors that leave the stream at a frame boundary: the frame was read
 * whole, only its contents were bad. */
static bool in_step(int rc)
{
    return rc == -EBADMSG || rc == -EPROTO;
}

/* The next reply, decoded into the arena. Reads only when no whole frame is
 * held yet, and then as much as the transport has. */
static int read_reply(struct mdl_session *s, Mdlmap__V1__Envelope **out)
{
    for (;;) {
        const uint8_t *payload;
        size_t plen;
        int rc = frame_reader_next(&s->rd, &payload, &plen);   /* length 0 or > max: -EMSGSIZE */
        if (rc == 1) {
            rc = frame_decode_with(payload, plen, &s->arena.pc, out);
            if (rc == 0 && take_notice(s, *out))
                continue;
            return rc;
        }
        if (rc < 0)
            return rc;
        uint8_t *p;
        size_t room;
        if ((rc = frame_reader_space(&s->rd, &p, &room)) < 0)
            return rc;
        long n = s->t->ops->recv(s->t, p, room);
        if (n < 0)
            return (int)n;
        if (n == 0 || (size_t)n > room)   /* a transport breaking its contract */
            return n == 0 ? -ECONNRESET : -EPROTO;
        frame_reader_commit(&s->rd, (size_t)n);
    }
}

/* Send the request framed; 0 or negative errno (the session is broken when
 * bytes may have gone out). */
static int send_request(struct mdl_session *s, const Mdlmap__V1__Envelope *req, int pass_fd)
{
    if (s->broken)
        return s->broken;
    size_t len;
    int rc = encode(s, req, &len);
    if (rc < 0)
        return rc;   /* nothing sent: the stream is fine */
    rc = s->t->ops->send(s->t, s->out, len, pass_fd);
    if (rc < 0 && rc != -EOPNOTSUPP)   /* EOPNOTSUPP: refused before sending */
        s->broken = rc;
    return rc;
}

static void record_late(struct mdl_session *s, mdl_status st, const char *detail)
{
    s->late = (struct late_failure){ .on = true, .st = st, .mdl = s->pending.mdl,
                                     .address = s->pending.address };
    snprintf(s->late.detail, sizeof(s->late.detail), "%s", detail ? detail : "");
}

/* Read the reply of the outstanding asynchronous unmap, if any (after the
 * next request went out: the two round trips overlap). A refusal is kept
 * in s->late; 0, or the negative errno that broke the stream. */
static int collect_pending(struct mdl_session *s)
{
    if (!s->pending.on)
        return 0;
    s->pending.on = false;
    if (s->broken)
        return s->broken;   /* the link is gone: hostd drops the mapping with it */
    Mdlmap__V1__Envelope *r;
    int rc = read_reply(s, &r);
    if (in_step(rc)) {
        record_late(s, MDL_STATUS_REVISION_MISMATCH, "undecodable unmap reply");
        return 0;
    }
    if (rc < 0)
        return s->broken = rc;
    if (r->request_id != s->pending.id || r->body_case != MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY) {
        /* Replies come in request order: this one is not ours, so the one
         * after it would not be the next call's either. */
        record_late(s, MDL_STATUS_REVISION_MISMATCH, "unmap reply out of step");
        return s->broken = -EPROTO;
    }
    if (!MDL_SUCCESS(r->status))
        record_late(s, r->status, r->detail);
    return 0;
}

/* Under the lock: make a collected late failure the thread's last status
 * before the call's own outcome (which overwrites it if it failed too). */
static void note_late(struct mdl_session *s)
{
    if (!s->late.on)
        return;
    char why[160];
    snprintf(why, sizeof(why), "asynchronous unmap of %#llx: %s", (unsigned long long)s->late.address,
             s->late.detail);
    mdl_set_last_status(s->late.st, why);
}

static mdl_status transport_failure(int rc)
{
    char why[96];
    snprintf(why, sizeof(why), "transport: %s", strerror(-rc));
    mdl_set_last_status(MDL_STATUS_DEVICE_NOT_READY, why);
    return MDL_STATUS_DEVICE_NOT_READY;
}

mdl_status mdl_session_call(struct mdl_session *s, Mdlmap__V1__Envelope *req, int pass_fd,
                            const Mdlmap__V1__Envelope **resp)
{
    *resp = NULL;
    pthread_mutex_lock(&s->lock);
    mdl_arena_reset(&s->arena);   /* the previous call's reply dies here */
    req->request_id = ++s->next_id;
    Mdlmap__V1__Envelope *r = NULL;
    int rc = send_request(s, req, pass_fd);
    if (rc == 0)
        rc = collect_pending(s);
    if (rc == 0) {
        rc = read_reply(s, &r);
        if (rc < 0 && !in_step(rc))
            s->broken = rc;
    }
    note_late(s);
    if (rc < 0)
        return transport_failure(rc);
    *resp = r;
    if (r->request_id != req->request_id) {
        char why[96];
        snprintf(why, sizeof(why), "response id %llu for request %llu",
                 (unsigned long long)r->request_id, (unsigned long long)req->request_id);
        mdl_set_last_status(MDL_STATUS_REVISION_MISMATCH, why);
        return MDL_STATUS_REVISION_MISMATCH;
    }
    if (!MDL_SUCCESS(r->status))
        mdl_set_last_status(r->status, r->detail);
    return r->status;
}

void mdl_session_release(struct mdl_session *s)
{
    struct late_failure l = s->late;
    s->late.on = false;
    pthread_mutex_unlock(&s->lock);
    /* Windows has no way to return this from MmUnmapLockedPages: the failed
     * unmap of a valid mapping is a verifier report, made now that it is
     * known (the MDL is named by its address only; it may be gone). */
    if (l.on)
        mdl_verifier_report(MDL_VF_UNMAP_FAILED_LATE, (const struct mdl *)(uintptr_t)l.mdl, l.address,
                            (uint32_t)l.st);
}

mdl_status mdl_session_unmap_async(struct mdl_session *s, Mdlmap__V1__Envelope *req,
                                   const struct mdl *m, uint64_t address)
{
    pthread_mutex_lock(&s->lock);
    mdl_arena_reset(&s->arena);
    req->request_id = ++s->next_id;
    int rc = send_request(s, req, -1);
    if (rc == 0)
        rc = collect_pending(s);   /* the previous one: at most one is outstanding */
    if (rc == 0)
        s->pending = (struct pending_unmap){ .on = true, .id = req->request_id,
                                             .mdl = (uint64_t)(uintptr_t)m, .address = address };
    note_late(s);
    mdl_status st = rc < 0 ? transport_failure(rc) : MDL_STATUS_PENDING;
    mdl_session_release(s);
    return st;
}

mdl_status mdl_session_flush(struct mdl_session *s)
{
    pthread_mutex_lock(&s->lock);
    mdl_arena_reset(&s->arena);
    int rc = collect_pending(s);
    note_late(s);
    mdl_status st = rc < 0 ? transport_failure(rc) : MDL_STATUS_SUCCESS;
    mdl_session_release(s);
    return st;
}

bool mdl_session_async_unmap(const struct mdl_session *s)
{
    return s->async_unmap;
}

void mdl_session_set_async_unmap(struct mdl_session *s, bool on)
{
    if (!on)
        mdl_session_flush(s);   /* from now on every unmap's outcome is immediate */
    pthread_mutex_lock(&s->lock);
    s->async_unmap = on;
    pthread_mutex_unlock(&s->lock);
}

static void session_free(struct mdl_session *s)
{
    s->t->ops->close(s->t);
    frame_reader_free(&s->rd);
    mdl_arena_fini(&s->arena);
    free(s->out);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int mdl_session_open(struct mdl_transport *t, struct mdl_pinner *pinner, struct mdl_session **out)
{
    struct mdl_session *s = calloc(1, sizeof(*s));
    if (!s) {
        t->ops->close(t);
        return -ENOMEM;
    }
    s->t = t;
    s->pinner = pinner ? pinner : mdl_pinner_iouring();
    pthread_mutex_init(&s->lock, NULL);
    frame_reader_init(&s->rd, MDLMAP_MAX_FRAME);
    if (mdl_arena_init(&s->arena, 4096) < 0) {
        session_free(s);
        return -ENOMEM;
    }
    const char *c = getenv("MDLMAP_CONSUMER");
    snprintf(s->consumer, sizeof(s->consumer), "%s", c ? c : "");
    const char *a = getenv("MDLMAP_ASYNC_UNMAP");
    s->async_unmap = a && strcmp(a, "1") == 0;

    Mdlmap__V1__Envelope e;
    const Mdlmap__V1__Envelope *r;
    Mdlmap__V1__HelloRequest h;
    mdl_env_hello(&e, &h, "libmdlmap 0.1");
    mdl_status st = mdl_session_call(s, &e, -1, &r);
    if (MDL_SUCCESS(st) && r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY) {
        s->guest_cid = r->hello_reply->guest_cid;
        s->max_mdl_pages = r->hello_reply->max_mdl_pages;
    } else if (MDL_SUCCESS(st)) {
        st = MDL_STATUS_REVISION_MISMATCH;
    }
    mdl_session_release(s);
    if (!MDL_SUCCESS(st)) {
        session_free(s);
        /* Two outcomes only, not ntstatus_to_errno(): callers print "cannot
         * reach hostd" (no transport) or "hostd refused the Hello"; the
         * status itself is left in mdl_last_status(). */
        return st == MDL_STATUS_DEVICE_NOT_READY ? -ECONNREFUSED : -EPROTO;
    }
    *out = s;
    return 0;
}

void mdl_session_track(struct mdl_session *s, struct mdl_priv *p)
{
    pthread_mutex_lock(&s->lock);
    p->live_prev = NULL;
    p->live_next = s->live;
    if (s->live)
        s->live->live_prev = p;
    s->live = p;
    pthread_mutex_unlock(&s->lock);
}

void mdl_session_untrack(struct mdl_session *s, struct mdl_priv *p)
{
    pthread_mutex_lock(&s->lock);
    if (p->live_prev)
        p->live_prev->live_next = p->live_next;
    else if (s->live == p)
        s->live = p->live_next;
    if (p->live_next)
        p->live_next->live_prev = p->live_prev;
    p->live_next = p->live_prev = NULL;
    pthread_mutex_unlock(&s->lock);
}

/* R12: report what the "process" (this session) leaves locked or mapped. hostd
 * runs the connection down itself when the transport closes. */
static void report_leaks(struct mdl_session *s)
{
    uint64_t pages = 0, mdls = 0;
    struct mdl_priv *mapped = NULL;
    for (struct mdl_priv *p = s->live; p; p = p->live_next) {
        mdls++;
        pages += mdl_page_count(&p->mdl);
        if (!mapped && (p->has_sys || p->nuser))
            mapped = p;
    }
    if (!mdls || !mdl_verifier_enabled())
        return;
    if (mapped)
        mdl_bugcheck(MDL_BUG_DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS, 0, 0,
                     (uint64_t)(uintptr_t)&mapped->mdl, pages);
    else
        mdl_bugcheck(MDL_BUG_PROCESS_HAS_LOCKED_PAGES, 0, (uint64_t)getpid(), pages, mdls);
}

void mdl_session_close(struct mdl_session *s)
{
    if (!s)
        return;
    mdl_session_flush(s);   /* an asynchronous unmap's failure is still reported */
    report_leaks(s);
    /* Orphan the MDLs: hostd drops their state with the connection. */
    while (s->live) {
        struct mdl_priv *p = s->live;
        s->live = p->live_next;
        if (p->pinner)
            p->pinner->unpin(p->pinner, &p->pin);
        p->pinner = NULL;
        p->session = NULL;
        p->has_sys = false;
        p->nuser = 0;
        p->mdl.flags &= (int16_t)~(MDL_F_PAGES_LOCKED | MDL_F_MAPPED_TO_SYSTEM_VA);
        p->mdl.mapped_system_va = NULL;
        p->live_next = p->live_prev = NULL;
    }
    session_free(s);
}

int mdl_session_open_vsock(struct mdl_pinner *pinner, struct mdl_session **out)
{
    struct mdl_transport *t;
    int rc = mdl_transport_vsock(&t);
    return rc < 0 ? rc : mdl_session_open(t, pinner, out);
}

int mdl_session_open_agent(const char *path, struct mdl_session **out)
{
    struct mdl_transport *t;
    int rc = mdl_transport_agent(path, &t);
    return rc < 0 ? rc : mdl_session_open(t, mdl_pinner_agent(), out);
}

int mdl_session_open_fd(int fd, bool can_pass_fds, struct mdl_pinner *pinner,
                        struct mdl_session **out)
{
    struct mdl_transport *t = mdl_transport_from_fd(fd, can_pass_fds);
    return t ? mdl_session_open(t, pinner, out) : -ENOMEM;
}

struct mdl_pinner *mdl_session_pinner(struct mdl_session *s)
{
    return s->pinner;
}

void mdl_session_set_consumer(struct mdl_session *s, const char *name)
{
    snprintf(s->consumer, sizeof(s->consumer), "%s", name ? name : "");
}

const char *mdl_session_consumer(const struct mdl_session *s)
{
    return s->consumer;
}

uint64_t mdl_session_guest_cid(const struct mdl_session *s)
{
    return s->guest_cid;
}

/* ---- the default session of the Windows routines ---- */
static struct mdl_session *dflt;
static pthread_mutex_t dflt_lock = PTHREAD_MUTEX_INITIALIZER;

void mdl_set_default_session(struct mdl_session *s)
{
    pthread_mutex_lock(&dflt_lock);
    dflt = s;
    pthread_mutex_unlock(&dflt_lock);
}

struct mdl_session *mdl_default_session_peek(void)
{
    pthread_mutex_lock(&dflt_lock);
    struct mdl_session *s = dflt;
    pthread_mutex_unlock(&dflt_lock);
    return s;
}

struct mdl_session *mdl_default_session(void)
{
    pthread_mutex_lock(&dflt_lock);
    if (!dflt) {
        const char *agent = getenv("MDLMAP_AGENT_SOCKET");
        int rc = agent ? mdl_session_open_agent(agent, &dflt) : mdl_session_open_vsock(NULL, &dflt);
        if (rc < 0) {
            char why[96];
            snprintf(why, sizeof(why), "cannot reach %s: %s", agent ? agent : "hostd over vsock",
                     strerror(-rc));
            mdl_set_last_status(MDL_STATUS_DEVICE_NOT_READY, why);
        }
    }
    struct mdl_session *s = dflt;
    pthread_mutex_unlock(&dflt_lock);
    return s;
}
