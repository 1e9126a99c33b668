#!/usr/bin/python3
"""Multi-VM: total host memory of three VMs with staggered build phases.

Issue 6, item 5. Per candidate (bench/buildload.py: virtio-balloon with free
page reporting, virtio-mem with the host policy, HyperAlloc auto) three VMs
run at the same time, each with its own copy of the disk and the workload of
bench/autoreclaim.py (guest/tools/ha-build.sh: a fixed number of compile jobs,
idle, drop_caches and idle; seeds 42, 43, 44), staggered: VM i idles
i * STAGGER seconds before its build and (2 - i) * STAGGER seconds after its
drop phase, so the builds overlap only partly. The candidates run one after
the other.

Measured: the sum of the three QEMU RSS at 1 Hz (a VM that has powered off
counts 0); its peak and its integral (GiB*min) from the latest "start" to the
latest "end" of the three guests; the same for the guest-RAM part of the RSS
(bench/buildload.py ram_rss, without QEMU's own memory such as TCG's code
buffer).

Load: three TCG VMs share the 2 host cores here, so each VM has 1 vCPU
(HyperAlloc's VM gets maxcpus=2, which the device needs under TCG) and
2 GiB (default); the build makes less progress than in bench/autoreclaim.py.
Ratios between candidates carry over, absolute times do not.

Usage: bench/multivm.py [--quick] [--mem 2G] [--smp 1] [--interval MS]
                        [--cache-trim PCT]
                        [--candidates fpr,virtio-mem,hyperalloc,hyperalloc-trim] [--out DIR]
Output in DIR (default build/bench/multivm/): multivm-<time>.csv (timeline:
every host sample and VM), multivm-<time>-summary.csv, multivm-<time>.txt,
multivm-<time>.png, and each VM's serial console.
Exit 0 done, 1 a VM failed, 77 skip.
"""

import argparse
import contextlib
import os
import shutil
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import buildload as bl  # noqa: E402
from buildload import GIB, MIB  # noqa: E402

OUT = os.path.join(bl.REPO, "build", "bench", "multivm")
NVMS = 3
SEED = 42


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="150 jobs per VM, shorter phases (about 5 min per candidate)")
    p.add_argument("--mem", type=bl.parse_size, default=2 * GIB,
                   help="size of each VM (default 2G)")
    p.add_argument("--smp", type=int, default=1, help="vCPUs per VM (default 1)")
    p.add_argument("--interval", type=int, default=bl.AUTO_INTERVAL_MS,
                   help="HyperAlloc auto-mode-interval in ms (default %(default)s)")
    p.add_argument("--cache-trim", type=int, default=bl.CACHE_TRIM_PCT,
                   help="auto-mode-cache-trim of hyperalloc-trim in %% (default %(default)s)")
    p.add_argument("--count", type=int, help="compile jobs per VM (default 600, quick 150)")
    p.add_argument("--build", type=int, help="longest build in seconds (default 1800, quick 400)")
    p.add_argument("--idle", type=int, help="idle phase seconds (default 60, quick 20)")
    p.add_argument("--drop", type=int, help="drop phase seconds (default 60, quick 20)")
    p.add_argument("--stagger", type=int, help="start offset between VMs (default 120, quick 40)")
    p.add_argument("--candidates", default=",".join(bl.CANDIDATES),
                   help="comma-separated subset of %s" % ",".join(bl.CANDIDATES))
    p.add_argument("--out", default=OUT, help="output directory (default %(default)s)")
    cfg = p.parse_args(argv)
    q = cfg.quick
    if cfg.mem < 2 * GIB or cfg.mem % (2 * MIB):
        p.error("--mem must be at least 2G and a multiple of 2 MiB")
    cfg.wl = bl.Workload(count=cfg.count or (150 if q else 600),
                         build=cfg.build or (400 if q else 1800),
                         idle=cfg.idle or (20 if q else 60),
                         drop=cfg.drop or (20 if q else 60), jobs=2, min_size="16M",
                         max_size="%dM" % (cfg.mem // 4 // MIB),
                         sources=cfg.mem // 8 // bl.SRC_FILE, obj="4M",
                         objects=cfg.mem // 8 // (4 * MIB))
    cfg.stagger = cfg.stagger if cfg.stagger is not None else (40 if q else 120)
    if not 0 <= cfg.cache_trim <= 100:
        p.error("--cache-trim must be a percentage (0 to 100)")
    cfg.candidates = [c.strip() for c in cfg.candidates.split(",") if c.strip()]
    for c in cfg.candidates:
        if c not in bl.CANDIDATES:
            p.error("unknown candidate '%s'" % c)
    cfg.stamp = time.strftime("%Y%m%d-%H%M%S")
    cfg.tmpdir = os.path.join(cfg.out, "tmp-%s" % cfg.stamp)
    return cfg


def run_candidate(cand, cfg, disk):
    """Three staggered VMs at once; returns (vms, sampler, window) or raises."""
    timeout = 400 + (cfg.wl.seconds() + 2 * cfg.stagger) * 2
    with contextlib.ExitStack() as stack:
        vms = []
        for i in range(NVMS):
            cmd = cfg.wl.command(SEED + i, delay=i * cfg.stagger,
                                 tail=(NVMS - 1 - i) * cfg.stagger)
            vms.append(stack.enter_context(bl.BuildVM(cand, cfg, str(i + 1), cmd, disk,
                                                      cfg.smp)))
        with bl.HostSampler([vm.pid for vm in vms]) as sampler:
            results = [vm.wait(timeout) for vm in vms]
    bad = ["VM %d: %s" % (i + 1, why) for i, (ok, why) in enumerate(results) if not ok]
    if bad:
        raise RuntimeError("%s: %s" % (cand.name, "; ".join(bad)))
    for vm in vms:
        for p in ("start", "build", "end"):
            if p not in vm.phases:
                raise RuntimeError("%s VM %s: no '%s' phase on the console"
                                   % (cand.name, vm.tag, p))
    window = (max(vm.phases["start"] for vm in vms), max(vm.phases["end"] for vm in vms))
    return vms, sampler, window


def summarize(cand, vms, sampler, window):
    t0, t1 = window
    total = [(t, sum(v)) for t, v in sampler.samples]
    inside = [v for t, v in total if t0 <= t <= t1]
    row = {"candidate": cand.name, "label": cand.label,
           "footprint_gib_min": bl.footprint_gib_min(total, t0, t1),
           "minutes": (t1 - t0) / 60,
           "peak_total_gib": max(inside) / GIB if inside else None}
    row["mean_total_gib"] = row["footprint_gib_min"] / row["minutes"]
    ram = [(t, sum(r)) for (t, _), r in zip(sampler.samples, sampler.ram)]
    row["ram_gib_min"] = bl.footprint_gib_min(ram, t0, t1)
    ram_inside = [v for t, v in ram if t0 <= t <= t1]
    row["peak_ram_gib"] = max(ram_inside) / GIB if ram_inside else None
    for i, vm in enumerate(vms):
        row["vm%d_gib_min" % (i + 1)] = bl.footprint_gib_min(
            [(t, v[i]) for t, v in sampler.samples], t0, t1)
    row["build_min"] = "/".join("%.1f" % ((vm.phases["idle"] - vm.phases["build"]) / 60)
                                for vm in vms)
    row["jobs"] = sum(int(vm.build_result[1]) for vm in vms if vm.build_result)
    row["killed"] = sum(int(vm.build_result[2]) for vm in vms if vm.build_result)
    return row


def tables(rows):
    lines = ["| candidate | total footprint GiB*min | vs FPR | peak total GiB | vs FPR "
             "| mean total GiB | guest RAM only GiB*min | vs FPR | peak guest RAM GiB | minutes "
             "| VM 1 / 2 / 3 GiB*min | builds min | jobs | killed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    ref = next((r for r in rows if r["candidate"] == "fpr"), None)
    for r in rows:
        fv = ("%+.1f %%" % ((r["footprint_gib_min"] / ref["footprint_gib_min"] - 1) * 100)
              if ref else "-")
        pv = ("%+.1f %%" % ((r["peak_total_gib"] / ref["peak_total_gib"] - 1) * 100)
              if ref and r["peak_total_gib"] and ref["peak_total_gib"] else "-")
        rv = ("%+.1f %%" % ((r["ram_gib_min"] / ref["ram_gib_min"] - 1) * 100)
              if ref and ref["ram_gib_min"] else "-")
        lines.append("| %s | %.2f | %s | %s | %s | %.2f | %.2f | %s | %s | %.1f "
                     "| %.2f / %.2f / %.2f | %s | %s | %s |"
                     % (r["label"], r["footprint_gib_min"], fv, bl.fmt(r["peak_total_gib"]),
                        pv, r["mean_total_gib"], r["ram_gib_min"], rv,
                        bl.fmt(r["peak_ram_gib"]), r["minutes"], r["vm1_gib_min"],
                        r["vm2_gib_min"], r["vm3_gib_min"], r["build_min"], r["jobs"],
                        r["killed"]))
    return "\n".join(lines)


def plot(path, results, cfg):
    plt = bl.pyplot()
    if not plt:
        print("no matplotlib (apt-get install python3-matplotlib): no plot")
        return None
    colors = {"fpr": "#e6550d", "virtio-mem": "#31a354", "hyperalloc": "#3182bd",
              "hyperalloc-trim": "#08306b"}
    n = len(results)
    fig, axes = plt.subplots(n + 1, 1, figsize=(9, 2.3 * (n + 1)), sharex=True, squeeze=False)
    top = axes[0, 0]
    for k, (cand, vms, sampler, window, row) in enumerate(results):
        tz = window[0]
        ts = [(t - tz) / 60 for t, _ in sampler.samples]
        top.plot(ts, [sum(v) / GIB for _, v in sampler.samples], color=colors[cand.name],
                 lw=1.4, label="%s: %.1f GiB*min, peak %s GiB"
                 % (cand.label, row["footprint_gib_min"], bl.fmt(row["peak_total_gib"], 1)))
        ax = axes[k + 1, 0]
        ax.stackplot(ts, *[[v[i] / GIB for _, v in sampler.samples] for i in range(len(vms))],
                     labels=["VM %s" % vm.tag for vm in vms],
                     colors=("#c6dbef", "#9ecae1", "#6baed6"), lw=0)
        for vm in vms:
            if "build" in vm.phases:
                ax.axvline((vm.phases["build"] - tz) / 60, color="0.4", lw=0.8, ls=":")
            if "drop" in vm.phases:
                ax.axvline((vm.phases["drop"] - tz) / 60, color="0.4", lw=0.8, ls="--")
        ax.set_title("%s: RSS per VM, stacked (dotted: a build starts, dashed: drop_caches)"
                     % cand.label, fontsize=9, loc="left")
        ax.set_ylabel("GiB")
        ax.set_ylim(0, NVMS * cfg.mem / GIB * 1.05)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, (window[1] - window[0]) / 60)
    top.set_title("total host RSS of the %d QEMU processes" % NVMS, fontsize=9, loc="left")
    top.set_ylabel("GiB")
    top.set_ylim(0, NVMS * cfg.mem / GIB * 1.05)
    top.legend(fontsize=7, loc="upper right")
    top.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("minutes since all VMs started the workload")
    fig.suptitle("Multi-VM: %d x %d GiB VMs, staggered build-like workloads (TCG)"
                 % (NVMS, cfg.mem // GIB), fontsize=10)
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
        "VMs: %d x %d MiB, %d vCPU(s) each, q35, TCG unless KVM works; seeds %d..%d"
        % (NVMS, cfg.mem // MIB, cfg.smp, SEED, SEED + NVMS - 1),
        "workload per VM: " + cfg.wl.describe(),
        "stagger: VM i idles i * %d s before its build and (%d - i) * %d s after its drop"
        % (cfg.stagger, NVMS - 1, cfg.stagger),
        "HyperAlloc auto-mode-interval: %d ms; cache trim: %d %%" % (cfg.interval,
                                                                     cfg.cache_trim),
        "command: bench/multivm.py %s" % " ".join(sys.argv[1:] if argv is None else argv)]
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
            print("%s: %d VMs, %d s of workload each ..."
                  % (cand.label, NVMS, cfg.wl.seconds() + (NVMS - 1) * cfg.stagger), flush=True)
            try:
                vms, sampler, window = run_candidate(cand, cfg, disk)
            except (RuntimeError, OSError, TimeoutError, bl.QMPError) as e:
                print("  FAILED: %s" % e, flush=True)
                failed.append(str(e))
                continue
            row = summarize(cand, vms, sampler, window)
            print("  total footprint %.2f GiB*min over %.1f min, peak %s GiB, %d jobs, %d killed"
                  % (row["footprint_gib_min"], row["minutes"], bl.fmt(row["peak_total_gib"]),
                     row["jobs"], row["killed"]), flush=True)
            results.append((cand, vms, sampler, window, row))
    finally:
        shutil.rmtree(cfg.tmpdir, ignore_errors=True)

    base = os.path.join(cfg.out, "multivm-%s" % cfg.stamp)
    timeline = []
    for cand, vms, sampler, window, row in results:
        timeline += bl.timeline_rows(vms, sampler, window[0])
    rows = [r[-1] for r in results]
    report = tables(rows) if rows else "no results"
    png = plot(base + ".png", results, cfg) if results else None
    return bl.save_results(base, timeline, rows, header, report, png, failed)


if __name__ == "__main__":
    sys.exit(main())
