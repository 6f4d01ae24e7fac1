"""A spatially coupled Kuramoto medium: one phase oscillator per cell, coupled to the cells
within `radius` (a disc of lattice offsets, periodic grid).

    d theta_i / dt = omega_i + (1 / E) sum_e J_{i,e} sin(theta_{i+e} - theta_i)
                     [+ teacher * sin(phi_i - theta_i) while training]

E is the number of offsets in the disc (28 at radius 3, the public study's experiment
2A). The per-cell natural frequency omega and the per-edge couplings J (E per cell) are
the medium's fields, the "laws" a scar may change:

  scar="coupling"   Hebbian edges: every training step adds learning_rate * dt *
                    (cos(theta_j - theta_i) - bias) to J_{i,e}: neighbours that oscillate
                    in phase strengthen their bond, neighbours out of phase weaken it (a
                    local rule on the two cells' own states; J stays symmetric). The bias
                    (a BCM-like threshold) keeps the bonds across a pattern's edge negative
                    when the other stored patterns' shared background would otherwise
                    make them positive: with P sparse patterns an edge bond sums
                    -(1 + bias) + (P - 1)(1 - bias), negative for bias > (P - 2) / P.
  scar="frequency"  the match-map rule on omega: a cell whose target is on (> threshold)
                    gains learning_rate * dt of natural frequency per training step.
  scar="none"       nothing is written (the public study's 2A store left no scar).

A cue image c in [0, 1] sets theta = pi * c (on cells in antiphase to off cells; 0.5 is
neutral). `activity` reads each cell's antiphase to its member's mean phase psi (the
phase of the majority, i.e. the background): (1 - cos(theta - psi)) / 2, so a cell that
oscillates against the background is lit and a synchronised medium is dark; the read-out
is the only non-local part and changes nothing. readout="cosine" is 2A's cos(theta).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from memory import Medium, register_medium

SCARS = ("coupling", "frequency", "none")
READOUTS = ("antiphase", "cosine")


def disc_offsets(radius: int) -> list[tuple[int, int]]:
    """Lattice offsets (dy, dx) with 0 < dy^2 + dx^2 <= radius^2 (28 at radius 3)."""
    r = int(radius)
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if 0 < dy * dy + dx * dx <= r * r]


def neighbour_stack(X: torch.Tensor, offsets) -> torch.Tensor:
    """(B, H, W) -> (B, E, H, W): X at cell i + offset e (periodic)."""
    return torch.stack([torch.roll(X, shifts=(-dy, -dx), dims=(-2, -1)) for dy, dx in offsets],
                       dim=1)


def disc_mean(X: torch.Tensor, offsets) -> torch.Tensor:
    """(B, H, W) -> (B, H, W): the mean of X over each cell's offsets (periodic), as one
    circular convolution by FFT (the same sum as neighbour_stack(X).mean(1), faster)."""
    H, W = X.shape[-2:]
    kernel = torch.zeros(H, W, dtype=X.dtype, device=X.device)
    for dy, dx in offsets:
        kernel[(-dy) % H, (-dx) % W] += 1.0 / len(offsets)
    return torch.fft.irfft2(torch.fft.rfft2(X) * torch.fft.rfft2(kernel), s=(H, W))


def coupling_drive(theta: torch.Tensor, J: torch.Tensor, offsets) -> torch.Tensor:
    """(1/E) sum_e J_{i,e} sin(theta_{i+e} - theta_i), as cos_i * sum J sin_j - sin_i *
    sum J cos_j (two neighbour sums instead of E sines). J (B, E, H, W) per edge, or a
    0-dimensional tensor: one coupling for every edge (a convolution)."""
    s, c = torch.sin(theta), torch.cos(theta)
    if J.dim() == 0:
        return J * (c * disc_mean(s, offsets) - s * disc_mean(c, offsets))
    Js = (J * neighbour_stack(s, offsets)).mean(1)
    Jc = (J * neighbour_stack(c, offsets)).mean(1)
    return c * Js - s * Jc


def kernel_applies(theta: torch.Tensor, fields) -> bool:
    """True when the CPU kernel can step theta (B, H, W) on these fields: float32 on the
    CPU, per-edge J (B, E, H, W), omega (B, H, W), and numba on
    (substrate.kernel_available)."""
    from substrate import kernel_available

    J, omega = fields["J"], fields["omega"]
    return (J.dim() == 4 and omega.dim() == 3 and theta.dim() == 3
            and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (theta, J, omega))
            and J.shape[0] == omega.shape[0] == theta.shape[0] and kernel_available())


def _members(X: torch.Tensor):
    """(array, index per member) of a field (B, *rest): one copy when the batch is an
    expand of one member (stride 0: a recall's cues sharing one seed's fields)."""
    B = X.shape[0]
    if B > 1 and X.stride(0) == 0:
        return X[:1].contiguous().numpy(), np.zeros(B, dtype=np.intp)
    return X.contiguous().numpy(), np.arange(B, dtype=np.intp)


def kernel_step(theta: torch.Tensor, fields, medium: "Kuramoto", steps: int,
                target: torch.Tensor | None = None):
    """`steps` steps on the numba kernel: free (returns the new theta; theta is not
    changed), or with target (B, H, W) the teacher's steps each followed by the Hebbian
    coupling scar (returns the new theta and the scarred fields; fields are not changed)."""
    from common.cpu_kernel import use_threads
    from models import kuramoto_kernel

    use_threads(torch.get_num_threads())
    out = theta.detach().clone(memory_format=torch.contiguous_format)
    omega, om = _members(fields["omega"])
    if target is None:
        J, jm = _members(fields["J"])
        pull = np.zeros((1, 1, 1), dtype=np.float32)
    else:                      # every member writes its own couplings
        J_new = fields["J"].clone(memory_format=torch.contiguous_format)
        J, jm = J_new.numpy(), np.arange(theta.shape[0], dtype=np.intp)
        pull = (math.pi * target.clamp(0.0, 1.0)).to(torch.float32).contiguous().numpy()
    offsets = medium.offsets
    dy = np.array([o[0] for o in offsets], dtype=np.intp)
    dx = np.array([o[1] for o in offsets], dtype=np.intp)
    r = int(max(max(abs(a), abs(b)) for a, b in offsets))
    kuramoto_kernel.run(out.numpy(), omega, J, om, jm, dy, dx, r, np.float32(medium.dt),
                        int(steps), target is not None, pull, np.float32(medium.teacher),
                        np.float32(medium.learning_rate * medium.dt), np.float32(medium.bias))
    if target is None:
        return out
    return out, {**fields, "J": J_new}


def mean_phase(theta: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, 1, 1): the phase of each member's order parameter."""
    return torch.atan2(torch.sin(theta).mean((-2, -1), keepdim=True),
                       torch.cos(theta).mean((-2, -1), keepdim=True))


def order_parameter(theta: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B,): |mean e^{i theta}| (1: synchronised)."""
    return torch.hypot(torch.sin(theta).mean((-2, -1)), torch.cos(theta).mean((-2, -1)))


@register_medium
@dataclass(frozen=True)
class Kuramoto(Medium):
    """Phase oscillators with distance-limited coupling (module docstring)."""
    name: ClassVar[str] = "kuramoto"
    radius: int = 3
    coupling: float = 0.0        # J of every edge before any scar
    omega: float = 0.0           # mean natural frequency (0: the co-rotating frame)
    omega_spread: float = 0.0    # natural frequencies uniform in omega +- spread / 2
    dt: float = 0.1
    scar_field: str = "coupling"
    learning_rate: float = 0.1   # per unit time of training
    bias: float = 0.5            # coupling rule: a bond grows while cos(dtheta) > bias
    threshold: float = 0.3       # a target cell is on above this (scar="frequency")
    teacher: float = 2.0         # pull of the target phases while training
    readout: str = "antiphase"

    def __post_init__(self):
        if int(self.radius) != self.radius or not 1 <= self.radius <= 32:
            raise ValueError(f"kuramoto radius={self.radius}: must be an integer in [1, 32]")
        if self.scar_field not in SCARS:
            raise ValueError(f"kuramoto scar_field={self.scar_field!r}: must be one of {SCARS}")
        if self.readout not in READOUTS:
            raise ValueError(f"kuramoto readout={self.readout!r}: must be one of {READOUTS}")
        for key in ("dt", "omega_spread", "learning_rate", "teacher"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0) or (key == "dt" and value == 0):
                raise ValueError(f"kuramoto {key}={value}: must be finite and "
                                 f"{'> 0' if key == 'dt' else '>= 0'}")

    @property
    def offsets(self) -> list[tuple[int, int]]:
        return disc_offsets(self.radius)

    def fields(self, batch: int, height: int, width: int, generator=None,
               device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Unscarred fields: omega (B, H, W) (uniform draws with `generator` when
        omega_spread > 0) and J (B, E, H, W) = coupling (a 0-dimensional J when no
        scar writes it)."""
        kw = {"device": device, "dtype": dtype}
        omega = torch.full((batch, height, width), float(self.omega), **kw)
        if self.omega_spread > 0:
            u = torch.rand((batch, height, width), generator=generator, dtype=dtype)
            omega = omega + (u.to(device) - 0.5) * self.omega_spread
        J = torch.full((batch, len(self.offsets), height, width), float(self.coupling), **kw)
        if self.scar_field != "coupling":     # one coupling for every edge, never scarred
            J = torch.tensor(float(self.coupling), **kw)
        return {"omega": omega, "J": J}

    def initial_state(self, V0: torch.Tensor, fields=None) -> tuple[torch.Tensor]:
        """theta = pi * clamp(V0, 0, 1): on cells in antiphase to off cells."""
        return (math.pi * V0.clamp(0.0, 1.0),)

    def step(self, state, fields, steps: int = 1, target=None) -> tuple[torch.Tensor]:
        """`steps` explicit Euler steps (pure); target (B, H, W) in [0, 1] adds the
        teacher's pull towards pi * target (training). Free steps of per-edge couplings
        in float32 on the CPU run on the numba kernel (models/kuramoto_kernel.py, equal to
        this torch step to float32 rounding) when substrate.kernel_available()."""
        (theta,) = state
        if target is None and kernel_applies(theta, fields):
            return (kernel_step(theta, fields, self, steps),)
        offsets = self.offsets
        pull = None if target is None else math.pi * target.clamp(0.0, 1.0)
        for _ in range(int(steps)):
            d = fields["omega"] + coupling_drive(theta, fields["J"], offsets)
            if pull is not None:
                d = d + self.teacher * torch.sin(pull - theta)
            theta = torch.remainder(theta + self.dt * d, 2 * math.pi)
        return (theta,)

    def activity(self, state) -> torch.Tensor:
        (theta,) = state
        if self.readout == "cosine":
            return torch.cos(theta)
        return 0.5 * (1.0 - torch.cos(theta - mean_phase(theta)))

    def scar(self, state, target, fields, similarity=None) -> dict[str, torch.Tensor]:
        """The local rule after one training step (pure; module docstring)."""
        (theta,) = state
        if self.scar_field == "coupling":
            # cos(theta_j - theta_i) from the two cells' own phases
            s, c = torch.sin(theta), torch.cos(theta)
            co = (c.unsqueeze(1) * neighbour_stack(c, self.offsets)
                  + s.unsqueeze(1) * neighbour_stack(s, self.offsets))
            return {**fields, "J": fields["J"] + self.learning_rate * self.dt * (co - self.bias)}
        if self.scar_field == "frequency":
            on = (target > self.threshold).to(theta.dtype)
            return {**fields, "omega": fields["omega"] + self.learning_rate * self.dt * on}
        return dict(fields)

    def train(self, fields, targets, steps: int, noise=None) -> dict[str, torch.Tensor]:
        """Store targets (B, P, H, W) in turn: each starts at its own phases (plus `noise`,
        (B, P, H, W) radians, if given), runs `steps` steps under the teacher and writes
        the scar after every step. Returns the scarred fields. The coupling scar in float32
        on the CPU runs on the numba kernel (kernel_applies), the rest in torch."""
        for p in range(targets.shape[1]):
            target = targets[:, p]
            theta = self.initial_state(target)[0]
            if noise is not None:
                theta = theta + noise[:, p]
            if self.scar_field == "coupling" and kernel_applies(theta, fields):
                fields = kernel_step(theta, fields, self, steps, target=target)[1]
                continue
            for _ in range(int(steps)):
                (theta,) = self.step((theta,), fields, 1, target=target)
                fields = self.scar((theta,), target, fields)
        return fields

    def background(self, protocol=None) -> dict:
        """The unscarred medium: the mean natural frequency and the uniform coupling."""
        return {"omega": float(self.omega), "J": float(self.coupling)}

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return {"medium": self.name, "edges_per_cell": len(self.offsets), **asdict(self)}
