#!/usr/bin/python3
"""End-to-end: shrink and grow a running llfree guest, data verified.

Boots build/guest/bzImage (llfree + driver) with the virtio-llfree-balloon
device (auto mode off, so only the commands below move memory) and a QMP
socket. In the guest, `ha-mem hold` keeps a pattern in memory that is
verified after every step. Steps and checks:

  1. registration: the driver registers every zone; query reports the RAM;
  2. touch 3 GiB, then release 2.5 GiB in the guest (still backed on the host);
  3. shrink to 2 GiB: the query reports the target within 2 MiB, QEMU's RSS
     drops by at least 90 % of the 2 GiB requested, the guest's MemFree
     drops accordingly, the held data verifies;
  4. grow to 4 GiB: the command returns at once, RSS does not grow;
  5. the guest allocates 3 GiB again (install path: llfree_install > 0),
     RSS grows with it, everything verifies;
  6. the console shows no WARNING/BUG/Oops.

"""

import os
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, finish, QMPError, rss, run_test,
                 vm as guestvm)  # noqa: E402

RAM = 4 * GIB


def resize(qmp, value, timeout=120):
    """llfree-balloon only starts the resize: wait until it is done."""
    qmp.execute("llfree-balloon", {"value": value})
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.execute("query-llfree-balloon")
        if not info.get("resizing") or time.monotonic() > deadline:
            return info
        time.sleep(0.01)


def main():
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 77
    kernel = found[0]
    checks = Checks()
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    qemu_args = [
        "-device", "virtio-llfree-balloon,auto-mode=off",
        "-qmp", "unix:%s,server=on,wait=off" % sock,
    ]
    log = os.path.join(REPO, "build", "tests", "e2e", "resize.log")
    run = ("ha-mem hold --no-thp 3G; status=$?; "
           "grep llfree_install /proc/llfree; exit $status")
    with guestvm.Guest(kernel, mem="4G", smp=2, run=run, qemu_args=qemu_args,
                       log_path=log) as g:
        pid = g.pid
        checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
        checks.check(g.wait_for("ok holding", 300), "guest holds 3 GiB")
        qmp = QMP.connect(sock, retry_for=10)
        info = qmp.execute("query-llfree-balloon")
        checks.check(info["actual"] == RAM, "query reports the RAM size",
                     "actual %d" % info["actual"])

        checks.check(g.hold_command("shrink 2560M").startswith("ok"),
                     "guest releases 2.5 GiB")
        free_before = guestvm.mem_free(g.hold_command("status"))
        rss_before = rss(pid)
        target = 2 * GIB
        start = time.monotonic()
        info = resize(qmp, target)
        took = time.monotonic() - start
        rss_after = rss(pid)
        checks.check(abs(info["actual"] - target) <= CHILD, "shrink reaches the target",
                     "actual %d MiB in %.3f s" % (info["actual"] // MIB, took))
        dropped = rss_before - rss_after
        checks.check(dropped >= 0.9 * (RAM - target), "host RSS drops by >= 90 %",
                     "%d -> %d MiB" % (rss_before // MIB, rss_after // MIB))
        free_after = guestvm.mem_free(g.hold_command("status"))
        checks.check(free_before is not None and free_after is not None and
                     abs((free_before - free_after) - (RAM - target) // MIB) <= 64,
                     "guest MemFree follows the shrink",
                     "%s -> %s MiB" % (free_before, free_after))
        checks.check(g.hold_command("verify").startswith("ok"), "data intact after shrink")

        start = time.monotonic()
        info = resize(qmp, RAM)
        took = time.monotonic() - start
        checks.check(info["actual"] == RAM and took < 1.0, "grow returns at once",
                     "%.3f s" % took)
        checks.check(rss(pid) <= rss_after + 64 * MIB, "grow does not populate",
                     "RSS %d MiB" % (rss(pid) // MIB))

        checks.check(g.hold_command("grow 2560M").startswith("ok"),
                     "guest allocates 2.5 GiB again")
        checks.check(rss(pid) >= rss_after + 2 * GIB, "RSS follows the guest",
                     "RSS %d MiB" % (rss(pid) // MIB))
        checks.check(g.hold_command("verify").startswith("ok"), "data intact after grow")
        g.hold_command("quit")
        res = g.wait_exit(120)
    installs = [l for _, l in res.lines if l.startswith("llfree_install ")]
    checks.check(installs and int(installs[0].split()[1]) > 0,
                 "allocations after the grow were installed",
                 installs[0] if installs else "no llfree_install line")
    checks.check(res.exit_code == 0, "ha-mem hold exits 0", "exit %s" % res.exit_code)
    return finish(checks, res)


if __name__ == "__main__":
    run_test(main, QMPError)
