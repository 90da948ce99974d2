/* mdlmap-hostd: command line, VM setup, signal handling and the main loop. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <dirent.h>
#include <unistd.h>

#include "hostd.h"
#include "log.h"
#include "mdl_services.h"
#include "vhost_user.h"
#include "vsock.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mdlmap-hostd --vm name=NAME,cid=CID,socket=PATH [--vm ...]\n"
            "                    [--sibling-routing on|off] [--api PATH] [--socket-group GROUP]\n"
            "                    [--vm-page-quota N] [--global-page-quota N] [--max-vmas N]\n"
            "                    [--log-level error|warn|info|debug] [--help]\n"
            "Serves virtio-vsock (vhost-user, one socket per VM) for QEMU guests.\n");
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

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(((struct vm *)0)->name))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static struct vm *vm_new(struct hostd *h)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return NULL;
    vm->hostd = h;
    vm->listen_fd = -1;
    vm->conn_fd = -1;
    memtable_init(&vm->mem);
    for (unsigned q = 0; q < VSOCK_NUM_VQ; q++) {
        virtq_init(&vm->vq[q], q, &vm->mem);
        vm->vq[q].owner = vm->name;
    }
    return vm;
}

/* --vm name=NAME,cid=CID,socket=PATH */
static int parse_vm(struct hostd *h, const char *arg)
{
    if (h->nvms >= HOSTD_MAX_VMS) {
        fprintf(stderr, "too many --vm (max %d)\n", HOSTD_MAX_VMS);
        return -1;
    }
    char *dup = strdup(arg);
    struct vm *vm = vm_new(h);
    bool have_name = false, have_cid = false, have_sock = false;
    int ret = -1;
    if (!dup || !vm)
        goto out;
    char *save = NULL;
    for (char *kv = strtok_r(dup, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            fprintf(stderr, "--vm: expected key=value, got '%s'\n", kv);
            goto out;
        }
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(kv, "name")) {
            if (!valid_name(v)) {
                fprintf(stderr, "--vm: bad name '%s' (1-63 chars of [A-Za-z0-9._-])\n", v);
                goto out;
            }
            snprintf(vm->name, sizeof(vm->name), "%s", v);
            have_name = true;
        } else if (!strcmp(kv, "cid")) {
            uint64_t cid;
            /* the spec's field is 64-bit but Linux uses 32-bit CIDs; 0,1,2 and ~0 are reserved */
            if (parse_u64(v, 0xfffffffeull, &cid) < 0 || cid <= VSOCK_HOST_CID) {
                fprintf(stderr, "--vm: bad cid '%s' (3..4294967294)\n", v);
                goto out;
            }
            vm->cid = cid;
            have_cid = true;
        } else if (!strcmp(kv, "socket")) {
            if (!*v || strlen(v) >= sizeof(vm->socket_path)) {
                fprintf(stderr, "--vm: socket path empty or longer than %zu bytes\n", sizeof(vm->socket_path) - 1);
                goto out;
            }
            snprintf(vm->socket_path, sizeof(vm->socket_path), "%s", v);
            have_sock = true;
        } else {
            fprintf(stderr, "--vm: unknown key '%s'\n", kv);
            goto out;
        }
    }
    if (!have_name || !have_cid || !have_sock) {
        fprintf(stderr, "--vm needs name=, cid= and socket=\n");
        goto out;
    }
    for (unsigned i = 0; i < h->nvms; i++) {
        const struct vm *o = h->vms[i];
        if (!strcmp(o->name, vm->name) || o->cid == vm->cid || !strcmp(o->socket_path, vm->socket_path)) {
            fprintf(stderr, "--vm %s: name, cid and socket must be unique (clashes with %s)\n", vm->name, o->name);
            goto out;
        }
    }
    h->vms[h->nvms++] = vm;
    vm = NULL;
    ret = 0;
out:
    free(dup);
    free(vm);
    return ret;
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
        memset(&s, 0, sizeof(s));
        vsock_dev_stats(vm, &s);
        log_info("stats vm %s cid %llu: %s, %u regions %llu MiB, rx %llu pkts/%llu B, tx %llu pkts/%llu B, "
                 "dropped %llu bad %llu rst %llu conns %u, vq0 pops %llu pushes %llu%s, vq1 pops %llu pushes %llu%s",
                 vm->name, (unsigned long long)vm->cid, vm->conn_fd >= 0 ? "connected" : "idle", vm->mem.n,
                 (unsigned long long)(memtable_total(&vm->mem) >> 20), (unsigned long long)s.rx_pkts,
                 (unsigned long long)s.rx_bytes, (unsigned long long)s.tx_pkts, (unsigned long long)s.tx_bytes,
                 (unsigned long long)s.dropped_pkts, (unsigned long long)s.bad_pkts,
                 (unsigned long long)s.rst_sent, s.conns, (unsigned long long)vm->vq[0].pops,
                 (unsigned long long)vm->vq[0].pushes, vm->vq[0].broken ? " BROKEN" : "",
                 (unsigned long long)vm->vq[1].pops, (unsigned long long)vm->vq[1].pushes,
                 vm->vq[1].broken ? " BROKEN" : "");
    }
    log_info("stats: %u open fds", count_fds());
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

enum { OPT_SIBLING = 256, OPT_API, OPT_VMQ, OPT_GQ, OPT_VMAS, OPT_LOG, OPT_SOCKGRP };

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "vm", required_argument, NULL, 'v' },
        { "sibling-routing", required_argument, NULL, OPT_SIBLING },
        { "api", required_argument, NULL, OPT_API },
        { "vm-page-quota", required_argument, NULL, OPT_VMQ },
        { "global-page-quota", required_argument, NULL, OPT_GQ },
        { "max-vmas", required_argument, NULL, OPT_VMAS },
        { "log-level", required_argument, NULL, OPT_LOG },
        { "socket-group", required_argument, NULL, OPT_SOCKGRP },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct hostd h;
    memset(&h, 0, sizeof(h));
    h.sibling_routing = true;
    struct mdl_options mo;
    memset(&mo, 0, sizeof(mo));
    int rc = 2, c;
    struct sig_ctx sc = { .h = &h, .fd = -1 };
    bool mdl_up = false, ran = false;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        uint64_t v;
        switch (c) {
        case 'v':
            if (parse_vm(&h, optarg) < 0)
                goto out;
            break;
        case OPT_SIBLING:
            if (!strcmp(optarg, "on"))
                h.sibling_routing = true;
            else if (!strcmp(optarg, "off"))
                h.sibling_routing = false;
            else {
                fprintf(stderr, "--sibling-routing: on or off\n");
                goto out;
            }
            break;
        case OPT_API:
            mo.api_path = optarg;
            break;
        case OPT_SOCKGRP: {
            struct group *gr = getgrnam(optarg);
            if (!gr) {
                fprintf(stderr, "--socket-group: no group '%s'\n", optarg);
                goto out;
            }
            h.socket_gid = gr->gr_gid;
            h.socket_group_set = true;
            break;
        }
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
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        goto out;
    }
    if (h.nvms == 0) {
        fprintf(stderr, "at least one --vm is required\n");
        usage(stderr);
        goto out;
    }

    rc = 1;
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
    h.loop = evloop_new();
    if (!h.loop || evloop_add(h.loop, &sc.eh, sc.fd, EPOLLIN, on_signal, &sc) < 0)
        goto out;
    for (unsigned i = 0; i < h.nvms; i++) {
        int r = vsock_dev_create(h.vms[i]);
        if (r < 0) {
            log_err("vm %s: vsock device: %s", h.vms[i]->name, strerror(-r));
            goto out;
        }
    }
    int r = echo_service_register(&h);
    if (r < 0) {
        log_err("echo service: %s", strerror(-r));
        goto out;
    }
    r = mdl_services_init(&h, &mo);
    if (r < 0) {
        log_err("MDL services: %s", strerror(-r));
        goto out;
    }
    mdl_up = true;
    for (unsigned i = 0; i < h.nvms; i++)
        if (vu_vm_listen(h.vms[i]) < 0)
            goto out;
    log_info("ready: %u VM(s), sibling routing %s", h.nvms, h.sibling_routing ? "on" : "off");

    while (!evloop_stopped(h.loop)) {
        if (evloop_run_once(h.loop, -1) < 0)
            goto out;
    }
    rc = 0;
    ran = true;
out:
    /* Orderly teardown: drop QEMU connections (resets devices and mappings),
     * free the devices (their services' closed() still reach the engine),
     * stop the MDL side, then free the VMs (a device reset looks its siblings
     * up by CID, so no VM goes before every device is gone). */
    for (unsigned i = 0; i < h.nvms; i++)
        if (h.loop)
            vu_vm_close(h.vms[i]);
    for (unsigned i = 0; i < h.nvms; i++)
        if (h.vms[i]->vsock)
            vsock_dev_destroy(h.vms[i]);
    if (mdl_up)
        mdl_services_fini(&h);
    for (unsigned i = 0; i < h.nvms; i++) {
        memtable_clear(&h.vms[i]->mem);
        free(h.vms[i]);
    }
    if (h.loop) {
        evloop_del(h.loop, &sc.eh);
        evloop_free(h.loop);
    }
    if (sc.fd >= 0)
        close(sc.fd);
    if (ran)
        log_info("stopped");
    return rc;
}
