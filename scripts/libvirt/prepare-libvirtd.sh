#!/bin/bash
# scripts/libvirt/prepare-libvirtd.sh - make libvirtd (9.x, Debian) usable for
# mdlmap on a host without systemd. Run as root. Idempotent.
#
#   prepare-libvirtd.sh --user            only create the QEMU user/group
#   prepare-libvirtd.sh --private DIR     start a private libvirtd + virtlogd
#   prepare-libvirtd.sh --stop DIR        stop the private instance in DIR
#   prepare-libvirtd.sh --system          start the host's virtlogd + libvirtd
#                                         (plain `-d` daemons) if not running
#
# Every mode first makes sure user libvirt-qemu and group libvirt-qemu exist
# (libvirt-daemon-system's postinst normally creates them; minimal images and
# containers sometimes lack them and libvirtd then refuses to start QEMU).
#
# --private DIR runs virtlogd and libvirtd as root in their own mount
# namespace where /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt are bind mounts of DIR/{etc,run,
# lib,log,cache}; a system libvirtd (if any) is neither seen nor disturbed.
# DIR/etc is a copy of /etc/libvirt without autostarted networks, and its
# qemu.conf runs QEMU as libvirt-qemu:libvirt-qemu with no cgroups, no
# per-VM /dev namespace and no SELinux/AppArmor driver (DAC only), which is
# what works in containers and CI. Prints the connection URI on stdout:
#   qemu:///system?socket=DIR/run/libvirt-sock
# Logs: DIR/log/libvirtd.log, DIR/log/virtlogd.log, DIR/log/qemu/NAME.log.
# Exit: 0 ok, 1 failure, 77 environment cannot run it (not root, libvirt
# not installed, mount namespaces not permitted).
set -uo pipefail

QUSER=libvirt-qemu
QGROUP=libvirt-qemu

die() { echo "prepare-libvirtd: $*" >&2; exit 1; }
skip() { echo "prepare-libvirtd: SKIP: $*" >&2; exit 77; }

ensure_user() {
  if ! getent group "$QGROUP" >/dev/null; then
    groupadd --system "$QGROUP" || die "groupadd $QGROUP failed"
    echo "prepare-libvirtd: created group $QGROUP" >&2
  fi
  if ! getent passwd "$QUSER" >/dev/null; then
    useradd --system --gid "$QGROUP" --home-dir /var/lib/libvirt \
      --no-create-home --shell /usr/sbin/nologin --comment "Libvirt Qemu" "$QUSER" \
      || die "useradd $QUSER failed"
    echo "prepare-libvirtd: created user $QUSER" >&2
  fi
  # Debian's user has primary group kvm; QEMU runs with group libvirt-qemu
  # (qemu.conf below), keep the user in it too.
  id -nG "$QUSER" | tr ' ' '\n' | grep -qx "$QGROUP" || usermod -a -G "$QGROUP" "$QUSER" || true
}

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -s "$1" ] && tr -dc '0-9' < "$1"; }

# wait_sock PATH PID SECS
wait_sock() {
  local i=0
  while [ $i -lt $(($3 * 10)) ]; do
    [ -S "$1" ] && return 0
    pid_alive "$2" || return 1
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# stop_pidfile FILE NAME: SIGTERM the pid in FILE (only if it is NAME), wait, SIGKILL.
stop_pidfile() {
  local p i=0
  p=$(pid_of "$1") || return 0
  [ -n "$p" ] || return 0
  pid_alive "$p" || return 0
  grep -qa "$2" "/proc/$p/cmdline" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null
  while pid_alive "$p" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  pid_alive "$p" && kill -KILL "$p" 2>/dev/null
  return 0
}

start_private() {
  local D=$1 m
  mkdir -p "$D" && D=$(cd "$D" && pwd) || die "cannot create $D"
  local SOCK=$D/run/libvirt-sock
  if pid_alive "$(pid_of "$D/libvirtd.pid")" && [ -S "$SOCK" ]; then
    echo "qemu:///system?socket=$SOCK"
    return 0
  fi
  mkdir -p "$D"/{etc,run,lib,log,cache} || die "cannot populate $D"
  if [ ! -f "$D/etc/qemu.conf.mdlmap" ]; then
    cp -a /etc/libvirt/. "$D/etc/" || die "cannot copy /etc/libvirt"
    rm -f "$D"/etc/qemu/networks/autostart/* "$D"/etc/storage/autostart/* 2>/dev/null
    cat >> "$D/etc/qemu.conf" <<EOF

# ---- mdlmap private instance (scripts/libvirt/prepare-libvirtd.sh) ----
user = "$QUSER"
group = "$QGROUP"
dynamic_ownership = 1
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
    cat >> "$D/etc/libvirtd.conf" <<EOF

# ---- mdlmap private instance ----
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    cat >> "$D/etc/virtlogd.conf" <<EOF

# ---- mdlmap private instance ----
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
EOF
    touch "$D/etc/qemu.conf.mdlmap"
  fi
  # Mount points for the bind mounts (empty dirs; created as the package would).
  for m in /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
    mkdir -p "$m" || die "cannot create mount point $m"
  done
  unshare --mount --propagation private true 2>/dev/null \
    || skip "mount namespaces are not permitted here (unshare --mount failed)"
  # The daemons daemonize and keep the namespace alive after the shell exits.
  unshare --mount --propagation private /bin/bash -c '
    set -e
    D=$1
    mount --bind "$D/etc" /etc/libvirt
    mount --bind "$D/run" /run/libvirt
    mount --bind "$D/lib" /var/lib/libvirt
    mount --bind "$D/log" /var/log/libvirt
    mount --bind "$D/cache" /var/cache/libvirt
    virtlogd --daemon --pid-file "$D/virtlogd.pid"
    i=0; while [ ! -S /run/libvirt/virtlogd-sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    libvirtd --daemon --pid-file "$D/libvirtd.pid"
  ' mdlmap-libvirtd "$D" >"$D/start.log" 2>&1 || { cat "$D/start.log" >&2; die "starting the private daemons failed"; }
  local i=0
  while [ ! -s "$D/libvirtd.pid" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if ! wait_sock "$SOCK" "$(pid_of "$D/libvirtd.pid")" 30; then
    tail -n 20 "$D/log/libvirtd.log" >&2 2>/dev/null
    die "private libvirtd did not come up (socket $SOCK)"
  fi
  # The socket exists before the drivers are initialised; wait until the
  # daemon answers.
  i=0
  until virsh -q -c "qemu:///system?socket=$SOCK" version >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 60 ] || { tail -n 20 "$D/log/libvirtd.log" >&2 2>/dev/null; die "private libvirtd does not answer"; }
    sleep 0.5
  done
  echo "qemu:///system?socket=$SOCK"
}

stop_private() {
  local D=$1
  [ -d "$D" ] || return 0
  stop_pidfile "$D/libvirtd.pid" libvirtd
  stop_pidfile "$D/virtlogd.pid" virtlogd
}

start_system() {
  if ! pgrep -x virtlogd >/dev/null; then
    virtlogd --daemon || die "virtlogd failed to start"
  fi
  if ! pgrep -x libvirtd >/dev/null; then
    libvirtd --daemon || die "libvirtd failed to start"
  fi
  local i=0
  until virsh -q -c qemu:///system version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 60 ] || die "libvirtd does not answer on qemu:///system"; sleep 0.5
  done
  echo "qemu:///system"
}

[ "$(id -u)" = 0 ] || skip "must run as root"
for b in libvirtd virtlogd virsh; do
  command -v "$b" >/dev/null || skip "$b not installed (apt-get install libvirt-daemon-system libvirt-clients)"
done

case "${1:-}" in
  --user) ensure_user ;;
  --private) [ -n "${2:-}" ] || die "--private needs DIR"; ensure_user; start_private "$2" ;;
  --stop) [ -n "${2:-}" ] || die "--stop needs DIR"; stop_private "$2" ;;
  --system) ensure_user; start_system ;;
  -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p;}' "$0" ;;
  *) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p;}' "$0" >&2; exit 2 ;;
esac
