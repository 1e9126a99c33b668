#!/usr/bin/python3
"""HyperAlloc benchmarks (`make bench`): runs the benchmark parts in turn.

Each part is a stand-alone script in bench/ that takes --quick, writes its
raw data and report under build/bench/<part>/ and exits 0 (done), 77 (skip:
something it needs is not built) or another status (failed). Adding a part
means adding one entry to PARTS. The default selection is what `make bench`
runs; other parts run when named with --part.

Benchmarks never gate CI: a failed part is reported, the others still run,
and the exit status says whether any part failed.

Usage: bench/run.py [--quick] [--part NAME]... [--list] [-- ARGS for the parts]
"""

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"

# name -> (script in bench/, in the default selection, what it measures)
PARTS = {
    "resize": ("resize.py", True,
               "resize micro-benchmark: virtio-balloon, virtio-mem, HyperAlloc "
               "against the host's discard and populate limits (issue 6, item 1)"),
    "interference": ("interference.py", True,
                     "guest interference: memory bandwidth during a shrink and a grow, "
                     "against runs without resizing (issue 6, item 3)"),
    "auto": ("autoreclaim.py", True,
             "automatic reclamation: host memory during a build-like workload, free page "
             "reporting, virtio-mem with a host policy, HyperAlloc auto (issue 6, item 2)"),
    "multivm": ("multivm.py", True,
                "three staggered VMs at once: peak and integral of total host memory "
                "(issue 6, item 5)"),
    "kalloc": ("kalloc.py", False,
               "kernel page allocator: llfree against buddy (issue 6, item 4)"),
}
SKIP = 77


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (a few minutes per part)")
    p.add_argument("--part", action="append", choices=sorted(PARTS),
                   help="run only this part (repeatable); default: %s"
                   % ", ".join(n for n, v in PARTS.items() if v[1]))
    p.add_argument("--list", action="store_true", help="list the parts and exit")
    p.add_argument("extra", nargs="*", help="arguments passed to every part (after --)")
    args = p.parse_args(argv)
    if args.list:
        for name, (script, default, what) in PARTS.items():
            print("%-8s %-11s %s%s" % (name, script, what, "" if default else " [opt-in]"))
        return 0
    names = args.part or [n for n, v in PARTS.items() if v[1]]
    results = []
    for name in names:
        script = os.path.join(REPO, "bench", PARTS[name][0])
        argv = [PYTHON, script] + (["--quick"] if args.quick else []) + args.extra
        print("=== bench %s: %s" % (name, " ".join(argv[1:])), flush=True)
        t0 = time.monotonic()
        if not os.path.exists(script):
            status = SKIP
            print("%s is missing" % script)
        else:
            status = subprocess.call(argv)
        results.append((name, status, time.monotonic() - t0))
    print("\n=== bench summary")
    for name, status, secs in results:
        verdict = {0: "done", SKIP: "skipped"}.get(status, "FAILED (exit %d)" % status)
        print("%-8s %-20s %6.0f s" % (name, verdict, secs))
    return 1 if any(s not in (0, SKIP) for _, s, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
