// SPDX-License-Identifier: MIT
/*
 * Tests of splits: frees of part of a huge (order 9/10) allocation, as
 * Linux does them (THP split, split_page(), alloc_pages_exact(),
 * __free_pages() with an extra reference), and whole-child frees of split
 * children that are entirely allocated again.
 *
 * A split turns {0, huge, !reclaimed} into an ordinary child with a full
 * bitfield. The counters (llfree_free_frames, every tree, reservations)
 * must be exact and llfree_validate() true after every step; refused frees
 * must leave the shared state byte for byte as before.
 *
 * The exhaustive tests write child states directly: every put against a
 * reference model of one child, and every intermediate state of a split,
 * which must be invisible to allocators and to the host. The threaded
 * tests hold the split lock themselves to line splitters up on it.
 */
#include "util.h"

#include "llfree_platform.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

/* Free frames in total and summed over the trees; validate() */
static void check_counts(struct tl *t, uint64_t free)
{
	uint64_t sum = 0;

	for (uint64_t f = 0; f < llfree_frames(&t->ll); f += TREE)
		sum += llfree_free_at(&t->ll, f, 12);
	check_eq(llfree_free_frames(&t->ll), free);
	check_eq(sum, free);
	check(llfree_validate(&t->ll));
}

/*
 * llfree warns about the corrupt states some tests write on purpose; keep
 * the thousands of expected lines out of the test output. Returns the
 * saved stderr for quiet_end().
 */
static int quiet_begin(void)
{
	int saved = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY);

	fflush(stderr);
	if (saved >= 0 && null >= 0)
		dup2(null, STDERR_FILENO);
	if (null >= 0)
		close(null);
	return saved;
}

/* saved < 0: nothing to restore */
static void quiet_end(int saved)
{
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
}

/* Soft and hard reclaim of child c (entirely free, tree unreserved), back */
static void check_reclaimable(struct tl *t, uint64_t c)
{
	llfree_result_t r;

	check_ok(tl_reclaim_child(t, c, false));
	check(llfree_is_reclaimed(&t->ll, c * CHILD));
	r = llfree_reclaim_at(&t->ll, c * CHILD, true);
	check_ok(r);
	check(r.reclaimed);
	check_ok(llfree_return(&t->ll, c * CHILD));
	check_ok(llfree_install(&t->ll, c * CHILD));
	check(!llfree_is_reclaimed(&t->ll, c * CHILD));
}

/* Installs every child it is asked for (the host in these tests) */
static bool install_cb(void *ctx, uint64_t child_frame)
{
	return llfree_install(ctx, child_frame).error == LLFREE_OK;
}

/*
 * Piece `first` of order q of an order-9/10 allocation, then the other
 * pieces from two cores: the child ends entirely free, reclaimable, and
 * can be huge again.
 */
static void piece_case(size_t order, size_t q, uint64_t first)
{
	const uint64_t frames = 2 * TREE;
	uint64_t free = frames, base, piece, reserved;
	uint64_t pieces = 1ull << (order - q);
	struct tl t;
	llfree_result_t r;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
		return;
	r = llfree_get(&t.ll, 0, order, false);
	check_ok(r);
	base = r.frame;
	free -= 1ull << order;
	check_counts(&t, free);
	reserved = llfree_reserved_trees(&t.ll);

	/* the first piece splits the huge child */
	piece = base + (first << q);
	check_ok(llfree_put(&t.ll, 1, piece, q));
	free += 1ull << q;
	check_counts(&t, free);
	check(llfree_is_free(&t.ll, piece, q));
	check_eq(llfree_free_at(&t.ll, piece, 9), 1ull << q);
	check_eq(llfree_reserved_trees(&t.ll), reserved);
	if (first > 0)
		check(!llfree_is_free(&t.ll, piece - 1, 0));
	if (first + 1 < pieces)
		check(!llfree_is_free(&t.ll, piece + (1ull << q), 0));

	for (uint64_t i = 0; i < pieces; i++) {
		if (i == first)
			continue;
		check_ok(llfree_put(&t.ll, i % 2, base + (i << q), q));
		free += 1ull << q;
		check_counts(&t, free);
	}
	check(llfree_is_free(&t.ll, base, order));
	check_eq(llfree_free_at(&t.ll, base, 9), CHILD);
	tl_drain_all(&t);
	check_eq(llfree_reserved_trees(&t.ll), 0);
	check_eq(llfree_free_huge(&t.ll), 2 * 8);
	check_counts(&t, frames);

	for (uint64_t c = base / CHILD; c < (base >> 9) + (1u << (order - 9));
	     c++)
		check_reclaimable(&t, c);
	r = llfree_get_at(&t.ll, 0, base, order);
	check_ok(r);
	check(!r.reclaimed);
	check_counts(&t, frames - (1ull << order));
	check_ok(llfree_put(&t.ll, 0, base, order));
	check_counts(&t, frames);
	tl_free(&t);
}

/* One piece of an order-9/10 allocation at every order: first, last, middle */
TEST(split_piece_every_order)
{
	for (size_t order = 9; order <= 10; order++) {
		for (size_t q = 0; q < LLFREE_HUGE_ORDER; q++) {
			uint64_t pieces = 1ull << (order - q);

			piece_case(order, q, 0);
			piece_case(order, q, pieces - 1);
			piece_case(order, q, (pieces / 2 + 1) % pieces);
		}
	}
}

/*
 * __free_pages(page, order) with an extra reference on the head frees the
 * upper halves at orders order-1 .. 0 and the head later at order 0 (here
 * also the head first).
 */
static void free_pages_case(size_t order, bool head_first)
{
	const uint64_t frames = 2 * TREE;
	uint64_t base = TREE + 2 * CHILD, free = frames;
	struct tl t;

	if (!tl_init(&t, 2, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 1, base, order));
	free -= 1ull << order;
	check_counts(&t, free);
	if (head_first) {
		check_ok(llfree_put(&t.ll, 0, base, 0));
		free += 1;
		check_counts(&t, free);
	}
	for (size_t k = order; k-- > 0;) {
		check_ok(llfree_put(&t.ll, k % 2, base + (1ull << k), k));
		free += 1ull << k;
		check_counts(&t, free);
		check(llfree_is_free(&t.ll, base + (1ull << k), k));
	}
	if (!head_first) {
		check(!llfree_is_free(&t.ll, base, 0));
		check_ok(llfree_put(&t.ll, 0, base, 0));
	}
	check_counts(&t, frames);
	check(llfree_is_free(&t.ll, base, order));
	tl_drain_all(&t);
	check_eq(llfree_free_huge(&t.ll), 2 * 8);
	check_ok(llfree_get_at(&t.ll, 0, base, order));
	check_ok(llfree_put(&t.ll, 0, base, order));
	check_counts(&t, frames);
	tl_free(&t);
}

TEST(split_free_pages_pattern)
{
	for (size_t order = 9; order <= 10; order++) {
		free_pages_case(order, false);
		free_pages_case(order, true);
	}
}

/*
 * An order-10 allocation freed as child `whole` at order 9 (before or
 * after) plus pieces of order q of the other child
 */
static void child_and_pieces_case(unsigned whole, bool whole_first, size_t q)
{
	const uint64_t frames = TREE;
	uint64_t base = 4 * CHILD, free = frames - 1024;
	uint64_t other = base + (1 - whole) * CHILD;
	struct tl t;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, base, 10));
	check_counts(&t, free);
	if (whole_first) {
		check_ok(llfree_put(&t.ll, 0, base + whole * CHILD, 9));
		free += CHILD;
		check_counts(&t, free);
	}
	for (uint64_t f = 0; f < CHILD; f += 1ull << q) {
		check_ok(llfree_put(&t.ll, 0, other + f, q));
		free += 1ull << q;
		check_counts(&t, free);
	}
	if (!whole_first) {
		check(!llfree_is_free(&t.ll, base + whole * CHILD, 0));
		check_ok(llfree_put(&t.ll, 0, base + whole * CHILD, 9));
	}
	check_counts(&t, frames);
	check_eq(llfree_free_huge(&t.ll), 8);
	check(llfree_is_free(&t.ll, base, 10));
	tl_free(&t);
}

TEST(split_order10_child_and_pieces)
{
	static const size_t orders[] = { 0, 3, 6, 7, 8 };

	for (unsigned whole = 0; whole <= 1; whole++) {
		for (unsigned i = 0; i < 5; i++) {
			child_and_pieces_case(whole, false, orders[i]);
			child_and_pieces_case(whole, true, orders[i]);
		}
	}
}

/*
 * A child whose 512 frames are all allocated, as pieces or never huge, is
 * freed by a whole-child put (order 9, or order 10 with any mix of huge
 * and split children); one free frame makes the put fail without a trace.
 */
TEST(split_whole_free_of_full_child)
{
	const uint64_t frames = TREE;
	uint64_t free = frames;
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	/* child 0: split, the piece allocated again, freed whole */
	check_ok(llfree_get_at(&t.ll, 0, 0, 9));
	check_ok(llfree_put(&t.ll, 0, 5, 0));
	check_ok(llfree_get_at(&t.ll, 0, 5, 0));
	free -= CHILD;
	check_counts(&t, free);
	check_eq(llfree_free_at(&t.ll, 0, 9), 0);
	check_ok(llfree_put(&t.ll, 0, 0, 9));
	free += CHILD;
	check_counts(&t, free);
	check(llfree_is_free(&t.ll, 0, 9));
	check_err(llfree_put(&t.ll, 0, 0, 9), LLFREE_ERR_ADDRESS);

	/* child 1: never huge, 512 order-0 frames, freed whole */
	for (uint64_t f = CHILD; f < 2 * CHILD; f++)
		check_ok(llfree_get_at(&t.ll, 0, f, 0));
	free -= CHILD;
	check_counts(&t, free);
	check_ok(llfree_put(&t.ll, 0, CHILD, 9));
	free += CHILD;
	check_counts(&t, free);

	/* children 2+3: order 10, a huge and a split child, then both split */
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 10));
	check_ok(llfree_put(&t.ll, 0, 3 * CHILD + 64, 6));
	check_ok(llfree_get_at(&t.ll, 0, 3 * CHILD + 64, 6));
	check_counts(&t, free - 2 * CHILD);
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 10));
	check_counts(&t, free);
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 10));
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 0));
	check_ok(llfree_put(&t.ll, 0, 3 * CHILD + 511, 0));
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 0));
	check_ok(llfree_get_at(&t.ll, 0, 3 * CHILD + 511, 0));
	check_counts(&t, free - 2 * CHILD);
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 10));
	check_counts(&t, free);
	check_eq(llfree_free_huge(&t.ll), 8);

	/* refused: a split child with one free frame */
	check_ok(llfree_get_at(&t.ll, 0, 4 * CHILD, 9));
	check_ok(llfree_put(&t.ll, 0, 4 * CHILD + 7, 0));
	snap_take(&s, &t);
	check_err(llfree_put(&t.ll, 0, 4 * CHILD, 9), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	snap_free(&s);
	/* refused: order 10 over a full child and a free one */
	check_ok(llfree_get_at(&t.ll, 0, 4 * CHILD + 7, 0));
	snap_take(&s, &t);
	check_err(llfree_put(&t.ll, 0, 4 * CHILD, 10), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	snap_free(&s);
	check_ok(llfree_put(&t.ll, 0, 4 * CHILD, 9));
	/* refused: order 10 over a huge child and a split one with a hole */
	check_ok(llfree_get_at(&t.ll, 0, 6 * CHILD, 10));
	check_ok(llfree_put(&t.ll, 0, 7 * CHILD + 100, 2));
	snap_take(&s, &t);
	check_err(llfree_put(&t.ll, 0, 6 * CHILD, 10), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	snap_free(&s);
	check_eq(llfree_free_at(&t.ll, 6 * CHILD, 9), 0);
	check_ok(llfree_get_at(&t.ll, 0, 7 * CHILD + 100, 2));
	check_ok(llfree_put(&t.ll, 0, 6 * CHILD, 10));
	check_counts(&t, frames);
	tl_drain_all(&t);
	check_eq(llfree_free_huge(&t.ll), 8);
	tl_free(&t);
}

/* Memory that starts allocated (INIT_ALLOC) can be freed in whole children */
TEST(split_init_alloc_whole)
{
	const uint64_t frames = TREE + CHILD + 100;
	struct tl t;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_ALLOC))
		return;
	check_ok(llfree_put(&t.ll, 0, 0, 10));
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 9));
	check_ok(llfree_put(&t.ll, 0, 3 * CHILD + 64, 6));
	check_counts(&t, 3 * CHILD + 64);
	for (uint64_t f = 3 * CHILD; f < frames; f++) {
		if (f < 3 * CHILD + 64 || f >= 3 * CHILD + 128)
			check_ok(llfree_put(&t.ll, 0, f, 0));
	}
	check_counts(&t, frames);
	check_eq(llfree_free_huge(&t.ll), 9);
	tl_free(&t);
}

/*
 * A partial free of a huge child that is reclaimed -- hard-reclaimed by
 * the host, or a guest huge allocation not installed yet -- is refused
 * with LLFREE_ERR_STATE and changes nothing.
 */
TEST(split_reclaimed_refused)
{
	const uint64_t frames = TREE;
	uint64_t free = frames;
	struct tl t;
	struct snap s;
	llfree_result_t r;
	int n;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	/* child 3: hard-reclaimed */
	r = tl_reclaim_child(&t, 3, true);
	check_or_return(r.error == LLFREE_OK);
	free -= CHILD;
	/* child 5: a guest huge allocation of a soft child, not installed */
	check_ok(tl_reclaim_child(&t, 5, false));
	r = llfree_get_at(&t.ll, 0, 5 * CHILD, 9);
	check_ok(r);
	check(r.reclaimed);
	free -= CHILD;
	/* children 6+7: order 10, child 7 soft and not installed */
	check_ok(tl_reclaim_child(&t, 7, false));
	r = llfree_get_at(&t.ll, 0, 6 * CHILD, 10);
	check_ok(r);
	check(r.reclaimed);
	free -= 2 * CHILD;
	check_counts(&t, free);

	snap_take(&s, &t);
	for (size_t q = 0; q < LLFREE_HUGE_ORDER; q++) {
		uint64_t pos = ((q * 37) % (CHILD >> q)) << q;

		check_err(llfree_put(&t.ll, 0, 3 * CHILD + pos, q),
			  LLFREE_ERR_STATE);
		check_err(llfree_put(&t.ll, 0, 5 * CHILD + pos, q),
			  LLFREE_ERR_STATE);
		check_err(llfree_put(&t.ll, 0, 7 * CHILD + pos, q),
			  LLFREE_ERR_STATE);
		check_err(llfree_put_uninstalled(&t.ll, 0, 5 * CHILD + pos, q),
			  LLFREE_ERR_STATE);
		check(snap_same(&s, &t));
	}
	snap_free(&s);
	check(llfree_is_reclaimed(&t.ll, 3 * CHILD));
	check(llfree_is_reclaimed(&t.ll, 5 * CHILD));
	check_counts(&t, free);

	/* the installed half of the order-10 block splits */
	check_ok(llfree_put(&t.ll, 0, 6 * CHILD + 3, 0));
	free += 1;
	check_counts(&t, free);
	check_err(llfree_put(&t.ll, 0, 7 * CHILD + 3, 0), LLFREE_ERR_STATE);
	/* once installed, the others split too */
	n = llfree_install_covered(&t.ll, 5 * CHILD, 9, install_cb, &t.ll);
	check_eq(n, 1);
	n = llfree_install_covered(&t.ll, 6 * CHILD, 10, install_cb, &t.ll);
	check_eq(n, 1);
	check_ok(llfree_put(&t.ll, 0, 5 * CHILD + 256, 8));
	check_ok(llfree_put(&t.ll, 0, 7 * CHILD + 3, 0));
	free += 256 + 1;
	check_counts(&t, free);
	/* the hard child stays with the host */
	check_err(llfree_put(&t.ll, 0, 3 * CHILD, 0), LLFREE_ERR_STATE);
	check_ok(llfree_return(&t.ll, 3 * CHILD));
	free += CHILD;
	check_counts(&t, free);
	tl_free(&t);
}

TEST(split_errors)
{
	const uint64_t frames = TREE;
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 1, frames, LLFREE_INIT_FREE))
		return;
	/* a second free of a piece, or of a part of it */
	check_ok(llfree_get_at(&t.ll, 0, 0, 9));
	check_ok(llfree_put(&t.ll, 0, 8, 3));
	snap_take(&s, &t);
	check_err(llfree_put(&t.ll, 0, 8, 3), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 12, 0), LLFREE_ERR_ADDRESS);
	check_err(llfree_put(&t.ll, 0, 0, 4), LLFREE_ERR_ADDRESS);
	/* a piece of a free child */
	check_err(llfree_put(&t.ll, 0, CHILD + 4, 2), LLFREE_ERR_ADDRESS);
	/* a piece beyond the end */
	check_err(llfree_put(&t.ll, 0, frames, 0), LLFREE_ERR_ADDRESS);
	check(snap_same(&s, &t));
	snap_free(&s);
	check_counts(&t, frames - CHILD + 8);

	/*
	 * A huge child with a bit set is corrupt: the split refuses it and
	 * gives back the words it filled before the set one (exact undo).
	 */
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 9));
	fprintf(stderr, "  (the following llfree messages are expected)\n");
	for (unsigned j = 0; j < LLFREE_BITFIELD_WORDS; j++) {
		uint64_t *bf = tl_bitfield(&t, 2);

		bf[j] = 1ull << (j * 7);
		snap_take(&s, &t);
		for (size_t q = 0; q < LLFREE_HUGE_ORDER; q += 4)
			check_err(llfree_put(&t.ll, 0,
					     2 * CHILD + (64 << (q / 4)), q),
				  LLFREE_ERR_STATE);
		check(snap_same(&s, &t));
		snap_free(&s);
		bf[j] = 0;
	}
	check(llfree_validate(&t.ll));
	/* a malformed entry: unused bits */
	*tl_child_entry(&t, 2) |= 0x8000;
	snap_take(&s, &t);
	check_fails(llfree_put(&t.ll, 0, 2 * CHILD, 0));
	check_fails(llfree_put(&t.ll, 0, 2 * CHILD, 9));
	check(snap_same(&s, &t));
	snap_free(&s);
	*tl_child_entry(&t, 2) &= 0x7fff;
	check_ok(llfree_put(&t.ll, 0, 2 * CHILD, 9));
	check_counts(&t, frames - CHILD + 8);
	tl_free(&t);
}

/* Exhaustive: every put on one child against a reference model ---------- */

struct child_state {
	uint16_t child;
	uint64_t bf[LLFREE_BITFIELD_WORDS];
};

static bool model_valid(uint16_t v)
{
	unsigned free = v & LLFREE_CHILD_FREE_MASK;

	return !(v & LLFREE_CHILD_UNUSED_MASK) && free <= CHILD &&
	       !((v & LLFREE_CHILD_HUGE) && free);
}

/* Bits of the 2^order block at pos that lie in word w */
static uint64_t model_mask(unsigned pos, unsigned order, unsigned w)
{
	unsigned lo = pos, hi = pos + (1u << order);

	if (hi <= w * 64 || lo >= (w + 1) * 64)
		return 0;
	if (order >= 6)
		return ~0ull;
	return ((1ull << (1u << order)) - 1) << (pos % 64);
}

/*
 * The documented put() of one child: returns the error and, on success,
 * the new state. n is added to the tree on success.
 */
static unsigned model_put(struct child_state *st, unsigned pos, unsigned order,
			  bool uninstalled)
{
	uint16_t v = st->child;
	bool valid = model_valid(v), huge = v & LLFREE_CHILD_HUGE;
	bool rec = v & LLFREE_CHILD_RECLAIMED;
	unsigned free = v & LLFREE_CHILD_FREE_MASK, n = 1u << order;
	struct child_state next = *st;

	if (order == LLFREE_HUGE_ORDER) {
		bool full = true;

		if (valid && huge && (uninstalled || !rec)) {
			/* put_uninstalled keeps the flag */
			st->child = (uint16_t)(CHILD +
					       (v & LLFREE_CHILD_RECLAIMED));
			return LLFREE_OK;
		}
		for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++)
			full = full && st->bf[w] == ~0ull;
		if (valid && !huge && free == 0 && full) {
			st->child = (uint16_t)(v + CHILD);
			memset(st->bf, 0, sizeof(st->bf));
			return LLFREE_OK;
		}
		return LLFREE_ERR_ADDRESS;
	}
	if (valid && huge) {
		if (rec)
			return LLFREE_ERR_STATE;
		for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++) {
			if (next.bf[w])
				return LLFREE_ERR_STATE; /* corrupt */
			next.bf[w] = ~0ull;
		}
		next.child = 0;
		v = 0;
		free = 0;
	}
	for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++) {
		uint64_t m = model_mask(pos, order, w);

		if ((next.bf[w] & m) != m)
			return LLFREE_ERR_ADDRESS;
	}
	if (!model_valid(v) || free + n > CHILD)
		return LLFREE_ERR_STATE;
	for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++)
		next.bf[w] &= ~model_mask(pos, order, w);
	next.child = (uint16_t)(v + n);
	*st = next;
	return LLFREE_OK;
}

/*
 * One put on the state `st` of the only child; true if the library did what
 * model_put() says (error, child entry, bitfield, tree counter). On a
 * mismatch the checks are repeated with stderr back, to report them.
 */
static bool exhaustive_one(struct tl *t, const struct child_state *st,
			   unsigned pos, unsigned order, bool un, int *quiet)
{
	struct child_state want = *st;
	unsigned err = model_put(&want, pos, order, un);
	uint16_t tree_want = err == LLFREE_OK ? 1u << order : 0;
	llfree_result_t r;

	*tl_child_entry(t, 0) = st->child;
	memcpy(tl_bitfield(t, 0), st->bf, sizeof(st->bf));
	*(uint16_t *)t->meta.trees = 0;
	r = un ? llfree_put_uninstalled(&t->ll, 0, pos, order) :
		 llfree_put(&t->ll, 0, pos, order);
	if (r.error == err && *tl_child_entry(t, 0) == want.child &&
	    !memcmp(tl_bitfield(t, 0), want.bf, sizeof(want.bf)) &&
	    *(uint16_t *)t->meta.trees == tree_want)
		return true;
	quiet_end(*quiet);
	*quiet = -1;
	printf("  entry 0x%x, bitfield %016" PRIx64 "..., %s pos %u order %u\n",
	       st->child, st->bf[0], un ? "put_uninstalled" : "put", pos,
	       order);
	check_eq(r.error, err);
	check_eq(*tl_child_entry(t, 0), want.child);
	check(!memcmp(tl_bitfield(t, 0), want.bf, sizeof(want.bf)));
	check_eq(*(uint16_t *)t->meta.trees, tree_want);
	return false;
}

/*
 * Every put and put_uninstalled of every order at every position, on one
 * child in every combination of entry (free counts around the limits,
 * huge, reclaimed, malformed) and bitfield (empty, full, almost full,
 * mixed), against model_put().
 */
TEST(split_exhaustive_put)
{
	static const unsigned frees[] = { 0, 1, 64, 448, 511, 512, 513 };
	static const uint64_t words[][LLFREE_BITFIELD_WORDS] = {
		{ 0 },
		{ ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull },
		{ ~1ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull },
		{ 0, 0, 0, ~0ull, 0, 0, 0, 0 },
		{ 0x5555555555555555ull, 0xff00ff00ff00ff00ull, ~0ull, 1, 0,
		  ~0ull, ~0ull, 0x8000000000000000ull },
	};
	const unsigned nwords = sizeof(words) / sizeof(words[0]);
	struct child_state states[(7 * 4 + 2) * 5];
	unsigned nstates = 0, calls = 0;
	struct tl t;
	int quiet;

	for (unsigned i = 0; i < 7 * 4 + 2; i++) {
		uint16_t entry = (uint16_t)frees[i / 4 % 7];

		entry |= i & 1 ? LLFREE_CHILD_HUGE : 0;
		entry |= i & 2 ? LLFREE_CHILD_RECLAIMED : 0;

		if (i == 7 * 4) /* malformed: unused bits */
			entry = 0x8000 | LLFREE_CHILD_HUGE;
		else if (i == 7 * 4 + 1)
			entry = 0x1000;
		for (unsigned b = 0; b < nwords; b++) {
			states[nstates].child = entry;
			memcpy(states[nstates].bf, words[b], sizeof(words[b]));
			nstates++;
		}
	}
	if (!tl_init(&t, 1, CHILD, LLFREE_INIT_FREE))
		return;
	quiet = quiet_begin();
	for (unsigned i = 0; i < nstates * 2 * 1023; i++) {
		/* i: state, put or put_uninstalled, then one of 1023 blocks */
		unsigned block = i % 1023, order = 0;

		while (block >= CHILD >> order)
			block -= CHILD >> order++;
		calls++;
		if (!exhaustive_one(&t, &states[i / 2046], block << order,
				    order, i / 1023 % 2, &quiet))
			break;
	}
	quiet_end(quiet);
	check_eq(calls, nstates * 2 * 1023);
	tl_free(&t);
}

/*
 * Exhaustive: every intermediate state of a split (k of 8 bitfield words
 * filled while the child is still huge, then the split child) is
 * invisible: no allocation, no host operation and no query sees free
 * frames in it or changes it.
 */
TEST(split_intermediate_states_inert)
{
	struct tl t;
	struct snap s;

	if (!tl_init(&t, 2, CHILD, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 0, 9));
	fprintf(stderr, "  (the following llfree messages are expected)\n");
	for (unsigned k = 0; k <= LLFREE_BITFIELD_WORDS + 1; k++) {
		uint64_t *bf = tl_bitfield(&t, 0);
		bool split = k > LLFREE_BITFIELD_WORDS;

		for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++)
			bf[w] = w < k ? ~0ull : 0;
		*tl_child_entry(&t, 0) = split ? 0 : LLFREE_CHILD_HUGE;
		snap_take(&s, &t);

		for (size_t i = 0; i < 2 * (LLFREE_MAX_ORDER + 1); i++)
			check_err(llfree_get(&t.ll, i % 2, i / 2, i & 1),
				  LLFREE_ERR_MEMORY);
		for (size_t order = 0; order <= LLFREE_HUGE_ORDER; order++) {
			for (uint64_t f = 0; f < CHILD; f += 1ull << order)
				check_fails(llfree_get_at(&t.ll, 0, f, order));
		}
		tl_drain_all(&t);
		check(snap_same_lower(&s, &t));
		check_eq(llfree_free_frames(&t.ll), 0);

		for (int hard = 0; hard <= 1; hard++) {
			check_fails(llfree_reclaim(&t.ll, 0, hard));
			check_fails(llfree_reclaim_at(&t.ll, 0, hard));
		}
		check_fails(llfree_return(&t.ll, 0));
		check_fails(llfree_install(&t.ll, 0));
		check_fails(llfree_unreclaim_free(&t.ll, 0));
		check(snap_same_lower(&s, &t));
		check_eq(llfree_free_huge(&t.ll), 0);
		check_eq(llfree_reclaimed_huge(&t.ll), 0);
		check_eq(llfree_free_at(&t.ll, 0, 9), 0);
		check(!llfree_is_reclaimed(&t.ll, 0));
		for (uint64_t f = 0; f < CHILD; f++)
			check(!llfree_is_free(&t.ll, f, 0));

		if (split || k == 0) {
			check(llfree_validate(&t.ll));
		} else {
			/* a second, unserialised splitter: refused, no trace */
			check_err(llfree_put(&t.ll, 0, 64 * (k - 1), 0),
				  LLFREE_ERR_STATE);
			check(snap_same_lower(&s, &t));
		}
		snap_free(&s);
	}
	/* the split child: its pieces are freed normally */
	check_ok(llfree_put(&t.ll, 0, 0, 8));
	check_ok(llfree_put(&t.ll, 1, 256, 8));
	check_counts(&t, CHILD);
	tl_free(&t);
}

/* Splitters lined up on the split lock ----------------------------------- */

struct putter {
	struct tl *t;
	uint64_t frame;
	size_t order;
	llfree_result_t res;
	pthread_t thread;
};

static void *putter_main(void *arg)
{
	struct putter *p = arg;

	p->res = llfree_put(&p->t->ll, 0, p->frame, p->order);
	return NULL;
}

static void putter_start(struct putter *p, struct tl *t, uint64_t frame,
			 size_t order)
{
	p->t = t;
	p->frame = frame;
	p->order = order;
	p->res = (llfree_result_t){ .error = 0xff };
	pthread_create(&p->thread, NULL, putter_main, p);
}

/* Long enough for a started putter to reach the lock (not needed to pass) */
static void let_putters_wait(void)
{
	usleep(20000);
}

/* Two frees of the same huge child wait on the lock: one splits, both free */
TEST_FLAGS(split_lock_two_splitters, TEST_THREADED)
{
	struct tl t;
	struct putter a, b;
	unsigned long flags;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 2 * CHILD, 9));
	flags = llfree_lock_irqsave(&t.ll.split_lock);
	putter_start(&a, &t, 2 * CHILD + 3, 0);
	putter_start(&b, &t, 2 * CHILD + 256, 7);
	let_putters_wait();
	llfree_unlock_irqrestore(&t.ll.split_lock, flags);
	pthread_join(a.thread, NULL);
	pthread_join(b.thread, NULL);
	check_ok(a.res);
	check_ok(b.res);
	check_counts(&t, TREE - CHILD + 1 + 128);
	check_eq(llfree_free_at(&t.ll, 2 * CHILD, 9), 1 + 128);
	tl_free(&t);
}

/*
 * A stale splitter: it saw the child huge and waits on the lock while a
 * split completes and whole words of the child are freed. Under the lock
 * it must see the split and fill nothing: a fill now would resurrect the
 * freed words (the ABA problem of a lock-free fill).
 */
TEST_FLAGS(split_lock_stale_splitter, TEST_THREADED)
{
	struct tl t;
	struct putter p;
	unsigned long flags;
	uint64_t *bf;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 0, 9));
	bf = tl_bitfield(&t, 0);
	flags = llfree_lock_irqsave(&t.ll.split_lock);
	putter_start(&p, &t, 7 * 64 + 5, 0);
	let_putters_wait();
	/* the split another CPU completed meanwhile, and frees after it */
	for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++)
		__atomic_store_n(&bf[w], ~0ull, __ATOMIC_RELEASE);
	__atomic_store_n(tl_child_entry(&t, 0), 0, __ATOMIC_RELEASE);
	for (unsigned w = 0; w < 7; w++)
		check_ok(llfree_put(&t.ll, 0, 64 * w, 6));
	llfree_unlock_irqrestore(&t.ll.split_lock, flags);
	pthread_join(p.thread, NULL);
	check_ok(p.res);
	for (unsigned w = 0; w < 7; w++)
		check(llfree_is_free(&t.ll, 64 * w, 6));
	check_eq(llfree_free_at(&t.ll, 0, 9), 7 * 64 + 1);
	check_counts(&t, TREE - CHILD + 7 * 64 + 1);
	tl_free(&t);
}

/* The child became reclaimed while the splitter waited: refused, untouched */
TEST_FLAGS(split_lock_child_changed, TEST_THREADED)
{
	struct tl t;
	struct putter p;
	struct snap s;
	unsigned long flags;

	if (!tl_init(&t, 1, TREE, LLFREE_INIT_FREE))
		return;
	check_ok(llfree_get_at(&t.ll, 0, 0, 9));
	flags = llfree_lock_irqsave(&t.ll.split_lock);
	putter_start(&p, &t, 100, 2);
	let_putters_wait();
	__atomic_store_n(tl_child_entry(&t, 0),
			 LLFREE_CHILD_HUGE | LLFREE_CHILD_RECLAIMED,
			 __ATOMIC_RELEASE);
	snap_take(&s, &t);
	llfree_unlock_irqrestore(&t.ll.split_lock, flags);
	pthread_join(p.thread, NULL);
	check_err(p.res, LLFREE_ERR_STATE);
	check(snap_same(&s, &t));
	snap_free(&s);
	tl_free(&t);
}
