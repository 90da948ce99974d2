#!/bin/bash
# e2e: libvirt domains that ask for mdlmap only with the metadata element
# (<mdlmap:vsock xmlns:mdlmap="https://mdlmap.dev/libvirt/1" cid=.../>), served by
# mdlmap-libvirt (hostd/cli/mdlmap_libvirt.c) under a private libvirtd
# (scripts/libvirt/prepare-libvirtd.sh --private) and a hostd started with no VM.
#   1. domain m (persistent, TCG, no <memoryBacking>, no <qemu:commandline>) is
#      defined: the companion prepares its definition (shared memfd RAM,
#      vhost-user-vsock-pci) and hostd lists VM m before anything starts it
#   2. m starts: the guest echoes 1 MiB to CID 2 port 7 and maps a buffer
#      through hostd (the host reads the guest's write through the mapping,
#      the guest sees the host's write); hostd saw that QEMU connect
#   3. virsh destroy m, start it again: it echoes and maps again
#   4. hostd restarted (no VM): the companion adds m again
#   5. virsh undefine m: hostd no longer lists it, its socket is gone
#   6. domain h (transient, shared memfd RAM, a spare pcie-root-port, no mdlmap
#      element) runs; `virsh metadata --live` gives it the element: the
#      companion adds VM h and hot-plugs the device; the guest echoes
#   7. `virsh metadata --live --remove`: the device is unplugged (QEMU no
#      longer has it) and hostd no longer lists h
#   8. the companion exits 0 on SIGTERM, hostd too
# Skips (77) when libvirt cannot run here (see prepare-libvirtd.sh) or
# mdlmap-libvirt was not built (no libvirt-dev).
# usage: libvirt_managed.sh HOSTD AGENT VMCTL
GUEST_TIMEOUT=${GUEST_TIMEOUT:-150}
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/libvirt_lib.sh"

VMCTL=$(readlink -f "${3:-${MDLMAP_VMCTL:-}}" 2>/dev/null || true)
[ -x "$VMCTL" ] || { echo "usage: $0 HOSTD AGENT VMCTL" >&2; exit 2; }
CTL=$(dirname "$HOSTD")/cli/mdlmapctl
COMPANION=$(dirname "$HOSTD")/cli/mdlmap-libvirt
NS=https://mdlmap.dev/libvirt/1
API=$T/api.sock
COMP_PID=""
DOMS=()

vms() { "$VMCTL" "$API" list 2>/dev/null; }

lv_cleanup() {
  local d
  [ -z "$COMP_PID" ] || kill -TERM "$COMP_PID" 2>/dev/null
  if [ -n "$URI" ]; then
    for d in "${DOMS[@]+"${DOMS[@]}"}"; do
      virsh_ destroy "$d" >/dev/null 2>&1
      virsh_ undefine "$d" >/dev/null 2>&1
    done
  fi
  lv_stop
  e2e_cleanup
}
trap lv_cleanup EXIT

lv_finish() {
  local f
  if [ "$FAIL" -gt 0 ]; then
    for f in "$T/companion.log" "$HOSTD_LOG" "$LV"/log/qemu/*.log "$T"/*.console.log; do show_log "$f" 30; done
  fi
  finish
}

if [ ! -x "$COMPANION" ]; then
  echo "SKIP: $COMPANION not built (libvirt-dev missing at meson setup)" >&2
  exit 77
fi

lv_setup

start_hostd --api "$API" || { fail "hostd starts with no VM"; lv_finish; }
SOCKDIR=$T/vsock
"$COMPANION" --connect "$URI" --api "$API" --socket-dir "$SOCKDIR" --qemu-group libvirt-qemu \
  --resync-ms 1000 >"$T/companion.log" 2>&1 &
COMP_PID=$!
check "mdlmap-libvirt watches libvirt" wait_for_line "$T/companion.log" 'watching ' 10
check "socket dir is group libvirt-qemu, mode 0750" [ "$(stat -c '%G %a' "$SOCKDIR" 2>/dev/null)" = "libvirt-qemu 750" ]

# domxml NAME EXTRA-IN-DOMAIN EXTRA-IN-DEVICES: TCG, direct kernel boot, console to a file.
domxml() {
  cat <<EOF
<domain type='qemu'>
  <name>mdlmap-e2e-$1</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
$2
$(lv_os "$1")
  <devices>
$(lv_devices "$1")
$3
  </devices>
</domain>
EOF
}

# listed NAME CID: hostd lists the VM with that CID.
listed() { vms | grep -q "^vm $1 cid $2 "; }
not_listed() { ! vms | grep -q "^vm $1 "; }
# within SECS CMD...: CMD succeeds within SECS.
within() {
  local s=$1 i=0
  shift
  while [ $i -lt $((s * 5)) ]; do
    "$@" && return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}
qpid() { tr -dc '0-9' < "$LV/run/qemu/mdlmap-e2e-$1.pid" 2>/dev/null; }

# ---- m: persistent, only the metadata element ----
MARK=LIBVIRT-GUEST-WROTE
REPLY=HOST-WROTE-BACK
initrd m sh -c "mdlmap-agent echo --bytes 1M && mdlmap-agent map --bytes 8192 --pattern lv --post-write $MARK --wait-for $REPLY --timeout 120; echo MAP-EXIT \$?; sleep 3600" \
  || { fail "initramfs m"; lv_finish; }
domxml m "  <metadata>
    <mdlmap:vsock xmlns:mdlmap='$NS' cid='5' name='m'/>
  </metadata>" "" > "$T/m.xml"
check "domain m's XML has no <qemu:commandline> and no <memoryBacking>" \
  bash -c "! grep -qE 'qemu:commandline|memoryBacking' '$T/m.xml'"
DOMS+=(mdlmap-e2e-m)
check "virsh define m" virsh_ define "$T/m.xml"
# libvirtd may take a minute per define here (it re-probes QEMU's
# capabilities), and the companion's redefinition is one more.
check "hostd lists VM m (cid 5) before m starts" within 300 listed m 5
virsh_ dumpxml --inactive mdlmap-e2e-m > "$T/m.prepared.xml"
check "m's definition now has shared memfd RAM" \
  bash -c "grep -q \"<source type='memfd'/>\" '$T/m.prepared.xml' && grep -q \"<access mode='shared'/>\" '$T/m.prepared.xml'"
check "m's definition now has vhost-user-vsock-pci on its socket in $SOCKDIR" \
  bash -c "grep -q 'vhost-user-vsock-pci,chardev=mdlmap-vsock' '$T/m.prepared.xml' && grep -q 'path=$SOCKDIR/' '$T/m.prepared.xml'"

# boot_m ROUND: start m, echo and map through hostd, then destroy it.
boot_m() {
  local r=$1 q line handle got
  [ ! -f "$T/m.console.log" ] || mv "$T/m.console.log" "$T/m.console.$r.prev"
  if ! virsh_ start mdlmap-e2e-m >"$T/m.start.log" 2>&1; then
    fail "$r: virsh start m"; sed 's/^/#   /' "$T/m.start.log"; return
  fi
  pass "$r: virsh start m"
  q=$(within 10 qpid m >/dev/null; qpid m)
  if wait_for_line "$T/m.console.log" '^POSTWRITE done' "$GUEST_TIMEOUT"; then
    pass "$r: m's guest echoed and mapped"
  else
    fail "$r: m's guest echoed and mapped"; virsh_ destroy mdlmap-e2e-m >/dev/null 2>&1; return
  fi
  check "$r: m's guest echoed 1 MiB through hostd" log_has "$T/m.console.log" '^ECHO OK: type=stream conns=1 bytes=1048576'
  check "$r: hostd served m's QEMU (pid $q)" log_has "$HOSTD_LOG" "vm m: vhost-user front-end connected \\(pid $q\\)"
  line=$(tr -d '\r' < "$T/m.console.log" | grep -m1 '^MAPPED ')
  handle=$(sed -n 's/.*handle=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
  got=$("$CTL" --api "$API" read --raw "$handle" 0 ${#MARK} 2>/dev/null)
  check "$r: the host reads m's write through hostd's mapping (got \"$got\")" [ "$got" = "$MARK" ]
  check "$r: the host writes into m's buffer" "$CTL" --api "$API" write "$handle" 0 "$REPLY"
  check "$r: m's guest saw the host's write" wait_for_line "$T/m.console.log" "^GUEST SAW HOST WRITE: \"$REPLY\"" 60
  check "$r: m's map exits 0" wait_for_line "$T/m.console.log" '^MAP-EXIT 0' 60
  check "$r: virsh destroy m" virsh_ destroy mdlmap-e2e-m
  check "$r: hostd still lists m (cid 5) while m is shut off" within 5 listed m 5
}
boot_m first
boot_m "after destroy"

# A restarted hostd has no run-time VMs: the companion's next pass adds m again.
stop_hostd >/dev/null
start_hostd --api "$API" || { fail "hostd starts again"; lv_finish; }
check "after a hostd restart the companion adds m again" within 30 listed m 5

check "virsh undefine m" virsh_ undefine mdlmap-e2e-m
check "hostd no longer lists m" within 20 not_listed m
check "m's socket is gone" bash -c "! ls '$SOCKDIR'/*.sock >/dev/null 2>&1"

# ---- h: running, shared memory, gets the element live ----
initrd h sh -c 'i=0; until mdlmap-agent echo --bytes 64K >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 1; done; echo HOTPLUG-SEEN; mdlmap-agent echo --bytes 1M; echo ECHO-EXIT $?; sleep 3600' \
  || { fail "initramfs h"; lv_finish; }
domxml h "  <features><acpi/></features>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>" "    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' model='pcie-root-port'/>" > "$T/h.xml"
DOMS+=(mdlmap-e2e-h)
check "virsh create h (shared memory, no mdlmap element)" virsh_ create "$T/h.xml"
check "hostd does not list h" not_listed h
check "h's guest is up" wait_for_line "$T/h.console.log" 'MDLMAP-INIT|Run /init|Freeing unused' 120
check "virsh metadata --live gives h the element (cid 6)" \
  virsh_ metadata mdlmap-e2e-h "$NS" --key mdlmap --set "<vsock cid='6' name='h'/>" --live
check "hostd lists VM h (cid 6)" within 20 listed h 6
check "the companion hot-attached h's device" wait_for_line "$T/companion.log" 'hot-attached \(VM h' 20
if wait_for_line "$T/h.console.log" '^ECHO-EXIT ' "$GUEST_TIMEOUT"; then
  check "h's guest found the hot-plugged device and echoed 1 MiB" log_has "$T/h.console.log" '^ECHO OK: type=stream conns=1 bytes=1048576'
  check "h's echo exits 0" log_has "$T/h.console.log" '^ECHO-EXIT 0'
else
  fail "h's guest echoed over the hot-plugged device"
fi
check "hostd lists h connected" bash -c "'$VMCTL' '$API' list | grep -q '^vm h cid 6 connected 1 '"

check "virsh metadata --live --remove takes h's element away" \
  virsh_ metadata mdlmap-e2e-h "$NS" --remove --live
check "hostd no longer lists h (device unplugged, then the VM removed)" within 90 not_listed h
check "the companion detached h's device" log_has "$T/companion.log" "detached"
check "h's QEMU no longer has the device" bash -c \
  "virsh -q -c '$URI' qemu-monitor-command mdlmap-e2e-h '{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/machine/peripheral/mdlmap-vsock\",\"property\":\"type\"}}' 2>&1 | grep -qi 'not found\|error'"
check "h still runs" bash -c "virsh -q -c '$URI' domstate mdlmap-e2e-h | grep -q running"
virsh_ destroy mdlmap-e2e-h >/dev/null 2>&1

kill -TERM "$COMP_PID"
wait "$COMP_PID"
crc=$?
COMP_PID=""
check "mdlmap-libvirt exits 0 on SIGTERM (got $crc)" [ "$crc" = 0 ]
check "hostd still running" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
lv_finish
