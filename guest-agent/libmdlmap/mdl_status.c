/* Status names and the per-thread last status. */
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "mdlmap.h"

static __thread mdl_status last_status;
static __thread char last_detail[160];

const char *mdl_status_name(mdl_status s)
{
    return ntstatus_name(s);
}

mdl_status mdl_last_status(void)
{
    return last_status;
}

const char *mdl_last_detail(void)
{
    return last_detail;
}

void mdl_set_last_status(mdl_status s, const char *detail)
{
    last_status = s;
    snprintf(last_detail, sizeof(last_detail), "%s", detail ? detail : "");
}
