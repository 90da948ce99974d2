/* mdlmapctl: inspect and drive mdlmap-hostd through its host API socket.
 *   mdlmapctl [--api PATH] list [VM]
 *   mdlmapctl [--api PATH] read [--raw] HANDLE [OFFSET LEN]
 *   mdlmapctl [--api PATH] write [--hex] HANDLE OFFSET DATA
 *   mdlmapctl [--api PATH] stats
 *   mdlmapctl [--api PATH] consume [--write STR] [--exit-after N] NAME
 * Exit: 0 ok, 1 request failed (NTSTATUS name and detail printed), 2 usage. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdlmap_client.h"
#include "mdlmap_consumer.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: mdlmapctl [--api PATH] COMMAND\n"
            "  list [VM]                      mappings (all VMs or one)\n"
            "  read [--raw] HANDLE [OFFSET LEN]  hex dump (--raw: the bytes) of a mapping's buffer\n"
            "                                 (default: all of it)\n"
            "  write [--hex] HANDLE OFFSET DATA  write a string (or hex bytes) into the buffer\n"
            "  stats                          counters, quotas and recent leak records\n"
            "  consume [--write STR] [--exit-after N] NAME\n"
            "                                 be the UserMode consumer NAME: map what guests ask\n"
            "                                 for into this process and print it (--write: put STR\n"
            "                                 at the start of each buffer; --exit-after: stop after\n"
            "                                 N mappings were unmapped again)\n"
            "socket: --api, else $MDLMAP_API, else " MDLMAP_DEFAULT_API "\n");
    return 2;
}

static int fail(struct mdlmap_client *c, int rc, const char *what)
{
    if (rc == -EREMOTEIO)
        fprintf(stderr, "mdlmapctl: %s: %s%s%s\n", what, ntstatus_name(c->last_status),
                c->last_detail[0] ? ": " : "", c->last_detail);
    else
        fprintf(stderr, "mdlmapctl: %s: %s\n", what, strerror(-rc));
    return 1;
}

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return false;
    *v = x;
    return true;
}

static const char *cache_name(int c)
{
    static const char *const n[] = { "noncached", "cached", "wc", "hwcoherent", "nc-unordered", "uswc" };
    return c >= 0 && c <= 5 ? n[c] : "?";
}

static int cmd_list(struct mdlmap_client *c, int argc, char **argv)
{
    if (argc > 1)
        return usage();
    mdl_envelope *r;
    int rc = mdlmap_client_list(c, argc ? argv[0] : NULL, &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return fail(c, rc, "list");
    }
    const Mdlmap__V1__ListMappingsResponse *l = r->list_reply;
    printf("%-18s %-12s %5s %-18s %10s %6s %5s %-6s %-12s %-3s %s\n", "HANDLE", "VM", "CID", "ADDRESS", "BYTES",
           "PAGES", "VMAS", "MODE", "CACHE", "RO", "CONSUMER");
    for (size_t i = 0; i < l->n_mappings; i++) {
        const Mdlmap__V1__MappingInfo *m = l->mappings[i];
        printf("0x%016" PRIx64 " %-12s %5" PRIu64 " 0x%016" PRIx64 " %10u %6u %5u %-6s %-12s %-3s %s\n",
               m->map_handle, m->vm_name, m->guest_cid, m->address, m->byte_count, m->page_count, m->vma_count,
               m->access_mode == MDLMAP__V1__ACCESS_MODE__USER_MODE ? "user" : "kernel",
               cache_name(m->cache_type), m->read_only ? "yes" : "no", *m->consumer ? m->consumer : "-");
    }
    printf("%zu mapping%s\n", l->n_mappings, l->n_mappings == 1 ? "" : "s");
    frame_envelope_free(r);
    return 0;
}

/* byte_count of a mapping, from list */
static int mapping_size(struct mdlmap_client *c, uint64_t handle, uint64_t *size)
{
    mdl_envelope *r;
    int rc = mdlmap_client_list(c, NULL, &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return rc;
    }
    rc = -ENOENT;
    for (size_t i = 0; i < r->list_reply->n_mappings; i++)
        if (r->list_reply->mappings[i]->map_handle == handle) {
            *size = r->list_reply->mappings[i]->byte_count;
            rc = 0;
        }
    frame_envelope_free(r);
    return rc;
}

static void hexdump(const uint8_t *p, size_t n, uint64_t base)
{
    for (size_t i = 0; i < n; i += 16) {
        printf("%08" PRIx64 "  ", base + i);
        for (size_t j = 0; j < 16; j++) {
            if (i + j < n)
                printf("%02x ", p[i + j]);
            else
                printf("   ");
            if (j == 7)
                putchar(' ');
        }
        printf(" |");
        for (size_t j = 0; j < 16 && i + j < n; j++)
            putchar(isprint(p[i + j]) ? p[i + j] : '.');
        printf("|\n");
    }
}

static int cmd_read(struct mdlmap_client *c, int argc, char **argv)
{
    uint64_t h, off = 0, len = 0;
    bool raw = false;
    if (argc && strcmp(argv[0], "--raw") == 0) {
        raw = true;
        argc--;
        argv++;
    }
    if ((argc != 1 && argc != 3) || !parse_u64(argv[0], &h))
        return usage();
    if (argc == 3 && (!parse_u64(argv[1], &off) || !parse_u64(argv[2], &len)))
        return usage();
    if (argc == 1) {
        int rc = mapping_size(c, h, &len);
        if (rc == -ENOENT) {
            fprintf(stderr, "mdlmapctl: read: no mapping 0x%" PRIx64 "\n", h);
            return 1;
        }
        if (rc < 0)
            return fail(c, rc, "list");
    }
    if (len > (64u << 20)) {
        fprintf(stderr, "mdlmapctl: read: at most 64 MiB at a time\n");
        return 2;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 1;
    int rc = mdlmap_client_read(c, h, off, buf, len);
    if (rc < 0) {
        free(buf);
        return fail(c, rc, "read");
    }
    if (raw)
        fwrite(buf, 1, len, stdout);
    else
        hexdump(buf, len, off);
    free(buf);
    return 0;
}

static int hexval(int ch)
{
    return isdigit(ch) ? ch - '0' : isxdigit(ch) ? tolower(ch) - 'a' + 10 : -1;
}

static int cmd_write(struct mdlmap_client *c, int argc, char **argv)
{
    bool hex = false;
    if (argc && strcmp(argv[0], "--hex") == 0) {
        hex = true;
        argc--;
        argv++;
    }
    uint64_t h, off;
    if (argc != 3 || !parse_u64(argv[0], &h) || !parse_u64(argv[1], &off))
        return usage();
    const char *s = argv[2];
    size_t n = strlen(s);
    uint8_t *buf = malloc(n + 1);
    if (!buf)
        return 1;
    size_t len = n;
    if (hex) {
        len = 0;
        for (size_t i = 0; i < n;) {
            if (isspace((unsigned char)s[i]) || s[i] == ':') {
                i++;
                continue;
            }
            int a = hexval((unsigned char)s[i]), b = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            if (a < 0 || b < 0) {
                free(buf);
                fprintf(stderr, "mdlmapctl: write: bad hex at \"%s\"\n", s + i);
                return 2;
            }
            buf[len++] = (uint8_t)(a << 4 | b);
            i += 2;
        }
    } else {
        memcpy(buf, s, n);
    }
    int rc = mdlmap_client_write(c, h, off, buf, len);
    free(buf);
    if (rc < 0)
        return fail(c, rc, "write");
    printf("wrote %zu bytes at offset %" PRIu64 " of 0x%016" PRIx64 "\n", len, off, h);
    return 0;
}

static int cmd_stats(struct mdlmap_client *c)
{
    mdl_envelope *r;
    int rc = mdlmap_client_stats(c, &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return fail(c, rc, "stats");
    }
    const Mdlmap__V1__StatsResponse *s = r->stats_reply;
    printf("mappings:          %" PRIu64 "\n", s->mappings);
    printf("mapped pages:      %" PRIu64 "\n", s->mapped_pages);
    printf("vmas:              %" PRIu64 " of %" PRIu64 "\n", s->vmas, s->vma_budget);
    printf("locked MDLs:       %" PRIu64 "\n", s->locked_mdls);
    printf("page quota:        %" PRIu64 " per VM, %" PRIu64 " global\n", s->vm_page_quota, s->global_page_quota);
    printf("leaks reported:    %" PRIu64 "\n", s->leaks_reported);
    for (size_t i = 0; i < s->n_recent_leaks; i++) {
        const Mdlmap__V1__LeakRecord *l = s->recent_leaks[i];
        /* hostd records a UserMode consumer's death with its mappings as
         * "consumer gone: NAME": an event (the pages were released), not a guest leak */
        bool orphan = l->was_mapped && strncmp(l->reason, "consumer gone: ", 15) == 0;
        printf("  %s %s vm=%s conn=%" PRIu64 " mdl=0x%016" PRIx64 " map=0x%016" PRIx64 " pages=%u reason=\"%s\"\n",
               orphan ? "event" : "leak", orphan ? "orphaned(consumer died)" : l->was_mapped ? "0xCB(mapped)" : "0x76(locked)",
               l->vm_name, l->conn_id, l->mdl_handle, l->map_handle, l->page_count, l->reason);
    }
    frame_envelope_free(r);
    return 0;
}

struct consume_opts {
    const char *write;
    unsigned unmapped;
};

static void on_consumer_event(void *ctx, const struct mdlmap_consumer_map *m, bool mapped)
{
    struct consume_opts *o = ctx;
    if (!mapped) {
        printf("CONSUMER UNMAPPED handle=0x%" PRIx64 "\n", m->map_handle);
        o->unmapped++;
        fflush(stdout);
        return;
    }
    printf("CONSUMER MAPPED handle=0x%" PRIx64 " address=0x%" PRIxPTR " bytes=%u vm=%s cid=%" PRIu64
           " runs=%u ro=%s\n", m->map_handle, (uintptr_t)m->buffer, m->byte_count, m->vm_name, m->guest_cid, m->runs,
           m->read_only ? "yes" : "no");
    char seen[65];
    size_t n = m->byte_count < 64 ? m->byte_count : 64;
    for (size_t i = 0; i < n; i++)
        seen[i] = isprint(m->buffer[i]) ? (char)m->buffer[i] : '.';
    seen[n] = 0;
    printf("CONSUMER SAW: \"%s\"\n", seen);
    if (o->write && !m->read_only) {
        size_t w = strlen(o->write);
        if (w > m->byte_count)
            w = m->byte_count;
        memcpy(m->buffer, o->write, w);
        printf("CONSUMER WROTE: \"%.*s\"\n", (int)w, o->write);
    }
    fflush(stdout);
}

static int cmd_consume(struct mdlmap_client *c, int argc, char **argv)
{
    struct consume_opts o = { 0 };
    long exit_after = 0;
    int i = 0;
    for (; i < argc - 1 && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--write") == 0 && i + 1 < argc - 1)
            o.write = argv[++i];
        else if (strcmp(argv[i], "--exit-after") == 0 && i + 1 < argc - 1)
            exit_after = strtol(argv[++i], NULL, 0);
        else
            return usage();
    }
    if (i != argc - 1)
        return usage();
    struct mdlmap_consumer co;
    int rc = mdlmap_consumer_register(&co, c, argv[i], on_consumer_event, &o);
    if (rc < 0)
        return fail(c, rc, "register consumer");
    printf("CONSUMER REGISTERED name=%s id=%" PRIu64 "\n", argv[i], co.id);
    fflush(stdout);
    while (exit_after <= 0 || o.unmapped < (unsigned long)exit_after) {
        rc = mdlmap_consumer_serve(&co, -1);
        if (rc < 0 && rc != -ETIMEDOUT) {
            fprintf(stderr, "mdlmapctl: consume: %s\n", rc == -ECONNRESET ? "hostd closed the connection" : strerror(-rc));
            mdlmap_consumer_fini(&co);
            return 1;
        }
    }
    mdlmap_consumer_fini(&co);
    return 0;
}

int main(int argc, char **argv)
{
    const char *api = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--api") == 0 && i + 1 < argc)
            api = argv[++i];
        else if (strncmp(argv[i], "--api=", 6) == 0)
            api = argv[i] + 6;
        else if (strcmp(argv[i], "--help") == 0)
            return usage(), 0;
        else
            return usage();
    }
    if (i >= argc)
        return usage();
    const char *cmd = argv[i++];
    if (strcmp(cmd, "list") && strcmp(cmd, "read") && strcmp(cmd, "write") && strcmp(cmd, "stats") &&
        strcmp(cmd, "consume"))
        return usage();
    struct mdlmap_client c;
    int rc = mdlmap_client_open(&c, api);
    if (rc < 0) {
        fprintf(stderr, "mdlmapctl: cannot connect to %s: %s\n",
                api ? api : getenv("MDLMAP_API") ? getenv("MDLMAP_API") : MDLMAP_DEFAULT_API, strerror(-rc));
        return 1;
    }
    int ret;
    if (strcmp(cmd, "list") == 0)
        ret = cmd_list(&c, argc - i, argv + i);
    else if (strcmp(cmd, "read") == 0)
        ret = cmd_read(&c, argc - i, argv + i);
    else if (strcmp(cmd, "write") == 0)
        ret = cmd_write(&c, argc - i, argv + i);
    else if (strcmp(cmd, "consume") == 0)
        ret = cmd_consume(&c, argc - i, argv + i);
    else
        ret = argc - i ? usage() : cmd_stats(&c);
    mdlmap_client_close(&c);
    return ret;
}
