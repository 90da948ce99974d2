/* Host API client library against a scripted server on a socketpair: the
 * library must not report success for answers that do not match the request
 * (short writes, missing or short ranges, more bytes than asked), keeps
 * pushed events apart from responses, and bounds the events it queues. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "mdlmap_client.h"
#include "tap.h"

static void reply(int fd, uint64_t id, int32_t status, mdl_envelope *env)
{
    env->version = MDLMAP_PROTO_VERSION;
    env->request_id = id;
    env->status = status;
    env->detail = "";
    if (frame_write_fd(fd, env) < 0)
        _exit(3);
}

/* Serve one Write request on fd, answering `written` bytes (and the request's id). */
static void serve_write(int fd, uint32_t written)
{
    mdl_envelope *req = NULL;
    if (frame_read_fd(fd, &req) < 0)
        _exit(2);
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__WriteResponse rp = MDLMAP__V1__WRITE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE_REPLY;
    env.write_reply = &rp;
    rp.written = written;
    reply(fd, req->request_id, 0, &env);
    frame_envelope_free(req);
    _exit(0);
}

static int write_against(uint32_t written, size_t len)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        serve_write(sv[1], written);
    }
    close(sv[1]);
    struct mdlmap_client c;
    memset(&c, 0, sizeof(c));
    c.fd = sv[0];
    c.next_id = 1;
    uint8_t buf[100];
    memset(buf, 0xab, sizeof(buf));
    int rc = mdlmap_client_write(&c, 0x1234, 0, buf, len);
    mdlmap_client_close(&c);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return rc;
}

/* ---- a scripted server for one request: serve(fd, req) answers it ---- */

static void push_event(int fd, uint64_t seq)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__Event ev = MDLMAP__V1__EVENT__INIT;
    ev.seq = seq;
    ev.type = MDLMAP__V1__EVENT_TYPE__MAPPING_CREATED;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_EVENT;
    env.event = &ev;
    reply(fd, 7, 0, &env); /* request_id = the Subscribe's */
}

typedef void (*serve_fn)(int fd, const mdl_envelope *req, int arg);
typedef int (*client_fn)(struct mdlmap_client *c);

static int against(serve_fn serve, int arg, client_fn client)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        mdl_envelope *req = NULL;
        if (frame_read_fd(sv[1], &req) < 0)
            _exit(2);
        serve(sv[1], req, arg);
        frame_envelope_free(req);
        _exit(0);
    }
    close(sv[1]);
    struct mdlmap_client c;
    memset(&c, 0, sizeof(c));
    c.fd = sv[0];
    c.next_id = 1;
    int rc = client(&c);
    mdlmap_client_close(&c);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return rc;
}

/* arg events pushed before the Stats answer */
static void serve_stats_after_events(int fd, const mdl_envelope *req, int arg)
{
    for (int i = 0; i < arg; i++)
        push_event(fd, 100 + (uint64_t)i);
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsResponse rp = MDLMAP__V1__STATS_RESPONSE__INIT;
    rp.mappings = 42;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS_REPLY;
    env.stats_reply = &rp;
    reply(fd, req->request_id, 0, &env);
}

/* The answer is the response, the events wait in order, then nothing. */
static int stats_then_events(struct mdlmap_client *c)
{
    mdl_envelope *r, *ev;
    CHECK(mdlmap_client_stats(c, &r) == 0);
    CHECK(r && r->stats_reply->mappings == 42);
    frame_envelope_free(r);
    for (uint64_t i = 0; i < 2; i++) {
        CHECK(mdlmap_client_next_event(c, 1000, &ev) == 0);
        CHECK(ev && ev->body_case == MDLMAP__V1__ENVELOPE__BODY_EVENT && ev->event->seq == 100 + i);
        frame_envelope_free(ev);
    }
    CHECK(mdlmap_client_next_event(c, 1000, &ev) == -ECONNRESET); /* the server has gone */
    return 0;
}

/* More events than the queue holds: the rest are counted as dropped. */
static int event_queue_bounded(struct mdlmap_client *c)
{
    mdl_envelope *r;
    CHECK(mdlmap_client_stats(c, &r) == 0);
    frame_envelope_free(r);
    CHECK_EQ(c->evq_n, MDLMAP_CLIENT_EVENT_QUEUE);
    CHECK_EQ(c->events_dropped, 6);
    return 0; /* close frees the queued events (LeakSanitizer checks) */
}

/* PhysRead answered with arg: 0 per-range statuses, 1 one range too few,
 * 2 a range's data one byte short */
static void serve_phys_read(int fd, const mdl_envelope *req, int arg)
{
    size_t n = req->phys_read->n_ranges - (arg == 1);
    Mdlmap__V1__RangeData d[4], *dp[4];
    uint8_t bytes[64];
    for (size_t k = 0; k < sizeof(bytes); k++)
        bytes[k] = (uint8_t)('A' + k / 16); /* each range its own letter */
    for (size_t i = 0; i < n && i < 4; i++) {
        mdlmap__v1__range_data__init(&d[i]);
        d[i].status = arg == 0 && i == 1 ? MDLMAP__V1__NT_STATUS__STATUS_MEMORY_NOT_ALLOCATED : 0;
        d[i].data.data = bytes + 16 * i;
        d[i].data.len = d[i].status ? 0 : req->phys_read->ranges[i]->length - (arg == 2);
        dp[i] = &d[i];
    }
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__PhysReadResponse rp = MDLMAP__V1__PHYS_READ_RESPONSE__INIT;
    rp.n_ranges = n;
    rp.ranges = dp;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_PHYS_READ_REPLY;
    env.phys_read_reply = &rp;
    reply(fd, req->request_id, 0, &env);
}

static int phys_read3(struct mdlmap_client *c)
{
    uint8_t a[16], b[16], d[16];
    struct mdlmap_phys_iov iov[3] = { { 0x1000, a, 16, 0 }, { 0x2000, b, 16, 0 }, { 0x3000, d, 16, 0 } };
    int rc = mdlmap_client_phys_read(c, "vm", iov, 3);
    if (rc == -EREMOTEIO) {
        CHECK(iov[0].status == 0 && iov[2].status == 0);
        CHECK(iov[1].status == MDLMAP__V1__NT_STATUS__STATUS_MEMORY_NOT_ALLOCATED);
        CHECK(c->last_status == MDLMAP__V1__NT_STATUS__STATUS_MEMORY_NOT_ALLOCATED);
        /* the ranges that succeeded hold their own bytes */
        CHECK(a[0] == 'A' && a[15] == 'A' && d[0] == 'C' && d[15] == 'C');
    }
    return rc;
}

/* VirtRead answered with more bytes than asked (arg 1) or a fault after 8 (arg 0). */
static void serve_virt_read(int fd, const mdl_envelope *req, int arg)
{
    uint8_t bytes[64];
    memset(bytes, 'v', sizeof(bytes));
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VirtReadResponse rp = MDLMAP__V1__VIRT_READ_RESPONSE__INIT;
    rp.data.data = bytes;
    rp.data.len = arg ? req->virt_read->length + 1 : 8;
    rp.fault_vaddr = arg ? 0 : req->virt_read->vaddr + 8;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VIRT_READ_REPLY;
    env.virt_read_reply = &rp;
    reply(fd, req->request_id, arg ? 0 : MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION, &env);
}

static int virt_read16(struct mdlmap_client *c)
{
    uint8_t buf[16] = { 0 };
    size_t done = 99;
    uint64_t fault = 0;
    int rc = mdlmap_client_virt_read(c, "vm", 0x1000, false, 0x4000, buf, sizeof(buf), &done, &fault);
    if (rc == -EREMOTEIO)
        CHECK(done == 8 && fault == 0x4008 && buf[7] == 'v' && buf[8] == 0);
    else
        CHECK(done == 0);
    return rc;
}

int main(void)
{
    CHECK(write_against(100, 100) == 0);       /* all written */
    CHECK(write_against(50, 100) == -EPROTO);  /* a short write is not success */
    CHECK(write_against(0, 100) == -EPROTO);
    CHECK(against(serve_stats_after_events, 2, stats_then_events) == 0);
    CHECK(against(serve_stats_after_events, MDLMAP_CLIENT_EVENT_QUEUE + 6, event_queue_bounded) == 0);
    CHECK(against(serve_phys_read, 0, phys_read3) == -EREMOTEIO); /* per range */
    CHECK(against(serve_phys_read, 1, phys_read3) == -EPROTO);    /* a range missing */
    CHECK(against(serve_phys_read, 2, phys_read3) == -EPROTO);    /* a range short */
    CHECK(against(serve_virt_read, 0, virt_read16) == -EREMOTEIO); /* a fault: what came before it */
    CHECK(against(serve_virt_read, 1, virt_read16) == -EPROTO);    /* more than asked */
    return tap_done();
}
