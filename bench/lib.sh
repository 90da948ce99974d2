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

# ---- CPU during a guest benchmark ----
# The guest prints "BENCH-CPU b:NAME <cpu line of its /proc/stat>" when a
# phase NAME begins and "BENCH-CPU e:NAME ..." when it ends (the guest agent's
# `bench --mark`, or $BENCH_MARK in the guest's shell). While the guest runs,
# bench_guest reads its console as it grows and, at each such line, records
# the wall time, hostd's CPU time and the QEMU vCPU thread's (run and wait ns,
# /proc/PID/task/TID/schedstat) next to the guest's own figures, in
# $T/cpu.samples. bench_cpu_line then sums the phases. Reading the console as
# it grows (tail -F) adds a few ms at each edge: phases should last seconds.

# For the guest's sh: defines bench_mark NAME-WITH-PHASE ("b:x" / "e:x").
BENCH_MARK='bench_mark() { echo "BENCH-CPU $1 $(head -n 1 /proc/stat)"; }; '

# bench_task_ns DIR: sets _ns/_wait to the on-CPU/runnable-waiting ns summed
# over DIR's threads (DIR: /proc/PID, or one /proc/PID/task/TID).
bench_task_ns() {
  local f r w _
  _ns=0 _wait=0
  for f in "$1"/schedstat "$1"/task/*/schedstat; do
    [ "$f" = "$1/schedstat" ] && [ -d "$1/task" ] && continue   # a process: its threads
    read -r r w _ 2>/dev/null < "$f" || continue
    _ns=$((_ns + r)) _wait=$((_wait + w))
  done
}

# The vCPU thread: QEMU names threads only with -name debug-threads=on, so
# it is the thread with the most CPU time once the guest booted (under TCG
# booting is all vCPU work). Sets BENCH_VCPU.
bench_pick_vcpu() {
  local q t r _ best=-1
  q=$(cat "$T/qemu.pid" 2>/dev/null) || return 1
  for t in /proc/"$q"/task/*; do
    read -r r _ 2>/dev/null < "$t/schedstat" || continue
    [ "$r" -gt "$best" ] && best=$r && BENCH_VCPU=$t
  done
}

bench_sampler() {
  local line tag stat hns pns vns vw
  BENCH_VCPU=""
  while IFS= read -r line; do
    line=${line%$'\r'}
    case $line in "BENCH-CPU "[be]:*) ;; *) continue ;; esac
    read -r _ tag stat <<<"$line"
    [ -n "$BENCH_VCPU" ] || bench_pick_vcpu
    bench_task_ns "/proc/$HPID"; hns=$_ns
    pns=0
    if [ -n "${BENCH_PEER_PID:-}" ]; then bench_task_ns "/proc/$BENCH_PEER_PID"; pns=$_ns; fi
    vns=- vw=-
    if [ -n "$BENCH_VCPU" ]; then bench_task_ns "$BENCH_VCPU"; vns=$_ns vw=$_wait; fi
    echo "$tag $EPOCHREALTIME $hns $pns $vns $vw ${stat#cpu}" >> "$T/cpu.samples"
  done
}

# bench_guest NAME [run-guest.sh options...] -- CMD...: boots the guest with
# the vsock device on $T/vsock.sock and AGENT in it, console in $T/guest.log,
# CPU samples in $T/cpu.samples; returns the guest command's exit status.
bench_guest() {
  local name=$1 gpid
  shift
  : > "$T/guest.log"
  : > "$T/cpu.samples"
  MDLMAP_AGENT=$AGENT "$TOP/scripts/run-guest.sh" --name "$name" --log "$T/guest.log" \
    --qemu-pid-file "$T/qemu.pid" --socket "$T/vsock.sock" "$@" &
  gpid=$!
  bench_track "$gpid"
  bench_sampler < <(tail -s 0.05 -n +1 -F --pid="$gpid" "$T/guest.log" 2>/dev/null)
  wait "$gpid"
}

# bench_cpu_line REGEX: the CPU figures summed over the phases whose NAME
# matches the awk REGEX (each phase from its b: sample to its e: sample).
# PEER: a name for $BENCH_PEER_PID's share (omitted when empty).
bench_cpu_line() {
  awk -v pat="$1" -v peer="${2:-}" '
    { k = substr($1, 1, 1); n = substr($1, 3) }
    n !~ pat { next }
    k == "b" { b[n] = $0; next }
    k == "e" && (n in b) {
      split(b[n], s, " ")
      np++; wall += $2 - s[2]; hd += $3 - s[3]; pr += $4 - s[4]
      if ($5 != "-" && s[5] != "-") { vok++; vr += $5 - s[5]; vw += $6 - s[6] }
      # guest jiffies: user nice system idle iowait irq softirq steal
      for (i = 7; i <= 14; i++) { d = $i - s[i]; tot += d; if (i != 10 && i != 11) busy += d }
      delete b[n]
    }
    END {
      if (!np || wall <= 0) { print "CPU: no samples"; exit }
      printf "CPU over %d phase(s), %.2f s: guest %.0f%% busy (its /proc/stat)", np, wall, tot ? 100 * busy / tot : 0
      if (vok == np)
        printf ", vCPU thread %.0f%% on a host CPU + %.0f%% waiting for one", vr / wall / 1e7, vw / wall / 1e7
      printf ", hostd %.1f%% of a core (%.0f ms)", hd / wall / 1e7, hd / 1e6
      if (peer != "")
        printf ", %s %.1f%% of a core", peer, pr / wall / 1e7
      printf "\n"
    }' "$T/cpu.samples"
}

# bench_stats: "runs N  median M  min A  max B" of the numbers on stdin (one a
# line), printf format FMT for the figures (default %.2f).
bench_stats() {
  sort -g | awk -v f="${1:-%.2f}" '
    { v[NR] = $1 }
    END {
      if (!NR) { print "runs 0"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "runs %d  median " f "  min " f "  max " f "\n", NR, m, v[1], v[NR]
    }'
}
