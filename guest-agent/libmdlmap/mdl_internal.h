/* Hidden MDL bookkeeping and library-internal helpers. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "frame.h"
#include "mdl_transport.h"
#include "mdlmap.h"

#define MDL_MAGIC 0x4d444c31u   /* "MDL1" */
#define MDL_MAGIC_FREED 0x4d444c30u
#define MDL_MAX_USER_MAPS 8

/* In front of the public struct mdl, so (struct mdl + 1) is the PFN array. */
/* Where a lock's frame numbers came from (the selftest checks the agent
 * daemon's form). */
enum mdl_frames_from {
    MDL_FRAMES_OWN,         /* this process read them (pagemap, linear pinner) */
    MDL_FRAMES_PEER_PFNS,   /* the agent daemon, one pfn per page (older daemons) */
    MDL_FRAMES_PEER_RUNS,   /* the agent daemon, as frame runs */
};
struct mdl_priv {
    uint32_t magic;
    bool locked_ever;            /* was locked at least once (unlock checks) */
    enum mdl_lock_op op;
    struct mdl_session *session; /* set while locked */
    uint64_t lock_handle;        /* hostd mdl_handle */
    struct mdl_pin pin;
    struct mdl_pinner *pinner;
    bool has_sys;
    struct mdl_map_info sys;     /* the KernelMode ("system") mapping */
    unsigned nuser;
    struct mdl_map_info user[MDL_MAX_USER_MAPS];
    struct mdl_priv *live_next, *live_prev;   /* session's locked MDLs */
    size_t npages_max;           /* PFN slots allocated */
    enum mdl_frames_from frames_from;   /* how the last lock got its frames */
    struct mdl mdl;              /* must be last: the PFN array follows */
};
_Static_assert(sizeof(struct mdl) % 8 == 0, "PFN array must follow struct mdl unpadded");

static inline struct mdl_priv *mdl_priv_of(const struct mdl *m)
{
    return (struct mdl_priv *)((char *)m - __builtin_offsetof(struct mdl_priv, mdl));
}
/* NULL if m is not a live libmdlmap MDL. */
struct mdl_priv *mdl_priv_checked(const struct mdl *m);

/* The per-session decode arena (mdl_arena.c): a ProtobufCAllocator that
 * bumps through one block, reset per call. */
#define MDL_ARENA_KEEP (256u * 1024u)   /* largest block kept across calls */
struct mdl_arena_spill;
struct mdl_arena {
    ProtobufCAllocator pc;      /* hand &pc to protobuf-c */
    unsigned char *base;
    size_t cap, used;
    size_t need;                /* what this call asked for, spills included */
    struct mdl_arena_spill *spill;
};
int mdl_arena_init(struct mdl_arena *a, size_t initial);
/* Forget everything handed out (pointers into the arena die here). */
void mdl_arena_reset(struct mdl_arena *a);
void mdl_arena_fini(struct mdl_arena *a);

/* Session internals used by mdl_ops.c. */
struct mdl_pinner *mdl_session_pinner(struct mdl_session *s);
void mdl_session_track(struct mdl_session *s, struct mdl_priv *p);
void mdl_session_untrack(struct mdl_session *s, struct mdl_priv *p);
/* Whether mdl_unmap goes through mdl_session_unmap_async. */
bool mdl_session_async_unmap(const struct mdl_session *s);
/* Send an UnmapRequest of the mapping at address of MDL m without waiting:
 * its reply is read and checked by the next call on s (pipelined behind
 * that call's request), by mdl_session_flush or at close; a failure then
 * goes to the verifier (docs/semantics.md). m only names the MDL in that
 * report and is not dereferenced. MDL_STATUS_PENDING, or the status of a
 * failure to send (DEVICE_NOT_READY, as mdl_session_call). */
mdl_status mdl_session_unmap_async(struct mdl_session *s, Mdlmap__V1__Envelope *req,
                                   const struct mdl *m, uint64_t address);

/* Probe each page of [va, va+len) for read (and write-fault it for write
 * access) without crashing: 0 or -EFAULT. */
int mdl_probe_range(uintptr_t va, size_t len, bool write);
/* Frame numbers from /proc/self/pagemap: 0, -EPERM (PFNs hidden), -EFAULT (not present). */
int mdl_pagemap_read(uintptr_t va, size_t npages, uint64_t *pfns);

/* Envelope builders (mdl_envelope.c): fill a zeroed request envelope whose
 * body struct is supplied by the caller (nothing is heap-allocated). */
void mdl_env_init(Mdlmap__V1__Envelope *e);
void mdl_env_hello(Mdlmap__V1__Envelope *e, Mdlmap__V1__HelloRequest *b, const char *client);
/* The frames of a LockRequest as FrameRuns (consecutive pfns coalesced),
 * which the request points into until mdl_env_runs_free. */
struct mdl_env_runs {
    Mdlmap__V1__FrameRun *runs;
    Mdlmap__V1__FrameRun **ptrs;
    size_t n;
};
/* npages 0: no frames (the agent daemon fills them in). 0 or -ENOMEM; free
 * rs with mdl_env_runs_free either way. */
int mdl_env_lock(Mdlmap__V1__Envelope *e, Mdlmap__V1__LockRequest *b, const struct mdl *m, enum mdl_lock_op op,
                 const uint64_t *pfns, size_t npages, struct mdl_env_runs *rs);
/* pfns[0..n) as runs into rs (consecutive frames coalesced). 0 or -ENOMEM;
 * free rs with mdl_env_runs_free either way. */
int mdl_env_runs_build(const uint64_t *pfns, size_t n, struct mdl_env_runs *rs);
/* Set b's frames to pfns[0..n) as runs (pfns cleared). 0 or -ENOMEM. */
int mdl_env_set_runs(Mdlmap__V1__LockRequest *b, const uint64_t *pfns, size_t n, struct mdl_env_runs *rs);
void mdl_env_runs_free(struct mdl_env_runs *rs);
/* A peer's runs into pfns[0..npages): 0, or -EPROTO (pfns untouched) unless
 * the runs are non-empty, do not wrap and their counts sum to npages. */
int mdl_env_runs_expand(Mdlmap__V1__FrameRun *const *runs, size_t nruns, uint64_t *pfns, size_t npages);
int mdl_env_map(Mdlmap__V1__Envelope *e, Mdlmap__V1__MapRequest *b, uint64_t lock_handle,
                const struct mdl_map_params *p, const char *consumer);
void mdl_env_unmap(Mdlmap__V1__Envelope *e, Mdlmap__V1__UnmapRequest *b, uint64_t map_handle,
                   uint64_t address, uint64_t lock_handle);
void mdl_env_unlock(Mdlmap__V1__Envelope *e, Mdlmap__V1__UnlockRequest *b, uint64_t lock_handle);

/* Test hooks (selftest): corrupt the hostd handle of a locked MDL. */
void mdl_test_set_lock_handle(struct mdl *m, uint64_t handle);
/* How m's last lock got its frames (MDL_FRAMES_OWN for a non-MDL). */
enum mdl_frames_from mdl_test_frames_from(const struct mdl *m);
