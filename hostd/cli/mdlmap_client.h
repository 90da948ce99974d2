/* Small blocking client for the mdlmap-hostd host API socket, reusable by
 * tools. Functions return 0 or a negative errno; a request answered with a
 * failure status returns -EREMOTEIO and fills the client's last status/detail. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#define MDLMAP_DEFAULT_API "/run/mdlmap/api.sock"

struct mdlmap_client {
    int fd;
    uint64_t next_id;
    int32_t last_status;
    char last_detail[256];
};

/* path NULL: $MDLMAP_API or MDLMAP_DEFAULT_API. */
int mdlmap_client_open(struct mdlmap_client *c, const char *path);
void mdlmap_client_close(struct mdlmap_client *c);
/* Send req (request_id and version are filled in) and wait for its response
 * (*resp: free with frame_envelope_free). -EREMOTEIO when status != SUCCESS
 * (*resp is still returned). */
int mdlmap_client_call(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp);

int mdlmap_client_list(struct mdlmap_client *c, const char *vm_name, mdl_envelope **resp);
int mdlmap_client_stats(struct mdlmap_client *c, mdl_envelope **resp);
/* Read up to len bytes (any size: split into MDLMAP_MAX_IO_CHUNK requests). */
int mdlmap_client_read(struct mdlmap_client *c, uint64_t handle, uint64_t offset, void *buf, size_t len);
int mdlmap_client_write(struct mdlmap_client *c, uint64_t handle, uint64_t offset, const void *buf, size_t len);
