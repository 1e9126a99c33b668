#!/usr/bin/python3
"""HyperAlloc demo: a VM whose host memory follows the guest.

Boots a 4 GiB llfree guest with the virtio-llfree-balloon device in auto
mode, and while sampling the host RSS of QEMU:

  1. the guest workload (ha-mem hold) grows to 3 GiB, then frees it;
  2. auto mode hands the freed memory back to the host (RSS falls);
  3. QMP shrinks the VM to 1 GiB, then grows it back to 4 GiB;
  4. the guest uses 2 GiB again (installed on demand), data verified.

Prints a timeline table and writes build/demo/demo.png (host RSS, memory
held by the guest workload, VM size) and build/demo/timeline.csv.
"""

import csv
import os
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
from hyperalloc import vm as guestvm  # noqa: E402
from hyperalloc.hostmem import GIB, MIB, rss  # noqa: E402
from hyperalloc.qmp import QMP  # noqa: E402

RAM = 4 * GIB
AUTO_INTERVAL_MS = 2000
OUT = os.path.join(REPO, "build", "demo")


class Timeline:
    """Samples QEMU's RSS and the VM size twice a second."""

    def __init__(self, pid, qmp):
        self.pid, self.qmp = pid, qmp
        self.start = time.monotonic()
        self.rows = []        # (t, rss MiB, held MiB, vm size MiB, phase)
        self.phase, self.held = "boot", 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.5):
            self.sample()

    def sample(self):
        with self.lock:
            size = self.qmp.execute("query-llfree-balloon")["actual"]
            self.rows.append((time.monotonic() - self.start, rss(self.pid) // MIB,
                              self.held // MIB, size // MIB, self.phase))

    def enter(self, phase, held=None):
        """Starts a phase, or records a step of the current one (held)."""
        with self.lock:
            new = phase != self.phase
            self.phase = phase
            if held is not None:
                self.held = held
        self.sample()
        if new:
            print("[%6.1f s] %s" % (time.monotonic() - self.start, phase), flush=True)


def resize(tl, value, timeout=120):
    """llfree-balloon only starts the resize: wait until it is done (the
    timeline's lock: its thread shares the QMP connection)."""
    with tl.lock:
        tl.qmp.execute("llfree-balloon", {"value": value})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with tl.lock:
            if not tl.qmp.execute("query-llfree-balloon").get("resizing"):
                return
        time.sleep(0.05)


def hold(g, cmd):
    answer = g.hold_command(cmd)
    if not answer.startswith("ok"):
        raise RuntimeError("guest workload: %s -> %s" % (cmd, answer))
    return answer


def wait_rss_below(tl, limit, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and rss(tl.pid) > limit:
        time.sleep(0.5)


def scenario(g, qmp, tl):
    hold(g, "status")
    tl.enter("workload grows to 3 GiB", 256 * MIB)
    for held in range(512, 3072 + 1, 512):
        hold(g, "grow 512M")
        tl.enter("workload grows to 3 GiB", held * MIB)
    hold(g, "verify")
    tl.enter("workload frees 2.75 GiB", 256 * MIB)
    hold(g, "shrink 2816M")
    tl.enter("auto mode reclaims the freed memory")
    wait_rss_below(tl, 1536 * MIB, 6 * AUTO_INTERVAL_MS / 1000)
    time.sleep(2)
    tl.enter("QMP: shrink the VM to 1 GiB")
    resize(tl, 1 * GIB)
    time.sleep(3)
    hold(g, "verify")
    tl.enter("QMP: grow the VM to 4 GiB")
    resize(tl, RAM)
    time.sleep(3)
    tl.enter("workload uses 2 GiB again")
    for step in range(1, 4):
        hold(g, "grow 640M")
        tl.enter("workload uses 2 GiB again", (256 + 640 * step) * MIB)
    hold(g, "verify")
    tl.enter("done")
    time.sleep(1)


def print_table(rows):
    print("\n%8s  %9s  %9s  %9s  %s" % ("time s", "host RSS", "held", "VM size", "phase"))
    last = None
    for i, (t, r, h, s, phase) in enumerate(rows):
        if phase != last or i % 6 == 0:
            print("%8.1f  %5d MiB  %5d MiB  %5d MiB  %s" % (t, r, h, s, phase))
        last = phase


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib (apt-get install python3-matplotlib): plot skipped")
        return False
    t = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t, [r[1] for r in rows], label="host RSS of QEMU")
    ax.plot(t, [r[2] for r in rows], label="memory held by the guest workload")
    ax.plot(t, [r[3] for r in rows], "--", label="VM size (llfree balloon)")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("MiB")
    ax.set_title("HyperAlloc: 4 GiB VM, auto mode every %d ms (TCG)" % AUTO_INTERVAL_MS)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 1
    os.makedirs(OUT, exist_ok=True)
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-demo-"), "qmp.sock")
    qemu_args = [
        "-object", "iothread,id=io0",
        "-device", "virtio-llfree-balloon,auto-mode=on,auto-mode-interval=%d,"
                   "auto-mode-iothread=io0" % AUTO_INTERVAL_MS,
        "-qmp", "unix:%s,server=on,wait=off" % sock,
    ]
    print("booting a 4 GiB VM (kernel %s, QEMU %s)" % (found[0], found[2]), flush=True)
    with guestvm.Guest(found[0], mem="4G", smp=2, run="ha-mem hold --no-thp 256M",
                       qemu_args=qemu_args,
                       log_path=os.path.join(OUT, "console.log")) as g:
        if not g.wait_for("ok holding", 120):
            print("the guest did not start; see %s" % os.path.join(OUT, "console.log"))
            return 1
        qmp = QMP.connect(sock, retry_for=10)
        tl = Timeline(g.pid, qmp)
        tl.thread.start()
        try:
            scenario(g, qmp, tl)
        finally:
            tl.stop.set()
            tl.thread.join()
            g.hold_command("quit")
        res = g.wait_exit(60)
    rows = tl.rows
    with open(os.path.join(OUT, "timeline.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "host_rss_mib", "held_mib", "vm_size_mib", "phase"])
        w.writerows(rows)
    print_table(rows)
    png = os.path.join(OUT, "demo.png")
    if plot(rows, png):
        print("\nplot: %s" % png)
    print("timeline: %s" % os.path.join(OUT, "timeline.csv"))
    bad = res.bad_lines()
    if bad:
        print("guest console problems: %s" % "; ".join(bad[:3]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
