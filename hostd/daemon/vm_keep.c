/* A VM's resumable state in the fd store (vm_keep.h). */
#include "vm_keep.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hostd.h"
#include "log.h"
#include "vhost_user.h"

enum role { R_LISTEN, R_STATE, R_CONN, R_MEM, R_KICK, R_CALL, R_ERR };
static const char *const role_name[] = { "listen", "state", "conn", "mem", "kick", "call", "err" };

/* "vm.NAME.role" or "vm.NAME.role<i>" */
static const char *fdname(char buf[FDSTORE_NAME_MAX], const struct vm *vm, enum role r, int i)
{
    if (i < 0)
        snprintf(buf, FDSTORE_NAME_MAX, "vm.%s.%s", vm->cfg.name, role_name[r]);
    else
        snprintf(buf, FDSTORE_NAME_MAX, "vm.%s.%s%d", vm->cfg.name, role_name[r], i);
    return buf;
}

static bool keeping(const struct hostd *h)
{
    return h->store.active && !h->stopping;
}

static void put(struct hostd *h, struct vm *vm, enum role r, int i, int fd)
{
    char n[FDSTORE_NAME_MAX];
    fdstore_put(&h->store, fdname(n, vm, r, i), fd);
}

static void drop(struct hostd *h, struct vm *vm, enum role r, int i)
{
    char n[FDSTORE_NAME_MAX];
    fdstore_drop(&h->store, fdname(n, vm, r, i));
}

/* Drop every per-connection name the store holds for vm. */
static void drop_conn(struct hostd *h, struct vm *vm)
{
    struct vm_kept *k = &vm->kept;
    if (k->conn)
        drop(h, vm, R_CONN, -1);
    for (int i = 0; i < VU_MAX_MEM_SLOTS; i++)
        if (k->regions & (1u << i))
            drop(h, vm, R_MEM, i);
    for (int q = 0; q < VU_MAX_QUEUES; q++) {
        if (k->kick & (1u << q))
            drop(h, vm, R_KICK, q);
        if (k->call & (1u << q))
            drop(h, vm, R_CALL, q);
        if (k->err & (1u << q))
            drop(h, vm, R_ERR, q);
    }
    k->conn = false;
    k->regions = 0;
    k->kick = k->call = k->err = 0;
}

/* Replace what the store holds for the connection with what the backend
 * has now, then the record: a record never names descriptors that are
 * not stored yet. */
static void sync_vm(struct hostd *h, struct vm *vm)
{
    struct vm_kept *k = &vm->kept;
    uint8_t rec[VU_STATE_REC_SIZE];
    struct vu_state_fds f;
    if (!keeping(h) || k->state_fd < 0 || !vm->vu)
        return;
    vu_backend_export(vm->vu, rec, &f);
    drop_conn(h, vm);
    if (f.conn >= 0) {
        put(h, vm, R_CONN, -1, f.conn);
        k->conn = true;
    }
    for (int i = 0; i < VU_MAX_MEM_SLOTS; i++)
        if (f.region[i] >= 0) {
            put(h, vm, R_MEM, i, f.region[i]);
            k->regions |= 1u << i;
        }
    for (int q = 0; q < VU_MAX_QUEUES; q++) {
        if (f.kick[q] >= 0) {
            put(h, vm, R_KICK, q, f.kick[q]);
            k->kick |= (uint8_t)(1u << q);
        }
        if (f.call[q] >= 0) {
            put(h, vm, R_CALL, q, f.call[q]);
            k->call |= (uint8_t)(1u << q);
        }
        if (f.err[q] >= 0) {
            put(h, vm, R_ERR, q, f.err[q]);
            k->err |= (uint8_t)(1u << q);
        }
    }
    if (pwrite(k->state_fd, rec, sizeof(rec), 0) != (ssize_t)sizeof(rec))
        log_warn("vm %s: state record not written (%m): a restart would lose this VM's QEMU", vm->cfg.name);
}

void vm_keep_changed(void *opaque)
{
    struct vm *vm = opaque;
    sync_vm(vm->hostd, vm);
}

/* Take the passed descriptor `name` into *slot and remember it is stored. */
static bool take(struct hostd *h, struct vm *vm, enum role r, int i, int *slot)
{
    char n[FDSTORE_NAME_MAX];
    *slot = fdstore_take(&h->store, fdname(n, vm, r, i));
    return *slot >= 0;
}

/* Resume from the previous process's record and descriptors. */
static void resume(struct hostd *h, struct vm *vm)
{
    struct vm_kept *k = &vm->kept;
    uint8_t rec[VU_STATE_REC_SIZE];
    struct vu_state_fds f;
    vu_state_fds_init(&f);
    k->conn = take(h, vm, R_CONN, -1, &f.conn);
    for (int i = 0; i < VU_MAX_MEM_SLOTS; i++)
        k->regions |= take(h, vm, R_MEM, i, &f.region[i]) ? 1u << i : 0;
    for (int q = 0; q < VU_MAX_QUEUES; q++) {
        k->kick |= (uint8_t)(take(h, vm, R_KICK, q, &f.kick[q]) ? 1u << q : 0);
        k->call |= (uint8_t)(take(h, vm, R_CALL, q, &f.call[q]) ? 1u << q : 0);
        k->err |= (uint8_t)(take(h, vm, R_ERR, q, &f.err[q]) ? 1u << q : 0);
    }
    ssize_t n = pread(k->state_fd, rec, sizeof(rec), 0);
    int r = vu_backend_restore(vm->vu, rec, n < 0 ? 0 : (size_t)n, &f);
    k->resumed = r == 0;
    if (r == 0)
        log_info("vm %s: resumed after a hostd restart (no vhost-user exchange)", vm->cfg.name);
    else if (r != -ENODATA)
        log_err("vm %s: kept state refused (%s): this VM's QEMU is not served until it reconnects", vm->cfg.name,
                strerror(-r));
}

int vm_keep_start(struct hostd *h, struct vm *vm)
{
    struct vm_kept *k = &vm->kept;
    k->state_fd = -1;
    if (!h->store.active)
        return vu_backend_listen(vm->vu);
    int lfd;
    bool inherited = take(h, vm, R_LISTEN, -1, &lfd);
    int r = inherited ? vu_backend_listen_on(vm->vu, lfd) : -ENOENT;
    if (r < 0) {
        inherited = false;
        r = vu_backend_listen(vm->vu);
        if (r < 0)
            return r;
    }
    uint8_t rec[VU_STATE_REC_SIZE];
    struct vu_state_fds f;
    vu_backend_export(vm->vu, rec, &f);
    if (!inherited) {
        drop(h, vm, R_LISTEN, -1);   /* an inherited one we could not use */
        put(h, vm, R_LISTEN, -1, f.listen);
    }
    if (take(h, vm, R_STATE, -1, &k->state_fd)) {
        resume(h, vm);
    } else {
        k->state_fd = memfd_create("mdlmap-vm-state", MFD_CLOEXEC);
        if (k->state_fd < 0 || ftruncate(k->state_fd, VU_STATE_REC_SIZE) < 0) {
            log_err("vm %s: state memfd: %m: a restart will lose this VM's QEMU", vm->cfg.name);
            return 0;
        }
        put(h, vm, R_STATE, -1, k->state_fd);
    }
    sync_vm(h, vm);
    return 0;
}

void vm_keep_free(struct hostd *h, struct vm *vm)
{
    struct vm_kept *k = &vm->kept;
    if (keeping(h) && k->state_fd >= 0) {
        drop_conn(h, vm);
        drop(h, vm, R_STATE, -1);
        drop(h, vm, R_LISTEN, -1);
    }
    if (k->state_fd >= 0)
        close(k->state_fd);
    k->state_fd = -1;
}
