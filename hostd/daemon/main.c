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
    fprintf(f, "usage: mdlmap-hostd --vm name=NAME,cid=CID,socket=PATH[,...] [--vm ...] [OPTION...]\n"
               "       mdlmap-hostd --check-config [OPTION...] | --version | --help\n");
    if (!full) {
        fprintf(f, "mdlmap-hostd --help explains every option.\n");
        return;
    }
    fprintf(f,
        "Serves virtio-vsock to QEMU guests through vhost-user (one socket per VM) and\n"
        "maps guest memory described by MDLs. Runs in the foreground; logs to stderr,\n"
        "or to the journal under systemd.\n"
        "\nVMs:\n"
        "  --vm name=NAME,cid=CID,socket=PATH[,uid=USER][,group=GROUP][,qmp=PATH][,introspect=on|off]\n"
        "        one per VM: hostd listens on PATH for the VM's QEMU and gives the guest\n"
        "        CID (3..4294967294). uid/group: only that user / a member of that group\n"
        "        may be its QEMU. qmp: QEMU's monitor socket; introspect: whole-guest\n"
        "        access through the host API\n"
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
        "\nOperations:\n"
        "  --log-level error|warn|info|debug   (default info)\n"
        "  --metrics-file PATH\n"
        "        write per-VM metrics in the Prometheus text format to PATH (atomically,\n"
        "        for the node exporter's textfile collector: name it *.prom)\n"
        "  --metrics-interval S   rewrite the metrics file every S seconds (1..3600, default 15)\n"
        "  --check-config\n"
        "        parse everything, check directories, users and groups, print the\n"
        "        effective configuration and exit 0 (usable) or 1, listening on nothing\n"
        "  --version              print the version and exit\n"
        "  --help                 this text\n"
        "\nSignals: SIGTERM/SIGINT stop cleanly; SIGUSR1 logs per-VM statistics.\n"
        "Documentation: docs/operations.md (installed in the documentation directory).\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* --vm SPEC: parsed by the daemon layer (the same parser serves the host
 * API's VmAdd); here only the uniqueness among the command line's VMs. */
static int parse_vm(struct vm_config **vms, unsigned *nvms, const char *arg)
{
    struct vm_config c;
    char err[200];
    if (vm_config_parse(&c, arg, err, sizeof(err)) < 0) {
        fprintf(stderr, "--vm: %s\n", err);
        return -1;
    }
    for (unsigned i = 0; i < *nvms; i++) {
        const struct vm_config *o = &(*vms)[i];
        if (!strcmp(o->name, c.name) || o->cid == c.cid || !strcmp(o->socket_path, c.socket_path)) {
            fprintf(stderr, "--vm %s: name, cid and socket must be unique (clashes with %s)\n", c.name, o->name);
            return -1;
        }
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
       OPT_QMP_TMO, OPT_METRICS, OPT_METRICS_IVAL, OPT_CHECK, OPT_VERSION };

int main(int argc, char **argv)
{
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
        { "metrics-file", required_argument, NULL, OPT_METRICS },
        { "metrics-interval", required_argument, NULL, OPT_METRICS_IVAL },
        { "check-config", no_argument, NULL, OPT_CHECK },
        { "version", no_argument, NULL, OPT_VERSION },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct hostd h;
    memset(&h, 0, sizeof(h));
    struct hostd_options mo;
    memset(&mo, 0, sizeof(mo));
    mo.sibling_routing = true;
    struct vm_config *vms = NULL;
    unsigned nvms = 0;
    int rc = 2, c;
    struct sig_ctx sc = { .h = &h, .fd = -1 };
    bool ran = false, check_only = false;
    struct hostd_run_config run = { .opt = &mo, .metrics_interval_s = 15 };
    struct metrics_writer mw = { .tfd = -1 };

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'v':
            if (parse_vm(&vms, &nvms, optarg) < 0)
                goto out;
            break;
        case OPT_SIBLING:
            if (!strcmp(optarg, "on"))
                mo.sibling_routing = true;
            else if (!strcmp(optarg, "off"))
                mo.sibling_routing = false;
            else {
                fprintf(stderr, "--sibling-routing: on or off\n");
                goto out;
            }
            break;
        case OPT_GADDR:
            if (!strcmp(optarg, "real") || !strcmp(optarg, "alias")) {
                mo.alias_addresses = !strcmp(optarg, "alias");
            } else {
                fprintf(stderr, "--guest-addresses: real or alias\n");
                goto out;
            }
            break;
        case OPT_PRIVPORTS:
            if (!strcmp(optarg, "on") || !strcmp(optarg, "off")) {
                mo.rpc_any_port = !strcmp(optarg, "off");
            } else {
                fprintf(stderr, "--rpc-privileged-ports: on or off\n");
                goto out;
            }
            break;
        case OPT_API:
            mo.api_path = optarg;
            break;
        case OPT_SOCKGRP:
            if (vm_lookup_gid(optarg, &mo.socket_gid) < 0) {
                fprintf(stderr, "--socket-group: no group '%s'\n", optarg);
                goto out;
            }
            mo.socket_group_set = true;
            break;
        case OPT_API_READ:
        case OPT_API_WRITE:
        case OPT_API_ADMIN:
        case OPT_CONSUMER: {
            char err[160];
            struct api_who_list *l = c == OPT_API_READ ? &mo.api.read : c == OPT_API_WRITE ? &mo.api.write
                                                                                            : &mo.api.admin;
            if ((c == OPT_CONSUMER ? host_api_consumer_rule_parse(&mo.api, optarg, err, sizeof(err))
                                   : host_api_who_parse(l, optarg, err, sizeof(err))) < 0) {
                fprintf(stderr, "--%s: %s\n",
                        c == OPT_API_READ ? "api-read" : c == OPT_API_WRITE ? "api-write" :
                        c == OPT_API_ADMIN ? "api-admin" : "consumer", err);
                goto out;
            }
            break;
        }
        case OPT_FRAME_TMO:
        case OPT_CONSUMER_TMO:
        case OPT_QMP_TMO:
            /* 100 ms .. 10 min: shorter would drop honest clients on a busy host */
            if (parse_u64(optarg, 600000, &v) < 0 || v < 100) {
                fprintf(stderr, "--%s: 100..600000 ms\n",
                        c == OPT_FRAME_TMO ? "api-frame-timeout-ms" :
                        c == OPT_QMP_TMO ? "qmp-timeout-ms" : "consumer-timeout-ms");
                goto out;
            }
            if (c == OPT_FRAME_TMO)
                mo.api.frame_timeout_ms = (unsigned)v;
            else if (c == OPT_QMP_TMO)
                mo.qmp_timeout_ms = (unsigned)v;
            else
                mo.api.consumer_timeout_ms = (unsigned)v;
            break;
        case OPT_VMQ:
        case OPT_GQ:
        case OPT_VMAS:
            if (parse_u64(optarg, c == OPT_VMAS ? UINT32_MAX : UINT64_MAX, &v) < 0) {
                fprintf(stderr, "--%s: bad number '%s'\n",
                        c == OPT_VMQ ? "vm-page-quota" : c == OPT_GQ ? "global-page-quota" : "max-vmas", optarg);
                goto out;
            }
            if (c == OPT_VMQ)
                mo.vm_page_quota = v;
            else if (c == OPT_GQ)
                mo.global_page_quota = v;
            else
                mo.max_vmas = (uint32_t)v;
            break;
        case OPT_LOG:
            if (!strcmp(optarg, "error"))
                log_threshold = LOG_ERROR;
            else if (!strcmp(optarg, "warn"))
                log_threshold = LOG_WARN;
            else if (!strcmp(optarg, "info"))
                log_threshold = LOG_INFO;
            else if (!strcmp(optarg, "debug"))
                log_threshold = LOG_DEBUG;
            else {
                fprintf(stderr, "--log-level: error|warn|info|debug\n");
                goto out;
            }
            break;
        case OPT_METRICS:
            run.metrics_path = optarg;
            break;
        case OPT_METRICS_IVAL:
            if (parse_u64(optarg, 3600, &v) < 0 || v < 1) {
                fprintf(stderr, "--metrics-interval: 1..3600 seconds\n");
                goto out;
            }
            run.metrics_interval_s = (unsigned)v;
            break;
        case OPT_CHECK:
            check_only = true;
            break;
        case OPT_VERSION:
            printf("mdlmap-hostd %s\n", MDLMAP_VERSION);
            rc = 0;
            goto out;
        case 'h':
            usage(stdout, true);
            rc = 0;
            goto out;
        default:
            usage(stderr, false);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        usage(stderr, false);
        goto out;
    }
    if (nvms == 0) {
        fprintf(stderr, "at least one --vm is required\n");
        usage(stderr, false);
        goto out;
    }
    if (check_only) {
        run.vms = vms;
        run.nvms = nvms;
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
    if (run.metrics_path && (r = metrics_writer_start(&mw, &h, run.metrics_path, run.metrics_interval_s)) < 0) {
        log_err("metrics: %s: %s", run.metrics_path, strerror(-r));
        goto out;
    }
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
    free(vms);
    if (sc.fd >= 0)
        close(sc.fd);
    if (ran)
        log_info("stopped");
    return rc;
}
