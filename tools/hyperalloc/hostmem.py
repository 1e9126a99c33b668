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


class RssSampler:
    """Samples rss(pid) every period seconds in a thread; use as a context
    manager. samples holds (seconds since start, bytes); a process that is
    gone ends the sampling."""

    def __init__(self, pid, period=1.0):
        self.pid, self.period = pid, period
        self.samples = []
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
        while True:
            try:
                value = rss(self.pid)
            except (OSError, RuntimeError):
                return
            self.samples.append((time.monotonic() - self.start, value))
            if self._stop.wait(self.period):
                return

    def peak(self):
        """Largest sample in bytes (0 without samples)."""
        return max((v for _, v in self.samples), default=0)

    def integral(self):
        """Byte-seconds under the sampled curve (trapezoids)."""
        s = self.samples
        return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(s, s[1:]))
