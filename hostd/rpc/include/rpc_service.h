/* The guest RPC service on vsock port MDLMAP_PORT_RPC (STREAM): MDL
 * requests from a guest, served by the mapping engine. */
#pragma once
#include "map_engine.h"
#include "mdlmap_ports.h"
#include "vsock.h"

struct rpc_service;

/* privileged_only: lock and map only from guest ports below 1024. loop:
 * where grant copies larger than one slice continue (NULL: each copy runs
 * to its end inside its request). Delivers the engine's grant notices. */
struct evloop;
struct rpc_service *rpc_service_new(struct map_engine *eng, bool privileged_only, struct evloop *loop);
/* After every device it serves is gone (their connections hold its state). */
void rpc_service_free(struct rpc_service *s);
/* Serve the RPC port on dev; its connections act for the engine's VM vm. */
int rpc_service_attach(struct rpc_service *s, struct vsock_dev *dev, struct map_vm *vm);
/* The VM's device is gone (its connections closed): forget what the service
 * held for it. VMs removed at run time would otherwise pile up records. */
void rpc_service_detach(struct rpc_service *s, const struct map_vm *vm);
