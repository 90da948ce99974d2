#!/bin/bash
# bench/vsock_stream.sh - distribution of vsock STREAM echo throughput over
# several runs in ONE guest boot (TCG by default): the guest runs
# `mdlmap-agent echo --bytes SIZE --progress 1` RUNS times against
# mdlmap-hostd's echo service and the script prints, per run, MB/s and the
# longest wait without progress, then runs/median/min/max.
#
# It also samples the vCPU thread's scheduler statistics
# (/proc/PID/task/TID/schedstat: time on CPU, time runnable but waiting for a
# host CPU) over the streaming phase, which tells a slow run caused by host
# CPU contention (vCPU runnable, waiting) from one where the guest waits for
# an event (vCPU idle): on a 2-core host shared with other work the former is
# common. Not a test: it exits non-zero only when the run itself fails.
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

# The guest marks the streaming phase so the vCPU sampling below covers it only.
cmd="echo STREAMS-BEGIN; rc=0; for i in \$(seq $RUNS); do mdlmap-agent echo --bytes $SIZE --progress 1 --timeout 60 || rc=\$?; done; echo STREAMS-END; exit \$rc"
MDLMAP_AGENT=$AGENT "$TOP/scripts/run-guest.sh" --name bench --timeout 1800 --log "$T/guest.log" \
  --qemu-pid-file "$T/qemu.pid" --socket "$T/vsock.sock" -- sh -c "$cmd" &
GPID=$!
bench_track "$GPID"

# schedstat of the vCPU thread: run_ns wait_ns now_ns. QEMU names its threads
# only with -name debug-threads=on, so the vCPU is found as the thread with
# the most CPU time once the guest has booted (TCG: booting is all vCPU work).
VCPU=""
pick_vcpu() {   # in this shell (sets VCPU), not in a $(...) subshell
  local q t r _ best=-1
  q=$(cat "$T/qemu.pid" 2>/dev/null) || return 1
  for t in /proc/"$q"/task/*; do
    read -r r _ 2>/dev/null < "$t/schedstat" || continue
    [ "$r" -gt "$best" ] && best=$r && VCPU=$t
  done
}
vcpu_sched() {
  local r w _
  [ -n "$VCPU" ] && read -r r w _ 2>/dev/null < "$VCPU/schedstat" || return 1
  echo "$r $w $(date +%s%N)"
}
s0="" s1=""
while kill -0 "$GPID" 2>/dev/null; do
  if [ -z "$s0" ] && grep -q STREAMS-BEGIN "$T/guest.log" 2>/dev/null; then pick_vcpu; s0=$(vcpu_sched); fi
  if [ -n "$s0" ] && [ -z "$s1" ] && grep -q STREAMS-END "$T/guest.log" 2>/dev/null; then s1=$(vcpu_sched); fi
  sleep 0.2
done
wait "$GPID"
rc=$?
GPID=""

tr -d '\r' < "$T/guest.log" > "$T/g.log"
echo "mdlmap bench: vsock STREAM echo, $RUNS x $SIZE in one boot, accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU, $(nproc) host cores"
printf '%-5s %10s %10s\n' run MB/s max_gap_s
paste <(sed -n 's/^ECHO OK: .*(\([0-9.]*\) MB\/s)$/\1/p; s/^ECHO FAIL: .*/FAIL/p' "$T/g.log") \
      <(sed -n 's/^echo: conn 0: longest gap without progress \([0-9.]*\) s.*/\1/p' "$T/g.log") |
  awk '{ printf "%-5d %10s %10s\n", NR, $1, $2 }'
sed -n 's/^ECHO OK: .*(\([0-9.]*\) MB\/s)$/\1/p' "$T/g.log" | sort -g | awk '
  { v[NR] = $1 }
  END {
    if (!NR) { print "no successful run"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "runs %d  median %.2f MB/s  min %.2f  max %.2f\n", NR, m, v[1], v[NR]
  }'
sed -n 's/^echo: conn 0: longest gap without progress \([0-9.]*\) s.*/\1/p' "$T/g.log" | sort -g | tail -1 |
  awk '{ printf "longest wait without progress over all runs: %s s\n", $1 }'
if [ -n "$s0" ] && [ -n "$s1" ]; then
  read -r r0 w0 t0 <<<"$s0"
  read -r r1 w1 t1 <<<"$s1"
  awk -v r=$((r1 - r0)) -v w=$((w1 - w0)) -v t=$((t1 - t0)) 'BEGIN {
    printf "vCPU over the streams: %.0f%% on a host CPU, %.0f%% runnable but waiting for one, %.0f%% idle (%.1f s)\n",
      100 * r / t, 100 * w / t, 100 * (t - r - w) / t, t / 1e9 }'
fi
if [ "$rc" != 0 ]; then
  echo "bench: guest exit status $rc" >&2
  tail -n 30 "$T/g.log" >&2
  tail -n 20 "$T/hostd.log" >&2
fi
exit "$rc"
