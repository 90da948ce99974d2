/* QMP client (see qmp.h). States: DOWN (a timer retries the connect),
 * GREETING (connected, waiting for {"QMP": ...}), NEGOTIATING
 * (qmp_capabilities sent), READY (commands go out one at a time). One
 * timerfd serves the reconnect delay, the handshake deadline and the
 * deadline of the command in flight. Commands are only ever written from the
 * socket's EPOLLOUT event, so neither qmp_call nor a completion callback can
 * tear the connection down under the code that called them. */
#include "qmp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "log.h"
#include "usock.h"

#define QMP_IN_MIN 4096u /* input buffer kept between messages */

enum qstate { Q_DOWN, Q_GREETING, Q_NEGOTIATING, Q_READY };

struct qcall {
    uint64_t id;
    qmp_done_fn cb;   /* NULL: cancelled */
    void *ctx;
    char *text;       /* the command line, newline included */
    size_t len;
};

struct qmp_client {
    struct evloop *loop;
    char name[64];
    char path[108];
    unsigned timeout_ms;
    enum qstate st;
    int fd;
    struct ev_handler h;
    int tfd;
    struct ev_handler th;
    unsigned backoff_ms;
    char *in;                 /* received bytes not yet a whole line */
    size_t in_len, in_cap;
    const char *out;          /* bytes being written: a call's text or the negotiation */
    size_t out_len, out_off;
    struct qcall calls[QMP_MAX_PENDING]; /* ring: calls[head] is the oldest */
    unsigned head, n;
    bool inflight;            /* calls[head] was sent (entirely or in part) */
    uint64_t next_id;
    bool freeing;
    struct log_limit log;
};

static const char negotiate[] = "{\"execute\":\"qmp_capabilities\",\"id\":0}\n";

static void timer_in(struct qmp_client *q, unsigned ms)
{
    struct itimerspec its = { 0 };
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
    timerfd_settime(q->tfd, 0, &its, NULL);
}

static void arm(struct qmp_client *q)
{
    if (q->st == Q_DOWN)
        return;
    bool next = q->st == Q_READY && !q->inflight && q->n;
    evloop_mod(q->loop, &q->h, EPOLLIN | (q->out || next ? EPOLLOUT : 0));
}

/* Take every call out of the ring and complete it with err (the one in
 * flight with first_err): the ring is empty before any callback runs. */
static void fail_all(struct qmp_client *q, int first_err, int err, const char *detail)
{
    struct qcall taken[QMP_MAX_PENDING];
    unsigned n = q->n;
    bool inflight = q->inflight;
    for (unsigned i = 0; i < n; i++)
        taken[i] = q->calls[(q->head + i) % QMP_MAX_PENDING];
    q->head = q->n = 0;
    q->inflight = false;
    q->out = NULL;
    for (unsigned i = 0; i < n; i++) {
        if (taken[i].cb)
            taken[i].cb(taken[i].ctx, i == 0 && inflight ? first_err : err, NULL, JSON_NONE, detail);
        free(taken[i].text);
    }
}

/* End the connection (or a failed attempt): its calls fail, a reconnect is
 * scheduled. */
static void drop(struct qmp_client *q, int first_err, const char *why)
{
    if (q->st != Q_DOWN) {
        log_warn_limited(&q->log, q->name, "vm %s: QMP %s: %s; reconnecting", q->name, q->path, why);
        evloop_del(q->loop, &q->h);
        close(q->fd);
        q->fd = -1;
        q->st = Q_DOWN;
    }
    free(q->in);
    q->in = NULL;
    q->in_len = q->in_cap = 0;
    q->out = NULL;
    if (!q->freeing)
        timer_in(q, q->backoff_ms);
    q->backoff_ms = q->backoff_ms * 2 > QMP_BACKOFF_MAX_MS ? QMP_BACKOFF_MAX_MS : q->backoff_ms * 2;
    char detail[160];
    snprintf(detail, sizeof(detail), "QMP of vm %s: %s", q->name, why);
    fail_all(q, first_err, -ENOTCONN, detail);
}

static void on_socket(void *opaque, uint32_t events);

static void try_connect(struct qmp_client *q)
{
    int fd = usock_connect(q->path, SOCK_NONBLOCK);
    if (fd < 0) {
        /* not there yet (or QEMU's backlog is full): quietly try again */
        log_debug("vm %s: QMP %s: connect: %s", q->name, q->path, strerror(-fd));
        drop(q, -ENOTCONN, "not connected");
        return;
    }
    q->in = malloc(QMP_IN_MIN);
    if (!q->in || evloop_add(q->loop, &q->h, fd, EPOLLIN, on_socket, q) < 0) {
        close(fd);
        drop(q, -ENOTCONN, "out of memory");
        return;
    }
    q->in_cap = QMP_IN_MIN;
    q->fd = fd;
    q->st = Q_GREETING;
    timer_in(q, q->timeout_ms); /* the handshake deadline */
}

/* Start the next call if the connection is ready for it. */
static void start_next(struct qmp_client *q)
{
    /* Calls cancelled before they went out are dropped here; a cancelled
     * call in flight stays at the head until its answer (complete() drops
     * it): q->out may point into its text. */
    while (!q->inflight && q->n && !q->calls[q->head].cb) {
        free(q->calls[q->head].text);
        q->head = (q->head + 1) % QMP_MAX_PENDING;
        q->n--;
    }
    if (q->st != Q_READY || q->inflight || q->out || !q->n)
        return;
    struct qcall *c = &q->calls[q->head];
    q->inflight = true;
    q->out = c->text;
    q->out_len = c->len;
    q->out_off = 0;
    timer_in(q, q->timeout_ms);
}

/* Write what is pending; false when the connection was dropped. */
static bool flush(struct qmp_client *q)
{
    start_next(q);
    while (q->out && q->out_off < q->out_len) {
        long w = usock_send(q->fd, q->out + q->out_off, q->out_len - q->out_off, NULL, 0, MSG_DONTWAIT);
        if (w == -EAGAIN || w == -EINTR)
            break;
        if (w <= 0) {
            drop(q, -ENOTCONN, "send failed");
            return false;
        }
        q->out_off += (size_t)w;
    }
    if (q->out && q->out_off == q->out_len)
        q->out = NULL;
    arm(q);
    return true;
}

/* The answer to the call in flight: complete it and free its slot first. */
static void complete(struct qmp_client *q, int status, const struct json_doc *d, int result, const char *detail)
{
    struct qcall c = q->calls[q->head];
    q->head = (q->head + 1) % QMP_MAX_PENDING;
    q->n--;
    q->inflight = false;
    timer_in(q, 0);
    if (c.cb)
        c.cb(c.ctx, status, d, result, detail);
    free(c.text);
}

/* One message (text[0..len), writable). 0, or -EPROTO with why set. */
static int handle_message(struct qmp_client *q, char *text, size_t len, const char **why)
{
    size_t cap = len / 2 + 2 < QMP_MAX_NODES ? len / 2 + 2 : QMP_MAX_NODES;
    struct json_node *nodes = malloc(cap * sizeof(*nodes));
    if (!nodes) {
        *why = "out of memory";
        return -EPROTO;
    }
    struct json_doc d;
    int rc = json_parse(text, len, nodes, (int)cap, &d);
    if (rc < 0 || d.n[0].type != JSON_OBJECT) {
        *why = rc == -E2BIG ? "a message nests too deep or holds too many values" : "a message is not a JSON object";
        free(nodes);
        return -EPROTO;
    }
    rc = 0;
    int ret = json_get(&d, 0, "return"), err = json_get(&d, 0, "error");
    uint64_t id;
    if (json_get(&d, 0, "event") != JSON_NONE && q->st != Q_GREETING) {
        /* asynchronous events (STOP, RESUME, ...) are not used */
    } else if (q->st == Q_GREETING) {
        int g = json_get(&d, 0, "QMP");
        if (g == JSON_NONE) {
            *why = "no QMP greeting";
            rc = -EPROTO;
        } else {
            int v = json_get(&d, json_get(&d, g, "version"), "qemu");
            uint64_t ma = 0, mi = 0, mc = 0;
            json_u64(&d, json_get(&d, v, "major"), &ma);
            json_u64(&d, json_get(&d, v, "minor"), &mi);
            json_u64(&d, json_get(&d, v, "micro"), &mc);
            /* per connection, which QEMU may end at once: limited like the drops */
            log_info_limited(&q->log, q->name, "vm %s: QMP %s: QEMU %" PRIu64 ".%" PRIu64 ".%" PRIu64 " greets",
                             q->name, q->path, ma, mi, mc);
            q->st = Q_NEGOTIATING;
            q->out = negotiate;
            q->out_len = sizeof(negotiate) - 1;
            q->out_off = 0;
        }
    } else if ((ret == JSON_NONE) == (err == JSON_NONE)) {
        *why = "a message is neither an answer nor an event";
        rc = -EPROTO;
    } else if (json_u64(&d, json_get(&d, 0, "id"), &id) < 0 ||
               (q->st == Q_NEGOTIATING ? id != 0 : !q->inflight || id != q->calls[q->head].id)) {
        *why = "an answer to no command in flight";
        rc = -EPROTO;
    } else if (q->st == Q_NEGOTIATING) {
        if (ret == JSON_NONE) {
            *why = "qmp_capabilities refused";
            rc = -EPROTO;
        } else {
            q->st = Q_READY;
            q->backoff_ms = QMP_BACKOFF_MIN_MS;
            timer_in(q, 0);
            log_info_limited(&q->log, q->name, "vm %s: QMP connected", q->name);
        }
    } else if (ret != JSON_NONE) {
        complete(q, 0, &d, ret, NULL);
    } else {
        const char *desc = json_str(&d, json_get(&d, err, "desc"));
        char detail[256];
        snprintf(detail, sizeof(detail), "QEMU: %s", desc ? desc : "error without a description");
        complete(q, -EIO, NULL, JSON_NONE, detail);
    }
    free(nodes);
    return rc;
}

static void on_socket(void *opaque, uint32_t events)
{
    struct qmp_client *q = opaque;
    if (events & EPOLLOUT && !flush(q))
        return;
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    if (q->in_len == q->in_cap) {
        if (q->in_cap >= QMP_MAX_MESSAGE) {
            drop(q, -ENOTCONN, "a message exceeds 1 MiB");
            return;
        }
        char *p = realloc(q->in, q->in_cap * 2);
        if (!p) {
            drop(q, -ENOTCONN, "out of memory");
            return;
        }
        q->in = p;
        q->in_cap *= 2;
    }
    ssize_t r = recv(q->fd, q->in + q->in_len, q->in_cap - q->in_len, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(q, -ENOTCONN, r == 0 ? "QEMU closed the socket" : "receive failed");
        return;
    }
    if (r < 0)
        return;
    size_t scanned = q->in_len, start = 0;
    q->in_len += (size_t)r;
    const char *why = NULL;
    for (;;) {
        char *nl = memchr(q->in + scanned, '\n', q->in_len - scanned);
        if (!nl)
            break;
        size_t end = (size_t)(nl - q->in);
        if (end > start && handle_message(q, q->in + start, end - start, &why) < 0) {
            drop(q, -ENOTCONN, why);
            return;
        }
        if (q->freeing)
            return; /* a completion removed the VM: q is freed after this event */
        start = scanned = end + 1;
    }
    q->in_len -= start;
    memmove(q->in, q->in + start, q->in_len);
    if (q->in_len == 0 && q->in_cap > QMP_IN_MIN) {
        char *p = realloc(q->in, QMP_IN_MIN); /* a large answer's buffer is not kept */
        if (p) {
            q->in = p;
            q->in_cap = QMP_IN_MIN;
        }
    }
    flush(q);
}

static void on_timer(void *opaque, uint32_t events)
{
    (void)events;
    struct qmp_client *q = opaque;
    uint64_t ticks;
    if (read(q->tfd, &ticks, sizeof(ticks)) < 0)
        return; /* disarmed or re-armed since it fired */
    char why[128];
    switch (q->st) {
    case Q_DOWN:
        try_connect(q);
        return;
    case Q_GREETING:
    case Q_NEGOTIATING:
        /* QEMU 7.2 serves one client per QMP socket: a second one is
         * accepted by the kernel but never greeted */
        snprintf(why, sizeof(why), "no greeting within %u ms (another client on this socket?)", q->timeout_ms);
        drop(q, -ENOTCONN, why);
        return;
    case Q_READY:
        if (q->inflight) {
            snprintf(why, sizeof(why), "no answer within %u ms", q->timeout_ms);
            drop(q, -ETIMEDOUT, why);
        }
        return;
    }
}

struct qmp_client *qmp_client_new(const struct qmp_config *cfg)
{
    if (!cfg || !cfg->path || !cfg->loop || strlen(cfg->path) >= sizeof(((struct qmp_client *)0)->path))
        return NULL;
    struct qmp_client *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->loop = cfg->loop;
    snprintf(q->name, sizeof(q->name), "%s", cfg->name ? cfg->name : "?");
    snprintf(q->path, sizeof(q->path), "%s", cfg->path);
    q->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : QMP_TIMEOUT_MS;
    q->backoff_ms = QMP_BACKOFF_MIN_MS;
    q->fd = -1;
    q->st = Q_DOWN;
    q->next_id = 1;
    q->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (q->tfd < 0 || evloop_add(q->loop, &q->th, q->tfd, EPOLLIN, on_timer, q) < 0) {
        if (q->tfd >= 0)
            close(q->tfd);
        free(q);
        return NULL;
    }
    timer_in(q, 1);      /* the first attempt runs from the loop */
    return q;
}

void qmp_client_free(struct qmp_client *q)
{
    if (!q)
        return;
    q->freeing = true;
    drop(q, -ENOTCONN, "the VM is going away");
    evloop_del(q->loop, &q->th);
    close(q->tfd);
    /* this may run inside one of q's own completions (its VM removed by
     * the request a completion resumed): the memory outlives this event */
    if (evloop_defer_free(q->loop, free, q) < 0)
        free(q);
}

bool qmp_client_ready(const struct qmp_client *q)
{
    return q && q->st == Q_READY;
}

static bool command_name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return false;
    return true;
}

int qmp_call(struct qmp_client *q, const char *command, const char *args, qmp_done_fn cb, void *ctx,
             uint64_t *id)
{
    if (!q || !command || !cb || !command_name_ok(command))
        return -EINVAL;
    if (q->freeing || q->st == Q_DOWN)
        return -ENOTCONN;
    if (q->n == QMP_MAX_PENDING)
        return -ENOSPC;
    uint64_t cid = q->next_id++;
    char *text = NULL;
    int len = args ? asprintf(&text, "{\"execute\":\"%s\",\"arguments\":%s,\"id\":%" PRIu64 "}\n", command, args, cid)
                   : asprintf(&text, "{\"execute\":\"%s\",\"id\":%" PRIu64 "}\n", command, cid);
    if (len < 0)
        return -ENOMEM;
    q->calls[(q->head + q->n) % QMP_MAX_PENDING] = (struct qcall){ cid, cb, ctx, text, (size_t)len };
    q->n++;
    arm(q); /* sent from the EPOLLOUT event */
    *id = cid;
    return 0;
}

void qmp_cancel(struct qmp_client *q, uint64_t id)
{
    for (unsigned i = 0; q && i < q->n; i++) {
        struct qcall *c = &q->calls[(q->head + i) % QMP_MAX_PENDING];
        if (c->id == id)
            c->cb = NULL;
    }
}
