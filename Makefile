# HyperAlloc: top-level entry points. See README.md.
#
#   make demo          the main job (see README.md)
#   make check         every test; what CI runs
#   make llfree-check  llfree tests (release, ASan+UBSan, TSan, fuzzing)
#   make llfree-bench  llfree userspace benchmark table
#   make qemu          build/qemu/qemu-system-x86_64 with our device
#   make qemu-check    device tests against the real binary over QMP/qtest
#   make guest         build/guest/{bzImage,bzImage-baseline,initramfs.cpio.gz}
#
# Each target installs the Debian packages it needs (scripts/install-deps.sh).

.PHONY: all demo check llfree-check llfree-bench qemu qemu-check guest \
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

check: llfree-check qemu-check

demo: llfree-bench

clean:
	rm -rf build
