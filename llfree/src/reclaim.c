// SPDX-License-Identifier: MIT
/*
 * Host side of llfree: reclaim, return and install of 2 MiB children.
 *
 * The host maps the guest's shared arrays, which the guest can overwrite
 * at any time. Everything here therefore treats loaded values as untrusted:
 * indices come from the host's own loops, never from shared memory, every
 * transition checks the entry it replaces, and a corrupt entry is skipped
 * or reported, never trusted.
 *
 * Hard reclaim is a two-word operation: the tree counter pays 512 frames
 * first (in an unreserved tree only), then one child is taken; if no child
 * of the tree qualifies (llfree_reclaim_at(): if the given child does not),
 * the tree counter is given back (exact undo).
 * Return runs it backwards: child first, tree counter last.
 *
 * Mutual exclusion of a child's reclaim + discard with its install is the
 * caller's job (see docs/llfree.md): the library only linearises each
 * transition on the child word.
 */
#include "llfree_internal.h"

#include "child.h"
#include "tree.h"

/*
 * Children the host may take: whole 2 MiB. A partial last child can never
 * be free as a whole, but a corrupt entry could claim so.
 */
static unsigned reclaimable_children(const llfree_t *self, uint64_t t)
{
	return (unsigned)(min_u64(self->frames / LLFREE_CHILD_FRAMES,
				  (t + 1) * LLFREE_TREE_CHILDREN) -
			  t * LLFREE_TREE_CHILDREN);
}

/* Soft-reclaim a free, installed child of unreserved tree t */
static llfree_result_t soft_in_tree(llfree_t *self, uint64_t t)
{
	uint64_t first = t * LLFREE_TREE_CHILDREN;

	if (tree_reserved(llfree_load_relaxed16(tree_at(self, t))))
		return result_err(LLFREE_ERR_MEMORY);
	for (unsigned i = 0; i < reclaimable_children(self, t); i++) {
		if (child_cas_soft_reclaim(child_at(self, first + i)))
			return result_ok((first + i) * LLFREE_CHILD_FRAMES, false);
	}
	return result_err(LLFREE_ERR_MEMORY);
}

/* Hard-reclaim a free child of unreserved tree t, soft ones first */
static llfree_result_t hard_in_tree(llfree_t *self, uint64_t t)
{
	uint64_t first = t * LLFREE_TREE_CHILDREN;
	uint16_t v = llfree_load_relaxed16(tree_at(self, t));

	if (tree_reserved(v) || tree_free(v) < LLFREE_CHILD_FRAMES ||
	    !tree_cas_dec(tree_at(self, t), LLFREE_CHILD_FRAMES, true))
		return result_err(LLFREE_ERR_MEMORY);

	for (unsigned pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < reclaimable_children(self, t); i++) {
			uint16_t *p = child_at(self, first + i);
			bool was_soft;

			if (pass == 0 && !child_reclaimed(llfree_load_relaxed16(p)))
				continue;
			if (child_cas_hard_reclaim(p, &was_soft))
				return result_ok((first + i) * LLFREE_CHILD_FRAMES,
						 was_soft);
		}
	}
	/* the counter promised frames no whole child holds: undo */
	tree_cas_inc(tree_at(self, t), LLFREE_CHILD_FRAMES);
	return result_err(LLFREE_ERR_MEMORY);
}

llfree_result_t llfree_reclaim(llfree_t *self, uint64_t start, bool hard)
{
	uint64_t t0 = (start / LLFREE_TREE_FRAMES) % self->trees_len;

	for (uint64_t i = 0; i < self->trees_len; i++) {
		uint64_t t = (t0 + i) % self->trees_len;
		llfree_result_t res = hard ? hard_in_tree(self, t) :
					     soft_in_tree(self, t);

		if (res.error == LLFREE_OK)
			return res;
	}
	return result_err(LLFREE_ERR_MEMORY);
}

/* tree.free >= 512 and unreserved -> tree.free - 512, then child -> hard */
static llfree_result_t hard_at(llfree_t *self, uint64_t c)
{
	uint16_t *tree = tree_at(self, c / LLFREE_TREE_CHILDREN);
	bool was_soft;

	if (!tree_cas_dec(tree, LLFREE_CHILD_FRAMES, true))
		return result_err(LLFREE_ERR_STATE);
	if (!child_cas_hard_reclaim(child_at(self, c), &was_soft)) {
		/* exact undo of the counter we just paid */
		tree_cas_inc(tree, LLFREE_CHILD_FRAMES);
		return result_err(LLFREE_ERR_STATE);
	}
	return result_ok(c * LLFREE_CHILD_FRAMES, was_soft);
}

llfree_result_t llfree_reclaim_at(llfree_t *self, uint64_t frame, bool hard)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES;
	uint16_t tree;

	if (frame >= self->frames || frame % LLFREE_CHILD_FRAMES ||
	    child_capacity(self, c) != LLFREE_CHILD_FRAMES)
		return result_err(LLFREE_ERR_ADDRESS);
	if (hard)
		return hard_at(self, c);
	/* soft: as soft_in_tree(), for one child */
	tree = llfree_load_relaxed16(tree_at(self, c / LLFREE_TREE_CHILDREN));
	if (tree_reserved(tree) || !child_cas_soft_reclaim(child_at(self, c)))
		return result_err(LLFREE_ERR_STATE);
	return result_ok(frame, false);
}

llfree_result_t llfree_return(llfree_t *self, uint64_t frame)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES;

	if (frame >= self->frames || frame % LLFREE_CHILD_FRAMES ||
	    child_capacity(self, c) != LLFREE_CHILD_FRAMES)
		return result_err(LLFREE_ERR_ADDRESS);
	if (!child_cas_return(child_at(self, c)))
		return result_err(LLFREE_ERR_STATE);
	/* a full counter means the guest corrupted it; the child is back */
	if (!tree_cas_inc(tree_at(self, c / LLFREE_TREE_CHILDREN),
			  LLFREE_CHILD_FRAMES))
		llfree_warn("return: tree counter of child %llu overflows",
			    (unsigned long long)c);
	return result_ok(frame, true);
}

llfree_result_t llfree_install(llfree_t *self, uint64_t frame)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES;

	if (frame >= self->frames || frame % LLFREE_CHILD_FRAMES)
		return result_err(LLFREE_ERR_ADDRESS);
	if (!child_cas_install(child_at(self, c)))
		return result_err(LLFREE_ERR_STATE);
	return result_ok(frame, true);
}

llfree_result_t llfree_unreclaim_free(llfree_t *self, uint64_t frame)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES;

	if (frame >= self->frames || frame % LLFREE_CHILD_FRAMES)
		return result_err(LLFREE_ERR_ADDRESS);
	if (!child_cas_unreclaim_free(child_at(self, c)))
		return result_err(LLFREE_ERR_STATE);
	return result_ok(frame, true);
}
