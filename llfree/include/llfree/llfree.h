/* SPDX-License-Identifier: MIT */
/*
 * llfree: a lock-free page-frame allocator whose shared state can be
 * operated on by a guest kernel and its hypervisor at the same time.
 *
 * The allocator manages `frames` 4 KiB frames numbered 0..frames-1 (the
 * caller adds its own base). Its state is split in three parts:
 *
 *   trees   shared, LLFREE_TREE_BYTES per 16 MiB tree (8 children)
 *   lower   shared, LLFREE_CHILD_BITFIELD_BYTES + LLFREE_CHILD_BYTES per
 *           2 MiB child, bitfields first, then the child entries
 *   local   private to each address space: one reservation per CPU and
 *           kind, plus search hints
 *
 * The shared parts contain no pointers, only fixed-width little-endian
 * atomic words, so the guest and the host can map them at different
 * addresses. Their layout is fixed bit for bit (see the LLFREE_* layout
 * macros below and docs/llfree.md) and must not change without a protocol
 * version bump.
 *
 * Return convention: every operation that can fail returns an
 * llfree_result_t (warn_unused_result); `error` is LLFREE_OK on success.
 * Queries return plain values.
 */
#ifndef LLFREE_LLFREE_H
#define LLFREE_LLFREE_H

#include "platform_types.h"

/* Shared layout --------------------------------------------------------- */

#define LLFREE_FRAME_BITS 12
#define LLFREE_FRAME_SIZE (1u << LLFREE_FRAME_BITS)
/* Order of a child (2 MiB): a child holds 512 frames */
#define LLFREE_HUGE_ORDER 9
#define LLFREE_CHILD_FRAMES (1u << LLFREE_HUGE_ORDER)
/* A tree (16 MiB) holds 8 children */
#define LLFREE_TREE_CHILDREN 8u
#define LLFREE_TREE_ORDER (LLFREE_HUGE_ORDER + 3)
#define LLFREE_TREE_FRAMES (1u << LLFREE_TREE_ORDER)
/* Largest order a guest can allocate (Linux MAX_ORDER - 1) */
#define LLFREE_MAX_ORDER 10

/* Tree entry: one 16-bit word per tree */
#define LLFREE_TREE_BYTES 2u
#define LLFREE_TREE_FREE_MASK 0x1fffu /* bits 0..12: free frames 0..4096 */
#define LLFREE_TREE_RESERVED (1u << 13) /* bit 13: a CPU holds it */
#define LLFREE_TREE_KIND_SHIFT 14 /* bits 14..15: enum llfree_kind */

/* Child entry: one 16-bit word per 2 MiB */
#define LLFREE_CHILD_BYTES 2u
#define LLFREE_CHILD_FREE_MASK 0x3ffu /* bits 0..9: free frames 0..512 */
#define LLFREE_CHILD_HUGE (1u << 10) /* bit 10: allocated as one 2 MiB frame */
#define LLFREE_CHILD_RECLAIMED (1u << 11) /* bit 11: host backing discarded */
#define LLFREE_CHILD_UNUSED_MASK 0xf000u /* bits 12..15: always zero */

/* Bitfield: 512 bits per child, bit i of word w is frame 64 * w + i */
#define LLFREE_CHILD_BITFIELD_BYTES 64u
#define LLFREE_BITFIELD_WORDS 8u

/* Alignment the shared arrays must have */
#define LLFREE_ALIGN 64u

/* Tree kinds: allocations of different kinds are kept in different trees */
enum llfree_kind {
	LLFREE_KIND_FIXED = 0,
	LLFREE_KIND_MOVABLE = 1,
	LLFREE_KIND_HUGE = 2,
	LLFREE_KINDS = 3,
};

/* API ------------------------------------------------------------------- */

enum llfree_error {
	LLFREE_OK = 0,
	/* Not enough free memory */
	LLFREE_ERR_MEMORY = 1,
	/* A frame or order outside the allocator, or a frame not allocated */
	LLFREE_ERR_ADDRESS = 2,
	/* The frame is not in the state the operation needs */
	LLFREE_ERR_STATE = 3,
	/* Invalid initialization parameters or metadata */
	LLFREE_ERR_INIT = 4,
};

/* Result of a fallible operation */
typedef struct llfree_result {
	/* The frame (relative to the allocator) on success */
	uint64_t frame;
	/* enum llfree_error */
	uint8_t error;
	/*
	 * get/get_at: at least one covered child was reclaimed when the
	 * allocation won it, so llfree_install_covered() must run before the
	 * memory is used. reclaim: the child was already soft-reclaimed.
	 */
	bool reclaimed;
} llfree_result_t;

#define LLFREE_MUST_CHECK __attribute__((warn_unused_result))

/* Initialization modes */
enum llfree_init {
	/* Every frame free, nothing reclaimed */
	LLFREE_INIT_FREE = 0,
	/* Every frame allocated (as order-0 frames, to be freed one by one) */
	LLFREE_INIT_ALLOC = 1,
	/* Attach to shared state initialized elsewhere, without changing it */
	LLFREE_INIT_ATTACH = 2,
};

/* Sizes of the three metadata buffers */
typedef struct llfree_meta_size {
	size_t local;
	size_t trees;
	size_t lower;
} llfree_meta_size_t;

/* Pointers to the three metadata buffers */
typedef struct llfree_meta {
	void *local;
	void *trees;
	void *lower;
} llfree_meta_t;

/*
 * Private handle; its fields are internal. One handle per address space:
 * every guest free must go through the same handle (its split_lock
 * serialises the splits of huge children); the host's attached handle
 * never splits.
 */
typedef struct llfree {
	uint64_t frames;
	uint32_t cores;
	uint32_t trees_len;
	uint64_t children_len;
	struct llfree_local *local;
	uint16_t *trees;
	uint64_t *bitfields;
	uint16_t *children;
	/* Serialises splits of huge children; never in shared memory */
	llfree_lock_t split_lock;
} llfree_t;

/* Metadata sizes for `frames` frames and `cores` CPUs; zero sizes if invalid */
llfree_meta_size_t llfree_metadata_size(size_t cores, uint64_t frames);

/*
 * Initialize `self` over the given buffers (sized by llfree_metadata_size,
 * all aligned to LLFREE_ALIGN). With LLFREE_INIT_ATTACH the shared buffers
 * are not written, only checked for malformed entries (LLFREE_ERR_INIT).
 */
llfree_result_t llfree_init(llfree_t *self, size_t cores, uint64_t frames,
			    enum llfree_init mode,
			    llfree_meta_t meta) LLFREE_MUST_CHECK;

/* Metadata buffers of an initialized allocator */
llfree_meta_t llfree_metadata(const llfree_t *self);

/* Guest operations ------------------------------------------------------ */

/*
 * Allocate 2^order frames on `core`. `movable` is a fragmentation hint for
 * orders below LLFREE_HUGE_ORDER. Installed children are preferred over
 * reclaimed ones.
 */
llfree_result_t llfree_get(llfree_t *self, size_t core, size_t order,
			   bool movable) LLFREE_MUST_CHECK;

/* Allocate exactly the 2^order frames starting at `frame` */
llfree_result_t llfree_get_at(llfree_t *self, size_t core, uint64_t frame,
			      size_t order) LLFREE_MUST_CHECK;

/*
 * Free the 2^order frames starting at `frame`. Any aligned block whose
 * frames are all allocated can be freed, whatever allocations they came
 * from:
 *
 * - order < 9 inside a huge child (part of an order-9/10 allocation, e.g.
 *   a THP split, split_page() or __free_pages() with an extra reference):
 *   the first such free splits the child into an ordinary one with all 512
 *   frames allocated, then frees the block. Concurrent partial frees of
 *   the same child, also from interrupts, are safe; the split takes the
 *   handle's split_lock. A huge child that is reclaimed (hard-reclaimed by
 *   the host, or a guest allocation not installed yet) is refused with
 *   LLFREE_ERR_STATE and not changed.
 * - order 9/10 over children that are huge (installed) or have all 512
 *   frames allocated in any pieces (e.g. split and allocated again), in
 *   any mix for order 10.
 *
 * LLFREE_ERR_ADDRESS for a block out of range, unaligned or not entirely
 * allocated; LLFREE_ERR_STATE for a reclaimed huge child or an entry that
 * contradicts its bitfield (corrupt). An error frees nothing.
 */
llfree_result_t llfree_put(llfree_t *self, size_t core, uint64_t frame,
			   size_t order) LLFREE_MUST_CHECK;

/*
 * Give back an allocation that was never used because its install failed.
 * Unlike llfree_put(), huge children keep their reclaimed flag. Partial
 * frees of a huge child are refused as by llfree_put(): an allocation that
 * was never installed is given back whole.
 */
llfree_result_t llfree_put_uninstalled(llfree_t *self, size_t core,
				       uint64_t frame,
				       size_t order) LLFREE_MUST_CHECK;

/* Callback of llfree_install_covered(); returns false to stop */
typedef bool (*llfree_install_fn)(void *ctx, uint64_t child_frame);

/*
 * Call `install` for every child covered by the 2^order frames at `frame`
 * that is still marked reclaimed. Returns the number of calls, or -1 if a
 * call failed.
 */
int llfree_install_covered(const llfree_t *self, uint64_t frame, size_t order,
			   llfree_install_fn install, void *ctx);

/* Give back the tree reservations of `core` */
void llfree_drain(llfree_t *self, size_t core);

/* Host operations ------------------------------------------------------- */

/*
 * Take a fully free child away from the guest, searching from the tree of
 * frame `start` (wrapping around). Only whole 2 MiB children qualify.
 *
 * soft (hard == false): {free 512, !huge, !reclaimed} -> reclaimed, only in
 * unreserved trees. The guest can still allocate it after installing it.
 *
 * hard: tree.free -= 512 (never in reserved trees), then a fully free
 * child -> {free 0, huge, reclaimed}; already soft children are preferred
 * and reported with result.reclaimed == true (no new discard needed).
 *
 * Returns the child's first frame or LLFREE_ERR_MEMORY.
 */
llfree_result_t llfree_reclaim(llfree_t *self, uint64_t start,
			       bool hard) LLFREE_MUST_CHECK;

/*
 * Like llfree_reclaim(), but only the child starting at `frame`: the same
 * transitions, the same rules (only a whole, entirely free child, never in
 * a reserved tree; hard pays the tree counter first and gives it back if
 * the child does not qualify). For a caller that tracks children itself,
 * e.g. to reclaim only children it saw free before.
 *
 * Returns `frame` (hard: result.reclaimed == true if the child was soft),
 * LLFREE_ERR_ADDRESS if `frame` is out of range, not child aligned or in
 * the partial last child, LLFREE_ERR_STATE if the child is not entirely
 * free (soft: or already reclaimed) or its tree is reserved.
 */
llfree_result_t llfree_reclaim_at(llfree_t *self, uint64_t frame,
				  bool hard) LLFREE_MUST_CHECK;

/* Undo a hard reclaim: {free 0, huge, reclaimed} -> soft; tree.free += 512 */
llfree_result_t llfree_return(llfree_t *self, uint64_t frame) LLFREE_MUST_CHECK;

/* After the host populated the child: clear its reclaimed flag */
llfree_result_t llfree_install(llfree_t *self, uint64_t frame) LLFREE_MUST_CHECK;

/*
 * Clear the reclaimed flag of a soft-reclaimed child that is still entirely
 * free: {512, !huge, reclaimed} -> {512, !huge, !reclaimed}. For a guest
 * whose device was reset (everything is backed again): unlike
 * llfree_install() it never touches a child that is allocated, so it cannot
 * mistake an allocation in flight for reclaimed memory.
 */
llfree_result_t llfree_unreclaim_free(llfree_t *self,
				      uint64_t frame) LLFREE_MUST_CHECK;

/* Queries --------------------------------------------------------------- */

/* Number of frames managed */
uint64_t llfree_frames(const llfree_t *self);
/* Number of CPUs the local state was sized for */
size_t llfree_cores(const llfree_t *self);
/* Free frames, counted from the tree entries and reservations */
uint64_t llfree_free_frames(const llfree_t *self);
/* Fully free, not reclaimed children */
uint64_t llfree_free_huge(const llfree_t *self);
/* Children that are reclaimed (soft and hard) */
uint64_t llfree_reclaimed_huge(const llfree_t *self);
/* Trees reserved by any CPU of this address space */
uint64_t llfree_reserved_trees(const llfree_t *self);
/* Whether all 2^order frames at `frame` are free (false if out of range) */
bool llfree_is_free(const llfree_t *self, uint64_t frame, size_t order);
/* Free frames in the aligned 2^order block containing `frame` (order 0, 9 or 12) */
size_t llfree_free_at(const llfree_t *self, uint64_t frame, size_t order);
/* Whether the child containing `frame` is marked reclaimed */
bool llfree_is_reclaimed(const llfree_t *self, uint64_t frame);

/*
 * Expensive consistency walk; only meaningful while no operation runs.
 * Checks children against bitfields and trees against children and
 * reservations. Returns true if consistent; logs the first violation.
 */
bool llfree_validate(const llfree_t *self);

/* Human readable name of an llfree_error */
const char *llfree_strerror(int error);

#endif /* LLFREE_LLFREE_H */
