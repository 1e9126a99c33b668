// SPDX-License-Identifier: MIT
/*
 * Tests of the queries (free_frames, free_huge, reclaimed_huge,
 * reserved_trees, is_free, free_at, is_reclaimed) and a seeded
 * single-threaded model test that runs every guest and host operation
 * (including frees of parts of blocks and of whole children allocated in
 * pieces) against a shadow of the expected state and compares after
 * every step.
 */
#include "util.h"

TEST(counters_with_reservations)
{
	const uint64_t frames = 4 * TREE;
	struct tl t;
	llfree_result_t r[4];

	if (!tl_init(&t, 4, frames, LLFREE_INIT_FREE))
		return;
	for (unsigned c = 0; c < 4; c++) {
		r[c] = llfree_get(&t.ll, c, c, c & 1);
		check_ok(r[c]);
	}
	/* exact although the free frames sit in reservations */
	check_eq(llfree_free_frames(&t.ll), frames - 1 - 2 - 4 - 8);
	check(llfree_reserved_trees(&t.ll) >= 1);
	check(llfree_reserved_trees(&t.ll) <= 4);
	{
		uint64_t distinct = 0;

		for (unsigned c = 0; c < 4; c++) {
			bool dup = false;

			for (unsigned d = 0; d < c; d++)
				dup |= r[d].frame / CHILD == r[c].frame / CHILD;
			distinct += !dup;
		}
		/* children in reserved trees count as well */
		check_eq(llfree_free_huge(&t.ll), 4 * 8 - distinct);
	}
	for (unsigned c = 0; c < 4; c++) {
		uint64_t tree = r[c].frame / TREE * TREE;
		uint64_t used = 0;

		for (unsigned d = 0; d < 4; d++)
			used += r[d].frame / TREE * TREE == tree ? 1ull << d : 0;
		/* per tree, reservations of this handle included */
		check_eq(llfree_free_at(&t.ll, r[c].frame, 12), TREE - used);
		check_eq(llfree_free_at(&t.ll, r[c].frame, 0), 0);
	}
	check(llfree_validate(&t.ll));
	for (unsigned c = 0; c < 4; c++)
		check_ok(llfree_put(&t.ll, 3 - c, r[c].frame, c));
	check_eq(llfree_free_frames(&t.ll), frames);
	tl_drain_all(&t);
	check_eq(llfree_reserved_trees(&t.ll), 0);
	check_eq(llfree_free_frames(&t.ll), frames);
	check_eq(llfree_free_huge(&t.ll), 4 * 8);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(counters_queries)
{
	const uint64_t frames = TREE + CHILD + 10;
	struct tl t;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD + 4, 2));
	check_ok(llfree_get_at(&t.ll, 0, 4 * CHILD, 9));
	check_ok(tl_reclaim_child(&t, 7, true));
	check_ok(tl_reclaim_child(&t, 6, false));

	check(llfree_is_free(&t.ll, 2 * CHILD, 2));
	check(!llfree_is_free(&t.ll, 2 * CHILD, 3));
	check(!llfree_is_free(&t.ll, 2 * CHILD + 7, 0));
	check(llfree_is_free(&t.ll, 2 * CHILD + 8, 3));
	check(!llfree_is_free(&t.ll, 2 * CHILD, 9));
	check(!llfree_is_free(&t.ll, 2 * CHILD, 10));
	check(llfree_is_free(&t.ll, 0, 10));
	/* inside a guest huge frame */
	check(!llfree_is_free(&t.ll, 4 * CHILD + 100, 0));
	check(!llfree_is_free(&t.ll, 4 * CHILD + 64, 6));
	check(!llfree_is_free(&t.ll, 4 * CHILD, 10));
	check_eq(llfree_free_at(&t.ll, 4 * CHILD + 100, 0), 0);
	check_eq(llfree_free_at(&t.ll, 4 * CHILD, 9), 0);
	/* soft: free; hard: allocated */
	check(llfree_is_free(&t.ll, 6 * CHILD, 9));
	check(llfree_is_free(&t.ll, 6 * CHILD + 3, 0));
	check_eq(llfree_free_at(&t.ll, 6 * CHILD + 3, 9), CHILD);
	check(!llfree_is_free(&t.ll, 7 * CHILD, 9));
	check(!llfree_is_free(&t.ll, 7 * CHILD + 3, 0));
	check(!llfree_is_free(&t.ll, 6 * CHILD, 10));
	check_eq(llfree_free_at(&t.ll, 7 * CHILD + 3, 0), 0);
	check_eq(llfree_free_at(&t.ll, 7 * CHILD + 3, 9), 0);
	check(llfree_is_reclaimed(&t.ll, 6 * CHILD + 511));
	check(llfree_is_reclaimed(&t.ll, 7 * CHILD));
	check(!llfree_is_reclaimed(&t.ll, 5 * CHILD));
	check(!llfree_is_reclaimed(&t.ll, frames));
	check(!llfree_is_reclaimed(&t.ll, UINT64_MAX));
	/* block sizes: 0, 9 and 12 */
	check_eq(llfree_free_at(&t.ll, 2 * CHILD + 4, 0), 0);
	check_eq(llfree_free_at(&t.ll, 2 * CHILD + 3, 0), 1);
	check_eq(llfree_free_at(&t.ll, 2 * CHILD + 300, 9), CHILD - 4);
	check_eq(llfree_free_at(&t.ll, 100, 12), TREE - 4 - 2 * CHILD);
	check_eq(llfree_free_at(&t.ll, TREE + CHILD + 3, 9), 10);
	check_eq(llfree_free_at(&t.ll, TREE + 5, 12), CHILD + 10);
	/* out of range */
	check(!llfree_is_free(&t.ll, frames, 0));
	check(!llfree_is_free(&t.ll, frames - 8, 4));
	check(!llfree_is_free(&t.ll, 0, LLFREE_MAX_ORDER + 1));
	check_eq(llfree_free_at(&t.ll, frames, 0), 0);
	check_eq(llfree_free_at(&t.ll, frames + TREE, 12), 0);

	check_eq(llfree_free_frames(&t.ll), frames - 4 - 2 * CHILD);
	check_eq(llfree_free_huge(&t.ll), 8 + 1 - 4);
	check_eq(llfree_reclaimed_huge(&t.ll), 2);
	check_eq(llfree_reserved_trees(&t.ll), 0);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/*
 * validate() is the safety net of every other test: it must notice a
 * counter that disagrees with the bitfield, a tree that disagrees with its
 * children, and entries with impossible values.
 */
TEST(counters_validate_detects)
{
	struct tl t;
	uint16_t *trees, *children, saved;
	uint64_t *bf, savedw;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	trees = t.meta.trees;
	bf = t.meta.lower;
	children = (uint16_t *)((char *)t.meta.lower + 8 * LLFREE_CHILD_BITFIELD_BYTES);
	check(llfree_validate(&t.ll));
	fprintf(stderr, "  (the following llfree validation messages are expected)\n");

	savedw = bf[2 * 8 + 1];
	bf[2 * 8 + 1] = 1; /* a bit without counter */
	check(!llfree_validate(&t.ll));
	bf[2 * 8 + 1] = savedw;

	saved = children[5];
	children[5] = CHILD - 1; /* a counter without a bit */
	check(!llfree_validate(&t.ll));
	children[5] = LLFREE_CHILD_HUGE | 3; /* huge with free frames */
	check(!llfree_validate(&t.ll));
	children[5] = 0x8000 | CHILD; /* unused bit */
	check(!llfree_validate(&t.ll));
	children[5] = saved;

	saved = trees[0];
	trees[0] = (uint16_t)(saved - 1); /* tree disagrees with children */
	check(!llfree_validate(&t.ll));
	trees[0] = saved;
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/* get_at must find free frames even when a tree's count is split between
 * a reservation and the tree entry */
TEST(counters_get_at_split_count)
{
	struct tl t;
	llfree_result_t r;
	uint64_t *list, n = 0;

	if (!tl_init(&t, 2, TREE, LLFREE_INIT_FREE))
		return;
	list = malloc(TREE * sizeof(*list));
	/* core 0 reserves the only tree and leaves 96 frames in it */
	while (n < TREE - 96) {
		r = llfree_get(&t.ll, 0, 0, false);
		check_ok(r);
		if (r.error != LLFREE_OK)
			break;
		list[n++] = r.frame;
	}
	check_eq(llfree_reserved_trees(&t.ll), 1);
	/* core 1 frees a whole aligned row of 128 frames (into the tree entry) */
	for (uint64_t i = 0; i < n; i++) {
		if (list[i] >= 3 * CHILD + 128 && list[i] < 3 * CHILD + 256)
			check_ok(llfree_put(&t.ll, 1, list[i], 0));
	}
	check_eq(llfree_free_frames(&t.ll), 96 + 128);
	check(llfree_is_free(&t.ll, 3 * CHILD + 128, 7));
	r = llfree_get_at(&t.ll, 1, 3 * CHILD + 128, 7);
	check_ok(r);
	check_eq(llfree_free_frames(&t.ll), 96);
	tl_drain_all(&t);
	check(llfree_validate(&t.ll));
	free(list);
	tl_free(&t);
}

/* Model test ------------------------------------------------------------ */

enum host_state { INSTALLED, SOFT, HARD };

struct model {
	struct tl t;
	uint64_t frames, children, cores;
	uint8_t *alloc; /* per frame: allocated by the guest */
	uint8_t *state; /* per child: enum host_state */
	struct tl_block *live;
	uint64_t nlive;
	uint64_t rng;
};

static unsigned cap_of(const struct model *m, uint64_t c)
{
	uint64_t rest = m->frames - c * CHILD;

	return rest < CHILD ? (unsigned)rest : CHILD;
}

static bool child_all_free(const struct model *m, uint64_t c)
{
	if (cap_of(m, c) != CHILD || m->state[c] == HARD)
		return false;
	for (uint64_t f = c * CHILD; f < (c + 1) * CHILD; f++) {
		if (m->alloc[f])
			return false;
	}
	return true;
}

/* A block the guest could get: in range, no frame allocated, not hard */
static bool block_free(const struct model *m, uint64_t frame, size_t order)
{
	uint64_t n = 1ull << order;

	if (frame + n > m->frames)
		return false;
	for (uint64_t f = frame; f < frame + n; f++) {
		if (m->alloc[f] || m->state[f / CHILD] == HARD)
			return false;
	}
	return true;
}

static bool any_block_free(const struct model *m, size_t order)
{
	for (uint64_t f = 0; f < m->frames; f += 1ull << order) {
		if (block_free(m, f, order))
			return true;
	}
	return false;
}

static bool covers_soft(const struct model *m, uint64_t frame, size_t order)
{
	uint64_t last = (frame + (1ull << order) - 1) / CHILD;

	for (uint64_t c = frame / CHILD; c <= last; c++) {
		if (m->state[c] == SOFT)
			return true;
	}
	return false;
}

static bool model_install_cb(void *ctx, uint64_t child_frame)
{
	struct model *m = ctx;
	uint64_t c = child_frame / CHILD;

	check_eq(child_frame % CHILD, 0);
	check_eq(m->state[c], SOFT);
	if (m->state[c] != SOFT)
		return false;
	m->state[c] = INSTALLED;
	return llfree_install(&m->t.ll, child_frame).error == LLFREE_OK;
}

static void model_compare(struct model *m)
{
	uint64_t free = 0, huge = 0, reclaimed = 0;

	for (uint64_t c = 0; c < m->children; c++) {
		unsigned used = 0;

		for (uint64_t f = c * CHILD; f < c * CHILD + cap_of(m, c); f++)
			used += m->alloc[f];
		if (m->state[c] != HARD)
			free += cap_of(m, c) - used;
		huge += child_all_free(m, c) && m->state[c] == INSTALLED;
		reclaimed += m->state[c] != INSTALLED;
		check_eq(llfree_is_reclaimed(&m->t.ll, c * CHILD),
			 m->state[c] != INSTALLED);
		check_eq(llfree_free_at(&m->t.ll, c * CHILD, 9),
			 m->state[c] == HARD ? 0 : cap_of(m, c) - used);
	}
	check_eq(llfree_free_frames(&m->t.ll), free);
	check_eq(llfree_free_huge(&m->t.ll), huge);
	check_eq(llfree_reclaimed_huge(&m->t.ll), reclaimed);
	for (unsigned i = 0; i < 16; i++) {
		uint64_t f = rng_below(&m->rng, m->frames);

		check_eq(llfree_is_free(&m->t.ll, f, 0), block_free(m, f, 0));
	}
}

static void model_take(struct model *m, llfree_result_t r, size_t order)
{
	check_eq(r.reclaimed, covers_soft(m, r.frame, order));
	check_or_return(r.frame % (1ull << order) == 0);
	check_or_return(block_free(m, r.frame, order));
	for (uint64_t f = r.frame; f < r.frame + (1ull << order); f++)
		m->alloc[f] = 1;
	m->live[m->nlive].frame = r.frame;
	m->live[m->nlive].order = order;
	m->nlive++;
	if (r.reclaimed)
		check(llfree_install_covered(&m->t.ll, r.frame, order,
					     model_install_cb, m) >= 1);
	check(!covers_soft(m, r.frame, order));
}

/* Free one piece of a live block; the rest stays live as buddy blocks */
static void model_put_piece(struct model *m, size_t core)
{
	uint64_t k, piece;
	struct tl_block b;
	size_t q;

	if (!m->nlive)
		return;
	k = rng_below(&m->rng, m->nlive);
	b = m->live[k];
	if (b.order == 0)
		return;
	q = rng_below(&m->rng, b.order);
	piece = b.frame + (rng_below(&m->rng, 1ull << (b.order - q)) << q);
	check_ok(llfree_put(&m->t.ll, core, piece, q));
	for (uint64_t f = piece; f < piece + (1ull << q); f++)
		m->alloc[f] = 0;
	m->live[k] = m->live[--m->nlive];
	for (size_t l = q; l < b.order; l++) {
		m->live[m->nlive].frame = (piece >> l ^ 1) << l;
		m->live[m->nlive].order = l;
		m->nlive++;
	}
}

/*
 * Free a random child with one order-9 put: allowed exactly when all its
 * frames are allocated, in whatever pieces (huge, split, never huge, half
 * of an order-10 block)
 */
static void model_put_child(struct model *m, size_t core)
{
	uint64_t c = rng_below(&m->rng, m->children), first = c * CHILD;
	bool all = cap_of(m, c) == CHILD;
	llfree_result_t r;

	for (uint64_t f = first; all && f < first + CHILD; f++)
		all = m->alloc[f];
	r = llfree_put(&m->t.ll, core, first, 9);
	check_eq(r.error == LLFREE_OK, all);
	if (r.error != LLFREE_OK)
		return;
	memset(&m->alloc[first], 0, CHILD);
	for (uint64_t i = 0; i < m->nlive;) {
		struct tl_block *b = &m->live[i];

		if (b->frame + (1ull << b->order) <= first ||
		    b->frame >= first + CHILD) {
			i++;
		} else if (b->order > 9) { /* the other half stays */
			if (b->frame == first)
				b->frame += CHILD;
			b->order = 9;
			i++;
		} else {
			*b = m->live[--m->nlive];
		}
	}
}

static void model_step(struct model *m)
{
	uint64_t op = rng_below(&m->rng, 100);
	size_t core = rng_below(&m->rng, m->cores);
	size_t order = rng_order(&m->rng);
	llfree_result_t r;

	if (op < 35) { /* get */
		r = llfree_get(&m->t.ll, core, order, op & 1);
		if (r.error == LLFREE_OK)
			model_take(m, r, order);
		else {
			check_eq(r.error, LLFREE_ERR_MEMORY);
			check(!any_block_free(m, order));
		}
	} else if (op < 57) { /* put */
		if (!m->nlive)
			return;
		uint64_t k = rng_below(&m->rng, m->nlive);
		struct tl_block b = m->live[k];

		check_ok(llfree_put(&m->t.ll, core, b.frame, b.order));
		for (uint64_t f = b.frame; f < b.frame + (1ull << b.order); f++)
			m->alloc[f] = 0;
		m->live[k] = m->live[--m->nlive];
	} else if (op < 63) { /* put a piece of a block (a split if huge) */
		model_put_piece(m, core);
	} else if (op < 65) { /* put a whole child, allocated in any pieces */
		model_put_child(m, core);
	} else if (op < 70) { /* put of a free block: refused */
		uint64_t f = rng_below(&m->rng, m->frames) & ~((1ull << order) - 1);

		if (block_free(m, f, order))
			check_err(llfree_put(&m->t.ll, core, f, order),
				  LLFREE_ERR_ADDRESS);
	} else if (op < 78) { /* get_at, with every reservation drained */
		uint64_t f = rng_below(&m->rng, m->frames) & ~((1ull << order) - 1);
		bool expect = block_free(m, f, order);

		tl_drain_all(&m->t);
		r = llfree_get_at(&m->t.ll, core, f, order);
		check_eq(r.error == LLFREE_OK, expect);
		if (r.error == LLFREE_OK)
			model_take(m, r, order);
	} else if (op < 90) { /* host reclaim, soft or hard */
		bool hard = op & 1, soft_first = false, any = false;
		uint64_t c;

		tl_drain_all(&m->t);
		for (c = 0; c < m->children; c++) {
			if (child_all_free(m, c) && (hard || m->state[c] == INSTALLED))
				any = true;
			if (child_all_free(m, c) && m->state[c] == SOFT)
				soft_first = true;
		}
		r = llfree_reclaim(&m->t.ll, rng_below(&m->rng, m->children), hard);
		check_eq(r.error == LLFREE_OK, any);
		if (r.error != LLFREE_OK)
			return;
		check_or_return(r.frame % CHILD == 0 && r.frame < m->frames);
		c = r.frame / CHILD;
		check_or_return(child_all_free(m, c));
		if (hard) {
			check_eq(r.reclaimed, m->state[c] == SOFT);
			/* one tree only: a soft child is preferred */
			if (m->children <= 8)
				check_eq(r.reclaimed, soft_first);
			m->state[c] = HARD;
		} else {
			check_eq(m->state[c], INSTALLED);
			m->state[c] = SOFT;
		}
	} else if (op < 95) { /* return */
		uint64_t c = rng_below(&m->rng, m->children);

		r = llfree_return(&m->t.ll, c * CHILD);
		check_eq(r.error == LLFREE_OK, m->state[c] == HARD);
		if (r.error == LLFREE_OK)
			m->state[c] = SOFT;
	} else { /* install (the host never installs a hard child) */
		uint64_t c = rng_below(&m->rng, m->children);

		if (m->state[c] == HARD)
			return;
		r = llfree_install(&m->t.ll, c * CHILD);
		check_eq(r.error == LLFREE_OK, m->state[c] == SOFT);
		if (r.error == LLFREE_OK)
			m->state[c] = INSTALLED;
	}
}

static void model_run(uint64_t frames, uint64_t cores, unsigned steps)
{
	struct model m;

	memset(&m, 0, sizeof(m));
	m.frames = frames;
	m.cores = cores;
	m.children = (frames + CHILD - 1) / CHILD;
	m.rng = test_params.seed ^ frames;
	if (!tl_init(&m.t, cores, frames, LLFREE_INIT_FREE))
		return;
	m.alloc = calloc(frames, 1);
	m.state = calloc(m.children, 1);
	m.live = calloc(frames, sizeof(*m.live));
	for (unsigned i = 0; i < steps; i++) {
		model_step(&m);
		if (i % 8 == 0)
			model_compare(&m);
		if (i % 64 == 0) {
			bool ok = llfree_validate(&m.t.ll);

			check(ok);
			if (!ok) {
				printf("  model step %u (seed %" PRIu64 ")\n", i,
				       test_params.seed);
				break;
			}
		}
	}
	while (m.nlive) {
		m.nlive--;
		check_ok(llfree_put(&m.t.ll, 0, m.live[m.nlive].frame,
				    m.live[m.nlive].order));
	}
	for (uint64_t c = 0; c < m.children; c++) {
		if (m.state[c] == HARD)
			check_ok(llfree_return(&m.t.ll, c * CHILD));
		if (m.state[c] != INSTALLED)
			check_ok(llfree_install(&m.t.ll, c * CHILD));
	}
	tl_drain_all(&m.t);
	check(llfree_validate(&m.t.ll));
	check_eq(llfree_free_frames(&m.t.ll), frames);
	check_eq(llfree_reclaimed_huge(&m.t.ll), 0);
	check_eq(llfree_reserved_trees(&m.t.ll), 0);
	free(m.alloc);
	free(m.state);
	free(m.live);
	tl_free(&m.t);
}

TEST(counters_model_one_tree)
{
	model_run(TREE, 2, 4000 * test_params.iterations);
}

TEST(counters_model_trees)
{
	model_run(3 * TREE + 2 * CHILD + 77, 4, 4000 * test_params.iterations);
}
