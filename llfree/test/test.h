/* SPDX-License-Identifier: MIT */
/*
 * A minimal test framework: TEST() registers a function, check() records a
 * failure and goes on, the runner (runner.c) prints one line per test and
 * closes with "N passed, N failed".
 */
#ifndef LLFREE_TEST_H
#define LLFREE_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The test starts threads: also run under TSan */
#define TEST_THREADED 1u

struct test_case {
	const char *name;
	void (*fn)(void);
	unsigned flags;
	struct test_case *next;
};

void test_register(struct test_case *test);
/* Records a failure of the running test */
void test_fail(const char *file, int line, const char *what);

/* Parameters of the stress tests, set from the command line */
struct test_params {
	unsigned threads;
	unsigned scale;
	unsigned iterations;
	uint64_t seed;
};
extern struct test_params test_params;

#define TEST_FLAGS(name, flags_)                                         \
	static void test_##name(void);                                   \
	static struct test_case test_case_##name = {                     \
		#name, test_##name, (flags_), NULL                       \
	};                                                               \
	__attribute__((constructor)) static void test_reg_##name(void)   \
	{                                                                \
		test_register(&test_case_##name);                        \
	}                                                                \
	static void test_##name(void)

#define TEST(name) TEST_FLAGS(name, 0)

#define check(cond)                                                      \
	do {                                                             \
		if (!(cond))                                             \
			test_fail(__FILE__, __LINE__, #cond);            \
	} while (0)

#define check_eq(a, b)                                                   \
	do {                                                             \
		uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);         \
		if (a_ != b_) {                                          \
			char msg_[256];                                  \
			snprintf(msg_, sizeof(msg_),                     \
				 "%s == %s (0x%" PRIx64 " != 0x%" PRIx64 ")", \
				 #a, #b, a_, b_);                        \
			test_fail(__FILE__, __LINE__, msg_);             \
		}                                                        \
	} while (0)

/* Fail and leave the test function */
#define check_or_return(cond)                                            \
	do {                                                             \
		if (!(cond)) {                                           \
			test_fail(__FILE__, __LINE__, #cond);            \
			return;                                          \
		}                                                        \
	} while (0)

#endif /* LLFREE_TEST_H */
