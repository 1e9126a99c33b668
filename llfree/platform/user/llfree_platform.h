/* SPDX-License-Identifier: MIT */
/*
 * Platform layer for userspace (tests, benchmarks, QEMU): C11 stdatomic.
 *
 * The shared words are plain uint16_t/uint64_t in memory so the same layout
 * works in the kernel; here they are accessed through _Atomic casts, which
 * have the same size and alignment (checked below).
 */
#ifndef LLFREE_PLATFORM_H
#define LLFREE_PLATFORM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(_Atomic uint16_t) == sizeof(uint16_t), "atomic u16 layout");
_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t), "atomic u64 layout");
_Static_assert(sizeof(_Atomic uint32_t) == sizeof(uint32_t) &&
		       _Alignof(_Atomic uint32_t) == _Alignof(uint32_t),
	       "atomic u32 layout (the lock word)");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "the shared layout is little-endian; big-endian hosts need byte swaps");

#define A16(p) ((_Atomic uint16_t *)(p))
#define A64(p) ((_Atomic uint64_t *)(p))

/* p: a naturally aligned shared word */
static inline uint16_t llfree_load_relaxed16(const uint16_t *p)
{
	return atomic_load_explicit(A16(p), memory_order_relaxed);
}

static inline uint16_t llfree_load_acquire16(const uint16_t *p)
{
	return atomic_load_explicit(A16(p), memory_order_acquire);
}

static inline void llfree_store_release16(uint16_t *p, uint16_t v)
{
	atomic_store_explicit(A16(p), v, memory_order_release);
}

/* On failure *expected holds the current value */
static inline bool llfree_cas_acq_rel16(uint16_t *p, uint16_t *expected,
					uint16_t desired)
{
	return atomic_compare_exchange_strong_explicit(
		A16(p), expected, desired, memory_order_acq_rel,
		memory_order_acquire);
}

static inline uint64_t llfree_load_relaxed64(const uint64_t *p)
{
	return atomic_load_explicit(A64(p), memory_order_relaxed);
}

static inline uint64_t llfree_load_acquire64(const uint64_t *p)
{
	return atomic_load_explicit(A64(p), memory_order_acquire);
}

static inline void llfree_store_relaxed64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit(A64(p), v, memory_order_relaxed);
}

static inline void llfree_store_release64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit(A64(p), v, memory_order_release);
}

/* On failure *expected holds the current value */
static inline bool llfree_cas_acq_rel64(uint64_t *p, uint64_t *expected,
					uint64_t desired)
{
	return atomic_compare_exchange_strong_explicit(
		A64(p), expected, desired, memory_order_acq_rel,
		memory_order_acquire);
}

#undef A16
#undef A64

/* Number of set bits */
static inline unsigned llfree_popcount64(uint64_t v)
{
	return (unsigned)__builtin_popcountll(v);
}

/* Busy-wait hint inside retry loops */
static inline void llfree_spin_hint(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/*
 * The guest-private lock of an llfree_t (llfree_t.split_lock): a spin lock
 * on a C11 atomic word, so ThreadSanitizer sees its acquire and release.
 * It is held for a few atomic operations on a rare path (the split of a
 * huge child) and guards only that.
 *
 * Preconditions: llfree_lock_init() ran before any other use and while
 * nobody used the lock; the caller does not hold it already (it is not
 * recursive); the holder neither blocks nor takes another lock. Userspace
 * has no interrupts, so the flags are unused; a signal handler must not
 * free into llfree while its thread may hold the lock.
 */
static inline void llfree_lock_init(llfree_lock_t *lock)
{
	atomic_store_explicit((_Atomic uint32_t *)&lock->word, 0,
			      memory_order_relaxed);
}

/* Returns the flags for llfree_unlock_irqrestore() */
static inline unsigned long llfree_lock_irqsave(llfree_lock_t *lock)
{
	_Atomic uint32_t *w = (_Atomic uint32_t *)&lock->word;

	while (atomic_exchange_explicit(w, 1, memory_order_acquire)) {
		while (atomic_load_explicit(w, memory_order_relaxed))
			llfree_spin_hint();
	}
	return 0;
}

/* Precondition: the caller holds `lock`, flags from llfree_lock_irqsave() */
static inline void llfree_unlock_irqrestore(llfree_lock_t *lock,
					    unsigned long flags)
{
	(void)flags;
	atomic_store_explicit((_Atomic uint32_t *)&lock->word, 0,
			      memory_order_release);
}

#define llfree_warn(fmt, ...) \
	fprintf(stderr, "llfree: " fmt "\n", ##__VA_ARGS__)

/*
 * Internal invariant: aborts in debug builds (LLFREE_DEBUG), compiled out
 * otherwise. Never used on values read from shared memory by the host.
 */
#ifdef LLFREE_DEBUG
#define llfree_assert(cond)                                                  \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "llfree: %s:%d: assertion '%s' failed\n", \
				__FILE__, __LINE__, #cond);                  \
			abort();                                             \
		}                                                            \
	} while (0)
#else
#define llfree_assert(cond) ((void)0)
#endif

#endif /* LLFREE_PLATFORM_H */
