"""Cue specificity: what does a scarred medium recall, and from what cue?

Stores patterns with the reference protocol, then starts recall from many cues - the
cue of each stored pattern, cues of patterns never stored, pure noise, an all-zero V, a
uniform V, a shifted cue and partial cues - and compares each result with every stored
and unstored pattern. Two stored sets run side by side:

  "three": the protocol's phase 3 (A = square_spots offset (-64, -64), B = ring,
           C = line; --multi-train-steps each, scars accumulating; recall from
           --multi-cue-strength cues for --multi-recall-steps)
  "one":   the protocol's phase 1 (square_spots alone, --train-steps scarred steps)

and every recall also runs on the unscarred F0/K0 medium (the control). All seeds x
stored sets x cues run as one GrayScott batch, with the main study's noise draws
(protocol.NOISE). Writes cue_specificity.json (the three-pattern matrix under "matrix",
its discrimination index under "discrimination", the single-pattern matrix under
"single_pattern") and cue_specificity.png.

    python -m experiments.cue_specificity            # default: 8 seeds, 256 x 256
    python -m experiments.cue_specificity --quick    # a smoke run: 32 x 32, few steps
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
    study: ClassVar[str] = "cue_specificity"
    saved_state_starts: ClassVar[str] = (
        "both trainings (the three stored shapes, and the one stored alone) start from "
        "its U, V on its F, K; the unscarred control recalls on F0, K0 as always")
    shift: int = arg(8, "cells the shifted cue is moved by (reference grid; scales)", lo=1)

    def shift_cells(self) -> int:
        """The shift on this grid: --shift scaled from the 256 reference grid."""
        return max(1, round(self.shift * self.grid / 256))

    def check(self) -> None:
        if self.shift_cells() % self.grid == 0:   # the periodic grid: a whole turn
            raise ValueError(f"--shift {self.shift}: moves the cue by {self.shift_cells()} "
                             f"cells on a {self.grid}-cell grid, a whole period, so the "
                             f"'shifted' cue would be the cue itself; choose a shift whose "
                             f"cells (shift x grid / 256) are not a multiple of --grid")


QUICK = dict(grid=32, multi_train_steps=30, train_steps=40, multi_recall_steps=20)
UNIFORM_OF_CUE = 0.8   # the uniform V sits at the cue's in-shape level: strength x PEAK


def one_pattern_name(pattern: str) -> str:
    """The name of the pattern stored alone (--pattern, at the reference position)."""
    return "D_spots_ref" if pattern == "square_spots" else f"D_{pattern}"


def build_patterns(grid, pattern="square_spots"):
    """Stored (phase 3) and unstored patterns, named, all (H, W); the first unstored one
    is stored alone (one_pattern_name)."""
    stored = patterns.phase3_targets(grid)
    unstored = {one_pattern_name(pattern): patterns.make_pattern(pattern, grid, grid),
                "E_cross": patterns.make_pattern("cross", grid, grid)}
    return stored, unstored


def build_cues(study, stored, unstored, seeds, shift):
    """Named cue conditions -> (names, (S, C, H, W) starting V fields, kept fractions)."""
    p = study.protocol
    A = stored["A_square_spots"]
    H, W = A.shape
    x = torch.arange(W).view(1, W).expand(H, W)
    y = torch.arange(H).view(H, 1).expand(H, W)
    half = (x < W // 2).to(A.dtype)
    quarter = ((x < W // 2) & (y < H // 2)).to(A.dtype)
    shapes = {f"cue {n}": t for n, t in {**stored, **unstored}.items()}
    shapes[f"cue A shifted {shift}"] = torch.roll(A, (shift, shift), dims=(0, 1))
    shapes["cue A half"] = A * half
    shapes["cue A quarter"] = A * quarter
    cues = study.cues(torch.stack(list(shapes.values())), seeds, p.multi_cue_strength,
                      *NOISE["phase3_cues"])
    S = len(seeds)
    uniform_level = p.multi_cue_strength * UNIFORM_OF_CUE
    noise_only = study.cues(torch.zeros(1, H, W), seeds, 0.0, *NOISE["phase2_no_cue"])
    extra = [noise_only, torch.zeros(S, 1, H, W, device=cues.device, dtype=cues.dtype),
             torch.full((S, 1, H, W), uniform_level, device=cues.device, dtype=cues.dtype)]
    names = list(shapes) + ["pure noise", "zero V", f"uniform V={uniform_level:.2f}"]
    kept = {"cue A shifted": None, "cue A half": float(half[A > 0].mean()),
            "cue A quarter": float(quarter[A > 0].mean())}
    return names, torch.cat([cues, *extra], dim=1), kept


def run(study, seeds, shift):
    """Store both sets, recall every cue on [three, one, control]; the raw results."""
    p, S = study.protocol, len(seeds)
    stored, unstored = build_patterns(p.grid, p.pattern)
    alone = one_pattern_name(p.pattern)
    names, cues, kept = build_cues(study, stored, unstored, seeds, shift)
    three = study.store(torch.stack(list(stored.values())), seeds, p.multi_train_steps,
                        first_index=NOISE["phase3_starts"][1], progress="store 3")
    one = study.store(unstored[alone][None], seeds, p.train_steps,
                      first_index=NOISE["phase1_start"][1], progress="store 1")
    F0, K0 = study.default_fields(S)
    res = study.recall(torch.cat([three["F"], one["F"], F0]), torch.cat([three["K"], one["K"], K0]),
                       cues.repeat(3, 1, 1, 1), torch.stack([*stored.values(), *unstored.values()]),
                       p.multi_recall_steps, return_fields=True, progress="recall")
    arms = {"three": slice(0, S), "one": slice(S, 2 * S), "control": slice(2 * S, 3 * S)}
    return {"stored": stored, "unstored": unstored, "cue_names": names, "kept": kept,
            "alone": alone, "three": three, "one": one, "res": res, "arms": arms}


def summarize_matrix(m, bounds):
    """(S, C, P) -> {"mean": C x P, "ci95_low", "ci95_high", "std", "per_seed": S x C x P}."""
    blocks = stats.summarize_tensor(m, bounds=bounds)
    return {key: [[s[key] for s in row] for row in blocks]
            for key in ("mean", "ci95_low", "ci95_high", "std")} | {"per_seed": m.tolist()}


def report(r):
    """The JSON body: matrices, discrimination, what grows without a cue, training."""
    res, arms, names = r["res"], r["arms"], r["cue_names"]
    columns = list(r["stored"]) + list(r["unstored"])
    stored_idx = list(range(len(r["stored"])))

    def block(which, key):
        return {m: summarize_matrix(res[key][m][arms[which]], metrics.BOUNDS[m])
                for m in metrics.METRIC_NAMES}

    def disc(which, key="final"):
        return {m: stats.summarize(metrics.discrimination_per_seed(
            res[key][m][arms[which]], stored_idx, stored_idx), bounds=(-1.0, 1.0))
            for m in metrics.METRIC_NAMES}

    no_cue_rows = [names.index(n) for n in names[-3:]]
    # what grows without a cue is often exactly 0 in most seeds: a bootstrap interval
    imprint = {which: {names[row]: {m: stats.summarize(res["final"][m][arms[which]][:, row, cols]
                                                         .mean(1), method="bootstrap_bca")
                                    for m in metrics.METRIC_NAMES}
                       for row in no_cue_rows}
               for which, cols in (("three", stored_idx), ("one", [columns.index(r["alone"])]))}
    all_patterns = torch.stack([*r["stored"].values(), *r["unstored"].values()])
    P = len(columns)
    overlap = {m: metrics.METRICS[m](all_patterns.repeat_interleave(P, 0),
                                     all_patterns.repeat(P, 1, 1)).reshape(P, P)
               for m in metrics.METRIC_NAMES}
    training = {f"{which}_{key}": stats.summarize_tensor(r[which][src].T)
                for which in ("three", "one")
                for key, src in (("final_similarity", "train_similarity"),
                                 ("scar_strength", "scar_strength"))}
    return {
        "matrix": {"cues": names, "patterns": columns, "stored": list(r["stored"]),
                   "description": "three stored patterns (phase 3); rows: cues, columns: "
                                  "patterns; value: similarity of the final V to the pattern",
                   **block("three", "final"), "initial": block("three", "initial"),
                   "control": block("control", "final")},
        "discrimination": {**disc("three"), "control": disc("control"),
                           "cue_at_step0": disc("three", "initial")},
        "single_pattern": {"cues": names, "patterns": columns, "stored": [r["alone"]],
                           **block("one", "final"), "initial": block("one", "initial")},
        "imprint_no_cue_recall": imprint, "training": training, "pattern_overlap": overlap,
        "partial_cue_fraction_of_A_kept": r["kept"],
    }


def print_report(body, seeds, grid, wall, out):
    print(f"{Args.study}: {len(seeds)} seeds, grid {grid}, {wall:.0f} s -> {out}")
    d = body["discrimination"]
    for m in metrics.METRIC_NAMES:
        print(f"  discrimination ({m}): {stats.format_stat(d[m])}  (control "
              f"{stats.format_stat(d['control'][m])}, cue at step 0 "
              f"{stats.format_stat(d['cue_at_step0'][m])})")
    for which, rows in body["imprint_no_cue_recall"].items():
        for cue, block in rows.items():
            cos, iou = (stats.format_stat(block[m]) for m in ("cosine", "iou"))
            print(f"  {which}-pattern scar, {cue}: cosine to stored {cos}, IoU {iou}")


def plot(body, V, arms, out, fields=True):
    """The matrices as heat maps; with fields, also what grew from each cue (seed 0)."""
    import matplotlib.pyplot as plt

    from common import figures

    mx, n_seeds = body["matrix"], V.shape[0] // 3
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    panels = ((mx["initial"]["cosine"], "cue itself at step 0 (cosine)", "cosine similarity"),
              (mx["cosine"], "after recall, 3 stored A,B,C (cosine)", "cosine similarity"),
              (mx["iou"], "after recall, 3 stored (IoU)", "IoU of thresholded masks"),
              (mx["control"]["cosine"], "after recall, no scar (cosine)", "cosine similarity"))
    for ax, (block, title, quantity) in zip(axes, panels):
        figures.plot_matrix(ax, block["mean"], mx["cues"], mx["patterns"],
                            f"{title}, n={n_seeds}", cbar_label=quantity)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    figures.save_figure(fig, out / f"{Args.study}.png")
    if not fields:  # --quick skips the 22-panel figure (the slowest part of a quick run)
        return
    names = mx["cues"]
    fig, axes = plt.subplots(2, len(names), figsize=(1.5 * len(names), 3.3))
    for row, which in enumerate(("three", "one")):
        for c, name in enumerate(names):
            ax = axes[row, c]
            ax.imshow(V[arms[which]][0, c], cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name.replace("cue ", ""), fontsize=6)
        axes[row, 0].set_ylabel(f"{which} stored", fontsize=7)
    fig.suptitle("V after recall from each cue, seed 0 (colour: V in [0, 1])", fontsize=8)
    figures.save_figure(fig, out / f"{Args.study}_fields.png")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    study = scarring.Study(protocol_of(args), device, initial=args.saved_state())
    t0 = time.perf_counter()
    shift = args.shift_cells()
    r = run(study, seeds, shift)
    body = report(r)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), **body}
    result["config"].update(shift_cells=shift, rule=study.rule.as_dict(),
                            uniform_level=args.multi_cue_strength * UNIFORM_OF_CUE,
                            stored_three=list(r["stored"]), stored_one=[r["alone"]],
                            unstored=list(r["unstored"]))
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot(body, r["res"]["V"], r["arms"], out, fields=not args.quick)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print_report(body, seeds, args.grid, wall, args.out_dir())


if __name__ == "__main__":
    cli.run_cli(main)
