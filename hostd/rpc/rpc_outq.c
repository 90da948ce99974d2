/* Output queue: frames wait here while the peer is not reading. */
#include "rpc_outq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void buf_free(struct rpc_outbuf *b)
{
    for (unsigned i = 0; i < b->nfds; i++)
        close(b->fds[i]);
    free(b);
}

void rpc_outq_init(struct rpc_outq *q)
{
    q->head = q->tail = NULL;
    q->bytes = 0;
}

void rpc_outq_free(struct rpc_outq *q)
{
    while (q->head) {
        struct rpc_outbuf *b = q->head;
        q->head = b->next;
        buf_free(b);
    }
    rpc_outq_init(q);
}

int rpc_outq_push(struct rpc_outq *q, const uint8_t *data, size_t len)
{
    return rpc_outq_push_fds(q, data, len, NULL, 0);
}

int rpc_outq_push_fds(struct rpc_outq *q, const uint8_t *data, size_t len, const int *fds, unsigned nfds)
{
    struct rpc_outbuf *b = len && nfds <= RPC_OUTQ_MAX_FDS ? malloc(sizeof(*b) + len) : NULL;
    if (!b) {
        for (unsigned i = 0; i < nfds; i++)
            close(fds[i]);
        return len ? -ENOMEM : 0;
    }
    b->next = NULL;
    b->len = len;
    b->off = 0;
    b->nfds = nfds;
    if (nfds)
        memcpy(b->fds, fds, nfds * sizeof(*fds));
    memcpy(b->data, data, len);
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
    q->bytes += len;
    return 0;
}

static int flush(struct rpc_outq *q, long (*plain)(void *, const uint8_t *, size_t),
                 long (*with_fds)(void *, const uint8_t *, size_t, const int *, unsigned), void *ctx)
{
    while (q->head) {
        struct rpc_outbuf *b = q->head;
        long n = with_fds ? with_fds(ctx, b->data + b->off, b->len - b->off, b->fds, b->nfds)
                          : plain(ctx, b->data + b->off, b->len - b->off);
        if (n == 0 || n == -EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        for (unsigned i = 0; i < b->nfds; i++) /* they went with the first byte */
            close(b->fds[i]);
        b->nfds = 0;
        b->off += (size_t)n;
        q->bytes -= (size_t)n;
        if (b->off == b->len) {
            q->head = b->next;
            if (!q->head)
                q->tail = NULL;
            buf_free(b);
        }
    }
    return 0;
}

int rpc_outq_flush(struct rpc_outq *q, long (*send_fn)(void *ctx, const uint8_t *p, size_t n), void *ctx)
{
    return flush(q, send_fn, NULL, ctx);
}

int rpc_outq_flush_fds(struct rpc_outq *q,
                       long (*send_fn)(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds),
                       void *ctx)
{
    return flush(q, NULL, send_fn, ctx);
}
