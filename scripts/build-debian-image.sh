#!/usr/bin/env bash
# Builds the Debian root file system that the guest suites run programs from
# (tests/guest/suites/): stress-ng, and gcc + make for the compile workload.
#
# Usage: scripts/build-debian-image.sh
#
# mmdebstrap (variant essential, plus the packages in $packages) from the same
# Debian suites as the host (bookworm, -updates, -security), so the guest's gcc
# is the same package version as a host chroot's. Then an ext4 image of it,
# which the guest mounts from a virtio-blk disk (QEMU snapshot=on: the cached
# image is never written) and chroots into. The source of the compile
# workload's Debian package (zlib, `apt-get source`) is unpacked beside it.
#
# Cache, ${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/images/debian-<hash>/:
#   rootfs/        the root file system (the host compiles its reference
#                  objects by chroot into it; never modified)
#   rootfs.img     the ext4 image of rootfs/
#   zlib/          the unpacked zlib source package
#   packages.txt   name and version of every package in rootfs/
# The hash covers this script (its package list and suites). A new Debian
# point release is picked up only when the script changes; packages.txt says
# what an image holds. build/guest/debian is a symlink to the entry.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/images
suite=bookworm
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
# stress-ng: the memory stressors; gcc, libc6-dev, make: the compile workload.
packages=stress-ng,gcc,libc6-dev,make
workload_src=zlib
keep_images=3

log() { echo "build-debian-image: $*"; }
die() { echo "build-debian-image: error: $*" >&2; exit 1; }

scripts/install-deps.sh guest suites
hash=$(sha256sum < scripts/build-debian-image.sh | cut -c1-16)
entry=$cache/debian-$hash
mkdir -p "$cache" build/guest
exec 9> "$cache/.lock"
flock -n 9 || { log "waiting for another build of the image"; flock 9; }

if [ -f "$entry/rootfs.img" ]; then
	log "cached ($entry)"
else
	start=$SECONDS
	tmp=$entry.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "mmdebstrap $suite with $packages (log: $tmp/mmdebstrap.log)"
	mmdebstrap --variant=essential --include="$packages" \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		"$suite" "$tmp/rootfs" \
		"deb $mirror $suite main" "deb $mirror $suite-updates main" \
		"deb $security $suite-security main" > "$tmp/mmdebstrap.log" 2>&1 ||
		{ tail -n 30 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
	# mount points of the guest suites (tests/guest/suites/)
	mkdir -p "$tmp/rootfs/ha/src" "$tmp/rootfs/ha/out"
	chroot "$tmp/rootfs" dpkg-query -W -f='${Package} ${Version}\n' | LC_ALL=C sort \
		> "$tmp/packages.txt"

	log "apt-get source $workload_src"
	mkdir -p "$tmp/dl"
	(cd "$tmp/dl" && apt-get source -q "$workload_src") > "$tmp/source.log" 2>&1 ||
		{ tail -n 20 "$tmp/source.log" >&2; die "apt-get source $workload_src failed"; }
	srcdir=$(find "$tmp/dl" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	[ -n "$srcdir" ] || die "no unpacked $workload_src source"
	mv "$srcdir" "$tmp/$workload_src"
	basename "$srcdir" > "$tmp/$workload_src.version"
	rm -rf "$tmp/dl"

	# room for what the guest writes outside tmpfs (it runs on a snapshot)
	size=$(( $(du -sm "$tmp/rootfs" | cut -f1) * 5 / 4 + 256 ))
	mkfs.ext4 -q -F -L ha-debian -d "$tmp/rootfs" "$tmp/rootfs.img" "${size}M"
	rm -rf "$entry"
	mv "$tmp" "$entry"
	log "built in $((SECONDS - start)) s ($(grep -c . "$entry/packages.txt") packages, ${size} MiB)"
	# keep the newest few entries
	ls -dt "$cache"/debian-*/ 2>/dev/null | tail -n +$((keep_images + 1)) |
		while read -r old; do rm -rf "$old"; done
fi
ln -sfn "$entry" build/guest/debian
log "build/guest/debian -> $entry"
