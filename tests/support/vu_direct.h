/* Driving a vhost-user back-end in-process, without a socket peer
 * (vu_backend_process), for the unit tests and fuzz targets of hostd/vhost:
 * a device that serves two queues and does nothing, one message at a time,
 * and the process's open fd count for "nothing leaked" checks. The includer
 * links vhost_dep. */
#pragma once
#include <dirent.h>
#include <string.h>

#include "vhost_user.h"

static inline unsigned vu_direct_two_queues(void *dev)
{
    (void)dev;
    return 2;
}

static const struct vu_dev_ops vu_direct_null_dev = { .queue_count = vu_direct_two_queues };

/* One message (payload of size bytes, fd < 0: none) as if QEMU had sent it. */
static inline int vu_direct_send(struct vu_backend *be, uint32_t req, const void *pl, uint32_t size, int fd)
{
    struct vu_msg_hdr h = { req, VHOST_USER_VERSION, size };
    uint8_t buf[VHOST_USER_MAX_PAYLOAD];
    memcpy(buf, pl, size);
    int fds[1] = { fd };
    return vu_backend_process(be, &h, buf, fds, fd >= 0 ? 1 : 0);
}

static inline int vu_direct_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
}
