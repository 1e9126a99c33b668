#!/usr/bin/env bash
# Builds Linux's mm selftests (tools/testing/selftests/vm of Debian's
# linux-source-6.1, the guest kernels' source) static, for the guest, and
# the initramfs that carries them:
#
#   build/guest/vm-selftests.cpio.gz         /opt/vm-selftests/<test> only
#   build/guest/initramfs-selftests.cpio.gz  build/guest/initramfs.cpio.gz
#                                            with that archive appended
#
# The kernel unpacks concatenated archives in order, so the normal initramfs
# stays small and tests/guest/suites/vm_selftests.py boots the second one.
# The sources get tests/guest/vm-selftests-patches/*.patch (fixes of the
# tests themselves that upstream made later; each says why), then they are
# built with their own Makefile (lib.mk), everything linked
# static (EXTRA_CFLAGS=-static also reaches protection_keys' own rule);
# libnuma and libcap come static from libnuma-dev and libcap-dev. Not built:
# the 32-bit protection_keys (no gcc-multilib); the guest runner
# (guest/tools/ha-vmtests.sh) reports it as a skip.
#
# Cache, ${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/selftests/vm-<hash>/:
# vm-selftests.cpio.gz, keyed by the source package version, the compiler,
# the static libraries, the patches and this script. The sources come from the unpacked tree of
# scripts/build-guest.sh (linux/src-<version>/) if it is there, else from
# the source package's tarball; neither is modified.
#
# Usage: scripts/build-selftests.sh     (run scripts/build-initramfs.sh first)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${HYPERALLOC_CACHE:-/var/cache/hyperalloc}
src_pkg=linux-source-6.1
src_tar=/usr/src/$src_pkg.tar.xz
out_dir=build/guest
keep=3
# what the vm selftests include from outside their folder
paths=(tools/testing/selftests/lib.mk tools/testing/selftests/kselftest.h
	tools/testing/selftests/kselftest_harness.h tools/testing/selftests/vm
	tools/testing/selftests/x86 mm/gup_test.h lib/test_hmm_uapi.h include/vdso)

log() { echo "build-selftests: $*"; }
die() { echo "build-selftests: error: $*" >&2; exit 1; }

scripts/install-deps.sh guest suites
[ -f "$src_tar" ] || die "$src_tar missing (package $src_pkg)"
[ -f "$out_dir/initramfs.cpio.gz" ] || die "$out_dir/initramfs.cpio.gz missing (scripts/build-initramfs.sh)"
src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")
mapfile -t patches < <(find tests/guest/vm-selftests-patches -maxdepth 1 -name '*.patch' 2>/dev/null |
	LC_ALL=C sort)
hash=$( {
	echo "source $src_version"
	echo "cc $(gcc --version | head -n1)"
	echo "libs $(dpkg-query -W -f='${Version} ' libc6-dev libnuma-dev libcap-dev)"
	sha256sum < scripts/build-selftests.sh
	for p in "${patches[@]}"; do echo "$p $(sha256sum < "$p")"; done
} | sha256sum | cut -c1-16)
entry=$cache/selftests/vm-$hash
mkdir -p "$cache/selftests"
exec 9> "$cache/selftests/.lock"
flock -n 9 || { log "waiting for another build"; flock 9; }

if [ -f "$entry/vm-selftests.cpio.gz" ]; then
	log "cached ($entry)"
else
	start=$SECONDS
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	tree=$cache/linux/src-$src_version
	if [ -d "$tree/tools/testing/selftests/vm" ]; then
		log "sources from $tree"
		for p in "${paths[@]}"; do
			mkdir -p "$tmp/src/$(dirname "$p")"
			cp -a "$tree/$p" "$tmp/src/$p"
		done
	else
		log "sources from $src_tar"
		mkdir -p "$tmp/src"
		tar -xJf "$src_tar" -C "$tmp/src" --strip-components=1 \
			"${paths[@]/#/$src_pkg/}"
	fi
	for p in "${patches[@]}"; do
		log "applying $p"
		patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch -d "$tmp/src" \
			-i "$repo/$p" > "$tmp/patch.log" 2>&1 ||
			{ cat "$tmp/patch.log" >&2; die "$p does not apply"; }
	done
	# one file of every program: the test binaries
	stage=$tmp/stage/opt/vm-selftests
	mkdir -p "$stage"
	log "make (log: $entry.log)"
	mkdir -p "$(dirname "$entry")"
	make -C "$tmp/src/tools/testing/selftests/vm" -j"$(nproc)" \
		OUTPUT="$stage" EXTRA_CFLAGS=-static > "$entry.log" 2>&1 ||
		{ tail -n 40 "$entry.log" >&2; die "make failed"; }
	for f in "$stage"/*; do
		file "$f" | grep -q 'statically linked' || die "$(basename "$f") is not static"
		strip "$f"
	done
	find "$tmp/stage" -exec touch -h -d @0 {} +
	mkdir -p "$entry.tmp"
	(cd "$tmp/stage" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n \
		> "$entry.tmp/vm-selftests.cpio.gz"
	ls "$stage" > "$entry.tmp/programs.txt"
	mv "$entry.log" "$entry.tmp/make.log"
	rm -rf "$entry"
	mv "$entry.tmp" "$entry"
	log "built $(wc -l < "$entry/programs.txt") programs in $((SECONDS - start)) s"
	ls -dt "$cache"/selftests/vm-*/ 2>/dev/null | tail -n +$((keep + 1)) |
		while read -r old; do rm -rf "$old"; done
fi
cp "$entry/vm-selftests.cpio.gz" "$out_dir/vm-selftests.cpio.gz"
cat "$out_dir/initramfs.cpio.gz" "$entry/vm-selftests.cpio.gz" > "$out_dir/initramfs-selftests.cpio.gz.tmp"
mv "$out_dir/initramfs-selftests.cpio.gz.tmp" "$out_dir/initramfs-selftests.cpio.gz"
log "$out_dir/initramfs-selftests.cpio.gz ($(stat -c %s "$out_dir/initramfs-selftests.cpio.gz") bytes)"
