/* Under systemd, hostd logs to the journal in its native protocol, with the
 * VM a line is about as the field MDLMAP_VM. A real hostd is started as
 * systemd would start it: stderr is a stream whose device:inode is in
 * $JOURNAL_STREAM. The journal's socket is played by a datagram socket of
 * this test ($MDLMAP_JOURNAL_SOCKET), which parses every entry: NAME=value
 * lines and the binary form (NAME, newline, le64 length, bytes, newline).
 * Checked: the entries and their fields; nothing goes to stderr meanwhile;
 * with a $JOURNAL_STREAM that is not stderr's, lines stay on stderr.
 * usage: test_journal HOSTD */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

struct entry {
    char message[512], priority[8], ident[64], vm[64];
};

/* One datagram into e; false when it is not the native protocol. */
static bool parse(const uint8_t *b, size_t n, struct entry *e)
{
    memset(e, 0, sizeof(*e));
    size_t i = 0;
    while (i < n) {
        const uint8_t *nl = memchr(b + i, '\n', n - i);
        const uint8_t *eq = memchr(b + i, '=', nl ? (size_t)(nl - (b + i)) : n - i);
        if (!nl)
            return false;
        char name[64];
        const uint8_t *val;
        size_t vlen;
        if (eq) {
            snprintf(name, sizeof(name), "%.*s", (int)(eq - (b + i)), (const char *)(b + i));
            val = eq + 1;
            vlen = (size_t)(nl - val);
            i = (size_t)(nl - b) + 1;
        } else {
            snprintf(name, sizeof(name), "%.*s", (int)(nl - (b + i)), (const char *)(b + i));
            size_t p = (size_t)(nl - b) + 1;
            if (p + 8 > n)
                return false;
            uint64_t len = 0;
            for (int k = 7; k >= 0; k--)
                len = len << 8 | b[p + (size_t)k];
            if (len > n - p - 8 || p + 8 + len >= n || b[p + 8 + len] != '\n')
                return false;
            val = b + p + 8;
            vlen = (size_t)len;
            i = p + 8 + (size_t)len + 1;
        }
        char *dst = !strcmp(name, "MESSAGE") ? e->message : !strcmp(name, "PRIORITY") ? e->priority
                  : !strcmp(name, "SYSLOG_IDENTIFIER") ? e->ident : !strcmp(name, "MDLMAP_VM") ? e->vm : NULL;
        size_t cap = dst == e->message ? sizeof(e->message) : dst == e->priority ? sizeof(e->priority)
                   : sizeof(e->ident);
        if (dst)
            snprintf(dst, cap, "%.*s", (int)vlen, (const char *)val);
    }
    return e->message[0] != 0;
}

static pid_t spawn(const char *bin, const char *dir, const char *errpath, bool match)
{
    char vmspec[200];
    snprintf(vmspec, sizeof(vmspec), "name=jvm,cid=3,socket=%s/jvm.sock", dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        struct stat st;
        if (fd < 0 || dup2(fd, 2) < 0 || fstat(2, &st) < 0)
            _exit(126);
        char js[64], sock[160];
        snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino + (match ? 0 : 1));
        snprintf(sock, sizeof(sock), "%s/journal.sock", dir);
        setenv("JOURNAL_STREAM", js, 1);
        setenv("MDLMAP_JOURNAL_SOCKET", sock, 1);
        execl(bin, bin, "--vm", vmspec, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool stop(pid_t pid)
{
    int status = 0;
    kill(pid, SIGTERM);
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    char dir[] = "/tmp/mdlmap-journal.XXXXXX", sock[100], errpath[160], vmsock[160];
    if (!mkdtemp(dir)) {
        tap_check(false, "mkdtemp: %s", strerror(errno));
        return tap_done();
    }
    snprintf(sock, sizeof(sock), "%s/journal.sock", dir);
    snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
    snprintf(vmsock, sizeof(vmsock), "%s/jvm.sock", dir);
    int js = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    if (!tap_check(js >= 0 && bind(js, (struct sockaddr *)&sa, sizeof(sa)) == 0, "journal socket bound"))
        return tap_done();

    pid_t pid = spawn(bin, dir, errpath, true);
    bool listening = false, ready = false, fields = true, ident = true;
    unsigned n = 0;
    while (!ready) {
        struct pollfd pfd = { js, POLLIN, 0 };
        if (poll(&pfd, 1, 20000) <= 0)
            break;
        uint8_t buf[4096];
        ssize_t len = recv(js, buf, sizeof(buf), 0);
        struct entry e;
        if (len <= 0 || !parse(buf, (size_t)len, &e)) {
            fields = false;
            continue;
        }
        n++;
        ident = ident && !strcmp(e.ident, "mdlmap-hostd");
        if (strstr(e.message, "vm jvm: listening on")) {
            listening = true;
            fields = fields && !strcmp(e.vm, "jvm") && !strcmp(e.priority, "6");
        }
        if (!strncmp(e.message, "ready:", 6)) {
            ready = true;
            fields = fields && e.vm[0] == 0 && !strcmp(e.priority, "6");
        }
    }
    tap_check(n > 0 && fields, "%u journal entries in the native protocol, well formed", n);
    tap_check(listening, "the VM's listening line arrived with MDLMAP_VM=jvm and PRIORITY=6 (info)");
    tap_check(ready, "the ready line arrived without MDLMAP_VM (it names no VM)");
    tap_check(ident, "every entry has SYSLOG_IDENTIFIER=mdlmap-hostd");
    tap_check(file_size(errpath) == 0, "nothing was written to stderr meanwhile");
    tap_check(stop(pid), "hostd stops on SIGTERM with status 0");

    uint8_t drain[4096];
    while (recv(js, drain, sizeof(drain), MSG_DONTWAIT) > 0)
        ; /* the shutdown lines */

    /* $JOURNAL_STREAM not naming stderr (e.g. inherited by a child whose
     * stderr was redirected): hostd keeps its stderr lines */
    unlink(vmsock);
    pid = spawn(bin, dir, errpath, false);
    bool on_stderr = false;
    for (int i = 0; i < 1000 && !on_stderr; i++) {
        FILE *f = fopen(errpath, "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f))
            on_stderr = on_stderr || strstr(line, "hostd info: ready:");
        if (f)
            fclose(f);
        if (!on_stderr)
            usleep(20000);
    }
    tap_check(on_stderr, "with another stream in $JOURNAL_STREAM, lines go to stderr");
    struct pollfd pfd = { js, POLLIN, 0 };
    tap_check(poll(&pfd, 1, 0) == 0, "and none to the journal socket");
    tap_check(stop(pid), "hostd stops on SIGTERM with status 0");

    close(js);
    unlink(sock);
    unlink(errpath);
    unlink(vmsock);
    rmdir(dir);
    return tap_done();
}
