/* Two hostds in one process: nothing per-VM or per-hostd lives in a static
 * table, so each instance sees only its own VMs, devices and services. Both
 * serve a VM with the same name and CID; each answers its own front-end. */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hostd.h"
#include "log.h"
#include "tap.h"
#include "vhost_user.h"

/* GET_CONFIG(guest_cid) through vm's backend, answered on a socketpair. */
static uint64_t config_cid(struct vm *vm)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || vu_backend_adopt_conn(vm->vu, sv[0]) < 0)
        return 0;
    /* header, then struct vu_config (offset 0, size 8, flags 0) and 8 bytes of room */
    struct vu_msg_hdr h = { VHOST_USER_GET_CONFIG, VHOST_USER_VERSION, sizeof(struct vu_config) + 8 };
    uint8_t payload[sizeof(struct vu_config) + 8] = { 0 };
    struct vu_config c = { 0, 8, 0 };
    memcpy(payload, &c, sizeof(c));
    uint8_t rep[sizeof(struct vu_msg_hdr) + sizeof(payload)];
    uint64_t cid = 0;
    if (vu_backend_process(vm->vu, &h, payload, NULL, 0) == 0 && read(sv[1], rep, sizeof(rep)) == (ssize_t)sizeof(rep)) {
        memcpy(&cid, rep + sizeof(struct vu_msg_hdr) + sizeof(struct vu_config), sizeof(cid));
        cid = le64toh(cid);
    }
    vu_backend_disconnect(vm->vu, "test done");
    close(sv[1]);
    return cid;
}

int main(void)
{
    log_threshold = LOG_WARN;
    struct hostd a, b;
    struct hostd_options o = { .sibling_routing = true };
    CHECK_EQ(hostd_init(&a, &o), 0);
    CHECK_EQ(hostd_init(&b, &o), 0);
    struct vm_config c = { .name = "same", .cid = 3 };
    CHECK_EQ(hostd_vm_add(&a, &c), 0);
    CHECK_EQ(hostd_vm_add(&b, &c), 0);          /* the same name and CID: another instance */
    CHECK_EQ(hostd_vm_add(&a, &c), -EEXIST);    /* but unique within one */
    c.cid = 4;
    snprintf(c.name, sizeof(c.name), "only-in-b");
    CHECK_EQ(hostd_vm_add(&b, &c), 0);
    CHECK(hostd_vm_by_cid(&a, 3) == a.vms[0] && hostd_vm_by_cid(&b, 3) == b.vms[0] && a.vms[0] != b.vms[0]);
    CHECK(hostd_vm_by_cid(&a, 4) == NULL && hostd_vm_by_cid(&b, 4) != NULL);
    CHECK(a.vms[0]->vsock != b.vms[0]->vsock && a.vms[0]->mdl != b.vms[0]->mdl && a.rpc != b.rpc);
    CHECK_EQ(config_cid(a.vms[0]), 3);
    CHECK_EQ(config_cid(b.vms[1]), 4);
    hostd_fini(&a);
    CHECK_EQ(config_cid(b.vms[0]), 3);          /* b is untouched by a's teardown */
    hostd_fini(&b);
    return tap_done();
}
