/* What a restarted hostd needs to resume a VM, kept in the service manager's
 * fd store (fdstore.h): the VM's listening socket, and while QEMU is
 * connected the connection, the memory region fds, the kick/call/err
 * eventfds and a memfd holding the backend's state record
 * (vu_backend_export). Rewritten on every vhost-user change, never per
 * packet. Names: "vm.NAME.listen", ".state", ".conn", ".mem<i>",
 * ".kick<q>", ".call<q>", ".err<q>". */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct hostd;
struct vm;

struct vm_kept {
    int state_fd;        /* the record's memfd; -1: not kept */
    bool conn;           /* which names are in the store now */
    uint32_t regions;    /* bit i: "mem<i>" */
    uint8_t kick, call, err;  /* bit q */
    bool resumed;        /* restored at start: its queues get one look once all VMs are there */
};

/* Listen (on the inherited socket if there is one) and resume the
 * front-end the previous process served, if any. Without an fd store:
 * vu_backend_listen. */
int vm_keep_start(struct hostd *h, struct vm *vm);
/* vu_backend_config.state_changed: store what changed. */
void vm_keep_changed(void *vm);
/* The VM goes: its names leave the store unless hostd is stopping (then
 * the next hostd resumes from them). */
void vm_keep_free(struct hostd *h, struct vm *vm);
