#!/bin/bash
# bench/vsock_vs_serial.sh - echo throughput of a TCG guest, side by side:
#   vsock          guest -> mdlmap-hostd echo service (CID 2, port 7), vhost-user
#   virtio-serial  guest -> QEMU virtserialport -> Unix socket -> mdlmap-serial-echo
#                  (bench/serial_echo.c: a non-blocking echo on the host)
# One guest boot runs `mdlmap-agent bench` for each transport and size.
# What is measured (see guest-agent/agent_bench.c): one full-duplex echo stream;
#   g2h  = bytes written / time until the last write completed (guest -> host)
#   h2g  = bytes read / time from first to last byte read      (host -> guest)
#   echo = bytes echoed / total time
# Both directions run at once (the echo couples them). Not a test: it prints
# figures and exits non-zero only when the run itself fails.
#
# usage: bench/vsock_vs_serial.sh HOSTD AGENT [SIZES...]   (default sizes: 1M 16M)
#   MDLMAP_ACCEL=kvm to use KVM where available.
#   MDLMAP_SERIAL_ECHO: the host echo program (default: bench/mdlmap-serial-echo
#   in the build dir of HOSTD).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
shift 2 2>/dev/null
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1M 16M)
if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ]; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent [SIZES...]" >&2
  exit 2
fi
SERIAL_ECHO=${MDLMAP_SERIAL_ECHO:-$(dirname "$(dirname "$HOSTD")")/bench/mdlmap-serial-echo}
[ -x "$SERIAL_ECHO" ] || { echo "bench: $SERIAL_ECHO not built (set MDLMAP_SERIAL_ECHO)" >&2; exit 2; }

. "$HERE/lib.sh"
bench_dir bench
bench_hostd bench
# Host side of the virtio-serial port: echo everything back.
"$SERIAL_ECHO" "$T/serial.sock" 2>"$T/serial-echo.log" &
SPID=$!
bench_track "$SPID"
for _ in $(seq 50); do [ -S "$T/serial.sock" ] && break; sleep 0.1; done

cmd="rc=0"
for s in "${SIZES[@]}"; do
  cmd="$cmd; mdlmap-agent bench --transport vsock --bytes $s || rc=\$?"
  cmd="$cmd; mdlmap-agent bench --transport serial --bytes $s || rc=\$?"
done
cmd="$cmd; exit \$rc"
start=$(date +%s.%N)
MDLMAP_AGENT=$AGENT "$TOP/scripts/run-guest.sh" --name bench --timeout 900 --log "$T/guest.log" \
  --socket "$T/vsock.sock" --serial-bench "$T/serial.sock" -- sh -c "$cmd"
rc=$?
end=$(date +%s.%N)
tr -d '\r' < "$T/guest.log" | grep -E '^BENCH' > "$T/results"
boot=$(tr -d '\r' < "$T/guest.log" | sed -n 's/^MDLMAP-INIT: boot 1\/1, running command at uptime \([0-9.]*\)s/\1/p')

echo "mdlmap bench: echo throughput, accel ${MDLMAP_ACCEL:-tcg}, 1 vCPU, $(nproc) host cores"
echo "guest boot to command: ${boot:-?} s (guest uptime); whole run $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s"
printf '%-14s %10s %8s %10s %10s %10s\n' transport bytes secs g2h_MB/s h2g_MB/s echo_MB/s
awk '{
  delete v
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  name = v["transport"] == "serial" ? "virtio-serial" : v["transport"]
  if ($2 == "FAIL") { printf "%-14s FAILED: %s\n", name, $0; next }
  printf "%-14s %10s %8s %10s %10s %10s\n", name, v["bytes"], v["secs"], v["g2h_MBps"], v["h2g_MBps"], v["echo_MBps"]
}' "$T/results"
if [ "$rc" != 0 ]; then
  echo "bench: guest exit status $rc" >&2
  tail -n 30 "$T/guest.log" >&2
  tail -n 20 "$T/hostd.log" >&2
fi
exit "$rc"
