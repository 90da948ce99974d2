/* Host API: a Unix stream socket (mode 0660) speaking the mdlmap framing.
 * Non-blocking, many clients, bounded buffers. */
#pragma once
#include "hostd.h"

struct host_api *host_api_start(struct hostd *h, const char *path); /* needs h->maps */
void host_api_stop(struct host_api *api);
