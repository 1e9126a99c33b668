/*
 * virtio-llfree-balloon: VM memory de/inflation through the guest's shared
 * page-frame allocator (llfree)
 *
 * Copyright (C) 2025 The HyperAlloc authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * The guest allocates page frames with llfree and registers the shared
 * arrays of every llfree instance (zone) on the zone queue. The device
 * attaches its own llfree handle to those arrays and takes free 2 MiB
 * children away (hard reclaim: the balloon; soft reclaim: auto mode), gives
 * them back (return), and backs them again when the guest allocates one and
 * asks on its install queue. docs/protocol.md is the contract; "rule On"
 * below refers to its ordering rules.
 *
 * All guest memory is guest-writable: the device keeps its own state per
 * child and never bases a discard, populate, DMA notification or counter
 * update on the shared words (rule O9).
 */

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/log.h"
#include "qemu/madvise.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/units.h"
#include "block/aio.h"
#include "block/aio-wait.h"
#include "exec/address-spaces.h"
#include "exec/memory.h"
#include "exec/ram_addr.h"
#include "hw/boards.h"
#include "hw/core/cpu.h"
#include "hw/qdev-properties.h"
#include "hw/virtio/virtio.h"
#include "hw/virtio/virtio-bus.h"
#include "hw/virtio/virtio-llfree-balloon.h"
#include "migration/blocker.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-machine.h"
#include "qapi/qapi-events-machine.h"
#include "qapi/qapi-visit-virtio.h"
#include "qapi/visitor.h"
#include "sysemu/iothread.h"
#include "sysemu/numa.h"
#include "sysemu/sysemu.h"
#include "sysemu/tcg.h"
#include "trace.h"

/* The layouts both sides depend on (protocol section 7) */
QEMU_BUILD_BUG_ON(sizeof(struct virtio_llfree_balloon_config) !=
                  VIRTIO_LLFREE_BALLOON_CONFIG_SIZE);
QEMU_BUILD_BUG_ON(sizeof(struct virtio_llfree_balloon_resp) !=
                  VIRTIO_LLFREE_BALLOON_RESP_SIZE);
QEMU_BUILD_BUG_ON(sizeof(struct virtio_llfree_balloon_zone) !=
                  VIRTIO_LLFREE_BALLOON_ZONE_SIZE);
QEMU_BUILD_BUG_ON(sizeof(struct virtio_llfree_balloon_event) !=
                  VIRTIO_LLFREE_BALLOON_EVENT_SIZE);
QEMU_BUILD_BUG_ON(sizeof(struct virtio_llfree_balloon_install) !=
                  VIRTIO_LLFREE_BALLOON_INSTALL_SIZE);
QEMU_BUILD_BUG_ON(VIRTIO_LLFREE_BALLOON_CHILD_ORDER != LLFREE_HUGE_ORDER);
QEMU_BUILD_BUG_ON(VIRTIO_LLFREE_BALLOON_CHILD_FRAMES != LLFREE_CHILD_FRAMES);
QEMU_BUILD_BUG_ON(VIRTIO_LLFREE_BALLOON_META_ALIGN != LLFREE_ALIGN);
QEMU_BUILD_BUG_ON(VIRTIO_LLFREE_BALLOON_COUNTER_BYTES != sizeof(int64_t));

#define CHILD_SIZE VIRTIO_LLFREE_BALLOON_CHILD_SIZE
#define CHILD_FRAMES VIRTIO_LLFREE_BALLOON_CHILD_FRAMES
#define FRAME_SIZE 4096ULL

#define STATE_MASK VIRTIO_LLFREE_BALLOON_CHILD_STATE_MASK
#define PINNED VIRTIO_LLFREE_BALLOON_CHILD_PINNED
#define INSTALLED VIRTIO_LLFREE_BALLOON_CHILD_INSTALLED
#define SOFT VIRTIO_LLFREE_BALLOON_CHILD_SOFT
#define HARD VIRTIO_LLFREE_BALLOON_CHILD_HARD
#define FREE_SEEN VIRTIO_LLFREE_BALLOON_CHILD_FREE_SEEN

/*
 * Children reclaimed per hold of a zone lock: installs of the zone wait at
 * most one batch (rule O8); 64 MiB take well below a millisecond to discard.
 */
#define VLB_BATCH 32
/* Children a return batch looks at (one byte of state each) */
#define VLB_RETURN_SCAN (16 * VLB_BATCH)
/*
 * A step of a resize or auto-mode pass, after which the main loop (or the
 * IOThread) runs other work: children searched or looked at (default of
 * the x-step-children property), and time
 */
#define VLB_STEP_CHILDREN 256
#define VLB_STEP_NS (1 * SCALE_MS)
/* Page-cache shrink requests per target before the device gives up */
#define VLB_SHRINK_MAX_ROUNDS 3
/* Queue sizes; install queues carry one chain at a time */
#define VLB_ZONE_QUEUE_SIZE 64
#define VLB_EVENT_QUEUE_SIZE 16
#define VLB_INSTALL_QUEUE_SIZE 8
/* Zone types per NUMA node (VIRTIO_LLFREE_BALLOON_ZONE_*) */
#define VLB_ZONE_TYPES 4

/* Reports guest corruption of a shared word, at most once per second */
static void vlb_guest_error(const VirtIOLLFreeBalloonZone *z, uint64_t frame,
                            const char *what)
{
    static int64_t last_ms;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int64_t last = qatomic_read(&last_ms);

    trace_virtio_llfree_balloon_guest_error(z->id, frame, what);
    qemu_log_mask(LOG_GUEST_ERROR, "virtio-llfree-balloon: zone %u frame 0x%"
                  PRIx64 ": %s\n", z->id, frame, what);
    if (now - last >= 1000 &&
        qatomic_cmpxchg(&last_ms, last, now) == last) {
        warn_report("virtio-llfree-balloon: zone %u frame 0x%" PRIx64
                    ": %s (the guest corrupted its allocator state)", z->id,
                    frame, what);
    }
}

static uint8_t child_state(const VirtIOLLFreeBalloonZone *z, uint64_t c)
{
    return z->state[c] & STATE_MASK;
}

/* Also forgets FREE_SEEN: a child that changes state starts its age anew */
static void set_child_state(VirtIOLLFreeBalloonZone *z, uint64_t c,
                            uint8_t state)
{
    z->state[c] = (z->state[c] & PINNED) | state;
}

/* The registered zone with this id, or NULL; any thread */
static VirtIOLLFreeBalloonZone *vlb_zone(VirtIOLLFreeBalloon *s, uint32_t id)
{
    if (id >= s->max_zones) {
        return NULL;
    }
    return qatomic_load_acquire(&s->zones[id]);
}

static bool vlb_has_zones(VirtIOLLFreeBalloon *s)
{
    for (uint32_t i = 0; i < s->max_zones; i++) {
        if (qatomic_read(&s->zones[i])) {
            return true;
        }
    }
    return false;
}

static void *vlb_host(VirtIOLLFreeBalloon *s, uint64_t offset)
{
    return (uint8_t *)memory_region_get_ram_ptr(s->ram) + offset;
}

/* RamDiscardManager bookkeeping (rdm_lock) ------------------------------ */

/* Narrows @s to its intersection with [offset, offset + size) of the RAM */
static bool vlb_intersect_section(MemoryRegionSection *s, uint64_t offset,
                                  uint64_t size)
{
    uint64_t start = MAX(s->offset_within_region, offset);
    uint64_t end = MIN(s->offset_within_region + int128_get64(s->size),
                       offset + size);

    if (end <= start) {
        return false;
    }
    s->offset_within_address_space += start - s->offset_within_region;
    s->offset_within_region = start;
    s->size = int128_make64(end - start);
    return true;
}

/*
 * Tells every listener that [offset, offset + size) of the RAM is gone.
 * rdm_lock and, with any listener registered, the BQL held: VFIO's
 * listeners expect it, and IOThreads hand their work to the main loop
 * while a listener is registered (vlb_unlocked_enter()).
 */
static void vlb_notify_discard(VirtIOLLFreeBalloon *s, uint64_t offset,
                               uint64_t size)
{
    RamDiscardListener *rdl;

    QLIST_FOREACH(rdl, &s->rdl_list, next) {
        MemoryRegionSection tmp = *rdl->section;

        assert(qemu_mutex_iothread_locked());
        if (vlb_intersect_section(&tmp, offset, size)) {
            rdl->notify_discard(rdl, &tmp);
        }
    }
}

/*
 * Tells every listener that [offset, offset + size) of the RAM is about to
 * be populated; on an objection, the listeners told so far are rolled back.
 * Locks as vlb_notify_discard().
 */
static int vlb_notify_populate(VirtIOLLFreeBalloon *s, uint64_t offset,
                               uint64_t size)
{
    RamDiscardListener *rdl, *rdl2;
    int ret = 0;

    QLIST_FOREACH(rdl, &s->rdl_list, next) {
        MemoryRegionSection tmp = *rdl->section;

        assert(qemu_mutex_iothread_locked());
        if (!vlb_intersect_section(&tmp, offset, size)) {
            continue;
        }
        ret = rdl->notify_populate(rdl, &tmp);
        if (ret) {
            break;
        }
    }
    if (!ret) {
        return 0;
    }
    QLIST_FOREACH(rdl2, &s->rdl_list, next) {
        MemoryRegionSection tmp = *rdl2->section;

        if (rdl2 == rdl) {
            break;
        }
        if (vlb_intersect_section(&tmp, offset, size)) {
            rdl2->notify_discard(rdl2, &tmp);
        }
    }
    return ret;
}

typedef int (*vlb_section_cb)(MemoryRegionSection *s, void *arg);

/*
 * Calls @cb for every maximal run of 2 MiB blocks inside @s that are
 * discarded (@discarded) or populated (!@discarded). rdm_lock held.
 */
static int vlb_for_each_section(const VirtIOLLFreeBalloon *s,
                                MemoryRegionSection *section, bool discarded,
                                vlb_section_cb cb, void *arg)
{
    unsigned long first, last;
    int ret = 0;

    first = section->offset_within_region / CHILD_SIZE;
    while (true) {
        MemoryRegionSection tmp = *section;

        first = discarded ?
            find_next_bit(s->discarded, s->nb_blocks, first) :
            find_next_zero_bit(s->discarded, s->nb_blocks, first);
        if (first >= s->nb_blocks) {
            break;
        }
        last = (discarded ?
                find_next_zero_bit(s->discarded, s->nb_blocks, first + 1) :
                find_next_bit(s->discarded, s->nb_blocks, first + 1)) - 1;
        if (!vlb_intersect_section(&tmp, first * CHILD_SIZE,
                                   (last - first + 1) * CHILD_SIZE)) {
            break;
        }
        ret = cb(&tmp, arg);
        if (ret) {
            break;
        }
        first = last + 2;
    }
    return ret;
}

/* Discard and populate of the RAM -------------------------------------- */

/*
 * Children a batch collected for discard, as RAM offsets. Discards are
 * merged over adjacent children: one madvise or fallocate per run.
 */
typedef struct VLBBatch {
    unsigned n;
    uint64_t offset[VLB_BATCH];
} VLBBatch;

static int vlb_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Rule O4: listeners unmap [offset, offset + size), then the discard */
static void vlb_discard_range(VirtIOLLFreeBalloon *s, uint64_t offset,
                              uint64_t size)
{
    int ret;

    qemu_mutex_lock(&s->rdm_lock);
    bitmap_set(s->discarded, offset / CHILD_SIZE, size / CHILD_SIZE);
    vlb_notify_discard(s, offset, size);
    qemu_mutex_unlock(&s->rdm_lock);

    /*
     * Not skipped when ram_block_discard_is_disabled(): that is also true
     * while VFIO disables *uncoordinated* discards, and ours are
     * coordinated (the device is the RamDiscardManager and holds
     * ram_block_coordinated_discard_require(), so discards can no longer
     * be disabled as a whole).
     */
    ret = ram_block_discard_range(s->rb, offset, size);
    trace_virtio_llfree_balloon_discard(offset, size, ret);
    if (ret) {
        warn_report_once("virtio-llfree-balloon: discarding RAM failed (%d);"
                         " reclaimed memory stays allocated on the host",
                         ret);
    }
}

/* Discards the children of @b in merged runs; empties @b */
static void vlb_discard_batch(VirtIOLLFreeBalloon *s, VLBBatch *b)
{
    unsigned i = 0;

    qsort(b->offset, b->n, sizeof(b->offset[0]), vlb_cmp_u64);
    while (i < b->n) {
        unsigned j = i + 1;

        while (j < b->n &&
               b->offset[j] == b->offset[i] + (j - i) * CHILD_SIZE) {
            j++;
        }
        vlb_discard_range(s, b->offset[i], (j - i) * CHILD_SIZE);
        i = j;
    }
    b->n = 0;
}

/*
 * Backs the child at RAM @offset: listeners map it (rolled back on an
 * objection), then it is populated. Returns 0 or -errno.
 */
static int vlb_populate_child(VirtIOLLFreeBalloon *s, uint64_t offset)
{
    int ret;

    qemu_mutex_lock(&s->rdm_lock);
    ret = vlb_notify_populate(s, offset, CHILD_SIZE);
    if (!ret) {
        clear_bit(offset / CHILD_SIZE, s->discarded);
    }
    qemu_mutex_unlock(&s->rdm_lock);
    if (ret) {
        trace_virtio_llfree_balloon_populate(offset, ret);
        return ret;
    }

    if (qemu_madvise(vlb_host(s, offset), CHILD_SIZE,
                     QEMU_MADV_POPULATE_WRITE)) {
        ret = -errno;
        if (ret == -EINVAL) {
            /* Host kernel before 5.14: the memory faults in on access */
            warn_report_once("virtio-llfree-balloon: MADV_POPULATE_WRITE is"
                             " not supported; installs do not prefault");
            ret = 0;
        } else {
            qemu_mutex_lock(&s->rdm_lock);
            set_bit(offset / CHILD_SIZE, s->discarded);
            vlb_notify_discard(s, offset, CHILD_SIZE);
            qemu_mutex_unlock(&s->rdm_lock);
        }
    }
    trace_virtio_llfree_balloon_populate(offset, ret);
    return ret;
}

/* Guest counters ---------------------------------------------------------- */

/* Rules O4/O5: the zone and global NR_FREE_PAGES follow the balloon */
static void vlb_adjust_free_pages(VirtIOLLFreeBalloonZone *z, int64_t delta)
{
    qatomic_add(z->free_pages, delta);
    qatomic_add(z->global_free_pages, delta);
}

/* Reclaim and return (zone lock per batch) -------------------------------- */

/*
 * Gives back children the resize search took although they are PINNED.
 * They stay hard-reclaimed while the search runs, so llfree does not offer
 * them again and the guest cannot allocate them. Zone lock held.
 */
static void vlb_undo_pinned(VirtIOLLFreeBalloonZone *z, GArray *pinned)
{
    for (guint i = 0; i < pinned->len; i++) {
        uint64_t frame = g_array_index(pinned, uint64_t, i);
        llfree_result_t r = llfree_return(&z->llfree, frame);

        if (r.error == LLFREE_OK) {
            r = llfree_install(&z->llfree, frame);
        }
        if (r.error != LLFREE_OK) {
            vlb_guest_error(z, frame, "cannot undo a reclaim");
        }
    }
    g_array_set_size(pinned, 0);
}

/*
 * One batch of the resize pass's hard reclaim in @z (rule O4): up to
 * VLB_BATCH searches, at most @want children taken. Ends the zone's search
 * when it finds nothing more. BQL. Returns the searches made.
 */
static uint64_t vlb_inflate_batch(VirtIOLLFreeBalloon *s,
                                  VirtIOLLFreeBalloonZone *z, uint64_t want)
{
    VLBBatch batch = { 0 };
    uint64_t taken = 0, searched = 0;

    qemu_mutex_lock(&z->lock);
    while (searched < VLB_BATCH && taken < want && z->hard_attempts) {
        llfree_result_t r = llfree_reclaim(&z->llfree, z->hard_cursor, true);
        uint64_t c = r.frame / CHILD_FRAMES;

        searched++;
        z->hard_attempts--;
        if (r.error != LLFREE_OK || c >= z->children) {
            z->hard_attempts = 0;
            break;
        }
        z->hard_cursor = r.frame + CHILD_FRAMES;
        if (z->state[c] & PINNED) {
            /* Never ours to take: given back when the search ends */
            g_array_append_val(z->hard_pinned, r.frame);
            continue;
        }
        switch (child_state(z, c)) {
        case HARD:
            /* The guest freed a child of the balloon: keep it ours */
            vlb_guest_error(z, r.frame, "balloon child was free");
            continue;
        case SOFT:
            /* Already discarded */
            z->soft--;
            qatomic_dec(&s->soft_children);
            break;
        default:
            batch.offset[batch.n++] = z->offset[c];
            break;
        }
        set_child_state(z, c, HARD);
        z->hard++;
        qatomic_inc(&s->balloon_children);
        vlb_adjust_free_pages(z, -(int64_t)CHILD_FRAMES);
        taken++;
    }
    vlb_discard_batch(s, &batch);
    if (!z->hard_attempts) {
        vlb_undo_pinned(z, z->hard_pinned);
    }
    qemu_mutex_unlock(&z->lock);
    return searched;
}

/*
 * One batch of the resize pass's return in @z (rule O5): up to VLB_BATCH
 * and at most @want children leave the balloon; they become soft, the
 * memory stays discarded. The scan for them looks at no more than
 * VLB_RETURN_SCAN children. BQL. Returns the children looked at.
 */
static uint64_t vlb_deflate_batch(VirtIOLLFreeBalloon *s,
                                  VirtIOLLFreeBalloonZone *z, uint64_t want)
{
    uint64_t given = 0, looked = 0;

    qemu_mutex_lock(&z->lock);
    while (z->return_left && given < want && given < VLB_BATCH &&
           looked < VLB_RETURN_SCAN) {
        uint64_t c = z->return_cursor;
        llfree_result_t r;

        z->return_cursor = c + 1 < z->children ? c + 1 : 0;
        z->return_left--;
        looked++;
        if (child_state(z, c) != HARD) {
            continue;
        }
        r = llfree_return(&z->llfree, c * CHILD_FRAMES);
        if (r.error != LLFREE_OK) {
            /* Stays in the balloon: the guest changed the word */
            vlb_guest_error(z, c * CHILD_FRAMES, "cannot return child");
            continue;
        }
        set_child_state(z, c, SOFT);
        z->hard--;
        z->soft++;
        qatomic_dec(&s->balloon_children);
        qatomic_inc(&s->soft_children);
        vlb_adjust_free_pages(z, CHILD_FRAMES);
        given++;
    }
    qemu_mutex_unlock(&z->lock);
    return looked;
}

/*
 * Whether child @c of @z is entirely free and not reclaimed. Read from
 * guest-writable memory: only a hint, llfree_reclaim_at() decides.
 */
static bool vlb_child_free(const VirtIOLLFreeBalloonZone *z, uint64_t c)
{
    uint64_t frame = c * CHILD_FRAMES;

    return llfree_free_at(&z->llfree, frame, LLFREE_HUGE_ORDER) ==
           CHILD_FRAMES && !llfree_is_reclaimed(&z->llfree, frame);
}

/*
 * One batch of auto mode in @z: looks at up to @max (and VLB_RETURN_SCAN)
 * children of the pass and soft-reclaims and discards at most VLB_BATCH.
 * Only memory that stayed free is taken: an installed child seen entirely
 * free is marked FREE_SEEN; seen free again at the next pass, it is
 * soft-reclaimed with llfree_reclaim_at() (whole, free, unreserved tree).
 * Seen in use, or a failed reclaim, clears the mark. auto_lock held.
 * Returns the children looked at.
 */
static uint64_t vlb_soft_reclaim_batch(VirtIOLLFreeBalloon *s,
                                       VirtIOLLFreeBalloonZone *z,
                                       uint64_t max)
{
    VLBBatch batch = { 0 };
    uint64_t looked = 0;

    max = MIN(max, VLB_RETURN_SCAN);
    qemu_mutex_lock(&z->lock);
    while (z->soft_left && looked < max && batch.n < VLB_BATCH) {
        uint64_t c = z->soft_cursor;
        llfree_result_t r;

        z->soft_cursor = c + 1 < z->children ? c + 1 : 0;
        z->soft_left--;
        looked++;
        if (z->state[c] & PINNED) {
            continue;
        }
        if (child_state(z, c) != INSTALLED) {
            /* Discarded: its word must say reclaimed; if not, set it again */
            r = llfree_reclaim_at(&z->llfree, c * CHILD_FRAMES, false);
            if (r.error == LLFREE_OK) {
                vlb_guest_error(z, r.frame, "discarded child was installed");
            }
            continue;
        }
        if (!vlb_child_free(z, c)) {
            z->state[c] &= ~FREE_SEEN;
            continue;
        }
        if (!(z->state[c] & FREE_SEEN)) {
            /* Taken at the next pass if it is still free then */
            z->state[c] |= FREE_SEEN;
            continue;
        }
        r = llfree_reclaim_at(&z->llfree, c * CHILD_FRAMES, false);
        if (r.error != LLFREE_OK) {
            /* Allocated since the look, or in a reserved tree */
            z->state[c] &= ~FREE_SEEN;
            continue;
        }
        set_child_state(z, c, SOFT);
        z->soft++;
        qatomic_inc(&s->soft_children);
        batch.offset[batch.n++] = z->offset[c];
        z->soft_taken++;
    }
    vlb_discard_batch(s, &batch);
    qemu_mutex_unlock(&z->lock);
    return looked;
}

/* Resize ---------------------------------------------------------------- */

/* Emits LLFREE_BALLOON_CHANGE if the VM size changed since the last one */
static void vlb_report_size(VirtIOLLFreeBalloon *s)
{
    uint64_t balloon = qatomic_read(&s->balloon_children);

    if (balloon != s->reported_children) {
        s->reported_children = balloon;
        qapi_event_send_llfree_balloon_change(s->ram_size -
                                              balloon * CHILD_SIZE);
    }
}

/* Node file-page counters of the registered zones, each counted once */
static uint64_t vlb_file_pages(VirtIOLLFreeBalloon *s)
{
    int64_t ram_pages = s->ram_size / 4096;
    uint64_t sum = 0;

    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *z = s->zones[i];
        bool seen = false;

        if (!z) {
            continue;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (s->zones[j] && s->zones[j]->file_pages == z->file_pages) {
                seen = true;
            }
        }
        if (!seen) {
            /* Guest-writable: clamp to the RAM's pages */
            sum += MIN(MAX(qatomic_read(z->file_pages), 0), ram_pages);
        }
    }
    return MIN(sum, ram_pages);
}

/* Asks the guest to drop @pages of page cache (rule O10). BQL. */
static void vlb_send_shrink(VirtIOLLFreeBalloon *s, uint64_t pages)
{
    s->shrink_pages = MIN(pages, UINT32_MAX);
    s->shrink_seq = s->shrink_seq == UINT32_MAX ? 1 : s->shrink_seq + 1;
    s->shrink_pending = true;
    trace_virtio_llfree_balloon_shrink_request(s->shrink_seq,
                                               s->shrink_pages);
    virtio_notify_config(VIRTIO_DEVICE(s));
}

static bool vlb_may_shrink(VirtIOLLFreeBalloon *s)
{
    return virtio_vdev_has_feature(VIRTIO_DEVICE(s),
                                   VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE) &&
           !s->shrink_pending;
}

/*
 * Hard reclaim fell @missing children short: ask the guest to drop page
 * cache, a bounded number of times per target. BQL.
 */
static void vlb_request_shrink(VirtIOLLFreeBalloon *s, uint64_t missing)
{
    uint64_t pages;

    if (!vlb_may_shrink(s) || s->shrink_rounds >= VLB_SHRINK_MAX_ROUNDS) {
        return;
    }
    pages = MIN(missing * CHILD_FRAMES, vlb_file_pages(s));
    if (pages) {
        s->shrink_rounds++;
        vlb_send_shrink(s, pages);
    }
}

/* Hard reclaim order: never DMA (protocol 12.2) */
static const uint8_t vlb_inflate_order[] = {
    VIRTIO_LLFREE_BALLOON_ZONE_NORMAL,
    VIRTIO_LLFREE_BALLOON_ZONE_MOVABLE,
    VIRTIO_LLFREE_BALLOON_ZONE_DMA32,
};

/*
 * The registered zone at position @rank of the inflate order (type, then
 * zone id), or NULL. BQL.
 */
static VirtIOLLFreeBalloonZone *vlb_zone_by_rank(VirtIOLLFreeBalloon *s,
                                                 uint32_t rank)
{
    VirtIOLLFreeBalloonZone *z = s->zones[rank % s->max_zones];

    if (z && z->type == vlb_inflate_order[rank / s->max_zones]) {
        return z;
    }
    return NULL;
}

static uint32_t vlb_nb_ranks(VirtIOLLFreeBalloon *s)
{
    return ARRAY_SIZE(vlb_inflate_order) * s->max_zones;
}

/*
 * One batch of the resize pass, which moves the balloon to the target and
 * spreads it over the zones as if all of them had been there from the
 * start (zones register one by one): a zone earlier in the inflate order
 * takes over children a later zone holds as long as it has free ones.
 *
 *   balloon > target: return children of the last zone in the order that
 *                     holds (returnable) ones;
 *   otherwise:        hard reclaim in the first zone that can still give
 *                     children, if the balloon must grow or a later zone
 *                     holds children; the surplus is returned by the
 *                     following batches.
 *
 * Every batch uses up searches or return scans, which are bounded per zone
 * and pass, so a pass always ends. BQL. Returns the children looked at,
 * 0 once the pass is complete.
 */
static uint64_t vlb_resize_batch(VirtIOLLFreeBalloon *s)
{
    uint64_t balloon = qatomic_read(&s->balloon_children);
    uint64_t target = s->target_children;
    uint64_t later = 0;
    uint32_t rank;

    if (balloon > target) {
        for (rank = vlb_nb_ranks(s); rank-- > 0;) {
            VirtIOLLFreeBalloonZone *z = vlb_zone_by_rank(s, rank);

            if (z && z->hard && z->return_left) {
                return vlb_deflate_batch(s, z, balloon - target);
            }
        }
        return 0;
    }

    /* Children that zones could give back to move them to a better zone */
    for (rank = 0; rank < vlb_nb_ranks(s); rank++) {
        VirtIOLLFreeBalloonZone *z = vlb_zone_by_rank(s, rank);

        if (z && z->return_left) {
            later += z->hard;
        }
    }
    for (rank = 0; rank < vlb_nb_ranks(s); rank++) {
        VirtIOLLFreeBalloonZone *z = vlb_zone_by_rank(s, rank);

        if (!z) {
            continue;
        }
        if (z->return_left) {
            later -= z->hard;
        }
        if (z->hard_attempts && (balloon < target || later)) {
            return vlb_inflate_batch(s, z, target - balloon + later);
        }
    }
    return 0;
}

/* Ends the searches of the resize pass: PINNED children go back. BQL. */
static void vlb_resize_end_searches(VirtIOLLFreeBalloon *s)
{
    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *z = s->zones[i];

        if (z && z->hard_pinned->len) {
            qemu_mutex_lock(&z->lock);
            vlb_undo_pinned(z, z->hard_pinned);
            qemu_mutex_unlock(&z->lock);
        }
    }
}

/* The pass is over: short of the target, ask for page cache. BQL. */
static void vlb_resize_done(VirtIOLLFreeBalloon *s)
{
    uint64_t balloon = qatomic_read(&s->balloon_children);

    vlb_resize_end_searches(s);
    s->resizing = false;
    if (balloon < s->target_children) {
        vlb_request_shrink(s, s->target_children - balloon);
    }
    trace_virtio_llfree_balloon_resize_done(balloon, s->target_children);
    vlb_report_size(s);
}

/*
 * A step of the resize pass in the main loop: batches of at most VLB_BATCH
 * children under the zone lock until @step_children children or
 * VLB_STEP_NS have passed, then the main loop runs again. Every batch is
 * complete when it returns, so a cancel between steps leaves no child
 * half-done.
 */
static void vlb_resize_bh(void *opaque)
{
    VirtIOLLFreeBalloon *s = opaque;
    int64_t end = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + VLB_STEP_NS;
    uint64_t budget = s->step_children;

    if (!s->resizing) {
        return;
    }
    while (!qatomic_read(&VIRTIO_DEVICE(s)->broken)) {
        uint64_t n = vlb_resize_batch(s);

        if (!n) {
            break;
        }
        if (n >= budget || qemu_clock_get_ns(QEMU_CLOCK_REALTIME) >= end) {
            trace_virtio_llfree_balloon_resize_step(
                qatomic_read(&s->balloon_children),
                s->step_children - budget + n);
            qemu_bh_schedule(s->resize_bh);
            return;
        }
        budget -= n;
    }
    vlb_resize_done(s);
}

/*
 * Starts a pass that moves the balloon towards the target, superseding a
 * running one; it runs in steps in the main loop (vlb_resize_bh). BQL.
 */
static void vlb_resize_start(VirtIOLLFreeBalloon *s)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(s);

    trace_virtio_llfree_balloon_resize(qatomic_read(&s->balloon_children),
                                       s->target_children);
    if (qatomic_read(&vdev->broken) || !vlb_has_zones(s)) {
        return;
    }
    vlb_resize_end_searches(s);
    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *z = s->zones[i];

        if (z) {
            /* Every child can be found or scanned at most once per pass */
            z->hard_attempts = z->children;
            z->return_left = z->children;
        }
    }
    s->resizing = true;
    qemu_bh_schedule(s->resize_bh);
}

/* Stops a running resize pass between two batches (reset). BQL. */
static void vlb_resize_cancel(VirtIOLLFreeBalloon *s)
{
    qemu_bh_cancel(s->resize_bh);
    if (s->resizing) {
        vlb_resize_end_searches(s);
        s->resizing = false;
    }
}

/* Listener calls from IOThreads -------------------------------------------- */

/*
 * RamDiscardListeners (VFIO) expect the BQL, which IOThreads do not hold.
 * IOThread code that may notify them (install, auto mode) first announces
 * itself in @unlocked_users and then checks @nb_listeners: with no listener
 * it goes on without the BQL, otherwise it hands its work to the main loop.
 * vlb_rdm_register_listener() sets @nb_listeners first and then waits until
 * no announced user is left, so a listener never sees a call without the
 * BQL (store-load ordering on both sides: smp_mb()). Returns true if the
 * caller may go on without the BQL; it then calls vlb_unlocked_leave().
 */
static bool vlb_unlocked_enter(VirtIOLLFreeBalloon *s)
{
    qatomic_inc(&s->unlocked_users);
    /* Pairs with the one in vlb_rdm_register_listener() */
    smp_mb();
    if (!qatomic_read(&s->nb_listeners)) {
        return true;
    }
    qatomic_dec(&s->unlocked_users);
    return false;
}

static void vlb_unlocked_leave(VirtIOLLFreeBalloon *s)
{
    qatomic_dec(&s->unlocked_users);
}

/* Auto mode ------------------------------------------------------------- */

/*
 * One step of an auto-mode pass (the timer starts one every period): soft
 * reclaim zone by zone in batches until @step_children children were
 * looked at or VLB_STEP_NS, then a bottom half carries the pass on, so
 * neither the main loop nor installs wait long. The timer is armed again
 * when the pass ends. Runs in the auto-mode IOThread without the BQL (no
 * listener is registered, vlb_unlocked_enter()) or in the main loop with
 * it.
 */
static void vlb_auto_step(VirtIOLLFreeBalloon *s)
{
    int64_t end = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + VLB_STEP_NS;
    uint64_t budget = s->step_children;

    qemu_mutex_lock(&s->auto_lock);
    if (!qatomic_read(&s->auto_enabled)) {
        qemu_mutex_unlock(&s->auto_lock);
        return;
    }
    if (!s->auto_in_pass) {
        s->auto_in_pass = true;
        s->auto_zone = 0;
        for (uint32_t i = 0; i < s->max_zones; i++) {
            VirtIOLLFreeBalloonZone *z = vlb_zone(s, i);

            if (z) {
                z->soft_left = z->children;
                z->soft_taken = 0;
            }
        }
    }
    while (s->auto_zone < s->max_zones &&
           !qatomic_read(&VIRTIO_DEVICE(s)->broken)) {
        VirtIOLLFreeBalloonZone *z = vlb_zone(s, s->auto_zone);
        uint64_t n;

        if (!z || !z->soft_left) {
            if (z) {
                trace_virtio_llfree_balloon_auto_reclaim(z->id,
                                                         z->soft_taken);
            }
            s->auto_zone++;
            continue;
        }
        n = vlb_soft_reclaim_batch(s, z, budget);
        if (!qatomic_read(&s->auto_enabled)) {
            /* Stopping: vlb_auto_stop() abandons the pass */
            qemu_mutex_unlock(&s->auto_lock);
            return;
        }
        if (n >= budget || qemu_clock_get_ns(QEMU_CLOCK_REALTIME) >= end) {
            /* Handed to the main loop: stay there for this pass */
            qemu_bh_schedule(qemu_mutex_iothread_locked() && s->auto_main_bh ?
                             s->auto_main_bh : s->auto_bh);
            qemu_mutex_unlock(&s->auto_lock);
            return;
        }
        budget -= n;
    }
    s->auto_in_pass = false;
    timer_mod(s->auto_timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) +
              s->auto_mode_interval);
    qemu_mutex_unlock(&s->auto_lock);
}

/* The timer and @auto_bh: in the auto-mode IOThread, or the main loop */
static void vlb_auto_cb(void *opaque)
{
    VirtIOLLFreeBalloon *s = opaque;

    if (qemu_mutex_iothread_locked()) {
        vlb_auto_step(s);
    } else if (vlb_unlocked_enter(s)) {
        vlb_auto_step(s);
        vlb_unlocked_leave(s);
    } else {
        /* A listener wants the BQL: this step runs in the main loop */
        qemu_bh_schedule(s->auto_main_bh);
    }
}

/* @auto_main_bh: a step handed over by the auto-mode IOThread; BQL */
static void vlb_auto_main_cb(void *opaque)
{
    vlb_auto_step(opaque);
}

/*
 * Auto mode's page-cache trim, once a period in the main loop: asks the
 * guest to drop @cache_trim percent of its page cache. The guest's reclaim
 * takes the least recently used pages first, so cache the guest keeps
 * using stays while cache it stopped using fades within a few periods;
 * the frames that frees go back to the host with the auto-mode passes. A
 * request waits for the answer to the previous one. BQL.
 */
static void vlb_trim_cb(void *opaque)
{
    VirtIOLLFreeBalloon *s = opaque;

    if (!qatomic_read(&s->auto_enabled)) {
        return;
    }
    if (vlb_may_shrink(s) && !qatomic_read(&VIRTIO_DEVICE(s)->broken)) {
        uint64_t pages = vlb_file_pages(s) * s->cache_trim / 100;

        if (pages >= CHILD_FRAMES) {
            vlb_send_shrink(s, pages);
        }
    }
    timer_mod(s->trim_timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) +
              s->auto_mode_interval);
}

/* Starts auto mode once a zone is registered. BQL. */
static void vlb_auto_start(VirtIOLLFreeBalloon *s)
{
    if (!s->auto_mode) {
        return;
    }
    qemu_mutex_lock(&s->auto_lock);
    if (!s->auto_enabled) {
        qatomic_set(&s->auto_enabled, true);
        s->auto_in_pass = false;
        timer_mod(s->auto_timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) +
                  s->auto_mode_interval);
        if (s->trim_timer) {
            timer_mod(s->trim_timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) +
                      s->auto_mode_interval);
        }
    }
    qemu_mutex_unlock(&s->auto_lock);
}

/*
 * Stops auto mode and waits for a step in progress, which ends after its
 * current batch once it sees @auto_enabled clear; a pass in progress is
 * abandoned (it holds no child between batches). BQL.
 */
static void vlb_auto_stop(VirtIOLLFreeBalloon *s)
{
    /* Before taking the lock: the running step polls it between batches */
    qatomic_set(&s->auto_enabled, false);
    qemu_mutex_lock(&s->auto_lock);
    if (s->auto_timer) {
        timer_del(s->auto_timer);
        qemu_bh_cancel(s->auto_bh);
        if (s->auto_main_bh) {
            qemu_bh_cancel(s->auto_main_bh);
        }
        s->auto_in_pass = false;
    }
    if (s->trim_timer) {
        timer_del(s->trim_timer);
    }
    qemu_mutex_unlock(&s->auto_lock);
}

/* Requests -------------------------------------------------------------- */

/*
 * Pops the next request of @vq into @req (@size bytes). A malformed chain
 * breaks the device (virtio_error) and ends the queue's processing.
 */
static VirtQueueElement *vlb_pop(VirtIODevice *vdev, VirtQueue *vq,
                                 void *req, size_t size, const char *queue)
{
    VirtQueueElement *elem = virtqueue_pop(vq, sizeof(VirtQueueElement));
    size_t out, in;

    if (!elem) {
        return NULL;
    }
    out = iov_size(elem->out_sg, elem->out_num);
    in = iov_size(elem->in_sg, elem->in_num);
    if (out != size) {
        virtio_error(vdev, "virtio-llfree-balloon: %s request of %zu bytes,"
                     " expected %zu", queue, out, size);
    } else if (in < sizeof(struct virtio_llfree_balloon_resp)) {
        virtio_error(vdev, "virtio-llfree-balloon: %s response buffer of %zu"
                     " bytes, need %zu", queue, in,
                     sizeof(struct virtio_llfree_balloon_resp));
    } else {
        iov_to_buf(elem->out_sg, elem->out_num, 0, req, size);
        return elem;
    }
    virtqueue_detach_element(vq, elem, 0);
    g_free(elem);
    return NULL;
}

static void vlb_respond(VirtIODevice *vdev, VirtQueue *vq,
                        VirtQueueElement *elem, uint32_t status,
                        uint32_t value, bool notify)
{
    struct virtio_llfree_balloon_resp resp = {
        .status = cpu_to_le32(status),
        .value = cpu_to_le32(value),
    };

    iov_from_buf(elem->in_sg, elem->in_num, 0, &resp, sizeof(resp));
    virtqueue_push(vq, elem, sizeof(resp));
    if (notify) {
        virtio_notify(vdev, vq);
    }
    g_free(elem);
}

static bool vlb_driver_ok(VirtIODevice *vdev)
{
    /* Rule O1: nothing is consumed before DRIVER_OK */
    return vdev->status & VIRTIO_CONFIG_S_DRIVER_OK;
}

/* Zone registration -------------------------------------------------------- */

/* Boot RAM pieces of the guest-physical address space, from the flat view */
typedef struct VLBRamRanges {
    const MemoryRegion *ram;
    GArray *ranges;
} VLBRamRanges;

static bool vlb_collect_ram_range(Int128 start, Int128 len,
                                  const MemoryRegion *mr,
                                  hwaddr offset_in_region, void *opaque)
{
    VLBRamRanges *r = opaque;
    VirtIOLLFreeBalloonRamRange range = {
        .gpa = int128_get64(start),
        .size = int128_get64(len),
        .offset = offset_in_region,
    };

    if (mr != r->ram) {
        return false;
    }
    if (r->ranges->len) {
        VirtIOLLFreeBalloonRamRange *prev =
            &g_array_index(r->ranges, VirtIOLLFreeBalloonRamRange,
                           r->ranges->len - 1);

        if (prev->gpa + prev->size == range.gpa &&
            prev->offset + prev->size == range.offset) {
            prev->size += range.size;
            return false;
        }
    }
    g_array_append_val(r->ranges, range);
    return false;
}

static GArray *vlb_ram_ranges(VirtIOLLFreeBalloon *s)
{
    VLBRamRanges r = {
        .ram = s->ram,
        .ranges = g_array_new(false, false,
                              sizeof(VirtIOLLFreeBalloonRamRange)),
    };

    RCU_READ_LOCK_GUARD();
    flatview_for_each_range(address_space_to_flatview(&address_space_memory),
                            vlb_collect_ram_range, &r);
    return r.ranges;
}

/*
 * Offset in the RAM of [gpa, gpa + size), if that lies entirely in one
 * piece of boot RAM; false for zero sizes and wrap-around.
 */
static bool vlb_gpa_to_ram(GArray *ranges, uint64_t gpa, uint64_t size,
                           uint64_t *offset)
{
    if (!size || gpa + size < gpa) {
        return false;
    }
    for (guint i = 0; i < ranges->len; i++) {
        VirtIOLLFreeBalloonRamRange *r =
            &g_array_index(ranges, VirtIOLLFreeBalloonRamRange, i);

        if (gpa >= r->gpa && gpa - r->gpa < r->size &&
            size <= r->size - (gpa - r->gpa)) {
            *offset = r->offset + (gpa - r->gpa);
            return true;
        }
    }
    return false;
}

static uint64_t vlb_ram_end(GArray *ranges)
{
    uint64_t end = 0;

    for (guint i = 0; i < ranges->len; i++) {
        VirtIOLLFreeBalloonRamRange *r =
            &g_array_index(ranges, VirtIOLLFreeBalloonRamRange, i);

        end = MAX(end, r->gpa + r->size);
    }
    return end;
}

static bool vlb_ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                               uint64_t blen)
{
    /* Both ranges are known not to wrap */
    return a < b + blen && b < a + alen;
}

/* The five guest ranges a registration names */
typedef struct VLBMetaRange {
    uint64_t gpa;
    uint64_t len;
} VLBMetaRange;

static void vlb_meta_ranges(const struct virtio_llfree_balloon_zone *req,
                            VLBMetaRange m[5])
{
    m[0] = (VLBMetaRange) { req->trees_gpa, req->trees_len };
    m[1] = (VLBMetaRange) { req->lower_gpa, req->lower_len };
    m[2] = (VLBMetaRange) { req->free_pages_gpa, sizeof(int64_t) };
    m[3] = (VLBMetaRange) { req->global_free_pages_gpa, sizeof(int64_t) };
    m[4] = (VLBMetaRange) { req->file_pages_gpa, sizeof(int64_t) };
}

static void vlb_zone_meta_ranges(const VirtIOLLFreeBalloonZone *z,
                                 VLBMetaRange m[5])
{
    m[0] = (VLBMetaRange) { z->trees_gpa, z->trees_len };
    m[1] = (VLBMetaRange) { z->lower_gpa, z->lower_len };
    m[2] = (VLBMetaRange) { z->free_pages_gpa, sizeof(int64_t) };
    m[3] = (VLBMetaRange) { z->global_free_pages_gpa, sizeof(int64_t) };
    m[4] = (VLBMetaRange) { z->file_pages_gpa, sizeof(int64_t) };
}

/*
 * Whether the arrays of @z overlap any of @m, or @m's arrays (m[0], m[1])
 * overlap any of @z's ranges. Counters may be shared between zones (the
 * global one always is), arrays never: two zones on one array would let
 * the guest make the device account one child twice.
 */
static bool vlb_meta_overlaps_arrays(const VirtIOLLFreeBalloonZone *z,
                                     const VLBMetaRange m[5])
{
    VLBMetaRange zm[5];

    vlb_zone_meta_ranges(z, zm);
    for (unsigned i = 0; i < 5; i++) {
        for (unsigned j = 0; j < 5; j++) {
            if ((i < 2 || j < 2) &&
                vlb_ranges_overlap(zm[i].gpa, zm[i].len, m[j].gpa, m[j].len)) {
                return true;
            }
        }
    }
    return false;
}

/* Pins the children of @z that overlap [gpa, gpa + len) (rule O3) */
static void vlb_pin_range(VirtIOLLFreeBalloonZone *z, uint64_t gpa,
                          uint64_t len)
{
    uint64_t start = z->base_pfn * FRAME_SIZE;
    uint64_t end = start + z->children * CHILD_SIZE;
    uint64_t first, last;

    if (gpa >= end || gpa + len <= start) {
        return;
    }
    first = (MAX(gpa, start) - start) / CHILD_SIZE;
    last = (MIN(gpa + len, end) - 1 - start) / CHILD_SIZE;
    for (uint64_t c = first; c <= last; c++) {
        if (!(z->state[c] & PINNED)) {
            z->state[c] |= PINNED;
            z->reclaimable--;
        }
    }
}

/* Whether a child overlapping [gpa, gpa + len) is discarded */
static bool vlb_range_discarded(VirtIOLLFreeBalloon *s, uint64_t gpa,
                                uint64_t len)
{
    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *z = s->zones[i];
        uint64_t start, end, first, last;
        bool found = false;

        if (!z) {
            continue;
        }
        start = z->base_pfn * FRAME_SIZE;
        end = start + z->children * CHILD_SIZE;
        if (gpa >= end || gpa + len <= start) {
            continue;
        }
        first = (MAX(gpa, start) - start) / CHILD_SIZE;
        last = (MIN(gpa + len, end) - 1 - start) / CHILD_SIZE;
        qemu_mutex_lock(&z->lock);
        for (uint64_t c = first; c <= last; c++) {
            found |= child_state(z, c) != INSTALLED;
        }
        qemu_mutex_unlock(&z->lock);
        if (found) {
            return true;
        }
    }
    return false;
}

static void vlb_zone_free(VirtIOLLFreeBalloonZone *z)
{
    if (z->hard_pinned) {
        g_array_free(z->hard_pinned, true);
    }
    qemu_mutex_destroy(&z->lock);
    qemu_vfree(z->local);
    g_free(z->state);
    g_free(z->offset);
    g_free(z);
}

/*
 * Validates a registration (protocol section 9, in that order) and, if it
 * is good, builds the zone. BQL.
 */
static uint32_t vlb_register_zone(VirtIOLLFreeBalloon *s,
                                  const struct virtio_llfree_balloon_zone *req,
                                  VirtIOLLFreeBalloonZone **out)
{
    g_autoptr(GArray) ranges = NULL;
    VirtIOLLFreeBalloonZone *z;
    llfree_meta_size_t size;
    llfree_result_t r;
    VLBMetaRange m[5];
    uint64_t off[5], end;
    uint32_t nodes = MAX(s->nb_numa_nodes, 1);

    /* 1. version */
    if (req->version < 1 || req->version > VIRTIO_LLFREE_BALLOON_VERSION ||
        (s->version && req->version != s->version)) {
        return VIRTIO_LLFREE_BALLOON_S_VERSION;
    }

    /* 2. fields */
    size = llfree_metadata_size(req->cores, req->frames);
    if (req->padding0 || req->padding1 ||
        req->type > VIRTIO_LLFREE_BALLOON_ZONE_MOVABLE ||
        req->zone >= s->max_zones || req->node >= nodes ||
        req->cores < 1 || req->frames < 1 ||
        req->base_pfn % CHILD_FRAMES ||
        req->trees_gpa % VIRTIO_LLFREE_BALLOON_META_ALIGN ||
        req->lower_gpa % VIRTIO_LLFREE_BALLOON_META_ALIGN ||
        req->free_pages_gpa % sizeof(int64_t) ||
        req->global_free_pages_gpa % sizeof(int64_t) ||
        req->file_pages_gpa % sizeof(int64_t) ||
        !size.local || req->trees_len != size.trees ||
        req->lower_len != size.lower) {
        return VIRTIO_LLFREE_BALLOON_S_INVALID;
    }

    /* 3. zone id and frames free */
    if (s->zones[req->zone]) {
        return VIRTIO_LLFREE_BALLOON_S_EXISTS;
    }
    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *o = s->zones[i];
        /* frames < 2^42 (llfree's limit); saturate the end */
        uint64_t req_end = req->base_pfn + req->frames < req->base_pfn ?
                           UINT64_MAX : req->base_pfn + req->frames;

        if (o && req->base_pfn < o->base_pfn + o->frames &&
            o->base_pfn < req_end) {
            return VIRTIO_LLFREE_BALLOON_S_EXISTS;
        }
    }

    /* 4. addresses */
    ranges = vlb_ram_ranges(s);
    end = req->base_pfn + req->frames;
    if (end < req->base_pfn || end > UINT64_MAX / FRAME_SIZE ||
        end * FRAME_SIZE > vlb_ram_end(ranges)) {
        return VIRTIO_LLFREE_BALLOON_S_ADDRESS;
    }
    vlb_meta_ranges(req, m);
    for (unsigned i = 0; i < ARRAY_SIZE(m); i++) {
        if (!vlb_gpa_to_ram(ranges, m[i].gpa, m[i].len, &off[i]) ||
            vlb_range_discarded(s, m[i].gpa, m[i].len)) {
            return VIRTIO_LLFREE_BALLOON_S_ADDRESS;
        }
    }

    /* 5. no overlap among them, nor with another zone's arrays */
    for (unsigned i = 0; i < ARRAY_SIZE(m); i++) {
        for (unsigned j = i + 1; j < ARRAY_SIZE(m); j++) {
            if (vlb_ranges_overlap(m[i].gpa, m[i].len, m[j].gpa, m[j].len)) {
                return VIRTIO_LLFREE_BALLOON_S_INVALID;
            }
        }
    }
    for (uint32_t i = 0; i < s->max_zones; i++) {
        if (s->zones[i] && vlb_meta_overlaps_arrays(s->zones[i], m)) {
            return VIRTIO_LLFREE_BALLOON_S_INVALID;
        }
    }

    /* 6. attach */
    z = g_new0(VirtIOLLFreeBalloonZone, 1);
    z->id = req->zone;
    z->type = req->type;
    z->node = req->node;
    z->cores = req->cores;
    z->base_pfn = req->base_pfn;
    z->frames = req->frames;
    z->children = req->frames / CHILD_FRAMES;
    z->trees_gpa = req->trees_gpa;
    z->trees_len = req->trees_len;
    z->lower_gpa = req->lower_gpa;
    z->lower_len = req->lower_len;
    z->free_pages_gpa = req->free_pages_gpa;
    z->global_free_pages_gpa = req->global_free_pages_gpa;
    z->file_pages_gpa = req->file_pages_gpa;
    z->free_pages = vlb_host(s, off[2]);
    z->global_free_pages = vlb_host(s, off[3]);
    z->file_pages = vlb_host(s, off[4]);
    z->local = qemu_memalign(LLFREE_ALIGN, size.local);
    qemu_mutex_init(&z->lock);
    r = llfree_init(&z->llfree, req->cores, req->frames, LLFREE_INIT_ATTACH,
                    (llfree_meta_t) {
                        .local = z->local,
                        .trees = vlb_host(s, off[0]),
                        .lower = vlb_host(s, off[1]),
                    });
    if (r.error != LLFREE_OK) {
        vlb_zone_free(z);
        return VIRTIO_LLFREE_BALLOON_S_INVALID;
    }

    /* Which children the device may ever reclaim (rule O3, holes) */
    z->state = g_new0(uint8_t, z->children);
    z->offset = g_new0(uint64_t, z->children);
    for (uint64_t c = 0; c < z->children; c++) {
        uint64_t gpa = (z->base_pfn + c * CHILD_FRAMES) * FRAME_SIZE;

        /*
         * Entirely in boot RAM, 2 MiB aligned there, and not reachable
         * through another zone's child (RAM aliased at two addresses)
         */
        if (vlb_gpa_to_ram(ranges, gpa, CHILD_SIZE, &z->offset[c]) &&
            QEMU_IS_ALIGNED(z->offset[c], CHILD_SIZE) &&
            !test_and_set_bit(z->offset[c] / CHILD_SIZE, s->claimed)) {
            z->reclaimable++;
        } else {
            z->state[c] = PINNED;
        }
    }
    for (unsigned i = 0; i < ARRAY_SIZE(m); i++) {
        vlb_pin_range(z, m[i].gpa, m[i].len);
    }
    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *o = s->zones[i];
        VLBMetaRange om[5];

        if (!o) {
            continue;
        }
        vlb_zone_meta_ranges(o, om);
        for (unsigned j = 0; j < ARRAY_SIZE(om); j++) {
            vlb_pin_range(z, om[j].gpa, om[j].len);
        }
        /* o's children are all installed here (checked in step 4) */
        qemu_mutex_lock(&o->lock);
        for (unsigned j = 0; j < ARRAY_SIZE(m); j++) {
            vlb_pin_range(o, m[j].gpa, m[j].len);
        }
        qemu_mutex_unlock(&o->lock);
    }
    z->hard_cursor = 0;
    z->soft_cursor = 0;
    z->hard_pinned = g_array_new(false, false, sizeof(uint64_t));
    /* A running auto-mode pass that reaches this zone looks at it */
    z->soft_left = z->children;
    *out = z;
    return VIRTIO_LLFREE_BALLOON_S_OK;
}

static void vlb_handle_zone(VirtIODevice *vdev, VirtQueue *vq)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);
    struct virtio_llfree_balloon_zone req;
    VirtQueueElement *elem;

    if (!vlb_driver_ok(vdev)) {
        return;
    }
    while ((elem = vlb_pop(vdev, vq, &req, sizeof(req), "zone"))) {
        VirtIOLLFreeBalloonZone *z = NULL;
        uint32_t status;

        /* Convert the copy once */
        req.version = le16_to_cpu(req.version);
        req.zone = le16_to_cpu(req.zone);
        req.node = le16_to_cpu(req.node);
        req.cores = le32_to_cpu(req.cores);
        req.padding1 = le32_to_cpu(req.padding1);
        req.base_pfn = le64_to_cpu(req.base_pfn);
        req.frames = le64_to_cpu(req.frames);
        req.trees_gpa = le64_to_cpu(req.trees_gpa);
        req.trees_len = le64_to_cpu(req.trees_len);
        req.lower_gpa = le64_to_cpu(req.lower_gpa);
        req.lower_len = le64_to_cpu(req.lower_len);
        req.free_pages_gpa = le64_to_cpu(req.free_pages_gpa);
        req.global_free_pages_gpa = le64_to_cpu(req.global_free_pages_gpa);
        req.file_pages_gpa = le64_to_cpu(req.file_pages_gpa);
        trace_virtio_llfree_balloon_zone_request(req.zone, req.version,
                                                 req.type, req.node,
                                                 req.base_pfn, req.frames);

        status = vlb_register_zone(s, &req, &z);
        trace_virtio_llfree_balloon_zone_result(req.zone, status,
                                                z ? z->reclaimable : 0);
        if (z) {
            s->version = req.version;
            qatomic_store_release(&s->zones[z->id], z);
        }
        vlb_respond(vdev, vq, elem, status, z ? z->reclaimable : 0, true);
        if (z) {
            /*
             * Rule O2: reclaim only after the OK response. The guest
             * registers its zones one by one and says nothing when it is
             * done: every registration starts a new resize pass, which
             * moves children to the new zone if it comes earlier in the
             * inflate order.
             */
            vlb_auto_start(s);
            vlb_resize_start(s);
        }
    }
}

/* Install ------------------------------------------------------------------ */

/* Rule O6 for one request; zone lock. Returns a status. */
static uint32_t vlb_install(VirtIOLLFreeBalloon *s,
                            const struct virtio_llfree_balloon_install *req,
                            uint32_t *populated)
{
    uint64_t nr, limit, first, n;
    VirtIOLLFreeBalloonZone *z;
    uint32_t status = VIRTIO_LLFREE_BALLOON_S_OK;

    if (req->padding0 || req->padding1 ||
        req->order < VIRTIO_LLFREE_BALLOON_INSTALL_MIN_ORDER ||
        req->order > VIRTIO_LLFREE_BALLOON_INSTALL_MAX_ORDER) {
        return VIRTIO_LLFREE_BALLOON_S_INVALID;
    }
    nr = 1ULL << req->order;
    if (req->frame % nr) {
        return VIRTIO_LLFREE_BALLOON_S_INVALID;
    }
    z = vlb_zone(s, req->zone);
    if (!z) {
        return VIRTIO_LLFREE_BALLOON_S_NO_ZONE;
    }
    limit = z->children * CHILD_FRAMES;
    if (req->frame >= limit || nr > limit - req->frame) {
        return VIRTIO_LLFREE_BALLOON_S_INVALID;
    }
    first = req->frame / CHILD_FRAMES;
    n = nr / CHILD_FRAMES;

    qemu_mutex_lock(&z->lock);
    /* Check every child before touching any */
    for (uint64_t c = first; c < first + n; c++) {
        if (child_state(z, c) == HARD) {
            qemu_mutex_unlock(&z->lock);
            return VIRTIO_LLFREE_BALLOON_S_STATE;
        }
    }
    for (uint64_t c = first; c < first + n; c++) {
        uint64_t frame = c * CHILD_FRAMES;
        llfree_result_t r;

        if (child_state(z, c) == SOFT) {
            if (vlb_populate_child(s, z->offset[c])) {
                /* Children before this one stay installed (committed) */
                status = VIRTIO_LLFREE_BALLOON_S_HOST;
                break;
            }
            set_child_state(z, c, INSTALLED);
            z->soft--;
            qatomic_dec(&s->soft_children);
            (*populated)++;
        } else if (!llfree_is_reclaimed(&z->llfree, frame)) {
            continue;
        }
        /* Release order: the guest sees the memory backed (rule O6) */
        r = llfree_install(&z->llfree, frame);
        if (r.error != LLFREE_OK) {
            vlb_guest_error(z, frame, "reclaimed bit already clear");
        }
    }
    qemu_mutex_unlock(&z->lock);
    return status;
}

/* vlb_install() in the main loop for an IOThread that waits for it */
typedef struct VLBInstallCall {
    VirtIOLLFreeBalloon *s;
    const struct virtio_llfree_balloon_install *req;
    uint32_t *populated;
    uint32_t status;
    QemuEvent done;
} VLBInstallCall;

static void vlb_install_bh(void *opaque)
{
    VLBInstallCall *call = opaque;

    call->status = vlb_install(call->s, call->req, call->populated);
    qemu_event_set(&call->done);
}

/*
 * Rule O6 for one request, with the BQL for listener calls: an IOThread
 * goes on without it unless a listener is registered, and then runs the
 * request in the main loop and waits, holding no lock. This cannot
 * deadlock: the main thread only ever waits for an install IOThread in
 * vlb_stop_ioeventfd() (aio_wait_bh_oneshot() polls the main AioContext
 * and so runs vlb_install_bh()), and vlb_rdm_register_listener() does not
 * wait for requests handed over here.
 */
static uint32_t vlb_install_with_bql(
    VirtIOLLFreeBalloon *s, const struct virtio_llfree_balloon_install *req,
    uint32_t *populated)
{
    VLBInstallCall call = { .s = s, .req = req, .populated = populated };
    uint32_t status;

    if (qemu_mutex_iothread_locked()) {
        return vlb_install(s, req, populated);
    }
    if (vlb_unlocked_enter(s)) {
        status = vlb_install(s, req, populated);
        vlb_unlocked_leave(s);
        return status;
    }
    qemu_event_init(&call.done, false);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), vlb_install_bh, &call);
    qemu_event_wait(&call.done);
    qemu_event_destroy(&call.done);
    return call.status;
}

static void vlb_handle_install(VirtIODevice *vdev, VirtQueue *vq)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);
    struct virtio_llfree_balloon_install req;
    VirtQueueElement *elem;

    if (!vlb_driver_ok(vdev)) {
        return;
    }
    while ((elem = vlb_pop(vdev, vq, &req, sizeof(req), "install"))) {
        uint32_t status, populated = 0;

        req.zone = le16_to_cpu(req.zone);
        req.padding1 = le32_to_cpu(req.padding1);
        req.frame = le64_to_cpu(req.frame);
        trace_virtio_llfree_balloon_install_request(req.zone, req.order,
                                                    req.frame);
        status = vlb_install_with_bql(s, &req, &populated);
        trace_virtio_llfree_balloon_install_result(req.zone, req.frame,
                                                   status, populated);
        qatomic_inc(&s->installs);
        /*
         * Install queues have no interrupts: the driver busy-polls, and this
         * may run in an IOThread. Only the used ring is updated.
         */
        vlb_respond(vdev, vq, elem, status, populated, false);
    }
}

/* Events ------------------------------------------------------------------- */

static void vlb_handle_event(VirtIODevice *vdev, VirtQueue *vq)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);
    struct virtio_llfree_balloon_event req;
    VirtQueueElement *elem;

    if (!vlb_driver_ok(vdev)) {
        return;
    }
    while ((elem = vlb_pop(vdev, vq, &req, sizeof(req), "event"))) {
        uint32_t status = VIRTIO_LLFREE_BALLOON_S_OK;
        bool retry = false;

        req.type = le16_to_cpu(req.type);
        req.padding = le16_to_cpu(req.padding);
        req.seq = le32_to_cpu(req.seq);
        req.pages = le64_to_cpu(req.pages);
        trace_virtio_llfree_balloon_event_request(req.type, req.seq,
                                                  req.pages);
        if (req.type != VIRTIO_LLFREE_BALLOON_EVENT_SHRINK_DONE ||
            req.padding ||
            !virtio_vdev_has_feature(
                vdev, VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE)) {
            status = VIRTIO_LLFREE_BALLOON_S_INVALID;
        } else if (s->shrink_pending && req.seq == s->shrink_seq) {
            /*
             * Older answers are ignored (rule O10). A target the balloon
             * falls short of is tried again, whichever request this was.
             */
            s->shrink_pending = false;
            retry = qatomic_read(&s->balloon_children) < s->target_children;
        }
        trace_virtio_llfree_balloon_event_result(status,
                                                 MIN(req.pages,
                                                     s->shrink_pages));
        vlb_respond(vdev, vq, elem, status, 0, true);
        if (retry) {
            vlb_resize_start(s);
        }
    }
}

/* Device ---------------------------------------------------------------- */

static void vlb_get_config(VirtIODevice *vdev, uint8_t *config_data)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);
    struct virtio_llfree_balloon_config config = {
        .version = cpu_to_le32(VIRTIO_LLFREE_BALLOON_VERSION),
        .num_install_queues = cpu_to_le32(s->num_install_queues),
        .max_zones = cpu_to_le32(s->max_zones),
        .balloon_children = cpu_to_le32(qatomic_read(&s->balloon_children)),
        .target_children = cpu_to_le32(s->target_children),
        .soft_children = cpu_to_le32(qatomic_read(&s->soft_children)),
        .shrink_seq = cpu_to_le32(s->shrink_seq),
        .shrink_pages = cpu_to_le32(s->shrink_pages),
    };

    memcpy(config_data, &config, sizeof(config));
}

static uint64_t vlb_get_features(VirtIODevice *vdev, uint64_t features,
                                 Error **errp)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);

    /*
     * Install requests come from inside the guest's page allocator: an
     * indirect table allocation could recurse into it (protocol section 3).
     */
    virtio_clear_feature(&features, VIRTIO_RING_F_INDIRECT_DESC);
    if (s->shrink_pagecache) {
        virtio_add_feature(&features,
                           VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE);
    }
    return features;
}

static int vlb_validate_features(VirtIODevice *vdev)
{
    return virtio_vdev_has_feature(vdev, VIRTIO_F_VERSION_1) ? 0 : -EINVAL;
}

/*
 * Device reset (protocol section 10): stop work (auto mode and a resize
 * pass end between two batches), back every discarded child again for
 * DMA, forget the zones, keep the target. BQL; the transport stopped the
 * install queues' IOThread handlers before.
 */
static void vlb_reset(VirtIODevice *vdev)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);

    trace_virtio_llfree_balloon_reset(qatomic_read(&s->balloon_children),
                                      qatomic_read(&s->soft_children));
    vlb_auto_stop(s);
    vlb_resize_cancel(s);
    for (uint32_t i = 0; i < s->max_zones; i++) {
        VirtIOLLFreeBalloonZone *z = s->zones[i];

        if (!z) {
            continue;
        }
        qatomic_set(&s->zones[i], NULL);
        qemu_mutex_lock(&z->lock);
        qemu_mutex_lock(&s->rdm_lock);
        for (uint64_t c = 0; c < z->children;) {
            uint64_t first = c, n = 0;

            /* Runs of discarded children adjacent in the RAM */
            while (c < z->children && child_state(z, c) != INSTALLED &&
                   z->offset[c] == z->offset[first] + n * CHILD_SIZE) {
                c++;
                n++;
            }
            if (!n) {
                c++;
                continue;
            }
            bitmap_clear(s->discarded, z->offset[first] / CHILD_SIZE, n);
            if (vlb_notify_populate(s, z->offset[first], n * CHILD_SIZE)) {
                error_report("virtio-llfree-balloon: a DMA listener refused "
                             "to map 0x%" PRIx64 "+0x%" PRIx64 " at reset",
                             z->offset[first], n * CHILD_SIZE);
            }
        }
        qemu_mutex_unlock(&s->rdm_lock);
        qemu_mutex_unlock(&z->lock);
        vlb_zone_free(z);
    }
    bitmap_zero(s->claimed, s->nb_blocks);
    qatomic_set(&s->balloon_children, 0);
    qatomic_set(&s->soft_children, 0);
    s->version = 0;
    s->shrink_seq = 0;
    s->shrink_pages = 0;
    s->shrink_rounds = 0;
    s->shrink_pending = false;
    vlb_report_size(s);
}

static void vlb_detach_bh(void *opaque)
{
    VirtQueue *vq = opaque;

    virtio_queue_aio_detach_host_notifier(vq, qemu_get_current_aio_context());
}

static VirtioDeviceClass *vlb_parent_class(void)
{
    return VIRTIO_DEVICE_CLASS(object_class_by_name(TYPE_VIRTIO_DEVICE));
}

/*
 * Host notifiers: the generic code serves every queue in the main loop;
 * install queues mapped to an IOThread then move to its AioContext.
 */
static int vlb_start_ioeventfd(VirtIODevice *vdev)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);
    int ret = vlb_parent_class()->start_ioeventfd(vdev);

    if (ret) {
        return ret;
    }
    for (uint32_t i = 0; i < s->num_install_queues; i++) {
        VirtQueue *vq = s->install_vqs[i];
        EventNotifier *n = virtio_queue_get_host_notifier(vq);
        AioContext *ctx;

        if (!s->install_iothreads[i]) {
            continue;
        }
        ctx = iothread_get_aio_context(s->install_iothreads[i]);
        event_notifier_set_handler(n, NULL);
        aio_context_acquire(ctx);
        virtio_queue_aio_attach_host_notifier(vq, ctx);
        aio_context_release(ctx);
        /* Requests queued before the move */
        event_notifier_set(n);
    }
    return 0;
}

static void vlb_stop_ioeventfd(VirtIODevice *vdev)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(vdev);

    for (uint32_t i = 0; i < s->num_install_queues; i++) {
        AioContext *ctx;

        if (!s->install_iothreads[i]) {
            continue;
        }
        /* In the IOThread itself: no install is in progress afterwards */
        ctx = iothread_get_aio_context(s->install_iothreads[i]);
        aio_context_acquire(ctx);
        aio_wait_bh_oneshot(ctx, vlb_detach_bh, s->install_vqs[i]);
        aio_context_release(ctx);
    }
    vlb_parent_class()->stop_ioeventfd(vdev);
}

/*
 * Resolves the iothread-vq-mapping property into one IOThread (or NULL)
 * per install queue. No side effects; the caller takes the references.
 */
static IOThread **vlb_map_install_queues(VirtIOLLFreeBalloon *s,
                                         uint32_t nvqs, Error **errp)
{
    const char *prop = VIRTIO_LLFREE_BALLOON_IOTHREAD_VQ_MAPPING_PROP;
    g_autofree IOThread **map = g_new0(IOThread *, nvqs);
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    IOThreadVirtQueueMappingList *node;
    uint16List *v;
    bool with_vqs;
    uint32_t i;

    if (!s->iothread_vq_mapping_list) {
        return g_steal_pointer(&map);
    }
    with_vqs = s->iothread_vq_mapping_list->value->has_vqs;
    for (node = s->iothread_vq_mapping_list; node; node = node->next) {
        IOThreadVirtQueueMapping *e = node->value;
        IOThread *iothread = iothread_by_id(e->iothread);

        if (!iothread) {
            error_setg(errp, "'%s' property: IOThread '%s' not found", prop,
                       e->iothread);
            return NULL;
        }
        if (!g_hash_table_add(seen, e->iothread)) {
            error_setg(errp, "'%s' property: IOThread '%s' is listed more "
                       "than once", prop, e->iothread);
            return NULL;
        }
        if (e->has_vqs != with_vqs) {
            error_setg(errp, "'%s' property: either every entry or no entry "
                       "must have 'vqs'", prop);
            return NULL;
        }
        for (v = e->vqs; with_vqs && v; v = v->next) {
            if (v->value >= nvqs) {
                error_setg(errp, "'%s' property: install queue %u is out of "
                           "range (the device has %u install queues: 0..%u)",
                           prop, v->value, nvqs, nvqs - 1);
                return NULL;
            }
            if (map[v->value]) {
                error_setg(errp, "'%s' property: install queue %u is assigned "
                           "more than once", prop, v->value);
                return NULL;
            }
            map[v->value] = iothread;
        }
    }
    if (with_vqs) {
        for (i = 0; i < nvqs; i++) {
            if (!map[i]) {
                error_setg(errp, "'%s' property: install queue %u is not "
                           "assigned to an IOThread", prop, i);
                return NULL;
            }
        }
    } else {
        /* Round robin over the listed IOThreads */
        node = s->iothread_vq_mapping_list;
        for (i = 0; i < nvqs; i++) {
            map[i] = iothread_by_id(node->value->iothread);
            node = node->next ? node->next : s->iothread_vq_mapping_list;
        }
    }
    return g_steal_pointer(&map);
}

/*
 * x-dma-listener: a RamDiscardListener for tests, standing in for VFIO,
 * whose listeners expect the BQL (they change the container's mappings).
 */
static int vlb_debug_notify_populate(RamDiscardListener *rdl,
                                     MemoryRegionSection *section)
{
    VirtIOLLFreeBalloon *s = container_of(rdl, VirtIOLLFreeBalloon,
                                          debug_rdl);

    if (!qemu_mutex_iothread_locked()) {
        error_report("virtio-llfree-balloon: x-dma-listener: populate "
                     "without the BQL");
        abort();
    }
    qatomic_add(&s->debug_populates, int128_get64(section->size));
    return 0;
}

static void vlb_debug_notify_discard(RamDiscardListener *rdl,
                                     MemoryRegionSection *section)
{
    VirtIOLLFreeBalloon *s = container_of(rdl, VirtIOLLFreeBalloon,
                                          debug_rdl);

    if (!qemu_mutex_iothread_locked()) {
        error_report("virtio-llfree-balloon: x-dma-listener: discard "
                     "without the BQL");
        abort();
    }
    qatomic_add(&s->debug_discards, int128_get64(section->size));
}

static void vlb_debug_listener_register(VirtIOLLFreeBalloon *s)
{
    MemoryRegionSection section = {
        .mr = s->ram,
        .offset_within_region = 0,
        .size = int128_make64(s->ram_size),
    };

    ram_discard_listener_init(&s->debug_rdl, vlb_debug_notify_populate,
                              vlb_debug_notify_discard, false);
    ram_discard_manager_register_listener(RAM_DISCARD_MANAGER(s),
                                          &s->debug_rdl, &section);
}

static void vlb_realize(DeviceState *dev, Error **errp)
{
    MachineState *ms = MACHINE(qdev_get_machine());
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(dev);
    g_autofree IOThread **iothreads = NULL;
    uint32_t nvqs = ms->smp.max_cpus;
    AioContext *auto_ctx;

    /* Validate everything before any side effect */
#ifdef CONFIG_TCG
    /*
     * The guest's compare-and-swap on the shared words must be atomic with
     * respect to the device's threads. TCG emits host atomics for guest
     * atomics only in translation blocks with CF_PARALLEL, which
     * tcg_cpu_init_cflags() sets only for MTTCG with max_cpus > 1
     * (accel/tcg/tcg-accel-ops-mttcg.c); round-robin TCG uses plain
     * load/compare/store.
     */
    if (tcg_enabled() && (!qemu_tcg_mttcg_enabled() || ms->smp.max_cpus < 2)) {
        error_setg(errp, "virtio-llfree-balloon needs the guest's atomic "
                   "operations to be host atomics: under TCG use "
                   "-accel tcg,thread=multi and -smp N,maxcpus>=2");
        return;
    }
#endif
    if (!s->auto_mode_interval) {
        error_setg(errp, "'%s' property must be greater than 0 (ms)",
                   VIRTIO_LLFREE_BALLOON_AUTO_MODE_INTERVAL_PROP);
        return;
    }
    if (s->cache_trim > 100) {
        error_setg(errp, "'%s' property must be a percentage (0 to 100)",
                   VIRTIO_LLFREE_BALLOON_CACHE_TRIM_PROP);
        return;
    }
    if (s->cache_trim && (!s->auto_mode || !s->shrink_pagecache)) {
        error_setg(errp, "'%s' needs '%s=on' and '%s=on'",
                   VIRTIO_LLFREE_BALLOON_CACHE_TRIM_PROP,
                   VIRTIO_LLFREE_BALLOON_AUTO_MODE_PROP,
                   VIRTIO_LLFREE_BALLOON_SHRINK_PAGECACHE_PROP);
        return;
    }
    if (!s->step_children) {
        error_setg(errp, "'%s' property must be greater than 0",
                   VIRTIO_LLFREE_BALLOON_STEP_CHILDREN_PROP);
        return;
    }
    if (!ms->ram || !memory_region_is_ram(ms->ram) ||
        memory_region_is_rom(ms->ram) || !ms->ram->ram_block) {
        error_setg(errp, "virtio-llfree-balloon needs the machine's RAM in "
                   "one RAM memory region (not NUMA nodes with separate "
                   "memdevs)");
        return;
    }
    if (memory_region_has_ram_discard_manager(ms->ram)) {
        error_setg(errp, "the machine's RAM is already managed by another "
                   "device (only one virtio-llfree-balloon per VM)");
        return;
    }
    if (enable_mlock) {
        error_setg(errp, "virtio-llfree-balloon is incompatible with mlock");
        return;
    }
    if (ram_block_discard_is_disabled()) {
        error_setg(errp, "discarding RAM is disabled; create "
                   "virtio-llfree-balloon before any vfio-pci device");
        return;
    }
    if (nvqs < 1 ||
        nvqs > VIRTIO_QUEUE_MAX - VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE) {
        error_setg(errp, "virtio-llfree-balloon supports at most %d vCPUs",
                   VIRTIO_QUEUE_MAX - VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE);
        return;
    }
    iothreads = vlb_map_install_queues(s, nvqs, errp);
    if (!iothreads) {
        return;
    }
    if (s->iothread_vq_mapping_list &&
        !virtio_device_ioeventfd_enabled(vdev)) {
        /* Without host notifiers every queue runs in the vCPU thread */
        error_setg(errp, "'%s' property needs ioeventfd (the transport has "
                   "it off, e.g. ioeventfd=off)",
                   VIRTIO_LLFREE_BALLOON_IOTHREAD_VQ_MAPPING_PROP);
        return;
    }

    /* Side effects, undone in reverse on failure */
    if (ram_block_coordinated_discard_require(true)) {
        error_setg(errp, "discarding RAM is disabled");
        return;
    }
    error_setg(&s->migration_blocker, "virtio-llfree-balloon does not "
               "support migration (protocol version 1)");
    if (migrate_add_blocker(s->migration_blocker, errp) < 0) {
        error_free(s->migration_blocker);
        s->migration_blocker = NULL;
        ram_block_coordinated_discard_require(false);
        return;
    }

    s->ram = ms->ram;
    s->rb = ms->ram->ram_block;
    s->ram_size = memory_region_size(ms->ram);
    s->nb_blocks = DIV_ROUND_UP(s->ram_size, CHILD_SIZE);
    s->discarded = bitmap_new(s->nb_blocks);
    s->claimed = bitmap_new(s->nb_blocks);
    s->nb_numa_nodes = ms->numa_state ? ms->numa_state->num_nodes : 0;
    s->max_zones = VLB_ZONE_TYPES * MAX(s->nb_numa_nodes, 1);
    s->zones = g_new0(VirtIOLLFreeBalloonZone *, s->max_zones);
    s->num_install_queues = nvqs;
    s->install_iothreads = g_steal_pointer(&iothreads);
    for (uint32_t i = 0; i < nvqs; i++) {
        if (s->install_iothreads[i]) {
            object_ref(OBJECT(s->install_iothreads[i]));
        }
    }
    qemu_mutex_init(&s->rdm_lock);
    qemu_mutex_init(&s->auto_lock);
    auto_ctx = s->auto_mode_iothread ?
               iothread_get_aio_context(s->auto_mode_iothread) :
               qemu_get_aio_context();
    s->auto_timer = aio_timer_new(auto_ctx, QEMU_CLOCK_VIRTUAL, SCALE_MS,
                                  vlb_auto_cb, s);
    /*
     * The reentrancy guard is a plain flag of the device: a bottom half in
     * an IOThread must not set it while a vCPU accesses the device, and
     * auto mode never does MMIO. Main-loop bottom halves use it.
     */
    s->auto_bh = aio_bh_new_guarded(auto_ctx, vlb_auto_cb, s,
                                    s->auto_mode_iothread ? NULL :
                                    &dev->mem_reentrancy_guard);
    if (s->auto_mode_iothread) {
        s->auto_main_bh = qemu_bh_new_guarded(vlb_auto_main_cb, s,
                                              &dev->mem_reentrancy_guard);
    }
    if (s->cache_trim) {
        s->trim_timer = timer_new_ms(QEMU_CLOCK_VIRTUAL, vlb_trim_cb, s);
    }
    s->resize_bh = qemu_bh_new_guarded(vlb_resize_bh, s,
                                       &dev->mem_reentrancy_guard);

    virtio_init(vdev, VIRTIO_ID_LLFREE_BALLOON,
                sizeof(struct virtio_llfree_balloon_config));
    s->zone_vq = virtio_add_queue(vdev, VLB_ZONE_QUEUE_SIZE, vlb_handle_zone);
    s->event_vq = virtio_add_queue(vdev, VLB_EVENT_QUEUE_SIZE,
                                   vlb_handle_event);
    s->install_vqs = g_new0(VirtQueue *, nvqs);
    for (uint32_t i = 0; i < nvqs; i++) {
        s->install_vqs[i] = virtio_add_queue(vdev, VLB_INSTALL_QUEUE_SIZE,
                                             vlb_handle_install);
    }

    /*
     * The device is the RamDiscardManager of the boot RAM, which is mapped
     * already: VFIO, created later, then maps only backed ranges.
     */
    memory_region_set_ram_discard_manager(s->ram, RAM_DISCARD_MANAGER(s));
    if (s->debug_listener) {
        vlb_debug_listener_register(s);
    }
}

static void vlb_unrealize(DeviceState *dev)
{
    VirtIODevice *vdev = VIRTIO_DEVICE(dev);
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(dev);

    /* Backs everything again and forgets the zones */
    vlb_reset(vdev);
    if (s->debug_listener) {
        ram_discard_manager_unregister_listener(RAM_DISCARD_MANAGER(s),
                                                &s->debug_rdl);
    }
    memory_region_set_ram_discard_manager(s->ram, NULL);
    for (int i = s->num_install_queues - 1; i >= 0; i--) {
        virtio_del_queue(vdev, VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE + i);
    }
    g_free(s->install_vqs);
    s->install_vqs = NULL;
    virtio_del_queue(vdev, VIRTIO_LLFREE_BALLOON_VQ_EVENT);
    virtio_del_queue(vdev, VIRTIO_LLFREE_BALLOON_VQ_ZONE);
    virtio_cleanup(vdev);
    qemu_bh_delete(s->resize_bh);
    s->resize_bh = NULL;
    if (s->trim_timer) {
        timer_free(s->trim_timer);
        s->trim_timer = NULL;
    }
    if (s->auto_main_bh) {
        qemu_bh_delete(s->auto_main_bh);
        s->auto_main_bh = NULL;
    }
    qemu_bh_delete(s->auto_bh);
    s->auto_bh = NULL;
    timer_free(s->auto_timer);
    s->auto_timer = NULL;
    qemu_mutex_destroy(&s->auto_lock);
    qemu_mutex_destroy(&s->rdm_lock);
    for (uint32_t i = 0; i < s->num_install_queues; i++) {
        if (s->install_iothreads[i]) {
            object_unref(OBJECT(s->install_iothreads[i]));
        }
    }
    g_free(s->install_iothreads);
    s->install_iothreads = NULL;
    s->num_install_queues = 0;
    g_free(s->zones);
    s->zones = NULL;
    s->max_zones = 0;
    g_free(s->claimed);
    s->claimed = NULL;
    g_free(s->discarded);
    s->discarded = NULL;
    migrate_del_blocker(s->migration_blocker);
    error_free(s->migration_blocker);
    s->migration_blocker = NULL;
    ram_block_coordinated_discard_require(false);
}

/* RamDiscardManager ----------------------------------------------------- */

/*
 * The interface passes a const manager; the lock is the only thing these
 * callbacks change.
 */
static QemuMutex *vlb_rdm_lock(const RamDiscardManager *rdm)
{
    return &VIRTIO_LLFREE_BALLOON(rdm)->rdm_lock;
}

static uint64_t vlb_rdm_get_min_granularity(const RamDiscardManager *rdm,
                                            const MemoryRegion *mr)
{
    return CHILD_SIZE;
}

static bool vlb_rdm_is_populated(const RamDiscardManager *rdm,
                                 const MemoryRegionSection *s)
{
    const VirtIOLLFreeBalloon *vlb = VIRTIO_LLFREE_BALLOON(rdm);
    uint64_t first = s->offset_within_region / CHILD_SIZE;
    uint64_t end = DIV_ROUND_UP(s->offset_within_region +
                                int128_get64(s->size), CHILD_SIZE);
    bool populated;

    if (s->mr != vlb->ram) {
        return true;
    }
    end = MIN(end, vlb->nb_blocks);
    qemu_mutex_lock(vlb_rdm_lock(rdm));
    populated = first >= end ||
                find_next_bit(vlb->discarded, end, first) >= end;
    qemu_mutex_unlock(vlb_rdm_lock(rdm));
    return populated;
}

typedef struct VLBReplay {
    void *fn;
    void *opaque;
} VLBReplay;

static int vlb_replay_populated_cb(MemoryRegionSection *s, void *arg)
{
    VLBReplay *data = arg;

    return ((ReplayRamPopulate)data->fn)(s, data->opaque);
}

static int vlb_rdm_replay_populated(const RamDiscardManager *rdm,
                                    MemoryRegionSection *s,
                                    ReplayRamPopulate replay_fn,
                                    void *opaque)
{
    VLBReplay data = { .fn = replay_fn, .opaque = opaque };
    int ret;

    qemu_mutex_lock(vlb_rdm_lock(rdm));
    ret = vlb_for_each_section(VIRTIO_LLFREE_BALLOON(rdm), s, false,
                               vlb_replay_populated_cb, &data);
    qemu_mutex_unlock(vlb_rdm_lock(rdm));
    return ret;
}

static int vlb_replay_discarded_cb(MemoryRegionSection *s, void *arg)
{
    VLBReplay *data = arg;

    ((ReplayRamDiscard)data->fn)(s, data->opaque);
    return 0;
}

static void vlb_rdm_replay_discarded(const RamDiscardManager *rdm,
                                     MemoryRegionSection *s,
                                     ReplayRamDiscard replay_fn,
                                     void *opaque)
{
    VLBReplay data = { .fn = replay_fn, .opaque = opaque };

    qemu_mutex_lock(vlb_rdm_lock(rdm));
    vlb_for_each_section(VIRTIO_LLFREE_BALLOON(rdm), s, true,
                         vlb_replay_discarded_cb, &data);
    qemu_mutex_unlock(vlb_rdm_lock(rdm));
}

static int vlb_notify_populate_cb(MemoryRegionSection *s, void *arg)
{
    RamDiscardListener *rdl = arg;

    return rdl->notify_populate(rdl, s);
}

static int vlb_notify_discard_cb(MemoryRegionSection *s, void *arg)
{
    RamDiscardListener *rdl = arg;

    rdl->notify_discard(rdl, s);
    return 0;
}

static void vlb_rdm_register_listener(RamDiscardManager *rdm,
                                      RamDiscardListener *rdl,
                                      MemoryRegionSection *s)
{
    VirtIOLLFreeBalloon *vlb = VIRTIO_LLFREE_BALLOON(rdm);
    int ret;

    g_assert(s->mr == vlb->ram);
    /*
     * BQL. From now on IOThreads hand listener work to the main loop;
     * wait for those that started without the BQL (vlb_unlocked_enter()).
     * They hold no lock the caller holds and finish within one install or
     * one auto-mode step.
     */
    qatomic_inc(&vlb->nb_listeners);
    /* Pairs with the one in vlb_unlocked_enter() */
    smp_mb();
    while (qatomic_read(&vlb->unlocked_users)) {
        g_usleep(100);
    }
    qemu_mutex_lock(&vlb->rdm_lock);
    rdl->section = memory_region_section_new_copy(s);
    QLIST_INSERT_HEAD(&vlb->rdl_list, rdl, next);
    ret = vlb_for_each_section(vlb, rdl->section, false,
                               vlb_notify_populate_cb, rdl);
    qemu_mutex_unlock(&vlb->rdm_lock);
    if (ret) {
        error_report("%s: replaying populated ranges failed: %s", __func__,
                     strerror(-ret));
    }
}

static void vlb_rdm_unregister_listener(RamDiscardManager *rdm,
                                        RamDiscardListener *rdl)
{
    VirtIOLLFreeBalloon *vlb = VIRTIO_LLFREE_BALLOON(rdm);

    g_assert(rdl->section->mr == vlb->ram);
    qemu_mutex_lock(&vlb->rdm_lock);
    if (rdl->double_discard_supported) {
        rdl->notify_discard(rdl, rdl->section);
    } else {
        vlb_for_each_section(vlb, rdl->section, false, vlb_notify_discard_cb,
                             rdl);
    }
    memory_region_section_free_copy(rdl->section);
    rdl->section = NULL;
    QLIST_REMOVE(rdl, next);
    qemu_mutex_unlock(&vlb->rdm_lock);
    /* BQL; nothing calls the listener any more */
    qatomic_dec(&vlb->nb_listeners);
}

/* QMP ------------------------------------------------------------------- */

static VirtIOLLFreeBalloon *vlb_find(Error **errp)
{
    Object *obj = object_resolve_path_type("", TYPE_VIRTIO_LLFREE_BALLOON,
                                           NULL);

    if (!obj || !DEVICE(obj)->realized) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
                  "No llfree balloon device has been activated");
        return NULL;
    }
    return VIRTIO_LLFREE_BALLOON(obj);
}

void qmp_llfree_balloon(int64_t value, Error **errp)
{
    VirtIOLLFreeBalloon *s = vlb_find(errp);
    uint64_t vm_size;

    if (!s) {
        return;
    }
    if (value <= 0) {
        error_setg(errp, "Parameter 'value' must be a positive size in "
                   "bytes");
        return;
    }
    if ((uint64_t)value > s->ram_size) {
        error_setg(errp, "Parameter 'value' exceeds the RAM size of the VM "
                   "(%" PRIu64 " bytes)", s->ram_size);
        return;
    }
    if (!vlb_has_zones(s)) {
        error_setg(errp, "guest driver not ready: it has not registered its "
                   "memory with virtio-llfree-balloon yet");
        return;
    }
    /* Round the VM size up: the VM never gets smaller than asked */
    vm_size = ROUND_UP((uint64_t)value, CHILD_SIZE);
    s->target_children = vm_size < s->ram_size ?
                         (s->ram_size - vm_size) / CHILD_SIZE : 0;
    s->shrink_rounds = 0;
    trace_virtio_llfree_balloon_set_target(value, s->target_children);
    /* Asynchronous: query-llfree-balloon shows @resizing until it is done */
    vlb_resize_start(s);
}

LLFreeBalloonInfo *qmp_query_llfree_balloon(Error **errp)
{
    VirtIOLLFreeBalloon *s = vlb_find(errp);
    LLFreeBalloonInfo *info;
    uint64_t balloon;

    if (!s) {
        return NULL;
    }
    balloon = qatomic_read(&s->balloon_children) * CHILD_SIZE;
    info = g_new0(LLFreeBalloonInfo, 1);
    info->actual = s->ram_size - balloon;
    info->target = s->ram_size - s->target_children * CHILD_SIZE;
    info->balloon = balloon;
    info->soft = qatomic_read(&s->soft_children) * CHILD_SIZE;
    info->installs = qatomic_read(&s->installs);
    info->resizing = s->resizing;
    return info;
}

/* Properties ------------------------------------------------------------ */

static void vlb_get_iothread_vq_mapping(Object *obj, Visitor *v,
                                        const char *name, void *opaque,
                                        Error **errp)
{
    IOThreadVirtQueueMappingList **ptr = object_field_prop_ptr(obj, opaque);
    IOThreadVirtQueueMappingList *list = *ptr;

    visit_type_IOThreadVirtQueueMappingList(v, name, &list, errp);
}

static void vlb_set_iothread_vq_mapping(Object *obj, Visitor *v,
                                        const char *name, void *opaque,
                                        Error **errp)
{
    IOThreadVirtQueueMappingList **ptr = object_field_prop_ptr(obj, opaque);
    IOThreadVirtQueueMappingList *list;

    if (!visit_type_IOThreadVirtQueueMappingList(v, name, &list, errp)) {
        return;
    }
    qapi_free_IOThreadVirtQueueMappingList(*ptr);
    *ptr = list;
}

static void vlb_release_iothread_vq_mapping(Object *obj, const char *name,
                                            void *opaque)
{
    IOThreadVirtQueueMappingList **ptr = object_field_prop_ptr(obj, opaque);

    qapi_free_IOThreadVirtQueueMappingList(*ptr);
    *ptr = NULL;
}

static const PropertyInfo vlb_prop_iothread_vq_mapping = {
    .name = "IOThreadVirtQueueMappingList",
    .description = "IOThread mapping of the install queues, JSON: "
                   "[{\"iothread\":\"<id>\", \"vqs\":[0,1,...]},...]",
    .get = vlb_get_iothread_vq_mapping,
    .set = vlb_set_iothread_vq_mapping,
    .release = vlb_release_iothread_vq_mapping,
};

static Property vlb_properties[] = {
    DEFINE_PROP_BOOL(VIRTIO_LLFREE_BALLOON_AUTO_MODE_PROP,
                     VirtIOLLFreeBalloon, auto_mode, true),
    DEFINE_PROP_UINT32(VIRTIO_LLFREE_BALLOON_AUTO_MODE_INTERVAL_PROP,
                       VirtIOLLFreeBalloon, auto_mode_interval, 5000),
    DEFINE_PROP_LINK(VIRTIO_LLFREE_BALLOON_AUTO_MODE_IOTHREAD_PROP,
                     VirtIOLLFreeBalloon, auto_mode_iothread, TYPE_IOTHREAD,
                     IOThread *),
    DEFINE_PROP_BOOL(VIRTIO_LLFREE_BALLOON_SHRINK_PAGECACHE_PROP,
                     VirtIOLLFreeBalloon, shrink_pagecache, false),
    DEFINE_PROP_UINT8(VIRTIO_LLFREE_BALLOON_CACHE_TRIM_PROP,
                      VirtIOLLFreeBalloon, cache_trim, 0),
    DEFINE_PROP(VIRTIO_LLFREE_BALLOON_IOTHREAD_VQ_MAPPING_PROP,
                VirtIOLLFreeBalloon, iothread_vq_mapping_list,
                vlb_prop_iothread_vq_mapping,
                IOThreadVirtQueueMappingList *),
    DEFINE_PROP_BOOL(VIRTIO_LLFREE_BALLOON_DEBUG_LISTENER_PROP,
                     VirtIOLLFreeBalloon, debug_listener, false),
    DEFINE_PROP_UINT32(VIRTIO_LLFREE_BALLOON_STEP_CHILDREN_PROP,
                       VirtIOLLFreeBalloon, step_children,
                       VLB_STEP_CHILDREN),
    DEFINE_PROP_END_OF_LIST(),
};

static const VMStateDescription vmstate_vlb = {
    .name = "virtio-llfree-balloon",
    .unmigratable = 1,
};

static void vlb_instance_init(Object *obj)
{
    VirtIOLLFreeBalloon *s = VIRTIO_LLFREE_BALLOON(obj);

    QLIST_INIT(&s->rdl_list);
    object_property_add_uint64_ptr(obj, "x-dma-listener-populated",
                                   &s->debug_populates, OBJ_PROP_FLAG_READ);
    object_property_add_uint64_ptr(obj, "x-dma-listener-discarded",
                                   &s->debug_discards, OBJ_PROP_FLAG_READ);
}

static void vlb_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioDeviceClass *vdc = VIRTIO_DEVICE_CLASS(klass);
    RamDiscardManagerClass *rdmc = RAM_DISCARD_MANAGER_CLASS(klass);

    device_class_set_props(dc, vlb_properties);
    dc->vmsd = &vmstate_vlb;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    vdc->realize = vlb_realize;
    vdc->unrealize = vlb_unrealize;
    vdc->get_config = vlb_get_config;
    vdc->get_features = vlb_get_features;
    vdc->validate_features = vlb_validate_features;
    vdc->reset = vlb_reset;
    vdc->start_ioeventfd = vlb_start_ioeventfd;
    vdc->stop_ioeventfd = vlb_stop_ioeventfd;

    rdmc->get_min_granularity = vlb_rdm_get_min_granularity;
    rdmc->is_populated = vlb_rdm_is_populated;
    rdmc->replay_populated = vlb_rdm_replay_populated;
    rdmc->replay_discarded = vlb_rdm_replay_discarded;
    rdmc->register_listener = vlb_rdm_register_listener;
    rdmc->unregister_listener = vlb_rdm_unregister_listener;
}

static const TypeInfo vlb_info = {
    .name = TYPE_VIRTIO_LLFREE_BALLOON,
    .parent = TYPE_VIRTIO_DEVICE,
    .instance_size = sizeof(VirtIOLLFreeBalloon),
    .instance_init = vlb_instance_init,
    .class_init = vlb_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_RAM_DISCARD_MANAGER },
        { }
    },
};

static void vlb_register_types(void)
{
    type_register_static(&vlb_info);
}

type_init(vlb_register_types)
