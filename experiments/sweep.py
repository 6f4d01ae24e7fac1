"""Where in parameter space does scarring work? The reference protocol over a grid of its
constants x seeds, batched, resumable, on this machine or as a Slurm job array.

    python -m experiments.sweep                  # the (F0, K0) phase diagram (see DEFAULTS)
    python -m experiments.sweep --quick          # a smoke run: 3 x 3 points, 32 x 32, seconds
    python -m experiments.sweep --grid-f0 0.02:0.06:5 --grid-scar-strength 0.001,0.003
    python -m experiments.sweep --grid-file grid.yaml --phase3 --seeds 5
    python -m experiments.sweep --executor slurm --slurm-partition gpu \\
        --slurm-gpus-per-task 1 --slurm-time 30 --batch 600   # one array task per chunk
    python -m experiments.sweep --executor slurm --slurm-cluster local   # that path, here

Any numeric constant of the protocol (protocol.Protocol; every one is also a plain flag)
can be swept: `--grid-NAME lo:hi:n` (n values, both ends included) or `--grid-NAME a,b,c`,
or a YAML/JSON file of them (`--grid-file`). The points are the product; without any
--grid-* flag the sweep is the default diagram below. The (F0, K0) of every point must
lie inside the scar clamps (the rule clamps the whole field at every scarring step, so a
point outside them would move its unscarred cells too): sweep --f-min/--f-max/--k-min/
--k-max as well to go further.

DEFAULTS: F0 0.010:0.080:30 x K0 0.030:0.070:30 (900 points: the whole clamp box in F,
and K from the clamp floor to 0.070, which covers this medium's regimes from uniform fill
through spots and labyrinths to extinction), 3 seeds, 128 x 128, phases 1 and 2 with
both controls and the uncued arm, --batch 60 (20 points x 3 seeds per chunk), --workers
2 with one thread each. Why 128^2: it keeps the published result (at the published
point, 8 seeds: scarred 0.874 vs control 0.314) and the diagram of 256^2 (the same
verdict at 97 of 100 shared points; docs/findings/sweep.md) at a quarter of the cost, so the
900 points x 3 seeds take under half an hour on a loaded 2-core CPU. Why one thread
per worker: on a 2-core machine shared with other jobs, two threads per process spin
and run several times slower than one.

Per member (point, seed), on that point's own unscarred medium F = F0, K = K0 (the
substrate takes F and K per member, so a chunk of points x seeds is one batch), with the
main study's noise draws (protocol.NOISE: a seed gets the same training start and cue as
in scarring_validation.py):
  phase 1  train square_spots for --train-steps with the scar rule (scarred) and without
           it (control), from the same start;
  phase 2  recall for --recall-steps from the --cue-strength cue on the scarred F/K
           (scarred) and on the unscarred medium (control), and from noise alone on the
           scarred F/K (uncued: the imprint test: does the cue matter?);
  phase 3  (--phase3) scar A, B, C in turn and recall each from its cue: recall matrix
           and the discrimination index.
Each row of the table: every constant, the seed, the training similarity of both arms,
the scar strength against the point's own F0/K0, the cue's own step-0 cosine, IoU and
Pearson, the recall cosine/IoU/Pearson of each arm, the improvement ratio (scarred /
max(control, 0.01), as in the main study), and `regime`: what the unscarred medium does
there (classify_regime, on the phase-1 control's final V), with `recall_regime` the same
for the phase-2 control.

Output (--out, default scarring_results/sweep/, replaced whole at the end): table.csv and
table.parquet (pyarrow) or table.jsonl, sweep.json (the results envelope, the grid, per
point mean and 95% interval of the main metrics, where the effect holds, the cost),
heatmaps over (F0, K0) of scarred, control and uncued recall, their ratio, the
discrimination index (--phase3), where the effect holds, and the regime. The chunks are
written as they finish into a work folder that persists (--work, default OUT.chunks
beside OUT): a killed run, rerun with the same flags, skips the chunks already done.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import stats
from common import cli, limits, sweep
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol

torch, np, metrics, patterns, regimes, scarring, validation, saved_states = cli.lazy_modules(
    "torch", "numpy", "metrics", "patterns", "regimes", "scarring", "scarring_validation",
    "common.state")

NOT_SWEPT = ("record_every",)    # numeric, but nothing here depends on it
SWEEPABLE = tuple(f.name for f in dataclasses.fields(Protocol)
                  if f.type in ("int", "float") and f.name not in NOT_SWEPT)
PER_MEMBER = ("f0", "k0")        # differ inside one batch (F, K per member); the rest
                                 # (grid, Du, Dv, steps, rule constants...) once per chunk
DEFAULT_GRID = {"f0": "0.010:0.080:30", "k0": "0.030:0.070:30"}
QUICK_GRID = {"f0": "0.02:0.06:3", "k0": "0.045:0.065:3"}
QUICK = dict(grid=32, train_steps=60, recall_steps=40, multi_train_steps=40,
             multi_recall_steps=30, seeds=1)
DEFAULT_BATCH, DEFAULT_WORKERS = 60, 2
VERSION = "1"          # bump when a change here changes the numbers (part of chunk hashes)
METRIC_NAMES = ("cosine", "iou", "pearson")
HOLDS_RECALL, HOLDS_RATIO = 0.7, 1.5     # the study's success criteria
RECALL_ARMS = 4        # the largest batch: phase 2's recall, scarred and control F/K, cue and none


@dataclass
class Args(RunArgs, Protocol):
    """The protocol's constants (each a plain flag and a --grid-NAME), and the sweep's."""
    study: ClassVar[str] = "sweep"
    saved_state_starts: ClassVar[str] = (
        "phase 1 (both arms) of every point starts from the saved U, V of its seed on the "
        "point's own unscarred F0, K0 (the saved F, K are not used: they would erase the "
        "swept constants); phase 3 starts from the unscarred medium as always")
    members_per_seed: ClassVar[int] = 0    # memory is checked per chunk (parse_args)
    seeds: int = arg(3, "seeds per point, run in the same batch as the points", lo=1,
                     hi=100_000)
    grid: int = arg(128, "grid size H = W (the reference geometry scales with it)", lo=16,
                    hi=16_384)
    phase3: bool = arg(False, "also run phase 3 (A, B, C stored in turn): recall matrix "
                              "and discrimination index per point")
    work: Optional[str] = arg(None, "folder of the chunk files, kept between runs so a "
                                    "rerun resumes (default: OUT.chunks beside --out)")

    def work_dir(self) -> Path:
        out = self.out_dir()
        return Path(self.work) if self.work else out.parent / f"{out.name}.chunks"


# ---- the command line ------------------------------------------------------------------


def parse_args(argv=None):
    """(Args, grid {name: [values]}, run_sweep keyword arguments), all checked up front."""
    parser = cli.build_parser(Args, __doc__.split("\n\n")[0], QUICK)
    sweep.add_grid_flags(parser, SWEEPABLE)
    sweep.add_executor_flags(parser)
    parser.add_argument("--slurm-cluster", choices=("slurm", "local", "debug"),
                        default="slurm", help="submitit's cluster: slurm, or local/debug to "
                        "run the same job-array path on this machine (default: slurm)")
    own = {"batch": (DEFAULT_BATCH, DEFAULT_BATCH), "workers": (DEFAULT_WORKERS, 1)}
    for action in parser._actions:   # this study's defaults for two of the shared flags
        if action.dest in own:
            action.default = None
            default, quick = own[action.dest]
            action.help = (action.help.split(" (default")[0] + f" (default {default}"
                           + (f"; --quick: {quick})" if quick != default else ")"))
    given = vars(parser.parse_args(argv))
    config_file, save_to = given.pop("config", None), given.pop("save_config", None)
    sweep_keys = {a.dest for a in parser._actions if a.dest.startswith(("grid_", "slurm_"))}
    sweep_keys |= {"executor", "batch", "workers", "no_wait", "collect", "dry_run"}
    flags = argparse_namespace({k: given.pop(k, None) for k in sweep_keys})
    for name, (default, quick) in own.items():
        if getattr(flags, name) is None:
            setattr(flags, name, quick if given.get("quick") else default)
    from_file = cli.read_config(config_file, Args) if config_file is not None else {}
    values = dict(QUICK) if given.get("quick", from_file.get("quick")) else {}
    values.update(from_file)
    values.update(given)
    args = Args(**values)
    try:
        cli.validate(args)
        grid = grid_of(args, flags)
        execution = sweep.executor_from_flags(flags)
        execution["slurm"] = dataclasses.replace(execution["slurm"],
                                                 cluster=flags.slurm_cluster)
        sweep.plan(grid, args.seed_list(), execution["batch"])   # batch and seeds checks
    except sweep.GridError as exc:
        raise ValueError(str(exc)) from None
    if execution["executor"] == "local" and execution["workers"] > 1:
        execution["threads"] = args.threads or 1
    check_points(args, grid)
    if args.init_from is not None and "grid" in grid:
        raise ValueError("--init-from: a saved state has one grid: use --grid, not --grid-grid")
    args.saved_state()   # its grid and batch (--grid, --seeds), before any chunk
    if execution["executor"] == "local":   # a Slurm task's machine is not this one
        members = min(execution["batch"], math.prod(map(len, grid.values())) * args.seeds)
        side = max(grid.get("grid", [args.grid]))
        limits.check_media(RECALL_ARMS * members, side ** 2, 4,
                           cli.resolve_device(args.device),
                           f"a chunk of {members} members at {side}x{side}",
                           "use a smaller --grid or --batch")
    work, out = args.work_dir().resolve(), args.out_dir().resolve()
    if work == out or out in work.parents:
        raise ValueError(f"--work {args.work}: must lie outside --out {out} (each run "
                         f"replaces --out whole, and the chunks must survive it)")
    cli.check_out_dir(args.work_dir(), kind="chunks")
    if save_to is not None:
        cli.write_config(save_to, args)
        print(f"wrote the effective flags to {save_to} (the grid and executor flags are not "
              f"in it); run them with --config {save_to}")
        sys.exit(0)
    execution["dry_run"] = bool(flags.dry_run)
    return args, grid, execution


def argparse_namespace(values: dict):
    import argparse
    return argparse.Namespace(**values)


def grid_of(args, flags) -> dict:
    """The grid from --grid-file and --grid-NAME, or the default (--quick: a tiny one)."""
    given = flags.grid_file is not None or any(getattr(flags, f"grid_{n}") is not None
                                               for n in SWEEPABLE)
    if not given:
        return sweep.parse_grid(QUICK_GRID if args.quick else DEFAULT_GRID, SWEEPABLE)
    return sweep.grid_from_flags(flags, SWEEPABLE)


def check_points(args, grid) -> None:
    """Every point's protocol is valid (ranges, clamps, stability): one line if not."""
    base = protocol_fields(args)   # checked with the flags; each swept value once here
    for name, values in grid.items():
        for value in values:
            try:
                cli.validate(Protocol(**{**base, name: value}), fields=(name,))
            except ValueError as exc:
                raise ValueError(f"grid point ({name}={value}): {exc}") from None
    for point in sweep.expand(grid):   # then what depends on several constants
        try:
            protocol = Protocol(**{**base, **point})
            cli.validate(protocol, fields=())
            scarring.check_protocol(protocol)   # stability, the rule: before any chunk
        except ValueError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in point.items())
            raise ValueError(f"grid point ({shown}): {exc}") from None


def protocol_fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(Protocol)}


def per_member(args) -> tuple:
    """The match-map rule reads F0/K0 only through the fields, so points of different
    (F0, K0) share a batch; another rule gets them once per chunk, to be safe."""
    return PER_MEMBER if args.rule == "match_map" else ()


# ---- the runner (one chunk: points x seeds as one batch) --------------------------------


def run_points(points, seeds, *, device="cpu", phase3=False, init_from=None,
               **constants) -> list[dict]:
    """One row per (point, seed): phases 1-2 (and 3) for every member in one batch.

    points: dicts of swept constants; the per-batch ones are equal across the chunk and
    also come in `constants` with every fixed protocol constant. init_from: {"path",
    "sha256", "seeds": the run's seeds}: each member starts from its seed's saved U, V."""
    protocol = Protocol(**{k: v for k, v in constants.items() if k in PROTOCOL_NAMES})
    members = [(p, s) for p in points for s in seeds]
    member_seeds = [s for _, s in members]
    initial = None if init_from is None else saved_states.members(
        saved_states.load_state(init_from["path"], sha256=init_from["sha256"]),
        [init_from["seeds"].index(s) for s in member_seeds])
    study = scarring.Study(protocol, torch.device(device), initial=initial, saved_fields=False)
    F0, K0 = _member_fields(study, [p.get("f0", protocol.f0) for p, _ in members],
                            [p.get("k0", protocol.k0) for p, _ in members])
    target = patterns.make_pattern(protocol.pattern, protocol.grid, protocol.grid,
                                   dtype=study.dtype).to(study.device)
    out = phases_1_2(study, target, member_seeds, F0, K0)
    if phase3:
        out.update(phase_3(study, member_seeds, F0, K0))
    rows = []
    for i, (point, seed) in enumerate(members):
        row = {**point, "seed": seed}
        row.update({k: _scalar(v[i]) for k, v in out.items()})
        row["improvement_ratio"] = row["scarred_recall_cosine"] / max(
            row["control_recall_cosine"], 0.01)
        rows.append(row)
    return rows


PROTOCOL_NAMES = {f.name for f in dataclasses.fields(Protocol)}


ROW_RANGES = {"cosine": (-1.0, 1.0), "iou": (0.0, 1.0), "pearson": (-1.0, 1.0)}


def check_row(row) -> None:
    """A chunk file's row read back: every similarity, ratio and count in its range
    (ValueError otherwise, and the chunk is run again)."""
    for key, value in row.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        lo, hi = BOUNDS.get(key) or ROW_RANGES.get(key.rsplit("_", 1)[-1]) or (
            (0, math.inf) if key.endswith("_cells") else (-math.inf, math.inf))
        if not lo - 1e-6 <= value <= hi + 1e-6:
            raise ValueError(f"{key}={value} lies outside [{lo}, {hi}]")


def _scalar(x):
    if isinstance(x, str):
        return x
    value = x.item() if hasattr(x, "item") else x
    return int(value) if isinstance(value, bool) else value


def _member_fields(study, f0s, k0s):
    """Per-member unscarred fields (B, H, W) from each member's F0 and K0."""
    n = study.protocol.grid
    as_col = lambda v: torch.tensor(v, dtype=torch.float64).to(study.dtype).view(-1, 1, 1)  # noqa: E731
    return (as_col(f0s).expand(-1, n, n).to(study.device).clone(),
            as_col(k0s).expand(-1, n, n).to(study.device).clone())


def phases_1_2(study, target, seeds, F0, K0) -> dict:
    """{column: (B,) tensor or list of labels} of phases 1 and 2 (scarring_validation's
    phase1 and phase2) for B members on their own unscarred fields F0, K0."""
    p1 = validation.phase1(study, target, seeds, unscarred=(F0, K0))
    p2 = validation.phase2(study, target, p1["F"], p1["K"], seeds, unscarred=(F0, K0))
    arms = ("scarred", "control", "uncued")
    out = {f"train_{arm}_{m}": p1["arms"][arm]["final"][m]
           for arm in ("scarred", "control") for m in ("cosine", "iou")}
    out["total_scar_strength"] = p1["scar_strength"]
    out["scarred_cells"], out["saturated_cells"] = p1["scarred_cells"], p1["saturated_cells"]
    for m in METRIC_NAMES:
        out[f"cue_{m}"] = p2["cue_metrics"][m]
        for arm in arms:
            out[f"{arm}_recall_{m}"] = p2["arms"][arm]["final"][m]
    recall_regimes = [regimes.classify_regime(v) for v in p2["arms"]["control"]["V"].numpy()]
    train_regimes = [regimes.classify_regime(v) for v in p1["arms"]["control"]["V"].numpy()]
    out["regime"] = [r["regime"] for r in train_regimes]
    out["regime_active_fraction"] = [r["active_fraction"] for r in train_regimes]
    out["recall_regime"] = [r["regime"] for r in recall_regimes]
    for arm in arms:
        out[f"{arm}_active_fraction"] = [float((v > regimes.ACTIVE_V).mean())
                                         for v in p2["arms"][arm]["V"].numpy()]
    return out


def phase_3(study, seeds, F0, K0) -> dict:
    """scarring_validation's phase3 on the members' own unscarred fields: per member the
    own-pattern recalls, their mean and minimum, and the discrimination index, beside
    the cues' own (step 0) cosine and discrimination."""
    p = study.protocol
    targets = {k: v.to(study.device) for k, v in
               patterns.phase3_targets(p.grid, dtype=study.dtype).items()}
    p3 = validation.phase3(study, targets, seeds, unscarred=(F0, K0))
    matrix = p3["arms"]["scarred"]["matrix"]["cosine"]      # (B, cue, pattern)
    own = matrix.diagonal(dim1=1, dim2=2)                    # (B, P)
    out = {f"p3_recall_{name.split('_')[0]}": own[:, i] for i, name in enumerate(targets)}
    out["p3_cue_cosine"] = p3["cue_matrix"]["cosine"].diagonal(dim1=1, dim2=2).mean(1)
    out["p3_cue_discrimination"] = metrics.discrimination_per_seed(p3["cue_matrix"]["cosine"])
    out.update(p3_mean_recall=own.mean(1), p3_min_recall=own.min(1).values,
               discrimination=metrics.discrimination_per_seed(matrix))
    return out


# ---- per-point summaries ----------------------------------------------------------------

SUMMARY_METRICS = ("scarred_recall_cosine", "control_recall_cosine", "uncued_recall_cosine",
                   "improvement_ratio", "cue_cosine", "scarred_recall_iou", "cue_iou",
                   "train_scarred_cosine", "train_control_cosine", "p3_mean_recall",
                   "discrimination", "p3_cue_discrimination")
# the range of each metric (V and the targets are >= 0, so cosines and IoU lie in [0, 1];
# the ratio's control is floored at 0.01); intervals are clipped to it
BOUNDS = {"improvement_ratio": (0.0, 100.0), "discrimination": (-1.0, 1.0),
          "p3_cue_discrimination": (-1.0, 1.0)}
RATIO_FLOOR = 0.01       # as the main study: scarred / max(control, 0.01)


def summarize_points(rows, names) -> list[dict]:
    """Per point (the swept constants): [mean, 95% t-interval] over seeds of the main
    metrics (clipped to each metric's range), the regimes seen (most seeds), and the
    verdicts. The effect holds when the mean scarred recall > 0.7 and the ratio of the
    mean recalls scarred / control > 1.5; `holds_at_ci_low` asks the same of the worst
    ends of both intervals (scarred low, control high), `holds_at_ci_high` of the best
    (None with one seed). (The per-seed ratio in the table, as the main study reports it,
    has no usable interval where the control is near 0: one seed at 0.001 sends it to
    100.)"""
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault(tuple(r[n] for n in names), []).append(r)
    points = []
    for key, rs in groups.items():
        point = dict(zip(names, key))
        point["n"] = len(rs)
        for m in SUMMARY_METRICS:
            if rs[0].get(m) is not None:
                b = stats.summarize([r[m] for r in rs], bounds=BOUNDS.get(m, (0.0, 1.0)))
                point[m] = [b["mean"], b["ci95_low"], b["ci95_high"]]
        for label in ("regime", "recall_regime"):
            point[label], point[f"{label}_agreement"] = Counter(
                r[label] for r in rs).most_common(1)[0]
        sc, ct = point["scarred_recall_cosine"], point["control_recall_cosine"]
        ratio = lambda a, b: a / max(b, RATIO_FLOOR)   # noqa: E731
        point["ratio_of_means"] = [ratio(sc[0], ct[0])] + (
            [None, None] if sc[1] is None else [ratio(sc[1], ct[2]), ratio(sc[2], ct[1])])
        verdict = lambda i: sc[i] > HOLDS_RECALL and point["ratio_of_means"][i] > HOLDS_RATIO  # noqa: E731
        point["holds"] = verdict(0)
        point["holds_at_ci_low"] = None if sc[1] is None else verdict(1)
        point["holds_at_ci_high"] = None if sc[1] is None else verdict(2)
        points.append(point)
    return points


def overview(points) -> dict:
    """How many points hold: on the seed means, and bracketed by the seed spread (at
    the worst ends of both 95% intervals: surely; at the best ends: possibly). The grid is not a
    random sample of parameter space, so these are counts, not estimated rates. Also the
    regimes of the unscarred medium where it holds and where it fails."""
    holds = [p for p in points if p["holds"]]
    fails = [p for p in points if not p["holds"]]
    return {"points": len(points), "holds_on_mean": len(holds),
            "holds_at_ci_low": sum(bool(p["holds_at_ci_low"]) for p in points),
            "holds_at_ci_high": sum(bool(p["holds_at_ci_high"]) for p in points),
            "regimes_where_it_holds": dict(Counter(p["regime"] for p in holds)),
            "regimes_where_it_fails": dict(Counter(p["regime"] for p in fails)),
            "regimes": dict(Counter(p["regime"] for p in points))}


# ---- figures ----------------------------------------------------------------------------

HEATMAPS = (  # file stem, metric, label, colour range, log scale
    ("scarred_recall", "scarred_recall_cosine", "scarred recall (cosine)", (0, 1), False),
    ("control_recall", "control_recall_cosine", "control recall (cosine)", (0, 1), False),
    ("ratio", "improvement_ratio", "improvement ratio scarred / control", (None, None), True),
    ("uncued_recall", "uncued_recall_cosine", "uncued recall: scarred F/K, no cue (cosine)",
     (0, 1), False),
    ("discrimination", "discrimination", "phase 3 discrimination index", (None, None), False),
)


def figure_axes(grid) -> tuple | None:
    """(x, y, others) among the constants with two or more values: heatmap axes (F0, K0
    when both vary, else the first two) and the others (one figure set per combination);
    None with fewer than two."""
    names = [n for n, values in grid.items() if len(values) > 1]
    if len(names) < 2:
        return None
    x, y = ("f0", "k0") if {"f0", "k0"} <= set(names) else names[:2]
    return x, y, [n for n in names if n not in (x, y)]


MAX_FIGURE_SETS = 6


def write_figures(out, rows, points, grid) -> list[str]:
    """The heatmaps (and the holds/regime maps) as PNGs; returns the file names."""
    axes = figure_axes(grid)
    if axes is None:
        print("figures: fewer than two constants vary: no heatmaps (read table.csv)")
        return []
    x, y, others = axes
    combos = sweep.expand({n: grid[n] for n in others}) if others else [{}]
    if len(combos) > MAX_FIGURE_SETS:
        print(f"figures: {len(combos)} combinations of {others}: heatmaps only for the "
              f"first {MAX_FIGURE_SETS} (read table.csv for the rest)")
    marked = sweep.PUBLISHED_POINT if (x, y) == ("f0", "k0") else None
    files = []
    for combo in combos[:MAX_FIGURE_SETS]:
        suffix = "".join(f"_{k}={v}" for k, v in combo.items())
        sel = [r for r in rows if all(r[k] == v for k, v in combo.items())]
        sel_points = [p for p in points if all(p[k] == v for k, v in combo.items())]
        where = f" ({', '.join(f'{k} {v}' for k, v in combo.items())})" if combo else ""
        for stem, metric, label, (lo, hi), log in HEATMAPS:
            if sel[0].get(metric) is None:
                continue
            name = f"{stem}{suffix}.png"
            sweep.heatmap(out / name, sel, metric, label + where, x=x, y=y, xlabel=x,
                          ylabel=y, vmin=lo, vmax=hi, log=log, marked=marked)
            files.append(name)
        files.append(category_map(out / f"holds{suffix}.png", sel_points, x, y, "holds",
                                  marked, where))
        files.append(category_map(out / f"regime{suffix}.png", sel_points, x, y, "regime",
                                  marked, where))
    return files


def _holds_class(point) -> str:
    if point["holds_at_ci_low"]:
        return "holds at the worst ends"
    return "holds on the means" if point["holds"] else "fails"


def category_map(path, points, x, y, kind, marked, where="") -> str:
    """A map of one label per point: where the effect holds, or the control's regime."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if kind == "holds":
        classes, colours = ("fails", "holds on the means", "holds at the worst ends"), \
            ("#d9d9d9", "#9ecae1", "#08519c")
        label_of = _holds_class
        title = (f"scarred recall > {HOLDS_RECALL} and scarred / control > {HOLDS_RATIO}\n"
                 f"on the seed means, or at the worst ends of both 95% intervals")
    else:
        classes, colours = regimes.REGIMES, ("#000000", "#e6550d", "#31a354", "#756bb1", "#fdd0a2")
        label_of = lambda p: p["regime"]   # noqa: E731
        title = "unscarred control after phase 1: regime (most seeds)"
    xs, ys = sorted({p[x] for p in points}), sorted({p[y] for p in points})
    code = np.full((len(ys), len(xs)), np.nan)
    for p in points:
        code[ys.index(p[y]), xs.index(p[x])] = classes.index(label_of(p))
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    ax.pcolormesh(xs, ys, code, shading="nearest", cmap=ListedColormap(colours), vmin=-0.5,
                  vmax=len(classes) - 0.5)
    for c, colour in zip(classes, colours):
        ax.plot([], [], "s", color=colour, label=c, ms=9)
    if marked is not None:
        ax.plot(*marked, marker="*", ms=14, mfc="white", mec="black", ls="none",
                label="published point")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    n = sorted({p["n"] for p in points})
    ax.set(xlabel=x, ylabel=y)
    ax.set_title(f"{title}{where}\n{len(xs)} x {len(ys)} points, n = {n[0]}"
                 f"{'' if len(n) == 1 else f'-{n[-1]}'} seeds per point", fontsize=9)
    fig.tight_layout()
    from common import figures
    return figures.save_figure(fig, path, dpi=90, layout=False).name


# ---- the run ----------------------------------------------------------------------------


def cell_updates(args, members: int) -> float:
    """Cell-updates a chunk's members cost: 2 training arms, 3 recall arms (+ phase 3)."""
    steps = 2 * args.train_steps + 3 * args.recall_steps
    if args.phase3:
        steps += 3 * (args.multi_train_steps + args.multi_recall_steps)
    return float(members) * steps * args.grid ** 2


def fixed_settings(args, grid, execution) -> dict:
    """What every chunk gets besides its points: the constants not swept, the phase-3
    switch and the device (all part of each chunk's hash)."""
    base = {k: v for k, v in protocol_fields(args).items() if k not in grid}
    if args.device is not None:
        device = args.device
    elif execution["executor"] == "slurm":
        device = "cuda" if execution["slurm"].gpus_per_task else "cpu"
    else:
        device = str(cli.resolve_device(None))
    saved = {} if args.init_from is None else {"init_from": {   # keyed on its content
        "path": str(Path(args.init_from).resolve()), "seeds": args.seed_list(),
        "sha256": saved_states.file_digest(args.init_from)}}
    return {**base, "phase3": bool(args.phase3), "device": device, **saved}


def main(argv=None):
    args, grid, execution = parse_args(argv)
    dry_run = execution.pop("dry_run")
    seeds, device = cli.start(args, announce=not dry_run)
    from experiments.sweep import run_points as runner   # by module name, also under -m
    n_points = math.prod(len(v) for v in grid.values())
    work = args.work_dir()
    per_batch = [n for n in grid if n not in per_member(args)]
    if dry_run:
        chunks = sweep.plan(grid, args.seed_list(), execution["batch"],
                            fixed_settings(args, grid, execution), VERSION,
                            sweep.runner_name(runner), per_batch)
        print(f"sweep: {n_points} points x {args.seeds} seeds over {', '.join(grid)}, "
              f"{execution['executor']} executor, batch {execution['batch']}")
        print(sweep.dry_run_text(chunks, work, execution["executor"], execution["slurm"]))
        return
    print(f"sweep: {n_points} points x {len(seeds)} seeds over {', '.join(grid)}, "
          f"{execution['executor']} executor, batch {execution['batch']}, "
          f"chunks -> {work}/", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / cli.CHUNKS_MARKER).write_text("sweep chunks\n")
    load = os.getloadavg()
    t0 = time.perf_counter()
    try:
        result = sweep.run_sweep(runner, grid, seeds, work, per_batch=per_batch, formats=(),
                                 fixed=fixed_settings(args, grid, execution), version=VERSION,
                                 progress=not args.quiet, check_row=check_row, **execution)
    except sweep.SweepSubmitted as exc:    # --no-wait: the jobs run on without us
        print(exc)
        return
    except sweep.SweepIncomplete as exc:   # the finished chunks stay for the rerun
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    wall = time.perf_counter() - t0
    points = summarize_points(result.rows, list(grid))
    summary = dict(result.summary, load_average_start=load, load_average_end=os.getloadavg(),
                   cell_updates_run=cell_updates(args, result.summary["members_run"]))
    summary["cell_updates_per_s"] = summary["cell_updates_run"] / max(summary["wall_s"], 1e-9)
    # the chunks' own run times, whichever run made them (this one or an earlier one)
    summary["chunk_seconds_total"] = sum(json.loads(sweep.chunk_path(work, c).read_text())
                                         ["wall_s"] for c in result.chunks)
    report = {**cli.envelope(args, seeds, device, wall), "grid": grid,
              "execution": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                            for k, v in execution.items()},
              "work_folder": str(work), "per_member": list(per_member(args)),
              "cost": summary, "overview": overview(points), "points": points,
              "noise_draws": {k: {"role": r, "first_index": i} for k, (r, i) in NOISE.items()},
              "classifier": {"active_v": regimes.ACTIVE_V, "dead_fraction": regimes.DEAD_FRACTION,
                             "fill_fraction": regimes.FILL_FRACTION, "compact": regimes.COMPACT}}
    with cli.staged_output(args.out_dir(), Args.study) as out:
        sweep.write_table(out, result.rows)
        report["figures"] = write_figures(out, result.rows, points, grid)
        cli.write_json_atomic(out / "sweep.json", report)
    print_overview(report)


def print_overview(report) -> None:
    o, c = report["overview"], report["cost"]
    print(f"\n{o['points']} points: the effect holds (scarred recall > {HOLDS_RECALL}, ratio "
          f"> {HOLDS_RATIO}) at {o['holds_on_mean']} on the seed mean; at the lower / upper "
          f"95% bounds of both: {o['holds_at_ci_low']} / {o['holds_at_ci_high']}")
    print(f"regimes where it holds: {o['regimes_where_it_holds']}; fails: "
          f"{o['regimes_where_it_fails']}")
    print(f"cost: {c['members_run']} members run in {c['wall_s']:.0f} s "
          f"({c['cell_updates_per_s'] / 1e6:.1f} Mcell-updates/s), {c['skipped']} chunks "
          f"reused; load average {c['load_average_start'][0]:.1f} at the start")
    print(f"results in {report['config']['out'] or cli.RESULTS_ROOT / Args.study}/")


if __name__ == "__main__":
    cli.run_cli(main)
