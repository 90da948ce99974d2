/* mdlmap-hostd's top layer: the VM table and the wiring of the layers for
 * each VM (vhost-user backend -> vsock device -> services, and the MDL
 * engine's view of the VM's memory). Nothing below this layer knows a VM
 * beyond what it was handed at creation. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "evloop.h"
#include "fdstore.h"
#include "host_api.h"
#include "share_pool.h"
#include "vm_config.h"
#include "vm_keep.h"

struct vu_backend;
struct vsock_dev;
struct map_vm;
struct map_engine;
struct rpc_service;
struct host_api;
struct qmp_client;

/* VMs one hostd serves (--vm, --config and VmAdd together): each costs
 * ~10 fds while its QEMU is connected, and an admin adding VMs at run time
 * has a stated bound too. */
#define HOSTD_MAX_VMS 4096u

struct vm {
    struct hostd *hostd;
    struct vm_config cfg;
    struct vu_backend *vu;       /* vhost-user transport (owns memory table and queues) */
    struct vsock_dev *vsock;     /* the device on that transport */
    struct map_vm *mdl;          /* the MDL engine's view of this VM */
    struct qmp_client *qmp;      /* QEMU's QMP socket (qmp=PATH); NULL: none */
    struct vm_kept kept;         /* what of it is in the fd store (restarts) */
};

#define HOSTD_MAX_SHARING_PAIRS 64u

struct hostd_options {
    bool sibling_routing;        /* route guest-to-guest connections */
    bool rpc_any_port;           /* also lock/map from unprivileged guest ports (>= 1024) */
    bool alias_addresses;        /* guests see per-VM aliases of mapping addresses */
    bool dumps_exclude_shared;   /* coredump_filter keeps shared memory (guest RAM) out of core dumps */
    bool socket_group_set;       /* VM sockets get group socket_gid, mode 0660 */
    unsigned socket_gid;
    const char *api_path;        /* host API Unix socket; NULL: none */
    struct host_api_config api;  /* host API rights and timeouts (its path: api_path) */
    uint64_t vm_page_quota;      /* max mapped pages per VM; 0: default */
    uint64_t global_page_quota;  /* max mapped pages in hostd; 0: default */
    uint32_t max_vmas;           /* VMA budget for mappings; 0: derived from vm.max_map_count */
    bool sharing;                /* cross-VM grants (--sharing on) */
    unsigned nsharing_pairs;     /* 0: any two VMs may share (when sharing) */
    struct { char a[64], b[64]; } sharing_pairs[HOSTD_MAX_SHARING_PAIRS];
    unsigned npools;             /* --sharing-pool: shared pools for pairs of VMs */
    struct share_pool_spec pools[SHARE_POOL_MAX];
    unsigned qmp_timeout_ms;     /* a QMP command must be answered by then; 0: 5000 */
};
/* --sharing-pair "A,B": allow grants between A and B, both directions.
 * -EINVAL (malformed, same name twice, too long) or -ENOSPC (too many). */
int hostd_sharing_pair_add(struct hostd_options *o, const char *spec);
/* --sharing-pool "NAME,VM_A,VM_B,SIZE[,DIR]" (share_pool_parse): -EINVAL, -ENOSPC. */
int hostd_sharing_pool_add(struct hostd_options *o, const char *spec);
/* May granter grant to peer (VM names) by the pairs (any pair when none is listed)? */
bool hostd_sharing_allowed(const struct hostd_options *o, const char *granter, const char *peer);

struct hostd {
    struct hostd_options opt;
    struct evloop *loop;
    /* The event bus: every layer that publishes got this pointer at
     * creation; it outlives all of them (freed last). */
    struct events *events;
    struct vm **vms;
    unsigned nvms, capvms;
    /* CID -> VM, open addressing (at most half full): sibling routing looks
     * a peer up per forwarded packet, which must not walk a thousand VMs. */
    struct vm **by_cid;
    unsigned cid_slots;          /* power of two; 0: no index yet */
    struct map_engine *maps;
    struct rpc_service *rpc;
    struct host_api *api;
    struct fdstore store;        /* the service manager's fd store ($NOTIFY_SOCKET) */
    bool stopping;               /* hostd_fini: what is stored stays for the next hostd */
    struct share_pool pools[SHARE_POOL_MAX];
    unsigned npools;
};

/* Event loop, mapping engine, RPC service and host API. On failure
 * everything made so far is undone (hostd_fini is still safe). */
int hostd_init(struct hostd *h, const struct hostd_options *o);
/* Add a VM and start listening for its QEMU. Names, CIDs and socket paths
 * must be unique: -EEXIST otherwise. A VM without a socket path does not
 * listen: its owner hands it a connection (vu_backend_adopt_conn; tests). */
int hostd_vm_add(struct hostd *h, const struct vm_config *c);
/* Every VM of the configuration was added: descriptors the previous hostd
 * kept for anything else leave the fd store. */
void hostd_started(struct hostd *h);
/* Would c clash with a VM served (name, CID, socket) or exceed the limit?
 * 0, -EEXIST or -ENOSPC with err saying which. */
int hostd_vm_clash(const struct hostd *h, const struct vm_config *c, char *err, size_t errlen);
/* Tear the VM down as its QEMU's exit would (connections closed, MDLs and
 * mappings released and recorded as leaks "VM removed", sibling connections
 * reset), close and unlink its socket and forget it. Other VMs are not
 * touched. Safe from inside any event handler but the VM's own (the host
 * API's request handlers call it). 0 or -ENOENT. */
int hostd_vm_remove(struct hostd *h, const char *name);
/* Tear everything down: QEMU connections, devices, MDL state, loop. */
void hostd_fini(struct hostd *h);
/* Publish a VM event (VM_ADDED, VM_REMOVED, ...) about vm, detail optional:
 * for the code that adds and removes VMs at run time. */
void hostd_publish_vm_event(struct hostd *h, const struct vm *vm, enum event_type type, const char *detail);
struct vm *hostd_vm_by_cid(struct hostd *h, uint64_t cid);
struct vm *hostd_vm_by_name(struct hostd *h, const char *name);
