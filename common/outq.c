/* Output queue: frames wait here while the peer is not reading. */
#include "outq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void buf_free(struct outq *q, struct outbuf *b)
{
    for (unsigned i = 0; i < b->nfds; i++)
        close(b->fds[i]);
    q->nfds -= b->nfds;
    if (b->data != b->inline_data) {
        /* a frame sent whole is kept to be packed into again; one withdrawn
         * or dropped unsent goes (it may be the one a peer never reads) */
        if (q->nspare < OUTQ_SPARES && b->len >= OUTQ_SPARE_MIN && b->off == b->len &&
            q->bytes + q->spare_bytes + b->len <= q->spare_limit) {
            q->spare[q->nspare] = b->data;
            q->spare_len[q->nspare++] = b->len;
            q->spare_bytes += b->len;
        } else {
            free(b->data);
        }
    }
    free(b);
}

uint8_t *outq_take_spare(struct outq *q, size_t need, size_t *cap)
{
    for (unsigned i = q->nspare; i-- > 0;) {
        if (q->spare_len[i] < need)
            continue;
        uint8_t *p = q->spare[i];
        *cap = q->spare_len[i];
        q->spare_bytes -= q->spare_len[i];
        q->nspare--;
        q->spare[i] = q->spare[q->nspare];
        q->spare_len[i] = q->spare_len[q->nspare];
        return p;
    }
    return NULL;
}

void outq_drop_spares(struct outq *q)
{
    while (q->nspare)
        free(q->spare[--q->nspare]);
    q->spare_bytes = 0;
}

void outq_init(struct outq *q)
{
    q->head = q->tail = NULL;
    q->bytes = 0;
    q->nfds = 0;
    q->nspare = 0;
    q->spare_bytes = 0;
    q->spare_limit = 0;
}

void outq_free(struct outq *q)
{
    size_t limit = q->spare_limit;
    while (q->head) {
        struct outbuf *b = q->head;
        q->head = b->next;
        buf_free(q, b);
    }
    outq_drop_spares(q);
    outq_init(q);
    q->spare_limit = limit;
}

int outq_push(struct outq *q, const uint8_t *data, size_t len, const int *fds, unsigned nfds)
{
    return outq_push_tagged(q, data, len, fds, nfds, 0);
}

static void append(struct outq *q, struct outbuf *b, uint8_t *data, size_t len, const int *fds, unsigned nfds,
                   uint64_t tag)
{
    b->next = NULL;
    b->data = data;
    b->len = len;
    b->off = 0;
    b->nfds = nfds;
    b->tag = tag;
    q->nfds += nfds;
    if (nfds)
        memcpy(b->fds, fds, nfds * sizeof(*fds));
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
    q->bytes += len;
}

static int refuse(const int *fds, unsigned nfds, size_t len)
{
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    return len ? -ENOMEM : 0;
}

int outq_push_tagged(struct outq *q, const uint8_t *data, size_t len, const int *fds, unsigned nfds,
                     uint64_t tag)
{
    struct outbuf *b = len && nfds <= OUTQ_MAX_FDS ? malloc(sizeof(*b) + len) : NULL;
    if (!b)
        return refuse(fds, nfds, len);
    memcpy(b->inline_data, data, len);
    append(q, b, b->inline_data, len, fds, nfds, tag);
    return 0;
}

int outq_push_owned(struct outq *q, uint8_t *data, size_t len, const int *fds, unsigned nfds, uint64_t tag)
{
    struct outbuf *b = len && nfds <= OUTQ_MAX_FDS ? malloc(sizeof(*b)) : NULL;
    if (!b) {
        free(data);
        return refuse(fds, nfds, len);
    }
    append(q, b, data, len, fds, nfds, tag);
    return 0;
}

int outq_flush(struct outq *q, outq_send_fn send, void *ctx)
{
    while (q->head) {
        struct outbuf *b = q->head;
        long n = send(ctx, b->data + b->off, b->len - b->off, b->fds, b->nfds);
        if (n == 0 || n == -EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        if ((size_t)n > b->len - b->off)
            return -EIO; /* a send function that claims more than it was given */
        for (unsigned i = 0; i < b->nfds; i++) /* they went with the first byte */
            close(b->fds[i]);
        q->nfds -= b->nfds;
        b->nfds = 0;
        b->off += (size_t)n;
        q->bytes -= (size_t)n;
        if (b->off == b->len) {
            q->head = b->next;
            if (!q->head)
                q->tail = NULL;
            buf_free(q, b);
        }
    }
    return 0;
}

unsigned outq_withdraw(struct outq *q, uint64_t tag)
{
    unsigned n = 0;
    struct outbuf **link = &q->head, *prev = NULL;
    while (tag && *link) {
        struct outbuf *b = *link;
        if (b->tag != tag || b->off != 0) {
            prev = b;
            link = &b->next;
            continue;
        }
        *link = b->next;
        if (q->tail == b)
            q->tail = prev;
        q->bytes -= b->len;
        buf_free(q, b);
        n++;
    }
    return n;
}
