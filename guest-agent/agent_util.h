/* Helpers shared by the vsock commands of mdlmap-agent: exit codes, option
 * parsing, the deterministic test pattern, FNV-1a, AF_VSOCK sockets. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* Exit codes of echo/listen/bench (tests check them). */
enum {
    AGENT_OK = 0,
    AGENT_EVERIFY = 1,   /* data or message boundaries did not match */
    AGENT_EUSAGE = 2,
    AGENT_EREFUSED = 3,  /* connect: ECONNREFUSED or ECONNRESET (nobody there, routing off) */
    AGENT_ETIMEOUT = 4,  /* connect timed out, or no progress for --timeout seconds */
    AGENT_EIO = 5,       /* any other socket error, early EOF */
};

/* "16M", "4k", "1G", "123": bytes. Returns -1 on a malformed value. */
int parse_size(const char *s, uint64_t *out);
/* Decimal/hex unsigned. Returns -1 on a malformed value. */
int parse_u64(const char *s, uint64_t *out);
/* "stream" -> SOCK_STREAM, "seqpacket" -> SOCK_SEQPACKET, else -1. */
int parse_socktype(const char *s);
const char *socktype_name(int type);

/* Deterministic pattern: byte at absolute offset off of stream `seed`. */
void pattern_fill(uint8_t *buf, uint64_t seed, uint64_t off, size_t len);
uint64_t mix64(uint64_t x);

#define FNV1A64_INIT 0xcbf29ce484222325ULL
uint64_t fnv1a64(uint64_t h, const void *data, size_t len);

double now_sec(void);   /* CLOCK_MONOTONIC */

/* Connected AF_VSOCK socket to cid:port, or -errno. connect_timeout_s > 0 sets
 * SO_VM_SOCKETS_CONNECT_TIMEOUT (Linux default 2 s). */
int vsock_connect(uint64_t cid, uint32_t port, int type, unsigned connect_timeout_s);
/* Listening AF_VSOCK socket on VMADDR_CID_ANY:port, or -errno. */
int vsock_listen(uint32_t port, int type, int backlog);
/* Map a connect errno to an exit code (AGENT_EREFUSED, AGENT_ETIMEOUT, AGENT_EIO). */
int errno_to_exit(int err);
