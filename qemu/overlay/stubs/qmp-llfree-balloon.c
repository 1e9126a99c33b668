/*
 * QMP commands of virtio-llfree-balloon, for binaries without the device
 *
 * Copyright (C) 2025 The HyperAlloc authors
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-machine.h"

void qmp_llfree_balloon(int64_t value, Error **errp)
{
    error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
              "No llfree balloon device has been activated");
}

LLFreeBalloonInfo *qmp_query_llfree_balloon(Error **errp)
{
    error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
              "No llfree balloon device has been activated");
    return NULL;
}
