#!/usr/bin/python3
"""stress-ng's memory stressors in the baseline and the llfree kernel, compared.

Boots each kernel (2 GiB in two NUMA nodes, 2 vCPUs, TCG; the same machine
as tests/guest/vm_selftests.py) with the normal initramfs and the Debian
root file system of scripts/build-debian-image.sh as a read-only virtio-blk
disk, and runs guest/tools/ha-stressng.sh: Debian's stress-ng, by chroot,
one stressor at a time for --secs seconds (vm, vm with THP, mmap, madvise,
mremap, brk, bigheap, fork, mmapfork, mmapmany, mmaphuge, malloc, shm-sysv,
memfd, pagemove, numa, userfaultfd), each with a timeout and a
MemFree ledger (guest/tools/ha-suite.sh, tests/guest/suites.py).

The suite fails where baseline passes a stressor and llfree does not (it
fails, stress-ng's verification finds bad data, it times out or hangs or
crashes the guest), where a stressor leaves MemFree lower than before by
more than --tolerance KiB (default 4096: as tests/guest/vm_selftests.py,
plus the page tables, slab and ext4 metadata of the first run of a
dynamically linked program from the disk) in either kernel, or where a
kernel message during a stressor matches suites.BAD_PATTERNS; an OOM-killer
report is no failure when its victims are stress-ng workers (oom_score_adj
1000): stress-ng drives memory to the limit on purpose (mmaphuge is OOM-killed
in baseline too).
baseline's results are cached like vm_selftests.py's.

Usage: tests/guest/stressng.py [--variant V]... [--only NAME] [--secs S]
           [--tolerance KIB] [--force-baseline]
Table: stdout and build/tests/guest/stress-ng.txt; serial logs
build/tests/guest/stress-ng-<variant>-<boot>.log.
Exit status 0 pass, 1 fail, 77 skip (a kernel, the image or QEMU missing).
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suites  # noqa: E402
from suites import REPO  # noqa: E402
import vm_selftests  # noqa: E402

GUEST = os.path.join(REPO, "build", "guest")
TOOLS = os.path.join(REPO, "guest", "tools")
IMAGE = os.path.join(GUEST, "debian", "rootfs.img")


def extra_args(ap):
    ap.add_argument("--secs", type=int, default=5, help="seconds per stressor (default 5)")
    return lambda args: " --secs %d" % args.secs


if __name__ == "__main__":
    image = os.path.realpath(IMAGE)
    sys.exit(suites.main(
        __doc__.splitlines()[0], "stress-ng", "ha-stressng",
        initrd=os.path.join(GUEST, "initramfs.cpio.gz"),
        inputs=[os.path.abspath(__file__), os.path.join(TOOLS, "ha-stressng.sh"),
                os.path.join(TOOLS, "ha-suite.sh"), os.path.join(TOOLS, "ha-ledger.sh"),
                os.path.join(REPO, "guest", "init"),
                os.path.join(os.path.dirname(image), "packages.txt")],
        mem="2G", smp=vm_selftests.SMP, default_tolerance=4096, title="stress-ng memory stressors",
        allow_oom=True,
        qemu_args=vm_selftests.QEMU_ARGS + [
            "-drive", "file=%s,if=virtio,format=raw,readonly=on" % image],
        extra_args=extra_args))
