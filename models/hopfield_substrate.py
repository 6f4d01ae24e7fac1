"""The Hopfield substrate of the public study's experiment 2A: a continuous Hopfield network
with one unit per cell, every unit coupled to every other (no distance limit).

    x <- x + dt * (-x + tanh(W x / T)),   x clamped to [-1, 1]
    W = scale * sum_mu p_mu p_mu^T, zero diagonal,
    p_mu = tanh(zscore(pattern_mu)) / ||tanh(zscore(pattern_mu))||

Storing a pattern (the Hebbian outer product) is this medium's scar; W is kept in its
factored form, the stored unit vectors p (B, P, N), so that W x costs O(P N) rather than
the N^2 memory of the dense matrix (the same W, the diagonal removed exactly). A cue
replaces the state (2A's injection), clamped to [-1, 1]; recall steps until the state
changes by less than `tolerance` (L2 over the grid) or `max_steps` pass.

scale="published" is 2A's 1/N: since each p has unit norm, W's largest eigenvalue is then
~1/N, the loop gain 1/(N T) is far below the tanh's critical gain 1, and the state decays
towards 0 whatever is stored; recall returns the decayed cue. A number sets the scale
itself: scale 1 with T = 0.5 gives a loop gain of 2 along each stored pattern, the
regime in which a Hopfield network retrieves.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from memory import Medium, register_medium


def hebbian_vector(target: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, N): 2A's stored vector, tanh of the z-scored pattern, unit norm."""
    flat = target.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-10)
    t = torch.tanh(z)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


@register_medium
@dataclass(frozen=True)
class HopfieldSubstrate(Medium):
    """2A's continuous Hopfield substrate (module docstring)."""
    name: ClassVar[str] = "hopfield_substrate"
    temperature: float = 0.5
    dt: float = 0.1
    scale: float | str = "published"
    tolerance: float = 1e-3
    max_steps: int = 100

    def __post_init__(self):
        if self.scale != "published" and not (isinstance(self.scale, (int, float))
                                              and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"hopfield_substrate scale={self.scale!r}: 'published' or a "
                             f"finite number > 0")
        for key in ("temperature", "dt"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"hopfield_substrate {key}={getattr(self, key)}: must be > 0")

    def weight_scale(self, cells: int) -> float:
        return 1.0 / cells if self.scale == "published" else float(self.scale)

    def fields(self, batch: int, height: int, width: int, device=None,
               dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Nothing stored: p (B, 0, N)."""
        return {"p": torch.zeros(batch, 0, height * width, device=device, dtype=dtype)}

    def initial_state(self, V0: torch.Tensor, fields=None) -> tuple[torch.Tensor]:
        return (V0.clamp(-1.0, 1.0),)

    def field_input(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """W x for (B, H, W) x and (B, P, N) p, diagonal excluded; p may also be (S, P, N)
        with B = S x C (C states per stored set, without copying p)."""
        flat = x.reshape(p.shape[0], -1, x.shape[-2] * x.shape[-1])      # (S, C, N)
        scale = self.weight_scale(flat.shape[-1])
        overlap = torch.einsum("spn,scn->scp", p, flat)
        Wx = torch.einsum("spn,scp->scn", p, overlap) - (p * p).sum(1, keepdim=True) * flat
        return (scale * Wx).reshape(x.shape)

    def step(self, state, fields, steps: int = 1) -> tuple[torch.Tensor]:
        (x,) = state
        for _ in range(int(steps)):
            x = x + self.dt * (-x + torch.tanh(self.field_input(x, fields["p"]) / self.temperature))
            x = x.clamp(-1.0, 1.0)
        return (x,)

    def settle(self, state, fields) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        """Step every member until its L2 change per step is below `tolerance` (then it
        stays put) or max_steps pass. Returns the state and the steps each member took."""
        (x,) = state
        taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        moving = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(int(self.max_steps)):
            (new,) = self.step((x,), fields, 1)
            change = (new - x).flatten(1).norm(dim=1)
            x = torch.where(moving.view(-1, 1, 1), new, x)
            taken += moving.long()
            moving &= change >= self.tolerance
            if not moving.any():
                break
        return (x,), taken

    def activity(self, state) -> torch.Tensor:
        """The state's positive part (on = +1): what a cosine against a [0, 1] image reads."""
        return state[0].clamp(min=0.0)

    def scar(self, state, target, fields, similarity=None) -> dict[str, torch.Tensor]:
        """Store `target` (B, H, W): append its Hebbian vector to p."""
        return {**fields, "p": torch.cat([fields["p"], hebbian_vector(target).unsqueeze(1)], 1)}

    def background(self, protocol=None) -> dict:
        """The unscarred medium stores nothing."""
        return {"p": 0.0}

    def as_dict(self) -> dict:
        return {"medium": self.name, **asdict(self)}
