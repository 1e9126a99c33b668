#!/usr/bin/python3
"""End-to-end: auto mode takes back page cache the guest no longer uses.

Boots build/guest/bzImage (2 GiB, 1 vCPU: the launcher adds maxcpus=2 under
TCG) with virtio-llfree-balloon in auto mode (1 s period) with
shrink-pagecache=on and auto-mode-cache-trim=20, and a virtio-blk disk: an
ext4 image made on the host holding a 1 GiB file of random data, while
`ha-mem stress` keeps anonymous memory busy. Checks:

  1. the guest reads the file once; afterwards its page cache fades to
     less than 64 MiB without anything else asking for memory: only the
     trim requests of auto mode reclaim (pgsteal_direct in /proc/vmstat
     grows by at least 3/4 of the file);
  2. the host gets the memory back: QEMU's RSS comes back to within
     384 MiB of what it was before the read (the stress's 128 MiB, which
     it may not have touched yet then, and what the kernel keeps);
  3. the VM keeps its size (query-llfree-balloon: actual = RAM);
  4. the file still has the host's checksum and `ha-mem stress` verified
     every anonymous page; the console has no WARNING/BUG/Oops.
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (GIB, MIB, QMP, REPO, Checks, finish, QMPError, rss, run_test, vm,  # noqa: E402
                 wait_until)
from pagecache_disk import check_data, guest_stat, have_mkfs, make_disk, meminfo  # noqa: E402

RAM = 2 * GIB
FILE_SIZE = 1 * GIB
TRIM = "shrink-pagecache=on,auto-mode-cache-trim=20"


def pgsteal(g):
    return guest_stat(g, "/proc/vmstat", "pgsteal_direct")


def main():
    found = vm.variant_or_skip("llfree")
    if not found or not have_mkfs():
        return 77
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="ha-e2e-")
    try:
        image, md5 = make_disk(tmp, FILE_SIZE)
        sock = os.path.join(tmp, "qmp.sock")
        args = vm.llfree_device_args(sock, auto_mode=True, interval_ms=1000, extra=TRIM) + [
            "-drive", "file=%s,if=virtio,format=raw,cache=none" % image]
        log = os.path.join(REPO, "build", "tests", "e2e", "cache_trim.log")
        with vm.Guest(found[0], mem="2G", smp=1, run=vm.SHELL_SERVER, qemu_args=args,
                      log_path=log) as g:
            checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
            qmp = QMP.connect(sock, retry_for=10)
            status, _ = g.shell("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt")
            checks.check(status == 0, "disk mounted")
            g.shell("ha-mem stress --size 128M --duration 60 --phases anon "
                    "> /tmp/stress.log 2>&1 & echo $! > /tmp/stress.pid")
            steal_before = pgsteal(g)
            rss_before = rss(g.pid)

            status, _ = g.shell("cat /mnt/data.bin > /dev/null", timeout=600)
            checks.check(status == 0, "file read")
            cached = wait_until(lambda: (meminfo(g, "Cached") or 0) < 64 and
                                meminfo(g, "Cached"), 90, period=1.0)
            stolen = (pgsteal(g) or 0) - (steal_before or 0)
            checks.check(bool(cached) and stolen * 4096 >= FILE_SIZE * 3 // 4,
                         "page cache fades by trim requests alone",
                         "Cached %s MiB, pgsteal_direct +%d MiB" % (
                             meminfo(g, "Cached"), stolen * 4096 // MIB))
            back = wait_until(lambda: rss(g.pid) <= rss_before + 384 * MIB, 60, period=1.0)
            checks.check(back, "host got the memory back", "RSS %d MiB before the read, %d now" % (
                rss_before // MIB, rss(g.pid) // MIB))
            info = qmp.execute("query-llfree-balloon")
            checks.check(info["actual"] == RAM and info["target"] == RAM,
                         "VM keeps its size", str(info))

            check_data(g, checks, md5)
            g.shell("umount /mnt")
            g.send("exit\n")
            res = g.wait_exit(60)
        return finish(checks, res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError, subprocess.CalledProcessError))
