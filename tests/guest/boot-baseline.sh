#!/usr/bin/env bash
# Boot smoke test of the baseline guest kernel (see boot-smoke.py).
# Needs build/guest/bzImage-baseline and build/guest/initramfs.cpio.gz
# (scripts/build-guest.sh baseline, scripts/build-initramfs.sh); exits 77 without them.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/boot-smoke.py" --variant baseline "$@"
