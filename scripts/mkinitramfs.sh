#!/bin/bash
# scripts/mkinitramfs.sh - build the mdlmap test initramfs (cpio newc, gzip).
#
#   scripts/mkinitramfs.sh -o OUT.cpio.gz [--kernel-root DIR] [--agent PATH]
#                         [--add SRC[:DEST]]... [--print-base]
#
# OUT is two concatenated gzip'd cpio archives (the kernel unpacks both):
#   base    busybox-static + applet links, the virtio/vsock modules (paths and
#           dependencies resolved from the kernel's modules.dep, decompressed
#           if .ko.xz/.ko.zst/.ko.gz), /init (scripts/guest-init.sh).
#           Cached in $MDLMAP_CACHE/initramfs/, keyed on a hash of its inputs.
#   overlay the per-run files: --agent (as /bin/mdlmap-agent) and every --add
#           SRC[:DEST] (DEST defaults to /bin/NAME; DEST ending in / is a dir).
#
# --kernel-root defaults to $MDLMAP_CACHE/kernel/current (made by setup.sh).
# The command to run is a file /mdlmap/cmd, which run-guest.sh adds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MDLMAP_CACHE:-/var/cache/mdlmap}
KROOT=$CACHE/kernel/current
OUT=""
AGENT=""
ADDS=()
PRINT_BASE=0

# Load order matters: each module's dependencies come first anyway (from
# modules.dep), this list only fixes the order among the ones we want.
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
         vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
         vsock_loopback virtio_blk virtio_console)

die() { echo "mkinitramfs: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    -o|--out) OUT=$2; shift 2 ;;
    --kernel-root) KROOT=$2; shift 2 ;;
    --agent) AGENT=$2; shift 2 ;;
    --add) ADDS+=("$2"); shift 2 ;;
    --print-base) PRINT_BASE=1; shift ;;
    -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p;}' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -n "$OUT" ] || [ "$PRINT_BASE" = 1 ] || die "need -o OUT"

KROOT=$(readlink -f "$KROOT")
KVER=$(ls "$KROOT/lib/modules" 2>/dev/null | head -n1)
[ -n "$KVER" ] || die "no kernel in $KROOT (run scripts/setup.sh)"
MODDIR=$KROOT/lib/modules/$KVER
[ -s "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing (run scripts/setup.sh)"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || BUSYBOX=$(command -v busybox || true)
[ -x "$BUSYBOX" ] || die "busybox not found (apt-get install busybox-static)"
case "$(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true)" in
  *"not a dynamic"*|*"statically linked"*) ;;
  *) die "$BUSYBOX is not static (apt-get install busybox-static)" ;;
esac

# Resolve MODULES (and their dependencies) to ordered relative paths.
resolve_modules() {
  awk -v want="${MODULES[*]}" '
    function base(p,  b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b); return b }
    {
      key = $1; sub(/:$/, "", key)
      name = base(key); path[name] = key; deps[name] = ""
      for (i = NF; i >= 2; i--) deps[name] = deps[name] " " base($i)
    }
    function add(n,  k, arr, cnt) {
      if (n in done) return
      if (!(n in path)) { print "MISSING " n; done[n] = 1; return }
      cnt = split(deps[n], arr, " ")
      for (k = 1; k <= cnt; k++) add(arr[k])
      done[n] = 1; print path[n]
    }
    END { cnt = split(want, w, " "); for (j = 1; j <= cnt; j++) add(w[j]) }
  ' "$MODDIR/modules.dep"
}
MODPATHS=$(resolve_modules)
if grep -q '^MISSING' <<<"$MODPATHS"; then
  die "modules not in $MODDIR/modules.dep: $(grep '^MISSING' <<<"$MODPATHS" | tr '\n' ' ')"
fi

# Cache key: everything that goes into the base archive.
key=$( {
  echo "v1 $KVER"
  sha256sum "$HERE/guest-init.sh" "$BUSYBOX" | cut -d' ' -f1
  while read -r p; do echo "$p"; sha256sum "$MODDIR/$p" | cut -d' ' -f1; done <<<"$MODPATHS"
} | sha256sum | cut -c1-16)

BASEDIR=$CACHE/initramfs
mkdir -p "$BASEDIR" 2>/dev/null && [ -w "$BASEDIR" ] || BASEDIR=${XDG_CACHE_HOME:-$HOME/.cache}/mdlmap/initramfs
mkdir -p "$BASEDIR"
BASE=$BASEDIR/base-$KVER-$key.cpio.gz

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mdlmap-initramfs.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

pack() { # pack DIR OUT: cpio newc, all files owned by root, gzip
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -6 -n > "$2"
}

if [ ! -s "$BASE" ]; then
  R=$TMP/base
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc/mdlmap,lib/mdlmap-modules,mdlmap}
  cp "$BUSYBOX" "$R/bin/busybox"
  for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"
  done
  # Devices the kernel wants before /init mounts devtmpfs (needs root).
  mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || true
  mknod -m 666 "$R/dev/null" c 1 3 2>/dev/null || true
  i=0
  : > "$R/etc/mdlmap/modules"
  while read -r p; do
    i=$((i + 1))
    name=$(printf '%02d-%s' "$i" "$(basename "$p")")
    case "$p" in
      *.ko.xz) xz -dc "$MODDIR/$p" > "$R/lib/mdlmap-modules/${name%.xz}"; name=${name%.xz} ;;
      *.ko.zst) zstd -qdc "$MODDIR/$p" > "$R/lib/mdlmap-modules/${name%.zst}"; name=${name%.zst} ;;
      *.ko.gz) gzip -dc "$MODDIR/$p" > "$R/lib/mdlmap-modules/${name%.gz}"; name=${name%.gz} ;;
      *) cp "$MODDIR/$p" "$R/lib/mdlmap-modules/$name" ;;
    esac
    echo "$name" >> "$R/etc/mdlmap/modules"
  done <<<"$MODPATHS"
  install -m 755 "$HERE/guest-init.sh" "$R/init"
  pack "$R" "$TMP/base.cpio.gz"
  mv "$TMP/base.cpio.gz" "$BASE"
  echo "mkinitramfs: built base $BASE ($(du -h "$BASE" | cut -f1), $i modules, kernel $KVER)" >&2
fi

if [ "$PRINT_BASE" = 1 ]; then
  echo "$BASE"
  [ -n "$OUT" ] || exit 0
fi

# Per-run overlay.
O=$TMP/overlay
mkdir -p "$O/bin" "$O/mdlmap"
if [ -n "$AGENT" ]; then
  [ -f "$AGENT" ] || die "agent not found: $AGENT"
  install -m 755 "$AGENT" "$O/bin/mdlmap-agent"
fi
for spec in "${ADDS[@]+"${ADDS[@]}"}"; do
  src=${spec%%:*}
  if [ "$src" = "$spec" ]; then dest=/bin/$(basename "$src"); else dest=${spec#*:}; fi
  case "$dest" in */) dest=$dest$(basename "$src") ;; esac
  case "$dest" in /*) ;; *) dest=/$dest ;; esac
  [ -e "$src" ] || die "--add: $src not found"
  mkdir -p "$O$(dirname "$dest")"
  cp -a "$src" "$O$dest"
done
pack "$O" "$TMP/overlay.cpio.gz"
cat "$BASE" "$TMP/overlay.cpio.gz" > "$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
