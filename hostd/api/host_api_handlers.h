/* Host API requests (List, Read, Write, Stats), transport-neutral. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "host_api.h"
#include "map_engine.h"

#define HOST_API_MAX_LIST 8192u /* mappings per ListMappingsResponse */
#define HOST_API_RECENT_LEAKS 64u /* leak records per StatsResponse, newest of all VMs */
/* VMs per VmListResponse (= HOSTD_MAX_VMS); fewer when their entries would
 * not fit one frame (MDLMAP_MAX_FRAME: ~3000 VMs with the longest paths). */
#define HOST_API_MAX_VM_LIST 4096u

/* What the request handlers work on: the engine and the VM table. The
 * socket server embeds one; tests and fuzz targets make their own. */
struct api_ctx {
    struct map_engine *eng;
    const struct host_api_vm_ops *vm_ops; /* NULL: no VMs to look up */
    void *vm_ctx;
};

/* *out: encoded response frame (free()). Returns 0 or negative errno if no
 * response could be encoded. Unknown bodies get STATUS_INVALID_DEVICE_REQUEST. */
int host_api_handle(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);

/* host_api_vms.c: VmAdd, VmRemove, VmList through ctx->vm_ops. */
int host_api_vm_add(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);
int host_api_vm_remove(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);
int host_api_vm_list(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);
