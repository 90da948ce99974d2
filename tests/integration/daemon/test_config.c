/* hostd --config FILE against a real hostd:
 *   - a hostd started with --config only (comments, blank lines, spacing,
 *     two VMs, the host API) serves both VMs: a harness guest echoes, VmList
 *     lists them; the command line wins over the file (--sibling-routing off
 *     given after a file saying on: a guest-to-guest connect is refused);
 *   - a hostd with --api and no VM starts, and serves a VM added later;
 *   - bad files: hostd exits 2 and its message names the file and the line
 *     (unknown option, missing value, bad value, bad VM spec, --config
 *     inside a file, duplicate VM across file and command line), or the file
 *     (missing); no VM and no --api is refused.
 * usage: test_config HOSTD */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "rpc_session.h"

#define ST(x) MDLMAP__V1__NT_STATUS__STATUS_##x

static char dir[64];

static void write_bytes(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
}

static void write_file(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

/* Run hostd with args (NULL-terminated, after bin) to its exit; its exit
 * status (or -1) and stderr in out. */
static int run_hostd(const char *bin, const char *const *args, char *out, size_t cap)
{
    char errpath[128];
    snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
    const char *argv[16] = { bin };
    for (unsigned i = 0; args[i] && i + 2 < 16; i++)
        argv[i + 1] = args[i];
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int status = -1;
    /* a hostd that wrongly starts would serve forever: bounded wait */
    for (int i = 0; i < 100 && waitpid(pid, &status, WNOHANG) == 0; i++)
        usleep(50000);
    if (!WIFEXITED(status) && !WIFSIGNALED(status)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        status = -1;
    }
    out[0] = 0;
    FILE *f = fopen(errpath, "r");
    if (f) {
        size_t n = fread(out, 1, cap - 1, f);
        out[n] = 0;
        fclose(f);
    }
    unlink(errpath);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A bad file of len bytes: exit 2 with `want` in the message. */
static void bad_bytes(const char *bin, const char *text, size_t len, const char *const *more, const char *want,
                      const char *what)
{
    char path[128], out[2048];
    snprintf(path, sizeof(path), "%s/bad.conf", dir);
    write_bytes(path, text, len);
    const char *args[12] = { "--config", path };
    for (unsigned i = 0; more && more[i] && i + 3 < 12; i++)
        args[2 + i] = more[i];
    int rc = run_hostd(bin, args, out, sizeof(out));
    char where[160];
    snprintf(where, sizeof(where), "%s%s", want[0] == ':' ? path : "", want);
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = 0;
    tap_check(rc == 2 && strstr(out, where), "%s: exit 2, message names %s (exit %d: %s)", what, where, rc, out);
    unlink(path);
}

static void bad_file(const char *bin, const char *text, const char *const *more, const char *want, const char *what)
{
    bad_bytes(bin, text, strlen(text), more, want, what);
}

static mdl_envelope *vm_list(const char *api)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmListRequest rq = MDLMAP__V1__VM_LIST_REQUEST__INIT;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_LIST;
    e.vm_list = &rq;
    mdl_envelope *r = api_call(api, &e);
    if (r && (r->status || r->body_case != MDLMAP__V1__ENVELOPE__BODY_VM_LIST_REPLY)) {
        frame_envelope_free(r);
        r = NULL;
    }
    return r;
}

static void config_only(const char *bin)
{
    char conf[128], api[128], sa[128], sb[128], text[1024];
    snprintf(conf, sizeof(conf), "%s/hostd.conf", dir);
    snprintf(api, sizeof(api), "%s/api.sock", dir);
    snprintf(sa, sizeof(sa), "%s/a.sock", dir);
    snprintf(sb, sizeof(sb), "%s/b.sock", dir);
    snprintf(text, sizeof(text),
             "# hostd.conf for the test\n"
             "\n"
             "api %s\n"
             "   # an indented comment\n"
             "vm name=a,cid=3,socket=%s\n"
             "  vm\tname=b,cid=4,socket=%s   \n"
             "sibling-routing on\n"
             "--log-level info\n",
             api, sa, sb);
    write_file(conf, text);
    struct hd_proc p;
    const char *extra[] = { "--config", conf, "--sibling-routing", "off", NULL };
    if (!tap_check(hd_start(&p, bin, 0, NULL, extra) == 0, "hostd starts with --config only (2 VMs, the API)")) {
        hd_log_tail(&p, 10);
        return;
    }
    mdl_envelope *l = vm_list(api);
    tap_check(l && l->vm_list_reply->n_vms == 2 && !strcmp(l->vm_list_reply->vms[0]->vm->name, "a") &&
                  l->vm_list_reply->vms[1]->vm->cid == 4 && !strcmp(l->vm_list_reply->vms[1]->vm->socket, sb),
              "VmList on the file's API socket: a (cid 3) and b (cid 4, its socket)");
    frame_envelope_free(l);
    struct vdev *a = vdev_alloc(), *b = vdev_alloc();
    bool up = vdev_up(a, sa, 3, NULL) == 0 && vdev_up(b, sb, 4, NULL) == 0;
    char why[256] = "";
    tap_check(up && vdev_echo_check(a, 4096, 4000, why, sizeof(why)) == 0 &&
                  vdev_echo_check(b, 4096, 4000, why, sizeof(why)) == 0,
              "guests on both VMs of the file echo %s%s", up ? "" : a->last_err, why);
    if (up) {
        vc_listen(b, 5000);
        int err = 0;
        struct vc_conn *c = vc_connect(a, VSOCK_TYPE_STREAM, 4, 5000, 3000, &err);
        tap_check(!c && err == -ECONNREFUSED,
                  "the command line's --sibling-routing off wins over the file's on (connect: %s)", strerror(-err));
        if (c)
            vc_forget(c);
    }
    vdev_down(a);
    vdev_down(b);
    free(a);
    free(b);
    stop_and_check(&p);
    tap_check(access(sa, F_OK) < 0 && access(api, F_OK) < 0, "hostd removed the sockets it made on exit");
    unlink(conf);
}

static void api_without_vm(const char *bin)
{
    char api[128], sock[128];
    snprintf(api, sizeof(api), "%s/api0.sock", dir);
    snprintf(sock, sizeof(sock), "%s/later.sock", dir);
    struct hd_proc p;
    const char *extra[] = { "--api", api, NULL };
    if (!tap_check(hd_start(&p, bin, 0, NULL, extra) == 0, "hostd starts with --api and no VM"))
        return;
    mdl_envelope *l = vm_list(api);
    tap_check(l && l->vm_list_reply->n_vms == 0, "VmList: no VM");
    frame_envelope_free(l);
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmAddRequest rq = MDLMAP__V1__VM_ADD_REQUEST__INIT;
    Mdlmap__V1__VmSpec s = MDLMAP__V1__VM_SPEC__INIT;
    s.name = "later";
    s.cid = 7;
    s.socket = sock;
    rq.vm = &s;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_ADD;
    e.vm_add = &rq;
    mdl_envelope *r = api_call(api, &e);
    tap_check(r && r->status == ST(SUCCESS), "VmAdd later (cid 7)");
    frame_envelope_free(r);
    struct vdev *d = vdev_alloc();
    char why[256] = "";
    tap_check(vdev_up(d, sock, 7, NULL) == 0 && vdev_echo_check(d, 4096, 4000, why, sizeof(why)) == 0,
              "its guest echoes %s", why);
    vdev_down(d);
    free(d);
    stop_and_check(&p);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    snprintf(dir, sizeof(dir), "/tmp/hostdconf.XXXXXX");
    if (!mkdtemp(dir))
        return 2;
    config_only(bin);
    api_without_vm(bin);

    char sock[128], t[512];
    snprintf(sock, sizeof(sock), "%s/x.sock", dir);
    bad_file(bin, "# comment\n\nno-such-option 1\n", NULL, ":3:", "unknown option on line 3");
    bad_file(bin, "# comment\nsibling-routing\n", NULL, ":2:", "missing value on line 2");
    bad_file(bin, "\n\n\n\nsibling-routing maybe\n", NULL, ":5: --sibling-routing", "bad value on line 5");
    bad_file(bin, "vm name=a,cid=1,socket=/tmp/x.sock\n", NULL, ":1: --vm", "bad VM spec on line 1");
    bad_file(bin, "config /etc/other.conf\n", NULL, ":1:", "--config inside a config file");
    bad_file(bin, "help x\n", NULL, ":1:", "help in a config file");
    static const char nul[] = "sibling-routing off\0 junk\nno-such-option 1\n";
    bad_bytes(bin, nul, sizeof(nul) - 1, NULL, ":1: a NUL byte", "a NUL byte on line 1 (not the end of the file)");
    snprintf(t, sizeof(t), "api %s/a.sock\n#\nvm name=a,cid=3,socket=%s\n", dir, sock);
    const char *dup[] = { "--vm", "name=a,cid=5,socket=/tmp/y.sock", NULL };
    bad_file(bin, t, dup, "--vm a: name, cid and socket must be unique", "a VM in the file and on the command line");
    char out[1024], missing[128];
    snprintf(missing, sizeof(missing), "%s/missing.conf", dir);
    const char *args[] = { "--config", missing, NULL };
    int rc = run_hostd(bin, args, out, sizeof(out));
    tap_check(rc == 2 && strstr(out, missing), "a missing config file: exit 2 naming it (exit %d)", rc);
    const char *none[] = { "--sibling-routing", "on", NULL };
    rc = run_hostd(bin, none, out, sizeof(out));
    tap_check(rc == 2 && strstr(out, "no VM"), "no VM and no --api: exit 2 (exit %d)", rc);
    rmdir(dir);
    return tap_done();
}
