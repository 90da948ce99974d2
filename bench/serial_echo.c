/* mdlmap-serial-echo: host side of the virtio-serial benchmark port.
 *
 *   mdlmap-serial-echo SOCKET_PATH
 *
 * Listens on the Unix socket SOCKET_PATH, accepts one connection (QEMU's
 * chardev for the virtserialport) and sends every byte back. Non-blocking with
 * a ring buffer, so it never deadlocks on itself the way a process that does
 * blocking writes into its own pipe can. Exits when the peer closes. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RING (1u << 20)

static unsigned char ring[RING];

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(argv[1]) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "socket path too long\n");
        return 2;
    }
    strcpy(sa.sun_path, argv[1]);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(argv[1]);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0) {
        perror(argv[1]);
        return 1;
    }
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
        perror("accept");
        return 1;
    }
    close(lfd);
    unlink(argv[1]);
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    size_t head = 0, tail = 0;   /* bytes in ring: head - tail (monotonic) */
    unsigned long long total = 0;
    int eof = 0;
    while (!eof || head != tail) {
        struct pollfd p = { .fd = fd, .events = 0 };
        if (!eof && head - tail < RING)
            p.events |= POLLIN;
        if (head != tail)
            p.events |= POLLOUT;
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t off = head % RING, room = RING - (head - tail);
            size_t n = RING - off < room ? RING - off : room;
            ssize_t r = n ? read(fd, ring + off, n) : 0;
            if (r > 0) {
                head += (size_t)r;
                total += (unsigned long long)r;
            } else if (r == 0 && n) {
                eof = 1;
            } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
                break;
            }
        }
        if (head != tail && (p.revents & POLLOUT)) {
            size_t off = tail % RING, n = head - tail;
            if (n > RING - off)
                n = RING - off;
            ssize_t w = write(fd, ring + off, n);
            if (w > 0)
                tail += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                break;
        }
    }
    fprintf(stderr, "serial-echo: %llu bytes echoed\n", total);
    close(fd);
    return 0;
}
