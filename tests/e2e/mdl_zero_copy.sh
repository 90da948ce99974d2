#!/bin/bash
# e2e: zero copy through hostd's mapping of guest pages, in a TCG guest.
# For each buffer (1 page; 3 bytes across a page boundary; 64 MiB):
#   the guest fills it with a pattern, locks + maps it, then writes a marker
#   (--post-write) AFTER mapping; the host must read the marker and the
#   pattern through hostd's mapping (mdlmapctl read), then writes a reply that
#   the guest must see (--wait-for); the guest unmaps; hostd holds nothing.
# usage: mdl_zero_copy.sh HOSTD AGENT   (mdlmapctl: next to hostd, or $MDLMAPCTL)
. "$(dirname "$0")/lib.sh"

CTL=${MDLMAPCTL:-$(dirname "$HOSTD")/cli/mdlmapctl}
[ -x "$CTL" ] || { echo "mdlmapctl not found (set MDLMAPCTL)" >&2; exit 2; }
API=$T/api.sock
ctl() { "$CTL" --api "$API" "$@"; }

start_hostd --vm "name=vm1,cid=3,socket=$T/vm1.sock" --api "$API" || { fail "hostd ready"; finish; }
pass "hostd ready with the host API"

# run_case NAME BYTES OFFSET PATTERN GUEST-MARK HOST-REPLY
run_case() {
  local name=$1 bytes=$2 off=$3 pat=$4 mark=$5 reply=$6
  guest_bg "$name" --socket "$T/vm1.sock" --mem 512M -- \
    mdlmap-agent map --bytes "$bytes" --offset "$off" --pattern "$pat" \
    --post-write "$mark" --wait-for "$reply" --timeout 120
  local gpid=$GUEST_BG_PID
  if ! wait_for_line "$T/$name.log" '^POSTWRITE done' 240; then
    fail "$name: guest mapped its buffer and wrote after mapping"
    kill -TERM "$gpid" 2>/dev/null; wait "$gpid" 2>/dev/null
    return
  fi
  local line handle
  line=$(tr -d '\r' <"$T/$name.log" | grep -m1 '^MAPPED ')
  handle=$(sed -n 's/.*handle=\(0x[0-9a-f]*\).*/\1/p' <<<"$line")
  note "$name: $line"
  local padded
  padded=$(printf '0x%016x' "$handle")
  check "$name: hostd lists the mapping with $bytes bytes" \
    bash -c "'$CTL' --api '$API' list | awk -v h=$padded '\$1 == h && \$5 == $bytes { f = 1 } END { exit !f }'"
  local got
  got=$(ctl read --raw "$handle" 0 ${#mark})
  check "$name: host reads the guest's post-map write \"$mark\" (got \"$got\")" [ "$got" = "$mark" ]
  if [ "$bytes" -gt 64 ]; then
    # the rest of the buffer: the pattern, byte for byte (whole buffer hashed)
    local want have
    want=$(python3 -c "
import hashlib,sys
n=$bytes; p=b'$pat'; m=b'$mark'
buf=(p*(n//len(p)+1))[:n]; buf=m+buf[len(m):]
print(hashlib.sha256(buf).hexdigest())")
    have=$(ctl read --raw "$handle" | sha256sum | cut -d' ' -f1)
    check "$name: all $bytes bytes read through the mapping match the guest's data" [ "$want" = "$have" ]
  fi
  check "$name: host writes \"$reply\"" ctl write "$handle" 0 "$reply"
  wait "$gpid"
  local rc=$?
  check "$name: guest exits 0 (got $rc)" [ "$rc" = 0 ]
  check "$name: guest saw the host's write" log_has "$T/$name.log" "^GUEST SAW HOST WRITE: \"$reply\""
  check "$name: guest unmapped" log_has "$T/$name.log" '^UNMAPPED'
  check "$name: hostd holds no mapping and no MDL afterwards" \
    bash -c "'$CTL' --api '$API' stats | grep -q '^mappings: *0$' && '$CTL' --api '$API' stats | grep -q '^locked MDLs: *0$'"
}

run_case page 4096 0 "0123456789abcdef" "GUEST-MARK" "HOST-REPLY"
run_case edge 3 4094 "abc" "G!g" "H!h"
run_case big 67108864 0 "0123456789abcdef" "GUEST-MARK-64M" "HOST-REPLY-64M"
check "hostd still running" hostd_alive
check "hostd exits 0 on SIGTERM" stop_hostd
finish
