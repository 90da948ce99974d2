#!/bin/bash
# bench/mdl_rpc_bench.sh - MDL map/unmap RPC round trips from a TCG guest,
# next to the transport floor, plus the host-side mapping engine bench.
#
#   1. boots one guest (scripts/run-guest.sh) served by mdlmap-hostd and runs
#      `mdlmap-agent mapbench` (guest-agent/agent_mdl_bench.c): for 4 KiB,
#      64 KiB and 1 MiB buffers, lock once, then K x (MmMapLockedPagesSpecifyCache
#      + MmUnmapLockedPages), each an RPC to hostd on CID 2 port 1100; and, on
#      the same vsock, K pairs of echo exchanges (CID 2 port 7) of the sizes of
#      the Map and Unmap frames: the floor the RPCs cannot beat.
#   2. runs the host-side mapping engine bench (bench/mdl_bench: contiguous vs
#      scattered 64 MiB vs bare mmap), if it was built next to HOSTD.
# Prints figures; not a test. Exits non-zero only when a run itself fails.
#
# usage: bench/mdl_rpc_bench.sh HOSTD AGENT [ITERATIONS]     (default K = 1000)
#   e.g. bench/mdl_rpc_bench.sh build/hostd/mdlmap-hostd build/guest-agent/mdlmap-agent
#   env: MDLMAP_ACCEL=kvm where available; MDLMAP_MDL_BENCH = host bench binary
#   (default: bench/mdl_bench in HOSTD's build dir; "none" skips it);
#   MDLMAP_MDL_BENCH_ITERS (default 3).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
ITERS=${3:-1000}
if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ] || ! [[ "$ITERS" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent [ITERATIONS]" >&2
  exit 2
fi
HOST_BENCH=${MDLMAP_MDL_BENCH:-$(dirname "$(dirname "$HOSTD")")/bench/mdl_bench}

. "$HERE/lib.sh"
bench_dir rpcbench
bench_hostd rpcbench --api "$T/api.sock"

start=$(date +%s.%N)
MDLMAP_AGENT=$AGENT "$TOP/scripts/run-guest.sh" --name rpcbench --timeout 900 --log "$T/guest.log" \
  --socket "$T/vsock.sock" -- mdlmap-agent mapbench --iterations "$ITERS"
rc=$?
end=$(date +%s.%N)
tr -d '\r' < "$T/guest.log" | grep -E '^MAPBENCH ' > "$T/results"
frames=$(tr -d '\r' < "$T/guest.log" | grep -E '^frames \(bytes' | head -1)

echo "== MDL RPC round trips from a guest (accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU, $(nproc) host cores, K=$ITERS)"
echo "   whole run $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s (boot included)"
printf '%-8s %5s %4s %8s %8s %12s %12s %8s %9s %9s\n' buffer pages vmas map_us unmap_us 'map+unmap/s' \
  'echo-pair/s' 'rpc/echo' 'rpc_us' 'floor_us'
awk '{
  delete v
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  b = v["bytes"] + 0
  h = b >= 1048576 && b % 1048576 == 0 ? (b / 1048576) " MiB" : (b >= 1024 && b % 1024 == 0 ? (b / 1024) " KiB" : b " B")
  pair_us = v["map_us"] + v["unmap_us"]; floor_us = 1e6 / v["echo_pairs_per_s"]
  printf "%-8s %5s %4s %8.1f %8.1f %12.0f %12.0f %7.2fx %9.1f %9.1f\n", h, v["pages"], v["vmas"], v["map_us"],
    v["unmap_us"], v["pairs_per_s"], v["echo_pairs_per_s"], v["echo_pairs_per_s"] / v["pairs_per_s"], pair_us, floor_us
}' "$T/results"
[ -n "$frames" ] && echo "   $frames"
reqs=$(grep -o 'rpc: conn [0-9]* closed after [0-9]* requests' "$T/hostd.log" | sed 's/.*after \([0-9]*\) requests/\1/' | paste -sd+ -)
[ -n "$reqs" ] && echo "   hostd answered $reqs RPC requests on the guest's connection(s)"
echo "   map+unmap/s: pairs of Map + Unmap RPCs per second (lock once); echo-pair/s: pairs of echo"
echo "   exchanges of the same frame sizes on one vsock connection; rpc_us/floor_us: time per pair."
if [ "$rc" != 0 ] || [ ! -s "$T/results" ]; then
  echo "bench: guest exit status $rc" >&2
  tail -n 30 "$T/guest.log" >&2
  tail -n 20 "$T/hostd.log" >&2
fi

hrc=0
if [ "$HOST_BENCH" != none ]; then
  echo
  if [ -x "$HOST_BENCH" ]; then
    echo "== host-side mapping engine ($HOST_BENCH ${MDLMAP_MDL_BENCH_ITERS:-3})"
    "$HOST_BENCH" "${MDLMAP_MDL_BENCH_ITERS:-3}"
    hrc=$?
  else
    echo "== host-side mapping engine: $HOST_BENCH not built (skipped)"
  fi
fi
[ "$rc" = 0 ] && [ -s "$T/results" ] && [ "$hrc" = 0 ]
