#!/usr/bin/python3
"""End-to-end: the llfree guest after a hard shrink keeps its page cache.

Boots build/guest/bzImage (2 GiB, 2 vCPUs) with virtio-llfree-balloon (auto
mode off, shrink-pagecache off, so the device takes only free memory) and a
virtio-blk disk holding a 1 GiB file. Checks:

  1. reading the file fills the page cache; a shrink to 256 MiB then takes
     every free 2 MiB frame outside reserved trees and stops short of the
     target;
  2. THP faults (`ha-thp fault 64` on MADV_HUGEPAGE memory): the first take
     the few free 2 MiB frames left, the next defragment (which only moves
     pages into free frames), the others find none and fall back to small
     pages without reclaiming page cache: not every fault got a THP, and
     Cached drops by at most CACHE_SLACK_MIB (without the fix each such
     fault ran reclaim in reclaim/compaction mode, which empties the
     inactive file list);
  3. orders 3 and 2 (the allocation benchmark, 1000 blocks) do not empty
     it either;
  4. after the grow back, the reservations of a CPU that stopped
     allocating are drained: with the shell pinned to CPU 0, a workload on
     CPU 1 leaves reserved trees that are gone a few seconds later, so the
     host can reclaim their free memory;
  5. the file still has the host's checksum; the console is clean.

"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (GIB, MIB, QMP, REPO, Checks, finish, QMPError, run_test, settle,
                 vm)  # noqa: E402
from pagecache_disk import have_mkfs, make_disk, meminfo  # noqa: E402

RAM = 2 * GIB
TARGET = 256 * MIB
FILE_SIZE = 1 * GIB
# What the small-page fallbacks themselves may take from the page cache
CACHE_SLACK_MIB = 160
# MADV_HUGEPAGE memory the THP step touches: more than the free 2 MiB
# frames left in reserved trees, so that some faults find none
THP_MIB = 64


def reserved_trees(g):
    """Reserved trees of all zones from /proc/llfree, read on CPU 0."""
    status, out = g.shell("taskset -c 0 awk 'NR > 1 { r += $8 } END { print r }' /proc/llfree")
    return int(out[-1]) if status == 0 and out and out[-1].isdigit() else None


def main():
    found = vm.variant_or_skip("llfree")
    if not found or not have_mkfs():
        return 77
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="ha-e2e-")
    try:
        image, md5 = make_disk(tmp, FILE_SIZE)
        sock = os.path.join(tmp, "qmp.sock")
        args = vm.llfree_device_args(sock, extra="shrink-pagecache=off") + [
            "-drive", "file=%s,if=virtio,format=raw,cache=none" % image]
        log = os.path.join(REPO, "build", "tests", "e2e", "after-shrink.log")
        with vm.Guest(found[0], mem="2G", smp=2, run=vm.SHELL_SERVER, qemu_args=args,
                      log_path=log) as g:
            checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
            qmp = QMP.connect(sock, retry_for=10)
            status, _ = g.shell("taskset -p 1 $$ && mkdir -p /mnt && mount -t ext4 /dev/vda /mnt "
                                "&& cat /mnt/data.bin > /dev/null", timeout=600)
            cached = meminfo(g, "Cached")
            checks.check(status == 0 and cached is not None and cached >= FILE_SIZE // MIB - 64,
                         "page cache holds the file", "Cached %s MiB" % cached)

            qmp.execute("llfree-balloon", {"value": TARGET})
            info, _ = settle(qmp, 180)
            free = meminfo(g, "MemFree")
            status, out = g.shell("awk 'NR > 1 { h += $6 } END { print h }' /proc/llfree")
            left = int(out[-1]) if status == 0 and out and out[-1].isdigit() else None
            checks.check(info["actual"] > TARGET and left is not None and
                         left * 2 < THP_MIB,
                         "shrink stopped short; fewer free 2 MiB frames than the THP faults need",
                         "actual %d MiB, MemFree %s MiB, free 2 MiB frames %s (in reserved "
                         "trees)" % (info["actual"] // MIB, free, left))

            before = meminfo(g, "Cached")
            status, out = g.shell("ha-thp fault %d" % THP_MIB, timeout=300)
            after = meminfo(g, "Cached")
            m = re.search(r"AnonHugePages (\d+) kB", " ".join(out))
            checks.check(status == 0 and m is not None and int(m.group(1)) < THP_MIB * 1024 and
                         before is not None and after is not None and
                         before - after <= CACHE_SLACK_MIB,
                         "THP faults that find no free 2 MiB frame keep the page cache",
                         "Cached %s -> %s MiB; %s" % (before, after, " ".join(out[-1:])))
            for order in (3, 2):
                before = meminfo(g, "Cached")
                status, _ = g.shell("echo 'bulk order=%d count=1000' > "
                                    "/sys/kernel/debug/alloc_bench/run" % order, timeout=300)
                after = meminfo(g, "Cached")
                checks.check(status == 0 and before is not None and after is not None and
                             before - after <= CACHE_SLACK_MIB,
                             "order-%d allocations keep the page cache" % order,
                             "Cached %s -> %s MiB" % (before, after))

            qmp.execute("llfree-balloon", {"value": RAM})
            settle(qmp, 120)
            status, out = g.shell("taskset -c 1 ha-thp fault 64 > /dev/null && "
                                  "taskset -c 0 awk 'NR > 1 { r += $8 } END { print r }' "
                                  "/proc/llfree", timeout=300)
            busy = int(out[-1]) if status == 0 and out and out[-1].isdigit() else None
            time.sleep(6)
            idle = reserved_trees(g)
            checks.check(busy is not None and idle is not None and idle < busy,
                         "reservations of an idle CPU drained",
                         "reserved trees %s right after the work on CPU 1, %s 6 s later" %
                         (busy, idle))

            status, out = g.shell("md5sum /mnt/data.bin", timeout=900)
            got = re.match(r"[0-9a-f]{32}", out[-1]) if status == 0 and out else None
            checks.check(got is not None and got.group(0) == md5, "file intact",
                         " ".join(out[-1:]))
            g.shell("umount /mnt")
            g.send("exit\n")
            res = g.wait_exit(60)
        return finish(checks, res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError, subprocess.CalledProcessError))
