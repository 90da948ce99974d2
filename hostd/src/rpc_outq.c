/* Output queue: frames wait here while the peer is not reading. */
#include "rpc_outq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
        free(b);
    }
    rpc_outq_init(q);
}

int rpc_outq_push(struct rpc_outq *q, const uint8_t *data, size_t len)
{
    if (!len)
        return 0;
    struct rpc_outbuf *b = malloc(sizeof(*b) + len);
    if (!b)
        return -ENOMEM;
    b->next = NULL;
    b->len = len;
    b->off = 0;
    memcpy(b->data, data, len);
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
    q->bytes += len;
    return 0;
}

int rpc_outq_flush(struct rpc_outq *q, long (*send_fn)(void *ctx, const uint8_t *p, size_t n), void *ctx)
{
    while (q->head) {
        struct rpc_outbuf *b = q->head;
        long n = send_fn(ctx, b->data + b->off, b->len - b->off);
        if (n == 0 || n == -EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        b->off += (size_t)n;
        q->bytes -= (size_t)n;
        if (b->off == b->len) {
            q->head = b->next;
            if (!q->head)
                q->tail = NULL;
            free(b);
        }
    }
    return 0;
}
