"""Parametric scarring: the reference study's phases 1-3, over several seeds at once.

    python scarring_validation.py                 # 8 seeds, 256 x 256, writes scarring_results/
    python scarring_validation.py --quick         # seconds: small grid, few steps
    python scarring_validation.py --help          # every constant below is a flag

Phase 1  train square_spots 1000 steps WITH scarring; the control trains the same start
         WITHOUT scarring. Final similarity of both, and the scar strength.
Phase 2  recall from a weak cue (s = 0.15) for 500 steps on the scarred F/K and on the
         default F/K (control); also on the scarred F/K with NO cue (noise only), which
         tells whether the cue matters at all.
Phase 3  scar A (spots offset by -64,-64), B (ring), C (line) in turn, 500 steps each,
         then recall each from a s = 0.20 cue for 300 steps (and the same cues on default
         F/K as the control).

Every seed is one batch member: the seeds of an arm (and in phases 2-3 all arms) run in one
tensor.
Recall figures are reported beside the similarity of their own cue at step 0 (cosine
ignores scale, so a cue already scores high) and beside IoU and Pearson.
The constants and steps are those of ../shared/PROTOCOL.md.
"""
from __future__ import annotations

import argparse
import time

import torch

import substrate
from common.cli import (
    add_common_args,
    environment_info,
    prepare_out_dir,
    resolve_device,
    run_cli,
    seed_list,
    write_json_atomic,
)
from metrics import (
    cosine_similarity,
    discrimination_index,
    format_stat,
    iou,
    pearson,
    summarize,
)
from patterns import check_target, load_image_pattern, make_cue, make_pattern
from scarring import ScarRule, evolve, scar_strength

# ---- the protocol's constants (each one is a command-line flag of the same name) ----------
GRID = 256                 # H = W
F0 = substrate.F0          # 0.037 default feed
K0 = substrate.K0          # 0.060 default kill
DU, DV = substrate.DU, substrate.DV   # 0.16, 0.08
DT = substrate.DT          # 1.0
DECAY = substrate.DECAY    # 0.9995, V decay every step
STENCIL = "nine_point"     # reference 3x3 stencil; "five_point" is the plain Laplacian
SCAR_STRENGTH = 0.003      # F += strength on matched cells ...
K_RATIO = 0.5              # ... K -= K_RATIO * strength
MATCH_THRESHOLD = 0.3      # a cell matches when V > 0.3 and target > 0.3
GATE = 0.5                 # scar only while the similarity to the target is above this
F_MIN, F_MAX, K_MIN, K_MAX = 0.01, 0.08, 0.03, 0.08
TRAIN_STEPS = 1000         # phase 1, each arm
TRAIN_INIT_STRENGTH = 0.2  # training start V = clamp(0.2 * target + N(0, 0.1^2))
TRAIN_NOISE = 0.1
RECALL_STEPS = 500         # phase 2
CUE_STRENGTH = 0.15        # phase 2 cue V = clamp(0.15 * target + N(0, 0.05^2))
CUE_NOISE = 0.05
MULTI_TRAIN_STEPS = 500    # phase 3, per pattern
MULTI_RECALL_STEPS = 300
MULTI_CUE_STRENGTH = 0.20
SEEDS = 8
RECORD_EVERY = 10          # similarity curves sampled every this many steps

# --quick: a smoke-test run (the physics is the same; the grid and step counts shrink)
QUICK = dict(grid=64, train_steps=200, recall_steps=100, multi_train_steps=100,
             multi_recall_steps=60, seeds=2)

# The published single-run figures (PROTOCOL.md "Published figures"); None = not published.
PUBLISHED = {
    "phase1": {"scarred_final_similarity": 0.515, "control_final_similarity": 0.118,
               "total_scar_strength": None},
    "phase2": {"scarred_recall_quality": 0.933, "control_recall_quality": 0.326,
               "improvement_ratio": 2.86},
    "phase3": {"pattern_recall_qualities": "each > 0.80 (claimed)", "average_recall": None,
               "min_recall": "> 0.80 (claimed)"},
}
CRITERIA = [  # the study's printed success criteria, judged on our means
    ("phase2 scarred recall > 0.7", "phase2", "scarred_recall_quality", 0.7),
    ("improvement ratio > 1.5", "phase2", "improvement_ratio", 1.5),
    ("phase3 minimum recall > 0.5", "phase3", "min_recall", 0.5),
]
PHASE3_PATTERNS = ("A_square_spots", "B_ring", "C_line")

# Each random draw has its own noise stream per seed, so a seed gives the same run alone
# or inside a batch: generator seed = seed + STREAM * stream_index.
STREAM = 100_000


def noise_seeds(seeds, stream: int):
    return [s + STREAM * stream for s in seeds]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p, default_out="scarring_results", default_seeds=SEEDS)
    p.set_defaults(seeds=None)
    g = p.add_argument_group("substrate")
    g.add_argument("--grid", type=int, default=GRID, help="grid size H = W")
    g.add_argument("--f0", type=float, default=F0, help="default feed F")
    g.add_argument("--k0", type=float, default=K0, help="default kill K")
    g.add_argument("--du", type=float, default=DU, help="U diffusion")
    g.add_argument("--dv", type=float, default=DV, help="V diffusion")
    g.add_argument("--dt", type=float, default=DT, help="time step")
    g.add_argument("--decay", type=float, default=DECAY, help="V decay per step (1 = off)")
    g.add_argument("--stencil", default=STENCIL, choices=sorted(substrate.STENCILS))
    g.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    g = p.add_argument_group("scar rule")
    g.add_argument("--scar-strength", type=float, default=SCAR_STRENGTH, help="F increment")
    g.add_argument("--k-ratio", type=float, default=K_RATIO, help="K decrement / F increment")
    g.add_argument("--match-threshold", type=float, default=MATCH_THRESHOLD)
    g.add_argument("--gate", type=float, default=GATE, help="similarity gate for scarring")
    g = p.add_argument_group("protocol")
    g.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    g.add_argument("--train-init-strength", type=float, default=TRAIN_INIT_STRENGTH)
    g.add_argument("--train-noise", type=float, default=TRAIN_NOISE)
    g.add_argument("--recall-steps", type=int, default=RECALL_STEPS)
    g.add_argument("--cue-strength", type=float, default=CUE_STRENGTH)
    g.add_argument("--cue-noise", type=float, default=CUE_NOISE)
    g.add_argument("--multi-train-steps", type=int, default=MULTI_TRAIN_STEPS)
    g.add_argument("--multi-recall-steps", type=int, default=MULTI_RECALL_STEPS)
    g.add_argument("--multi-cue-strength", type=float, default=MULTI_CUE_STRENGTH)
    g.add_argument("--record-every", type=int, default=RECORD_EVERY)
    g = p.add_argument_group("output")
    g.add_argument("--no-video", action="store_true", help="skip the MP4s")
    g.add_argument("--target-image", default=None,
                   help="grayscale PNG/JPG used as the phase 1-2 target (bright = pattern)")
    args = p.parse_args(argv)
    if args.quick:  # shrink whatever the user did not set explicitly
        for key, value in QUICK.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    if args.seeds is None:
        args.seeds = SEEDS
    return args


def validate(args) -> None:
    """Clear errors for values the protocol cannot run with (before any output)."""
    if args.grid < 16:
        raise ValueError(f"--grid {args.grid}: must be >= 16")
    substrate.check_stability(args.du, args.dv, args.dt, args.stencil)
    if not 0.0 <= args.decay <= 1.0:
        raise ValueError(f"--decay {args.decay}: must be in [0, 1] (1 = off)")
    if not F_MIN <= args.f0 <= F_MAX:
        raise ValueError(f"--f0 {args.f0}: must lie in the scar clamp range [{F_MIN}, {F_MAX}]")
    if not K_MIN <= args.k0 <= K_MAX:
        raise ValueError(f"--k0 {args.k0}: must lie in the scar clamp range [{K_MIN}, {K_MAX}]")
    for name in ("train_steps", "recall_steps", "multi_train_steps", "multi_recall_steps",
                 "record_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    for name in ("cue_strength", "multi_cue_strength", "train_init_strength"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be in [0, 1]")
    for name in ("train_noise", "cue_noise", "scar_strength", "k_ratio"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 0")
    if not 0.0 <= args.match_threshold <= 1.0:
        raise ValueError(f"--match-threshold {args.match_threshold}: must be in [0, 1]")


# ---- the experiment -------------------------------------------------------------------


class Study:
    """The protocol's substrate and scar rule for one configuration."""

    def __init__(self, args, device, dtype):
        self.args, self.device, self.dtype = args, device, dtype
        self.rule = ScarRule(strength=args.scar_strength, k_ratio=args.k_ratio,
                             match_threshold=args.match_threshold, gate=args.gate,
                             F_min=F_MIN, F_max=F_MAX, K_min=K_MIN, K_max=K_MAX)

    def medium(self, batch, F=None, K=None):
        a = self.args
        shape = (batch, a.grid, a.grid)
        F = torch.full(shape, a.f0, device=self.device, dtype=self.dtype) if F is None else F
        K = torch.full(shape, a.k0, device=self.device, dtype=self.dtype) if K is None else K
        return substrate.GrayScott(a.grid, a.grid, batch=batch, F=F, K=K, Du=a.du, Dv=a.dv,
                                   dt=a.dt, decay=None if a.decay == 1.0 else a.decay,
                                   stencil=a.stencil, device=self.device, dtype=self.dtype)

    def evolve(self, gs, target, steps, scar_members=None, frames=None, label=None):
        rule = self.rule if scar_members is not None else None
        frame_every = max(1, steps // 100) if frames else None
        return evolve(gs, target, steps, rule=rule, scar_members=scar_members,
                      record_every=self.args.record_every, frame_every=frame_every,
                      frame_members=frames or (0,), progress=label)


def final_metrics(V, target) -> dict:
    return {"cosine": cosine_similarity(V, target).cpu(), "iou": iou(V, target).cpu(),
            "pearson": pearson(V, target).cpu()}


def phase1(study: Study, target, seeds) -> dict:
    """Train with scarring, and the control without, from the same starts.
    Returned tensors stack the arms: members 0..S-1 scarred, S..2S-1 control."""
    a, S = study.args, len(seeds)
    start = make_cue(target, a.train_init_strength, a.train_noise, noise_seeds(seeds, 0))
    runs, finals = [], []
    # the two arms run as two batches: each fits the CPU cache better than one of 2S, and
    # the control then runs the plain step instead of the scar kernel
    for arm, scar in (("scarred", torch.ones(S, dtype=torch.bool)), ("control", None)):
        gs = study.medium(S)
        gs.reset(V=start)
        runs.append(study.evolve(gs, target, a.train_steps, scar_members=scar, frames=(0,),
                                 label=f"phase 1: training, {arm}"))
        finals.append((gs.V, gs.F, gs.K))
        if scar is not None:
            F, K = gs.F.clone(), gs.K.clone()
    V = torch.cat([v for v, _, _ in finals])
    run = {"steps": runs[0]["steps"],
           "similarity": torch.cat([r["similarity"] for r in runs], 1),
           "frames": torch.cat([r["frames"] for r in runs], 1)}
    return {"run": run, "final": final_metrics(V, target), "F": F, "K": K, "V": V.cpu(),
            "scar_strength": scar_strength(F, K, a.f0, a.k0).cpu(),
            "scarred_cells": ((F != a.f0) | (K != a.k0)).flatten(1).sum(1).cpu(),
            "saturated_cells": ((F == F_MAX) & (K == K_MIN)).flatten(1).sum(1).cpu()}


def phase2(study: Study, target, F, K, seeds) -> dict:
    """Recall from the cue on scarred F/K, on default F/K, and with no cue on scarred F/K."""
    a, S = study.args, len(seeds)
    cue = make_cue(target, a.cue_strength, a.cue_noise, noise_seeds(seeds, 1))
    no_cue = make_cue(target, 0.0, a.cue_noise, noise_seeds(seeds, 2))
    default_F = torch.full_like(F, a.f0)
    default_K = torch.full_like(K, a.k0)
    gs = study.medium(3 * S, F=torch.cat([F, default_F, F]), K=torch.cat([K, default_K, K]))
    gs.reset(V=torch.cat([cue, cue, no_cue]))
    run = study.evolve(gs, target, a.recall_steps, frames=(0, S), label="phase 2: recall")
    return {"run": run, "final": final_metrics(gs.V, target), "V": gs.V.cpu(),
            "cue": cue.cpu(), "cue_metrics": final_metrics(cue, target)}


def phase3(study: Study, targets, seeds) -> dict:
    """Scar A, B, C in turn into the same F/K; recall each (scarred and default F/K)."""
    a, S, P = study.args, len(seeds), len(targets)
    gs = study.medium(S)
    strength_after = []
    for i, (name, target) in enumerate(targets.items()):
        start = make_cue(target, a.train_init_strength, a.train_noise, noise_seeds(seeds, 3 + i))
        gs.reset(V=start)
        study.evolve(gs, target, a.multi_train_steps, scar_members=torch.ones(S, dtype=torch.bool),
                     label=f"phase 3: training {name}")
        strength_after.append(scar_strength(gs.F, gs.K, a.f0, a.k0).cpu())
    F, K = gs.F.clone(), gs.K.clone()
    # recall batch: [pattern 0 seeds..., pattern 1 seeds..., ...] scarred, then the same on
    # default F/K (the control)
    stacked = torch.stack(list(targets.values()))                       # (P, H, W)
    per_member = stacked.repeat_interleave(S, 0)                        # (P*S, H, W)
    cues = torch.cat([make_cue(t, a.multi_cue_strength, a.cue_noise, noise_seeds(seeds, 6 + i))
                      for i, t in enumerate(stacked)])
    recall = study.medium(2 * P * S, F=torch.cat([F.repeat(P, 1, 1), torch.full_like(F.repeat(P, 1, 1), a.f0)]),
                          K=torch.cat([K.repeat(P, 1, 1), torch.full_like(K.repeat(P, 1, 1), a.k0)]))
    recall.reset(V=torch.cat([cues, cues]))
    both = torch.cat([per_member, per_member])
    run = study.evolve(recall, both, a.multi_recall_steps, label="phase 3: recall")
    final = final_metrics(recall.V, both)
    # cross-similarity: recall from cue i (scarred) compared with every target j
    scarred_V = recall.V[:P * S]
    cross = torch.stack([cosine_similarity(scarred_V, t) for t in stacked], 1)   # (P*S, P)
    cross = cross.view(P, S, P).permute(1, 0, 2).cpu()                             # (S, P, P)
    return {"run": run, "final": final, "V": recall.V.cpu(), "cues": cues.cpu(), "F": F, "K": K,
            "cue_metrics": final_metrics(cues, per_member), "cross": cross,
            "strength_after": strength_after}


# ---- results ----------------------------------------------------------------------------


def stat(values, published=None) -> dict:
    s = summarize(values)
    s["published"] = published
    return s


def split(x, parts):
    """(parts * S,) -> list of `parts` tensors of shape (S,)."""
    return list(x.view(parts, -1))


def build_results(args, rule, seeds, device, targets, p1, p2, p3, wall) -> dict:
    S, names = len(seeds), list(targets)
    pub1, pub2, pub3 = PUBLISHED["phase1"], PUBLISHED["phase2"], PUBLISHED["phase3"]
    sc1, ct1 = split(p1["final"]["cosine"], 2)
    phase1_res = {
        "scarred_final_similarity": stat(sc1, pub1["scarred_final_similarity"]),
        "control_final_similarity": stat(ct1, pub1["control_final_similarity"]),
        "total_scar_strength": stat(p1["scar_strength"], pub1["total_scar_strength"]),
        "scarred_cells": stat(p1["scarred_cells"]),
        "saturated_fraction": stat(p1["saturated_cells"] / p1["scarred_cells"].clamp_min(1)),
        "scarred_final_iou": stat(split(p1["final"]["iou"], 2)[0]),
        "control_final_iou": stat(split(p1["final"]["iou"], 2)[1]),
    }
    f2 = p2["final"]
    sc2, ct2, nc2 = split(f2["cosine"], 3)
    phase2_res = {
        "scarred_recall_quality": stat(sc2, pub2["scarred_recall_quality"]),
        "control_recall_quality": stat(ct2, pub2["control_recall_quality"]),
        "improvement_ratio": stat(sc2 / ct2.clamp_min(0.01), pub2["improvement_ratio"]),
        "uncued_recall_quality": stat(nc2),
        "cue_similarity": stat(p2["cue_metrics"]["cosine"]),
        "scarred_gain_over_cue": stat(sc2 - p2["cue_metrics"]["cosine"]),
        "control_gain_over_cue": stat(ct2 - p2["cue_metrics"]["cosine"]),
    }
    for metric in ("iou", "pearson"):
        sc, ct, nc = split(f2[metric], 3)
        phase2_res[f"scarred_recall_{metric}"] = stat(sc)
        phase2_res[f"control_recall_{metric}"] = stat(ct)
        phase2_res[f"uncued_recall_{metric}"] = stat(nc)
        phase2_res[f"cue_{metric}"] = stat(p2["cue_metrics"][metric])
    P = len(names)
    f3 = p3["final"]
    sc3 = f3["cosine"][:P * S].view(P, S)
    ct3 = f3["cosine"][P * S:].view(P, S)
    cue3 = p3["cue_metrics"]["cosine"].view(P, S)
    cross_mean = p3["cross"].mean(0)
    phase3_res = {
        "pattern_recall_qualities": {n: stat(sc3[i], pub3["pattern_recall_qualities"])
                                     for i, n in enumerate(names)},
        "average_recall": stat(sc3.mean(0), pub3["average_recall"]),
        "min_recall": stat(sc3.min(0).values, pub3["min_recall"]),
        "control_recall_qualities": {n: stat(ct3[i]) for i, n in enumerate(names)},
        "cue_similarities": {n: stat(cue3[i]) for i, n in enumerate(names)},
        "recall_iou": {n: stat(f3["iou"][:P * S].view(P, S)[i]) for i, n in enumerate(names)},
        "recall_pearson": {n: stat(f3["pearson"][:P * S].view(P, S)[i])
                           for i, n in enumerate(names)},
        "cross_similarity": {"cues": names, "patterns": names, "mean": cross_mean},
        "discrimination": stat([discrimination_index(m) for m in p3["cross"]]),
        "scar_strength_after_each": {n: stat(s) for n, s in zip(names, p3["strength_after"])},
        "target_overlap_iou": {f"{names[i]}~{names[j]}": float(iou(targets[names[i]], targets[names[j]]))
                               for i in range(P) for j in range(i + 1, P)},
    }
    results = {"schema_version": 1, "phase1": phase1_res, "phase2": phase2_res,
               "phase3": phase3_res}
    criteria = []
    for label, phase, key, threshold in CRITERIA:
        s = results[phase][key]
        criteria.append({"criterion": label, "threshold": threshold, "mean": s["mean"],
                         "passed": s["mean"] > threshold,
                         "passed_at_ci95_low": (s["ci95_low"] > threshold
                                                if s["ci95_low"] is not None else None)})
    results["success_criteria"] = criteria
    results["curves"] = {
        "phase1_steps": p1["run"]["steps"], "phase1_scarred": p1["run"]["similarity"][:, :S],
        "phase1_control": p1["run"]["similarity"][:, S:],
        "phase2_steps": p2["run"]["steps"], "phase2_scarred": p2["run"]["similarity"][:, :S],
        "phase2_control": p2["run"]["similarity"][:, S:2 * S],
        "phase2_uncued": p2["run"]["similarity"][:, 2 * S:],
    }
    results["config"] = {k: v for k, v in vars(args).items()}
    results["config"]["scar_rule"] = rule.as_dict()
    results["config"]["phase3_patterns"] = names
    results["config"]["noise_streams"] = (
        f"generator seed = seed + {STREAM} * stream; streams 0 phase-1 start, 1 phase-2 cue, "
        "2 phase-2 no-cue noise, 3-5 phase-3 training starts, 6-8 phase-3 cues")
    results["seeds"] = seeds
    results["environment"] = environment_info(device)
    results["wall_time_s"] = wall
    return results


def print_summary(results) -> None:
    rows = [("phase 1", "scarred final similarity", results["phase1"]["scarred_final_similarity"]),
            ("phase 1", "control final similarity", results["phase1"]["control_final_similarity"]),
            ("phase 1", "total scar strength", results["phase1"]["total_scar_strength"]),
            ("phase 2", "cue similarity at step 0", results["phase2"]["cue_similarity"]),
            ("phase 2", "scarred recall quality", results["phase2"]["scarred_recall_quality"]),
            ("phase 2", "control recall quality", results["phase2"]["control_recall_quality"]),
            ("phase 2", "uncued recall (scarred, no cue)", results["phase2"]["uncued_recall_quality"]),
            ("phase 2", "improvement ratio", results["phase2"]["improvement_ratio"])]
    for name, s in results["phase3"]["pattern_recall_qualities"].items():
        rows.append(("phase 3", f"recall {name}", s))
    rows += [("phase 3", "average recall", results["phase3"]["average_recall"]),
             ("phase 3", "min recall", results["phase3"]["min_recall"]),
             ("phase 3", "discrimination index", results["phase3"]["discrimination"])]
    n = results["phase1"]["scarred_final_similarity"]["n"]
    print(f"\n{'':8}{'metric':34}{'ours: mean [95% CI], n=' + str(n):34}published")
    for phase, name, s in rows:
        pub = s.get("published")
        pub = "-" if pub is None else (f"{pub:.3f}" if isinstance(pub, float) else str(pub))
        print(f"{phase:8}{name:34}{format_stat(s):34}{pub}")
    print()
    for c in results["success_criteria"]:
        print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['criterion']}: mean {c['mean']:.3f}")


def main(argv=None):
    args = parse_args(argv)
    validate(args)
    seeds = seed_list(args)
    device = resolve_device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if args.target_image:
        target = load_image_pattern(args.target_image, args.grid, args.grid, dtype=dtype)
    else:
        target = make_pattern("square_spots", args.grid, args.grid, dtype=dtype)
    target = check_target(target, args.grid, args.grid).to(device)
    quarter = args.grid // 4   # the reference offset (-64, -64) on 256 x 256
    targets = {name: make_pattern(shape, args.grid, args.grid, offset=off, dtype=dtype).to(device)
               for name, shape, off in zip(PHASE3_PATTERNS, ("square_spots", "ring", "line"),
                                           ((-quarter, -quarter), (0, 0), (0, 0)))}
    out = prepare_out_dir(args.out)
    print(f"{len(seeds)} seeds on {device}, grid {args.grid}x{args.grid}, output -> {out}/")

    study = Study(args, device, dtype)
    t0 = time.perf_counter()
    print(f"phase 1: {args.train_steps} steps training, scarred and control")
    p1 = phase1(study, target, seeds)
    print(f"phase 2: {args.recall_steps} steps recall from a {args.cue_strength:.0%} cue")
    p2 = phase2(study, target, p1["F"], p1["K"], seeds)
    print(f"phase 3: {args.multi_train_steps} steps training per pattern x 3, "
          f"{args.multi_recall_steps} steps recall")
    p3 = phase3(study, targets, seeds)
    wall = time.perf_counter() - t0

    results = build_results(args, study.rule, seeds, device, targets, p1, p2, p3, wall)
    from common import (
        figures,  # plotting and video live at the edge, imported only when needed
    )
    figures.write_all(out, results, target.cpu(), {k: v.cpu() for k, v in targets.items()},
                      p1, p2, p3, video=not args.no_video)
    write_json_atomic(out / "results.json", results)   # last: its presence = a complete run
    print_summary(results)
    print(f"\nsimulation wall time {wall:.1f} s; results in {out}/results.json")


if __name__ == "__main__":
    run_cli(main)
