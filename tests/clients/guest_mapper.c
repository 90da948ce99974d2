/* A real hostd with two harness guests, for host API clients in other
 * languages (clients/python/tests): vm0 (cid 3) whose guest locks and maps
 * buffers on request, and "intro" (cid 5, introspect=on) for whole-guest
 * access. Driven by lines on stdin, answering one line on stdout each:
 *   start            -> "@ready {json}"  (api socket, VM names, the first mapping)
 *   map              -> "@mapped {json}" (a new buffer locked and mapped by vm0's guest)
 *   unmap            -> "@unmapped {json}" (the newest mapping unmapped and unlocked)
 *   quit or EOF      -> guests go, hostd is stopped and must exit 0
 * Every other line it prints starts with "#" or is TAP from the harness
 * (hostd started, hostd exited cleanly); the exit status is 1 when a check
 * failed. The guests are served (vdev_poll) while it waits for a command.
 * usage: clients-guest-mapper HOSTD */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rpc_session.h"

#define PG 4096u
#define BUF_GPA (8u << 20) /* free low RAM in the harness layout */
#define BUF_OFFSET 16u     /* the buffer starts inside its page, as MDLs do */
#define BUF_BYTES 100u
#define MAX_MAPS 32

struct mapper {
    struct rpc_session s;
    struct vdev *d;
    unsigned n;
    struct {
        uint64_t mdl, map, address;
    } m[MAX_MAPS];
};

/* vm0's guest writes a known text into a fresh page, locks and maps it. */
static bool map_one(struct mapper *mp, const char *tag)
{
    if (mp->n == MAX_MAPS)
        return false;
    uint64_t gpa = BUF_GPA + (uint64_t)mp->n * 2 * PG;
    char *p = gm_ptr(&mp->d->g.gm, gpa, PG);
    if (!p)
        return false;
    memset(p, 0, PG);
    snprintf(p + BUF_OFFSET, BUF_BYTES, "hello from the guest, buffer %u", mp->n);
    uint64_t pfn = gpa / PG, mdl = 0;
    struct rpc_mapping m;
    Mdlmap__V1__MapRequest rq = MDLMAP__V1__MAP_REQUEST__INIT;
    rq.cache_type = MDLMAP__V1__CACHE_TYPE__MM_CACHED;
    rq.priority = MDLMAP__V1__PAGE_PRIORITY__NORMAL_PAGE_PRIORITY;
    if (rpc_lock(&mp->s, BUF_OFFSET, BUF_BYTES, &pfn, 1, 0, &mdl) != 0)
        return false;
    rq.mdl_handle = mdl;
    if (rpc_map(&mp->s, &rq, &m) != 0)
        return false;
    mp->m[mp->n].mdl = mdl;
    mp->m[mp->n].map = m.map;
    mp->m[mp->n].address = m.address;
    printf("%s {\"map_handle\": %llu, \"mdl_handle\": %llu, \"guest_address\": %llu, \"gpa\": %llu, "
           "\"byte_offset\": %u, \"byte_count\": %u, \"text\": \"%s\"}\n",
           tag, (unsigned long long)m.map, (unsigned long long)mdl, (unsigned long long)m.address,
           (unsigned long long)gpa, BUF_OFFSET, BUF_BYTES, p + BUF_OFFSET);
    fflush(stdout);
    mp->n++;
    return true;
}

static bool unmap_last(struct mapper *mp)
{
    if (!mp->n)
        return false;
    mp->n--;
    unsigned released = 0;
    bool ok = rpc_unmap(&mp->s, mp->m[mp->n].map, mp->m[mp->n].address, mp->m[mp->n].mdl) == 0 &&
              rpc_unlock(&mp->s, mp->m[mp->n].mdl, &released) == 0;
    printf("@unmapped {\"map_handle\": %llu, \"ok\": %s}\n", (unsigned long long)mp->m[mp->n].map,
           ok ? "true" : "false");
    fflush(stdout);
    return ok;
}

/* One command line from stdin; false at "quit" or EOF. */
static bool command(struct mapper *mp, char *line, size_t cap, size_t *len)
{
    ssize_t r = read(0, line + *len, cap - 1 - *len);
    if (r <= 0)
        return false;
    *len += (size_t)r;
    line[*len] = 0;
    char *nl;
    while ((nl = strchr(line, '\n'))) {
        *nl = 0;
        bool ok = true;
        if (strcmp(line, "map") == 0)
            ok = map_one(mp, "@mapped");
        else if (strcmp(line, "unmap") == 0)
            ok = unmap_last(mp);
        else if (strcmp(line, "quit") == 0)
            return false;
        tap_check(ok, "command \"%s\"", line);
        if (!ok) {
            printf("@failed\n");
            fflush(stdout);
        }
        size_t rest = *len - (size_t)(nl + 1 - line);
        memmove(line, nl + 1, rest + 1);
        *len = rest;
    }
    if (*len == cap - 1)
        *len = 0; /* an overlong line: dropped */
    return true;
}

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    char idir[] = "/tmp/mdl-pyclient-intro.XXXXXX";
    if (!mkdtemp(idir))
        return 2;
    char isock[96], ispec[160];
    snprintf(isock, sizeof(isock), "%s/intro.sock", idir);
    snprintf(ispec, sizeof(ispec), "name=intro,cid=5,socket=%s,introspect=on", isock);
    const char *more[] = { "--vm", ispec, NULL };
    struct rig rig;
    uint64_t cids[1] = { 3 };
    rig_start_with(&rig, bin, "mdl-pyclient", 1, cids, more);
    struct mapper mp = { .n = 0 };
    mp.d = rig_vm_up(&rig, 0, NULL, "vm0");
    struct vdev *di = vdev_alloc();
    bool up = mp.d && tap_check(vdev_up(di, isock, 5, NULL) == 0, "guest of the introspect VM up");
    struct rpc_hello_info hi;
    up = up && rpc_open(&mp.s, mp.d) && rpc_hello(&mp.s, 1, 1, "guest_mapper", &hi) == 0;
    if (!tap_check(up, "vm0's guest connected to the RPC port") || !map_one(&mp, "#first")) {
        rig_abort(&rig);
        rmdir(idir);
        return tap_done();
    }
    printf("@ready {\"api\": \"%s\", \"vm\": \"vm0\", \"cid\": 3, \"intro\": \"intro\", \"intro_cid\": 5, "
           "\"dir\": \"%s\", \"map_handle\": %llu, \"guest_address\": %llu, \"gpa\": %llu, \"byte_count\": %u, "
           "\"text\": \"hello from the guest, buffer 0\"}\n",
           rig.api, idir, (unsigned long long)mp.m[0].map, (unsigned long long)mp.m[0].address,
           (unsigned long long)BUF_GPA, BUF_BYTES);
    fflush(stdout);
    char line[256];
    size_t len = 0;
    for (;;) {
        struct pollfd pfd = { .fd = 0, .events = POLLIN };
        if (poll(&pfd, 1, 10) > 0 && !command(&mp, line, sizeof(line), &len))
            break;
        vdev_poll();
    }
    rpc_close(&mp.s);
    vdev_down(mp.d);
    free(mp.d);
    vdev_down(di);
    free(di);
    rig_stop(&rig);
    rmdir(idir);
    return tap_done();
}
