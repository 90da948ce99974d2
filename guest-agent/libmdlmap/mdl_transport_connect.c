/* Connecting the two stream transports: AF_VSOCK to hostd (guest only) and
 * the agent daemon's Unix socket. */
#include <errno.h>
#include <sys/socket.h>
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

int mdl_transport_vsock(struct mdl_transport **out)
{
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = MDL_HOST_CID, .svm_port = MDLMAP_PORT_RPC };
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return wrap(fd, false, out);
}

int mdl_transport_agent(const char *path, struct mdl_transport **out)
{
    int fd = usock_connect(path ? path : MDL_AGENT_SOCKET, 0);
    if (fd < 0)
        return fd;
    return wrap(fd, true, out);
}
