#!/usr/bin/env bash
# Suite 'deploy': what an operator installs, checked as installed.
#  1. `meson install --destdir` of this build into a scratch dir: the exact
#     file list (hostd in sbin, mdlmapctl in bin, the unit, the example config
#     and the docs; no guest parts, no tests, nothing in /etc); the unit names
#     the configured prefix and passes `systemd-analyze verify`; the installed
#     hostd prints meson's project version and checks a configuration.
#  2. `dpkg-buildpackage -us -uc -b` on a copy of the source: mdlmap-host and
#     mdlmap-guest .debs, unpacked into a scratch root (dpkg -x): their file
#     lists, the installed hostd's --version against the package version, the
#     unit's verify, the maintainer scripts' systemd handling, the static
#     agent runs, and a guest program builds against the packaged libmdlmap
#     through its pkg-config file.
# systemd-analyze verify checks that ExecStart's program exists and is
# executable: the verified copy of a unit has its paths moved into the
# scratch root, nothing else changed.
# usage: test_install.sh SOURCE_DIR BUILD_DIR   (TAP on stdout)
set -uo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
scratch=$(mktemp -d /tmp/mdlmap-deploy.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
diag() { sed 's/^/# /'; }

version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -n1)
opt() { # a meson option of this build
    meson introspect --buildoptions "$build" | python3 -c \
        "import json,sys; print(next(o['value'] for o in json.load(sys.stdin) if o['name']=='$1'))"
}

# verify_unit UNIT ROOT: systemd-analyze verify on a copy whose absolute
# program paths point into ROOT
verify_unit() {
    local unit=$1 root=$2 copy
    copy=$scratch/verify/$(basename "$unit")
    mkdir -p "$scratch/verify"
    sed -E "s#^(Exec[A-Za-z]*=[-@!+:]*)(/[^ ]*)#\1$root\2#" "$unit" >"$copy"
    if systemd-analyze verify "$copy" >"$scratch/verify.log" 2>&1 && ! grep -q . "$scratch/verify.log"; then
        return 0
    fi
    diag <"$scratch/verify.log"
    return 1
}

# same_list WANT_FILE GOT_FILE: equal sorted lists, else the difference
same_list() {
    if diff <(sort "$1") <(sort "$2") >"$scratch/diff" 2>&1; then return 0; fi
    diag <"$scratch/diff"
    return 1
}

echo "# part 1: meson install --destdir of $build"
prefix=$(opt prefix)
sbindir=$prefix/$(opt sbindir) bindir=$prefix/$(opt bindir) datadir=$prefix/$(opt datadir)
sysconfdir=$(opt sysconfdir)
case "$sysconfdir" in /*) ;; *) sysconfdir=$prefix/$sysconfdir ;; esac
unitdir=$(opt systemdunitdir)
[ -n "$unitdir" ] || unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo "$prefix/lib/systemd/system")
docdir=$(opt docdir)
[ -n "$docdir" ] || docdir=$datadir/doc/mdlmap
dest=$scratch/destdir
if meson install -C "$build" --destdir "$dest" --no-rebuild >"$scratch/install.log" 2>&1; then
    ok "meson install --destdir"
else
    fail "meson install --destdir"; tail -20 "$scratch/install.log" | diag
fi
{
    echo "$sbindir/mdlmap-hostd"; echo "$bindir/mdlmapctl"; echo "$unitdir/mdlmap-hostd.service"
    echo "$docdir/README.md"; echo "$docdir/LICENSE"; echo "$docdir/examples/hostd.conf"
    echo "$docdir/examples/libvirt/README.md"; echo "$docdir/examples/libvirt/domain-example.xml"
    for d in "$src"/docs/*.md; do echo "$docdir/docs/$(basename "$d")"; done
    if [ -x "$build/hostd/cli/mdlmap-libvirt" ]; then   # built when libvirt-dev is there
        echo "$sbindir/mdlmap-libvirt"; echo "$unitdir/mdlmap-libvirt.service"
    fi
    if [ "$(opt guest)" = True ]; then
        libdir=$prefix/$(opt libdir)
        echo "$bindir/mdlmap-agent"; echo "$libdir/libmdlmap_guest.a"; echo "$libdir/pkgconfig/mdlmap_guest.pc"
        for h in mdlmap.h wdm_compat.h mdl_except.h; do echo "$prefix/$(opt includedir)/mdlmap/$h"; done
    fi
} >"$scratch/want1"
(cd "$dest" && find . -type f -o -type l | sed 's#^\.##') >"$scratch/got1"
check "installed files are exactly hostd ($sbindir), mdlmapctl, the unit ($unitdir), example config, docs" \
    same_list "$scratch/want1" "$scratch/got1"
unit=$dest$unitdir/mdlmap-hostd.service
check "the unit runs $sbindir/mdlmap-hostd --config $sysconfdir/mdlmap/hostd.conf" \
    grep -qx "ExecStart=$sbindir/mdlmap-hostd --config $sysconfdir/mdlmap/hostd.conf" "$unit"
check "the unit has a RuntimeDirectory and no hard-coded /usr/local or shell" \
    bash -c "grep -qx 'RuntimeDirectory=mdlmap' '$unit' && { [ '$prefix' = /usr/local ] || ! grep -q /usr/local '$unit'; } && ! grep -q '/bin/sh' '$unit'"
check "systemd-analyze verify passes on the installed unit" verify_unit "$unit" "$dest"
check "the unit lets restarts keep the guests (fd store, notify access, kept runtime directory)" \
    bash -c "grep -qx 'FileDescriptorStoreMax=16384' '$unit' && grep -qx 'NotifyAccess=main' '$unit' && grep -qx 'RuntimeDirectoryPreserve=restart' '$unit'"
check "the example config is not installed over $sysconfdir/mdlmap/hostd.conf" test ! -e "$dest$sysconfdir/mdlmap/hostd.conf"
got=$("$dest$sbindir/mdlmap-hostd" --version 2>&1)
check "installed mdlmap-hostd --version: '$got' (project version $version)" test "$got" = "mdlmap-hostd $version"
check "installed mdlmap-hostd --check-config accepts a VM and listens on nothing" \
    bash -c "'$dest$sbindir/mdlmap-hostd' --check-config --vm name=a,cid=3,socket=$scratch/a.sock >$scratch/cc.out 2>&1 \
             && grep -q '^vm name=a,cid=3,socket=$scratch/a.sock' $scratch/cc.out && test ! -e $scratch/a.sock"
check "installed mdlmap-hostd --check-config refuses an unusable metrics directory (exit 1)" \
    bash -c "'$dest$sbindir/mdlmap-hostd' --check-config --vm name=a,cid=3,socket=$scratch/a.sock \
             --metrics-file $scratch/no/such/m.prom >/dev/null 2>&1; test \$? = 1"

echo "# part 2: Debian packages"
pkgsrc=$scratch/pkg/mdlmap
mkdir -p "$pkgsrc"
# a copy of the source as it is (tracked and new files, no build dirs)
if git -C "$src" rev-parse >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$pkgsrc")
else
    (cd "$src" && tar --exclude='./build*' --exclude=./.git -cf - .) | (cd "$pkgsrc" && tar xf -)
fi
if (cd "$pkgsrc" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b) \
        >"$scratch/dpkg-buildpackage.log" 2>&1; then
    ok "dpkg-buildpackage -us -uc -b"
else
    fail "dpkg-buildpackage -us -uc -b"; tail -30 "$scratch/dpkg-buildpackage.log" | diag
fi
host_deb=$(ls "$scratch"/pkg/mdlmap-host_*.deb 2>/dev/null | head -n1)
guest_deb=$(ls "$scratch"/pkg/mdlmap-guest_*.deb 2>/dev/null | head -n1)
check "mdlmap-host and mdlmap-guest .debs built" test -n "$host_deb" -a -n "$guest_deb"
debver=$(dpkg-deb -f "$host_deb" Version 2>/dev/null)
check "package version $debver is the project version $version" test "$debver" = "$version"
root=$scratch/root
libvirt_deb=$(ls "$scratch"/pkg/mdlmap-libvirt_*.deb 2>/dev/null | head -n1)
check "mdlmap-libvirt .deb built" test -n "$libvirt_deb"
for d in "$host_deb" "$guest_deb" "$libvirt_deb"; do [ -n "$d" ] && dpkg -x "$d" "$root"; done
{
    echo /usr/sbin/mdlmap-hostd; echo /usr/bin/mdlmapctl; echo /lib/systemd/system/mdlmap-hostd.service
    for f in README.md LICENSE copyright changelog.gz examples/hostd.conf examples/libvirt/README.md \
             examples/libvirt/domain-example.xml; do echo "/usr/share/doc/mdlmap-host/$f"; done
    for d in "$src"/docs/*.md; do echo "/usr/share/doc/mdlmap-host/docs/$(basename "$d")"; done
    echo /usr/bin/mdlmap-agent; echo /usr/lib/x86_64-linux-gnu/libmdlmap_guest.a
    echo /usr/lib/x86_64-linux-gnu/pkgconfig/mdlmap_guest.pc
    for h in mdlmap.h wdm_compat.h mdl_except.h; do echo "/usr/include/mdlmap/$h"; done
    echo /usr/share/doc/mdlmap-guest/copyright; echo /usr/share/doc/mdlmap-guest/changelog.gz
    echo /usr/sbin/mdlmap-libvirt; echo /lib/systemd/system/mdlmap-libvirt.service
    echo /usr/share/doc/mdlmap-libvirt/copyright; echo /usr/share/doc/mdlmap-libvirt/changelog.gz
} >"$scratch/want2"
(cd "$root" && find . -type f -o -type l | sed 's#^\.##') >"$scratch/got2"
check "the packages hold exactly the expected files" same_list "$scratch/want2" "$scratch/got2"
got=$("$root/usr/sbin/mdlmap-hostd" --version 2>&1)
check "packaged mdlmap-hostd --version: '$got'" test "$got" = "mdlmap-hostd $debver"
check "packaged unit runs /usr/sbin/mdlmap-hostd --config /etc/mdlmap/hostd.conf" \
    grep -qx "ExecStart=/usr/sbin/mdlmap-hostd --config /etc/mdlmap/hostd.conf" "$root/lib/systemd/system/mdlmap-hostd.service"
check "systemd-analyze verify passes on the packaged unit" verify_unit "$root/lib/systemd/system/mdlmap-hostd.service" "$root"
check "packaged companion unit runs /usr/sbin/mdlmap-libvirt" \
    grep -q "^ExecStart=/usr/sbin/mdlmap-libvirt " "$root/lib/systemd/system/mdlmap-libvirt.service"
check "the packaged Documentation= file exists" \
    test -f "$root$(sed -n 's#^Documentation=file:##p' "$root/lib/systemd/system/mdlmap-hostd.service")"
mkdir -p "$scratch/ctl"
dpkg-deb -e "$host_deb" "$scratch/ctl" 2>/dev/null
check "mdlmap-host's postinst enables the unit (deb-systemd-helper)" grep -q "deb-systemd-helper.*mdlmap-hostd.service" "$scratch/ctl/postinst"
check "mdlmap-host depends on libprotobuf-c1" bash -c "dpkg-deb -f '$host_deb' Depends | grep -q libprotobuf-c1"
check "packaged mdlmap-agent (static) runs: --help" bash -c "'$root/usr/bin/mdlmap-agent' --help >/dev/null"
check "a guest program builds against the packaged libmdlmap (pkg-config mdlmap_guest, static)" \
    bash -c "cc -std=gnu11 -static -o '$scratch/map_buffer' '$src/guest-agent/examples/map_buffer.c' \
             \$(PKG_CONFIG_SYSROOT_DIR='$root' PKG_CONFIG_PATH='$root/usr/lib/x86_64-linux-gnu/pkgconfig' \
               pkg-config --cflags --libs --static mdlmap_guest) 2>&1 | sed 's/^/# /'; test -x '$scratch/map_buffer'"

echo "1..$n"
[ "$failed" -eq 0 ]
