#!/usr/bin/python3
"""End-to-end: a malicious guest cannot crash QEMU or make it discard memory
outside the VM.

Boots build/guest/bzImage (2 GiB, 2 vCPUs, the kernel told to use 1 GiB)
with virtio_llfree_balloon.fault_inject=1, whose debugfs file `inject`
sends malformed zone
registrations and install requests and overwrites the shared llfree arrays
(see the driver). The device runs in auto mode every 500 ms, so it keeps
reading the arrays, and QEMU traces every discard to a file. For each
malformed request:

  - the device refuses it with the status docs/protocol.md gives for the
    broken rule (traced by QEMU), or marks itself broken (virtio_error),
    after which the driver resets it; a broken device is brought back by a
    system reset; a well-formed request among them is accepted;
  - QEMU keeps running and answers QMP.

A truncated request must break the device; the driver then resets it and
takes back all memory the host had (protocol section 10).

Then the guest overwrites its tree and child arrays with garbage while the
host shrinks and grows the VM and auto mode scans them. At the end QEMU is
alive, has logged no assertion, and every discard it traced lies inside the
guest's RAM. Before the corruption, a stress run verifies that refused
requests left the guest's data alone.

"""

import os
import re
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import GIB, MIB, QMP, REPO, Checks, QMPError, run_test, vm  # noqa: E402

RAM = 2 * GIB
INJECT = "/sys/kernel/debug/virtio_llfree_balloon/inject"
REGISTERED = "zones registered"
BROKEN = "device broken"

# Protocol status codes (docs/protocol.md section 6)
S_INVALID, S_VERSION, S_NO_ZONE, S_EXISTS, S_ADDRESS = 1, 2, 3, 4, 5

# The guest kernel uses only the first GiB of the VM's RAM (mem=1G): the
# registrations below describe a zone with id 3 in the second GiB, which no
# registered zone covers, so the device gets to check their addresses. Values
# not named are zone 0's (the DMA zone: its frame count and array lengths).
FAKE = "zone zone=3 type=2 base_pfn=0x40000"
FAKE_ARRAYS = "trees_gpa=0x50000000 lower_gpa=0x50100000"

# (what, inject command, status the device must answer: docs/protocol.md
# section 9 names it for the first rule a request breaks). A well-formed
# zone cannot be made here: the zeroed arrays at FAKE_ARRAYS do not attach.
REQUESTS = [
    ("zone id beyond max_zones", "zone zone=4096", {S_INVALID}),
    ("zone 0 registered twice", "zone", {S_EXISTS}),
    ("unknown protocol version", FAKE + " version=65535", {S_VERSION}),
    ("unknown zone type", FAKE + " type=200", {S_INVALID}),
    ("frames of a registered zone", "zone zone=3 type=2 " + FAKE_ARRAYS, {S_EXISTS}),
    ("trees outside RAM", FAKE + " trees_gpa=0xfffffffff000", {S_ADDRESS}),
    ("lower array outside RAM", FAKE + " lower_gpa=0x7ffffffff000", {S_ADDRESS}),
    ("arrays of a registered zone", FAKE, {S_INVALID}),
    ("trees overlap lower", FAKE + " trees_gpa=0x50100000 lower_gpa=0x50100000", {S_INVALID}),
    ("array length off the formula", FAKE + " trees_len=8 " + FAKE_ARRAYS, {S_INVALID}),
    ("frames beyond llfree's limit", FAKE + " frames=0xffffffffffff " + FAKE_ARRAYS, {S_INVALID}),
    ("unaligned base pfn", FAKE + " base_pfn=0x40001 " + FAKE_ARRAYS, {S_INVALID}),
    ("base pfn beyond RAM", FAKE + " base_pfn=0x100000000 " + FAKE_ARRAYS, {S_ADDRESS}),
    ("zero cores", FAKE + " cores=0 " + FAKE_ARRAYS, {S_INVALID}),
    ("free counter outside RAM", FAKE + " free_pages_gpa=0xfffffffffff8 " + FAKE_ARRAYS,
     {S_ADDRESS}),
    ("unaligned free counter", FAKE + " free_pages_gpa=0x40000001 " + FAKE_ARRAYS, {S_INVALID}),
    ("install in an unknown zone", "install 77 0 9", {S_NO_ZONE}),
    ("install beyond the zone", "install 0 4503599627369984 9", {S_INVALID}),
    ("install of an unaligned frame", "install 0 1 9", {S_INVALID}),
    ("install below order 9", "install 0 0 3", {S_INVALID}),
    ("install above the maximum order", "install 0 0 200", {S_INVALID}),
    # a chain of the wrong size: the device breaks, the driver resets it and
    # takes its memory back (protocol sections 9 and 10)
    ("truncated registration", "truncated", set()),
]

# byte offsets into the arrays of zone 0 and garbage to store there
CORRUPTION = [("trees", 0, 0xffffffffffffffff), ("trees", 8, 0x1234567890abcdef),
              ("lower", 0, 0xffffffffffffffff), ("lower", 4096, 0xdeadbeefdeadbeef),
              ("lower", 1 << 20, 0x8000800080008000)]


class Vm:
    """The guest, its QMP connection and helpers to recover a broken device."""

    def __init__(self, g, qmp):
        self.g, self.qmp = g, qmp

    def count(self, text):
        return sum(1 for _, line in self.g.result.lines if text in line)

    def ready(self, boots, timeout=120):
        """Waits for boot number `boots` to have its shell and zones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count("@@SHELL-READY") >= boots and self.count(REGISTERED) >= boots:
                return True
            time.sleep(0.2)
        return False

    def alive(self):
        try:
            self.qmp.execute("query-llfree-balloon")
            return True
        except (QMPError, OSError):
            return False


def trace_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def device_status(path, offset):
    """Status of the first zone or install answer traced after offset."""
    with open(path, errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = re.search(r"virtio_llfree_balloon_(?:zone|install)_result .*status=(\d+)", line)
            if m:
                return int(m.group(1))
    return None


def discards_outside(trace_path):
    """Discard trace lines whose range is not inside [0, RAM)."""
    bad = []
    with open(trace_path, errors="replace") as f:
        for line in f:
            m = re.search(r"virtio_llfree_balloon_discard offset=0x([0-9a-f]+) "
                          r"size=0x([0-9a-f]+)", line)
            if m and int(m.group(1), 16) + int(m.group(2), 16) > RAM:
                bad.append(line.strip())
    return bad


def main():
    found = vm.variant_or_skip("llfree")
    if not found:
        return 77
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="ha-e2e-")
    sock = os.path.join(tmp, "qmp.sock")
    trace = os.path.join(REPO, "build", "tests", "e2e", "malicious-trace.log")
    os.makedirs(os.path.dirname(trace), exist_ok=True)
    if os.path.exists(trace):
        os.unlink(trace)
    args = vm.llfree_device_args(sock, auto_mode=True, interval_ms=500) + [
        "-trace", "enable=virtio_llfree_balloon_*,file=%s" % trace]
    log = os.path.join(REPO, "build", "tests", "e2e", "malicious.log")
    with vm.Guest(found[0], mem="2G", smp=2, run=vm.SHELL_SERVER, qemu_args=args,
                  append="virtio_llfree_balloon.fault_inject=1 mem=1G", log_path=log,
                  reboot=True) as g:
        qmp = QMP.connect(sock, retry_for=10)
        v = Vm(g, qmp)
        boots = 1
        checks.check(v.ready(boots), "driver registered its zones")
        status, out = g.shell("test -w %s && sed -n 2p /proc/llfree" % INJECT)
        checks.check(status == 0, "fault injection available", " ".join(out))
        refused = broken = 0
        for what, cmd, expected in REQUESTS:
            was_broken = v.count(BROKEN)
            traced = trace_size(trace)
            status, out = g.shell("echo %s > %s" % (cmd, INJECT), timeout=60)
            time.sleep(0.5)
            now_broken = v.count(BROKEN) > was_broken or any(BROKEN in o for o in out)
            answer = device_status(trace, traced)
            ok = v.alive() and status != 0 and (answer in expected or now_broken)
            checks.check(ok, what, "%s, device status %s (want %s)" % (
                "device broken" if now_broken else "write failed" if status else "accepted",
                answer, "/".join(map(str, sorted(expected)))))
            refused += status not in (0, None)
            if now_broken or status is None:
                broken += 1
                qmp.execute("system_reset")
                boots += 1
                if not checks.check(v.ready(boots), "guest back after reset (%d)" % boots):
                    break
        print("   %d refused with an error status, %d broke the device" % (refused, broken))
        checks.check(broken >= 1 and v.count("are the guest's again") >= 1,
                     "a broken device is reset by the driver, which takes its memory back")

        status, out = g.shell("ha-mem stress --size 512M --duration 15 > /tmp/s.log 2>&1; "
                              "s=$?; tail -n 1 /tmp/s.log; [ $s = 0 ]", timeout=300)
        checks.check(status == 0, "guest data intact after the refused requests",
                     " ".join(out[-1:]))

        for array, offset, value in CORRUPTION:
            g.shell("echo poke 0 %s %d %d > %s" % (array, offset, value, INJECT), timeout=30)
        for target in (RAM // 2, RAM, 512 * MIB, RAM):
            try:
                qmp.execute("llfree-balloon", {"value": target})
            except QMPError as e:
                print("   llfree-balloon %d MiB: %s" % (target // MIB, e))
            time.sleep(2)
        time.sleep(3)
        checks.check(v.alive(), "QEMU survives corrupted shared arrays")
        qmp.execute("quit")
        res = g.wait_exit(60)
    outside = discards_outside(trace)
    with open(trace, errors="replace") as f:
        discards = sum(1 for line in f if "virtio_llfree_balloon_discard" in line)
    checks.check(discards > 0 and not outside, "every discard inside guest RAM",
                 "%d discards traced, %d outside: %s" % (discards, len(outside), outside[:2]))
    crashed = [line for _, line in res.lines
               if re.search(r"assert|Assertion|Aborted|core dumped|qemu-system.*:.*error", line)]
    checks.check(res.qemu_status == 0 and not crashed, "QEMU exited cleanly",
                 "status %s %s" % (res.qemu_status, crashed[:2]))
    # the guest console may show the corrupted allocator's warnings: only
    # QEMU's survival and the discards are judged here
    print("%d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    run_test(main, (QMPError, OSError))
