// SPDX-License-Identifier: MIT
/*
 * hostlimit: the host's own limits for resizing a VM, measured in a plain
 * process. A VM can never be shrunk faster than the host discards memory,
 * nor grown-and-used faster than the host populates it; bench/resize.py
 * compares the resize devices with these numbers, measured in the same run.
 *
 * Memory kinds (each SIZE bytes, 2 MiB aligned):
 *
 *   anon-thp   private anonymous memory with MADV_HUGEPAGE: how QEMU backs
 *              guest RAM by default (-m, memory-backend-ram; QEMU advises
 *              MADV_HUGEPAGE on every RAM block); discarded by
 *              ram_block_discard_range() with MADV_DONTNEED
 *   anon-4k    the same with MADV_NOHUGEPAGE (THP off or unavailable)
 *   memfd      shared memory (memfd_create, MAP_SHARED): how QEMU backs RAM
 *              with memory-backend-memfd or share=on; discarded with
 *              fallocate(PUNCH_HOLE) (and here also MADV_REMOVE)
 *
 * Operations, each timed over the whole SIZE after every page was written
 * (discards) or discarded (populate):
 *
 *   discard-2M     one discard call per 2 MiB chunk (what a device does that
 *                  cannot merge adjacent frames)
 *   discard-merged one call for the whole range (the best case: adjacent
 *                  frames merged into one range)
 *   remove-2M      memfd only: MADV_REMOVE per 2 MiB chunk
 *   populate-2M    MADV_POPULATE_WRITE per 2 MiB chunk (what an install does),
 *                  of memory this process just discarded: the kernel hands the
 *                  same, recently used pages back
 *   populate-fresh the same on a new mapping that was never touched: pages the
 *                  kernel has not handed to this process before. When this
 *                  host is itself a VM, such pages may not be backed by the
 *                  outer hypervisor yet, and populating them costs its faults
 *                  too (measured once per rep, no warm-up)
 *   populate-reported  populate-2M after waiting REPORT_WAIT seconds with the
 *                  range discarded: on a host that is itself a VM with free
 *                  page reporting (virtio-balloon, page_reporting_order 9,
 *                  2 s delay), the freed 2 MiB pages are handed to the outer
 *                  hypervisor meanwhile, as happens to memory a VM gave back;
 *                  on bare metal it equals populate-2M (no warm-up)
 *
 * Every operation runs --reps times (after one warm-up round); the output
 * gives the median, minimum and maximum throughput in GiB/s, one CSV row per
 * (kind, operation) with --csv, and a table on stdout. The share of the
 * range backed by huge pages after touching is printed, because without THP
 * the limits are an order of magnitude lower.
 *
 * Usage: hostlimit [--size BYTES[K|M|G]] [--reps N] [--csv FILE] [--kinds LIST]
 * Exit status: 0 success, 1 a system call failed, 2 usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001u
#endif

#define CHUNK (2ul << 20)
#define PAGE 4096ul
#define GIB (1ul << 30)
#define MAX_REPS 101
#define REPORT_WAIT 3 /* s: Linux reports free pages 2 s after they were freed */

enum kind { ANON_THP, ANON_4K, MEMFD, NR_KINDS };
enum op { DISCARD_2M, DISCARD_MERGED, REMOVE_2M, POPULATE_2M, POPULATE_FRESH,
	  POPULATE_REPORTED, NR_OPS };

static const char *const kind_names[NR_KINDS] = { "anon-thp", "anon-4k", "memfd" };
static const char *const op_names[NR_OPS] = { "discard-2M", "discard-merged", "remove-2M",
					      "populate-2M", "populate-fresh",
					      "populate-reported" };

/* One mapping under test. */
struct region {
	enum kind kind;
	uint8_t *mem;
	size_t len;
	int fd; /* memfd, or -1 */
};

/* Prints a message with strerror(errno) and exits with status 1. */
__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "hostlimit: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Seconds on CLOCK_MONOTONIC. */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Maps a 2 MiB aligned region of len bytes of the given kind. */
static void region_map(struct region *r, enum kind kind, size_t len)
{
	size_t span = len + CHUNK;
	uint8_t *raw, *aligned;

	r->kind = kind;
	r->len = len;
	r->fd = -1;
	if (kind == MEMFD) {
		r->fd = memfd_create("hostlimit", MFD_CLOEXEC);
		if (r->fd < 0)
			die("memfd_create");
		if (ftruncate(r->fd, len))
			die("ftruncate");
	}
	/* reserve an aligned window, then place the real mapping in it */
	raw = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		die("mmap reserve");
	aligned = (uint8_t *)(((uintptr_t)raw + CHUNK - 1) & ~(CHUNK - 1));
	if (kind == MEMFD)
		r->mem = mmap(aligned, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->fd, 0);
	else
		r->mem = mmap(aligned, len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (r->mem == MAP_FAILED)
		die("mmap");
	if (aligned > raw)
		munmap(raw, aligned - raw);
	munmap(aligned + len, raw + span - (aligned + len));
	if (kind == ANON_THP && madvise(r->mem, len, MADV_HUGEPAGE))
		die("madvise(MADV_HUGEPAGE)");
	if (kind == ANON_4K && madvise(r->mem, len, MADV_NOHUGEPAGE))
		die("madvise(MADV_NOHUGEPAGE)");
}

static void region_unmap(struct region *r)
{
	munmap(r->mem, r->len);
	if (r->fd >= 0)
		close(r->fd);
}

/* Writes one word into every 4 KiB page, so every page is backed. */
static void region_touch(struct region *r, uint64_t gen)
{
	for (size_t off = 0; off < r->len; off += PAGE)
		*(volatile uint64_t *)(r->mem + off) = gen + off;
}

/* Discards the whole region (untimed), leaving nothing backed. */
static void region_drop(struct region *r)
{
	if (r->kind == MEMFD) {
		if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, r->len))
			die("fallocate(PUNCH_HOLE)");
	} else if (madvise(r->mem, r->len, MADV_DONTNEED)) {
		die("madvise(MADV_DONTNEED)");
	}
}

/* The discard of [off, off + len) with the kind's usual call. */
static void discard(struct region *r, size_t off, size_t len)
{
	if (r->kind == MEMFD) {
		if (fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len))
			die("fallocate(PUNCH_HOLE)");
	} else if (madvise(r->mem + off, len, MADV_DONTNEED)) {
		die("madvise(MADV_DONTNEED)");
	}
}

/* Percentage of the region backed by anonymous or shmem huge pages. */
static double huge_percent(const struct region *r)
{
	const char *key = r->kind == MEMFD ? "ShmemPmdMapped:" : "AnonHugePages:";
	char line[256];
	bool in = false;
	long kb = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		uintptr_t start, end;

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = start == (uintptr_t)r->mem;
			continue;
		}
		if (in && !strncmp(line, key, strlen(key)))
			kb = strtol(line + strlen(key), NULL, 10);
	}
	fclose(f);
	return 100.0 * kb * 1024 / r->len;
}

/* Times one operation over the whole region; returns seconds. The region
 * is prepared untimed: touched for discards, empty for populate. */
static double run_op(struct region *r, enum op op, uint64_t gen)
{
	double t0, t1;

	if (op == POPULATE_FRESH) {
		enum kind kind = r->kind;
		size_t len = r->len;

		region_unmap(r);
		region_map(r, kind, len);
	} else if (op == POPULATE_2M) {
		region_drop(r);
	} else if (op == POPULATE_REPORTED) {
		region_drop(r);
		sleep(REPORT_WAIT);
	}
	else
		region_touch(r, gen);
	t0 = now();
	switch (op) {
	case DISCARD_2M:
		for (size_t off = 0; off < r->len; off += CHUNK)
			discard(r, off, CHUNK);
		break;
	case DISCARD_MERGED:
		discard(r, 0, r->len);
		break;
	case REMOVE_2M:
		for (size_t off = 0; off < r->len; off += CHUNK)
			if (madvise(r->mem + off, CHUNK, MADV_REMOVE))
				die("madvise(MADV_REMOVE)");
		break;
	case POPULATE_2M:
	case POPULATE_FRESH:
	case POPULATE_REPORTED:
		for (size_t off = 0; off < r->len; off += CHUNK)
			if (madvise(r->mem + off, CHUNK, MADV_POPULATE_WRITE))
				die("madvise(MADV_POPULATE_WRITE)");
		break;
	default:
		break;
	}
	t1 = now();
	return t1 - t0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Parses a size with an optional K, M or G suffix; 0 on error. */
static size_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end || end == s)
		return 0;
	return (size_t)v;
}

static const char usage[] =
	"Usage: hostlimit [--size SIZE] [--reps N] [--csv FILE] [--kinds LIST]\n"
	"  --size SIZE   bytes per measurement, K/M/G suffix (default 1G, 2 MiB multiple)\n"
	"  --reps N      timed repetitions after one warm-up (default 5)\n"
	"  --csv FILE    write kind,op,size_bytes,reps,median,min,max GiB/s and huge %\n"
	"  --kinds LIST  comma-separated subset of anon-thp,anon-4k,memfd (default all)\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' }, { "reps", required_argument, NULL, 'r' },
		{ "csv", required_argument, NULL, 'c' },  { "kinds", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },	  { 0 },
	};
	bool want[NR_KINDS] = { true, true, true };
	const char *csv_path = NULL;
	size_t size = GIB;
	int reps = 5, c;
	FILE *csv = NULL;
	uint64_t gen = 1;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			size = parse_size(optarg);
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		case 'c':
			csv_path = optarg;
			break;
		case 'k': {
			char *copy = strdup(optarg), *save = NULL;

			memset(want, 0, sizeof(want));
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				int k;

				for (k = 0; k < NR_KINDS && strcmp(t, kind_names[k]); k++)
					;
				if (k == NR_KINDS) {
					fprintf(stderr, "hostlimit: unknown kind '%s'\n%s", t, usage);
					return 2;
				}
				want[k] = true;
			}
			free(copy);
			break;
		}
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind != argc || !size || size % CHUNK || reps < 1 || reps > MAX_REPS) {
		fputs(usage, stderr);
		return 2;
	}
	if (csv_path) {
		csv = fopen(csv_path, "w");
		if (!csv)
			die(csv_path);
		fprintf(csv, "kind,op,size_bytes,reps,median_gibs,min_gibs,max_gibs,huge_pct\n");
	}
	printf("hostlimit: %zu MiB per measurement, 1 warm-up + %d reps, 2 MiB chunks\n",
	       size >> 20, reps);
	printf("%-9s %-17s %10s %10s %10s %7s\n", "kind", "operation", "median", "min", "max",
	       "huge%");
	for (int k = 0; k < NR_KINDS; k++) {
		struct region r;
		double huge;

		if (!want[k])
			continue;
		region_map(&r, k, size);
		region_touch(&r, gen++);
		huge = huge_percent(&r);
		for (int op = 0; op < NR_OPS; op++) {
			double gibs[MAX_REPS];

			if (op == REMOVE_2M && k != MEMFD)
				continue;
			if (op != POPULATE_FRESH && op != POPULATE_REPORTED)
				run_op(&r, op, gen++); /* warm-up */
			for (int i = 0; i < reps; i++)
				gibs[i] = (double)size / GIB / run_op(&r, op, gen++);
			qsort(gibs, reps, sizeof(gibs[0]), cmp_double);
			printf("%-9s %-17s %6.1f GiB/s %6.1f %10.1f %6.0f%%\n", kind_names[k],
			       op_names[op], gibs[reps / 2], gibs[0], gibs[reps - 1], huge);
			if (csv)
				fprintf(csv, "%s,%s,%zu,%d,%.3f,%.3f,%.3f,%.1f\n", kind_names[k],
					op_names[op], size, reps, gibs[reps / 2], gibs[0],
					gibs[reps - 1], huge);
		}
		region_unmap(&r);
	}
	if (csv && fclose(csv))
		die(csv_path);
	return 0;
}
