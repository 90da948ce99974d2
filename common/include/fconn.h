/* A framed connection: the part of a request/response stream that does not
 * depend on the transport or on the requests. It buffers input in a frame
 * reader, decodes each frame, answers envelopes newer than
 * MDLMAP_PROTO_VERSION with STATUS_REVISION_MISMATCH, hands the rest to the
 * owner's dispatch(), and keeps the answers in an output queue (frames may
 * carry fds). A bad frame gets an error reply (request_id 0,
 * STATUS_INVALID_PARAMETER); then the connection takes no more input and
 * fconn_done() says "close now" once that reply is sent.
 *
 * Flow control: no frame is dispatched and no input taken while out_high
 * bytes of output wait. Memory: the reader's capacity may be charged to a
 * budget several connections share (struct fconn_budget, owned by the caller).
 *
 * Not re-entrant: send() and dispatch() must not call fconn_input, fconn_pump
 * or fconn_resume on the same connection. Answers computed later (outside
 * any call into the fconn) are queued with fconn_queue and released with
 * fconn_resume. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "outq.h"

struct fconn;

/* Frame reader memory shared by several connections (e.g. all of one VM's).
 * Owned by the caller; must outlive the connections that use it. */
struct fconn_budget {
    size_t cap;          /* bytes the readers may hold together */
    size_t used;         /* bytes charged now */
    const char *refusal; /* reply detail for the connection that would pass cap */
};

#define FCONN_LATER 1 /* dispatch(): the answer comes later (see fconn_resume) */

struct fconn_ops {
    /* Bytes to the peer (outq_send_fn): count sent, 0/-EAGAIN when blocked,
     * another negative errno when the stream is broken. */
    outq_send_fn send;
    /* One decoded request whose version is served. Queue answers with
     * fconn_queue(). Return 0 to go on, FCONN_LATER to dispatch nothing more
     * until fconn_resume(), or a negative errno when no answer could be
     * encoded (the peer gets an error and the connection closes). */
    int (*dispatch)(void *ctx, struct fconn *c, const mdl_envelope *req);
    /* Optional, for logs: the connection stops taking input. err: what the
     * peer was told (0: nothing), what: why. */
    void (*stopping)(void *ctx, int err, const char *what);
};

struct fconn_config {
    size_t out_high;        /* stop taking input while this much output waits */
    struct fconn_budget *budget; /* optional */
    /* reply detail for an envelope without a body: "envelope has no body"
     * when true, else the generic "undecodable envelope" */
    bool name_empty_body;
};

struct fconn {
    struct frame_reader rd;
    struct outq out;
    const struct fconn_ops *ops;
    void *ctx;
    struct fconn_config cfg;
    size_t charged;   /* reader capacity charged to cfg.budget */
    bool closing;     /* no more input; close once output is drained */
    bool later;       /* dispatch() returned FCONN_LATER */
    int send_err;     /* first error of ops->send, or 0 */
    uint64_t requests; /* envelopes decoded */
};

void fconn_init(struct fconn *c, const struct fconn_ops *ops, void *ctx, const struct fconn_config *cfg);
/* Release buffers, descriptors and the budget charge. */
void fconn_fini(struct fconn *c);
/* Offer stream bytes; returns how many were taken (the rest is offered again
 * later). Once closing, everything is taken and dropped. */
size_t fconn_input(struct fconn *c, const uint8_t *data, size_t len);
/* Bytes fconn_input() takes now: 0 while closing or output is above out_high. */
size_t fconn_input_room(const struct fconn *c);
/* Send what is queued: 0, or the stream's send error (the connection is
 * then closing and cannot drain: close it). */
int fconn_flush(struct fconn *c);
/* Output space freed: flush, then dispatch frames still buffered. */
void fconn_pump(struct fconn *c);
/* The answer FCONN_LATER promised was queued: dispatch what waits, flush. */
void fconn_resume(struct fconn *c);
/* An answer (takes frame, a malloc()ed buffer). Failure closes: the peer
 * would miss an answer. */
int fconn_queue(struct fconn *c, uint8_t *frame, size_t len);
/* A message the peer did not ask for, with fds (takes frame and fds).
 * tag (nonzero) names it for fconn_withdraw. Failure only returns -ENOMEM.
 * Never sends: safe from any context. */
int fconn_push(struct fconn *c, uint8_t *frame, size_t len, const int *fds, unsigned nfds, uint64_t tag);
/* Take back pushed messages tagged tag that have not started to go out
 * (their fds are closed). Returns how many. */
static inline unsigned fconn_withdraw(struct fconn *c, uint64_t tag) { return outq_withdraw(&c->out, tag); }
/* Answer with an error (request_id 0, err's status, detail what) and close. */
void fconn_fail(struct fconn *c, int err, const char *what);
/* True once closing and all output is sent: close the stream now. */
static inline bool fconn_done(const struct fconn *c) { return c->closing && outq_empty(&c->out); }

/* Response encoding (all mdlmap answers): fill version, request_id, status
 * (ntstatus_from_errno(err)) and detail (only on failure) of env, whose body
 * the caller set, and encode it. */
int fconn_reply_encode(mdl_envelope *env, uint64_t request_id, int err, const char *detail,
                       uint8_t **out, size_t *out_len);
/* fconn_reply_encode packed into q's spare buffer when it is large enough
 * (see outq_take_spare; q NULL: never), else into a new one. */
int fconn_reply_encode_reuse(mdl_envelope *env, uint64_t request_id, int err, const char *detail,
                             struct outq *q, uint8_t **out, size_t *out_len);
/* A response with an ErrorResponse body. */
int fconn_reply_error(uint64_t request_id, int err, const char *detail, uint8_t **out, size_t *out_len);
