/* libmdlmap over the vhost-user frontend harness: a transport on the
 * harness's socket-like vsock client (CID 2, port 1100) and a pinner/buffer
 * allocator over its memfd guest RAM, whose page numbers are gpa >> 12. */
#pragma once
#include "mdl_transport.h"
#include "vsock_client.h"

struct harness_link {
    struct vdev *d;
    struct mdl_pinner_linear pin;   /* the free part of low RAM */
    uint64_t next_gpa, end_gpa;
};

/* Reserve GPA [8 MiB, 16 MiB) of d's RAM for MDL buffers. */
void harness_link_init(struct harness_link *l, struct vdev *d);
/* A session over a new vsock connection; NULL on failure. */
struct mdl_session *harness_session(struct harness_link *l);
/* Page-aligned buffers in guest RAM (bump allocator; freeing is a no-op). */
void *harness_alloc_pages(size_t npages, void *ctx);
void harness_free_pages(void *p, size_t npages, void *ctx);
