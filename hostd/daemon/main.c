/* mdlmap-hostd: command line, VM setup, signal handling and the main loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <dirent.h>
#include <unistd.h>

#include "config_check.h"
#include "hostd.h"
#include "log.h"
#include "mdlmap_version.h"
#include "metrics.h"
#include "memtable.h"
#include "vhost_user.h"
#include "virtq.h"
#include "vsock.h"

/* The short form on a usage error; --help teaches every option. */
static void usage(FILE *f, bool full)
{
    fprintf(f, "usage: mdlmap-hostd [--config FILE] [--vm name=NAME,cid=CID,socket=PATH[,...] ...] [OPTION...]\n"
               "       mdlmap-hostd --check-config [--config FILE] [OPTION...] | --version | --help\n");
    if (!full) {
        fprintf(f, "mdlmap-hostd --help explains every option.\n");
        return;
    }
    fprintf(f,
        "Serves virtio-vsock to QEMU guests through vhost-user (one socket per VM) and\n"
        "maps guest memory described by MDLs. Runs in the foreground; logs to stderr,\n"
        "or to the journal under systemd.\n"
        "\nConfiguration file:\n"
        "  --config FILE\n"
        "        read options from FILE first: one per line, its long name without the\n"
        "        leading --, whitespace, then its value (\"vm name=a,cid=3,socket=/run/mdlmap/a.sock\");\n"
        "        empty lines and lines starting with # are skipped. Every option below\n"
        "        that takes a value may be set there. The command line wins for\n"
        "        single-valued options; repeatable ones (--vm, --api-read/-write/-admin,\n"
        "        --consumer) add up\n"
        "\nVMs:\n"
        "  --vm name=NAME,cid=CID,socket=PATH[,uid=USER][,group=GROUP][,qmp=PATH][,introspect=on|off]\n"
        "        one per VM: hostd listens on PATH for the VM's QEMU and gives the guest\n"
        "        CID (3..4294967294). uid/group: only that user / a member of that group\n"
        "        may be its QEMU. qmp: QEMU's monitor socket; introspect: whole-guest\n"
        "        access through the host API. At least one --vm is needed unless --api\n"
        "        is given: then hostd may start with no VM and VMs are added and removed\n"
        "        at run time through the host API (VmAdd/VmRemove)\n"
        "  --socket-group GROUP\n"
        "        VM sockets become root:GROUP mode 0660 (libvirt: libvirt-qemu); else 0600\n"
        "\nGuest traffic:\n"
        "  --sibling-routing on|off\n"
        "        route guest-to-guest vsock connections between these VMs (default on)\n"
        "  --rpc-privileged-ports on|off\n"
        "        on (default): only guest ports below 1024 (root in a guest) may lock and map\n"
        "  --guest-addresses real|alias\n"
        "        the address a guest is told for a mapping: hostd's own (default) or a\n"
        "        per-VM alias that hides hostd's address-space layout\n"
        "\nLimits:\n"
        "  --vm-page-quota N      pages one VM may have mapped (default 262144: 1 GiB)\n"
        "  --global-page-quota N  pages all VMs together may have mapped (default 1048576: 4 GiB)\n"
        "  --max-vmas N           VMAs all mappings may cost (default: from vm.max_map_count)\n"
        "\nHost API (mdlmapctl, host tools):\n"
        "  --api PATH             the host API Unix socket (mode 0660, hostd's user and group)\n"
        "  --api-read WHO[,WHO...]   may list mappings, read guest memory, get stats\n"
        "  --api-write WHO[,...]     may also write guest memory\n"
        "  --api-admin WHO[,...]     every right; always gets a connection, even at the limit\n"
        "  --consumer NAME=WHO[,...] may register the UserMode consumer NAME (repeatable)\n"
        "        WHO: user:NAME|UID or group:NAME|GID. Root and hostd's own user have\n"
        "        every right, everyone else none unless named\n"
        "  --api-frame-timeout-ms MS  a started request frame must complete by then (5000)\n"
        "  --consumer-timeout-ms MS   a consumer must answer MapInto by then (10000)\n"
        "  --qmp-timeout-ms MS    QEMU must greet on its QMP socket (qmp=) and answer each\n"
        "        command by then (5000)\n"
        "\nSharing between guests (docs/semantics.md, docs/zero-copy-sharing.md):\n"
        "  --sharing on|off       cross-VM grants and grant copies (default off)\n"
        "  --sharing-pair VM_A,VM_B\n"
        "        with --sharing on, only between listed pairs, both directions (repeatable)\n"
        "  --sharing-pool NAME,VM_A,VM_B,SIZE[,DIR]\n"
        "        a shared pool for two VMs: a sealed memfd of SIZE (a power of two, 8K..1G)\n"
        "        reachable as DIR/mdlmap-pool-NAME (default /dev/shm) for both QEMUs to\n"
        "        attach as ivshmem-plain; needs --sharing on and the pair allowed (repeatable)\n"
        "\nOperations:\n"
        "  --log-level error|warn|info|debug   (default info)\n"
        "  --metrics-file PATH\n"
        "        write per-VM metrics in the Prometheus text format to PATH (atomically,\n"
        "        for the node exporter's textfile collector: name it *.prom)\n"
        "  --metrics-interval S   rewrite the metrics file every S seconds (1..3600, default 15)\n"
        "  --check-config\n"
        "        read --config and the command line, check directories, users and groups,\n"
        "        print the effective configuration in config file form and exit 0 (usable)\n"
        "        or 1 (2: a syntax error), listening on nothing\n"
        "  --version              print the version and exit\n"
        "  --help                 this text\n"
        "\nSignals: SIGTERM/SIGINT stop cleanly; SIGUSR1 logs per-VM statistics. Under\n"
        "systemd with an fd store (the unit's FileDescriptorStoreMax=) QEMU's connections\n"
        "are kept for the next hostd: a restart does not cost the guests their devices.\n"
        "Documentation: docs/operations.md (installed in the documentation directory).\n");
}

/* --vm SPEC: parsed by the daemon layer (the same parser serves the host
 * API's VmAdd); here only the uniqueness among the VMs given at start. */
static int parse_vm(struct vm_config **vms, unsigned *nvms, const char *arg, const char *where)
{
    struct vm_config c;
    char err[200];
    if (vm_config_parse(&c, arg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s--vm: %s\n", where, err);
        return -1;
    }
    for (unsigned i = 0; i < *nvms; i++) {
        const struct vm_config *o = &(*vms)[i];
        if (!strcmp(o->name, c.name) || o->cid == c.cid || !strcmp(o->socket_path, c.socket_path)) {
            fprintf(stderr, "%s--vm %s: name, cid and socket must be unique (clashes with %s)\n", where, c.name,
                    o->name);
            return -1;
        }
    }
    if (*nvms >= HOSTD_MAX_VMS) {
        fprintf(stderr, "%s--vm %s: more than %u VMs\n", where, c.name, HOSTD_MAX_VMS);
        return -1;
    }
    struct vm_config *nv = realloc(*vms, (*nvms + 1) * sizeof(*nv));
    if (!nv)
        return -1;
    nv[(*nvms)++] = c;
    *vms = nv;
    return 0;
}

static unsigned count_fds(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", "..", and the DIR's own fd */
}

static void log_stats(struct hostd *h)
{
    for (unsigned i = 0; i < h->nvms; i++) {
        struct vm *vm = h->vms[i];
        struct vsock_stats s;
        vsock_dev_stats(vm->vsock, &s);
        const struct memtable *mem = vu_backend_mem(vm->vu);
        const struct virtq *q0 = vu_backend_queue(vm->vu, 0), *q1 = vu_backend_queue(vm->vu, 1);
        log_info("stats vm %s cid %llu: %s, %u regions %llu MiB, rx %llu pkts/%llu B, tx %llu pkts/%llu B, "
                 "dropped %llu bad %llu rst %llu conns %u, vq0 pops %llu pushes %llu%s, vq1 pops %llu pushes %llu%s",
                 vm->cfg.name, (unsigned long long)vm->cfg.cid, vu_backend_connected(vm->vu) ? "connected" : "idle",
                 mem->n, (unsigned long long)(memtable_total(mem) >> 20), (unsigned long long)s.rx_pkts,
                 (unsigned long long)s.rx_bytes, (unsigned long long)s.tx_pkts, (unsigned long long)s.tx_bytes,
                 (unsigned long long)s.dropped_pkts, (unsigned long long)s.bad_pkts,
                 (unsigned long long)s.rst_sent, s.conns, (unsigned long long)q0->pops,
                 (unsigned long long)q0->pushes, q0->broken ? " BROKEN" : "", (unsigned long long)q1->pops,
                 (unsigned long long)q1->pushes, q1->broken ? " BROKEN" : "");
    }
    log_info("stats: %u open fds", count_fds());
}

/* Each VM holds about ten fds while its QEMU is connected (docs/architecture.md,
 * bounds): a thousand VMs need far more than the usual soft limit of 1024.
 * Take whatever the hard limit allows and say how many VMs that covers. */
#define FDS_PER_VM 12u
static void raise_fd_limit(unsigned nvms)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn("getrlimit(RLIMIT_NOFILE): %m");
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            log_warn("setrlimit(RLIMIT_NOFILE, %llu): %m", (unsigned long long)rl.rlim_max);
    }
    unsigned long long cur = rl.rlim_cur == RLIM_INFINITY ? ~0ull : (unsigned long long)rl.rlim_cur;
    unsigned long long need = 64ull + (unsigned long long)nvms * FDS_PER_VM;
    if (cur < need)
        log_warn("fd limit %llu is below the ~%llu that %u connected VMs may need (raise the hard limit)",
                 cur, need, nvms);
    else
        log_info("fd limit %llu (enough for %llu connected VMs)", cur, (cur - 64) / FDS_PER_VM);
}

/* Guest RAM, and every MDL mapping of it, is shared memory (memfd): keep all
 * of it out of hostd's core dumps once for the process, instead of an
 * madvise(MADV_DONTDUMP) per mapping. Clears bits 1 (anonymous shared, which
 * memfd mappings count as) and 3 (file-backed shared) of coredump_filter. */
static bool exclude_shared_from_core(void)
{
    FILE *f = fopen("/proc/self/coredump_filter", "r+");
    unsigned long v;
    bool ok = f && fscanf(f, "%lx", &v) == 1;
    if (ok) {
        rewind(f);
        ok = fprintf(f, "0x%lx", v & ~((1ul << 1) | (1ul << 3))) > 0 && fflush(f) == 0;
    }
    if (f)
        fclose(f);
    if (!ok)
        log_warn("coredump_filter: cannot exclude shared memory; every mapping gets MADV_DONTDUMP instead");
    return ok;
}

struct sig_ctx {
    struct hostd *h;
    int fd;
    struct ev_handler eh;
};

static void on_signal(void *opaque, uint32_t events)
{
    struct sig_ctx *sc = opaque;
    struct signalfd_siginfo si;
    while (read(sc->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGUSR1) {
            log_stats(sc->h);
        } else {
            log_info("signal %u: shutting down", si.ssi_signo);
            evloop_stop(sc->h->loop);
        }
    }
}

enum { OPT_SIBLING = 256, OPT_PRIVPORTS, OPT_GADDR, OPT_API, OPT_VMQ, OPT_GQ, OPT_VMAS, OPT_LOG, OPT_SOCKGRP,
       OPT_API_READ, OPT_API_WRITE, OPT_API_ADMIN, OPT_CONSUMER, OPT_FRAME_TMO, OPT_CONSUMER_TMO,
       OPT_QMP_TMO, OPT_CONFIG, OPT_METRICS, OPT_METRICS_IVAL, OPT_CHECK, OPT_VERSION,
       OPT_SHARING, OPT_SHARING_PAIR, OPT_SHARING_POOL };

/* The one option table: getopt reads the command line from it, the config
 * file's keys are looked up in it. */
static const struct option opts[] = {
    { "vm", required_argument, NULL, 'v' },
    { "sibling-routing", required_argument, NULL, OPT_SIBLING },
    { "rpc-privileged-ports", required_argument, NULL, OPT_PRIVPORTS },
    { "guest-addresses", required_argument, NULL, OPT_GADDR },
    { "api", required_argument, NULL, OPT_API },
    { "vm-page-quota", required_argument, NULL, OPT_VMQ },
    { "global-page-quota", required_argument, NULL, OPT_GQ },
    { "max-vmas", required_argument, NULL, OPT_VMAS },
    { "log-level", required_argument, NULL, OPT_LOG },
    { "socket-group", required_argument, NULL, OPT_SOCKGRP },
    { "api-read", required_argument, NULL, OPT_API_READ },
    { "api-write", required_argument, NULL, OPT_API_WRITE },
    { "api-admin", required_argument, NULL, OPT_API_ADMIN },
    { "consumer", required_argument, NULL, OPT_CONSUMER },
    { "api-frame-timeout-ms", required_argument, NULL, OPT_FRAME_TMO },
    { "consumer-timeout-ms", required_argument, NULL, OPT_CONSUMER_TMO },
    { "qmp-timeout-ms", required_argument, NULL, OPT_QMP_TMO },
    { "config", required_argument, NULL, OPT_CONFIG },
    { "metrics-file", required_argument, NULL, OPT_METRICS },
    { "metrics-interval", required_argument, NULL, OPT_METRICS_IVAL },
    { "check-config", no_argument, NULL, OPT_CHECK },
    { "sharing", required_argument, NULL, OPT_SHARING },
    { "sharing-pair", required_argument, NULL, OPT_SHARING_PAIR },
    { "sharing-pool", required_argument, NULL, OPT_SHARING_POOL },
    { "version", no_argument, NULL, OPT_VERSION },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

/* What the options build up, from the config file and the command line. */
struct cli {
    struct hostd_options mo;
    struct vm_config *vms;
    unsigned nvms;
    const char *metrics_path;    /* NULL: no metrics file */
    unsigned metrics_interval_s;
    const char *where; /* error prefix: "" on the command line, "FILE:LINE: " in the config file */
};

static const char *opt_name(int c)
{
    for (const struct option *o = opts; o->name; o++)
        if (o->val == c)
            return o->name;
    return "?";
}

/* One option (getopt's code c) with its value; -1 after saying why. */
static int apply_opt(struct cli *cl, int c, const char *arg)
{
    struct hostd_options *mo = &cl->mo;
    uint64_t v;
    char err[200];
    switch (c) {
    case 'v':
        return parse_vm(&cl->vms, &cl->nvms, arg, cl->where);
    case OPT_SIBLING:
    case OPT_PRIVPORTS:
    case OPT_SHARING:
        if (strcmp(arg, "on") && strcmp(arg, "off")) {
            snprintf(err, sizeof(err), "on or off");
            break;
        }
        if (c == OPT_SIBLING)
            mo->sibling_routing = !strcmp(arg, "on");
        else if (c == OPT_SHARING)
            mo->sharing = !strcmp(arg, "on");
        else
            mo->rpc_any_port = !strcmp(arg, "off");
        return 0;
    case OPT_SHARING_PAIR:
    case OPT_SHARING_POOL:
        if ((c == OPT_SHARING_PAIR ? hostd_sharing_pair_add(mo, arg) : hostd_sharing_pool_add(mo, arg)) == 0)
            return 0;
        snprintf(err, sizeof(err), c == OPT_SHARING_PAIR ? "VM_A,VM_B: two different names, at most %u pairs"
                                                         : "NAME,VM_A,VM_B,SIZE[,/DIR]: SIZE a power of two "
                                                           "8K..1G, at most %u pools",
                 c == OPT_SHARING_PAIR ? HOSTD_MAX_SHARING_PAIRS : SHARE_POOL_MAX);
        break;
    case OPT_GADDR:
        if (strcmp(arg, "real") && strcmp(arg, "alias")) {
            snprintf(err, sizeof(err), "real or alias");
            break;
        }
        mo->alias_addresses = !strcmp(arg, "alias");
        return 0;
    case OPT_API:
        mo->api_path = arg;
        return 0;
    case OPT_SOCKGRP:
        if (vm_lookup_gid(arg, &mo->socket_gid) < 0) {
            snprintf(err, sizeof(err), "no group '%s'", arg);
            break;
        }
        mo->socket_group_set = true;
        return 0;
    case OPT_API_READ:
    case OPT_API_WRITE:
    case OPT_API_ADMIN:
    case OPT_CONSUMER: {
        struct api_who_list *l = c == OPT_API_READ ? &mo->api.read : c == OPT_API_WRITE ? &mo->api.write
                                                                                         : &mo->api.admin;
        if ((c == OPT_CONSUMER ? host_api_consumer_rule_parse(&mo->api, arg, err, sizeof(err))
                               : host_api_who_parse(l, arg, err, sizeof(err))) < 0)
            break;
        return 0;
    }
    case OPT_FRAME_TMO:
    case OPT_CONSUMER_TMO:
    case OPT_QMP_TMO:
        /* 100 ms .. 10 min: shorter would drop honest clients on a busy host */
        if (config_parse_u64(arg, 600000, &v) < 0 || v < 100) {
            snprintf(err, sizeof(err), "100..600000 ms");
            break;
        }
        if (c == OPT_FRAME_TMO)
            mo->api.frame_timeout_ms = (unsigned)v;
        else if (c == OPT_QMP_TMO)
            mo->qmp_timeout_ms = (unsigned)v;
        else
            mo->api.consumer_timeout_ms = (unsigned)v;
        return 0;
    case OPT_VMQ:
    case OPT_GQ:
    case OPT_VMAS:
        if (config_parse_u64(arg, c == OPT_VMAS ? UINT32_MAX : UINT64_MAX, &v) < 0) {
            snprintf(err, sizeof(err), "bad number '%s'", arg);
            break;
        }
        if (c == OPT_VMQ)
            mo->vm_page_quota = v;
        else if (c == OPT_GQ)
            mo->global_page_quota = v;
        else
            mo->max_vmas = (uint32_t)v;
        return 0;
    case OPT_LOG:
        if (!strcmp(arg, "error"))
            log_threshold = LOG_ERROR;
        else if (!strcmp(arg, "warn"))
            log_threshold = LOG_WARN;
        else if (!strcmp(arg, "info"))
            log_threshold = LOG_INFO;
        else if (!strcmp(arg, "debug"))
            log_threshold = LOG_DEBUG;
        else {
            snprintf(err, sizeof(err), "error|warn|info|debug");
            break;
        }
        return 0;
    case OPT_METRICS:
        cl->metrics_path = arg;
        return 0;
    case OPT_METRICS_IVAL:
        if (config_parse_u64(arg, 3600, &v) < 0 || v < 1) {
            snprintf(err, sizeof(err), "1..3600 seconds");
            break;
        }
        cl->metrics_interval_s = (unsigned)v;
        return 0;
    default:
        snprintf(err, sizeof(err), "not allowed here");
        break;
    }
    fprintf(stderr, "%s--%s: %s\n", cl->where, opt_name(c), err);
    return -1;
}

/* --config FILE: one option per line, its long name without "--", then
 * whitespace, then its value (the rest of the line, trailing blanks cut);
 * empty lines and lines starting with # are skipped. The values point into
 * *text, which the caller frees after the options are used. */
#define CONFIG_MAX_BYTES (1u << 20)
static int read_config(struct cli *cl, const char *path, char **text)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "--config %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_MAX_BYTES + 1, f) : 0;
    bool bad = !buf || ferror(f) || n > CONFIG_MAX_BYTES;
    fclose(f);
    if (bad) {
        fprintf(stderr, "--config %s: %s\n", path, buf ? "unreadable or larger than 1 MiB" : "out of memory");
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *text = buf;
    char where[300];
    unsigned lineno = 0;
    for (char *line = buf, *next; line; line = next) {
        lineno++;
        /* by length, not strchr: a NUL byte must not end the file early */
        next = memchr(line, '\n', (size_t)(buf + n - line));
        if (next)
            *next++ = 0;
        snprintf(where, sizeof(where), "%s:%u: ", path, lineno);
        cl->where = where;
        if (memchr(line, 0, (size_t)((next ? next - 1 : buf + n) - line))) {
            fprintf(stderr, "%sa NUL byte in the line\n", where);
            return -1;
        }
        line += strspn(line, " \t\r");
        size_t len = strlen(line);
        while (len && strchr(" \t\r", line[len - 1]))
            line[--len] = 0;
        if (!*line || *line == '#')
            continue;
        if (!strncmp(line, "--", 2))
            line += 2;   /* files written for the old shell-split unit ("--vm ...") still read */
        char *val = line + strcspn(line, " \t");
        if (*val)
            *val++ = 0;
        val += strspn(val, " \t");
        const struct option *o = opts;
        while (o->name && strcmp(o->name, line))
            o++;
        if (!o->name || o->has_arg != required_argument || o->val == OPT_CONFIG) {
            fprintf(stderr, "%s'%s' is not an option a config file can set\n", where, line);
            return -1;
        }
        if (!*val) {
            fprintf(stderr, "%s'%s' needs a value\n", where, line);
            return -1;
        }
        if (apply_opt(cl, o->val, val) < 0)
            return -1;
    }
    cl->where = "";
    return 0;
}

int main(int argc, char **argv)
{
    struct hostd h;
    memset(&h, 0, sizeof(h));
    struct cli cl = { .where = "", .metrics_interval_s = 15 };
    cl.mo.sibling_routing = true;
    char *config_text = NULL;
    const char *config = NULL;
    int rc = 2, c;
    struct sig_ctx sc = { .h = &h, .fd = -1 };
    bool ran = false, check_only = false;
    struct metrics_writer mw = { .tfd = -1 };

    /* The config file first, then the command line: single-valued options
     * given in both take the command line's value; repeatable ones (--vm,
     * --api-read/-write/-admin, --consumer) add up. */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == OPT_CONFIG && config) {
            fprintf(stderr, "--config: given twice\n");
            goto out;
        }
        if (c == OPT_CONFIG)
            config = optarg;
        else if (c == OPT_CHECK)
            check_only = true;
        else if (c == OPT_VERSION) {
            printf("mdlmap-hostd %s\n", MDLMAP_VERSION);
            rc = 0;
            goto out;
        } else if (c == 'h' || c == '?') {
            usage(c == 'h' ? stdout : stderr, c == 'h');
            rc = c == 'h' ? 0 : 2;
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        usage(stderr, false);
        goto out;
    }
    if (config && read_config(&cl, config, &config_text) < 0)
        goto out;
    optind = 0;   /* glibc: a full re-initialisation of getopt */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
        if (c != OPT_CONFIG && c != OPT_CHECK && apply_opt(&cl, c, optarg) < 0)
            goto out;
    if (cl.nvms == 0 && !cl.mo.api_path) {
        fprintf(stderr, "no VM: give --vm (or --api, to add VMs through the host API later)\n");
        usage(stderr, false);
        goto out;
    }
    struct hostd_options mo = cl.mo;
    struct vm_config *vms = cl.vms;
    unsigned nvms = cl.nvms;
    if (check_only) {
        struct hostd_run_config run = { .opt = &mo, .vms = vms, .nvms = nvms,
                                        .metrics_path = cl.metrics_path,
                                        .metrics_interval_s = cl.metrics_interval_s };
        rc = hostd_check_config(stdout, stderr, &run) ? 1 : 0;
        goto out;
    }

    rc = 1;
    raise_fd_limit(nvms);
    mo.dumps_exclude_shared = exclude_shared_from_core();
    /* A connection's 256 KiB vsock rings are freed when idle (trim); glibc
     * would raise its mmap threshold after the first such free and carve later
     * rings from the heap, whose freed pages stay resident: a thousand idle
     * VMs kept ~8 KiB each that way. A fixed threshold keeps the rings in
     * their own mappings, returned to the kernel on free. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    signal(SIGPIPE, SIG_IGN);
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0 || (sc.fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
        log_err("signalfd: %m");
        goto out;
    }
    int r = hostd_init(&h, &mo);
    if (r < 0) {
        log_err("hostd: %s", strerror(-r));
        goto out;
    }
    if (evloop_add(h.loop, &sc.eh, sc.fd, EPOLLIN, on_signal, &sc) < 0)
        goto out;
    for (unsigned i = 0; i < nvms; i++)
        if (hostd_vm_add(&h, &vms[i]) < 0)
            goto out;
    if (cl.metrics_path && (r = metrics_writer_start(&mw, &h, cl.metrics_path, cl.metrics_interval_s)) < 0) {
        log_err("metrics: %s: %s", cl.metrics_path, strerror(-r));
        goto out;
    }
    hostd_started(&h);
    log_info("ready: %u VM(s), sibling routing %s", h.nvms, mo.sibling_routing ? "on" : "off");

    while (!evloop_stopped(h.loop)) {
        if (evloop_run_once(h.loop, -1) < 0)
            goto out;
    }
    rc = 0;
    ran = true;
out:
    metrics_writer_stop(&mw);
    if (h.loop && sc.fd >= 0)
        evloop_del(h.loop, &sc.eh);
    hostd_fini(&h);
    free(cl.vms);
    free(config_text);
    if (sc.fd >= 0)
        close(sc.fd);
    if (ran)
        log_info("stopped");
    return rc;
}
