/* An in-process stand-in for hostd (no sockets): answers Hello/Lock/Map/
 * Unmap/Unlock with hostd's documented behaviour, for host unit tests of the
 * library's bookkeeping and of its reply path. It is a byte-stream transport:
 * requests arrive framed, answers queue up as frames and are handed out by
 * the session's reads (recv_chunk bytes at most per read, to split them).
 * Failures can be injected per request type, raw bytes into the stream.
 * Allocation-free, so tests can count the library's heap use. */
#pragma once
#include "mdl_transport.h"

#define FAKE_OUTQ 16384
#define FAKE_ARENA 65536

struct fake_hostd {
    struct mdl_transport t;
    uint64_t next_handle;
    unsigned requests, locked, mapped;
    int32_t fail_map;           /* status for the next Map (0: succeed) */
    int32_t fail_unmap;         /* status for the next Unmap (0: succeed) */
    uint32_t last_priority;     /* of the last Map */
    uint64_t last_requested;    /* RequestedAddress of the last Map */
    int last_cache;
    char last_consumer[64];
    uint64_t map_mdl[64][2];    /* live mappings: {map handle, mdl handle} */
    /* Frames every LockResponse carries, as the agent daemon answers (hostd
     * itself sends none): pfns, runs, both or neither, as set. */
    const uint64_t *lock_pfns;
    size_t lock_npfns;
    Mdlmap__V1__FrameRun **lock_runs;
    size_t lock_nruns;
    size_t recv_chunk;          /* most bytes one read returns (0: all queued) */
    unsigned recvs;             /* reads the session made */
    uint8_t outq[FAKE_OUTQ];    /* answers not yet read */
    size_t outq_off, outq_len;
    unsigned char arena[FAKE_ARENA];   /* decoding requests, reset per request */
    size_t arena_used;
};

/* Queue raw bytes for the session to read before the next answers. 0 or -ENOBUFS. */
int fake_inject(struct fake_hostd *f, const void *p, size_t n);

/* A session over a fake hostd (linear pinner over buf/len, pfn base 0x1000). */
struct mdl_session *fake_session(struct fake_hostd *f, void *buf, size_t len);
/* The same with the caller's pinner (e.g. one that leaves the frames to the
 * peer, as the agent daemon's does). */
struct mdl_session *fake_session_pinner(struct fake_hostd *f, struct mdl_pinner *pinner);
