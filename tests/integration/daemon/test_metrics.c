/* --metrics-file: the Prometheus text file a real hostd writes for two
 * harness VMs, checked for the exposition format (HELP and TYPE once per
 * metric before its samples, valid names, counters named *_total, one sample
 * per VM label) and for values that follow what the guests did: an RPC
 * connection, a one-page mapping (pages, VMAs), a map over the VM's page
 * quota (a refusal), a connection closed with the mapping held (a leak). The
 * file is replaced atomically (no temporary left) and removed at shutdown;
 * a FIFO planted at the temporary's name does not block hostd.
 * usage: test_metrics HOSTD */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rpc_session.h"

#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define BUF_PFN 0x800u
#define MAXM 64

struct metric {
    char name[96];
    char type[16];
    bool help;
    unsigned samples_vm0, samples_vm1, samples_other;
};

static const char *const per_vm[] = {
    "mdlmap_vm_frontend_connected", "mdlmap_vm_vsock_connections", "mdlmap_vm_vsock_connections_accepted_total",
    "mdlmap_vm_vsock_received_bytes_total", "mdlmap_vm_vsock_sent_bytes_total", "mdlmap_vm_mappings",
    "mdlmap_vm_mapped_pages", "mdlmap_vm_vmas", "mdlmap_vm_quota_refusals_total", "mdlmap_vm_leaks_total",
};

static bool valid_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_' || *s == ':'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == ':'))
            return false;
    return true;
}

static struct metric *find(struct metric *m, unsigned n, const char *name)
{
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(m[i].name, name))
            return &m[i];
    return NULL;
}

/* Parse the whole file; every format violation is a failed check. */
static void check_format(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!tap_check(f != NULL, "metrics file %s readable", path))
        return;
    struct metric m[MAXM];
    unsigned n = 0, bad = 0, lines = 0;
    char line[512], first_bad[512] = "";
    while (fgets(line, sizeof(line), f)) {
        lines++;
        size_t len = strlen(line);
        bool ok = len > 0 && line[len - 1] == '\n';
        line[len ? len - 1 : 0] = 0;
        char name[96] = "", rest[400] = "";
        struct metric *x = NULL;
        if (ok && !strncmp(line, "# HELP ", 7)) {
            ok = sscanf(line + 7, "%95s %399[^\n]", name, rest) == 2 && valid_name(name) && n < MAXM &&
                 !find(m, n, name);
            if (ok) {
                memset(&m[n], 0, sizeof(m[n]));
                snprintf(m[n].name, sizeof(m[n].name), "%s", name);
                m[n++].help = true;
            }
        } else if (ok && !strncmp(line, "# TYPE ", 7)) {
            ok = sscanf(line + 7, "%95s %399s", name, rest) == 2 && (x = find(m, n, name)) && !x->type[0] &&
                 (!strcmp(rest, "gauge") || !strcmp(rest, "counter"));
            if (ok) {
                snprintf(x->type, sizeof(x->type), "%s", rest);
                /* counters are named *_total (OpenMetrics), nothing else is */
                size_t nl = strlen(name);
                bool total = nl > 6 && !strcmp(name + nl - 6, "_total");
                ok = total == !strcmp(rest, "counter");
            }
        } else if (ok) {
            char *sp = strrchr(line, ' '), *end;
            ok = sp != NULL;
            if (ok) {
                *sp = 0;
                errno = 0;
                strtoull(sp + 1, &end, 10);
                ok = !errno && *end == 0 && end != sp + 1;
            }
            char *brace = ok ? strchr(line, '{') : NULL;
            if (brace)
                *brace = 0;
            ok = ok && (x = find(m, n, line)) && x->type[0];
            if (ok && brace) {
                /* exactly one label: vm="NAME" for the per-VM metrics, key="value" otherwise */
                char key[32], val[64], close[4];
                ok = sscanf(brace + 1, "%31[a-z_]=\"%63[A-Za-z0-9._-]\"%3s", key, val, close) == 3 &&
                     !strcmp(close, "}");
                if (ok && !strcmp(key, "vm") && !strcmp(val, "vm0"))
                    x->samples_vm0++;
                else if (ok && !strcmp(key, "vm") && !strcmp(val, "vm1"))
                    x->samples_vm1++;
                else if (ok)
                    x->samples_other++;
            } else if (ok) {
                x->samples_other++;
            }
        }
        if (!ok && !bad++)
            snprintf(first_bad, sizeof(first_bad), "%s", line);
    }
    fclose(f);
    tap_check(bad == 0 && lines > 0, "every one of %u lines is HELP, TYPE or a sample of a declared metric "
              "(%u bad%s%s)", lines, bad, bad ? ", first: " : "", first_bad);
    unsigned per_vm_ok = 0, help_type = 0;
    for (unsigned i = 0; i < n; i++)
        help_type += m[i].help && m[i].type[0];
    tap_check(help_type == n && n > 0, "%u metrics, each with one HELP and one TYPE line", n);
    for (unsigned i = 0; i < sizeof(per_vm) / sizeof(per_vm[0]); i++) {
        struct metric *x = find(m, n, per_vm[i]);
        if (x && x->samples_vm0 == 1 && x->samples_vm1 == 1 && x->samples_other == 0)
            per_vm_ok++;
        else
            tap_diag("%s: %s", per_vm[i], x ? "not exactly one sample per VM" : "missing");
    }
    tap_check(per_vm_ok == sizeof(per_vm) / sizeof(per_vm[0]),
              "each of the %zu per-VM metrics has exactly one sample for vm0 and one for vm1",
              sizeof(per_vm) / sizeof(per_vm[0]));
    struct metric *b = find(m, n, "mdlmap_build_info");
    tap_check(b && b->samples_other == 1, "mdlmap_build_info present");
}

/* The value of name{vm="vm"} in the file now; -1 when absent. */
static long long value_of(const char *path, const char *name, const char *vm)
{
    char want[160], line[512];
    snprintf(want, sizeof(want), "%s{vm=\"%s\"} ", name, vm);
    long long v = -1;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, want, strlen(want)))
            v = strtoll(line + strlen(want), NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* Wait (serving the guests) until the file shows name{vm} == v. */
static bool wait_value(const char *path, const char *name, const char *vm, long long v)
{
    char s[200];
    snprintf(s, sizeof(s), "%s{vm=\"%s\"} %lld\n", name, vm, v);
    bool ok = file_has(path, s, 8000);
    if (!ok)
        tap_diag("%s{vm=\"%s\"} is %lld, not %lld", name, vm, value_of(path, name, vm), v);
    return ok;
}

/* Whoever may write the file's directory (node_exporter's user) plants a
 * FIFO where the temporary goes: hostd must not block opening it (its loop
 * serves every guest). It says it cannot write, and writes again once the
 * FIFO is gone. The waits are hang guards: the lines come within an
 * interval or two. */
static void fifo_planted(struct rig *R, const char *path, const char *tmp)
{
    int made = -1;
    for (int i = 0; i < 200 && (made = mkfifo(tmp, 0666)) < 0 && errno == EEXIST; i++)
        usleep(10000); /* hostd is writing it just now */
    if (!tap_check(made == 0, "a FIFO planted at %s", tmp))
        return;
    unsigned warned = 0;
    for (int i = 0; i < 200 && !(warned = hd_log_count(&R->p, "(retrying every interval)")); i++)
        usleep(50000);
    tap_check(warned > 0, "hostd does not block on the FIFO: it warns that it cannot write");
    /* a reader lets a blocked hostd go on (when the check above failed) */
    int rd = open(tmp, O_RDONLY | O_NONBLOCK);
    unlink(tmp);
    if (rd >= 0)
        close(rd);
    unsigned again = 0;
    for (int i = 0; i < 200 && !(again = hd_log_count(&R->p, "written again")); i++)
        usleep(50000);
    struct stat st;
    tap_check(again > 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode),
              "once the FIFO is gone the file is written again");
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    char dir[] = "/tmp/mdlmap-metrics.XXXXXX", path[128], tmp[140];
    if (!mkdtemp(dir)) {
        tap_check(false, "mkdtemp: %s", strerror(errno));
        return tap_done();
    }
    snprintf(path, sizeof(path), "%s/mdlmap.prom", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* page quota 4: a 5-page map is a quota refusal */
    const char *more[] = { "--metrics-file", path, "--metrics-interval", "1", "--vm-page-quota", "4", NULL };
    struct rig R;
    uint64_t cids[2] = { 3, 4 };
    rig_start_with(&R, bin, "mdlmap-metrics", 2, cids, more);
    struct stat st;
    tap_check(stat(path, &st) == 0 && S_ISREG(st.st_mode), "the metrics file exists once hostd is ready");
    check_format(path);
    tap_check(value_of(path, "mdlmap_vm_frontend_connected", "vm0") == 0 &&
              value_of(path, "mdlmap_vm_mappings", "vm0") == 0, "before any guest: vm0 not connected, no mappings");

    struct vdev *a = rig_vm_up(&R, 0, NULL, "vm0");
    struct rpc_session s;
    if (a && tap_check(rpc_open(&s, a), "vm0 connects to the RPC port")) {
        uint64_t pfns[5] = { BUF_PFN, BUF_PFN + 1, BUF_PFN + 2, BUF_PFN + 3, BUF_PFN + 4 }, one = 0, five = 0;
        Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
        rq.cache_type = 1;
        rq.priority = 32; /* High: may use the whole quota */
        struct rpc_mapping m;
        tap_check(rpc_lock(&s, 0, 4096, pfns, 1, 1, &one) == ST_OK, "lock one page");
        rq.mdl_handle = one;
        tap_check(rpc_map(&s, &rq, &m) == ST_OK, "map it");
        tap_check(wait_value(path, "mdlmap_vm_mappings", "vm0", 1), "metrics: vm0 has 1 mapping");
        tap_check(value_of(path, "mdlmap_vm_mapped_pages", "vm0") == 1 && value_of(path, "mdlmap_vm_vmas", "vm0") == 2,
                  "metrics: 1 mapped page, 2 VMAs (run + guard)");
        tap_check(value_of(path, "mdlmap_vm_frontend_connected", "vm0") == 1 &&
                      value_of(path, "mdlmap_vm_frontend_connected", "vm1") == 0,
                  "metrics: vm0's front-end connected, vm1's not");
        tap_check(value_of(path, "mdlmap_vm_vsock_connections", "vm0") == 1 &&
                      value_of(path, "mdlmap_vm_vsock_connections_accepted_total", "vm0") >= 1,
                  "metrics: vm0 has its RPC connection open");
        tap_check(value_of(path, "mdlmap_vm_vsock_received_bytes_total", "vm0") > 0 &&
                      value_of(path, "mdlmap_vm_vsock_sent_bytes_total", "vm0") > 0 &&
                      value_of(path, "mdlmap_vm_vsock_received_bytes_total", "vm1") == 0,
                  "metrics: bytes both ways for vm0, none for vm1");
        tap_check(rpc_lock(&s, 0, 5 * 4096, pfns, 5, 1, &five) == ST_OK, "lock five pages");
        rq.mdl_handle = five;
        tap_check(rpc_map(&s, &rq, &m) != ST_OK, "mapping them too is over the 4-page quota: refused");
        tap_check(wait_value(path, "mdlmap_vm_quota_refusals_total", "vm0", 1), "metrics: 1 quota refusal for vm0");
        tap_check(value_of(path, "mdlmap_vm_quota_refusals_total", "vm1") == 0, "metrics: none for vm1");
        rpc_close(&s); /* with the mapping and both MDLs held: leaks */
        tap_check(wait_value(path, "mdlmap_vm_mappings", "vm0", 0), "metrics: the mapping went with the connection");
        tap_check(value_of(path, "mdlmap_vm_leaks_total", "vm0") >= 1, "metrics: leak records counted for vm0 (%lld)",
                  value_of(path, "mdlmap_vm_leaks_total", "vm0"));
        tap_check(value_of(path, "mdlmap_vm_leaks_total", "vm1") == 0, "metrics: none for vm1");
    }
    check_format(path);
    tap_check(access(tmp, F_OK) < 0, "no temporary file left beside it");
    fifo_planted(&R, path, tmp);
    if (a) {
        vdev_down(a);
        free(a);
    }
    if (tap_failures)
        hd_log_tail(&R.p, 40);
    rig_stop(&R);
    tap_check(access(path, F_OK) < 0, "hostd removed the file when it stopped");
    unlink(path);
    rmdir(dir);
    return tap_done();
}
