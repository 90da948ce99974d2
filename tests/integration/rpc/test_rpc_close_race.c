/* Regression: a UserMode completion that arrives from outside device
 * processing (consumer answers, consumer goes away) sends the guest its
 * answer, and that send may finish the half-closed vsock connection and run
 * closed() before it returns. hostd used to free the RPC connection there and
 * keep using it (heap-use-after-free in rpc_outq). Scenario per round: lock,
 * UserMode Map into a consumer the test controls, a ~1 MiB Hello that fills
 * the frame reader, a small Hello left in the vsock ring, SHUTDOWN(SEND);
 * then the consumer answers (round 1) or disconnects (round 2). hostd must
 * survive, release what the connection held and exit cleanly (ASan/LSan).
 * usage: test_rpc_close_race HOSTD */
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

#define PG 4096u
#define BUF_GPA (8u << 20)

static int consumer_connect(const char *api, const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(api) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, api, strlen(api) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__RegisterConsumerRequest rq = MDLMAP__V1__REGISTER_CONSUMER_REQUEST__INIT;
    rq.name = (char *)name;
    env.version = 1;
    env.request_id = 1;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER;
    env.register_consumer = &rq;
    int w = frame_write_fd(fd, &env), rd = w < 0 ? 0 : frame_read_fd(fd, &r);
    if (w < 0 || rd < 0 || r->status != 0) {
        tap_diag("register '%s': write %d read %d status %s %s", name, w, rd, r ? ntstatus_name(r->status) : "-",
                 r && r->detail ? r->detail : "");
        frame_envelope_free(r);
        close(fd);
        return -1;
    }
    frame_envelope_free(r);
    return fd;
}

/* wait (pumping the guest) for the consumer's MapInto; its map handle or 0 */
static uint64_t consumer_wait_map_into(int fd, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        vdev_poll();
        struct pollfd pf = { fd, POLLIN, 0 };
        if (poll(&pf, 1, 10) != 1)
            continue;
        mdl_envelope *r = NULL;
        if (frame_read_fd(fd, &r) < 0)
            return 0;
        uint64_t h = r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_INTO ? r->map_into->map_handle : 0;
        frame_envelope_free(r);
        if (h)
            return h;
    }
    return 0;
}

static int send_env(struct vc_conn *c, mdl_envelope *env, uint64_t id)
{
    uint8_t *f;
    size_t n;
    env->version = 1;
    env->request_id = id;
    if (frame_encode(env, &f, &n) < 0)
        return -1;
    int rc = vc_send_all(c, f, n, 10000);
    free(f);
    return rc;
}

/* next response frame from the guest connection, or NULL */
static mdl_envelope *recv_env(struct vc_conn *c, int ms)
{
    uint8_t hdr[4];
    if (vc_recv_all(c, hdr, 4, ms) < 0)
        return NULL;
    uint32_t len = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
    uint8_t *p = len && len <= MDLMAP_MAX_FRAME ? malloc(len) : NULL;
    mdl_envelope *r = NULL;
    if (p && vc_recv_all(c, p, len, ms) == 0)
        frame_decode(p, len, &r);
    free(p);
    return r;
}

static void round_trip(struct vdev *d, int cons, bool answer, const char *what)
{
    int err = 0;
    struct vc_conn *c = vc_connect(d, VSOCK_TYPE_STREAM, HOST_CID, 1100, 3000, &err);
    if (!tap_check(c != NULL, "%s: guest connects to port 1100", what))
        return;
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__LockRequest lk = MDLMAP__V1__LOCK_REQUEST__INIT;
    uint64_t pfns[2] = { BUF_GPA / PG, BUF_GPA / PG + 1 };
    lk.byte_count = 2 * PG;
    lk.pfns = pfns;
    lk.n_pfns = 2;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    env.lock = &lk;
    uint64_t mdl = 0;
    if (send_env(c, &env, 1) == 0) {
        mdl_envelope *r = recv_env(c, 5000);
        if (r && r->status == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY)
            mdl = r->lock_reply->mdl_handle;
        frame_envelope_free(r);
    }
    tap_check(mdl != 0, "%s: lock 2 pages", what);
    /* UserMode Map: the connection waits for the consumer */
    mdl_envelope e2 = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapRequest mp = MDLMAP__V1__MAP_REQUEST__INIT;
    mp.mdl_handle = mdl;
    mp.access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
    mp.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    mp.consumer = "slow";
    e2.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    e2.map = &mp;
    tap_check(send_env(c, &e2, 2) == 0, "%s: send a UserMode Map", what);
    uint64_t mh = consumer_wait_map_into(cons, 5000);
    tap_check(mh != 0, "%s: the consumer is asked to map (and does not answer yet)", what);
    /* a maximal Hello fills the frame reader; a small one stays in the ring */
    static char big[MDLMAP_MAX_FRAME - 16]; /* the small Hello must not fit behind it */
    memset(big, 'x', sizeof(big) - 1);
    mdl_envelope e3 = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__HelloRequest hr = MDLMAP__V1__HELLO_REQUEST__INIT;
    hr.min_version = hr.max_version = 1;
    hr.client = big;
    e3.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO;
    e3.hello = &hr;
    int rc = send_env(c, &e3, 3);
    hr.client = "small";
    rc = rc ? rc : send_env(c, &e3, 4);
    tap_check(rc == 0, "%s: ~1 MiB Hello and a small Hello queued behind the Map", what);
    rc = vc_send_ctrl(c, OP_SHUTDOWN, SHUT_SEND_F);
    for (int i = 0; i < 20; i++) /* let hostd see everything */
        vdev_pump(10);
    tap_check(rc == 0, "%s: guest sends SHUTDOWN(SEND)", what);
    if (answer) {
        mdl_envelope a = MDLMAP__V1__ENVELOPE__INIT;
        Mdlmap__V1__MapIntoResponse ar = MDLMAP__V1__MAP_INTO_RESPONSE__INIT;
        ar.base_address = 0x7f0000000000ull;
        a.version = 1;
        a.request_id = mh;
        a.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_INTO_REPLY;
        a.map_into_reply = &ar;
        tap_check(frame_write_fd(cons, &a) == 0, "%s: the consumer answers now", what);
    } else {
        close(cons);
        tap_diag("%s: the consumer disconnects now", what);
    }
    /* whatever reaches the guest: the Map answer first, if anything */
    mdl_envelope *r = recv_env(c, 3000);
    if (r)
        tap_check(r->request_id == 2 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY,
                  "%s: first answer is the Map's (%s)", what, ntstatus_name(r->status));
    else
        tap_diag("%s: no answer reached the guest (stream closed)", what);
    frame_envelope_free(r);
    vc_close(c, 3000, NULL);
    for (int i = 0; i < 20; i++)
        vdev_pump(10);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    char dir[] = "/tmp/mdl-race.XXXXXX", api[160];
    if (!mkdtemp(dir))
        return 2;
    snprintf(api, sizeof(api), "%s/api.sock", dir);
    const char *extra[] = { "--api", api, NULL };
    struct hd_proc p;
    uint64_t cids[1] = { 3 };
    start_or_die(&p, bin, 1, cids, extra);
    struct vdev *d = vdev_alloc();
    struct guest_opts o;
    guest_default_opts(&o);
    if (up_or_report(d, &p, 0, &o, "race")) {
        int cons = consumer_connect(api, "slow");
        if (tap_check(cons >= 0, "consumer 'slow' registers")) {
            round_trip(d, cons, true, "consumer answers");
            char why[128] = "";
            tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0 && hd_alive(&p),
                      "hostd survives the answer racing the close %s", why);
            close(cons);
        }
        /* the name is free again once hostd saw the first consumer go */
        cons = -1;
        for (int i = 0; i < 100 && cons < 0; i++) {
            cons = consumer_connect(api, "slow");
            if (cons < 0)
                usleep(20000);
        }
        if (tap_check(cons >= 0, "consumer 'slow' registers again")) {
            round_trip(d, cons, false, "consumer leaves");
            char why[128] = "";
            tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0 && hd_alive(&p),
                      "hostd survives the consumer leaving during the close %s", why);
        }
        vdev_down(d);
    }
    free(d);
    if (tap_failures || getenv("MDL_TEST_HOSTD_LOG"))
        hd_log_tail(&p, 60);
    stop_and_check(&p);
    unlink(api);
    rmdir(dir);
    return tap_done();
}
