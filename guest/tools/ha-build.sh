#!/bin/sh
# ha-build: the phased build-like workload of bench/autoreclaim.py and
# bench/multivm.py (busybox sh).
#
# Usage: ha-build [--dev DEV] [--delay S] [--build S] [--idle S] [--drop S]
#                 [--tail S] [--] [ha-mem build options]
#
# Mounts DEV (default /dev/vda, ext4 with the "sources" in src/) on /mnt,
# prints a memory sample about once a second and runs the phases
#
#   delay  nothing (staggered starts of several VMs)
#   build  ha-mem build --src /mnt/src --out /mnt/obj --duration S [options]
#   idle   nothing: the build's page cache stays, its processes are gone
#   drop   sync, drop the page and slab caches, then nothing
#   tail   nothing (so that staggered VMs end together)
#
# Console lines:
#   @@PHASE <name> <uptime>       a phase starts; "end" closes the last one
#   @@MEM <uptime> <MemTotal> <MemFree> <MemAvailable> <Buffers> <Cached> <AnonPages>
#                                 (KiB, from /proc/meminfo)
#   @@INSTALLS <phase> <requests> <wait us>
#                                 after each @@PHASE, llfree kernel only: its
#                                 install counters (/proc/llfree) so far
# Exit status: that of ha-mem build (0 ok, 1 integrity error), 2 usage, 3 no disk.

dev=/dev/vda delay=0 build=60 idle=30 drop=30 tail=0
while [ $# -gt 0 ]; do
	case $1 in
	--dev) dev=$2; shift 2 ;;
	--delay) delay=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--idle) idle=$2; shift 2 ;;
	--drop) drop=$2; shift 2 ;;
	--tail) tail=$2; shift 2 ;;
	--) shift; break ;;
	--*=*|-h|--help) echo "ha-build: see the header of guest/tools/ha-build.sh" >&2; exit 2 ;;
	*) break ;;
	esac
done

# Prints one @@MEM line (read builtins only: no process per sample).
sample() {
	while read -r key value _; do
		case $key in
		MemTotal:) total=$value ;;
		MemFree:) free=$value ;;
		MemAvailable:) avail=$value ;;
		Buffers:) buffers=$value ;;
		Cached:) cached=$value ;;
		AnonPages:) anon=$value ;;
		esac
	done < /proc/meminfo
	read -r up _ < /proc/uptime
	echo "@@MEM $up $total $free $avail $buffers $cached $anon"
}

# Prints the llfree kernel's install counters (none on other kernels).
installs() {
	n=
	[ -r /proc/llfree ] || return 0
	while read -r key value; do
		case $key in
		llfree_install) n=$value ;;
		llfree_install_wait_us) us=$value ;;
		esac
	done < /proc/llfree
	[ -z "$n" ] || echo "@@INSTALLS $1 $n $us"
}

phase() {
	read -r up _ < /proc/uptime
	echo "@@PHASE $1 $up"
	installs "$1"
}

mkdir -p /mnt
mount -t ext4 "$dev" /mnt || { echo "ha-build: cannot mount $dev" >&2; exit 3; }
(while :; do sample; sleep 1; done) &
sampler=$!

phase start
[ "$delay" = 0 ] || { phase delay; sleep "$delay"; }
phase build
ha-mem build --src /mnt/src --out /mnt/obj --duration "$build" --progress 30 "$@"
status=$?
phase idle
sleep "$idle"
phase drop
sync
echo 3 > /proc/sys/vm/drop_caches
sleep "$drop"
[ "$tail" = 0 ] || { phase tail; sleep "$tail"; }
phase end
sleep 1.5
kill "$sampler"
umount /mnt
exit $status
