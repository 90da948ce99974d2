/* The one errno <-> NTSTATUS table. Read top-down in both directions: the
 * first row with an errno decides ntstatus_from_errno(), the first row with
 * a status decides ntstatus_to_errno(). Rows after the first for an errno
 * only give a reverse mapping for statuses a peer may send.
 *
 *   -EINVAL      STATUS_INVALID_PARAMETER      bad geometry/params, pfn<<12 overflow, MDL mismatch, bad frame
 *   -EFAULT      STATUS_ACCESS_VIOLATION       frame is not guest RAM (MMIO hole, out of range)
 *   -EBADF       STATUS_INVALID_HANDLE         unknown / foreign map or MDL handle
 *   -ENXIO       STATUS_NOT_MAPPED_VIEW        unmap address does not match
 *   -ENOLCK      STATUS_NOT_LOCKED             unlock of an MDL this connection never locked
 *   -ENOMEM      STATUS_INSUFFICIENT_RESOURCES out of memory / address space
 *   -ENOSPC      STATUS_INSUFFICIENT_RESOURCES quota, priority share, VMA budget, buffered input
 *   -EBUSY       STATUS_CONFLICTING_ADDRESSES  MDL already mapped to system VA; RequestedAddress taken
 *   -EACCES      STATUS_ACCESS_DENIED          write to a read-only mapping
 *   -EOPNOTSUPP  STATUS_NOT_SUPPORTED
 *   -ENOENT      STATUS_NOT_FOUND              unknown UserMode consumer
 *   -EPROTO      STATUS_REVISION_MISMATCH      Hello version ranges do not meet, envelope too new
 *   -ENOSYS      STATUS_INVALID_DEVICE_REQUEST request type not served on this socket
 *   -ENOTCONN    STATUS_DEVICE_NOT_READY       consumer went away before answering; no session
 *   -ETIMEDOUT   STATUS_DEVICE_NOT_READY       consumer did not answer in time
 *   -EADDRNOTAVAIL STATUS_MEMORY_NOT_ALLOCATED introspection: a guest-physical range is not RAM
 *   -EEXIST      STATUS_OBJECT_NAME_COLLISION  VmAdd: the name, CID or socket is taken
 *   -EIO         STATUS_UNSUCCESSFUL           anything else
 *   -EKEYREVOKED STATUS_MDLMAP_GRANT_REVOKED   a grant was revoked (explicitly, or with its MDL/connection/VM)
 *
 * Forward only, failures of the guest library pinning pages (io_uring
 * registration, pagemap), which MmProbeAndLockPages raises. hostd never
 * answers with these errnos (its -EAGAIN is a send result, its -EPERM a
 * vsock/vhost-user refusal), so what it sends is unchanged:
 *   -EPERM       STATUS_ACCESS_DENIED          frame numbers hidden (no CAP_SYS_ADMIN), io_uring disabled
 *   -EAGAIN      STATUS_INSUFFICIENT_RESOURCES transient kernel resource shortage
 *   -ENFILE      STATUS_INSUFFICIENT_RESOURCES system file table full (pin ring)
 * -EMFILE has no row on purpose: hostd answers it (dup() of a memfd for a
 * UserMode consumer) as STATUS_UNSUCCESSFUL; the library decides it locally.
 */
#include "ntstatus.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>

#include "mdlmap.pb-c.h"

#define ST(name) MDLMAP__V1__NT_STATUS__STATUS_##name

static const struct {
    int err;
    int32_t status;
} table[] = {
    { 0, ST(SUCCESS) },
    { -EINVAL, ST(INVALID_PARAMETER) },
    { -EFAULT, ST(ACCESS_VIOLATION) },
    { -EBADF, ST(INVALID_HANDLE) },
    { -ENXIO, ST(NOT_MAPPED_VIEW) },
    { -ENOLCK, ST(NOT_LOCKED) },
    { -ENOMEM, ST(INSUFFICIENT_RESOURCES) },
    { -ENOSPC, ST(INSUFFICIENT_RESOURCES) },
    { -EBUSY, ST(CONFLICTING_ADDRESSES) },
    { -EACCES, ST(ACCESS_DENIED) },
    { -EOPNOTSUPP, ST(NOT_SUPPORTED) },
    { -ENOENT, ST(NOT_FOUND) },
    { -EPROTO, ST(REVISION_MISMATCH) },
    { -ENOSYS, ST(INVALID_DEVICE_REQUEST) },
    { -ENOTCONN, ST(DEVICE_NOT_READY) },
    { -ETIMEDOUT, ST(DEVICE_NOT_READY) },
    { -EADDRNOTAVAIL, ST(MEMORY_NOT_ALLOCATED) },
    { -EEXIST, ST(OBJECT_NAME_COLLISION) },
    { -EIO, ST(UNSUCCESSFUL) },
    { -EKEYREVOKED, ST(MDLMAP_GRANT_REVOKED) },
    /* forward only: the guest library's pinning failures (see above) */
    { -EPERM, ST(ACCESS_DENIED) },
    { -EAGAIN, ST(INSUFFICIENT_RESOURCES) },
    { -ENFILE, ST(INSUFFICIENT_RESOURCES) },
    /* reverse only: statuses hostd never produces but a peer may send */
    { -ENOMEM, ST(NO_MEMORY) },
    { -ENOSPC, ST(QUOTA_EXCEEDED) },
    { -ENOSYS, ST(NOT_IMPLEMENTED) },
    { -EINVAL, ST(INVALID_PARAMETER_MIX) },
    { -EINVAL, ST(INVALID_PAGE_PROTECTION) },
    { -EFAULT, ST(INVALID_ADDRESS) },
};

int32_t ntstatus_from_errno(int err)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].err == err)
            return table[i].status;
    return ST(UNSUCCESSFUL);
}

int ntstatus_to_errno(int32_t status)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].status == status)
            return table[i].err;
    return -EIO;
}

const char *ntstatus_name(int32_t status)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&mdlmap__v1__nt_status__descriptor, status);
    if (v)
        return v->name;
    static __thread char buf[24];
    snprintf(buf, sizeof(buf), "STATUS_0x%08x", (uint32_t)status);
    return buf;
}
