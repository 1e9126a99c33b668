// SPDX-License-Identifier: MIT
#include "bitfield.h"
#include "llfree_platform.h"

#define WORD_BITS 64u
#define WORD_ORDER 6u

/* Bits at positions that are multiples of 2^order, for order <= 6 */
static const uint64_t aligned_starts[WORD_ORDER + 1] = {
	0xffffffffffffffffull, 0x5555555555555555ull, 0x1111111111111111ull,
	0x0101010101010101ull, 0x0001000100010001ull, 0x0000000100000001ull,
	0x0000000000000001ull,
};

/* Mask of a 2^order block starting at bit `bit` of a word, order <= 6 */
static inline uint64_t block_mask(unsigned bit, unsigned order)
{
	if (order == WORD_ORDER)
		return ~0ull;
	return ((1ull << (1u << order)) - 1) << bit;
}

/* Bits i such that the aligned 2^order block at i is clear in v */
static inline uint64_t free_blocks(uint64_t v, unsigned order)
{
	uint64_t free = ~v;

	for (unsigned s = 1; s < (1u << order); s <<= 1)
		free &= free >> s;
	return free & aligned_starts[order];
}

/* Word-internal block: find a clear aligned block in word w and set it */
static bool word_alloc(uint64_t *w, unsigned order, unsigned *bit)
{
	uint64_t v = llfree_load_relaxed64(w);

	for (;;) {
		uint64_t free = free_blocks(v, order);

		if (!free)
			return false;
		*bit = (unsigned)__builtin_ctzll(free);
		if (llfree_cas_acq_rel64(w, &v, v | block_mask(*bit, order)))
			return true;
	}
}

/* mask all clear in w -> set; false if a bit of mask is set */
static bool word_set(uint64_t *w, uint64_t mask)
{
	uint64_t v = llfree_load_relaxed64(w);

	do {
		if (v & mask)
			return false;
	} while (!llfree_cas_acq_rel64(w, &v, v | mask));
	return true;
}

/* mask all set in w -> clear; false if a bit of mask is clear */
static bool word_clear(uint64_t *w, uint64_t mask)
{
	uint64_t v = llfree_load_relaxed64(w);

	do {
		if ((v & mask) != mask)
			return false;
	} while (!llfree_cas_acq_rel64(w, &v, v & ~mask));
	return true;
}

/* Take `count` whole words from `first`; undo the taken ones on failure */
static bool row_set(uint64_t *bf, unsigned first, unsigned count)
{
	for (unsigned i = 0; i < count; i++) {
		if (!word_set(&bf[first + i], ~0ull)) {
			while (i-- > 0) {
				bool undone = word_clear(&bf[first + i], ~0ull);

				llfree_assert(undone);
				(void)undone;
			}
			return false;
		}
	}
	return true;
}

/* Give back `count` whole words from `first`; restore them on failure */
static bool row_clear(uint64_t *bf, unsigned first, unsigned count)
{
	/* check the whole row first, so a wrong free changes nothing */
	for (unsigned i = 0; i < count; i++) {
		if (llfree_load_relaxed64(&bf[first + i]) != ~0ull)
			return false;
	}
	for (unsigned i = 0; i < count; i++) {
		if (!word_clear(&bf[first + i], ~0ull)) {
			/* a concurrent wrong free: restore what we cleared */
			llfree_warn("concurrent free of frame row %u",
				    first * WORD_BITS);
			while (i-- > 0)
				word_set(&bf[first + i], ~0ull);
			return false;
		}
	}
	return true;
}

bool bitfield_alloc(uint64_t *bf, unsigned order, unsigned hint, unsigned *pos)
{
	llfree_assert(order <= BITFIELD_MAX_ORDER);

	if (order > WORD_ORDER) {
		unsigned count = 1u << (order - WORD_ORDER);

		for (unsigned i = 0; i < LLFREE_BITFIELD_WORDS; i += count) {
			unsigned first = ((hint & ~(count - 1)) + i) %
					 LLFREE_BITFIELD_WORDS;

			if (row_set(bf, first, count)) {
				*pos = first * WORD_BITS;
				return true;
			}
		}
		return false;
	}
	for (unsigned i = 0; i < LLFREE_BITFIELD_WORDS; i++) {
		unsigned w = (hint + i) % LLFREE_BITFIELD_WORDS;
		unsigned bit;

		if (word_alloc(&bf[w], order, &bit)) {
			*pos = w * WORD_BITS + bit;
			return true;
		}
	}
	return false;
}

bool bitfield_set(uint64_t *bf, unsigned pos, unsigned order)
{
	llfree_assert(order <= BITFIELD_MAX_ORDER);
	llfree_assert(pos % (1u << order) == 0 && pos < LLFREE_CHILD_FRAMES);

	if (order > WORD_ORDER)
		return row_set(bf, pos / WORD_BITS, 1u << (order - WORD_ORDER));
	return word_set(&bf[pos / WORD_BITS], block_mask(pos % WORD_BITS, order));
}

bool bitfield_clear(uint64_t *bf, unsigned pos, unsigned order)
{
	llfree_assert(order <= BITFIELD_MAX_ORDER);
	llfree_assert(pos % (1u << order) == 0 && pos < LLFREE_CHILD_FRAMES);

	if (order > WORD_ORDER)
		return row_clear(bf, pos / WORD_BITS,
				 1u << (order - WORD_ORDER));
	return word_clear(&bf[pos / WORD_BITS],
			  block_mask(pos % WORD_BITS, order));
}

bool bitfield_fill(uint64_t *bf)
{
	return row_set(bf, 0, LLFREE_BITFIELD_WORDS);
}

bool bitfield_clear_all(uint64_t *bf)
{
	return row_clear(bf, 0, LLFREE_BITFIELD_WORDS);
}

bool bitfield_is_full(const uint64_t *bf)
{
	for (unsigned i = 0; i < LLFREE_BITFIELD_WORDS; i++) {
		if (llfree_load_relaxed64(&bf[i]) != ~0ull)
			return false;
	}
	return true;
}

bool bitfield_is_free(const uint64_t *bf, unsigned pos, unsigned order)
{
	if (order > WORD_ORDER) {
		unsigned first = pos / WORD_BITS, count = 1u << (order - WORD_ORDER);

		for (unsigned i = 0; i < count; i++) {
			if (llfree_load_relaxed64(&bf[first + i]) != 0)
				return false;
		}
		return true;
	}
	return !(llfree_load_relaxed64(&bf[pos / WORD_BITS]) &
		 block_mask(pos % WORD_BITS, order));
}

unsigned bitfield_count(const uint64_t *bf)
{
	unsigned n = 0;

	for (unsigned i = 0; i < LLFREE_BITFIELD_WORDS; i++)
		n += llfree_popcount64(llfree_load_relaxed64(&bf[i]));
	return n;
}
