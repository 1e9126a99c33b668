#!/usr/bin/python3
"""End-to-end: Linux mm paths that the llfree guest kernel must get right.

Boots the llfree kernel and, as the control, the baseline (buddy) kernel,
each with 2 GiB, 2 vCPUs and -cpu max (1 GiB pages), the llfree one with
virtio-llfree-balloon. In each it checks:

  1. THP split, then exit: `ha-thp split 256` gets THPs, unmaps one 4 KiB
     page of every 2 MiB and splits them all through debugfs, verifies the
     rest and exits;
  2. the kernel paths that free a block in pieces (mm/alloc_paths.c):
     split_page() of order 9 and 10, alloc_pages_exact(), __free_pages()
     with an extra reference, huge vmalloc;
  3. 2 MiB hugetlb pages reserved at run time and released again;
  and after each of them that the memory came back: free pages (MemFree
  after dropping caches, plus the buddy allocator's per-CPU lists) within
  LEDGER_MIB of before; in the llfree kernel also llfree's own free count
  (/proc/llfree) within the same. Then:
  4. a runtime 1 GiB hugetlb page: the llfree kernel answers at once (under
     5 s) and allocates none, with a warning that says why;
  5. offlining a memory block: the llfree kernel refuses at once (under 5 s)
     with EOPNOTSUPP, the block stays online;
  6. the console is clean: no WARNING/BUG/Oops, no llfree "failed".

"""

import os
import re
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (REPO, Checks, console_check, QMPError, run_test, summary, vm)  # noqa: E402

# What a path may leave behind: per-CPU counter drift and lazily freed
# kernel structures (page tables, slab), far below one split THP's loss
LEDGER_MIB = 8
HUGE_1G = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
HUGE_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
SETTLE = "sync; echo 3 > /proc/sys/vm/drop_caches; sleep 1"


def free_mib(g, llfree):
    """(free pages, llfree's free frames) in MiB after dropping caches; the
    second is None in the baseline kernel. Free pages are MemFree plus the
    pages on the buddy allocator's per-CPU lists (/proc/zoneinfo), which
    MemFree does not count; llfree has none."""
    status, out = g.shell(SETTLE + "; grep MemFree /proc/meminfo; awk '$1 == \"count:\" "
                          "{ c += $2 } END { print \"pcp\", c + 0 }' /proc/zoneinfo; "
                          "cat /proc/llfree 2>/dev/null | "
                          "awk 'NR > 1 { f += $5 } END { print \"llfree\", f }'")
    text = " ".join(out)
    m = re.search(r"MemFree:\s+(\d+) kB", text)
    pcp = re.search(r"pcp (\d+)", text)
    ll = re.search(r"llfree (\d+)", text)
    return ((int(m.group(1)) // 4 + int(pcp.group(1))) // 256 if status == 0 and m and pcp
            else None,
            int(ll.group(1)) // 256 if llfree and ll else None)


def ledger(checks, g, llfree, name, cmd, timeout=300):
    """Runs cmd in the guest and checks that it passed and gave back its
    memory."""
    before = free_mib(g, llfree)
    status, out = g.shell(cmd, timeout=timeout)
    after = free_mib(g, llfree)
    checks.check(status == 0, name, " | ".join(out[-2:]))
    lost = [b - a for a, b in zip(after, before) if a is not None and b is not None]
    checks.check(len(lost) == (2 if llfree else 1) and max(lost) <= LEDGER_MIB,
                 name + ": memory back",
                 "free %s -> %s MiB, llfree free %s -> %s MiB" %
                 (before[0], after[0], before[1], after[1]))


def timed(g, cmd, timeout=60):
    """(status, output, seconds) of a guest command."""
    start = time.monotonic()
    status, out = g.shell(cmd, timeout=timeout)
    return status, out, time.monotonic() - start


def one_kernel(checks, variant):
    found = vm.variant_or_skip(variant)
    if not found:
        return None
    llfree = variant == "llfree"
    tag = "[%s] " % variant
    sock = os.path.join(tempfile.mkdtemp(prefix="ha-e2e-"), "qmp.sock")
    args = ["-cpu", "max"] + (vm.llfree_device_args(sock) if llfree else [])
    log = os.path.join(REPO, "build", "tests", "e2e", "mm-paths-%s.log" % variant)
    with vm.Guest(found[0], mem="2G", smp=2, run=vm.SHELL_SERVER, qemu_args=args,
                  log_path=log) as g:
        if llfree:
            checks.check(g.wait_for("zones registered", 120), tag + "driver registered its zones")
        ledger(checks, g, llfree, tag + "THP split then exit", "ha-thp split 256")
        for path in ("split", "exact", "halves", "vmalloc"):
            ledger(checks, g, llfree, tag + "alloc_paths " + path,
                   "echo '%s count=32' > /sys/kernel/debug/alloc_paths/run" % path)
        ledger(checks, g, llfree, tag + "2 MiB hugetlb pages",
               "echo 64 > %s && [ $(cat %s) = 64 ] && echo 0 > %s" % (HUGE_2M, HUGE_2M, HUGE_2M))

        if llfree:
            status, out, took = timed(g, "echo 1 > %s; cat %s" % (HUGE_1G, HUGE_1G))
            warned = g.wait_for("not supported with CONFIG_LLFREE", 5)
            checks.check(status == 0 and out[-1:] == ["0"] and took < 5 and warned,
                         tag + "1 GiB hugetlb page refused at once",
                         "nr_hugepages %s after %.1f s, warning %s" % (out[-1:], took, warned))
            status, out = g.shell("for b in /sys/devices/system/memory/memory*; do "
                                  "[ $(cat $b/removable) = 1 ] && [ $(cat $b/state) = online ] "
                                  "&& echo ${b##*/}; done | tail -n 1")
            block = out[-1] if status == 0 and out else None
            status, out, took = timed(g, "echo offline > /sys/devices/system/memory/%s/state "
                                      "2>&1; cat /sys/devices/system/memory/%s/state"
                                      % (block, block))
            text = " ".join(out)
            checks.check(block is not None and "not supported" in text.lower() and
                         out[-1:] == ["online"] and took < 5,
                         tag + "offlining refused at once",
                         "%s: %s after %.1f s" % (block, text, took))
        g.send("exit\n")
        res = g.wait_exit(60)
    failed = [line for _, line in res.lines if "llfree:" in line and "failed" in line]
    checks.check(not failed, tag + "no llfree failure", "; ".join(failed[:2]))
    console_check(checks, res, tag.strip())
    return res


def main():
    checks = Checks()
    ran = [one_kernel(checks, v) for v in ("baseline", "llfree")]
    if not any(ran):
        return 77
    return summary(checks)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError))
