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
500; --grid, --multi-train-steps) to keep the default run within minutes on 2 CPU cores;
the scar saturates within a few dozen gated steps, so longer training changes little
(stated in the findings).

Control: N_NOVEL never-stored patterns of the same lattice are "recalled" from their cues
on the same scarred medium; if they come back as well as the stored ones, the medium
amplifies whatever cue lands on its scars rather than recalling what it stored.

Read-outs per k (mean and 95% interval over seeds, cosine, IoU and Pearson): mean recall
of the stored patterns, recall of pattern 1, the cue's own similarity at step 0, the
discrimination index, what grows without a cue; capacity = largest k with mean recall >
0.7 and discrimination above chance (metrics.capacity_readout); forgetting = recall of
pattern 1 right after it was stored minus after all k were stored.

    python -m experiments.capacity            # default: 8 seeds
    python -m experiments.capacity --quick    # a smoke run
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, memory, metrics, patterns, scarring = cli.lazy_modules("torch", "memory", "metrics", "patterns",
                                                          "scarring")

SLOTS_PER_SIDE = 8
SPOTS = 8                   # slots lit per pattern
RECALL_THRESHOLD = 0.7
N_NOVEL = 4                 # never-stored patterns of the same lattice, recalled as a control
NOVEL_CUE_INDEX = 200       # their cues' noise draws (protocol.noise_seeds index)
UNIFORM_OF_CUE = 0.8        # the uniform V sits at the cue's in-shape level: strength x PEAK


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "capacity"
    saved_state_starts: ClassVar[str] = (
        "each family's k patterns are stored in turn on the saved medium (the first "
        "pattern's training starts from its U, V, on its F, K); the unscarred control "
        "recalls on F0, K0 as always")
    grid: int = arg(128, "grid size H = W", lo=16, hi=16_384)
    multi_train_steps: int = arg(200, "training steps per pattern", lo=1)
    ks: tuple[int, ...] = arg((1, 2, 4, 8, 16, 32), "pattern counts k, increasing (the "
                              "disjoint family stops at 64 / 8 = 8)", lo=1, hi=1000)

    def check(self) -> None:
        if list(self.ks) != sorted(set(self.ks)):
            raise ValueError(f"--ks {' '.join(map(str, self.ks))}: must increase strictly")


QUICK = dict(grid=32, ks=(1, 2, 4), multi_train_steps=20, multi_recall_steps=20)


def family_patterns(family, n, grid, seeds):
    """(S, n, H, W): one family draw per seed (seed-dependent slot choice)."""
    return torch.stack([patterns.slot_patterns(n, grid, grid, SLOTS_PER_SIDE, SPOTS, seed=s,
                                               disjoint=(family == "disjoint")) for s in seeds])


def run_family(study, family, ks, seeds):
    """Store k_max patterns (F, K kept after each k), recall every k's cues; raw results."""
    p, S = study.protocol, len(seeds)
    grid = p.grid
    pats = family_patterns(family, ks[-1], grid, seeds)
    # never-stored patterns drawn the same way (independent slots): if they are "recalled"
    # as well as stored ones, the medium amplifies any cue on its scarred lattice
    novel = torch.stack([patterns.slot_patterns(N_NOVEL, grid, grid, SLOTS_PER_SIDE, SPOTS,
                                                seed=10_000 + s) for s in seeds])
    novel_cues = study.cues(novel, seeds, p.multi_cue_strength, "cue", NOVEL_CUE_INDEX)
    stored = study.store(pats, seeds, p.multi_train_steps, snapshots=ks,
                         first_index=NOISE["phase3_starts"][1], progress=f"store {family}")
    cues = study.cues(pats, seeds, p.multi_cue_strength, *NOISE["phase3_cues"])
    uniform = torch.full((S, 1, grid, grid), p.multi_cue_strength * UNIFORM_OF_CUE,
                         device=cues.device, dtype=cues.dtype)
    no_cue = torch.cat([study.cues(torch.zeros(1, grid, grid), seeds, 0.0,
                                   *NOISE["phase2_no_cue"]), uniform], dim=1)
    recalls = {}
    for k in ks:
        F, K = stored["snapshots"][k]
        recalls[k] = study.recall(F, K, torch.cat([cues[:, :k], novel_cues, no_cue], dim=1),
                                  torch.cat([pats[:, :k], novel.to(pats)], dim=1),
                                  p.multi_recall_steps, progress=f"recall {family} k={k}")
    # control: the same cues on an unscarred medium, for the patterns of the largest k
    control = study.recall(p.f0, p.k0, cues[:, :ks[-1]], pats[:, :ks[-1]],
                           p.multi_recall_steps, progress=f"control {family}")
    return pats, stored, recalls, control


def k_entry(res, stored, k, f0, k0):
    """The read-outs at k stored patterns, per metric."""
    n, stat = N_NOVEL, stats.summarize
    entry = {"k": k}
    for m in metrics.METRIC_NAMES:
        b, signed = metrics.BOUNDS[m], (-1.0, 1.0)
        fin, ini = res["final"][m], res["initial"][m]
        diag = fin[:, :k, :k].diagonal(dim1=1, dim2=2)          # (S, k)
        diag0 = ini[:, :k, :k].diagonal(dim1=1, dim2=2)
        novel = fin[:, k:k + n, k:k + n].diagonal(dim1=1, dim2=2)
        entry[m] = {
            "mean_recall": stat(diag.mean(1), bounds=b),
            "first_recall": stat(diag[:, 0], bounds=b),
            "cue_at_step0": stat(diag0.mean(1), bounds=b),
            "gain": stat((diag - diag0).mean(1), bounds=signed),
            "discrimination": (stat(metrics.discrimination_per_seed(fin[:, :k, :k]),
                                    bounds=signed) if k >= 2 else None),
            "novel_recall": stat(novel.mean(1), bounds=b),
            "novel_cue_at_step0": stat(
                ini[:, k:k + n, k:k + n].diagonal(dim1=1, dim2=2).mean(1), bounds=b),
            # mostly exact zeros: a bootstrap interval
            "noise_cue_recall": stat(fin[:, k + n, :k].mean(1), method="bootstrap_bca"),
            "uniform_cue_recall": stat(fin[:, k + n + 1, :k].mean(1), bounds=b),
            "per_pattern_recall": stats.summarize_tensor(diag, bounds=b),
        }
    F, K = stored["snapshots"][k]
    entry["scar_strength"] = stats.summarize(stored["scar_strength"][k - 1])
    entry["train_similarity_last"] = stats.summarize(stored["train_similarity"][k - 1],
                                                       bounds=(0.0, 1.0))
    scarred = memory.scarred_cells({"F": F, "K": K}, {"F": f0, "K": k0}, tolerance=1e-9)
    entry["scarred_fraction"] = stats.summarize(scarred.flatten(1).float().mean(1).cpu())
    return entry


def family_summary(ks, pats, stored, recalls, control, f0, k0):
    """by_k entries, capacity and forgetting of pattern 1, per metric."""
    by_k = {str(k): k_entry(recalls[k], stored, k, f0, k0) for k in ks}
    kmax = ks[-1]
    out = {"ks": list(ks), "by_k": by_k,
           "control_recall_no_scar": {m: stats.summarize(
               control["final"][m][:, :kmax].diagonal(dim1=1, dim2=2).mean(1))
               for m in metrics.METRIC_NAMES},
           "train_similarity": stats.summarize_tensor(stored["train_similarity"].T),
           "pair_overlap_iou": _pair_overlap(pats), "capacity": {},
           "forgetting_first_pattern": {}}
    for m in metrics.METRIC_NAMES:
        rec = [by_k[str(k)][m]["mean_recall"]["mean"] for k in ks]
        disc = [by_k[str(k)][m]["discrimination"] for k in ks]
        dlow = [float("-inf") if d is not None and d["ci95_low"] is None else
                (d["ci95_low"] if d is not None else None) for d in disc]
        out["capacity"][m] = metrics.capacity_readout(ks, rec, dlow, RECALL_THRESHOLD, 0.0)
        first_1 = torch.tensor(by_k[str(ks[0])][m]["first_recall"]["per_seed"])
        out["forgetting_first_pattern"][m] = {
            str(k): stats.summarize(first_1 - torch.tensor(by_k[str(k)][m]["first_recall"]
                                                              ["per_seed"])) for k in ks}
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
    return stats.summarize(iou[:, off].mean(1))



def print_report(families):
    fmt = stats.format_stat
    for f, fam in families.items():
        print(f"  {f}: capacity {fam['capacity']}")
        for k in fam["ks"]:
            e = fam["by_k"][str(k)]["cosine"]
            d = e["discrimination"]
            print(f"    k={k:3d} recall {fmt(e['mean_recall'])} (cue {fmt(e['cue_at_step0'])}) "
                  f"first {fmt(e['first_recall'])} disc {fmt(d) if d else '-'} never-stored "
                  f"{fmt(e['novel_recall'])} no-cue(uniform) {fmt(e['uniform_cue_recall'])}")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    study = scarring.Study(protocol_of(args), device, initial=args.saved_state())
    t0 = time.perf_counter()
    families = {}
    for family in ("overlapping", "disjoint"):
        fks = [k for k in args.ks if family == "overlapping" or k * SPOTS <= SLOTS_PER_SIDE ** 2]
        if fks:
            raw = run_family(study, family, fks, seeds)
            families[family] = family_summary(fks, *raw, args.f0, args.k0)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall),
              "by_k": families["overlapping"]["by_k"],
              "capacity": {f: fam["capacity"] for f, fam in families.items()},
              "families": families}
    result["config"].update(
        slots_per_side=SLOTS_PER_SIDE, spots_per_pattern=SPOTS, rule=study.rule.as_dict(),
        recall_threshold=RECALL_THRESHOLD, discrimination_chance=0.0,
        capacity_definition="largest k such that at every k' <= k the mean recall (own cue) "
        "> recall_threshold and the 95% interval of the discrimination index lies above 0 "
        "(k = 1: recall only)")
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot(families, out, len(seeds))
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    print_report(families)


def plot(families, out, n):
    import matplotlib.pyplot as plt

    from common import figures

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
        ax.set(title=f"{m}, mean and 95% interval, n={n}", ylabel=f"{m} after recall")
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figures.save_figure(fig, out / f"{Args.study}.png")



if __name__ == "__main__":
    cli.run_cli(main)
