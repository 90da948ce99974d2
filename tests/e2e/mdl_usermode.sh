#!/bin/bash
# e2e: UserMode (R2) in a TCG guest. `mdlmapctl consume` registers as the host
# consumer process; the guest program maps its buffer UserMode into it; the
# consumer sees the guest's pattern at its own address and writes a reply
# that the guest sees; the guest unmaps, the unmap reaches the consumer.
# Also: a UserMode map naming no registered consumer fails in the guest; a
# consumer killed while the guest holds a mapping in it: hostd releases the
# mapping's pages (stats), drops it from the list, records an orphan event,
# and the guest's later MmUnmapLockedPages of it succeeds quietly.
# usage: mdl_usermode.sh HOSTD AGENT   (mdlmapctl: next to hostd, or $MDLMAPCTL)
. "$(dirname "$0")/lib.sh"

CTL=${MDLMAPCTL:-$(dirname "$HOSTD")/cli/mdlmapctl}
[ -x "$CTL" ] || { echo "mdlmapctl not found (set MDLMAPCTL)" >&2; exit 2; }
API=$T/api.sock

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" --api "$API" --log-level debug || { fail "hostd ready"; finish; }
pass "hostd ready with the host API"

"$CTL" --api "$API" consume --write "REPLY-FROM-CONSUMER" --exit-after 1 viewer >"$T/consumer.log" 2>&1 &
CPID=$!
BG_PIDS+=("$CPID")
check "consumer 'viewer' registered" wait_for_line "$T/consumer.log" '^CONSUMER REGISTERED name=viewer' 10
"$CTL" --api "$API" consume victim >"$T/victim.log" 2>&1 &
VPID=$!
BG_PIDS+=("$VPID")
check "consumer 'victim' registered" wait_for_line "$T/victim.log" '^CONSUMER REGISTERED name=victim' 10
# once the guest's mapping is in 'victim': snapshot stats, SIGKILL it, wait
# for hostd to release the pages, snapshot stats and list again
(
  wait_for_line "$T/victim.log" '^CONSUMER MAPPED' 240 || exit 1
  "$CTL" --api "$API" stats >"$T/stats-before.txt" 2>&1
  kill -KILL "$VPID"
  for _ in $(seq 50); do
    "$CTL" --api "$API" stats >"$T/stats-after.txt" 2>&1
    grep -qE '^mapped pages: +0$' "$T/stats-after.txt" && break
    sleep 0.2
  done
  "$CTL" --api "$API" list >"$T/list-after.txt" 2>&1
  echo done >"$T/watcher.done"
) &
BG_PIDS+=("$!")

guest u1 --socket "$T/vm1.sock" -- sh -c '
  mdlmap-agent map --mode user --consumer viewer --bytes 8192 --offset 100 \
    --pattern "pattern-for-the-consumer " --wait-for REPLY-FROM-CONSUMER --timeout 60 || exit 1
  mdlmap-agent map --mode user --consumer nobody-here --bytes 100
  echo "ABSENT-CONSUMER status $?"
  mdlmap-agent map --mode user --consumer victim --bytes 8192 --hold 20
  echo "ORPHAN status $?"'
rc=$?
check "guest command exits 0 (got $rc)" [ "$rc" = 0 ]
check "guest mapped UserMode" log_has "$T/u1.log" '^MAPPED handle=0x[0-9a-f]+ address=0x[0-9a-f]+ bytes=8192 offset=100'
check "consumer mapped 8192 bytes from vm1" log_has "$T/consumer.log" '^CONSUMER MAPPED .* bytes=8192 vm=vm1 cid=3'
check "consumer saw the guest's pattern" log_has "$T/consumer.log" '^CONSUMER SAW: "pattern-for-the-consumer pattern'
check "guest saw the consumer's write" log_has "$T/u1.log" '^GUEST SAW HOST WRITE: "REPLY-FROM-CONSUMER"'
check "guest unmapped" log_has "$T/u1.log" '^UNMAPPED'
check "the unmap reached the consumer" wait_for_line "$T/consumer.log" '^CONSUMER UNMAPPED' 10
wait "$CPID"
check "consumer exited 0 after one unmap" [ $? = 0 ]
check "map into an absent consumer fails in the guest" log_has "$T/u1.log" 'MAP FAILED status=0xC0000225'
check "... and the guest program reports it (exit 1)" log_has "$T/u1.log" '^ABSENT-CONSUMER status 1'
check "the watcher saw the victim's mapping and killed it" [ -f "$T/watcher.done" ]
check "stats counted the victim's mapping (2 pages)" log_has "$T/stats-before.txt" '^mapped pages: +2$'
check "consumer killed: hostd released the pages" log_has "$T/stats-after.txt" '^mapped pages: +0$'
check "... and the mapping" log_has "$T/stats-after.txt" '^mappings: +0$'
check "stats show the orphan event" log_has "$T/stats-after.txt" 'event orphaned\(consumer died\) vm=vm1 .* pages=2 reason="consumer gone: victim"'
check "list no longer shows it" log_has "$T/list-after.txt" '^0 mappings$'
check "the guest's unmap of the orphaned mapping succeeded (exit 0)" log_has "$T/u1.log" '^ORPHAN status 0'
check "hostd logged the orphan's unmap" log_has "$HOSTD_LOG" 'unmapped orphaned map'
check "hostd holds nothing" bash -c "'$CTL' --api '$API' stats | grep -q '^mappings: *0$'"
check "hostd exits 0 on SIGTERM" stop_hostd
finish
