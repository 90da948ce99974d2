#!/bin/bash
# scripts/run-guest.sh - boot a throw-away Linux guest under QEMU, run one
# command in it, and exit with that command's exit status.
#
#   scripts/run-guest.sh [options] -- CMD [ARGS...]
#
#   --socket PATH      attach a vhost-user-vsock-pci device backed by the
#                      vhost-user socket PATH (mdlmap-hostd, started by the
#                      caller; the guest CID comes from hostd's --vm cid=)
#   --mem SIZE         guest RAM (default 512M), memfd-backed, share=on
#   --accel tcg|kvm    default $MDLMAP_ACCEL or tcg
#   --name NAME        QEMU -name and console line prefix
#   --timeout SECS     kill QEMU and exit 124 after SECS (default 300)
#   --agent PATH       static mdlmap-agent to put in /bin (default
#                      $MDLMAP_AGENT, else the newest build*/guest-agent/mdlmap-agent)
#   --add SRC[:DEST]   extra file for the initramfs (DEST default /bin/NAME)
#   --boots N          reboot test: boot N times; CMD runs at every boot with
#                      MDLMAP_BOOT=1..N; the status is the first non-zero one
#   --serial-bench PATH  add virtio-serial-pci with a port named mdlmap.bench
#                      whose chardev connects to the Unix socket PATH
#                      (guest: /dev/vport*p1, see /sys/class/virtio-ports)
#   --log FILE         write the guest console to FILE instead of stderr
#   --quiet            do not stream the console (still kept for errors)
#   --qemu-pid-file F  write QEMU's pid to F (so a test can SIGKILL it)
#   --append STR       extra kernel command line
#   --qemu-arg ARG     extra QEMU argument (repeatable)
#   --kernel-root DIR  extracted kernel (default $MDLMAP_CACHE/kernel/current)
#   env MDLMAP_QEMU    QEMU binary (default qemu-system-x86_64)
#
# Exit status: the guest command's status (from the console marker line
# "MDLMAP-EXIT: <n>"), 124 on timeout, 125 when the marker is missing
# (guest crashed, QEMU killed, ...), 126 on a usage or setup error.
#
# Example (hostd already serving cid 3 on /tmp/vm1.sock):
#   scripts/run-guest.sh --socket /tmp/vm1.sock -- mdlmap-agent echo --bytes 16M
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
CACHE=${MDLMAP_CACHE:-/var/cache/mdlmap}

SOCKET="" MEM=512M ACCEL=${MDLMAP_ACCEL:-tcg} NAME=guest TIMEOUT=300
AGENT=${MDLMAP_AGENT:-} BOOTS=1 SERIAL_BENCH="" LOG="" QUIET=0 PIDFILE=""
APPEND="" KROOT=$CACHE/kernel/current
ADDS=() QEXTRA=()

help_text() { sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p;}' "$0"; }
usage() { help_text >&2; exit 126; }
die() { echo "run-guest: $*" >&2; exit 126; }

while [ $# -gt 0 ]; do
  case "$1" in
    --socket) SOCKET=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --accel) ACCEL=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --agent) AGENT=$2; shift 2 ;;
    --add) ADDS+=(--add "$2"); shift 2 ;;
    --boots) BOOTS=$2; shift 2 ;;
    --serial-bench) SERIAL_BENCH=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    --quiet) QUIET=1; shift ;;
    --qemu-pid-file) PIDFILE=$2; shift 2 ;;
    --append) APPEND=$2; shift 2 ;;
    --qemu-arg) QEXTRA+=("$2"); shift 2 ;;
    --kernel-root) KROOT=$2; shift 2 ;;
    -h|--help) help_text; exit 0 ;;
    --) shift; break ;;
    *) echo "run-guest: unknown option $1" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || usage
case "$BOOTS" in ''|*[!0-9]*|0) die "--boots needs a positive number" ;; esac
case "$TIMEOUT" in ''|*[!0-9]*) die "--timeout needs seconds" ;; esac

if [ -z "$AGENT" ]; then
  AGENT=$(ls -t "$TOP"/build*/guest-agent/mdlmap-agent 2>/dev/null | head -n1 || true)
fi
[ -z "$AGENT" ] || [ -f "$AGENT" ] || die "agent not found: $AGENT"

KROOT=$(readlink -f "$KROOT")
KVER=$(ls "$KROOT/lib/modules" 2>/dev/null | head -n1)
KERNEL=$KROOT/boot/vmlinuz-$KVER
[ -n "$KVER" ] && [ -f "$KERNEL" ] || die "no guest kernel in $KROOT (run scripts/setup.sh)"
[ -z "$SOCKET" ] || [ -S "$SOCKET" ] || die "vhost-user socket $SOCKET does not exist (start mdlmap-hostd first)"
[ -z "$SERIAL_BENCH" ] || [ -S "$SERIAL_BENCH" ] || die "--serial-bench socket $SERIAL_BENCH does not exist"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mdlmap-guest.XXXXXX")
QPID="" TPID=""
cleanup() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill -TERM "$QPID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QPID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$QPID" 2>/dev/null
    wait "$QPID" 2>/dev/null
  fi
  [ -z "$TPID" ] || kill "$TPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The command line, each word single-quoted, run by /init with sh.
quote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
  sep=""
  for w in "$@"; do printf '%s%s' "$sep" "$(quote "$w")"; sep=" "; done
  printf '\n'
} > "$TMP/cmd"

agent_args=()
[ -z "$AGENT" ] || agent_args=(--agent "$AGENT")
"$HERE/mkinitramfs.sh" -o "$TMP/initrd.cpio.gz" --kernel-root "$KROOT" \
  "${agent_args[@]+"${agent_args[@]}"}" "${ADDS[@]+"${ADDS[@]}"}" \
  --add "$TMP/cmd:/mdlmap/cmd" || die "initramfs build failed"

case "$ACCEL" in
  kvm) [ -w /dev/kvm ] || die "--accel kvm: /dev/kvm is not usable here (use tcg)"
       accel_args=(-accel kvm -cpu host) ;;
  tcg) accel_args=(-accel tcg) ;;
  *) die "--accel must be tcg or kvm" ;;
esac

CONSOLE=${LOG:-$TMP/console.log}
: > "$CONSOLE" || die "cannot write $CONSOLE"
args=(-name "$NAME" -machine "q35,memory-backend=mem" "${accel_args[@]}" -smp 1
      -m "$MEM" -object "memory-backend-memfd,id=mem,size=$MEM,share=on"
      -nodefaults -display none -monitor none
      -chardev "file,id=con,path=$CONSOLE" -serial chardev:con
      -kernel "$KERNEL" -initrd "$TMP/initrd.cpio.gz"
      -append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init mdlmap.boots=$BOOTS $APPEND")
if [ "$BOOTS" = 1 ]; then
  args+=(-no-reboot)
else
  truncate -s 1M "$TMP/state.img"
  args+=(-drive "file=$TMP/state.img,format=raw,if=none,id=mdlstate"
         -device "virtio-blk-pci,drive=mdlstate")
fi
if [ -n "$SOCKET" ]; then
  args+=(-chardev "socket,id=vsock0,path=$SOCKET" -device "vhost-user-vsock-pci,chardev=vsock0")
fi
if [ -n "$SERIAL_BENCH" ]; then
  args+=(-device "virtio-serial-pci,id=vser0" -chardev "socket,id=bench0,path=$SERIAL_BENCH"
         -device "virtserialport,bus=vser0.0,chardev=bench0,name=mdlmap.bench")
fi
args+=("${QEXTRA[@]+"${QEXTRA[@]}"}")

start=$(date +%s.%N)
"${MDLMAP_QEMU:-qemu-system-x86_64}" "${args[@]}" </dev/null >"$TMP/qemu.out" 2>&1 &
QPID=$!
[ -z "$PIDFILE" ] || echo "$QPID" > "$PIDFILE"
if [ -z "$LOG" ] && [ "$QUIET" = 0 ]; then
  tail -s 0.2 -n +1 -f --pid="$QPID" "$CONSOLE" | sed -u "s/\r\$//; s/^/[$NAME] /" >&2 &
  TPID=$!
fi

deadline=$(( $(date +%s) + TIMEOUT ))
timed_out=0
while kill -0 "$QPID" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then timed_out=1; break; fi
  sleep 0.2
done
if [ "$timed_out" = 1 ]; then
  kill -TERM "$QPID" 2>/dev/null; sleep 1; kill -KILL "$QPID" 2>/dev/null
fi
wait "$QPID" 2>/dev/null
qrc=$?
QPID=""
[ -z "$TPID" ] || wait "$TPID" 2>/dev/null
TPID=""
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')

if [ "$timed_out" = 1 ]; then
  echo "run-guest: [$NAME] timeout after ${TIMEOUT}s, QEMU killed" >&2
  exit 124
fi
if [ -s "$TMP/qemu.out" ]; then
  sed "s/^/run-guest: [$NAME] qemu: /" "$TMP/qemu.out" >&2
fi
mapfile -t rcs < <(tr -d '\r' < "$CONSOLE" | sed -n 's/^MDLMAP-EXIT: \([0-9][0-9]*\).*/\1/p')
if [ "${#rcs[@]}" -lt "$BOOTS" ]; then
  echo "run-guest: [$NAME] no exit marker (${#rcs[@]}/$BOOTS boots reported, QEMU status $qrc, ${elapsed}s)" >&2
  if [ "$QUIET" = 1 ] && [ -z "$LOG" ]; then tail -n 30 "$CONSOLE" | sed "s/^/[$NAME] /" >&2; fi
  exit 125
fi
status=0
for r in "${rcs[@]}"; do
  if [ "$r" != 0 ]; then status=$r; break; fi
done
echo "run-guest: [$NAME] guest exit status $status (${#rcs[@]} boot(s), ${elapsed}s)" >&2
exit "$status"
