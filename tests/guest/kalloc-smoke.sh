#!/usr/bin/env bash
# Smoke test of the kernel allocation benchmark (mm/alloc_bench.c): boots the
# baseline and llfree kernels (512 MiB, 2 vCPUs) and runs every mode, order
# and thread count of bench/kalloc.py with tiny counts, plus malformed
# commands that must be refused. Fails when /sys/kernel/debug/alloc_bench/run
# is missing, a run fails or reports failed allocations, or the console shows
# a warning. Pass --variant baseline|llfree|debug (repeatable) to pick kernels.
# Exit status 0 pass, 1 fail, 77 skip (a kernel, the initramfs or QEMU missing).
set -euo pipefail
exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/../../bench/kalloc.py" --check "$@"
