/* errno <-> NTSTATUS: one table read in both directions, and status names.
 * Internal code fails with negative errnos; the wire carries NTSTATUS values
 * (enum NtStatus in mdlmap.proto). Plain C, usable by hostd, host clients and
 * the guest library. */
#pragma once
#include <stdint.h>

/* err: 0 or a negative errno. Errnos without a row become STATUS_UNSUCCESSFUL. */
int32_t ntstatus_from_errno(int err);
/* 0 for STATUS_SUCCESS, else a negative errno; statuses without a row give -EIO. */
int ntstatus_to_errno(int32_t status);
/* Name of an NTSTATUS value ("STATUS_INVALID_PARAMETER"), or "STATUS_0x%08x"
 * (per-thread buffer) for values mdlmap.proto does not name. */
const char *ntstatus_name(int32_t status);
