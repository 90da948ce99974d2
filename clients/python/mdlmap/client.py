"""Client for mdlmap-hostd's host API.

Transport: a Unix stream socket; each frame is a 4-byte little-endian length N
(1..1 MiB) and N bytes of a serialized mdlmap.v1.Envelope
(docs/wire-protocol.md). Requests carry increasing request ids; hostd answers
each exactly once, in order.

Errors: a response with a status other than STATUS_SUCCESS raises MdlmapError
(status value, its name, hostd's detail). A broken stream (bad length, wrong
request id, wrong reply body, hostd gone) raises ProtocolError or
ConnectionError, and the client should be closed.

Events: after watch() subscribed the connection, hostd pushes Envelopes with
an `event` body between the responses. An Envelope whose body is `event` is
never a response; the client queues those that arrive while it waits for a
response (at most MAX_QUEUED_EVENTS; more are dropped and counted in
events_dropped), and watch() yields the queued ones first.
"""
import array
import collections
import mmap
import os
import socket
import struct

try:  # generated at build time next to the package, or found on sys.path
    from . import mdlmap_pb2 as pb
except ImportError:
    import mdlmap_pb2 as pb

DEFAULT_API = "/run/mdlmap/api.sock"
MAX_FRAME = 1 << 20
MAX_IO_CHUNK = 512 * 1024
MAX_PHYS_RANGES = 1024
MAX_TRANSLATE = 4096
MAX_FDS = 64
MAX_QUEUED_EVENTS = 1024
PROTO_VERSION = 1


def status_name(value):
    """NTSTATUS value -> its name in mdlmap.proto, or its hex form."""
    try:
        return pb.NtStatus.Name(value)
    except ValueError:
        return "STATUS_0x%08x" % (value & 0xFFFFFFFF)


class MdlmapError(Exception):
    """hostd answered a request with a failure status."""

    def __init__(self, status, detail="", request="", reply=None):
        self.status = status
        self.status_name = status_name(status)
        self.detail = detail
        self.request = request
        self.reply = reply  # the whole response Envelope (partial results)
        super().__init__("%s: %s%s%s" % (request, self.status_name, ": " if detail else "", detail))


class ProtocolError(Exception):
    """The stream broke the framing or answered something else than asked."""


class RamRegion:
    """One guest RAM region mapped into this process (phys_map)."""

    def __init__(self, gpa, size, mem):
        self.gpa, self.size, self.mem = gpa, size, mem

    def __repr__(self):
        return "RamRegion(gpa=0x%x, size=0x%x)" % (self.gpa, self.size)

    def close(self):
        self.mem.close()


class Client:
    def __init__(self, path=None, timeout=30.0):
        path = path or os.environ.get("MDLMAP_API") or DEFAULT_API
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self._next_id = 1
        self._events = collections.deque()
        self.events_dropped = 0

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- framing ---------------------------------------------------------
    def _recv_exact(self, n, fds):
        buf = bytearray()
        while len(buf) < n:
            data, anc, flags, _ = self.sock.recvmsg(n - len(buf), socket.CMSG_SPACE(MAX_FDS * 4))
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
                    fds.extend(a)
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("more file descriptors than %d came with a frame" % MAX_FDS)
            if not data:
                raise ConnectionError("hostd closed the connection")
            buf += data
        return bytes(buf)

    def _recv(self, fds):
        (n,) = struct.unpack("<I", self._recv_exact(4, fds))
        if n == 0 or n > MAX_FRAME:
            raise ProtocolError("frame length %d outside 1..%d" % (n, MAX_FRAME))
        env = pb.Envelope()
        env.ParseFromString(self._recv_exact(n, fds))
        return env

    def _send(self, env):
        payload = env.SerializeToString()
        if len(payload) > MAX_FRAME:
            raise ValueError("request of %d bytes exceeds the %d-byte frame" % (len(payload), MAX_FRAME))
        self.sock.sendall(struct.pack("<I", len(payload)) + payload)

    def _queue_event(self, env):
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self.events_dropped += 1
        else:
            self._events.append(env.event)

    def _call(self, name, msg, want, fds=None):
        """Send body `name` = msg; return the response Envelope with body `want`.
        fds: a list that receives descriptors passed with the response."""
        env = pb.Envelope(version=PROTO_VERSION, request_id=self._next_id)
        self._next_id += 1
        getattr(env, name).CopyFrom(msg)
        self._send(env)
        got = []
        try:
            while True:
                r = self._recv(got)
                if r.WhichOneof("body") != "event":
                    break
                self._queue_event(r)  # pushed, never a response
            if r.status != pb.STATUS_SUCCESS:
                raise MdlmapError(r.status, r.detail, name, r)
            if r.request_id != env.request_id:
                raise ProtocolError("answer to request %d, expected %d" % (r.request_id, env.request_id))
            if r.WhichOneof("body") != want:
                raise ProtocolError("%s answered with %s" % (name, r.WhichOneof("body")))
        except BaseException:
            for fd in got:
                os.close(fd)
            raise
        if fds is None:
            for fd in got:
                os.close(fd)
        else:
            fds.extend(got)
        return r

    # ---- mappings made by guests ----------------------------------------
    def list(self, vm=None):
        """Mappings (MappingInfo), of all VMs or of one."""
        r = self._call("list", pb.ListMappingsRequest(vm_name=vm or ""), "list_reply")
        return list(r.list_reply.mappings)

    def find(self, guest_address, vm=None):
        """The mapping whose buffer, as the guest was told it, holds guest_address; None if none."""
        if not guest_address:
            raise ValueError("guest address 0 means no filter")
        r = self._call("list", pb.ListMappingsRequest(vm_name=vm or "", guest_address=guest_address), "list_reply")
        for m in r.list_reply.mappings:
            if m.guest_address <= guest_address < m.guest_address + m.byte_count:
                return m
        return None

    def mapping(self, map_handle):
        """The mapping with this handle, or None."""
        r = self._call("list", pb.ListMappingsRequest(map_handle=map_handle), "list_reply")
        ms = [m for m in r.list_reply.mappings if m.map_handle == map_handle]
        return ms[0] if ms else None

    def _target(self, handle, offset, vm, guest_address):
        if guest_address is None:
            return handle, offset
        m = self.find(guest_address, vm)
        if m is None:
            raise MdlmapError(pb.STATUS_NOT_FOUND, "no mapping contains 0x%x" % guest_address, "find")
        return m.map_handle, guest_address - m.guest_address

    def read(self, handle=None, offset=0, length=None, *, vm=None, guest_address=None):
        """Bytes of a mapping's buffer (by handle and offset, or at a guest address);
        length None: to the end of the buffer."""
        handle, offset = self._target(handle, offset, vm, guest_address)
        if length is None:
            m = self.mapping(handle)
            if m is None:
                raise MdlmapError(pb.STATUS_INVALID_HANDLE, "no mapping 0x%x" % handle, "read")
            length = max(m.byte_count - offset, 0)
        out = bytearray()
        while True:
            n = min(length - len(out), MAX_IO_CHUNK)
            r = self._call("read", pb.ReadRequest(map_handle=handle, offset=offset + len(out), length=n),
                           "read_reply")
            if len(r.read_reply.data) != n:
                raise ProtocolError("read of %d bytes answered with %d" % (n, len(r.read_reply.data)))
            out += r.read_reply.data
            if len(out) == length:
                return bytes(out)

    def write(self, handle=None, offset=0, data=b"", *, vm=None, guest_address=None):
        """Write data into a mapping's buffer; returns the bytes written."""
        handle, offset = self._target(handle, offset, vm, guest_address)
        done = 0
        while True:
            chunk = data[done:done + MAX_IO_CHUNK]
            r = self._call("write", pb.WriteRequest(map_handle=handle, offset=offset + done, data=chunk),
                           "write_reply")
            if r.write_reply.written != len(chunk):
                raise ProtocolError("write of %d bytes answered %d" % (len(chunk), r.write_reply.written))
            done += len(chunk)
            if done == len(data):
                return done

    def stats(self, vm=None):
        return self._call("stats", pb.StatsRequest(vm_name=vm or ""), "stats_reply").stats_reply

    # ---- a VM's whole guest memory (introspect=on) -------------------------
    def phys_readv(self, vm, ranges):
        """[(gpa, length), ...] -> [(status, bytes), ...]; each length <= 512 KiB.
        Packed into requests of at most 1024 ranges and 512 KiB."""
        out = []
        i = 0
        while i < len(ranges):
            batch, total = [], 0
            while i < len(ranges) and len(batch) < MAX_PHYS_RANGES:
                gpa, n = ranges[i]
                if n > MAX_IO_CHUNK:
                    raise ValueError("a range is at most %d bytes" % MAX_IO_CHUNK)
                if batch and total + n > MAX_IO_CHUNK:
                    break
                batch.append(pb.PhysRange(gpa=gpa, length=n))
                total += n
                i += 1
            r = self._call("phys_read", pb.PhysReadRequest(vm_name=vm, ranges=batch), "phys_read_reply")
            got = r.phys_read_reply.ranges
            if len(got) != len(batch):
                raise ProtocolError("%d ranges asked, %d answered" % (len(batch), len(got)))
            for want, d in zip(batch, got):
                if d.status == pb.STATUS_SUCCESS and len(d.data) != want.length:
                    raise ProtocolError("range of %d bytes answered with %d" % (want.length, len(d.data)))
                out.append((d.status, bytes(d.data)))
        return out

    def phys_read(self, vm, gpa, length):
        """length bytes of guest-physical memory from gpa (any length)."""
        ranges = [(gpa + o, min(MAX_IO_CHUNK, length - o)) for o in range(0, length, MAX_IO_CHUNK)]
        out = bytearray()
        for (g, _), (st, data) in zip(ranges, self.phys_readv(vm, ranges)):
            if st != pb.STATUS_SUCCESS:
                raise MdlmapError(st, "guest-physical 0x%x" % g, "phys_read")
            out += data
        return bytes(out)

    def phys_write(self, vm, gpa, data):
        """Write data at guest-physical gpa; returns the bytes written."""
        for o in range(0, len(data), MAX_IO_CHUNK):
            chunk = data[o:o + MAX_IO_CHUNK]
            r = self._call("phys_write", pb.PhysWriteRequest(vm_name=vm, chunks=[pb.PhysChunk(gpa=gpa + o, data=chunk)]),
                           "phys_write_reply")
            st = list(r.phys_write_reply.status)
            if len(st) != 1:
                raise ProtocolError("1 chunk written, %d statuses answered" % len(st))
            if st[0] != pb.STATUS_SUCCESS:
                raise MdlmapError(st[0], "guest-physical 0x%x" % (gpa + o), "phys_write")
        return len(data)

    def phys_map(self, vm, writable=False):
        """The VM's RAM regions mapped here: [RamRegion(gpa, size, mem: mmap)].
        They stay valid after the VM goes away; close() them when done."""
        fds = []
        r = self._call("phys_map", pb.PhysMapRequest(vm_name=vm, writable=writable), "phys_map_reply", fds)
        regions = []
        try:
            for reg in r.phys_map_reply.regions:
                if reg.fd_index >= len(fds) or reg.size == 0 or reg.size % mmap.PAGESIZE or \
                        reg.fd_offset % mmap.ALLOCATIONGRANULARITY:
                    raise ProtocolError("bad region %s" % str(reg).replace("\n", " "))
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
                mem = mmap.mmap(fds[reg.fd_index], reg.size, flags=mmap.MAP_SHARED, prot=prot,
                                offset=reg.fd_offset)
                regions.append(RamRegion(reg.gpa, reg.size, mem))
        except BaseException:
            for reg in regions:
                reg.close()
            raise
        finally:
            for fd in fds:  # the mappings keep the memory
                os.close(fd)
        return regions

    # ---- guest-virtual ----------------------------------------------------
    def translate(self, vm, cr3, vaddrs, la57=False):
        """Page-table walks: one Translation per address (status per address)."""
        vaddrs = list(vaddrs)
        out = []
        for i in range(0, len(vaddrs), MAX_TRANSLATE):
            batch = vaddrs[i:i + MAX_TRANSLATE]
            r = self._call("translate", pb.TranslateRequest(vm_name=vm, cr3=cr3, vaddrs=batch, la57=la57),
                           "translate_reply")
            if len(r.translate_reply.results) != len(batch):
                raise ProtocolError("%d addresses, %d results" % (len(batch), len(r.translate_reply.results)))
            out.extend(r.translate_reply.results)
        return out

    def virt_read(self, vm, cr3, vaddr, length, la57=False):
        """Guest-virtual bytes. A page that does not translate raises MdlmapError
        with .data (the bytes read before it) and .fault_vaddr."""
        out = bytearray()
        while len(out) < length:
            n = min(length - len(out), MAX_IO_CHUNK)
            try:
                r = self._call("virt_read", pb.VirtReadRequest(vm_name=vm, cr3=cr3, vaddr=vaddr + len(out),
                                                               length=n, la57=la57), "virt_read_reply")
            except MdlmapError as e:
                if e.reply is not None and e.reply.WhichOneof("body") == "virt_read_reply":
                    e.data = bytes(out) + e.reply.virt_read_reply.data[:n]
                    e.fault_vaddr = e.reply.virt_read_reply.fault_vaddr
                raise
            if len(r.virt_read_reply.data) != n:
                raise ProtocolError("virtual read of %d bytes answered with %d" % (n, len(r.virt_read_reply.data)))
            out += r.virt_read_reply.data
        return bytes(out)

    def virt_write(self, vm, cr3, vaddr, data, la57=False):
        """Write guest-virtual bytes; a fault raises MdlmapError with .written and .fault_vaddr."""
        done = 0
        while done < len(data):
            chunk = data[done:done + MAX_IO_CHUNK]
            try:
                r = self._call("virt_write", pb.VirtWriteRequest(vm_name=vm, cr3=cr3, vaddr=vaddr + done,
                                                                 data=chunk, la57=la57), "virt_write_reply")
            except MdlmapError as e:
                if e.reply is not None and e.reply.WhichOneof("body") == "virt_write_reply":
                    e.written = done + min(e.reply.virt_write_reply.written, len(chunk))
                    e.fault_vaddr = e.reply.virt_write_reply.fault_vaddr
                raise
            if r.virt_write_reply.written != len(chunk):
                raise ProtocolError("virtual write of %d bytes answered %d" % (len(chunk), r.virt_write_reply.written))
            done += len(chunk)
        return done

    # ---- QEMU (qmp=) --------------------------------------------------------
    def regs(self, vm):
        """VcpuStateResponse: .vcpus (rip, rsp, cr3, ...) and .running."""
        return self._call("vcpu_state", pb.VcpuStateRequest(vm_name=vm), "vcpu_state_reply").vcpu_state_reply

    def run_state(self, vm, op=pb.RunStateRequest.QUERY):
        """RunStateResponse (.running, .qemu_status) after op."""
        return self._call("run_state", pb.RunStateRequest(vm_name=vm, op=op), "run_state_reply").run_state_reply

    def pause(self, vm):
        return self.run_state(vm, pb.RunStateRequest.PAUSE)

    def resume(self, vm):
        return self.run_state(vm, pb.RunStateRequest.RESUME)

    # ---- events ---------------------------------------------------------------
    def subscribe(self, types=None, vm=None):
        """Subscribe this connection (types: EventType names or values; None: all).
        Returns the seq the next event will carry."""
        tv = [pb.EventType.Value(t.upper()) if isinstance(t, str) else t for t in (types or [])]
        r = self._call("subscribe", pb.SubscribeRequest(types=tv, vm_name=vm or ""), "subscribe_reply")
        return r.subscribe_reply.next_seq

    def next_event(self, timeout=None):
        """The next pushed Event, or None when none came within timeout seconds."""
        if self._events:
            return self._events.popleft()
        self.sock.settimeout(timeout)
        try:
            r = self._recv([])
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(self.timeout)
        if r.WhichOneof("body") != "event":
            if r.status != pb.STATUS_SUCCESS:
                raise MdlmapError(r.status, r.detail, "watch", r)
            raise ProtocolError("a %s arrived with no request outstanding" % r.WhichOneof("body"))
        return r.event

    def watch(self, types=None, vm=None, count=None, timeout=None):
        """Subscribe now, and return a generator of the Events that follow:
        count of them (None: no end); it ends when none came within timeout
        seconds (None: waits)."""
        self.subscribe(types, vm)

        def events():
            n = 0
            while count is None or n < count:
                ev = self.next_event(timeout)
                if ev is None:
                    return
                n += 1
                yield ev
        return events()

    # ---- VMs at run time (admin right) ----------------------------------------
    def vm_add(self, name, cid, socket, qmp="", introspect=False, user="", group=""):
        spec = pb.VmSpec(name=name, cid=cid, socket=socket, qmp=qmp, introspect=introspect, user=user, group=group)
        self._call("vm_add", pb.VmAddRequest(vm=spec), "vm_add_reply")

    def vm_remove(self, name):
        self._call("vm_remove", pb.VmRemoveRequest(name=name), "vm_remove_reply")

    def vm_list(self):
        """[VmInfo]: .vm (the VmSpec), .connected, .ram_bytes, .mappings, ..."""
        return list(self._call("vm_list", pb.VmListRequest(), "vm_list_reply").vm_list_reply.vms)
