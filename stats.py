"""The one statistics block of every study's JSON: per-seed values in, a dict out.

    {"mean", "std", "ci95_low", "ci95_high", "n", "per_seed", "method"}

`method` names the 95% interval, from one closed list (METHODS):
  t                     Student-t interval of the mean (roughly normal per-seed values)
  t_clipped             the same, clipped to a bounded metric's range (cosine, IoU in
                        [0, 1]): the true mean lies inside the bounds, so coverage is kept
  bootstrap_bca         seeded BCa bootstrap of the mean: far-from-normal values (seven
                        0.000 and one 0.35); inside [min, max] of the values
  bootstrap_percentile  seeded percentile bootstrap (BCa's fallback when it degenerates)
  wilson                Wilson score interval of a rate of 0/1 outcomes
  clopper_pearson       Clopper-Pearson ("exact" binomial) interval of a rate
  exact                 every seed gave the same value: a deterministic figure, n = 1
                        measurement, interval = the value
  none                  one value, or a non-finite one: no interval (null)
A rate's block also holds "k" (successes). Studies may add keys ("published",
"nan_seeds"); docs/results.schema.json checks the block.

This module imports nothing of the project (scipy only when an interval needs it).
"""
from __future__ import annotations

import functools
import math

METHODS = ("t", "t_clipped", "bootstrap_bca", "bootstrap_percentile", "wilson",
           "clopper_pearson", "exact", "none")
RATE_METHODS = ("wilson", "clopper_pearson")
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
BOUND_SLACK = 1e-5   # float32 rounding past a bound (a cosine of 1 + 6e-8) is clipped


def _floats(values) -> list[float]:
    values = values.tolist() if hasattr(values, "tolist") else values
    if isinstance(values, (int, float)):
        values = [values]
    out = []
    for v in values:   # nested (a tensor of shape (S, 1)): flatten
        out.extend(_floats(v) if isinstance(v, (list, tuple)) else [float(v)])
    return out


@functools.lru_cache(maxsize=None)
def t_quantile_975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    from scipy.special import stdtrit   # what scipy.stats.t.ppf calls; 1 s less to import
    return float(stdtrit(dof, 0.975))


def summarize(values, method: str = "t", bounds=None, seed: int = BOOTSTRAP_SEED,
              resamples: int = BOOTSTRAP_RESAMPLES, drop_nan: bool = False) -> dict:
    """The statistics block of per-seed values (module docstring).

    method: "t" (clipped to `bounds` when it reaches past them: "t_clipped"),
    "bootstrap_bca", "bootstrap_percentile", "wilson" or "clopper_pearson" (0/1
    outcomes: `rate`). Every seed equal (n > 1): method "exact"; one value or a
    non-finite one: no interval, method "none". bounds=(low, high): a mean past them by
    more than rounding is an error. drop_nan: leave non-finite values out (a recall that
    never settled), counted in "nan_seeds", null in "per_seed".
    """
    if drop_nan:
        raw = _floats(values)
        kept = [v for v in raw if math.isfinite(v)]
        if not kept:
            return {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": 0,
                    "per_seed": [None] * len(raw), "method": "none", "nan_seeds": len(raw)}
        block = summarize(kept, method, bounds, seed, resamples)
        return {**block, "per_seed": [v if math.isfinite(v) else None for v in raw],
                "nan_seeds": len(raw) - len(kept)}
    if method in RATE_METHODS:
        return rate(values, method)
    if method not in ("t", "bootstrap_bca", "bootstrap_percentile"):
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS[:5])}, "
                         f"clopper_pearson")
    vals = _floats(values)
    n = len(vals)
    if n == 0:
        raise ValueError("summarize() needs at least one value")
    mean = sum(vals) / n
    if bounds is not None and math.isfinite(mean) and not (
            bounds[0] - BOUND_SLACK <= mean <= bounds[1] + BOUND_SLACK):
        raise ValueError(f"mean {mean} lies outside the metric's bounds {tuple(bounds)}")
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    out = {"mean": mean, "std": std, "ci95_low": None, "ci95_high": None, "n": n,
           "per_seed": vals, "method": "none"}
    if n == 1 or not all(math.isfinite(v) for v in vals):   # a diverged seed: said so
        return out
    if max(vals) == min(vals):
        return {**out, "ci95_low": mean, "ci95_high": mean, "method": "exact"}
    if method.startswith("bootstrap"):
        kind = "BCa" if method == "bootstrap_bca" else "percentile"
        lo, hi = bootstrap_interval(vals, seed=seed, n_resamples=resamples, method=kind)
        if not (math.isfinite(lo) and math.isfinite(hi)):   # degenerate BCa
            lo, hi = bootstrap_interval(vals, seed=seed, n_resamples=resamples,
                                        method="percentile")
            method = "bootstrap_percentile"
        return {**out, "ci95_low": lo, "ci95_high": hi, "method": method}
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
        return {**out, "ci95_low": max(lo, float(bounds[0])),
                "ci95_high": min(hi, float(bounds[1])), "method": "t_clipped"}
    return {**out, "ci95_low": lo, "ci95_high": hi, "method": "t"}


def rate(outcomes, method: str = "wilson") -> dict:
    """The block of 0/1 outcomes (success per seed or per unit): mean = the success rate,
    k = successes, the interval Wilson's or Clopper-Pearson's, always inside [0, 1].
    Wilson also takes each unit's correct share in [0, 1] (a unit's outcome averaged
    over seeds): k is then their sum, not an integer."""
    if method not in RATE_METHODS:
        raise ValueError(f"rate method {method!r} is not one of {', '.join(RATE_METHODS)}")
    vals = _floats(outcomes)
    shares = method == "wilson" and all(0.0 <= v <= 1.0 for v in vals)
    if not shares and any(v not in (0.0, 1.0) for v in vals):
        raise ValueError(f"a rate takes 0/1 outcomes, got {vals}")
    n = len(vals)
    if n == 0:
        raise ValueError("a rate needs at least one outcome")
    k = sum(vals)
    k = int(k) if all(v in (0.0, 1.0) for v in vals) else k
    interval = wilson_interval if method == "wilson" else clopper_pearson_interval
    lo, hi = interval(k, n)
    lo, hi = min(lo, k / n), max(hi, k / n)    # rounding at a rate of 0 or 1
    mean = k / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "ci95_low": lo, "ci95_high": hi, "n": n,
            "per_seed": vals, "method": method, "k": k}


def sign_test(a, b, names=("a", "b")) -> dict:
    """Exact McNemar (sign) test over paired units: a unit counts for a when its value
    (e.g. its correct share) is higher under a than under b, and vice versa; ties drop
    out (with 0/1 outcomes: the classic test). {"<a>_better", "<b>_better", "p_value"}."""
    from scipy.stats import binomtest

    pairs = list(zip(_floats(a), _floats(b)))
    x, y = sum(u > v for u, v in pairs), sum(u < v for u, v in pairs)
    return {f"{names[0]}_better": x, f"{names[1]}_better": y,
            "p_value": float(binomtest(x, x + y).pvalue) if x + y else 1.0}


def summarize_tensor(x, method: str = "t", bounds=None) -> object:
    """summarize over the first (seed) dim of x, nested as lists for the rest:
    (S,) -> block, (S, n) -> [block] * n, (S, n, m) -> [[block] * m] * n."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() == 1:
        return summarize(x, method, bounds)
    return [summarize_tensor(x[:, i], method, bounds) for i in range(x.shape[1])]


def _normal_quantile(confidence: float) -> float:
    from scipy.special import ndtri
    return float(ndtri(0.5 + confidence / 2))


def _check_count(successes, n, whole: bool = True):
    if int(n) != n or n < 1 or (whole and int(successes) != successes) or not 0 <= successes <= n:
        raise ValueError(f"need integers 0 <= successes <= n and n >= 1, got {successes}/{n}")
    return (int(successes) if whole else float(successes)), int(n)


def wilson_interval(successes, n, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate successes / n (Wilson 1927; Newcombe
    1998, method 3). Inside [0, 1], and sensible at 0/n and n/n. successes may be a sum of
    shares (not an integer)."""
    k, n = _check_count(successes, n, whole=False)
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
    import warnings

    import numpy as np
    from scipy import stats   # ~1.5 s to import: only when a bootstrap is asked for

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a bootstrap interval needs >= 2 values, got {len(x)}")
    stat = np.mean if stat is None else stat
    if np.ptp(x) == 0:
        v = float(stat(x))
        return v, v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # BCa on a few distinct values warns; caller checks
        res = stats.bootstrap((x,), stat, n_resamples=int(n_resamples),
                              confidence_level=confidence, method=method,
                              rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def format_stat(block: dict, digits: int = 3) -> str:
    """'0.933 [0.921, 0.945]' (mean [95% interval]); the mean alone without an interval
    ('nan' without a mean)."""
    if block is None or block.get("mean") is None:
        return "nan"
    if block.get("ci95_low") is None:
        return f"{block['mean']:.{digits}f}"
    return (f"{block['mean']:.{digits}f} [{block['ci95_low']:.{digits}f}, "
            f"{block['ci95_high']:.{digits}f}]")
