#!/usr/bin/python3
"""Resize micro-benchmark: how fast each device shrinks and grows a VM.

Issue 6, item 1. Candidates, all with the same QEMU binary and 2 vCPUs:

  virtio-balloon  baseline kernel (buddy allocator), virtio-balloon-pci,
                  manual: QMP `balloon` (target VM size)
  virtio-mem      baseline kernel booted with memhp_default_state=online_movable,
                  boot memory = the target (1 GiB) plus a virtio-mem-pci device
                  over a memory-backend-ram of MEM - target, manual: qom-set
                  requested-size (0 = shrunk, MEM - target = full size)
  HyperAlloc      llfree kernel, virtio-llfree-balloon with auto mode off,
                  manual: QMP `llfree-balloon` (target VM size)

So every VM has MEM bytes of RAM when full and the target size when shrunk.

Per candidate and repetition, two VMs (each guest runs `ha-mem hold 16M`,
driven over the serial console):

  fresh VM:   shrink untouched     boot, shrink to the target at once
  touched VM: cold touch           the guest allocates TOUCH (= MEM - target)
                                   the first time (host page faults)
              warm touch           frees it and allocates it again (host memory
                                   already backed: the guest's own cost)
              shrink touched       frees it; shrink to the target
              grow                 grow back to MEM
              first use after grow the guest allocates TOUCH again

Resize phases are timed from QEMU's own trace log (-trace ..., -msg
timestamp=on: gettimeofday() at each event, the same clock as time.time()):

  virtio-balloon  start virtio_balloon_to_target, end the first
                  virtio_balloon_set_config whose `actual` (pages in the
                  balloon) reaches the target
  virtio-mem      start the host clock right before qom-set (the device logs
                  nothing then), end the last virtio_mem_send_response before
                  `size` reached `requested-size` (polled every 5 ms); onlining
                  of the last plugged block in the guest is not included
  HyperAlloc      start virtio_llfree_balloon_set_target, end
                  virtio_llfree_balloon_resize_done; install_request/_result
                  pairs give the host time spent installing during first use

Each phase also records the time the host observed over QMP (polling every
5 ms), so trace and polling can be compared. Guest phases (touches) are
timed on the host from the command line sent to the "ok" answer.

The host's limits come from build/bench/hostlimit (bench/hostlimit.c), run in
the same invocation: discard and MADV_POPULATE_WRITE throughput of 2 MiB
chunks of THP-backed anonymous memory, the way QEMU backs guest RAM.
Targets (issue 6): HyperAlloc shrinks touched memory at >= 80 % of the
host's discard limit, and its first use after a grow reaches >= 80 % of the
populate limit.

VMs run under TCG here (no KVM): guest-side phases are emulated and slow, so
ratios between candidates and against the host limits carry over, absolute
times do not.

Usage: bench/resize.py [--quick] [--reps N] [--mem 8G] [--target 1G]
                       [--candidates virtio-balloon,virtio-mem,hyperalloc]
                       [--profile] [--out DIR] [--plot CSV]
Output: DIR (default build/bench/resize/) resize-<time>.csv (every phase of
every repetition), resize-<time>.txt (machine, versions, parameters, the
tables), resize-<time>.png (GiB/s per phase and candidate on a log scale,
the host limits as lines; `--plot CSV` redraws it from an earlier run's
CSV), hostlimit-<time>.csv, resize-<time>-<candidate>-<run>.{log,trace}
(serial console and QEMU trace), and with --profile perf reports.
Exit status 0 done, 1 a VM failed, 77 skip (a kernel, initramfs or QEMU missing).
"""

import argparse
import csv
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
from hyperalloc import vm as guestvm  # noqa: E402
from hyperalloc.hostmem import GIB, MIB, rss  # noqa: E402
from hyperalloc.qmp import QMP  # noqa: E402

OUT = os.path.join(REPO, "build", "bench", "resize")
HOSTLIMIT_SRC = os.path.join(REPO, "bench", "hostlimit.c")
HOSTLIMIT_BIN = os.path.join(REPO, "build", "bench", "hostlimit")

POLL = 0.005          # QMP polling period in seconds
STALL = 60.0          # a resize without progress for this long has stalled
HOLD_BASE = "16M"     # memory ha-mem holds from the start
TARGET_SHARE = 0.80   # issue 6: >= 80 % of the host limit

# phase names, in report order
SHRINK_UNTOUCHED = "shrink untouched"
COLD_TOUCH = "cold touch"
WARM_TOUCH = "warm touch"
SHRINK_TOUCHED = "shrink touched"
GROW = "grow"
FIRST_USE = "first use after grow"
INSTALL = "install (host share of first use)"
PHASES = (SHRINK_UNTOUCHED, SHRINK_TOUCHED, GROW, FIRST_USE, INSTALL, COLD_TOUCH, WARM_TOUCH)

TRACE_LINE = re.compile(r"^(\d+)@(\d+)\.(\d{6}):(\w+) ?(.*)$")


def parse_size(text):
    """Bytes from "8G", "512M", "1073741824"."""
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError("bad size '%s'" % text)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def qemu_size(nbytes):
    """QEMU size string (MiB)."""
    return "%dM" % (nbytes // MIB)


class Trace:
    """QEMU's log-backend trace file: lines "tid@sec.usec:event args"."""

    def __init__(self, path):
        self.path = path

    def events(self, prefix="", since=0.0):
        """Returns [(time, tid, name, args)] of events whose name starts with
        prefix, logged at or after since (time.time() seconds)."""
        out = []
        try:
            with open(self.path, errors="replace") as f:
                for line in f:
                    m = TRACE_LINE.match(line)
                    if not m or not m.group(4).startswith(prefix):
                        continue
                    t = int(m.group(2)) + int(m.group(3)) * 1e-6
                    if t >= since:
                        out.append((t, int(m.group(1)), m.group(4), m.group(5)))
        except FileNotFoundError:
            pass
        return out


def trace_args(events, tmpdir, trace):
    """QEMU arguments that log the trace events (names or patterns) to the
    Trace's file, with wall-clock timestamps; the event list goes to tmpdir."""
    path = os.path.join(tmpdir, "events")
    with open(path, "w") as f:
        f.write("\n".join(events) + "\n")
    if os.path.exists(trace.path):
        os.unlink(trace.path)
    return ["-trace", "events=%s,file=%s" % (path, trace.path), "-msg", "timestamp=on"]


def arg(args, key, base=0):
    """Integer value of key=VALUE (or "key: VALUE") in a trace argument string."""
    m = re.search(r"\b%s[=:] ?(0x[0-9a-fA-F]+|-?\d+)" % re.escape(key), args)
    if not m:
        raise ValueError("no %s in '%s'" % (key, args))
    return int(m.group(1), 0)


class Phase:
    """One measured phase: bytes moved, seconds by the device's own trace (or
    the guest's answer for guest phases) and as seen by QMP polling."""

    def __init__(self, name, nbytes, seconds, polled=None, source="trace", note=""):
        self.name, self.nbytes, self.seconds = name, nbytes, seconds
        self.polled, self.source, self.note = polled, source, note

    @property
    def gibs(self):
        if not self.seconds or self.seconds <= 0 or not self.nbytes:
            return None
        return self.nbytes / GIB / self.seconds


class VM:
    """One benchmark VM: a Guest plus its QMP socket and trace file.

    The guest runs RUN (ha.run), which prints READY when it is up and ends on
    the console line QUIT, after which the guest powers off; another
    benchmark subclasses VM to run something else (bench/interference.py)."""

    RUN = "ha-mem hold %s" % HOLD_BASE
    READY = "ok holding"
    QUIT = "quit"

    def __init__(self, cand, cfg, tag):
        self.cand, self.cfg = cand, cfg
        base = os.path.join(cfg.out, "%s-%s-%s" % (cfg.stamp, cand.name, tag))
        self.log_path = base + ".log"
        self.trace = Trace(base + ".trace")
        self.tmp = tempfile.mkdtemp(prefix="ha-resize-")
        self.sock = os.path.join(self.tmp, "qmp.sock")
        mem, args, append = cand.machine(cfg)
        args += ["-name", "bench-%s,debug-threads=on" % cand.name,  # thread names for perf
                 "-qmp", "unix:%s,server=on,wait=off" % self.sock]
        args += trace_args(cand.trace_events, self.tmp, self.trace)
        self.guest = guestvm.Guest(cand.kernel, mem=mem, smp=2,
                                   run=self.RUN, append=append,
                                   qemu_args=args, log_path=self.log_path)
        self.qmp = None

    def __enter__(self):
        self.guest.__enter__()
        try:
            if not self.guest.wait_for(self.READY, self.cfg.boot_timeout):
                raise RuntimeError("%s: the guest did not start (see %s)"
                                   % (self.cand.name, self.log_path))
            self.qmp = QMP.connect(self.sock, timeout=60, retry_for=10)
            self.cand.ready(self)
        except BaseException:
            self.guest.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self.qmp:
                self.guest.send(self.QUIT + "\n")
                self.guest.wait_exit(30)
                self.qmp.close()
        finally:
            self.guest.__exit__(*exc)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def hold(self, cmd, timeout=None):
        """Runs one ha-mem hold command; returns seconds from send to answer."""
        t0 = time.monotonic()
        answer = self.guest.hold_command(cmd, timeout or self.cfg.guest_timeout)
        dt = time.monotonic() - t0
        if not answer.startswith("ok"):
            raise RuntimeError("%s: guest workload '%s' -> %s (see %s)"
                               % (self.cand.name, cmd, answer, self.log_path))
        return dt

    def rss(self):
        return rss(self.guest.pid)

    def host_mem(self):
        """'RSS N MiB (THP M MiB)' of the QEMU process."""
        thp = 0
        try:
            with open("/proc/%d/smaps_rollup" % self.guest.pid) as f:
                for line in f:
                    if line.startswith("AnonHugePages:"):
                        thp = int(line.split()[1]) * 1024
        except OSError:
            pass
        return "%d MiB (THP %d MiB)" % (self.rss() // MIB, thp // MIB)

    def wait_until(self, done, what):
        """Polls done() every POLL seconds; returns the time.time() at which
        it first held. done() returns (finished, progress value)."""
        last, last_change = None, time.monotonic()
        while True:
            finished, progress = done()
            now = time.time()
            if finished:
                return now
            if progress != last:
                last, last_change = progress, time.monotonic()
            elif time.monotonic() - last_change > STALL:
                raise RuntimeError("%s: %s stalled at %s" % (self.cand.name, what, progress))
            time.sleep(POLL)


class Candidate:
    """What differs between the devices: machine, resize command, timing."""

    name = label = variant = None
    trace_events = ()

    @property
    def kernel(self):
        return os.path.join(guestvm.GUEST_DIR, guestvm.VARIANTS[self.variant][0])

    def machine(self, cfg):
        """Returns (mem, extra QEMU args, extra kernel command line)."""
        raise NotImplementedError

    def ready(self, vm):
        """Waits until the VM has its full size after boot."""

    def size(self, vm):
        """Current VM size in bytes as the device reports it."""
        raise NotImplementedError

    def resize(self, vm, size, phase):
        """Resizes the VM to size bytes; returns a Phase."""
        raise NotImplementedError


class VirtioBalloon(Candidate):
    name, label, variant = "virtio-balloon", "virtio-balloon", "baseline"
    # not virtio_balloon_handle_output: one line per 4 KiB page
    trace_events = ("virtio_balloon_to_target", "virtio_balloon_set_config")

    def machine(self, cfg):
        return qemu_size(cfg.mem), ["-device", "virtio-balloon-pci,id=balloon0"], ""

    def size(self, vm):
        return vm.qmp.execute("query-balloon")["actual"]

    def resize(self, vm, size, phase):
        cfg = vm.cfg
        pages = (cfg.mem - size) // 4096
        before = self.size(vm)
        t0 = time.time()
        vm.qmp.execute("balloon", {"value": size})
        t_poll = vm.wait_until(lambda: (lambda a: (a == size, a))(self.size(vm)), phase)
        # the command is sent after t0, on the same clock as the trace
        start = [e for e in vm.trace.events("virtio_balloon_to_target", t0)
                 if arg(e[3], "num_pages") == pages]
        # set_config: the guest wrote `actual` = pages in the balloon
        ends = start and [e for e in vm.trace.events("virtio_balloon_set_config", start[0][0])
                          if arg(e[3], "actual") == pages]
        if not start or not ends:
            return Phase(phase, abs(before - size), t_poll - t0, t_poll - t0, "qmp",
                         "no trace events")
        return Phase(phase, abs(before - size), ends[0][0] - start[0][0], t_poll - t0)


class VirtioMem(Candidate):
    name, label, variant = "virtio-mem", "virtio-mem", "baseline"
    trace_events = ("virtio_mem_*",)

    def machine(self, cfg):
        plug = cfg.mem - cfg.target
        args = ["-object", "memory-backend-ram,id=vmem0,size=%s" % qemu_size(plug),
                "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,"
                           "requested-size=%s" % qemu_size(plug)]
        return ("%s,maxmem=%s" % (qemu_size(cfg.target), qemu_size(cfg.mem)), args,
                "memhp_default_state=online_movable")

    def size(self, vm):
        """Boot memory plus the plugged size of the device."""
        return vm.cfg.target + vm.qmp.execute("qom-get", {"path": "/machine/peripheral/vm0",
                                                          "property": "size"})

    def ready(self, vm):
        vm.wait_until(lambda: (lambda s: (s == vm.cfg.mem, s))(self.size(vm)), "boot plug")

    def resize(self, vm, size, phase):
        before = self.size(vm)
        t0 = time.time()
        vm.qmp.execute("qom-set", {"path": "/machine/peripheral/vm0",
                                   "property": "requested-size", "value": size - vm.cfg.target})
        t_poll = vm.wait_until(lambda: (lambda s: (s == size, s))(self.size(vm)), phase)
        kind = "virtio_mem_unplug_request" if size < before else "virtio_mem_plug_request"
        reqs = [e for e in vm.trace.events(kind, t0) if e[0] <= t_poll]
        resp = [e for e in vm.trace.events("virtio_mem_send_response", t0) if e[0] <= t_poll]
        if not reqs or not resp:
            return Phase(phase, abs(before - size), t_poll - t0, t_poll - t0, "qmp",
                         "no trace events")
        note = "%d %s" % (len(reqs), kind.split("_")[2] + " requests")
        return Phase(phase, abs(before - size), resp[-1][0] - t0, t_poll - t0, "trace", note)


class HyperAlloc(Candidate):
    name, label, variant = "hyperalloc", "HyperAlloc", "llfree"
    trace_events = ("virtio_llfree_balloon_*",)

    def machine(self, cfg):
        return qemu_size(cfg.mem), guestvm.llfree_device_args(auto_mode=False), ""

    def info(self, vm):
        return vm.qmp.execute("query-llfree-balloon")

    def size(self, vm):
        return self.info(vm)["actual"]

    def ready(self, vm):
        # the driver registers its zones during boot; resizing needs them
        deadline = time.monotonic() + 60
        while not vm.trace.events("virtio_llfree_balloon_zone_result"):
            if time.monotonic() > deadline:
                raise RuntimeError("hyperalloc: the guest driver did not register")
            time.sleep(0.1)

    def resize(self, vm, size, phase):
        before = self.size(vm)
        t0 = time.time()
        vm.qmp.execute("llfree-balloon", {"value": size})

        def done():
            info = self.info(vm)
            if "resizing" in info:
                return not info["resizing"], info["actual"]
            return info["actual"] == size, info["actual"]
        try:
            t_poll = vm.wait_until(done, phase)
        except RuntimeError:
            t_poll = time.time()  # fell short: the trace says where it stopped
        after = self.size(vm)
        # the command is sent after t0, on the same clock as the trace
        start = vm.trace.events("virtio_llfree_balloon_set_target", t0)
        end = start and vm.trace.events("virtio_llfree_balloon_resize_done", start[0][0])
        if not start or not end:
            return Phase(phase, abs(before - after), t_poll - t0, t_poll - t0, "qmp",
                         "no trace events")
        discards = vm.trace.events("virtio_llfree_balloon_discard", start[0][0])
        discards = [e for e in discards if e[0] <= end[0][0]]
        if size < before and discards:
            sizes = [arg(e[3], "size") for e in discards]
            note = ("%d discard calls (largest %d MiB); first discard %.1f ms after the "
                    "command, last %.1f ms before the end"
                    % (len(discards), max(sizes) // MIB, (discards[0][0] - start[0][0]) * 1e3,
                       (end[0][0] - discards[-1][0]) * 1e3))
        else:
            note = "lazy" if size > before else "no discards"
        if after != size:
            note += ", reached %d MiB of %d MiB" % (after // MIB, size // MIB)
        return Phase(phase, abs(before - after), end[0][0] - start[0][0], t_poll - t0,
                     "trace", note)

    def installs(self, vm, since, until):
        """Phase for the host's share of first use: the install requests
        answered in [since, until], request to result per thread."""
        each, children = install_times(vm.trace, since, until)
        if not each:
            return None
        n, busy = len(each), sum(each)
        return Phase(INSTALL, children * 2 * MIB, busy, None, "trace",
                     "%d installs, %d x 2 MiB populated, %.1f %% of first use; per install "
                     "median %.0f us, p90 %.0f us, max %.1f ms; installs over 1 ms: %.0f %% "
                     "of install time" % (n, children, 100 * busy / (until - since),
                                           each[n // 2] * 1e6, each[n * 9 // 10] * 1e6,
                                           each[-1] * 1e3,
                                           100 * sum(x for x in each if x > 1e-3) / busy))


INSTALL_EVENTS = ("virtio_llfree_balloon_install_request",
                  "virtio_llfree_balloon_install_result")


def install_times(trace, since, until):
    """HyperAlloc's install requests in a trace of INSTALL_EVENTS answered in
    [since, until] (time.time() seconds): (sorted seconds from request to
    result in the thread that served it, 2 MiB children populated). Without
    an install IOThread that thread is the requesting vCPU's, which waits
    for the whole time."""
    evs = [e for e in trace.events("virtio_llfree_balloon_install_", since) if e[0] <= until]
    open_req, each, children = {}, [], 0
    for t, tid, name, args in evs:
        if name == INSTALL_EVENTS[0]:
            open_req[tid] = t
        elif name == INSTALL_EVENTS[1] and tid in open_req:
            each.append(t - open_req.pop(tid))
            children += arg(args, "populated")
    return sorted(each), children


CANDIDATES = {c.name: c for c in (VirtioBalloon(), VirtioMem(), HyperAlloc())}
PROFILES = []  # (candidate label, phase, perf report path) of --profile


class Profiler:
    """perf record of the QEMU process around one phase (--profile)."""

    def __init__(self, cfg, vm, phase, enabled):
        self.cfg, self.vm, self.phase, self.enabled = cfg, vm, phase, enabled
        self.proc = None
        self.data = os.path.join(cfg.out, "%s-%s-%s.perf.data"
                                 % (cfg.stamp, vm.cand.name, phase.replace(" ", "-")))

    def __enter__(self):
        if self.enabled and shutil.which("perf"):
            self.proc = subprocess.Popen(
                ["perf", "record", "-q", "-F", "4999", "-g", "-p", str(self.vm.guest.pid),
                 "-o", self.data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # perf attaches to every thread
        return self

    def __exit__(self, *exc):
        if not self.proc:
            return
        self.proc.send_signal(2)
        self.proc.wait(60)
        report = subprocess.run(
            ["perf", "report", "-i", self.data, "--no-children", "--stdio", "-q",
             "--sort", "comm,dso,sym", "-g", "none", "--percent-limit", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        self.report = self.data[:-len(".data")] + ".txt"
        with open(self.report, "w") as f:
            f.write(report)
        PROFILES.append((self.vm.cand.label, self.phase, self.report))


def run_fresh(cand, cfg, rep):
    """Fresh VM: shrink untouched memory right after boot."""
    with VM(cand, cfg, "r%s-fresh" % rep) as vm:
        mem0 = vm.host_mem()
        ph = cand.resize(vm, cfg.target, SHRINK_UNTOUCHED)
        ph.note = (ph.note + "; " if ph.note else "") + "host RSS %s -> %s" % (
            mem0, vm.host_mem())
        return [ph]


def run_touched(cand, cfg, rep, profile=False):
    """Touched VM: touch, free, shrink, grow, use again. With profile, perf
    records QEMU during the shrink and the first use (perf slows QEMU down:
    such a run is reported apart)."""
    touch = "%dM" % (cfg.touch // MIB)
    out = []
    with VM(cand, cfg, "r%s-touched" % rep) as vm:
        dt = vm.hold("grow " + touch)
        out.append(Phase(COLD_TOUCH, cfg.touch, dt, None, "serial",
                         "host RSS after %s" % vm.host_mem()))
        vm.hold("shrink " + touch)
        dt = vm.hold("grow " + touch)
        out.append(Phase(WARM_TOUCH, cfg.touch, dt, None, "serial"))
        vm.hold("shrink " + touch)
        mem0 = vm.host_mem()
        with Profiler(cfg, vm, SHRINK_TOUCHED, profile):
            ph = cand.resize(vm, cfg.target, SHRINK_TOUCHED)
        ph.note = (ph.note + "; " if ph.note else "") + "host RSS %s -> %s" % (
            mem0, vm.host_mem())
        out.append(ph)
        out.append(cand.resize(vm, cfg.mem, GROW))
        t0 = time.time()
        with Profiler(cfg, vm, FIRST_USE, profile):
            dt = vm.hold("grow " + touch)
        t1 = time.time()
        out.append(Phase(FIRST_USE, cfg.touch, dt, None, "serial",
                         "host RSS after %s" % vm.host_mem()))
        if isinstance(cand, HyperAlloc):
            inst = cand.installs(vm, t0, t1)
            if inst:
                out.append(inst)
        bad = vm.guest.result.bad_lines()
        if bad:
            raise RuntimeError("%s: guest console problems: %s" % (cand.name, "; ".join(bad[:3])))
    return out


def build_hostlimit():
    """Compiles bench/hostlimit.c into build/bench/ when it is out of date."""
    if os.path.exists(HOSTLIMIT_BIN) and \
            os.path.getmtime(HOSTLIMIT_BIN) >= os.path.getmtime(HOSTLIMIT_SRC):
        return
    os.makedirs(os.path.dirname(HOSTLIMIT_BIN), exist_ok=True)
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                    HOSTLIMIT_BIN, HOSTLIMIT_SRC], check=True)


def host_limits(cfg):
    """Runs hostlimit; returns {(kind, op): median GiB/s} and its output."""
    if cfg.limits:
        with open(cfg.limits) as f:
            return ({(r["kind"], r["op"]): float(r["median_gibs"]) for r in csv.DictReader(f)},
                    "(reused from %s)\n" % cfg.limits)
    build_hostlimit()
    path = os.path.join(cfg.out, "hostlimit-%s.csv" % cfg.stamp)
    argv = [HOSTLIMIT_BIN, "--size", "%dM" % (cfg.limit_size // MIB), "--reps",
            str(cfg.limit_reps), "--csv", path, "--kinds", cfg.limit_kinds]
    text = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
    with open(path) as f:
        limits = {(r["kind"], r["op"]): float(r["median_gibs"]) for r in csv.DictReader(f)}
    return limits, text


def fmt_rate(x):
    if x is None:
        return "-"
    return "%.2f" % x if x < 10 else "%.0f" % x if x >= 100 else "%.1f" % x


def fmt_time(s):
    if s is None:
        return "-"
    return "%.1f ms" % (s * 1e3) if s < 1 else "%.2f s" % s


def summarize(rows):
    """{(candidate, phase): (median seconds, median GiB/s, bytes, n, note)}."""
    groups = {}
    for r in rows:
        groups.setdefault((r["candidate"], r["phase"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        secs = [r["seconds"] for r in rs if r["seconds"]]
        rates = [r["gibs"] for r in rs if r["gibs"]]
        out[key] = (statistics.median(secs) if secs else None,
                    statistics.median(rates) if rates else None,
                    statistics.median(r["bytes"] for r in rs), len(rs),
                    rs[-1]["note"], (min(rates), max(rates)) if rates else None)
    return out


def tables(cfg, rows, limits):
    """The report: phases per candidate, ratios, targets. Returns text."""
    s = summarize(rows)
    names = [c for c in cfg.candidates]
    lines = []
    lines.append("| phase | " + " | ".join(CANDIDATES[c].label for c in names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for phase in PHASES:
        if not any((c, phase) in s for c in names):
            continue
        cells = []
        for c in names:
            v = s.get((c, phase))
            if not v:
                cells.append("")
                continue
            secs, rate, nbytes = v[0], v[1], v[2]
            cells.append("%s GiB/s (%s, %.2f GiB)" % (fmt_rate(rate), fmt_time(secs),
                                                      nbytes / GIB))
        lines.append("| %s | %s |" % (phase, " | ".join(cells)))
    lines.append("")

    ha = "hyperalloc"
    if ha in names:
        peers = [c for c in names if c != ha]
        if peers:
            lines.append("| HyperAlloc / peer (throughput ratio) | "
                         + " | ".join(CANDIDATES[c].label for c in peers) + " |")
            lines.append("|---|" + "---:|" * len(peers))
            for phase in (SHRINK_UNTOUCHED, SHRINK_TOUCHED, GROW, FIRST_USE):
                mine = s.get((ha, phase))
                cells = []
                for c in peers:
                    theirs = s.get((c, phase))
                    if mine and theirs and mine[1] and theirs[1]:
                        cells.append("%.1fx" % (mine[1] / theirs[1]))
                    else:
                        cells.append("-")
                lines.append("| %s | %s |" % (phase, " | ".join(cells)))
            lines.append("")

        lines.append("| HyperAlloc vs host limit | HyperAlloc GiB/s | host limit GiB/s "
                     "| share | target |")
        lines.append("|---|---:|---:|---:|---|")
        checks = (
            (SHRINK_TOUCHED, ("anon-thp", "discard-2M"), "discard, 2 MiB calls"),
            (SHRINK_TOUCHED, ("anon-thp", "discard-merged"), "discard, one merged call"),
            (SHRINK_TOUCHED, ("anon-4k", "discard-2M"), "discard, 2 MiB calls, no THP"),
            (INSTALL, ("anon-thp", "populate-2M"), "populate, 2 MiB calls"),
            (INSTALL, ("anon-thp", "populate-reported"), "populate after page reporting"),
            (FIRST_USE, ("anon-thp", "populate-2M"), "populate, 2 MiB calls"),
            (FIRST_USE, ("anon-thp", "populate-reported"), "populate after page reporting"),
        )
        for phase, key, what in checks:
            mine = s.get((ha, phase))
            lim = limits.get(key)
            if not mine or not mine[1] or not lim:
                continue
            share = mine[1] / lim
            primary = key in (("anon-thp", "discard-2M"), ("anon-thp", "populate-2M"))
            verdict = ""
            if primary:
                verdict = ">= 80 %%: %s" % ("met" if share >= TARGET_SHARE else
                                            "missed by %.0f points (%.1fx too slow)"
                                            % ((TARGET_SHARE - share) * 100,
                                               TARGET_SHARE / share))
            lines.append("| %s vs %s (%s) | %s | %s | %.1f %% | %s |"
                         % (phase, what, key[0], fmt_rate(mine[1]), fmt_rate(lim),
                            share * 100, verdict))
        lines.append("")
    notes = ["- %s, %s: %s" % (CANDIDATES[c].label, ph, v[4])
             for (c, ph), v in sorted(s.items()) if v[4]]
    if notes:
        lines.append("Notes (last repetition):")
        lines.extend(notes)
    return "\n".join(lines)


# host limits drawn in the plot: (kind, op), label, line style
PLOT_LIMITS = (
    (("anon-thp", "discard-2M"), "host discard, 2 MiB calls", "--"),
    (("anon-thp", "discard-merged"), "host discard, one merged call", ":"),
    (("anon-thp", "populate-2M"), "host populate, 2 MiB calls", "-."),
    (("anon-thp", "populate-reported"), "host populate after page reporting", (0, (5, 1, 1, 1))),
)
PLOT_COLORS = {"virtio-balloon": "tab:blue", "virtio-mem": "tab:orange",
               "hyperalloc": "tab:green"}


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None (said) if it is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("no matplotlib (apt-get install python3-matplotlib): no plot")
        return None


def save_figure(plt, fig, path):
    """Writes fig to path as PNG and frees it; returns path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def candidate_names(p, text, known):
    """The names in text (comma-separated); p.error for one not in known."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    for c in names:
        if c not in known:
            p.error("unknown candidate '%s'" % c)
    return names


def vm_timeouts(cfg):
    """Sets cfg.boot_timeout and cfg.guest_timeout (seconds) from cfg.mem and
    cfg.touch: under TCG booting and touching memory slow down with the VM
    size and the host's load."""
    cfg.boot_timeout = 120 + 30 * cfg.mem // GIB
    cfg.guest_timeout = 120 + 60 * cfg.touch // GIB


def missing_builds(cands):
    """True (after saying why) when a kernel or the QEMU that one of the
    candidates needs is not built."""
    return not all(guestvm.variant_or_skip(c.variant) for c in cands)


def write_report(path, text, failed):
    """Writes a report file: text, then the failures, if any."""
    if failed:
        text += "\nFAILED:\n" + "\n".join("- " + f for f in failed) + "\n"
    with open(path, "w") as f:
        f.write(text)


def plot(names, rows, limits, path, title):
    """Bar chart of the median GiB/s per phase and candidate (log scale, the
    whiskers span the repetitions), the host limits as horizontal lines.
    Returns path, or None without matplotlib."""
    plt = pyplot()
    if not plt:
        return None
    s = summarize(rows)
    phases = [ph for ph in PHASES if any((c, ph) in s for c in names)]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(names)
    for i, c in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, ph in enumerate(phases):
            v = s.get((c, ph))
            if not v or not v[1]:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(v[1])
            lo.append(v[1] - v[5][0])
            hi.append(v[5][1] - v[1])
        ax.bar(xs, ys, width, yerr=[lo, hi] if len(rows) > len(s) else None,
               label=CANDIDATES[c].label, color=PLOT_COLORS.get(c), capsize=2)
        for x, y in zip(xs, ys):
            ax.annotate(fmt_rate(y), (x, y), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    for key, label, style in PLOT_LIMITS:
        if limits.get(key):
            ax.axhline(limits[key], color="0.3", linestyle=style, linewidth=1,
                       label="%s (%s GiB/s)" % (label, fmt_rate(limits[key])))
    ax.set_yscale("log")
    ax.set_xticks(range(len(phases)))
    ax.set_xticklabels([ph.replace(" (", "\n(").replace("use after", "use\nafter")
                        for ph in phases], fontsize=8)
    ax.set_ylabel("GiB/s (log scale; higher is faster)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(plt, fig, path)


def read_rows(csv_path):
    """Rows of a resize-<time>.csv as written by main()."""
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["bytes"] = int(r["bytes"])
        for k in ("seconds", "polled_seconds", "gibs"):
            r[k] = float(r[k]) if r[k] else None
    return rows


def replot(csv_path, limits_path):
    """--plot: the PNG of an earlier run, beside its CSV."""
    rows = read_rows(csv_path)
    if not limits_path:
        limits_path = os.path.join(os.path.dirname(csv_path), os.path.basename(
            csv_path).replace("resize-", "hostlimit-"))
    limits = {}
    if os.path.exists(limits_path):
        with open(limits_path) as f:
            limits = {(r["kind"], r["op"]): float(r["median_gibs"]) for r in csv.DictReader(f)}
    names = [c for c in CANDIDATES if any(r["candidate"] == c for r in rows)]
    stamp = os.path.basename(csv_path)[len("resize-"):-len(".csv")]
    path = plot(names, rows, limits, csv_path[:-len(".csv")] + ".png",
                "resize micro-benchmark %s (TCG: compare ratios, not absolute rates)" % stamp)
    if path:
        print("plot: %s" % path)
    return 0 if path else 1


def machine_info():
    model = "?"
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        memtotal = int(f.readline().split()[1]) // (1 << 20)
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "-uno"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True).stdout.strip()
        commit += " (uncommitted changes)" if dirty else ""
    except OSError:
        commit = "?"
    qemu_info = "?"
    info_path = os.path.join(REPO, "build", "qemu", "BUILD-INFO")
    if os.path.exists(info_path):
        with open(info_path) as f:
            qemu_info = " ".join(line.strip() for line in f if line.startswith(("hash", "built")))
    return ["date: %s" % datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"),
            "machine: %s, %d CPUs, %d GiB RAM, Linux %s" % (model, os.cpu_count(), memtotal,
                                                          platform.release()),
            "load average at start: %.2f %.2f %.2f" % os.getloadavg(),
            "commit: %s" % commit,
            "QEMU: %s (%s)" % (guestvm.find_qemu(), qemu_info)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 GiB VMs, 1 repetition, smaller host-limit runs (a few minutes)")
    p.add_argument("--mem", type=parse_size, help="VM size (default 8G, quick 3G)")
    p.add_argument("--target", type=parse_size, default=1 * GIB,
                   help="size to shrink to (default 1G)")
    p.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="comma-separated subset of %s" % ",".join(CANDIDATES))
    p.add_argument("--profile", action="store_true",
                   help="one more HyperAlloc run under perf record (shrink, first use), "
                        "reported apart from the measured repetitions")
    p.add_argument("--limits", metavar="CSV",
                   help="reuse a hostlimit CSV of an earlier run instead of measuring")
    p.add_argument("--out", default=OUT, help="output directory (default %(default)s)")
    p.add_argument("--plot", metavar="CSV",
                   help="only draw the PNG of an earlier run's resize-<time>.csv (host limits "
                        "from the hostlimit CSV beside it or --limits) and exit")
    cfg = p.parse_args(argv)
    cfg.mem = cfg.mem or (3 * GIB if cfg.quick else 8 * GIB)
    cfg.reps = cfg.reps or (1 if cfg.quick else 3)
    cfg.touch = cfg.mem - cfg.target
    if cfg.touch < 256 * MIB or cfg.mem % (2 * MIB) or cfg.target % (128 * MIB):
        p.error("need --mem >= --target + 256M, 2 MiB multiples, target a 128 MiB multiple")
    cfg.candidates = candidate_names(p, cfg.candidates, CANDIDATES)
    cfg.limit_size = 512 * MIB if cfg.quick else 2 * GIB
    cfg.limit_reps = 3 if cfg.quick else 7
    cfg.limit_kinds = "anon-thp,anon-4k" if cfg.quick else "anon-thp,anon-4k,memfd"
    vm_timeouts(cfg)
    cfg.stamp = time.strftime("%Y%m%d-%H%M%S")
    return cfg


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.plot:
        return replot(cfg.plot, cfg.limits)
    if missing_builds(CANDIDATES[c] for c in cfg.candidates):
        return 77
    os.makedirs(cfg.out, exist_ok=True)
    header = machine_info() + [
        "VMs: %d GiB, 2 vCPUs, shrunk to %d MiB; the guest touches %d MiB; %d repetition(s); "
        "accel %s" % (cfg.mem // GIB, cfg.target // MIB, cfg.touch // MIB, cfg.reps,
                      guestvm.choose_accel(guestvm.find_qemu(),
                                           CANDIDATES[cfg.candidates[0]].kernel)),
        "virtio-mem VM: %d MiB boot memory + %d MiB virtio-mem device (block size 2 MiB, "
        "memhp_default_state=online_movable)" % (cfg.target // MIB, cfg.touch // MIB),
        "command: bench/resize.py %s" % " ".join(sys.argv[1:] if argv is None else argv)]
    for line in header:
        print(line, flush=True)

    print("\nhost limits (bench/hostlimit.c) ...", flush=True)
    limits, limit_text = host_limits(cfg)
    print(limit_text, flush=True)

    rows, failed = [], []
    for rep in range(cfg.reps):
        for name in cfg.candidates:
            cand = CANDIDATES[name]
            for run in (run_fresh, run_touched):
                print("[rep %d] %s: %s ..." % (rep + 1, cand.label, run.__doc__.split(":")[0]),
                      flush=True)
                try:
                    phases = run(cand, cfg, rep)
                except (RuntimeError, OSError, TimeoutError, ValueError) as e:
                    print("  FAILED: %s" % e, flush=True)
                    failed.append("%s rep %d: %s" % (name, rep + 1, e))
                    continue
                for ph in phases:
                    print("  %-34s %9s GiB/s  %10s  (QMP poll %s)  %s"
                          % (ph.name, fmt_rate(ph.gibs), fmt_time(ph.seconds),
                             fmt_time(ph.polled), ph.note), flush=True)
                    rows.append({"rep": rep + 1, "candidate": name, "phase": ph.name,
                                 "bytes": ph.nbytes, "seconds": ph.seconds,
                                 "polled_seconds": ph.polled, "gibs": ph.gibs,
                                 "source": ph.source, "note": ph.note})

    if cfg.profile and "hyperalloc" in cfg.candidates:
        print("[profile] HyperAlloc under perf (not in the tables) ...", flush=True)
        try:
            for ph in run_touched(CANDIDATES["hyperalloc"], cfg, "profile", profile=True):
                print("  %-34s %9s GiB/s  %10s  %s" % (ph.name, fmt_rate(ph.gibs),
                                                     fmt_time(ph.seconds), ph.note))
        except (RuntimeError, OSError, TimeoutError, ValueError) as e:
            print("  profile run FAILED: %s" % e, flush=True)
        if not shutil.which("perf"):
            print("  no perf (apt-get install linux-perf): trace timestamps only")

    csv_path = os.path.join(cfg.out, "resize-%s.csv" % cfg.stamp)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rep", "candidate", "phase", "bytes", "seconds",
                                          "polled_seconds", "gibs", "source", "note"])
        w.writeheader()
        w.writerows(rows)
    report = tables(cfg, rows, limits)
    text = "\n".join(header) + "\n\nhost limits:\n" + limit_text + "\n" + report + "\n"
    for label, phase, path in PROFILES:
        with open(path) as f:
            top = [line.rstrip() for line in f if line.strip()][:12]
        text += "\nperf, %s, %s (%s):\n%s\n" % (label, phase, os.path.basename(path),
                                               "\n".join(top))
    txt_path = os.path.join(cfg.out, "resize-%s.txt" % cfg.stamp)
    write_report(txt_path, text, failed)
    png = plot(cfg.candidates, rows, limits, os.path.join(cfg.out, "resize-%s.png" % cfg.stamp),
               "resize micro-benchmark %s: %d GiB VMs, %d repetition(s) (TCG: compare ratios, "
               "not absolute rates)" % (cfg.stamp, cfg.mem // GIB, cfg.reps)) if rows else None
    print("\n" + report)
    print("\nraw data: %s\nreport:   %s" % (csv_path, txt_path))
    if png:
        print("plot:     %s" % png)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
