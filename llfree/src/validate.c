// SPDX-License-Identifier: MIT
/*
 * llfree_validate(): the expensive consistency walk run by tests and debug
 * builds around mutating operations. It reads shared memory that may be
 * corrupt, so it only reports; it never asserts.
 */
#include "llfree_internal.h"

#include "bitfield.h"
#include "child.h"
#include "tree.h"

/* Check one child against its bitfield; returns its free frames or -1 */
static long validate_child(const llfree_t *self, uint64_t c)
{
	uint16_t v = llfree_load_relaxed16(child_at(self, c));
	unsigned set = bitfield_count(bitfield_at(self, c));

	if (!child_valid(v)) {
		llfree_warn("child %llu: malformed entry 0x%x",
			    (unsigned long long)c, v);
		return -1;
	}
	if (child_huge(v) ? set != 0 : child_free(v) + set != LLFREE_CHILD_FRAMES) {
		llfree_warn("child %llu: entry 0x%x, %u bits set",
			    (unsigned long long)c, v, set);
		return -1;
	}
	return child_free(v);
}

/* Free frames held by this address space's reservations of tree t */
static unsigned reserved_frames(const llfree_t *self, uint64_t t, bool *found)
{
	unsigned free = 0;

	*found = false;
	for (size_t core = 0; core < self->cores; core++) {
		for (unsigned kind = 0; kind < LLFREE_KINDS; kind++) {
			uint64_t r = llfree_load_relaxed64(
				reservation(self, core, kind));

			if (local_present(r) && local_tree(r) == t) {
				free += local_free(r);
				*found = true;
			}
		}
	}
	return free;
}

bool llfree_validate(const llfree_t *self)
{
	for (uint64_t t = 0; t < self->trees_len; t++) {
		uint16_t v = llfree_load_relaxed16(tree_at(self, t));
		unsigned sum = 0, free = tree_free(v);
		bool found;

		for (unsigned i = 0; i < tree_children(self, t); i++) {
			long f = validate_child(self,
						t * LLFREE_TREE_CHILDREN + i);

			if (f < 0)
				return false;
			sum += (unsigned)f;
		}
		free += reserved_frames(self, t, &found);
		if (found != tree_reserved(v) || free != sum ||
		    free > tree_capacity(self, t)) {
			llfree_warn("tree %llu: entry 0x%x (+reservation = %u), children %u",
				    (unsigned long long)t, v, free, sum);
			return false;
		}
	}
	return true;
}
