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
import sys

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
    return bl.parse_options(p, argv, OUT, mem=(4 * GIB, 3 * GIB), smp=2, count=(1000, 160),
                            idle=(120, 30))


def run_one(cand, cfg, disk):
    """Runs the workload in one VM; returns its bl.Run or raises."""
    print("%s: %d s of workload ..." % (cand.label, cfg.wl.seconds()), flush=True)
    timeout = 300 + cfg.wl.seconds() * 2
    with bl.BuildVM(cand, cfg, "1", cfg.wl.command(SEED), disk, cfg.smp) as vm:
        with bl.HostSampler([vm.pid]) as sampler:
            ok, why = vm.wait(timeout)
    if not ok:
        raise RuntimeError("%s: %s" % (cand.name, why))
    for p in ("build", "idle", "drop", "end"):
        if p not in vm.phases:
            raise RuntimeError("%s: no '%s' phase on the console" % (cand.name, p))
    run = bl.Run(cand, [vm], sampler, vm.phases["build"], vm.phases["end"])
    run.row = row = summarize(cand, vm, sampler)
    print("  footprint %.2f GiB*min over %.1f min, peak RSS %s GiB, %s jobs, %s killed"
          % (row["footprint_gib_min"], row["minutes"], bl.fmt(row["peak_rss_gib"]),
             row["jobs"], row["killed"]), flush=True)
    return run


def summarize(cand, vm, sampler):
    """One summary row (dict) of a finished VM."""
    pts = [(t, v[0]) for t, v in sampler.samples]
    ph = vm.phases
    t0, t1 = ph["build"], ph["end"]
    row = {"candidate": cand.name, "label": cand.label, "smp": vm.cfg.smp,
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
    row["build_install_wait_s"] = vm.guest_install_wait("build", "idle")
    times = vm.install_times(ph["build"], ph["idle"])
    each = times[0] if times else []
    row["build_install_s"] = sum(each) if each else None
    row["build_install_median_us"] = each[len(each) // 2] * 1e6 if each else None
    return row


def tables(rows):
    lines = ["| candidate | footprint GiB*min | vs FPR | build | idle | drop | mean RSS GiB "
             "| peak RSS GiB | guest RAM only GiB*min | vs FPR | guest used+cache GiB*min "
             "| guest used GiB*min | build min | jobs | killed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref = next((r for r in rows if r["candidate"] == "fpr"), None)
    for r in rows:
        vs, vr = bl.vs_fpr(r, ref, "footprint_gib_min"), bl.vs_fpr(r, ref, "ram_gib_min")
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
        vcpu_s = ha["build_min"] * 60 * ha["smp"]
        if ha["build_install_wait_s"] is not None:
            lines.append("  the guest waited %.1f s for installs during the build (its /proc/llfree): "
                         "%.1f %% of the build's vCPU time"
                         % (ha["build_install_wait_s"], 100 * ha["build_install_wait_s"] / vcpu_s))
        if ha["build_install_s"]:
            lines.append("  QEMU served them in %.1f s (trace, request to result; median %.0f us)"
                         % (ha["build_install_s"], ha["build_install_median_us"]))
        lines.append("  the build took %.1f s longer than FPR's (%.1f vCPU-s)"
                     % ((ha["build_min"] - ref["build_min"]) * 60,
                        (ha["build_min"] - ref["build_min"]) * 60 * ha["smp"]))
        if ref["ram_gib_min"]:
            lines.append("  guest RAM only (without QEMU's own memory, e.g. TCG's code "
                         "buffer): %.3f of FPR's" % (ha["ram_gib_min"] / ref["ram_gib_min"]))
    return "\n".join(lines)


def plot(path, runs, cfg):
    plt = bl.pyplot()
    if not plt:
        return None
    n = len(runs)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), sharex=True, squeeze=False)
    ymax = cfg.mem / GIB * 1.08
    for ax, run in zip(axes[:, 0], runs):
        cand, vm, sampler, tz = run.cand, run.vms[0], run.sampler, run.t0
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
        ax.set_xlim(-0.3, (run.t1 - tz) / 60 + 0.2)
        ax.set_ylabel("GiB")
        ax.set_title("%s: %.2f GiB*min" % (cand.label, run.row["footprint_gib_min"]), fontsize=9,
                     loc="left")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("minutes since the build started")
    fig.suptitle("Automatic reclamation, %d GiB VM, build-like workload (TCG)"
                 % (cfg.mem // GIB), fontsize=10)
    return bl.save_figure(plt, fig, path)


def main(argv=None):
    cfg = parse_args(argv)
    if bl.missing_builds(cfg):
        return 77
    header = bl.header_lines(cfg, "bench/autoreclaim.py", argv, [
        "VM: %d MiB, %d vCPUs, q35, TCG unless KVM works; same seed (%d) for every candidate"
        % (cfg.mem // MIB, cfg.smp, SEED),
        "workload: " + cfg.wl.describe()])
    runs, failed = bl.run_candidates(cfg, header, lambda cand, disk: run_one(cand, cfg, disk))
    return bl.save_results(cfg, "auto", header, runs, failed, tables, plot)


if __name__ == "__main__":
    sys.exit(main())
