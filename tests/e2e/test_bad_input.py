#!/usr/bin/python3
"""End-to-end: bad llfree-balloon input over QMP and HMP leaves the VM unharmed.

Boots build/guest/bzImage (4 GiB, 2 vCPUs, auto mode off) with `-S`, so the
monitor is up before the guest driver registered. Every refused command must
give the error of docs/device.md (the error class and the message part
below), leave target and actual as they were and QEMU running. Checks:

  1. without the device: query gives DeviceNotActive "No llfree balloon
     device has been activated" (a second QEMU, stopped, no guest);
  2. before the driver registered (-S): query reports the RAM; QMP and HMP
     resizes give "guest driver not ready";
  3. after the guest holds 256 MiB, QMP `llfree-balloon`:
       0, -1, -2^63                  -> "must be a positive size in bytes"
       RAM + 1, RAM + 2 MiB, 2^63-1  -> "exceeds the RAM size of the VM (RAM bytes)"
       "abc", 1.5, 2^64, no value, an unknown argument -> QAPI GenericError
     (all GenericError); the rounding rule: value is rounded up to a multiple
     of 2 MiB (RAM - 3 MiB -> target RAM - 2 MiB and a 2 MiB balloon,
     3 GiB + 1 -> 3 GiB + 2 MiB, RAM - 1 -> RAM);
  4. HMP `llfree_balloon` (a size, MiB by default): 0 -> the QMP error;
     5000 -> "exceeds the RAM size"; -1, abc, no value and sizes beyond
     2^63 bytes (2^63-1 MiB; 2^44 MiB + 512 MiB, whose byte value wraps
     around 2^64) -> "invalid size" with target and actual unchanged
     (docs/device.md); a size suffix (3G) is accepted as documented;
     4095 -> target 4096 MiB (rounded up);
     `info llfree_balloon` matches query-llfree-balloon;
  5. afterwards the held data verifies, a normal shrink to 2 GiB and grow
     back work, the guest allocates 1 GiB of returned memory and verifies
     it, ha-mem exits 0, console clean.

"""

import os
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, console_check, QMPError,
                 round_target, run_test, settle, summary, vm as guestvm)  # noqa: E402

RAM = 4 * GIB
NOT_READY = "guest driver not ready"
POSITIVE = "Parameter 'value' must be a positive size in bytes"
TOO_BIG = "Parameter 'value' exceeds the RAM size of the VM (%d bytes)" % RAM
INVALID_SIZE = "invalid size"


def refused(checks, qmp, name, args, error_class, message):
    """Runs llfree-balloon with args; it must fail with error_class and a
    description containing message, and change neither target nor actual."""
    before = qmp.execute("query-llfree-balloon")
    try:
        qmp.execute("llfree-balloon", args)
        got = "accepted"
        ok = False
    except QMPError as e:
        got = "%s: %s" % (e.error_class, e.desc)
        ok = e.error_class == error_class and message in e.desc
    after = qmp.execute("query-llfree-balloon")
    same = (after["target"], after["actual"]) == (before["target"], before["actual"])
    checks.check(ok and same, name, got + ("" if same else "; target/actual changed: %s" % after))


def hmp_refused(checks, qmp, name, line, message):
    """Runs an HMP command that must print message and change nothing."""
    before = qmp.execute("query-llfree-balloon")
    out = qmp.hmp(line).strip()
    after = qmp.execute("query-llfree-balloon")
    same = (after["target"], after["actual"]) == (before["target"], before["actual"])
    checks.check(message in out and same, name,
                 "%r -> %r%s" % (line, out, "" if same else
                                 "; target %d MiB, actual %d MiB"
                                 % (after["target"] // MIB, after["actual"] // MIB)))
    return same


def resize(qmp, value):
    """llfree-balloon {value}, then waits until it is done; returns the query."""
    qmp.execute("llfree-balloon", {"value": value})
    return settle(qmp, 60)[0]


def rounding(checks, qmp, value, name):
    info = resize(qmp, value)
    want = round_target(value, RAM)
    checks.check(info["target"] == want and info["actual"] == want and
                 info["balloon"] == RAM - want, name,
                 "value %d: target %d, actual %d, balloon %d (want %d)"
                 % (value, info["target"], info["actual"], info["balloon"], want))


def no_device(checks, kernel):
    """query-llfree-balloon in a QEMU without the device."""
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    with guestvm.Guest(kernel, mem="512M", smp=2, run="true",
                       qemu_args=["-S", "-qmp", "unix:%s,server=on,wait=off" % sock]):
        with QMP.connect(sock, retry_for=10) as qmp:
            for cmd, args in (("query-llfree-balloon", None),
                              ("llfree-balloon", {"value": GIB})):
                try:
                    got = "answered %s" % qmp.execute(cmd, args)
                    ok = False
                except QMPError as e:
                    got = "%s: %s" % (e.error_class, e.desc)
                    ok = (e.error_class == "DeviceNotActive" and
                          "No llfree balloon device has been activated" in e.desc)
                checks.check(ok, "no device: %s gives DeviceNotActive" % cmd, got)


def main():
    found = guestvm.variant_or_skip("llfree")
    if not found:
        return 77
    kernel = found[0]
    checks = Checks()
    no_device(checks, kernel)

    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    qemu_args = guestvm.llfree_device_args(sock) + ["-S"]
    log = os.path.join(REPO, "build", "tests", "e2e", "bad-input.log")
    run = "ha-mem hold --no-thp 256M"
    with guestvm.Guest(kernel, mem="4G", smp=2, run=run, qemu_args=qemu_args,
                       log_path=log) as g:
        qmp = QMP.connect(sock, retry_for=10)

        # 2. stopped before the guest ran: no driver yet
        info = qmp.execute("query-llfree-balloon")
        checks.check(info["actual"] == RAM and info["target"] == RAM and info["balloon"] == 0,
                     "before the driver: query reports the RAM", str(info))
        refused(checks, qmp, "before the driver: QMP resize refused", {"value": GIB},
                "GenericError", NOT_READY)
        hmp_refused(checks, qmp, "before the driver: HMP resize refused",
                    "llfree_balloon 1024", "Error: " + NOT_READY)
        out = qmp.hmp("info llfree_balloon").strip()
        checks.check(out == "llfree_balloon: actual=4096 target=4096 balloon=0 soft=0 "
                     "installs=0", "before the driver: info llfree_balloon", repr(out))

        qmp.execute("cont")
        checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
        checks.check(g.wait_for("ok holding", 120), "guest holds 256 MiB")

        # 3. QMP
        for value in (0, -1, -2 ** 63):
            refused(checks, qmp, "QMP value %d refused" % value, {"value": value},
                    "GenericError", POSITIVE)
        for value, what in ((RAM + 1, "RAM + 1"), (RAM + CHILD, "RAM + 2 MiB"),
                            (2 ** 63 - 1, "2^63-1")):
            refused(checks, qmp, "QMP value %s refused" % what, {"value": value},
                    "GenericError", TOO_BIG)
        for args, what, message in (
                ({"value": "abc"}, "a string", "Invalid parameter type for 'value'"),
                ({"value": 1.5}, "a fraction", "Invalid parameter type for 'value'"),
                ({"value": 2 ** 64}, "2^64", "Invalid parameter type for 'value'"),
                ({}, "no value", "Parameter 'value' is missing"),
                ({"value": GIB, "bogus": 1}, "an unknown argument",
                 "Parameter 'bogus' is unexpected")):
            refused(checks, qmp, "QMP %s refused" % what, args, "GenericError", message)
        rounding(checks, qmp, RAM - 3 * MIB, "rounding: RAM - 3 MiB gives a 2 MiB balloon")
        rounding(checks, qmp, 3 * GIB + 1, "rounding: 3 GiB + 1 gives 3 GiB + 2 MiB")
        rounding(checks, qmp, RAM - 1, "rounding: RAM - 1 gives no balloon")

        # 4. HMP
        hmp_refused(checks, qmp, "HMP 0 refused", "llfree_balloon 0", "Error: " + POSITIVE)
        hmp_refused(checks, qmp, "HMP -1 refused", "llfree_balloon -1", INVALID_SIZE)
        hmp_refused(checks, qmp, "HMP non-numeric refused", "llfree_balloon abc", INVALID_SIZE)
        hmp_refused(checks, qmp, "HMP without a value refused", "llfree_balloon", INVALID_SIZE)
        hmp_refused(checks, qmp, "HMP above RAM refused", "llfree_balloon 5000",
                    "Error: " + TOO_BIG)
        hmp_refused(checks, qmp, "HMP 2^63-1 MiB refused, not a 64-bit size",
                    "llfree_balloon %d" % (2 ** 63 - 1), INVALID_SIZE)
        # 2^44 MiB + 512 MiB is 2^64 + 512 MiB bytes: must not become 512 MiB
        if not hmp_refused(checks, qmp, "HMP 2^44+512 MiB refused, no wrap-around",
                           "llfree_balloon %d" % (2 ** 44 + 512), INVALID_SIZE):
            resize(qmp, RAM)
        out = qmp.hmp("llfree_balloon 3G").strip()
        info = settle(qmp, 60)[0]
        checks.check(not out and info["target"] == 3 * GIB,
                     "HMP size suffix accepted (docs/device.md: suffixes allowed)",
                     "'llfree_balloon 3G' -> %r, target %d MiB" % (out, info["target"] // MIB))
        out = qmp.hmp("llfree_balloon 4095").strip()
        info = settle(qmp, 60)[0]
        checks.check(not out and info["target"] == RAM and info["actual"] == RAM,
                     "HMP 4095 MiB rounds up to 4096 MiB",
                     "%r, target %d MiB" % (out, info["target"] // MIB))
        info = qmp.execute("query-llfree-balloon")
        out = qmp.hmp("info llfree_balloon").strip()
        want = "llfree_balloon: actual=%d target=%d balloon=%d soft=%d installs=%d%s" % (
            info["actual"] >> 20, info["target"] >> 20, info["balloon"] >> 20,
            info["soft"] >> 20, info["installs"], " (resizing)" if info.get("resizing") else "")
        checks.check(out == want, "info llfree_balloon matches the query", repr(out))

        # 5. unharmed
        checks.check(g.hold_command("verify").startswith("ok"), "data intact after bad input")
        info = resize(qmp, 2 * GIB)
        checks.check(abs(info["actual"] - 2 * GIB) <= CHILD and info["target"] == 2 * GIB,
                     "a normal shrink to 2 GiB works", "actual %d MiB" % (info["actual"] // MIB))
        info = resize(qmp, RAM)
        checks.check(info["actual"] == RAM, "a normal grow to 4 GiB works",
                     "actual %d MiB" % (info["actual"] // MIB))
        checks.check(g.hold_command("grow 1G").startswith("ok"),
                     "guest allocates 1 GiB of returned memory")
        checks.check(g.hold_command("verify").startswith("ok"), "data intact at the end")
        checks.check(qmp.execute("query-status")["status"] == "running", "QEMU runs the VM")
        g.hold_command("quit")
        res = g.wait_exit(120)
    checks.check(res.exit_code == 0, "ha-mem hold exits 0", "exit %s" % res.exit_code)
    console_check(checks, res)
    return summary(checks)


if __name__ == "__main__":
    run_test(main, (QMPError, ConnectionError, TimeoutError, OSError))
