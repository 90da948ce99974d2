/* Host API: ListGrants, every live cross-VM grant (read right). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fconn.h"
#include "host_api_handlers.h"
#include "map_grant.h"

int host_api_list_grants(struct map_engine *e, const Mdlmap__V1__ListGrantsRequest *rq, uint64_t rid,
                         uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListGrantsResponse rp = MDLMAP__V1__LIST_GRANTS_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST_GRANTS_REPLY;
    env.list_grants_reply = &rp;
    const char *filter = rq && rq->vm_name && *rq->vm_name ? rq->vm_name : NULL;
    size_t n = 0;
    for (const struct map_grant *g = map_grant_next(e, NULL); g && n < HOST_API_MAX_GRANTS; g = map_grant_next(e, g))
        n++;
    Mdlmap__V1__GrantInfo *infos = calloc(n ? n : 1, sizeof(*infos));
    Mdlmap__V1__GrantInfo **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        return fconn_reply_encode(&env, rid, -ENOMEM, "out of memory", out, out_len);
    }
    size_t k = 0;
    for (const struct map_grant *g = map_grant_next(e, NULL); g && k < n; g = map_grant_next(e, g)) {
        struct map_grant_info gi;
        map_grant_info(g, &gi);
        if (filter && strcmp(gi.granter_vm, filter) && strcmp(gi.peer_vm, filter))
            continue;
        Mdlmap__V1__GrantInfo *w = &infos[k];
        mdlmap__v1__grant_info__init(w);
        w->grant_ref = gi.ref;
        w->granter_vm = (char *)gi.granter_vm;
        w->granter_cid = gi.granter_cid;
        w->grantee_vm = (char *)gi.peer_vm;
        w->grantee_cid = gi.peer_cid;
        w->access = (Mdlmap__V1__GrantAccess)gi.access;
        w->mdl_handle = gi.mdl_handle;
        w->byte_count = gi.byte_count;
        w->copies = gi.copies;
        w->bytes_copied = gi.bytes_copied;
        ptrs[k++] = w;
    }
    rp.n_grants = k;
    rp.grants = ptrs;
    int rc = fconn_reply_encode(&env, rid, 0, NULL, out, out_len);
    free(infos);
    free(ptrs);
    return rc;
}
