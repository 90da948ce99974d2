#!/bin/bash
# bench/mdl_rpc_bench.sh - MDL map/unmap RPC round trips from a TCG guest,
# next to the transport floor, over several boots, plus the host-side mapping
# engine bench.
#
#   1. boots one guest (scripts/run-guest.sh) served by mdlmap-hostd BOOTS
#      times (a reboot each time; default 5, env MDLMAP_BENCH_BOOTS) and in
#      each boot runs `mdlmap-agent mapbench` (guest-agent/agent_mdl_bench.c):
#      for 4 KiB, 64 KiB and 1 MiB buffers, lock once, then K x
#      (MmMapLockedPagesSpecifyCache + MmUnmapLockedPages), each an RPC to
#      hostd on CID 2 port 1100; and, on the same vsock, K pairs of echo
#      exchanges (CID 2 port 7) of the sizes of the Map and Unmap frames: the
#      floor the RPCs cannot beat. The two alternate in blocks of K/10, so each
#      boot's ratio compares them side by side.
#   2. prints each boot's rpc/echo ratio, then per buffer size the median,
#      min and max of the ratio over the boots (runs = boots), and the guest's,
#      the vCPU thread's and hostd's CPU while mapbench ran.
#   3. runs the host-side mapping engine bench (bench/mdl_bench: contiguous vs
#      scattered 64 MiB vs bare mmap), if it was built next to HOSTD.
# Prints figures; not a test. Exits non-zero only when a run itself fails.
#
# usage: bench/mdl_rpc_bench.sh HOSTD AGENT [ITERATIONS]     (default K = 1000)
#   e.g. bench/mdl_rpc_bench.sh build/hostd/mdlmap-hostd build/guest-agent/mdlmap-agent
#   env: MDLMAP_ACCEL=kvm where available; MDLMAP_BENCH_BOOTS (default 5);
#   MDLMAP_MDL_BENCH = host bench binary (default: bench/mdl_bench in HOSTD's
#   build dir; "none" skips it); MDLMAP_MDL_BENCH_ITERS (default 3).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
ITERS=${3:-1000}
BOOTS=${MDLMAP_BENCH_BOOTS:-5}
if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ] || ! [[ "$ITERS" =~ ^[0-9]+$ ]] || ! [[ "$BOOTS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent [ITERATIONS]   (env MDLMAP_BENCH_BOOTS=N)" >&2
  exit 2
fi
HOST_BENCH=${MDLMAP_MDL_BENCH:-$(dirname "$(dirname "$HOSTD")")/bench/mdl_bench}

. "$HERE/lib.sh"
bench_dir rpcbench
bench_hostd rpcbench --api "$T/api.sock"

start=$(date +%s.%N)
bench_guest rpcbench --boots "$BOOTS" --timeout $((120 + 300 * BOOTS)) -- sh -c "$BENCH_MARK"'
  bench_mark b:boot$MDLMAP_BOOT
  mdlmap-agent mapbench --iterations '"$ITERS"'
  rc=$?
  bench_mark e:boot$MDLMAP_BOOT
  exit $rc'
rc=$?
end=$(date +%s.%N)
# "BOOT bytes=... map_us=..." per MAPBENCH line, numbered by the boot it came from
tr -d '\r' < "$T/guest.log" | awk '
  /^MDLMAP-INIT: boot [0-9]+\// { split($3, a, "/"); boot = a[1] }
  /^MAPBENCH / { sub(/^MAPBENCH /, ""); print boot, $0 }' > "$T/results"
frames=$(tr -d '\r' < "$T/guest.log" | grep -E '^frames \(bytes' | head -1)
got=$(cut -d' ' -f1 "$T/results" | sort -u | wc -l)

echo "== MDL RPC round trips from a guest (accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU, $(nproc) host cores, K=$ITERS, $got of $BOOTS boots)"
echo "   whole run $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s (boots included)"
# the per-boot table; then $T/ratios: "bytes ratio rpc_us floor_us" per boot
printf '%-4s %-8s %5s %4s %8s %8s %12s %12s %8s %9s %9s\n' boot buffer pages vmas map_us unmap_us \
  'map+unmap/s' 'echo-pair/s' 'rpc/echo' 'rpc_us' 'floor_us'
awk -v ratios="$T/ratios" '{
  delete v
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  b = v["bytes"] + 0
  h = b >= 1048576 && b % 1048576 == 0 ? (b / 1048576) " MiB" : (b >= 1024 && b % 1024 == 0 ? (b / 1024) " KiB" : b " B")
  pair_us = v["map_us"] + v["unmap_us"]; floor_us = 1e6 / v["echo_pairs_per_s"]
  printf "%-4s %-8s %5s %4s %8.1f %8.1f %12.0f %12.0f %7.2fx %9.1f %9.1f\n", $1, h, v["pages"], v["vmas"], v["map_us"],
    v["unmap_us"], v["pairs_per_s"], v["echo_pairs_per_s"], v["echo_pairs_per_s"] / v["pairs_per_s"], pair_us, floor_us
  printf "%s %s %.4f %.1f %.1f\n", b, h, v["echo_pairs_per_s"] / v["pairs_per_s"], pair_us, floor_us > ratios
}' "$T/results"
echo
echo "rpc/echo (map+unmap pair time / echo pair time) over the boots, per buffer:"
for b in $(cut -d' ' -f1 "$T/ratios" 2>/dev/null | awk '!seen[$1]++'); do
  h=$(awk -v b="$b" '$1 == b { print $2, $3; exit }' "$T/ratios")
  printf '  %-8s ratio  %s\n' "$h" "$(awk -v b="$b" '$1 == b { print $4 }' "$T/ratios" | bench_stats '%.2fx')"
  printf '  %-8s rpc_us %s   floor_us %s\n' "" \
    "$(awk -v b="$b" '$1 == b { print $5 }' "$T/ratios" | bench_stats '%.1f' | sed 's/^runs [0-9]*  //')" \
    "$(awk -v b="$b" '$1 == b { print $6 }' "$T/ratios" | bench_stats '%.1f' | sed 's/^runs [0-9]*  //')"
done
for k in $(seq "$BOOTS"); do
  echo "   boot $k: $(bench_cpu_line "^boot$k\$")"
done
echo "   all boots: $(bench_cpu_line '^boot')"
[ -n "$frames" ] && echo "   $frames"
reqs=$(grep -o 'rpc: conn [0-9]* closed after [0-9]* requests' "$T/hostd.log" | sed 's/.*after \([0-9]*\) requests/\1/' | paste -sd+ -)
[ -n "$reqs" ] && echo "   hostd answered $reqs RPC requests on the guest's connection(s)"
echo "   map+unmap/s: pairs of Map + Unmap RPCs per second (lock once); echo-pair/s: pairs of echo"
echo "   exchanges of the same frame sizes on one vsock connection; rpc_us/floor_us: time per pair."
echo "   CPU: while mapbench ran (RPCs and echoes together); the vCPU bounds it when it is near 100%."
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
