#!/usr/bin/python3
"""Memory stress test of a guest kernel variant under QEMU TCG.

Boots build/guest/<variant kernel> with the initramfs (q35, -accel tcg,thread=multi)
with 1 vCPU/512 MiB, 2 vCPUs/512 MiB and 2 vCPUs/4 GiB. In each guest
`ha-mem stress` fills and verifies 65 % of MemTotal on every vCPU (4 KiB
anonymous pages, THP under fragmentation, tmpfs page cache, fork/COW churn),
then `ha-mem oom` allocates until the OOM killer ends its child and checks
that the system still works.

A case passes when: the guest runs the expected kernel, both commands report
ok and no integrity error, the guest exits 0 and powers off, and the console
shows no WARNING:, BUG:, Oops, panic, UBSAN:, page allocation failure, RCU
stall or hung task, and no "Call Trace:" except inside an OOM-killer report
whose trace goes through out_of_memory(). The OOM killer may only strike
during `ha-mem oom` and only its child (oom_score_adj 1000).

With --device (llfree kernels) the guest also has virtio-llfree-balloon in
auto mode (every 500 ms): the host reclaims what the stress frees and every
allocation of reclaimed memory installs it again, so the driver's install
paths (sleeping and atomic) run under the same checks.

Usage: tests/guest/stress.py [--variant llfree] [--device] [--quick] [--duration S] [--seed N]
Prints one line per case and closes with "N passed, N failed".
Exit status 0 pass, 1 fail, 77 skip (kernel, initramfs or QEMU missing).
Serial logs: build/tests/guest/stress-<variant>-<mem>-<cpus>.log
"""

import argparse
import os
import random
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
from hyperalloc import vm as guestvm  # noqa: E402

# Console messages that mean trouble but are not in guestvm.BAD_PATTERNS.
EXTRA_BAD = ("page allocation failure", "rcu: INFO:", "self-detected stall",
             "blocked for more than", "general protection fault", "segfault at")

STRESS_SLACK = 200  # seconds a stress run may overrun its duration in the guest
OOM_TIMEOUT = 180   # seconds the oom child may take in the guest


def case_command(size, duration, rounds, seed, slow):
    """Returns the ha.run command of one case; slow multiplies the guest's
    timeouts (for a debug kernel)."""
    stress = "ha-mem stress --size %s --duration %d --seed %d --timeout %d --progress 10 " \
             "--drop-caches --enable-thp" % (size, duration, seed,
                                            duration + STRESS_SLACK * slow)
    if rounds:
        stress += " --rounds %d" % rounds
    oom = "ha-mem oom --seed %d --timeout %d" % (seed, OOM_TIMEOUT * slow)
    return ("%s; s=$?; %s; o=$?; echo HA-STRESS-STATUS stress=$s oom=$o; "
            "[ $s = 0 ] && [ $o = 0 ]" % (stress, oom))


def check_case(res, suffix):
    """Returns (failed checks, summary) of one case."""
    fails = []
    lines = [line for _, line in res.lines]
    if res.timed_out:
        fails.append("timed out")
    if res.ready_after is None:
        fails.append("no READY line")
    else:
        ready = next(line for line in lines if guestvm.READY in line)
        if not re.search(r"kernel=\S*%s\b" % re.escape(suffix), ready):
            fails.append("wrong kernel: " + ready.strip())
    if res.exit_code != 0:
        fails.append("guest exit status %s, expected 0" % res.exit_code)
    if res.qemu_status != 0 and not res.timed_out:
        fails.append("QEMU exit status %s, expected 0 (poweroff)" % res.qemu_status)

    out = res.output_after_ready()
    stress_ok = [l for l in out if "ha-mem: stress ok:" in l]
    oom_ok = [l for l in out if "ha-mem: oom ok:" in l]
    if not stress_ok:
        fails.append("no 'ha-mem: stress ok' line")
    if not oom_ok:
        fails.append("no 'ha-mem: oom ok' line")
    fails += ["guest: " + l.strip() for l in out if "ha-mem: ERROR" in l or " FAILED" in l][:20]

    # Console: bad patterns (OOM reports excepted), and who the OOM killer hit.
    fails += ["console: " + l.strip() for l in guestvm.bad_console_lines(lines, True)][:20]
    fails += ["console: " + l.strip() for l in lines if any(p in l for p in EXTRA_BAD)][:20]
    oom_start = next((i for i, l in enumerate(lines) if "ha-mem: oom: seed" in l), len(lines))
    for i, line in enumerate(lines):
        if not any(v in line for v in guestvm.OOM_VICTIM):
            continue
        if i < oom_start:
            fails.append("OOM kill before 'ha-mem oom' started: " + line.strip())
        elif "oom_score_adj:1000" not in line:
            fails.append("OOM killer chose a task other than the oom child: " + line.strip())

    # Summary: what the run did, and how MemFree compares (a leak hint, not a check).
    summary = []
    m = re.search(r"stress ok: (\d+) MiB verified, (\d+) rounds", stress_ok[0]) if stress_ok else None
    if m:
        summary.append("stress %s MiB verified in %s rounds" % m.groups())
    m = next((re.search(r"THP (\d+) of (\d+) MiB.*MemFree (\d+) -> (\d+) MiB", l)
              for l in out if "ha-mem: stress:" in l and "MemFree" in l and "->" in l), None)
    if m:
        summary.append("THP %s/%s MiB" % m.group(1, 2))
        summary.append("MemFree %s -> %s MiB" % m.group(3, 4))
    m = re.search(r"oom ok: child (.*?) after (\d+) MiB", oom_ok[0]) if oom_ok else None
    if m:
        summary.append("oom child %s after %s MiB" % m.groups())
    return fails, ", ".join(summary)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="llfree", choices=sorted(guestvm.VARIANTS))
    ap.add_argument("--quick", action="store_true",
                    help="only 2 vCPUs/512 MiB with a short stress run")
    ap.add_argument("--duration", type=int, default=None,
                    help="seconds of stress per 512 MiB case (default 20, quick 5); "
                         "the 4 GiB case runs one round")
    ap.add_argument("--size", default="65%", help="ha-mem stress --size (default 65%%)")
    ap.add_argument("--seed", type=int, default=None, help="pattern seed (default random)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per boot (default: enough for the guest's own timeouts)")
    ap.add_argument("--device", action="store_true",
                    help="add virtio-llfree-balloon in auto mode (llfree kernels)")
    ap.add_argument("--slow", type=int, default=1,
                    help="multiply the guest's timeouts (a KASAN kernel is several "
                         "times slower)")
    args = ap.parse_args()

    found = guestvm.variant_or_skip(args.variant)
    if not found:
        return 77
    kernel, suffix, qemu = found
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    duration = args.duration if args.duration is not None else (5 if args.quick else 20)
    print("kernel %s, qemu %s, seed %d" % (kernel, qemu, seed))

    # (memory, vCPUs, stress duration, rounds)
    matrix = [("512M", 1, duration, 0), ("512M", 2, duration, 0), ("4G", 2, 0, 1)]
    if args.quick:
        matrix = [("512M", 2, duration, 0)]
    device = guestvm.llfree_device_args(auto_mode=True, interval_ms=500) if args.device else []
    logs = os.path.join(guestvm.REPO, "build", "tests", "guest")
    passed = failed = 0
    for mem, cpus, dur, rounds in matrix:
        log = os.path.join(logs, "stress-%s-%s-%d.log" % (args.variant, mem, cpus))
        timeout = args.timeout or dur + (STRESS_SLACK + OOM_TIMEOUT) * args.slow + 120
        start = time.monotonic()
        res = guestvm.run(kernel, timeout=timeout, mem=mem, smp=cpus,
                          run=case_command(args.size, dur, rounds, seed, args.slow),
                          qemu_args=device, log_path=log)
        total = time.monotonic() - start
        fails, summary = check_case(res, suffix)
        print("%s %-4s %d vCPU: %s; %.1f s" % ("FAIL" if fails else "ok  ", mem, cpus,
                                               summary or "no summary", total))
        for f in fails:
            print("    " + f)
        if fails:
            print("    log: " + log)
            failed += 1
        else:
            passed += 1
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
