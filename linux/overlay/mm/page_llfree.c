// SPDX-License-Identifier: GPL-2.0
/*
 * llfree as the page allocator of every populated zone.
 *
 * Each zone gets one llfree instance whose frame 0 is the zone's first pfn
 * rounded down to 2 MiB, so every llfree child is a 2 MiB aligned range of
 * guest-physical memory that the host can discard as a whole. The shared
 * arrays come from memblock: they are never handed out, never freed and
 * never reclaimed. The instance starts with every frame allocated; memblock
 * then frees the usable memory frame by frame (fresh frees), and holes stay
 * allocated forever.
 *
 * Allocation and free go straight to llfree, bypassing the per-CPU page
 * lists and the zone lock: llfree is lock-free and keeps its own per-CPU
 * tree reservations, which are drained where Linux drains its lists.
 * NR_FREE_PAGES is kept in step on every allocation and free.
 *
 * When llfree says an allocation covers memory the host reclaimed, the
 * install hook of the virtio-llfree-balloon driver runs for every covered
 * 2 MiB frame before the page is returned. An allocation that may sleep
 * (its gfp allows direct reclaim) lets the driver sleep for the answer;
 * others make it spin, bounded.
 *
 * The reservations of a CPU hide their trees from the host, which never
 * reclaims in reserved trees; a periodic worker drains the reservations of
 * CPUs that neither allocated nor freed since its last run.
 */
#include <linux/init.h>
#include <linux/ktime.h>
#include <linux/memblock.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/page_llfree.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/srcu.h>
#include <linux/vmstat.h>
#include <linux/workqueue.h>

#include "page_llfree_internal.h"

struct page_llfree_zone page_llfree_zones[MAX_NUMNODES][MAX_NR_ZONES];

/*
 * The driver's install hook. Every allocation is inside an RCU read
 * section from llfree_get() until its install finished; one that may sleep
 * moves into an SRCU read section of install_srcu before it leaves the RCU
 * one. page_llfree_sync_installs() waits for both.
 */
static page_llfree_install_t __rcu install_hook;
DEFINE_STATIC_SRCU(install_srcu);

/* Allocations and frees of each CPU, and the count the idle drain last saw */
static DEFINE_PER_CPU(unsigned long, page_llfree_ops);
static DEFINE_PER_CPU(unsigned long, page_llfree_ops_seen);
/* Install requests and the microseconds they waited, for /proc/llfree */
static DEFINE_PER_CPU(unsigned long, page_llfree_installs);
static DEFINE_PER_CPU(unsigned long, page_llfree_install_wait_us);
/* How often reservations of CPUs that stopped allocating are drained */
#define PAGE_LLFREE_IDLE_DRAIN_PERIOD (2 * HZ)

/* Create the allocator of one populated zone, every frame allocated */
static void __init page_llfree_init_zone(struct zone *zone)
{
	struct page_llfree_zone *lz = zone_llfree(zone);
	unsigned long base = ALIGN_DOWN(zone->zone_start_pfn, LLFREE_CHILD_FRAMES);
	unsigned long frames = zone_end_pfn(zone) - base;
	llfree_meta_size_t size = llfree_metadata_size(nr_cpu_ids, frames);
	int nid = zone_to_nid(zone);
	llfree_meta_t meta;
	llfree_result_t res;

	/* on the zone's own node, falling back to any node */
	meta.local = memblock_alloc_node(size.local, LLFREE_ALIGN, nid);
	meta.trees = memblock_alloc_node(size.trees, LLFREE_ALIGN, nid);
	meta.lower = memblock_alloc_node(size.lower, LLFREE_ALIGN, nid);
	if (!meta.local || !meta.trees || !meta.lower)
		panic("llfree: no memory for the metadata of zone %s\n",
		      zone->name);

	res = llfree_init(&lz->ll, nr_cpu_ids, frames, LLFREE_INIT_ALLOC, meta);
	if (res.error != LLFREE_OK)
		panic("llfree: zone %s: %s\n", zone->name,
		      llfree_strerror(res.error));
	lz->base = base;
	lz->ready = true;
	pr_info("llfree: node %d zone %-7s pfn 0x%lx+0x%lx, shared trees at %pa (%zu bytes), lower at %pa (%zu bytes)\n",
		zone_to_nid(zone), zone->name, base, frames,
		&(phys_addr_t){ virt_to_phys(meta.trees) }, size.trees,
		&(phys_addr_t){ virt_to_phys(meta.lower) }, size.lower);
}

/* Called by memblock_free_all() before it frees memory to the zones */
void __init page_llfree_init(void)
{
	struct zone *zone;

	BUILD_BUG_ON(PMD_SHIFT - PAGE_SHIFT != LLFREE_HUGE_ORDER);
	BUILD_BUG_ON(MAX_ORDER - 1 > LLFREE_MAX_ORDER);

	for_each_populated_zone(zone)
		page_llfree_init_zone(zone);
}

/* Clears one child's reclaimed flag without a host (see below) */
static bool page_llfree_clear_reclaimed(void *ll, uint64_t child_frame)
{
	/* may lose a race with page_llfree_unreclaim_zone(): cleared either way */
	llfree_result_t res = llfree_install(ll, child_frame);

	return res.error == LLFREE_OK || res.error == LLFREE_ERR_STATE;
}

/*
 * Have the host back every reclaimed 2 MiB frame an allocation covers, in
 * one request for the block rounded out to whole 2 MiB frames. Without a
 * driver, i.e. before it registered (nothing is reclaimed then) or after
 * its device was reset (the device backed everything again, protocol
 * section 10), and when the driver says the device was reset, the flags
 * are cleared here.
 * Return: false if the host refused; the block must not be used.
 */
static bool page_llfree_install(page_llfree_install_t hook, struct zone *zone,
				struct page_llfree_zone *lz, uint64_t frame,
				unsigned int order, gfp_t gfp)
{
	unsigned int block = max_t(unsigned int, order, LLFREE_HUGE_ORDER);
	int ret = PAGE_LLFREE_INSTALL_BACKED;
	u64 start;

	if (hook) {
		start = ktime_get_mono_fast_ns();
		ret = hook(zone, lz->base + ALIGN_DOWN(frame, 1ULL << block),
			   block, gfp);
		this_cpu_inc(page_llfree_installs);
		this_cpu_add(page_llfree_install_wait_us,
			     (ktime_get_mono_fast_ns() - start) / NSEC_PER_USEC);
	}
	if (ret == PAGE_LLFREE_INSTALL_BACKED) {
		llfree_install_covered(&lz->ll, frame, order,
				       page_llfree_clear_reclaimed, &lz->ll);
		return true;
	}
	if (ret && ret != -EAGAIN)
		pr_warn_ratelimited("llfree: install of pfn 0x%llx order %u failed: %d\n",
				    (unsigned long long)(lz->base + frame),
				    order, ret);
	return ret == 0;
}

/*
 * Finish an allocation that covers reclaimed memory: install it, or give
 * it back to llfree if the host refused. Entered in the RCU read section
 * that page_llfree_alloc() opened before llfree_get(), and leaves it; an
 * allocation that may sleep hands over to an SRCU read section first, so
 * that page_llfree_sync_installs() never misses it.
 * Return: false if the block went back to llfree.
 */
static noinline bool page_llfree_alloc_reclaimed(struct zone *zone,
						 struct page_llfree_zone *lz,
						 uint64_t frame,
						 unsigned int order, gfp_t gfp)
	__releases(RCU)
{
	page_llfree_install_t hook = rcu_dereference(install_hook);
	bool may_sleep = hook && gfpflags_allow_blocking(gfp);
	llfree_result_t res;
	int idx = 0;
	bool ok;

	if (may_sleep) {
		idx = srcu_read_lock(&install_srcu);
		rcu_read_unlock();
	}
	ok = page_llfree_install(hook, zone, lz, frame, order, gfp);
	if (!ok) {
		res = llfree_put_uninstalled(&lz->ll, raw_smp_processor_id(),
					     frame, order);
		WARN_ON_ONCE(res.error != LLFREE_OK);
	}
	if (may_sleep)
		srcu_read_unlock(&install_srcu, idx);
	else
		rcu_read_unlock();
	return ok;
}

struct page *page_llfree_alloc(struct zone *zone, unsigned int order,
			       int migratetype, gfp_t gfp)
{
	struct page_llfree_zone *lz = zone_llfree(zone);
	llfree_result_t res;

	if (unlikely(!lz->ready))
		return NULL;

	/*
	 * From llfree_get() until the install cleared the reclaimed flags, a
	 * child taken this way looks like a hard-reclaimed one; the read
	 * section lets page_llfree_unreclaim_zone() wait for such windows.
	 */
	rcu_read_lock();
	res = llfree_get(&lz->ll, raw_smp_processor_id(), order,
			 migratetype == MIGRATE_MOVABLE);
	if (unlikely(res.error != LLFREE_OK)) {
		rcu_read_unlock();
		return NULL;
	}
	if (unlikely(res.reclaimed)) {
		if (!page_llfree_alloc_reclaimed(zone, lz, res.frame, order, gfp))
			return NULL;
	} else {
		rcu_read_unlock();
	}

	raw_cpu_inc(page_llfree_ops);
	mod_zone_page_state(zone, NR_FREE_PAGES, -(1L << order));
	count_vm_events(PGALLOC_NORMAL - ZONE_NORMAL + zone_idx(zone),
			1 << order);
	return pfn_to_page(lz->base + res.frame);
}

void page_llfree_free(struct zone *zone, struct page *page, unsigned long pfn,
		      unsigned int order, bool fresh)
{
	struct page_llfree_zone *lz = zone_llfree(zone);
	unsigned int cpu = raw_smp_processor_id();
	uint64_t frame = pfn - lz->base;
	llfree_result_t res;
	unsigned int i;

	if (WARN_ON_ONCE(!lz->ready || pfn < lz->base ||
			 frame >= llfree_frames(&lz->ll)))
		return; /* e.g. hot-added memory: leaked, never corrupted */

	if (fresh) {
		/* memory that was never freed is allocated frame by frame */
		for (i = 0; i < 1U << order; i++) {
			res = llfree_put(&lz->ll, cpu, frame + i, 0);
			if (res.error != LLFREE_OK)
				break;
		}
	} else {
		res = llfree_put(&lz->ll, cpu, frame, order);
	}
	if (res.error != LLFREE_OK) {
		pr_err("llfree: free of pfn 0x%lx order %u failed: %s\n", pfn,
		       order, llfree_strerror(res.error));
		dump_page(page, "llfree: bad free");
		WARN_ON_ONCE(1);
		return;
	}
	raw_cpu_inc(page_llfree_ops);
	mod_zone_page_state(zone, NR_FREE_PAGES, 1L << order);
	count_vm_events(PGFREE, 1 << order);
}

void page_llfree_drain(struct zone *zone, unsigned int cpu)
{
	struct page_llfree_zone *lz = zone_llfree(zone);

	if (lz->ready)
		llfree_drain(&lz->ll, cpu);
}

/*
 * Drain the reservations of every CPU that neither allocated nor freed
 * since the last run: the host does not reclaim in reserved trees, so an
 * idle CPU's reservations would hide their free memory from it for good.
 * llfree's reservations may be drained from any CPU.
 */
static void page_llfree_idle_drain(struct work_struct *work)
{
	struct zone *zone;
	unsigned int cpu;

	for_each_online_cpu(cpu) {
		unsigned long ops = per_cpu(page_llfree_ops, cpu);

		if (ops != per_cpu(page_llfree_ops_seen, cpu)) {
			per_cpu(page_llfree_ops_seen, cpu) = ops;
			continue;
		}
		for_each_populated_zone(zone)
			page_llfree_drain(zone, cpu);
	}
	schedule_delayed_work(to_delayed_work(work),
			      PAGE_LLFREE_IDLE_DRAIN_PERIOD);
}

static DECLARE_DELAYED_WORK(page_llfree_idle_drain_work,
			    page_llfree_idle_drain);

/**
 * page_llfree_zone_info - where the llfree state of a zone lives
 * @zone: a populated zone
 * @info: filled in on success
 *
 * Return: false if the zone has no llfree instance.
 */
bool page_llfree_zone_info(struct zone *zone, struct page_llfree_info *info)
{
	struct page_llfree_zone *lz = zone_llfree(zone);
	llfree_meta_size_t size;
	llfree_meta_t meta;

	if (!lz->ready)
		return false;
	meta = llfree_metadata(&lz->ll);
	size = llfree_metadata_size(llfree_cores(&lz->ll),
				    llfree_frames(&lz->ll));
	info->base_pfn = lz->base;
	info->frames = llfree_frames(&lz->ll);
	info->cores = llfree_cores(&lz->ll);
	info->trees = virt_to_phys(meta.trees);
	info->trees_size = size.trees;
	info->lower = virt_to_phys(meta.lower);
	info->lower_size = size.lower;
	return true;
}
EXPORT_SYMBOL_GPL(page_llfree_zone_info);

/**
 * page_llfree_set_install_hook - register the function that installs frames
 * @hook: called for every reclaimed 2 MiB frame an allocation covers
 *
 * Return: 0, or -EBUSY if another hook is registered.
 */
int page_llfree_set_install_hook(page_llfree_install_t hook)
{
	static DEFINE_SPINLOCK(hook_lock);
	int ret = 0;

	spin_lock(&hook_lock);
	if (rcu_access_pointer(install_hook))
		ret = -EBUSY;
	else
		rcu_assign_pointer(install_hook, hook);
	spin_unlock(&hook_lock);
	return ret;
}
EXPORT_SYMBOL_GPL(page_llfree_set_install_hook);

/*
 * Wait until every allocation that was between llfree_get() and the end of
 * its install when this was called has finished: its install is done (or
 * failed and the block is back in llfree). Sleeps.
 */
static void page_llfree_sync_installs(void)
{
	synchronize_rcu();
	synchronize_srcu(&install_srcu);
}

/**
 * page_llfree_clear_install_hook - unregister the install hook
 *
 * Waits until no allocation runs the old hook any more.
 */
void page_llfree_clear_install_hook(void)
{
	RCU_INIT_POINTER(install_hook, NULL);
	page_llfree_sync_installs();
}
EXPORT_SYMBOL_GPL(page_llfree_clear_install_hook);

/**
 * page_llfree_unreclaim_zone - take back everything the host reclaimed
 * @zone: a zone the driver registered
 *
 * For a driver whose device was reset (protocol section 10): the host no
 * longer touches the arrays and backs every frame again, so the reclaimed
 * flags are cleared and hard-reclaimed children are freed to the guest.
 * The install hook must be cleared first.
 *
 * A child the guest is allocating looks exactly like a hard-reclaimed one
 * until its reclaimed flag is cleared. So soft children are made ordinary
 * free ones first: after that, and after the allocations already past
 * llfree_get() have finished their installs (page_llfree_sync_installs()),
 * every child still marked reclaimed is one the host took.
 *
 * Return: the number of 2 MiB children given back to the guest.
 */
unsigned long page_llfree_unreclaim_zone(struct zone *zone)
{
	struct page_llfree_zone *lz = zone_llfree(zone);
	unsigned long soft = 0, returned = 0;
	uint64_t frame, frames;

	if (!lz->ready)
		return 0;
	frames = llfree_frames(&lz->ll);
	for (frame = 0; frame < frames; frame += LLFREE_CHILD_FRAMES) {
		/* fails for all but soft children: the others wait */
		if (llfree_is_reclaimed(&lz->ll, frame) &&
		    llfree_unreclaim_free(&lz->ll, frame).error == LLFREE_OK)
			soft++;
	}
	page_llfree_sync_installs();
	for (frame = 0; frame < frames; frame += LLFREE_CHILD_FRAMES) {
		if (!llfree_is_reclaimed(&lz->ll, frame) ||
		    llfree_return(&lz->ll, frame).error != LLFREE_OK)
			continue;
		mod_zone_page_state(zone, NR_FREE_PAGES, LLFREE_CHILD_FRAMES);
		returned++;
		/* fails if an allocation took it already; it clears the flag */
		if (llfree_unreclaim_free(&lz->ll, frame).error != LLFREE_OK)
			continue;
		cond_resched();
	}
	pr_info("llfree: node %d zone %s: %lu soft and %lu hard reclaimed 2 MiB frames back to the guest\n",
		zone_to_nid(zone), zone->name, soft, returned);
	return returned;
}
EXPORT_SYMBOL_GPL(page_llfree_unreclaim_zone);

/* Sum of a per-CPU counter over every possible CPU */
static unsigned long page_llfree_sum(unsigned long __percpu *counter)
{
	unsigned long sum = 0;
	unsigned int cpu;

	for_each_possible_cpu(cpu)
		sum += *per_cpu_ptr(counter, cpu);
	return sum;
}

/*
 * /proc/llfree: one line per zone, then the install requests the
 * allocations sent to the host and how long they waited, and the children
 * that defragmentation freed and the pages it moved for that
 */
static int page_llfree_show(struct seq_file *m, void *v)
{
	struct zone *zone;

	seq_puts(m, "node zone    base_pfn  frames    free      free_huge reclaimed reserved\n");
	for_each_populated_zone(zone) {
		struct page_llfree_zone *lz = zone_llfree(zone);

		if (!lz->ready)
			continue;
		seq_printf(m, "%-4d %-7s 0x%-7lx %-9llu %-9llu %-9llu %-9llu %llu\n",
			   zone_to_nid(zone), zone->name, lz->base,
			   llfree_frames(&lz->ll), llfree_free_frames(&lz->ll),
			   llfree_free_huge(&lz->ll),
			   llfree_reclaimed_huge(&lz->ll),
			   llfree_reserved_trees(&lz->ll));
	}
	seq_printf(m, "llfree_install %lu\nllfree_install_wait_us %lu\n",
		   page_llfree_sum(&page_llfree_installs),
		   page_llfree_sum(&page_llfree_install_wait_us));
	seq_printf(m, "llfree_defrag %lu\nllfree_defrag_migrated %lu\n",
		   page_llfree_sum(&page_llfree_defrags),
		   page_llfree_sum(&page_llfree_defrag_migrated));
	return 0;
}

static int __init page_llfree_late_init(void)
{
	proc_create_single("llfree", 0444, NULL, page_llfree_show);
	schedule_delayed_work(&page_llfree_idle_drain_work,
			      PAGE_LLFREE_IDLE_DRAIN_PERIOD);
	return 0;
}
late_initcall(page_llfree_late_init);
