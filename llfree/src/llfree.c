// SPDX-License-Identifier: MIT
/*
 * Guest side of llfree: initialization, allocation, free and queries.
 *
 * Allocation of 2^order frames, order < 9, on a CPU:
 *   1. take 2^order from the CPU's reservation for the kind (local CAS);
 *   2. in the reserved tree, decrement a child's free counter (child CAS),
 *      preferring partially used, installed children;
 *   3. set the bits (bitfield CAS).
 * A failed step gives back what the earlier steps took, in reverse. When
 * the reservation runs dry, the frames freed into the tree since are
 * synced into it; then a new tree is reserved; as a last resort trees are
 * used without reservation, after draining every CPU's reservations.
 * Orders 9 and 10 take one or two whole children instead of bits.
 *
 * A free runs the same steps backwards: bits, child counter, and then the
 * CPU's reservation if it holds the tree, else the tree entry.
 *
 * Frees do not have to match allocations: any aligned block whose frames
 * are all allocated can be freed. A free of part of a huge child first
 * splits it into an ordinary child with all 512 frames allocated
 * (split_huge(), the only place that takes a lock: see there); a free of
 * whole children takes huge children and children whose 512 bits are all
 * set, so a split child allocated again is freed whole as well.
 */
#include "llfree_internal.h"

#include "bitfield.h"
#include "child.h"
#include "tree.h"

/* Reservation rounds before falling back to unreserved trees */
#define RESERVE_ATTEMPTS 4
/* Search passes of reserve_new(), see reserve_candidate() */
#define RESERVE_PASSES 4
/* A reserved partially used tree should have at least 1/8 free */
#define RESERVE_MIN_SHIFT 3
/* Partially used trees are looked for near the last one (1 GiB) */
#define RESERVE_NEAR_TREES 64
#define RESERVE_NEAR_HUGE_TREES 8
/* Free trees the host has not reclaimed are looked for within 4 GiB */
#define RESERVE_INSTALLED_TREES 256
#define NO_TREE (~0ull)

llfree_meta_size_t llfree_metadata_size(size_t cores, uint64_t frames)
{
	llfree_meta_size_t size = { 0, 0, 0 };
	uint64_t children, trees;

	if (cores == 0 || cores > LLFREE_MAX_CORES || frames == 0 ||
	    frames > LLFREE_MAX_FRAMES)
		return size;
	children = div_ceil(frames, LLFREE_CHILD_FRAMES);
	trees = div_ceil(children, LLFREE_TREE_CHILDREN);
	size.local = cores * sizeof(struct llfree_local);
	size.trees = (size_t)div_ceil(trees * LLFREE_TREE_BYTES, LLFREE_ALIGN) *
		     LLFREE_ALIGN;
	size.lower = (size_t)(children * LLFREE_CHILD_BITFIELD_BYTES +
			      div_ceil(children * LLFREE_CHILD_BYTES,
				       LLFREE_ALIGN) * LLFREE_ALIGN);
	return size;
}

static bool aligned(const void *p, uintptr_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

/* Mark every frame free (or allocated), bits beyond the end allocated */
static void init_shared(llfree_t *self, bool free)
{
	for (uint64_t c = 0; c < self->children_len; c++) {
		unsigned cap = child_capacity(self, c);
		uint64_t *bf = bitfield_at(self, c);

		for (unsigned w = 0; w < LLFREE_BITFIELD_WORDS; w++) {
			uint64_t v = ~0ull;

			if (free && cap >= (w + 1) * 64)
				v = 0;
			else if (free && cap > w * 64)
				v = ~0ull << (cap - w * 64);
			llfree_store_release64(&bf[w], v);
		}
		llfree_store_release16(child_at(self, c),
				       child_make(free ? cap : 0, false, false));
	}
	for (uint64_t t = 0; t < self->trees_len; t++) {
		unsigned cap = free ? tree_capacity(self, t) : 0;

		llfree_store_release16(tree_at(self, t),
				       tree_make(cap, false, LLFREE_KIND_FIXED));
	}
}

/* Attach: every shared entry must be well-formed (not a full validation) */
static bool shared_well_formed(const llfree_t *self)
{
	for (uint64_t c = 0; c < self->children_len; c++) {
		uint16_t v = llfree_load_relaxed16(child_at(self, c));

		if (!child_valid(v) || child_free(v) > child_capacity(self, c))
			return false;
	}
	for (uint64_t t = 0; t < self->trees_len; t++) {
		uint16_t v = llfree_load_relaxed16(tree_at(self, t));

		if (tree_free(v) > tree_capacity(self, t) ||
		    tree_kind(v) >= LLFREE_KINDS)
			return false;
	}
	return true;
}

llfree_result_t llfree_init(llfree_t *self, size_t cores, uint64_t frames,
			    enum llfree_init mode, llfree_meta_t meta)
{
	llfree_meta_size_t size = llfree_metadata_size(cores, frames);

	if (!self || size.local == 0 || !meta.local || !meta.trees ||
	    !meta.lower || !aligned(meta.local, LLFREE_ALIGN) ||
	    !aligned(meta.trees, LLFREE_ALIGN) ||
	    !aligned(meta.lower, LLFREE_ALIGN) || mode > LLFREE_INIT_ATTACH)
		return result_err(LLFREE_ERR_INIT);

	self->frames = frames;
	self->cores = (uint32_t)cores;
	self->children_len = div_ceil(frames, LLFREE_CHILD_FRAMES);
	self->trees_len = (uint32_t)div_ceil(self->children_len,
					     LLFREE_TREE_CHILDREN);
	self->local = meta.local;
	self->trees = meta.trees;
	self->bitfields = meta.lower;
	self->children = (uint16_t *)((char *)meta.lower +
				      self->children_len *
					      LLFREE_CHILD_BITFIELD_BYTES);
	llfree_lock_init(&self->split_lock);
	memset(self->local, 0, size.local);

	if (mode == LLFREE_INIT_ATTACH)
		return shared_well_formed(self) ? result_ok(0, false) :
						  result_err(LLFREE_ERR_INIT);
	init_shared(self, mode == LLFREE_INIT_FREE);
	return result_ok(0, false);
}

llfree_meta_t llfree_metadata(const llfree_t *self)
{
	return (llfree_meta_t){ .local = self->local,
				.trees = self->trees,
				.lower = self->bitfields };
}

/* Take k whole children from `first`, undoing on failure; ORs reclaimed */
static bool take_children(llfree_t *self, uint64_t first, unsigned k,
			  bool *reclaimed)
{
	for (unsigned i = 0; i < k; i++) {
		uint16_t old;

		if (!child_cas_take_huge(child_at(self, first + i), &old)) {
			while (i-- > 0) {
				bool undone = child_cas_untake_huge(
					child_at(self, first + i));

				llfree_assert(undone);
				(void)undone;
			}
			return false;
		}
		*reclaimed |= child_reclaimed(old);
	}
	return true;
}

/* Whether a child fits an order < 9 request in search pass `pass` */
static bool small_candidate(uint16_t c, unsigned n, unsigned pass)
{
	if (!child_valid(c) || child_huge(c) || child_free(c) < n)
		return false;
	switch (pass) {
	case 0: /* installed and already in use: keeps whole children whole */
		return !child_reclaimed(c) && child_free(c) < LLFREE_CHILD_FRAMES;
	case 1: /* installed */
		return !child_reclaimed(c);
	default: /* reclaimed: needs an install */
		return child_reclaimed(c);
	}
}

/* Allocate 2^order < 512 frames in tree `t`, whose counter already paid */
static llfree_result_t get_small_in_tree(llfree_t *self, uint64_t t,
					 unsigned order, uint64_t hint)
{
	uint64_t first = t * LLFREE_TREE_CHILDREN;
	unsigned count = tree_children(self, t), n = 1u << order;
	unsigned start = (unsigned)(hint / LLFREE_CHILD_FRAMES);
	unsigned word = (unsigned)(hint % LLFREE_CHILD_FRAMES) / 64;

	for (unsigned pass = 0; pass < 3; pass++) {
		for (unsigned i = 0; i < count; i++) {
			uint64_t c = first + (start + i) % count;
			uint16_t old;
			unsigned pos;

			if (!small_candidate(llfree_load_relaxed16(child_at(self, c)),
					     n, pass))
				continue;
			if (!child_cas_dec(child_at(self, c), n, &old))
				continue;
			if (bitfield_alloc(bitfield_at(self, c), order, word, &pos))
				return result_ok(c * LLFREE_CHILD_FRAMES + pos,
						 child_reclaimed(old));
			/* counted free frames, but none aligned: undo */
			if (!child_cas_inc(child_at(self, c), n))
				llfree_assert(false);
		}
	}
	return result_err(LLFREE_ERR_MEMORY);
}

/* Whether k children from `first` are all free (and installed in pass 0) */
static bool huge_candidate(llfree_t *self, uint64_t first, unsigned k,
			   unsigned pass)
{
	for (unsigned i = 0; i < k; i++) {
		uint16_t c = llfree_load_relaxed16(child_at(self, first + i));

		if (!child_is_entirely_free(c) || (pass == 0 && child_reclaimed(c)))
			return false;
	}
	return true;
}

/* Allocate 2^order >= 512 frames in tree `t`, whose counter already paid */
static llfree_result_t get_huge_in_tree(llfree_t *self, uint64_t t,
					unsigned order, uint64_t hint)
{
	unsigned k = 1u << (order - LLFREE_HUGE_ORDER);
	unsigned groups = LLFREE_TREE_CHILDREN / k;
	unsigned start = (unsigned)(hint / LLFREE_CHILD_FRAMES) / k;
	uint64_t base = t * LLFREE_TREE_CHILDREN;

	for (unsigned pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < groups; i++) {
			uint64_t first = base + ((start + i) % groups) * k;
			bool reclaimed = false;

			if (first + k > self->children_len ||
			    !huge_candidate(self, first, k, pass))
				continue;
			if (take_children(self, first, k, &reclaimed))
				return result_ok(first * LLFREE_CHILD_FRAMES,
						 reclaimed);
		}
	}
	return result_err(LLFREE_ERR_MEMORY);
}

/* Allocate in tree `t`; `hint` is a frame offset inside the tree */
static llfree_result_t get_in_tree(llfree_t *self, uint64_t t, unsigned order,
				   uint64_t hint)
{
	if (order < LLFREE_HUGE_ORDER)
		return get_small_in_tree(self, t, order, hint);
	return get_huge_in_tree(self, t, order, hint);
}

/* Give n frames back to tree `t`'s entry (undo of a counter decrement) */
static void tree_give(llfree_t *self, uint64_t t, unsigned n)
{
	if (!tree_cas_inc(tree_at(self, t), n))
		llfree_assert(false);
}

/* Allocate from the core's reservation; *failed = tree that had no fit */
static llfree_result_t get_reserved(llfree_t *self, size_t core, unsigned kind,
				    unsigned order, uint64_t *failed)
{
	uint64_t *hint = &self->local[core].last_child[kind];
	unsigned n = 1u << order;
	llfree_result_t res;
	uint64_t t;

	if (!local_cas_dec(reservation(self, core, kind), n, &t))
		return result_err(LLFREE_ERR_MEMORY);
	res = get_in_tree(self, t, order,
			  llfree_load_relaxed64(hint) % LLFREE_TREE_FRAMES);
	if (res.error == LLFREE_OK) {
		llfree_store_relaxed64(hint, res.frame);
		return res;
	}
	tree_give(self, t, n);
	*failed = t;
	return res;
}

/* Move frames freed into the reserved tree into the reservation */
static bool sync_reservation(llfree_t *self, size_t core, unsigned kind)
{
	uint64_t *r = reservation(self, core, kind);
	uint64_t v = llfree_load_relaxed64(r), t;
	unsigned stolen;

	if (!local_present(v))
		return false;
	t = local_tree(v);
	stolen = tree_cas_steal(tree_at(self, t));
	if (stolen == 0)
		return false;
	if (!local_cas_inc(r, t, stolen))
		tree_give(self, t, stolen); /* the reservation moved meanwhile */
	return true;
}

/* Give back a reservation taken out of a local word */
static void unreserve(llfree_t *self, uint64_t r)
{
	if (local_present(r) &&
	    !tree_cas_unreserve(tree_at(self, local_tree(r)), local_free(r)))
		llfree_assert(false);
}

/*
 * Whether no child of tree `t` is reclaimed. A snapshot only: the host may
 * reclaim a child right after, the allocation itself still checks.
 */
static bool tree_installed(const llfree_t *self, uint64_t t)
{
	uint64_t first = t * LLFREE_TREE_CHILDREN;

	for (unsigned i = 0; i < tree_children(self, t); i++) {
		if (child_reclaimed(llfree_load_relaxed16(child_at(self, first + i))))
			return false;
	}
	return true;
}

/* Whether tree `t` suits a new reservation in search pass `pass` */
static bool reserve_candidate(const llfree_t *self, uint64_t t, unsigned pass,
			      unsigned kind, unsigned n, unsigned cap)
{
	uint16_t v = llfree_load_relaxed16(tree_at(self, t));
	unsigned free = tree_free(v);

	if (tree_reserved(v) || free < n)
		return false;
	switch (pass) {
	case 0: /* partially used by the same kind, nearby */
		return tree_kind(v) == kind && free < cap &&
		       free >= (cap >> RESERVE_MIN_SHIFT);
	case 1: /*
		 * entirely free and backed by the host: memory freed a moment
		 * ago is used again before memory that would need installs,
		 * so the host's reclaim does not turn into install churn
		 */
		return free == cap && tree_installed(self, t);
	case 2: /* entirely free */
		return free == cap;
	default: /* anything with enough room */
		return true;
	}
}

/*
 * Trees searched by passes 0 and 1 (pass 1 reads children, so its cost
 * must not grow with the memory size); later passes search all trees. Huge
 * reservations last only 8 allocations, so pass 0 looks less far for them.
 */
static uint64_t reserve_window(const llfree_t *self, unsigned pass,
			       unsigned kind)
{
	uint64_t near = kind == LLFREE_KIND_HUGE ? RESERVE_NEAR_HUGE_TREES :
						   RESERVE_NEAR_TREES;

	if (pass == 1)
		near = RESERVE_INSTALLED_TREES;
	else if (pass > 1)
		return self->trees_len;
	return self->trees_len > near ? near : self->trees_len;
}

/* Replace the core's reservation for `kind` by another tree (not `exclude`) */
static bool reserve_new(llfree_t *self, size_t core, unsigned kind, unsigned n,
			uint64_t exclude)
{
	uint64_t *r = reservation(self, core, kind);
	uint64_t old = local_cas_take(r);
	uint64_t start = (uint64_t)core * self->trees_len / self->cores;

	if (local_present(old))
		start = local_tree(old);
	unreserve(self, old);

	for (unsigned pass = 0; pass < RESERVE_PASSES; pass++) {
		for (uint64_t i = 0; i < reserve_window(self, pass, kind); i++) {
			uint64_t t = (start + i) % self->trees_len;
			unsigned cap = tree_capacity(self, t), taken;

			if (t == exclude ||
			    !reserve_candidate(self, t, pass, kind, n, cap))
				continue;
			if (!tree_cas_reserve(tree_at(self, t), n, kind,
					      pass == RESERVE_PASSES - 1, cap,
					      &taken))
				continue;
			if (!local_cas_set(r, t, taken)) {
				/* another thread of this core reserved first */
				unreserve(self, local_make(t, taken));
			}
			return true;
		}
	}
	return false;
}

/* Allocate without a reservation, from any unreserved tree */
static llfree_result_t get_unreserved(llfree_t *self, unsigned order)
{
	unsigned n = 1u << order;

	for (uint64_t t = 0; t < self->trees_len; t++) {
		llfree_result_t res;

		if (!tree_cas_dec(tree_at(self, t), n, true))
			continue;
		res = get_in_tree(self, t, order, 0);
		if (res.error == LLFREE_OK)
			return res;
		tree_give(self, t, n);
	}
	return result_err(LLFREE_ERR_MEMORY);
}

static unsigned kind_of(size_t order, bool movable)
{
	if (order >= LLFREE_HUGE_ORDER)
		return LLFREE_KIND_HUGE;
	return movable ? LLFREE_KIND_MOVABLE : LLFREE_KIND_FIXED;
}

llfree_result_t llfree_get(llfree_t *self, size_t core, size_t order,
			   bool movable)
{
	unsigned kind = kind_of(order, movable), n;
	llfree_result_t res;

	if (order > LLFREE_MAX_ORDER || core >= self->cores)
		return result_err(LLFREE_ERR_ADDRESS);
	n = 1u << order;

	for (unsigned attempt = 0; attempt < RESERVE_ATTEMPTS; attempt++) {
		uint64_t failed = NO_TREE;

		res = get_reserved(self, core, kind, (unsigned)order, &failed);
		if (res.error == LLFREE_OK)
			return res;
		if (failed == NO_TREE && sync_reservation(self, core, kind))
			continue;
		if (!reserve_new(self, core, kind, n, failed))
			break;
	}

	res = get_unreserved(self, (unsigned)order);
	if (res.error == LLFREE_OK)
		return res;
	/* free memory may sit in other reservations: release them all */
	for (size_t c = 0; c < self->cores; c++)
		llfree_drain(self, c);
	return get_unreserved(self, (unsigned)order);
}

/* Take n frames of tree t from its entry or from whichever CPU reserved it */
static bool take_tree_frames(llfree_t *self, uint64_t t, unsigned n)
{
	if (tree_cas_dec(tree_at(self, t), n, false))
		return true;
	for (size_t core = 0; core < self->cores; core++) {
		for (unsigned kind = 0; kind < LLFREE_KINDS; kind++) {
			if (local_cas_dec_tree(reservation(self, core, kind), t, n))
				return true;
		}
	}
	return false;
}

llfree_result_t llfree_get_at(llfree_t *self, size_t core, uint64_t frame,
			      size_t order)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES, t = c / LLFREE_TREE_CHILDREN;
	bool reclaimed = false;
	uint16_t old;
	unsigned n;

	if (core >= self->cores || !block_valid(self, frame, order))
		return result_err(LLFREE_ERR_ADDRESS);
	n = 1u << order;
	if (!take_tree_frames(self, t, n))
		return result_err(LLFREE_ERR_MEMORY);

	if (order >= LLFREE_HUGE_ORDER) {
		if (take_children(self, c, 1u << (order - LLFREE_HUGE_ORDER),
				  &reclaimed))
			return result_ok(frame, reclaimed);
	} else if (child_cas_dec(child_at(self, c), n, &old)) {
		if (bitfield_set(bitfield_at(self, c),
				 (unsigned)(frame % LLFREE_CHILD_FRAMES),
				 (unsigned)order))
			return result_ok(frame, child_reclaimed(old));
		if (!child_cas_inc(child_at(self, c), n))
			llfree_assert(false);
	}
	tree_give(self, t, n);
	return result_err(LLFREE_ERR_MEMORY);
}

/* Credit n freed frames of tree t to the core's reservation or the tree */
static void tree_put(llfree_t *self, size_t core, uint64_t t, unsigned n)
{
	for (unsigned kind = 0; kind < LLFREE_KINDS; kind++) {
		if (local_cas_inc(reservation(self, core, kind), t, n))
			return;
	}
	tree_give(self, t, n);
}

/* How a free of whole children gives child c back */
enum whole {
	WHOLE_NONE, /* it cannot: not entirely allocated, or reclaimed */
	WHOLE_HUGE, /* a huge child: one CAS */
	WHOLE_FULL, /* every bit set (split, or never huge): bits, then +512 */
};

/*
 * A huge child is freed whole if installed, or with `uninstalled` (which
 * keeps reclaimed flags); a child whose 512 frames are all allocated in
 * pieces whatever its reclaimed flag, as the pieces' frees would.
 */
static enum whole whole_kind(const llfree_t *self, uint64_t c, bool uninstalled)
{
	/* acquire: the bitfield of a child seen split is complete */
	uint16_t v = llfree_load_acquire16(child_at(self, c));

	if (!child_valid(v))
		return WHOLE_NONE;
	if (child_huge(v) && (uninstalled || !child_reclaimed(v)))
		return WHOLE_HUGE;
	if (child_huge(v))
		return WHOLE_NONE;
	if (child_free(v) == 0 && bitfield_is_full(bitfield_at(self, c)))
		return WHOLE_FULL;
	return WHOLE_NONE;
}

/* Free child c whole as whole_kind() found it; false if it changed since */
static bool put_whole(llfree_t *self, uint64_t c, enum whole kind,
		      bool uninstalled)
{
	uint16_t *p = child_at(self, c);
	uint64_t *bf = bitfield_at(self, c);
	bool undone;

	if (kind == WHOLE_HUGE && uninstalled)
		return child_cas_untake_huge(p);
	if (kind == WHOLE_HUGE)
		return child_cas_put_huge(p);
	if (!bitfield_clear_all(bf))
		return false;
	if (child_cas_inc(p, LLFREE_CHILD_FRAMES))
		return true;
	undone = bitfield_fill(bf);
	llfree_assert(undone);
	(void)undone;
	return false;
}

/* Exact undo of put_whole(): allocate the child again as it was */
static void unput_whole(llfree_t *self, uint64_t c, enum whole kind)
{
	uint16_t *p = child_at(self, c);
	uint16_t old;
	bool undone;

	if (kind == WHOLE_HUGE)
		undone = child_cas_take_huge(p, &old);
	else /* as an allocation: the counter before the bits */
		undone = child_cas_dec(p, LLFREE_CHILD_FRAMES, &old) &&
			 bitfield_fill(bitfield_at(self, c));
	llfree_assert(undone);
	(void)undone;
}

/*
 * Free k whole children from `first`. All must qualify before the first
 * is freed; if one changed meanwhile, those freed are taken back.
 */
static bool put_children(llfree_t *self, uint64_t first, unsigned k,
			 bool uninstalled)
{
	enum whole kind[1u << (LLFREE_MAX_ORDER - LLFREE_HUGE_ORDER)];

	for (unsigned i = 0; i < k; i++) {
		kind[i] = whole_kind(self, first + i, uninstalled);
		if (kind[i] == WHOLE_NONE)
			return false;
	}
	for (unsigned i = 0; i < k; i++) {
		if (!put_whole(self, first + i, kind[i], uninstalled)) {
			while (i-- > 0)
				unput_whole(self, first + i, kind[i]);
			return false;
		}
	}
	return true;
}

/*
 * Split huge child c, seen as `v`, before a part of it is freed:
 * {0, huge, !reclaimed} with no bit set -> every bit set (fill), then
 * {0, !huge, !reclaimed} (child_cas_split(), which publishes the fill).
 *
 * The fill must come before the child leaves the huge state: once it is
 * not huge, a concurrent free may raise its counter and an allocator then
 * searches the bitfield, where a clear bit of the huge block would be
 * handed out twice. Filling first needs mutual exclusion of the splitters
 * of a child: a splitter that saw `huge` long ago could fill a word that
 * a completed split has freed entirely since (ABA), taking 64 frames that
 * are counted free. Splits happen once per huge block, so the handle's
 * guest-private split_lock serialises them all; under it the child is
 * read again. The shared layout is unchanged, and the host, which never
 * splits, sees the child allocated throughout. Partial frees only touch
 * the bitfield after they saw the child not huge (acquire), so they never
 * see a partial fill.
 *
 * Returns LLFREE_OK if the child is not huge now (split here or by a
 * splitter we waited for, or never huge: the free that follows decides),
 * LLFREE_ERR_STATE for a reclaimed huge child (hard-reclaimed, or an
 * allocation not installed: the caller's bug) and for corrupt states (bits
 * set in a huge child, a child that changed during the fill); nothing
 * changes on an error.
 */
static enum llfree_error split_huge(llfree_t *self, uint64_t c, uint16_t v)
{
	uint16_t *p = child_at(self, c);
	uint64_t *bf = bitfield_at(self, c);
	enum llfree_error err = LLFREE_OK;
	bool corrupt = false, lost = false;
	unsigned long flags;

	if (!child_valid(v) || !child_huge(v))
		return LLFREE_OK;
	if (child_reclaimed(v))
		return LLFREE_ERR_STATE;

	flags = llfree_lock_irqsave(&self->split_lock);
	v = llfree_load_acquire16(p);
	if (v == child_make(0, true, false)) {
		if (!bitfield_fill(bf)) {
			corrupt = true; /* bits set in a huge child */
		} else if (!child_cas_split(p)) {
			/* the child changed during the fill: give it back */
			corrupt = true;
			lost = !bitfield_clear_all(bf);
		}
	} else if (!child_valid(v) || child_huge(v)) {
		/* reclaimed (or broken) while we waited */
		err = LLFREE_ERR_STATE;
	}
	llfree_unlock_irqrestore(&self->split_lock, flags);

	if (corrupt) {
		llfree_warn("split: inconsistent huge child %llu%s",
			    (unsigned long long)c,
			    lost ? ", fill not given back" : "");
		err = LLFREE_ERR_STATE;
	}
	return err;
}

/* Free 2^order < 512 frames at bit `pos` of child c */
static enum llfree_error put_small(llfree_t *self, uint64_t c, unsigned pos,
				   unsigned order)
{
	uint16_t *p = child_at(self, c);
	uint64_t *bf = bitfield_at(self, c);
	enum llfree_error err;
	bool undone;

	/* acquire: a child seen split has its full bitfield visible */
	err = split_huge(self, c, llfree_load_acquire16(p));
	if (err != LLFREE_OK)
		return err;
	if (!bitfield_clear(bf, pos, order))
		return LLFREE_ERR_ADDRESS;
	if (child_cas_inc(p, 1u << order))
		return LLFREE_OK;
	/* bits were set in a huge or full child: corrupt */
	undone = bitfield_set(bf, pos, order);
	(void)undone;
	llfree_warn("put: inconsistent child %llu", (unsigned long long)c);
	return LLFREE_ERR_STATE;
}

/* llfree_put() and llfree_put_uninstalled() */
static llfree_result_t put(llfree_t *self, size_t core, uint64_t frame,
			   size_t order, bool uninstalled)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES;
	enum llfree_error err;

	if (core >= self->cores || !block_valid(self, frame, order))
		return result_err(LLFREE_ERR_ADDRESS);

	if (order < LLFREE_HUGE_ORDER)
		err = put_small(self, c,
				(unsigned)(frame % LLFREE_CHILD_FRAMES),
				(unsigned)order);
	else if (put_children(self, c, 1u << (order - LLFREE_HUGE_ORDER),
			      uninstalled))
		err = LLFREE_OK;
	else
		err = LLFREE_ERR_ADDRESS;
	if (err != LLFREE_OK)
		return result_err(err);
	tree_put(self, core, c / LLFREE_TREE_CHILDREN, 1u << order);
	return result_ok(frame, false);
}

llfree_result_t llfree_put(llfree_t *self, size_t core, uint64_t frame,
			   size_t order)
{
	return put(self, core, frame, order, false);
}

llfree_result_t llfree_put_uninstalled(llfree_t *self, size_t core,
				       uint64_t frame, size_t order)
{
	return put(self, core, frame, order, true);
}

void llfree_drain(llfree_t *self, size_t core)
{
	if (core >= self->cores)
		return;
	for (unsigned kind = 0; kind < LLFREE_KINDS; kind++)
		unreserve(self, local_cas_take(reservation(self, core, kind)));
}

int llfree_install_covered(const llfree_t *self, uint64_t frame, size_t order,
			   llfree_install_fn install, void *ctx)
{
	uint64_t first = frame / LLFREE_CHILD_FRAMES;
	unsigned k = order > LLFREE_HUGE_ORDER ?
			     1u << (order - LLFREE_HUGE_ORDER) : 1;
	int calls = 0;

	if (!block_valid(self, frame, order))
		return -1;
	for (unsigned i = 0; i < k; i++) {
		uint64_t c = first + i;

		if (!child_reclaimed(llfree_load_acquire16(child_at(self, c))))
			continue;
		calls++;
		if (!install(ctx, c * LLFREE_CHILD_FRAMES))
			return -1;
	}
	return calls;
}

uint64_t llfree_frames(const llfree_t *self)
{
	return self->frames;
}

size_t llfree_cores(const llfree_t *self)
{
	return self->cores;
}

uint64_t llfree_free_frames(const llfree_t *self)
{
	uint64_t free = 0;

	for (uint64_t t = 0; t < self->trees_len; t++)
		free += tree_free(llfree_load_relaxed16(tree_at(self, t)));
	for (size_t core = 0; core < self->cores; core++) {
		for (unsigned kind = 0; kind < LLFREE_KINDS; kind++)
			free += local_free(llfree_load_relaxed64(
				reservation(self, core, kind)));
	}
	return free;
}

uint64_t llfree_free_huge(const llfree_t *self)
{
	uint64_t n = 0;

	for (uint64_t c = 0; c < self->children_len; c++) {
		uint16_t v = llfree_load_relaxed16(child_at(self, c));

		n += child_is_entirely_free(v) && !child_reclaimed(v);
	}
	return n;
}

uint64_t llfree_reclaimed_huge(const llfree_t *self)
{
	uint64_t n = 0;

	for (uint64_t c = 0; c < self->children_len; c++)
		n += child_reclaimed(llfree_load_relaxed16(child_at(self, c)));
	return n;
}

uint64_t llfree_reserved_trees(const llfree_t *self)
{
	uint64_t n = 0;

	for (size_t core = 0; core < self->cores; core++) {
		for (unsigned kind = 0; kind < LLFREE_KINDS; kind++)
			n += local_present(llfree_load_relaxed64(
				reservation(self, core, kind)));
	}
	return n;
}

bool llfree_is_free(const llfree_t *self, uint64_t frame, size_t order)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES;
	uint16_t v;

	if (!block_valid(self, frame, order))
		return false;
	if (order >= LLFREE_HUGE_ORDER) {
		for (unsigned i = 0; i < 1u << (order - LLFREE_HUGE_ORDER); i++) {
			if (!child_is_entirely_free(
				    llfree_load_relaxed16(child_at(self, c + i))))
				return false;
		}
		return true;
	}
	v = llfree_load_relaxed16(child_at(self, c));
	return child_valid(v) && !child_huge(v) &&
	       bitfield_is_free(bitfield_at(self, c),
				(unsigned)(frame % LLFREE_CHILD_FRAMES),
				(unsigned)order);
}

size_t llfree_free_at(const llfree_t *self, uint64_t frame, size_t order)
{
	uint64_t c = frame / LLFREE_CHILD_FRAMES, t = c / LLFREE_TREE_CHILDREN;
	size_t free;

	if (frame >= self->frames)
		return 0;
	switch (order) {
	case 0:
		return llfree_is_free(self, frame, 0);
	case LLFREE_HUGE_ORDER: {
		uint16_t v = llfree_load_relaxed16(child_at(self, c));

		return child_valid(v) ? child_free(v) : 0;
	}
	case LLFREE_TREE_ORDER:
		free = tree_free(llfree_load_relaxed16(tree_at(self, t)));
		for (size_t core = 0; core < self->cores; core++) {
			for (unsigned kind = 0; kind < LLFREE_KINDS; kind++) {
				uint64_t r = llfree_load_relaxed64(
					reservation(self, core, kind));

				if (local_present(r) && local_tree(r) == t)
					free += local_free(r);
			}
		}
		return free;
	default:
		return 0;
	}
}

bool llfree_is_reclaimed(const llfree_t *self, uint64_t frame)
{
	if (frame >= self->frames)
		return false;
	return child_reclaimed(llfree_load_acquire16(
		child_at(self, frame / LLFREE_CHILD_FRAMES)));
}

const char *llfree_strerror(int error)
{
	switch (error) {
	case LLFREE_OK:
		return "ok";
	case LLFREE_ERR_MEMORY:
		return "out of memory";
	case LLFREE_ERR_ADDRESS:
		return "invalid frame or order";
	case LLFREE_ERR_STATE:
		return "invalid state for this operation";
	case LLFREE_ERR_INIT:
		return "invalid initialization";
	default:
		return "unknown error";
	}
}
