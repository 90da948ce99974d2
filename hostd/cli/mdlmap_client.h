/* Small blocking client for the mdlmap-hostd host API socket, reusable by
 * tools. Functions return 0 or a negative errno; a request answered with a
 * failure status returns -EREMOTEIO and fills the client's last status/detail.
 *
 * Every answer is checked against its request before it is used: the body
 * must be the matching reply, and every count and length in it must be what
 * was asked for (or, for reads that may stop early, no more): anything else
 * is -EPROTO. A frame is at most MDLMAP_MAX_FRAME bytes, so no answer makes
 * the library hold more than that at once (plus the bounded event queue).
 *
 * Events and responses. After mdlmap_client_subscribe() hostd pushes one
 * Envelope per event on the same connection, between the responses. The rule
 * that keeps them apart: an Envelope whose body is `event` is never a
 * response, and a response never has that body. While a call waits for its
 * response, events that arrive first are queued in the client (at most
 * MDLMAP_CLIENT_EVENT_QUEUE; more are dropped and counted in
 * events_dropped); mdlmap_client_next_event() hands out the queued ones
 * first, then reads the socket. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "usock.h"

#define MDLMAP_DEFAULT_API "/run/mdlmap/api.sock"
#define MDLMAP_CLIENT_EVENT_QUEUE 64
/* Protocol limits a request must respect (proto/mdlmap.proto): the library
 * splits longer calls into several requests. */
#define MDLMAP_MAX_PHYS_RANGES 1024u
#define MDLMAP_MAX_TRANSLATE 4096u

struct mdlmap_client {
    int fd;
    uint64_t next_id;
    int32_t last_status;
    char last_detail[256];
    /* events read while waiting for a response (a ring) */
    mdl_envelope *evq[MDLMAP_CLIENT_EVENT_QUEUE];
    unsigned evq_head, evq_n;
    uint64_t events_dropped;
    /* PhysRead replies are read into this one buffer and decoded in place
     * (frame_view_phys_read): the data is copied once, into the caller's */
    uint8_t *rbuf;
    size_t rcap;
};

/* path NULL: $MDLMAP_API or MDLMAP_DEFAULT_API. */
int mdlmap_client_open(struct mdlmap_client *c, const char *path);
void mdlmap_client_close(struct mdlmap_client *c);
/* Send req (request_id and version are filled in) and wait for its response
 * (*resp: free with frame_envelope_free). -EREMOTEIO when status != SUCCESS
 * (*resp is still returned). */
int mdlmap_client_call(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp);
/* The same, collecting file descriptors passed with the response (SCM_RIGHTS)
 * into fds (the caller closes them; NULL: closed). */
int mdlmap_client_call_fds(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp, struct usock_fds *fds);

/* --- mappings made by guests ------------------------------------------- */
int mdlmap_client_list(struct mdlmap_client *c, const char *vm_name, mdl_envelope **resp);
/* ListMappings with its lookups (0: no filter): the mapping whose buffer as
 * the guest was told it contains guest_address, the mapping map_handle. */
int mdlmap_client_list_filter(struct mdlmap_client *c, const char *vm_name, uint64_t guest_address,
                              uint64_t map_handle, mdl_envelope **resp);
/* The mapping whose buffer (as the guest was told it) contains guest_address,
 * in VM vm_name (NULL: any VM): 0 and *info (a copy; strings are not kept),
 * -ENOENT when none does. */
struct mdlmap_mapping {
    uint64_t map_handle, mdl_handle, address, guest_address, guest_cid;
    uint32_t byte_offset, byte_count, page_count;
    bool read_only, user_mode;
    char vm_name[64];
};
int mdlmap_client_find(struct mdlmap_client *c, const char *vm_name, uint64_t guest_address,
                       struct mdlmap_mapping *info);
/* The same by map handle. */
int mdlmap_client_find_handle(struct mdlmap_client *c, uint64_t map_handle, struct mdlmap_mapping *info);
int mdlmap_client_stats(struct mdlmap_client *c, mdl_envelope **resp);
/* Read up to len bytes (any size: split into MDLMAP_MAX_IO_CHUNK requests). */
int mdlmap_client_read(struct mdlmap_client *c, uint64_t handle, uint64_t offset, void *buf, size_t len);
int mdlmap_client_write(struct mdlmap_client *c, uint64_t handle, uint64_t offset, const void *buf, size_t len);

/* --- a VM's whole guest memory (VMs with introspect=on) ----------------- */
/* One range of a vectored physical read or write. status: per range, 0 or
 * the NTSTATUS hostd gave it (a range that failed wrote nothing). */
struct mdlmap_phys_iov {
    uint64_t gpa;
    void *buf;
    size_t len;
    int32_t status;
};
/* Any number of ranges of any length: packed into requests of at most
 * MDLMAP_MAX_PHYS_RANGES ranges and MDLMAP_MAX_IO_CHUNK bytes. 0 when every
 * range succeeded; -EREMOTEIO when one failed (its status in iov[i].status
 * and last_status; the others were still done); other -errno. */
int mdlmap_client_phys_read(struct mdlmap_client *c, const char *vm, struct mdlmap_phys_iov *iov, size_t n);
int mdlmap_client_phys_write(struct mdlmap_client *c, const char *vm, struct mdlmap_phys_iov *iov, size_t n);

/* The VM's RAM regions, received as fds and mapped into this process. */
struct mdlmap_ram_region {
    uint64_t gpa, size;
    uint8_t *ptr; /* the region's first byte here (MAP_SHARED) */
};
struct mdlmap_ram {
    struct mdlmap_ram_region r[USOCK_MAX_FDS];
    unsigned n;
    bool writable;
};
/* writable needs the write right. The mappings stay valid after the VM goes
 * away; release them with mdlmap_ram_release. */
int mdlmap_client_phys_map(struct mdlmap_client *c, const char *vm, bool writable, struct mdlmap_ram *ram);
void mdlmap_ram_release(struct mdlmap_ram *ram);
/* Pointer to [gpa, gpa + len) when it lies wholly in one region, else NULL. */
uint8_t *mdlmap_ram_ptr(const struct mdlmap_ram *ram, uint64_t gpa, uint64_t len);

/* Page-table walks: n results (any n; split into MDLMAP_MAX_TRANSLATE
 * requests). Per-address failures are in out[i].status, not the return. */
struct mdlmap_translation {
    int32_t status;
    uint64_t gpa, page_size;
    uint32_t level;
    bool writable, user, nx;
};
int mdlmap_client_translate(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57,
                            const uint64_t *vaddrs, size_t n, struct mdlmap_translation *out);
/* Guest-virtual read/write of any length (split into MDLMAP_MAX_IO_CHUNK).
 * *done: bytes done before a page that does not translate (then -EREMOTEIO,
 * its status in last_status and its address in *fault_vaddr); may be NULL. */
int mdlmap_client_virt_read(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57, uint64_t vaddr,
                            void *buf, size_t len, size_t *done, uint64_t *fault_vaddr);
int mdlmap_client_virt_write(struct mdlmap_client *c, const char *vm, uint64_t cr3, bool la57, uint64_t vaddr,
                             const void *buf, size_t len, size_t *done, uint64_t *fault_vaddr);

/* --- QEMU (VMs with qmp=) ----------------------------------------------- */
/* *resp has a vcpu_state_reply. */
int mdlmap_client_vcpu_state(struct mdlmap_client *c, const char *vm, mdl_envelope **resp);
/* op: MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY / PAUSE / RESUME. running and
 * status (may be NULL; status gets at most len - 1 chars) after the op. */
int mdlmap_client_run_state(struct mdlmap_client *c, const char *vm, int op, bool *running, char *status,
                            size_t len);

/* --- events ------------------------------------------------------------- */
/* types: n EventType values (n 0: all); vm NULL: all VMs. *next_seq may be NULL. */
int mdlmap_client_subscribe(struct mdlmap_client *c, const int *types, size_t n, const char *vm,
                            uint64_t *next_seq);
/* The next event (*ev has body event; free it): 0, -ETIMEDOUT after
 * timeout_ms (-1: wait forever), -ECONNRESET when hostd closed, -errno. */
int mdlmap_client_next_event(struct mdlmap_client *c, int timeout_ms, mdl_envelope **ev);

/* --- VMs at run time ---------------------------------------------------- */
/* spec: the VmSpec fields (strings may be NULL). Needs the admin right. */
int mdlmap_client_vm_add(struct mdlmap_client *c, const Mdlmap__V1__VmSpec *spec);
int mdlmap_client_vm_remove(struct mdlmap_client *c, const char *name);
/* *resp has a vm_list_reply. */
int mdlmap_client_vm_list(struct mdlmap_client *c, mdl_envelope **resp);
/* Cross-VM grants (vm_name: granter or grantee; NULL: all): *resp has a list_grants_reply. */
int mdlmap_client_grants(struct mdlmap_client *c, const char *vm_name, mdl_envelope **resp);
