/* The vhost-user protocol as QEMU 7.2 speaks it: request numbers, flags and
 * payload layouts (vhost-user spec). Messages are in the host's native byte
 * order (the protocol never crosses machines); the rings and config space
 * they describe are little-endian (virtio). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* Requests (vhost-user spec, front-end message types) */
enum vu_request {
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_GET_CONFIG = 24,
    VHOST_USER_SET_CONFIG = 25,
    VHOST_USER_RESET_DEVICE = 34,
    VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    VHOST_USER_ADD_MEM_REG = 37,
    VHOST_USER_REM_MEM_REG = 38,
};

#define VHOST_USER_VERSION 0x1u
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_REPLY_MASK (0x1u << 2)
#define VHOST_USER_NEED_REPLY_MASK (0x1u << 3)
#define VHOST_USER_HDR_SIZE 12u
#define VHOST_USER_MAX_PAYLOAD 4096u
#define VHOST_USER_MAX_FDS 8u
#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD_MASK (0x1u << 8)

#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VHOST_USER_PROTOCOL_F_MQ 0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_CONFIG 9
#define VHOST_USER_PROTOCOL_F_RESET_DEVICE 13
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

#define VIRTIO_F_NOTIFY_ON_EMPTY 24
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VU_MAX_MEM_SLOTS 32
#define VU_MAX_QUEUES 8 /* queues a device may ask the transport to serve */

struct vu_msg_hdr { uint32_t request; uint32_t flags; uint32_t size; } __attribute__((packed));
struct vu_region { uint64_t gpa; uint64_t size; uint64_t uva; uint64_t mmap_offset; } __attribute__((packed));
struct vu_mem_table { uint32_t nregions; uint32_t padding; struct vu_region r[8]; } __attribute__((packed));
struct vu_mem_reg { uint64_t padding; struct vu_region r; } __attribute__((packed));
struct vu_vring_state { uint32_t index; uint32_t num; } __attribute__((packed));
struct vu_vring_addr {
    uint32_t index, flags;
    uint64_t desc, used, avail, log;
} __attribute__((packed));
struct vu_config { uint32_t offset, size, flags; uint8_t payload[]; } __attribute__((packed));

/* Pure validation of one message (header already read): checks the payload size
 * and fd count that request needs. 0 or -EINVAL / -EPROTO. */
int vu_msg_validate(const struct vu_msg_hdr *hdr, const uint8_t *payload, unsigned nfds);
const char *vu_request_name(uint32_t req);

/* Requests whose reply is part of the request itself (the spec's "reply"
 * messages); REPLY_ACK never applies to them. */
static inline bool vu_request_has_reply(uint32_t req)
{
    switch (req) {
    case VHOST_USER_GET_FEATURES:
    case VHOST_USER_GET_PROTOCOL_FEATURES:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_GET_QUEUE_NUM:
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return true;
    default:
        return false;
    }
}
