#!/usr/bin/python3
"""Kernel page allocator benchmark: llfree against the buddy allocator.

Boots each guest kernel (baseline: the stock buddy allocator; llfree) in a VM
of the same size and drives mm/alloc_bench.c through
/sys/kernel/debug/alloc_bench/run (docs/benchmarks.md, "Kernel allocation
benchmark"): modes bulk, repeat and random, orders 0 and 9, 1 to nCPU
threads, each thread a kthread bound to its own CPU. Every round runs every
case once, so that noise from the host spreads over all cases; the kernels
are booted --boots times in alternation (baseline, llfree, baseline, ...),
each boot running one warm-up round and its share of the --reps measured
rounds, so that a change in host load hits both. The table shows, per case
and kernel, the median and the maximum over the rounds of the mean ns per
allocation and per free of the threads, and the ratio of the medians
llfree/buddy (below 1: llfree is faster).

Under TCG (no KVM) absolute times are those of an emulated CPU; compare the
ratios, not the nanoseconds.

With --check it is a smoke test instead (make guest-check): tiny counts, one
round, plus malformed commands that must be refused. A kernel fails it when
the debugfs file is missing, a command fails, a result reports failed
allocations, a malformed command is accepted or the console shows a warning.

Usage: bench/kalloc.py [--quick] [--reps N] [--boots N] [--mem 2G] [--smp 2]
                       [--variant baseline --variant llfree] [--check]
Output: build/bench/kalloc/kalloc-<time>.csv (every thread of every run),
        kalloc-<time>.txt (machine, versions, parameters and the table),
        kalloc-<time>-<variant>[-<boot>].log (serial console).
Exit status 0 pass, 1 fail, 77 skip (a kernel, the initramfs or QEMU missing).
"""

import argparse
import csv
import os
import platform
import re
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
from hyperalloc import vm as guestvm  # noqa: E402

RUN_FILE = "/sys/kernel/debug/alloc_bench/run"
OUT = os.path.join(REPO, "build", "bench", "kalloc")
MODES = ("bulk", "repeat", "random")
ORDERS = (0, 9)

# Blocks per thread: (mode, order) -> count. Two threads of bulk/random hold
# at most 800 MiB, below the kernel's cap (half the free memory) in 2 GiB.
COUNTS = {"full": {("bulk", 0): 100000, ("random", 0): 100000, ("repeat", 0): 100000,
                   ("bulk", 9): 200, ("random", 9): 200, ("repeat", 9): 5000},
          "quick": {("bulk", 0): 20000, ("random", 0): 20000, ("repeat", 0): 20000,
                    ("bulk", 9): 50, ("random", 9): 50, ("repeat", 9): 1000},
          "check": {("bulk", 0): 64, ("random", 0): 64, ("repeat", 0): 64,
                    ("bulk", 9): 4, ("random", 9): 4, ("repeat", 9): 4}}

# Commands the kernel must refuse (--check).
MALFORMED = ("bogus", "bulk order=11", "bulk count=0", "bulk threads=0",
             "bulk threads=%(too_many)d", "bulk gfp=atomic", "bulk count=x",
             "repeat order=0 speed=1")

# Console messages that mean trouble but are not in guestvm.BAD_PATTERNS.
EXTRA_BAD = ("page allocation failure", "rcu: INFO:", "self-detected stall",
             "blocked for more than", "general protection fault")

PARAM_RE = re.compile(r"^mode=(\w+) order=(\d+) count=(\d+) requested=(\d+) threads=(\d+) "
                      r"gfp=(\w+) seed=(\d+)$")
THREAD_RE = re.compile(r"^thread=(\d+) cpu=(-?\d+) allocs=(\d+) frees=(\d+) failures=(\d+) "
                       r"alloc_ns=([\d.]+|-) free_ns=([\d.]+|-)$")
MEAN_RE = re.compile(r"^mean failures=(\d+) alloc_ns=([\d.]+|-) free_ns=([\d.]+|-)$")


def guest_command(counts, rounds, threads, check):
    """Returns the ha.run shell command (no double quotes: see guestvm.Guest)
    that runs every case in each of the given rounds (numbers).

    Each case prints "KALLOC-RUN round=R", then the result file, or
    "KALLOC-ERROR <case>" if the write failed. Kernel messages would break
    result lines on the shared console: they are kept off it during the
    runs (console loglevel 1, emergencies still show) and printed with dmesg
    at the end, where the console checks see them.
    """
    cases = " ".join("%s,order=%d,count=%d" % (m, o, counts[(m, o)])
                     for o in ORDERS for m in MODES)
    cmd = ("R=%s; [ -w $R ] || { echo KALLOC-MISSING; exit 1; }; "
           "dmesg -c > /dev/null; dmesg -n 1; "
           "for r in %s; do for t in %s; do for c in %s; do "
           "echo KALLOC-RUN round=$r; "
           "if echo $c,threads=$t,seed=$((r + 1)) | tr , ' ' > $R; then cat $R; "
           "else echo KALLOC-ERROR $c,threads=$t; fi; done; done; done"
           % (RUN_FILE, " ".join(str(r) for r in rounds),
              " ".join(str(t) for t in threads), cases))
    if check:
        # A refused command drops the last result: the read must fail too.
        for bad in MALFORMED:
            bad = bad % {"too_many": max(threads) + 1}
            cmd += ("; if echo %s > $R; then echo KALLOC-ACCEPTED %s; fi"
                    % (bad, bad.replace(" ", ",")))
        cmd += "; if cat $R; then echo KALLOC-ACCEPTED read-after-error; fi"
    return cmd + "; echo KALLOC-DONE; dmesg"


def parse_output(lines):
    """Returns (runs, problems): runs is a list of dicts, one per result."""
    runs, problems, cur, rnd = [], [], None, None
    for line in lines:
        line = line.strip()
        m = re.match(r"KALLOC-RUN round=(\d+)$", line)
        if m:
            rnd = int(m.group(1))
            continue
        if line.startswith(("KALLOC-ERROR", "KALLOC-MISSING", "KALLOC-ACCEPTED")):
            problems.append(line)
            continue
        m = PARAM_RE.match(line)
        if m:
            cur = {"round": rnd, "mode": m.group(1), "order": int(m.group(2)),
                   "count": int(m.group(3)), "requested": int(m.group(4)),
                   "threads": int(m.group(5)), "gfp": m.group(6), "seed": int(m.group(7)),
                   "per_thread": []}
            continue
        m = THREAD_RE.match(line)
        if m and cur is not None:
            cur["per_thread"].append(dict(zip(
                ("thread", "cpu", "allocs", "frees", "failures", "alloc_ns", "free_ns"),
                m.groups())))
            continue
        m = MEAN_RE.match(line)
        if m and cur is not None:
            cur["failures"] = int(m.group(1))
            cur["alloc_ns"] = float(m.group(2)) if m.group(2) != "-" else None
            cur["free_ns"] = float(m.group(3)) if m.group(3) != "-" else None
            runs.append(cur)
            cur = None
    return runs, problems


def run_variant(variant, args, counts, rounds, threads, log):
    """Boots one kernel and runs every case in the given rounds; returns
    (runs, failed checks), or (None, []) if the kernel is missing."""
    found = guestvm.variant_or_skip(variant)
    if not found:
        return None, []
    kernel, suffix, _ = found
    cmd = guest_command(counts, rounds, threads, args.check)
    start = time.monotonic()
    res = guestvm.run(kernel, timeout=args.timeout, mem=args.mem, smp=args.smp, run=cmd,
                      log_path=log)
    fails = []
    lines = [line for _, line in res.lines]
    if res.timed_out:
        fails.append("timed out after %.0f s" % args.timeout)
    if res.ready_after is None:
        fails.append("no READY line")
    else:
        ready = next(line for line in lines if guestvm.READY in line)
        if not re.search(r"kernel=\S*%s\b" % re.escape(suffix), ready):
            fails.append("wrong kernel: " + ready.strip())
    if res.exit_code != 0:
        fails.append("guest exit status %s, expected 0" % res.exit_code)
    out = res.output_after_ready()
    if not any(line.strip() == "KALLOC-DONE" for line in out):
        fails.append("the command did not finish")
    runs, problems = parse_output(out)
    fails += ["guest: " + p.replace("KALLOC-MISSING", "%s missing" % RUN_FILE)
              for p in problems]
    want = len(rounds) * len(threads) * len(MODES) * len(ORDERS)
    if len(runs) != want:
        fails.append("%d results, expected %d" % (len(runs), want))
    for r in runs:
        if r["failures"]:
            fails.append("%s order %d threads %d: %d failed allocations"
                         % (r["mode"], r["order"], r["threads"], r["failures"]))
        cpus = sorted(int(t["cpu"]) for t in r["per_thread"])
        if cpus != list(range(r["threads"])):
            fails.append("%s order %d threads %d: threads ran on CPUs %s"
                         % (r["mode"], r["order"], r["threads"], cpus))
    fails += ["console: " + l.strip() for l in guestvm.bad_console_lines(lines)][:20]
    fails += ["console: " + l.strip() for l in lines if any(p in l for p in EXTRA_BAD)][:20]
    print("%s %s (%s, %s, %d vCPU, %s): %d results in %.1f s" %
          ("FAIL" if fails else "ok  ", variant, os.path.basename(kernel), args.mem, args.smp,
           guestvm.choose_accel(guestvm.find_qemu(), kernel), len(runs),
           time.monotonic() - start))
    for f in fails[:30]:
        print("    " + f)
    if fails:
        print("    log: " + log)
    sys.stdout.flush()
    return runs, fails


def summarize(results, warmups):
    """Returns {(mode, order, threads): {variant: (alloc, free, count)}} where
    alloc and free are (median, max) over the measured rounds (not in
    warmups) of the threads' mean ns per operation."""
    def stats(values):
        values = [v for v in values if v is not None]
        return (statistics.median(values), max(values)) if values else (None, None)
    table = {}
    for variant, runs in results.items():
        cases = {}
        for r in runs:
            if r["round"] in warmups:
                continue
            cases.setdefault((r["mode"], r["order"], r["threads"]), []).append(r)
        for key, rs in cases.items():
            table.setdefault(key, {})[variant] = (
                stats(r["alloc_ns"] for r in rs), stats(r["free_ns"] for r in rs),
                min(r["count"] for r in rs))
    return table


def fmt(v, digits=0):
    return "-" if v is None else "%.*f" % (digits, v)


def fmt_stats(s):
    return "%s / %s" % (fmt(s[0]), fmt(s[1]))


def ratio(a, b):
    return None if a is None or not b else a / b


def table_lines(table, variants):
    """The result table as Markdown lines: median / max ns per operation,
    ratio of the medians of the second variant to the first."""
    base, other = (variants + [None])[:2]
    head = "| mode | order | threads | count |"
    rule = "|---|---:|---:|---:|"
    for what in ("alloc", "free"):
        for v in variants:
            head += " %s %s ns |" % (v, what)
            rule += "---:|"
        if other:
            head += " %s ratio |" % what
            rule += "---:|"
    lines = [head, rule]
    for mode in MODES:
        for order in ORDERS:
            for threads in sorted({k[2] for k in table}):
                row = table.get((mode, order, threads))
                if not row:
                    continue
                count = min(r[2] for r in row.values())
                line = "| %s | %d | %d | %d |" % (mode, order, threads, count)
                none = ((None, None), (None, None), 0)
                for i, _ in enumerate(("alloc", "free")):
                    for v in variants:
                        line += " %s |" % fmt_stats(row.get(v, none)[i])
                    if other:
                        line += " %s |" % fmt(ratio(row.get(other, none)[i][0],
                                                    row.get(base, none)[i][0]), 2)
                lines.append(line)
    return lines


def write_csv(path, results):
    """One row per thread of every run."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "round", "mode", "order", "threads", "count", "requested", "gfp",
                    "seed", "thread", "cpu", "allocs", "frees", "failures", "alloc_ns",
                    "free_ns"])
        for variant, runs in results.items():
            for r in runs:
                for t in r["per_thread"]:
                    w.writerow([variant, r["round"], r["mode"], r["order"], r["threads"],
                                r["count"], r["requested"], r["gfp"], r["seed"], t["thread"],
                                t["cpu"], t["allocs"], t["frees"], t["failures"],
                                t["alloc_ns"], t["free_ns"]])


def describe_machine(args, variants, started, load):
    """Lines naming what the numbers depend on; started (time.time()) and
    load (os.getloadavg()) are from the start of the measurement."""
    def sh(*argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  cwd=REPO, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    qemu = guestvm.find_qemu()
    lines = ["date: %s, %.0f s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                                   time.time() - started),
             "commit: %s" % sh("git", "describe", "--always", "--dirty"),
             "host: %s, %d CPUs, Linux %s, load average %s at the start, %s at the end" %
             (cpu, os.cpu_count(), platform.release(), " ".join("%.2f" % l for l in load),
              " ".join("%.2f" % l for l in os.getloadavg())),
             "qemu: %s (%s)" % (sh(qemu, "--version").splitlines()[0] if qemu else "?", qemu),
             "vm: %s, %d vCPUs, q35" % (args.mem, args.smp)]
    for v in variants:
        image = os.path.join(guestvm.GUEST_DIR, guestvm.VARIANTS[v][0])
        if os.path.exists(image):
            lines.append("kernel %s: %s, accel %s" % (v, os.path.relpath(image, REPO),
                                                      guestvm.choose_accel(qemu, image)))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", choices=sorted(guestvm.VARIANTS),
                    help="kernel to measure, repeatable (default: baseline and llfree); "
                         "the first is the reference of the ratio")
    ap.add_argument("--mem", default=None, help="VM memory (default 2G, --check 512M)")
    ap.add_argument("--smp", type=int, default=2, help="vCPUs; threads run 1..smp (default 2)")
    ap.add_argument("--reps", type=int, default=None,
                    help="measured rounds after one warm-up round (default 10, --quick 3)")
    ap.add_argument("--boots", type=int, default=None,
                    help="boots per kernel, alternating between the kernels; each boot "
                         "runs one warm-up round and its share of --reps (default 2, "
                         "--quick 1)")
    ap.add_argument("--quick", action="store_true", help="smaller counts, 3 rounds")
    ap.add_argument("--check", action="store_true",
                    help="smoke test: tiny counts, one round, malformed commands")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per boot")
    args = ap.parse_args()
    variants = args.variant or ["baseline", "llfree"]
    if args.mem is None:
        args.mem = "512M" if args.check else "2G"
    if args.smp < 1:
        ap.error("--smp must be at least 1")
    # Round numbers: boot b runs rounds[b]; the first of each is a warm-up.
    if args.check:
        counts, rounds, warmups = COUNTS["check"], [[0]], set()
    else:
        reps = args.reps if args.reps is not None else (3 if args.quick else 10)
        boots = args.boots if args.boots is not None else (1 if args.quick else 2)
        if reps < 1 or boots < 1 or boots > reps:
            ap.error("need 1 <= --boots <= --reps")
        counts = COUNTS["quick" if args.quick else "full"]
        rounds, first = [], 0
        for b in range(boots):
            n = 1 + reps // boots + (b < reps % boots)
            rounds.append(list(range(first, first + n)))
            first += n
        warmups = {r[0] for r in rounds}
    threads = list(range(1, args.smp + 1))

    os.makedirs(OUT, exist_ok=True)
    started, load = time.time(), os.getloadavg()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    results, failed, skipped = {}, set(), set()
    for b, boot_rounds in enumerate(rounds):
        for v in variants:
            if v in skipped:
                continue
            log = os.path.join(OUT, "kalloc-%s-%s%s.log" % (
                stamp, v, "-%d" % b if len(rounds) > 1 else ""))
            runs, fails = run_variant(v, args, counts, boot_rounds, threads, log)
            if runs is None:
                skipped.add(v)
                continue
            if fails:
                failed.add(v)
            results.setdefault(v, []).extend(runs)
    if args.check:
        print("%d passed, %d failed, %d skipped" %
              (len(results) - len(failed), len(failed), len(skipped)))
        return 1 if failed else 77 if skipped else 0
    if not results:
        return 77

    measured = [v for v in variants if v in results]
    lines = describe_machine(args, variants, started, load)
    lines.append("rounds: %d boot(s) per kernel, alternating; each boot 1 warm-up round, "
                 "%d measured rounds in all; seed = round + 1"
                 % (len(rounds), sum(len(r) for r in rounds) - len(warmups)))
    lines.append("values: ns per operation, mean over the threads of a run; "
                 "median / max over the measured rounds; ratio of the medians")
    lines.append("command: %s" % " ".join(["bench/kalloc.py"] + sys.argv[1:]))
    lines.append("")
    lines += table_lines(summarize(results, warmups), measured)
    capped = {(r["mode"], r["order"], r["threads"]) for runs in results.values()
              for r in runs if r["count"] != r["requested"]}
    if capped:
        lines.append("")
        lines.append("capped by the kernel (half the free memory): %s"
                     % ", ".join("%s/%d/%d" % c for c in sorted(capped)))
    csv_path = os.path.join(OUT, "kalloc-%s.csv" % stamp)
    txt_path = os.path.join(OUT, "kalloc-%s.txt" % stamp)
    write_csv(csv_path, results)
    lines.append("")
    lines.append("raw data: %s" % os.path.relpath(csv_path, REPO))
    with open(txt_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("summary: %s" % os.path.relpath(txt_path, REPO))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
