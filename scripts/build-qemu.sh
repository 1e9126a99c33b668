#!/usr/bin/env bash
# Builds HyperAlloc's QEMU (x86_64-softmmu only) and copies it to build/qemu/qemu-system-x86_64.
#
# Source: Debian's qemu 7.2 source package (upstream 7.2 plus Debian's stable-update and
# packaging patches, applied by dpkg-source), unpacked once into the cache. On top of it, in
# this order: the new files in qemu/overlay/, the patch series qemu/patches/*.patch, the protocol
# header converted into include/standard-headers/ (as scripts/update-linux-headers.sh would), and
# a copy of the llfree sources under llfree/ in the QEMU tree. Nothing of this is ever committed.
#
# Cache (${HYPERALLOC_CACHE:-/var/cache/hyperalloc}):
#   src/                     the source package and its pristine unpacked tree
#   qemu/<hash>/             finished binaries, keyed by a hash over every input
#   qemu/work/{src,build}/   the last work tree and its ninja build dir, reused incrementally
# A hit in qemu/<hash>/ only copies the binary. The work tree is updated with rsync --checksum,
# so only files whose content changed get a new mtime and ninja rebuilds only what depends on them.
#
# Usage: scripts/build-qemu.sh        (HYPERALLOC_VERBOSE=1 streams configure and ninja output)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${HYPERALLOC_CACHE:-/var/cache/hyperalloc}
out_dir=$repo/build/qemu
binary=qemu-system-x86_64
keep_builds=5
# The wire protocol's single home; QEMU gets a generated copy in include/standard-headers/.
protocol_header=linux/overlay/include/uapi/linux/virtio_llfree_balloon.h

# Debian's python3 and meson, never a user's pyenv or /usr/local shims: QEMU's configure takes
# the first python3 in PATH, and insists on its own bundled meson when given --python.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# Firmware comes from Debian's packages: seabios, ipxe-qemu and qemu-system-data
# (/usr/share/qemu: linuxboot_dma.bin for -kernel, kvmvapic.bin, ...). The prefix is a path
# outside /usr that is never installed to, so QEMU does not relocate these absolute paths
# relative to the binary (util/cutils.c: get_relocated_path()).
configure_args=(
	--target-list=x86_64-softmmu
	--prefix=/opt/hyperalloc-qemu
	--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
	--without-default-features
	--enable-kvm
	--enable-tcg
	--enable-slirp
	--enable-malloc-trim
	--enable-fdt=system
	--disable-install-blobs
	--enable-trace-backends=log
	--with-pkgversion=hyperalloc
)

log() { printf 'build-qemu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a long command with its output in a log file; shows the tail if it fails.
run_logged() {
	local logfile=$1; shift
	if [ "${HYPERALLOC_VERBOSE:-0}" = 1 ]; then
		"$@" 2>&1 | tee "$logfile" >&2
		return
	fi
	if ! "$@" > "$logfile" 2>&1; then
		tail -n 40 "$logfile" >&2
		die "'$1' failed, full log: $logfile"
	fi
}

# Newest qemu 7.2 source version in apt's deb-src lists, or empty.
apt_qemu_version() {
	local best="" v
	for v in $(apt-cache showsrc qemu 2>/dev/null |
		awk '/^Package:/ { p = $2 } /^Version:/ && p == "qemu" { print $2 }'); do
		case $v in 1:7.2+*) ;; *) continue ;; esac
		if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then
			best=$v
		fi
	done
	echo "$best"
}

# Newest qemu 7.2 source version already downloaded into the cache, or empty.
cached_qemu_version() {
	local best="" dsc v
	for dsc in "$cache"/src/qemu_7.2+*.dsc; do
		[ -f "$dsc" ] || continue
		v=1:$(sed -n 's/^Version: 1://p' "$dsc")
		if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then
			best=$v
		fi
	done
	echo "$best"
}

# Downloads (if needed) and unpacks (if needed) qemu=$1; prints the pristine tree's path.
pristine_tree() {
	local ver=$1 nover=${1#*:}
	local dsc=$cache/src/qemu_$nover.dsc tree=$cache/src/qemu-$nover
	if [ ! -f "$dsc" ]; then
		log "downloading qemu $ver source package"
		local get=(apt-get source --download-only -q -o APT::Sandbox::User=root "qemu=$ver")
		if ! (cd "$cache/src" && "${get[@]}" >&2); then
			log "retrying after apt-get update"
			apt-get update -q >&2
			(cd "$cache/src" && "${get[@]}" >&2) || die "cannot fetch qemu=$ver source"
		fi
	fi
	if [ ! -d "$tree" ]; then
		log "unpacking $dsc (with Debian's patches)"
		rm -rf "$tree.tmp"
		run_logged "$cache/src/dpkg-source.log" dpkg-source -x "$dsc" "$tree.tmp"
		mv "$tree.tmp" "$tree"
	fi
	echo "$tree"
}

# Prints each argument on a line of its own; nothing for no arguments.
print_lines() {
	[ $# -eq 0 ] || printf '%s\n' "$@"
}

# The llfree files QEMU compiles, relative to the repo, one per line.
llfree_files() {
	(cd "$repo" && shopt -s nullglob && print_lines llfree/src/*.c llfree/src/*.h \
		llfree/include/llfree/*.h llfree/platform/user/*.h)
}

# Overlay files relative to qemu/overlay/, one per line (placeholders excluded).
overlay_files() {
	[ -d "$repo/qemu/overlay" ] || return 0
	(cd "$repo/qemu/overlay" && find . -type f ! -name .gitkeep -printf '%P\n' | LC_ALL=C sort)
}

# Patches relative to the repo, in series order.
patch_files() {
	(cd "$repo" && shopt -s nullglob && LC_ALL=C && print_lines qemu/patches/*.patch)
}

# A short hash over everything that determines the binary.
inputs_hash() {
	local ver=$1
	{
		printf 'qemu-source %s\n' "$ver"
		cd "$repo"
		sha256sum scripts/build-qemu.sh
		overlay_files | while IFS= read -r f; do sha256sum "qemu/overlay/$f"; done
		patch_files | while IFS= read -r f; do sha256sum "$f"; done
		llfree_files | while IFS= read -r f; do sha256sum "$f"; done
		sha256sum "$protocol_header"
	} | sha256sum | cut -c1-16
}

# Generates include/standard-headers/linux/<protocol header> in the QEMU tree $1 from the uapi
# header, with the conversion QEMU's own scripts/update-linux-headers.sh applies (its cp_portable
# function, taken from that script in the tree and run unchanged), so the copy is exactly what
# an upstream header import would produce.
import_protocol_header() {
	local stage=$1 dir=include/standard-headers/linux fn
	local out=$stage/$dir/$(basename "$protocol_header")
	[ ! -e "$out" ] || die "$dir/$(basename "$protocol_header") already exists in the QEMU tree"
	fn=$(sed -n '/^cp_portable() {$/,/^}$/p' "$stage/scripts/update-linux-headers.sh")
	[ -n "$fn" ] || die "no cp_portable() in the QEMU tree's scripts/update-linux-headers.sh"
	(cd "$stage" && sh -e -c "$fn"'
cp_portable "$1" "$2"' cp_portable "$repo/$protocol_header" "$dir") ||
		die "cannot convert $protocol_header"
	[ -s "$out" ] || die "converting $protocol_header produced nothing"
}

# Builds a fresh tree in $2 from the pristine tree $1 plus our overlay, patches and llfree.
stage_tree() {
	local pristine=$1 stage=$2 f p
	rm -rf "$stage"
	cp -a "$pristine" "$stage"
	rm -rf "$stage/debian" "$stage/.pc"

	while IFS= read -r f; do
		[ ! -e "$stage/$f" ] ||
			die "qemu/overlay/$f would replace an upstream file: change it with a patch"
		install -D -m 0644 "$repo/qemu/overlay/$f" "$stage/$f"
	done < <(overlay_files)

	while IFS= read -r p; do
		log "applying $p"
		grep -q '^+++ ' "$repo/$p" || die "$p has no diff in it"
		patch -d "$stage" -p1 --forward --fuzz=0 --no-backup-if-mismatch -r - -s \
			-i "$repo/$p" < /dev/null || die "$p does not apply"
	done < <(patch_files)

	import_protocol_header "$stage"

	[ ! -e "$stage/llfree" ] || die "the QEMU tree already has llfree/"
	while IFS= read -r f; do
		install -D -m 0644 "$repo/$f" "$stage/$f"
	done < <(llfree_files)
}

# Copies a finished binary into the checkout, atomically.
install_binary() {
	mkdir -p "$out_dir"
	cp "$1/$binary" "$out_dir/.$binary.tmp"
	mv "$out_dir/.$binary.tmp" "$out_dir/$binary"
	cp "$1/BUILD-INFO" "$out_dir/BUILD-INFO"
}

# Removes all but the newest $keep_builds cached binaries.
prune_builds() {
	# shellcheck disable=SC2012 # the names are hex hashes
	ls -1dt "$cache"/qemu/[0-9a-f]*/ 2>/dev/null | tail -n +"$((keep_builds + 1))" |
		while IFS= read -r d; do rm -rf "$d"; done
}

main() {
	local start=$SECONDS
	bash "$repo/scripts/install-deps.sh" qemu
	mkdir -p "$cache/src" "$cache/qemu"

	# One build at a time per cache: the work tree and build dir are shared.
	exec 9> "$cache/qemu/.lock"
	flock 9

	local ver
	ver=$(apt_qemu_version)
	[ -n "$ver" ] || ver=$(cached_qemu_version)
	[ -n "$ver" ] || die "no qemu 7.2 source in apt's deb-src lists or in $cache/src"

	local hash done_dir
	hash=$(inputs_hash "$ver")
	done_dir=$cache/qemu/$hash
	if [ -x "$done_dir/$binary" ]; then
		log "cache hit $hash (qemu $ver)"
		touch "$done_dir"
		install_binary "$done_dir"
		echo "$out_dir/$binary"
		return
	fi
	log "cache miss $hash (qemu $ver)"

	local pristine work=$cache/qemu/work
	pristine=$(pristine_tree "$ver")
	mkdir -p "$work"
	stage_tree "$pristine" "$work/stage"
	rsync -rlp --checksum --delete "$work/stage/" "$work/src/"
	rm -rf "$work/stage"

	local bdir=$work/build args
	args=$(printf '%s\n' "$ver" "${configure_args[@]}")
	if [ ! -f "$bdir/build.ninja" ] || [ "$(cat "$bdir/.hyperalloc-configure" 2>/dev/null)" != "$args" ]; then
		log "configuring"
		rm -rf "$bdir"
		mkdir -p "$bdir"
		(cd "$bdir" && run_logged "$work/configure.log" ../src/configure "${configure_args[@]}")
		printf '%s\n' "$args" > "$bdir/.hyperalloc-configure"
	fi

	log "building (log: $work/ninja.log)"
	run_logged "$work/ninja.log" ninja -C "$bdir" -j "$(nproc)" "$binary"

	rm -rf "$done_dir.tmp"
	mkdir -p "$done_dir.tmp"
	cp "$bdir/$binary" "$done_dir.tmp/$binary"
	{
		echo "hash: $hash"
		echo "qemu-source: $ver"
		echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "configure: ${configure_args[*]}"
	} > "$done_dir.tmp/BUILD-INFO"
	mv "$done_dir.tmp" "$done_dir"
	prune_builds
	install_binary "$done_dir"
	log "built in $((SECONDS - start)) s"
	echo "$out_dir/$binary"
}

main "$@"
