/* MDL mapping engine: registered (locked) MDLs and their host mappings.
 * A KernelMode mapping reserves one contiguous host VA range (plus a trailing
 * PROT_NONE guard page) and maps every run of contiguous guest frames over it
 * from the region's memfd: zero copy, the bytes are the guest's pages.
 * Objects belong to an owner (VM + connection id); handles of another owner
 * are reported as unknown. Functions return 0 or a negative errno; the RPC
 * layer turns errnos into NTSTATUS (rpc_status.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "map_layout.h"
#include "memtable.h"
#include "map_leaks.h"

#define MAP_DEFAULT_VM_PAGES (1ull << 18)     /* 1 GiB of 4 KiB pages */
#define MAP_DEFAULT_GLOBAL_PAGES (1ull << 20) /* 4 GiB */

/* Priority flag bits (MapRequest.priority). */
#define MAP_FLAG_NOWRITE 0x80000000u
#define MAP_FLAG_NOEXEC 0x40000000u
#define MAP_FLAG_GUARDPTES 0x20000000u /* accepted; we always keep a guard page */
#define MAP_PRIO_VALUE_MASK 0x0000ffffu

enum map_prio { MAP_PRIO_LOW, MAP_PRIO_NORMAL, MAP_PRIO_HIGH };
enum map_mode { MAP_MODE_KERNEL = 0, MAP_MODE_USER = 1 };
#define MAP_CACHE_MAX 5 /* MmNonCached .. MmUSWCCached */

#define MAP_DEFAULT_CONSUMER_VMAS 32768u /* half of a process's default vm.max_map_count */

struct map_limits {
    uint64_t vm_page_quota;      /* 0: default */
    uint64_t global_page_quota;  /* 0: default */
    uint64_t max_vmas;           /* 0: derived from vm.max_map_count */
    uint64_t consumer_vmas;      /* VMAs UserMode maps may create in one consumer; 0: default */
    /* The process keeps shared memory out of its core dumps already
     * (coredump_filter): no MADV_DONTDUMP per mapping, one syscall less per map. */
    bool dumps_exclude_shared;
    /* The daemon's event bus: MDL_LOCKED/UNLOCKED, MAPPING_CREATED/REMOVED,
     * LEAK_RECORDED and QUOTA_REFUSED are published there. NULL: the engine
     * keeps a bus of its own that nobody subscribes to (tests, benchmarks). */
    struct events *events;
};

/* What the engine knows of a VM: its name and CID (for reports) and its
 * guest memory table (frames are validated and mapped through it). The
 * engine keeps its per-VM accounting in the struct map_vm it returns. */
struct map_vm_view {
    const char *name;
    uint64_t cid;
    const struct memtable *mem;  /* must outlive the map_vm */
    /* Tell the guest a per-VM alias of each mapping's address instead of
     * hostd's own (which would leak hostd's address-space layout). */
    bool alias_addresses;
};
struct map_vm;

struct map_owner {
    struct map_vm *vm;
    uint64_t conn_id;
};

/* Locked MDLs and mappings are the engine's own objects; others hold
 * pointers to them only as long as the engine says they live, and read them
 * through struct map_info. */
struct map_obj;

/* A snapshot of one mapping. Strings point into the engine's object and stay
 * valid while the mapping exists. */
struct map_info {
    uint64_t handle;
    uint64_t mdl_handle;
    const char *vm_name;
    uint64_t cid;
    uint64_t conn_id;            /* the owning guest connection */
    uint8_t *base;               /* page-aligned start (hostd VA for KernelMode) */
    size_t reserve_len;          /* bytes reserved from base, guard page included */
    uint64_t address;            /* base + byte_offset: the real address (hostd's or the consumer's) */
    uint64_t guest_address;      /* what the guest is told: address, or its per-VM alias */
    uint32_t byte_offset, byte_count;
    uint32_t page_count, runs;
    enum map_mode mode;
    uint32_t cache_type, priority;
    bool read_only;
    bool pending;                /* UserMode: waiting for the consumer's answer */
    const char *consumer;        /* UserMode: the consumer's name ("" for KernelMode) */
};

void map_obj_info(const struct map_obj *m, struct map_info *out);

typedef void (*map_done_fn)(void *ctx, int err, const struct map_obj *m, const char *detail);

/* A host consumer process (UserMode target), served by the host API. */
struct map_consumer_ops {
    /* Ask the consumer to map m (runs of region fds). 0 if the request was
     * queued; the answer comes through map_engine_user_complete(). */
    int (*map_into)(void *ctx, const struct map_obj *m, const struct map_run *runs, uint32_t nruns);
    /* Tell the consumer to drop the mapping (no answer awaited). */
    void (*unmap_from)(void *ctx, uint64_t map_handle, uint64_t base, uint64_t len);
    /* Optional. The map went before the consumer answered (expired, failed,
     * released): a MapInto still waiting to be delivered can be dropped, with
     * the fds it holds. */
    void (*withdraw)(void *ctx, uint64_t map_handle);
};

struct map_params {
    uint32_t access_mode;        /* enum map_mode */
    uint32_t cache_type;
    uint32_t priority;           /* PagePriority | flags */
    uint64_t requested_address;  /* UserMode only */
    const char *consumer;        /* UserMode only */
    map_done_fn done;            /* UserMode: completion (see map_engine_map) */
    void *done_ctx;
};

struct map_stats {
    uint64_t mappings, mapped_pages, vmas, locked_mdls, leaks_reported;
    uint64_t orphaned;           /* UserMode mappings whose consumer died (not in mappings) */
    uint64_t vma_budget, global_page_quota, vm_page_quota;
};

struct map_engine;

struct map_engine *map_engine_new(const struct map_limits *lim);
void map_engine_free(struct map_engine *e);  /* unmaps and frees everything (no leak report) */

/* A VM the engine serves; NULL when out of memory. */
struct map_vm *map_engine_vm_add(struct map_engine *e, const struct map_vm_view *view);
/* The VM goes away: release everything it still holds (leak records with
 * why), then forget it. */
void map_engine_vm_remove(struct map_engine *e, struct map_vm *vm, const char *why);
const char *map_vm_name(const struct map_vm *vm);
uint64_t map_vm_cid(const struct map_vm *vm);

/* MmProbeAndLockPages: validate geometry and frames against the VM's memory
 * table, store. Frames as one pfn per page (LockRequest.pfns)... */
int map_engine_lock(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                    uint32_t byte_count, const uint64_t *pfns, size_t npfns, uint32_t operation,
                    uint64_t *mdl_handle, char *detail, size_t dlen);
/* ...or as runs of consecutive frames (LockRequest.runs; checked by
 * map_layout_check_frame_runs). Costs O(runs), whatever the page count. */
int map_engine_lock_runs(struct map_engine *e, const struct map_owner *o, uint32_t byte_offset,
                         uint32_t byte_count, const struct map_frames *fr, size_t nfr, uint32_t operation,
                         uint64_t *mdl_handle, char *detail, size_t dlen);
/* Map a locked MDL. -EBADF unknown handle, -EINVAL bad parameters, -EFAULT
 * frames no longer RAM, -EBUSY already mapped to system VA, -ENOSPC quota/VMA
 * budget (priority), -ENOMEM. UserMode: -ENOENT no such consumer; otherwise
 * -EINPROGRESS with *out set: p->done runs when the consumer answers (unless
 * the mapping is released first, e.g. by map_engine_release). */
int map_engine_map(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle,
                   const struct map_params *p, const struct map_obj **out, char *detail, size_t dlen);
/* MmUnmapLockedPages. map_handle 0: find by address + mdl. -EBADF unknown map
 * handle, -ENXIO address does not match, -EINVAL mdl does not match.
 * An orphaned UserMode mapping (its consumer died) unmaps with 0: the address
 * space it lived in is gone, so there is nothing left to undo, and Windows
 * cannot fail MmUnmapLockedPages for a process that has exited either. */
int map_engine_unmap(struct map_engine *e, const struct map_owner *o, uint64_t map_handle,
                     uint64_t address, uint64_t mdl_handle, char *detail, size_t dlen);
/* MmUnlockPages: also unmaps the MDL's mappings. -ENOLCK never locked by this
 * owner (unknown handle, or another VM's / connection's MDL). */
int map_engine_unlock(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle,
                      unsigned *released, char *detail, size_t dlen);

/* Events: every MDL_LOCKED is followed by exactly one MDL_UNLOCKED, and
 * every MAPPING_CREATED (KernelMode: when mapped; UserMode: when the consumer
 * answered) by exactly one MAPPING_REMOVED, whatever ends it (unmap, unlock,
 * the owner going away: then LEAK_RECORDED comes first). A map or lock
 * refused for a quota, share, budget or bound (-ENOSPC) is QUOTA_REFUSED
 * with the reason in detail. map_engine_free publishes nothing. */

/* Owner gone: unmap + free everything it held; add leak records with reason.
 * vm_only: release every owner of o->vm regardless of conn_id. Returns objects released. */
unsigned map_engine_release(struct map_engine *e, const struct map_owner *o, bool vm_only,
                            const char *reason);

/* UserMode consumers. Names: 1..63 of [A-Za-z0-9._-]; -EINVAL, -EBUSY (taken), -ENOMEM. */
int map_engine_consumer_add(struct map_engine *e, const char *name, const struct map_consumer_ops *ops,
                            void *ctx, uint64_t *id);
/* Consumer gone. Pending maps into it fail at once (-ENOTCONN: the guest gets
 * STATUS_DEVICE_NOT_READY). Established ones become orphans: their pages and
 * VMAs stop counting against quotas and stats (mappings, mapped_pages), they
 * leave the host API list and its Read/Write, a record with reason
 * "consumer gone: NAME" goes into the leak ring, and only a stub stays so that
 * the guest's MmUnmapLockedPages of the handle succeeds (and MmUnlockPages or
 * the guest connection's end frees it). */
void map_engine_consumer_remove(struct map_engine *e, uint64_t id);
/* The consumer answered MapInto for map_handle: err 0 with its base address.
 * Returns -ENOENT if no such pending mapping of this consumer (the caller then
 * tells the consumer to unmap). */
int map_engine_user_complete(struct map_engine *e, uint64_t consumer_id, uint64_t map_handle, int err,
                             uint64_t base, const char *detail);

/* Fail UserMode maps whose consumer has not answered for max_age_ms
 * (-ETIMEDOUT to the guest). Returns how many are still pending. */
unsigned map_engine_user_expire(struct map_engine *e, uint64_t now_ms, uint64_t max_age_ms);
uint64_t map_now_ms(void);

/* Host API access (no owner scoping: the host sees everything live; orphaned
 * UserMode mappings are neither found nor listed). */
const struct map_obj *map_engine_find_map(const struct map_engine *e, uint64_t map_handle);
/* Iterate over live mappings: prev NULL gives the first, NULL ends. */
const struct map_obj *map_engine_next_map(const struct map_engine *e, const struct map_obj *prev);
void map_engine_stats(const struct map_engine *e, struct map_stats *s);
/* One VM's share: what it holds now, and counters since it was added. */
struct map_vm_stats {
    uint64_t mappings, mapped_pages, vmas, locked_mdls, locked_pages;
    uint64_t quota_refusals;     /* locks and maps refused for a quota or budget */
    uint64_t leaks;              /* leak records ever made for it (its ring keeps the last 16) */
};
void map_engine_vm_stats(const struct map_vm *vm, struct map_vm_stats *s);
/* The VM's own leak records. */
const struct map_leaks *map_engine_vm_leaks(const struct map_vm *vm);
/* The engine's VM of that name, or NULL. */
const struct map_vm *map_engine_vm_by_name(const struct map_engine *e, const char *name);
/* The most recent leak records of all VMs (the last MAP_LEAK_RING of VMs
 * removed included), oldest first: fills out[] with at
 * most max pointers (valid until the engine changes); returns how many. */
unsigned map_engine_recent_leaks(const struct map_engine *e, const struct map_leak **out, unsigned max);
/* Per-VM usage (pages mapped, mappings) for tests and diagnostics. */
void map_engine_vm_usage(const struct map_engine *e, const struct map_vm *vm, uint64_t *pages, uint64_t *maps);
/* MDLs the VM's connections hold locked. */
uint64_t map_engine_vm_mdls(const struct map_vm *vm);

enum map_prio map_prio_of(uint32_t priority);
/* Allowed if usage after the request stays within the priority's share of limit. */
bool map_prio_allows(enum map_prio p, uint64_t used, uint64_t want, uint64_t limit);
