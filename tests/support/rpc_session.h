/* A guest's RPC session over the harness, for the integration tests of the
 * guest RPC port: hostd with its VMs and host API socket (struct rig), a
 * connection from a harness guest to the RPC port with envelopes both ways
 * (struct rpc_session, typed Hello/Lock/Map/Unmap/Unlock on top), and one-shot
 * host API calls. Every test that speaks the guest RPC used to carry its own
 * copy of this. */
#pragma once
#include "mdlmap_ports.h"
#include <stdbool.h>
#include <stdint.h>

#include "frame.h"
#include "harness.h"

/* The guest RPC port: MDLMAP_PORT_RPC of hostd/rpc/include/rpc_service.h,
 * which the tests do not include (no hostd header here but the protocol's). */
#define RPC_PORT MDLMAP_PORT_RPC
/* rpc_call's status when no (matching) response arrived. */
#define RPC_NO_REPLY INT32_MIN

/* ---------------------------------------------------------------- rig */
struct rig {
    struct hd_proc p;
    char dir[64];    /* private temp directory */
    char api[160];   /* hostd's host API socket, in dir */
};

/* Start hostd with n VMs (cids) and --api in a fresh /tmp/<tag>.XXXXXX;
 * when it does not start, report and exit the test (nothing else can run). */
void rig_start(struct rig *r, const char *bin, const char *tag, unsigned n, const uint64_t *cids);
/* The same with more hostd arguments (NULL-terminated, at most 13). */
void rig_start_with(struct rig *r, const char *bin, const char *tag, unsigned n, const uint64_t *cids,
                    const char *const *more);
/* The same with options for each VM's --vm spec (hd_start_opts). */
void rig_start_opts(struct rig *r, const char *bin, const char *tag, unsigned n, const uint64_t *cids,
                    const char *const *vm_opts, const char *const *more);
/* Bring up a harness guest on VM vm (o NULL: defaults); NULL (reported as a
 * failed check) when the vhost-user bring-up fails. Free with vdev_down + free. */
struct vdev *rig_vm_up(struct rig *r, unsigned vm, const struct guest_opts *o, const char *what);
/* SIGTERM hostd and check it exits 0 (LeakSanitizer included), remove dir. */
void rig_stop(struct rig *r);
/* Kill hostd without judging it (a setup step already failed), remove dir. */
void rig_abort(struct rig *r);

/* ------------------------------------------------------------ session */
struct rpc_session {
    struct vc_conn *c;
    struct frame_reader rd;
    uint64_t next_id;
    int timeout_ms;     /* per send / per response; 5000 unless the test changes it */
    char detail[256];   /* of the last response */
    int body;           /* body case of the last response */
    /* GrantRevokedNotices (request_id 0) that arrived while responses were
     * awaited: rpc_call keeps waiting for its response past them */
    unsigned notices;
    uint64_t notice_cid, notice_ref;   /* the last one */
    char notice_reason[64];
};

/* Connect a stream from the guest d to hostd's RPC port; false (with a "#"
 * line) when it is refused. */
bool rpc_open(struct rpc_session *r, struct vdev *d);
/* The same from local port lport (0: a privileged one, as rpc_open). */
bool rpc_open_from(struct rpc_session *r, struct vdev *d, uint32_t lport);
void rpc_close(struct rpc_session *r);
/* Drop the session without closing the stream: vdev_down() already freed
 * every connection of the device (QEMU went away). */
void rpc_forget(struct rpc_session *r);
/* hostd reset or shut down the connection, or the device went away. */
bool rpc_peer_closed(const struct rpc_session *r);
/* Send one envelope, stamped with the protocol version and the next request
 * id (e->request_id); 0 or -errno. */
int rpc_send(struct rpc_session *r, mdl_envelope *e);
/* 1: a frame (*out), 0: hostd closed the connection, <0: error / timeout. */
int rpc_wait(struct rpc_session *r, mdl_envelope **out, int timeout_ms);
/* Request and response: the response's status, or RPC_NO_REPLY when none
 * arrived or its request id differs ("#" line). *out (free it) is set to
 * whatever arrived. */
int32_t rpc_call(struct rpc_session *r, mdl_envelope *e, mdl_envelope **out);
/* The response to request id (notices on the way are counted, see above):
 * 1 with *out, 0 closed, <0 error / timeout. */
int rpc_reply(struct rpc_session *r, uint64_t id, mdl_envelope **out, int timeout_ms);
/* Wait until more than seen notices have arrived (true) or timeout_ms passed. */
bool rpc_wait_notice(struct rpc_session *r, unsigned seen, int timeout_ms);
/* Status as text, RPC_NO_REPLY included. */
const char *rpc_status_name(int32_t st);

/* Typed requests: the status (or RPC_NO_REPLY); the out values are set only
 * on success with the expected reply body (else zeroed). */
struct rpc_hello_info {
    uint64_t guest_cid, max_mdl_pages;
};
int32_t rpc_hello(struct rpc_session *r, uint32_t min_version, uint32_t max_version, const char *client,
                  struct rpc_hello_info *out);
int32_t rpc_lock(struct rpc_session *r, uint32_t byte_offset, uint32_t byte_count, const uint64_t *pfns,
                 size_t n, uint32_t operation, uint64_t *mdl);
/* Lock with the caller's LockRequest (pfns or runs or both, as a test wants). */
int32_t rpc_lock_req(struct rpc_session *r, Mdlmap__V1__LockRequest *rq, uint64_t *mdl);
/* Lock frames first_pfn .. first_pfn + count - 1 given as one FrameRun. */
int32_t rpc_lock_run(struct rpc_session *r, uint32_t byte_offset, uint32_t byte_count, uint64_t first_pfn,
                     uint32_t count, uint32_t operation, uint64_t *mdl);
struct rpc_mapping {
    uint64_t map, address, base;
    uint32_t vmas;
};
/* rq: the caller's MapRequest (mode, cache type, priority, consumer...). */
int32_t rpc_map(struct rpc_session *r, Mdlmap__V1__MapRequest *rq, struct rpc_mapping *out);
/* The common case: KernelMode, MmCached, this priority (e.g. 16: Normal). */
int32_t rpc_map_kernel(struct rpc_session *r, uint64_t mdl, uint32_t priority, struct rpc_mapping *out);
int32_t rpc_unmap(struct rpc_session *r, uint64_t map, uint64_t address, uint64_t mdl);
int32_t rpc_unlock(struct rpc_session *r, uint64_t mdl, unsigned *released);

/* Cross-VM grants. */
int32_t rpc_grant(struct rpc_session *r, uint64_t mdl, uint64_t peer_cid, uint32_t access, uint64_t *ref);
int32_t rpc_revoke(struct rpc_session *r, uint64_t ref);
struct rpc_copy {
    uint64_t src_cid, src_ref, src_off; /* cid 0: an MDL of this connection (ref = its handle) */
    uint64_t dst_cid, dst_ref, dst_off;
    uint64_t len;
};
/* A GrantCopyRequest of n ops: the envelope status; status[] and copied[]
 * (n entries each, may be NULL) get the per-op results (zeroed unless a
 * GrantCopyResponse with n results came back). */
int32_t rpc_grant_copy(struct rpc_session *r, const struct rpc_copy *ops, size_t n, int32_t *status,
                       uint64_t *copied);
/* The same request sent without waiting: its request id (0 on failure);
 * collect it with rpc_grant_copy_reply. */
uint64_t rpc_grant_copy_send(struct rpc_session *r, const struct rpc_copy *ops, size_t n);
int32_t rpc_grant_copy_reply(struct rpc_session *r, uint64_t id, size_t n, int32_t *status, uint64_t *copied,
                             int timeout_ms);

/* ----------------------------------------------------------- host API */
/* A connection to the host API socket at path; fd or -1. */
int api_connect(const char *path);
/* One request on a fresh connection (version and id filled in); the
 * response (free it) or NULL. */
mdl_envelope *api_call(const char *path, mdl_envelope *e);
/* Stats on a fresh connection: the response when it succeeded with a
 * StatsResponse (free it), else NULL. */
mdl_envelope *api_stats(const char *path);
/* Register a host consumer on a raw connection that the test then drives by
 * hand (answers MapInto or not); fd or -1 (with a "#" line). */
int api_register_consumer(const char *path, const char *name);

/* Does the file at path contain s within ms (the harness is polled
 * meanwhile, so guests keep being served)? For a child's output. */
bool file_has(const char *path, const char *s, int ms);
