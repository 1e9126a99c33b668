/* SPDX-License-Identifier: MIT */
/*
 * Tree entries: one 16-bit word per 8 children, {free, reserved, kind}.
 *
 * For an unreserved tree, `free` equals the sum of its children's free
 * counts once no operation is in flight. While a CPU holds the tree as its
 * reservation, the CPU's local counter holds the free frames it took at
 * reservation time, and `free` collects frees that arrived since; the sum
 * of both matches the children. A reservation is given back by adding the
 * local counter to `free` and clearing `reserved` in one CAS.
 *
 * Counter updates on trees follow the children: allocation takes from the
 * tree (or the reservation) first, free gives back to it last.
 *
 * The host only hard-reclaims from unreserved trees: it decrements `free`
 * by 512 before it takes a child, so a reservation never counts frames that
 * the host took.
 */
#ifndef LLFREE_TREE_H
#define LLFREE_TREE_H

#include "llfree/llfree.h"
#include "llfree_platform.h"

static inline unsigned tree_free(uint16_t t)
{
	return t & LLFREE_TREE_FREE_MASK;
}

static inline bool tree_reserved(uint16_t t)
{
	return t & LLFREE_TREE_RESERVED;
}

static inline unsigned tree_kind(uint16_t t)
{
	return t >> LLFREE_TREE_KIND_SHIFT;
}

static inline uint16_t tree_make(unsigned free, bool reserved, unsigned kind)
{
	return (uint16_t)(free | (reserved ? LLFREE_TREE_RESERVED : 0) |
			  (kind << LLFREE_TREE_KIND_SHIFT));
}

/* free >= n (and !reserved if unreserved_only) -> free - n */
static inline bool tree_cas_dec(uint16_t *p, unsigned n, bool unreserved_only)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (tree_free(v) < n || (unreserved_only && tree_reserved(v)))
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, (uint16_t)(v - n)));
	return true;
}

/* free + n <= 4096 -> free + n (reserved or not) */
static inline bool tree_cas_inc(uint16_t *p, unsigned n)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (tree_free(v) + n > LLFREE_TREE_FRAMES)
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, (uint16_t)(v + n)));
	return true;
}

/*
 * Reserve: !reserved, free >= min and (kind matches or free == full)
 * -> {0, reserved, kind}; returns the free frames taken in *taken.
 */
static inline bool tree_cas_reserve(uint16_t *p, unsigned min, unsigned kind,
				    bool any_kind, unsigned full,
				    unsigned *taken)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (tree_reserved(v) || tree_free(v) < min || tree_free(v) > full)
			return false;
		if (!any_kind && tree_kind(v) != kind && tree_free(v) != full)
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, tree_make(0, true, kind)));
	*taken = tree_free(v);
	return true;
}

/* Sync: reserved -> free 0, still reserved; returns the old free count */
static inline unsigned tree_cas_steal(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!tree_reserved(v) || tree_free(v) == 0)
			return 0;
	} while (!llfree_cas_acq_rel16(p, &v, tree_make(0, true, tree_kind(v))));
	return tree_free(v);
}

/* Unreserve: {f, reserved, k} -> {f + n, !reserved, k} */
static inline bool tree_cas_unreserve(uint16_t *p, unsigned n)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (tree_free(v) + n > LLFREE_TREE_FRAMES)
			return false;
	} while (!llfree_cas_acq_rel16(
		p, &v, tree_make(tree_free(v) + n, false, tree_kind(v))));
	return true;
}

#endif /* LLFREE_TREE_H */
