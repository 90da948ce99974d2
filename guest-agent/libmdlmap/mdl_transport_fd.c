/* Envelope request/response over a connected stream fd (vsock or Unix). */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "mdl_transport.h"
#include "usock.h"

struct fd_transport {
    struct mdl_transport t;
    int fd;
    bool can_pass_fds;
};

/* Send a whole frame (blocking); the fd (if any) rides on its first byte.
 * usock_send() is a plain sendmsg(), so this serves vsock as well. */
static int send_frame(int fd, const uint8_t *buf, size_t len, int pass_fd)
{
    size_t off = 0;
    bool fd_sent = pass_fd < 0;
    while (off < len) {
        long n = usock_send(fd, buf + off, len - off, fd_sent ? NULL : &pass_fd, fd_sent ? 0 : 1, 0);
        if (n == -EINTR)
            continue;   /* nothing went out, the fd neither: send both again */
        if (n < 0)
            return (int)n;
        fd_sent = true;
        off += (size_t)n;
    }
    return 0;
}

static int fd_send(struct mdl_transport *t, const uint8_t *buf, size_t len, int pass_fd)
{
    struct fd_transport *ft = (struct fd_transport *)t;
    if (pass_fd >= 0 && !ft->can_pass_fds)
        return -EOPNOTSUPP;
    return send_frame(ft->fd, buf, len, pass_fd);
}

/* One read of whatever is there: the reply's length prefix and payload
 * usually arrive together, and need not cost two system calls. */
static long fd_recv(struct mdl_transport *t, uint8_t *buf, size_t cap)
{
    struct fd_transport *ft = (struct fd_transport *)t;
    for (;;) {
        long n;
        if (ft->can_pass_fds) {
            /* No answer carries descriptors; a peer that attaches some
             * anyway must not leave them open in this process. */
            n = usock_recv(ft->fd, buf, cap, NULL, 0);
        } else {
            n = read(ft->fd, buf, cap);
            if (n < 0)
                n = -errno;
        }
        if (n == -EINTR)
            continue;
        return n == 0 ? -ECONNRESET : n;
    }
}

static void fd_close(struct mdl_transport *t)
{
    struct fd_transport *ft = (struct fd_transport *)t;
    close(ft->fd);
    free(ft);
}

static const struct mdl_transport_ops fd_ops = { fd_send, fd_recv, fd_close };

struct mdl_transport *mdl_transport_from_fd(int fd, bool can_pass_fds)
{
    struct fd_transport *ft = calloc(1, sizeof(*ft));
    if (!ft) {
        close(fd);
        return NULL;
    }
    ft->t.ops = &fd_ops;
    ft->fd = fd;
    ft->can_pass_fds = can_pass_fds;
    return &ft->t;
}
