/* hostd's QMP client against a fake QEMU (a QMP server in a thread of this
 * test) and the host API requests on top of it: VcpuState and RunState
 * answered from what the server says; requests on one connection answered
 * in order behind a pending one; a client that leaves with a call pending;
 * the bound on pending calls per VM; and a hostile QEMU: garbage, an
 * oversized line, no answer (STATUS_DEVICE_NOT_READY after
 * --qmp-timeout-ms), closing mid-answer, an answer to no command, no
 * greeting, a QEMU that hangs up after every negotiation (its log lines are
 * rate-limited). After each, hostd reconnects and serves again. Then a VM
 * removed from inside its own QMP completion, and hostd stopping while VM
 * requests wait behind a QMP call. */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "qmp_api.h"
#include "usock.h"

enum mode {
    M_NORMAL,
    M_EVENTS,     /* events before every answer */
    M_HOLD,       /* commands are read, answered once the mode changes */
    M_SILENT,     /* commands are never answered */
    M_GARBAGE,    /* the answer is not JSON */
    M_OVERSIZED,  /* an answer line of more than 1 MiB */
    M_HALF,       /* half an answer, then the socket closes */
    M_WRONG_ID,   /* an answer carrying another command's id */
    M_NO_GREETING, /* new connections are never greeted */
    M_ERROR,      /* every command fails with a QMP error */
    M_BAD_DUMP,   /* the register dump has a vCPU without CR3 */
    M_FLAP        /* a command closes the connection; so does every negotiation */
};

static atomic_int mode;
static atomic_bool stopping;
static atomic_bool running_state;
static atomic_int connections; /* connections the server accepted */
static int listen_fd;

/* What a QEMU 7.2 prints for two vCPUs (shortened to the lines hostd reads
 * and a few it must skip), JSON-escaped. */
static const char regs[] =
    "\\r\\nCPU#0\\r\\n"
    "RAX=0000000000000001 RBX=0000000000000002 RCX=0000000000000003 RDX=0000000000000004\\r\\n"
    "RSI=0000000000000005 RDI=0000000000000006 RBP=ffffc90000013e80 RSP=ffffc90000013e38\\r\\n"
    "R8 =0000000000000000 R9 =0000000000000000 R10=0000000000000000 R11=0000000000000000\\r\\n"
    "RIP=ffffffff81c0b1e4 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\\r\\n"
    "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]\\r\\n"
    "CR0=80050033 CR2=00007f2a1c000000 CR3=000000000a4e2000 CR4=00350ef0\\r\\n"
    "DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \\r\\n"
    "EFER=0000000000000d01\\r\\n"
    "\\r\\nCPU#1\\r\\n"
    "RIP=00007f2a1c3d5a10 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\\r\\n"
    "RSI=0000000000000005 RDI=0000000000000006 RBP=0000000000000000 RSP=00007ffd2c1e0a88\\r\\n"
    "CR0=80050033 CR2=0000000000000000 CR3=000000001b2c3000 CR4=00350ef0\\r\\n"
    "EFER=0000000000000d01\\r\\n";

static void put(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void puts_fd(int fd, const char *s)
{
    put(fd, s, strlen(s));
}

/* Answer one command line; false: end this connection. */
static bool answer(int fd, const char *line)
{
    char cmd[64] = "";
    const char *e = strstr(line, "\"execute\":\"");
    const char *i = strstr(line, "\"id\":");
    if (!e || !i)
        return false;
    sscanf(e + 11, "%63[^\"]", cmd);
    unsigned long long id = strtoull(i + 5, NULL, 10);
    char buf[4096];
    if (!strcmp(cmd, "qmp_capabilities")) {
        snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %llu}\r\n", id);
        puts_fd(fd, buf);
        return atomic_load(&mode) != M_FLAP;
    }
    int m = atomic_load(&mode);
    while (m == M_HOLD && !atomic_load(&stopping)) {
        usleep(5000);
        m = atomic_load(&mode);
    }
    switch (m) {
    case M_SILENT:
        return true;
    case M_FLAP:
        return false;
    case M_GARBAGE:
        puts_fd(fd, "this is not {json\r\n");
        return true;
    case M_OVERSIZED: {
        size_t n = 1100 * 1024;
        char *big = malloc(n);
        memset(big, ' ', n);
        big[0] = '{';
        put(fd, big, n);
        free(big);
        return true;
    }
    case M_WRONG_ID:
        id += 1000;
        break;
    case M_ERROR:
        snprintf(buf, sizeof(buf), "{\"error\": {\"class\": \"GenericError\", \"desc\": \"%s refused\"}, "
                 "\"id\": %llu}\r\n", cmd, id);
        puts_fd(fd, buf);
        return true;
    case M_BAD_DUMP:
        snprintf(buf, sizeof(buf), "{\"return\": \"\\r\\nCPU#0\\r\\nRIP=0000000000001000 "
                 "RSP=0000000000002000\\r\\n\", \"id\": %llu}\r\n", id);
        puts_fd(fd, buf);
        return true;
    case M_EVENTS:
        puts_fd(fd, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RTC_CHANGE\", "
                    "\"data\": {\"offset\": 0}}\r\n{\"event\": \"NIC_RX_FILTER_CHANGED\"}\r\n");
        break;
    default:
        break;
    }
    if (!strcmp(cmd, "query-status")) {
        bool r = atomic_load(&running_state);
        snprintf(buf, sizeof(buf), "{\"return\": {\"status\": \"%s\", \"singlestep\": false, \"running\": %s}, "
                 "\"id\": %llu}\r\n", r ? "running" : "paused", r ? "true" : "false", id);
    } else if (!strcmp(cmd, "stop") || !strcmp(cmd, "cont")) {
        atomic_store(&running_state, !strcmp(cmd, "cont"));
        snprintf(buf, sizeof(buf), "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"%s\"}\r\n"
                 "{\"return\": {}, \"id\": %llu}\r\n", !strcmp(cmd, "cont") ? "RESUME" : "STOP", id);
    } else if (!strcmp(cmd, "human-monitor-command")) {
        snprintf(buf, sizeof(buf), "{\"return\": \"%s\", \"id\": %llu}\r\n", regs, id);
    } else {
        snprintf(buf, sizeof(buf), "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command %s has "
                 "not been found\"}, \"id\": %llu}\r\n", cmd, id);
    }
    if (m == M_HALF) {
        put(fd, buf, strlen(buf) / 2);
        return false;
    }
    puts_fd(fd, buf);
    return true;
}

static void serve(int fd)
{
    if (atomic_load(&mode) != M_NO_GREETING)
        puts_fd(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": "
                    "\"fake\"}, \"capabilities\": [\"oob\"]}}\r\n");
    char line[8192];
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(fd, line + have, sizeof(line) - 1 - have, 0);
        /* the receive timeout only lets the thread notice stopping */
        if (r < 0 && (errno == EAGAIN || errno == EINTR) && !atomic_load(&stopping))
            continue;
        if (r <= 0)
            return;
        have += (size_t)r;
        line[have] = 0;
        char *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            if (!answer(fd, line))
                return;
            have -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, have + 1);
        }
        if (have == sizeof(line) - 1)
            return;
    }
}

static void *server(void *arg)
{
    (void)arg;
    while (!atomic_load(&stopping)) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        if (poll(&p, 1, 50) != 1)
            continue;
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&connections, 1);
        struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        serve(fd);
        close(fd);
    }
    return NULL;
}

/* Rights, as a client of uid 65534 (--api-read names it): VcpuState and
 * RunState QUERY are read, PAUSE needs write. Exit status: one bit per
 * answer that was not as expected. */
static int as_reader(const char *api)
{
    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
        return 64;
    int bad = 0;
    mdl_envelope *r = qa_vcpu(api, "q");
    bad |= !r || r->status != ST_OK;
    frame_envelope_free(r);
    r = qa_run(api, "q", MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY);
    bad |= (!r || r->status != ST_OK) << 1;
    frame_envelope_free(r);
    r = qa_run(api, "q", MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE);
    bad |= (!r || r->status != ST_DENIED) << 2;
    frame_envelope_free(r);
    r = qa_run(api, "q", MDLMAP__V1__RUN_STATE_REQUEST__OP__RESUME);
    bad |= (!r || r->status != ST_DENIED) << 3;
    frame_envelope_free(r);
    return bad;
}

static void check_rights(struct rig *r)
{
    if (geteuid() != 0) {
        tap_diag("not root: the rights check (uid 65534) is skipped");
        return;
    }
    /* the file modes let uid 65534 reach the socket: the rights decide */
    chmod(r->dir, 0755);
    chmod(r->api, 0666);
    bool was = atomic_load(&running_state);
    pid_t pid = fork();
    if (pid == 0)
        _exit(as_reader(r->api));
    int ws = 0;
    waitpid(pid, &ws, 0);
    tap_check(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "uid 65534 with --api-read: VcpuState and QUERY served, "
              "PAUSE and RESUME STATUS_ACCESS_DENIED (mismatch bits %d)", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    tap_check(atomic_load(&running_state) == was, "the denied PAUSE/RESUME never reached QEMU");
}

/* A hostile answer fails the call pending with STATUS_DEVICE_NOT_READY;
 * then hostd reconnects and serves again. */
static void hostile(const char *api, enum mode m, const char *what)
{
    atomic_store(&mode, m);
    int before = atomic_load(&connections);
    int32_t st = qa_status(qa_vcpu(api, "q"), what);
    tap_check(st == ST_NOT_READY, "%s: VcpuState is STATUS_DEVICE_NOT_READY (%s)", what, rpc_status_name(st));
    atomic_store(&mode, M_NORMAL);
    tap_check(qa_wait_ready(api, "q", 10000), "%s: hostd reconnects and serves again", what);
    tap_check(atomic_load(&connections) > before, "%s: on a new connection (%d -> %d)", what, before,
              atomic_load(&connections));
}

/* A QEMU that greets, negotiates and then holds every command: a thread
 * per socket; *held is set once a command came. */
struct holder {
    char path[160];
    int lfd;
    atomic_bool held;
    pthread_t th;
};

static void *hold_serve(void *arg)
{
    struct holder *h = arg;
    struct pollfd p = { .fd = h->lfd, .events = POLLIN };
    while (!atomic_load(&stopping) && poll(&p, 1, 50) != 1)
        ;
    int fd = atomic_load(&stopping) ? -1 : accept(h->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    puts_fd(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
                "\"capabilities\": []}}\r\n");
    char buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf) - 1, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR) && !atomic_load(&stopping))
            continue;
        if (r <= 0)
            break;
        buf[r] = 0;
        if (strstr(buf, "qmp_capabilities"))
            puts_fd(fd, "{\"return\": {}, \"id\": 0}\r\n");
        else
            atomic_store(&h->held, true);
    }
    close(fd);
    return NULL;
}

static bool hold_start(struct holder *h, const char *dir, const char *name)
{
    snprintf(h->path, sizeof(h->path), "%s/%s.qmp", dir, name);
    h->lfd = usock_listen(h->path, 0600, USOCK_NO_GROUP, 4, 0);
    atomic_store(&h->held, false);
    return h->lfd >= 0 && pthread_create(&h->th, NULL, hold_serve, h) == 0;
}

static void hold_stop(struct holder *h)
{
    pthread_join(h->th, NULL);
    close(h->lfd);
    unlink(h->path);
}

static int32_t add_vm(const char *api, const char *name, uint64_t cid, const char *sock, const char *qmp)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmAddRequest rq = MDLMAP__V1__VM_ADD_REQUEST__INIT;
    Mdlmap__V1__VmSpec s = MDLMAP__V1__VM_SPEC__INIT;
    s.name = (char *)name;
    s.cid = cid;
    s.socket = (char *)sock;
    s.qmp = (char *)qmp;
    s.introspect = true;
    rq.vm = &s;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_ADD;
    e.vm_add = &rq;
    return qa_status(api_call(api, &e), name);
}

/* Both VMs' QMP clients connected (VmList), polled for at most ms. */
static bool qmp_both_ready(const char *api, const char *a, const char *b, int ms)
{
    for (int waited = 0; waited < ms; waited += 50) {
        mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__VmListRequest rq = MDLMAP__V1__VM_LIST_REQUEST__INIT;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_LIST;
        e.vm_list = &rq;
        mdl_envelope *r = api_call(api, &e);
        int n = 0;
        for (size_t i = 0; r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_VM_LIST_REPLY &&
                           i < r->vm_list_reply->n_vms; i++) {
            const Mdlmap__V1__VmInfo *v = r->vm_list_reply->vms[i];
            n += v->qmp_connected && v->vm && (!strcmp(v->vm->name, a) || !strcmp(v->vm->name, b));
        }
        frame_envelope_free(r);
        if (n == 2)
            return true;
        usleep(50000);
    }
    return false;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    char dir[] = "/tmp/qmpfake.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char qmp[128], spec[512], spec2[512], spec3[512];
    snprintf(qmp, sizeof(qmp), "%s/qmp.sock", dir);
    /* q: QMP and introspection; noq: no QMP; closed: introspection off */
    snprintf(spec, sizeof(spec), "name=q,cid=10,socket=%s/q.sock,qmp=%s,introspect=on", dir, qmp);
    snprintf(spec2, sizeof(spec2), "name=noq,cid=11,socket=%s/noq.sock,introspect=on", dir);
    snprintf(spec3, sizeof(spec3), "name=closed,cid=12,socket=%s/closed.sock,qmp=%s/none.sock", dir, dir);

    /* hostd starts before QEMU's socket exists: it keeps trying */
    struct rig r;
    uint64_t cid = 3;
    const char *more[] = { "--vm", spec, "--vm", spec2, "--vm", spec3, "--qmp-timeout-ms", "2000",
                           "--api-read", "user:65534", NULL };
    rig_start_with(&r, bin, "qmpfake", 1, &cid, more);
    int32_t st = qa_status(qa_vcpu(r.api, "q"), "before QEMU");
    tap_check(st == ST_NOT_READY, "no QMP socket yet: STATUS_DEVICE_NOT_READY (%s)", rpc_status_name(st));

    listen_fd = usock_listen(qmp, 0600, USOCK_NO_GROUP, 4, 0);
    pthread_t th;
    if (!tap_check(listen_fd >= 0 && pthread_create(&th, NULL, server, NULL) == 0, "fake QMP server listens")) {
        rig_abort(&r);
        return tap_done();
    }
    tap_check(qa_wait_ready(r.api, "q", 10000), "hostd connects once the socket appears");

    /* VcpuState: both vCPUs, every field */
    mdl_envelope *v = qa_vcpu(r.api, "q");
    if (tap_check(v && v->status == ST_OK && v->body_case == MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE_REPLY &&
                  v->vcpu_state_reply->n_vcpus == 2, "VcpuState: 2 vCPUs")) {
        Mdlmap__V1__VcpuState **c = v->vcpu_state_reply->vcpus;
        tap_check(c[0]->index == 0 && c[0]->rip == 0xffffffff81c0b1e4ull && c[0]->rsp == 0xffffc90000013e38ull &&
                  c[0]->cr3 == 0xa4e2000 && c[0]->cr0 == 0x80050033 && c[0]->cr4 == 0x350ef0 &&
                  c[0]->efer == 0xd01 && c[0]->rflags == 0x246 && c[0]->cpl == 0,
                  "vCPU 0: rip %llx rsp %llx cr3 %llx", (unsigned long long)c[0]->rip,
                  (unsigned long long)c[0]->rsp, (unsigned long long)c[0]->cr3);
        tap_check(c[1]->index == 1 && c[1]->rip == 0x7f2a1c3d5a10ull && c[1]->rsp == 0x7ffd2c1e0a88ull &&
                  c[1]->cr3 == 0x1b2c3000 && c[1]->cpl == 3 && c[1]->rflags == 0x202,
                  "vCPU 1: rip %llx cpl %u", (unsigned long long)c[1]->rip, c[1]->cpl);
        tap_check(!v->vcpu_state_reply->running, "VcpuState: running from query-status (paused)");
    }
    frame_envelope_free(v);

    /* RunState: resume, query, pause; each answer after the operation */
    for (int k = 0; k < 3; k++) {
        Mdlmap__V1__RunStateRequest__Op op = k == 0 ? MDLMAP__V1__RUN_STATE_REQUEST__OP__RESUME :
                                             k == 1 ? MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY :
                                                      MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE;
        bool want = k < 2;
        mdl_envelope *rs = qa_run(r.api, "q", op);
        tap_check(rs && rs->status == ST_OK && rs->body_case == MDLMAP__V1__ENVELOPE__BODY_RUN_STATE_REPLY &&
                  rs->run_state_reply->running == want &&
                  !strcmp(rs->run_state_reply->qemu_status, want ? "running" : "paused"),
                  "RunState op %d: running=%d status %s", (int)op, want,
                  rs && rs->run_state_reply ? rs->run_state_reply->qemu_status : "-");
        tap_check(atomic_load(&running_state) == want, "RunState op %d: the fake QEMU is %s", (int)op,
                  want ? "running" : "paused");
        frame_envelope_free(rs);
    }

    check_rights(&r);

    /* events between commands and answers are skipped */
    atomic_store(&mode, M_EVENTS);
    st = qa_status(qa_vcpu(r.api, "q"), "events");
    tap_check(st == ST_OK, "asynchronous events are skipped (%s)", rpc_status_name(st));
    atomic_store(&mode, M_NORMAL);

    /* QEMU refuses, or prints a dump hostd cannot read: the connection stays */
    int conns = atomic_load(&connections);
    atomic_store(&mode, M_ERROR);
    v = qa_vcpu(r.api, "q");
    tap_check(v && v->status == ST_UNSUCCESSFUL && strstr(v->detail, "human-monitor-command refused"),
              "a QMP error: STATUS_UNSUCCESSFUL with QEMU's desc (%s)", v ? v->detail : "no reply");
    frame_envelope_free(v);
    atomic_store(&mode, M_BAD_DUMP);
    v = qa_vcpu(r.api, "q");
    tap_check(v && v->status == ST_UNSUCCESSFUL && strstr(v->detail, "no CR3"),
              "a dump without CR3: STATUS_UNSUCCESSFUL (%s)", v ? v->detail : "no reply");
    frame_envelope_free(v);
    atomic_store(&mode, M_NORMAL);
    st = qa_status(qa_vcpu(r.api, "q"), "after errors");
    tap_check(st == ST_OK && atomic_load(&connections) == conns, "served on the same QMP connection after both (%s)",
              rpc_status_name(st));

    /* without a QMP socket, without introspection, an unknown VM */
    st = qa_status(qa_vcpu(r.api, "noq"), "noq");
    tap_check(st == ST_NOT_SUPPORTED, "VM without qmp=: STATUS_NOT_SUPPORTED (%s)", rpc_status_name(st));
    st = qa_status(qa_run(r.api, "closed", MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE), "closed");
    tap_check(st == ST_DENIED, "VM without introspect=on: STATUS_ACCESS_DENIED (%s)", rpc_status_name(st));
    st = qa_status(qa_vcpu(r.api, "nosuchvm"), "nosuchvm");
    tap_check(st == ST_NOT_FOUND, "unknown VM: STATUS_NOT_FOUND (%s)", rpc_status_name(st));

    /* in order: a held VcpuState, then Stats and RunState on the same
     * connection; Stats is not answered before the VcpuState */
    atomic_store(&mode, M_HOLD);
    int fd = api_connect(r.api);
    bool sent = fd >= 0 && qa_send_vcpu(fd, 101, "q") == 0 && qa_send_stats(fd, 102) == 0 &&
                qa_send_run(fd, 103, "q", MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY) == 0;
    tap_check(sent, "three requests pipelined");
    mdl_envelope *early = qa_read(fd, 300);
    tap_check(early == NULL, "nothing is answered while the first waits for QEMU");
    frame_envelope_free(early);
    atomic_store(&mode, M_NORMAL);
    uint64_t ids[3] = { 0 };
    int32_t sts[3] = { RPC_NO_REPLY, RPC_NO_REPLY, RPC_NO_REPLY };
    for (int k = 0; k < 3; k++) {
        mdl_envelope *a = qa_read(fd, 20000);
        ids[k] = a ? a->request_id : 0;
        sts[k] = a ? a->status : RPC_NO_REPLY;
        frame_envelope_free(a);
    }
    tap_check(ids[0] == 101 && ids[1] == 102 && ids[2] == 103 && !sts[0] && !sts[1] && !sts[2],
              "answered in order: %llu %llu %llu (%s %s %s)", (unsigned long long)ids[0],
              (unsigned long long)ids[1], (unsigned long long)ids[2], rpc_status_name(sts[0]),
              rpc_status_name(sts[1]), rpc_status_name(sts[2]));
    if (fd >= 0)
        close(fd);

    /* a client leaves with its call pending: the late answer is dropped */
    atomic_store(&mode, M_HOLD);
    fd = api_connect(r.api);
    tap_check(fd >= 0 && qa_send_vcpu(fd, 1, "q") == 0, "a VcpuState is held by QEMU");
    usleep(100000);
    if (fd >= 0)
        close(fd);
    usleep(100000);
    atomic_store(&mode, M_NORMAL);
    st = qa_status(qa_vcpu(r.api, "q"), "after a cancel");
    tap_check(st == ST_OK && hd_alive(&r.p), "after a client left with a call pending: served (%s)",
              rpc_status_name(st));

    /* the bound: QMP_MAX_PENDING (16) calls per VM, the rest refused at once */
    atomic_store(&mode, M_HOLD);
    enum { NC = 20, BOUND = 16 };
    int fds[NC];
    for (int k = 0; k < NC; k++) {
        fds[k] = api_connect(r.api);
        if (fds[k] >= 0)
            qa_send_vcpu(fds[k], (uint64_t)k + 1, "q");
    }
    /* the refusals come at once, while QEMU holds the first call (which
     * connections they go to depends on the order hostd read them in) */
    int refused = 0, got = 0, done = 0;
    for (int round = 0; round < 100 && got < NC - BOUND; round++) {
        for (int k = 0; k < NC; k++) {
            mdl_envelope *a = fds[k] >= 0 ? qa_read(fds[k], 0) : NULL;
            if (a) {
                refused += a->status == ST_RESOURCES;
                got++;
                frame_envelope_free(a);
                close(fds[k]);
                fds[k] = -1;
            }
        }
        usleep(10000);
    }
    tap_check(refused == NC - BOUND && got == NC - BOUND, "%d of %d refused with STATUS_INSUFFICIENT_RESOURCES "
              "while %d wait (%d answered)", refused, NC, BOUND, got);
    atomic_store(&mode, M_NORMAL);
    for (int k = 0; k < NC; k++) {
        if (fds[k] < 0)
            continue;
        mdl_envelope *a = qa_read(fds[k], 20000);
        done += a && a->status == ST_OK;
        frame_envelope_free(a);
        close(fds[k]);
    }
    tap_check(done == BOUND, "the %d waiting calls complete once QEMU answers (%d)", BOUND, done);

    /* hostile QEMU */
    hostile(r.api, M_GARBAGE, "garbage answer");
    hostile(r.api, M_OVERSIZED, "answer over 1 MiB");
    hostile(r.api, M_HALF, "closed mid-answer");
    hostile(r.api, M_WRONG_ID, "answer to no command");
    hostile(r.api, M_SILENT, "no answer (timeout)");
    /* no greeting: the connection that follows a garbage answer is never
     * greeted; calls fail until hostd gives up on it and reconnects */
    atomic_store(&mode, M_GARBAGE);
    qa_status(qa_vcpu(r.api, "q"), "garbage before no greeting");
    atomic_store(&mode, M_NO_GREETING);
    usleep(300000);
    st = qa_status(qa_vcpu(r.api, "q"), "no greeting");
    tap_check(st == ST_NOT_READY, "never greeted: STATUS_DEVICE_NOT_READY (%s)", rpc_status_name(st));
    atomic_store(&mode, M_NORMAL);
    tap_check(qa_wait_ready(r.api, "q", 15000), "never greeted: hostd gives up on it and reconnects");

    /* A QEMU that negotiates and hangs up, again and again: hostd's lines
     * about each connection are rate-limited (one per connection before). */
    unsigned lines0 = hd_log_count(&r.p, "QMP connected");
    int conns0 = atomic_load(&connections);
    atomic_store(&mode, M_FLAP);
    qa_status(qa_vcpu(r.api, "q"), "flapping");
    for (int i = 0; i < 600 && atomic_load(&connections) - conns0 < 60; i++)
        usleep(50000);
    atomic_store(&mode, M_NORMAL);
    int flaps = atomic_load(&connections) - conns0;
    unsigned lines = hd_log_count(&r.p, "QMP connected") - lines0;
    tap_check(flaps >= 30 && lines < (unsigned)flaps, "a flapping QEMU: %u 'QMP connected' lines for %d connections",
              lines, flaps);
    tap_check(qa_wait_ready(r.api, "q", 15000), "served again once QEMU stays");

    /* A VM removed from inside its own QMP completion: the VmRemove waits
     * behind the VcpuState on one connection, so it runs when QEMU's answer
     * resumes that connection, within the QMP client's read handler. */
    fd = api_connect(r.api);
    sent = fd >= 0 && qa_send_vcpu(fd, 201, "q") == 0 && qa_send_vm_remove(fd, 202, "q") == 0;
    tap_check(sent, "VcpuState and VmRemove of the same VM pipelined");
    for (int k = 0; k < 2; k++) {
        mdl_envelope *a = fd >= 0 ? qa_read(fd, 20000) : NULL;
        ids[k] = a ? a->request_id : 0;
        sts[k] = a ? a->status : RPC_NO_REPLY;
        frame_envelope_free(a);
    }
    tap_check(ids[0] == 201 && ids[1] == 202 && !sts[0] && !sts[1], "both answered in order: %llu %llu (%s %s)",
              (unsigned long long)ids[0], (unsigned long long)ids[1], rpc_status_name(sts[0]),
              rpc_status_name(sts[1]));
    if (fd >= 0)
        close(fd);
    st = qa_status(qa_vcpu(r.api, "q"), "removed VM");
    tap_check(st == ST_NOT_FOUND && hd_alive(&r.p), "hostd goes on after the VM's removal from its QMP "
              "completion (%s)", rpc_status_name(st));

    /* Shutdown with a VM request waiting on QMP: stopping frees the QMP
     * clients first, which answers the waiting VcpuState and resumes its
     * connection; the requests behind it (VmRemove of that VM, a VcpuState
     * that waits on the next VM's QMP, VmRemove of that one) must not
     * change or read the VM table hostd is tearing down. */
    struct holder h1, h2;
    char s1[160], s2[160];
    snprintf(s1, sizeof(s1), "%s/h1.sock", dir);
    snprintf(s2, sizeof(s2), "%s/h2.sock", dir);
    bool up = hold_start(&h1, dir, "h1") && hold_start(&h2, dir, "h2") &&
              add_vm(r.api, "h1", 21, s1, h1.path) == ST_OK && add_vm(r.api, "h2", 22, s2, h2.path) == ST_OK &&
              qmp_both_ready(r.api, "h1", "h2", 10000);
    tap_check(up, "two VMs whose QEMU holds every command");
    fd = up ? api_connect(r.api) : -1;
    sent = fd >= 0 && qa_send_vcpu(fd, 301, "h1") == 0 && qa_send_vm_remove(fd, 302, "h1") == 0 &&
           qa_send_vcpu(fd, 303, "h2") == 0 && qa_send_vm_remove(fd, 304, "h2") == 0;
    for (int i = 0; i < 200 && sent && !atomic_load(&h1.held); i++)
        usleep(10000);
    tap_check(sent && atomic_load(&h1.held), "VcpuState h1 held, VmRemove h1, VcpuState h2, VmRemove h2 behind it");
    usleep(100000); /* hostd has read them all (a request not read yet only makes this check weaker) */

    atomic_store(&stopping, true);
    pthread_join(th, NULL);
    close(listen_fd);
    unlink(qmp);
    rig_stop(&r); /* checks that hostd exits cleanly */
    if (fd >= 0)
        close(fd);
    hold_stop(&h1);
    hold_stop(&h2);
    unlink(s1);
    unlink(s2);
    char p[160];
    const char *socks[] = { "q.sock", "noq.sock", "closed.sock" };
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof(p), "%s/%s", dir, socks[k]);
        unlink(p);
    }
    rmdir(dir);
    return tap_done();
}
