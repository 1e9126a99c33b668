#!/usr/bin/python3
"""End-to-end: suspend to RAM, resume and kexec with virtio-llfree-balloon.

Boots build/guest/bzImage (2 GiB, 2 vCPUs, S3 enabled) with the device
(auto mode on, 500 ms) and shrinks it to 1 GiB while `ha-mem hold` keeps
256 MiB of verified data. Checks:

  1. suspend to RAM (echo mem > /sys/power/state; QMP system_wakeup): the
     driver stops HyperAlloc on the way down (device reset, every frame the
     host took is the guest's again) and registers anew on resume; the
     device re-applies the 1 GiB target; the held data verifies; a grow and
     1 GiB of fresh allocations (installs) verify too;
  2. kexec into the same kernel (guest/tools/ha-kexec.c, kexec_file_load)
     while auto mode keeps reclaiming: the reboot notifier resets the
     device before the next kernel runs, so the host stops touching the old
     kernel's arrays; the new kernel registers, the target is re-applied,
     and 1 GiB of stress verifies in it;
  3. the console of both kernels is clean. The VM ends with QMP quit (see
     the end of main()).

"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, finish, QMPError, run_test, settle,
                 vm)  # noqa: E402

RAM = 2 * GIB
TARGET = 1 * GIB


def count(g, text):
    return sum(1 for _, line in g.result.lines if text in line)


def wait_count(g, text, n, timeout):
    """Waits until text appeared on n console lines."""
    deadline = time.monotonic() + timeout
    while count(g, text) < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def at_target(qmp, timeout=120):
    deadline = time.monotonic() + timeout
    info = qmp.execute("query-llfree-balloon")
    while abs(info["actual"] - TARGET) > CHILD and time.monotonic() < deadline:
        time.sleep(0.5)
        info = qmp.execute("query-llfree-balloon")
    return info


def suspend_resume(checks, g, qmp):
    """Suspends the guest to RAM, wakes it over QMP; checks the device."""
    registered = count(g, "zones registered")
    done = {}
    shell = threading.Thread(target=lambda: done.update(
        r=g.shell("echo mem > /sys/power/state", timeout=300)))
    shell.start()
    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        state = qmp.execute("query-status")["status"]
        if state == "suspended":
            break
        time.sleep(0.2)
    info = qmp.execute("query-llfree-balloon")
    checks.check(state == "suspended" and info["actual"] == RAM,
                 "suspended: device reset, full size",
                 "status %s, actual %d MiB" % (state, info["actual"] // MIB))
    qmp.execute("system_wakeup")
    shell.join(300)
    status = done.get("r", (None, []))[0]
    checks.check(status == 0, "resumed")
    checks.check(wait_count(g, "zones registered", registered + 1, 60),
                 "driver registered again on resume")
    info = at_target(qmp)
    checks.check(abs(info["actual"] - TARGET) <= CHILD, "target re-applied after resume",
                 "actual %d MiB" % (info["actual"] // MIB))


def kexec(checks, g, qmp):
    """Reboots the guest into the same kernel with kexec; checks the device."""
    shells = count(g, "@@SHELL-READY")
    registered = count(g, "zones registered")
    cmdline = "console=ttyS0 panic=-1 oops=panic ha.run=%s" % vm.SHELL_SERVER
    g.send("mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt && "
           "ha-kexec /mnt/bzImage /mnt/initramfs.cpio.gz '%s'\n" % cmdline)
    checks.check(wait_count(g, "@@SHELL-READY", shells + 1, 180), "kexec: next kernel up")
    checks.check(wait_count(g, "zones registered", registered + 1, 60),
                 "kexec: next kernel registered its zones")
    info = at_target(qmp)
    checks.check(abs(info["actual"] - TARGET) <= CHILD, "kexec: target re-applied",
                 "actual %d MiB" % (info["actual"] // MIB))
    status, out = g.shell("ha-mem stress --size 1G --duration 20 2>&1 | tail -n 2", timeout=300)
    checks.check(status == 0 and not any("ERROR" in line for line in out),
                 "kexec: stress in the next kernel verifies", " | ".join(out[-2:]))


def main():
    found = vm.variant_or_skip("llfree")
    if not found or not shutil.which("mkfs.ext4"):
        return 77
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="ha-e2e-")
    try:
        root = os.path.join(tmp, "root")
        os.makedirs(root)
        shutil.copy(found[0], os.path.join(root, "bzImage"))
        shutil.copy(vm.INITRAMFS, os.path.join(root, "initramfs.cpio.gz"))
        image = os.path.join(tmp, "boot.img")
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, image, "64M"], check=True,
                       stdout=subprocess.DEVNULL)
        sock = os.path.join(tmp, "qmp.sock")
        args = vm.llfree_device_args(sock, auto_mode=True, interval_ms=500) + [
            "-global", "ICH9-LPC.disable_s3=0",
            "-drive", "file=%s,if=virtio,format=raw" % image]
        log = os.path.join(REPO, "build", "tests", "e2e", "power.log")
        with vm.Guest(found[0], mem="2G", smp=2, run=vm.SHELL_SERVER, qemu_args=args,
                      log_path=log) as g:
            checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
            qmp = QMP.connect(sock, retry_for=10)
            status, _ = g.shell("mkfifo /tmp/hold.in && (ha-mem hold 256M < /tmp/hold.in "
                                "> /tmp/hold.log 2>&1 &) && exec 7> /tmp/hold.in")
            checks.check(status == 0, "ha-mem hold started")
            qmp.execute("llfree-balloon", {"value": TARGET})
            info, _ = settle(qmp, 120)
            checks.check(abs(info["actual"] - TARGET) <= CHILD, "shrink to 1 GiB",
                         "actual %d MiB" % (info["actual"] // MIB))

            suspend_resume(checks, g, qmp)
            status, out = g.shell("echo verify >&7; sleep 5; tail -n 1 /tmp/hold.log")
            checks.check(status == 0 and out[-1:] and out[-1].startswith("ok "),
                         "held data verifies after resume", " ".join(out[-1:]))
            qmp.execute("llfree-balloon", {"value": RAM})
            settle(qmp, 60)
            status, out = g.shell("ha-mem stress --size 1G --rounds 1 --phases anon 2>&1 "
                                  "| tail -n 1", timeout=600)
            checks.check(status == 0 and not any("ERROR" in line for line in out),
                         "1 GiB of installs after resume verify", " | ".join(out[-1:]))
            qmp.execute("llfree-balloon", {"value": TARGET})
            at_target(qmp)

            kexec(checks, g, qmp)
            # not a guest power-off: after an S3 resume QEMU 7.2 acts on the
            # ACPI S5 request late, so reboot(2) returns and do_exit() warns,
            # with the baseline kernel and without the device as well
            qmp.execute("quit")
            res = g.wait_exit(60)
        return finish(checks, res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError, subprocess.CalledProcessError))
