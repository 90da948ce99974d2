/* vhost-user frontend harness: hostd process control, vhost-user messages, guest RAM. */
#include "vu_frontend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ================================================================ hostd */

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, needle)) {
            found = true;
            break;
        }
    }
    fclose(f);
    return found;
}

const char *hd_describe_exit(struct hd_proc *p, char *buf, size_t len)
{
    if (!p->reaped)
        snprintf(buf, len, "running");
    else if (WIFEXITED(p->status))
        snprintf(buf, len, "exited %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(p->status));
    else
        snprintf(buf, len, "status 0x%x", p->status);
    return buf;
}

void hd_log_tail(const struct hd_proc *p, int lines)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return;
    /* keep a ring of the last `lines` lines */
    enum { MAXL = 200 };
    static char ring[MAXL][512];
    if (lines > MAXL)
        lines = MAXL;
    long n = 0;
    while (fgets(ring[n % lines], sizeof(ring[0]), f))
        n++;
    fclose(f);
    long start = n > lines ? n - lines : 0;
    tap_diag("---- hostd log (last %ld lines of %s) ----", n - start, p->log);
    for (long i = start; i < n; i++) {
        char *l = ring[i % lines];
        l[strcspn(l, "\n")] = 0;
        tap_diag("  %s", l);
    }
}

bool hd_alive(struct hd_proc *p)
{
    if (p->pid <= 0 || p->reaped)
        return false;
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        p->status = st;
        p->reaped = true;
        return false;
    }
    return true;
}

static void hd_cleanup_dir(struct hd_proc *p)
{
    for (unsigned i = 0; p->vm && i < p->nvms; i++)
        unlink(p->vm[i].sock);
    if (p->log[0])
        unlink(p->log);
    if (p->dir[0])
        rmdir(p->dir);
    /* a small table stays readable after the stop (tests print from it) */
    if (p->vm && p->vm != p->vm_inline) {
        free(p->vm);
        p->vm = NULL;
        p->nvms = 0;
    }
}

static const char *const *hd_wrapper;

void hd_set_wrapper(const char *const *argv)
{
    hd_wrapper = argv;
}

int hd_start(struct hd_proc *p, const char *bin, unsigned nvms, const uint64_t *cids,
             const char *const *extra)
{
    return hd_start_opts(p, bin, nvms, cids, NULL, extra);
}

int hd_start_opts(struct hd_proc *p, const char *bin, unsigned nvms, const uint64_t *cids,
                  const char *const *vm_opts, const char *const *extra)
{
    memset(p, 0, sizeof(*p));
    if (nvms > HD_MAX_VMS)
        return -EINVAL;
    snprintf(p->dir, sizeof(p->dir), "/tmp/mdlmap-harness-XXXXXX");
    if (!mkdtemp(p->dir)) {
        tap_diag("mkdtemp: %s", strerror(errno));
        return -errno;
    }
    snprintf(p->log, sizeof(p->log), "%s/hostd.log", p->dir);
    p->vm = nvms <= HD_INLINE_VMS ? p->vm_inline : calloc(nvms, sizeof(*p->vm));
    enum { SPEC = 256, ARGS = 32 };
    char (*specs)[SPEC] = malloc((size_t)(nvms ? nvms : 1) * SPEC);
    unsigned nwrap = 0;
    while (hd_wrapper && hd_wrapper[nwrap])
        nwrap++;
    const char **argv = malloc((2 * (size_t)nvms + ARGS + nwrap) * sizeof(*argv));
    if (!p->vm || !specs || !argv) {
        free(specs);
        free(argv);
        hd_cleanup_dir(p);
        return -ENOMEM;
    }
    p->nvms = nvms;
    int argc = 0;
    for (unsigned i = 0; i < nwrap; i++)
        argv[argc++] = hd_wrapper[i];
    argv[argc++] = bin;
    for (unsigned i = 0; i < nvms; i++) {
        snprintf(p->vm[i].name, sizeof(p->vm[i].name), "vm%u", i);
        p->vm[i].cid = cids[i];
        snprintf(p->vm[i].sock, sizeof(p->vm[i].sock), "%s/vm%u.sock", p->dir, i);
        const char *opt = vm_opts && vm_opts[i] ? vm_opts[i] : NULL;
        snprintf(specs[i], sizeof(specs[i]), "name=%s,cid=%llu,socket=%s%s%s", p->vm[i].name,
                 (unsigned long long)cids[i], p->vm[i].sock, opt ? "," : "", opt ? opt : "");
        argv[argc++] = "--vm";
        argv[argc++] = specs[i];
    }
    const char *dbg = getenv("MDLMAP_HARNESS_DEBUG");
    if (dbg && *dbg && strcmp(dbg, "0") != 0) {
        argv[argc++] = "--log-level";
        argv[argc++] = "debug";
    }
    for (int i = 0; extra && extra[i] && argc < 2 * (int)nvms + ARGS + (int)nwrap - 1; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        tap_diag("fork: %s", strerror(e));
        free(specs);
        free(argv);
        hd_cleanup_dir(p);
        return -e;
    }
    if (pid == 0) {
        int lf = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        /* do not leak the harness's fds (the leak checks count hostd's fds) */
        DIR *d = opendir("/proc/self/fd");
        if (d) {
            int dfd = dirfd(d);
            struct dirent *e;
            while ((e = readdir(d))) {
                int fd = atoi(e->d_name);
                if (fd > 2 && fd != dfd)
                    fcntl(fd, F_SETFD, FD_CLOEXEC);
            }
            closedir(d);
        }
        /* the harness's own service manager is not hostd's (a wrapper sets its own) */
        unsetenv("NOTIFY_SOCKET");
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "harness: execv %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    free(specs);
    free(argv);

    long long deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        if (!hd_alive(p)) {
            char b[64];
            tap_diag("hostd died during startup: %s", hd_describe_exit(p, b, sizeof(b)));
            hd_log_tail(p, 30);
            hd_cleanup_dir(p);
            return -ECHILD;
        }
        if (file_contains(p->log, "ready")) {
            bool all = true;
            for (unsigned i = 0; i < nvms; i++) {
                struct stat st;
                if (stat(p->vm[i].sock, &st) != 0 || !S_ISSOCK(st.st_mode))
                    all = false;
            }
            if (all)
                return 0;
        }
        sleep_ms(10);
    }
    tap_diag("hostd did not log \"ready\" with all sockets present within 20 s");
    hd_log_tail(p, 30);
    hd_kill(p);
    return -ETIMEDOUT;
}

unsigned hd_log_count(const struct hd_proc *p, const char *s)
{
    FILE *f = fopen(p->log, "r");
    char line[1024];
    unsigned n = 0;
    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, s) != NULL;
    if (f)
        fclose(f);
    return n;
}

void hd_kill(struct hd_proc *p)
{
    if (hd_alive(p)) {
        kill(p->pid, SIGKILL);
        int st;
        if (waitpid(p->pid, &st, 0) == p->pid) {
            p->status = st;
            p->reaped = true;
        }
    }
    hd_cleanup_dir(p);
}

int hd_stop(struct hd_proc *p)
{
    char b[64];
    if (p->pid <= 0)
        return -EINVAL;
    if (hd_alive(p))
        kill(p->pid, SIGTERM);
    long long deadline = now_ms() + 15000;
    while (hd_alive(p) && now_ms() < deadline)
        sleep_ms(10);
    if (hd_alive(p)) {
        tap_diag("hostd ignored SIGTERM for 15 s; killing it");
        hd_log_tail(p, 30);
        hd_kill(p);
        return -ETIMEDOUT;
    }
    int rc = 0;
    if (!WIFEXITED(p->status) || WEXITSTATUS(p->status) != 0) {
        tap_diag("hostd %s (LeakSanitizer/ASan report or crash?)", hd_describe_exit(p, b, sizeof(b)));
        hd_log_tail(p, 60);
        rc = -EIO;
    }
    hd_cleanup_dir(p);
    return rc;
}

#if defined(__SANITIZE_ADDRESS__)
#define HARNESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HARNESS_ASAN 1
#endif
#endif

long rss_slack_kb(void)
{
#ifdef HARNESS_ASAN
    return 256 * 1024;
#else
    return 0;
#endif
}

int proc_count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int proc_count_maps(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        if (c == '\n')
            n++;
    fclose(f);
    return n;
}

int proc_count_maps_matching(pid_t pid, const char *needle)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

int maps_slack(void)
{
    return rss_slack_kb() ? 16 : 0;
}

long proc_status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            kb = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

long proc_rss_kb(pid_t pid)
{
    return proc_status_kb(pid, "VmRSS");
}

/* ============================================================= frontend */

static int fe_fail(struct vu_fe *fe, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fe_fail(struct vu_fe *fe, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fe->err, sizeof(fe->err), fmt, ap);
    va_end(ap);
    return rc;
}

void vu_fe_init(struct vu_fe *fe)
{
    memset(fe, 0, sizeof(*fe));
    fe->fd = -1;
    fe->timeout_ms = 5000;
}

int vu_fe_connect(struct vu_fe *fe, const char *path, int timeout_ms)
{
    vu_fe_init(fe);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return fe_fail(fe, -ENAMETOOLONG, "socket path too long");
    strcpy(sa.sun_path, path);
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return fe_fail(fe, -errno, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            fe->fd = fd;
            return 0;
        }
        int e = errno;
        close(fd);
        if ((e != ECONNREFUSED && e != ENOENT && e != EAGAIN) || now_ms() >= deadline)
            return fe_fail(fe, -e, "connect %s: %s", path, strerror(e));
        sleep_ms(10);
    }
}

void vu_fe_close(struct vu_fe *fe)
{
    if (fe->fd >= 0)
        close(fe->fd);
    fe->fd = -1;
}

int vu_fe_send_raw(struct vu_fe *fe, uint32_t req, uint32_t flags, uint32_t size,
                   const void *payload, size_t payload_len, const int *fds, unsigned nfds)
{
    if (fe->fd < 0)
        return fe_fail(fe, -ENOTCONN, "not connected");
    struct vu_msg_hdr h = { req, flags, size };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, payload_len } };
    union {
        char buf[CMSG_SPACE(sizeof(int) * 64)];
        struct cmsghdr align;
    } cm;
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = payload_len ? 2 : 1 };
    if (nfds > 64)
        return fe_fail(fe, -EINVAL, "too many fds");
    if (nfds) {
        memset(&cm, 0, sizeof(cm));
        mh.msg_control = cm.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    size_t total = sizeof(h) + payload_len, done = 0;
    while (done < total) {
        ssize_t n = sendmsg(fe->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fe_fail(fe, -errno, "sendmsg(req %u): %s", req, strerror(errno));
        }
        done += (size_t)n;
        if (done >= total)
            break;
        /* partial write: continue with the rest, without fds */
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
        size_t skip = (size_t)n;
        while (mh.msg_iovlen && skip >= mh.msg_iov[0].iov_len) {
            skip -= mh.msg_iov[0].iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + skip;
            mh.msg_iov[0].iov_len -= skip;
        }
    }
    return 0;
}

static int read_full(struct vu_fe *fe, void *buf, size_t len, long long deadline)
{
    size_t got = 0;
    while (got < len) {
        int left = (int)(deadline - now_ms());
        if (left < 0)
            left = 0;
        struct pollfd pfd = { fe->fd, POLLIN, 0 };
        int r = poll(&pfd, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t n = recv(fe->fd, (char *)buf + got, len - got, 0);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return 0;
}

int vu_fe_recv(struct vu_fe *fe, struct vu_msg_hdr *hdr, void *payload, uint32_t max, int timeout_ms)
{
    if (fe->fd < 0)
        return fe_fail(fe, -ENOTCONN, "not connected");
    long long deadline = now_ms() + timeout_ms;
    int rc = read_full(fe, hdr, sizeof(*hdr), deadline);
    if (rc == -ETIMEDOUT)
        return fe_fail(fe, rc, "no reply within %d ms", timeout_ms);
    if (rc == -ECONNRESET)
        return fe_fail(fe, rc, "backend closed the connection");
    if (rc)
        return fe_fail(fe, rc, "recv: %s", strerror(-rc));
    if (hdr->size > VHOST_USER_MAX_PAYLOAD)
        return fe_fail(fe, -EPROTO, "reply to %u has absurd size %u", hdr->request, hdr->size);
    uint8_t tmp[VHOST_USER_MAX_PAYLOAD];
    rc = read_full(fe, tmp, hdr->size, deadline);
    if (rc)
        return fe_fail(fe, rc, "reading %u payload bytes of reply to %u: %s", hdr->size,
                       hdr->request, strerror(-rc));
    memcpy(payload, tmp, hdr->size < max ? hdr->size : max);
    fe->replies++;
    return 0;
}

static int check_reply(struct vu_fe *fe, const struct vu_msg_hdr *h, uint32_t req, uint32_t size)
{
    if (h->request != req)
        return fe_fail(fe, -EPROTO, "reply is for request %u, expected %u", h->request, req);
    if (h->flags != (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK))
        return fe_fail(fe, -EPROTO, "reply to %u has flags 0x%x, expected 0x5", req, h->flags);
    if (h->size != size)
        return fe_fail(fe, -EPROTO, "reply to %u has size %u, expected %u", req, h->size, size);
    return 0;
}

int vu_fe_call(struct vu_fe *fe, uint32_t req, const void *payload, uint32_t size,
               void *reply, uint32_t reply_size)
{
    int rc = vu_fe_send_raw(fe, req, VHOST_USER_VERSION, size, payload, size, NULL, 0);
    if (rc)
        return rc;
    struct vu_msg_hdr h;
    uint8_t buf[VHOST_USER_MAX_PAYLOAD];
    rc = vu_fe_recv(fe, &h, buf, sizeof(buf), fe->timeout_ms);
    if (rc)
        return rc;
    rc = check_reply(fe, &h, req, reply_size);
    if (rc)
        return rc;
    memcpy(reply, buf, reply_size);
    return 0;
}

int vu_fe_req(struct vu_fe *fe, uint32_t req, const void *payload, uint32_t size,
              const int *fds, unsigned nfds)
{
    bool ack = fe->need_reply && !vu_request_has_reply(req);
    uint32_t flags = VHOST_USER_VERSION | (ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    int rc = vu_fe_send_raw(fe, req, flags, size, payload, size, fds, nfds);
    if (rc || !ack)
        return rc;
    struct vu_msg_hdr h;
    uint64_t st = 0;
    rc = vu_fe_recv(fe, &h, &st, sizeof(st), fe->timeout_ms);
    if (rc)
        return rc;
    rc = check_reply(fe, &h, req, 8);
    if (rc)
        return rc;
    fe->last_ack = st;
    if (st != 0)
        return fe_fail(fe, -EREMOTEIO, "backend NACKed request %u (status %llu)", req,
                       (unsigned long long)st);
    return 0;
}

int vu_fe_get_u64(struct vu_fe *fe, uint32_t req, uint64_t *out)
{
    return vu_fe_call(fe, req, NULL, 0, out, sizeof(*out));
}

int vu_fe_set_u64(struct vu_fe *fe, uint32_t req, uint64_t v)
{
    return vu_fe_req(fe, req, &v, sizeof(v), NULL, 0);
}

int vu_fe_vring_state(struct vu_fe *fe, uint32_t req, uint32_t index, uint32_t num)
{
    struct vu_vring_state s = { index, num };
    return vu_fe_req(fe, req, &s, sizeof(s), NULL, 0);
}

int vu_fe_vring_fd(struct vu_fe *fe, uint32_t req, uint32_t index, int fd)
{
    uint64_t v = index;
    if (fd < 0)
        v |= VHOST_USER_VRING_NOFD_MASK;
    return vu_fe_req(fe, req, &v, sizeof(v), fd < 0 ? NULL : &fd, fd < 0 ? 0 : 1);
}

int vu_fe_vring_addr(struct vu_fe *fe, uint32_t index, uint64_t desc_uva, uint64_t avail_uva,
                     uint64_t used_uva)
{
    struct vu_vring_addr a = { .index = index, .flags = 0, .desc = desc_uva, .used = used_uva,
                               .avail = avail_uva, .log = 0 };
    return vu_fe_req(fe, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
}

int vu_fe_get_vring_base(struct vu_fe *fe, uint32_t index, uint32_t *num)
{
    struct vu_vring_state s = { index, 0 }, r;
    int rc = vu_fe_call(fe, VHOST_USER_GET_VRING_BASE, &s, sizeof(s), &r, sizeof(r));
    if (rc)
        return rc;
    if (r.index != index)
        return fe_fail(fe, -EPROTO, "GET_VRING_BASE reply for vq %u, asked %u", r.index, index);
    *num = r.num;
    return 0;
}

int vu_fe_get_config(struct vu_fe *fe, uint32_t offset, uint32_t size, void *out)
{
    uint8_t buf[sizeof(struct vu_config) + 256];
    if (size > 256)
        return -EINVAL;
    memset(buf, 0, sizeof(buf));
    struct vu_config *c = (struct vu_config *)buf;
    c->offset = offset;
    c->size = size;
    c->flags = 0;
    uint32_t len = (uint32_t)sizeof(struct vu_config) + size;
    uint8_t rep[sizeof(buf)];
    int rc = vu_fe_call(fe, VHOST_USER_GET_CONFIG, buf, len, rep, len);
    if (rc)
        return rc;
    struct vu_config rc_hdr;
    memcpy(&rc_hdr, rep, sizeof(rc_hdr));
    if (rc_hdr.offset != offset || rc_hdr.size != size)
        return fe_fail(fe, -EPROTO, "GET_CONFIG reply offset %u size %u, asked %u/%u",
                       rc_hdr.offset, rc_hdr.size, offset, size);
    memcpy(out, rep + sizeof(struct vu_config), size);
    return 0;
}

bool vu_fe_peer_closed(struct vu_fe *fe)
{
    if (fe->fd < 0)
        return true;
    struct pollfd pfd = { fe->fd, POLLIN | POLLRDHUP, 0 };
    if (poll(&pfd, 1, 0) <= 0)
        return false;
    if (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))
        return true;
    char c;
    ssize_t n = recv(fe->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
}

/* ============================================================ guest RAM */

int gm_create(struct guest_mem *gm, size_t size)
{
    memset(gm, 0, sizeof(*gm));
    gm->fd = memfd_create("harness-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (gm->fd < 0)
        return -errno;
    /* sealed against resizing, as QEMU's memory-backend-memfd does */
    if (ftruncate(gm->fd, (off_t)size) != 0 || fcntl(gm->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        int e = errno;
        close(gm->fd);
        return -e;
    }
    gm->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, gm->fd, 0);
    if (gm->base == MAP_FAILED) {
        int e = errno;
        close(gm->fd);
        return -e;
    }
    gm->size = size;
    gm->n = 2;
    gm->r[0] = (struct gm_region){ .gpa = 0, .size = size / 2, .foff = 0 };
    gm->r[1] = (struct gm_region){ .gpa = GM_HIGH_GPA, .size = size / 2, .foff = size / 2 };
    for (unsigned i = 0; i < gm->n; i++)
        gm->r[i].uva = GM_UVA_BASE + gm->r[i].gpa;
    return 0;
}

void gm_destroy(struct guest_mem *gm)
{
    if (gm->base && gm->base != MAP_FAILED)
        munmap(gm->base, gm->size);
    if (gm->fd >= 0)
        close(gm->fd);
    gm->base = NULL;
    gm->fd = -1;
}

void *gm_ptr(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < gm->n; i++) {
        const struct gm_region *r = &gm->r[i];
        if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
            return gm->base + r->foff + (gpa - r->gpa);
    }
    return NULL;
}

uint64_t gm_uva(const struct guest_mem *gm, uint64_t gpa)
{
    for (unsigned i = 0; i < gm->n; i++) {
        const struct gm_region *r = &gm->r[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size)
            return r->uva + (gpa - r->gpa);
    }
    return 0;
}

void gm_resplit(struct guest_mem *gm)
{
    /* low half -> two regions; keep the high one */
    struct gm_region lo = gm->r[0], hi = gm->r[gm->n - 1];
    if (gm->n != 2)
        return;
    uint64_t h = lo.size / 2;
    gm->r[0] = (struct gm_region){ lo.gpa, h, lo.uva, lo.foff };
    gm->r[1] = (struct gm_region){ lo.gpa + h, lo.size - h, lo.uva + h, lo.foff + h };
    gm->r[2] = hi;
    gm->n = 3;
}

int gm_relayout(struct guest_mem *gm)
{
    int fd = memfd_create("harness-guest-ram-2", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)gm->size) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        close(fd);
        return -errno;
    }
    uint8_t *nb = mmap(NULL, gm->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (nb == MAP_FAILED) {
        close(fd);
        return -errno;
    }
    /* new offsets: place regions in reverse order in the file */
    struct gm_region nr[GM_MAX_REGIONS];
    uint64_t off = 0;
    for (int i = (int)gm->n - 1; i >= 0; i--) {
        nr[i] = gm->r[i];
        nr[i].foff = off;
        off += gm->r[i].size;
    }
    for (unsigned i = 0; i < gm->n; i++)
        memcpy(nb + nr[i].foff, gm->base + gm->r[i].foff, gm->r[i].size);
    munmap(gm->base, gm->size);
    close(gm->fd);
    gm->fd = fd;
    gm->base = nb;
    memcpy(gm->r, nr, sizeof(nr[0]) * gm->n);
    return 0;
}

int vu_fe_set_mem_table(struct vu_fe *fe, const struct guest_mem *gm)
{
    struct vu_mem_table t;
    memset(&t, 0, sizeof(t));
    int fds[GM_MAX_REGIONS];
    t.nregions = gm->n;
    for (unsigned i = 0; i < gm->n; i++) {
        t.r[i].gpa = gm->r[i].gpa;
        t.r[i].size = gm->r[i].size;
        t.r[i].uva = gm->r[i].uva;
        t.r[i].mmap_offset = gm->r[i].foff;
        fds[i] = gm->fd;
    }
    /* QEMU sends only the used regions: 8 + n * 32 bytes */
    uint32_t size = 8 + gm->n * (uint32_t)sizeof(struct vu_region);
    return vu_fe_req(fe, VHOST_USER_SET_MEM_TABLE, &t, size, fds, gm->n);
}

int vu_fe_add_mem_regs(struct vu_fe *fe, const struct guest_mem *gm)
{
    for (unsigned i = 0; i < gm->n; i++) {
        struct vu_mem_reg m;
        memset(&m, 0, sizeof(m));
        m.r.gpa = gm->r[i].gpa;
        m.r.size = gm->r[i].size;
        m.r.uva = gm->r[i].uva;
        m.r.mmap_offset = gm->r[i].foff;
        int rc = vu_fe_req(fe, VHOST_USER_ADD_MEM_REG, &m, sizeof(m), &gm->fd, 1);
        if (rc)
            return rc;
    }
    return 0;
}
