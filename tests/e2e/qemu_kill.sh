#!/bin/bash
# e2e: QEMU dies or the guest reboots; hostd must survive and recover.
#   1. baseline: hostd's fd count (/proc/PID/fd) and mapping count (/proc/PID/maps)
#   2. a guest streams a long echo; QEMU gets SIGKILL mid-transfer
#   3. hostd still runs; fds and maps return to the baseline
#   4. a new QEMU for the same VM echoes 1 MiB again
#   5. reboot: the guest echoes, reboots in the middle of a transfer, echoes
#      again after the reboot; hostd fine, fds/maps back to baseline
# usage: qemu_kill.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"

# wait_baseline SECS: wait until fds and maps equal the baseline.
wait_baseline() {
  local i=0
  while [ $i -lt $(($1 * 5)) ]; do
    fds=$(fd_count "$HOSTD_PID")
    maps=$(map_count "$HOSTD_PID")
    [ "$fds" = "$fd0" ] && [ "$maps" = "$map0" ] && return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" || { fail "hostd ready"; finish; }
pass "hostd ready"
fd0=$(fd_count "$HOSTD_PID")
map0=$(map_count "$HOSTD_PID")
note "baseline: $fd0 fds, $map0 maps"

# ---- SIGKILL QEMU during a transfer ----
guest_bg k1 --socket "$T/vm1.sock" -- mdlmap-agent echo --bytes 4G --timeout 600
g_pid=$GUEST_BG_PID
if wait_for_line "$T/k1.log" '^echo: 1 stream connection' 120; then
  sleep 3
  fds_busy=$(fd_count "$HOSTD_PID")
  maps_busy=$(map_count "$HOSTD_PID")
  note "during transfer: $fds_busy fds, $maps_busy maps"
  check "transfer in progress when QEMU is killed" bash -c "! tr -d '\r' < '$T/k1.log' | grep -q '^ECHO '"
  qpid=$(cat "$T/k1.qemu.pid")
  kill -KILL "$qpid"
  note "SIGKILLed QEMU pid $qpid"
else
  fail "transfer in progress when QEMU is killed"
fi
wait "$g_pid"
grc=$?
check "runner reports a missing marker after the kill (125, got $grc)" [ "$grc" = 125 ]
sleep 1
check "hostd survives QEMU SIGKILL" hostd_alive
if wait_baseline 15; then
  pass "fds/maps back to baseline ($fds fds, $maps maps)"
else
  fail "fds/maps back to baseline: now $fds fds (baseline $fd0), $maps maps (baseline $map0)"
  ls -l "/proc/$HOSTD_PID/fd" | sed 's/^/#   /'
fi

# ---- a new QEMU for the same VM ----
guest k2 --socket "$T/vm1.sock" -- mdlmap-agent echo --bytes 1M
rc=$?
check "new QEMU for the same VM echoes 1 MiB (exit $rc)" log_has "$T/k2.log" '^ECHO OK: type=stream'
check "hostd alive after second QEMU" hostd_alive
if wait_baseline 15; then pass "fds/maps back to baseline after clean exit"; else
  fail "fds/maps after clean exit: $fds fds (baseline $fd0), $maps maps (baseline $map0)"; fi

# ---- guest reboot ----
# Boot 1 reboots with a transfer still running (hostd must drop that
# connection on the device reset); boot 2 must echo again.
guest r1 --socket "$T/vm1.sock" --boots 2 -- sh -c '
  echo "boot $MDLMAP_BOOT"; mdlmap-agent echo --bytes 1M --conns 2 || exit $?
  if [ "$MDLMAP_BOOT" = 1 ]; then
    mdlmap-agent echo --bytes 4G --timeout 600 >/dev/null & sleep 2
    echo "rebooting with transfer pid $! running"
  fi'
rc=$?
n=$(tr -d '\r' < "$T/r1.log" | grep -c '^ECHO OK: type=stream conns=2')
check "echo works before and after the guest reboot ($n/2 boots, exit $rc)" [ "$n" = 2 ] && [ "$rc" = 0 ]
check "hostd alive after reboot" hostd_alive
if wait_baseline 15; then pass "fds/maps back to baseline after reboot"; else
  fail "fds/maps after reboot: $fds fds (baseline $fd0), $maps maps (baseline $map0)"; fi
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
finish
