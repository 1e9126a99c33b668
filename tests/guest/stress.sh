#!/usr/bin/env bash
# Memory stress test of a guest kernel (see stress.py): ha-mem stress and
# ha-mem oom in 512 MiB and 4 GiB guests. Default variant llfree; pass
# --variant baseline|debug and --quick as needed. Exits 77 without the kernel,
# the initramfs or QEMU.
set -euo pipefail
exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/stress.py" "$@"
