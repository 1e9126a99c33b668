"""Helpers shared by the end-to-end tests (Python 3 standard library).

Every test prints one line per check ("ok" or "FAIL", name, detail) and
closes with "N passed, N failed"; exit status 0 pass, 1 fail, 77 skip (a
kernel, the initramfs or QEMU missing). A test imports the launcher (vm),
the QMP client and the host memory helpers from here.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
# what every test imports from here
from hyperalloc import vm  # noqa: E402,F401
from hyperalloc.hostmem import GIB, MIB, RssSampler, rss  # noqa: E402,F401
from hyperalloc.qmp import QMP, QMPError  # noqa: E402,F401

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
    console_check(checks, res)
    return summary(checks)


def run_test(main, errors):
    """Runs a test's main(); an exception of the given types fails it."""
    try:
        sys.exit(main())
    except errors as e:
        print("FAIL %s: %s" % (type(e).__name__, e))
        print("0 passed, 1 failed")
        sys.exit(1)


def wait_until(pred, timeout, period=0.2):
    """Polls pred() until it returns a true value or timeout seconds pass;
    returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period)


def resize_done(info):
    """Whether a query-llfree-balloon answer shows no resize in progress:
    `resizing` false where the device reports it (the resize runs in the
    background), else actual == target."""
    if "resizing" in info:
        return not info["resizing"]
    return info["actual"] == info["target"]


def settle(qmp, timeout, stable=2.0):
    """Waits for a resize to finish, whether llfree-balloon returns at once
    or only when it is done: polls query-llfree-balloon until resize_done(),
    or, without a `resizing` field, until actual has not changed for
    `stable` seconds (a shrink the guest cannot satisfy ends above the
    target). Returns the last answer and the seconds waited; after timeout
    the last answer."""
    start = time.monotonic()
    info = qmp.execute("query-llfree-balloon")
    last, since = info["actual"], start
    while not resize_done(info):
        now = time.monotonic()
        if info["actual"] != last:
            last, since = info["actual"], now
        elif ("resizing" not in info and now - since >= stable) or now - start >= timeout:
            break
        time.sleep(0.1)
        info = qmp.execute("query-llfree-balloon")
    return info, time.monotonic() - start


def round_target(value, ram):
    """The target docs/device.md promises for llfree-balloon {value}: value
    rounded up to whole 2 MiB frames (the VM never gets smaller than asked),
    at most the RAM size."""
    return min(ram, -(-value // CHILD) * CHILD)


def console_check(checks, res, label="", allow_oom_kill=False):
    """Checks the console of one finished guest (no WARNING/BUG/Oops)."""
    bad = res.bad_lines(allow_oom_kill)
    return checks.check(not bad, (label + " " if label else "") + "console clean",
                        "; ".join(bad[:3]))


def summary(checks):
    """Prints the closing line and returns the exit status."""
    print("%d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0
