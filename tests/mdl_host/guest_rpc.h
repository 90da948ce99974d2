/* Helpers shared by the mdl_host tests that run a real hostd: framed RPC
 * requests from the harness guest (port 1100), and waiting for a line in a
 * child's output file. */
#pragma once
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "tcommon.h"

static uint64_t rpc_next_id = 1;

/* Send req with the next request id. */
static inline int rpc_send(struct vc_conn *c, mdl_envelope *req)
{
    uint8_t *f;
    size_t n;
    req->version = 1;
    req->request_id = rpc_next_id++;
    if (frame_encode(req, &f, &n) < 0)
        return -1;
    int rc = vc_send_all(c, f, n, 5000);
    free(f);
    return rc;
}

/* The next frame from hostd, decoded, or NULL. */
static inline mdl_envelope *rpc_recv(struct vc_conn *c, int timeout_ms)
{
    uint8_t hdr[4];
    if (vc_recv_all(c, hdr, 4, timeout_ms) < 0)
        return NULL;
    uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
    uint8_t *p = len && len <= MDLMAP_MAX_FRAME ? malloc(len) : NULL;
    mdl_envelope *r = NULL;
    if (p && vc_recv_all(c, p, len, 5000) == 0)
        frame_decode(p, len, &r);
    free(p);
    return r;
}

/* Does the file at path contain s within ms (the harness is polled meanwhile)? */
static inline bool file_has(const char *path, const char *s, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        char buf[8192] = "";
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n > 0 && strstr(buf, s))
                return true;
        }
        vdev_poll();
        usleep(20000);
    }
    return false;
}
