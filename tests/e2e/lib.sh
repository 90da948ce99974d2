# shellcheck shell=bash
# Common part of the mdlmap end-to-end tests (sourced, bash).
#
# A test script is called as:  SCRIPT HOSTD AGENT
# (meson passes the built mdlmap-hostd and static mdlmap-agent; the env
# variables MDLMAP_HOSTD / MDLMAP_AGENT work too). Each test starts its own
# hostd in a temp dir and kills everything it started on exit.
# Exit: 0 all checks passed, 1 some failed, 77 skipped (no guest kernel).
# MDLMAP_E2E_KEEP=1 keeps the temp dir (logs) for inspection.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$E2E_DIR/../.." && pwd)
RUN_GUEST=$TOP/scripts/run-guest.sh
HOSTD=$(readlink -f "${1:-${MDLMAP_HOSTD:-}}" 2>/dev/null || true)
AGENT=$(readlink -f "${2:-${MDLMAP_AGENT:-}}" 2>/dev/null || true)
TEST_NAME=$(basename "$0" .sh)
GUEST_TIMEOUT=${GUEST_TIMEOUT:-300}

if [ ! -x "$HOSTD" ] || [ ! -f "$AGENT" ]; then
  echo "usage: $0 PATH/TO/mdlmap-hostd PATH/TO/mdlmap-agent" >&2
  exit 2
fi
if [ ! -d "${MDLMAP_CACHE:-/var/cache/mdlmap}/kernel/current/boot" ]; then
  echo "SKIP: no guest kernel, run scripts/setup.sh first" >&2
  exit 77
fi
export MDLMAP_AGENT=$AGENT

T=$(mktemp -d "${TMPDIR:-/tmp}/mdlmap-e2e-$TEST_NAME.XXXXXX")
PASS=0
FAIL=0
HOSTD_PID=""
HOSTD_LOG=""
HOSTD_N=0
BG_PIDS=()

e2e_cleanup() {
  local p f
  for p in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
    wait "$p" 2>/dev/null
  done
  for f in "$T"/*.qemu.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    [ -n "$p" ] && [ -d "/proc/$p" ] && grep -q qemu "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  if [ -n "$HOSTD_PID" ] && kill -0 "$HOSTD_PID" 2>/dev/null; then
    kill -TERM "$HOSTD_PID" 2>/dev/null
    sleep 1
    kill -0 "$HOSTD_PID" 2>/dev/null && kill -KILL "$HOSTD_PID" 2>/dev/null
  fi
  if [ "${MDLMAP_E2E_KEEP:-0}" = 1 ]; then
    echo "# logs kept in $T"
  else
    rm -rf "$T"
  fi
}
trap e2e_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note() { echo "# $*"; }
pass() { PASS=$((PASS + 1)); echo "ok $((PASS + FAIL)) - $*"; }
fail() { FAIL=$((FAIL + 1)); echo "not ok $((PASS + FAIL)) - $*"; }
# check DESCRIPTION COMMAND...: pass when the command succeeds.
check() {
  local d=$1
  shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}

# Show a log's tail in the test output (for failures).
show_log() {
  local f=$1 n=${2:-40}
  [ -f "$f" ] || return 0
  echo "# ---- last $n lines of $(basename "$f") ----"
  tail -n "$n" "$f" | tr -d '\r' | sed 's/^/#   /'
}

# grep a log (CRs stripped).
log_has() { [ -f "$1" ] && tr -d '\r' < "$1" | grep -qE -- "$2"; }

# wait_for_line FILE REGEX SECS
wait_for_line() {
  local f=$1 re=$2 secs=$3 i=0
  while [ $i -lt $((secs * 5)) ]; do
    [ -f "$f" ] && log_has "$f" "$re" && return 0
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

# start_hostd HOSTD-ARGS...: starts hostd, waits for "ready".
start_hostd() {
  HOSTD_N=$((HOSTD_N + 1))
  HOSTD_LOG=$T/hostd.$HOSTD_N.log
  "$HOSTD" "$@" >"$HOSTD_LOG" 2>&1 &
  HOSTD_PID=$!
  local i=0
  while [ $i -lt 100 ]; do
    if log_has "$HOSTD_LOG" 'ready'; then
      note "hostd pid $HOSTD_PID ready: $*"
      return 0
    fi
    kill -0 "$HOSTD_PID" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
  done
  show_log "$HOSTD_LOG"
  return 1
}

# stop_hostd: SIGTERM, wait up to 10 s; returns hostd's exit status (124 if it hung).
stop_hostd() {
  local p=$HOSTD_PID i=0 rc
  [ -n "$p" ] || return 1
  kill -TERM "$p" 2>/dev/null
  while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
  if kill -0 "$p" 2>/dev/null; then
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    HOSTD_PID=""
    return 124
  fi
  wait "$p"
  rc=$?
  HOSTD_PID=""
  return $rc
}

hostd_alive() { [ -n "$HOSTD_PID" ] && kill -0 "$HOSTD_PID" 2>/dev/null; }
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
map_count() { wc -l < "/proc/$1/maps" 2>/dev/null; }

# guest NAME RUN-GUEST-ARGS... -- CMD...: boots a guest, console in $T/NAME.log.
guest() {
  local name=$1
  shift
  "$RUN_GUEST" --name "$name" --timeout "$GUEST_TIMEOUT" --log "$T/$name.log" \
    --qemu-pid-file "$T/$name.qemu.pid" "$@"
}

# guest_bg NAME ...: same, in the background; GUEST_BG_PID is the runner's pid
# (SIGTERM to it makes the runner kill its QEMU).
guest_bg() {
  local name=$1
  shift
  "$RUN_GUEST" --name "$name" --timeout "$GUEST_TIMEOUT" --log "$T/$name.log" \
    --qemu-pid-file "$T/$name.qemu.pid" "$@" &
  GUEST_BG_PID=$!
  BG_PIDS+=("$GUEST_BG_PID")
}

# finish: summary line, logs on failure, exit status.
finish() {
  if [ "$FAIL" -gt 0 ]; then
    local f
    for f in "$T"/*.log; do show_log "$f" 30; done
  fi
  echo "$TEST_NAME: $PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
  exit $?
}
