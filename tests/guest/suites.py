"""Runs a guest-side test suite in the baseline and the llfree kernel and
compares them (Python 3 standard library). Used by tests/guest/vm_selftests.py
and tests/guest/stressng.py.

A suite is a guest command (guest/tools/ha-vmtests.sh, ha-stressng.sh) that
prints, per test,

    @@TEST-BEGIN <n> <name> timeout=<s>
    @@TEST-END <n> <name> <PASS|FAIL|SKIP|TIMEOUT> rc=<rc> secs=<s> before=<KiB> after=<KiB> [note]

and @@TEST-DONE at the end; before/after are settled MemFree readings
(guest/tools/ha-ledger.sh) around the test, and it takes --from N to start
at test N. run_suite() boots the guest and watches: a test whose END line
does not come within its timeout + SLACK seconds is a HANG (QEMU is killed),
a guest that powers off or panics before it is a CRASH; either way the
guest is booted again with --from <next test>, so one hang costs one test.

Each test of a kernel gets a verdict (Outcome.ok): it passed (or skipped,
the guest said why), lost at most the tolerance of MemFree, and no kernel
message between its BEGIN and the next test's BEGIN matches BAD_PATTERNS
(WARNING, BUG, Oops, page allocation failure, an llfree "... failed", ...).
compare() fails the suite where llfree does worse than baseline (a test
baseline passes and llfree does not) and wherever a kernel loses memory or
prints a bad message.
"""

import concurrent.futures
import hashlib
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
from hyperalloc import vm  # noqa: E402

CACHE = os.environ.get("HYPERALLOC_CACHE", "/var/cache/hyperalloc")
SLACK = 90  # seconds beyond a test's own timeout: ledger settles, set-up

BEGIN = re.compile(r"@@TEST-BEGIN (\d+) (\S+) timeout=(\d+)")
END = re.compile(r"@@TEST-END (\d+) (\S+) (PASS|FAIL|SKIP|TIMEOUT) rc=(\S+) secs=(\d+) "
                 r"before=(\S+) after=(\S+) ?(.*)$")
DONE = "@@TEST-DONE"
# A kernel message: printk's timestamp (CONFIG_PRINTK_TIME), anywhere in the
# line, since it may interrupt a test's own output.
KMSG = re.compile(r"\[\s*\d+\.\d{6}\] (.*)$")
# Kernel messages that fail the test during which they appear.
BAD_PATTERNS = vm.BAD_PATTERNS + (
    "page allocation failure", "rcu: INFO:", "self-detected stall",
    "blocked for more than", "general protection fault", "Bad page", "failed")


class Outcome:
    """One test in one kernel."""

    def __init__(self, n, name):
        self.n, self.name = n, name
        self.status = None     # PASS FAIL SKIP TIMEOUT, HANG or CRASH (host), None: not run
        self.rc = None
        self.secs = None
        self.before = self.after = None   # MemFree KiB around the test
        self.note = ""
        self.bad = []          # kernel messages that match BAD_PATTERNS (see judge)
        self.kmsgs = []        # every kernel message during the test
        self.output = []       # the test's output and kernel messages
        self.log = None        # the serial log of the boot that ran it

    @property
    def lost(self):
        """KiB of MemFree the test did not give back (negative: gained)."""
        if self.before is None or self.after is None:
            return None
        return self.before - self.after

    def ledger_ok(self, tolerance):
        return self.lost is None or self.lost <= tolerance

    def ok(self, tolerance):
        return self.status in ("PASS", "SKIP") and self.ledger_ok(tolerance) and not self.bad

    def to_json(self):
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d):
        o = cls(d["n"], d["name"])
        o.__dict__.update(d)
        return o


def say(line):
    """Prints one line whole (the kernels' runs print from two threads)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def judge(kmsgs, allow_oom):
    """The bad messages among a test's kernel messages. allow_oom forgives
    OOM-killer reports (the "Call Trace:" of a trace through
    out_of_memory(), see vm.bad_console_lines) whose victim is a task the
    suite made expendable (oom_score_adj 1000, as stress-ng's workers)."""
    bad = [m for m in kmsgs if any(p in m for p in BAD_PATTERNS)]
    if not allow_oom:
        return bad
    forgiven = {m for m in kmsgs if any(p in m for p in vm.BAD_PATTERNS)} - \
        set(vm.bad_console_lines(kmsgs, allow_oom_kill=True))
    victims = vm.oom_victims(kmsgs)
    if any("oom_score_adj:1000" not in v for v in victims):
        return bad
    return [m for m in bad if m not in forgiven]


def _num(s):
    return int(s) if s and s.lstrip("-").isdigit() else None


def run_suite(variant, command, initrd=vm.INITRAMFS, mem="2G", smp=2, qemu_args=(),
              append="", boot_timeout=180, log_prefix=None, allow=(), allow_oom=False,
              quiet=False):
    """Runs `command --from N` in the variant's kernel until every test has
    an outcome; returns ({n: Outcome}, [boot problems]). allow lists kernel
    messages that are not bad (substrings)."""
    found = vm.variant_or_skip(variant)
    if not found:
        return None, ["kernel missing"]
    kernel = found[0]
    outcomes, problems = {}, []
    start_at, boot = 0, 0
    while True:
        boot += 1
        log = "%s-%s-%d.log" % (log_prefix, variant, boot)
        run = "%s --from %d" % (command, start_at)
        with vm.Guest(kernel, mem=mem, smp=smp, run=run, initrd=initrd,
                      qemu_args=qemu_args, append=append, log_path=log) as g:
            cur, deadline, seen = None, time.monotonic() + boot_timeout, 0
            finished = False
            while True:
                lines = [line for _, line in g.result.lines[seen:]]
                seen += len(lines)
                for line in lines:
                    # a kernel message may land inside a marker line too
                    k = KMSG.search(line)
                    kmsg = k.group(1) if k and not any(a in k.group(1) for a in allow) else None
                    m = BEGIN.search(line)
                    if m:
                        cur = Outcome(int(m.group(1)), m.group(2))
                        cur.log = log
                        outcomes[cur.n] = cur
                        deadline = time.monotonic() + int(m.group(3)) + SLACK
                        if kmsg:
                            cur.kmsgs.append(kmsg)
                        continue
                    m = END.search(line)
                    if m and cur and int(m.group(1)) == cur.n:
                        cur.status, cur.rc = m.group(3), m.group(4)
                        cur.secs = int(m.group(5))
                        cur.before, cur.after = _num(m.group(6)), _num(m.group(7))
                        cur.note = KMSG.sub("", m.group(8)).strip()
                        if kmsg:
                            cur.kmsgs.append(kmsg)
                        cur.bad = judge(cur.kmsgs, allow_oom)
                        if not quiet:
                            say("  %-8s %-32s %-7s %4d s  free %s -> %s KiB %s" % (
                                variant, cur.name, cur.status, cur.secs, cur.before,
                                cur.after, cur.note))
                        deadline = time.monotonic() + boot_timeout
                        continue
                    if DONE in line:
                        finished = True
                        continue
                    if cur is not None:
                        if kmsg and len(cur.kmsgs) < 5000:
                            cur.kmsgs.append(kmsg)
                        if len(cur.output) < 5000:
                            cur.output.append(line)
                    elif any(p in line for p in vm.BAD_PATTERNS):
                        # boot: TCG makes the kernel say "... failed" about
                        # clock calibration; only the launcher's patterns count
                        problems.append("boot %d: %s" % (boot, line))
                if finished:
                    break
                exited = g._proc.poll() is not None and not g._reader.is_alive()
                if exited or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if finished:
                res = g.wait_exit(60)
                if res.exit_code is None:
                    problems.append("boot %d: no exit after the suite (%s)" % (boot, log))
                return outcomes, problems
            # the guest hung or died: blame the test in progress, go on after it
            hung = g._proc.poll() is None
            res = g.wait_exit(0.1) if hung else g.wait_exit(5)
        if cur is None or cur.status is not None:
            problems.append("boot %d: guest %s outside a test (%s)" %
                            (boot, "hung" if hung else "died", log))
            if cur is None:
                return outcomes, problems
            start_at = cur.n + 1
            continue
        cur.bad = judge(cur.kmsgs, allow_oom)
        cur.status = "HANG" if hung else "CRASH"
        cur.note = ("no end within its timeout + %d s: QEMU killed" % SLACK if hung
                    else "the guest died during the test")
        if not quiet:
            say("  %-8s %-32s %s (%s)" % (variant, cur.name, cur.status, log))
        start_at = cur.n + 1


def input_hash(paths, extra=""):
    """16 hex digits over files' contents and extra text."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.encode())
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def cached_run(variant, key, runner, force=False):
    """Runs runner() for a variant (-> ({n: Outcome}, problems)) or takes
    its result from the cache under key. Only the baseline kernel is cached:
    its result is the reference, and it changes only with its inputs (the
    kernel, the tests, the runners: part of key)."""
    path = os.path.join(CACHE, "suites", "%s-%s.json" % (variant, key))
    if variant == "baseline" and not force and os.path.exists(path):
        with open(path) as f:
            d = json.load(f)
        say("%s: results of %s from %s" % (variant, d["date"], path))
        return {int(n): Outcome.from_json(o) for n, o in d["outcomes"].items()}, d["problems"]
    outcomes, problems = runner()
    if variant == "baseline" and outcomes is not None and not problems and all(
            o.status in ("PASS", "FAIL", "SKIP", "TIMEOUT") for o in outcomes.values()):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "outcomes": {n: o.to_json() for n, o in outcomes.items()},
                       "problems": problems}, f, indent=1)
        os.replace(path + ".tmp", path)
    return outcomes, problems


def kernel_hash(variant):
    """The input hash of a built kernel (build/guest/inputs-<variant>)."""
    try:
        with open(os.path.join(REPO, "build", "guest", "inputs-" + variant)) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


RANK = {"PASS": 2, "SKIP": 1}


def _cell(o, tolerance):
    if o is None or o.status is None:
        return "-"
    s = o.status
    if not o.ledger_ok(tolerance):
        s += "+LEAK"
    if o.bad:
        s += "+CONSOLE"
    return s


def _delta(o):
    if o is None or o.lost is None:
        return "-"
    return "%+d" % (-o.lost)


def compare(base, llf, tolerance, baseline_fails=None):
    """Returns (table lines, failures): per test the result of each kernel
    and its MemFree change (KiB, after - before). baseline_fails names the
    tests baseline is known to fail, with the reason; any other test
    baseline does not pass or skip is a failure of the suite itself (its
    set-up is broken, or the test does not fit this kernel and must be
    explained), so a suite that breaks cannot pass by failing everywhere."""
    baseline_fails = baseline_fails or {}
    names = {}
    for d in (base, llf):
        for n, o in d.items():
            names[n] = o.name
    rows = [("test", "baseline", "llfree", "dMemFree base KiB", "dMemFree llfree KiB", "note")]
    failures = []
    for n in sorted(names):
        b, l = base.get(n), llf.get(n)
        note = (l.note if l and l.note else (b.note if b else ""))[:70]
        rows.append((names[n], _cell(b, tolerance), _cell(l, tolerance), _delta(b), _delta(l),
                     note))
        for label, o in (("baseline", b), ("llfree", l)):
            if o is None or o.status is None:
                failures.append("%s: %s did not run" % (names[n], label))
                continue
            if not o.ledger_ok(tolerance):
                failures.append("%s: %s lost %d KiB of MemFree (tolerance %d KiB)" % (
                    names[n], label, o.lost, tolerance))
            if o.bad:
                failures.append("%s: %s console: %s" % (names[n], label, "; ".join(o.bad[:3])))
        if b and l and b.status and l.status and \
                RANK.get(l.status, 0) < RANK.get(b.status, 0):
            failures.append("%s: baseline %s, llfree %s" % (names[n], b.status, l.status))
        if b and b.status and b.status not in ("PASS", "SKIP"):
            if names[n] in baseline_fails:
                rows[-1] = rows[-1][:5] + (("known: " + baseline_fails[names[n]])[:70],)
            else:
                failures.append("%s: baseline %s (a test the stock kernel fails: the set-up "
                                "is broken or the failure needs an explanation)" % (
                                    names[n], b.status))
        elif b and b.status and names[n] in baseline_fails:
            failures.append("%s: baseline %s, listed as a known baseline failure: "
                            "update the list" % (names[n], b.status if b else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return table, failures


def excerpt(o, variant, limit=12):
    """The kernel messages and the last output lines of a failed test."""
    lines = ["--- %s (%s): %s rc=%s %s; log %s" % (o.name, variant, o.status, o.rc, o.note,
                                                   o.log)]
    kmsgs = [l for l in o.output if KMSG.search(l) and "drop_caches" not in l]
    out = [l for l in o.output if not KMSG.search(l)]
    # the test's own failure lines, then its last lines
    failed = [l for l in out if re.search(r"fail|not ok|error", l, re.I)][:limit]
    lines += ["    " + l for l in kmsgs[:limit]]
    lines += ["    " + l for l in failed]
    lines += ["    " + l for l in out[-limit // 2:] if l not in failed]
    return lines


def main(description, name, command, initrd, inputs, mem, smp, qemu_args, default_tolerance,
         title, append="", baseline_fails=None, allow_oom=False, argv=None, extra_args=None):
    """The command line of a suite: runs it in the kernels, prints and saves
    the table (build/tests/guest/<name>.txt), returns the exit status.
    extra_args(ap) adds options; it returns a function of the parsed
    arguments that gives the guest command's extra words."""
    import argparse
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--variant", action="append", choices=["baseline", "llfree", "debug"],
                    help="kernels to run (default: baseline and llfree)")
    ap.add_argument("--only", help="run only this test (--list in the guest names them)")
    ap.add_argument("--tolerance", type=int, default=default_tolerance,
                    help="KiB of MemFree a test may leave allocated (default %d)"
                    % default_tolerance)
    ap.add_argument("--scale", type=int, default=1, help="multiply the guest's timeouts")
    ap.add_argument("--force-baseline", action="store_true",
                    help="run baseline even if its results are cached")
    ap.add_argument("--serial", action="store_true",
                    help="run the kernels one after the other (default: side by side)")
    more = extra_args(ap) if extra_args else (lambda a: "")
    args = ap.parse_args(argv)
    variants = args.variant or ["baseline", "llfree"]
    for path in [initrd] + list(inputs):
        if not os.path.exists(path):
            print("SKIP: %s missing" % path)
            return 77
    for v in variants:
        if not vm.variant_or_skip(v):
            return 77

    cmd = command + more(args)
    if args.only:
        cmd += " --only " + args.only
    if args.scale != 1:
        cmd += " --scale %d" % args.scale
    logs = os.path.join(REPO, "build", "tests", "guest")

    def one(v):
        key = input_hash(list(inputs) + [os.path.abspath(__file__)],
                         "%s %s %s %s %s %s" % (kernel_hash(v), cmd, mem, smp, qemu_args,
                                                append))
        say("%s: %s" % (v, cmd))
        return cached_run(
            v, key, lambda: run_suite(v, cmd, initrd=initrd, mem=mem, smp=smp,
                                      qemu_args=qemu_args, append=append, allow_oom=allow_oom,
                                      log_prefix=os.path.join(logs, name)),
            force=args.force_baseline)

    # The kernels run side by side unless --serial: a guest spends much of
    # a suite waiting (ledger readings, sleeps), which the other one uses.
    start = time.monotonic()
    if args.serial:
        done = {v: one(v) for v in variants}
    else:
        with concurrent.futures.ThreadPoolExecutor(len(variants)) as pool:
            futures = {v: pool.submit(one, v) for v in variants}
            done = {v: f.result() for v, f in futures.items()}
    results, failures = {}, []
    for v in variants:
        outcomes, problems = done[v]
        results[v] = outcomes or {}
        failures += ["%s: %s" % (v, p) for p in problems]

    base = results.get("baseline", {})
    other = [v for v in variants if v != "baseline"]
    table, fails = compare(base, results[other[0]] if other else {}, args.tolerance,
                           baseline_fails)
    if len(variants) == 1:
        fails = [f for f in fails if "did not run" not in f]
    failures += fails
    out = ["%s, MemFree tolerance %d KiB: baseline vs %s" % (
        title, args.tolerance, other[0] if other else "-")] + table + [""]
    out += ["FAIL " + f for f in failures]
    for v in other:
        for n, o in sorted(results[v].items()):
            b = base.get(n)
            if not o.ok(args.tolerance) and (b is None or b.ok(args.tolerance)):
                out += excerpt(o, v)
    os.makedirs(logs, exist_ok=True)
    path = os.path.join(logs, name + ".txt")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))
    print("table: %s (%.0f s)" % (path, time.monotonic() - start))
    print("%d passed, %d failed" % (0 if failures else 1, len(failures)))
    return 1 if failures else 0
