// SPDX-License-Identifier: MIT
/*
 * Seeded multi-thread stress tests (--threads, --scale, --iterations,
 * --seed). Guest threads allocate and free mixed orders 0..10, each frame
 * tagged in an ownership array with an atomic exchange, so a frame handed
 * out twice is caught by the second owner. Optionally a host thread
 * reclaims (soft and hard), returns and installs at the same time, over
 * its own attached handle.
 *
 * Host protocol, as a hypervisor has to follow it: the host keeps its own
 * per-child state (installed / soft / hard) under one host lock. Reclaim
 * (plus the discard that would follow it) and install of the same child
 * are mutually exclusive because both run under that lock; a guest that
 * got a reclaimed result asks the host to install (the callback takes the
 * lock) before it uses the memory. The host only returns hard children
 * and never installs a hard one; a guest request for a hard child is a
 * failure.
 *
 * Split mode: guests also break order-9/10 blocks into pieces the way
 * Linux does (pieces of one order, the halves __free_pages() frees with an
 * extra reference, one child whole and the other in pieces) and free the
 * pieces themselves, keep them, or hand them to other threads through a
 * queue, which free them right away: several CPUs free parts of the same
 * huge block at once. Some blocks are split by freeing one piece and
 * allocated again at the same place, then freed as one order-9 block. A
 * frame in the queue is owned by QUEUE_TAG, so an allocation of it is a
 * double allocation like any other. The race mode lines the splitters up:
 * in every round one thread allocates an order-9/10 block, and after a
 * barrier all threads free their share of its pieces at once.
 *
 * Threads never call check(): failures are counted atomically and the
 * first few are printed, then the main thread reports them.
 */
#include "util.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>

enum { ST_INSTALLED, ST_SOFT, ST_HARD };

/* Owner tag of the frames in the split mode's queue */
#define QUEUE_TAG UINT32_MAX
/* Pieces a thread takes from the queue at once */
#define QUEUE_BATCH 8

struct stress {
	struct tl guest;
	struct tl host;
	uint64_t frames, children;
	unsigned threads, cores, ops;
	bool with_host;
	bool split; /* huge blocks are freed in pieces, by several threads */
	bool race; /* all threads free pieces of one huge block at once */
	_Atomic uint32_t *owner; /* per frame: tag of the owning thread */
	atomic_uint failures;
	atomic_bool guests_done;
	pthread_mutex_t host_lock; /* guards hstate and the host's transitions */
	uint8_t *hstate; /* per child, host view */
	pthread_mutex_t queue_lock; /* guards queue and nqueue */
	struct tl_block *queue; /* split mode: pieces for other threads */
	uint64_t nqueue;
	/* race mode: a spinning barrier, so the threads leave it together */
	atomic_uint round_arrived, round_gen;
	struct tl_block race_block; /* race mode: order 0 if none this round */
	size_t race_q; /* race mode: order of the pieces */
	bool race_halves; /* race mode: __free_pages() halves, not order q */
	/* statistics */
	atomic_ulong gets, memory_errors, reclaimed_gets, installs_by_guest;
	atomic_ulong soft, hard, returns, installs_by_host;
	atomic_ulong splits, pieces, handed, merged;
};

struct guest_thread {
	struct stress *s;
	unsigned id;
	pthread_t thread;
	size_t core;
	uint32_t tag;
	uint64_t rng;
	uint64_t held; /* frames in live */
	struct tl_block *live; /* blocks this thread owns */
	uint64_t nlive;
};

static void sfail(struct stress *s, const char *fmt, ...)
{
	unsigned n = atomic_fetch_add(&s->failures, 1);

	if (n < 10) {
		va_list ap;
		char msg[256];

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		fprintf(stderr, "  stress: %s\n", msg);
	}
}

/* Host side of an install request: idempotent, refuses hard children */
static bool host_install_request(void *ctx, uint64_t child_frame)
{
	struct stress *s = ctx;
	uint64_t c = child_frame / CHILD;
	bool ok = true;

	if (child_frame % CHILD || c >= s->children) {
		sfail(s, "install request for bad frame 0x%" PRIx64, child_frame);
		return false;
	}
	pthread_mutex_lock(&s->host_lock);
	switch (s->hstate[c]) {
	case ST_SOFT: {
		llfree_result_t r = llfree_install(&s->host.ll, child_frame);

		if (r.error != LLFREE_OK) {
			sfail(s, "install of soft child %" PRIu64 ": error %u", c,
			      r.error);
			ok = false;
		}
		s->hstate[c] = ST_INSTALLED;
		atomic_fetch_add(&s->installs_by_guest, 1);
		break;
	}
	case ST_INSTALLED:
		break; /* another request installed it first */
	default:
		sfail(s, "guest asked to install hard child %" PRIu64, c);
		ok = false;
	}
	pthread_mutex_unlock(&s->host_lock);
	return ok;
}

static void own(struct stress *s, uint32_t tag, uint64_t frame, size_t order)
{
	for (uint64_t f = frame; f < frame + (1ull << order); f++) {
		uint32_t old = atomic_exchange_explicit(&s->owner[f], tag,
							memory_order_relaxed);

		if (old != 0) {
			sfail(s, "frame 0x%" PRIx64 " (order %zu block 0x%" PRIx64
				 ") handed to %u while owned by %u",
			      f, order, frame, tag, old);
			return;
		}
	}
}

static void disown(struct stress *s, uint32_t tag, uint64_t frame, size_t order)
{
	for (uint64_t f = frame; f < frame + (1ull << order); f++) {
		uint32_t old = atomic_exchange_explicit(&s->owner[f], 0,
							memory_order_relaxed);

		if (old != tag) {
			sfail(s, "frame 0x%" PRIx64 " freed by %u but owned by %u",
			      f, tag, old);
			return;
		}
	}
}

/* After an allocation: every covered child is installed (or gets so) */
static void check_installed(struct stress *s, llfree_result_t r, size_t order)
{
	uint64_t last = (r.frame + (1ull << order) - 1) / CHILD;

	if (r.reclaimed) {
		int n;

		atomic_fetch_add(&s->reclaimed_gets, 1);
		if (!s->with_host) {
			sfail(s, "reclaimed result without a host");
			return;
		}
		n = llfree_install_covered(&s->guest.ll, r.frame, order,
					   host_install_request, s);
		if (n < 0)
			sfail(s, "install_covered of 0x%" PRIx64 " failed", r.frame);
	}
	/* owned (partly) by us now, so nobody can reclaim it any more */
	for (uint64_t c = r.frame / CHILD; c <= last; c++) {
		if (llfree_is_reclaimed(&s->guest.ll, c * CHILD))
			sfail(s, "child %" PRIu64 " still reclaimed after %s get",
			      c, r.reclaimed ? "an installed" : "an unreclaimed");
	}
}

/* Moves the frames of a block from owner `from` to owner `to` */
static void retag(struct stress *s, uint32_t from, uint32_t to, uint64_t frame,
		  size_t order)
{
	for (uint64_t f = frame; f < frame + (1ull << order); f++) {
		uint32_t old = atomic_exchange_explicit(&s->owner[f], to,
							memory_order_relaxed);

		if (old != from) {
			sfail(s, "frame 0x%" PRIx64 " moved from %u to %u but owned by %u",
			      f, from, to, old);
			return;
		}
	}
}

static void keep(struct guest_thread *g, uint64_t frame, size_t order)
{
	g->live[g->nlive].frame = frame;
	g->live[g->nlive].order = (uint8_t)order;
	g->nlive++;
	g->held += 1ull << order;
}

/* Frees a block this thread owns (not in live) */
static void free_block(struct guest_thread *g, uint64_t frame, size_t order)
{
	struct stress *s = g->s;
	llfree_result_t r;

	disown(s, g->tag, frame, order);
	r = llfree_put(&s->guest.ll, g->core, frame, order);
	if (r.error != LLFREE_OK)
		sfail(s, "put 0x%" PRIx64 " order %zu: error %u (%s)", frame,
		      order, r.error, llfree_strerror(r.error));
}

/* A piece of a split block goes to `dest`: 0 free, 1 queue, 2 keep */
static void piece_out(struct guest_thread *g, uint64_t frame, size_t order,
		      unsigned dest)
{
	struct stress *s = g->s;

	atomic_fetch_add_explicit(&s->pieces, 1, memory_order_relaxed);
	if (dest == 0) {
		free_block(g, frame, order);
	} else if (dest == 1) {
		retag(s, g->tag, QUEUE_TAG, frame, order);
		pthread_mutex_lock(&s->queue_lock);
		s->queue[s->nqueue].frame = frame;
		s->queue[s->nqueue].order = (uint8_t)order;
		s->nqueue++;
		pthread_mutex_unlock(&s->queue_lock);
		atomic_fetch_add_explicit(&s->handed, 1, memory_order_relaxed);
	} else {
		keep(g, frame, order);
	}
}

/* Where the pieces of a block go: all to the queue, or each at random */
static unsigned piece_dest(struct guest_thread *g, bool all_queue)
{
	return all_queue ? 1 : (unsigned)rng_below(&g->rng, 3);
}

/*
 * Free one piece of an order-9 block and allocate it again: the child is
 * then entirely allocated but split, and is kept as one order-9 block
 * (its put frees a split child whole). If another thread took the piece,
 * the rest is kept as the buddy blocks around it.
 */
static void split_and_merge(struct guest_thread *g, uint64_t frame)
{
	struct stress *s = g->s;
	size_t q = rng_below(&g->rng, LLFREE_HUGE_ORDER);
	uint64_t piece = frame + (rng_below(&g->rng, CHILD >> q) << q);
	llfree_result_t r;

	free_block(g, piece, q);
	r = llfree_get_at(&s->guest.ll, g->core, piece, q);
	if (r.error == LLFREE_OK) {
		check_installed(s, r, q);
		own(s, g->tag, piece, q);
		keep(g, frame, LLFREE_HUGE_ORDER);
		atomic_fetch_add_explicit(&s->merged, 1, memory_order_relaxed);
		return;
	}
	for (size_t l = q; l < LLFREE_HUGE_ORDER; l++)
		keep(g, (piece >> l ^ 1) << l, l);
}

/* Split mode: break a fresh order-9/10 block at `frame` into pieces */
static void split_block(struct guest_thread *g, uint64_t frame, size_t order)
{
	struct stress *s = g->s;
	bool all_queue = rng_below(&g->rng, 2);
	size_t q = rng_below(&g->rng, LLFREE_HUGE_ORDER);
	uint64_t whole;

	atomic_fetch_add_explicit(&s->splits, 1, memory_order_relaxed);
	switch (rng_below(&g->rng, 4)) {
	case 0: /* pieces of one order (split_page, THP split) */
		for (uint64_t f = 0; f < 1ull << order; f += 1ull << q)
			piece_out(g, frame + f, q, piece_dest(g, all_queue));
		break;
	case 1: /* __free_pages() with an extra reference on the head */
		for (size_t k = order; k-- > 0;)
			piece_out(g, frame + (1ull << k), k,
				  piece_dest(g, all_queue));
		piece_out(g, frame, 0, piece_dest(g, all_queue));
		break;
	case 2: /* order 10: one child whole, the other in pieces */
		if (order == LLFREE_HUGE_ORDER + 1) {
			whole = frame + rng_below(&g->rng, 2) * CHILD;
			piece_out(g, whole, LLFREE_HUGE_ORDER,
				  piece_dest(g, all_queue));
			frame = whole == frame ? frame + CHILD : frame;
			for (uint64_t f = 0; f < CHILD; f += 1ull << q)
				piece_out(g, frame + f, q,
					  piece_dest(g, all_queue));
			break;
		}
		/* fallthrough */
	default: /* split, allocate the piece again, free whole later */
		if (order == LLFREE_HUGE_ORDER + 1)
			piece_out(g, frame + CHILD, LLFREE_HUGE_ORDER, 2);
		split_and_merge(g, frame);
		break;
	}
}

/*
 * Split mode: take pieces other threads handed over and free most at once.
 * Mostly the newest few, so threads taking pieces at the same time free
 * parts of the same huge block together; else any.
 */
static void take_pieces(struct guest_thread *g)
{
	struct stress *s = g->s;
	struct tl_block got[QUEUE_BATCH];
	unsigned n = 0, want = 1 + (unsigned)rng_below(&g->rng, QUEUE_BATCH);
	bool newest = rng_below(&g->rng, 4) != 0;

	pthread_mutex_lock(&s->queue_lock);
	while (n < want && s->nqueue) {
		uint64_t k = newest ? s->nqueue - 1 :
				      rng_below(&g->rng, s->nqueue);

		got[n++] = s->queue[k];
		s->queue[k] = s->queue[--s->nqueue];
	}
	pthread_mutex_unlock(&s->queue_lock);
	for (unsigned i = 0; i < n; i++) {
		retag(s, QUEUE_TAG, g->tag, got[i].frame, got[i].order);
		if (rng_below(&g->rng, 4))
			free_block(g, got[i].frame, got[i].order);
		else
			keep(g, got[i].frame, got[i].order);
	}
}

/*
 * Race mode: wait for all threads, spinning (a sleeping barrier wakes its
 * waiters microseconds apart, far longer than a split takes)
 */
static void round_barrier(struct stress *s)
{
	unsigned gen = atomic_load(&s->round_gen);

	if (atomic_fetch_add(&s->round_arrived, 1) + 1 == s->threads) {
		atomic_store(&s->round_arrived, 0);
		atomic_fetch_add(&s->round_gen, 1);
		return;
	}
	for (unsigned n = 0; atomic_load(&s->round_gen) == gen; n++) {
		if (n >= 20000)
			sched_yield(); /* more threads than CPUs */
	}
}

/* Race mode: piece i of the round's block (false past the last one) */
static bool race_piece(const struct stress *s, uint64_t i, uint64_t *frame,
		       size_t *order)
{
	struct tl_block b = s->race_block;

	if (s->race_halves) {
		/* halves at orders b.order-1 .. 0, then the head */
		if (i > b.order)
			return false;
		*order = i < b.order ? b.order - 1 - i : 0;
		*frame = b.frame + (i < b.order ? 1ull << *order : 0);
		return true;
	}
	if (i >= 1ull << (b.order - s->race_q))
		return false;
	*order = s->race_q;
	*frame = b.frame + (i << s->race_q);
	return true;
}

/*
 * Race mode: thread 0 allocates a huge block (owned by QUEUE_TAG) and
 * picks how it is cut; after the barrier thread i frees pieces i,
 * i + threads, ... at once with the others, so their first frees race to
 * split the same child.
 */
static void *race_main(void *arg)
{
	struct guest_thread *g = arg;
	struct stress *s = g->s;

	g->core = g->id % s->cores;
	g->rng = test_params.seed * 0x100000001b3ull + g->id;
	for (unsigned round = 0; round < s->ops; round++) {
		uint64_t frame;
		size_t order;

		if (g->id == 0) {
			llfree_result_t r;

			order = LLFREE_HUGE_ORDER + rng_below(&g->rng, 2);
			r = llfree_get(&s->guest.ll, g->core, order, false);
			atomic_fetch_add(&s->gets, 1);
			s->race_block.order = 0;
			if (r.error == LLFREE_OK) {
				check_installed(s, r, order);
				own(s, QUEUE_TAG, r.frame, order);
				s->race_block.frame = r.frame;
				s->race_block.order = (uint8_t)order;
				s->race_q = rng_below(&g->rng, LLFREE_HUGE_ORDER);
				s->race_halves = rng_below(&g->rng, 3) == 0;
				atomic_fetch_add(&s->splits, 1);
			} else {
				atomic_fetch_add(&s->memory_errors, 1);
			}
		}
		round_barrier(s);
		for (uint64_t i = g->id; s->race_block.order &&
					 race_piece(s, i, &frame, &order);
		     i += s->threads) {
			llfree_result_t r;

			disown(s, QUEUE_TAG, frame, order);
			r = llfree_put(&s->guest.ll, g->core, frame, order);
			if (r.error != LLFREE_OK)
				sfail(s, "race: put 0x%" PRIx64 " order %zu: error %u",
				      frame, order, r.error);
			atomic_fetch_add_explicit(&s->pieces, 1,
						  memory_order_relaxed);
		}
		round_barrier(s);
	}
	return NULL;
}

static void *guest_main(void *arg)
{
	struct guest_thread *g = arg;
	struct stress *s = g->s;
	uint64_t budget = s->frames / s->threads * 3 / 4;

	g->core = g->id % s->cores;
	g->tag = g->id + 1;
	g->rng = test_params.seed * 0x100000001b3ull + g->id;
	g->live = malloc(s->frames * sizeof(*g->live));
	g->nlive = 0;
	g->held = 0;

	for (unsigned i = 0; i < s->ops; i++) {
		size_t order = rng_order(&g->rng);
		bool do_free = g->nlive > 0 &&
			       (g->held + (1ull << order) > budget ||
				rng_below(&g->rng, 100) < 45);

		if (s->split && rng_below(&g->rng, 2) == 0)
			take_pieces(g);
		if (do_free) {
			uint64_t k = rng_below(&g->rng, g->nlive);
			struct tl_block b = g->live[k];

			g->live[k] = g->live[--g->nlive];
			g->held -= 1ull << b.order;
			free_block(g, b.frame, b.order);
		} else {
			llfree_result_t r = llfree_get(&s->guest.ll, g->core,
						       order, g->rng & 1);

			atomic_fetch_add(&s->gets, 1);
			if (r.error == LLFREE_ERR_MEMORY) {
				atomic_fetch_add(&s->memory_errors, 1);
				continue;
			}
			if (r.error != LLFREE_OK) {
				sfail(s, "get order %zu: error %u", order, r.error);
				continue;
			}
			if (r.frame % (1ull << order) ||
			    r.frame + (1ull << order) > s->frames) {
				sfail(s, "get order %zu: bad frame 0x%" PRIx64,
				      order, r.frame);
				continue;
			}
			check_installed(s, r, order);
			own(s, g->tag, r.frame, order);
			if (s->split && order >= LLFREE_HUGE_ORDER &&
			    rng_below(&g->rng, 100) < 70)
				split_block(g, r.frame, order);
			else
				keep(g, r.frame, order);
		}
	}
	while (g->nlive) {
		struct tl_block b = g->live[--g->nlive];

		free_block(g, b.frame, b.order);
	}
	free(g->live);
	return NULL;
}

/* First child from a random index with host state `st`, or children */
static uint64_t find_state(struct stress *s, uint64_t *rng, uint8_t st)
{
	uint64_t start = rng_below(rng, s->children);

	for (uint64_t i = 0; i < s->children; i++) {
		uint64_t c = (start + i) % s->children;

		if (s->hstate[c] == st)
			return c;
	}
	return s->children;
}

/* One host operation; called with host_lock held */
static void host_step(struct stress *s, uint64_t *rng, uint64_t *hard_count)
{
	uint64_t op = rng_below(rng, 100), c;
	llfree_result_t r;

	if (op < 40 || (op < 62 && *hard_count >= s->children / 2)) {
		r = llfree_reclaim(&s->host.ll, rng_below(rng, s->frames), false);
		if (r.error != LLFREE_OK)
			return;
		c = r.frame / CHILD;
		if (r.frame % CHILD || c >= s->children) {
			sfail(s, "soft reclaim: bad frame 0x%" PRIx64, r.frame);
			return;
		}
		if (s->hstate[c] != ST_INSTALLED)
			sfail(s, "soft reclaim of child %" PRIu64 " in state %u", c,
			      s->hstate[c]);
		s->hstate[c] = ST_SOFT; /* and the host would discard it now */
		atomic_fetch_add(&s->soft, 1);
	} else if (op < 62) {
		r = llfree_reclaim(&s->host.ll, rng_below(rng, s->frames), true);
		if (r.error != LLFREE_OK)
			return;
		c = r.frame / CHILD;
		if (r.frame % CHILD || c >= s->children) {
			sfail(s, "hard reclaim: bad frame 0x%" PRIx64, r.frame);
			return;
		}
		if (s->hstate[c] == ST_HARD ||
		    r.reclaimed != (s->hstate[c] == ST_SOFT))
			sfail(s, "hard reclaim of child %" PRIu64
				 " in state %u, reported reclaimed=%d",
			      c, s->hstate[c], r.reclaimed);
		s->hstate[c] = ST_HARD;
		(*hard_count)++;
		atomic_fetch_add(&s->hard, 1);
	} else if (op < 88) {
		c = find_state(s, rng, ST_HARD);
		if (c == s->children)
			return;
		r = llfree_return(&s->host.ll, c * CHILD);
		if (r.error != LLFREE_OK)
			sfail(s, "return of hard child %" PRIu64 ": error %u", c,
			      r.error);
		s->hstate[c] = ST_SOFT;
		(*hard_count)--;
		atomic_fetch_add(&s->returns, 1);
	} else {
		c = find_state(s, rng, ST_SOFT);
		if (c == s->children)
			return;
		r = llfree_install(&s->host.ll, c * CHILD);
		if (r.error != LLFREE_OK)
			sfail(s, "install of soft child %" PRIu64 ": error %u", c,
			      r.error);
		s->hstate[c] = ST_INSTALLED;
		atomic_fetch_add(&s->installs_by_host, 1);
	}
}

static void *host_main(void *arg)
{
	struct stress *s = arg;
	uint64_t rng = test_params.seed ^ 0x4057ull, hard_count = 0;

	while (!atomic_load(&s->guests_done)) {
		pthread_mutex_lock(&s->host_lock);
		host_step(s, &rng, &hard_count);
		pthread_mutex_unlock(&s->host_lock);
		if (rng_below(&rng, 4) == 0)
			sched_yield();
	}
	return NULL;
}

/* Host teardown: give everything back, all installed */
static void host_return_all(struct stress *s)
{
	for (uint64_t c = 0; c < s->children; c++) {
		if (s->hstate[c] == ST_HARD) {
			check_ok(llfree_return(&s->host.ll, c * CHILD));
			s->hstate[c] = ST_SOFT;
		}
		if (s->hstate[c] == ST_SOFT) {
			check_ok(llfree_install(&s->host.ll, c * CHILD));
			s->hstate[c] = ST_INSTALLED;
		}
	}
}

/* After the threads ended: free what is left in the split mode's queue */
static void drain_queue(struct stress *s)
{
	while (s->nqueue) {
		struct tl_block b = s->queue[--s->nqueue];

		disown(s, QUEUE_TAG, b.frame, b.order);
		check_ok(llfree_put(&s->guest.ll, 0, b.frame, b.order));
	}
}

static void stress_run(const char *name, unsigned threads, unsigned cores,
		       bool with_host, bool split, bool race)
{
	struct stress *s = calloc(1, sizeof(*s));
	struct guest_thread *g = calloc(threads, sizeof(*g));
	unsigned scale = test_params.scale ? test_params.scale : 1;
	unsigned iterations = test_params.iterations ? test_params.iterations : 1;
	pthread_t host;

	s->threads = threads;
	s->cores = cores;
	s->with_host = with_host;
	s->split = split;
	s->race = race;
	/* 16 trees per scale step and a partial tree: more trees than reservations */
	s->frames = (uint64_t)scale * 16 * TREE + 3 * CHILD + 100;
	s->children = (s->frames + CHILD - 1) / CHILD;
	s->ops = iterations * (TEST_SANITIZED ? 20000 : 300000);
	if (race) /* rounds */
		s->ops = iterations * (TEST_SANITIZED ? 1000 : 10000);
	printf("  %s: seed %" PRIu64 ", %u threads on %u cores, %" PRIu64
	       " frames, %u %s%s%s\n",
	       name, test_params.seed, threads, cores, s->frames, s->ops,
	       race ? "rounds" : "ops per thread",
	       with_host ? ", with host" : "", split ? ", splits" : "");
	if (!tl_init(&s->guest, cores, s->frames, LLFREE_INIT_FREE))
		goto out;
	if (!tl_attach(&s->host, &s->guest, 1))
		goto out_guest;
	s->owner = calloc(s->frames, sizeof(*s->owner));
	s->hstate = calloc(s->children, 1);
	pthread_mutex_init(&s->host_lock, NULL);
	pthread_mutex_init(&s->queue_lock, NULL);
	s->queue = malloc(s->frames * sizeof(*s->queue));

	if (with_host)
		pthread_create(&host, NULL, host_main, s);
	for (unsigned i = 0; i < threads; i++) {
		g[i].s = s;
		g[i].id = i;
		pthread_create(&g[i].thread, NULL, race ? race_main : guest_main,
			       &g[i]);
	}
	for (unsigned i = 0; i < threads; i++)
		pthread_join(g[i].thread, NULL);
	atomic_store(&s->guests_done, true);
	if (with_host)
		pthread_join(host, NULL);
	drain_queue(s);

	check_eq(atomic_load(&s->failures), 0);
	tl_drain_all(&s->guest);
	check_eq(llfree_reserved_trees(&s->guest.ll), 0);
	check(llfree_validate(&s->guest.ll));
	{
		uint64_t hard = 0, reclaimed = 0;

		for (uint64_t c = 0; c < s->children; c++) {
			hard += s->hstate[c] == ST_HARD;
			reclaimed += s->hstate[c] != ST_INSTALLED;
		}
		check_eq(llfree_free_frames(&s->guest.ll),
			 s->frames - hard * CHILD);
		check_eq(llfree_reclaimed_huge(&s->guest.ll), reclaimed);
	}
	host_return_all(s);
	check(llfree_validate(&s->guest.ll));
	check(llfree_validate(&s->host.ll));
	check_eq(llfree_free_frames(&s->guest.ll), s->frames);
	check_eq(llfree_free_frames(&s->host.ll), s->frames);
	check_eq(llfree_reclaimed_huge(&s->guest.ll), 0);
	check_eq(llfree_free_huge(&s->guest.ll), s->frames / CHILD);
	for (uint64_t f = 0; f < s->frames; f++) {
		if (atomic_load(&s->owner[f])) {
			check_eq(f, UINT64_MAX); /* frame still owned */
			break;
		}
	}
	printf("  %s: %lu gets (%lu full, %lu reclaimed), host: %lu soft, "
	       "%lu hard, %lu returns, installs %lu host / %lu guest\n",
	       name, atomic_load(&s->gets), atomic_load(&s->memory_errors),
	       atomic_load(&s->reclaimed_gets), atomic_load(&s->soft),
	       atomic_load(&s->hard), atomic_load(&s->returns),
	       atomic_load(&s->installs_by_host),
	       atomic_load(&s->installs_by_guest));
	if (with_host) {
		/* the host really ran into the guest */
		check(atomic_load(&s->soft) > 0);
		check(atomic_load(&s->hard) > 0);
	}
	if (split) {
		printf("  %s: %lu blocks split into %lu pieces, %lu handed over, "
		       "%lu merged\n",
		       name, atomic_load(&s->splits), atomic_load(&s->pieces),
		       atomic_load(&s->handed), atomic_load(&s->merged));
		check(atomic_load(&s->pieces) > 0);
		if (!race) {
			check(atomic_load(&s->handed) > 0);
			check(atomic_load(&s->merged) > 0);
		}
	}

	pthread_mutex_destroy(&s->queue_lock);
	pthread_mutex_destroy(&s->host_lock);
	free(s->queue);
	free(s->owner);
	free(s->hstate);
	tl_detach(&s->host);
out_guest:
	tl_free(&s->guest);
out:
	free(g);
	free(s);
}

TEST_FLAGS(stress_guest, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_guest", threads, threads, false, false, false);
}

/* More threads than cores: reservations shared by concurrent threads */
TEST_FLAGS(stress_guest_shared_cores, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_guest_shared_cores", threads,
		   threads > 1 ? threads / 2 : 1, false, false, false);
}

TEST_FLAGS(stress_guest_host, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_guest_host", threads, threads, true, false, false);
}

/* Huge blocks freed in pieces by several threads at once */
TEST_FLAGS(stress_split, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_split", threads, threads, false, true, false);
}

/* The same with the host reclaiming, returning and installing */
TEST_FLAGS(stress_split_host, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_split_host", threads, threads, true, true, false);
}

/* Every thread frees pieces of the same huge block at once, with the host */
TEST_FLAGS(stress_split_race, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_split_race", threads, threads, true, true, true);
}
