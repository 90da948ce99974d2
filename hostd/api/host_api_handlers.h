/* Host API requests (List, Read, Write, Stats), transport-neutral. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "host_api.h"
#include "map_engine.h"

#define HOST_API_MAX_LIST 8192u /* mappings per ListMappingsResponse */
#define HOST_API_MAX_GRANTS 8192u /* grants per ListGrantsResponse (about 100 bytes each) */
#define HOST_API_RECENT_LEAKS 64u /* leak records per StatsResponse, newest of all VMs */

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
/* ListGrants (host_api_grants.c). */
int host_api_list_grants(struct map_engine *e, const Mdlmap__V1__ListGrantsRequest *rq, uint64_t rid,
                         uint8_t **out, size_t *out_len);
