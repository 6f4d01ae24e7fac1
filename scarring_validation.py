"""Parametric scarring: the reference study's phases 1-3, over several seeds at once.

    python scarring_validation.py                 # 8 seeds, 256 x 256 -> scarring_results/scarring_validation/
    python scarring_validation.py --quick         # a smoke run: seconds, small grid
    python scarring_validation.py --help          # every constant of the protocol is a flag
    python scarring_validation.py --replot DIR    # redraw a finished run's figures, no simulation

Phase 1  train square_spots 1000 steps WITH scarring; the control trains the same start
         WITHOUT scarring. Final similarity of both, and the scar strength.
Phase 2  recall from a weak cue (s = 0.15) for 500 steps on the scarred F/K and on the
         default F/K (control); also from noise alone (no cue) on both, which tells
         whether the cue matters at all.
Phase 3  scar A (spots offset by -64,-64), B (ring), C (line) in turn, 500 steps each,
         then recall each from a s = 0.20 cue for 300 steps (and the same cues on default
         F/K as the control).

Every seed is one batch member, and the arms of a phase run in one batch. Recall figures
are reported beside the similarity of their own cue at step 0 (cosine ignores scale, so
a cue already scores high) and beside IoU and Pearson. The constants are those of the
published study (docs/protocol.md), each a field of protocol.Protocol.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, PUBLISHED, Protocol, protocol_of

REFERENCE = Protocol()

torch, memory, metrics, patterns, scarring = cli.lazy_modules("torch", "memory", "metrics", "patterns",
                                                          "scarring")


@dataclass
class Args(RunArgs, Protocol):
    """The protocol's constants (protocol.Protocol) and the run's own flags."""
    study: ClassVar[str] = "scarring_validation"
    saved_state_starts: ClassVar[str] = (
        "phase 1 continues from it (the scarred arm from its U, V, F, K, the control from "
        "its U, V on the unscarred fields; phase 2 recalls on the continued scars); phase "
        "3, an experiment of its own, starts from the unscarred medium as always")
    no_video: bool = arg(False, "skip the MP4s")
    target_image: Optional[str] = arg(None, "grayscale PNG/JPG used as the phase 1-2 target "
                                            "instead of --pattern (bright = pattern)")
    save_frames: bool = arg(False, "also store the videos' frame stacks in fields.npz (V "
                                   "every 1%% of phases 1 and 2), so --replot redraws the MP4s")
    replot: Optional[str] = arg(None, "redraw every figure of the finished run in DIR from its "
                                      "results.json and fields.npz, without simulating (into "
                                      "DIR, or --out; --format and --dpi apply)", metavar="DIR")


# --quick: a smoke run (the physics is the same; the grid and step counts shrink)
QUICK = dict(grid=64, train_steps=200, recall_steps=100, multi_train_steps=100,
             multi_recall_steps=60, seeds=2)
REFERENCE_GRID = 256   # the published figures and success criteria apply at this size
CRITERIA = [  # the study's printed success criteria, judged on our means
    ("phase2 scarred recall > 0.7", "phase2", "scarred_recall_quality", 0.7),
    ("improvement ratio > 1.5", "phase2", "improvement_ratio", 1.5),
    ("phase3 minimum recall > 0.5", "phase3", "min_recall", 0.5),
]
METRICS = ("cosine", "iou", "pearson")


def final_metrics(V, target) -> dict:
    """{metric: (B,)} of V (B, H, W) against the target (H, W) or (B, H, W)."""
    return {m: metrics.METRICS[m](V, target).cpu() for m in METRICS}


# ---- the phases -------------------------------------------------------------------------


def _medium(unscarred) -> dict:
    """Study.store's arguments for per-member unscarred fields (F0, K0), each (B, H, W)
    (experiments/sweep.py: one grid point per member); none for the protocol's medium."""
    if unscarred is None:
        return {}
    F0, K0 = unscarred
    return {"F": F0, "K": K0, "background": {"F": F0, "K": K0}}


def phase1(study, target, seeds, unscarred=None) -> dict:
    """Train with scarring, and the control without, from the same starts (a study with a
    saved state, Study(initial=...): the scarred arm continues from its U, V, F, K, the
    control starts from its U, V on the unscarred fields; unscarred: per-member (F0, K0),
    default the protocol's medium)."""
    p = study.protocol
    index = NOISE["phase1_start"][1]   # training starts are always role "train"
    arms = {}
    for arm, scar in (("scarred", True), ("control", False)):
        run = study.store(target[None], seeds, p.train_steps, scar=scar, first_index=index,
                          **_medium(unscarred),
                          record_every=p.record_every, frame_members=(0,),
                          progress=f"phase 1: training, {arm}")
        arms[arm] = {"final": final_metrics(run["V"], target), "V": run["V"].cpu(),
                     "U": run["state"][0].cpu(),
                     "F": run["F"], "K": run["K"], "curve": run["curves"][0],
                     "frames": run["frames"][0]}
    F, K = arms["scarred"]["F"], arms["scarred"]["K"]
    F0, K0 = arms["control"]["F"], arms["control"]["K"]   # the unscarred medium
    return {"arms": arms, "F": F, "K": K,
            "scar_strength": scarring.scar_strength(F, K, F0, K0).cpu(),
            "scarred_cells": memory.scarred_cells({"F": F, "K": K}, {"F": F0, "K": K0})
                             .flatten(1).sum(1).cpu(),
            "saturated_cells": ((F == p.f_max) & (K == p.k_min)).flatten(1).sum(1).cpu()}


def phase2(study, target, F, K, seeds, unscarred=None) -> dict:
    """Recall from the cue and from noise alone, on the scarred and on the default F/K
    (unscarred: per-member (F0, K0); default: the protocol's medium)."""
    p, S = study.protocol, len(seeds)
    cue = study.cues(target[None], seeds, p.cue_strength, *NOISE["phase2_cue"])
    no_cue = study.cues(torch.zeros_like(target)[None], seeds, 0.0, *NOISE["phase2_no_cue"])
    F0, K0 = study.default_fields(S) if unscarred is None else unscarred
    # members: [scarred seeds, default seeds] x [cue, no cue]
    res = study.recall(torch.cat([F, F0]), torch.cat([K, K0]),
                       torch.cat([cue, no_cue], 1).repeat(2, 1, 1, 1), target[None],
                       p.recall_steps, return_fields=True, record_every=p.record_every,
                       curve_patterns=(0, 0), frame_members=((0, 0), (S, 0)),
                       progress="phase 2: recall")
    where = {"scarred": (slice(0, S), 0), "control": (slice(S, 2 * S), 0),
             "uncued": (slice(0, S), 1), "control_uncued": (slice(S, 2 * S), 1)}
    arms = {arm: {"final": {m: res["final"][m][rows, col, 0] for m in METRICS},
                  "V": res["V"][rows, col],
                  "curve": {"steps": res["curves"]["steps"],
                            "similarity": res["curves"]["similarity"][:, rows, col]}}
            for arm, (rows, col) in where.items()}
    return {"arms": arms, "cue": cue[:, 0].cpu(),
            "cue_metrics": final_metrics(cue[:, 0], target),
            "frames": {"scarred": res["frames"][:, 0], "control": res["frames"][:, 1]}}


def phase3(study, targets, seeds, unscarred=None) -> dict:
    """Scar A, B, C in turn into the same F/K; recall each on scarred and default F/K
    (unscarred: per-member (F0, K0); default: the protocol's medium)."""
    p, S = study.protocol, len(seeds)
    stacked = torch.stack(list(targets.values()))                        # (P, H, W)
    stored = study.store(stacked, seeds, p.multi_train_steps, progress="phase 3: training",
                         first_index=NOISE["phase3_starts"][1], from_saved=False,
                         **_medium(unscarred))
    cues = study.cues(stacked, seeds, p.multi_cue_strength, *NOISE["phase3_cues"])  # (S, P, H, W)
    F0, K0 = study.default_fields(S) if unscarred is None else unscarred
    res = study.recall(torch.cat([stored["F"], F0]), torch.cat([stored["K"], K0]),
                       cues.repeat(2, 1, 1, 1), stacked, p.multi_recall_steps,
                       return_fields=True, progress="phase 3: recall")
    arms = {arm: {"matrix": {m: res["final"][m][rows] for m in METRICS},   # (S, cue, pattern)
                  "V": res["V"][rows]}
            for arm, rows in (("scarred", slice(0, S)), ("control", slice(S, 2 * S)))}
    return {"arms": arms, "cues": cues.cpu(), "F": stored["F"], "K": stored["K"],
            "cue_matrix": {m: res["initial"][m][:S] for m in METRICS},
            "strength_after": stored["scar_strength"]}


# ---- results ----------------------------------------------------------------------------


UNIT = (0.0, 1.0)   # cosine and IoU of non-negative fields, fractions


def stat(values, published=None, reference_scale=True, bounds=UNIT, method="t") -> dict:
    """A stat block; bounded metrics keep their interval inside their range, and outcomes
    that are mostly exact zeros (recall from noise alone) get a bootstrap interval."""
    s = stats.summarize(values, method, bounds=bounds)
    s["published"] = published if reference_scale else None
    return s


def phase1_results(p1, ref: bool) -> dict:
    pub, arms = PUBLISHED["phase1"], p1["arms"]
    return {
        "scarred_final_similarity": stat(arms["scarred"]["final"]["cosine"],
                                         pub["scarred_final_similarity"], ref),
        "control_final_similarity": stat(arms["control"]["final"]["cosine"],
                                         pub["control_final_similarity"], ref),
        "total_scar_strength": stat(p1["scar_strength"], bounds=None),
        "scarred_cells": stat(p1["scarred_cells"], bounds=None),
        "saturated_fraction": stat(p1["saturated_cells"] / p1["scarred_cells"].clamp_min(1)),
        "scarred_final_iou": stat(arms["scarred"]["final"]["iou"]),
        "control_final_iou": stat(arms["control"]["final"]["iou"]),
    }


def phase2_results(p2, ref: bool) -> dict:
    pub, arms, cue = PUBLISHED["phase2"], p2["arms"], p2["cue_metrics"]
    sc, ct = arms["scarred"]["final"]["cosine"], arms["control"]["final"]["cosine"]
    out = {
        "scarred_recall_quality": stat(sc, pub["scarred_recall_quality"], ref),
        "control_recall_quality": stat(ct, pub["control_recall_quality"], ref),
        "improvement_ratio": stat(sc / ct.clamp_min(0.01), pub["improvement_ratio"], ref,
                                  bounds=None),
        "uncued_recall_quality": stat(arms["uncued"]["final"]["cosine"], method="bootstrap_bca"),
        "control_uncued_recall_quality": stat(arms["control_uncued"]["final"]["cosine"],
                                              method="bootstrap_bca"),
        "cue_similarity": stat(cue["cosine"]),
        "scarred_gain_over_cue": stat(sc - cue["cosine"], bounds=(-1.0, 1.0)),
        "control_gain_over_cue": stat(ct - cue["cosine"], bounds=(-1.0, 1.0)),
    }
    for m in ("iou", "pearson"):
        b = metrics.BOUNDS[m]
        for arm in ("scarred", "control", "uncued"):
            out[f"{arm}_recall_{m}"] = stat(arms[arm]["final"][m], bounds=b,
                                            method="bootstrap_bca" if arm == "uncued" else "t")
        out[f"cue_{m}"] = stat(cue[m], bounds=b)
    return out


def phase3_results(p3, targets, ref: bool) -> dict:
    names, pub = list(targets), PUBLISHED["phase3"]
    sc, ct = p3["arms"]["scarred"]["matrix"], p3["arms"]["control"]["matrix"]
    own = {m: sc[m].diagonal(dim1=1, dim2=2) for m in METRICS}          # (S, P)
    own_ct = ct["cosine"].diagonal(dim1=1, dim2=2)
    cue_own = p3["cue_matrix"]["cosine"].diagonal(dim1=1, dim2=2)
    per = lambda x, i: x[:, i]   # noqa: E731  (one pattern's column over seeds)
    return {
        "pattern_recall_qualities": {n: stat(per(own["cosine"], i),
                                             pub["pattern_recall_qualities"], ref)
                                     for i, n in enumerate(names)},
        "average_recall": stat(own["cosine"].mean(1)),
        "min_recall": stat(own["cosine"].min(1).values, pub["min_recall"], ref),
        "control_recall_qualities": {n: stat(per(own_ct, i)) for i, n in enumerate(names)},
        "cue_similarities": {n: stat(per(cue_own, i)) for i, n in enumerate(names)},
        "recall_iou": {n: stat(per(own["iou"], i)) for i, n in enumerate(names)},
        "recall_pearson": {n: stat(per(own["pearson"], i), bounds=(-1.0, 1.0))
                           for i, n in enumerate(names)},
        "cross_similarity": {"cues": names, "patterns": names,
                             "mean": sc["cosine"].mean(0)},
        "discrimination": stat(metrics.discrimination_per_seed(sc["cosine"]), bounds=(-1.0, 1.0)),
        "scar_strength_after_each": {n: stat(s, bounds=None)
                                     for n, s in zip(names, p3["strength_after"])},
        "target_overlap_iou": {f"{a}~{b}": float(metrics.iou(targets[a], targets[b]))
                               for i, a in enumerate(names) for b in names[i + 1:]},
    }


def degenerate_warnings(p1, p2, p3, seeds) -> list[str]:
    """Runs that silently did nothing or collapsed, said plainly."""
    warnings = []
    unscarred = [s for s, n in zip(seeds, p1["scarred_cells"].tolist()) if n == 0]
    if unscarred:
        warnings.append(f"phase 1: no cell was scarred in seeds {unscarred} (the similarity "
                        f"never passed the gate, or no cell matched): nothing was stored")
    fields = {f"phase 1 {a}": r["V"] for a, r in p1["arms"].items()}
    fields.update({f"phase 2 {a}": r["V"] for a, r in p2["arms"].items()})
    fields.update({f"phase 3 {a}": r["V"].flatten(0, 1) for a, r in p3["arms"].items()})
    for label, V in fields.items():
        flat = V.flatten(1)
        for kind, bad in (("all zero", flat.amax(1) == 0), ("all one", flat.amin(1) == 1)):
            if bad.any():
                warnings.append(f"{label}: V is {kind} in {int(bad.sum())} of {len(bad)} "
                                f"members at the end (the medium died out or saturated)")
    return warnings


def build_results(args, rule, seeds, device, targets, p1, p2, p3, wall) -> dict:
    # the published figures are of square_spots at 256 x 256
    ref = args.grid == REFERENCE_GRID and not args.quick and (
        args.pattern == REFERENCE.pattern or args.target_image is not None)
    results = {**cli.envelope(args, seeds, device, wall),
               "phase1": phase1_results(p1, ref), "phase2": phase2_results(p2, ref),
               "phase3": phase3_results(p3, targets, ref), "reference_scale": ref}
    results["success_criteria"] = [
        {"criterion": label, "threshold": threshold, "mean": results[ph][key]["mean"],
         "passed": results[ph][key]["mean"] > threshold,
         "passed_at_ci95_low": (results[ph][key]["ci95_low"] > threshold
                                if results[ph][key]["ci95_low"] is not None else None)}
        for label, ph, key, threshold in CRITERIA] if ref else []
    results["warnings"] = degenerate_warnings(p1, p2, p3, seeds)
    results["curves"] = {
        "phase1_steps": p1["arms"]["scarred"]["curve"]["steps"],
        **{f"phase1_{a}": p1["arms"][a]["curve"]["similarity"] for a in ("scarred", "control")},
        "phase2_steps": p2["arms"]["scarred"]["curve"]["steps"],
        **{f"phase2_{a}": p2["arms"][a]["curve"]["similarity"]
           for a in ("scarred", "control", "uncued", "control_uncued")}}
    results["config"]["scar_rule"] = rule.as_dict()
    results["config"]["phase3_patterns"] = list(targets)
    results["config"]["noise_draws"] = {k: {"role": r, "first_index": i}
                                        for k, (r, i) in NOISE.items()}
    return results


def print_summary(results) -> None:
    p1, p2, p3 = results["phase1"], results["phase2"], results["phase3"]
    rows = [("phase 1", "scarred final similarity", p1["scarred_final_similarity"]),
            ("phase 1", "control final similarity", p1["control_final_similarity"]),
            ("phase 1", "total scar strength", p1["total_scar_strength"]),
            ("phase 2", "cue similarity at step 0", p2["cue_similarity"]),
            ("phase 2", "scarred recall quality", p2["scarred_recall_quality"]),
            ("phase 2", "control recall quality", p2["control_recall_quality"]),
            ("phase 2", "uncued recall (scarred, no cue)", p2["uncued_recall_quality"]),
            ("phase 2", "improvement ratio", p2["improvement_ratio"])]
    rows += [("phase 3", f"recall {n}", s) for n, s in p3["pattern_recall_qualities"].items()]
    rows += [("phase 3", "average recall", p3["average_recall"]),
             ("phase 3", "min recall", p3["min_recall"]),
             ("phase 3", "discrimination index", p3["discrimination"])]
    n = p1["scarred_final_similarity"]["n"]
    ref = results["reference_scale"]
    print(f"\n{'':8}{'metric':34}{'ours: mean [95% CI], n=' + str(n):34}"
          f"{'published' if ref else ''}")
    for phase, name, s in rows:
        pub = s.get("published")
        pub = "" if not ref else "-" if pub is None else (
            f"{pub:.3f}" if isinstance(pub, float) else str(pub))
        shown = (f"{s['mean']:.3f} (every seed: n = 1)" if s.get("std") == 0
                 else stats.format_stat(s))   # a deterministic figure has no spread
        print(f"{phase:8}{name:34}{shown:34}{pub}")
    print()
    grid, pattern = results["config"]["grid"], results["config"]["pattern"]
    if not ref and grid == REFERENCE_GRID and not results["smoke_run"]:
        print(f"  --pattern {pattern}: the published figures and success criteria are those "
              f"of {REFERENCE.pattern} (phases 1-2)")
    elif not ref:
        print(f"  SMOKE RUN at {grid}x{grid}{' (--quick)' if results['smoke_run'] else ''}: "
              f"the published figures and success criteria apply at "
              f"{REFERENCE_GRID}x{REFERENCE_GRID} only")
    for c in results["success_criteria"]:
        print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['criterion']}: mean {c['mean']:.3f}")
    for w in results["warnings"]:
        print(f"  WARNING: {w}")


# ---- the run's files: fields.npz is a saved state (common/state.py) ----------------------

STATE_KEYS = {"V": "phase1_scarred_V", "F": "phase1_F", "K": "phase1_K"}


def run_fields(target, targets, p1, p2, p3) -> dict:
    """Every array the figures need, on the CPU: the targets, the final V of every arm
    (seeds first), the cues, the scarred F and K, and the videos' frame stacks."""
    a = {"target": target, "phase3_targets": torch.stack(list(targets.values()))}
    a.update({f"phase1_{arm}_V": r["V"] for arm, r in p1["arms"].items()})
    a.update({f"phase2_{arm}_V": r["V"] for arm, r in p2["arms"].items()})
    a.update({f"phase3_{arm}_V": r["V"] for arm, r in p3["arms"].items()})
    a.update(phase1_F=p1["F"], phase1_K=p1["K"], phase3_F=p3["F"], phase3_K=p3["K"],
             phase2_cue=p2["cue"], phase3_cues=p3["cues"],
             frames_phase1_scarred=p1["arms"]["scarred"]["frames"][:, 0],
             frames_phase1_control=p1["arms"]["control"]["frames"][:, 0],
             frames_phase2_scarred=p2["frames"]["scarred"],
             frames_phase2_control=p2["frames"]["control"])
    return {k: v.detach().cpu() for k, v in a.items()}


def save_fields_state(path, args, rule, seeds, fields, U, step: int, frames: bool) -> None:
    """fields.npz: the phase-1 scarred medium (U, V, F, K, its step count) as a state file
    that --init-from and GrayScott.load read, the other arrays of run_fields as its extras
    (frame stacks only with --save-frames)."""
    from common.state import save_state

    p = protocol_of(args)
    extra = {k: v for k, v in fields.items() if k not in STATE_KEYS.values()
             and (frames or not k.startswith("frames_"))}
    save_state(path, U=U, **{k: fields[v] for k, v in STATE_KEYS.items()}, step=step,
               seeds=seeds, rule=rule.as_dict(), protocol=dataclasses.asdict(p),
               substrate={**p.substrate(), "clamp": True}, extra=extra)


def fields_of_state(state) -> dict:
    """run_fields' arrays back from a loaded fields.npz."""
    return {**state["extra"], **{v: state[k] for k, v in STATE_KEYS.items()}}


def replot(args) -> None:
    """Redraw every figure of a finished run from its results.json and fields.npz."""
    import json
    import shutil
    from pathlib import Path

    from common import figures
    from common.state import load_state

    run = Path(args.replot)
    if not (run / "results.json").is_file() or not (run / "fields.npz").is_file():
        raise FileNotFoundError(f"--replot {run}: needs results.json and fields.npz of a "
                                f"finished run of this script")
    try:
        results = json.loads((run / "results.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--replot {run}/results.json: not valid JSON ({exc})") from None
    if not isinstance(results, dict) or results.get("study") != Args.study:
        raise ValueError(f"--replot {run}/results.json: not a results file of {Args.study}")
    fields = fields_of_state(load_state(run / "fields.npz"))
    out = Path(args.out) if args.out is not None else run
    frames = "frames_phase1_scarred" in fields and not args.no_video
    with cli.staged_output(out, Args.study) as stage:
        for f in run.iterdir():   # the run's own files stay; figures are redrawn over them
            if f.is_file() and f.name != cli.MARKER:
                shutil.copy2(f, stage / f.name)
        figures.write_all(stage, results, fields, video=frames)
    print(f"redrew the figures of {run}/ into {out}/ ({args.format}"
          f"{', and the videos' if frames else ''}); nothing was simulated")


def load_targets(args, dtype):
    """The phase 1-2 target and the phase-3 targets, on the CPU."""
    if args.target_image:
        target = patterns.load_image_pattern(args.target_image, args.grid, args.grid, dtype=dtype)
    else:
        target = patterns.make_pattern(args.pattern, args.grid, args.grid, dtype=dtype)
    target = patterns.check_target(target, args.grid, args.grid)
    return target, patterns.phase3_targets(args.grid, dtype=dtype)


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n\n")[0], quick=QUICK)
    if args.replot is not None:
        cli.start(args, announce=False)
        return replot(args)
    seeds, device = cli.start(args)
    init = args.saved_state()
    study = scarring.Study(protocol_of(args), device, initial=init)
    target, targets = load_targets(args, study.dtype)   # memory: checked by cli.start
    target, targets = target.to(device), {k: v.to(device) for k, v in targets.items()}
    t0 = time.perf_counter()
    print(f"phase 1: {args.train_steps} steps training, scarred and control")
    p1 = phase1(study, target, seeds)
    print(f"phase 2: {args.recall_steps} steps recall from a {args.cue_strength:.0%} cue")
    p2 = phase2(study, target, p1["F"], p1["K"], seeds)
    print(f"phase 3: {args.multi_train_steps} steps training per pattern x {len(targets)}, "
          f"{args.multi_recall_steps} steps recall")
    p3 = phase3(study, targets, seeds)
    wall = time.perf_counter() - t0
    results = build_results(args, study.rule, seeds, device, targets, p1, p2, p3, wall)
    from common import figures   # plotting and video at the edge, imported only when needed
    fields = run_fields(target, targets, p1, p2, p3)
    step = (init["step"] if init is not None else 0) + args.train_steps
    with cli.staged_output(args.out_dir(), Args.study) as out:
        figures.write_all(out, results, fields, video=not args.no_video)
        save_fields_state(out / "fields.npz", args, study.rule, seeds, fields,
                          p1["arms"]["scarred"]["U"], step, args.save_frames)
        cli.write_json_atomic(out / "results.json", results)
    print_summary(results)
    print(f"\nsimulation wall time {wall:.1f} s; results in {args.out_dir()}/results.json")


if __name__ == "__main__":
    cli.run_cli(main)
