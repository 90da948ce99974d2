/* Echo service on MDLMAP_PORT_ECHO: sends every byte back. SEQPACKET keeps
 * message boundaries and the guest's MSG_EOR. Back-pressure: we consume only what fits in the
 * outbound queue; the device re-offers the rest when space frees. */
#include "log.h"
#include "vsock.h"

static int echo_accept(struct vsock_conn *c, void *ctx, void **priv)
{
    *priv = NULL;
    return 0;
}

static size_t echo_recv(struct vsock_conn *c, void *priv, const uint8_t *data, size_t len, bool eom)
{
    size_t space = vsock_conn_send_space(c);
    size_t n = len < space ? len : space;
    bool end = eom && n == len;
    if (!n && !end)
        return 0;
    uint32_t flags = end ? VSOCK_SEQ_EOM | (vsock_conn_last_flags(c) & VSOCK_SEQ_EOR) : 0;
    if (vsock_conn_send_flags(c, data, n, flags) < 0)
        return 0;
    return n;
}

static void echo_closed(struct vsock_conn *c, void *priv, const char *why)
{
    log_debug("echo: conn %llu closed: %s", (unsigned long long)vsock_conn_id(c), why);
}

const struct vsock_service vsock_echo_service = {
    .name = "echo",
    .port = MDLMAP_PORT_ECHO,
    .stream = true,
    .seqpacket = true,
    .accept = echo_accept,
    .recv = echo_recv,
    .closed = echo_closed,
};
