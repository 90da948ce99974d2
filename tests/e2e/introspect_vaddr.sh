#!/bin/bash
# e2e: a host tool finds a guest process's string by virtual address, with
# the CR3 that QMP gives it. hostd serves vm1 with qmp= and introspect=on and
# QEMU gets that QMP socket. In the guest `mdlmap-agent hold-string` holds a
# random secret across a page boundary, prints its virtual address and spins.
# On the host, mdlmapctl --json only:
#   pause, regs (CR3 of the single vCPU), virt-read CR3 VADDR LEN == secret;
#   when the vCPU was in another process (the read differs or faults):
#   resume and try again;
#   translate both pages of the string: present, user (US), writable; a
#   phys-read of the two guest-physical addresses gives the two halves;
#   an unmapped and a non-canonical address: STATUS_ACCESS_VIOLATION;
#   virt-write of the program's stop byte, resume: the program sees it, ends.
# usage: introspect_vaddr.sh HOSTD AGENT   (mdlmapctl: next to hostd, or $MDLMAPCTL)
. "$(dirname "$0")/lib.sh"

CTL=${MDLMAPCTL:-$(dirname "$HOSTD")/cli/mdlmapctl}
[ -x "$CTL" ] || { echo "mdlmapctl not found (set MDLMAPCTL)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "SKIP: python3 is needed to read mdlmapctl --json" >&2; exit 77; }
API=$T/api.sock
QMP=$T/qmp.sock
SECRET=e2e-secret-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
ATTEMPTS=10
ctl() { "$CTL" --api "$API" --json "$@"; }
# jget FILE EXPR: a Python expression over the JSON object j in FILE; bools
# print as true/false, bytes ("hex" fields through unhex) as latin-1 text.
jget() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
unhex = lambda s: bytes.fromhex(s).decode("latin-1")
v = eval(sys.argv[2])
print(str(v).lower() if isinstance(v, bool) else v)
EOF
}

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock,qmp=$QMP,introspect=on" --api "$API" ||
  { fail "hostd ready"; finish; }
pass "hostd ready: vm1 with qmp= and introspect=on"

guest_bg g --socket "$T/vm1.sock" --qemu-arg -qmp --qemu-arg "unix:$QMP,server=on,wait=off" -- \
  mdlmap-agent hold-string --secret "$SECRET" --seconds 200
g=$GUEST_BG_PID
if ! wait_for_line "$T/g.log" '^HOLDING ' 240; then
  fail "the guest program holds the secret"
  finish
fi
line=$(tr -d '\r' < "$T/g.log" | grep -m1 '^HOLDING ')
note "guest: $line"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$line"; }
VA=$(field vaddr) LEN=$(field len) STOP=$(field stop)
check "the guest program holds our secret ($LEN bytes at $VA)" [ "$(field secret),$LEN" = "$SECRET,${#SECRET}" ]

# ---- pause, CR3, read; again while the vCPU is in another process ----
found=0
for attempt in $(seq $ATTEMPTS); do
  if ! ctl pause vm1 > "$T/pause.json" 2>> "$T/ctl.err"; then
    note "attempt $attempt: pause failed: $(tail -n1 "$T/ctl.err")"  # QMP not connected yet
    sleep 1
    continue
  fi
  if ctl regs vm1 > "$T/regs.json" 2>> "$T/ctl.err"; then
    CR3=$(jget "$T/regs.json" 'j["vcpus"][0]["cr3"]')
    ctl virt-read vm1 "$CR3" "$VA" "$LEN" > "$T/read.json" 2>> "$T/ctl.err"
    got=$(jget "$T/read.json" 'unhex(j.get("hex", ""))')
    if [ "$got" = "$SECRET" ]; then
      found=1
      break
    fi
    note "attempt $attempt: cr3=$CR3 rip=$(jget "$T/regs.json" 'j["vcpus"][0]["rip"]') cpl=$(jget "$T/regs.json" \
      'j["vcpus"][0]["cpl"]'): $(jget "$T/read.json" 'j["status"]') ($(jget "$T/read.json" 'j["length"]') bytes): another process"
  else
    note "attempt $attempt: regs failed: $(tail -n1 "$T/ctl.err")"
  fi
  ctl resume vm1 > /dev/null 2>> "$T/ctl.err"
  sleep 0.5
done
if [ "$found" = 0 ]; then
  fail "virt-read with the vCPU's CR3 found the secret within $ATTEMPTS pauses"
  kill -TERM "$g" 2>/dev/null
  finish
fi
pass "virt-read vm1 CR3 $VA $LEN returned the secret (attempt $attempt, cr3=$CR3)"
note "regs: $(cat "$T/regs.json")"
check "pause answered: not running, QEMU status paused" \
  [ "$(jget "$T/pause.json" 'j["running"], j["qemu_status"]')" = "(False, 'paused')" ]
check "regs while paused: running false, one vCPU" \
  [ "$(jget "$T/regs.json" 'j["running"], len(j["vcpus"])')" = "(False, 1)" ]
check "the read crossed a page boundary" \
  [ $(((VA & 0xfff) + LEN > 4096)) = 1 ]

# ---- translate both pages; the physical view agrees ----
LAST=$(printf '0x%x' $((VA + LEN - 1)))
ctl translate vm1 "$CR3" "$VA" "$LAST" > "$T/tr.json"
note "translate: $(cat "$T/tr.json")"
for i in 0 1; do
  check "translate result $i: present, user (US), writable" \
    [ "$(jget "$T/tr.json" "[j['results'][$i][k] for k in ('status', 'user', 'writable')]")" = \
      "['STATUS_SUCCESS', True, True]" ]
done
head=$((4096 - (VA & 0xfff)))
gpa0=$(jget "$T/tr.json" 'j["results"][0]["gpa"]')
gpa1=$(jget "$T/tr.json" 'hex(int(j["results"][1]["gpa"], 16) & ~0xfff)')
ctl phys-read vm1 "$gpa0" "$head" > "$T/p0.json"
ctl phys-read vm1 "$gpa1" $((LEN - head)) > "$T/p1.json"
check "phys-read at the first page's GPA $gpa0 gives the first $head bytes" \
  [ "$(jget "$T/p0.json" 'unhex(j["hex"])')" = "${SECRET:0:head}" ]
check "phys-read at the second page's GPA $gpa1 gives the rest" \
  [ "$(jget "$T/p1.json" 'unhex(j["hex"])')" = "${SECRET:head}" ]

# ---- addresses that are not mapped ----
ctl virt-read vm1 "$CR3" 0x0 16 > "$T/neg.json" 2>> "$T/ctl.err"
rc=$?
check "virt-read of VA 0 fails (exit $rc): STATUS_ACCESS_VIOLATION, 0 bytes, fault at 0x0" \
  [ "$rc,$(jget "$T/neg.json" 'j["status"], j["length"], j["fault_vaddr"]')" = \
    "1,('STATUS_ACCESS_VIOLATION', 0, '0x0')" ]
ctl translate vm1 "$CR3" 0x1000 0x800000000000 > "$T/neg2.json" 2>> "$T/ctl.err"
check "translate of VA 0x1000 and a non-canonical VA: STATUS_ACCESS_VIOLATION for both" \
  [ "$(jget "$T/neg2.json" '[r["status"] for r in j["results"]]')" = \
    "['STATUS_ACCESS_VIOLATION', 'STATUS_ACCESS_VIOLATION']" ]

# ---- end the program through its own memory ----
ctl virt-write vm1 "$CR3" "$STOP" 01 --hex > "$T/w.json" 2>> "$T/ctl.err"
check "virt-write of the stop byte at $STOP: 1 byte written" \
  [ "$(jget "$T/w.json" 'j["status"], j["written"]')" = "('STATUS_SUCCESS', 1)" ]
ctl resume vm1 > "$T/resume.json" 2>> "$T/ctl.err"
check "resume answered: running" [ "$(jget "$T/resume.json" 'j["running"]')" = true ]
check "the guest program saw the host's write and stopped" wait_for_line "$T/g.log" '^HOST SAID STOP' 120
wait "$g"
rc=$?
check "guest exited 0 (got $rc)" [ "$rc" = 0 ]
check "hostd survives" hostd_alive
check "hostd exits 0 on SIGTERM" stop_hostd
finish
