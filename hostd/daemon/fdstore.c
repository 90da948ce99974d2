/* systemd's fd store protocol (sd_notify(3), sd_listen_fds(3)): one datagram
 * per request to $NOTIFY_SOCKET, descriptors attached with SCM_RIGHTS. */
#include "fdstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define LISTEN_FDS_START 3
#define FDSTORE_PASSED_MAX 65536   /* far beyond FileDescriptorStoreMax= of the unit */

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* $LISTEN_FDS / $LISTEN_FDNAMES for this process into s->passed. */
static int read_passed(struct fdstore *s)
{
    const char *pid_s = getenv("LISTEN_PID"), *n_s = getenv("LISTEN_FDS"), *names = getenv("LISTEN_FDNAMES");
    unsigned long pid, n;
    if (!n_s)
        return 0;
    if (parse_uint(pid_s, (unsigned long)-1, &pid) < 0 || parse_uint(n_s, FDSTORE_PASSED_MAX, &n) < 0) {
        log_err("fdstore: LISTEN_PID=%s LISTEN_FDS=%s malformed: passed descriptors ignored", pid_s ? pid_s : "",
                n_s);
        return -EINVAL;
    }
    if (pid != (unsigned long)getpid()) {
        log_warn("fdstore: LISTEN_PID %lu is not this process: passed descriptors ignored", pid);
        return 0;
    }
    s->passed = calloc(n ? n : 1, sizeof(*s->passed));
    if (!s->passed)
        return -ENOMEM;
    const char *p = names ? names : "";
    for (unsigned long i = 0; i < n; i++) {
        struct fdstore_passed *e = &s->passed[i];
        size_t len = strcspn(p, ":");
        if (len >= sizeof(e->name)) {
            log_warn("fdstore: passed descriptor %lu has a name of %zu bytes: not ours", i, len);
            len = 0;
        }
        memcpy(e->name, p, len);
        e->name[len] = 0;
        p += strcspn(p, ":");
        if (*p == ':')
            p++;
        e->fd = LISTEN_FDS_START + (int)i;
        if (fcntl(e->fd, F_SETFD, FD_CLOEXEC) < 0) {
            log_warn("fdstore: passed descriptor %d (%s): %m", e->fd, e->name);
            e->fd = -1;
        }
    }
    s->npassed = (unsigned)n;
    log_info("fdstore: %lu descriptors passed by the service manager", n);
    return 0;
}

int fdstore_open(struct fdstore *s)
{
    memset(s, 0, sizeof(*s));
    s->sock = -1;
    const char *path = getenv("NOTIFY_SOCKET");
    int ret = 0;
    if (path && *path) {
        size_t len = strlen(path);
        if ((path[0] != '/' && path[0] != '@') || len >= sizeof(s->addr.sun_path)) {
            log_err("fdstore: NOTIFY_SOCKET=%s unusable: restarts will lose guests", path);
            ret = -EINVAL;
        } else {
            s->addr.sun_family = AF_UNIX;
            memcpy(s->addr.sun_path, path, len);
            if (path[0] == '@')
                s->addr.sun_path[0] = 0;   /* abstract namespace */
            s->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
            s->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (s->sock < 0) {
                ret = -errno;
                log_err("fdstore: socket: %m");
            }
            s->active = s->sock >= 0;
        }
    }
    int r = read_passed(s);
    if (ret == 0)
        ret = r;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (s->active)
        log_info("fdstore: keeping VM connections in the service manager's fd store");
    return ret;
}

int fdstore_take(struct fdstore *s, const char *name)
{
    for (unsigned i = 0; i < s->npassed; i++) {
        struct fdstore_passed *e = &s->passed[i];
        if (e->fd >= 0 && !strcmp(e->name, name)) {
            int fd = e->fd;
            e->fd = -1;
            return fd;
        }
    }
    return -1;
}

static int notify(struct fdstore *s, const char *text, int fd)
{
    if (!s->active)
        return -ENOTCONN;
    struct iovec iov = { (void *)text, strlen(text) };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } c;
    struct msghdr m = { .msg_name = &s->addr, .msg_namelen = s->addr_len, .msg_iov = &iov, .msg_iovlen = 1 };
    if (fd >= 0) {
        memset(&c, 0, sizeof(c));
        m.msg_control = c.buf;
        m.msg_controllen = sizeof(c.buf);
        struct cmsghdr *ch = CMSG_FIRSTHDR(&m);
        ch->cmsg_level = SOL_SOCKET;
        ch->cmsg_type = SCM_RIGHTS;
        ch->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(ch), &fd, sizeof(int));
    }
    for (;;) {
        if (sendmsg(s->sock, &m, MSG_NOSIGNAL) >= 0)
            return 0;
        if (errno != EINTR)
            break;
    }
    int e = -errno;
    log_warn("fdstore: \"%s\" to the service manager: %s", text, strerror(-e));
    return e;
}

int fdstore_put(struct fdstore *s, const char *name, int fd)
{
    char msg[FDSTORE_NAME_MAX + 32];
    snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
    return fd < 0 ? -EBADF : notify(s, msg, fd);
}

void fdstore_drop(struct fdstore *s, const char *name)
{
    char msg[FDSTORE_NAME_MAX + 32];
    snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
    (void)notify(s, msg, -1);
}

void fdstore_drop_untaken(struct fdstore *s)
{
    for (unsigned i = 0; i < s->npassed; i++) {
        struct fdstore_passed *e = &s->passed[i];
        if (e->fd < 0)
            continue;
        log_info("fdstore: passed descriptor \"%s\" belongs to nothing configured: dropped", e->name);
        fdstore_drop(s, e->name);
        close(e->fd);
        e->fd = -1;
    }
}

void fdstore_close(struct fdstore *s)
{
    for (unsigned i = 0; i < s->npassed; i++)
        if (s->passed[i].fd >= 0)
            close(s->passed[i].fd);
    free(s->passed);
    s->passed = NULL;
    s->npassed = 0;
    if (s->sock >= 0)
        close(s->sock);
    s->sock = -1;
    s->active = false;
}
