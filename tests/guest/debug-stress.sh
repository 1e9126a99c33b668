#!/usr/bin/env bash
# The memory stress of tests/guest/stress.py on the debug kernel (llfree +
# DEBUG_VM, lockdep, KASAN) with virtio-llfree-balloon in auto mode, once per
# change of its inputs: mm/ code, the driver, llfree, the config, and this
# test. The kernel's input hash (build/guest/inputs-debug) and a hash of the
# test's scripts name a stamp in ${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/
# debug-stress/ that only a passing run writes, so CI pays for the slow run
# only when something it covers changed. --force runs it regardless.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
stamps=${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/debug-stress

scripts/build-guest.sh debug
hash=$(cat build/guest/inputs-debug)-$(cat tests/guest/stress.py tests/guest/debug-stress.sh |
	sha256sum | cut -c1-8)
stamp=$stamps/$hash
if [ "${1:-}" != --force ] && [ -f "$stamp" ]; then
	echo "debug kernel $hash: stress passed on $(cat "$stamp"); not run again"
	exit 0
fi
# KASAN and lockdep under TCG: several times slower than the llfree kernel
tests/guest/stress.py --variant debug --device --slow 4
mkdir -p "$stamps"
date -u '+%Y-%m-%d %H:%M UTC' > "$stamp"
