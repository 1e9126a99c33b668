#!/usr/bin/python3
"""End-to-end: unbinding the guest driver gives the guest its memory back.

Boots build/guest/bzImage (4 GiB, 2 vCPUs) with virtio-llfree-balloon (auto
mode on, every 200 ms) and drives the guest through ha-shell. The driver
waits TEARDOWN_DELAY_MS between blocking installs and resetting the device
(virtio_llfree_balloon.teardown_delay_ms, CONFIG_VIRTIO_LLFREE_BALLOON_DEBUG),
the window in which the host may still reclaim and discard: no guest write
may be lost there. Checks:

  1. the VM shrinks to 2 GiB; the guest's MemFree drops accordingly;
  2. while `ha-mem stress` allocates and frees on both vCPUs and auto mode
     reclaims what they free, the driver is unbound: installs are blocked
     for TEARDOWN_DELAY_MS, then the device is reset and the driver takes
     back every frame the host had (protocol section 10): the kernel log
     says 2048 MiB, MemFree grows by about 2 GiB, the device reports the
     full size and keeps the 2 GiB target;
  3. the guest allocates and verifies 3 GiB without the driver, which only
     works if the frames the host took are usable again;
  4. binding the driver again registers the zones anew and the device
     re-applies the 2 GiB target; stress verified every page throughout;
  5. the console has no WARNING/BUG/Oops.

"""

import os
import re
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, finish, QMPError, run_test, vm)  # noqa: E402

RAM = 4 * GIB
TARGET = 2 * GIB
TEARDOWN_DELAY_MS = 3000
DRIVER = "/sys/bus/virtio/drivers/virtio_llfree_balloon"


def settled(qmp, timeout=120):
    """Waits until the device is not resizing; returns the last query."""
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.execute("query-llfree-balloon")
        if not info.get("resizing") or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def mem_free_mib(g):
    status, out = g.shell("grep MemFree /proc/meminfo")
    m = re.search(r"MemFree:\s+(\d+) kB", " ".join(out)) if status == 0 else None
    return int(m.group(1)) // 1024 if m else None


def main():
    found = vm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    log = os.path.join(REPO, "build", "tests", "e2e", "driver-reset.log")
    with vm.Guest(found[0], mem="4G", smp=2, run=vm.SHELL_SERVER,
                  append="virtio_llfree_balloon.teardown_delay_ms=%d" % TEARDOWN_DELAY_MS,
                  qemu_args=vm.llfree_device_args(sock, auto_mode=True, interval_ms=200),
                  log_path=log) as g:
        checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
        qmp = QMP.connect(sock, retry_for=10)
        status, out = g.shell("ls %s | grep virtio" % DRIVER)
        dev = out[0].strip() if status == 0 and out else None
        checks.check(dev is not None, "driver bound", "device %s" % dev)

        free_full = mem_free_mib(g)
        qmp.execute("llfree-balloon", {"value": TARGET})
        info = settled(qmp)
        free_small = mem_free_mib(g)
        checks.check(abs(info["actual"] - TARGET) <= CHILD and free_full and free_small and
                     free_full - free_small >= (RAM - TARGET) // MIB - 64,
                     "shrink to 2 GiB", "actual %d MiB, MemFree %s -> %s MiB" %
                     (info["actual"] // MIB, free_full, free_small))

        status, _ = g.shell("ha-mem stress --size 1G --duration 40 > /tmp/stress.log 2>&1 & "
                            "echo $! > /tmp/stress.pid")
        checks.check(status == 0, "stress started")
        time.sleep(5)
        status, out = g.shell("echo %s > %s/unbind" % (dev, DRIVER), timeout=180)
        checks.check(status == 0, "driver unbound")
        checks.check(g.wait_for("installs blocked, reset in %d ms" % TEARDOWN_DELAY_MS, 5),
                     "installs blocked for %d ms before the reset" % TEARDOWN_DELAY_MS)
        back = [l for _, l in g.result.lines if "are the guest's again" in l]
        m = re.search(r"device reset, (\d+) MiB", back[-1]) if back else None
        checks.check(m is not None and int(m.group(1)) == (RAM - TARGET) // MIB,
                     "driver took back what the host had", back[-1] if back else "no log line")
        info = qmp.execute("query-llfree-balloon")
        checks.check(info["actual"] == RAM and info["target"] == TARGET,
                     "device reset: full size, target kept",
                     "actual %d MiB, target %d MiB" % (info["actual"] // MIB,
                                                        info["target"] // MIB))

        status, out = g.shell("wait $(cat /tmp/stress.pid); s=$?; tail -n 3 /tmp/stress.log; "
                              "[ $s = 0 ]", timeout=300)
        checks.check(status == 0, "stress across the unbind: data intact", " | ".join(out[-2:]))
        free_unbound = mem_free_mib(g)
        checks.check(free_unbound is not None and
                     free_unbound >= free_small + (RAM - TARGET) // MIB - 128,
                     "MemFree grew by the returned memory",
                     "%s -> %s MiB" % (free_small, free_unbound))
        status, out = g.shell("ha-mem stress --size 3G --rounds 1 --phases anon "
                              "> /tmp/big.log 2>&1; s=$?; tail -n 2 /tmp/big.log; [ $s = 0 ]",
                              timeout=600)
        checks.check(status == 0, "guest uses 3 GiB without the driver, data intact",
                     " | ".join(out[-2:]))

        registered = sum(1 for _, l in g.result.lines if "zones registered" in l)
        status, out = g.shell("echo %s > %s/bind" % (dev, DRIVER), timeout=180)
        checks.check(status == 0 and g.wait_for("zones registered", 60) and
                     sum(1 for _, l in g.result.lines if "zones registered" in l) > registered,
                     "driver bound again and registered", " ".join(out))
        deadline = time.monotonic() + 120
        info = settled(qmp)
        while abs(info["actual"] - TARGET) > CHILD and time.monotonic() < deadline:
            time.sleep(0.5)
            info = settled(qmp)
        checks.check(abs(info["actual"] - TARGET) <= CHILD, "target re-applied after bind",
                     "actual %d MiB" % (info["actual"] // MIB))
        status, out = g.shell("ha-mem stress --size 1G --duration 10 > /tmp/after.log 2>&1; "
                              "s=$?; tail -n 2 /tmp/after.log; [ $s = 0 ]", timeout=300)
        checks.check(status == 0, "stress after the rebind: data intact", " | ".join(out[-2:]))
        g.send("exit\n")
        res = g.wait_exit(60)
    return finish(checks, res)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError))
