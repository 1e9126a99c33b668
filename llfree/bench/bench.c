// SPDX-License-Identifier: MIT
/*
 * llfree userspace benchmark (make -C llfree bench BENCH_ARGS="...").
 *
 * Allocation: for each order (0, 9) and thread count (1, 2, 4, ... up to
 * --threads), on a freshly initialized allocator, every thread takes its
 * share of the memory (frames / threads) and measures, after a common
 * barrier:
 *   bulk alloc    allocate its whole share, one block at a time
 *   bulk free     free it again in allocation order
 *   random free   allocate it again (untimed), free in shuffled order
 *   alloc+free    repeated get + put of one block (time per pair)
 * The reported value is ns per operation, averaged over the threads:
 * wall clock (CLOCK_MONOTONIC, median and max over the rounds) and the
 * thread's CPU time (CLOCK_THREAD_CPUTIME_ID, median), which stays
 * meaningful when other jobs share the cores and preempt the threads.
 *
 * Reclaim: over --reclaim-frames (default 16 GiB = 8192 children), host
 * side only: soft-reclaim all children, hard-reclaim all (fresh state),
 * hard-reclaim all already-soft children, return all, install all. No
 * discard syscalls are involved; this is the allocator's part only.
 *
 * Every measurement runs one warm-up round and --reps timed rounds;
 * the table shows the median and the maximum. --csv FILE saves every
 * timed round. Benchmarks never gate CI; see docs/benchmarks.md.
 */
#include "llfree/llfree.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64u

/* Targets from the design brief, printed next to the results */
#define TARGET_ALLOC_NS 50.0
#define TARGET_RECLAIM_MS 2.0

struct options {
	uint64_t frames;
	uint64_t reclaim_frames;
	unsigned threads;
	unsigned reps;
	uint64_t seed;
	uint64_t pairs;
	const char *csv;
};

static struct options opt = {
	.frames = 1ull << 22, /* 16 GiB */
	.reclaim_frames = 1ull << 22,
	.threads = 2,
	.reps = 5,
	.seed = 42,
	.pairs = 1ull << 20,
	.csv = NULL,
};

static FILE *csv;

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

/* CPU time of the calling thread: unaffected by time spent descheduled */
static uint64_t thread_cpu_ns(void)
{
	return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

/* splitmix64: small seeded generator for the shuffles */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void *xalloc(size_t size)
{
	void *p;

	size = (size + LLFREE_ALIGN - 1) / LLFREE_ALIGN * LLFREE_ALIGN;
	p = aligned_alloc(LLFREE_ALIGN, size ? size : LLFREE_ALIGN);
	if (!p) {
		fprintf(stderr, "bench: out of memory (%zu bytes)\n", size);
		exit(1);
	}
	memset(p, 0, size);
	return p;
}

/* An allocator with its three buffers */
struct instance {
	llfree_t llfree;
	llfree_meta_t meta;
};

static void instance_init(struct instance *in, size_t cores, uint64_t frames,
			  enum llfree_init mode)
{
	llfree_meta_size_t ms = llfree_metadata_size(cores, frames);
	llfree_result_t r;

	if (!ms.local || !ms.trees || !ms.lower) {
		fprintf(stderr, "bench: invalid size: %zu cores, %" PRIu64
				" frames\n", cores, frames);
		exit(1);
	}
	in->meta.local = xalloc(ms.local);
	in->meta.trees = xalloc(ms.trees);
	in->meta.lower = xalloc(ms.lower);
	r = llfree_init(&in->llfree, cores, frames, mode, in->meta);
	if (r.error != LLFREE_OK) {
		fprintf(stderr, "bench: init failed: %s\n",
			llfree_strerror(r.error));
		exit(1);
	}
}

/* A second address space (the host) on the shared arrays of `guest` */
static void instance_attach(struct instance *in, const struct instance *guest,
			    uint64_t frames)
{
	llfree_meta_size_t ms = llfree_metadata_size(1, frames);
	llfree_result_t r;

	in->meta.local = xalloc(ms.local);
	in->meta.trees = guest->meta.trees;
	in->meta.lower = guest->meta.lower;
	r = llfree_init(&in->llfree, 1, frames, LLFREE_INIT_ATTACH, in->meta);
	if (r.error != LLFREE_OK) {
		fprintf(stderr, "bench: attach failed: %s\n",
			llfree_strerror(r.error));
		exit(1);
	}
}

static void instance_free(struct instance *in, bool shared)
{
	free(in->meta.local);
	if (shared) {
		free(in->meta.trees);
		free(in->meta.lower);
	}
}

/* Statistics ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

struct summary {
	double median;
	double max;
};

static struct summary stat_of(double *v, unsigned n)
{
	struct summary s;

	qsort(v, n, sizeof(*v), cmp_double);
	s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	s.max = v[n - 1];
	return s;
}

/* Allocation benchmark --------------------------------------------------- */

enum phase {
	PH_BULK_ALLOC,
	PH_BULK_FREE,
	PH_RANDOM_FREE,
	PH_PAIRS,
	PHASES,
};

static const char *const phase_name[PHASES] = {
	"bulk alloc", "bulk free", "random free", "alloc+free pair",
};

struct worker {
	pthread_t thread;
	unsigned id;
	struct instance *in;
	pthread_barrier_t *barrier;
	size_t order;
	uint64_t share; /* blocks this thread allocates */
	uint64_t *blocks;
	uint64_t count; /* blocks held */
	uint64_t seed;
	/* results of the last phase */
	enum phase phase;
	uint64_t ops;
	uint64_t ns;
	uint64_t cpu_ns;
	uint64_t failed;
};

static void pin_to_cpu(unsigned id)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;

	if (cpus <= 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(id % (unsigned)cpus, &set);
	/* best effort: unpinned numbers are only noisier */
	(void)sched_setaffinity(0, sizeof(set), &set);
}

static void alloc_share(struct worker *w)
{
	w->count = 0;
	w->failed = 0;
	for (uint64_t i = 0; i < w->share; i++) {
		llfree_result_t r = llfree_get(&w->in->llfree, w->id, w->order,
					       false);

		if (r.error != LLFREE_OK) {
			w->failed++;
			continue;
		}
		w->blocks[w->count++] = r.frame;
	}
}

static void free_held(struct worker *w)
{
	for (uint64_t i = 0; i < w->count; i++) {
		llfree_result_t r = llfree_put(&w->in->llfree, w->id,
					       w->blocks[i], w->order);

		if (r.error != LLFREE_OK)
			w->failed++;
	}
	w->count = 0;
}

static void shuffle(uint64_t *v, uint64_t n, uint64_t *rng)
{
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = rng_next(rng) % i;
		uint64_t t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

static void pairs(struct worker *w)
{
	for (uint64_t i = 0; i < w->ops; i++) {
		llfree_result_t r = llfree_get(&w->in->llfree, w->id, w->order,
					       false);

		if (r.error != LLFREE_OK) {
			w->failed++;
			continue;
		}
		r = llfree_put(&w->in->llfree, w->id, r.frame, w->order);
		if (r.error != LLFREE_OK)
			w->failed++;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t rng = w->seed;
	uint64_t start, cpu_start;

	pin_to_cpu(w->id);

	/* untimed preparation */
	switch (w->phase) {
	case PH_RANDOM_FREE:
		alloc_share(w);
		shuffle(w->blocks, w->count, &rng);
		break;
	case PH_PAIRS:
		w->ops = opt.pairs < w->share ? opt.pairs : w->share;
		break;
	default:
		break;
	}
	w->failed = 0;

	pthread_barrier_wait(w->barrier);
	start = now_ns();
	cpu_start = thread_cpu_ns();
	switch (w->phase) {
	case PH_BULK_ALLOC:
		alloc_share(w);
		w->ops = w->share;
		break;
	case PH_BULK_FREE:
	case PH_RANDOM_FREE:
		w->ops = w->count;
		free_held(w);
		break;
	case PH_PAIRS:
		pairs(w);
		break;
	case PHASES:
		break;
	}
	w->cpu_ns = thread_cpu_ns() - cpu_start;
	w->ns = now_ns() - start;
	return NULL;
}

/*
 * Run one phase on all workers; returns the mean wall-clock ns per op per
 * thread, and the mean CPU ns per op per thread in *cpu
 */
static double run_phase(struct worker *ws, unsigned threads, enum phase ph,
			double *cpu, uint64_t *failed)
{
	double sum = 0, cpu_sum = 0;

	for (unsigned i = 0; i < threads; i++) {
		ws[i].phase = ph;
		if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i])) {
			fprintf(stderr, "bench: pthread_create failed\n");
			exit(1);
		}
	}
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(ws[i].thread, NULL);
		if (ws[i].ops) {
			sum += (double)ws[i].ns / (double)ws[i].ops;
			cpu_sum += (double)ws[i].cpu_ns / (double)ws[i].ops;
		}
		*failed += ws[i].failed;
	}
	*cpu = cpu_sum / threads;
	return sum / threads;
}

/* One round of all phases on a fresh allocator; fills ns/cpu[PHASES] */
static void alloc_round(unsigned threads, size_t order, uint64_t seed,
			double *ns, double *cpu, uint64_t *failed)
{
	struct instance in;
	struct worker ws[MAX_THREADS];
	pthread_barrier_t barrier;
	uint64_t blocks = opt.frames >> order;

	instance_init(&in, threads, opt.frames, LLFREE_INIT_FREE);
	pthread_barrier_init(&barrier, NULL, threads);
	for (unsigned i = 0; i < threads; i++) {
		ws[i] = (struct worker){
			.id = i,
			.in = &in,
			.barrier = &barrier,
			.order = order,
			.share = blocks / threads,
			.seed = seed + i,
		};
		ws[i].blocks = xalloc(ws[i].share * sizeof(uint64_t));
	}

	ns[PH_BULK_ALLOC] = run_phase(ws, threads, PH_BULK_ALLOC, &cpu[PH_BULK_ALLOC], failed);
	ns[PH_BULK_FREE] = run_phase(ws, threads, PH_BULK_FREE, &cpu[PH_BULK_FREE], failed);
	for (unsigned i = 0; i < threads; i++)
		llfree_drain(&in.llfree, i);
	ns[PH_RANDOM_FREE] = run_phase(ws, threads, PH_RANDOM_FREE, &cpu[PH_RANDOM_FREE], failed);
	for (unsigned i = 0; i < threads; i++)
		llfree_drain(&in.llfree, i);
	ns[PH_PAIRS] = run_phase(ws, threads, PH_PAIRS, &cpu[PH_PAIRS], failed);

	for (unsigned i = 0; i < threads; i++)
		free(ws[i].blocks);
	pthread_barrier_destroy(&barrier);
	instance_free(&in, true);
}

static void print_header(void)
{
	printf("%-24s %5s %7s %10s %10s %10s %10s  %s\n", "benchmark",
	       "order", "threads", "median", "max", "cpu median", "unit",
	       "target");
}

static void bench_alloc(unsigned threads, size_t order)
{
	double raw[PHASES][64], raw_cpu[PHASES][64];
	uint64_t failed = 0;

	for (unsigned rep = 0; rep <= opt.reps; rep++) {
		double ns[PHASES], cpu[PHASES];

		alloc_round(threads, order, opt.seed + rep * MAX_THREADS, ns,
			    cpu, &failed);
		if (rep == 0)
			continue; /* warm-up */
		for (unsigned p = 0; p < PHASES; p++) {
			raw[p][rep - 1] = ns[p];
			raw_cpu[p][rep - 1] = cpu[p];
			if (csv)
				fprintf(csv, "%s,%zu,%u,%u,%.3f,%.3f,\n",
					phase_name[p], order, threads, rep,
					ns[p], cpu[p]);
		}
	}
	for (unsigned p = 0; p < PHASES; p++) {
		struct summary s = stat_of(raw[p], opt.reps);
		struct summary c = stat_of(raw_cpu[p], opt.reps);
		char target[64] = "";

		if (p == PH_BULK_ALLOC && threads == 1)
			snprintf(target, sizeof(target), "<= %.0f ns %s",
				 TARGET_ALLOC_NS,
				 s.median <= TARGET_ALLOC_NS ? "met" : "MISSED");
		printf("%-24s %5zu %7u %10.1f %10.1f %10.1f %10s  %s\n",
		       phase_name[p], order, threads, s.median, s.max, c.median,
		       p == PH_PAIRS ? "ns/pair" : "ns/op", target);
	}
	if (failed)
		printf("  (%" PRIu64 " operations failed)\n", failed);
	fflush(stdout);
}

/* Reclaim benchmark ------------------------------------------------------ */

enum rphase {
	RP_SOFT,
	RP_HARD,
	RP_HARD_SOFT,
	RP_RETURN,
	RP_INSTALL,
	RPHASES,
};

static const char *const rphase_name[RPHASES] = {
	"soft reclaim all", "hard reclaim all", "hard reclaim of soft",
	"return all", "install all",
};

/* Reclaim children until none is left; returns the count */
static uint64_t reclaim_all(llfree_t *host, bool hard, bool expect_soft,
			    uint64_t *children, uint64_t *bad)
{
	uint64_t n = 0, start = 0;

	for (;;) {
		llfree_result_t r = llfree_reclaim(host, start, hard);

		if (r.error != LLFREE_OK)
			break;
		if (hard && r.reclaimed != expect_soft)
			(*bad)++;
		if (children)
			children[n] = r.frame;
		n++;
		/* continue behind the last child: start is a frame */
		start = r.frame + LLFREE_CHILD_FRAMES;
	}
	return n;
}

/* Time one reclaim phase; *count receives the children it handled */
static double time_rphase(struct instance *host, enum rphase ph,
			  uint64_t *children, uint64_t nchildren,
			  uint64_t *count, uint64_t *bad)
{
	llfree_t *h = &host->llfree;
	uint64_t start = now_ns();

	switch (ph) {
	case RP_SOFT:
		*count = reclaim_all(h, false, false, NULL, bad);
		break;
	case RP_HARD:
		*count = reclaim_all(h, true, false, children, bad);
		break;
	case RP_HARD_SOFT:
		*count = reclaim_all(h, true, true, children, bad);
		break;
	case RP_RETURN:
		*count = 0;
		for (uint64_t i = 0; i < nchildren; i++) {
			llfree_result_t r = llfree_return(h, children[i]);

			*bad += r.error != LLFREE_OK;
			*count += r.error == LLFREE_OK;
		}
		break;
	case RP_INSTALL:
		*count = 0;
		for (uint64_t i = 0; i < nchildren; i++) {
			llfree_result_t r = llfree_install(h, children[i]);

			*bad += r.error != LLFREE_OK;
			*count += r.error == LLFREE_OK;
		}
		break;
	case RPHASES:
		break;
	}
	return (double)(now_ns() - start);
}

/* One round: fresh state, each phase; fills ns[RPHASES] and counts */
static void reclaim_round(double *ns, uint64_t *counts, uint64_t *bad)
{
	uint64_t frames = opt.reclaim_frames;
	uint64_t nchildren = frames / LLFREE_CHILD_FRAMES;
	uint64_t *children = xalloc((nchildren + 1) * sizeof(uint64_t));
	struct instance guest, host;
	uint64_t n;

	/* soft, then hard of the soft children, return, install */
	instance_init(&guest, 1, frames, LLFREE_INIT_FREE);
	instance_attach(&host, &guest, frames);
	ns[RP_SOFT] = time_rphase(&host, RP_SOFT, NULL, 0, &counts[RP_SOFT],
				  bad);
	ns[RP_HARD_SOFT] = time_rphase(&host, RP_HARD_SOFT, children, 0,
				       &counts[RP_HARD_SOFT], bad);
	n = counts[RP_HARD_SOFT];
	ns[RP_RETURN] = time_rphase(&host, RP_RETURN, children, n,
				    &counts[RP_RETURN], bad);
	ns[RP_INSTALL] = time_rphase(&host, RP_INSTALL, children, n,
				     &counts[RP_INSTALL], bad);
	instance_free(&host, false);
	instance_free(&guest, true);

	/* hard reclaim of installed children on a fresh state */
	instance_init(&guest, 1, frames, LLFREE_INIT_FREE);
	instance_attach(&host, &guest, frames);
	ns[RP_HARD] = time_rphase(&host, RP_HARD, children, 0,
				  &counts[RP_HARD], bad);
	instance_free(&host, false);
	instance_free(&guest, true);
	free(children);
}

static void bench_reclaim(void)
{
	double raw[RPHASES][64];
	uint64_t counts[RPHASES] = { 0 };
	uint64_t bad = 0;
	uint64_t expect = opt.reclaim_frames / LLFREE_CHILD_FRAMES;

	for (unsigned rep = 0; rep <= opt.reps; rep++) {
		double ns[RPHASES];

		reclaim_round(ns, counts, &bad);
		if (rep == 0)
			continue;
		for (unsigned p = 0; p < RPHASES; p++) {
			raw[p][rep - 1] = ns[p];
			if (csv)
				fprintf(csv, "%s,9,1,%u,%.0f,,%" PRIu64 "\n",
					rphase_name[p], rep, ns[p], counts[p]);
		}
	}

	printf("\n%-24s %9s %10s %10s %10s %10s  %s\n", "reclaim (host)",
	       "children", "median ms", "max ms", "ns/child", "", "target");
	for (unsigned p = 0; p < RPHASES; p++) {
		struct summary s = stat_of(raw[p], opt.reps);
		char target[64] = "";

		if (p == RP_SOFT || p == RP_HARD || p == RP_HARD_SOFT)
			snprintf(target, sizeof(target), "<= %.0f ms %s",
				 TARGET_RECLAIM_MS,
				 s.median / 1e6 <= TARGET_RECLAIM_MS ? "met" :
								      "MISSED");
		printf("%-24s %9" PRIu64 " %10.3f %10.3f %10.1f %10s  %s\n",
		       rphase_name[p], counts[p], s.median / 1e6, s.max / 1e6,
		       counts[p] ? s.median / (double)counts[p] : 0.0, "",
		       target);
		if (counts[p] != expect)
			printf("  (expected %" PRIu64 " children)\n", expect);
	}
	if (bad)
		printf("  (%" PRIu64 " operations failed or reported a wrong state)\n",
		       bad);
}

/* Machine info and options ----------------------------------------------- */

static void read_line_prefixed(const char *path, const char *key, char *out,
			       size_t len)
{
	FILE *f = fopen(path, "r");
	char line[512];

	snprintf(out, len, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon;

		if (strncmp(line, key, strlen(key)))
			continue;
		colon = strchr(line, ':');
		if (!colon)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		colon[strcspn(colon, "\n")] = 0;
		snprintf(out, len, "%s", colon);
		break;
	}
	fclose(f);
}

static void git_commit(char *out, size_t len)
{
	const char *env = getenv("LLFREE_COMMIT");
	FILE *p;

	snprintf(out, len, "unknown");
	if (env && *env) {
		snprintf(out, len, "%s", env);
		return;
	}
	/* the commit, marked -dirty if the tree has uncommitted changes */
	p = popen("git describe --always --dirty 2>/dev/null", "r");
	if (!p)
		return;
	if (fgets(out, (int)len, p))
		out[strcspn(out, "\n")] = 0;
	else
		snprintf(out, len, "unknown");
	pclose(p);
}

static void print_machine(void)
{
	char cpu[256], mem[64], commit[64], date[64];
	struct utsname u;
	time_t t = time(NULL);

	read_line_prefixed("/proc/cpuinfo", "model name", cpu, sizeof(cpu));
	read_line_prefixed("/proc/meminfo", "MemTotal", mem, sizeof(mem));
	git_commit(commit, sizeof(commit));
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
	if (uname(&u))
		snprintf(u.release, sizeof(u.release), "unknown");

	printf("llfree benchmark\n");
	printf("date:     %s\n", date);
	printf("commit:   %s\n", commit);
	printf("cpu:      %s (%ld online)\n", cpu,
	       sysconf(_SC_NPROCESSORS_ONLN));
	printf("memory:   %s\n", mem);
	printf("kernel:   %s %s\n", u.sysname, u.release);
	printf("params:   frames %" PRIu64 " (%" PRIu64 " MiB), reclaim frames %"
	       PRIu64 ", threads up to %u, reps %u + 1 warm-up, seed %" PRIu64
	       ", pairs %" PRIu64 "/thread\n",
	       opt.frames, opt.frames * LLFREE_FRAME_SIZE >> 20,
	       opt.reclaim_frames, opt.threads, opt.reps, opt.seed, opt.pairs);
	if (csv)
		fprintf(csv, "# date %s, commit %s, cpu %s, seed %" PRIu64
			     ", frames %" PRIu64 ", reclaim frames %" PRIu64 "\n"
			     "# allocation rows: wall and CPU ns per op (per pair"
			     " for alloc+free pair), mean over threads\n"
			     "# reclaim rows: wall ns for the whole phase, children\n"
			     "benchmark,order,threads,rep,wall_ns,cpu_ns,children\n",
			date, commit, cpu, opt.seed, opt.frames,
			opt.reclaim_frames);
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--frames N] [--reclaim-frames N] [--threads N]\n"
		"          [--reps N] [--seed N] [--pairs N] [--csv FILE]\n"
		"          [--no-alloc] [--no-reclaim]\n",
		argv0);
	exit(2);
}

static uint64_t parse_u64(const char *opt_name, const char *arg,
			  const char *argv0)
{
	char *end;
	unsigned long long v;

	if (!arg)
		usage(argv0);
	errno = 0;
	v = strtoull(arg, &end, 0);
	if (errno || *end || end == arg) {
		fprintf(stderr, "bench: bad value for %s: %s\n", opt_name, arg);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	bool do_alloc = true, do_reclaim = true;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--frames"))
			opt.frames = parse_u64(a, v, argv[0]), i++;
		else if (!strcmp(a, "--reclaim-frames"))
			opt.reclaim_frames = parse_u64(a, v, argv[0]), i++;
		else if (!strcmp(a, "--threads"))
			opt.threads = (unsigned)parse_u64(a, v, argv[0]), i++;
		else if (!strcmp(a, "--reps"))
			opt.reps = (unsigned)parse_u64(a, v, argv[0]), i++;
		else if (!strcmp(a, "--seed"))
			opt.seed = parse_u64(a, v, argv[0]), i++;
		else if (!strcmp(a, "--pairs"))
			opt.pairs = parse_u64(a, v, argv[0]), i++;
		else if (!strcmp(a, "--csv") && v)
			opt.csv = v, i++;
		else if (!strcmp(a, "--no-alloc"))
			do_alloc = false;
		else if (!strcmp(a, "--no-reclaim"))
			do_reclaim = false;
		else
			usage(argv[0]);
	}
	if (opt.threads < 1 || opt.threads > MAX_THREADS || opt.reps < 1 ||
	    opt.reps > 64 || opt.frames < (1ull << LLFREE_MAX_ORDER) ||
	    opt.reclaim_frames < LLFREE_CHILD_FRAMES) {
		fprintf(stderr, "bench: threads 1..%u, reps 1..64, frames >= %u,"
				" reclaim frames >= %u\n",
			MAX_THREADS, 1u << LLFREE_MAX_ORDER, LLFREE_CHILD_FRAMES);
		return 2;
	}
	if (opt.csv) {
		csv = fopen(opt.csv, "w");
		if (!csv) {
			perror(opt.csv);
			return 1;
		}
	}

	print_machine();
	if (do_alloc) {
		static const size_t orders[] = { 0, LLFREE_HUGE_ORDER };

		printf("\n");
		print_header();
		for (unsigned o = 0; o < 2; o++) {
			for (unsigned t = 1; t <= opt.threads;
			     t = t < opt.threads && t * 2 > opt.threads ?
					 opt.threads :
					 t * 2)
				bench_alloc(t, orders[o]);
		}
	}
	if (do_reclaim)
		bench_reclaim();
	if (csv)
		fclose(csv);
	return 0;
}
