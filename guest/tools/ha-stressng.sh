#!/bin/sh
# ha-stressng: stress-ng's memory stressors, run by ha-suite with a timeout
# and a MemFree ledger per stressor (busybox sh).
#
# Usage: ha-stressng [--dev DEV] [--secs S] [ha-suite options: --list --from N --only NAME]
#
# stress-ng is Debian's (dynamically linked): it runs by chroot into the
# Debian root file system on DEV (default /dev/vda; scripts/
# build-debian-image.sh), mounted read-only with /proc, /sys, /dev and a
# tmpfs /tmp. Each stressor runs S seconds (default 5) with one instance per
# vCPU, in /tmp, --verify where stress-ng checks data, and --oom-avoid so that it
# backs off before the OOM killer would. brk and bigheap grow until an
# allocation fails: RLIMIT_DATA (prlimit) bounds them to 256 MiB per process
# instead of the OOM killer. stress-ng's exit status 3 (no resource) and 4
# (not implemented here) are skips. Not run: the tmpfs stressor, which finds
# no tmpfs it accepts in the chroot ("cannot find writeable free space")
# and so only ever skipped.
# Exit status: ha-suite's; 3 without the disk.

dev=/dev/vda secs=5
while [ $# -gt 0 ]; do
	case $1 in
	--dev) dev=$2; shift 2 ;;
	--secs) secs=$2; shift 2 ;;
	*) break ;;
	esac
done

ROOT=/mnt/debian
TABLE=/tmp/stressng.table
mkdir -p "$ROOT"
mount -t ext4 -o ro "$dev" "$ROOT" || { echo "ha-stressng: cannot mount $dev" >&2; exit 3; }
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount -o rbind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"

n=$(nproc)
# every stressor: n instances, S seconds, temporary files on the tmpfs
opts="--timeout ${secs}s --temp-path /tmp --oom-avoid --metrics-brief"
# absolute paths: busybox's chroot would run its own env applet
sn="chroot $ROOT /usr/bin/env --chdir=/tmp /usr/bin/stress-ng $opts"
limit="chroot $ROOT /usr/bin/env --chdir=/tmp /usr/bin/prlimit --data=268435456 /usr/bin/stress-ng $opts"
t=$((secs + 90))
# name|timeout|needs|command (see ha-suite)
cat > "$TABLE" <<EOF
vm|$t||$sn --vm $n --vm-bytes 256M --verify
vm-thp|$t||$sn --vm $n --vm-bytes 256M --vm-madvise hugepage --verify
mmap|$t||$sn --mmap $n --mmap-bytes 128M
madvise|$t||$sn --madvise $n
mremap|$t||$sn --mremap $n --mremap-bytes 64M
brk|$t||$limit --brk $n
bigheap|$t||$limit --bigheap $n
fork|$t||$sn --fork $n --fork-vm
mmapfork|$t||$sn --mmapfork $n
mmapmany|$t||$sn --mmapmany $n
mmaphuge|$t|huge|$sn --mmaphuge $n
malloc|$t||$sn --malloc $n --malloc-touch
shm-sysv|$t||$sn --shm-sysv $n
memfd|$t||$sn --memfd $n --memfd-bytes 64M
pagemove|$t||$sn --pagemove $n
numa|$t|numa2|$sn --numa $n
userfaultfd|$t|CONFIG_USERFAULTFD|$sn --userfaultfd $n
EOF
ha-suite --table "$TABLE" --skip-rc "3 4" "$@"
status=$?
umount "$ROOT/tmp"
umount -l "$ROOT/dev"
umount "$ROOT/sys" "$ROOT/proc"
umount "$ROOT"
exit $status
