/* The guest RPC service on vsock port MDLMAP_PORT_RPC (STREAM). */
#pragma once
#include "hostd.h"

int rpc_service_register(struct hostd *h); /* needs h->maps */
