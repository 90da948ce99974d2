/* Host API: VMs added, removed and listed at run time (VmAdd, VmRemove,
 * VmList). The VM table is the daemon's: these handlers only translate
 * between the messages and its ops (struct host_api_vm_ops), so a VmSpec is
 * validated by the same parser as --vm and the config file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fconn.h"
#include "host_api_handlers.h"
#include "log.h"

#define VM_DETAIL_LEN 240

static int no_op(uint64_t rid, const char *what, uint8_t **out, size_t *out_len)
{
    char detail[96];
    snprintf(detail, sizeof(detail), "this hostd cannot %s VMs at run time", what);
    return fconn_reply_error(rid, -ENOSYS, detail, out, out_len);
}

int host_api_vm_add(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmAddResponse rp = MDLMAP__V1__VM_ADD_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_ADD_REPLY;
    env.vm_add_reply = &rp;
    if (!ctx->vm_ops || !ctx->vm_ops->add)
        return no_op(req->request_id, "add", out, out_len);
    const Mdlmap__V1__VmSpec *s = req->vm_add ? req->vm_add->vm : NULL;
    if (!s)
        return fconn_reply_encode(&env, req->request_id, -EINVAL, "VmAddRequest without a VmSpec", out, out_len);
    /* Every key goes to the owner's parser, empty strings included where a
     * VM needs the key (name, socket): it names what is wrong. */
    char cid[24];
    snprintf(cid, sizeof(cid), "%" PRIu64, s->cid);
    struct host_api_vm_kv kv[7];
    unsigned n = 0;
    kv[n++] = (struct host_api_vm_kv){ "name", s->name ? s->name : "" };
    kv[n++] = (struct host_api_vm_kv){ "cid", cid };
    kv[n++] = (struct host_api_vm_kv){ "socket", s->socket ? s->socket : "" };
    if (s->qmp && *s->qmp)
        kv[n++] = (struct host_api_vm_kv){ "qmp", s->qmp };
    kv[n++] = (struct host_api_vm_kv){ "introspect", s->introspect ? "on" : "off" };
    if (s->user && *s->user)
        kv[n++] = (struct host_api_vm_kv){ "uid", s->user };
    if (s->group && *s->group)
        kv[n++] = (struct host_api_vm_kv){ "group", s->group };
    char detail[VM_DETAIL_LEN] = "";
    int rc = ctx->vm_ops->add(ctx->vm_ctx, kv, n, detail, sizeof(detail));
    if (rc == 0)
        log_info("api: vm %s added (cid %" PRIu64 ")", s->name, s->cid);
    return fconn_reply_encode(&env, req->request_id, rc, detail, out, out_len);
}

int host_api_vm_remove(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmRemoveResponse rp = MDLMAP__V1__VM_REMOVE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE_REPLY;
    env.vm_remove_reply = &rp;
    if (!ctx->vm_ops || !ctx->vm_ops->remove)
        return no_op(req->request_id, "remove", out, out_len);
    const char *name = req->vm_remove && req->vm_remove->name ? req->vm_remove->name : "";
    char detail[VM_DETAIL_LEN] = "";
    int rc = ctx->vm_ops->remove(ctx->vm_ctx, name);
    if (rc == -ENOENT)
        snprintf(detail, sizeof(detail), "no VM named '%.64s'", name);
    return fconn_reply_encode(&env, req->request_id, rc, detail, out, out_len);
}

/* The VmSpec's user and group: the owner's ids as numbers (what the spec's
 * names were resolved to when the VM was added). */
struct vm_entry {
    Mdlmap__V1__VmInfo info;
    Mdlmap__V1__VmSpec spec;
    char user[12], group[12];
};

int host_api_vm_list(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmListResponse rp = MDLMAP__V1__VM_LIST_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_LIST_REPLY;
    env.vm_list_reply = &rp;
    if (!ctx->vm_ops || !ctx->vm_ops->info)
        return no_op(req->request_id, "list", out, out_len);
    struct host_api_vm_info vi;
    unsigned n = 0;
    while (n < HOST_API_MAX_VM_LIST && ctx->vm_ops->info(ctx->vm_ctx, n, &vi) == 0)
        n++;
    struct vm_entry *e = calloc(n ? n : 1, sizeof(*e));
    Mdlmap__V1__VmInfo **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!e || !ptrs) {
        free(e);
        free(ptrs);
        return fconn_reply_encode(&env, req->request_id, -ENOMEM, "out of memory", out, out_len);
    }
    unsigned k = 0;
    size_t bytes = 0;
    for (; k < n && ctx->vm_ops->info(ctx->vm_ctx, k, &vi) == 0; k++) {
        struct vm_entry *x = &e[k];
        mdlmap__v1__vm_spec__init(&x->spec);
        x->spec.name = (char *)vi.name;
        x->spec.cid = vi.cid;
        x->spec.socket = (char *)vi.socket;
        x->spec.qmp = (char *)vi.qmp;
        x->spec.introspect = vi.introspect;
        snprintf(x->user, sizeof(x->user), "%u", vi.owner_uid);
        snprintf(x->group, sizeof(x->group), "%u", vi.owner_gid);
        x->spec.user = vi.owner_uid_set ? x->user : (char *)"";
        x->spec.group = vi.owner_gid_set ? x->group : (char *)"";
        mdlmap__v1__vm_info__init(&x->info);
        x->info.vm = &x->spec;
        x->info.connected = vi.connected;
        x->info.ram_bytes = vi.ram_bytes;
        x->info.connections = vi.connections;
        x->info.mappings = vi.mappings;
        x->info.mapped_pages = vi.mapped_pages;
        x->info.locked_mdls = vi.locked_mdls;
        x->info.qmp_connected = vi.qmp_connected;
        /* the reply must fit one frame: long paths on thousands of VMs may
         * not (field tag and length: at most 4 bytes more per entry) */
        bytes += mdlmap__v1__vm_info__get_packed_size(&x->info) + 4;
        if (bytes > MDLMAP_MAX_FRAME - 1024) {
            log_warn_limited(ctx->op_log, "api: VM lists", "api: VmList lists the first %u of %u VMs (one frame's worth)", k, n);
            break;
        }
        ptrs[k] = &x->info;
    }
    rp.n_vms = k;
    rp.vms = ptrs;
    int rc = fconn_reply_encode(&env, req->request_id, 0, NULL, out, out_len);
    free(e);
    free(ptrs);
    return rc;
}
