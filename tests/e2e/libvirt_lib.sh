# shellcheck shell=bash
# Common part of the libvirt e2e tests (sourced after lib.sh): a private
# libvirtd (scripts/libvirt/prepare-libvirtd.sh --private $LV), the guest
# kernel copy, per-domain initramfs and the TCG direct-kernel-boot parts of
# a domain's XML. The test sets lv_finish (its finish with libvirt's logs).
PREP=$TOP/scripts/libvirt/prepare-libvirtd.sh
CACHE=${MDLMAP_CACHE:-/var/cache/mdlmap}
LV=$T/libvirt
URI=""

virsh_() { virsh -q -c "$URI" "$@"; }

# lv_setup: root or skip (77); $T traversable by QEMU (libvirt-qemu); a
# private copy of the kernel (libvirt's DAC driver chowns kernel and initrd
# while a domain runs: the shared cache must not be touched); the private
# libvirtd, URI set (77 when libvirt cannot run here).
lv_setup() {
  local kroot kver prc t0
  if [ "$(id -u)" != 0 ]; then
    echo "SKIP: needs root (libvirtd runs as root, QEMU as libvirt-qemu)" >&2
    exit 77
  fi
  chmod 0711 "$T"
  kroot=$(readlink -f "$CACHE/kernel/current")
  kver=$(ls "$kroot/lib/modules" | head -n1)
  install -m 0644 "$kroot/boot/vmlinuz-$kver" "$T/vmlinuz"
  t0=$(date +%s)
  URI=$("$PREP" --private "$LV" 2>"$T/prepare.log")
  prc=$?
  if [ "$prc" = 77 ]; then
    cat "$T/prepare.log" >&2
    exit 77
  fi
  if [ "$prc" != 0 ] || [ -z "$URI" ]; then
    fail "private libvirtd starts (prepare-libvirtd.sh exit $prc)"
    sed 's/^/#   /' "$T/prepare.log"
    lv_finish
  fi
  pass "private libvirtd + virtlogd answer on $URI ($(( $(date +%s) - t0 ))s)"
}

# lv_stop: the private daemons go (cleanup).
lv_stop() { [ ! -d "$LV" ] || "$PREP" --stop "$LV" >/dev/null 2>&1; }

# initrd NAME CMD...: per-domain initramfs whose /init runs CMD.
initrd() {
  local name=$1 w sep=""
  shift
  for w in "$@"; do printf "%s'%s'" "$sep" "${w//\'/\'\\\'\'}"; sep=" "; done > "$T/$name.cmd"
  echo >> "$T/$name.cmd"
  "$TOP/scripts/mkinitramfs.sh" -o "$T/$name.initrd" --agent "$AGENT" \
    --add "$T/$name.cmd:/mdlmap/cmd" 2>>"$T/mkinitramfs.log"
}

# lv_os NAME: q35, direct kernel boot of $T/vmlinuz and $T/NAME.initrd; the
# domain goes away when the guest powers off, reboots or crashes.
lv_os() {
  cat <<EOX
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$T/vmlinuz</kernel>
    <initrd>$T/$1.initrd</initrd>
    <cmdline>console=ttyS0 loglevel=4 panic=-1 rdinit=/init mdlmap.boots=1</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
EOX
}

# lv_devices NAME: serial console to $T/NAME.console.log, no USB, no balloon.
lv_devices() {
  cat <<EOX
    <serial type='file'>
      <source path='$T/$1.console.log'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
EOX
}
