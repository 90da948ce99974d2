/* Bug checks: a registered handler, or print and terminate this process only. */
#include <stdio.h>
#include <unistd.h>

#include "mdlmap.h"

static mdl_bugcheck_fn handler;
static void *handler_ctx;

void mdl_set_bugcheck_handler(mdl_bugcheck_fn fn, void *ctx)
{
    handler = fn;
    handler_ctx = ctx;
}

const char *mdl_bugcheck_name(uint32_t code)
{
    switch (code) {
    case MDL_BUG_IRQL_NOT_GREATER_OR_EQUAL: return "IRQL_NOT_GREATER_OR_EQUAL";
    case MDL_BUG_IRQL_NOT_LESS_OR_EQUAL: return "IRQL_NOT_LESS_OR_EQUAL";
    case MDL_BUG_NO_MORE_SYSTEM_PTES: return "NO_MORE_SYSTEM_PTES";
    case MDL_BUG_PROCESS_HAS_LOCKED_PAGES: return "PROCESS_HAS_LOCKED_PAGES";
    case MDL_BUG_DRIVER_VERIFIER_DETECTED_VIOLATION: return "DRIVER_VERIFIER_DETECTED_VIOLATION";
    case MDL_BUG_DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS: return "DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS";
    default: return "BUGCHECK";
    }
}

void mdl_bugcheck_format(const struct mdl_bugcheck *bc, char *buf, size_t len)
{
    snprintf(buf, len, "*** BUGCHECK 0x%08X (0x%016llX,0x%016llX,0x%016llX,0x%016llX) %s", bc->code,
             (unsigned long long)bc->p[0], (unsigned long long)bc->p[1],
             (unsigned long long)bc->p[2], (unsigned long long)bc->p[3], mdl_bugcheck_name(bc->code));
}

void mdl_bugcheck(uint32_t code, uint64_t p1, uint64_t p2, uint64_t p3, uint64_t p4)
{
    struct mdl_bugcheck bc = { code, { p1, p2, p3, p4 } };
    if (handler) {
        handler(&bc, handler_ctx);
        return;
    }
    char line[256];
    mdl_bugcheck_format(&bc, line, sizeof(line));
    fflush(stdout);
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
    _exit(MDL_BUGCHECK_EXIT);   /* this process only: hostd and the VM stay up */
}
