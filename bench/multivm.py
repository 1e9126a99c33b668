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
import sys

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
    p.add_argument("--stagger", type=int, help="start offset between VMs (default 120, quick 40)")
    cfg = bl.parse_options(p, argv, OUT, mem=(2 * GIB, 2 * GIB), smp=1, count=(600, 150),
                           idle=(60, 20))
    cfg.stagger = cfg.stagger if cfg.stagger is not None else (40 if cfg.quick else 120)
    return cfg


def run_candidate(cand, cfg, disk):
    """Three staggered VMs at once; returns their bl.Run or raises."""
    print("%s: %d VMs, %d s of workload each ..."
          % (cand.label, NVMS, cfg.wl.seconds() + (NVMS - 1) * cfg.stagger), flush=True)
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
    run = bl.Run(cand, vms, sampler, max(vm.phases["start"] for vm in vms),
                 max(vm.phases["end"] for vm in vms))
    run.row = row = summarize(cand, vms, sampler, run.t0, run.t1)
    print("  total footprint %.2f GiB*min over %.1f min, peak %s GiB, %d jobs, %d killed"
          % (row["footprint_gib_min"], row["minutes"], bl.fmt(row["peak_total_gib"]),
             row["jobs"], row["killed"]), flush=True)
    return run


def summarize(cand, vms, sampler, t0, t1):
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
        fv, pv, rv = (bl.vs_fpr(r, ref, k)
                      for k in ("footprint_gib_min", "peak_total_gib", "ram_gib_min"))
        lines.append("| %s | %.2f | %s | %s | %s | %.2f | %.2f | %s | %s | %.1f "
                     "| %.2f / %.2f / %.2f | %s | %s | %s |"
                     % (r["label"], r["footprint_gib_min"], fv, bl.fmt(r["peak_total_gib"]),
                        pv, r["mean_total_gib"], r["ram_gib_min"], rv,
                        bl.fmt(r["peak_ram_gib"]), r["minutes"], r["vm1_gib_min"],
                        r["vm2_gib_min"], r["vm3_gib_min"], r["build_min"], r["jobs"],
                        r["killed"]))
    return "\n".join(lines)


def plot(path, runs, cfg):
    plt = bl.pyplot()
    if not plt:
        return None
    colors = {"fpr": "#e6550d", "virtio-mem": "#31a354", "hyperalloc": "#3182bd",
              "hyperalloc-trim": "#08306b"}
    n = len(runs)
    fig, axes = plt.subplots(n + 1, 1, figsize=(9, 2.3 * (n + 1)), sharex=True, squeeze=False)
    top = axes[0, 0]
    for k, run in enumerate(runs):
        cand, vms, sampler, row, tz = run.cand, run.vms, run.sampler, run.row, run.t0
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
        ax.set_xlim(0, (run.t1 - tz) / 60)
    top.set_title("total host RSS of the %d QEMU processes" % NVMS, fontsize=9, loc="left")
    top.set_ylabel("GiB")
    top.set_ylim(0, NVMS * cfg.mem / GIB * 1.05)
    top.legend(fontsize=7, loc="upper right")
    top.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("minutes since all VMs started the workload")
    fig.suptitle("Multi-VM: %d x %d GiB VMs, staggered build-like workloads (TCG)"
                 % (NVMS, cfg.mem // GIB), fontsize=10)
    return bl.save_figure(plt, fig, path)


def main(argv=None):
    cfg = parse_args(argv)
    if bl.missing_builds(cfg):
        return 77
    header = bl.header_lines(cfg, "bench/multivm.py", argv, [
        "VMs: %d x %d MiB, %d vCPU(s) each, q35, TCG unless KVM works; seeds %d..%d"
        % (NVMS, cfg.mem // MIB, cfg.smp, SEED, SEED + NVMS - 1),
        "workload per VM: " + cfg.wl.describe(),
        "stagger: VM i idles i * %d s before its build and (%d - i) * %d s after its drop"
        % (cfg.stagger, NVMS - 1, cfg.stagger)])
    runs, failed = bl.run_candidates(cfg, header, lambda cand, disk: run_candidate(cand, cfg, disk))
    return bl.save_results(cfg, "multivm", header, runs, failed, tables, plot)


if __name__ == "__main__":
    sys.exit(main())
