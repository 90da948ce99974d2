/* mdlmap-agent map | selftest | daemon: the MDL commands over libmdlmap.
 *
 * map prints lines that host-side tests and the demo parse; keep them exact:
 *   MAPPED handle=0x<hex> address=0x<hex> bytes=<N> offset=<K> pages=<P>
 *   POSTWRITE done
 *   GUEST SAW HOST WRITE: "<STR>"
 *   UNMAPPED
 * Exit: 0 ok, 1 lock/map failed, 2 usage, 3 --wait-for timed out. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_daemon.h"
#include "agent_util.h"
#include "mdl_selftest.h"
#include "wdm_compat.h"

struct map_opts {
    size_t bytes, offset;
    const char *pattern, *consumer, *post_write, *wait_for;
    KPROCESSOR_MODE mode;
    MEMORY_CACHING_TYPE cache;
    bool no_write;
    double timeout, hold;
    unsigned count;
};

struct one_map {
    uint8_t *buf;      /* mapping of the whole pages */
    size_t buf_len;
    bool memfd;
    PMDL mdl;
    PVOID address;
};

static void map_usage(void)
{
    fprintf(stderr,
            "usage: mdlmap-agent map [--bytes N] [--offset K] [--pattern STR] [--mode kernel|user]\n"
            "         [--cache cached|noncached|wc] [--no-write] [--consumer NAME]\n"
            "         [--post-write STR] [--wait-for STR] [--timeout S] [--hold S] [--count M]\n");
}

static int parse_map_opts(int argc, char **argv, struct map_opts *o)
{
    static const struct option lo[] = {
        { "bytes", 1, 0, 'b' }, { "offset", 1, 0, 'o' }, { "pattern", 1, 0, 'p' },
        { "mode", 1, 0, 'm' }, { "cache", 1, 0, 'c' }, { "no-write", 0, 0, 'n' },
        { "consumer", 1, 0, 'C' }, { "post-write", 1, 0, 'w' }, { "wait-for", 1, 0, 'W' },
        { "timeout", 1, 0, 't' }, { "hold", 1, 0, 'h' }, { "count", 1, 0, 'N' }, { 0, 0, 0, 0 },
    };
    *o = (struct map_opts){ .bytes = 4096, .pattern = "mdlmap", .mode = KernelMode,
                            .cache = MmCached, .timeout = 30, .count = 1 };
    optind = 1;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'b': if (parse_size(optarg, &v) < 0 || v > MDL_MAX_BYTES) return -1; o->bytes = v; break;
        case 'o': if (parse_size(optarg, &v) < 0 || v >= MDL_PAGE_SIZE) return -1; o->offset = v; break;
        case 'p': o->pattern = optarg; break;
        case 'm':
            if (!strcmp(optarg, "kernel")) o->mode = KernelMode;
            else if (!strcmp(optarg, "user")) o->mode = UserMode;
            else return -1;
            break;
        case 'c':
            if (!strcmp(optarg, "cached")) o->cache = MmCached;
            else if (!strcmp(optarg, "noncached")) o->cache = MmNonCached;
            else if (!strcmp(optarg, "wc")) o->cache = MmWriteCombined;
            else return -1;
            break;
        case 'n': o->no_write = true; break;
        case 'C': o->consumer = optarg; break;
        case 'w': o->post_write = optarg; break;
        case 'W': o->wait_for = optarg; break;
        case 't': o->timeout = atof(optarg); break;
        case 'h': o->hold = atof(optarg); break;
        case 'N': o->count = (unsigned)strtoul(optarg, NULL, 0); break;
        default: return -1;
        }
    }
    if (optind != argc || o->bytes == 0 || o->bytes > MDL_MAX_BYTES || o->offset >= MDL_PAGE_SIZE ||
        !*o->pattern || o->count == 0)
        return -1;
    if ((o->post_write && strlen(o->post_write) > o->bytes) ||
        (o->wait_for && strlen(o->wait_for) > o->bytes))
        return -1;
    return 0;
}

static void report_failure(const char *what)
{
    mdl_status st = mdl_last_status();
    fprintf(stderr, "%s FAILED status=0x%08X (%s)%s%s\n", what, (uint32_t)st, mdl_status_name(st),
            *mdl_last_detail() ? ": " : "", mdl_last_detail());
}

static int alloc_buffer(struct one_map *m, const struct map_opts *o)
{
    m->buf_len = (o->offset + o->bytes + MDL_PAGE_MASK) & ~MDL_PAGE_MASK;
    m->memfd = getenv("MDLMAP_AGENT_SOCKET") != NULL;   /* the daemon pins memfd pages */
    if (m->memfd) {
        m->buf = mdl_buffer_alloc(m->buf_len);
        return m->buf ? 0 : -1;
    }
    m->buf = mmap(NULL, m->buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m->buf == MAP_FAILED ? (m->buf = NULL, -1) : 0;
}

static void free_buffer(struct one_map *m)
{
    if (!m->buf)
        return;
    if (m->memfd)
        mdl_buffer_free(m->buf);
    else
        munmap(m->buf, m->buf_len);
    m->buf = NULL;
}

/* Lock and map one buffer; prints the MAPPED line. */
static int map_one(struct one_map *m, const struct map_opts *o)
{
    if (alloc_buffer(m, o) < 0) {
        fprintf(stderr, "map: cannot allocate %zu bytes: %s\n", m->buf_len, strerror(errno));
        return 1;
    }
    uint8_t *data = m->buf + o->offset;
    size_t plen = strlen(o->pattern);
    for (size_t i = 0; i < o->bytes; i++)
        data[i] = (uint8_t)o->pattern[i % plen];
    m->mdl = IoAllocateMdl(data, (ULONG)o->bytes, FALSE, FALSE, NULL);
    if (!m->mdl) {
        fprintf(stderr, "map: IoAllocateMdl failed\n");
        return 1;
    }
    volatile bool ok = true;
    MDL_TRY {
        MmProbeAndLockPages(m->mdl, KernelMode, o->no_write ? IoReadAccess : IoModifyAccess);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        ok = false;
    } MDL_END_TRY;
    if (!ok) {
        report_failure("LOCK");
        return 1;
    }
    volatile ULONG prio = NormalPagePriority | MdlMappingNoExecute | (o->no_write ? MdlMappingNoWrite : 0);
    PVOID volatile addr = NULL;
    MDL_TRY {   /* UserMode failures raise; KernelMode ones return NULL here */
        addr = MmMapLockedPagesSpecifyCache(m->mdl, o->mode, o->cache, NULL, FALSE, prio);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        addr = NULL;
    } MDL_END_TRY;
    if (!addr) {
        report_failure("MAP");
        return 1;
    }
    m->address = addr;
    struct mdl_map_info mi = { 0 };
    mdl_find_mapping(mdl_from_wdm(m->mdl), (uint64_t)(uintptr_t)addr, &mi);
    printf("MAPPED handle=0x%llx address=0x%llx bytes=%zu offset=%zu pages=%u\n",
           (unsigned long long)mi.map_handle, (unsigned long long)mi.address, o->bytes, o->offset,
           ADDRESS_AND_SIZE_TO_SPAN_PAGES(data, o->bytes));
    fflush(stdout);
    return 0;
}

static void unmap_one(struct one_map *m)
{
    if (m->mdl) {
        if (m->address)
            MmUnmapLockedPages(m->address, m->mdl);
        if (m->mdl->MdlFlags & MDL_PAGES_LOCKED)
            MmUnlockPages(m->mdl);
        IoFreeMdl(m->mdl);
        m->mdl = NULL;
    }
    free_buffer(m);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool buffer_has(const struct one_map *m, size_t off, const char *s)
{
    __asm__ volatile("" ::: "memory");   /* the host writes behind the compiler's back */
    const volatile uint8_t *p = m->buf + off;
    for (size_t i = 0; s[i]; i++)
        if (p[i] != (uint8_t)s[i])
            return false;
    return true;
}

int cmd_map(int argc, char **argv)
{
    struct map_opts o;
    if (parse_map_opts(argc, argv, &o) < 0) {
        map_usage();
        return 2;
    }
    struct mdl_session *s = mdl_default_session();
    if (!s) {
        report_failure("CONNECT");
        return 1;
    }
    if (o.consumer)
        mdl_session_set_consumer(s, o.consumer);
    struct one_map *maps = calloc(o.count, sizeof(*maps));
    if (!maps)
        return 1;
    int rc = 0;
    unsigned n = 0;
    for (; n < o.count && rc == 0; n++)
        rc = map_one(&maps[n], &o);
    if (rc == 0 && o.post_write) {
        for (unsigned i = 0; i < n; i++)
            memcpy(maps[i].buf + o.offset, o.post_write, strlen(o.post_write));
        printf("POSTWRITE done\n");
        fflush(stdout);
    }
    if (rc == 0 && o.wait_for) {
        double deadline = now_s() + o.timeout;
        for (unsigned i = 0; i < n && rc == 0; i++)
            while (!buffer_has(&maps[i], o.offset, o.wait_for)) {
                if (now_s() > deadline) {
                    fprintf(stderr, "TIMEOUT waiting for host write \"%s\"\n", o.wait_for);
                    rc = 3;
                    break;
                }
                usleep(20000);
            }
        if (rc == 0) {
            printf("GUEST SAW HOST WRITE: \"%s\"\n", o.wait_for);
            fflush(stdout);
        }
    }
    if (rc == 0 && o.hold > 0)
        usleep((useconds_t)(o.hold * 1e6));
    for (unsigned i = 0; i < n; i++)
        unmap_one(&maps[i]);
    free(maps);
    if (rc == 0) {
        printf("UNMAPPED\n");
        fflush(stdout);
    }
    return rc;
}

/* Through the agent daemon, buffers must be memfd pages and a second
 * session is another daemon connection. */
static void *memfd_pages(size_t npages, void *ctx)
{
    (void)ctx;
    return mdl_buffer_alloc(npages * MDL_PAGE_SIZE);
}

static void memfd_pages_free(void *p, size_t npages, void *ctx)
{
    (void)npages;
    (void)ctx;
    mdl_buffer_free(p);
}

static struct mdl_session *agent_session(void *ctx)
{
    struct mdl_session *s = NULL;
    int rc = mdl_session_open_agent(ctx, &s);
    return mdl_selftest_opened("agent session", rc, s);
}

int cmd_selftest(int argc, char **argv)
{
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--filter") && i + 1 < argc) {
            filter = argv[++i];
        } else {
            fprintf(stderr, "usage: mdlmap-agent selftest [--filter R5]\n");
            return 2;
        }
    }
    struct mdl_selftest_env env = { .session = mdl_default_session(), .filter = filter };
    char *agent = getenv("MDLMAP_AGENT_SOCKET");
    if (agent) {
        env.alloc_pages = memfd_pages;
        env.free_pages = memfd_pages_free;
        env.alloc_ctx = agent;
        env.open_session = agent_session;
    }
    if (!env.session) {
        report_failure("CONNECT");
        return 1;
    }
    return mdl_selftest_run(&env) == 0 ? 0 : 1;
}

int cmd_daemon(int argc, char **argv)
{
    const char *path = MDL_AGENT_SOCKET;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            path = argv[++i];
        } else {
            fprintf(stderr, "usage: mdlmap-agent daemon [--socket %s]\n", MDL_AGENT_SOCKET);
            return 2;
        }
    }
    return agent_daemon_run(path) == 0 ? 0 : 1;
}
