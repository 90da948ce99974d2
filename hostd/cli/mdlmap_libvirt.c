/* mdlmap-libvirt: makes libvirt domains that ask for mdlmap in their
 * <metadata> (<mdlmap:vsock xmlns:mdlmap="https://mdlmap.dev/libvirt/1"
 * cid="5"/>) work across their lives, with no other XML written by hand.
 *
 * It is a reconciler: on every libvirt event that may matter (define,
 * undefine, start, stop, metadata change), and every --resync-ms, it compares
 * what the domains ask for with what hostd serves and with what each
 * domain's definition and running QEMU carry, and closes the gap:
 *   - a persistent domain with the element gets its definition prepared
 *     (shared memfd RAM, vhost-user-vsock-pci on QEMU's command line) and is
 *     added to hostd (VmAdd) before anyone can start it; undefining it (or
 *     removing the element) removes the VM from hostd (VmRemove);
 *   - a running domain that gets the element live (virsh metadata --live)
 *     gets the device hot-plugged through its monitor (chardev-add +
 *     device_add); removing the element live unplugs it (device_del, then
 *     chardev-remove once the guest let go) and removes the VM.
 * Because every pass starts from the facts (libvirt's domains, hostd's VM
 * list), missed events, a restarted hostd and a restarted companion heal at
 * the next pass. The VMs it manages are the ones whose socket lies in its
 * --socket-dir, named there by the domain's UUID; it never touches others.
 * Why a companion and not a qemu hook: docs/operations.md, "libvirt". */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "lv_xml.h"
#include "mdlmap_client.h"

#define UUID_LEN (VIR_UUID_STRING_BUFLEN - 1)
/* hostd serves at most this many VMs (HOSTD_MAX_VMS); more owned is a bug. */
#define MAX_OWNED 4096

struct opts {
    const char *uri;
    const char *api;
    const char *sockdir;
    const char *qemu_group;
    unsigned resync_ms;
    unsigned reconnect;
    bool once;
    bool debug;
};

/* A VM as hostd has it, or as a domain wants it. */
struct vmspec {
    char uuid[VIR_UUID_STRING_BUFLEN];
    char name[LVX_NAME_MAX + 1];
    uint64_t cid;
    char socket[PATH_MAX];
    char qmp[PATH_MAX];
    bool introspect;
};

enum live_act { ACT_NONE, ACT_ATTACH, ACT_DETACH };

struct want {
    struct vmspec spec;
    bool valid;      /* the domain wants this VM in hostd */
    bool keep;       /* leave hostd's VM as it is (device still in the running QEMU) */
    bool add_failed;
    enum live_act act;
    struct lvx_live live;
};

/* A problem that persists (a bad element, a domain that cannot be hot-attached)
 * is logged once, not every pass: messages logged in the previous pass are
 * remembered by hash, and logged again only after a pass without them. */
#define MEMO_SLOTS 256

struct ctx {
    struct opts o;
    uint64_t memo_prev[MEMO_SLOTS];
    uint64_t memo_cur[MEMO_SLOTS];
    virConnectPtr conn;
    /* libvirt's event loop runs in its own thread (libvirt API calls made
     * from inside its callbacks can wait forever on the daemon); its
     * callbacks only set these and write the eventfd the main thread polls. */
    int wake_fd;
    atomic_bool quit;
    atomic_bool conn_lost;
    atomic_bool live_pending;  /* the next pass does the live work too */
    int retry_ms;              /* a pass asked to look again this soon (-1: no) */
    int api_state;         /* last hostd API result, to log changes only */
    struct vmspec *owned;
    size_t nowned;
};

static bool g_debug;

static void logm(const char *lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logm(const char *lvl, const char *fmt, ...)
{
    if (!strcmp(lvl, "debug") && !g_debug)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    va_list ap;
    va_start(ap, fmt);
    /* the clock hostd's lines carry, so both logs read side by side */
    fprintf(stderr, "[%ld.%03ld] mdlmap-libvirt %s: ", (long)ts.tv_sec, ts.tv_nsec / 1000000, lvl);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h | 1; /* 0 marks an empty slot */
}

static void report(struct ctx *c, const char *lvl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(struct ctx *c, const char *lvl, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint64_t h = fnv1a(msg);
    bool seen = false;
    for (size_t i = 0; i < MEMO_SLOTS && !seen; i++)
        seen = c->memo_prev[i] == h;
    for (size_t i = 0; i < MEMO_SLOTS; i++)
        if (c->memo_cur[i] == 0 || c->memo_cur[i] == h) {
            c->memo_cur[i] = h;
            break;
        }
    if (!seen)
        logm(lvl, "%s", msg);
}

static void memo_next_pass(struct ctx *c)
{
    memcpy(c->memo_prev, c->memo_cur, sizeof(c->memo_prev));
    memset(c->memo_cur, 0, sizeof(c->memo_cur));
}

static const char *lverr(void)
{
    const char *m = virGetLastErrorMessage();
    return m ? m : "unknown libvirt error";
}

/* libvirt prints every error to stderr by default; we log what matters. */
static void quiet_errors(void *opaque, virErrorPtr e)
{
    (void)opaque;
    (void)e;
}

/* ---- hostd ---- */

static int api_open(struct ctx *c, struct mdlmap_client *cl)
{
    int rc = mdlmap_client_open(cl, c->o.api);
    if (rc != c->api_state) {
        if (rc < 0)
            logm("warn", "hostd API %s: %s (retrying every pass)", c->o.api, strerror(-rc));
        else if (c->api_state < 0)
            logm("info", "hostd API %s reachable again", c->o.api);
        c->api_state = rc;
    }
    return rc;
}

static bool in_sockdir(const struct ctx *c, const char *path, char uuid[VIR_UUID_STRING_BUFLEN])
{
    size_t n = strlen(c->o.sockdir);
    if (strncmp(path, c->o.sockdir, n) || path[n] != '/')
        return false;
    const char *base = path + n + 1;
    if (strlen(base) != UUID_LEN + 5 || strcmp(base + UUID_LEN, ".sock"))
        return false;
    memcpy(uuid, base, UUID_LEN);
    uuid[UUID_LEN] = '\0';
    return true;
}

/* hostd's VMs whose sockets are in --socket-dir: the ones this companion manages. */
static int api_list_owned(struct ctx *c, struct mdlmap_client *cl)
{
    mdl_envelope *r = NULL;
    c->nowned = 0;
    int rc = mdlmap_client_vm_list(cl, &r);
    if (rc < 0) {
        report(c, "warn", "VmList: %s %s", strerror(-rc), cl->last_detail);
        frame_envelope_free(r);
        return rc;
    }
    for (size_t i = 0; i < r->vm_list_reply->n_vms && c->nowned < MAX_OWNED; i++) {
        const Mdlmap__V1__VmSpec *v = r->vm_list_reply->vms[i]->vm;
        struct vmspec *o = &c->owned[c->nowned];
        if (!v || !v->socket || !v->name || !in_sockdir(c, v->socket, o->uuid))
            continue;
        snprintf(o->name, sizeof(o->name), "%s", v->name);
        snprintf(o->socket, sizeof(o->socket), "%s", v->socket);
        snprintf(o->qmp, sizeof(o->qmp), "%s", v->qmp ? v->qmp : "");
        o->cid = v->cid;
        o->introspect = v->introspect;
        c->nowned++;
    }
    frame_envelope_free(r);
    return 0;
}

static int api_vm_add(struct ctx *c, struct mdlmap_client *cl, const struct vmspec *s)
{
    Mdlmap__V1__VmSpec spec = MDLMAP__V1__VM_SPEC__INIT;
    spec.name = (char *)s->name;
    spec.cid = s->cid;
    spec.socket = (char *)s->socket;
    spec.qmp = (char *)s->qmp;
    spec.introspect = s->introspect;
    spec.group = (char *)c->o.qemu_group;
    int rc = mdlmap_client_vm_add(cl, &spec);
    if (rc < 0)
        report(c, "error", "domain %s: VmAdd %s cid %" PRIu64 ": %s %s", s->uuid, s->name, s->cid, strerror(-rc),
               cl->last_detail);
    else
        logm("info", "domain %s: VM %s (cid %" PRIu64 ") added to hostd, socket %s", s->uuid, s->name, s->cid,
             s->socket);
    return rc;
}

static int api_vm_remove(struct mdlmap_client *cl, const struct vmspec *s)
{
    int rc = mdlmap_client_vm_remove(cl, s->name);
    if (rc < 0)
        logm("error", "domain %s: VmRemove %s: %s %s", s->uuid, s->name, strerror(-rc), cl->last_detail);
    else
        logm("info", "domain %s: VM %s removed from hostd", s->uuid, s->name);
    return rc;
}

static bool same_spec(const struct vmspec *a, const struct vmspec *b)
{
    return !strcmp(a->name, b->name) && a->cid == b->cid && !strcmp(a->socket, b->socket) &&
           !strcmp(a->qmp, b->qmp) && a->introspect == b->introspect;
}

/* ---- libvirt ---- */

/* The domain's mdlmap element in its live or persistent definition: 1 found, 0 none. */
static int get_meta(struct ctx *c, virDomainPtr dom, unsigned flags, struct lvx_meta *m, const char *uuid)
{
    char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, LVX_NS, flags);
    if (!xml)
        return 0;
    char err[160];
    int rc = lvx_parse_meta(xml, strlen(xml), m, err, sizeof(err));
    free(xml);
    if (rc < 0) {
        report(c, "error", "domain %s: <%s:%s> in its %s definition: %s", uuid, LVX_NS_PREFIX, LVX_ELEMENT,
             flags == VIR_DOMAIN_AFFECT_LIVE ? "live" : "persistent", err);
        return 0;
    }
    return 1;
}

/* Bring the persistent definition in line: prepared for dev, or (dev NULL)
 * without mdlmap's arguments. */
static void prepare_config(struct ctx *c, virDomainPtr dom, const char *uuid, const struct lvx_dev *dev)
{
    /* SECURE: a redefinition must keep passwords (VNC, SPICE) the definition holds. */
    char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    if (!xml) {
        report(c, "error", "domain %s: reading its definition: %s", uuid, lverr());
        return;
    }
    char *out = NULL, err[160];
    int rc = lvx_prepare(xml, strlen(xml), dev, &out, err, sizeof(err));
    free(xml);
    if (rc < 0) {
        report(c, "error", "domain %s: cannot prepare its definition: %s", uuid, err);
    } else if (rc > 0) {
        virDomainPtr d = virDomainDefineXML(virDomainGetConnect(dom), out);
        if (!d)
            report(c, "error", "domain %s: redefining it: %s", uuid, lverr());
        else
            logm("info", "domain %s: definition %s", uuid,
                 dev ? "prepared (shared memfd RAM, vhost-user-vsock on its command line)"
                     : "no longer carries mdlmap's device");
        if (d)
            virDomainFree(d);
    }
    free(out);
}

/* One QMP command through libvirt's monitor: 0 answered with "return",
 * -EIO with an "error" (reply in *why), or libvirt's failure. */
static int monitor(virDomainPtr dom, const char *cmd, char *why, size_t whylen)
{
    char *res = NULL;
    if (why && whylen)
        why[0] = '\0';
    if (virDomainQemuMonitorCommand(dom, cmd, &res, VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT) < 0) {
        if (why)
            snprintf(why, whylen, "%s", lverr());
        return -EIO;
    }
    int rc = res && strstr(res, "\"return\"") && !strstr(res, "\"error\"") ? 0 : -EIO;
    if (rc && why)
        snprintf(why, whylen, "%s", res ? res : "no reply");
    free(res);
    return rc;
}

static bool device_present(virDomainPtr dom)
{
    return monitor(dom,
                   "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/machine/peripheral/" LVX_DEV_ID
                   "\",\"property\":\"type\"}}",
                   NULL, 0) == 0;
}

static void attach(struct ctx *c, virDomainPtr dom, const struct want *w)
{
    char cmd[PATH_MAX + 256], why[512];
    if (device_present(dom))
        return;
    if (!w->live.mem_shared) {
        report(c, "error", "domain %s: cannot hot-attach: its RAM is not a shared memfd (<memoryBacking><source "
                      "type='memfd'/><access mode='shared'/>); the device comes with its next start",
             w->spec.uuid);
        return;
    }
    if (w->live.q35 && w->live.free_port < 0) {
        report(c, "error", "domain %s: cannot hot-attach: no free pcie-root-port (add <controller type='pci' "
                      "model='pcie-root-port'/> to its definition)", w->spec.uuid);
        return;
    }
    snprintf(cmd, sizeof(cmd),
             "{\"execute\":\"chardev-add\",\"arguments\":{\"id\":\"" LVX_DEV_ID "\",\"backend\":{\"type\":"
             "\"socket\",\"data\":{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"%s\"}},\"server\":false}}}}",
             w->spec.socket);
    if (monitor(dom, cmd, why, sizeof(why)) < 0) {
        logm("error", "domain %s: chardev-add: %s", w->spec.uuid, why);
        return;
    }
    char bus[32] = "";
    if (w->live.q35)
        snprintf(bus, sizeof(bus), ",\"bus\":\"pci.%d\"", w->live.free_port);
    snprintf(cmd, sizeof(cmd),
             "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"vhost-user-vsock-pci\",\"id\":\"" LVX_DEV_ID
             "\",\"chardev\":\"" LVX_DEV_ID "\"%s}}",
             bus);
    if (monitor(dom, cmd, why, sizeof(why)) < 0) {
        logm("error", "domain %s: device_add: %s", w->spec.uuid, why);
        monitor(dom, "{\"execute\":\"chardev-remove\",\"arguments\":{\"id\":\"" LVX_DEV_ID "\"}}", NULL, 0);
        return;
    }
    logm("info", "domain %s: vhost-user-vsock hot-attached (VM %s, cid %" PRIu64 ", pcie-root-port %d)", w->spec.uuid,
         w->spec.name, w->spec.cid, w->live.q35 ? w->live.free_port : -1);
}

/* 1 when the device and its chardev are gone, 0 while the guest still holds it. */
static int detach(struct ctx *c, virDomainPtr dom, const char *uuid)
{
    char why[512];
    if (device_present(dom)) {
        /* Repeating device_del while the guest ejects is harmless. */
        if (monitor(dom, "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"" LVX_DEV_ID "\"}}", why,
                    sizeof(why)) < 0)
            logm("debug", "domain %s: device_del: %s", uuid, why);
        else
            logm("debug", "domain %s: device_del sent, waiting for the guest", uuid);
        return 0;
    }
    if (monitor(dom, "{\"execute\":\"chardev-remove\",\"arguments\":{\"id\":\"" LVX_DEV_ID "\"}}", why,
                sizeof(why)) < 0 &&
        !strstr(why, "not found")) {
        report(c, "warn", "domain %s: chardev-remove: %s", uuid, why);
        return 0;
    }
    logm("info", "domain %s: vhost-user-vsock detached", uuid);
    return 1;
}

static const struct vmspec *find_owned(const struct ctx *c, const char *uuid)
{
    for (size_t i = 0; i < c->nowned; i++)
        if (!strcmp(c->owned[i].uuid, uuid))
            return &c->owned[i];
    return NULL;
}

/* What one domain wants; also prepares its persistent definition. */
static void examine(struct ctx *c, virDomainPtr dom, struct want *w)
{
    char uuid[VIR_UUID_STRING_BUFLEN];
    memset(w, 0, sizeof(*w));
    if (virDomainGetUUIDString(dom, uuid) < 0)
        return;
    snprintf(w->spec.uuid, sizeof(w->spec.uuid), "%s", uuid);
    int active = virDomainIsActive(dom), persistent = virDomainIsPersistent(dom);
    struct lvx_meta cm, lm;
    bool have_cm = persistent == 1 && get_meta(c, dom, VIR_DOMAIN_AFFECT_CONFIG, &cm, uuid);
    bool have_lm = active == 1 && get_meta(c, dom, VIR_DOMAIN_AFFECT_LIVE, &lm, uuid);
    const struct vmspec *own = find_owned(c, uuid);
    /* A running domain keeps what it was started with until it stops. */
    const struct lvx_meta *m = have_lm ? &lm : have_cm ? &cm : NULL;
    snprintf(w->spec.socket, sizeof(w->spec.socket), "%s/%s.sock", c->o.sockdir, uuid);
    char qmp[PATH_MAX];
    snprintf(qmp, sizeof(qmp), "%s/%s.qmp", c->o.sockdir, uuid);
    if (persistent == 1) {
        struct lvx_dev dev = { .socket = w->spec.socket, .qmp = have_cm && cm.qmp ? qmp : NULL,
                               .reconnect = c->o.reconnect };
        prepare_config(c, dom, uuid, have_cm ? &dev : NULL);
    }
    if (active == 1) {
        char *xml = virDomainGetXMLDesc(dom, 0), err[160];
        if (!xml && virGetLastErrorCode() == VIR_ERR_NO_DOMAIN)
            return; /* it went away during the pass: the next one sees that */
        if (!xml || lvx_inspect(xml, strlen(xml), &w->live, err, sizeof(err)) < 0) {
            report(c, "error", "domain %s: reading its live definition: %s", uuid, xml ? err : lverr());
            free(xml);
            return;
        }
        free(xml);
    }
    if (m) {
        const char *n = m->name[0] ? m->name : virDomainGetName(dom);
        if (!n || !lvx_valid_name(n)) {
            report(c, "error", "domain %s: its name is not a valid VM name (1..63 of A-Z a-z 0-9 . _ -): give one "
                          "with name=\"...\" in the mdlmap element", uuid);
            return;
        }
        snprintf(w->spec.name, sizeof(w->spec.name), "%s", n);
        w->spec.cid = m->cid;
        w->spec.introspect = m->introspect;
        /* QEMU has the QMP socket only when it was started from a prepared definition. */
        if (m->qmp && (active != 1 || w->live.cold_plugged))
            snprintf(w->spec.qmp, sizeof(w->spec.qmp), "%s", qmp);
        w->valid = true;
    }
    if (active == 1 && !w->live.cold_plugged) {
        if (have_lm) {
            w->act = ACT_ATTACH;
        } else if (own) {
            w->act = ACT_DETACH;
            w->keep = true;
        }
    } else if (active == 1 && own && (!m || !same_spec(&w->spec, own))) {
        /* Started with the device on its command line: hostd keeps serving it as it is until QEMU exits. */
        w->keep = true;
    }
    if (w->keep && own) {
        w->spec = *own;
        w->valid = true;
    }
}

/* From libvirt's event thread: have the main thread run a pass now. */
static void wake(struct ctx *c, bool live)
{
    uint64_t one = 1;
    if (live)
        atomic_store(&c->live_pending, true);
    if (write(c->wake_fd, &one, sizeof(one)) < 0) {
        /* the counter is already non-zero: a pass is coming anyway */
    }
}

/* One reconciliation pass; live: also hot-attach and detach. */
static int reconcile(struct ctx *c, bool live)
{
    struct mdlmap_client cl = { .fd = -1 };
    bool api = api_open(c, &cl) == 0 && api_list_owned(c, &cl) == 0;
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(c->conn, &doms, 0);
    if (n < 0) {
        logm("error", "listing domains: %s", lverr());
        mdlmap_client_close(&cl);
        return -EIO;
    }
    struct want *w = calloc((size_t)n + 1, sizeof(*w));
    if (!w) {
        for (int i = 0; i < n; i++)
            virDomainFree(doms[i]);
        free(doms);
        mdlmap_client_close(&cl);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++)
        examine(c, doms[i], &w[i]);
    int rc = api ? 0 : -ENOTCONN;
    if (api) {
        /* First what goes (a changed spec is removed, then added), then what comes. */
        for (size_t k = 0; k < c->nowned; k++) {
            const struct want *x = NULL;
            for (int i = 0; i < n && !x; i++)
                if (w[i].valid && !strcmp(w[i].spec.uuid, c->owned[k].uuid))
                    x = &w[i];
            if (!x || (!x->keep && !same_spec(&x->spec, &c->owned[k])))
                api_vm_remove(&cl, &c->owned[k]);
        }
        for (int i = 0; i < n; i++) {
            const struct vmspec *own = find_owned(c, w[i].spec.uuid);
            if (w[i].valid && !w[i].keep && (!own || !same_spec(own, &w[i].spec)))
                w[i].add_failed = api_vm_add(c, &cl, &w[i].spec) < 0;
        }
    }
    bool again = false;
    for (int i = 0; live && api && i < n; i++) {
        if (w[i].act == ACT_ATTACH && w[i].valid && !w[i].add_failed) {
            attach(c, doms[i], &w[i]);
        } else if (w[i].act == ACT_DETACH) {
            if (detach(c, doms[i], w[i].spec.uuid) > 0)
                api_vm_remove(&cl, &w[i].spec);
            else
                again = true;
        }
    }
    for (int i = 0; i < n; i++)
        virDomainFree(doms[i]);
    free(doms);
    free(w);
    mdlmap_client_close(&cl);
    memo_next_pass(c);
    /* A guest takes a moment to let go of an unplugged device: look again. */
    if (again)
        c->retry_ms = 1000;
    return rc;
}

/* ---- the event loop ---- */

static void on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    (void)conn;
    (void)detail;
    logm("debug", "event %d on %s", event, virDomainGetName(dom));
    wake(opaque, true);
}

static void on_metadata(virConnectPtr conn, virDomainPtr dom, int type, const char *nsuri, void *opaque)
{
    (void)conn;
    (void)dom;
    if (type == VIR_DOMAIN_METADATA_ELEMENT && nsuri && !strcmp(nsuri, LVX_NS))
        wake(opaque, true);
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    struct ctx *c = opaque;
    (void)conn;
    logm("warn", "connection to libvirt closed (reason %d); reconnecting", reason);
    atomic_store(&c->conn_lost, true);
    wake(c, true);
}

static void drop_conn(struct ctx *c)
{
    if (!c->conn)
        return;
    virConnectUnregisterCloseCallback(c->conn, on_close);
    virConnectClose(c->conn);
    c->conn = NULL;
}

static int open_conn(struct ctx *c)
{
    c->conn = virConnectOpen(c->o.uri);
    if (!c->conn) {
        report(c, "warn", "connecting to %s: %s", c->o.uri, lverr());
        return -ENOTCONN;
    }
    atomic_store(&c->conn_lost, false);
    if (c->o.once)
        return 0;
    if (virConnectDomainEventRegisterAny(c->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                         VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), c, NULL) < 0 ||
        virConnectDomainEventRegisterAny(c->conn, NULL, VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                                         VIR_DOMAIN_EVENT_CALLBACK(on_metadata), c, NULL) < 0 ||
        virConnectRegisterCloseCallback(c->conn, on_close, c, NULL) < 0) {
        logm("warn", "registering for libvirt events: %s", lverr());
        drop_conn(c);
        return -EIO;
    }
    logm("info", "connected to %s", c->o.uri);
    return 0;
}

static void run_pass(struct ctx *c, bool live)
{
    if (atomic_load(&c->conn_lost))
        drop_conn(c);
    if (!c->conn && open_conn(c) < 0)
        return;
    reconcile(c, live);
}

static void *event_thread(void *arg)
{
    struct ctx *c = arg;
    while (!atomic_load(&c->quit))
        if (virEventRunDefaultImpl() < 0) {
            logm("error", "libvirt event loop: %s", lverr());
            break;
        }
    return NULL;
}

static void nothing(int timer, void *opaque)
{
    (void)opaque;
    virEventRemoveTimeout(timer);
}

/* The main thread: a pass when libvirt's thread wakes it, when a pass asked
 * to look again, and every --resync-ms; until SIGTERM/SIGINT/SIGHUP. */
static void stop_signals(sigset_t *ss)
{
    sigemptyset(ss);
    sigaddset(ss, SIGTERM);
    sigaddset(ss, SIGINT);
    sigaddset(ss, SIGHUP);
}

static int serve(struct ctx *c)
{
    sigset_t ss;
    stop_signals(&ss);
    int sfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_t th;
    if (sfd < 0 || c->wake_fd < 0 || pthread_create(&th, NULL, event_thread, c) != 0) {
        logm("error", "setting up: %s", strerror(errno));
        return 1;
    }
    logm("info", "watching %s for <%s:%s xmlns:%s=\"%s\">; sockets in %s", c->o.uri, LVX_NS_PREFIX, LVX_ELEMENT,
         LVX_NS_PREFIX, LVX_NS, c->o.sockdir);
    bool live = true;
    for (;;) {
        c->retry_ms = -1;
        run_pass(c, live);
        int timeout = c->retry_ms >= 0 ? c->retry_ms : (int)c->o.resync_ms;
        struct pollfd p[2] = { { .fd = sfd, .events = POLLIN }, { .fd = c->wake_fd, .events = POLLIN } };
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                logm("info", "signal %u: exiting", si.ssi_signo);
            break;
        }
        uint64_t cnt;
        if (n > 0 && (p[1].revents & POLLIN) && read(c->wake_fd, &cnt, sizeof(cnt)) < 0)
            cnt = 0;
        /* Live work (monitor commands) only on events and retries; the
         * periodic pass only keeps definitions and hostd in line. */
        live = atomic_exchange(&c->live_pending, false) || c->retry_ms >= 0;
    }
    atomic_store(&c->quit, true);
    /* a timer that fires at once wakes libvirt's loop so the thread sees quit */
    virEventAddTimeout(0, nothing, NULL, NULL);
    pthread_join(th, NULL);
    drop_conn(c);
    close(sfd);
    close(c->wake_fd);
    return 0;
}

static int make_sockdir(const struct opts *o)
{
    if (mkdir(o->sockdir, 0750) < 0 && errno != EEXIST) {
        logm("error", "mkdir %s: %s", o->sockdir, strerror(errno));
        return -errno;
    }
    if (o->qemu_group) {
        /* QEMU (the group's member) must reach the sockets hostd makes here. */
        struct group *g = getgrnam(o->qemu_group);
        if (!g) {
            logm("error", "no group '%s'", o->qemu_group);
            return -ENOENT;
        }
        if (chown(o->sockdir, (uid_t)-1, g->gr_gid) < 0 || chmod(o->sockdir, 0750) < 0) {
            logm("error", "%s: group %s, mode 0750: %s", o->sockdir, o->qemu_group, strerror(errno));
            return -errno;
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mdlmap-libvirt [--connect URI] [--api PATH] [--socket-dir DIR] [--qemu-group GROUP]\n"
            "                      [--resync-ms MS] [--reconnect S] [--once] [--debug]\n"
            "Serves libvirt domains whose <metadata> has\n"
            "  <mdlmap:vsock xmlns:mdlmap=\"" LVX_NS "\" cid=\"5\" [name=\"vm5\"] [qmp=\"on\"] [introspect=\"on\"]/>\n"
            "through mdlmap-hostd: prepares their definitions, adds and removes them in hostd,\n"
            "hot-attaches and detaches the device of running domains (element set/removed with --live).\n"
            "  --connect URI      libvirt URI (default qemu:///system)\n"
            "  --api PATH         hostd's host API socket (default $MDLMAP_API or " MDLMAP_DEFAULT_API ")\n"
            "  --socket-dir DIR   where hostd makes the VMs' sockets, one per domain UUID\n"
            "                     (default /run/mdlmap/libvirt; only VMs with a socket here are managed)\n"
            "  --qemu-group GROUP the group QEMU runs as (libvirt-qemu): DIR gets it (mode 0750), and each\n"
            "                     VM is added with group=GROUP (socket root:GROUP 0660, only that group's QEMU)\n"
            "  --resync-ms MS     full reconciliation every MS besides events (default 5000; 100..3600000)\n"
            "  --reconnect S      QEMU's chardev reconnects to hostd every S seconds (default 0: off)\n"
            "  --once             one pass (no hot attach/detach) and exit: 0 ok, 1 hostd or libvirt failed\n"
            "  --debug            log each event\n");
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *s == '-' || errno || *end || v < lo || v > hi)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option lopts[] = {
        { "connect", required_argument, NULL, 'c' }, { "api", required_argument, NULL, 'a' },
        { "socket-dir", required_argument, NULL, 's' }, { "qemu-group", required_argument, NULL, 'g' },
        { "resync-ms", required_argument, NULL, 'r' }, { "reconnect", required_argument, NULL, 'R' },
        { "once", no_argument, NULL, '1' }, { "debug", no_argument, NULL, 'd' },
        { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
    };
    struct ctx c = { .wake_fd = -1, .api_state = 1 };
    c.o = (struct opts){ .uri = "qemu:///system", .sockdir = "/run/mdlmap/libvirt", .resync_ms = 5000 };
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        switch (opt) {
        case 'c': c.o.uri = optarg; break;
        case 'a': c.o.api = optarg; break;
        case 's': c.o.sockdir = optarg; break;
        case 'g': c.o.qemu_group = optarg; break;
        case 'r':
            if (parse_uint(optarg, 100, 3600000, &c.o.resync_ms) < 0) {
                fprintf(stderr, "mdlmap-libvirt: --resync-ms: bad value '%s' (100..3600000)\n", optarg);
                return 2;
            }
            break;
        case 'R':
            if (parse_uint(optarg, 0, 3600, &c.o.reconnect) < 0) {
                fprintf(stderr, "mdlmap-libvirt: --reconnect: bad value '%s' (0..3600)\n", optarg);
                return 2;
            }
            break;
        case '1': c.o.once = true; break;
        case 'd': c.o.debug = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    /* The directory and the UUID name make the socket path; QEMU's option
     * syntax and the QMP JSON we build must not need quoting. */
    size_t dl = strlen(c.o.sockdir);
    if (c.o.sockdir[0] != '/' || dl < 2 || c.o.sockdir[dl - 1] == '/' || dl > 200 ||
        strpbrk(c.o.sockdir, ",\"\\ ")) {
        fprintf(stderr, "mdlmap-libvirt: --socket-dir: '%s' must be absolute, at most 200 bytes, without a "
                        "trailing slash, commas, quotes, backslashes or blanks\n", c.o.sockdir);
        return 2;
    }
    g_debug = c.o.debug;
    c.owned = calloc(MAX_OWNED, sizeof(*c.owned));
    if (!c.owned || make_sockdir(&c.o) < 0)
        return 1;
    if (!c.o.once) {
        /* Blocked before libvirt starts any thread, so that only the
         * signalfd in serve() sees them. */
        sigset_t ss;
        stop_signals(&ss);
        pthread_sigmask(SIG_BLOCK, &ss, NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    virSetErrorFunc(NULL, quiet_errors);
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
        logm("error", "libvirt: %s", lverr());
        return 1;
    }
    if (c.o.once) {
        int rc = open_conn(&c) < 0 ? -ENOTCONN : reconcile(&c, false);
        drop_conn(&c);
        free(c.owned);
        return rc < 0 ? 1 : 0;
    }
    int rc = serve(&c);
    free(c.owned);
    return rc;
}
