/* A session with hostd: transport, pinner, request ids, the locked MDLs. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "mdl_internal.h"

struct mdl_session {
    struct mdl_transport *t;
    struct mdl_pinner *pinner;
    pthread_mutex_t lock;
    uint64_t next_id;
    uint64_t guest_cid;
    uint64_t max_mdl_pages;
    char consumer[128];
    struct mdl_priv *live;      /* locked MDLs (R12 leak report on close) */
};

mdl_status mdl_session_call(struct mdl_session *s, Mdlmap__V1__Envelope *req, int pass_fd,
                            Mdlmap__V1__Envelope **resp)
{
    *resp = NULL;
    pthread_mutex_lock(&s->lock);
    req->request_id = ++s->next_id;
    int rc = s->t->ops->call(s->t, req, pass_fd, resp);
    pthread_mutex_unlock(&s->lock);
    char why[96];
    if (rc < 0) {
        snprintf(why, sizeof(why), "transport: %s", strerror(-rc));
        mdl_set_last_status(MDL_STATUS_DEVICE_NOT_READY, why);
        return MDL_STATUS_DEVICE_NOT_READY;
    }
    Mdlmap__V1__Envelope *r = *resp;
    if (r->request_id != req->request_id) {
        snprintf(why, sizeof(why), "response id %llu for request %llu",
                 (unsigned long long)r->request_id, (unsigned long long)req->request_id);
        mdl_set_last_status(MDL_STATUS_REVISION_MISMATCH, why);
        return MDL_STATUS_REVISION_MISMATCH;
    }
    if (!MDL_SUCCESS(r->status))
        mdl_set_last_status(r->status, r->detail);
    return r->status;
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
    const char *c = getenv("MDLMAP_CONSUMER");
    snprintf(s->consumer, sizeof(s->consumer), "%s", c ? c : "");

    Mdlmap__V1__Envelope e, *r;
    Mdlmap__V1__HelloRequest h;
    mdl_env_hello(&e, &h, "libmdlmap 0.1");
    mdl_status st = mdl_session_call(s, &e, -1, &r);
    if (MDL_SUCCESS(st) && r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY) {
        s->guest_cid = r->hello_reply->guest_cid;
        s->max_mdl_pages = r->hello_reply->max_mdl_pages;
    } else if (MDL_SUCCESS(st)) {
        st = MDL_STATUS_REVISION_MISMATCH;
    }
    if (r)
        frame_envelope_free(r);
    if (!MDL_SUCCESS(st)) {
        t->ops->close(t);
        free(s);
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
    s->t->ops->close(s->t);
    pthread_mutex_destroy(&s->lock);
    free(s);
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
