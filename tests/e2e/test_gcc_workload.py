#!/usr/bin/python3
"""End-to-end: Debian's gcc compiles real code in an llfree guest while auto
mode reclaims and a shrink/grow cycle runs; the objects equal the host's.

The workload (guest/workload/compile.mk): zlib from Debian's source package
(16 objects, libz.a, zlib's test program `example`) and the llfree library
(llfree/src/*.c with platform/user, libllfree.a), `make -j2`. The compiler is
gcc from the Debian root file system of scripts/build-debian-image.sh; the
host compiles the reference by chroot into the same root file system (a
private mount namespace binds the sources to the same /ha/src), so the
compiler, paths and flags are the same and every output must be identical.

Boots build/guest/bzImage (4 GiB, 2 vCPUs, TCG) with virtio-llfree-balloon
in auto mode (1 s period) and a QMP socket, the image as a read-only
virtio-blk disk and the sources in an initramfs appended to the normal one.
In the guest, `ha-mem stress` (256 MiB, anonymous pages, 120 s) runs beside
the build through the resize cycle. Checks:

  1. the driver registers its zones;
  2. while the build runs, a shrink to 2 GiB reaches the target within
     2 MiB (the build keeps running), and a grow back to 4 GiB returns;
  3. auto mode reclaimed memory during the run (soft > 0 at some point);
  4. the build exits 0; every output's SHA-256 equals the host's; zlib's
     `example`, built in the guest, passes in the guest;
  5. `ha-mem stress` verified every page (0 integrity errors);
  6. the console shows no WARNING/BUG/Oops or llfree "failed".

Prints the build's time and the resize timings. Log:
build/tests/e2e/gcc-workload.log.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import (CHILD, GIB, MIB, QMP, REPO, Checks, console_check, QMPError, run_test,
                 settle, summary, vm)  # noqa: E402

RAM = 4 * GIB
TARGET = 2 * GIB
IMAGE_DIR = os.path.join(REPO, "build", "guest", "debian")
BUILD_TIMEOUT = 1200   # s, guest build under TCG (measured: about 2 min)
STRESS_SECS = 120      # ha-mem stress: through the resize cycle and most of the build
# what the guest and the host build
OUTPUTS = "*.o *.a example"


def workload_dir(tmp, image):
    """Stages the sources: tmp/src/{zlib,llfree,compile.mk}; returns the path."""
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    zlib = os.path.join(image, "zlib")
    os.makedirs(os.path.join(src, "zlib", "test"))
    for name in os.listdir(zlib):
        if name.endswith((".c", ".h")):
            shutil.copy2(os.path.join(zlib, name), os.path.join(src, "zlib", name))
    shutil.copy2(os.path.join(zlib, "test", "example.c"), os.path.join(src, "zlib", "test"))
    for part in ("src", "include", "platform"):
        shutil.copytree(os.path.join(REPO, "llfree", part), os.path.join(src, "llfree", part))
    shutil.copy2(os.path.join(REPO, "guest", "workload", "compile.mk"), src)
    return src


def host_build(image, src):
    """Builds the workload on the host by chroot into the image's root file
    system; returns ({file: sha256}, seconds)."""
    root = os.path.join(image, "rootfs")
    script = ("mount --bind {src} {root}/ha/src && mount -t tmpfs tmpfs {root}/ha/out && "
              "chroot {root} make -s -j2 -C /ha/out -f /ha/src/compile.mk && "
              "chroot {root} sh -c 'cd /ha/out && sha256sum {outputs}'").format(
                  src=src, root=root, outputs=OUTPUTS)
    start = time.monotonic()
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], check=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    return parse_sums(out.splitlines()), time.monotonic() - start


def parse_sums(lines):
    sums = {}
    for line in lines:
        m = re.match(r"([0-9a-f]{64})\s+(\S+)$", line.strip())
        if m:
            sums[m.group(2)] = m.group(1)
    return sums


def initrd_with(tmp, src):
    """The normal initramfs with src appended as /ha-src (a second archive)."""
    stage = os.path.join(tmp, "stage")
    shutil.copytree(src, os.path.join(stage, "ha-src"))
    extra = os.path.join(tmp, "workload.cpio.gz")
    files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=stage, check=True,
                           stdout=subprocess.PIPE, text=True).stdout
    with open(extra, "wb") as f:
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                                cwd=stage, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-1", "-n"], stdin=cpio.stdout, stdout=f)
        cpio.stdin.write(files.encode())
        cpio.stdin.close()
        cpio.stdout.close()
        if gz.wait() or cpio.wait():
            raise OSError("cannot write %s" % extra)
    initrd = os.path.join(tmp, "initrd.cpio.gz")
    with open(initrd, "wb") as out:
        for part in (vm.INITRAMFS, extra):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    return initrd


def resize(qmp, value, timeout):
    qmp.execute("llfree-balloon", {"value": value})
    return settle(qmp, timeout)


def main():
    found = vm.variant_or_skip("llfree")
    if not found:
        return 77
    image = os.path.realpath(IMAGE_DIR)
    for path in ("rootfs.img", "rootfs", "zlib"):
        if not os.path.exists(os.path.join(image, path)):
            print("SKIP: %s missing (scripts/build-debian-image.sh)" % os.path.join(image, path))
            return 77
    if not shutil.which("unshare"):
        print("SKIP: unshare missing (util-linux)")
        return 77
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="ha-e2e-gcc-")
    try:
        src = workload_dir(tmp, image)
        want, host_secs = host_build(image, src)
        print("host: %d outputs in %.1f s" % (len(want), host_secs), flush=True)
        checks.check(len(want) >= 20, "host reference build", "%d files" % len(want))
        initrd = initrd_with(tmp, src)
        sock = os.path.join(tmp, "qmp.sock")
        args = vm.llfree_device_args(sock, auto_mode=True, interval_ms=1000) + [
            "-drive", "file=%s,if=virtio,format=raw,readonly=on" %
            os.path.join(image, "rootfs.img")]
        log = os.path.join(REPO, "build", "tests", "e2e", "gcc-workload.log")
        with vm.Guest(found[0], mem="4G", smp=2, run=vm.SHELL_SERVER, initrd=initrd,
                      qemu_args=args, log_path=log) as g:
            checks.check(g.wait_for("zones registered", 120), "driver registered its zones")
            qmp = QMP.connect(sock, retry_for=10)
            r = "/mnt/debian"
            status, out = g.shell(
                "mkdir -p {r} && mount -t ext4 -o ro /dev/vda {r} && "
                "mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && "
                "mount -o rbind /dev {r}/dev && mount -t tmpfs tmpfs {r}/tmp && "
                "mount --bind /ha-src {r}/ha/src && mount -t tmpfs tmpfs {r}/ha/out"
                .format(r=r), timeout=60)
            checks.check(status == 0, "Debian root file system mounted", " ".join(out[-2:]))
            g.shell("ha-mem stress --size 256M --duration %d --phases anon "
                    "> /tmp/stress.log 2>&1 & echo $! > /tmp/stress.pid" % STRESS_SECS)
            g.shell("(s=$(date +%s); chroot {r} make -j2 -C /ha/out -f /ha/src/compile.mk "
                    "> /tmp/build.log 2>&1; echo $? $(( $(date +%s) - s )) > /tmp/build.rc) "
                    "> /dev/null 2>&1 &".format(r=r))
            start = time.monotonic()
            soft_seen = 0

            def poll_soft():
                nonlocal soft_seen
                info = qmp.execute("query-llfree-balloon")
                soft_seen = max(soft_seen, info["soft"])
                return info

            # let the build get going, then shrink and grow while it runs
            while time.monotonic() - start < 20:
                poll_soft()
                time.sleep(1)
            info, took = resize(qmp, TARGET, 300)
            poll_soft()
            status, out = g.shell("cat /tmp/build.rc 2>/dev/null || echo running")
            checks.check(abs(info["actual"] - TARGET) <= CHILD,
                         "shrink to 2 GiB during the build",
                         "actual %d MiB after %.1f s; build %s" % (
                             info["actual"] // MIB, took, " ".join(out[-1:])))
            info, took = resize(qmp, RAM, 120)
            checks.check(info["actual"] == RAM, "grow back to 4 GiB",
                         "actual %d MiB after %.1f s" % (info["actual"] // MIB, took))

            rc = None
            while time.monotonic() - start < BUILD_TIMEOUT:
                poll_soft()
                status, out = g.shell("cat /tmp/build.rc 2>/dev/null")
                if status == 0 and out:
                    rc = out[-1].split()
                    break
                time.sleep(5)
            build_secs = time.monotonic() - start
            checks.check(rc is not None and rc[0] == "0", "guest build exits 0",
                         "status %s after %s s in the guest (%.0f s on the host clock)" % (
                             rc[0] if rc else "none (timeout)", rc[1] if rc else "-",
                             build_secs))
            if rc is None or rc[0] != "0":
                _, out = g.shell("tail -n 20 /tmp/build.log")
                print("\n".join("    " + l for l in out))
            checks.check(soft_seen > 0, "auto mode reclaimed during the run",
                         "max soft %d MiB" % (soft_seen // MIB))

            status, out = g.shell("cd {r}/ha/out && sha256sum {o}".format(r=r, o=OUTPUTS),
                                  timeout=120)
            got = parse_sums(out)
            same = sorted(f for f in want if got.get(f) == want[f])
            differ = sorted(f for f in want if f in got and got[f] != want[f])
            missing = sorted(f for f in want if f not in got)
            checks.check(len(same) == len(want) and len(got) == len(want),
                         "guest outputs identical to the host's",
                         "%d of %d identical%s%s" % (
                             len(same), len(want),
                             "; differ: " + " ".join(differ) if differ else "",
                             "; missing: " + " ".join(missing) if missing else ""))
            status, out = g.shell("chroot {r} sh -c 'cd /ha/out && ./example'".format(r=r),
                                  timeout=300)
            checks.check(status == 0, "zlib's example passes in the guest",
                         " ".join(out[-1:]))
            status, out = g.shell("wait $(cat /tmp/stress.pid); s=$?; tail -n 1 /tmp/stress.log; "
                                  "[ $s = 0 ]", timeout=STRESS_SECS + 300)
            checks.check(status == 0, "ha-mem stress: data intact", " ".join(out[-1:]))
            g.send("exit\n")
            res = g.wait_exit(60)
        print("build: %.0f s in the guest, %.1f s on the host" % (build_secs, host_secs))
        console_check(checks, res)
        bad = [l for _, l in res.lines if re.search(r"\] llfree: .*failed", l)]
        checks.check(not bad, "no llfree failure messages", "; ".join(bad[:3]))
        return summary(checks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_test(main, (QMPError, OSError, subprocess.CalledProcessError))
