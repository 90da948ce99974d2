/* The VM table and the wiring of one VM's layers. */
#include "hostd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host_api.h"
#include "log.h"
#include "map_engine.h"
#include "map_grant.h"
#include "memtable.h"
#include "qmp.h"
#include "rpc_service.h"
#include "usock.h"
#include "vhost_user.h"
#include "vsock.h"

static unsigned cid_slot(uint64_t cid, unsigned slots)
{
    return (unsigned)((cid * 0x9e3779b97f4a7c15ull) >> 32) & (slots - 1);
}

struct vm *hostd_vm_by_cid(struct hostd *h, uint64_t cid)
{
    if (!h || !h->cid_slots)
        return NULL;
    for (unsigned i = cid_slot(cid, h->cid_slots);; i = (i + 1) & (h->cid_slots - 1)) {
        struct vm *vm = h->by_cid[i];
        if (!vm || vm->cfg.cid == cid)
            return vm;   /* the table is never full: an empty slot ends the probe */
    }
}

static void cid_insert(struct vm **t, unsigned slots, struct vm *vm)
{
    unsigned i = cid_slot(vm->cfg.cid, slots);
    while (t[i])
        i = (i + 1) & (slots - 1);
    t[i] = vm;
}

/* Linear probing without tombstones: after emptying a slot, later entries
 * of its cluster whose home slot does not lie cyclically in (hole, entry]
 * move back into the hole, so every probe still reaches its entry before an
 * empty slot. */
static void cid_delete(struct hostd *h, const struct vm *vm)
{
    unsigned mask = h->cid_slots - 1, i;
    if (!h->cid_slots)
        return;
    for (i = cid_slot(vm->cfg.cid, h->cid_slots); h->by_cid[i] != vm; i = (i + 1) & mask)
        if (!h->by_cid[i])
            return;
    h->by_cid[i] = NULL;
    for (unsigned j = (i + 1) & mask; h->by_cid[j]; j = (j + 1) & mask) {
        unsigned home = cid_slot(h->by_cid[j]->cfg.cid, h->cid_slots);
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            h->by_cid[i] = h->by_cid[j];
            h->by_cid[j] = NULL;
            i = j;
        }
    }
}

/* Room in the CID index for one more VM (kept at most half full). */
static int cid_index_reserve(struct hostd *h)
{
    if (2 * (h->nvms + 1) <= h->cid_slots)
        return 0;
    unsigned slots = h->cid_slots ? h->cid_slots * 2 : 16;
    struct vm **t = calloc(slots, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (unsigned i = 0; i < h->nvms; i++)
        cid_insert(t, slots, h->vms[i]);
    free(h->by_cid);
    h->by_cid = t;
    h->cid_slots = slots;
    return 0;
}

struct vm *hostd_vm_by_name(struct hostd *h, const char *name)
{
    for (unsigned i = 0; h && name && i < h->nvms; i++)
        if (!strcmp(h->vms[i]->cfg.name, name))
            return h->vms[i];
    return NULL;
}

/* While hostd_fini runs, the host API sees no VMs and changes none: freeing
 * the QMP clients answers waiting requests, and the requests behind them
 * then run while the VM table is being torn down. */
static struct hostd *api_hostd(void *ctx)
{
    struct hostd *h = ctx;
    return h->stopping ? NULL : h;
}

static int api_vm_lookup(void *ctx, const char *name, struct host_api_vm *out)
{
    struct vm *vm = hostd_vm_by_name(api_hostd(ctx), name);
    if (!vm)
        return -ENOENT;
    *out = (struct host_api_vm){
        .name = vm->cfg.name,
        .cid = vm->cfg.cid,
        .mem = vu_backend_mem(vm->vu),
        .introspect = vm->cfg.introspect,
        .qmp = vm->qmp,
    };
    return 0;
}

static int api_vm_add(void *ctx, const struct host_api_vm_kv *kv, unsigned n, char *err, size_t errlen)
{
    struct hostd *h = api_hostd(ctx);
    if (!h) {
        snprintf(err, errlen, "hostd is stopping");
        return -ENOTCONN;
    }
    struct vm_config c;
    memset(&c, 0, sizeof(c));
    for (unsigned i = 0; i < n; i++) {
        int r = vm_config_set(&c, kv[i].key, kv[i].value, err, errlen);
        if (r < 0)
            return r;
    }
    int r = vm_config_check(&c, err, errlen);
    if (r == 0)
        r = hostd_vm_clash(h, &c, err, errlen);
    if (r == 0) {
        r = hostd_vm_add(h, &c);
        if (r < 0)
            snprintf(err, errlen, "vm %s: cannot start: %s", c.name, strerror(-r));
    }
    return r;
}

static int api_vm_remove(void *ctx, const char *name)
{
    struct hostd *h = api_hostd(ctx);
    return h ? hostd_vm_remove(h, name) : -ENOTCONN;
}

static int api_vm_info(void *ctx, unsigned i, struct host_api_vm_info *out)
{
    struct hostd *h = api_hostd(ctx);
    if (!h || i >= h->nvms)
        return -ENOENT;
    const struct vm *vm = h->vms[i];
    struct vsock_stats vs;
    vsock_dev_stats(vm->vsock, &vs);
    *out = (struct host_api_vm_info){
        .name = vm->cfg.name,
        .socket = vm->cfg.socket_path,
        .qmp = vm->cfg.qmp_path,
        .cid = vm->cfg.cid,
        .introspect = vm->cfg.introspect,
        .owner_uid_set = vm->cfg.owner_uid_set,
        .owner_gid_set = vm->cfg.owner_gid_set,
        .owner_uid = vm->cfg.owner_uid,
        .owner_gid = vm->cfg.owner_gid,
        .connected = vu_backend_connected(vm->vu),
        .qmp_connected = vm->qmp && qmp_client_ready(vm->qmp),
        .ram_bytes = memtable_total(vu_backend_mem(vm->vu)),
        .connections = vs.conns,
        .locked_mdls = map_engine_vm_mdls(vm->mdl),
    };
    map_engine_vm_usage(h->maps, vm->mdl, &out->mapped_pages, &out->mappings);
    return 0;
}

static const struct host_api_vm_ops api_vm_ops = {
    .lookup = api_vm_lookup,
    .add = api_vm_add,
    .remove = api_vm_remove,
    .info = api_vm_info,
};

/* Sibling routing asks for another VM's device by CID. */
static struct vsock_dev *peer_dev(void *ctx, uint64_t cid)
{
    struct vm *vm = hostd_vm_by_cid(ctx, cid);
    return vm ? vm->vsock : NULL;
}

int hostd_sharing_pair_add(struct hostd_options *o, const char *spec)
{
    const char *comma = spec ? strchr(spec, ',') : NULL;
    if (!comma || comma == spec || !comma[1] || strchr(comma + 1, ',') || (size_t)(comma - spec) >= 64 ||
        strlen(comma + 1) >= 64)
        return -EINVAL;
    if (o->nsharing_pairs >= HOSTD_MAX_SHARING_PAIRS)
        return -ENOSPC;
    char *a = o->sharing_pairs[o->nsharing_pairs].a, *b = o->sharing_pairs[o->nsharing_pairs].b;
    memcpy(a, spec, (size_t)(comma - spec));
    a[comma - spec] = 0;
    strcpy(b, comma + 1);
    if (!strcmp(a, b))
        return -EINVAL;
    o->nsharing_pairs++;
    return 0;
}

int hostd_sharing_pool_add(struct hostd_options *o, const char *spec)
{
    if (o->npools >= SHARE_POOL_MAX)
        return -ENOSPC;
    int rc = share_pool_parse(spec, &o->pools[o->npools]);
    if (rc == 0)
        o->npools++;
    return rc;
}

bool hostd_sharing_allowed(const struct hostd_options *o, const char *granter, const char *peer)
{
    for (unsigned i = 0; i < o->nsharing_pairs; i++) {
        const char *a = o->sharing_pairs[i].a, *b = o->sharing_pairs[i].b;
        if ((!strcmp(a, granter) && !strcmp(b, peer)) || (!strcmp(b, granter) && !strcmp(a, peer)))
            return true;
    }
    return o->nsharing_pairs == 0;
}

/* The grant policy (--sharing, --sharing-pair): a pair allows both directions. */
static bool sharing_allowed(void *ctx, const char *granter, const char *peer)
{
    return hostd_sharing_allowed(ctx, granter, peer);
}

int hostd_init(struct hostd *h, const struct hostd_options *o)
{
    memset(h, 0, sizeof(*h));
    h->opt = *o;
    long page = sysconf(_SC_PAGESIZE);
    if (page != (long)MAP_PAGE_SIZE) {
        log_err("mdl: host page size %ld is not %u; MDL mapping needs it", page, MAP_PAGE_SIZE);
        return -ENOTSUP;
    }
    fdstore_open(&h->store);
    h->loop = evloop_new();
    h->events = events_new();
    if (!h->loop || !h->events)
        return -ENOMEM;
    struct map_limits lim = {
        .vm_page_quota = o->vm_page_quota,
        .global_page_quota = o->global_page_quota,
        .max_vmas = o->max_vmas,
        .dumps_exclude_shared = o->dumps_exclude_shared,
        .events = h->events,
    };
    h->maps = map_engine_new(&lim);
    h->rpc = h->maps ? rpc_service_new(h->maps, !o->rpc_any_port, h->loop) : NULL;
    if (!h->maps || !h->rpc) {
        log_err("mdl: cannot create the mapping engine");
        return -ENOMEM;
    }
    struct map_grant_hooks gh = { .allowed = o->sharing ? sharing_allowed : NULL, .ctx = &h->opt };
    map_engine_set_grant_hooks(h->maps, &gh);
    if (o->sharing || o->nsharing_pairs)
        log_info("grants: sharing %s%s", o->sharing ? "on" : "off (--sharing-pair ignored)",
                 o->sharing && o->nsharing_pairs ? ", between listed pairs only" : "");
    for (unsigned i = 0; i < o->npools; i++) {
        const struct share_pool_spec *ps = &o->pools[i];
        if (!o->sharing || !hostd_sharing_allowed(o, ps->vm_a, ps->vm_b)) {
            log_err("pool %s: needs --sharing on and %s,%s allowed by --sharing-pair", ps->name, ps->vm_a, ps->vm_b);
            return -EINVAL;
        }
        int rc = share_pool_create(&h->pools[h->npools], ps);
        if (rc < 0)
            return rc;
        h->npools++;
    }
    struct map_stats st;
    map_engine_stats(h->maps, &st);
    log_info("mdl: quotas: %llu pages per VM, %llu pages global, %llu VMAs",
             (unsigned long long)st.vm_page_quota, (unsigned long long)st.global_page_quota,
             (unsigned long long)st.vma_budget);
    if (o->api_path) {
        struct host_api_config ac = o->api;
        ac.path = o->api_path;
        ac.vm_ops = &api_vm_ops;
        ac.vm_ctx = h;
        ac.inherited_fd = fdstore_take(&h->store, "api.listen");
        ac.inherited = ac.inherited_fd >= 0 && usock_adopt_listener_at(ac.inherited_fd, o->api_path) == 0;
        if (ac.inherited_fd >= 0 && !ac.inherited) {
            log_warn("api: the kept socket is not listening on %s any more: a new one", o->api_path);
            close(ac.inherited_fd);
            fdstore_drop(&h->store, "api.listen");
        }
        ac.keep_path = h->store.active;
        ac.events = h->events;
        h->api = host_api_start(h->loop, h->maps, &ac);
        if (!h->api)
            return -EIO;
        if (h->store.active && !ac.inherited)
            fdstore_put(&h->store, "api.listen", host_api_listener(h->api));
    }
    return 0;
}

/* In hostd_fini a VM's QMP client goes first: freeing it answers the host
 * API requests waiting on it, and those clients may go on to further
 * requests (which see no VMs while stopping: api_hostd). */
static void vm_qmp_free(struct vm *vm)
{
    struct qmp_client *q = vm->qmp;
    vm->qmp = NULL;
    qmp_client_free(q);
}

/* QMP goes last here: a VM removed at run time is already out of the table,
 * and the requests its QMP client answers on the way out may go on to add a
 * VM with the same socket, which must not be unlinked after that. */
static void vm_free(struct hostd *h, struct vm *vm)
{
    vu_backend_free(vm->vu);
    vm_keep_free(h, vm);
    vsock_dev_free(vm->vsock);
    vm->vsock = NULL;
    if (vm->mdl) {
        rpc_service_detach(h->rpc, vm->mdl);
        map_engine_vm_remove(h->maps, vm->mdl, "VM removed");
    }
    vm_qmp_free(vm);
    free(vm);
}

static int vm_build(struct hostd *h, struct vm *vm)
{
    struct vu_backend_config bc = {
        .name = vm->cfg.name,
        .socket_path = vm->cfg.socket_path,
        .loop = h->loop,
        .socket_group_set = h->opt.socket_group_set,
        .socket_gid = h->opt.socket_gid,
        .owner_uid_set = vm->cfg.owner_uid_set,
        .owner_gid_set = vm->cfg.owner_gid_set,
        .owner_uid = vm->cfg.owner_uid,
        .owner_gid = vm->cfg.owner_gid,
        .state_changed = vm_keep_changed,
        .state_ctx = vm,
        .events = h->events,
        .cid = vm->cfg.cid,
    };
    vm->vu = vu_backend_new(&bc);
    if (!vm->vu)
        return -ENOMEM;
    struct vsock_dev_config dc = {
        .name = vm->cfg.name,
        .cid = vm->cfg.cid,
        .loop = h->loop,
        .rx = vu_backend_queue(vm->vu, VSOCK_VQ_RX),
        .tx = vu_backend_queue(vm->vu, VSOCK_VQ_TX),
        .peer = peer_dev,
        .peer_ctx = h,
        .sibling_routing = h->opt.sibling_routing,
    };
    vm->vsock = vsock_dev_new(&dc);
    if (!vm->vsock)
        return -ENOMEM;
    vu_backend_attach(vm->vu, &vsock_vu_ops, vm->vsock);
    struct map_vm_view view = { .name = vm->cfg.name, .cid = vm->cfg.cid, .mem = vu_backend_mem(vm->vu),
                                .alias_addresses = h->opt.alias_addresses };
    vm->mdl = map_engine_vm_add(h->maps, &view);
    if (!vm->mdl)
        return -ENOMEM;
    if (vm->cfg.qmp_path[0]) {
        struct qmp_config qc = { .name = vm->cfg.name, .path = vm->cfg.qmp_path, .loop = h->loop,
                                 .timeout_ms = h->opt.qmp_timeout_ms };
        vm->qmp = qmp_client_new(&qc);
        if (!vm->qmp)
            return -ENOMEM;
    }
    int r = vsock_dev_add_service(vm->vsock, &vsock_echo_service, NULL);
    if (r < 0)
        return r;
    return rpc_service_attach(h->rpc, vm->vsock, vm->mdl);
}

int hostd_vm_clash(const struct hostd *h, const struct vm_config *c, char *err, size_t errlen)
{
    for (unsigned i = 0; i < h->nvms; i++) {
        const struct vm_config *o = &h->vms[i]->cfg;
        const char *what = !strcmp(o->name, c->name) ? "name" : o->cid == c->cid ? "cid" :
                           c->socket_path[0] && !strcmp(o->socket_path, c->socket_path) ? "socket" :
                           c->qmp_path[0] && !strcmp(o->qmp_path, c->qmp_path) ? "qmp socket" : NULL;
        if (what) {
            snprintf(err, errlen, "vm %s: its %s is already used by vm %s", c->name, what, o->name);
            return -EEXIST;
        }
    }
    if (h->nvms >= HOSTD_MAX_VMS) {
        snprintf(err, errlen, "vm %s: hostd serves %u VMs (its limit)", c->name, HOSTD_MAX_VMS);
        return -ENOSPC;
    }
    return 0;
}

int hostd_vm_add(struct hostd *h, const struct vm_config *c)
{
    char err[200];
    int r = hostd_vm_clash(h, c, err, sizeof(err));
    if (r < 0)
        return r;
    if (h->nvms == h->capvms) {
        unsigned cap = h->capvms ? h->capvms * 2 : 8;
        struct vm **v = realloc(h->vms, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        h->vms = v;
        h->capvms = cap;
    }
    if (cid_index_reserve(h) < 0)
        return -ENOMEM;
    struct vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return -ENOMEM;
    vm->hostd = h;
    vm->cfg = *c;
    vm->kept.state_fd = -1;
    r = vm_build(h, vm);
    if (r == 0 && c->socket_path[0])
        r = vm_keep_start(h, vm);
    if (r < 0) {
        log_err("vm %s: cannot start: %s", c->name, strerror(-r));
        vm_free(h, vm);
        return r;
    }
    h->vms[h->nvms++] = vm;
    cid_insert(h->by_cid, h->cid_slots, vm);
    log_info("vm %s: cid %llu on %s", c->name, (unsigned long long)c->cid, c->socket_path);
    hostd_publish_vm_event(h, vm, EV_VM_ADDED, c->socket_path[0] ? c->socket_path : NULL);
    return 0;
}

void hostd_publish_vm_event(struct hostd *h, const struct vm *vm, enum event_type type, const char *detail)
{
    if (!h->events || !vm || !events_wanted(h->events, type))
        return;
    struct event ev = { .type = type, .vm_name = vm->cfg.name, .cid = vm->cfg.cid, .detail = detail };
    events_publish(h->events, &ev);
}

int hostd_vm_remove(struct hostd *h, const char *name)
{
    unsigned i = 0;
    while (i < h->nvms && strcmp(h->vms[i]->cfg.name, name))
        i++;
    if (i == h->nvms)
        return -ENOENT;
    struct vm *vm = h->vms[i];
    /* Out of the index first: from here on sibling routing finds no device
     * for its CID, so packets siblings send it are refused (RST) and the
     * reset below cannot route anything back to it. */
    cid_delete(h, vm);
    memmove(&h->vms[i], &h->vms[i + 1], (h->nvms - i - 1) * sizeof(*h->vms));
    h->nvms--;
    /* As a QEMU exit: the device stops, its connections close and release
     * their MDLs and mappings (leak records say why), sibling peers get RST.
     * Handlers go with evloop_del, which also drops events already fetched
     * in the batch being dispatched; the device's memory is freed after it. */
    vu_backend_disconnect(vm->vu, "VM removed");
    hostd_publish_vm_event(h, vm, EV_VM_REMOVED, "removed through the host API");
    log_info("vm %s: removed (cid %llu, %s)", vm->cfg.name, (unsigned long long)vm->cfg.cid, vm->cfg.socket_path);
    vm_free(h, vm);
    return 0;
}

void hostd_started(struct hostd *h)
{
    fdstore_drop_untaken(&h->store);
    /* now that every sibling is there: work that arrived during the restart */
    for (unsigned i = 0; i < h->nvms; i++)
        if (h->vms[i]->kept.resumed)
            vu_backend_kick(h->vms[i]->vu);
}

void hostd_fini(struct hostd *h)
{
    h->stopping = true;
    /* QEMU connections first, QMP ahead of the rest (see vm_qmp_free):
     * stopping each device closes its connections, whose services release
     * what they hold in the engine. A device's reset looks its siblings up
     * by CID, so devices go before any VM is freed. */
    for (unsigned i = 0; i < h->nvms; i++)
        vm_qmp_free(h->vms[i]);
    for (unsigned i = 0; i < h->nvms; i++) {
        if (h->store.active)   /* the next hostd listens on it */
            vu_backend_keep_socket(h->vms[i]->vu);
        vu_backend_free(h->vms[i]->vu);
        h->vms[i]->vu = NULL;
    }
    for (unsigned i = 0; i < h->nvms; i++) {
        vsock_dev_free(h->vms[i]->vsock);
        h->vms[i]->vsock = NULL;
    }
    for (unsigned i = 0; i < h->nvms; i++)
        vm_free(h, h->vms[i]);
    free(h->vms);
    h->vms = NULL;
    h->nvms = h->capvms = 0;
    free(h->by_cid);
    h->by_cid = NULL;
    h->cid_slots = 0;
    if (h->api)
        host_api_stop(h->api);
    h->api = NULL;
    rpc_service_free(h->rpc);
    h->rpc = NULL;
    map_engine_free(h->maps);
    h->maps = NULL;
    for (unsigned i = 0; i < h->npools; i++)
        share_pool_destroy(&h->pools[i]);
    h->npools = 0;
    if (h->loop)
        evloop_free(h->loop);
    h->loop = NULL;
    events_free(h->events); /* last: everything above held its pointer */
    h->events = NULL;
    fdstore_close(&h->store);
}
