"""Similarity between a V field and a target, batched over a leading dimension.

`cosine_similarity` is the reference study's "recall quality". Cosine ignores scale (a
faint copy of the target scores 1.0), so the study also reports `iou` of thresholded
masks (scale-aware) and `pearson` correlation (ignores offset and scale, but not shape).
Per-seed values become a statistics block in stats.py.
"""
from __future__ import annotations

import math

import torch

EMPTY_SUM = 0.01  # reference rule: similarity is 0 when V or target sums below this


def _aligned(V, target, spatial_dims=2):
    """V as (B, *grid) and target as (1, *grid) (shared by the batch) or (B, *grid), in
    V's dtype. V is (B, *grid) or (*grid); target is (*grid) or (B, *grid). grid has
    `spatial_dims` dims (2, or 3 for a 3D medium)."""
    if V.dim() == spatial_dims:
        V = V.unsqueeze(0)
    t = target.to(V.dtype)
    if t.dim() == spatial_dims:
        t = t.unsqueeze(0)
    if t.shape[1:] != V.shape[1:] or (target.dim() != spatial_dims and t.shape != V.shape):
        raise ValueError(f"V has shape {tuple(V.shape)} but target has shape "
                         f"{tuple(target.shape)}")
    return V, t


def _flat(V, target, spatial_dims=2):
    """(B, N) views of V and target (see _aligned for the shapes taken)."""
    V, t = _aligned(V, target, spatial_dims)
    return V.flatten(1), t.expand_as(V).flatten(1)


def _grid_sum(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Sum over the last spatial_dims dims, one dim at a time (rows, then the grid).
    Staged sums read a non-contiguous view in place and, compiled, vectorise without
    the bookkeeping of one long float32 reduction (they are pairwise-like, so no less
    accurate)."""
    for _ in range(spatial_dims):
        x = x.sum(-1)
    return x


def cosine_similarity(V: torch.Tensor, target: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """Reference recall quality: cos(V, target) per batch member, 0 if either sums < 0.01.

    V: (B, H, W) or (H, W); target: (H, W) or (B, H, W). Returns shape (B,).
    """
    V, t = _aligned(V, target, spatial_dims)
    dot = _grid_sum(V * t, spatial_dims)
    norm = _grid_sum(V * V, spatial_dims).sqrt() * _grid_sum(t * t, spatial_dims).sqrt()
    cos = dot / norm.clamp_min(1e-12)
    empty = (_grid_sum(V, spatial_dims) < EMPTY_SUM) | (_grid_sum(t, spatial_dims) < EMPTY_SUM)
    return torch.where(empty, torch.zeros_like(cos), cos)


def iou(V: torch.Tensor, target: torch.Tensor, threshold: float = 0.3,
        spatial_dims: int = 2) -> torch.Tensor:
    """Intersection over union of the masks V > threshold and target > threshold.
    Scale-aware: a faint copy below the threshold scores 0. An empty union scores 0."""
    v, t = _flat(V, target, spatial_dims)
    a, b = v > threshold, t > threshold
    inter = (a & b).sum(1).to(v.dtype)
    union = (a | b).sum(1).to(v.dtype)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))


def pearson(V: torch.Tensor, target: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """Pearson correlation of V and target per member; 0 when either is constant."""
    v, t = _flat(V, target, spatial_dims)
    v = v - v.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    denom = v.norm(dim=1) * t.norm(dim=1)
    r = (v * t).sum(1) / denom.clamp_min(1e-12)
    return torch.where(denom > 1e-12, r, torch.zeros_like(r))


METRICS = {"cosine": cosine_similarity, "iou": iou, "pearson": pearson}
METRIC_NAMES = tuple(METRICS)
# The range of each metric on this project's fields (V and targets are >= 0, so their
# cosine is too): summaries clip their intervals to it (summarize's bounds).
BOUNDS = {"cosine": (0.0, 1.0), "iou": (0.0, 1.0), "pearson": (-1.0, 1.0)}


def discrimination_index(matrix) -> float:
    """How much more each cue recalls its own pattern than the other stored ones.

    matrix[i][j] = similarity of the recall from cue i to stored pattern j (square, cue i
    belongs to pattern i). Index = mean_i ( M[i, i] - mean_{j != i} M[i, j] ).
    0 means the substrate recalls the same thing whatever the cue (an imprint, not an
    associative memory); 1 is perfect recall with no cross-talk.
    """
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"discrimination needs a square matrix of >= 2 patterns, got "
                         f"shape {tuple(m.shape)}")
    n = m.shape[0]
    diag = m.diagonal()
    off = (m.sum(1) - diag) / (n - 1)
    return float((diag - off).mean())


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


# ---- sequence read-outs -----------------------------------------------------------------
# A replay is read from similarity curves: curves[t, b, p] = similarity of member b's V at
# record t to stored item p. An item's peak is its curve's maximum (first occurrence); the
# order recovered is the items sorted by peak time. An item whose maximum stays below
# `min_peak` never peaks: its time is NaN, it is left out of the recovered order, it
# breaks exact order, and Kendall's tau ranks it after every item that does peak.


def similarity_curves(frames: torch.Tensor, patterns: torch.Tensor, metric: str = "cosine",
                      spatial_dims: int = 2) -> torch.Tensor:
    """frames (T, B, *grid) against patterns (P, *grid) or (B, P, *grid): (T, B, P)."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {sorted(METRICS)}")
    if frames.dim() != spatial_dims + 2:
        raise ValueError(f"frames have shape {tuple(frames.shape)}; expected (T, B, *grid) "
                         f"with {spatial_dims} grid dims")
    T, B = frames.shape[:2]
    pats = patterns if patterns.dim() == spatial_dims + 2 else patterns.unsqueeze(0)
    if pats.shape[0] not in (1, B) or pats.shape[2:] != frames.shape[2:]:
        raise ValueError(f"patterns have shape {tuple(patterns.shape)}; expected (P, *grid) "
                         f"or ({B}, P, *grid) with grid {tuple(frames.shape[2:])}")
    flat = frames.reshape(T * B, *frames.shape[2:])
    out = []
    for p in range(pats.shape[1]):
        target = pats[:, p].expand(B, *frames.shape[2:]).repeat(T, *([1] * spatial_dims))
        out.append(METRICS[metric](flat, target, spatial_dims=spatial_dims).view(T, B))
    return torch.stack(out, dim=-1)


def _check_curves(curves) -> torch.Tensor:
    c = torch.as_tensor(curves, dtype=torch.float64)
    if c.dim() != 3 or c.shape[0] < 1:
        raise ValueError(f"curves have shape {tuple(c.shape)}; expected (T >= 1, B, P)")
    return c


def _record_steps(T: int, steps) -> torch.Tensor:
    s = torch.arange(T, dtype=torch.float64) if steps is None else torch.as_tensor(
        steps, dtype=torch.float64)
    if s.shape != (T,) or (s[1:] <= s[:-1]).any():
        raise ValueError(f"steps must be {T} increasing record steps, got {tuple(s.shape)}")
    return s


def peak_heights(curves, skip: int = 0) -> torch.Tensor:
    """(B, P) maximum of each item's curve over records t >= skip."""
    c = _check_curves(curves)
    return c[skip:].amax(0)


def peak_times(curves, steps=None, min_peak: float = 0.0, skip: int = 0) -> torch.Tensor:
    """(B, P) step of each item's peak (first maximum over records t >= skip); NaN for an
    item whose maximum is below min_peak. steps: the step of each record (default 0..T-1)."""
    c = _check_curves(curves)
    if not 0 <= skip < c.shape[0]:
        raise ValueError(f"skip={skip} must be in [0, {c.shape[0]})")
    s = _record_steps(c.shape[0], steps)
    tail = c[skip:]
    idx = tail.argmax(0) + skip          # torch.argmax returns the first maximum
    t = s[idx]
    return torch.where(tail.amax(0) >= min_peak, t, torch.full_like(t, float("nan")))


def _check_order(order, P: int) -> list:
    order = list(range(P)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(P)):
        raise ValueError(f"order={order} must be a permutation of 0..{P - 1}")
    return order


def recovered_order(times) -> list:
    """Per member, the items that peak, sorted by peak time (ties keep item order)."""
    t = torch.as_tensor(times, dtype=torch.float64)
    return [[int(i) for i in sorted((i for i in range(len(row)) if not torch.isnan(row[i])),
                                    key=lambda i: float(row[i]))] for row in t]


def exact_order(times, order=None) -> torch.Tensor:
    """(B,) bool: every item peaks and the peak times increase strictly along `order`
    (default 0, 1, ..., P - 1). A tie is not an order."""
    t = torch.as_tensor(times, dtype=torch.float64)
    o = _check_order(order, t.shape[1])
    along = t[:, o]
    return ~torch.isnan(along).any(1) & (along[:, 1:] > along[:, :-1]).all(1)


def kendall_tau(times, order=None) -> torch.Tensor:
    """(B,) Kendall's tau-b between the intended position of each item and its peak time
    (scipy.stats.kendalltau). Items that never peak share one time after every peak.
    1 = the intended order, -1 = reversed; 0 where undefined (fewer than two distinct
    times: no order recovered, scored as chance)."""
    from scipy.stats import kendalltau

    t = torch.as_tensor(times, dtype=torch.float64)
    o = _check_order(order, t.shape[1])
    position = [0] * len(o)
    for rank, item in enumerate(o):
        position[item] = rank
    out = []
    for row in t:
        late = (row[~torch.isnan(row)].max().item() + 1) if (~torch.isnan(row)).any() else 0.0
        filled = torch.where(torch.isnan(row), torch.full_like(row, late), row)
        tau = kendalltau(position, filled.tolist()).statistic
        out.append(0.0 if tau != tau else float(tau))   # NaN (undefined) -> 0
    return torch.tensor(out, dtype=torch.float64)


def hold_times(curves, threshold: float, record_every: float = 1.0) -> torch.Tensor:
    """(B, P) time each item is held: the longest run of consecutive records with the
    curve at or above threshold, times record_every (records must be evenly spaced)."""
    c = _check_curves(curves)
    above = (c >= threshold).to(torch.int64)
    run = torch.zeros_like(above[0])
    best = torch.zeros_like(above[0])
    for a in above:                      # T is small (records), B x P vectorised
        run = (run + 1) * a
        best = torch.maximum(best, run)
    return best.to(torch.float64) * float(record_every)


def sequence_readout(curves, order=None, steps=None, min_peak: float = 0.0,
                     hold_threshold: float = 0.6, skip: int = 0) -> dict:
    """Every sequence read-out of (T, B, P) curves, per member: {"peak_time", "peak_height",
    "hold_time" (B, P) float64; "exact_order" (B,) bool; "kendall_tau" (B,); "order": the
    recovered orders}. hold_time is in steps when steps are evenly spaced."""
    c = _check_curves(curves)
    s = _record_steps(c.shape[0], steps)
    every = float(s[1] - s[0]) if len(s) > 1 else 1.0
    times = peak_times(c, s, min_peak, skip)
    return {"peak_time": times, "peak_height": peak_heights(c, skip),
            "hold_time": hold_times(c[skip:], hold_threshold, every),
            "exact_order": exact_order(times, order), "kendall_tau": kendall_tau(times, order),
            "order": recovered_order(times)}



# ---- associative read-outs -------------------------------------------------------------
# Does a medium complete a part of a stored pattern, prefer the pattern it was cued with,
# and refuse what was never stored? Each read-out is a pure function of recalled V fields
# (and masks), batched over leading dims; "settled" is decided from a recorded curve.

COMPLETION_MIN = 0.8    # capacity: mean settled completion at least this
SELECTIVITY_MIN = 0.5   # and mean settled selectivity at least this


def masked_cosine(V: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """cosine_similarity of V and target on the cells of `region` only (bool, broadcast
    against V's (..., H, W)); 0 where V or target sums below EMPTY_SUM there."""
    r = region.to(V.dtype)
    lead = torch.broadcast_shapes(V.shape, target.shape, r.shape)[:-2]
    v = (V * r).expand(*lead, *V.shape[-2:]).reshape(-1, *V.shape[-2:])
    t = (target.to(V.dtype) * r).expand(*lead, *V.shape[-2:]).reshape(-1, *V.shape[-2:])
    return cosine_similarity(v, t).reshape(lead) if lead else cosine_similarity(v, t)[0]


def completion(V_part, V_full, target, cue_mask, threshold: float = 0.3):
    """How well the part of a pattern that the cue left out regrows.

    masked_cosine(V_part, target) on the cells of the target's mask (target > threshold)
    that cue_mask does not contain, divided by the same for V_full (the recall from the
    full cue). 1: the missing part regrows as with the whole cue; 0: it stays dark.
    NaN where the full-cue recall itself is 0 there (nothing to compare with)."""
    missing = (target > threshold) & ~cue_mask.to(torch.bool)
    part = masked_cosine(V_part, target, missing)
    full = masked_cosine(V_full, target, missing)
    return torch.where(full > 0, part / full.clamp_min(1e-12), torch.full_like(part, math.nan))


def selectivity(matrix: torch.Tensor) -> torch.Tensor:
    """matrix (..., n, P), P >= n >= 1 and P >= 2: row i is the recall from pattern i's
    cue against every stored pattern. Returns (..., n): M[i, i] minus the largest
    M[i, j], j != i (1: only its own pattern; <= 0: another one is at least as close)."""
    m = torch.as_tensor(matrix)
    n, P = m.shape[-2:]
    if P < 2 or n > P:
        raise ValueError(f"selectivity needs >= 2 patterns and at most one cue row per "
                         f"pattern; got a {n} x {P} matrix")
    own = m.diagonal(dim1=-2, dim2=-1)[..., :n]
    eye = torch.eye(n, P, dtype=torch.bool, device=m.device)
    others = m.masked_fill(eye, -math.inf).amax(-1)
    return own - others


def largest_similarity(similarities: torch.Tensor) -> torch.Tensor:
    """(..., P) similarities of one recall to P stored patterns -> (...,) the largest:
    for a uniform-V start or a never-stored cue, how far it recalls any stored pattern."""
    return torch.as_tensor(similarities).amax(-1)


def rejection(similarities: torch.Tensor, V: torch.Tensor, foreign_mask: torch.Tensor,
              threshold: float = 0.3) -> dict:
    """Recall from a never-stored pattern Q's cue: {"largest": the largest similarity of
    the output to any stored pattern ((..., P) -> (...,)), "amplified": IoU of the
    output mask V > threshold with Q's mask (is Q itself grown?)}."""
    H, W = V.shape[-2:]
    lead = V.shape[:-2]
    q = foreign_mask.to(V.dtype).expand_as(V).reshape(-1, H, W)
    grown = iou(V.reshape(-1, H, W), q, threshold).reshape(lead)
    return {"largest": largest_similarity(similarities), "amplified": grown}


def state_change(V_before: torch.Tensor, V_after: torch.Tensor) -> torch.Tensor:
    """Mean |V_after - V_before| per cell over the last two dims: (..., H, W) -> (...)."""
    return (V_after - V_before).abs().mean((-2, -1))


def associative_capacity(ks, completion_mean, selectivity_mean,
                         completion_min: float = COMPLETION_MIN,
                         selectivity_min: float = SELECTIVITY_MIN) -> int:
    """The largest k of the unbroken run of passes from the smallest k, a pass being
    mean settled completion >= completion_min and mean selectivity >= selectivity_min
    (selectivity None: undefined at k = 1, passes). 0 when the smallest k fails."""
    ks = [int(k) for k in ks]
    if not (len(ks) == len(completion_mean) == len(selectivity_mean)):
        raise ValueError(f"{len(ks)} k values, {len(completion_mean)} completions and "
                         f"{len(selectivity_mean)} selectivities")
    if any(b <= a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"ks must increase strictly, got {ks}")
    capacity = 0
    for k, c, s in zip(ks, completion_mean, selectivity_mean):
        c_ok = c is not None and math.isfinite(c) and c >= completion_min
        s_ok = s is None or (math.isfinite(s) and s >= selectivity_min)
        if not (c_ok and s_ok):
            break
        capacity = k
    return capacity


def nearest(sims: torch.Tensor) -> torch.Tensor:
    """(..., P) similarities -> index of the most similar template, or -1 (no answer)
    where the best is tied (an empty V is equally far from every template)."""
    top = sims.topk(2, dim=-1)
    return torch.where(top.values[..., 0] > top.values[..., 1], top.indices[..., 0], -1)


def cosine_matrix(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(C, H, W) images against (P, H, W) templates: (C, P) cosine similarities."""
    nx = torch.nn.functional.normalize(X.flatten(1).double(), dim=1)
    nt = torch.nn.functional.normalize(T.flatten(1).double(), dim=1)
    return nx @ nt.T


def template_leak(templates: torch.Tensor, V: torch.Tensor, labels: torch.Tensor,
                  lit: float = 0.3) -> dict:
    """Where recalls light, against the stored templates. templates (S, P, H, W), V
    (S, C, H, W) the recalls of C cues whose own templates are labels (C,). Returns the
    lit share of the grid, the share of the other templates' exclusive mask cells the
    recalls light (0: only their own; 1: every stored pattern), and the templates' mean
    and union mask areas (cells above lit)."""
    masks = templates > lit                               # (S, P, H, W)
    own = masks[:, labels]                                # (S, C, H, W)
    others = ((masks.sum(1, keepdim=True) - own.int()) > 0) & ~own
    on = V > lit
    leak = (on & others).flatten(2).sum(-1) / others.flatten(2).sum(-1).clamp_min(1)
    return {"lit_fraction": on.float().mean().item(),
            "others_exclusive_lit": leak.float().mean().item(),
            "template_area": masks.float().mean().item(),
            "template_union_area": masks.any(1).float().mean().item()}
