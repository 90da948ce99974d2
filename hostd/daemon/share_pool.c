/* Shared pools between two guests (see share_pool.h). */
#include "share_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]))
            return 0;
    return 1;
}

int share_pool_parse(const char *s, struct share_pool_spec *out)
{
    memset(out, 0, sizeof(*out));
    char buf[400], *save = NULL;
    if (!s || strlen(s) >= sizeof(buf))
        return -EINVAL;
    strcpy(buf, s);
    char *f[6] = { 0 };
    int n = 0;
    for (char *t = strtok_r(buf, ",", &save); t && n < 6; t = strtok_r(NULL, ",", &save))
        f[n++] = t;
    if (n < 4 || n > 5 || !name_ok(f[0]) || !name_ok(f[1]) || !name_ok(f[2]) || !strcmp(f[1], f[2]))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(f[3], &end, 10);
    unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
    if (errno || end == f[3] || (shift && end[1]) || (!shift && *end) || v > (SHARE_POOL_MAX_SIZE >> shift))
        return -EINVAL;
    out->size = (uint64_t)v << shift;
    /* a PCI BAR is a power of two: QEMU refuses (or aborts on) any other size */
    if (out->size < 2 * SHARE_POOL_HDR || (out->size & (out->size - 1)))
        return -EINVAL;
    snprintf(out->name, sizeof(out->name), "%s", f[0]);
    snprintf(out->vm_a, sizeof(out->vm_a), "%s", f[1]);
    snprintf(out->vm_b, sizeof(out->vm_b), "%s", f[2]);
    if (n == 5 && (f[4][0] != '/' || strlen(f[4]) >= sizeof(out->dir)))
        return -EINVAL;
    snprintf(out->dir, sizeof(out->dir), "%s", n == 5 ? f[4] : "/dev/shm");
    return 0;
}

int share_pool_create(struct share_pool *p, const struct share_pool_spec *spec)
{
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    p->spec = *spec;
    snprintf(p->path, sizeof(p->path), "%s/mdlmap-pool-%s", spec->dir, spec->name);
    /* A memfd sealed at its size, as guest RAM must be for hostd: QEMU hands
     * the pool (guest-visible memory) to every vhost-user back-end, hostd
     * included, which refuses memory that could shrink under it. QEMU opens
     * it through a symlink to /proc/PID/fd/N (same user or root). */
    char name[80], target[64];
    snprintf(name, sizeof(name), "mdlmap-pool-%s", spec->name);
    p->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int err = p->fd < 0 ? errno : 0;
    if (!err && (ftruncate(p->fd, (off_t)spec->size) < 0 ||
                 fcntl(p->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0))
        err = errno;
    snprintf(target, sizeof(target), "/proc/%d/fd/%d", (int)getpid(), p->fd);
    /* symlink() fails if the path exists: never adopt a file someone else prepared */
    if (!err && symlink(target, p->path) < 0)
        err = errno;
    if (err) {
        log_err("pool %s: %s: %s", spec->name, p->path, strerror(err));
        if (p->fd >= 0)
            close(p->fd);
        p->fd = -1;
        return -err;
    }
    p->linked = true;
    void *m = mmap(NULL, spec->size, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
    if (m == MAP_FAILED) {
        err = errno;
        share_pool_destroy(p);
        return -err;
    }
    p->map = m;
    struct share_pool_hdr h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, SHARE_POOL_MAGIC, 8);
    h.version = 1;
    h.hdr_size = SHARE_POOL_HDR;
    h.size = spec->size;
    h.data_offset = SHARE_POOL_HDR;
    snprintf(h.name, sizeof(h.name), "%s", spec->name);
    snprintf(h.vm_a, sizeof(h.vm_a), "%s", spec->vm_a);
    snprintf(h.vm_b, sizeof(h.vm_b), "%s", spec->vm_b);
    memcpy(p->map, &h, sizeof(h));
    log_info("pool %s: %llu bytes for %s and %s at %s; attach to both QEMUs with "
             "-object memory-backend-file,id=pool-%s,mem-path=%s,size=%llu,share=on "
             "-device ivshmem-plain,memdev=pool-%s",
             spec->name, (unsigned long long)spec->size, spec->vm_a, spec->vm_b, p->path, spec->name, p->path,
             (unsigned long long)spec->size, spec->name);
    return 0;
}

void share_pool_destroy(struct share_pool *p)
{
    if (p->map)
        munmap(p->map, p->spec.size);
    p->map = NULL;
    if (p->linked)
        unlink(p->path);
    p->linked = false;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}
