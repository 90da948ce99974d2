#!/usr/bin/python3
"""mdlmapctl --json against a real hostd with harness guests: every output
must parse as JSON (one object per result, one per line for watch) and say
what hostd holds; the text commands stay as they were.
usage: test_ctl_json.py GUEST_MAPPER HOSTD MDLMAPCTL"""
import json
import os
import subprocess

from client_rig import main

def run(tap, rig, argv):
    ctl, info = argv[3], rig.info
    api, vm, intro = info["api"], info["vm"], info["intro"]
    h, ga, n = info["map_handle"], info["guest_address"], info["byte_count"]

    def ctl_json(*args, want_rc=0):
        """Run mdlmapctl --json; the parsed objects (one per line)."""
        p = subprocess.run([ctl, "--api", api, "--json", *args], capture_output=True, text=True, timeout=30)
        objs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        if p.returncode != want_rc or not objs:
            # a sanitizer report ends the process before stdout is flushed: say what it printed
            tap.diag("%s: rc %d, stderr: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
        return p.returncode, objs

    def section(name, fn):
        try:
            fn()
        except (ValueError, KeyError, IndexError) as e:  # json.JSONDecodeError is a ValueError
            tap.check(False, "%s: %r" % (name, e))

    def mappings():
        rc, o = ctl_json("list")
        ms = o[0]["mappings"] if rc == 0 and len(o) == 1 else []
        tap.check(len(ms) == 1 and int(ms[0]["map_handle"], 16) == h and ms[0]["vm"] == vm and
                  ms[0]["byte_count"] == n and int(ms[0]["guest_address"], 16) == ga, "list --json: the mapping")
        rc, o = ctl_json("find", "--vm", vm, hex(ga + 50))
        tap.check(rc == 0 and int(o[0]["mappings"][0]["map_handle"], 16) == h, "find --vm VM ADDRESS")
        rc, o = ctl_json("find", "--vm", intro, hex(ga + 50), want_rc=1)
        tap.check(rc == 1 and "error" in o[0] and "no mapping contains" in o[0]["error"]["detail"],
                  "find in the other VM: a JSON error, exit 1")
        rc, o = ctl_json("read", "--vm", vm, "--guest-address", hex(ga + 6), "4")
        tap.check(rc == 0 and bytes.fromhex(o[0]["hex"]) == info["text"].encode()[6:10] and o[0]["offset"] == 6,
                  "read --guest-address: the guest's bytes as hex")
        rc, o = ctl_json("write", "--vm", vm, "--guest-address", hex(ga), 'q"\\\n\x01')
        tap.check(rc == 0 and o[0]["written"] == 5, "write --guest-address")
        p = subprocess.run([ctl, "--api", api, "read", "--raw", hex(h), "0", "5"], capture_output=True)
        tap.check(p.returncode == 0 and p.stdout == b'q"\\\n\x01', "read --raw (text mode) sees those bytes")
        rc, o = ctl_json("stats")
        tap.check(rc == 0 and o[0]["mappings"] == 1 and isinstance(o[0]["recent_leaks"], list), "stats --json")
        rc, o = ctl_json("read", "0x1234", "0", "4", want_rc=1)
        tap.check(rc == 1 and o[0]["error"]["status"] == "STATUS_INVALID_HANDLE" and
                  o[0]["error"]["code"] == -1073741816, "a failure: status name and code in JSON")
        p = subprocess.run([ctl, "--api", api, "list"], capture_output=True, text=True)
        tap.check(p.returncode == 0 and "1 mapping" in p.stdout and "HANDLE" in p.stdout, "text output unchanged")

    section("mappings", mappings)

    def physical():
        rc, o = ctl_json("phys-write", intro, hex(10 << 20), "json test")
        tap.check(rc == 0 and o[0]["written"] == 9, "phys-write --json")
        rc, o = ctl_json("phys-read", intro, hex(10 << 20), "9")
        tap.check(rc == 0 and bytes.fromhex(o[0]["hex"]) == b"json test", "phys-read --json")
        rc, o = ctl_json("phys-read", intro, hex((4 << 30) - 4096), "16", want_rc=1)
        tap.check(rc == 1 and o[0]["error"]["status"] == "STATUS_MEMORY_NOT_ALLOCATED", "phys-read in the hole")
        out = os.path.join(info["dir"], "ram.img")
        rc, o = ctl_json("dump", intro, out)
        regions = o[0].get("regions", []) if rc == 0 else []
        tap.check(rc == 0 and [(int(r["gpa"], 16), r["size"]) for r in regions] == [(0, 16 << 20), (4 << 30, 16 << 20)]
                  and o[0]["file_size"] == (4 << 30) + (16 << 20), "dump: two regions, file offset = GPA")
        if rc == 0:
            with open(out, "rb") as f:
                f.seek(10 << 20)
                first = f.read(9)
                f.seek((4 << 30) - 4096)
                hole = f.read(4096)
            st = os.stat(out)
            tap.check(first == b"json test" and hole == bytes(4096), "the dump holds the bytes, the hole reads zero")
            tap.check(st.st_blocks * 512 < 40 << 20, "the dump is sparse (%d MiB on disk)" % (st.st_blocks >> 11))
            os.unlink(out)

    section("physical memory", physical)

    def virtual():
        # a page table with nothing present: every address faults
        rc, o = ctl_json("phys-write", intro, hex(11 << 20), "--hex", "00" * 8)
        rc, o = ctl_json("translate", intro, hex(11 << 20), "0x1000", "0x7fff0000", want_rc=1)
        res = o[0].get("results", []) if o else []
        tap.check(rc == 1 and len(res) == 2 and all(r["status"] == "STATUS_ACCESS_VIOLATION" for r in res),
                  "translate --json: a status per address, exit 1 when one failed")
        rc, o = ctl_json("virt-read", intro, hex(11 << 20), "0x1000", "16", want_rc=1)
        tap.check(rc == 1 and o[0]["length"] == 0 and o[0]["status"] == "STATUS_ACCESS_VIOLATION" and
                  int(o[0]["fault_vaddr"], 16) == 0x1000, "virt-read --json: the fault")

    section("guest-virtual", virtual)

    def events():
        w = subprocess.Popen([ctl, "--api", api, "--json", "watch", "--vm", vm, "--type", "mapping_created,mdl_locked",
                              "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = json.loads(w.stdout.readline() or "{}")  # {"watching_from_seq": N}: subscribed
        if "watching_from_seq" not in first:
            w.communicate(timeout=10)
            tap.check(False, "watch subscribed (%s)" % first)
            return
        m = rig.map()
        try:
            out, err = w.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            w.kill()
            out, err = w.communicate()
        objs = [json.loads(line) for line in out.splitlines()]
        types = sorted(o.get("type") for o in objs)
        tap.check(w.returncode == 0 and types == ["MAPPING_CREATED", "MDL_LOCKED"] and
                  any(int(o["map_handle"], 16) == m["map_handle"] for o in objs),
                  "watch --json: one object per line per event (%s)" % types)
        rig.unmap()

    section("events", events)

    def vms():
        rc, o = ctl_json("vm", "list")
        names = {v["name"]: v for v in o[0].get("vms", [])} if rc == 0 else {}
        tap.check(vm in names and names[intro]["introspect"] is True, "vm list --json")
        sock = os.path.join(info["dir"], "ctl.sock")
        rc, o = ctl_json("vm", "add", "name=ctl,cid=11,socket=%s,introspect=on" % sock)
        tap.check(rc == 0 and o[0] == {"added": "ctl"}, "vm add")
        rc, o = ctl_json("vm", "remove", "ctl")
        tap.check(rc == 0 and o[0] == {"removed": "ctl"}, "vm remove")

    section("VMs", vms)

    def qemu():
        rc, o = ctl_json("regs", intro, want_rc=1)
        tap.check(rc == 1 and o[0]["error"]["status"] == "STATUS_NOT_SUPPORTED", "regs without qmp=: JSON error")
        rc, o = ctl_json("pause", vm, want_rc=1)
        tap.check(rc == 1 and o[0]["error"]["status"] == "STATUS_ACCESS_DENIED", "pause without introspect=on")

    section("QEMU", qemu)

    p = subprocess.run([ctl, "--api", api, "frobnicate", "--json"], capture_output=True, text=True)
    tap.check(p.returncode == 2 and "usage" in p.stderr, "usage errors exit 2")


main(run)
