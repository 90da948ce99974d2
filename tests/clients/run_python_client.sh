#!/bin/bash
# Starts a hostd with a host API socket and runs the Python client against it.
# usage: run_python_client.sh HOSTD PROTO_DIR PYTHON_SCRIPT
set -u
HOSTD=$1 PROTO=$2 SCRIPT=$3
T=$(mktemp -d)
pid=""
trap '[ -z "$pid" ] || { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; rm -rf "$T"' EXIT
"$HOSTD" --vm "name=py,cid=3,socket=$T/vm.sock" --api "$T/api.sock" > "$T/hostd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$T/api.sock" ] && break; sleep 0.1; done
/usr/bin/python3 "$SCRIPT" "$PROTO" "$T" "$T/api.sock"
rc=$?
kill -TERM $pid; wait $pid; hrc=$?
[ $hrc = 0 ] || { echo "not ok - hostd exited with $hrc"; cat "$T/hostd.log"; exit 1; }
exit $rc
