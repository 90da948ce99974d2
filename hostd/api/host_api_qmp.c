/* VcpuState and RunState: answered once the VM's QEMU has answered on its
 * QMP socket. A request starts a short chain of QMP commands (VcpuState:
 * `info registers -a` through human-monitor-command, then query-status;
 * RunState: stop or cont, then query-status) and the client's connection
 * waits (FCONN_LATER) until the chain ends: answers stay in request order
 * and a client has at most one such request pending. A client that goes
 * away cancels its QMP call. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_api_int.h"
#include "qmp.h"
#include "qmp_regs.h"

#define QMP_DETAIL_LEN 256

struct api_qmp_pending {
    struct api_client *c;
    struct qmp_client *qmp;  /* valid while a call is pending: freeing it completes its calls */
    char vm[64];
    uint64_t request_id;
    Mdlmap__V1__Envelope__BodyCase kind;
    Mdlmap__V1__RunStateRequest__Op op;
    bool status_step;        /* the chain reached query-status */
    uint64_t call;           /* the QMP call pending */
    struct qmp_vcpu *vcpus;  /* VcpuState: the registers read */
    unsigned nvcpus;
};

bool api_qmp_request(const mdl_envelope *req)
{
    return req->body_case == MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE ||
           req->body_case == MDLMAP__V1__ENVELOPE__BODY_RUN_STATE;
}

/* The reply to p's request: status err, the body from what the chain
 * gathered (running and qemu_status from query-status when it got there). */
static int encode(const struct api_qmp_pending *p, int err, const char *detail, bool running, const char *qstatus,
                  uint8_t **out, size_t *out_len)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    if (p->kind == MDLMAP__V1__ENVELOPE__BODY_RUN_STATE) {
        Mdlmap__V1__RunStateResponse rp = MDLMAP__V1__RUN_STATE_RESPONSE__INIT;
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_RUN_STATE_REPLY;
        env.run_state_reply = &rp;
        rp.running = running;
        rp.qemu_status = (char *)(qstatus ? qstatus : "");
        return fconn_reply_encode(&env, p->request_id, err, detail, out, out_len);
    }
    Mdlmap__V1__VcpuStateResponse rp = MDLMAP__V1__VCPU_STATE_RESPONSE__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE_REPLY;
    env.vcpu_state_reply = &rp;
    unsigned n = err ? 0 : p->nvcpus;
    Mdlmap__V1__VcpuState *st = calloc(n ? n : 1, sizeof(*st));
    Mdlmap__V1__VcpuState **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!st || !ptrs) {
        free(st);
        free(ptrs);
        return fconn_reply_encode(&env, p->request_id, -ENOMEM, "out of memory", out, out_len);
    }
    for (unsigned i = 0; i < n; i++) {
        const struct qmp_vcpu *v = &p->vcpus[i];
        mdlmap__v1__vcpu_state__init(&st[i]);
        st[i].index = v->index;
        st[i].rip = v->rip;
        st[i].rsp = v->rsp;
        st[i].cr3 = v->cr3;
        st[i].cr0 = v->cr0;
        st[i].cr4 = v->cr4;
        st[i].efer = v->efer;
        st[i].rflags = v->rflags;
        st[i].cpl = v->cpl;
        ptrs[i] = &st[i];
    }
    rp.n_vcpus = n;
    rp.vcpus = ptrs;
    rp.running = running;
    int rc = fconn_reply_encode(&env, p->request_id, err, detail, out, out_len);
    free(st);
    free(ptrs);
    return rc;
}

static void pending_free(struct api_qmp_pending *p)
{
    free(p->vcpus);
    free(p);
}

static void on_done(void *ctx, int status, const struct json_doc *d, int result, const char *detail);

/* Send the chain's next command: 0, or a negative errno with detail set. */
static int next_call(struct api_qmp_pending *p, char *detail)
{
    const char *cmd = "query-status", *args = NULL;
    if (!p->status_step && p->kind == MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE) {
        cmd = "human-monitor-command";
        args = "{\"command-line\":\"info registers -a\"}";
    } else if (!p->status_step && p->op != MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY) {
        cmd = p->op == MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE ? "stop" : "cont";
    } else {
        p->status_step = true;
    }
    int rc = qmp_call(p->qmp, cmd, args, on_done, p, &p->call);
    if (rc < 0)
        snprintf(detail, QMP_DETAIL_LEN, "vm %s: %s", p->vm,
                 rc == -ENOSPC ? "too many QMP calls waiting for this VM" : "QMP is not connected");
    return rc;
}

/* The registers from the HMP text: 0, or -EIO (QEMU's text is not what
 * QEMU 7.2 prints) with detail. */
static int take_registers(struct api_qmp_pending *p, const struct json_doc *d, int result, char *detail)
{
    const char *text = json_str(d, result);
    if (!text) {
        snprintf(detail, QMP_DETAIL_LEN, "vm %s: human-monitor-command did not return text", p->vm);
        return -EIO;
    }
    p->vcpus = malloc(QMP_MAX_VCPUS * sizeof(*p->vcpus));
    if (!p->vcpus)
        return -ENOMEM;
    char why[128] = "";
    int n = qmp_regs_parse(text, d->n[result].len, p->vcpus, QMP_MAX_VCPUS, why, sizeof(why));
    if (n < 0) {
        snprintf(detail, QMP_DETAIL_LEN, "vm %s: unexpected register dump: %s", p->vm, why);
        return -EIO;
    }
    p->nvcpus = (unsigned)n;
    return 0;
}

/* One step of the chain answered (or failed): go on, or answer the client. */
static void on_done(void *ctx, int status, const struct json_doc *d, int result, const char *qdetail)
{
    struct api_qmp_pending *p = ctx;
    char detail[QMP_DETAIL_LEN] = "";
    bool running = false;
    const char *qstatus = NULL;
    p->call = 0;
    if (status < 0) {
        snprintf(detail, sizeof(detail), "%s", qdetail ? qdetail : "QMP call failed");
    } else if (!p->status_step) {
        if (p->kind == MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE)
            status = take_registers(p, d, result, detail);
        else
            log_info_limited(&p->c->api->op_log, "api: request lines", "api: pid %d uid %u: vm %s %s",
                             (int)p->c->peer.pid, (unsigned)p->c->peer.uid, p->vm,
                             p->op == MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE ? "paused" : "resumed");
        if (status == 0) {
            p->status_step = true;
            if (next_call(p, detail) == 0)
                return;
            status = -ENOTCONN;
        }
    } else {
        qstatus = json_str(d, json_get(d, result, "status"));
        if (!qstatus || json_bool(d, json_get(d, result, "running"), &running) < 0) {
            snprintf(detail, sizeof(detail), "vm %s: query-status answer without status or running", p->vm);
            status = -EIO;
            qstatus = NULL;
        }
    }
    struct api_client *c = p->c;
    uint8_t *f = NULL;
    size_t n = 0;
    int rc = encode(p, status, detail, running, qstatus, &f, &n);
    c->qmp_pending = NULL;
    pending_free(p);
    api_deferred_answer(c, rc == 0 ? f : NULL, n);
}

int api_qmp_dispatch(struct api_client *c, const mdl_envelope *req)
{
    const struct api_ctx *ctx = &c->api->ctx;
    struct api_qmp_pending *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->c = c;
    p->request_id = req->request_id;
    p->kind = req->body_case;
    const char *name;
    if (p->kind == MDLMAP__V1__ENVELOPE__BODY_VCPU_STATE) {
        name = req->vcpu_state->vm_name;
    } else {
        name = req->run_state->vm_name;
        p->op = req->run_state->op;
    }
    snprintf(p->vm, sizeof(p->vm), "%s", name ? name : "");
    char detail[QMP_DETAIL_LEN] = "";
    struct host_api_vm vm;
    int rc;
    if (p->op != MDLMAP__V1__RUN_STATE_REQUEST__OP__QUERY && p->op != MDLMAP__V1__RUN_STATE_REQUEST__OP__PAUSE &&
        p->op != MDLMAP__V1__RUN_STATE_REQUEST__OP__RESUME) {
        snprintf(detail, sizeof(detail), "unknown run state operation %d", (int)p->op);
        rc = -EINVAL;
    } else if (!ctx->vm_ops || !name || ctx->vm_ops->lookup(ctx->vm_ctx, name, &vm) < 0) {
        snprintf(detail, sizeof(detail), "no VM named '%s'", p->vm);
        rc = -ENOENT;
    } else if (!vm.introspect) {
        snprintf(detail, sizeof(detail), "vm %s: introspection is not enabled (introspect=on)", p->vm);
        rc = -EACCES;
    } else if (!vm.qmp) {
        snprintf(detail, sizeof(detail), "vm %s has no QMP socket (qmp=PATH)", p->vm);
        rc = -EOPNOTSUPP;
    } else {
        p->qmp = vm.qmp;
        rc = next_call(p, detail);
    }
    if (rc == 0) {
        c->qmp_pending = p;
        return FCONN_LATER;
    }
    uint8_t *f;
    size_t n;
    rc = encode(p, rc, detail, false, NULL, &f, &n);
    pending_free(p);
    if (rc < 0)
        return rc;
    fconn_queue(&c->fc, f, n);
    return 0;
}

void api_qmp_cancel(struct api_client *c)
{
    struct api_qmp_pending *p = c->qmp_pending;
    if (!p)
        return;
    if (p->call)
        qmp_cancel(p->qmp, p->call);
    c->qmp_pending = NULL;
    pending_free(p);
}
