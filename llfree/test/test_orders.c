// SPDX-License-Identifier: MIT
/*
 * Tests of the multi-word operations and their undo paths: orders 7 and 8
 * (rows of 2 and 4 bitfield words) and order 10 (pairs of children).
 * A failed operation must leave the shared state byte for byte as before.
 */
#include "util.h"

/* get_at of a row where a later word is taken fails without a trace */
TEST(orders_row_get_at_undo)
{
	for (size_t order = 7; order <= 8; order++) {
		unsigned words = 1u << (order - 6);

		for (uint64_t start = 0; start < CHILD; start += 1u << order) {
			for (unsigned k = 0; k < words; k++) {
				struct tl t;
				struct snap s;
				uint64_t blocker = start + 64 * k + (7 * k + 3) % 64;

				if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
					return;
				/* a neighbour child in use, to see tree counts */
				check_ok(llfree_get_at(&t.ll, 0, 3 * CHILD + 64, 6));
				check_ok(llfree_get_at(&t.ll, 0, blocker, 0));
				snap_take(&s, &t);

				check_err(llfree_get_at(&t.ll, 0, start, order),
					  LLFREE_ERR_MEMORY);
				check(snap_same(&s, &t));
				check(llfree_validate(&t.ll));
				check_eq(llfree_free_frames(&t.ll), TREE - 65);
				check_eq(llfree_free_at(&t.ll, 0, 9), CHILD - 1);
				/* the other words of the row are still free */
				for (unsigned w = 0; w < words; w++) {
					if (w != k)
						check(llfree_is_free(&t.ll,
								     start + 64 * w, 6));
				}
				/* and can be allocated word by word */
				for (unsigned w = 0; w < words; w++) {
					if (w != k)
						check_ok(llfree_get_at(&t.ll, 0,
								       start + 64 * w, 6));
				}
				check_eq(llfree_free_frames(&t.ll),
					 TREE - 65 - 64 * (words - 1));
				check(llfree_validate(&t.ll));
				snap_free(&s);
				tl_free(&t);
			}
		}
	}
}

/* The case the reference leaked: only the 3rd word of an order-8 row is taken */
TEST(orders_row8_third_word)
{
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 2, 2 * TREE, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 1, TREE + 2 * 64 + 17, 0));
	snap_take(&s, &t);
	check_fails(llfree_get_at(&t.ll, 1, TREE, 8));
	check(snap_same(&s, &t));
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), 2 * TREE - 1);
	check_eq(llfree_free_at(&t.ll, TREE, 9), CHILD - 1);
	check_eq(llfree_free_at(&t.ll, TREE, 12), TREE - 1);
	check(llfree_is_free(&t.ll, TREE, 7));
	check(llfree_is_free(&t.ll, TREE + 192, 6));
	check(llfree_is_free(&t.ll, TREE + 256, 8));
	check_ok(llfree_get_at(&t.ll, 0, TREE, 7));
	check_ok(llfree_get_at(&t.ll, 0, TREE + 192, 6));
	check_ok(llfree_get_at(&t.ll, 0, TREE + 256, 8));
	check_eq(llfree_free_at(&t.ll, TREE, 9), 512 - 1 - 128 - 64 - 256);
	check(llfree_validate(&t.ll));
	snap_free(&s);
	tl_free(&t);
}

/* get of order 8 where both rows of the only child are broken late */
TEST(orders_row8_get_all_broken)
{
	struct tl t;
	struct snap s;
	llfree_result_t a, b;

	if (!tl_init(&t, 1, CHILD, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 3 * 64 + 8, 0)); /* row 0, word 3 */
	check_ok(llfree_get_at(&t.ll, 0, 256 + 2 * 64 + 22, 0)); /* row 1, word 2 */
	snap_take(&s, &t);
	check_err(llfree_get(&t.ll, 0, 8, false), LLFREE_ERR_MEMORY);
	llfree_drain(&t.ll, 0);
	check(snap_same_lower(&s, &t));
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), CHILD - 2);
	check_eq(llfree_free_at(&t.ll, 0, 12), CHILD - 2);

	/* order 7: rows 0 and 3 are free, 1 and 2 are not */
	a = llfree_get(&t.ll, 0, 7, false);
	b = llfree_get(&t.ll, 0, 7, false);
	check_ok(a);
	check_ok(b);
	check(a.frame != b.frame);
	/* 200 is in row 1, 406 in row 3 */
	check(a.frame == 0 || a.frame == 256);
	check(b.frame == 0 || b.frame == 256);
	check_err(llfree_get(&t.ll, 0, 7, false), LLFREE_ERR_MEMORY);
	llfree_drain(&t.ll, 0);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), CHILD - 2 - 256);
	snap_free(&s);
	tl_free(&t);
}

/* get of order 7 where every row's second word is taken */
TEST(orders_row7_get_all_broken)
{
	struct tl t;
	struct snap s;
	unsigned n = 0;
	llfree_result_t r;

	if (!tl_init(&t, 1, CHILD, LLFREE_INIT_FREE))
		return;
	for (unsigned row = 0; row < 4; row++)
		check_ok(llfree_get_at(&t.ll, 0, row * 128 + 64 + row * 9, 0));
	snap_take(&s, &t);
	check_err(llfree_get(&t.ll, 0, 7, true), LLFREE_ERR_MEMORY);
	check_err(llfree_get(&t.ll, 0, 8, true), LLFREE_ERR_MEMORY);
	llfree_drain(&t.ll, 0);
	check(snap_same_lower(&s, &t));
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), CHILD - 4);
	/* the first words are untouched: 4 order-6 blocks */
	while ((r = llfree_get(&t.ll, 0, 6, true)).error == LLFREE_OK) {
		check_eq(r.frame % 128, 0);
		n++;
	}
	check_eq(n, 4);
	llfree_drain(&t.ll, 0);
	check(llfree_validate(&t.ll));
	snap_free(&s);
	tl_free(&t);
}

/* get_at of order 10 where only the second child is in use */
TEST(orders_pair_get_at_undo)
{
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 3 * CHILD + 511, 0));
	check_ok(llfree_get_at(&t.ll, 0, 5 * CHILD, 9));
	snap_take(&s, &t);
	check_err(llfree_get_at(&t.ll, 0, 2 * CHILD, 10), LLFREE_ERR_MEMORY);
	check(snap_same(&s, &t));
	check_err(llfree_get_at(&t.ll, 0, 4 * CHILD, 10), LLFREE_ERR_MEMORY);
	check(snap_same(&s, &t));
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), TREE - 1 - CHILD);
	check_eq(llfree_free_huge(&t.ll), 6);
	/* the first children were given back whole */
	check(llfree_is_free(&t.ll, 2 * CHILD, 9));
	check(llfree_is_free(&t.ll, 4 * CHILD, 9));
	check_eq(llfree_free_at(&t.ll, 2 * CHILD, 9), CHILD);
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 9));
	check_ok(llfree_get_at(&t.ll, 0, 4 * CHILD, 9));
	check_ok(llfree_get_at(&t.ll, 0, 0, 10));
	check_ok(llfree_get_at(&t.ll, 0, 6 * CHILD, 10));
	check_eq(llfree_free_frames(&t.ll), CHILD - 1);
	check(llfree_validate(&t.ll));
	snap_free(&s);
	tl_free(&t);
}

/* get_at of order 10 where the second child is hard-reclaimed by the host */
TEST(orders_pair_get_at_undo_reclaimed)
{
	struct tl t;
	struct snap s;
	llfree_result_t r;
	uint64_t pair;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	r = tl_reclaim_child(&t, 3, true);
	check_or_return(r.error == LLFREE_OK && r.frame == 3 * CHILD);
	check(!r.reclaimed);
	pair = 2 * CHILD;
	snap_take(&s, &t);
	check_err(llfree_get_at(&t.ll, 0, pair, 10), LLFREE_ERR_MEMORY);
	check(snap_same(&s, &t));
	check(llfree_validate(&t.ll));
	check(llfree_is_free(&t.ll, pair, 9));
	check(!llfree_is_reclaimed(&t.ll, pair));
	check(llfree_is_reclaimed(&t.ll, pair + CHILD));
	snap_free(&s);
	tl_free(&t);
}

/* get of order 10 where every pair has one child in use, either half */
TEST(orders_pair_get_all_broken)
{
	const uint64_t frames = 2 * TREE;
	struct tl t;
	struct snap s;
	unsigned n = 0;
	llfree_result_t r;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
		return;
	for (uint64_t pair = 0; pair < 8; pair++) {
		uint64_t c = 2 * pair + (pair % 2 == 0); /* second, first, ... */

		if (pair % 4 == 3)
			check_ok(llfree_get_at(&t.ll, 1, c * CHILD, 9));
		else
			check_ok(llfree_get_at(&t.ll, 1, c * CHILD + pair * 61, 0));
	}
	snap_take(&s, &t);
	check_err(llfree_get(&t.ll, 0, 10, false), LLFREE_ERR_MEMORY);
	check_err(llfree_get(&t.ll, 1, 10, false), LLFREE_ERR_MEMORY);
	tl_drain_all(&t);
	check(snap_same_lower(&s, &t));
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), frames - 6 - 2 * CHILD);
	check_eq(llfree_free_huge(&t.ll), 8);
	check_eq(llfree_free_at(&t.ll, 0, 12), TREE - 3 - CHILD);
	/* the free halves are still whole children */
	while ((r = llfree_get(&t.ll, n % 2, 9, false)).error == LLFREE_OK) {
		check_eq(r.frame % CHILD, 0);
		n++;
	}
	check_eq(n, 8);
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_huge(&t.ll), 0);
	snap_free(&s);
	tl_free(&t);
}

/* put of order 10 where one of the children is not a huge frame */
TEST(orders_pair_put_undo)
{
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 0, 9)); /* pair 0: huge + free */
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 9)); /* pair 1: huge + small */
	check_ok(llfree_get_at(&t.ll, 0, 3 * CHILD + 8, 3));
	check_ok(llfree_get_at(&t.ll, 0, 5 * CHILD, 9)); /* pair 2: free + huge */
	check_ok(llfree_get_at(&t.ll, 0, 6 * CHILD, 10)); /* pair 3: one order 10 */
	snap_take(&s, &t);
	check_err(llfree_put(&t.ll, 0, 0, 10), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	check_err(llfree_put(&t.ll, 0, 2 * CHILD, 10), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	check_err(llfree_put(&t.ll, 0, 4 * CHILD, 10), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	check(llfree_validate(&t.ll));
	check_ok(llfree_put(&t.ll, 0, 6 * CHILD, 10));
	check_ok(llfree_put(&t.ll, 0, 5 * CHILD, 9));
	check_ok(llfree_put(&t.ll, 0, 3 * CHILD + 8, 3));
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 9));
	check_ok(llfree_put(&t.ll, 0, 0, 9));
	check_eq(llfree_free_frames(&t.ll), TREE);
	check_eq(llfree_free_huge(&t.ll), 8);
	check(llfree_validate(&t.ll));
	snap_free(&s);
	tl_free(&t);
}

/* All small orders packed into one child, by get_at and by get */
TEST(orders_pack_child)
{
	struct tl t;

	if (!tl_init(&t, 1, CHILD, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 0, 0));
	for (size_t order = 0; order <= 8; order++)
		check_ok(llfree_get_at(&t.ll, 0, 1ull << order, order));
	check_eq(llfree_free_at(&t.ll, 0, 9), 0);
	check_eq(llfree_free_frames(&t.ll), 0);
	check_err(llfree_get(&t.ll, 0, 0, false), LLFREE_ERR_MEMORY);
	check(llfree_validate(&t.ll));
	for (size_t order = 0; order <= 8; order++)
		check_ok(llfree_put(&t.ll, 0, 1ull << order, order));
	check_ok(llfree_put(&t.ll, 0, 0, 0));
	llfree_drain(&t.ll, 0);
	check_eq(llfree_free_at(&t.ll, 0, 9), CHILD);
	check(llfree_validate(&t.ll));

	/* largest first, by get: fills the child exactly */
	for (int order = 8; order >= 0; order--) {
		llfree_result_t r = llfree_get(&t.ll, 0, (size_t)order, false);

		check_ok(r);
		check_eq(r.frame % (1ull << order), 0);
	}
	llfree_result_t last = llfree_get(&t.ll, 0, 0, false);
	check_ok(last);
	check_eq(llfree_free_frames(&t.ll), 0);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/*
 * Random small-order traffic inside a single child against a bitmap model:
 * get must fail only when the model has no free aligned block.
 */
TEST(orders_model_one_child)
{
	struct tl t;
	uint8_t model[CHILD];
	struct {
		uint64_t frame;
		size_t order;
	} live[CHILD];
	unsigned nlive = 0, ops = 3000 * test_params.iterations;
	uint64_t rng = test_params.seed ^ 0x0de5;

	if (!tl_init(&t, 1, CHILD, LLFREE_INIT_FREE))
		return;
	memset(model, 0, sizeof(model));
	for (unsigned i = 0; i < ops; i++) {
		bool do_get = nlive == 0 || rng_below(&rng, 100) < 55;

		if (do_get) {
			size_t order = rng_below(&rng, 9);
			uint64_t n = 1ull << order;
			llfree_result_t r = llfree_get(&t.ll, 0, order, false);
			bool any = false;

			for (uint64_t b = 0; b < CHILD && !any; b += n) {
				bool free_ = true;

				for (uint64_t f = b; f < b + n; f++)
					free_ = free_ && !model[f];
				any = free_;
			}
			if (r.error != LLFREE_OK) {
				check_eq(r.error, LLFREE_ERR_MEMORY);
				check(!any);
				if (any)
					break;
				continue;
			}
			check_or_return(r.frame % n == 0 && r.frame + n <= CHILD);
			for (uint64_t f = r.frame; f < r.frame + n; f++) {
				check_or_return(!model[f]);
				model[f] = 1;
			}
			live[nlive].frame = r.frame;
			live[nlive].order = order;
			nlive++;
		} else {
			unsigned k = (unsigned)rng_below(&rng, nlive);

			check_ok(llfree_put(&t.ll, 0, live[k].frame, live[k].order));
			for (uint64_t f = live[k].frame;
			     f < live[k].frame + (1ull << live[k].order); f++)
				model[f] = 0;
			live[k] = live[--nlive];
		}
		if (i % 64 == 0) {
			unsigned used = 0;

			for (unsigned f = 0; f < CHILD; f++)
				used += model[f];
			check_eq(llfree_free_frames(&t.ll), CHILD - used);
			check_eq(llfree_free_at(&t.ll, 0, 9), CHILD - used);
		}
	}
	while (nlive) {
		nlive--;
		check_ok(llfree_put(&t.ll, 0, live[nlive].frame, live[nlive].order));
	}
	llfree_drain(&t.ll, 0);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), CHILD);
	tl_free(&t);
}
