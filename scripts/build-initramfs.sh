#!/usr/bin/env bash
# Builds build/guest/initramfs.cpio.gz for the test guest:
#   /bin/busybox (Debian's busybox-static) and a link per applet in /bin,
#   /init from guest/init,
#   /bin/<name> for every guest/tools/<name>.c (gcc -static -O2 -Wall -Wextra -Werror)
#   and every guest/tools/<name>.sh (a busybox sh script),
#   /dev/console, so that PID 1 has a console before devtmpfs is mounted.
# Runs as any user: ownership is forced to root and the device node is written
# as a separate cpio member (the kernel unpacks concatenated archives).
# The archive is reproducible for the same inputs (SOURCE_DATE_EPOCH, default 0).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=build/guest/initramfs.cpio.gz
epoch=${SOURCE_DATE_EPOCH:-0}

log() { echo "build-initramfs: $*"; }
die() { echo "build-initramfs: error: $*" >&2; exit 1; }

# Prints one cpio "newc" member without data: $1 name, $2 mode (octal,
# with file type), $3 rdev major, $4 rdev minor; $5 inode number.
newc_member() {
	local name=$1 mode=$2 major=$3 minor=$4 ino=$5
	local namesize=$((${#name} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		"$ino" "$((8#$mode))" 0 0 1 "$epoch" 0 0 0 "$major" "$minor" "$namesize" 0
	printf '%s\0' "$name"
	# header (110 bytes) + name is padded to a multiple of 4
	local pad=$(((4 - (110 + namesize) % 4) % 4))
	[ "$pad" = 0 ] || head -c "$pad" /dev/zero
}

scripts/install-deps.sh guest
busybox=/bin/busybox
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
	ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable' ||
	die "$busybox is not statically linked (package busybox-static)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,root,etc}
cp guest/init "$stage/init"
chmod 0755 "$stage/init"
cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list); do
	[ -e "$stage/bin/$applet" ] || ln -s busybox "$stage/bin/$applet"
done
# Tools whose name equals an applet replace the applet.
shopt -s nullglob
for c in guest/tools/*.c; do
	name=$(basename "$c" .c)
	log "compiling $c"
	rm -f "$stage/bin/$name"
	gcc -static -O2 -Wall -Wextra -Werror -o "$stage/bin/$name" "$c"
	strip "$stage/bin/$name"
done
for sh in guest/tools/*.sh; do
	name=$(basename "$sh" .sh)
	rm -f "$stage/bin/$name"
	install -m 0755 "$sh" "$stage/bin/$name"
done
shopt -u nullglob
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$stage/etc/passwd"
printf 'root:x:0:\n' > "$stage/etc/group"

mkdir -p "$(dirname "$out")"
find "$stage" -exec touch -h -d "@$epoch" {} +
{
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible)
	newc_member dev/console 020600 5 1 1
	newc_member TRAILER!!! 0 0 0 0
} | gzip -9 -n > "$out.tmp"
mv "$out.tmp" "$out"
log "$out ($(stat -c %s "$out") bytes)"
