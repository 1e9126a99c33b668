/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the llfree tests: an allocator that owns its metadata
 * buffers, snapshots of the shared state for exact-undo checks, a seeded
 * PRNG, and the sanitizer scale-down switch.
 */
#ifndef LLFREE_TEST_UTIL_H
#define LLFREE_TEST_UTIL_H

#include "llfree/llfree.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

#define CHILD LLFREE_CHILD_FRAMES
#define TREE LLFREE_TREE_FRAMES

/* An allocator together with the buffers it runs on */
/* A block a test allocated: 2^order frames at frame */
struct tl_block {
	uint64_t frame;
	uint8_t order;
};

struct tl {
	llfree_t ll;
	llfree_meta_t meta;
	llfree_meta_size_t size;
};

static inline size_t tl_round(size_t n)
{
	return (n + LLFREE_ALIGN - 1) / LLFREE_ALIGN * LLFREE_ALIGN;
}

static inline void *tl_alloc(size_t n)
{
	void *p = aligned_alloc(LLFREE_ALIGN, tl_round(n ? n : 1));

	if (p)
		memset(p, 0xa5, tl_round(n ? n : 1));
	return p;
}

/* Allocate buffers and initialize; false (with a failed check) on error */
static inline bool tl_init(struct tl *t, size_t cores, uint64_t frames,
			   enum llfree_init mode)
{
	llfree_result_t r;

	memset(t, 0, sizeof(*t));
	t->size = llfree_metadata_size(cores, frames);
	check(t->size.local && t->size.trees && t->size.lower);
	if (!t->size.local || !t->size.trees || !t->size.lower)
		return false;
	t->meta.local = tl_alloc(t->size.local);
	t->meta.trees = tl_alloc(t->size.trees);
	t->meta.lower = tl_alloc(t->size.lower);
	r = llfree_init(&t->ll, cores, frames, mode, t->meta);
	check_eq(r.error, LLFREE_OK);
	return r.error == LLFREE_OK;
}

/* A second handle over t's shared buffers with its own local buffer */
static inline bool tl_attach(struct tl *a, const struct tl *t, size_t cores)
{
	llfree_result_t r;

	memset(a, 0, sizeof(*a));
	a->size = llfree_metadata_size(cores, llfree_frames(&t->ll));
	a->meta.local = tl_alloc(a->size.local);
	a->meta.trees = t->meta.trees;
	a->meta.lower = t->meta.lower;
	r = llfree_init(&a->ll, cores, llfree_frames(&t->ll),
			LLFREE_INIT_ATTACH, a->meta);
	check_eq(r.error, LLFREE_OK);
	return r.error == LLFREE_OK;
}

static inline void tl_detach(struct tl *a)
{
	free(a->meta.local);
	memset(a, 0, sizeof(*a));
}

static inline void tl_free(struct tl *t)
{
	free(t->meta.local);
	free(t->meta.trees);
	free(t->meta.lower);
	memset(t, 0, sizeof(*t));
}

static inline void tl_drain_all(struct tl *t)
{
	for (size_t c = 0; c < llfree_cores(&t->ll); c++)
		llfree_drain(&t->ll, c);
}

/*
 * Reclaim exactly child `c` (its tree unreserved): every other free,
 * installed child of the tree is allocated as a huge frame around the call,
 * so the result does not depend on the search order. A hard reclaim still
 * prefers soft children of the tree, so the caller makes sure c is the only
 * one.
 */
static inline llfree_result_t tl_reclaim_child(struct tl *t, uint64_t c,
					       bool hard)
{
	uint64_t first = c / LLFREE_TREE_CHILDREN * LLFREE_TREE_CHILDREN;
	uint64_t frames = llfree_frames(&t->ll);
	unsigned blocked = 0;
	llfree_result_t r;

	for (unsigned i = 0; i < LLFREE_TREE_CHILDREN; i++) {
		uint64_t f = (first + i) * LLFREE_CHILD_FRAMES;

		if (first + i == c || f + LLFREE_CHILD_FRAMES > frames ||
		    llfree_is_reclaimed(&t->ll, f) || !llfree_is_free(&t->ll, f, 9))
			continue;
		r = llfree_get_at(&t->ll, 0, f, 9);
		check_eq(r.error, LLFREE_OK);
		if (r.error == LLFREE_OK)
			blocked |= 1u << i;
	}
	r = llfree_reclaim(&t->ll, c * LLFREE_CHILD_FRAMES, hard);
	for (unsigned i = 0; i < LLFREE_TREE_CHILDREN; i++) {
		if (blocked & (1u << i))
			check_eq(llfree_put(&t->ll, 0,
					    (first + i) * LLFREE_CHILD_FRAMES, 9)
					 .error,
				 LLFREE_OK);
	}
	check_eq(r.error, LLFREE_OK);
	check_eq(r.frame, c * LLFREE_CHILD_FRAMES);
	return r;
}

/* Child entry of child c in the shared array, for tests that write states */
static inline uint16_t *tl_child_entry(const struct tl *t, uint64_t c)
{
	uint64_t children = (llfree_frames(&t->ll) + CHILD - 1) / CHILD;

	return (uint16_t *)((char *)t->meta.lower +
			    children * LLFREE_CHILD_BITFIELD_BYTES) +
	       c;
}

/* Bitfield (LLFREE_BITFIELD_WORDS words) of child c in the shared array */
static inline uint64_t *tl_bitfield(const struct tl *t, uint64_t c)
{
	return (uint64_t *)t->meta.lower + c * LLFREE_BITFIELD_WORDS;
}

/* A copy of the shared buffers (trees and lower) */
struct snap {
	void *trees;
	void *lower;
	size_t trees_len, lower_len;
};

static inline void snap_take(struct snap *s, const struct tl *t)
{
	s->trees_len = t->size.trees;
	s->lower_len = t->size.lower;
	s->trees = malloc(s->trees_len);
	s->lower = malloc(s->lower_len);
	memcpy(s->trees, t->meta.trees, s->trees_len);
	memcpy(s->lower, t->meta.lower, s->lower_len);
}

static inline bool snap_same_lower(const struct snap *s, const struct tl *t)
{
	return memcmp(s->lower, t->meta.lower, s->lower_len) == 0;
}

static inline bool snap_same(const struct snap *s, const struct tl *t)
{
	return snap_same_lower(s, t) &&
	       memcmp(s->trees, t->meta.trees, s->trees_len) == 0;
}

static inline void snap_free(struct snap *s)
{
	free(s->trees);
	free(s->lower);
}

/* splitmix64: small, seedable, good enough for tests */
static inline uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rng_below(uint64_t *state, uint64_t n)
{
	return n ? rng_next(state) % n : 0;
}

/* An order 0..10 weighted towards small orders, as a kernel sees them */
static inline size_t rng_order(uint64_t *state)
{
	uint64_t r = rng_below(state, 100);

	if (r < 55)
		return 0;
	if (r < 75)
		return 1 + rng_below(state, 3); /* 1..3 */
	if (r < 85)
		return 4 + rng_below(state, 3); /* 4..6 */
	if (r < 91)
		return 7 + rng_below(state, 2); /* 7..8: multi-word rows */
	if (r < 97)
		return 9;
	return 10;
}

#define check_ok(res_)                                                      \
	do {                                                                \
		llfree_result_t r_ = (res_);                                \
		if (r_.error != LLFREE_OK) {                                \
			char msg_[256];                                     \
			snprintf(msg_, sizeof(msg_), "%s: error %u (%s)",   \
				 #res_, r_.error, llfree_strerror(r_.error)); \
			test_fail(__FILE__, __LINE__, msg_);                \
		}                                                           \
	} while (0)

#define check_err(res_, err_)                                               \
	do {                                                                \
		llfree_result_t r_ = (res_);                                \
		if (r_.error != (err_)) {                                   \
			char msg_[256];                                     \
			snprintf(msg_, sizeof(msg_),                        \
				 "%s: error %u, expected %s", #res_,        \
				 r_.error, #err_);                          \
			test_fail(__FILE__, __LINE__, msg_);                \
		}                                                           \
	} while (0)

#define check_fails(res_)                                                   \
	do {                                                                \
		llfree_result_t r_ = (res_);                                \
		if (r_.error == LLFREE_OK) {                                \
			char msg_[256];                                     \
			snprintf(msg_, sizeof(msg_),                        \
				 "%s succeeded (frame 0x%" PRIx64           \
				 "), expected an error",                    \
				 #res_, r_.frame);                          \
			test_fail(__FILE__, __LINE__, msg_);                \
		}                                                           \
	} while (0)

#endif /* LLFREE_TEST_UTIL_H */
