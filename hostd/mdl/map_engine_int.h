/* Internals shared by map_engine.c (KernelMode, objects, accounting) and
 * map_user.c (UserMode consumers). */
#pragma once
#include "log.h"
#include "map_engine.h"
#include "map_grant.h"
#include "map_handle.h"
#include "map_table.h"

struct mdl_obj {
    uint64_t handle;
    struct map_owner owner;
    char vm_name[64];
    uint64_t cid;
    uint32_t byte_offset, byte_count, npages;
    uint32_t operation;
    /* the frames as runs: O(runs) memory, and what map re-validates when the
     * memory table changed since lock */
    struct map_frames *frames;
    uint32_t nframes;
    struct map_layout_cache layout; /* runs from lock time, reused by map while the memtable is unchanged */
    unsigned nmaps;
    struct map_obj *system_map;  /* the KernelMode mapping, if any (MDL_MAPPED_TO_SYSTEM_VA) */
    struct map_grant *grants;    /* grants of this MDL to peers (map_grant.c) */
    struct mdl_obj *prev, *next;
};

struct map_obj {
    uint64_t handle;
    struct mdl_obj *mdl;
    struct map_owner owner;
    uint8_t *base;               /* page-aligned start (hostd VA for KernelMode) */
    size_t reserve_len;          /* bytes reserved incl. guard page */
    uint64_t address;            /* base + byte_offset, as returned to the guest */
    uint32_t page_count, runs, vmas_accounted;
    uint32_t consumer_vmas;      /* UserMode: VMAs charged to its consumer */
    enum map_mode mode;
    uint32_t cache_type, priority;
    bool read_only;
    char consumer[64];
    uint64_t consumer_id;        /* UserMode: the consumer it lives in; 0 once it went away */
    bool pending;                /* UserMode: waiting for the consumer's answer */
    bool orphaned;               /* UserMode: the consumer died with it mapped (see below) */
    uint64_t pending_since_ms;   /* CLOCK_MONOTONIC when the consumer was asked */
    map_done_fn done;            /* UserMode: called once when the consumer answers */
    void *done_ctx;
    struct map_obj *prev, *next;
};

/* Bounds on what one VM may keep locked (the frame runs live in hostd). */
#define MAP_MAX_MDLS_PER_VM 8192u
#define MAP_MAX_LOCKED_PAGES_PER_VM (4ull << 20)
/* HelloResponse.max_mdl_pages says MAP_MAX_MDL_PAGES: one MDL that large must
 * fit in a VM's lock budget, or the figure would not be true. */
_Static_assert(MAP_MAX_MDL_PAGES <= MAP_MAX_LOCKED_PAGES_PER_VM, "largest MDL exceeds the per-VM lock budget");
#define MAP_MAX_CONSUMERS 64u
#define MAP_ORPHAN_REASON "consumer gone: " /* + name; leak record reason */

/* Warnings a VM's requests cause, through its limiter (a guest must not be
 * able to flood the log: one line per failed map or leaked MDL otherwise). */
#define map_vm_warn(vm, ...) log_warn_limited(&(vm)->rl, (vm)->name, __VA_ARGS__)

struct vm_acct {
    uint64_t pages, maps, mdls, locked_pages, vmas;
    uint64_t quota_refusals;     /* locks and maps refused for a quota or budget (-ENOSPC) */
};

struct map_vm {
    char name[64];
    uint64_t cid;
    const struct memtable *mem;
    struct vm_acct acct;
    struct log_limit rl;         /* warnings the VM's requests cause */
    struct map_leaks leaks;      /* its own recent leak records */
    uint64_t alias;              /* added to addresses told to the guest (0: real addresses) */
    unsigned grants_granted;     /* live grants it made (MAP_GRANTS_GRANTED_PER_VM) */
    unsigned grants_held;        /* live grants naming it as peer (MAP_GRANTS_HELD_PER_VM) */
    /* refs of grants to it that were revoked, newest last (a ring of
     * MAP_GRANT_TOMBSTONES, allocated at the first revocation): a later use
     * is told "revoked" rather than "unknown" */
    struct map_grant_tomb { uint64_t ref, granter_cid; } *tombs;
    unsigned ntombs, tomb_next;
    struct map_vm *prev, *next;
};

struct map_consumer {
    uint64_t id;
    char name[64];
    uint64_t vmas;               /* VMAs its live UserMode mappings cost it */
    const struct map_consumer_ops *ops;
    void *ctx;
};

struct map_engine {
    struct map_limits lim;
    struct events *events;       /* lim.events, or own_events */
    struct events *own_events;   /* made when no bus was given */
    struct map_handle_gen gen;
    struct map_table mdls, maps;
    struct mdl_obj *mdl_head;
    struct map_obj *map_head;
    struct map_obj *orphan_head;  /* orphaned UserMode mappings (unaccounted stubs) */
    uint64_t norphans;
    uint64_t nmaps, pages, vmas, nmdls;
    struct map_vm *vms;
    unsigned nvms;
    uint64_t leak_seq;           /* leak records ever made */
    /* The last records of VMs removed since (a VM's ring goes with it; what
     * it leaked on the way out is what an operator looks for). Not in seq
     * order across VMs. */
    struct map_leaks removed_leaks;
    struct map_consumer *consumers;
    unsigned nconsumers;
    uint64_t next_consumer_id;
    struct map_table grants;     /* ref -> struct map_grant */
    struct map_grant *grant_head;
    struct map_grant_hooks gh;
    struct map_copy *copies;     /* grant copies in progress (revocation marks their ops) */
};

bool map_owner_eq(const struct map_owner *a, const struct map_owner *b);
static inline struct vm_acct *map_acct_of(struct map_vm *vm)
{
    return &vm->acct;
}
int map_prepare(struct map_engine *e, const struct map_owner *o, struct mdl_obj *mdl, struct vm_acct **acct,
                struct map_run **runs, uint32_t *nruns, char *detail, size_t dlen);
const char *map_prio_name(enum map_prio p);
int map_check_params(const struct map_params *p, char *detail, size_t dlen);
/* May vm map pages more pages costing vmas more VMAs at priority pr? Every
 * VM is guaranteed its fair share of the global page quota and of the VMA
 * budget: another VM can only use what is left after every other VM's unused
 * guarantee. */
int map_check_budget(struct map_engine *e, const struct map_vm *vm, enum map_prio pr, uint64_t pages,
                     uint64_t vmas, char *detail, size_t dlen);
/* Insert m (handle set, in the table, m->mdl set) into lists and counters. */
void map_link(struct map_engine *e, struct map_obj *m, struct vm_acct *a);
/* why: the MAPPING_REMOVED detail of an established mapping; NULL: publish
 * nothing (the engine is being freed). */
void map_destroy(struct map_engine *e, struct map_obj *m, const char *why);
/* Its consumer died: move m (UserMode, established) to the orphan list and
 * release its accounting. The handle stays valid for the guest's unmap. */
void map_orphan(struct map_engine *e, struct map_obj *m);
/* Add a (mapped, 0xCB-style) record for m to the leak ring. */
void map_leak_record(struct map_engine *e, const struct map_obj *m, const char *reason);

/* map_grant.c */
/* The MDL goes (unlock, release): revoke its grants (why: the notice's and
 * event's reason; NULL: the engine is being freed, tell nobody) and fail
 * the copy operations that use it. */
void map_grant_mdl_gone(struct map_engine *e, struct mdl_obj *m, const char *why);
/* An owner goes (a connection, or with vm_only the whole VM): nothing of its
 * side as a peer stays (uses, and for a VM its tombstones). */
void map_grant_owner_gone(struct map_engine *e, const struct map_owner *o, bool vm_only);
/* The VM leaves the engine: grants naming it as peer are revoked. */
void map_grant_vm_gone(struct map_engine *e, struct map_vm *vm);
void map_grant_fini(struct map_engine *e);
/* Events about m (its VM, connection, MDL, handles, pages, addresses). */
void map_publish_map(struct map_engine *e, enum event_type t, const struct map_obj *m, const char *detail);
static inline void map_event_map(struct map_engine *e, enum event_type t, const struct map_obj *m,
                                 const char *detail)
{
    if (events_wanted(e->events, t)) /* the only cost on the map path while nobody listens */
        map_publish_map(e, t, m, detail);
}

/* map_user.c */
/* A UserMode mapping goes: give its VMAs back to its consumer (if alive). */
void map_user_uncharge(struct map_engine *e, const struct map_obj *m);
int map_user_start(struct map_engine *e, const struct map_owner *o, struct mdl_obj *mdl,
                   const struct map_params *p, const struct map_obj **out, char *detail, size_t dlen);
void map_user_unmap_from(struct map_engine *e, const struct map_obj *m);
/* A pending UserMode mapping goes: its MapInto need not be delivered. */
void map_user_withdraw(struct map_engine *e, const struct map_obj *m);
