/* Probing a buffer without faulting: process_vm_readv/writev on ourselves
 * return EFAULT for an unmapped or (for writes) read-only page. */
#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mdl_internal.h"

static int vm_rw(uintptr_t va, uint8_t *byte, bool write)
{
    struct iovec local = { byte, 1 }, remote = { (void *)va, 1 };
    ssize_t n = write ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0)
                      : process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    return n == 1 ? 0 : -EFAULT;
}

int mdl_probe_range(uintptr_t va, size_t len, bool write)
{
    uintptr_t end = va + len;
    for (uintptr_t pg = va & ~MDL_PAGE_MASK; pg < end; pg += MDL_PAGE_SIZE) {
        uintptr_t at = pg < va ? va : pg;
        uint8_t b;
        if (vm_rw(at, &b, false) < 0)
            return -EFAULT;
        /* Write the byte back: faults the page in writable, content unchanged. */
        if (write && vm_rw(at, &b, true) < 0)
            return -EFAULT;
    }
    return 0;
}

int mdl_pagemap_read(uintptr_t va, size_t npages, uint64_t *pfns)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = 0;
    for (size_t i = 0; i < npages && rc == 0; i++) {
        uint64_t e;
        off_t off = (off_t)(((va >> MDL_PAGE_SHIFT) + i) * sizeof(e));
        if (pread(fd, &e, sizeof(e), off) != (ssize_t)sizeof(e))
            rc = -EIO;
        else if (!(e >> 63))
            rc = -EFAULT;                  /* not present */
        else if (!(pfns[i] = e & ((1ull << 55) - 1)))
            rc = -EPERM;                   /* PFNs hidden: not CAP_SYS_ADMIN */
    }
    close(fd);
    return rc;
}
