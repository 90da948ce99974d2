/* Cross-VM grants: a VM grants one peer VM read or read-write access to one
 * of its locked MDLs; the peer copies between the grant and its own locked
 * MDLs through hostd (grant copy). The grant table belongs to the engine
 * because a grant is a right on an MDL the engine owns: it must go the
 * moment the MDL goes (unlock, connection end, VM reset or exit), and only
 * the engine sees every one of those.
 *
 * Grant references come from the engine's keyed handle generator (getrandom
 * keys): never 0, never reused in hostd's lifetime. A reference is scoped to
 * its granter VM and its named peer: anyone else is told it does not exist.
 * Functions return 0 or a negative errno (-EKEYREVOKED: the grant was
 * revoked; STATUS_MDLMAP_GRANT_REVOKED on the wire). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "map_engine.h"

#define MAP_GRANT_READ 0u
#define MAP_GRANT_READ_WRITE 1u
#define MAP_GRANTS_GRANTED_PER_VM 1024u  /* live grants one VM has made */
#define MAP_GRANTS_HELD_PER_VM 1024u     /* live grants naming one VM as peer */
#define MAP_GRANT_TOMBSTONES 256u        /* revoked refs a peer is told "revoked" about (per peer VM) */
#define MAP_COPY_MAX_OPS 64u             /* operations per GrantCopyRequest */

/* Set by the layers above (the engine never calls them by name). */
struct map_grant_hooks {
    /* Policy: may granter grant to peer (VM names)? NULL: sharing is off. */
    bool (*allowed)(void *ctx, const char *granter, const char *peer);
    void *ctx;
    /* A grant that conn_ctx used was revoked (conn_ctx is what the peer's
     * connection passed to map_copy_begin). Must not call back into the
     * engine; delivery may be deferred. */
    void (*notice)(void *conn_ctx, uint64_t granter_cid, uint64_t grant_ref, const char *reason);
};
/* Grants are published on the engine's event bus: GRANT_CREATED and
 * GRANT_REVOKED with the granter's VM, CID, connection and MDL; detail
 * names the ref, the peer and the access (and for a revocation, why). */
void map_engine_set_grant_hooks(struct map_engine *e, const struct map_grant_hooks *h);
/* The notice hook alone (the RPC service delivers notices; the daemon owns the policy). */
void map_engine_set_grant_notice(struct map_engine *e,
                                 void (*notice)(void *, uint64_t, uint64_t, const char *));

/* Grant peer_cid access to the owner's locked MDL mdl_handle. -EBADF unknown
 * MDL, -EACCES sharing off / pair not allowed / unknown peer / READ_WRITE on
 * an MDL not locked for write, -EINVAL bad access or peer is the granter,
 * -ENOSPC a grant bound reached, -ENOMEM. */
int map_grant_create(struct map_engine *e, const struct map_owner *o, uint64_t mdl_handle, uint64_t peer_cid,
                     uint32_t access, uint64_t *ref, char *detail, size_t dlen);
/* Revoke a grant of the owner's VM. privileged: any connection of that VM
 * may revoke (root in the guest); else only the granting connection.
 * -EBADF unknown (or not the caller's). */
int map_grant_revoke(struct map_engine *e, const struct map_owner *o, uint64_t ref, bool privileged, char *detail,
                     size_t dlen);

/* ---- grant copy ---- */
struct map_copy_end {
    uint64_t granter_cid; /* 0: an MDL of the caller's connection (ref = its handle) */
    uint64_t ref;
    uint64_t offset;
};
struct map_copy_op {
    struct map_copy_end src, dst;
    uint64_t length;
};
struct map_copy;

/* Validate ops (n <= MAP_COPY_MAX_OPS) for the caller o: each op's status
 * is decided now when it fails its checks (one bad op fails only itself).
 * conn_ctx: passed to the notice hook for grants this copy uses (NULL: no
 * notices). -EINVAL too many ops, -ENOMEM. */
int map_copy_begin(struct map_engine *e, const struct map_owner *o, const struct map_copy_op *ops, size_t n,
                   void *conn_ctx, struct map_copy **out, char *detail, size_t dlen);
/* Copy at most budget bytes (whole ops or a part of one, in order).
 * Returns the bytes copied; *done when every op has its status. */
uint64_t map_copy_step(struct map_engine *e, struct map_copy *c, uint64_t budget, bool *done);
size_t map_copy_count(const struct map_copy *c);
/* Per op: 0 or a negative errno, and the bytes copied. Valid once done. */
void map_copy_result(const struct map_copy *c, size_t i, int *err, uint64_t *copied);
/* Detail of the first failed op ("" when none). */
const char *map_copy_detail(const struct map_copy *c);
void map_copy_free(struct map_engine *e, struct map_copy *c);

/* ---- host view ---- */
struct map_grant_info {
    uint64_t ref;
    const char *granter_vm, *peer_vm;
    uint64_t granter_cid, peer_cid;
    uint32_t access;
    uint64_t mdl_handle;
    uint32_t byte_count;
    uint64_t copies, bytes_copied;
};
struct map_grant;
/* Iterate over live grants: prev NULL gives the first, NULL ends. */
const struct map_grant *map_grant_next(const struct map_engine *e, const struct map_grant *prev);
void map_grant_info(const struct map_grant *g, struct map_grant_info *out);
/* Live grants a VM has made and holds (tests, diagnostics). */
void map_grant_vm_counts(const struct map_vm *vm, unsigned *granted, unsigned *held);
