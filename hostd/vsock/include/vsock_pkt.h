/* virtio-vsock packet header (virtio spec 1.2 section 5.10.6): struct
 * vsock_hdr is the host byte order view; the 44-byte wire form is packed
 * little-endian and is read and written only by vsock_hdr_decode/encode. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VSOCK_HDR_SIZE 44u

enum vsock_type { VSOCK_TYPE_STREAM = 1, VSOCK_TYPE_SEQPACKET = 2 };
#define VIRTIO_VSOCK_F_SEQPACKET 1 /* device feature bit (virtio spec 5.10.3) */
enum vsock_op {
    VSOCK_OP_INVALID = 0,
    VSOCK_OP_REQUEST = 1,
    VSOCK_OP_RESPONSE = 2,
    VSOCK_OP_RST = 3,
    VSOCK_OP_SHUTDOWN = 4,
    VSOCK_OP_RW = 5,
    VSOCK_OP_CREDIT_UPDATE = 6,
    VSOCK_OP_CREDIT_REQUEST = 7,
};
#define VSOCK_SHUTDOWN_RCV 1u
#define VSOCK_SHUTDOWN_SEND 2u
#define VSOCK_SEQ_EOM 1u   /* SEQPACKET: last packet of a message */
#define VSOCK_SEQ_EOR 2u   /* SEQPACKET: MSG_EOR */

struct vsock_hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port;
    uint32_t len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
};

/* Parse 44 wire bytes; returns 0 or -EINVAL if len < 44. Does not judge fields. */
int vsock_hdr_decode(const uint8_t *wire, size_t len, struct vsock_hdr *out);
void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t wire[VSOCK_HDR_SIZE]);
/* Field sanity for a packet arriving from a guest whose CID is guest_cid:
 * known type and op, src_cid == guest_cid, len consistent with payload_avail and
 * max_payload, no payload on control ops. 0 or -EINVAL/-EPERM/-EMSGSIZE. */
int vsock_hdr_check(const struct vsock_hdr *h, uint64_t guest_cid, uint64_t payload_avail, uint32_t max_payload);
bool vsock_cid_reserved(uint64_t cid);
