"""Helpers shared by the end-to-end tests (Python 3 standard library)."""

import re
import sys
import time

MIB = 1 << 20
GIB = 1 << 30
CHILD = 2 * MIB


class Checks:
    """Collects named checks and prints them as they come."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, name, detail=""):
        print("%s %s%s" % ("ok  " if ok else "FAIL", name,
                           ": " + detail if detail else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def rss(pid):
    """Resident set size of a process in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def hold_command(g, cmd, timeout=300):
    """Sends one line to `ha-mem hold` and returns its answer line."""
    before = len(g.result.lines)
    g.send(cmd + "\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, line in g.result.lines[before:]:
            if line.startswith(("ok ", "error ")):
                return line
        time.sleep(0.2)
    return "error: no answer to '%s'" % cmd


def mem_free(answer):
    """MemFree in MiB from a `status` answer."""
    m = re.search(r"MemFree (\d+) MiB", answer)
    return int(m.group(1)) if m else None


def finish(checks, res):
    """Checks the console of a finished guest, prints the closing line and
    returns the exit status."""
    bad = res.bad_lines()
    checks.check(not bad, "console clean", "; ".join(bad[:3]))
    print("%d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0


def run_test(main, errors):
    """Runs a test's main(); an exception of the given types fails it."""
    try:
        sys.exit(main())
    except errors as e:
        print("FAIL %s: %s" % (type(e).__name__, e))
        print("0 passed, 1 failed")
        sys.exit(1)
