/* mdlmap-agent grant | copy | revoke: cross-VM grants for scripts and tests.
 * Lines the e2e tests parse (keep them exact):
 *   GRANTED ref=0x<hex> peer=<cid> bytes=<N> fnv=0x<16 hex>
 *   REVOKED ref=0x<hex> status=<NAME>
 *   COPY <i> status=<NAME> copied=<N> fnv=0x<16 hex>
 *   NOTICE granter=<cid> ref=0x<hex> reason=<text>
 * A grant lives as long as the granting session: grant holds it (and its
 * buffer) until --hold seconds pass, revoking it first when someone
 * connects to --revoke-port (a sibling guest may tell it to: the host has no
 * vsock). Exit: 0 ok, 1 a request failed, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_util.h"
#include "mdlmap.h"

struct grant_opts {
    uint64_t peer, granter, ref, bytes, offset, seed, loop, poke_after, interval_ms;
    uint32_t revoke_port, poke_port;
    bool rw, write;
    double hold;
};

static int parse_grant_opts(int argc, char **argv, struct grant_opts *o)
{
    static const struct option lo[] = {
        { "peer", 1, 0, 'p' }, { "granter", 1, 0, 'g' }, { "ref", 1, 0, 'r' }, { "bytes", 1, 0, 'b' },
        { "offset", 1, 0, 'o' }, { "seed", 1, 0, 's' }, { "access", 1, 0, 'a' }, { "write", 0, 0, 'w' },
        { "loop", 1, 0, 'l' }, { "hold", 1, 0, 'h' }, { "revoke-port", 1, 0, 'R' }, { "poke-port", 1, 0, 'P' },
        { "poke-after", 1, 0, 'A' }, { "interval-ms", 1, 0, 'i' }, { 0, 0, 0, 0 },
    };
    *o = (struct grant_opts){ .bytes = 4096, .seed = 1, .loop = 1, .hold = 3600 };
    optind = 1;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p': bad = parse_u64(optarg, &o->peer); break;
        case 'g': bad = parse_u64(optarg, &o->granter); break;
        case 'r': bad = parse_u64(optarg, &o->ref); break;
        case 'b': bad = parse_size(optarg, &o->bytes) < 0 || o->bytes == 0 || o->bytes > MDL_MAX_BYTES; break;
        case 'o': bad = parse_size(optarg, &o->offset); break;
        case 's': bad = parse_u64(optarg, &o->seed); break;
        case 'a':
            bad = strcmp(optarg, "read") && strcmp(optarg, "rw");
            o->rw = !strcmp(optarg, "rw");
            break;
        case 'w': o->write = true; break;
        case 'l': bad = parse_u64(optarg, &o->loop); break;
        case 'h': o->hold = atof(optarg); break;
        case 'R': bad = parse_u64(optarg, &v) || v > UINT32_MAX; o->revoke_port = (uint32_t)v; break;
        case 'P': bad = parse_u64(optarg, &v) || v > UINT32_MAX; o->poke_port = (uint32_t)v; break;
        case 'A': bad = parse_u64(optarg, &o->poke_after); break;
        case 'i': bad = parse_u64(optarg, &o->interval_ms); break;
        default: return -1;
        }
        if (bad)
            return -1;
    }
    return optind == argc ? 0 : -1;
}

static void grant_usage(void)
{
    fprintf(stderr, "usage: mdlmap-agent grant --peer CID [--bytes N] [--access read|rw] [--seed S]\n"
                    "                          [--revoke-port P] [--hold SECS]\n"
                    "       mdlmap-agent copy --granter CID --ref REF [--bytes N] [--offset K] [--write]\n"
                    "                          [--loop N] [--interval-ms MS] [--poke-port P --poke-after K]\n"
                    "       mdlmap-agent revoke --ref REF\n");
}

static void failed(const char *what)
{
    mdl_status st = mdl_last_status();
    fprintf(stderr, "%s FAILED status=0x%08X (%s)%s%s\n", what, (uint32_t)st, mdl_status_name(st),
            *mdl_last_detail() ? ": " : "", mdl_last_detail());
}

static void print_notices(struct mdl_session *s)
{
    struct mdl_grant_notice n[MDL_GRANT_NOTICES];
    size_t k = mdl_session_grant_notices(s, n, MDL_GRANT_NOTICES, NULL);
    for (size_t i = 0; i < k; i++)
        printf("NOTICE granter=%llu ref=0x%llx reason=%s\n", (unsigned long long)n[i].granter_cid,
               (unsigned long long)n[i].ref, n[i].reason);
    fflush(stdout);
}

/* A page-aligned buffer, locked through s; NULL on failure (reported). */
static struct mdl *locked_buffer(struct mdl_session *s, uint64_t bytes, enum mdl_lock_op op, uint8_t **buf)
{
    *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (*buf == MAP_FAILED) {
        perror("mmap");
        *buf = NULL;
        return NULL;
    }
    struct mdl *m = mdl_alloc(*buf, (uint32_t)bytes);
    if (!m || !MDL_SUCCESS(mdl_probe_and_lock(s, m, op))) {
        failed("lock");
        if (m)
            mdl_free(m);
        munmap(*buf, bytes);
        *buf = NULL;
        return NULL;
    }
    return m;
}

static void release_buffer(struct mdl *m, uint8_t *buf, uint64_t bytes)
{
    mdl_unlock(m);
    mdl_free(m);
    munmap(buf, bytes);
}

static struct mdl_session *open_session(void)
{
    struct mdl_session *s = NULL;
    int rc = mdl_session_open_vsock(NULL, &s);
    if (rc < 0)
        fprintf(stderr, "session to hostd: %s\n", strerror(-rc));
    return rc < 0 ? NULL : s;
}

/* A session and a locked buffer of o->bytes: 0, or the exit code (2 usage:
 * args_ok false, 1 a failure). */
static int setup(const struct grant_opts *o, bool args_ok, enum mdl_lock_op op, struct mdl_session **s,
                 struct mdl **m, uint8_t **buf)
{
    if (!args_ok) {
        grant_usage();
        return 2;
    }
    *s = open_session();
    if (!*s)
        return 1;
    *m = locked_buffer(*s, o->bytes, op, buf);
    if (!*m) {
        mdl_session_close(*s);
        return 1;
    }
    return 0;
}

int cmd_grant(int argc, char **argv)
{
    struct grant_opts o;
    struct mdl_session *s;
    struct mdl *m;
    uint8_t *buf;
    bool ok = parse_grant_opts(argc, argv, &o) == 0 && o.peer;
    int rc = setup(&o, ok, o.rw ? MDL_IO_WRITE : MDL_IO_READ, &s, &m, &buf);
    if (rc)
        return rc;
    pattern_fill(buf, o.seed, 0, o.bytes);
    uint64_t ref = 0;
    if (!MDL_SUCCESS(mdl_grant(m, o.peer, o.rw ? MDL_GRANT_READ_WRITE : MDL_GRANT_READ, &ref))) {
        failed("grant");
        rc = 1;
        goto out;
    }
    printf("GRANTED ref=0x%llx peer=%llu bytes=%llu fnv=0x%016llx\n", (unsigned long long)ref,
           (unsigned long long)o.peer, (unsigned long long)o.bytes,
           (unsigned long long)fnv1a64(0xcbf29ce484222325ULL, buf, o.bytes));
    fflush(stdout);
    double end = now_sec() + o.hold;
    int lfd = o.revoke_port ? vsock_listen(o.revoke_port, SOCK_STREAM, 1) : -1;
    if (o.revoke_port && lfd < 0)
        fprintf(stderr, "listen on port %u: %s\n", o.revoke_port, strerror(-lfd));
    if (lfd >= 0) {
        printf("REVOKE PORT READY port=%u\n", o.revoke_port);
        fflush(stdout);
    }
    while (now_sec() < end) {
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        double left = end - now_sec();
        if (poll(&p, lfd >= 0 ? 1 : 0, left > 1 ? 1000 : (int)(left * 1000) + 1) == 1) {
            int c = accept(lfd, NULL, NULL);
            mdl_status st = mdl_revoke(s, ref);
            printf("REVOKED ref=0x%llx status=%s\n", (unsigned long long)ref, mdl_status_name(st));
            fflush(stdout);
            if (c >= 0)
                close(c); /* after the revocation: the poker waits for this */
            close(lfd);
            lfd = -1;
        }
    }
    if (lfd >= 0)
        close(lfd);
out:
    release_buffer(m, buf, o.bytes);
    mdl_session_close(s);
    return rc;
}

int cmd_copy(int argc, char **argv)
{
    struct grant_opts o;
    struct mdl_session *s;
    struct mdl *m;
    uint8_t *buf;
    bool ok = parse_grant_opts(argc, argv, &o) == 0 && o.granter && o.ref && o.loop;
    int rc = setup(&o, ok, o.write ? MDL_IO_READ : MDL_IO_WRITE, &s, &m, &buf);
    if (rc)
        return rc;
    if (o.write)
        pattern_fill(buf, o.seed, 0, o.bytes);
    struct mdl_copy_end grant = { .granter_cid = o.granter, .ref = o.ref, .offset = o.offset };
    struct mdl_copy_end own = { .mdl = m };
    struct mdl_copy_op op = { .src = o.write ? own : grant, .dst = o.write ? grant : own, .length = o.bytes };
    for (uint64_t i = 0; i < o.loop; i++) {
        if (o.poke_port && i == o.poke_after) {
            int fd = vsock_connect(o.granter, o.poke_port, SOCK_STREAM, 10);
            printf("POKED cid=%llu port=%u: %s\n", (unsigned long long)o.granter, o.poke_port,
                   fd < 0 ? strerror(-fd) : "ok");
            if (fd >= 0) {
                char b;
                (void)!read(fd, &b, 1); /* the granter closes it once it revoked */
                close(fd);
            }
        }
        mdl_status st = 0;
        uint64_t copied = 0;
        double t0 = now_sec();
        mdl_status rst = mdl_grant_copy(s, &op, 1, &st, &copied);
        double dt = now_sec() - t0;
        print_notices(s);
        if (!MDL_SUCCESS(rst))
            st = rst;
        printf("COPY %llu status=%s copied=%llu fnv=0x%016llx MiB/s=%.1f\n", (unsigned long long)i,
               mdl_status_name(st), (unsigned long long)copied,
               (unsigned long long)fnv1a64(0xcbf29ce484222325ULL, buf, o.bytes),
               dt > 0 ? (double)copied / (1 << 20) / dt : 0.0);
        fflush(stdout);
        if (!MDL_SUCCESS(st)) {
            rc = 1;
            break;
        }
        if (o.interval_ms && i + 1 < o.loop)
            nanosleep(&(struct timespec){ .tv_sec = (time_t)(o.interval_ms / 1000),
                                          .tv_nsec = (long)(o.interval_ms % 1000) * 1000000 }, NULL);
    }
    release_buffer(m, buf, o.bytes);
    mdl_session_close(s);
    return rc;
}

int cmd_revoke(int argc, char **argv)
{
    struct grant_opts o;
    if (parse_grant_opts(argc, argv, &o) < 0 || !o.ref) {
        grant_usage();
        return 2;
    }
    struct mdl_session *s = open_session();
    if (!s)
        return 1;
    mdl_status st = mdl_revoke(s, o.ref);
    printf("REVOKED ref=0x%llx status=%s\n", (unsigned long long)o.ref, mdl_status_name(st));
    mdl_session_close(s);
    return MDL_SUCCESS(st) ? 0 : 1;
}

/* pool write|read [--name N] [--bytes N] [--offset K] [--seed S]: fill or
 * checksum a range of a shared pool in place:
 *   POOL WRITE name=<n> offset=<K> bytes=<N> fnv=0x<16 hex>
 *   POOL READ name=<n> offset=<K> bytes=<N> fnv=0x<16 hex> */
int cmd_pool(int argc, char **argv)
{
    const char *name = NULL;
    struct grant_opts o;
    bool write = argc > 1 && !strcmp(argv[1], "write");
    if (argc < 2 || (!write && strcmp(argv[1], "read"))) {
        fprintf(stderr, "usage: mdlmap-agent pool write|read [--name N] [--bytes N] [--offset K] [--seed S]\n");
        return 2;
    }
    /* --name is the pool's; the rest as for grant/copy */
    char *rest[32];
    int n = 0;
    rest[n++] = argv[0];
    for (int i = 2; i < argc && n < 31; i++) {
        if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else
            rest[n++] = argv[i];
    }
    rest[n] = NULL;
    if (parse_grant_opts(n, rest, &o) < 0) {
        fprintf(stderr, "usage: mdlmap-agent pool write|read [--name N] [--bytes N] [--offset K] [--seed S]\n");
        return 2;
    }
    struct mdl_pool p;
    int rc = mdl_pool_open(name, &p);
    if (rc < 0) {
        fprintf(stderr, "pool %s: %s\n", name ? name : "(any)", strerror(-rc));
        return 1;
    }
    if (o.offset > p.data_size || o.bytes > p.data_size - o.offset) {
        fprintf(stderr, "pool %s: %zu data bytes, offset %llu + %llu past the end\n", p.name, p.data_size,
                (unsigned long long)o.offset, (unsigned long long)o.bytes);
        mdl_pool_close(&p);
        return 2;
    }
    if (write)
        pattern_fill(p.data + o.offset, o.seed, 0, o.bytes);
    printf("POOL %s name=%s offset=%llu bytes=%llu fnv=0x%016llx\n", write ? "WRITE" : "READ", p.name,
           (unsigned long long)o.offset, (unsigned long long)o.bytes,
           (unsigned long long)fnv1a64(0xcbf29ce484222325ULL, p.data + o.offset, o.bytes));
    mdl_pool_close(&p);
    return 0;
}
