"""Shared parts of the automatic-reclamation benchmarks (bench/autoreclaim.py,
bench/multivm.py): the build-like guest workload, the three automatic
candidates, a VM that runs the workload and reports its memory, the 1 Hz host
RSS sampler, footprints and plots.

Candidates (the same QEMU binary; machines from bench/resize.py):

  fpr         virtio-balloon with free page reporting: baseline kernel (buddy),
              virtio-balloon-pci,free-page-reporting=on. The guest reports free
              2 MiB blocks (order 9, about 2 s after they were freed); QEMU
              discards them. No host policy.
  virtio-mem  baseline kernel, memhp_default_state=online_movable, 1 GiB boot
              memory + virtio-mem-pci (block size 2 MiB) over MEM - 1 GiB,
              resized by the host policy VirtioMemPolicy below.
  hyperalloc  llfree kernel, virtio-llfree-balloon auto-mode=on with
              auto-mode-interval (default 1000 ms: memory goes back 1-2 s
              after the guest freed it, like free page reporting's 2 s
              delay) in an IOThread, shrink-pagecache=on. Every interval
              the device soft-reclaims every installed 2 MiB frame that was
              free at the previous pass too.
  hyperalloc-trim  the same with auto-mode-cache-trim (default 20 %): every
              interval the device also asks the guest to drop that share of
              its page cache (the least recently used first).

The workload is guest/tools/ha-build.sh (/bin/ha-build): `ha-mem build`
compile jobs (short-lived processes that read a source file from a virtio-blk
ext4 disk, allocate, fill and verify anonymous memory, check and write an
object file), then an idle phase, then drop_caches and idle. The guest prints
a /proc/meminfo sample about once a second on the console; the host reads it
(that is also the virtio-mem policy's input).

Python 3 standard library and matplotlib (Agg) only.
"""

import csv
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)
import resize  # noqa: E402  (machines of the candidates, machine_info, sizes)
from hyperalloc import vm as guestvm  # noqa: E402
from hyperalloc.hostmem import GIB, MIB, PeriodicSampler, rss  # noqa: E402
from hyperalloc.qmp import QMP, QMPError  # noqa: E402

parse_size, qemu_size, machine_info = resize.parse_size, resize.qemu_size, resize.machine_info
pyplot, save_figure = resize.pyplot, resize.save_figure

BOOT_MEM = 1 * GIB          # virtio-mem: boot memory; the device holds the rest
MEM_STEP = 256 * MIB        # virtio-mem policy: step
MEM_HEADROOM = 512 * MIB    # virtio-mem policy: least MemFree the host keeps free
AUTO_INTERVAL_MS = 1000     # HyperAlloc: auto-mode-interval (reclaim 1-2 periods after a free)
CACHE_TRIM_PCT = 20         # HyperAlloc with cache trim: auto-mode-cache-trim
SRC_FILE = 8 * MIB          # size of one "source file" on the disk

SAMPLE_RE = re.compile(r"@@MEM ([0-9.]+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)")
PHASE_RE = re.compile(r"@@PHASE (\w+) ([0-9.]+)")
INSTALLS_RE = re.compile(r"@@INSTALLS (\w+) (\d+) (\d+)")
BUILD_RE = re.compile(r"ha-mem: build (ok|FAILED): (\d+) jobs.* (\d+) jobs killed, (\d+) failed, "
                      r"(\d+) bad pages")
PHASES = ("delay", "build", "idle", "drop", "tail")


class Workload:
    """Parameters of ha-build and of its disk."""

    def __init__(self, count, build, idle, drop, jobs=2, min_size="16M", max_size="512M",
                 sources=64, obj="4M", objects=128):
        self.count, self.build, self.idle, self.drop = count, build, idle, drop
        self.jobs, self.min_size, self.max_size = jobs, min_size, max_size
        self.sources, self.obj, self.objects = sources, obj, objects

    def command(self, seed, delay=0, tail=0):
        """The ha.run command line of one VM."""
        return ("ha-build --delay %d --build %d --idle %d --drop %d --tail %d -- --count %d "
                "--jobs %d --min %s --max %s --obj %s --objects %d --seed %d"
                % (delay, self.build, self.idle, self.drop, tail, self.count, self.jobs,
                   self.min_size, self.max_size, self.obj, self.objects, seed))

    def seconds(self):
        return self.build + self.idle + self.drop

    def describe(self):
        return ("build: %d jobs, at most %d s (ha-mem build: %d jobs at once, %s..%s "
                "anonymous each, %d sources of %d MiB, %d object slots of %s); idle %d s; "
                "drop_caches + idle %d s"
                % (self.count, self.build, self.jobs, self.min_size, self.max_size,
                   self.sources, SRC_FILE // MIB, self.objects, self.obj, self.idle, self.drop))


def make_disk(path, wl):
    """An ext4 image at path with src/ holding wl.sources files of random data."""
    tmp = tempfile.mkdtemp(prefix="ha-build-", dir=os.path.dirname(path))
    try:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        for i in range(wl.sources):
            with open(os.path.join(src, "unit-%04d.c" % i), "wb") as f:
                f.write(os.urandom(SRC_FILE))
        size = wl.sources * SRC_FILE + wl.objects * parse_size(wl.obj)
        size = size * 5 // 4 + 128 * MIB
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tmp, path, "%dM" % (size // MIB)],
                       check=True, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Candidate:
    """An automatic candidate: a machine (from resize.py) and what the host
    does while the VM runs (poll)."""

    name = label = None
    base = None  # the resize.py candidate whose machine this one uses
    trace_events = ()  # QEMU trace events to log (<log>.trace)

    @property
    def variant(self):
        return self.base.variant

    @property
    def kernel(self):
        return self.base.kernel

    def machine(self, cfg):
        return self.base.machine(cfg)

    def start(self, vm):
        """Called once QMP is connected."""

    def poll(self, vm, sample):
        """Called for each guest sample (dict, bytes); returns the device
        value to record (MiB) or None."""
        return None

    def policy(self):
        return ""


class FreePageReporting(Candidate):
    name, label = "fpr", "virtio-balloon FPR"
    base = resize.CANDIDATES["virtio-balloon"]

    def machine(self, cfg):
        return (qemu_size(cfg.mem),
                ["-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"], "")

    def policy(self):
        return ("virtio-balloon-pci,free-page-reporting=on: the guest reports free order-9 "
                "(2 MiB) blocks about 2 s after they appear; no host policy")


class VirtioMemPolicy(Candidate):
    """virtio-mem with a host policy on the guest's MemFree (sampled about
    once a second from the console):

      MemFree < HEADROOM             grow by ceil((HEADROOM - MemFree) / STEP) steps
      MemFree > HEADROOM + STEP      shrink by one STEP, if the last request is done
                                     (plugged size == requested size)

    between 0 and MEM - BOOT_MEM plugged, HEADROOM = max(512 MiB, MEM/4): the
    workload's largest job (MEM/4) must fit before the host can react, or
    the guest runs out of memory, and then hot-add fails as well (it needs
    memory for the new memmap). Page cache counts as used (like MemFree), so
    the policy never forces the guest to drop it."""

    name, label = "virtio-mem", "virtio-mem auto"
    base = resize.CANDIDATES["virtio-mem"]

    def machine(self, cfg):
        return self.base.machine(_Target(cfg, BOOT_MEM))

    def start(self, vm):
        vm.requested = vm.cfg.mem - BOOT_MEM

    def plugged(self, vm):
        return vm.qmp.execute("qom-get", {"path": "/machine/peripheral/vm0",
                                          "property": "size"})

    @staticmethod
    def headroom(mem):
        return max(MEM_HEADROOM, mem // 4)

    def poll(self, vm, sample):
        cap = vm.cfg.mem - BOOT_MEM
        free = sample["free"]
        plugged = self.plugged(vm)
        want = vm.requested
        room = self.headroom(vm.cfg.mem)
        if free < room:
            want = min(cap, want + math.ceil((room - free) / MEM_STEP) * MEM_STEP)
        elif free > room + MEM_STEP and plugged == vm.requested:
            want = max(0, want - MEM_STEP)
        if want != vm.requested:
            vm.qmp.execute("qom-set", {"path": "/machine/peripheral/vm0",
                                       "property": "requested-size", "value": want})
            vm.requested = want
        return (BOOT_MEM + plugged) // MIB

    def policy(self):
        return ("%d MiB boot memory + virtio-mem-pci (block 2 MiB) over the rest, plugged at "
                "boot; once per guest sample (about 1 s), with HEADROOM = max(%d MiB, MEM/4, "
                "the largest job): MemFree < HEADROOM -> requested-size += ceil(deficit / %d "
                "MiB) steps; MemFree > HEADROOM + %d MiB and the last request done -> "
                "requested-size -= %d MiB"
                % (BOOT_MEM // MIB, MEM_HEADROOM // MIB, MEM_STEP // MIB, MEM_STEP // MIB,
                   MEM_STEP // MIB))


class HyperAllocAuto(Candidate):
    name, label = "hyperalloc", "HyperAlloc auto"
    base = resize.CANDIDATES["hyperalloc"]
    trace_events = resize.INSTALL_EVENTS

    def device_options(self, cfg):
        return "shrink-pagecache=on"

    def machine(self, cfg):
        args = guestvm.llfree_device_args(auto_mode=True, interval_ms=cfg.interval,
                                          iothread="auto0", extra=self.device_options(cfg))
        return qemu_size(cfg.mem), args, ""

    def poll(self, vm, sample):
        info = vm.qmp.execute("query-llfree-balloon")
        vm.installs = info["installs"]
        return info["soft"] // MIB

    def policy(self):
        return ("virtio-llfree-balloon,auto-mode=on,auto-mode-interval=<interval>,"
                "auto-mode-iothread=auto0,shrink-pagecache=on: every interval the device "
                "soft-reclaims every installed 2 MiB frame that was free at the previous pass "
                "too; no target is set, so the "
                "page-cache shrink (which answers a hard-reclaim shortfall) never fires")


class HyperAllocCacheTrim(HyperAllocAuto):
    name, label = "hyperalloc-trim", "HyperAlloc auto + cache trim"

    def device_options(self, cfg):
        return "shrink-pagecache=on,auto-mode-cache-trim=%d" % cfg.cache_trim

    def policy(self):
        return ("as HyperAlloc auto, plus auto-mode-cache-trim=<cache trim>: every interval "
                "the device also asks the guest to drop that share of its page cache (the "
                "guest reclaims its least recently used cache first); the frames that frees "
                "go back with the next passes")


class _Target:
    """cfg with target = the virtio-mem boot memory, for resize.VirtioMem.machine."""

    def __init__(self, cfg, target):
        self.mem, self.target = cfg.mem, target


CANDIDATES = {c.name: c for c in (FreePageReporting(), VirtioMemPolicy(), HyperAllocAuto(),
                                  HyperAllocCacheTrim())}


class BuildVM:
    """One VM running ha-build on its own copy of the disk. Collects the
    guest's samples and phases (host monotonic time) and runs the candidate's
    poll for every sample. Use as a context manager."""

    def __init__(self, cand, cfg, tag, command, disk, smp):
        self.cand, self.cfg, self.tag = cand, cfg, tag
        self.tmp = tempfile.mkdtemp(prefix="ha-auto-", dir=cfg.tmpdir)
        self.sock = os.path.join(self.tmp, "qmp.sock")
        self.disk = os.path.join(self.tmp, "disk.img")
        shutil.copyfile(disk, self.disk)
        base = os.path.join(cfg.out, "%s-%s-%s" % (cfg.stamp, cand.name, tag))
        self.log_path = base + ".log"
        mem, args, append = cand.machine(cfg)
        args = list(args) + [
            "-drive", "file=%s,if=virtio,format=raw,cache=none,aio=threads" % self.disk,
            "-qmp", "unix:%s,server=on,wait=off" % self.sock,
            "-name", "bench-%s-%s" % (cand.name, tag)]
        self.trace = None
        if cand.trace_events:
            self.trace = resize.Trace(base + ".trace")
            args += resize.trace_args(cand.trace_events, self.tmp, self.trace)
        self.guest = guestvm.Guest(cand.kernel, mem=mem, smp=smp, run=command,
                                   append=append, qemu_args=args, log_path=self.log_path)
        self.qmp = None
        self.t0 = self.wall_offset = None
        self.samples = []   # (host t, {total, free, avail, buffers, cached, anon}, device MiB)
        self.phases = {}    # name -> host t
        self.guest_installs = {}  # llfree guest: phase -> (install requests, wait us) at its start
        self.requested = None
        self.installs = None  # HyperAlloc: install requests answered (last poll)
        self.build_result = None
        self.error = None
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self.t0 = time.monotonic()
        self.wall_offset = time.time() - self.t0  # trace (wall clock) - phases (monotonic)
        self.guest.__enter__()
        try:
            self.qmp = QMP.connect(self.sock, timeout=60, retry_for=30)
            self.cand.start(self)
        except BaseException:
            self.guest.__exit__(None, None, None)
            raise
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        try:
            if self.qmp:
                self.qmp.close()
        finally:
            self.guest.__exit__(*exc)
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def pid(self):
        return self.guest.pid

    def _watch(self):
        """Reads the console every 0.2 s; polls the candidate per sample."""
        while not self._stop.wait(0.2):
            self._read_console(poll=True)

    def _read_console(self, poll):
        """Parses the console lines not seen yet; with poll, runs the
        candidate's poll for the newest sample."""
        lines = self.guest.result.lines
        while self._seen < len(lines):
            t, line = lines[self._seen]
            self._seen += 1
            self._parse(t + self.t0, line, poll and self._seen == len(lines))

    def _parse(self, t, line, poll):
        m = PHASE_RE.search(line)
        if m:
            self.phases.setdefault(m.group(1), t)
            return
        m = INSTALLS_RE.search(line)
        if m:
            self.guest_installs[m.group(1)] = (int(m.group(2)), int(m.group(3)))
            return
        m = SAMPLE_RE.search(line)
        if not m:
            return
        kib = [int(x) * 1024 for x in m.groups()[1:]]
        s = dict(zip(("total", "free", "avail", "buffers", "cached", "anon"), kib))
        device = None
        if poll and self.error is None:
            try:
                device = self.cand.poll(self, s)
            except (QMPError, OSError) as e:
                self.error = "%s: host policy: %s" % (self.cand.name, e)
        self.samples.append((t, s, device))

    def wait(self, timeout):
        """Waits for the guest to power off; returns (ok, message)."""
        res = self.guest.wait_exit(timeout)
        self._stop.set()
        self._thread.join()
        self._read_console(poll=False)  # what arrived before the power-off
        text = res.text
        m = None
        for m in BUILD_RE.finditer(text):
            pass
        self.build_result = m.groups() if m else None
        bad = res.bad_lines(allow_oom_kill=True)
        if res.timed_out:
            return False, "timed out after %d s (see %s)" % (timeout, self.log_path)
        if res.exit_code != 0:
            return False, "ha-build exit %s (see %s)" % (res.exit_code, self.log_path)
        if bad:
            return False, "console: %s" % "; ".join(bad[:3])
        if self.error:
            return False, self.error
        return True, ""

    def guest_install_wait(self, first, last):
        """Seconds the guest waited for installs from the start of phase
        first to the start of phase last, by its counters (/proc/llfree), or
        None (baseline kernel)."""
        a, b = self.guest_installs.get(first), self.guest_installs.get(last)
        if not a or not b:
            return None
        return (b[1] - a[1]) / 1e6

    def install_times(self, t0, t1):
        """resize.install_times of the install requests answered in [t0, t1]
        (phase times), or None without a trace."""
        if not self.trace:
            return None
        return resize.install_times(self.trace, t0 + self.wall_offset, t1 + self.wall_offset)

    def guest_at(self, t):
        """The last guest sample at or before host time t, or None."""
        last = None
        for st, s, d in self.samples:
            if st > t:
                break
            last = (s, d)
        return last

    def phase_at(self, t):
        """Name of the workload phase at host time t ("boot" before start)."""
        name = "boot"
        for p, pt in sorted(self.phases.items(), key=lambda x: x[1]):
            if pt <= t:
                name = p
        return name


RAM_MAPPING_MIN = 256 * MIB  # smaller anonymous mappings are QEMU's own heap


def ram_rss(pid):
    """Resident bytes of the guest's RAM in a QEMU process: the private
    anonymous read-write mappings of at least RAM_MAPPING_MIN (boot RAM, a
    virtio-mem memory backend). Not counted: TCG's code buffer (rwx), QEMU's
    heap, libraries, stacks: what QEMU needs besides guest memory (under TCG
    its code buffer alone is tens to hundreds of MiB)."""
    total, take = 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                parts = line.split()
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                take = parts[1] == "rw-p" and len(parts) == 5 and hi - lo >= RAM_MAPPING_MIN
            elif take and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


class HostSampler(PeriodicSampler):
    """Samples the RSS of several QEMU processes together at 1 Hz; a process
    that is gone counts 0. samples: (host monotonic t, [bytes per pid]);
    ram: the same for ram_rss() (guest RAM only), aligned with samples."""

    def __init__(self, pids, period=1.0):
        super().__init__(period)
        self.pids = list(pids)
        self.samples = []
        self.ram = []

    def sample(self):
        values, ram = [], []
        for pid in self.pids:
            try:
                values.append(rss(pid))
                ram.append(ram_rss(pid))
            except (OSError, RuntimeError, ValueError):
                values.append(0)
                ram.append(0)
        self.ram.append(ram)
        self.samples.append((time.monotonic(), values))
        return True


def integral(points, t0, t1):
    """Integral of a step-free piecewise-linear curve [(t, v)] over [t0, t1]
    (trapezoids, clipped to the window), in v*seconds."""
    total = 0.0
    for (a, va), (b, vb) in zip(points, points[1:]):
        lo, hi = max(a, t0), min(b, t1)
        if hi <= lo:
            continue
        f = lambda t: va + (vb - va) * (t - a) / (b - a)  # noqa: E731
        total += (hi - lo) * (f(lo) + f(hi)) / 2
    return total


def footprint_gib_min(points, t0, t1):
    """GiB*min of a byte curve over [t0, t1]."""
    return integral(points, t0, t1) / GIB / 60


def vs_fpr(row, ref, key):
    """row[key] against FPR's row ref, as "+1.2 %"; "-" without both."""
    if not ref or not row.get(key) or not ref.get(key):
        return "-"
    return "%+.1f %%" % ((row[key] / ref[key] - 1) * 100)


def fmt(x, digits=2):
    return "-" if x is None else "%.*f" % (digits, x)


TIMELINE_FIELDS = ["candidate", "vm", "t", "rss_mib", "ram_rss_mib", "guest_total_mib",
                   "guest_free_mib",
                   "guest_used_mib", "guest_cache_mib", "guest_anon_mib", "device_mib", "phase"]


def timeline_rows(vms, sampler, t_zero):
    """Rows (TIMELINE_FIELDS) per host sample and VM: t in s since t_zero,
    QEMU RSS, its guest-RAM part and the guest's latest sample in MiB, the
    candidate's device value (virtio-mem: VM size; HyperAlloc: soft-reclaimed
    MiB), the phase."""
    for (t, values), ram in zip(sampler.samples, sampler.ram):
        for i, vm in enumerate(vms):
            g = vm.guest_at(t)
            row = [vm.cand.name, vm.tag, "%.2f" % (t - t_zero), values[i] // MIB,
                   ram[i] // MIB]
            if g:
                s, d = g
                row += [s["total"] // MIB, s["free"] // MIB, used(s) // MIB,
                        cache(s) // MIB, s["anon"] // MIB, "" if d is None else d]
            else:
                row += [""] * 6
            row.append(vm.phase_at(t))
            yield row


def parse_options(p, argv, out, mem, smp, count, idle):
    """Adds the options bench/autoreclaim.py and bench/multivm.py share to
    the ArgumentParser p (which has --quick), parses argv, checks the values
    and completes the result: cfg.wl (the Workload), cfg.candidates (a list
    of names), cfg.stamp and cfg.tmpdir. mem, count, idle: (full, quick)
    defaults of the VM size, the jobs per VM and the idle (and drop)
    seconds."""
    p.add_argument("--mem", type=parse_size,
                   help="size of each VM (default %s, quick %s)"
                   % (qemu_size(mem[0]), qemu_size(mem[1])))
    p.add_argument("--smp", type=int, default=smp, help="vCPUs per VM (default %(default)s)")
    p.add_argument("--interval", type=int, default=AUTO_INTERVAL_MS,
                   help="HyperAlloc auto-mode-interval in ms (default %(default)s)")
    p.add_argument("--cache-trim", type=int, default=CACHE_TRIM_PCT,
                   help="auto-mode-cache-trim of hyperalloc-trim in %% (default %(default)s)")
    p.add_argument("--count", type=int,
                   help="compile jobs per VM (default %d, quick %d)" % count)
    p.add_argument("--build", type=int, help="longest build in seconds (default 1800, quick 400)")
    p.add_argument("--idle", type=int, help="idle phase seconds (default %d, quick %d)" % idle)
    p.add_argument("--drop", type=int, help="drop phase seconds (default %d, quick %d)" % idle)
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="comma-separated subset of %s" % ",".join(CANDIDATES))
    p.add_argument("--out", default=out, help="output directory (default %(default)s)")
    cfg = p.parse_args(argv)
    full_or_quick = 1 if cfg.quick else 0
    cfg.mem = cfg.mem or mem[full_or_quick]
    if cfg.mem < 2 * GIB or cfg.mem % (2 * MIB):
        p.error("--mem must be at least 2G and a multiple of 2 MiB")
    if not 0 <= cfg.cache_trim <= 100:
        p.error("--cache-trim must be a percentage (0 to 100)")
    cfg.wl = Workload(count=cfg.count or count[full_or_quick],
                      build=cfg.build or (400 if cfg.quick else 1800),
                      idle=cfg.idle or idle[full_or_quick],
                      drop=cfg.drop or idle[full_or_quick], jobs=2, min_size="16M",
                      max_size="%dM" % (cfg.mem // 4 // MIB),
                      sources=cfg.mem // 8 // SRC_FILE, obj="4M",
                      objects=cfg.mem // 8 // (4 * MIB))
    cfg.candidates = resize.candidate_names(p, cfg.candidates, CANDIDATES)
    cfg.stamp = time.strftime("%Y%m%d-%H%M%S")
    cfg.tmpdir = os.path.join(cfg.out, "tmp-%s" % cfg.stamp)
    return cfg


def missing_builds(cfg):
    """True (after saying why) when a kernel, QEMU or mkfs.ext4 is missing."""
    if resize.missing_builds(CANDIDATES[c] for c in cfg.candidates):
        return True
    if not shutil.which("mkfs.ext4"):
        print("SKIP: mkfs.ext4 missing (scripts/install-deps.sh vm)")
        return True
    return False


def header_lines(cfg, script, argv, setup):
    """The report header: the machine, the lines of setup, the HyperAlloc
    parameters, the command line and the candidates' host policies."""
    return machine_info() + setup + ["HyperAlloc auto-mode-interval: %d ms; cache trim: %d %%"
            % (cfg.interval, cfg.cache_trim),
            "command: %s %s" % (script, " ".join(sys.argv[1:] if argv is None else argv))] + [
        "policy %s: %s" % (CANDIDATES[c].label, CANDIDATES[c].policy())
        for c in cfg.candidates]


class Run:
    """One candidate's finished run: its VMs, the host sampler, the measured
    window [t0, t1] in host time (t0 is also the timeline's zero) and its
    summary row."""

    def __init__(self, cand, vms, sampler, t0, t1):
        self.cand, self.vms, self.sampler, self.t0, self.t1 = cand, vms, sampler, t0, t1
        self.row = None


def run_candidates(cfg, header, run):
    """Prints the header, then calls run(cand, disk) -> Run for the
    candidates in turn, all on copies of one disk image (made here and
    removed with cfg.tmpdir at the end). A candidate that fails is reported
    and skipped. Returns (runs, failures)."""
    os.makedirs(cfg.tmpdir, exist_ok=True)
    for line in header:
        print(line, flush=True)
    runs, failed = [], []
    try:
        disk = os.path.join(cfg.tmpdir, "disk.img")
        make_disk(disk, cfg.wl)
        for name in cfg.candidates:
            try:
                runs.append(run(CANDIDATES[name], disk))
            except (RuntimeError, OSError, TimeoutError, QMPError) as e:
                print("  FAILED: %s" % e, flush=True)
                failed.append(str(e))
    finally:
        shutil.rmtree(cfg.tmpdir, ignore_errors=True)
    return runs, failed


def save_results(cfg, name, header, runs, failed, tables, plot):
    """Writes <out>/<name>-<stamp>.csv (every host sample per VM),
    -summary.csv (the runs' rows), .txt (header, tables(rows), failures)
    and .png (plot(path, runs, cfg)); prints the tables and where the files
    are. Returns the exit status."""
    base = os.path.join(cfg.out, "%s-%s" % (name, cfg.stamp))
    rows = [r.row for r in runs]
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TIMELINE_FIELDS)
        for r in runs:
            w.writerows(timeline_rows(r.vms, r.sampler, r.t0))
    if rows:
        with open(base + "-summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    report = tables(rows) if rows else "no results"
    png = plot(base + ".png", runs, cfg) if runs else None
    resize.write_report(base + ".txt", "\n".join(header) + "\n\n" + report + "\n", failed)
    print("\n" + report)
    print("\ntimeline: %s.csv\nsummary:  %s-summary.csv\nreport:   %s.txt%s"
          % (base, base, base, "\nplot:     " + png if png else ""))
    return 1 if failed else 0


def used(s):
    """Guest memory in use without page cache (like free(1)'s 'used')."""
    return s["total"] - s["free"] - s["buffers"] - s["cached"]


def cache(s):
    """Guest page cache: Buffers + Cached."""
    return s["buffers"] + s["cached"]


def guest_curves(vm, t_zero):
    """(minutes, used GiB, cache GiB, total GiB) of a VM's guest samples."""
    ts = [(t - t_zero) / 60 for t, _, _ in vm.samples]
    return (ts, [used(s) / GIB for _, s, _ in vm.samples],
            [cache(s) / GIB for _, s, _ in vm.samples],
            [s["total"] / GIB for _, s, _ in vm.samples])


def shade_phases(ax, vm, t_zero, label=True):
    """Vertical lines at the phase starts of vm, with their names."""
    for p in PHASES + ("end",):
        if p in vm.phases:
            x = (vm.phases[p] - t_zero) / 60
            ax.axvline(x, color="0.6", lw=0.8, ls=":")
            if label and p != "end":
                ax.text(x, 1.0, " " + p, transform=ax.get_xaxis_transform(), va="top",
                        fontsize=7, color="0.4")
