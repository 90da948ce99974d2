#!/usr/bin/env python3
"""Write small seed inputs for the libFuzzer targets in tests/fuzz.

    gen_corpus.py OUTDIR      -> OUTDIR/<target>/seed-*  (target = rpc, virtq, ...)

Each seed follows the input format of its target (see the comment at the top
of tests/fuzz/fuzz_<target>.c) and is a well-formed, useful session: a guest
connecting to the echo and MDL RPC services through real rings, a sibling
connection, a lock/map/read/write/unmap/unlock program, descriptor chains with
an indirect table. libFuzzer mutates from there, so a 10 s CI run starts deep
in the state machines instead of at the header parsers. Seeds are never
required to pass: a change of input format only makes them less useful.
"""
import os
import struct
import sys

# ---- virtio-vsock ----------------------------------------------------------
OP_REQUEST, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST = range(1, 8)
STREAM, SEQPACKET = 1, 2
PORT_ECHO, PORT_RPC = 7, 1100


def vsock_hdr(src_cid, dst_cid, src_port, dst_port, op, length=0, typ=STREAM, flags=0,
              buf_alloc=0x40000, fwd_cnt=0):
    return struct.pack('<QQIIIHHIII', src_cid, dst_cid, src_port, dst_port, length, typ, op,
                       flags, buf_alloc, fwd_cnt)


# ---- protobuf (hand-encoded; proto/mdlmap.proto) ---------------------------
def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7f
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(field, v):
    return varint(field << 3) + varint(v)


def f_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def envelope(req_id, body_field, body):
    return f_varint(1, 1) + f_varint(2, req_id) + f_bytes(body_field, body)


def frame(env):
    return struct.pack('<I', len(env)) + env


def hello(req_id):
    return frame(envelope(req_id, 10, f_varint(1, 1) + f_varint(2, 1) + f_bytes(3, b'seed')))


def lock(req_id, pfns, byte_offset=0, byte_count=None, op=0):
    if byte_count is None:
        byte_count = len(pfns) * 4096 - byte_offset
    packed = b''.join(varint(p) for p in pfns)
    body = f_varint(2, byte_offset) + f_varint(3, byte_count) + f_bytes(4, packed) + f_varint(5, op)
    return frame(envelope(req_id, 12, body))


def lock_runs(req_id, runs, byte_offset=0, byte_count=None, op=0, pfns=()):
    """LockRequest with frames as FrameRun (first_pfn, count) entries (field 7)."""
    if byte_count is None:
        byte_count = sum(c for _, c in runs) * 4096 - byte_offset
    body = f_varint(2, byte_offset) + f_varint(3, byte_count) + f_varint(5, op)
    if pfns:
        body += f_bytes(4, b''.join(varint(p) for p in pfns))
    for first, count in runs:
        body += f_bytes(7, f_varint(1, first) + f_varint(2, count))
    return frame(envelope(req_id, 12, body))


def stats(req_id):
    return frame(envelope(req_id, 36, b''))


# ---- fuzz_vu_msg -------------------------------------------------------------
# byte 0 odd: canned start; then the EVENT_IDX choice, then ring patches
# (count, then per patch: offset u16, length u8, bytes), then run_one messages.
def vu_msg_seed(event_idx, tx_pkts, rx_bufs=8):
    patches = []
    # rx queue 0: device-writable buffers at 0x8000 + i*0x400
    desc = b''.join(struct.pack('<QIHH', 0x8000 + i * 0x400, 0x400, 2, 0) for i in range(rx_bufs))
    patches.append((0x000, desc))
    patches.append((0x100, struct.pack('<HH', 0, rx_bufs) + b''.join(struct.pack('<H', i) for i in range(rx_bufs))))
    # tx queue 1: one descriptor per packet, packets from 0x1800 on
    addr, descs, bufs = 0x1800, b'', []
    for p in tx_pkts:
        descs += struct.pack('<QIHH', addr, len(p), 0, 0)
        bufs.append((addr, p))
        addr += (len(p) + 15) // 16 * 16
    patches.append((0x1000, descs))
    # only the first packet is visible; each "publish" message below shows the
    # next one (a guest sends data after the RESPONSE came back)
    patches.append((0x1100, struct.pack('<HH', 0, 1) +
                    b''.join(struct.pack('<H', i) for i in range(len(tx_pkts)))))
    patches += bufs
    chunks = []
    for off, data in patches:  # patches hold at most 255 bytes
        for k in range(0, len(data), 255):
            chunks.append((off + k, data[k:k + 255]))
    assert len(chunks) < 16
    out = bytearray([1, 1 if event_idx else 0, len(chunks)])
    for off, data in chunks:
        out += struct.pack('<HB', off, len(data)) + data
    kick = bytes([0x10, 1, 0])      # GET_FEATURES, then kick every ready ring
    publish = bytes([0x18, 1, 0])   # same, after one more tx avail entry
    out += kick + publish * (len(tx_pkts) - 1) + kick
    return bytes(out)


def vu_msg_seeds():
    g = 3
    req = vsock_hdr(g, 2, 1000, PORT_ECHO, OP_REQUEST)
    rw = vsock_hdr(g, 2, 1000, PORT_ECHO, OP_RW, 5) + b'hello'
    shut = vsock_hdr(g, 2, 1000, PORT_ECHO, OP_SHUTDOWN, flags=3)
    credit = vsock_hdr(g, 2, 1000, PORT_ECHO, OP_CREDIT_REQUEST)
    rpc_bytes = hello(1) + lock(2, [8, 9, 10]) + stats(3)
    rpc_req = vsock_hdr(g, 2, 1001, PORT_RPC, OP_REQUEST)
    rpc_rw = vsock_hdr(g, 2, 1001, PORT_RPC, OP_RW, len(rpc_bytes)) + rpc_bytes
    seq = vsock_hdr(g, 2, 1002, PORT_ECHO, OP_REQUEST, typ=SEQPACKET)
    seq_rw = vsock_hdr(g, 2, 1002, PORT_ECHO, OP_RW, 3, typ=SEQPACKET, flags=1) + b'abc'
    return {
        'echo': vu_msg_seed(False, [req, rw, credit, shut]),
        'echo-evidx': vu_msg_seed(True, [req, rw]),
        'rpc': vu_msg_seed(False, [rpc_req, rpc_rw]),
        'seqpacket': vu_msg_seed(True, [seq, seq_rw]),
        # no canned start: SET_PROTOCOL_FEATURES, SET_VRING_NUM, GET_CONFIG
        # (run_one: sel, request, nreg, then the natural-size payload)
        'msgs': bytes([0]) + bytes([0, 16, 0]) + b'\xff' * 8 + bytes([0, 8, 0, 0, 0, 0, 0, 4, 0, 0, 0]) +
                bytes([0, 24, 0]) + bytes(20),
    }


# ---- fuzz_vsock_dev ----------------------------------------------------------
# cmd byte: bit 7 = guest (0: cid 3, 1: cid 4); low 3 bits 0-4 = send a packet
# (44 header bytes whose byte 0 steers, then payload), 5 = process tx + drain,
# 6 = reset/timer, 7 = toggle rx hold.
def dev_pkt(guest, steer, src_port, dst_port, op_raw, length, payload=b'', typ=0, flags=0):
    h = vsock_hdr(steer, 0, src_port, dst_port, op_raw, length, typ, flags)
    return bytes([guest << 7]) + h + payload


def vsock_dev_seeds():
    s = 0x01 | 0x02 | 0x08 | 0x40 | 0x80  # own cid, host, port ECHO, sane type/op
    echo = (dev_pkt(0, s, 0, 0, OP_REQUEST - 1, 0) + bytes([5]) +
            dev_pkt(0, s, 0, 0, OP_RW - 1, 4, b'ping') + bytes([5]) +
            dev_pkt(0, s, 0, 0, OP_CREDIT_REQUEST - 1, 0) + bytes([5]) +
            dev_pkt(0, s, 0, 0, OP_SHUTDOWN - 1, 0, flags=3) + bytes([5, 6 | 8, 5]))
    # guest 4 connects to guest 3 port 1001 (steered ports[1]); guest 3
    # answers and they talk
    to_sib = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80
    raw_sib = 0x01 | 0x02 | 0x04 | 0x80
    sib = (dev_pkt(1, to_sib, 0, 0, OP_REQUEST - 1, 0) + bytes([0x85, 0x05]) +
           dev_pkt(0, raw_sib, 1001, 1000, OP_RESPONSE, 0, typ=STREAM) + bytes([0x05, 0x85]) +
           dev_pkt(1, to_sib, 0, 0, OP_RW - 1, 3, b'sib') + bytes([0x85, 0x05]) +
           dev_pkt(0, raw_sib, 1001, 1000, OP_RW, 2, b'ok', typ=STREAM) + bytes([0x05, 0x85]) +
           bytes([0x06]) + bytes([0x85, 0x05]))
    hold = (bytes([7]) + dev_pkt(0, s, 0, 0, OP_REQUEST - 1, 0) + bytes([5]) +
            dev_pkt(0, s, 0, 0, OP_RW - 1, 100, bytes(range(100))) + bytes([5, 7, 5]))
    # cmd 6 with (cmd >> 3) % 8 == 7: the target's scripted sibling handshake
    # (argument byte: ports, type, RESPONSE/RST, both close, or host echo)
    script = bytes([0x3e, 0x20, 0x3e, 0xa5, 0x3e, 0x40, 0x3e, 0xd0, 0xbe, 0x21, 0x0e, 0x1e, 0x8e])
    return {'echo': echo, 'sibling': sib, 'rx-hold': hold, 'sib-script': script}


# ---- fuzz_virtq ----------------------------------------------------------------
# cfg (num = 1 << cfg%9, 0x10 EVENT_IDX, 0x20 INDIRECT, 0x40 shifted table,
# 0x80 no steering), last_avail u16, descriptors, avail flags, avail idx delta,
# avail ring entries (1 byte each), then buffer memory at 0x3000 (indirect tables).
def virtq_seed(cfg):
    d = lambda addr, ln, fl, nx: struct.pack('<QIHH', addr, ln, fl, nx)
    descs = (d(0x4000, 64, 1, 1) + d(0x4100, 64, 2, 0) +       # out + in chain
             d(0x3000, 32, 4, 0) + d(0x4200, 16, 0, 0))        # indirect, single
    out = bytes([cfg, 0, 0]) + descs + bytes([0, 3]) + bytes([0, 2, 3, 0, 0])
    out += d(0x4300, 32, 1, 1) + d(0x4400, 32, 2, 0)          # the indirect table
    return out


def virtq_seeds():
    return {'chain': virtq_seed(0x22), 'chain-evidx': virtq_seed(0x32)}


# ---- fuzz_rpc --------------------------------------------------------------------
def rpc_seeds():
    prog = bytes([0x01])  # odd: structured program, unlimited send budget
    prog += bytes([0, 0x10, 0x00, 0x00, 0x20, 0x00, 3, 0x10, 0, 0x11, 0, 0x12, 0, 0])  # lock
    prog += bytes([1, 0x01, 0x01, 16, 0, 0, 0])        # map (kernel mode)
    prog += bytes([4, 0x10, 0, 0, 0x00, 0x01, 0])      # read 256 bytes
    prog += bytes([5, 0x20, 0, 0, 16])                 # write 16 bytes, list
    prog += bytes([2, 7])                              # unmap
    prog += bytes([3, 1])                              # unlock
    # UserMode: lock, map into the fake consumer "fuzz" (op 8), the consumer
    # answers with a page-aligned base (op 7), unmap, unlock
    user = bytes([0x01])
    user += bytes([0, 0x00, 0x00, 0x00, 0x30, 0x00, 3, 0x20, 0, 0x21, 0, 0x22, 0, 1])
    user += bytes([8, 0x01]) + bytes([7, 0x07, 0x10, 0x00]) + bytes([2, 7]) + bytes([3, 1])
    raw = bytes([0x00]) + hello(1) + lock(2, [0x10, 0x11], 0x10, 0x1000) + stats(3)
    # frame runs (LockRequest.runs): a contiguous 2 MiB run, two runs, then
    # malformed ones: a zero count, pfns and runs both set, a short sum
    runs = (bytes([0x00]) + hello(1) + lock_runs(2, [(0x100, 0x200)]) +
            lock_runs(3, [(0x10, 2), (0x20, 3)], 0x20, 0x4000) + lock_runs(4, [(0x10, 0)], 0, 4096) +
            lock_runs(5, [(0x10, 1)], 0, 4096, pfns=[0x10]) + lock_runs(6, [(0x10, 1)], 0, 8192) + stats(7))
    # program: op 9 locks by runs (sel: 2 runs), maps, reads, unmaps, unlocks
    prun = bytes([0x01])
    prun += bytes([9, 0x02, 0x00, 0x00, 0x00, 0x50, 0x00, 0x00,   # 2 runs, byte_count 0x5000 (5 pages)
                   0x10, 0x00, 0x02, 0x00, 0x20, 0x00, 0x03, 0x00, 1])  # (0x10, 2), (0x20, 3), write
    prun += bytes([1, 0x01, 0x01, 16, 0, 0, 0]) + bytes([4, 0x10, 0, 0, 0x00, 0x01, 0])
    prun += bytes([2, 7]) + bytes([3, 1])
    # grants: lock (op 0), grant it to the peer VM (op 10), the peer locks a
    # writable buffer (op 12, lock) and copies 4 KiB from the grant into it
    # (op 12, one CopyOp), then the granter revokes (op 11)
    grant = bytes([0x01]) + bytes([0, 0x10, 0x00, 0x00, 0x20, 0x00, 3, 0x10, 0, 0x11, 0, 0x12, 0, 0])
    grant += bytes([10, 0x03]) + bytes([12, 0x03, 0x00, 0x00, 0x00, 0x01, 4])
    grant += bytes([12, 0x00, 0x01, 0x00, 0, 0, 0, 0x01, 0, 0, 0, 0x00, 0x00, 0x10]) + bytes([11, 0x01])
    return {'program': prog, 'user-mode': user, 'raw-frames': raw, 'runs-frames': runs, 'runs-program': prun,
            'grants-program': grant}


# ---- fuzz_vsock_hdr ------------------------------------------------------------
def vsock_hdr_seeds():
    return {'rw': vsock_hdr(3, 2, 1000, 7, OP_RW, 4) + b'data',
            'request': vsock_hdr(3, 2, 1000, 1100, OP_REQUEST, typ=SEQPACKET)}


def client_seeds():
    """fuzz_client: a selector byte, then what the server answers (request ids from 1)."""
    def reply(req_id, field, body=b'', status=0):
        env = f_varint(1, 1) + f_varint(2, req_id) + (f_varint(3, status) if status else b'') + f_bytes(field, body)
        return frame(env)
    event = frame(f_varint(1, 1) + f_varint(2, 7) + f_bytes(72, f_varint(1, 5) + f_varint(2, 8)))
    range_ok = f_bytes(1, f_bytes(2, bytes(16)))
    return {'list': bytes([0]) + reply(1, 31, f_bytes(1, f_varint(1, 0x1234) + f_varint(7, 100))),
            'stats-after-event': bytes([3]) + event + reply(1, 37, f_varint(1, 2)),
            'phys-read': bytes([6]) + reply(1, 51, range_ok + f_bytes(1, f_varint(1, 0xC00000A0 - (1 << 32)))),
            'translate': bytes([9]) + reply(1, 57, f_bytes(1, f_varint(2, 0x5000)) * 3),
            'subscribe': bytes([14]) + reply(1, 71, f_varint(1, 5)) + event + event}


# ---- fuzz_introspect -------------------------------------------------------------
# pokes (count, then kind, where u16, flags, target), then operations (see
# fuzz_introspect.c): a 4-level walk T0 -> T1 -> T2 -> T3 -> frame 5 and a
# 2 MiB page at T2[1]; translate, a virtual read into a missing page,
# vectored physical reads at a region edge and at 4 GiB, host API envelopes.
def introspect_seeds():
    def poke(src, slot, flags, target):
        return bytes([src << 4]) + struct.pack('<H', slot) + bytes([flags, target])
    pokes = [poke(0, 0, 7, 1), poke(1, 0, 7, 2), poke(2, 0, 7, 3), poke(3, 0, 7, 5), poke(2, 1, 0x87, 0)]
    head = bytes([len(pokes)]) + b''.join(pokes)
    va = lambda off, idx=(0, 0, 0, 0, 0): bytes([0]) + struct.pack('<I', off) + bytes(idx)
    ln = lambda n: bytes([0]) + struct.pack('<I', n)
    edge = lambda k, delta: bytes([k]) + struct.pack('<h', delta)
    ops = bytes([0, 0]) + va(0x10)                            # translate
    ops += bytes([0, 0]) + va(0x10, (0, 1, 0, 0, 0))          # 2 MiB page at T2[1]
    ops += bytes([1, 0]) + va(0xf00) + ln(0x200)              # virtual read into T3[1] (absent)
    ops += bytes([3, 2]) + edge(1, -8) + ln(16) + edge(3, 0) + ln(100)  # vectored physical read
    ops += bytes([5]) + struct.pack('<I', 2) + edge(1, -8) + ln(16) + edge(3, 0) + ln(100)  # PhysRead
    ops += bytes([6, 1]) + va(0x10) + bytes([0]) + ln(64) + ln(8)        # Translate envelope
    ops += bytes([0x36, 0]) + bytes([0]) + ln(0) + ln(0)                 # PhysMap envelope
    return {'walks': head + ops}
# ---- fuzz_peer_frames ----------------------------------------------------------
def peer_frames_seeds():
    def run(mode, first, count):
        return struct.pack('<BQI', mode, first, count)
    return {'two-runs': struct.pack('<HB', 3, 2) + run(0, 0x100, 2) + run(0, 0x500, 1),
            'last-frame': struct.pack('<HB', 3, 1) + run(1, 2, 3),
            'short': struct.pack('<HB', 5, 2) + run(0, 7, 2) + run(0, 9, 2),
            'summed': struct.pack('<HB', 0x8000, 3) + run(0, 40, 5) + run(0, 45, 2) + run(1, 0, 1),
            # frame UINT64_MAX then frames 0, 1: build must not merge them into one wrapping run
            'wrap-merge': struct.pack('<HB', 0x8000, 3) + run(0, 0xfb00100400000028, 3) + run(1, 0, 1)
            + run(0, 0, 2)}


def events_seeds():
    # fuzz_events.c: ops 0 raw, 1 publish (type, vm, detail/2), 2 drain (n*16 bytes), 3 subscribe, 4 reconnect
    sub_all = bytes([3, 0, 0, 5])
    sub_vm0_maps = bytes([3, 2, 8, 9, 1, 6])
    publish = lambda t, vm, dl: bytes([1, t - 1, vm, dl])
    flood = sub_all + publish(6, 1, 10) * 1500 + bytes([2, 255]) * 300 + publish(7, 1, 200) * 4 + bytes([2, 255]) * 4
    filtered = (sub_vm0_maps + b''.join(publish(t, vm, 3) for t in range(1, 14) for vm in range(4))
                + bytes([2, 255]) * 8)
    # a Subscribe as raw client bytes (op 0: length, then the frame), replaced by a second one
    sub_frame = frame(envelope(7, 70, b''))
    raw = bytes([0, len(sub_frame)]) + sub_frame + publish(10, 2, 50) + bytes([2, 4]) + sub_vm0_maps + \
        publish(8, 1, 0) + bytes([2, 255, 4]) + sub_all + publish(13, 0, 100) + bytes([2, 255])
    return {'flood': flood, 'filtered': filtered, 'raw-replace-reconnect': raw}
# ---- fuzz_qmp_json / fuzz_qmp_regs ----------------------------------------------
# First byte 0: the rest is the text itself (odd first bytes select the
# targets' token mode, which random mutations reach on their own).
def qmp_json_seeds():
    return {'greeting': b'\0{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
                        b'"package": ""}, "capabilities": ["oob"]}}\r',
            'status': b'\0{"return": {"status": "paused", "singlestep": false, "running": false}, "id": 3}',
            'event': b'\0{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}',
            'error': b'\0{"error": {"class": "GenericError", "desc": "\\u00e9\\ud83d\\ude00 \\"x\\""}, "id": 1}',
            'hmp': b'\0{"return": "\\r\\nCPU#0\\r\\nRIP=0000000000000000 RFL=00000002\\r\\n", "id": 2}'}


def qmp_regs_seeds():
    return {'long': b'\0\r\nCPU#0\r\nRAX=0000000004f59588 RBX=0000000004f59560\r\n'
                    b'RSI=0000000002182142 RDI=0000000000000027 RBP=0000000000000800 RSP=0000000004f57dc0\r\n'
                    b'R8 =000000000b200000 R9 =000000000218320a\r\n'
                    b'RIP=0000000004f3a4d8 RFL=00000006 [-----P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n'
                    b'CR0=80050033 CR2=0000000000000000 CR3=0000000004f77000 CR4=00000020\r\n'
                    b'EFER=0000000000000500\r\n',
            'reset': b'\0\r\nCPU#1\r\nEAX=00000000 EBX=00000000 ECX=00000000 EDX=00060fb1\r\n'
                     b'ESI=00000000 EDI=00000000 EBP=00000000 ESP=00000000\r\n'
                     b'EIP=0000fff0 EFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n'
                     b'CS =f000 ffff0000 0000ffff 00009b00\r\n'
                     b'CR0=60000010 CR2=00000000 CR3=00000000 CR4=00000000\r\n'
                     b'EFER=0000000000000000\r\n'}


# ---- fuzz_lv_xml ------------------------------------------------------------------
# First byte 0: the text itself (mdlmap-libvirt's metadata element and domain XML).
def lv_xml_seeds():
    return {'meta': b'\0<mdlmap:vsock xmlns:mdlmap="https://mdlmap.dev/libvirt/1" cid="5" name="vm5" qmp="on"/>',
            'meta-bare': b'\0<vsock cid="7"/>',
            'domain': b"\0<domain type='qemu'><name>d</name><memory unit='KiB'>524288</memory>"
                      b"<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os><devices>"
                      b"<controller type='pci' index='0' model='pcie-root'/>"
                      b"<controller type='pci' index='1' model='pcie-root-port'/>"
                      b"<disk type='file'><address type='pci' bus='0x02'/></disk></devices></domain>",
            'prepared': b"\0<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><memoryBacking>"
                        b"<source type='memfd'/><access mode='shared'/></memoryBacking><qemu:commandline>"
                        b"<qemu:arg value='-chardev'/><qemu:arg value='socket,id=mdlmap-vsock,path=/x.sock'/>"
                        b"<qemu:arg value='-device'/>"
                        b"<qemu:arg value='vhost-user-vsock-pci,chardev=mdlmap-vsock,id=mdlmap-vsock'/>"
                        b"</qemu:commandline></domain>"}


# ---- fuzz_qmp_client ---------------------------------------------------------
# first byte 1: the harness negotiates; then op bytes (fuzz_qmp_client.c's ops
# table: 0 raw, 1 canned, 4 call, 6 cancel, 7 loop, 8 read, 9 close, 10 free)
def qmp_client_seeds():
    call = lambda cmd, free=0: bytes([4, cmd, free])
    answer, error, read = bytes([1, 2]), bytes([1, 3]), bytes([8])
    ans = b'{"return": {"status": "running", "running": true}, "id": 1}\n'
    return {
        'answered': b'\x01' + (call(0) + answer + read) * 3,
        'free-in-completion': b'\x01' + call(0, 1) + call(2) + answer + read,
        'error-then-close': b'\x01' + call(1) + error + call(0, 1) + call(2) + bytes([9]),
        'chunked': b'\x01' + call(0) + bytes([0, 20]) + ans[:20] + bytes([0, len(ans) - 20]) + ans[20:],
        'cancel': b'\x01' + call(0) + call(2) + bytes([6, 1]) + answer + answer + bytes([10]),
        'handshake-by-hand': b'\x00' + bytes([1, 0, 7, 8, 1, 1, 7]) + call(3) + answer,
        # found by libFuzzer: the call in flight cancelled, then another queued: its text was
        # freed while still being sent, and again later (double free)
        'cancel-in-flight': bytes.fromhex('01047572dededededededede6e7e01240000000000000022'),
    }


# ---- fuzz_vu_state -----------------------------------------------------------
# flags byte, then (offset le16, value) edits of the exported record
def vu_state_seeds():
    edit = lambda off, v: struct.pack('<HB', off, v)
    return {
        'intact': b'\x00',
        'bad-checksum': b'\x01' + edit(40, 1),
        'no-connection': b'\x02',
        'no-region': b'\x04',
        'no-kick': b'\x08',
        'conn-eventfd': b'\x80',
        # CI crash input: the target's once-only fd baseline, not restore, was wrong
        'conn-eventfd-unsealed': b'\x81',
        'edits': b'\x00' + edit(16, 0xff) + edit(48, 0) + edit(1100, 3),
    }


# ---- fuzz_frame_view ----------------------------------------------------------
def frame_view_seeds():
    """fuzz_frame_view: mode 0 builds a reply from the bytes and edits it; mode 1 is a raw payload."""
    reply = f_varint(1, 1) + f_varint(2, 7) + f_bytes(51, f_bytes(1, f_varint(2 - 1, 0) + f_bytes(2, b'ab')))
    return {'built-3-ranges': bytes([0, 3, 0, 8, 1, 0, 0, 4, 1, 5, 0]),
            'built-edited': bytes([0, 2, 0, 8, 1, 2, 1, 9, 0, 40, 0xff, 200, 0x80]),
            'raw-reply': bytes([1]) + reply}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    targets = {'vu_msg': vu_msg_seeds(), 'vsock_dev': vsock_dev_seeds(), 'virtq': virtq_seeds(),
               'rpc': rpc_seeds(), 'vsock_hdr': vsock_hdr_seeds(), 'qmp_json': qmp_json_seeds(),
               'qmp_regs': qmp_regs_seeds(), 'introspect': introspect_seeds(),
               'peer_frames': peer_frames_seeds(), 'events': events_seeds(), 'client': client_seeds(),
               'frame_view': frame_view_seeds(), 'vu_state': vu_state_seeds(), 'qmp_client': qmp_client_seeds(),
               'lv_xml': lv_xml_seeds()}
    for target, seeds in targets.items():
        d = os.path.join(sys.argv[1], target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, 'seed-' + name), 'wb') as f:
                f.write(data)


if __name__ == '__main__':
    main()
