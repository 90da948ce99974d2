/* --check-config: what a parsed configuration would do, checked against the
 * machine (directories, users, groups) without listening on anything. */
#pragma once
#include <stdio.h>

#include "hostd.h"

struct hostd_run_config {
    const struct hostd_options *opt;
    const struct vm_config *vms;
    unsigned nvms;
    const char *metrics_path;    /* NULL: no metrics file */
    unsigned metrics_interval_s;
};

/* Prints the effective configuration to out in the config file's form (one
 * option per line; defaults as comments) and every problem found as an
 * "error:" or "warning:" line to err. Returns the number of errors. */
int hostd_check_config(FILE *out, FILE *err, const struct hostd_run_config *rc);
