/* The plain MDL operations: probe+pin+register, map, unmap, unlock. They
 * return an NTSTATUS (and set the thread's last status); the Windows
 * semantics of failures (bug check, exception, NULL) live in wdm_compat.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "mdl_internal.h"
#include "ntstatus.h"

static mdl_status fail(mdl_status st, const char *detail)
{
    mdl_set_last_status(st, detail);
    return st;
}

/* The status a pinner's failure (negative errno) makes MmProbeAndLockPages
 * fail with. The errno is read through the common table (ntstatus.c), except
 * where it means something else here than in hostd's answers. */
static mdl_status pin_status(int err)
{
    mdl_status st;
    switch (err) {
    case -ENOSYS:
        /* No io_uring in this kernel: pinning is not supported. In the table
         * -ENOSYS is hostd's "request not served" (INVALID_DEVICE_REQUEST). */
        return MDL_STATUS_NOT_SUPPORTED;
    case -EMFILE:
        /* Out of descriptors for the pin ring: a resource shortage, as
         * -ENFILE. hostd answers its own -EMFILE as STATUS_UNSUCCESSFUL, so
         * this cannot be a table row. */
        return MDL_STATUS_INSUFFICIENT_RESOURCES;
    default:
        st = ntstatus_from_errno(err);
        break;
    }
    /* A pin fails for the buffer, for rights, for resources or for want of
     * support. Other rows name hostd's conditions (a mapping conflict, an
     * unknown handle, ...) that a pin failure is not: it stays unspecified. */
    switch (st) {
    case MDL_STATUS_ACCESS_VIOLATION:
    case MDL_STATUS_ACCESS_DENIED:
    case MDL_STATUS_INSUFFICIENT_RESOURCES:
    case MDL_STATUS_NOT_SUPPORTED:
        return st;
    default:
        return MDL_STATUS_UNSUCCESSFUL;
    }
}

/* The response must carry the expected body. */
static mdl_status expect(mdl_status st, const Mdlmap__V1__Envelope *r, int body)
{
    if (MDL_SUCCESS(st) && (!r || (int)r->body_case != body))
        return fail(MDL_STATUS_REVISION_MISMATCH, "unexpected response body");
    return st;
}

/* The frames the agent daemon pinned, from its LockResponse: runs (current
 * daemons) or one pfn per page (older ones), never both. NULL, or why not. */
static const char *peer_frames(const Mdlmap__V1__LockResponse *lr, uint64_t *pfns, size_t npages,
                               enum mdl_frames_from *from)
{
    if (lr->n_runs && lr->n_pfns)
        return "agent returned the frames both as pfns and as runs";
    if (lr->n_runs) {
        *from = MDL_FRAMES_PEER_RUNS;
        return mdl_env_runs_expand(lr->runs, lr->n_runs, pfns, npages) < 0
                   ? "agent returned frame runs that do not cover the buffer" : NULL;
    }
    *from = MDL_FRAMES_PEER_PFNS;
    if (lr->n_pfns != npages)
        return "agent returned a wrong frame count";
    memcpy(pfns, lr->pfns, npages * sizeof(uint64_t));
    return NULL;
}

mdl_status mdl_probe_and_lock(struct mdl_session *s, struct mdl *m, enum mdl_lock_op op)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    char why[128];
    if (!p || (unsigned)op > MDL_IO_MODIFY)
        return fail(MDL_STATUS_INVALID_PARAMETER, "not an MDL or bad operation");
    if (m->flags & MDL_F_PAGES_LOCKED)
        return fail(MDL_STATUS_INVALID_DEVICE_REQUEST, "MDL already locked");
    if (!s)
        return fail(MDL_STATUS_DEVICE_NOT_READY, "no session with hostd");
    uintptr_t va = (uintptr_t)m->start_va + m->byte_offset;
    if (mdl_probe_range(va, m->byte_count, op != MDL_IO_READ) < 0) {
        snprintf(why, sizeof(why), "buffer %#lx+%u not %s", (unsigned long)va, m->byte_count,
                 op == MDL_IO_READ ? "readable" : "writable");
        return fail(MDL_STATUS_ACCESS_VIOLATION, why);
    }
    size_t npages = mdl_page_count(m);
    struct mdl_pinner *pin = mdl_session_pinner(s);
    struct mdl_pin pn = { .pass_fd = -1 };
    int rc = pin->pin(pin, (uintptr_t)m->start_va, npages, mdl_pfns(m), &pn);
    if (rc < 0) {
        snprintf(why, sizeof(why), "pinning %zu pages: %s", npages, strerror(-rc));
        return fail(pin_status(rc), why);
    }
    Mdlmap__V1__Envelope e;
    const Mdlmap__V1__Envelope *r = NULL;
    Mdlmap__V1__LockRequest b;
    struct mdl_env_runs rs;
    mdl_status st = MDL_STATUS_INSUFFICIENT_RESOURCES;
    bool called = false;
    if (mdl_env_lock(&e, &b, m, op, mdl_pfns(m), pn.pfns_from_peer ? 0 : npages, &rs) == 0) {
        if (pn.pass_fd >= 0)
            b.memfd_offset = pn.fd_offset;
        st = mdl_session_call(s, &e, pn.pass_fd, &r);
        called = true;
    } else {
        fail(st, "no memory for the frame runs");
    }
    mdl_env_runs_free(&rs);
    st = expect(st, r, MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY);
    uint64_t refused = 0;   /* locked by the daemon, but its frames are unusable */
    enum mdl_frames_from from = MDL_FRAMES_OWN;
    const char *bad = NULL;
    if (MDL_SUCCESS(st) && pn.pfns_from_peer && (bad = peer_frames(r->lock_reply, mdl_pfns(m), npages, &from))) {
        refused = r->lock_reply->mdl_handle;
        st = MDL_STATUS_REVISION_MISMATCH;
    }
    if (MDL_SUCCESS(st))
        p->lock_handle = r->lock_reply->mdl_handle;
    if (called)
        mdl_session_release(s);   /* r is gone from here on */
    if (refused) {
        /* not ours to keep: give the MDL back (its own status is moot) */
        Mdlmap__V1__UnlockRequest ub;
        mdl_env_unlock(&e, &ub, refused);
        mdl_session_call(s, &e, -1, &r);
        mdl_session_release(s);
    }
    if (bad)
        fail(st, bad);   /* after the Unlock, whose status is not the caller's */
    if (!MDL_SUCCESS(st)) {
        pin->unpin(pin, &pn);
        return st;
    }
    p->frames_from = from;
    p->pin = pn;
    p->pinner = pin;
    p->session = s;
    p->op = op;
    p->locked_ever = true;
    m->flags |= MDL_F_PAGES_LOCKED;
    if (op != MDL_IO_READ)
        m->flags |= MDL_F_WRITE_OPERATION;
    mdl_session_track(s, p);
    return MDL_STATUS_SUCCESS;
}

static void drop_mapping(struct mdl_priv *p, uint64_t address)
{
    if (p->has_sys && p->sys.address == address) {
        p->has_sys = false;
        p->mdl.flags &= (int16_t)~MDL_F_MAPPED_TO_SYSTEM_VA;
        p->mdl.mapped_system_va = NULL;
        return;
    }
    for (unsigned i = 0; i < p->nuser; i++)
        if (p->user[i].address == address) {
            p->user[i] = p->user[--p->nuser];
            return;
        }
}

bool mdl_find_mapping(const struct mdl *m, uint64_t address, struct mdl_map_info *out)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    if (!p)
        return false;
    if (p->has_sys && (address == 0 || address == p->sys.address)) {
        if (out)
            *out = p->sys;
        return true;
    }
    for (unsigned i = 0; i < p->nuser; i++)
        if (p->user[i].address == address) {
            if (out)
                *out = p->user[i];
            return true;
        }
    return false;
}

mdl_status mdl_map(struct mdl *m, const struct mdl_map_params *prm, struct mdl_map_info *out)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    if (!p)
        return fail(MDL_STATUS_INVALID_PARAMETER, "not an MDL");
    if (!(m->flags & MDL_F_PAGES_LOCKED) || !p->session)
        return fail(MDL_STATUS_NOT_LOCKED, "MDL pages are not locked");
    if (prm->mode == MDL_KERNEL_MODE && p->has_sys)
        return fail(MDL_STATUS_CONFLICTING_ADDRESSES, "MDL already has a system mapping");
    if (prm->mode == MDL_USER_MODE && p->nuser >= MDL_MAX_USER_MAPS)
        return fail(MDL_STATUS_INSUFFICIENT_RESOURCES, "too many UserMode mappings of one MDL");
    Mdlmap__V1__Envelope e;
    const Mdlmap__V1__Envelope *r;
    Mdlmap__V1__MapRequest b;
    if (mdl_env_map(&e, &b, p->lock_handle, prm, mdl_session_consumer(p->session)) < 0)
        return fail(MDL_STATUS_INVALID_PARAMETER, "invalid cache type or access mode");
    mdl_status st = mdl_session_call(p->session, &e, -1, &r);
    st = expect(st, r, MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY);
    struct mdl_map_info mi = { .mode = prm->mode };
    if (MDL_SUCCESS(st)) {
        const Mdlmap__V1__MapResponse *mr = r->map_reply;
        mi.address = mr->address;
        mi.base_address = mr->base_address;
        mi.map_handle = mr->map_handle;
        mi.page_count = mr->page_count;
        mi.vma_count = mr->vma_count;
        mi.read_only = mr->read_only;
        mi.cache = (int)mr->cache_type;
    }
    mdl_session_release(p->session);
    if (!MDL_SUCCESS(st))
        return st;
    if (prm->mode == MDL_KERNEL_MODE) {
        p->sys = mi;
        p->has_sys = true;
        m->mapped_system_va = (void *)(uintptr_t)mi.address;
        m->flags |= MDL_F_MAPPED_TO_SYSTEM_VA;
    } else {
        p->user[p->nuser++] = mi;
    }
    if (out)
        *out = mi;
    return MDL_STATUS_SUCCESS;
}

mdl_status mdl_unmap(struct mdl *m, uint64_t address)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    struct mdl_map_info mi;
    if (!p)
        return fail(MDL_STATUS_INVALID_PARAMETER, "not an MDL");
    if (!address || !mdl_find_mapping(m, address, &mi))
        return fail(MDL_STATUS_NOT_MAPPED_VIEW, "no mapping of this MDL at that address");
    Mdlmap__V1__Envelope e;
    const Mdlmap__V1__Envelope *r;
    Mdlmap__V1__UnmapRequest b;
    mdl_env_unmap(&e, &b, mi.map_handle, mi.address, p->lock_handle);
    mdl_status st;
    if (mdl_session_async_unmap(p->session)) {
        /* Forgotten now: hostd's answer comes with the next call, and a
         * refusal then is reported, not retried (docs/semantics.md). A
         * mapping hostd kept goes with the MDL's unlock (R10). */
        st = mdl_session_unmap_async(p->session, &e, m, mi.address);
        drop_mapping(p, address);
        return st;
    }
    st = mdl_session_call(p->session, &e, -1, &r);
    mdl_session_release(p->session);
    /* hostd no longer knows it (or the link is gone and hostd drops it): forget it too. */
    if (MDL_SUCCESS(st) || st == MDL_STATUS_NOT_FOUND || st == MDL_STATUS_INVALID_HANDLE ||
        st == MDL_STATUS_DEVICE_NOT_READY)
        drop_mapping(p, address);
    return st;
}

mdl_status mdl_unlock(struct mdl *m)
{
    struct mdl_priv *p = mdl_priv_checked(m);
    if (!p)
        return fail(MDL_STATUS_INVALID_PARAMETER, "not an MDL");
    if (!(m->flags & MDL_F_PAGES_LOCKED) || !p->session)
        return fail(MDL_STATUS_NOT_LOCKED, "MDL pages are not locked");
    while (p->nuser) {   /* UserMode mappings first; hostd's unlock drops the system one (R10) */
        unsigned before = p->nuser;
        mdl_unmap(m, p->user[before - 1].address);   /* may forget the mapping itself */
        if (p->nuser == before)
            p->nuser--;   /* hostd refused: its unlock below drops the mapping anyway */
    }
    Mdlmap__V1__Envelope e;
    const Mdlmap__V1__Envelope *r;
    Mdlmap__V1__UnlockRequest b;
    mdl_env_unlock(&e, &b, p->lock_handle);
    mdl_status st = mdl_session_call(p->session, &e, -1, &r);
    mdl_session_release(p->session);
    /* Windows' MmUnlockPages cannot fail: release our side whatever hostd said. */
    mdl_session_untrack(p->session, p);
    p->pinner->unpin(p->pinner, &p->pin);
    p->pinner = NULL;
    p->session = NULL;
    p->lock_handle = 0;
    p->has_sys = false;
    m->mapped_system_va = NULL;
    m->flags &= (int16_t)~(MDL_F_PAGES_LOCKED | MDL_F_MAPPED_TO_SYSTEM_VA | MDL_F_WRITE_OPERATION);
    return st;
}
