/* SPDX-License-Identifier: MIT */
/* Fixed-width types for the public header, in the kernel and in userspace */
#ifndef LLFREE_PLATFORM_TYPES_H
#define LLFREE_PLATFORM_TYPES_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#endif

#endif /* LLFREE_PLATFORM_TYPES_H */
