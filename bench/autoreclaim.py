#!/usr/bin/python3
"""Automatic reclamation: host memory of a VM running a build-like workload.

Issue 6, item 2. One VM per candidate, one after the other, same size
(default 4 GiB, 2 vCPUs; --quick 3 GiB), same workload and seed
(bench/buildload.py has the candidates and the workload):

  virtio-balloon FPR  baseline kernel, free page reporting
  virtio-mem auto     baseline kernel, host policy on the guest's MemFree
                      (256 MiB steps, 512 MiB headroom, about once a second)
  HyperAlloc auto     llfree kernel, auto-mode=on (--interval, default
                      1000 ms), shrink-pagecache=on
  HyperAlloc auto + cache trim
                      the same with auto-mode-cache-trim (--cache-trim,
                      default 20 %): the device also asks the guest, every
                      interval, to drop that share of its page cache

Workload (guest/tools/ha-build.sh; the same seed, so the same jobs, for all):
  build  ha-mem build: a fixed number of short-lived compile jobs (2 at once)
         that read a source file from a virtio-blk ext4 disk, allocate, fill
         and verify anonymous memory (16 MiB..MEM/4, skewed to small), check
         and write an object file, exit. Fixed work, like the paper's
         compile: a candidate that slows the guest down builds longer and
         pays for it in footprint.
  idle   the build's page cache stays
  drop   sync; echo 3 > /proc/sys/vm/drop_caches; idle
Full: 1000 jobs (about 6-12 min here) + 120 s + 120 s; --quick: 160 jobs
(about 1.5-2 min) + 30 s + 30 s.

Measured: QEMU's RSS at 1 Hz (host) and the part of it that is guest RAM
(bench/buildload.py ram_rss: the large private anonymous mappings; the rest
is QEMU itself, under TCG mostly its code buffer), the guest's used memory (MemTotal -
MemFree - Buffers - Cached) and page cache (Buffers + Cached) about once a
second (guest console). Footprint = the integral of RSS over the workload
(from the start of build to the end of drop) in GiB*min, per phase too.
Target (issue 6): HyperAlloc's footprint at least 25 % below FPR's.

VMs run under TCG here (no KVM): the guest is emulated and every job takes
about ten times as long as on hardware, so footprint ratios carry over,
absolute times and GiB*min do not; on a loaded machine the build duration
(and with it the footprint) also moves with the other jobs on the host.

Usage: bench/autoreclaim.py [--quick] [--mem 4G] [--interval MS]
                            [--cache-trim PCT]
                            [--candidates fpr,virtio-mem,hyperalloc,hyperalloc-trim] [--out DIR]
Output in DIR (default build/bench/auto/): auto-<time>.csv (timeline: every
host sample with the guest's latest sample), auto-<time>-summary.csv,
auto-<time>.txt (machine, parameters, tables), auto-<time>.png, and the serial
console of each VM. Exit 0 done, 1 a VM failed, 77 skip (a build missing).
"""

import argparse
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import buildload as bl  # noqa: E402
from buildload import GIB, MIB  # noqa: E402

OUT = os.path.join(bl.REPO, "build", "bench", "auto")
TARGET = 0.75  # issue 6: HyperAlloc's footprint <= 75 % of FPR's
SEED = 42


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 GiB VMs, 160 jobs, 30 s idle and drop")
    p.add_argument("--mem", type=bl.parse_size, help="VM size (default 4G, quick 3G)")
    p.add_argument("--smp", type=int, default=2, help="vCPUs (default 2)")
    p.add_argument("--interval", type=int, default=bl.AUTO_INTERVAL_MS,
                   help="HyperAlloc auto-mode-interval in ms (default %(default)s)")
    p.add_argument("--cache-trim", type=int, default=bl.CACHE_TRIM_PCT,
                   help="auto-mode-cache-trim of hyperalloc-trim in %% (default %(default)s)")
    p.add_argument("--count", type=int, help="compile jobs of the build (default 1000, quick 160)")
    p.add_argument("--build", type=int, help="longest build in seconds (default 1800, quick 400)")
    p.add_argument("--idle", type=int, help="idle phase seconds (default 120, quick 30)")
    p.add_argument("--drop", type=int, help="drop phase seconds (default 120, quick 30)")
    p.add_argument("--candidates", default=",".join(bl.CANDIDATES),
                   help="comma-separated subset of %s" % ",".join(bl.CANDIDATES))
    p.add_argument("--out", default=OUT, help="output directory (default %(default)s)")
    cfg = p.parse_args(argv)
    q = cfg.quick
    cfg.mem = cfg.mem or (3 * GIB if q else 4 * GIB)
    if cfg.mem < 2 * GIB or cfg.mem % (2 * MIB):
        p.error("--mem must be at least 2G and a multiple of 2 MiB")
    cfg.wl = bl.Workload(count=cfg.count or (160 if q else 1000),
                         build=cfg.build or (400 if q else 1800),
                         idle=cfg.idle or (30 if q else 120),
                         drop=cfg.drop or (30 if q else 120), jobs=2, min_size="16M",
                         max_size="%dM" % (cfg.mem // 4 // MIB),
                         sources=cfg.mem // 8 // bl.SRC_FILE, obj="4M",
                         objects=cfg.mem // 8 // (4 * MIB))
    if not 0 <= cfg.cache_trim <= 100:
        p.error("--cache-trim must be a percentage (0 to 100)")
    cfg.candidates = [c.strip() for c in cfg.candidates.split(",") if c.strip()]
    for c in cfg.candidates:
        if c not in bl.CANDIDATES:
            p.error("unknown candidate '%s'" % c)
    cfg.stamp = time.strftime("%Y%m%d-%H%M%S")
    cfg.tmpdir = os.path.join(cfg.out, "tmp-%s" % cfg.stamp)
    return cfg


def run_one(cand, cfg, disk):
    """Runs the workload in one VM; returns (vm, sampler) or raises."""
    timeout = 300 + cfg.wl.seconds() * 2
    with bl.BuildVM(cand, cfg, "1", cfg.wl.command(SEED), disk, cfg.smp) as vm:
        with bl.HostSampler([vm.pid]) as sampler:
            ok, why = vm.wait(timeout)
    if not ok:
        raise RuntimeError("%s: %s" % (cand.name, why))
    for p in ("build", "idle", "drop", "end"):
        if p not in vm.phases:
            raise RuntimeError("%s: no '%s' phase on the console" % (cand.name, p))
    return vm, sampler


def summarize(cand, vm, sampler):
    """One summary row (dict) of a finished VM."""
    pts = [(t, v[0]) for t, v in sampler.samples]
    ph = vm.phases
    t0, t1 = ph["build"], ph["end"]
    row = {"candidate": cand.name, "label": cand.label,
           "footprint_gib_min": bl.footprint_gib_min(pts, t0, t1),
           "minutes": (t1 - t0) / 60}
    for name, a, b in (("build", "build", "idle"), ("idle", "idle", "drop"),
                       ("drop", "drop", "end")):
        row["%s_gib_min" % name] = bl.footprint_gib_min(pts, ph[a], ph[b])
    ram = [(t, r[0]) for (t, _), r in zip(sampler.samples, sampler.ram)]
    row["ram_gib_min"] = bl.footprint_gib_min(ram, t0, t1)
    inside = [v for t, v in pts if t0 <= t <= t1]
    row["mean_rss_gib"] = row["footprint_gib_min"] / row["minutes"]
    row["peak_rss_gib"] = max(inside) / GIB if inside else None
    gs = [(t, s) for t, s, _ in vm.samples if t0 <= t <= t1]
    guest = [(t, bl.used(s) + bl.cache(s)) for t, s in gs]
    row["guest_used_cache_gib_min"] = bl.footprint_gib_min(guest, t0, t1) if guest else None
    row["guest_used_gib_min"] = bl.footprint_gib_min(
        [(t, bl.used(s)) for t, s in gs], t0, t1) if gs else None
    r = vm.build_result
    row["jobs"] = int(r[1]) if r else None
    row["killed"] = int(r[2]) if r else None
    row["build_min"] = (ph["idle"] - ph["build"]) / 60
    row["installs"] = vm.installs
    return row


def tables(rows):
    lines = ["| candidate | footprint GiB*min | vs FPR | build | idle | drop | mean RSS GiB "
             "| peak RSS GiB | guest RAM only GiB*min | vs FPR | guest used+cache GiB*min "
             "| guest used GiB*min | build min | jobs | killed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref = next((r for r in rows if r["candidate"] == "fpr"), None)
    for r in rows:
        vs = ("%+.1f %%" % ((r["footprint_gib_min"] / ref["footprint_gib_min"] - 1) * 100)
              if ref else "-")
        vr = ("%+.1f %%" % ((r["ram_gib_min"] / ref["ram_gib_min"] - 1) * 100)
              if ref and ref["ram_gib_min"] else "-")
        lines.append("| %s | %.2f | %s | %.2f | %.2f | %.2f | %.2f | %s | %.2f | %s | %s | %s "
                     "| %.2f | %s | %s |"
                     % (r["label"], r["footprint_gib_min"], vs, r["build_gib_min"],
                        r["idle_gib_min"], r["drop_gib_min"], r["mean_rss_gib"],
                        bl.fmt(r["peak_rss_gib"]), r["ram_gib_min"], vr,
                        bl.fmt(r["guest_used_cache_gib_min"]),
                        bl.fmt(r["guest_used_gib_min"]), r["build_min"], r["jobs"],
                        r["killed"]))
    for ha in (r for r in rows if r["candidate"].startswith("hyperalloc")):
        if not ref:
            break
        ratio = ha["footprint_gib_min"] / ref["footprint_gib_min"]
        lines += ["", "%s / FPR footprint: %.3f (%.1f %% %s); target <= %.2f "
                  "(25 %% lower): %s" % (ha["label"], ratio, abs(1 - ratio) * 100,
                                         "lower" if ratio <= 1 else "higher", TARGET,
                                         "met" if ratio <= TARGET else
                                         "missed by %.1f points" % ((ratio - TARGET) * 100))]
        for p in ("build", "idle", "drop"):
            if ref["%s_gib_min" % p]:
                lines.append("  %s phase: %.3f" % (
                    p, ha["%s_gib_min" % p] / ref["%s_gib_min" % p]))
        lines.append("  build duration: %.2f of FPR's; installs: %s"
                     % (ha["build_min"] / ref["build_min"], ha["installs"]))
        if ref["ram_gib_min"]:
            lines.append("  guest RAM only (without QEMU's own memory, e.g. TCG's code "
                         "buffer): %.3f of FPR's" % (ha["ram_gib_min"] / ref["ram_gib_min"]))
    return "\n".join(lines)


def plot(path, results, cfg):
    plt = bl.pyplot()
    if not plt:
        print("no matplotlib (apt-get install python3-matplotlib): no plot")
        return None
    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), sharex=True, squeeze=False)
    ymax = cfg.mem / GIB * 1.08
    for ax, (cand, vm, sampler, row) in zip(axes[:, 0], results):
        tz = vm.phases["build"]
        ts, usedv, cachev, total = bl.guest_curves(vm, tz)
        ax.stackplot(ts, usedv, cachev, colors=("#9ecae1", "#fdd49e"),
                     labels=("guest used", "guest page cache"), lw=0)
        if cand.name == "virtio-mem":
            ax.plot(ts, total, color="#31a354", lw=1, ls="--", label="VM size (plugged)")
        ax.plot([(t - tz) / 60 for t, _ in sampler.samples],
                [v[0] / GIB for _, v in sampler.samples], color="k", lw=1.3,
                label="host RSS of QEMU")
        ax.plot([(t - tz) / 60 for t, _ in sampler.samples], [r[0] / GIB for r in sampler.ram],
                color="0.45", lw=0.8, ls="--", label="its guest-RAM part")
        bl.shade_phases(ax, vm, tz)
        ax.set_ylim(0, ymax)
        ax.set_xlim(-0.3, (vm.phases["end"] - tz) / 60 + 0.2)
        ax.set_ylabel("GiB")
        ax.set_title("%s: %.2f GiB*min" % (cand.label, row["footprint_gib_min"]), fontsize=9,
                     loc="left")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("minutes since the build started")
    fig.suptitle("Automatic reclamation, %d GiB VM, build-like workload (TCG)"
                 % (cfg.mem // GIB), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    cfg = parse_args(argv)
    for c in cfg.candidates:
        if not bl.guestvm.variant_or_skip(bl.CANDIDATES[c].variant):
            return 77
    if not shutil.which("mkfs.ext4"):
        print("SKIP: mkfs.ext4 missing (scripts/install-deps.sh vm)")
        return 77
    os.makedirs(cfg.tmpdir, exist_ok=True)
    header = bl.machine_info() + [
        "VM: %d MiB, %d vCPUs, q35, TCG unless KVM works; same seed (%d) for every candidate"
        % (cfg.mem // MIB, cfg.smp, SEED),
        "workload: " + cfg.wl.describe(),
        "HyperAlloc auto-mode-interval: %d ms; cache trim: %d %%" % (cfg.interval,
                                                                     cfg.cache_trim),
        "command: bench/autoreclaim.py %s" % " ".join(sys.argv[1:] if argv is None else argv)]
    header += ["policy %s: %s" % (bl.CANDIDATES[c].label, bl.CANDIDATES[c].policy())
               for c in cfg.candidates]
    for line in header:
        print(line, flush=True)
    results, failed = [], []
    try:
        disk = os.path.join(cfg.tmpdir, "disk.img")
        bl.make_disk(disk, cfg.wl)
        for name in cfg.candidates:
            cand = bl.CANDIDATES[name]
            print("%s: %d s of workload ..." % (cand.label, cfg.wl.seconds()), flush=True)
            try:
                vm, sampler = run_one(cand, cfg, disk)
            except (RuntimeError, OSError, TimeoutError, bl.QMPError) as e:
                print("  FAILED: %s" % e, flush=True)
                failed.append(str(e))
                continue
            row = summarize(cand, vm, sampler)
            print("  footprint %.2f GiB*min over %.1f min, peak RSS %s GiB, %s jobs, %s killed"
                  % (row["footprint_gib_min"], row["minutes"], bl.fmt(row["peak_rss_gib"]),
                     row["jobs"], row["killed"]), flush=True)
            results.append((cand, vm, sampler, row))
    finally:
        shutil.rmtree(cfg.tmpdir, ignore_errors=True)

    base = os.path.join(cfg.out, "auto-%s" % cfg.stamp)
    timeline = []
    for cand, vm, sampler, row in results:
        timeline += bl.timeline_rows([vm], sampler, vm.phases["build"])
    rows = [r for _, _, _, r in results]
    report = tables(rows) if rows else "no results"
    png = plot(base + ".png", results, cfg) if results else None
    return bl.save_results(base, timeline, rows, header, report, png, failed)


if __name__ == "__main__":
    sys.exit(main())
