"""The CPU kernel's targets, side by side with the compiled path, for bench_substrate.

Each section returns markdown lines and a list of target rows (name, measured, interval,
target, met, reason). Ratios are compiled time / kernel time over interleaved rounds in
one process (the geometric mean of the paired per-round ratios, 95% t-interval on the
logarithm); the machine is shared, so the rows carry the load average.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time

from benchmarks.measure import ROOT, fmt_ratio, load_average, ratio_stat

RECALL_STEPS = 500            # the main study's phase-2 recall
RECALL_SEEDS = 8
TRAIN_STEPS = 1000
STARTUP_REPEATS = 3


def target_row(name, stat, target, unit="x", higher=True, reason=""):
    """One row of the targets table: stat {"mean", "low", "high"} against target."""
    worst = stat["low"] if higher else stat["high"]
    met = worst is not None and (worst >= target if higher else worst <= target)
    interval = ("-" if stat["low"] is None else
                f"[{stat['low']:.2f}, {stat['high']:.2f}]")
    return {"name": name, "measured": f"{stat['mean']:.2f}{unit}", "interval": interval,
            "target": f"{'>=' if higher else '<='} {target}{unit}",
            "met": "met" if met else "not met", "reason": reason}


def _timed_runs(sims, steps, rounds, record_every=10):
    """{label: [seconds per run]} of GrayScott objects, interleaved, each restarted from
    its own saved state every round (the same work every round)."""
    times = {label: [] for label in sims}
    for _ in range(rounds):
        for label, (gs, U, V) in sims.items():
            gs.reset(U=U, V=V)
            t = time.perf_counter()
            gs.run(steps, record_every=record_every, on_record=lambda *a: None)
            times[label].append(time.perf_counter() - t)
    return times


def throughput_targets(states, rounds, threads=2):
    """Kernel against compiled on the scarred state, 256^2, batch 32 and batch 1, at
    `threads` threads: (markdown, target rows)."""
    import torch

    from benchmarks.roofline import FLOPS_PER_CELL

    import substrate
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    md = [f"### Kernel against the compiled path (scarred state, 256x256, float32, "
          f"{threads} threads)", "",
          "Each round runs 100 steps with a record every 10 (the recall's shape) from the "
          "same scarred state on both paths; load average at start "
          f"{load_average()}.", "",
          "| batch | kernel Mcells/s (best) | compiled Mcells/s (best) | kernel vs compiled |",
          "|---|---|---|---|"]
    rows = []
    for batch, target in ((32, 2.5), (1, 3.0)):
        U, V, F, K, _ = states.get("scarred", (256, 256), batch, "float32")
        sims = {}
        for label, compile in (("kernel", "auto"), ("compiled", True)):
            gs = substrate.GrayScott(256, 256, batch=batch, F=F, K=K, device="cpu",
                                     compile=compile)
            gs.reset(U=U, V=V)
            gs.run(2)
            sims[label] = (gs, U, V)
        print(f"[targets] throughput batch {batch} ...", flush=True)
        times = _timed_runs(sims, 100, rounds)
        stat = ratio_stat(times["compiled"], times["kernel"])
        cells = batch * 256 * 256 * 100
        kernel_rate, compiled_rate = (cells / min(times[k]) for k in ("kernel", "compiled"))
        md.append(f"| {batch} | {kernel_rate / 1e6:.0f} | {compiled_rate / 1e6:.0f} | "
                  f"{fmt_ratio(stat)} |")
        reason = ("" if stat["low"] is not None and stat["low"] >= target else
                  f"both paths run near this machine's limits (Roofline below): the compiled "
                  f"step's {compiled_rate / 1e6:.0f} Mcells/s would have to become "
                  f"{target * compiled_rate / 1e6:.0f} ({target * compiled_rate * FLOPS_PER_CELL / 1e9:.0f} "
                  f"GFlop/s at {FLOPS_PER_CELL} flops per cell; compare the FMA rate and ISA "
                  f"peak there), and the kernel reaches {kernel_rate / 1e6:.0f}")
        rows.append(target_row(f"step throughput, scarred state, 256^2, batch {batch}, "
                               f"{threads} threads", stat, target, reason=reason))
    torch.set_num_threads(saved)
    return md + [""], rows


def _dead_background_fields(seeds):
    """Stored F, K of `--rule surround_inhibited` (8 seeds, 1000 training steps) and the
    phase-2 cues: the study's own dead-background recall."""
    import torch

    from patterns import make_pattern
    from protocol import Protocol
    from scarring import Study
    study = Study(Protocol(rule="surround_inhibited"))
    target = make_pattern("square_spots", 256, 256).to(torch.float32)
    stored = study.store(target[None], seeds, TRAIN_STEPS)
    return study, stored["F"], stored["K"], study.cues(target[None], seeds, 0.15), target


def dead_background_target(rounds):
    """Phase-2 recall of `--rule surround_inhibited` (global inhibition fused into the
    kernel), kernel against compiled: (markdown, target rows)."""
    print("[targets] dead-background recall: training surround_inhibited ...", flush=True)
    seeds = list(range(RECALL_SEEDS))
    study, F, K, cues, target = _dead_background_fields(seeds)
    times, quality = {"kernel": [], "compiled": []}, {}
    for label, compile in (("compiled", True), ("kernel", "auto")):   # warm-up
        study.recall(F, K, cues, target[None], 2, substrate={"compile": compile})
    for _ in range(rounds):
        for label, compile in (("kernel", "auto"), ("compiled", True)):
            t = time.perf_counter()
            out = study.recall(F, K, cues, target[None], RECALL_STEPS,
                               substrate={"compile": compile})
            times[label].append(time.perf_counter() - t)
            quality[label] = out["final"]["cosine"].flatten()
    stat = ratio_stat(times["compiled"], times["kernel"])
    same = bool((quality["kernel"] - quality["compiled"]).abs().max() < 5e-4)
    diff = float((quality["kernel"] - quality["compiled"]).abs().max())
    md = ["### Dead-background recall (`--rule surround_inhibited`, phase 2)", "",
          f"{RECALL_SEEDS} seeds, 256x256, {RECALL_STEPS} recall steps from the 15% cue "
          "under the rule's global inhibition (fused into the kernel's step), "
          f"{rounds} interleaved rounds; load average {load_average()}.", "",
          f"- kernel {min(times['kernel']):.2f} s, compiled {min(times['compiled']):.2f} s "
          f"(best round): kernel vs compiled {fmt_ratio(stat)}",
          f"- final recall cosine per seed, largest difference between the paths: "
          f"{diff:.2g} ({'the same' if same else 'NOT the same'} to 3 decimals); mean "
          f"{float(quality['kernel'].mean()):.3f}", ""]
    reason = ("exact skipping needs U and V unchanged to the bit in a tile and its "
              "neighbours; in this recall V is 0 on most of the grid but U there keeps "
              "relaxing toward 1 by ulps (rate F per step) for hundreds of steps, so most "
              "tiles still change (see Skipping)")
    return md, [target_row("dead-background recall (surround_inhibited, phase 2)", stat,
                           5.0, reason=reason)]


BATTERY_RULE = "surround_inhibited"


def _numbers(tree, path=""):
    """{path: number} of every number in a nested read-out tree (stats blocks included)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_numbers(v, f"{path}/{k}"))
        return out
    if isinstance(tree, bool) or not isinstance(tree, (int, float)):
        return {}
    return {path: float(tree)}


def _largest_difference(na, nb):
    """The largest |a - b| over the paths both {path: number} hold (nan equal to nan),
    and its path."""
    worst, where = 0.0, None
    for k in na.keys() & nb.keys():
        x, y = na[k], nb[k]
        if math.isnan(x) and math.isnan(y):
            continue
        d = abs(x - y) if not (math.isnan(x) or math.isnan(y)) else math.inf
        if d > worst:
            worst, where = d, k
    return worst, where


def battery_condition_target(rounds=1, seeds=RECALL_SEEDS, grid=256, settle_steps=None,
                             settle_min=None):
    """One condition of the associative battery (experiments/associative.py run_abc:
    every cue of the imprint battery recalled to its settled read-out under the engine's
    Settle tracker), `--rule surround_inhibited`, kernel against compiled, `rounds`
    interleaved rounds (the order alternating) from the same stored fields: (markdown,
    target rows). The store (three patterns, the rule's hook: the compiled path on both,
    since the kernel fuses only the published rule) is run and timed once and added
    to both sides for the whole-condition ratio; the capacity study of the condition
    (run_capacity) is not run. settle_steps, settle_min: the study's defaults when None."""
    import dataclasses

    from experiments import associative as assoc
    from protocol import protocol_of
    from scarring import Study
    import torch

    import patterns

    chosen = {"seeds": seeds, "grid": grid, "rule": BATTERY_RULE}
    if settle_steps is not None:
        chosen["settle_steps"] = settle_steps
    if settle_min is not None:
        chosen["settle_min"] = settle_min
    args = assoc.Args(**chosen)
    args.multi_recall_steps = min(args.multi_recall_steps, args.settle_min)
    args.check()
    seed_list = list(range(seeds))
    protocol = dataclasses.replace(protocol_of(args), rule="match_map")
    study = Study(protocol)
    pats = torch.stack(list(patterns.phase3_targets(grid).values())).to(study.dtype)
    cond = assoc.make_condition(BATTERY_RULE, protocol, grid)
    print(f"[targets] battery condition {BATTERY_RULE}: store ({seeds} seeds, {grid}^2) ...",
          flush=True)
    t = time.perf_counter()
    stored = assoc.store(study, cond, pats, seed_list)
    store_s = time.perf_counter() - t
    fields = (stored["F"], stored["K"])
    paths = {"kernel": "auto", "compiled": True}
    # warm-up: both paths through four steps of the whole battery (the compiled path
    # builds its kernel for the full batch; those for the smaller batches left as
    # recalls settle are built inside the timed runs, as in the study)
    warm = dataclasses.replace(args, multi_recall_steps=2, settle_min=4, settle_steps=4)
    study.protocol = dataclasses.replace(protocol, multi_recall_steps=2)
    for label, compile in paths.items():
        study.medium = dataclasses.replace(study.medium, compile=compile)
        assoc.run_abc(study, cond, pats, seed_list, warm, fields=fields)
    study.protocol = protocol
    times, entries = {k: [] for k in paths}, {}
    for r in range(rounds):
        for label in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            study.medium = dataclasses.replace(study.medium, compile=paths[label])
            print(f"[targets] battery condition round {r + 1}/{rounds}: {label} ...",
                  flush=True)
            t = time.perf_counter()
            entry, _ = assoc.run_abc(study, cond, pats, seed_list, args, fields=fields)
            times[label].append(time.perf_counter() - t)
            entries[label] = entry
    recall = ratio_stat(times["compiled"], times["kernel"])
    whole = ratio_stat([store_s + x for x in times["compiled"]],
                       [store_s + x for x in times["kernel"]])
    flat = {k: _numbers({w: e[w] for w in ("read", "settled")}) for k, e in entries.items()}
    diff, where = _largest_difference(flat["kernel"], flat["compiled"])
    means = {k: {p: x for p, x in f.items() if p.endswith("/mean")} for k, f in flat.items()}
    diff_means, where_means = _largest_difference(means["kernel"], means["compiled"])
    cosine = {k: {p: x for p, x in m.items() if "/cosine/" in p} for k, m in means.items()}
    diff_cosine, where_cosine = _largest_difference(cosine["kernel"], cosine["compiled"])
    members = seeds * len(entries["kernel"]["cues"])
    settled = {k: e["settle"]["settled_recalls"] for k, e in entries.items()}
    settled = {k: f"{r.get('k', '?')}/{r.get('n', '?')}" if isinstance(r, dict) else str(r)
               for k, r in settled.items()}
    steps = {k: e["settle"]["steps_run"] for k, e in entries.items()}
    md = [f"### One condition of the associative battery (`--rule {BATTERY_RULE}`)", "",
          f"experiments/associative.py's imprint battery for one condition: {seeds} seeds x "
          f"{len(entries['kernel']['cues'])} cues = {members} recalls at {grid}x{grid}, each "
          f"run until the engine's Settle tracker stops it (from step {args.settle_min}, at "
          f"most {args.settle_steps}), read at {args.multi_recall_steps} steps and settled; "
          f"{rounds} interleaved round(s) from the same stored fields; load average "
          f"{load_average()}. The store ({store_s:.0f} s, run once) takes the compiled path "
          f"on both sides (the kernel fuses only the published rule's hook); the capacity "
          f"study of the condition is not run.", "",
          f"- recall battery: kernel {', '.join(f'{x:.0f}' for x in times['kernel'])} s, "
          f"compiled {', '.join(f'{x:.0f}' for x in times['compiled'])} s: "
          f"{fmt_ratio(recall)}; with the store: {fmt_ratio(whole)}",
          f"- recalls the Settle tracker stopped before the last step: kernel "
          f"{settled['kernel']}, compiled {settled['compiled']}; the battery ran "
          f"{steps['kernel']} (kernel) and {steps['compiled']} (compiled) steps",
          f"- largest difference between the paths of a read-out's mean over seeds (every "
          f"read-out, cosine and IoU, at the read and settled times): {diff_means:.2g}"
          + (f" (at {where_means})" if where_means else "")
          + f"; of the cosine read-outs' means alone: {diff_cosine:.2g}"
          + (f" (at {where_cosine})" if where_cosine else "")
          + f"; of any number, interval ends included: {diff:.2g}"
          + (f" (at {where})" if where else ""), ""]
    tag = f"{seeds} seeds, {grid}^2" + ("" if args.settle_steps == 6000 else
                                        f", settle {args.settle_min}-{args.settle_steps}")
    same = {"mean": diff_means, "low": diff_means, "high": diff_means}
    reason = (f"the store ({store_s:.0f} s) runs the {BATTERY_RULE} rule's hook on the "
              "compiled path on both sides" if whole["low"] is None or whole["low"] < 5.0 else "")
    rows = [target_row(f"associative battery, one condition ({BATTERY_RULE}, {tag}, "
                       "settled read-outs), store included", whole, 5.0, reason=reason),
            target_row("associative battery, one condition: its recalls alone", recall, 5.0,
                       reason=f"recalls the Settle tracker stopped early: "
                              f"{settled['kernel']}; the kernel skips a tile only when it "
                              "and its 8 neighbours did not change in the step before "
                              "(and no tile of a member whose inhibited feed moved, mean V "
                              "above the set point), and the recalls keep lit patterns "
                              "and slowly relaxing ground on much of the grid to the end"),
            target_row("associative battery: largest difference of a read-out's mean, "
                       "kernel vs compiled", same, 0.0005, unit="", higher=False,
                       reason=f"at {where_means} (the cosine read-outs alone differ by "
                              f"{diff_cosine:.2g}): the paths round differently (the "
                              "compiler's fused multiply-adds; the kernel's float64 mean "
                              "for the inhibited feed) and a recall can amplify a last-bit "
                              "difference")]
    rows[-1].update(measured=f"{diff_means:.2g}", interval="-")
    return md, rows


STARTUP_SNIPPET = """
import time; t0 = time.perf_counter()
import torch, substrate
torch.set_num_threads({threads})
gs = substrate.GrayScott(256, 256, batch=8, compile={compile!r})
t = time.perf_counter(); gs.run(1)
print(f"first_step_s={{time.perf_counter() - t:.3f}} imports_s={{t - t0:.3f}} path={{gs.last_path}}")
"""


def startup_target(threads):
    """First step of a fresh process (caches warm: one untimed process first), kernel
    and compiled, alternating, STARTUP_REPEATS each: (markdown, target rows)."""
    from stats import summarize
    found = {"auto": [], True: []}
    for i in range(STARTUP_REPEATS + 1):
        for compile in ("auto", True):
            proc = subprocess.run([sys.executable, "-c", STARTUP_SNIPPET.format(
                threads=threads, compile=compile)], capture_output=True, text=True,
                cwd=ROOT, timeout=600)
            m = re.search(r"first_step_s=([\d.]+) imports_s=([\d.]+) path=(\w+)", proc.stdout)
            if m and i > 0:
                found[compile].append((float(m.group(1)), float(m.group(2)), m.group(3)))
    md = ["### First step of a fresh process (caches warm)", "",
          f"`GrayScott(256, 256, batch=8).run(1)` in a new Python process after `import "
          f"torch, substrate` (not counted: the imports, listed beside), {STARTUP_REPEATS} "
          f"processes per path, alternating, after one warm-up each; load average "
          f"{load_average()}.", "", "| path | first step s | imports s |", "|---|---|---|"]
    rows = []
    for compile, label in (("auto", "kernel"), (True, "compiled")):
        firsts = [f for f, _, _ in found[compile]]
        md.append(f"| {label} ({', '.join(sorted({p for _, _, p in found[compile]}))}) | "
                  f"{', '.join(f'{f:.2f}' for f in firsts) or 'failed'} | "
                  f"{', '.join(f'{i:.2f}' for _, i, _ in found[compile])} |")
        if label == "kernel" and firsts:
            s = summarize(firsts)
            stat = {"mean": s["mean"], "low": s["ci95_low"], "high": s["ci95_high"]}
            rows.append(target_row("first step of a fresh process (kernel)", stat, 1.0,
                                   unit=" s", higher=False,
                                   reason="numba's import and loading its cached "
                                          "functions; on a loaded machine every part "
                                          "stretches with the load"))
    return md + [""], rows


def table_lines(text):
    """The results table of scarring_validation's output: the lines from the header
    ('metric') to the first blank line after it."""
    lines, inside = [], False
    for line in text.splitlines():
        if re.match(r"\s+metric\s", line):
            inside = True
        if inside:
            if not line.strip() and lines:
                break
            lines.append(line.rstrip())
    return lines


def exactness_section(ours_stdout, reference_log):
    """The default run's table against a reference run's (same command at the start
    commit): (markdown, target rows)."""
    md = ["### Exactness of the default run", ""]
    if not ours_stdout or not reference_log or not os.path.exists(reference_log):
        md += ["Not compared: no reference log given (`--reference-log`).", ""]
        return md, []
    ours, ref = table_lines(ours_stdout), table_lines(open(reference_log).read())
    differ = [(a, b) for a, b in zip(ours, ref) if a != b] + \
        [("(missing)", b) for b in ref[len(ours):]]
    md += [f"The table of `python scarring_validation.py` (8 seeds) against "
           f"`{reference_log}` (the same command at the start commit): "
           f"{len(ref)} lines, {len(differ)} differ.", ""]
    for a, b in differ:
        md += [f"- ours: `{a.strip()}`", f"  reference: `{b.strip()}`"]
    stat = {"mean": float(len(differ)), "low": float(len(differ)),
            "high": float(len(differ))}
    return md + [""], [target_row("default run table identical to every digit (lines "
                                  "differing)", stat, 0, unit="", higher=False,
                                  reason="recall on the kernel is bit-identical to the "
                                         "eager step, the compiled path is not (its "
                                         "compiler may fuse multiply-adds)")]


def targets_table(rows):
    md = ["## Targets", "", "| target | measured | 95% interval | wanted | verdict | "
          "why, where not met |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['name']} | {r['measured']} | {r['interval']} | {r['target']} | "
                  f"{r['met']} | {r['reason'] if r['met'] != 'met' else ''} |")
    return md + [""]


def roofline_section(headline_rates, threads, scaling_png=None, scaling=None):
    """The machine's limits and each path's fraction of them at the headline
    configuration (headline_rates: {path: Mcells/s})."""
    from benchmarks import roofline as rl
    bw, fma, peak = rl.copy_bandwidth(), rl.fma_rate(), rl.fma_peak_from_clock()
    md = ["## Roofline", "",
          f"Copy bandwidth {bw / 1e9:.1f} GB/s (one thread, numpy copy of 128 MiB); FMA "
          f"rate {fma / 1e9:.1f} GFlop/s per thread (float32 a*y+b in L1), the ISA's peak "
          f"{(peak or math.nan) / 1e9:.1f} GFlop/s per core (2 FMA pipes x 8 lanes x 2 x "
          f"clock); both timed on the thread's CPU clock. A step's compulsory traffic is "
          f"{rl.BYTES_PER_CELL['float32']} B per cell (float32) and its arithmetic "
          f"{rl.FLOPS_PER_CELL} flops per cell. Fractions at the throughput target's "
          f"configuration with {threads} threads (limits x threads):", "",
          "| path | Mcells/s | GB/s if streamed | of copy bandwidth | GFlop/s | of FMA rate "
          "| of ISA peak |", "|---|---|---|---|---|---|---|"]
    for path, rate in headline_rates.items():
        gbs = rate * 1e6 * rl.BYTES_PER_CELL["float32"]
        flops = rate * 1e6 * rl.FLOPS_PER_CELL
        md.append(f"| {path} | {rate:.0f} | {gbs / 1e9:.1f} | {gbs / (bw * threads):.0%} | "
                  f"{flops / 1e9:.1f} | {flops / (fma * threads):.0%} | "
                  f"{flops / ((peak or math.nan) * threads):.0%} |")
    if scaling_png:
        md += ["", f"![Mcells/s against grid and batch]({scaling_png})", ""]
    if scaling:
        md += ["| path | grid | batch | Mcells/s (best of 3) |", "|---|---|---|---|"]
        md += [f"| {p} | {g}^2 | {b} | {v:.0f} |" for (p, g, b), v in sorted(scaling.items())]
    return md + [""]
