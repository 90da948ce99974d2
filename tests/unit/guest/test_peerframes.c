/* The frames of a lock that the agent daemon pins for a program: the library
 * takes them from the LockResponse as frame runs (current daemons) or as one
 * pfn per page (older daemons), and refuses - giving the MDL back - a reply
 * whose frames do not cover the buffer exactly. The fake hostd plays the
 * daemon; the pinner leaves the frames to it, as the daemon's pinner does. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fake_hostd.h"
#include "mdl_internal.h"
#include "tap.h"

static int peer_pin(struct mdl_pinner *self, uintptr_t va, size_t npages, uint64_t *pfns, struct mdl_pin *out)
{
    (void)self, (void)va, (void)npages, (void)pfns;
    out->cookie = NULL;
    out->pass_fd = -1;
    out->pfns_from_peer = true;
    return 0;
}
static void peer_unpin(struct mdl_pinner *self, struct mdl_pin *pin) { (void)self, (void)pin; }
static struct mdl_pinner peer = { peer_pin, peer_unpin };

static uint8_t buf[4 * 4096] __attribute__((aligned(4096)));
static struct fake_hostd f;

static Mdlmap__V1__FrameRun run(uint64_t first, uint32_t count)
{
    Mdlmap__V1__FrameRun r = MDLMAP__V1__FRAME_RUN__INIT;
    r.first_pfn = first;
    r.count = count;
    return r;
}

/* Lock a 3-page MDL (4000 + 5000 bytes) with the reply frames set in f; the
 * PFN array starts as 0xdead. Returns the status; *m stays allocated. */
static mdl_status lock3(struct mdl_session *s, struct mdl **m)
{
    *m = mdl_alloc(buf + 4000, 5000);
    for (size_t i = 0; i < 3; i++)
        mdl_pfns(*m)[i] = 0xdead;
    return mdl_probe_and_lock(s, *m, MDL_IO_MODIFY);
}

static bool pfns_are(struct mdl *m, uint64_t a, uint64_t b, uint64_t c)
{
    return mdl_pfns(m)[0] == a && mdl_pfns(m)[1] == b && mdl_pfns(m)[2] == c;
}

/* A reply the library must refuse: not locked, frames untouched, and the
 * daemon's lock given back (the fake counts locks held). */
static void refused(struct mdl_session *s, const char *what, const char *detail)
{
    struct mdl *m;
    mdl_status st = lock3(s, &m);
    tap_check(st == MDL_STATUS_REVISION_MISMATCH && !(m->flags & MDL_F_PAGES_LOCKED) &&
                  pfns_are(m, 0xdead, 0xdead, 0xdead) && strstr(mdl_last_detail(), detail),
              "%s: refused (0x%08x, \"%s\"), MDL not locked, PFN array untouched", what, (unsigned)st,
              mdl_last_detail());
    tap_check(f.locked == 0, "%s: the daemon's lock was given back (%u held)", what, f.locked);
    mdl_free(m);
}

int main(void)
{
    struct mdl_session *s = fake_session_pinner(&f, &peer);
    tap_check(s != NULL, "session over the fake daemon");
    if (!s)
        return tap_done();
    struct mdl *m;

    /* runs: two stretches, in order */
    Mdlmap__V1__FrameRun r2[] = { run(0x100, 2), run(0x500, 1) };
    Mdlmap__V1__FrameRun *p2[] = { &r2[0], &r2[1] };
    f.lock_runs = p2;
    f.lock_nruns = 2;
    mdl_status st = lock3(s, &m);
    tap_check(st == MDL_STATUS_SUCCESS && (m->flags & MDL_F_PAGES_LOCKED) && pfns_are(m, 0x100, 0x101, 0x500),
              "runs {0x100 x2, 0x500 x1}: locked, PFN array 0x100 0x101 0x500");
    tap_check(mdl_test_frames_from(m) == MDL_FRAMES_PEER_RUNS, "... and the library took them as runs");
    tap_check(mdl_unlock(m) == MDL_STATUS_SUCCESS && f.locked == 0, "... unlocked");
    mdl_free(m);

    /* an older daemon: one pfn per page */
    static const uint64_t three[] = { 7, 9, 11 };
    f.lock_runs = NULL;
    f.lock_nruns = 0;
    f.lock_pfns = three;
    f.lock_npfns = 3;
    st = lock3(s, &m);
    tap_check(st == MDL_STATUS_SUCCESS && pfns_are(m, 7, 9, 11) && mdl_test_frames_from(m) == MDL_FRAMES_PEER_PFNS,
              "pfns 7 9 11 (older daemon): locked with those frames, taken as pfns");
    mdl_unlock(m);
    mdl_free(m);

    f.lock_npfns = 2;
    refused(s, "2 pfns for 3 pages", "wrong frame count");
    f.lock_npfns = 3;
    f.lock_runs = p2;
    f.lock_nruns = 2;
    refused(s, "pfns and runs both", "both as pfns and as runs");
    f.lock_pfns = NULL;
    f.lock_npfns = 0;

    Mdlmap__V1__FrameRun bad[] = { run(0x100, 2), run(0x500, 2), run(0x900, 0), run(UINT64_MAX, 2),
                                   run(UINT64_MAX - 2, 3) };
    Mdlmap__V1__FrameRun *p[2];
    f.lock_runs = p;
    f.lock_nruns = 1;
    p[0] = &bad[0];
    refused(s, "runs covering 2 of 3 pages", "do not cover");
    f.lock_nruns = 2;
    p[1] = &bad[1];
    refused(s, "runs covering 4 of 3 pages", "do not cover");
    p[1] = &bad[2];
    refused(s, "a run of 0 frames", "do not cover");
    f.lock_nruns = 1;
    p[0] = &bad[3];
    refused(s, "a run past the last frame number", "do not cover");

    /* the last frame number itself is a frame */
    p[0] = &bad[4];
    st = lock3(s, &m);
    tap_check(st == MDL_STATUS_SUCCESS && pfns_are(m, UINT64_MAX - 2, UINT64_MAX - 1, UINT64_MAX),
              "a run ending at the last frame number is taken");
    mdl_unlock(m);
    mdl_free(m);

    /* built and expanded: a round trip through the runs */
    uint64_t in[6] = { 5, 6, 7, 3, 4, 100 }, out[6] = { 0 };
    struct mdl_env_runs rs;
    tap_check(mdl_env_runs_build(in, 6, &rs) == 0 && rs.n == 3 && rs.ptrs[0]->count == 3 && rs.ptrs[1]->first_pfn == 3 &&
                  rs.ptrs[2]->count == 1,
              "6 frames in 3 stretches: 3 runs");
    tap_check(mdl_env_runs_expand(rs.ptrs, rs.n, out, 6) == 0 && !memcmp(in, out, sizeof(in)),
              "expanded back: the same 6 frames");
    tap_check(mdl_env_runs_expand(rs.ptrs, rs.n, out, 7) == -EPROTO && mdl_env_runs_expand(rs.ptrs, rs.n, out, 5) == -EPROTO,
              "expanding into 7 or 5 pages: -EPROTO");
    mdl_env_runs_free(&rs);

    /* frames this process reads itself */
    struct fake_hostd f2;
    struct mdl_session *own = fake_session(&f2, buf, sizeof(buf));
    m = mdl_alloc(buf + 4000, 5000);
    st = mdl_probe_and_lock(own, m, MDL_IO_READ);
    tap_check(st == MDL_STATUS_SUCCESS && mdl_test_frames_from(m) == MDL_FRAMES_OWN && mdl_pfns(m)[0] == 0x1000,
              "own pinner: frames its own (0x%llx)", (unsigned long long)mdl_pfns(m)[0]);
    mdl_unlock(m);
    mdl_free(m);
    mdl_session_close(own);
    mdl_session_close(s);
    return tap_done();
}
