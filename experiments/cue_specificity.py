"""Cue specificity: what does a scarred medium recall, and from what cue?

Stores patterns with the reference protocol, then starts recall from many cues - the
cue of each stored pattern, cues of patterns never stored, pure noise, an all-zero V, a
uniform V, a shifted cue and partial cues - and compares each result with every stored
and unstored pattern. Two stored sets run side by side:

  "three": the protocol's phase 3 (A = square_spots offset (-64, -64), B = ring,
           C = line; 500 scarred steps each, scars accumulating; recall s = 0.2, 300 steps)
  "one":   the protocol's phase 1 (square_spots alone, 1000 scarred steps)

and every recall also runs on the unscarred F0/K0 medium (the control). All seeds x
stored sets x cues run as one GrayScott batch. Writes cue_specificity.json (the three-
pattern matrix under "matrix", its discrimination index under "discrimination", the
single-pattern matrix under "single_pattern") and cue_specificity.png.

    python -m experiments.cue_specificity            # default: 8 seeds, 256 x 256
    python -m experiments.cue_specificity --quick    # seconds: 64 x 64, few steps
"""
from __future__ import annotations

import argparse
import time

import torch

import metrics
import scarring
from common import cli as experiment
from common import figures
from metrics import format_stat, summarize
from patterns import make_pattern
from scarring import ScarRule
from substrate import F0, K0

NAME = "cue_specificity"
GRID = 256                # reference grid
TRAIN_STEPS = 500         # per pattern, phase 3
SINGLE_TRAIN_STEPS = 1000  # phase 1
RECALL_STEPS = 300        # phase 3
CUE_STRENGTH = 0.2        # phase 3
CUE_NOISE = scarring.CUE_NOISE
SHIFT = 8                 # cells, for the shifted cue (reference grid; scales with the grid)
UNIFORM_LEVEL = CUE_STRENGTH * 0.8  # a uniform V at the cue's in-shape level
QUICK = dict(grid=32, train_steps=30, single_train_steps=40, recall_steps=20)


def build_patterns(H, W):
    """Stored (phase 3) and unstored patterns, named, all (H, W)."""
    s = W / 256
    stored = {"A_spots": make_pattern("square_spots", H, W, offset=(-64 * s, -64 * s)),
              "B_ring": make_pattern("ring", H, W), "C_line": make_pattern("line", H, W)}
    unstored = {"D_spots_ref": make_pattern("square_spots", H, W),
                "E_cross": make_pattern("cross", H, W)}
    return stored, unstored


def build_cues(stored, unstored, seeds, strength, noise, shift):
    """Named cue conditions -> (S, C, H, W) starting V fields (and the names)."""
    A = stored["A_spots"]
    H, W = A.shape
    x = torch.arange(W).view(1, W).expand(H, W)
    y = torch.arange(H).view(H, 1).expand(H, W)
    half = (x < W // 2).to(A.dtype)
    quarter = ((x < W // 2) & (y < H // 2)).to(A.dtype)
    shapes = {f"cue {n}": p for n, p in {**stored, **unstored}.items()}
    shapes[f"cue A shifted {shift}"] = torch.roll(A, (shift, shift), dims=(0, 1))
    shapes["cue A half"] = A * half
    shapes["cue A quarter"] = A * quarter
    names = list(shapes)
    cues = scarring.make_cues(torch.stack(list(shapes.values())), strength, noise, seeds)
    S = len(seeds)
    noise_only = scarring.make_cues(torch.zeros(1, H, W), 0.0, noise, seeds, first_index=100)
    zero = torch.zeros(S, 1, H, W)
    uniform = torch.full((S, 1, H, W), UNIFORM_LEVEL)
    cues = torch.cat([cues, noise_only, zero, uniform], dim=1)
    names += ["pure noise", "zero V", f"uniform V={UNIFORM_LEVEL:.2f}"]
    kept = {"cue A shifted": None, "cue A half": float(half[A > 0].mean()),
            "cue A quarter": float(quarter[A > 0].mean())}
    return names, cues, kept


def summarize_matrix(m):
    """(S, C, P) -> {"mean": C x P, "ci95_low", "ci95_high", "per_seed": S x C x P}."""
    stats = metrics.summarize_tensor(m)
    return {"mean": [[s["mean"] for s in row] for row in stats],
            "ci95_low": [[s["ci95_low"] for s in row] for row in stats],
            "ci95_high": [[s["ci95_high"] for s in row] for row in stats],
            "std": [[s["std"] for s in row] for row in stats],
            "per_seed": m.tolist()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    experiment.add_common_args(parser, f"scarring_results/{NAME}/")
    parser.add_argument("--grid", type=int, default=GRID, help=f"grid size (default {GRID})")
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--recall-steps", type=int, default=RECALL_STEPS)
    parser.add_argument("--cue-strength", type=float, default=CUE_STRENGTH)
    args = parser.parse_args(argv)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)
    grid, train_steps, single_steps, recall_steps = (
        args.grid, args.train_steps, SINGLE_TRAIN_STEPS, args.recall_steps)
    if args.quick:
        grid, train_steps, single_steps, recall_steps = (
            QUICK["grid"], QUICK["train_steps"], QUICK["single_train_steps"],
            QUICK["recall_steps"])
    if grid < 16:
        raise ValueError(f"--grid {grid} is too small (>= 16)")
    out = experiment.prepare_out_dir(args.out)
    t0 = time.time()
    S = len(seeds)
    stored, unstored = build_patterns(grid, grid)
    shift = max(1, round(SHIFT * grid / 256))
    cue_names, cues, kept = build_cues(stored, unstored, seeds, args.cue_strength,
                                       CUE_NOISE, shift)
    columns = list(stored) + list(unstored)
    all_patterns = torch.stack([*stored.values(), *unstored.values()])
    rule = ScarRule()
    three = scarring.store_patterns(torch.stack(list(stored.values())), seeds, train_steps,
                                  rule, device=device, progress="store 3")
    one = scarring.store_patterns(unstored["D_spots_ref"][None], seeds, single_steps, rule,
                                device=device, progress="store 1")
    # one batch: [three-pattern scars, single-pattern scars, unscarred control] x cues
    F = torch.cat([three["F"], one["F"], torch.full_like(one["F"], F0)])
    K = torch.cat([three["K"], one["K"], torch.full_like(one["K"], K0)])
    res = scarring.recall_matrix(F, K, cues.repeat(3, 1, 1, 1), all_patterns, recall_steps,
                               device=device, return_fields=True, progress="recall")
    parts = {"three": slice(0, S), "one": slice(S, 2 * S), "control": slice(2 * S, 3 * S)}

    def block(which, key):
        return {m: summarize_matrix(res[key][m][parts[which]]) for m in metrics.METRIC_NAMES}

    stored_idx = list(range(len(stored)))
    disc = {m: summarize(metrics.discrimination_per_seed(res["final"][m][parts["three"]],
                                                        stored_idx, stored_idx))
            for m in metrics.METRIC_NAMES}
    disc_control = {m: summarize(metrics.discrimination_per_seed(
        res["final"][m][parts["control"]], stored_idx, stored_idx)) for m in metrics.METRIC_NAMES}
    disc_cue = {m: summarize(metrics.discrimination_per_seed(
        res["initial"][m][parts["three"]], stored_idx, stored_idx)) for m in metrics.METRIC_NAMES}
    # the imprint test: what grows from no cue at all (noise / zero / uniform rows)
    no_cue_rows = [cue_names.index(n) for n in cue_names[-3:]]
    imprint = {}
    for which, cols in (("three", stored_idx), ("one", [columns.index("D_spots_ref")])):
        imprint[which] = {
            cue_names[r]: {m: summarize(res["final"][m][parts[which]][:, r, cols].mean(1))
                           for m in metrics.METRIC_NAMES} for r in no_cue_rows}
    pattern_overlap = {
        m: metrics.METRICS[m](all_patterns.unsqueeze(1).expand(-1, len(columns), -1, -1)
                             .reshape(-1, grid, grid),
                             all_patterns.unsqueeze(0).expand(len(columns), -1, -1, -1)
                             .reshape(-1, grid, grid)).reshape(len(columns), len(columns))
        for m in metrics.METRIC_NAMES}

    result = {
        "name": NAME,
        "config": {"grid": grid, "train_steps_per_pattern": train_steps,
                   "single_pattern_train_steps": single_steps, "recall_steps": recall_steps,
                   "cue_strength": args.cue_strength, "cue_noise": CUE_NOISE,
                   "shift_cells": shift, "uniform_level": UNIFORM_LEVEL,
                   "partial_cue_fraction_of_A_kept": kept, "rule": rule.as_dict(),
                   "quick": args.quick, "stored_three": list(stored),
                   "stored_one": ["D_spots_ref"], "unstored": list(unstored)},
        "seeds": seeds,
        "matrix": {"cues": cue_names, "patterns": columns, "stored": list(stored),
                   "description": "three stored patterns (phase 3); rows: cues, columns: "
                                  "patterns; value: similarity of the final V to the pattern",
                   **block("three", "final"), "initial": block("three", "initial"),
                   "control": block("control", "final")},
        "discrimination": {**disc, "control": disc_control, "cue_at_step0": disc_cue},
        "single_pattern": {"cues": cue_names, "patterns": columns, "stored": ["D_spots_ref"],
                           **block("one", "final"), "initial": block("one", "initial")},
        "imprint_no_cue_recall": imprint,
        "training": {"three_final_similarity": metrics.summarize_tensor(
                         three["train_similarity"].T),
                     "three_scar_strength": metrics.summarize_tensor(three["scar_strength"].T),
                     "one_final_similarity": metrics.summarize_tensor(one["train_similarity"].T),
                     "one_scar_strength": metrics.summarize_tensor(one["scar_strength"].T)},
        "pattern_overlap": pattern_overlap,
        "environment": experiment.environment_info(device),
        "runtime_s": None,
    }
    plot(result, res["V"], parts, cue_names, out, fields=not args.quick)
    result["runtime_s"] = time.time() - t0
    experiment.write_json_atomic(out / f"{NAME}.json", result)
    print(f"{NAME}: {S} seeds, grid {grid}, {time.time() - t0:.0f} s -> {out}")
    for m in metrics.METRIC_NAMES:
        print(f"  discrimination ({m}): {format_stat(disc[m])}  "
              f"(control {format_stat(disc_control[m])}, cue at step 0 {format_stat(disc_cue[m])})")
    for which, rows in imprint.items():
        for cue, stats in rows.items():
            print(f"  {which}-pattern scar, {cue}: cosine to stored "
                  f"{format_stat(stats['cosine'])}, IoU {format_stat(stats['iou'])}")


def plot(result, V, parts, cue_names, out, fields=True):
    """The matrices as heat maps; with fields, also what grew from each cue (seed 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mx = result["matrix"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    figures.plot_matrix(axes[0], mx["initial"]["cosine"]["mean"], mx["cues"], mx["patterns"],
                       "cue itself at step 0 (cosine)")
    figures.plot_matrix(axes[1], mx["cosine"]["mean"], mx["cues"], mx["patterns"],
                       "after recall, 3 stored A,B,C (cosine)")
    figures.plot_matrix(axes[2], mx["iou"]["mean"], mx["cues"], mx["patterns"],
                       "after recall, 3 stored (IoU)")
    figures.plot_matrix(axes[3], mx["control"]["cosine"]["mean"], mx["cues"], mx["patterns"],
                       "after recall, no scar (cosine)")
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=90)
    plt.close(fig)
    if not fields:  # --quick skips the 22-panel figure (the slowest part of a quick run)
        return
    # what grew from each cue (seed 0): three-pattern scar, then single-pattern scar
    n = len(cue_names)
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 3.3))
    for row, which in enumerate(("three", "one")):
        for c in range(n):
            ax = axes[row, c]
            ax.imshow(V[parts[which]][0, c], cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cue_names[c].replace("cue ", ""), fontsize=6)
        axes[row, 0].set_ylabel(f"{which} stored", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_fields.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    experiment.run_cli(main)
