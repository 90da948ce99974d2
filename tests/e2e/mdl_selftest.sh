#!/bin/bash
# e2e: the R1-R13 conformance suite (`mdlmap-agent selftest`) in a TCG guest
# against a real hostd, run directly as root over AF_VSOCK and, in the same
# boot, by an unprivileged user through the agent daemon. Each run must end with
# "N passed, 0 failed", cover every rule R1..R13, and leave hostd with no
# mapping and no locked MDL.
# usage: mdl_selftest.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"

CTL=${MDLMAPCTL:-$(dirname "$HOSTD")/cli/mdlmapctl}
[ -x "$CTL" ] || { echo "mdlmapctl not found (set MDLMAPCTL)" >&2; exit 2; }
API=$T/api.sock

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" --api "$API" || { fail "hostd ready"; finish; }
pass "hostd ready"

guest selftest --socket "$T/vm1.sock" -- sh -c '
  echo "== selftest as root (direct vsock)"
  mdlmap-agent selftest; r1=$?
  echo "ROOT-STATUS $r1"
  echo "== selftest as uid 1000 through the agent daemon"
  mdlmap-agent daemon --socket /tmp/agent.sock > /tmp/daemon.log 2>&1 &
  i=0; while [ ! -S /tmp/agent.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  echo "mdluser:x:1000:1000:mdlmap test user:/tmp:/bin/sh" >> /etc/passwd
  echo "mdluser:x:1000:" >> /etc/group
  su -s /bin/sh mdluser -c "id; MDLMAP_AGENT_SOCKET=/tmp/agent.sock mdlmap-agent selftest" 2>&1; r2=$?
  echo "USER-STATUS $r2"
  echo "== agent daemon log"; cat /tmp/daemon.log
  [ $r1 = 0 ] && [ $r2 = 0 ]'
rc=$?
LOG=$T/selftest.log
# Name the conformance tests that failed (the log tail may not reach them).
tr -d '\r' < "$LOG" | grep -E '^not ok|^(ROOT|USER)-STATUS|mdlmap-agent daemon:' | sed 's/^/# guest: /'
check "guest selftest runs exited 0 (runner status $rc)" [ "$rc" = 0 ]
check "root run: exit 0" log_has "$LOG" '^ROOT-STATUS 0'
check "root run: closing line 'N passed, 0 failed'" log_has "$LOG" '^[0-9]+ passed, 0 failed'
for r in 1 2 3 4 5 6 7 8 9 10 11 12 13; do
  check "a conformance test for R$r passed" log_has "$LOG" "^ok - R$r[^0-9]"
done
check "no 'not ok' line" bash -c "! tr -d '\r' < '$LOG' | grep -q '^not ok'"
check "unprivileged run through the daemon: exit 0" log_has "$LOG" '^USER-STATUS 0'
check "the unprivileged run really ran as uid 1000" log_has "$LOG" '^uid=1000'
# the daemon's frames reach the program as runs (the root run reads its own)
n=$(tr -d '\r' < "$LOG" | grep -cE '^ok - R1 one distinct frame per page; through the agent daemon they come as frame runs')
check "the frame-source test passed in both runs ($n)" [ "$n" = 2 ]
n=$(tr -d '\r' < "$LOG" | grep -cE '^[0-9]+ passed, 0 failed')
check "both runs printed 'N passed, 0 failed' ($n)" [ "$n" -ge 2 ]
list=$("$CTL" --api "$API" list)
check "hostd holds no mapping afterwards" bash -c "printf '%s' '$list' | grep -q '^0 mappings'"
check "hostd holds no locked MDL afterwards" bash -c "'$CTL' --api '$API' stats | grep -qE 'locked MDLs: +0'"
check "hostd still running" hostd_alive
stop_hostd
check "hostd exits 0 on SIGTERM" [ $? = 0 ]
finish
