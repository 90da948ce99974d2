#!/bin/bash
# e2e: cross-VM grants between TCG guests on one mdlmap-hostd
# (--sharing on --sharing-pair a,b; guests a cid 3, b cid 4, c cid 5).
#   A locks 64 MiB and grants it read-only to B (and 1 MiB more, kept);
#   B copies the 64 MiB into its own locked buffer in one batch: the
#   checksums match; B's write through the read-only grant is refused;
#   C (third VM) cannot use A's grant; B copies in a loop and, after 3
#   copies, pokes A (sibling vsock: the host has no vsock) which revokes:
#   B's next copy fails with STATUS_MDLMAP_GRANT_REVOKED and B printed the
#   notice; B loops on the 1 MiB grant and A's QEMU is SIGKILLed: B's copies
#   fail cleanly and hostd holds nothing of A (no locked MDL once B is done,
#   A's MDLs in the leak records).
# usage: grants.sh HOSTD AGENT   (mdlmapctl: next to hostd, or $MDLMAPCTL)
. "$(dirname "$0")/lib.sh"

CTL=${MDLMAPCTL:-$(dirname "$HOSTD")/cli/mdlmapctl}
[ -x "$CTL" ] || { echo "mdlmapctl not found (set MDLMAPCTL)" >&2; exit 2; }
API=$T/api.sock
ctl() { "$CTL" --api "$API" "$@"; }
stat_of() { ctl stats | awk -v k="$1" 'index($0, k) == 1 { print $NF; exit }'; }
field() { tr -d '\r' < "$1" | grep -E -- "$2" | head -1 | sed -nE "s/.*$3=([^ ]+).*/\\1/p"; }

start_hostd --vm "name=a,cid=3,socket=$T/a.sock" --vm "name=b,cid=4,socket=$T/b.sock" \
  --vm "name=c,cid=5,socket=$T/c.sock" --sharing on --sharing-pair a,b --api "$API" ||
  { fail "hostd (3 VMs, sharing a<->b) ready"; finish; }
pass "hostd (3 VMs, --sharing on --sharing-pair a,b) ready"

guest_bg a --socket "$T/a.sock" -- sh -c '
  mdlmap-agent grant --peer 4 --bytes 64M --seed 7 --revoke-port 5100 --hold 100000 &
  mdlmap-agent grant --peer 4 --bytes 1M --seed 8 --hold 100000 &
  wait'
a_pid=$GUEST_BG_PID
wait_for_line "$T/a.log" '^GRANTED ref=0x[0-9a-f]+ peer=4 bytes=67108864' 240 &&
  wait_for_line "$T/a.log" '^GRANTED ref=0x[0-9a-f]+ peer=4 bytes=1048576' 30 &&
  wait_for_line "$T/a.log" '^REVOKE PORT READY port=5100' 30
check "A locked and granted 64 MiB and 1 MiB read-only to cid 4" [ $? = 0 ]
REF1=$(field "$T/a.log" '^GRANTED .*bytes=67108864' ref)
FNV_A=$(field "$T/a.log" '^GRANTED .*bytes=67108864' fnv)
REF2=$(field "$T/a.log" '^GRANTED .*bytes=1048576' ref)
note "grants: $REF1 (64 MiB, fnv $FNV_A), $REF2 (1 MiB)"
grants_of_a() { [ "$(ctl grants a | grep -cE "^$1 +a +3 +b +4 +read ")" = 1 ]; }
check "mdlmapctl grants a: both grants, a -> b read-only" bash -c "$(declare -f ctl grants_of_a); CTL='$CTL' API='$API'; grants_of_a $REF1 && grants_of_a $REF2"

guest_bg c --socket "$T/c.sock" -- mdlmap-agent copy --granter 3 --ref "$REF1" --bytes 4096
c_pid=$GUEST_BG_PID
guest_bg b --socket "$T/b.sock" -- sh -c "
  mdlmap-agent copy --granter 3 --ref $REF1 --bytes 64M; echo \"batch=\$?\"
  mdlmap-agent copy --granter 3 --ref $REF1 --bytes 4096 --write; echo \"write=\$?\"
  mdlmap-agent copy --granter 3 --ref $REF1 --bytes 1M --loop 1000 --poke-port 5100 --poke-after 3
  echo \"revoke-loop=\$?\"
  echo 'B LOOPS ON THE SECOND GRANT'
  mdlmap-agent copy --granter 3 --ref $REF2 --bytes 1M --loop 3000 --interval-ms 100
  echo \"kill-loop=\$?\""
b_pid=$GUEST_BG_PID

wait "$c_pid"
check "C cannot use A's grant (STATUS_INVALID_HANDLE)" log_has "$T/c.log" '^COPY 0 status=STATUS_INVALID_HANDLE copied=0'

wait_for_line "$T/b.log" '^B LOOPS ON THE SECOND GRANT' 240
FNV_B=$(field "$T/b.log" '^COPY 0 status=STATUS_SUCCESS copied=67108864' fnv)
check "B copied the 64 MiB in one batch" log_has "$T/b.log" '^COPY 0 status=STATUS_SUCCESS copied=67108864'
check "checksums match (A $FNV_A, B $FNV_B)" [ -n "$FNV_A" ] && [ "$FNV_A" = "$FNV_B" ]
check "B's write through the read-only grant is refused" log_has "$T/b.log" '^COPY 0 status=STATUS_ACCESS_DENIED copied=0'
check "B copied in a loop before the revocation" log_has "$T/b.log" '^COPY 2 status=STATUS_SUCCESS copied=1048576'
check "A revoked when poked" log_has "$T/a.log" "^REVOKED ref=$REF1 status=STATUS_SUCCESS"
check "B's next copy failed with the revocation status" \
  log_has "$T/b.log" '^COPY 3 status=STATUS_MDLMAP_GRANT_REVOKED copied=0'
check "B received the notice" log_has "$T/b.log" "^NOTICE granter=3 ref=$REF1 reason=revoked"

# A's QEMU dies with the 1 MiB grant outstanding while B copies from it
wait_for_line "$T/b.log" '^COPY 2 status=STATUS_SUCCESS copied=1048576 .*' 60
kill -KILL "$(cat "$T/a.qemu.pid")" 2>/dev/null
check "A's QEMU SIGKILLed" [ $? = 0 ]
wait "$b_pid"
check "B's copy after A died failed cleanly (revoked)" \
  log_has "$T/b.log" '^COPY [0-9]+ status=STATUS_MDLMAP_GRANT_REVOKED copied=0'
check "B was told (notice)" log_has "$T/b.log" "^NOTICE granter=3 ref=$REF2 "
check "B's loop ended by the failure" log_has "$T/b.log" '^kill-loop=1'
wait "$a_pid" 2>/dev/null
n=$(stat_of "locked MDLs:")
check "hostd holds no locked MDL of A (locked MDLs: $n)" [ "$n" = 0 ]
a_leaks() { ctl stats | grep -q ' vm=a conn='; }
check "A's MDLs went as leaks" a_leaks
check "hostd alive" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
finish
