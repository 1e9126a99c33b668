// SPDX-License-Identifier: MIT
/*
 * ha-thp: transparent huge page workloads for the guest kernel's tests.
 *
 *   ha-thp split SIZE   THP-backed memory (MADV_HUGEPAGE) that is then split:
 *                       every page written, one 4 KiB page of each 2 MiB
 *                       unmapped (splits the mapping and queues the THP for a
 *                       deferred split), all THPs split through debugfs
 *                       split_huge_pages, the rest verified; freed on exit
 *   ha-thp fault SIZE   touches SIZE of MADV_HUGEPAGE memory once and reports
 *                       how much came as THP and how long it took
 *
 * SIZE in MiB, or with a K, M or G suffix; rounded down to 2 MiB.
 * Prints one result line "ha-thp: ..."; exit 0 pass, 1 fail (data wrong or
 * a step failed), 77 if the kernel gave no THP to split (nothing tested).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define SPLIT_ALL "/sys/kernel/debug/split_huge_pages"

static unsigned long parse_size(const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	switch (*end) {
	case 'G':
	case 'g':
		v <<= 10;
		/* fall through */
	case 'M':
	case 'm':
	case '\0':
		v <<= 10;
		/* fall through */
	case 'K':
	case 'k':
		v <<= 10;
		break;
	default:
		return 0;
	}
	return v & ~(HUGE - 1);
}

/* SIZE bytes of anonymous memory aligned to 2 MiB, with MADV_HUGEPAGE */
static char *map_huge(unsigned long size)
{
	char *p = mmap(NULL, size + HUGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *start;

	if (p == MAP_FAILED) {
		perror("ha-thp: mmap");
		return NULL;
	}
	start = (char *)(((uintptr_t)p + HUGE - 1) & ~(HUGE - 1));
	if (start > p)
		munmap(p, start - p);
	munmap(start + size, p + HUGE - start);
	if (madvise(start, size, MADV_HUGEPAGE))
		perror("ha-thp: madvise(MADV_HUGEPAGE)");
	return start;
}

/* AnonHugePages of this process in KiB, or -1 */
static long anon_huge_kib(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

static uint64_t word_of(const char *base, const uint64_t *w)
{
	return ((uintptr_t)w - (uintptr_t)base) * 0x9e3779b97f4a7c15ULL + 1;
}

static void fill(char *base, unsigned long size)
{
	for (uint64_t *w = (uint64_t *)base; (char *)w < base + size; w++)
		*w = word_of(base, w);
}

/* Words that differ from the pattern, skipping the unmapped pages */
static unsigned long verify(char *base, unsigned long size)
{
	unsigned long bad = 0;

	for (unsigned long off = 0; off < size; off += PAGE) {
		if (off % HUGE == HUGE - PAGE)
			continue;
		for (uint64_t *w = (uint64_t *)(base + off);
		     (char *)w < base + off + PAGE; w++)
			bad += *w != word_of(base, w);
	}
	return bad;
}

static int split(unsigned long size)
{
	char *p = map_huge(size);
	long before, after;
	unsigned long bad;
	int fd;

	if (!p)
		return 1;
	fill(p, size);
	before = anon_huge_kib();
	if (before <= 0) {
		printf("ha-thp: split: no THP obtained (AnonHugePages %ld kB)\n",
		       before);
		return 77;
	}
	for (unsigned long off = HUGE - PAGE; off < size; off += HUGE) {
		if (munmap(p + off, PAGE)) {
			perror("ha-thp: munmap");
			return 1;
		}
	}
	fd = open(SPLIT_ALL, O_WRONLY);
	if (fd < 0 || write(fd, "1", 1) != 1) {
		fprintf(stderr, "ha-thp: %s: %s\n", SPLIT_ALL, strerror(errno));
		return 1;
	}
	close(fd);
	after = anon_huge_kib();
	bad = verify(p, size);
	printf("ha-thp: split: AnonHugePages %ld kB before, %ld kB after the split, %lu bad words\n",
	       before, after, bad);
	return bad || after != 0 ? 1 : 0;
}

static int fault(unsigned long size)
{
	struct timespec t0, t1;
	char *p = map_huge(size);

	if (!p)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned long off = 0; off < size; off += PAGE)
		p[off] = 1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("ha-thp: fault: %lu MiB touched in %.3f s, AnonHugePages %ld kB\n",
	       size >> 20,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
	       anon_huge_kib());
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long size = argc == 3 ? parse_size(argv[2]) : 0;

	if (size && !strcmp(argv[1], "split"))
		return split(size);
	if (size && !strcmp(argv[1], "fault"))
		return fault(size);
	fprintf(stderr, "usage: ha-thp split|fault SIZE\n");
	return 1;
}
