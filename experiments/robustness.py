"""Robustness of recall: cue strength, cue noise and damage during recall.

The reference single-pattern memory (protocol phases 1-2: square_spots, 1000 scarred
training steps, 256 x 256; --grid 128 runs the reference geometry scaled by 1/2 about four
times faster) is recalled for 500 steps from cues that vary one thing at a
time, always beside the unscarred F0/K0 medium (the control):

  strength: s in 0 .. 0.5 at the reference cue noise 0.05
  noise:    cue noise std 0 .. 0.3 at the reference s = 0.15
  damage:   at step DAMAGE_STEP of the reference recall, reset a disc of radius 40 over
            the top-left spot, or the left half of the grid, to U = 1, V = 0 and keep
            running: does the erased part regrow?

All conditions x seeds x {scarred, control} run as one GrayScott batch. Every figure is
reported with cosine (the reference), IoU and Pearson, beside the similarity of its own
cue at step 0. Writes robustness.json and robustness.png.

    python -m experiments.robustness           # default: 8 seeds, 256 x 256
    python -m experiments.robustness --quick   # seconds
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

NAME = "robustness"
GRID = 256
TRAIN_STEPS = 1000          # protocol phase 1
RECALL_STEPS = 500          # protocol phase 2
DAMAGE_STEP = 250
REF_STRENGTH = 0.15         # protocol phase 2
REF_NOISE = scarring.CUE_NOISE
STRENGTHS = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
NOISES = (0.0, 0.05, 0.1, 0.2, 0.3)
DISC_RADIUS = 40            # reference-grid cells, centred on the spot at (64, 64)
QUICK = dict(grid=32, train_steps=40, recall_steps=30, damage_step=15)


def damage_masks(H, W):
    """Named (H, W) bool masks: a disc over the top-left spot, the left half."""
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    s = W / 256
    disc = (x - 64 * s) ** 2 + (y - 64 * s) ** 2 < (DISC_RADIUS * s) ** 2
    return {"disc": disc, "left half": x < W // 2}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    experiment.add_common_args(parser, f"scarring_results/{NAME}/")
    parser.add_argument("--grid", type=int, default=GRID, help=f"grid size (default {GRID})")
    args = parser.parse_args(argv)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)
    grid, train_steps, recall_steps, damage_step = args.grid, TRAIN_STEPS, RECALL_STEPS, DAMAGE_STEP
    if args.quick:
        grid, train_steps, recall_steps, damage_step = (
            QUICK["grid"], QUICK["train_steps"], QUICK["recall_steps"], QUICK["damage_step"])
    if grid < 16:
        raise ValueError(f"--grid {grid} is too small (>= 16)")
    out = experiment.prepare_out_dir(args.out)
    t0 = time.time()
    S = len(seeds)
    target = make_pattern("square_spots", grid, grid)
    stored = scarring.store_patterns(target[None], seeds, train_steps, ScarRule(),
                                   device=device, progress="store")
    # conditions: (group, value, strength, noise, damage mask or None)
    conds = [("strength", s, s, REF_NOISE, None) for s in STRENGTHS]
    conds += [("noise", n, REF_STRENGTH, n, None) for n in NOISES]
    masks = damage_masks(grid, grid)
    conds += [("damage", "none", REF_STRENGTH, REF_NOISE, None)]
    conds += [("damage", name, REF_STRENGTH, REF_NOISE, m) for name, m in masks.items()]
    cues = torch.cat([scarring.make_cues(target[None], st, no, seeds, first_index=i)
                      for i, (_, _, st, no, _) in enumerate(conds)], dim=1)  # (S, C, H, W)
    none = torch.zeros(grid, grid, dtype=torch.bool)
    damage = torch.stack([m if m is not None else none for *_, m in conds])
    F = torch.cat([stored["F"], torch.full_like(stored["F"], F0)])
    K = torch.cat([stored["K"], torch.full_like(stored["K"], K0)])
    res = scarring.recall_matrix(F, K, cues.repeat(2, 1, 1, 1), target[None], recall_steps,
                               device=device, damage=damage, damage_step=damage_step,
                               return_fields=True, progress="recall")
    arms = {"scarred": slice(0, S), "control": slice(S, 2 * S)}
    groups = {}
    for c, (group, value, st, no, _) in enumerate(conds):
        row = {"value": value, "cue_strength": st, "cue_noise": no}
        for arm, sl in arms.items():
            row[arm] = {m: {key: summarize(res[key][m][sl, c, 0])
                            for key in ("initial", "before_damage", "after_damage", "final")}
                        for m in metrics.METRIC_NAMES}
        groups.setdefault(group, []).append(row)
    result = {
        "name": NAME,
        "config": {"grid": grid, "pattern": "square_spots", "train_steps": train_steps,
                   "recall_steps": recall_steps, "damage_step": damage_step,
                   "reference_strength": REF_STRENGTH, "reference_noise": REF_NOISE,
                   "strengths": STRENGTHS, "noises": NOISES,
                   "disc_radius_cells": DISC_RADIUS * grid / 256, "quick": args.quick,
                   "note": "keys: initial = the cue at step 0; before_damage / after_damage "
                           "= just before / after the lesion at damage_step (taken for "
                           "every condition; without a lesion they are equal); final = "
                           "after recall_steps"},
        "seeds": seeds,
        "training": {"final_similarity": summarize(stored["train_similarity"][0]),
                     "scar_strength": summarize(stored["scar_strength"][0])},
        "groups": groups,
        "environment": experiment.environment_info(device),
        "runtime_s": None,
    }
    plot(result, res["V"][:S], conds, out)
    result["runtime_s"] = time.time() - t0
    experiment.write_json_atomic(out / f"{NAME}.json", result)
    print(f"{NAME}: {S} seeds, grid {grid}, {time.time() - t0:.0f} s -> {out}")
    for group, rows in groups.items():
        for r in rows:
            sc, ct = r["scarred"]["cosine"], r["control"]["cosine"]
            extra = (f" after lesion {format_stat(sc['after_damage'])}"
                     if group == "damage" else "")
            print(f"  {group}={r['value']}: scarred {format_stat(sc['final'])} control "
                  f"{format_stat(ct['final'])} cue {format_stat(sc['initial'])}{extra} "
                  f"| IoU {format_stat(r['scarred']['iou']['final'])}")


def plot(result, V, conds, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = result["groups"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for row, group in enumerate(("strength", "noise")):
        rows = g[group]
        x = [r["value"] for r in rows]
        for ax, m in zip(axes[row], metrics.METRIC_NAMES):
            figures.plot_band(ax, x, [r["scarred"][m]["final"] for r in rows], "scarred: recall")
            figures.plot_band(ax, x, [r["control"][m]["final"] for r in rows], "no scar: recall")
            figures.plot_band(ax, x, [r["scarred"][m]["initial"] for r in rows],
                             "cue at step 0", ls=":")
            ax.set_xlabel(f"cue {group}" + (" (s = 0.15)" if group == "noise" else
                                            " (noise 0.05)"))
            ax.set_title(m)
            ax.set_ylim(-0.05, 1.05)
    axes[0, 0].set_ylabel("similarity after recall")
    axes[1, 0].set_ylabel("similarity after recall")
    axes[0, 2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=90)
    plt.close(fig)
    # damage: final V of seed 0 for each lesion
    idx = [i for i, c in enumerate(conds) if c[0] == "damage"]
    fig, axes = plt.subplots(1, len(idx) + 1, figsize=(3 * (len(idx) + 1), 3.2))
    for ax, i in zip(axes, idx):
        ax.imshow(V[0, i], cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"lesion: {conds[i][1]} (final)", fontsize=8)
        ax.axis("off")
    rows = g["damage"]
    names = [r["value"] for r in rows]
    ax = axes[-1]
    for key, mk in (("before_damage", "o"), ("after_damage", "v"), ("final", "s")):
        ax.errorbar(range(len(rows)), [r["scarred"]["cosine"][key]["mean"] for r in rows],
                    yerr=[[r["scarred"]["cosine"][key]["mean"] -
                           (r["scarred"]["cosine"][key]["ci95_low"] or
                            r["scarred"]["cosine"][key]["mean"]) for r in rows],
                          [(r["scarred"]["cosine"][key]["ci95_high"] or
                            r["scarred"]["cosine"][key]["mean"]) -
                           r["scarred"]["cosine"][key]["mean"] for r in rows]],
                    marker=mk, ls="", label=key, capsize=2)
    ax.set_xticks(range(len(rows)), names)
    ax.set_ylim(0, 1.05)
    ax.set_title("cosine, scarred", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{NAME}_damage.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    experiment.run_cli(main)
