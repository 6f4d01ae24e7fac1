"""Storing and recalling patterns in a scarred Gray-Scott medium: the memory studies' core.

The reference protocol (../shared/PROTOCOL.md) treats the scarred F/K fields as a memory:
train on a target with scarring (the scar accumulates in F and K), then start a fresh V
from a weak cue and see what grows back. This module turns that into two batched calls
that every memory study shares (issue 4: cue specificity, capacity, robustness,
ablations; issue 5: the scarring side of the Hopfield / NCA comparison):

    stored = store_patterns(targets, seeds, steps=500)        # sequential scarring
    cues = make_cues(targets, strength=0.2, noise_std=0.05, seeds=seeds)
    result = recall_matrix(stored["F"], stored["K"], cues, targets, steps=300)
    result["final"]["cosine"]   # (S, C, P): seed x cue x pattern similarity after recall
    result["initial"]["cosine"] # (S, C, P): the same for the cue itself, at step 0

Batch layout: the leading dimension of F/K and of the per-seed tensors is the seed (S
members, one per entry of `seeds`; the entries need not be distinct). recall_matrix puts
seeds x cues into the batch dimension of one GrayScott, so a whole matrix is one run.

Noise: every noise draw goes through patterns.make_cue with a seed derived from the run
seed, a role ("train" or "cue") and an index (pattern or cue number), see `noise_seeds`,
so the training noise of pattern p and the cue noise of cue c never coincide and a seed
gives the same draw alone or in a batch.

Also here: the capacity read-out (`capacity_readout`), per-seed discrimination
(`discrimination_per_seed`), equal-area random-spot pattern families
(`random_spot_patterns`) and summaries of (S, ...) tensors into nested metrics.summarize
dicts (`summarize_tensor`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from metrics import METRICS, discrimination_index, summarize
from patterns import PEAK, make_cue
from scarring import ScarRule, evolve, scar_strength
from substrate import F0, K0, GrayScott

# Protocol training start: V = clamp(0.2 * target + N(0, 0.1^2), 0, 1), U = 1.
TRAIN_STRENGTH = 0.2
TRAIN_NOISE = 0.1
# Protocol recall start (the cue): V = clamp(s * target + N(0, 0.05^2), 0, 1), U = 1.
CUE_NOISE = 0.05
METRIC_NAMES = ("cosine", "iou", "pearson")
ROLES = {"train": 1, "cue": 2, "other": 3}


def noise_seeds(seeds, role: str, index: int = 0) -> list[int]:
    """Generator seeds for the noise of (run seed, role, index): distinct across roles
    and indices (index < 10,000), repeatable, independent of the batch they sit in."""
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not one of {sorted(ROLES)}")
    if not 0 <= int(index) < 10_000:
        raise ValueError(f"index={index} must be in [0, 10000)")
    return [int(s) * 100_000 + ROLES[role] * 10_000 + int(index) for s in seeds]


def _per_seed(x: torch.Tensor, S: int, name: str, dims: int) -> torch.Tensor:
    """x with `dims` trailing dims, shared (no seed dim) or per seed: returns (S, ...)."""
    if x.dim() == dims:
        return x.unsqueeze(0).expand(S, *x.shape)
    if x.dim() == dims + 1 and x.shape[0] == S:
        return x
    raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {dims} dims shared by "
                     f"the seeds or {dims + 1} dims with {S} seeds first")


def _fields(value, S, H, W, device, dtype, name):
    """Scalar, (H, W) or (S, H, W) F/K as an (S, H, W) tensor (a copy)."""
    if isinstance(value, (int, float)):
        return torch.full((S, H, W), float(value), device=device, dtype=dtype)
    t = torch.as_tensor(value, device=device, dtype=dtype)
    if t.shape == (H, W):
        t = t.expand(S, H, W)
    if t.shape != (S, H, W):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected a scalar, ({H}, {W}) "
                         f"or ({S}, {H}, {W})")
    return t.clone()


def make_cues(targets: torch.Tensor, strength: float, noise_std: float = CUE_NOISE,
              seeds=(0,), role: str = "cue", first_index: int = 0) -> torch.Tensor:
    """Protocol cues clamp(strength * target + N(0, noise_std^2), 0, 1), one per target.

    targets: (C, H, W) shared by the seeds or (S, C, H, W) per seed. Returns (S, C, H, W);
    cue c of seed s uses noise seed noise_seeds([s], role, first_index + c).
    """
    seeds = list(seeds)
    S = len(seeds)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"cue strength={strength} must be in [0, 1]")
    if not noise_std >= 0.0:
        raise ValueError(f"cue noise_std={noise_std} must be >= 0")
    t = _per_seed(targets, S, "targets", 3)
    return torch.stack([make_cue(t[:, c], strength, noise_std,
                                 noise_seeds(seeds, role, first_index + c))
                        for c in range(t.shape[1])], dim=1)


def store_patterns(targets: torch.Tensor, seeds, steps: int = 500,
                   rule: ScarRule | None = ScarRule(), F=F0, K=K0, substrate: dict | None = None,
                   device=None, dtype: torch.dtype = torch.float32, snapshots=(),
                   train_strength: float = TRAIN_STRENGTH, train_noise: float = TRAIN_NOISE,
                   baseline=(F0, K0), progress: str | None = None) -> dict:
    """Scar targets into per-seed F/K fields one after the other (the protocol's phase 3).

    For each pattern p in order: reset U = 1, V = clamp(train_strength * target_p +
    N(0, train_noise^2), 0, 1) (the protocol's training start, fresh noise per seed and
    pattern), then run `steps` steps of scarring.evolve with `rule` (None: train without
    scarring, a control); the scars accumulate in F and K across patterns.

    targets: (P, H, W) shared by all seeds, or (S, P, H, W) per seed.
    seeds: S run seeds (batch members). F, K: the starting fields (scalar, (H, W) or
    (S, H, W)); default the reference F0, K0. substrate: extra GrayScott keyword arguments
    (decay, clamp, stencil, Du, Dv, dt). snapshots: pattern counts k after which a copy of
    (F, K) is kept (e.g. (1, 2, 4) for a capacity sweep). baseline: (F0, K0) from which
    the scar strength is measured.

    Returns {"F", "K": (S, H, W) final fields; "train_similarity": (P, S) cosine of V to
    pattern p at the end of its training; "scar_strength": (P, S) total scar after each
    pattern; "snapshots": {k: (F, K)}} (tensors on `device`, similarity on the CPU).
    """
    seeds = list(seeds)
    S = len(seeds)
    if S < 1:
        raise ValueError("store_patterns needs at least one seed")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer")
    device = torch.device(device) if device is not None else torch.device("cpu")
    t = _per_seed(torch.as_tensor(targets), S, "targets", 3).to(device=device, dtype=dtype)
    P, H, W = t.shape[1:]
    snapshots = set(int(k) for k in snapshots)
    bad = [k for k in snapshots if not 1 <= k <= P]
    if bad:
        raise ValueError(f"snapshots {sorted(bad)} outside 1..{P} stored patterns")
    gs = GrayScott(H, W, batch=S, device=device, dtype=dtype, **(substrate or {}))
    gs.F = _fields(F, S, H, W, device, dtype, "F")
    gs.K = _fields(K, S, H, W, device, dtype, "K")
    train_sim, strength, kept = [], [], {}
    for p in range(P):
        gs.reset(V=make_cue(t[:, p], train_strength, train_noise,
                            noise_seeds(seeds, "train", p)))
        run = evolve(gs, t[:, p], int(steps), rule=rule, record_every=int(steps),
                     progress=f"{progress} {p + 1}/{P}" if progress else None)
        train_sim.append(run["similarity"][-1])
        strength.append(scar_strength(gs.F, gs.K, *baseline).cpu())
        if p + 1 in snapshots:
            kept[p + 1] = (gs.F.clone(), gs.K.clone())
    return {"F": gs.F, "K": gs.K, "train_similarity": torch.stack(train_sim),
            "scar_strength": torch.stack(strength), "snapshots": kept}


def _similarity_matrix(V: torch.Tensor, patterns: torch.Tensor, names) -> dict:
    """V (S, C, H, W) against patterns (S, P, H, W): {metric: (S, C, P)} on the CPU."""
    S, C, H, W = V.shape
    P = patterns.shape[1]
    v = V.reshape(S * C, H, W)
    out = {m: torch.empty(S * C, P, dtype=V.dtype) for m in names}
    for j in range(P):  # one pattern at a time: memory stays O(S * C * H * W)
        p = patterns[:, j].to(V.dtype).repeat_interleave(C, dim=0)
        for m in names:
            out[m][:, j] = METRICS[m](v, p).cpu()
    return {m: x.reshape(S, C, P) for m, x in out.items()}


def recall_matrix(F, K, cues: torch.Tensor, patterns: torch.Tensor, steps: int = 300,
                  substrate: dict | None = None, metric_names=METRIC_NAMES, device=None,
                  dtype: torch.dtype = torch.float32, damage: torch.Tensor | None = None,
                  damage_step: int | None = None, return_fields: bool = False,
                  progress: str | None = None) -> dict:
    """Recall every cue on the given F/K and compare the result with every pattern.

    F, K: (S, H, W) per-seed fields (e.g. store_patterns' output), (H, W) or a scalar
    (a control without scars). cues: (S, C, H, W) starting V fields (U = 1), e.g. from
    make_cues, or (C, H, W) shared by the seeds. patterns: (P, H, W) or (S, P, H, W).
    All S x C recalls run as one GrayScott batch for `steps` steps (substrate: extra
    GrayScott keyword arguments).

    damage: optional bool mask, (H, W), (C, H, W) or (S, C, H, W); at step `damage_step`
    the masked cells are reset to U = 1, V = 0 and the run goes on (a lesion test).

    Returns {"initial": {metric: (S, C, P)} similarity of each cue to each pattern at
    step 0, "final": {metric: (S, C, P)} after `steps` steps, "before_damage" and
    "after_damage": the same just before/after the lesion (when damage is given), and
    "V": the final (S, C, H, W) V on the CPU when return_fields}. Metrics are the names
    in metrics.METRICS ("cosine", "iou", "pearson").
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps={steps} must be a non-negative integer")
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    cues = torch.as_tensor(cues)
    if cues.dim() == 3:
        S = F.shape[0] if isinstance(F, torch.Tensor) and F.dim() == 3 else 1
        cues = cues.unsqueeze(0).expand(S, *cues.shape)
    if cues.dim() != 4:
        raise ValueError(f"cues have shape {tuple(cues.shape)}; expected (S, C, H, W)")
    S, C, H, W = cues.shape
    pats = _per_seed(torch.as_tensor(patterns), S, "patterns", 3).to(device=device, dtype=dtype)
    if pats.shape[-2:] != (H, W):
        raise ValueError(f"patterns are {tuple(pats.shape[-2:])} but cues are ({H}, {W})")
    Fs = _fields(F, S, H, W, device, dtype, "F")
    Ks = _fields(K, S, H, W, device, dtype, "K")
    gs = GrayScott(H, W, batch=S * C, device=device, dtype=dtype, **(substrate or {}))
    gs.F = Fs.repeat_interleave(C, dim=0)
    gs.K = Ks.repeat_interleave(C, dim=0)
    gs.reset(V=cues.to(device=device, dtype=dtype).reshape(S * C, H, W))
    out = {"initial": _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)}
    segments = [int(steps)]
    if damage is not None:
        if damage_step is None or not 0 <= damage_step <= steps:
            raise ValueError(f"damage_step={damage_step} must be in [0, {steps}]")
        mask = torch.as_tensor(damage, dtype=torch.bool, device=device)
        if mask.dim() == 2:
            mask = mask.expand(C, H, W)
        if mask.dim() == 3:
            mask = mask.unsqueeze(0).expand(S, C, H, W)
        if mask.shape != (S, C, H, W):
            raise ValueError(f"damage mask has shape {tuple(mask.shape)}; expected (H, W), "
                             f"(C, H, W) or (S, C, H, W) with {(S, C, H, W)}")
        segments = [int(damage_step), int(steps) - int(damage_step)]
    for i, n in enumerate(segments):
        if n:
            evolve(gs, torch.zeros(H, W, device=device, dtype=dtype), n, rule=None,
                   record_every=n, progress=progress)
        if i == 0 and damage is not None:
            out["before_damage"] = _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)
            flat = mask.reshape(S * C, H, W)
            gs.V = torch.where(flat, torch.zeros_like(gs.V), gs.V)
            gs.U = torch.where(flat, torch.ones_like(gs.U), gs.U)
            out["after_damage"] = _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)
    out["final"] = _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)
    if return_fields:
        out["V"] = gs.V.view(S, C, H, W).cpu()
    return out


def discrimination_per_seed(matrix: torch.Tensor, rows=None, cols=None) -> torch.Tensor:
    """metrics.discrimination_index for each seed of an (S, C, P) matrix.

    rows/cols pick the square block where cue rows[i] belongs to pattern cols[i]
    (default: the first min(C, P) rows and columns). Returns (S,) float64.
    """
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.dim() != 3:
        raise ValueError(f"matrix has shape {tuple(m.shape)}; expected (S, C, P)")
    n = min(m.shape[1], m.shape[2])
    rows = list(range(n)) if rows is None else list(rows)
    cols = list(range(n)) if cols is None else list(cols)
    if len(rows) != len(cols):
        raise ValueError(f"{len(rows)} cue rows but {len(cols)} pattern columns")
    block = m[:, rows][:, :, cols]
    return torch.tensor([discrimination_index(b) for b in block], dtype=torch.float64)


def capacity_readout(ks, recall_mean, discrimination_low=None, recall_threshold: float = 0.7,
                     chance: float = 0.0) -> int:
    """The largest k up to which recall and discrimination hold at every k.

    ks: increasing pattern counts; recall_mean[i]: mean recall at ks[i];
    discrimination_low[i]: lower end of the 95% interval of the discrimination index at
    ks[i] (None where undefined, e.g. k = 1). k passes when recall_mean > recall_threshold
    and (discrimination undefined or its lower bound > chance). Capacity is the last k of
    the unbroken run of passes from the smallest k; 0 when the smallest k already fails.
    """
    ks = [int(k) for k in ks]
    if len(recall_mean) != len(ks):
        raise ValueError(f"{len(ks)} k values but {len(recall_mean)} recall values")
    if discrimination_low is None:
        discrimination_low = [None] * len(ks)
    if len(discrimination_low) != len(ks):
        raise ValueError(f"{len(ks)} k values but {len(discrimination_low)} discrimination values")
    if any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must increase strictly, got {ks}")
    capacity = 0
    for k, r, d in zip(ks, recall_mean, discrimination_low):
        r_ok = r is not None and math.isfinite(r) and r > recall_threshold
        d_ok = d is None or (math.isfinite(d) and d > chance)
        if not (r_ok and d_ok):
            break
        capacity = k
    return capacity


def random_spot_patterns(n_patterns: int, height: int, width: int, spots: int = 1,
                         radius: float = 6.0, seed: int = 0, disjoint: bool = True,
                         gap: float = 2.0, max_tries: int = 20_000) -> torch.Tensor:
    """A family of equal-area patterns: each `spots` discs of `radius` cells (PEAK inside).

    Discs within a pattern never overlap (so every pattern has the same area); with
    disjoint=True no disc overlaps any disc of another pattern either (at least `gap`
    cells apart); with disjoint=False patterns are placed independently and overlap by
    chance. Discs stay `radius + gap` cells from the border (no wrap-around).
    Returns (n_patterns, H, W) float32; ValueError if the discs do not fit.

    Beware: the reference scar rule only scars while the cosine similarity of the whole V
    field to the target exceeds its gate (0.5). A pattern that covers a small fraction of
    the grid (e.g. one disc of radius 6 on 128 x 128, 0.7%) never gets there during
    training (similarity ~0.04 measured), so nothing is stored at all; slot_patterns'
    default (8 discs, 5.3% of the grid) trains above the gate.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    margin = radius + gap
    if 2 * margin >= min(height, width):
        raise ValueError(f"discs of radius {radius} do not fit a {height}x{width} grid")
    placed_all, out = [], []
    for _ in range(int(n_patterns)):
        mine = []
        tries = 0
        while len(mine) < spots:
            tries += 1
            if tries > max_tries:
                raise ValueError(f"cannot place {n_patterns} x {spots} discs of radius {radius}"
                                 f" on {height}x{width} (disjoint={disjoint}); use fewer or "
                                 f"smaller spots or a larger grid")
            c = rng.uniform(margin, [width - margin, height - margin])
            others = mine + (placed_all if disjoint else [])
            if all(np.hypot(*(c - o)) >= 2 * radius + gap for o in others):
                mine.append(c)
        placed_all += mine
        mask = np.zeros((height, width), dtype=bool)
        for cx, cy in mine:
            mask |= (x - cx) ** 2 + (y - cy) ** 2 < radius * radius
        out.append(mask)
    return torch.as_tensor(np.stack(out), dtype=torch.float32) * PEAK


def summarize_tensor(x) -> object:
    """metrics.summarize over the first (seed) dim of x, nested as lists for the rest:
    (S,) -> dict, (S, n) -> [dict] * n, (S, n, m) -> [[dict] * m] * n."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() == 1:
        return summarize(x)
    return [summarize_tensor(x[:, i]) for i in range(x.shape[1])]


def mean_ci(stat: dict) -> list:
    """[mean, ci95_low, ci95_high] of a summarize dict (for compact tables)."""
    return [stat["mean"], stat["ci95_low"], stat["ci95_high"]]


# --------------------------------------------------------------------------- plotting
# (edges only: the studies call these after all numbers are computed)

def plot_matrix(ax, mean, rows, cols, title, vmin=0.0, vmax=1.0, cmap="viridis"):
    """Heat map of a (C, P) matrix with its values written in the cells."""
    m = np.asarray(mean, dtype=float)
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if m[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_title(title, fontsize=8)
    return im


def plot_band(ax, x, stats, label, **kw):
    """Mean line with its 95% interval as a band, from a list of summarize dicts."""
    mean = [s["mean"] for s in stats]
    lo = [s["ci95_low"] if s["ci95_low"] is not None else s["mean"] for s in stats]
    hi = [s["ci95_high"] if s["ci95_high"] is not None else s["mean"] for s in stats]
    line, = ax.plot(x, mean, marker="o", ms=3, label=label, **kw)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
    return line


def slot_patterns(n_patterns: int, height: int, width: int, slots_per_side: int = 8,
                  spots: int = 8, radius: float | None = None, seed: int = 0,
                  disjoint: bool = False) -> torch.Tensor:
    """Equal-area sparse patterns on a lattice of spot slots (like sparse binary codes).

    The grid is cut into slots_per_side^2 square slots; slot i can hold one disc of
    `radius` cells (default 0.375 x the slot side) at its centre. Each pattern lights
    `spots` slots, so every pattern has exactly the same area. disjoint=False: each
    pattern draws its slots independently (patterns overlap by chance, on average
    spots^2 / slots shared slots per pair); disjoint=True: no slot is used twice (at most
    slots // spots patterns). Returns (n_patterns, H, W) float32, PEAK inside.
    """
    n_slots = slots_per_side * slots_per_side
    if not 1 <= spots <= n_slots:
        raise ValueError(f"spots={spots} must be in 1..{n_slots}")
    if disjoint and n_patterns * spots > n_slots:
        raise ValueError(f"{n_patterns} disjoint patterns of {spots} spots need "
                         f"{n_patterns * spots} slots; the lattice has {n_slots}")
    sy, sx = height / slots_per_side, width / slots_per_side
    r = 0.375 * min(sx, sy) if radius is None else float(radius)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_slots)
    y, x = np.mgrid[0:height, 0:width]
    discs = []
    for i in range(n_slots):
        cy, cx = (i // slots_per_side + 0.5) * sy, (i % slots_per_side + 0.5) * sx
        discs.append((x - cx) ** 2 + (y - cy) ** 2 < r * r)
    out = []
    for p in range(int(n_patterns)):
        chosen = (order[p * spots:(p + 1) * spots] if disjoint
                  else rng.choice(n_slots, size=spots, replace=False))
        out.append(np.any([discs[i] for i in chosen], axis=0))
    return torch.as_tensor(np.stack(out), dtype=torch.float32) * PEAK
