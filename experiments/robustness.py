"""Robustness of recall: cue strength, cue noise, and damage to the medium during recall.

The reference single-pattern memory (protocol phases 1-2: square_spots, --train-steps
scarred steps, the main study's training start) is recalled
  - from cues of strength 0 ... 0.5 (noise 0.05),
  - from cues of noise 0 ... 0.3 (strength 0.15),
  - with a lesion at step --damage-step of the recall: a disc over one spot, or the left
    half of the grid, reset to U = 1, V = 0 (does the scar regrow the lost part?),
on the scarred F/K and on the unscarred medium (the control), all in one batch.
Writes robustness.json and robustness.png / robustness_damage.png.

    python -m experiments.robustness           # default: 8 seeds, 256 x 256
    python -m experiments.robustness --quick   # a smoke run
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, metrics, patterns, scarring = cli.lazy_modules("torch", "metrics", "patterns", "scarring")


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "robustness"
    saved_state_starts: ClassVar[str] = (
        "the target's training starts from its U, V on its F, K; the unscarred control "
        "recalls on F0, K0 as always")
    damage_step: int = arg(250, "recall step at which the lesion is made", lo=0)
    strengths: tuple[float, ...] = arg((0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
                                       "cue strengths tried (noise --cue-noise)", lo=0.0, hi=1.0)
    noises: tuple[float, ...] = arg((0.0, 0.05, 0.1, 0.2, 0.3),
                                    "cue noise levels tried (strength --cue-strength)",
                                    lo=0.0, hi=1.0)

    def check(self) -> None:
        if self.damage_step > self.recall_steps:
            raise ValueError(f"--damage-step {self.damage_step}: must be <= --recall-steps "
                             f"{self.recall_steps}")


QUICK = dict(grid=32, train_steps=40, recall_steps=30, damage_step=15)
DISC_RADIUS = 40   # reference-grid cells, centred on the spot at (64, 64)


def damage_masks(H, W):
    """Named (H, W) bool masks: a disc over the top-left spot, the left half."""
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    s = W / 256
    disc = (x - 64 * s) ** 2 + (y - 64 * s) ** 2 < (DISC_RADIUS * s) ** 2
    return {"disc": disc, "left half": x < W // 2}


def conditions(args):
    """(group, value, strength, noise, damage mask or None) for every recall."""
    conds = [("strength", s, s, args.cue_noise, None) for s in args.strengths]
    conds += [("noise", n, args.cue_strength, n, None) for n in args.noises]
    conds += [("damage", "none", args.cue_strength, args.cue_noise, None)]
    conds += [("damage", name, args.cue_strength, args.cue_noise, m)
              for name, m in damage_masks(args.grid, args.grid).items()]
    return conds


def run(study, args, seeds):
    p, S = study.protocol, len(seeds)
    target = patterns.make_pattern(p.pattern, p.grid, p.grid)
    stored = study.store(target[None], seeds, p.train_steps,
                         first_index=NOISE["phase1_start"][1], progress="store")
    conds = conditions(args)
    role = NOISE["phase2_cue"][0]
    cues = torch.cat([scarring.make_cues(target[None], st, no, seeds, role, first_index=i)
                      for i, (_, _, st, no, _) in enumerate(conds)], dim=1)   # (S, C, H, W)
    none = torch.zeros(p.grid, p.grid, dtype=torch.bool)
    damage = torch.stack([m if m is not None else none for *_, m in conds])
    F0, K0 = study.default_fields(S)
    res = study.recall(torch.cat([stored["F"], F0]), torch.cat([stored["K"], K0]),
                       cues.repeat(2, 1, 1, 1), target[None], p.recall_steps, damage=damage,
                       damage_step=args.damage_step, return_fields=True, progress="recall")
    return conds, stored, res


def report(conds, stored, res, S):
    arms = {"scarred": slice(0, S), "control": slice(S, 2 * S)}
    groups = {}
    for c, (group, value, st, no, _) in enumerate(conds):
        row = {"value": value, "cue_strength": st, "cue_noise": no}
        for arm, sl in arms.items():
            row[arm] = {m: {key: stats.summarize(res[key][m][sl, c, 0], bounds=metrics.BOUNDS[m])
                            for key in ("initial", "before_damage", "after_damage", "final")}
                        for m in metrics.METRIC_NAMES}
        groups.setdefault(group, []).append(row)
    return {"training": {"final_similarity": stats.summarize(stored["train_similarity"][0]),
                         "scar_strength": stats.summarize(stored["scar_strength"][0])},
            "groups": groups,
            "note": "keys: initial = the cue at step 0; before_damage / after_damage = just "
                    "before / after the lesion at damage_step (taken for every condition; "
                    "without a lesion they are equal); final = after recall_steps"}


def print_report(body):
    fmt = stats.format_stat
    for group, rows in body["groups"].items():
        for r in rows:
            sc, ct = r["scarred"]["cosine"], r["control"]["cosine"]
            extra = f" after lesion {fmt(sc['after_damage'])}" if group == "damage" else ""
            print(f"  {group}={r['value']}: scarred {fmt(sc['final'])} control "
                  f"{fmt(ct['final'])} cue {fmt(sc['initial'])}{extra} "
                  f"| IoU {fmt(r['scarred']['iou']['final'])}")


def plot_cues(body, out, n, steps):
    import matplotlib.pyplot as plt

    from common import figures

    g = body["groups"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for row, group in enumerate(("strength", "noise")):
        rows = g[group]
        x = [r["value"] for r in rows]
        for ax, m in zip(axes[row], metrics.METRIC_NAMES):
            figures.plot_band(ax, x, [r["scarred"][m]["final"] for r in rows], "scarred: recall")
            figures.plot_band(ax, x, [r["control"][m]["final"] for r in rows], "no scar: recall")
            figures.plot_band(ax, x, [r["scarred"][m]["initial"] for r in rows],
                              "cue at step 0", ls=":")
            ax.set_xlabel(f"cue {group}" + (" (strength 0.15)" if group == "noise" else
                                            " (noise 0.05)"))
            ax.set_ylabel(f"{m} after {steps} recall steps")
            ax.set_title(f"{m}, mean and 95% interval, n={n}")
    axes[0, 2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figures.save_figure(fig, out / f"{Args.study}.png")


def plot_damage(body, V, conds, out, n):
    import matplotlib.pyplot as plt

    from common import figures
    from common.figures import _bar_errs

    idx = [i for i, c in enumerate(conds) if c[0] == "damage"]
    fig, axes = plt.subplots(1, len(idx) + 1, figsize=(3 * (len(idx) + 1), 3.2))
    for ax, i in zip(axes, idx):
        ax.imshow(V[0, i], cmap="magma", vmin=0, vmax=1)
        ax.set_title(f"lesion: {conds[i][1]} (final V, seed 0)", fontsize=8)
        ax.axis("off")
    rows = body["groups"]["damage"]
    ax = axes[-1]
    for key, mk in (("before_damage", "o"), ("after_damage", "v"), ("final", "s")):
        stats = [r["scarred"]["cosine"][key] for r in rows]
        ax.errorbar(range(len(rows)), [s["mean"] for s in stats], yerr=_bar_errs(stats),
                    marker=mk, ls="", label=key, capsize=2)
    ax.set_xticks(range(len(rows)), [r["value"] for r in rows])
    ax.set(ylabel="cosine similarity to target", title=f"scarred medium, n={n}")
    ax.legend(fontsize=7)
    figures.save_figure(fig, out / f"{Args.study}_damage.png")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    study = scarring.Study(protocol_of(args), device, initial=args.saved_state())
    t0 = time.perf_counter()
    conds, stored, res = run(study, args, seeds)
    body = report(conds, stored, res, len(seeds))
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), **body}
    result["config"].update(pattern=args.pattern, rule=study.rule.as_dict(),
                            disc_radius_cells=DISC_RADIUS * args.grid / 256)
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot_cues(body, out, len(seeds), args.recall_steps)
        plot_damage(body, res["V"][:len(seeds)], conds, out, len(seeds))
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    print_report(body)


if __name__ == "__main__":
    cli.run_cli(main)
