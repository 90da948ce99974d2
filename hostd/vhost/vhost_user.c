/* vhost-user server socket for one VM: listen, accept one QEMU at a time,
 * reassemble messages (with SCM_RIGHTS fds) from the non-blocking stream and
 * hand them to vu_process_msg. Any error drops the connection and tears the
 * device down; the VM keeps listening for the next QEMU. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "vu_internal.h"

#define VU_MSGS_PER_EVENT 32 /* fairness between VMs: level-triggered epoll resumes us */

static void rx_reset(struct vu_conn *c)
{
    for (unsigned i = 0; i < c->nfds; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    c->nfds = 0;
    c->hdr_got = 0;
    c->pay_got = 0;
}

static uint32_t hdr_size(const struct vu_conn *c)
{
    struct vu_msg_hdr h;
    memcpy(&h, c->hdr, sizeof(h));
    return h.size;
}

/* Keep fds from SCM_RIGHTS; any beyond the per-message limit are closed. */
static int collect_fds(struct vm *vm, struct vu_conn *c, struct msghdr *msg)
{
    int ret = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
            if (c->nfds < VHOST_USER_MAX_FDS) {
                c->fds[c->nfds++] = fd;
            } else {
                close(fd);
                ret = -EPROTO;
            }
        }
    }
    if (msg->msg_flags & MSG_CTRUNC)
        ret = -EPROTO; /* the kernel dropped fds that did not fit */
    if (ret < 0)
        log_warn("vm %s: too many fds in one message", vm->name);
    return ret;
}

/* 1: a whole message is buffered; 0: need more data; <0: drop connection. */
static int rx_step(struct vm *vm, struct vu_conn *c)
{
    for (;;) {
        if (c->hdr_got == VHOST_USER_HDR_SIZE) {
            uint32_t sz = hdr_size(c);
            if (sz > VHOST_USER_MAX_PAYLOAD) {
                log_warn("vm %s: message payload %u too large", vm->name, sz);
                return -EMSGSIZE;
            }
            if (c->pay_got == sz)
                return 1;
        }
        uint8_t *dst;
        size_t want;
        if (c->hdr_got < VHOST_USER_HDR_SIZE) {
            dst = c->hdr + c->hdr_got;
            want = VHOST_USER_HDR_SIZE - c->hdr_got;
        } else {
            dst = c->payload + c->pay_got;
            want = hdr_size(c) - c->pay_got;
        }
        union {
            char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = { dst, want };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                              .msg_controllen = sizeof(ctl.buf) };
        ssize_t n = recvmsg(vm->conn_fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            log_warn("vm %s: vhost-user recvmsg: %m", vm->name);
            return -errno;
        }
        int r = collect_fds(vm, c, &msg);
        if (r < 0)
            return r;
        if (n == 0)
            return -ECONNRESET;
        if (c->hdr_got < VHOST_USER_HDR_SIZE)
            c->hdr_got += (size_t)n;
        else
            c->pay_got += (size_t)n;
    }
}

static void on_conn(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    struct vu_conn *c = vm->vu;
    int fd = vm->conn_fd;
    for (int budget = VU_MSGS_PER_EVENT; budget > 0; budget--) {
        if (vm->conn_fd != fd || fd < 0)
            return;
        int r = rx_step(vm, c);
        if (r == 0)
            break;
        if (r < 0) {
            vu_vm_disconnect(vm, r == -ECONNRESET ? "front-end closed the connection" : "receive error");
            return;
        }
        struct vu_msg_hdr h;
        memcpy(&h, c->hdr, sizeof(h));
        unsigned nfds = c->nfds;
        c->nfds = 0; /* vu_process_msg owns them now */
        r = vu_process_msg(vm, &h, c->payload, c->fds, nfds);
        c->hdr_got = 0;
        c->pay_got = 0;
        if (r < 0) {
            vu_vm_disconnect(vm, "protocol violation");
            return;
        }
    }
    if (vm->conn_fd == fd && !(events & EPOLLIN) && (events & (EPOLLHUP | EPOLLERR)))
        vu_vm_disconnect(vm, "connection hung up");
}

static void on_accept(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    int fd = accept4(vm->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            log_warn("vm %s: accept: %m", vm->name);
        return;
    }
    struct ucred cred = { 0, 0, 0 };
    socklen_t cl = sizeof(cred);
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
    if (vm->conn_fd >= 0) {
        log_warn("vm %s: refusing second vhost-user connection (pid %d): one front-end at a time",
                 vm->name, (int)cred.pid);
        close(fd);
        return;
    }
    int ret = evloop_add(vm->hostd->loop, &vm->conn_h, fd, EPOLLIN, on_conn, vm);
    if (ret < 0) {
        close(fd);
        return;
    }
    vm->conn_fd = fd;
    rx_reset(vm->vu);
    log_info("vm %s: vhost-user front-end connected (pid %d)", vm->name, (int)cred.pid);
}

/* Remove a stale socket file, but never a live socket or a non-socket. */
static int remove_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return -errno;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    memcpy(a.sun_path, path, strnlen(path, sizeof(a.sun_path) - 1));
    /* EAGAIN: a live listener with a full backlog */
    int live = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 || errno == EAGAIN;
    close(s);
    if (live)
        return -EADDRINUSE;
    return unlink(path) < 0 ? -errno : 0;
}

int vu_vm_listen(struct vm *vm)
{
    if (!vm || !vm->hostd || !vm->hostd->loop)
        return -EINVAL;
    size_t plen = strnlen(vm->socket_path, sizeof(vm->socket_path));
    if (plen == 0 || plen >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    if (!vu_conn_get(vm))
        return -ENOMEM;
    vm->conn_fd = -1;
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++)
        vm->vq[q].owner = vm->name;
    int ret = remove_stale(vm->socket_path);
    if (ret < 0) {
        log_err("vm %s: socket path %s: %s", vm->name, vm->socket_path,
                ret == -EEXIST ? "exists and is not a socket" :
                ret == -EADDRINUSE ? "another server is listening" : strerror(-ret));
        return ret;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        ret = -errno;
        log_err("vm %s: socket: %m", vm->name);
        return ret;
    }
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    memcpy(a.sun_path, vm->socket_path, plen);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4) < 0) {
        ret = -errno;
        log_err("vm %s: bind/listen %s: %m", vm->name, vm->socket_path);
        close(fd);
        return ret;
    }
    /* Let a QEMU that runs as another user (libvirt's libvirt-qemu) connect
     * without opening the socket to everyone. */
    if (vm->hostd->socket_group_set &&
        (chown(vm->socket_path, (uid_t)-1, (gid_t)vm->hostd->socket_gid) < 0 ||
         chmod(vm->socket_path, 0660) < 0)) {
        ret = -errno;
        log_err("vm %s: chown/chmod %s: %m", vm->name, vm->socket_path);
        close(fd);
        unlink(vm->socket_path);
        return ret;
    }
    ret = evloop_add(vm->hostd->loop, &vm->listen_h, fd, EPOLLIN, on_accept, vm);
    if (ret < 0) {
        close(fd);
        unlink(vm->socket_path);
        return ret;
    }
    vm->listen_fd = fd;
    log_info("vm %s: cid %llu listening on %s", vm->name, (unsigned long long)vm->cid, vm->socket_path);
    return 0;
}

void vu_vm_disconnect(struct vm *vm, const char *why)
{
    if (vm->conn_fd >= 0) {
        log_info("vm %s: vhost-user front-end disconnected: %s", vm->name, why);
        evloop_del(vm->hostd ? vm->hostd->loop : NULL, &vm->conn_h);
        close(vm->conn_fd);
        vm->conn_fd = -1;
    }
    if (vm->vu)
        rx_reset(vm->vu);
    vu_device_teardown(vm, why);
    memtable_clear(&vm->mem);
    vm->features = 0;
    vm->protocol_features = 0;
    vm->owner_set = false;
}

void vu_vm_close(struct vm *vm)
{
    if (!vm)
        return;
    vu_vm_disconnect(vm, "hostd shutting down");
    if (vm->listen_fd >= 0) {
        evloop_del(vm->hostd ? vm->hostd->loop : NULL, &vm->listen_h);
        close(vm->listen_fd);
        vm->listen_fd = -1;
        unlink(vm->socket_path);
    }
    if (vm->vu && vm->vu->poll_fd >= 0) { /* normally stopped by the teardown above */
        evloop_del(vm->hostd ? vm->hostd->loop : NULL, &vm->vu->poll_h);
        close(vm->vu->poll_fd);
    }
    free(vm->vu);
    vm->vu = NULL;
}
