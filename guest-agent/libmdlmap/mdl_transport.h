/* Envelope-level internals of libmdlmap: the transport a session runs over and
 * one raw request/response on a session.
 *
 * Not a public header: mdlmap.h keeps protobuf-c types out of applications, so
 * this is for code that speaks the wire protocol itself - the library, the
 * agent daemon, the conformance selftest (forged handles, raw unmaps) and the
 * host-side tests, which plug in their own transports (an in-process fake
 * hostd, the vhost-user harness). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mdlmap.h"
#include "mdlmap.pb-c.h"

/* A byte stream to hostd (or to the agent daemon) carrying frames: the
 * session does the framing and the decoding (mdl_session.c), so every
 * transport shares one reply path, and requests can be pipelined. */
struct mdl_transport;
struct mdl_transport_ops {
    /* Send all of buf (whole frames); pass_fd >= 0 rides on the first byte
     * (SCM_RIGHTS; only the agent-daemon transport can, else -EOPNOTSUPP).
     * 0 or negative errno. */
    int (*send)(struct mdl_transport *t, const uint8_t *buf, size_t len, int pass_fd);
    /* Wait for bytes, then read as many as are available up to cap: the
     * count (> 0), or negative errno (-ECONNRESET at end of stream).
     * Descriptors a peer attaches are closed. */
    long (*recv)(struct mdl_transport *t, uint8_t *buf, size_t cap);
    void (*close)(struct mdl_transport *t);
};
struct mdl_transport {
    const struct mdl_transport_ops *ops;
};

/* A connected stream fd (the framing of common/include/frame.h); takes
 * ownership of fd (NULL: no memory, fd closed). */
struct mdl_transport *mdl_transport_from_fd(int fd, bool can_pass_fds);
/* A connected SOCK_STREAM socket of family to addr, or negative errno.
 * Interrupted attempts (EINTR) are retried on a fresh socket until timeout_ms
 * has passed; each attempt is bounded by what is left of it (AF_VSOCK:
 * SO_VM_SOCKETS_CONNECT_TIMEOUT, others: SO_SNDTIMEO). Any family, so the
 * host-side tests can exercise it over AF_UNIX. */
int mdl_stream_connect(int family, const struct sockaddr *addr, socklen_t alen, unsigned timeout_ms);
/* hostd answers a vsock REQUEST at once (RESPONSE or RST); the bound only
 * matters when it hangs, and a loaded TCG guest can need more than the
 * kernel's default of 2 s. */
#define MDL_CONNECT_TIMEOUT_MS 10000u
/* AF_VSOCK to CID 2 port MDLMAP_PORT_RPC (mdlmap_ports.h). Only inside a guest VM. */
int mdl_transport_vsock(struct mdl_transport **out);
/* The agent daemon's Unix socket (NULL: MDL_AGENT_SOCKET). */
int mdl_transport_agent(const char *path, struct mdl_transport **out);

/* Takes ownership of t (closed on failure too). pinner NULL: io_uring. Sends
 * Hello. 0 or negative errno. */
int mdl_session_open(struct mdl_transport *t, struct mdl_pinner *pinner, struct mdl_session **out);
/* One request/response; status is the response's NTSTATUS (or a transport
 * failure as STATUS_DEVICE_NOT_READY). *resp (NULL when no reply was read)
 * lives in the session's reply arena: it is the session's, valid until
 * mdl_session_release(s), which every call must be followed by, reply or
 * not. The session stays locked until then (other threads wait), so read
 * what you need and release before any other use of s. */
mdl_status mdl_session_call(struct mdl_session *s, Mdlmap__V1__Envelope *req, int pass_fd,
                            const Mdlmap__V1__Envelope **resp);
void mdl_session_release(struct mdl_session *s);
