/* Shared helpers of the mdlmap-agent vsock commands. */
#include "agent_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    if (*end || (shift && v > (~0ULL >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int parse_socktype(const char *s)
{
    if (!strcmp(s, "stream"))
        return SOCK_STREAM;
    if (!strcmp(s, "seqpacket"))
        return SOCK_SEQPACKET;
    return -1;
}

const char *socktype_name(int type)
{
    return type == SOCK_SEQPACKET ? "seqpacket" : "stream";
}

uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void pattern_fill(uint8_t *buf, uint64_t seed, uint64_t off, size_t len)
{
    uint64_t key = mix64(seed);
    size_t i = 0;
    while (i < len) {
        uint64_t word = (off + i) >> 3;
        unsigned b = (unsigned)((off + i) & 7);
        uint64_t v = mix64(key ^ word);
        for (; b < 8 && i < len; b++, i++)
            buf[i] = (uint8_t)(v >> (8 * b));
    }
}

uint64_t fnv1a64(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int vsock_connect(uint64_t cid, uint32_t port, int type, unsigned connect_timeout_s)
{
    int fd = socket(AF_VSOCK, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect_timeout_s) {
        struct timeval tv = { .tv_sec = connect_timeout_s };
        (void)setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof(tv));
    }
    struct sockaddr_vm sa;
    memset(&sa, 0, sizeof(sa));
    sa.svm_family = AF_VSOCK;
    sa.svm_cid = (unsigned)cid;
    sa.svm_port = port;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int vsock_listen(uint32_t port, int type, int backlog)
{
    int fd = socket(AF_VSOCK, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_vm sa;
    memset(&sa, 0, sizeof(sa));
    sa.svm_family = AF_VSOCK;
    sa.svm_cid = VMADDR_CID_ANY;
    sa.svm_port = port;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int errno_to_exit(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
        return AGENT_EREFUSED;
    case ETIMEDOUT:
        return AGENT_ETIMEOUT;
    default:
        return AGENT_EIO;
    }
}
