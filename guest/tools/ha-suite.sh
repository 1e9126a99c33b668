#!/bin/sh
# ha-suite: the runner of the guest suites (busybox sh): runs a table of
# tests, each with a timeout and a MemFree ledger, and reports them on the
# console for tests/guest/suites.py. guest/tools/ha-vmtests.sh (Linux's mm
# selftests) and ha-stressng.sh (stress-ng stressors) write the tables.
#
# Usage: ha-suite --table FILE [--skip-rc "RC..."] [--list] [--from N]
#                 [--only NAME] [--full] [--scale F]
#
#   --table F    one test per line: name|timeout|needs|command
#                  timeout  seconds (under TCG) before the test is killed
#                  needs    comma-separated, each one of
#                    huge      huge pages reserved (2 x 2 MiB per CPU rounded up
#                              to 128 MiB, twice: run_vmtests.sh's amount) and
#                              hugetlbfs mounted on ./huge
#                    shm       shmmax/shmall raised (run_vmtests.sh)
#                    overcommit  vm.overcommit_memory=1 (a mapping larger
#                              than the small guest's RAM that it never touches)
#                    numa2     two NUMA nodes
#                    la57      5-level paging (kernel and CPU)
#                    CONFIG_X  the kernel has CONFIG_X=y (/proc/config.gz)
#                    swap      swap on (--swap DEV) for the test
#                    count     the exit status counts failures: no status is a skip
#                    runfor    runs until killed: the timeout is a pass
#                    full      only with --full
#                    skip:R    cannot run here; R says why (last in the list)
#                  command  a word list (no quotes), run in a fresh ./ under /tmp
#   --skip-rc L  exit statuses that mean "skipped" (default 4, kselftest's)
#   --swap DEV   a block device for the tests that need swap (mkswap at start)
#   --list       print the tests (index and name) and exit
#   --from N     start at test N (the host resumes after a guest that hung)
#   --only N     run only the test named N
#   --full       also the tests marked full
#   --scale F    multiply every timeout by F (integer; a debug kernel)
#
# Per test, on the console:
#   @@TEST-BEGIN <n> <name> timeout=<s>
#   <the test's output>
#   @@TEST-END <n> <name> <PASS|FAIL|SKIP|TIMEOUT> rc=<rc> secs=<s> before=<KiB> after=<KiB> <note>
# and @@TEST-DONE at the end. before/after are `ha-ledger settle` readings of
# MemFree with no huge pages reserved and the knobs below restored; "-" for a
# test skipped before it ran. TIMEOUT: the runner killed it. After each test
# its leftover processes are killed, its mounts undone, the knobs restored.

WORK=/tmp/suite-work
table='' skip_rc=4 from=0 only='' full=0 scale=1 list=0 swap=''
while [ $# -gt 0 ]; do
	case $1 in
	--table) table=$2; shift 2 ;;
	--skip-rc) skip_rc=$2; shift 2 ;;
	--swap) swap=$2; shift 2 ;;
	--list) list=1; shift ;;
	--from) from=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	--full) full=1; shift ;;
	--scale) scale=$2; shift 2 ;;
	*) echo "ha-suite: see the header of guest/tools/ha-suite.sh" >&2; exit 2 ;;
	esac
done
[ -f "$table" ] || { echo "ha-suite: no table" >&2; exit 2; }

ncpus=$(nproc)
hpage_mb=2
# run_vmtests.sh: userfaultfd's hugetlb tests take nr_cpus huge pages per
# half, rounded up to 128 MiB; the simple tests need 256 MiB
half_ufd_mb=$(( (ncpus * hpage_mb + 127) / 128 * 128 ))
need_hpages=$(( half_ufd_mb * 2 / hpage_mb ))

# Prints why a test cannot run here, or nothing.
missing() {
	case ,$1, in *,skip:*)
		echo "${1#*skip:}"
		return ;;
	esac
	case ,$1, in *,full,*) [ "$full" = 1 ] || echo "long test, only with --full" ;; esac
	for need in $(echo "$1" | tr , ' '); do
		case $need in CONFIG_*)
			zcat /proc/config.gz 2>/dev/null | grep -qx "$need=y" ||
				echo "$need is not set" ;;
		esac
	done
	case ,$1, in *,swap,*) [ -n "$swap" ] || echo "needs swap (no swap disk)" ;; esac
	case ,$1, in *,numa2,*) [ -d /sys/devices/system/node/node1 ] ||
		echo "needs two NUMA nodes" ;; esac
	case ,$1, in *,la57,*)
		levels=$(zcat /proc/config.gz 2>/dev/null | sed -n 's/^CONFIG_PGTABLE_LEVELS=//p')
		if [ "${levels:-4}" -lt 5 ]; then
			echo "PGTABLE_LEVELS=${levels:-?}, needs 5-level paging"
		elif ! grep -q '^flags.* la57' /proc/cpuinfo; then
			echo "the CPU has no la57 (5-level paging)"
		fi ;;
	esac
}

# The knobs a test may change; restored after each test.
KNOBS="/sys/kernel/mm/transparent_hugepage/enabled
/sys/kernel/mm/transparent_hugepage/defrag
/sys/kernel/mm/transparent_hugepage/shmem_enabled
/sys/kernel/mm/transparent_hugepage/use_zero_page
/sys/kernel/mm/transparent_hugepage/khugepaged/defrag
/sys/kernel/mm/transparent_hugepage/khugepaged/alloc_sleep_millisecs
/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs
/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none
/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_swap
/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_shared
/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan
/sys/kernel/mm/ksm/run
/sys/kernel/mm/ksm/merge_across_nodes
/sys/kernel/mm/ksm/use_zero_pages
/proc/sys/kernel/shmmax
/proc/sys/kernel/shmall
/proc/sys/vm/overcommit_memory
/proc/sys/vm/nr_hugepages"

# Prints "path value" per knob; a [bracketed] choice is the value.
save_knobs() {
	for f in $KNOBS; do
		[ -e "$f" ] || continue
		read -r v < "$f" || continue
		case $v in *\[*) v=${v#*\[}; v=${v%%\]*} ;; esac
		echo "$f $v"
	done
}

restore_knobs() {
	echo "$1" | while read -r f v; do
		[ -n "$f" ] || continue
		read -r now < "$f"
		case $now in *\[*) now=${now#*\[}; now=${now%%\]*} ;; esac
		[ "$now" = "$v" ] || echo "$v" > "$f" 2>/dev/null ||
			echo "ha-suite: cannot restore $f to $v"
	done
}

# Reserves n huge pages (run_vmtests.sh: drop caches, two tries); prints
# the free huge pages.
reserve_hpages() {
	tries=2
	free=0
	while [ "$tries" -gt 0 ]; do
		echo 3 > /proc/sys/vm/drop_caches
		echo "$1" > /proc/sys/vm/nr_hugepages
		free=$(sed -n 's/^HugePages_Free: *//p' /proc/meminfo)
		[ "$free" -ge "$1" ] && break
		tries=$((tries - 1))
	done
	echo "$free"
}

# Kills every user process that was not there before the test and waits
# (up to 10 s) until each has exited: its memory is freed on the way out,
# and the ledger must not read before that.
kill_leftovers() {
	killed=
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		case " $1 " in *" $p "*) continue ;; esac
		[ "$p" = "$$" ] && continue
		read -r _ comm _ ppid _ < "$d/stat" 2>/dev/null || continue
		# kernel threads: kthreadd (2) and its children
		[ "$p" = 2 ] || [ "$ppid" = 2 ] && continue
		kill -9 "$p" 2>/dev/null || continue
		killed="$killed $p"
		# busybox timeout's watcher ends by itself within a second
		[ "$comm" = "(timeout)" ] || echo "ha-suite: killed leftover process $p $comm"
	done
	tries=20
	while [ -n "$killed" ] && [ "$tries" -gt 0 ]; do
		alive=
		for p in $killed; do
			# gone, or a zombie (its memory is already freed)
			read -r _ _ state _ < "/proc/$p/stat" 2>/dev/null || continue
			[ "$state" = Z ] || alive="$alive $p"
		done
		killed=$alive
		[ -z "$killed" ] || sleep 0.5
		tries=$((tries - 1))
	done
	[ -z "$killed" ] || echo "ha-suite: leftover processes did not exit:$killed"
}

uptime_s() {
	read -r up _ < /proc/uptime
	echo "${up%.*}"
}

if [ "$list" = 1 ]; then
	awk -F'|' '{ print NR - 1, $1 }' "$table"
	exit 0
fi

grep -q '^nobody:' /etc/passwd ||
	echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >> /etc/passwd
grep -q '^nogroup:' /etc/group || echo 'nogroup:x:65534:' >> /etc/group
echo 0 > /proc/sys/vm/nr_hugepages
if [ -n "$swap" ] && ! mkswap "$swap" > /dev/null; then
	echo "ha-suite: mkswap $swap failed: no swap"
	swap=
fi

n=-1
while IFS='|' read -r name tmo needs cmd; do
	n=$((n + 1))
	[ "$n" -ge "$from" ] || continue
	[ -z "$only" ] || [ "$only" = "$name" ] || continue
	echo "@@TEST-BEGIN $n $name timeout=$((tmo * scale))"
	why=$(missing "$needs" | head -n 1)
	if [ -n "$why" ]; then
		echo "@@TEST-END $n $name SKIP rc=- secs=0 before=- after=- $why"
		continue
	fi
	before=$(ha-ledger settle)
	knobs=$(save_knobs)
	pids=$(cd /proc && echo [0-9]*)
	rm -rf "$WORK"
	mkdir -p "$WORK/huge"
	chmod 0777 "$WORK"
	cd "$WORK" || exit 1
	note=
	case ,$needs, in *,huge,*)
		got=$(reserve_hpages "$need_hpages")
		[ "$got" -ge "$need_hpages" ] ||
			note="only $got of $need_hpages huge pages"
		mount -t hugetlbfs none huge ;;
	esac
	case ,$needs, in *,shm,*)
		echo 268435456 > /proc/sys/kernel/shmmax
		echo 4194304 > /proc/sys/kernel/shmall ;;
	esac
	case ,$needs, in *,overcommit,*) echo 1 > /proc/sys/vm/overcommit_memory ;; esac
	case ,$needs, in *,swap,*) swapon "$swap" || note="swapon $swap failed" ;; esac
	t=$((tmo * scale))
	start=$(uptime_s)
	# Straight to the console (no pipe: a leftover child holding it open
	# would block the runner); kernel messages carry printk's timestamp.
	# shellcheck disable=SC2086 # cmd is a word list
	timeout -s KILL "$t" $cmd < /dev/null 2>&1
	rc=$?
	secs=$(( $(uptime_s) - start ))
	cd /
	kill_leftovers "$pids"
	grep -q " $WORK/huge " /proc/mounts && umount "$WORK/huge"
	echo 0 > /proc/sys/vm/nr_hugepages
	case ,$needs, in *,swap,*) swapoff "$swap" 2>/dev/null ;; esac
	restore_knobs "$knobs"
	rm -rf "$WORK"
	case ,$needs, in *,runfor,*)
		if [ "$rc" = 137 ] && [ "$secs" -ge "$t" ]; then
			rc=0
			note="ran ${t} s"
		fi ;;
	esac
	if [ "$rc" = 0 ]; then
		status=PASS
	elif case ,$needs, in *,count,*) false ;; esac &&
		case " $skip_rc " in *" $rc "*) true ;; *) false ;; esac; then
		status=SKIP
	elif [ "$rc" = 137 ] && [ "$secs" -ge "$t" ]; then
		status=TIMEOUT
		note="killed after ${t} s"
	else
		status=FAIL
	fi
	after=$(ha-ledger settle)
	echo "@@TEST-END $n $name $status rc=$rc secs=$secs before=$before after=$after $note"
done < "$table"
echo "@@TEST-DONE"
