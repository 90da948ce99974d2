/* Host API client library. */
#include "mdlmap_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usock.h"

int mdlmap_client_open(struct mdlmap_client *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->next_id = 1;
    if (!path)
        path = getenv("MDLMAP_API");
    if (!path || !*path)
        path = MDLMAP_DEFAULT_API;
    int fd = usock_connect(path, 0);
    if (fd < 0)
        return fd;
    c->fd = fd;
    return 0;
}

void mdlmap_client_close(struct mdlmap_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

int mdlmap_client_call(struct mdlmap_client *c, mdl_envelope *req, mdl_envelope **resp)
{
    *resp = NULL;
    req->version = MDLMAP_PROTO_VERSION;
    req->request_id = c->next_id++;
    int rc = frame_write_fd(c->fd, req);
    if (rc < 0)
        return rc;
    rc = frame_read_fd(c->fd, resp);
    if (rc < 0)
        return rc;
    c->last_status = (*resp)->status;
    snprintf(c->last_detail, sizeof(c->last_detail), "%s", (*resp)->detail ? (*resp)->detail : "");
    if ((*resp)->request_id != req->request_id && (*resp)->status == 0) {
        frame_envelope_free(*resp);
        *resp = NULL;
        return -EPROTO;
    }
    return (*resp)->status == 0 ? 0 : -EREMOTEIO;
}

int mdlmap_client_list(struct mdlmap_client *c, const char *vm_name, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__ListMappingsRequest rq = MDLMAP__V1__LIST_MAPPINGS_REQUEST__INIT;
    rq.vm_name = (char *)(vm_name ? vm_name : "");
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_LIST;
    env.list = &rq;
    int rc = mdlmap_client_call(c, &env, resp);
    if (rc == 0 && (*resp)->body_case != MDLMAP__V1__ENVELOPE__BODY_LIST_REPLY)
        rc = -EPROTO;
    return rc;
}

int mdlmap_client_stats(struct mdlmap_client *c, mdl_envelope **resp)
{
    mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT;
    Mdlmap__V1__StatsRequest rq = MDLMAP__V1__STATS_REQUEST__INIT;
    env.body_case = MDLMAP__V1__ENVELOPE__BODY_STATS;
    env.stats = &rq;
    int rc = mdlmap_client_call(c, &env, resp);
    if (rc == 0 && (*resp)->body_case != MDLMAP__V1__ENVELOPE__BODY_STATS_REPLY)
        rc = -EPROTO;
    return rc;
}

int mdlmap_client_read(struct mdlmap_client *c, uint64_t handle, uint64_t offset, void *buf, size_t len)
{
    uint8_t *out = buf;
    do {
        size_t n = len > MDLMAP_MAX_IO_CHUNK ? MDLMAP_MAX_IO_CHUNK : len;
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
        Mdlmap__V1__ReadRequest rq = MDLMAP__V1__READ_REQUEST__INIT;
        rq.map_handle = handle;
        rq.offset = offset;
        rq.length = (uint32_t)n;
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_READ;
        env.read = &rq;
        int rc = mdlmap_client_call(c, &env, &resp);
        if (rc == 0 && (resp->body_case != MDLMAP__V1__ENVELOPE__BODY_READ_REPLY || resp->read_reply->data.len != n))
            rc = -EPROTO;
        if (rc == 0 && n)
            memcpy(out, resp->read_reply->data.data, n);
        frame_envelope_free(resp);
        if (rc < 0)
            return rc;
        out += n;
        offset += n;
        len -= n;
    } while (len);
    return 0;
}

int mdlmap_client_write(struct mdlmap_client *c, uint64_t handle, uint64_t offset, const void *buf, size_t len)
{
    const uint8_t *in = buf;
    do {
        size_t n = len > MDLMAP_MAX_IO_CHUNK ? MDLMAP_MAX_IO_CHUNK : len;
        mdl_envelope env = MDLMAP__V1__ENVELOPE__INIT, *resp;
        Mdlmap__V1__WriteRequest rq = MDLMAP__V1__WRITE_REQUEST__INIT;
        rq.map_handle = handle;
        rq.offset = offset;
        rq.data.data = (uint8_t *)in;
        rq.data.len = n;
        env.body_case = MDLMAP__V1__ENVELOPE__BODY_WRITE;
        env.write = &rq;
        int rc = mdlmap_client_call(c, &env, &resp);
        if (rc == 0 && (resp->body_case != MDLMAP__V1__ENVELOPE__BODY_WRITE_REPLY || resp->write_reply->written != n))
            rc = -EPROTO; /* a short or foreign answer: the data did not all land */
        frame_envelope_free(resp);
        if (rc < 0)
            return rc;
        in += n;
        offset += n;
        len -= n;
    } while (len);
    return 0;
}
