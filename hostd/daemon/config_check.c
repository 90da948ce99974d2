/* --check-config. Parsing has already resolved user and group names and
 * checked every value's syntax; what is left is what only the machine can
 * answer: do the directories exist, is a socket path free or a socket, do
 * numeric ids name existing users and groups. */
#include "config_check.h"

#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "map_engine.h"
#include "mdlmap_version.h"


struct checker {
    FILE *err;
    int errors;
};

static void problem(struct checker *ck, bool fatal, const char *what, const char *path, const char *why)
{
    fprintf(ck->err, "%s: %s %s: %s\n", fatal ? "error" : "warning", what, path, why);
    ck->errors += fatal;
}

/* A Unix socket hostd will bind (VM, host API): its directory must exist by
 * start-up (systemd's RuntimeDirectory creates /run/mdlmap only then: a
 * warning), and the path must be free or a stale socket (hostd replaces it). */
static void check_bind_path(struct checker *ck, const char *what, const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    struct stat st;
    const char *d = dirname(dir);
    if (stat(d, &st) < 0)
        problem(ck, false, what, path, "its directory does not exist (yet): it must by start-up");
    else if (!S_ISDIR(st.st_mode))
        problem(ck, true, what, path, "its directory is not a directory");
    else if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
        problem(ck, true, what, path, "exists and is not a socket");
}

/* A user's or group's name, or its number when it has none. */
static const char *id_name(bool group, unsigned id, char *buf, size_t n)
{
    struct passwd *pw = group ? NULL : getpwuid(id);
    struct group *gr = group ? getgrgid(id) : NULL;
    if (pw || gr)
        return pw ? pw->pw_name : gr->gr_name;
    snprintf(buf, n, "%u", id);
    return buf;
}

/* Numeric ids are accepted as given (as chown would): warn when none exists. */
static void check_id(struct checker *ck, bool group, unsigned id)
{
    char what[64];
    snprintf(what, sizeof(what), "%s %u", group ? "group" : "user", id);
    if (group ? !getgrgid(id) : !getpwuid(id))
        fprintf(ck->err, "warning: %s does not exist on this machine\n", what);
}

/* WHO[,WHO...] as the options take it, with names where the ids have one. */
static void print_who(FILE *out, struct checker *ck, const struct api_who_list *l)
{
    for (unsigned i = 0; i < l->n; i++) {
        char b[16];
        check_id(ck, l->v[i].group, l->v[i].id);
        fprintf(out, "%s%s:%s", i ? "," : "", l->v[i].group ? "group" : "user",
                id_name(l->v[i].group, l->v[i].id, b, sizeof(b)));
    }
    fputc('\n', out);
}

static void print_vm(FILE *out, struct checker *ck, const struct vm_config *c)
{
    char b[16];
    fprintf(out, "vm name=%s,cid=%llu,socket=%s", c->name, (unsigned long long)c->cid, c->socket_path);
    if (c->owner_uid_set) {
        check_id(ck, false, c->owner_uid);
        fprintf(out, ",uid=%s", id_name(false, c->owner_uid, b, sizeof(b)));
    }
    if (c->owner_gid_set) {
        check_id(ck, true, c->owner_gid);
        fprintf(out, ",group=%s", id_name(true, c->owner_gid, b, sizeof(b)));
    }
    if (c->qmp_path[0])
        fprintf(out, ",qmp=%s", c->qmp_path);
    if (c->introspect)
        fprintf(out, ",introspect=on");
    fputc('\n', out);
    check_bind_path(ck, "vm socket", c->socket_path);
}

/* A numeric option: its value, or its default as a comment (dflt_n 0: no number). */
static void print_u64_opt(FILE *out, const char *name, uint64_t v, uint64_t dflt_n, const char *dflt)
{
    if (v)
        fprintf(out, "%s %llu\n", name, (unsigned long long)v);
    else if (dflt_n)
        fprintf(out, "#%s %llu (default%s)\n", name, (unsigned long long)dflt_n, dflt);
    else
        fprintf(out, "#%s (default: %s)\n", name, dflt);
}

int hostd_check_config(FILE *out, FILE *err, const struct hostd_run_config *rc)
{
    static const char *const levels[] = { "error", "warn", "info", "debug" };
    struct checker ck = { .err = err };
    const struct hostd_options *o = rc->opt;
    char b[16];

    fprintf(out, "# mdlmap-hostd %s: effective configuration (config file form)\n", MDLMAP_VERSION);
    for (unsigned i = 0; i < rc->nvms; i++)
        print_vm(out, &ck, &rc->vms[i]);
    if (!rc->nvms)   /* main() accepts that only with an API socket */
        fprintf(out, "#vm (none at start: VmAdd through the host API adds them)\n");
    fprintf(out, "sibling-routing %s\n", o->sibling_routing ? "on" : "off");
    fprintf(out, "rpc-privileged-ports %s\n", o->rpc_any_port ? "off" : "on");
    fprintf(out, "guest-addresses %s\n", o->alias_addresses ? "alias" : "real");
    if (o->socket_group_set) {
        check_id(&ck, true, o->socket_gid);
        fprintf(out, "socket-group %s\n", id_name(true, o->socket_gid, b, sizeof(b)));
    }
    print_u64_opt(out, "vm-page-quota", o->vm_page_quota, MAP_DEFAULT_VM_PAGES, ": 1 GiB");
    print_u64_opt(out, "global-page-quota", o->global_page_quota, MAP_DEFAULT_GLOBAL_PAGES, ": 4 GiB");
    print_u64_opt(out, "max-vmas", o->max_vmas, 0, "derived from vm.max_map_count");
    fprintf(out, "log-level %s\n", levels[log_threshold < 0 ? 0 : log_threshold > 3 ? 3 : log_threshold]);
    if (o->api_path) {
        fprintf(out, "api %s\n", o->api_path);
        check_bind_path(&ck, "api socket", o->api_path);
    } else {
        fprintf(out, "#api (none: no host API socket)\n");
    }
    const struct api_who_list *lists[] = { &o->api.read, &o->api.write, &o->api.admin };
    static const char *const list_opt[] = { "api-read", "api-write", "api-admin" };
    for (unsigned i = 0; i < 3; i++) {
        if (lists[i]->n) {
            fprintf(out, "%s ", list_opt[i]);
            print_who(out, &ck, lists[i]);
        }
    }
    for (unsigned i = 0; i < o->api.nconsumers; i++) {
        fprintf(out, "consumer %s=", o->api.consumers[i].name);
        print_who(out, &ck, &o->api.consumers[i].who);
    }
    print_u64_opt(out, "api-frame-timeout-ms", o->api.frame_timeout_ms, 5000, "");
    print_u64_opt(out, "consumer-timeout-ms", o->api.consumer_timeout_ms, 10000, "");
    print_u64_opt(out, "qmp-timeout-ms", o->qmp_timeout_ms, 5000, "");
    fprintf(out, "sharing %s\n", o->sharing ? "on" : "off");
    for (unsigned i = 0; i < o->nsharing_pairs; i++)
        fprintf(out, "sharing-pair %s,%s\n", o->sharing_pairs[i].a, o->sharing_pairs[i].b);
    for (unsigned i = 0; i < o->npools; i++) {
        const struct share_pool_spec *ps = &o->pools[i];
        fprintf(out, "sharing-pool %s,%s,%s,%llu,%s\n", ps->name, ps->vm_a, ps->vm_b, (unsigned long long)ps->size,
                ps->dir);
        if (!o->sharing || !hostd_sharing_allowed(o, ps->vm_a, ps->vm_b))
            problem(&ck, true, "sharing-pool", ps->name, "needs sharing on and its pair allowed by sharing-pair");
        if (access(ps->dir, W_OK | X_OK) < 0)
            problem(&ck, true, "sharing-pool", ps->dir, "the directory is missing or not writable");
    }
    if (rc->metrics_path) {
        fprintf(out, "metrics-file %s\nmetrics-interval %u\n", rc->metrics_path, rc->metrics_interval_s);
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", rc->metrics_path);
        const char *d = dirname(dir);
        if (access(d, W_OK | X_OK) < 0)
            problem(&ck, true, "metrics-file", rc->metrics_path,
                    errno == ENOENT ? "its directory does not exist" : "its directory is not writable");
    } else {
        fprintf(out, "#metrics-file (none)\n");
    }
    fprintf(err, "%s: %d error(s)\n", ck.errors ? "configuration NOT usable" : "configuration OK", ck.errors);
    return ck.errors;
}
