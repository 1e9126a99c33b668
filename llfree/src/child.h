/* SPDX-License-Identifier: MIT */
/*
 * Child entries: one 16-bit word per 2 MiB, {free, huge, reclaimed}.
 *
 * Invariants (for a child that is not huge):
 *   free == 512 - (set bits in the child's bitfield)
 * because allocation decrements `free` before setting bits and a free
 * clears bits before incrementing `free`; a child seen with free == 512
 * therefore has nothing allocated, which is what makes reclaim by the host
 * sound. Bits between the two updates make the counter lower than the
 * bitfield suggests, never higher.
 *
 * A huge child (one 2 MiB allocation, or a hard-reclaimed child) has
 * free == 0 and an all-zero bitfield.
 *
 * Split: the first free of part of a huge allocation turns the child into
 * an ordinary one with every frame allocated, {0, !huge, !reclaimed} and
 * all 512 bits set, and then frees the part as usual. The bits are set
 * while the child is still huge, and the transition publishes them
 * (release): whoever sees the child not huge (acquire) sees the full
 * bitfield, so an allocator never finds a clear bit of the huge block.
 * While the bits are filled the child still looks huge (allocated) to
 * everyone; the host never sees the difference between a split child and
 * one allocated in small pieces. Splitters of one child are serialised by
 * a guest-private lock (llfree.c): filling without it has an ABA problem.
 * A split child whose 512 frames are allocated again can be freed whole
 * (bits cleared first, then +512), like a child never huge.
 *
 * States with respect to the host:
 *   installed       reclaimed == 0
 *   soft-reclaimed  {512, !huge, reclaimed}: the guest may allocate it, but
 *                   must have it installed before use
 *   hard-reclaimed  {0, huge, reclaimed}: looks allocated to the guest.
 *                   A guest huge allocation of a soft child has the same
 *                   bits until it is installed; the host tells them apart
 *                   with its own per-child state.
 *
 * Every transition is a pure function of the old value, applied with one
 * CAS by the helpers below. Values read from shared memory may be corrupt
 * (written by an untrusted guest); every transition rejects entries with
 * unused bits set or free > 512.
 */
#ifndef LLFREE_CHILD_H
#define LLFREE_CHILD_H

#include "llfree/llfree.h"
#include "llfree_platform.h"

static inline unsigned child_free(uint16_t c)
{
	return c & LLFREE_CHILD_FREE_MASK;
}

static inline bool child_huge(uint16_t c)
{
	return c & LLFREE_CHILD_HUGE;
}

static inline bool child_reclaimed(uint16_t c)
{
	return c & LLFREE_CHILD_RECLAIMED;
}

/* A well-formed entry: no unused bits, a free count in range */
static inline bool child_valid(uint16_t c)
{
	return !(c & LLFREE_CHILD_UNUSED_MASK) &&
	       child_free(c) <= LLFREE_CHILD_FRAMES &&
	       !(child_huge(c) && child_free(c) != 0);
}

static inline uint16_t child_make(unsigned free, bool huge, bool reclaimed)
{
	return (uint16_t)(free | (huge ? LLFREE_CHILD_HUGE : 0) |
			  (reclaimed ? LLFREE_CHILD_RECLAIMED : 0));
}

/* Fully free: no frame allocated, not huge */
static inline bool child_is_entirely_free(uint16_t c)
{
	return child_valid(c) && !child_huge(c) &&
	       child_free(c) == LLFREE_CHILD_FRAMES;
}

/* free >= n and not huge -> free - n; returns the old entry in *old */
static inline bool child_cas_dec(uint16_t *p, unsigned n, uint16_t *old)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_valid(v) || child_huge(v) || child_free(v) < n)
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, (uint16_t)(v - n)));
	*old = v;
	return true;
}

/* not huge and free + n <= 512 -> free + n */
static inline bool child_cas_inc(uint16_t *p, unsigned n)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_valid(v) || child_huge(v) ||
		    child_free(v) + n > LLFREE_CHILD_FRAMES)
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, (uint16_t)(v + n)));
	return true;
}

/* {512, !huge, r} -> {0, huge, r}; returns the old entry in *old */
static inline bool child_cas_take_huge(uint16_t *p, uint16_t *old)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_is_entirely_free(v))
			return false;
	} while (!llfree_cas_acq_rel16(p, &v,
				       child_make(0, true, child_reclaimed(v))));
	*old = v;
	return true;
}

/* Exact undo of child_cas_take_huge: {0, huge, r} -> {512, !huge, r} */
static inline bool child_cas_untake_huge(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_valid(v) || !child_huge(v))
			return false;
	} while (!llfree_cas_acq_rel16(
		p, &v, child_make(LLFREE_CHILD_FRAMES, false,
				  child_reclaimed(v))));
	return true;
}

/* Guest free of a huge frame: {0, huge, !reclaimed} -> {512, !huge, !reclaimed} */
static inline bool child_cas_put_huge(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_valid(v) || !child_huge(v) || child_reclaimed(v))
			return false;
	} while (!llfree_cas_acq_rel16(
		p, &v, child_make(LLFREE_CHILD_FRAMES, false, false)));
	return true;
}

/*
 * Split, after the caller filled the bitfield:
 * {0, huge, !reclaimed} -> {0, !huge, !reclaimed}. One exact expected
 * value, so no loop: any other entry is an error.
 */
static inline bool child_cas_split(uint16_t *p)
{
	uint16_t v = child_make(0, true, false);

	return llfree_cas_acq_rel16(p, &v, child_make(0, false, false));
}

/* Soft reclaim: {512, !huge, !reclaimed} -> {512, !huge, reclaimed} */
static inline bool child_cas_soft_reclaim(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_is_entirely_free(v) || child_reclaimed(v))
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, v | LLFREE_CHILD_RECLAIMED));
	return true;
}

/* Hard reclaim: {512, !huge, r} -> {0, huge, reclaimed}; *was_soft = r */
static inline bool child_cas_hard_reclaim(uint16_t *p, bool *was_soft)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_is_entirely_free(v))
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, child_make(0, true, true)));
	*was_soft = child_reclaimed(v);
	return true;
}

/* Return: {0, huge, reclaimed} -> {512, !huge, reclaimed} */
static inline bool child_cas_return(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_valid(v) || !child_huge(v) || !child_reclaimed(v))
			return false;
	} while (!llfree_cas_acq_rel16(
		p, &v, child_make(LLFREE_CHILD_FRAMES, false, true)));
	return true;
}

/* Unreclaim a free child: {512, !huge, reclaimed} -> {512, !huge, !reclaimed} */
static inline bool child_cas_unreclaim_free(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_is_entirely_free(v) || !child_reclaimed(v))
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, v & ~LLFREE_CHILD_RECLAIMED));
	return true;
}

/* Install: reclaimed -> !reclaimed, the rest unchanged */
static inline bool child_cas_install(uint16_t *p)
{
	uint16_t v = llfree_load_relaxed16(p);

	do {
		if (!child_valid(v) || !child_reclaimed(v))
			return false;
	} while (!llfree_cas_acq_rel16(p, &v, v & ~LLFREE_CHILD_RECLAIMED));
	return true;
}

#endif /* LLFREE_CHILD_H */
