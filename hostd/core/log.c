/* Logging to stderr, or to the journal under systemd; see log.h. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int log_threshold = LOG_INFO;

/* The journal's native protocol (systemd.journal-fields(7), "Native
 * Protocol"): one datagram per entry to journald's socket, fields as
 * NAME=value lines; a value that may hold a newline goes as NAME\n, its
 * length (le64) and the bytes. Written here rather than linking libsystemd:
 * it is a sendmsg of a few fields. Used only when stderr is the journal's
 * stream ($JOURNAL_STREAM names stderr's device:inode, as systemd sets it
 * for StandardError=journal), so a hostd run by hand keeps stderr lines.
 * The one socket is process-wide, like the log threshold. */
static int journal_fd = -2;   /* -2: not decided yet, -1: stderr */

static int journal_open(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0 ||
        (unsigned long long)st.st_dev != dev || (unsigned long long)st.st_ino != ino)
        return -1;
    /* MDLMAP_JOURNAL_SOCKET: another socket speaking the same protocol (tests) */
    const char *path = getenv("MDLMAP_JOURNAL_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path ? path : "/run/systemd/journal/socket");
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The VM a line is about: every per-VM line names it as "vm NAME" followed
 * by ':' or ' ' (names are [A-Za-z0-9._-], vm_name_valid). len 0: none. */
static size_t line_vm(const char *line, const char **name)
{
    for (const char *p = line; (p = strstr(p, "vm ")) != NULL; p += 3) {
        if (p != line && p[-1] != ' ')
            continue;
        size_t n = strspn(p + 3, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
        if (n && n < 64 && (p[3 + n] == ':' || p[3 + n] == ' ')) {
            *name = p + 3;
            return n;
        }
    }
    return 0;
}

static bool journal_send(enum log_level lvl, const char *line)
{
    static const char prio[] = { '3', '4', '6', '7' };   /* err, warning, info, debug */
    char head[128];
    const char *vm;
    size_t vmlen = line_vm(line, &vm);
    int hn = snprintf(head, sizeof(head), "PRIORITY=%c\nSYSLOG_IDENTIFIER=mdlmap-hostd\n%s%.*s%s",
                      prio[lvl], vmlen ? "MDLMAP_VM=" : "", (int)vmlen, vmlen ? vm : "", vmlen ? "\n" : "");
    uint64_t len = strlen(line);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(len >> (8 * i));
    struct iovec iov[] = {
        { head, (size_t)hn }, { (void *)"MESSAGE\n", 8 }, { le, 8 }, { (void *)line, len }, { (void *)"\n", 1 },
    };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 5 };
    return sendmsg(journal_fd, &mh, MSG_NOSIGNAL) >= 0;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    if ((int)lvl > log_threshold)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (journal_fd == -2)
        journal_fd = journal_open();
    if (journal_fd >= 0 && journal_send(lvl, line))
        return;
    fprintf(stderr, "[%5ld.%03ld] hostd %s: %s\n", (long)ts.tv_sec, ts.tv_nsec / 1000000L, names[lvl], line);
}

bool log_limit_allow(struct log_limit *l, const char *who)
{
    if (!l)
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now - l->start_ms >= LOG_LIMIT_WINDOW_MS) {
        if (l->suppressed)
            log_msg(LOG_WARN, "%s: %llu messages suppressed", who ? who : "?", (unsigned long long)l->suppressed);
        l->start_ms = now;
        l->n = 0;
        l->suppressed = 0;
    }
    if (l->n < LOG_LIMIT_BURST) {
        l->n++;
        return true;
    }
    l->suppressed++;
    return false;
}
