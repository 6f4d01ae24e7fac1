"""Recover Gray-Scott parameters (Du, Dv, F, K) from a settled target pattern.

For each target regime: a target V field is made by our stepper (Yang's physics,
docs/references.md: 5-point stencil, no decay, no clamp) from a random initial state; the
fit starts from other random states (independent seeds), from several parameter starts
(start 0 is Yang's: Du = Dv = 0.1270, F = K = 0.05; the rest uniform in the bounded box),
and runs

* the gradient method (differentiable.fit_gradient: truncated BPTT through the last
  --grad-steps steps with checkpointing, Adam direction, backtracking step size, NaN
  guard, stopping rule), and
* the gradient-free baseline (differentiable.fit_evolution: a (mu/mu, lambda) ES) on the
  same budget of simulated steps (a backpropagated step counts as 2 forward steps).

Success per start: all four parameters within 10% relative error, or the recovered
parameters' pattern (from a held-out initial state) of the same class as the target.
Writes results.json, backprop_loss_curves.png, backprop_patterns.png,
backprop_pairwise_loss.png and backprop_trajectory.mp4 into --out.

    python -m experiments.learn_parameters --quick
    python -m experiments.learn_parameters --losses combined log2d
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg

torch = cli.lazy("torch")
np = cli.lazy("numpy")
metrics = cli.lazy("metrics")
dm = cli.lazy("models.differentiable")

# Target regimes (Du, Dv, F, K) on the 5-point stencil, dt = 1 (pmneila/Pearson presets).
TARGETS = {
    "seed001": (0.16, 0.08, 0.035, 0.065),   # Yang's target: spots that divide
    "mitosis": (0.16, 0.08, 0.0367, 0.0649),  # Pearson's mitosis corner (F, k)
    "spots": (0.16, 0.08, 0.030, 0.062),      # dense stationary spots
    "worms": (0.16, 0.08, 0.050, 0.065),      # stripes / worms
    "maze": (0.19, 0.05, 0.060, 0.062),       # labyrinth ("fingerprint")
}
LOSS_NAMES = ("radial", "log2d", "stats", "combined")   # models.differentiable.LOSSES
SEED001_START = (0.1270, 0.1269, 0.0500, 0.0501)
SEED001_END = (0.1343, 0.0679, 0.0429, 0.0653)   # where Yang's 8,918 iterations ended
SQUARES, SQUARE_SIZE = 16, 6
TARGET_SEED_BASE = 900_000   # target initial states: independent of the fit's seeds
HELDOUT_SEED_BASE = 500_000  # held-out states for judging a recovered parameter set
SUCCESS_REL_ERR = 0.10
VIDEO_FRAMES = 30


@dataclass
class Args(RunArgs):
    study: ClassVar[str] = "learn_parameters"
    saved_state_refusal: ClassVar[str] = (
        "it fits Du, Dv, F, K by gradient from random states; its state is a parameter "
        "fit, not a saved medium")
    seeds: int = arg(4, "fit seeds: each gives a start and an initial state", lo=1,
                     hi=100_000)
    targets: tuple[str, ...] = arg(tuple(TARGETS), "target regimes, from "
                                   + ", ".join(TARGETS) + " ('a,b' reads as 'a b')")
    losses: tuple[str, ...] = arg(("combined",), "pattern losses, from "
                                  + ", ".join(LOSS_NAMES) + " ('a,b' reads as 'a b')")
    grid: int = arg(64, "grid size H = W", lo=8, hi=4096)
    steps: int = arg(1500, "rollout length: the settled pattern is V after this many steps",
                     lo=1)
    grad_steps: int = arg(100, "truncated BPTT: gradient through the last this many steps",
                          lo=1)
    checkpoint_every: int = arg(25, "torch.utils.checkpoint segment length (0 = off)", lo=0)
    iters: int = arg(30, "gradient evaluations per start (at most)", lo=1)
    popsize: int = arg(8, "ES population", lo=1)
    lr: float = arg(0.1, "initial gradient step in logit space (FitConfig.lr)", lo=0.0,
                    lo_open=True)
    dtype: str = arg("float64", "floating-point type of the rollouts",
                     choices=("float64", "float32"))
    start_spread: float = arg(0.0, "0: global starts (Yang's, then uniform in the box); "
                                   "s > 0: local starts at true * (1 + U(-s, s))", lo=0.0,
                              hi=1.0, hi_open=True)
    no_video: bool = arg(False, "skip backprop_trajectory.mp4")

    def check(self) -> None:
        for t in self.targets:
            if t not in TARGETS:
                raise ValueError(f"unknown target {t!r}; choose from {sorted(TARGETS)}")
        for name in self.losses:
            dm.get_loss(name)      # one line naming the loss and the choices


# --quick: no checkpointing (its first use imports torch._dynamo, ~4 s; the tests check
# checkpointed == plain gradients separately)
QUICK = dict(seeds=2, grid=16, steps=80, grad_steps=10, iters=2, checkpoint_every=0,
             popsize=4, targets=("seed001", "maze"))


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


def torch_dtype(args):
    return torch.float64 if args.dtype == "float64" else torch.float32


def initial_states(seeds, grid, dtype):
    return dm.initial_state(seeds, grid, grid, dtype=dtype, squares=SQUARES,
                            size=min(SQUARE_SIZE, grid // 4))


def settle(params, seeds, args, physics, dtype):
    """V after args.steps steps from each seed's initial state, no graph, (B, H, W)."""
    U, V = initial_states(seeds, args.grid, dtype)
    p = torch.as_tensor(params, dtype=dtype).view(-1, 4).expand(len(seeds), 4)
    Du, Dv, F, K = dm.as_fields(p)
    with torch.no_grad():
        _, V = dm.rollout(U, V, F, K, Du, Dv, args.steps, physics, grad_steps=0)
    return V


def pairwise_losses(Vs: dict, losses) -> dict:
    """M[loss][i][j] = mean over ordered seed pairs a != b of loss(V_i[a], V_j[b]); the
    diagonal is Yang's within-target loss (same parameters, different states)."""
    names = list(Vs)
    out = {}
    for ln in losses:
        fn = dm.get_loss(ln)
        M = np.zeros((len(names), len(names)))
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                vals = [float(fn(Vs[a][s:s + 1], Vs[b][t])[0])
                        for s in range(len(Vs[a])) for t in range(len(Vs[b])) if s != t]
                M[i, j] = float(np.mean(vals))
        out[ln] = M.tolist()
    return out


def probe(args, physics, dtype):
    """Loss and largest |dloss/dz| of every loss at Yang's start, Yang's end point and
    the truth, against the seed001 target, from a held-out initial state."""
    bounds = dm.param_bounds(physics)
    ti = list(TARGETS).index("seed001")
    Vt = settle(TARGETS["seed001"], [TARGET_SEED_BASE + ti], args, physics, dtype)[0]
    points = {"seed_start": SEED001_START, "seed_end": SEED001_END,
              "truth": TARGETS["seed001"]}
    P = torch.tensor(list(points.values()), dtype=torch.float64)
    U0, V0 = initial_states([HELDOUT_SEED_BASE + 77] * len(P), args.grid, dtype)
    out = {}
    for ln in sorted(dm.LOSSES):
        obj = dm.RecoveryObjective(Vt, U0, V0, args.steps, ln, physics, args.grad_steps,
                                   args.checkpoint_every, bounds)
        loss, grad, V, ok = obj(dm.to_raw(P, bounds).to(dtype))
        for k, name in enumerate(points):
            out.setdefault(name, {"params": points[name], "class": pattern_class(V[k].numpy()),
                                  "V_std": float(V[k].std())})
            out[name][ln] = {"loss": float(loss[k]), "max_abs_grad_z": float(grad[k].abs().max())}
    return out


# --------------------------------------------------------------------------- one target
def start_sampler(true_p, bounds, spread):
    """draw(generator) -> a parameter start: uniform in the box (5% margins), or with
    spread s > 0 at true * (1 + U(-s, s))."""
    lo, hi = bounds[:, 0], bounds[:, 1]
    true_t = torch.tensor(true_p, dtype=torch.float64)

    def draw(gen):
        u = torch.rand(4, generator=gen, dtype=torch.float64)
        if spread > 0:
            return (true_t * (1 + spread * (2 * u - 1))).clamp(lo * 1.01, hi * 0.99)
        return lo + (hi - lo) * (0.05 + 0.9 * u)
    return draw


def fit_both(name, true_p, loss, args, physics, dtype, seeds, ti, log):
    """Gradient and ES fits of one target from the same starts, initial states and budget:
    (target V, starts p0, gradient result, ES result, budget)."""
    bounds = dm.param_bounds(physics)
    Vt = settle(true_p, [TARGET_SEED_BASE + ti], args, physics, dtype)[0]
    U0, V0 = initial_states(seeds, args.grid, dtype)
    # starts: Yang's, then uniform in the box, from the first seed (or local, --start-spread)
    draw = start_sampler(true_p, bounds, args.start_spread)
    g = torch.Generator().manual_seed(seeds[0] * 7919 + ti)
    starts = [] if args.start_spread > 0 else [torch.tensor(SEED001_START, dtype=torch.float64)]
    while len(starts) < len(seeds):
        starts.append(draw(g))
    p0 = torch.stack(starts)
    z0 = dm.to_raw(p0, bounds).to(dtype)

    def sampler(gen):
        return lambda i: dm.to_raw(draw(gen).view(1, 4), bounds)[0]

    budget = len(seeds) * args.iters * (args.steps + 2 * args.grad_steps)
    cfg = dm.FitConfig(max_iters=args.iters, budget_steps=budget, lr=args.lr)
    rs = seeds[0] * 104_729 + ti  # restart points: the same stream for both methods
    obj = dm.RecoveryObjective(Vt, U0, V0, args.steps, loss, physics, args.grad_steps,
                               args.checkpoint_every, bounds)
    t0 = time.time()
    grad = dm.fit_gradient(obj, z0, cfg, progress=f"{name}/{loss} gradient", log=log,
                           restart=sampler(torch.Generator().manual_seed(rs)))
    grad["wall_s"] = time.time() - t0
    obj_es = dm.RecoveryObjective(Vt, U0, V0, args.steps, loss, physics, 0, 0, bounds)
    t0 = time.time()
    es = dm.fit_evolution(obj_es, z0, budget, popsize=args.popsize, seed=seeds[0] + 31 * ti,
                          progress=f"{name}/{loss} ES",
                          restart=sampler(torch.Generator().manual_seed(rs)))
    es["wall_s"] = time.time() - t0
    return Vt, p0, grad, es, budget


def judge(r, p0, true_p, Vt, target_class, loss, args, physics, dtype, ti):
    """Per-start results of one method: recovered parameters, errors, the class of their
    pattern from a held-out state; (summary dict, that pattern of the best start)."""
    P = r["params"].to(torch.float64)
    true_t = torch.tensor(true_p, dtype=torch.float64)
    Vr = settle(P, [HELDOUT_SEED_BASE + ti] * len(P), args, physics, dtype)
    classes = [pattern_class(v.numpy()) for v in Vr]
    rel = ((P - true_t) / true_t).abs()
    heldout_loss = dm.get_loss(loss)(Vr, Vt).tolist()
    per_start = []
    for i in range(len(P)):
        within = bool((rel[i] < SUCCESS_REL_ERR).all())
        same = classes[i] == target_class
        per_start.append({
            "initial": dict(zip(dm.PARAM_NAMES, p0[i].tolist())),
            "recovered": dict(zip(dm.PARAM_NAMES, P[i].tolist())),
            "rel_error": dict(zip(dm.PARAM_NAMES, rel[i].tolist())),
            "fit_loss": float(r["loss"][i]), "heldout_loss": heldout_loss[i],
            "class": classes[i], "params_within_10pct": within, "same_class": same,
            "success": within or same,
            "loss_curve": r["history"][i],
            "stop_reason": r["stop_reason"][i] if "stop_reason" in r else "budget",
        })
    bounds = dm.param_bounds(physics)
    path = dm.to_params(torch.tensor(r["path"][r["best_start"]], dtype=torch.float64), bounds)
    return ({"starts": per_start, "best_start": r["best_start"],
             "iterations": r.get("iterations"), "sim_steps": r["sim_steps"],
             "wall_s": r["wall_s"], "nan_events": r.get("events", []),
             "restarts": r["restarts"], "path": path.tolist()},
            Vr[r["best_start"]])


def run_target(name, true_p, loss, args, physics, dtype, seeds, ti, log):
    """Fit one target both ways and judge the fits: (result, target V, best patterns)."""
    Vt, p0, grad, es, budget = fit_both(name, true_p, loss, args, physics, dtype, seeds, ti,
                                        log)
    target_class = pattern_class(Vt.numpy())
    res = {"target": name, "loss": loss, "true": dict(zip(dm.PARAM_NAMES, true_p)),
           "target_class": target_class, "budget_steps": budget}
    finals = {}
    for method, r in (("gradient", grad), ("evolution", es)):
        res[method], finals[method] = judge(r, p0, true_p, Vt, target_class, loss, args,
                                            physics, dtype, ti)
    return res, Vt, finals


# --------------------------------------------------------------------------- figures
def plot_curves(results, n, path):
    """Best loss so far against the budget spent, per start, gradient and ES."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.8 * len(results) + 1.5, 3.4),
                             squeeze=False)
    for ax, res in zip(axes[0], results):
        per_eval = len(res["gradient"]["starts"])
        for i, s in enumerate(res["gradient"]["starts"]):
            best, xs, ys = math.inf, [], []
            for it, li, _ in s["loss_curve"]:
                if li is not None:
                    best = min(best, li)
                xs.append(it)
                ys.append(best)
            ax.plot(xs, ys, color="C0", alpha=0.8, lw=1,
                    label="gradient (per start)" if i == 0 else None)
        iters = max(len(s["loss_curve"]) for s in res["gradient"]["starts"]) or 1
        # ES history is (steps spent by this start, best loss); mapped to gradient iterations
        per_iter = res["budget_steps"] / per_eval / max(iters, 1)
        for i, s in enumerate(res["evolution"]["starts"]):
            if s["loss_curve"]:
                ax.plot([st / per_iter for st, _ in s["loss_curve"]],
                        [li for _, li in s["loss_curve"]], color="C3", alpha=0.8, lw=1,
                        ls="--", label="ES (per start)" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("budget used (gradient-iteration equivalents)")
        ax.set_ylabel(f"best {res['loss']} loss so far")
        ax.set_title(f"{res['target']} ({res['loss']}), {n} starts", fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.subplots_adjust(left=0.12, right=0.8, bottom=0.18, top=0.85, wspace=0.6)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def plot_patterns(rows, steps, path):
    """Target pattern beside the patterns of the best gradient and ES parameters."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.2, 2.3 * len(rows)), squeeze=False)
    for r, (label, Vt, Vg, Ve, res) in enumerate(rows):
        for c, (V, title) in enumerate(((Vt, f"target {label}\n{res['target_class']}"),
                                        (Vg, "gradient best"), (Ve, "ES best"))):
            ax = axes[r][c]
            im = ax.imshow(V.numpy(), cmap="viridis", vmin=0, vmax=0.5)
            if c > 0:
                m = "gradient" if c == 1 else "evolution"
                s = res[m]["starts"][res[m]["best_start"]]
                title += "\n" + " ".join(f"{k}={v:.3f}" for k, v in s["recovered"].items())
                title += f"\n{s['class']} (held-out state)"
            ax.set_title(title, fontsize=6)
            ax.axis("off")
        fig.colorbar(im, ax=list(axes[r]), fraction=0.03, label="V")
    fig.suptitle(f"V after {steps} steps", fontsize=8)
    fig.subplots_adjust(left=0.04, right=0.85, bottom=0.05, top=0.85, wspace=0.3, hspace=0.8)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def plot_pairwise(pair, names, path):
    """Loss between the patterns of every pair of targets (two states each)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pair), figsize=(4.2 * len(pair), 3.6), squeeze=False)
    for ax, (ln, M) in zip(axes[0], pair.items()):
        M = np.asarray(M)
        im = ax.imshow(np.log10(M + 1e-12), cmap="magma")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("target (state b)", fontsize=7)
        ax.set_ylabel("target (state a)", fontsize=7)
        lo, hi = im.get_clim()
        for i in range(len(names)):   # within-target losses (diagonal) in bold
            for j in range(len(names)):
                bright = np.log10(M[i, j] + 1e-12) > (lo + hi) / 2
                ax.text(j, i, f"{M[i, j]:.2g}", ha="center", va="center", fontsize=6,
                        color="k" if bright else "w", weight="bold" if i == j else None)
        ax.set_title(f"{ln} loss between targets", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"log10 {ln} loss")
    fig.subplots_adjust(left=0.08, right=0.95, bottom=0.22, top=0.88, wspace=0.6)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


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


# --------------------------------------------------------------------------- the run
def fit_all(args, seeds, physics, dtype, log):
    """Every (loss, target) pair: (results, figure rows)."""
    results, rows = [], []
    for loss in args.losses:
        for name in args.targets:
            res, Vt, finals = run_target(name, TARGETS[name], loss, args, physics, dtype,
                                         seeds, list(TARGETS).index(name), log)
            results.append(res)
            rows.append((f"{name}/{loss}", Vt, finals["gradient"], finals["evolution"], res))
            g = res["gradient"]["starts"][res["gradient"]["best_start"]]
            e = res["evolution"]["starts"][res["evolution"]["best_start"]]
            print(f"{name:8s} {loss:8s} class {res['target_class']:9s} | gradient best "
                  f"{g['recovered']} loss {g['fit_loss']:.3g} {g['class']} | ES best "
                  f"{e['recovered']} loss {e['fit_loss']:.3g} {e['class']}")
    return results, rows


def success_summary(results, losses) -> dict:
    """Success rates over targets x starts, per loss and method."""
    summary = {}
    for loss in losses:
        for method in ("gradient", "evolution"):
            rs = [s for r in results if r["loss"] == loss for s in r[method]["starts"]]
            key = f"{loss}/{method}"
            summary[key] = {k: stats.summarize([float(s[k]) for s in rs])
                            for k in ("params_within_10pct", "same_class", "success")}
            summary[key]["median_rel_error"] = {
                p: float(np.median([s["rel_error"][p] for s in rs])) for p in dm.PARAM_NAMES}
            summary[key]["best_start_success"] = stats.summarize(
                [float(r[method]["starts"][r[method]["best_start"]]["success"])
                 for r in results if r["loss"] == loss])
    return summary


def run(args, seeds, log) -> dict:
    dtype, physics = torch_dtype(args), dm.Physics()
    results, rows = fit_all(args, seeds, physics, dtype, log)
    # pairwise losses among targets (two states per target), Yang's within-target loss
    pair_seeds = [TARGET_SEED_BASE + 50, TARGET_SEED_BASE + 51]
    Vs = {t: settle(TARGETS[t], pair_seeds, args, physics, dtype) for t in args.targets}
    return {"results": results, "rows": rows, "physics": physics,
            "summary": success_summary(results, args.losses),
            "pairwise_loss": pairwise_losses(Vs, sorted(dm.LOSSES)),
            "probe": probe(args, physics, dtype) if "seed001" in args.targets else None}


def report(r):
    for k, s in r["summary"].items():
        print(f"{k:20s} success {stats.format_stat(s['success'], 2)}  params<10% "
              f"{stats.format_stat(s['params_within_10pct'], 2)}  same class "
              f"{stats.format_stat(s['same_class'], 2)}")
    for name, p in (r["probe"] or {}).items():
        print(f"probe {name:10s} {p['class']:9s} " + " ".join(
            f"{ln} {p[ln]['loss']:.3g} (|grad| {p[ln]['max_abs_grad_z']:.2g})"
            for ln in sorted(dm.LOSSES)))


def config_extra(args, physics) -> dict:
    return {"target_seed_base": TARGET_SEED_BASE, "heldout_seed_base": HELDOUT_SEED_BASE,
            "physics": physics.as_dict(), "bounds": dm.param_bounds(physics).tolist(),
            "target_params": {t: TARGETS[t] for t in args.targets},
            "success_rule": "all four params within 10% relative error, or the held-out "
                            "pattern of the recovered params has the target's class",
            "budget_rule": "gradient and ES get the same simulated steps; one "
                           "backpropagated step counts as 2 forward steps"}


def write_outputs(out, r, args):
    physics, dtype = r["physics"], torch_dtype(args)
    plot_curves(r["results"], len(r["results"][0]["gradient"]["starts"]),
                out / "backprop_loss_curves.png")
    plot_patterns(r["rows"], args.steps, out / "backprop_patterns.png")
    plot_pairwise({ln: r["pairwise_loss"][ln] for ln in sorted(dm.LOSSES)}, list(args.targets),
                  out / "backprop_pairwise_loss.png")
    if not args.no_video:
        write_video(out / "backprop_trajectory.mp4", r["rows"][0][1],
                    r["results"][0]["gradient"]["path"], args, physics, dtype,
                    HELDOUT_SEED_BASE + 99)


def main(argv=None):
    args = cli.parse(Args, cli.split_commas(argv, "--targets", "--losses"),
                     description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    if device.type != "cpu":
        print("note: runs on cpu (float64 rollouts); --device ignored", file=sys.stderr)
    events_log = []

    def log(msg):
        events_log.append(msg)
        print(msg, file=sys.stderr)

    start = time.time()
    r = run(args, seeds, log)
    report(r)
    video = None if args.no_video else args.out_dir() / "backprop_trajectory.mp4"
    result = {**cli.envelope(args, seeds, "cpu", time.time() - start),
              "results": r["results"], "summary": r["summary"],
              "pairwise_loss": {"targets": list(args.targets), **r["pairwise_loss"]},
              "probe_seed001": r["probe"], "nan_guard_log": events_log,
              "video": str(video) if video else None}
    result["config"].update(config_extra(args, r["physics"]))
    with cli.staged_output(args.out_dir(), Args.study) as out:
        write_outputs(out, r, args)
        cli.write_json_atomic(out / "results.json", result)
    print(f"wrote {args.out_dir() / 'results.json'} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    cli.run_cli(main)
