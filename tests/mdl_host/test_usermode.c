/* UserMode (R2) against a real hostd: `mdlmapctl consume` registers as a host
 * consumer; the (harness) guest maps a buffer into it, at any address and at
 * a RequestedAddress; the consumer sees the guest's bytes and its writes
 * reach the guest; unmap goes to the consumer; unknown consumer and a taken
 * RequestedAddress fail with a status; the consumer dying orphans nothing.
 * usage: test_usermode HOSTD MDLMAPCTL */
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "tcommon.h"

#define PG 4096u
#define BUF_GPA (8u << 20)

static uint64_t next_id = 1;

static mdl_envelope *rpc(struct vc_conn *c, mdl_envelope *req)
{
    uint8_t *f, hdr[4];
    size_t n;
    req->version = 1;
    req->request_id = next_id++;
    if (frame_encode(req, &f, &n) < 0)
        return NULL;
    int rc = vc_send_all(c, f, n, 5000);
    free(f);
    if (rc < 0 || vc_recv_all(c, hdr, 4, 20000) < 0)
        return NULL;
    uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
    uint8_t *p = len && len <= MDLMAP_MAX_FRAME ? malloc(len) : NULL;
    mdl_envelope *r = NULL;
    if (p && vc_recv_all(c, p, len, 5000) == 0)
        frame_decode(p, len, &r);
    free(p);
    return r;
}

static int lock1(struct vc_conn *c, uint64_t pfn, uint64_t *h)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__LockRequest rq = MDLMAP__V1__LOCK_REQUEST__INIT;
    uint64_t pfns[2] = { pfn, pfn + 3 };
    rq.byte_offset = 16;
    rq.byte_count = PG;
    rq.pfns = pfns;
    rq.n_pfns = 2;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    env.lock = &rq;
    mdl_envelope *r = rpc(c, &env);
    int st = r ? r->status : -1;
    if (st == 0)
        *h = r->lock_reply->mdl_handle;
    frame_envelope_free(r);
    return st;
}

static int map_user(struct vc_conn *c, uint64_t mdl, const char *consumer, uint64_t want, uint64_t *mh,
                    uint64_t *addr, uint64_t *base)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.mdl_handle = mdl;
    rq.access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = 16;
    rq.consumer = (char *)consumer;
    rq.requested_address = want;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    env.map = &rq;
    mdl_envelope *r = rpc(c, &env);
    if (r && r->request_id != env.request_id) {
        tap_diag("response %llu to request %llu", (unsigned long long)r->request_id,
                 (unsigned long long)env.request_id);
        frame_envelope_free(r);
        r = NULL;
    }
    int st = r ? r->status : -1;
    if (st == 0) {
        *mh = r->map_reply->map_handle;
        *addr = r->map_reply->address;
        *base = r->map_reply->base_address;
    }
    frame_envelope_free(r);
    return st;
}

static int unmap(struct vc_conn *c, uint64_t mh, uint64_t addr, uint64_t mdl)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__UnmapRequest rq = MDLMAP__V1__UNMAP_REQUEST__INIT;
    rq.map_handle = mh;
    rq.address = addr;
    rq.mdl_handle = mdl;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP;
    env.unmap = &rq;
    mdl_envelope *r = rpc(c, &env);
    int st = r ? r->status : -1;
    frame_envelope_free(r);
    return st;
}

/* a consumer that registers and then never answers */
static int mute_consumer(const char *api)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(api) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, api, strlen(api) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__RegisterConsumerRequest rq = MDLMAP__V1__REGISTER_CONSUMER_REQUEST__INIT;
    rq.name = "mute";
    env.version = 1;
    env.request_id = 1;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER;
    env.register_consumer = &rq;
    if (frame_write_fd(fd, &env) < 0 || frame_read_fd(fd, &r) < 0 || r->status != 0) {
        frame_envelope_free(r);
        close(fd);
        return -1;
    }
    frame_envelope_free(r);
    return fd;
}

static bool file_has(const char *path, const char *s, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        char buf[8192] = "";
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n > 0 && strstr(buf, s))
                return true;
        }
        vdev_poll();
        usleep(20000);
    }
    return false;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    const char *ctl = argc > 2 ? argv[2] : getenv("MDLMAPCTL");
    if (!ctl) {
        fprintf(stderr, "usage: %s HOSTD MDLMAPCTL\n", argv[0]);
        return 2;
    }
    char dir[] = "/tmp/mdl-user.XXXXXX", api[160], out[160];
    if (!mkdtemp(dir))
        return 2;
    snprintf(api, sizeof(api), "%s/api.sock", dir);
    snprintf(out, sizeof(out), "%s/consumer.out", dir);
    const char *extra[] = { "--api", api, NULL };
    struct hd_proc p;
    uint64_t cids[1] = { 3 };
    start_or_die(&p, bin, 1, cids, extra);

    pid_t cons = fork();
    if (cons == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(ctl, ctl, "--api", api, "consume", "--write", "CONSUMER-WAS-HERE", "--exit-after", "1", "c1",
              (char *)NULL);
        _exit(127);
    }
    tap_check(file_has(out, "CONSUMER REGISTERED name=c1", 5000), "mdlmapctl consume registers as 'c1'");

    struct vdev *d = vdev_alloc();
    struct guest_opts o;
    guest_default_opts(&o);
    int err = 0;
    struct vc_conn *c = NULL;
    if (up_or_report(d, &p, 0, &o, "user"))
        c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 1100, 3000, &err);
    if (!tap_check(c != NULL, "guest connects to port 1100")) {
        kill(cons, SIGKILL);
        hd_kill(&p);
        return tap_done();
    }
    uint8_t *g0 = gm_ptr(&d->g.gm, BUF_GPA, PG), *g1 = gm_ptr(&d->g.gm, BUF_GPA + 3 * PG, PG);
    memset(g0, '.', PG);
    memcpy(g0 + 16, "GUEST-DATA-FOR-THE-CONSUMER", 27);
    uint64_t mdl = 0, mh = 0, addr = 0, base = 0, x1, x2, x3;
    tap_check(lock1(c, BUF_GPA / PG, &mdl) == 0, "lock 2 scattered pages");
    int st = map_user(c, mdl, "nobody", 0, &x1, &x2, &x3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_NOT_FOUND, "UserMode map into an unknown consumer: %s",
              ntstatus_name(st));
    st = map_user(c, mdl, "c1", 0, &mh, &addr, &base);
    tap_check(st == 0 && (addr & 4095) == 16 && base == addr - 16, "UserMode map into c1: %s at 0x%llx",
              ntstatus_name(st), (unsigned long long)addr);
    tap_check(file_has(out, "CONSUMER SAW: \"GUEST-DATA-FOR-THE-CONSUMER", 3000),
              "the consumer sees the guest's bytes at its own address");
    tap_check(file_has(out, "CONSUMER WROTE", 3000) && memcmp(g0 + 16, "CONSUMER-WAS-HERE", 17) == 0,
              "the consumer's write lands in the guest's page");
    (void)g1;
    /* a RequestedAddress that is taken in the consumer (its first mapping) */
    st = map_user(c, mdl, "c1", base, &x1, &x2, &x3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_CONFLICTING_ADDRESSES,
              "RequestedAddress already in use in the consumer: %s", ntstatus_name(st));
    st = map_user(c, mdl, "c1", 0x123, &x1, &x2, &x3);
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER, "unaligned RequestedAddress: %s",
              ntstatus_name(st));
    st = unmap(c, mh, addr, mdl);
    tap_check(st == 0, "guest unmaps the UserMode mapping: %s", ntstatus_name(st));
    tap_check(file_has(out, "CONSUMER UNMAPPED", 3000), "the unmap reached the consumer");
    int ws = -1;
    for (int i = 0; i < 100 && waitpid(cons, &ws, WNOHANG) == 0; i++)
        usleep(20000);
    tap_check(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "consumer exits 0 after --exit-after 1");
    /* the consumer is gone: its name is free, maps into it fail */
    /* until hostd has seen the consumer's socket close, a map may still reach
     * it and fail with DEVICE_NOT_READY; then the name is gone */
    for (int i = 0; i < 50; i++) {
        st = map_user(c, mdl, "c1", 0, &x1, &x2, &x3);
        if (st != MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY)
            break;
        usleep(20000);
    }
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_NOT_FOUND, "after the consumer left: %s", ntstatus_name(st));
    /* a consumer that never answers: the guest gets a status after the timeout */
    int mute = mute_consumer(api);
    tap_check(mute >= 0, "a second consumer 'mute' registers");
    long long t0 = now_ms();
    st = map_user(c, mdl, "mute", 0, &x1, &x2, &x3);
    long long waited = now_ms() - t0;
    tap_check(st == MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY && waited >= 9000,
              "consumer that never answers: %s after %lld ms", ntstatus_name(st), waited);
    tap_check(lock1(c, BUF_GPA / PG, &x1) == 0, "the connection still works afterwards");
    if (mute >= 0)
        close(mute);
    vc_close(c, 3000, NULL);
    vdev_down(d);
    free(d);
    tap_check(hd_alive(&p), "hostd still running");
    if (tap_failures) {
        char buf[4096] = "";
        int fd = open(out, O_RDONLY);
        if (fd >= 0 && read(fd, buf, sizeof(buf) - 1) > 0)
            tap_diag("consumer output:\n%s", buf);
        if (fd >= 0)
            close(fd);
        hd_log_tail(&p, 30);
    }
    stop_and_check(&p);
    unlink(out);
    unlink(api);
    rmdir(dir);
    return tap_done();
}
