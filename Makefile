# HyperAlloc: top-level entry points. See README.md.
#
#   make demo          the main job: a VM whose host memory follows the guest
#   make check         every test; what CI runs
#   make llfree-check  llfree tests (release, ASan+UBSan, TSan, fuzzing)
#   make llfree-bench  llfree userspace benchmark table
#   make qemu          build/qemu/qemu-system-x86_64 with our device
#   make qemu-check    device tests against the real binary over QMP/qtest
#   make guest         build/guest/: every kernel variant and the initramfs
#   make guest-check   boot and stress the baseline and llfree kernels (TCG),
#                      and the debug kernel once per change of its inputs
#   make bench         benchmarks (bench/run.py): resize, automatic
#                      reclamation, guest interference and three VMs against
#                      virtio-balloon, free page reporting and virtio-mem
#                      (about 2 hours); make bench-quick for a short run;
#                      results in build/bench/
#   make bench-kalloc  kernel page allocator: llfree against buddy (TCG);
#                      KALLOC_ARGS=--quick for a short run
#   make bench-hostfree what freeing 6 GiB costs other work on this host,
#                      without a VM (bench/hostfree.c; 3 min)
#   make e2e-check     end-to-end tests of a running llfree VM (README.md),
#                      data verified
#   make guest-suites  test suites we did not write, in the guest: Linux's mm
#                      selftests and stress-ng's memory stressors in the
#                      baseline and the llfree kernel, compared; gcc building
#                      zlib and llfree in an llfree guest under resize
#                      (docs/testing.md)
#
# Each target installs the Debian packages it needs (scripts/install-deps.sh).

.PHONY: all demo check llfree-check llfree-bench qemu qemu-check guest \
	guest-check guest-images guest-suites guest-suites-images e2e-check bench bench-quick \
	bench-kalloc bench-hostfree \
	deps-llfree deps-vm clean

all: llfree-check

deps-llfree:
	scripts/install-deps.sh llfree

llfree-check: deps-llfree
	$(MAKE) -C llfree check

llfree-bench: deps-llfree
	$(MAKE) -C llfree bench

deps-vm:
	scripts/install-deps.sh vm

qemu:
	scripts/build-qemu.sh

qemu-check: qemu deps-vm
	/usr/bin/python3 tests/qemu/test_device.py

guest:
	scripts/build-guest.sh
	scripts/build-initramfs.sh

# the kernels and initramfs the tests boot
guest-images:
	scripts/build-guest.sh baseline llfree
	scripts/build-initramfs.sh

guest-check: qemu guest-images deps-vm
	tests/guest/boot-smoke.py --variant baseline
	tests/guest/boot-smoke.py --variant llfree
	tests/guest/stress.py --variant baseline
	tests/guest/stress.py --variant llfree --device
	tests/guest/kalloc-smoke.sh --variant baseline --variant llfree
	tests/guest/debug-stress.sh

e2e-check: qemu guest-images deps-vm
	tools/hyperalloc/test_console.py
	tests/e2e/test_resize.py
	tests/e2e/test_coexist_reboot.py
	tests/e2e/test_auto.py
	tests/e2e/test_race.py
	tests/e2e/test_bad_input.py
	tests/e2e/test_install_large.py
	tests/e2e/test_driver_reset.py
	tests/e2e/test_pagecache.py
	tests/e2e/test_cache_trim.py
	tests/e2e/test_malicious.py
	tests/e2e/test_mm_paths.py
	tests/e2e/test_after_shrink.py
	tests/e2e/test_power.py
	tests/e2e/test_numa.py

# the guest suites' inputs, cached by their own inputs: Linux's mm selftests
# (static, in a second initramfs) and the Debian image (stress-ng, gcc)
guest-suites-images: guest-images
	scripts/build-selftests.sh
	scripts/build-debian-image.sh

# every suite runs; the target fails if one of them failed
guest-suites: qemu guest-suites-images deps-vm
	@status=0; \
	for t in tests/guest/vm_selftests.py tests/guest/stressng.py \
		tests/e2e/test_gcc_workload.py; do \
		echo "== $$t"; $$t || { echo "== $$t: FAILED"; status=1; }; \
	done; exit $$status

# benchmarks never gate CI: not part of check
bench: qemu guest-images
	scripts/install-deps.sh vm bench
	/usr/bin/python3 bench/run.py $(BENCH_ARGS)

bench-quick: qemu guest-images
	scripts/install-deps.sh vm bench
	/usr/bin/python3 bench/run.py --quick $(BENCH_ARGS)

bench-kalloc: qemu guest-images deps-vm
	/usr/bin/python3 bench/kalloc.py $(KALLOC_ARGS)

build/bench/hostfree: bench/hostfree.c | deps-llfree
	mkdir -p build/bench
	gcc -O2 -Wall -Wextra -Werror -pthread -o $@ bench/hostfree.c

bench-hostfree: build/bench/hostfree
	build/bench/hostfree
	build/bench/hostfree --hold

check: llfree-check qemu-check guest-check e2e-check guest-suites

demo: qemu guest-images
	scripts/install-deps.sh vm bench
	tools/demo.py

clean:
	rm -rf build
