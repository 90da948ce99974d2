/* virtio-vsock packet header codec and field checks (virtio spec 5.10.6).
 * The wire form is packed little-endian: fields are copied out of (into) the
 * byte buffer with memcpy, which needs no alignment, and converted with
 * le*toh (htole*), which makes the codec independent of host byte order. */
#include "vsock_pkt.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

static uint16_t get_le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, sizeof(v)); return le16toh(v); }
static uint32_t get_le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, sizeof(v)); return le32toh(v); }
static uint64_t get_le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, sizeof(v)); return le64toh(v); }
static void put_le16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, sizeof(v)); }
static void put_le32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, sizeof(v)); }
static void put_le64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, sizeof(v)); }

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
    out->src_cid = get_le64(wire + OFF_SRC_CID);
    out->dst_cid = get_le64(wire + OFF_DST_CID);
    out->src_port = get_le32(wire + OFF_SRC_PORT);
    out->dst_port = get_le32(wire + OFF_DST_PORT);
    out->len = get_le32(wire + OFF_LEN);
    out->type = get_le16(wire + OFF_TYPE);
    out->op = get_le16(wire + OFF_OP);
    out->flags = get_le32(wire + OFF_FLAGS);
    out->buf_alloc = get_le32(wire + OFF_BUF_ALLOC);
    out->fwd_cnt = get_le32(wire + OFF_FWD_CNT);
    return 0;
}

void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t wire[VSOCK_HDR_SIZE])
{
    put_le64(wire + OFF_SRC_CID, h->src_cid);
    put_le64(wire + OFF_DST_CID, h->dst_cid);
    put_le32(wire + OFF_SRC_PORT, h->src_port);
    put_le32(wire + OFF_DST_PORT, h->dst_port);
    put_le32(wire + OFF_LEN, h->len);
    put_le16(wire + OFF_TYPE, h->type);
    put_le16(wire + OFF_OP, h->op);
    put_le32(wire + OFF_FLAGS, h->flags);
    put_le32(wire + OFF_BUF_ALLOC, h->buf_alloc);
    put_le32(wire + OFF_FWD_CNT, h->fwd_cnt);
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
