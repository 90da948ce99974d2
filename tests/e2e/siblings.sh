#!/bin/bash
# e2e: sibling routing between two guests served by one mdlmap-hostd.
#   routing on : guest B (cid 4) listens (STREAM port 5000, SEQPACKET port 5001);
#                guest A (cid 3) echoes 4 MiB STREAM and 256 KiB SEQPACKET
#                through B, verified; A to a port where B does not listen is refused
#   routing off: B listens again, A's connect to B is refused
#                (agent exit 3, "(refused)": ECONNRESET/ECONNREFUSED)
# usage: siblings.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"

B_CMD='mdlmap-agent listen --port 5000 --once & s=$!
       mdlmap-agent listen --port 5001 --type seqpacket --once & q=$!
       wait $s; a=$?; wait $q; b=$?
       echo "listeners: stream=$a seqpacket=$b"; [ $a = 0 ] && [ $b = 0 ]'

# ---- routing on ----
start_hostd --vm "name=a,cid=3,socket=$T/a.sock" --vm "name=b,cid=4,socket=$T/b.sock" \
  --sibling-routing on || { fail "hostd (2 VMs, routing on) ready"; finish; }
pass "hostd (2 VMs, routing on) ready"

guest_bg b1 --socket "$T/b.sock" -- sh -c "$B_CMD"
b_pid=$GUEST_BG_PID
if wait_for_line "$T/b1.log" '^LISTEN READY port=5000' 120 &&
   wait_for_line "$T/b1.log" '^LISTEN READY port=5001' 10; then
  pass "guest B listens on ports 5000 (stream) and 5001 (seqpacket)"
else
  fail "guest B listens on ports 5000 (stream) and 5001 (seqpacket)"
fi

guest a1 --socket "$T/a.sock" -- sh -c '
  mdlmap-agent echo --cid 4 --port 5000 --bytes 4M; x=$?
  mdlmap-agent echo --cid 4 --port 5001 --type seqpacket --bytes 256K --msg-size 16K; y=$?
  mdlmap-agent echo --cid 4 --port 5999 --bytes 1k --connect-timeout 5; z=$?
  echo "results: stream=$x seqpacket=$y noport=$z"
  [ $x = 0 ] && [ $y = 0 ] && [ $z = 3 ]'
rc=$?
check "A->B STREAM 4 MiB echoed by B and verified" log_has "$T/a1.log" '^ECHO OK: type=stream conns=1 bytes=4194304'
check "A->B SEQPACKET boundaries kept" log_has "$T/a1.log" '^ECHO OK: type=seqpacket conns=1 bytes=262144'
check "A->B port without listener refused (exit 3)" log_has "$T/a1.log" 'noport=3'
check "guest A exit status 0 (got $rc)" [ "$rc" = 0 ]
wait "$b_pid"
brc=$?
check "B saw A's cid 3 as the peer" log_has "$T/b1.log" '^listen: conn 0 from cid 3 '
check "guest B listeners ended cleanly (exit $brc)" [ "$brc" = 0 ]
check "hostd alive after sibling traffic" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]

# ---- routing off ----
start_hostd --vm "name=a,cid=3,socket=$T/a.sock" --vm "name=b,cid=4,socket=$T/b.sock" \
  --sibling-routing off || { fail "hostd (routing off) ready"; finish; }
pass "hostd (2 VMs, routing off) ready"
guest_bg b2 --socket "$T/b.sock" -- mdlmap-agent listen --port 5000
b_pid=$GUEST_BG_PID
check "guest B listens (routing off)" wait_for_line "$T/b2.log" '^LISTEN READY port=5000' 120
guest a2 --socket "$T/a.sock" -- sh -c '
  mdlmap-agent echo --cid 4 --port 5000 --bytes 64k --connect-timeout 5; x=$?
  mdlmap-agent echo --bytes 64k; y=$?
  echo "results: sibling=$x host=$y"; exit $x'
rc=$?
check "A->B refused with routing off (agent exit 3, got $rc)" [ "$rc" = 3 ]
check "refusal reported as refused/reset" log_has "$T/a2.log" 'connect to cid 4 port 5000: .*\(refused\)'
check "host echo still works for A with routing off" log_has "$T/a2.log" 'host=0'
check "B accepted nothing" bash -c "! tr -d '\r' < '$T/b2.log' | grep -q '^listen: conn'"
kill -TERM "$b_pid" 2>/dev/null
wait "$b_pid" 2>/dev/null
check "hostd alive" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
finish
