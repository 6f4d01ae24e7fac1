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
pattern (--grid, --multi-train-steps), to keep ~20 conditions within minutes on 2 CPU
cores. Each condition changes the protocol (protocol.Protocol) or the rule in one place.

    python -m experiments.ablations            # default: 8 seeds, all conditions
    python -m experiments.ablations --quick    # a smoke run: 2 conditions, tiny grid
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, metrics, patterns, scarring, substrate = cli.lazy_modules(
    "torch", "metrics", "patterns", "scarring", "substrate")

# name -> (group, ScarRule overrides, Protocol overrides, extra GrayScott arguments)
CONDITIONS = {
    "reference": ("reference", {}, {}, {}),
    "strength=0.0003": ("scar strength", {"strength": 0.0003}, {}, {}),
    "strength=0.001": ("scar strength", {"strength": 0.001}, {}, {}),
    "strength=0.01": ("scar strength", {"strength": 0.01}, {}, {}),
    "match_threshold=0.1": ("match threshold", {"match_threshold": 0.1}, {}, {}),
    "match_threshold=0.5": ("match threshold", {"match_threshold": 0.5}, {}, {}),
    "gate=0.0": ("gate", {"gate": 0.0}, {}, {}),
    "gate=0.3": ("gate", {"gate": 0.3}, {}, {}),
    "gate=0.7": ("gate", {"gate": 0.7}, {}, {}),
    "F-only (k_ratio=0)": ("K/F ratio", {"k_ratio": 0.0}, {}, {}),
    "k_ratio=0.25": ("K/F ratio", {"k_ratio": 0.25}, {}, {}),
    "k_ratio=1.0": ("K/F ratio", {"k_ratio": 1.0}, {}, {}),
    "K-only (f_ratio=0)": ("K/F ratio", {"f_ratio": 0.0}, {}, {}),
    "scar_decay=0.01": ("forgetting", {"scar_decay": 0.01}, {}, {}),
    "V decay off": ("substrate", {}, {"decay": 1.0}, {}),
    "clamp off": ("substrate", {}, {}, {"clamp": False}),
    "5-point stencil": ("substrate", {}, {"stencil": "five_point"}, {}),
    "float64": ("substrate", {}, {"dtype": "float64"}, {}),
    "regime mitosis (0.0367, 0.0649)": ("regime", {}, {"f0": 0.0367, "k0": 0.0649}, {}),
    "regime mazes (0.029, 0.057)": ("regime", {}, {"f0": 0.029, "k0": 0.057}, {}),
    "regime worms (0.078, 0.061)": ("regime", {}, {"f0": 0.078, "k0": 0.061}, {}),
}


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "ablations"
    saved_state_starts: ClassVar[str] = (
        "every condition's store of A starts from its U, V (cast to the condition's float "
        "type) on the condition's own unscarred F0, K0: the saved F, K are not used, as "
        "each condition changes the medium itself (regime, stencil, rule constants)")
    grid: int = arg(128, "grid size H = W (the reference geometry scales with it)", lo=16,
                    hi=16_384)
    multi_train_steps: int = arg(300, "training steps per pattern", lo=1)
    conditions: Optional[tuple[str, ...]] = arg(
        None, "run only these conditions ('reference' always runs); names: "
        + "; ".join(CONDITIONS), choices=tuple(CONDITIONS), metavar="NAME")


QUICK = dict(grid=32, multi_train_steps=30, multi_recall_steps=30,
             conditions=("reference", "F-only (k_ratio=0)"))
UNIFORM_OF_CUE = 0.8   # the uniform V sits at the cue's in-shape level: strength x PEAK


def condition_study(base, name, device, initial=None):
    """(Study, rule, extra substrate arguments) of one condition; initial: a saved state
    whose U, V start its store on the condition's own unscarred fields."""
    _, rule_kw, protocol_kw, substrate_kw = CONDITIONS[name]
    study = scarring.Study(dataclasses.replace(base, **protocol_kw), device, initial=initial,
                           saved_fields=False)
    return study, dataclasses.replace(study.rule, **rule_kw), substrate_kw


def run_condition(base, name, seeds, device, initial=None):
    """Store A then B, recall each cue, noise and a uniform V, scarred and unscarred."""
    study, rule, sub = condition_study(base, name, device, initial)
    p, S = study.protocol, len(seeds)
    pats = torch.stack([patterns.make_pattern(p.pattern, p.grid, p.grid),
                        patterns.make_pattern("ring", p.grid, p.grid)])
    stored = study.store(pats, seeds, p.multi_train_steps, rule=rule, substrate=sub,
                         first_index=NOISE["phase3_starts"][1], progress=f"store {name}")
    uniform = torch.full((S, 1, p.grid, p.grid), p.multi_cue_strength * UNIFORM_OF_CUE)
    cues = torch.cat([study.cues(pats, seeds, p.multi_cue_strength, *NOISE["phase3_cues"]),
                      study.cues(torch.zeros(1, p.grid, p.grid), seeds, 0.0,
                                 *NOISE["phase2_no_cue"]),
                      uniform.to(study.device, study.dtype)], dim=1)
    F0, K0 = study.default_fields(S)
    res = study.recall(torch.cat([stored["F"], F0]), torch.cat([stored["K"], K0]),
                       cues.repeat(2, 1, 1, 1), pats, p.multi_recall_steps, substrate=sub,
                       progress=f"recall {name}")
    info = {"group": CONDITIONS[name][0], "rule": rule.as_dict(),
            "substrate": {**p.substrate(), **sub}, "baseline_F0_K0": [p.f0, p.k0],
            "dtype": p.dtype, "scar_strength": stored["scar_strength"][-1],
            "train_similarity": stored["train_similarity"].T}
    return info, per_seed_readouts(res, S)


def per_seed_readouts(res, S):
    """{metric: {read-out: (S,)}} from the recall of [A cue, B cue, noise, uniform]."""
    out = {}
    for m in metrics.METRIC_NAMES:
        fin, ini = res["final"][m], res["initial"][m]
        sc, ct = fin[:S], fin[S:]
        out[m] = {
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
    return out


def run_all(base, names, seeds, device, t0, initial=None):
    """Every condition; a condition that diverges (clamp off) is a result, not a crash."""
    raw, conditions = {}, {}
    fmt = stats.format_stat
    for name in names:
        try:
            info, per_seed = run_condition(base, name, seeds, device, initial)
        except substrate.SimulationError as exc:
            if name == "reference":
                raise
            conditions[name] = {"group": CONDITIONS[name][0], "diverged": str(exc)}
            print(f"  {name}: diverged ({exc})", flush=True)
            continue
        raw[name] = per_seed
        info["scar_strength"] = stats.summarize(info["scar_strength"])
        info["train_similarity"] = stats.summarize_tensor(info["train_similarity"])
        c = conditions[name] = {**info, **{m: {k: stats.summarize(v, bounds=(-1.0, 1.0))
                                               for k, v in d.items()}
                                           for m, d in per_seed.items()}}
        print(f"  {name}: recall {fmt(c['cosine']['recall'])} disc "
              f"{fmt(c['cosine']['discrimination'])} uniform "
              f"{fmt(c['cosine']['uniform_cue_recall'])} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    for name in raw:  # paired differences from the reference, per seed
        conditions[name]["minus_reference"] = {
            m: {k: stats.summarize(raw[name][m][k] - raw["reference"][m][k], bounds=(-2.0, 2.0))
                for k in ("recall", "discrimination", "uniform_cue_recall")}
            for m in metrics.METRIC_NAMES}
    return conditions


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    names = ["reference"] + [c for c in (args.conditions or CONDITIONS) if c != "reference"]
    t0 = time.perf_counter()
    conditions = run_all(protocol_of(args), names, seeds, device, t0, args.saved_state())
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), "conditions": conditions}
    result["config"].update(patterns=[args.pattern, "ring"],
                            uniform_level=args.multi_cue_strength * UNIFORM_OF_CUE,
                            note="scar_decay relaxes toward each condition's own (F0, K0); "
                                 "the scar clamps stay at F in [0.01, 0.08], K in "
                                 "[0.03, 0.08] in every regime")
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot(conditions, out, len(seeds))
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {len(names)} conditions, "
          f"{wall:.0f} s -> {args.out_dir()}")


def plot(conditions, out, n):
    import matplotlib.pyplot as plt

    from common import figures
    from common.figures import _bar_errs

    names = [c for c in conditions if "diverged" not in conditions[c]]
    series = (("recall", "recall (own cue)"), ("discrimination", "discrimination"),
              ("uniform_cue_recall", "no cue: uniform V"), ("control_recall", "no scar: recall"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.32 * len(names) + 1.8), sharey=True)
    y = range(len(names))
    for ax, m in zip(axes, metrics.METRIC_NAMES):
        for i, (key, label) in enumerate(series):
            st = [conditions[c][m][key] for c in names]
            ax.errorbar([s["mean"] for s in st], [v + 0.18 * (i - 1.5) for v in y],
                        xerr=_bar_errs(st), marker="os^v"[i], ms=3, ls="", capsize=2,
                        label=label)
        ax.axvline(0, color="k", lw=0.5)
        ax.set(title=f"{m}, mean and 95% interval, n={n}", xlabel=m)
    axes[0].set_yticks(list(y), names, fontsize=7)
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figures.save_figure(fig, out / f"{Args.study}.png")


if __name__ == "__main__":
    cli.run_cli(main)
