/* VcpuState and RunState against a real QEMU 7.2 (qemu-system-x86_64, TCG,
 * -S, no guest: the vCPUs sit at the reset vector). hostd runs with
 * --vm ...,qmp=PATH,introspect=on: VcpuState says RIP=0xfff0 for each reset
 * vCPU (CS base ffff0000 is not added: RIP is what the CPU holds), RunState
 * QUERY/RESUME/PAUSE follow QEMU's run state; when QEMU is killed, calls
 * are STATUS_DEVICE_NOT_READY, and a QEMU started again on the same socket
 * is served again. Skipped (77) without qemu-system-x86_64.
 * argv: hostd [qemu-system-x86_64]. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "qmp_api.h"

static pid_t start_qemu(const char *qemu, const char *qmp, const char *log)
{
    char arg[256];
    snprintf(arg, sizeof(arg), "unix:%s,server=on,wait=off", qmp);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        execlp(qemu, qemu, "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-smp", "2", "-m", "64",
               "-qmp", arg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool wait_socket(const char *path, pid_t pid, int ms)
{
    for (int waited = 0; waited < ms; waited += 20) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return false;
        usleep(20000);
    }
    return false;
}

static mdl_envelope *run(const char *api, Mdlmap__V1__RunStateRequest__Op op, const char *what, bool want,
                         const char *want_status)
{
    mdl_envelope *r = qa_run(api, "x", op);
    bool ok = r && r->status == ST_OK && r->body_case == MDLMAP__V1__ENVELOPE__BODY_RUN_STATE_REPLY;
    tap_check(ok && r->run_state_reply->running == want && !strcmp(r->run_state_reply->qemu_status, want_status),
              "RunState %s: running=%d, status '%s' (got %s, %d, '%s')", what, want, want_status,
              r ? ntstatus_name(r->status) : "no reply", ok ? r->run_state_reply->running : -1,
              ok ? r->run_state_reply->qemu_status : "");
    return r;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    const char *qemu = argc > 2 ? argv[2] : "qemu-system-x86_64";
    char dir[] = "/tmp/qmpqemu.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char qmp[128], log[128], spec[512];
    snprintf(qmp, sizeof(qmp), "%s/qmp.sock", dir);
    snprintf(log, sizeof(log), "%s/qemu.log", dir);
    pid_t qp = start_qemu(qemu, qmp, log);
    if (qp < 0 || !wait_socket(qmp, qp, 10000)) {
        printf("1..0 # SKIP %s does not start (see %s)\n", qemu, log);
        if (qp > 0) {
            kill(qp, SIGKILL);
            waitpid(qp, NULL, 0);
        }
        return 77;
    }
    snprintf(spec, sizeof(spec), "name=x,cid=3,socket=%s/x.sock,qmp=%s,introspect=on", dir, qmp);
    struct rig r;
    uint64_t cid = 4;
    const char *more[] = { "--vm", spec, NULL };
    rig_start_with(&r, bin, "qmpqemu", 1, &cid, more);
    tap_check(qa_wait_ready(r.api, "x", 10000), "hostd talks to QEMU over QMP");

    mdl_envelope *v = qa_vcpu(r.api, "x");
    bool ok = v && v->status == ST_OK && v->body_case == MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE_REPLY;
    if (tap_check(ok && v->vcpu_state_reply->n_vcpus == 2, "VcpuState: 2 vCPUs (%zu)",
                  ok ? v->vcpu_state_reply->n_vcpus : 0)) {
        for (unsigned i = 0; i < 2; i++) {
            const Mdlmap__V1__VcpuState *c = v->vcpu_state_reply->vcpus[i];
            tap_check(c->index == i && c->rip == 0xfff0 && c->rsp == 0 && c->cr3 == 0 && c->cr0 == 0x60000010 &&
                      c->rflags == 0x2 && c->efer == 0 && c->cpl == 0,
                      "vCPU %u at reset: rip %#llx cr0 %#llx rflags %#llx", i, (unsigned long long)c->rip,
                      (unsigned long long)c->cr0, (unsigned long long)c->rflags);
        }
        tap_check(!v->vcpu_state_reply->running, "VcpuState: not running (-S)");
    }
    frame_envelope_free(v);

    frame_envelope_free(run(r.api, MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY, "QUERY before start", false,
                            "prelaunch"));
    frame_envelope_free(run(r.api, MDLMAP__V1__RUN_STATE_REQUEST__OP__RESUME, "RESUME", true, "running"));
    frame_envelope_free(run(r.api, MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE, "PAUSE", false, "paused"));
    frame_envelope_free(run(r.api, MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY, "QUERY after PAUSE", false,
                            "paused"));
    /* the firmware ran in between: registers of a paused VM are consistent */
    v = qa_vcpu(r.api, "x");
    ok = v && v->status == ST_OK && v->vcpu_state_reply->n_vcpus == 2;
    tap_check(ok && !v->vcpu_state_reply->running, "VcpuState while paused: 2 vCPUs, not running");
    frame_envelope_free(v);

    kill(qp, SIGKILL);
    waitpid(qp, NULL, 0);
    int32_t st = qa_status(qa_vcpu(r.api, "x"), "QEMU gone");
    tap_check(st == ST_NOT_READY, "QEMU killed: STATUS_DEVICE_NOT_READY (%s)", rpc_status_name(st));
    tap_check(hd_alive(&r.p), "hostd keeps running");

    /* QEMU comes back on the same socket path: hostd reconnects */
    qp = start_qemu(qemu, qmp, log);
    tap_check(qp > 0 && qa_wait_ready(r.api, "x", 15000), "a new QEMU on the same socket: served again");
    frame_envelope_free(run(r.api, MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY, "QUERY of the new QEMU", false,
                            "prelaunch"));
    if (qp > 0) {
        kill(qp, SIGKILL);
        waitpid(qp, NULL, 0);
    }

    rig_stop(&r);
    char p[160];
    snprintf(p, sizeof(p), "%s/x.sock", dir);
    unlink(p);
    unlink(qmp);
    unlink(log);
    rmdir(dir);
    return tap_done();
}
