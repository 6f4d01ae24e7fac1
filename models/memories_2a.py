"""Experiment 2A's media as memories the competing-memories battery can drive (its
`Memory`: store(patterns, seeds, snapshots) and recall(stored, cues)).

Both media read a V-like cue (the battery's: clamp(0.2 x pattern + noise), pattern cells
at patterns.PEAK) as a two-level input: a cell at the cue's on level (`on_level`, the
battery's 0.2 x PEAK) or above is "on", at 0 it is "off", in between it is in between:
the Kuramoto medium starts at phase pi x level (on cells in antiphase), the Hopfield
substrate at 2 level - 1 (on +1, off -1). Stored patterns are shown as the same levels
(pattern / its peak). Activities are scaled to PEAK, the patterns' level. Recall runs
until the largest change of the activity over `check_every` steps is below `tolerance`
(settled) or `max_steps` pass; each seed's cues run as one batch on that seed's fields
(the Kuramoto medium keeps 28 couplings per cell, so seeds run in turn to bound memory).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.hopfield_substrate import HopfieldSubstrate
from models.kuramoto import Kuramoto
from patterns import PEAK
from protocol import noise_seeds

ON_LEVEL = 0.2 * PEAK


def levels(V: torch.Tensor, on_level: float) -> torch.Tensor:
    return (V / on_level).clamp(0.0, 1.0)


def _noise(seeds, shape, index: int) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(g))
                        for g in noise_seeds(seeds, "train", index)])


def _settle(step, activity, state, max_steps: int, check_every: int, tolerance: float,
            min_steps: int = 0, shared_fields: bool = False):
    """Run `step(state, n)` until the activity's largest change over check_every steps is
    below tolerance per member (settled members stop; not before min_steps: a state near
    an unstable fixed point leaves it slowly) or max_steps pass. shared_fields: every
    member runs on the same fields, so `step` is given only the members still moving
    (a settled member is kept as it was either way; this only saves their steps)."""
    B = activity(state).shape[0]
    steps = torch.full((B,), max_steps, dtype=torch.long)
    settled = torch.zeros(B, dtype=torch.bool)
    done = 0
    while done < max_steps:
        live = (~settled).nonzero().flatten() if shared_fields else torch.arange(B)
        sub = tuple(s[live] for s in state)
        before = activity(sub)
        n = min(check_every, max_steps - done)
        new = step(sub, n)
        done += n
        change = (activity(new) - before).abs().flatten(1).amax(1)
        moving = ~settled[live]
        state = tuple(s.index_copy(0, live[moving], t[moving]) for s, t in zip(state, new))
        now = live[moving & (change < tolerance) & (done >= min_steps)]
        steps[now] = done
        settled[now] = True
        if settled.all():
            break
    return state, steps, settled


@dataclass
class SettleLog:
    """Every recall's steps and settled flags, for one summary over a whole battery."""
    settle_records: list = field(default_factory=list, repr=False)

    def log(self, steps: torch.Tensor, settled: torch.Tensor) -> None:
        self.settle_records.append((steps.flatten(), settled.flatten()))

    def settle_summary(self) -> dict:
        """{recalls, settled, steps_mean, steps_max} over every recall so far."""
        rec = self.settle_records
        steps = torch.cat([r[0] for r in rec]) if rec else torch.zeros(0)
        ok = torch.cat([r[1] for r in rec]) if rec else torch.zeros(0, dtype=torch.bool)
        return {"recalls": int(ok.numel()), "settled": int(ok.sum()),
                "steps_mean": float(steps.float().mean()) if rec else 0.0,
                "steps_max": int(steps.max()) if rec else 0}


def _batch(fields, n: int) -> dict:
    """One member's fields (1, ...) as a batch of n (an expand: no copy)."""
    return {k: v.expand(n, *v.shape[1:]) if v.dim() else v for k, v in fields.items()}


@dataclass
class KuramotoMemory(SettleLog):
    medium: Kuramoto = field(default_factory=Kuramoto)
    train_steps: int = 100
    max_steps: int = 1000
    check_every: int = 50
    tolerance: float = 0.01
    min_steps: int = 300
    on_level: float = ON_LEVEL
    jitter: float = 0.05         # phase noise of every start, radians (exact 0 / pi is a
    name: str = "kuramoto"       # fixed point of sin coupling: nothing would move)

    def store(self, patterns, seeds, snapshots=()):
        S, P, H, W = patterns.shape
        targets = patterns / patterns.amax((-2, -1), keepdim=True).clamp_min(1e-12)
        fields, by_k = self.medium.fields(S, H, W), {}
        for p in range(P):
            noise = 0.1 * _noise(seeds, (1, H, W), 9_000 + p)
            fields = self.medium.train(fields, targets[:, p:p + 1], self.train_steps, noise)
            if p + 1 in snapshots:
                by_k[p + 1] = {k: v.clone() for k, v in fields.items()}
        # each seed's value travels with its fields: recall draws its start jitter from it,
        # so a seed gives the same recall alone and in any batch
        seed = torch.as_tensor(list(seeds), dtype=torch.long)
        return {**fields, "seed": seed}, {k: {**f, "seed": seed} for k, f in by_k.items()}

    def recall(self, stored, cues):
        S, C, H, W = cues.shape
        m, out, steps, settled = self.medium, [], [], []
        seed_of = stored.get("seed", torch.arange(S))
        for s in range(S):
            f = {k: v[s:s + 1] if v.dim() else v for k, v in stored.items()
                 if k != "seed"}   # seed s's fields
            (theta,) = m.initial_state(levels(cues[s], self.on_level))
            g = torch.Generator().manual_seed(7_919 + int(seed_of[s]))
            state = (theta + self.jitter * torch.randn(theta.shape, generator=g),)
            state, n, ok = _settle(lambda st, k: m.step(st, _batch(f, st[0].shape[0]), k),
                                   m.activity, state, self.max_steps, self.check_every,
                                   self.tolerance, self.min_steps, shared_fields=True)
            out.append(PEAK * m.activity(state))
            steps.append(n)
            settled.append(ok)
        self.log(torch.stack(steps), torch.stack(settled))
        return torch.stack(out), {"steps": torch.stack(steps).float().mean().item(),
                                  "settled": torch.stack(settled)}


@dataclass
class HopfieldMemory(SettleLog):
    medium: HopfieldSubstrate = field(default_factory=lambda: HopfieldSubstrate(scale=1.0))
    max_steps: int = 1000
    check_every: int = 10
    tolerance: float = 0.01
    on_level: float = ON_LEVEL
    name: str = "hopfield_substrate"

    def store(self, patterns, seeds, snapshots=()):
        S, P, H, W = patterns.shape
        fields, by_k = self.medium.fields(S, H, W), {}
        for p in range(P):
            fields = self.medium.scar(None, patterns[:, p], fields)
            if p + 1 in snapshots:
                by_k[p + 1] = dict(fields)
        return fields, by_k

    def recall(self, stored, cues):
        S, C, H, W = cues.shape
        m = self.medium
        f = {"p": stored["p"]}          # (S, P, N), shared by each seed's C cues
        state = m.initial_state(2 * levels(cues.flatten(0, 1), self.on_level) - 1)
        state, n, ok = _settle(lambda st, k: m.step(st, f, k), m.activity, state,
                               self.max_steps, self.check_every, self.tolerance)
        self.log(n, ok)
        return (PEAK * m.activity(state)).view(S, C, H, W), {
            "steps": n.float().mean().item(), "settled": ok.view(S, C)}


MEMORIES = {"kuramoto": KuramotoMemory, "hopfield_substrate": HopfieldMemory}
