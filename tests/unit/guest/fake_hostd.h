/* An in-process stand-in for hostd (no sockets): answers Hello/Lock/Map/
 * Unmap/Unlock with hostd's documented behaviour, for host unit tests of the
 * library's bookkeeping. Failures can be injected per request type. */
#pragma once
#include "mdl_transport.h"

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
};

/* A session over a fake hostd (linear pinner over buf/len, pfn base 0x1000). */
struct mdl_session *fake_session(struct fake_hostd *f, void *buf, size_t len);
