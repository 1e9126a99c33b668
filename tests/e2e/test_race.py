#!/usr/bin/python3
"""End-to-end: random resizes and auto mode race with a guest under stress.

Boots build/guest/bzImage (4 GiB, 2 vCPUs) with virtio-llfree-balloon in
auto mode (1000 ms, in IOThread io0) and, under KVM, its install queues in
IOThread io1 (iothread-vq-mapping needs ioeventfd, which TCG lacks), so that
host reclaim (main loop: QMP resizes; io0: auto mode), installs and guest
allocation all run at once. In the guest `ha-mem stress` runs all
phases (anon, thp, file, fork) on all vCPUs, 512 MiB in use, for DURATION
seconds (default 60) while the host loops: pick a value in [1 GiB, RAM]
(random.Random(SEED), printed; --seed to repeat a run), `llfree-balloon`, then
wait until the resize is done (the command may return before it is: poll
query-llfree-balloon until `resizing` is false, or without that field until
actual == target or has been stable for 2 s), then sleep 0..1 s. What docs/device.md promises, checked
for every step:

  - target is value rounded up to 2 MiB (never smaller than asked);
  - a shrink never takes the VM below the target (actual >= target at every
    poll); it may end above the target when the guest's memory is in use
    (counted and printed, not a failure);
  - a grow (target >= actual) always reaches the target exactly.

Then: the stress exits 0 with 0 integrity errors, QEMU is alive, a final grow
to 4 GiB reaches actual == RAM with no balloon left, the guest allocates and
verifies 2 GiB (installs of returned memory), MemTotal is unchanged and
MemFree (after drop_caches) is within 64 MiB of MemFree before the stress
and <= MemTotal (the device's updates of the guest's free-page counters
did not drift), and the console shows no WARNING/BUG/Oops.

"""

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (GIB, MIB, QMP, REPO, Checks, console_check, QMPError, resize_done,
                 round_target, run_test, summary, vm as guestvm)  # noqa: E402

RAM = 4 * GIB
LOW = 1 * GIB
STRESS_SIZE = "512M"
INTERVAL_MS = 1000
SETTLE_TIMEOUT = 60
STABLE = 2.0
MEMFREE_SLACK = 64 * MIB
STRESS_EXIT = "STRESS-EXIT "  # echoed as STRESS-''EXIT: not on the kernel command line


class Stats:
    """What the resize loop saw."""

    def __init__(self):
        self.steps = self.shrinks = self.grows = self.reached = 0
        self.errors = []        # (step, text) of broken promises
        self.longest = 0.0      # longest wait for a resize to finish

    def error(self, step, text):
        self.errors.append((step, text))
        if len(self.errors) <= 10:
            print("# step %d: %s" % (step, text), flush=True)


def step(qmp, stats, n, value):
    """One resize: issue it, wait until it is done, check the promises."""
    before = qmp.execute("query-llfree-balloon")
    want = round_target(value, RAM)
    shrink = want < before["actual"]
    start = time.monotonic()
    qmp.execute("llfree-balloon", {"value": value})
    info = qmp.execute("query-llfree-balloon")
    last, since = info["actual"], time.monotonic()
    while True:
        if info["target"] != want:
            stats.error(n, "value %d: target %d, want %d" % (value, info["target"], want))
            break
        if shrink and info["actual"] < want:
            stats.error(n, "shrink below the target: actual %d < target %d"
                        % (info["actual"], want))
            break
        now = time.monotonic()
        if resize_done(info):
            break
        if info["actual"] != last:
            last, since = info["actual"], now
        elif ("resizing" not in info and now - since >= STABLE) or \
                now - start >= SETTLE_TIMEOUT:
            break
        time.sleep(0.05)
        info = qmp.execute("query-llfree-balloon")
    took = time.monotonic() - start
    stats.longest = max(stats.longest, took)
    stats.steps += 1
    if shrink:
        stats.shrinks += 1
    else:
        stats.grows += 1
    if info["actual"] == want:
        stats.reached += 1
    elif not shrink:
        stats.error(n, "grow to %d ended at actual %d after %.1f s"
                    % (want, info["actual"], took))
    elif info["actual"] < want:
        pass  # reported above
    elif not resize_done(info) or time.monotonic() - start >= SETTLE_TIMEOUT:
        stats.error(n, "shrink to %d not done after %d s (actual %d)"
                    % (want, SETTLE_TIMEOUT, info["actual"]))
    return info


def meminfo(lines, field):
    """Values (MiB) of a /proc/meminfo field printed on the console, in order."""
    out = []
    for line in lines:
        m = re.match(r"%s:\s+(\d+) kB" % field, line)
        if m:
            out.append(int(m.group(1)) // 1024)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--duration", type=int, default=60)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 32)
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    rng = random.Random(seed)
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    device = {"driver": "virtio-llfree-balloon-pci", "auto-mode": True,
              "auto-mode-interval": INTERVAL_MS, "auto-mode-iothread": "io0"}
    if guestvm.choose_accel(found[2], found[0]).startswith("kvm"):
        # install queues in an IOThread need ioeventfd, which TCG lacks
        device["iothread-vq-mapping"] = [{"iothread": "io1"}]
    qemu_args = ["-object", "iothread,id=io0", "-object", "iothread,id=io1",
                 "-device", json.dumps(device),
                 "-qmp", "unix:%s,server=on,wait=off" % sock]
    log = os.path.join(REPO, "build", "tests", "e2e", "race.log")
    meminfo_cmd = "echo 3 > /proc/sys/vm/drop_caches; grep -E '^Mem(Total|Free):' /proc/meminfo"
    run = ("%s; ha-mem stress -d %d -s %s --seed %d; echo STRESS-''EXIT $?; "
           "ha-mem hold --no-thp 64M; h=$?; %s; grep llfree_install /proc/llfree; exit $h"
           % (meminfo_cmd, args.duration, STRESS_SIZE, seed, meminfo_cmd))
    print("# seed %d (rerun: %s --seed %d), stress %d s, targets %d..%d MiB, log %s"
          % (seed, sys.argv[0], seed, args.duration, LOW // MIB, RAM // MIB, log), flush=True)
    stats = Stats()
    with guestvm.Guest(found[0], mem="4G", smp=2, run=run, qemu_args=qemu_args,
                       log_path=log) as g:
        checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
        checks.check(g.wait_for("ha-mem: stress: seed", 120), "stress started")
        qmp = QMP.connect(sock, retry_for=10)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 600:
            done = any(line.startswith(STRESS_EXIT) for _, line in g.result.lines)
            if done and time.monotonic() - start >= args.duration:
                break
            if g.result.exit_code is not None:
                break
            n += 1
            step(qmp, stats, n, rng.randint(LOW, RAM))
            time.sleep(rng.uniform(0, 1.0))
        loop = time.monotonic() - start
        print("# %d resizes in %.0f s: %d shrinks (%d ended above the target: guest memory "
              "in use), %d grows; longest wait %.1f s; %d LLFREE_BALLOON_CHANGE events"
              % (stats.steps, loop, stats.shrinks, stats.steps - stats.reached,
                 stats.grows, stats.longest,
                 sum(1 for e in qmp.events() if e["event"] == "LLFREE_BALLOON_CHANGE")),
              flush=True)
        checks.check(loop >= args.duration and stats.steps >= args.duration // 3,
                     "resizes raced the stress for >= %d s" % args.duration,
                     "%d resizes in %.0f s" % (stats.steps, loop))
        checks.check(not stats.errors, "every resize kept the device's promises",
                     "; ".join("step %d: %s" % e for e in stats.errors[:3]))
        checks.check(g.wait_for(STRESS_EXIT, 600), "stress finished")
        lines = [line for _, line in g.result.lines]
        ended = [l for l in lines if l.startswith(STRESS_EXIT)]
        result = [l for l in lines if l.startswith("ha-mem: stress ok") or
                  l.startswith("ha-mem: stress FAILED")]
        integrity = [l for l in lines if l.startswith("ha-mem: ERROR")]
        checks.check(ended and ended[0].split()[-1] == "0" and not integrity,
                     "stress exits 0 with 0 integrity errors",
                     (result[0] if result else "no result line") +
                     ("; " + integrity[0] if integrity else ""))
        checks.check(qmp.execute("query-status")["status"] == "running", "QEMU alive")

        info = step(qmp, Stats(), 0, RAM)
        checks.check(info["actual"] == RAM and info["balloon"] == 0,
                     "final grow to 4 GiB", str(info))
        checks.check(g.wait_for("ok holding", 120), "guest runs ha-mem hold")
        checks.check(g.hold_command("grow 2G").startswith("ok"),
                     "guest allocates 2 GiB after the final grow")
        checks.check(g.hold_command("verify").startswith("ok"), "data intact")
        g.hold_command("quit")
        res = g.wait_exit(120)
    lines = [line for _, line in res.lines]
    total, free = meminfo(lines, "MemTotal"), meminfo(lines, "MemFree")
    ok = len(total) == 2 and len(free) == 2
    checks.check(ok and total[0] == total[1], "MemTotal unchanged",
                 "%s MiB" % " -> ".join(map(str, total)))
    checks.check(ok and free[1] >= free[0] - MEMFREE_SLACK // MIB and free[1] <= total[1],
                 "MemFree back to its value before the stress (+-%d MiB)" % (MEMFREE_SLACK // MIB),
                 "%s MiB, MemTotal %s MiB" % (" -> ".join(map(str, free)),
                                              total[-1] if total else "?"))
    checks.check(res.exit_code == 0, "ha-mem hold exits 0", "exit %s" % res.exit_code)
    console_check(checks, res)
    print("# seed %d" % seed)
    return summary(checks)


if __name__ == "__main__":
    run_test(main, (QMPError, ConnectionError, TimeoutError, OSError))
