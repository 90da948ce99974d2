/* Shared pools (docs/zero-copy-sharing.md): hostd's pool file attached to
 * this VM as an ivshmem-plain PCI device; BAR2 is the pool, mapped through
 * sysfs (root). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdlmap.h"

#define POOL_MAGIC "MDLPOOL1"

/* The header hostd writes (hostd/daemon/share_pool.h). */
struct pool_hdr {
    char magic[8];
    uint32_t version, hdr_size;
    uint64_t size, data_offset;
    char name[64], vm_a[64], vm_b[64];
};

static int read_hex(const char *dir, const char *file, unsigned *out)
{
    char path[512], buf[32];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(buf, sizeof(buf), f) && sscanf(buf, "%x", out) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

/* Map one device's BAR2 and check it is the pool asked for. */
static int try_device(const char *dir, const char *name, struct mdl_pool *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/resource2", dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < (off_t)(2 * MDL_PAGE_SIZE)) {
        close(fd);
        return -ENODEV;
    }
    size_t len = (size_t)st.st_size;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = m == MAP_FAILED ? -errno : 0;
    close(fd);
    if (err)
        return err;
    struct pool_hdr h;
    memcpy(&h, m, sizeof(h));
    h.name[63] = h.vm_a[63] = h.vm_b[63] = 0;
    if (memcmp(h.magic, POOL_MAGIC, 8) || h.version != 1 || h.data_offset != MDL_PAGE_SIZE || h.size > len ||
        h.size <= h.data_offset || (name && strcmp(name, h.name))) {
        munmap(m, len);
        return -ENOENT;
    }
    *out = (struct mdl_pool){ .base = m, .map_len = len, .data = (uint8_t *)m + h.data_offset,
                              .data_size = (size_t)(h.size - h.data_offset) };
    snprintf(out->name, sizeof(out->name), "%s", h.name);
    snprintf(out->vm_a, sizeof(out->vm_a), "%s", h.vm_a);
    snprintf(out->vm_b, sizeof(out->vm_b), "%s", h.vm_b);
    return 0;
}

int mdl_pool_open(const char *name, struct mdl_pool *out)
{
    memset(out, 0, sizeof(*out));
    const char *root = "/sys/bus/pci/devices";
    DIR *d = opendir(root);
    if (!d)
        return -errno;
    int rc = -ENOENT;
    struct dirent *e;
    while (rc != 0 && (e = readdir(d))) {
        char dir[300];
        unsigned vendor, device;
        if (e->d_name[0] == '.')
            continue;
        snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
        /* ivshmem: Red Hat, Inc. 1af4:1110 */
        if (read_hex(dir, "vendor", &vendor) || read_hex(dir, "device", &device) || vendor != 0x1af4 ||
            device != 0x1110)
            continue;
        int r = try_device(dir, name, out);
        if (r == 0 || rc == -ENOENT)
            rc = r;
    }
    closedir(d);
    return rc;
}

void mdl_pool_close(struct mdl_pool *p)
{
    if (p->base)
        munmap(p->base, p->map_len);
    memset(p, 0, sizeof(*p));
}
