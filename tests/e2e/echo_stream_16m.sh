#!/bin/bash
# e2e: a TCG guest talks to mdlmap-hostd's echo service (CID 2, port 7):
#   - 16 MiB over STREAM, FNV-1a of sent and received data printed and equal,
#     every byte verified by the agent
#   - SEQPACKET: 1 MiB in messages of 1..64 KiB, each back as one message
#   - 8 concurrent STREAM connections of 1 MiB each all complete
# then hostd is still up and exits 0 on SIGTERM.
# usage: echo_stream_16m.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" || { fail "hostd starts and logs ready"; finish; }
pass "hostd starts and logs ready"

guest vm1 --socket "$T/vm1.sock" -- sh -c '
  mdlmap-agent echo --bytes 16M; a=$?
  mdlmap-agent echo --type seqpacket --bytes 1M --msg-size 64K; b=$?
  mdlmap-agent echo --conns 8 --bytes 1M; c=$?
  echo "results: stream=$a seqpacket=$b conns8=$c"
  [ $a = 0 ] && [ $b = 0 ] && [ $c = 0 ]'
rc=$?
note "guest exit status $rc"
L=$T/vm1.log
check "STREAM 16 MiB echoed and verified" log_has "$L" '^ECHO OK: type=stream conns=1 bytes=16777216'
if log_has "$L" '^echo: conn 0: sent 16777216 B fnv1a=(0x[0-9a-f]+), received 16777216 B fnv1a='; then
  line=$(tr -d '\r' < "$L" | grep -m1 '^echo: conn 0: sent 16777216 B')
  tx=$(sed -n 's/.*sent 16777216 B fnv1a=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
  rx=$(sed -n 's/.*received 16777216 B fnv1a=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
  note "fnv1a sent $tx received $rx"
  check "STREAM 16 MiB checksums of both directions equal" [ -n "$tx" ] && [ "$tx" = "$rx" ]
else
  fail "STREAM 16 MiB checksums of both directions equal"
fi
check "SEQPACKET messages keep their boundaries" log_has "$L" '^ECHO OK: type=seqpacket conns=1 bytes=1048576'
check "8 concurrent STREAM connections complete" log_has "$L" '^ECHO OK: type=stream conns=8 bytes=1048576'
check "guest command exit status 0" [ "$rc" = 0 ]
check "hostd still running" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
finish
