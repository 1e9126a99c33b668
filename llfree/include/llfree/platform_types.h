/* SPDX-License-Identifier: MIT */
/*
 * Types for the public header, in the kernel and in userspace: fixed-width
 * integers and the private lock of an llfree_t (its functions are in
 * platform/{user,kernel}/llfree_platform.h).
 */
#ifndef LLFREE_PLATFORM_TYPES_H
#define LLFREE_PLATFORM_TYPES_H

#ifdef __KERNEL__
#include <linux/spinlock_types.h>
#include <linux/types.h>

typedef raw_spinlock_t llfree_lock_t;
#else
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A spin lock word, accessed only through C11 atomics (llfree_platform.h) */
typedef struct llfree_lock {
	uint32_t word;
} llfree_lock_t;
#endif

#endif /* LLFREE_PLATFORM_TYPES_H */
