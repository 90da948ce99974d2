#!/bin/bash
# e2e: hostd restarts under a running guest without the guest noticing more
# than reset connections. hostd runs under fdstore-sup (a stand-in for
# systemd's fd store with Restart=always). The guest (never rebooted) runs
# rounds of "echo, then lock+map+unmap" and prints each round's result; the
# host waits for a good round, restarts hostd with SIGTERM, waits for a good
# round that started after the new hostd was ready, then the same with
# SIGKILL. Rounds in flight during a restart may fail (their connections
# were reset); the first full round after it must succeed. Then hostd holds
# no mapping or locked MDL, and its fd count is what the first run had.
# usage: hostd_restart.sh HOSTD AGENT  (mdlmapctl and fdstore-sup: found from
# the build tree next to hostd, or $MDLMAPCTL / $MDLMAP_FDSTORE_SUP)
. "$(dirname "$0")/lib.sh"

BUILD=$(dirname "$(dirname "$HOSTD")")
CTL=${MDLMAPCTL:-$BUILD/hostd/cli/mdlmapctl}
SUP=${MDLMAP_FDSTORE_SUP:-$BUILD/tests/support/fdstore-sup}
[ -x "$CTL" ] && [ -x "$SUP" ] || { echo "mdlmapctl or fdstore-sup not found" >&2; exit 2; }
API=$T/api.sock
ctl() { "$CTL" --api "$API" "$@"; }
stat_of() { ctl stats | awk -v k="$1" 'index($0, k) == 1 { print $NF; exit }'; }
hostd_pid() { cat "$T/hostd.pid" 2>/dev/null; }

HOSTD_N=1
HOSTD_LOG=$T/hostd.1.log
"$SUP" --pidfile "$T/hostd.pid" --list "$T/store" -- "$HOSTD" \
  --vm "name=vm1,cid=3,socket=$T/vm1.sock" --api "$API" >"$HOSTD_LOG" 2>&1 &
HOSTD_PID=$!   # the supervisor: lib.sh's cleanup SIGTERMs it, it stops hostd
wait_for_line "$HOSTD_LOG" 'ready:' 20 || { show_log "$HOSTD_LOG"; fail "hostd ready under the supervisor"; finish; }
pass "hostd ready under the fd-store supervisor (pid $(hostd_pid))"

# rounds: ROUND i echo=RC map=RC (map: lock, map, check, unmap, unlock)
guest_bg g --socket "$T/vm1.sock" -- sh -c '
  i=0
  while [ $i -lt 400 ]; do
    i=$((i + 1))
    echo "START $i"
    mdlmap-agent echo --bytes 64K --timeout 10 --connect-timeout 5 >/dev/null 2>&1; e=$?
    mdlmap-agent map --bytes 8192 --timeout 10 >/dev/null 2>&1; m=$?
    echo "ROUND $i echo=$e map=$m"
    sleep 0.2
  done'
GPID=$GUEST_BG_PID

# good_round_after N SECS: a round numbered > N with echo=0 map=0
good_round_after() {
  local n=$1 secs=$2 i=0
  while [ $i -lt $((secs * 5)) ]; do
    tr -d '\r' 2>/dev/null < "$T/g.log" |
      awk -v n="$n" '$1 == "ROUND" && $2 > n && $3 == "echo=0" && $4 == "map=0" { f = 1 } END { exit !f }' &&
      return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}
last_start() { tr -d '\r' < "$T/g.log" | awk '$1 == "START" { n = $2 } END { print n + 0 }'; }

check "guest echoes and maps through the first hostd" good_round_after 0 240
fds0=$(fd_count "$(hostd_pid)")
readies=1
for sig in TERM KILL; do
  old=$(hostd_pid)
  kill -"$sig" "$old"
  readies=$((readies + 1))
  i=0
  while [ $i -lt 100 ]; do
    [ "$(hostd_pid)" != "$old" ] && [ "$(grep -c 'ready:' "$HOSTD_LOG")" -ge $readies ] && break
    sleep 0.2
    i=$((i + 1))
  done
  now=$(hostd_pid)
  check "SIG$sig: the supervisor restarted hostd ($old -> $now) and it is ready" \
    [ "$now" != "$old" -a "$(grep -c 'ready:' "$HOSTD_LOG")" -ge $readies ]
  check "SIG$sig: hostd resumed the QEMU connection without a handshake" \
    [ "$(grep -c 'resumed after a hostd restart' "$HOSTD_LOG")" -ge $((readies - 1)) ]
  n=$(last_start)
  check "SIG$sig: a round started after the restart echoes and maps (guest not rebooted)" good_round_after "$n" 120
done
# the guest's rounds go on; between two of them hostd holds nothing
held() { [ "$(stat_of "mappings:")" = 0 ] && [ "$(stat_of "locked MDLs:")" = 0 ]; }
i=0
until held || [ $i -ge 50 ]; do sleep 0.2; i=$((i + 1)); done
check "no mapping or locked MDL of the earlier hostds is held" held
fds=$(fd_count "$(hostd_pid)")
check "hostd's fds are as in the first run ($fds, first: $fds0)" [ "$fds" -le "$fds0" ]
check "the guest never rebooted (one boot in its console)" [ "$(grep -c 'Linux version' "$T/g.log")" -le 1 ]
kill -TERM "$GPID" 2>/dev/null
wait "$GPID" 2>/dev/null
check "hostd and the supervisor exit 0 on SIGTERM" stop_hostd
finish
