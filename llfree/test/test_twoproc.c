// SPDX-License-Identifier: MIT
/*
 * Two processes, one allocator: a guest and a host share a memfd that
 * holds the llfree metadata (trees + lower) and the "guest memory". Each
 * process maps it at its own address and runs its own llfree handle (the
 * host attaches with LLFREE_INIT_ATTACH and has its own local state).
 *
 * Guest: threads allocate and free mixed orders and write a pattern into
 * every frame they own (first and last word of each 4 KiB frame and one
 * word in between, derived from the frame number and the thread), which
 * they verify before freeing. A result with reclaimed == true makes the
 * thread ask the host (over its own socketpair) to install every covered
 * child still marked reclaimed (llfree_install_covered), and wait for the
 * answer before touching the memory; such memory must read as zero.
 *
 * Host: one loop that serves install requests and otherwise soft-reclaims,
 * hard-reclaims, returns and installs. Every newly reclaimed child is
 * discarded at once with FALLOC_FL_PUNCH_HOLE, which zeroes it: a guest
 * frame that was allocated while the host discarded it loses its pattern,
 * so any protocol or allocator error shows up as damaged memory. Because
 * requests are served by the same loop, "reclaim + discard" and "install"
 * of a child never overlap. The host keeps its own per-child state and
 * only returns hard children; a request to install a hard one is a
 * failure.
 *
 * At the end the guest drains and reports done; the host soft-reclaims
 * and discards everything that is free (the memfd's allocated blocks must
 * drop to the metadata alone), returns and installs everything, and
 * checks the counters; the guest checks them from its side too.
 * Pass: both processes exit 0.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ull
#define HUGE_BYTES (CHILD * PAGE)
#define MAX_GUEST_THREADS 8

enum msg_type {
	MSG_HELLO = 1, /* guest -> host: arg = guest mapping address */
	MSG_INSTALL, /* guest -> host: arg = child frame */
	MSG_DONE, /* guest -> host: drained, no more requests */
	MSG_OK, /* host -> guest */
	MSG_FAIL, /* host -> guest */
};

struct msg {
	uint32_t type;
	uint32_t pad;
	uint64_t arg;
};

struct twoproc {
	int fd;
	uint64_t frames, children;
	size_t trees_off, lower_off, mem_off, total;
	llfree_meta_size_t size;
	unsigned threads;
	double seconds;
	int ctrl[2]; /* [0] guest end, [1] host end */
	int req[MAX_GUEST_THREADS][2];
};

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

static bool send_msg(int fd, uint32_t type, uint64_t arg)
{
	struct msg m = { .type = type, .arg = arg };

	return send(fd, &m, sizeof(m), MSG_NOSIGNAL) == (ssize_t)sizeof(m);
}

static bool recv_msg(int fd, struct msg *m)
{
	ssize_t n;

	do
		n = recv(fd, m, sizeof(*m), 0);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*m);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Map the memfd; returns the base or NULL */
static char *map_shared(const struct twoproc *p)
{
	void *base = mmap(NULL, p->total, PROT_READ | PROT_WRITE, MAP_SHARED,
			  p->fd, 0);

	return base == MAP_FAILED ? NULL : base;
}

/* Guest process ---------------------------------------------------------- */

struct guest {
	struct twoproc *p;
	llfree_t ll;
	char *base; /* the mapping */
	char *mem; /* guest memory: frame f at mem + f * PAGE */
	atomic_uint failures;
	atomic_ulong gets, reclaimed_gets, install_requests, zero_checked;
};

struct guest_thread {
	struct guest *g;
	unsigned id;
	int sock;
	pthread_t thread;
	/* children the install callback reported in the current request */
	uint64_t installed[2];
	unsigned ninstalled;
};

static void gfail(struct guest *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void gfail(struct guest *g, const char *fmt, ...)
{
	if (atomic_fetch_add(&g->failures, 1) < 10) {
		char msg[256];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		fprintf(stderr, "  twoproc guest: %s\n", msg);
	}
}

static uint64_t *frame_words(struct guest *g, uint64_t frame)
{
	return (uint64_t *)(g->mem + frame * PAGE);
}

static unsigned mid_word(uint64_t frame)
{
	return 1 + (unsigned)(frame * 7 % 510);
}

static uint64_t pattern(uint64_t frame, unsigned tag, unsigned word)
{
	return (frame * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)tag << 48) ^ word;
}

static void write_pattern(struct guest *g, uint64_t frame, size_t order,
			  unsigned tag)
{
	for (uint64_t f = frame; f < frame + (1ull << order); f++) {
		uint64_t *w = frame_words(g, f);

		w[0] = pattern(f, tag, 0);
		w[mid_word(f)] = pattern(f, tag, mid_word(f));
		w[511] = pattern(f, tag, 511);
	}
}

static bool verify_pattern(struct guest *g, uint64_t frame, size_t order,
			   unsigned tag)
{
	for (uint64_t f = frame; f < frame + (1ull << order); f++) {
		uint64_t *w = frame_words(g, f);
		unsigned m = mid_word(f);

		if (w[0] != pattern(f, tag, 0) || w[m] != pattern(f, tag, m) ||
		    w[511] != pattern(f, tag, 511)) {
			gfail(g, "pattern of frame 0x%" PRIx64 " (block 0x%" PRIx64
				 " order %zu, thread %u) damaged: %#" PRIx64
				 " %#" PRIx64 " %#" PRIx64,
			      f, frame, order, tag, w[0], w[m], w[511]);
			return false;
		}
	}
	return true;
}

/* Discarded memory reads as zero */
static void verify_zero(struct guest *g, uint64_t frame, uint64_t frames)
{
	for (uint64_t f = frame; f < frame + frames; f++) {
		uint64_t *w = frame_words(g, f);

		if (w[0] || w[mid_word(f)] || w[511]) {
			gfail(g, "frame 0x%" PRIx64 " of a reclaimed child is not "
				 "zero: was it discarded before the guest got it?",
			      f);
			return;
		}
	}
	atomic_fetch_add(&g->zero_checked, 1);
}

/* llfree_install_covered() callback: ask the host and wait */
static bool ask_install(void *ctx, uint64_t child_frame)
{
	struct guest_thread *t = ctx;
	struct msg m;

	atomic_fetch_add(&t->g->install_requests, 1);
	if (t->ninstalled < 2)
		t->installed[t->ninstalled++] = child_frame;
	if (!send_msg(t->sock, MSG_INSTALL, child_frame) || !recv_msg(t->sock, &m))
		return false;
	return m.type == MSG_OK && m.arg == child_frame;
}

static void *guest_main(void *arg)
{
	struct guest_thread *t = arg;
	struct guest *g = t->g;
	struct twoproc *p = g->p;
	unsigned tag = t->id + 1;
	size_t core = t->id;
	uint64_t rng = test_params.seed * 31 + t->id;
	uint64_t budget = p->frames / p->threads / 2, held = 0, nlive = 0;
	struct tl_block *live = malloc(p->frames * sizeof(*live));
	double end = now() + p->seconds;

	for (unsigned i = 0; (i & 255) || now() < end; i++) {
		size_t order = rng_order(&rng);
		bool do_free = nlive > 0 && (held + (1ull << order) > budget ||
					     rng_below(&rng, 100) < 45);

		if (do_free) {
			uint64_t k = rng_below(&rng, nlive);
			struct tl_block b = live[k];
			llfree_result_t r;

			verify_pattern(g, b.frame, b.order, tag);
			r = llfree_put(&g->ll, core, b.frame, b.order);
			if (r.error != LLFREE_OK)
				gfail(g, "put 0x%" PRIx64 " order %u: error %u",
				      b.frame, b.order, r.error);
			held -= 1ull << b.order;
			live[k] = live[--nlive];
			continue;
		}

		llfree_result_t r = llfree_get(&g->ll, core, order, rng & 1);
		uint64_t n = 1ull << order;

		atomic_fetch_add(&g->gets, 1);
		if (r.error == LLFREE_ERR_MEMORY)
			continue;
		if (r.error != LLFREE_OK || r.frame % n || r.frame + n > p->frames) {
			gfail(g, "get order %zu: error %u frame 0x%" PRIx64, order,
			      r.error, r.frame);
			continue;
		}
		if (r.reclaimed) {
			int calls;

			atomic_fetch_add(&g->reclaimed_gets, 1);
			t->ninstalled = 0;
			calls = llfree_install_covered(&g->ll, r.frame, order,
						       ask_install, t);
			if (calls < 0)
				gfail(g, "install of 0x%" PRIx64 " order %zu refused",
				      r.frame, order);
			/* our frames of a reclaimed child were discarded */
			if (order <= LLFREE_HUGE_ORDER)
				verify_zero(g, r.frame, n);
			else
				for (unsigned k = 0; k < t->ninstalled; k++)
					verify_zero(g, t->installed[k], CHILD);
		}
		for (uint64_t c = r.frame / CHILD; c <= (r.frame + n - 1) / CHILD;
		     c++) {
			if (llfree_is_reclaimed(&g->ll, c * CHILD))
				gfail(g, "child %" PRIu64 " still reclaimed after a "
					 "get (reclaimed=%d)",
				      c, r.reclaimed);
		}
		write_pattern(g, r.frame, order, tag);
		live[nlive].frame = r.frame;
		live[nlive].order = (uint8_t)order;
		nlive++;
		held += n;
		/* now and then re-check something held for a while */
		if (nlive > 1 && rng_below(&rng, 8) == 0) {
			struct tl_block b = live[rng_below(&rng, nlive)];

			verify_pattern(g, b.frame, b.order, tag);
		}
	}
	while (nlive) {
		struct tl_block b = live[--nlive];
		llfree_result_t r;

		verify_pattern(g, b.frame, b.order, tag);
		r = llfree_put(&g->ll, core, b.frame, b.order);
		if (r.error != LLFREE_OK)
			gfail(g, "final put 0x%" PRIx64 ": error %u", b.frame,
			      r.error);
	}
	llfree_drain(&g->ll, core);
	free(live);
	return NULL;
}

static int guest_process(struct twoproc *p)
{
	struct guest g = { .p = p };
	struct guest_thread t[MAX_GUEST_THREADS];
	llfree_meta_t meta;
	struct msg m;
	int status = 1;

	close(p->ctrl[1]);
	for (unsigned i = 0; i < p->threads; i++)
		close(p->req[i][1]);
	g.base = map_shared(p);
	if (!g.base) {
		perror("twoproc guest: mmap");
		return 1;
	}
	g.mem = g.base + p->mem_off;
	meta.local = tl_alloc(p->size.local);
	meta.trees = g.base + p->trees_off;
	meta.lower = g.base + p->lower_off;
	if (llfree_init(&g.ll, p->threads, p->frames, LLFREE_INIT_ATTACH, meta)
		    .error != LLFREE_OK) {
		fprintf(stderr, "  twoproc guest: attach failed\n");
		return 1;
	}
	if (!send_msg(p->ctrl[0], MSG_HELLO, (uint64_t)(uintptr_t)g.base))
		return 1;

	for (unsigned i = 0; i < p->threads; i++) {
		t[i] = (struct guest_thread){ .g = &g, .id = i, .sock = p->req[i][0] };
		pthread_create(&t[i].thread, NULL, guest_main, &t[i]);
	}
	for (unsigned i = 0; i < p->threads; i++)
		pthread_join(t[i].thread, NULL);

	/* quiescent: tell the host, which cleans up and answers */
	if (!send_msg(p->ctrl[0], MSG_DONE, 0) || !recv_msg(p->ctrl[0], &m)) {
		gfail(&g, "host did not answer DONE");
	} else if (m.type != MSG_OK) {
		gfail(&g, "host reported failure");
	} else {
		if (!llfree_validate(&g.ll))
			gfail(&g, "validate() failed after the run");
		if (llfree_free_frames(&g.ll) != p->frames)
			gfail(&g, "free frames %" PRIu64 " != %" PRIu64,
			      llfree_free_frames(&g.ll), p->frames);
		if (llfree_reclaimed_huge(&g.ll) != 0)
			gfail(&g, "reclaimed children left: %" PRIu64,
			      llfree_reclaimed_huge(&g.ll));
		if (llfree_free_huge(&g.ll) != p->children)
			gfail(&g, "free huge %" PRIu64 " != %" PRIu64,
			      llfree_free_huge(&g.ll), p->children);
	}
	printf("  twoproc guest: %lu gets, %lu reclaimed, %lu install requests, "
	       "%lu zero checks\n",
	       atomic_load(&g.gets), atomic_load(&g.reclaimed_gets),
	       atomic_load(&g.install_requests), atomic_load(&g.zero_checked));
	if (atomic_load(&g.reclaimed_gets) == 0)
		gfail(&g, "the guest never got reclaimed memory: the test did "
			  "not test the install path");
	if (atomic_load(&g.failures) == 0)
		status = 0;
	free(meta.local);
	munmap(g.base, p->total);
	return status;
}

/* Host process ------------------------------------------------------------ */

enum { H_INSTALLED, H_SOFT, H_HARD };

struct host {
	struct twoproc *p;
	llfree_t ll;
	char *base;
	uint8_t *state; /* per child */
	uint64_t hard_count;
	unsigned failures;
	unsigned long soft, hard, returns, installs, requests, punches;
	uint64_t rng;
};

static void hfail(struct host *h, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void hfail(struct host *h, const char *fmt, ...)
{
	if (h->failures++ < 10) {
		char msg[256];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		fprintf(stderr, "  twoproc host: %s\n", msg);
	}
}

/* Discard the backing of child c */
static void punch(struct host *h, uint64_t c)
{
	if (fallocate(h->p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(h->p->mem_off + c * HUGE_BYTES), HUGE_BYTES))
		hfail(h, "punch hole: %s", strerror(errno));
	h->punches++;
}

static uint64_t blocks(struct host *h)
{
	struct stat st;

	if (fstat(h->p->fd, &st)) {
		hfail(h, "fstat: %s", strerror(errno));
		return 0;
	}
	return (uint64_t)st.st_blocks * 512;
}

static bool host_reclaim(struct host *h, bool hard)
{
	llfree_result_t r = llfree_reclaim(&h->ll, rng_below(&h->rng, h->p->frames),
					   hard);
	uint64_t c = r.frame / CHILD;

	if (r.error != LLFREE_OK)
		return false;
	if (r.frame % CHILD || c >= h->p->children) {
		hfail(h, "reclaim returned frame 0x%" PRIx64, r.frame);
		return false;
	}
	if (!hard) {
		if (h->state[c] != H_INSTALLED)
			hfail(h, "soft reclaim of child %" PRIu64 " in state %u", c,
			      h->state[c]);
		h->state[c] = H_SOFT;
		h->soft++;
		punch(h, c);
		return true;
	}
	if (h->state[c] == H_HARD || r.reclaimed != (h->state[c] == H_SOFT))
		hfail(h, "hard reclaim of child %" PRIu64 " in state %u said %d", c,
		      h->state[c], r.reclaimed);
	if (!r.reclaimed)
		punch(h, c);
	h->state[c] = H_HARD;
	h->hard_count++;
	h->hard++;
	return true;
}

static uint64_t host_find(struct host *h, uint8_t st)
{
	uint64_t start = rng_below(&h->rng, h->p->children);

	for (uint64_t i = 0; i < h->p->children; i++) {
		uint64_t c = (start + i) % h->p->children;

		if (h->state[c] == st)
			return c;
	}
	return h->p->children;
}

static void host_return(struct host *h, uint64_t c)
{
	llfree_result_t r = llfree_return(&h->ll, c * CHILD);

	if (r.error != LLFREE_OK)
		hfail(h, "return of hard child %" PRIu64 ": error %u", c, r.error);
	h->state[c] = H_SOFT;
	h->hard_count--;
	h->returns++;
}

static void host_install(struct host *h, uint64_t c)
{
	llfree_result_t r = llfree_install(&h->ll, c * CHILD);

	if (r.error != LLFREE_OK)
		hfail(h, "install of soft child %" PRIu64 ": error %u", c, r.error);
	h->state[c] = H_INSTALLED;
	h->installs++;
}

/* One random host operation; false if it found nothing to do */
static bool host_step(struct host *h)
{
	uint64_t op = rng_below(&h->rng, 100), c;

	if (op < 40)
		return host_reclaim(h, false);
	if (op < 65 && h->hard_count < h->p->children / 4)
		return host_reclaim(h, true);
	if (op < 85) {
		c = host_find(h, H_HARD);
		if (c == h->p->children)
			return false;
		host_return(h, c);
		return true;
	}
	c = host_find(h, H_SOFT);
	if (c == h->p->children)
		return false;
	host_install(h, c);
	return true;
}

static void host_serve(struct host *h, int fd)
{
	struct msg m;
	uint64_t c;
	bool ok = true;

	if (!recv_msg(fd, &m) || m.type != MSG_INSTALL) {
		hfail(h, "bad request");
		return;
	}
	h->requests++;
	c = m.arg / CHILD;
	if (m.arg % CHILD || c >= h->p->children) {
		hfail(h, "install request for frame 0x%" PRIx64, m.arg);
		ok = false;
	} else if (h->state[c] == H_HARD) {
		hfail(h, "install request for hard child %" PRIu64, c);
		ok = false;
	} else if (h->state[c] == H_SOFT) {
		host_install(h, c);
	} /* else: installed by an earlier request or by the host */
	send_msg(fd, ok ? MSG_OK : MSG_FAIL, m.arg);
}

/* The guest is drained: discard all free memory, then give it all back */
static void host_finish(struct host *h)
{
	uint64_t before = blocks(h), after;
	uint64_t meta = h->p->lower_off + round_up(h->p->size.lower, PAGE);

	while (host_reclaim(h, false))
		;
	after = blocks(h);
	printf("  twoproc host: memfd blocks %" PRIu64 " KiB before, %" PRIu64
	       " KiB after the final reclaim (metadata %" PRIu64 " KiB)\n",
	       before / 1024, after / 1024, meta / 1024);
	if (after > meta)
		hfail(h, "guest memory still backed after reclaiming all of it: "
			 "%" PRIu64 " bytes", after - meta);
	/*
	 * Whatever was backed must go; on a slow run (TSan, a loaded machine)
	 * the host's earlier reclaims may have left nothing to drop here.
	 */
	if (before > meta + HUGE_BYTES && before <= after + HUGE_BYTES)
		hfail(h, "blocks did not drop: %" PRIu64 " -> %" PRIu64, before,
		      after);
	for (uint64_t c = 0; c < h->p->children; c++) {
		if (h->state[c] == H_INSTALLED)
			hfail(h, "child %" PRIu64 " was not reclaimed", c);
		if (h->state[c] == H_HARD)
			host_return(h, c);
		if (h->state[c] == H_SOFT)
			host_install(h, c);
	}
	if (!llfree_validate(&h->ll))
		hfail(h, "validate() failed at the end");
	if (llfree_free_frames(&h->ll) != h->p->frames)
		hfail(h, "free frames %" PRIu64 " != %" PRIu64,
		      llfree_free_frames(&h->ll), h->p->frames);
	if (llfree_reclaimed_huge(&h->ll) != 0)
		hfail(h, "reclaimed children left: %" PRIu64,
		      llfree_reclaimed_huge(&h->ll));
}

static int host_process(struct twoproc *p)
{
	struct host h = { .p = p, .rng = test_params.seed ^ 0x705e };
	struct pollfd fds[MAX_GUEST_THREADS + 1];
	llfree_meta_t meta;
	struct msg m;
	void *placeholder;
	bool done = false;

	close(p->ctrl[0]);
	for (unsigned i = 0; i < p->threads; i++)
		close(p->req[i][0]);
	/* a different address than the guest's: occupy the first fit */
	placeholder = mmap(NULL, p->total, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	h.base = map_shared(p);
	if (placeholder != MAP_FAILED)
		munmap(placeholder, p->total);
	if (!h.base) {
		perror("twoproc host: mmap");
		return 1;
	}
	h.state = calloc(p->children, 1);
	meta.local = tl_alloc(llfree_metadata_size(1, p->frames).local);
	meta.trees = h.base + p->trees_off;
	meta.lower = h.base + p->lower_off;
	if (llfree_init(&h.ll, 1, p->frames, LLFREE_INIT_ATTACH, meta).error !=
	    LLFREE_OK) {
		fprintf(stderr, "  twoproc host: attach failed\n");
		return 1;
	}
	if (!recv_msg(p->ctrl[1], &m) || m.type != MSG_HELLO) {
		fprintf(stderr, "  twoproc host: no hello\n");
		return 1;
	}
	if (m.arg == (uint64_t)(uintptr_t)h.base)
		hfail(&h, "guest and host map the memfd at the same address");

	for (unsigned i = 0; i < p->threads; i++)
		fds[i] = (struct pollfd){ .fd = p->req[i][1], .events = POLLIN };
	fds[p->threads] = (struct pollfd){ .fd = p->ctrl[1], .events = POLLIN };
	while (!done) {
		/* leave the CPUs to the guest most of the time */
		struct timespec pause = { 0, host_step(&h) ? 20000 : 200000 };
		int n = ppoll(fds, p->threads + 1, &pause, NULL);

		if (n < 0 && errno != EINTR) {
			hfail(&h, "poll: %s", strerror(errno));
			break;
		}
		for (unsigned i = 0; n > 0 && i < p->threads; i++) {
			if (fds[i].revents & POLLIN)
				host_serve(&h, fds[i].fd);
			else if (fds[i].revents & (POLLHUP | POLLERR)) {
				hfail(&h, "guest thread %u went away", i);
				done = true;
			}
		}
		if (n > 0 && fds[p->threads].revents) {
			if (!recv_msg(p->ctrl[1], &m) || m.type != MSG_DONE) {
				hfail(&h, "guest went away without DONE");
				break;
			}
			done = true;
		}
	}
	if (done && h.failures == 0)
		host_finish(&h);
	printf("  twoproc host: %lu soft, %lu hard, %lu returns, %lu installs, "
	       "%lu requests, %lu discards\n",
	       h.soft, h.hard, h.returns, h.installs, h.requests, h.punches);
	if (h.soft == 0 || h.hard == 0 || h.requests == 0)
		hfail(&h, "the host did not exercise every operation");
	fflush(stdout);
	send_msg(p->ctrl[1], h.failures ? MSG_FAIL : MSG_OK, 0);
	free(meta.local);
	free(h.state);
	munmap(h.base, p->total);
	return h.failures ? 1 : 0;
}

/* The test ---------------------------------------------------------------- */

static pid_t spawn(struct twoproc *p, int (*fn)(struct twoproc *))
{
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		int status;

		alarm(120); /* never hang the test run */
		status = fn(p);
		fflush(stdout);
		fflush(stderr);
		_exit(status);
	}
	return pid;
}

TEST_FLAGS(twoproc_guest_host, TEST_THREADED)
{
	struct twoproc p;
	llfree_meta_t meta;
	llfree_t ll;
	char *base;
	pid_t host, guest;
	int hs = -1, gs = -1;
	uint64_t mem_bytes = TEST_SANITIZED ? (128ull << 20) : (1ull << 30);

	memset(&p, 0, sizeof(p));
	p.threads = test_params.threads ? test_params.threads : 1;
	if (p.threads > MAX_GUEST_THREADS)
		p.threads = MAX_GUEST_THREADS;
	p.seconds = 1.5 * (test_params.iterations ? test_params.iterations : 1);
	p.frames = mem_bytes / PAGE;
	p.children = p.frames / CHILD;
	p.size = llfree_metadata_size(p.threads, p.frames);
	p.trees_off = 0;
	p.lower_off = round_up(p.size.trees, PAGE);
	p.mem_off = round_up(p.lower_off + round_up(p.size.lower, PAGE),
			     HUGE_BYTES);
	p.total = p.mem_off + mem_bytes;
	printf("  twoproc: seed %" PRIu64 ", %u guest threads, %" PRIu64
	       " MiB guest memory, %.1f s\n",
	       test_params.seed, p.threads, mem_bytes >> 20, p.seconds);

	p.fd = memfd_create("llfree-twoproc", MFD_CLOEXEC);
	check_or_return(p.fd >= 0);
	check_or_return(ftruncate(p.fd, (off_t)p.total) == 0);
	base = map_shared(&p);
	check_or_return(base != NULL);
	meta.local = tl_alloc(p.size.local);
	meta.trees = base + p.trees_off;
	meta.lower = base + p.lower_off;
	check_ok(llfree_init(&ll, p.threads, p.frames, LLFREE_INIT_FREE, meta));
	free(meta.local);
	munmap(base, p.total);

	check_or_return(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, p.ctrl) == 0);
	for (unsigned i = 0; i < p.threads; i++)
		check_or_return(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, p.req[i]) == 0);

	host = spawn(&p, host_process);
	guest = spawn(&p, guest_process);
	check(host > 0 && guest > 0);
	close(p.ctrl[0]);
	close(p.ctrl[1]);
	for (unsigned i = 0; i < p.threads; i++) {
		close(p.req[i][0]);
		close(p.req[i][1]);
	}
	if (guest > 0)
		waitpid(guest, &gs, 0);
	if (host > 0)
		waitpid(host, &hs, 0);
	check(WIFEXITED(gs) && WEXITSTATUS(gs) == 0);
	check(WIFEXITED(hs) && WEXITSTATUS(hs) == 0);
	if (!WIFEXITED(gs))
		printf("  twoproc: guest killed by signal %d\n", WTERMSIG(gs));
	if (!WIFEXITED(hs))
		printf("  twoproc: host killed by signal %d\n", WTERMSIG(hs));
	close(p.fd);
}
