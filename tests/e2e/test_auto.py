#!/usr/bin/python3
"""End-to-end: auto mode hands memory the guest frees back to the host, and
only that memory.

Boots build/guest/bzImage (4 GiB, 2 vCPUs) twice with virtio-llfree-balloon
in auto mode (auto-mode=on, auto-mode-interval=1000 ms): once with auto mode
in the main loop, once in an IOThread (auto-mode-iothread). No QMP resize is
issued: only auto mode moves memory. In the guest `ha-mem hold --no-thp`
keeps a pattern in memory. Per run:

  1. the guest holds 3 GiB; for 3 periods QEMU's RSS stays >= 3 GiB, the
     device's soft bytes stay <= RAM - 3 GiB, the data verifies;
  2. the guest frees 2.5 GiB: RSS falls by >= 85 % of it within the
     DEADLINE (one period + 5 s for TCG on shared CPUs, counted from the
     guest's answer), soft grows accordingly; target and actual do not
     change (docs/device.md);
  3. for 3 more periods RSS never drops below the 512 MiB still held and
     soft + held <= RAM (auto mode never takes memory in use); data verifies;
  4. the guest allocates 2 GiB again (install path): the device answers
     >= 80 % of the 1024 needed 2 MiB installs, RSS grows by >= 90 % of
     it, soft shrinks, everything verifies;
  5. the guest frees everything: RSS falls again within the DEADLINE;
  6. ha-mem exits 0, llfree_install in /proc/llfree > 0, console clean.

"""

import os
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, console_check, QMPError, rss,
                 RssSampler, run_test, summary, vm as guestvm, wait_until)  # noqa: E402

RAM = 4 * GIB
HELD = 3 * GIB
FREED = 2560 * MIB
REGROW = 2 * GIB
INTERVAL_MS = 1000
DEADLINE = INTERVAL_MS / 1000 + 5.0


def watch(g, qmp, seconds, held, checks, label):
    """Samples RSS and the device for `seconds`: RSS must stay >= held and
    soft + held <= RAM (auto mode must not take memory in use)."""
    worst_soft = 0
    with RssSampler(g.pid, period=0.1) as sampler:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            worst_soft = max(worst_soft, qmp.execute("query-llfree-balloon")["soft"])
            time.sleep(0.2)
    low = min(v for _, v in sampler.samples)
    checks.check(low >= held, "%s: RSS stays >= the %d MiB held" % (label, held // MIB),
                 "min %d MiB over %.0f s" % (low // MIB, seconds))
    checks.check(worst_soft + held <= RAM, "%s: auto mode leaves held memory alone" % label,
                 "max soft %d MiB + held %d MiB, RAM %d MiB"
                 % (worst_soft // MIB, held // MIB, RAM // MIB))


def wait_rss_drop(pid, before, drop):
    """Seconds until rss(pid) <= before - drop, or None after DEADLINE."""
    start = time.monotonic()
    while time.monotonic() - start <= DEADLINE:
        if rss(pid) <= before - drop:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def scenario(kernel, checks, label, iothread):
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    qemu_args = guestvm.llfree_device_args(sock, auto_mode=True, interval_ms=INTERVAL_MS,
                                           iothread=iothread)
    log = os.path.join(REPO, "build", "tests", "e2e", "auto-%s.log" % label)
    run = ("ha-mem hold --no-thp %dM; status=$?; grep llfree_install /proc/llfree; "
           "exit $status" % (HELD // MIB))
    print("# %s: auto mode every %d ms%s, deadline %.1f s, log %s"
          % (label, INTERVAL_MS, " in IOThread " + iothread if iothread else " in the main loop",
             DEADLINE, log), flush=True)
    with guestvm.Guest(kernel, mem="4G", smp=2, run=run, qemu_args=qemu_args,
                       log_path=log) as g:
        checks.check(g.wait_for("zones registered", 120), "%s: driver registered" % label)
        checks.check(g.wait_for("ok holding", 300), "%s: guest holds 3 GiB" % label)
        qmp = QMP.connect(sock, retry_for=10)
        watch(g, qmp, 3 * INTERVAL_MS / 1000, HELD, checks, label + " holding 3 GiB")
        checks.check(g.hold_command("verify").startswith("ok"),
                     "%s: data intact while holding" % label)

        # 2. free 2.5 GiB: RSS must fall within the deadline
        before = qmp.execute("query-llfree-balloon")
        rss_before = rss(g.pid)
        checks.check(g.hold_command("shrink %dM" % (FREED // MIB)).startswith("ok"),
                     "%s: guest frees 2.5 GiB" % label)
        took = wait_rss_drop(g.pid, rss_before, int(0.85 * FREED))
        checks.check(took is not None, "%s: RSS falls by >= 85 %% of 2.5 GiB in %.1f s"
                     % (label, DEADLINE),
                     "%s, RSS %d -> %d MiB" % ("%.2f s" % took if took is not None else "late",
                                                 rss_before // MIB, rss(g.pid) // MIB))
        info = wait_until(lambda: (lambda i: i if i["soft"] - before["soft"] >= 0.85 * FREED
                                   else None)(qmp.execute("query-llfree-balloon")), 2)
        info = info or qmp.execute("query-llfree-balloon")
        checks.check(info["soft"] - before["soft"] >= 0.85 * FREED,
                     "%s: soft grows by the freed memory" % label,
                     "soft %d -> %d MiB" % (before["soft"] // MIB, info["soft"] // MIB))
        checks.check(info["actual"] == RAM and info["target"] == RAM and info["balloon"] == 0,
                     "%s: auto mode changes neither target nor actual" % label, str(info))

        # 3. the 512 MiB still held stay
        held = HELD - FREED
        watch(g, qmp, 3 * INTERVAL_MS / 1000, held, checks, label + " after the free")
        checks.check(g.hold_command("verify").startswith("ok"),
                     "%s: data intact after auto reclaim" % label)

        # 4. allocate again: installs
        before = qmp.execute("query-llfree-balloon")
        rss_before = rss(g.pid)
        checks.check(g.hold_command("grow %dM" % (REGROW // MIB)).startswith("ok"),
                     "%s: guest allocates 2 GiB again" % label)
        after = qmp.execute("query-llfree-balloon")
        installs = after["installs"] - before["installs"]
        checks.check(installs >= 0.8 * REGROW // CHILD, "%s: allocations were installed" % label,
                     "%d install requests answered, soft %d -> %d MiB"
                     % (installs, before["soft"] // MIB, after["soft"] // MIB))
        grown = rss(g.pid) - rss_before
        checks.check(grown >= 0.9 * REGROW, "%s: RSS follows the guest" % label,
                     "+%d MiB" % (grown // MIB))
        checks.check(after["soft"] <= before["soft"] - 0.8 * REGROW,
                     "%s: soft shrinks by what the guest took" % label)
        checks.check(g.hold_command("verify").startswith("ok"),
                     "%s: data intact after the allocation" % label)

        # 5. free everything: auto mode again
        rss_before = rss(g.pid)
        size = held + REGROW
        checks.check(g.hold_command("free").startswith("ok"), "%s: guest frees all" % label)
        took = wait_rss_drop(g.pid, rss_before, int(0.85 * size))
        checks.check(took is not None, "%s: RSS falls again in %.1f s" % (label, DEADLINE),
                     "%s, RSS %d -> %d MiB" % ("%.2f s" % took if took is not None else "late",
                                                 rss_before // MIB, rss(g.pid) // MIB))
        checks.check(g.hold_command("quit").startswith("ok"), "%s: ha-mem quits" % label)
        res = g.wait_exit(120)
    lines = [line for _, line in res.lines]
    installs = [l for l in lines if l.startswith("llfree_install ")]
    checks.check(installs and int(installs[0].split()[1]) > 0,
                 "%s: guest counted installs" % label,
                 installs[0] if installs else "no llfree_install line")
    checks.check(res.exit_code == 0, "%s: ha-mem hold exits 0" % label,
                 "exit %s" % res.exit_code)
    console_check(checks, res, label)


def main():
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    start = time.monotonic()
    scenario(found[0], checks, "main-loop", None)
    scenario(found[0], checks, "iothread", "io-auto")
    print("# %.0f s" % (time.monotonic() - start))
    return summary(checks)


if __name__ == "__main__":
    run_test(main, (QMPError, ConnectionError, TimeoutError, OSError))
