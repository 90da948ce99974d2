#!/bin/bash
# e2e: no flow-control stalls. One TCG guest streams 256 MiB through
# mdlmap-hostd's echo service (CID 2, port 7) three times in one boot, with
# `mdlmap-agent echo --progress 1`, which reports the longest time in which no
# byte moved in either direction. Every stream must complete, verified, and no
# stream may have waited STALL_MAX_S or longer without progress.
#
# Why 3 s: healthy streams on 2 busy host cores (TCG, 26-37 MB/s) waited at
# most 0.03 s; a lost credit update, kick or interrupt leaves a stream waiting
# for an unrelated event (the agent's 200 ms poll, hostd's timers or the next
# packet the other way), and a host under load can deschedule the vCPU for
# some hundreds of ms: 3 s separates the two with margin on both sides.
# usage: echo_stall.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"

RUNS=${STALL_RUNS:-3}
BYTES=${STALL_BYTES:-256M}
STALL_MAX_S=${STALL_MAX_S:-3}

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" || { fail "hostd starts and logs ready"; finish; }
pass "hostd starts and logs ready"

guest vm1 --socket "$T/vm1.sock" -- sh -c "
  rc=0
  for i in \$(seq $RUNS); do
    mdlmap-agent echo --bytes $BYTES --progress 1 --timeout 60 || rc=\$?
  done
  echo \"results: rc=\$rc\"
  exit \$rc"
rc=$?
note "guest exit status $rc"
L=$T/vm1.log
ok=$(tr -d '\r' < "$L" | grep -c '^ECHO OK: type=stream conns=1 bytes=')
check "$RUNS streams of $BYTES echoed and verified (got $ok)" [ "$ok" = "$RUNS" ]
gaps=$(tr -d '\r' < "$L" | sed -n 's/^echo: conn 0: longest gap without progress \([0-9.]*\) s.*/\1/p')
rates=$(tr -d '\r' < "$L" | sed -n 's/^ECHO OK: .*(\([0-9.]*\) MB\/s)$/\1/p')
note "longest gaps (s): $(echo $gaps)"
note "throughput (MB/s): $(echo $rates)"
check "$RUNS gap reports" [ "$(echo "$gaps" | grep -c .)" = "$RUNS" ]
worst=$(echo "$gaps" | sort -g | tail -1)
check "no stream waited ${STALL_MAX_S} s or longer without progress (worst ${worst:-?} s)" \
  awk -v w="${worst:-999}" -v m="$STALL_MAX_S" 'BEGIN { exit !(w < m) }'
if [ -n "$worst" ] && awk -v w="$worst" -v m="$STALL_MAX_S" 'BEGIN { exit !(w >= m) }'; then
  tr -d '\r' < "$L" | grep -E '^(PROGRESS|echo:)' | sed 's/^/#   /'
fi
check "guest command exit status 0" [ "$rc" = 0 ]
check "hostd still running" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
finish
