/* Shared bits of the harness test programs. */
#pragma once
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "tap.h"
#include "vsock_client.h"

/* hostd path: argv[1], else $MDLMAP_HOSTD. */
static inline const char *hostd_path(int argc, char **argv)
{
    const char *p = argc > 1 ? argv[1] : getenv("MDLMAP_HOSTD");
    if (!p) {
        fprintf(stderr, "usage: %s PATH-TO-mdlmap-hostd (or set MDLMAP_HOSTD)\n", argv[0]);
        exit(2);
    }
    return p;
}

/* Start hostd or bail out of the test program (nothing else can run). */
static inline void start_or_die(struct hd_proc *p, const char *bin, unsigned n, const uint64_t *cids,
                                const char *const *extra)
{
    if (!tap_check(hd_start(p, bin, n, cids, extra) == 0, "hostd starts and logs ready (%u VMs)", n))
        exit(tap_done());
}

/* Stop hostd and check it exited 0 (LeakSanitizer makes leaks exit nonzero). */
static inline void stop_and_check(struct hd_proc *p)
{
    char b[64];
    int rc = hd_stop(p);
    tap_check(rc == 0, "hostd exits cleanly on SIGTERM (%s)", hd_describe_exit(p, b, sizeof(b)));
}

/* Bring a vdev up or report why. */
static inline bool up_or_report(struct vdev *d, const struct hd_proc *p, unsigned vm, const struct guest_opts *o,
                                const char *what)
{
    int rc = vdev_up(d, p->vm[vm].sock, p->vm[vm].cid, o);
    if (!tap_check(rc == 0, "%s: frontend bring-up for cid %llu", what, (unsigned long long)p->vm[vm].cid))
        tap_diag("  bring-up failed: %s", d->last_err);
    return rc == 0;
}

static inline struct vdev *vdev_alloc(void);

/* hostd with one VM (cid) and a harness guest up on it (default options);
 * when either fails, the test ends here (nothing else can run). */
static inline struct vdev *start_one_vm(struct hd_proc *p, const char *bin, uint64_t cid, const char *what)
{
    start_or_die(p, bin, 1, &cid, NULL);
    struct vdev *d = vdev_alloc();
    if (!up_or_report(d, p, 0, NULL, what)) {
        hd_kill(p);
        exit(tap_done());
    }
    return d;
}

/* The end of a start_one_vm test: hostd broke no vsock rule the harness
 * checks, the guest goes, hostd exits cleanly. */
static inline void stop_one_vm(struct hd_proc *p, struct vdev *d)
{
    tap_check(d->errors == 0, "no protocol violations seen (%u)%s%s", d->errors, d->errors ? ": " : "", d->last_err);
    vdev_down(d);
    free(d);
    stop_and_check(p);
}

static inline struct vdev *vdev_alloc(void)
{
    struct vdev *d = calloc(1, sizeof(struct vdev));
    if (!d) {
        perror("calloc");
        exit(2);
    }
    return d;
}
