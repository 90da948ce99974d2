/* Host API: a Unix stream socket (mode 0660) speaking the mdlmap framing.
 * Non-blocking, many clients, bounded buffers. Who may do what is decided
 * from the peer's credentials (SO_PEERCRED, SO_PEERGROUPS) at accept. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "evloop.h"
#include "map_engine.h"

struct host_api;

/* One user or group named in an access option. */
struct api_who {
    bool group;   /* id is a gid (primary or supplementary), else a uid */
    uint32_t id;
};

#define HOST_API_MAX_WHO 16 /* users/groups per list: options are parsed into fixed arrays */
struct api_who_list {
    struct api_who v[HOST_API_MAX_WHO];
    unsigned n;
};

/* --consumer NAME=WHO[,WHO...]: who may register the UserMode consumer NAME. */
#define HOST_API_MAX_CONSUMER_RULES 64 /* = the engine's consumer limit */
struct api_consumer_rule {
    char name[64];
    struct api_who_list who;
};

struct memtable;
struct qmp_client;

/* What the host API may know of one VM, lent by the layer that owns VMs for
 * the duration of one request (pointers are not kept across events). */
struct host_api_vm {
    const char *name;
    uint64_t cid;
    const struct memtable *mem;  /* guest RAM as QEMU registered it (may be empty) */
    bool introspect;             /* whole-guest access allowed (--vm ...,introspect=on) */
    struct qmp_client *qmp;      /* the VM's QMP connection; NULL: no qmp= configured. The one
                                  * pointer kept across events: by a VcpuState/RunState waiting on
                                  * a QMP call, which freeing the client completes first */
};

/* One VM as VmList reports it (strings lent for one request). */
struct host_api_vm_info {
    const char *name, *socket, *qmp; /* qmp: "" when none */
    uint64_t cid;
    bool introspect;
    bool owner_uid_set, owner_gid_set;
    unsigned owner_uid, owner_gid;
    bool connected;                  /* a QEMU is connected */
    bool qmp_connected;
    uint64_t ram_bytes;              /* guest RAM QEMU registered */
    uint32_t connections;            /* open guest vsock connections */
    uint64_t mappings, mapped_pages, locked_mdls;
};

/* A VM's settings in the text form's keys (name, cid, socket, qmp,
 * introspect, uid, group): the owner validates them with its one parser. */
struct host_api_vm_kv {
    const char *key, *value;
};

/* The VM table, owned above the API: the API finds VMs through this table
 * of functions and never by name of the owner. Every op may be NULL (the
 * request is then answered -ENOSYS). */
struct host_api_vm_ops {
    /* 0 and *out filled, or -ENOENT. */
    int (*lookup)(void *ctx, const char *name, struct host_api_vm *out);
    /* Add and start a VM: 0, or a negative errno with err saying why
     * (-EINVAL bad spec, -EEXIST name/cid/socket taken, -ENOSPC VM limit). */
    int (*add)(void *ctx, const struct host_api_vm_kv *kv, unsigned n, char *err, size_t errlen);
    /* Tear the VM down as a QEMU exit would and forget it: 0 or -ENOENT. Safe
     * from inside a request handler (the loop may be dispatching). */
    int (*remove)(void *ctx, const char *name);
    /* The i-th VM (0-based, in the order they were added): 0, or -ENOENT past the end. */
    int (*info)(void *ctx, unsigned i, struct host_api_vm_info *out);
};

struct host_api_config {
    const char *path;
    const struct host_api_vm_ops *vm_ops; /* NULL: no VM table (introspection answers -ENOENT) */
    void *vm_ctx;
    /* Rights beyond root and hostd's own uid, which always have all of them.
     * read: ListMappings, Read, Stats. write: Write (and read). admin:
     * admitted even when the client limit is reached, never evicted for an
     * unprivileged client (and every right). */
    struct api_who_list read, write, admin;
    struct api_consumer_rule consumers[HOST_API_MAX_CONSUMER_RULES];
    unsigned nconsumers;
    unsigned frame_timeout_ms;    /* a started frame must complete by then; 0: 5000 */
    unsigned consumer_timeout_ms; /* a consumer must answer MapInto by then; 0: 10000 */
    /* An inherited listening socket for path (service manager's fd store;
     * checked by the caller, taken) instead of a new one; with keep_path the
     * socket file outlives hostd (the store still holds the socket). */
    bool inherited;
    int inherited_fd;
    bool keep_path;
    /* The daemon's event bus: Subscribe serves it, consumers coming and
     * going are published on it. NULL: Subscribe is STATUS_NOT_SUPPORTED. */
    struct events *events;
};

/* Parse "WHO[,WHO...]" (WHO: user:NAME|UID, group:NAME|GID) into l
 * (appending). 0, or -EINVAL with a message in err. */
int host_api_who_parse(struct api_who_list *l, const char *arg, char *err, size_t errlen);
/* Parse "NAME=WHO[,WHO...]" into a consumer rule of cfg. 0 or -EINVAL (err). */
int host_api_consumer_rule_parse(struct host_api_config *cfg, const char *arg, char *err, size_t errlen);

struct host_api *host_api_start(struct evloop *loop, struct map_engine *eng, const struct host_api_config *cfg);
void host_api_stop(struct host_api *api);
/* The listening socket (to keep it in the fd store). */
int host_api_listener(const struct host_api *api);
