/* mdl_stream_connect: an interrupted connect() must not fail a session open.
 *
 * In a guest, the session's AF_VSOCK connect() has a timeout, so the kernel
 * does not restart it after an interruption: it fails with EINTR. The
 * interruption that broke the e2e selftest was no signal but io_uring task
 * work: closing a ring (the io_uring pinner's unpin) tears it down in a
 * kernel worker that then notifies the ring's creator with TWA_SIGNAL. AF_VSOCK
 * is guest-only, so this reproduces it over AF_UNIX, whose connect() behaves
 * the same with a send timeout: a connect() blocked on a full backlog is
 * interrupted (1) by a real signal and (2) by the teardown of an io_uring ring
 * this thread created, closed meanwhile by another thread; then the backlog
 * drains and the connect must succeed, on time. */
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/io_uring.h>

#include "mdl_transport.h"
#include "tap.h"

#define CONNECT_BUDGET_MS 5000u

struct helper {
    pthread_t target;   /* the thread blocked in connect() */
    int lfd;            /* listener with a full backlog */
    int ring_fd;        /* >= 0: close it instead of signalling */
};

static void on_usr1(int sig) { (void)sig; }

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Interrupt the blocked connect(), give it time to fail, then drain the
 * backlog so that a connect() that is still (or again) waiting completes. */
static void *helper(void *arg)
{
    struct helper *h = arg;
    sleep_ms(300);
    if (h->ring_fd >= 0)
        close(h->ring_fd);   /* teardown notifies the ring's creator */
    else
        pthread_kill(h->target, SIGUSR1);
    sleep_ms(500);
    for (int i = 0; i < 2; i++) {   /* the filler, then the connect under test */
        struct pollfd p = { h->lfd, POLLIN, 0 };
        if (poll(&p, 1, 2000) <= 0)
            break;   /* it gave up: nothing more to take */
        int fd = accept(h->lfd, NULL, NULL);
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

/* A listener whose backlog is full: the next connect() blocks. */
static int full_listener(const struct sockaddr_un *a, int *filler)
{
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (const struct sockaddr *)a, sizeof(*a)) < 0 || listen(lfd, 0) < 0)
        return -1;
    *filler = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*filler < 0 || connect(*filler, (const struct sockaddr *)a, sizeof(*a)) < 0)
        return -1;
    return lfd;
}

/* A ring created by this thread, with a registered buffer like the pinner's. */
static int make_ring(void *buf, size_t len)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    int fd = (int)syscall(__NR_io_uring_setup, 1, &p);
    if (fd < 0)
        return -1;
    struct iovec iov = { buf, len };
    if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_BUFFERS, &iov, 1u) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void run(const char *what, bool use_ring)
{
    static char buf[4096] __attribute__((aligned(4096)));
    char dir[] = "/tmp/mdl-connect-XXXXXX";
    if (!mkdtemp(dir)) {
        tap_check(false, "%s: mkdtemp: %s", what, strerror(errno));
        return;
    }
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s/s", dir);
    int filler = -1;
    int lfd = full_listener(&a, &filler);
    struct helper h = { pthread_self(), lfd, -1 };
    if (lfd < 0) {
        tap_check(false, "%s: listener: %s", what, strerror(errno));
        goto out;
    }
    if (use_ring) {
        h.ring_fd = make_ring(buf, sizeof(buf));
        if (h.ring_fd < 0) {
            printf("# %s: io_uring unavailable (%s): skipped\n", what, strerror(errno));
            goto out;
        }
    }
    pthread_t th;
    if (pthread_create(&th, NULL, helper, &h) != 0) {
        tap_check(false, "%s: pthread_create", what);
        goto out;
    }
    double t0 = now_s();
    int fd = mdl_stream_connect(AF_UNIX, (const struct sockaddr *)&a, sizeof(a), CONNECT_BUDGET_MS);
    double dt = now_s() - t0;
    pthread_join(th, NULL);
    tap_check(fd >= 0, "%s: connect completes (%s after %.2f s)", what, fd >= 0 ? "connected" : strerror(-fd),
          dt);
    tap_check(dt < CONNECT_BUDGET_MS / 1000.0, "%s: within the %u ms budget (%.2f s)", what, CONNECT_BUDGET_MS, dt);
    if (fd >= 0)
        close(fd);
out:
    if (filler >= 0)
        close(filler);
    if (lfd >= 0)
        close(lfd);
    unlink(a.sun_path);
    rmdir(dir);
}

int main(void)
{
    struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART };
    sigaction(SIGUSR1, &sa, NULL);   /* SA_RESTART does not restart a timed connect() */
    run("signal during connect", false);
    run("io_uring ring teardown during connect", true);

    /* Failures other than EINTR are returned, not retried. */
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "/tmp/mdl-connect-no-such-socket-%d", (int)getpid());
    int fd = mdl_stream_connect(AF_UNIX, (const struct sockaddr *)&a, sizeof(a), CONNECT_BUDGET_MS);
    tap_check(fd == -ENOENT, "no listener: -ENOENT at once (%d)", fd);
    if (fd >= 0)
        close(fd);
    return tap_done();
}
