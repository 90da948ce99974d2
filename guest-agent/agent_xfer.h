/* Data exchanges of mdlmap-agent over one connected fd: a full-duplex stream
 * pump (send a pattern, read the echo back and verify it) and a SEQPACKET
 * message exchange (each message must come back whole, same size). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct xfer_result {
    uint64_t sent, rcvd;            /* bytes */
    uint64_t msgs;                  /* SEQPACKET messages verified */
    uint64_t fnv_tx, fnv_rx;        /* FNV-1a 64 of what was sent / received */
    double t_start, t_tx_done, t_first_rx, t_rx_done;
    double max_gap, max_gap_end;    /* STREAM: longest time with no byte moved either way, and
                                     * when it ended (seconds since t_start) */
    int status;                     /* AGENT_* exit code */
    char err[160];                  /* why, when status != AGENT_OK */
};

/* Progress report of a stream: every interval_s seconds one line
 * "PROGRESS conn=ID t=SECS sent=B rcvd=B rx_MBps=R gap=SECS" (gap: longest
 * time without progress so far), so a test can see where a stream waited. */
struct xfer_progress {
    double interval_s;
    unsigned id;
};

/* Send `total` bytes of pattern `seed` in writes of at most `chunk`, read the
 * same number back, verify. fd is switched to non-blocking. stall_s: fail when
 * nothing moves for that long. pg: NULL, or print progress lines. verify
 * false (benchmarks' timed runs): the first chunk of the pattern is sent over
 * and over, only byte counts are checked and fnv_tx/fnv_rx stay unset, so the
 * loop does no per-byte work of its own. */
void xfer_stream(int fd, uint64_t total, size_t chunk, uint64_t seed, unsigned stall_s,
                 const struct xfer_progress *pg, bool verify, struct xfer_result *r);

/* Send SEQPACKET messages (sizes 1..max_msg, varied, deterministic) until
 * `total` bytes went out; each one must come back as exactly one message of
 * the same size and content. Lockstep. */
void xfer_seqpacket(int fd, uint64_t total, size_t max_msg, uint64_t seed, unsigned stall_s,
                    struct xfer_result *r);

/* Size of the i-th SEQPACKET message of a run (used by both ends' checks). */
size_t seq_msg_size(uint64_t seed, uint64_t i, size_t max_msg);
