// SPDX-License-Identifier: MIT
/*
 * ha-bigblock: order-10 (4 MiB, physically contiguous) kernel allocations
 * from userspace, mapped and filled with a verified pattern; a helper of
 * tests/e2e/test_install_large.py, packed into an extra initramfs there.
 *
 * Each block is the SQE array of an io_uring with 32768 entries and
 * IORING_SETUP_SQE128: 32768 x 128 bytes = 4 MiB, which Linux 6.1 allocates
 * as one compound page of order 10 (io_mem_alloc_compound(), falling back to
 * single pages only when that fails) and maps to userspace at IORING_OFF_SQES.
 * No request is ever submitted, so the kernel never reads the SQEs and the
 * memory is ours to fill. /proc/self/pagemap (root) tells whether a block is
 * physically contiguous and 4 MiB aligned, i.e. really order 10.
 *
 *   ha-bigblock N     allocate N blocks, fill them; print one line per block
 *                     "block I pfn 0xPFN order10|scattered", then
 *                     "ok blocks N order10 C llfree_install A -> B";
 *                     then answer commands on stdin like `ha-mem hold`:
 *                     verify ("ok verified N blocks" or "error ..."), quit.
 *
 * Pattern: word i of page p of block b holds mix(seed ^ b << 32 ^ p) + i * STEP.
 * Exit status: 0 success, 1 setup or integrity error, 2 usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE_SIZE 4096ul
#define BLOCK_PAGES 1024ul
#define BLOCK_BYTES (BLOCK_PAGES * PAGE_SIZE)
#define ENTRIES 32768u
#define STEP UINT64_C(0x9e3779b97f4a7c15)
#define SEED UINT64_C(0x5eed0b16b10c4a11)

/* One block: the io_uring fd, the SQE mapping and its first PFN. */
struct block {
	int fd;
	uint64_t *mem;
	uint64_t pfn;
	int order10;
};

/* The splitmix64 finalizer. */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Returns a counter of /proc/llfree ("name value" lines), or -1. */
static long long llfree_value(const char *name)
{
	FILE *f = fopen("/proc/llfree", "re");
	char line[256];
	size_t len = strlen(name);
	long long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, name, len) && line[len] == ' ')
			v = strtoll(line + len + 1, NULL, 10);
	fclose(f);
	return v;
}

/* Sets up one io_uring and maps its SQE array; returns 0 or -errno. */
static int block_alloc(struct block *b)
{
	struct io_uring_params p;
	void *mem;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128;
	b->fd = syscall(__NR_io_uring_setup, ENTRIES, &p);
	if (b->fd < 0)
		return -errno;
	if (p.sq_entries != ENTRIES)
		return -EINVAL;
	mem = mmap(NULL, BLOCK_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b->fd,
		   IORING_OFF_SQES);
	if (mem == MAP_FAILED)
		return -errno;
	b->mem = mem;
	return 0;
}

/* Reads the PFNs of a block: order10 if contiguous and 4 MiB aligned. */
static int block_pfns(int pagemap, struct block *b)
{
	uint64_t pfns[BLOCK_PAGES];
	off_t off = (uintptr_t)b->mem / PAGE_SIZE * sizeof(uint64_t);

	if (pread(pagemap, pfns, sizeof(pfns), off) != (ssize_t)sizeof(pfns))
		return -errno;
	b->pfn = pfns[0] & ((1ull << 55) - 1);
	b->order10 = b->pfn != 0 && b->pfn % BLOCK_PAGES == 0;
	for (size_t i = 0; i < BLOCK_PAGES; i++) {
		if (!(pfns[i] >> 63) || (pfns[i] & ((1ull << 55) - 1)) != b->pfn + i)
			b->order10 = 0;
	}
	return 0;
}

/* Fills block number n with its pattern. */
static void block_fill(struct block *b, uint64_t n)
{
	for (size_t p = 0; p < BLOCK_PAGES; p++) {
		uint64_t key = mix64(SEED ^ (n << 32) ^ p), *w = b->mem + p * PAGE_SIZE / 8;

		for (size_t i = 0; i < PAGE_SIZE / 8; i++)
			w[i] = key + i * STEP;
	}
}

/* Returns the number of bad pages of block n (the first ones reported). */
static size_t block_verify(struct block *b, uint64_t n)
{
	size_t bad = 0;

	for (size_t p = 0; p < BLOCK_PAGES; p++) {
		uint64_t key = mix64(SEED ^ (n << 32) ^ p), *w = b->mem + p * PAGE_SIZE / 8;

		for (size_t i = 0; i < PAGE_SIZE / 8; i++) {
			if (w[i] != key + i * STEP) {
				if (bad++ < 4)
					fprintf(stderr, "ha-bigblock: ERROR block %" PRIu64 " (pfn 0x%"
						PRIx64 ") page %zu word %zu: expected 0x%016" PRIx64
						", found 0x%016" PRIx64 "\n", n, b->pfn, p, i,
						key + i * STEP, w[i]);
				break;
			}
		}
	}
	return bad;
}

int main(int argc, char **argv)
{
	struct block *blocks;
	long long before, after;
	size_t n, order10 = 0;
	char line[64];
	int pagemap, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2 || !(n = strtoul(argv[1], NULL, 10))) {
		fprintf(stderr, "Usage: ha-bigblock N\n");
		return 2;
	}
	blocks = calloc(n, sizeof(*blocks));
	pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (!blocks || pagemap < 0) {
		printf("error setup: %s\n", strerror(errno));
		return 1;
	}
	before = llfree_value("llfree_install");
	for (size_t i = 0; i < n; i++) {
		int err = block_alloc(&blocks[i]);

		if (!err)
			err = block_pfns(pagemap, &blocks[i]);
		if (err) {
			printf("error block %zu: %s\n", i, strerror(-err));
			return 1;
		}
		block_fill(&blocks[i], i);
		order10 += blocks[i].order10;
		printf("block %zu pfn 0x%" PRIx64 " %s\n", i, blocks[i].pfn,
		       blocks[i].order10 ? "order10" : "scattered");
	}
	after = llfree_value("llfree_install");
	printf("ok blocks %zu order10 %zu llfree_install %lld -> %lld\n", n, order10, before, after);

	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "verify", 6)) {
			size_t bad = 0;

			for (size_t i = 0; i < n; i++)
				bad += block_verify(&blocks[i], i);
			if (bad) {
				failed = 1;
				printf("error %zu bad pages in %zu blocks\n", bad, n);
			} else {
				printf("ok verified %zu blocks\n", n);
			}
		} else if (!strncmp(line, "quit", 4)) {
			break;
		} else {
			printf("error unknown command (verify, quit)\n");
		}
	}
	for (size_t i = 0; i < n; i++) {
		munmap(blocks[i].mem, BLOCK_BYTES);
		close(blocks[i].fd);
	}
	printf("ok bye\n");
	return failed;
}
