"""The match-map scar rule: nudge F up and K down where the medium shows the target.

Reference rule (PROTOCOL.md "Scarring rule"), applied after a training step only when
the member's current similarity to its target exceeds the gate:

    match = (V > 0.3) & (target > 0.3)
    F[match] += 0.003 ; K[match] -= 0.0015
    F, K = clamp(F, 0.01, 0.08), clamp(K, 0.03, 0.08)

With the reference constants the scar saturates within a few dozen gated steps: matched
cells end at the clamps (F = 0.08, K = 0.03), so the scar map is in effect binary.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, asdict

import torch

from substrate import F0, K0


@dataclass(frozen=True)
class ScarRule:
    strength: float = 0.003      # F increment per gated step, on matched cells
    k_ratio: float = 0.5         # K decrement = k_ratio * strength (0 gives an F-only scar)
    f_ratio: float = 1.0         # F increment = f_ratio * strength (0 gives a K-only scar)
    match_threshold: float = 0.3  # a cell matches when V and target both exceed this
    gate: float = 0.5            # scar only while similarity > gate
    F_min: float = 0.01
    F_max: float = 0.08
    K_min: float = 0.03
    K_max: float = 0.08
    scar_decay: float = 0.0      # per application, relax F, K toward (F0, K0) by this fraction

    def __post_init__(self):
        if not (self.F_min <= self.F_max and self.K_min <= self.K_max):
            raise ValueError(f"clamp bounds reversed: F [{self.F_min}, {self.F_max}], "
                             f"K [{self.K_min}, {self.K_max}]")
        if not 0.0 <= self.scar_decay <= 1.0:
            raise ValueError(f"scar_decay={self.scar_decay} must be in [0, 1]")
        if self.strength < 0:
            raise ValueError(f"scar strength={self.strength} must be >= 0")

    def as_dict(self) -> dict:
        return asdict(self)


def match_map(V: torch.Tensor, target: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Boolean (B, H, W): cells where both the medium and the target exceed threshold."""
    return (V > threshold) & (target > threshold)


def apply_scar(V, target, F, K, similarity, rule: ScarRule = ScarRule(), F0: float = F0,
               K0: float = K0):
    """One scar update for a batch. Pure: returns new (F, K).

    V: (B, H, W); target: (H, W) or (B, H, W); F, K: (B, H, W) per member (or (H, W)
    when B == 1); similarity: (B,) current similarity of each member to its target.
    Members whose similarity is not above rule.gate are left unchanged (the gate).
    """
    gated = (similarity > rule.gate).view(-1, *([1] * (V.dim() - 1)))
    match = (match_map(V, target, rule.match_threshold) & gated).to(F.dtype)
    if F.dim() < match.dim() and match.shape[0] != 1:
        raise ValueError(f"F has shape {tuple(F.shape)} shared by the batch, but scars are "
                         f"per member: give F, K of shape {tuple(match.shape)}")
    F_new = F + (rule.f_ratio * rule.strength) * match
    K_new = K - (rule.k_ratio * rule.strength) * match
    if rule.scar_decay > 0:
        relax = rule.scar_decay * gated.to(F.dtype)
        F_new = F_new - relax * (F_new - F0)
        K_new = K_new - relax * (K_new - K0)
    return F_new.clamp(rule.F_min, rule.F_max), K_new.clamp(rule.K_min, rule.K_max)


def scar_strength(F: torch.Tensor, K: torch.Tensor, F0: float = F0, K0: float = K0):
    """Total scar: sum |F - F0| + sum |K - K0| over the grid, per member (shape (B,))."""
    if F.dim() == 2:
        F, K = F.unsqueeze(0), K.unsqueeze(0)
    return ((F - F0).abs() + (K - K0).abs()).flatten(1).sum(1)


def _scar_epilogue(V, F, K, target, members, rule: ScarRule, spatial_dims: int):
    """One training step's epilogue (GrayScott.step_with): the similarity of the new V
    to each member's target, then one gated scar update. members: (B,) bool or None
    (all). Returns (F, K, similarity); pure."""
    from metrics import cosine_similarity

    similarity = cosine_similarity(V, target, spatial_dims)
    gate_input = similarity
    if members is not None:  # a member outside the mask never passes the gate
        gate_input = torch.where(members, similarity, torch.full_like(similarity, -1.0))
    F, K = apply_scar(V, target, F, K, gate_input, rule)
    return F, K, similarity


def _rule_is_finite(rule: ScarRule) -> bool:
    return all(math.isfinite(v) for v in rule.as_dict().values())


def evolve(gs, target, steps: int, rule: ScarRule | None = None, scar_members=None,
           record_every: int = 10, frame_every: int | None = None, frame_members=(0,),
           progress: str | None = None) -> dict:
    """Run `steps` steps of gs, optionally scarring, recording similarity on the device.

    target: (H, W) or (B, H, W) ((D, H, W) or (B, D, H, W) for a 3D medium).
    rule=None: no scarring (a recall or a control run).
    scar_members: (B,) bool tensor of the members that may be scarred (default all).
    With a rule, gs.F and gs.K become per-member (B, *grid) copies (the caller's tensors
    are never modified). Similarity to the target is recorded at step 0 and every
    `record_every` steps (and at the end), and read back once at the end.
    Returns {"steps": [..], "similarity": (T, B) tensor, "frames": (N, M, *grid) or None}.

    With a rule, the similarity and the scar update run as an epilogue of each step
    (GrayScott.step_with): on the compiled path they are fused into the step's kernel.
    Without one, plain steps run and the similarity is computed (on the device) only at
    the recorded steps. Nothing inside the loop syncs with the host. Both paths give the
    same numbers (to float rounding).
    """
    from metrics import cosine_similarity
    from tqdm import tqdm

    B = gs.batch
    if scar_members is not None:
        scar_members = torch.as_tensor(scar_members, device=gs.device, dtype=torch.bool)
    spatial_dims = gs.V.dim() - 1  # 2 for (B, H, W), 3 for a 3D medium
    if rule is not None:
        gs.F = gs.F.expand(B, *gs.F.shape[-spatial_dims:]).clone()
        gs.K = gs.K.expand(B, *gs.K.shape[-spatial_dims:]).clone()
        epilogue = functools.partial(_scar_epilogue, rule=rule, spatial_dims=spatial_dims)
        key, extra = ("scar", rule, spatial_dims), (target, scar_members)
        keeps_finite = _rule_is_finite(rule)    # clamped updates of finite fields
    else:  # recall or control: plain steps (a fused similarity kernel would cost one
        # more compilation per run for a reduction needed only every record_every steps)
        epilogue = key = extra = keeps_finite = None
    fast = gs.use_compiled(steps, key)
    record_steps = [0]
    records = [cosine_similarity(gs.field("V"), target, spatial_dims)]
    members, frames = list(frame_members), []
    if frame_every:
        frames.append(gs.field("V")[members].clone())
    bar = tqdm(total=steps, desc=progress, disable=None if progress else True, leave=False)
    for i in range(1, steps + 1):
        record = i % record_every == 0 or i == steps
        if rule is not None:
            similarity = gs.step_with(epilogue, key, *extra, compiled=fast,
                                      keeps_finite=keeps_finite)
        else:
            gs.step(compiled=fast)
        if record:
            record_steps.append(i)
            records.append(similarity if rule is not None
                           else cosine_similarity(gs.field("V"), target, spatial_dims))
        if frame_every and i % frame_every == 0:
            frames.append(gs.field("V")[members].clone())
        if i % 50 == 0 or i == steps:
            bar.update(i - bar.n)
    bar.close()
    gs.check_finite()
    return {"steps": record_steps, "similarity": torch.stack(records).cpu(),
            "frames": torch.stack(frames).cpu() if frames else None}
