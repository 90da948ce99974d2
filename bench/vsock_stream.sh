#!/bin/bash
# bench/vsock_stream.sh - distribution of vsock STREAM echo throughput over
# several runs in ONE guest boot (TCG by default): the guest runs
# `mdlmap-agent bench --bytes SIZE --runs RUNS` against mdlmap-hostd's echo
# service and the script prints, per run, MB/s and the longest wait without
# progress, then runs/median/min/max.
#
# Verification stays out of the timed runs: `mdlmap-agent bench` first makes
# one checked, untimed stream (every byte compared), then RUNS timed streams
# that only count bytes.
#
# It also states the CPU during the timed runs: the guest's (its /proc/stat),
# the vCPU thread's scheduler statistics (/proc/PID/task/TID/schedstat: time on
# CPU, time runnable but waiting for a host CPU), which tells a slow run caused
# by host CPU contention (vCPU runnable, waiting) from one where the guest
# waits for an event (vCPU idle): on a 2-core host shared with other work the
# former is common; and hostd's. Not a test: it exits non-zero only when the
# run itself fails.
#
# usage: bench/vsock_stream.sh HOSTD AGENT [RUNS [SIZE]]   (default 8 runs of 64M)
#   MDLMAP_ACCEL=kvm to use KVM where available.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
RUNS=${3:-8}
SIZE=${4:-64M}
if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ] || ! [ "$RUNS" -gt 0 ] 2>/dev/null; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent [RUNS [SIZE]]" >&2
  exit 2
fi

. "$HERE/lib.sh"
bench_dir bench
bench_hostd bench

bench_guest bench --timeout 1800 -- \
  mdlmap-agent bench --transport vsock --bytes "$SIZE" --runs "$RUNS" --mark stream --timeout 60
rc=$?

tr -d '\r' < "$T/guest.log" > "$T/g.log"
echo "mdlmap bench: vsock STREAM echo, $RUNS x $SIZE in one boot, accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU, $(nproc) host cores"
sed -n 's/^BENCH-VERIFY /checked: /p; /^BENCH FAIL/p' "$T/g.log"
printf '%-5s %10s %10s\n' run MB/s max_gap_s
grep '^BENCH transport=' "$T/g.log" | awk '{
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "%-5d %10s %10s\n", v["run"], v["echo_MBps"], v["max_gap"] }'
printf 'MB/s: %s\n' "$(grep '^BENCH transport=' "$T/g.log" | sed -n 's/.* echo_MBps=\([0-9.]*\) .*/\1/p' | bench_stats)"
grep '^BENCH transport=' "$T/g.log" | sed -n 's/.* max_gap=\([0-9.]*\).*/\1/p' | sort -g | tail -1 |
  awk '{ printf "longest wait without progress over all runs: %s s\n", $1 }'
bench_cpu_line '^stream-'
if [ "$rc" != 0 ]; then
  echo "bench: guest exit status $rc" >&2
  tail -n 30 "$T/g.log" >&2
  tail -n 20 "$T/hostd.log" >&2
fi
exit "$rc"
