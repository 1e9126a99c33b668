"""Host memory of a QEMU process: RSS now, or sampled in the background."""

import threading
import time

MIB = 1 << 20
GIB = 1 << 30


def rss(pid):
    """Resident set size of a process in bytes (VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


class PeriodicSampler:
    """Calls sample() every period seconds (at a fixed rate) in a thread
    while used as a context manager, until sample() returns False. start is
    the host monotonic time the sampling began."""

    def __init__(self, period=1.0):
        self.period = period
        self.start = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        due = time.monotonic()
        while self.sample():
            due += self.period
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return

    def sample(self):
        """Takes one sample; False ends the sampling."""
        raise NotImplementedError


class RssSampler(PeriodicSampler):
    """Samples rss(pid) every period seconds. samples holds (seconds since
    start, bytes); a process that is gone ends the sampling."""

    def __init__(self, pid, period=1.0):
        super().__init__(period)
        self.pid = pid
        self.samples = []

    def sample(self):
        try:
            value = rss(self.pid)
        except (OSError, RuntimeError):
            return False
        self.samples.append((time.monotonic() - self.start, value))
        return True

    def peak(self):
        """Largest sample in bytes (0 without samples)."""
        return max((v for _, v in self.samples), default=0)

    def integral(self):
        """Byte-seconds under the sampled curve (trapezoids)."""
        s = self.samples
        return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(s, s[1:]))
