/* Host API requests (List, Read, Write, Stats), transport-neutral. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "host_api.h"
#include "map_engine.h"

#define HOST_API_MAX_LIST 8192u /* mappings per ListMappingsResponse */
#define HOST_API_MAX_GRANTS 8192u /* grants per ListGrantsResponse (about 100 bytes each) */
#define HOST_API_RECENT_LEAKS 64u /* leak records per StatsResponse, newest of all VMs */
/* VMs per VmListResponse (= HOSTD_MAX_VMS); fewer when their entries would
 * not fit one frame (MDLMAP_MAX_FRAME: ~3000 VMs with the longest paths). */
#define HOST_API_MAX_VM_LIST 4096u

/* What the request handlers work on: the engine and the VM table. The
 * socket server embeds one; tests and fuzz targets make their own. */
struct api_ctx {
    struct map_engine *eng;
    const struct host_api_vm_ops *vm_ops; /* NULL: no VMs to look up */
    void *vm_ctx;
    /* per-request audit lines (writes, fds handed out): a client can send
     * these as fast as it likes, so they share one limiter. NULL: none */
    struct log_limit *op_log;
    /* The output queue of the client whose request runs (NULL: none), set
     * only around one dispatch: large replies are packed into its spare
     * buffer (outq_take_spare) instead of a fresh allocation. */
    struct outq *reply_q;
};

/* *out: encoded response frame (free()). Returns 0 or negative errno if no
 * response could be encoded. Unknown bodies get STATUS_INVALID_DEVICE_REQUEST.
 * A reply that carries fds (PhysMap) has them closed here: use
 * host_api_handle_fds to send them. */
int host_api_handle(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);

/* File descriptors one reply may carry: a PhysMap reply has one per guest
 * RAM region (MEMTABLE_MAX_REGIONS at most); it fits one queued frame. */
#define HOST_API_MAX_REPLY_FDS 64u
/* host_api_handle, and the reply's fds (owned by the caller: sent with the
 * frame, SCM_RIGHTS) in fds[0 .. *nfds). fd_room: how many more fds the
 * client's output queue may hold (at most HOST_API_MAX_REPLY_FDS); a reply
 * that needs more is refused with STATUS_INSUFFICIENT_RESOURCES. */
int host_api_handle_fds(const struct api_ctx *ctx, const mdl_envelope *req, unsigned fd_room, uint8_t **out,
                        size_t *out_len, int fds[HOST_API_MAX_REPLY_FDS], unsigned *nfds);

/* host_api_introspect.c: the introspection requests (PhysRead, PhysWrite,
 * PhysMap, Translate, VirtRead, VirtWrite); rights are checked before. */
int api_introspect_handle(const struct api_ctx *ctx, const mdl_envelope *req, unsigned fd_room, uint8_t **out,
                          size_t *out_len, int *fds, unsigned *nfds);
/* A new read-only file description of fd (reopened through /proc/self/fd,
 * not a dup, which would share the O_RDWR one): the receiver cannot map it
 * writable. -1 with errno on failure. */
int api_reopen_read_only(int fd);

/* host_api_vms.c: VmAdd, VmRemove, VmList through ctx->vm_ops. */
int host_api_vm_add(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);
int host_api_vm_remove(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);
int host_api_vm_list(const struct api_ctx *ctx, const mdl_envelope *req, uint8_t **out, size_t *out_len);
/* ListGrants (host_api_grants.c). */
int host_api_list_grants(struct map_engine *e, const Mdlmap__V1__ListGrantsRequest *rq, uint64_t rid,
                         uint8_t **out, size_t *out_len);
