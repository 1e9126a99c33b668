// SPDX-License-Identifier: MIT
/*
 * hostfree: what freeing memory costs the other work on this host, measured
 * without a VM. Two threads copy 256 MiB buffers (memcpy) for 60 s, like the
 * guest's bandwidth probe of bench/interference.py; at t = 20 s the process
 * discards SIZE of touched THP-backed memory in 2 MiB calls (what a resize
 * device does to guest RAM), or with --hold keeps it (the control). One line
 * per 0.5 s: time and MB/s copied; at the end the mean of 10-20 s, 20-40 s
 * and 40-60 s and the samples below 80 % of the 10-20 s mean.
 *
 * Why: on a host that is itself a VM with free page reporting, the freed
 * 2 MiB pages are reported to the outer hypervisor in batches about every
 * 2 s, and the reporting takes CPU from everything else on the host.
 *
 * Build and run (docs/benchmarks.md, guest interference):
 *   gcc -O2 -Wall -Wextra -pthread -o build/bench/hostfree bench/hostfree.c
 *   build/bench/hostfree [--hold] [SIZE_GIB]        (default 6)
 * Exit status: 0 done, 1 a system call failed, 2 usage error.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define CHUNK (2 * MIB)
#define BUF_SIZE (256 * MIB)
#define COPIERS 2
#define SAMPLE 0.5	/* seconds per line */
#define FREE_AT 20.0
#define DURATION 60.0

static atomic_ulong copied;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *copier(void *arg)
{
	char *src = malloc(BUF_SIZE), *dst = malloc(BUF_SIZE);

	(void)arg;
	if (!src || !dst) {
		perror("hostfree: malloc");
		exit(1);
	}
	memset(src, 1, BUF_SIZE);
	memset(dst, 2, BUF_SIZE);
	for (;;) {
		for (size_t off = 0; off < BUF_SIZE; off += 4 * MIB) {
			memcpy(dst + off, src + off, 4 * MIB);
			atomic_fetch_add_explicit(&copied, 4 * MIB, memory_order_relaxed);
		}
	}
	return NULL;
}

/* SIZE bytes of touched anonymous memory, 2 MiB aligned, with THP advised */
static char *touched(size_t size)
{
	char *map = mmap(NULL, size + CHUNK, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *mem;

	if (map == MAP_FAILED) {
		perror("hostfree: mmap");
		exit(1);
	}
	mem = (char *)(((uintptr_t)map + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1));
	if (madvise(mem, size, MADV_HUGEPAGE))
		perror("hostfree: MADV_HUGEPAGE (continuing with 4 KiB pages)");
	memset(mem, 3, size);
	return mem;
}

static void discard(char *mem, size_t size)
{
	double t = now();

	for (size_t off = 0; off < size; off += CHUNK) {
		if (madvise(mem + off, CHUNK, MADV_DONTNEED)) {
			perror("hostfree: MADV_DONTNEED");
			exit(1);
		}
	}
	printf("# discarded %zu MiB in %.1f ms\n", size / MIB, (now() - t) * 1e3);
}

int main(int argc, char **argv)
{
	unsigned long gib = 6, last;
	double rate[(int)(DURATION / SAMPLE)], t0, base = 0, mid = 0, tail = 0;
	bool hold = false, freed = false;
	int n = (int)(DURATION / SAMPLE), low = 0;
	pthread_t threads[COPIERS];
	char *mem;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--hold")) {
			hold = true;
		} else if (argv[i][0] != '-' && (gib = strtoul(argv[i], NULL, 10))) {
			continue;
		} else {
			fprintf(stderr, "usage: hostfree [--hold] [SIZE_GIB]\n");
			return 2;
		}
	}
	mem = touched(gib << 30);
	sleep(5); /* let the host settle after the touch */
	for (int i = 0; i < COPIERS; i++) {
		if (pthread_create(&threads[i], NULL, copier, NULL)) {
			fprintf(stderr, "hostfree: cannot start a copier\n");
			return 1;
		}
	}
	sleep(2); /* copiers touch their buffers */
	printf("# %s %lu GiB at t = %.0f s; two threads copying\n",
	       hold ? "holding" : "discarding", gib, FREE_AT);
	t0 = now();
	last = atomic_load(&copied);
	for (int i = 0; i < n; i++) {
		unsigned long c;

		while (now() < t0 + (i + 1) * SAMPLE)
			usleep(1000);
		if (!hold && !freed && (i + 1) * SAMPLE >= FREE_AT) {
			discard(mem, gib << 30);
			freed = true;
		}
		c = atomic_load(&copied);
		rate[i] = (c - last) / SAMPLE / 1e6;
		last = c;
		printf("%5.1f %7.0f\n", (i + 1) * SAMPLE, rate[i]);
	}
	for (int i = 0; i < n; i++) {
		double t = (i + 1) * SAMPLE;

		if (t > 10 && t <= FREE_AT)
			base += rate[i] / ((FREE_AT - 10) / SAMPLE);
		else if (t > FREE_AT && t <= 40)
			mid += rate[i] / ((40 - FREE_AT) / SAMPLE);
		else if (t > 40)
			tail += rate[i] / ((DURATION - 40) / SAMPLE);
	}
	for (int i = 0; i < n; i++)
		low += (i + 1) * SAMPLE > FREE_AT && (i + 1) * SAMPLE <= 40 && rate[i] < 0.8 * base;
	printf("# MB/s: 10-20 s %.0f, 20-40 s %.0f (%+.1f %%), 40-60 s %.0f; samples below 80 %% "
	       "in 20-40 s: %d of %d\n", base, mid, (mid / base - 1) * 100, tail, low,
	       (int)((40 - FREE_AT) / SAMPLE));
	return 0;
}
