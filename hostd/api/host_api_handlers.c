/* Host API request handlers. Read and Write go through hostd's own mapping
 * of the guest pages (the address MapResponse returned): zero copy. */
#include "host_api_handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fconn.h"
#include "log.h"

#define DETAIL_LEN 200

static void fill_info(Mdlmap__V1__MappingInfo *mi, const struct map_info *m)
{
    mdlmap__v1__mapping_info__init(mi);
    mi->map_handle = m->handle;
    mi->vm_name = (char *)m->vm_name;
    mi->guest_cid = m->cid;
    mi->mdl_handle = m->mdl_handle;
    mi->address = m->address;
    mi->byte_offset = m->byte_offset;
    mi->byte_count = m->byte_count;
    mi->page_count = m->page_count;
    mi->vma_count = m->runs;
    mi->access_mode = (Mdlmap__V1__AccessMode)m->mode;
    mi->cache_type = (Mdlmap__V1__CacheType)m->cache_type;
    mi->priority = m->priority;
    mi->read_only = m->read_only;
    mi->conn_id = m->conn_id;
    mi->consumer = (char *)m->consumer;
    mi->guest_address = m->guest_address;
}

/* The guest_address lookup of ListMappings: the buffer [guest_address,
 * guest_address + byte_count) the guest was told contains addr (0: no filter). */
static bool list_match_address(const struct map_info *mi, uint64_t addr)
{
    return !addr || (addr >= mi->guest_address && addr - mi->guest_address < mi->byte_count);
}

static int do_list(struct map_engine *e, const Mdlmap__V1__ListMappingsRequest *rq, uint64_t rid,
                   uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListMappingsResponse rp = MDLMAP__V1__LIST_MAPPINGS_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST_REPLY;
    env.list_reply = &rp;
    size_t n = 0;
    const char *filter = rq->vm_name && *rq->vm_name ? rq->vm_name : NULL;
    /* A handle lookup is one mapping at most: no walk. */
    const struct map_obj *only = rq->map_handle ? map_engine_find_map(e, rq->map_handle) : NULL;
    if (rq->map_handle)
        n = only ? 1 : 0;
    else
        for (const struct map_obj *m = map_engine_next_map(e, NULL); m; m = map_engine_next_map(e, m))
            n++;
    if (n > HOST_API_MAX_LIST)
        n = HOST_API_MAX_LIST;
    Mdlmap__V1__MappingInfo *infos = calloc(n ? n : 1, sizeof(*infos));
    Mdlmap__V1__MappingInfo **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        return fconn_reply_encode(&env, rid, -ENOMEM, "out of memory", out, out_len);
    }
    size_t k = 0;
    for (const struct map_obj *m = rq->map_handle ? only : map_engine_next_map(e, NULL); m && k < n;
         m = rq->map_handle ? NULL : map_engine_next_map(e, m)) {
        struct map_info mi;
        map_obj_info(m, &mi);
        if ((filter && strcmp(mi.vm_name, filter) != 0) || !list_match_address(&mi, rq->guest_address))
            continue;
        fill_info(&infos[k], &mi);
        ptrs[k] = &infos[k];
        k++;
    }
    rp.n_mappings = k;
    rp.mappings = ptrs;
    int rc = fconn_reply_encode(&env, rid, 0, NULL, out, out_len);
    free(infos);
    free(ptrs);
    return rc;
}

/* Buffer range [offset, offset+len) of m in hostd, or an error. */
static int io_range(const struct map_engine *e, uint64_t handle, uint64_t offset, uint64_t len,
                    struct map_info *m, uint8_t **p, char *detail)
{
    const struct map_obj *mo = map_engine_find_map(e, handle);
    if (!mo) {
        snprintf(detail, DETAIL_LEN, "no mapping 0x%llx", (unsigned long long)handle);
        return -EBADF;
    }
    if (len > MDLMAP_MAX_IO_CHUNK) {
        snprintf(detail, DETAIL_LEN, "length %llu exceeds %u", (unsigned long long)len, MDLMAP_MAX_IO_CHUNK);
        return -EINVAL;
    }
    map_obj_info(mo, m);
    uint32_t count = m->byte_count;
    if (offset > count || len > count - offset) {
        snprintf(detail, DETAIL_LEN, "range %llu+%llu outside the %u-byte buffer",
                 (unsigned long long)offset, (unsigned long long)len, count);
        return -EINVAL;
    }
    if (m->mode != MAP_MODE_KERNEL || !m->base) {
        snprintf(detail, DETAIL_LEN, "map 0x%llx is not mapped in hostd (UserMode)",
                 (unsigned long long)handle);
        return -EOPNOTSUPP;
    }
    *p = (uint8_t *)(uintptr_t)m->address + offset;
    return 0;
}

static int do_read(struct map_engine *e, const Mdlmap__V1__ReadRequest *rq, uint64_t rid, uint8_t **out,
                   size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ReadResponse rp = MDLMAP__V1__READ_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_READ_REPLY;
    env.read_reply = &rp;
    char detail[DETAIL_LEN] = "";
    struct map_info m;
    uint8_t *p;
    int rc = io_range(e, rq->map_handle, rq->offset, rq->length, &m, &p, detail);
    if (rc == 0) {
        /* packing copies straight out of the guest's pages */
        rp.data.data = p;
        rp.data.len = rq->length;
    }
    return fconn_reply_encode(&env, rid, rc, detail, out, out_len);
}

static int do_write(struct map_engine *e, const Mdlmap__V1__WriteRequest *rq, uint64_t rid, struct log_limit *lim,
                    uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__WriteResponse rp = MDLMAP__V1__WRITE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE_REPLY;
    env.write_reply = &rp;
    char detail[DETAIL_LEN] = "";
    struct map_info m;
    uint8_t *p;
    int rc = io_range(e, rq->map_handle, rq->offset, rq->data.len, &m, &p, detail);
    if (rc == 0 && m.read_only) {
        snprintf(detail, sizeof(detail), "map 0x%llx is read-only (MdlMappingNoWrite)",
                 (unsigned long long)rq->map_handle);
        rc = -EACCES;
    }
    if (rc == 0) {
        if (rq->data.len)
            memcpy(p, rq->data.data, rq->data.len);
        rp.written = (uint32_t)rq->data.len;
        log_info_limited(lim, "api: request lines", "api: wrote %zu bytes at offset %llu of map 0x%llx",
                         rq->data.len, (unsigned long long)rq->offset, (unsigned long long)rq->map_handle);
    }
    return fconn_reply_encode(&env, rid, rc, detail, out, out_len);
}

static int do_stats(struct map_engine *e, const Mdlmap__V1__StatsRequest *rq, uint64_t rid, uint8_t **out,
                    size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsResponse rp = MDLMAP__V1__STATS_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS_REPLY;
    env.stats_reply = &rp;
    struct map_stats st;
    map_engine_stats(e, &st);
    rp.mappings = st.mappings;
    rp.mapped_pages = st.mapped_pages;
    rp.vmas = st.vmas;
    rp.locked_mdls = st.locked_mdls;
    rp.leaks_reported = st.leaks_reported;
    rp.vma_budget = st.vma_budget;
    rp.global_page_quota = st.global_page_quota;
    rp.vm_page_quota = st.vm_page_quota;
    const struct map_leak *lk[HOST_API_RECENT_LEAKS];
    unsigned n = 0;
    if (rq && rq->vm_name && *rq->vm_name) {
        /* one VM's own ring: what other VMs leaked cannot push it out */
        const struct map_vm *vm = map_engine_vm_by_name(e, rq->vm_name);
        const struct map_leaks *ring = vm ? map_engine_vm_leaks(vm) : NULL;
        for (unsigned i = 0; ring && i < map_leaks_count(ring) && n < HOST_API_RECENT_LEAKS; i++)
            lk[n++] = map_leaks_get(ring, i);
    } else {
        n = map_engine_recent_leaks(e, lk, HOST_API_RECENT_LEAKS);
    }
    Mdlmap__V1__LeakRecord recs[HOST_API_RECENT_LEAKS];
    Mdlmap__V1__LeakRecord *ptrs[HOST_API_RECENT_LEAKS];
    for (unsigned i = 0; i < n; i++) {
        const struct map_leak *l = lk[i];
        mdlmap__v1__leak_record__init(&recs[i]);
        recs[i].vm_name = (char *)l->vm_name;
        recs[i].conn_id = l->conn_id;
        recs[i].mdl_handle = l->mdl_handle;
        recs[i].map_handle = l->map_handle;
        recs[i].page_count = l->page_count;
        recs[i].reason = (char *)l->reason;
        recs[i].was_mapped = l->was_mapped;
        ptrs[i] = &recs[i];
    }
    rp.n_recent_leaks = n;
    rp.recent_leaks = ptrs;
    return fconn_reply_encode(&env, rid, 0, NULL, out, out_len);
}

int host_api_handle(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    int fds[HOST_API_MAX_REPLY_FDS];
    unsigned nfds = 0;
    int rc = host_api_handle_fds(ctx, req, HOST_API_MAX_REPLY_FDS, out, out_len, fds, &nfds);
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    return rc;
}

int host_api_handle_fds(const struct api_ctx *ctx, const mdl_envelope *req, unsigned fd_room, uint8_t **out,
                        size_t *out_len, int fds[HOST_API_MAX_REPLY_FDS], unsigned *nfds)
{
    struct map_engine *e = ctx->eng;
    *nfds = 0;
    if (fd_room > HOST_API_MAX_REPLY_FDS)
        fd_room = HOST_API_MAX_REPLY_FDS;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_READ:
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_WRITE:
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP:
    case MDLMAP__V1__ENVELOPE__BODY_TRANSLATE:
    case MDLMAP__V1__ENVELOPE__BODY_VIRT_READ:
    case MDLMAP__V1__ENVELOPE__BODY_VIRT_WRITE:
        return api_introspect_handle(ctx, req, fd_room, out, out_len, fds, nfds);
    case MDLMAP__V1__ENVELOPE__BODY_LIST:
        return do_list(e, req->list, req->request_id, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_READ:
        return do_read(e, req->read, req->request_id, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_WRITE:
        return do_write(e, req->write, req->request_id, ctx->op_log, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_STATS:
        return do_stats(e, req->stats, req->request_id, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_LIST_GRANTS:
        return host_api_list_grants(e, req->list_grants, req->request_id, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_VM_ADD:
        return host_api_vm_add(ctx, req, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE:
        return host_api_vm_remove(ctx, req, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_VM_LIST:
        return host_api_vm_list(ctx, req, out, out_len);
    default: {
        char detail[DETAIL_LEN];
        snprintf(detail, sizeof(detail), "request type %d is not served on the host API", (int)req->body_case);
        return fconn_reply_error(req->request_id, -ENOSYS, detail, out, out_len);
    }
    }
}
