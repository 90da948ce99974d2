/* Host API: a Unix stream socket (mode 0660) speaking the mdlmap framing.
 * Non-blocking, many clients, bounded buffers. */
#pragma once
#include "evloop.h"
#include "map_engine.h"

struct host_api;

struct host_api *host_api_start(struct evloop *loop, struct map_engine *eng, const char *path);
void host_api_stop(struct host_api *api);
