#!/usr/bin/env bash
# Builds the HyperAlloc guest kernels from Debian's linux-source-6.1 package.
#
# Usage: scripts/build-guest.sh [-v] [VARIANT...]   (default: every variant below)
#
#   baseline  build/guest/bzImage-baseline  stock buddy allocator (+ the benchmark)
#   llfree    build/guest/bzImage           llfree allocator + virtio-llfree-balloon
#   debug     build/guest/bzImage-debug     llfree + DEBUG_VM, lockdep, KASAN
#
# A variant is x86_64_defconfig + kernel/configs/kvm_guest.config + the fragments
# listed in `fragments` below (from linux/config/), merged with merge_config.sh
# and completed with olddefconfig. Every symbol our fragments request is checked
# in the final .config; a miss is an error for the variants in `strict`, a
# warning for the others.
#
# Kernel tree of a variant = pristine source + linux/overlay/ (new files, laid
# out as in the kernel) + llfree sources (see stage_llfree) +
# linux/patches/*.patch in order (patch -p1, no fuzz), then the benchmark:
# linux/bench/overlay/ + linux/bench/patches/*.patch (mm/alloc_bench.c, the
# page allocator benchmark in debugfs). Variants in `stock` get the pristine
# source + the benchmark only: baseline is the kernel the paper compares to,
# its allocator unchanged. Every variant has the benchmark, so llfree and the
# buddy allocator are measured by the same code (bench/kalloc.py).
#
# Cache (outside the checkout), ${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/linux/:
#   src-<pkgversion>/         the unpacked source, never modified
#   work/<variant>/src        the variant's tree; only files that differ from
#                             the last build are rewritten, so make stays incremental
#   work/<variant>/obj        the object tree (make O=)
#   ccache/                   compiler cache shared by the variants: each work
#                             tree is its ccache base directory, so an object
#                             whose preprocessed source and flags are the same
#                             in two variants (most of baseline and llfree:
#                             our patches leave every header as it is) is
#                             compiled once
#   <variant>-<hash>/         finished bzImage and .config (the hash is also
#                             written to build/guest/inputs-<variant>); it covers the
#                             source version, compiler, this script, the
#                             variant's fragments, overlay, patches, llfree
#                             sources and the benchmark's overlay and patches
# Deleting any of it is safe; the next run rebuilds what is missing.
set -euo pipefail

declare -A fragments=(
	[baseline]="base baseline"
	[llfree]="base llfree"
	[debug]="base llfree debug"
)
declare -A output=(
	[baseline]=bzImage-baseline
	[llfree]=bzImage
	[debug]=bzImage-debug
)
# Variants built from the unmodified source + the benchmark (no linux/overlay,
# llfree or linux/patches).
stock=" baseline "
# Variants for which an unmet fragment symbol is fatal. Add llfree and debug
# once CONFIG_LLFREE and CONFIG_VIRTIO_LLFREE_BALLOON build (both now exist).
strict=" baseline llfree debug "
all_variants=(baseline llfree debug)

verbose=0
if [ "${1:-}" = -v ]; then
	verbose=1
	shift
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cache=${HYPERALLOC_CACHE:-/var/cache/hyperalloc}/linux
out_dir=$repo/build/guest
src_pkg=linux-source-6.1
src_tar=/usr/src/$src_pkg.tar.xz
jobs=$(nproc)

log() { echo "build-guest: $*"; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

# Unpacks the source package once into $src_dir; an interrupted unpack is redone.
unpack_source() {
	[ -d "$src_dir" ] && return 0
	log "unpacking $src_tar into $src_dir"
	local tmp=$src_dir.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	tar -xJf "$src_tar" -C "$tmp" --strip-components=1
	mv "$tmp" "$src_dir"
}

# Prints the paths (relative to the tree) that a -p1 patch creates or modifies.
patch_paths() {
	sed -n -E 's/^(\+\+\+|---) ([^[:space:]]+).*/\2/p' "$1" |
		sed -e '\|^/dev/null$|d' -e 's|^[^/]*/||' | LC_ALL=C sort -u
}

# Hook for the llfree wiring: copies the allocator library from the checkout
# into the kernel tree being staged ($1) under mm/llfree/, keeping the
# repository layout (src/, include/llfree/, platform/kernel/), so that
# linux/overlay/mm/llfree/Makefile can name them. The copies exist only in the
# cache's work tree; the checkout holds one llfree tree.
stage_llfree() {
	local dst=$1/mm/llfree
	local from to
	for from in src include/llfree platform/kernel; do
		to=$dst/$from
		from=llfree/$from
		[ -d "$from" ] || continue
		mkdir -p "$to"
		find "$from" -maxdepth 1 -type f -exec cp -t "$to" {} +
	done
}

# Prints the repository files a variant's kernel depends on, sorted.
variant_inputs() {
	local v=$1 f
	echo scripts/build-guest.sh
	for f in ${fragments[$v]}; do echo "linux/config/$f.config"; done
	{
		[ ! -d linux/bench/overlay ] || find linux/bench/overlay \( -type f -o -type l \)
		[ ! -d linux/bench/patches ] ||
			find linux/bench/patches -maxdepth 1 -type f -name '*.patch'
	} | LC_ALL=C sort
	[[ $stock != *" $v "* ]] || return 0
	{
		[ ! -d linux/overlay ] || find linux/overlay \( -type f -o -type l \)
		[ ! -d linux/patches ] || find linux/patches -maxdepth 1 -type f -name '*.patch'
		for f in llfree/src llfree/include/llfree llfree/platform/kernel; do
			[ ! -d "$f" ] || find "$f" -maxdepth 1 -type f
		done
	} | LC_ALL=C sort
}

# Prints the cache key of a variant: 16 hex digits.
variant_hash() {
	local v=$1 f
	{
		echo "source $src_version"
		echo "cc $(gcc --version | head -n1)"
		echo "variant $v"
		variant_inputs "$v" | while read -r f; do
			if [ -L "$f" ]; then
				echo "$f -> $(readlink "$f")"
			else
				echo "$f $(stat -c %a "$f") $(sha256sum < "$f" | cut -c1-64)"
			fi
		done
	} | sha256sum | cut -c1-16
}

# Brings work/<v>/src to pristine + overlay + llfree + patches + benchmark,
# rewriting only the files whose content changes (keeps make's timestamps
# meaningful).
prepare_tree() {
	local v=$1 work=$cache/work/$1
	local tree=$work/src stage=$work/stage managed=$work/managed-files
	local f p

	if [ ! -d "$tree" ] || [ "$(cat "$work/source-version" 2>/dev/null)" != "$src_version" ]; then
		log "$v: creating work tree from $src_dir"
		rm -rf "$work"
		mkdir -p "$tree.tmp"
		cp -a "$src_dir/." "$tree.tmp/"
		mv "$tree.tmp" "$tree"
		echo "$src_version" > "$work/source-version"
		: > "$managed"
	fi

	rm -rf "$stage"
	mkdir -p "$stage"
	local patches=()
	if [[ $stock != *" $v "* ]] && [ -d linux/patches ]; then
		mapfile -t patches < <(find linux/patches -maxdepth 1 -type f -name '*.patch' | LC_ALL=C sort)
	fi
	# The benchmark, in every variant, after the llfree patches.
	if [ -d linux/bench/patches ]; then
		mapfile -t -O "${#patches[@]}" patches < <(find linux/bench/patches -maxdepth 1 \
			-type f -name '*.patch' | LC_ALL=C sort)
	fi
	for p in "${patches[@]}"; do
		patch_paths "$p" | while read -r f; do
			if [ -e "$src_dir/$f" ] && [ ! -e "$stage/$f" ]; then
				mkdir -p "$stage/$(dirname "$f")"
				cp -a "$src_dir/$f" "$stage/$f"
			fi
		done
	done
	if [[ $stock != *" $v "* ]]; then
		[ ! -d linux/overlay ] || cp -a linux/overlay/. "$stage/"
		stage_llfree "$stage"
	fi
	[ ! -d linux/bench/overlay ] || cp -a linux/bench/overlay/. "$stage/"
	for p in "${patches[@]}"; do
		log "$v: applying $p"
		patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch \
			-d "$stage" -i "$repo/$p" > "$work/patch.log" 2>&1 ||
			{ cat "$work/patch.log" >&2; die "$p does not apply"; }
		[ -z "$(find "$stage" -name '*.rej')" ] || die "$p left rejects"
	done

	# Files managed last time and now: record before touching the tree, so an
	# interrupted run still restores them next time.
	local now
	now=$(cd "$stage" && find . \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort)
	printf '%s\n' "$now" | cat - "$managed" | sed '/^$/d' | LC_ALL=C sort -u > "$managed.new"
	mv "$managed.new" "$managed"

	local changed=0 want
	while read -r f; do
		if [ -e "$stage/$f" ] || [ -L "$stage/$f" ]; then
			want=$stage/$f
		elif [ -e "$src_dir/$f" ]; then
			want=$src_dir/$f
		else
			want=
		fi
		if [ -z "$want" ]; then
			[ -e "$tree/$f" ] || [ -L "$tree/$f" ] || continue
			rm -f "$tree/$f"
		elif [ -L "$want" ] || [ -L "$tree/$f" ]; then
			[ "$(readlink "$want")" != "$(readlink "$tree/$f" 2>/dev/null)" ] || continue
			rm -f "$tree/$f"
			cp -P "$want" "$tree/$f"
		else
			! cmp -s "$want" "$tree/$f" || continue
			mkdir -p "$(dirname "$tree/$f")"
			cp --remove-destination "$want" "$tree/$f"
		fi
		changed=$((changed + 1))
		[ "$verbose" = 0 ] || log "$v: updated $f"
	done < "$managed"
	printf '%s\n' "$now" | sed '/^$/d' > "$managed"
	rm -rf "$stage"
	log "$v: tree ready ($changed files changed since last build)"
}

# Prints the symbols our fragments request, last fragment winning, as
# "CONFIG_X=value" or "CONFIG_X=n" for "is not set".
requested_symbols() {
	local f
	for f in "$@"; do
		sed -n -E -e 's/^(CONFIG_[A-Za-z0-9_]+)=(.*)$/\1=\2/p' \
			-e 's/^# (CONFIG_[A-Za-z0-9_]+) is not set$/\1=n/p' "$f"
	done | awk -F= '{ k = $1; sub(/^[^=]*=/, ""); v[k] = $0; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
		END { for (i = 1; i <= n; i++) print order[i] "=" v[order[i]] }'
}

# Writes work/<v>/obj/.config from the fragments (only if its content changes)
# and checks that every requested symbol is set as requested.
configure() {
	local v=$1 tree=$cache/work/$1/src obj=$cache/work/$1/obj
	local frags=() f
	for f in ${fragments[$v]}; do
		[ -f "linux/config/$f.config" ] || die "missing linux/config/$f.config"
		frags+=("$repo/linux/config/$f.config")
	done
	mkdir -p "$obj"
	local cand=$obj/.config.candidate
	(cd "$obj" && KCONFIG_CONFIG=$cand sh "$tree/scripts/kconfig/merge_config.sh" -m \
		"$tree/arch/x86/configs/x86_64_defconfig" "$tree/kernel/configs/kvm_guest.config" \
		"${frags[@]}") > "$obj/merge.log" 2>&1 ||
		{ cat "$obj/merge.log" >&2; die "$v: merge_config.sh failed"; }
	make -s -C "$tree" O="$obj" KCONFIG_CONFIG="$cand" olddefconfig > "$obj/olddefconfig.log" 2>&1 ||
		{ cat "$obj/olddefconfig.log" >&2; die "$v: olddefconfig failed"; }
	if cmp -s "$cand" "$obj/.config"; then
		rm -f "$cand"
	else
		mv "$cand" "$obj/.config"
	fi

	local misses=() sym want got
	while IFS= read -r line; do
		sym=${line%%=*}
		want=${line#*=}
		got=$(sed -n -E "s/^$sym=(.*)$/\1/p" "$obj/.config")
		[ -n "$got" ] || got=n
		[ "$want" = "$got" ] || misses+=("$sym: requested $want, got $got")
	done < <(requested_symbols "${frags[@]}")
	if [ ${#misses[@]} -gt 0 ]; then
		echo "build-guest: WARNING: $v: symbols not set as requested:" >&2
		printf '    %s\n' "${misses[@]}" >&2
		[[ $strict != *" $v "* ]] || die "$v: configuration incomplete"
	fi
}

# Builds one variant, or takes it from the cache, and installs it in build/guest.
build_variant() {
	local v=$1 hash entry obj=$cache/work/$1/obj
	hash=$(variant_hash "$v")
	entry=$cache/$v-$hash
	if [ -f "$entry/bzImage" ]; then
		log "$v: cached ($entry)"
	else
		local start=$SECONDS
		prepare_tree "$v"
		configure "$v"
		log "$v: make -j$jobs bzImage (log: $obj/build.log)"
		local mk=(env CCACHE_DIR="$cache/ccache" CCACHE_BASEDIR="$cache/work/$v"
			CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=4G
			make -C "$cache/work/$v/src" O="$obj" -j"$jobs" CC="ccache gcc"
			KBUILD_BUILD_USER=hyperalloc KBUILD_BUILD_HOST=build bzImage)
		if [ "$verbose" = 1 ]; then
			"${mk[@]}" 2>&1 | tee "$obj/build.log"
		else
			"${mk[@]}" > "$obj/build.log" 2>&1 ||
				{ tail -n 60 "$obj/build.log" >&2; die "$v: kernel build failed"; }
		fi
		mkdir -p "$entry.tmp"
		cp "$obj/arch/x86/boot/bzImage" "$entry.tmp/bzImage"
		cp "$obj/.config" "$entry.tmp/config"
		rm -rf "$entry"
		mv "$entry.tmp" "$entry"
		log "$v: built in $((SECONDS - start)) s"
	fi
	mkdir -p "$out_dir"
	cp "$entry/bzImage" "$out_dir/${output[$v]}.tmp"
	mv "$out_dir/${output[$v]}.tmp" "$out_dir/${output[$v]}"
	cp "$entry/config" "$out_dir/config-$v"
	echo "$hash" > "$out_dir/inputs-$v"
	log "$v: build/guest/${output[$v]}"
}

variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
	for v in "${all_variants[@]}"; do
		ok=1
		for f in ${fragments[$v]}; do [ -f "linux/config/$f.config" ] || ok=0; done
		[ "$ok" = 0 ] || variants+=("$v")
	done
fi
for v in "${variants[@]}"; do
	[ -n "${fragments[$v]:-}" ] || die "unknown variant '$v' (known: ${all_variants[*]})"
done

scripts/install-deps.sh guest
[ -f "$src_tar" ] || die "$src_tar missing (package $src_pkg)"
src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")
src_dir=$cache/src-$src_version

# One lock for the shared unpacked source, one per variant for its work tree,
# so a long debug build does not hold up a rebuild of the other kernels.
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock -n 9 || { log "waiting for another build-guest.sh to unpack"; flock 9; }
unpack_source
flock -u 9
for v in "${variants[@]}"; do
	exec 8> "$cache/.lock-$v"
	flock -n 8 || { log "$v: waiting for another build of it"; flock 8; }
	build_variant "$v"
	flock -u 8
done
