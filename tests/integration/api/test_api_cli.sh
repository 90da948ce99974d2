#!/bin/bash
# Host API socket + mdlmapctl against a real hostd with no guest attached:
# exit codes (0 ok, 1 status failure, 2 usage), status names, and a malformed
# frame answered with an error then a close.   Usage: test_api_cli.sh HOSTD MDLMAPCTL
set -u
HOSTD=$1 CTL=$2
T=$(mktemp -d /tmp/mdl-api-cli.XXXXXX)
fail=0
"$HOSTD" --vm name=vm0,cid=3,socket="$T/vm0.sock" --api "$T/api.sock" >"$T/hostd.log" 2>&1 &
HPID=$!
trap 'kill $HPID 2>/dev/null; wait $HPID 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 100); do [ -S "$T/api.sock" ] && break; sleep 0.05; done
check() { # check DESC EXPECTED-RC GREP-PATTERN CMD...
  local desc=$1 want=$2 pat=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" = "$want" ] && { [ -z "$pat" ] || grep -q -- "$pat" <<<"$out"; }; then
    echo "ok - $desc"
  else
    echo "not ok - $desc (rc $rc, want $want): $out"; fail=1
  fi
}
check "socket mode 0660" 0 "660" stat -c %a "$T/api.sock"
check "list: no mappings" 0 "0 mappings" "$CTL" --api "$T/api.sock" list
check "stats" 0 "mappings: *0" "$CTL" --api "$T/api.sock" stats
check "read unknown handle" 1 "STATUS_INVALID_HANDLE" "$CTL" --api "$T/api.sock" read 0x1234 0 4
check "write unknown handle" 1 "STATUS_INVALID_HANDLE" "$CTL" --api "$T/api.sock" write 0x1234 0 hi
check "usage error" 2 "usage" "$CTL" --api "$T/api.sock" frobnicate
check "bad hex" 2 "bad hex" "$CTL" --api "$T/api.sock" write --hex 1 0 zz
check "no hostd" 1 "cannot connect" "$CTL" --api "$T/nope.sock" list
check "malformed frame: error status, then close" 0 "STATUS=-1073741811 CLOSED" python3 - "$T/api.sock" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(struct.pack('<I', 3) + b'\xff\xff\xff')
data = b''
while True:
    b = s.recv(4096)
    if not b: break
    data += b
# the reply: length, then an Envelope whose field 3 (status) is a negative varint
n = struct.unpack('<I', data[:4])[0]; p = data[4:4+n]; i = 0; status = None
while i < len(p):
    key = p[i]; i += 1
    f, wt = key >> 3, key & 7
    if wt == 0:
        v = 0; sh = 0
        while True:
            c = p[i]; i += 1; v |= (c & 0x7f) << sh; sh += 7
            if c < 0x80: break
        if f == 3: status = v - (1 << 64) if v >= 1 << 63 else v
    elif wt == 2:
        l = 0; sh = 0
        while True:
            c = p[i]; i += 1; l |= (c & 0x7f) << sh; sh += 7
            if c < 0x80: break
        i += l
    else: break
print("STATUS=%s CLOSED" % status)
PY
check "a second hostd refuses the live API socket" 1 "in use by another process" \
  timeout 10 "$HOSTD" --vm name=vm1,cid=4,socket="$T/vm1.sock" --api "$T/api.sock"
check "the first hostd still serves it" 0 "0 mappings" "$CTL" --api "$T/api.sock" list
check "hostd still running" 0 "" kill -0 $HPID
exit $fail
