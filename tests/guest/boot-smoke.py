#!/usr/bin/python3
"""Boot smoke test of a guest kernel variant under QEMU TCG.

Boots build/guest/<variant kernel> with the initramfs on a q35 machine with
512 MiB and 4 GiB, 1 and 2 vCPUs; in each the guest runs a trivial command
that prints the kernel release, CPU count and MemTotal and exits with a
known status. Checks: READY line, exit status passed through, QEMU exits after
poweroff, the guest sees the configured CPUs and memory and runs the expected
variant, no WARNING:/BUG:/Oops/panic on the console. One more boot checks the
interactive shell on the console.

Usage: tests/guest/boot-smoke.py [--variant baseline] [--quick] [--timeout S]
Exit status 0 pass, 1 fail, 77 skip (kernel, initramfs or QEMU missing).
Serial logs: build/tests/guest/boot-<variant>-<mem>-<cpus>.log
"""

import argparse
import os
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
from hyperalloc import vm as guestvm  # noqa: E402

MIB = {"512M": 512, "4G": 4096}


def check_run(res, want_exit, want_cpus, mem_mib, suffix):
    """Returns the list of failed checks of one ha.run boot."""
    fails = []
    if res.timed_out:
        fails.append("timed out")
    if res.ready_after is None:
        fails.append("no READY line")
    if res.exit_code != want_exit:
        fails.append("exit status %s, expected %d" % (res.exit_code, want_exit))
    if res.qemu_status != 0:
        fails.append("QEMU exit status %s, expected 0 (poweroff)" % res.qemu_status)
    out = res.output_after_ready()
    if not any(line.strip().endswith(suffix) for line in out):
        fails.append("uname -r does not end in %s" % suffix)
    if not any(line.strip() == "cpus=%d" % want_cpus for line in out):
        fails.append("guest does not report cpus=%d" % want_cpus)
    mem = [int(m.group(1)) for m in (re.search(r"MemTotal:\s+(\d+) kB", l) for l in out) if m]
    if not mem:
        fails.append("no MemTotal")
    elif not 0.8 * mem_mib * 1024 <= mem[0] <= mem_mib * 1024:
        fails.append("MemTotal %d kB for %d MiB" % (mem[0], mem_mib))
    fails += ["console: " + l for l in res.bad_lines()]
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="baseline", choices=sorted(guestvm.VARIANTS))
    ap.add_argument("--quick", action="store_true", help="only 512M with 1 vCPU")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per boot")
    args = ap.parse_args()

    found = guestvm.variant_or_skip(args.variant)
    if not found:
        return 77
    kernel, suffix, qemu = found
    print("kernel %s, qemu %s" % (kernel, qemu))

    logs = os.path.join(guestvm.REPO, "build", "tests", "guest")
    matrix = [("512M", 1), ("512M", 2), ("4G", 1), ("4G", 2)]
    if args.quick:
        matrix = matrix[:1]
    failed = 0
    for i, (mem, cpus) in enumerate(matrix):
        want_exit = 40 + i
        cmd = "uname -r; echo cpus=$(nproc); grep MemTotal /proc/meminfo; exit %d" % want_exit
        log = os.path.join(logs, "boot-%s-%s-%d.log" % (args.variant, mem, cpus))
        start = time.monotonic()
        res = guestvm.run(kernel, timeout=args.timeout, mem=mem, smp=cpus, run=cmd,
                          log_path=log)
        total = time.monotonic() - start
        fails = check_run(res, want_exit, cpus, MIB[mem], suffix)
        ready = "%.1f s (guest uptime %.1f s)" % (res.ready_after, res.ready_uptime) \
            if res.ready_after is not None else "never"
        print("%s %-4s %d vCPU: ready after %s, total %.1f s" %
              ("FAIL" if fails else "ok  ", mem, cpus, ready, total))
        for f in fails:
            print("    " + f)
        if fails:
            print("    log: " + log)
            failed += 1

    # The console shell: no ha.run, type a command, exit, the guest powers off.
    log = os.path.join(logs, "boot-%s-shell.log" % args.variant)
    with guestvm.Guest(kernel, mem="512M", smp=1, log_path=log) as g:
        fails = []
        if not g.wait_for(guestvm.READY, args.timeout):
            fails.append("no READY line")
        else:
            time.sleep(1)  # let the shell start reading
            g.send("echo SHELL-$((6 * 7))\nexit\n")
            if not g.wait_for("SHELL-42", 60):
                fails.append("shell did not answer")
        res = g.wait_exit(60)
        if res.qemu_status != 0:
            fails.append("QEMU exit status %s after the shell exited" % res.qemu_status)
        fails += ["console: " + l for l in res.bad_lines()]
    print("%s shell on ttyS0" % ("FAIL" if fails else "ok  "))
    for f in fails:
        print("    " + f)
    if fails:
        print("    log: " + log)
        failed += 1

    boots = len(matrix) + 1
    print("%d passed, %d failed" % (boots - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
