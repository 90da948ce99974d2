/* virtio-vsock packet header codec and field checks (virtio spec 5.10.6).
 * The wire form is packed little-endian; we assemble fields byte by byte so
 * the code neither depends on host endianness nor on alignment. */
#include "vsock_pkt.h"

#include <errno.h>

static uint64_t get_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;)
        v = (v << 8) | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

/* wire offsets */
enum {
    OFF_SRC_CID = 0, OFF_DST_CID = 8, OFF_SRC_PORT = 16, OFF_DST_PORT = 20,
    OFF_LEN = 24, OFF_TYPE = 28, OFF_OP = 30, OFF_FLAGS = 32,
    OFF_BUF_ALLOC = 36, OFF_FWD_CNT = 40,
};

int vsock_hdr_decode(const uint8_t *wire, size_t len, struct vsock_hdr *out)
{
    if (!wire || !out || len < VSOCK_HDR_SIZE)
        return -EINVAL;
    out->src_cid = get_le(wire + OFF_SRC_CID, 8);
    out->dst_cid = get_le(wire + OFF_DST_CID, 8);
    out->src_port = (uint32_t)get_le(wire + OFF_SRC_PORT, 4);
    out->dst_port = (uint32_t)get_le(wire + OFF_DST_PORT, 4);
    out->len = (uint32_t)get_le(wire + OFF_LEN, 4);
    out->type = (uint16_t)get_le(wire + OFF_TYPE, 2);
    out->op = (uint16_t)get_le(wire + OFF_OP, 2);
    out->flags = (uint32_t)get_le(wire + OFF_FLAGS, 4);
    out->buf_alloc = (uint32_t)get_le(wire + OFF_BUF_ALLOC, 4);
    out->fwd_cnt = (uint32_t)get_le(wire + OFF_FWD_CNT, 4);
    return 0;
}

void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t wire[VSOCK_HDR_SIZE])
{
    put_le(wire + OFF_SRC_CID, h->src_cid, 8);
    put_le(wire + OFF_DST_CID, h->dst_cid, 8);
    put_le(wire + OFF_SRC_PORT, h->src_port, 4);
    put_le(wire + OFF_DST_PORT, h->dst_port, 4);
    put_le(wire + OFF_LEN, h->len, 4);
    put_le(wire + OFF_TYPE, h->type, 2);
    put_le(wire + OFF_OP, h->op, 2);
    put_le(wire + OFF_FLAGS, h->flags, 4);
    put_le(wire + OFF_BUF_ALLOC, h->buf_alloc, 4);
    put_le(wire + OFF_FWD_CNT, h->fwd_cnt, 4);
}

/* 0, 1 (hypervisor/local), 2 (host) and VMADDR_CID_ANY can never be a guest.
 * CIDs are 32-bit in practice; anything wider is invalid too. */
bool vsock_cid_reserved(uint64_t cid)
{
    return cid <= 2 || cid >= 0xffffffffull;
}

int vsock_hdr_check(const struct vsock_hdr *h, uint64_t guest_cid, uint64_t payload_avail, uint32_t max_payload)
{
    if (!h)
        return -EINVAL;
    if (h->type != VSOCK_TYPE_STREAM && h->type != VSOCK_TYPE_SEQPACKET)
        return -EINVAL;
    if (h->op < VSOCK_OP_REQUEST || h->op > VSOCK_OP_CREDIT_REQUEST)
        return -EINVAL;
    if (h->src_cid != guest_cid)
        return -EPERM;
    if (h->len > max_payload)
        return -EMSGSIZE;
    if (h->len > payload_avail)
        return -EINVAL;
    if (h->op != VSOCK_OP_RW && h->len != 0)
        return -EINVAL;
    return 0;
}
