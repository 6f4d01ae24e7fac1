"""Storage rules beyond the published match-map scar, for the associative-memory search.

Each rule is a `scarring.StorageRule`: a frozen dataclass with a `name` and a pure,
batched `update(V, target, F, K, similarity) -> (F, K)` (see scarring.StorageRule), made
selectable by `scarring.make_rule` once this module is imported. Two optional methods
extend the interface:

* `background(F0, K0) -> (F_bg, K_bg)`: the unscarred medium the rule stores into and
  recalls on (scalars or fields). A rule without it uses (F0, K0), the reference medium.
  The regime rules below need their own: their scars are a *regime switch* (cells that
  hold the pattern are moved to a regime where activity persists and spreads; the rest of
  the medium sits in one where activity dies), so the background is part of the rule.
* `finalize(F, K) -> (F, K)`: a step applied once after all patterns are stored (none of
  the rules here need one; the interface reserves the name).
* `prepare(F, K, target) -> (F, K)`: a step applied once before each pattern is stored,
  on the fields the earlier patterns left (`JunctionScar` needs it). scarring.store_patterns
  does not call it yet; `store_in_turn` below does, so the rule that needs it is not
  registered as a `--rule` choice (a script that skipped the step would run another rule).

Regimes, measured on this repository's medium (9-point stencil, decay 0.9995): a disc
of V = 0.25, U = 0.5 and, separately, a uniform V = 0.12 kick in a uniform 64 x 64
medium, lit fraction (V > 0.2) after 3,000 steps, F in 0.010..0.090, K in 0.030..0.075:
  F = 0.037, K = 0.060 (the reference F0, K0): spots self-replicate slowly (19-24% lit
      at 3,000 steps and still growing), so that medium never settles;
  F = 0.037, K = 0.065: the disc and the uniform kick both die ("dead" background);
  F = 0.060, K = 0.0525 and F = 0.080, K = 0.035: the disc fills the medium, the uniform
      0.12 kick dies (0.12 is below the homogeneous ignition threshold); in a channel 16
      cells wide a lit segment of any length >= 8 cells grows, its ends moving about
      0.015 (0.060, 0.0525) and 0.03 (0.080, 0.035) cells per step;
  F = 0.080, K = 0.030 (the match-map clamps): the disc and the uniform kick both light.

`GlobalInhibition` is a medium option, not a rule: the feed drops with each member's mean
V, so that a featureless kick starves itself. `SurroundInhibitedScar` recalls under it
(`StorageRule.recall_inhibition`).

Measured verdicts (experiments/associative.py, docs/findings.md "Can a scar rule make the
medium an associative memory?"): none of these rules makes the medium an associative
memory of the protocol's overlapping patterns; see the findings for the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as tnf

from scarring import StorageRule, register

DEAD_F, DEAD_K = 0.037, 0.065      # activity dies here (disc and uniform kick)
CHANNEL_F, CHANNEL_K = 0.060, 0.0525  # a lit region invades; a uniform 0.12 kick dies
FAST_CHANNEL_F, FAST_CHANNEL_K = 0.080, 0.035  # the same, with fronts twice as fast


def _gated(similarity: torch.Tensor, gate: float, dims: int, dtype) -> torch.Tensor:
    """(B,) similarity -> (B, 1, ..., 1) float 1 where the member is scarred this step
    (similarity above the gate; an untrained member has similarity -1), else 0."""
    return (similarity > gate).view(-1, *([1] * dims)).to(dtype)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean mask (*lead, H, W) grown by `radius` cells (square neighbourhood,
    periodic like the medium). Pure."""
    H, W = mask.shape[-2:]
    x = mask.to(torch.float32).reshape(-1, 1, H, W)
    x = tnf.pad(x, (radius,) * 4, mode="circular")
    # a square max is separable: rows then columns, 2(2r+1) comparisons, not (2r+1)^2
    x = tnf.max_pool2d(tnf.max_pool2d(x, (1, 2 * radius + 1), stride=1),
                       (2 * radius + 1, 1), stride=1)
    return x.reshape(mask.shape) > 0.5


@dataclass(frozen=True)
class RegimeScar(StorageRule):
    """Move matched cells a fraction `rate` of the way toward the scarred regime
    (F_on, K_on) on every gated step: F += rate * m * (F_on - F), likewise K.

    Soft bounds: F and K approach (F_on, K_on) geometrically and never pass it, so no
    clamp is needed and the depth of a cell's scar records how often (and, when
    `graded`, how strongly) it matched. graded=False: m = 1 where target > match_threshold
    and V > v_threshold, else 0. graded=True: m = clamp(V / v_scale, 0, 1) on target cells
    (a running match: a cell that the medium shows weakly is scarred weakly).
    relax > 0: cells outside the target where V > v_threshold (the medium lit a cell the
    pattern does not hold) move a fraction relax toward the background (anti-Hebbian).
    Not registered: the subclasses below are the rules.
    """
    name: ClassVar[str] = ""
    rate: float = 0.05
    F_on: float = CHANNEL_F
    K_on: float = CHANNEL_K
    F_bg: float = DEAD_F
    K_bg: float = DEAD_K
    graded: bool = False
    v_scale: float = 0.5
    match_threshold: float = 0.3
    v_threshold: float = 0.1
    relax: float = 0.0
    gate: float = 0.0

    def __post_init__(self):
        for field in ("rate", "relax"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field}={value} must be in [0, 1]")
        if self.v_scale <= 0:
            raise ValueError(f"v_scale={self.v_scale} must be > 0")

    def background(self, F0=None, K0=None):
        """The unscarred medium of this rule: (F_bg, K_bg), whatever F0, K0."""
        return self.F_bg, self.K_bg

    def _match(self, V, target):
        on_target = (target > self.match_threshold).to(V.dtype)
        if self.graded:
            return on_target * (V / self.v_scale).clamp(0.0, 1.0)
        return on_target * (V > self.v_threshold).to(V.dtype)

    def update(self, V, target, F, K, similarity):
        gated = _gated(similarity, self.gate, V.dim() - 1, V.dtype)
        step = (self.rate * gated) * self._match(V, target)
        F_new = F + step * (self.F_on - F)
        K_new = K + step * (self.K_on - K)
        if self.relax > 0:
            stray = ((target <= self.match_threshold) & (V > self.v_threshold)).to(V.dtype)
            back = (self.relax * gated) * stray
            F_new = F_new + back * (self.F_bg - F_new)
            K_new = K_new + back * (self.K_bg - K_new)
        return F_new, K_new


@register
@dataclass(frozen=True)
class GradedScar(RegimeScar):
    """Family 1: graded, non-saturating scars on the reference medium. The scar's depth
    follows a running match (V on the target cells), approaches the match-map rule's
    clamp corner softly, and stray activity relaxes toward the reference F0, K0."""
    name: ClassVar[str] = "graded"
    rate: float = 0.01
    F_on: float = 0.08
    K_on: float = 0.03
    F_bg: float = 0.037
    K_bg: float = 0.060
    graded: bool = True
    relax: float = 0.0


@register
@dataclass(frozen=True)
class ChannelScar(RegimeScar):
    """Family 2: excitable channels. Matched cells switch to a regime where a lit region
    invades unlit medium but a uniform kick of cue amplitude dies (CHANNEL_F, CHANNEL_K);
    the background is a regime where all activity dies (DEAD_F, DEAD_K). A part of a
    pattern should then spread over exactly the connected channel it sits on."""
    name: ClassVar[str] = "channel"


@register
@dataclass(frozen=True)
class SurroundScar(RegimeScar):
    """Family 3: channels with an inhibitory surround. As `channel`, and the cells within
    `moat` cells of the target (but outside it) move toward a deeper dead regime
    (F_moat, K_moat), overriding earlier scars there: a pattern stored later cuts the
    older scars it touches, so patterns meet only through their shared cells."""
    name: ClassVar[str] = "surround"
    F_on: float = FAST_CHANNEL_F
    K_on: float = FAST_CHANNEL_K
    moat: int = 4                # cells, at 256 x 256 (2-3 at 128 x 128)
    F_moat: float = 0.030
    K_moat: float = 0.075

    def __post_init__(self):
        super().__post_init__()
        if int(self.moat) != self.moat or not 1 <= self.moat <= 32:
            raise ValueError(f"moat={self.moat} must be an integer in 1..32 (cells)")

    def update(self, V, target, F, K, similarity):
        F, K = super().update(V, target, F, K, similarity)
        gated = _gated(similarity, self.gate, V.dim() - 1, V.dtype)
        on_target = target > self.match_threshold
        ring = (_dilate(on_target, int(self.moat)) & ~on_target).to(V.dtype)
        step = (self.rate * gated) * ring
        return F + step * (self.F_moat - F), K + step * (self.K_moat - K)


@dataclass(frozen=True)
class JunctionScar(SurroundScar):
    """Junction cells belong to neither pattern. As `surround`, and before a pattern is
    stored (`prepare`), the cells of its target that an earlier pattern already holds as
    a channel are moved to a junction regime (F_junction, K_junction) where activity
    dies, which the update never scars again. Why it might work: the measured failure of
    `surround` is that a lit pattern spreads into another through the cells they share
    (the later pattern owns them); with no shared channel cell, activity cannot cross.
    The price, by construction: a pattern crossed by an earlier one is cut there, so it
    can complete only within each piece. Not registered (see `prepare` above)."""
    name: ClassVar[str] = "junction"
    F_junction: float = 0.030
    K_junction: float = 0.080    # above K_moat: marks the cell; dead at F_junction

    def __post_init__(self):
        super().__post_init__()
        if not self.K_junction > max(self.K_moat, self.K_on, self.K_bg):
            raise ValueError(f"K_junction={self.K_junction} must exceed K_moat, K_on and K_bg"
                             f" (it marks junction cells)")

    def junctions(self, F, K, target):
        """Bool (B, *grid): target cells an earlier pattern scarred more than half way
        toward the channel regime (F_on, K_on)."""
        on = target > self.match_threshold
        return on & ((F - self.F_bg) / (self.F_on - self.F_bg) > 0.5)

    def prepare(self, F, K, target):
        """Before storing `target`: its cells that are already channel become junctions."""
        j = self.junctions(F, K, target)
        return (torch.where(j, torch.full_like(F, self.F_junction), F),
                torch.where(j, torch.full_like(K, self.K_junction), K))

    def update(self, V, target, F, K, similarity):
        F_new, K_new = super().update(V, target, F, K, similarity)
        kept = K >= self.K_junction - 1e-6        # junction cells stay as they are
        return torch.where(kept, F, F_new), torch.where(kept, K, K_new)


def store_in_turn(study, rule, targets, seeds, steps: int, snapshots=(), first_index: int = 0,
                  progress: str | None = None) -> dict:
    """scarring.Study.store for a rule with a `prepare` step: one pattern at a time, the
    fields carried from one to the next and prepared before each; the same training
    starts (noise index first_index + p) and protocol as Study.store. Returns F, K (final),
    snapshots {k: (F, K)} and scar_strength (P, S) against the rule's background."""
    from scarring import scar_strength, store_patterns

    p = study.protocol
    F, K = rule.background(p.f0, p.k0)
    out = {"snapshots": {}, "scar_strength": [], "train_similarity": []}
    targets = torch.as_tensor(targets).to(study.device, study.dtype)
    for i in range(targets.shape[-3]):
        target = targets[..., i, :, :]
        if isinstance(F, torch.Tensor):
            F, K = rule.prepare(F, K, target)
        stored = store_patterns(target.unsqueeze(-3), seeds, steps, rule=rule, F=F, K=K,
                                substrate=p.substrate(), device=study.device, dtype=study.dtype,
                                train_strength=p.train_init_strength, train_noise=p.train_noise,
                                first_index=first_index + i,
                                progress=f"{progress} {i + 1}" if progress else None)
        F, K = stored["F"], stored["K"]
        out["train_similarity"].append(stored["train_similarity"][0])
        out["scar_strength"].append(scar_strength(F, K, *rule.background(p.f0, p.k0)).cpu())
        if i + 1 in set(snapshots):
            out["snapshots"][i + 1] = (F.clone(), K.clone())
    out["train_similarity"] = torch.stack(out["train_similarity"])
    out["scar_strength"] = torch.stack(out["scar_strength"])
    out.update(F=F, K=K)
    return out


# ---- a medium option: global inhibition of the feed ------------------------------------

@dataclass(frozen=True)
class GlobalInhibition:
    """Lateral inhibition as a medium change: each member's feed drops with its own
    total activity, F = F_base * clamp(1 - gain * (mean V - set_point), 0, 1) (F_base
    unchanged while mean V <= set_point). A uniform kick or strong noise raises the
    mean V far above the set point, so the feed stops everywhere and U runs out before
    any channel ignites; a cue of one pattern stays below it. Not a StorageRule: it acts
    during recall (and, if wanted, training), as the hook of every step:
    gs.run(steps, hook=inhibition.epilogue, hook_args=(F_base,))."""
    gain: float = 50.0           # feed reaches 0 at mean V = set_point + 1 / gain
    set_point: float = 0.06      # above one lit reference pattern (the ring: ~0.053)

    def __post_init__(self):
        if self.gain < 0 or not 0 <= self.set_point <= 1:
            raise ValueError(f"gain={self.gain} must be >= 0 and set_point="
                             f"{self.set_point} in [0, 1]")

    def feed(self, V: torch.Tensor, F_base: torch.Tensor) -> torch.Tensor:
        """The inhibited feed for V (B, *grid) and F_base (B, *grid). Pure."""
        mean = V.flatten(1).mean(1).view(-1, *([1] * (V.dim() - 1)))
        return F_base * (1.0 - self.gain * (mean - self.set_point)).clamp(0.0, 1.0)

    def epilogue(self, V, F, K, F_base):
        """GrayScott.run hook: (the inhibited feed, K unchanged, nothing returned)."""
        return self.feed(V, F_base), K, None

    def kernel_feed_inhibition(self):
        """(gain, set_point): the CPU kernel runs `epilogue` inside its step
        (substrate.fused_feed) instead of calling it after every step."""
        return self.gain, self.set_point


@register
@dataclass(frozen=True)
class SurroundInhibitedScar(SurroundScar):
    """`surround` scars whose media are recalled under global inhibition of the feed: the
    closest condition of the associative-memory study as one `--rule`. Training is the
    surround rule's; every recall on this rule's media, scarred and control, runs with
    GlobalInhibition(inhibition_gain, inhibition_set_point) as its per-step hook."""
    name: ClassVar[str] = "surround_inhibited"
    inhibition_gain: float = GlobalInhibition.gain
    inhibition_set_point: float = GlobalInhibition.set_point

    def recall_inhibition(self) -> GlobalInhibition:
        return GlobalInhibition(self.inhibition_gain, self.inhibition_set_point)
