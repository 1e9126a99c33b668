#!/usr/bin/python3
"""Linux's mm selftests in the baseline and the llfree kernel, compared.

Boots each kernel (2 GiB in two NUMA nodes of 1 GiB, 2 vCPUs, -cpu max for
protection keys, 1 GiB pages and 5-level paging; TCG) with
build/guest/initramfs-selftests.cpio.gz (scripts/build-selftests.sh: the
normal initramfs + tools/testing/selftests/vm of the kernels' source package,
static) and a 256 MiB swap disk, and runs guest/tools/ha-vmtests.sh: run_vmtests.sh's tests and
set-up, plus split_huge_page_test, khugepaged and 15 s of transhuge-stress,
each with a timeout and a MemFree ledger (guest/tools/ha-suite.sh,
tests/guest/suites.py).

The suite fails where
  - baseline passes a test and llfree does not (fails, times out, hangs the
    guest or crashes it; a hang costs only that test: the guest is booted
    again and the suite goes on after it);
  - a test leaves MemFree lower than before by more than --tolerance (KiB,
    default 2048) in either kernel, measured with no huge pages reserved,
    after sync, drop_caches and a wait for MemFree to stop moving. The
    tolerance covers what the kernel keeps on purpose after a first use:
    slab pages of new caches and objects (hugetlbfs inodes, SysV shm ids),
    per-CPU page lists in baseline (up to pcp->high pages per CPU and zone),
    cached kernel stacks; a leaked THP is 2048 KiB by itself, so a leak of
    one huge page per test run is at the limit and more fails;
  - a kernel message during a test matches suites.BAD_PATTERNS (WARNING,
    BUG, Oops, page allocation failure, "llfree: ... failed", ...).
Tests the guest cannot run are skipped with the reason (a kernel option the
guest kernels do not set, a module, 32-bit userspace) in both kernels.

baseline's results are cached (${HYPERALLOC_CACHE}/suites/) by a hash of
its kernel, the selftests, the runners and the options: it is the reference,
and a warm CI run only boots llfree. --force-baseline runs it anyway.

Usage: tests/guest/vm_selftests.py [--variant V]... [--only NAME] [--full]
           [--tolerance KIB] [--force-baseline]
Table: stdout and build/tests/guest/vm-selftests.txt; serial logs
build/tests/guest/vm-selftests-<variant>-<boot>.log.
Exit status 0 pass, 1 fail, 77 skip (a kernel, the initramfs or QEMU missing).
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suites  # noqa: E402
from suites import REPO  # noqa: E402

GUEST = os.path.join(REPO, "build", "guest")
TOOLS = os.path.join(REPO, "guest", "tools")
# khugepaged swaps out: a swap disk, sparse; snapshot=on gives every QEMU its
# own writable overlay, so the two kernels can run side by side
SWAP = os.path.join(REPO, "build", "tests", "guest", "swap.img")
SWAP_SIZE = 256 << 20
# memfd_secret: secret memory is off unless the kernel command line enables it
APPEND = "secretmem.enable=1"
# smp: a socket per node (a node splitting a socket's cache makes the
# kernel warn about its topology)
SMP = "2,sockets=2"
QEMU_ARGS = [
    "-cpu", "max",
    "-object", "memory-backend-ram,id=m0,size=1G",
    "-object", "memory-backend-ram,id=m1,size=1G",
    "-numa", "node,nodeid=0,cpus=0,memdev=m0",
    "-numa", "node,nodeid=1,cpus=1,memdev=m1",
]
SWAP_ARGS = ["-drive", "file=%s,if=virtio,format=raw,snapshot=on" % SWAP]


# Tests the stock kernel fails, and why; any other baseline failure fails
# the suite (tests/guest/suites.py, compare).
BASELINE_FAILS = {
    "hugetlb-madvise": "expects MADV_DONTNEED to round a hugetlb length up; 6.1.y "
                       "rounds it down (the fix of data loss, mm/madvise.c)",
}


def extra_args(ap):
    ap.add_argument("--full", action="store_true", help="also the long tests (migration)")
    return lambda args: " --full" if args.full else ""


if __name__ == "__main__":
    os.makedirs(os.path.dirname(SWAP), exist_ok=True)
    with open(SWAP, "wb") as f:
        f.truncate(SWAP_SIZE)
    sys.exit(suites.main(
        __doc__.splitlines()[0], "vm-selftests", "ha-vmtests",
        initrd=os.path.join(GUEST, "initramfs-selftests.cpio.gz"),
        inputs=[os.path.abspath(__file__), os.path.join(GUEST, "vm-selftests.cpio.gz"),
                os.path.join(TOOLS, "ha-vmtests.sh"), os.path.join(TOOLS, "ha-suite.sh"),
                os.path.join(TOOLS, "ha-ledger.sh"), os.path.join(REPO, "guest", "init")],
        mem="2G", smp=SMP, qemu_args=QEMU_ARGS + SWAP_ARGS, default_tolerance=1024,
        append=APPEND, baseline_fails=BASELINE_FAILS,
        title="mm selftests (tools/testing/selftests/vm)", extra_args=extra_args))
