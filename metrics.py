"""Similarity between a V field and a target, batched over a leading dimension.

`cosine_similarity` is the reference study's "recall quality". Cosine ignores scale (a
faint copy of the target scores 1.0), so the study also reports `iou` of thresholded
masks (scale-aware) and `pearson` correlation (ignores offset and scale, but not shape).
`summarize` turns per-seed values into mean, std and a 95% interval that fits the data:
Student-t for roughly normal means (clipped to a bounded metric's range), Wilson for
0/1 success rates, a seeded BCa bootstrap for far-from-normal values
(`wilson_interval`, `clopper_pearson_interval`, `bootstrap_interval`).
"""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def t_quantile_975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    from scipy.special import (
        stdtrit,  # what scipy.stats.t.ppf calls; 1 s less to import
    )
    return float(stdtrit(dof, 0.975))


SUMMARY_KINDS = ("mean", "rate", "bootstrap")
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def summarize(values, kind: str = "mean", bounds=None, seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean, sample std and a 95% interval over seeds; `method` names the interval.

    kind="mean": Student-t interval of the mean (roughly normal per-seed values). With
        `bounds=(low, high)` (a bounded metric: cosine, IoU, accuracy in [0, 1]) a t
        interval reaching past a bound is clipped to it (method "t, clipped to bounds").
        Clipping keeps the t interval's coverage, since the true mean lies inside the
        bounds; a percentile bootstrap, the other option, covers less than 95% at 3-8
        seeds.
    kind="rate": values are 0/1 outcomes (success per seed); the mean is the success
        rate and the interval Wilson's score interval, always inside [0, 1].
    kind="bootstrap": far-from-normal values (e.g. seven 0.000 and one 0.166): BCa
        bootstrap of the mean (`bootstrap_interval`, seeded, so the same values give
        the same interval); inside [min, max] of the values, so inside any bounds.
    With a single value, or a non-finite one, the interval is undefined and reported as
    null (None).
    """
    if kind not in SUMMARY_KINDS:
        raise ValueError(f"summarize kind {kind!r} is not one of {', '.join(SUMMARY_KINDS)}")
    vals = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    n = len(vals)
    if n == 0:
        raise ValueError("summarize() needs at least one value")
    if kind == "rate" and any(v not in (0.0, 1.0) for v in vals):
        raise ValueError(f"summarize(kind='rate') takes 0/1 outcomes, got {vals}")
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    out = {"mean": mean, "std": std, "ci95_low": None, "ci95_high": None, "n": n,
           "per_seed": vals, "method": None}
    if kind == "rate":
        lo, hi = wilson_interval(sum(vals), n)
        return {**out, "ci95_low": lo, "ci95_high": hi, "method": "wilson"}
    if n == 1:
        return out
    if not all(math.isfinite(v) for v in vals):   # a diverged seed: no interval, said so
        return {**out, "method": "undefined: non-finite values"}
    if kind == "bootstrap":
        lo, hi = bootstrap_interval(vals, seed=seed)
        return {**out, "ci95_low": lo, "ci95_high": hi, "method": "bootstrap BCa"}
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    lo, hi, method = mean - half, mean + half, "t"
    if bounds is not None:
        low, high = float(bounds[0]), float(bounds[1])
        if not low <= mean <= high:
            raise ValueError(f"mean {mean} lies outside the metric's bounds {tuple(bounds)}")
        if lo < low or hi > high:
            lo, hi, method = max(lo, low), min(hi, high), "t, clipped to bounds"
    return {**out, "ci95_low": lo, "ci95_high": hi, "method": method}


def _normal_quantile(confidence: float) -> float:
    from scipy.special import ndtri
    return float(ndtri(0.5 + confidence / 2))


def _check_count(successes, n):
    if int(n) != n or n < 1 or int(successes) != successes or not 0 <= successes <= n:
        raise ValueError(f"need integers 0 <= successes <= n and n >= 1, got {successes}/{n}")
    return int(successes), int(n)


def wilson_interval(successes, n, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate successes / n (Wilson 1927; Newcombe
    1998, method 3). Inside [0, 1], and sensible at 0/n and n/n."""
    k, n = _check_count(successes, n)
    z = _normal_quantile(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)


def clopper_pearson_interval(successes, n, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson ("exact") interval for a binomial rate: beta quantiles, never
    below the nominal coverage (conservative)."""
    from scipy.special import betaincinv

    k, n = _check_count(successes, n)
    alpha = 1 - confidence
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return lo, hi


def bootstrap_interval(values, stat=None, n_resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED, confidence: float = 0.95,
                       method: str = "BCa") -> tuple[float, float]:
    """Bootstrap interval of stat(values) (default the mean) via scipy.stats.bootstrap,
    BCa by default ("percentile" also accepted); the same seed gives the same interval.
    Equal values give the zero-width interval at that value. Needs >= 2 values."""
    import numpy as np
    from scipy import stats   # ~1.5 s to import: only when a bootstrap is asked for

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a bootstrap interval needs >= 2 values, got {len(x)}")
    stat = np.mean if stat is None else stat
    if np.ptp(x) == 0:
        v = float(stat(x))
        return v, v
    res = stats.bootstrap((x,), stat, n_resamples=int(n_resamples), confidence_level=confidence,
                          method=method, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def format_stat(stat: dict, digits: int = 3) -> str:
    """'0.933 [0.921, 0.945]' (mean [95% interval]), or just the mean for n=1."""
    if stat.get("ci95_low") is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['ci95_low']:.{digits}f}, {stat['ci95_high']:.{digits}f}]"


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


def summarize_tensor(x, kind: str = "mean", bounds=None) -> object:
    """metrics.summarize over the first (seed) dim of x, nested as lists for the rest:
    (S,) -> dict, (S, n) -> [dict] * n, (S, n, m) -> [[dict] * m] * n."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() == 1:
        return summarize(x, kind, bounds)
    return [summarize_tensor(x[:, i], kind, bounds) for i in range(x.shape[1])]


def mean_ci(stat: dict) -> list:
    """[mean, ci95_low, ci95_high] of a summarize dict (for compact tables)."""
    return [stat["mean"], stat["ci95_low"], stat["ci95_high"]]

