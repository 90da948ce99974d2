/* common/: the errno <-> NTSTATUS table, the little-endian length prefix,
 * the Unix socket helpers (stale-socket rule, mode at bind, fd passing) and
 * the framed connection (version check, bad frames, input budget). */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fconn.h"
#include "frame.h"
#include "ntstatus.h"
#include "tap.h"
#include "usock.h"

#define ST(name) MDLMAP__V1__NT_STATUS__STATUS_##name

static void test_ntstatus(void)
{
    static const struct {
        int err;
        int32_t st;
    } fwd[] = {
        { 0, ST(SUCCESS) }, { -EINVAL, ST(INVALID_PARAMETER) }, { -EFAULT, ST(ACCESS_VIOLATION) },
        { -EBADF, ST(INVALID_HANDLE) }, { -ENXIO, ST(NOT_MAPPED_VIEW) }, { -ENOLCK, ST(NOT_LOCKED) },
        { -ENOMEM, ST(INSUFFICIENT_RESOURCES) }, { -EBUSY, ST(CONFLICTING_ADDRESSES) },
        { -EACCES, ST(ACCESS_DENIED) }, { -EOPNOTSUPP, ST(NOT_SUPPORTED) }, { -ENOENT, ST(NOT_FOUND) },
        { -EPROTO, ST(REVISION_MISMATCH) }, { -ENOSYS, ST(INVALID_DEVICE_REQUEST) },
        { -ENOTCONN, ST(DEVICE_NOT_READY) },
    };
    for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++) {
        CHECK_EQ(ntstatus_from_errno(fwd[i].err), fwd[i].st);
        CHECK_EQ(ntstatus_to_errno(fwd[i].st), fwd[i].err);
    }
    CHECK_EQ(ntstatus_from_errno(-ENOSPC), ST(INSUFFICIENT_RESOURCES));
    CHECK_EQ(ntstatus_from_errno(-ETIMEDOUT), ST(DEVICE_NOT_READY));
    CHECK_EQ(ntstatus_from_errno(-E2BIG), ST(UNSUCCESSFUL));
    CHECK_EQ(ntstatus_to_errno(ST(UNSUCCESSFUL)), -EIO);
    CHECK_EQ(ntstatus_to_errno(ST(NO_MEMORY)), -ENOMEM);
    CHECK_EQ(ntstatus_to_errno((int32_t)0xC0001234u), -EIO);
    CHECK(strcmp(ntstatus_name(ST(NOT_LOCKED)), "STATUS_NOT_LOCKED") == 0);
    CHECK(strcmp(ntstatus_name((int32_t)0xC0001234u), "STATUS_0xc0001234") == 0);
}

static void test_frame_prefix(void)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    env.request_id = 0x123456789ull;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    env.stats = &rq;
    uint8_t *f;
    size_t n;
    CHECK_EQ(frame_encode(&env, &f, &n), 0);
    size_t body = n - MDLMAP_FRAME_HDR;
    CHECK(f[0] == (uint8_t)body && f[1] == (uint8_t)(body >> 8) && f[2] == 0 && f[3] == 0);
    struct frame_reader rd;
    frame_reader_init(&rd, 0);
    CHECK_EQ(frame_reader_feed(&rd, f, n), 0);
    const uint8_t *p;
    size_t plen;
    CHECK_EQ(frame_reader_next(&rd, &p, &plen), 1);
    CHECK_EQ(plen, body);
    frame_reader_free(&rd);
    free(f);
}

static void test_usock(void)
{
    char dir[] = "/tmp/mdl-usock-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char path[128], file[128];
    snprintf(path, sizeof(path), "%s/s", dir);
    snprintf(file, sizeof(file), "%s/f", dir);
    struct stat st;

    /* a non-socket is never removed */
    int ffd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(ffd >= 0);
    if (ffd >= 0)
        close(ffd);
    CHECK_EQ(usock_listen(file, 0660, USOCK_NO_GROUP, 4, 0), -EEXIST);
    CHECK(lstat(file, &st) == 0 && S_ISREG(st.st_mode));

    /* the mode is there from bind on, whatever the process umask */
    mode_t old = umask(0);
    int l = usock_listen(path, 0660, USOCK_NO_GROUP, 4, SOCK_NONBLOCK);
    CHECK_EQ(umask(old), 0); /* the caller's umask is back */
    CHECK(l >= 0);
    CHECK(lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0660);

    int c = usock_connect(path, 0);
    CHECK(c >= 0);
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    CHECK(a >= 0);

    /* bytes with an fd */
    int pfd[2];
    CHECK(pipe2(pfd, O_CLOEXEC) == 0);
    CHECK_EQ(usock_send(c, "hi", 2, &pfd[1], 1, 0), 2);
    struct usock_fds fds = { .n = 0 };
    char buf[4] = "";
    CHECK_EQ(usock_recv(a, buf, sizeof(buf), &fds, 0), 2);
    CHECK(memcmp(buf, "hi", 2) == 0);
    CHECK_EQ(fds.n, 1);
    CHECK(!fds.dropped);
    if (fds.n == 1) {
        CHECK(write(fds.fd[0], "x", 1) == 1); /* the passed pipe end works */
        CHECK(read(pfd[0], buf, 1) == 1 && buf[0] == 'x');
        CHECK(fcntl(fds.fd[0], F_GETFD) & FD_CLOEXEC);
    }
    usock_fds_close(&fds);
    CHECK_EQ(usock_send(c, "x", 1, pfd, USOCK_MAX_FDS + 1, 0), -EINVAL);
    close(pfd[0]);
    close(pfd[1]);
    close(a);
    close(c);

    /* a live socket is never removed; a stale one is */
    CHECK_EQ(usock_listen(path, 0660, USOCK_NO_GROUP, 4, 0), -EADDRINUSE);
    CHECK_EQ(usock_remove_stale(path), -EADDRINUSE);
    close(l);

    CHECK_EQ(usock_listen(path, 0640, getegid(), 4, 0) >= 0 ? 0 : -1, 0); /* stale: replaced */
    CHECK(lstat(path, &st) == 0 && (st.st_mode & 0777) == 0640 && st.st_gid == getegid());
    unlink(path);
    unlink(file);
    rmdir(dir);
    CHECK_EQ(usock_connect(path, 0), -ENOENT);
}

struct echo {
    struct frame_reader out; /* what the peer received */
    unsigned dispatched;
};

static long echo_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct echo *e = ctx;
    return frame_reader_feed(&e->out, p, n) < 0 ? -EIO : (long)n;
}

static int echo_dispatch(void *ctx, struct fconn *c, const mdl_envelope *req)
{
    struct echo *e = ctx;
    uint8_t *f;
    size_t n;
    e->dispatched++;
    int rc = fconn_reply_error(req->request_id, -ENOSYS, "echo", &f, &n);
    if (rc == 0)
        fconn_queue(c, f, n);
    return rc;
}

static const struct fconn_ops echo_ops = { .send = echo_send, .dispatch = echo_dispatch };

static mdl_envelope *received(struct echo *e)
{
    const uint8_t *p;
    size_t n;
    mdl_envelope *env = NULL;
    if (frame_reader_next(&e->out, &p, &n) == 1 && frame_decode(p, n, &env) < 0)
        env = NULL;
    return env;
}

static void feed_env(struct fconn *c, uint32_t version, uint64_t id)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    env.version = version;
    env.request_id = id;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    env.stats = &rq;
    uint8_t *f;
    size_t n;
    CHECK_EQ(frame_encode(&env, &f, &n), 0);
    CHECK_EQ(fconn_input(c, f, n), n);
    free(f);
}

static void test_fconn(void)
{
    struct echo e = { .dispatched = 0 };
    frame_reader_init(&e.out, 0);
    struct fconn_budget b = { .cap = 6000, .refusal = "over budget" };
    struct fconn_config cfg = { .out_high = 1 << 16, .budget = &b };
    struct fconn c;
    fconn_init(&c, &echo_ops, &e, &cfg);

    /* a newer envelope is answered, not dispatched; the stream goes on */
    feed_env(&c, MDLMAP_PROTO_VERSION + 1, 7);
    mdl_envelope *r = received(&e);
    CHECK(r && r->request_id == 7 && r->status == ST(REVISION_MISMATCH) &&
          r->body_case == MDLMAP__V1__ENVELOPE__BODY_ERROR_REPLY);
    frame_envelope_free(r);
    CHECK_EQ(e.dispatched, 0);
    feed_env(&c, 0, 8); /* version 0: unset, read as 1 */
    r = received(&e);
    CHECK(r && r->request_id == 8 && r->status == ST(INVALID_DEVICE_REQUEST));
    frame_envelope_free(r);
    CHECK_EQ(e.dispatched, 1);
    CHECK(!fconn_done(&c));
    CHECK_EQ(b.used, 4096); /* the reader's capacity is charged */

    /* input that would grow the reader past the budget: refused, closed */
    uint8_t big[6000] = { 0x00, 0x20, 0, 0 }; /* an 8 KiB frame, never completed */
    CHECK_EQ(fconn_input(&c, big, sizeof(big)), sizeof(big));
    CHECK(fconn_done(&c));
    r = received(&e);
    CHECK(r && r->request_id == 0 && r->status == ST(INSUFFICIENT_RESOURCES) &&
          strcmp(r->detail, "over budget") == 0);
    frame_envelope_free(r);
    fconn_fini(&c);
    CHECK_EQ(b.used, 0);

    /* a zero length prefix: error reply, then done */
    fconn_init(&c, &echo_ops, &e, &cfg);
    uint8_t zero[4] = { 0 };
    CHECK_EQ(fconn_input(&c, zero, sizeof(zero)), sizeof(zero));
    CHECK(fconn_done(&c));
    r = received(&e);
    CHECK(r && r->status == ST(INVALID_PARAMETER));
    frame_envelope_free(r);
    CHECK_EQ(fconn_input(&c, zero, sizeof(zero)), sizeof(zero)); /* dropped once closing */
    CHECK(received(&e) == NULL);
    fconn_fini(&c);
    frame_reader_free(&e.out);
}

/* frame_encode_to into caller storage; frame_reader_space/commit read
 * straight into the reader: grown to a declared frame at once, bounded,
 * bad lengths refused. */
static void test_frame_inplace(void)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    env.request_id = 7;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    env.stats = &rq;
    uint8_t small[2], buf[64];
    size_t n = 0;
    CHECK_EQ(frame_encode_to(&env, small, sizeof(small), &n), -ENOBUFS);
    CHECK(n > MDLMAP_FRAME_HDR && n <= sizeof(buf));
    CHECK_EQ(frame_encode_to(&env, buf, sizeof(buf), &n), 0);

    struct frame_reader rd;
    frame_reader_init(&rd, 0);
    uint8_t *p;
    size_t room;
    /* two frames in one "read", the second cut short */
    CHECK_EQ(frame_reader_space(&rd, &p, &room), 0);
    CHECK(room >= 2 * n);
    memcpy(p, buf, n);
    memcpy(p + n, buf, n - 1);
    frame_reader_commit(&rd, 2 * n - 1);
    const uint8_t *pl;
    size_t plen;
    mdl_envelope *got;
    CHECK_EQ(frame_reader_next(&rd, &pl, &plen), 1);
    CHECK_EQ(frame_decode(pl, plen, &got), 0);
    CHECK_EQ(got->request_id, 7u);
    frame_envelope_free(got);
    CHECK_EQ(frame_reader_next(&rd, &pl, &plen), 0);
    CHECK_EQ(frame_reader_space(&rd, &p, &room), 0);   /* compacts the tail to the front */
    CHECK(p == rd.buf + n - 1 && room >= 1);
    *p = buf[n - 1];
    frame_reader_commit(&rd, 1);
    CHECK_EQ(frame_reader_next(&rd, &pl, &plen), 1);
    CHECK_EQ(plen, n - MDLMAP_FRAME_HDR);
    /* a declared large frame: the buffer grows to hold it whole */
    uint8_t hdr[4] = { 0, 0, 1, 0 };   /* 64 KiB */
    CHECK_EQ(frame_reader_space(&rd, &p, &room), 0);
    memcpy(p, hdr, 4);
    frame_reader_commit(&rd, 4);
    CHECK_EQ(frame_reader_space(&rd, &p, &room), 0);
    CHECK(room >= 65536 && rd.cap <= MDLMAP_MAX_FRAME + MDLMAP_FRAME_HDR);
    frame_reader_commit(&rd, room + 100);   /* over-claimed: clamped to the buffer */
    CHECK(rd.len <= rd.cap);
    frame_reader_free(&rd);
    /* bad lengths: 0 and above the maximum */
    uint32_t bad[2] = { 0, htole32(MDLMAP_MAX_FRAME + 1) };
    for (int i = 0; i < 2; i++) {
        frame_reader_init(&rd, 0);
        CHECK_EQ(frame_reader_space(&rd, &p, &room), 0);
        memcpy(p, &bad[i], 4);
        frame_reader_commit(&rd, 4);
        CHECK_EQ(frame_reader_next(&rd, &pl, &plen), -EMSGSIZE);
        CHECK_EQ(frame_reader_space(&rd, &p, &room), -EMSGSIZE);
        frame_reader_free(&rd);
    }
}

int main(void)
{
    test_ntstatus();
    test_frame_prefix();
    test_frame_inplace();
    test_usock();
    test_fconn();
    return tap_done();
}
