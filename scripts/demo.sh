#!/bin/bash
# scripts/demo.sh - the mdlmap demo: a guest program locks and maps a buffer,
# the host reads the guest's bytes through hostd's zero-copy mapping, writes
# a reply the guest sees, and the guest unmaps; an event watcher
# (mdlmapctl --json watch) shows hostd's events for all of it. Runs
# scripts/setup.sh first (MDLMAP_SKIP_SETUP=1 skips it).
#
#   scripts/demo.sh [BUILD_DIR]      (default: $MDLMAP_BUILD, else ./build; built if missing)
#
# Environment: MDLMAP_ACCEL=tcg|kvm (default tcg), DEMO_TIMEOUT (seconds, default 300),
# MDLMAP_DEMO_KEEP=1 keeps the temp dir with the logs.
# Exit: 0 when every step worked, 1 when one failed, 2 on a setup problem.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
BUILD=${1:-${MDLMAP_BUILD:-$TOP/build}}
TIMEOUT=${DEMO_TIMEOUT:-300}
PATTERN="hello from the guest"
REPLY="hello from the host"

say() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
die() { printf '\nDEMO FAILED: %s\n' "$*" >&2; show_logs; exit 1; }

# A fresh machine needs the packages and the guest kernel first (idempotent, fast when done).
if [ "${MDLMAP_SKIP_SETUP:-0}" != 1 ]; then
  bash "$HERE/setup.sh" || { echo "setup failed" >&2; exit 2; }
fi

if [ ! -x "$BUILD/hostd/mdlmap-hostd" ] || [ ! -x "$BUILD/hostd/cli/mdlmapctl" ] || [ ! -f "$BUILD/guest-agent/mdlmap-agent" ]; then
  say "Building mdlmap in $BUILD"
  { [ -d "$BUILD" ] || meson setup "$BUILD" "$TOP" >/dev/null; } && ninja -C "$BUILD" >/dev/null ||
    { echo "build failed" >&2; exit 2; }
fi
HOSTD=$BUILD/hostd/mdlmap-hostd
CTL=$BUILD/hostd/cli/mdlmapctl
AGENT=$BUILD/guest-agent/mdlmap-agent

T=$(mktemp -d "${TMPDIR:-/tmp}/mdlmap-demo.XXXXXX")
API=$T/api.sock
HOSTD_PID="" GUEST_PID="" WATCH_PID=""
cleanup() {
  [ -n "$GUEST_PID" ] && kill -TERM "$GUEST_PID" 2>/dev/null && wait "$GUEST_PID" 2>/dev/null
  [ -n "$WATCH_PID" ] && kill -TERM "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null
  [ -n "$HOSTD_PID" ] && kill -TERM "$HOSTD_PID" 2>/dev/null && wait "$HOSTD_PID" 2>/dev/null
  if [ "${MDLMAP_DEMO_KEEP:-0}" = 1 ]; then echo "logs kept in $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
show_logs() {
  [ -f "$T/guest.out" ] && { echo "--- guest console (tail)"; tail -n 25 "$T/guest.out"; }
  [ -f "$T/hostd.log" ] && { echo "--- hostd log (tail)"; tail -n 25 "$T/hostd.log"; }
}
ctl() { "$CTL" --api "$API" "$@"; }

say "1. Starting mdlmap-hostd (vhost-user-vsock backend for VM 'demo', guest CID 3; host API $API)"
"$HOSTD" --vm name=demo,cid=3,socket="$T/vm.sock" --api "$API" >"$T/hostd.log" 2>&1 &
HOSTD_PID=$!
for _ in $(seq 100); do [ -S "$API" ] && [ -S "$T/vm.sock" ] && break; sleep 0.1; done
[ -S "$API" ] || die "hostd did not come up"
info "hostd pid $HOSTD_PID is listening"
# The watcher's first line says its subscription is in place: from then on
# it sees every event, the guest's included.
ctl --json watch >"$T/watch.jsonl" 2>"$T/watch.err" &
WATCH_PID=$!
for _ in $(seq 100); do [ -s "$T/watch.jsonl" ] && break; sleep 0.1; done
[ -s "$T/watch.jsonl" ] || die "mdlmapctl watch did not subscribe: $(cat "$T/watch.err")"
info "an event watcher (mdlmapctl --json watch, pid $WATCH_PID) is subscribed: $(head -n1 "$T/watch.jsonl")"

say "2. Booting a guest (QEMU ${MDLMAP_ACCEL:-tcg}); in it, a program fills 8192 bytes at page offset 100"
info "with \"$PATTERN\", locks the pages (MmProbeAndLockPages) and asks hostd to map them (MmMapLockedPagesSpecifyCache)"
"$HERE/run-guest.sh" --socket "$T/vm.sock" --name demo --agent "$AGENT" --timeout "$TIMEOUT" --quiet \
  --log "$T/guest.out" -- \
  mdlmap-agent map --bytes 8192 --offset 100 --pattern "$PATTERN" --wait-for "$REPLY" --timeout 60 \
  >"$T/guest.stdout" 2>&1 &
GUEST_PID=$!

say "3. Waiting for the mapping to appear in hostd (mdlmapctl list)"
HANDLE=""
for _ in $(seq $((TIMEOUT * 2))); do
  HANDLE=$(ctl list 2>/dev/null | awk '$1 ~ /^0x/ && $2 == "demo" { print $1; exit }')
  [ -n "$HANDLE" ] && break
  kill -0 "$GUEST_PID" 2>/dev/null || die "the guest exited before mapping anything"
  sleep 0.5
done
[ -n "$HANDLE" ] || die "no mapping appeared within ${TIMEOUT}s"
ctl list | sed 's/^/   /'
MAPPED=$(grep -a -m1 -o 'MAPPED handle=.*' "$T/guest.out" 2>/dev/null | tr -d '\r')
[ -n "$MAPPED" ] && info "the guest printed: $MAPPED"

say "4. Reading the guest's buffer through hostd's own mapping of the guest pages (zero copy)"
ctl read "$HANDLE" 0 64 | sed 's/^/   /' || die "mdlmapctl read failed"
GOT=$(ctl read --raw "$HANDLE" 0 ${#PATTERN}) || die "mdlmapctl read --raw failed"
[ "$GOT" = "$PATTERN" ] || die "expected \"$PATTERN\" at the start of the buffer, read \"$GOT\""
info "the host sees the guest's bytes: \"$GOT\""

say "5. Writing \"$REPLY\" into the guest's buffer (mdlmapctl write)"
ctl write "$HANDLE" 0 "$REPLY" | sed 's/^/   /' || die "mdlmapctl write failed"

say "6. Waiting for the guest to see the host's write, unmap and unlock"
wait "$GUEST_PID"
GRC=$?
GUEST_PID=""
tr -d '\r' <"$T/guest.out" | grep -a -E 'MAPPED|GUEST SAW|UNMAPPED|FAILED|TIMEOUT' | sed 's/^/   guest: /'
grep -a -q "GUEST SAW HOST WRITE: \"$REPLY\"" "$T/guest.out" || die "the guest did not report the host's write"
grep -a -q '^UNMAPPED' <(tr -d '\r' <"$T/guest.out") || die "the guest did not unmap"
[ "$GRC" = 0 ] || die "the guest command exited with status $GRC"

say "7. Checking that hostd holds nothing any more (mdlmapctl list / stats)"
ctl list | sed 's/^/   /'
ctl stats | sed 's/^/   /'
LEFT=$(ctl stats | awk '/^mappings:/ { print $2 }')
MDLS=$(ctl stats | awk '/^locked MDLs:/ { print $3 }')
[ "$LEFT" = 0 ] && [ "$MDLS" = 0 ] || die "hostd still holds $LEFT mappings and $MDLS MDLs"
kill -0 "$HOSTD_PID" 2>/dev/null || die "hostd died"

say "8. The events the watcher received meanwhile (one JSON object per line)"
# MDL_UNLOCKED is the last one of the buffer's life; the watcher may print it
# a moment after the guest saw its unlock answered
for _ in $(seq 50); do grep -q '"type":"MDL_UNLOCKED"' "$T/watch.jsonl" && break; sleep 0.1; done
tail -n +2 "$T/watch.jsonl" | sed 's/^/   /'
for t in MDL_LOCKED MAPPING_CREATED MAPPING_REMOVED MDL_UNLOCKED; do
  grep -q "\"type\":\"$t\"" "$T/watch.jsonl" || die "the watcher saw no $t event"
done
info "the watcher saw the buffer's MDL_LOCKED, MAPPING_CREATED, MAPPING_REMOVED and MDL_UNLOCKED"

say "DEMO PASSED: the host read and wrote the guest's own pages through one contiguous mapping, and nothing leaked."
exit 0
