#!/usr/bin/python3
"""Guest interference: the guest's memory bandwidth while the host resizes it.

Issue 6, item 3. The same candidates, machines and resize commands as the
resize micro-benchmark (bench/resize.py): virtio-balloon and virtio-mem on
the baseline kernel, HyperAlloc (auto mode off) on the llfree kernel, 2 vCPUs.

Per candidate one VM (the guest runs the ha-shell command server); per
repetition two probe runs back to back in that VM, in alternating order:

  resize     `ha-mem bandwidth` (a STREAM-like copy on every vCPU, one MB/s
             sample per 100 ms) runs DURATION seconds; the host shrinks the
             VM to TARGET at t = T_SHRINK and grows it back to MEM at t = T_GROW
             (full: 8 GiB -> 2 GiB, 90 s, events at 20 s / 60 s;
              quick: 3 GiB -> 1 GiB, 30 s, events at 10 s / 20 s)
  no-resize  the same probe without resizing, the reference

Before each probe the guest touches MEM - TARGET and frees it (`ha-mem hold
SIZE </dev/null`), so the shrink gives back host memory that is really
backed, as after a workload; the probe's working set (both buffers, default
256 MiB quick / 512 MiB full) fits in the shrunk VM. The probe verifies its
copy at the end (exit status 1 on corruption).

Reported per candidate (medians over the repetitions):
  change     mean bandwidth of the resize run / of the no-resize run - 1,
             per pair, then the median (the mean of equally spaced samples is
             the total bytes copied over the duration, i.e. the runtime change
             of a fixed amount of work)
  p1         1st percentile of the samples (nearest rank)
  min        the lowest sample in the window of each event: from the event
             to the end of the resize + 1 s, at least 5 s; the same windows in
             the no-resize run
The resize duration of each event comes from QEMU's trace (see resize.py).
Target (issue 6): HyperAlloc's bandwidth change within 1 %.

Probe time: the guest's samples carry their own clock (t since the probe
started); host events are mapped onto it through the console: offset =
min over samples of (host receive time - t), since console delivery only
adds delay.

VMs run under TCG here (no KVM): the copy loop is emulated and the vCPU
threads share the host cores with QEMU's main loop (where the devices work)
and with other jobs, so absolute MB/s mean little; the change against the
back-to-back reference is what carries over, and only beyond the noise that
pairs of no-resize runs show on the same machine.

Usage: bench/interference.py [--quick] [--reps N] [--mem 8G] [--target 2G]
                             [--size 512M] [--duration 90] [--events 20,60]
                             [--candidates virtio-balloon,virtio-mem,hyperalloc]
                             [--out DIR] [--plot CSV]
Output: DIR (default build/bench/interference/) interference-<time>.csv (one
row per probe run), interference-<time>-samples.csv (every sample),
interference-<time>.txt (machine, parameters, table), interference-<time>.png
(bandwidth over time per candidate, shrink and grow marked; --plot redraws it
from a samples CSV), serial console and QEMU trace per VM.
Exit status 0 done, 1 a run failed, 77 skip (a kernel, initramfs or QEMU missing).
"""

import argparse
import csv
import math
import os
import re
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import resize  # noqa: E402  (candidates, VM, trace timing: shared with resize.py)
from resize import CANDIDATES, GIB, MIB, guestvm, parse_size  # noqa: E402

OUT = os.path.join(resize.REPO, "build", "bench", "interference")
INTERVAL_MS = 100      # probe sample interval
WINDOW = 5.0           # seconds: the shortest window after an event for "min"
SETTLE = 1.0           # seconds after the end of a resize still in the window
TARGET_CHANGE = 0.01   # issue 6: guest bandwidth change within 1 %

START_RE = re.compile(r"ha-mem: bandwidth: (\d+) threads")
SAMPLE_RE = re.compile(r"ha-mem: bw t=([0-9.]+) wall=[0-9.]+ MB/s=([0-9.]+)")
SUMMARY_RE = re.compile(r"ha-mem: bandwidth (ok|FAILED): .*")
RESIZE, BASE = "resize", "no-resize"


class ShellVM(resize.VM):
    """A benchmark VM whose guest runs the ha-shell command server."""

    RUN = guestvm.SHELL_SERVER
    READY = "@@SHELL-READY"
    QUIT = "exit"

    def rel_now(self):
        """Now on the clock of the console lines (seconds since QEMU started,
        Guest.result.lines)."""
        return time.monotonic() - self.guest._start


class Run:
    """One probe run: samples (probe t, MB/s) and the events done in it."""

    def __init__(self, cand, rep, kind, order):
        self.cand, self.rep, self.kind, self.order = cand, rep, kind, order
        self.samples = []  # (probe t at the end of the sample, MB/s), merged: see merge()
        self.total_mb = 0.0  # MB copied (read + written) until the last sample
        self.span = 0.0      # probe t of the last sample
        self.events = []   # (name, probe t of the command, probe t of its end, Phase)
        self.summary = ""

    def rates(self):
        return [r for _, r in self.samples]

    def mean(self):
        """MB/s over the whole run: total bytes over total time."""
        return self.total_mb / self.span

    def p1(self):
        s = sorted(self.rates())
        return s[max(0, math.ceil(0.01 * len(s)) - 1)]

    def window(self, name, nominal):
        """(start, end) in probe time of the event called name; the nominal
        window where there was none (the no-resize run)."""
        for ev, t0, t1, _ in self.events:
            if ev == name:
                return t0, max(t1 + SETTLE, t0 + WINDOW)
        return nominal, nominal + WINDOW

    def window_min(self, name, nominal):
        a, b = self.window(name, nominal)
        inside = [r for t, r in self.samples if a <= t <= b]
        return min(inside) if inside else None

    def event(self, name):
        for ev, t0, t1, ph in self.events:
            if ev == name:
                return t0, t1, ph
        return None


def merge(raw, min_dt):
    """Probe samples of at least min_dt seconds, and the MB copied in all.

    The probe's sampling thread shares the vCPUs with the copy threads; when
    it runs late it catches up with samples microseconds apart that read
    0 MB/s (the copy threads add their bytes per 256 KiB block), although the
    late sample before them holds the bytes of the whole delay. Adding up
    consecutive samples until each spans min_dt keeps every byte and every
    stall (a slow interval stays slow) without those artefacts."""
    out, total, prev, acc, t0 = [], 0.0, 0.0, 0.0, 0.0
    for t, rate in raw:
        mb = rate * max(t - prev, 0.0)
        total += mb
        acc += mb
        prev = t
        if t - t0 >= min_dt:
            out.append((t, acc / (t - t0)))
            acc, t0 = 0.0, t
    return out, total


def pretouch(vm, cfg):
    """The guest touches MEM - TARGET and frees it again."""
    status, lines = vm.guest.shell("ha-mem hold %dM </dev/null" % (cfg.touch // MIB),
                                   cfg.guest_timeout)
    if status != 0:
        raise RuntimeError("%s: pre-touch failed (%s): %s (see %s)"
                           % (vm.cand.name, status, " | ".join(lines[-3:]), vm.log_path))


def probe(vm, cfg, run, seed):
    """Runs one bandwidth probe; with run.kind == RESIZE shrinks and grows
    the VM at the configured times. Fills run."""
    guest, cand = vm.guest, vm.cand
    events = []
    if run.kind == RESIZE:
        events = [("shrink", cfg.t_shrink, cfg.target), ("grow", cfg.t_grow, cfg.mem)]
    before = len(guest.result.lines)
    guest.send("ha-mem bandwidth -s %dM -d %g -i %d -w %d --seed %d\n"
               % (cfg.size // MIB, cfg.duration, INTERVAL_MS, cfg.smp, seed))
    deadline = time.monotonic() + cfg.guest_timeout

    def new_lines():
        return guest.result.lines[before:]

    # the probe starts its clock right after printing this line
    while True:
        start = [rel for rel, line in new_lines() if START_RE.search(line)]
        if start:
            break
        if time.monotonic() > deadline or any(guestvm.SHELL_DONE.match(line)
                                              for _, line in new_lines()):
            raise RuntimeError("%s: the probe did not start (see %s)"
                               % (cand.name, vm.log_path))
        time.sleep(0.01)
    rel0 = start[0]
    done_events = []
    for name, at, size in events:
        left = rel0 + at - vm.rel_now()
        if left > 0:
            time.sleep(left)
        a = vm.rel_now()
        ph = cand.resize(vm, size, name)
        done_events.append((name, a, vm.rel_now(), ph))
    deadline = time.monotonic() + cfg.duration + cfg.guest_timeout
    while not any(guestvm.SHELL_DONE.match(line) for _, line in new_lines()):
        if time.monotonic() > deadline:
            raise RuntimeError("%s: the probe did not end (see %s)" % (cand.name, vm.log_path))
        time.sleep(0.1)
    status = None
    for rel, line in new_lines():
        m = SAMPLE_RE.search(line)
        if m:
            run.samples.append((float(m.group(1)), float(m.group(2)), rel))
        elif SUMMARY_RE.search(line):
            run.summary = SUMMARY_RE.search(line).group(0)[len("ha-mem: "):]
        m = guestvm.SHELL_DONE.match(line)
        if m:
            status = int(m.group(1))
    if status != 0 or not run.samples:
        raise RuntimeError("%s: probe exit status %s, %d samples: %s (see %s)"
                           % (cand.name, status, len(run.samples), run.summary, vm.log_path))
    offset = min(rel - t for t, _, rel in run.samples)
    run.samples, run.total_mb = merge([(t, r) for t, r, _ in run.samples],
                                      0.75 * INTERVAL_MS / 1000)
    run.span = run.samples[-1][0]
    run.events = [(name, a - offset, b - offset, ph) for name, a, b, ph in done_events]


def measure(cand, cfg, log):
    """All repetitions of one candidate in one VM; returns the Runs."""
    runs = []
    with ShellVM(cand, cfg, "probe") as vm:
        for rep in range(cfg.reps):
            order = (BASE, RESIZE) if rep % 2 == 0 else (RESIZE, BASE)
            for i, kind in enumerate(order):
                run = Run(cand.name, rep + 1, kind, i + 1)
                pretouch(vm, cfg)
                probe(vm, cfg, run, seed=cfg.seed + rep)
                log("  [rep %d] %-9s mean %6.0f MB/s  p1 %6s  min shrink %6s  min grow "
                    "%6s%s" % (rep + 1, kind, run.mean(), fmt_mbs(run.p1()),
                               fmt_mbs(run.window_min("shrink", cfg.t_shrink)),
                               fmt_mbs(run.window_min("grow", cfg.t_grow)),
                                 "".join("  %s %s (%s)" % (name, resize.fmt_time(ph.seconds),
                                                           resize.fmt_rate(ph.gibs) + " GiB/s")
                                         for name, _, _, ph in run.events)))
                runs.append(run)
        bad = vm.guest.result.bad_lines()
        if bad:
            raise RuntimeError("%s: guest console problems: %s" % (cand.name, "; ".join(bad[:3])))
    return runs


def run_rows(cfg, runs):
    """One CSV row per run."""
    rows = []
    for r in runs:
        row = {"candidate": r.cand, "rep": r.rep, "kind": r.kind, "order": r.order,
               "samples": len(r.samples), "mean_mbs": r.mean(),
               "median_mbs": statistics.median(r.rates()), "p1_mbs": r.p1(),
               "min_mbs": min(r.rates()),
               "min_shrink_mbs": r.window_min("shrink", cfg.t_shrink),
               "min_grow_mbs": r.window_min("grow", cfg.t_grow), "summary": r.summary}
        for name in ("shrink", "grow"):
            ev = r.event(name)
            row["%s_at" % name] = ev[0] if ev else None
            row["%s_seconds" % name] = ev[2].seconds if ev else None
            row["%s_bytes" % name] = ev[2].nbytes if ev else None
            row["%s_note" % name] = ev[2].note if ev else ""
        rows.append(row)
    return rows


def fmt_mbs(x):
    return "-" if x is None else "%.0f" % x


def fmt_pct(x):
    return "-" if x is None else "%+.1f %%" % (100 * x)


def summarize(rows):
    """{candidate: dict of medians over the repetitions}."""
    out = {}
    for c in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == c]
        pairs = {}
        for r in mine:
            pairs.setdefault(r["rep"], {})[r["kind"]] = r
        changes = [p[RESIZE]["mean_mbs"] / p[BASE]["mean_mbs"] - 1
                   for p in pairs.values() if RESIZE in p and BASE in p]
        p1_changes = [p[RESIZE]["p1_mbs"] / p[BASE]["p1_mbs"] - 1
                      for p in pairs.values() if RESIZE in p and BASE in p]

        def med(kind, key):
            vals = [r[key] for r in mine if r["kind"] == kind and r[key] is not None]
            return statistics.median(vals) if vals else None
        base = [r["mean_mbs"] for r in mine if r["kind"] == BASE]
        s = {"pairs": len(changes),
             "noise": (max(base) - min(base)) / statistics.median(base) if len(base) > 1
             else None,
             "change": statistics.median(changes) if changes else None,
             "change_range": (min(changes), max(changes)) if changes else None,
             "p1_change": statistics.median(p1_changes) if p1_changes else None}
        for kind in (BASE, RESIZE):
            for key in ("mean_mbs", "p1_mbs", "min_shrink_mbs", "min_grow_mbs"):
                s[kind, key] = med(kind, key)
        for name in ("shrink", "grow"):
            s[name] = med(RESIZE, "%s_seconds" % name)
        out[c] = s
    return out


def table(rows):
    """The report table (markdown) and the verdict line."""
    s = summarize(rows)
    lines = ["| candidate | pairs | mean MB/s no-resize / resize | change (range) "
             "| spread of no-resize means | p1 MB/s no-resize / resize "
             "| min MB/s around shrink | min MB/s around grow | shrink took | grow took |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, v in s.items():
        rng = v["change_range"]
        lines.append("| %s | %d | %s / %s | %s (%s .. %s) | %s | %s / %s | %s / %s | %s / %s "
                     "| %s | %s |"
                     % (CANDIDATES[c].label, v["pairs"],
                        fmt_mbs(v[BASE, "mean_mbs"]), fmt_mbs(v[RESIZE, "mean_mbs"]),
                        fmt_pct(v["change"]), fmt_pct(rng and rng[0]), fmt_pct(rng and rng[1]),
                        "-" if v["noise"] is None else "%.1f %%" % (100 * v["noise"]),
                        fmt_mbs(v[BASE, "p1_mbs"]), fmt_mbs(v[RESIZE, "p1_mbs"]),
                        fmt_mbs(v[BASE, "min_shrink_mbs"]), fmt_mbs(v[RESIZE, "min_shrink_mbs"]),
                        fmt_mbs(v[BASE, "min_grow_mbs"]), fmt_mbs(v[RESIZE, "min_grow_mbs"]),
                        resize.fmt_time(v["shrink"]), resize.fmt_time(v["grow"])))
    lines.append("")
    lines.append("change: mean bandwidth (total bytes / time) of the resize run over its "
                 "no-resize partner - 1, median over the pairs; spread: (max - min) / median of "
                 "the no-resize runs, the noise floor; min columns: no-resize / resize run, the "
                 "same windows (event to end of the resize + %.0f s, at least %.0f s).")
    lines[-1] = lines[-1] % (SETTLE, WINDOW)
    ha = s.get("hyperalloc")
    if ha and ha["change"] is not None:
        ch = ha["change"]
        noise = ha["noise"]
        if abs(ch) <= TARGET_CHANGE:
            verdict = "met"
        else:
            verdict = "missed by %.1f points" % (100 * (abs(ch) - TARGET_CHANGE))
        if noise is None:
            verdict += " (one pair: no estimate of the noise; use --reps 3 or more)"
        elif noise > TARGET_CHANGE and abs(ch) <= noise:
            verdict += (" by the median, but the no-resize runs alone spread %.1f %%: not "
                        "established at this noise (more pairs or a quieter machine)"
                        % (100 * noise))
        lines.append("HyperAlloc: bandwidth change %s (median of %d pair(s)); target within "
                     "1 %%: %s" % (fmt_pct(ch), ha["pairs"], verdict))
    return "\n".join(lines)


BIN = 1.0  # seconds per point in the plot


def binned(pts):
    """[(bin start, MB/s)] of BIN-second bins from merged samples [(t, MB/s)]:
    byte-weighted, a sample counted in the bin of its end."""
    acc, prev = {}, 0.0
    for t, mbs in pts:
        b = acc.setdefault(int(t // BIN), [0.0, 0.0])
        b[0] += mbs * (t - prev)
        b[1] += t - prev
        prev = t
    return [(k * BIN, mb / dt) for k, (mb, dt) in sorted(acc.items()) if dt > 0]


def plot(samples, events, path, title, notes=None):
    """Bandwidth over probe time in BIN-second bins, one panel per candidate:
    each run thin, the median over the runs of a kind bold (resize runs in
    colour, no-resize runs grey); shrink and grow marked per run, the shaded
    span is the resize as the host saw it. notes: {candidate: text} for the
    panel. Returns path or None."""
    plt = resize.pyplot()
    if not plt:
        return None
    names = list(dict.fromkeys(r["candidate"] for r in samples))
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.7 * len(names) + 0.6),
                             sharex=True, squeeze=False)
    tmax = max(r["t"] for r in samples)
    ymax = 0
    for ax, c in zip(axes[:, 0], names):
        color = resize.PLOT_COLORS.get(c, "tab:red")
        runs = {}
        for r in samples:
            if r["candidate"] == c:
                runs.setdefault((r["rep"], r["kind"]), []).append((r["t"], r["mbs"]))
        for kind, col in ((BASE, "0.45"), (RESIZE, color)):
            series = [binned(pts) for (_, k), pts in sorted(runs.items()) if k == kind]
            if not series:
                continue
            for pts in series:
                ax.plot([t + BIN / 2 for t, _ in pts], [m for _, m in pts], color=col,
                        linewidth=0.6, alpha=0.35)
            bins = {}
            for pts in series:
                for t, m in pts:
                    bins.setdefault(t, []).append(m)
            med = [(t, statistics.median(v)) for t, v in sorted(bins.items())]
            ymax = max([ymax] + [m for pts in series for _, m in pts])
            ax.plot([t + BIN / 2 for t, _ in med], [m for _, m in med], color=col, linewidth=1.8,
                    label="%s: median of %d run(s)" % (
                        "%s, resize" % CANDIDATES[c].label if kind == RESIZE else "no resize",
                        len(series)))
        marked = set()
        for e in events:
            if e["candidate"] != c:
                continue
            ax.axvline(e["at"], color="k", linestyle="--" if e["event"] == "shrink" else ":",
                       linewidth=0.9, label=e["event"] if e["event"] not in marked else None)
            ax.axvspan(e["at"], e["end"], color="k", alpha=0.06)
            marked.add(e["event"])
        if notes and notes.get(c):
            ax.text(0.99, 0.04, notes[c], transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
        ax.set_xlim(0, tmax + 0.5)
        ax.set_ylabel("MB/s (%g s bins)" % BIN)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", ncol=4)
    for ax in axes[:, 0]:
        ax.set_ylim(0, ymax * 1.08)
    axes[-1, 0].set_xlabel("probe time (s)")
    axes[0, 0].set_title(title, fontsize=9)
    return resize.save_figure(plt, fig, path)


def notes_of(rows):
    """Panel notes for plot(): the change and its range per candidate."""
    out = {}
    for c, v in summarize(rows).items():
        if v["change"] is not None:
            rng = v["change_range"]
            out[c] = "mean bandwidth change %s (pairs: %s .. %s)" % (
                fmt_pct(v["change"]), fmt_pct(rng[0]), fmt_pct(rng[1]))
    return out


def sample_rows(runs):
    """(samples, events) rows for the samples CSV and the plot."""
    samples, events = [], []
    for r in runs:
        for t, mbs in r.samples:
            samples.append({"candidate": r.cand, "rep": r.rep, "kind": r.kind, "t": t,
                            "mbs": mbs, "event": "", "end": ""})
        for name, a, b, _ in r.events:
            events.append({"candidate": r.cand, "rep": r.rep, "kind": r.kind, "t": a,
                           "mbs": "", "event": name, "end": b, "at": a})
    return samples, events


def replot(path):
    """--plot: the PNG of an earlier run, beside its samples CSV."""
    samples, events = [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            r["rep"] = int(r["rep"])
            if r["event"]:
                r["at"], r["end"] = float(r["t"]), float(r["end"])
                events.append(r)
            else:
                r["t"], r["mbs"] = float(r["t"]), float(r["mbs"])
                samples.append(r)
    stamp = os.path.basename(path)[len("interference-"):-len("-samples.csv")]
    runs_csv = path[:-len("-samples.csv")] + ".csv"
    notes = None
    if os.path.exists(runs_csv):
        with open(runs_csv) as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["rep"] = int(r["rep"])
            for k, v in r.items():
                if k.endswith(("_mbs", "_seconds", "_at")):
                    r[k] = float(v) if v else None
        print(table(rows))
        notes = notes_of(rows)
    png = plot(samples, events, path[:-len("-samples.csv")] + ".png",
               "guest bandwidth during resizing, %s (TCG)" % stamp, notes)
    if png:
        print("plot: %s" % png)
    return 0 if png else 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 GiB VMs shrunk to 1 GiB, 30 s probes, events at 10 s / 20 s, "
                        "1 repetition")
    p.add_argument("--mem", type=parse_size, help="VM size (default 8G, quick 3G)")
    p.add_argument("--target", type=parse_size, help="size to shrink to (default 2G, quick 1G)")
    p.add_argument("--size", type=parse_size,
                   help="probe working set, both buffers (default 512M, quick 256M)")
    p.add_argument("--duration", type=float, help="probe seconds (default 90, quick 30)")
    p.add_argument("--events", help="shrink,grow times in probe seconds (default 20,60; "
                                    "quick 10,20)")
    p.add_argument("--reps", type=int, help="pairs of runs per candidate (default 3, quick 1)")
    p.add_argument("--seed", type=int, default=1, help="probe pattern seed of the first pair")
    p.add_argument("--candidates", default=",".join(CANDIDATES),
                   help="comma-separated subset of %s" % ",".join(CANDIDATES))
    p.add_argument("--out", default=OUT, help="output directory (default %(default)s)")
    p.add_argument("--plot", metavar="CSV",
                   help="only redraw the PNG from an earlier interference-<time>-samples.csv "
                        "(and print the table of the runs CSV beside it)")
    cfg = p.parse_args(argv)
    q = cfg.quick
    cfg.mem = cfg.mem or (3 * GIB if q else 8 * GIB)
    cfg.target = cfg.target or (1 * GIB if q else 2 * GIB)
    cfg.size = cfg.size or (256 * MIB if q else 512 * MIB)
    cfg.duration = cfg.duration or (30.0 if q else 90.0)
    cfg.reps = cfg.reps or (1 if q else 3)
    try:
        cfg.t_shrink, cfg.t_grow = (float(x) for x in (cfg.events or
                                                       ("10,20" if q else "20,60")).split(","))
    except ValueError:
        p.error("--events takes two numbers: shrink,grow")
    if not 0 < cfg.t_shrink < cfg.t_grow < cfg.duration:
        p.error("need 0 < shrink time < grow time < --duration")
    cfg.touch = cfg.mem - cfg.target
    if cfg.touch < 256 * MIB or cfg.mem % (2 * MIB) or cfg.target % (128 * MIB):
        p.error("need --mem >= --target + 256M, 2 MiB multiples, target a 128 MiB multiple")
    if cfg.size > cfg.target // 2:
        p.error("the probe's working set (--size) must fit in half the shrunk VM")
    cfg.candidates = resize.candidate_names(p, cfg.candidates, CANDIDATES)
    cfg.smp = 2
    resize.vm_timeouts(cfg)
    cfg.stamp = time.strftime("%Y%m%d-%H%M%S")
    return cfg


def main(argv=None):
    cfg = parse_args(argv)
    if cfg.plot:
        return replot(cfg.plot)
    if resize.missing_builds(CANDIDATES[c] for c in cfg.candidates):
        return 77
    os.makedirs(cfg.out, exist_ok=True)
    base = os.path.join(cfg.out, "interference-%s" % cfg.stamp)
    header = resize.machine_info() + [
        "VMs: %d GiB, %d vCPUs, accel %s; resize run: shrink to %d MiB at t=%g s, grow back "
        "at t=%g s" % (cfg.mem // GIB, cfg.smp,
                       guestvm.choose_accel(guestvm.find_qemu(),
                                            CANDIDATES[cfg.candidates[0]].kernel),
                       cfg.target // MIB, cfg.t_shrink, cfg.t_grow),
        "probe: ha-mem bandwidth, %d threads, %d MiB, %g s, %d ms samples; pre-touch %d MiB "
        "before each probe; %d pair(s) per candidate, back to back in one VM, order "
        "alternating (no-resize first in odd pairs)" % (cfg.smp, cfg.size // MIB, cfg.duration,
                                                        INTERVAL_MS, cfg.touch // MIB, cfg.reps),
        "virtio-mem VM: %d MiB boot memory + %d MiB virtio-mem device (block size 2 MiB, "
        "memhp_default_state=online_movable)" % (cfg.target // MIB, cfg.touch // MIB),
        "command: bench/interference.py %s" % " ".join(sys.argv[1:] if argv is None else argv)]
    for line in header:
        print(line, flush=True)

    runs, failed = [], []
    for name in cfg.candidates:
        cand = CANDIDATES[name]
        print("%s ..." % cand.label, flush=True)
        try:
            runs += measure(cand, cfg, lambda line: print(line, flush=True))
        except (RuntimeError, OSError, TimeoutError, ValueError) as e:
            print("  FAILED: %s" % e, flush=True)
            failed.append("%s: %s" % (name, e))

    rows = run_rows(cfg, runs)
    fields = ["candidate", "rep", "kind", "order", "samples", "mean_mbs", "median_mbs",
              "p1_mbs", "min_mbs", "min_shrink_mbs", "min_grow_mbs", "shrink_at",
              "shrink_seconds", "shrink_bytes", "grow_at", "grow_seconds", "grow_bytes",
              "shrink_note", "grow_note", "summary"]
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    samples, events = sample_rows(runs)
    with open(base + "-samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["candidate", "rep", "kind", "t", "mbs", "event", "end"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(samples + events)
    report = table(rows) if rows else "(no runs)"
    png = plot(samples, events, base + ".png",
               "guest bandwidth during resizing, %s: %d GiB -> %d GiB at %g s, back at %g s "
               "(TCG)" % (cfg.stamp, cfg.mem // GIB, cfg.target // GIB, cfg.t_shrink,
                          cfg.t_grow), notes_of(rows)) if samples else None
    resize.write_report(base + ".txt", "\n".join(header) + "\n\n" + report + "\n", failed)
    print("\n" + report)
    print("\nraw data: %s.csv, %s-samples.csv\nreport:   %s.txt" % (base, base, base))
    if png:
        print("plot:     %s" % png)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
