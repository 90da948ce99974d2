/* Entry points of the MDL side of hostd (mapping engine, RPC service on
 * MDLMAP_PORT_RPC, host API socket). main.c calls these. */
#pragma once
#include <stdint.h>

#include "hostd.h"

struct mdl_options {
    const char *api_path;        /* host API Unix socket; NULL: none */
    uint64_t vm_page_quota;      /* max mapped pages per VM; 0: default */
    uint64_t global_page_quota;  /* max mapped pages in hostd; 0: default */
    uint32_t max_vmas;           /* VMA budget for mappings; 0: derived from vm.max_map_count */
};

int mdl_services_init(struct hostd *h, const struct mdl_options *o);
void mdl_services_fini(struct hostd *h);
/* The VM's device was torn down: unmap everything it owned, report leaks. */
void mdl_services_vm_reset(struct hostd *h, struct vm *vm, const char *why);
