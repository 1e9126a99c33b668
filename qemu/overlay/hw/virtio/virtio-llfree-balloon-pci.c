/*
 * virtio-llfree-balloon PCI bindings
 *
 * Copyright (C) 2025 The HyperAlloc authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "hw/qdev-properties.h"
#include "hw/virtio/virtio-llfree-balloon.h"
#include "hw/virtio/virtio-pci.h"
#include "qapi/error.h"
#include "qemu/module.h"
#include "qom/object.h"

typedef struct VirtIOLLFreeBalloonPCI VirtIOLLFreeBalloonPCI;

#define TYPE_VIRTIO_LLFREE_BALLOON_PCI "virtio-llfree-balloon-pci-base"
DECLARE_INSTANCE_CHECKER(VirtIOLLFreeBalloonPCI, VIRTIO_LLFREE_BALLOON_PCI,
                         TYPE_VIRTIO_LLFREE_BALLOON_PCI)

struct VirtIOLLFreeBalloonPCI {
    VirtIOPCIProxy parent_obj;
    VirtIOLLFreeBalloon vdev;
};

static Property virtio_llfree_balloon_pci_properties[] = {
    /*
     * Host notifiers: needed to serve install queues in IOThreads
     * (iothread-vq-mapping), as for virtio-blk
     */
    DEFINE_PROP_BIT("ioeventfd", VirtIOPCIProxy, flags,
                    VIRTIO_PCI_FLAG_USE_IOEVENTFD_BIT, true),
    /* Configuration, zone and event queue; install queues have none */
    DEFINE_PROP_UINT32("vectors", VirtIOPCIProxy, nvectors, 3),
    DEFINE_PROP_END_OF_LIST(),
};

static void virtio_llfree_balloon_pci_realize(VirtIOPCIProxy *vpci_dev,
                                              Error **errp)
{
    VirtIOLLFreeBalloonPCI *dev = VIRTIO_LLFREE_BALLOON_PCI(vpci_dev);
    DeviceState *vdev = DEVICE(&dev->vdev);

    /* No legacy interface: the device ID has no transitional PCI ID */
    virtio_pci_force_virtio_1(vpci_dev);
    qdev_realize(vdev, BUS(&vpci_dev->bus), errp);
}

static void virtio_llfree_balloon_pci_class_init(ObjectClass *klass,
                                                 void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtioPCIClass *k = VIRTIO_PCI_CLASS(klass);
    PCIDeviceClass *pcidev_k = PCI_DEVICE_CLASS(klass);

    k->realize = virtio_llfree_balloon_pci_realize;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    device_class_set_props(dc, virtio_llfree_balloon_pci_properties);
    /*
     * The device manages the boot RAM for every DMA listener: it must exist
     * before them (before any vfio-pci device), so no hotplug.
     */
    dc->hotpluggable = false;
    pcidev_k->revision = VIRTIO_PCI_ABI_VERSION;
    pcidev_k->class_id = PCI_CLASS_OTHERS;
}

static void virtio_llfree_balloon_pci_instance_init(Object *obj)
{
    VirtIOLLFreeBalloonPCI *dev = VIRTIO_LLFREE_BALLOON_PCI(obj);

    virtio_instance_init_common(obj, &dev->vdev, sizeof(dev->vdev),
                                TYPE_VIRTIO_LLFREE_BALLOON);
}

static const VirtioPCIDeviceTypeInfo virtio_llfree_balloon_pci_info = {
    .base_name = TYPE_VIRTIO_LLFREE_BALLOON_PCI,
    .generic_name = "virtio-llfree-balloon-pci",
    .instance_size = sizeof(VirtIOLLFreeBalloonPCI),
    .instance_init = virtio_llfree_balloon_pci_instance_init,
    .class_init = virtio_llfree_balloon_pci_class_init,
};

static void virtio_llfree_balloon_pci_register(void)
{
    virtio_pci_types_register(&virtio_llfree_balloon_pci_info);
}

type_init(virtio_llfree_balloon_pci_register)
