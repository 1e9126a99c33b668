// SPDX-License-Identifier: GPL-2.0
/*
 * Defragmentation for llfree: free a whole 2 MiB child for a costly
 * allocation by migrating the pages left in it.
 *
 * Linux's compaction works on the buddy allocator's free lists, which llfree
 * does not have, so it is off. Without it, a costly allocation (a THP fault
 * with MADV_HUGEPAGE, khugepaged's collapse, a hugetlb page) fails as soon as
 * no child is entirely free, even when children are nearly free: a split THP
 * leaves its child holding only the pages that are still mapped.
 * page_llfree_defrag() takes the children of the zone with the most free
 * frames, claims those frames in llfree so that nothing else is allocated
 * there, migrates the pages still allocated in the child to free frames of
 * other children of the node, and gives the claimed frames back: the child is then entirely
 * free for the caller's next attempt (a race may take it first; the caller
 * fails then, as after a failed compaction).
 *
 * Partially unmapped THPs waiting on the deferred split queue fill whole
 * children. Their shrinker runs only in reclaim, which costly allocations
 * skip with llfree (mm/page_alloc.c), so if no child is at least half free a
 * few of them are split here first, as the shrinker would.
 */
#include <linux/bitmap.h>
#include <linux/mm.h>
#include <linux/huge_mm.h>
#include <linux/migrate.h>
#include <linux/mm_inline.h>
#include <linux/page_llfree.h>
#include <linux/pagemap.h>
#include <linux/swap.h>

#include "internal.h"
#include "page_llfree_internal.h"

DEFINE_PER_CPU(unsigned long, page_llfree_defrags);
DEFINE_PER_CPU(unsigned long, page_llfree_defrag_migrated);

/* Children tried per call, the ones with the most free frames first */
#define DEFRAG_CANDIDATES 4
/* Deferred-split THPs split per call when no child is half free */
#define DEFRAG_SPLITS 4

/* One child of a zone and the free frames of it that are claimed */
struct defrag_child {
	struct zone *zone;
	struct page_llfree_zone *lz;
	uint64_t frame;		/* the child's first llfree frame */
	DECLARE_BITMAP(claimed, LLFREE_CHILD_FRAMES);
	unsigned int nr_claimed;
};

static unsigned long child_pfn(const struct defrag_child *dc)
{
	return dc->lz->base + dc->frame;
}

static void defrag_release(struct defrag_child *dc)
{
	unsigned int cpu = raw_smp_processor_id();
	llfree_result_t res;
	unsigned int i;

	for_each_set_bit(i, dc->claimed, LLFREE_CHILD_FRAMES) {
		res = llfree_put(&dc->lz->ll, cpu, dc->frame + i, 0);
		WARN_ON_ONCE(res.error != LLFREE_OK);
	}
	mod_zone_page_state(dc->zone, NR_FREE_PAGES, dc->nr_claimed);
	bitmap_zero(dc->claimed, LLFREE_CHILD_FRAMES);
	dc->nr_claimed = 0;
}

/*
 * Claim every free frame of the child, so that the pages migrated out of it
 * land elsewhere. Fails if a frame cannot be claimed: its tree is reserved
 * by a CPU, or an allocation or another claim won the race.
 */
static bool defrag_claim_free(struct defrag_child *dc)
{
	unsigned int cpu = raw_smp_processor_id();
	llfree_result_t res;
	unsigned int i;

	for (i = 0; i < LLFREE_CHILD_FRAMES; i++) {
		if (!llfree_is_free(&dc->lz->ll, dc->frame + i, 0))
			continue;
		res = llfree_get_at(&dc->lz->ll, cpu, dc->frame + i, 0);
		if (res.error != LLFREE_OK)
			break;
		mod_zone_page_state(dc->zone, NR_FREE_PAGES, -1);
		__set_bit(i, dc->claimed);
		dc->nr_claimed++;
		if (res.reclaimed) /* the child became free and the host took it */
			break;
	}
	if (i == LLFREE_CHILD_FRAMES)
		return true;
	if (test_bit(i, dc->claimed)) {
		/* never installed: it goes back still marked reclaimed */
		res = llfree_put_uninstalled(&dc->lz->ll, cpu, dc->frame + i, 0);
		WARN_ON_ONCE(res.error != LLFREE_OK);
		mod_zone_page_state(dc->zone, NR_FREE_PAGES, 1);
		__clear_bit(i, dc->claimed);
		dc->nr_claimed--;
	}
	defrag_release(dc);
	return false;
}

/* Whether every page still allocated in the child looks movable */
static bool defrag_movable(const struct defrag_child *dc)
{
	unsigned long pfn = child_pfn(dc);
	unsigned int i;

	for (i = 0; i < LLFREE_CHILD_FRAMES; i++) {
		struct page *page;

		if (llfree_is_free(&dc->lz->ll, dc->frame + i, 0))
			continue;
		if (!pfn_valid(pfn + i))
			return false;
		page = compound_head(pfn_to_page(pfn + i));
		if (!PageLRU(page) && !__PageMovable(page))
			return false;
	}
	return true;
}

/*
 * Isolate the folios still allocated in the child (the claimed frames aside)
 * onto @folios. Return: the number of pages isolated, or -EBUSY if a folio
 * could not be isolated (the isolated ones are on @folios).
 */
static long defrag_isolate(const struct defrag_child *dc,
			   struct list_head *folios)
{
	unsigned long pfn = child_pfn(dc), end = pfn + LLFREE_CHILD_FRAMES;
	unsigned long nr = 0;

	while (pfn < end) {
		struct folio *folio;
		unsigned long next;
		int ret = -EBUSY;

		/* claimed, or freed since the claims: nothing to move */
		if (test_bit(pfn - child_pfn(dc), dc->claimed) ||
		    llfree_is_free(&dc->lz->ll, pfn - dc->lz->base, 0)) {
			pfn++;
			continue;
		}
		folio = page_folio(pfn_to_page(pfn));
		if (!folio_try_get(folio))
			return -EBUSY; /* being freed */
		next = folio_pfn(folio) + folio_nr_pages(folio);
		/* the folio may have changed before the reference was taken */
		if (page_folio(pfn_to_page(pfn)) == folio &&
		    folio_pfn(folio) >= child_pfn(dc) && next <= end) {
			if (folio_test_lru(folio))
				ret = folio_isolate_lru(folio);
			else if (__PageMovable(&folio->page))
				ret = isolate_movable_page(&folio->page,
							   ISOLATE_UNEVICTABLE);
		}
		if (!ret) {
			list_add_tail(&folio->lru, folios);
			if (!__PageMovable(&folio->page))
				node_stat_mod_folio(folio, NR_ISOLATED_ANON +
						    folio_is_file_lru(folio),
						    folio_nr_pages(folio));
			nr += folio_nr_pages(folio);
		}
		folio_put(folio);
		if (ret)
			return ret;
		pfn = next;
	}
	return nr;
}

/*
 * Move everything allocated in the child to free frames elsewhere on its
 * node. As compaction, it only rearranges free memory: the targets come
 * without reclaim, so a THP fault after a shrink cannot empty the page cache
 * through them.
 */
static bool defrag_one(struct defrag_child *dc)
{
	struct migration_target_control mtc = {
		.nid = zone_to_nid(dc->zone),
		.gfp_mask = (GFP_HIGHUSER_MOVABLE & ~__GFP_DIRECT_RECLAIM) |
			    __GFP_THISNODE | __GFP_NOWARN,
	};
	LIST_HEAD(folios);
	long nr;
	int ret;

	if (!defrag_movable(dc) || !defrag_claim_free(dc))
		return false;
	nr = defrag_isolate(dc, &folios);
	ret = nr < 0 ? nr : 0;
	if (!ret && nr)
		ret = migrate_pages(&folios, alloc_migration_target, NULL,
				    (unsigned long)&mtc, MIGRATE_SYNC_LIGHT,
				    MR_COMPACTION, NULL);
	if (ret)
		putback_movable_pages(&folios);
	defrag_release(dc);
	if (ret)
		return false;
	this_cpu_add(page_llfree_defrag_migrated, nr);
	return true;
}

/* The first frames of the children of the zone with the most free frames */
static unsigned int defrag_candidates(struct zone *zone,
				      struct page_llfree_zone *lz,
				      uint64_t *best, unsigned int *most_free)
{
	unsigned int free[DEFRAG_CANDIDATES];
	unsigned int n = 0, i, f;
	uint64_t frame, frames = llfree_frames(&lz->ll);

	for (frame = 0; frame + LLFREE_CHILD_FRAMES <= frames;
	     frame += LLFREE_CHILD_FRAMES) {
		/* children with a hole (at the zone's ends) never free up */
		if (lz->base + frame < zone->zone_start_pfn)
			continue;
		f = llfree_free_at(&lz->ll, frame, LLFREE_HUGE_ORDER);
		if (f == 0 || f == LLFREE_CHILD_FRAMES ||
		    llfree_is_reclaimed(&lz->ll, frame))
			continue;
		if (n == DEFRAG_CANDIDATES && f <= free[n - 1])
			continue;
		if (n < DEFRAG_CANDIDATES)
			n++;
		for (i = n - 1; i > 0 && free[i - 1] < f; i--) {
			free[i] = free[i - 1];
			best[i] = best[i - 1];
		}
		free[i] = f;
		best[i] = frame;
	}
	*most_free = n ? free[0] : 0;
	return n;
}

/*
 * Split up to DEFRAG_SPLITS anonymous THPs of the zone that are waiting on
 * the deferred split queue, as the queue's shrinker does. Return: how many.
 */
static unsigned int defrag_split_deferred(struct zone *zone,
					  struct page_llfree_zone *lz)
{
	uint64_t frame, frames = llfree_frames(&lz->ll);
	unsigned int split = 0;

	for (frame = 0; frame + LLFREE_CHILD_FRAMES <= frames &&
	     split < DEFRAG_SPLITS; frame += LLFREE_CHILD_FRAMES) {
		struct page *page;
		struct folio *folio;

		if (lz->base + frame < zone->zone_start_pfn ||
		    llfree_free_at(&lz->ll, frame, LLFREE_HUGE_ORDER) != 0 ||
		    !pfn_valid(lz->base + frame))
			continue;
		page = pfn_to_page(lz->base + frame);
		folio = page_folio(page);
		if (&folio->page != page || folio_order(folio) != HPAGE_PMD_ORDER ||
		    !folio_test_anon(folio) || folio_test_hugetlb(folio) ||
		    data_race(list_empty(page_deferred_list(page))))
			continue;
		if (!folio_try_get(folio))
			continue;
		if (page_folio(page) == folio && folio_test_large(folio) &&
		    folio_trylock(folio)) {
			if (!split_huge_page(page))
				split++;
			folio_unlock(folio);
		}
		folio_put(folio);
	}
	return split;
}

/**
 * page_llfree_defrag - free a whole 2 MiB child of a zone by migration
 * @zone: the zone
 * @order: the order the caller wants, at most LLFREE_HUGE_ORDER
 *
 * Sleeps; for allocations that may enter direct reclaim.
 *
 * Return: true if a child was freed; the caller then retries its allocation.
 */
bool page_llfree_defrag(struct zone *zone, unsigned int order)
{
	struct defrag_child dc = { .zone = zone, .lz = zone_llfree(zone) };
	uint64_t best[DEFRAG_CANDIDATES];
	unsigned int n, i, most_free;

	if (!IS_ENABLED(CONFIG_MIGRATION) || !dc.lz->ready ||
	    order > LLFREE_HUGE_ORDER)
		return false;
	/* pages faulted in recently reach the LRU only from the per-CPU batch */
	lru_add_drain();
	n = defrag_candidates(zone, dc.lz, best, &most_free);
	if (most_free < LLFREE_CHILD_FRAMES / 2 &&
	    defrag_split_deferred(zone, dc.lz))
		n = defrag_candidates(zone, dc.lz, best, &most_free);
	for (i = 0; i < n; i++) {
		dc.frame = best[i];
		if (defrag_one(&dc)) {
			this_cpu_inc(page_llfree_defrags);
			return true;
		}
		cond_resched();
	}
	return false;
}
