/* VM lifecycle events from the daemon layer: VM_ADDED from hostd_vm_add,
 * VM_CONNECTED / VM_DISCONNECTED from the VM's vhost-user backend, and
 * hostd_publish_vm_event for the code that adds and removes VMs at run
 * time. Each hostd owns its bus: another instance's VMs are not seen. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hostd.h"
#include "log.h"
#include "tap.h"
#include "vhost_user.h"

struct seen {
    unsigned n;
    enum event_type type[16];
    char vm[16][64];
    uint64_t cid[16];
    uint64_t seq[16];
};

static void on_event(void *ctx, const struct event *ev)
{
    struct seen *s = ctx;
    if (s->n < 16) {
        s->type[s->n] = ev->type;
        snprintf(s->vm[s->n], sizeof(s->vm[0]), "%s", ev->vm_name ? ev->vm_name : "");
        s->cid[s->n] = ev->cid;
        s->seq[s->n] = ev->seq;
    }
    s->n++;
}

int main(void)
{
    log_threshold = LOG_WARN;
    struct hostd a, b;
    struct hostd_options o = { .sibling_routing = true };
    CHECK_EQ(hostd_init(&a, &o), 0);
    CHECK_EQ(hostd_init(&b, &o), 0);
    CHECK(a.events != NULL && b.events != NULL && a.events != b.events);
    struct seen sa = { 0 }, sb = { 0 };
    CHECK(events_subscribe(a.events, 0, on_event, &sa) > 0);
    CHECK(events_subscribe(b.events, 1u << EV_VM_ADDED, on_event, &sb) > 0);

    struct vm_config c = { .name = "alpha", .cid = 7 };
    CHECK_EQ(hostd_vm_add(&a, &c), 0);
    CHECK_EQ(hostd_vm_add(&a, &c), -EEXIST); /* refused: no event */
    CHECK_EQ(sa.n, 1);
    CHECK(sa.type[0] == EV_VM_ADDED && !strcmp(sa.vm[0], "alpha") && sa.cid[0] == 7 && sa.seq[0] == 1);
    CHECK_EQ(sb.n, 0); /* b has its own bus */

    /* the backend tells when a front-end comes and goes */
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    CHECK_EQ(vu_backend_adopt_conn(a.vms[0]->vu, sv[0]), 0);
    vu_backend_disconnect(a.vms[0]->vu, "test hangs up");
    close(sv[1]);
    vu_backend_disconnect(a.vms[0]->vu, "again"); /* nobody connected: nothing to tell */
    CHECK_EQ(sa.n, 3);
    CHECK(sa.type[1] == EV_VM_CONNECTED && sa.cid[1] == 7 && sa.seq[1] == 2);
    CHECK(sa.type[2] == EV_VM_DISCONNECTED && !strcmp(sa.vm[2], "alpha") && sa.seq[2] == 3);

    /* run-time removal: the same stream, the same numbering; a connected
     * front-end is told first (VM_DISCONNECTED), then VM_REMOVED */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 && vu_backend_adopt_conn(a.vms[0]->vu, sv[0]) == 0);
    CHECK_EQ(hostd_vm_remove(&a, "alpha"), 0);
    close(sv[1]);
    CHECK_EQ(sa.n, 6);
    CHECK(sa.type[3] == EV_VM_CONNECTED && sa.seq[3] == 4);
    CHECK(sa.type[4] == EV_VM_DISCONNECTED && sa.seq[4] == 5);
    CHECK(sa.type[5] == EV_VM_REMOVED && !strcmp(sa.vm[5], "alpha") && sa.cid[5] == 7 && sa.seq[5] == 6);
    CHECK_EQ(hostd_vm_remove(&a, "alpha"), -ENOENT); /* gone: no event */
    hostd_publish_vm_event(&a, NULL, EV_VM_REMOVED, NULL); /* no VM: ignored */
    CHECK_EQ(sa.n, 6);

    /* a filter on b: VM_ADDED only */
    c.cid = 8;
    CHECK_EQ(hostd_vm_add(&b, &c), 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 && vu_backend_adopt_conn(b.vms[0]->vu, sv[0]) == 0);
    close(sv[1]);
    vu_backend_disconnect(b.vms[0]->vu, "test hangs up");
    CHECK_EQ(sb.n, 1);
    CHECK(sb.type[0] == EV_VM_ADDED && sb.cid[0] == 8);
    CHECK_EQ(sa.n, 6);
    hostd_fini(&a); /* frees the bus with its subscriber (LeakSanitizer checks) */
    hostd_fini(&b);
    return tap_done();
}
