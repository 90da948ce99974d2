/* Host API client library against a scripted server on a socketpair: the
 * library must not report success for answers that do not match the request. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "mdlmap_client.h"
#include "tap.h"

/* Serve one Write request on fd, answering `written` bytes (and the request's id). */
static void serve_write(int fd, uint32_t written)
{
    mdl_envelope *req = NULL;
    if (frame_read_fd(fd, &req) < 0)
        _exit(2);
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__WriteResponse rp = MDLMAP__V1__WRITE_RESPONSE__INIT;
    env.version = MDLMAP_PROTO_VERSION;
    env.request_id = req->request_id;
    env.detail = "";
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE_REPLY;
    env.write_reply = &rp;
    rp.written = written;
    int rc = frame_write_fd(fd, &env);
    frame_envelope_free(req);
    _exit(rc < 0 ? 3 : 0);
}

static int write_against(uint32_t written, size_t len)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        serve_write(sv[1], written);
    }
    close(sv[1]);
    struct mdlmap_client c;
    memset(&c, 0, sizeof(c));
    c.fd = sv[0];
    c.next_id = 1;
    uint8_t buf[100];
    memset(buf, 0xab, sizeof(buf));
    int rc = mdlmap_client_write(&c, 0x1234, 0, buf, len);
    mdlmap_client_close(&c);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return rc;
}

int main(void)
{
    CHECK(write_against(100, 100) == 0);       /* all written */
    CHECK(write_against(50, 100) == -EPROTO);  /* a short write is not success */
    CHECK(write_against(0, 100) == -EPROTO);
    return tap_done();
}
