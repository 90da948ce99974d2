/* Long-term pins through io_uring fixed-buffer registration (FOLL_LONGTERM in
 * the kernel), frame numbers from /proc/self/pagemap read after pinning (the
 * kernel may migrate a page while pinning it). One small ring per MDL: closing
 * it drops the pins. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/io_uring.h>

#include "mdl_internal.h"

#define IOURING_MAX_BUF (1ul << 30)   /* the kernel's limit per registered buffer */

static int iouring_pin(struct mdl_pinner *self, uintptr_t va, size_t npages, uint64_t *pfns,
                       struct mdl_pin *out)
{
    (void)self;
    struct io_uring_params prm;
    memset(&prm, 0, sizeof(prm));
    int fd = (int)syscall(__NR_io_uring_setup, 1, &prm);
    if (fd < 0)
        return -errno;
    size_t len = npages * MDL_PAGE_SIZE;
    size_t niov = (len + IOURING_MAX_BUF - 1) / IOURING_MAX_BUF;
    struct iovec *iov = calloc(niov, sizeof(*iov));
    if (!iov) {
        close(fd);
        return -ENOMEM;
    }
    for (size_t i = 0; i < niov; i++) {
        size_t off = i * IOURING_MAX_BUF;
        iov[i].iov_base = (void *)(va + off);
        iov[i].iov_len = len - off < IOURING_MAX_BUF ? len - off : IOURING_MAX_BUF;
    }
    long rc = syscall(__NR_io_uring_register, fd, IORING_REGISTER_BUFFERS, iov, (unsigned)niov);
    int err = rc < 0 ? -errno : 0;
    free(iov);
    if (err == 0)
        err = mdl_pagemap_read(va, npages, pfns);
    if (err < 0) {
        close(fd);
        return err;
    }
    out->cookie = (void *)(intptr_t)(fd + 1);
    out->pass_fd = -1;
    out->pfns_from_peer = false;
    return 0;
}

static void iouring_unpin(struct mdl_pinner *self, struct mdl_pin *pin)
{
    (void)self;
    if (pin->cookie)
        close((int)(intptr_t)pin->cookie - 1);
    pin->cookie = NULL;
}

static struct mdl_pinner iouring_pinner = { iouring_pin, iouring_unpin };

struct mdl_pinner *mdl_pinner_iouring(void)
{
    return &iouring_pinner;
}
