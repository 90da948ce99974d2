/* Pure validation of vhost-user messages: header flags, payload size and fd
 * count per request. Nothing here trusts the sender. */
#include <errno.h>
#include <string.h>

#include "vu_internal.h"

const char *vu_request_name(uint32_t req)
{
    switch (req) {
    case VHOST_USER_GET_FEATURES: return "GET_FEATURES";
    case VHOST_USER_SET_FEATURES: return "SET_FEATURES";
    case VHOST_USER_SET_OWNER: return "SET_OWNER";
    case VHOST_USER_RESET_OWNER: return "RESET_OWNER";
    case VHOST_USER_SET_MEM_TABLE: return "SET_MEM_TABLE";
    case VHOST_USER_SET_LOG_BASE: return "SET_LOG_BASE";
    case VHOST_USER_SET_LOG_FD: return "SET_LOG_FD";
    case VHOST_USER_SET_VRING_NUM: return "SET_VRING_NUM";
    case VHOST_USER_SET_VRING_ADDR: return "SET_VRING_ADDR";
    case VHOST_USER_SET_VRING_BASE: return "SET_VRING_BASE";
    case VHOST_USER_GET_VRING_BASE: return "GET_VRING_BASE";
    case VHOST_USER_SET_VRING_KICK: return "SET_VRING_KICK";
    case VHOST_USER_SET_VRING_CALL: return "SET_VRING_CALL";
    case VHOST_USER_SET_VRING_ERR: return "SET_VRING_ERR";
    case VHOST_USER_GET_PROTOCOL_FEATURES: return "GET_PROTOCOL_FEATURES";
    case VHOST_USER_SET_PROTOCOL_FEATURES: return "SET_PROTOCOL_FEATURES";
    case VHOST_USER_GET_QUEUE_NUM: return "GET_QUEUE_NUM";
    case VHOST_USER_SET_VRING_ENABLE: return "SET_VRING_ENABLE";
    case VHOST_USER_GET_CONFIG: return "GET_CONFIG";
    case VHOST_USER_SET_CONFIG: return "SET_CONFIG";
    case VHOST_USER_RESET_DEVICE: return "RESET_DEVICE";
    case VHOST_USER_GET_MAX_MEM_SLOTS: return "GET_MAX_MEM_SLOTS";
    case VHOST_USER_ADD_MEM_REG: return "ADD_MEM_REG";
    case VHOST_USER_REM_MEM_REG: return "REM_MEM_REG";
    default: return "UNKNOWN";
    }
}

/* fd-carrying u64 (SET_VRING_KICK/CALL/ERR): index in bits 0-7, NOFD bit 8 */
static int validate_vring_fd(const uint8_t *payload, unsigned nfds)
{
    uint64_t v;
    memcpy(&v, payload, sizeof(v));
    if (v & ~(uint64_t)(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK))
        return -EINVAL;
    bool nofd = v & VHOST_USER_VRING_NOFD_MASK;
    return nfds == (nofd ? 0u : 1u) ? 0 : -EINVAL;
}

int vu_msg_validate(const struct vu_msg_hdr *hdr, const uint8_t *payload, unsigned nfds)
{
    if (!hdr)
        return -EINVAL;
    /* requests carry version 1 and optionally NEED_REPLY; nothing else */
    if ((hdr->flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION ||
        (hdr->flags & ~(VHOST_USER_VERSION_MASK | VHOST_USER_NEED_REPLY_MASK)))
        return -EPROTO;
    if (hdr->size > VHOST_USER_MAX_PAYLOAD || nfds > VHOST_USER_MAX_FDS)
        return -EINVAL;
    if (hdr->size && !payload)
        return -EINVAL;
    uint32_t sz = hdr->size;

    switch (hdr->request) {
    case VHOST_USER_GET_FEATURES:
    case VHOST_USER_SET_OWNER:
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_GET_PROTOCOL_FEATURES:
    case VHOST_USER_GET_QUEUE_NUM:
    case VHOST_USER_RESET_DEVICE:
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return sz == 0 && nfds == 0 ? 0 : -EINVAL;
    case VHOST_USER_SET_FEATURES:
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        return sz == 8 && nfds == 0 ? 0 : -EINVAL;
    case VHOST_USER_SET_MEM_TABLE: {
        if (sz < 8)
            return -EINVAL;
        uint32_t n;
        memcpy(&n, payload, sizeof(n));
        if (n > 8 || sz != 8 + n * sizeof(struct vu_region) || nfds != n)
            return -EINVAL;
        return 0;
    }
    case VHOST_USER_SET_LOG_BASE:
        return sz == 16 && nfds <= 1 ? 0 : -EINVAL;
    case VHOST_USER_SET_LOG_FD:
        return sz <= 8 && nfds <= 1 ? 0 : -EINVAL;
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE:
        return sz == sizeof(struct vu_vring_state) && nfds == 0 ? 0 : -EINVAL;
    case VHOST_USER_SET_VRING_ADDR:
        return sz == sizeof(struct vu_vring_addr) && nfds == 0 ? 0 : -EINVAL;
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        if (sz != 8)
            return -EINVAL;
        return validate_vring_fd(payload, nfds);
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_SET_CONFIG: {
        if (sz < sizeof(struct vu_config) || nfds != 0)
            return -EINVAL;
        struct vu_config c;
        memcpy(&c, payload, sizeof(c));
        if (c.size > VHOST_USER_MAX_PAYLOAD - sizeof(struct vu_config) || sz != sizeof(struct vu_config) + c.size)
            return -EINVAL;
        return 0;
    }
    case VHOST_USER_ADD_MEM_REG:
        return sz == sizeof(struct vu_mem_reg) && nfds == 1 ? 0 : -EINVAL;
    case VHOST_USER_REM_MEM_REG:
        /* QEMU 7.2 sends the region's fd along; older front-ends don't */
        return sz == sizeof(struct vu_mem_reg) && nfds <= 1 ? 0 : -EINVAL;
    default:
        return -EPROTO;
    }
}
