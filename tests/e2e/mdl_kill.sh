#!/bin/bash
# e2e: a guest program that dies holding mappings, and a QEMU that dies with
# mappings held (R12). Each time hostd must run the connection down: zero
# mappings and MDLs left, and leak records (0xCB-style mapped, 0x76-style
# locked) in `mdlmapctl stats`; hostd keeps running.
#   1. in the guest: `mdlmap-agent map --count 2 --hold 600` in the background,
#      SIGKILLed once both buffers are mapped; the guest itself stays up
#   2. the same, but QEMU gets SIGKILL
# usage: mdl_kill.sh HOSTD AGENT   (mdlmapctl: next to hostd, or $MDLMAPCTL)
. "$(dirname "$0")/lib.sh"

CTL=${MDLMAPCTL:-$(dirname "$HOSTD")/cli/mdlmapctl}
[ -x "$CTL" ] || { echo "mdlmapctl not found (set MDLMAPCTL)" >&2; exit 2; }
API=$T/api.sock
ctl() { "$CTL" --api "$API" "$@"; }
stat_of() { ctl stats | awk -v k="$1" 'index($0, k) == 1 { print $NF; exit }'; }
mappings_now() { ctl list | awk '$1 ~ /^0x/ { n++ } END { print n + 0 }'; }

# wait_mappings N SECS
wait_mappings() {
  local i=0
  while [ $i -lt $(($2 * 5)) ]; do
    [ "$(mappings_now)" = "$1" ] && return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" --api "$API" || { fail "hostd ready"; finish; }
pass "hostd ready with the host API"

# ---- 1. the guest program dies ----
leaks0=$(stat_of "leaks reported:")
guest_bg prog --socket "$T/vm1.sock" -- sh -c '
  mdlmap-agent map --bytes 12288 --offset 7 --count 2 --hold 600 > /tmp/map.out 2>&1 &
  pid=$!
  i=0
  while [ "$(grep -c "^MAPPED" /tmp/map.out)" -lt 2 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  cat /tmp/map.out
  echo "HOLDING pid $pid"
  sleep 3
  kill -9 $pid
  wait $pid
  echo "KILLED status $?"
  sleep 5
  echo "GUEST STILL UP"'
g=$GUEST_BG_PID
if wait_for_line "$T/prog.log" '^HOLDING' 240; then
  n=$(mappings_now)
  check "program holds 2 mappings in hostd (got $n)" [ "$n" = 2 ]
  wait_for_line "$T/prog.log" '^KILLED' 60
  check "after SIGKILL of the program: no mapping left in hostd" wait_mappings 0 20
  check "no locked MDL left" [ "$(stat_of "locked MDLs:")" = 0 ]
  leaks=$(stat_of "leaks reported:")
  check "leak records: 2 mapped + 2 locked ($((leaks - leaks0)) new)" [ $((leaks - leaks0)) = 4 ]
  check "stats lists 0xCB-style (mapped) leak records" bash -c "'$CTL' --api '$API' stats | grep -q '0xCB(mapped).*pages=4'"
  check "stats lists 0x76-style (locked) leak records" bash -c "'$CTL' --api '$API' stats | grep -q '0x76(locked)'"
  check "hostd logged the leaks" log_has "$HOSTD_LOG" 'leak \(0xCB-style'
else
  fail "program mapped 2 buffers"
fi
wait "$g"
rc=$?
check "guest stayed up and exited 0 (got $rc)" [ "$rc" = 0 ]

# ---- 2. QEMU dies ----
leaks0=$(stat_of "leaks reported:")
guest_bg q --socket "$T/vm1.sock" -- mdlmap-agent map --bytes 1M --hold 600
g=$GUEST_BG_PID
if wait_for_line "$T/q.log" '^MAPPED' 240; then
  check "guest holds 1 mapping" [ "$(mappings_now)" = 1 ]
  qpid=$(cat "$T/q.qemu.pid")
  kill -KILL "$qpid"
  note "SIGKILLed QEMU pid $qpid"
  check "after SIGKILL of QEMU: no mapping left in hostd" wait_mappings 0 20
  check "no locked MDL left" [ "$(stat_of "locked MDLs:")" = 0 ]
  leaks=$(stat_of "leaks reported:")
  check "leak records: 1 mapped + 1 locked ($((leaks - leaks0)) new)" [ $((leaks - leaks0)) = 2 ]
else
  fail "guest mapped 1 MiB"
fi
wait "$g" 2>/dev/null
check "hostd survives" hostd_alive
check "hostd exits 0 on SIGTERM" stop_hostd
finish
