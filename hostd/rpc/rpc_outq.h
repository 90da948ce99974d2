/* Bounded output queue of encoded frames for non-blocking peers. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RPC_OUTQ_MAX_FDS 64

struct rpc_outbuf {
    struct rpc_outbuf *next;
    size_t len, off;
    int fds[RPC_OUTQ_MAX_FDS]; /* owned; sent with the first byte (SCM_RIGHTS) */
    unsigned nfds;
    uint8_t data[];
};

struct rpc_outq {
    struct rpc_outbuf *head, *tail;
    size_t bytes;     /* unsent bytes */
};

void rpc_outq_init(struct rpc_outq *q);
void rpc_outq_free(struct rpc_outq *q);
int rpc_outq_push(struct rpc_outq *q, const uint8_t *data, size_t len); /* 0 or -ENOMEM */
/* Same, with file descriptors to pass along (ownership taken, even on failure). */
int rpc_outq_push_fds(struct rpc_outq *q, const uint8_t *data, size_t len, const int *fds, unsigned nfds);
/* Like rpc_outq_flush; send_fn also gets the fds to attach (nfds 0 if none). */
int rpc_outq_flush_fds(struct rpc_outq *q,
                       long (*send_fn)(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds),
                       void *ctx);
/* Send as much as possible with send_fn(ctx, p, n) which returns bytes sent
 * (> 0), 0/-EAGAIN when blocked, or another negative errno (returned). */
int rpc_outq_flush(struct rpc_outq *q, long (*send_fn)(void *ctx, const uint8_t *p, size_t n), void *ctx);
static inline bool rpc_outq_empty(const struct rpc_outq *q) { return q->bytes == 0; }
