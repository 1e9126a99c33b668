#!/usr/bin/env bash
# Installs the Debian packages a part of HyperAlloc needs, only when missing.
# Usage: scripts/install-deps.sh GROUP...   (groups: llfree guest qemu vm bench suites all)
# deb-src entries live in a sources file of our own; the system's files are never edited.
set -euo pipefail

declare -A groups=(
	[llfree]="build-essential clang llvm libclang-rt-14-dev"
	[guest]="build-essential ccache bc bison flex libelf-dev libssl-dev cpio xz-utils kmod busybox-static dpkg-dev patch linux-source-6.1"
	[qemu]="build-essential dpkg-dev ninja-build meson pkg-config python3-venv libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev libslirp-dev patch rsync seabios ipxe-qemu qemu-system-data"
	[vm]="python3 busybox-static e2fsprogs"
	[bench]="python3 python3-matplotlib build-essential linux-perf"
	[suites]="build-essential libnuma-dev libcap-dev mmdebstrap e2fsprogs util-linux dpkg-dev cpio"
)

want=()
for g in "$@"; do
	if [ "$g" = all ]; then
		for k in "${!groups[@]}"; do want+=(${groups[$k]}); done
	elif [ -n "${groups[$g]:-}" ]; then
		want+=(${groups[$g]})
	else
		echo "install-deps: unknown group '$g'" >&2
		exit 2
	fi
done

missing=()
for p in $(printf '%s\n' "${want[@]}" | sort -u); do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

src_list=/etc/apt/sources.list.d/hyperalloc-src.sources
need_src=0
case " $* " in *" qemu "*|*" guest "*|*" suites "*|*" all "*) need_src=1 ;; esac
if [ "$need_src" = 1 ] && [ ! -f "$src_list" ]; then
	cat > "$src_list" <<'SRC'
# Added by HyperAlloc's scripts/install-deps.sh: source packages for qemu.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	missing+=()
	force_update=1
fi

if [ ${#missing[@]} -gt 0 ] || [ "${force_update:-0}" = 1 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	[ ${#missing[@]} -eq 0 ] || apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
