// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for every llfree function that reads guest-writable
 * shared state (make -C llfree fuzz).
 *
 * The shared arrays (trees, lower) live in guest memory, so the host must
 * survive any content in them: no access outside the arrays, no crash, no
 * endless loop, validate() answers true or false. The guest's own
 * operations over corrupted state must not leave the arrays either.
 *
 * Input layout (all little-endian, missing bytes read as zero):
 *
 *   header   4 bytes
 *     [0]    bits 0-1: guest cores - 1 (1..4)
 *            bits 2-3: state mode: 0/3 raw bytes, 1 guest init FREE,
 *                      2 guest init ALLOC
 *            bit 4:    frames is a whole number of children
 *     [1..2] frames selector (0..64 children worth; see header_frames())
 *     [3]    reserved
 *   state    raw mode only: trees_size + lower_size bytes copied into the
 *            shared arrays (short input: the rest stays zero)
 *   ops      up to MAX_OPS operations, one opcode byte each followed by
 *            its arguments (see run_op())
 *
 * Two allocator handles share the arrays, each with its own local state:
 * the guest (cores 1..4) and the host (1 core, attached with
 * LLFREE_INIT_ATTACH, which may refuse corrupted state).
 *
 * Oracles. In "clean" runs (guest-initialized state and no poke op so far)
 * the fuzzer also acts as a model checker: it keeps a shadow owner per
 * frame and the host's own per-child state (installed / soft / hard, as
 * QEMU does), calls host operations only where the host protocol allows,
 * and aborts when the library disagrees with the model (double
 * allocation, wrong reclaimed report, counters, validate() == false).
 * A put of frames the model's guest owns must succeed unless it covers a
 * child the host reclaimed (a huge allocation not installed yet refuses
 * partial frees), whatever pieces they were allocated in: parts of huge
 * allocations (a split), whole children allocated in pieces. OP_PUT_PART
 * frees huge and smaller allocations in pieces as Linux does.
 * Once the shared state is corrupted, memory safety, termination and the
 * host's own safety checks remain: a reclaimed child lies inside the
 * memory (the host discards it), return/install succeed only for aligned
 * children inside it, is_reclaimed() is false outside it.
 *
 * Seeds: if the first corpus directory on the command line is empty,
 * LLVMFuzzerInitialize() writes a few seed inputs into it. It also adds
 * -timeout=10 unless a timeout was given, so a hang in the library is
 * reported as a finding instead of stalling the run, and -max_len=6144
 * unless given, so a raw image of the largest state (64 children) fits.
 *
 * repro/ holds minimal inputs of past findings; pass them as arguments
 * to replay them.
 *
 * Environment: LLFREE_FUZZ_TRACE=1 prints every operation and its result
 * (to describe a reproducer); LLFREE_FUZZ_STRICT=1 makes guest-side
 * assertions on corrupted state fatal (see run_op()).
 */
#include "llfree/llfree.h"

#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_CHILDREN 64u
#define MAX_FRAMES (MAX_CHILDREN * LLFREE_CHILD_FRAMES)
#define MAX_OPS 512u
#define RING_LEN 64u
/* Bulk reclaim op: at most this many reclaims */
#define MAX_BULK 80u

/* Input reader: reads past the end return zero */
struct input {
	const uint8_t *data;
	size_t size;
	size_t pos;
};

static uint8_t in_u8(struct input *in)
{
	return in->pos < in->size ? in->data[in->pos++] : 0;
}

static uint64_t in_le(struct input *in, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)in_u8(in) << (8 * i);
	return v;
}

static bool in_done(const struct input *in)
{
	return in->pos >= in->size;
}

/* Host-side view of a child, kept by the host itself (never shared) */
enum host_state { HOST_INSTALLED = 0, HOST_SOFT = 1, HOST_HARD = 2 };

/* Owner of a frame in the model */
enum owner { OWN_FREE = 0, OWN_GUEST = 1, OWN_HOST = 2 };

struct alloc {
	uint64_t frame;
	size_t order;
};

struct fuzz {
	llfree_t guest;
	llfree_t host;
	bool guest_ok;
	bool host_ok;
	/* model checks active: guest-initialized state, never poked */
	bool clean;
	size_t cores;
	uint64_t frames;
	uint64_t children;

	/* exact-size buffers (see alloc_exact()) */
	void *trees_mem, *lower_mem, *glocal_mem, *hlocal_mem;
	uint8_t *trees;
	uint8_t *lower;
	size_t trees_size, lower_size;

	/* model */
	uint8_t owner[MAX_FRAMES];
	uint8_t hstate[MAX_CHILDREN];
	struct alloc ring[RING_LEN];
	unsigned ring_len;
};

static struct fuzz F;

/* Set while a guest operation on corrupted state runs (see run_op()) */
static volatile sig_atomic_t guest_trap;

/* LLFREE_FUZZ_TRACE=1: print every operation (to describe a reproducer) */
static bool trace;
#define tracef(fmt, ...)                                                    \
	do {                                                                \
		if (trace)                                                  \
			fprintf(stderr, "  " fmt "\n", ##__VA_ARGS__);      \
	} while (0)

/* A model violation: print it and crash so libFuzzer saves the input */
#define model_fail(fmt, ...)                                                \
	do {                                                                \
		fprintf(stderr, "fuzz_host: model violation: " fmt "\n",    \
			##__VA_ARGS__);                                     \
		abort();                                                    \
	} while (0)

/*
 * Allocate `size` bytes, 64-byte aligned, such that the last byte of the
 * buffer is the last byte of the allocation: ASan then catches an overrun
 * by a single byte. Returns the buffer; *mem is what to free.
 */
static uint8_t *alloc_exact(size_t size, void **mem)
{
	void *p = NULL;

	if (size == 0)
		size = 1;
	if (posix_memalign(&p, LLFREE_ALIGN, size) != 0)
		abort();
	*mem = p;
	return p;
}

static void release_buffers(void)
{
	free(F.trees_mem);
	free(F.lower_mem);
	free(F.glocal_mem);
	free(F.hlocal_mem);
	F.trees_mem = F.lower_mem = F.glocal_mem = F.hlocal_mem = NULL;
}

static uint64_t header_frames(uint8_t flags, uint16_t sel)
{
	if (flags & 0x10)
		return (uint64_t)(sel % (MAX_CHILDREN + 1)) * LLFREE_CHILD_FRAMES;
	return sel % (MAX_FRAMES + 1);
}

/* Frame argument: near the range, child aligned, raw, or a nasty value */
static uint64_t arg_frame(struct input *in)
{
	static const uint64_t special[] = {
		0,
		UINT64_MAX,
		UINT64_MAX - 511,
		UINT64_MAX - 1023,
		1ull << 63,
		(uint64_t)INT64_MAX,
		1ull << 32,
		(1ull << 32) - 512,
		(uint64_t)-4096,
		(uint64_t)(int64_t)-1 << 9,
	};
	uint8_t sel = in_u8(in);

	switch (sel & 3) {
	case 0:
		return in_le(in, 2) % (F.frames + 1024);
	case 1:
		return (uint64_t)in_u8(in) * LLFREE_CHILD_FRAMES;
	case 2:
		return in_le(in, 8);
	default: {
		uint8_t i = in_u8(in);

		if (i & 0x80) /* relative to the end */
			return F.frames + (uint64_t)(int64_t)(int8_t)(i << 1);
		return special[i % (sizeof(special) / sizeof(special[0]))];
	}
	}
}

static size_t arg_order(struct input *in)
{
	static const size_t special[] = { 11, 12, 13, 63, 64, 255, SIZE_MAX,
					  SIZE_MAX / 2 + 1 };
	uint8_t b = in_u8(in);

	if (b < 0xf0)
		return b % (LLFREE_MAX_ORDER + 1);
	return special[b % (sizeof(special) / sizeof(special[0]))];
}

/* Search start of llfree_reclaim(): a frame, child aligned or raw */
static uint64_t arg_start(struct input *in)
{
	uint8_t sel = in_u8(in);

	if (sel & 1)
		return in_le(in, 8);
	return (uint64_t)(sel >> 1) * LLFREE_CHILD_FRAMES;
}

/* Model helpers ---------------------------------------------------------- */

static bool range_in_model(uint64_t frame, size_t order)
{
	return order <= LLFREE_MAX_ORDER && frame < F.frames &&
	       F.frames - frame >= (1ull << order);
}

/* All frames of [frame, frame + 2^order) have owner `o` */
static bool owned_by(uint64_t frame, size_t order, uint8_t o)
{
	for (uint64_t i = 0; i < (1ull << order); i++) {
		if (F.owner[frame + i] != o)
			return false;
	}
	return true;
}

/* Some frame of [frame, frame + 2^order) has owner `o` */
static bool any_owned_by(uint64_t frame, size_t order, uint8_t o)
{
	for (uint64_t i = 0; i < (1ull << order); i++) {
		if (F.owner[frame + i] == o)
			return true;
	}
	return false;
}

static void set_owner(uint64_t frame, size_t order, uint8_t o)
{
	memset(&F.owner[frame], o, (size_t)1 << order);
}

/* Some child covered by [frame, frame + 2^order) is not installed */
static bool covers_reclaimed(uint64_t frame, size_t order)
{
	uint64_t first = frame / LLFREE_CHILD_FRAMES;
	uint64_t last = (frame + (1ull << order) - 1) / LLFREE_CHILD_FRAMES;

	for (uint64_t c = first; c <= last; c++) {
		if (F.hstate[c] != HOST_INSTALLED)
			return true;
	}
	return false;
}

static void ring_push(uint64_t frame, size_t order)
{
	if (F.ring_len < RING_LEN)
		F.ring[F.ring_len++] = (struct alloc){ frame, order };
	else
		F.ring[frame % RING_LEN] = (struct alloc){ frame, order };
}

static struct alloc ring_pop(uint8_t sel)
{
	unsigned i = sel % F.ring_len;
	struct alloc a = F.ring[i];

	F.ring[i] = F.ring[--F.ring_len];
	return a;
}

/* Install callback: the host populates and installs a child on request */
struct install_ctx {
	unsigned calls;
	unsigned stop_after;
};

static bool host_install_cb(void *ctx_, uint64_t child_frame)
{
	struct install_ctx *ctx = ctx_;
	uint64_t c = child_frame / LLFREE_CHILD_FRAMES;
	sig_atomic_t trap;
	llfree_result_t r;

	ctx->calls++;
	if (F.clean) {
		if (child_frame % LLFREE_CHILD_FRAMES || c >= F.children)
			model_fail("install_covered: bad child frame %#llx",
				   (unsigned long long)child_frame);
		if (F.hstate[c] == HOST_INSTALLED)
			model_fail("install_covered: child %llu not reclaimed",
				   (unsigned long long)c);
		if (F.hstate[c] == HOST_HARD)
			/* the guest holds memory of the balloon */
			model_fail("install_covered: child %llu is hard-reclaimed",
				   (unsigned long long)c);
	}
	if (!F.host_ok)
		return ctx->calls < ctx->stop_after;
	/* a host operation: its aborts are never tolerated */
	trap = guest_trap;
	guest_trap = 0;
	r = llfree_install(&F.host, child_frame);
	guest_trap = trap;
	if (F.clean) {
		if (r.error != LLFREE_OK)
			model_fail("install of soft child %llu failed: %s",
				   (unsigned long long)c,
				   llfree_strerror(r.error));
		F.hstate[c] = HOST_INSTALLED;
	}
	return ctx->calls < ctx->stop_after;
}

/* Guest operations ------------------------------------------------------- */

/* Check and record a successful guest allocation */
static void guest_allocated(const char *what, llfree_result_t r, size_t order,
			    uint8_t install)
{
	if (F.clean) {
		if (!range_in_model(r.frame, order) ||
		    r.frame % (1ull << order))
			model_fail("%s order %zu: bad frame %#llx", what, order,
				   (unsigned long long)r.frame);
		if (!owned_by(r.frame, order, OWN_FREE))
			model_fail("%s order %zu: frame %#llx already allocated",
				   what, order, (unsigned long long)r.frame);
		if (r.reclaimed != covers_reclaimed(r.frame, order))
			model_fail("%s order %zu frame %#llx: reclaimed=%d, model says %d",
				   what, order, (unsigned long long)r.frame,
				   r.reclaimed,
				   covers_reclaimed(r.frame, order));
		set_owner(r.frame, order, OWN_GUEST);
	}
	ring_push(r.frame, order);

	/* the guest installs before use (most of the time) */
	if (r.reclaimed && install != 0xff) {
		struct install_ctx ctx = { 0, F.clean ? UINT32_MAX : install };
		int n = llfree_install_covered(&F.guest, r.frame, order,
					       host_install_cb, &ctx);

		if (F.clean && n != (int)ctx.calls)
			model_fail("install_covered returned %d after %u calls",
				   n, ctx.calls);
		if (F.clean && covers_reclaimed(r.frame, order))
			model_fail("install_covered left frame %#llx order %zu reclaimed",
				   (unsigned long long)r.frame, order);
	}
}

static void op_guest_get(struct input *in)
{
	size_t core = in_u8(in) % F.cores;
	size_t order = arg_order(in);
	bool movable = in_u8(in) & 1;
	uint8_t install = in_u8(in);
	llfree_result_t r = llfree_get(&F.guest, core, order, movable);

	tracef("guest get(core %zu, order %zu, movable %d) -> err %u frame %#llx reclaimed %d",
	       core, order, movable, r.error, (unsigned long long)r.frame,
	       r.reclaimed);

	if (r.error == LLFREE_OK)
		guest_allocated("get", r, order, install);
	else if (F.clean && order <= LLFREE_MAX_ORDER &&
		 r.error != LLFREE_ERR_MEMORY)
		model_fail("get order %zu: unexpected error %s", order,
			   llfree_strerror(r.error));
}

static void op_guest_get_at(struct input *in)
{
	size_t core = in_u8(in) % F.cores;
	uint64_t frame = arg_frame(in);
	size_t order = arg_order(in);
	uint8_t install = in_u8(in);
	llfree_result_t r = llfree_get_at(&F.guest, core, frame, order);

	tracef("guest get_at(core %zu, %#llx, order %zu) -> err %u reclaimed %d",
	       core, (unsigned long long)frame, order, r.error, r.reclaimed);

	if (r.error != LLFREE_OK)
		return;
	if (F.clean && r.frame != frame)
		model_fail("get_at %#llx returned %#llx",
			   (unsigned long long)frame,
			   (unsigned long long)r.frame);
	guest_allocated("get_at", r, order, install);
}

/* A guest put, checked against the model in clean runs */
static void guest_put(size_t core, uint64_t frame, size_t order)
{
	bool owned, must;
	llfree_result_t r;

	/* the model's guest never frees memory of the host's balloon */
	if (F.clean && range_in_model(frame, order) &&
	    any_owned_by(frame, order, OWN_HOST))
		return;

	r = llfree_put(&F.guest, core, frame, order);
	tracef("guest put(core %zu, %#llx, order %zu) -> err %u", core,
	       (unsigned long long)frame, order, r.error);
	if (!F.clean)
		return;
	owned = range_in_model(frame, order) && frame % (1ull << order) == 0 &&
		owned_by(frame, order, OWN_GUEST);
	/* installed frames the guest owns are freed, in whatever pieces */
	must = owned && !covers_reclaimed(frame, order);
	if (must && r.error != LLFREE_OK)
		model_fail("put %#llx order %zu of allocated, installed frames failed: %s",
			   (unsigned long long)frame, order,
			   llfree_strerror(r.error));
	if (r.error != LLFREE_OK)
		return;
	if (!range_in_model(frame, order) || frame % (1ull << order))
		model_fail("put %#llx order %zu succeeded out of range",
			   (unsigned long long)frame, order);
	if (!owned)
		model_fail("put %#llx order %zu: frames were not allocated",
			   (unsigned long long)frame, order);
	set_owner(frame, order, OWN_FREE);
}

static void op_guest_put(struct input *in)
{
	size_t core = in_u8(in) % F.cores;
	uint8_t sel = in_u8(in);
	uint64_t frame;
	size_t order;

	if ((sel & 1) && F.ring_len) {
		struct alloc a = ring_pop(sel >> 1);

		frame = a.frame;
		order = a.order;
	} else {
		frame = arg_frame(in);
		order = arg_order(in);
	}
	guest_put(core, frame, order);
}

/*
 * Free a recent allocation in pieces of order q < its order, as Linux
 * does with huge pages: mode 0 frees the piece at index i and keeps the
 * rest (as the buddy blocks around the piece); mode 1 frees the halves at
 * orders order-1 .. q and then the head (__free_pages() with an extra
 * reference); mode 2 frees every piece of order q, from index i on.
 */
static void op_guest_put_part(struct input *in)
{
	size_t core = in_u8(in) % F.cores;
	uint8_t sel = in_u8(in);
	uint8_t b = in_u8(in);
	uint64_t i = in_le(in, 2), pieces, piece;
	struct alloc a;
	size_t q;

	if (!F.ring_len)
		return;
	a = ring_pop(sel);
	if (a.order == 0 || a.order > LLFREE_MAX_ORDER)
		return;
	q = (b & 0xf) % a.order;
	pieces = 1ull << (a.order - q);
	i %= pieces;
	tracef("guest put_part(%#llx order %zu, pieces of order %zu, mode %u, index %llu)",
	       (unsigned long long)a.frame, a.order, q, (b >> 4) % 3,
	       (unsigned long long)i);
	switch ((b >> 4) % 3) {
	case 0:
		piece = a.frame + (i << q);
		guest_put(core, piece, q);
		for (size_t l = q; l < a.order; l++)
			ring_push((piece >> l ^ 1) << l, l);
		break;
	case 1:
		for (size_t k = a.order; k-- > q;)
			guest_put(core, a.frame + (1ull << k), k);
		guest_put(core, a.frame, q);
		break;
	default:
		for (uint64_t n = 0; n < pieces; n++)
			guest_put(core, a.frame + (((i + n) % pieces) << q), q);
		break;
	}
}

static void op_guest_drain(struct input *in)
{
	llfree_drain(&F.guest, in_u8(in) % F.cores);
}

static void op_guest_queries(struct input *in)
{
	uint64_t frame = arg_frame(in);
	size_t order = arg_order(in);
	volatile uint64_t sink = 0;

	sink += llfree_free_frames(&F.guest);
	sink += llfree_free_huge(&F.guest);
	sink += llfree_reclaimed_huge(&F.guest);
	sink += llfree_reserved_trees(&F.guest);
	sink += llfree_is_free(&F.guest, frame, order);
	sink += llfree_free_at(&F.guest, frame, order);
	sink += llfree_is_reclaimed(&F.guest, frame);
	(void)sink;
}

/* Host operations -------------------------------------------------------- */

/* Checks a reclaim result against the model; returns whether it succeeded */
static bool host_reclaimed(llfree_result_t r, bool hard)
{
	uint64_t c;

	if (r.error != LLFREE_OK)
		return false;
	c = r.frame / LLFREE_CHILD_FRAMES;
	/* whatever the shared state says: the host discards this range */
	if (r.frame % LLFREE_CHILD_FRAMES || !range_in_model(r.frame, 9))
		model_fail("reclaim(hard=%d) returned frame %#llx outside the memory",
			   hard, (unsigned long long)r.frame);
	if (!F.clean)
		return true;
	if (!owned_by(r.frame, LLFREE_HUGE_ORDER, OWN_FREE))
		model_fail("reclaim(hard=%d) took child %llu with allocated frames",
			   hard, (unsigned long long)c);
	if (hard) {
		if (F.hstate[c] == HOST_HARD)
			model_fail("hard reclaim of hard child %llu",
				   (unsigned long long)c);
		if (r.reclaimed != (F.hstate[c] == HOST_SOFT))
			model_fail("hard reclaim child %llu: reclaimed=%d, model state %u",
				   (unsigned long long)c, r.reclaimed,
				   F.hstate[c]);
		F.hstate[c] = HOST_HARD;
		set_owner(r.frame, LLFREE_HUGE_ORDER, OWN_HOST);
	} else {
		if (F.hstate[c] != HOST_INSTALLED)
			model_fail("soft reclaim of reclaimed child %llu (state %u)",
				   (unsigned long long)c, F.hstate[c]);
		F.hstate[c] = HOST_SOFT;
	}
	return true;
}

/* One reclaim search; returns whether it succeeded */
static bool host_reclaim(uint64_t start, bool hard)
{
	llfree_result_t r = llfree_reclaim(&F.host, start, hard);

	tracef("host reclaim(start %#llx, hard %d) -> err %u frame %#llx reclaimed %d",
	       (unsigned long long)start, hard, r.error,
	       (unsigned long long)r.frame, r.reclaimed);
	return host_reclaimed(r, hard);
}

static void op_host_reclaim(struct input *in, bool hard)
{
	host_reclaim(arg_start(in), hard);
}

/* Reclaim of one given child: the search's oracles, and exactly that child */
static void op_host_reclaim_at(struct input *in)
{
	bool hard = in_u8(in) & 1;
	uint64_t frame = arg_frame(in);
	llfree_result_t r = llfree_reclaim_at(&F.host, frame, hard);

	tracef("host reclaim_at(frame %#llx, hard %d) -> err %u frame %#llx reclaimed %d",
	       (unsigned long long)frame, hard, r.error,
	       (unsigned long long)r.frame, r.reclaimed);
	if (r.error == LLFREE_OK && r.frame != frame)
		model_fail("reclaim_at(%#llx) took frame %#llx",
			   (unsigned long long)frame,
			   (unsigned long long)r.frame);
	host_reclaimed(r, hard);
}

/* Reclaim up to n children in a row, like the balloon and auto mode */
static void op_host_bulk(struct input *in)
{
	uint8_t b = in_u8(in);
	unsigned n = b % MAX_BULK + 1;
	uint64_t start = arg_start(in);

	for (unsigned i = 0; i < n; i++) {
		if (!host_reclaim(start + (uint64_t)i * LLFREE_CHILD_FRAMES,
				  b & 0x80))
			break;
	}
}

static void op_host_return(struct input *in)
{
	uint64_t frame = arg_frame(in);
	uint64_t c = frame / LLFREE_CHILD_FRAMES;
	llfree_result_t r;

	/* the host only returns what its own state says is in the balloon */
	if (F.clean && c < F.children && F.hstate[c] != HOST_HARD)
		return;
	r = llfree_return(&F.host, frame);
	tracef("host return(%#llx) -> err %u", (unsigned long long)frame,
	       r.error);
	if (r.error != LLFREE_OK)
		return;
	if (!range_in_model(frame, LLFREE_HUGE_ORDER) ||
	    frame % LLFREE_CHILD_FRAMES)
		model_fail("return of %#llx succeeded (out of range or unaligned)",
			   (unsigned long long)frame);
	if (!F.clean)
		return;
	F.hstate[c] = HOST_SOFT;
	set_owner(c * LLFREE_CHILD_FRAMES, LLFREE_HUGE_ORDER, OWN_FREE);
}

static void op_host_install(struct input *in)
{
	uint64_t frame = arg_frame(in);
	uint64_t c = frame / LLFREE_CHILD_FRAMES;
	llfree_result_t r;

	/* the host never installs a child of its balloon */
	if (F.clean && c < F.children && F.hstate[c] == HOST_HARD)
		return;
	r = llfree_install(&F.host, frame);
	tracef("host install(%#llx) -> err %u", (unsigned long long)frame,
	       r.error);
	if (r.error == LLFREE_OK &&
	    (c >= F.children || frame % LLFREE_CHILD_FRAMES))
		model_fail("install of %#llx succeeded (out of range or unaligned)",
			   (unsigned long long)frame);
	if (!F.clean)
		return;
	if (r.error == LLFREE_OK) {
		if (F.hstate[c] != HOST_SOFT)
			model_fail("install of installed child %llu succeeded",
				   (unsigned long long)c);
		F.hstate[c] = HOST_INSTALLED;
	} else if (c < F.children && F.hstate[c] == HOST_SOFT &&
		   frame % LLFREE_CHILD_FRAMES == 0) {
		model_fail("install of soft child %llu failed: %s",
			   (unsigned long long)c, llfree_strerror(r.error));
	}
}

static void op_host_queries(struct input *in)
{
	uint64_t frame = arg_frame(in);
	size_t order = arg_order(in);
	uint64_t c = frame / LLFREE_CHILD_FRAMES;
	bool rec = llfree_is_reclaimed(&F.host, frame);
	bool is_free = llfree_is_free(&F.host, frame, order);
	size_t free_at = llfree_free_at(&F.host, frame, order);
	volatile uint64_t sink = 0;

	sink += llfree_free_frames(&F.host);
	sink += llfree_free_huge(&F.host);
	sink += llfree_reclaimed_huge(&F.host);
	sink += llfree_reserved_trees(&F.host);
	sink += llfree_frames(&F.host) + llfree_cores(&F.host);
	(void)sink;

	if (c >= F.children && rec)
		model_fail("is_reclaimed(%#llx) out of range is true",
			   (unsigned long long)frame);
	if (!F.clean)
		return;
	if (c < F.children && rec != (F.hstate[c] != HOST_INSTALLED))
		model_fail("is_reclaimed(%#llx) = %d, model state %u",
			   (unsigned long long)frame, rec, F.hstate[c]);
	if (order == 0 && frame < F.frames &&
	    is_free != (F.owner[frame] == OWN_FREE))
		model_fail("is_free(%#llx, 0) = %d, model owner %u",
			   (unsigned long long)frame, is_free, F.owner[frame]);
	if (frame < F.frames && (order == 0 || order == LLFREE_HUGE_ORDER)) {
		uint64_t first = frame & ~((1ull << order) - 1);
		uint64_t end = first + (1ull << order);
		size_t n = 0;

		for (uint64_t f = first; f < end && f < F.frames; f++)
			n += F.owner[f] == OWN_FREE;
		if (free_at != n)
			model_fail("free_at(%#llx, %zu) = %zu, model %zu",
				   (unsigned long long)frame, order, free_at,
				   n);
	}
	if (!range_in_model(frame, order) && order <= 63 && is_free &&
	    (frame >= F.frames || F.frames - frame < (1ull << order)))
		model_fail("is_free(%#llx, %zu) out of range is true",
			   (unsigned long long)frame, order);
}

static void op_validate(struct input *in)
{
	/* validate() only claims consistency while no CPU holds a reservation */
	bool guest = in_u8(in) & 1;

	if (guest && F.guest_ok)
		(void)llfree_validate(&F.guest);
	else if (F.host_ok)
		(void)llfree_validate(&F.host);
}

/* The guest writes anything anywhere into the shared arrays */
static void op_poke(struct input *in)
{
	uint8_t sel = in_u8(in);
	uint8_t *base;
	size_t size, off, len;

	switch (sel & 3) {
	case 0: /* a tree entry */
		base = F.trees;
		size = F.trees_size;
		off = (size_t)in_le(in, 2) * LLFREE_TREE_BYTES;
		len = LLFREE_TREE_BYTES;
		break;
	case 1: /* a child entry (after the bitfields) */
		off = F.children * LLFREE_CHILD_BITFIELD_BYTES;
		base = F.lower + off;
		size = F.lower_size > off ? F.lower_size - off : 0;
		off = (size_t)in_le(in, 2) * LLFREE_CHILD_BYTES;
		len = LLFREE_CHILD_BYTES;
		break;
	case 2: /* a bitfield word */
		base = F.lower;
		size = F.children * LLFREE_CHILD_BITFIELD_BYTES;
		off = (size_t)in_le(in, 2) * 8;
		len = 8;
		break;
	default: /* raw bytes anywhere in lower */
		base = F.lower;
		size = F.lower_size;
		off = (size_t)in_le(in, 3);
		len = (sel >> 2) % 8 + 1;
		break;
	}
	if (size == 0)
		return;
	off %= size;
	if (len > size - off)
		len = size - off;
	for (size_t i = 0; i < len; i++)
		base[off + i] = in_u8(in);
	tracef("poke %s + %zu, %zu bytes", base == F.trees ? "trees" : "lower",
	       (size_t)(base - (base == F.trees ? F.trees : F.lower)) + off,
	       len);
	F.clean = false;
}

static void run_op_body(struct input *in, uint8_t op);

enum op {
	OP_GET,
	OP_GET_AT,
	OP_PUT,
	OP_DRAIN,
	OP_GUEST_QUERIES,
	OP_SOFT,
	OP_HARD,
	OP_BULK,
	OP_RETURN,
	OP_INSTALL,
	OP_HOST_QUERIES,
	OP_VALIDATE,
	OP_POKE,
	/* last: keeps the numbers of the older ops for saved inputs */
	OP_RECLAIM_AT,
	OP_PUT_PART,
	OP_COUNT,
};

/*
 * The guest trusts its own memory: in debug builds (LLFREE_DEBUG, as this
 * target is built) its internal assertions may abort on corrupted shared
 * state, e.g. when an undo finds a counter that the corruption moved.
 * That is a guest self-check, not a memory error, so an abort inside a
 * guest operation on corrupted state ends only the guest's part of the
 * input (counted in guest_asserts). Every other abort -- host operations,
 * clean runs, LLFREE_FUZZ_STRICT=1 in the environment -- is a finding.
 */
static sigjmp_buf guest_jmp;
static struct sigaction chained_abrt;
static unsigned long guest_asserts;
static bool strict;

static void abrt_handler(int sig)
{
	if (guest_trap) {
		guest_trap = 0;
		siglongjmp(guest_jmp, 1);
	}
	/* re-raised on return, to libFuzzer's crash handler */
	sigaction(SIGABRT, &chained_abrt, NULL);
	raise(sig);
}

static void install_abrt_handler(void)
{
	static bool done;
	struct sigaction sa;

	if (done)
		return;
	done = true;
	trace = getenv("LLFREE_FUZZ_TRACE") &&
		strcmp(getenv("LLFREE_FUZZ_TRACE"), "0");
	strict = getenv("LLFREE_FUZZ_STRICT") &&
		 strcmp(getenv("LLFREE_FUZZ_STRICT"), "0");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = abrt_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGABRT, &sa, &chained_abrt);
}

static void run_op(struct input *in)
{
	uint8_t op = in_u8(in) % OP_COUNT;
	bool guest_op = op <= OP_GUEST_QUERIES || op == OP_PUT_PART;

	if (guest_op ? !F.guest_ok : !F.host_ok && op != OP_POKE &&
					     op != OP_VALIDATE)
		return;

	if (!F.clean && !strict && guest_op) {
		if (sigsetjmp(guest_jmp, 1)) {
			/* a guest self-check fired: the guest is done */
			F.guest_ok = false;
			if (guest_asserts++ == 0)
				fprintf(stderr, "fuzz_host: guest assertion on corrupted state tolerated (LLFREE_FUZZ_STRICT=1 makes it fatal)\n");
			return;
		}
		guest_trap = 1;
	}
	run_op_body(in, op);
	guest_trap = 0;
}

static void run_op_body(struct input *in, uint8_t op)
{
	switch ((enum op)op) {
	case OP_GET:
		op_guest_get(in);
		break;
	case OP_GET_AT:
		op_guest_get_at(in);
		break;
	case OP_PUT:
		op_guest_put(in);
		break;
	case OP_DRAIN:
		op_guest_drain(in);
		break;
	case OP_GUEST_QUERIES:
		op_guest_queries(in);
		break;
	case OP_SOFT:
		op_host_reclaim(in, false);
		break;
	case OP_HARD:
		op_host_reclaim(in, true);
		break;
	case OP_BULK:
		op_host_bulk(in);
		break;
	case OP_RETURN:
		op_host_return(in);
		break;
	case OP_INSTALL:
		op_host_install(in);
		break;
	case OP_HOST_QUERIES:
		op_host_queries(in);
		break;
	case OP_RECLAIM_AT:
		op_host_reclaim_at(in);
		break;
	case OP_PUT_PART:
		op_guest_put_part(in);
		break;
	case OP_VALIDATE:
		op_validate(in);
		break;
	case OP_POKE:
		op_poke(in);
		break;
	case OP_COUNT:
		break;
	}
}

/* End of a clean run: drain, then counters and validate() must agree */
static void final_checks(void)
{
	uint64_t free_frames = 0, free_huge = 0, reclaimed = 0;

	if (!F.clean || !F.guest_ok || !F.host_ok)
		return;
	for (size_t core = 0; core < F.cores; core++)
		llfree_drain(&F.guest, core);

	for (uint64_t f = 0; f < F.frames; f++)
		free_frames += F.owner[f] == OWN_FREE;
	for (uint64_t c = 0; c < F.children; c++) {
		uint64_t first = c * LLFREE_CHILD_FRAMES;

		reclaimed += F.hstate[c] != HOST_INSTALLED;
		if (F.hstate[c] == HOST_INSTALLED &&
		    range_in_model(first, LLFREE_HUGE_ORDER) &&
		    owned_by(first, LLFREE_HUGE_ORDER, OWN_FREE))
			free_huge++;
	}
	if (!llfree_validate(&F.guest))
		model_fail("guest validate() false after a clean run");
	if (!llfree_validate(&F.host))
		model_fail("host validate() false after a clean run");
	if (llfree_free_frames(&F.host) != free_frames)
		model_fail("free_frames %llu, model %llu",
			   (unsigned long long)llfree_free_frames(&F.host),
			   (unsigned long long)free_frames);
	if (llfree_reclaimed_huge(&F.host) != reclaimed)
		model_fail("reclaimed_huge %llu, model %llu",
			   (unsigned long long)llfree_reclaimed_huge(&F.host),
			   (unsigned long long)reclaimed);
	if (llfree_free_huge(&F.host) != free_huge)
		model_fail("free_huge %llu, model %llu",
			   (unsigned long long)llfree_free_huge(&F.host),
			   (unsigned long long)free_huge);
}

static bool setup(struct input *in)
{
	uint8_t flags = in_u8(in);
	uint16_t sel = (uint16_t)in_le(in, 2);
	unsigned mode = (flags >> 2) & 3;
	llfree_meta_size_t gs, hs;
	llfree_meta_t gm, hm;
	llfree_result_t r;

	(void)in_u8(in); /* reserved */
	memset(&F, 0, offsetof(struct fuzz, owner));
	F.ring_len = 0;
	F.cores = (flags & 3) + 1;
	F.frames = header_frames(flags, sel);
	F.children = (F.frames + LLFREE_CHILD_FRAMES - 1) / LLFREE_CHILD_FRAMES;

	gs = llfree_metadata_size(F.cores, F.frames);
	hs = llfree_metadata_size(1, F.frames);
	if (gs.trees == 0 || gs.lower == 0 || gs.local == 0)
		return false; /* invalid size, e.g. frames == 0 */
	if (hs.trees != gs.trees || hs.lower != gs.lower)
		model_fail("shared sizes depend on the core count");

	F.trees_size = gs.trees;
	F.lower_size = gs.lower;
	F.trees = alloc_exact(gs.trees, &F.trees_mem);
	F.lower = alloc_exact(gs.lower, &F.lower_mem);
	gm = (llfree_meta_t){ alloc_exact(gs.local, &F.glocal_mem), F.trees,
			      F.lower };
	hm = (llfree_meta_t){ alloc_exact(hs.local, &F.hlocal_mem), F.trees,
			      F.lower };
	memset(gm.local, 0, gs.local);
	memset(hm.local, 0, hs.local);
	memset(F.trees, 0, F.trees_size);
	memset(F.lower, 0, F.lower_size);

	if (mode == 1 || mode == 2) {
		enum llfree_init init = mode == 1 ? LLFREE_INIT_FREE :
						    LLFREE_INIT_ALLOC;

		r = llfree_init(&F.guest, F.cores, F.frames, init, gm);
		if (r.error != LLFREE_OK)
			model_fail("init(%d) of %llu frames failed: %s", init,
				   (unsigned long long)F.frames,
				   llfree_strerror(r.error));
		F.guest_ok = true;
		F.clean = true;
		memset(F.owner, mode == 1 ? OWN_FREE : OWN_GUEST, F.frames);
		memset(F.hstate, HOST_INSTALLED, sizeof(F.hstate));
	} else {
		for (size_t i = 0; i < F.trees_size && !in_done(in); i++)
			F.trees[i] = in_u8(in);
		for (size_t i = 0; i < F.lower_size && !in_done(in); i++)
			F.lower[i] = in_u8(in);
		r = llfree_init(&F.guest, F.cores, F.frames,
				LLFREE_INIT_ATTACH, gm);
		F.guest_ok = r.error == LLFREE_OK;
	}

	r = llfree_init(&F.host, 1, F.frames, LLFREE_INIT_ATTACH, hm);
	F.host_ok = r.error == LLFREE_OK;
	tracef("setup: %llu frames, %zu cores, mode %u, guest %s, host %s",
	       (unsigned long long)F.frames, F.cores, mode,
	       F.guest_ok ? "ok" : "refused", F.host_ok ? "ok" : "refused");
	if (F.clean && !F.host_ok)
		model_fail("host attach to a fresh state failed: %s",
			   llfree_strerror(r.error));
	return F.guest_ok || F.host_ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size, 0 };

	install_abrt_handler();
	if (setup(&in)) {
		for (unsigned i = 0; i < MAX_OPS && !in_done(&in); i++)
			run_op(&in);
		final_checks();
	}
	release_buffers();
	return 0;
}

/* Seeds ------------------------------------------------------------------ */

struct seed {
	uint8_t buf[1 << 16];
	size_t len;
};

static void put8(struct seed *s, uint8_t v)
{
	if (s->len < sizeof(s->buf))
		s->buf[s->len++] = v;
}

static void put_le(struct seed *s, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		put8(s, (uint8_t)(v >> (8 * i)));
}

static void seed_header(struct seed *s, unsigned cores, unsigned mode,
			unsigned children)
{
	s->len = 0;
	put8(s, (uint8_t)((cores - 1) | mode << 2 | 0x10));
	put_le(s, children, 2);
	put8(s, 0);
}

/* Ops with a child-aligned frame argument: selector 1, then child index */
static void seed_child_op(struct seed *s, enum op op, uint8_t child)
{
	put8(s, op);
	put8(s, 1);
	put8(s, child);
}

static void write_seed(const char *dir, const char *name,
		       const struct seed *s)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return;
	fwrite(s->buf, 1, s->len, f);
	fclose(f);
}

static void write_seeds(const char *dir)
{
	static struct seed s;
	llfree_meta_size_t ms;
	llfree_meta_t m;
	llfree_t a;
	void *mem[3];

	/* guest allocates all orders, host reclaims, returns, installs */
	seed_header(&s, 2, 1, 16);
	for (unsigned order = 0; order <= LLFREE_MAX_ORDER; order++) {
		put8(&s, OP_GET), put8(&s, order & 1), put8(&s, (uint8_t)order);
		put8(&s, 0), put8(&s, 0);
	}
	put8(&s, OP_BULK), put8(&s, 0x80 | 4), put8(&s, 0);
	put8(&s, OP_BULK), put8(&s, 4), put8(&s, 0);
	seed_child_op(&s, OP_RETURN, 12);
	seed_child_op(&s, OP_INSTALL, 12);
	put8(&s, OP_PUT), put8(&s, 0), put8(&s, 1); /* a recent allocation */
	put8(&s, OP_PUT), put8(&s, 1), put8(&s, 3);
	put8(&s, OP_DRAIN), put8(&s, 0);
	put8(&s, OP_HOST_QUERIES), put8(&s, 1), put8(&s, 12), put8(&s, 9);
	put8(&s, OP_VALIDATE), put8(&s, 0);
	write_seed(dir, "seed-free-ops", &s);

	/* soft reclaim everything, then the guest allocates reclaimed memory */
	seed_header(&s, 1, 1, 4);
	put8(&s, OP_BULK), put8(&s, 8), put8(&s, 0);
	put8(&s, OP_GET), put8(&s, 0), put8(&s, 0), put8(&s, 0), put8(&s, 0);
	put8(&s, OP_GET), put8(&s, 0), put8(&s, 10), put8(&s, 0), put8(&s, 0);
	put8(&s, OP_HARD), put8(&s, 0);
	write_seed(dir, "seed-soft-then-get", &s);

	/* all allocated, freed order 0, with a partial last child */
	s.len = 0;
	put8(&s, (uint8_t)(3 | 2 << 2)), put_le(&s, 3 * 512 + 100, 2), put8(&s, 0);
	for (unsigned i = 0; i < 64; i++) {
		put8(&s, OP_PUT), put8(&s, 0), put8(&s, 0); /* core, any frame */
		put8(&s, 0), put_le(&s, 512 + i, 2), put8(&s, 0);
	}
	put8(&s, OP_BULK), put8(&s, 0x80 | 8), put8(&s, 0);
	write_seed(dir, "seed-alloc-put", &s);

	/* guest-initialized state, then corrupted child and tree entries */
	seed_header(&s, 1, 1, 8);
	put8(&s, OP_POKE), put8(&s, 1), put_le(&s, 3, 2), put_le(&s, 0xffff, 2);
	put8(&s, OP_POKE), put8(&s, 0), put_le(&s, 0, 2), put_le(&s, 0x1fff, 2);
	put8(&s, OP_BULK), put8(&s, 0x80 | 8), put8(&s, 0);
	put8(&s, OP_VALIDATE), put8(&s, 0);
	write_seed(dir, "seed-poke", &s);

	/*
	 * A corrupt entry claims the partial last child (249 frames) is
	 * fully free: the host must not reclaim (and discard) it. Found by
	 * this fuzzer; see repro/partial-child-reclaim.
	 */
	s.len = 0;
	put8(&s, 1 << 2), put_le(&s, 249, 2), put8(&s, 0);
	put8(&s, OP_POKE), put8(&s, 1), put_le(&s, 0, 2), put_le(&s, 0x200, 2);
	put8(&s, OP_SOFT), put8(&s, 0);
	put8(&s, OP_POKE), put8(&s, 1), put_le(&s, 0, 2), put_le(&s, 0x200, 2);
	put8(&s, OP_POKE), put8(&s, 0), put_le(&s, 0, 2), put_le(&s, 0x200, 2);
	put8(&s, OP_HARD), put8(&s, 0);
	write_seed(dir, "seed-partial-child-poke", &s);

	/*
	 * Huge allocations freed in pieces (splits), a split child allocated
	 * again and freed whole, and a soft child allocated huge and not
	 * installed, whose partial free is refused.
	 */
	seed_header(&s, 2, 1, 16);
	put8(&s, OP_GET_AT), put8(&s, 0), put8(&s, 1), put8(&s, 2);
	put8(&s, 9), put8(&s, 0);
	put8(&s, OP_GET_AT), put8(&s, 1), put8(&s, 1), put8(&s, 4);
	put8(&s, 10), put8(&s, 0);
	/* child 2: the order-3 piece 5, the rest stays */
	put8(&s, OP_PUT_PART), put8(&s, 0), put8(&s, 0), put8(&s, 0x03);
	put_le(&s, 5, 2);
	/* children 4+5: __free_pages() with an extra reference */
	put8(&s, OP_PUT_PART), put8(&s, 1), put8(&s, 0), put8(&s, 0x10);
	put_le(&s, 0, 2);
	/* child 2: the piece again, then the whole child */
	put8(&s, OP_GET_AT), put8(&s, 0), put8(&s, 0);
	put_le(&s, 2 * 512 + 40, 2), put8(&s, 3), put8(&s, 0);
	put8(&s, OP_PUT), put8(&s, 0), put8(&s, 0), put8(&s, 1), put8(&s, 2);
	put8(&s, 9);
	/* child 0: soft, allocated huge, not installed: a piece is refused */
	put8(&s, OP_SOFT), put8(&s, 0);
	put8(&s, OP_GET_AT), put8(&s, 0), put8(&s, 1), put8(&s, 0);
	put8(&s, 9), put8(&s, 0xff);
	put8(&s, OP_PUT), put8(&s, 0), put8(&s, 0), put8(&s, 1), put8(&s, 0);
	put8(&s, 0);
	put8(&s, OP_BULK), put8(&s, 0x80 | 8), put8(&s, 0);
	put8(&s, OP_VALIDATE), put8(&s, 0);
	write_seed(dir, "seed-split", &s);

	/* a huge child with a corrupt bit in its bitfield, freed in pieces */
	seed_header(&s, 1, 1, 8);
	put8(&s, OP_GET_AT), put8(&s, 0), put8(&s, 1), put8(&s, 2);
	put8(&s, 9), put8(&s, 0);
	put8(&s, OP_POKE), put8(&s, 2), put_le(&s, 2 * 8 + 3, 2);
	put_le(&s, 0x10, 8);
	put8(&s, OP_PUT_PART), put8(&s, 0), put8(&s, 0), put8(&s, 0x20);
	put_le(&s, 0, 2);
	put8(&s, OP_PUT), put8(&s, 0), put8(&s, 0), put8(&s, 1), put8(&s, 2);
	put8(&s, 9);
	put8(&s, OP_VALIDATE), put8(&s, 0);
	write_seed(dir, "seed-split-corrupt", &s);

	/* raw mode: the image of a freshly initialized state */
	for (unsigned v = 0; v < 2; v++) {
		unsigned children = v ? 9 : 2;
		uint64_t frames = children * LLFREE_CHILD_FRAMES - (v ? 7 : 0);

		ms = llfree_metadata_size(1, frames);
		if (!ms.trees || !ms.lower || !ms.local)
			return;
		m.local = alloc_exact(ms.local, &mem[0]);
		m.trees = alloc_exact(ms.trees, &mem[1]);
		m.lower = alloc_exact(ms.lower, &mem[2]);
		if (llfree_init(&a, 1, frames, LLFREE_INIT_FREE, m).error ==
		    LLFREE_OK) {
			s.len = 0;
			put8(&s, 0), put_le(&s, frames, 2), put8(&s, 0);
			for (size_t i = 0; i < ms.trees; i++)
				put8(&s, ((uint8_t *)m.trees)[i]);
			for (size_t i = 0; i < ms.lower; i++)
				put8(&s, ((uint8_t *)m.lower)[i]);
			put8(&s, OP_GET), put8(&s, 0), put8(&s, 0);
			put8(&s, 0), put8(&s, 0);
			put8(&s, OP_BULK), put8(&s, 0x80 | 8), put8(&s, 0);
			put8(&s, OP_VALIDATE), put8(&s, 0);
			write_seed(dir, v ? "seed-raw-partial" : "seed-raw-fresh",
				   &s);
		}
		for (unsigned i = 0; i < 3; i++)
			free(mem[i]);
	}
}

static bool dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	bool empty = true;

	if (!d)
		return false;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			empty = false;
			break;
		}
	}
	closedir(d);
	return empty;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char timeout[] = "-timeout=10";
	/* a full raw image of 64 children plus operations */
	static char max_len[] = "-max_len=6144";
	static char **args;
	bool has_timeout = false, has_max_len = false;
	bool seeded = false;
	struct stat st;

	for (int i = 1; i < *argc; i++) {
		const char *a = (*argv)[i];

		if (!strncmp(a, "-timeout=", 9))
			has_timeout = true;
		if (!strncmp(a, "-max_len=", 9))
			has_max_len = true;
		if (a[0] == '-' || seeded)
			continue;
		/* the first directory is the corpus libFuzzer writes to */
		if (stat(a, &st) == 0 && S_ISDIR(st.st_mode)) {
			seeded = true;
			if (dir_is_empty(a))
				write_seeds(a);
		}
	}
	if (has_timeout && has_max_len)
		return 0;
	args = calloc((size_t)*argc + 3, sizeof(*args));
	if (!args)
		return 0;
	memcpy(args, *argv, (size_t)*argc * sizeof(*args));
	if (!has_timeout)
		args[(*argc)++] = timeout;
	if (!has_max_len)
		args[(*argc)++] = max_len;
	args[*argc] = NULL;
	*argv = args;
	return 0;
}
