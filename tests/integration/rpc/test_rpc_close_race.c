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
#include <unistd.h>

#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (8u << 20)

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

static void round_trip(struct vdev *d, int cons, bool answer, const char *what)
{
    struct rpc_session c;
    if (!tap_check(rpc_open(&c, d), "%s: guest connects to port %d", what, RPC_PORT))
        return;
    c.timeout_ms = 10000;   /* the ~1 MiB Hello takes a while through the rings */
    uint64_t pfns[2] = { BUF_GPA / PG, BUF_GPA / PG + 1 };
    uint64_t mdl = 0;
    rpc_lock(&c, 0, 2 * PG, pfns, 2, 0, &mdl);
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
    tap_check(rpc_send(&c, &e2) == 0, "%s: send a UserMode Map", what);
    uint64_t map_id = e2.request_id;
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
    int rc = rpc_send(&c, &e3);
    hr.client = "small";
    rc = rc ? rc : rpc_send(&c, &e3);
    tap_check(rc == 0, "%s: ~1 MiB Hello and a small Hello queued behind the Map", what);
    rc = vc_send_ctrl(c.c, OP_SHUTDOWN, SHUT_SEND_F);
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
    mdl_envelope *r = NULL;
    if (rpc_wait(&c, &r, 3000) == 1)
        tap_check(r->request_id == map_id && r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY,
                  "%s: first answer is the Map's (%s)", what, ntstatus_name(r->status));
    else
        tap_diag("%s: no answer reached the guest (stream closed)", what);
    frame_envelope_free(r);
    rpc_close(&c);
    for (int i = 0; i < 20; i++)
        vdev_pump(10);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cids[1] = { 3 };
    rig_start(&rig, bin, "mdl-race", 1, cids);
    struct guest_opts o;
    guest_default_opts(&o);
    struct vdev *d = rig_vm_up(&rig, 0, &o, "race");
    if (d) {
        int cons = api_register_consumer(rig.api, "slow");
        if (tap_check(cons >= 0, "consumer 'slow' registers")) {
            round_trip(d, cons, true, "consumer answers");
            char why[128] = "";
            tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0 && hd_alive(&rig.p),
                      "hostd survives the answer racing the close %s", why);
            close(cons);
        }
        /* the name is free again once hostd saw the first consumer go */
        cons = -1;
        for (int i = 0; i < 100 && cons < 0; i++) {
            cons = api_register_consumer(rig.api, "slow");
            if (cons < 0)
                usleep(20000);
        }
        if (tap_check(cons >= 0, "consumer 'slow' registers again")) {
            round_trip(d, cons, false, "consumer leaves");
            char why[128] = "";
            tap_check(vdev_echo_check(d, 4096, 3000, why, sizeof(why)) == 0 && hd_alive(&rig.p),
                      "hostd survives the consumer leaving during the close %s", why);
        }
        vdev_down(d);
        free(d);
    }
    if (tap_failures || getenv("MDL_TEST_HOSTD_LOG"))
        hd_log_tail(&rig.p, 60);
    rig_stop(&rig);
    return tap_done();
}
