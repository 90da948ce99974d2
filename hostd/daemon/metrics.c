/* Prometheus text exposition (version 0.0.4) of hostd's per-VM counters. */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "hostd.h"
#include "log.h"
#include "map_engine.h"
#include "mdlmap_version.h"
#include "vhost_user.h"
#include "vsock.h"

enum { M_CONNECTED, M_CONNS, M_CONNS_TOTAL, M_RX_BYTES, M_TX_BYTES, M_RX_PKTS, M_TX_PKTS, M_RST,
       M_MAPPINGS, M_PAGES, M_VMAS, M_QUOTA, M_LEAKS, M_COUNT };

/* One VM's figures, gathered once per write. */
struct vm_sample {
    uint64_t v[M_COUNT];
};

static const struct {
    const char *name, *type, *help;
} metric[M_COUNT] = {
    [M_CONNECTED] = { "mdlmap_vm_frontend_connected", "gauge",
                      "1 while the VM's QEMU (vhost-user front-end) is connected to its socket, else 0." },
    [M_CONNS] = { "mdlmap_vm_vsock_connections", "gauge",
                  "Open vsock connections between the guest and hostd's services." },
    [M_CONNS_TOTAL] = { "mdlmap_vm_vsock_connections_accepted_total", "counter",
                        "vsock connections from the guest that a hostd service accepted." },
    [M_RX_BYTES] = { "mdlmap_vm_vsock_received_bytes_total", "counter",
                     "vsock payload bytes received from the guest (its tx queue)." },
    [M_TX_BYTES] = { "mdlmap_vm_vsock_sent_bytes_total", "counter",
                     "vsock payload bytes sent to the guest (its rx queue)." },
    [M_RX_PKTS] = { "mdlmap_vm_vsock_received_packets_total", "counter", "vsock packets received from the guest." },
    [M_TX_PKTS] = { "mdlmap_vm_vsock_sent_packets_total", "counter", "vsock packets sent to the guest." },
    [M_RST] = { "mdlmap_vm_vsock_resets_sent_total", "counter", "vsock RST packets hostd sent to the guest." },
    [M_MAPPINGS] = { "mdlmap_vm_mappings", "gauge", "MDL mappings the VM holds (KernelMode and UserMode)." },
    [M_PAGES] = { "mdlmap_vm_mapped_pages", "gauge", "Guest pages mapped by the VM's MDL mappings." },
    [M_VMAS] = { "mdlmap_vm_vmas", "gauge", "VMAs the VM's mappings cost hostd (runs plus a guard page each)." },
    [M_QUOTA] = { "mdlmap_vm_quota_refusals_total", "counter",
                  "Locks and maps refused because a page quota, the VMA budget or an MDL limit was reached." },
    [M_LEAKS] = { "mdlmap_vm_leaks_total", "counter",
                  "MDLs the guest left locked or mapped when its connection went away (leak records)." },
};

static void sample_vm(const struct vm *vm, struct vm_sample *s)
{
    struct vsock_stats vs;
    struct map_vm_stats ms;
    vsock_dev_stats(vm->vsock, &vs);
    memset(&ms, 0, sizeof(ms));
    if (vm->mdl)
        map_engine_vm_stats(vm->mdl, &ms);
    s->v[M_CONNECTED] = vm->vu && vu_backend_connected(vm->vu);
    s->v[M_CONNS] = vs.conns;
    s->v[M_CONNS_TOTAL] = vs.conns_accepted;
    s->v[M_RX_BYTES] = vs.rx_bytes;
    s->v[M_TX_BYTES] = vs.tx_bytes;
    s->v[M_RX_PKTS] = vs.rx_pkts;
    s->v[M_TX_PKTS] = vs.tx_pkts;
    s->v[M_RST] = vs.rst_sent;
    s->v[M_MAPPINGS] = ms.mappings;
    s->v[M_PAGES] = ms.mapped_pages;
    s->v[M_VMAS] = ms.vmas;
    s->v[M_QUOTA] = ms.quota_refusals;
    s->v[M_LEAKS] = ms.leaks;
}

int metrics_format(struct hostd *h, FILE *f)
{
    struct vm_sample *s = calloc(h->nvms ? h->nvms : 1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (unsigned i = 0; i < h->nvms; i++)
        sample_vm(h->vms[i], &s[i]);
    struct map_stats g;
    map_engine_stats(h->maps, &g);
    fprintf(f, "# HELP mdlmap_build_info mdlmap-hostd's version.\n# TYPE mdlmap_build_info gauge\n"
               "mdlmap_build_info{version=\"%s\"} 1\n", MDLMAP_VERSION);
    fprintf(f, "# HELP mdlmap_vms VMs hostd serves.\n# TYPE mdlmap_vms gauge\nmdlmap_vms %u\n", h->nvms);
    fprintf(f, "# HELP mdlmap_vma_budget VMAs all mappings together may cost.\n# TYPE mdlmap_vma_budget gauge\n"
               "mdlmap_vma_budget %llu\n", (unsigned long long)g.vma_budget);
    fprintf(f, "# HELP mdlmap_global_page_quota Pages all VMs together may map.\n"
               "# TYPE mdlmap_global_page_quota gauge\nmdlmap_global_page_quota %llu\n",
            (unsigned long long)g.global_page_quota);
    /* VM names are [A-Za-z0-9._-] (vm_name_valid): label values need no escaping. */
    for (unsigned m = 0; m < M_COUNT; m++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", metric[m].name, metric[m].help, metric[m].name, metric[m].type);
        for (unsigned i = 0; i < h->nvms; i++)
            fprintf(f, "%s{vm=\"%s\"} %llu\n", metric[m].name, h->vms[i]->cfg.name, (unsigned long long)s[i].v[m]);
    }
    free(s);
    return ferror(f) ? -EIO : 0;
}

int metrics_write_file(struct hostd *h, const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    /* O_NONBLOCK and a regular file only: whoever may write the directory
     * could put a FIFO there, and opening or writing one blocks the loop */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
        errno = EINVAL;
    }
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", tmp, e == EINVAL ? "not a regular file" : strerror(e));
        return -e;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        snprintf(err, errlen, "%s: %s", tmp, strerror(e));
        return -e;
    }
    int r = metrics_format(h, f);
    if (fclose(f) != 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        unlink(tmp);
    }
    return r;
}

static void write_now(struct metrics_writer *w)
{
    char err[PATH_MAX + 64];
    int r = metrics_write_file(w->h, w->path, err, sizeof(err));
    if (r < 0 && !w->failing)
        log_warn("metrics: %s (retrying every interval)", err);
    else if (r == 0 && w->failing)
        log_info("metrics: %s written again", w->path);
    w->failing = r < 0;
}

static void on_tick(void *opaque, uint32_t events)
{
    struct metrics_writer *w = opaque;
    uint64_t n;
    if (read(w->tfd, &n, sizeof(n)) != (ssize_t)sizeof(n))
        return;
    write_now(w);
}

int metrics_writer_start(struct metrics_writer *w, struct hostd *h, const char *path, unsigned interval_s)
{
    memset(w, 0, sizeof(*w));
    w->h = h;
    w->path = path;
    w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->tfd < 0)
        return -errno;
    struct itimerspec its = { .it_interval = { interval_s, 0 }, .it_value = { interval_s, 0 } };
    int r = timerfd_settime(w->tfd, 0, &its, NULL) < 0 ? -errno : 0;
    if (r == 0)
        r = evloop_add(h->loop, &w->eh, w->tfd, EPOLLIN, on_tick, w);
    if (r < 0) {
        close(w->tfd);
        w->tfd = -1;
        return r;
    }
    write_now(w);
    log_info("metrics: %s every %u s", path, interval_s);
    return 0;
}

void metrics_writer_stop(struct metrics_writer *w)
{
    if (!w->h || w->tfd < 0)
        return;
    evloop_del(w->h->loop, &w->eh);
    close(w->tfd);
    w->tfd = -1;
    unlink(w->path);
}
