// SPDX-License-Identifier: MIT
/*
 * ha-mem: the guest memory workload of HyperAlloc's tests, demo and benchmarks.
 *
 *   stress     one worker process per online CPU, pinned, cycles through
 *              4 KiB anonymous pages, THP under fragmentation, tmpfs page
 *              cache and fork/COW churn; every page is filled and verified
 *   oom        a child allocates until the OOM killer ends it, verifying what
 *              it holds; then the parent checks that the system still works
 *   hold       keeps a verified pattern in memory and answers line commands
 *              on stdin (verify, fill, grow, shrink, free, status, quit)
 *   bandwidth  a STREAM-like copy loop that prints MB/s samples at a fixed
 *              interval, then checks the copy
 *   build      a build-like load: short-lived job processes read a source file,
 *              fill and verify anonymous memory, check and write an object file
 *
 * Integrity pattern. A 4 KiB page holds 512 64-bit words
 *
 *     word[i] = key + i * WORD_STEP,   key = mix64(base ^ tag * GOLDEN)
 *
 * base mixes the seed, the owner (worker and memory kind) and a generation
 * counter; tag is the page's virtual page number, or for page-cache pages the
 * file number and page offset. A page that was lost (reads zero), left stale
 * (holds the previous generation) or exchanged with another frame (holds some
 * other page's key) fails on every word. Every pattern page satisfies
 * word[1] - word[0] == WORD_STEP, so a report can tell such a "foreign
 * pattern" from random corruption.
 *
 * Sizes: a number with an optional binary unit K, M, G or T (a bare number
 * means MiB), or "P%" of MemTotal. Sizes are rounded down to whole pages.
 *
 * Output: results and progress on stdout, integrity errors on stderr as
 * "ha-mem: ERROR ...". Each line is one write(2), so lines of concurrent
 * workers do not interleave and forked children never touch stdio locks.
 * Exit status: 0 success, 1 integrity error or failed check, 2 usage error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096ul
#define PAGE_WORDS (PAGE_SIZE / sizeof(uint64_t))
#define HUGE_SIZE (2ul << 20)
#define MIB (1ul << 20)
#define WORD_STEP UINT64_C(0x9e3779b97f4a7c15) /* odd: words of a page all differ */
#define GOLDEN UINT64_C(0xbf58476d1ce4e5b9)
#define TMPFS_MAGIC_NR 0x01021994
#define RAMFS_MAGIC_NR 0x858458f6
#define EXIT_USAGE 2
#define THP_ENABLED "/sys/kernel/mm/transparent_hugepage/enabled"

/* Detailed integrity reports a process prints before it only counts. */
#define MAX_REPORTS 16

static const char *prog = "ha-mem";

/* ---------------------------------------------------------------- output */

/* Writes one formatted line (prefix "ha-mem: ") to fd with a single write. */
static void vsay(int fd, const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];
	int n = snprintf(buf, sizeof(buf), "%s: %s", prog, prefix);
	int m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);

	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(fd, buf + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += w;
	}
}

/* Prints an information line on stdout. */
__attribute__((format(printf, 1, 2))) static void info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(STDOUT_FILENO, "", fmt, ap);
	va_end(ap);
}

/* Prints an error line (an integrity error or a failed check) on stderr. */
__attribute__((format(printf, 1, 2))) static void error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(STDERR_FILENO, "ERROR ", fmt, ap);
	va_end(ap);
}

/* Prints a usage error and exits with EXIT_USAGE. */
__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsay(STDERR_FILENO, "", fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try '%s --help'.\n", prog);
	exit(EXIT_USAGE);
}

/* ------------------------------------------------------------- utilities */

/* Seconds on the monotonic clock. */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds since the epoch on the wall clock. */
static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Sleeps for the given seconds (restarting after signals). */
static void sleep_s(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The splitmix64 finalizer: a bijective 64-bit mixer. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Returns the next number of a splitmix64 generator. */
static uint64_t rng_next(uint64_t *state)
{
	*state += WORD_STEP;
	return mix64(*state);
}

/* Returns a field of /proc/meminfo in KiB, or -1 if it is missing. */
static long long meminfo_kb(const char *field)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	size_t len = strlen(field);
	long long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, len) && line[len] == ':') {
			kb = strtoll(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

/* Returns a counter of /proc/vmstat, or -1 if it is missing. */
static long long vmstat_value(const char *name)
{
	FILE *f = fopen("/proc/vmstat", "re");
	char line[256];
	size_t len = strlen(name);
	long long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, name, len) && line[len] == ' ') {
			v = strtoll(line + len + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/* Returns AnonHugePages of this process in bytes, or 0 if unknown. */
static uint64_t anon_huge_bytes(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "re");
	char line[256];
	uint64_t kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "AnonHugePages:", 14)) {
			kb = strtoull(line + 14, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb * 1024;
}

/* Writes a string to a sysfs/procfs file; returns 0 or -errno. */
static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* Returns the THP mode ("always", "madvise", "never") or "unavailable". */
static const char *thp_mode(void)
{
	static char mode[32];
	char buf[128] = "";
	int fd = open(THP_ENABLED, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	char *l, *r;

	if (fd < 0)
		return "unavailable";
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	l = strchr(buf, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!r || r - l - 1 >= (ptrdiff_t)sizeof(mode))
		return "unavailable";
	memcpy(mode, l + 1, r - l - 1);
	mode[r - l - 1] = '\0';
	return mode;
}

/* Frees the page cache and slab caches so MemFree can be compared. */
static void drop_caches(void)
{
	sync();
	write_file("/proc/sys/vm/drop_caches", "3");
}

/*
 * Parses a size (see the header comment) into bytes, rounded down to pages.
 * Returns 0, or -1 if s is malformed, zero or MemTotal is unknown.
 */
static int parse_size(const char *s, uint64_t *bytes)
{
	char *end;
	double v = strtod(s, &end);
	double mul = MIB;

	if (end == s || v <= 0)
		return -1;
	if (*end == '%') {
		long long kb = meminfo_kb("MemTotal");

		if (kb <= 0 || end[1] || v > 1000)
			return -1;
		mul = kb * 1024.0 / 100.0;
	} else if (*end) {
		switch (*end) {
		case 'k': case 'K': mul = 1ul << 10; break;
		case 'm': case 'M': mul = 1ul << 20; break;
		case 'g': case 'G': mul = 1ul << 30; break;
		case 't': case 'T': mul = 1ull << 40; break;
		default: return -1;
		}
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B')
			end++;
		if (*end)
			return -1;
	}
	if (v * mul >= 0x1p62)
		return -1;
	*bytes = (uint64_t)(v * mul) & ~(PAGE_SIZE - 1);
	return *bytes ? 0 : -1;
}

/* Parses a size option or exits with a usage error naming the option. */
static uint64_t size_arg(const char *opt, const char *s)
{
	uint64_t bytes;

	if (parse_size(s, &bytes))
		usage_error("invalid size for %s: '%s'", opt, s);
	return bytes;
}

/* Parses a non-negative number option or exits with a usage error. */
static double num_arg(const char *opt, const char *s, double max)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0 || v > max)
		usage_error("invalid value for %s: '%s'", opt, s);
	return v;
}

/* Parses a 64-bit seed (decimal or 0x hex) or exits with a usage error. */
static uint64_t seed_arg(const char *s)
{
	char *end;
	uint64_t v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (end == s || *end || errno)
		usage_error("invalid seed '%s'", s);
	return v;
}

/* A seed from the clock and pid, for runs without --seed. */
static uint64_t default_seed(void)
{
	return mix64((uint64_t)(wall_s() * 1e9) ^ ((uint64_t)getpid() << 32));
}

/* Maps len bytes of private anonymous memory; returns NULL on failure. */
static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * Maps len bytes (a multiple of HUGE_SIZE) at a 2 MiB aligned address, so
 * that every 2 MiB of it can be a transparent huge page. Returns NULL on
 * failure; release with munmap(p, len).
 */
static void *map_anon_aligned(size_t len)
{
	uint8_t *raw = map_anon(len + HUGE_SIZE);
	uintptr_t start, head, tail;

	if (!raw)
		return NULL;
	start = ((uintptr_t)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1);
	head = start - (uintptr_t)raw;
	tail = HUGE_SIZE - head;
	if (head)
		munmap(raw, head);
	if (tail)
		munmap((void *)(start + len), tail);
	return (void *)start;
}

/* Pins the calling thread to one CPU; returns 0 or -errno. */
static int pin_to_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

/* Fills cpus[] with the CPUs this process may run on; returns how many. */
static int allowed_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set)) {
		cpus[0] = 0;
		return 1;
	}
	for (int c = 0; c < CPU_SETSIZE && n < max; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n ? n : 1;
}

/* Sets this process's oom_score_adj; returns 0 or -errno. */
static int set_oom_score_adj(int adj)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "%d", adj);
	return write_file("/proc/self/oom_score_adj", buf);
}

/* Describes a wait status ("exit 0", "signal 9 (Killed)"). */
static const char *describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "status 0x%x", status);
	return buf;
}

/* ------------------------------------------------------ integrity pattern */

/* The pattern base of one owner (worker and memory kind) and generation. */
static uint64_t pattern_base(uint64_t seed, uint32_t owner, uint32_t gen)
{
	return mix64(seed ^ mix64(((uint64_t)owner << 32) | gen));
}

/* The key (word 0) of the page with the given tag under a pattern base. */
static inline uint64_t page_key(uint64_t base, uint64_t tag)
{
	return mix64(base ^ (tag * GOLDEN));
}

/* The tag of an anonymous page: its virtual page number. */
static inline uint64_t addr_tag(const void *p)
{
	return (uintptr_t)p / PAGE_SIZE;
}

/* Writes the pattern of key into one page. */
static inline void fill_page(uint64_t *p, uint64_t key)
{
	for (size_t i = 0; i < PAGE_WORDS; i++)
		p[i] = key + i * WORD_STEP;
}

/* Returns whether one page holds the pattern of key (branch-free loop). */
static inline bool page_matches(const uint64_t *p, uint64_t key)
{
	uint64_t diff = 0;

	for (size_t i = 0; i < PAGE_WORDS; i++)
		diff |= p[i] ^ (key + i * WORD_STEP);
	return diff == 0;
}

/* Returns whether one page reads as zeros. */
static inline bool page_is_zero(const uint64_t *p)
{
	uint64_t any = 0;

	for (size_t i = 0; i < PAGE_WORDS; i++)
		any |= p[i];
	return any == 0;
}

/*
 * Verification context of one region: names it in reports, counts the bad
 * pages and the verified bytes. Reports are capped per process (MAX_REPORTS).
 */
struct verifier {
	char what[160];          /* e.g. "anon worker 1 gen 4" */
	uint64_t bad_pages;      /* pages that failed so far */
	uint64_t verified_bytes; /* bytes checked so far */
};

static unsigned reports_printed;

/* Starts a verification context named by a format string. */
__attribute__((format(printf, 2, 3))) static void verifier_init(struct verifier *v,
								 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v->what, sizeof(v->what), fmt, ap);
	va_end(ap);
	v->bad_pages = 0;
	v->verified_bytes = 0;
}

/* Renames a verification context, keeping its counts. */
__attribute__((format(printf, 2, 3))) static void verifier_rename(struct verifier *v,
								   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v->what, sizeof(v->what), fmt, ap);
	va_end(ap);
}

/*
 * Reports one bad page. where is the page's address (or file offset, when
 * unit is "offset"); key is what word 0 should be, stale_key the key of the
 * previous generation (0 if none), zero whether zeros were expected.
 */
static void report_page(struct verifier *v, const uint64_t *p, uint64_t where,
			const char *unit, uint64_t key, uint64_t stale_key, bool zero)
{
	size_t first = PAGE_WORDS, nbad = 0;
	const char *hint;
	char foreign[64];

	v->bad_pages++;
	if (reports_printed > MAX_REPORTS)
		return;
	if (reports_printed++ == MAX_REPORTS) {
		error("%s: further bad pages are counted, not shown", v->what);
		return;
	}
	for (size_t i = 0; i < PAGE_WORDS; i++) {
		uint64_t want = zero ? 0 : key + i * WORD_STEP;

		if (p[i] != want) {
			nbad++;
			if (first == PAGE_WORDS)
				first = i;
		}
	}
	if (nbad == 0) /* changed back while we looked */
		first = 0;
	if (!zero && page_is_zero(p)) {
		hint = "page reads as zeros (lost)";
	} else if (!zero && stale_key && page_matches(p, stale_key)) {
		hint = "page holds the previous generation (stale)";
	} else if (page_matches(p, p[0])) {
		snprintf(foreign, sizeof(foreign), "page holds another page's pattern, key 0x%016" PRIx64,
			 p[0]);
		hint = foreign;
	} else {
		hint = nbad == PAGE_WORDS ? "whole page corrupted" : "partly corrupted";
	}
	error("%s: page at %s 0x%" PRIx64 ", word %zu (%s 0x%" PRIx64 "): expected 0x%016" PRIx64
	      ", found 0x%016" PRIx64 "; %zu of %zu words bad; %s",
	      v->what, unit, where, first, unit, where + first * 8,
	      zero ? 0 : key + first * WORD_STEP, p[first], nbad, PAGE_WORDS, hint);
}

/*
 * Fills npages pages starting at mem with the pattern of base, every stride-th
 * page beginning with page `first`.
 */
static void fill_range(void *mem, size_t npages, size_t first, size_t stride, uint64_t base)
{
	for (size_t i = first; i < npages; i += stride) {
		uint64_t *p = (uint64_t *)((uint8_t *)mem + i * PAGE_SIZE);

		fill_page(p, page_key(base, addr_tag(p)));
	}
}

/* Verifies pages filled by fill_range(); returns the number of bad pages. */
static uint64_t verify_range(struct verifier *v, const void *mem, size_t npages, size_t first,
			     size_t stride, uint64_t base, uint64_t stale_base)
{
	uint64_t bad = v->bad_pages;

	for (size_t i = first; i < npages; i += stride) {
		const uint64_t *p = (const uint64_t *)((const uint8_t *)mem + i * PAGE_SIZE);
		uint64_t key = page_key(base, addr_tag(p));

		if (!page_matches(p, key))
			report_page(v, p, (uintptr_t)p, "address", key,
				    stale_base ? page_key(stale_base, addr_tag(p)) : 0, false);
		v->verified_bytes += PAGE_SIZE;
	}
	return v->bad_pages - bad;
}

/* Verifies that one page reads as zeros (after MADV_DONTNEED). */
static void verify_zero_page(struct verifier *v, const void *page)
{
	if (!page_is_zero(page))
		report_page(v, page, (uintptr_t)page, "address", 0, 0, true);
	v->verified_bytes += PAGE_SIZE;
}

/* Checks words 0, 511 and one in between of every page (a fast sample). */
static void sample_range(struct verifier *v, const void *mem, size_t npages, uint64_t base)
{
	for (size_t i = 0; i < npages; i++) {
		const uint64_t *p = (const uint64_t *)((const uint8_t *)mem + i * PAGE_SIZE);
		uint64_t key = page_key(base, addr_tag(p));
		size_t mid = 1 + (i * 7) % (PAGE_WORDS - 2);

		if (p[0] != key || p[mid] != key + mid * WORD_STEP ||
		    p[PAGE_WORDS - 1] != key + (PAGE_WORDS - 1) * WORD_STEP)
			report_page(v, p, (uintptr_t)p, "address", key, 0, false);
	}
}

/* ---------------------------------------------------------------- stress */

enum phase { PHASE_ANON, PHASE_THP, PHASE_FILE, PHASE_FORK, NR_PHASES };

static const char *const phase_names[NR_PHASES] = { "anon", "thp", "file", "fork" };

/* Counters of one worker, in memory shared by the workers and their children. */
struct worker_stats {
	_Atomic uint64_t verified;   /* bytes verified */
	_Atomic uint64_t bad_pages;  /* integrity errors */
	_Atomic uint64_t failures;   /* failed system calls or children */
	_Atomic uint64_t rounds;     /* completed rounds of all phases */
	_Atomic uint64_t thp_wanted; /* bytes mapped with MADV_HUGEPAGE */
	_Atomic uint64_t thp_got;    /* of which AnonHugePages after the fill */
	_Atomic uint64_t file_bytes; /* bytes written to page-cache files */
	_Atomic uint64_t forks;      /* children forked */
	_Atomic int phase;           /* current phase, -1 when done */
	char pad[64];
};

/* What every worker of a stress run needs to know. */
struct stress {
	uint64_t seed;
	uint64_t budget;      /* bytes per worker */
	double deadline;      /* monotonic seconds; rounds stop after it */
	uint64_t max_rounds;  /* 0: as many as fit before the deadline */
	unsigned phases;      /* bit mask of enum phase */
	bool thp;             /* THP available (mode is not "never") */
	bool inject;          /* damage one page on purpose (--inject-error) */
	const char *dir;      /* where the page-cache files go */
	struct worker_stats *stats;
};

/* One worker's state during a phase. */
struct worker {
	const struct stress *st;
	unsigned id;
	uint32_t gen;        /* generation counter, advanced by every fill */
	uint64_t rng;
	struct worker_stats *stats;
};

/* Adds a verifier's counts to the worker's shared counters. */
static void account(struct worker *w, const struct verifier *v)
{
	atomic_fetch_add(&w->stats->verified, v->verified_bytes);
	atomic_fetch_add(&w->stats->bad_pages, v->bad_pages);
}

/* Counts a failed system call of a worker and reports it. */
__attribute__((format(printf, 2, 3))) static void worker_fail(struct worker *w,
							     const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	atomic_fetch_add(&w->stats->failures, 1);
	error("worker %u: %s", w->id, buf);
}

/* Returns a fresh pattern base of the worker for a memory kind. */
static uint64_t next_base(struct worker *w, enum phase kind, uint32_t *gen)
{
	*gen = ++w->gen;
	return pattern_base(w->st->seed, (w->id << 8) | kind, *gen);
}

/*
 * 4 KiB anonymous pages: fill and verify the whole budget, release a random
 * half with MADV_DONTNEED (it must read back as zeros), refill that half with
 * a new generation, verify everything again.
 */
static void phase_anon(struct worker *w)
{
	size_t len = w->st->budget, npages = len / PAGE_SIZE;
	uint8_t *mem = map_anon(len), *freed;
	uint64_t base, base2;
	uint32_t gen, gen2;
	struct verifier v;

	if (!mem) {
		worker_fail(w, "anon: mmap %zu MiB: %s", len / MIB, strerror(errno));
		return;
	}
	freed = calloc(npages, 1);
	if (!freed) {
		worker_fail(w, "anon: out of heap memory");
		munmap(mem, len);
		return;
	}
	madvise(mem, len, MADV_NOHUGEPAGE);
	base = next_base(w, PHASE_ANON, &gen);
	verifier_init(&v, "anon worker %u gen %u", w->id, gen);
	fill_range(mem, npages, 0, 1, base);
	if (w->st->inject && w->id == 0 && w->gen == 1)
		((uint64_t *)mem)[3] ^= 1u << 5;
	verify_range(&v, mem, npages, 0, 1, base, 0);

	for (size_t i = 0; i < npages; i++) {
		if (rng_next(&w->rng) & 1)
			continue;
		freed[i] = 1;
		if (madvise(mem + i * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED)) {
			worker_fail(w, "anon: madvise DONTNEED: %s", strerror(errno));
			break;
		}
	}
	base2 = next_base(w, PHASE_ANON, &gen2);
	for (size_t i = 0; i < npages; i++) {
		uint64_t *p = (uint64_t *)(mem + i * PAGE_SIZE);

		if (freed[i]) {
			verify_zero_page(&v, p);
			fill_page(p, page_key(base2, addr_tag(p)));
		}
	}
	verifier_rename(&v, "anon worker %u gen %u/%u", w->id, gen, gen2);
	for (size_t i = 0; i < npages; i++) {
		const uint64_t *p = (const uint64_t *)(mem + i * PAGE_SIZE);

		verify_range(&v, p, 1, 0, 1, freed[i] ? base2 : base, freed[i] ? base : 0);
	}
	account(w, &v);
	free(freed);
	munmap(mem, len);
}

/*
 * THP under fragmentation: fill half the budget with 4 KiB pages and release
 * every other one, so free memory is scattered; then fill the other half as
 * 2 MiB aligned MADV_HUGEPAGE memory (order-9 allocations) and count how much
 * became huge. Verify both; then punch one 4 KiB hole into every 2 MiB (this
 * splits the huge pages) and verify again.
 */
static void phase_thp(struct worker *w)
{
	size_t frag_len = (w->st->budget / 2) & ~(PAGE_SIZE - 1);
	size_t huge_len = (w->st->budget / 2) & ~(HUGE_SIZE - 1);
	size_t frag_pages = frag_len / PAGE_SIZE, huge_pages = huge_len / PAGE_SIZE;
	uint8_t *frag, *huge;
	uint64_t fbase, hbase, before, got;
	uint32_t fgen, hgen;
	struct verifier v;

	frag = map_anon(frag_len);
	huge = map_anon_aligned(huge_len);
	if (!frag || !huge) {
		worker_fail(w, "thp: mmap %zu MiB: %s", (frag_len + huge_len) / MIB, strerror(errno));
		goto out;
	}
	madvise(frag, frag_len, MADV_NOHUGEPAGE);
	fbase = next_base(w, PHASE_THP, &fgen);
	fill_range(frag, frag_pages, 0, 1, fbase);
	for (size_t i = 1; i < frag_pages; i += 2)
		madvise(frag + i * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED);

	if (w->st->thp && madvise(huge, huge_len, MADV_HUGEPAGE))
		worker_fail(w, "thp: madvise HUGEPAGE: %s", strerror(errno));
	hbase = next_base(w, PHASE_THP, &hgen);
	before = anon_huge_bytes();
	fill_range(huge, huge_pages, 0, 1, hbase);
	got = anon_huge_bytes();
	got = got > before ? got - before : 0;
	atomic_fetch_add(&w->stats->thp_wanted, huge_len);
	atomic_fetch_add(&w->stats->thp_got, got < huge_len ? got : huge_len);

	verifier_init(&v, "thp worker %u gen %u", w->id, hgen);
	verify_range(&v, huge, huge_pages, 0, 1, hbase, 0);
	verifier_rename(&v, "thp-fragment worker %u gen %u", w->id, fgen);
	verify_range(&v, frag, frag_pages, 0, 2, fbase, 0);

	verifier_rename(&v, "thp-split worker %u gen %u", w->id, hgen);
	for (size_t h = 0; h < huge_len / HUGE_SIZE; h++) {
		size_t hole = h * (HUGE_SIZE / PAGE_SIZE) + rng_next(&w->rng) % (HUGE_SIZE / PAGE_SIZE);
		uint8_t *page = huge + hole * PAGE_SIZE;

		if (madvise(page, PAGE_SIZE, MADV_DONTNEED)) {
			worker_fail(w, "thp: madvise DONTNEED: %s", strerror(errno));
			break;
		}
		verify_zero_page(&v, page);
		verify_range(&v, huge + h * HUGE_SIZE, hole - h * (HUGE_SIZE / PAGE_SIZE), 0, 1, hbase, 0);
		verify_range(&v, page + PAGE_SIZE,
			     (h + 1) * (HUGE_SIZE / PAGE_SIZE) - hole - 1, 0, 1, hbase, 0);
	}
	account(w, &v);
out:
	if (frag)
		munmap(frag, frag_len);
	if (huge)
		munmap(huge, huge_len);
}

/* Fills a buffer of n pages with the pattern of file pages first.. (tag from file). */
static void fill_file_pages(uint64_t *buf, size_t n, uint64_t base, uint64_t file_tag, uint64_t first)
{
	for (size_t i = 0; i < n; i++)
		fill_page(buf + i * PAGE_WORDS, page_key(base, file_tag + first + i));
}

/* Verifies n file pages read into buf, reporting file offsets. */
static void verify_file_pages(struct verifier *v, const uint64_t *buf, size_t n, uint64_t base,
			      uint64_t file_tag, uint64_t first)
{
	for (size_t i = 0; i < n; i++) {
		const uint64_t *p = buf + i * PAGE_WORDS;
		uint64_t key = page_key(base, file_tag + first + i);

		if (!page_matches(p, key))
			report_page(v, p, (first + i) * PAGE_SIZE, "offset", key, 0, false);
		v->verified_bytes += PAGE_SIZE;
	}
}

#define FILE_CHUNK_PAGES 16
#define FILES_PER_ROUND 4

/*
 * Page cache: write FILES_PER_ROUND pattern files (half the budget, so all
 * workers together stay under tmpfs's default limit of half the RAM), read
 * them back with pread, verify them through a shared mapping while rewriting
 * every third page through it, read again, truncate to half, read the rest,
 * delete.
 */
static void phase_file(struct worker *w)
{
	uint64_t *buf = malloc(FILE_CHUNK_PAGES * PAGE_SIZE);
	size_t fpages = w->st->budget / 2 / FILES_PER_ROUND / PAGE_SIZE;
	size_t written[FILES_PER_ROUND] = { 0 };
	int fds[FILES_PER_ROUND];
	char paths[FILES_PER_ROUND][PATH_MAX];
	uint64_t base, base2;
	uint32_t gen, gen2;
	struct verifier v;

	if (!buf) {
		worker_fail(w, "file: out of heap memory");
		return;
	}
	if (fpages == 0)
		fpages = 1;
	base = next_base(w, PHASE_FILE, &gen);
	base2 = next_base(w, PHASE_FILE, &gen2);
	for (int f = 0; f < FILES_PER_ROUND; f++) {
		snprintf(paths[f], sizeof(paths[f]), "%s/ha-mem.%d.%d", w->st->dir, (int)getpid(), f);
		fds[f] = open(paths[f], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fds[f] < 0)
			worker_fail(w, "file: create %s: %s", paths[f], strerror(errno));
	}
	/* Write all files first, so their pages interleave in memory. */
	for (int f = 0; f < FILES_PER_ROUND; f++) {
		uint64_t tag = (uint64_t)(f + 1) << 40;

		for (size_t pg = 0; fds[f] >= 0 && pg < fpages; pg += FILE_CHUNK_PAGES) {
			size_t n = fpages - pg < FILE_CHUNK_PAGES ? fpages - pg : FILE_CHUNK_PAGES;
			ssize_t r;

			fill_file_pages(buf, n, base, tag, pg);
			r = pwrite(fds[f], buf, n * PAGE_SIZE, pg * PAGE_SIZE);
			if (r != (ssize_t)(n * PAGE_SIZE)) {
				/* A full tmpfs is not an integrity error: verify what fits. */
				if (r < 0 && errno != ENOSPC)
					worker_fail(w, "file: write %s: %s", paths[f], strerror(errno));
				break;
			}
			written[f] = pg + n;
		}
		atomic_fetch_add(&w->stats->file_bytes, written[f] * PAGE_SIZE);
	}
	verifier_init(&v, "file worker %u gen %u", w->id, gen);
	for (int f = 0; f < FILES_PER_ROUND; f++) {
		uint64_t tag = (uint64_t)(f + 1) << 40;

		verifier_rename(&v, "file %s gen %u (pread)", paths[f], gen);
		for (size_t pg = 0; pg < written[f]; pg += FILE_CHUNK_PAGES) {
			size_t n = written[f] - pg < FILE_CHUNK_PAGES ? written[f] - pg : FILE_CHUNK_PAGES;

			if (pread(fds[f], buf, n * PAGE_SIZE, pg * PAGE_SIZE) != (ssize_t)(n * PAGE_SIZE)) {
				worker_fail(w, "file: read %s: %s", paths[f], strerror(errno));
				break;
			}
			verify_file_pages(&v, buf, n, base, tag, pg);
		}
	}
	for (int f = 0; f < FILES_PER_ROUND; f++) {
		uint64_t tag = (uint64_t)(f + 1) << 40;
		size_t len = written[f] * PAGE_SIZE;
		uint64_t *map;

		if (!len)
			continue;
		map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[f], 0);
		if (map == MAP_FAILED) {
			worker_fail(w, "file: mmap %s: %s", paths[f], strerror(errno));
			continue;
		}
		verifier_rename(&v, "file %s gen %u (mapped)", paths[f], gen);
		for (size_t pg = 0; pg < written[f]; pg++) {
			uint64_t *p = map + pg * PAGE_WORDS;

			verify_file_pages(&v, p, 1, base, tag, pg);
			if (pg % 3 == 0)
				fill_page(p, page_key(base2, tag + pg));
		}
		if (msync(map, len, MS_SYNC))
			worker_fail(w, "file: msync %s: %s", paths[f], strerror(errno));
		munmap(map, len);

		verifier_rename(&v, "file %s gen %u/%u (after mapped writes)", paths[f], gen,
			 gen2);
		for (size_t pg = 0; pg < written[f]; pg++) {
			if (pread(fds[f], buf, PAGE_SIZE, pg * PAGE_SIZE) != (ssize_t)PAGE_SIZE) {
				worker_fail(w, "file: read %s: %s", paths[f], strerror(errno));
				break;
			}
			verify_file_pages(&v, buf, 1, pg % 3 ? base : base2, tag, pg);
		}
		/* Truncation frees the tail's pages; the head must stay intact. */
		if (ftruncate(fds[f], (written[f] / 2) * PAGE_SIZE)) {
			worker_fail(w, "file: truncate %s: %s", paths[f], strerror(errno));
			continue;
		}
		verifier_rename(&v, "file %s gen %u/%u (after truncate)", paths[f], gen, gen2);
		for (size_t pg = 0; pg < written[f] / 2; pg++) {
			if (pread(fds[f], buf, PAGE_SIZE, pg * PAGE_SIZE) != (ssize_t)PAGE_SIZE) {
				worker_fail(w, "file: read %s: %s", paths[f], strerror(errno));
				break;
			}
			verify_file_pages(&v, buf, 1, pg % 3 ? base : base2, tag, pg);
		}
		if (pread(fds[f], buf, PAGE_SIZE, (written[f] / 2) * PAGE_SIZE) != 0)
			worker_fail(w, "file: %s: data after truncation", paths[f]);
	}
	account(w, &v);
	for (int f = 0; f < FILES_PER_ROUND; f++) {
		if (fds[f] < 0)
			continue;
		close(fds[f]);
		if (unlink(paths[f]))
			worker_fail(w, "file: unlink %s: %s", paths[f], strerror(errno));
	}
	free(buf);
}

#define FORK_WAVES 2
#define FORK_KIDS 4
#define FORK_CHURN 8

/*
 * Body of a fork-phase child: checks the inherited region (sampled), writes
 * its share of it (copy-on-write makes these pages its own) with its own
 * generation and verifies them, touches and verifies fresh memory, exits 0
 * or 1. Only async-signal-safe calls (and our write-based output) are used.
 */
static __attribute__((noreturn)) void fork_child(struct worker *w, uint8_t *shared, size_t shared_pages,
						 uint64_t base, unsigned kid, size_t fresh_len)
{
	uint64_t cbase = pattern_base(w->st->seed, (w->id << 8) | PHASE_FORK | 0x80,
				      w->gen * 64 + kid + 1);
	struct verifier v;
	uint8_t *fresh;

	verifier_init(&v, "fork worker %u child %u inherited gen %u", w->id, kid, w->gen);
	sample_range(&v, shared, shared_pages, base);
	fill_range(shared, shared_pages, kid, FORK_KIDS, cbase);
	verifier_rename(&v, "fork worker %u child %u copy-on-write", w->id, kid);
	verify_range(&v, shared, shared_pages, kid, FORK_KIDS, cbase, base);
	fresh = fresh_len ? map_anon(fresh_len) : NULL;
	if (fresh) {
		verifier_rename(&v, "fork worker %u child %u fresh", w->id, kid);
		fill_range(fresh, fresh_len / PAGE_SIZE, 0, 1, cbase);
		verify_range(&v, fresh, fresh_len / PAGE_SIZE, 0, 1, cbase, 0);
	} else if (fresh_len) {
		atomic_fetch_add(&w->stats->failures, 1);
		error("worker %u child %u: mmap %zu MiB: %s", w->id, kid, fresh_len / MIB,
		      strerror(errno));
	}
	atomic_fetch_add(&w->stats->verified, v.verified_bytes);
	atomic_fetch_add(&w->stats->bad_pages, v.bad_pages);
	_exit(v.bad_pages || (fresh_len && !fresh) ? 1 : 0);
}

/* Waits for one child of the fork phase and counts a failure if it failed. */
static void reap_child(struct worker *w, pid_t pid)
{
	char desc[64];
	int status;

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			worker_fail(w, "fork: waitpid: %s", strerror(errno));
			return;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		worker_fail(w, "fork: child %d ended with %s", (int)pid,
			    describe_status(status, desc, sizeof(desc)));
}

/*
 * fork/exit churn: fill a quarter of the budget, then in FORK_WAVES waves
 * fork FORK_KIDS children at once (fork_child) and afterwards check that the
 * parent's copy is unchanged; then FORK_CHURN quick children that touch a
 * few pages and exit.
 */
static void phase_fork(struct worker *w)
{
	size_t shared_len = (w->st->budget / 4) & ~(PAGE_SIZE - 1);
	size_t fresh_len = (w->st->budget / 16) & ~(PAGE_SIZE - 1);
	size_t shared_pages = shared_len / PAGE_SIZE;
	uint8_t *shared = map_anon(shared_len);
	uint64_t base;
	uint32_t gen;
	struct verifier v;
	pid_t pids[FORK_KIDS];

	if (!shared) {
		worker_fail(w, "fork: mmap %zu MiB: %s", shared_len / MIB, strerror(errno));
		return;
	}
	base = next_base(w, PHASE_FORK, &gen);
	fill_range(shared, shared_pages, 0, 1, base);
	verifier_init(&v, "fork worker %u parent gen %u", w->id, gen);
	for (int wave = 0; wave < FORK_WAVES; wave++) {
		int n = 0;

		for (unsigned kid = 0; kid < FORK_KIDS; kid++) {
			pid_t pid = fork();

			if (pid == 0)
				fork_child(w, shared, shared_pages, base, kid, fresh_len);
			if (pid < 0) {
				worker_fail(w, "fork: %s", strerror(errno));
				break;
			}
			pids[n++] = pid;
			atomic_fetch_add(&w->stats->forks, 1);
		}
		for (int i = 0; i < n; i++)
			reap_child(w, pids[i]);
		verify_range(&v, shared, shared_pages, 0, 1, base, 0);
	}
	for (int i = 0; i < FORK_CHURN; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			uint8_t *p = map_anon(64 * PAGE_SIZE);
			uint64_t cbase = base ^ (uint64_t)(i + 1);
			struct verifier cv;

			if (!p)
				_exit(1);
			verifier_init(&cv, "fork worker %u churn child %d", w->id, i);
			fill_range(p, 64, 0, 1, cbase);
			verify_range(&cv, p, 64, 0, 1, cbase, 0);
			sample_range(&cv, shared, shared_pages, base);
			atomic_fetch_add(&w->stats->bad_pages, cv.bad_pages);
			_exit(cv.bad_pages ? 1 : 0);
		}
		if (pid < 0) {
			worker_fail(w, "fork: %s", strerror(errno));
			break;
		}
		atomic_fetch_add(&w->stats->forks, 1);
		reap_child(w, pid);
	}
	account(w, &v);
	munmap(shared, shared_len);
}

/* A worker process: runs rounds of all enabled phases, each round starting
 * at a different phase per worker so that the kinds of memory mix. */
static __attribute__((noreturn)) void stress_worker(const struct stress *st, unsigned id, int cpu)
{
	struct worker w = {
		.st = st, .id = id, .rng = st->seed ^ mix64(id + 1), .stats = &st->stats[id],
	};
	static void (*const run[NR_PHASES])(struct worker *) = {
		phase_anon, phase_thp, phase_file, phase_fork,
	};

	if (pin_to_cpu(cpu))
		error("worker %u: cannot pin to CPU %d: %s", id, cpu, strerror(errno));
	for (uint64_t round = 0;; round++) {
		for (int k = 0; k < NR_PHASES; k++) {
			int phase = (k + id) % NR_PHASES;

			if (!(st->phases & (1u << phase)))
				continue;
			if (round > 0 && now_s() >= st->deadline)
				goto done;
			atomic_store(&w.stats->phase, phase);
			run[phase](&w);
		}
		atomic_fetch_add(&w.stats->rounds, 1);
		if (now_s() >= st->deadline || (st->max_rounds && round + 1 >= st->max_rounds))
			break;
	}
done:
	atomic_store(&w.stats->phase, -1);
	_exit(atomic_load(&w.stats->bad_pages) || atomic_load(&w.stats->failures) ? 1 : 0);
}

/* The counters of all workers added up. */
struct totals {
	uint64_t verified, bad_pages, failures, rounds, thp_wanted, thp_got, file_bytes, forks;
};

/* Adds up the counters of n workers. */
static struct totals collect(struct worker_stats *stats, int n)
{
	struct totals t = { 0 };

	for (int i = 0; i < n; i++) {
		t.verified += atomic_load(&stats[i].verified);
		t.bad_pages += atomic_load(&stats[i].bad_pages);
		t.failures += atomic_load(&stats[i].failures);
		t.rounds += atomic_load(&stats[i].rounds);
		t.thp_wanted += atomic_load(&stats[i].thp_wanted);
		t.thp_got += atomic_load(&stats[i].thp_got);
		t.file_bytes += atomic_load(&stats[i].file_bytes);
		t.forks += atomic_load(&stats[i].forks);
	}
	return t;
}

/* Parses a comma-separated phase list into a bit mask; -1 if invalid. */
static int parse_phases(const char *s)
{
	char copy[128], *tok, *save;
	int mask = 0;

	if (strlen(s) >= sizeof(copy))
		return -1;
	strcpy(copy, s);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int found = -1;

		if (!strcmp(tok, "all"))
			return (1 << NR_PHASES) - 1;
		for (int p = 0; p < NR_PHASES; p++)
			if (!strcmp(tok, phase_names[p]))
				found = p;
		if (found < 0)
			return -1;
		mask |= 1 << found;
	}
	return mask ? mask : -1;
}

static const char stress_help[] =
	"Usage: ha-mem stress [options]\n"
	"Fills and verifies memory on every CPU: one pinned worker process per CPU\n"
	"runs rounds of the phases anon (4 KiB pages, partial MADV_DONTNEED), thp\n"
	"(MADV_HUGEPAGE after fragmenting memory, then splitting), file (tmpfs page\n"
	"cache: write, read, shared mapping, truncate) and fork (copy-on-write children\n"
	"and fork/exit churn). Every round of a worker uses SIZE/workers bytes.\n"
	"\n"
	"  -s, --size SIZE       memory in use at once, all workers (default 50%)\n"
	"  -d, --duration S      start no new round after S seconds (default 10);\n"
	"                        every worker completes at least one round\n"
	"  -r, --rounds N        stop after N rounds (default: as the duration allows)\n"
	"  -w, --workers N       number of workers (default: one per allowed CPU)\n"
	"  -p, --phases LIST     comma-separated phases, or all (default all)\n"
	"      --dir DIR         directory for page-cache files (default /tmp)\n"
	"      --seed N          pattern and random seed (default from the clock)\n"
	"      --timeout S       fail if the workers take longer (default duration+600)\n"
	"      --progress S      print progress every S seconds (default 10, 0 off)\n"
	"      --enable-thp      if THP is off (the kernel turns it off below 512 MiB of\n"
	"                        RAM), set it to madvise for the run\n"
	"      --inject-error    flip a bit in worker 0's first page (tests the checker)\n"
	"      --drop-caches     drop the page and slab caches before and after, so the\n"
	"                        MemFree values in the summary can be compared (a leak\n"
	"                        shows as a lower MemFree after)\n"
	"\n"
	"Prints 'ha-mem: stress ok: N MiB verified, N rounds, 0 errors' and exits 0,\n"
	"or reports every error and exits 1.\n";

static int cmd_stress(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, 'd' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "workers", required_argument, NULL, 'w' },
		{ "phases", required_argument, NULL, 'p' },
		{ "dir", required_argument, NULL, 'D' },
		{ "seed", required_argument, NULL, 'S' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "progress", required_argument, NULL, 'P' },
		{ "drop-caches", no_argument, NULL, 'C' },
		{ "enable-thp", no_argument, NULL, 'E' },
		{ "inject-error", no_argument, NULL, 'I' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct stress st = { .phases = (1u << NR_PHASES) - 1, .dir = "/tmp" };
	uint64_t size = 0;
	double duration = 10, timeout = -1, progress = 10, start, next_progress, deadline_hard;
	int nworkers = 0, cpus[CPU_SETSIZE], ncpus, c, running, failed_workers = 0;
	bool have_seed = false, drop = false, enable_thp = false, thp_enabled = false;
	pid_t *pids;
	long long free_before, free_after;
	struct statfs sfs;
	const char *fstype = "other";
	char phases[64] = "";

	while ((c = getopt_long(argc, argv, "s:d:r:w:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': size = size_arg("--size", optarg); break;
		case 'd': duration = num_arg("--duration", optarg, 1e7); break;
		case 'r': st.max_rounds = (uint64_t)num_arg("--rounds", optarg, 1e12); break;
		case 'w': nworkers = (int)num_arg("--workers", optarg, CPU_SETSIZE); break;
		case 'p':
			if (parse_phases(optarg) < 0)
				usage_error("invalid --phases '%s' (anon,thp,file,fork or all)", optarg);
			st.phases = parse_phases(optarg);
			break;
		case 'D': st.dir = optarg; break;
		case 'S': st.seed = seed_arg(optarg); have_seed = true; break;
		case 'T': timeout = num_arg("--timeout", optarg, 1e7); break;
		case 'P': progress = num_arg("--progress", optarg, 1e7); break;
		case 'C': drop = true; break;
		case 'E': enable_thp = true; break;
		case 'I': st.inject = true; break;
		case 'h': fputs(stress_help, stdout); return 0;
		default: usage_error("stress: invalid option");
		}
	}
	if (optind != argc)
		usage_error("stress: unexpected argument '%s'", argv[optind]);
	if (!size && parse_size("50%", &size))
		usage_error("stress: cannot read MemTotal; give --size");
	if (!have_seed)
		st.seed = default_seed();
	ncpus = allowed_cpus(cpus, CPU_SETSIZE);
	if (nworkers == 0)
		nworkers = ncpus;
	st.budget = (size / nworkers) & ~(4 * MIB - 1);
	if (st.budget < 4 * MIB)
		st.budget = 4 * MIB;
	if (enable_thp && !strcmp(thp_mode(), "never")) {
		if (write_file(THP_ENABLED, "madvise"))
			info("stress: cannot enable THP: %s", strerror(errno));
		else
			thp_enabled = true;
	}
	st.thp = strcmp(thp_mode(), "never") && strcmp(thp_mode(), "unavailable");
	if (timeout < 0)
		timeout = duration + 600;
	if (statfs(st.dir, &sfs) == 0)
		fstype = sfs.f_type == TMPFS_MAGIC_NR ? "tmpfs" :
			 sfs.f_type == RAMFS_MAGIC_NR ? "ramfs" : "not tmpfs";
	for (int p = 0; p < NR_PHASES; p++)
		if (st.phases & (1u << p))
			snprintf(phases + strlen(phases), sizeof(phases) - strlen(phases), "%s%s",
				 phases[0] ? "," : "", phase_names[p]);

	st.stats = mmap(NULL, nworkers * sizeof(*st.stats), PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pids = calloc(nworkers, sizeof(*pids));
	if (st.stats == MAP_FAILED || !pids) {
		error("stress: out of memory for the worker table");
		return 1;
	}
	if (drop)
		drop_caches();
	free_before = meminfo_kb("MemFree");
	info("stress: seed 0x%016" PRIx64 ", %d workers x %" PRIu64 " MiB, %.0f s, phases %s, "
	     "THP %s%s, files in %s (%s), MemTotal %lld MiB, MemFree %lld MiB",
	     st.seed, nworkers, st.budget / MIB, duration, phases, thp_mode(),
	     thp_enabled ? " (enabled for the run)" : "", st.dir, fstype,
	     meminfo_kb("MemTotal") / 1024, free_before / 1024);

	start = now_s();
	st.deadline = start + duration;
	deadline_hard = start + timeout;
	for (int i = 0; i < nworkers; i++) {
		atomic_store(&st.stats[i].phase, -2);
		pids[i] = fork();
		if (pids[i] == 0)
			stress_worker(&st, i, cpus[i % ncpus]);
		if (pids[i] < 0) {
			error("stress: fork worker %d: %s", i, strerror(errno));
			failed_workers++;
		}
	}
	running = nworkers - failed_workers;
	next_progress = progress > 0 ? start + progress : 1e300;
	while (running > 0) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid > 0) {
			for (int i = 0; i < nworkers; i++) {
				int ph = atomic_load(&st.stats[i].phase);
				char desc[64];

				if (pids[i] != pid)
					continue;
				running--;
				pids[i] = 0;
				if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
					failed_workers++;
					error("stress: worker %d (CPU %d) ended with %s%s%s", i,
					      cpus[i % ncpus], describe_status(status, desc, sizeof(desc)),
					      ph >= 0 ? " in phase " : "", ph >= 0 ? phase_names[ph] : "");
				}
			}
			continue;
		}
		if (now_s() >= deadline_hard) {
			for (int i = 0; i < nworkers; i++) {
				int ph = atomic_load(&st.stats[i].phase);

				if (pids[i] <= 0)
					continue;
				error("stress: worker %d still running after %.0f s (phase %s); killing it",
				      i, timeout, ph >= 0 ? phase_names[ph] : "none");
				kill(pids[i], SIGKILL);
			}
			deadline_hard = 1e300;
		}
		if (now_s() >= next_progress) {
			struct totals t = collect(st.stats, nworkers);

			info("stress: %.0f s: %" PRIu64 " MiB verified, %" PRIu64 " rounds, %" PRIu64
			     " errors, MemFree %lld MiB",
			     now_s() - start, t.verified / MIB, t.rounds, t.bad_pages,
			     meminfo_kb("MemFree") / 1024);
			next_progress += progress;
		}
		sleep_s(0.05);
	}

	struct totals t = collect(st.stats, nworkers);
	double elapsed = now_s() - start;

	if (thp_enabled)
		write_file(THP_ENABLED, "never");

	if (drop)
		drop_caches();
	free_after = meminfo_kb("MemFree");
	info("stress: %.1f s, %" PRIu64 " forks, %" PRIu64 " MiB page cache written, THP %" PRIu64
	     " of %" PRIu64 " MiB (%.0f%%), MemFree %lld -> %lld MiB",
	     elapsed, t.forks, t.file_bytes / MIB, t.thp_got / MIB, t.thp_wanted / MIB,
	     t.thp_wanted ? 100.0 * t.thp_got / t.thp_wanted : 0.0, free_before / 1024,
	     free_after / 1024);
	if (t.bad_pages || t.failures || failed_workers) {
		info("stress FAILED: %" PRIu64 " MiB verified, %" PRIu64 " rounds, %" PRIu64
		     " errors, %" PRIu64 " failed operations, %d failed workers",
		     t.verified / MIB, t.rounds, t.bad_pages, t.failures, failed_workers);
		return 1;
	}
	info("stress ok: %" PRIu64 " MiB verified, %" PRIu64 " rounds, 0 errors", t.verified / MIB,
	     t.rounds);
	return 0;
}

/* ------------------------------------------------------------------- oom */

/* Progress of the oom child, in memory shared with the parent. */
struct oom_state {
	_Atomic uint64_t allocated; /* bytes mapped and filled */
	_Atomic uint64_t verified;  /* bytes verified */
	_Atomic uint64_t bad_pages;
};

/*
 * The oom child: maps and fills step-sized chunks until mmap fails or limit
 * is reached (the OOM killer usually ends it first). After every chunk it
 * samples one earlier chunk; whenever the total doubles it verifies all.
 * Exits 0 (mmap failed or limit reached, all verified), 1 (integrity error).
 */
static __attribute__((noreturn)) void oom_child(struct oom_state *os, uint64_t seed, size_t step,
						uint64_t limit)
{
	size_t max_chunks = limit / step + 1, n = 0;
	uint8_t **chunks = calloc(max_chunks, sizeof(*chunks));
	uint64_t base = pattern_base(seed, 0x00f0, 1), next_full = 2 * step, rng = seed;
	struct verifier v;

	if (set_oom_score_adj(1000))
		error("oom: cannot set oom_score_adj of the child: %s", strerror(errno));
	if (!chunks)
		_exit(1);
	verifier_init(&v, "oom child");
	while (n < max_chunks && (uint64_t)(n + 1) * step <= limit) {
		uint8_t *c = map_anon(step);

		if (!c)
			break;
		chunks[n++] = c;
		fill_range(c, step / PAGE_SIZE, 0, 1, base);
		atomic_store(&os->allocated, (uint64_t)n * step);
		sample_range(&v, chunks[rng_next(&rng) % n], step / PAGE_SIZE, base);
		if ((uint64_t)n * step >= next_full) {
			for (size_t i = 0; i < n; i++)
				verify_range(&v, chunks[i], step / PAGE_SIZE, 0, 1, base, 0);
			atomic_store(&os->verified, v.verified_bytes);
			next_full *= 2;
		}
		atomic_store(&os->bad_pages, v.bad_pages);
	}
	info("oom: child stopped at %zu MiB (%s), verifying all", n * step / MIB,
	     n * step + step > limit ? "limit reached" : strerror(errno));
	v.verified_bytes = 0;
	for (size_t i = 0; i < n; i++)
		verify_range(&v, chunks[i], step / PAGE_SIZE, 0, 1, base, 0);
	atomic_store(&os->verified, v.verified_bytes);
	atomic_store(&os->bad_pages, v.bad_pages);
	_exit(v.bad_pages ? 1 : 0);
}

/* Allocates, fills and verifies len bytes in this process; returns bad pages or -1. */
static long long health_check(uint64_t seed, size_t len)
{
	uint8_t *p = map_anon(len);
	uint64_t base = pattern_base(seed, 0x00f1, 1);
	struct verifier v;

	if (!p)
		return -1;
	verifier_init(&v, "oom health check");
	fill_range(p, len / PAGE_SIZE, 0, 1, base);
	verify_range(&v, p, len / PAGE_SIZE, 0, 1, base, 0);
	munmap(p, len);
	return (long long)v.bad_pages;
}

static const char oom_help[] =
	"Usage: ha-mem oom [options]\n"
	"A child process (oom_score_adj 1000) maps and fills memory in steps until the\n"
	"OOM killer ends it or mmap fails, verifying what it holds as it goes (all of it\n"
	"whenever the total doubles). The parent (oom_score_adj -1000) then checks that\n"
	"the child died by SIGKILL or stopped cleanly with intact memory, and that the\n"
	"system still works: it fills and verifies a region itself and in a child.\n"
	"\n"
	"  -t, --step SIZE       allocation step (default 4M)\n"
	"  -l, --limit SIZE      stop without OOM at this size (default 2x MemTotal +\n"
	"                        SwapTotal; reaching it without swap is a failure)\n"
	"  -c, --check SIZE      size of the health check after the OOM (default 16M)\n"
	"      --timeout S       fail if the child runs longer (default 900)\n"
	"      --seed N          pattern seed (default from the clock)\n"
	"\n"
	"Prints 'ha-mem: oom ok: ...' and exits 0, or exits 1.\n";

static int cmd_oom(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "step", required_argument, NULL, 't' },
		{ "limit", required_argument, NULL, 'l' },
		{ "check", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "seed", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t step = 4 * MIB, limit = 0, check = 16 * MIB, seed = 0;
	double timeout = 900, start;
	bool have_seed = false, ok = true, killed = false;
	long long mem_total = meminfo_kb("MemTotal"), swap = meminfo_kb("SwapTotal");
	long long oom_kills_before = vmstat_value("oom_kill"), oom_kills;
	struct oom_state *os;
	char desc[64];
	int c, status, child_status;
	pid_t pid;

	while ((c = getopt_long(argc, argv, "t:l:c:h", opts, NULL)) != -1) {
		switch (c) {
		case 't': step = size_arg("--step", optarg); break;
		case 'l': limit = size_arg("--limit", optarg); break;
		case 'c': check = size_arg("--check", optarg); break;
		case 'T': timeout = num_arg("--timeout", optarg, 1e7); break;
		case 'S': seed = seed_arg(optarg); have_seed = true; break;
		case 'h': fputs(oom_help, stdout); return 0;
		default: usage_error("oom: invalid option");
		}
	}
	if (optind != argc)
		usage_error("oom: unexpected argument '%s'", argv[optind]);
	if (!have_seed)
		seed = default_seed();
	if (!limit) {
		if (mem_total <= 0)
			usage_error("oom: cannot read MemTotal; give --limit");
		limit = ((uint64_t)mem_total * 2 + (swap > 0 ? (uint64_t)swap : 0)) * 1024;
	}
	if (set_oom_score_adj(-1000))
		info("oom: cannot protect the parent (oom_score_adj -1000): %s", strerror(errno));
	os = mmap(NULL, sizeof(*os), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (os == MAP_FAILED) {
		error("oom: mmap: %s", strerror(errno));
		return 1;
	}
	info("oom: seed 0x%016" PRIx64 ", step %" PRIu64 " MiB, limit %" PRIu64 " MiB, MemTotal %lld MiB, "
	     "MemAvailable %lld MiB, THP %s", seed, step / MIB, limit / MIB, mem_total / 1024,
	     meminfo_kb("MemAvailable") / 1024, thp_mode());
	start = now_s();
	pid = fork();
	if (pid < 0) {
		error("oom: fork: %s", strerror(errno));
		return 1;
	}
	if (pid == 0)
		oom_child(os, seed, step, limit);
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			error("oom: waitpid: %s", strerror(errno));
			return 1;
		}
		if (now_s() - start > timeout && !killed) {
			error("oom: child still running after %.0f s with %" PRIu64 " MiB; killing it",
			      timeout, atomic_load(&os->allocated) / MIB);
			kill(pid, SIGKILL);
			killed = true;
			ok = false;
		}
		sleep_s(0.02);
	}
	child_status = status;
	oom_kills = vmstat_value("oom_kill");
	describe_status(status, desc, sizeof(desc));
	info("oom: child ended with %s after %.1f s: %" PRIu64 " MiB allocated (%.0f%% of MemTotal), "
	     "%" PRIu64 " MiB verified, oom_kill %+lld",
	     desc, now_s() - start, atomic_load(&os->allocated) / MIB,
	     mem_total > 0 ? 100.0 * atomic_load(&os->allocated) / (mem_total * 1024.0) : 0.0,
	     atomic_load(&os->verified) / MIB,
	     oom_kills >= 0 && oom_kills_before >= 0 ? oom_kills - oom_kills_before : 0);
	if (atomic_load(&os->bad_pages)) {
		error("oom: the child found %" PRIu64 " bad pages", atomic_load(&os->bad_pages));
		ok = false;
	}
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
		if (!killed && oom_kills >= 0 && oom_kills == oom_kills_before)
			info("oom: SIGKILL without an oom_kill event in /proc/vmstat");
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		if (atomic_load(&os->allocated) + step > limit && swap <= 0) {
			error("oom: reached the limit of %" PRIu64 " MiB without swap and without OOM",
			      limit / MIB);
			ok = false;
		}
	} else {
		error("oom: child ended with %s; expected SIGKILL or exit 0", desc);
		ok = false;
	}

	/* The system must still work: memory in this process and in a child. */
	long long bad = health_check(seed, check);

	if (bad != 0) {
		error("oom: health check of %" PRIu64 " MiB: %s", check / MIB,
		      bad < 0 ? strerror(errno) : "bad pages");
		ok = false;
	}
	pid = fork();
	if (pid == 0)
		_exit(health_check(seed ^ 1, check) == 0 ? 0 : 1);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
		error("oom: health check in a child failed (%s)",
		      pid < 0 ? strerror(errno) : describe_status(status, desc, sizeof(desc)));
		ok = false;
	}
	if (!ok) {
		info("oom FAILED");
		return 1;
	}
	info("oom ok: child %s after %" PRIu64 " MiB, memory intact; system healthy (%" PRIu64
	     " MiB verified after), MemAvailable %lld MiB",
	     WIFSIGNALED(child_status) ? "killed by SIGKILL" : "stopped cleanly",
	     atomic_load(&os->allocated) / MIB, 2 * check / MIB, meminfo_kb("MemAvailable") / 1024);
	return 0;
}

/* ------------------------------------------------------------------ hold */

/* One mapping of the hold command; the pattern follows each page's address. */
struct chunk {
	uint8_t *mem;
	size_t len;
	uint32_t gen;
};

/* The memory held by the hold command. */
struct hold {
	struct chunk *chunks;
	size_t n, cap;
	uint64_t seed;
	uint32_t gen;      /* generation of the next fill */
	int thp;           /* 1 MADV_HUGEPAGE, -1 MADV_NOHUGEPAGE, 0 default */
	bool failed;       /* a verify found bad pages */
};

/* Returns the bytes held. */
static uint64_t hold_size(const struct hold *h)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < h->n; i++)
		sum += h->chunks[i].len;
	return sum;
}

/* Maps, advises and fills a new chunk of len bytes; returns 0 or -errno. */
static int hold_grow(struct hold *h, size_t len)
{
	struct chunk *c;
	uint8_t *mem;

	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 16;
		struct chunk *nc = realloc(h->chunks, cap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		h->chunks = nc;
		h->cap = cap;
	}
	mem = len % HUGE_SIZE == 0 ? map_anon_aligned(len) : map_anon(len);
	if (!mem)
		return -errno;
	if (h->thp)
		madvise(mem, len, h->thp > 0 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	c = &h->chunks[h->n++];
	*c = (struct chunk){ .mem = mem, .len = len, .gen = h->gen };
	fill_range(mem, len / PAGE_SIZE, 0, 1, pattern_base(h->seed, 0x00f2, c->gen));
	return 0;
}

/* Releases len bytes from the end of the held memory. */
static void hold_shrink(struct hold *h, size_t len)
{
	while (len && h->n) {
		struct chunk *c = &h->chunks[h->n - 1];

		if (c->len <= len) {
			munmap(c->mem, c->len);
			len -= c->len;
			h->n--;
		} else {
			munmap(c->mem + c->len - len, len);
			c->len -= len;
			len = 0;
		}
	}
}

/* Verifies all held memory; returns the number of bad pages. */
static uint64_t hold_verify(struct hold *h, uint64_t *first_bad)
{
	struct verifier v;

	reports_printed = 0;
	verifier_init(&v, "hold");
	*first_bad = 0;
	for (size_t i = 0; i < h->n; i++) {
		const struct chunk *c = &h->chunks[i];
		uint64_t base = pattern_base(h->seed, 0x00f2, c->gen);
		uint64_t stale = c->gen ? pattern_base(h->seed, 0x00f2, c->gen - 1) : 0;

		for (size_t pg = 0; pg < c->len / PAGE_SIZE; pg++) {
			if (verify_range(&v, c->mem + pg * PAGE_SIZE, 1, 0, 1, base, stale) && !*first_bad)
				*first_bad = (uintptr_t)(c->mem + pg * PAGE_SIZE);
		}
	}
	return v.bad_pages;
}

/* Prints one answer line of the hold protocol on stdout. */
__attribute__((format(printf, 1, 2))) static void answer(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDOUT_FILENO, buf, n) < 0)
		exit(1);
}

static const char hold_help[] =
	"Usage: ha-mem hold [options] SIZE\n"
	"Maps SIZE of anonymous memory, fills it with the pattern, prints\n"
	"'ok holding N MiB' and then answers commands, one line each, read from stdin:\n"
	"  verify          check all held memory: 'ok verified N MiB in T s' or\n"
	"                  'error N bad pages of M MiB, first at 0xADDR' (details on stderr)\n"
	"  fill            rewrite all held memory with a new generation\n"
	"  grow SIZE       map and fill SIZE more\n"
	"  shrink SIZE     release SIZE from the end\n"
	"  free            release everything\n"
	"  status          'ok size N MiB gen G MemFree N MiB'\n"
	"  quit            exit (also at end of input)\n"
	"  corrupt         damage 2 held pages on purpose (tests of the checker)\n"
	"Answers start with 'ok ' or 'error '. Exits 1 if any verify failed.\n"
	"\n"
	"      --thp         advise MADV_HUGEPAGE (2 MiB aligned chunks)\n"
	"      --no-thp      advise MADV_NOHUGEPAGE\n"
	"      --seed N      pattern seed (default from the clock)\n";

static int cmd_hold(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "thp", no_argument, NULL, 'H' },
		{ "no-thp", no_argument, NULL, 'N' },
		{ "seed", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct hold h = { 0 };
	bool have_seed = false;
	char line[256];
	uint64_t size;
	int c, err;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'H': h.thp = 1; break;
		case 'N': h.thp = -1; break;
		case 'S': h.seed = seed_arg(optarg); have_seed = true; break;
		case 'h': fputs(hold_help, stdout); return 0;
		default: usage_error("hold: invalid option");
		}
	}
	if (optind + 1 != argc)
		usage_error("hold: expected one SIZE argument");
	size = size_arg("SIZE", argv[optind]);
	if (!have_seed)
		h.seed = default_seed();
	err = hold_grow(&h, size);
	if (err) {
		answer("error cannot map %" PRIu64 " MiB: %s", size / MIB, strerror(-err));
		return 1;
	}
	answer("ok holding %" PRIu64 " MiB", hold_size(&h) / MIB);

	while (fgets(line, sizeof(line), stdin)) {
		char cmd[32] = "", arg[64] = "";
		int n = sscanf(line, "%31s %63s", cmd, arg);
		uint64_t bytes, first;

		if (n <= 0)
			continue;
		if (!strcmp(cmd, "verify")) {
			double t = now_s();
			uint64_t bad = hold_verify(&h, &first);

			if (bad) {
				h.failed = true;
				answer("error %" PRIu64 " bad pages of %" PRIu64 " MiB, first at 0x%" PRIx64,
				       bad, hold_size(&h) / MIB, first);
			} else {
				answer("ok verified %" PRIu64 " MiB in %.3f s", hold_size(&h) / MIB,
				       now_s() - t);
			}
		} else if (!strcmp(cmd, "fill")) {
			h.gen++;
			for (size_t i = 0; i < h.n; i++) {
				h.chunks[i].gen = h.gen;
				fill_range(h.chunks[i].mem, h.chunks[i].len / PAGE_SIZE, 0, 1,
					   pattern_base(h.seed, 0x00f2, h.gen));
			}
			answer("ok filled %" PRIu64 " MiB gen %u", hold_size(&h) / MIB, h.gen);
		} else if (!strcmp(cmd, "grow") || !strcmp(cmd, "shrink")) {
			if (n != 2 || parse_size(arg, &bytes)) {
				answer("error usage: %s SIZE", cmd);
				continue;
			}
			if (cmd[0] == 'g') {
				err = hold_grow(&h, bytes);
				if (err) {
					answer("error cannot map %" PRIu64 " MiB: %s", bytes / MIB,
					       strerror(-err));
					continue;
				}
			} else {
				hold_shrink(&h, bytes);
			}
			answer("ok size %" PRIu64 " MiB", hold_size(&h) / MIB);
		} else if (!strcmp(cmd, "free")) {
			hold_shrink(&h, hold_size(&h));
			answer("ok size 0 MiB");
		} else if (!strcmp(cmd, "status")) {
			answer("ok size %" PRIu64 " MiB gen %u MemFree %lld MiB", hold_size(&h) / MIB,
			       h.gen, meminfo_kb("MemFree") / 1024);
		} else if (!strcmp(cmd, "corrupt")) {
			struct chunk *last = h.n ? &h.chunks[h.n - 1] : NULL;
			uint8_t *lost, *flipped;

			if (!last || last->len < 2 * PAGE_SIZE) {
				answer("error corrupt needs at least 2 pages in the last chunk");
				continue;
			}
			lost = last->mem;
			flipped = last->mem + last->len - PAGE_SIZE;
			madvise(lost, PAGE_SIZE, MADV_DONTNEED);
			((uint64_t *)flipped)[7] ^= 1;
			answer("ok corrupted 2 pages: lost 0x%" PRIxPTR ", flipped a bit at 0x%" PRIxPTR,
			       (uintptr_t)lost, (uintptr_t)flipped + 56);
		} else if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit")) {
			answer("ok bye");
			break;
		} else {
			answer("error unknown command '%s' (verify, fill, grow, shrink, free, status, quit)",
			       cmd);
		}
	}
	return h.failed ? 1 : 0;
}

/* ----------------------------------------------------------------- build */

/*
 * A build-like workload for the automatic-reclamation benchmarks: "compile
 * jobs" are short-lived child processes, at most --jobs at once, started until
 * --count jobs ran or --duration has passed. A job
 *
 *   1. reads one source file of --src (job number modulo the files, so the
 *      page cache holds the sources after the first pass),
 *   2. maps SIZE bytes of anonymous memory, SIZE = min + (max - min) * u^3
 *      for a uniform u (most jobs small, a few large like a link step), fills
 *      it with the pattern, verifies it,
 *   3. checks the object file the previous job of its slot (job number modulo
 *      --objects) wrote into --out, then writes its own (dirty page cache),
 *   4. exits: all its anonymous memory goes back to the kernel at once.
 *
 * Slots live in shared memory: a busy flag (a job that finds its slot busy
 * skips step 3) and the generation whose pattern the object file holds.
 */
#define BUILD_MAX_SOURCES 4096
#define BUILD_OWNER_ANON 0xb0000000u
#define BUILD_OWNER_OBJ 0xb1000000u

struct build_slot {
	atomic_uint busy; /* a job is checking or writing this object */
	uint32_t gen;     /* generation the file holds, 0: none yet */
};

struct build_shared {
	atomic_ullong anon_bytes;   /* anonymous bytes filled and verified */
	atomic_ullong source_bytes; /* bytes read from sources */
	atomic_ullong obj_checked;  /* object files verified */
	atomic_ullong bad_pages;    /* integrity errors of all jobs */
	struct build_slot slots[];
};

struct build {
	const char *src, *out;
	char *sources[BUILD_MAX_SOURCES];
	unsigned nsources, objects, jobs;
	uint64_t min, max, obj_size, seed;
	struct build_shared *sh;
};

/* Reads a whole file in 1 MiB chunks through the page cache; returns bytes or -1. */
static long long build_read_source(const char *path, uint8_t *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	long long total = 0;
	ssize_t n;

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf, MIB)) > 0)
		total += n;
	close(fd);
	return n < 0 ? -1 : total;
}

/* Verifies the object file of a slot against generation gen; returns bad pages or -1. */
static long long build_check_object(const struct build *b, const char *path, unsigned slot,
				    uint32_t gen, uint64_t *buf)
{
	uint64_t base = pattern_base(b->seed, BUILD_OWNER_OBJ | slot, gen);
	size_t chunk = MIB / PAGE_SIZE, pages = b->obj_size / PAGE_SIZE;
	struct verifier v;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	verifier_init(&v, "build object %u gen %u", slot, gen);
	for (size_t first = 0; first < pages; first += chunk) {
		size_t n = pages - first < chunk ? pages - first : chunk;

		if (pread(fd, buf, n * PAGE_SIZE, first * PAGE_SIZE) != (ssize_t)(n * PAGE_SIZE)) {
			error("build object %u: short read at page %zu", slot, first);
			close(fd);
			return -1;
		}
		verify_file_pages(&v, buf, n, base, 0, first);
	}
	close(fd);
	return (long long)v.bad_pages;
}

/* Writes the object file of a slot with the pattern of generation gen; returns 0 or -1. */
static int build_write_object(const struct build *b, const char *path, unsigned slot,
			      uint32_t gen, uint64_t *buf)
{
	uint64_t base = pattern_base(b->seed, BUILD_OWNER_OBJ | slot, gen);
	size_t chunk = MIB / PAGE_SIZE, pages = b->obj_size / PAGE_SIZE;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return -1;
	for (size_t first = 0; first < pages; first += chunk) {
		size_t n = pages - first < chunk ? pages - first : chunk;

		fill_file_pages(buf, n, base, 0, first);
		if (write(fd, buf, n * PAGE_SIZE) != (ssize_t)(n * PAGE_SIZE)) {
			close(fd);
			return -1;
		}
	}
	return close(fd);
}

/* One compile job (a child process): steps 1-4 above. Exit 0 ok, 1 error. */
static __attribute__((noreturn)) void build_job(const struct build *b, uint64_t job)
{
	struct build_shared *sh = b->sh;
	uint64_t rng = b->seed ^ mix64(job + 1);
	double u = (rng_next(&rng) >> 11) * 0x1p-53;
	size_t len = (b->min + (size_t)((b->max - b->min) * u * u * u) + HUGE_SIZE - 1) &
		     ~(HUGE_SIZE - 1);
	unsigned slot = job % b->objects;
	uint64_t base = pattern_base(b->seed, BUILD_OWNER_ANON, (uint32_t)job);
	uint64_t *buf = malloc(MIB);
	char path[PATH_MAX];
	struct verifier v;
	long long n;
	uint8_t *mem;
	int failed = 0;

	set_oom_score_adj(1000); /* under memory pressure a job dies, not the driver */
	if (!buf)
		_exit(1);
	if (b->nsources) {
		n = build_read_source(b->sources[job % b->nsources], (uint8_t *)buf);
		if (n < 0) {
			error("build job %" PRIu64 ": cannot read %s: %s", job,
			      b->sources[job % b->nsources], strerror(errno));
			_exit(1);
		}
		atomic_fetch_add(&sh->source_bytes, (unsigned long long)n);
	}

	mem = map_anon_aligned(len);
	if (!mem) {
		error("build job %" PRIu64 ": cannot map %zu MiB", job, len / MIB);
		_exit(1);
	}
	verifier_init(&v, "build job %" PRIu64 " anon", job);
	fill_range(mem, len / PAGE_SIZE, 0, 1, base);
	verify_range(&v, mem, len / PAGE_SIZE, 0, 1, base, 0);
	atomic_fetch_add(&sh->anon_bytes, (unsigned long long)len);

	snprintf(path, sizeof(path), "%s/obj-%04u.o", b->out, slot);
	if (!atomic_exchange(&sh->slots[slot].busy, 1)) {
		uint32_t gen = sh->slots[slot].gen;

		if (gen) {
			n = build_check_object(b, path, slot, gen, buf);
			if (n < 0) {
				error("build object %u: cannot check %s: %s", slot, path, strerror(errno));
				failed = 1;
			} else if (n > 0) {
				atomic_fetch_add(&sh->bad_pages, (unsigned long long)n);
			} else {
				atomic_fetch_add(&sh->obj_checked, 1);
			}
		}
		if (build_write_object(b, path, slot, gen + 1, buf)) {
			error("build object %u: cannot write %s: %s", slot, path, strerror(errno));
			failed = 1;
		} else {
			sh->slots[slot].gen = gen + 1;
		}
		atomic_store(&sh->slots[slot].busy, 0);
	}
	atomic_fetch_add(&sh->bad_pages, v.bad_pages);
	_exit(failed || v.bad_pages ? 1 : 0);
}

/* Collects the regular files of dir (sorted) into b->sources; returns how many. */
static unsigned build_list_sources(struct build *b)
{
	struct dirent **names;
	int n = scandir(b->src, &names, NULL, alphasort);
	unsigned count = 0;

	if (n < 0)
		return 0;
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", b->src, names[i]->d_name);
		if (count < BUILD_MAX_SOURCES && !stat(path, &st) && S_ISREG(st.st_mode))
			b->sources[count++] = strdup(path);
		free(names[i]);
	}
	free(names);
	return count;
}

static const char build_help[] =
	"Usage: ha-mem build --out DIR [options]\n"
	"A build-like workload: short-lived 'compile job' processes, at most --jobs at\n"
	"once, started until --count jobs ran or --duration has passed. Each job reads a source file of\n"
	"--src (page cache), maps SIZE bytes of anonymous memory (between --min and\n"
	"--max, skewed to small: min + (max - min) * u^3), fills and verifies them,\n"
	"verifies the object file the previous job of its slot wrote to --out and\n"
	"writes its own (--obj bytes, pattern per slot and generation), then exits.\n"
	"\n"
	"  -o, --out DIR         directory for object files (required)\n"
	"  -i, --src DIR         directory of source files (default: none)\n"
	"  -j, --jobs N          concurrent jobs (default: one per allowed CPU)\n"
	"  -d, --duration S      start no new job after S seconds (default 60)\n"
	"  -c, --count N         start at most N jobs (default 0: as the duration allows)\n"
	"      --min SIZE        smallest job (default 16M)\n"
	"      --max SIZE        largest job (default 512M)\n"
	"      --obj SIZE        object file size (default 4M)\n"
	"      --objects N       object slots, files in --out (default 128)\n"
	"      --seed N          pattern and random seed (default from the clock)\n"
	"      --progress S      print progress every S seconds (default 10, 0 off)\n"
	"\n"
	"Prints 'ha-mem: build ok: N jobs, ...' and exits 0; a job killed by a signal\n"
	"(the OOM killer) is counted, not an error; integrity errors exit 1.\n";

static int cmd_build(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "src", required_argument, NULL, 'i' },
		{ "jobs", required_argument, NULL, 'j' },
		{ "duration", required_argument, NULL, 'd' },
		{ "count", required_argument, NULL, 'c' },
		{ "min", required_argument, NULL, 'm' },
		{ "max", required_argument, NULL, 'M' },
		{ "obj", required_argument, NULL, 'O' },
		{ "objects", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "progress", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct build b = { .min = 16 * MIB, .max = 512 * MIB, .obj_size = 4 * MIB, .objects = 128 };
	double duration = 60, progress = 10, start, end, last;
	int cpus[CPU_SETSIZE], c, running = 0, signalled = 0, failed = 0;
	uint64_t next = 0, done = 0, count = 0;
	bool seeded = false;
	size_t shlen;

	b.jobs = allowed_cpus(cpus, CPU_SETSIZE);
	while ((c = getopt_long(argc, argv, "o:i:j:d:c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o': b.out = optarg; break;
		case 'i': b.src = optarg; break;
		case 'j': b.jobs = (unsigned)num_arg("--jobs", optarg, 256); break;
		case 'd': duration = num_arg("--duration", optarg, 1e7); break;
		case 'c': count = (uint64_t)num_arg("--count", optarg, 1e12); break;
		case 'm': b.min = size_arg("--min", optarg); break;
		case 'M': b.max = size_arg("--max", optarg); break;
		case 'O': b.obj_size = size_arg("--obj", optarg); break;
		case 'n': b.objects = (unsigned)num_arg("--objects", optarg, 1 << 20); break;
		case 's': b.seed = seed_arg(optarg); seeded = true; break;
		case 'p': progress = num_arg("--progress", optarg, 1e6); break;
		case 'h': fputs(build_help, stdout); return 0;
		default: usage_error("build: invalid option");
		}
	}
	if (optind < argc)
		usage_error("build: unexpected argument '%s'", argv[optind]);
	if (!b.out)
		usage_error("build: --out DIR is required");
	if (!b.jobs || !b.objects || b.min > b.max)
		usage_error("build: need --jobs >= 1, --objects >= 1 and --min <= --max");
	if (!seeded)
		b.seed = default_seed();
	if (b.src && !(b.nsources = build_list_sources(&b)))
		usage_error("build: no files in --src '%s'", b.src);
	if (mkdir(b.out, 0755) && errno != EEXIST)
		usage_error("build: cannot create '%s': %s", b.out, strerror(errno));
	shlen = sizeof(*b.sh) + b.objects * sizeof(b.sh->slots[0]);
	b.sh = mmap(NULL, shlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b.sh == MAP_FAILED) {
		error("build: cannot map shared state: %s", strerror(errno));
		return 1;
	}
	info("build: %u jobs at once, %" PRIu64 " jobs (0: no limit) within %.0f s, %" PRIu64 " to %" PRIu64 " MiB each, %u sources, "
	     "%u objects of %" PRIu64 " KiB, seed 0x%" PRIx64, b.jobs, count, duration, b.min / MIB,
	     b.max / MIB, b.nsources, b.objects, b.obj_size >> 10, b.seed);
	start = last = now_s();
	end = start + duration;
	for (;;) {
		int status;
		pid_t pid;

		while (running < (int)b.jobs && now_s() < end && (!count || next < count)) {
			pid = fork();
			if (pid < 0) {
				error("build: fork: %s", strerror(errno));
				break;
			}
			if (pid == 0)
				build_job(&b, next);
			next++;
			running++;
		}
		if (!running)
			break;
		pid = wait(&status);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			error("build: wait: %s", strerror(errno));
			return 1;
		}
		running--;
		done++;
		if (WIFSIGNALED(status))
			signalled++;
		else if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed++;
		if (progress > 0 && now_s() - last >= progress) {
			last = now_s();
			info("build progress t=%.0f: %" PRIu64 " jobs, %llu MiB anonymous", last - start,
			     done, (unsigned long long)(atomic_load(&b.sh->anon_bytes) / MIB));
		}
	}
	info("build %s: %" PRIu64 " jobs in %.1f s, %llu MiB anonymous verified, %llu MiB "
	     "sources read, %llu objects verified, %d jobs killed, %d failed, %llu bad pages",
	     failed || b.sh->bad_pages ? "FAILED" : "ok", done, now_s() - start,
	     (unsigned long long)(b.sh->anon_bytes / MIB),
	     (unsigned long long)(b.sh->source_bytes / MIB),
	     (unsigned long long)b.sh->obj_checked, signalled, failed,
	     (unsigned long long)b.sh->bad_pages);
	return failed || b.sh->bad_pages ? 1 : 0;
}

/* ------------------------------------------------------------- bandwidth */

/* One copy thread of the bandwidth probe. */
struct bw_thread {
	pthread_t thread;
	int cpu;
	uint64_t *a, *b;           /* source and destination */
	size_t words;
	_Atomic uint64_t bytes;    /* bytes read + written so far */
	_Atomic bool *stop;
	char pad[64];
};

#define BW_BLOCK_WORDS (256 * 1024 / sizeof(uint64_t))

/* Copies a to b in blocks until told to stop, counting the traffic. */
static void *bw_run(void *arg)
{
	struct bw_thread *t = arg;

	if (t->cpu >= 0)
		pin_to_cpu(t->cpu);
	while (!atomic_load_explicit(t->stop, memory_order_relaxed)) {
		for (size_t off = 0; off < t->words; off += BW_BLOCK_WORDS) {
			size_t n = t->words - off < BW_BLOCK_WORDS ? t->words - off : BW_BLOCK_WORDS;

			memcpy(t->b + off, t->a + off, n * sizeof(uint64_t));
			atomic_fetch_add_explicit(&t->bytes, 2 * n * sizeof(uint64_t),
						  memory_order_relaxed);
			if (atomic_load_explicit(t->stop, memory_order_relaxed))
				break;
		}
	}
	return NULL;
}

/* Compares doubles for qsort. */
static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

static const char bandwidth_help[] =
	"Usage: ha-mem bandwidth [options]\n"
	"STREAM-like copy probe: threads copy a source buffer to a destination buffer\n"
	"(each half of SIZE, split among the threads) in a loop; every interval one\n"
	"line 'ha-mem: bw t=SECONDS wall=UNIXTIME MB/s=RATE' (read + written bytes,\n"
	"MB = 10^6 bytes); at the end the copy is verified and a summary printed.\n"
	"\n"
	"  -s, --size SIZE       both buffers together (default 64M)\n"
	"  -d, --duration S      seconds of sampling (default 10)\n"
	"  -i, --interval MS     sample interval in milliseconds (default 100)\n"
	"  -w, --threads N       copy threads, pinned round robin (default 1)\n"
	"      --seed N          pattern seed (default from the clock)\n";

static int cmd_bandwidth(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, 'd' },
		{ "interval", required_argument, NULL, 'i' },
		{ "threads", required_argument, NULL, 'w' },
		{ "seed", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t size = 64 * MIB, seed = 0, base, last = 0;
	double duration = 10, interval_ms = 100, start, prev, *samples;
	int nthreads = 1, c, cpus[CPU_SETSIZE], ncpus;
	size_t nsamples = 0, max_samples;
	bool have_seed = false;
	_Atomic bool stop = false;
	struct bw_thread *threads;
	uint8_t *a, *b;
	struct verifier v;

	while ((c = getopt_long(argc, argv, "s:d:i:w:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': size = size_arg("--size", optarg); break;
		case 'd': duration = num_arg("--duration", optarg, 1e7); break;
		case 'i': interval_ms = num_arg("--interval", optarg, 1e7); break;
		case 'w': nthreads = (int)num_arg("--threads", optarg, CPU_SETSIZE); break;
		case 'S': seed = seed_arg(optarg); have_seed = true; break;
		case 'h': fputs(bandwidth_help, stdout); return 0;
		default: usage_error("bandwidth: invalid option");
		}
	}
	if (optind != argc)
		usage_error("bandwidth: unexpected argument '%s'", argv[optind]);
	if (nthreads < 1 || interval_ms < 1)
		usage_error("bandwidth: need --threads >= 1 and --interval >= 1");
	if (!have_seed)
		seed = default_seed();
	size_t half = (size / 2 / nthreads) & ~(PAGE_SIZE - 1);

	if (half == 0)
		usage_error("bandwidth: --size too small for %d threads", nthreads);
	ncpus = allowed_cpus(cpus, CPU_SETSIZE);
	a = map_anon(half * nthreads);
	b = map_anon(half * nthreads);
	threads = calloc(nthreads, sizeof(*threads));
	max_samples = (size_t)(duration * 1000 / interval_ms) + 2;
	samples = calloc(max_samples, sizeof(*samples));
	if (!a || !b || !threads || !samples) {
		error("bandwidth: cannot map %" PRIu64 " MiB: %s", 2 * half * nthreads / MIB,
		      strerror(errno));
		return 1;
	}
	base = pattern_base(seed, 0x00f3, 1);
	fill_range(a, half * nthreads / PAGE_SIZE, 0, 1, base);
	memset(b, 0, half * nthreads);
	info("bandwidth: %d threads, 2 x %zu MiB, %.0f s, interval %.0f ms, THP %s", nthreads,
	     half * nthreads / MIB, duration, interval_ms, thp_mode());

	for (int i = 0; i < nthreads; i++) {
		struct bw_thread *t = &threads[i];

		t->cpu = nthreads > 1 ? cpus[i % ncpus] : -1;
		t->a = (uint64_t *)(a + i * half);
		t->b = (uint64_t *)(b + i * half);
		t->words = half / sizeof(uint64_t);
		t->stop = &stop;
		if (pthread_create(&t->thread, NULL, bw_run, t)) {
			error("bandwidth: pthread_create failed");
			return 1;
		}
	}
	start = prev = now_s();
	for (size_t k = 1; k < max_samples - 1; k++) {
		double target = start + k * interval_ms / 1000.0, t = now_s();
		uint64_t total = 0;

		if (target > start + duration + 1e-9)
			break;
		if (target > t)
			sleep_s(target - t);
		t = now_s();
		for (int i = 0; i < nthreads; i++)
			total += atomic_load_explicit(&threads[i].bytes, memory_order_relaxed);
		samples[nsamples] = (total - last) / (t - prev) / 1e6;
		info("bw t=%.3f wall=%.3f MB/s=%.1f", t - start, wall_s(), samples[nsamples]);
		nsamples++;
		last = total;
		prev = t;
	}
	atomic_store(&stop, true);
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i].thread, NULL);

	/* Every copy wrote a's pattern, which follows a's addresses. */
	verifier_init(&v, "bandwidth copy");
	for (size_t pg = 0; pg < half * nthreads / PAGE_SIZE; pg++) {
		const uint64_t *src = (const uint64_t *)(a + pg * PAGE_SIZE);
		const uint64_t *dst = (const uint64_t *)(b + pg * PAGE_SIZE);
		uint64_t key = page_key(base, addr_tag(src));

		if (!page_matches(src, key))
			report_page(&v, src, (uintptr_t)src, "address", key, 0, false);
		if (!page_matches(dst, key))
			report_page(&v, dst, (uintptr_t)dst, "address", key, 0, false);
	}
	qsort(samples, nsamples, sizeof(*samples), cmp_double);
	if (nsamples == 0) {
		error("bandwidth: no samples");
		return 1;
	}
	info("bandwidth %s: %zu samples, median %.1f MB/s, p5 %.1f, min %.1f, max %.1f%s",
	     v.bad_pages ? "FAILED" : "ok", nsamples, samples[nsamples / 2],
	     samples[nsamples / 20], samples[0], samples[nsamples - 1],
	     v.bad_pages ? ", copy corrupted" : "");
	return v.bad_pages ? 1 : 0;
}

/* ------------------------------------------------------------------ main */

static const char main_help[] =
	"Usage: ha-mem COMMAND [options]\n"
	"Guest memory workload of the HyperAlloc tests, demo and benchmarks.\n"
	"\n"
	"Commands:\n"
	"  stress      fill and verify anonymous, THP, page-cache and fork memory on\n"
	"              every CPU for a while\n"
	"  oom         allocate until the OOM killer strikes, then check the system\n"
	"  hold SIZE   keep a pattern in memory; verify/grow/shrink it on command\n"
	"  bandwidth   print memory copy bandwidth samples at a fixed interval\n"
	"  build       short-lived compile-like jobs: read sources, allocate, write objects\n"
	"\n"
	"'ha-mem COMMAND --help' describes a command's options. SIZE is a number with\n"
	"an optional unit K, M, G, T (binary; default M), or P% of MemTotal.\n"
	"Every page holds a pattern derived from the seed, its address and a\n"
	"generation; errors are reported with address, expected and found word.\n"
	"Exit status: 0 success, 1 integrity error or failed check, 2 usage error.\n";

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(int argc, char **argv);
	} cmds[] = {
		{ "stress", cmd_stress },
		{ "oom", cmd_oom },
		{ "hold", cmd_hold },
		{ "bandwidth", cmd_bandwidth },
		{ "build", cmd_build },
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		fputs(main_help, stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(argv[1], cmds[i].name)) {
			/* getopt_long sees "ha-mem-COMMAND options..." */
			return cmds[i].run(argc - 1, argv + 1);
		}
	}
	usage_error("unknown command '%s'", argv[1]);
}
