"""Ablations: which knobs do recall and discrimination depend on?

One knob at a time away from the reference (rule and substrate), on a two-pattern memory:
A = square_spots then B = ring (they do not overlap) are scarred in sequence, then each is
recalled from its own cue (s = 0.2, noise 0.05), and the medium is also started from no
cue (pure noise; a uniform V = 0.16). Every condition also recalls the same cues on its
unscarred medium (the control). Knobs: scar strength, match threshold, similarity gate,
the K/F ratio of the update, F-only and K-only scars, scar decay (forgetting), the V
decay, the clamp, the 5-point stencil, float64, and the baseline (F0, K0) in other
Gray-Scott regimes. Seeds are the same in every condition, so differences from the
reference are paired per seed.

The grid is 128 x 128 (the reference geometry scaled by 1/2) with 300 training steps per
pattern, to keep ~20 conditions within minutes on 2 CPU cores.

    python -m experiments.ablations            # default: 8 seeds, all conditions
    python -m experiments.ablations --quick    # seconds: 3 conditions, tiny grid
"""
from __future__ import annotations

import argparse
import time

import torch

import metrics
import scarring
from common import cli as experiment
from metrics import format_stat, summarize
from patterns import make_pattern
from scarring import ScarRule
from substrate import F0, K0, SimulationError

NAME = "ablations"
GRID = 128
TRAIN_STEPS = 300
RECALL_STEPS = 300
CUE_STRENGTH = 0.2
UNIFORM_LEVEL = CUE_STRENGTH * 0.8
QUICK = dict(grid=32, train_steps=30, recall_steps=30,
             conditions=("reference", "F-only (k_ratio=0)"))

# name -> (group, ScarRule overrides, GrayScott overrides, (F0, K0) baseline, dtype)
REF = (F0, K0)
CONDITIONS = {
    "reference": ("reference", {}, {}, REF, torch.float32),
    "strength=0.0003": ("scar strength", {"strength": 0.0003}, {}, REF, torch.float32),
    "strength=0.001": ("scar strength", {"strength": 0.001}, {}, REF, torch.float32),
    "strength=0.01": ("scar strength", {"strength": 0.01}, {}, REF, torch.float32),
    "match_threshold=0.1": ("match threshold", {"match_threshold": 0.1}, {}, REF, torch.float32),
    "match_threshold=0.5": ("match threshold", {"match_threshold": 0.5}, {}, REF, torch.float32),
    "gate=0.0": ("gate", {"gate": 0.0}, {}, REF, torch.float32),
    "gate=0.3": ("gate", {"gate": 0.3}, {}, REF, torch.float32),
    "gate=0.7": ("gate", {"gate": 0.7}, {}, REF, torch.float32),
    "F-only (k_ratio=0)": ("K/F ratio", {"k_ratio": 0.0}, {}, REF, torch.float32),
    "k_ratio=0.25": ("K/F ratio", {"k_ratio": 0.25}, {}, REF, torch.float32),
    "k_ratio=1.0": ("K/F ratio", {"k_ratio": 1.0}, {}, REF, torch.float32),
    "K-only (f_ratio=0)": ("K/F ratio", {"f_ratio": 0.0}, {}, REF, torch.float32),
    "scar_decay=0.01": ("forgetting", {"scar_decay": 0.01}, {}, REF, torch.float32),
    "V decay off": ("substrate", {}, {"decay": None}, REF, torch.float32),
    "clamp off": ("substrate", {}, {"clamp": False}, REF, torch.float32),
    "5-point stencil": ("substrate", {}, {"stencil": "five_point"}, REF, torch.float32),
    "float64": ("substrate", {}, {}, REF, torch.float64),
    "regime mitosis (0.0367, 0.0649)": ("regime", {}, {}, (0.0367, 0.0649), torch.float32),
    "regime mazes (0.029, 0.057)": ("regime", {}, {}, (0.029, 0.057), torch.float32),
    "regime worms (0.078, 0.061)": ("regime", {}, {}, (0.078, 0.061), torch.float32),
}


def run_condition(name, grid, seeds, train_steps, recall_steps, device):
    group, rule_kw, sub_kw, (f0, k0), dtype = CONDITIONS[name]
    rule = ScarRule(**rule_kw)
    pats = torch.stack([make_pattern("square_spots", grid, grid), make_pattern("ring", grid, grid)])
    S = len(seeds)
    stored = scarring.store_patterns(pats, seeds, train_steps, rule, F=f0, K=k0, substrate=sub_kw,
                                   device=device, dtype=dtype, baseline=(f0, k0),
                                   progress=f"store {name}")
    cues = torch.cat([scarring.make_cues(pats, CUE_STRENGTH, scarring.CUE_NOISE, seeds),
                      scarring.make_cues(torch.zeros(1, grid, grid), 0.0, scarring.CUE_NOISE,
                                       seeds, first_index=100),
                      torch.full((S, 1, grid, grid), UNIFORM_LEVEL)], dim=1)
    F = torch.cat([stored["F"], torch.full_like(stored["F"], f0)])
    K = torch.cat([stored["K"], torch.full_like(stored["K"], k0)])
    res = scarring.recall_matrix(F, K, cues.repeat(2, 1, 1, 1), pats, recall_steps,
                               substrate=sub_kw, device=device, dtype=dtype,
                               progress=f"recall {name}")
    per_seed = {}
    for m in metrics.METRIC_NAMES:
        fin, ini = res["final"][m], res["initial"][m]
        sc, ct = fin[:S], fin[S:]
        per_seed[m] = {
            "recall": sc[:, :2].diagonal(dim1=1, dim2=2).mean(1),
            "recall_A_first": sc[:, 0, 0],
            "recall_B_last": sc[:, 1, 1],
            "discrimination": metrics.discrimination_per_seed(sc[:, :2]),
            "noise_cue_recall": sc[:, 2].mean(1),
            "uniform_cue_recall": sc[:, 3].mean(1),
            "control_recall": ct[:, :2].diagonal(dim1=1, dim2=2).mean(1),
            "control_discrimination": metrics.discrimination_per_seed(ct[:, :2]),
            "cue_at_step0": ini[:S, :2].diagonal(dim1=1, dim2=2).mean(1),
        }
    return {"group": group, "rule": rule.as_dict(), "substrate": {k: v for k, v in sub_kw.items()},
            "baseline_F0_K0": [f0, k0], "dtype": str(dtype),
            "scar_strength": stored["scar_strength"][-1],
            "train_similarity": stored["train_similarity"].T}, per_seed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    experiment.add_common_args(parser, f"scarring_results/{NAME}/")
    parser.add_argument("--conditions", nargs="+", default=None, metavar="NAME",
                        help="run only these conditions (default: all; 'reference' is always "
                             "run); names: " + "; ".join(CONDITIONS))
    args = parser.parse_args(argv)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)
    grid, train_steps, recall_steps = GRID, TRAIN_STEPS, RECALL_STEPS
    names = list(CONDITIONS)
    if args.quick:
        grid, train_steps, recall_steps = QUICK["grid"], QUICK["train_steps"], QUICK["recall_steps"]
        names = list(QUICK["conditions"])
    if args.conditions:
        unknown = [c for c in args.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; choose from {list(CONDITIONS)}")
        names = ["reference"] + [c for c in args.conditions if c != "reference"]
    out = experiment.prepare_out_dir(args.out)
    t0 = time.time()
    raw, conditions = {}, {}
    for name in names:
        try:
            info, per_seed = run_condition(name, grid, seeds, train_steps, recall_steps, device)
        except SimulationError as exc:  # e.g. clamp off blowing up: a result, not a crash
            if name == "reference":
                raise
            conditions[name] = {"group": CONDITIONS[name][0], "diverged": str(exc)}
            print(f"  {name}: diverged ({exc})", flush=True)
            continue
        raw[name] = per_seed
        info["scar_strength"] = summarize(info["scar_strength"])
        info["train_similarity"] = metrics.summarize_tensor(info["train_similarity"])
        conditions[name] = {**info, **{m: {k: summarize(v) for k, v in d.items()}
                                       for m, d in per_seed.items()}}
        print(f"  {name}: recall {format_stat(conditions[name]['cosine']['recall'])} "
              f"disc {format_stat(conditions[name]['cosine']['discrimination'])} "
              f"uniform {format_stat(conditions[name]['cosine']['uniform_cue_recall'])} "
              f"({time.time() - t0:.0f} s)", flush=True)
    for name in raw:  # paired differences from the reference, per seed
        conditions[name]["minus_reference"] = {
            m: {k: summarize(raw[name][m][k] - raw["reference"][m][k])
                for k in ("recall", "discrimination", "uniform_cue_recall")}
            for m in metrics.METRIC_NAMES}
    result = {
        "name": NAME,
        "config": {"grid": grid, "patterns": ["square_spots", "ring"],
                   "train_steps_per_pattern": train_steps, "recall_steps": recall_steps,
                   "cue_strength": CUE_STRENGTH, "cue_noise": scarring.CUE_NOISE,
                   "uniform_level": UNIFORM_LEVEL, "quick": args.quick,
                   "note": "scar_decay relaxes toward the reference (F0, K0) (scarring.apply_scar"
                           " default); the scar clamps stay at F in [0.01, 0.08], K in "
                           "[0.03, 0.08] in every regime"},
        "seeds": seeds,
        "conditions": conditions,
        "environment": experiment.environment_info(device),
        "runtime_s": time.time() - t0,
    }
    plot(conditions, out)
    experiment.write_json_atomic(out / f"{NAME}.json", result)
    print(f"{NAME}: {len(seeds)} seeds, grid {grid}, {len(names)} conditions, "
          f"{time.time() - t0:.0f} s -> {out}")


def plot(conditions, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in conditions if "diverged" not in conditions[n]]
    series = (("recall", "recall (own cue)"), ("discrimination", "discrimination"),
              ("uniform_cue_recall", "no cue: uniform V"), ("control_recall", "no scar: recall"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.32 * len(names) + 1.8), sharey=True)
    y = range(len(names))
    for ax, m in zip(axes, metrics.METRIC_NAMES):
        for i, (key, label) in enumerate(series):
            st = [conditions[n][m][key] for n in names]
            mean = [s["mean"] for s in st]
            err = [[s["mean"] - (s["ci95_low"] if s["ci95_low"] is not None else s["mean"])
                    for s in st],
                   [(s["ci95_high"] if s["ci95_high"] is not None else s["mean"]) - s["mean"]
                    for s in st]]
            ax.errorbar(mean, [v + 0.18 * (i - 1.5) for v in y], xerr=err, marker="os^v"[i],
                        ms=3, ls="", capsize=2, label=label)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(m)
        ax.set_xlim(-0.3, 1.05)
    axes[0].set_yticks(list(y), names, fontsize=7)
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    experiment.run_cli(main)
