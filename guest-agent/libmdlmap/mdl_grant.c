/* Cross-VM grants: Grant, Revoke and GrantCopy requests on a session. */
#include <stdio.h>
#include <string.h>

#include "mdl_internal.h"

static mdl_status fail(mdl_status st, const char *detail)
{
    mdl_set_last_status(st, detail);
    return st;
}

mdl_status mdl_grant(struct mdl *m, uint64_t peer_cid, enum mdl_grant_access access, uint64_t *ref)
{
    *ref = 0;
    struct mdl_priv *p = mdl_priv_checked(m);
    if (!p)
        return fail(MDL_STATUS_INVALID_PARAMETER, "not an MDL");
    if (!(m->flags & MDL_F_PAGES_LOCKED) || !p->session)
        return fail(MDL_STATUS_NOT_LOCKED, "MDL pages are not locked");
    Mdlmap__V1__Envelope e;
    Mdlmap__V1__GrantRequest b = MDLMAP__V1__GRANT_REQUEST__INIT;
    mdl_env_init(&e);
    b.mdl_handle = p->lock_handle;
    b.peer_cid = peer_cid;
    b.access = (Mdlmap__V1__GrantAccess)access;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT;
    e.grant = &b;
    const Mdlmap__V1__Envelope *r;
    mdl_status st = mdl_session_call(p->session, &e, -1, &r);
    if (MDL_SUCCESS(st) && r->body_case == MDLMAP__V1__ENVELOPE__BODY_GRANT_REPLY && r->grant_reply)
        *ref = r->grant_reply->grant_ref;
    else if (MDL_SUCCESS(st))
        st = fail(MDL_STATUS_REVISION_MISMATCH, "grant reply without a GrantResponse");
    mdl_session_release(p->session);
    return st;
}

mdl_status mdl_revoke(struct mdl_session *s, uint64_t ref)
{
    if (!s)
        return fail(MDL_STATUS_INVALID_PARAMETER, "no session");
    Mdlmap__V1__Envelope e;
    Mdlmap__V1__RevokeRequest b = MDLMAP__V1__REVOKE_REQUEST__INIT;
    mdl_env_init(&e);
    b.grant_ref = ref;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_REVOKE;
    e.revoke = &b;
    const Mdlmap__V1__Envelope *r;
    mdl_status st = mdl_session_call(s, &e, -1, &r);
    mdl_session_release(s);
    return st;
}

/* An end on the wire; an own MDL must be locked through session s. */
static mdl_status wire_end(struct mdl_session *s, const struct mdl_copy_end *in, Mdlmap__V1__CopyEnd *out)
{
    mdlmap__v1__copy_end__init(out);
    out->offset = in->offset;
    if (!in->mdl) {
        out->granter_cid = in->granter_cid;
        out->ref = in->ref;
        return MDL_STATUS_SUCCESS;
    }
    struct mdl_priv *p = mdl_priv_checked(in->mdl);
    if (!p || !p->session)
        return fail(MDL_STATUS_NOT_LOCKED, "copy end: MDL pages are not locked");
    if (p->session != s)
        return fail(MDL_STATUS_INVALID_PARAMETER, "copy end: MDL locked through another session");
    out->ref = p->lock_handle;
    return MDL_STATUS_SUCCESS;
}

mdl_status mdl_grant_copy(struct mdl_session *s, const struct mdl_copy_op *ops, size_t n, mdl_status *statuses,
                          uint64_t *copied)
{
    if (!s || n > MDL_COPY_MAX_OPS || (n && !ops))
        return fail(MDL_STATUS_INVALID_PARAMETER, n > MDL_COPY_MAX_OPS ? "more than 64 copy operations" : "no session");
    Mdlmap__V1__CopyEnd ends[2 * MDL_COPY_MAX_OPS];
    Mdlmap__V1__CopyOp w[MDL_COPY_MAX_OPS], *ptrs[MDL_COPY_MAX_OPS];
    for (size_t i = 0; i < n; i++) {
        mdl_status st = wire_end(s, &ops[i].src, &ends[2 * i]);
        if (MDL_SUCCESS(st))
            st = wire_end(s, &ops[i].dst, &ends[2 * i + 1]);
        if (!MDL_SUCCESS(st))
            return st;
        mdlmap__v1__copy_op__init(&w[i]);
        w[i].src = &ends[2 * i];
        w[i].dst = &ends[2 * i + 1];
        w[i].length = ops[i].length;
        ptrs[i] = &w[i];
    }
    Mdlmap__V1__Envelope e;
    Mdlmap__V1__GrantCopyRequest b = MDLMAP__V1__GRANT_COPY_REQUEST__INIT;
    mdl_env_init(&e);
    b.ops = ptrs;
    b.n_ops = n;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY;
    e.grant_copy = &b;
    const Mdlmap__V1__Envelope *r;
    mdl_status st = mdl_session_call(s, &e, -1, &r);
    const Mdlmap__V1__GrantCopyResponse *rp = MDL_SUCCESS(st) && r->body_case ==
        MDLMAP__V1__ENVELOPE__BODY_GRANT_COPY_REPLY ? r->grant_copy_reply : NULL;
    if (MDL_SUCCESS(st) && (!rp || rp->n_status != n || rp->n_copied != n))
        st = fail(MDL_STATUS_REVISION_MISMATCH, "grant copy reply without one result per operation");
    for (size_t i = 0; i < n; i++) {
        bool have = MDL_SUCCESS(st);
        if (statuses)
            statuses[i] = have ? rp->status[i] : st;
        if (copied)
            copied[i] = have ? rp->copied[i] : 0;
    }
    mdl_session_release(s);
    return st;
}
