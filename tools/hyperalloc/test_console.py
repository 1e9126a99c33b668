#!/usr/bin/python3
"""Unit tests of vm.bad_console_lines(): which kernel reports fail a run."""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hyperalloc.vm import bad_console_lines  # noqa: E402


def report(first, frames):
    return [first, "CPU: 0 PID: 21 Comm: kworker/0:1", "Call Trace:", " <TASK>",
            " dump_stack_lvl+0x33/0x46"] + [" %s+0x10/0x20" % f for f in frames] + [" </TASK>"]


ALLOC_FAILURE = report("kworker/0:1: vmemmap alloc failure: order:9",
                       ["warn_alloc", "vmemmap_alloc_block", "virtio_mem_run_wq"])
OOM = report("ha-mem invoked oom-killer: gfp_mask=0x140dca",
             ["dump_header", "oom_kill_process", "out_of_memory", "__alloc_pages"]) + [
    "Out of memory: Killed process 99 (ha-mem)"]
OTHER = report("kworker/0:1: something else", ["virtio_mem_run_wq"])


class BadConsoleLines(unittest.TestCase):
    def test_clean(self):
        self.assertEqual(bad_console_lines(["booted", "ok"]), [])

    def test_reports_fail_by_default(self):
        for lines in (ALLOC_FAILURE, OOM, OTHER):
            self.assertEqual(bad_console_lines(lines), ["Call Trace:"])

    def test_memory_pressure_allowed(self):
        self.assertEqual(bad_console_lines(ALLOC_FAILURE, allow_oom_kill=True), [])
        self.assertEqual(bad_console_lines(OOM, allow_oom_kill=True), [])

    def test_other_trace_still_fails(self):
        self.assertEqual(bad_console_lines(OTHER, allow_oom_kill=True), ["Call Trace:"])
        warn = ["WARNING: CPU: 0 at mm/page_alloc.c:1 foo"] + ALLOC_FAILURE
        self.assertEqual(bad_console_lines(warn, allow_oom_kill=True), [warn[0]])

    def test_oom_frame_outside_a_report_fails(self):
        stray = report("kworker: no report", ["out_of_memory"])
        self.assertEqual(bad_console_lines(stray, allow_oom_kill=True), ["Call Trace:"])


if __name__ == "__main__":
    unittest.main()
