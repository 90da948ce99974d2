/* libmdlmap's grant calls against a real mdlmap-hostd (--sharing on), two
 * harness guests: mdl_grant, mdl_grant_copy (per-op statuses), mdl_revoke,
 * and the session's reply reader taking the GrantRevokedNotice hostd pushes
 * (request_id 0) aside instead of for the next reply.
 * argv[1]: path of mdlmap-hostd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_link.h"
#include "rpc_session.h"

#define LEN (64u * 1024u)

int main(int argc, char **argv)
{
    const char *bin = hostd_path(argc, argv);
    struct rig rig;
    uint64_t cids[2] = { 3, 4 };
    const char *more[] = { "--sharing", "on", NULL };
    rig_start_with(&rig, bin, "grant-lib", 2, cids, more);
    struct vdev *da = rig_vm_up(&rig, 0, NULL, "A"), *db = rig_vm_up(&rig, 1, NULL, "B");
    struct harness_link la, lb;
    struct mdl_session *sa = NULL, *sb = NULL;
    if (da && db) {
        harness_link_init(&la, da);
        harness_link_init(&lb, db);
        sa = harness_session(&la);
        sb = harness_session(&lb);
    }
    if (!tap_check(sa && sb, "sessions of A and B (Hello)"))
        goto out;
    uint8_t *abuf = harness_alloc_pages(LEN / 4096, &la), *bbuf = harness_alloc_pages(LEN / 4096, &lb);
    for (unsigned i = 0; i < LEN; i++)
        abuf[i] = (uint8_t)(i * 13 + 1);
    memset(bbuf, 0, LEN);
    struct mdl *ma = mdl_alloc(abuf, LEN), *mb = mdl_alloc(bbuf, LEN);
    mdl_status st = mdl_probe_and_lock(sa, ma, MDL_IO_READ);
    tap_check(st == MDL_STATUS_SUCCESS, "A locks 64 KiB for read -> %s", mdl_status_name(st));
    st = mdl_probe_and_lock(sb, mb, MDL_IO_WRITE);
    tap_check(st == MDL_STATUS_SUCCESS, "B locks 64 KiB for write -> %s", mdl_status_name(st));
    uint64_t ref = 0;
    st = mdl_grant(ma, 4, MDL_GRANT_READ_WRITE, &ref);
    tap_check(st == MDL_STATUS_ACCESS_DENIED && ref == 0, "mdl_grant read-write of a read-locked MDL -> %s",
              mdl_status_name(st));
    st = mdl_grant(ma, 4, MDL_GRANT_READ, &ref);
    tap_check(st == MDL_STATUS_SUCCESS && ref != 0, "mdl_grant read-only to cid 4 -> %s", mdl_status_name(st));

    struct mdl_copy_op ops[2] = {
        { .src = { .granter_cid = 3, .ref = ref, .offset = 100 }, .dst = { .mdl = mb, .offset = 0 }, .length = LEN - 100 },
        { .src = { .mdl = mb }, .dst = { .granter_cid = 3, .ref = ref }, .length = 16 },
    };
    mdl_status sts[2];
    uint64_t copied[2];
    st = mdl_grant_copy(sb, ops, 2, sts, copied);
    tap_check(st == MDL_STATUS_SUCCESS && sts[0] == MDL_STATUS_SUCCESS && copied[0] == LEN - 100 &&
                  !memcmp(bbuf, abuf + 100, LEN - 100),
              "mdl_grant_copy: B copies A's bytes -> %s / op %s", mdl_status_name(st), mdl_status_name(sts[0]));
    tap_check(sts[1] == MDL_STATUS_ACCESS_DENIED && copied[1] == 0, "the write through the read-only grant -> %s",
              mdl_status_name(sts[1]));
    struct mdl_grant_notice n[4];
    tap_check(mdl_session_grant_notices(sb, n, 4, NULL) == 0, "no notice yet");
    st = mdl_revoke(sa, ref);
    tap_check(st == MDL_STATUS_SUCCESS, "mdl_revoke by A -> %s", mdl_status_name(st));
    st = mdl_grant_copy(sb, ops, 1, sts, copied);
    tap_check(st == MDL_STATUS_SUCCESS && sts[0] == MDL_STATUS_GRANT_REVOKED,
              "B's next copy: the reply is its own (the notice before it set aside) -> %s / op %s",
              mdl_status_name(st), mdl_status_name(sts[0]));
    uint64_t dropped = 1;
    size_t k = mdl_session_grant_notices(sb, n, 4, &dropped);
    tap_check(k == 1 && n[0].ref == ref && n[0].granter_cid == 3 && !strcmp(n[0].reason, "revoked") && dropped == 0,
              "B's session kept the GrantRevokedNotice (%zu: ref ok %d, reason \"%s\")", k, k ? n[0].ref == ref : 0,
              k ? n[0].reason : "");
    st = mdl_revoke(sa, ref);
    tap_check(st == MDL_STATUS_INVALID_HANDLE, "revoking twice -> %s", mdl_status_name(st));
    mdl_unlock(ma);
    mdl_unlock(mb);
    mdl_free(ma);
    mdl_free(mb);
out:
    if (sa)
        mdl_session_close(sa);
    if (sb)
        mdl_session_close(sb);
    for (struct vdev **d = (struct vdev *[]){ da, db }, **e = d + 2; d < e; d++)
        if (*d) {
            vdev_down(*d);
            free(*d);
        }
    rig_stop(&rig);
    return tap_done();
}
