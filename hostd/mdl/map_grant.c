/* Cross-VM grants and grant copies (see map_grant.h). */
#include "map_grant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "map_engine_int.h"

/* A connection of the peer that used the grant: told when it is revoked.
 * At most one entry per peer connection (<= 256 per VM, vsock's bound). */
struct grant_use {
    uint64_t conn_id;
    void *ctx;
};

struct map_grant {
    uint64_t ref;
    struct mdl_obj *mdl;         /* the granter's MDL (owner = granter VM + connection) */
    struct map_vm *peer;
    uint32_t access;
    uint64_t copies, bytes;
    struct grant_use *uses;
    unsigned nuses, capuses;
    struct map_grant *mdl_next;  /* the MDL's grants */
    struct map_grant *prev, *next;
};

/* One end of an operation in progress: the MDL it reads or writes and a
 * cursor into its frame runs (the MDL's frames never change while it lives). */
struct copy_side {
    struct mdl_obj *mdl;
    struct map_grant *g;         /* NULL: an MDL of the caller */
    uint64_t pos;                /* next byte, relative to the buffer */
    uint32_t fi;                 /* frame run holding pos */
    uint64_t fpage0;             /* page index (in the MDL) of run fi's first page */
};

struct copy_op {
    struct copy_side s, d;
    uint64_t len, done;
    int err;
    bool finished;
};

struct map_copy {
    struct map_copy *prev, *next;
    struct map_owner owner;
    size_t n, cur;
    char detail[160];
    struct copy_op op[];
};

void map_engine_set_grant_hooks(struct map_engine *e, const struct map_grant_hooks *h)
{
    void (*notice)(void *, uint64_t, uint64_t, const char *) = e->gh.notice;
    e->gh = *h;
    if (!e->gh.notice)
        e->gh.notice = notice;
}

void map_engine_set_grant_notice(struct map_engine *e, void (*notice)(void *, uint64_t, uint64_t, const char *))
{
    e->gh.notice = notice;
}

/* GRANT_CREATED (why NULL) or GRANT_REVOKED about g, from the granter's side. */
static void grant_event(struct map_engine *e, const struct map_grant *g, const char *why)
{
    enum event_type t = why ? EV_GRANT_REVOKED : EV_GRANT_CREATED;
    if (!events_wanted(e->events, t))
        return;
    char detail[200];
    snprintf(detail, sizeof(detail), "ref 0x%llx to %s (cid %llu), %s, %u bytes%s%s",
             (unsigned long long)g->ref, g->peer->name, (unsigned long long)g->peer->cid,
             g->access == MAP_GRANT_READ_WRITE ? "read-write" : "read-only", g->mdl->byte_count, why ? ": " : "",
             why ? why : "");
    const struct map_owner *o = &g->mdl->owner;
    struct event ev = { .type = t,
                        .vm_name = o->vm->name,
                        .cid = o->vm->cid,
                        .conn_id = o->conn_id,
                        .mdl_handle = g->mdl->handle,
                        .page_count = g->mdl->npages,
                        .detail = detail };
    events_publish(e->events, &ev);
}

static struct map_vm *vm_by_cid(struct map_engine *e, uint64_t cid)
{
    for (struct map_vm *vm = e->vms; vm; vm = vm->next)
        if (vm->cid == cid)
            return vm;
    return NULL;
}

int map_grant_create(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle, uint64_t peer_cid,
                     uint32_t access, uint64_t *ref, char *detail, size_t dlen)
{
    *ref = 0;
    struct mdl_obj *m = map_table_get(&e->mdls, mdl_handle);
    if (!m || !map_owner_eq(&m->owner, o)) {
        snprintf(detail, dlen, "unknown MDL handle 0x%llx", (unsigned long long)mdl_handle);
        return -EBADF;
    }
    if (access > MAP_GRANT_READ_WRITE) {
        snprintf(detail, dlen, "unknown grant access %u", access);
        return -EINVAL;
    }
    if (peer_cid == o->vm->cid) {
        snprintf(detail, dlen, "a VM cannot grant to itself (cid %llu)", (unsigned long long)peer_cid);
        return -EINVAL;
    }
    /* an unknown peer gets the same answer as a forbidden one: which CIDs
     * hostd serves is not the guest's business */
    struct map_vm *peer = vm_by_cid(e, peer_cid);
    if (!e->gh.allowed || !peer || !e->gh.allowed(e->gh.ctx, o->vm->name, peer->name)) {
        snprintf(detail, dlen, "%s", !e->gh.allowed ? "sharing is off (hostd --sharing)"
                                                    : "sharing with that CID is not allowed");
        return -EACCES;
    }
    if (access == MAP_GRANT_READ_WRITE && m->operation == 0) {
        snprintf(detail, dlen, "read-write grant of MDL 0x%llx locked for IoReadAccess", (unsigned long long)mdl_handle);
        return -EACCES;
    }
    if (o->vm->grants_granted >= MAP_GRANTS_GRANTED_PER_VM || peer->grants_held >= MAP_GRANTS_HELD_PER_VM) {
        snprintf(detail, dlen, "grant bound: VM %s granted %u, peer %s holds %u (limits %u / %u)", o->vm->name,
                 o->vm->grants_granted, peer->name, peer->grants_held, MAP_GRANTS_GRANTED_PER_VM,
                 MAP_GRANTS_HELD_PER_VM);
        return -ENOSPC;
    }
    struct map_grant *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    g->ref = map_handle_next(&e->gen);
    g->mdl = m;
    g->peer = peer;
    g->access = access;
    if (map_table_put(&e->grants, g->ref, g) < 0) {
        free(g);
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    g->mdl_next = m->grants;
    m->grants = g;
    g->next = e->grant_head;
    if (g->next)
        g->next->prev = g;
    e->grant_head = g;
    o->vm->grants_granted++;
    peer->grants_held++;
    *ref = g->ref;
    log_debug("grant: vm %s conn %llu granted mdl 0x%llx (%u bytes) to %s (cid %llu) %s: ref 0x%llx", o->vm->name,
              (unsigned long long)o->conn_id, (unsigned long long)mdl_handle, m->byte_count, peer->name,
              (unsigned long long)peer->cid, access ? "read-write" : "read-only", (unsigned long long)g->ref);
    grant_event(e, g, NULL);
    return 0;
}

static void tomb_add(struct map_vm *peer, uint64_t ref, uint64_t granter_cid)
{
    if (!peer->tombs) {
        peer->tombs = calloc(MAP_GRANT_TOMBSTONES, sizeof(*peer->tombs));
        if (!peer->tombs)
            return; /* later uses hear "unknown" instead of "revoked" */
    }
    peer->tombs[peer->tomb_next] = (struct map_grant_tomb){ ref, granter_cid };
    peer->tomb_next = (peer->tomb_next + 1) % MAP_GRANT_TOMBSTONES;
    if (peer->ntombs < MAP_GRANT_TOMBSTONES)
        peer->ntombs++;
}

static bool tomb_has(const struct map_vm *vm, uint64_t ref, uint64_t granter_cid)
{
    for (unsigned i = 0; i < vm->ntombs; i++)
        if (vm->tombs[i].ref == ref && vm->tombs[i].granter_cid == granter_cid)
            return true;
    return false;
}

/* Fail the unfinished operations that use g (or, with g NULL, the MDL m). */
static void fail_ops(struct map_engine *e, const struct map_grant *g, const struct mdl_obj *m, int err,
                     const char *why)
{
    for (struct map_copy *c = e->copies; c; c = c->next)
        for (size_t i = 0; i < c->n; i++) {
            struct copy_op *op = &c->op[i];
            bool hit = g ? (op->s.g == g || op->d.g == g) : (op->s.mdl == m || op->d.mdl == m);
            if (op->finished || !hit)
                continue;
            op->finished = true;
            op->err = err;
            if (!c->detail[0])
                snprintf(c->detail, sizeof(c->detail), "op %zu: %s after %llu of %llu bytes", i, why,
                         (unsigned long long)op->done, (unsigned long long)op->len);
        }
}

/* Remove g from everything and free it; tell the peer's connections and the
 * event bus why (NULL: the engine is being freed, nobody to tell). */
static void grant_destroy(struct map_engine *e, struct map_grant *g, const char *why)
{
    bool tell = why != NULL;
    if (!why)
        why = "hostd stopping";
    struct map_vm *granter = g->mdl->owner.vm;
    fail_ops(e, g, NULL, -EKEYREVOKED, "grant revoked");
    for (struct map_grant **pp = &g->mdl->grants; *pp; pp = &(*pp)->mdl_next)
        if (*pp == g) {
            *pp = g->mdl_next;
            break;
        }
    map_table_del(&e->grants, g->ref);
    if (g->prev)
        g->prev->next = g->next;
    else
        e->grant_head = g->next;
    if (g->next)
        g->next->prev = g->prev;
    granter->grants_granted--;
    g->peer->grants_held--;
    tomb_add(g->peer, g->ref, granter->cid);
    for (unsigned i = 0; tell && i < g->nuses; i++)
        if (e->gh.notice)
            e->gh.notice(g->uses[i].ctx, granter->cid, g->ref, why);
    log_debug("grant: ref 0x%llx of vm %s to %s revoked (%s): %llu copies, %llu bytes, %u peer connections told",
              (unsigned long long)g->ref, granter->name, g->peer->name, why, (unsigned long long)g->copies,
              (unsigned long long)g->bytes, g->nuses);
    if (tell)
        grant_event(e, g, why);
    free(g->uses);
    free(g);
}

int map_grant_revoke(struct map_engine *e, const struct map_owner *o, uint64_t ref, bool privileged, char *detail,
                     size_t dlen)
{
    struct map_grant *g = map_table_get(&e->grants, ref);
    if (!g || g->mdl->owner.vm != o->vm || (!privileged && g->mdl->owner.conn_id != o->conn_id)) {
        snprintf(detail, dlen, "unknown grant 0x%llx", (unsigned long long)ref);
        return -EBADF;
    }
    grant_destroy(e, g, "revoked");
    return 0;
}

void map_grant_mdl_gone(struct map_engine *e, struct mdl_obj *m, const char *why)
{
    while (m->grants)
        grant_destroy(e, m->grants, why);
    fail_ops(e, NULL, m, -ENOLCK, "MDL unlocked");
}

static void drop_uses(struct map_grant *g, const struct map_owner *o, bool vm_only)
{
    unsigned k = 0;
    for (unsigned i = 0; i < g->nuses; i++)
        if (!vm_only && g->uses[i].conn_id != o->conn_id)
            g->uses[k++] = g->uses[i];
    g->nuses = k;
}

void map_grant_owner_gone(struct map_engine *e, const struct map_owner *o, bool vm_only)
{
    for (struct map_grant *g = e->grant_head; g; g = g->next)
        if (g->peer == o->vm)
            drop_uses(g, o, vm_only);
    if (vm_only) {
        free(o->vm->tombs);
        o->vm->tombs = NULL;
        o->vm->ntombs = o->vm->tomb_next = 0;
    }
}

void map_grant_vm_gone(struct map_engine *e, struct map_vm *vm)
{
    for (struct map_grant *g = e->grant_head, *next; g; g = next) {
        next = g->next;
        if (g->peer == vm)
            grant_destroy(e, g, "peer VM removed");
    }
}

void map_grant_fini(struct map_engine *e)
{
    while (e->grant_head)
        grant_destroy(e, e->grant_head, NULL);
    map_table_free(&e->grants);
}

/* ---- grant copy ---- */

static int use_add(struct map_grant *g, const struct map_owner *o, void *ctx)
{
    if (!ctx)
        return 0;
    for (unsigned i = 0; i < g->nuses; i++)
        if (g->uses[i].conn_id == o->conn_id)
            return 0;
    if (g->nuses == g->capuses) {
        unsigned cap = g->capuses ? g->capuses * 2 : 2;
        struct grant_use *u = realloc(g->uses, cap * sizeof(*u));
        if (!u)
            return -ENOMEM;
        g->uses = u;
        g->capuses = cap;
    }
    g->uses[g->nuses++] = (struct grant_use){ o->conn_id, ctx };
    return 0;
}

/* Resolve one end for the caller o; write: the end is a destination. */
static int side_resolve(struct map_engine *e, const struct map_owner *o, const struct map_copy_end *end,
                        bool write, uint64_t len, struct copy_side *sd, char *detail, size_t dlen)
{
    memset(sd, 0, sizeof(*sd));
    const char *what = write ? "dst" : "src";
    if (end->granter_cid == 0) {
        struct mdl_obj *m = map_table_get(&e->mdls, end->ref);
        if (!m || !map_owner_eq(&m->owner, o)) {
            snprintf(detail, dlen, "%s: unknown MDL handle 0x%llx", what, (unsigned long long)end->ref);
            return -EBADF;
        }
        if (write && m->operation == 0) {
            snprintf(detail, dlen, "dst: MDL 0x%llx is locked for IoReadAccess", (unsigned long long)end->ref);
            return -EACCES;
        }
        sd->mdl = m;
    } else {
        struct map_grant *g = map_table_get(&e->grants, end->ref);
        if (!g || g->peer != o->vm || g->mdl->owner.vm->cid != end->granter_cid) {
            bool revoked = !g && tomb_has(o->vm, end->ref, end->granter_cid);
            snprintf(detail, dlen, "%s: grant 0x%llx of cid %llu %s", what, (unsigned long long)end->ref,
                     (unsigned long long)end->granter_cid, revoked ? "was revoked" : "is unknown");
            return revoked ? -EKEYREVOKED : -EBADF;
        }
        if (write && g->access != MAP_GRANT_READ_WRITE) {
            snprintf(detail, dlen, "dst: grant 0x%llx is read-only", (unsigned long long)end->ref);
            return -EACCES;
        }
        sd->mdl = g->mdl;
        sd->g = g;
    }
    uint64_t bc = sd->mdl->byte_count;
    if (end->offset > bc || len > bc - end->offset) {
        snprintf(detail, dlen, "%s: offset %llu + length %llu outside the buffer's %llu bytes", what,
                 (unsigned long long)end->offset, (unsigned long long)len, (unsigned long long)bc);
        return -EINVAL;
    }
    sd->pos = end->offset;
    return 0;
}

int map_copy_begin(struct map_engine *e, const struct map_owner *o, const struct map_copy_op *ops, size_t n,
                   void *conn_ctx, struct map_copy **out, char *detail, size_t dlen)
{
    *out = NULL;
    if (n > MAP_COPY_MAX_OPS) {
        snprintf(detail, dlen, "%zu copy operations, at most %u", n, MAP_COPY_MAX_OPS);
        return -EINVAL;
    }
    struct map_copy *c = calloc(1, sizeof(*c) + n * sizeof(c->op[0]));
    if (!c) {
        snprintf(detail, dlen, "out of memory");
        return -ENOMEM;
    }
    c->owner = *o;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        struct copy_op *op = &c->op[i];
        char d[128];
        op->len = ops[i].length;
        int rc = side_resolve(e, o, &ops[i].src, false, op->len, &op->s, d, sizeof(d));
        if (rc == 0)
            rc = side_resolve(e, o, &ops[i].dst, true, op->len, &op->d, d, sizeof(d));
        if (rc == 0 && op->s.g)
            rc = use_add(op->s.g, o, conn_ctx);
        if (rc == 0 && op->d.g)
            rc = use_add(op->d.g, o, conn_ctx);
        if (rc < 0 && rc != -ENOMEM && !c->detail[0])
            snprintf(c->detail, sizeof(c->detail), "op %zu: %s", i, d);
        if (rc < 0) {
            op->err = rc;
            op->finished = true;
            continue;
        }
        if (op->s.g)
            op->s.g->copies++;
        if (op->d.g)
            op->d.g->copies++;
    }
    c->next = e->copies;
    if (c->next)
        c->next->prev = c;
    e->copies = c;
    *out = c;
    return 0;
}

/* Host pointer of the side's next byte and how many bytes follow it
 * contiguously (within one frame run and one memory region). */
static uint8_t *side_at(struct copy_side *sd, uint64_t *avail)
{
    const struct mdl_obj *m = sd->mdl;
    uint64_t b = m->byte_offset + sd->pos;
    uint64_t page = b >> MAP_PAGE_SHIFT;
    if (page < sd->fpage0) {
        sd->fi = 0;
        sd->fpage0 = 0;
    }
    while (sd->fi < m->nframes && page >= sd->fpage0 + m->frames[sd->fi].count)
        sd->fpage0 += m->frames[sd->fi++].count;
    if (sd->fi >= m->nframes)
        return NULL;
    const struct map_frames *f = &m->frames[sd->fi];
    uint64_t run_end = (sd->fpage0 + f->count) << MAP_PAGE_SHIFT;
    uint64_t gpa = ((f->first_pfn + (page - sd->fpage0)) << MAP_PAGE_SHIFT) + (b & (MAP_PAGE_SIZE - 1));
    uint64_t reg_avail;
    const struct mem_region *r = memtable_find_gpa(m->owner.vm->mem, gpa, &reg_avail);
    if (!r)
        return NULL;
    *avail = run_end - b < reg_avail ? run_end - b : reg_avail;
    return r->hva + (gpa - r->gpa);
}

static uint64_t min3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t m = a < b ? a : b;
    return m < c ? m : c;
}

uint64_t map_copy_step(struct map_engine *e, struct map_copy *c, uint64_t budget, bool *done)
{
    uint64_t moved = 0;
    while (c->cur < c->n && moved < budget) {
        struct copy_op *op = &c->op[c->cur];
        if (op->finished) {
            c->cur++;
            continue;
        }
        if (op->done == op->len) {
            op->finished = true;
            continue;
        }
        uint64_t sa = 0, da = 0;
        uint8_t *sp = side_at(&op->s, &sa), *dp = side_at(&op->d, &da);
        if (!sp || !dp) {
            /* the memory table changed under a locked MDL (QEMU re-registered RAM) */
            op->err = -EFAULT;
            op->finished = true;
            if (!c->detail[0])
                snprintf(c->detail, sizeof(c->detail), "op %zu: %s page is no longer guest RAM", c->cur,
                         sp ? "dst" : "src");
            continue;
        }
        uint64_t k = min3(sa, da, op->len - op->done);
        if (k > budget - moved)
            k = budget - moved;
        /* memmove: src and dst may be the same pages (overlap gives what
         * memmove gives per chunk; across chunks, as memcpy: unspecified) */
        memmove(dp, sp, k);
        op->s.pos += k;
        op->d.pos += k;
        op->done += k;
        moved += k;
        if (op->s.g)
            op->s.g->bytes += k;
        if (op->d.g)
            op->d.g->bytes += k;
    }
    *done = c->cur >= c->n;
    (void)e;
    return moved;
}

size_t map_copy_count(const struct map_copy *c)
{
    return c->n;
}

void map_copy_result(const struct map_copy *c, size_t i, int *err, uint64_t *copied)
{
    *err = i < c->n ? c->op[i].err : -EINVAL;
    *copied = i < c->n ? c->op[i].done : 0;
}

const char *map_copy_detail(const struct map_copy *c)
{
    return c->detail;
}

void map_copy_free(struct map_engine *e, struct map_copy *c)
{
    if (!c)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        e->copies = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* ---- host view ---- */

const struct map_grant *map_grant_next(const struct map_engine *e, const struct map_grant *prev)
{
    return prev ? prev->next : e->grant_head;
}

void map_grant_info(const struct map_grant *g, struct map_grant_info *out)
{
    *out = (struct map_grant_info){
        .ref = g->ref,
        .granter_vm = g->mdl->owner.vm->name,
        .peer_vm = g->peer->name,
        .granter_cid = g->mdl->owner.vm->cid,
        .peer_cid = g->peer->cid,
        .access = g->access,
        .mdl_handle = g->mdl->handle,
        .byte_count = g->mdl->byte_count,
        .copies = g->copies,
        .bytes_copied = g->bytes,
    };
}

void map_grant_vm_counts(const struct map_vm *vm, unsigned *granted, unsigned *held)
{
    *granted = vm ? vm->grants_granted : 0;
    *held = vm ? vm->grants_held : 0;
}
