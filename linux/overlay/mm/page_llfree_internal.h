/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the files of llfree's page allocator share: the allocator of each
 * zone (mm/page_llfree.c) and the counters of its defragmentation
 * (mm/page_llfree_defrag.c).
 */
#ifndef _MM_PAGE_LLFREE_INTERNAL_H
#define _MM_PAGE_LLFREE_INTERNAL_H

#include <linux/mmzone.h>
#include <linux/percpu.h>

#include "llfree/include/llfree/llfree.h"

/* One allocator per zone; written once at boot, read-only afterwards */
struct page_llfree_zone {
	llfree_t ll;
	unsigned long base;
	bool ready;
};

extern struct page_llfree_zone page_llfree_zones[MAX_NUMNODES][MAX_NR_ZONES];

static inline struct page_llfree_zone *zone_llfree(struct zone *zone)
{
	return &page_llfree_zones[zone_to_nid(zone)][zone_idx(zone)];
}

/* Children that page_llfree_defrag() freed, and the pages it migrated */
DECLARE_PER_CPU(unsigned long, page_llfree_defrags);
DECLARE_PER_CPU(unsigned long, page_llfree_defrag_migrated);

#endif /* _MM_PAGE_LLFREE_INTERNAL_H */
