/* SPDX-License-Identifier: MIT */
/* Geometry helpers shared by the modules of the allocator */
#ifndef LLFREE_INTERNAL_H
#define LLFREE_INTERNAL_H

#include "llfree/llfree.h"
#include "llfree_platform.h"
#include "local.h"

/* Limits that keep every index within the fields that store it */
#define LLFREE_MAX_FRAMES (1ull << 42)
#define LLFREE_MAX_CORES (1u << 16)

static inline llfree_result_t result_ok(uint64_t frame, bool reclaimed)
{
	return (llfree_result_t){ .frame = frame, .error = LLFREE_OK,
				  .reclaimed = reclaimed };
}

static inline llfree_result_t result_err(enum llfree_error error)
{
	return (llfree_result_t){ .frame = 0, .error = (uint8_t)error };
}

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t div_ceil(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

static inline uint16_t *child_at(const llfree_t *self, uint64_t child)
{
	return &self->children[child];
}

static inline uint64_t *bitfield_at(const llfree_t *self, uint64_t child)
{
	return &self->bitfields[child * LLFREE_BITFIELD_WORDS];
}

static inline uint16_t *tree_at(const llfree_t *self, uint64_t tree)
{
	return &self->trees[tree];
}

static inline uint64_t *reservation(const llfree_t *self, size_t core,
				    unsigned kind)
{
	return &self->local[core].reserved[kind];
}

/* Frames of `child` that exist (512 except for a last partial child) */
static inline unsigned child_capacity(const llfree_t *self, uint64_t child)
{
	uint64_t rest = self->frames - child * LLFREE_CHILD_FRAMES;

	return rest < LLFREE_CHILD_FRAMES ? (unsigned)rest : LLFREE_CHILD_FRAMES;
}

/* Frames of `tree` that exist */
static inline unsigned tree_capacity(const llfree_t *self, uint64_t tree)
{
	uint64_t rest = self->frames - tree * LLFREE_TREE_FRAMES;

	return rest < LLFREE_TREE_FRAMES ? (unsigned)rest : LLFREE_TREE_FRAMES;
}

/* Children of `tree` that exist */
static inline unsigned tree_children(const llfree_t *self, uint64_t tree)
{
	uint64_t rest = self->children_len - tree * LLFREE_TREE_CHILDREN;

	return rest < LLFREE_TREE_CHILDREN ? (unsigned)rest : LLFREE_TREE_CHILDREN;
}

/* A 2^order block at `frame` lies inside the allocator and is aligned */
static inline bool block_valid(const llfree_t *self, uint64_t frame,
			       size_t order)
{
	return order <= LLFREE_MAX_ORDER && frame < self->frames &&
	       (frame & ((1ull << order) - 1)) == 0 &&
	       self->frames - frame >= (1ull << order);
}

#endif /* LLFREE_INTERNAL_H */
