/* Framed connection (see fconn.h). */
#include "fconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fconn_init(struct fconn *c, const struct fconn_ops *ops, void *ctx, const struct fconn_config *cfg)
{
    memset(c, 0, sizeof(*c));
    frame_reader_init(&c->rd, MDLMAP_MAX_FRAME);
    outq_init(&c->out);
    c->ops = ops;
    c->ctx = ctx;
    c->cfg = *cfg;
}

/* Charge the connection `bytes` of reader capacity (replacing its previous
 * charge). Growth that would pass the budget fails and charges nothing. */
static int charge(struct fconn *c, size_t bytes)
{
    struct fconn_budget *b = c->cfg.budget;
    if (!b || bytes == c->charged)
        return 0;
    size_t others = b->used - c->charged;
    if (bytes > c->charged && (bytes > b->cap || others > b->cap - bytes))
        return -ENOSPC;
    b->used = others + bytes;
    c->charged = bytes;
    return 0;
}

void fconn_fini(struct fconn *c)
{
    frame_reader_free(&c->rd);
    charge(c, 0);
    outq_free(&c->out);
}

static void stop(struct fconn *c, int err, const char *what)
{
    if (!c->closing && c->ops->stopping)
        c->ops->stopping(c->ctx, err, what);
    c->closing = true;
}

int fconn_flush(struct fconn *c)
{
    if (c->send_err)
        return c->send_err; /* the stream is broken: nothing more goes out */
    int rc = outq_flush(&c->out, c->ops->send, c->ctx);
    if (rc < 0) {
        c->send_err = rc;
        stop(c, rc, "send failed");
    }
    return rc;
}

int fconn_queue(struct fconn *c, uint8_t *frame, size_t len)
{
    int rc = outq_push_owned(&c->out, frame, len, NULL, 0, 0);
    if (rc < 0)
        stop(c, rc, "out of memory queueing a response");
    return rc;
}

int fconn_push(struct fconn *c, uint8_t *frame, size_t len, const int *fds, unsigned nfds, uint64_t tag)
{
    return outq_push_owned(&c->out, frame, len, fds, nfds, tag);
}

void fconn_fail(struct fconn *c, int err, const char *what)
{
    uint8_t *f;
    size_t n;
    stop(c, err, what);
    if (fconn_reply_error(0, err, what, &f, &n) == 0)
        fconn_queue(c, f, n);
}

/* Envelopes newer than this side are answered, not dispatched; the stream
 * stays usable. Version 0 is an unset field (proto3 default): read as 1. */
static int version_mismatch(struct fconn *c, const mdl_envelope *req)
{
    char detail[64];
    uint8_t *f;
    size_t n;
    snprintf(detail, sizeof(detail), "envelope version %u, hostd speaks %u", req->version,
             MDLMAP_PROTO_VERSION);
    int rc = fconn_reply_error(req->request_id, -EPROTO, detail, &f, &n);
    if (rc == 0)
        fconn_queue(c, f, n);
    return rc;
}

/* Dispatch complete frames while output has room, then flush. */
static void process(struct fconn *c)
{
    while (!c->closing && !c->later && c->out.bytes < c->cfg.out_high) {
        const uint8_t *p;
        size_t plen;
        int r = frame_reader_next(&c->rd, &p, &plen);
        if (r == 0)
            break;
        if (r < 0) {
            fconn_fail(c, -EINVAL, "frame length is 0 or exceeds the 1 MiB limit");
            break;
        }
        mdl_envelope *req;
        r = frame_decode(p, plen, &req);
        if (r < 0) {
            fconn_fail(c, -EINVAL, r == -EPROTO && c->cfg.name_empty_body ? "envelope has no body"
                                                                          : "undecodable envelope");
            break;
        }
        c->requests++;
        if (req->version > MDLMAP_PROTO_VERSION)
            r = version_mismatch(c, req);
        else
            r = c->ops->dispatch(c->ctx, c, req);
        frame_envelope_free(req);
        if (r < 0) {
            fconn_fail(c, -EINVAL, "response could not be encoded");
            break;
        }
        if (r == FCONN_LATER)
            c->later = true;
        fconn_flush(c);
    }
    fconn_flush(c);
}

size_t fconn_input_room(const struct fconn *c)
{
    if (c->closing || c->out.bytes >= c->cfg.out_high)
        return 0;
    return frame_reader_room(&c->rd);
}

size_t fconn_input(struct fconn *c, const uint8_t *data, size_t len)
{
    if (c->closing)
        return len; /* discard: the connection is being closed */
    process(c); /* frames held back free reader room */
    if (c->closing)
        return len;
    size_t n = fconn_input_room(c);
    if (n > len)
        n = len;
    if (n == 0)
        return 0;
    if (charge(c, frame_reader_cap_after(&c->rd, n)) < 0) {
        const struct fconn_budget *b = c->cfg.budget;
        fconn_fail(c, -ENOSPC, b->refusal ? b->refusal : "too much input buffered");
        fconn_flush(c);
        return len;
    }
    if (frame_reader_feed(&c->rd, data, n) < 0) {
        stop(c, -ENOMEM, "out of memory buffering input");
        return len;
    }
    charge(c, c->rd.cap); /* the actual capacity: never more than charged above */
    process(c);
    return n;
}

void fconn_pump(struct fconn *c)
{
    fconn_flush(c);
    process(c);
}

void fconn_resume(struct fconn *c)
{
    c->later = false;
    process(c);
}
