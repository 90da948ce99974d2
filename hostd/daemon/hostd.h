/* Process-wide and per-VM state of mdlmap-hostd. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "memtable.h"
#include "virtq.h"

#define VSOCK_HOST_CID 2
#define VSOCK_VQ_RX 0
#define VSOCK_VQ_TX 1
#define VSOCK_NUM_VQ 2       /* the event queue (2) stays in QEMU */
#define HOSTD_MAX_VMS 64

/* Well-known hostd service ports (on CID 2). */
#define MDLMAP_PORT_ECHO 7
#define MDLMAP_PORT_RPC 1100

struct vsock_dev;
struct vu_conn;
struct map_engine;
struct host_api;
struct rpc_service;

struct vm {
    struct hostd *hostd;
    char name[64];
    uint64_t cid;
    char socket_path[108];

    /* vhost-user: one listening socket; one QEMU connection at a time */
    int listen_fd;
    struct ev_handler listen_h;
    int conn_fd;
    struct ev_handler conn_h;
    struct vu_conn *vu;          /* message reassembly state, owned by vhost_user.c */
    uint64_t features;           /* acked by SET_FEATURES */
    uint64_t protocol_features;  /* acked by SET_PROTOCOL_FEATURES */
    bool owner_set;
    uint64_t instance;           /* bumped whenever the VM's device state is torn down */

    struct memtable mem;
    struct virtq vq[VSOCK_NUM_VQ];
    struct ev_handler kick_h[VSOCK_NUM_VQ];

    struct vsock_dev *vsock;     /* owned by vsock_dev.c */
};

struct hostd {
    struct evloop *loop;
    struct vm *vms[HOSTD_MAX_VMS];
    unsigned nvms;
    bool sibling_routing;        /* route guest-to-guest connections (default on) */
    bool socket_group_set;       /* --socket-group: VM sockets get group socket_gid, mode 0660 */
    unsigned socket_gid;
    struct map_engine *maps;     /* MDL mapping engine (may be NULL in transport-only builds) */
    struct rpc_service *rpc;
    struct host_api *api;
};

struct vm *hostd_vm_by_cid(struct hostd *h, uint64_t cid);
