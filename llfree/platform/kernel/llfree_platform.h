/* SPDX-License-Identifier: MIT */
/*
 * Platform layer for the Linux kernel: no libc, kernel atomics.
 *
 * cmpxchg() on 16- and 64-bit words is a full barrier, which is at least
 * the acquire-release order the names promise.
 */
#ifndef LLFREE_PLATFORM_H
#define LLFREE_PLATFORM_H

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/bug.h>
#include <linux/compiler.h>
#include <linux/printk.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/types.h>
#include <asm/processor.h>

#ifndef __LITTLE_ENDIAN
#error "the llfree shared layout is little-endian"
#endif

/* p: a naturally aligned shared word */
static inline u16 llfree_load_relaxed16(const u16 *p)
{
	return READ_ONCE(*p);
}

static inline u16 llfree_load_acquire16(const u16 *p)
{
	return smp_load_acquire(p);
}

static inline void llfree_store_release16(u16 *p, u16 v)
{
	smp_store_release(p, v);
}

/* On failure *expected holds the current value */
static inline bool llfree_cas_acq_rel16(u16 *p, u16 *expected, u16 desired)
{
	u16 old = cmpxchg(p, *expected, desired);
	bool ok = old == *expected;

	*expected = old;
	return ok;
}

static inline u64 llfree_load_relaxed64(const u64 *p)
{
	return READ_ONCE(*p);
}

static inline u64 llfree_load_acquire64(const u64 *p)
{
	return smp_load_acquire(p);
}

static inline void llfree_store_relaxed64(u64 *p, u64 v)
{
	WRITE_ONCE(*p, v);
}

static inline void llfree_store_release64(u64 *p, u64 v)
{
	smp_store_release(p, v);
}

/* On failure *expected holds the current value */
static inline bool llfree_cas_acq_rel64(u64 *p, u64 *expected, u64 desired)
{
	u64 old = cmpxchg(p, *expected, desired);
	bool ok = old == *expected;

	*expected = old;
	return ok;
}

/* Number of set bits (the kernel has no libgcc for the builtin) */
static inline unsigned llfree_popcount64(u64 v)
{
	return hweight64(v);
}

/* Busy-wait hint inside retry loops */
static inline void llfree_spin_hint(void)
{
	cpu_relax();
}

/*
 * The guest-private lock of an llfree_t (llfree_t.split_lock): a raw
 * spinlock, held for a few atomic operations on a rare path (the split of
 * a huge child) and guarding only that. Frees run in any context,
 * interrupts included, so it is taken with interrupts off: an interrupt
 * on the CPU that holds it could otherwise free into the same split and
 * spin forever on its own CPU's lock. Raw, so PREEMPT_RT keeps it a
 * spinning lock too (frees happen in atomic context).
 *
 * Preconditions: llfree_lock_init() ran before any other use; the caller
 * does not hold it already (not recursive); the holder neither sleeps
 * nor takes another lock (a leaf for lockdep). Not usable from NMI.
 */
static inline void llfree_lock_init(llfree_lock_t *lock)
{
	raw_spin_lock_init(lock);
}

/* Returns the flags for llfree_unlock_irqrestore() */
static inline unsigned long llfree_lock_irqsave(llfree_lock_t *lock)
	__acquires(lock)
{
	unsigned long flags;

	raw_spin_lock_irqsave(lock, flags);
	return flags;
}

/* Precondition: the caller holds `lock`, flags from llfree_lock_irqsave() */
static inline void llfree_unlock_irqrestore(llfree_lock_t *lock,
					    unsigned long flags)
	__releases(lock)
{
	raw_spin_unlock_irqrestore(lock, flags);
}

#define llfree_warn(fmt, ...) pr_warn("llfree: " fmt "\n", ##__VA_ARGS__)

/* Internal invariant: with CONFIG_DEBUG_VM warns once, never stops the kernel */
#ifdef CONFIG_DEBUG_VM
#define llfree_assert(cond) WARN_ON_ONCE(!(cond))
#else
#define llfree_assert(cond) ((void)0)
#endif

#endif /* LLFREE_PLATFORM_H */
