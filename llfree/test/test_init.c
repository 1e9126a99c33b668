// SPDX-License-Identifier: MIT
/*
 * Tests of metadata sizing, initialization (FREE, ALLOC, ATTACH), its error
 * paths, the shared layout and the trivial queries.
 */
#include "util.h"

TEST(init_metadata_size)
{
	llfree_meta_size_t s = llfree_metadata_size(4, 3 * TREE + 5 * CHILD + 7);
	uint64_t children = 3 * 8 + 5 + 1, trees = 4;

	check(s.local > 0);
	check(s.trees >= trees * LLFREE_TREE_BYTES);
	check(s.lower >= children * (LLFREE_CHILD_BITFIELD_BYTES +
				     LLFREE_CHILD_BYTES));
	/* per core local state grows with the cores */
	check(llfree_metadata_size(8, TREE).local >
	      llfree_metadata_size(1, TREE).local);
	/* the shared parts do not depend on the cores */
	check_eq(llfree_metadata_size(8, TREE).trees,
		 llfree_metadata_size(1, TREE).trees);
	check_eq(llfree_metadata_size(8, TREE).lower,
		 llfree_metadata_size(1, TREE).lower);
	/* about 36 KiB per GiB */
	s = llfree_metadata_size(1, 1ull << 18);
	check(s.trees + s.lower <= 40 * 1024);

	s = llfree_metadata_size(0, TREE);
	check(s.local == 0 && s.trees == 0 && s.lower == 0);
	s = llfree_metadata_size(1, 0);
	check(s.local == 0 && s.trees == 0 && s.lower == 0);
}

TEST(init_errors)
{
	llfree_meta_size_t s = llfree_metadata_size(2, TREE);
	char *local = tl_alloc(s.local + 64), *trees = tl_alloc(s.trees + 64),
	     *lower = tl_alloc(s.lower + 64);
	llfree_meta_t good = { local, trees, lower }, bad;
	llfree_t ll;

	check_err(llfree_init(&ll, 2, 0, LLFREE_INIT_FREE, good),
		  LLFREE_ERR_INIT);
	check_err(llfree_init(&ll, 0, TREE, LLFREE_INIT_FREE, good),
		  LLFREE_ERR_INIT);
	bad = good;
	bad.trees = trees + 8;
	check_err(llfree_init(&ll, 2, TREE, LLFREE_INIT_FREE, bad),
		  LLFREE_ERR_INIT);
	bad = good;
	bad.lower = lower + 2;
	check_err(llfree_init(&ll, 2, TREE, LLFREE_INIT_FREE, bad),
		  LLFREE_ERR_INIT);
	bad = good;
	bad.lower = NULL;
	check_err(llfree_init(&ll, 2, TREE, LLFREE_INIT_FREE, bad),
		  LLFREE_ERR_INIT);
	bad = good;
	bad.local = NULL;
	check_err(llfree_init(&ll, 2, TREE, LLFREE_INIT_FREE, bad),
		  LLFREE_ERR_INIT);
	check_err(llfree_init(&ll, 2, TREE, (enum llfree_init)7, good),
		  LLFREE_ERR_INIT);

	check_ok(llfree_init(&ll, 2, TREE, LLFREE_INIT_FREE, good));
	check(llfree_validate(&ll));
	free(local);
	free(trees);
	free(lower);
}

TEST(init_free)
{
	/* 2 trees, a third with 3 children and a partial one of 7 frames */
	const uint64_t frames = 2 * TREE + 3 * CHILD + 7;
	struct tl t;

	if (!tl_init(&t, 3, frames, LLFREE_INIT_FREE))
		return;
	check(llfree_validate(&t.ll));
	check_eq(llfree_frames(&t.ll), frames);
	check_eq(llfree_cores(&t.ll), 3);
	check_eq(llfree_free_frames(&t.ll), frames);
	/* the partial child can never be a huge frame */
	check_eq(llfree_free_huge(&t.ll), 2 * 8 + 3);
	check_eq(llfree_reclaimed_huge(&t.ll), 0);
	check_eq(llfree_reserved_trees(&t.ll), 0);
	check(llfree_is_free(&t.ll, 0, 10));
	check(llfree_is_free(&t.ll, frames - 1, 0));
	check(!llfree_is_free(&t.ll, frames, 0));
	check(!llfree_is_free(&t.ll, 2 * TREE + 3 * CHILD, 3)); /* crosses end */
	check(llfree_is_free(&t.ll, 2 * TREE + 3 * CHILD, 2));
	check_eq(llfree_free_at(&t.ll, 0, 12), TREE);
	check_eq(llfree_free_at(&t.ll, 2 * TREE, 12), 3 * CHILD + 7);
	check_eq(llfree_free_at(&t.ll, 2 * TREE + 3 * CHILD, 9), 7);
	check_eq(llfree_free_at(&t.ll, CHILD, 9), CHILD);
	check_eq(llfree_free_at(&t.ll, 5, 0), 1);

	llfree_meta_t m = llfree_metadata(&t.ll);
	check(m.local == t.meta.local);
	check(m.trees == t.meta.trees);
	check(m.lower == t.meta.lower);
	tl_free(&t);
}

TEST(init_alloc)
{
	const uint64_t frames = TREE + CHILD + 100;
	struct tl t;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_ALLOC))
		return;
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), 0);
	check_eq(llfree_free_huge(&t.ll), 0);
	check(!llfree_is_free(&t.ll, 0, 0));
	check(!llfree_is_free(&t.ll, frames - 1, 0));
	check_err(llfree_get(&t.ll, 0, 0, false), LLFREE_ERR_MEMORY);
	check_err(llfree_reclaim(&t.ll, 0, false), LLFREE_ERR_MEMORY);
	check_err(llfree_reclaim(&t.ll, 0, true), LLFREE_ERR_MEMORY);
	/* allocated as order-0 frames, but entirely: a child is freed whole */
	check_ok(llfree_put(&t.ll, 0, 0, 9));
	check_eq(llfree_free_frames(&t.ll), CHILD);
	check(llfree_validate(&t.ll));

	/* free every other frame one by one, then everything is back */
	for (uint64_t f = CHILD; f < frames; f++) {
		llfree_result_t r = llfree_put(&t.ll, f % 2, f, 0);

		if (r.error != LLFREE_OK) {
			check_ok(r);
			break;
		}
	}
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), frames);
	check_eq(llfree_free_huge(&t.ll), 8 + 1);
	check(llfree_is_free(&t.ll, 0, 10));
	check_eq(llfree_free_at(&t.ll, TREE, 12), CHILD + 100);
	/* and a second free of any of them is refused */
	check_err(llfree_put(&t.ll, 0, frames - 1, 0), LLFREE_ERR_ADDRESS);
	tl_free(&t);
}

/* Attaching reads the shared state without writing it */
TEST(init_attach)
{
	const uint64_t frames = 2 * TREE + CHILD + 3;
	struct tl t, a;
	struct snap s;
	uint64_t f1, f9;
	llfree_result_t r;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
		return;
	r = llfree_get(&t.ll, 0, 0, false);
	check_ok(r);
	f1 = r.frame;
	r = llfree_get(&t.ll, 1, 9, false);
	check_ok(r);
	f9 = r.frame;
	r = llfree_reclaim(&t.ll, 0, false);
	check_ok(r);
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));

	snap_take(&s, &t);
	if (!tl_attach(&a, &t, 4)) {
		snap_free(&s);
		tl_free(&t);
		return;
	}
	check(snap_same(&s, &t));
	check(llfree_validate(&a.ll));
	check_eq(llfree_frames(&a.ll), frames);
	check_eq(llfree_cores(&a.ll), 4);
	check_eq(llfree_free_frames(&a.ll), frames - 1 - CHILD);
	check_eq(llfree_free_huge(&a.ll), llfree_free_huge(&t.ll));
	check_eq(llfree_reclaimed_huge(&a.ll), 1);
	check(!llfree_is_free(&a.ll, f1, 0));
	check(!llfree_is_free(&a.ll, f9, 9));
	check(llfree_is_reclaimed(&a.ll, r.frame));

	/* both handles act on the same frames */
	check_err(llfree_get_at(&a.ll, 0, f1, 0), LLFREE_ERR_MEMORY);
	check_ok(llfree_put(&a.ll, 3, f1, 0));
	check(llfree_is_free(&t.ll, f1, 0));
	check_ok(llfree_put(&a.ll, 0, f9, 9));
	check_ok(llfree_install(&a.ll, r.frame));
	check(!llfree_is_reclaimed(&t.ll, r.frame));
	llfree_drain(&a.ll, 3);
	llfree_drain(&a.ll, 0);
	check(llfree_validate(&t.ll));
	check(llfree_validate(&a.ll));
	check_eq(llfree_free_frames(&t.ll), frames);
	check_eq(llfree_free_frames(&a.ll), frames);
	check_eq(llfree_free_huge(&t.ll), 2 * 8 + 1);
	snap_free(&s);
	tl_detach(&a);
	tl_free(&t);
}

/*
 * The shared arrays are guest-writable: attaching to entries with unused
 * bits or impossible counters must be refused, not trusted.
 */
TEST(init_attach_corrupt)
{
	struct tl t;
	llfree_t a;
	llfree_meta_t m;
	uint16_t *children;
	uint16_t *trees;
	void *local;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	local = tl_alloc(t.size.local);
	m = t.meta;
	m.local = local;
	children = (uint16_t *)((char *)t.meta.lower +
				8 * LLFREE_CHILD_BITFIELD_BYTES);
	trees = t.meta.trees;

	children[3] = 0xffff; /* unused bits set */
	check_err(llfree_init(&a, 1, TREE, LLFREE_INIT_ATTACH, m),
		  LLFREE_ERR_INIT);
	children[3] = CHILD + 1; /* more free frames than a child has */
	check_err(llfree_init(&a, 1, TREE, LLFREE_INIT_ATTACH, m),
		  LLFREE_ERR_INIT);
	children[3] = CHILD;
	trees[0] = TREE + 1; /* more free frames than a tree has */
	check_err(llfree_init(&a, 1, TREE, LLFREE_INIT_ATTACH, m),
		  LLFREE_ERR_INIT);
	trees[0] = TREE;
	check_ok(llfree_init(&a, 1, TREE, LLFREE_INIT_ATTACH, m));
	free(local);
	tl_free(&t);
}

/*
 * The layout is shared with the host (another build, another address
 * space): check it bit for bit against the header's description.
 */
TEST(init_layout)
{
	const uint64_t frames = TREE + 2 * CHILD + 70;
	const uint64_t children = 8 + 3;
	struct tl t;
	uint16_t *trees, *child;
	uint64_t *bf;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	trees = t.meta.trees;
	bf = t.meta.lower;
	child = (uint16_t *)((char *)t.meta.lower +
			     children * LLFREE_CHILD_BITFIELD_BYTES);

	check_eq(trees[0] & LLFREE_TREE_FREE_MASK, TREE);
	check_eq(trees[1] & LLFREE_TREE_FREE_MASK, 2 * CHILD + 70);
	check_eq(trees[0] & LLFREE_TREE_RESERVED, 0);
	for (uint64_t c = 0; c < 10; c++)
		check_eq(child[c], CHILD);
	check_eq(child[10], 70);
	for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++)
		check_eq(bf[3 * LLFREE_BITFIELD_WORDS + w], 0);

	/* frame 64 * w + i of child c is bit i of word w */
	check_ok(llfree_get_at(&t.ll, 0, 3 * CHILD + 64 * 5 + 9, 0));
	check_eq(bf[3 * LLFREE_BITFIELD_WORDS + 5], 1ull << 9);
	check_eq(child[3], CHILD - 1);
	check_ok(llfree_get_at(&t.ll, 0, 4 * CHILD, 9));
	check_eq(child[4], LLFREE_CHILD_HUGE);
	check(!tl_reclaim_child(&t, 9, false).reclaimed);
	check_eq(child[9], CHILD | LLFREE_CHILD_RECLAIMED);
	check(tl_reclaim_child(&t, 9, true).reclaimed);
	check_eq(child[9], LLFREE_CHILD_HUGE | LLFREE_CHILD_RECLAIMED);
	tl_drain_all(&t);
	check_eq(trees[0] & LLFREE_TREE_FREE_MASK, TREE - 1 - CHILD);
	check_eq(trees[1] & LLFREE_TREE_FREE_MASK, CHILD + 70);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(init_strerror)
{
	check(llfree_strerror(LLFREE_OK) != NULL);
	check(llfree_strerror(LLFREE_ERR_MEMORY) != NULL);
	check(llfree_strerror(LLFREE_ERR_INIT) != NULL);
	check(llfree_strerror(999) != NULL);
	check(strcmp(llfree_strerror(LLFREE_ERR_MEMORY),
		     llfree_strerror(LLFREE_ERR_ADDRESS)) != 0);
}

/* A single frame, a single child, exactly one tree */
TEST(init_small_sizes)
{
	static const uint64_t sizes[] = { 1, 63, 64, 65, CHILD - 1, CHILD,
					  CHILD + 1, TREE - 1, TREE, TREE + 1 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct tl t;
		uint64_t n = 0;
		llfree_result_t r;

		if (!tl_init(&t, 1, sizes[i], LLFREE_INIT_FREE))
			return;
		check(llfree_validate(&t.ll));
		check_eq(llfree_free_frames(&t.ll), sizes[i]);
		while ((r = llfree_get(&t.ll, 0, 0, false)).error == LLFREE_OK) {
			check(r.frame < sizes[i]);
			n++;
		}
		check_eq(r.error, LLFREE_ERR_MEMORY);
		check_eq(n, sizes[i]);
		check_eq(llfree_free_frames(&t.ll), 0);
		tl_drain_all(&t);
		check(llfree_validate(&t.ll));
		tl_free(&t);
	}
}
