/* vsock ports of the mdlmap services on the host (CID 2). One definition for
 * the guest library, hostd and the tests, so the two ends cannot drift apart. */
#pragma once

#define MDLMAP_PORT_RPC 1100 /* MDL requests (STREAM): hostd's RPC service */
