/* One table decides which NTSTATUS each internal failure becomes:
 *   -EINVAL      STATUS_INVALID_PARAMETER     bad geometry/params, pfn<<12 overflow, MDL mismatch
 *   -EFAULT      STATUS_ACCESS_VIOLATION      frame is not guest RAM (MMIO hole, out of range)
 *   -EBADF       STATUS_INVALID_HANDLE        unknown / foreign map or MDL handle
 *   -ENXIO       STATUS_NOT_MAPPED_VIEW       unmap address does not match
 *   -ENOLCK      STATUS_NOT_LOCKED            unlock of an MDL this connection never locked
 *   -ENOSPC      STATUS_INSUFFICIENT_RESOURCES quota, priority share, VMA budget
 *   -ENOMEM      STATUS_INSUFFICIENT_RESOURCES host out of memory / address space
 *   -EBUSY       STATUS_CONFLICTING_ADDRESSES MDL already mapped to system VA; RequestedAddress taken
 *   -EACCES      STATUS_ACCESS_DENIED         write to a read-only mapping
 *   -EOPNOTSUPP  STATUS_NOT_SUPPORTED
 *   -ENOENT      STATUS_NOT_FOUND             unknown UserMode consumer
 *   -EPROTO      STATUS_REVISION_MISMATCH     Hello version ranges do not meet
 *   -ENOSYS      STATUS_INVALID_DEVICE_REQUEST request type not served on this socket
 *   -ENOTCONN    STATUS_DEVICE_NOT_READY      consumer went away before answering
 *   -ETIMEDOUT   STATUS_DEVICE_NOT_READY      consumer did not answer in time
 */
#include "rpc_status.h"

#include <errno.h>

#include "mdlmap.pb-c.h"

int32_t rpc_status_from_errno(int err)
{
    switch (err) {
    case 0: return MDLMAP__V1__NT_STATUS__STATUS_SUCCESS;
    case -EINVAL: return MDLMAP__V1__NT_STATUS__STATUS_INVALID_PARAMETER;
    case -EFAULT: return MDLMAP__V1__NT_STATUS__STATUS_ACCESS_VIOLATION;
    case -EBADF: return MDLMAP__V1__NT_STATUS__STATUS_INVALID_HANDLE;
    case -ENXIO: return MDLMAP__V1__NT_STATUS__STATUS_NOT_MAPPED_VIEW;
    case -ENOLCK: return MDLMAP__V1__NT_STATUS__STATUS_NOT_LOCKED;
    case -ENOSPC:
    case -ENOMEM: return MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES;
    case -EBUSY: return MDLMAP__V1__NT_STATUS__STATUS_CONFLICTING_ADDRESSES;
    case -EACCES: return MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED;
    case -EOPNOTSUPP: return MDLMAP__V1__NT_STATUS__STATUS_NOT_SUPPORTED;
    case -ENOENT: return MDLMAP__V1__NT_STATUS__STATUS_NOT_FOUND;
    case -EPROTO: return MDLMAP__V1__NT_STATUS__STATUS_REVISION_MISMATCH;
    case -ENOSYS: return MDLMAP__V1__NT_STATUS__STATUS_INVALID_DEVICE_REQUEST;
    case -ENOTCONN:
    case -ETIMEDOUT: return MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY;
    default: return MDLMAP__V1__NT_STATUS__STATUS_UNSUCCESSFUL;
    }
}
