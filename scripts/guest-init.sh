#!/bin/sh
# /init of the mdlmap test initramfs (busybox sh). Installed by mkinitramfs.sh.
#
# 1. mounts proc, sys, devtmpfs, tmpfs /tmp
# 2. insmods the modules listed in /etc/mdlmap/modules, in order
# 3. runs /mdlmap/cmd (a shell-quoted command line written by run-guest.sh),
#    as root with cwd /, and PATH including /bin where the guest binaries live
# 4. prints "MDLMAP-EXIT: <status> boot=<k>" on the console
# 5. powers off; with mdlmap.boots=N on the kernel command line and a state
#    disk (/dev/vda) it reboots until the N-th boot (boot k sees MDLMAP_BOOT=k)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /tmp /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
exec </dev/console >/dev/console 2>&1

read -r up _ </proc/uptime
echo "MDLMAP-INIT: init started at uptime ${up}s"

while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/lib/mdlmap-modules/$mod" || echo "MDLMAP-INIT: insmod $mod failed"
done </etc/mdlmap/modules

boots=1
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    mdlmap.boots=*) boots=${arg#mdlmap.boots=} ;;
  esac
done

boot=1
if [ "$boots" -gt 1 ] 2>/dev/null; then
  # The boot counter lives on a small raw disk that survives the reboot.
  i=0
  while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -b /dev/vda ]; then
    n=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -dc '0-9' | head -c 9)
    boot=$(( ${n:-0} + 1 ))
    printf '%-511s\n' "$boot" | dd of=/dev/vda bs=512 count=1 conv=notrunc,fsync 2>/dev/null
  else
    echo "MDLMAP-INIT: mdlmap.boots=$boots but no state disk /dev/vda"
    boots=1
  fi
fi
export MDLMAP_BOOT=$boot

read -r up _ </proc/uptime
echo "MDLMAP-INIT: boot $boot/$boots, running command at uptime ${up}s"
cd /
if [ -f /mdlmap/cmd ]; then
  sh /mdlmap/cmd
  rc=$?
else
  echo "MDLMAP-INIT: no /mdlmap/cmd"
  rc=127
fi
read -r up _ </proc/uptime
printf '\nMDLMAP-EXIT: %s boot=%s uptime=%s\n' "$rc" "$boot" "$up"

if [ "$boot" -lt "$boots" ]; then
  reboot -f
else
  poweroff -f
fi
# Never let PID 1 exit (that panics).
while :; do sleep 3600; done
