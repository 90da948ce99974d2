/* Envelope request/response over a connected stream fd (vsock or Unix). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "mdl_transport.h"

struct fd_transport {
    struct mdl_transport t;
    int fd;
    bool can_pass_fds;
};

/* Send a whole frame; the fd (if any) rides on its first byte. */
static int send_frame_with_fd(int fd, const uint8_t *buf, size_t len, int pass_fd)
{
    size_t off = 0;
    if (pass_fd >= 0) {
        union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } cm;
        memset(&cm, 0, sizeof(cm));
        struct iovec iov = { (void *)buf, len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
        ssize_t n;
        do
            n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return -errno;
        off = (size_t)n;
    }
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        off += (size_t)n;
    }
    return 0;
}

static int fd_call(struct mdl_transport *t, const Mdlmap__V1__Envelope *req, int pass_fd,
                   Mdlmap__V1__Envelope **resp)
{
    struct fd_transport *ft = (struct fd_transport *)t;
    if (pass_fd >= 0 && !ft->can_pass_fds)
        return -EOPNOTSUPP;
    uint8_t *buf;
    size_t len;
    int rc = frame_encode(req, &buf, &len);
    if (rc < 0)
        return rc;
    rc = send_frame_with_fd(ft->fd, buf, len, pass_fd);
    free(buf);
    if (rc < 0)
        return rc;
    return frame_read_fd(ft->fd, resp);
}

static void fd_close(struct mdl_transport *t)
{
    struct fd_transport *ft = (struct fd_transport *)t;
    close(ft->fd);
    free(ft);
}

static const struct mdl_transport_ops fd_ops = { fd_call, fd_close };

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
