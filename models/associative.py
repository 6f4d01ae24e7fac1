"""The associative-memory battery, for any medium: the cues (parts of a stored pattern,
never-stored patterns on and off the scars, a held-out family of random blobs), the
read-outs (completion, selectivity, rejection, stored recall), scars learned by gradient
through the substrate, and the modern Hopfield network on the same cues.
experiments/associative.py asks its question with them.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

import memory
import metrics
import patterns
import scarring
import stats
from common import cli
from models import adam, differentiable

NAMES = ("A", "B", "C")                 # the protocol's A_square_spots, B_ring, C_line
PART_KIND = ("components", "arc", "segment")   # how a part of A, B, C is cut
LINE_AXIS = math.pi / 4                 # the line runs along +x +y
THRESHOLD = 0.3                         # masks: V or target above this (IoU, completion)
FOREIGN_ON = (0.25, 0.5)                # never-stored "on": this fraction on stored cells
FOREIGN_MOAT = 4                        # never-stored "off": no cell within this (ref. cells)
BLOB_RADIUS = 18                        # held-out family: disc radius, reference cells
LEARN_UNIFORM = 0.12                    # learned scars: the uniform V they learn to refuse
LEARN_LATE, LEARN_LATE_GRAD = 1000, 50   # and the late read-out: step, gradient steps


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


def held_out(n: int, grid: int, seeds, count: int) -> torch.Tensor:
    """(S, n, H, W): n random-blob patterns per seed (`count` discs of BLOB_RADIUS
    reference cells, placed independently: patterns overlap by chance)."""
    return torch.stack([torch.stack([
        patterns.make_pattern("blobs", grid, grid, seed=int(s) * 1009 + j + 50_000,
                              count=count, radius=BLOB_RADIUS) for j in range(n)])
        for s in seeds])


def capacity_patterns(fam, k: int, n_cued: int):
    """The first k patterns of the family, reordered so that the cued ones (spread over
    the storage order: first, last and between) come first; and their indices."""
    n = min(k, n_cued)
    cued = sorted({int(round(x)) for x in np.linspace(0, k - 1, n)})
    order = cued + [j for j in range(k) if j not in cued]
    return fam[:, order], cued


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


def capacity_of(ks, by_k) -> int:
    """metrics.associative_capacity of the settled means (cosine)."""
    comp = [by_k[str(k)]["settled"]["completion"]["cosine"]["mean"] for k in ks]
    sel = [by_k[str(k)]["settled"]["selectivity"]["cosine"]["mean"]
           if "selectivity" in by_k[str(k)]["settled"] else None for k in ks]
    comp = [math.nan if c is None else c for c in comp]
    sel = [math.nan if (s is None and k > 1) else s for s, k in zip(sel, ks)]
    return metrics.associative_capacity(ks, comp, sel)


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
    logits = [torch.full((S, H, H), differentiable.logit_of(x, lo, hi), requires_grad=True)
              for x, (lo, hi) in zip((p.f0, p.k0), lo_hi)]
    moments, history = adam.adam_state(logits), []
    physics = differentiable.Physics.of(p)
    targets = pats.float()
    with cli.progress(args.learn_iters, f"{tag}learn lam={lam:g}") as bar:
        for it in range(args.learn_iters):
            F, K = (differentiable.bounded(a, lo, hi) for a, (lo, hi) in zip(logits, lo_hi))
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
        F, K = (differentiable.bounded(a, lo, hi) for a, (lo, hi) in zip(logits, lo_hi))
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


def settle_summary(res) -> dict:
    settled = ~torch.isnan(res["settled_at"])
    last = res["change"][-1]
    return {"steps_run": res["steps"], "settled_recalls": stats.rate(settled),
            "largest_change_per_100_steps_at_end": float(last[~last.isnan()].max())}


def stat(values) -> dict:
    """The stat block over seeds: a percentile bootstrap of the mean (it stays inside the
    range of the data, so a bounded metric stays in bounds); NaN seeds (a recall with no
    read-out) are left out and counted."""
    return stats.summarize(torch.as_tensor(values, dtype=torch.float64).flatten(),
                           "bootstrap_percentile", drop_nan=True)


def summarize_tree(tree):
    """Every per-seed tensor of a nested dict -> stat()."""
    if isinstance(tree, dict):
        return {k: summarize_tree(v) for k, v in tree.items()}
    return stat(tree)


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
