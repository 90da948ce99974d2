/* Unix stream sockets: listening on a path (one stale-socket rule, the final
 * mode set atomically), connecting, and moving bytes with file descriptors
 * (SCM_RIGHTS). Shared by hostd (host API, vhost-user), host clients and the
 * guest agent. Return a non-negative value (fd, byte count) or -errno. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define USOCK_MAX_FDS 64 /* per usock_send()/usock_recv() call */
#define USOCK_NO_GROUP ((gid_t)-1)

/* Remove path if it is a stale socket (no listener answers). 0 also when
 * nothing is there; -EEXIST for a non-socket, -EADDRINUSE for a live one. */
int usock_remove_stale(const char *path);

/* Listen on path: usock_remove_stale(), then bind so that the file has mode
 * (and group gid unless USOCK_NO_GROUP) before anyone but the owner can reach
 * it; there is no moment where it is more open than mode. sock_flags: extra
 * socket() type flags (SOCK_NONBLOCK); SOCK_CLOEXEC is always set. Returns
 * the listening fd. On failure after bind the file is removed again.
 * The mode is applied through umask around bind(): umask is per process, so
 * call this before starting threads that create files. */
int usock_listen(const char *path, mode_t mode, gid_t gid, int backlog, int sock_flags);

/* An inherited descriptor (e.g. from the service manager) checked to be a
 * Unix stream socket: listening (usock_adopt_listener) or connected
 * (usock_adopt_stream); made non-blocking and close-on-exec. 0 or -ENOTSOCK
 * / -EINVAL; fd stays the caller's either way. */
int usock_adopt_listener(int fd);
int usock_adopt_stream(int fd);
/* usock_adopt_listener for a socket that must be bound to path, and path
 * must still be there (a socket file): -ESTALE when it moved or its file
 * was removed (nobody could connect to it). */
int usock_adopt_listener_at(int fd, const char *path);

/* Connect to path. Returns the fd (SOCK_CLOEXEC plus sock_flags). */
int usock_connect(const char *path, int sock_flags);

/* Send up to n bytes with nfds (<= USOCK_MAX_FDS) descriptors attached to the
 * first byte. msg_flags are added to MSG_NOSIGNAL (e.g. MSG_DONTWAIT).
 * Returns bytes sent; -EAGAIN when the socket is full. */
long usock_send(int fd, const void *p, size_t n, const int *fds, unsigned nfds, int msg_flags);

/* Descriptors received with the bytes (close-on-exec). Owned by the caller. */
struct usock_fds {
    int fd[USOCK_MAX_FDS];
    unsigned n;
    bool dropped; /* some did not fit (here or in the kernel's message) and were closed */
};

/* Receive up to n bytes; descriptors passed with them are appended to fds
 * (NULL: closed). Returns bytes received, 0 at end of stream. */
long usock_recv(int fd, void *p, size_t n, struct usock_fds *fds, int msg_flags);
/* Close every descriptor held in fds and start over (dropped cleared). */
void usock_fds_close(struct usock_fds *fds);
