/* Output queue of encoded frames for non-blocking peers; a frame may carry
 * file descriptors to pass with its first byte. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OUTQ_MAX_FDS 64 /* per frame; usock_send() passes up to USOCK_MAX_FDS */
#define OUTQ_SPARES 4   /* large sent frames kept for reuse (struct outq) */

struct outbuf {
    struct outbuf *next;
    size_t len, off;
    int fds[OUTQ_MAX_FDS]; /* owned; sent with the first byte (SCM_RIGHTS) */
    unsigned nfds;
    uint64_t tag;          /* the owner's name for it (outq_withdraw); 0: none */
    uint8_t *data;         /* inline[] (a copy) or a buffer handed over (freed with the frame) */
    uint8_t inline_data[];
};

struct outq {
    struct outbuf *head, *tail;
    size_t bytes;     /* unsent bytes */
    unsigned nfds;    /* descriptors held (not yet sent) */
    /* Large handed-over frames once sent, kept for the next large replies
     * (outq_take_spare): a fresh malloc() of that size is an mmap, page
     * faults on every page and an munmap per frame. Replies leave in bursts
     * (a client reads several, hostd answers several), so a few are kept:
     * at most OUTQ_SPARES per queue and only while spares plus unsent
     * bytes stay within spare_limit (0, the default: none kept), so the
     * queue never holds more than its owner's bound on unsent output
     * allows; freed with the queue or by outq_drop_spares. */
    size_t spare_limit;
    size_t spare_bytes;
    unsigned nspare;
    uint8_t *spare[OUTQ_SPARES];
    size_t spare_len[OUTQ_SPARES];
};

/* Frames at least this large are kept as spares when sent. */
#define OUTQ_SPARE_MIN (128u * 1024u)

/* Bytes sent (> 0), 0 or -EAGAIN when blocked, another negative errno when
 * broken. fds (nfds of them) go with the first byte. */
typedef long (*outq_send_fn)(void *ctx, const uint8_t *p, size_t n, const int *fds, unsigned nfds);

void outq_init(struct outq *q);
void outq_free(struct outq *q);
/* Append a copy of data with fds attached (ownership of the fds taken, even
 * on failure). 0 or -ENOMEM (also for nfds > OUTQ_MAX_FDS). */
int outq_push(struct outq *q, const uint8_t *data, size_t len, const int *fds, unsigned nfds);
/* outq_push with a tag (nonzero) by which the frame can be withdrawn. */
int outq_push_tagged(struct outq *q, const uint8_t *data, size_t len, const int *fds, unsigned nfds,
                     uint64_t tag);
/* Append data itself (a malloc()ed frame, no copy: large responses are
 * packed once and sent from where they were packed). Ownership of data and
 * fds is taken, even on failure. */
int outq_push_owned(struct outq *q, uint8_t *data, size_t len, const int *fds, unsigned nfds, uint64_t tag);
/* A spare buffer that holds at least need bytes (the caller owns it: push
 * it with outq_push_owned or free() it), else NULL. *cap: its size. */
uint8_t *outq_take_spare(struct outq *q, size_t need, size_t *cap);
/* Free the spares (a connection gone idle gives their memory back). */
void outq_drop_spares(struct outq *q);
/* Drop the frames tagged tag that have not started to go out, closing their
 * fds (a frame partly sent must be finished: the peer has its beginning).
 * Returns how many were dropped. */
unsigned outq_withdraw(struct outq *q, uint64_t tag);
/* Send as much as possible: 0 (all sent or blocked) or send's error. */
int outq_flush(struct outq *q, outq_send_fn send, void *ctx);
static inline bool outq_empty(const struct outq *q) { return q->bytes == 0; }
