#!/bin/bash
# e2e: deploy/libvirt/domain-example.xml under a real libvirtd.
#   0. the example validates (virt-xml-validate); its <memoryBacking> and
#      <qemu:commandline> blocks are used verbatim in the domains below
#   1. a private libvirtd + virtlogd (scripts/libvirt/prepare-libvirtd.sh
#      --private, own mount namespace, QEMU runs as libvirt-qemu) and hostd
#   2. domain "a" (transient, TCG, direct kernel boot, memfd shared RAM,
#      vhost-user-vsock-pci via <qemu:commandline>, serial console to a file):
#      the guest echoes 1 MiB to CID 2 port 7, prints MDLMAP-EXIT: 0, powers
#      off, libvirt drops the domain; hostd logged the connect from that QEMU
#   3. domain "b": echoes, then starts a long transfer; `virsh destroy`
#      kills QEMU mid-transfer; hostd logs the disconnect and stays up
#   4. domain "c" for the same VM/socket echoes again (MDLMAP-EXIT: 0)
#   5. hostd exits 0 on SIGTERM; domains, daemons and temp dirs are removed
# Skips (77) only when libvirt cannot run here (not root, not installed,
# no mount namespaces), see prepare-libvirtd.sh.
# usage: libvirt_domain.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/libvirt_lib.sh"

VM=vm1
CID=3
DOMS=()
QPIDS=()

lv_cleanup() {
  local d
  if [ -n "$URI" ]; then
    for d in "${DOMS[@]+"${DOMS[@]}"}"; do
      virsh_ domstate "$d" >/dev/null 2>&1 && virsh_ destroy "$d" >/dev/null 2>&1
    done
  fi
  lv_stop
  for d in "${QPIDS[@]+"${QPIDS[@]}"}"; do
    grep -qa qemu "/proc/$d/cmdline" 2>/dev/null && kill -KILL "$d" 2>/dev/null
  done
  e2e_cleanup
}
trap lv_cleanup EXIT

# lv_finish: finish, with libvirt's own logs shown on failure.
lv_finish() {
  local f
  if [ "$FAIL" -gt 0 ]; then
    for f in "$LV"/log/libvirtd.log "$LV"/log/qemu/*.log; do show_log "$f" 30; done
  fi
  finish
}

lv_setup
QGROUP=libvirt-qemu

mkdir -p "$T/sock"
chgrp "$QGROUP" "$T/sock" && chmod 0750 "$T/sock"
SOCK=$T/sock/$VM.sock
start_hostd --vm "name=$VM,cid=$CID,socket=$SOCK" --socket-group "$QGROUP" || { fail "hostd starts"; lv_finish; }
check "hostd made $SOCK group $QGROUP mode 0660 (--socket-group)" \
  [ "$(stat -c '%G %a' "$SOCK")" = "$QGROUP 660" ]

# The parts of deploy/libvirt/domain-example.xml under test, taken verbatim
# (socket path replaced): <memoryBacking> and <qemu:commandline>.
EXAMPLE=$TOP/deploy/libvirt/domain-example.xml
EX_MEM=$(sed -n '/^[[:space:]]*<memoryBacking>[[:space:]]*$/,/<\/memoryBacking>/p' "$EXAMPLE")
EX_QEMU=$(sed -n '/^[[:space:]]*<qemu:commandline>[[:space:]]*$/,/<\/qemu:commandline>/p' "$EXAMPLE" | sed "s|/run/mdlmap/guest1.vsock|$SOCK|")
if [ "$(grep -c "<memoryBacking>" <<<"$EX_MEM")" = 1 ] && [ "$(grep -c "<qemu:commandline>" <<<"$EX_QEMU")" = 1 ] &&
   grep -q "path=$SOCK'" <<<"$EX_QEMU"; then
  pass "domain-example.xml has <memoryBacking> and <qemu:commandline> for /run/mdlmap/guest1.vsock"
else
  fail "domain-example.xml has <memoryBacking> and <qemu:commandline> for /run/mdlmap/guest1.vsock"
fi
if virt-xml-validate "$EXAMPLE" domain >"$T/validate.log" 2>&1; then
  pass "domain-example.xml passes virt-xml-validate"
else
  fail "domain-example.xml passes virt-xml-validate"; sed 's/^/#   /' "$T/validate.log"
fi

# domxml NAME: the domain: the example's parts above plus type qemu (TCG),
# direct kernel boot, console to a file, no disk.
domxml() {
  local name=$1
  cat <<EOF
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>mdlmap-e2e-$name</name>
  <memory unit='MiB'>512</memory>
$EX_MEM
  <vcpu>1</vcpu>
$(lv_os "$name")
  <devices>
$(lv_devices "$name")
  </devices>
$EX_QEMU
</domain>
EOF
}

# create NAME: virsh create; sets QPID to the domain's QEMU pid.
create() {
  local name=$1 i=0
  domxml "$name" > "$T/$name.xml"
  DOMS+=("mdlmap-e2e-$name")
  QPID=""
  if ! virsh_ create "$T/$name.xml" >"$T/$name.virsh.log" 2>&1; then
    sed 's/^/#   /' "$T/$name.virsh.log"
    return 1
  fi
  while [ -z "$QPID" ] && [ $i -lt 50 ]; do
    QPID=$(tr -dc '0-9' < "$LV/run/qemu/mdlmap-e2e-$name.pid" 2>/dev/null)
    [ -n "$QPID" ] || sleep 0.1
    i=$((i + 1))
  done
  [ -z "$QPID" ] || QPIDS+=("$QPID")
  note "domain mdlmap-e2e-$name running, QEMU pid ${QPID:-?} (uid $(stat -c %U "/proc/$QPID" 2>/dev/null))"
}

# gone NAME SECS: the transient domain disappeared from libvirt.
gone() {
  local i=0
  while [ $i -lt $(($2 * 5)) ]; do
    virsh_ domstate "mdlmap-e2e-$1" >/dev/null 2>&1 || return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

exit_code() { tr -d '\r' < "$T/$1.console.log" | sed -n 's/^MDLMAP-EXIT: \([0-9]*\).*/\1/p' | head -n1; }

# ---- a: runs to completion ----
initrd a mdlmap-agent echo --bytes 1M || { fail "initramfs a"; lv_finish; }
t0=$(date +%s)
if create a; then pass "virsh create domain a"; else fail "virsh create domain a"; lv_finish; fi
qa=$QPID
check "QEMU of domain a runs as libvirt-qemu" [ "$(stat -c %U "/proc/$qa" 2>/dev/null)" = libvirt-qemu ]
if wait_for_line "$T/a.console.log" '^MDLMAP-EXIT: ' "$GUEST_TIMEOUT"; then
  rc=$(exit_code a)
  note "domain a: MDLMAP-EXIT $rc after $(( $(date +%s) - t0 ))s"
  check "domain a: guest echoed 1 MiB" log_has "$T/a.console.log" '^ECHO OK: type=stream conns=1 bytes=1048576'
  check "domain a: guest command exit status 0 (got $rc)" [ "$rc" = 0 ]
else
  fail "domain a: MDLMAP-EXIT marker within ${GUEST_TIMEOUT}s"
fi
check "hostd logged domain a's QEMU (pid $qa) connecting" log_has "$HOSTD_LOG" "vm $VM: vhost-user front-end connected \\(pid $qa\\)"
check "domain a powered off and left libvirt" gone a 60

# ---- b: destroyed mid-transfer ----
initrd b sh -c 'mdlmap-agent echo --bytes 1M || exit $?; echo "E2E: long transfer"; exec mdlmap-agent echo --bytes 4G --timeout 600' \
  || { fail "initramfs b"; lv_finish; }
if create b; then pass "virsh create domain b"; else fail "virsh create domain b"; lv_finish; fi
qb=$QPID
if wait_for_line "$T/b.console.log" '^E2E: long transfer' "$GUEST_TIMEOUT"; then
  sleep 3
  check "domain b: transfer still running before destroy" bash -c "! tr -d '\r' < '$T/b.console.log' | grep -q '^MDLMAP-EXIT'"
else
  fail "domain b: guest echoed and started the long transfer"
fi
check "hostd logged domain b's QEMU (pid $qb) connecting" log_has "$HOSTD_LOG" "vm $VM: vhost-user front-end connected \\(pid $qb\\)"
nd0=$(tr -d '\r' < "$HOSTD_LOG" | grep -c "vm $VM: vhost-user front-end disconnected")
check "virsh destroy domain b" virsh_ destroy mdlmap-e2e-b
check "domain b's QEMU (pid $qb) is gone" bash -c "for i in \$(seq 50); do kill -0 $qb 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
check "domain b left libvirt" gone b 10
i=0
while [ "$(tr -d '\r' < "$HOSTD_LOG" | grep -c "vm $VM: vhost-user front-end disconnected")" -le "$nd0" ] && [ $i -lt 50 ]; do
  sleep 0.2; i=$((i + 1))
done
check "hostd logged the disconnect" [ "$(tr -d '\r' < "$HOSTD_LOG" | grep -c "vm $VM: vhost-user front-end disconnected")" -gt "$nd0" ]
check "hostd alive after virsh destroy" hostd_alive

# ---- c: the same VM again ----
initrd c mdlmap-agent echo --bytes 1M || { fail "initramfs c"; lv_finish; }
t0=$(date +%s)
if create c; then pass "virsh create domain c (same VM, after destroy)"; else fail "virsh create domain c"; lv_finish; fi
qc=$QPID
if wait_for_line "$T/c.console.log" '^MDLMAP-EXIT: ' "$GUEST_TIMEOUT"; then
  rc=$(exit_code c)
  note "domain c: MDLMAP-EXIT $rc after $(( $(date +%s) - t0 ))s"
  check "domain c: guest echoed 1 MiB" log_has "$T/c.console.log" '^ECHO OK: type=stream conns=1 bytes=1048576'
  check "domain c: guest command exit status 0 (got $rc)" [ "$rc" = 0 ]
else
  fail "domain c: MDLMAP-EXIT marker within ${GUEST_TIMEOUT}s"
fi
check "hostd accepted domain c's QEMU (pid $qc)" log_has "$HOSTD_LOG" "vm $VM: vhost-user front-end connected \\(pid $qc\\)"
check "domain c left libvirt" gone c 60
check "hostd still running" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
lv_finish
