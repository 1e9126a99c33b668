// SPDX-License-Identifier: MIT
/*
 * Test runner: runs every registered test (or those whose name contains
 * a filter), prints PASS/FAIL per test and the closing "N passed, N failed".
 *
 * usage: llfree-test [--threaded] [--threads N] [--scale N]
 *                    [--iterations N] [--seed N] [FILTER...]
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct test_params test_params = { .threads = 4, .scale = 1, .iterations = 1 };

static struct test_case *tests;
static unsigned failures;

void test_register(struct test_case *test)
{
	struct test_case **p = &tests;

	/* keep registration order stable: sort by name */
	while (*p && strcmp((*p)->name, test->name) < 0)
		p = &(*p)->next;
	test->next = *p;
	*p = test;
}

void test_fail(const char *file, int line, const char *what)
{
	if (failures < 20)
		fprintf(stderr, "  %s:%d: check failed: %s\n", file, line, what);
	failures++;
}

static bool selected(const struct test_case *t, int nfilter, char **filter,
		     bool threaded_only)
{
	if (threaded_only && !(t->flags & TEST_THREADED))
		return false;
	if (nfilter == 0)
		return true;
	for (int i = 0; i < nfilter; i++) {
		if (strstr(t->name, filter[i]))
			return true;
	}
	return false;
}

static unsigned long parse_num(const char *opt, const char *arg)
{
	char *end;
	unsigned long v;

	if (!arg) {
		fprintf(stderr, "%s needs a value\n", opt);
		exit(2);
	}
	v = strtoul(arg, &end, 0);
	if (*end) {
		fprintf(stderr, "%s: not a number: %s\n", opt, arg);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	bool threaded_only = false;
	char **filter = calloc((size_t)argc, sizeof(*filter));
	int nfilter = 0;
	unsigned passed = 0, failed = 0;

	test_params.seed = (uint64_t)time(NULL);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--threaded"))
			threaded_only = true;
		else if (!strcmp(a, "--threads"))
			test_params.threads = parse_num(a, argv[++i]);
		else if (!strcmp(a, "--scale"))
			test_params.scale = parse_num(a, argv[++i]);
		else if (!strcmp(a, "--iterations"))
			test_params.iterations = parse_num(a, argv[++i]);
		else if (!strcmp(a, "--seed"))
			test_params.seed = parse_num(a, argv[++i]);
		else if (a[0] == '-') {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		} else
			filter[nfilter++] = argv[i];
	}
	printf("seed %" PRIu64 ", threads %u, scale %u, iterations %u\n",
	       test_params.seed, test_params.threads, test_params.scale,
	       test_params.iterations);

	for (struct test_case *t = tests; t; t = t->next) {
		if (!selected(t, nfilter, filter, threaded_only))
			continue;
		failures = 0;
		fflush(stdout);
		t->fn();
		if (failures) {
			printf("FAIL %s (%u checks)\n", t->name, failures);
			failed++;
		} else {
			printf("PASS %s\n", t->name);
			passed++;
		}
	}
	free(filter);
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
