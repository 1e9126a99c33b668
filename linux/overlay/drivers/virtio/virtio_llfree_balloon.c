// SPDX-License-Identifier: GPL-2.0
/*
 * virtio-llfree-balloon: VM memory de/inflation through the page allocator
 * the guest shares with the hypervisor (HyperAlloc).
 *
 * The host shrinks and grows the VM by operating on the llfree state of
 * each zone directly; this driver only
 *   - registers every llfree instance (one per populated zone) at probe
 *     and on resume,
 *   - installs reclaimed memory: when an allocation covers memory the host
 *     reclaimed, the allocator calls vllb_install(), which sends a request
 *     on the current CPU's install queue and waits for the answer: it
 *     sleeps if the allocation may sleep, else it polls with interrupts as
 *     the caller had them; either way for at most
 *     VLLB_INSTALL_TIMEOUT_NS,
 *   - drops page cache when the host asks for it (never anonymous memory),
 *   - stops HyperAlloc in this guest on removal, suspend, reboot and kexec,
 *     and once the device broke or stopped answering: it resets the device
 *     and takes back everything the host reclaimed (protocol section 10).
 * Every wait on the host is bounded. The wire protocol is
 * include/uapi/linux/virtio_llfree_balloon.h; the rules cited as O1..O11
 * are those of docs/protocol.md.
 *
 * With CONFIG_VIRTIO_LLFREE_BALLOON_DEBUG the driver has test hooks (see
 * the end of this file); production kernels leave it off.
 */
#include <linux/bitops.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/page_llfree.h>
#include <linux/reboot.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/swap.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_llfree_balloon.h>
#include <linux/virtio_ring.h>
#include <linux/vmstat.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

/* How long an install may take before the device counts as broken */
#define VLLB_INSTALL_TIMEOUT_NS (10 * NSEC_PER_SEC)
/* How long an install that may sleep polls first: most answers come sooner */
#define VLLB_INSTALL_SPIN_NS (20 * NSEC_PER_USEC)
/* How long a registration or event may take before the device counts as broken */
#define VLLB_REQUEST_TIMEOUT (20 * HZ)
/* Polls between reads of the device status (each one exits to the host) */
#define VLLB_STATUS_POLLS 4096
/* Zone ids this driver hands out */
#define VLLB_MAX_ZONES (MAX_NUMNODES * MAX_NR_ZONES)

/* One install request in flight: its DMA buffers and the device's answer */
struct vllb_install_slot {
	struct virtio_llfree_balloon_install req;
	struct virtio_llfree_balloon_resp resp;
	unsigned int len;	/* used length, once done */
	bool done;		/* the device returned the buffers */
};

/*
 * An install queue: as many requests in flight as the ring holds, so an
 * interrupt that allocates on a CPU whose request is in flight sends its
 * own. lock (irq-safe, held only around ring operations) guards the ring,
 * busy and the slots' len and done; a slot's req and resp belong to the
 * installer that claimed it.
 */
struct vllb_install_queue {
	struct virtqueue *vq;
	spinlock_t lock;
	unsigned long busy;		/* claimed slots */
	unsigned int nr_slots;
	struct vllb_install_slot *slots;
	wait_queue_head_t wait;		/* installers that sleep */
};

struct vllb_zone {
	struct zone *zone;
	unsigned long base_pfn;
	unsigned long frames;
};

/* Zone and event requests: one at a time, in buffers that outlive the rings */
struct vllb_request_bufs {
	union {
		struct virtio_llfree_balloon_zone zone;
		struct virtio_llfree_balloon_event event;
	} req;
	struct virtio_llfree_balloon_resp resp;
};

struct virtio_llfree_balloon {
	struct virtio_device *vdev;
	struct virtqueue *zone_vq;
	struct virtqueue *event_vq;
	/* Answers on the zone and event queue, config changes and breakage */
	wait_queue_head_t acked;
	/* Serialises zone and event requests; guards bufs */
	struct mutex request_lock;
	struct vllb_request_bufs *bufs;

	unsigned int num_install;
	struct vllb_install_queue *install;

	/* Registered zones; written by vllb_start() before any install */
	unsigned int nr_zones;
	struct vllb_zone zones[VLLB_MAX_ZONES];

	/* Page cache shrink requests; shrink_lock guards shrink_stop */
	struct work_struct shrink_work;
	spinlock_t shrink_lock;
	bool shrink_stop;
	u32 last_shrink_seq;

	/*
	 * Stopping: installs send nothing more; those that may sleep wait for
	 * the reset (see vllb_install()). reset_done is set once the device
	 * is reset, and wakes them on `acked`.
	 */
	bool installs_blocked;
	bool reset_done;
	/* Installs past the installs_blocked check; vllb_stop() waits for 0 */
	atomic_t installs_inflight;
	/* The device broke or did not answer: nothing more is sent */
	bool broken;
	/* Resets the device and takes back the memory once it broke */
	struct work_struct broken_work;
	/* Serialises vllb_start() and vllb_stop(); guards stopped */
	struct mutex state_lock;
	bool stopped;

	struct notifier_block reboot_nb;
	struct dentry *debugfs;
};

/* The device the install hook talks to: one per guest */
static struct virtio_llfree_balloon *vllb_dev;

static void vllb_debug_init(struct virtio_llfree_balloon *vb);
static void vllb_debug_teardown_delay(struct virtio_llfree_balloon *vb);

/* Protocol zone type of a kernel zone, or -1 for zones we don't register */
static int vllb_zone_type(struct zone *zone)
{
	switch (zone_idx(zone)) {
#ifdef CONFIG_ZONE_DMA
	case ZONE_DMA:
		return VIRTIO_LLFREE_BALLOON_ZONE_DMA;
#endif
#ifdef CONFIG_ZONE_DMA32
	case ZONE_DMA32:
		return VIRTIO_LLFREE_BALLOON_ZONE_DMA32;
#endif
	case ZONE_NORMAL:
		return VIRTIO_LLFREE_BALLOON_ZONE_NORMAL;
	case ZONE_MOVABLE:
		return VIRTIO_LLFREE_BALLOON_ZONE_MOVABLE;
	default:
		return -1;
	}
}

/* Zone id registered for a kernel zone, or -1 */
static int vllb_zone_id(struct virtio_llfree_balloon *vb, struct zone *zone)
{
	unsigned int i, nr = smp_load_acquire(&vb->nr_zones);

	for (i = 0; i < nr; i++) {
		if (vb->zones[i].zone == zone)
			return i;
	}
	return -1;
}

/* Map a response status to the one errno it means (protocol section 6) */
static int vllb_status_errno(u32 status)
{
	switch (status) {
	case VIRTIO_LLFREE_BALLOON_S_OK:
		return 0;
	case VIRTIO_LLFREE_BALLOON_S_HOST:
		return -ENOMEM;
	case VIRTIO_LLFREE_BALLOON_S_VERSION:
		return -EPROTO;
	case VIRTIO_LLFREE_BALLOON_S_ADDRESS:
		return -EFAULT;
	default:
		return -EINVAL;
	}
}

/* Whether the device asked for a reset (virtio_error() on the host) */
static bool vllb_needs_reset(struct virtio_llfree_balloon *vb)
{
	return vb->vdev->config->get_status(vb->vdev) &
	       VIRTIO_CONFIG_S_NEEDS_RESET;
}

/*
 * The device broke or stopped answering: every waiter gives up and the
 * device is reset from a worker. Any context.
 */
static void vllb_mark_broken(struct virtio_llfree_balloon *vb)
{
	unsigned int i;

	WRITE_ONCE(vb->broken, true);
	wake_up_all(&vb->acked);
	for (i = 0; i < vb->num_install; i++)
		wake_up_all(&vb->install[i].wait);
	schedule_work(&vb->broken_work);
}

/* Collect the answers the device returned */
static void vllb_install_reap(struct vllb_install_queue *q)
{
	struct vllb_install_slot *slot;
	unsigned int len;

	lockdep_assert_held(&q->lock);
	while ((slot = virtqueue_get_buf(q->vq, &len))) {
		slot->len = len;
		WRITE_ONCE(slot->done, true);
	}
}

/* Install queue callback: collects answers for the installers that sleep */
static void vllb_install_done(struct virtqueue *vq)
{
	struct virtio_llfree_balloon *vb = vq->vdev->priv;
	struct vllb_install_queue *q =
		&vb->install[vq->index - VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE];
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	vllb_install_reap(q);
	spin_unlock_irqrestore(&q->lock, flags);
	wake_up_all(&q->wait);
}

/*
 * Claim a free slot of q, or, with *slot set, check whether its answer
 * came; under the lock after reaping. Return: whether the wait is over.
 */
static bool vllb_install_ready(struct vllb_install_queue *q,
			       struct vllb_install_slot **slot)
{
	unsigned int i;

	lockdep_assert_held(&q->lock);
	if (*slot)
		return (*slot)->done;
	i = find_first_zero_bit(&q->busy, q->nr_slots);
	if (i >= q->nr_slots)
		return false;
	__set_bit(i, &q->busy);
	*slot = &q->slots[i];
	(*slot)->done = false;
	return true;
}

/*
 * Wait until vllb_install_ready() says so: poll, and once the poll took
 * VLLB_INSTALL_SPIN_NS, sleep if may_sleep (woken by the queue's callback,
 * polling every jiffy in case the device does not notify). Bounded by
 * VLLB_INSTALL_TIMEOUT_NS from start.
 * Return: 0, -EIO if the device broke, -ETIMEDOUT.
 */
static int vllb_install_wait(struct virtio_llfree_balloon *vb,
			     struct vllb_install_queue *q,
			     struct vllb_install_slot **slot, bool may_sleep,
			     u64 start)
{
	unsigned int polls = 0;
	unsigned long flags;
	u64 elapsed;
	bool ready;

	for (;;) {
		spin_lock_irqsave(&q->lock, flags);
		vllb_install_reap(q);
		ready = vllb_install_ready(q, slot);
		spin_unlock_irqrestore(&q->lock, flags);
		if (ready)
			return 0;
		if (READ_ONCE(vb->broken) || virtqueue_is_broken(q->vq))
			return -EIO;
		elapsed = ktime_get_mono_fast_ns() - start;
		if (elapsed > VLLB_INSTALL_TIMEOUT_NS)
			return -ETIMEDOUT;
		if (may_sleep && elapsed > VLLB_INSTALL_SPIN_NS) {
			if (vllb_needs_reset(vb))
				return -EIO;
			wait_event_timeout(q->wait,
					   READ_ONCE(vb->broken) ||
					   (*slot && READ_ONCE((*slot)->done)),
					   1);
			continue;
		}
		if (++polls % VLLB_STATUS_POLLS == 0 && vllb_needs_reset(vb))
			return -EIO;
		cpu_relax();
	}
}

/* Give a slot back once its buffers are out of the ring */
static void vllb_install_release(struct vllb_install_queue *q,
				 struct vllb_install_slot *slot)
{
	unsigned long flags;

	spin_lock_irqsave(&q->lock, flags);
	__clear_bit(slot - q->slots, &q->busy);
	spin_unlock_irqrestore(&q->lock, flags);
	if (wq_has_sleeper(&q->wait))
		wake_up_all(&q->wait);
}

/*
 * Send one install request on the current CPU's queue and wait for the
 * answer (see vllb_install_wait()). Return: 0 or the errno of the answer
 * (vllb_status_errno()); -EIO if the device broke or timed out, which also
 * starts its reset.
 */
static int vllb_send_install(struct virtio_llfree_balloon *vb, u16 id,
			     u64 frame, u8 order, bool may_sleep)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	struct vllb_install_slot *slot = NULL;
	struct vllb_install_queue *q;
	u64 start = ktime_get_mono_fast_ns();
	unsigned long flags;
	bool kick;
	int ret;

	q = &vb->install[raw_smp_processor_id() % vb->num_install];
	ret = vllb_install_wait(vb, q, &slot, may_sleep, start);
	if (ret)
		goto out_broken;

	slot->req.zone = cpu_to_le16(id);
	slot->req.order = order;
	slot->req.padding0 = 0;
	slot->req.padding1 = 0;
	slot->req.frame = cpu_to_le64(frame);
	sg_init_one(&out, &slot->req, sizeof(slot->req));
	sg_init_one(&in, &slot->resp, sizeof(slot->resp));
	spin_lock_irqsave(&q->lock, flags);
	ret = virtqueue_add_sgs(q->vq, sgs, 1, 1, slot, GFP_ATOMIC);
	kick = !ret && virtqueue_kick_prepare(q->vq);
	spin_unlock_irqrestore(&q->lock, flags);
	if (ret) {
		/* a slot always has room in the ring: the ring is broken */
		vllb_install_release(q, slot);
		ret = -EIO;
		goto out_broken;
	}
	if (kick)
		virtqueue_notify(q->vq);

	ret = vllb_install_wait(vb, q, &slot, may_sleep, start);
	if (ret)
		goto out_broken; /* the buffers stay in the ring until the reset */
	ret = slot->len == sizeof(slot->resp) ?
		      vllb_status_errno(le32_to_cpu(slot->resp.status)) : -EIO;
	vllb_install_release(q, slot);
	return ret;

out_broken:
	dev_err_ratelimited(&vb->vdev->dev, "install of zone %u frame 0x%llx: %s\n",
			    id, frame, ret == -ETIMEDOUT ? "no answer" : "device broken");
	vllb_mark_broken(vb);
	return -EIO;
}

/*
 * An install that meets a device being stopped, or broken (which gets it
 * stopped): once the device is reset the host backs everything and
 * reclaims nothing, so an install that may sleep waits for that and
 * reports the memory backed; one that may not fails, and its allocation
 * takes other memory.
 */
static int vllb_install_stopping(struct virtio_llfree_balloon *vb,
				 bool may_sleep)
{
	if (!may_sleep)
		return -EAGAIN;
	if (!wait_event_timeout(vb->acked, READ_ONCE(vb->reset_done),
				VLLB_REQUEST_TIMEOUT))
		return -EIO;
	return PAGE_LLFREE_INSTALL_BACKED;
}

/* The install hook (page_llfree_install_t) */
static int vllb_install(struct zone *zone, unsigned long pfn,
			unsigned int order, gfp_t gfp)
{
	struct virtio_llfree_balloon *vb = READ_ONCE(vllb_dev);
	bool may_sleep = gfpflags_allow_blocking(gfp);
	int id, ret;

	if (!vb)
		return -EIO;
	atomic_inc(&vb->installs_inflight);
	/* pairs with the barrier in vllb_stop() */
	smp_mb__after_atomic();
	if (READ_ONCE(vb->installs_blocked) || READ_ONCE(vb->broken)) {
		if (atomic_dec_and_test(&vb->installs_inflight))
			wake_up_all(&vb->acked);
		return vllb_install_stopping(vb, may_sleep);
	}
	id = vllb_zone_id(vb, zone);
	if (WARN_ON_ONCE(id < 0))
		ret = -EINVAL;
	else
		ret = vllb_send_install(vb, id, pfn - vb->zones[id].base_pfn,
					order, may_sleep);
	if (atomic_dec_and_test(&vb->installs_inflight))
		wake_up_all(&vb->acked);
	WARN_ONCE(ret == -EINVAL, "virtio-llfree-balloon: install of pfn 0x%lx order %u rejected\n",
		  pfn, order);
	/* an install the device never answered: the stop resets it */
	return ret == -EIO ? vllb_install_stopping(vb, may_sleep) : ret;
}

/* Whether the request on vq is answered, or will never be */
static bool vllb_request_over(struct virtio_llfree_balloon *vb,
			      struct virtqueue *vq, unsigned int *len)
{
	return virtqueue_get_buf(vq, len) || READ_ONCE(vb->broken) ||
	       virtqueue_is_broken(vq) || vllb_needs_reset(vb);
}

/*
 * Submit the request in vb->bufs (`size` bytes) on the zone or event queue
 * and wait for the answer, at most VLLB_REQUEST_TIMEOUT.
 * Return: 0 or the errno of the answer; -EIO if the device broke or did
 * not answer in time, which also starts its reset.
 */
static int vllb_request(struct virtio_llfree_balloon *vb, struct virtqueue *vq,
			size_t size)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	unsigned int len = 0;
	long left;
	int ret;

	lockdep_assert_held(&vb->request_lock);
	if (READ_ONCE(vb->broken))
		return -EIO;
	sg_init_one(&out, &vb->bufs->req, size);
	sg_init_one(&in, &vb->bufs->resp, sizeof(vb->bufs->resp));
	ret = virtqueue_add_sgs(vq, sgs, 1, 1, vb->bufs, GFP_KERNEL);
	if (ret)
		return ret;
	virtqueue_kick(vq);
	/* a device that wants a reset answers nothing more (protocol section 10) */
	left = wait_event_timeout(vb->acked, vllb_request_over(vb, vq, &len),
				  VLLB_REQUEST_TIMEOUT);
	if (len)
		return len == sizeof(vb->bufs->resp) ?
			vllb_status_errno(le32_to_cpu(vb->bufs->resp.status)) :
			-EIO;
	/* the buffers stay in the ring until the reset */
	dev_err(&vb->vdev->dev, "%s request: %s\n", vq->name,
		left ? "device broken" : "no answer");
	vllb_mark_broken(vb);
	return -EIO;
}

static void vllb_acked(struct virtqueue *vq)
{
	struct virtio_llfree_balloon *vb = vq->vdev->priv;

	wake_up_all(&vb->acked);
}

/* Registration message of one zone from its llfree state */
static void vllb_fill_zone(struct virtio_llfree_balloon_zone *msg, u16 id,
			   struct zone *zone, const struct page_llfree_info *info)
{
	memset(msg, 0, sizeof(*msg));
	msg->version = cpu_to_le16(VIRTIO_LLFREE_BALLOON_VERSION);
	msg->zone = cpu_to_le16(id);
	msg->node = cpu_to_le16(zone_to_nid(zone));
	msg->type = vllb_zone_type(zone);
	msg->cores = cpu_to_le32(info->cores);
	msg->base_pfn = cpu_to_le64(info->base_pfn);
	msg->frames = cpu_to_le64(info->frames);
	msg->trees_gpa = cpu_to_le64(info->trees);
	msg->trees_len = cpu_to_le64(info->trees_size);
	msg->lower_gpa = cpu_to_le64(info->lower);
	msg->lower_len = cpu_to_le64(info->lower_size);
	msg->free_pages_gpa =
		cpu_to_le64(virt_to_phys(&zone->vm_stat[NR_FREE_PAGES]));
	msg->global_free_pages_gpa =
		cpu_to_le64(__pa_symbol(&vm_zone_stat[NR_FREE_PAGES]));
	msg->file_pages_gpa = cpu_to_le64(
		virt_to_phys(&zone->zone_pgdat->vm_stat[NR_FILE_PAGES]));
}

/*
 * Register every populated zone of every node; a zone the host refuses
 * stays unmanaged. Return: -EIO if the device broke, else 0.
 */
static int vllb_register_zones(struct virtio_llfree_balloon *vb)
{
	struct page_llfree_info info;
	struct zone *zone;
	u32 max_zones;
	int ret = 0;

	virtio_cread_le(vb->vdev, struct virtio_llfree_balloon_config,
			max_zones, &max_zones);
	mutex_lock(&vb->request_lock);
	for_each_populated_zone(zone) {
		unsigned int id = vb->nr_zones;
		int err;

		if (vllb_zone_type(zone) < 0 ||
		    !page_llfree_zone_info(zone, &info))
			continue;
		if (id >= max_zones || id >= VLLB_MAX_ZONES) {
			dev_warn(&vb->vdev->dev, "zone %s of node %d not registered: device takes %u zones\n",
				 zone->name, zone_to_nid(zone), max_zones);
			continue;
		}
		/* installs for this zone must work before the host can reclaim (O2) */
		vb->zones[id].zone = zone;
		vb->zones[id].base_pfn = info.base_pfn;
		vb->zones[id].frames = info.frames;
		smp_store_release(&vb->nr_zones, id + 1);

		vllb_fill_zone(&vb->bufs->req.zone, id, zone, &info);
		err = vllb_request(vb, vb->zone_vq, sizeof(vb->bufs->req.zone));
		if (err == -EIO) {
			ret = err;
			break;
		}
		if (err)
			dev_warn(&vb->vdev->dev, "zone %s of node %d stays unmanaged: %d\n",
				 zone->name, zone_to_nid(zone), err);
		else
			dev_dbg(&vb->vdev->dev, "registered zone %s of node %d as %u\n",
				zone->name, zone_to_nid(zone), id);
	}
	mutex_unlock(&vb->request_lock);
	return ret;
}

/*
 * Drop the page cache the host asked for and report how much went. The
 * request is clamped to the page cache that can go (not shmem, which only
 * swap could take), reclaim never touches anonymous memory, and every
 * request gets its answer, 0 pages if nothing could go.
 */
static void vllb_shrink_work(struct work_struct *work)
{
	struct virtio_llfree_balloon *vb =
		container_of(work, struct virtio_llfree_balloon, shrink_work);
	struct virtio_llfree_balloon_event *ev = &vb->bufs->req.event;
	unsigned long file, dropped = 0;
	u32 seq, pages;
	int ret;

	virtio_cread_le(vb->vdev, struct virtio_llfree_balloon_config,
			shrink_seq, &seq);
	virtio_cread_le(vb->vdev, struct virtio_llfree_balloon_config,
			shrink_pages, &pages);
	if (seq == 0 || seq == vb->last_shrink_seq)
		return;
	vb->last_shrink_seq = seq;

	file = global_node_page_state(NR_FILE_PAGES) -
	       global_node_page_state(NR_SHMEM);
	if ((long)file > 0 && pages)
		dropped = shrink_page_cache(min_t(unsigned long, pages, file));

	mutex_lock(&vb->request_lock);
	memset(ev, 0, sizeof(*ev));
	ev->type = cpu_to_le16(VIRTIO_LLFREE_BALLOON_EVENT_SHRINK_DONE);
	ev->seq = cpu_to_le32(seq);
	ev->pages = cpu_to_le64(dropped);
	ret = vllb_request(vb, vb->event_vq, sizeof(*ev));
	mutex_unlock(&vb->request_lock);
	if (ret)
		dev_warn_ratelimited(&vb->vdev->dev, "shrink report %u: %d\n",
				     seq, ret);
}

static void vllb_config_changed(struct virtio_device *vdev)
{
	struct virtio_llfree_balloon *vb = vdev->priv;
	unsigned long flags;

	/* DEVICE_NEEDS_RESET comes with a config change: wake the waiters */
	wake_up_all(&vb->acked);
	if (!virtio_has_feature(vdev, VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE))
		return;
	spin_lock_irqsave(&vb->shrink_lock, flags);
	if (!vb->shrink_stop)
		queue_work(system_freezable_wq, &vb->shrink_work);
	spin_unlock_irqrestore(&vb->shrink_lock, flags);
}

/*
 * Stop HyperAlloc in this guest (protocol section 10). Until the reset has
 * completed the host may still reclaim and discard, so no allocation may
 * use reclaimed memory before that: installs stop first (those that may
 * sleep wait for the reset, the others fail and their allocations take
 * other memory), the installs in flight get their answers, the device is
 * reset, and only then do the waiting installs go on, with the memory
 * backed, and is the install hook cleared: from then on an allocation that
 * meets a reclaimed flag clears it itself. Last, every reclaimed frame is
 * taken back. The queues stay until removal or freeze.
 */
static void vllb_stop(struct virtio_llfree_balloon *vb)
{
	unsigned long returned = 0;
	unsigned int i;

	mutex_lock(&vb->state_lock);
	if (vb->stopped)
		goto out_unlock;
	vb->stopped = true;

	spin_lock_irq(&vb->shrink_lock);
	vb->shrink_stop = true;
	spin_unlock_irq(&vb->shrink_lock);
	cancel_work_sync(&vb->shrink_work);

	WRITE_ONCE(vb->installs_blocked, true);
	/* pairs with the barrier in vllb_install(); bounded by their deadline */
	smp_mb();
	wait_event(vb->acked, !atomic_read(&vb->installs_inflight));
	vllb_debug_teardown_delay(vb);
	virtio_reset_device(vb->vdev);
	WRITE_ONCE(vb->reset_done, true);
	wake_up_all(&vb->acked);
	page_llfree_clear_install_hook();

	for (i = 0; i < vb->nr_zones; i++)
		returned += page_llfree_unreclaim_zone(vb->zones[i].zone);
	dev_info(&vb->vdev->dev, "device reset, %lu MiB the host had taken are the guest's again\n",
		 (returned << VIRTIO_LLFREE_BALLOON_CHILD_ORDER) >> (20 - PAGE_SHIFT));
out_unlock:
	mutex_unlock(&vb->state_lock);
}

static void vllb_broken_work(struct work_struct *work)
{
	struct virtio_llfree_balloon *vb =
		container_of(work, struct virtio_llfree_balloon, broken_work);

	dev_err(&vb->vdev->dev, "device broken: resetting it; memory is no longer managed by the host\n");
	vllb_stop(vb);
}

/*
 * Reboot and kexec: the host must stop before the next kernel (or the
 * firmware) reuses the memory its arrays describe.
 */
static int vllb_reboot(struct notifier_block *nb, unsigned long action,
		       void *data)
{
	struct virtio_llfree_balloon *vb =
		container_of(nb, struct virtio_llfree_balloon, reboot_nb);

	vllb_stop(vb);
	return NOTIFY_DONE;
}

/* Free the install slots and delete the queues; the device is reset */
static void vllb_del_vqs(struct virtio_llfree_balloon *vb)
{
	unsigned int i;

	vb->vdev->config->del_vqs(vb->vdev);
	for (i = 0; i < vb->num_install; i++) {
		kfree(vb->install[i].slots);
		vb->install[i].slots = NULL;
	}
}

/* Find the queues and give each install queue as many slots as its ring holds */
static int vllb_init_vqs(struct virtio_llfree_balloon *vb)
{
	unsigned int i, nvqs = 2 + vb->num_install;
	vq_callback_t **callbacks;
	struct virtqueue **vqs;
	const char **names;
	int ret = -ENOMEM;

	vqs = kcalloc(nvqs, sizeof(*vqs), GFP_KERNEL);
	callbacks = kcalloc(nvqs, sizeof(*callbacks), GFP_KERNEL);
	names = kcalloc(nvqs, sizeof(*names), GFP_KERNEL);
	if (!vqs || !callbacks || !names)
		goto out_free;

	callbacks[VIRTIO_LLFREE_BALLOON_VQ_ZONE] = vllb_acked;
	names[VIRTIO_LLFREE_BALLOON_VQ_ZONE] = "zone";
	callbacks[VIRTIO_LLFREE_BALLOON_VQ_EVENT] = vllb_acked;
	names[VIRTIO_LLFREE_BALLOON_VQ_EVENT] = "event";
	for (i = 2; i < nvqs; i++) {
		callbacks[i] = vllb_install_done;
		names[i] = "install";
	}

	ret = virtio_find_vqs(vb->vdev, nvqs, vqs, callbacks, names, NULL);
	if (ret)
		goto out_free;
	vb->zone_vq = vqs[VIRTIO_LLFREE_BALLOON_VQ_ZONE];
	vb->event_vq = vqs[VIRTIO_LLFREE_BALLOON_VQ_EVENT];
	for (i = 0; i < vb->num_install; i++) {
		struct vllb_install_queue *q = &vb->install[i];

		q->vq = vqs[VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE + i];
		/* a request takes two descriptors; the slots fit in one word */
		q->nr_slots = min_t(unsigned int,
				    virtqueue_get_vring_size(q->vq) / 2,
				    BITS_PER_LONG);
		q->busy = 0;
		q->slots = kcalloc(q->nr_slots, sizeof(*q->slots), GFP_KERNEL);
		if (!q->nr_slots || !q->slots) {
			dev_err(&vb->vdev->dev, "install queue %u: %u entries\n",
				i, virtqueue_get_vring_size(q->vq));
			vllb_del_vqs(vb);
			ret = q->nr_slots ? -ENOMEM : -EINVAL;
			goto out_free;
		}
	}
out_free:
	kfree(vqs);
	kfree(callbacks);
	kfree(names);
	return ret;
}

/* Allocate the request buffers; the install slots come with the rings */
static int vllb_alloc_bufs(struct virtio_llfree_balloon *vb)
{
	unsigned int i;

	vb->bufs = kzalloc(sizeof(*vb->bufs), GFP_KERNEL);
	vb->install = kcalloc(vb->num_install, sizeof(*vb->install),
			      GFP_KERNEL);
	if (!vb->bufs || !vb->install)
		return -ENOMEM;
	for (i = 0; i < vb->num_install; i++) {
		spin_lock_init(&vb->install[i].lock);
		init_waitqueue_head(&vb->install[i].wait);
	}
	return 0;
}

static void vllb_free_bufs(struct virtio_llfree_balloon *vb)
{
	kfree(vb->install);
	kfree(vb->bufs);
}

/*
 * Bring HyperAlloc up: queues, DRIVER_OK, the install hook, then the zones
 * (rule O2). On failure the device is reset and its queues are gone.
 */
static int vllb_start(struct virtio_llfree_balloon *vb)
{
	struct virtio_device *vdev = vb->vdev;
	int ret;

	ret = vllb_init_vqs(vb);
	if (ret)
		return ret;
	mutex_lock(&vb->state_lock);
	vb->stopped = false;
	vb->broken = false;
	vb->installs_blocked = false;
	vb->reset_done = false;
	vb->shrink_stop = false;
	vb->last_shrink_seq = 0;
	vb->nr_zones = 0;
	mutex_unlock(&vb->state_lock);

	virtio_device_ready(vdev);
	ret = page_llfree_set_install_hook(vllb_install);
	if (ret) {
		virtio_reset_device(vdev);
		goto out_del_vqs;
	}
	ret = vllb_register_zones(vb);
	if (ret) {
		/* the host may have reclaimed from the zones it accepted */
		vllb_stop(vb);
		cancel_work_sync(&vb->broken_work);
		goto out_del_vqs;
	}
	dev_info(&vdev->dev, "%u zones registered, %u install queues\n",
		 vb->nr_zones, vb->num_install);
	return 0;

out_del_vqs:
	vllb_del_vqs(vb);
	return ret;
}

static int vllb_validate(struct virtio_device *vdev)
{
	/*
	 * Indirect descriptors are allocated with kmalloc(), which may
	 * recurse into the page allocator and so into an install on the
	 * queue this CPU is using (protocol section 5).
	 */
	__virtio_clear_bit(vdev, VIRTIO_RING_F_INDIRECT_DESC);
	return 0;
}

static int vllb_probe(struct virtio_device *vdev)
{
	struct virtio_llfree_balloon *vb;
	u32 version;
	int ret;

	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1))
		return -ENODEV;
	if (vllb_dev) {
		dev_err(&vdev->dev, "only one virtio-llfree-balloon per guest\n");
		return -EBUSY;
	}
	virtio_cread_le(vdev, struct virtio_llfree_balloon_config, version,
			&version);
	if (version < VIRTIO_LLFREE_BALLOON_VERSION) {
		dev_err(&vdev->dev, "device speaks protocol %u, need %u\n",
			version, VIRTIO_LLFREE_BALLOON_VERSION);
		return -ENODEV;
	}

	vb = kzalloc(sizeof(*vb), GFP_KERNEL);
	if (!vb)
		return -ENOMEM;
	vdev->priv = vb;
	vb->vdev = vdev;
	init_waitqueue_head(&vb->acked);
	mutex_init(&vb->request_lock);
	INIT_WORK(&vb->shrink_work, vllb_shrink_work);
	INIT_WORK(&vb->broken_work, vllb_broken_work);
	spin_lock_init(&vb->shrink_lock);
	mutex_init(&vb->state_lock);
	vb->reboot_nb.notifier_call = vllb_reboot;

	virtio_cread_le(vdev, struct virtio_llfree_balloon_config,
			num_install_queues, &vb->num_install);
	if (vb->num_install == 0) {
		dev_err(&vdev->dev, "device offers no install queue\n");
		ret = -EINVAL;
		goto out_free;
	}
	/* CPU c uses queue c % num_install: more than one per CPU is unused */
	vb->num_install = min(vb->num_install, nr_cpu_ids);
	ret = vllb_alloc_bufs(vb);
	if (ret)
		goto out_free;

	WRITE_ONCE(vllb_dev, vb);
	ret = vllb_start(vb);
	if (ret)
		goto out_clear_dev;
	ret = register_reboot_notifier(&vb->reboot_nb);
	if (ret)
		goto out_stop;
	vllb_debug_init(vb);
	return 0;

out_stop:
	vllb_stop(vb);
	cancel_work_sync(&vb->broken_work);
	vllb_del_vqs(vb);
out_clear_dev:
	WRITE_ONCE(vllb_dev, NULL);
out_free:
	vllb_free_bufs(vb);
	kfree(vb);
	return ret;
}

static void vllb_remove(struct virtio_device *vdev)
{
	struct virtio_llfree_balloon *vb = vdev->priv;

	debugfs_remove_recursive(vb->debugfs);
	unregister_reboot_notifier(&vb->reboot_nb);
	vllb_stop(vb);
	cancel_work_sync(&vb->broken_work);
	WRITE_ONCE(vllb_dev, NULL);
	vllb_del_vqs(vb);
	vllb_free_bufs(vb);
	kfree(vb);
}

#ifdef CONFIG_PM_SLEEP
/*
 * Suspend: the device is reset here and again by the virtio core on
 * resume, so HyperAlloc stops as on removal (every reclaimed frame is the
 * guest's again) and starts anew on resume, where the host re-applies its
 * target.
 */
static int vllb_freeze(struct virtio_device *vdev)
{
	struct virtio_llfree_balloon *vb = vdev->priv;

	vllb_stop(vb);
	cancel_work_sync(&vb->broken_work);
	vllb_del_vqs(vb);
	return 0;
}

static int vllb_restore(struct virtio_device *vdev)
{
	return vllb_start(vdev->priv);
}
#endif

static unsigned int vllb_features[] = {
	VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE,
};

static const struct virtio_device_id vllb_id_table[] = {
	{ VIRTIO_ID_LLFREE_BALLOON, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static struct virtio_driver virtio_llfree_balloon_driver = {
	.feature_table = vllb_features,
	.feature_table_size = ARRAY_SIZE(vllb_features),
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = vllb_id_table,
	.validate = vllb_validate,
	.probe = vllb_probe,
	.remove = vllb_remove,
	.config_changed = vllb_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze = vllb_freeze,
	.restore = vllb_restore,
#endif
};

module_virtio_driver(virtio_llfree_balloon_driver);
MODULE_DEVICE_TABLE(virtio, vllb_id_table);
MODULE_DESCRIPTION("virtio-llfree-balloon: HyperAlloc memory de/inflation");
MODULE_LICENSE("GPL");

#ifdef CONFIG_VIRTIO_LLFREE_BALLOON_DEBUG
/*
 * Test hooks.
 *
 * virtio_llfree_balloon.teardown_delay_ms=N: vllb_stop() waits N ms
 * between blocking installs and resetting the device, the window in which
 * the host may still reclaim and discard.
 *
 * virtio_llfree_balloon.fault_inject=1: debugfs file
 * virtio_llfree_balloon/inject that tests that the host survives a
 * malicious guest. One command per write; the write fails with the errno
 * the device's answer maps to:
 *   zone FIELD=VALUE...     registration of zone 0 with fields replaced
 *                           (zone node type version cores base_pfn frames
 *                           trees_gpa trees_len lower_gpa lower_len
 *                           free_pages_gpa global_free_pages_gpa
 *                           file_pages_gpa)
 *   truncated               the first 8 bytes of a registration: a
 *                           malformed chain, the device must break
 *   install ZONE FRAME ORDER  an install request with these raw values
 *   poke ZONE trees|lower OFFSET VALUE
 *                           stores a 64-bit VALUE at byte OFFSET (rounded
 *                           down to 8) of a shared array: the guest's own
 *                           allocator sees it too
 */
static unsigned int teardown_delay_ms;
module_param(teardown_delay_ms, uint, 0644);
MODULE_PARM_DESC(teardown_delay_ms, "delay before the device reset when stopping (tests only)");

static bool fault_inject;
module_param(fault_inject, bool, 0444);
MODULE_PARM_DESC(fault_inject, "debugfs file that sends malformed requests (tests only)");

static void vllb_debug_teardown_delay(struct virtio_llfree_balloon *vb)
{
	unsigned int ms = READ_ONCE(teardown_delay_ms);

	if (!ms)
		return;
	dev_info(&vb->vdev->dev, "stopping: installs blocked, reset in %u ms\n",
		 ms);
	msleep(ms);
}

static int vllb_set_zone_field(struct virtio_llfree_balloon_zone *msg,
			       const char *key, u64 val)
{
	static const struct {
		const char *name;
		size_t offset, size;
	} fields[] = {
#define VLLB_FIELD(f) { #f, offsetof(struct virtio_llfree_balloon_zone, f), \
			sizeof_field(struct virtio_llfree_balloon_zone, f) }
		VLLB_FIELD(zone), VLLB_FIELD(node), VLLB_FIELD(type),
		VLLB_FIELD(version), VLLB_FIELD(cores), VLLB_FIELD(base_pfn),
		VLLB_FIELD(frames), VLLB_FIELD(trees_gpa),
		VLLB_FIELD(trees_len), VLLB_FIELD(lower_gpa),
		VLLB_FIELD(lower_len), VLLB_FIELD(free_pages_gpa),
		VLLB_FIELD(global_free_pages_gpa), VLLB_FIELD(file_pages_gpa),
#undef VLLB_FIELD
	};
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(fields); i++) {
		void *p = (u8 *)msg + fields[i].offset;

		if (strcmp(key, fields[i].name))
			continue;
		switch (fields[i].size) {
		case 1:
			*(u8 *)p = val;
			break;
		case 2:
			*(__le16 *)p = cpu_to_le16(val);
			break;
		case 4:
			*(__le32 *)p = cpu_to_le32(val);
			break;
		default:
			*(__le64 *)p = cpu_to_le64(val);
		}
		return 0;
	}
	return -EINVAL;
}

static int vllb_inject_zone(struct virtio_llfree_balloon *vb, char *args)
{
	struct virtio_llfree_balloon_zone *msg = &vb->bufs->req.zone;
	struct page_llfree_info info;
	char *tok, *val;
	u64 v;
	int ret;

	if (!vb->nr_zones || !page_llfree_zone_info(vb->zones[0].zone, &info))
		return -ENODEV;
	mutex_lock(&vb->request_lock);
	vllb_fill_zone(msg, 0, vb->zones[0].zone, &info);
	while ((tok = strsep(&args, " \t\n"))) {
		if (!*tok)
			continue;
		val = strchr(tok, '=');
		if (!val || kstrtou64(val + 1, 0, &v)) {
			ret = -EINVAL;
			goto out_unlock;
		}
		*val = '\0';
		ret = vllb_set_zone_field(msg, tok, v);
		if (ret)
			goto out_unlock;
	}
	ret = vllb_request(vb, vb->zone_vq, sizeof(*msg));
out_unlock:
	mutex_unlock(&vb->request_lock);
	return ret;
}

static int vllb_inject_truncated(struct virtio_llfree_balloon *vb)
{
	int ret;

	mutex_lock(&vb->request_lock);
	ret = vllb_request(vb, vb->zone_vq, 8);
	mutex_unlock(&vb->request_lock);
	return ret;
}

static int vllb_inject_poke(struct virtio_llfree_balloon *vb, u16 id,
			    const char *array, u64 offset, u64 val)
{
	struct page_llfree_info info;
	phys_addr_t base;
	size_t len;

	if (id >= vb->nr_zones ||
	    !page_llfree_zone_info(vb->zones[id].zone, &info))
		return -EINVAL;
	if (!strcmp(array, "trees")) {
		base = info.trees;
		len = info.trees_size;
	} else if (!strcmp(array, "lower")) {
		base = info.lower;
		len = info.lower_size;
	} else {
		return -EINVAL;
	}
	offset = ALIGN_DOWN(offset, sizeof(u64));
	if (offset + sizeof(u64) > len)
		return -EINVAL;
	WRITE_ONCE(*(u64 *)phys_to_virt(base + offset), val);
	return 0;
}

static ssize_t vllb_inject_write(struct file *file, const char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct virtio_llfree_balloon *vb = file->private_data;
	char *buf, *args, cmd[16], array[8];
	unsigned long long frame, offset, val;
	unsigned int id, order;
	int ret;

	if (count > PAGE_SIZE)
		return -E2BIG;
	if (READ_ONCE(vb->stopped))
		return -ENODEV;
	buf = memdup_user_nul(ubuf, count);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	ret = -EINVAL;
	if (sscanf(buf, "%15s", cmd) != 1)
		goto out_free;
	args = buf + strlen(cmd) + strspn(buf, " \t");
	if (!strcmp(cmd, "zone")) {
		ret = vllb_inject_zone(vb, args);
	} else if (!strcmp(cmd, "truncated")) {
		ret = vllb_inject_truncated(vb);
	} else if (!strcmp(cmd, "install")) {
		if (sscanf(args, "%u %llu %u", &id, &frame, &order) == 3 &&
		    id <= U16_MAX && order <= U8_MAX)
			ret = vllb_send_install(vb, id, frame, order, true);
	} else if (!strcmp(cmd, "poke")) {
		if (sscanf(args, "%u %7s %llu %llu", &id, array, &offset, &val) == 4)
			ret = vllb_inject_poke(vb, id, array, offset, val);
	}
out_free:
	kfree(buf);
	return ret ? ret : count;
}

static const struct file_operations vllb_inject_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vllb_inject_write,
	.llseek = no_llseek,
};

static void vllb_debug_init(struct virtio_llfree_balloon *vb)
{
	if (!fault_inject)
		return;
	vb->debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("inject", 0200, vb->debugfs, vb, &vllb_inject_fops);
}
#else
static void vllb_debug_init(struct virtio_llfree_balloon *vb)
{
}

static void vllb_debug_teardown_delay(struct virtio_llfree_balloon *vb)
{
}
#endif /* CONFIG_VIRTIO_LLFREE_BALLOON_DEBUG */
