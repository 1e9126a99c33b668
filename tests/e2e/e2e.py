"""Helpers shared by the end-to-end tests (Python 3 standard library)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))
from hyperalloc.hostmem import GIB, MIB  # noqa: E402,F401

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
