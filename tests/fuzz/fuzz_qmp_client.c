/* Fuzz target: hostd's QMP client (hostd/qmp/qmp_client.c) against a hostile
 * QEMU on a real Unix socket: the line splitting, the greeting and
 * negotiation, answers matched to the call in flight, events, errors and
 * garbage, in chunks of any size, with calls made, cancelled, and the client
 * freed from outside or from inside one of its own completions (as a VM
 * removed by the request a completion resumed).
 *
 * The first byte's bit 0: the harness greets and negotiates first (the
 * client starts READY). Then a program of operations (byte: op % 12; ops
 * 1 and 2 take several values, so that answers meet calls often), each
 * followed by one event-loop round:
 *   0 LEN BYTES...   raw bytes from QEMU (LEN % 64)
 *   1 (1, 2, 3) KIND a canned message from QEMU: greeting, the negotiation's
 *                    answer, a return or error for the oldest call (or a
 *                    wrong id), an event
 *   2 (4, 5) CMD FREE qmp_call; FREE & 1: its completion frees the client
 *   6 K              qmp_cancel the K-th call made
 *   7                one more event-loop round
 *   8, 11            QEMU reads (and discards) what hostd wrote
 *   9                QEMU closes the connection
 *   10               qmp_client_free
 * Checked: a completion runs at most once per call, never for a cancelled
 * call and never after qmp_client_free returned (called from outside: one
 * called from a completion returns while the calls taken with it are still
 * being completed); every call not cancelled has completed once the client
 * is freed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"
#include "fuzz_input.h"
#include "log.h"
#include "qmp.h"
#include "usock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CALLS 64

static char sock_path[108];
static int listen_fd = -1;

struct call {
    uint64_t id;
    bool made, cancelled, free_in_cb;
    unsigned completions;
};

static struct {
    struct qmp_client *q;
    bool freed;        /* qmp_client_free returned (or ran from a completion) */
    struct call calls[MAX_CALLS];
    unsigned ncalls;
} st;

static char dir[] = "/tmp/fuzzqmp.XXXXXX";

static void cleanup(void)
{
    close(listen_fd);
    unlink(sock_path);
    rmdir(dir);
}

static void setup(void)
{
    if (listen_fd >= 0)
        return;
    log_threshold = LOG_ERROR; /* every input ends with the client's warning */
    if (!mkdtemp(dir))
        abort();
    snprintf(sock_path, sizeof(sock_path), "%s/qmp.sock", dir);
    listen_fd = usock_listen(sock_path, 0600, USOCK_NO_GROUP, 16, SOCK_NONBLOCK);
    if (listen_fd < 0)
        abort();
    atexit(cleanup);
}

static void on_done(void *ctx, int status, const struct json_doc *d, int result, const char *detail)
{
    (void)d;
    (void)result;
    (void)detail;
    (void)status;
    struct call *c = ctx;
    if (st.freed || c->cancelled || c->completions)
        abort(); /* after free, cancelled, or twice */
    c->completions++;
    if (c->free_in_cb && st.q) {
        struct qmp_client *q = st.q;
        st.q = NULL;
        qmp_client_free(q);
    }
}

static void server_send(int fd, const char *s, size_t n)
{
    if (fd >= 0)
        (void)send(fd, s, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The id of the oldest call that has not completed, or 0. */
static uint64_t oldest_id(void)
{
    for (unsigned i = 0; i < st.ncalls; i++)
        if (st.calls[i].made && !st.calls[i].cancelled && !st.calls[i].completions)
            return st.calls[i].id;
    return 0;
}

static void canned(int fd, uint8_t kind)
{
    char buf[256];
    uint64_t id = oldest_id();
    switch (kind % 11) { /* answers to the oldest call weigh most */
    case 0:
        snprintf(buf, sizeof(buf), "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
                                   "\"capabilities\": []}}\r\n");
        break;
    case 1:
        snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": 0}\r\n");
        break;
    case 2:
    case 7:
    case 8:
    case 9:
        snprintf(buf, sizeof(buf), "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": %" PRIu64 "}\r\n",
                 id);
        break;
    case 3:
    case 10:
        snprintf(buf, sizeof(buf), "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": %" PRIu64 "}\n",
                 id);
        break;
    case 4:
        snprintf(buf, sizeof(buf), "{\"return\": \"x\", \"id\": %" PRIu64 "}\n", id + 1);
        break;
    case 5:
        snprintf(buf, sizeof(buf), "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n");
        break;
    default:
        snprintf(buf, sizeof(buf), "{\"return\": \"line\\u0000\\n\", \"id\": %" PRIu64 "}\n", id);
        break;
    }
    server_send(fd, buf, strlen(buf));
}

/* Accept the client's connection (after its first connect attempt, which
 * runs from its 1 ms timer); stale connections of earlier inputs go first. */
static int accept_client(struct evloop *loop)
{
    for (int fd; (fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
        close(fd);
    for (int i = 0; i < 200; i++) {
        evloop_run_once(loop, 5);
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
    }
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    memset(&st, 0, sizeof(st));
    struct evloop *loop = evloop_new();
    if (!loop)
        return 0;
    struct qmp_config cfg = { .name = "f", .path = sock_path, .loop = loop, .timeout_ms = 600000 };
    st.q = qmp_client_new(&cfg);
    int fd = st.q ? accept_client(loop) : -1;
    struct fuzz_in in = { data, size };
    if (fd >= 0 && (fuzz_take8(&in) & 1)) {
        canned(fd, 0);
        evloop_run_once(loop, 0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        for (int i = 0; i < 100 && poll(&p, 1, 0) != 1; i++)
            evloop_run_once(loop, 1); /* the negotiation goes out from EPOLLOUT */
        char sink[256];
        (void)recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        canned(fd, 1);
        for (int i = 0; i < 100 && !qmp_client_ready(st.q); i++)
            evloop_run_once(loop, 1);
    }
    static const char *const cmds[] = { "query-status", "stop", "cont", "human-monitor-command", "bad name" };
    for (unsigned steps = 0; st.q && in.n && steps < 256; steps++) {
        static const uint8_t ops[12] = { 0, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 5 };
        uint8_t op = ops[fuzz_take8(&in) % 12];
        switch (op) {
        case 0: {
            char raw[64];
            size_t n = fuzz_take8(&in) % 64;
            fuzz_take(&in, raw, n);
            server_send(fd, raw, n);
            break;
        }
        case 1:
            canned(fd, fuzz_take8(&in));
            break;
        case 2: {
            uint8_t cmd = fuzz_take8(&in), fl = fuzz_take8(&in);
            if (st.ncalls == MAX_CALLS)
                break;
            struct call *c = &st.calls[st.ncalls];
            c->free_in_cb = fl & 1;
            const char *args = cmd % 5 == 3 ? "{\"command-line\":\"info registers -a\"}" : NULL;
            if (qmp_call(st.q, cmds[cmd % 5], args, on_done, c, &c->id) == 0) {
                c->made = true;
                st.ncalls++;
            }
            break;
        }
        case 3: {
            uint8_t k = fuzz_take8(&in);
            if (st.ncalls) {
                struct call *c = &st.calls[k % st.ncalls];
                if (!c->completions) {
                    qmp_cancel(st.q, c->id);
                    c->cancelled = true;
                }
            }
            break;
        }
        case 4:
            evloop_run_once(loop, 0);
            break;
        case 5: {
            char sink[4096];
            while (fd >= 0 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
                ;
            break;
        }
        case 6:
            if (fd >= 0)
                close(fd);
            fd = -1;
            break;
        default: {
            struct qmp_client *q = st.q;
            st.q = NULL;
            qmp_client_free(q);
            st.freed = true;
            break;
        }
        }
        evloop_run_once(loop, 0);
    }
    if (st.q) {
        struct qmp_client *q = st.q;
        st.q = NULL;
        qmp_client_free(q);
    }
    st.freed = true;
    for (unsigned i = 0; i < st.ncalls; i++)
        if (!st.calls[i].cancelled && st.calls[i].completions != 1)
            abort(); /* a call the client forgot */
    evloop_run_once(loop, 0); /* nothing of the client may run any more */
    if (fd >= 0)
        close(fd);
    evloop_free(loop);
    return 0;
}
