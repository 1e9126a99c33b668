#!/usr/bin/python3
"""End-to-end: virtio-balloon next to virtio-llfree-balloon, and a reboot.

Boots build/guest/bzImage (4 GiB, 2 vCPUs) with both virtio-balloon-pci
and virtio-llfree-balloon (auto mode off); `ha-mem hold` keeps verified
data. Checks:

  1. both drivers bind; virtio-balloon inflates by 512 MiB (QMP `balloon`)
     and the llfree balloon shrinks the VM to 2 GiB on top of it, data
     intact; virtio-balloon deflates again;
  2. a reset (QMP system_reset, as a reboot) brings the guest back, its
     driver registers again and the device re-applies the 2 GiB target;
  3. a reset while a shrink to 1 GiB runs (one child per resize step):
     the guest comes back, the 1 GiB target is applied, data intact;
  4. the console has no WARNING/BUG/Oops in any boot.

"""

import os
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, finish, QMPError, run_test, vm as
                 guestvm, wait_until)  # noqa: E402

RAM = 4 * GIB
TARGET = 2 * GIB
SMALL = 1 * GIB
REGISTERED = "zones registered"


def count_lines(g, text):
    return sum(1 for _, line in g.result.lines if text in line)


def main():
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    qemu_args = [
        "-device", "virtio-balloon-pci,id=vb",
        # one child per step: a reset can land in the middle of a shrink
        "-device", "virtio-llfree-balloon,auto-mode=off,x-step-children=1",
        "-qmp", "unix:%s,server=on,wait=off" % sock,
    ]
    run = ("ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio; "
           "ha-mem hold --no-thp 256M")
    log = os.path.join(REPO, "build", "tests", "e2e", "coexist-reboot.log")
    with guestvm.Guest(found[0], mem="4G", smp=2, run=run, qemu_args=qemu_args,
                       log_path=log, reboot=True) as g:
        checks.check(g.wait_for(REGISTERED, 120), "llfree driver registered")
        checks.check(g.wait_for("ok holding", 120), "guest holds 256 MiB")
        lines = [line for _, line in g.result.lines]
        checks.check("1" in lines[lines.index(next(l for l in lines if "READY" in l)):],
                     "virtio-balloon driver bound")
        qmp = QMP.connect(sock, retry_for=10)

        qmp.execute("balloon", {"value": RAM - 512 * MIB})
        actual = wait_until(lambda: qmp.execute("query-balloon")["actual"]
                            <= RAM - 512 * MIB, 120)
        checks.check(actual, "virtio-balloon inflates by 512 MiB",
                     "actual %d MiB" % (qmp.execute("query-balloon")["actual"] // MIB))
        qmp.execute("llfree-balloon", {"value": TARGET})
        # the command only starts the resize
        info = wait_until(lambda: (lambda i: None if i.get("resizing") else i)(
            qmp.execute("query-llfree-balloon")), 120) or \
            qmp.execute("query-llfree-balloon")
        checks.check(abs(info["actual"] - TARGET) <= CHILD,
                     "llfree balloon shrinks on top of it",
                     "actual %d MiB" % (info["actual"] // MIB))
        checks.check(g.hold_command("verify").startswith("ok"), "data intact")
        qmp.execute("balloon", {"value": RAM})
        checks.check(wait_until(lambda: qmp.execute("query-balloon")["actual"] == RAM, 120),
                     "virtio-balloon deflates")

        qmp.execute("system_reset")
        checks.check(wait_until(lambda: count_lines(g, REGISTERED) >= 2, 180),
                     "guest rebooted and registered again")
        info = wait_until(lambda: (lambda i: i if abs(i["actual"] - TARGET) <= CHILD
                                   else None)(qmp.execute("query-llfree-balloon")), 30)
        checks.check(info is not None, "target re-applied after the reboot",
                     str(qmp.execute("query-llfree-balloon")))
        checks.check(wait_until(lambda: count_lines(g, "ok holding") >= 2, 120),
                     "guest works after the reboot")
        checks.check(g.hold_command("verify").startswith("ok"),
                     "data intact after the reboot")

        # a reboot in the middle of a shrink (a few tries: it is a race). The
        # guest backs its free memory first (installs), so that the shrink
        # has to discard every child, one per step: that takes far longer
        # than the two QMP round trips to the reset
        for attempt in range(1, 6):
            qmp.execute("llfree-balloon", {"value": RAM})
            wait_until(lambda: not qmp.execute("query-llfree-balloon").get("resizing"), 60)
            g.hold_command("grow 3G")
            g.hold_command("shrink 3G")
            g.hold_command("quit")
            boots = count_lines(g, REGISTERED)
            qmp.execute("llfree-balloon", {"value": SMALL})
            during = qmp.execute("query-llfree-balloon")
            qmp.execute("system_reset")
            back = wait_until(lambda: count_lines(g, REGISTERED) > boots and
                              count_lines(g, "ok holding") > boots, 180)
            if during["resizing"] or not back:
                break
        checks.check(during["resizing"], "reset while the shrink runs",
                     "attempt %d: %s" % (attempt, during))
        checks.check(back, "guest back after the reset during the shrink")
        info = wait_until(lambda: (lambda i: i if abs(i["actual"] - SMALL) <= CHILD
                                   else None)(qmp.execute("query-llfree-balloon")), 60)
        checks.check(info is not None, "the interrupted target is applied after the reboot",
                     str(qmp.execute("query-llfree-balloon")))
        checks.check(g.hold_command("verify").startswith("ok"),
                     "data intact after the reset during the shrink")
        g.hold_command("quit")
        res = g.wait_exit(120)
    return finish(checks, res)


if __name__ == "__main__":
    run_test(main, QMPError)
