"""Recover Gray-Scott parameters (Du, Dv, F, K) from a settled target pattern (issue 6).

For each target regime: a target V field is made by our stepper (the seed-001 physics:
5-point stencil, no decay, no clamp) from a random initial state; the fit starts from
other random states (independent seeds), from several parameter starts (start 0 is the
seed's: Du = Dv = 0.1270, F = K = 0.05; the rest uniform in the bounded box), and runs

* the gradient method (differentiable.fit_gradient: truncated BPTT through the last
  GRAD_STEPS steps with checkpointing, Adam direction, backtracking step size, NaN
  guard, stopping rule), and
* the gradient-free baseline (differentiable.fit_evolution: a (mu/mu, lambda) ES) on the
  same budget of simulated steps (a backpropagated step counts as 2 forward steps).

Success per start: all four parameters within 10% relative error, or the recovered
parameters' pattern (from a held-out initial state) of the same class as the target.
Writes results.json, backprop_loss_curves.png, backprop_patterns.png,
backprop_pairwise_loss.png and backprop_trajectory.mp4 into --out.

    python -m experiments.learn_parameters --quick
    python -m experiments.learn_parameters --losses combined,log2d
"""
from __future__ import annotations

import argparse
import math
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
from metrics import format_stat, summarize
from models.differentiable import (
    LOSSES,
    PARAM_NAMES,
    FitConfig,
    Physics,
    RecoveryObjective,
    as_fields,
    fit_evolution,
    fit_gradient,
    get_loss,
    initial_state,
    param_bounds,
    rollout,
    to_params,
    to_raw,
)

# Target regimes (Du, Dv, F, K) on the 5-point stencil, dt = 1 (pmneila/Pearson presets).
TARGETS = {
    "seed001": (0.16, 0.08, 0.035, 0.065),   # the seed's target: spots that divide
    "mitosis": (0.16, 0.08, 0.0367, 0.0649),  # Pearson's mitosis corner (F, k)
    "spots": (0.16, 0.08, 0.030, 0.062),      # dense stationary spots
    "worms": (0.16, 0.08, 0.050, 0.065),      # stripes / worms
    "maze": (0.19, 0.05, 0.060, 0.062),       # labyrinth ("fingerprint")
}
SEED001_START = (0.1270, 0.1269, 0.0500, 0.0501)
SEED001_END = (0.1343, 0.0679, 0.0429, 0.0653)   # where the seed's 8,918 iterations ended
GRID = 64
STEPS = 1500            # rollout length: the "settled" pattern is V after STEPS steps
GRAD_STEPS = 100        # truncated BPTT: gradient through the last GRAD_STEPS steps
CHECKPOINT_EVERY = 25   # torch.utils.checkpoint segment length (0 = off)
ITERS = 30              # gradient evaluations per start (at most)
POPSIZE = 8             # ES population
LOSS_NAMES = "combined"
SQUARES, SQUARE_SIZE = 16, 6
TARGET_SEED_BASE = 900_000   # target initial states: independent of the fit's seeds
HELDOUT_SEED_BASE = 500_000  # held-out states for judging a recovered parameter set
SUCCESS_REL_ERR = 0.10
VIDEO_FRAMES = 30


# --------------------------------------------------------------------------- analysis
def periodic_components(mask: np.ndarray):
    """4-connected components of a boolean mask on the torus: (labels, n), labels 0..n-1
    for the cells in the mask and -1 outside."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    parent = list(range(n + 1))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in list(zip(lab[:, 0], lab[:, -1])) + list(zip(lab[0, :], lab[-1, :])):
        if a and b:
            parent[find(a)] = find(b)
    roots = np.array([find(i) for i in range(n + 1)])
    uniq, inv = np.unique(roots[lab[mask]], return_inverse=True)
    out = np.full(mask.shape, -1)
    out[mask] = inv
    return out, len(uniq)


COMPACT_SPOT = 2.5  # perimeter^2 / (4 pi area): ~1.6 for a digital disc, grows with length
MIN_AREA = 5        # smaller bright components are residue (e.g. a checkerboard), not pattern


def pattern_class(V: np.ndarray) -> str:
    """'uniform', 'spots', 'stripes' or 'labyrinth' from the bright phase of V.

    Bright phase: V above the midpoint of its range. Components on the torus; each one's
    compactness P^2 / (4 pi A) (P: 4-neighbour boundary edges, A: cells). Components
    under MIN_AREA cells are ignored ('uniform' if nothing else is left); 'labyrinth' if
    one component holds over half the bright cells; else the area-weighted median
    compactness decides spots (< COMPACT_SPOT) or stripes."""
    V = np.asarray(V, dtype=np.float64)
    if not np.isfinite(V).all():
        return "diverged"
    if V.std() < 0.02 or V.max() - V.min() < 0.05:
        return "uniform"
    mask = V > 0.5 * (V.min() + V.max())
    lab, n = periodic_components(mask)
    if n == 0:
        return "uniform"
    area = np.bincount(lab[mask], minlength=n).astype(float)
    edges = np.zeros(n)
    for shift, axis in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        boundary = mask & ~np.roll(mask, shift, axis=axis)
        edges += np.bincount(lab[boundary], minlength=n)
    keep = area >= MIN_AREA
    if not keep.any():
        return "uniform"
    area, edges = area[keep], edges[keep]
    if area.max() > 0.5 * area.sum():
        return "labyrinth"
    compact = edges ** 2 / (4 * np.pi * area)
    order = np.argsort(compact)
    cum = np.cumsum(area[order]) / area.sum()
    median = compact[order][np.searchsorted(cum, 0.5)]
    return "spots" if median < COMPACT_SPOT else "stripes"


def settle(params, seeds, args, physics, dtype):
    """V after args.steps steps from each seed's initial state, no graph, (B, H, W)."""
    U, V = initial_state(seeds, args.grid, args.grid, dtype=dtype, squares=SQUARES,
                         size=min(SQUARE_SIZE, args.grid // 4))
    p = torch.as_tensor(params, dtype=dtype).view(-1, 4).expand(len(seeds), 4)
    Du, Dv, F, K = as_fields(p)
    with torch.no_grad():
        _, V = rollout(U, V, F, K, Du, Dv, args.steps, physics, grad_steps=0)
    return V


def pairwise_losses(Vs: dict, losses) -> dict:
    """M[loss][i][j] = mean over ordered seed pairs a != b of loss(V_i[a], V_j[b]); the
    diagonal is the seed's within-target loss (same parameters, different states)."""
    names = list(Vs)
    out = {}
    for ln in losses:
        fn = get_loss(ln)
        M = np.zeros((len(names), len(names)))
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                vals = [float(fn(Vs[a][s:s + 1], Vs[b][t])[0])
                        for s in range(len(Vs[a])) for t in range(len(Vs[b])) if s != t]
                M[i, j] = float(np.mean(vals))
        out[ln] = M.tolist()
    return out


def probe(args, physics, dtype):
    """Loss and largest |dloss/dz| of every loss at the seed's start, the seed's end point
    and the truth, against the seed001 target, from a held-out initial state."""
    bounds = param_bounds(physics)
    ti = list(TARGETS).index("seed001")
    Vt = settle(TARGETS["seed001"], [TARGET_SEED_BASE + ti], args, physics, dtype)[0]
    points = {"seed_start": SEED001_START, "seed_end": SEED001_END,
              "truth": TARGETS["seed001"]}
    P = torch.tensor(list(points.values()), dtype=torch.float64)
    U0, V0 = initial_state([HELDOUT_SEED_BASE + 77] * len(P), args.grid, args.grid,
                           dtype=dtype, squares=SQUARES, size=min(SQUARE_SIZE, args.grid // 4))
    out = {}
    for ln in sorted(LOSSES):
        obj = RecoveryObjective(Vt, U0, V0, args.steps, ln, physics, args.grad_steps,
                                args.checkpoint_every, bounds)
        loss, grad, V, ok = obj(to_raw(P, bounds).to(dtype))
        for k, name in enumerate(points):
            out.setdefault(name, {"params": points[name], "class": pattern_class(V[k].numpy()),
                                  "V_std": float(V[k].std())})
            out[name][ln] = {"loss": float(loss[k]), "max_abs_grad_z": float(grad[k].abs().max())}
    return out


# --------------------------------------------------------------------------- one target
def run_target(name, true_p, loss, args, physics, dtype, seeds, ti, log):
    H = args.grid
    bounds = param_bounds(physics)
    size = min(SQUARE_SIZE, H // 4)
    Vt = settle(true_p, [TARGET_SEED_BASE + ti], args, physics, dtype)[0]
    U0, V0 = initial_state(seeds, H, H, dtype=dtype, squares=SQUARES, size=size)
    # starts: the seed's, then uniform in the box (5% margins), from the first seed;
    # with --start-spread s: every start (and restart) at true * (1 + U(-s, s)) instead
    g = torch.Generator().manual_seed(seeds[0] * 7919 + ti)
    lo, hi = bounds[:, 0], bounds[:, 1]
    true_t = torch.tensor(true_p, dtype=torch.float64)

    def draw(gen):
        u = torch.rand(4, generator=gen, dtype=torch.float64)
        if args.start_spread > 0:
            return (true_t * (1 + args.start_spread * (2 * u - 1))).clamp(lo * 1.01, hi * 0.99)
        return lo + (hi - lo) * (0.05 + 0.9 * u)

    starts = [] if args.start_spread > 0 else [torch.tensor(SEED001_START, dtype=torch.float64)]
    while len(starts) < len(seeds):
        starts.append(draw(g))
    p0 = torch.stack(starts)
    z0 = to_raw(p0, bounds).to(dtype)

    def sampler(gen):
        def restart(i):
            return to_raw(draw(gen).view(1, 4), bounds)[0]
        return restart

    budget = len(seeds) * args.iters * (args.steps + 2 * args.grad_steps)
    cfg = FitConfig(max_iters=args.iters, budget_steps=budget, lr=args.lr)

    obj = RecoveryObjective(Vt, U0, V0, args.steps, loss, physics, args.grad_steps,
                            args.checkpoint_every, bounds)
    t0 = time.time()
    rs = seeds[0] * 104_729 + ti  # restart points: the same stream for both methods
    grad = fit_gradient(obj, z0, cfg, progress=f"{name}/{loss} gradient", log=log,
                        restart=sampler(torch.Generator().manual_seed(rs)))
    grad["wall_s"] = time.time() - t0
    obj_es = RecoveryObjective(Vt, U0, V0, args.steps, loss, physics, 0, 0, bounds)
    t0 = time.time()
    es = fit_evolution(obj_es, z0, budget, popsize=args.popsize, seed=seeds[0] + 31 * ti,
                       progress=f"{name}/{loss} ES",
                       restart=sampler(torch.Generator().manual_seed(rs)))
    es["wall_s"] = time.time() - t0

    target_class = pattern_class(Vt.numpy())
    heldout = [HELDOUT_SEED_BASE + ti]
    res = {"target": name, "loss": loss, "true": dict(zip(PARAM_NAMES, true_p)),
           "target_class": target_class, "budget_steps": budget}
    finals = {}
    for method, r in (("gradient", grad), ("evolution", es)):
        P = r["params"].to(torch.float64)
        Vr = settle(P, heldout * len(P), args, physics, dtype)
        classes = [pattern_class(v.numpy()) for v in Vr]
        rel = ((P - true_t) / true_t).abs()
        heldout_loss = get_loss(loss)(Vr, Vt).tolist()
        per_start = []
        for i in range(len(P)):
            within = bool((rel[i] < SUCCESS_REL_ERR).all())
            same = classes[i] == target_class
            per_start.append({
                "initial": dict(zip(PARAM_NAMES, p0[i].tolist())),
                "recovered": dict(zip(PARAM_NAMES, P[i].tolist())),
                "rel_error": dict(zip(PARAM_NAMES, rel[i].tolist())),
                "fit_loss": float(r["loss"][i]), "heldout_loss": heldout_loss[i],
                "class": classes[i], "params_within_10pct": within, "same_class": same,
                "success": within or same,
                "loss_curve": r["history"][i],
                "stop_reason": r["stop_reason"][i] if "stop_reason" in r else "budget",
            })
        finals[method] = Vr[r["best_start"]]
        res[method] = {"starts": per_start, "best_start": r["best_start"],
                       "iterations": r.get("iterations"), "sim_steps": r["sim_steps"],
                       "wall_s": r["wall_s"], "nan_events": r.get("events", []),
                       "restarts": r["restarts"],
                       "path": to_params(torch.tensor(r["path"][r["best_start"]],
                                                      dtype=torch.float64), bounds).tolist()}
    return res, Vt, finals


# --------------------------------------------------------------------------- figures
def plot_curves(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        per_eval = len(res["gradient"]["starts"])
        for i, s in enumerate(res["gradient"]["starts"]):
            c = s["loss_curve"]
            best, xs, ys = math.inf, [], []
            for it, li, acc in c:
                if li is not None:
                    best = min(best, li)
                xs.append(it)
                ys.append(best)
            ax.plot(xs, ys, color="C0", alpha=0.8, lw=1,
                    label="gradient (per start)" if i == 0 else None)
        iters = max(len(s["loss_curve"]) for s in res["gradient"]["starts"]) or 1
        for i, s in enumerate(res["evolution"]["starts"]):
            c = s["loss_curve"]
            if not c:
                continue
            # ES history is (steps spent by this start, best loss); map to gradient iters
            per_iter = res["budget_steps"] / per_eval / max(iters, 1)
            ax.plot([st / per_iter for st, _ in c], [li for _, li in c], color="C3",
                    alpha=0.8, lw=1, ls="--", label="ES (per start)" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("budget used (gradient-iteration equivalents)")
        ax.set_title(f"{res['target']} ({res['loss']})", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("best loss so far")
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.18, top=0.85, wspace=0.45, hspace=0.5)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_patterns(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(6.3, 2.2 * len(rows)), squeeze=False)
    for r, (label, Vt, Vg, Ve, res) in enumerate(rows):
        for c, (V, title) in enumerate(((Vt, f"target {label}\n{res['target_class']}"),
                                        (Vg, "gradient best"), (Ve, "ES best"))):
            ax = axes[r][c]
            ax.imshow(V.numpy(), cmap="viridis", vmin=0, vmax=0.5)
            if c > 0:
                m = "gradient" if c == 1 else "evolution"
                s = res[m]["starts"][res[m]["best_start"]]
                title += "\n" + " ".join(f"{k}={v:.3f}" for k, v in s["recovered"].items())
                title += f"\n{s['class']}"
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.18, top=0.85, wspace=0.45, hspace=0.5)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_pairwise(pair, names, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pair), figsize=(3.8 * len(pair), 3.4), squeeze=False)
    for ax, (ln, M) in zip(axes[0], pair.items()):
        M = np.asarray(M)
        im = ax.imshow(np.log10(M + 1e-12), cmap="magma")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{M[i, j]:.2g}", ha="center", va="center", fontsize=6,
                        color="w" if i != j else "c")
        ax.set_title(f"{ln} loss (log10 colour)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.18, top=0.85, wspace=0.45, hspace=0.5)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_video(path, Vt, path_params, args, physics, dtype, seed):
    """Target | pattern of the parameters along the optimisation path (held-out state)."""
    import cv2

    P = torch.tensor(path_params, dtype=torch.float64)
    if len(P) > VIDEO_FRAMES:
        P = P[torch.linspace(0, len(P) - 1, VIDEO_FRAMES).round().long()]
    Vs = settle(P, [seed] * len(P), args, physics, dtype)
    scale = max(1, 256 // args.grid)
    h, w = args.grid * scale, 2 * args.grid * scale
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4, (w, h + 20))
    if not writer.isOpened():
        raise ValueError(f"OpenCV cannot write {path} with the mp4v codec")

    def img(V):
        a = np.clip(V.numpy() / 0.5, 0, 1)
        a = cv2.resize((a * 255).astype(np.uint8), (args.grid * scale,) * 2,
                       interpolation=cv2.INTER_NEAREST)
        return cv2.applyColorMap(a, cv2.COLORMAP_VIRIDIS)

    left = img(Vt)
    for k, (p, V) in enumerate(zip(P.tolist(), Vs)):
        frame = np.zeros((h + 20, w, 3), np.uint8)
        frame[20:, : w // 2] = left
        frame[20:, w // 2:] = img(V)
        text = f"{k}: Du={p[0]:.3f} Dv={p[1]:.3f} F={p[2]:.4f} K={p[3]:.4f}"
        cv2.putText(frame, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        writer.write(frame)
    writer.release()


# --------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, "scarring_results/backprop/learn_parameters", default_seeds=4)
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma list of {sorted(TARGETS)}")
    parser.add_argument("--losses", default=LOSS_NAMES, help=f"comma list of {sorted(LOSSES)}")
    parser.add_argument("--grid", type=int, default=GRID)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--grad-steps", type=int, default=GRAD_STEPS)
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY)
    parser.add_argument("--iters", type=int, default=ITERS)
    parser.add_argument("--popsize", type=int, default=POPSIZE)
    parser.add_argument("--lr", type=float, default=FitConfig.lr)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--start-spread", type=float, default=0.0,
                        help="0: global starts (the seed's, then uniform in the box); s > 0: "
                             "local starts at true * (1 + U(-s, s))")
    parser.add_argument("--no-video", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.grid, args.steps, args.grad_steps, args.iters = 16, 80, 10, 2
        # no checkpointing here: its first use imports torch._dynamo (~4 s); the tests
        # check checkpointed == plain gradients separately
        args.checkpoint_every, args.popsize = 0, 4
        if args.seeds == 4:
            args.seeds = 2
        if args.targets == ",".join(TARGETS):
            args.targets = "seed001,maze"
    seeds = seed_list(args)
    device = resolve_device(args.device)
    if device.type != "cpu":
        print("note: runs on cpu (float64 rollouts); --device ignored", file=sys.stderr)
    for name, v in (("--grid", args.grid), ("--steps", args.steps), ("--iters", args.iters),
                    ("--popsize", args.popsize)):
        if v < (8 if name == "--grid" else 1):
            raise ValueError(f"{name} {v} is too small")
    if args.grad_steps < 1 or args.checkpoint_every < 0:
        raise ValueError("--grad-steps must be >= 1 and --checkpoint-every >= 0")
    if not 0 <= args.start_spread < 1:
        raise ValueError(f"--start-spread {args.start_spread} must be in [0, 1)")
    if not args.lr > 0:
        raise ValueError(f"--lr {args.lr} must be > 0")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    losses = [x.strip() for x in args.losses.split(",") if x.strip()]
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"unknown target {t!r}; choose from {sorted(TARGETS)}")
    for ln in losses:
        get_loss(ln)
    out = prepare_out_dir(args.out)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    physics = Physics()
    events_log = []

    def log(msg):
        events_log.append(msg)
        print(msg, file=sys.stderr)

    start = time.time()
    results, rows = [], []
    for loss in losses:
        for ti, name in enumerate(targets):
            res, Vt, finals = run_target(name, TARGETS[name], loss, args, physics, dtype,
                                         seeds, list(TARGETS).index(name), log)
            results.append(res)
            rows.append((f"{name}/{loss}", Vt, finals["gradient"], finals["evolution"], res))
            g = res["gradient"]["starts"][res["gradient"]["best_start"]]
            e = res["evolution"]["starts"][res["evolution"]["best_start"]]
            print(f"{name:8s} {loss:8s} class {res['target_class']:9s} | gradient best "
                  f"{g['recovered']} loss {g['fit_loss']:.3g} {g['class']} | ES best "
                  f"{e['recovered']} loss {e['fit_loss']:.3g} {e['class']}")

    # success rates over targets x starts
    summary = {}
    for loss in losses:
        for method in ("gradient", "evolution"):
            rs = [s for r in results if r["loss"] == loss for s in r[method]["starts"]]
            summary[f"{loss}/{method}"] = {
                key: summarize([float(s[key]) for s in rs])
                for key in ("params_within_10pct", "same_class", "success")}
            summary[f"{loss}/{method}"]["median_rel_error"] = {
                p: float(np.median([s["rel_error"][p] for s in rs])) for p in PARAM_NAMES}
            summary[f"{loss}/{method}"]["best_start_success"] = summarize(
                [float(r[method]["starts"][r[method]["best_start"]]["success"])
                 for r in results if r["loss"] == loss])
    for k, s in summary.items():
        print(f"{k:20s} success {format_stat(s['success'], 2)}  params<10% "
              f"{format_stat(s['params_within_10pct'], 2)}  same class "
              f"{format_stat(s['same_class'], 2)}")

    # pairwise losses among targets (two states per target), the seed's within_target_loss
    pair_seeds = [TARGET_SEED_BASE + 50, TARGET_SEED_BASE + 51]
    Vs = {t: settle(TARGETS[t], pair_seeds, args, physics, dtype) for t in targets}
    pair = pairwise_losses(Vs, sorted(LOSSES))

    probes = probe(args, physics, dtype) if "seed001" in targets else None
    if probes:
        for name, p in probes.items():
            print(f"probe {name:10s} {p['class']:9s} " + " ".join(
                f"{ln} {p[ln]['loss']:.3g} (|grad| {p[ln]['max_abs_grad_z']:.2g})"
                for ln in sorted(LOSSES)))
    plot_curves(results, out / "backprop_loss_curves.png")
    plot_patterns(rows, out / "backprop_patterns.png")
    plot_pairwise(pair, targets, out / "backprop_pairwise_loss.png")
    video = None
    if not args.no_video:
        first = results[0]
        video = out / "backprop_trajectory.mp4"
        write_video(video, rows[0][1], first["gradient"]["path"], args, physics, dtype,
                    HELDOUT_SEED_BASE + 99)
    write_json_atomic(out / "results.json", {
        "config": {"grid": args.grid, "steps": args.steps, "grad_steps": args.grad_steps,
                   "checkpoint_every": args.checkpoint_every, "iters": args.iters,
                   "popsize": args.popsize, "lr": args.lr, "dtype": args.dtype,
                   "start_spread": args.start_spread,
                   "fit_seeds": seeds, "target_seed_base": TARGET_SEED_BASE,
                   "heldout_seed_base": HELDOUT_SEED_BASE, "physics": physics.as_dict(),
                   "bounds": param_bounds(physics).tolist(), "losses": losses,
                   "targets": {t: TARGETS[t] for t in targets},
                   "success_rule": "all four params within 10% relative error, or the "
                                   "held-out pattern of the recovered params has the "
                                   "target's class",
                   "budget_rule": "gradient and ES get the same simulated steps; one "
                                  "backpropagated step counts as 2 forward steps"},
        "results": results, "summary": summary, "pairwise_loss": {"targets": targets,
                                                                  **pair},
        "probe_seed001": probes, "nan_guard_log": events_log, "wall_s": time.time() - start,
        "environment": environment_info("cpu"),
        "video": str(video) if video else None})
    print(f"wrote {out / 'results.json'} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
