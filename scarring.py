"""Storing patterns in a Gray-Scott medium's F and K, and recalling them.

Storage rules (`StorageRule`; `RULES` by name) update F and K after each training step.
The published one is the match-map rule (`ScarRule`, docs/protocol.md), applied only
while the member's similarity to its target exceeds the gate:

    match = (V > 0.3) & (target > 0.3)
    F[match] += 0.003 ; K[match] -= 0.0015
    F, K = clamp(F, 0.01, 0.08), clamp(K, 0.03, 0.08)

With the reference constants it saturates within a few dozen gated steps: matched cells
end at the clamps (F = 0.08, K = 0.03), so the scar map is in effect binary.

The path every study shares: `make_cues` (protocol starts and cues, one noise draw per
seed, role and index), `store_patterns` (scar patterns in turn, scars accumulating: the
protocol's training), `recall_matrix` (recall every cue on given F/K in one batch and
compare with every pattern), both built on `evolve` (one run of the stepper with the
rule's update fused into each step).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch

import torch.nn.functional as tnf

import memory
from memory import per_seed
from metrics import METRIC_NAMES, METRICS
from patterns import PATTERNS, make_cue
from protocol import Protocol, noise_seeds
from substrate import GrayScott, check_stability, gray_scott_step

REFERENCE = Protocol()   # the published constants: the defaults below come from here
F0, K0 = REFERENCE.f0, REFERENCE.k0


class StorageRule:
    """How a medium stores a pattern: a pure update of F and K after each training step.

    A rule is a frozen (hashable) dataclass with a `name` (its `--rule` value) and
    `update(V, target, F, K, similarity) -> (F, K)`, batched over the leading dimension:
    V (B, *grid) the state after the step, target (*grid) or (B, *grid), F and K
    (B, *grid) per member, similarity (B,) the cosine of V to the target (a member whose
    similarity is -1 must be left unchanged: it is not being trained). `evolve` fuses the
    update into the step's compiled kernel, keyed by the rule itself, so it must be pure
    tensor arithmetic. Register a new rule with `@register` to make it a `--rule` choice.
    """
    name: ClassVar[str] = ""

    def update(self, V, target, F, K, similarity):
        raise NotImplementedError

    def background(self, F0: float, K0: float):
        """The unscarred medium this rule stores into and recalls on: (F, K), scalars or
        fields. The published rule scars the protocol's own medium (F0, K0); a rule that
        switches regimes (the regime rules below) brings its own."""
        return F0, K0

    def recall_inhibition(self):
        """A medium option that every recall on this rule's media (scarred and control)
        runs with: an object with `epilogue(V, F, K, F_base) -> (F, K, None)`, applied
        every step (e.g. GlobalInhibition below); None for a plain medium."""
        return None

    def is_finite(self) -> bool:
        """Finite constants map finite F, K to finite F, K (spares a per-step check)."""
        return all(math.isfinite(v) for v in asdict(self).values()
                   if isinstance(v, (int, float)))

    def as_dict(self) -> dict:
        return {"rule": self.name, **asdict(self)}


RULES: dict[str, type] = {}


def register(cls):
    """Class decorator: make a StorageRule selectable by name (`make_rule`, `--rule`)."""
    if not cls.name or cls.name in RULES:
        raise ValueError(f"rule name {cls.name!r} is empty or taken")
    RULES[cls.name] = cls
    return cls


def rule_class(name: str) -> type:
    """The registered rule class called `name` (ValueError naming the choices if none)."""
    if name not in RULES:
        raise ValueError(f"--rule {name!r}: must be one of {', '.join(sorted(RULES))}")
    return RULES[name]


def storage_rule(protocol: Protocol) -> StorageRule:
    """The storage rule of a protocol: the published match-map rule with its constants,
    or another registered rule (RULES) on the protocol's unscarred medium."""
    p = protocol
    if p.rule == "match_map":
        return ScarRule(strength=p.scar_strength, k_ratio=p.k_ratio,
                        match_threshold=p.match_threshold, gate=p.gate, F_min=p.f_min,
                        F_max=p.f_max, K_min=p.k_min, K_max=p.k_max, F0=p.f0, K0=p.k0)
    cls = rule_class(p.rule)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (("F0", p.f0), ("K0", p.k0)) if k in names})


def check_protocol(protocol: Protocol) -> None:
    """The checks of a protocol that need the physics: the stability bound with the worst
    clamped state (V = 1) and the largest F, K, and the storage rule's own checks (an
    unknown --rule included). ValueError with one line."""
    p = protocol
    check_stability(p.du, p.dv, p.dt, p.stencil, F_max=max(p.f0, p.f_max),
                    K_max=max(p.k0, p.k_max), V_max=1.0)
    if p.pattern not in PATTERNS:
        raise ValueError(f"--pattern {p.pattern!r}: must be one of {', '.join(sorted(PATTERNS))}")
    storage_rule(p)


def make_rule(name: str, **constants) -> StorageRule:
    """The rule called `name`, with constants overriding its defaults."""
    return rule_class(name)(**constants)


@register
@dataclass(frozen=True)
class ScarRule(StorageRule):
    """The published match-map rule (module docstring)."""
    name: ClassVar[str] = "match_map"
    strength: float = REFERENCE.scar_strength   # F increment per gated step, matched cells
    k_ratio: float = REFERENCE.k_ratio   # K decrement = k_ratio * strength (0: F-only scar)
    f_ratio: float = 1.0                 # F increment = f_ratio * strength (0: K-only scar)
    match_threshold: float = REFERENCE.match_threshold   # V and target both above: a match
    gate: float = REFERENCE.gate         # scar only while similarity > gate
    F_min: float = REFERENCE.f_min
    F_max: float = REFERENCE.f_max
    K_min: float = REFERENCE.k_min
    K_max: float = REFERENCE.k_max
    scar_decay: float = 0.0      # per application, relax F, K toward (F0, K0) by this fraction
    F0: float = F0               # the unscarred medium that scar_decay relaxes toward
    K0: float = K0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not math.isfinite(value):
                raise ValueError(f"{name}={value}: must be a finite number")
        if not (0 <= self.F_min <= self.F_max <= 1 and 0 <= self.K_min <= self.K_max <= 1):
            raise ValueError(f"clamps must satisfy 0 <= min <= max <= 1: F [{self.F_min}, "
                             f"{self.F_max}], K [{self.K_min}, {self.K_max}]")
        if not 0.0 <= self.scar_decay <= 1.0:
            raise ValueError(f"scar_decay={self.scar_decay} must be in [0, 1]")
        if min(self.strength, self.k_ratio, self.f_ratio) < 0:
            raise ValueError(f"strength={self.strength}, k_ratio={self.k_ratio}, f_ratio="
                             f"{self.f_ratio}: must be >= 0")
        if not -1.0 <= self.gate < 1.0:   # cosine similarity never exceeds 1
            raise ValueError(f"gate={self.gate}: must be in [-1, 1) (a gate >= 1 never scars)")
        if not 0.0 <= self.match_threshold < 1.0:   # V is clamped to [0, 1]
            raise ValueError(f"match_threshold={self.match_threshold}: must be in [0, 1)")

    def update(self, V, target, F, K, similarity):
        """One scar update for a batch (module docstring). Pure: returns new (F, K)."""
        gated = (similarity > self.gate).view(-1, *([1] * (V.dim() - 1)))
        match = (match_map(V, target, self.match_threshold) & gated).to(F.dtype)
        if F.dim() < match.dim() and match.shape[0] != 1:
            raise ValueError(f"F has shape {tuple(F.shape)} shared by the batch, but scars "
                             f"are per member: give F, K of shape {tuple(match.shape)}")
        F_new = F + (self.f_ratio * self.strength) * match
        K_new = K - (self.k_ratio * self.strength) * match
        if self.scar_decay > 0:
            relax = self.scar_decay * gated.to(F.dtype)
            F_new = F_new - relax * (F_new - self.F0)
            K_new = K_new - relax * (K_new - self.K0)
        return F_new.clamp(self.F_min, self.F_max), K_new.clamp(self.K_min, self.K_max)


def match_map(V: torch.Tensor, target: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Boolean (B, H, W): cells where both the medium and the target exceed threshold."""
    return (V > threshold) & (target > threshold)


# ---- rules beyond the published one, for the associative-memory search -----------------
#
# Each rule is a `scarring.StorageRule`: a frozen dataclass with a `name` and a pure,
# batched `update(V, target, F, K, similarity) -> (F, K)` (see scarring.StorageRule), made
# selectable by `scarring.make_rule` once this module is imported. Two optional methods
# extend the interface:
#
# * `background(F0, K0) -> (F_bg, K_bg)`: the unscarred medium the rule stores into and
#   recalls on (scalars or fields). A rule without it uses (F0, K0), the reference medium.
#   The regime rules below need their own: their scars are a *regime switch* (cells that
#   hold the pattern are moved to a regime where activity persists and spreads; the rest of
#   the medium sits in one where activity dies), so the background is part of the rule.
# * `finalize(F, K) -> (F, K)`: a step applied once after all patterns are stored (none of
#   the rules here need one; the interface reserves the name).
# * `prepare(F, K, target) -> (F, K)`: a step applied once before each pattern is stored,
#   on the fields the earlier patterns left (`JunctionScar` needs it). scarring.store_patterns
#   does not call it yet; `store_in_turn` below does, so the rule that needs it is not
#   registered as a `--rule` choice (a script that skipped the step would run another rule).
#
# Regimes, measured on this repository's medium (9-point stencil, decay 0.9995): a disc
# of V = 0.25, U = 0.5 and, separately, a uniform V = 0.12 kick in a uniform 64 x 64
# medium, lit fraction (V > 0.2) after 3,000 steps, F in 0.010..0.090, K in 0.030..0.075:
#   F = 0.037, K = 0.060 (the reference F0, K0): spots self-replicate slowly (19-24% lit
#       at 3,000 steps and still growing), so that medium never settles;
#   F = 0.037, K = 0.065: the disc and the uniform kick both die ("dead" background);
#   F = 0.060, K = 0.0525 and F = 0.080, K = 0.035: the disc fills the medium, the uniform
#       0.12 kick dies (0.12 is below the homogeneous ignition threshold); in a channel 16
#       cells wide a lit segment of any length >= 8 cells grows, its ends moving about
#       0.015 (0.060, 0.0525) and 0.03 (0.080, 0.035) cells per step;
#   F = 0.080, K = 0.030 (the match-map clamps): the disc and the uniform kick both light.
#
# `GlobalInhibition` is a medium option, not a rule: the feed drops with each member's mean
# V, so that a uniform kick starves itself (noise kicks, whose mean V stays low, are not
# refused: docs/findings/compete.md). `SurroundInhibitedScar` recalls under it
# (`StorageRule.recall_inhibition`).
#
# Measured verdicts (experiments/associative.py, docs/findings/associative.md): none of
# these rules makes the medium an associative memory of the protocol's overlapping
# patterns; see the findings for the numbers.

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


def scar_strength(F: torch.Tensor, K: torch.Tensor, F0=F0, K0=K0):
    """Total scar: sum |F - F0| + sum |K - K0| over the grid, per member (shape (B,)).
    F0, K0: the unscarred medium, numbers or fields (memory.scar_strength)."""
    return memory.scar_strength({"F": F, "K": K}, {"F": F0, "K": K0})


def _scar_epilogue(V, F, K, target, rule: StorageRule, spatial_dims: int):
    """The hook of a training run (GrayScott.run): the similarity of the new V to each
    member's target, then one gated update by the rule. Returns (F, K, similarity); pure,
    so the stepper fuses it into its kernel."""
    from metrics import cosine_similarity

    similarity = cosine_similarity(V, target, spatial_dims)
    F, K = rule.update(V, target, F, K, similarity)
    return F, K, similarity


def _kernel_scar(target, rule: StorageRule, spatial_dims: int):
    """What the CPU kernel needs to run _scar_epilogue inside its step
    (substrate.fused_scar): the published rule only (its update is the kernel's, operation
    for operation), on a 2D medium; None for any other rule."""
    from metrics import EMPTY_SUM, cosine_similarity

    if type(rule) is not ScarRule or spatial_dims != 2:
        return None
    r = rule   # short: the constants below are many
    return {"target": target, "gate": r.gate, "empty": EMPTY_SUM,
            "constants": (r.match_threshold, r.f_ratio * r.strength, r.k_ratio * r.strength,
                          r.scar_decay, r.F0, r.K0, r.F_min, r.F_max, r.K_min, r.K_max),
            "out": lambda V: cosine_similarity(V, target, spatial_dims)}


_scar_epilogue.kernel_scar = _kernel_scar


# ---- storing and recalling patterns: the path every study shares ------------------------

TRAIN_STRENGTH = REFERENCE.train_init_strength   # training start: clamp(0.2 * target + noise)
TRAIN_NOISE = REFERENCE.train_noise              # its noise: N(0, 0.1^2)
CUE_NOISE = REFERENCE.cue_noise                  # every cue's noise: N(0, 0.05^2)


def make_cues(targets: torch.Tensor, strength: float, noise_std: float = CUE_NOISE,
              seeds=(0,), role: str = "cue", first_index: int = 0) -> torch.Tensor:
    """Protocol cues clamp(strength * target + N(0, noise_std^2), 0, 1), one per target.

    targets: (C, H, W) shared by the seeds or (S, C, H, W) per seed. Returns (S, C, H, W);
    cue c of seed s uses noise seed protocol.noise_seeds([s], role, first_index + c).
    """
    seeds = list(seeds)
    S = len(seeds)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"cue strength={strength} must be in [0, 1]")
    if not noise_std >= 0.0:
        raise ValueError(f"cue noise_std={noise_std} must be >= 0")
    t = per_seed(targets, S, "targets", 3)
    return torch.stack([make_cue(t[:, c], strength, noise_std,
                                 noise_seeds(seeds, role, first_index + c))
                        for c in range(t.shape[1])], dim=1)


# ---- the Gray-Scott medium: the engine's plug-in for a storage rule ----------------------

class GrayScottSimulation(memory.Simulation):
    """A batch of the Gray-Scott medium on the project's stepper (substrate.GrayScott): a
    training run fuses the rule's update into each step's compiled kernel, a recall the
    medium's inhibition (if any)."""

    def __init__(self, medium: "GrayScottMedium", state, fields):
        self.medium = medium
        U, V = state
        depth = V.shape[-3] if V.dim() == 4 else None   # (B, D, H, W): a 3D medium
        self.gs = GrayScott(V.shape[-2], V.shape[-1], batch=V.shape[0], depth=depth,
                            device=V.device, dtype=V.dtype, **medium.substrate())
        self.gs.F, self.gs.K = fields["F"], fields["K"]
        self.gs.reset(V=V, U=U)

    @property
    def state(self):
        return self.gs.U, self.gs.V

    @state.setter
    def state(self, value):
        self.gs.U, self.gs.V = value

    @property
    def fields(self):
        return {"F": self.gs.F, "K": self.gs.K}

    @fields.setter
    def fields(self, value):
        self.gs.F, self.gs.K = value["F"], value["K"]

    def reset(self, V0):
        self.gs.reset(V=V0)

    def keep(self, index):
        U, V = (s[index] for s in self.state)
        F, K = (f[index] if f.dim() == 3 else f for f in (self.gs.F, self.gs.K))
        self.__init__(self.medium, (U, V), {"F": F, "K": K})

    def run(self, steps, target=None, learn=False, every=0, on_record=None):
        gs, m = self.gs, self.medium
        hook, hook_args, F_base = None, (), gs.F
        if learn:
            if m.rule is None:
                raise ValueError("a Gray-Scott medium without a storage rule cannot learn")
            hook, hook_args = _scar_epilogue, (target, m.rule, gs.V.dim() - 1)
        elif m.inhibition is not None:
            hook, hook_args = m.inhibition.epilogue, (F_base.expand_as(gs.V).contiguous(),)
        record = None if on_record is None else (lambda s, U, V, out: on_record(s, V, out))
        gs.run(int(steps), hook=hook, hook_args=hook_args, record_every=every or steps,
               on_record=record)
        if hook is not None and not learn:
            gs.F = F_base     # the inhibited feed is not kept


@memory.register_medium
@dataclass(frozen=True)
class GrayScottMedium(memory.Medium):
    """The Gray-Scott medium (substrate.py) whose fields F, K a storage rule scars: the
    published study's medium. rule: the StorageRule (None: a medium that does not learn);
    F0, K0: the protocol's unscarred medium (a rule may bring its own background);
    inhibition: a per-step hook every recall runs with (StorageRule.recall_inhibition);
    the rest: GrayScott's physics."""
    name: ClassVar[str] = "gray_scott"
    rule: StorageRule | None = None
    F0: float = F0
    K0: float = K0
    Du: float = REFERENCE.du
    Dv: float = REFERENCE.dv
    dt: float = REFERENCE.dt
    decay: float | None = REFERENCE.decay
    stencil: str = REFERENCE.stencil
    clamp: bool = True
    compile: object = "auto"
    inhibition: object = None

    @classmethod
    def of(cls, protocol: Protocol, rule: StorageRule | None = None, **substrate):
        """The medium of a protocol with its storage rule (or `rule`); substrate: GrayScott
        keyword arguments overriding the protocol's physics (e.g. clamp=False)."""
        rule = storage_rule(protocol) if rule is None else rule
        return cls(rule=rule, F0=protocol.f0, K0=protocol.k0,
                   inhibition=rule.recall_inhibition(), **{**protocol.substrate(), **substrate})

    def substrate(self) -> dict:
        return {"Du": self.Du, "Dv": self.Dv, "dt": self.dt, "decay": self.decay,
                "stencil": self.stencil, "clamp": self.clamp, "compile": self.compile}

    def background(self, protocol=None) -> dict:
        F, K = (self.F0, self.K0) if self.rule is None else self.rule.background(self.F0, self.K0)
        return {"F": F, "K": K}

    def fields(self, batch, height, width, protocol=None, dtype=torch.float32, device=None):
        return memory.as_fields(self.background(), batch, height, width,
                                memory.Settings(device or "cpu", dtype))

    def initial_state(self, V0, fields):
        return torch.ones_like(V0), V0.clone()

    def step(self, state, fields, steps):
        U, V = state
        for _ in range(int(steps)):
            U, V = gray_scott_step(U, V, fields["F"], fields["K"], self.Du, self.Dv, self.dt,
                                   self.decay, self.stencil, self.clamp)
        return U, V

    def activity(self, state):
        return state[1]

    def scar(self, state, target, fields, similarity):
        F, K = self.rule.update(state[1], target, fields["F"], fields["K"], similarity)
        return {"F": F, "K": K}

    def prepare(self, fields, target):
        if not hasattr(self.rule, "prepare"):
            return fields
        F, K = self.rule.prepare(fields["F"], fields["K"], target)
        return {"F": F, "K": K}

    def simulation(self, state, fields):
        return GrayScottSimulation(self, state, fields)


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


def _damage_mask(damage, S, C, H, W, device) -> torch.Tensor:
    mask = torch.as_tensor(damage, dtype=torch.bool, device=device)
    if mask.dim() == 2:
        mask = mask.expand(C, H, W)
    if mask.dim() == 3:
        mask = mask.unsqueeze(0).expand(S, C, H, W)
    if mask.shape != (S, C, H, W):
        raise ValueError(f"damage mask has shape {tuple(mask.shape)}; expected (H, W), "
                         f"(C, H, W) or (S, C, H, W) with {(S, C, H, W)}")
    return mask.reshape(S * C, H, W)


def _seed_cues(F, cues) -> torch.Tensor:
    cues = torch.as_tensor(cues)
    if cues.dim() == 3:
        S = F.shape[0] if isinstance(F, torch.Tensor) and F.dim() == 3 else 1
        cues = cues.unsqueeze(0).expand(S, *cues.shape)
    if cues.dim() != 4:
        raise ValueError(f"cues have shape {tuple(cues.shape)}; expected (S, C, H, W)")
    return cues


class Study:
    """A Protocol bound to a device: the study's store and recall with its constants, on
    the engine (memory.py) with the protocol's medium (GrayScottMedium.of).

    A notebook's entry point: `Study(Protocol(), "cpu")`, then `store`, `cues`,
    `recall`, `default_fields`.

    initial: a saved state (common.state.load_state: "U", "V" (S, H, W), "F", "K" (H, W)
    or (S, H, W)) that the study starts from (--init-from): every training that would
    start from the unscarred medium (store without F, K) starts instead from the saved
    medium: its first pattern from the saved U, V in place of the training start, and,
    when it scars, on the saved F, K in place of the unscarred fields (a control, which
    does not scar, runs on the unscarred fields from the saved U, V). Recalls, and
    trainings that continue fields the run made itself, are unchanged. A training starts
    from the unscarred medium when it gets no F, K, or gets its own unscarred fields as
    F, K and as `background` (the same tensors: per-member fields, experiments/sweep.py).

    saved_fields=False: the saved U, V start those trainings on the fields they would
    have had (the unscarred medium of the protocol, its rule or the given background);
    the saved F, K are not used. For studies whose conditions change the medium itself
    (its regime, rule or float type), where the saved F, K would override what each
    condition measures. The saved state is cast to the protocol's dtype either way.
    """

    def __init__(self, protocol: Protocol, device=None, initial: dict | None = None,
                 saved_fields: bool = True):
        self.protocol = protocol
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = protocol.torch_dtype()
        check_protocol(protocol)
        self.rule = storage_rule(protocol)
        self.medium = GrayScottMedium.of(protocol, self.rule)
        self.initial = None
        if initial is not None:
            from common.state import check_fits

            check_fits(initial, grid=protocol.grid)
            self.initial = {k: torch.as_tensor(initial[k]).to(self.device, self.dtype)
                            for k in ("UVFK" if saved_fields else "UV")}

    def settings(self, progress: str | None = None) -> memory.Settings:
        p = self.protocol
        return memory.Settings(str(self.device), self.dtype, p.train_init_strength,
                               p.train_noise, progress)

    def medium_with(self, rule=None, substrate: dict | None = None) -> GrayScottMedium:
        """This study's medium with another rule and/or other GrayScott arguments."""
        if rule is None and not substrate:
            return self.medium
        return GrayScottMedium.of(self.protocol, rule or self.rule, **(substrate or {}))

    def default_fields(self, S: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, K) of the unscarred medium, (S, H, W): the protocol's (F0, K0), or the
        background of the storage rule when it brings its own (StorageRule.background)."""
        p = self.protocol
        shape = (S, p.grid, p.grid)
        return tuple(torch.as_tensor(x, dtype=self.dtype, device=self.device).expand(shape).clone()
                     for x in self.rule.background(p.f0, p.k0))

    def cues(self, targets, seeds, strength: float, role: str = "cue", first_index: int = 0):
        """Protocol cues (S, C, H, W) from (C, H, W) or (S, C, H, W) targets."""
        return make_cues(torch.as_tensor(targets).to(self.device, self.dtype), strength,
                         self.protocol.cue_noise, seeds, role, first_index)

    def store(self, targets, seeds, steps: int, scar: bool = True, rule=None,
              substrate: dict | None = None, F=None, K=None, progress: str | None = None,
              from_saved: bool = True, **kw) -> dict:
        """Store targets (P, H, W) or (S, P, H, W) in turn (memory.store) with this
        protocol's rule (or `rule`, whose `prepare` step runs before each pattern),
        medium and training start; scar=False: the same training without scarring (the
        control). substrate: extra GrayScott arguments (e.g. clamp=False); F, K: starting
        fields (default: the rule's unscarred medium, or the study's saved state: class
        docstring); from_saved=False: start from the unscarred medium even so (a phase
        that is an experiment of its own); kw: first_index, snapshots, record_every,
        frame_members, initial (memory.store). Returns memory.store's dict, with "F",
        "K" and snapshots as {k: (F, K)}."""
        medium = self.medium_with(rule, substrate)
        fields = None if F is None else {"F": F, "K": K}
        own = kw.get("background") or {}
        unscarred = F is None or (F is own.get("F") and K is own.get("K"))
        if self.initial is not None and from_saved and unscarred and "initial" not in kw:
            saved = self.initial
            if saved["U"].shape[0] != len(seeds):
                raise ValueError(f"--init-from: the saved state holds {saved['U'].shape[0]} "
                                 f"batch members but this training has {len(seeds)} (one "
                                 f"per seed)")
            kw["initial"] = (saved["U"], saved["V"])
            if scar and "F" in saved:
                fields = {"F": saved["F"], "K": saved["K"]}
        out = memory.store(medium, torch.as_tensor(targets).to(self.device, self.dtype),
                           seeds, steps, self.settings(progress), fields=fields, learn=scar,
                           protocol=self.protocol, **kw)
        out["snapshots"] = {k: (f["F"], f["K"]) for k, f in out["snapshots"].items()}
        return out

    def recall(self, F, K, cues, patterns, steps: int, substrate: dict | None = None,
               rule=None, metric_names=METRIC_NAMES, damage=None, damage_step=None,
               return_fields: bool = False, record_every: int | None = None,
               curve_patterns=None, frame_members=None, progress: str | None = None,
               trackers=()) -> dict:
        """Recall every cue on the given F/K and compare the result with every pattern.

        F, K: (S, H, W) per-seed fields (the leading dim may stack several arms, e.g.
        scarred and default fields), (H, W) or a scalar. cues: (S, C, H, W) starting V
        (U = 1) or (C, H, W) shared; patterns: (P, H, W) or (S, P, H, W). All S x C
        recalls run as one batch (memory.recall) on this protocol's medium (substrate:
        extra GrayScott arguments; rule: another rule's medium and inhibition).

        damage: bool mask (H, W), (C, H, W) or (S, C, H, W): at damage_step the masked
        cells are reset to the medium at rest (a lesion). record_every: record each
        recall's cosine to pattern curve_patterns[c] (default c); frame_members: (s, c)
        recalls whose V is filmed (~100 frames); trackers: more memory trackers over the
        S x C members.

        Returns {"initial", "final": {metric: (S, C, P)} at step 0 and at the end,
        "before_damage", "after_damage" (with damage), "V": final (S, C, H, W) on the CPU
        (return_fields), "curves": {"steps", "similarity": (T, S, C)} (record_every),
        "frames": (N, M, H, W) (frame_members)} and the trackers' results.
        """
        unknown = [m for m in metric_names if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
        cues = _seed_cues(F, cues)
        S, C, H, W = cues.shape
        pats = per_seed(torch.as_tensor(patterns), S, "patterns", 3).to(self.device, self.dtype)
        if pats.shape[-2:] != (H, W):
            raise ValueError(f"patterns are {tuple(pats.shape[-2:])} but cues are ({H}, {W})")
        settings = self.settings(progress)
        fields = {name: memory.as_fields({name: x}, S, H, W, settings)[name]
                  .repeat_interleave(C, dim=0) for name, x in (("F", F), ("K", K))}
        trackers = list(trackers)
        if record_every:
            which = list(range(C)) if curve_patterns is None else list(curve_patterns)
            curves = memory.Curves(pats[:, which].reshape(S * C, H, W), record_every)
            trackers.append(curves)
        if frame_members:
            trackers.append(memory.Frames([s * C + c for s, c in frame_members], steps))
        if damage is not None:
            if damage_step is None:
                raise ValueError(f"damage_step={damage_step} must be in [0, {steps}]")
            trackers.append(memory.Damage(_damage_mask(damage, S, C, H, W, self.device),
                                          damage_step))
        res = memory.recall(self.medium_with(rule, substrate), fields,
                            cues.to(self.device, self.dtype).reshape(S * C, H, W), steps,
                            settings, trackers)
        view = lambda V: V.view(S, C, H, W)   # noqa: E731
        out = {"initial": _similarity_matrix(view(res["start"]), pats, metric_names),
               "final": _similarity_matrix(view(res["V"]), pats, metric_names)}
        if damage is not None:
            out["before_damage"] = _similarity_matrix(view(res["before_damage"]), pats,
                                                      metric_names)
            out["after_damage"] = _similarity_matrix(view(res["after_damage"]), pats,
                                                     metric_names)
        if return_fields:
            out["V"] = view(res["V"]).cpu()
        if record_every:
            c = res["similarity"]
            out["curves"] = {"steps": res["steps"], "similarity": c.view(-1, S, C)}
        if frame_members:
            out["frames"] = res["frames"]
        extra = {k: v for k, v in res.items() if k not in ("state", "V", "start", "steps",
                                                           "similarity", "frames",
                                                           "before_damage", "after_damage")}
        out.update(extra)
        return out
