"""Media whose memories might compete: the three routes of experiments/compete.py, each a
small pure medium, and the adapters that run any medium (or a Gray-Scott storage rule) on
the battery (battery.py's `Memory`: store and recall).

Each field medium is a memory.Medium (registered: `--medium NAME`); its "scars" are its
own per-cell parameters, written by a local rule while the medium is shown a target.

Routes (hypothesis -> mechanism; docs/findings/compete.md has the measured verdicts):
  A  surround_area (a Gray-Scott StorageRule, scarring.SurroundScar's scars): lit-AREA
     inhibition sized to one pattern (k-winner): while more cells are lit than one
     pattern holds, the feed drops everywhere. Diffuse noise lights
     many cells at once and starves; two half patterns might compete for one area.
  B  link_scar: a bistable field u (Nagumo kinetics) coupled to its four neighbours by
     per-edge conductances; training strengthens the edges between co-active neighbours
     (a memristive grid), and the same lit-area inhibition acts. Hypothesis: activity
     runs along the wires of one pattern, so its parts complete.
  C  hebbian_field: an Amari neural field whose per-cell coupling to M cells within
     radius R (a fixed random set of offsets, the same for every cell) is written by a
     covariance Hebbian rule while the target is shown, recalled under lit-area
     inhibition: the spatial, distance-limited version of a Hopfield network.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

import patterns
import memory
from scarring import SurroundScar, register

def make_medium(name: str, **constants):
    """A registered medium (memory.MEDIA) by name, with these constants."""
    if name not in memory.MEDIA:
        raise ValueError(f"unknown medium {name!r}; choose one of {', '.join(sorted(memory.MEDIA))}")
    return memory.MEDIA[name](**constants)


def lit_excess(u: torch.Tensor, area: float, lit: float) -> torch.Tensor:
    """(B, 1, 1): how far the lit share of each member (cells above `lit`) exceeds
    `area`, in units of `area` (0 while it does not). Pure."""
    share = (u > lit).to(u.dtype).mean((-2, -1), keepdim=True)
    return ((share - area) / area).clamp_min(0.0)


# ---- route A: area inhibition of a Gray-Scott medium --------------------------------------

@dataclass(frozen=True)
class AreaInhibition:
    """k-winner inhibition of a Gray-Scott medium's feed: with x = the lit share (V >
    lit) in excess of `area` (in units of area), F = F_base * clamp(1 - gain x, 0, 1).
    The actuator of rules.GlobalInhibition (the feed), triggered by lit area instead of
    mean V. Acts as GrayScott.run's per-step hook, hook_args (F_base,)."""
    area: float = 0.07          # one stored pattern's share of the grid (four discs: 0.062)
    lit: float = 0.1
    gain: float = 4.0

    def feed(self, V, F_base):
        return F_base * (1.0 - self.gain * lit_excess(V, self.area, self.lit)).clamp(0.0, 1.0)

    def epilogue(self, V, F, K, F_base):
        return self.feed(V, F_base), K, None

    def kernel_feed_inhibition(self):
        """(gain, area, lit): the CPU kernel runs `epilogue` inside its step
        (substrate.fused_feed)."""
        return self.gain, self.area, self.lit


@register
@dataclass(frozen=True)
class SurroundAreaScar(SurroundScar):
    """Route A: `surround` scars recalled under lit-area (k-winner) inhibition."""
    name: ClassVar[str] = "surround_area"
    area: float = AreaInhibition.area
    area_gain: float = AreaInhibition.gain

    def recall_inhibition(self) -> AreaInhibition:
        return AreaInhibition(self.area, AreaInhibition.lit, self.area_gain)


# ---- the medium plug-in ------------------------------------------------------------------

@dataclass(frozen=True)
class Medium(memory.Medium):
    """memory.Medium for a one-field state u in [0, 1] that reads a cue V0 as
    clamp(input_gain * V0, 0, 1) (the media below all do)."""
    name: ClassVar[str] = ""
    input_gain: float = 5.0

    def initial_state(self, V0, fields):
        return ((self.input_gain * V0).clamp(0.0, 1.0),)

    def activity(self, state):
        return state[0]

    def as_dict(self) -> dict:
        return {"medium": self.name, **asdict(self)}


@functools.lru_cache(maxsize=None)
def disc_offsets(radius: int, count: int, seed: int) -> tuple:
    """`count` distinct offsets (dy, dx) with 0 < |d| <= radius, drawn by `seed`."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1),
                            indexing="ij")
    inside = ((ys ** 2 + xs ** 2) <= radius * radius) & ((ys != 0) | (xs != 0))
    cand = torch.stack([ys[inside], xs[inside]], 1)
    pick = torch.randperm(len(cand), generator=g)[:count]
    return tuple(tuple(int(v) for v in cand[i]) for i in pick)


def coupled_input_torch(u, W, offsets):
    """(B, H, W): sum_k W[s, k] * u shifted by offset k (u(x + d_k), periodic), member b
    reading seed s = b // (B / S) of W (S, M, H, W). The reference form of
    models/field_kernel.py's kernel."""
    S = W.shape[0]
    v = u.view(S, -1, *u.shape[-2:])                       # (S, C, H, W)
    h = torch.zeros_like(v)
    for k, (dy, dx) in enumerate(offsets):
        h.addcmul_(W[:, k, None], torch.roll(v, (-dy, -dx), (-2, -1)))
    return h.view_as(u)


def coupled_input(u, W, offsets):
    """The coupling sum: models/field_kernel.py's kernel for float32 CPU tensors, else
    the torch form."""
    import substrate
    if u.device.type == "cpu" and u.dtype == W.dtype == torch.float32 \
            and substrate.kernel_available():
        from models.field_kernel import coupled_input as kernel
        return kernel(u, W, offsets)
    return coupled_input_torch(u, W, offsets)


def _ramp(x, width):
    """Threshold-linear rate: 0 below 0, 1 above width (rest is exactly 0)."""
    return (x / width).clamp(0.0, 1.0)


@memory.register_medium
@dataclass(frozen=True)
class HebbianField(Medium):
    """Route C. u' = -u + ramp((h - theta - J * x) / width), h(x) = sum_k W_k(x)
    u(x + d_k) / (M a): the coupling of each cell to M cells within `radius` (offsets
    d_k drawn once, uniform in the disc, the same for every cell); x = lit_excess(u,
    a, 0.5): inhibition by lit area beyond one pattern's (k-winner). Scar (each step of training, local to the two cells of a weight):
    W_k(x) += eta (u(x) - a)(u(x + d_k) - a), a = the expected lit share; with
    `balance`, each cell then keeps its incoming weights summing to zero."""
    name: ClassVar[str] = "hebbian_field"
    radius: int = 64
    count: int = 192             # M: couplings per cell (at most the disc's cells)
    a: float = 0.06              # expected share of lit cells (one four-disc pattern)
    theta: float = 0.1
    inhibition: float = 0.6      # J (kwta=False only)
    width: float = 0.1
    dt: float = 0.5
    eta: float = 0.1             # Hebbian rate per training step (10 steps: 1)
    balance: bool = True
    offset_seed: int = 0
    kwta: bool = True            # inhibition: the k-winner level of h (True) or J * lit excess
    def offsets(self) -> list:
        return disc_offsets(self.radius, self.count, self.offset_seed)

    def fields(self, batch, height, width, protocol=None):
        return {"W": torch.zeros(batch, len(self.offsets()), height, width)}

    def background(self, protocol=None):
        return {"W": 0.0}

    def step(self, state, fields, steps):
        (u,) = state
        W = fields["W"].float()
        norm = 1.0 / (len(self.offsets()) * self.a)
        for _ in range(steps):
            h = coupled_input(u, W, self.offsets()) * norm
            if self.kwta:       # the input level above which one pattern's area would light
                flat = h.flatten(-2)
                k = max(1, round((1 - self.a) * flat.shape[-1]))
                inhibit = (flat.kthvalue(k, -1).values - self.theta).clamp_min(0.0)[:, None, None]
            else:
                inhibit = self.inhibition * lit_excess(u, self.a, 0.5)
            u = u + self.dt * (-u + _ramp(h - self.theta - inhibit, self.width))
        return (u,)

    def scar(self, state, target, fields, similarity=None):
        (u,) = state
        W = fields["W"]
        c = u - self.a
        for k, (dy, dx) in enumerate(self.offsets()):
            W[:, k].add_(self.eta * c * torch.roll(c, (-dy, -dx), (-2, -1)))
        if self.balance:
            W.sub_(W.mean(1, keepdim=True))
        return fields


@memory.register_medium
@dataclass(frozen=True)
class LinkScar(Medium):
    """Route B. A bistable field with per-edge conductances to its four neighbours:
    u' = sum_e c_e (u_e - u) + kappa u (1 - u)(u - theta_eff), theta_eff = theta +
    inhibition * lit_excess(u). Scar: c_e += eta u u_e (c_max - c_e) on every edge
    whose two cells are lit together (Hebbian, local to the edge's two cells); the
    unscarred conductance is c0."""
    name: ClassVar[str] = "link_scar"
    c0: float = 0.01
    c_max: float = 0.25
    kappa: float = 1.0
    theta: float = 0.45
    area: float = 0.07
    inhibition: float = 0.5
    dt: float = 0.5
    eta: float = 0.2
    def fields(self, batch, height, width, protocol=None):
        # c[:, 0]: the edge to the cell to the right (x + 1); c[:, 1]: to the cell below
        return {"c": torch.full((batch, 2, height, width), self.c0)}

    def background(self, protocol=None):
        return {"c": self.c0}

    def step(self, state, fields, steps):
        (u,) = state
        S = fields["c"].shape[0]
        c = fields["c"].float()
        for _ in range(steps):
            v = u.view(S, -1, *u.shape[-2:])
            right, down = c[:, 0, None], c[:, 1, None]
            flow = (right * (torch.roll(v, -1, -1) - v) + torch.roll(right, 1, -1) * (torch.roll(v, 1, -1) - v)
                    + down * (torch.roll(v, -1, -2) - v) + torch.roll(down, 1, -2) * (torch.roll(v, 1, -2) - v))
            theta = self.theta + self.inhibition * lit_excess(u, self.area, 0.5)
            react = self.kappa * u * (1 - u) * (u - theta)
            du = flow.reshape_as(u) + react
            u = (u + self.dt * du).clamp(0.0, 1.0)
        return (u,)

    def scar(self, state, target, fields, similarity=None):
        (u,) = state
        c = fields["c"]
        for axis, shift in ((0, -1), (1, -2)):
            both = u * torch.roll(u, -1, shift)
            c[:, axis].add_(self.eta * both * (self.c_max - c[:, axis]))
        return fields


# ---- adapters: a medium (or a Gray-Scott rule) as the battery's Memory -----------------

def _changed(before, after) -> torch.Tensor:
    return (after - before).abs().flatten(-2).mean(-1)


@dataclass
class MediumMemory:
    """Store and recall on a Medium. Training shows each target: the medium's activity
    is held at the target's mask (target / PEAK) for train_steps steps, and the medium's
    scar rule writes after every step (the patterns are stored in turn; the shown state
    does not depend on earlier scars, so a later pattern is not learned through an
    earlier one's recall). Recall runs each cue until every member changes by less than
    `tol` per cell per step over a chunk of `chunk` steps (at least min_steps, at most
    max_steps)."""
    medium: Medium
    train_steps: int = 10
    min_steps: int = 20
    max_steps: int = 100
    chunk: int = 10
    tol: float = 1e-4
    snapshot_dtype: torch.dtype = torch.bfloat16

    @property
    def name(self):
        return self.medium.name

    def store(self, pats, seeds, snapshots=()):
        S, P, H, W = pats.shape
        fields = self.medium.fields(S, H, W)
        out = {}
        for p in range(P):
            target = pats[:, p].float()
            state = (torch.as_tensor(target / patterns.PEAK).clamp(0.0, 1.0),)
            for _ in range(self.train_steps):
                fields = self.medium.scar(state, target, fields, None)
            if p + 1 in set(snapshots):
                out[p + 1] = {k: v.to(self.snapshot_dtype) for k, v in fields.items()}
        return fields, out

    def recall(self, stored, cues):
        """Cues of one column (the same cue of every seed) leave the batch together once
        every seed's member has settled (fields are shared by a seed's cues, so a batch
        stays whole per seed); their activity is kept from then on."""
        S, C, H, W = cues.shape
        fields = {k: v.float() for k, v in stored.items()}
        state = self.medium.initial_state(cues.reshape(S * C, H, W).float(), fields)
        out = self.medium.activity(state).view(S, C, H, W).clone()
        live = torch.arange(C)                      # columns still running
        settled_at = torch.full((S, C), math.nan)
        steps = 0
        while steps < self.max_steps and len(live):
            last = self.medium.activity(state)
            state = self.medium.step(state, fields, self.chunk)
            steps += self.chunk
            now = self.medium.activity(state)
            change = (_changed(last, now) / self.chunk).view(S, len(live))
            out[:, live] = now.view(S, len(live), H, W)
            if steps < self.min_steps:
                continue
            done = change < self.tol                  # (S, live)
            settled_at[:, live] = torch.where(done & settled_at[:, live].isnan(),
                                              torch.tensor(float(steps)), settled_at[:, live])
            keep = ~done.all(0)
            if not keep.all():
                live = live[keep]
                state = tuple(x.view(S, -1, H, W)[:, keep].reshape(-1, H, W) for x in state)
        return out, {"steps": steps, "settled": ~settled_at.isnan(), "settled_at": settled_at}


@dataclass
class RuleMemory:
    """A Gray-Scott storage rule (scarring.make_rule) as the battery's Memory: store
    through scarring.Study (the protocol's training, --multi-train-steps per pattern),
    recall with the rule's recall inhibition as the per-step hook, in chunks of `chunk`
    steps, until every member changes by less than tol per cell per 100 steps (at least
    min_steps, at most max_steps)."""
    study: object
    rule: object
    min_steps: int = 3000
    max_steps: int = 6000
    chunk: int = 500
    tol: float = 1e-3

    @property
    def name(self):
        return self.rule.name

    def store(self, pats, seeds, snapshots=()):
        st = self.study
        pats = pats.to(st.device, st.dtype)
        res = st.store(pats, seeds, st.protocol.multi_train_steps, rule=self.rule,
                       snapshots=snapshots)
        return (res["F"], res["K"]), res["snapshots"]

    def recall(self, stored, cues):
        import substrate
        st, (F, K) = self.study, stored
        S, C, H, W = cues.shape
        gs = substrate.GrayScott(H, W, batch=S * C, device=st.device, dtype=st.dtype,
                                 **st.protocol.substrate())
        gs.F = F.to(st.device, st.dtype).repeat_interleave(C, 0).contiguous()
        gs.K = K.to(st.device, st.dtype).repeat_interleave(C, 0).contiguous()
        gs.reset(V=cues.to(st.device, st.dtype).reshape(S * C, H, W))
        inh = self.rule.recall_inhibition()
        hook, args = (None, ()) if inh is None else (inh.epilogue, (gs.F.clone(),))
        steps, change = 0, torch.full((S * C,), math.inf)
        if self.min_steps > self.chunk:          # no settle check before min_steps
            gs.run(self.min_steps - self.chunk, hook=hook, hook_args=args)
            steps = self.min_steps - self.chunk
        while steps < self.max_steps:
            n = min(self.chunk, self.max_steps - steps)
            before = gs.V.clone()
            gs.run(n, hook=hook, hook_args=args)
            steps += n
            change = _changed(before, gs.V).cpu() * 100.0 / n
            if steps >= self.min_steps and bool((change < self.tol).all()):
                break
        return gs.V.view(S, C, H, W).cpu(), {"steps": steps, "settled": (change < self.tol).view(S, C)}
