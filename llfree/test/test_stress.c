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
 * Threads never call check(): failures are counted atomically and the
 * first few are printed, then the main thread reports them.
 */
#include "util.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>

enum { ST_INSTALLED, ST_SOFT, ST_HARD };

struct stress {
	struct tl guest;
	struct tl host;
	uint64_t frames, children;
	unsigned threads, cores, ops;
	bool with_host;
	_Atomic uint32_t *owner; /* per frame: tag of the owning thread */
	atomic_uint failures;
	atomic_bool guests_done;
	pthread_mutex_t host_lock; /* guards hstate and the host's transitions */
	uint8_t *hstate; /* per child, host view */
	/* statistics */
	atomic_ulong gets, memory_errors, reclaimed_gets, installs_by_guest;
	atomic_ulong soft, hard, returns, installs_by_host;
};

struct guest_thread {
	struct stress *s;
	unsigned id;
	pthread_t thread;
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

static void *guest_main(void *arg)
{
	struct guest_thread *g = arg;
	struct stress *s = g->s;
	size_t core = g->id % s->cores;
	uint32_t tag = g->id + 1;
	uint64_t rng = test_params.seed * 0x100000001b3ull + g->id;
	uint64_t budget = s->frames / s->threads * 3 / 4, held = 0;
	struct tl_block *live = malloc(s->frames * sizeof(*live));
	uint64_t nlive = 0;

	for (unsigned i = 0; i < s->ops; i++) {
		size_t order = rng_order(&rng);
		bool do_free = nlive > 0 && (held + (1ull << order) > budget ||
					     rng_below(&rng, 100) < 45);

		if (do_free) {
			uint64_t k = rng_below(&rng, nlive);
			struct tl_block b = live[k];
			llfree_result_t r;

			disown(s, tag, b.frame, b.order);
			r = llfree_put(&s->guest.ll, core, b.frame, b.order);
			if (r.error != LLFREE_OK)
				sfail(s, "put 0x%" PRIx64 " order %u: error %u",
				      b.frame, b.order, r.error);
			held -= 1ull << b.order;
			live[k] = live[--nlive];
		} else {
			llfree_result_t r = llfree_get(&s->guest.ll, core, order,
						       rng & 1);

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
			own(s, tag, r.frame, order);
			live[nlive].frame = r.frame;
			live[nlive].order = (uint8_t)order;
			nlive++;
			held += 1ull << order;
		}
	}
	while (nlive) {
		struct tl_block b = live[--nlive];
		llfree_result_t r;

		disown(s, tag, b.frame, b.order);
		r = llfree_put(&s->guest.ll, core, b.frame, b.order);
		if (r.error != LLFREE_OK)
			sfail(s, "final put 0x%" PRIx64 ": error %u", b.frame,
			      r.error);
	}
	free(live);
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

static void stress_run(const char *name, unsigned threads, unsigned cores,
		       bool with_host)
{
	struct stress *s = calloc(1, sizeof(*s));
	struct guest_thread *g = calloc(threads, sizeof(*g));
	unsigned scale = test_params.scale ? test_params.scale : 1;
	unsigned iterations = test_params.iterations ? test_params.iterations : 1;
	pthread_t host;

	s->threads = threads;
	s->cores = cores;
	s->with_host = with_host;
	/* 16 trees per scale step and a partial tree: more trees than reservations */
	s->frames = (uint64_t)scale * 16 * TREE + 3 * CHILD + 100;
	s->children = (s->frames + CHILD - 1) / CHILD;
	s->ops = iterations * (TEST_SANITIZED ? 20000 : 300000);
	printf("  %s: seed %" PRIu64 ", %u threads on %u cores, %" PRIu64
	       " frames, %u ops per thread%s\n",
	       name, test_params.seed, threads, cores, s->frames, s->ops,
	       with_host ? ", with host" : "");
	if (!tl_init(&s->guest, cores, s->frames, LLFREE_INIT_FREE))
		goto out;
	if (!tl_attach(&s->host, &s->guest, 1))
		goto out_guest;
	s->owner = calloc(s->frames, sizeof(*s->owner));
	s->hstate = calloc(s->children, 1);
	pthread_mutex_init(&s->host_lock, NULL);

	if (with_host)
		pthread_create(&host, NULL, host_main, s);
	for (unsigned i = 0; i < threads; i++) {
		g[i].s = s;
		g[i].id = i;
		pthread_create(&g[i].thread, NULL, guest_main, &g[i]);
	}
	for (unsigned i = 0; i < threads; i++)
		pthread_join(g[i].thread, NULL);
	atomic_store(&s->guests_done, true);
	if (with_host)
		pthread_join(host, NULL);

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
	pthread_mutex_destroy(&s->host_lock);
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

	stress_run("stress_guest", threads, threads, false);
}

/* More threads than cores: reservations shared by concurrent threads */
TEST_FLAGS(stress_guest_shared_cores, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_guest_shared_cores", threads,
		   threads > 1 ? threads / 2 : 1, false);
}

TEST_FLAGS(stress_guest_host, TEST_THREADED)
{
	unsigned threads = test_params.threads ? test_params.threads : 1;

	stress_run("stress_guest_host", threads, threads, true);
}
