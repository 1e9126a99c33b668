# The compile workload of tests/e2e/test_gcc_workload.py: zlib (Debian's
# source package) and the llfree library, compiled by Debian's gcc in the
# guest and, for reference, on the host by chroot into the same root file
# system, at the same paths with the same flags. Run as
#
#   make -j2 -C /ha/out -f /ha/src/compile.mk
#
# with the sources in /ha/src/zlib and /ha/src/llfree. Every output is
# deterministic (same paths, no timestamps: ar D), so the guest's files must
# equal the host's byte for byte. No -g: debug info adds a third to the
# build under TCG (207 s with it) and nothing to what the test checks.

SRC := /ha/src
CC := gcc
ZLIB_OBJS := adler32.o compress.o crc32.o deflate.o gzclose.o gzlib.o gzread.o \
	gzwrite.o infback.o inffast.o inflate.o inftrees.o trees.o uncompr.o zutil.o
LLFREE_OBJS := $(patsubst $(SRC)/llfree/src/%.c,llfree-%.o,$(wildcard $(SRC)/llfree/src/*.c))
# zlib's configure on Linux; llfree's release flags (llfree/Makefile), both
# without -g
ZLIB_CFLAGS := -O2 -D_LARGEFILE64_SOURCE=1 -DHAVE_HIDDEN -I$(SRC)/zlib
LLFREE_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -pthread \
	-I$(SRC)/llfree/include -I$(SRC)/llfree/src -I$(SRC)/llfree/platform/user

.PHONY: all
all: libz.a example libllfree.a

$(ZLIB_OBJS): %.o: $(SRC)/zlib/%.c
	$(CC) $(ZLIB_CFLAGS) -c -o $@ $<

example.o: $(SRC)/zlib/test/example.c
	$(CC) $(ZLIB_CFLAGS) -c -o $@ $<

libz.a: $(ZLIB_OBJS)
	ar rcD $@ $^

example: example.o libz.a
	$(CC) -o $@ example.o libz.a

llfree-%.o: $(SRC)/llfree/src/%.c
	$(CC) $(LLFREE_CFLAGS) -c -o $@ $<

libllfree.a: $(LLFREE_OBJS)
	ar rcD $@ $^
