/* Fuzz target: a host API client's Subscribe requests (raw bytes through the
 * client's framed connection, and structured ones with any types and VM
 * names) against the event stream: events of any type, VM and detail
 * length published while the client's "kernel" takes a fuzzed number of
 * bytes at a time. The input is a program of operations (byte: op % 5):
 *   0 LEN BYTES...          raw bytes from the client
 *   1 TYPE VM DETAILLEN     publish an event
 *   2 N                     the kernel takes up to 16*N bytes of output
 *   3 NTYPES TYPE... VM ID  a Subscribe (types -15..15: unknown ones too)
 *   4                       the client reconnects (its subscription is released)
 * Checked: every frame hostd sends decodes; events of one subscription come
 * with increasing seq numbers and seq >= last + 1 + dropped; the queue of a
 * subscriber never holds more than API_EVENT_QUEUE_EVENTS events, its
 * output never more than the connection's bound plus one frame. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fconn.h"
#include "fuzz_input.h"
#include "host_api_int.h"
#include "log.h"

static struct events *bus;
static struct host_api api; /* only what the subscriber code reads: cfg.events */

struct sink {
    struct frame_reader rd;
    size_t budget;            /* bytes the "kernel" takes now */
    uint64_t last_seq;
};

struct client {
    struct api_client c;
    struct sink s;
};

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_events: %s\n", what);
    abort();
}

static void check_frames(struct sink *s)
{
    const uint8_t *p;
    size_t n;
    int r;
    while ((r = frame_reader_next(&s->rd, &p, &n)) > 0) {
        mdl_envelope *env;
        if (frame_decode(p, n, &env) < 0)
            fail("hostd sent an undecodable frame");
        if (env->body_case == MDLMAP__V1__ENVELOPE__BODY_EVENT) {
            const Mdlmap__V1__Event *ev = env->event;
            if (s->last_seq && ev->seq < s->last_seq + 1 + ev->dropped)
                fail("seq does not account for dropped events");
            if (strlen(ev->detail) > API_EVENT_DETAIL_MAX)
                fail("detail longer than its bound");
            s->last_seq = ev->seq;
        }
        frame_envelope_free(env);
    }
    if (r < 0)
        fail("hostd sent a bad frame length");
}

static long sink_send(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct client *cl = ctx;
    if (!cl->s.budget)
        return -11; /* -EAGAIN */
    if (n > cl->s.budget)
        n = cl->s.budget;
    cl->s.budget -= n;
    if (frame_reader_feed(&cl->s.rd, p, n) < 0)
        fail("sink out of memory");
    cl->c.sent_bytes += n;
    check_frames(&cl->s);
    return (long)n;
}

static int dispatch(void *ctx, struct fconn *fc, const mdl_envelope *req)
{
    struct client *cl = ctx;
    api_events_message(&cl->c, req); /* anything else goes unanswered here */
    return 0;
}

static const struct fconn_ops ops = { .send = sink_send, .dispatch = dispatch };

static void client_open(struct client *cl)
{
    memset(cl, 0, sizeof(*cl));
    cl->c.api = &api;
    struct fconn_config cfg = { .out_high = API_OUTQ_HIGH };
    fconn_init(&cl->c.fc, &ops, cl, &cfg);
    frame_reader_init(&cl->s.rd, MDLMAP_MAX_FRAME);
}

static void client_close(struct client *cl)
{
    api_events_stop(&cl->c);
    fconn_fini(&cl->c.fc);
    frame_reader_free(&cl->s.rd);
}

static void subscribe(struct client *cl, struct fuzz_in *in)
{
    Mdlmap__V1__EventType types[8];
    unsigned nt = fuzz_take8(in) % 8;
    for (unsigned i = 0; i < nt; i++)
        types[i] = (Mdlmap__V1__EventType)((int8_t)fuzz_take8(in) % 16); /* 1..13 known, the rest not */
    static const char *const vms[] = { "", "vm0", "vm1",
                                       "a-name-longer-than-sixty-three-bytes-which-hostd-must-refuse-xxxxxx" };
    Mdlmap__V1__SubscribeRequest rq = MDLMAP__V1__SUBSCRIBE_REQUEST__INIT;
    rq.types = types;
    rq.n_types = nt;
    rq.vm_name = (char *)vms[fuzz_take8(in) % 4];
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    env.version = 1;
    env.request_id = fuzz_take8(in);
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_SUBSCRIBE;
    env.subscribe = &rq;
    uint8_t *f;
    size_t n;
    if (frame_encode(&env, &f, &n) == 0) {
        fconn_input(&cl->c.fc, f, n);
        free(f);
    }
}

static void publish(struct fuzz_in *in)
{
    static const char *const vms[] = { NULL, "vm0", "vm1", "" };
    char detail[512];
    unsigned type = 1 + fuzz_take8(in) % (EV_TYPE_COUNT - 1);
    const char *vm = vms[fuzz_take8(in) % 4];
    size_t dl = (size_t)fuzz_take8(in) * 2;
    memset(detail, 'd', dl);
    detail[dl] = '\0';
    struct event ev = { .type = (enum event_type)type, .vm_name = vm, .cid = 3, .mdl_handle = 1,
                        .detail = detail };
    if (events_wanted(bus, ev.type))
        events_publish(bus, &ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!bus) {
        log_threshold = LOG_ERROR;
        bus = events_new();
        if (!bus)
            return 0;
        api.cfg.events = bus;
    }
    struct fuzz_in in = { data, size };
    struct client *cl = malloc(sizeof(*cl));
    if (!cl)
        return 0;
    client_open(cl);
    for (unsigned ops_done = 0; in.n && ops_done < 4096; ops_done++) {
        switch (fuzz_take8(&in) % 5) {
        case 0: {
            uint8_t raw[256];
            size_t n = fuzz_take8(&in);
            fuzz_take(&in, raw, n);
            fconn_input(&cl->c.fc, raw, n);
            break;
        }
        case 1:
            publish(&in);
            break;
        case 2:
            cl->s.budget = (size_t)fuzz_take8(&in) * 16;
            fconn_pump(&cl->c.fc);
            break;
        case 3:
            subscribe(cl, &in);
            break;
        default:
            client_close(cl);
            client_open(cl);
            break;
        }
        if (cl->c.sub.n > API_EVENT_QUEUE_EVENTS)
            fail("more events queued than the bound");
        if (cl->c.fc.out.bytes > API_OUTQ_HIGH + 4096)
            fail("output beyond its bound");
    }
    client_close(cl);
    free(cl);
    if (events_subscribers(bus) != 0)
        fail("a closed client is still subscribed");
    return 0;
}
