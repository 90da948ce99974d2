/* Shared pools for zero-copy sharing between two guests (issue 10,
 * docs/zero-copy-sharing.md): hostd creates a file per allowed pair of VMs,
 * writes a header naming the pool and the pair, and keeps it mapped; both
 * VMs' QEMUs attach it as an ivshmem-plain device (memory-backend-file,
 * share=on), and the guests map its BAR2. What one guest writes there the
 * other reads in place: no copy, no hostd on the path. The pool is created
 * zeroed and goes when hostd stops (QEMUs still attached keep it alive). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARE_POOL_MAGIC "MDLPOOL1"
#define SHARE_POOL_HDR 4096u              /* the data starts here */
#define SHARE_POOL_MAX_SIZE (1ull << 30)
#define SHARE_POOL_MAX 16u

/* The header at offset 0 of the pool (little-endian), what guests check. */
struct share_pool_hdr {
    char magic[8];        /* SHARE_POOL_MAGIC */
    uint32_t version;     /* 1 */
    uint32_t hdr_size;    /* SHARE_POOL_HDR */
    uint64_t size;        /* bytes of the whole pool */
    uint64_t data_offset; /* SHARE_POOL_HDR */
    char name[64];
    char vm_a[64], vm_b[64];
};

struct share_pool_spec {
    char name[64], vm_a[64], vm_b[64], dir[128];
    uint64_t size;
};

struct share_pool {
    struct share_pool_spec spec;
    char path[224];              /* symlink to the memfd, for QEMU's mem-path */
    bool linked;
    int fd;
    uint8_t *map;
};

/* "NAME,VM_A,VM_B,SIZE[,DIR]": SIZE with K/M/G, a power of two (a PCI
 * BAR), 8 KiB .. 1 GiB; NAME [A-Za-z0-9._-]{1,63}; DIR default /dev/shm. -EINVAL. */
int share_pool_parse(const char *s, struct share_pool_spec *out);
/* A sealed memfd of the size with the header, mapped, and the symlink
 * DIR/mdlmap-pool-NAME to it (refused if the path exists). */
int share_pool_create(struct share_pool *p, const struct share_pool_spec *spec);
/* Unmap, close, remove the symlink. */
void share_pool_destroy(struct share_pool *p);
