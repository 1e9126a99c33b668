#!/usr/bin/python3
"""End-to-end: 2 MiB and 4 MiB guest allocations after a grow are fully installed.

After a shrink to 512 MiB and a grow back to 4 GiB, almost all free guest
memory is returned but not backed (soft). The guest then allocates it in
physically contiguous blocks, and every 2 MiB frame a block covers must be
populated by the device (an install) before the guest uses it:

  - order 9 (2 MiB): `ha-mem hold --thp` grows by 1 GiB of MADV_HUGEPAGE
    memory (THP faults);
  - order 10 (4 MiB): ha-bigblock (guest/tools/ha-bigblock.c) takes N
    io_urings with 32768 128-byte SQEs:
    Linux 6.1 allocates each SQE array as one compound page of order 10,
    which the helper maps, fills with a pattern and checks through
    /proc/self/pagemap to be physically contiguous and 4 MiB aligned.
    Orders above 10 do not exist in this kernel (MAX_ORDER 11), and from
    userspace no other path gives order 10 with data we can verify (the
    kernel allocation benchmark frees its blocks unwritten).

QEMU traces discards and populates (-trace, -D build/tests/e2e/
install-large.trace); the test replays them to know the host state of every
2 MiB frame. Checks:

  1. shrink to 512 MiB and grow to 4 GiB (twice, once per phase) reach their
     targets;
  2. THP phase: >= 90 % of the 512 frames of 1 GiB are populated by installs,
     QEMU's RSS grows and the device's soft bytes shrink by >= 90 % of 1 GiB,
     data verifies;
  3. order-10 phase: all N blocks are order 10; every 2 MiB frame that any
     block covers is backed on the host (never left discarded); >= 75 % of the
     blocks lay in returned memory entirely, each of those got both its frames
     populated and an install request of order 10; the guest's llfree_install
     counter grows by >= 1 per such block (it counts requests, and one request
     covers the whole 4 MiB block, see drivers/virtio/virtio_llfree_balloon.c);
     RSS grows by >= 90 % of N x 4 MiB; data verifies;
  4. both programs exit 0, console clean.

"""

import os
import re
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, console_check, QMPError, rss,
                 run_test, settle, summary, vm as guestvm)  # noqa: E402

RAM = 4 * GIB
LOW = 512 * MIB
THP_GROW = 1 * GIB
BLOCKS = 128
BLOCK = 4 * MIB
OUT = os.path.join(REPO, "build", "tests", "e2e")
TRACE = os.path.join(OUT, "install-large.trace")


class HostState:
    """Replays the device's discard and populate trace events: which 2 MiB
    frames of RAM (by RAM offset) are discarded on the host."""

    DISCARD = re.compile(r"virtio_llfree_balloon_discard offset=0x([0-9a-f]+) "
                         r"size=0x([0-9a-f]+) ret=(-?\d+)")
    POPULATE = re.compile(r"virtio_llfree_balloon_populate offset=0x([0-9a-f]+) ret=(-?\d+)")
    INSTALL = re.compile(r"virtio_llfree_balloon_install_request zone=\d+ order=(\d+)")

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.discarded = set()
        self.populated = []     # frames populated since the last mark()
        self.install_orders = []

    def update(self):
        with open(self.path, errors="replace") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind("\n") + 1
        self.pos += len(data[:end].encode())
        for line in data[:end].splitlines():
            m = self.DISCARD.search(line)
            if m and int(m.group(3)) == 0:
                off, size = int(m.group(1), 16), int(m.group(2), 16)
                self.discarded.update(range(off // CHILD, (off + size) // CHILD))
                continue
            m = self.POPULATE.search(line)
            if m and int(m.group(2)) == 0:
                self.discarded.discard(int(m.group(1), 16) // CHILD)
                self.populated.append(int(m.group(1), 16) // CHILD)
                continue
            m = self.INSTALL.search(line)
            if m:
                self.install_orders.append(int(m.group(1)))

    def mark(self):
        self.update()
        self.populated, self.install_orders = [], []


def ram_offset_of(lines):
    """Returns a function from guest-physical address to RAM offset, from
    the e820 map on the console (RAM above 4 GiB continues the low part)."""
    low = RAM
    for line in lines:
        m = re.search(r"BIOS-e820: \[mem 0x0*100000000-0x([0-9a-f]+)\] usable", line)
        if m:
            low = RAM - (int(m.group(1), 16) + 1 - 4 * GIB)
    return lambda gpa: gpa if gpa < low else gpa - 4 * GIB + low


def cycle(checks, qmp, label):
    """Shrinks to LOW and grows back to RAM, so free memory becomes soft."""
    qmp.execute("llfree-balloon", {"value": LOW})
    small = settle(qmp, 60)[0]
    qmp.execute("llfree-balloon", {"value": RAM})
    full = settle(qmp, 60)[0]
    checks.check(small["actual"] <= LOW + 256 * MIB and full["actual"] == RAM,
                 "%s: shrink to 512 MiB and grow back" % label,
                 "actual %d MiB, then %d MiB, soft %d MiB"
                 % (small["actual"] // MIB, full["actual"] // MIB, full["soft"] // MIB))


def main():
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    if os.path.exists(TRACE):
        os.unlink(TRACE)
    qemu_args = guestvm.llfree_device_args(sock) + [
        "-trace", "enable=virtio_llfree_balloon_discard",
        "-trace", "enable=virtio_llfree_balloon_populate",
        "-trace", "enable=virtio_llfree_balloon_install_request", "-D", TRACE]
    log = os.path.join(OUT, "install-large.log")
    run = ("ha-mem hold --thp 64M; h=$?; echo HOLD-''DONE; read go; ha-bigblock %d; b=$?; "
           "grep llfree_install /proc/llfree; exit $((h | b))" % BLOCKS)
    with guestvm.Guest(found[0], mem="4G", smp=2, run=run, qemu_args=qemu_args,
                       log_path=log) as g:
        checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
        checks.check(g.wait_for("ok holding", 120), "guest holds 64 MiB (THP)")
        qmp = QMP.connect(sock, retry_for=10)
        host = HostState(TRACE)
        offset = ram_offset_of([line for _, line in g.result.lines])

        # order 9: THP
        cycle(checks, qmp, "THP")
        host.mark()
        before, rss_before = qmp.execute("query-llfree-balloon"), rss(g.pid)
        checks.check(g.hold_command("grow %dM" % (THP_GROW // MIB)).startswith("ok"),
                     "THP: guest allocates 1 GiB of MADV_HUGEPAGE memory")
        after = qmp.execute("query-llfree-balloon")
        host.update()
        want = THP_GROW // CHILD
        checks.check(len(set(host.populated)) >= 0.9 * want,
                     "THP: >= 90 % of the 2 MiB frames populated by installs",
                     "%d of %d frames, %d install requests"
                     % (len(set(host.populated)), want, after["installs"] - before["installs"]))
        grown = rss(g.pid) - rss_before
        checks.check(grown >= 0.9 * THP_GROW and
                     before["soft"] - after["soft"] >= 0.9 * THP_GROW,
                     "THP: RSS grows and soft shrinks by >= 90 % of 1 GiB",
                     "RSS +%d MiB, soft %d -> %d MiB"
                     % (grown // MIB, before["soft"] // MIB, after["soft"] // MIB))
        checks.check(g.hold_command("verify").startswith("ok"), "THP: data intact")
        checks.check(g.hold_command("quit").startswith("ok"), "THP: ha-mem hold quits")
        checks.check(g.wait_for("HOLD-DONE", 120), "THP: ha-mem hold exited, memory freed")

        # order 10: io_uring SQE arrays
        cycle(checks, qmp, "order 10")
        host.mark()
        rss_before = rss(g.pid)
        first = len(g.result.lines)
        g.send("go\n")
        ready = g.wait_for("ok blocks", 300)
        lines = [line for _, line in g.result.lines[first:]]
        blocks = [(int(m.group(1), 16), m.group(2) == "order10") for m in
                  (re.match(r"block \d+ pfn 0x([0-9a-f]+) (\w+)", l) for l in lines) if m]
        summary_line = next((l for l in lines if l.startswith(("ok blocks", "error"))), "")
        checks.check(ready and len(blocks) == BLOCKS and all(o for _, o in blocks),
                     "order 10: %d physically contiguous, 4 MiB aligned blocks" % BLOCKS,
                     summary_line or "no answer")
        host.update()
        uncovered, from_soft = [], 0
        populated = set(host.populated)
        for pfn, _ in blocks:
            frames = [offset(pfn * 4096) // CHILD + i for i in range(BLOCK // CHILD)]
            uncovered += [f for f in frames if f in host.discarded]
            from_soft += all(f in populated for f in frames)
        checks.check(blocks and not uncovered,
                     "order 10: every 2 MiB frame of every block is backed on the host",
                     "%d frames left discarded, first at RAM offset 0x%x"
                     % (len(uncovered), uncovered[0] * CHILD) if uncovered else
                     "%d frames" % (len(blocks) * BLOCK // CHILD))
        order10 = sum(1 for o in host.install_orders if o == 10)
        checks.check(from_soft >= 0.75 * BLOCKS and order10 >= from_soft,
                     "order 10: blocks in returned memory had both frames installed",
                     "%d of %d blocks, %d install requests of order 10"
                     % (from_soft, BLOCKS, order10))
        m = re.search(r"llfree_install (\d+) -> (\d+)", summary_line)
        checks.check(m and int(m.group(2)) - int(m.group(1)) >= from_soft,
                     "order 10: guest llfree_install counts >= 1 request per block",
                     m.group(0) if m else summary_line)
        grown = rss(g.pid) - rss_before
        checks.check(grown >= 0.9 * BLOCKS * BLOCK, "order 10: RSS grows by the blocks",
                     "+%d MiB for %d MiB" % (grown // MIB, BLOCKS * BLOCK // MIB))
        checks.check(g.hold_command("verify").startswith("ok"), "order 10: data intact")
        checks.check(g.hold_command("quit").startswith("ok"), "order 10: ha-bigblock quits")
        res = g.wait_exit(120)
    checks.check(res.exit_code == 0, "ha-mem and ha-bigblock exit 0", "exit %s" % res.exit_code)
    console_check(checks, res)
    return summary(checks)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError))
