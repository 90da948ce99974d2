/* The agent daemon (see agent_daemon.h): pins pages for unprivileged programs
 * and relays their Lock/Map/Unmap/Unlock to hostd, one hostd connection per
 * program; the program's mappings live as long as its Unix connection. */
#include "agent_daemon.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "mdl_internal.h"

#define AD_MAX_CLIENTS 64
#define AD_MAX_FDS 8

struct ad_pin {
    uint64_t mdl_handle;
    void *va;
    size_t len;
    struct mdl_pin pin;
};
struct ad_map {
    uint64_t map_handle, mdl_handle, address;
};
struct ad_client {
    int fd;
    struct mdl_session *s;
    struct frame_reader rd;
    int fds[AD_MAX_FDS];
    unsigned nfds;
    struct ad_pin *pins;
    size_t npins;
    struct ad_map *maps;
    size_t nmaps;
};

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

/* ---- replies ---- */
static void reply(struct ad_client *c, Mdlmap__V1__Envelope *resp, uint64_t id)
{
    resp->request_id = id;
    if (frame_write_fd(c->fd, resp) < 0)
        shutdown(c->fd, SHUT_RDWR);   /* poll sees the hangup and cleans up */
}

/* A failure answered by the daemon itself, with the reply body of the request. */
static void reply_status(struct ad_client *c, const Mdlmap__V1__Envelope *req, mdl_status st,
                         const char *detail)
{
    Mdlmap__V1__Envelope e;
    Mdlmap__V1__HelloResponse h = MDLMAP__V1__HELLO_RESPONSE__INIT;
    Mdlmap__V1__LockResponse l = MDLMAP__V1__LOCK_RESPONSE__INIT;
    Mdlmap__V1__MapResponse m = MDLMAP__V1__MAP_RESPONSE__INIT;
    Mdlmap__V1__UnmapResponse u = MDLMAP__V1__UNMAP_RESPONSE__INIT;
    Mdlmap__V1__UnlockResponse k = MDLMAP__V1__UNLOCK_RESPONSE__INIT;
    mdl_env_init(&e);
    e.status = st;
    e.detail = (char *)detail;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_LOCK: e.body_case = MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY; e.lock_reply = &l; break;
    case MDLMAP__V1__ENVELOPE__BODY_MAP: e.body_case = MDLMAP__V1__ENVELOPE__BODY_MAP_REPLY; e.map_reply = &m; break;
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP: e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNMAP_REPLY; e.unmap_reply = &u; break;
    case MDLMAP__V1__ENVELOPE__BODY_UNLOCK: e.body_case = MDLMAP__V1__ENVELOPE__BODY_UNLOCK_REPLY; e.unlock_reply = &k; break;
    default: e.body_case = MDLMAP__V1__ENVELOPE__BODY_HELLO_REPLY; e.hello_reply = &h; break;
    }
    reply(c, &e, req->request_id);
}

/* Forward to hostd; on success *out keeps the response for the caller. */
static void forward(struct ad_client *c, Mdlmap__V1__Envelope *req, Mdlmap__V1__Envelope **out)
{
    uint64_t id = req->request_id;
    Mdlmap__V1__Envelope *r;
    mdl_status st = mdl_session_call(c->s, req, -1, &r);
    if (!r) {
        reply_status(c, req, st, mdl_last_detail());
        return;
    }
    reply(c, r, id);
    if (out && MDL_SUCCESS(st))
        *out = r;
    else
        frame_envelope_free(r);
}

/* ---- ownership records ---- */
static struct ad_pin *find_pin(struct ad_client *c, uint64_t h)
{
    for (size_t i = 0; i < c->npins; i++)
        if (c->pins[i].mdl_handle == h)
            return &c->pins[i];
    return NULL;
}

static void drop_pin(struct ad_client *c, struct ad_pin *p)
{
    uint64_t h = p->mdl_handle;   /* *p is overwritten by the last record below */
    mdl_pinner_iouring()->unpin(mdl_pinner_iouring(), &p->pin);
    munmap(p->va, p->len);
    *p = c->pins[--c->npins];
    for (size_t i = 0; i < c->nmaps;)   /* hostd released the MDL's mappings with it */
        if (c->maps[i].mdl_handle == h)
            c->maps[i] = c->maps[--c->nmaps];
        else
            i++;
}

static int take_fd(struct ad_client *c)
{
    if (!c->nfds)
        return -1;
    int fd = c->fds[0];
    memmove(c->fds, c->fds + 1, --c->nfds * sizeof(int));
    return fd;
}

/* ---- requests ---- */
static void handle_lock(struct ad_client *c, Mdlmap__V1__Envelope *req)
{
    Mdlmap__V1__LockRequest *l = req->lock;
    int fd = take_fd(c);
    struct stat sb;
    size_t npages = MDL_SPAN_PAGES(l->byte_offset, l->byte_count);
    size_t len = npages * MDL_PAGE_SIZE;
    if (fd < 0 || l->n_pfns || !l->byte_count || l->byte_offset >= MDL_PAGE_SIZE ||
        (l->memfd_offset & MDL_PAGE_MASK) || fstat(fd, &sb) < 0 ||
        l->memfd_offset > (uint64_t)sb.st_size || len > (uint64_t)sb.st_size - l->memfd_offset) {
        if (fd >= 0)
            close(fd);
        reply_status(c, req, MDL_STATUS_INVALID_PARAMETER, "agent: need a memfd covering the buffer");
        return;
    }
    void *va = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, (off_t)l->memfd_offset);
    close(fd);
    uint64_t *pfns = calloc(npages, sizeof(*pfns));
    struct ad_pin *grown = realloc(c->pins, (c->npins + 1) * sizeof(*c->pins));
    if (grown)
        c->pins = grown;
    if (va == MAP_FAILED || !pfns || !grown) {
        if (va != MAP_FAILED)
            munmap(va, len);
        free(pfns);
        reply_status(c, req, MDL_STATUS_INSUFFICIENT_RESOURCES, "agent: cannot map the memfd");
        return;
    }
    struct mdl_pin pin = { .pass_fd = -1 };
    struct mdl_pinner *pinner = mdl_pinner_iouring();
    int rc = pinner->pin(pinner, (uintptr_t)va, npages, pfns, &pin);
    if (rc < 0) {
        munmap(va, len);
        free(pfns);
        reply_status(c, req, rc == -EPERM ? MDL_STATUS_ACCESS_DENIED : MDL_STATUS_INSUFFICIENT_RESOURCES,
                     "agent: cannot pin the pages");
        return;
    }
    l->pfns = pfns;   /* free_unpacked frees the envelope's own pointers: restore below */
    l->n_pfns = npages;
    Mdlmap__V1__Envelope *r = NULL;
    uint64_t id = req->request_id;
    mdl_status st = mdl_session_call(c->s, req, -1, &r);
    l->pfns = NULL;
    l->n_pfns = 0;
    if (MDL_SUCCESS(st) && r && r->body_case == MDLMAP__V1__ENVELOPE__BODY_LOCK_REPLY) {
        c->pins[c->npins++] = (struct ad_pin){ r->lock_reply->mdl_handle, va, len, pin };
        uint64_t *keep = r->lock_reply->pfns;
        size_t nkeep = r->lock_reply->n_pfns;
        r->lock_reply->pfns = pfns;
        r->lock_reply->n_pfns = npages;
        reply(c, r, id);
        r->lock_reply->pfns = keep;
        r->lock_reply->n_pfns = nkeep;
    } else {
        pinner->unpin(pinner, &pin);
        munmap(va, len);
        if (r)
            reply(c, r, id);
        else
            reply_status(c, req, st, mdl_last_detail());
    }
    if (r)
        frame_envelope_free(r);
    free(pfns);
}

static void handle(struct ad_client *c, Mdlmap__V1__Envelope *req)
{
    Mdlmap__V1__Envelope *r = NULL;
    switch (req->body_case) {
    case MDLMAP__V1__ENVELOPE__BODY_HELLO:
        forward(c, req, NULL);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_LOCK:
        handle_lock(c, req);
        break;
    case MDLMAP__V1__ENVELOPE__BODY_MAP: {
        uint64_t mdl = req->map->mdl_handle;
        if (!find_pin(c, mdl)) {
            reply_status(c, req, MDL_STATUS_INVALID_HANDLE, "agent: not your MDL");
            break;
        }
        forward(c, req, &r);
        struct ad_map *grown = r ? realloc(c->maps, (c->nmaps + 1) * sizeof(*c->maps)) : NULL;
        if (grown) {
            c->maps = grown;
            c->maps[c->nmaps++] = (struct ad_map){ r->map_reply->map_handle, mdl, r->map_reply->address };
        }
        break;
    }
    case MDLMAP__V1__ENVELOPE__BODY_UNMAP: {
        size_t i = 0;
        while (i < c->nmaps && c->maps[i].map_handle != req->unmap->map_handle)
            i++;
        if (i == c->nmaps) {
            reply_status(c, req, MDL_STATUS_NOT_FOUND, "agent: not your mapping");
            break;
        }
        forward(c, req, &r);
        if (r)
            c->maps[i] = c->maps[--c->nmaps];
        break;
    }
    case MDLMAP__V1__ENVELOPE__BODY_UNLOCK: {
        struct ad_pin *p = find_pin(c, req->unlock->mdl_handle);
        if (!p) {
            reply_status(c, req, MDL_STATUS_INVALID_HANDLE, "agent: not your MDL");
            break;
        }
        forward(c, req, NULL);
        drop_pin(c, p);   /* unpinned whatever hostd said, as MmUnlockPages */
        break;
    }
    default:
        reply_status(c, req, MDL_STATUS_INVALID_DEVICE_REQUEST, "agent: request not served here");
    }
    if (r)
        frame_envelope_free(r);
}

/* ---- connections ---- */
static void client_close(struct ad_client *c)
{
    /* The program went away: undo what it left, as hostd would for a guest. */
    while (c->nmaps) {
        Mdlmap__V1__Envelope e, *r;
        Mdlmap__V1__UnmapRequest b;
        struct ad_map *m = &c->maps[--c->nmaps];
        mdl_env_unmap(&e, &b, m->map_handle, m->address, m->mdl_handle);
        mdl_session_call(c->s, &e, -1, &r);
        if (r)
            frame_envelope_free(r);
    }
    while (c->npins) {
        Mdlmap__V1__Envelope e, *r;
        Mdlmap__V1__UnlockRequest b;
        mdl_env_unlock(&e, &b, c->pins[0].mdl_handle);
        mdl_session_call(c->s, &e, -1, &r);
        if (r)
            frame_envelope_free(r);
        drop_pin(c, &c->pins[0]);
    }
    while (c->nfds)
        close(take_fd(c));
    free(c->pins);
    free(c->maps);
    frame_reader_free(&c->rd);
    mdl_session_close(c->s);
    close(c->fd);
    free(c);
}

/* Read what is there (with any fds); handle complete frames. <0: close. */
static int client_readable(struct ad_client *c)
{
    uint8_t buf[16384];
    union { struct cmsghdr h; char b[CMSG_SPACE(AD_MAX_FDS * sizeof(int))]; } cm;
    struct iovec iov = { buf, sizeof(buf) };
    size_t room = frame_reader_room(&c->rd);
    if (room < iov.iov_len)
        iov.iov_len = room;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
    ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
            if (c->nfds < AD_MAX_FDS)
                c->fds[c->nfds++] = fd;
            else
                close(fd);
        }
    }
    if (n == 0)
        return -ECONNRESET;
    if (frame_reader_feed(&c->rd, buf, (size_t)n) < 0)
        return -ENOBUFS;
    const uint8_t *payload;
    size_t plen;
    int rc;
    while ((rc = frame_reader_next(&c->rd, &payload, &plen)) == 1) {
        Mdlmap__V1__Envelope *req;
        if (frame_decode(payload, plen, &req) < 0)
            return -EBADMSG;
        handle(c, req);
        frame_envelope_free(req);
    }
    return rc;
}

/* Bound, chmod'ed and listening under a temporary name, then renamed: once
 * PATH exists, connecting to it works (no window between bind and listen). */
static int listen_on(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s.new", path) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(a.sun_path);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(a.sun_path, 0666) < 0 ||
        listen(fd, 16) < 0 || rename(a.sun_path, path) < 0) {
        int e = -errno;
        unlink(a.sun_path);
        close(fd);
        return e;
    }
    return fd;
}

static struct ad_client *client_open(int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct ad_client *c = calloc(1, sizeof(*c));
    int rc = c ? mdl_session_open_vsock(mdl_pinner_iouring(), &c->s) : -ENOMEM;
    if (rc < 0) {
        fprintf(stderr, "mdlmap-agent daemon: cannot reach hostd: %s\n", strerror(-rc));
        free(c);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    frame_reader_init(&c->rd, MDLMAP_MAX_FRAME);
    return c;
}

int agent_daemon_run(const char *socket_path)
{
    int lfd = listen_on(socket_path);
    if (lfd < 0) {
        fprintf(stderr, "mdlmap-agent daemon: %s: %s\n", socket_path, strerror(-lfd));
        return lfd;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    mdl_verifier_set(0);   /* leak reports belong to hostd here, not to a bug check */
    struct ad_client *cl[AD_MAX_CLIENTS] = { 0 };
    printf("DAEMON listening on %s\n", socket_path);
    fflush(stdout);
    while (!stopping) {
        struct pollfd pf[AD_MAX_CLIENTS + 1];
        pf[0] = (struct pollfd){ lfd, POLLIN, 0 };
        for (int i = 0; i < AD_MAX_CLIENTS; i++)
            pf[i + 1] = (struct pollfd){ cl[i] ? cl[i]->fd : -1, POLLIN, 0 };
        if (poll(pf, AD_MAX_CLIENTS + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < AD_MAX_CLIENTS; i++)
            if (cl[i] && pf[i + 1].revents && client_readable(cl[i]) < 0) {
                client_close(cl[i]);
                cl[i] = NULL;
            }
        if (pf[0].revents & POLLIN) {
            struct ad_client *c = client_open(lfd);
            int i = 0;
            while (c && i < AD_MAX_CLIENTS && cl[i])
                i++;
            if (c && i < AD_MAX_CLIENTS)
                cl[i] = c;
            else if (c)
                client_close(c);
        }
    }
    for (int i = 0; i < AD_MAX_CLIENTS; i++)
        if (cl[i])
            client_close(cl[i]);
    close(lfd);
    unlink(socket_path);
    return 0;
}
