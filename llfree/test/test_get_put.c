// SPDX-License-Identifier: MIT
/*
 * API tests of llfree_get, llfree_get_at, llfree_put and llfree_drain:
 * alignment, uniqueness, exhaustion per order, and every error path.
 */
#include "util.h"

/* Per-frame owner map of one test */
struct owners {
	uint8_t *map;
	uint64_t frames;
};

static bool owners_init(struct owners *o, uint64_t frames)
{
	o->frames = frames;
	o->map = calloc(frames, 1);
	return o->map != NULL;
}

/* Checks a result block: in range, aligned, not owned; then owns it */
static bool owners_take(struct owners *o, llfree_result_t r, size_t order)
{
	uint64_t n = 1ull << order;

	if (r.frame % n != 0 || r.frame + n > o->frames) {
		check(r.frame % n == 0);
		check(r.frame + n <= o->frames);
		return false;
	}
	for (uint64_t f = r.frame; f < r.frame + n; f++) {
		if (o->map[f]) {
			check_eq(f, UINT64_MAX); /* frame handed out twice */
			return false;
		}
		o->map[f] = 1;
	}
	return true;
}

/* Allocate order `order` on one core until ERR_MEMORY; returns the count */
static uint64_t exhaust(struct tl *t, struct owners *o, size_t core,
			size_t order, uint64_t **list)
{
	uint64_t n = 0, cap = o->frames + 1;
	llfree_result_t r;

	*list = malloc(cap * sizeof(**list));
	while ((r = llfree_get(&t->ll, core, order, order & 1)).error ==
	       LLFREE_OK) {
		if (!owners_take(o, r, order) || n >= cap)
			break;
		check(!r.reclaimed);
		(*list)[n++] = r.frame;
	}
	check_eq(r.error, LLFREE_ERR_MEMORY);
	return n;
}

TEST(get_put_basic)
{
	struct tl t;
	llfree_result_t r;

	if (!tl_init(&t, 2, 4 * TREE, LLFREE_INIT_FREE))
		return;
	for (size_t order = 0; order <= LLFREE_MAX_ORDER; order++) {
		r = llfree_get(&t.ll, order % 2, order, order & 1);
		check_ok(r);
		check_eq(r.frame % (1ull << order), 0);
		check(!r.reclaimed);
		check(!llfree_is_free(&t.ll, r.frame, 0));
		check(!llfree_is_free(&t.ll, r.frame + (1ull << order) - 1, 0));
		check_eq(llfree_free_frames(&t.ll),
			 4 * TREE - (1ull << order));
		check(llfree_validate(&t.ll));
		check_ok(llfree_put(&t.ll, order % 2, r.frame, order));
		check(llfree_is_free(&t.ll, r.frame, order));
		check_eq(llfree_free_frames(&t.ll), 4 * TREE);
		check(llfree_validate(&t.ll));
	}
	check(llfree_reserved_trees(&t.ll) > 0);
	tl_drain_all(&t);
	check_eq(llfree_reserved_trees(&t.ll), 0);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_huge(&t.ll), 4 * 8);
	tl_free(&t);
}

TEST(get_invalid)
{
	struct tl t;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_fails(llfree_get(&t.ll, 0, LLFREE_MAX_ORDER + 1, false));
	check_fails(llfree_get(&t.ll, 0, 64, false));
	check_fails(llfree_get(&t.ll, 0, (size_t)-1, false));
	check_eq(llfree_free_frames(&t.ll), TREE);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/* Every order exhausts exactly the frames it can, then frees them all */
TEST(get_exhaust_every_order)
{
	/* 2 trees, a third with 3 children, and a partial child of 7 */
	const uint64_t frames = 2 * TREE + 3 * CHILD + 7;

	for (size_t order = 0; order <= LLFREE_MAX_ORDER; order++) {
		struct tl t;
		struct owners o;
		uint64_t *list, n, expect;

		if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
			return;
		owners_init(&o, frames);
		n = exhaust(&t, &o, 0, order, &list);
		if (order == 10)
			expect = 2 * 4 + 1; /* children 16+17; 18 has no pair */
		else if (order == 9)
			expect = 2 * 8 + 3;
		else
			expect = (2 * TREE + 3 * CHILD) >> order;
		/* small orders also fill the partial child */
		if (order <= 2)
			expect += 7 >> order;
		check_eq(n, expect);
		check_eq(llfree_free_frames(&t.ll),
			 frames - (n << order));
		check(llfree_validate(&t.ll));
		for (uint64_t i = 0; i < n; i++)
			check_ok(llfree_put(&t.ll, 0, list[i], order));
		llfree_drain(&t.ll, 0);
		check(llfree_validate(&t.ll));
		check_eq(llfree_free_frames(&t.ll), frames);
		check_eq(llfree_free_huge(&t.ll), 2 * 8 + 3);
		check_eq(llfree_reserved_trees(&t.ll), 0);
		free(list);
		free(o.map);
		tl_free(&t);
	}
}

/*
 * The last frames of memory are found from any core even while other
 * cores hold reservations: ERR_MEMORY means memory is really full.
 */
TEST(get_exhaust_many_cores)
{
	const unsigned cores = 4;
	const uint64_t frames = 3 * TREE + 100;
	struct tl t;
	struct owners o;
	uint64_t n = 0;
	unsigned failed = 0;

	if (!tl_init(&t, cores, frames, LLFREE_INIT_FREE))
		return;
	owners_init(&o, frames);
	for (uint64_t i = 0; failed < cores; i++) {
		llfree_result_t r = llfree_get(&t.ll, i % cores, 0, i & 2);

		if (r.error == LLFREE_ERR_MEMORY) {
			failed++;
			continue;
		}
		check_ok(r);
		failed = 0;
		if (!owners_take(&o, r, 0))
			break;
		n++;
	}
	check_eq(n, frames);
	check_eq(llfree_free_frames(&t.ll), 0);
	check(llfree_validate(&t.ll));
	for (uint64_t f = 0; f < frames; f++)
		check_ok(llfree_put(&t.ll, (f / 7) % cores, f, 0));
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), frames);
	free(o.map);
	tl_free(&t);
}

/* Huge requests find the last free pair although small ones fragment */
TEST(get_huge_after_fragmentation)
{
	struct tl t;
	llfree_result_t r;
	uint64_t frames = 2 * TREE;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
		return;
	/* one frame in every child except children 6 and 7 of tree 1 */
	for (uint64_t c = 0; c < 16; c++) {
		if (c == 14 || c == 15)
			continue;
		check_ok(llfree_get_at(&t.ll, 0, c * CHILD + 3, 0));
	}
	r = llfree_get(&t.ll, 1, 10, false);
	check_ok(r);
	check_eq(r.frame, 14 * CHILD);
	check_err(llfree_get(&t.ll, 0, 10, false), LLFREE_ERR_MEMORY);
	check_err(llfree_get(&t.ll, 1, 9, false), LLFREE_ERR_MEMORY);
	r = llfree_get(&t.ll, 0, 8, false);
	check_ok(r);
	check_eq(llfree_free_frames(&t.ll), frames - 14 - 1024 - 256);
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(get_at_basic)
{
	struct tl t;
	llfree_result_t r;
	const uint64_t frames = 2 * TREE;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
		return;
	for (size_t order = 0; order <= LLFREE_MAX_ORDER; order++) {
		uint64_t f = TREE + (3ull << order) % TREE;

		f &= ~((1ull << order) - 1);
		r = llfree_get_at(&t.ll, 1, f, order);
		check_ok(r);
		check_eq(r.frame, f);
		check(!r.reclaimed);
		check(!llfree_is_free(&t.ll, f, 0));
		check(llfree_validate(&t.ll));
		/* a second time: taken */
		check_fails(llfree_get_at(&t.ll, 0, f, order));
		/* an overlapping smaller block: taken */
		check_fails(llfree_get_at(&t.ll, 0, f + (1ull << order) - 1, 0));
		check_eq(llfree_free_frames(&t.ll), frames - (1ull << order));
		check(llfree_validate(&t.ll));
		check_ok(llfree_put(&t.ll, 0, f, order));
		check_eq(llfree_free_frames(&t.ll), frames);
		check(llfree_is_free(&t.ll, f, order));
	}
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(get_at_errors)
{
	const uint64_t frames = TREE + CHILD + 100;
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 64 + 5, 0));
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 9));
	snap_take(&s, &t);

	/* misaligned */
	check_fails(llfree_get_at(&t.ll, 0, 1, 1));
	check_fails(llfree_get_at(&t.ll, 0, CHILD + 64, 9));
	check_fails(llfree_get_at(&t.ll, 0, 5 * CHILD, 10));
	check_fails(llfree_get_at(&t.ll, 0, 3 * CHILD + 128, 8));
	/* out of range and crossing the end */
	check_fails(llfree_get_at(&t.ll, 0, frames, 0));
	check_fails(llfree_get_at(&t.ll, 0, frames + 4096, 0));
	check_fails(llfree_get_at(&t.ll, 0, TREE + CHILD + 64, 6));
	check_fails(llfree_get_at(&t.ll, 0, TREE + CHILD, 9));
	check_fails(llfree_get_at(&t.ll, 0, TREE, 10));
	check_fails(llfree_get_at(&t.ll, 0, 0, LLFREE_MAX_ORDER + 1));
	/* partly taken: an order-0 frame inside, the huge child inside */
	check_fails(llfree_get_at(&t.ll, 0, 64, 6));
	check_fails(llfree_get_at(&t.ll, 0, 0, 7));
	check_fails(llfree_get_at(&t.ll, 0, 0, 9));
	check_fails(llfree_get_at(&t.ll, 0, 2 * CHILD, 10));
	check_fails(llfree_get_at(&t.ll, 0, 2 * CHILD + 8, 3));
	check_fails(llfree_get_at(&t.ll, 0, 2 * CHILD, 0));

	tl_drain_all(&t);
	check(snap_same_lower(&s, &t));
	check_eq(llfree_free_frames(&t.ll), frames - 1 - CHILD);
	check(llfree_validate(&t.ll));
	snap_free(&s);
	tl_free(&t);
}

TEST(put_errors)
{
	const uint64_t frames = TREE + 100;
	struct tl t;
	struct snap s;
	llfree_result_t r0, r3, r9, r10;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	r0 = llfree_get_at(&t.ll, 0, 5, 0);
	r3 = llfree_get_at(&t.ll, 0, 64, 3);
	r9 = llfree_get_at(&t.ll, 0, 2 * CHILD, 9);
	r10 = llfree_get_at(&t.ll, 0, 4 * CHILD, 10);
	check_ok(r0);
	check_ok(r3);
	check_ok(r9);
	check_ok(r10);
	snap_take(&s, &t);

	/* never allocated */
	check_err(llfree_put(&t.ll, 0, 4, 0), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, CHILD, 9), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 6 * CHILD + 64, 2), LLFREE_ERR_ADDRESS);
	/* unaligned */
	check_err(llfree_put(&t.ll, 0, 65, 1), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 2 * CHILD + 1, 9), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 2 * CHILD, 10), LLFREE_ERR_ADDRESS);
	/* out of range, and orders beyond the maximum */
	check_err(llfree_put(&t.ll, 0, frames, 0), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 1ull << 40, 0), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, TREE + 64, 6), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 0, LLFREE_MAX_ORDER + 1),
		  LLFREE_ERR_ADDRESS);
	/* wrong order: larger than allocated (partly free) */
	check_err(llfree_put(&t.ll, 0, 4, 1), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 64, 4), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 0, 9), LLFREE_ERR_ADDRESS);
	/* huge frees of small frames (small ones in huge: test_split.c) */
	check_err(llfree_put(&t.ll, 0, 0, 10), LLFREE_ERR_ADDRESS);
	/* order 10 over a huge child and a free one: the first stays */
	check_err(llfree_put(&t.ll, 0, 2 * CHILD, 10), LLFREE_ERR_ADDRESS);
	check(!llfree_is_free(&t.ll, 2 * CHILD, 9));
	check_eq(llfree_free_at(&t.ll, 2 * CHILD, 9), 0);

	check(snap_same(&s, &t));
	check(llfree_validate(&t.ll));

	check_ok(llfree_put(&t.ll, 0, 5, 0));
	check_ok(llfree_put(&t.ll, 0, 64, 3));
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 9));
	check_ok(llfree_put(&t.ll, 0, 4 * CHILD, 10));
	/* double frees */
	check_err(llfree_put(&t.ll, 0, 5, 0), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 64, 3), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 2 * CHILD, 9), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 4 * CHILD, 10), LLFREE_ERR_ADDRESS);
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), frames);
	check_eq(llfree_free_huge(&t.ll), 8);
	snap_free(&s);
	tl_free(&t);
}

/* Frees of other cores' frames, and drain of a core without reservations */
TEST(put_other_core_and_drain)
{
	const uint64_t frames = 2 * TREE;
	struct tl t;
	uint64_t f[64];

	if (!tl_init(&t, 3, frames, LLFREE_INIT_FREE))
		return;
	llfree_drain(&t.ll, 2); /* nothing reserved: no effect */
	check_eq(llfree_reserved_trees(&t.ll), 0);
	for (unsigned i = 0; i < 64; i++) {
		llfree_result_t r = llfree_get(&t.ll, 0, 0, i & 1);

		check_ok(r);
		f[i] = r.frame;
	}
	check(llfree_reserved_trees(&t.ll) >= 1);
	check_eq(llfree_free_frames(&t.ll), frames - 64);
	for (unsigned i = 0; i < 64; i++)
		check_ok(llfree_put(&t.ll, 1 + i % 2, f[i], 0));
	check_eq(llfree_free_frames(&t.ll), frames);
	llfree_drain(&t.ll, 1);
	llfree_drain(&t.ll, 2);
	check_eq(llfree_free_frames(&t.ll), frames);
	llfree_drain(&t.ll, 0);
	llfree_drain(&t.ll, 0); /* twice: no effect */
	check_eq(llfree_reserved_trees(&t.ll), 0);
	check_eq(llfree_free_frames(&t.ll), frames);
	check_eq(llfree_free_at(&t.ll, 0, 12), TREE);
	check_eq(llfree_free_at(&t.ll, TREE, 12), TREE);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/* Kinds: fixed and movable small frames do not share a tree at first */
TEST(get_kinds_separate)
{
	struct tl t;
	llfree_result_t a, b;

	if (!tl_init(&t, 1, 4 * TREE, LLFREE_INIT_FREE))
		return;
	a = llfree_get(&t.ll, 0, 0, false);
	b = llfree_get(&t.ll, 0, 0, true);
	check_ok(a);
	check_ok(b);
	check(a.frame / TREE != b.frame / TREE);
	check_ok(llfree_put(&t.ll, 0, a.frame, 0));
	check_ok(llfree_put(&t.ll, 0, b.frame, 0));
	llfree_drain(&t.ll, 0);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}
