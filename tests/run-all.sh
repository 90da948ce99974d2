#!/usr/bin/env bash
# Runs every mdlmap test, as CI does:
#   1. fast tests (unit, vhost-user frontend harness, fuzz replay) in a normal build
#   2. the same fast tests in an ASan+UBSan build (LeakSanitizer on)
#   3. libFuzzer smoke runs of every fuzz target (clang), a few seconds each
#   4. end-to-end tests in real QEMU TCG guests (suite e2e)
#   5. the installed tree and the Debian packages (suite deploy, a few minutes)
# and prints one closing line "N passed, M failed".
# Environment: MDLMAP_SKIP_E2E=1 skips stage 4; MDLMAP_SKIP_DEPLOY=1 skips stage 5; MDLMAP_FUZZ_SECONDS (default 10);
# MDLMAP_FUZZ_BUILD (default build-fuzz) is stage 3's build dir.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failures=()

# count OK/FAIL from meson's machine-readable log of the last run in $1
tally() {
    local dir=$1 stage=$2 out
    out=$(python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = 0
names = []
try:
    for line in open(sys.argv[1]):
        t = json.loads(line)
        r = t.get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r in ("SKIP",):
            pass
        else:
            bad += 1
            names.append(t.get("name", "?"))
except FileNotFoundError:
    bad += 1
    names.append("(no test log)")
print(ok, bad, " ".join(names))
PY
)
    local ok bad names
    read -r ok bad names <<<"$out"
    passed=$((passed + ok))
    failed=$((failed + bad))
    if [ "$bad" -gt 0 ]; then failures+=("$stage: $names"); fi
    echo "== $stage: $ok passed, $bad failed"
}

stage_fail() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "== $1: FAILED"
}

setup_build() { # dir, extra meson args...
    local dir=$1; shift
    if [ -d "$dir" ]; then
        meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    else
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    fi
    ninja -C "$dir"
}

echo "== stage 1: fast tests, normal build"
if setup_build build; then
    meson test -C build --suite fast --print-errorlogs --num-processes 2
    tally build "fast"
else
    stage_fail "build"
fi

echo "== stage 2: fast tests, ASan+UBSan build"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if setup_build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dguest_static=false; then
    meson test -C build-asan --suite fast --print-errorlogs --num-processes 2 --timeout-multiplier 3
    tally build-asan "fast-asan"
else
    stage_fail "build-asan"
fi
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== stage 3: libFuzzer smoke runs"
# The whole tree is built with clang (catches clang-only warnings under -Werror)
# and instrumented for coverage (-fsanitize=fuzzer-no-link), so the fuzzers
# are guided by the hostd library code, not only by their own file. Each
# fuzz-* target runs MDLMAP_FUZZ_SECONDS from seeds (tests/fuzz/gen_corpus.py);
# new inputs go to a scratch dir, crash reproducers to build-fuzz/artifacts/.
# Any sanitizer report (UBSan included), crash, leak or hang (>10 s on one
# input) fails the stage. MDLMAP_FUZZ_BUILD overrides the build dir.
secs=${MDLMAP_FUZZ_SECONDS:-10}
fuzz_dir=${MDLMAP_FUZZ_BUILD:-build-fuzz}
# an old build dir configured with another compiler cannot switch to clang
if [ -d "$fuzz_dir" ] && ! grep -A1 '^rule c_COMPILER$' "$fuzz_dir/build.ninja" 2>/dev/null | grep -q 'command = .*clang'; then
    rm -rf "$fuzz_dir"
fi
if CC=clang setup_build "$fuzz_dir" -Dfuzz=true -Dguest_static=false -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    seeds="$fuzz_dir/fuzz-seeds"
    rm -rf "$seeds"
    python3 tests/fuzz/gen_corpus.py "$seeds" || stage_fail "fuzz: seed generation"
    mkdir -p "$fuzz_dir/artifacts"
    nf=0
    for f in "$fuzz_dir"/tests/fuzz/fuzz-*; do
        case "$f" in *-replay|*.p) continue ;; esac
        [ -x "$f" ] || continue
        nf=$((nf + 1))
        name=${f##*/fuzz-}
        corpus=$(mktemp -d)
        mkdir -p "$seeds/$name"
        if timeout $((secs + 120)) "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
                -max_len=8192 -print_final_stats=1 -artifact_prefix="$fuzz_dir/artifacts/$name-" \
                "$corpus" "$seeds/$name" >"$fuzz_dir/fuzz-$name.log" 2>&1; then
            passed=$((passed + 1))
            echo "ok - fuzz-$name (${secs}s, $(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$fuzz_dir/fuzz-$name.log" | tail -1))"
        else
            tail -40 "$fuzz_dir/fuzz-$name.log"
            stage_fail "fuzz $name (log: $fuzz_dir/fuzz-$name.log)"
        fi
        rm -rf "$corpus"
    done
    [ "$nf" -gt 0 ] || stage_fail "fuzz: no targets built"
    unset ASAN_OPTIONS UBSAN_OPTIONS
else
    stage_fail "build-fuzz"
fi

if [ "${MDLMAP_SKIP_E2E:-0}" != 1 ]; then
    echo "== stage 4: end-to-end tests in QEMU guests"
    meson test -C build --suite e2e --print-errorlogs --num-processes 1
    tally build "e2e"
fi

if [ "${MDLMAP_SKIP_DEPLOY:-0}" != 1 ]; then
    echo "== stage 5: install and Debian packages"
    meson test -C build --suite deploy --print-errorlogs --num-processes 1
    tally build "deploy"
fi

for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
