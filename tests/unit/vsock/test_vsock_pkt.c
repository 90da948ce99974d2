/* virtio-vsock header codec and field checks. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "tap.h"
#include "vsock_pkt.h"

static const uint8_t sample_wire[VSOCK_HDR_SIZE] = {
    0x03, 0, 0, 0, 0, 0, 0, 0,                  /* src_cid 3 */
    0x02, 0, 0, 0, 0, 0, 0, 0,                  /* dst_cid 2 */
    0x39, 0x30, 0, 0,                           /* src_port 12345 */
    0x4c, 0x04, 0, 0,                           /* dst_port 1100 */
    0x00, 0x10, 0, 0,                           /* len 4096 */
    0x01, 0x00,                                 /* type STREAM */
    0x05, 0x00,                                 /* op RW */
    0x01, 0x00, 0x00, 0x80,                     /* flags 0x80000001 */
    0x00, 0x00, 0x04, 0x00,                     /* buf_alloc 256 KiB */
    0x78, 0x56, 0x34, 0x12,                     /* fwd_cnt 0x12345678 */
};

static void test_codec(void)
{
    struct vsock_hdr h;
    CHECK(vsock_hdr_decode(sample_wire, sizeof(sample_wire), &h) == 0);
    CHECK(h.src_cid == 3 && h.dst_cid == 2);
    CHECK(h.src_port == 12345 && h.dst_port == 1100);
    CHECK(h.len == 4096);
    CHECK(h.type == VSOCK_TYPE_STREAM && h.op == VSOCK_OP_RW);
    CHECK(h.flags == 0x80000001u);
    CHECK(h.buf_alloc == 256 * 1024 && h.fwd_cnt == 0x12345678u);

    uint8_t wire[VSOCK_HDR_SIZE];
    vsock_hdr_encode(&h, wire);
    CHECK(memcmp(wire, sample_wire, sizeof(wire)) == 0);

    /* large values survive a round trip */
    struct vsock_hdr big = {
        .src_cid = 0xfedcba9876543210ull, .dst_cid = 0xffffffffffffffffull,
        .src_port = 0xffffffffu, .dst_port = 0x80000000u, .len = 0xdeadbeefu,
        .type = 0xffff, .op = 0x8001, .flags = 0xffffffffu, .buf_alloc = 1, .fwd_cnt = 0xffffffffu,
    };
    struct vsock_hdr back;
    vsock_hdr_encode(&big, wire);
    CHECK(wire[0] == 0x10 && wire[7] == 0xfe);  /* little-endian */
    CHECK(vsock_hdr_decode(wire, sizeof(wire), &back) == 0);
    CHECK(memcmp(&big, &back, sizeof(big)) == 0);

    CHECK(vsock_hdr_decode(sample_wire, VSOCK_HDR_SIZE - 1, &h) == -EINVAL);
    CHECK(vsock_hdr_decode(sample_wire, 0, &h) == -EINVAL);
    CHECK(vsock_hdr_decode(NULL, 100, &h) == -EINVAL);
}

static void test_check(void)
{
    struct vsock_hdr h = {
        .src_cid = 3, .dst_cid = 2, .src_port = 1000, .dst_port = 7,
        .len = 100, .type = VSOCK_TYPE_STREAM, .op = VSOCK_OP_RW,
    };
    CHECK(vsock_hdr_check(&h, 3, 100, 65536) == 0);
    CHECK(vsock_hdr_check(&h, 3, 1000, 65536) == 0);     /* extra bytes after the payload are fine */
    CHECK(vsock_hdr_check(&h, 4, 100, 65536) == -EPERM); /* spoofed source */
    CHECK(vsock_hdr_check(&h, 3, 99, 65536) == -EINVAL); /* len beyond the chain */
    CHECK(vsock_hdr_check(&h, 3, 100, 99) == -EMSGSIZE);

    h.len = 65536;
    CHECK(vsock_hdr_check(&h, 3, 65536, 65536) == 0);
    h.len = 65537;
    CHECK(vsock_hdr_check(&h, 3, 1 << 20, 65536) == -EMSGSIZE);
    h.len = 0xffffffffu;
    CHECK(vsock_hdr_check(&h, 3, UINT64_MAX, 65536) == -EMSGSIZE);

    h.len = 0;
    h.type = VSOCK_TYPE_SEQPACKET;
    CHECK(vsock_hdr_check(&h, 3, 0, 65536) == 0);
    h.type = 0;
    CHECK(vsock_hdr_check(&h, 3, 0, 65536) == -EINVAL);
    h.type = 3;
    CHECK(vsock_hdr_check(&h, 3, 0, 65536) == -EINVAL);
    h.type = VSOCK_TYPE_STREAM;

    for (uint16_t op = VSOCK_OP_REQUEST; op <= VSOCK_OP_CREDIT_REQUEST; op++) {
        h.op = op;
        h.len = 0;
        CHECK(vsock_hdr_check(&h, 3, 0, 65536) == 0);
        h.len = 1;
        CHECK(vsock_hdr_check(&h, 3, 1, 65536) == (op == VSOCK_OP_RW ? 0 : -EINVAL));
    }
    h.len = 0;
    h.op = VSOCK_OP_INVALID;
    CHECK(vsock_hdr_check(&h, 3, 0, 65536) == -EINVAL);
    h.op = 8;
    CHECK(vsock_hdr_check(&h, 3, 0, 65536) == -EINVAL);
    CHECK(vsock_hdr_check(NULL, 3, 0, 65536) == -EINVAL);
}

static void test_cids(void)
{
    CHECK(vsock_cid_reserved(0));
    CHECK(vsock_cid_reserved(1));
    CHECK(vsock_cid_reserved(2));
    CHECK(vsock_cid_reserved(0xffffffffull));
    CHECK(vsock_cid_reserved(0x100000000ull));
    CHECK(!vsock_cid_reserved(3));
    CHECK(!vsock_cid_reserved(0xfffffffeull));
}

int main(void)
{
    test_codec();
    test_check();
    test_cids();
    return tap_done();
}
