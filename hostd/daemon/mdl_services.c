/* MDL side of hostd: the mapping engine, the guest RPC service on vsock port
 * MDLMAP_PORT_RPC and the host API socket. */
#include "mdl_services.h"

#include <errno.h>
#include <unistd.h>

#include "host_api.h"
#include "log.h"
#include "map_engine.h"
#include "rpc_service.h"

int mdl_services_init(struct hostd *h, const struct mdl_options *o)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page != (long)MAP_PAGE_SIZE) {
        log_err("mdl: host page size %ld is not %u; MDL mapping disabled", page, MAP_PAGE_SIZE);
        return -ENOTSUP;
    }
    struct map_limits lim = {
        .vm_page_quota = o ? o->vm_page_quota : 0,
        .global_page_quota = o ? o->global_page_quota : 0,
        .max_vmas = o ? o->max_vmas : 0,
    };
    h->maps = map_engine_new(&lim);
    if (!h->maps) {
        log_err("mdl: cannot create the mapping engine");
        return -ENOMEM;
    }
    struct map_stats st;
    map_engine_stats(h->maps, &st);
    log_info("mdl: quotas: %llu pages per VM, %llu pages global, %llu VMAs",
             (unsigned long long)st.vm_page_quota, (unsigned long long)st.global_page_quota,
             (unsigned long long)st.vma_budget);
    int rc = rpc_service_register(h);
    if (rc < 0) {
        log_err("mdl: registering the RPC service on port %u failed: %d", MDLMAP_PORT_RPC, rc);
        mdl_services_fini(h);
        return rc;
    }
    if (o && o->api_path) {
        h->api = host_api_start(h, o->api_path);
        if (!h->api) {
            mdl_services_fini(h);
            return -EIO;
        }
    }
    return 0;
}

void mdl_services_fini(struct hostd *h)
{
    if (h->api) {
        host_api_stop(h->api);
        h->api = NULL;
    }
    if (h->maps) {
        map_engine_free(h->maps);
        h->maps = NULL;
    }
}

void mdl_services_vm_reset(struct hostd *h, struct vm *vm, const char *why)
{
    if (!h || !h->maps || !vm)
        return;
    struct map_owner o = { .vm = vm, .conn_id = 0 };
    map_engine_release(h->maps, &o, true, why ? why : "device reset");
}
