"""Can a scar rule make the medium an associative memory? Every storage rule, one protocol.

Conditions (--rules; --rule NAME runs one):
  match_map           the published rule on the reference medium (F0, K0)
  graded              graded, soft-bounded scars (scarring.py, family 1)
  channel             excitable channels in a dead background (family 2)
  surround            channels with an inhibitory moat (family 3)
  surround_inhibited  surround, recalled with global inhibition of the feed
                      (scarring.SurroundInhibitedScar with its scarring.GlobalInhibition)
  junction            surround, and cells an earlier pattern holds become junctions that
                      belong to neither pattern (scarring.JunctionScar; idea 5)
  learned             per-cell F, K learned by gradient through the substrate (family 4),
                      at --learn-grid, at the match-map rule's total scar size there (the
                      size penalty is swept until it matches); compared with match_map on
                      the same grid

The imprint battery, per condition, on the protocol's three patterns (A = square_spots
offset by -1/4 of the grid, B = ring, C = line; stored in that order, --multi-train-steps
each, the main study's training starts): full cues (--multi-cue-strength), half and quarter
cues (A: its spots, B: arcs, C: segments, the part drawn per seed), arcs of the ring and
segments of the line (--arc-fractions), half cues of B and C at other strengths
(--half-strengths), uniform V (--uniform-levels, no noise) and pure noise
(--noise-levels) amplitude scans, and never-stored patterns of A's family (four discs)
placed per seed with 25-50% of their area on the stored patterns (on) or none within 4
cells (off). Every recall runs to --settle-steps (or until every recall has settled, after
--settle-min) and is read at the protocol's recall length (--multi-recall-steps) and
settled. Capacity: k = --ks patterns of a held-out family (random blobs, four discs of
radius 18 reference cells each, drawn per seed), stored in turn; full and half cues of up
to --capacity-cued of them, beside the modern Hopfield network (models/hopfield.py, as in
experiments/baselines.py) on the same cues.

Read-outs (docs/findings.md, "Can a scar rule make the medium an associative memory?"):
completion, selectivity, rejection, settled, each by cosine and by IoU (masks at 0.3),
beside the cue's own score at step 0; mean and 95% percentile-bootstrap interval over
seeds (a condition identical in every seed is reported as n = 1), Wilson intervals for
rates. Writes associative.json, associative_rows.png (per condition: a half cue of the
ring, its recall and the scar map), associative_capacity.png and associative_targets.png.

    python -m experiments.associative --quick
    python -m experiments.associative                    # every condition, 8 seeds
    python -m experiments.associative --rules surround surround_inhibited --seeds 8
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, np, metrics, patterns, scarring = cli.lazy_modules(
    "torch", "numpy", "metrics", "patterns", "scarring")
memory, hopfield, differentiable, adam = cli.lazy_modules(
    "memory", "models.hopfield", "models.differentiable", "models.adam")

CONDITIONS = ("match_map", "graded", "channel", "surround", "surround_inhibited", "junction",
              "learned")
NAMES = ("A", "B", "C")                 # the protocol's A_square_spots, B_ring, C_line
PART_KIND = ("components", "arc", "segment")   # how a part of A, B, C is cut
LINE_AXIS = math.pi / 4                 # the line runs along +x +y
CHUNK = 500                             # steps between settle checks and curve records
THRESHOLD = 0.3                         # masks: V or target above this (IoU, completion)
FOREIGN_ON = (0.25, 0.5)                # never-stored "on": this fraction on stored cells
FOREIGN_MOAT = 4                        # never-stored "off": no cell within this (ref. cells)
BLOB_COUNT, BLOB_RADIUS = 4, 18         # held-out family: discs per pattern, reference radius
LEARN_UNIFORM = 0.12                    # learned scars: the uniform V they learn to refuse
LEARN_LATE, LEARN_LATE_GRAD = 1000, 50   # and the late read-out: step, gradient steps
TARGETS = {"completion": (">=", 0.8), "selectivity": (">=", 0.5), "uniform": ("<=", 0.3),
           "rejection": ("<=", 0.3), "stored": (">=", 0.9), "capacity": (">=", 8)}


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "associative"
    rule: Optional[str] = arg(None, "run this one condition only (default: every condition "
                              "in --rules)", choices=CONDITIONS)
    rules: tuple[str, ...] = arg(CONDITIONS, "conditions to run, in this order",
                                 choices=CONDITIONS)
    settle_steps: int = arg(6000, "longest recall in steps; the settled read-out is taken "
                                  "here, or earlier once every recall has settled", lo=1)
    settle_min: int = arg(3000, "no settled read-out before this step", lo=1)
    settle_tol: float = arg(1e-3, "settled: mean |change of V| per cell per 100 steps below "
                                  "this, for every recall of the batch", lo=0.0, lo_open=True)
    uniform_levels: tuple[float, ...] = arg((0.03, 0.06, 0.12, 0.24), "uniform V starts (no "
                                            "noise): the amplitude scan", lo=0.0, hi=1.0)
    noise_levels: tuple[float, ...] = arg((0.05, 0.1, 0.2, 0.3), "pure-noise starts: noise "
                                          "standard deviations", lo=0.0, lo_open=True, hi=1.0)
    arc_fractions: tuple[float, ...] = arg((0.1, 0.25, 0.5, 0.75, 0.9), "kept fractions of "
                                           "the ring's arcs and the line's segments (0.25 "
                                           "and 0.5 are always run)", lo=0.0, lo_open=True,
                                           hi=1.0, hi_open=True)
    half_strengths: tuple[float, ...] = arg((0.1, 0.4), "other strengths of the half cues "
                                            "of B and C", lo=0.0, lo_open=True, hi=1.0)
    ks: tuple[int, ...] = arg((1, 3, 8, 16), "capacity: numbers of stored held-out "
                              "patterns, increasing", lo=1, hi=64)
    capacity_steps: int = arg(3000, "capacity: recall steps (settled read-out)", lo=1)
    capacity_cued: int = arg(4, "capacity: stored patterns cued at each k, at most", lo=1)
    blob_count: int = arg(BLOB_COUNT, "capacity: discs per held-out pattern (1: every "
                          "pattern is one connected disc)", lo=1, hi=16)
    beta_per_sqrt_n: float = arg(1.0, "modern Hopfield beta * sqrt(N)", lo=0.0, lo_open=True)
    learn_grid: int = arg(64, "learned scars: grid (backprop through 256^2 does not fit the "
                              "budget)", lo=16, hi=512)
    learn_iters: int = arg(25, "learned scars: gradient iterations", lo=1)
    learn_steps: int = arg(150, "learned scars: recall steps trained through (full BPTT)",
                           lo=1)
    learn_lams: tuple[float, ...] = arg((2e-3, 4e-3, 8e-3, 1.6e-2), "learned scars: size "
                                        "penalties swept to match the match-map scar size",
                                        lo=0.0)
    learn_sweep_seeds: int = arg(1, "learned scars: seeds of the penalty sweep", lo=1)
    learn_lr: float = arg(0.3, "learned scars: Adam learning rate on the logits", lo=0.0,
                          lo_open=True)
    cache: Optional[str] = arg(None, "folder of finished conditions: each condition is saved "
                               "there when done and taken from there by a later run with the "
                               "same settings (resume a long run, or split it over processes)")

    def check(self) -> None:
        if self.rule is not None:
            self.rules = (self.rule,)
        if len(set(self.rules)) != len(self.rules):
            raise ValueError(f"--rules {' '.join(self.rules)}: a condition is repeated")
        if list(self.ks) != sorted(set(self.ks)):
            raise ValueError(f"--ks {' '.join(map(str, self.ks))}: must increase strictly")
        if not self.multi_recall_steps <= self.settle_min <= self.settle_steps:
            raise ValueError(f"need --multi-recall-steps ({self.multi_recall_steps}) <= "
                             f"--settle-min ({self.settle_min}) <= --settle-steps "
                             f"({self.settle_steps})")
        if self.capacity_steps < self.multi_recall_steps:
            raise ValueError(f"--capacity-steps {self.capacity_steps}: must be >= "
                             f"--multi-recall-steps ({self.multi_recall_steps})")


QUICK = dict(seeds=2, grid=32, multi_train_steps=30, multi_recall_steps=20, settle_steps=60,
             settle_min=40, uniform_levels=(0.12,), noise_levels=(0.2,), arc_fractions=(0.5,),
             half_strengths=(0.4,), ks=(1, 3), capacity_steps=40, capacity_cued=2,
             learn_grid=32, learn_iters=2, learn_steps=10, learn_lams=(1e-3, 1e-2),
             learn_sweep_seeds=1)


# ---- conditions -----------------------------------------------------------------------------

@dataclass
class Condition:
    """One row of the study: a storage rule (None: learned fields), a recall option."""
    name: str
    rule: object
    inhibition: object = None
    grid: int = 256

    def background(self, p):
        return (p.f0, p.k0) if self.rule is None else self.rule.background(p.f0, p.k0)


def make_condition(name: str, protocol, grid: int) -> Condition:
    base = scarring.storage_rule(dataclasses.replace(protocol, rule="match_map"))
    if name == "learned":
        return Condition(name, None, grid=grid)
    rule = (base if name == "match_map" else scarring.JunctionScar() if name == "junction"
            else scarring.make_rule(name))
    return Condition(name, rule, rule.recall_inhibition(), grid=grid)


def store(study, cond, targets, seeds, snapshots=(), progress=None) -> dict:
    """Store targets in turn with the condition's rule (its own `prepare` step if any)."""
    steps = study.protocol.multi_train_steps
    first = NOISE["phase3_starts"][1]
    return study.store(targets, seeds, steps, rule=cond.rule, snapshots=snapshots,
                       first_index=first, progress=progress)


def scar_map(F, K, background) -> torch.Tensor:
    """Bool (S, H, W): cells whose F or K differ from the unscarred medium."""
    F0, K0 = background
    return ((F - F0).abs() + (K - K0).abs()) > 1e-6


# ---- recall, read at the protocol's length and settled ----------------------------------------

def recall(study, F, K, cues, pats, max_steps: int, read_steps: int, min_steps: int,
           tol: float, inhibition=None, progress=None) -> dict:
    """Run every cue (S, C, H, W) on per-seed fields F, K (S, H, W) for up to max_steps
    steps on the engine (memory.recall); a recall stops (memory.Settle) once it changes
    by less than tol per cell per 100 steps over a window of CHUNK steps, from min_steps
    on. Returns {"read": V at read_steps, "final": V when it stopped, "steps": steps run,
    "curves": {"steps", "cosine": (T, S, C, P)}, "change": (T, S, C) per 100 steps at
    each check (nan once stopped), "settled_at": (S, C) step it stopped at (nan: never)}."""
    S, C, H, W = cues.shape
    dev = dict(device=study.device, dtype=study.dtype)
    pats = torch.as_tensor(pats).to(**dev)
    pats = (pats.expand(S, *pats.shape) if pats.dim() == 3 else pats).repeat_interleave(C, 0)
    window = min(CHUNK, min_steps)
    trackers = [memory.Curves(pats, window),
                memory.Frames(None, max_steps, every=0, at={read_steps}),
                memory.Settle(tol * window / 100.0, window, max(min_steps, read_steps))]
    fields = {"F": F.to(**dev).repeat_interleave(C, 0), "K": K.to(**dev).repeat_interleave(C, 0)}
    medium = dataclasses.replace(study.medium, inhibition=inhibition)
    res = memory.recall(medium, fields, cues.to(**dev).reshape(S * C, H, W), max_steps,
                        study.settings(progress), trackers)
    settled_at = res["settled_at"].view(S, C)
    steps = max_steps if settled_at.isnan().any() else int(settled_at.max())
    return {"read": res["frames"][0].view(S, C, H, W), "final": res["V"].view(S, C, H, W).cpu(),
            "steps": steps, "change": (res["change"] * 100.0 / window).view(-1, S, C),
            "curves": {"steps": res["steps"], "cosine": res["similarity"].double()
                       .view(-1, S, C, pats.shape[1])}, "settled_at": settled_at}


def score(V, pats) -> dict:
    """V (S, C, H, W) against pats (S, P, H, W) or (P, H, W): {"cosine", "iou": (S, C, P)}."""
    S, C, H, W = V.shape
    pats = torch.as_tensor(pats).to(V.device, V.dtype)
    if pats.dim() == 3:
        pats = pats.expand(S, *pats.shape)
    P = pats.shape[1]
    out = {m: torch.empty(S, C, P, dtype=torch.float64) for m in ("cosine", "iou")}
    v = V.reshape(S * C, H, W)
    for j in range(P):
        t = pats[:, j].repeat_interleave(C, 0)
        out["cosine"][:, :, j] = metrics.cosine_similarity(v, t).view(S, C).cpu()
        out["iou"][:, :, j] = metrics.iou(v, t, THRESHOLD).view(S, C).cpu()
    return out


def masked_iou(V, target, region) -> torch.Tensor:
    """IoU of V > 0.3 and target > 0.3 on the cells of `region` only (leading dims
    batched); 0 where the union is empty there."""
    v, t, r = V > THRESHOLD, target > THRESHOLD, region.to(torch.bool)
    inter = (v & t & r).flatten(-2).sum(-1).double()
    union = ((v | t) & r).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))


def completion_pair(V_part, V_full, target, keep) -> dict:
    """Completion by cosine (metrics.completion) and by IoU (the same ratio of masked IoUs
    on the missing cells), (S,) each; NaN where the full-cue recall is empty there."""
    missing = (target > THRESHOLD) & ~keep.to(torch.bool)
    part, full = masked_iou(V_part, target, missing), masked_iou(V_full, target, missing)
    by_iou = torch.where(full > 0, part / full.clamp_min(1e-12), torch.full_like(part, math.nan))
    by_cos = metrics.completion(V_part, V_full, target, keep, THRESHOLD).double()
    return {"cosine": by_cos, "iou": by_iou}


# ---- statistics -------------------------------------------------------------------------------

def stat(values) -> dict:
    """The stat block over seeds: a percentile bootstrap of the mean (it stays inside the
    range of the data, so a bounded metric stays in bounds); NaN seeds (a recall with no
    read-out) are left out and counted."""
    return stats.summarize(torch.as_tensor(values, dtype=torch.float64).flatten(),
                           "bootstrap_percentile", drop_nan=True)


# ---- the imprint battery's cues -----------------------------------------------------------------

def part_masks(mask, kind: str, fraction: float, seeds, salt: int) -> torch.Tensor:
    """(S, H, W) bool: per seed, the kept part of `mask` (H, W bool). components: a random
    subset of its connected parts (a straight cut if it has one); arc: an arc about its
    centroid from a random start; segment: a segment along the line's axis from a random
    end. The same seed and salt give nested parts for growing fractions."""
    out = []
    for s in seeds:
        rng = np.random.default_rng([int(s), int(salt)])
        if kind == "components":
            from scipy import ndimage
            n = ndimage.label(mask.numpy(), structure=np.ones((3, 3)))[1]
            out.append(patterns.component_part(mask, fraction, int(rng.integers(2 ** 31)))
                       if n >= 2 else patterns.sweep_part(mask, fraction,
                                                          float(rng.uniform(0, 2 * math.pi))))
        elif kind == "arc":
            out.append(patterns.arc_part(mask, fraction, float(rng.uniform(0, 2 * math.pi))))
        else:
            out.append(patterns.sweep_part(mask, fraction,
                                           LINE_AXIS + math.pi * int(rng.integers(2))))
    return torch.stack(out)


def foreign_patterns(union, grid: int, seeds, on: bool) -> torch.Tensor:
    """(S, H, W) never-stored patterns of A's family (four discs of radius 15 reference
    cells), placed per seed: on: 25-50% of the area on `union` (the stored masks);
    off: no cell within FOREIGN_MOAT reference cells of it."""
    from scipy import ndimage

    radius = 15 * grid / 256
    near = torch.as_tensor(ndimage.binary_dilation(
        union.numpy(), iterations=max(1, round(FOREIGN_MOAT * grid / 256))))
    out = []
    for s in seeds:
        for attempt in range(2000):
            q = patterns.random_spot_patterns(1, grid, grid, spots=4, radius=radius,
                                              seed=int(s) * 7919 + attempt + (0 if on else 10 ** 6),
                                              disjoint=True, gap=2.0)[0]
            m = q > THRESHOLD
            frac = float(patterns.overlap_fraction(m, union if on else near))
            if (on and FOREIGN_ON[0] <= frac <= FOREIGN_ON[1]) or (not on and frac == 0.0):
                out.append(q)
                break
        else:
            raise ValueError(f"no never-stored pattern {'on' if on else 'off'} the scars "
                             f"found for seed {s} on a {grid}^2 grid")
    return torch.stack(out)


class Battery:
    """The named cues of one store: (S, C, H, W) starting V fields, the kept part of
    each partial cue (S, H, W) and the stored pattern it belongs to (None: no pattern)."""

    def __init__(self, seeds, grid):
        self.seeds, self.grid = list(seeds), grid
        self.names, self.cues, self.keep, self.pattern, self.foreign = [], [], [], [], {}

    def add(self, name, cue, keep=None, pattern=None):
        self.names.append(name)
        self.cues.append(cue)
        self.keep.append(keep)
        self.pattern.append(pattern)

    def index(self, name) -> int:
        return self.names.index(name)

    def has(self, name) -> bool:
        return name in self.names

    def stacked(self):
        return torch.stack(self.cues, 1)


def abc_battery(study, pats, seeds, args) -> Battery:
    """Every cue of the imprint battery for the three stored patterns pats (3, H, W)."""
    p, grid = study.protocol, pats.shape[-1]
    S, noise = len(seeds), p.cue_noise
    b = Battery(seeds, grid)
    idx = iter(range(400, 10_000))              # noise draws of the cues beyond phase 3's
    role, first = NOISE["phase3_cues"]
    for i, n in enumerate(NAMES):              # the phase-3 cues themselves (same draws)
        b.add(f"full {n}", study.cues(pats[i:i + 1], seeds, p.multi_cue_strength, role,
                                      first + i)[:, 0], torch.ones(S, grid, grid, dtype=torch.bool), i)
    fractions = sorted(set(args.arc_fractions) | {0.25, 0.5})
    for i, (n, kind) in enumerate(zip(NAMES, PART_KIND)):
        mask = pats[i] > THRESHOLD
        for f in ([0.25, 0.5] if kind == "components" else fractions):
            keep = part_masks(mask, kind, f, seeds, salt=i)
            b.add(f"part {n} {f:g}", patterns.masked_cue(
                pats[i], keep, p.multi_cue_strength, noise,
                scarring.noise_seeds(seeds, "cue", next(idx))), keep, i)
        if kind != "components":
            keep = part_masks(mask, kind, 0.5, seeds, salt=i)
            for s in args.half_strengths:
                b.add(f"part {n} 0.5 s={s:g}", patterns.masked_cue(
                    pats[i], keep, s, noise, scarring.noise_seeds(seeds, "cue", next(idx))),
                    keep, i)
    for level in args.uniform_levels:
        b.add(f"uniform {level:g}", patterns.uniform_cue(grid, grid, level, 0.0, seeds))
    for j, sd in enumerate(args.noise_levels):
        b.add(f"noise {sd:g}", patterns.uniform_cue(grid, grid, 0.0, sd, scarring.noise_seeds(
            seeds, "other", 400 + j)))
    union = (pats > THRESHOLD).any(0)
    for where in ("on", "off"):
        q = foreign_patterns(union, grid, seeds, where == "on")
        b.foreign[where] = q
        b.add(f"never-stored {where}", patterns.make_cue(
            q, p.multi_cue_strength, noise, scarring.noise_seeds(seeds, "cue", next(idx))),
            q > THRESHOLD)
    return b


# ---- read-outs ----------------------------------------------------------------------------------

def _both(fn):
    return {m: fn(m) for m in ("cosine", "iou")}


def abc_readouts(b: Battery, V, pats, scarred) -> dict:
    """Per-seed read-outs (S,) of the battery's fields V (S, C, H, W) at one time (the
    cues themselves: the step-0 scores), nested by cue group and metric."""
    sims = score(V, pats)
    full = [b.index(f"full {n}") for n in NAMES]
    out = {"stored": {n: _both(lambda m, c=c, i=i: sims[m][:, c, i])
                      for i, (n, c) in enumerate(zip(NAMES, full))}}
    parts = {}
    for c, name in enumerate(b.names):
        if not name.startswith("part "):
            continue
        i = b.pattern[c]
        comp = completion_pair(V[:, c], V[:, full[i]], pats[i], b.keep[c])
        parts[name[5:]] = {"completion": comp, "own": _both(lambda m, c=c, i=i: sims[m][:, c, i]),
                           "kept_fraction": patterns.overlap_fraction(
                               pats[i].expand_as(b.keep[c]) > THRESHOLD, b.keep[c]).double()}
    out["parts"] = parts
    for label, key in (("full", "full {}"), ("half", "part {} 0.5"), ("quarter", "part {} 0.25")):
        rows = [b.index(key.format(n)) for n in NAMES]
        sel = _both(lambda m, rows=rows: metrics.selectivity(sims[m][:, rows, :]))
        out[f"selectivity_{label}"] = {n: {m: sel[m][:, i] for m in sel}
                                       for i, n in enumerate(NAMES)}
    for group in ("uniform", "noise"):
        out[group] = {name.split()[1]: {"largest": _both(
            lambda m, c=c: metrics.largest_similarity(sims[m][:, c]))}
            for c, name in enumerate(b.names) if name.startswith(group + " ")}
    out["never_stored"] = {}
    for where in ("on", "off"):
        c = b.index(f"never-stored {where}")
        q = b.keep[c]
        rej = metrics.rejection(sims["cosine"][:, c], V[:, c], q, THRESHOLD)
        out["never_stored"][where] = {
            "largest": _both(lambda m, c=c: metrics.largest_similarity(sims[m][:, c])),
            "amplified_iou": rej["amplified"].double(),
            "on_scars": patterns.overlap_fraction(q, scarred.expand_as(q)).double(),
            "on_stored_masks": patterns.overlap_fraction(
                q, (pats > THRESHOLD).any(0).expand_as(q)).double()}
    return out


def summarize_tree(tree):
    """Every per-seed tensor of a nested dict -> stat()."""
    if isinstance(tree, dict):
        return {k: summarize_tree(v) for k, v in tree.items()}
    return stat(tree)


def _hi(s):   # the upper end of an interval (the mean when n = 1)
    return s["mean"] if s["ci95_high"] is None else s["ci95_high"]


def _lo(s):
    return s["mean"] if s["ci95_low"] is None else s["ci95_low"]


def judge(settled: dict) -> dict:
    """The issue's targets on the settled read-outs (cosine), each on the far end of its
    interval: completion and selectivity of the half cues and stored-cue recall per
    pattern (lower end), uniform V at every level and never-stored cues (upper end)."""
    def ok(value, target):
        op, bound = TARGETS[target]
        return value is not None and (value >= bound if op == ">=" else value <= bound)

    parts = settled["parts"]
    verdict = {
        "completion": {n: ok(_lo(parts[f"{n} 0.5"]["completion"]["cosine"]), "completion")
                       for n in NAMES},
        "selectivity": {n: ok(_lo(settled["selectivity_half"][n]["cosine"]), "selectivity")
                        for n in NAMES},
        "stored": {n: ok(_lo(settled["stored"][n]["cosine"]), "stored") for n in NAMES},
        "uniform": {lvl: ok(_hi(v["largest"]["cosine"]), "uniform")
                    for lvl, v in settled["uniform"].items()},
        "rejection": {w: ok(_hi(v["largest"]["cosine"]), "rejection")
                      for w, v in settled["never_stored"].items()},
    }
    flat = [x for group in verdict.values() for x in group.values()]
    verdict.update(passed=sum(flat), of=len(flat), all=all(flat))
    return verdict


def percolation(scarred) -> dict:
    """Does the union of scarred cells (S, H, W) connect opposite edges (4-connected,
    not wrapping)? Rate over seeds, largest cluster's share of the grid, scarred share."""
    from scipy import ndimage

    spans, largest = [], []
    for m in scarred.cpu().numpy():
        lab, n = ndimage.label(m)
        largest.append(np.bincount(lab.ravel())[1:].max() / m.size if n else 0.0)
        across = (set(lab[:, 0]) & set(lab[:, -1])) | (set(lab[0]) & set(lab[-1]))
        spans.append(bool(across - {0}))
    return {"spans_the_grid": stats.rate(spans), "largest_cluster_share": stat(largest),
            "scarred_share": stat(scarred.double().flatten(1).mean(1))}


def settle_summary(res) -> dict:
    settled = ~torch.isnan(res["settled_at"])
    last = res["change"][-1]
    return {"steps_run": res["steps"], "settled_recalls": stats.rate(settled),
            "largest_change_per_100_steps_at_end": float(last[~last.isnan()].max())}


def mean_curves(b: Battery, res) -> dict:
    """Mean over seeds of each cue's cosine to its own pattern (to the closest stored one
    for cues of no pattern) at every record."""
    cos = res["curves"]["cosine"]                      # (T, S, C, P)
    out = {}
    for c, name in enumerate(b.names):
        i = b.pattern[c]
        track = cos[:, :, c, i] if i is not None else cos[:, :, c].amax(-1)
        out[name] = track.mean(1).tolist()
    return {"steps": res["curves"]["steps"], "cosine": out}


# ---- one condition on the three reference patterns ------------------------------------------------

def run_abc(study, cond: Condition, pats, seeds, args, fields=None, tag="") -> dict:
    """Store A, B, C (or take learned fields), run the battery, read out at the protocol's
    recall length and settled. Returns the JSON entry and the fields for the figures."""
    p, t0 = study.protocol, time.perf_counter()
    S = len(seeds)
    if fields is None:
        stored = store(study, cond, pats, seeds, progress=f"{tag}store")
        F, K = stored["F"], stored["K"]
        training = {"train_similarity": summarize_tree(dict(zip(NAMES, stored["train_similarity"]))),
                    "scar_size_after": summarize_tree(dict(zip(NAMES, stored["scar_strength"])))}
    else:
        F, K = fields
        training = {}
    background = cond.background(p)
    scarred = scar_map(F, K, background).cpu()
    b = abc_battery(study, pats, seeds, args)
    cues = b.stacked()
    res = recall(study, F, K, cues, pats, args.settle_steps, p.multi_recall_steps,
                 args.settle_min, args.settle_tol, cond.inhibition, progress=f"{tag}recall")
    tree = {when: summarize_tree(abc_readouts(b, V, pats, scarred))
            for when, V in (("step0", cues.cpu()), ("read", res["read"]),
                            ("settled", res["final"]))}
    entry = {"grid": pats.shape[-1], "n_seeds": S, "rule": _rule_dict(cond),
             "cues": b.names, **training,
             "scar_size": stat(scarring.scar_strength(F, K, *background).cpu()),
             "scar_map": percolation(scarred), "settle": settle_summary(res), **tree,
             "verdict": judge(tree["settled"]), "curves": mean_curves(b, res),
             "wall_s": time.perf_counter() - t0}
    figure = {"F": F[0].cpu(), "F_bg": background[0], "half_B_keep": b.keep[b.index("part B 0.5")][0],
              "cue": cues[0, b.index("part B 0.5")].cpu(),
              "read": res["read"][0, b.index("part B 0.5")],
              "settled": res["final"][0, b.index("part B 0.5")],
              "uniform": res["final"][0, b.index(f"uniform {max(args.uniform_levels):g}")]
              if args.uniform_levels else None}
    return entry, figure


def _rule_dict(cond: Condition) -> dict:
    rule = {"rule": "learned"} if cond.rule is None else cond.rule.as_dict()
    if cond.inhibition is not None:
        rule["global_inhibition"] = dataclasses.asdict(cond.inhibition)
    return rule


def hopfield_abc(study, pats, seeds, args) -> dict:
    """The modern Hopfield network on the same battery (its one-shot output is both the
    read and the settled state)."""
    b = abc_battery(study, pats, seeds, args)
    cues = b.stacked()
    V = hopfield_recall(pats.expand(len(seeds), *pats.shape), cues, args.beta_per_sqrt_n)
    scarred = torch.zeros(len(seeds), *pats.shape[-2:], dtype=torch.bool)
    tree = {"step0": summarize_tree(abc_readouts(b, cues.cpu(), pats, scarred)),
            "settled": summarize_tree(abc_readouts(b, V, pats, scarred))}
    return {**tree, "verdict": judge(tree["settled"])}


def hopfield_recall(pats, cues, beta_per_sqrt_n) -> torch.Tensor:
    """Modern Hopfield recall (experiments/baselines.py's settings): patterns (S, P, H, W)
    stored per seed, cues (S, C, H, W) binarised at their two-means threshold, output
    read back as PEAK * (s + 1) / 2. Returns (S, C, H, W)."""
    S, _, H, W = cues.shape
    out = []
    for s in range(S):
        net = hopfield.ModernHopfield(hopfield.to_bipolar(pats[s].cpu()),
                                      beta_per_sqrt_n / math.sqrt(H * W))
        x, _ = net.recall(hopfield.binarize(cues[s].cpu()))
        out.append(hopfield.to_image(x, H, W))
    return torch.stack(out).to(torch.float32)


# ---- capacity on a held-out family ---------------------------------------------------------------

def held_out(n: int, grid: int, seeds, count: int = BLOB_COUNT) -> torch.Tensor:
    """(S, n, H, W): n random-blob patterns per seed (`count` discs of BLOB_RADIUS
    reference cells, placed independently: patterns overlap by chance)."""
    return torch.stack([torch.stack([
        patterns.make_pattern("blobs", grid, grid, seed=int(s) * 1009 + j + 50_000,
                              count=count, radius=BLOB_RADIUS) for j in range(n)])
        for s in seeds])


def capacity_cues(study, pats, n: int, seeds):
    """Full and half cues of the first n of pats (S, k, H, W), and a uniform V of the
    cue's in-shape level: (S, 2n + 1, H, W) and the half cues' kept parts [(S, H, W)] * n."""
    p = study.protocol
    full = study.cues(pats[:, :n], seeds, p.multi_cue_strength, "cue", 600)
    keeps, halves = [], []
    for i in range(n):
        keep = torch.stack([part_masks(pats[j, i].cpu() > THRESHOLD, "components", 0.5, [s],
                                       salt=1000 + i)[0] for j, s in enumerate(seeds)])
        keeps.append(keep)
        halves.append(patterns.masked_cue(pats[:, i], keep.to(pats.device), p.multi_cue_strength,
                                          p.cue_noise, scarring.noise_seeds(seeds, "cue", 700 + i)))
    level = p.multi_cue_strength * patterns.PEAK
    uniform = patterns.uniform_cue(*pats.shape[-2:], level, 0.0, seeds).to(full)
    return torch.cat([full, torch.stack(halves, 1).to(full), uniform[:, None]], 1), keeps


def capacity_readouts(V, pats, n: int, keeps) -> dict:
    """Per-seed read-outs of a capacity recall: completion (mean over the n cued
    patterns), selectivity of the half cues against all k stored, stored-cue recall and
    the uniform V's largest similarity."""
    sims, k = score(V, pats), pats.shape[1]
    comp = [completion_pair(V[:, n + i], V[:, i], pats[:, i], keeps[i]) for i in range(n)]
    out = {"completion": {m: torch.stack([c[m] for c in comp], 1).nanmean(1) for m in ("cosine", "iou")},
           "stored": _both(lambda m: sims[m][:, torch.arange(n), torch.arange(n)].mean(1)),
           "uniform_largest": _both(lambda m: sims[m][:, 2 * n].amax(-1))}
    if k >= 2:
        out["selectivity"] = _both(lambda m: metrics.selectivity(sims[m][:, n:2 * n]).mean(1))
    return out


def run_capacity(study, cond: Condition, seeds, args, tag="") -> dict:
    """Store the held-out family in turn (fields kept after each k), recall full and half
    cues of up to --capacity-cued stored patterns and a uniform V at every k."""
    p = study.protocol
    fam = held_out(args.ks[-1], p.grid, seeds, args.blob_count).to(study.device, study.dtype)
    stored = store(study, cond, fam, seeds, snapshots=args.ks, progress=f"{tag}store family")
    background = cond.background(p)
    by_k = {}
    for k in args.ks:
        F, K = stored["snapshots"][k]
        pats, cued = capacity_patterns(fam, k, args.capacity_cued)
        cues, keeps = capacity_cues(study, pats, len(cued), seeds)
        res = recall(study, F, K, cues, pats, args.capacity_steps, p.multi_recall_steps,
                     args.capacity_steps, args.settle_tol, cond.inhibition,
                     progress=f"{tag}recall k={k}")
        pc = pats.cpu()
        by_k[str(k)] = {"cued": cued, "scar_map": percolation(scar_map(F, K, background).cpu()),
                        "settle": settle_summary(res),
                        **{when: summarize_tree(capacity_readouts(V, pc, len(cued), keeps))
                           for when, V in (("step0", cues.cpu()), ("settled", res["final"]))}}
    return {"ks": list(args.ks), "by_k": by_k, "capacity": capacity_of(args.ks, by_k)}


def capacity_patterns(fam, k: int, n_cued: int):
    """The first k patterns of the family, reordered so that the cued ones (spread over
    the storage order: first, last and between) come first; and their indices."""
    n = min(k, n_cued)
    cued = sorted({int(round(x)) for x in np.linspace(0, k - 1, n)})
    order = cued + [j for j in range(k) if j not in cued]
    return fam[:, order], cued


def hopfield_capacity(study, seeds, args) -> dict:
    """The modern Hopfield network on the capacity study's patterns and cues."""
    fam = held_out(args.ks[-1], study.protocol.grid, seeds, args.blob_count)
    by_k = {}
    for k in args.ks:
        pats, cued = capacity_patterns(fam, k, args.capacity_cued)
        cues, keeps = capacity_cues(study, pats.to(study.device, study.dtype), len(cued), seeds)
        V = hopfield_recall(pats, cues.cpu(), args.beta_per_sqrt_n)
        by_k[str(k)] = {"cued": cued, "settled": summarize_tree(
            capacity_readouts(V, pats, len(cued), keeps))}
    return {"ks": list(args.ks), "by_k": by_k, "capacity": capacity_of(args.ks, by_k)}


def capacity_of(ks, by_k) -> int:
    """metrics.associative_capacity of the settled means (cosine)."""
    comp = [by_k[str(k)]["settled"]["completion"]["cosine"]["mean"] for k in ks]
    sel = [by_k[str(k)]["settled"]["selectivity"]["cosine"]["mean"]
           if "selectivity" in by_k[str(k)]["settled"] else None for k in ks]
    comp = [math.nan if c is None else c for c in comp]
    sel = [math.nan if (s is None and k > 1) else s for s, k in zip(sel, ks)]
    return metrics.associative_capacity(ks, comp, sel)


# ---- family 4: scars learned by gradient ---------------------------------------------------------

def learn_fields(study, pats, seeds, lam: float, args, tag="") -> tuple:
    """Per-seed fields F, K (S, H, W) learned by gradient through the substrate, bounded
    by the match-map rule's clamps, from the unscarred (F0, K0). Loss per seed: for each
    stored pattern, 1 - cosine of the recall from a half cue (a new part and noise every
    iteration) plus its largest cosine to another stored pattern; the largest cosine to
    any stored pattern of the recall from a uniform V and from a never-stored cue; each
    read after --learn-steps steps (full BPTT) and at step LEARN_LATE (gradient through
    its last LEARN_LATE_GRAD steps); plus lam * scar size. Adam on the logits."""
    p = study.protocol
    S, H = len(seeds), pats.shape[-1]
    rule = scarring.storage_rule(dataclasses.replace(p, rule="match_map"))
    lo_hi = ((rule.F_min, rule.F_max), (rule.K_min, rule.K_max))
    logits = [torch.full((S, H, H), float(np.log((x - lo) / (hi - x))), requires_grad=True)
              for x, (lo, hi) in zip((p.f0, p.k0), lo_hi)]
    moments, history = adam.adam_state(logits), []
    physics = differentiable.Physics(stencil=p.stencil, decay=p.substrate()["decay"],
                                     clamp=True, dt=p.dt)
    targets = pats.float()
    with cli.progress(args.learn_iters, f"{tag}learn lam={lam:g}") as bar:
        for it in range(args.learn_iters):
            F, K = (lo + (hi - lo) * torch.sigmoid(a) for a, (lo, hi) in zip(logits, lo_hi))
            V0 = learning_cues(study, pats, seeds, it).float()          # (S, M, H, W)
            M = V0.shape[1]
            Fm, Km = F.repeat_interleave(M, 0), K.repeat_interleave(M, 0)
            U, V = differentiable.rollout(torch.ones_like(V0.flatten(0, 1)), V0.flatten(0, 1),
                                          Fm, Km, p.du, p.dv, args.learn_steps, physics,
                                          checkpoint_every=50 if args.learn_steps > 50 else 0)
            loss = learning_loss(V.view(S, M, H, H), targets)
            late = LEARN_LATE - args.learn_steps
            if late > 0:
                U2, V2 = _late(study, U, V, Fm, Km, late - min(late, LEARN_LATE_GRAD))
                U2, V2 = differentiable.rollout(U2, V2, Fm, Km, p.du, p.dv,
                                                min(late, LEARN_LATE_GRAD), physics)
                loss = loss + learning_loss(V2.view(S, M, H, H), targets)
            size = scarring.scar_strength(F, K, p.f0, p.k0)
            total = loss + lam * size
            grads = torch.autograd.grad(total.sum(), logits)
            adam.adam_step(logits, grads, moments, it + 1, args.learn_lr)
            history.append({"loss": loss.detach().tolist(), "scar_size": size.detach().tolist()})
            bar.update(1)
    with torch.no_grad():
        F, K = (lo + (hi - lo) * torch.sigmoid(a) for a, (lo, hi) in zip(logits, lo_hi))
    return F, K, history


def _late(study, U, V, F, K, steps: int):
    """U, V after `steps` more steps without a gradient (the engine, compiled stepper)."""
    if steps == 0:
        return U.detach(), V.detach()
    medium = dataclasses.replace(study.medium, compile=True, inhibition=None)
    res = memory.recall(medium, {"F": F.detach(), "K": K.detach()}, V.detach(), steps,
                        memory.Settings(str(V.device), V.dtype), state=(U.detach(), V.detach()))
    return res["state"]


def learning_cues(study, pats, seeds, it: int) -> torch.Tensor:
    """(S, P + 2, H, W): half cues of each stored pattern (part drawn per seed and
    iteration), a uniform V of LEARN_UNIFORM, a never-stored pattern's cue."""
    p, H = study.protocol, pats.shape[-1]
    cues = []
    for i, kind in enumerate(PART_KIND[:pats.shape[0]]):
        keep = part_masks(pats[i] > THRESHOLD, kind, 0.5, seeds, salt=10_000 + 97 * it + i)
        cues.append(patterns.masked_cue(pats[i], keep, p.multi_cue_strength, p.cue_noise,
                                        [s * 100_003 + 31 * it + i for s in seeds]))
    cues.append(patterns.uniform_cue(H, H, LEARN_UNIFORM, 0.0, seeds))
    q = torch.stack([patterns.random_spot_patterns(1, H, H, spots=4, radius=15 * H / 256,
                                                   seed=2_000_000 + 1009 * s + it)[0]
                     for s in seeds])
    cues.append(patterns.make_cue(q, p.multi_cue_strength, p.cue_noise,
                                  [s * 100_003 + 31 * it + 99 for s in seeds]))
    return torch.stack(cues, 1)


def learning_loss(V, targets) -> torch.Tensor:
    """(S,) loss of learn_fields for V (S, P + 2, H, W) and targets (P, H, W)."""
    S, M = V.shape[:2]
    P = targets.shape[0]
    cos = torch.stack([differentiable.cosine(V.flatten(0, 1), targets[j].expand(S * M, *targets.shape[1:]))
                       for j in range(P)], -1).view(S, M, P)
    own = cos[:, torch.arange(P), torch.arange(P)]
    others = cos[:, :P].masked_fill(torch.eye(P, dtype=torch.bool), -1.0).amax(-1)
    return (1 - own).sum(1) + others.clamp_min(0).sum(1) + cos[:, P:].amax(-1).sum(1)


def learned_condition(study, pats, seeds, args) -> tuple:
    """Sweep the size penalty on the first --learn-sweep-seeds seeds until the learned
    scar is the size of the match-map scar on the same grid, then learn every seed's
    fields with the penalty whose size came closest. Returns (learned fields, record,
    the match-map fields on the same grid)."""
    mm = make_condition("match_map", study.protocol, pats.shape[-1])
    stored = store(study, mm, pats, seeds, progress="learned: match-map store")
    goal = float(scarring.scar_strength(stored["F"], stored["K"], *mm.background(study.protocol)).mean())
    sweep_seeds = seeds[:args.learn_sweep_seeds]
    sweep = []
    for lam in args.learn_lams:
        F, K, hist = learn_fields(study, pats, sweep_seeds, lam, args, "learned sweep: ")
        size = float(scarring.scar_strength(F, K, study.protocol.f0, study.protocol.k0).mean())
        sweep.append({"lambda": lam, "scar_size": size, "final_loss": hist[-1]["loss"]})
    best = min(sweep, key=lambda r: abs(math.log(max(r["scar_size"], 1e-9) / goal)))
    F, K, hist = learn_fields(study, pats, seeds, best["lambda"], args, "learned: ")
    return (F, K), {"match_map_scar_size": goal, "sweep": sweep, "lambda": best["lambda"],
                    "sweep_seeds": list(sweep_seeds), "history": hist,
                    "iterations": args.learn_iters, "recall_steps_trained": args.learn_steps,
                    "late_step": LEARN_LATE, "late_gradient_steps": LEARN_LATE_GRAD}, \
        (stored["F"], stored["K"])


# ---- a connected shape stored alone --------------------------------------------------------------

def connected_alone(study, seeds, args) -> dict:
    """The issue's planning measurement, recomputed: the ring, and separately the line,
    stored alone with the match-map rule (--train-steps scarred steps, the phase-1
    training start), cued with the whole shape, half of it and a quarter of it at the
    phase-2 cue strength, recalled to --settle-steps on the scar and on the unscarred
    medium. Cosine to the whole shape at every record, and completion at the end."""
    p, grid = study.protocol, study.protocol.grid
    pats = torch.stack(list(patterns.phase3_targets(grid).values())).to(study.device, study.dtype)
    S, out = len(seeds), {}
    for name, i in (("ring", 1), ("line", 2)):
        pat = pats[i:i + 1]
        stored = study.store(pat, seeds, p.train_steps, first_index=NOISE["phase1_start"][1],
                             progress=f"{name} alone: store")
        keeps = [torch.ones(S, grid, grid, dtype=torch.bool)] + [
            part_masks(pat[0].cpu() > THRESHOLD, PART_KIND[i], f, seeds, salt=i) for f in (0.5, 0.25)]
        cues = torch.stack([patterns.masked_cue(pat[0], k.to(pat.device), p.cue_strength, p.cue_noise,
                                                scarring.noise_seeds(seeds, *NOISE["phase2_cue"]))
                            for k in keeps], 1)
        F0, K0 = study.default_fields(S)
        res = recall(study, torch.cat([stored["F"], F0]), torch.cat([stored["K"], K0]),
                     cues.repeat(2, 1, 1, 1), pat, args.settle_steps,
                     min(p.recall_steps, args.settle_steps), args.settle_steps, args.settle_tol,
                     progress=f"{name} alone: recall")
        V, cos = res["final"], res["curves"]["cosine"][..., 0]          # (T, 2S, 3)
        entry = {"steps": res["curves"]["steps"]}
        for arm, rows in (("scarred", slice(0, S)), ("unscarred", slice(S, 2 * S))):
            entry[arm] = {cue: {"cosine": [stat(c) for c in cos[:, rows, j]],
                                "completion": summarize_tree(completion_pair(
                                    V[rows, j], V[rows, 0], pat[0].cpu(), keeps[j]))
                                if j else None}
                          for j, cue in enumerate(("full", "half", "quarter"))}
        out[name] = entry
    return out


# ---- the study ------------------------------------------------------------------------------------

def run(args, seeds, device) -> tuple:
    """Every condition of --rules; the modern Hopfield references. (results, figures)."""
    protocol = dataclasses.replace(protocol_of(args), rule="match_map")
    study = scarring.Study(protocol, device)
    pats = torch.stack(list(patterns.phase3_targets(args.grid).values())).to(device, study.dtype)
    conditions, figures = {}, {}
    for name in args.rules:
        cached = load_cached(args, name, seeds)
        if cached is not None:
            conditions[name], figures[name] = cached
        elif name == "learned":
            conditions[name], figures[name] = run_learned(protocol, device, seeds, args)
        else:
            cond = make_condition(name, protocol, args.grid)
            conditions[name], figures[name] = run_abc(study, cond, pats, seeds, args,
                                                      tag=f"{name}: ")
            conditions[name]["capacity"] = run_capacity(study, cond, seeds, args, f"{name}: ")
        if cached is None:
            save_cached(args, name, seeds, conditions[name], figures[name])
        print_condition(name, conditions[name], flush=True)
    references = {"connected_shape_alone": connected_alone(study, seeds, args),
                  "modern_hopfield": {"abc": hopfield_abc(study, pats, seeds, args),
                                      "capacity": hopfield_capacity(study, seeds, args),
                                      "beta_per_sqrt_n": args.beta_per_sqrt_n}}
    return {"conditions": conditions, "references": references,
            "verdict": overall_verdict(conditions)}, figures


NOT_SETTINGS = ("rule", "rules", "out", "quiet", "threads", "device", "cache")
LEARN_ONLY = ("learn_grid", "learn_iters", "learn_steps", "learn_lams", "learn_sweep_seeds",
              "learn_lr")
CAPACITY_ONLY = ("ks", "capacity_steps", "capacity_cued", "beta_per_sqrt_n", "blob_count")


def _cache_path(args, name, seeds):
    """The cache file of condition `name` under these settings (None: no --cache)."""
    if args.cache is None:
        return None
    import hashlib
    import json
    from pathlib import Path

    skip = NOT_SETTINGS + (CAPACITY_ONLY if name == "learned" else LEARN_ONLY)
    settings = {k: v for k, v in cli.config_of(args).items() if k not in skip}
    key = json.dumps([name, list(seeds), settings], sort_keys=True, default=str)
    return Path(args.cache) / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def load_cached(args, name, seeds):
    path = _cache_path(args, name, seeds)
    if path is None or not path.is_file():
        return None
    print(f"{name}: taken from {path}", flush=True)
    return torch.load(path, weights_only=False)


def save_cached(args, name, seeds, entry, figure) -> None:
    """Write (entry, figure) beside its final name, then rename it into place."""
    import os

    path = _cache_path(args, name, seeds)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    entry["computed_at_commit"] = cli.git_commit()   # a cache is keyed by settings, not code
    tmp = path.with_suffix(".tmp")
    torch.save((entry, figure), tmp)
    os.replace(tmp, path)


def run_learned(protocol, device, seeds, args) -> tuple:
    """Family 4 on its own grid, beside the match-map rule on that grid."""
    small = scarring.Study(dataclasses.replace(protocol, grid=args.learn_grid), device)
    pats = torch.stack(list(patterns.phase3_targets(args.learn_grid).values())).to(device, small.dtype)
    fields, record, mm_fields = learned_condition(small, pats, seeds, args)
    cond = Condition("learned", None, grid=args.learn_grid)
    entry, figure = run_abc(small, cond, pats, seeds, args, fields=fields, tag="learned: ")
    mm = make_condition("match_map", small.protocol, args.learn_grid)
    entry["match_map_same_grid"], _ = run_abc(small, mm, pats, seeds, args, fields=mm_fields,
                                              tag="learned: match-map: ")
    entry["learning"] = record
    return entry, figure


def overall_verdict(conditions) -> dict:
    ranking = sorted(((n, c["verdict"]["passed"], c["verdict"]["of"]) for n, c in conditions.items()),
                     key=lambda r: -r[1])
    return {"memory": [n for n, c in conditions.items() if c["verdict"]["all"]],
            "ranking": [{"condition": n, "targets_passed": p, "of": o} for n, p, o in ranking],
            "closest": ranking[0][0] if ranking else None,
            "capacity": {n: c["capacity"]["capacity"] for n, c in conditions.items()
                         if "capacity" in c}}


def print_condition(name, e, flush=False) -> None:
    s = e["settled"]
    comp = " ".join(f"{n} {stats.format_stat(s['parts'][f'{n} 0.5']['completion']['cosine'])}" for n in NAMES)
    sel = " ".join(f"{n} {stats.format_stat(s['selectivity_half'][n]['cosine'])}" for n in NAMES)
    sto = " ".join(f"{n} {stats.format_stat(s['stored'][n]['cosine'])}" for n in NAMES)
    uni = " ".join(f"{lvl}: {stats.format_stat(v['largest']['cosine'])}" for lvl, v in s["uniform"].items())
    rej = " ".join(f"{w}: {stats.format_stat(v['largest']['cosine'])}" for w, v in s["never_stored"].items())
    v = e["verdict"]
    print(f"  {name} ({e['grid']}^2, settled after {e['settle']['steps_run']} steps, "
          f"{v['passed']}/{v['of']} targets): half-cue completion {comp}; selectivity {sel}; "
          f"stored {sto}; uniform V largest {uni}; never-stored largest {rej}"
          + (f"; capacity {e['capacity']['capacity']}" if "capacity" in e else ""), flush=flush)


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    cli.check_out_dir(args.out_dir())
    t0 = time.perf_counter()
    body, figures = run(args, seeds, device)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall),
              "definitions": DEFINITIONS, "targets": {k: list(v) for k, v in TARGETS.items()},
              **body}
    result["config"].update(rules=list(args.rules), chunk=CHUNK, threshold=THRESHOLD,
                            foreign_on_fraction=list(FOREIGN_ON), foreign_moat=FOREIGN_MOAT,
                            held_out_family={"pattern": "blobs", "count": args.blob_count,
                                             "radius": BLOB_RADIUS},
                            learned={"uniform": LEARN_UNIFORM, "late_step": LEARN_LATE,
                                     "late_gradient_steps": LEARN_LATE_GRAD})
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot_rows(figures, body["conditions"], out / "associative_rows.png")
        plot_capacity(body, out / "associative_capacity.png", len(seeds))
        plot_targets(body, out / "associative_targets.png", len(seeds))
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    for name, entry in body["conditions"].items():
        print_condition(name, entry)
    print(f"  verdict: associative memory: {body['verdict']['memory'] or 'none'}; closest: "
          f"{body['verdict']['closest']}")


DEFINITIONS = {
    "completion": "cosine similarity to P on the cells of P's mask that the cue did not "
                  "contain, divided by the same after recall from the full cue (also by IoU "
                  "of masks at 0.3 on those cells)",
    "selectivity": "with k patterns stored, the recall from pattern i's cue: similarity to "
                   "P_i minus the largest similarity to any other stored P_j",
    "uniform": "recall from a uniform V (no noise): the largest similarity to any stored "
               "pattern",
    "rejection": "recall from a never-stored pattern Q's cue: the largest similarity to any "
                 "stored pattern, and the IoU of the output mask with Q's (amplified)",
    "settled": "read after the recall has run to settle_steps, or earlier (after "
               "settle_min) once every recall of the batch changes by less than settle_tol "
               "per cell per 100 steps; also read at the protocol's recall length",
    "capacity": "the largest k of the unbroken run of k's from the smallest with mean "
                "settled completion >= 0.8 and mean selectivity >= 0.5 (cosine)",
    "intervals": "mean and 95% percentile-bootstrap interval over seeds; n = 1 where every "
                 "seed gave the same value; rates with Wilson intervals",
}


# ---- figures ----------------------------------------------------------------------------------------

def plot_rows(figures, conditions, path) -> None:
    """Per condition (seed 0): the half cue of the ring, its recall at the protocol's
    length and settled, the settled uniform V, and the scar map (F minus the background)."""
    import matplotlib.pyplot as plt

    names = list(figures)
    fig, axes = plt.subplots(len(names), 5, figsize=(8, 1.7 * len(names) + 0.4), squeeze=False)
    for row, name in zip(axes, names):
        f, e = figures[name], conditions[name]
        comp = e["settled"]["parts"]["B 0.5"]["completion"]["cosine"]["mean"]
        settled = (f"settled (step {e['settle']['steps_run']}), completion "
                   f"{'nan' if comp is None else f'{comp:.2f}'}")
        panels = (("half cue of B (cyan: kept part)", f["cue"], "magma", (0, 0.6)),
                  ("recall at the protocol's length", f["read"], "magma", (0, 0.6)),
                  (settled, f["settled"], "magma", (0, 0.6)),
                  ("uniform V start, settled", f["uniform"], "magma", (0, 0.6)),
                  ("scar map: F - F background", f["F"] - f["F_bg"], "coolwarm", (-0.05, 0.05)))
        for ax, (title, img, cmap, (lo, hi)) in zip(row, panels):
            if img is not None:
                ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].contour(f["half_B_keep"].float(), levels=[0.5], colors="cyan", linewidths=0.5)
        row[0].set_ylabel(f"{name}\n({e['grid']}^2)", fontsize=7)
    fig.suptitle("V in [0, 0.6]; seed 0", fontsize=7)
    from common import figures as figs
    figs.save_figure(fig, path, dpi=60)


def plot_capacity(body, path, n) -> None:
    """Settled completion and selectivity (cosine) against k, each condition and the
    modern Hopfield network on the same cues; mean and 95% interval."""
    import matplotlib.pyplot as plt

    from common import figures as figs

    curves = {name: e["capacity"] for name, e in body["conditions"].items() if "capacity" in e}
    curves["modern Hopfield"] = body["references"]["modern_hopfield"]["capacity"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, cap in curves.items():
        ks = cap["ks"]
        st = [cap["by_k"][str(k)]["settled"] for k in ks]
        style = {"ls": "--", "color": "k"} if name == "modern Hopfield" else {}
        figs.plot_band(axes[0], ks, [s["completion"]["cosine"] for s in st], name, **style)
        figs.plot_band(axes[1], ks, [s["completion"]["iou"] for s in st], name, **style)
        kk = [k for k, s in zip(ks, st) if "selectivity" in s]
        if kk:
            figs.plot_band(axes[2], kk, [cap["by_k"][str(k)]["settled"]["selectivity"]["cosine"]
                                         for k in kk], name, **style)
    for ax, title, line in zip(axes, ("completion (cosine)", "completion (IoU)",
                                      "selectivity of half cues (cosine)"), (0.8, 0.8, 0.5)):
        ax.axhline(line, color="gray", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="k stored (held-out blobs)", title=f"{title}, settled, n={n}")
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figs.save_figure(fig, path, dpi=70)


def plot_targets(body, path, n) -> None:
    """Each condition's settled read-outs against the issue's targets (dots: mean; bars:
    95% interval; dotted line: the target)."""
    import matplotlib.pyplot as plt

    from common import figures as figs

    conds = body["conditions"]
    names = list(conds)
    panels = (("half-cue completion", lambda s, p: s["parts"][f"{p} 0.5"]["completion"]["cosine"], 0.8),
              ("half-cue selectivity", lambda s, p: s["selectivity_half"][p]["cosine"], 0.5),
              ("stored-cue recall", lambda s, p: s["stored"][p]["cosine"], 0.9))
    fig, axes = plt.subplots(1, 5, figsize=(15, 0.35 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    for ax, (title, get, line) in zip(axes, panels):
        for j, p in enumerate(NAMES):
            _dots(ax, y + 0.2 * (j - 1), [get(conds[c]["settled"], p) for c in names], p)
        ax.axvline(line, color="gray", ls=":")
        ax.set_title(title, fontsize=8)
    for ax, (title, key) in zip(axes[3:], (("uniform V: largest", "uniform"),
                                           ("never-stored: largest", "never_stored"))):
        levels = list(conds[names[0]]["settled"][key])
        for j, lvl in enumerate(levels):
            _dots(ax, y + 0.8 * (j / max(1, len(levels) - 1) - 0.5) * (len(levels) > 1),
                  [conds[c]["settled"][key][lvl]["largest"]["cosine"] for c in names], lvl)
        ax.axvline(0.3, color="gray", ls=":")
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.legend(fontsize=5)
        ax.set_xlabel(f"cosine, settled, n={n}", fontsize=7)
    axes[0].set_yticks(y, names, fontsize=7)
    figs.save_figure(fig, path, dpi=70)


def _dots(ax, y, stats, label) -> None:
    mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats])
    lo = np.array([m if s["ci95_low"] is None else s["ci95_low"] for s, m in zip(stats, mean)])
    hi = np.array([m if s["ci95_high"] is None else s["ci95_high"] for s, m in zip(stats, mean)])
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", ms=3, label=label, lw=0.8)


if __name__ == "__main__":
    cli.run_cli(main)
