"""Boot a HyperAlloc test guest in QEMU and talk to it over the serial console.

The guest is build/guest/<kernel> with build/guest/initramfs.cpio.gz, whose
/init (guest/init) prints READY once the system is up, runs the kernel
command line's ha.run="..." with /bin/sh -c, prints "HYPERALLOC-EXIT <status>"
and powers off. Without ha.run it starts a shell on the console.

QEMU: $QEMU if set, else build/qemu/qemu-system-x86_64 if built, else
qemu-system-x86_64 from PATH. Accelerator: $QEMU_ACCEL if set, else KVM if a
probe boot of the kernel under KVM reaches READY (the answer is cached per
kernel and QEMU, see choose_accel), else TCG with one thread per vCPU.

Python 3 standard library only.
"""

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUEST_DIR = os.path.join(REPO, "build", "guest")
INITRAMFS = os.path.join(GUEST_DIR, "initramfs.cpio.gz")

READY = "HYPERALLOC-GUEST-READY"
EXIT_RE = re.compile(r"HYPERALLOC-EXIT (\d+)")

# Kernel messages that mean the guest is broken, whatever the test says.
BAD_PATTERNS = ("WARNING:", "BUG:", "Oops", "Kernel panic", "UBSAN:", "Call Trace:")

# An OOM-killer report: from "<comm> invoked oom-killer:" to the line naming
# the victim. Its stack dump prints "Call Trace:" through out_of_memory().
OOM_START = "invoked oom-killer:"
OOM_VICTIM = ("Out of memory: Killed process", "Memory cgroup out of memory: Killed process")
OOM_FRAME = "out_of_memory+"
# An allocation-failure report (warn_alloc(): "page allocation failure",
# "vmemmap alloc failure"): the kernel tells that an allocation it can do
# without failed, and dumps the stack through warn_alloc().
ALLOC_FAILURE_FRAME = "warn_alloc+"


def bad_console_lines(lines, allow_oom_kill=False):
    """Returns the lines (strings) that match BAD_PATTERNS.

    allow_oom_kill allows the reports of memory pressure: a "Call Trace:"
    line inside an OOM-killer report whose trace (up to "</TASK>") goes
    through out_of_memory(), or anywhere with a trace through warn_alloc()
    (an allocation failure the kernel reports and survives). Any other bad
    pattern inside such a report still counts, and so does a report whose
    trace shows neither path.
    """
    bad, in_oom = [], False
    for i, line in enumerate(lines):
        if OOM_START in line:
            in_oom = True
        elif any(v in line for v in OOM_VICTIM):
            in_oom = False
        if not any(p in line for p in BAD_PATTERNS):
            continue
        if allow_oom_kill and "Call Trace:" in line and \
                not any(p in line for p in BAD_PATTERNS if p != "Call Trace:"):
            trace = []
            for later in lines[i + 1:i + 80]:
                if "</TASK>" in later:
                    break
                trace.append(later)
            if any(ALLOC_FAILURE_FRAME in t or (in_oom and OOM_FRAME in t) for t in trace):
                continue
        bad.append(line)
    return bad


def oom_victims(lines):
    """Returns the lines that name an OOM-killer victim ("Killed process ...")."""
    return [line for line in lines if any(v in line for v in OOM_VICTIM)]


# Kernel image and `uname -r` suffix (CONFIG_LOCALVERSION) of each variant.
VARIANTS = {
    "baseline": ("bzImage-baseline", "-ha-baseline"),
    "llfree": ("bzImage", "-ha-llfree"),
    "debug": ("bzImage-debug", "-ha-debug"),
}


def find_qemu():
    """Returns the QEMU binary to use, or raises FileNotFoundError."""
    env = os.environ.get("QEMU")
    if env:
        return env
    ours = os.path.join(REPO, "build", "qemu", "qemu-system-x86_64")
    if os.access(ours, os.X_OK):
        return ours
    found = shutil.which("qemu-system-x86_64")
    if found:
        return found
    raise FileNotFoundError("no QEMU: build it (scripts/build-qemu.sh) or set $QEMU")


def variant_or_skip(variant):
    """Returns (kernel, uname suffix, qemu) of a variant, or None after
    printing why the test must be skipped (a missing build)."""
    image, suffix = VARIANTS[variant]
    kernel = os.path.join(GUEST_DIR, image)
    for path, how in ((kernel, "scripts/build-guest.sh %s" % variant),
                      (INITRAMFS, "scripts/build-initramfs.sh")):
        if not os.path.exists(path):
            print("SKIP: %s missing (%s)" % (path, how))
            return None
    try:
        return kernel, suffix, find_qemu()
    except FileNotFoundError as e:
        print("SKIP:", e)
        return None


TCG = "tcg,thread=multi"
# run= value that turns the console into a command server for Guest.shell()
# (guest/tools/ha-shell.sh)
SHELL_SERVER = "ha-shell"
SHELL_DONE = re.compile(r"@@RC=(\d+)$")
ACCEL_CACHE = os.path.join(os.environ.get("HYPERALLOC_CACHE", "/var/cache/hyperalloc"),
                           "accel")


def _probe_kvm(qemu, kernel, timeout=30):
    """Boots kernel under KVM; True if the guest reaches READY in time."""
    argv = [qemu, "-machine", "q35", "-accel", "kvm", "-m", "512M", "-smp", "1",
            "-kernel", kernel, "-initrd", INITRAMFS,
            "-append", 'console=ttyS0 panic=-1 ha.run="true"',
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio", "-no-reboot"]
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        return False
    return READY.encode() in out


def choose_accel(qemu, kernel):
    """Returns the -accel argument: $QEMU_ACCEL, else "kvm" where a Linux
    guest boots under it, else TCG.

    On some hosts /dev/kvm exists but Linux guests hang under it, so the
    device node alone proves nothing: the kernel is booted once under KVM and
    the verdict is cached under ACCEL_CACHE, keyed by the kernel and QEMU
    files, so the probe runs once per build.
    """
    env = os.environ.get("QEMU_ACCEL")
    if env:
        return env
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return TCG
    key = hashlib.sha256()
    for path in (qemu, kernel):
        st = os.stat(path)
        key.update(("%s %d %d\n" % (os.path.realpath(path), st.st_size,
                                     st.st_mtime_ns)).encode())
    cached = os.path.join(ACCEL_CACHE, key.hexdigest()[:16])
    try:
        with open(cached) as f:
            return f.read().strip()
    except OSError:
        pass
    accel = "kvm" if _probe_kvm(qemu, kernel) else TCG
    try:
        os.makedirs(ACCEL_CACHE, exist_ok=True)
        with open(cached, "w") as f:
            f.write(accel + "\n")
    except OSError:
        pass
    return accel


def llfree_device_args(qmp_sock=None, auto_mode=False, interval_ms=None, iothread=None,
                       extra=""):
    """QEMU arguments for a virtio-llfree-balloon device and a QMP socket.

    iothread names an iothread object to create and run auto mode in.
    """
    opts = "virtio-llfree-balloon,auto-mode=%s" % ("on" if auto_mode else "off")
    args = []
    if interval_ms is not None:
        opts += ",auto-mode-interval=%d" % interval_ms
    if iothread:
        args += ["-object", "iothread,id=%s" % iothread]
        opts += ",auto-mode-iothread=%s" % iothread
    if extra:
        opts += "," + extra
    args += ["-device", opts]
    if qmp_sock:
        args += ["-qmp", "unix:%s,server=on,wait=off" % qmp_sock]
    return args


def mem_free(answer):
    """MemFree in MiB from an `ha-mem hold` status answer, or None."""
    m = re.search(r"MemFree (\d+) MiB", answer)
    return int(m.group(1)) if m else None


class Result:
    """What a guest run produced."""

    def __init__(self):
        self.lines = []          # (seconds since QEMU start, serial line)
        self.ready_after = None  # seconds from QEMU start to the READY line
        self.ready_uptime = None  # guest uptime printed on the READY line
        self.exit_code = None    # from HYPERALLOC-EXIT, None if not printed
        self.qemu_status = None  # QEMU's exit status, None if killed on timeout
        self.timed_out = False

    @property
    def text(self):
        return "\n".join(line for _, line in self.lines)

    def bad_lines(self, allow_oom_kill=False):
        """Returns the serial lines that match BAD_PATTERNS (see bad_console_lines)."""
        return bad_console_lines([line for _, line in self.lines], allow_oom_kill)

    def output_after_ready(self):
        """Returns the lines printed after the READY line (the test's output)."""
        out, seen = [], False
        for _, line in self.lines:
            if seen and not EXIT_RE.search(line):
                out.append(line)
            seen = seen or READY in line
        return out


class Guest:
    """One QEMU process running the test guest; use as a context manager.

    reboot=True lets a reset reboot the guest instead of ending QEMU.
    """

    def __init__(self, kernel, mem="512M", smp=1, run=None, append="",
                 initrd=INITRAMFS, qemu_args=(), log_path=None, reboot=False):
        self.kernel = kernel
        cmdline = "console=ttyS0 panic=-1 oops=panic"
        if run is not None:
            if '"' in run:
                raise ValueError("ha.run cannot contain double quotes")
            cmdline += ' ha.run="%s"' % run
        if append:
            cmdline += " " + append
        qemu = find_qemu()
        self.accel = choose_accel(qemu, kernel)
        smp = str(smp)
        if smp == "1" and self.accel.startswith("tcg") and \
                any("virtio-llfree-balloon" in str(a) for a in qemu_args):
            # TCG emulates guest atomics with host atomics only when more
            # than one vCPU may run; the device needs them (docs/device.md)
            smp = "1,maxcpus=2"
        self.argv = [
            qemu, "-machine", "q35", "-accel", self.accel,
            "-m", str(mem), "-smp", smp,
            "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "stdio",
        ] + ([] if reboot else ["-no-reboot"]) + list(qemu_args)
        self.log_path = log_path
        self.result = Result()
        self._proc = None
        self._start = None
        self._cond = threading.Condition()
        self._reader = None
        self._log = None

    def __enter__(self):
        if self.log_path:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            self._log = open(self.log_path, "w", encoding="utf-8")
            self._log.write("# " + " ".join(self.argv) + "\n")
        self._start = time.monotonic()
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc):
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join()
        if self._log:
            self._log.close()

    def _read(self):
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            now = time.monotonic() - self._start
            with self._cond:
                self.result.lines.append((now, line))
                if READY in line and self.result.ready_after is None:
                    self.result.ready_after = now
                    m = re.search(r"uptime=([0-9.]+)", line)
                    self.result.ready_uptime = float(m.group(1)) if m else None
                m = EXIT_RE.search(line)
                if m:
                    self.result.exit_code = int(m.group(1))
                self._cond.notify_all()
            if self._log:
                self._log.write("[%8.3f] %s\n" % (now, line))
                self._log.flush()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text, timeout):
        """Waits until a serial line contains text; returns False on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(text in line for _, line in self.result.lines):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return False
                self._cond.wait(min(left, 1.0))

    @property
    def pid(self):
        """Process id of QEMU (for host RSS sampling)."""
        return self._proc.pid

    def send(self, text):
        """Types text on the serial console."""
        self._proc.stdin.write(text.encode())
        self._proc.stdin.flush()

    def _request(self, line, is_answer, timeout):
        """Types one line and waits for a later console line for which
        is_answer(line) is true; returns (that line's index among the new
        lines, the new lines), index None on timeout or exit."""
        with self._cond:
            before = len(self.result.lines)
        self.send(line + "\n")
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                lines = [text for _, text in self.result.lines[before:]]
                for i, text in enumerate(lines):
                    if is_answer(text):
                        return i, lines
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return None, lines
                self._cond.wait(min(left, 1.0))

    def hold_command(self, cmd, timeout=300):
        """Sends one line to a running `ha-mem hold` and returns its answer
        line ("ok ..." or "error ..."); "error: no answer" on timeout."""
        i, lines = self._request(cmd, lambda t: t.startswith(("ok ", "error ")), timeout)
        return lines[i] if i is not None else "error: no answer to '%s'" % cmd

    def shell(self, cmd, timeout=120):
        """Runs one command line in a guest booted with run=SHELL_SERVER and
        returns (exit status, output lines); status None on timeout or exit.
        The command must fit on one line and must not read the console."""
        if "\n" in cmd:
            raise ValueError("Guest.shell takes one line")
        # input typed before ha-shell turned echo off would be echoed
        if not self.wait_for("@@SHELL-READY", timeout):
            return None, []
        i, lines = self._request(cmd, SHELL_DONE.match, timeout)
        if i is None:
            return None, lines
        return int(SHELL_DONE.match(lines[i]).group(1)), lines[:i]

    def wait_exit(self, timeout):
        """Waits for QEMU to exit (the guest powers off); kills it on timeout."""
        try:
            self.result.qemu_status = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.result.timed_out = True
            self._proc.kill()
            self._proc.wait()
        self._reader.join()
        return self.result


def run(kernel, timeout=300, **kw):
    """Boots the guest, runs kw['run'] to completion and returns the Result."""
    with Guest(kernel, **kw) as g:
        return g.wait_exit(timeout)
