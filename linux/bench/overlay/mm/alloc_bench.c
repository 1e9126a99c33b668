// SPDX-License-Identifier: GPL-2.0
/*
 * Page allocator benchmark in debugfs, built into every HyperAlloc guest
 * kernel (the stock buddy allocator and llfree alike) so that both can be
 * measured with the same code in the same VM.
 *
 * Interface: /sys/kernel/debug/alloc_bench/run
 *
 *   write  "<mode> [order=O] [count=N] [threads=T] [gfp=kernel|movable] [seed=S]"
 *          runs one benchmark and returns when it is done;
 *   read   the result of the last write if its run succeeded, else -ENODATA.
 *
 * Modes, each thread on its own:
 *   bulk    allocate N blocks, then free them in allocation order;
 *   repeat  N times: allocate one block and free it again;
 *   random  allocate N blocks, then free them in a seeded random order.
 *
 * T kthreads are bound to the first T online CPUs (CPUs 0..T-1 normally) and
 * start each timed phase together (a spinning barrier); interrupts and
 * preemption stay enabled. Blocks come from alloc_pages(gfp, order), with
 * __GFP_COMP | __GFP_NOWARN above order 0, and go back with __free_pages().
 * Times come from sched_clock(), the raw CPU-local clock (the TSC on x86):
 * each thread stays on its CPU and compares only its own stamps, so it needs
 * no synchronization across CPUs. local_clock() would not do: with an
 * unstable TSC (QEMU TCG with 2 vCPUs) it is clamped to one tick past the
 * last tick and stands still when ticks come late. bulk and random time each
 * phase as a whole; repeat reads the clock between the allocation and the
 * free, so its times include one clock read per operation.
 *
 * N is per thread. For bulk and random, N is capped so that all threads
 * together hold at most half of the free memory at the start of the run (the
 * result shows the requested and the effective N); a run that cannot hold one
 * block per thread fails with -ENOMEM. Failed allocations are counted, never
 * fatal, and every block a run allocates is freed before the write returns.
 *
 * Runs are serialized by bench_lock: a write while a run is in progress fails
 * with -EBUSY, a read waits for the run to end.
 */

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/gfp.h>
#include <linux/init.h>
#include <linux/kthread.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/prandom.h>
#include <linux/sched.h>
#include <linux/sched/clock.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/topology.h>
#include <linux/uaccess.h>
#include <linux/vmstat.h>

/* Longest command accepted by a write. */
#define BENCH_CMD_MAX		128
/* Upper bound of count=, whatever the mode. */
#define BENCH_MAX_COUNT		BIT(24)
/* Operations between two cond_resched() calls of a thread. */
#define BENCH_RESCHED_MASK	255

enum bench_mode { BENCH_BULK, BENCH_REPEAT, BENCH_RANDOM };

static const char *const bench_mode_names[] = {
	[BENCH_BULK] = "bulk",
	[BENCH_REPEAT] = "repeat",
	[BENCH_RANDOM] = "random",
};

/* What a write asks for. */
struct bench_params {
	enum bench_mode mode;
	unsigned int order;
	unsigned int threads;
	unsigned long count;		/* per thread, after the memory cap */
	unsigned long requested;	/* per thread, as written */
	bool movable;
	u64 seed;
};

/* One benchmark thread: written only by the thread, read after it is done. */
struct bench_thread {
	struct bench_run *run;
	struct task_struct *task;
	struct page **pages;		/* bulk and random: the blocks held */
	unsigned int index;
	int cpu;			/* the CPU it ran on */
	unsigned long allocs;		/* successful allocations */
	unsigned long failures;		/* failed allocations */
	unsigned long frees;
	u64 alloc_ns;			/* time spent allocating */
	u64 free_ns;			/* time spent freeing */
};

/* One run: its parameters, the threads' rendezvous and their results. */
struct bench_run {
	struct bench_params params;
	gfp_t gfp;
	atomic_t arrived;		/* barrier arrivals, counts up */
	atomic_t running;		/* threads not yet done */
	struct completion done;		/* completed by the last thread */
	struct bench_thread thread[];
};

/* Serializes runs; guards bench_last. */
static DEFINE_MUTEX(bench_lock);
/* The last successful run, shown by a read. */
static struct bench_run *bench_last;

/* Waits until all threads have called it @round times (counting from 1). */
static void bench_barrier(struct bench_run *run, unsigned int round)
{
	int want = round * run->params.threads;

	atomic_inc(&run->arrived);
	while (atomic_read(&run->arrived) < want) {
		/* The CPU may have to run a thread's waker first. */
		cond_resched();
		cpu_relax();
	}
}

/* Gives the CPU away every BENCH_RESCHED_MASK + 1 operations. */
static inline void bench_resched(unsigned long i)
{
	if ((i & BENCH_RESCHED_MASK) == BENCH_RESCHED_MASK)
		cond_resched();
}

/* Allocates up to count blocks into t->pages; returns the time taken. */
static u64 bench_alloc_all(struct bench_thread *t)
{
	struct bench_run *run = t->run;
	unsigned int order = run->params.order;
	unsigned long i;
	struct page *page;
	u64 start = sched_clock();

	for (i = 0; i < run->params.count; i++) {
		page = alloc_pages(run->gfp, order);
		if (page)
			t->pages[t->allocs++] = page;
		else
			t->failures++;
		bench_resched(i);
	}
	return sched_clock() - start;
}

/* Frees the blocks in t->pages in array order; returns the time taken. */
static u64 bench_free_all(struct bench_thread *t)
{
	unsigned int order = t->run->params.order;
	unsigned long i;
	u64 start = sched_clock();

	for (i = 0; i < t->allocs; i++) {
		__free_pages(t->pages[i], order);
		bench_resched(i);
	}
	t->frees = t->allocs;
	return sched_clock() - start;
}

/* Shuffles t->pages (Fisher-Yates), seeded by the run's seed and the thread. */
static void bench_shuffle(struct bench_thread *t)
{
	struct rnd_state rnd;
	unsigned long i, j;

	prandom_seed_state(&rnd, t->run->params.seed + t->index);
	for (i = t->allocs; i > 1; i--) {
		j = ((u64)prandom_u32_state(&rnd) * i) >> 32;
		swap(t->pages[i - 1], t->pages[j]);
	}
}

/* repeat: allocates and frees one block count times, timing each step. */
static void bench_repeat(struct bench_thread *t)
{
	struct bench_run *run = t->run;
	unsigned int order = run->params.order;
	struct page *page;
	unsigned long i;
	u64 now, mid;

	now = sched_clock();
	for (i = 0; i < run->params.count; i++) {
		page = alloc_pages(run->gfp, order);
		mid = sched_clock();
		t->alloc_ns += mid - now;
		if (page) {
			t->allocs++;
			__free_pages(page, order);
			t->frees++;
		} else {
			t->failures++;
		}
		now = sched_clock();
		t->free_ns += now - mid;
		if ((i & BENCH_RESCHED_MASK) == BENCH_RESCHED_MASK) {
			cond_resched();
			now = sched_clock();
		}
	}
}

/* Body of a benchmark kthread. */
static int bench_thread_fn(void *data)
{
	struct bench_thread *t = data;
	struct bench_run *run = t->run;

	t->cpu = raw_smp_processor_id();
	bench_barrier(run, 1);
	switch (run->params.mode) {
	case BENCH_BULK:
	case BENCH_RANDOM:
		t->alloc_ns = bench_alloc_all(t);
		if (run->params.mode == BENCH_RANDOM)
			bench_shuffle(t);
		bench_barrier(run, 2);
		t->free_ns = bench_free_all(t);
		break;
	case BENCH_REPEAT:
		bench_repeat(t);
		break;
	}
	/* The last thread wakes the writer; nothing touches run after this. */
	if (atomic_dec_and_test(&run->running))
		complete(&run->done);
	return 0;
}

/* Frees the page arrays of a run's threads (not the pages in them). */
static void bench_run_free_arrays(struct bench_run *run)
{
	unsigned int i;

	for (i = 0; i < run->params.threads; i++) {
		kvfree(run->thread[i].pages);
		run->thread[i].pages = NULL;
	}
}

/* Frees a run, the arrays of its threads included. */
static void bench_run_free(struct bench_run *run)
{
	if (!run)
		return;
	bench_run_free_arrays(run);
	kfree(run);
}

/* Parses the value of a "key=value" word into @res, at most @max. */
static int bench_parse_ulong(const char *val, unsigned long max,
			     unsigned long *res)
{
	int err = kstrtoul(val, 0, res);

	if (err)
		return err;
	return *res > max ? -EINVAL : 0;
}

/* Parses a command (modified in place) into @p; -EINVAL on any error. */
static int bench_parse(char *cmd, struct bench_params *p)
{
	unsigned long v;
	char *tok, *val;
	bool have_mode = false;
	int err, i;

	memset(p, 0, sizeof(*p));
	p->order = 0;
	p->threads = 1;
	p->requested = 1024;
	p->seed = 1;

	while ((tok = strsep(&cmd, " \t\n")) != NULL) {
		if (!*tok)
			continue;
		if (!have_mode) {
			i = match_string(bench_mode_names,
					 ARRAY_SIZE(bench_mode_names), tok);
			if (i < 0)
				return -EINVAL;
			p->mode = i;
			have_mode = true;
			continue;
		}
		val = strchr(tok, '=');
		if (!val)
			return -EINVAL;
		*val++ = '\0';
		if (!strcmp(tok, "order")) {
			err = bench_parse_ulong(val, MAX_ORDER - 1, &v);
			p->order = v;
		} else if (!strcmp(tok, "count")) {
			err = bench_parse_ulong(val, BENCH_MAX_COUNT, &v);
			p->requested = v;
			if (!err && !v)
				err = -EINVAL;
		} else if (!strcmp(tok, "threads")) {
			err = bench_parse_ulong(val, num_online_cpus(), &v);
			p->threads = v;
			if (!err && !v)
				err = -EINVAL;
		} else if (!strcmp(tok, "seed")) {
			err = kstrtou64(val, 0, &p->seed);
		} else if (!strcmp(tok, "gfp")) {
			err = 0;
			if (!strcmp(val, "movable"))
				p->movable = true;
			else if (strcmp(val, "kernel"))
				err = -EINVAL;
		} else {
			err = -EINVAL;
		}
		if (err)
			return -EINVAL;
	}
	return have_mode ? 0 : -EINVAL;
}

/*
 * Caps p->requested for the memory it needs; sets p->count. Returns -ENOMEM
 * if not even one block per thread fits in half of the free memory.
 */
static int bench_cap_count(struct bench_params *p)
{
	unsigned long free_pages, blocks;

	p->count = p->requested;
	if (p->mode == BENCH_REPEAT)
		return 0;
	free_pages = global_zone_page_state(NR_FREE_PAGES);
	blocks = (free_pages / 2) >> p->order;
	blocks /= p->threads;
	if (!blocks)
		return -ENOMEM;
	p->count = min(p->count, blocks);
	return 0;
}

/* Runs one benchmark; on success returns the run with its results. */
static struct bench_run *bench_run(const struct bench_params *params)
{
	struct bench_run *run;
	struct bench_thread *t;
	unsigned int i, n, cpu;
	int err;

	n = params->threads;
	run = kzalloc(struct_size(run, thread, n), GFP_KERNEL);
	if (!run)
		return ERR_PTR(-ENOMEM);
	run->params = *params;
	run->gfp = GFP_KERNEL;
	if (params->movable)
		run->gfp |= __GFP_MOVABLE;
	if (params->order)
		run->gfp |= __GFP_COMP | __GFP_NOWARN;
	atomic_set(&run->arrived, 0);
	atomic_set(&run->running, n);
	init_completion(&run->done);

	for (i = 0; i < n; i++) {
		t = &run->thread[i];
		t->run = run;
		t->index = i;
		t->cpu = -1;
		if (params->mode == BENCH_REPEAT)
			continue;
		t->pages = kvmalloc_array(params->count, sizeof(*t->pages),
					  GFP_KERNEL);
		if (!t->pages) {
			err = -ENOMEM;
			goto out_free;
		}
	}

	/* Create every thread before starting any: each must reach the barrier. */
	for (i = 0; i < n; i++) {
		t = &run->thread[i];
		cpu = cpumask_nth(i, cpu_online_mask);
		if (cpu >= nr_cpu_ids) {
			err = -EINVAL;
			goto out_stop;
		}
		t->task = kthread_create_on_node(bench_thread_fn, t,
						 cpu_to_node(cpu),
						 "alloc_bench/%u", i);
		if (IS_ERR(t->task)) {
			err = PTR_ERR(t->task);
			t->task = NULL;
			goto out_stop;
		}
		kthread_bind(t->task, cpu);
	}
	for (i = 0; i < n; i++)
		wake_up_process(run->thread[i].task);
	/* Idle wait: a long run under TCG is not a hung task. */
	wait_for_completion_state(&run->done, TASK_IDLE);
	/* Every block is freed: only the results stay. */
	bench_run_free_arrays(run);
	return run;

out_stop:
	/* Never woken: kthread_stop() ends them before bench_thread_fn() runs. */
	while (i--)
		kthread_stop(run->thread[i].task);
out_free:
	bench_run_free(run);
	return ERR_PTR(err);
}

/* Prints "total / ops" with one decimal, or "-" without operations. */
static void bench_show_ns(struct seq_file *m, const char *name, u64 total,
			  u64 ops)
{
	u64 tenths;

	if (!ops) {
		seq_printf(m, " %s=-", name);
		return;
	}
	tenths = div64_u64(total * 10 + ops / 2, ops);
	seq_printf(m, " %s=%llu.%llu", name, div_u64(tenths, 10),
		   tenths % 10);
}

/* Shows the last run: a parameter line, one line per thread, a mean line. */
static int bench_show(struct seq_file *m, void *v)
{
	const struct bench_params *p;
	const struct bench_thread *t;
	u64 alloc_ns = 0, free_ns = 0, attempts = 0, frees = 0, failures = 0;
	unsigned int i;
	int err;

	err = mutex_lock_interruptible(&bench_lock);
	if (err)
		return err;
	if (!bench_last) {
		mutex_unlock(&bench_lock);
		return -ENODATA;
	}
	p = &bench_last->params;
	seq_printf(m, "mode=%s order=%u count=%lu requested=%lu threads=%u gfp=%s seed=%llu\n",
		   bench_mode_names[p->mode], p->order, p->count, p->requested,
		   p->threads, p->movable ? "movable" : "kernel", p->seed);
	for (i = 0; i < p->threads; i++) {
		t = &bench_last->thread[i];
		seq_printf(m, "thread=%u cpu=%d allocs=%lu frees=%lu failures=%lu",
			   i, t->cpu, t->allocs, t->frees, t->failures);
		bench_show_ns(m, "alloc_ns", t->alloc_ns,
			      t->allocs + t->failures);
		bench_show_ns(m, "free_ns", t->free_ns, t->frees);
		seq_putc(m, '\n');
		alloc_ns += t->alloc_ns;
		free_ns += t->free_ns;
		attempts += t->allocs + t->failures;
		frees += t->frees;
		failures += t->failures;
	}
	seq_printf(m, "mean failures=%llu", failures);
	bench_show_ns(m, "alloc_ns", alloc_ns, attempts);
	bench_show_ns(m, "free_ns", free_ns, frees);
	seq_putc(m, '\n');
	mutex_unlock(&bench_lock);
	return 0;
}

/* A write drops the previous result and runs the command it holds. */
static ssize_t bench_write(struct file *file, const char __user *ubuf,
			   size_t len, loff_t *ppos)
{
	struct bench_params params;
	struct bench_run *run;
	char cmd[BENCH_CMD_MAX];
	int err;

	if (!mutex_trylock(&bench_lock))
		return -EBUSY;
	bench_run_free(bench_last);
	bench_last = NULL;

	err = -EINVAL;
	if (len >= sizeof(cmd))
		goto out_unlock;
	err = -EFAULT;
	if (copy_from_user(cmd, ubuf, len))
		goto out_unlock;
	cmd[len] = '\0';
	err = bench_parse(cmd, &params);
	if (err)
		goto out_unlock;
	err = bench_cap_count(&params);
	if (err)
		goto out_unlock;
	run = bench_run(&params);
	if (IS_ERR(run)) {
		err = PTR_ERR(run);
		goto out_unlock;
	}
	bench_last = run;
	err = len;
out_unlock:
	mutex_unlock(&bench_lock);
	return err;
}

static int bench_open(struct inode *inode, struct file *file)
{
	return single_open(file, bench_show, NULL);
}

static const struct file_operations bench_fops = {
	.owner = THIS_MODULE,
	.open = bench_open,
	.read = seq_read,
	.write = bench_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/* Creates /sys/kernel/debug/alloc_bench/run. */
static int __init alloc_bench_init(void)
{
	struct dentry *dir = debugfs_create_dir("alloc_bench", NULL);

	debugfs_create_file("run", 0600, dir, NULL, &bench_fops);
	return 0;
}
late_initcall(alloc_bench_init);
