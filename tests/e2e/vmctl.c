/* e2e helper: VmAdd / VmRemove / VmList on hostd's host API, for the shell
 * tests (mdlmapctl's own vm commands live in hostd/cli).
 *   vmctl API add NAME CID SOCKET   -> exit 0 on STATUS_SUCCESS
 *   vmctl API remove NAME
 *   vmctl API list                  -> one line per VM:
 *       vm NAME cid CID connected 0|1 conns N mappings N ram BYTES
 * Failures print the status and detail on stderr and exit 1. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "usock.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s API add NAME CID SOCKET | remove NAME | list\n", argv[0]);
        return 2;
    }
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmAddRequest add = MDLMAP__V1__VM_ADD_REQUEST__INIT;
    Mdlmap__V1__VmSpec spec = MDLMAP__V1__VM_SPEC__INIT;
    Mdlmap__V1__VmRemoveRequest rm = MDLMAP__V1__VM_REMOVE_REQUEST__INIT;
    Mdlmap__V1__VmListRequest list = MDLMAP__V1__VM_LIST_REQUEST__INIT;
    if (!strcmp(argv[2], "add") && argc == 6) {
        spec.name = argv[3];
        spec.cid = strtoull(argv[4], NULL, 0);
        spec.socket = argv[5];
        add.vm = &spec;
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_ADD;
        e.vm_add = &add;
    } else if (!strcmp(argv[2], "remove") && argc == 4) {
        rm.name = argv[3];
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE;
        e.vm_remove = &rm;
    } else if (!strcmp(argv[2], "list") && argc == 3) {
        e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_LIST;
        e.vm_list = &list;
    } else {
        fprintf(stderr, "%s: bad arguments\n", argv[0]);
        return 2;
    }
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = 1;
    int fd = usock_connect(argv[1], 0);
    if (fd < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-fd));
        return 1;
    }
    mdl_envelope *r = NULL;
    int rc = frame_write_fd(fd, &e);
    if (rc == 0)
        rc = frame_read_fd(fd, &r);
    close(fd);
    if (rc < 0) {
        fprintf(stderr, "no answer: %s\n", strerror(-rc));
        return 1;
    }
    int ret = r->status == 0 ? 0 : 1;
    if (r->status)
        fprintf(stderr, "status 0x%08x: %s\n", (unsigned)r->status, r->detail ? r->detail : "");
    else if (r->body_case == MDLMAP__V1__ENVELOPE__BODY_VM_LIST_REPLY)
        for (size_t i = 0; i < r->vm_list_reply->n_vms; i++) {
            const Mdlmap__V1__VmInfo *v = r->vm_list_reply->vms[i];
            printf("vm %s cid %" PRIu64 " connected %d conns %u mappings %" PRIu64 " ram %" PRIu64 "\n",
                   v->vm ? v->vm->name : "?", v->vm ? v->vm->cid : 0, v->connected, v->connections, v->mappings,
                   v->ram_bytes);
        }
    frame_envelope_free(r);
    return ret;
}
