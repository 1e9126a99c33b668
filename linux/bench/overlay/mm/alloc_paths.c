// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel paths that free a block in pieces, for tests of the page
 * allocator (tests/e2e/test_mm_paths.py). Built into every HyperAlloc guest
 * kernel, like the allocation benchmark next to it, so that llfree and the
 * buddy allocator run the same code.
 *
 * Interface: /sys/kernel/debug/alloc_paths/run (root, write only)
 *
 *   write "<path> [count=N]"   runs the path N times (default 16) and
 *                              returns when every block is freed again
 *
 * Paths:
 *   split    alloc_pages() of order 9 and 10 alternately, split_page(),
 *            then __free_page() of every page, odd pages first;
 *   exact    alloc_pages_exact() of 3 MiB + 4 KiB (an order-10 block whose
 *            tail goes back at once), then free_pages_exact();
 *   halves   alloc_pages() of order 9 and 10 alternately with an extra
 *            reference on the first page: __free_pages() then frees the
 *            upper halves (order 9 or 8 down to 0), put_page() the first page;
 *   vmalloc  vmalloc_huge() of 8 MiB (order-9 pages that vmalloc splits),
 *            every page written, then vfree().
 * A failed allocation is skipped (the test sizes the VM so that they
 * succeed); the write fails with -ENOMEM if none succeeded. Whether the
 * allocator took every piece back is for the caller to see: MemFree, and
 * a console free of warnings.
 */

#include <linux/debugfs.h>
#include <linux/gfp.h>
#include <linux/init.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/sizes.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

/* Longest command accepted by a write */
#define PATHS_CMD_MAX 64
/* Upper bound of count= */
#define PATHS_MAX_COUNT 4096
/* Sizes the paths use */
#define PATHS_EXACT_SIZE (3 * SZ_1M + PAGE_SIZE)
#define PATHS_VMALLOC_SIZE (8 * SZ_1M)

static DEFINE_MUTEX(paths_lock);

/* Order of the i-th block of the paths that alternate: 9, 10, 9, ... */
static unsigned int paths_order(unsigned long i)
{
	return i % 2 ? MAX_ORDER - 1 : PMD_SHIFT - PAGE_SHIFT;
}

/* split_page() and a free of every page: returns whether it allocated */
static bool paths_split(unsigned long i)
{
	unsigned int order = paths_order(i), j;
	struct page *page = alloc_pages(GFP_KERNEL | __GFP_NOWARN, order);

	if (!page)
		return false;
	split_page(page, order);
	for (j = 1; j < 1U << order; j += 2)
		__free_page(page + j);
	for (j = 0; j < 1U << order; j += 2)
		__free_page(page + j);
	return true;
}

static bool paths_exact(unsigned long i)
{
	void *p = alloc_pages_exact(PATHS_EXACT_SIZE, GFP_KERNEL | __GFP_NOWARN);

	if (!p)
		return false;
	memset(p, 0x5a, PATHS_EXACT_SIZE);
	free_pages_exact(p, PATHS_EXACT_SIZE);
	return true;
}

/* __free_pages() while another reference holds the first page */
static bool paths_halves(unsigned long i)
{
	unsigned int order = paths_order(i);
	struct page *page = alloc_pages(GFP_KERNEL | __GFP_NOWARN, order);

	if (!page)
		return false;
	get_page(page);
	__free_pages(page, order);
	put_page(page);
	return true;
}

static bool paths_vmalloc(unsigned long i)
{
	void *p = vmalloc_huge(PATHS_VMALLOC_SIZE, GFP_KERNEL | __GFP_NOWARN);

	if (!p)
		return false;
	memset(p, 0xa5, PATHS_VMALLOC_SIZE);
	vfree(p);
	return true;
}

static const struct {
	const char *name;
	bool (*run)(unsigned long i);
} paths[] = {
	{ "split", paths_split },
	{ "exact", paths_exact },
	{ "halves", paths_halves },
	{ "vmalloc", paths_vmalloc },
};

static ssize_t paths_write(struct file *file, const char __user *ubuf,
			   size_t len, loff_t *ppos)
{
	char cmd[PATHS_CMD_MAX], name[16];
	unsigned long count = 16, i, done = 0;
	unsigned int p;
	int n;

	if (len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, len))
		return -EFAULT;
	cmd[len] = '\0';
	n = sscanf(cmd, "%15s count=%lu", name, &count);
	if (n < 1 || count == 0 || count > PATHS_MAX_COUNT)
		return -EINVAL;
	for (p = 0; p < ARRAY_SIZE(paths); p++) {
		if (!strcmp(name, paths[p].name))
			break;
	}
	if (p == ARRAY_SIZE(paths))
		return -EINVAL;

	mutex_lock(&paths_lock);
	for (i = 0; i < count; i++) {
		done += paths[p].run(i);
		cond_resched();
	}
	mutex_unlock(&paths_lock);
	pr_info("alloc_paths: %s: %lu of %lu allocations\n", name, done, count);
	return done ? len : -ENOMEM;
}

static const struct file_operations paths_fops = {
	.owner = THIS_MODULE,
	.write = paths_write,
	.llseek = no_llseek,
};

static int __init paths_init(void)
{
	struct dentry *dir = debugfs_create_dir("alloc_paths", NULL);

	debugfs_create_file("run", 0200, dir, NULL, &paths_fops);
	return 0;
}
late_initcall(paths_init);
