/* Host API introspection requests: a VM's whole guest memory, physical and
 * virtual, for VMs started with introspect=on (hostd/introspect does the
 * work). Each request runs to its end inside one handler on the single
 * event-loop thread: a memory-table change (QEMU re-laying out RAM) is
 * handled by the same loop, so it cannot happen while a request runs, and
 * no pointer into the table outlives the request. */
#include "host_api_handlers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fconn.h"
#include "introspect.h"
#include "log.h"
#include "memtable.h"

_Static_assert(INTROSPECT_MAX_BYTES == MDLMAP_MAX_IO_CHUNK, "one bound for every host API read and write");
_Static_assert(MEMTABLE_MAX_REGIONS <= HOST_API_MAX_REPLY_FDS, "a PhysMap reply carries every region's fd");

#define DETAIL_LEN 200

/* The VM a request names, if it exists and allows introspection. *mt: its
 * memory table (empty while no QEMU is connected). */
static int find_vm(const struct api_ctx *ctx, const char *name, const struct memtable **mt, char *detail)
{
    struct host_api_vm vm;
    if (!name || !ctx->vm_ops || !ctx->vm_ops->lookup || ctx->vm_ops->lookup(ctx->vm_ctx, name, &vm) < 0) {
        snprintf(detail, DETAIL_LEN, "no VM '%.63s'", name ? name : "");
        return -ENOENT;
    }
    if (!vm.introspect) {
        snprintf(detail, DETAIL_LEN, "VM '%.63s' does not allow introspection (--vm ...,introspect=on)", name);
        return -EACCES;
    }
    if (!vm.mem) {
        snprintf(detail, DETAIL_LEN, "VM '%.63s' has no memory table", name);
        return -ENOTCONN;
    }
    *mt = vm.mem;
    return 0;
}

static int reply(mdl_envelope *env, const mdl_envelope *req, int rc, const char *detail, uint8_t **out,
                 size_t *out_len)
{
    return fconn_reply_encode(env, req->request_id, rc, detail, out, out_len);
}

/* A reply that may be large (guest memory read): packed into the client's
 * spare frame when it has one. */
static int reply_large(const struct api_ctx *ctx, mdl_envelope *env, const mdl_envelope *req, int rc,
                       const char *detail, uint8_t **out, size_t *out_len)
{
    return fconn_reply_encode_reuse(env, req->request_id, rc, detail, ctx->reply_q, out, out_len);
}

static int do_phys_read(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    const Mdlmap__V1__PhysReadRequest *rq = req->phys_read;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysReadResponse rp = MDLMAP__V1__PHYS_READ_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY;
    env.phys_read_reply = &rp;
    char detail[DETAIL_LEN] = "";
    const struct memtable *mt;
    int rc = find_vm(ctx, rq->vm_name, &mt, detail);
    size_t n = rq->n_ranges;
    uint64_t total = 0;
    for (size_t i = 0; i < n && i <= INTROSPECT_MAX_RANGES; i++)
        total += rq->ranges[i]->length;
    if (rc == 0)
        rc = introspect_check_bounds(n, total, detail, sizeof(detail));
    if (rc < 0)
        return reply(&env, req, rc, detail, out, out_len);
    /* A range inside one region is packed straight from guest RAM (nothing
     * runs between here and the encoding); only ranges that span regions or
     * fail go through introspect_phys_readv, into buf. */
    uint8_t *buf = NULL;
    struct introspect_iov *v = calloc(n ? n : 1, sizeof(*v));
    Mdlmap__V1__RangeData *rd = calloc(n ? n : 1, sizeof(*rd));
    Mdlmap__V1__RangeData **rdp = calloc(n ? n : 1, sizeof(*rdp));
    if (!v || !rd || !rdp) {
        rc = -ENOMEM;
        snprintf(detail, sizeof(detail), "out of memory");
    }
    uint64_t copied = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const Mdlmap__V1__PhysRange *r = rq->ranges[i];
        mdlmap__v1__range_data__init(&rd[i]);
        rdp[i] = &rd[i];
        uint8_t *direct = r->length ? memtable_gpa_to_hva(mt, r->gpa, r->length) : NULL;
        rd[i].data.data = direct;
        rd[i].data.len = direct ? r->length : 0;
        copied += direct ? 0 : r->length;
    }
    if (rc == 0 && !(buf = malloc(copied ? copied : 1))) {
        rc = -ENOMEM;
        snprintf(detail, sizeof(detail), "out of memory");
    }
    size_t nv = 0;
    for (size_t i = 0, off = 0; rc == 0 && i < n; i++) {
        if (rd[i].data.data)
            continue;
        v[nv++] = (struct introspect_iov){ .gpa = rq->ranges[i]->gpa, .buf = buf + off, .len = rq->ranges[i]->length };
        off += rq->ranges[i]->length;
    }
    if (rc == 0 && nv)
        rc = introspect_phys_readv(mt, v, nv, detail, sizeof(detail));
    for (size_t i = 0, k = 0; rc == 0 && i < n; i++) {
        if (rd[i].data.data)
            continue; /* direct */
        rd[i].status = ntstatus_from_errno(v[k].status);
        if (v[k].status == 0) {
            rd[i].data.data = v[k].buf;
            rd[i].data.len = v[k].len;
        }
        k++;
    }
    if (rc == 0) {
        rp.n_ranges = n;
        rp.ranges = rdp;
    }
    rc = reply_large(ctx, &env, req, rc, detail, out, out_len);
    free(buf);
    free(v);
    free(rd);
    free(rdp);
    return rc;
}

static int do_phys_write(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    const Mdlmap__V1__PhysWriteRequest *rq = req->phys_write;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysWriteResponse rp = MDLMAP__V1__PHYS_WRITE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_WRITE_REPLY;
    env.phys_write_reply = &rp;
    char detail[DETAIL_LEN] = "";
    const struct memtable *mt;
    int rc = find_vm(ctx, rq->vm_name, &mt, detail);
    size_t n = rq->n_chunks;
    uint64_t total = 0;
    for (size_t i = 0; i < n && i <= INTROSPECT_MAX_RANGES; i++)
        total += rq->chunks[i]->data.len;
    if (rc == 0)
        rc = introspect_check_bounds(n, total, detail, sizeof(detail));
    if (rc < 0)
        return reply(&env, req, rc, detail, out, out_len);
    struct introspect_iov *v = calloc(n ? n : 1, sizeof(*v));
    Mdlmap__V1__NtStatus *st = calloc(n ? n : 1, sizeof(*st));
    if (!v || !st) {
        rc = -ENOMEM;
        snprintf(detail, sizeof(detail), "out of memory");
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        v[i] = (struct introspect_iov){ .gpa = rq->chunks[i]->gpa, .buf = rq->chunks[i]->data.data,
                                        .len = rq->chunks[i]->data.len };
    if (rc == 0)
        rc = introspect_phys_writev(mt, v, n, detail, sizeof(detail));
    unsigned failed = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        st[i] = (Mdlmap__V1__NtStatus)ntstatus_from_errno(v[i].status);
        failed += v[i].status != 0;
    }
    if (rc == 0) {
        rp.n_status = n;
        rp.status = st;
        log_info_limited(ctx->op_log, "api: request lines",
                         "api: wrote %llu bytes of guest-physical memory of VM '%s' in %zu chunks (%u refused)",
                         (unsigned long long)total, rq->vm_name, n, failed);
    }
    rc = reply(&env, req, rc, detail, out, out_len);
    free(v);
    free(st);
    return rc;
}

static int do_phys_map(const struct api_ctx *ctx, const mdl_envelope *req, unsigned fd_room, uint8_t **out,
                       size_t *out_len, int *fds, unsigned *nfds)
{
    const Mdlmap__V1__PhysMapRequest *rq = req->phys_map;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysMapResponse rp = MDLMAP__V1__PHYS_MAP_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP_REPLY;
    env.phys_map_reply = &rp;
    char detail[DETAIL_LEN] = "";
    const struct memtable *mt;
    int rc = find_vm(ctx, rq->vm_name, &mt, detail);
    if (rc == 0 && mt->n == 0) {
        snprintf(detail, sizeof(detail), "VM '%.63s' has no guest RAM registered (QEMU not connected)",
                 rq->vm_name);
        rc = -ENOTCONN;
    }
    if (rc == 0 && mt->n > fd_room) {
        snprintf(detail, sizeof(detail), "%u fds needed, room for %u: read the replies that carry fds first",
                 mt->n, fd_room);
        rc = -ENOSPC;
    }
    if (rc < 0)
        return reply(&env, req, rc, detail, out, out_len);
    /* regions by gpa (at most MEMTABLE_MAX_REGIONS): the client's view of RAM in order */
    unsigned order[MEMTABLE_MAX_REGIONS], n = mt->n;
    for (unsigned i = 0; i < n; i++) {
        unsigned j = i;
        for (; j > 0 && mt->r[order[j - 1]].gpa > mt->r[i].gpa; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
    Mdlmap__V1__RamRegion rr[MEMTABLE_MAX_REGIONS], *rrp[MEMTABLE_MAX_REGIONS];
    for (unsigned i = 0; i < n; i++) {
        const struct mem_region *r = &mt->r[order[i]];
        /* our own description: writable shares hostd's O_RDWR one, read-only is a new O_RDONLY one */
        int fd = rq->writable ? fcntl(r->fd, F_DUPFD_CLOEXEC, 0) : api_reopen_read_only(r->fd);
        if (fd < 0) {
            rc = -errno;
            snprintf(detail, sizeof(detail), "cannot pass region %u: %s", i, strerror(errno));
            break;
        }
        fds[(*nfds)++] = fd;
        mdlmap__v1__ram_region__init(&rr[i]);
        rr[i].gpa = r->gpa;
        rr[i].size = r->size;
        rr[i].fd_offset = r->mmap_offset;
        rr[i].fd_index = i;
        rrp[i] = &rr[i];
    }
    if (rc < 0) {
        while (*nfds)
            close(fds[--*nfds]);
    } else {
        rp.n_regions = n;
        rp.regions = rrp;
        log_info_limited(ctx->op_log, "api: request lines", "api: VM '%s': %u RAM region fds handed out (%s)",
                         rq->vm_name, n, rq->writable ? "writable" : "read-only");
    }
    rc = reply(&env, req, rc, detail, out, out_len);
    if (rc < 0)
        while (*nfds)
            close(fds[--*nfds]);
    return rc;
}

static int do_translate(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    const Mdlmap__V1__TranslateRequest *rq = req->translate;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__TranslateResponse rp = MDLMAP__V1__TRANSLATE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_TRANSLATE_REPLY;
    env.translate_reply = &rp;
    char detail[DETAIL_LEN] = "";
    const struct memtable *mt;
    int rc = find_vm(ctx, rq->vm_name, &mt, detail);
    size_t n = rq->n_vaddrs;
    if (rc == 0 && n > INTROSPECT_MAX_VADDRS) {
        snprintf(detail, sizeof(detail), "%zu addresses: at most %u per request", n, INTROSPECT_MAX_VADDRS);
        rc = -EINVAL;
    }
    if (rc < 0)
        return reply(&env, req, rc, detail, out, out_len);
    Mdlmap__V1__Translation *t = calloc(n ? n : 1, sizeof(*t));
    Mdlmap__V1__Translation **tp = calloc(n ? n : 1, sizeof(*tp));
    if (!t || !tp) {
        rc = -ENOMEM;
        snprintf(detail, sizeof(detail), "out of memory");
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct introspect_walk w;
        int st = introspect_translate(mt, rq->cr3, rq->la57, rq->vaddrs[i], &w);
        mdlmap__v1__translation__init(&t[i]);
        t[i].status = ntstatus_from_errno(st);
        t[i].gpa = w.gpa;
        t[i].page_size = w.page_size;
        t[i].level = w.level;
        t[i].writable = w.writable;
        t[i].user = w.user;
        t[i].nx = w.nx;
        tp[i] = &t[i];
    }
    if (rc == 0) {
        rp.n_results = n;
        rp.results = tp;
    }
    rc = reply(&env, req, rc, detail, out, out_len);
    free(t);
    free(tp);
    return rc;
}

/* The detail of a guest-virtual access that stopped early. */
static void virt_detail(char *detail, int rc, size_t done, uint64_t fault)
{
    snprintf(detail, DETAIL_LEN, "stopped at 0x%llx after %zu bytes: %s", (unsigned long long)fault, done,
             rc == -EFAULT ? "not present or not canonical" : "not guest RAM");
}

static int do_virt_read(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    const Mdlmap__V1__VirtReadRequest *rq = req->virt_read;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtReadResponse rp = MDLMAP__V1__VIRT_READ_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_READ_REPLY;
    env.virt_read_reply = &rp;
    char detail[DETAIL_LEN] = "";
    const struct memtable *mt;
    int rc = find_vm(ctx, rq->vm_name, &mt, detail);
    if (rc == 0)
        rc = introspect_check_bounds(1, rq->length, detail, sizeof(detail));
    if (rc < 0)
        return reply(&env, req, rc, detail, out, out_len);
    uint8_t *buf = malloc(rq->length ? rq->length : 1);
    if (!buf) {
        snprintf(detail, sizeof(detail), "out of memory");
        return reply(&env, req, -ENOMEM, detail, out, out_len);
    }
    size_t done;
    uint64_t fault;
    rc = introspect_virt_read(mt, rq->cr3, rq->la57, rq->vaddr, buf, rq->length, &done, &fault);
    if (rc < 0)
        virt_detail(detail, rc, done, fault);
    rp.data.data = buf;
    rp.data.len = done;
    rp.fault_vaddr = fault;
    rc = reply_large(ctx, &env, req, rc, detail, out, out_len);
    free(buf);
    return rc;
}

static int do_virt_write(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len)
{
    const Mdlmap__V1__VirtWriteRequest *rq = req->virt_write;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtWriteResponse rp = MDLMAP__V1__VIRT_WRITE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_WRITE_REPLY;
    env.virt_write_reply = &rp;
    char detail[DETAIL_LEN] = "";
    const struct memtable *mt;
    int rc = find_vm(ctx, rq->vm_name, &mt, detail);
    if (rc == 0)
        rc = introspect_check_bounds(1, rq->data.len, detail, sizeof(detail));
    if (rc < 0)
        return reply(&env, req, rc, detail, out, out_len);
    size_t done;
    uint64_t fault;
    rc = introspect_virt_write(mt, rq->cr3, rq->la57, rq->vaddr, rq->data.data, rq->data.len, &done, &fault);
    if (rc < 0)
        virt_detail(detail, rc, done, fault);
    rp.written = (uint32_t)done;
    rp.fault_vaddr = fault;
    log_info_limited(ctx->op_log, "api: request lines",
                     "api: wrote %zu of %zu bytes of guest-virtual memory of VM '%s' at 0x%llx", done, rq->data.len,
                     rq->vm_name, (unsigned long long)rq->vaddr);
    return reply(&env, req, rc, detail, out, out_len);
}

int api_introspect_handle(const struct api_ctx *ctx, const mdl_envelope *req, unsigned fd_room, uint8_t **out,
                          size_t *out_len, int *fds, unsigned *nfds)
{
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_READ:
        return do_phys_read(ctx, req, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_WRITE:
        return do_phys_write(ctx, req, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_PHYS_MAP:
        return do_phys_map(ctx, req, fd_room, out, out_len, fds, nfds);
    case MDLMAP__V1__ENVELOPE__BODY_TRANSLATE:
        return do_translate(ctx, req, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_VIRT_READ:
        return do_virt_read(ctx, req, out, out_len);
    case MDLMAP__V1__ENVELOPE__BODY_VIRT_WRITE:
        return do_virt_write(ctx, req, out, out_len);
    default:
        return fconn_reply_error(req->request_id, -ENOSYS, "not an introspection request", out, out_len);
    }
}
