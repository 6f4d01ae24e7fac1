"""Physics as a network layer: a 2D field evolved by differentiable physics, and the
classifiers built from it (PhysNet: docs/references.md).

`FieldLayer` projects its input into a 2D field, evolves it for `steps` differentiable
steps and reads features out. Two physics:

* "gpe": a Gross-Pitaevskii field. psi is complex, carried as two real channels
  (re, im); the equation is

      i dpsi/dt = -1/2 lap psi + V psi + g |psi|^2 psi

  with a learnable potential V (one value per cell) and a learnable nonlinearity g.
  Integrator: Strang split-step Fourier (half potential+nonlinear phase, full kinetic
  step in Fourier space, half phase). Every sub-step is a pure phase rotation, so
  the norm sum |psi|^2 is conserved to rounding error for any dt, and a plane wave
  with constant V is integrated exactly (both are tested).
* "grayscott": our Gray-Scott stepper (substrate.gray_scott_step). Learnable base
  feed/kill maps F, K (initialised to F0, K0). The input sets the initial (U, V)
  (input_mode "uv") or the local F/K offsets with a fixed initial state (mode "fk").

Classifiers: `FieldNet` (FieldLayer -> Linear -> ReLU -> Linear), `MLP` (the plain
reference, sized by `mlp_hidden_for` to a parameter budget), and `SeedPhysNet`, the
seed's network as published (conv encoder, projection to 2 x 32 x 32, 5 explicit-Euler
steps of dt = 0.01 of a GPE without potential, conv readout) with `steps=0` giving the
same network with the physics removed (the comparison the seed never ran).

Physics functions are pure (tensors in, tensors out); no I/O here.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from substrate import DECAY, DT, DU, DV, F0, K0, gray_scott_step, laplacian

# GPE field defaults
GPE_DT = 0.1
GPE_STEPS = 10
GPE_DX = 1.0
GPE_G0 = 1.0           # initial nonlinearity
# Gray-Scott field defaults
GS_STEPS = 10
GS_F_RANGE = 0.02      # "fk" mode: F = F_base + GS_F_RANGE * tanh(input)
GS_K_RANGE = 0.01
# the original PhysNet's physics (docs/references.md, "PhysNet")
SEED_DT = 0.01
SEED_STEPS = 5
SEED_A = 0.15
SEED_B = 0.15
SEED_FIELD = 32

PHYSICS = ("gpe", "grayscott")


# ----------------------------------------------------------------------------- physics
def kinetic_phase(height: int, width: int, dt: float, dx: float = GPE_DX,
                  device=None, dtype=torch.float64) -> torch.Tensor:
    """exp(-i |k|^2 / 2 * dt) on the periodic grid's Fourier modes, shape (H, W)."""
    ky = 2 * math.pi * torch.fft.fftfreq(height, d=dx, device=device, dtype=dtype)
    kx = 2 * math.pi * torch.fft.fftfreq(width, d=dx, device=device, dtype=dtype)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    return torch.polar(torch.ones_like(k2), -0.5 * k2 * dt)


def _phase(psi: torch.Tensor, V: torch.Tensor, g, scale: float) -> torch.Tensor:
    """psi * exp(-i (V + g |psi|^2) * scale): the potential + nonlinear sub-step. It is
    exact because it leaves |psi|^2 unchanged."""
    theta = (V + g * (psi.real ** 2 + psi.imag ** 2)) * (-scale)
    return psi * torch.complex(torch.cos(theta), torch.sin(theta))


def gpe_step(psi: torch.Tensor, V: torch.Tensor, g, dt: float,
             kinetic: torch.Tensor) -> torch.Tensor:
    """One Strang split-step of i dpsi/dt = -1/2 lap psi + V psi + g |psi|^2 psi.

    psi: complex (..., H, W); V: real (H, W) or broadcastable; g: real scalar tensor
    or float; kinetic: kinetic_phase(H, W, dt). Pure; unitary for real V and g.
    """
    psi = _phase(psi, V, g, 0.5 * dt)
    psi = torch.fft.ifft2(torch.fft.fft2(psi) * kinetic)
    return _phase(psi, V, g, 0.5 * dt)


def gpe_evolve(re: torch.Tensor, im: torch.Tensor, V: torch.Tensor, g, dt: float = GPE_DT,
               steps: int = GPE_STEPS, dx: float = GPE_DX, return_all: bool = False):
    """Evolve psi = re + i im for `steps` Strang split steps. Returns (re, im) at the end,
    or with return_all=True a list of (re, im) per step (including the start).

    Two consecutive half phase steps share |psi|^2, so they fuse into one full step:
    the result equals `steps` calls of gpe_step (tested) at about half the cost."""
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    if not dt > 0:
        raise ValueError(f"dt={dt} must be > 0")
    if steps == 0:
        return [(re, im)] if return_all else (re, im)
    H, W = re.shape[-2:]
    kin = kinetic_phase(H, W, dt, dx, device=re.device, dtype=re.dtype)
    psi = torch.complex(re, im)
    if return_all:
        history = [(re, im)]
        for _ in range(steps):
            psi = gpe_step(psi, V, g, dt, kin)
            history.append((psi.real, psi.imag))
        return history
    psi = _phase(psi, V, g, 0.5 * dt)
    for s in range(steps):
        psi = torch.fft.ifft2(torch.fft.fft2(psi) * kin)
        psi = _phase(psi, V, g, (0.5 if s == steps - 1 else 1.0) * dt)
    return psi.real, psi.imag


def seed_gpe_euler(re: torch.Tensor, im: torch.Tensor, steps: int = SEED_STEPS,
                   dt: float = SEED_DT, a: float = SEED_A, b: float = SEED_B):
    """The original PhysNet's physics: explicit Euler on i dpsi/dt = H psi,
    H psi = -1/2 lap psi + (-a + 2 b |psi|^2) psi, 5-point periodic Laplacian.
    Not norm-conserving (explicit Euler on a unitary flow grows the norm slowly)."""
    for _ in range(steps):
        pot = -a + 2 * b * (re ** 2 + im ** 2)
        h_re = -0.5 * laplacian(re, "five_point") + pot * re
        h_im = -0.5 * laplacian(im, "five_point") + pot * im
        # dpsi/dt = -i H psi  ->  d re/dt = H_im, d im/dt = -H_re
        re, im = re + dt * h_im, im - dt * h_re
    return re, im


def grayscott_evolve(U, V, F, K, steps: int = GS_STEPS, Du: float = DU, Dv: float = DV,
                     dt: float = DT, decay: float = DECAY, clamp: bool = True):
    """`steps` Gray-Scott steps via substrate.gray_scott_step (differentiable)."""
    for _ in range(steps):
        U, V = gray_scott_step(U, V, F, K, Du, Dv, dt, decay, "nine_point", clamp)
    return U, V


# ------------------------------------------------------------------------ field layer
class FieldLayer(nn.Module):
    """Linear projection of the input into a 2-channel H x W field, `steps` physics
    steps, then a feature read-out (flattened, per cell).

    physics "gpe": field = (re, im), normalised per input to mean |psi|^2 = 1 over the
        cells (normalise=True; the GPE conserves this norm, and without it the
        nonlinear phase g |psi|^2 dt is unbounded and sequential training diverged in
        3 of 15 task trainings); features = (re, im, |psi|^2) per cell.
    physics "grayscott": input_mode "uv": (U, V) = sigmoid(projection);
        input_mode "fk": F = F_base + 0.02 tanh(p0), K = K_base + 0.01 tanh(p1), the
        state starts at U = 1, V = 0.25 in the centre quarter; features = (U, V).

    Per-cell parameters (used by the "scar" strategy): the projection rows writing into
    a cell, the physics maps at the cell (V for gpe, F/K base for grayscott) and the
    read-out columns reading the cell (owned by the classifier, see FieldNet).
    """

    def __init__(self, in_features: int, height: int = 16, width: int = 16,
                 physics: str = "gpe", steps: int | None = None, dt: float | None = None,
                 dx: float = GPE_DX, g0: float = GPE_G0, input_mode: str = "uv",
                 clamp: bool = True, normalise: bool = True):
        super().__init__()
        if physics not in PHYSICS:
            raise ValueError(f"physics={physics!r} is not one of {PHYSICS}")
        if input_mode not in ("uv", "fk"):
            raise ValueError(f"input_mode={input_mode!r} is not 'uv' or 'fk'")
        if height < 3 or width < 3:
            raise ValueError(f"field {height}x{width} is too small (need >= 3x3)")
        self.physics, self.height, self.width = physics, int(height), int(width)
        self.steps = (GPE_STEPS if physics == "gpe" else GS_STEPS) if steps is None else int(steps)
        if self.steps < 0:
            raise ValueError(f"steps={self.steps} must be >= 0")
        self.dt = (GPE_DT if physics == "gpe" else DT) if dt is None else float(dt)
        self.dx, self.input_mode, self.clamp = dx, input_mode, clamp
        self.normalise = bool(normalise)
        self.proj = nn.Linear(in_features, 2 * self.height * self.width)
        if physics == "gpe":
            self.potential = nn.Parameter(torch.zeros(self.height, self.width))
            self.g = nn.Parameter(torch.tensor(float(g0)))
            self.feature_channels = 3
        else:
            self.F_base = nn.Parameter(torch.full((self.height, self.width), F0))
            self.K_base = nn.Parameter(torch.full((self.height, self.width), K0))
            self.feature_channels = 2
        self.out_features = self.feature_channels * self.height * self.width

    def cell_maps(self) -> list[nn.Parameter]:
        """The physics parameters that are one value per cell (H, W)."""
        return [self.potential] if self.physics == "gpe" else [self.F_base, self.K_base]

    def evolve(self, x: torch.Tensor, physics: bool = True):
        """Input (B, in_features) -> final field (B, 2, H, W): (re, im) or (U, V).
        physics=False returns the field as projected, before any step."""
        p = self.proj(x).view(-1, 2, self.height, self.width)
        steps = self.steps if physics else 0
        if self.physics == "gpe":
            if self.normalise:   # fixed "particle number": mean |psi|^2 = 1 per input
                p = p / (p.pow(2).sum(1, keepdim=True).mean((2, 3), keepdim=True)
                         + 1e-8).sqrt()
            re, im = gpe_evolve(p[:, 0], p[:, 1], self.potential, self.g, self.dt,
                                steps, self.dx)
            return torch.stack([re, im], 1)
        if self.input_mode == "uv":
            U, V = torch.sigmoid(p[:, 0]), torch.sigmoid(p[:, 1])
            F, K = self.F_base, self.K_base
        else:
            F = self.F_base + GS_F_RANGE * torch.tanh(p[:, 0])
            K = self.K_base + GS_K_RANGE * torch.tanh(p[:, 1])
            U = torch.ones_like(p[:, 0])
            V = torch.zeros_like(U)
            h, w = self.height, self.width
            V[:, h // 4: h - h // 4, w // 4: w - w // 4] = 0.25
        U, V = grayscott_evolve(U, V, F, K, steps, dt=self.dt, clamp=self.clamp)
        return torch.stack([U, V], 1)

    def features(self, field: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) field -> (B, C, H, W) read-out channels."""
        if self.physics == "gpe":
            return torch.cat([field, (field ** 2).sum(1, keepdim=True)], 1)
        return field

    def intensity(self, field: torch.Tensor) -> torch.Tensor:
        """Per-cell activity (B, H, W): |psi|^2 for gpe, V for grayscott."""
        return (field ** 2).sum(1) if self.physics == "gpe" else field[:, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.evolve(x)).flatten(1)


# ------------------------------------------------------------------------ classifiers
class FieldNet(nn.Module):
    """Flattened image -> FieldLayer -> Linear(hidden) -> ReLU -> Linear(classes)."""

    def __init__(self, in_features: int, height: int = 16, width: int = 16,
                 physics: str = "gpe", hidden: int = 64, classes: int = 10, **field_kw):
        super().__init__()
        self.field = FieldLayer(in_features, height, width, physics, **field_kw)
        self.readout = nn.Linear(self.field.out_features, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(torch.relu(self.readout(self.field(x.flatten(1)))))

    def field_of(self, x, physics: bool = True):
        """Final field (B, 2, H, W) for visualisation and the scar strategy
        (physics=False: the projected field before the physics steps)."""
        return self.field.evolve(x.flatten(1), physics)

    def intensity(self, field):
        return self.field.intensity(field)

    def cell_masks(self, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """For a boolean (H, W) cell mask, the boolean mask of every parameter entry
        attached to those cells: projection rows (both channels) and biases, the physics
        maps, and read-out columns (every feature channel). Keys are parameter names."""
        cells = cells.bool()
        flat = cells.flatten()
        rows = flat.repeat(2)                                   # proj output (2, H, W)
        cols = flat.repeat(self.field.feature_channels)         # readout input (C, H, W)
        masks = {
            "field.proj.weight": rows[:, None].expand_as(self.field.proj.weight),
            "field.proj.bias": rows,
            "readout.weight": cols[None, :].expand_as(self.readout.weight),
        }
        if self.field.physics == "gpe":
            masks["field.potential"] = cells
        else:
            masks["field.F_base"] = cells
            masks["field.K_base"] = cells
        return masks


class MLP(nn.Module):
    """Plain reference: in -> hidden -> ReLU -> hidden -> ReLU -> classes."""

    def __init__(self, in_features: int, hidden: int, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x.flatten(1))


def mlp_params(in_features: int, hidden: int, classes: int = 10) -> int:
    return (in_features + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * classes


def mlp_hidden_for(budget: int, in_features: int, classes: int = 10) -> int:
    """The hidden width whose MLP parameter count is closest to `budget`."""
    # h^2 + (in + classes + 2) h + classes - budget = 0
    b = in_features + classes + 2
    h = (-b + math.sqrt(b * b + 4 * max(budget - classes, 1))) / 2
    candidates = [max(1, math.floor(h)), max(1, math.ceil(h))]
    return min(candidates, key=lambda c: abs(mlp_params(in_features, c, classes) - budget))


class SeedPhysNet(nn.Module):
    """The original PhysNet (docs/references.md): 28x28 input; encoder conv 1->16 ReLU pool,
    conv 16->32 ReLU pool, linear 1568->128 ReLU, linear 128->64; projection 64 ->
    2 x 32 x 32; `steps` explicit-Euler steps of dt (seed: 5 x 0.01); read-out conv 2->16
    ReLU pool, conv 16->32 ReLU pool, linear 2048->256 ReLU, linear 256->classes.
    steps=0 is the same network without physics."""

    def __init__(self, steps: int = SEED_STEPS, dt: float = SEED_DT, classes: int = 10,
                 field: int = SEED_FIELD):
        super().__init__()
        if steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        self.steps, self.dt, self.field_size = int(steps), float(dt), field
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 64))
        self.proj = nn.Linear(64, 2 * field * field)
        self.readout = nn.Sequential(
            nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (field // 4) ** 2, 256), nn.ReLU(),
            nn.Linear(256, classes))

    def field_of(self, x, physics: bool = True):
        p = self.proj(self.encoder(x.view(-1, 1, 28, 28))).view(-1, 2, self.field_size,
                                                                self.field_size)
        re, im = seed_gpe_euler(p[:, 0], p[:, 1], self.steps if physics else 0, self.dt)
        return torch.stack([re, im], 1)

    @staticmethod
    def intensity(field):
        return (field ** 2).sum(1)

    def forward(self, x):
        return self.readout(self.field_of(x))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# the model zoo of the continual-learning benchmark: name -> (builder, input side)
def build_model(name: str, field: int = 16, hidden: int = 64, classes: int = 10,
                gpe_steps: int = GPE_STEPS, gpe_dt: float = GPE_DT,
                gs_steps: int = GS_STEPS, normalise: bool = True) -> nn.Module:
    """Models by name. Field nets and the MLP take field x field images; the seed
    PhysNet takes 28 x 28. The MLP is sized to the GPE field net's parameter count."""
    n_in = field * field
    if name == "mlp":
        budget = count_params(FieldNet(n_in, field, field, "gpe", hidden, classes))
        return MLP(n_in, mlp_hidden_for(budget, n_in, classes), classes)
    if name == "gpe":
        return FieldNet(n_in, field, field, "gpe", hidden, classes, steps=gpe_steps, dt=gpe_dt,
                        normalise=normalise)
    if name == "gpe_nophys":
        return FieldNet(n_in, field, field, "gpe", hidden, classes, steps=0, dt=gpe_dt,
                        normalise=normalise)
    if name == "grayscott":
        return FieldNet(n_in, field, field, "grayscott", hidden, classes, steps=gs_steps)
    if name == "physnet_seed":
        return SeedPhysNet(SEED_STEPS, SEED_DT, classes)
    if name == "physnet_nophys":
        return SeedPhysNet(0, SEED_DT, classes)
    raise ValueError(f"model {name!r} is not one of {MODELS}")


MODELS = ("mlp", "gpe", "gpe_nophys", "grayscott", "physnet_seed", "physnet_nophys")


def input_side(name: str, field: int = 16) -> int:
    """Image side length a model expects."""
    return 28 if name.startswith("physnet") else field
