/* VMs added and removed at run time through the host API (VmAdd, VmRemove,
 * VmList), against a real hostd:
 *   - a VM added while another VM's guest holds an open echo connection:
 *     a harness QEMU connects to it and echoes; the first guest's connection
 *     echoes before, during and after;
 *   - removing a VM whose guest holds an RPC connection with a locked MDL and
 *     a mapping: the mapping is recorded as a leak ("VM removed"), its socket
 *     is gone, its QEMU connection is closed, hostd's fd count is back where
 *     it was, the other VM still echoes, and a VM with the same name, CID and
 *     socket can be added again and serves;
 *   - duplicates (name, CID, socket), bad specs and a client without the
 *     admin right are refused with a status saying which;
 *   - a VM removed while its guest exchanges data with a sibling VM: the
 *     sibling's connection is reset, new connects to the removed CID are
 *     refused, hostd keeps serving.
 * Runs as root (a forked child drops to uid 65534 for the rights check).
 * usage: test_vm_runtime HOSTD */
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "rpc_session.h"

#define ST(x) MDLMAP__V1__NT_STATUS__STATUS_##x
#define BUF_PFN 0x800u
#define NOBODY 65534u

static struct rig R;

/* One VM request on a fresh connection: the status (INT32_MIN: no answer),
 * the detail copied out, the reply kept in *keep if asked. */
static int32_t call(mdl_envelope *e, char *detail, size_t dlen, mdl_envelope **keep)
{
    mdl_envelope *r = api_call(R.api, e);
    int32_t st = r ? r->status : INT32_MIN;
    if (detail)
        snprintf(detail, dlen, "%s", r && r->detail ? r->detail : "");
    if (keep)
        *keep = r;
    else
        frame_envelope_free(r);
    return st;
}

static int32_t vm_add_spec(Mdlmap__V1__VmSpec *s, char *detail, size_t dlen)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmAddRequest rq = MDLMAP__V1__VM_ADD_REQUEST__INIT;
    rq.vm = s;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_ADD;
    e.vm_add = &rq;
    return call(&e, detail, dlen, NULL);
}

static int32_t vm_add(const char *name, uint64_t cid, const char *sock, char *detail, size_t dlen)
{
    Mdlmap__V1__VmSpec s = MDLMAP__V1__VM_SPEC__INIT;
    s.name = (char *)name;
    s.cid = cid;
    s.socket = (char *)sock;
    return vm_add_spec(&s, detail, dlen);
}

static int32_t vm_remove(const char *name)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmRemoveRequest rq = MDLMAP__V1__VM_REMOVE_REQUEST__INIT;
    rq.name = (char *)name;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE;
    e.vm_remove = &rq;
    return call(&e, NULL, 0, NULL);
}

/* VmList's reply (free it) or NULL. */
static mdl_envelope *vm_list(void)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmListRequest rq = MDLMAP__V1__VM_LIST_REQUEST__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_LIST;
    e.vm_list = &rq;
    mdl_envelope *r = NULL;
    if (call(&e, NULL, 0, &r) != ST(SUCCESS) || !r || r->body_case != MDLMAP__V1__ENVELOPE__BODY_VM_LIST_REPLY) {
        frame_envelope_free(r);
        return NULL;
    }
    return r;
}

static const Mdlmap__V1__VmInfo *find_vm(const mdl_envelope *l, const char *name)
{
    for (size_t i = 0; l && i < l->vm_list_reply->n_vms; i++)
        if (l->vm_list_reply->vms[i]->vm && !strcmp(l->vm_list_reply->vms[i]->vm->name, name))
            return l->vm_list_reply->vms[i];
    return NULL;
}

static unsigned list_count(void)
{
    mdl_envelope *l = vm_list();
    unsigned n = l ? (unsigned)l->vm_list_reply->n_vms : ~0u;
    frame_envelope_free(l);
    return n;
}

/* Echo n bytes over an open connection to the echo service. */
static bool echo_on(struct vc_conn *c, size_t n, uint32_t seed)
{
    uint8_t out[4096], in[4096];
    if (n > sizeof(out))
        n = sizeof(out);
    fill_pattern(out, n, seed);
    return c && vc_echo(c, out, in, n, 4000) == 0 && !memcmp(out, in, n);
}

/* hostd's open fds reach want within ms (its API client fds close after ours). */
static int fds_reach(int want, int ms)
{
    long long end = now_ms() + ms;
    int n = proc_count_fds(R.p.pid);
    while (n != want && now_ms() < end) {
        vdev_pump(20);
        n = proc_count_fds(R.p.pid);
    }
    return n;
}

static bool has_removed_leak(const char *vm)
{
    mdl_envelope *s = api_stats(R.api);
    bool found = false;
    for (size_t i = 0; s && i < s->stats_reply->n_recent_leaks; i++) {
        const Mdlmap__V1__LeakRecord *l = s->stats_reply->recent_leaks[i];
        if (l->vm_name && !strcmp(l->vm_name, vm) && l->was_mapped && l->reason && strstr(l->reason, "VM removed"))
            found = true;
        else
            tap_diag("leak record: vm %s, reason '%s', was_mapped %d", l->vm_name, l->reason, l->was_mapped);
    }
    frame_envelope_free(s);
    return found;
}

/* Add a VM, bring a harness QEMU up on it, echo while a's connection ca
 * keeps echoing; then remove it holding a mapping. */
static void add_and_remove(struct vdev *a, struct vc_conn *ca)
{
    char sock[200], detail[256];
    snprintf(sock, sizeof(sock), "%s/late.sock", R.dir);
    int fds0 = proc_count_fds(R.p.pid);

    tap_check(vm_add("late", 5, sock, detail, sizeof(detail)) == ST(SUCCESS), "VmAdd late (cid 5) at run time%s%s",
              *detail ? ": " : "", detail);
    tap_check(access(sock, F_OK) == 0, "its socket %s exists", sock);
    mdl_envelope *l = vm_list();
    const Mdlmap__V1__VmInfo *vi = find_vm(l, "late");
    tap_check(l && l->vm_list_reply->n_vms == 2 && vi && vi->vm->cid == 5 && !strcmp(vi->vm->socket, sock) &&
                  !vi->connected && !vi->qmp_connected,
              "VmList: 2 VMs, late with cid 5, its socket, not connected yet");
    frame_envelope_free(l);

    tap_check(echo_on(ca, 1000, 1), "vm0's open connection echoes after the add");
    struct vdev *b = vdev_alloc();
    int rc = vdev_up(b, sock, 5, NULL);
    if (!tap_check(rc == 0, "a harness QEMU connects to the added VM: %s", rc ? b->last_err : "ok")) {
        free(b);
        return;
    }
    char why[256] = "";
    tap_check(vdev_echo_check(b, 4096, 4000, why, sizeof(why)) == 0, "the added VM's guest echoes %s", why);
    tap_check(echo_on(ca, 2000, 2), "vm0's open connection still echoes");

    /* a guest RPC connection on the added VM with a locked MDL and a mapping */
    struct rpc_session s;
    bool mapped = false;
    if (tap_check(rpc_open(&s, b), "late: RPC connection")) {
        uint64_t pfn = BUF_PFN, mdl = 0;
        Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
        struct rpc_mapping m;
        mapped = rpc_lock(&s, 0, 4096, &pfn, 1, 1, &mdl) == ST(SUCCESS);
        rq.mdl_handle = mdl;
        rq.cache_type = 1;
        rq.priority = 16;
        mapped = mapped && rpc_map(&s, &rq, &m) == ST(SUCCESS);
        tap_check(mapped, "late: lock and map one page");
    }
    l = vm_list();
    vi = find_vm(l, "late");
    tap_check(vi && vi->connected && vi->ram_bytes > 0 && vi->connections >= 1 && vi->mappings == 1 &&
                  vi->mapped_pages == 1 && vi->locked_mdls == 1,
              "VmList: late connected, %llu RAM bytes, %u connections, %llu mappings, %llu pages, %llu MDLs",
              vi ? (unsigned long long)vi->ram_bytes : 0ull, vi ? vi->connections : 0,
              vi ? (unsigned long long)vi->mappings : 0ull, vi ? (unsigned long long)vi->mapped_pages : 0ull,
              vi ? (unsigned long long)vi->locked_mdls : 0ull);
    vi = find_vm(l, "vm0");
    tap_check(vi && vi->connected && vi->connections >= 1 && vi->mappings == 0,
              "VmList: vm0 connected with its echo connection, no mappings");
    frame_envelope_free(l);

    tap_check(vm_remove("late") == ST(SUCCESS), "VmRemove late (a guest connection holds a mapping)");
    long long end = now_ms() + 3000;
    while (!b->dead && now_ms() < end)
        vdev_pump(20);
    tap_check(b->dead, "the removed VM's QEMU connection is closed");
    tap_check(access(sock, F_OK) < 0 && errno == ENOENT, "its socket is gone");
    tap_check(has_removed_leak("late"), "its mapping is recorded as a leak with reason \"VM removed\"");
    l = vm_list();
    tap_check(l && l->vm_list_reply->n_vms == 1 && find_vm(l, "vm0") && !find_vm(l, "late"), "VmList: only vm0 left");
    frame_envelope_free(l);
    mdl_envelope *st = api_stats(R.api);
    tap_check(st && st->stats_reply->mappings == 0 && st->stats_reply->locked_mdls == 0,
              "the engine holds no mapping or MDL any more");
    frame_envelope_free(st);
    tap_check(echo_on(ca, 3000, 3), "vm0's open connection echoes after the removal");
    tap_check(vm_remove("late") == ST(NOT_FOUND), "a second VmRemove late: STATUS_NOT_FOUND");
    if (s.c)
        rpc_forget(&s);
    vdev_down(b);
    free(b);
    int fds1 = fds_reach(fds0, 3000);
    tap_check(fds1 == fds0, "hostd's fds are back to %d after add, connect and remove (%d)", fds0, fds1);

    /* the same name, CID and socket again */
    tap_check(vm_add("late", 5, sock, detail, sizeof(detail)) == ST(SUCCESS), "VmAdd late again (same cid, socket)%s%s",
              *detail ? ": " : "", detail);
    struct vdev *c = vdev_alloc();
    rc = vdev_up(c, sock, 5, NULL);
    why[0] = 0;
    tap_check(rc == 0 && vdev_echo_check(c, 4096, 4000, why, sizeof(why)) == 0,
              "the re-added VM's guest echoes %s%s", rc ? c->last_err : "", why);
    vdev_down(c);
    free(c);
    tap_check(vm_remove("late") == ST(SUCCESS), "VmRemove late (its QEMU already gone)");
    (void)a;
}

static void refusals(void)
{
    char sock[200], detail[256];
    snprintf(sock, sizeof(sock), "%s/x.sock", R.dir);
    tap_check(vm_add("vm0", 9, sock, detail, sizeof(detail)) == ST(OBJECT_NAME_COLLISION) && strstr(detail, "name"),
              "VmAdd with vm0's name: STATUS_OBJECT_NAME_COLLISION (%s)", detail);
    tap_check(vm_add("x", 3, sock, detail, sizeof(detail)) == ST(OBJECT_NAME_COLLISION) && strstr(detail, "cid"),
              "VmAdd with vm0's cid: STATUS_OBJECT_NAME_COLLISION (%s)", detail);
    tap_check(vm_add("x", 9, R.p.vm[0].sock, detail, sizeof(detail)) == ST(OBJECT_NAME_COLLISION) &&
                  strstr(detail, "socket"),
              "VmAdd with vm0's socket: STATUS_OBJECT_NAME_COLLISION (%s)", detail);
    tap_check(vm_add("x", 2, sock, detail, sizeof(detail)) == ST(INVALID_PARAMETER) && strstr(detail, "cid"),
              "VmAdd with cid 2 (the host): STATUS_INVALID_PARAMETER (%s)", detail);
    tap_check(vm_add("bad name", 9, sock, detail, sizeof(detail)) == ST(INVALID_PARAMETER) && strstr(detail, "name"),
              "VmAdd with a bad name: STATUS_INVALID_PARAMETER (%s)", detail);
    tap_check(vm_add("x", 9, "", detail, sizeof(detail)) == ST(INVALID_PARAMETER) && strstr(detail, "socket"),
              "VmAdd without a socket: STATUS_INVALID_PARAMETER (%s)", detail);
    char longp[300];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = 0;
    tap_check(vm_add("x", 9, longp, detail, sizeof(detail)) == ST(INVALID_PARAMETER),
              "VmAdd with a 299-byte socket path: STATUS_INVALID_PARAMETER (%s)", detail);
    tap_check(vm_add_spec(NULL, detail, sizeof(detail)) == ST(INVALID_PARAMETER), "VmAdd without a VmSpec (%s)",
              detail);
    Mdlmap__V1__VmSpec s = MDLMAP__V1__VM_SPEC__INIT;
    s.name = "x";
    s.cid = 9;
    s.socket = sock;
    s.user = "no-such-user-mdlmap";
    tap_check(vm_add_spec(&s, detail, sizeof(detail)) == ST(NOT_FOUND) && strstr(detail, "no-such-user"),
              "VmAdd with an unknown user: STATUS_NOT_FOUND (%s)", detail);
    tap_check(list_count() == 1 && access(sock, F_OK) < 0, "nothing was added by the refused requests");

    /* two VMs cannot share a QMP socket (QEMU serves one QMP client) */
    char qmp[200], sock2[200];
    snprintf(qmp, sizeof(qmp), "%s/q.qmp", R.dir);
    snprintf(sock2, sizeof(sock2), "%s/q2.sock", R.dir);
    s.user = "";
    s.name = "q1";
    s.qmp = qmp;
    tap_check(vm_add_spec(&s, detail, sizeof(detail)) == ST(SUCCESS), "VmAdd q1 with qmp= %s", detail);
    mdl_envelope *l = vm_list();
    const Mdlmap__V1__VmInfo *vi = find_vm(l, "q1");
    tap_check(vi && !strcmp(vi->vm->qmp, qmp) && !vi->qmp_connected,
              "VmList: q1's QMP socket, not connected (nothing listens there)");
    frame_envelope_free(l);
    s.name = "q2";
    s.cid = 10;
    s.socket = sock2;
    tap_check(vm_add_spec(&s, detail, sizeof(detail)) == ST(OBJECT_NAME_COLLISION) && strstr(detail, "qmp"),
              "VmAdd q2 with q1's QMP socket: STATUS_OBJECT_NAME_COLLISION (%s)", detail);
    tap_check(vm_remove("q1") == ST(SUCCESS) && list_count() == 1, "VmRemove q1");
}

/* A child as uid 65534 (--api-read names it): VmList works, VmAdd and
 * VmRemove are denied. Exit code: bit 0 list failed, 1 add not denied,
 * 2 remove not denied. */
static void no_admin(void)
{
    char sock[200];
    snprintf(sock, sizeof(sock), "%s/denied.sock", R.dir);
    if (getuid() != 0) {
        tap_diag("not root: the rights check needs to drop to uid %u; skipped", NOBODY);
        return;
    }
    chmod(R.dir, 0755);
    chmod(R.api, 0666);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(64);
        int code = 0;
        if (list_count() != 1)
            code |= 1;
        if (vm_add("denied", 9, sock, NULL, 0) != ST(ACCESS_DENIED))
            code |= 2;
        if (vm_remove("vm0") != ST(ACCESS_DENIED))
            code |= 4;
        _exit(code);
    }
    int status = -1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    tap_check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "uid %u (read right only): VmList answered, VmAdd and VmRemove STATUS_ACCESS_DENIED (child exit %d)",
              NOBODY, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    tap_check(list_count() == 1 && access(sock, F_OK) < 0, "the denied requests changed nothing");
    chmod(R.dir, 0700);
}

/* Two VMs exchange data (vm0 cid 3 -> sib cid 8); sib is removed mid-transfer. */
static void remove_during_sibling_traffic(struct vdev *a, struct vc_conn *ca)
{
    char sock[200], detail[256];
    snprintf(sock, sizeof(sock), "%s/sib.sock", R.dir);
    if (!tap_check(vm_add("sib", 8, sock, detail, sizeof(detail)) == ST(SUCCESS), "VmAdd sib (cid 8) %s", detail))
        return;
    struct vdev *b = vdev_alloc();
    if (!tap_check(vdev_up(b, sock, 8, NULL) == 0, "a harness QEMU on sib: %s", b->last_err)) {
        free(b);
        return;
    }
    vc_listen(b, 5000);
    int err = 0;
    struct vc_conn *x = vc_connect(a, VSOCK_TYPE_STREAM, 8, 5000, 3000, &err);
    struct vc_conn *y = x ? vc_accept(b, 5000, 2000) : NULL;
    if (tap_check(x && y, "vm0 (cid 3) connects to sib (cid 8) port 5000")) {
        enum { N = 1 << 20 };
        uint8_t *buf = malloc(N), *in = malloc(N);
        fill_pattern(buf, N, 7);
        size_t sent = 0, got = 0, back = 0;
        /* traffic both ways until a quarter is through, then remove sib */
        long long end = now_ms() + 20000;
        while ((got < N / 4 || back == 0) && now_ms() < end) {
            long w = vc_try_send(x, buf + sent, N - sent);
            long r = vc_try_recv(y, in + got, N - got);
            long w2 = vc_try_send(y, buf, 4096);
            long r2 = vc_try_recv(x, in, 4096);
            sent += w > 0 ? (size_t)w : 0;
            got += r > 0 ? (size_t)r : 0;
            back += r2 > 0 ? (size_t)r2 : 0;
            (void)w2;
            vdev_pump(w > 0 || r > 0 ? 0 : 20);
        }
        tap_check(got >= N / 4 && back > 0, "sibling traffic flows both ways (%zu bytes to sib, %zu back)", got, back);
        vc_try_send(x, buf + sent, N - sent); /* more in flight while it goes */
        tap_check(vm_remove("sib") == ST(SUCCESS), "VmRemove sib during the transfer");
        end = now_ms() + 3000;
        while (!x->got_rst && now_ms() < end)
            vdev_pump(20);
        tap_check(x->got_rst, "vm0's connection to the removed sibling is reset");
        vc_forget(x);
        err = 0;
        struct vc_conn *z = vc_connect(a, VSOCK_TYPE_STREAM, 8, 5000, 3000, &err);
        tap_check(!z && err == -ECONNREFUSED, "a new connect to cid 8 is refused (%s)", strerror(-err));
        if (z)
            vc_forget(z);
        free(buf);
        free(in);
    }
    vdev_down(b);
    free(b);
    tap_check(echo_on(ca, 4000, 4), "vm0's echo connection survived its sibling's removal");
    tap_check(hd_alive(&R.p) && list_count() == 1, "hostd serves on with one VM");
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    uint64_t cid = 3;
    const char *more[] = { "--api-read", "user:65534", NULL };
    rig_start_with(&R, bin, "vmrt", 1, &cid, more);
    struct vdev *a = rig_vm_up(&R, 0, NULL, "vm0");
    if (!a) {
        rig_abort(&R);
        return tap_done();
    }
    int err = 0;
    struct vc_conn *ca = vc_connect(a, VSOCK_TYPE_STREAM, 2, 7, 3000, &err);
    tap_check(ca && echo_on(ca, 1000, 0), "vm0: an echo connection, open for the whole test");

    add_and_remove(a, ca);
    refusals();
    no_admin();
    remove_during_sibling_traffic(a, ca);

    tap_check(a->errors == 0, "vm0 saw no protocol violations (%u)%s%s", a->errors, a->errors ? ": " : "",
              a->last_err);
    if (ca)
        vc_close(ca, 2000, NULL);
    vdev_down(a);
    free(a);
    rig_stop(&R);
    return tap_done();
}
