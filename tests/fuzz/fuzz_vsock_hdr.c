/* Fuzz the virtio-vsock header codec and check: decode must accept any 44+
 * bytes, encode(decode(x)) must give x back, and vsock_hdr_check must hold
 * its promises (len within payload and max, right source, known type/op)
 * for a range of guest CIDs and payload sizes. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "vsock_pkt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vsock_hdr h;
    if (vsock_hdr_decode(data, size, &h) < 0) {
        if (size >= VSOCK_HDR_SIZE)
            __builtin_trap();
        return 0;
    }
    uint8_t wire[VSOCK_HDR_SIZE];
    vsock_hdr_encode(&h, wire);
    if (memcmp(wire, data, VSOCK_HDR_SIZE) != 0)
        __builtin_trap();

    const uint64_t cids[] = { h.src_cid, 3, 0, 2, 0xffffffffull, h.src_cid + 1 };
    const uint64_t avails[] = { size - VSOCK_HDR_SIZE, 0, h.len, (uint64_t)h.len + 1, 4096, UINT64_MAX };
    const uint32_t maxes[] = { 65536, 0, 4096, UINT32_MAX };
    for (size_t i = 0; i < sizeof(cids) / sizeof(cids[0]); i++)
        for (size_t j = 0; j < sizeof(avails) / sizeof(avails[0]); j++)
            for (size_t k = 0; k < sizeof(maxes) / sizeof(maxes[0]); k++) {
                int r = vsock_hdr_check(&h, cids[i], avails[j], maxes[k]);
                if (r == 0) {
                    if (h.src_cid != cids[i] || h.len > avails[j] || h.len > maxes[k])
                        __builtin_trap();
                    if (h.type != VSOCK_TYPE_STREAM && h.type != VSOCK_TYPE_SEQPACKET)
                        __builtin_trap();
                    if (h.op < VSOCK_OP_REQUEST || h.op > VSOCK_OP_CREDIT_REQUEST)
                        __builtin_trap();
                    if (h.op != VSOCK_OP_RW && h.len)
                        __builtin_trap();
                } else if (r != -EINVAL && r != -EPERM && r != -EMSGSIZE) {
                    __builtin_trap();
                }
            }
    (void)vsock_cid_reserved(h.dst_cid);
    return 0;
}
