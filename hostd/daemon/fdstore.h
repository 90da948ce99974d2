/* The service manager's file-descriptor store (systemd's protocol, spoken
 * here without libsystemd): descriptors sent with "FDSTORE=1" and a name to
 * $NOTIFY_SOCKET outlive this process and are handed to the next one as
 * $LISTEN_FDS / $LISTEN_FDNAMES (for $LISTEN_PID). hostd keeps in it what a
 * restarted hostd needs to resume each VM (vm_keep.c). */
#pragma once
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

#define FDSTORE_NAME_MAX 96   /* systemd allows 255; ours are "vm.NAME.role" */

struct fdstore_passed {
    char name[FDSTORE_NAME_MAX];
    int fd;                   /* -1 once taken */
};

struct fdstore {
    bool active;              /* $NOTIFY_SOCKET is set: keep descriptors there */
    int sock;                 /* our datagram socket to it */
    struct sockaddr_un addr;
    socklen_t addr_len;
    struct fdstore_passed *passed;   /* what the previous process stored */
    unsigned npassed;
};

/* Read the environment (and unset it). Inactive without $NOTIFY_SOCKET;
 * passed descriptors are accepted only when $LISTEN_PID is this process.
 * 0, or a negative errno for a malformed environment (logged; inactive). */
int fdstore_open(struct fdstore *s);
/* The passed descriptor of that name (the caller owns it), or -1. */
int fdstore_take(struct fdstore *s, const char *name);
/* Store fd (still ours too) under name. 0 or -errno (logged). */
int fdstore_put(struct fdstore *s, const char *name, int fd);
/* Remove every descriptor stored under name. */
void fdstore_drop(struct fdstore *s, const char *name);
/* Passed descriptors nobody took (a VM no longer configured): removed from
 * the store and closed. */
void fdstore_drop_untaken(struct fdstore *s);
/* Close our socket and any untaken descriptor (the store keeps its copies). */
void fdstore_close(struct fdstore *s);
