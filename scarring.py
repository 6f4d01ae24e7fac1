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
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import torch

from metrics import METRIC_NAMES, METRICS
from patterns import make_cue
from protocol import Protocol, noise_seeds
from substrate import GrayScott

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
        switches regimes (models/rules.py) brings its own."""
        return F0, K0

    def recall_inhibition(self):
        """A medium option that every recall on this rule's media (scarred and control)
        runs with: an object with `epilogue(V, F, K, F_base) -> (F, K, None)`, applied
        every step (e.g. models.rules.GlobalInhibition); None for a plain medium."""
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
    import models.rules  # noqa: F401  (registers the rules beyond the published one)

    if name not in RULES:
        raise ValueError(f"--rule {name!r}: must be one of {', '.join(sorted(RULES))}")
    return RULES[name]


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
        """One scar update for a batch (see apply_scar). Pure: returns new (F, K)."""
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


def apply_scar(V, target, F, K, similarity, rule: ScarRule = ScarRule(), F0: float | None = None,
               K0: float | None = None):
    """One match-map scar update for a batch. Pure: returns new (F, K).

    V: (B, H, W); target: (H, W) or (B, H, W); F, K: (B, H, W) per member (or (H, W)
    when B == 1); similarity: (B,) current similarity of each member to its target.
    Members whose similarity is not above rule.gate are left unchanged (the gate).
    F0, K0 (default: the rule's) are what scar_decay relaxes toward.
    """
    if F0 is not None or K0 is not None:
        rule = replace(rule, F0=rule.F0 if F0 is None else F0, K0=rule.K0 if K0 is None else K0)
    return rule.update(V, target, F, K, similarity)


def scar_strength(F: torch.Tensor, K: torch.Tensor, F0=F0, K0=K0):
    """Total scar: sum |F - F0| + sum |K - K0| over the grid, per member (shape (B,)).
    F0, K0: the unscarred medium, numbers or fields."""
    if F.dim() == 2:
        F, K = F.unsqueeze(0), K.unsqueeze(0)
    return ((F - F0).abs() + (K - K0).abs()).flatten(1).sum(1)


def _scar_epilogue(V, F, K, target, members, rule: StorageRule, spatial_dims: int):
    """The hook of a training run (GrayScott.run): the similarity of the new V to each
    member's target, then one gated update by the rule. members: (B,) bool or None
    (all). Returns (F, K, similarity); pure, so the stepper fuses it into its kernel."""
    from metrics import cosine_similarity

    similarity = cosine_similarity(V, target, spatial_dims)
    gate_input = similarity
    if members is not None:  # a member outside the mask never passes the gate
        gate_input = torch.where(members, similarity, torch.full_like(similarity, -1.0))
    F, K = rule.update(V, target, F, K, gate_input)
    return F, K, similarity


def evolve(gs, target, steps: int, rule: StorageRule | None = None, scar_members=None,
           record_every: int = 10, frame_every: int | None = None, frame_members=(0,),
           progress: str | None = None, inhibition=None) -> dict:
    """Run `steps` steps of gs, optionally scarring, recording similarity on the device.

    target: (H, W) or (B, H, W) ((D, H, W) or (B, D, H, W) for a 3D medium).
    rule=None: no scarring (a recall or a control run).
    inhibition: a recall's medium option (StorageRule.recall_inhibition), its hook every
    step; gs.F is left as it was (the inhibited feed is not kept).
    scar_members: (B,) bool tensor of the members that may be scarred (default all).
    With a rule, gs.F and gs.K become per-member (B, *grid) tensors (the caller's tensors
    are never modified). Similarity to the target is recorded at step 0 and every
    `record_every` steps (and at the end), and read back once at the end.
    Returns {"steps": [..], "similarity": (T, B) tensor, "frames": (N, M, *grid) or None}.

    One GrayScott.run: with a rule, the similarity and the scar update are its per-step
    hook (_scar_epilogue, fused into the step's kernel on the compiled path); without
    one, plain steps, and the similarity is computed only at the recorded steps.
    """
    from common.cli import progress as progress_bar
    from metrics import cosine_similarity

    spatial_dims = gs.V.dim() - 1  # 2 for (B, H, W), 3 for a 3D medium
    hook, hook_args = None, ()
    if rule is not None:
        if scar_members is not None:
            scar_members = torch.as_tensor(scar_members, device=gs.device, dtype=torch.bool)
        hook, hook_args = _scar_epilogue, (target, scar_members, rule, spatial_dims)
    F_base = gs.F
    if inhibition is not None:
        if rule is not None:
            raise ValueError("evolve: a recall's inhibition cannot run while scarring")
        hook, hook_args = inhibition.epilogue, (F_base.expand_as(gs.V).contiguous(),)
    members = list(frame_members)
    record_steps = [0]
    records = [cosine_similarity(gs.V, target, spatial_dims)]
    frames = [gs.V[members].clone()] if frame_every else []
    bar = progress_bar(steps, progress)

    def on_record(step, U, V, similarity):
        if step % record_every == 0 or step == steps:
            record_steps.append(step)
            records.append(similarity if similarity is not None
                           else cosine_similarity(V, target, spatial_dims))
        if frame_every and step % frame_every == 0:
            frames.append(V[members].clone())
        bar.update(step - bar.n)

    # on_record is called every `every` steps: each record, frame and progress tick
    every = math.gcd(record_every, frame_every or record_every, 50 if progress else 0)
    gs.run(int(steps), hook=hook, hook_args=hook_args, record_every=every,
           on_record=on_record)
    if inhibition is not None:
        gs.F = F_base
    bar.close()
    return {"steps": record_steps, "similarity": torch.stack(records).cpu(),
            "frames": torch.stack(frames).cpu() if frames else None}

# ---- storing and recalling patterns: the path every study shares ------------------------

TRAIN_STRENGTH = REFERENCE.train_init_strength   # training start: clamp(0.2 * target + noise)
TRAIN_NOISE = REFERENCE.train_noise              # its noise: N(0, 0.1^2)
CUE_NOISE = REFERENCE.cue_noise                  # every cue's noise: N(0, 0.05^2)


def per_seed(x, S: int, name: str, dims: int) -> torch.Tensor:
    """x (array-like) with `dims` trailing dims, shared (no seed dim) or per seed: returns
    (S, ...), a view where x is shared."""
    x = torch.as_tensor(x)
    if x.dim() == dims:
        return x.unsqueeze(0).expand(S, *x.shape)
    if x.dim() == dims + 1 and x.shape[0] == S:
        return x
    raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {dims} dims shared by "
                     f"the seeds or {dims + 1} dims with {S} seeds first")


def _fields(value, S, H, W, device, dtype, name):
    """Scalar, (H, W) or (S, H, W) F/K as an (S, H, W) tensor (a copy)."""
    if isinstance(value, (int, float)):
        return torch.full((S, H, W), float(value), device=device, dtype=dtype)
    t = torch.as_tensor(value, device=device, dtype=dtype)
    if t.shape == (H, W):
        t = t.expand(S, H, W)
    if t.shape != (S, H, W):
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected a scalar, ({H}, {W}) "
                         f"or ({S}, {H}, {W})")
    return t.clone()


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


def store_patterns(targets: torch.Tensor, seeds, steps: int = 500,
                   rule: StorageRule | None = ScarRule(), F=F0, K=K0,
                   substrate: dict | None = None, device=None,
                   dtype: torch.dtype = torch.float32, snapshots=(),
                   train_strength: float = TRAIN_STRENGTH, train_noise: float = TRAIN_NOISE,
                   baseline=(F0, K0), first_index: int = 0, record_every: int | None = None,
                   frame_members=None, progress: str | None = None, start=None) -> dict:
    """Scar targets into per-seed F/K fields one after the other (the protocol's training).

    For each pattern p in order: reset U = 1, V = clamp(train_strength * target_p +
    N(0, train_noise^2), 0, 1) (the protocol's training start, noise role "train", index
    first_index + p), then run `steps` steps of evolve with `rule` (None: no scarring, a
    control); the scars accumulate in F and K across patterns.

    targets: (P, H, W) shared by all seeds, or (S, P, H, W) per seed.
    seeds: S run seeds (batch members). F, K: the starting fields (scalar, (H, W) or
    (S, H, W)). substrate: GrayScott keyword arguments (Protocol.substrate()). snapshots:
    pattern counts k after which a copy of (F, K) is kept. baseline: (F0, K0) from which
    the scar strength is measured. record_every: sample the similarity curve this often
    (default: only the end); frame_members: seed indices whose V is filmed (~100 frames).
    start: (U, V), each (S, H, W): the first pattern's training starts from this state
    instead of the training start (a saved state continued; common/state.py).

    Returns {"F", "K": (S, H, W) final fields; "U", "V": (S, H, W) final state;
    "train_similarity": (P, S) cosine at the end of each pattern's training;
    "scar_strength": (P, S) total scar after each pattern; "snapshots": {k: (F, K)};
    "curves": [{"steps", "similarity": (T, S)}] per pattern; "frames": [(N, M, H, W) or
    None] per pattern}.
    """
    seeds = list(seeds)
    S = len(seeds)
    if S < 1:
        raise ValueError("store_patterns needs at least one seed")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer")
    device = torch.device(device) if device is not None else torch.device("cpu")
    t = per_seed(targets, S, "targets", 3).to(device=device, dtype=dtype)
    P, H, W = t.shape[1:]
    snapshots = set(int(k) for k in snapshots)
    bad = [k for k in snapshots if not 1 <= k <= P]
    if bad:
        raise ValueError(f"snapshots {sorted(bad)} outside 1..{P} stored patterns")
    gs = GrayScott(H, W, batch=S, device=device, dtype=dtype, **(substrate or {}))
    gs.F = _fields(F, S, H, W, device, dtype, "F")
    gs.K = _fields(K, S, H, W, device, dtype, "K")
    out = {"train_similarity": [], "scar_strength": [], "snapshots": {}, "curves": [],
           "frames": []}
    for p in range(P):
        if p == 0 and start is not None:
            gs.reset(U=start[0], V=start[1])
        else:
            gs.reset(V=make_cue(t[:, p], train_strength, train_noise,
                                noise_seeds(seeds, "train", first_index + p)))
        run = evolve(gs, t[:, p], int(steps), rule=rule,
                     record_every=int(record_every or steps),
                     frame_every=max(1, steps // 100) if frame_members else None,
                     frame_members=frame_members or (0,),
                     progress=f"{progress} {p + 1}/{P}" if progress and P > 1 else progress)
        out["train_similarity"].append(run["similarity"][-1])
        out["scar_strength"].append(scar_strength(gs.F, gs.K, *baseline).cpu())
        out["curves"].append({"steps": run["steps"], "similarity": run["similarity"]})
        out["frames"].append(run["frames"])
        if p + 1 in snapshots:
            out["snapshots"][p + 1] = (gs.F.clone(), gs.K.clone())
    out["train_similarity"] = torch.stack(out["train_similarity"])
    out["scar_strength"] = torch.stack(out["scar_strength"])
    out.update(F=gs.F, K=gs.K, U=gs.U, V=gs.V)
    return out


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


def recall_matrix(F, K, cues: torch.Tensor, patterns: torch.Tensor, steps: int = 300,
                  substrate: dict | None = None, metric_names=METRIC_NAMES, device=None,
                  dtype: torch.dtype = torch.float32, damage: torch.Tensor | None = None,
                  damage_step: int | None = None, return_fields: bool = False,
                  record_every: int | None = None, curve_patterns=None,
                  frame_members=None, progress: str | None = None,
                  inhibition=None) -> dict:
    """Recall every cue on the given F/K and compare the result with every pattern.

    F, K: (S, H, W) per-seed fields (e.g. store_patterns' output; the leading dim may
    stack several arms, e.g. scarred and default fields), (H, W) or a scalar (a control
    without scars). cues: (S, C, H, W) starting V fields (U = 1), e.g. from make_cues, or
    (C, H, W) shared by the seeds. patterns: (P, H, W) or (S, P, H, W). All S x C recalls
    run as one GrayScott batch for `steps` steps (substrate: GrayScott keyword arguments).

    damage: optional bool mask, (H, W), (C, H, W) or (S, C, H, W); at step `damage_step`
    the masked cells are reset to U = 1, V = 0 and the run goes on (a lesion test).
    record_every: also record each recall's cosine similarity to pattern
    curve_patterns[c] (default: pattern c) every this many steps; frame_members: (s, c)
    recalls whose V is filmed (~100 frames). inhibition: a medium option run every step
    (StorageRule.recall_inhibition).

    Returns {"initial": {metric: (S, C, P)} similarity of each cue to each pattern at
    step 0, "final": {metric: (S, C, P)} after `steps` steps, "before_damage" and
    "after_damage" (with damage), "V": the final (S, C, H, W) V on the CPU
    (return_fields), "curves": {"steps", "similarity": (T, S, C)} (record_every),
    "frames": (N, M, H, W) (frame_members)}. Metrics are names in metrics.METRICS.
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps={steps} must be a non-negative integer")
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    gs, pats = _recall_medium(F, K, cues, patterns, substrate, device, dtype)
    S, C = pats.shape[0], gs.batch // pats.shape[0]
    H, W = pats.shape[-2:]
    out = {"initial": _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)}
    if record_every:   # each recall's own curve pattern, as a per-member target
        which = list(range(C)) if curve_patterns is None else list(curve_patterns)
        curve_target = pats[:, which].reshape(S * C, H, W)
    else:
        curve_target = torch.zeros(H, W, device=device, dtype=dtype)
    members = [s * C + c for s, c in frame_members] if frame_members else None
    segments = [int(steps)]
    if damage is not None:
        if damage_step is None or not 0 <= damage_step <= steps:
            raise ValueError(f"damage_step={damage_step} must be in [0, {steps}]")
        flat_mask = _damage_mask(damage, S, C, H, W, device)
        segments = [int(damage_step), int(steps) - int(damage_step)]
    runs = []
    for i, n in enumerate(segments):
        if n:
            runs.append(evolve(gs, curve_target, n, rule=None,
                               record_every=int(record_every or n),
                               frame_every=max(1, steps // 100) if members else None,
                               frame_members=members or (0,), progress=progress,
                               inhibition=inhibition))
        if i == 0 and damage is not None:
            out["before_damage"] = _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)
            gs.V = torch.where(flat_mask, torch.zeros_like(gs.V), gs.V)
            gs.U = torch.where(flat_mask, torch.ones_like(gs.U), gs.U)
            out["after_damage"] = _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)
    out["final"] = _similarity_matrix(gs.V.view(S, C, H, W), pats, metric_names)
    if return_fields:
        out["V"] = gs.V.view(S, C, H, W).cpu()
    if record_every and runs:
        out["curves"] = _joined_curves(runs, S, C)
    if members:
        out["frames"] = torch.cat([r["frames"] for r in runs if r["frames"] is not None])
    return out


def _recall_medium(F, K, cues, patterns, substrate, device, dtype) -> tuple:
    """The (S x C)-member GrayScott batch of recall_matrix, started from the cues, and
    the patterns as (S, P, H, W) on the device."""
    cues = torch.as_tensor(cues)
    if cues.dim() == 3:
        S = F.shape[0] if isinstance(F, torch.Tensor) and F.dim() == 3 else 1
        cues = cues.unsqueeze(0).expand(S, *cues.shape)
    if cues.dim() != 4:
        raise ValueError(f"cues have shape {tuple(cues.shape)}; expected (S, C, H, W)")
    S, C, H, W = cues.shape
    pats = per_seed(patterns, S, "patterns", 3).to(device=device, dtype=dtype)
    if pats.shape[-2:] != (H, W):
        raise ValueError(f"patterns are {tuple(pats.shape[-2:])} but cues are ({H}, {W})")
    gs = GrayScott(H, W, batch=S * C, device=device, dtype=dtype, **(substrate or {}))
    gs.F = _fields(F, S, H, W, device, dtype, "F").repeat_interleave(C, dim=0)
    gs.K = _fields(K, S, H, W, device, dtype, "K").repeat_interleave(C, dim=0)
    gs.reset(V=cues.to(device=device, dtype=dtype).reshape(S * C, H, W))
    return gs, pats


def _joined_curves(runs, S: int, C: int) -> dict:
    """The similarity curves of consecutive evolve runs as one curve over the recall."""
    offset, steps_seen, sims = 0, [], []
    for k, r in enumerate(runs):
        skip = 1 if k else 0    # a later segment's step 0 repeats the previous end
        steps_seen += [offset + t for t in r["steps"][skip:]]
        sims.append(r["similarity"][skip:])
        offset += r["steps"][-1]
    return {"steps": steps_seen, "similarity": torch.cat(sims).view(-1, S, C)}


class Study:
    """A Protocol bound to a device: the study's store and recall with its constants.

    Every study stores and recalls through this (or through store_patterns and
    recall_matrix directly, with explicit settings), so that the substrate, the rule,
    the training start and the cue noise are written once, in the Protocol.
    """

    def __init__(self, protocol: Protocol, device=None):
        self.protocol = protocol
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = protocol.torch_dtype()
        self.rule = protocol.storage_rule()

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
              substrate: dict | None = None, F=None, K=None, **kw) -> dict:
        """store_patterns with this protocol's rule (or `rule`), medium and training start;
        scar=False: the same training without scarring (the control). substrate: extra
        GrayScott keyword arguments (e.g. clamp=False for an ablation). F, K: the fields
        to scar (default: the unscarred medium); the scar strength is still measured from
        the unscarred medium."""
        p = self.protocol
        F0, K0 = (rule or self.rule).background(p.f0, p.k0)
        F, K = (F0 if F is None else F), (K0 if K is None else K)
        return store_patterns(torch.as_tensor(targets).to(self.device, self.dtype), seeds, steps,
                              rule=(rule or self.rule) if scar else None, F=F, K=K,
                              substrate={**p.substrate(), **(substrate or {})},
                              device=self.device, dtype=self.dtype,
                              train_strength=p.train_init_strength, train_noise=p.train_noise,
                              baseline=(F0, K0) if not isinstance(F0, torch.Tensor) else (p.f0, p.k0),
                              **kw)

    def recall(self, F, K, cues, patterns, steps: int, substrate: dict | None = None,
               **kw) -> dict:
        """recall_matrix on this protocol's medium (substrate: extra GrayScott arguments)."""
        kw.setdefault("inhibition", self.rule.recall_inhibition())
        return recall_matrix(F, K, cues, torch.as_tensor(patterns).to(self.device, self.dtype),
                             steps, substrate={**self.protocol.substrate(), **(substrate or {})},
                             device=self.device, dtype=self.dtype, **kw)
