/* mdlmapctl: inspect and drive mdlmap-hostd through its host API socket.
 * Each command is a row of the command table (cmds[] below) and a thin call
 * of the client library (mdlmap_client.h). Every command takes --json: one
 * JSON object per result on stdout (watch and consume: one per line per
 * event; a failure: {"error": {...}}).
 * Exit: 0 ok, 1 request failed (NTSTATUS name and detail printed), 2 usage. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_out.h"
#include "mdlmap_client.h"
#include "mdlmap_consumer.h"

#define MAX_POS 64           /* positional arguments of one command (translate's addresses) */
#define MAX_OPTS 8
#define MAX_READ (64u << 20) /* what one command reads into memory */

struct args {
    int n;
    char *pos[MAX_POS];
    struct {
        const char *name; /* points into argv: "--out" or "--out=FILE" */
        size_t len;       /* of the name part */
        const char *val;
    } opt[MAX_OPTS];
    unsigned nopt;
};

struct ctl {
    struct mdlmap_client c;
    bool json;
    struct jw j;
    const char *what; /* the command, for messages */
};

struct cmd {
    const char *name; /* "vm list": two words */
    const char *opts; /* options it takes, space-separated; "--out=" takes a value */
    int min, max;     /* positional arguments */
    int (*fn)(struct ctl *x, struct args *a);
    const char *help;
};

static int usage(void);

/* Value of option name ("" for a flag), NULL when absent. */
static const char *opt(const struct args *a, const char *name)
{
    for (unsigned i = 0; i < a->nopt; i++)
        if (strlen(name) == a->opt[i].len && strncmp(a->opt[i].name, name, a->opt[i].len) == 0)
            return a->opt[i].val;
    return NULL;
}

/* Does the command take the option (len bytes of name), and with a value? */
static bool takes(const char *opts, const char *name, size_t len, bool *has_val)
{
    for (const char *p = opts; p && *p;) {
        size_t l = strcspn(p, " =");
        if (l == len && strncmp(p, name, len) == 0) {
            *has_val = p[l] == '=';
            return true;
        }
        p += l;
        p += strspn(p, " =");
    }
    return false;
}

/* Options anywhere (until "--"), the rest positional. -1: usage. */
static int parse_args(const struct cmd *cm, int argc, char **argv, struct args *a, bool *json)
{
    memset(a, 0, sizeof(*a));
    bool opts_done = false;
    for (int i = 0; i < argc; i++) {
        char *s = argv[i];
        if (!opts_done && strcmp(s, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (opts_done || strncmp(s, "--", 2) != 0 || !s[2]) {
            if (a->n == MAX_POS)
                return -1;
            a->pos[a->n++] = s;
            continue;
        }
        const char *eq = strchr(s, '=');
        size_t len = eq ? (size_t)(eq - s) : strlen(s);
        bool has_val = false;
        if (strcmp(s, "--json") == 0) {
            *json = true;
            continue;
        }
        if (!takes(cm->opts, s, len, &has_val) || a->nopt == MAX_OPTS || (!has_val && eq))
            return -1;
        const char *val = "";
        if (has_val && eq)
            val = eq + 1;
        else if (has_val && i + 1 < argc)
            val = argv[++i];
        else if (has_val)
            return -1;
        a->opt[a->nopt].name = s;
        a->opt[a->nopt].len = len;
        a->opt[a->nopt].val = val;
        a->nopt++;
    }
    return a->n < cm->min || a->n > cm->max ? -1 : 0;
}

/* ---- shared helpers ------------------------------------------------------ */

static int fail(struct ctl *x, int rc, const char *what)
{
    struct mdlmap_client *c = &x->c;
    bool remote = rc == -EREMOTEIO;
    if (remote)
        fprintf(stderr, "mdlmapctl: %s: %s%s%s\n", what, ntstatus_name(c->last_status),
                c->last_detail[0] ? ": " : "", c->last_detail);
    else
        fprintf(stderr, "mdlmapctl: %s: %s\n", what, strerror(-rc));
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_obj(&x->j, "error");
        jw_str(&x->j, "command", what);
        jw_str(&x->j, "status", remote ? ntstatus_name(c->last_status) : "");
        jw_i64(&x->j, "code", remote ? c->last_status : 0);
        jw_str(&x->j, "detail", remote ? c->last_detail : strerror(-rc));
        jw_end(&x->j);
        jw_end(&x->j);
    }
    return 1;
}

/* A failure of the command itself (nothing hostd said). */
__attribute__((format(printf, 2, 3))) static int fail_msg(struct ctl *x, const char *fmt, ...)
{
    char d[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d, sizeof(d), fmt, ap);
    va_end(ap);
    fprintf(stderr, "mdlmapctl: %s: %s\n", x->what, d);
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_obj(&x->j, "error");
        jw_str(&x->j, "command", x->what);
        jw_str(&x->j, "detail", d);
        jw_end(&x->j);
        jw_end(&x->j);
    }
    return 1;
}

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long r = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return false;
    *v = r;
    return true;
}

/* Parse every listed string as a number; false: usage. */
static bool parse_all(char *const *s, uint64_t *const *v, int n)
{
    for (int i = 0; i < n; i++)
        if (!parse_u64(s[i], v[i]))
            return false;
    return true;
}

static const char *cache_name(int c)
{
    static const char *const n[] = { "noncached", "cached", "wc", "hwcoherent", "nc-unordered", "uswc" };
    return c >= 0 && c <= 5 ? n[c] : "?";
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

static int hexval(int ch)
{
    return isdigit(ch) ? ch - '0' : isxdigit(ch) ? tolower(ch) - 'a' + 10 : -1;
}

/* DATA of the write commands: the string itself, or hex bytes with --hex
 * (spaces and colons allowed between them). *buf: free it. 0 or 2 (usage). */
static int parse_data(const char *s, bool hex, uint8_t **buf, size_t *len)
{
    size_t n = strlen(s);
    *buf = malloc(n + 1);
    if (!*buf)
        return 1;
    *len = 0;
    if (!hex) {
        memcpy(*buf, s, n);
        *len = n;
        return 0;
    }
    for (size_t i = 0; i < n;) {
        if (isspace((unsigned char)s[i]) || s[i] == ':') {
            i++;
            continue;
        }
        int a = hexval((unsigned char)s[i]), b = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
        if (a < 0 || b < 0) {
            free(*buf);
            fprintf(stderr, "mdlmapctl: bad hex at \"%s\"\n", s + i);
            return 2;
        }
        (*buf)[(*len)++] = (uint8_t)(a << 4 | b);
        i += 2;
    }
    return 0;
}

/* Bytes a command read: raw to stdout, hex in JSON, else a hex dump. */
static void print_bytes(struct ctl *x, bool raw, const uint8_t *p, size_t n, uint64_t base)
{
    if (raw)
        fwrite(p, 1, n, stdout);
    else if (x->json)
        jw_bytes_hex(&x->j, "hex", p, n);
    else
        hexdump(p, n, base);
}

/* ---- mappings ------------------------------------------------------------ */

static void json_mapping(struct jw *j, const Mdlmap__V1__MappingInfo *m)
{
    jw_obj(j, NULL);
    jw_hex64(j, "map_handle", m->map_handle);
    jw_str(j, "vm", m->vm_name);
    jw_u64(j, "guest_cid", m->guest_cid);
    jw_hex64(j, "mdl_handle", m->mdl_handle);
    jw_hex64(j, "address", m->address);
    jw_hex64(j, "guest_address", m->guest_address);
    jw_u64(j, "byte_offset", m->byte_offset);
    jw_u64(j, "byte_count", m->byte_count);
    jw_u64(j, "page_count", m->page_count);
    jw_u64(j, "vma_count", m->vma_count);
    jw_str(j, "mode", m->access_mode == MDLMAP__V1__ACCESS_MODE__USER_MODE ? "user" : "kernel");
    jw_str(j, "cache", cache_name(m->cache_type));
    jw_u64(j, "priority", m->priority);
    jw_bool(j, "read_only", m->read_only);
    jw_u64(j, "conn_id", m->conn_id);
    jw_str(j, "consumer", m->consumer);
    jw_end(j);
}

static void print_mappings(struct ctl *x, const Mdlmap__V1__ListMappingsResponse *l)
{
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_arr(&x->j, "mappings");
        for (size_t i = 0; i < l->n_mappings; i++)
            json_mapping(&x->j, l->mappings[i]);
        jw_end(&x->j);
        jw_end(&x->j);
        return;
    }
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
}

static int list_and_print(struct ctl *x, const char *vm, uint64_t guest_address)
{
    mdl_envelope *r;
    int rc = mdlmap_client_list_filter(&x->c, vm, guest_address, 0, &r);
    if (rc == 0 && guest_address && r->list_reply->n_mappings == 0)
        rc = -ENOENT;
    if (rc == 0)
        print_mappings(x, r->list_reply);
    frame_envelope_free(r);
    if (rc == -ENOENT)
        return fail_msg(x, "no mapping contains guest address 0x%" PRIx64, guest_address);
    return rc < 0 ? fail(x, rc, x->what) : 0;
}

static int cmd_list(struct ctl *x, struct args *a)
{
    return list_and_print(x, a->n ? a->pos[0] : NULL, 0);
}

static int cmd_find(struct ctl *x, struct args *a)
{
    uint64_t addr;
    if (!parse_u64(a->pos[0], &addr) || !addr)
        return usage();
    return list_and_print(x, opt(a, "--vm"), addr);
}

/* The target of read/write: HANDLE (looked up only when need_size: hostd
 * judges the handle itself), or --vm VM --guest-address A (the offset is then
 * A's inside the buffer). *consumed: positionals used. */
static int target(struct ctl *x, struct args *a, bool need_size, uint64_t *handle, uint64_t *off, uint64_t *size,
                  int *consumed)
{
    const char *ga = opt(a, "--guest-address");
    struct mdlmap_mapping m;
    uint64_t addr = 0;
    int rc = 0;
    *off = *size = 0;
    *consumed = 0;
    if (ga) {
        if (!parse_u64(ga, &addr) || !addr)
            return usage();
        rc = mdlmap_client_find(&x->c, opt(a, "--vm"), addr, &m);
        if (rc == 0)
            *off = addr - m.guest_address;
    } else {
        if (a->n < 1 || !parse_u64(a->pos[0], handle))
            return usage();
        *consumed = 1;
        if (!need_size)
            return 0;
        rc = mdlmap_client_find_handle(&x->c, *handle, &m);
    }
    if (rc == -ENOENT)
        return ga ? fail_msg(x, "no mapping contains guest address 0x%" PRIx64, addr)
                  : fail_msg(x, "no mapping 0x%" PRIx64, *handle);
    if (rc < 0)
        return fail(x, rc, "list");
    *handle = m.map_handle;
    *size = m.byte_count;
    return 0;
}

static int cmd_read(struct ctl *x, struct args *a)
{
    uint64_t h, off, size, len;
    bool ga = opt(a, "--guest-address");
    /* HANDLE OFFSET LEN, HANDLE (all of it), --guest-address A [LEN] */
    if (ga ? a->n > 1 : a->n != 1 && a->n != 3)
        return usage();
    int used, rc = target(x, a, ga || a->n == 1, &h, &off, &size, &used);
    if (rc)
        return rc;
    len = size - off;
    uint64_t *v[] = { &off, &len };
    if (!parse_all(a->pos + used, ga ? v + 1 : v, a->n - used))
        return usage();
    if (len > MAX_READ) {
        fprintf(stderr, "mdlmapctl: read: at most 64 MiB at a time\n");
        return 2;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 1;
    rc = mdlmap_client_read(&x->c, h, off, buf, len);
    if (rc < 0) {
        free(buf);
        return fail(x, rc, "read");
    }
    bool raw = opt(a, "--raw");
    if (x->json && !raw) {
        jw_obj(&x->j, NULL);
        jw_hex64(&x->j, "map_handle", h);
        jw_u64(&x->j, "offset", off);
        jw_u64(&x->j, "length", len);
    }
    print_bytes(x, raw, buf, len, off);
    if (x->json && !raw)
        jw_end(&x->j);
    free(buf);
    return 0;
}

static int cmd_write(struct ctl *x, struct args *a)
{
    uint64_t h, off, size;
    bool ga = opt(a, "--guest-address");
    /* HANDLE OFFSET DATA, --guest-address A DATA */
    if (a->n != (ga ? 1 : 3))
        return usage();
    uint8_t *buf;
    size_t len;
    int used, rc = parse_data(a->pos[a->n - 1], opt(a, "--hex"), &buf, &len);
    if (rc)
        return rc;
    rc = target(x, a, false, &h, &off, &size, &used);
    uint64_t *v[] = { &off };
    if (rc == 0 && !parse_all(a->pos + used, v, ga ? 0 : 1))
        rc = usage();
    int wr = rc == 0 ? mdlmap_client_write(&x->c, h, off, buf, len) : 0;
    if (wr < 0)
        rc = fail(x, wr, "write");
    free(buf);
    if (rc)
        return rc;
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_hex64(&x->j, "map_handle", h);
        jw_u64(&x->j, "offset", off);
        jw_u64(&x->j, "written", len);
        jw_end(&x->j);
    } else {
        printf("wrote %zu bytes at offset %" PRIu64 " of 0x%016" PRIx64 "\n", len, off, h);
    }
    return 0;
}

static const char *leak_kind(const Mdlmap__V1__LeakRecord *l, bool *orphan)
{
    /* hostd records a UserMode consumer's death with its mappings as
     * "consumer gone: NAME": an event (the pages were released), not a guest leak */
    *orphan = l->was_mapped && strncmp(l->reason, "consumer gone: ", 15) == 0;
    return *orphan ? "orphaned(consumer died)" : l->was_mapped ? "0xCB(mapped)" : "0x76(locked)";
}

static void json_stats(struct jw *j, const Mdlmap__V1__StatsResponse *s)
{
    jw_obj(j, NULL);
    jw_u64(j, "mappings", s->mappings);
    jw_u64(j, "mapped_pages", s->mapped_pages);
    jw_u64(j, "vmas", s->vmas);
    jw_u64(j, "vma_budget", s->vma_budget);
    jw_u64(j, "locked_mdls", s->locked_mdls);
    jw_u64(j, "vm_page_quota", s->vm_page_quota);
    jw_u64(j, "global_page_quota", s->global_page_quota);
    jw_u64(j, "leaks_reported", s->leaks_reported);
    jw_arr(j, "recent_leaks");
    for (size_t i = 0; i < s->n_recent_leaks; i++) {
        const Mdlmap__V1__LeakRecord *l = s->recent_leaks[i];
        bool orphan;
        const char *kind = leak_kind(l, &orphan);
        jw_obj(j, NULL);
        jw_str(j, "kind", orphan ? "event" : "leak");
        jw_str(j, "what", kind);
        jw_str(j, "vm", l->vm_name);
        jw_u64(j, "conn_id", l->conn_id);
        jw_hex64(j, "mdl_handle", l->mdl_handle);
        jw_hex64(j, "map_handle", l->map_handle);
        jw_u64(j, "page_count", l->page_count);
        jw_str(j, "reason", l->reason);
        jw_bool(j, "was_mapped", l->was_mapped);
        jw_end(j);
    }
    jw_end(j);
    jw_end(j);
}

static int cmd_stats(struct ctl *x, struct args *a)
{
    mdl_envelope *r;
    int rc = mdlmap_client_stats(&x->c, &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return fail(x, rc, "stats");
    }
    const Mdlmap__V1__StatsResponse *s = r->stats_reply;
    if (x->json) {
        json_stats(&x->j, s);
        frame_envelope_free(r);
        return 0;
    }
    printf("mappings:          %" PRIu64 "\n", s->mappings);
    printf("mapped pages:      %" PRIu64 "\n", s->mapped_pages);
    printf("vmas:              %" PRIu64 " of %" PRIu64 "\n", s->vmas, s->vma_budget);
    printf("locked MDLs:       %" PRIu64 "\n", s->locked_mdls);
    printf("page quota:        %" PRIu64 " per VM, %" PRIu64 " global\n", s->vm_page_quota, s->global_page_quota);
    printf("leaks reported:    %" PRIu64 "\n", s->leaks_reported);
    for (size_t i = 0; i < s->n_recent_leaks; i++) {
        const Mdlmap__V1__LeakRecord *l = s->recent_leaks[i];
        bool orphan;
        const char *kind = leak_kind(l, &orphan);
        printf("  %s %s vm=%s conn=%" PRIu64 " mdl=0x%016" PRIx64 " map=0x%016" PRIx64 " pages=%u reason=\"%s\"\n",
               orphan ? "event" : "leak", kind, l->vm_name, l->conn_id, l->mdl_handle, l->map_handle, l->page_count,
               l->reason);
    }
    frame_envelope_free(r);
    return 0;
}

/* ---- consumer ------------------------------------------------------------ */

struct consume_opts {
    struct ctl *x;
    const char *write;
    unsigned unmapped;
};

static void on_consumer_event(void *ctx, const struct mdlmap_consumer_map *m, bool mapped)
{
    struct consume_opts *o = ctx;
    struct jw *j = o->x->json ? &o->x->j : NULL;
    size_t n = m->byte_count < 64 ? m->byte_count : 64, w = 0;
    if (mapped && o->write && !m->read_only) {
        w = strlen(o->write) < m->byte_count ? strlen(o->write) : m->byte_count;
    }
    char seen[65];
    for (size_t i = 0; mapped && i < n; i++)
        seen[i] = isprint(m->buffer[i]) ? (char)m->buffer[i] : '.';
    seen[mapped ? n : 0] = 0;
    if (j) {
        jw_obj(j, NULL);
        jw_str(j, "event", mapped ? "mapped" : "unmapped");
        jw_hex64(j, "map_handle", m->map_handle);
        if (mapped) {
            jw_hex64(j, "address", (uintptr_t)m->buffer);
            jw_u64(j, "byte_count", m->byte_count);
            jw_str(j, "vm", m->vm_name);
            jw_u64(j, "guest_cid", m->guest_cid);
            jw_u64(j, "runs", m->runs);
            jw_bool(j, "read_only", m->read_only);
            jw_str(j, "saw", seen);
            if (w)
                jw_strn(j, "wrote", o->write, w);
        }
        jw_end(j);
    } else if (!mapped) {
        printf("CONSUMER UNMAPPED handle=0x%" PRIx64 "\n", m->map_handle);
    } else {
        printf("CONSUMER MAPPED handle=0x%" PRIx64 " address=0x%" PRIxPTR " bytes=%u vm=%s cid=%" PRIu64
               " runs=%u ro=%s\n", m->map_handle, (uintptr_t)m->buffer, m->byte_count, m->vm_name, m->guest_cid,
               m->runs, m->read_only ? "yes" : "no");
        printf("CONSUMER SAW: \"%s\"\n", seen);
        if (w)
            printf("CONSUMER WROTE: \"%.*s\"\n", (int)w, o->write);
    }
    if (w)
        memcpy(m->buffer, o->write, w);
    if (!mapped)
        o->unmapped++;
    fflush(stdout);
}

static int cmd_consume(struct ctl *x, struct args *a)
{
    struct consume_opts o = { .x = x, .write = opt(a, "--write") };
    uint64_t exit_after = 0;
    const char *ea = opt(a, "--exit-after");
    if (ea && !parse_u64(ea, &exit_after))
        return usage();
    struct mdlmap_consumer co;
    int rc = mdlmap_consumer_register(&co, &x->c, a->pos[0], on_consumer_event, &o);
    if (rc < 0)
        return fail(x, rc, "register consumer");
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "event", "registered");
        jw_str(&x->j, "name", a->pos[0]);
        jw_u64(&x->j, "consumer_id", co.id);
        jw_end(&x->j);
    } else {
        printf("CONSUMER REGISTERED name=%s id=%" PRIu64 "\n", a->pos[0], co.id);
        fflush(stdout);
    }
    while (!exit_after || o.unmapped < exit_after) {
        rc = mdlmap_consumer_serve(&co, -1);
        if (rc < 0 && rc != -ETIMEDOUT) {
            mdlmap_consumer_fini(&co);
            return rc == -ECONNRESET ? fail_msg(x, "hostd closed the connection") : fail(x, rc, "consume");
        }
    }
    mdlmap_consumer_fini(&co);
    return 0;
}

/* ---- physical memory ----------------------------------------------------- */

static int cmd_phys_read(struct ctl *x, struct args *a)
{
    uint64_t gpa, len;
    uint64_t *v[] = { &gpa, &len };
    if (!parse_all(a->pos + 1, v, 2))
        return usage();
    if (len > MAX_READ) {
        fprintf(stderr, "mdlmapctl: phys-read: at most 64 MiB at a time (dump for more)\n");
        return 2;
    }
    const char *out = opt(a, "--out");
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 1;
    struct mdlmap_phys_iov iov = { .gpa = gpa, .buf = buf, .len = len };
    int rc = mdlmap_client_phys_read(&x->c, a->pos[0], &iov, 1);
    if (rc == 0 && out) {
        FILE *f = fopen(out, "wb");
        rc = f && fwrite(buf, 1, len, f) == len ? 0 : -errno;
        if (f && fclose(f) != 0 && rc == 0)
            rc = -errno;
        if (rc < 0) {
            free(buf);
            return fail(x, rc ? rc : -EIO, out);
        }
    }
    if (rc < 0) {
        free(buf);
        return fail(x, rc, "phys-read");
    }
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_hex64(&x->j, "gpa", gpa);
        jw_u64(&x->j, "length", len);
        if (out)
            jw_str(&x->j, "out", out);
    }
    if (!out)
        print_bytes(x, opt(a, "--raw") && !x->json, buf, len, gpa);
    else if (!x->json)
        printf("wrote %" PRIu64 " bytes of %s at 0x%" PRIx64 " to %s\n", len, a->pos[0], gpa, out);
    if (x->json)
        jw_end(&x->j);
    free(buf);
    return 0;
}

static int cmd_phys_write(struct ctl *x, struct args *a)
{
    uint64_t gpa;
    if (!parse_u64(a->pos[1], &gpa))
        return usage();
    uint8_t *buf;
    size_t len;
    int rc = parse_data(a->pos[2], opt(a, "--hex"), &buf, &len);
    if (rc)
        return rc;
    struct mdlmap_phys_iov iov = { .gpa = gpa, .buf = buf, .len = len };
    rc = mdlmap_client_phys_write(&x->c, a->pos[0], &iov, 1);
    free(buf);
    if (rc < 0)
        return fail(x, rc, "phys-write");
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_hex64(&x->j, "gpa", gpa);
        jw_u64(&x->j, "written", len);
        jw_end(&x->j);
    } else {
        printf("wrote %zu bytes at 0x%" PRIx64 " of %s\n", len, gpa, a->pos[0]);
    }
    return 0;
}

/* Write [p, p + n) at file offset off, leaving all-zero 64 KiB blocks as
 * holes (the file was truncated to its final size first). */
static int write_sparse(int fd, const uint8_t *p, uint64_t n, uint64_t off)
{
    static const uint8_t zero[65536];
    for (uint64_t i = 0; i < n;) {
        size_t k = n - i > sizeof(zero) ? sizeof(zero) : (size_t)(n - i);
        if (memcmp(p + i, zero, k) != 0) {
            ssize_t w = pwrite(fd, p + i, k, (off_t)(off + i));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return w < 0 ? -errno : -EIO;
            k = (size_t)w;
        }
        i += k;
    }
    return 0;
}

static int cmd_dump(struct ctl *x, struct args *a)
{
    struct mdlmap_ram ram;
    int rc = mdlmap_client_phys_map(&x->c, a->pos[0], false, &ram);
    if (rc < 0)
        return fail(x, rc, "dump");
    uint64_t end = 0, bytes = 0;
    for (unsigned i = 0; i < ram.n; i++) {
        end = ram.r[i].gpa + ram.r[i].size > end ? ram.r[i].gpa + ram.r[i].size : end;
        bytes += ram.r[i].size;
    }
    /* file offset = guest-physical address: holes between regions stay holes */
    int fd = open(a->pos[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    rc = fd < 0 ? -errno : ftruncate(fd, (off_t)end) < 0 ? -errno : 0;
    for (unsigned i = 0; rc == 0 && i < ram.n; i++)
        rc = write_sparse(fd, ram.r[i].ptr, ram.r[i].size, ram.r[i].gpa);
    if (fd >= 0 && close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        mdlmap_ram_release(&ram);
        return fail(x, rc, a->pos[1]);
    }
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_str(&x->j, "file", a->pos[1]);
        jw_u64(&x->j, "bytes", bytes);
        jw_u64(&x->j, "file_size", end);
        jw_arr(&x->j, "regions");
        for (unsigned i = 0; i < ram.n; i++) {
            jw_obj(&x->j, NULL);
            jw_hex64(&x->j, "gpa", ram.r[i].gpa);
            jw_u64(&x->j, "size", ram.r[i].size);
            jw_end(&x->j);
        }
        jw_end(&x->j);
        jw_end(&x->j);
    } else {
        for (unsigned i = 0; i < ram.n; i++)
            printf("region 0x%" PRIx64 "-0x%" PRIx64 " (%" PRIu64 " MiB)\n", ram.r[i].gpa,
                   ram.r[i].gpa + ram.r[i].size, ram.r[i].size >> 20);
        printf("dumped %" PRIu64 " bytes of %s to %s (file offset = guest-physical address)\n", bytes, a->pos[0],
               a->pos[1]);
    }
    mdlmap_ram_release(&ram);
    return 0;
}

/* ---- guest-virtual --------------------------------------------------------- */

static int cmd_translate(struct ctl *x, struct args *a)
{
    uint64_t cr3, va[MAX_POS];
    size_t n = (size_t)a->n - 2;
    if (!parse_u64(a->pos[1], &cr3))
        return usage();
    for (size_t i = 0; i < n; i++)
        if (!parse_u64(a->pos[2 + i], &va[i]))
            return usage();
    struct mdlmap_translation t[MAX_POS];
    int rc = mdlmap_client_translate(&x->c, a->pos[0], cr3, opt(a, "--la57"), va, n, t);
    if (rc < 0)
        return fail(x, rc, "translate");
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_hex64(&x->j, "cr3", cr3);
        jw_arr(&x->j, "results");
    }
    bool all = true;
    for (size_t i = 0; i < n; i++) {
        all &= t[i].status == 0;
        if (x->json) {
            jw_obj(&x->j, NULL);
            jw_hex64(&x->j, "vaddr", va[i]);
            jw_str(&x->j, "status", ntstatus_name(t[i].status));
            jw_hex64(&x->j, "gpa", t[i].gpa);
            jw_u64(&x->j, "page_size", t[i].page_size);
            jw_u64(&x->j, "level", t[i].level);
            jw_bool(&x->j, "writable", t[i].writable);
            jw_bool(&x->j, "user", t[i].user);
            jw_bool(&x->j, "nx", t[i].nx);
            jw_end(&x->j);
        } else if (t[i].status) {
            printf("0x%016" PRIx64 " -> %s (level %u)\n", va[i], ntstatus_name(t[i].status), t[i].level);
        } else {
            printf("0x%016" PRIx64 " -> 0x%016" PRIx64 " page %" PRIu64 "K level %u %s%s%s\n", va[i], t[i].gpa,
                   t[i].page_size >> 10, t[i].level, t[i].writable ? "rw" : "ro", t[i].user ? " user" : " kernel",
                   t[i].nx ? " nx" : "");
        }
    }
    if (x->json) {
        jw_end(&x->j);
        jw_end(&x->j);
    }
    return all ? 0 : 1;
}

static int cmd_virt_read(struct ctl *x, struct args *a)
{
    uint64_t cr3, va, len, fault = 0;
    uint64_t *v[] = { &cr3, &va, &len };
    if (!parse_all(a->pos + 1, v, 3))
        return usage();
    if (len > MAX_READ) {
        fprintf(stderr, "mdlmapctl: virt-read: at most 64 MiB at a time\n");
        return 2;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 1;
    size_t done = 0;
    int rc = mdlmap_client_virt_read(&x->c, a->pos[0], cr3, opt(a, "--la57"), va, buf, len, &done, &fault);
    if (rc < 0 && rc != -EREMOTEIO) {
        free(buf);
        return fail(x, rc, "virt-read");
    }
    bool raw = opt(a, "--raw") && !x->json;
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_hex64(&x->j, "vaddr", va);
        jw_u64(&x->j, "length", done);
        jw_str(&x->j, "status", ntstatus_name(rc ? x->c.last_status : 0));
        if (rc)
            jw_hex64(&x->j, "fault_vaddr", fault);
    }
    print_bytes(x, raw, buf, done, va);
    if (x->json)
        jw_end(&x->j);
    else if (rc)
        fprintf(stderr, "mdlmapctl: virt-read: stopped after %zu bytes at 0x%" PRIx64 ": %s\n", done, fault,
                ntstatus_name(x->c.last_status));
    free(buf);
    return rc ? 1 : 0;
}

static int cmd_virt_write(struct ctl *x, struct args *a)
{
    uint64_t cr3, va, fault = 0;
    uint64_t *v[] = { &cr3, &va };
    if (!parse_all(a->pos + 1, v, 2))
        return usage();
    uint8_t *buf;
    size_t len, done = 0;
    int rc = parse_data(a->pos[3], opt(a, "--hex"), &buf, &len);
    if (rc)
        return rc;
    rc = mdlmap_client_virt_write(&x->c, a->pos[0], cr3, opt(a, "--la57"), va, buf, len, &done, &fault);
    free(buf);
    if (rc < 0 && rc != -EREMOTEIO)
        return fail(x, rc, "virt-write");
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_hex64(&x->j, "vaddr", va);
        jw_u64(&x->j, "written", done);
        jw_str(&x->j, "status", ntstatus_name(rc ? x->c.last_status : 0));
        if (rc)
            jw_hex64(&x->j, "fault_vaddr", fault);
        jw_end(&x->j);
    } else {
        printf("wrote %zu of %zu bytes at 0x%" PRIx64 "\n", done, len, va);
        if (rc)
            fprintf(stderr, "mdlmapctl: virt-write: stopped at 0x%" PRIx64 ": %s\n", fault,
                    ntstatus_name(x->c.last_status));
    }
    return rc ? 1 : 0;
}

/* ---- QEMU ---------------------------------------------------------------- */

static int cmd_regs(struct ctl *x, struct args *a)
{
    mdl_envelope *r;
    int rc = mdlmap_client_vcpu_state(&x->c, a->pos[0], &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return fail(x, rc, "regs");
    }
    const Mdlmap__V1__VcpuStateResponse *s = r->vcpu_state_reply;
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_bool(&x->j, "running", s->running);
        jw_arr(&x->j, "vcpus");
    } else {
        printf("%s: %s\n", a->pos[0], s->running ? "running" : "paused");
    }
    for (size_t i = 0; i < s->n_vcpus; i++) {
        const Mdlmap__V1__VcpuState *v = s->vcpus[i];
        if (!x->json) {
            printf("cpu%u rip=0x%016" PRIx64 " rsp=0x%016" PRIx64 " cr3=0x%016" PRIx64 " cr0=0x%" PRIx64
                   " cr4=0x%" PRIx64 " efer=0x%" PRIx64 " rflags=0x%" PRIx64 " cpl=%u\n", v->index, v->rip, v->rsp,
                   v->cr3, v->cr0, v->cr4, v->efer, v->rflags, v->cpl);
            continue;
        }
        jw_obj(&x->j, NULL);
        jw_u64(&x->j, "index", v->index);
        jw_hex64(&x->j, "rip", v->rip);
        jw_hex64(&x->j, "rsp", v->rsp);
        jw_hex64(&x->j, "cr3", v->cr3);
        jw_hex64(&x->j, "cr0", v->cr0);
        jw_hex64(&x->j, "cr4", v->cr4);
        jw_hex64(&x->j, "efer", v->efer);
        jw_hex64(&x->j, "rflags", v->rflags);
        jw_u64(&x->j, "cpl", v->cpl);
        jw_end(&x->j);
    }
    if (x->json) {
        jw_end(&x->j);
        jw_end(&x->j);
    }
    frame_envelope_free(r);
    return 0;
}

static int run_state(struct ctl *x, struct args *a, int op)
{
    bool running = false;
    char st[64];
    int rc = mdlmap_client_run_state(&x->c, a->pos[0], op, &running, st, sizeof(st));
    if (rc < 0)
        return fail(x, rc, x->what);
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "vm", a->pos[0]);
        jw_bool(&x->j, "running", running);
        jw_str(&x->j, "qemu_status", st);
        jw_end(&x->j);
    } else {
        printf("%s: %s (%s)\n", a->pos[0], running ? "running" : "paused", st);
    }
    return 0;
}

static int cmd_pause(struct ctl *x, struct args *a)
{
    return run_state(x, a, MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE);
}

static int cmd_resume(struct ctl *x, struct args *a)
{
    return run_state(x, a, MDLMAP__V1__RUN_STATE_REQUEST__OP__RESUME);
}

/* ---- events ---------------------------------------------------------------- */

static const char *event_name(int t)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&mdlmap__v1__event_type__descriptor, t);
    return v ? v->name : "EVENT_UNKNOWN";
}

/* "mapping_created,vm_added" -> types; false on an unknown name. */
static bool parse_types(const char *s, int *types, size_t *n, size_t cap)
{
    char name[40];
    *n = 0;
    while (*s) {
        size_t l = strcspn(s, ",");
        if (l == 0 || l >= sizeof(name) || *n == cap)
            return false;
        for (size_t i = 0; i < l; i++)
            name[i] = (char)toupper((unsigned char)s[i] == '-' ? '_' : (unsigned char)s[i]);
        name[l] = 0;
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(&mdlmap__v1__event_type__descriptor, name);
        if (!v)
            return false;
        types[(*n)++] = v->value;
        s += l + (s[l] == ',');
    }
    return true;
}

static void print_event(struct ctl *x, const Mdlmap__V1__Event *e)
{
    if (!x->json) {
        printf("seq=%" PRIu64 " %s vm=%s cid=%" PRIu64 " conn=%" PRIu64 " mdl=0x%" PRIx64 " map=0x%" PRIx64
               " pages=%u address=0x%" PRIx64 " consumer=%s detail=\"%s\" dropped=%" PRIu64 "\n",
               e->seq, event_name(e->type), e->vm_name, e->guest_cid, e->conn_id, e->mdl_handle, e->map_handle,
               e->page_count, e->guest_address, *e->consumer ? e->consumer : "-", e->detail, e->dropped);
        fflush(stdout);
        return;
    }
    struct jw *j = &x->j;
    jw_obj(j, NULL);
    jw_u64(j, "seq", e->seq);
    jw_str(j, "type", event_name(e->type));
    jw_u64(j, "time_ns", e->time_ns);
    jw_str(j, "vm", e->vm_name);
    jw_u64(j, "guest_cid", e->guest_cid);
    jw_u64(j, "conn_id", e->conn_id);
    jw_hex64(j, "mdl_handle", e->mdl_handle);
    jw_hex64(j, "map_handle", e->map_handle);
    jw_u64(j, "page_count", e->page_count);
    jw_hex64(j, "guest_address", e->guest_address);
    jw_str(j, "consumer", e->consumer);
    jw_str(j, "detail", e->detail);
    jw_u64(j, "dropped", e->dropped);
    jw_end(j);
}

static int cmd_watch(struct ctl *x, struct args *a)
{
    int types[32];
    size_t nt = 0;
    uint64_t count = 0, next = 0;
    const char *ts = opt(a, "--type"), *cs = opt(a, "--count");
    if ((ts && !parse_types(ts, types, &nt, 32)) || (cs && !parse_u64(cs, &count)))
        return usage();
    int rc = mdlmap_client_subscribe(&x->c, types, nt, opt(a, "--vm"), &next);
    if (rc < 0)
        return fail(x, rc, "watch");
    /* first line: the subscription is in place (callers wait for it) */
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_u64(&x->j, "watching_from_seq", next);
        jw_end(&x->j);
    } else {
        printf("watching from seq %" PRIu64 "\n", next);
        fflush(stdout);
    }
    for (uint64_t seen = 0; !count || seen < count; seen++) {
        mdl_envelope *ev;
        rc = mdlmap_client_next_event(&x->c, -1, &ev);
        if (rc < 0)
            return rc == -ECONNRESET ? fail_msg(x, "hostd closed the connection") : fail(x, rc, "watch");
        print_event(x, ev->event);
        frame_envelope_free(ev);
    }
    return 0;
}

/* ---- VMs ----------------------------------------------------------------- */

static int cmd_vm_list(struct ctl *x, struct args *a)
{
    mdl_envelope *r;
    int rc = mdlmap_client_vm_list(&x->c, &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return fail(x, rc, "vm list");
    }
    const Mdlmap__V1__VmListResponse *l = r->vm_list_reply;
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_arr(&x->j, "vms");
    } else {
        printf("%-16s %10s %-9s %10s %5s %8s %8s %5s %-10s %-4s %s\n", "NAME", "CID", "QEMU", "RAM(MiB)", "CONNS",
               "MAPPINGS", "PAGES", "MDLS", "INTROSPECT", "QMP", "SOCKET");
    }
    for (size_t i = 0; i < l->n_vms; i++) {
        const Mdlmap__V1__VmInfo *v = l->vms[i];
        static const Mdlmap__V1__VmSpec none = MDLMAP__V1__VM_SPEC__INIT;
        const Mdlmap__V1__VmSpec *s = v->vm ? v->vm : &none;
        if (!x->json) {
            printf("%-16s %10" PRIu64 " %-9s %10" PRIu64 " %5u %8" PRIu64 " %8" PRIu64 " %5" PRIu64 " %-10s %-4s %s\n",
                   s->name, s->cid, v->connected ? "connected" : "-", v->ram_bytes >> 20, v->connections, v->mappings,
                   v->mapped_pages, v->locked_mdls, s->introspect ? "on" : "off",
                   !*s->qmp ? "-" : v->qmp_connected ? "up" : "down", s->socket);
            continue;
        }
        jw_obj(&x->j, NULL);
        jw_str(&x->j, "name", s->name);
        jw_u64(&x->j, "cid", s->cid);
        jw_str(&x->j, "socket", s->socket);
        jw_str(&x->j, "qmp", s->qmp);
        jw_bool(&x->j, "introspect", s->introspect);
        jw_str(&x->j, "user", s->user);
        jw_str(&x->j, "group", s->group);
        jw_bool(&x->j, "connected", v->connected);
        jw_u64(&x->j, "ram_bytes", v->ram_bytes);
        jw_u64(&x->j, "connections", v->connections);
        jw_u64(&x->j, "mappings", v->mappings);
        jw_u64(&x->j, "mapped_pages", v->mapped_pages);
        jw_u64(&x->j, "locked_mdls", v->locked_mdls);
        jw_bool(&x->j, "qmp_connected", v->qmp_connected);
        jw_end(&x->j);
    }
    if (x->json) {
        jw_end(&x->j);
        jw_end(&x->j);
    } else {
        printf("%zu VM%s\n", l->n_vms, l->n_vms == 1 ? "" : "s");
    }
    frame_envelope_free(r);
    return 0;
}

/* name=..,cid=..,socket=..[,qmp=..][,introspect=on|off][,user=..][,group=..]
 * into s (strings point into the modified arg). false: usage. */
static bool parse_spec(char *arg, Mdlmap__V1__VmSpec *s)
{
    for (char *save = NULL, *kv = strtok_r(arg, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *v = strchr(kv, '=');
        if (!v)
            return false;
        *v++ = 0;
        if (strcmp(kv, "name") == 0)
            s->name = v;
        else if (strcmp(kv, "cid") == 0 && parse_u64(v, &s->cid))
            ;
        else if (strcmp(kv, "socket") == 0)
            s->socket = v;
        else if (strcmp(kv, "qmp") == 0)
            s->qmp = v;
        else if (strcmp(kv, "introspect") == 0 && (!strcmp(v, "on") || !strcmp(v, "off")))
            s->introspect = strcmp(v, "on") == 0;
        else if (strcmp(kv, "user") == 0)
            s->user = v;
        else if (strcmp(kv, "group") == 0)
            s->group = v;
        else
            return false;
    }
    return s->name && s->cid && s->socket;
}

/* vm add / vm remove: a request whose answer is only its status. */
static int vm_done(struct ctl *x, int rc, const char *name, const char *verb)
{
    if (rc < 0)
        return fail(x, rc, x->what);
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_str(&x->j, verb, name);
        jw_end(&x->j);
    } else {
        printf("%s %s\n", verb, name);
    }
    return 0;
}

static int cmd_vm_add(struct ctl *x, struct args *a)
{
    Mdlmap__V1__VmSpec s = MDLMAP__V1__VM_SPEC__INIT;
    if (!parse_spec(a->pos[0], &s))
        return usage();
    return vm_done(x, mdlmap_client_vm_add(&x->c, &s), s.name, "added");
}

static int cmd_vm_remove(struct ctl *x, struct args *a)
{
    return vm_done(x, mdlmap_client_vm_remove(&x->c, a->pos[0]), a->pos[0], "removed");
}

/* ---- grants -------------------------------------------------------------- */

static int cmd_grants(struct ctl *x, struct args *a)
{
    mdl_envelope *r;
    int rc = mdlmap_client_grants(&x->c, a->n ? a->pos[0] : NULL, &r);
    if (rc < 0) {
        frame_envelope_free(r);
        return fail(x, rc, "grants");
    }
    const Mdlmap__V1__ListGrantsResponse *l = r->list_grants_reply;
    if (x->json) {
        jw_obj(&x->j, NULL);
        jw_arr(&x->j, "grants");
    } else {
        printf("%-18s %-12s %5s %-12s %5s %-10s %-18s %10s %8s %12s\n", "REF", "GRANTER", "CID", "GRANTEE", "CID",
               "ACCESS", "MDL", "BYTES", "COPIES", "COPIED");
    }
    for (size_t i = 0; i < l->n_grants; i++) {
        const Mdlmap__V1__GrantInfo *g = l->grants[i];
        const char *acc = g->access == MDLMAP__V1__GRANT_ACCESS__GRANT_READ_WRITE ? "read-write" : "read";
        if (!x->json) {
            printf("0x%016" PRIx64 " %-12s %5" PRIu64 " %-12s %5" PRIu64 " %-10s 0x%016" PRIx64 " %10u %8" PRIu64
                   " %12" PRIu64 "\n",
                   g->grant_ref, g->granter_vm, g->granter_cid, g->grantee_vm, g->grantee_cid, acc, g->mdl_handle,
                   g->byte_count, g->copies, g->bytes_copied);
            continue;
        }
        jw_obj(&x->j, NULL);
        jw_hex64(&x->j, "grant_ref", g->grant_ref);
        jw_str(&x->j, "granter_vm", g->granter_vm);
        jw_u64(&x->j, "granter_cid", g->granter_cid);
        jw_str(&x->j, "grantee_vm", g->grantee_vm);
        jw_u64(&x->j, "grantee_cid", g->grantee_cid);
        jw_str(&x->j, "access", acc);
        jw_hex64(&x->j, "mdl_handle", g->mdl_handle);
        jw_u64(&x->j, "byte_count", g->byte_count);
        jw_u64(&x->j, "copies", g->copies);
        jw_u64(&x->j, "bytes_copied", g->bytes_copied);
        jw_end(&x->j);
    }
    if (x->json) {
        jw_end(&x->j);
        jw_end(&x->j);
    } else {
        printf("%zu grant%s\n", l->n_grants, l->n_grants == 1 ? "" : "s");
    }
    frame_envelope_free(r);
    return 0;
}

/* ---- the table ------------------------------------------------------------- */

static const struct cmd cmds[] = {
    { "list", "", 0, 1, cmd_list, "list [VM]                       mappings (all VMs or one)" },
    { "find", "--vm=", 1, 1, cmd_find, "find [--vm VM] GUEST_ADDRESS    the mapping whose buffer holds a guest address" },
    { "read", "--raw --vm= --guest-address=", 0, 3, cmd_read,
      "read [--raw] HANDLE [OFFSET LEN] hex dump (--raw: the bytes) of a mapping's buffer (default: all)\n"
      "  read [--raw] --vm VM --guest-address A [LEN]   the same from the guest address A on" },
    { "write", "--hex --vm= --guest-address=", 1, 3, cmd_write,
      "write [--hex] HANDLE OFFSET DATA  write a string (or hex bytes) into the buffer\n"
      "  write [--hex] --vm VM --guest-address A DATA   the same at the guest address A" },
    { "stats", "", 0, 0, cmd_stats, "stats                           counters, quotas and recent leak records" },
    { "grants", "", 0, 1, cmd_grants, "grants [VM]                     cross-VM grants (VM: as granter or grantee)" },
    { "consume", "--write= --exit-after=", 1, 1, cmd_consume,
      "consume [--write STR] [--exit-after N] NAME\n"
      "                                  be the UserMode consumer NAME: map what guests ask for into this\n"
      "                                  process and print it (--write: put STR at the start of each buffer;\n"
      "                                  --exit-after: stop after N mappings were unmapped again)" },
    { "phys-read", "--raw --out=", 3, 3, cmd_phys_read,
      "phys-read VM GPA LEN [--raw|--out FILE]  guest-physical bytes (VMs with introspect=on)" },
    { "phys-write", "--hex", 3, 3, cmd_phys_write, "phys-write VM GPA DATA [--hex]  write guest-physical bytes" },
    { "dump", "", 2, 2, cmd_dump,
      "dump VM FILE                    all guest RAM into FILE at offset = GPA (holes stay sparse)" },
    { "translate", "--la57", 3, MAX_POS, cmd_translate,
      "translate VM CR3 VADDR... [--la57]  walk the guest's page tables" },
    { "virt-read", "--raw --la57", 4, 4, cmd_virt_read, "virt-read VM CR3 VADDR LEN [--raw] [--la57]" },
    { "virt-write", "--hex --la57", 4, 4, cmd_virt_write, "virt-write VM CR3 VADDR DATA [--hex] [--la57]" },
    { "regs", "", 1, 1, cmd_regs, "regs VM                         vCPU registers (VMs with introspect=on and qmp=)" },
    { "pause", "", 1, 1, cmd_pause, "pause VM                        stop the VM's vCPUs (qmp=)" },
    { "resume", "", 1, 1, cmd_resume, "resume VM                       let them run again" },
    { "watch", "--vm= --type= --count=", 0, 0, cmd_watch,
      "watch [--vm VM] [--type T,...] [--count N]  events as they happen (types: mapping_created, ...)" },
    { "vm list", "", 0, 0, cmd_vm_list, "vm list                         the VMs hostd serves" },
    { "vm add", "", 1, 1, cmd_vm_add,
      "vm add name=..,cid=..,socket=..[,qmp=..][,introspect=on][,user=..][,group=..]" },
    { "vm remove", "", 1, 1, cmd_vm_remove, "vm remove NAME                  tear a VM down and remove it" },
};

static int usage(void)
{
    fprintf(stderr, "usage: mdlmapctl [--api PATH] [--json] COMMAND\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(stderr, "  %s\n", cmds[i].help);
    fprintf(stderr, "--json (anywhere): one JSON object per result on stdout (handles and addresses as \"0x...\")\n"
                    "socket: --api, else $MDLMAP_API, else " MDLMAP_DEFAULT_API "\n");
    return 2;
}

/* The row for argv[0] (and argv[1] for two-word commands); *words used. */
static const struct cmd *lookup(int argc, char **argv, int *words)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        const char *sp = strchr(cmds[i].name, ' ');
        size_t l = sp ? (size_t)(sp - cmds[i].name) : strlen(cmds[i].name);
        if (strlen(argv[0]) != l || strncmp(argv[0], cmds[i].name, l) != 0)
            continue;
        if (!sp) {
            *words = 1;
            return &cmds[i];
        }
        if (argc > 1 && strcmp(argv[1], sp + 1) == 0) {
            *words = 2;
            return &cmds[i];
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *api = NULL;
    bool json = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--api") == 0 && i + 1 < argc)
            api = argv[++i];
        else if (strncmp(argv[i], "--api=", 6) == 0)
            api = argv[i] + 6;
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--help") == 0)
            return usage(), 0;
        else
            return usage();
    }
    int words = 0;
    const struct cmd *cm = i < argc ? lookup(argc - i, argv + i, &words) : NULL;
    struct args a;
    if (!cm || parse_args(cm, argc - i - words, argv + i + words, &a, &json) < 0)
        return usage();
    struct ctl x = { .json = json, .what = cm->name };
    jw_init(&x.j, stdout);
    int rc = mdlmap_client_open(&x.c, api);
    if (rc < 0)
        return fail_msg(&x, "cannot connect to %s: %s",
                        api ? api : getenv("MDLMAP_API") ? getenv("MDLMAP_API") : MDLMAP_DEFAULT_API, strerror(-rc));
    int ret = cm->fn(&x, &a);
    mdlmap_client_close(&x.c);
    return ret;
}
