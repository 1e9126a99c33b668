#!/usr/bin/env bash
# The memory stress of tests/guest/stress.py on the debug kernel (llfree +
# DEBUG_VM, lockdep, KASAN), once per change of its inputs: mm/ code, the
# driver, llfree, the config. The kernel's input hash (build/guest/
# inputs-debug) names a stamp in ${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/
# debug-stress/ that only a passing run writes, so CI pays for the slow run
# only when something it covers changed. --force runs it regardless.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
stamps=${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/debug-stress

scripts/build-guest.sh debug
hash=$(cat build/guest/inputs-debug)
stamp=$stamps/$hash
if [ "${1:-}" != --force ] && [ -f "$stamp" ]; then
	echo "debug kernel $hash: stress passed on $(cat "$stamp"); not run again"
	exit 0
fi
# KASAN and lockdep under TCG: several times slower than the llfree kernel
tests/guest/stress.py --variant debug --slow 4
mkdir -p "$stamps"
date -u '+%Y-%m-%d %H:%M UTC' > "$stamp"
