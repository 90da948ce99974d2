/* The smallest libmdlmap program: describe a buffer with an MDL, lock it, have
 * hostd map it, print where, and release everything again.
 *
 * Runs inside a guest VM: as root it talks to hostd over AF_VSOCK; with
 * MDLMAP_AGENT_SOCKET set it goes through `mdlmap-agent daemon`, which can
 * only pin memfd pages, hence mdl_buffer_alloc there. Only the public headers
 * are used; guest-agent/libmdlmap/README.md says how to build it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wdm_compat.h"

#define BUF_PAGES 3

static void buffer_free(char *buf, bool via_agent)
{
    if (via_agent)
        mdl_buffer_free(buf);
    else
        free(buf);
}

int main(void)
{
    const size_t len = BUF_PAGES * PAGE_SIZE;
    const bool via_agent = getenv("MDLMAP_AGENT_SOCKET") != NULL;
    char *buf = via_agent ? mdl_buffer_alloc(len) : aligned_alloc(PAGE_SIZE, len);
    if (!buf) {
        fprintf(stderr, "map_buffer: no memory for the buffer\n");
        return 1;
    }
    memset(buf, 'm', len);

    /* Not page-aligned on purpose: the mapped address includes ByteOffset. */
    PMDL mdl = IoAllocateMdl(buf + 100, (ULONG)(len - 200), FALSE, FALSE, NULL);
    if (!mdl) {
        fprintf(stderr, "map_buffer: IoAllocateMdl failed\n");
        buffer_free(buf, via_agent);
        return 1;
    }

    /* MmProbeAndLockPages reports failure by raising, as on Windows;
     * a local read in the handler must be volatile. */
    volatile NTSTATUS status = STATUS_SUCCESS;
    MDL_TRY {
        MmProbeAndLockPages(mdl, KernelMode, IoWriteAccess);
    } MDL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {
        status = GetExceptionCode();
    } MDL_END_TRY;

    int rc = 1;
    if (!NT_SUCCESS(status)) {
        fprintf(stderr, "map_buffer: MmProbeAndLockPages: %s (%s)\n", mdl_status_name(status),
                mdl_last_detail());
    } else {
        /* BugCheckOnFailure FALSE: a failed KernelMode map returns NULL. */
        PVOID addr = MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE,
                                                  NormalPagePriority);
        if (!addr) {
            fprintf(stderr, "map_buffer: map failed: %s (%s)\n",
                    mdl_status_name(mdl_last_status()), mdl_last_detail());
        } else {
            /* A host address: an opaque token here, never dereferenced. */
            printf("mapped %lu bytes at host address %p\n",
                   (unsigned long)MmGetMdlByteCount(mdl), addr);
            MmUnmapLockedPages(addr, mdl);
            rc = 0;
        }
        MmUnlockPages(mdl);
    }
    IoFreeMdl(mdl);
    buffer_free(buf, via_agent);
    return rc;
}
