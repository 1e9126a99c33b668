#!/bin/sh
# ha-ledger: the MemFree ledger of the guest suites (busybox sh).
#
# Usage: ha-ledger settle [MAX_SECONDS]
#
# Syncs, drops the page cache and the reclaimable slab caches, and waits
# until the free memory is stable (two readings half a second apart within
# STABLE_KIB), at most 2 x MAX_SECONDS (default 10) readings. Prints the last
# reading in KiB. A suite takes one reading before and one after each test;
# the difference is what the test left allocated once the kernel has had
# the chance to give back what it frees lazily (RCU callbacks, THP deferred
# splits, khugepaged).
#
# Free memory = MemFree + the pages on the per-CPU free lists (the "count"
# of every pageset in /proc/zoneinfo). The buddy allocator keeps up to
# pcp->high pages per CPU and zone there (about 40 MiB each in a 1 GiB
# zone), outside MemFree, and how many depends on what was freed last: a
# freed huge page goes there whole. llfree has no such lists (count 0).
#
# Before each reading: ha-drain empties the per-CPU LRU batches (a page
# freed by its last user stays allocated while such a batch holds it: a
# THP there is 2 MiB that look lost), and vm.stat_refresh folds the
# per-CPU differences of the counters into the global MemFree.

STABLE_KIB=256

# Prints MemFree + the per-CPU free lists in KiB.
mem_free() {
	pcp=$(awk '$1 == "count:" { n += $2 } END { print n + 0 }' /proc/zoneinfo)
	while read -r key value _; do
		if [ "$key" = MemFree: ]; then
			echo $((value + pcp * 4))
			return
		fi
	done < /proc/meminfo
}

# Drops caches and flushes what per-CPU state holds back; see the header.
flush() {
	echo 3 > /proc/sys/vm/drop_caches
	ha-drain
	echo 1 > /proc/sys/vm/stat_refresh
}

settle() {
	tries=$((${1:-10} * 2))
	sync
	flush
	prev=$(mem_free)
	while [ "$tries" -gt 0 ]; do
		sleep 0.5
		flush
		cur=$(mem_free)
		diff=$((cur - prev))
		[ "$diff" -lt 0 ] && diff=$((-diff))
		[ "$diff" -le "$STABLE_KIB" ] && break
		prev=$cur
		tries=$((tries - 1))
	done
	echo "$cur"
}

case ${1:-} in
settle) settle "${2:-10}" ;;
*) echo "usage: ha-ledger settle [MAX_SECONDS]" >&2; exit 2 ;;
esac
