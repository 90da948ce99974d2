/* The selftest suite (R1..R13) against a real mdlmap-hostd, with the
 * vhost-user frontend harness playing QEMU and the guest's vsock driver.
 * argv[1]: path of mdlmap-hostd. Afterwards hostd's host API must show no
 * mapping or locked MDL left, and the R12 leaks reported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "harness_link.h"
#include "mdl_selftest.h"
#include "wdm_compat.h"

static struct mdl_session *open_second(void *ctx)
{
    return harness_session(ctx);
}

static int api_call(const char *path, Mdlmap__V1__Envelope *e, Mdlmap__V1__Envelope **out)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    e->version = 1;
    e->request_id = 1;
    int rc = frame_write_fd(fd, e);
    if (rc == 0)
        rc = frame_read_fd(fd, out);
    close(fd);
    return rc;
}

/* Zero copy: hostd reads the guest's bytes through its mapping, and a host
 * write shows up in guest RAM. */
static int check_host_view(const char *api, struct harness_link *link)
{
    uint8_t *buf = harness_alloc_pages(2, link);
    if (!buf)
        return 1;
    for (int i = 0; i < 8192; i++)
        buf[i] = (uint8_t)(i * 7);
    PMDL m = IoAllocateMdl(buf + 4000, 200, FALSE, FALSE, NULL);
    MmProbeAndLockPages(m, KernelMode, IoModifyAccess);
    PVOID a = MmGetSystemAddressForMdlSafe(m, NormalPagePriority);
    struct mdl_map_info mi;
    int bad = !a || !mdl_find_mapping(mdl_from_wdm(m), (uint64_t)(uintptr_t)a, &mi);
    Mdlmap__V1__Envelope e = MDLMAP__V1__ENVELOPE__INIT, *r = NULL;
    Mdlmap__V1__ReadRequest rd = MDLMAP__V1__READ_REQUEST__INIT;
    rd.map_handle = bad ? 0 : mi.map_handle;
    rd.length = 200;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_READ;
    e.read = &rd;
    bad |= api_call(api, &e, &r) != 0 || r->status != 0 || r->body_case != MDLMAP__V1__ENVELOPE__BODY_READ_REPLY ||
           r->read_reply->data.len != 200 || memcmp(r->read_reply->data.data, buf + 4000, 200) != 0;
    printf("%s - host reads the guest bytes through the mapping (page-crossing buffer)\n", bad ? "not ok" : "ok");
    if (r)
        frame_envelope_free(r);
    r = NULL;
    Mdlmap__V1__WriteRequest wr = MDLMAP__V1__WRITE_REQUEST__INIT;
    wr.map_handle = rd.map_handle;
    wr.offset = 90;
    wr.data.data = (uint8_t *)"HOST";
    wr.data.len = 4;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
    e.write = &wr;
    int wbad = api_call(api, &e, &r) != 0 || r->status != 0 || memcmp(buf + 4090, "HOST", 4) != 0;
    printf("%s - a host write through the mapping lands in guest RAM\n", wbad ? "not ok" : "ok");
    if (r)
        frame_envelope_free(r);
    MmUnmapLockedPages(a, m);
    MmUnlockPages(m);
    IoFreeMdl(m);
    return bad + wbad;
}

static int api_stats(const char *path, Mdlmap__V1__Envelope **out)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    Mdlmap__V1__Envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest s = MDLMAP__V1__STATS_REQUEST__INIT;
    e.version = 1;
    e.request_id = 1;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    e.stats = &s;
    int rc = frame_write_fd(fd, &e);
    if (rc == 0)
        rc = frame_read_fd(fd, out);
    close(fd);
    return rc == 0 && (*out)->body_case == MDLMAP__V1__ENVELOPE__BODY_STATS_REPLY ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *bin = argc > 1 ? argv[1] : getenv("MDLMAP_HOSTD");
    if (!bin) {
        fprintf(stderr, "usage: %s PATH-TO-mdlmap-hostd\n", argv[0]);
        return 2;
    }
    char api[96];
    snprintf(api, sizeof(api), "/tmp/mdlmap-mdltest-api-%d.sock", (int)getpid());
    const char *extra[] = { "--api", api, NULL };
    struct hd_proc p;
    uint64_t cid = 3;
    if (hd_start(&p, bin, 1, &cid, extra) != 0) {
        printf("not ok - hostd starts\n");
        return 1;
    }
    static struct vdev d;
    struct guest_opts o;
    guest_default_opts(&o);
    int failed = 1;
    if (vdev_up(&d, p.vm[0].sock, cid, &o) != 0) {
        printf("not ok - harness guest up: %s\n", d.last_err);
        goto out;
    }
    struct harness_link link;
    harness_link_init(&link, &d);
    struct mdl_session *s = harness_session(&link);
    if (!s) {
        printf("not ok - session to hostd port 1100 (Hello)\n");
        goto down;
    }
    struct mdl_selftest_env env = {
        .session = s, .filter = argc > 2 ? argv[2] : NULL,
        .alloc_pages = harness_alloc_pages, .free_pages = harness_free_pages, .alloc_ctx = &link,
        .open_session = open_second,
    };
    failed = mdl_selftest_run(&env);
    mdl_set_default_session(s);
    failed += check_host_view(api, &link);
    mdl_set_default_session(NULL);
    mdl_session_close(s);
    Mdlmap__V1__Envelope *st = NULL;
    for (int i = 0; i < 20 && st == NULL; i++) {   /* let hostd finish the run-down */
        vdev_pump(50);
        if (api_stats(api, &st) != 0)
            st = NULL;
    }
    if (!st) {
        printf("not ok - host API stats\n");
        failed++;
    } else {
        Mdlmap__V1__StatsResponse *r = st->stats_reply;
        bool clean = r->mappings == 0 && r->locked_mdls == 0;
        bool leaks = env.filter || r->leaks_reported >= 2;
        printf("%s - hostd holds nothing afterwards (mappings %llu, locked MDLs %llu)\n", clean ? "ok" : "not ok",
               (unsigned long long)r->mappings, (unsigned long long)r->locked_mdls);
        printf("%s - hostd reported the R12 leaks (%llu)\n", leaks ? "ok" : "not ok",
               (unsigned long long)r->leaks_reported);
        failed += !clean + !leaks;
        frame_envelope_free(st);
    }
down:
    vdev_down(&d);
out:
    if (hd_stop(&p) != 0) {
        printf("not ok - hostd exits cleanly\n");
        failed++;
    }
    unlink(api);
    return failed ? 1 : 0;
}
