/* Internals shared by the vhost-user server files (vhost_user*.c) and the
 * vhost-user fuzz target. Not an interface for other areas. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhost_user.h"

/* Returned by handlers when the connection must be dropped (reply could not
 * be sent, protocol violation). Other negative values are request failures. */
#define VU_FATAL (-ECONNABORTED)

/* Feature bits this backend offers. */
#define VU_OFFERED_FEATURES                                                                  \
    ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |                  \
     (1ull << VIRTIO_RING_F_EVENT_IDX) | (1ull << VIRTIO_VSOCK_F_SEQPACKET) |                \
     (1ull << VHOST_USER_F_PROTOCOL_FEATURES))
#define VU_OFFERED_PROTOCOL_FEATURES                                                         \
    ((1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) | (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |    \
     (1ull << VHOST_USER_PROTOCOL_F_RESET_DEVICE) |                                          \
     (1ull << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

/* Reassembly of one message from the stream socket. */
struct vu_conn {
    uint8_t hdr[VHOST_USER_HDR_SIZE];
    size_t hdr_got;
    uint8_t payload[VHOST_USER_MAX_PAYLOAD];
    size_t pay_got;
    int fds[VHOST_USER_MAX_FDS];
    unsigned nfds;
    /* rings started with a NOFD kick are polled by this timerfd */
    int poll_fd;
    struct ev_handler poll_h;
    uint16_t polled_avail[VSOCK_NUM_VQ]; /* avail idx seen at the last poll tick */
};

/* vm->vu, allocated on first use (NULL when out of memory). */
struct vu_conn *vu_conn_get(struct vm *vm);

/* Validate, handle and answer one complete message. Every fd in fds[] is
 * either consumed (ownership taken) or closed before this returns.
 * 0: continue; negative: drop the connection. */
int vu_process_msg(struct vm *vm, const struct vu_msg_hdr *hdr, const uint8_t *payload, int *fds, unsigned nfds);

/* Tear down device state (vsock conns, MDL mappings, rings); keeps the memory
 * table and the connection. */
void vu_device_teardown(struct vm *vm, const char *why);
const char *vu_request_name(uint32_t req);
