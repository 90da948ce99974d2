/* Host API calls of the QMP tests (VcpuState, RunState), on a connection
 * the test holds, so that it can pipeline requests or walk away with one
 * pending. */
#pragma once
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "frame.h"
#include "ntstatus.h"
#include "rpc_session.h"
#include "tap.h"

#define ST_OK MDLMAP__V1__NT_STATUS__STATUS_SUCCESS
#define ST_NOT_READY MDLMAP__V1__NT_STATUS__STATUS_DEVICE_NOT_READY
#define ST_NOT_SUPPORTED MDLMAP__V1__NT_STATUS__STATUS_NOT_SUPPORTED
#define ST_DENIED MDLMAP__V1__NT_STATUS__STATUS_ACCESS_DENIED
#define ST_NOT_FOUND MDLMAP__V1__NT_STATUS__STATUS_NOT_FOUND
#define ST_RESOURCES MDLMAP__V1__NT_STATUS__STATUS_INSUFFICIENT_RESOURCES
#define ST_UNSUCCESSFUL MDLMAP__V1__NT_STATUS__STATUS_UNSUCCESSFUL

static inline int qa_send_vcpu(int fd, uint64_t id, const char *vm)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VcpuStateRequest rq = MDLMAP__V1__VCPU_STATE_REQUEST__INIT;
    rq.vm_name = (char *)vm;
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = id;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE;
    e.vcpu_state = &rq;
    return frame_write_fd(fd, &e);
}

static inline int qa_send_run(int fd, uint64_t id, const char *vm, Mdlmap__V1__RunStateRequest__Op op)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__RunStateRequest rq = MDLMAP__V1__RUN_STATE_REQUEST__INIT;
    rq.vm_name = (char *)vm;
    rq.op = op;
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = id;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_RUN_STATE;
    e.run_state = &rq;
    return frame_write_fd(fd, &e);
}

static inline int qa_send_stats(int fd, uint64_t id)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = id;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    e.stats = &rq;
    return frame_write_fd(fd, &e);
}

static inline int qa_send_vm_remove(int fd, uint64_t id, const char *vm)
{
    mdl_envelope e = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__VmRemoveRequest rq = MDLMAP__V1__VM_REMOVE_REQUEST__INIT;
    rq.name = (char *)vm;
    e.version = MDLMAP_PROTO_VERSION;
    e.request_id = id;
    e.body_case = MDLMAP__V1__ENVELOPE__BODY_VM_REMOVE;
    e.vm_remove = &rq;
    return frame_write_fd(fd, &e);
}

/* The next response on fd within ms (a generous bound: a test hang guard,
 * not a pass/fail timing), or NULL. */
static inline mdl_envelope *qa_read(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    mdl_envelope *r = NULL;
    if (poll(&p, 1, ms) != 1 || frame_read_fd(fd, &r) < 0)
        return NULL;
    return r;
}

/* One request on a fresh connection: RunState op, or VcpuState when op is
 * negative. The response (free it) or NULL. */
static inline mdl_envelope *qa_one(const char *api, const char *vm, int op)
{
    int fd = api_connect(api);
    mdl_envelope *r = NULL;
    if (fd >= 0 && (op < 0 ? qa_send_vcpu(fd, 1, vm) : qa_send_run(fd, 1, vm, op)) == 0)
        r = qa_read(fd, 20000);
    if (fd >= 0)
        close(fd);
    return r;
}

static inline mdl_envelope *qa_vcpu(const char *api, const char *vm)
{
    return qa_one(api, vm, -1);
}

static inline mdl_envelope *qa_run(const char *api, const char *vm, Mdlmap__V1__RunStateRequest__Op op)
{
    return qa_one(api, vm, (int)op);
}

/* The status of a response (RPC_NO_REPLY for none); frees it. */
static inline int32_t qa_status(mdl_envelope *r, const char *what)
{
    int32_t st = r ? r->status : RPC_NO_REPLY;
    if (r && st)
        tap_diag("%s: %s (%s)", what, ntstatus_name(st), r->detail);
    frame_envelope_free(r);
    return st;
}

/* Wait until VcpuState on vm succeeds (hostd has (re)connected to QMP):
 * polled every 50 ms for at most ms. */
static inline bool qa_wait_ready(const char *api, const char *vm, int ms)
{
    for (int waited = 0; waited < ms; waited += 50) {
        mdl_envelope *r = qa_vcpu(api, vm);
        bool ok = r && r->status == ST_OK;
        frame_envelope_free(r);
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}
