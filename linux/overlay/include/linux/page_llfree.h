/* SPDX-License-Identifier: GPL-2.0 */
/*
 * llfree as the page allocator of every zone (CONFIG_LLFREE).
 *
 * The allocator state of a zone lives in memblock memory in two shared
 * arrays that the hypervisor maps to reclaim free 2 MiB frames. When an
 * allocation hands out memory that the hypervisor reclaimed, the install
 * hook registered by the virtio-llfree-balloon driver asks the host to
 * back it again before the page is returned.
 */
#ifndef _LINUX_PAGE_LLFREE_H
#define _LINUX_PAGE_LLFREE_H

#include <linux/mmzone.h>
#include <linux/types.h>

/* Where a zone's llfree state lives, for registration with the host */
struct page_llfree_info {
	unsigned long base_pfn;	/* pfn of llfree frame 0, 2 MiB aligned */
	unsigned long frames;	/* frames managed, from base_pfn */
	unsigned int cores;	/* CPUs the per-CPU state was sized for */
	phys_addr_t trees;	/* guest-physical address of the tree array */
	size_t trees_size;
	phys_addr_t lower;	/* guest-physical address of the lower array */
	size_t lower_size;
};

/*
 * Install hook: have the host back every reclaimed 2 MiB frame of the
 * 2^order block at `pfn` of `zone` (order >= 9, pfn aligned to it). Runs
 * in the allocating context, whatever it is; it may sleep only if
 * gfpflags_allow_blocking(gfp).
 *
 * Return: 0 once the host confirmed it; PAGE_LLFREE_INSTALL_BACKED if the
 * memory is backed without an install, because the device was reset (the
 * caller clears the reclaimed flags); -ENOMEM if the host could not back
 * the memory, -EINVAL for a request the host rejected, -EAGAIN while the
 * device is being reset and the caller may not sleep, -EIO if the device
 * is broken. On error the block must not be used.
 */
typedef int (*page_llfree_install_t)(struct zone *zone, unsigned long pfn,
				     unsigned int order, gfp_t gfp);
#define PAGE_LLFREE_INSTALL_BACKED 1

#ifdef CONFIG_LLFREE
void __init page_llfree_init(void);
struct page *page_llfree_alloc(struct zone *zone, unsigned int order,
			       int migratetype, gfp_t gfp);
void page_llfree_free(struct zone *zone, struct page *page, unsigned long pfn,
		      unsigned int order, bool fresh);
void page_llfree_drain(struct zone *zone, unsigned int cpu);
bool page_llfree_defrag(struct zone *zone, unsigned int order);

bool page_llfree_zone_info(struct zone *zone, struct page_llfree_info *info);
int page_llfree_set_install_hook(page_llfree_install_t hook);
void page_llfree_clear_install_hook(void);
unsigned long page_llfree_unreclaim_zone(struct zone *zone);

/* mm/vmscan.c: reclaim page cache and slab, never anonymous memory */
unsigned long shrink_page_cache(unsigned long nr_to_reclaim);
#else
static inline void page_llfree_init(void)
{
}

static inline struct page *page_llfree_alloc(struct zone *zone,
					     unsigned int order,
					     int migratetype, gfp_t gfp)
{
	return NULL;
}

static inline void page_llfree_free(struct zone *zone, struct page *page,
				    unsigned long pfn, unsigned int order,
				    bool fresh)
{
}

static inline void page_llfree_drain(struct zone *zone, unsigned int cpu)
{
}

static inline bool page_llfree_defrag(struct zone *zone, unsigned int order)
{
	return false;
}
#endif /* CONFIG_LLFREE */

#endif /* _LINUX_PAGE_LLFREE_H */
