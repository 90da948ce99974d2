/* The host client library (hostd/cli/mdlmap_client.c) reading whatever a
 * socket answers: input = one selector byte (which call) + the byte stream
 * the "server" sends (frames with any lengths, ids, bodies, counts; pushed
 * events between them), written into a socketpair before the call. The
 * library must return an error or a checked answer, never read out of
 * bounds, and free everything (a queued event included). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_input.h"
#include "mdlmap_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_STREAM 65536 /* fits the socket buffer: one thread writes, then reads */

static void call(struct mdlmap_client *c, unsigned which)
{
    uint8_t buf[64];
    mdl_envelope *r = NULL;
    struct mdlmap_phys_iov iov[3] = { { 0x1000, buf, 16, 0 }, { 0x2000, buf + 16, 0, 0 }, { 0x3000, buf + 32, 32, 0 } };
    struct mdlmap_translation t[3];
    const uint64_t va[3] = { 0x1000, 0x2000, 0xffff800000000000ull };
    struct mdlmap_mapping m;
    struct mdlmap_ram ram;
    size_t done;
    uint64_t fault, seq;
    bool running;
    char st[16];
    const int types[2] = { 1, 8 };
    switch (which % 16) {
    case 0:
        mdlmap_client_list(c, "vm", &r);
        break;
    case 1:
        mdlmap_client_find(c, "vm", 0x7000, &m);
        break;
    case 2:
        mdlmap_client_find_handle(c, 0x1234, &m);
        break;
    case 3:
        mdlmap_client_stats(c, &r);
        break;
    case 4:
        mdlmap_client_read(c, 1, 0, buf, sizeof(buf));
        break;
    case 5:
        mdlmap_client_write(c, 1, 0, buf, sizeof(buf));
        break;
    case 6:
        mdlmap_client_phys_read(c, "vm", iov, 3);
        break;
    case 7:
        mdlmap_client_phys_write(c, "vm", iov, 3);
        break;
    case 8:
        if (mdlmap_client_phys_map(c, "vm", false, &ram) == 0)
            mdlmap_ram_release(&ram);
        break;
    case 9:
        mdlmap_client_translate(c, "vm", 0x1000, false, va, 3, t);
        break;
    case 10:
        mdlmap_client_virt_read(c, "vm", 0x1000, false, 0x4000, buf, sizeof(buf), &done, &fault);
        break;
    case 11:
        mdlmap_client_virt_write(c, "vm", 0x1000, true, 0x4000, buf, sizeof(buf), &done, &fault);
        break;
    case 12:
        mdlmap_client_vcpu_state(c, "vm", &r);
        break;
    case 13:
        mdlmap_client_run_state(c, "vm", 1, &running, st, sizeof(st));
        break;
    case 14:
        if (mdlmap_client_subscribe(c, types, 2, "vm", &seq) == 0)
            for (int i = 0; i < 3 && mdlmap_client_next_event(c, 0, &r) == 0; i++) {
                frame_envelope_free(r);
                r = NULL;
            }
        break;
    default:
        mdlmap_client_vm_list(c, &r);
        break;
    }
    frame_envelope_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    unsigned which = fuzz_take8(&in);
    if (in.n > MAX_STREAM)
        in.n = MAX_STREAM;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int big = 4 * MAX_STREAM;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    for (size_t off = 0; off < in.n;) {
        ssize_t w = send(sv[1], in.p + off, in.n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the rest does not fit: a shorter stream */
        off += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR); /* the stream ends: reads past it see EOF */
    struct mdlmap_client c;
    memset(&c, 0, sizeof(c));
    c.fd = sv[0];
    c.next_id = 1;
    call(&c, which);
    mdlmap_client_close(&c);
    close(sv[1]);
    return 0;
}
