#!/bin/bash
# bench/vsock_vs_serial.sh - echo throughput of a TCG guest, side by side:
#   vsock          guest -> mdlmap-hostd echo service (CID 2, port 7), vhost-user
#   virtio-serial  guest -> QEMU virtserialport -> Unix socket -> mdlmap-serial-echo
#                  (bench/serial_echo.c: a non-blocking echo on the host)
# One guest boot runs `mdlmap-agent bench` (guest-agent/agent_bench.c) for each
# size: first one checked, untimed run per transport (every byte compared,
# checksums of both directions), then RUNS timed runs per transport,
# alternating vsock and serial so that drift hits both alike. The timed runs
# send one buffer over and over and only count bytes: no per-byte work of the
# guest's own is in the figures.
# What is measured (one full-duplex echo stream per run):
#   g2h  = bytes written / time until the last write completed (guest -> host)
#   h2g  = bytes read / time from first to last byte read      (host -> guest)
#   echo = bytes echoed / total time
# Both directions run at once (the echo couples them). Per transport and size:
# runs, median, min and max of echo MB/s, and the CPU of the guest, of its
# vCPU thread, of hostd and of the serial echo program during the timed runs.
# Not a test: it prints figures and exits non-zero only when the run fails.
#
# usage: bench/vsock_vs_serial.sh HOSTD AGENT [SIZES...]   (default sizes: 16M 64M)
#   MDLMAP_ACCEL=kvm to use KVM where available; MDLMAP_BENCH_RUNS timed runs
#   per transport and size (default 5).
#   MDLMAP_SERIAL_ECHO: the host echo program (default: bench/mdlmap-serial-echo
#   in the build dir of HOSTD).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
shift 2 2>/dev/null
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(16M 64M)
RUNS=${MDLMAP_BENCH_RUNS:-5}
if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ] || ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent [SIZES...]   (env MDLMAP_BENCH_RUNS=N)" >&2
  exit 2
fi
for s in "${SIZES[@]}"; do
  [[ "$s" =~ ^[0-9]+[KMG]?$ ]] || { echo "bench: bad size $s" >&2; exit 2; }
done
SERIAL_ECHO=${MDLMAP_SERIAL_ECHO:-$(dirname "$(dirname "$HOSTD")")/bench/mdlmap-serial-echo}
[ -x "$SERIAL_ECHO" ] || { echo "bench: $SERIAL_ECHO not built (set MDLMAP_SERIAL_ECHO)" >&2; exit 2; }

. "$HERE/lib.sh"
bench_dir bench
bench_hostd bench
# Host side of the virtio-serial port: echo everything back.
"$SERIAL_ECHO" "$T/serial.sock" 2>"$T/serial-echo.log" &
SPID=$!
bench_track "$SPID"
BENCH_PEER_PID=$SPID
for _ in $(seq 50); do [ -S "$T/serial.sock" ] && break; sleep 0.1; done

cmd="rc=0"
for s in "${SIZES[@]}"; do
  for i in $(seq "$RUNS"); do
    nv=--no-verify
    [ "$i" = 1 ] && nv=""
    for tr in vsock serial; do
      cmd="$cmd; mdlmap-agent bench --transport $tr --bytes $s --mark $tr-$s-$i $nv || rc=\$?"
    done
  done
done
cmd="$cmd; exit \$rc"
start=$(date +%s.%N)
bench_guest bench --timeout 900 --serial-bench "$T/serial.sock" -- sh -c "$cmd"
rc=$?
end=$(date +%s.%N)
tr -d '\r' < "$T/guest.log" | grep -E '^BENCH(-VERIFY)? ' > "$T/results"
boot=$(tr -d '\r' < "$T/guest.log" | sed -n 's/^MDLMAP-INIT: boot 1\/1, running command at uptime \([0-9.]*\)s/\1/p')

echo "mdlmap bench: echo throughput, accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU, $(nproc) host cores, $RUNS timed runs per transport and size"
echo "guest boot to command: ${boot:-?} s (guest uptime); whole run $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s"
grep -E '^BENCH-VERIFY ' "$T/results" | sed 's/^BENCH-VERIFY /checked: /'
printf '%-14s %10s %4s %8s %10s %10s %10s\n' transport bytes run secs g2h_MB/s h2g_MB/s echo_MB/s
awk '$1 == "BENCH" {
  delete v
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  name = v["transport"] == "serial" ? "virtio-serial" : v["transport"]
  if ($2 == "FAIL") { printf "FAILED: %s\n", $0; next }
  run = ++n[name " " v["bytes"]]   # one run per agent invocation: count them here
  printf "%-14s %10s %4s %8s %10s %10s %10s\n", name, v["bytes"], run, v["secs"], v["g2h_MBps"], v["h2g_MBps"], v["echo_MBps"]
}' "$T/results"
echo
echo "echo MB/s per transport and size, and CPU during its timed runs:"
for s in "${SIZES[@]}"; do
  bytes=$(awk -v s="$s" 'BEGIN { n = s + 0; u = substr(s, length(s));
    print n * (u == "K" ? 1024 : u == "M" ? 1048576 : u == "G" ? 1073741824 : 1) }')
  for tr in vsock serial; do
    name=$tr
    [ "$tr" = serial ] && name=virtio-serial
    printf '  %-13s %5s  %s\n' "$name" "$s" "$(awk -v t="$tr" -v b="$bytes" '$1 == "BENCH" && $2 == "transport=" t && $0 ~ " bytes=" b " " {
        for (i = 2; i <= NF; i++) if ($i ~ /^echo_MBps=/) print substr($i, 11) }' "$T/results" | bench_stats '%.2f')"
    printf '  %-13s %5s  %s\n' "" "" "$(bench_cpu_line "^$tr-$s-" serial-echo)"
  done
done
echo "hostd serves vsock only and the serial echo program serial only: each is idle in the other's rows."
if [ "$rc" != 0 ]; then
  echo "bench: guest exit status $rc" >&2
  tail -n 30 "$T/guest.log" >&2
  tail -n 20 "$T/hostd.log" >&2
fi
exit "$rc"
