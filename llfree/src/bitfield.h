/* SPDX-License-Identifier: MIT */
/*
 * Bitfields: 512 bits (8 words) per child, one bit per frame, 1 = allocated.
 *
 * Orders 0..6 live inside one word and take one CAS. Orders 7 and 8 are
 * rows of 2 and 4 whole words, each taken 0 -> ~0 with its own CAS; when a
 * later word is already in use, the words taken so far are given back
 * (exact undo), so a failed row allocation leaves no trace.
 *
 * The whole bitfield is filled and cleared the same way, as a row of all
 * 8 words, for the split of a huge child and the free of a split child.
 */
#ifndef LLFREE_BITFIELD_H
#define LLFREE_BITFIELD_H

#include "llfree/llfree.h"

/* Orders a bitfield serves (below LLFREE_HUGE_ORDER) */
#define BITFIELD_MAX_ORDER (LLFREE_HUGE_ORDER - 1)

/*
 * Set a free, aligned block of 2^order bits, searching from word `hint`.
 * Returns the block's first bit in *pos.
 */
bool bitfield_alloc(uint64_t *bf, unsigned order, unsigned hint, unsigned *pos);

/* Set exactly the block at `pos`; fails (changing nothing) if a bit is set */
bool bitfield_set(uint64_t *bf, unsigned pos, unsigned order);

/* Clear exactly the block at `pos`; fails (changing nothing) if a bit is clear */
bool bitfield_clear(uint64_t *bf, unsigned pos, unsigned order);

/* Fill: every word 0 -> ~0; fails (changing nothing) if a bit is set */
bool bitfield_fill(uint64_t *bf);

/* Clear all: every word ~0 -> 0; fails (changing nothing) if a bit is clear */
bool bitfield_clear_all(uint64_t *bf);

/* Whether every bit is set */
bool bitfield_is_full(const uint64_t *bf);

/* Whether every bit of the block at `pos` is clear */
bool bitfield_is_free(const uint64_t *bf, unsigned pos, unsigned order);

/* Number of set bits */
unsigned bitfield_count(const uint64_t *bf);

#endif /* LLFREE_BITFIELD_H */
