/* Connecting the two stream transports: AF_VSOCK to hostd (guest only) and
 * the agent daemon's Unix socket. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "mdl_transport.h"
#include "mdlmap_ports.h"
#include "usock.h"

#define MDL_HOST_CID 2

static int wrap(int fd, bool pass, struct mdl_transport **out)
{
    *out = mdl_transport_from_fd(fd, pass);
    return *out ? 0 : -ENOMEM;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Bound one connect() to ms: AF_VSOCK has its own option (the kernel's
 * default is 2 s); Unix and TCP connect() wait up to the send timeout. */
static int set_connect_timeout(int fd, int family, int64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    if (!tv.tv_sec && !tv.tv_usec)
        tv.tv_usec = 1000;   /* 0 would mean the default / no timeout */
    int rc = family == AF_VSOCK ? setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof(tv))
                                : setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return rc < 0 ? -errno : 0;
}

/* hostd lets only privileged guest ports (< 1024) lock and map guest memory
 * (--rpc-privileged-ports): bind one when this process may (root,
 * CAP_NET_BIND_SERVICE), starting at a per-process offset so concurrent
 * programs rarely probe the same ports. Without the privilege the socket stays
 * unbound (an ephemeral port): hostd then refuses lock and map, and the
 * program should use the agent daemon. */
#define MDL_RESERVED_LO 512u
#define MDL_RESERVED_N 512u
static void bind_reserved_vsock(int fd)
{
    unsigned start = (unsigned)getpid() % MDL_RESERVED_N;
    for (unsigned i = 0; i < MDL_RESERVED_N; i++) {
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
                                 .svm_port = MDL_RESERVED_LO + (start + i) % MDL_RESERVED_N };
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return;
        if (errno != EADDRINUSE)
            return; /* EACCES: not privileged */
    }
}

int mdl_stream_connect(int family, const struct sockaddr *addr, socklen_t alen, unsigned timeout_ms)
{
    /* A connect() with a timeout is not restarted after an interruption: it
     * fails with EINTR, and not only on signals. libmdlmap's own io_uring
     * pinner causes these: closing a ring (MmUnlockPages, a session's MDLs
     * run down, the agent daemon's unpin) tears it down in a kernel worker
     * that later notifies the task that created it (task work, TWA_SIGNAL),
     * which interrupts whatever interruptible wait the task is in then. On a
     * slow guest that is often the connect() of the next session.
     *
     * The kernel abandons the interrupted attempt (AF_VSOCK: the socket goes
     * back to unconnected but keeps its port, and hostd may already hold a
     * connection from that port until the guest resets it), so connecting the
     * same socket again would send a second REQUEST from the same port, which
     * hostd takes for a duplicate and resets. Retry with a fresh socket (a new
     * port) within the deadline. */
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        if (family == AF_VSOCK)
            bind_reserved_vsock(fd);
        int64_t left = deadline - now_ms();
        int rc = left > 0 ? set_connect_timeout(fd, family, left) : -ETIMEDOUT;
        if (rc == 0 && connect(fd, addr, alen) < 0)
            rc = -errno;
        if (rc == 0)
            return fd;
        close(fd);
        if (rc != -EINTR)
            return rc;
    }
}

int mdl_transport_vsock(struct mdl_transport **out)
{
    struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = MDL_HOST_CID, .svm_port = MDLMAP_PORT_RPC };
    int fd = mdl_stream_connect(AF_VSOCK, (struct sockaddr *)&a, sizeof(a), MDL_CONNECT_TIMEOUT_MS);
    return fd < 0 ? fd : wrap(fd, false, out);
}

int mdl_transport_agent(const char *path, struct mdl_transport **out)
{
    int fd = usock_connect(path ? path : MDL_AGENT_SOCKET, 0);
    if (fd < 0)
        return fd;
    return wrap(fd, true, out);
}
