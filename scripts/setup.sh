#!/bin/bash
# scripts/setup.sh - install what building, running and testing mdlmap needs,
# and fetch the Debian guest kernel into a cache. Idempotent; run as root.
#
#   scripts/setup.sh                 # packages + guest kernel
#   scripts/setup.sh --packages-only
#   scripts/setup.sh --kernel-only
#
# Environment:
#   MDLMAP_CACHE   cache root (default /var/cache/mdlmap); the kernel lands in
#                  $MDLMAP_CACHE/kernel/current/{boot,lib/modules}
#   MDLMAP_KERNEL_REFRESH=1   download the kernel packages again even if cached
#
# Fast path: when every package is installed (dpkg-query) and the kernel is
# extracted, nothing is downloaded and no apt command runs.
set -euo pipefail

CACHE=${MDLMAP_CACHE:-/var/cache/mdlmap}
KDIR=$CACHE/kernel
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  build-essential gcc clang meson ninja-build pkg-config
  protobuf-c-compiler libprotobuf-c-dev protobuf-compiler python3-protobuf
  qemu-system-x86 qemu-utils cpio busybox-static kmod xz-utils zstd gzip
  libclang-rt-14-dev valgrind
  libvirt-daemon-system libvirt-clients libxml2-utils libvirt-dev libxml2-dev
  socat procps iproute2 coreutils util-linux
  debhelper dpkg-dev systemd
)

log() { printf 'setup: %s\n' "$*"; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -q >/dev/null
    apt_updated=1
  fi
}

# True when the package lists look usable (any Packages index present).
apt_lists_present() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

has_candidate() {
  local out
  out=$(apt-cache policy "$1" 2>/dev/null || true)
  [[ "$out" == *"Candidate: "[0-9]* ]]
}

install_packages() {
  local missing=() p st
  for p in "${PACKAGES[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    case "$st" in ii*) ;; *) missing+=("$p") ;; esac
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages: all ${#PACKAGES[@]} present, nothing to install"
    return
  fi
  log "packages missing: ${missing[*]}"
  apt_lists_present || apt_update_once
  # Every name must have an install candidate; refresh the lists once if not.
  local unknown=()
  for p in "${missing[@]}"; do
    has_candidate "$p" || unknown+=("$p")
  done
  if [ ${#unknown[@]} -gt 0 ] && [ "$apt_updated" = 0 ]; then
    apt_update_once
    unknown=()
    for p in "${missing[@]}"; do
      has_candidate "$p" || unknown+=("$p")
    done
  fi
  if [ ${#unknown[@]} -gt 0 ]; then
    log "ERROR: no install candidate for: ${unknown[*]}" >&2
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  log "packages: installed ${#missing[@]}"
}

# Download a package's .deb into $KDIR unless one is cached already.
fetch_deb() {
  local name=$1 f
  f=$(compgen -G "$KDIR/${name}_*.deb" | sort -V | tail -n1 || true)
  if [ -n "$f" ] && [ "${MDLMAP_KERNEL_REFRESH:-0}" != 1 ]; then
    printf '%s\n' "$f"
    return
  fi
  apt_lists_present || apt_update_once
  (cd "$KDIR" && apt-get download -q "$name" >/dev/null 2>&1) || {
    apt_update_once
    (cd "$KDIR" && apt-get download -q "$name" >/dev/null)
  }
  log "downloaded $name" >&2
  compgen -G "$KDIR/${name}_*.deb" | sort -V | tail -n1
}

fetch_kernel() {
  mkdir -p "$KDIR"
  local meta dep depver kdeb kver root
  meta=$(fetch_deb linux-image-amd64)
  # The meta package depends on exactly one versioned image package.
  dep=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
  depver=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | sed -n 's/^ *linux-image-[0-9][^ ]* (= \([^)]*\)).*/\1/p' | head -n1)
  [ -n "$dep" ] || { log "ERROR: cannot read the image package from $meta" >&2; exit 1; }
  kver=${dep#linux-image-}
  root=$KDIR/root/$kver
  if [ -f "$root/.extracted" ] && [ "${MDLMAP_KERNEL_REFRESH:-0}" != 1 ]; then
    log "kernel: $kver ($depver) cached in $root"
  else
    kdeb=$(compgen -G "$KDIR/${dep}_${depver}_*.deb" | head -n1 || true)
    if [ -z "$kdeb" ] || [ "${MDLMAP_KERNEL_REFRESH:-0}" = 1 ]; then
      apt_lists_present || apt_update_once
      (cd "$KDIR" && apt-get download -q "$dep=$depver" >/dev/null 2>&1) || {
        apt_update_once
        (cd "$KDIR" && apt-get download -q "$dep=$depver" >/dev/null)
      }
      kdeb=$(compgen -G "$KDIR/${dep}_*.deb" | sort -V | tail -n1)
      log "downloaded $(basename "$kdeb")"
    fi
    rm -rf "$root.tmp"
    mkdir -p "$root.tmp"
    dpkg -x "$kdeb" "$root.tmp"
    rm -rf "$root"
    mv "$root.tmp" "$root"
    touch "$root/.extracted"
    log "kernel: extracted $(basename "$kdeb") into $root"
  fi
  [ -f "$root/boot/vmlinuz-$kver" ] || { log "ERROR: $root/boot/vmlinuz-$kver missing" >&2; exit 1; }
  # The .deb ships no modules.dep (its postinst runs depmod): make it here.
  if [ ! -s "$root/lib/modules/$kver/modules.dep" ]; then
    depmod -b "$root" "$kver"
    log "kernel: depmod generated lib/modules/$kver/modules.dep"
  fi
  [ -s "$root/lib/modules/$kver/modules.dep" ] || { log "ERROR: modules.dep missing" >&2; exit 1; }
  ln -sfn "root/$kver" "$KDIR/current.new" && mv -T "$KDIR/current.new" "$KDIR/current"
  printf '%s %s\n' "$kver" "$depver" > "$KDIR/VERSION.new" && mv "$KDIR/VERSION.new" "$KDIR/VERSION"
  log "kernel: $KDIR/current/boot/vmlinuz-$kver (version $depver recorded in $KDIR/VERSION)"
}

do_pkgs=1 do_kernel=1
case "${1:-}" in
  --packages-only) do_kernel=0 ;;
  --kernel-only) do_pkgs=0 ;;
  "") ;;
  -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p;}' "$0"; exit 0 ;;
  *) echo "usage: $0 [--packages-only|--kernel-only]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  log "ERROR: run as root (apt-get, $CACHE)" >&2
  exit 1
fi
[ "$do_pkgs" = 1 ] && install_packages
[ "$do_kernel" = 1 ] && fetch_kernel
log "done"
