#!/usr/bin/env bash
# mdlmap-hostd's operator surface without a VM: --version is meson's project
# version; --help explains every long option main.c accepts (each appears in
# the text); --check-config prints the effective configuration and exits 0
# for a usable one, 1 for an unusable one (a path that cannot work), 2 for a
# syntax error, and creates no socket either way; with --api it accepts no
# VM; from --config it takes the metrics options and prints a configuration
# that reads back the same.
# usage: test_cli.sh HOSTD MAIN_C VERSION   (TAP)
set -uo pipefail
hostd=$1 main_c=$2 version=$3
tmp=$(mktemp -d /tmp/mdlmap-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0
check() { local what=$1; shift; n=$((n + 1)); if "$@"; then echo "ok $n - $what"; else failed=$((failed + 1)); echo "not ok $n - $what"; fi; }

check "--version prints 'mdlmap-hostd $version'" test "$("$hostd" --version)" = "mdlmap-hostd $version"
"$hostd" --help >"$tmp/help" 2>&1
check "--help exits 0" test $? = 0
opts=$(sed -n 's/^ *{ "\([a-z-]*\)", \(required\|no\)_argument.*/\1/p' "$main_c")
missing=""
for o in $opts; do grep -q -- "--$o\b" "$tmp/help" || missing="$missing --$o"; done
check "--help explains all $(echo $opts | wc -w) options of main.c${missing:+ (missing:$missing)}" test -z "$missing" -a -n "$opts"

vm="name=a,cid=3,socket=$tmp/a.sock"
"$hostd" --check-config --vm "$vm" --api "$tmp/api.sock" --metrics-file "$tmp/m.prom" >"$tmp/out" 2>"$tmp/err"
check "--check-config of a usable configuration exits 0" test $? = 0
check "it prints the VM, the API socket and the metrics file in config file form" \
    bash -c "grep -qx 'vm $vm' $tmp/out && grep -qx 'api $tmp/api.sock' $tmp/out && grep -qx 'metrics-file $tmp/m.prom' $tmp/out"
check "it says so on stderr" grep -q "^configuration OK" "$tmp/err"
touch "$tmp/file"
"$hostd" --check-config --vm "name=a,cid=3,socket=$tmp/file" >/dev/null 2>"$tmp/err"
check "a VM socket path that is a regular file: exit 1" test $? = 1
check "with an error: line naming it" grep -q "^error: vm socket $tmp/file" "$tmp/err"
"$hostd" --check-config --vm "$vm" --metrics-file "$tmp/none/m.prom" >/dev/null 2>&1
check "a metrics file in a missing directory: exit 1" test $? = 1
"$hostd" --check-config --vm "name=a,cid=2,socket=$tmp/a.sock" >/dev/null 2>&1
check "a reserved CID (syntax level): exit 2" test $? = 2

# With --api, no VM is a usable configuration (VMs come through VmAdd), as
# for a real start; without it, no VM is a usage error.
"$hostd" --check-config --api "$tmp/api.sock" >"$tmp/out" 2>"$tmp/err"
check "--check-config with --api and no VM: exit 0, saying there is no VM" \
    bash -c "test $? = 0 && grep -q '^#vm ' $tmp/out && ! grep -q '^vm ' $tmp/out"
"$hostd" --check-config >/dev/null 2>"$tmp/err"
check "--check-config with neither VM nor --api: exit 2, 'no VM'" bash -c "test $? = 2 && grep -q 'no VM' $tmp/err"

# --config: the metrics options come from the file, the command line wins,
# and the printed configuration is itself a config file that reads back the same.
printf '%s\n' "# a comment" "vm $vm" "metrics-file $tmp/m.prom" "metrics-interval 30" "log-level warn" >"$tmp/conf"
"$hostd" --check-config --config "$tmp/conf" --log-level debug >"$tmp/out" 2>"$tmp/err"
check "--check-config --config: exit 0" test $? = 0
check "metrics-file/metrics-interval from the file, log-level from the command line" \
    bash -c "grep -qx 'metrics-file $tmp/m.prom' $tmp/out && grep -qx 'metrics-interval 30' $tmp/out && grep -qx 'log-level debug' $tmp/out"
"$hostd" --check-config --config "$tmp/out" >"$tmp/out2" 2>"$tmp/err"
check "the printed configuration read back through --config prints the same" cmp -s "$tmp/out" "$tmp/out2"
printf '%s\n' "vm $vm" "metrics-interval 0" >"$tmp/conf"
"$hostd" --check-config --config "$tmp/conf" >/dev/null 2>"$tmp/err"
check "metrics-interval 0 in the file: exit 2 naming file and line" bash -c "test $? = 2 && grep -q '^$tmp/conf:2: --metrics-interval' $tmp/err"
printf '%s\n' "vm $vm" "check-config" >"$tmp/conf"
"$hostd" --check-config --config "$tmp/conf" >/dev/null 2>"$tmp/err"
check "check-config is refused inside a config file (exit 2)" bash -c "test $? = 2 && grep -q '$tmp/conf:2:' $tmp/err"
rm -f "$tmp/conf" "$tmp/out2"
check "no socket and no metrics file were created" bash -c "! ls $tmp | grep -qv -e '^help$' -e '^out$' -e '^err$' -e '^file$'"
echo "1..$n"
[ "$failed" -eq 0 ]
