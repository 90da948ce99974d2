/* libmdlmap: memory descriptor lists (MDLs) of guest pages, mapped by
 * mdlmap-hostd into a host address space, with the failure semantics of the
 * Windows routines (see wdm_compat.h for the Windows names, README.md for the
 * bug check / exception / verifier code table).
 *
 * Two layers:
 *  - this header: plain functions that return an NTSTATUS and never bug check
 *    or raise (mdl_probe_and_lock, mdl_map, ...), plus the session, page
 *    pinner, IRQL, exception and bug check facilities;
 *  - wdm_compat.h: the Windows routines built on top, which bug check, raise
 *    or return NULL exactly as documented for Windows.
 *
 * The address a map routine returns is a HOST virtual address (the start of
 * hostd's mapping plus ByteOffset). In the guest it is an opaque token: it is
 * never dereferenceable here, only passed back to unmap or handed to a host
 * consumer.
 *
 * The wire protocol (protobuf-c envelopes) stays behind the library: no public
 * header includes a *.pb-c.h, so applications compile without the generated
 * code; they only link -lprotobuf-c (see README.md). */
#pragma once
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- statuses */
typedef int32_t mdl_status;   /* an NTSTATUS */
#define MDL_NT(x) ((mdl_status)(uint32_t)(x))
#define MDL_STATUS_SUCCESS                MDL_NT(0x00000000u)
/* Success, with the outcome still to come: an asynchronous unmap was sent
 * (mdl_session_set_async_unmap). */
#define MDL_STATUS_PENDING                MDL_NT(0x00000103u)
#define MDL_STATUS_UNSUCCESSFUL           MDL_NT(0xC0000001u)
#define MDL_STATUS_NOT_IMPLEMENTED        MDL_NT(0xC0000002u)
#define MDL_STATUS_ACCESS_VIOLATION       MDL_NT(0xC0000005u)
#define MDL_STATUS_INVALID_HANDLE         MDL_NT(0xC0000008u)
#define MDL_STATUS_INVALID_PARAMETER      MDL_NT(0xC000000Du)
#define MDL_STATUS_INVALID_DEVICE_REQUEST MDL_NT(0xC0000010u)
#define MDL_STATUS_NO_MEMORY              MDL_NT(0xC0000017u)
#define MDL_STATUS_CONFLICTING_ADDRESSES  MDL_NT(0xC0000018u)
#define MDL_STATUS_NOT_MAPPED_VIEW        MDL_NT(0xC0000019u)
#define MDL_STATUS_ACCESS_DENIED          MDL_NT(0xC0000022u)
#define MDL_STATUS_NOT_LOCKED             MDL_NT(0xC000002Au)
#define MDL_STATUS_INVALID_PARAMETER_MIX  MDL_NT(0xC0000030u)
#define MDL_STATUS_QUOTA_EXCEEDED         MDL_NT(0xC0000044u)
#define MDL_STATUS_INVALID_PAGE_PROTECTION MDL_NT(0xC0000045u)
#define MDL_STATUS_REVISION_MISMATCH      MDL_NT(0xC0000059u)
#define MDL_STATUS_INSUFFICIENT_RESOURCES MDL_NT(0xC000009Au)
#define MDL_STATUS_DEVICE_NOT_READY       MDL_NT(0xC00000A3u)
#define MDL_STATUS_NOT_SUPPORTED          MDL_NT(0xC00000BBu)
#define MDL_STATUS_INVALID_ADDRESS        MDL_NT(0xC0000141u)
#define MDL_STATUS_NOT_FOUND              MDL_NT(0xC0000225u)
/* mdlmap's own: a grant was revoked (by its granter, or with its MDL,
 * program or VM). */
#define MDL_STATUS_GRANT_REVOKED          MDL_NT(0xE0010001u)
#define MDL_SUCCESS(s) ((mdl_status)(s) >= 0)

/* "STATUS_ACCESS_VIOLATION" or "STATUS_0x...". */
const char *mdl_status_name(mdl_status s);
/* Status and hostd's detail text of the calling thread's last failed call. */
mdl_status mdl_last_status(void);
const char *mdl_last_detail(void);
void mdl_set_last_status(mdl_status s, const char *detail);

/* ------------------------------------------------------------------- MDL */
#define MDL_PAGE_SHIFT 12
#define MDL_PAGE_SIZE 4096u
#define MDL_PAGE_MASK ((uintptr_t)MDL_PAGE_SIZE - 1)
/* Pages spanned by [va, va+size): the ADDRESS_AND_SIZE_TO_SPAN_PAGES rule. */
#define MDL_SPAN_PAGES(va, size) \
    ((size_t)((((uintptr_t)(va) & MDL_PAGE_MASK) + (size_t)(size) + MDL_PAGE_MASK) >> MDL_PAGE_SHIFT))

/* MdlFlags (the values wdm.h documents). */
#define MDL_F_MAPPED_TO_SYSTEM_VA     0x0001
#define MDL_F_PAGES_LOCKED            0x0002
#define MDL_F_SOURCE_IS_NONPAGED_POOL 0x0004
#define MDL_F_ALLOCATED_FIXED_SIZE    0x0008
#define MDL_F_PARTIAL                 0x0010
#define MDL_F_PARTIAL_HAS_BEEN_MAPPED 0x0020
#define MDL_F_IO_PAGE_READ            0x0040
#define MDL_F_WRITE_OPERATION         0x0080
#define MDL_F_LOCKED_PAGE_TABLES      0x0100
#define MDL_F_FREE_EXTRA_PTES         0x0200
#define MDL_F_DESCRIBES_AWE           0x0400
#define MDL_F_IO_SPACE                0x0800
#define MDL_F_NETWORK_HEADER          0x1000
#define MDL_F_MAPPING_CAN_FAIL        0x2000
#define MDL_F_ALLOCATED_MUST_SUCCEED  0x4000
#define MDL_F_INTERNAL                0x8000

/* Laid out as the Windows x64 MDL; the PFN array (uint64_t per page) follows
 * the struct immediately, as MmGetMdlPfnArray expects. Hidden bookkeeping
 * (hostd handles, pins, mappings) lives in front of it, see mdl_internal.h. */
struct mdl {
    struct mdl *next;
    int16_t size;               /* bytes of MDL + PFN array (saturates at 0x7fff) */
    int16_t flags;              /* MDL_F_* */
    void *process;              /* unused (NULL) */
    void *mapped_system_va;     /* host address of the system mapping (+ByteOffset) */
    void *start_va;             /* page-aligned guest VA */
    uint32_t byte_count;
    uint32_t byte_offset;
};
static inline uint64_t *mdl_pfns(struct mdl *m) { return (uint64_t *)(m + 1); }
static inline size_t mdl_page_count(const struct mdl *m)
{
    return MDL_SPAN_PAGES((uintptr_t)m->start_va + m->byte_offset, m->byte_count);
}

/* IoAllocateMdl: NULL for length 0 or above MDL_MAX_BYTES, or on no memory. */
#define MDL_MAX_BYTES 0xFFFFF000u
struct mdl *mdl_alloc(void *va, uint32_t length);
/* IoFreeMdl without checks (the compat layer runs the verifier first). */
void mdl_free(struct mdl *m);

enum mdl_mode { MDL_KERNEL_MODE = 0, MDL_USER_MODE = 1 };
enum mdl_lock_op { MDL_IO_READ = 0, MDL_IO_WRITE = 1, MDL_IO_MODIFY = 2 };
enum mdl_cache {
    MDL_NON_CACHED = 0, MDL_CACHED = 1, MDL_WRITE_COMBINED = 2, MDL_HW_COHERENT_CACHED = 3,
    MDL_NON_CACHED_UNORDERED = 4, MDL_USWC_CACHED = 5, MDL_CACHE_MAX = 6
};
#define MDL_PRIORITY_LOW 0u
#define MDL_PRIORITY_NORMAL 16u
#define MDL_PRIORITY_HIGH 32u
#define MDL_MAPPING_NO_WRITE 0x80000000u
#define MDL_MAPPING_NO_EXECUTE 0x40000000u

/* ------------------------------------------------------- page pinners */
/* Pins the pages of a buffer long-term and resolves their frame numbers. */
struct mdl_pin {
    void *cookie;           /* pinner's own state */
    int pass_fd;            /* >= 0: send with the LockRequest (agent daemon) */
    uint64_t fd_offset;     /* offset of the first page in pass_fd */
    bool pfns_from_peer;    /* the LockResponse carries the frames */
};
struct mdl_pinner {
    /* Pin npages pages from page-aligned va; fill pfns (unless pfns_from_peer). 0 or -errno. */
    int (*pin)(struct mdl_pinner *p, uintptr_t va, size_t npages, uint64_t *pfns, struct mdl_pin *out);
    void (*unpin)(struct mdl_pinner *p, struct mdl_pin *pin);
};
/* io_uring buffer registration + /proc/self/pagemap (guest, root). */
struct mdl_pinner *mdl_pinner_iouring(void);
/* A linear region: pfn = base_pfn + (va - base) / 4096 (host tests, the
 * harness's memfd guest RAM). Pins nothing. */
struct mdl_pinner_linear {
    struct mdl_pinner pinner;
    uintptr_t base;
    size_t len;
    uint64_t base_pfn;
};
void mdl_pinner_linear_init(struct mdl_pinner_linear *l, void *base, size_t len, uint64_t base_pfn);
/* Buffers handed to the agent daemon: pages of memfd buffers from mdl_buffer_alloc. */
struct mdl_pinner *mdl_pinner_agent(void);
/* A page-aligned buffer in a memfd (needed to go through the agent daemon). */
void *mdl_buffer_alloc(size_t size);
void mdl_buffer_free(void *buf);
/* The memfd and offset holding va, or -ENOENT. */
int mdl_buffer_lookup(uintptr_t va, size_t len, int *fd, uint64_t *offset);

/* ------------------------------------------------------------ sessions */
/* A connection to hostd (directly or through the agent daemon). hostd treats
 * each session as one process: what it still holds is released when the
 * session's connection closes. The open routines send Hello and return 0 or a
 * negative errno. */
struct mdl_session;
/* AF_VSOCK to hostd (CID 2 port 1100). Only inside a guest VM. pinner NULL:
 * io_uring (root). */
int mdl_session_open_vsock(struct mdl_pinner *pinner, struct mdl_session **out);
/* The agent daemon's Unix socket (path NULL: MDL_AGENT_SOCKET), for
 * unprivileged programs; buffers must come from mdl_buffer_alloc. */
#define MDL_AGENT_SOCKET "/run/mdlmap-agent.sock"
int mdl_session_open_agent(const char *path, struct mdl_session **out);
/* A stream the caller already connected to hostd or to the agent daemon
 * (framing of docs/wire-protocol.md). Takes ownership of fd, which is closed
 * on failure too. can_pass_fds: fd is a Unix socket that can carry the memfd
 * of agent buffers. pinner NULL: io_uring. */
int mdl_session_open_fd(int fd, bool can_pass_fds, struct mdl_pinner *pinner,
                        struct mdl_session **out);
/* Close; with the verifier on, MDLs still locked/mapped are reported as bug
 * check 0x76 / 0xCB first (R12). */
void mdl_session_close(struct mdl_session *s);
/* The session the Windows routines use: set, or opened on first use from the
 * environment (MDLMAP_AGENT_SOCKET: via the agent daemon; else AF_VSOCK). */
struct mdl_session *mdl_default_session(void);
void mdl_set_default_session(struct mdl_session *s);
/* The default session if one is set or open, without connecting. */
struct mdl_session *mdl_default_session_peek(void);
/* UserMode target: the host consumer's registered name (env MDLMAP_CONSUMER). */
void mdl_session_set_consumer(struct mdl_session *s, const char *name);
const char *mdl_session_consumer(const struct mdl_session *s);
uint64_t mdl_session_guest_cid(const struct mdl_session *s);
/* Asynchronous unmap (issue 8): mdl_unmap / MmUnmapLockedPages send the
 * UnmapRequest and return without waiting for hostd; the reply is read and
 * checked behind the next request on the session (pipelined), by
 * mdl_session_flush, or at close. A failure hostd reports that late goes to
 * the verifier (bug check 0xC4, MDL_VF_UNMAP_FAILED_LATE) or, verifier off,
 * into mdl_last_status() of the thread that collected it. Errors the library
 * detects itself (no such mapping of the MDL) stay immediate. Off by default;
 * a session starts with it on when env MDLMAP_ASYNC_UNMAP=1 at open
 * (docs/semantics.md). */
void mdl_session_set_async_unmap(struct mdl_session *s, bool on);
/* Collect the reply of an asynchronous unmap still outstanding (reporting a
 * failure as above). MDL_STATUS_SUCCESS, or the transport failure. */
mdl_status mdl_session_flush(struct mdl_session *s);

/* ------------------------------------------- plain operations (no raise) */
struct mdl_map_params {
    enum mdl_mode mode;
    int cache;                  /* enum mdl_cache */
    uint64_t requested_address; /* UserMode only */
    uint32_t priority;          /* MDL_PRIORITY_* | MDL_MAPPING_NO_* */
    bool bug_check_on_failure;  /* passed to hostd, informative */
};
struct mdl_map_info {           /* what hostd answered for a mapping */
    uint64_t address, base_address, map_handle;
    uint32_t page_count, vma_count;
    bool read_only;
    int cache;
    enum mdl_mode mode;
};
/* Probe (access per op), pin, resolve frames, register with hostd (LockRequest),
 * set MDL_F_PAGES_LOCKED. Inaccessible buffer: STATUS_ACCESS_VIOLATION. */
mdl_status mdl_probe_and_lock(struct mdl_session *s, struct mdl *m, enum mdl_lock_op op);
/* Release any mappings, UnlockRequest, unpin, clear flags. */
mdl_status mdl_unlock(struct mdl *m);
mdl_status mdl_map(struct mdl *m, const struct mdl_map_params *p, struct mdl_map_info *out);
/* Unmap the mapping whose address is `address`. STATUS_NOT_MAPPED_VIEW if none. */
mdl_status mdl_unmap(struct mdl *m, uint64_t address);
/* Look up a live mapping of m by address (0: the system mapping). */
bool mdl_find_mapping(const struct mdl *m, uint64_t address, struct mdl_map_info *out);
uint64_t mdl_lock_handle(const struct mdl *m);
unsigned mdl_user_mapping_count(const struct mdl *m);

/* ------------------------------------------- cross-VM grants (no Windows analogue) */
/* A VM grants one peer VM (by CID) access to a locked MDL; the peer copies
 * between the grant and its own locked MDLs through hostd (one memcpy
 * between the two guests' pages). hostd must run with --sharing on; the
 * session must be a direct one (AF_VSOCK from a privileged port). See
 * docs/semantics.md for revocation. */
enum mdl_grant_access { MDL_GRANT_READ = 0, MDL_GRANT_READ_WRITE = 1 };
/* Grant peer_cid access to m (locked; READ_WRITE needs MDL_IO_WRITE or
 * MDL_IO_MODIFY) through m's session; *ref gets the grant reference. */
mdl_status mdl_grant(struct mdl *m, uint64_t peer_cid, enum mdl_grant_access access, uint64_t *ref);
/* Revoke a grant this session made (or, from a privileged port, any grant of this VM). */
mdl_status mdl_revoke(struct mdl_session *s, uint64_t ref);
/* One end of a copy: another VM's grant (granter_cid, ref), or mdl, an MDL
 * locked through the same session (granter_cid 0). offset: into the buffer. */
struct mdl_copy_end {
    uint64_t granter_cid;
    uint64_t ref;
    const struct mdl *mdl;
    uint64_t offset;
};
struct mdl_copy_op {
    struct mdl_copy_end src, dst;
    uint64_t length;
};
#define MDL_COPY_MAX_OPS 64u
/* Up to MDL_COPY_MAX_OPS copies; statuses[i] and copied[i] (either may be
 * NULL) get each op's status and bytes copied. Returns the request's status:
 * SUCCESS when hostd processed the batch (each op may still have failed). */
mdl_status mdl_grant_copy(struct mdl_session *s, const struct mdl_copy_op *ops, size_t n, mdl_status *statuses,
                          uint64_t *copied);
/* Revocation notices hostd pushed on the session (read with the replies of
 * later calls, never mistaken for one). Takes up to max, oldest first;
 * *dropped (may be NULL): notices lost since the session opened (more than
 * MDL_GRANT_NOTICES arrived untaken). */
#define MDL_GRANT_NOTICES 16u
struct mdl_grant_notice {
    uint64_t granter_cid, ref;
    char reason[64];
};
size_t mdl_session_grant_notices(struct mdl_session *s, struct mdl_grant_notice *out, size_t max,
                                 uint64_t *dropped);

/* Shared pools (docs/zero-copy-sharing.md): a file hostd creates for a pair
 * of VMs (--sharing-pool), attached to both as an ivshmem-plain device. What
 * one guest writes in data[] the other reads in place. Root only (sysfs). */
struct mdl_pool {
    void *base;                 /* the whole BAR */
    size_t map_len;
    uint8_t *data;              /* after hostd's header page */
    size_t data_size;
    char name[64], vm_a[64], vm_b[64];
};
/* Find and map the pool called name (NULL: the first one). 0, -ENOENT (no
 * such pool attached), or the errno of opening / mapping it. */
int mdl_pool_open(const char *name, struct mdl_pool *out);
void mdl_pool_close(struct mdl_pool *p);

/* ---------------------------------------------------------- IRQL */
#define MDL_PASSIVE_LEVEL 0
#define MDL_APC_LEVEL 1
#define MDL_DISPATCH_LEVEL 2
#define MDL_HIGH_LEVEL 15
uint8_t mdl_irql_get(void);
/* Bug check 0x9 IRQL_NOT_GREATER_OR_EQUAL if new < current. Returns old. */
uint8_t mdl_irql_raise(uint8_t new_irql);
/* Bug check 0xA IRQL_NOT_LESS_OR_EQUAL if new > current. */
void mdl_irql_lower(uint8_t new_irql);
/* Bug check 0xA if the current IRQL is above max. true when allowed. */
bool mdl_irql_check(uint8_t max, uintptr_t what, uintptr_t routine);

/* ------------------------------------------------------- bug checks */
#define MDL_BUGCHECK_EXIT 0xBC  /* exit status of a process stopped by a bug check */
#define MDL_EXCEPTION_EXIT 0xE0 /* exit status after an unhandled exception */
#define MDL_BUG_IRQL_NOT_GREATER_OR_EQUAL 0x09u
#define MDL_BUG_IRQL_NOT_LESS_OR_EQUAL 0x0Au
#define MDL_BUG_NO_MORE_SYSTEM_PTES 0x3Fu
#define MDL_BUG_PROCESS_HAS_LOCKED_PAGES 0x76u
#define MDL_BUG_DRIVER_VERIFIER_DETECTED_VIOLATION 0xC4u
#define MDL_BUG_DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS 0xCBu
struct mdl_bugcheck {
    uint32_t code;
    uint64_t p[4];
};
/* Handler: runs on every bug check. If it returns, the routine that bug
 * checked returns its failure value (NULL / nothing) - a test mode. NULL
 * handler: the default (print "*** BUGCHECK ...", _exit(MDL_BUGCHECK_EXIT)). */
typedef void (*mdl_bugcheck_fn)(const struct mdl_bugcheck *bc, void *ctx);
void mdl_set_bugcheck_handler(mdl_bugcheck_fn fn, void *ctx);
void mdl_bugcheck(uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3, uint64_t p4);
const char *mdl_bugcheck_name(uint32_t code);
/* Format "*** BUGCHECK 0x0000000A (0x..,0x..,0x..,0x..) NAME" into buf. */
void mdl_bugcheck_format(const struct mdl_bugcheck *bc, char *buf, size_t len);

/* ----------------------------------------------------- verifier (R11) */
/* On unless env MDLMAP_VERIFIER=0; mdl_verifier_set overrides. */
bool mdl_verifier_enabled(void);
void mdl_verifier_set(int on);  /* 1 on, 0 off, -1 back to the environment */
/* Subcodes (parameter 1 of bug check 0xC4). mdlmap's own numbering. */
enum mdl_verifier_sub {
    MDL_VF_NONE = 0,
    MDL_VF_MAP_UNLOCKED = 0x1001,       /* R1: map an MDL that is not locked */
    MDL_VF_FREE_MAPPED = 0x1002,        /* IoFreeMdl while mapped */
    MDL_VF_FREE_LOCKED = 0x1003,        /* IoFreeMdl while locked */
    MDL_VF_UNLOCK_NOT_LOCKED = 0x1004,  /* MmUnlockPages on a never-locked MDL */
    MDL_VF_MAP_TWICE_SYSTEM = 0x1005,   /* second system mapping of one MDL */
    MDL_VF_UNMAP_WRONG_ADDRESS = 0x1006,/* MmUnmapLockedPages address/MDL mismatch */
    MDL_VF_LOCK_TWICE = 0x1007,         /* MmProbeAndLockPages on a locked MDL */
    MDL_VF_UNLOCK_USER_MAPPED = 0x1008, /* MmUnlockPages with a UserMode mapping left */
    MDL_VF_UNMAP_FAILED_LATE = 0x1009,  /* hostd refused an asynchronous unmap (reported at the next call) */
};
enum mdl_verifier_op { MDL_VOP_FREE, MDL_VOP_LOCK, MDL_VOP_UNLOCK, MDL_VOP_MAP, MDL_VOP_UNMAP };
/* Decide whether op on m is a violation (pure; also used with the verifier off
 * to pick a failure status). arg: the mode for MAP, the address for UNMAP. */
enum mdl_verifier_sub mdl_verifier_check(const struct mdl *m, enum mdl_verifier_op op, uint64_t arg);
const char *mdl_verifier_sub_name(enum mdl_verifier_sub sub);
/* If enabled: bug check 0xC4 (sub, mdl, p3, p4); returns true if it was reported. */
bool mdl_verifier_report(enum mdl_verifier_sub sub, const struct mdl *m, uint64_t p3, uint64_t p4);
