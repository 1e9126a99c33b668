/* SPDX-License-Identifier: MIT */
/*
 * Per-CPU reservations, private to one address space.
 *
 * Each CPU holds at most one tree per kind. The reservation is one atomic
 * word {present, tree, free}: the free frames taken from the tree entry
 * when it was reserved (or synced). Allocations decrement it before they
 * touch the tree's children; the owning CPU is the usual user, but drain
 * and get_at may act on any CPU's reservation, so every update is a CAS.
 *
 * Taking frames from a reservation and giving them back are not symmetric:
 * a failed allocation returns its frames to the tree entry, never to the
 * reservation, because the reservation may have moved in the meantime;
 * both places count towards the same tree.
 */
#ifndef LLFREE_LOCAL_H
#define LLFREE_LOCAL_H

#include "llfree/llfree.h"
#include "llfree_platform.h"

#define LOCAL_PRESENT (1ull << 63)
#define LOCAL_TREE_SHIFT 16
#define LOCAL_FREE_MASK 0xffffull

struct llfree_local {
	/* Reservation per kind: {present, tree, free} */
	uint64_t reserved[LLFREE_KINDS];
	/* Child index where the last allocation of a kind succeeded (a hint) */
	uint64_t last_child[LLFREE_KINDS];
	uint64_t pad[8 - 2 * LLFREE_KINDS];
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct llfree_local) == 64, "one cache line per CPU");

static inline bool local_present(uint64_t r)
{
	return r & LOCAL_PRESENT;
}

static inline uint64_t local_tree(uint64_t r)
{
	return (r & ~LOCAL_PRESENT) >> LOCAL_TREE_SHIFT;
}

static inline unsigned local_free(uint64_t r)
{
	return (unsigned)(r & LOCAL_FREE_MASK);
}

static inline uint64_t local_make(uint64_t tree, unsigned free)
{
	return LOCAL_PRESENT | (tree << LOCAL_TREE_SHIFT) | free;
}

/* {present, tree, free >= n} -> free - n; returns the tree in *tree */
static inline bool local_cas_dec(uint64_t *p, unsigned n, uint64_t *tree)
{
	uint64_t v = llfree_load_relaxed64(p);

	do {
		if (!local_present(v) || local_free(v) < n)
			return false;
	} while (!llfree_cas_acq_rel64(p, &v, v - n));
	*tree = local_tree(v);
	return true;
}

/* {present, tree, free >= n} -> free - n, only while it holds `tree` */
static inline bool local_cas_dec_tree(uint64_t *p, uint64_t tree, unsigned n)
{
	uint64_t v = llfree_load_relaxed64(p);

	do {
		if (!local_present(v) || local_tree(v) != tree ||
		    local_free(v) < n)
			return false;
	} while (!llfree_cas_acq_rel64(p, &v, v - n));
	return true;
}

/* {present, tree} -> free + n, only while it still holds `tree` */
static inline bool local_cas_inc(uint64_t *p, uint64_t tree, unsigned n)
{
	uint64_t v = llfree_load_relaxed64(p);

	do {
		if (!local_present(v) || local_tree(v) != tree ||
		    local_free(v) + n > LLFREE_TREE_FRAMES)
			return false;
	} while (!llfree_cas_acq_rel64(p, &v, v + n));
	return true;
}

/* empty -> {present, tree, free} */
static inline bool local_cas_set(uint64_t *p, uint64_t tree, unsigned free)
{
	uint64_t v = 0;

	return llfree_cas_acq_rel64(p, &v, local_make(tree, free));
}

/* anything -> empty; returns the old reservation */
static inline uint64_t local_cas_take(uint64_t *p)
{
	uint64_t v = llfree_load_relaxed64(p);

	while (v && !llfree_cas_acq_rel64(p, &v, 0))
		;
	return v;
}

#endif /* LLFREE_LOCAL_H */
