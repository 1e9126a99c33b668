/*
 * virtio-llfree-balloon: VM memory de/inflation through the guest's shared
 * page-frame allocator (llfree)
 *
 * Copyright (C) 2025 The HyperAlloc authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 *
 * Wire protocol: include/standard-headers/linux/virtio_llfree_balloon.h
 * (generated from the guest kernel's uapi header) and docs/protocol.md.
 *
 * Locking, outermost first:
 *
 *   BQL          zone registration, resize (a bottom half in the main
 *                loop), events, reset, config, RamDiscardListener calls
 *   auto_lock    one step of an auto-mode pass; reset takes it to stop
 *                auto mode
 *   zone->lock   llfree transitions of the zone, with the discards and
 *                populates that belong to them (protocol rule O8)
 *   rdm_lock     the discard bitmap and the RamDiscardListener list
 *
 * Install requests run in the AioContext of their queue (an IOThread, or
 * the main loop) and take only zone->lock and rdm_lock; auto mode runs in
 * its IOThread or the main loop. RamDiscardListeners (VFIO) are only ever
 * called with the BQL held: while one is registered, the IOThreads hand
 * installs and auto-mode steps to the main loop (see vlb_unlocked_enter()).
 */

#ifndef HW_VIRTIO_LLFREE_BALLOON_H
#define HW_VIRTIO_LLFREE_BALLOON_H

#include "standard-headers/linux/virtio_llfree_balloon.h"
#include "hw/virtio/virtio.h"
#include "qapi/qapi-types-virtio.h"
#include "qemu/thread.h"
#include "sysemu/iothread.h"
#include "qom/object.h"
#include "llfree/llfree.h"

#define TYPE_VIRTIO_LLFREE_BALLOON "virtio-llfree-balloon-device"

OBJECT_DECLARE_SIMPLE_TYPE(VirtIOLLFreeBalloon, VIRTIO_LLFREE_BALLOON)

/* Property names, also used in error messages */
#define VIRTIO_LLFREE_BALLOON_AUTO_MODE_PROP "auto-mode"
#define VIRTIO_LLFREE_BALLOON_AUTO_MODE_INTERVAL_PROP "auto-mode-interval"
#define VIRTIO_LLFREE_BALLOON_AUTO_MODE_IOTHREAD_PROP "auto-mode-iothread"
#define VIRTIO_LLFREE_BALLOON_SHRINK_PAGECACHE_PROP "shrink-pagecache"
#define VIRTIO_LLFREE_BALLOON_CACHE_TRIM_PROP "auto-mode-cache-trim"
#define VIRTIO_LLFREE_BALLOON_IOTHREAD_VQ_MAPPING_PROP "iothread-vq-mapping"
#define VIRTIO_LLFREE_BALLOON_DEBUG_LISTENER_PROP "x-dma-listener"
#define VIRTIO_LLFREE_BALLOON_STEP_CHILDREN_PROP "x-step-children"

/* Size of a child, the unit of reclaim, discard and install: 2 MiB */
#define VIRTIO_LLFREE_BALLOON_CHILD_SIZE \
    ((uint64_t)VIRTIO_LLFREE_BALLOON_CHILD_FRAMES * 4096)

/*
 * The device's own state of one child, authoritative for every discard,
 * populate, DMA notification and counter update (protocol rule O9). The low
 * two bits are the state; PINNED marks children the device never reclaims,
 * FREE_SEEN installed children auto mode saw entirely free at its last pass.
 */
typedef enum VirtIOLLFreeBalloonChildState {
    /* Backed; the guest may allocate it */
    VIRTIO_LLFREE_BALLOON_CHILD_INSTALLED = 0,
    /* Discarded, not in the balloon; the guest installs it before use */
    VIRTIO_LLFREE_BALLOON_CHILD_SOFT = 1,
    /* Discarded and in the balloon */
    VIRTIO_LLFREE_BALLOON_CHILD_HARD = 2,
} VirtIOLLFreeBalloonChildState;

#define VIRTIO_LLFREE_BALLOON_CHILD_STATE_MASK 0x3
/* Not entirely in boot RAM, or holds a registered array or counter */
#define VIRTIO_LLFREE_BALLOON_CHILD_PINNED 0x4
/*
 * Auto mode saw the child installed and entirely free at its last pass: it
 * is soft-reclaimed if still free at the next one. A hint about guest
 * memory, cleared by every state change.
 */
#define VIRTIO_LLFREE_BALLOON_CHILD_FREE_SEEN 0x8

/* A contiguous piece of guest-physical space backed by the machine's RAM */
typedef struct VirtIOLLFreeBalloonRamRange {
    uint64_t gpa;
    uint64_t size;
    /* Offset of @gpa in the machine's RAM memory region */
    uint64_t offset;
} VirtIOLLFreeBalloonRamRange;

/* One registered llfree instance (guest zone) */
typedef struct VirtIOLLFreeBalloonZone {
    /*
     * Set at registration, constant until the zone is freed at reset
     * (when no handler, timer or resize can run any more).
     */
    uint16_t id;
    /* VIRTIO_LLFREE_BALLOON_ZONE_* */
    uint8_t type;
    uint16_t node;
    uint32_t cores;
    uint64_t base_pfn;
    uint64_t frames;
    /* Complete children: frames / 512 */
    uint64_t children;
    /* Registered guest-physical ranges of the arrays and counters */
    uint64_t trees_gpa, trees_len, lower_gpa, lower_len;
    uint64_t free_pages_gpa, global_free_pages_gpa, file_pages_gpa;
    /* Host views of the counters (8-byte aligned, in boot RAM) */
    int64_t *free_pages;
    int64_t *global_free_pages;
    int64_t *file_pages;
    /* The device's private llfree local state (LLFREE_ALIGN aligned) */
    void *local;
    /* Per child: offset in the machine's RAM, valid unless PINNED */
    uint64_t *offset;
    /* Children that may ever be reclaimed (not PINNED) */
    uint64_t reclaimable;

    /* Serialises reclaim + discard with install (O8); guards the rest */
    QemuMutex lock;
    /* llfree attached to the guest's arrays; transitions under @lock */
    llfree_t llfree;
    /* Per child: VirtIOLLFreeBalloonChildState | PINNED | FREE_SEEN */
    uint8_t *state;
    /* Children in state HARD and SOFT */
    uint64_t hard;
    uint64_t soft;
    /* Frame where the next hard reclaim search starts */
    uint64_t hard_cursor;
    /* Child auto mode looks at next */
    uint64_t soft_cursor;

    /* The running resize pass (BQL) */
    /* Reclaim searches left; 0: the zone has nothing more to give */
    uint64_t hard_attempts;
    /* PINNED children the search took; given back when the search ends */
    GArray *hard_pinned;
    /* Next child the return scan looks at, and how many it may still */
    uint64_t return_cursor;
    uint64_t return_left;

    /* The running auto-mode pass (auto_lock): children it may still look at */
    uint64_t soft_left;
    /* Children soft-reclaimed in this pass */
    uint64_t soft_taken;
} VirtIOLLFreeBalloonZone;

struct VirtIOLLFreeBalloon {
    VirtIODevice parent_obj;

    /* Properties: set before realize, constant afterwards */
    bool auto_mode;
    uint32_t auto_mode_interval;
    IOThread *auto_mode_iothread;
    bool shrink_pagecache;
    /* Percent of the guest's page cache auto mode asks it to drop per period */
    uint8_t cache_trim;
    IOThreadVirtQueueMappingList *iothread_vq_mapping_list;
    /* Children per step of a resize or auto-mode pass (at least 1) */
    uint32_t step_children;
    /*
     * x-dma-listener (tests): a RamDiscardListener like VFIO's that
     * checks the BQL and counts notifications in @debug_populates and
     * @debug_discards (qatomic)
     */
    bool debug_listener;
    RamDiscardListener debug_rdl;
    uint64_t debug_populates;
    uint64_t debug_discards;

    /* Set at realize, constant until unrealize */
    VirtQueue *zone_vq;
    VirtQueue *event_vq;
    uint32_t num_install_queues;
    VirtQueue **install_vqs;
    /* Per install queue: its IOThread (referenced) or NULL (main loop) */
    IOThread **install_iothreads;
    uint32_t max_zones;
    uint32_t nb_numa_nodes;
    /* The machine's boot RAM: the only memory the device reclaims */
    MemoryRegion *ram;
    RAMBlock *rb;
    uint64_t ram_size;
    /* Bits in @discarded: one per 2 MiB of @ram */
    uint64_t nb_blocks;
    Error *migration_blocker;
    /* Auto-mode timer, in the auto-mode IOThread's AioContext or main loop */
    QEMUTimer *auto_timer;
    /* Next step of an auto-mode pass, in the same AioContext as the timer */
    QEMUBH *auto_bh;
    /* With an auto-mode IOThread: a step handed to the main loop, or NULL */
    QEMUBH *auto_main_bh;
    /* Next step of the resize pass, in the main loop */
    QEMUBH *resize_bh;
    /* Auto mode's page-cache trim (@cache_trim > 0), in the main loop */
    QEMUTimer *trim_timer;

    /* BQL */
    /* Registered zones by id; NULL if not registered (see below) */
    VirtIOLLFreeBalloonZone **zones;
    /* Protocol version of the registered zones, 0 if none */
    uint16_t version;
    /*
     * One bit per 2 MiB of @ram: claimed by a reclaimable child of a
     * registered zone (so no two children share memory)
     */
    unsigned long *claimed;
    /* Balloon target in children; survives reset */
    uint64_t target_children;
    /* Config fields shrink_seq and shrink_pages */
    uint32_t shrink_seq;
    uint32_t shrink_pages;
    /* Shrink requests sent for the current target */
    unsigned shrink_rounds;
    /* A shrink request is waiting for its SHRINK_DONE */
    bool shrink_pending;
    /* Balloon size last reported by LLFREE_BALLOON_CHANGE */
    uint64_t reported_children;
    /* A resize pass is running (@resize_bh scheduled or running) */
    bool resizing;
    /* RamDiscardListeners registered; also qatomic for the IOThreads */
    unsigned nb_listeners;

    /*
     * zones[] entries are written under the BQL: published with release
     * order once a zone is complete, read with acquire order by install
     * handlers and auto mode, and cleared only at reset after both are
     * stopped.
     */

    /* Held for one step of an auto-mode pass; guards the fields below */
    QemuMutex auto_lock;
    /*
     * Auto mode runs (and re-arms its timer) only while set. Written under
     * the BQL (qatomic); vlb_auto_stop() clears it before taking auto_lock
     * and a running step polls it between batches.
     */
    bool auto_enabled;
    /* A pass is running: the timer is idle, @auto_bh carries it on */
    bool auto_in_pass;
    /* Zone id the running pass works on */
    uint32_t auto_zone;

    /*
     * IOThread code running without the BQL that may reach a listener
     * call (qatomic); a listener registers only once it is 0.
     */
    unsigned unlocked_users;

    /* Statistics, qatomic: children HARD and SOFT over all zones */
    uint64_t balloon_children;
    uint64_t soft_children;
    /* Install requests answered, qatomic */
    uint64_t installs;

    /* rdm_lock guards @discarded and @rdl_list */
    QemuMutex rdm_lock;
    /* One bit per 2 MiB of @ram: set while discarded (SOFT or HARD) */
    unsigned long *discarded;
    QLIST_HEAD(, RamDiscardListener) rdl_list;
};

#endif
