/* Unix stream socket helpers (see usock.h). */
#include "usock.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int adopt(int fd, int listening)
{
    int dom = 0, type = 0, acc = -1;
    socklen_t l1 = sizeof(dom), l2 = sizeof(type), l3 = sizeof(acc);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l1) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l2) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l3) < 0)
        return -ENOTSOCK;
    if (dom != AF_UNIX || type != SOCK_STREAM || acc != listening)
        return -EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

int usock_adopt_listener(int fd)
{
    return adopt(fd, 1);
}

int usock_adopt_stream(int fd)
{
    return adopt(fd, 0);
}

static int addr_of(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    size_t len = path ? strnlen(path, sizeof(sa->sun_path)) : 0;
    if (len == 0)
        return -EINVAL;
    if (len >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memcpy(sa->sun_path, path, len);
    return 0;
}

int usock_remove_stale(const char *path)
{
    struct sockaddr_un sa;
    int rc = addr_of(path, &sa);
    if (rc < 0)
        return rc;
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return -errno;
    /* EAGAIN: a live listener whose backlog is full */
    bool live = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN;
    close(s);
    if (live)
        return -EADDRINUSE;
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int usock_listen(const char *path, mode_t mode, gid_t gid, int backlog, int sock_flags)
{
    struct sockaddr_un sa;
    int rc = addr_of(path, &sa);
    if (rc < 0)
        return rc;
    rc = usock_remove_stale(path);
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
    if (fd < 0)
        return -errno;
    mode &= 0777;
    /* A socket file is created with 0777 & ~umask. With a group to set, bind
     * owner-only: the group bits mean nothing until the group is right. */
    mode_t at_bind = gid == USOCK_NO_GROUP ? mode : (mode & 0700);
    mode_t old = umask(~at_bind & 0777);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
    umask(old);
    if (rc < 0) {
        close(fd);
        return rc; /* the path is not ours: leave it */
    }
    if ((gid != USOCK_NO_GROUP && (chown(path, (uid_t)-1, gid) < 0 || chmod(path, mode) < 0)) ||
        listen(fd, backlog) < 0) {
        rc = -errno;
        close(fd);
        unlink(path); /* the socket file we just bound */
        return rc;
    }
    return fd;
}

int usock_connect(const char *path, int sock_flags)
{
    struct sockaddr_un sa;
    int rc = addr_of(path, &sa);
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

long usock_send(int fd, const void *p, size_t n, const int *fds, unsigned nfds, int msg_flags)
{
    if (nfds > USOCK_MAX_FDS)
        return -EINVAL;
    union {
        char buf[CMSG_SPACE(sizeof(int) * USOCK_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds) {
        memset(&u, 0, sizeof(u));
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL | msg_flags);
    if (w < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return (long)w;
}

/* Take the descriptors of one received message: keep what fits, close the rest. */
static void take_fds(struct msghdr *msg, struct usock_fds *fds)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len < CMSG_LEN(0))
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int f;
            memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(f));
            if (fds && fds->n < USOCK_MAX_FDS) {
                fds->fd[fds->n++] = f;
            } else {
                close(f);
                if (fds)
                    fds->dropped = true;
            }
        }
    }
    if (fds && (msg->msg_flags & MSG_CTRUNC))
        fds->dropped = true; /* the kernel closed what did not fit the buffer */
}

long usock_recv(int fd, void *p, size_t n, struct usock_fds *fds, int msg_flags)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * USOCK_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = p, .iov_len = n };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                          .msg_controllen = sizeof(u.buf) };
    ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | msg_flags);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    take_fds(&msg, fds);
    return (long)r;
}

void usock_fds_close(struct usock_fds *fds)
{
    for (unsigned i = 0; i < fds->n; i++)
        close(fds->fd[i]);
    fds->n = 0;
    fds->dropped = false;
}

int usock_adopt_listener_at(int fd, const char *path)
{
    struct sockaddr_un sa, want;
    socklen_t sl = sizeof(sa);
    struct stat st;
    int rc = adopt(fd, 1);
    if (rc == 0)
        rc = addr_of(path, &want);
    memset(&sa, 0, sizeof(sa));
    if (rc == 0 && (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 ||
                    strncmp(sa.sun_path, want.sun_path, sizeof(sa.sun_path)) != 0 || lstat(path, &st) < 0 ||
                    !S_ISSOCK(st.st_mode)))
        rc = -ESTALE;
    return rc;
}
