# Shared by the guest benchmarks (sourced, not run): a scratch directory $T,
# an mdlmap-hostd ($HOSTD) serving one VM (CID 3) on $T/vsock.sock, and on
# exit the end of every process the script registered with bench_track.
BENCH_PIDS=()
bench_track() { BENCH_PIDS+=("$1"); }
bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$T"
}
# bench_dir TAG: sets T (removed on exit with what bench_track holds).
bench_dir() {
  T=$(mktemp -d "${TMPDIR:-/tmp}/mdlmap-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
# bench_hostd TAG [more hostd arguments...]: sets HPID once hostd is ready, or exits 1.
bench_hostd() {
  local tag=$1
  shift
  "$HOSTD" --vm "name=$tag,cid=3,socket=$T/vsock.sock" "$@" >"$T/hostd.log" 2>&1 &
  HPID=$!
  bench_track "$HPID"
  for _ in $(seq 50); do grep -q ready "$T/hostd.log" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$T/hostd.log" || { cat "$T/hostd.log" >&2; echo "bench: hostd not ready" >&2; exit 1; }
}
