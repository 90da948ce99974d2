#!/usr/bin/python3
"""The mdlmap Python package against a real mdlmap-hostd with harness guests.
usage: test_client.py GUEST_MAPPER HOSTD   (PYTHONPATH: the package, the
generated mdlmap_pb2 and tests/clients for client_rig)."""
import contextlib
import io
import os
import re
import shutil
import struct
import subprocess
import time

import mdlmap
from mdlmap import pb
from client_rig import main

MB = 1 << 20
P, RW, US, PS = 1, 2, 4, 0x80
PML4, PDPT, PD, PT = 12 * MB, 12 * MB + 0x1000, 12 * MB + 0x2000, 12 * MB + 0x3000
DATA, DATA2, LARGE = 13 * MB, 13 * MB + 0x1000, 14 * MB
VA = 0x400000          # PD[2] -> PT: PT[0] = DATA, PT[1] = DATA2, PT[2] not present
VA_LARGE = 0x600000    # PD[3]: a 2 MiB page at LARGE
VA_ABSENT = 0x800000   # PD[4] not present


def section(tap, name, fn):
    """A group of checks; an unexpected MdlmapError fails it with hostd's answer."""
    try:
        fn()
    except mdlmap.MdlmapError as e:
        tap.check(False, "%s: %s" % (name, e))


def expect_error(fn):
    """The MdlmapError fn raised, or None. A request type hostd does not serve
    at all is never the expected answer: that goes up to section()."""
    try:
        fn()
    except mdlmap.MdlmapError as e:
        if e.status == pb.STATUS_INVALID_DEVICE_REQUEST:
            raise
        return e
    return None


def run(tap, rig, argv):
    info = rig.info
    api, vm, intro = info["api"], info["vm"], info["intro"]
    c = mdlmap.Client(api)
    h, ga, n = info["map_handle"], info["guest_address"], info["byte_count"]
    text = info["text"].encode()

    def mappings():
        ms = c.list()
        tap.check(len(ms) == 1 and ms[0].map_handle == h and ms[0].vm_name == vm and ms[0].byte_count == n,
                  "list: the guest's mapping (%d listed)" % len(ms))
        tap.check(c.list("intro") == [] and len(c.list(vm)) == 1, "list per VM")
        m = c.find(ga + 10)
        tap.check(m is not None and m.map_handle == h, "find: an address inside the buffer names its mapping")
        tap.check(c.find(ga, vm) is not None and c.find(ga, intro) is None,
                  "find is per VM: found in %s, not in %s" % (vm, intro))
        tap.check(c.find(ga + n) is None and c.find(ga - 1) is None, "find: the bytes around the buffer are not in it")
        tap.check(c.mapping(h) is not None and c.mapping(h ^ 1) is None, "lookup by map handle")
        data = c.read(h)
        tap.check(data[:len(text)] == text and len(data) == n, "read: the guest's text, whole buffer by default")
        tap.check(c.read(vm=vm, guest_address=ga + 6, length=4) == text[6:10], "read at a guest address")
        tap.check(c.write(h, 0, b"HOST") == 4 and c.read(h, 0, 4) == b"HOST", "write then read back")
        tap.check(c.write(vm=vm, guest_address=ga + 4, data=b"!") == 1 and c.read(h, 0, 5) == b"HOST!",
                  "write at a guest address")
        st = c.stats()
        tap.check(st.mappings == 1 and st.locked_mdls == 1, "stats: 1 mapping, 1 locked MDL")
        e = expect_error(lambda: c.read(0x1234, 0, 4))
        tap.check(e is not None and e.status == pb.STATUS_INVALID_HANDLE and
                  e.status_name == "STATUS_INVALID_HANDLE" and e.detail != "",
                  "an unknown handle raises MdlmapError(STATUS_INVALID_HANDLE, detail: %s)" % (e and e.detail))
        e = expect_error(lambda: c.read(h, n, 1))
        tap.check(e is not None and e.status == pb.STATUS_INVALID_PARAMETER, "a read past the buffer is refused")
        tap.check(c.stats().mappings == 1, "the connection stays usable after failures")

    section(tap, "mappings", mappings)

    def readme_example():
        # the Python example of README.md, run as written against this hostd
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "README.md")
        with open(readme) as f:
            code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
        before = c.read(h, 0, 16)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code.replace("/run/mdlmap/api.sock", api), {})
        tap.check(out.getvalue() == "%s %s %r\n" % (vm, hex(ga), before) and
                  c.read(h, 0, 2) == b"hi", "the README's Python example runs as written")

    section(tap, "README example", readme_example)

    def physical():
        marker = b"written by the python client \x00\xff"
        tap.check(c.phys_write(intro, 9 * MB + 100, marker) == len(marker), "phys_write")
        tap.check(c.phys_read(intro, 9 * MB + 100, len(marker)) == marker, "phys_read reads it back")
        res = c.phys_readv(intro, [(9 * MB + 100, 8), (4 << 30, 16), (16 * MB - 8, 16), (9 * MB + 108, 4)])
        tap.check([s for s, _ in res] == [pb.STATUS_SUCCESS, pb.STATUS_SUCCESS, pb.STATUS_MEMORY_NOT_ALLOCATED,
                                          pb.STATUS_SUCCESS] and res[0][1] == marker[:8] and res[3][1] == marker[8:12],
                  "vectored read: per-range statuses, a range into the hole refused alone (%s)" %
                  [mdlmap.status_name(s) for s, _ in res])
        big = bytes(range(256)) * 4096  # 1 MiB: more than one request
        tap.check(c.phys_write(intro, (4 << 30) + MB, big) == len(big) and
                  c.phys_read(intro, (4 << 30) + MB, len(big)) == big, "1 MiB in the high region, split in requests")
        e = expect_error(lambda: c.phys_read(vm, 0, 16))
        tap.check(e is not None and e.status == pb.STATUS_ACCESS_DENIED,
                  "a VM without introspect=on is refused (%s)" % (e and e.status_name))
        regions = c.phys_map(intro)
        tap.check([(r.gpa, r.size) for r in regions] == [(0, 16 * MB), (4 << 30, 16 * MB)],
                  "phys_map: two regions, GPA 0 and 4 GiB (%s)" % regions)
        if regions:
            low = regions[0].mem
            tap.check(low[9 * MB + 100:9 * MB + 100 + len(marker)] == marker, "the mapped RAM shows the bytes")
            tap.check(regions[1].mem[MB:MB + 256] == bytes(range(256)), "and the high region's")
        for r in regions:
            r.close()
        w = c.phys_map(intro, writable=True)
        if w:
            w[0].mem[9 * MB:9 * MB + 5] = b"mmap!"
        tap.check(c.phys_read(intro, 9 * MB, 5) == b"mmap!", "a writable phys_map writes guest RAM")
        for r in w:
            r.close()

    section(tap, "physical memory", physical)

    def virtual():
        def q(gpa, v):
            c.phys_write(intro, gpa, struct.pack("<Q", v))
        for t in (PML4, PDPT, PD, PT):
            c.phys_write(intro, t, bytes(4096))
        q(PML4, PDPT | P | RW | US)
        q(PDPT, PD | P | RW | US)
        q(PD + 2 * 8, PT | P | RW | US)
        q(PD + 3 * 8, LARGE | P | RW | PS | (1 << 63))
        q(PT, DATA | P | RW | US)
        q(PT + 8, DATA2 | P | US)
        c.phys_write(intro, DATA + 0xFF0, b"0123456789abcdef")
        c.phys_write(intro, DATA2, b"ghijklmnopqrstuv")
        c.phys_write(intro, DATA2 + 0xFF0, b"END OF MAPPED..!")
        t = c.translate(intro, PML4, [VA + 0x10, VA + 0x1000, VA_LARGE + 0x1234, VA_ABSENT, 0x0000800000000000])
        tap.check(t[0].status == pb.STATUS_SUCCESS and t[0].gpa == DATA + 0x10 and t[0].page_size == 4096 and
                  t[0].level == 1 and t[0].writable and t[0].user and not t[0].nx, "translate a 4 KiB page")
        tap.check(t[1].status == pb.STATUS_SUCCESS and t[1].gpa == DATA2 and not t[1].writable,
                  "a read-only page is not writable")
        tap.check(t[2].status == pb.STATUS_SUCCESS and t[2].gpa == LARGE + 0x1234 and t[2].page_size == 2 * MB and
                  t[2].nx and not t[2].user, "a 2 MiB page, NX, kernel")
        tap.check(t[3].status == pb.STATUS_ACCESS_VIOLATION and t[4].status == pb.STATUS_ACCESS_VIOLATION,
                  "not present and non-canonical addresses fault (%s, %s)" %
                  (mdlmap.status_name(t[3].status), mdlmap.status_name(t[4].status)))
        tap.check(c.virt_read(intro, PML4, VA + 0xFF0, 32) == b"0123456789abcdefghijklmnopqrstuv",
                  "virt_read across two pages not adjacent in guest RAM")
        tap.check(c.virt_write(intro, PML4, VA + 0xFFE, b"XYZ") == 3 and
                  c.phys_read(intro, DATA + 0xFFE, 2) + c.phys_read(intro, DATA2, 1) == b"XYZ",
                  "virt_write across the page boundary lands in both frames")
        try:
            c.virt_read(intro, PML4, VA + 0x1FF0, 32)
            tap.check(False, "a virtual read into an absent page raises")
        except mdlmap.MdlmapError as e:
            tap.check(e.status == pb.STATUS_ACCESS_VIOLATION and getattr(e, "fault_vaddr", None) == VA + 0x2000 and
                      getattr(e, "data", None) == b"END OF MAPPED..!",
                      "a virtual read stops at the absent page: the bytes before it and its address")

    section(tap, "guest-virtual", virtual)

    def events():
        w = mdlmap.Client(api)
        seq = w.subscribe(["MAPPING_CREATED", "MAPPING_REMOVED"], vm=vm)
        m = rig.map()
        ev = w.next_event(10)
        tap.check(ev is not None and ev.type == pb.MAPPING_CREATED and ev.map_handle == m["map_handle"] and
                  ev.vm_name == vm and ev.seq >= seq, "an event for the guest's new mapping")
        rig.unmap()
        st = w.stats()  # the MAPPING_REMOVED push may come before this answer: it is queued, not taken for it
        tap.check(st.mappings == 1, "a call on a subscribed connection gets its own answer")
        ev = w.next_event(10)
        tap.check(ev is not None and ev.type == pb.MAPPING_REMOVED and ev.map_handle == m["map_handle"],
                  "then the removal event")
        m2 = rig.map()  # its MDL_LOCKED, and the MDL_UNLOCKED before, are not of the types asked for
        ev = w.next_event(10)
        tap.check(ev is not None and ev.type == pb.MAPPING_CREATED and ev.map_handle == m2["map_handle"],
                  "the next event is the next mapping's: other types were filtered out")
        rig.unmap()
        ev = w.next_event(10)
        tap.check(ev is not None and ev.type == pb.MAPPING_REMOVED, "and its removal")
        w.close()
        g = mdlmap.Client(api)
        gen = g.watch(types=["MAPPING_CREATED"], count=1, timeout=10)  # subscribes at once
        m = rig.map()
        got = list(gen)
        tap.check(len(got) == 1 and got[0].map_handle == m["map_handle"], "watch() yields count events")
        rig.unmap()
        g.close()

    section(tap, "events", events)

    def vms():
        vl = {v.vm.name: v for v in c.vm_list()}
        tap.check(vm in vl and intro in vl and vl[vm].connected and vl[vm].vm.cid == info["cid"] and
                  vl[intro].vm.introspect and not vl[vm].vm.introspect, "vm_list: both VMs, as configured")
        tap.check(vl[vm].mappings == 1 and vl[vm].ram_bytes == 32 * MB, "vm_list: mappings and RAM of vm0")
        sock = os.path.join(info["dir"], "py2.sock")
        c.vm_add("py2", 9, sock)
        vl = {v.vm.name: v for v in c.vm_list()}
        tap.check("py2" in vl and not vl["py2"].connected and os.path.exists(sock), "vm_add: listed, socket made")
        e = expect_error(lambda: c.vm_add("py2", 10, sock + "x"))
        tap.check(e is not None, "a second VM of that name is refused (%s)" % (e and e.status_name))
        c.vm_remove("py2")
        tap.check("py2" not in {v.vm.name for v in c.vm_list()} and not os.path.exists(sock),
                  "vm_remove: gone, socket removed")
        e = expect_error(lambda: c.vm_remove("py2"))
        tap.check(e is not None, "removing it again is refused (%s)" % (e and e.status_name))

    section(tap, "VMs", vms)

    def qemu():
        e = expect_error(lambda: c.regs(vm))
        tap.check(e is not None and e.status == pb.STATUS_ACCESS_DENIED,
                  "regs of a VM without introspect=on: STATUS_ACCESS_DENIED (%s)" % (e and e.status_name))
        e = expect_error(lambda: c.regs(intro))
        tap.check(e is not None and e.status == pb.STATUS_NOT_SUPPORTED,
                  "regs of a VM without qmp=: STATUS_NOT_SUPPORTED (%s)" % (e and e.status_name))
        e = expect_error(lambda: c.pause(intro))
        tap.check(e is not None and e.status == pb.STATUS_NOT_SUPPORTED, "pause too")
        qemu_bin = shutil.which("qemu-system-x86_64")
        if not qemu_bin:
            tap.skip("regs, pause, resume of a real QEMU", "no qemu-system-x86_64")
            return
        # a real QEMU (TCG, -S: the vCPUs wait at the reset vector), added at run time with qmp=
        qmp = os.path.join(info["dir"], "qmp.sock")
        q = subprocess.Popen([qemu_bin, "-accel", "tcg", "-S", "-nodefaults", "-display", "none", "-smp", "2",
                              "-m", "64", "-qmp", "unix:%s,server=on,wait=off" % qmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(500):  # readiness, not a pass/fail timing
                if os.path.exists(qmp) or q.poll() is not None:
                    break
                time.sleep(0.02)
            c.vm_add("q", 12, os.path.join(info["dir"], "q.sock"), qmp=qmp, introspect=True)
            r = None
            for _ in range(750):  # hostd connects to QMP on its own: wait until it answers
                try:
                    r = c.run_state("q")
                    break
                except mdlmap.MdlmapError as e:
                    if e.status != pb.STATUS_DEVICE_NOT_READY:
                        raise
                    time.sleep(0.02)
            tap.check(r is not None and not r.running and r.qemu_status == "prelaunch",
                      "run_state of a QEMU started with -S: prelaunch (%s)" % (r and r.qemu_status))
            st = c.regs("q")
            tap.check(len(st.vcpus) == 2 and all(v.rip == 0xFFF0 and v.cr0 == 0x60000010 for v in st.vcpus) and
                      not st.running, "regs: 2 vCPUs at the reset vector")
            r = c.resume("q")
            tap.check(r.running and r.qemu_status == "running", "resume: running")
            r = c.pause("q")
            tap.check(not r.running and r.qemu_status == "paused", "pause: paused")
            c.vm_remove("q")
        finally:
            q.kill()
            q.wait()
            if os.path.exists(qmp):
                os.unlink(qmp)

    section(tap, "QEMU", qemu)
    c.close()


main(run)
