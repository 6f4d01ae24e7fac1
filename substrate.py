"""The Gray-Scott substrate: a batched explicit-Euler stepper with per-cell feed/kill.

The physics, exactly as the reference study runs it (../shared/PROTOCOL.md):

    lapU, lapV = stencil(U), stencil(V)               # periodic (torus) boundary
    uvv = U * V * V
    U'  = U + dt * (Du * lapU - uvv + F * (1 - U))
    V'  = V + dt * (Dv * lapV + uvv - (K + F) * V)
    V' *= decay                                      # 0.9995 every step
    U', V' = clamp(U', 0, 1), clamp(V', 0, 1)

State tensors have a leading batch dimension, shape (B, H, W), so several seeds or
several patterns advance in one call. F and K are either one (H, W) field shared by the
whole batch or a (B, H, W) field per member.

`gray_scott_step` is the pure function (tensors in, tensors out); `GrayScott` holds a
state and calls it, checking for NaN/Inf as it goes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as tnf

# Reference constants (PROTOCOL.md "Substrate").
F0 = 0.037
K0 = 0.060
DU = 0.16
DV = 0.08
DT = 1.0
DECAY = 0.9995

# Stencils. The reference one has no 1/h^2 factor; its isotropic diffusion coefficient
# is 0.3, so the *effective* diffusion constants are 0.3 * Du and 0.3 * Dv.
NINE_POINT = ((0.05, 0.2, 0.05), (0.2, -1.0, 0.2), (0.05, 0.2, 0.05))
FIVE_POINT = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
STENCILS = {"nine_point": NINE_POINT, "five_point": FIVE_POINT}

# Largest |eigenvalue| of each stencil on a periodic grid (reached at the checkerboard
# mode). Explicit Euler on pure diffusion is stable iff dt * D * bound <= 2.
STENCIL_BOUND = {"nine_point": 1.6, "five_point": 8.0}
STABILITY_LIMIT = 2.0


class SimulationError(RuntimeError):
    """The state became non-finite (NaN/Inf) during a run."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_stability(Du: float, Dv: float, dt: float, stencil: str = "nine_point") -> None:
    """Raise ValueError unless the explicit scheme is stable for these constants."""
    if stencil not in STENCIL_BOUND:
        raise ValueError(f"stencil={stencil!r} is not one of {sorted(STENCIL_BOUND)}")
    if not dt > 0:
        raise ValueError(f"dt={dt} must be > 0")
    for name, D in (("Du", Du), ("Dv", Dv)):
        if not D >= 0:
            raise ValueError(f"{name}={D} must be >= 0")
        product = dt * D * STENCIL_BOUND[stencil]
        if product > STABILITY_LIMIT:
            raise ValueError(
                f"unstable: dt * {name} * {STENCIL_BOUND[stencil]} = {product:.4g} exceeds "
                f"{STABILITY_LIMIT} for the {stencil} stencil; need dt * {name} <= "
                f"{STABILITY_LIMIT / STENCIL_BOUND[stencil]:.4g} (dt={dt}, {name}={D})"
            )


def laplacian(X: torch.Tensor, stencil: str = "nine_point") -> torch.Tensor:
    """Periodic Laplacian of X over its last two dims (any leading dims)."""
    lead = X.shape[:-2]
    H, W = X.shape[-2:]
    # circular padding wants (N, C, H, W); fold every leading dim into N
    P = tnf.pad(X.reshape(-1, 1, H, W), (1, 1, 1, 1), mode="circular")[:, 0]
    centre = P[:, 1:-1, 1:-1]
    cross = P[:, :-2, 1:-1] + P[:, 2:, 1:-1] + P[:, 1:-1, :-2] + P[:, 1:-1, 2:]
    if stencil == "nine_point":
        diagonal = P[:, :-2, :-2] + P[:, :-2, 2:] + P[:, 2:, :-2] + P[:, 2:, 2:]
        out = 0.2 * cross + 0.05 * diagonal - centre
    elif stencil == "five_point":
        out = cross - 4.0 * centre
    else:
        raise ValueError(f"stencil={stencil!r} is not one of {sorted(STENCILS)}")
    return out.reshape(*lead, H, W)


def gray_scott_step(U, V, F, K, Du=DU, Dv=DV, dt=DT, decay=DECAY,
                    stencil="nine_point", clamp=True):
    """One explicit Euler step. Pure: returns new (U, V), inputs untouched.

    decay=None or 1.0 switches the V decay off; clamp=False leaves U, V unclamped.
    """
    lap_U = laplacian(U, stencil)
    lap_V = laplacian(V, stencil)
    uvv = U * V * V
    U_new = U + dt * (Du * lap_U - uvv + F * (1.0 - U))
    V_new = V + dt * (Dv * lap_V + uvv - (K + F) * V)
    if decay is not None and decay != 1.0:
        V_new = V_new * decay
    if clamp:
        U_new = U_new.clamp_(0.0, 1.0)
        V_new = V_new.clamp_(0.0, 1.0)
    return U_new, V_new


def _as_field(value, name, batch, height, width, device, dtype) -> torch.Tensor:
    """A scalar, (H, W) or (B, H, W) value as a tensor on the right device/dtype."""
    if isinstance(value, (int, float)):
        return torch.full((height, width), float(value), device=device, dtype=dtype)
    t = torch.as_tensor(value, device=device, dtype=dtype)
    if t.shape not in ((height, width), (batch, height, width)):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected a scalar, ({height}, {width}) "
            f"shared by the batch, or ({batch}, {height}, {width}) per member"
        )
    return t.clone()


class GrayScott:
    """A batch of Gray-Scott media on a periodic H x W grid.

    Attributes U, V (B, H, W) and F, K ((H, W) shared or (B, H, W) per member) are plain
    tensors: read them, or assign new ones (the shape is checked at the next step).

    Example:
        gs = GrayScott(256, 256, batch=8)
        gs.V = cue                      # (8, 256, 256)
        gs.step(500)
    """

    def __init__(self, height: int, width: int, batch: int = 1, F=F0, K=K0, Du: float = DU,
                 Dv: float = DV, dt: float = DT, decay: float | None = DECAY,
                 stencil: str = "nine_point", clamp: bool = True, device=None,
                 dtype: torch.dtype = torch.float32, check_every: int = 100):
        for name, n in (("height", height), ("width", width), ("batch", batch)):
            if int(n) != n or n < 1:
                raise ValueError(f"{name}={n} must be a positive integer")
        if height < 3 or width < 3:
            raise ValueError(f"grid {height}x{width} is too small: the stencil needs >= 3x3")
        check_stability(Du, Dv, dt, stencil)
        if decay is not None and not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay={decay} must be in [0, 1] (1 or None = off)")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype={dtype} must be torch.float32 or torch.float64")
        self.height, self.width, self.batch = int(height), int(width), int(batch)
        self.Du, self.Dv, self.dt, self.decay = Du, Dv, dt, decay
        self.stencil, self.clamp = stencil, clamp
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        self.check_every = max(1, int(check_every))
        shape = (self.batch, self.height, self.width)
        self.U = torch.ones(shape, device=self.device, dtype=dtype)
        self.V = torch.zeros(shape, device=self.device, dtype=dtype)
        self.F = _as_field(F, "F", self.batch, self.height, self.width, self.device, dtype)
        self.K = _as_field(K, "K", self.batch, self.height, self.width, self.device, dtype)
        self.steps_taken = 0
        self._first_bad_step = torch.full((), -1, device=self.device, dtype=torch.long)

    def reset(self, V=None, U=None) -> None:
        """U = 1 (or U), V = 0 (or V); F, K unchanged."""
        shape = (self.batch, self.height, self.width)
        self.U = (torch.ones(shape, device=self.device, dtype=self.dtype) if U is None
                  else self._state_tensor(U, "U"))
        self.V = (torch.zeros(shape, device=self.device, dtype=self.dtype) if V is None
                  else self._state_tensor(V, "V"))

    def _state_tensor(self, value, name) -> torch.Tensor:
        t = torch.as_tensor(value, device=self.device, dtype=self.dtype)
        if t.shape == (self.height, self.width):
            t = t.expand(self.batch, -1, -1)
        if t.shape != (self.batch, self.height, self.width):
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected "
                             f"({self.batch}, {self.height}, {self.width}) or "
                             f"({self.height}, {self.width})")
        return t.clone()

    def step(self, n: int = 1) -> "GrayScott":
        """Advance every batch member n steps.

        Finiteness is tracked on the device every step (no host sync) and checked every
        `check_every` steps and at the end of a multi-step call; a non-finite U or V
        raises SimulationError naming the first bad step.
        """
        if int(n) != n or n < 0:
            raise ValueError(f"n={n} must be a non-negative integer")
        for _ in range(int(n)):
            self.U, self.V = gray_scott_step(self.U, self.V, self.F, self.K, self.Du,
                                             self.Dv, self.dt, self.decay, self.stencil,
                                             self.clamp)
            self.steps_taken += 1
            # a sum is NaN/Inf iff some element is (or the state has blown up anyway)
            finite = torch.isfinite(self.U.sum() + self.V.sum())
            self._first_bad_step = torch.where(
                finite | (self._first_bad_step >= 0), self._first_bad_step,
                torch.full_like(self._first_bad_step, self.steps_taken))
            if self.steps_taken % self.check_every == 0:
                self.check_finite()
        if n > 1:
            self.check_finite()
        return self

    def check_finite(self) -> None:
        """Raise SimulationError if U or V became NaN/Inf at any step so far (one sync)."""
        first_bad = int(self._first_bad_step.item())
        if first_bad >= 0:
            bad = (~torch.isfinite(self.U) | ~torch.isfinite(self.V)).flatten(1).any(1)
            raise SimulationError(
                f"non-finite U or V (NaN/Inf) first at step {first_bad}, batch member(s) "
                f"{bad.nonzero().flatten().tolist()}; check F, K, Du, Dv, dt and the "
                f"initial state (F in [{self.F.min().item():.4g}, {self.F.max().item():.4g}],"
                f" K in [{self.K.min().item():.4g}, {self.K.max().item():.4g}])")
