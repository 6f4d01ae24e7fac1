"""Capacity and interference: how many patterns can one scarred medium store and recall?

Stores k patterns one after the other with the reference scar rule (scars accumulate),
for k = 1, 2, 4, ..., then recalls every stored pattern from its own cue (s = 0.2, the
protocol's multi-pattern cue) and also from no cue at all (pure noise, and a uniform V),
and compares every recall with every stored pattern. Because storage is sequential, one
training run over K_max patterns, with (F, K) kept after each k, gives every k.

Patterns: equal-area sparse codes on an 8 x 8 lattice of spot slots (patterns.slot_patterns):
each pattern lights 8 of the 64 slots (one disc of radius 6 per slot on the 128 x 128
grid, 5.3% of the grid). Two families, drawn per seed:
  "overlapping": each pattern picks its slots independently (pairs share 1 slot on average)
  "disjoint":    no slot is used twice (so at most 8 patterns)
The grid is 128 x 128 (not the reference 256) and training is 200 steps per pattern (not
500) to keep the default run within minutes on 2 CPU cores; the scar saturates within a few
dozen gated steps, so longer training changes little (stated in the findings).

Control: N_NOVEL never-stored patterns of the same lattice are "recalled" from their cues
on the same scarred medium; if they come back as well as the stored ones, the medium
amplifies whatever cue lands on its scars rather than recalling what it stored.

Read-outs per k (mean and 95% interval over seeds, cosine, IoU and Pearson): mean recall
of the stored patterns, recall of pattern 1, the cue's own similarity at step 0, the
discrimination index, what grows without a cue; capacity = largest k with mean recall >
0.7 and discrimination above chance (metrics.capacity_readout); forgetting = recall of
pattern 1 right after it was stored minus after all k were stored.

    python -m experiments.capacity            # default: 8 seeds
    python -m experiments.capacity --quick    # seconds
"""
from __future__ import annotations

import argparse
import time

import torch

import metrics
import patterns
import scarring
from common import cli as experiment
from common import figures
from metrics import format_stat, summarize
from scarring import ScarRule
from substrate import F0, K0

NAME = "capacity"
GRID = 128
SLOTS_PER_SIDE = 8
SPOTS = 8                   # slots lit per pattern
KS = (1, 2, 4, 8, 16, 32)   # overlapping family; the disjoint family stops at 64 / SPOTS
TRAIN_STEPS = 200           # per pattern
RECALL_STEPS = 300          # protocol phase 3
CUE_STRENGTH = 0.2          # protocol phase 3
RECALL_THRESHOLD = 0.7
N_NOVEL = 4                 # never-stored patterns of the same lattice, recalled as a control
QUICK = dict(grid=32, ks=(1, 2, 4), train_steps=20, recall_steps=20)


def family_patterns(family, n, grid, seeds):
    """(S, n, H, W): one family draw per seed (seed-dependent slot choice)."""
    return torch.stack([patterns.slot_patterns(n, grid, grid, SLOTS_PER_SIDE, SPOTS, seed=s,
                                             disjoint=(family == "disjoint")) for s in seeds])


def run_family(family, ks, grid, seeds, train_steps, recall_steps, device, rule):
    S = len(seeds)
    kmax = ks[-1]
    pats = family_patterns(family, kmax, grid, seeds)
    # never-stored patterns drawn the same way (independent slots): if they are "recalled"
    # as well as stored ones, the medium amplifies any cue on its scarred lattice
    novel = torch.stack([patterns.slot_patterns(N_NOVEL, grid, grid, SLOTS_PER_SIDE, SPOTS,
                                              seed=10_000 + s) for s in seeds])
    novel_cues = scarring.make_cues(novel, CUE_STRENGTH, scarring.CUE_NOISE, seeds, first_index=200)
    stored = scarring.store_patterns(pats, seeds, train_steps, rule, device=device,
                                   snapshots=ks, progress=f"store {family}")
    cues = scarring.make_cues(pats, CUE_STRENGTH, scarring.CUE_NOISE, seeds)
    no_cue = torch.cat([scarring.make_cues(torch.zeros(1, grid, grid), 0.0, scarring.CUE_NOISE,
                                         seeds, first_index=100),
                        torch.full((S, 1, grid, grid), CUE_STRENGTH * 0.8)], dim=1)
    by_k = {}
    for k in ks:
        F, K = stored["snapshots"][k]
        res = scarring.recall_matrix(F, K, torch.cat([cues[:, :k], novel_cues, no_cue], dim=1),
                                   torch.cat([pats[:, :k], novel], dim=1), recall_steps,
                                   device=device, progress=f"recall {family} k={k}")
        entry = {"k": k}
        n = N_NOVEL
        for m in metrics.METRIC_NAMES:
            fin, ini = res["final"][m], res["initial"][m]
            diag = fin[:, :k, :k].diagonal(dim1=1, dim2=2)          # (S, k)
            diag0 = ini[:, :k, :k].diagonal(dim1=1, dim2=2)
            novel_diag = fin[:, k:k + n, k:k + n].diagonal(dim1=1, dim2=2)
            entry[m] = {
                "mean_recall": summarize(diag.mean(1)),
                "first_recall": summarize(diag[:, 0]),
                "cue_at_step0": summarize(diag0.mean(1)),
                "gain": summarize((diag - diag0).mean(1)),
                "discrimination": (summarize(metrics.discrimination_per_seed(fin[:, :k, :k]))
                                   if k >= 2 else None),
                "novel_recall": summarize(novel_diag.mean(1)),
                "novel_cue_at_step0": summarize(
                    ini[:, k:k + n, k:k + n].diagonal(dim1=1, dim2=2).mean(1)),
                "noise_cue_recall": summarize(fin[:, k + n, :k].mean(1)),
                "uniform_cue_recall": summarize(fin[:, k + n + 1, :k].mean(1)),
                "per_pattern_recall": metrics.summarize_tensor(diag),
            }
        entry["scar_strength"] = summarize(stored["scar_strength"][k - 1])
        entry["train_similarity_last"] = summarize(stored["train_similarity"][k - 1])
        entry["scarred_fraction"] = summarize(((F - F0).abs() + (K - K0).abs() > 1e-9)
                                              .flatten(1).float().mean(1).cpu())
        by_k[str(k)] = entry
    # control: the same cues on an unscarred medium, for the patterns of the largest k
    ctrl = scarring.recall_matrix(F0, K0, cues[:, :kmax], pats[:, :kmax], recall_steps,
                                device=device, progress=f"control {family}")
    control = {m: summarize(ctrl["final"][m][:, :kmax].diagonal(dim1=1, dim2=2).mean(1))
               for m in metrics.METRIC_NAMES}
    out = {"ks": list(ks), "by_k": by_k, "control_recall_no_scar": control,
           "train_similarity": metrics.summarize_tensor(stored["train_similarity"].T),
           "pair_overlap_iou": _pair_overlap(pats)}
    for m in metrics.METRIC_NAMES:
        rec = [by_k[str(k)][m]["mean_recall"]["mean"] for k in ks]
        dlow = [by_k[str(k)][m]["discrimination"]["ci95_low"]
                if by_k[str(k)][m]["discrimination"] is not None else None for k in ks]
        dlow = [d if d is not None or k == 1 else float("-inf") for d, k in zip(dlow, ks)]
        out.setdefault("capacity", {})[m] = metrics.capacity_readout(
            ks, rec, dlow, RECALL_THRESHOLD, 0.0)
        first_1 = torch.tensor(by_k[str(ks[0])][m]["first_recall"]["per_seed"])
        out.setdefault("forgetting_first_pattern", {})[m] = {
            str(k): summarize(first_1 - torch.tensor(by_k[str(k)][m]["first_recall"]["per_seed"]))
            for k in ks}
    return out


def _pair_overlap(pats):
    """Mean IoU between distinct stored patterns (per seed, summarized)."""
    S, P = pats.shape[:2]
    if P < 2:
        return None
    m = pats > 0
    inter = (m.unsqueeze(1) & m.unsqueeze(2)).flatten(3).sum(3).float()
    union = (m.unsqueeze(1) | m.unsqueeze(2)).flatten(3).sum(3).float()
    iou = inter / union
    off = ~torch.eye(P, dtype=torch.bool)
    return summarize(iou[:, off].mean(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    experiment.add_common_args(parser, f"scarring_results/{NAME}/")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS),
                        help=f"pattern counts, increasing (default {' '.join(map(str, KS))})")
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--recall-steps", type=int, default=RECALL_STEPS)
    parser.add_argument("--gate", type=float, default=ScarRule().gate,
                        help="similarity gate of the scar rule (reference 0.5)")
    args = parser.parse_args(argv)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)
    grid, ks, train_steps, recall_steps = GRID, sorted(set(args.ks)), args.train_steps, args.recall_steps
    if args.quick:
        grid, ks, train_steps, recall_steps = (QUICK["grid"], list(QUICK["ks"]),
                                               QUICK["train_steps"], QUICK["recall_steps"])
    if ks[0] < 1:
        raise ValueError(f"--ks {ks}: pattern counts must be >= 1")
    if train_steps < 1 or recall_steps < 1:
        raise ValueError("--train-steps and --recall-steps must be >= 1")
    n_slots = SLOTS_PER_SIDE ** 2
    if ks[-1] > 1000:
        raise ValueError(f"--ks up to {ks[-1]}: keep k <= 1000")
    rule = ScarRule(gate=args.gate)
    out = experiment.prepare_out_dir(args.out)
    t0 = time.time()
    families = {}
    for family in ("overlapping", "disjoint"):
        fks = [k for k in ks if family == "overlapping" or k * SPOTS <= n_slots]
        if not fks:
            continue
        families[family] = run_family(family, fks, grid, seeds, train_steps, recall_steps,
                                      device, rule)
    main_family = families["overlapping"]
    result = {
        "name": NAME,
        "config": {"grid": grid, "slots_per_side": SLOTS_PER_SIDE, "spots_per_pattern": SPOTS,
                   "ks": ks, "train_steps_per_pattern": train_steps,
                   "recall_steps": recall_steps, "cue_strength": CUE_STRENGTH,
                   "cue_noise": scarring.CUE_NOISE, "recall_threshold": RECALL_THRESHOLD,
                   "discrimination_chance": 0.0, "rule": rule.as_dict(), "quick": args.quick,
                   "capacity_definition": "largest k such that at every k' <= k the mean "
                   "recall (own cue) > recall_threshold and the 95% interval of the "
                   "discrimination index lies above 0 (k = 1: recall only)"},
        "seeds": seeds,
        "by_k": main_family["by_k"],
        "capacity": {f: fam["capacity"] for f, fam in families.items()},
        "families": families,
        "environment": experiment.environment_info(device),
        "runtime_s": None,
    }
    plot(families, out)
    result["runtime_s"] = time.time() - t0
    experiment.write_json_atomic(out / f"{NAME}.json", result)
    print(f"{NAME}: {len(seeds)} seeds, grid {grid}, {time.time() - t0:.0f} s -> {out}")
    for f, fam in families.items():
        print(f"  {f}: capacity {fam['capacity']}")
        for k in fam["ks"]:
            e = fam["by_k"][str(k)]["cosine"]
            d = e["discrimination"]
            print(f"    k={k:3d} recall {format_stat(e['mean_recall'])} (cue "
                  f"{format_stat(e['cue_at_step0'])}) first {format_stat(e['first_recall'])} "
                  f"disc {format_stat(d) if d else '-'} never-stored "
                  f"{format_stat(e['novel_recall'])} no-cue(uniform) "
                  f"{format_stat(e['uniform_cue_recall'])}")


def plot(families, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, m in zip(axes, metrics.METRIC_NAMES):
        for f, fam in families.items():
            ks = fam["ks"]
            e = [fam["by_k"][str(k)][m] for k in ks]
            ls = "-" if f == "overlapping" else "--"
            figures.plot_band(ax, ks, [x["mean_recall"] for x in e], f"{f}: mean recall", ls=ls)
            figures.plot_band(ax, ks, [x["first_recall"] for x in e], f"{f}: pattern 1", ls=ls)
            figures.plot_band(ax, ks, [x["uniform_cue_recall"] for x in e],
                             f"{f}: no cue (uniform V)", ls=ls)
            figures.plot_band(ax, ks, [x["novel_recall"] for x in e],
                             f"{f}: never-stored pattern", ls=ls)
            kd = [k for k in ks if k >= 2]
            if kd:
                figures.plot_band(ax, kd, [fam["by_k"][str(k)][m]["discrimination"] for k in kd],
                                 f"{f}: discrimination", ls=ls)
            ax.plot(ks, [x["cue_at_step0"]["mean"] for x in e], ls=":", color="gray",
                    label=f"{f}: cue at step 0" if f == "overlapping" else None)
        ax.axhline(RECALL_THRESHOLD, color="k", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k stored patterns")
        ax.set_title(m)
        ax.set_ylim(-0.1, 1.05)
    axes[0].set_ylabel("similarity (mean, 95% interval)")
    axes[-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    experiment.run_cli(main)
