"""Learn the scar (per-cell F and K fields) by gradient, and compare with match-map scars.

Learned scars: minimise  sum_p (1 - cos(V_T(cue_p), pattern_p)) + LAMBDA * scar size
over per-cell fields F = F_min + (F_max - F_min) sigmoid(a), K likewise (the ScarRule
bounds, so F and K never leave them), starting from F0, K0; V_T is the reference
substrate (9-point stencil, decay, clamp) after RECALL_STEPS steps from a fresh noisy cue
each iteration; full BPTT with gradient checkpointing; Adam; a non-finite loss skips the
step and halves the learning rate.

Match-map scars: the reference rule (scarring.evolve with ScarRule()), trained on the same
patterns in order, TRAIN_STEPS each, scars accumulating (PROTOCOL.md phase 3).

Both are judged on held-out cues (seeds never used in training): recall quality (cosine
and IoU of the recall to its own pattern, beside the cue's own cosine at step 0), the cue
x pattern matrix and metrics.discrimination_index, scar size (scarring.scar_strength),
and a capacity curve over the number of stored patterns. Seeds run as one batch.

    python -m experiments.learned_scars --quick
    python -m experiments.learned_scars --seeds 3
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from common.cli import (
    add_common_args,
    environment_info,
    prepare_out_dir,
    resolve_device,
    run_cli,
    seed_list,
    write_json_atomic,
)
from metrics import cosine_similarity, discrimination_index, format_stat, iou, summarize
from models.adam import adam_state, adam_step
from models.differentiable import Physics, cosine, finite_members, rollout
from patterns import make_cue, make_pattern
from scarring import ScarRule, evolve, scar_strength
from substrate import DECAY, DU, DV, F0, K0, GrayScott

GRID = 64
PATTERN_LIST = ("square_spots", "ring", "line", "cross")  # stored in this order
SPOTS_OFFSET = -64 / 256   # phase 3 stores square_spots shifted by (-64, -64) on 256
CAPACITY = (1, 2, 3, 4)    # numbers of stored patterns for the capacity curve
MAIN_N = 3                 # the protocol's A, B, C
RECALL_STEPS = 200
CUE_STRENGTH = 0.2
CUE_NOISE = 0.05
TRAIN_START_STRENGTH, TRAIN_START_NOISE = 0.2, 0.1
TRAIN_STEPS = 500          # match-map training steps per pattern
ITERS = 40                 # gradient iterations for the learned scars
LR = 0.3                   # Adam, on the logits of F and K
LAMBDA = 1e-3              # penalty per unit of scar size
CHECKPOINT_EVERY = 50
TEST_CUES = 3              # held-out cues per pattern and seed
TEST_SEED_BASE = 10_000_000


def stored_patterns(n, grid):
    pats = []
    for name in PATTERN_LIST[:n]:
        off = (round(SPOTS_OFFSET * grid),) * 2 if name == "square_spots" else (0, 0)
        pats.append(make_pattern(name, grid, grid, offset=off))
    return torch.stack(pats)


def bounded(a, lo, hi):
    return lo + (hi - lo) * torch.sigmoid(a)


def logit_of(x, lo, hi):
    return float(np.log((x - lo) / (hi - x)))


def learn_scars(pats, seeds, args, physics, rule, log):
    """Per-seed learned (F, K) fields (S, H, W) for the stored patterns (P, H, W)."""
    S, P = len(seeds), len(pats)
    H, W = pats.shape[-2:]
    aF = torch.full((S, H, W), logit_of(F0, rule.F_min, rule.F_max), requires_grad=True)
    aK = torch.full((S, H, W), logit_of(K0, rule.K_min, rule.K_max), requires_grad=True)
    lr = args.lr
    moments = adam_state([aF, aK])
    n_steps = 0
    targets = pats.repeat(S, 1, 1)                         # (S*P, H, W), seed-major
    history = []
    from tqdm import tqdm
    for it in tqdm(range(args.iters), desc=f"learn {P} patterns", disable=None, leave=False):
        cue_seeds = [s * 100_003 + it * 97 + p for s in seeds for p in range(P)]
        V0 = make_cue(targets, args.cue_strength, CUE_NOISE, cue_seeds)
        U0 = torch.ones_like(V0)
        F = bounded(aF, rule.F_min, rule.F_max)
        K = bounded(aK, rule.K_min, rule.K_max)
        Fb = F.repeat_interleave(P, 0)
        Kb = K.repeat_interleave(P, 0)
        _, V = rollout(U0, V0, Fb, Kb, DU, DV, args.recall_steps, physics,
                       checkpoint_every=args.checkpoint_every)
        recall = (1 - cosine(V, targets)).view(S, P).sum(1)
        size = scar_strength(F, K)
        loss = recall + args.lam * size
        ok = finite_members(V).view(S, P).all(1) & torch.isfinite(loss)
        if not ok.all():
            lr *= 0.5
            log(f"NaN guard: iteration {it}: non-finite recall for seeds "
                f"{[seeds[i] for i in (~ok).nonzero().flatten().tolist()]}; step skipped, "
                f"lr -> {lr:.3g}")
            continue
        grads = torch.autograd.grad(loss.sum(), [aF, aK])
        n_steps += 1
        adam_step([aF, aK], grads, moments, n_steps, lr)
        history.append({"iteration": it, "loss": loss.detach().tolist(),
                        "recall_term": recall.detach().tolist(),
                        "scar_size": size.detach().tolist()})
    with torch.no_grad():
        return (bounded(aF, rule.F_min, rule.F_max), bounded(aK, rule.K_min, rule.K_max),
                history)


def match_map_scars(pats, seeds, args, rule):
    """Reference training: patterns in order, TRAIN_STEPS each, scars accumulating."""
    S = len(seeds)
    H, W = pats.shape[-2:]
    gs = GrayScott(H, W, batch=S, device="cpu")
    gs.F = torch.full((S, H, W), F0)
    gs.K = torch.full((S, H, W), K0)
    for p, pat in enumerate(pats):
        start = make_cue(pat, TRAIN_START_STRENGTH, TRAIN_START_NOISE,
                         [s * 7_919 + 1_000 + p for s in seeds])
        gs.reset(V=start)
        evolve(gs, pat, args.train_steps, rule=rule)
    return gs.F.clone(), gs.K.clone()


def recall_matrix(F, K, pats, seeds, args):
    """Recall from held-out cues with fields F, K (S, H, W): returns per seed the cue x
    pattern cosine matrix (S, P, P), own-pattern IoU (S, P) and the cues' own cosine at
    step 0 (S, P), each averaged over TEST_CUES cues."""
    S, P = len(seeds), len(pats)
    H, W = pats.shape[-2:]
    C = args.test_cues
    targets = pats.repeat_interleave(C, 0).repeat(S, 1, 1)          # (S*P*C, H, W)
    cue_seeds = [TEST_SEED_BASE + s * 1_000 + p * 10 + c
                 for s in seeds for p in range(P) for c in range(C)]
    cues = make_cue(targets, args.cue_strength, CUE_NOISE, cue_seeds)
    B = S * P * C
    gs = GrayScott(H, W, batch=B, device="cpu")
    gs.F = F.repeat_interleave(P * C, 0).clone()
    gs.K = K.repeat_interleave(P * C, 0).clone()
    gs.reset(V=cues)
    cue_cos = cosine_similarity(cues, targets).view(S, P, C).mean(2)
    gs.step(args.recall_steps)
    V = gs.V
    M = torch.stack([cosine_similarity(V, pats[j]) for j in range(P)], dim=1)  # (B, P)
    M = M.view(S, P, C, P).mean(2)
    own_iou = iou(V, targets).view(S, P, C).mean(2)
    return M, own_iou, cue_cos


def evaluate(label, F, K, pats, seeds, args):
    M, own_iou, cue_cos = recall_matrix(F, K, pats, seeds, args)
    own = M.diagonal(dim1=1, dim2=2)                   # (S, P)
    row = {"method": label, "n_patterns": len(pats),
           "recall_cosine": summarize(own.mean(1)),
           "recall_cosine_min": summarize(own.min(1).values),
           "recall_iou": summarize(own_iou.mean(1)),
           "cue_cosine_step0": summarize(cue_cos.mean(1)),
           "gain_over_cue": summarize((own - cue_cos).mean(1)),
           "scar_size": summarize(scar_strength(F, K)),
           "matrix_mean": M.mean(0).tolist()}
    if len(pats) >= 2:
        row["discrimination"] = summarize([discrimination_index(m) for m in M])
    return row


def plot(results, capacity, fields, path_main, path_cap):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [r["method"] for r in results]
    fig, axes = plt.subplots(2, len(methods), figsize=(3.2 * len(methods), 6.2))
    for c, r in enumerate(results):
        ax = axes[0][c]
        M = np.asarray(r["matrix_mean"])
        ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(M)):
            for j in range(len(M)):
                ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w")
        ax.set_xlabel("stored pattern")
        ax.set_ylabel("cue")
        d = r.get("discrimination")
        ax.set_title(f"{r['method']}\nrecall {r['recall_cosine']['mean']:.2f}"
                     + (f", discr. {d['mean']:.2f}" if d else ""), fontsize=8)
        ax = axes[1][c]
        F, K = fields[r["method"]]
        ax.imshow((F - F0).abs().numpy() + (K - K0).abs().numpy(), cmap="magma", vmin=0,
                  vmax=0.08)
        ax.set_title(f"|F-F0|+|K-K0| (seed 0)\nsize {r['scar_size']['mean']:.1f}",
                     fontsize=8)
        ax.axis("off")
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.18, top=0.85, wspace=0.45, hspace=0.5)
    fig.savefig(path_main, dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    for method, style in (("learned", "o-"), ("match_map", "s-"), ("no_scar", "x--")):
        pts = [r for r in capacity if r["method"] == method]
        ns = [r["n_patterns"] for r in pts]
        for a, key in ((ax[0], "recall_cosine"), (ax[1], "discrimination")):
            xs = [n for n, r in zip(ns, pts) if key in r]
            m = [r[key]["mean"] for r in pts if key in r]
            lo = [r[key]["mean"] - (r[key]["ci95_low"] if r[key]["ci95_low"] is not None
                                    else r[key]["mean"]) for r in pts if key in r]
            a.errorbar(xs, m, yerr=lo, fmt=style, capsize=3, label=method)
    ax[0].set_ylabel("recall cosine (own pattern)")
    ax[1].set_ylabel("discrimination index")
    for a in ax:
        a.set_xlabel("stored patterns")
        a.legend(fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.18, top=0.85, wspace=0.45, hspace=0.5)
    fig.savefig(path_cap, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "scarring_results/backprop/learned_scars", default_seeds=3)
    parser.add_argument("--grid", type=int, default=GRID)
    parser.add_argument("--recall-steps", type=int, default=RECALL_STEPS)
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--iters", type=int, default=ITERS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--lam", type=float, default=LAMBDA,
                        help=f"penalty per unit scar size (default {LAMBDA})")
    parser.add_argument("--cue-strength", type=float, default=CUE_STRENGTH)
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY)
    parser.add_argument("--test-cues", type=int, default=TEST_CUES)
    parser.add_argument("--capacity", default=",".join(map(str, CAPACITY)),
                        help="comma list of pattern counts (1..4) for the capacity curve")
    args = parser.parse_args(argv)
    if args.quick:
        args.grid, args.recall_steps, args.train_steps, args.iters = 32, 20, 40, 2
        args.test_cues, args.checkpoint_every = 1, 0  # see learn_parameters --quick
        if args.seeds == 3:
            args.seeds = 2
        if args.capacity == ",".join(map(str, CAPACITY)):
            args.capacity = "2,3"
    seeds = seed_list(args)
    device = resolve_device(args.device)
    if device.type != "cpu":
        print("note: runs on cpu; --device ignored", file=sys.stderr)
    capacity = sorted({int(x) for x in args.capacity.split(",") if x.strip()})
    if not capacity or min(capacity) < 1 or max(capacity) > len(PATTERN_LIST):
        raise ValueError(f"--capacity {args.capacity}: counts must be in 1..{len(PATTERN_LIST)}")
    for name in ("grid", "recall_steps", "train_steps", "iters", "test_cues"):
        if getattr(args, name) < (16 if name == "grid" else 1):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} is too small")
    if not args.lr > 0 or args.lam < 0 or not 0 < args.cue_strength <= 1:
        raise ValueError("need --lr > 0, --lam >= 0 and 0 < --cue-strength <= 1")
    out = prepare_out_dir(args.out)
    physics = Physics(stencil="nine_point", decay=DECAY, clamp=True)
    rule = ScarRule()
    logs = []

    def log(msg):
        logs.append(msg)
        print(msg, file=sys.stderr)

    start = time.time()
    rows, fields_main, wall = [], {}, {}
    for n in capacity:
        pats = stored_patterns(n, args.grid)
        t0 = time.time()
        Fl, Kl, hist = learn_scars(pats, seeds, args, physics, rule, log)
        wall[f"learned_{n}"] = time.time() - t0
        t0 = time.time()
        Fm, Km = match_map_scars(pats, seeds, args, rule)
        wall[f"match_map_{n}"] = time.time() - t0
        F0f = torch.full_like(Fm, F0)
        K0f = torch.full_like(Km, K0)
        for label, F, K in (("learned", Fl, Kl), ("match_map", Fm, Km),
                            ("no_scar", F0f, K0f)):
            r = evaluate(label, F, K, pats, seeds, args)
            if label == "learned":
                r["history"] = hist
            rows.append(r)
            d = r.get("discrimination")
            print(f"n={n} {label:9s} recall cos {format_stat(r['recall_cosine'])} "
                  f"iou {format_stat(r['recall_iou'])} cue@0 "
                  f"{format_stat(r['cue_cosine_step0'])} discr "
                  f"{format_stat(d) if d else '-'} scar {format_stat(r['scar_size'], 1)}")
            if n == (MAIN_N if MAIN_N in capacity else capacity[-1]):
                fields_main[label] = (F[0], K[0])
    main_n = MAIN_N if MAIN_N in capacity else capacity[-1]
    main_rows = [r for r in rows if r["n_patterns"] == main_n]
    plot(main_rows, rows, fields_main, out / "backprop_scars.png",
         out / "backprop_scar_capacity.png")
    write_json_atomic(out / "results.json", {
        "config": {"grid": args.grid, "recall_steps": args.recall_steps,
                   "train_steps": args.train_steps, "iters": args.iters, "lr": args.lr,
                   "lambda": args.lam, "cue_strength": args.cue_strength,
                   "cue_noise": CUE_NOISE, "test_cues": args.test_cues, "seeds": seeds,
                   "patterns": list(PATTERN_LIST), "capacity": capacity, "main_n": main_n,
                   "rule": rule.as_dict(), "physics": physics.as_dict()},
        "results": rows, "wall_s": wall, "nan_guard_log": logs,
        "total_wall_s": time.time() - start, "environment": environment_info("cpu")})
    print(f"wrote {out / 'results.json'} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
