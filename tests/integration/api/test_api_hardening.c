/* Host API hardening (issue 7 findings 2, 4, 5) against a real hostd.
 *   access   - rights come from the peer's credentials: with no options only
 *              root and hostd's uid may list/read/write/register; --api-read,
 *              --api-write and --consumer NAME=WHO grant them by uid, primary
 *              or supplementary group. A NoWrite UserMode map hands the
 *              consumer a read-only fd: it cannot map it writable.
 *   queue    - a consumer that registers and never reads: guests' maps into
 *              it expire without hostd's fd count growing (queued MapInto
 *              messages are withdrawn with their fds); a burst past its queue
 *              bound fails maps with STATUS_INSUFFICIENT_RESOURCES and the
 *              consumer is disconnected; other clients and consumers work.
 *   admission - 64 unprivileged clients stalled in half a frame: a further
 *              unprivileged client gets an ErrorResponse
 *              (STATUS_INSUFFICIENT_RESOURCES), root still gets in (mdlmapctl
 *              list), the stalled ones are dropped after the frame timeout,
 *              idle clients make room for newcomers, refusals are rate-limited
 *              in the log.
 * Non-root peers come from a forked child that drops to another uid, connects
 * and hands the sockets back (SO_PEERCRED keeps the connecting process's
 * credentials). Must run as root.
 * usage: test_api_hardening HOSTD MDLMAPCTL access|queue|admission */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "rpc_session.h"
#include "usock.h"

#define PG 4096u
#define BUF_GPA (8u << 20)
#define NOBODY 65534u
#define OTHER 65533u
#define MAP_NOWRITE 0x80000000u

static uint64_t next_id = 1;
static const char *api;

/* ---- guest side: RPC over the harness's vsock ---- */

/* The next response's status, or -1 (kept in *keep if asked). */
static int g_status(struct rpc_session *c, int timeout_ms, mdl_envelope **keep)
{
    mdl_envelope *r = NULL;
    int st = rpc_wait(c, &r, timeout_ms) == 1 ? r->status : -1;
    if (keep)
        *keep = r;
    else
        frame_envelope_free(r);
    return st;
}

static int g_lock(struct rpc_session *c, uint64_t gpa, uint64_t *h)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__LockRequest rq = MDLMAP__V1__LOCK_REQUEST__INIT;
    uint64_t pfn = gpa / PG;
    rq.byte_count = PG;
    rq.pfns = &pfn;
    rq.n_pfns = 1;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK;
    env.lock = &rq;
    int st = rpc_send(c, &env) < 0 ? -1 : g_status(c, 20000, &r);
    if (st == 0)
        *h = r->lock_reply->mdl_handle;
    frame_envelope_free(r);
    return st;
}

static int g_send_map(struct rpc_session *c, uint64_t mdl, const char *consumer, uint32_t flags)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.mdl_handle = mdl;
    rq.access_mode = MDLMAP__V1__ACCESS_MODE__USER_MODE;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = 16 | flags;
    rq.consumer = (char *)consumer;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP;
    env.map = &rq;
    return rpc_send(c, &env);
}

/* A guest RPC session as root's programs open one (a privileged port). */
static struct rpc_session *g_connect(struct vdev *d)
{
    struct rpc_session *c = calloc(1, sizeof(*c));
    if (c && !rpc_open(c, d)) {
        free(c);
        c = NULL;
    }
    return c;
}

static void g_close(struct rpc_session *c)
{
    if (c)
        rpc_close(c);
    free(c);
}

/* ---- host side ---- */

static void set_timeout(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Send one request on fd; the response's status (-1: none). */
static int h_call(int fd, mdl_envelope *env, mdl_envelope **keep)
{
    mdl_envelope *r = NULL;
    env->version = 1;
    env->request_id = next_id++;
    set_timeout(fd, 5000);
    if (frame_write_fd(fd, env) < 0 || frame_read_fd(fd, &r) < 0)
        return -1;
    int st = r->request_id == env->request_id ? r->status : -1;
    if (keep)
        *keep = r;
    else
        frame_envelope_free(r);
    return st;
}

static int h_list(int fd)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListMappingsRequest rq = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
    env.list = &rq;
    return h_call(fd, &env, NULL);
}

static int h_write(int fd)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__WriteRequest rq = MDLMAP__V1__WRITE_REQUEST__INIT;
    rq.map_handle = 0x1234;
    rq.data.data = (uint8_t *)"x";
    rq.data.len = 1;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
    env.write = &rq;
    return h_call(fd, &env, NULL);
}

static int h_register(int fd, const char *name)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__RegisterConsumerRequest rq = MDLMAP__V1__REGISTER_CONSUMER_REQUEST__INIT;
    rq.name = (char *)name;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_REGISTER_CONSUMER;
    env.register_consumer = &rq;
    return h_call(fd, &env, NULL);
}

/* Connect n sockets to the host API as uid/gid (plus supplementary group
 * sup if nonzero), each sending the first len bytes of data; the sockets
 * come back to this process. Returns how many arrived. */
static unsigned connect_as(uid_t uid, gid_t gid, gid_t sup, const void *data, size_t len, int *fds, unsigned n)
{
    int sv[2];
    if (n > USOCK_MAX_FDS || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        if (setgroups(sup ? 1 : 0, &sup) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
            _exit(1);
        int mine[USOCK_MAX_FDS];
        for (unsigned i = 0; i < n; i++) {
            mine[i] = usock_connect(api, 0);
            if (mine[i] < 0 || (len && write(mine[i], data, len) != (ssize_t)len))
                _exit(2);
        }
        char one = 1;
        _exit(usock_send(sv[1], &one, 1, mine, n, 0) == 1 ? 0 : 3);
    }
    close(sv[1]);
    struct usock_fds got = { .n = 0 };
    char one;
    set_timeout(sv[0], 10000);
    long r = pid > 0 ? usock_recv(sv[0], &one, 1, &got, 0) : -1;
    close(sv[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    unsigned k = r == 1 ? got.n : 0;
    for (unsigned i = 0; i < k; i++)
        fds[i] = got.fd[i];
    if (r != 1)
        usock_fds_close(&got);
    return k;
}

static int connect1_as(uid_t uid, gid_t gid, gid_t sup)
{
    int fd = -1;
    return connect_as(uid, gid, sup, NULL, 0, &fd, 1) == 1 ? fd : -1;
}

/* What hostd sent before closing fd: the status of an unsolicited error
 * (request id 0), or -1; *closed: EOF seen within ms. */
static int h_final(int fd, int ms, bool *closed)
{
    int st = -1;
    *closed = false;
    set_timeout(fd, ms);
    for (;;) {
        mdl_envelope *r = NULL;
        int rc = frame_read_fd(fd, &r);
        if (rc < 0) {
            *closed = rc == -ECONNRESET;
            return st;
        }
        if (r->request_id == 0 && r->body_case == MDLMAP__V1__ENVELOPE__BODY_ERROR_REPLY)
            st = r->status;
        frame_envelope_free(r);
    }
}

static unsigned count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    unsigned n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
}

static void start_hostd(struct hd_proc *p, const char *bin, unsigned nvms, const char *const *opts)
{
    const char *extra[24] = { "--api", api };
    for (unsigned i = 0; opts[i] && i < 20; i++)
        extra[2 + i] = opts[i];
    uint64_t cids[3] = { 3, 4, 5 };
    start_or_die(p, bin, nvms, cids, extra);
    /* non-root peers must reach the socket: the test opens it to everyone,
     * so that the rights below, not the file mode, decide */
    chmod(api, 0666);
}

#define ST(x) MDLMAP__V1__NT_STATUS__STATUS_##x

/* ---- finding 2 ---- */

static void access_defaults(const char *bin)
{
    struct hd_proc p;
    const char *none[] = { NULL };
    start_hostd(&p, bin, 1, none);
    int fd = connect1_as(NOBODY, NOBODY, 0);
    int st_list = h_list(fd), st_write = h_write(fd), st_reg = h_register(fd, "thief");
    tap_check(st_list == ST(ACCESS_DENIED) && st_write == ST(ACCESS_DENIED) && st_reg == ST(ACCESS_DENIED),
              "no options: uid %u is refused list (%s), write (%s), consumer registration (%s)", NOBODY,
              ntstatus_name(st_list), ntstatus_name(st_write), ntstatus_name(st_reg));
    close(fd);
    fd = usock_connect(api, 0);
    st_list = h_list(fd);
    st_reg = h_register(fd, "thief");
    tap_check(st_list == 0 && st_reg == 0, "no options: root lists (%s) and registers any name (%s)",
              ntstatus_name(st_list), ntstatus_name(st_reg));
    close(fd);
    stop_and_check(&p);
}

/* Receive the next MapInto on a raw consumer socket: its runs, its fds. */
static mdl_envelope *await_map_into(int fd, struct usock_fds *fds, int ms)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    for (long long end = now_ms() + ms; now_ms() < end;) {
        if (poll(&pf, 1, 10) == 1) {
            mdl_envelope *r = NULL;
            if (frame_read_fd_fds(fd, &r, fds) < 0)
                return NULL;
            if (r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_INTO)
                return r;
            frame_envelope_free(r);
            usock_fds_close(fds);
        }
        vdev_poll();
    }
    return NULL;
}

static void answer_map_into(int fd, const mdl_envelope *mi, uint64_t base)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__MapIntoResponse rp = MDLMAP__V1__MAP_INTO_RESPONSE__INIT;
    rp.base_address = base;
    env.version = 1;
    env.request_id = mi->request_id;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_INTO_REPLY;
    env.map_into_reply = &rp;
    frame_write_fd(fd, &env);
}

/* The guest maps a one-page MDL UserMode (NoWrite if flags) into the raw
 * consumer cfd. Checks the fd's access mode; returns the guest's status. */
static int map_and_inspect(struct rpc_session *c, int cfd, uint64_t mdl, uint32_t flags, const uint8_t *secret)
{
    bool ro = flags & MAP_NOWRITE;
    struct usock_fds fds = { .n = 0 };
    if (g_send_map(c, mdl, "ro", flags) < 0)
        return -1;
    mdl_envelope *mi = await_map_into(cfd, &fds, 5000);
    if (!tap_check(mi && fds.n == 1 && mi->map_into->n_runs == 1 && mi->map_into->read_only == ro,
                   "%s map: MapInto with one run and one fd", ro ? "NoWrite" : "writable")) {
        frame_envelope_free(mi);
        usock_fds_close(&fds);
        return -1;
    }
    const Mdlmap__V1__MapIntoRun *run = mi->map_into->runs[0];
    int fd = fds.fd[0];
    int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
    off_t region = lseek(fd, 0, SEEK_END);
    void *w = mmap(NULL, (size_t)region, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int werr = w == MAP_FAILED ? errno : 0;
    if (w != MAP_FAILED)
        munmap(w, (size_t)region);
    uint8_t *r = mmap(NULL, run->length, PROT_READ, MAP_SHARED, fd, (off_t)run->fd_offset);
    if (ro) {
        tap_check(acc == O_RDONLY, "NoWrite: the consumer's fd is open read-only (access mode %d)", acc);
        tap_check(werr == EACCES, "NoWrite: mapping the region PROT_WRITE fails (%s)", strerror(werr));
        tap_check(r != MAP_FAILED && mprotect(r, run->length, PROT_READ | PROT_WRITE) < 0 && errno == EACCES,
                  "NoWrite: a read-only view cannot be made writable (mprotect)");
    } else {
        tap_check(acc == O_RDWR && werr == 0, "writable map: the fd is read-write, as before");
    }
    tap_check(r != MAP_FAILED && memcmp(r, secret, 16) == 0, "%s map: the consumer reads the guest's page",
              ro ? "NoWrite" : "writable");
    answer_map_into(cfd, mi, (uint64_t)(uintptr_t)r);
    int st = g_status(c, 10000, NULL);
    frame_envelope_free(mi);
    usock_fds_close(&fds);
    return st;
}

static void access_rules(const char *bin)
{
    struct hd_proc p;
    const char *opts[] = { "--api-read", "user:65534", "--api-write", "group:4243",
                           "--consumer", "view=user:65534", "--consumer", "grp=group:65534",
                           "--consumer", "sup=group:4242", NULL };
    start_hostd(&p, bin, 1, opts);
    int fd = connect1_as(NOBODY, NOBODY, 0);
    int st_list = h_list(fd), st_write = h_write(fd);
    tap_check(st_list == 0 && st_write == ST(ACCESS_DENIED), "--api-read user:%u: list %s, write %s", NOBODY,
              ntstatus_name(st_list), ntstatus_name(st_write));
    int st_other = h_register(fd, "notmine"), st_view = h_register(fd, "view");
    tap_check(st_other == ST(ACCESS_DENIED) && st_view == 0,
              "--consumer view=user:%u: it may not register 'notmine' (%s) but may register 'view' (%s)", NOBODY,
              ntstatus_name(st_other), ntstatus_name(st_view));
    close(fd);
    fd = connect1_as(OTHER, OTHER, 0);
    st_list = h_list(fd);
    int st_reg = h_register(fd, "grp");
    tap_check(st_list == ST(ACCESS_DENIED) && st_reg == ST(ACCESS_DENIED),
              "uid %u: list %s, register 'grp' %s", OTHER, ntstatus_name(st_list), ntstatus_name(st_reg));
    close(fd);
    fd = connect1_as(OTHER, NOBODY, 0);
    st_reg = h_register(fd, "grp");
    tap_check(st_reg == 0, "primary group %u may register 'grp': %s", NOBODY, ntstatus_name(st_reg));
    close(fd);
    fd = connect1_as(OTHER, OTHER, 4242);
    st_reg = h_register(fd, "sup");
    tap_check(st_reg == 0, "supplementary group 4242 may register 'sup': %s", ntstatus_name(st_reg));
    close(fd);
    fd = connect1_as(OTHER, OTHER, 4243);
    st_list = h_list(fd);
    st_write = h_write(fd);
    tap_check(st_list == 0 && st_write == ST(INVALID_HANDLE), "--api-write group:4243: list %s, write %s (allowed)",
              ntstatus_name(st_list), ntstatus_name(st_write));
    close(fd);

    /* NoWrite: the consumer gets a read-only file description */
    struct vdev *d = vdev_alloc();
    struct guest_opts o;
    guest_default_opts(&o);
    struct rpc_session *c = up_or_report(d, &p, 0, &o, "access") ? g_connect(d) : NULL;
    int cfd = usock_connect(api, 0);
    uint64_t mdl = 0;
    if (tap_check(c && cfd >= 0 && h_register(cfd, "ro") == 0 && g_lock(c, BUF_GPA, &mdl) == 0,
                  "guest connects and locks a page; root consumer 'ro' registers")) {
        uint8_t *g = gm_ptr(&d->g.gm, BUF_GPA, PG);
        memcpy(g, "SECRET-OF-GUEST!", 16);
        int st = map_and_inspect(c, cfd, mdl, MAP_NOWRITE, g);
        tap_check(st == 0, "NoWrite UserMode map completes: %s", ntstatus_name(st));
        st = map_and_inspect(c, cfd, mdl, 0, g);
        tap_check(st == 0, "writable UserMode map completes: %s", ntstatus_name(st));
    }
    if (cfd >= 0)
        close(cfd);
    if (c)
        g_close(c);
    vdev_down(d);
    free(d);
    stop_and_check(&p);
}

/* ---- finding 4 ---- */

#define Q_CONNS 16
#define Q_BURST 80
#define Q_VMS 3
#define Q_TIMEOUT_MS 300

/* Each of conns[0..n) sends per maps into consumer; all answers are read.
 * Counts answers by status; tracks hostd's peak fd count. */
static void map_round(struct rpc_session **conns, const uint64_t *mdls, unsigned n, unsigned per, const char *consumer,
                      unsigned *timeouts, unsigned *full, unsigned *other, pid_t pid, unsigned *peak)
{
    for (unsigned i = 0; i < n; i++)
        for (unsigned k = 0; k < per; k++)
            g_send_map(conns[i], mdls[i], consumer, 0);
    /* while the maps wait for the consumer (the timeout is longer) */
    for (long long end = now_ms() + Q_TIMEOUT_MS / 2; now_ms() < end; usleep(5000)) {
        vdev_poll();
        unsigned fds = count_fds(pid);
        if (fds > *peak)
            *peak = fds;
    }
    for (unsigned i = 0; i < n; i++)
        for (unsigned k = 0; k < per; k++) {
            int st = g_status(conns[i], 20000, NULL);
            unsigned fds = count_fds(pid);
            if (fds > *peak)
                *peak = fds;
            if (st == ST(DEVICE_NOT_READY))
                (*timeouts)++;
            else if (st == ST(INSUFFICIENT_RESOURCES))
                (*full)++;
            else
                (*other)++;
        }
}

static pid_t spawn_ctl(const char *ctl, const char *out, const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        const char *argv[12] = { ctl, "--api", api };
        for (int i = 0; args[i] && i < 8; i++)
            argv[3 + i] = args[i];
        execv(ctl, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void consumer_queue(const char *bin, const char *ctl, const char *dir)
{
    struct hd_proc p;
    char tmo[16];
    snprintf(tmo, sizeof(tmo), "%u", Q_TIMEOUT_MS);
    const char *opts[] = { "--consumer-timeout-ms", tmo, NULL };
    start_hostd(&p, bin, Q_VMS, opts);
    int stall = usock_connect(api, 0);
    tap_check(stall >= 0 && h_register(stall, "stall") == 0, "consumer 'stall' registers (and never reads)");
    char out[200];
    snprintf(out, sizeof(out), "%s/good.out", dir);
    const char *good_args[] = { "consume", "--exit-after", "1", "good", NULL };
    pid_t good = spawn_ctl(ctl, out, good_args);
    tap_check(file_has(out, "CONSUMER REGISTERED name=good", 5000), "a healthy consumer 'good' registers");

    /* the harness has VC_MAX_CONNS (32) connections per guest: the burst
     * comes from three VMs, which also shows the others served throughout */
    struct vdev *d[Q_VMS];
    struct guest_opts o;
    guest_default_opts(&o);
    struct rpc_session *conns[Q_BURST] = { NULL };
    uint64_t mdls[Q_BURST];
    unsigned ok = 0, up = 0;
    for (unsigned v = 0; v < Q_VMS; v++) {
        d[v] = vdev_alloc();
        up += up_or_report(d[v], &p, v, &o, "queue");
    }
    for (unsigned i = 0; up == Q_VMS && i < Q_BURST; i++)
        if ((conns[i] = g_connect(d[i / 32])) && g_lock(conns[i], BUF_GPA + i * PG, &mdls[i]) == 0)
            ok++;
    if (!tap_check(ok == Q_BURST, "guests of %u VMs open %u RPC connections, each locks a page", Q_VMS, ok))
        goto out;
    unsigned base = count_fds(p.pid), peak = base, timeouts = 0, full = 0, other = 0;
    /* repeated maps that expire, fewer at a time than the queue's bound: the
     * kernel's socket buffer fills first, then every expired map used to
     * leave its fd in hostd */
    for (unsigned round = 0; round < 4; round++)
        map_round(conns, mdls, Q_CONNS, 4, "stall", &timeouts, &full, &other, p.pid, &peak);
    tap_check(timeouts == Q_CONNS * 16 && full == 0 && other == 0,
              "%u maps into 'stall' expired (STATUS_DEVICE_NOT_READY; %u refused, %u other)", timeouts, full, other);
    tap_check(peak <= base + Q_CONNS + 4, "hostd's fds stay bounded while maps expire: %u at start, peak %u", base,
              peak);
    unsigned after = count_fds(p.pid);
    tap_check(after <= base + 2, "expired maps leave no fds behind: %u -> %u", base, after);

    /* a burst past the bound: maps fail at once, the consumer is dropped */
    timeouts = full = other = 0;
    map_round(conns, mdls, Q_BURST, 1, "stall", &timeouts, &full, &other, p.pid, &peak);
    tap_check(full > 0 && timeouts + full == Q_BURST,
              "a burst of %u maps: %u refused (STATUS_INSUFFICIENT_RESOURCES), %u expired, %u other", Q_BURST, full,
              timeouts, other);
    tap_check(peak <= base + 64 + 8, "hostd's fds never pass the queue bound (64 fds): peak %u, start %u", peak,
              base);
    /* what the kernel still holds for it is readable, then the close */
    unsigned pushed = 0;
    bool closed = false;
    set_timeout(stall, 5000);
    for (;;) {
        mdl_envelope *r = NULL;
        int rc = frame_read_fd(stall, &r);
        if (rc < 0) {
            closed = rc == -ECONNRESET;
            break;
        }
        pushed += r->body_case == MDLMAP__V1__ENVELOPE__BODY_MAP_INTO;
        frame_envelope_free(r);
    }
    tap_check(closed, "hostd disconnected the stalled consumer (it had %u MapInto in its socket)", pushed);
    g_send_map(conns[0], mdls[0], "stall", 0);
    int st = g_status(conns[0], 5000, NULL);
    tap_check(st == ST(NOT_FOUND), "maps into 'stall' now fail at once: %s", ntstatus_name(st));
    tap_check(hd_log_count(&p, "disconnecting it") == 1, "the disconnect is logged");
    after = count_fds(p.pid);
    tap_check(after < base, "hostd's fds back below the start: %u -> %u", base, after);
    /* everyone else is still served */
    g_send_map(conns[70], mdls[70], "good", 0);
    st = g_status(conns[70], 5000, NULL);
    tap_check(st == 0 && file_has(out, "CONSUMER SAW", 3000), "a map into 'good' still works: %s",
              ntstatus_name(st));
    int fd = usock_connect(api, 0);
    st = h_list(fd);
    tap_check(st == 0, "host API list still answered: %s", ntstatus_name(st));
    close(fd);
out:
    for (unsigned i = 0; i < Q_BURST; i++)
        if (conns[i])
            g_close(conns[i]);
    for (unsigned v = 0; v < Q_VMS; v++) {
        vdev_down(d[v]);
        free(d[v]);
    }
    kill(good, SIGKILL);
    waitpid(good, NULL, 0);
    close(stall);
    stop_and_check(&p);
    unlink(out);
}

/* ---- finding 5 ---- */

#define A_TIMEOUT_MS 1500

static void admission(const char *bin, const char *ctl)
{
    struct hd_proc p;
    char tmo[16];
    snprintf(tmo, sizeof(tmo), "%u", A_TIMEOUT_MS);
    const char *opts[] = { "--api-frame-timeout-ms", tmo, "--api-read", "user:65534", NULL };
    start_hostd(&p, bin, 1, opts);
    /* half a frame: a header announcing 100 bytes, then 10 of them */
    uint8_t half[14] = { 100, 0, 0, 0 };
    int stalled[64];
    unsigned n = connect_as(NOBODY, NOBODY, 0, half, sizeof(half), stalled, 64);
    long long t0 = now_ms();
    tap_check(n == 64, "uid %u opens %u connections, each stalls in half a frame", NOBODY, n);
    usleep(200000);
    int fd = connect1_as(NOBODY, NOBODY, 0);
    bool closed;
    int st = h_final(fd, 3000, &closed);
    tap_check(st == ST(INSUFFICIENT_RESOURCES) && closed,
              "one more unprivileged client: ErrorResponse %s, then closed", ntstatus_name(st));
    close(fd);
    for (int i = 0; i < 20; i++) { /* refusals in a burst */
        fd = connect1_as(NOBODY, NOBODY, 0);
        h_final(fd, 500, &closed);
        close(fd);
    }
    unsigned refusals = hd_log_count(&p, "api: refusing");
    tap_check(refusals >= 1 && refusals <= 10, "21 refusals, %u logged (rate-limited)", refusals);

    char out[200];
    snprintf(out, sizeof(out), "%s/list.out", p.dir);
    const char *list_args[] = { "list", NULL };
    pid_t pid = spawn_ctl(ctl, out, list_args);
    int ws = -1;
    waitpid(pid, &ws, 0);
    tap_check(WIFEXITED(ws) && WEXITSTATUS(ws) == 0 && file_has(out, "mappings", 100),
              "root's mdlmapctl list still works with the limit full of stalled clients");
    int cfd = usock_connect(api, 0);
    st = h_register(cfd, "adm");
    tap_check(st == 0, "root registers a consumer with the limit full: %s", ntstatus_name(st));

    /* the stalled ones are dropped when their frame does not complete */
    unsigned dropped = 0, timed = 0;
    long long deadline = t0 + A_TIMEOUT_MS + 3000;
    for (unsigned i = 0; i < n; i++) {
        long long left = deadline - now_ms();
        st = h_final(stalled[i], left > 1 ? (int)left : 1, &closed);
        dropped += closed;
        timed += closed && st == ST(DEVICE_NOT_READY);
        close(stalled[i]);
    }
    long long took = now_ms() - t0;
    tap_check(dropped == n && timed >= n - 2 && took >= A_TIMEOUT_MS - 100,
              "all %u stalled clients were closed (%u with the timeout's error, %u made room for root), after %lld ms",
              dropped, timed, n - timed, took);
    tap_check(hd_log_count(&p, "did not complete") <= 10, "the drops are rate-limited in the log (%u lines)",
              hd_log_count(&p, "did not complete"));
    fd = connect1_as(NOBODY, NOBODY, 0);
    st = h_list(fd);
    tap_check(st == 0, "an unprivileged client is served again: list %s", ntstatus_name(st));
    close(fd);

    /* idle clients make room: the least recently active goes first */
    int idle[64];
    unsigned m = connect_as(NOBODY, NOBODY, 0, NULL, 0, idle, 62); /* + root's consumer 'adm' + fd below */
    fd = connect1_as(NOBODY, NOBODY, 0);
    usleep(100000);
    int newer = connect1_as(NOBODY, NOBODY, 0);
    st = h_list(newer);
    tap_check(m == 62 && st == 0, "at the limit (%u idle clients), a newcomer is served: %s", m + 2,
              ntstatus_name(st));
    st = h_final(idle[0], 2000, &closed);
    tap_check(closed && st == ST(INSUFFICIENT_RESOURCES), "the oldest idle client made room (%s)",
              ntstatus_name(st));
    close(newer);
    close(fd);
    for (unsigned i = 0; i < m; i++)
        close(idle[i]);
    close(cfd);
    tap_check(hd_alive(&p), "hostd still running");
    if (tap_failures)
        hd_log_tail(&p, 30);
    stop_and_check(&p);
    unlink(out);
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    const char *ctl = argc > 2 ? argv[2] : NULL, *mode = argc > 3 ? argv[3] : NULL;
    if (!ctl || !mode) {
        fprintf(stderr, "usage: %s HOSTD MDLMAPCTL access|queue|admission\n", argv[0]);
        return 2;
    }
    if (geteuid() != 0) {
        printf("1..0 # SKIP needs root (it connects as other uids)\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/mdl-apih.XXXXXX", path[160];
    if (!mkdtemp(dir))
        return 2;
    chmod(dir, 0755);
    snprintf(path, sizeof(path), "%s/api.sock", dir);
    api = path;
    if (!strcmp(mode, "access")) {
        access_defaults(bin);
        access_rules(bin);
    } else if (!strcmp(mode, "queue")) {
        consumer_queue(bin, ctl, dir);
    } else if (!strcmp(mode, "admission")) {
        admission(bin, ctl);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    unlink(path);
    rmdir(dir);
    return tap_done();
}
