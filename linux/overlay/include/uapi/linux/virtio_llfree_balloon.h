/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio-llfree-balloon: VM memory de/inflation through a page-frame
 * allocator shared between the guest kernel and the hypervisor.
 *
 * Copyright (C) 2025 The HyperAlloc authors
 *
 * This header is the single definition of the wire protocol, shared by the
 * Linux driver (drivers/virtio/virtio_llfree_balloon.c) and the QEMU device
 * (hw/virtio/virtio-llfree-balloon.c), which imports it into
 * include/standard-headers/linux/ with scripts/update-linux-headers.sh.
 * Prose, tables and walkthroughs: docs/protocol.md.
 *
 * Theory of operation
 * ===================
 *
 * The guest allocates page frames with llfree (llfree/include/llfree/llfree.h).
 * Every populated zone has one llfree instance whose shared state, the
 * `trees` and `lower` arrays, lives in guest RAM allocated from memblock.
 * The arrays hold only little-endian 16-bit atomic words (and the 64-bit
 * bitfield words before the children in `lower`); there are no pointers,
 * so the host maps them through its own view of guest RAM and runs the
 * same compare-and-swap transitions as the guest.
 *
 * Each 2 MiB child is in one of three states:
 *
 *   installed       reclaimed = 0                backed, guest may allocate
 *   soft-reclaimed  free 512, !huge, reclaimed   discarded, guest may allocate
 *                                                after an install request
 *   hard-reclaimed  free 0, huge, reclaimed      discarded, looks allocated:
 *                                                this is the balloon
 *
 * At probe the driver registers every llfree instance on the zone queue
 * (queue 0): geometry, the guest-physical addresses of the arrays, and of
 * the counters the host keeps consistent. From then on the host, without
 * running any guest code:
 *
 *   - inflates: hard-reclaims fully free children (tree free count -512,
 *     child -> hard), subtracts 512 from the zone and global NR_FREE_PAGES
 *     counters, and discards the backing memory;
 *   - deflates: turns hard children back into soft ones and adds 512 to
 *     the counters; the memory stays discarded until it is used;
 *   - optionally (host policy) soft-reclaims fully free children of
 *     unreserved trees and discards them; counters do not change.
 *
 * When a guest allocation wins a child whose reclaimed bit is set, the
 * guest sends an install request on its CPU's install queue (queues
 * 2 .. 2 + N - 1) and busy-waits for the response. The host populates the
 * memory (and maps it for DMA), then clears the reclaimed bit, then
 * answers. The guest touches the memory only after an OK response.
 *
 * When hard reclaim falls short of the target the host may, with
 * VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE, ask the guest through the
 * config space to drop page cache; the guest answers on the event queue
 * (queue 1).
 *
 * Every request on every queue is one descriptor chain: a device-readable
 * part holding exactly one request structure, followed by a device-writable
 * part of at least sizeof(struct virtio_llfree_balloon_resp) bytes. A chain
 * that does not have this shape is malformed and breaks the device
 * (DEVICE_NEEDS_RESET); a well-formed request with bad content gets an
 * error status. The host never trusts the shared arrays or counters: all
 * guest memory is guest-writable.
 *
 * All multi-byte fields are little-endian. VIRTIO_F_VERSION_1 is required;
 * the device has no legacy interface. Addresses in messages are
 * guest-physical addresses (GPA), never IOVAs, even if
 * VIRTIO_F_ACCESS_PLATFORM is negotiated. Frame numbers count 4 KiB frames.
 *
 * Both sides check the layouts at build time, e.g.
 *   BUILD_BUG_ON(sizeof(struct virtio_llfree_balloon_zone) !=
 *                VIRTIO_LLFREE_BALLOON_ZONE_SIZE);
 * and check the llfree constants this protocol relies on against llfree.h:
 *   VIRTIO_LLFREE_BALLOON_CHILD_ORDER == LLFREE_HUGE_ORDER,
 *   VIRTIO_LLFREE_BALLOON_META_ALIGN == LLFREE_ALIGN.
 *
 * Note for QEMU's header import: its sed script rewrites every lowercase
 * "u" directly followed by digits into a uint type, anywhere in the file;
 * keep such sequences out of names and comments.
 */
#ifndef _LINUX_VIRTIO_LLFREE_BALLOON_H
#define _LINUX_VIRTIO_LLFREE_BALLOON_H

#include <linux/types.h>
#include <linux/virtio_config.h>

/*
 * Device ID. Not yet assigned by the virtio TC: 56 is unused by the virtio
 * 1.3 spec (which allocates upwards and has not passed the forties) and by
 * the private IDs other VMMs count down from 63. It is below 64, so the
 * modern virtio-pci device ID is 0x1040 + 56 = 0x1078. Defined here, not in
 * virtio_ids.h, so the kernel and QEMU need no edit of shared ID tables.
 */
#define VIRTIO_ID_LLFREE_BALLOON	56

/* Protocol version: message layouts, their semantics, llfree's shared layout */
#define VIRTIO_LLFREE_BALLOON_VERSION	1

/* Feature bits ---------------------------------------------------------- */

/* The device may ask the guest to drop page cache (shrink_* config fields) */
#define VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE	0

/* Constants shared with llfree ------------------------------------------ */

/* A child is 2^9 frames = 2 MiB: the unit of reclaim, discard and install */
#define VIRTIO_LLFREE_BALLOON_CHILD_ORDER	9
#define VIRTIO_LLFREE_BALLOON_CHILD_FRAMES	512
/* Alignment of the trees and lower arrays in guest-physical memory */
#define VIRTIO_LLFREE_BALLOON_META_ALIGN	64
/* Counters are 8-byte signed words (atomic_long_t), naturally aligned */
#define VIRTIO_LLFREE_BALLOON_COUNTER_BYTES	8

/* Virtqueues ------------------------------------------------------------ */

/* Zone registration, driver -> device */
#define VIRTIO_LLFREE_BALLOON_VQ_ZONE		0
/* Events (page cache shrink done), driver -> device */
#define VIRTIO_LLFREE_BALLOON_VQ_EVENT		1
/* First of the num_install_queues install queues */
#define VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE	2

/* Config space ---------------------------------------------------------- */

/*
 * Written by the device only; the driver never writes config space.
 * Every field is 32 bits wide so each read is atomic; read groups of
 * fields with the config generation loop (virtio_cread*).
 */
struct virtio_llfree_balloon_config {
	/* Highest protocol version the device implements (>= 1) */
	__le32 version;
	/* Install queues N >= 1: queues 2 .. 2 + N - 1; fixed until reset */
	__le32 num_install_queues;
	/* Zone ids the device accepts: 0 .. max_zones - 1 (>= 1) */
	__le32 max_zones;
	/* Informational: children now hard-reclaimed (the balloon) */
	__le32 balloon_children;
	/* Informational: balloon size the device aims for, in children */
	__le32 target_children;
	/* Informational: children now soft-reclaimed */
	__le32 soft_children;
	/*
	 * F_SHRINK_PAGECACHE only (read as 0 otherwise): number of the latest
	 * page cache shrink request, 0 = none since reset, then 1, 2, ...
	 * (wrapping from 0xffffffff to 1). Changed together with
	 * shrink_pages, followed by a config change notification.
	 */
	__le32 shrink_seq;
	/* F_SHRINK_PAGECACHE only: 4 KiB pages request shrink_seq asks to drop */
	__le32 shrink_pages;
};

/* Expected sizeof(); both sides assert it */
#define VIRTIO_LLFREE_BALLOON_CONFIG_SIZE	32

/* Common response ------------------------------------------------------- */

/* Status codes, in struct virtio_llfree_balloon_resp.status */
/* Done; install: every child of the block is backed and not reclaimed */
#define VIRTIO_LLFREE_BALLOON_S_OK		0
/* A field is out of range, misaligned, or a reserved field is not zero */
#define VIRTIO_LLFREE_BALLOON_S_INVALID		1
/* Registration: the device does not implement this protocol version */
#define VIRTIO_LLFREE_BALLOON_S_VERSION		2
/* The zone id is not registered */
#define VIRTIO_LLFREE_BALLOON_S_NO_ZONE		3
/* Registration: zone id taken, or frames overlap a registered zone */
#define VIRTIO_LLFREE_BALLOON_S_EXISTS		4
/* Registration: an array or counter is not in non-removable guest RAM */
#define VIRTIO_LLFREE_BALLOON_S_ADDRESS		5
/* Install: a child of the block is in the balloon (hard-reclaimed) */
#define VIRTIO_LLFREE_BALLOON_S_STATE		6
/* Install: the host failed to back the memory; not the guest's fault */
#define VIRTIO_LLFREE_BALLOON_S_HOST		7

/* Written by the device into the device-writable part of every request */
struct virtio_llfree_balloon_resp {
	/* VIRTIO_LLFREE_BALLOON_S_* */
	__le32 status;
	/*
	 * Zone: children of the zone the device may ever reclaim.
	 * Install: children this request populated (0 if all were backed).
	 * Event: 0.
	 */
	__le32 value;
};

/* Expected sizeof(); both sides assert it */
#define VIRTIO_LLFREE_BALLOON_RESP_SIZE		8

/* Zone queue: registration of one llfree instance ----------------------- */

/* Zone types (protocol values, independent of the kernel's enum zone_type) */
#define VIRTIO_LLFREE_BALLOON_ZONE_DMA		0
#define VIRTIO_LLFREE_BALLOON_ZONE_DMA32	1
#define VIRTIO_LLFREE_BALLOON_ZONE_NORMAL	2
#define VIRTIO_LLFREE_BALLOON_ZONE_MOVABLE	3

struct virtio_llfree_balloon_zone {
	/* Protocol version the driver speaks, <= config.version */
	__le16 version;
	/* Id the driver picks, < config.max_zones; names the zone in installs */
	__le16 zone;
	/* NUMA node of the zone */
	__le16 node;
	/* VIRTIO_LLFREE_BALLOON_ZONE_* */
	__u8 type;
	/* Reserved, zero */
	__u8 padding0;
	/* CPUs the llfree instance was sized for (llfree_init `cores`) */
	__le32 cores;
	/* Reserved, zero */
	__le32 padding1;
	/* Guest PFN of llfree frame 0; a multiple of CHILD_FRAMES */
	__le64 base_pfn;
	/* 4 KiB frames the instance manages (llfree_frames()) */
	__le64 frames;
	/* GPA and byte length of the trees array (META_ALIGN aligned) */
	__le64 trees_gpa;
	__le64 trees_len;
	/* GPA and byte length of the lower array: bitfields, then children */
	__le64 lower_gpa;
	__le64 lower_len;
	/* GPA of the zone's NR_FREE_PAGES counter; the device adds -/+512 */
	__le64 free_pages_gpa;
	/* GPA of the global NR_FREE_PAGES counter; adjusted like the above */
	__le64 global_free_pages_gpa;
	/* GPA of the node's NR_FILE_PAGES counter; the device only reads it */
	__le64 file_pages_gpa;
};

/* Expected sizeof(); both sides assert it */
#define VIRTIO_LLFREE_BALLOON_ZONE_SIZE		88

/* Event queue ----------------------------------------------------------- */

/* Event types; 0 is never valid */
/* The driver finished the shrink request `seq`, dropping `pages` pages */
#define VIRTIO_LLFREE_BALLOON_EVENT_SHRINK_DONE	1

struct virtio_llfree_balloon_event {
	/* VIRTIO_LLFREE_BALLOON_EVENT_* */
	__le16 type;
	/* Reserved, zero */
	__le16 padding;
	/* SHRINK_DONE: the config shrink_seq this answers */
	__le32 seq;
	/* SHRINK_DONE: 4 KiB page cache pages the guest dropped */
	__le64 pages;
};

/* Expected sizeof(); both sides assert it */
#define VIRTIO_LLFREE_BALLOON_EVENT_SIZE	16

/* Install queues -------------------------------------------------------- */

/* Orders an install request may cover: one child up to one 16 MiB tree */
#define VIRTIO_LLFREE_BALLOON_INSTALL_MIN_ORDER	9
#define VIRTIO_LLFREE_BALLOON_INSTALL_MAX_ORDER	12

/* Back every reclaimed child of an aligned block and clear its flag */
struct virtio_llfree_balloon_install {
	/* Registered zone id */
	__le16 zone;
	/* Block order, INSTALL_MIN_ORDER .. INSTALL_MAX_ORDER */
	__u8 order;
	/* Reserved, zero */
	__u8 padding0;
	/* Reserved, zero */
	__le32 padding1;
	/* First frame of the block, zone-relative (llfree frame number) */
	__le64 frame;
};

/* Expected sizeof(); both sides assert it */
#define VIRTIO_LLFREE_BALLOON_INSTALL_SIZE	16

#endif /* _LINUX_VIRTIO_LLFREE_BALLOON_H */
