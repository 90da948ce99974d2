#!/bin/bash
# e2e: a VM added and removed at run time through the host API, next to a
# VM whose guest keeps an open connection the whole time.
#   hostd starts with VM a (cid 3); guest A runs a long echo to the host
#   (progress lines every 2 s on one connection). VM b (cid 4) is added with
#   VmAdd; its QEMU boots and echoes 1 MiB; VmRemove b while its QEMU still
#   runs: hostd lists one VM, b's socket is gone, hostd's fd count is back to
#   what it was before the add, and A's connection kept echoing throughout.
# usage: vm_runtime.sh HOSTD AGENT VMCTL
. "$(dirname "$0")/lib.sh"
VMCTL=$(readlink -f "${3:-${MDLMAP_VMCTL:-}}" 2>/dev/null || true)
[ -x "$VMCTL" ] || { echo "usage: $0 HOSTD AGENT VMCTL" >&2; exit 2; }
API=$T/api.sock

progress_count() {
  if [ -f "$T/a1.log" ]; then tr -d '\r' < "$T/a1.log" | grep -c '^PROGRESS conn=0 '; else echo 0; fi
}
# wait_progress_after N SECS: more than N progress lines within SECS
wait_progress_after() {
  local n=$1 i=0
  while [ $i -lt $(($2 * 5)) ]; do
    [ "$(progress_count)" -gt "$n" ] && return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

start_hostd --vm "name=a,cid=3,socket=$T/a.sock" --api "$API" || { fail "hostd (VM a, API) ready"; finish; }
pass "hostd (VM a, API) ready"

guest_bg a1 --socket "$T/a.sock" -- mdlmap-agent echo --bytes 64G --msg-size 4K --progress 2 --timeout 60
a_pid=$GUEST_BG_PID
if wait_progress_after 0 "$GUEST_TIMEOUT"; then
  pass "guest A echoes on one connection (progress lines)"
else
  fail "guest A echoes on one connection (progress lines)"
fi

fds0=$(fd_count "$HOSTD_PID")
check "VmAdd b (cid 4) at run time" "$VMCTL" "$API" add b 4 "$T/b.sock"
check "b's socket exists" test -S "$T/b.sock"
check "VmList: a and b" bash -c "'$VMCTL' '$API' list | grep -c '^vm ' | grep -qx 2"

guest_bg b1 --socket "$T/b.sock" -- sh -c 'mdlmap-agent echo --bytes 1M && echo B-ECHO-DONE; sleep 3600'
b_pid=$GUEST_BG_PID
check "guest B (added VM) boots and echoes 1 MiB" wait_for_line "$T/b1.log" '^B-ECHO-DONE' "$GUEST_TIMEOUT"
check "VmList: b connected" bash -c "'$VMCTL' '$API' list | grep -q '^vm b cid 4 connected 1 '"
n=$(progress_count)
check "guest A's connection echoes on while B runs" wait_progress_after "$n" 30

check "VmRemove b while its QEMU runs" "$VMCTL" "$API" remove b
check "VmList: only a" bash -c "'$VMCTL' '$API' list | grep '^vm ' | grep -q '^vm a ' && [ \$('$VMCTL' '$API' list | grep -c '^vm ') = 1 ]"
check "b's socket is gone" bash -c "! test -e '$T/b.sock'"
check "hostd logged b's removal" log_has "$HOSTD_LOG" 'vm b: removed'
kill -TERM "$b_pid" 2>/dev/null
wait "$b_pid" 2>/dev/null
n=$(progress_count)
check "guest A's connection echoes on after b's removal" wait_progress_after "$n" 30
fds1=$(fd_count "$HOSTD_PID")
for _ in $(seq 20); do [ "$fds1" = "$fds0" ] && break; sleep 0.2; fds1=$(fd_count "$HOSTD_PID"); done
check "hostd's fd count is back to $fds0 (got $fds1)" [ "$fds1" = "$fds0" ]
check "guest A reported no echo error" bash -c "! tr -d '\r' < '$T/a1.log' | grep -qE '^(ECHO FAIL|echo: conn)'"
check "hostd alive" hostd_alive

kill -TERM "$a_pid" 2>/dev/null
wait "$a_pid" 2>/dev/null
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
finish
