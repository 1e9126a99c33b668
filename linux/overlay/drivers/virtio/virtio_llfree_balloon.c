// SPDX-License-Identifier: GPL-2.0
/*
 * virtio-llfree-balloon: VM memory de/inflation through the page allocator
 * the guest shares with the hypervisor (HyperAlloc).
 *
 * The host shrinks and grows the VM by operating on the llfree state of
 * each zone directly; this driver only
 *   - registers every llfree instance (one per populated zone) at probe,
 *   - installs reclaimed memory: when an allocation covers memory the host
 *     reclaimed, the allocator calls vllb_install(), which sends a request
 *     on the current CPU's install queue and busy-polls for the answer
 *     (interrupts off, no sleeping, bounded),
 *   - drops page cache when the host asks for it,
 *   - on removal, or once the device broke, resets the device and takes
 *     back everything the host reclaimed (protocol section 10).
 * The wire protocol is include/uapi/linux/virtio_llfree_balloon.h; the
 * rules cited as O1..O11 are those of docs/protocol.md.
 *
 * Booted with virtio_llfree_balloon.fault_inject=1, debugfs offers a file
 * that sends malformed requests and corrupts the shared arrays, to test
 * that the host survives a malicious guest.
 */
#include <linux/debugfs.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/page_llfree.h>
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
/* Polls between reads of the device status (each one exits to the host) */
#define VLLB_STATUS_POLLS 4096
/* Zone ids this driver hands out */
#define VLLB_MAX_ZONES (MAX_NUMNODES * MAX_NR_ZONES)

/* One install queue with its preallocated request; lock: irq-safe spinlock */
struct vllb_install_queue {
	struct virtqueue *vq;
	spinlock_t lock;
	struct virtio_llfree_balloon_install *req;	/* guarded by lock */
	struct virtio_llfree_balloon_resp *resp;	/* guarded by lock */
};

struct vllb_zone {
	struct zone *zone;
	unsigned long base_pfn;
	unsigned long frames;
};

struct virtio_llfree_balloon {
	struct virtio_device *vdev;
	struct virtqueue *zone_vq;
	struct virtqueue *event_vq;
	/* Completion of zone and event requests (the callbacks wake it) */
	wait_queue_head_t acked;

	unsigned int num_install;
	struct vllb_install_queue *install;

	/* Registered zones; written at probe before the hook is set */
	unsigned int nr_zones;
	struct vllb_zone zones[VLLB_MAX_ZONES];

	/* Page cache shrink requests; stop_lock guards stop */
	struct work_struct shrink_work;
	spinlock_t stop_lock;
	bool stop;
	u32 last_shrink_seq;

	/* Reset and take back the memory once the device broke */
	struct work_struct broken_work;
	/* Serialises vllb_teardown(); torn_down is set once it ran */
	struct mutex teardown_lock;
	bool torn_down;

	struct dentry *debugfs;
};

static bool fault_inject;
module_param(fault_inject, bool, 0444);
MODULE_PARM_DESC(fault_inject, "debugfs file that sends malformed requests (tests only)");

/* The device the install hook talks to: one per guest */
static struct virtio_llfree_balloon *vllb_dev;

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
	unsigned int i;

	for (i = 0; i < vb->nr_zones; i++) {
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
 * Install hook (page_llfree_install_t): runs inside the page allocator,
 * in any context. Interrupts stay off while this CPU owns its queue, so
 * an allocation in an interrupt cannot re-enter the same queue.
 */
static int vllb_send_install(struct virtio_llfree_balloon *vb, u16 id,
			     u64 frame, u8 order)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	struct vllb_install_queue *q;
	unsigned long flags;
	unsigned int len, polls = 0;
	u64 start, waited;
	int ret;

	q = &vb->install[raw_smp_processor_id() % vb->num_install];
	spin_lock_irqsave(&q->lock, flags);
	start = ktime_get_mono_fast_ns();

	q->req->zone = cpu_to_le16(id);
	q->req->order = order;
	q->req->frame = cpu_to_le64(frame);
	sg_init_one(&out, q->req, sizeof(*q->req));
	sg_init_one(&in, q->resp, sizeof(*q->resp));
	ret = virtqueue_add_sgs(q->vq, sgs, 1, 1, q, GFP_ATOMIC);
	if (ret)
		goto out_unlock;
	virtqueue_kick(q->vq);

	ret = -EIO;
	while (!virtqueue_get_buf(q->vq, &len)) {
		if (virtqueue_is_broken(q->vq))
			goto out_broken;
		if (++polls % VLLB_STATUS_POLLS == 0 &&
		    (vllb_needs_reset(vb) ||
		     ktime_get_mono_fast_ns() - start > VLLB_INSTALL_TIMEOUT_NS))
			goto out_broken;
		cpu_relax();
	}
	ret = len == sizeof(*q->resp) ?
		      vllb_status_errno(le32_to_cpu(q->resp->status)) : -EIO;
	goto out_unlock;

out_broken:
	/* the buffer stays in the ring until the device is reset */
	virtio_break_device(vb->vdev);
	dev_err_ratelimited(&vb->vdev->dev, "install of zone %u frame 0x%llx: device broken\n",
			    id, frame);
	schedule_work(&vb->broken_work);
out_unlock:
	waited = ktime_get_mono_fast_ns() - start;
	spin_unlock_irqrestore(&q->lock, flags);
	count_vm_event(LLFREE_INSTALL);
	count_vm_events(LLFREE_INSTALL_WAIT_US, waited / NSEC_PER_USEC);
	return ret;
}

static int vllb_install(struct zone *zone, unsigned long pfn,
			unsigned int order)
{
	struct virtio_llfree_balloon *vb = READ_ONCE(vllb_dev);
	int id, ret;

	if (!vb)
		return -EIO;
	id = vllb_zone_id(vb, zone);
	if (WARN_ON_ONCE(id < 0))
		return -EINVAL;
	ret = vllb_send_install(vb, id, pfn - vb->zones[id].base_pfn, order);
	WARN_ONCE(ret == -EINVAL, "virtio-llfree-balloon: install of pfn 0x%lx order %u rejected\n",
		  pfn, order);
	return ret;
}

/* Submit one request on the zone or event queue and wait for the answer */
static int vllb_request(struct virtio_llfree_balloon *vb, struct virtqueue *vq,
			void *req, size_t size)
{
	struct virtio_llfree_balloon_resp *resp;
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	unsigned int len;
	int ret;

	resp = kzalloc(sizeof(*resp), GFP_KERNEL);
	if (!resp)
		return -ENOMEM;
	sg_init_one(&out, req, size);
	sg_init_one(&in, resp, sizeof(*resp));
	ret = virtqueue_add_sgs(vq, sgs, 1, 1, resp, GFP_KERNEL);
	if (ret)
		goto out_free;
	virtqueue_kick(vq);
	/* a device that wants a reset answers nothing more (protocol section 10) */
	wait_event(vb->acked, virtqueue_get_buf(vq, &len) ||
			      virtqueue_is_broken(vq) || vllb_needs_reset(vb));
	if (virtqueue_is_broken(vq) || vllb_needs_reset(vb)) {
		/* the buffer stays in the ring until the device is reset */
		virtio_break_device(vb->vdev);
		schedule_work(&vb->broken_work);
		return -EIO;
	}
	ret = len == sizeof(*resp) ?
		vllb_status_errno(le32_to_cpu(resp->status)) : -EIO;
out_free:
	kfree(resp);
	return ret;
}

static void vllb_acked(struct virtqueue *vq)
{
	struct virtio_llfree_balloon *vb = vq->vdev->priv;

	wake_up(&vb->acked);
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

/* Register every populated zone; a zone the host refuses stays unmanaged */
static int vllb_register_zones(struct virtio_llfree_balloon *vb)
{
	struct virtio_llfree_balloon_zone *msg;
	struct page_llfree_info info;
	struct zone *zone;
	u32 max_zones;
	int ret = 0;

	virtio_cread_le(vb->vdev, struct virtio_llfree_balloon_config,
			max_zones, &max_zones);
	msg = kmalloc(sizeof(*msg), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;

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

		vllb_fill_zone(msg, id, zone, &info);
		err = vllb_request(vb, vb->zone_vq, msg, sizeof(*msg));
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
	kfree(msg);
	return ret;
}

/* Drop the page cache the host asked for and report how much went */
static void vllb_shrink_work(struct work_struct *work)
{
	struct virtio_llfree_balloon *vb =
		container_of(work, struct virtio_llfree_balloon, shrink_work);
	struct virtio_llfree_balloon_event *ev;
	unsigned long dropped = 0;
	u32 seq, pages;
	int ret;

	virtio_cread_le(vb->vdev, struct virtio_llfree_balloon_config,
			shrink_seq, &seq);
	virtio_cread_le(vb->vdev, struct virtio_llfree_balloon_config,
			shrink_pages, &pages);
	if (seq == 0 || seq == vb->last_shrink_seq)
		return;
	vb->last_shrink_seq = seq;

	dropped = shrink_all_memory(pages);
	ev = kzalloc(sizeof(*ev), GFP_KERNEL);
	if (!ev)
		return;
	ev->type = cpu_to_le16(VIRTIO_LLFREE_BALLOON_EVENT_SHRINK_DONE);
	ev->seq = cpu_to_le32(seq);
	ev->pages = cpu_to_le64(dropped);
	ret = vllb_request(vb, vb->event_vq, ev, sizeof(*ev));
	if (ret)
		dev_warn_ratelimited(&vb->vdev->dev, "shrink report %u: %d\n",
				     seq, ret);
	kfree(ev);
}

static void vllb_config_changed(struct virtio_device *vdev)
{
	struct virtio_llfree_balloon *vb = vdev->priv;
	unsigned long flags;

	/* DEVICE_NEEDS_RESET comes with a config change: wake the waiters */
	wake_up(&vb->acked);
	if (!virtio_has_feature(vdev, VIRTIO_LLFREE_BALLOON_F_SHRINK_PAGECACHE))
		return;
	spin_lock_irqsave(&vb->stop_lock, flags);
	if (!vb->stop)
		queue_work(system_freezable_wq, &vb->shrink_work);
	spin_unlock_irqrestore(&vb->stop_lock, flags);
}

/*
 * Stop HyperAlloc in this guest (protocol section 10): no more installs,
 * reset the device, which stops reclaiming and backs every frame again,
 * then take back every reclaimed frame. The queues stay until removal.
 */
static void vllb_teardown(struct virtio_llfree_balloon *vb)
{
	unsigned long returned = 0;
	unsigned int i;

	mutex_lock(&vb->teardown_lock);
	if (vb->torn_down)
		goto out_unlock;
	vb->torn_down = true;

	spin_lock_irq(&vb->stop_lock);
	vb->stop = true;
	spin_unlock_irq(&vb->stop_lock);
	cancel_work_sync(&vb->shrink_work);

	/* from here on allocations clear the reclaimed flags themselves */
	page_llfree_clear_install_hook();
	virtio_reset_device(vb->vdev);
	for (i = 0; i < vb->nr_zones; i++)
		returned += page_llfree_unreclaim_zone(vb->zones[i].zone);
	dev_info(&vb->vdev->dev, "device reset, %lu MiB the host had taken are the guest's again\n",
		 (returned << VIRTIO_LLFREE_BALLOON_CHILD_ORDER) >> (20 - PAGE_SHIFT));
out_unlock:
	mutex_unlock(&vb->teardown_lock);
}

static void vllb_broken_work(struct work_struct *work)
{
	struct virtio_llfree_balloon *vb =
		container_of(work, struct virtio_llfree_balloon, broken_work);

	dev_err(&vb->vdev->dev, "device broken: resetting it; memory is no longer managed by the host\n");
	vllb_teardown(vb);
}

/*
 * Fault injection for tests of the host (fault_inject=1). One command per
 * write; the write fails with the errno the device's answer maps to:
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
	struct virtio_llfree_balloon_zone *msg;
	struct page_llfree_info info;
	char *tok, *val;
	u64 v;
	int ret;

	if (!vb->nr_zones || !page_llfree_zone_info(vb->zones[0].zone, &info))
		return -ENODEV;
	msg = kmalloc(sizeof(*msg), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	vllb_fill_zone(msg, 0, vb->zones[0].zone, &info);
	while ((tok = strsep(&args, " \t\n"))) {
		if (!*tok)
			continue;
		val = strchr(tok, '=');
		if (!val || kstrtou64(val + 1, 0, &v)) {
			ret = -EINVAL;
			goto out_free;
		}
		*val = '\0';
		ret = vllb_set_zone_field(msg, tok, v);
		if (ret)
			goto out_free;
	}
	ret = vllb_request(vb, vb->zone_vq, msg, sizeof(*msg));
out_free:
	kfree(msg);
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
	if (READ_ONCE(vb->torn_down))
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
		ret = vllb_request(vb, vb->zone_vq, buf, 8);
	} else if (!strcmp(cmd, "install")) {
		if (sscanf(args, "%u %llu %u", &id, &frame, &order) == 3 &&
		    id <= U16_MAX && order <= U8_MAX)
			ret = vllb_send_install(vb, id, frame, order);
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

/* Find the queues and preallocate the install requests */
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
	for (i = 2; i < nvqs; i++)
		names[i] = "install";

	ret = virtio_find_vqs(vb->vdev, nvqs, vqs, callbacks, names, NULL);
	if (ret)
		goto out_free;
	vb->zone_vq = vqs[VIRTIO_LLFREE_BALLOON_VQ_ZONE];
	vb->event_vq = vqs[VIRTIO_LLFREE_BALLOON_VQ_EVENT];
	for (i = 0; i < vb->num_install; i++) {
		struct vllb_install_queue *q = &vb->install[i];

		q->vq = vqs[VIRTIO_LLFREE_BALLOON_VQ_INSTALL_BASE + i];
		spin_lock_init(&q->lock);
		q->req = kzalloc(sizeof(*q->req), GFP_KERNEL);
		q->resp = kzalloc(sizeof(*q->resp), GFP_KERNEL);
		if (!q->req || !q->resp) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
out_free:
	kfree(vqs);
	kfree(callbacks);
	kfree(names);
	return ret;
}

static void vllb_free_install(struct virtio_llfree_balloon *vb)
{
	unsigned int i;

	for (i = 0; i < vb->num_install; i++) {
		kfree(vb->install[i].req);
		kfree(vb->install[i].resp);
	}
	kfree(vb->install);
}

static int vllb_validate(struct virtio_device *vdev)
{
	/*
	 * Indirect descriptors are allocated with kmalloc(), which may
	 * recurse into the page allocator and so into an install on the
	 * queue this CPU already holds (protocol section 5).
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
	INIT_WORK(&vb->shrink_work, vllb_shrink_work);
	INIT_WORK(&vb->broken_work, vllb_broken_work);
	spin_lock_init(&vb->stop_lock);
	mutex_init(&vb->teardown_lock);

	virtio_cread_le(vdev, struct virtio_llfree_balloon_config,
			num_install_queues, &vb->num_install);
	if (vb->num_install == 0) {
		dev_err(&vdev->dev, "bad number of install queues %u\n",
			vb->num_install);
		ret = -EINVAL;
		goto out_free_vb;
	}
	vb->install = kcalloc(vb->num_install, sizeof(*vb->install),
			      GFP_KERNEL);
	if (!vb->install) {
		ret = -ENOMEM;
		goto out_free_vb;
	}
	ret = vllb_init_vqs(vb);
	if (ret)
		goto out_free_install;

	virtio_device_ready(vdev);

	WRITE_ONCE(vllb_dev, vb);
	ret = page_llfree_set_install_hook(vllb_install);
	if (ret)
		goto out_reset;
	ret = vllb_register_zones(vb);
	if (ret) {
		/* the host may have reclaimed from the zones it accepted */
		vllb_teardown(vb);
		cancel_work_sync(&vb->broken_work);
		goto out_del_vqs;
	}
	dev_info(&vdev->dev, "%u zones registered, %u install queues\n",
		 vb->nr_zones, vb->num_install);
	if (fault_inject) {
		vb->debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
		debugfs_create_file("inject", 0200, vb->debugfs, vb,
				    &vllb_inject_fops);
	}
	return 0;

out_reset:
	virtio_reset_device(vdev);
out_del_vqs:
	WRITE_ONCE(vllb_dev, NULL);
	vdev->config->del_vqs(vdev);
out_free_install:
	vllb_free_install(vb);
out_free_vb:
	kfree(vb);
	return ret;
}

static void vllb_remove(struct virtio_device *vdev)
{
	struct virtio_llfree_balloon *vb = vdev->priv;

	debugfs_remove(vb->debugfs);
	vllb_teardown(vb);
	cancel_work_sync(&vb->broken_work);
	WRITE_ONCE(vllb_dev, NULL);
	vdev->config->del_vqs(vdev);
	vllb_free_install(vb);
	kfree(vb);
}

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
};

module_virtio_driver(virtio_llfree_balloon_driver);
MODULE_DEVICE_TABLE(virtio, vllb_id_table);
MODULE_DESCRIPTION("virtio-llfree-balloon: HyperAlloc memory de/inflation");
MODULE_LICENSE("GPL");
