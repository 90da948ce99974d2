/* wdm.h-style names for libmdlmap: code written against the Windows MDL
 * routines ports by including this header instead of <wdm.h>.
 *
 * Where the mapped address lives: MmMapLockedPages*, MmGetSystemAddressForMdlSafe
 * and MDL->MappedSystemVa hold the HOST virtual address that mdlmap-hostd
 * mapped the pages at (KernelMode: hostd's own address space; UserMode: the
 * named host consumer's), plus ByteOffset. It is an opaque token in the guest:
 * never dereference it; pass it back to MmUnmapLockedPages or to the host.
 *
 * Declarations are written from the documented API; types have the Windows
 * widths (ULONG is 32-bit). Exceptions use MDL_TRY/MDL_EXCEPT/MDL_END_TRY
 * (mdl_except.h) in place of __try/__except. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "mdl_except.h"
#include "mdlmap.h"

/* ------------------------------------------------------------------ types */
#ifndef VOID
#define VOID void
#endif
typedef void *PVOID;
typedef uint8_t UCHAR, BOOLEAN, KIRQL, *PKIRQL;
typedef int8_t CCHAR;
typedef int16_t CSHORT;
typedef uint16_t USHORT;
typedef uint32_t ULONG, *PULONG;
typedef int32_t LONG;
typedef uint64_t ULONG64, ULONGLONG;
typedef uintptr_t ULONG_PTR, SIZE_T;
typedef int32_t NTSTATUS;
typedef ULONG_PTR PFN_NUMBER, *PPFN_NUMBER;
typedef struct _IRP IRP, *PIRP;            /* opaque: there are no IRPs here */
typedef struct _EPROCESS *PEPROCESS;
#ifndef TRUE
#define TRUE 1
#define FALSE 0
#endif

typedef CCHAR KPROCESSOR_MODE;
typedef enum _MODE { KernelMode = MDL_KERNEL_MODE, UserMode = MDL_USER_MODE, MaximumMode } MODE;

typedef enum _LOCK_OPERATION {
    IoReadAccess = MDL_IO_READ, IoWriteAccess = MDL_IO_WRITE, IoModifyAccess = MDL_IO_MODIFY
} LOCK_OPERATION;

typedef enum _MEMORY_CACHING_TYPE {
    MmNotMapped = -1,
    MmNonCached = MDL_NON_CACHED,
    MmCached = MDL_CACHED,
    MmWriteCombined = MDL_WRITE_COMBINED,
    MmHardwareCoherentCached = MDL_HW_COHERENT_CACHED,
    MmNonCachedUnordered = MDL_NON_CACHED_UNORDERED,
    MmUSWCCached = MDL_USWC_CACHED,
    MmMaximumCacheType = MDL_CACHE_MAX
} MEMORY_CACHING_TYPE;

typedef enum _MM_PAGE_PRIORITY {
    LowPagePriority = MDL_PRIORITY_LOW,
    NormalPagePriority = MDL_PRIORITY_NORMAL,
    HighPagePriority = MDL_PRIORITY_HIGH
} MM_PAGE_PRIORITY;
#define MdlMappingNoWrite MDL_MAPPING_NO_WRITE
#define MdlMappingNoExecute MDL_MAPPING_NO_EXECUTE

/* -------------------------------------------------------------------- MDL */
typedef struct _MDL {
    struct _MDL *Next;
    CSHORT Size;
    CSHORT MdlFlags;
    PEPROCESS Process;
    PVOID MappedSystemVa;
    PVOID StartVa;
    ULONG ByteCount;
    ULONG ByteOffset;
} MDL, *PMDL;
_Static_assert(sizeof(MDL) == sizeof(struct mdl), "MDL layout");
_Static_assert(offsetof(MDL, MdlFlags) == offsetof(struct mdl, flags), "MDL layout");
_Static_assert(offsetof(MDL, MappedSystemVa) == offsetof(struct mdl, mapped_system_va), "MDL layout");
_Static_assert(offsetof(MDL, ByteOffset) == offsetof(struct mdl, byte_offset), "MDL layout");

static inline struct mdl *mdl_from_wdm(PMDL m) { return (struct mdl *)(void *)m; }
static inline PMDL wdm_from_mdl(struct mdl *m) { return (PMDL)(void *)m; }

#define MDL_MAPPED_TO_SYSTEM_VA     MDL_F_MAPPED_TO_SYSTEM_VA
#define MDL_PAGES_LOCKED            MDL_F_PAGES_LOCKED
#define MDL_SOURCE_IS_NONPAGED_POOL MDL_F_SOURCE_IS_NONPAGED_POOL
#define MDL_ALLOCATED_FIXED_SIZE    MDL_F_ALLOCATED_FIXED_SIZE
#define MDL_PARTIAL                 MDL_F_PARTIAL
#define MDL_PARTIAL_HAS_BEEN_MAPPED MDL_F_PARTIAL_HAS_BEEN_MAPPED
#define MDL_IO_PAGE_READ            MDL_F_IO_PAGE_READ
#define MDL_WRITE_OPERATION         MDL_F_WRITE_OPERATION
#define MDL_LOCKED_PAGE_TABLES      MDL_F_LOCKED_PAGE_TABLES
#define MDL_FREE_EXTRA_PTES         MDL_F_FREE_EXTRA_PTES
#define MDL_DESCRIBES_AWE           MDL_F_DESCRIBES_AWE
#define MDL_IO_SPACE                MDL_F_IO_SPACE
#define MDL_NETWORK_HEADER          MDL_F_NETWORK_HEADER
#define MDL_MAPPING_CAN_FAIL        MDL_F_MAPPING_CAN_FAIL
#define MDL_ALLOCATED_MUST_SUCCEED  MDL_F_ALLOCATED_MUST_SUCCEED
#define MDL_INTERNAL                MDL_F_INTERNAL

#ifndef PAGE_SIZE
#define PAGE_SIZE MDL_PAGE_SIZE
#endif
#ifndef PAGE_SHIFT
#define PAGE_SHIFT MDL_PAGE_SHIFT
#endif
#define BYTE_OFFSET(va) ((ULONG)((ULONG_PTR)(va) & MDL_PAGE_MASK))
#define PAGE_ALIGN(va) ((PVOID)((ULONG_PTR)(va) & ~MDL_PAGE_MASK))
#define ADDRESS_AND_SIZE_TO_SPAN_PAGES(va, size) ((ULONG)MDL_SPAN_PAGES(va, size))

static inline PPFN_NUMBER MmGetMdlPfnArray(PMDL m) { return (PPFN_NUMBER)(m + 1); }
static inline ULONG MmGetMdlByteCount(PMDL m) { return m->ByteCount; }
static inline ULONG MmGetMdlByteOffset(PMDL m) { return m->ByteOffset; }
static inline PVOID MmGetMdlVirtualAddress(PMDL m) { return (char *)m->StartVa + m->ByteOffset; }

/* --------------------------------------------------------------- statuses */
#define NT_SUCCESS(s) ((NTSTATUS)(s) >= 0)
#define STATUS_SUCCESS                MDL_STATUS_SUCCESS
#define STATUS_UNSUCCESSFUL           MDL_STATUS_UNSUCCESSFUL
#define STATUS_NOT_IMPLEMENTED        MDL_STATUS_NOT_IMPLEMENTED
#define STATUS_ACCESS_VIOLATION       MDL_STATUS_ACCESS_VIOLATION
#define STATUS_INVALID_HANDLE         MDL_STATUS_INVALID_HANDLE
#define STATUS_INVALID_PARAMETER      MDL_STATUS_INVALID_PARAMETER
#define STATUS_INVALID_DEVICE_REQUEST MDL_STATUS_INVALID_DEVICE_REQUEST
#define STATUS_NO_MEMORY              MDL_STATUS_NO_MEMORY
#define STATUS_CONFLICTING_ADDRESSES  MDL_STATUS_CONFLICTING_ADDRESSES
#define STATUS_NOT_MAPPED_VIEW        MDL_STATUS_NOT_MAPPED_VIEW
#define STATUS_ACCESS_DENIED          MDL_STATUS_ACCESS_DENIED
#define STATUS_NOT_LOCKED             MDL_STATUS_NOT_LOCKED
#define STATUS_INVALID_PARAMETER_MIX  MDL_STATUS_INVALID_PARAMETER_MIX
#define STATUS_QUOTA_EXCEEDED         MDL_STATUS_QUOTA_EXCEEDED
#define STATUS_INVALID_PAGE_PROTECTION MDL_STATUS_INVALID_PAGE_PROTECTION
#define STATUS_REVISION_MISMATCH      MDL_STATUS_REVISION_MISMATCH
#define STATUS_INSUFFICIENT_RESOURCES MDL_STATUS_INSUFFICIENT_RESOURCES
#define STATUS_DEVICE_NOT_READY       MDL_STATUS_DEVICE_NOT_READY
#define STATUS_NOT_SUPPORTED          MDL_STATUS_NOT_SUPPORTED
#define STATUS_INVALID_ADDRESS        MDL_STATUS_INVALID_ADDRESS
#define STATUS_NOT_FOUND              MDL_STATUS_NOT_FOUND

/* ------------------------------------------------------------- exceptions */
#define EXCEPTION_EXECUTE_HANDLER MDL_EXCEPTION_EXECUTE_HANDLER
#define EXCEPTION_CONTINUE_SEARCH MDL_EXCEPTION_CONTINUE_SEARCH
#define EXCEPTION_CONTINUE_EXECUTION MDL_EXCEPTION_CONTINUE_EXECUTION
#define GetExceptionCode() mdl_exception_code()
static inline __attribute__((noreturn)) void ExRaiseStatus(NTSTATUS s) { mdl_raise(s); }

/* ------------------------------------------------------------------- IRQL */
#define PASSIVE_LEVEL MDL_PASSIVE_LEVEL
#define LOW_LEVEL MDL_PASSIVE_LEVEL
#define APC_LEVEL MDL_APC_LEVEL
#define DISPATCH_LEVEL MDL_DISPATCH_LEVEL
#define HIGH_LEVEL MDL_HIGH_LEVEL
static inline KIRQL KeGetCurrentIrql(void) { return mdl_irql_get(); }
static inline void KeRaiseIrql(KIRQL new_irql, PKIRQL old_irql) { *old_irql = mdl_irql_raise(new_irql); }
static inline void KeLowerIrql(KIRQL new_irql) { mdl_irql_lower(new_irql); }
static inline KIRQL KeRaiseIrqlToDpcLevel(void) { return mdl_irql_raise(DISPATCH_LEVEL); }

/* ------------------------------------------------------------- bug checks */
#define IRQL_NOT_GREATER_OR_EQUAL MDL_BUG_IRQL_NOT_GREATER_OR_EQUAL
#define IRQL_NOT_LESS_OR_EQUAL MDL_BUG_IRQL_NOT_LESS_OR_EQUAL
#define NO_MORE_SYSTEM_PTES MDL_BUG_NO_MORE_SYSTEM_PTES
#define PROCESS_HAS_LOCKED_PAGES MDL_BUG_PROCESS_HAS_LOCKED_PAGES
#define DRIVER_VERIFIER_DETECTED_VIOLATION MDL_BUG_DRIVER_VERIFIER_DETECTED_VIOLATION
#define DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS MDL_BUG_DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS
static inline void KeBugCheckEx(ULONG code, ULONG_PTR p1, ULONG_PTR p2, ULONG_PTR p3, ULONG_PTR p4)
{
    mdl_bugcheck(code, p1, p2, p3, p4);
}

/* --------------------------------------------------------------- routines */
/* IRQL <= DISPATCH_LEVEL. SecondaryBuffer, ChargeQuota and Irp are ignored. */
PMDL IoAllocateMdl(PVOID VirtualAddress, ULONG Length, BOOLEAN SecondaryBuffer,
                   BOOLEAN ChargeQuota, PIRP Irp);
/* Verifier: 0xC4 if still mapped or locked (then released anyway). */
VOID IoFreeMdl(PMDL Mdl);
/* Raises the failure status (STATUS_ACCESS_VIOLATION for a bad buffer). IRQL <= APC_LEVEL. */
VOID MmProbeAndLockPages(PMDL Mdl, KPROCESSOR_MODE AccessMode, LOCK_OPERATION Operation);
/* Also releases the system mapping (R10). IRQL <= DISPATCH_LEVEL. */
VOID MmUnlockPages(PMDL Mdl);
/* Obsolete (kept, R13): SpecifyCache(MmCached, NULL, TRUE, HighPagePriority). */
PVOID MmMapLockedPages(PMDL Mdl, KPROCESSOR_MODE AccessMode);
/* Failure: UserMode raises; KernelMode bug checks 0x3F if BugCheckOnFailure,
 * else NULL (mdl_last_status() says why). */
PVOID MmMapLockedPagesSpecifyCache(PMDL Mdl, KPROCESSOR_MODE AccessMode,
                                   MEMORY_CACHING_TYPE CacheType, PVOID RequestedAddress,
                                   ULONG BugCheckOnFailure, ULONG Priority);
/* The existing system mapping, else a new KernelMode one; NULL on failure (R9). */
PVOID MmGetSystemAddressForMdlSafe(PMDL Mdl, ULONG Priority);
VOID MmUnmapLockedPages(PVOID BaseAddress, PMDL Mdl);
