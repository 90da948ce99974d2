/* An asynchronous QMP client on hostd's event loop, one per VM with a QMP
 * socket (--vm ...,qmp=PATH). It connects (non-blocking, again with backoff
 * while QEMU is not there or after it went away), reads the greeting, sends
 * qmp_capabilities, then sends queued commands one at a time, each with a
 * timeout. QEMU is untrusted: a message is at most QMP_MAX_MESSAGE bytes and
 * QMP_MAX_NODES JSON values, at most QMP_MAX_PENDING calls wait per VM, an
 * answer must carry the id of the command in flight, and anything else ends
 * the connection (its calls fail, hostd reconnects). Asynchronous events
 * ({"event": ...}) are skipped. Nothing here blocks the loop. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "qmp_json.h"

#define QMP_MAX_MESSAGE (1024u * 1024u) /* one line of QMP, newline included */
#define QMP_MAX_NODES 4096              /* JSON values in one message */
#define QMP_MAX_PENDING 16u             /* calls queued or in flight per VM */
#define QMP_TIMEOUT_MS 5000u            /* default answer and handshake timeout */
#define QMP_BACKOFF_MIN_MS 100u         /* reconnect delays double up to the max */
#define QMP_BACKOFF_MAX_MS 2000u

struct qmp_client;

/* A call completed. status 0: result is the node of the "return" value in
 * doc (both valid only during the callback). Otherwise doc is NULL and
 * status is -ENOTCONN (no connection, or it was lost or broke the protocol
 * before the answer), -ETIMEDOUT (no answer within the timeout: the
 * connection is reset) or -EIO (QEMU answered with an error); detail says
 * what happened. The callback may queue or cancel calls, never free q. */
typedef void (*qmp_done_fn)(void *ctx, int status, const struct json_doc *doc, int result, const char *detail);

struct qmp_config {
    const char *name;     /* the VM's name, for logs */
    const char *path;     /* QEMU's QMP Unix socket */
    struct evloop *loop;
    unsigned timeout_ms;  /* per command and for the handshake; 0: QMP_TIMEOUT_MS */
};

/* Starts connecting at once (a missing socket is retried). NULL: out of
 * memory or a path too long for a Unix socket. */
struct qmp_client *qmp_client_new(const struct qmp_config *cfg);
/* Calls still pending complete with -ENOTCONN before it returns. May be
 * called from one of q's completions: the memory goes after the event. */
void qmp_client_free(struct qmp_client *q);
/* Greeting read and capabilities negotiated. */
bool qmp_client_ready(const struct qmp_client *q);

/* Queue command with arguments (the text of a JSON object, or NULL). The
 * callback runs later, from the loop (never inside qmp_call), exactly once
 * unless the call is cancelled. 0 and *id; -ENOTCONN when there is no
 * connection (none is being set up either), -ENOSPC when QMP_MAX_PENDING
 * calls wait, -EINVAL, -ENOMEM. */
int qmp_call(struct qmp_client *q, const char *command, const char *args, qmp_done_fn cb, void *ctx,
             uint64_t *id);
/* Its requester is gone: the callback of call id will not run (a command
 * already sent is still answered by QEMU; the answer is dropped). */
void qmp_cancel(struct qmp_client *q, uint64_t id);
