"""The competing-memories battery: five rows that any medium which stores patterns and
recalls them from cues can be run on (experiments/compete.py runs it; docs/findings/
compete.md reads it).

A medium enters through two methods (the `Memory` protocol below):

    store(patterns (S, P, H, W), seeds, snapshots=()) -> (stored, {k: stored after k})
        write the P patterns in turn (seed s's medium gets patterns[s]); `stored` is
        whatever the medium keeps (its scarred fields), opaque to the battery
    recall(stored, cues (S, C, H, W)) -> (activity (S, C, H, W), info)
        run every cue of seed s on seed s's stored medium until it has settled; the
        activity is what similarity reads; info may hold "steps" (steps run) and
        "settled" ((S, C) bool)

Cues and patterns are V-like fields in [0, 1] (patterns.PEAK inside a shape); a medium
reads a cue as its starting state. Rows and targets (far end of each 95% interval):

  compete    mixed cue (half of one stored pattern plus half of another, every pair of
             the k_main stored four-disc patterns whose own cosine is <= PAIR_MAX): larger
             similarity >= 0.7 and smaller <= 0.3 in >= 90% of trials (Wilson interval;
             trials of one seed share a medium)
  refuse     no cue and noise of std 0.05-0.3; uniform levels with and without noise;
             never-stored four-disc patterns on (25-50% of their area) and off (nothing
             within 4 reference cells) the stored patterns: largest similarity <= 0.3
  complete   each stored four-disc pattern cued with two of its four discs: completion
             (metrics.completion against the full-cue recall) >= 0.8
  overlap    the protocol's A, B, C stored in turn: own minus best other >= 0.3, from full
             and from half cues
  capacity   the four-disc family at k = ks stored in turn: the largest k of the unbroken
             run with mean completion >= 0.8 and mean selectivity >= 0.5
             (metrics.associative_capacity); also on the far ends of the intervals

Similarity is cosine (metrics.cosine_similarity) of the settled activity; IoU is kept
beside it. Intervals: stats.summarize (t, clipped to the metric's bounds; "exact" when
every seed gave the same value); rates: Wilson.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Protocol as TypingProtocol

import numpy as np
import torch

import metrics
import patterns
import stats
from protocol import noise_seeds

THRESHOLD = 0.3            # masks: activity or target above this
BLOB_COUNT, BLOB_RADIUS = 4, 18   # the held-out family: discs per pattern, reference radius
FOREIGN_ON = (0.25, 0.5)   # never-stored "on": this share of its area on the stored masks
FOREIGN_MOAT = 4           # never-stored "off": no cell within this many reference cells
PAIR_MAX = 0.15            # compete: a pair counts only if its two patterns' cosine is at
                           # most this (patterns placed by chance can overlap so much that
                           # no memory could recall one at >= 0.7 and the other at <= 0.3)
ROWS = ("compete", "refuse", "complete", "overlap", "capacity")
TARGETS = {"compete": (">=", 0.9), "compete_larger": (">=", 0.7), "compete_smaller": ("<=", 0.3),
           "refuse": ("<=", 0.3), "complete": (">=", 0.8), "overlap": (">=", 0.3),
           "capacity": (">=", 8)}


class Memory(TypingProtocol):
    """What the battery drives (see the module docstring)."""
    name: str

    def store(self, patterns: torch.Tensor, seeds, snapshots=()) -> tuple: ...

    def recall(self, stored, cues: torch.Tensor) -> tuple: ...


@dataclass(frozen=True)
class BatteryConfig:
    """The battery's settings (the cue protocol is the study's phase 3)."""
    grid: int = 256
    cue_strength: float = 0.2
    cue_noise: float = 0.05
    noise_levels: tuple = (0.05, 0.1, 0.2, 0.3)
    uniform_levels: tuple = (0.03, 0.06, 0.12, 0.24, 0.3)
    uniform_noise: float = 0.05            # the uniform levels again with this noise
    k_main: int = 4                        # stored four-disc patterns of compete/refuse/complete
    ks: tuple = (1, 2, 4, 8, 16)
    capacity_cued: int = 4
    rows: tuple = field(default=ROWS)

    def __post_init__(self):
        if self.k_main < 2:
            raise ValueError(f"k_main={self.k_main}: need at least 2 stored patterns")
        if list(self.ks) != sorted(set(self.ks)) or self.ks[0] < 1:
            raise ValueError(f"ks={self.ks}: must increase strictly from >= 1")
        bad = set(self.rows) - set(ROWS)
        if bad:
            raise ValueError(f"rows {sorted(bad)}: choose from {', '.join(ROWS)}")


# ---- patterns and cues ------------------------------------------------------------------

def family(n: int, grid: int, seeds) -> torch.Tensor:
    """(S, n, H, W): n four-disc patterns per seed (discs placed independently, so
    patterns overlap by chance); the associative study's held-out family."""
    return torch.stack([torch.stack([
        patterns.make_pattern("blobs", grid, grid, seed=int(s) * 1009 + j + 50_000,
                              count=BLOB_COUNT, radius=BLOB_RADIUS) for j in range(n)])
        for s in seeds])


def half_of(mask: torch.Tensor, seed: int) -> torch.Tensor:
    """Half of a pattern's mask (H, W bool): half of its connected parts (two of four
    discs), or a straight cut through it if it is one piece."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    if ndimage.label(mask.numpy(), structure=np.ones((3, 3)))[1] >= 2:
        return patterns.component_part(mask, 0.5, int(rng.integers(2 ** 31)))
    return patterns.sweep_part(mask, 0.5, float(rng.uniform(0, 2 * math.pi)))


def halves(pats: torch.Tensor, seeds, salt: int) -> torch.Tensor:
    """(S, P, H, W) bool: per seed and pattern, half_of its mask."""
    return torch.stack([torch.stack([half_of(pats[i, j] > THRESHOLD, int(s) * 7_919 + 31 * j + salt)
                                     for j in range(pats.shape[1])]) for i, s in enumerate(seeds)])


def cue(signal: torch.Tensor, seeds, cfg: BatteryConfig, index: int) -> torch.Tensor:
    """clamp(strength * signal + noise) (S, H, W), the noise drawn per seed (role "cue")."""
    return patterns.make_cue(signal, cfg.cue_strength, cfg.cue_noise,
                             noise_seeds(seeds, "cue", 5_000 + index))


def foreign(union: torch.Tensor, grid: int, seeds, on: bool) -> torch.Tensor:
    """(S, H, W) never-stored four-disc patterns (radius 15 reference cells), per seed:
    on: 25-50% of the area on `union` (S, H, W); off: no cell within FOREIGN_MOAT."""
    from scipy import ndimage

    radius, out = 15 * grid / 256, []
    for i, s in enumerate(seeds):
        near = torch.as_tensor(ndimage.binary_dilation(
            union[i].numpy(), iterations=max(1, round(FOREIGN_MOAT * grid / 256))))
        for attempt in range(4000):
            q = patterns.random_spot_patterns(1, grid, grid, spots=4, radius=radius,
                                              seed=int(s) * 7_919 + attempt + (0 if on else 10 ** 6))[0]
            frac = float(patterns.overlap_fraction(q > THRESHOLD, union[i] if on else near))
            if (on and FOREIGN_ON[0] <= frac <= FOREIGN_ON[1]) or (not on and frac == 0.0):
                out.append(q)
                break
        else:
            raise ValueError(f"no never-stored pattern {'on' if on else 'off'} the stored "
                             f"patterns found for seed {s} on a {grid}^2 grid")
    return torch.stack(out)


# ---- read-outs ------------------------------------------------------------------------

def similarities(V: torch.Tensor, pats: torch.Tensor) -> dict:
    """V (S, C, H, W) against pats (S, P, H, W): {"cosine", "iou": (S, C, P)} float64."""
    S, C, H, W = V.shape
    v = V.reshape(S * C, H, W).float()
    out = {m: torch.empty(S, C, pats.shape[1], dtype=torch.float64) for m in ("cosine", "iou")}
    for j in range(pats.shape[1]):
        t = pats[:, j].to(v).repeat_interleave(C, 0)
        out["cosine"][:, :, j] = metrics.cosine_similarity(v, t).view(S, C).double()
        out["iou"][:, :, j] = metrics.iou(v, t, THRESHOLD).view(S, C).double()
    return out


def stat(values, bounds=(0.0, 1.0)) -> dict:
    """The statistics block over seeds (stats.summarize: t clipped to bounds, "exact" when
    every seed gave the same value); NaN seeds (never settled) dropped and counted."""
    return stats.summarize(torch.as_tensor(values, dtype=torch.float64).flatten().tolist(),
                           "t", bounds=bounds, drop_nan=True)


def rate(flags) -> dict:
    """Successes over trials as a Wilson-interval rate block (stats.rate)."""
    return stats.rate([float(bool(v)) for v in torch.as_tensor(flags).flatten().tolist()])


def far_end(s: dict, op: str):
    """The end of the interval a target is judged on (the mean when n = 1)."""
    key = "ci95_low" if op == ">=" else "ci95_high"
    return s["mean"] if s.get(key) is None else s[key]


def passes(s: dict, target: str) -> bool:
    op, bound = TARGETS[target]
    v = far_end(s, op)
    return v is not None and (v >= bound if op == ">=" else v <= bound)


# ---- the rows ---------------------------------------------------------------------------

def main_cues(pats: torch.Tensor, seeds, cfg: BatteryConfig) -> tuple:
    """The cues of compete, refuse and complete on the k_main stored patterns pats
    (S, k, H, W): (cues (S, C, H, W), names, extras {"pairs", "keep" (S, k, H, W),
    "foreign" {on, off}: (S, H, W)})."""
    S, k, H, W = pats.shape
    keep = halves(pats, seeds, salt=1)
    names, cues, index = [], [], itertools.count()
    pairs = list(itertools.combinations(range(k), 2))
    for i, j in pairs:
        names.append(f"mixed {i}+{j}")
        cues.append(cue(pats[:, i] * keep[:, i] + pats[:, j] * keep[:, j], seeds, cfg, next(index)))
    for j in range(k):
        names.append(f"full {j}")
        cues.append(cue(pats[:, j], seeds, cfg, next(index)))
    for j in range(k):
        names.append(f"half {j}")
        cues.append(cue(pats[:, j] * keep[:, j], seeds, cfg, next(index)))
    for r, sd in enumerate(cfg.noise_levels):
        names.append(f"noise {sd:g}")
        cues.append(patterns.uniform_cue(H, W, 0.0, sd, noise_seeds(seeds, "other", 5_000 + r)))
    for r, level in enumerate(cfg.uniform_levels):
        names.append(f"uniform {level:g}")
        cues.append(patterns.uniform_cue(H, W, level, 0.0, seeds))
        names.append(f"uniform {level:g} + noise {cfg.uniform_noise:g}")
        cues.append(patterns.uniform_cue(H, W, level, cfg.uniform_noise,
                                         noise_seeds(seeds, "other", 5_100 + r)))
    union = (pats > THRESHOLD).any(1)
    extra = {"pairs": pairs, "keep": keep, "foreign": {}}
    for where in ("on", "off"):
        q = foreign(union, H, seeds, where == "on")
        extra["foreign"][where] = q
        names.append(f"never-stored {where}")
        cues.append(cue(q, seeds, cfg, next(index)))
    return torch.stack(cues, 1), names, extra


def main_readout(V, pats, names, extra) -> dict:
    """Per-trial and per-seed read-outs of compete, refuse and complete; V (S, C, H, W)."""
    sims = similarities(V, pats)
    cos = sims["cosine"]
    at = {n: c for c, n in enumerate(names)}
    larger, smaller, win = [], [], []
    for i, j in extra["pairs"]:
        pair = cos[:, at[f"mixed {i}+{j}"]][:, [i, j]]
        hi, lo = pair.amax(-1), pair.amin(-1)
        larger.append(hi)
        smaller.append(lo)
        win.append((hi >= TARGETS["compete_larger"][1]) & (lo <= TARGETS["compete_smaller"][1]))
    larger, smaller, win = (torch.stack(x, 1) for x in (larger, smaller, win))   # (S, pairs)
    eligible = torch.stack([metrics.cosine_similarity(pats[:, i].float(), pats[:, j].float())
                            for i, j in extra["pairs"]], 1) <= PAIR_MAX          # (S, pairs)
    k = pats.shape[1]
    comp = torch.stack([metrics.completion(V[:, at[f"half {j}"]], V[:, at[f"full {j}"]],
                                           pats[:, j], extra["keep"][:, j], THRESHOLD)
                        for j in range(k)], 1).double()
    refuse = {n: cos[:, c].amax(-1) for c, n in enumerate(names)
              if n.startswith(("noise", "uniform", "never-stored"))}
    stored = torch.stack([cos[:, at[f"full {j}"], j] for j in range(k)], 1)
    half_sel = metrics.selectivity(torch.stack([cos[:, at[f"half {j}"]] for j in range(k)], 1))
    return {"compete": {"trials": win[eligible], "larger": larger, "smaller": smaller,
                        "eligible": eligible},
            "complete": comp, "refuse": refuse, "stored": stored, "half_selectivity": half_sel}


def overlap_cues(pats, seeds, cfg) -> tuple:
    """Full and half cues of the protocol's A, B, C (pats (S, 3, H, W)): A loses half its
    spots, B an arc, C a segment (the part drawn per seed)."""
    keep = torch.stack([torch.stack([
        patterns.component_part(pats[i, 0] > THRESHOLD, 0.5, int(s) * 13 + 1),
        patterns.arc_part(pats[i, 1] > THRESHOLD, 0.5, float(np.random.default_rng(int(s)).uniform(0, 2 * math.pi))),
        patterns.sweep_part(pats[i, 2] > THRESHOLD, 0.5, math.pi / 4 + math.pi * (int(s) % 2))])
        for i, s in enumerate(seeds)])
    cues = [cue(pats[:, j], seeds, cfg, 100 + j) for j in range(3)]
    cues += [cue(pats[:, j] * keep[:, j], seeds, cfg, 110 + j) for j in range(3)]
    return torch.stack(cues, 1)


def capacity_cues(pats, k: int, seeds, cfg) -> tuple:
    """Full and half cues of up to cfg.capacity_cued of the first k patterns (spread over
    the storage order): (cues (S, 2n, H, W), cued indices, halves (S, n, H, W))."""
    n = min(k, cfg.capacity_cued)
    cued = sorted({int(round(x)) for x in np.linspace(0, k - 1, n)})
    keep = halves(pats[:, cued], seeds, salt=2)
    cues = [cue(pats[:, j], seeds, cfg, 200 + j) for j in cued]
    cues += [cue(pats[:, j] * keep[:, c], seeds, cfg, 300 + j) for c, j in enumerate(cued)]
    return torch.stack(cues, 1), cued, keep


def capacity_readout(V, pats, cued, keep) -> dict:
    """Per-seed completion (mean over the cued) and half-cue selectivity against all k."""
    n, k = len(cued), pats.shape[1]
    cos = similarities(V, pats)["cosine"]
    comp = torch.stack([metrics.completion(V[:, n + c], V[:, c], pats[:, j], keep[:, c], THRESHOLD)
                        for c, j in enumerate(cued)], 1).double().nanmean(1)
    out = {"completion": comp, "stored": cos[:, torch.arange(n), torch.tensor(cued)].mean(1)}
    if k >= 2:
        rows = torch.stack([cos[:, n + c] for c in range(n)], 1)          # (S, n, k)
        order = cued + [j for j in range(k) if j not in cued]              # own pattern first
        out["selectivity"] = metrics.selectivity(rows[..., order]).mean(1)
    return out


def run_battery(memory: Memory, seeds, cfg: BatteryConfig = BatteryConfig(),
                progress=print) -> dict:
    """Every row of cfg.rows on `memory`. Returns {row: summaries, ..., "verdict"}."""
    seeds, grid, out = list(seeds), cfg.grid, {}
    need_family = {"compete", "refuse", "complete", "capacity"} & set(cfg.rows)
    if need_family:
        n_store = max(cfg.ks[-1] if "capacity" in cfg.rows else 0, cfg.k_main)
        fam = family(n_store, grid, seeds)
        snaps = sorted(set(cfg.ks if "capacity" in cfg.rows else ()) | {cfg.k_main})
        progress(f"{memory.name}: storing {n_store} four-disc patterns")
        _, by_k = memory.store(fam, seeds, snapshots=snaps)
    if {"compete", "refuse", "complete"} & set(cfg.rows):
        pats = fam[:, :cfg.k_main]
        cues, names, extra = main_cues(pats, seeds, cfg)
        progress(f"{memory.name}: recalling {cues.shape[1]} cues x {len(seeds)} seeds")
        V, info = memory.recall(by_k[cfg.k_main], cues)
        r = main_readout(V, pats, names, extra)
        r0 = main_readout(cues, pats, names, extra)
        out["compete"] = {"rate": rate(r["compete"]["trials"]),
                          "larger": stat(r["compete"]["larger"].mean(1)),
                          "smaller": stat(r["compete"]["smaller"].mean(1)),
                          "larger_at_step0": stat(r0["compete"]["larger"].mean(1)),
                          "pairs_per_seed": len(extra["pairs"]),
                          "trials_eligible": int(r["compete"]["eligible"].sum()),
                          "pair_max_cosine": PAIR_MAX}
        out["refuse"] = {n: {"settled": stat(v), "step0": stat(r0["refuse"][n])}
                         for n, v in r["refuse"].items()}
        out["complete"] = {"settled": stat(r["complete"].nanmean(1), None),   # a ratio: may pass 1
                           "stored_full_cue": stat(r["stored"].mean(1)),
                           "half_selectivity": stat(r["half_selectivity"].mean(1), (-1.0, 1.0))}
        out["settle"] = _settle(info)
        out["figure"] = {"cue_mixed": cues[0, 0], "mixed": V[0, 0].float(),
                         "cue_noise": cues[0, names.index("noise 0.1")] if "noise 0.1" in names else cues[0, -1],
                         "noise": V[0, names.index("noise 0.1")].float() if "noise 0.1" in names else V[0, -1].float(),
                         "patterns": pats[0, :2]}
    if "overlap" in cfg.rows:
        from patterns import phase3_targets
        abc = torch.stack(list(phase3_targets(grid).values())).expand(len(seeds), 3, grid, grid)
        progress(f"{memory.name}: storing A, B, C")
        stored, _ = memory.store(abc, seeds)
        cues = overlap_cues(abc, seeds, cfg)
        V, _ = memory.recall(stored, cues)
        cos = similarities(V, abc)["cosine"]
        out["overlap"] = {kind: {n: stat(metrics.selectivity(cos[:, rows])[:, j], (-1.0, 1.0))
                                 for j, n in enumerate("ABC")}
                          for kind, rows in (("full", [0, 1, 2]), ("half", [3, 4, 5]))}
        out["overlap"]["own_full"] = {n: stat(cos[:, j, j]) for j, n in enumerate("ABC")}
    if "capacity" in cfg.rows:
        by = {}
        for k in cfg.ks:
            pats = fam[:, :k]
            cues, cued, keep = capacity_cues(pats, k, seeds, cfg)
            progress(f"{memory.name}: capacity k={k}")
            V, _ = memory.recall(by_k[k], cues)
            by[str(k)] = {m: stat(v, None if m == "completion" else (-1.0, 1.0))
                          for m, v in capacity_readout(V, pats, cued, keep).items()}
        out["capacity"] = {"by_k": by, "capacity": capacity_of(cfg.ks, by, "mean"),
                           "capacity_far_end": capacity_of(cfg.ks, by, "far")}
    out["verdict"] = judge(out)
    return out


def _settle(info) -> dict:
    settled = info.get("settled")
    return {"steps": info.get("steps"),
            "settled_share": None if settled is None else float(torch.as_tensor(settled).float().mean())}


def capacity_of(ks, by, how: str) -> int:
    """metrics.associative_capacity on the means ("mean") or on the far ends ("far")."""
    def get(s, op):
        if s is None:
            return None
        return s["mean"] if how == "mean" else far_end(s, op)
    comp = [get(by[str(k)]["completion"], ">=") for k in ks]
    sel = [get(by[str(k)].get("selectivity"), ">=") for k in ks]
    comp = [math.nan if c is None else c for c in comp]
    return metrics.associative_capacity(list(ks), comp, sel)


def judge(out: dict) -> dict:
    """Each row's target on the far end of its interval: {row: bool or None (not run)}."""
    v = {}
    if "compete" in out:
        v["compete"] = passes(out["compete"]["rate"], "compete")
    if "refuse" in out:
        v["refuse"] = all(passes(r["settled"], "refuse") for r in out["refuse"].values())
        v["refuse_failed"] = [n for n, r in out["refuse"].items() if not passes(r["settled"], "refuse")]
    if "complete" in out:
        v["complete"] = passes(out["complete"]["settled"], "complete")
    if "overlap" in out:
        v["overlap"] = all(passes(out["overlap"][kind][n], "overlap")
                           for kind in ("full", "half") for n in "ABC")
    if "capacity" in out:
        v["capacity"] = out["capacity"]["capacity_far_end"] >= TARGETS["capacity"][1]
    v["targets_1_to_4"] = all(v.get(r) for r in ("compete", "refuse", "complete", "overlap"))
    return v


def with_grid(cfg: BatteryConfig, grid: int, rows=None) -> BatteryConfig:
    return replace(cfg, grid=grid, rows=tuple(rows or cfg.rows))
