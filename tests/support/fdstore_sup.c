/* fdstore-sup: a tiny stand-in for systemd's service manager, as far as
 * hostd's restarts need it. It runs PROGRAM with $NOTIFY_SOCKET pointing at
 * its own datagram socket, keeps the descriptors the program sends with
 * "FDSTORE=1" / "FDNAME=" (and forgets them on "FDSTOREREMOVE=1"), and
 * whenever the program exits (SIGTERM, SIGKILL, crash) starts it again
 * with them as $LISTEN_FDS / $LISTEN_FDNAMES / $LISTEN_PID (the child's own
 * pid, set after fork), as Restart=always with FileDescriptorStoreMax= does.
 *
 *   fdstore-sup --pidfile F [--list F] -- PROGRAM ARGS...
 *
 * --pidfile: the running child's pid (rewritten at each start);
 * --list: one "name" line per stored descriptor (rewritten on each change).
 * SIGTERM/SIGINT: stop the child with SIGTERM, wait, exit 0 when every
 * child that exited on its own or by SIGTERM exited 0 (LeakSanitizer and
 * ASan make hostd exit nonzero), else 1. Messages from other pids than the
 * child's are ignored (NotifyAccess=main). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_STORED 4096
#define FD_BASE 1024   /* stored fds live here and above, out of the child's way */

struct stored {
    char name[256];
    int fd;
};

static struct stored store[MAX_STORED];
static unsigned nstored;
static const char *list_path, *pid_path;

/* Replace path's contents at once (readers never see half a file). */
static FILE *begin_write(const char *path, char tmp[512])
{
    if (!path)
        return NULL;
    snprintf(tmp, 512, "%s.tmp", path);
    return fopen(tmp, "w");
}

static void end_write(FILE *f, const char *tmp, const char *path)
{
    if (!f)
        return;
    fclose(f);
    rename(tmp, path);
}

static void write_list(void)
{
    char tmp[512];
    FILE *f = begin_write(list_path, tmp);
    for (unsigned i = 0; f && i < nstored; i++)
        fprintf(f, "%s\n", store[i].name);
    end_write(f, tmp, list_path);
}

static void drop_name(const char *name)
{
    for (unsigned i = 0; i < nstored;) {
        if (!strcmp(store[i].name, name)) {
            close(store[i].fd);
            store[i] = store[--nstored];
        } else {
            i++;
        }
    }
}

static const char *field(const char *msg, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = msg; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            size_t l = strcspn(p + kl + 1, "\n");
            if (l >= cap)
                l = cap - 1;
            memcpy(out, p + kl + 1, l);
            out[l] = 0;
            return out;
        }
    }
    return NULL;
}

static void on_notify(int sock, pid_t child)
{
    char buf[4096];
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 64) + CMSG_SPACE(sizeof(struct ucred))];
    } c;
    struct iovec iov = { buf, sizeof(buf) - 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.b, .msg_controllen = sizeof(c.b) };
    ssize_t n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return;
    buf[n] = 0;
    int fds[64];
    unsigned nfds = 0;
    pid_t from = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
            unsigned k = (unsigned)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (unsigned i = 0; i < k && nfds < 64; i++)
                memcpy(&fds[nfds++], CMSG_DATA(h) + i * sizeof(int), sizeof(int));
        } else if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_CREDENTIALS) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(h), sizeof(u));
            from = u.pid;
        }
    }
    char name[256] = "stored", v[8];
    bool ok = from == child;
    if (!ok)
        fprintf(stderr, "fdstore-sup: message from pid %d (child %d) ignored\n", (int)from, (int)child);
    if (ok && field(buf, "FDSTOREREMOVE", v, sizeof(v)) && !strcmp(v, "1") && field(buf, "FDNAME", name, sizeof(name)))
        drop_name(name);
    if (ok && field(buf, "FDSTORE", v, sizeof(v)) && !strcmp(v, "1")) {
        field(buf, "FDNAME", name, sizeof(name));
        for (unsigned i = 0; i < nfds; i++) {
            if (nstored == MAX_STORED) {
                fprintf(stderr, "fdstore-sup: store full, %s dropped\n", name);
                break;
            }
            int hi = fcntl(fds[i], F_DUPFD_CLOEXEC, FD_BASE);
            if (hi < 0)
                break;
            snprintf(store[nstored].name, sizeof(store[nstored].name), "%s", name);
            store[nstored++].fd = hi;
        }
    }
    for (unsigned i = 0; i < nfds; i++)
        close(fds[i]);
    write_list();
}

static pid_t start(char **argv, const char *notify_path)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* stored fds are at FD_BASE and above: dup2 down cannot hit one */
    for (unsigned i = 0; i < nstored; i++)
        if (dup2(store[i].fd, 3 + (int)i) < 0)
            _exit(126);
    static char names[MAX_STORED * 257 + 1];
    size_t off = 0;
    for (unsigned i = 0; i < nstored; i++)
        off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", i ? ":" : "", store[i].name);
    char num[32];
    snprintf(num, sizeof(num), "%u", nstored);
    setenv("NOTIFY_SOCKET", notify_path, 1);
    if (nstored) {
        setenv("LISTEN_FDS", num, 1);
        setenv("LISTEN_FDNAMES", names, 1);
        snprintf(num, sizeof(num), "%d", (int)getpid());
        setenv("LISTEN_PID", num, 1);
    }
    execv(argv[0], argv);
    fprintf(stderr, "fdstore-sup: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static void write_pid(pid_t pid)
{
    char tmp[512];
    FILE *f = begin_write(pid_path, tmp);
    if (f)
        fprintf(f, "%d\n", (int)pid);
    end_write(f, tmp, pid_path);
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--pidfile") && i + 1 < argc)
            pid_path = argv[++i];
        else if (!strcmp(argv[i], "--list") && i + 1 < argc)
            list_path = argv[++i];
        else {
            fprintf(stderr, "usage: fdstore-sup --pidfile F [--list F] -- PROGRAM ARGS...\n");
            return 2;
        }
    }
    if (i + 1 >= argc || !pid_path) {
        fprintf(stderr, "usage: fdstore-sup --pidfile F [--list F] -- PROGRAM ARGS...\n");
        return 2;
    }
    char **child_argv = argv + i + 1;
    char notify_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(notify_path, sizeof(notify_path), "%s.notify", pid_path);
    unlink(notify_path);
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", notify_path);
    int one = 1;
    if (sock < 0 || bind(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
        perror("fdstore-sup: notify socket");
        return 1;
    }
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGCHLD);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    int sfd = signalfd(-1, &ss, SFD_CLOEXEC);

    bool stopping = false, bad = false;
    unsigned starts = 0;
    pid_t child = start(child_argv, notify_path);
    write_pid(child);
    fprintf(stderr, "fdstore-sup: start %u: pid %d with %u stored fds\n", ++starts, (int)child, 0u);
    while (child > 0) {
        struct pollfd p[2] = { { sock, POLLIN, 0 }, { sfd, POLLIN, 0 } };
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents & POLLIN)
            on_notify(sock, child);
        if (!(p[1].revents & POLLIN))
            continue;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
            continue;
        if (si.ssi_signo != SIGCHLD) {
            stopping = true;
            kill(child, SIGTERM);
            continue;
        }
        int st;
        pid_t w;
        while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
            if (w != child)
                continue;
            /* drain what the child sent before it went */
            while (recv(sock, NULL, 0, MSG_PEEK | MSG_DONTWAIT) >= 0)
                on_notify(sock, child);
            bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
            if (!killed && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                bad = true;
                fprintf(stderr, "fdstore-sup: pid %d ended badly (status 0x%x)\n", (int)w, st);
            }
            if (stopping) {
                child = 0;
                break;
            }
            child = start(child_argv, notify_path);
            write_pid(child);
            fprintf(stderr, "fdstore-sup: start %u: pid %d with %u stored fds\n", ++starts, (int)child, nstored);
        }
    }
    for (unsigned k = 0; k < nstored; k++)
        close(store[k].fd);
    unlink(notify_path);
    return bad ? 1 : 0;
}
