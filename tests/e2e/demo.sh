#!/bin/bash
# e2e: README's first command, scripts/demo.sh, on this build. It must print
# every step and end with DEMO PASSED.
# usage: demo.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"
BUILD=$(cd "$(dirname "$HOSTD")/.." && pwd)
MDLMAP_SKIP_SETUP=1 bash "$TOP/scripts/demo.sh" "$BUILD" > "$T/demo.log" 2>&1
rc=$?
sed 's/^/# /' "$T/demo.log" | tail -n 45
check "demo exits 0 (got $rc)" [ "$rc" = 0 ]
check "the host read the guest's pattern through the mapping" log_has "$T/demo.log" 'the host sees the guest.s bytes'
check "the guest saw the host's write" log_has "$T/demo.log" 'GUEST SAW HOST WRITE: "hello from the host"'
check "no mapping left at the end" log_has "$T/demo.log" '^   0 mappings'
check "demo passed" log_has "$T/demo.log" 'DEMO PASSED'
finish
