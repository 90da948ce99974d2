/* errno (internal) -> NTSTATUS (wire) for MDL requests. */
#pragma once
#include <stdint.h>

int32_t rpc_status_from_errno(int err); /* err: 0 or negative errno */
