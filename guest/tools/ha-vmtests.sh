#!/bin/sh
# ha-vmtests: Linux's mm selftests (tools/testing/selftests/vm of the guest
# kernels' source package, built static into /opt/vm-selftests by
# scripts/build-selftests.sh), run by ha-suite with a timeout and a MemFree
# ledger per test (busybox sh: run_vmtests.sh needs bash).
#
# Usage: ha-vmtests [ha-suite options: --list --from N --only NAME --full --scale F]
#
# The tests, their arguments and set-up are run_vmtests.sh's (huge pages
# and hugetlbfs for the hugetlb tests, shmmax for hugepage-shm, on-fault-limit
# as user nobody, userfaultfd's sizes), the set-up done per test so that each
# starts from the same state and its ledger covers the reservation.
# mremap_test maps 2 GiB (and touches 4 MiB of it): more than the guest's
# RAM, so it runs with vm.overcommit_memory=1. hugepage-mremap needs
# userfaultfd. khugepaged swaps pages out (a swap disk, /dev/vda, is on
# for it) and exits with its number of failures, so 4 is no skip. Beyond
# run_vmtests.sh, the Makefile's other programs: split_huge_page_test,
# khugepaged, transhuge-stress (15 s) and, with --full, migration (3 x 60 s).
# A test the guest cannot run is a skip with its reason (kselftest's skip
# status 4 too).

BIN=/opt/vm-selftests
TABLE=/tmp/vmtests.table

# userfaultfd's hugetlb tests (run_vmtests.sh): nr_cpus huge pages per half,
# rounded up to 128 MiB
hpage_mb=2
half_ufd_mb=$(( ($(nproc) * hpage_mb + 127) / 128 * 128 ))

[ -d "$BIN" ] || { echo "ha-vmtests: $BIN missing (boot initramfs-selftests.cpio.gz)" >&2; exit 77; }
grep -q '^nobody:' /etc/passwd ||
	echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >> /etc/passwd
grep -q '^nogroup:' /etc/group || echo 'nogroup:x:65534:' >> /etc/group

# name|timeout|needs|command (see ha-suite)
cat > "$TABLE" <<EOF
hugepage-mmap|120|huge|$BIN/hugepage-mmap
hugepage-shm|120|huge,shm|$BIN/hugepage-shm
map_hugetlb|120|huge|$BIN/map_hugetlb
hugepage-mremap|120|CONFIG_USERFAULTFD,huge|$BIN/hugepage-mremap huge/huge_mremap
hugepage-vmemmap|120|huge|$BIN/hugepage-vmemmap
hugetlb-madvise|120|huge|$BIN/hugetlb-madvise huge/madvise-test
map_fixed_noreplace|60||$BIN/map_fixed_noreplace
gup_test-u|120|CONFIG_GUP_TEST|$BIN/gup_test -u
gup_test-a|120|CONFIG_GUP_TEST|$BIN/gup_test -a
gup_test-ct|120|CONFIG_GUP_TEST|$BIN/gup_test -ct -F 0x1 0 19 0x1000
userfaultfd-anon|300|CONFIG_USERFAULTFD|$BIN/userfaultfd anon 20 16
userfaultfd-hugetlb|300|CONFIG_USERFAULTFD,huge|$BIN/userfaultfd hugetlb $half_ufd_mb 32
userfaultfd-hugetlb_shared|300|CONFIG_USERFAULTFD,huge|$BIN/userfaultfd hugetlb_shared $half_ufd_mb 32 huge/uffd-test
userfaultfd-shmem|300|CONFIG_USERFAULTFD|$BIN/userfaultfd shmem 20 16
userfaultfd-anon:dev|300|CONFIG_USERFAULTFD|$BIN/userfaultfd anon:dev 20 16
userfaultfd-hugetlb:dev|300|CONFIG_USERFAULTFD,huge|$BIN/userfaultfd hugetlb:dev $half_ufd_mb 32
userfaultfd-hugetlb_shared:dev|300|CONFIG_USERFAULTFD,huge|$BIN/userfaultfd hugetlb_shared:dev $half_ufd_mb 32 huge/uffd-test
userfaultfd-shmem:dev|300|CONFIG_USERFAULTFD|$BIN/userfaultfd shmem:dev 20 16
compaction_test|300||$BIN/compaction_test
on-fault-limit|60||su -s /bin/sh nobody -c $BIN/on-fault-limit
map_populate|60||$BIN/map_populate
mlock-random-test|120||$BIN/mlock-random-test
mlock2-tests|120||$BIN/mlock2-tests
mrelease_test|120||$BIN/mrelease_test
mremap_test|300|overcommit|$BIN/mremap_test
thuge-gen|120||$BIN/thuge-gen
virtual_address_range|300||$BIN/virtual_address_range
va_128TBswitch|120|la57|$BIN/va_128TBswitch
test_vmalloc-smoke|0|skip:needs module test_vmalloc (the guest kernels have no module support)|true
mremap_dontunmap|120||$BIN/mremap_dontunmap
test_hmm-smoke|0|skip:needs module test_hmm (the guest kernels have no module support)|true
madv_populate|120||$BIN/madv_populate
memfd_secret|60||$BIN/memfd_secret
ksm_tests-M|120|CONFIG_KSM|$BIN/ksm_tests -M -p 10
ksm_tests-U|120|CONFIG_KSM|$BIN/ksm_tests -U
ksm_tests-Z0|120|CONFIG_KSM|$BIN/ksm_tests -Z -p 10 -z 0
ksm_tests-Z1|120|CONFIG_KSM|$BIN/ksm_tests -Z -p 10 -z 1
ksm_tests-N1|120|CONFIG_KSM,numa2|$BIN/ksm_tests -N -m 1
ksm_tests-N0|120|CONFIG_KSM,numa2|$BIN/ksm_tests -N -m 0
protection_keys_32|0|skip:no 32-bit build (gcc-multilib is not installed)|true
protection_keys_64|120||$BIN/protection_keys_64
soft-dirty|120|CONFIG_MEM_SOFT_DIRTY|$BIN/soft-dirty
split_huge_page_test|120||$BIN/split_huge_page_test
khugepaged|600|swap,count|$BIN/khugepaged
transhuge-stress|15|runfor|$BIN/transhuge-stress 256
migration|420|numa2,full|$BIN/migration
hmm-tests|0|skip:needs module test_hmm (the guest kernels have no module support)|true
EOF
# a swap disk if the host gave one (tests/guest/vm_selftests.py)
swap=
[ -b /dev/vda ] && swap=/dev/vda
exec ha-suite --table "$TABLE" --skip-rc 4 ${swap:+--swap $swap} "$@"
