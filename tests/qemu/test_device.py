#!/usr/bin/python3
"""Tests of the virtio-llfree-balloon device that need no guest kernel.

Starts the real QEMU binary (build/qemu/qemu-system-x86_64) stopped (-S)
and talks QMP to it. Checks realize with every property combination,
every realize error (QEMU must exit 1 with a clear message, never abort),
the QMP/HMP interface before a guest driver registers, and coexistence
with virtio-balloon.

Usage: /usr/bin/python3 tests/qemu/test_device.py [-v] [-k SUBSTRING]
       QEMU=path/to/qemu-system-x86_64 overrides the binary.
Prints one line per test and "N passed, N failed"; exits 1 on failure.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from hyperalloc.qmp import QMP, QMPError  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qtest_virtio import QTest, VirtioPCI  # noqa: E402

QEMU = os.environ.get("QEMU",
                      os.path.join(ROOT, "build/qemu/qemu-system-x86_64"))
RAM = 1 << 30
MIB = 1 << 20
BASE = ["-M", "q35", "-accel", "tcg,thread=multi", "-smp", "2",
        "-m", "1G", "-nodefaults", "-display", "none", "-S"]
DEV = "virtio-llfree-balloon-pci"
MAPPING = "iothread-vq-mapping"

VERBOSE = False


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def json_device(**props):
    """A -device argument in JSON syntax."""
    return json.dumps(dict(driver=DEV, **props))


def iothreads(*ids):
    args = []
    for i in ids:
        args += ["-object", f"iothread,id={i}"]
    return args


class VM:
    """A QEMU process with a QMP socket; stopped unless told otherwise."""

    def __init__(self, args, base=BASE, qtest=False):
        self.dir = tempfile.mkdtemp(prefix="vlb-test-")
        self.sock = os.path.join(self.dir, "qmp.sock")
        self.qt = None
        extra = []
        if qtest:
            self.qt = QTest(os.path.join(self.dir, "qtest.sock"))
            extra = ["-qtest", f"unix:{self.qt.path}",
                     "-qtest-log", "/dev/null"]
        self.proc = subprocess.Popen(
            [QEMU] + base + args + extra +
            ["-qmp", f"unix:{self.sock},server=on,wait=off"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if self.qt:
                self.qt.accept()
            self.qmp = self._connect()
        except Exception:
            self.kill()
            raise

    def _connect(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"QEMU exited with {self.proc.returncode}: "
                              f"{self.proc.stderr.read().strip()}")
            if os.path.exists(self.sock):
                try:
                    return QMP.connect(self.sock, timeout=20)
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            time.sleep(0.05)
        raise Failure("QEMU did not open its QMP socket")

    def kill(self):
        if self.qt:
            self.qt.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def quit(self):
        """Quits through QMP; checks that QEMU exits cleanly."""
        try:
            self.qmp.execute("quit")
        except (ConnectionError, OSError):
            pass
        self.qmp.close()
        try:
            _, err = self.proc.communicate(timeout=20)
        finally:
            self.kill()
        check(self.proc.returncode == 0,
              f"QEMU exited with {self.proc.returncode}: {err.strip()}")
        if VERBOSE and err.strip():
            print(f"    stderr: {err.strip()}")
        return err

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            self.quit()
        else:
            self.kill()


def start_fails(args, *needles, base=BASE):
    """QEMU must refuse to start: exit code 1 and every needle in stderr."""
    proc = subprocess.run([QEMU] + base + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)
    err = proc.stderr.strip()
    if VERBOSE:
        print(f"    stderr: {err}")
    check(proc.returncode == 1,
          f"exit code {proc.returncode} (expected 1), stderr: {err}")
    for needle in needles:
        check(needle in err, f"{needle!r} not in stderr: {err}")
    for bad in ("Aborted", "core dumped", "assertion", "Assertion"):
        check(bad not in err, f"{bad!r} in stderr: {err}")


def expect_error(qmp, command, args, error_class, needle):
    try:
        qmp.execute(command, args)
    except QMPError as e:
        if VERBOSE:
            print(f"    {command} {args}: {e.error_class}: {e.desc}")
        check(e.error_class == error_class,
              f"{command} {args}: class {e.error_class}, "
              f"expected {error_class}")
        check(needle in e.desc, f"{command} {args}: {needle!r} not in "
              f"{e.desc!r}")
        return
    raise Failure(f"{command} {args} succeeded")


# Tests -------------------------------------------------------------------


def test_realize_plain():
    with VM(["-device", DEV]) as vm:
        info = vm.qmp.execute("query-llfree-balloon")
        check(info == {"actual": RAM, "target": RAM, "balloon": 0,
                       "soft": 0, "installs": 0, "resizing": False},
              f"query: {info}")


def test_realize_short_alias():
    with VM(["-device", "virtio-llfree-balloon"]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_realize_properties():
    with VM(iothreads("io0") +
            ["-device", f"{DEV},auto-mode=off,auto-mode-interval=100,"
             "auto-mode-iothread=io0,shrink-pagecache=on"]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_realize_iothread_without_mapping():
    with VM(iothreads("io0") +
            ["-device", f"{DEV},auto-mode-iothread=io0"]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_mapping_round_robin():
    dev = json_device(**{MAPPING: [{"iothread": "io0"},
                                   {"iothread": "io1"}]})
    with VM(iothreads("io0", "io1") + ["-device", dev]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_mapping_round_robin_more_queues_than_iothreads():
    dev = json_device(**{MAPPING: [{"iothread": "io0"}]})
    with VM(iothreads("io0") + ["-device", dev] +
            ["-smp", "2,maxcpus=4"]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_mapping_explicit():
    dev = json_device(**{MAPPING: [{"iothread": "io0", "vqs": [1]},
                                   {"iothread": "io1", "vqs": [0]}]})
    with VM(iothreads("io0", "io1") + ["-device", dev]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_mapping_unknown_iothread():
    dev = json_device(**{MAPPING: [{"iothread": "nope"}]})
    start_fails(iothreads("io0") + ["-device", dev], MAPPING,
                "IOThread 'nope' not found")


def test_mapping_vq_out_of_range():
    dev = json_device(**{MAPPING: [{"iothread": "io0", "vqs": [0, 2]},
                                   {"iothread": "io1", "vqs": [1]}]})
    start_fails(iothreads("io0", "io1") + ["-device", dev], MAPPING,
                "install queue 2 is out of range")


def test_mapping_duplicate_vq():
    dev = json_device(**{MAPPING: [{"iothread": "io0", "vqs": [0, 1]},
                                   {"iothread": "io1", "vqs": [1]}]})
    start_fails(iothreads("io0", "io1") + ["-device", dev], MAPPING,
                "install queue 1 is assigned more than once")


def test_mapping_partial_coverage():
    dev = json_device(**{MAPPING: [{"iothread": "io0", "vqs": [0]}]})
    start_fails(iothreads("io0") + ["-device", dev], MAPPING,
                "install queue 1 is not assigned")


def test_mapping_mixed_vqs():
    dev = json_device(**{MAPPING: [{"iothread": "io0", "vqs": [0, 1]},
                                   {"iothread": "io1"}]})
    start_fails(iothreads("io0", "io1") + ["-device", dev], MAPPING,
                "either every entry or no entry")


def test_mapping_duplicate_iothread():
    dev = json_device(**{MAPPING: [{"iothread": "io0", "vqs": [0]},
                                   {"iothread": "io0", "vqs": [1]}]})
    start_fails(iothreads("io0") + ["-device", dev], MAPPING,
                "IOThread 'io0' is listed more than once")


def test_mapping_needs_ioeventfd():
    dev = json_device(**{"ioeventfd": False,
                         MAPPING: [{"iothread": "io0"}]})
    start_fails(iothreads("io0") + ["-device", dev], MAPPING, "ioeventfd")


def test_step_children_zero():
    start_fails(["-device", f"{DEV},x-step-children=0"], "x-step-children")


def test_auto_mode_interval_zero():
    start_fails(["-device", f"{DEV},auto-mode-interval=0"],
                "auto-mode-interval")


def test_cache_trim_checked():
    start_fails(["-device", f"{DEV},shrink-pagecache=on,"
                 "auto-mode-cache-trim=101"], "auto-mode-cache-trim",
                "percentage")
    start_fails(["-device", f"{DEV},auto-mode-cache-trim=10"],
                "auto-mode-cache-trim", "shrink-pagecache=on")
    start_fails(["-device", f"{DEV},shrink-pagecache=on,auto-mode=off,"
                 "auto-mode-cache-trim=10"], "auto-mode=on")


def test_auto_mode_iothread_unknown():
    start_fails(["-device", f"{DEV},auto-mode-iothread=nope"],
                "auto-mode-iothread")


def test_tcg_single_thread_refused():
    base = [a if a != "tcg,thread=multi" else "tcg,thread=single"
            for a in BASE]
    start_fails(["-device", DEV], "-accel tcg,thread=multi",
                "maxcpus>=2", base=base)


def test_tcg_one_cpu_refused():
    base = [a if a != "2" else "1" for a in BASE]
    start_fails(["-device", DEV], "-accel tcg,thread=multi",
                "maxcpus>=2", base=base)


def test_tcg_one_cpu_with_maxcpus_accepted():
    with VM(["-device", DEV, "-smp", "1,maxcpus=2"]) as vm:
        vm.qmp.execute("query-llfree-balloon")


def test_numa_memdevs_refused():
    start_fails(["-object", "memory-backend-ram,id=m0,size=512M",
                 "-object", "memory-backend-ram,id=m1,size=512M",
                 "-numa", "node,memdev=m0", "-numa", "node,memdev=m1",
                 "-device", DEV], "one RAM memory region")


def test_two_devices_refused():
    start_fails(["-device", DEV, "-device", DEV], "only one")


def test_hotplug_refused():
    with VM([]) as vm:
        try:
            vm.qmp.execute("device_add", {"driver": DEV})
        except QMPError as e:
            check("pluggable" in e.desc,
                  f"device_add: {e.desc}")
        else:
            raise Failure("device_add succeeded")


def test_schema():
    with VM(["-device", DEV]) as vm:
        schema = vm.qmp.execute("query-qmp-schema")
        names = {(e["meta-type"], e["name"]) for e in schema}
        for want in (("command", "llfree-balloon"),
                     ("command", "query-llfree-balloon"),
                     ("event", "LLFREE_BALLOON_CHANGE")):
            check(want in names, f"{want} not in query-qmp-schema")


def test_hmp_commands():
    with VM(["-device", DEV]) as vm:
        out = vm.qmp.hmp("help llfree_balloon")
        check("llfree_balloon" in out and "target" in out,
              f"help llfree_balloon: {out!r}")
        out = vm.qmp.hmp("help info")
        check("info llfree_balloon" in out, "info llfree_balloon not in "
              "help info")
        out = vm.qmp.hmp("info llfree_balloon")
        check(out.strip() == "llfree_balloon: actual=1024 target=1024 "
              "balloon=0 soft=0 installs=0", f"info llfree_balloon: {out!r}")
        out = vm.qmp.hmp("llfree_balloon 512")
        check("guest driver not ready" in out, f"llfree_balloon: {out!r}")


def test_hmp_without_device():
    with VM([]) as vm:
        out = vm.qmp.hmp("info llfree_balloon")
        check("No llfree balloon device" in out, f"info: {out!r}")


def test_not_ready():
    with VM(["-device", DEV]) as vm:
        expect_error(vm.qmp, "llfree-balloon", {"value": 512 * MIB},
                     "GenericError", "guest driver not ready")
        info = vm.qmp.execute("query-llfree-balloon")
        check(info["actual"] == RAM and info["target"] == RAM,
              f"query after refused resize: {info}")


def test_bad_values():
    with VM(["-device", DEV]) as vm:
        expect_error(vm.qmp, "llfree-balloon", {"value": 0},
                     "GenericError", "positive")
        expect_error(vm.qmp, "llfree-balloon", {"value": -MIB},
                     "GenericError", "positive")
        expect_error(vm.qmp, "llfree-balloon", {"value": RAM + 1},
                     "GenericError", "exceeds the RAM size")


def test_no_device():
    with VM([]) as vm:
        expect_error(vm.qmp, "llfree-balloon", {"value": 512 * MIB},
                     "DeviceNotActive", "No llfree balloon device")
        expect_error(vm.qmp, "query-llfree-balloon", None,
                     "DeviceNotActive", "No llfree balloon device")


def test_coexistence_with_virtio_balloon():
    with VM(["-device", "virtio-balloon-pci", "-device", DEV]) as vm:
        vm.qmp.execute("query-llfree-balloon")
        vm.qmp.execute("query-balloon")


def test_device_properties_listed():
    with VM([]) as vm:
        props = vm.qmp.execute("device-list-properties", {"typename": DEV})
        names = {p["name"] for p in props}
        for want in ("auto-mode", "auto-mode-interval", "auto-mode-iothread",
                     "shrink-pagecache", "auto-mode-cache-trim", MAPPING):
            check(want in names, f"{want} not a property of {DEV}")


def test_boots_firmware():
    """Runs SeaBIOS with the device for a moment; QEMU stays up."""
    with VM(iothreads("io0") + ["-device", json_device(
            **{MAPPING: [{"iothread": "io0"}],
               "auto-mode-interval": 100})]) as vm:
        vm.qmp.execute("cont")
        time.sleep(1.0)
        status = vm.qmp.execute("query-status")
        check(status["status"] == "running", f"status: {status}")
        vm.qmp.execute("system_reset")
        time.sleep(0.5)
        info = vm.qmp.execute("query-llfree-balloon")
        check(info["actual"] == RAM, f"query: {info}")


# Protocol tests: the test plays the guest driver through qtest ------------

QTEST_BASE = ["-M", "q35", "-accel", "qtest", "-smp", "2", "-m", "1G",
              "-nodefaults", "-display", "none"]
DEVICE_ID = 0x1040 + 56
F_SHRINK = 1 << 0
F_VERSION_1 = 1 << 32
F_INDIRECT = 1 << 28
S_OK, S_INVALID, S_VERSION, S_NO_ZONE, S_EXISTS, S_ADDRESS, S_STATE, \
    S_HOST = range(8)
ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE = 1, 2, 3
CHILD = 2 * MIB
HARD_WORD = 0x0C00     # free 0, huge, reclaimed
SOFT_WORD = 0x0A00     # free 512, reclaimed
FREE_WORD = 0x0200     # free 512


class FakeZone:
    """llfree state of one zone, all free, written into guest memory."""

    def __init__(self, dev, zone, base_pfn, frames, meta, ztype=ZONE_NORMAL,
                 cores=2):
        self.dev, self.qt = dev, dev.qt
        self.zone, self.base_pfn, self.frames = zone, base_pfn, frames
        self.type, self.cores = ztype, cores
        self.children = (frames + 511) // 512
        trees = (self.children + 7) // 8
        self.trees_len = (trees * 2 + 63) // 64 * 64
        self.lower_len = self.children * 64 + \
            (self.children * 2 + 63) // 64 * 64
        self.trees = meta
        self.lower = meta + (self.trees_len + 4095) // 4096 * 4096
        self.counters = self.lower + (self.lower_len + 4095) // 4096 * 4096
        self.free_pages = self.counters
        self.global_free_pages = self.counters + 8
        self.file_pages = self.counters + 16
        self.reset_arrays()

    def reset_arrays(self, file_pages=1000):
        tree = b"".join(struct.pack("<H", min(4096, (self.frames - t * 4096)))
                        for t in range((self.children + 7) // 8))
        self.qt.write(self.trees, tree.ljust(self.trees_len, b"\0"))
        self.qt.write(self.lower, bytes(self.children * 64))
        self.qt.write(self.lower + self.children * 64,
                      struct.pack("<H", FREE_WORD) * self.children)
        self.qt.write(self.counters, struct.pack(
            "<qqq", self.frames, 4 * self.frames, file_pages))

    def message(self, **over):
        f = dict(version=1, zone=self.zone, node=0, type=self.type,
                 padding0=0, cores=self.cores, padding1=0,
                 base_pfn=self.base_pfn, frames=self.frames,
                 trees_gpa=self.trees, trees_len=self.trees_len,
                 lower_gpa=self.lower, lower_len=self.lower_len,
                 free_pages_gpa=self.free_pages,
                 global_free_pages_gpa=self.global_free_pages,
                 file_pages_gpa=self.file_pages)
        f.update(over)
        return struct.pack("<HHHBBIIQQQQQQQQQ", *f.values())

    def child(self, c):
        return self.qt.readw(self.lower + self.children * 64 + 2 * c)

    def tree(self, t):
        return self.qt.readw(self.trees + 2 * t)

    def words(self):
        """All child words, read at once."""
        return list(struct.unpack(f"<{self.children}H", self.qt.read(
            self.lower + self.children * 64, 2 * self.children)))

    def allocate_trees(self, n):
        """The guest allocated trees 0 .. n - 1 completely."""
        self.qt.write(self.trees, bytes(2 * n))
        self.qt.write(self.lower + self.children * 64, bytes(16 * n))

    def check_consistent(self):
        """Trees, child words and counters agree: no child half-done."""
        words = self.words()
        hard = words.count(HARD_WORD)
        trees = struct.unpack(f"<{(self.children + 7) // 8}H", self.qt.read(
            self.trees, 2 * ((self.children + 7) // 8)))
        free = sum(512 for w in words if w in (FREE_WORD, SOFT_WORD))
        check(sum(trees) == free, f"trees {sum(trees)} != free {free}")
        check(self.counter("free") == self.frames - 512 * hard,
              f"zone counter {self.counter('free')}, {hard} hard")
        check(self.counter("global") == 4 * self.frames - 512 * hard,
              f"global counter {self.counter('global')}, {hard} hard")
        return words

    def counter(self, which):
        return struct.unpack("<q", self.qt.read(
            {"free": self.free_pages, "global": self.global_free_pages,
             "file": self.file_pages}[which], 8))[0]


def respond(dev, queue, request, resp_len=8):
    length, resp = dev.request(queue, request, resp_len)
    check(length == 8, f"used length {length}, expected 8")
    return struct.unpack("<II", resp[:8])


def install_msg(zone, order, frame, pad0=0, pad1=0):
    return struct.pack("<HBBIQ", zone, order, pad0, pad1, frame)


def device_config(dev):
    names = ("version", "num_install_queues", "max_zones", "balloon_children",
             "target_children", "soft_children", "shrink_seq",
             "shrink_pages")
    return dict(zip(names, struct.unpack("<8I", dev.qt.read(
        dev.device_cfg, 32))))


def qtest_base(ram):
    return [a if a != "1G" else ram for a in QTEST_BASE]


def protocol_vm(props="", features=F_VERSION_1, extra=(), base=QTEST_BASE):
    """A qtest VM with the device set up by the test as its driver."""
    vm = VM(list(extra) + ["-device", f"{DEV}{props}"], base=base,
            qtest=True)
    try:
        dev = VirtioPCI(vm.qt, DEVICE_ID)
        nq = 2 + device_config(dev)["num_install_queues"]
        dev.init(features, range(nq))
    except Exception:
        vm.kill()
        raise
    return vm, dev


def wait_resized(vm, timeout=20):
    """Waits until no resize runs; returns query-llfree-balloon."""
    deadline = time.monotonic() + timeout
    while True:
        info = vm.qmp.execute("query-llfree-balloon")
        if not info["resizing"]:
            return info
        check(time.monotonic() < deadline, f"resize does not end: {info}")
        time.sleep(0.01)


def resize(vm, value):
    """llfree-balloon, which only starts the resize, then waits for it."""
    vm.qmp.execute("llfree-balloon", {"value": value})
    return wait_resized(vm)


def auto_until_soft(vm, dev, want, timeout=10):
    """Runs auto-mode periods (interval 100 ms) until `soft` is `want`:
    a child is soft-reclaimed at the second pass that sees it free."""
    deadline = time.monotonic() + timeout
    while vm.qmp.execute("query-llfree-balloon")["soft"] != want:
        check(time.monotonic() < deadline, "auto mode did not run: "
              f"{vm.qmp.execute('query-llfree-balloon')}")
        dev.qt.clock_step(150 * 1000 * 1000)
        time.sleep(0.05)


class AutoTrace:
    """Counts auto-mode passes through the virtio_llfree_balloon_auto_reclaim
    trace (one line per zone and pass)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vlb-auto-")
        self.log = os.path.join(self.dir, "trace.log")
        self.args = ["-D", self.log,
                     "-trace", "virtio_llfree_balloon_auto_reclaim"]

    def passes(self):
        if not os.path.exists(self.log):
            return 0
        with open(self.log) as f:
            return sum("virtio_llfree_balloon_auto_reclaim" in l for l in f)

    def wait(self, n, timeout=10):
        """Waits until `n` zone passes ended (the last one re-armed the
        timer before the main loop answers the next qtest command)."""
        deadline = time.monotonic() + timeout
        while self.passes() < n:
            check(time.monotonic() < deadline, f"{self.passes()} of {n} "
                  "auto-mode zone passes")
            time.sleep(0.01)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def qmp_pipeline(qmp, *commands):
    """Sends the commands in one write and returns their answers (the
    return value, or the error object)."""
    ids, data = [], b""
    for command, args in commands:
        qmp._next_id += 1
        msg = {"execute": command, "id": qmp._next_id}
        if args:
            msg["arguments"] = args
        data += json.dumps(msg).encode() + b"\n"
        ids.append(qmp._next_id)
    qmp._sock.sendall(data)
    replies = {}
    deadline = time.monotonic() + 20
    while len(replies) < len(ids):
        reply = qmp._read_message(deadline)
        if "event" in reply:
            qmp._events.append(reply)
        elif reply.get("id") in ids:
            replies[reply["id"]] = reply
    return [replies[i].get("return", replies[i].get("error")) for i in ids]


def test_protocol_config_and_features():
    vm, dev = protocol_vm(",shrink-pagecache=on")
    with vm:
        cfg = device_config(dev)
        check(cfg == {"version": 1, "num_install_queues": 2, "max_zones": 4,
                      "balloon_children": 0, "target_children": 0,
                      "soft_children": 0, "shrink_seq": 0,
                      "shrink_pages": 0}, f"config: {cfg}")
        feats = dev.device_features()
        check(feats & F_VERSION_1, "VERSION_1 not offered")
        check(feats & F_SHRINK, "SHRINK_PAGECACHE not offered")
        check(not feats & F_INDIRECT, "INDIRECT_DESC offered")
        check(dev.num_queues() == 4, f"{dev.num_queues()} queues")


def test_protocol_registration_errors():
    vm, dev = protocol_vm()
    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        bad = [
            ("version 0", dict(version=0), S_VERSION),
            ("version 2", dict(version=2), S_VERSION),
            ("padding0", dict(padding0=1), S_INVALID),
            ("padding1", dict(padding1=1), S_INVALID),
            ("type", dict(type=4), S_INVALID),
            ("zone id", dict(zone=4), S_INVALID),
            ("node", dict(node=1), S_INVALID),
            ("cores", dict(cores=0), S_INVALID),
            ("frames", dict(frames=0), S_INVALID),
            ("base_pfn", dict(base_pfn=0x10001), S_INVALID),
            ("trees align", dict(trees_gpa=z.trees + 8), S_INVALID),
            ("counter align", dict(file_pages_gpa=z.file_pages + 4),
             S_INVALID),
            ("trees_len", dict(trees_len=z.trees_len + 64), S_INVALID),
            ("beyond RAM", dict(base_pfn=0x40000), S_ADDRESS),
            ("array outside RAM", dict(lower_gpa=0xE0000000), S_ADDRESS),
            ("array wraps", dict(trees_gpa=(1 << 64) - 64), S_ADDRESS),
            ("overlap", dict(lower_gpa=z.trees), S_INVALID),
            ("counters overlap", dict(global_free_pages_gpa=z.free_pages),
             S_INVALID),
        ]
        for what, over, want in bad:
            status, value = respond(dev, 0, z.message(**over))
            check(status == want, f"{what}: status {status}, want {want}")
        # malformed llfree state: attach fails
        dev.qt.writew(z.lower + z.children * 64, 0xF000)
        status, _ = respond(dev, 0, z.message())
        check(status == S_INVALID, f"corrupt arrays: status {status}")
        z.reset_arrays()
        status, value = respond(dev, 0, z.message())
        check((status, value) == (S_OK, z.children),
              f"good registration: {status} {value}")
        status, _ = respond(dev, 0, z.message())
        check(status == S_EXISTS, f"same zone twice: {status}")
        z2 = FakeZone(dev, 1, 0x18000, 0x10000, 0x1800000, ZONE_DMA32)
        status, _ = respond(dev, 0, z2.message())
        check(status == S_EXISTS, f"overlapping frames: {status}")
        status, _ = respond(dev, 0, z2.message(version=2))
        check(status == S_VERSION, f"other version: {status}")
        # a second zone may share counters, never arrays
        z3 = FakeZone(dev, 1, 0x20000, 0x10000, 0x1800000, ZONE_DMA32)
        for what, over in (("arrays of zone 0", dict(trees_gpa=z.trees,
                                                       lower_gpa=z.lower)),
                           ("lower on zone 0's trees", dict(lower_gpa=z.trees)),
                           ("counter in zone 0's array",
                            dict(file_pages_gpa=z.lower + 64)),
                           ("array on zone 0's counter",
                            dict(trees_gpa=z.counters))):
            status, _ = respond(dev, 0, z3.message(**over))
            check(status == S_INVALID, f"{what}: status {status}")
        status, value = respond(dev, 0, z3.message(
            global_free_pages_gpa=z.global_free_pages))
        check((status, value) == (S_OK, z3.children),
              f"second zone sharing the global counter: {status} {value}")


def test_protocol_inflate_install_deflate():
    vm, dev = protocol_vm(",auto-mode=off")
    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        status, value = respond(dev, 0, z.message())
        check((status, value) == (S_OK, 128), f"register: {status} {value}")

        # inflate by 32 children (64 MiB)
        info = resize(vm, RAM - 64 * MIB)
        check(info["balloon"] == 64 * MIB and info["actual"] == RAM - 64 * MIB
              and info["target"] == RAM - 64 * MIB, f"query: {info}")
        event = vm.qmp.wait_event("LLFREE_BALLOON_CHANGE", timeout=5)
        check(event["data"]["actual"] == RAM - 64 * MIB, f"event: {event}")
        words = [z.child(c) for c in range(128)]
        check(words.count(HARD_WORD) == 32 and
              words.count(FREE_WORD) == 96, f"child words: {words}")
        check(z.counter("free") == 0x10000 - 32 * 512 and
              z.counter("global") == 4 * 0x10000 - 32 * 512,
              "free-page counters not adjusted")
        check(sum(z.tree(t) for t in range(16)) == 96 * 512,
              "tree counters not adjusted")
        cfg = device_config(dev)
        check(cfg["balloon_children"] == 32 and cfg["target_children"] == 32,
              f"config: {cfg}")
        hard = words.index(HARD_WORD)

        # installs: errors first
        for what, msg, want in [
                ("hard child", install_msg(0, 9, hard * 512), S_STATE),
                ("order 8", install_msg(0, 8, 0), S_INVALID),
                ("order 13", install_msg(0, 13, 0), S_INVALID),
                ("misaligned", install_msg(0, 10, 512), S_INVALID),
                ("beyond zone", install_msg(0, 9, 0x10000), S_INVALID),
                ("padding", install_msg(0, 9, 0, pad0=1), S_INVALID),
                ("no zone", install_msg(1, 9, 0), S_NO_ZONE),
                ("zone id too big", install_msg(99, 9, 0), S_NO_ZONE)]:
            status, value = respond(dev, 2, msg)
            check(status == want, f"install {what}: {status}, want {want}")

        # deflate: lazy, children become soft
        info = resize(vm, RAM)
        check(info["balloon"] == 0 and info["soft"] == 64 * MIB,
              f"query after deflate: {info}")
        check(z.child(hard) == SOFT_WORD, f"word {z.child(hard):#x}")
        check(z.counter("free") == 0x10000, "counter after deflate")

        # install of a soft child, then a duplicate, then order 10 on queue 3
        status, value = respond(dev, 2, install_msg(0, 9, hard * 512))
        check((status, value) == (S_OK, 1), f"install: {status} {value}")
        check(z.child(hard) == FREE_WORD, f"word {z.child(hard):#x}")
        status, value = respond(dev, 2, install_msg(0, 9, hard * 512))
        check((status, value) == (S_OK, 0), f"duplicate: {status} {value}")
        pair = (hard // 2 + 1) * 2
        status, value = respond(dev, 3, install_msg(0, 10, pair * 512))
        check((status, value) == (S_OK, 2), f"order 10: {status} {value}")
        info = vm.qmp.execute("query-llfree-balloon")
        check(info["soft"] == (32 - 3) * CHILD and
              info["installs"] == 8 + 3, f"query after installs: {info}")

        # HMP wrappers, sizes in MiB
        vm.qmp.hmp("llfree_balloon 960")
        wait_resized(vm)
        out = vm.qmp.hmp("info llfree_balloon")
        check(out.startswith("llfree_balloon: actual=960 target=960 "
                             "balloon=64 "), f"info llfree_balloon: {out!r}")

        # 2 MiB rounding: the VM never gets smaller than asked
        info = resize(vm, RAM - 3 * MIB)
        check(info["balloon"] == 2 * MIB and
              info["target"] == RAM - 2 * MIB, f"rounding: {info}")


def test_protocol_install_in_iothread():
    mapping = json.dumps({"driver": DEV, "auto-mode": False,
                          MAPPING: [{"iothread": "io0"}]})
    vm = VM(iothreads("io0") + ["-device", mapping], base=QTEST_BASE,
            qtest=True)
    with vm:
        dev = VirtioPCI(vm.qt, DEVICE_ID)
        dev.init(F_VERSION_1, range(4))
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        resize(vm, RAM - 16 * MIB)
        resize(vm, RAM)
        for q in (2, 3):
            c = [z.child(i) for i in range(128)].index(SOFT_WORD)
            status, value = respond(dev, q, install_msg(0, 9, c * 512))
            check((status, value) == (S_OK, 1), f"queue {q}: {status}")
        # a reset detaches the IOThread handlers; the driver comes back
        vm.qmp.execute("system_reset")
        dev.init(F_VERSION_1, range(4))
        z.reset_arrays()
        check(respond(dev, 0, z.message())[0] == S_OK, "re-register")
        status, _ = respond(dev, 3, install_msg(0, 9, 0))
        check(status == S_OK, f"install after reset: {status}")


def test_protocol_auto_mode():
    vm, dev = protocol_vm(",auto-mode-interval=100")
    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        # some children in use by the guest: not free, never reclaimed
        dev.qt.writew(z.lower + z.children * 64 + 2 * 5, 0x01FF)
        dev.qt.writew(z.trees, 4096 - 1)
        check(vm.qmp.execute("query-llfree-balloon")["soft"] == 0,
              "soft before the first period")
        auto_until_soft(vm, dev, 127 * CHILD)
        info = vm.qmp.execute("query-llfree-balloon")
        check(info["actual"] == RAM and info["target"] == RAM,
              f"auto mode changed the size: {info}")
        check(z.child(5) == 0x01FF and z.child(6) == SOFT_WORD,
              f"words {z.child(5):#x} {z.child(6):#x}")
        check(z.counter("free") == 0x10000, "auto mode changed counters")


def test_protocol_shrink_rounds():
    vm, dev = protocol_vm(",shrink-pagecache=on,auto-mode=off",
                          features=F_VERSION_1 | F_SHRINK)
    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        # 200 children wanted, 128 exist: 72 short, 1000 file pages
        resize(vm, RAM - 200 * CHILD)
        cfg = device_config(dev)
        check(cfg["balloon_children"] == 128 and cfg["shrink_seq"] == 1 and
              cfg["shrink_pages"] == 1000, f"config: {cfg}")
        stale = struct.pack("<HHIQ", 1, 0, 0, 10)
        check(respond(dev, 1, stale)[0] == S_OK, "stale answer")
        check(device_config(dev)["shrink_seq"] == 1, "stale answer retried")
        for seq in (1, 2, 3):
            done = struct.pack("<HHIQ", 1, 0, seq, 500)
            check(respond(dev, 1, done)[0] == S_OK, f"done {seq}")
            wait_resized(vm)
        cfg = device_config(dev)
        check(cfg["shrink_seq"] == 3, f"rounds not bounded: {cfg}")
        bad = struct.pack("<HHIQ", 2, 0, 3, 0)
        check(respond(dev, 1, bad)[0] == S_INVALID, "bad event type")


def test_protocol_event_without_feature():
    vm, dev = protocol_vm(",shrink-pagecache=on")
    with vm:
        done = struct.pack("<HHIQ", 1, 0, 1, 0)
        check(respond(dev, 1, done)[0] == S_INVALID, "event accepted")


def test_protocol_reset_keeps_target():
    vm, dev = protocol_vm(",auto-mode=off")
    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        resize(vm, RAM - 32 * MIB)
        vm.qmp.execute("system_reset")
        info = vm.qmp.execute("query-llfree-balloon")
        check(info["balloon"] == 0 and info["soft"] == 0 and
              info["target"] == RAM - 32 * MIB, f"after reset: {info}")
        expect_error(vm.qmp, "llfree-balloon", {"value": RAM},
                     "GenericError", "guest driver not ready")
        dev.init(F_VERSION_1, range(4))
        z.reset_arrays()
        check(respond(dev, 0, z.message())[0] == S_OK, "re-register")
        info = wait_resized(vm)
        check(info["balloon"] == 32 * MIB, f"target not re-applied: {info}")


def test_protocol_zone_order_after_reboot():
    """Zones register one by one after a reboot (DMA32 first): the stored
    target ends up spread over them in the inflate order, as if all of
    them had been there (NORMAL, then MOVABLE, then DMA32)."""
    vm, dev = protocol_vm(",auto-mode=off")
    with vm:
        dma32 = FakeZone(dev, 0, 0x10000, 0x8000, 0x1000000, ZONE_DMA32)
        movable = FakeZone(dev, 1, 0x18000, 0x2000, 0x1400000, ZONE_MOVABLE)
        normal = FakeZone(dev, 2, 0x20000, 0x10000, 0x1800000, ZONE_NORMAL)
        zones = (dma32, movable, normal)

        def boot():
            for z in zones:
                z.reset_arrays()
            normal.allocate_trees(11)      # 40 of 128 children free

        def hard():
            return [z.check_consistent().count(HARD_WORD) for z in zones]

        boot()
        for z in zones:
            check(respond(dev, 0, z.message())[0] == S_OK, "register")
        info = resize(vm, RAM - 48 * CHILD)
        check(info["balloon"] == 48 * CHILD and hard() == [0, 8, 40],
              f"all zones: {info} {hard()}")

        vm.qmp.execute("system_reset")
        dev.init(F_VERSION_1, range(4))
        boot()
        want = ([48, 0, 0], [32, 16, 0], [0, 8, 40])
        for z, expect in zip(zones, want):
            check(respond(dev, 0, z.message())[0] == S_OK, "re-register")
            info = wait_resized(vm)
            check(info["balloon"] == 48 * CHILD and hard() == expect,
                  f"after zone {z.zone}: {info}, hard {hard()}, "
                  f"want {expect}")
        # children handed back are soft: discarded, the guest may use them
        check(dma32.words().count(SOFT_WORD) == 48 and
              movable.words().count(SOFT_WORD) == 8,
              "returned children are not soft")


def big_vm(props, extra=()):
    """8 GiB, one zone of 6 GiB (3072 children) above 4 GiB."""
    vm, dev = protocol_vm(props, base=qtest_base("8G"), extra=extra)
    try:
        z = FakeZone(dev, 0, 0x100000, 0x180000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
    except Exception:
        vm.kill()
        raise
    return vm, dev, z


BIG_RAM = 8 << 30


def test_protocol_resize_runs_in_steps():
    """llfree-balloon answers while the resize runs; the resize runs in
    bounded steps (one batch each with x-step-children=1: traced) with
    the main loop running in between; a new target replaces the running
    one; the event reports the end."""
    logdir = os.environ.get("VLB_LOGDIR") or tempfile.mkdtemp(prefix="vlb-trace-")
    log = os.path.join(logdir, "trace.log")
    try:
        vm, dev = protocol_vm(",auto-mode=off,x-step-children=1",
                              base=qtest_base("8G"), extra=[
                                  "-D", log,
                                  "-trace", "virtio_llfree_balloon_resize*",
                                  "-trace", "monitor_qmp_respond"])
        with vm:
            z = FakeZone(dev, 0, 0x100000, 0x180000, 0x1000000)
            check(respond(dev, 0, z.message())[0] == S_OK, "register")
            start, info = qmp_pipeline(
                vm.qmp,
                ("llfree-balloon", {"value": BIG_RAM - 3072 * CHILD}),
                ("query-llfree-balloon", None))
            check(start == {} and "resizing" in info, f"query: {info}")
            if VERBOSE:
                print(f"    query right after the command: {info}")
            info = wait_resized(vm)
            check(info["balloon"] == 3072 * CHILD, f"first: {info}")
            with open(log) as f:
                lines = f.read().splitlines()
            begin = next(i for i, l in enumerate(lines)
                         if "virtio_llfree_balloon_resize " in l and
                         "target=0xc00" in l)
            done = next(i for i, l in enumerate(lines)
                        if "virtio_llfree_balloon_resize_done" in l and
                        i > begin)
            answer = next(i for i, l in enumerate(lines)
                          if "monitor_qmp_respond" in l and i > begin)
            steps = [l for l in lines[begin:done] if "_resize_step" in l]
            # QMP runs the handler in a bottom half: a step may come first
            check(answer < done and any("_resize_step" in l
                                        for l in lines[answer:done]),
                  "llfree-balloon answered only when the resize was done")
            check(len(steps) >= 3072 // 32 - 1 and all(
                int(l.split("children=")[1], 16) <= 32 for l in steps),
                  f"steps: {len(steps)}, {steps[:3]}")

            # a new target replaces the running one
            qmp_pipeline(vm.qmp,
                         ("llfree-balloon", {"value": BIG_RAM}),
                         ("llfree-balloon", {"value": BIG_RAM - 600 * CHILD}))
            info = wait_resized(vm)
            check(info["balloon"] == 600 * CHILD and
                  info["actual"] == BIG_RAM - 600 * CHILD, f"second: {info}")
            check(z.check_consistent().count(HARD_WORD) == 600,
                  "child words")
            # rate-limited (virtual clock under qtest): the last one within
            # a second has the result
            dev.qt.clock_step(1100 * 1000 * 1000)
            actual = None
            while actual != BIG_RAM - 600 * CHILD:
                event = vm.qmp.wait_event("LLFREE_BALLOON_CHANGE", timeout=5)
                actual = event["data"]["actual"]
    finally:
        if not os.environ.get("VLB_LOGDIR"):
            shutil.rmtree(logdir, ignore_errors=True)


def test_protocol_reset_cancels_resize():
    """A reset during a resize stops it between two batches: the guest's
    trees, child words and counters agree, a PINNED child taken by the
    search is given back, the target stays. Whether the reset lands in
    the middle depends on the host's scheduling: up to 8 attempts (-v
    shows where it landed); every one must leave a consistent state."""
    vm, dev = protocol_vm(",auto-mode=off,x-step-children=1",
                          base=qtest_base("8G"))
    with vm:
        # metadata in child 3 of the zone: pinned, taken by the search
        z = FakeZone(dev, 0, 0x100000, 0x180000, 0x100000000 + 3 * CHILD)
        for attempt in range(8):
            if attempt:
                dev.init(F_VERSION_1, range(4))
                z.reset_arrays()
            check(respond(dev, 0, z.message())[0] == S_OK, "register")
            qmp_pipeline(vm.qmp,
                         ("llfree-balloon", {"value": BIG_RAM - 3072 * CHILD}),
                         ("system_reset", None))
            deadline = time.monotonic() + 10
            while True:
                info = vm.qmp.execute("query-llfree-balloon")
                if info["balloon"] == 0 and not info["resizing"]:
                    break
                check(time.monotonic() < deadline, f"no reset: {info}")
                time.sleep(0.01)
            check(info["target"] == BIG_RAM - 3072 * CHILD, f"target: {info}")
            words = z.check_consistent()
            check(words[3] == FREE_WORD, f"pinned child word {words[3]:#x}")
            if VERBOSE:
                print(f"    reset after {words.count(HARD_WORD)} of 3071")
            if words.count(HARD_WORD) < 3071:
                break


def test_protocol_auto_mode_ages_children():
    """Auto mode reclaims only memory that stayed free: the first pass that
    sees a child free only marks it, the next one reclaims it if it is
    still free; a child the guest allocated in between is not reclaimed
    (and starts its age anew when it is freed again)."""
    trace = AutoTrace()
    vm, dev = protocol_vm(",auto-mode-interval=100", extra=trace.args)
    try:
        with vm:
            z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
            check(respond(dev, 0, z.message())[0] == S_OK, "register")
            word = z.lower + z.children * 64
            # child 5 in use by the guest at the first pass
            dev.qt.writew(word + 2 * 5, 0x01FF)
            dev.qt.writew(z.trees, 4096 - 1)

            # the timer fires at 100 ms and is armed again for 200 ms; every
            # further step of 100 ms runs exactly one pass
            dev.qt.clock_step(150 * 1000 * 1000)
            trace.wait(1)
            words = z.words()
            check(vm.qmp.execute("query-llfree-balloon")["soft"] == 0 and
                  words.count(SOFT_WORD) == 0,
                  f"first pass reclaimed {words.count(SOFT_WORD)} children")

            # between the passes the guest frees child 5, allocates child 7
            dev.qt.writew(word + 2 * 5, FREE_WORD)
            dev.qt.writew(word + 2 * 7, 0x01FF)
            dev.qt.clock_step(100 * 1000 * 1000)
            trace.wait(2)
            words = z.words()
            check(words[7] == 0x01FF, f"allocated child 7: {words[7]:#x}")
            check(words[5] == FREE_WORD, f"child 5 was reclaimed when first "
                  f"seen free: {words[5]:#x}")
            check(words.count(SOFT_WORD) == 126,
                  f"second pass: {words.count(SOFT_WORD)} soft, not 126")
            check(vm.qmp.execute("query-llfree-balloon")["soft"] ==
                  126 * CHILD, "soft counter")

            # the guest frees child 7 again: it ages from now on
            dev.qt.writew(word + 2 * 7, FREE_WORD)
            dev.qt.writew(z.trees, 4096)
            dev.qt.clock_step(100 * 1000 * 1000)
            trace.wait(3)
            words = z.words()
            check(words[5] == SOFT_WORD and words[7] == FREE_WORD,
                  f"third pass: child 5 {words[5]:#x}, 7 {words[7]:#x}")
            dev.qt.clock_step(100 * 1000 * 1000)
            trace.wait(4)
            check(z.words().count(SOFT_WORD) == 128, "fourth pass")
            check(z.counter("free") == 0x10000, "auto mode changed counters")
    finally:
        trace.close()


def test_protocol_auto_cache_trim():
    """auto-mode-cache-trim=25: once a period auto mode asks the guest to
    drop a quarter of its page cache (the file-page counter, clamped to
    the RAM however the guest sets it), at most one request at a time,
    nothing below one child's worth, and without touching the size."""
    vm, dev = protocol_vm(",auto-mode-interval=100,shrink-pagecache=on,"
                          "auto-mode-cache-trim=25",
                          features=F_VERSION_1 | F_SHRINK)

    def periods(n, seq):
        for _ in range(n):
            dev.qt.clock_step(100 * 1000 * 1000)
        deadline = time.monotonic() + 5
        while device_config(dev)["shrink_seq"] != seq:
            check(time.monotonic() < deadline,
                  f"shrink_seq {device_config(dev)['shrink_seq']}, not {seq}")
            time.sleep(0.02)
        return device_config(dev)["shrink_pages"]

    def file_pages(z, n):
        dev.qt.write(z.file_pages, struct.pack("<q", n))

    def done(seq, pages):
        msg = struct.pack("<HHIQ", 1, 0, seq, pages)
        check(respond(dev, 1, msg)[0] == S_OK, f"done {seq}")

    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        # 1000 file pages: a quarter is less than a child, no request
        periods(3, 0)
        file_pages(z, 100000)
        check(periods(1, 1) == 25000, "request of a quarter")
        periods(3, 1)
        done(1, 25000)
        check(periods(1, 2) == 25000, "next period, next request")
        file_pages(z, -5)
        done(2, 0)
        periods(3, 2)
        file_pages(z, 1 << 62)
        check(periods(1, 3) == RAM // 4096 // 4, "clamped to the RAM")
        info = vm.qmp.execute("query-llfree-balloon")
        check(info["balloon"] == 0 and info["target"] == RAM and
              not info["resizing"], f"cache trim resized: {info}")


def test_protocol_auto_mode_runs_in_steps():
    """An auto-mode pass in the main loop works in bounded steps: the first
    pass only marks the free children; the first step of the second one
    (one child with x-step-children=1) soft-reclaims one child, the rest
    of the pass the others."""
    trace = AutoTrace()
    vm, dev, z = big_vm(",auto-mode-interval=100,x-step-children=1",
                        extra=trace.args)
    try:
        with vm:
            dev.qt.clock_step(150 * 1000 * 1000)
            trace.wait(1, timeout=30)
            check(z.words().count(SOFT_WORD) == 0, "first pass reclaimed")
            answers = dev.qt.cmds([
                f"clock_step {150 * 1000 * 1000}",
                f"read 0x{z.lower + z.children * 64:x} 0x{2 * z.children:x}"])
            words = struct.unpack(f"<{z.children}H",
                                  bytes.fromhex(answers[1][2:]))
            soft = words.count(SOFT_WORD)
            check(soft == 1,
                  f"first step soft-reclaimed {soft} of {z.children}")
            deadline = time.monotonic() + 30
            while vm.qmp.execute("query-llfree-balloon")["soft"] != \
                    z.children * CHILD:
                check(time.monotonic() < deadline, "auto pass does not end")
                time.sleep(0.01)
            z.check_consistent()
    finally:
        trace.close()


def test_protocol_dma_listener_bql():
    """With a DMA listener (x-dma-listener stands in for VFIO), installs
    in an IOThread and auto mode in an IOThread call it only with the
    BQL held (the listener aborts QEMU otherwise)."""
    path = "/machine/peripheral/vlb/virtio-backend"
    devjson = json.dumps({"driver": DEV, "id": "vlb", "x-dma-listener": True,
                          "auto-mode-interval": 100,
                          "auto-mode-iothread": "io0",
                          MAPPING: [{"iothread": "io1"}]})
    vm = VM(iothreads("io0", "io1") + ["-device", devjson],
            base=QTEST_BASE, qtest=True)
    with vm:
        def counters():
            return (vm.qmp.execute("qom-get", {
                        "path": path, "property": "x-dma-listener-populated"}),
                    vm.qmp.execute("qom-get", {
                        "path": path, "property": "x-dma-listener-discarded"}))

        check(counters() == (RAM, 0), f"replay at realize: {counters()}")
        dev = VirtioPCI(vm.qt, DEVICE_ID)
        dev.init(F_VERSION_1, range(4))
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        resize(vm, RAM - 16 * CHILD)
        resize(vm, RAM)
        check(counters() == (RAM, 16 * CHILD), f"inflate: {counters()}")
        soft = [c for c, w in enumerate(z.words()) if w == SOFT_WORD]
        for q, c in ((2, soft[0]), (3, soft[1])):
            status, value = respond(dev, q, install_msg(0, 9, c * 512))
            check((status, value) == (S_OK, 1), f"install queue {q}")
        check(counters() == (RAM + 2 * CHILD, 16 * CHILD),
              f"install: {counters()}")
        auto_until_soft(vm, dev, 128 * CHILD)
        check(counters() == (RAM + 2 * CHILD, 16 * CHILD + 114 * CHILD),
              f"auto mode: {counters()}")
        vm.qmp.execute("system_reset")
        check(counters()[0] == RAM + 2 * CHILD + 128 * CHILD,
              f"reset: {counters()}")


def test_protocol_pinned_metadata():
    """Arrays inside the zone: their children are never reclaimed."""
    vm, dev = protocol_vm(",auto-mode=off")
    with vm:
        # metadata in child 3 of the zone (GPA 256 MiB + 6 MiB)
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x10000000 + 3 * CHILD)
        status, value = respond(dev, 0, z.message())
        check((status, value) == (S_OK, 127), f"register: {status} {value}")
        info = resize(vm, 1 * MIB)
        check(info["balloon"] == 127 * CHILD, f"query: {info}")
        check(z.child(3) == FREE_WORD, f"pinned child word {z.child(3):#x}")


def rss(pid):
    """Resident bytes of the guest RAM mapping (the 1 GiB one), from smaps:
    a page-table walk, unaffected by QEMU's own heap."""
    size = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Size:"):
                size = int(line.split()[1]) * 1024
            elif line.startswith("Rss:") and RAM <= size <= RAM + 4 * MIB:
                return int(line.split()[1]) * 1024
    raise Failure("no guest RAM mapping in smaps")


def test_protocol_discard_releases_memory():
    discard_releases_memory([])


def test_protocol_discard_releases_memfd_memory():
    """Shared file memory: discards punch holes (fallocate)."""
    discard_releases_memory(["-object", "memory-backend-memfd,id=ram,"
                             "size=1G,share=on", "-machine",
                             "memory-backend=ram"])


def discard_releases_memory(extra):
    vm, dev = protocol_vm(",auto-mode=off", extra=extra)
    with vm:
        z = FakeZone(dev, 0, 0x10000, 0x10000, 0x1000000)
        check(respond(dev, 0, z.message())[0] == S_OK, "register")
        dev.qt.cmd(f"memset 0x{0x10000000:x} 0x{0x10000000:x} 0x5a")
        before = rss(vm.proc.pid)
        resize(vm, RAM - 256 * MIB)
        after = rss(vm.proc.pid)
        check(before - after > 200 * MIB,
              f"RSS {before >> 20} MiB -> {after >> 20} MiB")
        check(dev.qt.read(0x10000000 + 5 * CHILD, 16) == bytes(16),
              "discarded memory still holds data")
        resize(vm, RAM)
        status, value = respond(dev, 2, install_msg(0, 9, 5 * 512))
        check((status, value) == (S_OK, 1), f"install: {status} {value}")
        grown = rss(vm.proc.pid) - after
        check(grown >= CHILD - 64 * 1024,
              f"install did not populate: RSS +{grown >> 10} KiB")


def test_protocol_malformed_breaks_device():
    vm, dev = protocol_vm()
    with vm:
        dev.post(0, bytes(87), 8)
        deadline = time.monotonic() + 5
        while not dev.status() & 0x40:
            check(time.monotonic() < deadline, "no DEVICE_NEEDS_RESET")
            time.sleep(0.01)
        status = vm.qmp.execute("query-status")
        check(status["status"] == "running", f"QEMU status {status}")
        # short response buffer, after a reset
        dev.init(F_VERSION_1, range(4))
        dev.post(2, install_msg(0, 9, 0), 4)
        deadline = time.monotonic() + 5
        while not dev.status() & 0x40:
            check(time.monotonic() < deadline, "no DEVICE_NEEDS_RESET")
            time.sleep(0.01)
        vm.qmp.execute("query-llfree-balloon")


def main():
    global VERBOSE
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-k", dest="pattern", default="")
    args = parser.parse_args()
    VERBOSE = args.verbose

    if not os.access(QEMU, os.X_OK):
        print(f"no QEMU binary at {QEMU}; run scripts/build-qemu.sh")
        return 1
    tests = [(name, fn) for name, fn in globals().items()
             if name.startswith("test_") and callable(fn) and
             args.pattern in name]
    passed = failed = 0
    for name, fn in tests:
        start = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"FAIL {name}: {e}")
            if VERBOSE and not isinstance(e, Failure):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - start:.1f} s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
