#!/bin/bash
# The layering check must fail on the edges it exists to forbid: an upward
# include (vhost -> vsock), an include of another layer's private header
# (api -> rpc's rpc_conn.h), and pass on a clean fixture.
set -u
check=$(dirname "$0")/layering.py
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
n=0 bad=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); bad=$((bad + 1)); echo "not ok $n - $1"; }

mkdir -p "$t/hostd/vhost/include" "$t/hostd/vsock/include" "$t/hostd/rpc/include" "$t/hostd/api"
echo '#pragma once' > "$t/hostd/vhost/include/vhost_user.h"
echo '#pragma once' > "$t/hostd/vsock/include/vsock.h"
echo '#pragma once' > "$t/hostd/rpc/rpc_conn.h"
printf '#include "vhost_user.h"\n' > "$t/hostd/vsock/dev.c"
printf '#include "vhost_user.h"\n' > "$t/hostd/vhost/server.c"
out=$(python3 "$check" "$t"); rc=$?
[ $rc = 0 ] && ok "a downward include passes" || nok "a downward include passes: $out"

printf '#include "vhost_user.h"\n#include "vsock.h"\n' > "$t/hostd/vhost/server.c"
out=$(python3 "$check" "$t"); rc=$?
[ $rc = 1 ] && grep -q 'hostd/vhost/server.c:2: hostd/vhost includes vsock.h' <<<"$out" &&
    ok "an upward include (vhost -> vsock) fails and names the line" || nok "upward include not caught: $out"
printf '#include "vhost_user.h"\n' > "$t/hostd/vhost/server.c"

printf '#include "rpc_conn.h"\n' > "$t/hostd/api/handlers.c"
out=$(python3 "$check" "$t"); rc=$?
[ $rc = 1 ] && grep -q 'hostd/api/handlers.c:1: hostd/api includes rpc_conn.h of hostd/rpc (private)' <<<"$out" &&
    ok "another layer's private header fails" || nok "private header not caught: $out"

echo "$((n - bad)) passed, $bad failed"
[ $bad = 0 ]
