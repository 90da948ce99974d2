#!/bin/bash
# bench/grant_copy.sh - 64 MiB moved from guest A to guest B (two TCG guests,
# one mdlmap-hostd --sharing on), in one run:
#   grant copy: A grants a 64 MiB buffer read-only to B; B copies it into its
#     own locked buffer with one GrantCopy op, RUNS times (rate as B sees it:
#     its request to the reply);
#   sibling vsock stream: A streams 64 MiB to B's echo listener over sibling
#     routing, RUNS times (the agent's echo: B echoes back as it reads, so
#     both directions run at once; the rate is the bytes A sent over the time);
# then the ratio of the medians, and the same grant copy inside hostd next to
# a plain memcpy of that size (bench/grant_bench, harness guests, no VM).
# Figures only; exits non-zero when a run itself fails.
#
# usage: bench/grant_copy.sh HOSTD AGENT [RUNS (5)]   (MDLMAP_GRANT_BENCH: path of grant_bench,
#        default next to hostd's build: BUILD/bench/grant_bench)   MDLMAP_ACCEL=kvm where available
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
RUNS=${3:-5}
GB=${MDLMAP_GRANT_BENCH:-$(dirname "$(dirname "$HOSTD")")/bench/grant_bench}
if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ] || ! [ "$RUNS" -gt 0 ] 2>/dev/null; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent [RUNS]" >&2
  exit 2
fi
. "$HERE/lib.sh"
bench_dir grantcopy
"$HOSTD" --vm "name=a,cid=3,socket=$T/a.sock" --vm "name=b,cid=4,socket=$T/b.sock" --sharing on \
  >"$T/hostd.log" 2>&1 &
HPID=$!
bench_track "$HPID"
for _ in $(seq 50); do grep -q ready "$T/hostd.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$T/hostd.log" || { cat "$T/hostd.log" >&2; echo "bench: hostd not ready" >&2; exit 1; }
guest() {  # NAME SOCKET CMD: a TCG guest in the background
  MDLMAP_AGENT=$AGENT "$TOP/scripts/run-guest.sh" --name "$1" --timeout 900 --log "$T/$1.log" \
    --qemu-pid-file "$T/$1.qemu.pid" --socket "$2" -- sh -c "$3" &
  GPID=$!
  bench_track "$GPID"
}
wait_line() {  # FILE REGEX SECS
  for _ in $(seq $(($3 * 5))); do tr -d '\r' 2>/dev/null < "$1" | grep -qE "$2" && return 0; sleep 0.2; done
  return 1
}

# A grants and then streams; B copies, then listens. One boot each.
guest a "$T/a.sock" "mdlmap-agent grant --peer 4 --bytes 64M --hold 100000 &
  until mdlmap-agent echo --cid 4 --port 5101 --bytes 1 --connect-timeout 2 >/dev/null 2>&1; do sleep 0.5; done
  for i in \$(seq $RUNS); do mdlmap-agent echo --cid 4 --port 5000 --bytes 64M --timeout 300; done
  echo A-DONE"
A=$GPID
wait_line "$T/a.log" '^GRANTED ref=' 300 || { echo "bench: A did not grant" >&2; exit 1; }
REF=$(tr -d '\r' < "$T/a.log" | sed -nE 's/^GRANTED ref=(0x[0-9a-f]+).*/\1/p' | head -1)
guest b "$T/b.sock" "mdlmap-agent copy --granter 3 --ref $REF --bytes 64M --loop $RUNS
  mdlmap-agent listen --port 5000 --count $RUNS & l=\$!
  mdlmap-agent listen --port 5101 --once
  wait \$l; echo B-DONE"
B=$GPID
wait "$A" "$B"
tr -d '\r' < "$T/a.log" > "$T/a.txt"
tr -d '\r' < "$T/b.log" > "$T/b.txt"
stats() {  # numbers on stdin -> "median min max runs"
  sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "- - - 0"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR], NR }'
}
# both in MB/s (10^6 bytes): the copy prints MiB/s
read -r gm gmin gmax gn < <(sed -nE 's/^COPY [0-9]+ status=STATUS_SUCCESS copied=67108864 .* MiB\/s=([0-9.]+)$/\1/p' \
  "$T/b.txt" | awk '{ print $1 * 1.048576 }' | stats)
read -r sm smin smax sn < <(sed -nE 's/^ECHO OK: .*\(([0-9.]+) MB\/s\)$/\1/p' "$T/a.txt" | stats)
echo "mdlmap bench: 64 MiB guest A -> guest B, accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU each, $(nproc) host cores"
printf '%-40s median %9s  min %9s  max %9s MB/s  (runs %s)\n' "grant copy (one GrantCopy op)" "$gm" "$gmin" "$gmax" "$gn"
printf '%-40s median %9s  min %9s  max %9s MB/s  (runs %s)\n' "sibling vsock stream (echoed back)" "$sm" "$smin" "$smax" "$sn"
awk -v g="$gm" -v s="$sm" 'BEGIN { if (s > 0 && g > 0) printf "grant copy / sibling stream (medians): %.1fx\n", g / s }'
if [ "$gn" = 0 ] || [ "$sn" = 0 ]; then
  echo "bench: a guest run failed" >&2
  tail -n 20 "$T/a.txt" "$T/b.txt" >&2
  exit 1
fi
if [ -x "$GB" ]; then
  echo "inside hostd (harness guests, no VM):"
  "$GB" "$HOSTD" 64 9 | grep -v '^ok '
fi
