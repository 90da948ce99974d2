/* Host API client library. */
#include "mdlmap_client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BODY(x) MDLMAP__V1__ENVELOPE__BODY_##x

int mdlmap_client_open(struct mdlmap_client *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->next_id = 1;
    if (!path)
        path = getenv("MDLMAP_API");
    if (!path || !*path)
        path = MDLMAP_DEFAULT_API;
    int fd = usock_connect(path, 0);
    if (fd < 0)
        return fd;
    c->fd = fd;
    return 0;
}

void mdlmap_client_close(struct mdlmap_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = 0;
    for (; c->evq_n; c->evq_n--) {
        frame_envelope_free(c->evq[c->evq_head]);
        c->evq_head = (c->evq_head + 1) % MDLMAP_CLIENT_EVENT_QUEUE;
    }
}

/* An event that arrived while a call waited for its response. */
static void evq_push(struct mdlmap_client *c, mdl_envelope *ev)
{
    if (c->evq_n == MDLMAP_CLIENT_EVENT_QUEUE) {
        frame_envelope_free(ev);
        c->events_dropped++;
        return;
    }
    c->evq[(c->evq_head + c->evq_n++) % MDLMAP_CLIENT_EVENT_QUEUE] = ev;
}

static void set_failure(struct mdlmap_client *c, int32_t status, const char *detail)
{
    c->last_status = status;
    snprintf(c->last_detail, sizeof(c->last_detail), "%s", detail ? detail : "");
}

int mdlmap_client_call_fds(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp, struct usock_fds *fds)
{
    *resp = NULL;
    req->version = MDLMAP_PROTO_VERSION;
    req->request_id = c->next_id++;
    int rc = frame_write_fd(c->fd, req);
    if (rc < 0)
        return rc;
    for (;;) {
        rc = fds ? frame_read_fd_fds(c->fd, resp, fds) : frame_read_fd(c->fd, resp);
        if (rc < 0)
            return rc;
        if ((*resp)->body_case != BODY(EVENT))
            break;
        evq_push(c, *resp); /* pushed, never a response (see the header) */
        *resp = NULL;
    }
    set_failure(c, (*resp)->status, (*resp)->detail);
    if ((*resp)->request_id != req->request_id && (*resp)->status == 0) {
        frame_envelope_free(*resp);
        *resp = NULL;
        return -EPROTO;
    }
    return (*resp)->status == 0 ? 0 : -EREMOTEIO;
}

int mdlmap_client_call(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp)
{
    return mdlmap_client_call_fds(c, req, resp, NULL);
}

/* A call whose successful answer must have body `want`. On -EREMOTEIO *resp
 * is kept (reads that stop early still carry what they got). */
static int call_expect(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp, int want,
                       struct usock_fds *fds)
{
    int rc = mdlmap_client_call_fds(c, req, resp, fds);
    if (rc == 0 && (int)(*resp)->body_case != want)
        rc = -EPROTO;
    return rc;
}

/* A PhysRead call answered in place: on 0, r[0 .. k) point into c->rbuf
 * (valid until the next call). Events read meanwhile are queued; an answer
 * the in-place reader does not take (a failure with another body, more
 * ranges than asked) is decoded by protobuf-c and judged as call_expect
 * would. */
static int call_phys_read(struct mdlmap_client *c, mdl_envelope *req, struct frame_range_view *r, size_t k)
{
    req->version = MDLMAP_PROTO_VERSION;
    req->request_id = c->next_id++;
    int rc = frame_write_fd(c->fd, req);
    while (rc == 0) {
        size_t len = 0;
        rc = frame_read_fd_buf(c->fd, &c->rbuf, &c->rcap, &len);
        if (rc < 0)
            return rc;
        struct frame_phys_read_view v;
        rc = frame_view_phys_read(c->rbuf, len, &v, r, k);
        if (rc == 0) {
            char d[sizeof(c->last_detail)];
            snprintf(d, sizeof(d), "%.*s", (int)(v.detail_len < sizeof(d) ? v.detail_len : sizeof(d) - 1),
                     v.detail ? v.detail : "");
            set_failure(c, v.status, d);
            if (v.status)
                return -EREMOTEIO;
            return v.request_id == req->request_id && v.n_ranges == k ? 0 : -EPROTO;
        }
        if (rc != -ENOMSG)
            return -EBADMSG;
        mdl_envelope *e;
        rc = frame_decode(c->rbuf, len, &e);
        if (rc < 0)
            return rc;
        if (e->body_case == BODY(EVENT)) {
            evq_push(c, e);
            continue;
        }
        set_failure(c, e->status, e->detail);
        rc = e->status ? -EREMOTEIO : -EPROTO; /* as mdlmap_client_call_fds judges it */
        frame_envelope_free(e);
    }
    return rc;
}

/* A call whose answer carries nothing the caller needs. */
static int call_simple(struct mdlmap_client *c, mdl_envelope *req, int want)
{
    mdl_envelope *r;
    int rc = call_expect(c, req, &r, want, NULL);
    frame_envelope_free(r);
    return rc;
}

static char *str(const char *s)
{
    return (char *)(s ? s : "");
}

int mdlmap_client_list_filter(struct mdlmap_client *c, const char *vm_name, uint64_t guest_address,
                              uint64_t map_handle, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListMappingsRequest rq = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    rq.vm_name = str(vm_name);
    rq.guest_address = guest_address;
    rq.map_handle = map_handle;
    env.body_case = BODY(LIST);
    env.list = &rq;
    return call_expect(c, &env, resp, BODY(LIST_REPLY), NULL);
}

int mdlmap_client_list(struct mdlmap_client *c, const char *vm_name, mdl_envelope **resp)
{
    return mdlmap_client_list_filter(c, vm_name, 0, 0, resp);
}

static int find_call(struct mdlmap_client *c, const char *vm, uint64_t guest_address, uint64_t handle,
                     struct mdlmap_mapping *info)
{
    mdl_envelope *r;
    int rc = mdlmap_client_list_filter(c, vm, guest_address, handle, &r);
    if (rc == 0 && r->list_reply->n_mappings == 0)
        rc = -ENOENT;
    if (rc == 0) {
        const Mdlmap__V1__MappingInfo *m = r->list_reply->mappings[0];
        memset(info, 0, sizeof(*info));
        info->map_handle = m->map_handle;
        info->mdl_handle = m->mdl_handle;
        info->address = m->address;
        info->guest_address = m->guest_address;
        info->guest_cid = m->guest_cid;
        info->byte_offset = m->byte_offset;
        info->byte_count = m->byte_count;
        info->page_count = m->page_count;
        info->read_only = m->read_only;
        info->user_mode = m->access_mode == MDLMAP__V1__ACCESS_MODE__USER_MODE;
        snprintf(info->vm_name, sizeof(info->vm_name), "%s", str(m->vm_name));
        /* hostd filtered; a server without the lookup would list everything */
        if (handle ? m->map_handle != handle
                   : guest_address < m->guest_address || guest_address - m->guest_address >= m->byte_count)
            rc = -EPROTO;
    }
    frame_envelope_free(r);
    return rc;
}

int mdlmap_client_find(struct mdlmap_client *c, const char *vm_name, uint64_t guest_address,
                       struct mdlmap_mapping *info)
{
    if (!guest_address)
        return -EINVAL; /* 0 means "no filter" on the wire */
    return find_call(c, vm_name, guest_address, 0, info);
}

int mdlmap_client_find_handle(struct mdlmap_client *c, uint64_t map_handle, struct mdlmap_mapping *info)
{
    if (!map_handle)
        return -EINVAL;
    return find_call(c, NULL, 0, map_handle, info);
}

int mdlmap_client_stats(struct mdlmap_client *c, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    env.body_case = BODY(STATS);
    env.stats = &rq;
    return call_expect(c, &env, resp, BODY(STATS_REPLY), NULL);
}

int mdlmap_client_read(struct mdlmap_client *c, uint64_t handle, uint64_t offset, void *buf, size_t len)
{
    uint8_t *out = buf;
    do {
        size_t n = len > MDLMAP_MAX_IO_CHUNK ? MDLMAP_MAX_IO_CHUNK : len;
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
        Mdlmap__V1__ReadRequest rq = MDLMAP__V1__READ_REQUEST__INIT;
        rq.map_handle = handle;
        rq.offset = offset;
        rq.length = (uint32_t)n;
        env.body_case = BODY(READ);
        env.read = &rq;
        int rc = call_expect(c, &env, &resp, BODY(READ_REPLY), NULL);
        if (rc == 0 && resp->read_reply->data.len != n)
            rc = -EPROTO;
        if (rc == 0 && n)
            memcpy(out, resp->read_reply->data.data, n);
        frame_envelope_free(resp);
        if (rc < 0)
            return rc;
        out += n;
        offset += n;
        len -= n;
    } while (len);
    return 0;
}

int mdlmap_client_write(struct mdlmap_client *c, uint64_t handle, uint64_t offset, const void *buf, size_t len)
{
    const uint8_t *in = buf;
    do {
        size_t n = len > MDLMAP_MAX_IO_CHUNK ? MDLMAP_MAX_IO_CHUNK : len;
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
        Mdlmap__V1__WriteRequest rq = MDLMAP__V1__WRITE_REQUEST__INIT;
        rq.map_handle = handle;
        rq.offset = offset;
        rq.data.data = (uint8_t *)in;
        rq.data.len = n;
        env.body_case = BODY(WRITE);
        env.write = &rq;
        int rc = call_expect(c, &env, &resp, BODY(WRITE_REPLY), NULL);
        if (rc == 0 && resp->write_reply->written != n)
            rc = -EPROTO; /* a short or foreign answer: the data did not all land */
        frame_envelope_free(resp);
        if (rc < 0)
            return rc;
        in += n;
        offset += n;
        len -= n;
    } while (len);
    return 0;
}

/* ---- physical memory ---------------------------------------------------- */

/* One request's share of a vectored call: bytes [off, off + len) of iov[idx]. */
struct piece {
    size_t idx, off;
    uint32_t len;
};

/* The next request's pieces, starting at range *ri, byte *ro of it: at most
 * MDLMAP_MAX_PHYS_RANGES pieces and MDLMAP_MAX_IO_CHUNK bytes. Empty ranges
 * are skipped (nothing to do, status 0). */
static size_t next_batch(const struct mdlmap_phys_iov *iov, size_t n, size_t *ri, size_t *ro, struct piece *p)
{
    size_t k = 0, total = 0;
    while (*ri < n && k < MDLMAP_MAX_PHYS_RANGES && total < MDLMAP_MAX_IO_CHUNK) {
        size_t left = iov[*ri].len - *ro;
        size_t take = left < MDLMAP_MAX_IO_CHUNK - total ? left : MDLMAP_MAX_IO_CHUNK - total;
        if (take)
            p[k++] = (struct piece){ *ri, *ro, (uint32_t)take };
        total += take;
        *ro += take;
        if (*ro == iov[*ri].len) {
            (*ri)++;
            *ro = 0;
        }
    }
    return k;
}

/* Record a failed piece; the first failure of a range is its status. */
static void piece_failed(struct mdlmap_phys_iov *iov, const struct piece *p, int32_t st, size_t *failed)
{
    if (!iov[p->idx].status)
        iov[p->idx].status = st;
    if (*failed == SIZE_MAX)
        *failed = p->idx;
}

static int phys_finish(struct mdlmap_client *c, const struct mdlmap_phys_iov *iov, size_t failed, int rc)
{
    if (rc < 0 || failed == SIZE_MAX)
        return rc;
    char d[128];
    snprintf(d, sizeof(d), "range %zu (gpa 0x%llx) failed", failed, (unsigned long long)iov[failed].gpa);
    set_failure(c, iov[failed].status, d);
    return -EREMOTEIO;
}

/* Vectored physical read or write: one loop, the request and reply bodies
 * differ. */
static int phys_io(struct mdlmap_client *c, const char *vm, struct mdlmap_phys_iov *iov, size_t n, bool write)
{
    struct piece *p = calloc(MDLMAP_MAX_PHYS_RANGES, sizeof(*p));
    Mdlmap__V1__PhysRange *rs = write ? NULL : calloc(MDLMAP_MAX_PHYS_RANGES, sizeof(*rs));
    Mdlmap__V1__PhysRange **rp = write ? NULL : calloc(MDLMAP_MAX_PHYS_RANGES, sizeof(*rp));
    struct frame_range_view *rv = write ? NULL : calloc(MDLMAP_MAX_PHYS_RANGES, sizeof(*rv));
    Mdlmap__V1__PhysChunk *cs = write ? calloc(MDLMAP_MAX_PHYS_RANGES, sizeof(*cs)) : NULL;
    Mdlmap__V1__PhysChunk **cp = write ? calloc(MDLMAP_MAX_PHYS_RANGES, sizeof(*cp)) : NULL;
    size_t ri = 0, ro = 0, k, failed = SIZE_MAX;
    int rc = p && (write ? cs && cp : rs && rp && rv) ? 0 : -ENOMEM;
    for (size_t i = 0; i < n; i++)
        iov[i].status = 0;
    while (rc == 0 && (k = next_batch(iov, n, &ri, &ro, p)) > 0) {
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
        Mdlmap__V1__PhysReadRequest rr = MDLMAP__V1__PHYS_READ_REQUEST__INIT;
        Mdlmap__V1__PhysWriteRequest wr = MDLMAP__V1__PHYS_WRITE_REQUEST__INIT;
        for (size_t j = 0; j < k; j++) {
            uint64_t gpa = iov[p[j].idx].gpa + p[j].off;
            if (write) {
                mdlmap__v1__phys_chunk__init(&cs[j]);
                cs[j].gpa = gpa;
                cs[j].data.data = (uint8_t *)iov[p[j].idx].buf + p[j].off;
                cs[j].data.len = p[j].len;
                cp[j] = &cs[j];
            } else {
                mdlmap__v1__phys_range__init(&rs[j]);
                rs[j].gpa = gpa;
                rs[j].length = p[j].len;
                rp[j] = &rs[j];
            }
        }
        if (write) {
            wr.vm_name = str(vm);
            wr.n_chunks = k;
            wr.chunks = cp;
            env.body_case = BODY(PHYS_WRITE);
            env.phys_write = &wr;
        } else {
            rr.vm_name = str(vm);
            rr.n_ranges = k;
            rr.ranges = rp;
            env.body_case = BODY(PHYS_READ);
            env.phys_read = &rr;
        }
        resp = NULL;
        if (write)
            rc = call_expect(c, &env, &resp, BODY(PHYS_WRITE_REPLY), NULL);
        else
            rc = call_phys_read(c, &env, rv, k); /* checks one range per range asked */
        if (rc == 0 && write && resp->phys_write_reply->n_status != k)
            rc = -EPROTO; /* one status per range, in order */
        for (size_t j = 0; rc == 0 && j < k; j++) {
            int32_t st = write ? resp->phys_write_reply->status[j] : rv[j].status;
            if (st)
                piece_failed(iov, &p[j], st, &failed);
            else if (!write && rv[j].len != p[j].len)
                rc = -EPROTO;
            else if (!write)
                memcpy((uint8_t *)iov[p[j].idx].buf + p[j].off, rv[j].data, p[j].len);
        }
        frame_envelope_free(resp);
    }
    free(p);
    free(rs);
    free(rp);
    free(rv);
    free(cs);
    free(cp);
    return phys_finish(c, iov, failed, rc);
}

int mdlmap_client_phys_read(struct mdlmap_client *c, const char *vm, struct mdlmap_phys_iov *iov, size_t n)
{
    return phys_io(c, vm, iov, n, false);
}

int mdlmap_client_phys_write(struct mdlmap_client *c, const char *vm, struct mdlmap_phys_iov *iov, size_t n)
{
    return phys_io(c, vm, iov, n, true);
}

void mdlmap_ram_release(struct mdlmap_ram *ram)
{
    for (unsigned i = 0; i < ram->n; i++)
        if (ram->r[i].ptr)
            munmap(ram->r[i].ptr, (size_t)ram->r[i].size);
    ram->n = 0;
}

/* Map what a PhysMapResponse describes; every field is checked first. */
static int ram_map(struct mdlmap_ram *ram, const Mdlmap__V1__PhysMapResponse *pm, const struct usock_fds *fds,
                   bool writable)
{
    if (fds->dropped || pm->n_regions > fds->n || pm->n_regions > USOCK_MAX_FDS)
        return -EPROTO;
    for (size_t i = 0; i < pm->n_regions; i++) {
        const Mdlmap__V1__RamRegion *r = pm->regions[i];
        if (r->fd_index >= fds->n || !r->size || (r->size & 4095) || (r->fd_offset & 4095) ||
            r->gpa + r->size < r->gpa || r->size > SIZE_MAX)
            return -EPROTO;
        void *p = mmap(NULL, (size_t)r->size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED,
                       fds->fd[r->fd_index], (off_t)r->fd_offset);
        if (p == MAP_FAILED)
            return -errno;
        ram->r[ram->n++] = (struct mdlmap_ram_region){ r->gpa, r->size, p };
    }
    return 0;
}

int mdlmap_client_phys_map(struct mdlmap_client *c, const char *vm, bool writable, struct mdlmap_ram *ram)
{
    memset(ram, 0, sizeof(*ram));
    ram->writable = writable;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
    Mdlmap__V1__PhysMapRequest rq = MDLMAP__V1__PHYS_MAP_REQUEST__INIT;
    rq.vm_name = str(vm);
    rq.writable = writable;
    env.body_case = BODY(PHYS_MAP);
    env.phys_map = &rq;
    struct usock_fds fds = { .n = 0 };
    int rc = call_expect(c, &env, &resp, BODY(PHYS_MAP_REPLY), &fds);
    if (rc == 0)
        rc = ram_map(ram, resp->phys_map_reply, &fds, writable);
    if (rc < 0)
        mdlmap_ram_release(ram);
    frame_envelope_free(resp);
    usock_fds_close(&fds); /* the mappings keep the memory */
    return rc;
}

uint8_t *mdlmap_ram_ptr(const struct mdlmap_ram *ram, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < ram->n; i++) {
        const struct mdlmap_ram_region *r = &ram->r[i];
        if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
            return r->ptr + (gpa - r->gpa);
    }
    return NULL;
}

/* ---- guest-virtual ------------------------------------------------------- */

int mdlmap_client_translate(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57,
                            const uint64_t *vaddrs, size_t n, struct mdlmap_translation *out)
{
    for (size_t i = 0; i < n;) {
        size_t k = n - i > MDLMAP_MAX_TRANSLATE ? MDLMAP_MAX_TRANSLATE : n - i;
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
        Mdlmap__V1__TranslateRequest rq = MDLMAP__V1__TRANSLATE_REQUEST__INIT;
        rq.vm_name = str(vm);
        rq.cr3 = cr3;
        rq.la57 = la57;
        rq.n_vaddrs = k;
        rq.vaddrs = (uint64_t *)(vaddrs + i);
        env.body_case = BODY(TRANSLATE);
        env.translate = &rq;
        int rc = call_expect(c, &env, &resp, BODY(TRANSLATE_REPLY), NULL);
        if (rc == 0 && resp->translate_reply->n_results != k)
            rc = -EPROTO;
        for (size_t j = 0; rc == 0 && j < k; j++) {
            const Mdlmap__V1__Translation *t = resp->translate_reply->results[j];
            out[i + j] = (struct mdlmap_translation){ t->status, t->gpa, t->page_size, t->level,
                                                      t->writable, t->user, t->nx };
        }
        frame_envelope_free(resp);
        if (rc < 0)
            return rc;
        i += k;
    }
    return 0;
}

/* One chunk of a virtual read or write: bytes done (<= n) and the fault. */
static int virt_chunk(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57, uint64_t vaddr,
                      uint8_t *rbuf, const uint8_t *wbuf, size_t n, size_t *got, uint64_t *fault)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
    Mdlmap__V1__VirtReadRequest rr = MDLMAP__V1__VIRT_READ_REQUEST__INIT;
    Mdlmap__V1__VirtWriteRequest wr = MDLMAP__V1__VIRT_WRITE_REQUEST__INIT;
    if (rbuf) {
        rr.vm_name = str(vm);
        rr.cr3 = cr3;
        rr.la57 = la57;
        rr.vaddr = vaddr;
        rr.length = (uint32_t)n;
        env.body_case = BODY(VIRT_READ);
        env.virt_read = &rr;
    } else {
        wr.vm_name = str(vm);
        wr.cr3 = cr3;
        wr.la57 = la57;
        wr.vaddr = vaddr;
        wr.data.data = (uint8_t *)wbuf;
        wr.data.len = n;
        env.body_case = BODY(VIRT_WRITE);
        env.virt_write = &wr;
    }
    int want = rbuf ? BODY(VIRT_READ_REPLY) : BODY(VIRT_WRITE_REPLY);
    int rc = call_expect(c, &env, &resp, want, NULL);
    *got = 0;
    if (rc == 0 || (rc == -EREMOTEIO && resp && (int)resp->body_case == want)) {
        size_t k = rbuf ? resp->virt_read_reply->data.len : resp->virt_write_reply->written;
        *fault = rbuf ? resp->virt_read_reply->fault_vaddr : resp->virt_write_reply->fault_vaddr;
        if (k > n || (rc == 0 && k != n))
            rc = -EPROTO; /* more than asked, or short without a fault */
        else if (rbuf && k)
            memcpy(rbuf, resp->virt_read_reply->data.data, k); /* an empty bytes field decodes as NULL */
        if (rc != -EPROTO)
            *got = k;
    }
    frame_envelope_free(resp);
    return rc;
}

static int virt_io(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57, uint64_t vaddr,
                   uint8_t *rbuf, const uint8_t *wbuf, size_t len, size_t *done, uint64_t *fault_vaddr)
{
    size_t d = 0;
    uint64_t fault = 0;
    int rc = 0;
    while (rc == 0 && d < len) {
        size_t n = len - d > MDLMAP_MAX_IO_CHUNK ? MDLMAP_MAX_IO_CHUNK : len - d, got;
        rc = virt_chunk(c, vm, cr3, la57, vaddr + d, rbuf ? rbuf + d : NULL, wbuf ? wbuf + d : NULL, n, &got,
                        &fault);
        d += got;
    }
    if (done)
        *done = d;
    if (fault_vaddr)
        *fault_vaddr = rc == -EREMOTEIO ? fault : 0;
    return rc;
}

int mdlmap_client_virt_read(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57, uint64_t vaddr,
                            void *buf, size_t len, size_t *done, uint64_t *fault_vaddr)
{
    return virt_io(c, vm, cr3, la57, vaddr, buf, NULL, len, done, fault_vaddr);
}

int mdlmap_client_virt_write(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57, uint64_t vaddr,
                             const void *buf, size_t len, size_t *done, uint64_t *fault_vaddr)
{
    return virt_io(c, vm, cr3, la57, vaddr, NULL, buf, len, done, fault_vaddr);
}

/* ---- QEMU ---------------------------------------------------------------- */

int mdlmap_client_vcpu_state(struct mdlmap_client *c, const char *vm, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VcpuStateRequest rq = MDLMAP__V1__VCPU_STATE_REQUEST__INIT;
    rq.vm_name = str(vm);
    env.body_case = BODY(VCPU_STATE);
    env.vcpu_state = &rq;
    return call_expect(c, &env, resp, BODY(VCPU_STATE_REPLY), NULL);
}

int mdlmap_client_run_state(struct mdlmap_client *c, const char *vm, int op, bool *running, char *status,
                            size_t len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
    Mdlmap__V1__RunStateRequest rq = MDLMAP__V1__RUN_STATE_REQUEST__INIT;
    rq.vm_name = str(vm);
    rq.op = (Mdlmap__V1__RunStateRequest__Op)op;
    env.body_case = BODY(RUN_STATE);
    env.run_state = &rq;
    int rc = call_expect(c, &env, &resp, BODY(RUN_STATE_REPLY), NULL);
    if (rc == 0 && running)
        *running = resp->run_state_reply->running;
    if (rc == 0 && status && len)
        snprintf(status, len, "%s", str(resp->run_state_reply->qemu_status));
    frame_envelope_free(resp);
    return rc;
}

/* ---- events -------------------------------------------------------------- */

int mdlmap_client_subscribe(struct mdlmap_client *c, const int *types, size_t n, const char *vm,
                            uint64_t *next_seq)
{
    Mdlmap__V1__EventType *t = calloc(n ? n : 1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        t[i] = (Mdlmap__V1__EventType)types[i];
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
    Mdlmap__V1__SubscribeRequest rq = MDLMAP__V1__SUBSCRIBE_REQUEST__INIT;
    rq.vm_name = str(vm);
    rq.n_types = n;
    rq.types = t;
    env.body_case = BODY(SUBSCRIBE);
    env.subscribe = &rq;
    int rc = call_expect(c, &env, &resp, BODY(SUBSCRIBE_REPLY), NULL);
    if (rc == 0 && next_seq)
        *next_seq = resp->subscribe_reply->next_seq;
    frame_envelope_free(resp);
    free(t);
    return rc;
}

int mdlmap_client_next_event(struct mdlmap_client *c, int timeout_ms, mdl_envelope **ev)
{
    *ev = NULL;
    if (c->evq_n) {
        *ev = c->evq[c->evq_head];
        c->evq_head = (c->evq_head + 1) % MDLMAP_CLIENT_EVENT_QUEUE;
        c->evq_n--;
        return 0;
    }
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    int pr = poll(&pfd, 1, timeout_ms);
    if (pr < 0)
        return -errno;
    if (pr == 0)
        return -ETIMEDOUT;
    int rc = frame_read_fd(c->fd, ev);
    if (rc < 0)
        return rc;
    if ((*ev)->body_case != BODY(EVENT)) {
        /* no request is outstanding: only hostd's error before a close */
        set_failure(c, (*ev)->status, (*ev)->detail);
        rc = (*ev)->status ? -EREMOTEIO : -EPROTO;
        frame_envelope_free(*ev);
        *ev = NULL;
    }
    return rc;
}

/* ---- VMs ----------------------------------------------------------------- */

int mdlmap_client_vm_add(struct mdlmap_client *c, const Mdlmap__V1__VmSpec *spec)
{
    Mdlmap__V1__VmSpec s = *spec;
    s.name = str(s.name);
    s.socket = str(s.socket);
    s.qmp = str(s.qmp);
    s.user = str(s.user);
    s.group = str(s.group);
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmAddRequest rq = MDLMAP__V1__VM_ADD_REQUEST__INIT;
    rq.vm = &s;
    env.body_case = BODY(VM_ADD);
    env.vm_add = &rq;
    return call_simple(c, &env, BODY(VM_ADD_REPLY));
}

int mdlmap_client_vm_remove(struct mdlmap_client *c, const char *name)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmRemoveRequest rq = MDLMAP__V1__VM_REMOVE_REQUEST__INIT;
    rq.name = str(name);
    env.body_case = BODY(VM_REMOVE);
    env.vm_remove = &rq;
    return call_simple(c, &env, BODY(VM_REMOVE_REPLY));
}

int mdlmap_client_vm_list(struct mdlmap_client *c, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmListRequest rq = MDLMAP__V1__VM_LIST_REQUEST__INIT;
    env.body_case = BODY(VM_LIST);
    env.vm_list = &rq;
    return call_expect(c, &env, resp, BODY(VM_LIST_REPLY), NULL);
}

int mdlmap_client_grants(struct mdlmap_client *c, const char *vm_name, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListGrantsRequest rq = MDLMAP__V1__LIST_GRANTS_REQUEST__INIT;
    rq.vm_name = str(vm_name);
    env.body_case = BODY(LIST_GRANTS);
    env.list_grants = &rq;
    return call_expect(c, &env, resp, BODY(LIST_GRANTS_REPLY), NULL);
}
