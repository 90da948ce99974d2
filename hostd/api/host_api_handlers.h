/* Host API requests (List, Read, Write, Stats), transport-neutral. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "map_engine.h"

#define HOST_API_MAX_LIST 8192u /* mappings per ListMappingsResponse */
#define HOST_API_RECENT_LEAKS 64u /* leak records per StatsResponse, newest of all VMs */

/* *out: encoded response frame (free()). Returns 0 or negative errno if no
 * response could be encoded. Unknown bodies get STATUS_INVALID_DEVICE_REQUEST. */
int host_api_handle(struct map_engine *e, const mdl_envelope *req, uint8_t **out, size_t *out_len);
