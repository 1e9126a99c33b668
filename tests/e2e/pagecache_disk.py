"""A guest disk with one file of random data, for the page-cache tests."""

import hashlib
import os
import re
import shutil
import subprocess

from e2e import MIB


def make_disk(tmp, size):
    """An ext4 image in tmp holding data.bin (size random bytes); returns
    (image path, md5 of the file)."""
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    md5 = hashlib.md5()
    with open("/dev/urandom", "rb") as src, open(os.path.join(root, "data.bin"), "wb") as dst:
        left = size
        while left:
            chunk = src.read(min(left, 16 * MIB))
            md5.update(chunk)
            dst.write(chunk)
            left -= len(chunk)
    image = os.path.join(tmp, "disk.img")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, image,
                    "%dM" % (size // MIB + 256)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(root)
    return image, md5.hexdigest()


def have_mkfs():
    """Whether mkfs.ext4 exists; prints the skip reason if not."""
    if shutil.which("mkfs.ext4"):
        return True
    print("SKIP: mkfs.ext4 missing (scripts/install-deps.sh vm)")
    return False


def guest_stat(g, path, key):
    """A value of the guest's /proc/meminfo or /proc/vmstat (the number
    after key), or None."""
    status, out = g.shell("grep '^%s[: ]' %s" % (key, path))
    m = re.search(r"^%s:?\s+(\d+)" % re.escape(key), out[-1] if out else "")
    return int(m.group(1)) if status == 0 and m else None


def meminfo(g, key):
    """A /proc/meminfo value of the guest in MiB, or None."""
    kib = guest_stat(g, "/proc/meminfo", key)
    return kib // 1024 if kib is not None else None


def check_data(g, checks, md5):
    """Waits for the `ha-mem stress` started in the background (its pid in
    /tmp/stress.pid) and checks its verdict, then checks data.bin's md5."""
    status, out = g.shell("wait $(cat /tmp/stress.pid); s=$?; tail -n 1 /tmp/stress.log; "
                          "[ $s = 0 ]", timeout=300)
    checks.check(status == 0, "anonymous data intact", " ".join(out[-1:]))
    status, out = g.shell("md5sum /mnt/data.bin", timeout=900)
    checks.check(status == 0 and out and out[-1].split()[0] == md5,
                 "file data intact", " ".join(out[-1:]))
