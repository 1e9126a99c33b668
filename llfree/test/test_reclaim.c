// SPDX-License-Identifier: MIT
/*
 * API tests of the host operations (reclaim soft and hard, return,
 * install) and of the guest's side of them: reclaimed results,
 * llfree_install_covered, and the preference for installed children.
 */
#include "util.h"

TEST(reclaim_soft)
{
	const uint64_t frames = 2 * TREE;
	struct tl t;
	llfree_result_t r;
	uint64_t seen = 0, n = 0;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	while ((r = llfree_reclaim(&t.ll, n * 5, false)).error == LLFREE_OK) {
		uint64_t c = r.frame / CHILD;

		check_eq(r.frame % CHILD, 0);
		check(!r.reclaimed);
		check_or_return(c < 16 && !(seen & (1ull << c)));
		seen |= 1ull << c;
		n++;
		/* the child stays free for the guest */
		check(llfree_is_reclaimed(&t.ll, r.frame));
		check(llfree_is_reclaimed(&t.ll, r.frame + CHILD - 1));
		check(llfree_is_free(&t.ll, r.frame, 9));
		check_eq(llfree_free_at(&t.ll, r.frame, 9), CHILD);
		check_eq(llfree_free_frames(&t.ll), frames);
		check_eq(llfree_free_huge(&t.ll), 16 - n);
		check_eq(llfree_reclaimed_huge(&t.ll), n);
		check(llfree_validate(&t.ll));
	}
	check_eq(r.error, LLFREE_ERR_MEMORY);
	check_eq(n, 16);
	/* install clears the flag, once */
	check_ok(llfree_install(&t.ll, 7 * CHILD));
	check(!llfree_is_reclaimed(&t.ll, 7 * CHILD));
	check_fails(llfree_install(&t.ll, 7 * CHILD));
	check_eq(llfree_free_huge(&t.ll), 1);
	check_eq(llfree_reclaimed_huge(&t.ll), 15);
	check(llfree_validate(&t.ll));
	/* and the child can be reclaimed again */
	r = llfree_reclaim(&t.ll, 0, false);
	check_ok(r);
	check_eq(r.frame, 7 * CHILD);
	tl_free(&t);
}

/* After a device reset the guest clears soft children, never allocations */
TEST(reclaim_unreclaim_free)
{
	const uint64_t frames = TREE + 100;
	struct tl t;
	struct snap s;
	llfree_result_t r;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	/* hard first: a hard reclaim would prefer a soft child */
	check_ok(tl_reclaim_child(&t, 3, true)); /* child 3: hard */
	check_ok(tl_reclaim_child(&t, 2, false)); /* child 2: soft */
	check_ok(tl_reclaim_child(&t, 4, false)); /* child 4: soft, then guest's */
	r = llfree_get_at(&t.ll, 0, 4 * CHILD, 9);
	check_ok(r);
	check(r.reclaimed);
	check_ok(llfree_get_at(&t.ll, 0, 0, 0)); /* child 0: small */
	snap_take(&s, &t);

	/* everything but a free soft child stays as it is */
	check_fails(llfree_unreclaim_free(&t.ll, 0));
	check_fails(llfree_unreclaim_free(&t.ll, CHILD)); /* free, not reclaimed */
	check_fails(llfree_unreclaim_free(&t.ll, 3 * CHILD)); /* hard */
	check_fails(llfree_unreclaim_free(&t.ll, 4 * CHILD)); /* allocation */
	check_fails(llfree_unreclaim_free(&t.ll, 2 * CHILD + 1)); /* unaligned */
	check_fails(llfree_unreclaim_free(&t.ll, frames));
	check_fails(llfree_unreclaim_free(&t.ll, 1ull << 40));
	check(snap_same(&s, &t));
	snap_free(&s);

	check_ok(llfree_unreclaim_free(&t.ll, 2 * CHILD));
	check(!llfree_is_reclaimed(&t.ll, 2 * CHILD));
	check(llfree_is_free(&t.ll, 2 * CHILD, 9));
	check_fails(llfree_unreclaim_free(&t.ll, 2 * CHILD));
	check_eq(llfree_reclaimed_huge(&t.ll), 2);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/* The start hint is a frame: the search starts in its tree and wraps */
TEST(reclaim_start_hint)
{
	struct tl t;
	llfree_result_t r;

	if (!tl_init(&t, 1, 4 * TREE, LLFREE_INIT_FREE))
		return;
	for (unsigned hard = 0; hard <= 1; hard++) {
		for (unsigned i = 0; i < 4; i++) {
			r = llfree_reclaim(&t.ll, 2 * TREE + 5 * CHILD, hard);
			check_ok(r);
			check_eq(r.frame / TREE, 2);
		}
	}
	/* tree 2 has no free installed children left */
	for (unsigned i = 0; i < 8; i++) {
		r = llfree_reclaim(&t.ll, 3 * TREE + 100, false);
		check_ok(r);
		check_eq(r.frame / TREE, 3);
	}
	r = llfree_reclaim(&t.ll, 3 * TREE + 100, false);
	check_ok(r);
	check_eq(r.frame / TREE, 0); /* wrapped around */
	/* far out of range: still a valid hint */
	r = llfree_reclaim(&t.ll, UINT64_MAX, false);
	check_ok(r);
	check(r.frame < 4 * TREE && r.frame % CHILD == 0);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(reclaim_skips_used_and_partial)
{
	/* child 0 in use, child 1 huge, child 3 partial at the end */
	const uint64_t frames = 3 * CHILD + 100;
	struct tl t;
	llfree_result_t r;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 17, 0));
	check_ok(llfree_get_at(&t.ll, 0, CHILD, 9));
	r = llfree_reclaim(&t.ll, 0, false);
	check_ok(r);
	check_eq(r.frame, 2 * CHILD);
	check_err(llfree_reclaim(&t.ll, 0, false), LLFREE_ERR_MEMORY);
	r = llfree_reclaim(&t.ll, 0, true);
	check_ok(r);
	check_eq(r.frame, 2 * CHILD);
	check(r.reclaimed);
	check_err(llfree_reclaim(&t.ll, 0, true), LLFREE_ERR_MEMORY);
	check_eq(llfree_free_frames(&t.ll), frames - 1 - 2 * CHILD);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(reclaim_hard)
{
	struct tl t;
	llfree_result_t r, soft;
	uint64_t seen = 0;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	/* a soft child in the middle of the tree */
	soft = tl_reclaim_child(&t, 5, false);
	check_ok(soft);
	/* hard prefers the already soft child and says so */
	r = llfree_reclaim(&t.ll, 0, true);
	check_ok(r);
	check_eq(r.frame, soft.frame);
	check(r.reclaimed);
	seen |= 1ull << (r.frame / CHILD);
	check_eq(llfree_free_frames(&t.ll), TREE - CHILD);
	check_eq(llfree_free_at(&t.ll, 0, 12), TREE - CHILD);
	check_eq(llfree_free_at(&t.ll, r.frame, 9), 0);
	check(!llfree_is_free(&t.ll, r.frame, 0));
	check(!llfree_is_free(&t.ll, r.frame, 9));
	check(llfree_is_reclaimed(&t.ll, r.frame));
	check_eq(llfree_reclaimed_huge(&t.ll), 1);
	check_eq(llfree_free_huge(&t.ll), 7);
	check(llfree_validate(&t.ll));

	for (unsigned i = 1; i < 8; i++) {
		r = llfree_reclaim(&t.ll, i, true);
		check_ok(r);
		check(!r.reclaimed);
		check_or_return(!(seen & (1ull << (r.frame / CHILD))));
		seen |= 1ull << (r.frame / CHILD);
		check_eq(llfree_free_frames(&t.ll), TREE - (i + 1) * CHILD);
		check_eq(llfree_reclaimed_huge(&t.ll), i + 1);
		check_eq(llfree_free_huge(&t.ll), 7 - i);
		check(llfree_validate(&t.ll));
	}
	check_err(llfree_reclaim(&t.ll, 0, true), LLFREE_ERR_MEMORY);
	check_err(llfree_reclaim(&t.ll, 0, false), LLFREE_ERR_MEMORY);
	/* the guest sees everything allocated */
	check_err(llfree_get(&t.ll, 0, 0, false), LLFREE_ERR_MEMORY);
	check_err(llfree_get(&t.ll, 0, 9, false), LLFREE_ERR_MEMORY);
	check_err(llfree_get_at(&t.ll, 0, 0, 0), LLFREE_ERR_MEMORY);
	check_err(llfree_get_at(&t.ll, 0, CHILD, 9), LLFREE_ERR_MEMORY);
	llfree_drain(&t.ll, 0);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), 0);

	/* return: back to soft, the frames count again, nothing installed */
	for (unsigned c = 0; c < 8; c++) {
		check_ok(llfree_return(&t.ll, c * CHILD));
		check(llfree_is_reclaimed(&t.ll, c * CHILD));
		check(llfree_is_free(&t.ll, c * CHILD, 9));
		check_eq(llfree_free_frames(&t.ll), (c + 1) * CHILD);
		check_eq(llfree_free_huge(&t.ll), 0);
		check_eq(llfree_reclaimed_huge(&t.ll), 8);
		check(llfree_validate(&t.ll));
		/* a second return is refused (the child is soft now) */
		check_fails(llfree_return(&t.ll, c * CHILD));
	}
	for (unsigned c = 0; c < 8; c++)
		check_ok(llfree_install(&t.ll, c * CHILD));
	check_eq(llfree_free_huge(&t.ll), 8);
	check_eq(llfree_reclaimed_huge(&t.ll), 0);
	check_eq(llfree_free_frames(&t.ll), TREE);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(reclaim_return_install_errors)
{
	const uint64_t frames = TREE + 100;
	struct tl t;
	struct snap s;
	llfree_result_t soft;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 3, 0)); /* child 0: small */
	check_ok(llfree_get_at(&t.ll, 0, CHILD, 9)); /* child 1: huge */
	soft = llfree_reclaim(&t.ll, 2, false);
	check_ok(soft);
	check_eq(soft.frame, 2 * CHILD);
	snap_take(&s, &t);

	/* return needs a hard-reclaimed child */
	check_fails(llfree_return(&t.ll, 0)); /* small allocation */
	check_fails(llfree_return(&t.ll, CHILD)); /* guest huge frame */
	check_fails(llfree_return(&t.ll, 2 * CHILD)); /* soft */
	check_fails(llfree_return(&t.ll, 3 * CHILD)); /* installed, free */
	check_fails(llfree_return(&t.ll, TREE)); /* partial child */
	check_fails(llfree_return(&t.ll, frames)); /* out of range */
	check_fails(llfree_return(&t.ll, 1ull << 40));
	/* install needs a reclaimed child */
	check_fails(llfree_install(&t.ll, 0));
	check_fails(llfree_install(&t.ll, CHILD));
	check_fails(llfree_install(&t.ll, 3 * CHILD));
	check_fails(llfree_install(&t.ll, frames));
	check_fails(llfree_install(&t.ll, 1ull << 40));
	check(snap_same(&s, &t));
	check(llfree_validate(&t.ll));

	/* a guest free of a huge frame never makes it reclaimed */
	check_ok(llfree_put(&t.ll, 0, CHILD, 9));
	check(!llfree_is_reclaimed(&t.ll, CHILD));
	check_fails(llfree_install(&t.ll, CHILD));
	snap_free(&s);
	tl_free(&t);
}

/* Reserved trees are never reclaimed; after a drain they are */
TEST(reclaim_reserved_trees)
{
	const uint64_t frames = 2 * TREE;

	for (int hard = 0; hard <= 1; hard++) {
		struct tl t;
		llfree_result_t g, r;
		uint64_t n = 0, tree;

		if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
			return;
		g = llfree_get(&t.ll, 0, 0, false);
		check_ok(g);
		tree = g.frame / TREE;
		check_eq(llfree_reserved_trees(&t.ll), 1);
		while ((r = llfree_reclaim(&t.ll, n, hard)).error == LLFREE_OK) {
			check(r.frame / TREE != tree);
			n++;
		}
		check_eq(r.error, LLFREE_ERR_MEMORY);
		check_eq(n, 8);
		check(llfree_validate(&t.ll));
		/* the reservation still works and is still exact */
		check_ok(llfree_get(&t.ll, 0, 0, false));
		check_eq(llfree_free_frames(&t.ll),
			 frames - 2 - (hard ? 8 * CHILD : 0));

		llfree_drain(&t.ll, 0);
		check_eq(llfree_reserved_trees(&t.ll), 0);
		while ((r = llfree_reclaim(&t.ll, 0, hard)).error == LLFREE_OK) {
			check_eq(r.frame / TREE, tree);
			check(r.frame / CHILD != g.frame / CHILD);
			n++;
		}
		check_eq(n, 15);
		check_eq(llfree_free_frames(&t.ll),
			 hard ? CHILD - 2 : frames - 2);
		check_eq(llfree_reclaimed_huge(&t.ll), 15);
		check(llfree_validate(&t.ll));
		tl_free(&t);
	}
}

/* A tree reserved by an attached guest is invisible to the host's reclaim */
TEST(reclaim_reserved_by_other_handle)
{
	struct tl guest, host;
	llfree_result_t g;

	if (!tl_init(&guest, 1, TREE, LLFREE_INIT_FREE))
		return;
	if (!tl_attach(&host, &guest, 1)) {
		tl_free(&guest);
		return;
	}
	g = llfree_get(&guest.ll, 0, 9, false);
	check_ok(g);
	check_err(llfree_reclaim(&host.ll, 0, false), LLFREE_ERR_MEMORY);
	check_err(llfree_reclaim(&host.ll, 0, true), LLFREE_ERR_MEMORY);
	llfree_drain(&guest.ll, 0);
	check_ok(llfree_reclaim(&host.ll, 0, true));
	check_eq(llfree_free_frames(&guest.ll), TREE - 2 * CHILD);
	check_eq(llfree_free_frames(&host.ll), TREE - 2 * CHILD);
	check(llfree_validate(&host.ll));
	tl_detach(&host);
	tl_free(&guest);
}

/* The guest allocates soft children, reports them, and installs them */
TEST(reclaim_guest_gets_soft)
{
	struct tl t;
	llfree_result_t r;
	uint64_t in, out; /* first frames of the installed and the soft child */

	if (!tl_init(&t, 1, 2 * CHILD, LLFREE_INIT_FREE))
		return;
	check_ok(tl_reclaim_child(&t, 0, false));
	check_ok(tl_reclaim_child(&t, 1, false));

	/* small frames from a soft child */
	r = llfree_get(&t.ll, 0, 3, false);
	check_ok(r);
	check(r.reclaimed);
	check(llfree_is_reclaimed(&t.ll, r.frame));
	check_eq(llfree_free_frames(&t.ll), 2 * CHILD - 8);
	in = r.frame & ~(uint64_t)(CHILD - 1);
	out = in ^ CHILD;
	check_ok(llfree_install(&t.ll, in));
	check(!llfree_is_reclaimed(&t.ll, r.frame));
	check(llfree_is_reclaimed(&t.ll, out));
	/* the next one comes from the installed child */
	r = llfree_get(&t.ll, 0, 0, false);
	check_ok(r);
	check(!r.reclaimed);
	check_eq(r.frame / CHILD, in / CHILD);

	/* get_at of the soft child */
	r = llfree_get_at(&t.ll, 0, out + 64, 6);
	check_ok(r);
	check(r.reclaimed);
	check_ok(llfree_put(&t.ll, 0, out + 64, 6));
	check(llfree_is_reclaimed(&t.ll, out));
	r = llfree_get_at(&t.ll, 0, out, 9);
	check_ok(r);
	check(r.reclaimed);
	check(llfree_is_reclaimed(&t.ll, out));
	check_eq(llfree_reclaimed_huge(&t.ll), 1);
	check_ok(llfree_install(&t.ll, out));
	check_eq(llfree_reclaimed_huge(&t.ll), 0);
	check_ok(llfree_put(&t.ll, 0, out, 9));
	check(!llfree_is_reclaimed(&t.ll, out));
	llfree_drain(&t.ll, 0);
	check(llfree_validate(&t.ll));
	check_eq(llfree_free_frames(&t.ll), 2 * CHILD - 9);
	tl_free(&t);
}

/* Installed children before reclaimed ones, for huge and small orders */
TEST(reclaim_guest_prefers_installed)
{
	for (size_t order = 0; order <= 9; order += 3) {
		struct tl t;
		llfree_result_t soft, r;

		if (!tl_init(&t, 1, 2 * CHILD, LLFREE_INIT_FREE))
			return;
		soft = llfree_reclaim(&t.ll, order % 2, false);
		check_ok(soft);
		r = llfree_get(&t.ll, 0, order, false);
		check_ok(r);
		check(!r.reclaimed);
		check(r.frame / CHILD != soft.frame / CHILD);
		if (order == 9) {
			r = llfree_get(&t.ll, 0, 9, false);
			check_ok(r);
			check(r.reclaimed);
			check_eq(r.frame, soft.frame);
		}
		llfree_drain(&t.ll, 0);
		check(llfree_validate(&t.ll));
		tl_free(&t);
	}
}

/*
 * A new reservation takes an entirely free tree the host has not reclaimed
 * before a reclaimed one, even further away; only when every free tree is
 * reclaimed does the allocation need an install.
 */
TEST(reclaim_guest_prefers_installed_tree)
{
	const unsigned per_tree = LLFREE_TREE_CHILDREN;

	for (size_t order = 0; order <= 9; order += 9) {
		struct tl t;
		llfree_result_t r;

		if (!tl_init(&t, 1, 4 * TREE, LLFREE_INIT_FREE))
			return;
		/* trees 0, 1 and 3 reclaimed, tree 2 backed */
		for (uint64_t c = 0; c < 4 * per_tree; c++) {
			if (c / per_tree != 2)
				check_ok(tl_reclaim_child(&t, c, false));
		}
		r = llfree_get(&t.ll, 0, order, true);
		check_ok(r);
		check(!r.reclaimed);
		check_eq(r.frame / TREE, 2);
		check(llfree_validate(&t.ll));

		/* tree 2 used up: the next reservation has to install */
		for (uint64_t c = 2 * per_tree; c < 3 * per_tree; c++) {
			if (c != r.frame / CHILD)
				check_ok(llfree_get_at(&t.ll, 0, c * CHILD, 9));
		}
		llfree_drain(&t.ll, 0);
		r = llfree_get(&t.ll, 0, order, true);
		check_ok(r);
		check(r.reclaimed);
		check(r.frame / TREE != 2);
		check(llfree_validate(&t.ll));
		tl_free(&t);
	}
}

/* Install callback that records the children and installs them */
struct installs {
	llfree_t *ll;
	uint64_t frames[8];
	unsigned n;
	unsigned fail_at; /* return false on this call (1-based), 0: never */
};

static bool record_install(void *ctx, uint64_t child_frame)
{
	struct installs *in = ctx;
	llfree_result_t r;

	if (in->n < 8)
		in->frames[in->n] = child_frame;
	in->n++;
	if (in->fail_at == in->n)
		return false;
	r = llfree_install(in->ll, child_frame);
	return r.error == LLFREE_OK;
}

/* Order 10 over a pair with one or two reclaimed children */
TEST(reclaim_install_covered_pair)
{
	for (unsigned which = 1; which <= 3; which++) {
		struct tl t;
		struct installs in = { 0 };
		llfree_result_t r;
		int n;

		/* one tree; only pair 2 (children 4 and 5) is fully free */
		if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
			return;
		for (uint64_t c = 0; c < 8; c++) {
			if (c != 4 && c != 5)
				check_ok(llfree_get_at(&t.ll, 0, c * CHILD + c, 0));
		}
		if (which & 1)
			check_ok(tl_reclaim_child(&t, 4, false));
		if (which & 2)
			check_ok(tl_reclaim_child(&t, 5, false));

		r = llfree_get(&t.ll, 0, 10, false);
		check_ok(r);
		check_eq(r.frame, 4 * CHILD);
		check(r.reclaimed); /* any covered child, not only the first */

		in.ll = &t.ll;
		n = llfree_install_covered(&t.ll, r.frame, 10, record_install, &in);
		if (which == 3) {
			check_eq(n, 2);
			check_eq(in.frames[0], 4 * CHILD);
			check_eq(in.frames[1], 5 * CHILD);
		} else {
			check_eq(n, 1);
			check_eq(in.frames[0], which == 1 ? 4 * CHILD : 5 * CHILD);
		}
		check(!llfree_is_reclaimed(&t.ll, 4 * CHILD));
		check(!llfree_is_reclaimed(&t.ll, 5 * CHILD));
		check_eq(llfree_reclaimed_huge(&t.ll), 0);
		/* nothing left to install */
		in.n = 0;
		check_eq(llfree_install_covered(&t.ll, r.frame, 10, record_install,
						&in), 0);
		check_eq(in.n, 0);
		check_ok(llfree_put(&t.ll, 0, r.frame, 10));
		llfree_drain(&t.ll, 0);
		check(llfree_validate(&t.ll));
		check_eq(llfree_free_frames(&t.ll), TREE - 6);
		tl_free(&t);
	}
}

/* get_at of order 10 reports the second child's flag too */
TEST(reclaim_get_at_pair_second_reclaimed)
{
	struct tl t;
	llfree_result_t r;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_ok(tl_reclaim_child(&t, 3, false));
	r = llfree_get_at(&t.ll, 0, 2 * CHILD, 10);
	check_ok(r);
	check(r.reclaimed);
	check(!llfree_is_reclaimed(&t.ll, 2 * CHILD));
	check(llfree_is_reclaimed(&t.ll, 3 * CHILD));
	check_ok(llfree_install(&t.ll, 3 * CHILD));
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 10));
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

TEST(reclaim_install_covered_small_and_errors)
{
	struct tl t;
	struct installs in = { 0 };
	llfree_result_t r;

	if (!tl_init(&t, 1, 2 * CHILD, LLFREE_INIT_FREE))
		return;
	in.ll = &t.ll;
	check_ok(tl_reclaim_child(&t, 1, false));
	r = llfree_get_at(&t.ll, 0, CHILD + 136, 3);
	check_ok(r);
	check(r.reclaimed);
	/* a small block reports its child's first frame */
	check_eq(llfree_install_covered(&t.ll, r.frame, 3, record_install, &in), 1);
	check_eq(in.frames[0], CHILD);
	check(!llfree_is_reclaimed(&t.ll, CHILD));
	/* installed memory: no calls */
	in.n = 0;
	check_eq(llfree_install_covered(&t.ll, 0, 9, record_install, &in), 0);
	check_eq(in.n, 0);

	/* a failing callback is reported, and the flag stays */
	check_ok(tl_reclaim_child(&t, 0, false));
	in.n = 0;
	in.fail_at = 1;
	check_eq(llfree_install_covered(&t.ll, 0, 10, record_install, &in), -1);
	check_eq(in.n, 1);
	check(llfree_is_reclaimed(&t.ll, 0));
	/* invalid blocks */
	in.fail_at = 0;
	in.n = 0;
	check(llfree_install_covered(&t.ll, 2 * CHILD, 0, record_install,
				     &in) <= 0);
	check(llfree_install_covered(&t.ll, CHILD, 10, record_install, &in) <= 0);
	check_eq(in.n, 0);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/* Soft reclaim, guest allocation and hard reclaim of the same child */
TEST(reclaim_states_cycle)
{
	struct tl t;
	llfree_result_t r;
	struct installs in = { 0 };

	if (!tl_init(&t, 1, CHILD, LLFREE_INIT_FREE))
		return;
	in.ll = &t.ll;
	for (unsigned round = 0; round < 3; round++) {
		check_eq(llfree_reclaim(&t.ll, 0, false).frame, 0);
		r = llfree_get(&t.ll, 0, 9, false);
		check_ok(r);
		check(r.reclaimed);
		/* allocated: the host cannot take it */
		check_err(llfree_reclaim(&t.ll, 0, true), LLFREE_ERR_MEMORY);
		in.n = 0;
		check_eq(llfree_install_covered(&t.ll, 0, 9, record_install, &in),
			 1);
		check_ok(llfree_put(&t.ll, 0, 0, 9));
		llfree_drain(&t.ll, 0);
		r = llfree_reclaim(&t.ll, 0, true);
		check_ok(r);
		check(!r.reclaimed);
		check_ok(llfree_return(&t.ll, 0));
		r = llfree_reclaim(&t.ll, 0, true);
		check_ok(r);
		check(r.reclaimed);
		check_ok(llfree_return(&t.ll, 0));
		check_ok(llfree_install(&t.ll, 0));
		check_eq(llfree_free_frames(&t.ll), CHILD);
		check_eq(llfree_free_huge(&t.ll), 1);
		check(llfree_validate(&t.ll));
	}
	tl_free(&t);
}

/*
 * The guest can write any value into the shared arrays. A last, partial
 * child that claims to be fully free must still never be reclaimed: the
 * host would discard memory beyond the guest's end.
 */
TEST(reclaim_corrupt_partial_child)
{
	const uint64_t frames = 2 * CHILD + 100;
	struct tl t;
	uint16_t *children, *trees;
	uint64_t *bf;
	llfree_result_t r;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 0, 9));
	check_ok(llfree_get_at(&t.ll, 0, CHILD, 9));
	bf = t.meta.lower;
	children = (uint16_t *)((char *)t.meta.lower +
				3 * LLFREE_CHILD_BITFIELD_BYTES);
	trees = t.meta.trees;
	/* child 2 has 100 frames; make it look like a whole free child */
	for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++)
		bf[2 * LLFREE_BITFIELD_WORDS + w] = 0;
	children[2] = CHILD;
	trees[0] = CHILD;
	for (int hard = 0; hard <= 1; hard++) {
		r = llfree_reclaim(&t.ll, 0, hard);
		check(r.error != LLFREE_OK);
		check_eq(r.error == LLFREE_OK ? r.frame : 0, 0);
	}
	check_fails(llfree_return(&t.ll, 2 * CHILD));
	tl_free(&t);
}

/* reclaim_at takes exactly the given child, soft or hard */
TEST(reclaim_at)
{
	/* trees 0 and 1 whole, tree 2: child 16 whole, child 17 partial */
	const uint64_t frames = 2 * TREE + CHILD + 100;
	struct tl t;
	llfree_result_t r;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	r = llfree_reclaim_at(&t.ll, 3 * CHILD, false);
	check_ok(r);
	check_eq(r.error == LLFREE_OK ? r.frame : 0, 3 * CHILD);
	check(!r.reclaimed);
	check(llfree_is_reclaimed(&t.ll, 3 * CHILD));
	check(!llfree_is_reclaimed(&t.ll, 2 * CHILD));
	check(!llfree_is_reclaimed(&t.ll, 4 * CHILD));
	check_eq(llfree_reclaimed_huge(&t.ll), 1);
	check_eq(llfree_free_frames(&t.ll), frames);
	check(llfree_validate(&t.ll));
	/* soft twice: already reclaimed */
	check_err(llfree_reclaim_at(&t.ll, 3 * CHILD, false), LLFREE_ERR_STATE);

	/* hard on the soft child: reported as soft, the tree pays */
	r = llfree_reclaim_at(&t.ll, 3 * CHILD, true);
	check_ok(r);
	check(r.reclaimed);
	check_eq(llfree_free_frames(&t.ll), frames - CHILD);
	check_eq(llfree_free_at(&t.ll, 0, LLFREE_TREE_ORDER), TREE - CHILD);
	/* hard twice: the tree counter is given back */
	check_err(llfree_reclaim_at(&t.ll, 3 * CHILD, true), LLFREE_ERR_STATE);
	check_eq(llfree_free_at(&t.ll, 0, LLFREE_TREE_ORDER), TREE - CHILD);
	check_err(llfree_reclaim_at(&t.ll, 3 * CHILD, false), LLFREE_ERR_STATE);

	/* hard on an installed child, the last whole one */
	r = llfree_reclaim_at(&t.ll, 16 * CHILD, true);
	check_ok(r);
	check(!r.reclaimed);
	check_eq(llfree_free_frames(&t.ll), frames - 2 * CHILD);
	check_eq(llfree_reclaimed_huge(&t.ll), 2);
	check(llfree_validate(&t.ll));

	/* and back: return, install, reclaim again */
	check_ok(llfree_return(&t.ll, 3 * CHILD));
	check_ok(llfree_install(&t.ll, 3 * CHILD));
	check_ok(llfree_reclaim_at(&t.ll, 3 * CHILD, false));
	check_eq(llfree_free_frames(&t.ll), frames - CHILD);
	check(llfree_validate(&t.ll));
	tl_free(&t);
}

/* Children that do not qualify change nothing, hard or soft */
TEST(reclaim_at_errors)
{
	const uint64_t frames = 2 * TREE + CHILD + 100;
	struct tl t;
	struct snap s;
	uint16_t *trees;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 17, 0)); /* child 0: partial */
	check_ok(llfree_get_at(&t.ll, 0, CHILD, 9)); /* child 1: huge */
	snap_take(&s, &t);
	for (int hard = 0; hard <= 1; hard++) {
		check_err(llfree_reclaim_at(&t.ll, 0, hard), LLFREE_ERR_STATE);
		check_err(llfree_reclaim_at(&t.ll, CHILD, hard),
			  LLFREE_ERR_STATE);
		check_err(llfree_reclaim_at(&t.ll, 2 * CHILD + 1, hard),
			  LLFREE_ERR_ADDRESS);
		/* the partial last child is never whole */
		check_err(llfree_reclaim_at(&t.ll, 17 * CHILD, hard),
			  LLFREE_ERR_ADDRESS);
		check_err(llfree_reclaim_at(&t.ll, 18 * CHILD, hard),
			  LLFREE_ERR_ADDRESS);
		check_err(llfree_reclaim_at(&t.ll, 1ull << 40, hard),
			  LLFREE_ERR_ADDRESS);
	}
	check(snap_same(&s, &t));
	snap_free(&s);
	check(llfree_validate(&t.ll));

	/* a corrupt tree counter below 512: hard fails, nothing changes */
	trees = t.meta.trees;
	trees[1] = 100;
	snap_take(&s, &t);
	check_err(llfree_reclaim_at(&t.ll, 8 * CHILD, true), LLFREE_ERR_STATE);
	check(snap_same(&s, &t));
	snap_free(&s);
	tl_free(&t);
}

/* Never in a reserved tree; once the reservation is gone, as usual */
TEST(reclaim_at_reserved_tree)
{
	const uint64_t frames = 2 * TREE;

	for (int hard = 0; hard <= 1; hard++) {
		struct tl t;
		struct snap s;
		llfree_result_t g;
		uint64_t c, other;

		if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
			return;
		g = llfree_get(&t.ll, 0, 0, false);
		check_ok(g);
		check_eq(llfree_reserved_trees(&t.ll), 1);
		/* a free child of the reserved tree, and one of the other */
		c = g.frame / TREE * LLFREE_TREE_CHILDREN +
		    (g.frame / CHILD % LLFREE_TREE_CHILDREN ? 0 : 1);
		other = (1 - g.frame / TREE) * LLFREE_TREE_CHILDREN;
		snap_take(&s, &t);
		check_err(llfree_reclaim_at(&t.ll, c * CHILD, hard),
			  LLFREE_ERR_STATE);
		check(snap_same(&s, &t));
		snap_free(&s);
		check_ok(llfree_reclaim_at(&t.ll, other * CHILD, hard));
		check(llfree_validate(&t.ll));

		llfree_drain(&t.ll, 0);
		check_ok(llfree_reclaim_at(&t.ll, c * CHILD, hard));
		check_eq(llfree_reclaimed_huge(&t.ll), 2);
		check_eq(llfree_free_frames(&t.ll),
			 frames - 1 - (hard ? 2 * CHILD : 0));
		check(llfree_validate(&t.ll));
		tl_free(&t);
	}
}
