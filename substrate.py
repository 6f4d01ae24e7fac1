"""The Gray-Scott substrate: a batched explicit-Euler stepper with per-cell feed/kill.

The physics, exactly as the reference study runs it (../shared/PROTOCOL.md):

    lapU, lapV = stencil(U), stencil(V)               # periodic (torus) boundary
    uvv = U * V * V
    U'  = U + dt * (Du * lapU - uvv + F * (1 - U))
    V'  = V + dt * (Dv * lapV + uvv - (K + F) * V)
    V' *= decay                                      # 0.9995 every step
    U', V' = clamp(U', 0, 1), clamp(V', 0, 1)

State tensors have a leading batch dimension, shape (B, H, W), or (B, D, H, W) for a 3D
medium (`depth=`), so several seeds or several patterns advance in one call. F and K are
either one grid-shaped field shared by the whole batch or a (B, *grid) field per member.

`gray_scott_step` is the pure function (tensors in, tensors out) and the reference;
`GrayScott` holds a state and steps it on one of two paths that give the same numbers:

* eager: `gray_scott_step` itself (in-place temporaries when no gradient is needed),
  with a NaN/Inf check on the device every step;
* compiled: U and V each live in a circularly padded tensor (a one-cell halo), and one
  `torch.compile`d kernel reads them with plain slices (vectorisable: no index
  arithmetic for the wrap), does the whole update in one pass and writes the new U, V
  straight into the padded layout; a few tiny copies then refresh the halo. The batch
  dimension is compiled dynamic, so every batch size > 1 shares one kernel.
  With clamp on and finite inputs the state provably stays finite (every value is
  clamped to [0, 1] and nothing divides), so this path checks its inputs when they
  change instead of reducing the whole state every step. compile="auto" (default) takes
  this path only when a C++ compiler (CPU) or Triton (CUDA) is present and the run is
  big enough to repay the compile time (AUTO_COMPILE_*); compile=True forces it,
  compile=False never uses it. Results match the eager path to float rounding.

No host synchronisation happens inside the stepping loop except the documented
`check_finite` every `check_every` steps.
"""
from __future__ import annotations

import math
import os
import shutil
import warnings

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

# 3D stencils for (B, D, H, W) media, scaled so that their isotropic diffusion
# coefficient is 0.3 like the reference nine_point: the default Du, Dv then mean the
# same effective diffusion (and give spots of the same size in cells) in 2D and 3D.
#   seven_point:       6 face neighbours 0.3, centre -1.8
#   twentyseven_point: the isotropic 27-point stencil (faces 14, edges 3, corners 1,
#                      centre -128, over 30) times 0.3: 0.14, 0.03, 0.01, -1.28.
#                      (nine_point is the 2D isotropic 9-point stencil times 0.3.)
# Weights by number of non-zero offsets: (centre, face, edge, corner).
STENCIL_WEIGHTS_3D = {"seven_point": (-1.8, 0.3, 0.0, 0.0),
                      "twentyseven_point": (-1.28, 0.14, 0.03, 0.01)}
STENCILS_3D = {
    name: tuple(tuple(tuple(w[abs(a) + abs(b) + abs(c)] for c in (-1, 0, 1))
                      for b in (-1, 0, 1)) for a in (-1, 0, 1))
    for name, w in STENCIL_WEIGHTS_3D.items()}
# Checkerboard eigenvalue: seven 0.3*6 + 1.8; twentyseven 6*0.14 - 12*0.03 + 8*0.01 + 1.28.
STENCIL_BOUND_3D = {"seven_point": 3.6, "twentyseven_point": 1.84}
DEFAULT_STENCIL = {2: "nine_point", 3: "seven_point"}

# compile="auto": compile only when a step covers at least this many cells (batch x
# grid) and the run has at least this many cell-updates ahead of it (or behind it).
AUTO_COMPILE_MIN_CELLS = 1 << 17
AUTO_COMPILE_WORK = 2e8
# |F|, |K| above this (or non-finite) disable the "provably finite" shortcut.
_SAFE_FIELD_MAX = 1e6


class SimulationError(RuntimeError):
    """The state became non-finite (NaN/Inf) during a run."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bound(stencil):
    if stencil in STENCIL_BOUND:
        return STENCIL_BOUND[stencil]
    if stencil in STENCIL_BOUND_3D:
        return STENCIL_BOUND_3D[stencil]
    raise ValueError(f"stencil={stencil!r} is not one of "
                     f"{sorted(STENCIL_BOUND) + sorted(STENCIL_BOUND_3D)}")


def stencil_dims(stencil: str) -> int:
    """2 for the (H, W) stencils, 3 for the (D, H, W) ones."""
    _bound(stencil)
    return 3 if stencil in STENCIL_BOUND_3D else 2


def check_stability(Du: float, Dv: float, dt: float, stencil: str = "nine_point") -> None:
    """Raise ValueError unless the explicit scheme is stable for these constants."""
    bound = _bound(stencil)
    if not dt > 0:
        raise ValueError(f"dt={dt} must be > 0")
    for name, D in (("Du", Du), ("Dv", Dv)):
        if not D >= 0:
            raise ValueError(f"{name}={D} must be >= 0")
        product = dt * D * bound
        if product > STABILITY_LIMIT:
            raise ValueError(
                f"unstable: dt * {name} * {bound} = {product:.4g} exceeds "
                f"{STABILITY_LIMIT} for the {stencil} stencil; need dt * {name} <= "
                f"{STABILITY_LIMIT / bound:.4g} (dt={dt}, {name}={D})"
            )


# ---- stencils -------------------------------------------------------------------------

def _stencil_of_padded(P: torch.Tensor, stencil: str) -> torch.Tensor:
    """Laplacian of the interior of P, a tensor padded by one cell on its last 2 (or 3)
    dims, using plain slices only. The one implementation of every stencil."""
    if stencil in STENCIL_BOUND:
        centre = P[..., 1:-1, 1:-1]
        cross = P[..., :-2, 1:-1] + P[..., 2:, 1:-1] + P[..., 1:-1, :-2] + P[..., 1:-1, 2:]
        if stencil == "nine_point":
            diagonal = P[..., :-2, :-2] + P[..., :-2, 2:] + P[..., 2:, :-2] + P[..., 2:, 2:]
            return 0.2 * cross + 0.05 * diagonal - centre
        return cross - 4.0 * centre
    if stencil not in STENCIL_WEIGHTS_3D:
        _bound(stencil)  # raises the ValueError naming the stencils
    w_centre, *w_ring = STENCIL_WEIGHTS_3D[stencil]
    cut = {-1: slice(None, -2), 0: slice(1, -1), 1: slice(2, None)}
    sums = [None, None, None]  # faces, edges, corners
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            for c in (-1, 0, 1):
                order = abs(a) + abs(b) + abs(c)
                if order == 0 or w_ring[order - 1] == 0.0:
                    continue
                s = P[..., cut[a], cut[b], cut[c]]
                sums[order - 1] = s if sums[order - 1] is None else sums[order - 1] + s
    out = w_centre * P[..., 1:-1, 1:-1, 1:-1]
    for w, s in zip(w_ring, sums):
        if s is not None:
            out = out + w * s
    return out


def laplacian(X: torch.Tensor, stencil: str = "nine_point") -> torch.Tensor:
    """Periodic Laplacian of X over its last two dims (three for a 3D stencil), any
    leading dims."""
    nd = stencil_dims(stencil)
    lead, grid = X.shape[:-nd], X.shape[-nd:]
    # circular padding wants (N, C, *grid); fold every leading dim into N
    P = tnf.pad(X.reshape(-1, 1, *grid), (1, 1) * nd, mode="circular")[:, 0]
    return _stencil_of_padded(P, stencil).reshape(*lead, *grid)


def gray_scott_step(U, V, F, K, Du=DU, Dv=DV, dt=DT, decay=DECAY,
                    stencil="nine_point", clamp=True):
    """One explicit Euler step. Pure: returns new (U, V), inputs untouched.

    decay=None or 1.0 switches the V decay off; clamp=False leaves U, V unclamped.
    Works on (B, H, W) or, with a 3D stencil, (B, D, H, W) states.
    """
    lap_U = laplacian(U, stencil)
    lap_V = laplacian(V, stencil)
    in_place = (not (torch.is_grad_enabled() and any(t.requires_grad for t in (U, V, F, K)))
                and len({t.dtype for t in (U, V, F, K)}) == 1 and U.shape == V.shape
                and torch.broadcast_shapes(U.shape, F.shape, K.shape) == U.shape)
    if not in_place:
        uvv = U * V * V
        U_new = U + dt * (Du * lap_U - uvv + F * (1.0 - U))
        V_new = V + dt * (Dv * lap_V + uvv - (K + F) * V)
        if decay is not None and decay != 1.0:
            V_new = V_new * decay
    else:
        # the same expressions, evaluated in place on fresh temporaries (bit-identical:
        # every product and sum is the same IEEE operation on the same operands)
        uvv = U * V
        uvv *= V
        U_new = lap_U.mul_(Du).sub_(uvv)
        U_new += (1.0 - U).mul_(F) if F.shape == U.shape else F * (1.0 - U)
        U_new.mul_(dt).add_(U)
        V_new = lap_V.mul_(Dv).add_(uvv)
        V_new -= (K + F) * V
        V_new.mul_(dt).add_(V)
        if decay is not None and decay != 1.0:
            V_new.mul_(decay)
    if clamp:
        U_new = U_new.clamp_(0.0, 1.0)
        V_new = V_new.clamp_(0.0, 1.0)
    return U_new, V_new


# ---- the compiled path ----------------------------------------------------------------

def _padded_step(Up, Vp, F, K, Du, Dv, dt, decay, stencil, clamp, nd):
    """One step from circularly padded Up, Vp (B, *(grid + 2)) (halo valid).
    Returns the new U, V in the same padded layout with a zero halo (fill_halo makes it
    periodic). Same expressions as gray_scott_step, so the same numbers."""
    inner = (Ellipsis, *((slice(1, -1),) * nd))
    U, V = Up[inner], Vp[inner]
    uvv = U * V * V
    U_new = U + dt * (Du * _stencil_of_padded(Up, stencil) - uvv + F * (1.0 - U))
    V_new = V + dt * (Dv * _stencil_of_padded(Vp, stencil) + uvv - (K + F) * V)
    if decay is not None and decay != 1.0:
        V_new = V_new * decay
    if clamp:
        U_new = U_new.clamp(0.0, 1.0)
        V_new = V_new.clamp(0.0, 1.0)
    # writing the padded layout straight from the kernel costs less than a separate
    # copy into a padded buffer before the next step
    return tnf.pad(U_new, (1, 1) * nd), tnf.pad(V_new, (1, 1) * nd)


def fill_halo(P: torch.Tensor, nd: int) -> torch.Tensor:
    """Make the one-cell halo of P (padded on its last nd dims) periodic, in place."""
    for axis in range(P.dim() - nd, P.dim()):
        n = P.shape[axis] - 2
        P.select(axis, 0).copy_(P.select(axis, n))
        P.select(axis, n + 1).copy_(P.select(axis, 1))
    return P


def compiler_available(device) -> bool:
    """True when torch.compile can build kernels for this device here."""
    device = torch.device(device)
    if os.environ.get("SUBSTRATE_NO_COMPILE"):
        return False
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
            return bool(has_triton())
        except Exception:  # pragma: no cover - depends on the install
            return False
    if device.type != "cpu":
        return False
    cxx = os.environ.get("CXX")
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++")
                or shutil.which("c++"))


_COMPILED: dict = {}          # config key -> compiled callable, or None if compiling failed
_COMPILED_SHAPES: set = set()  # (key, shapes) that already ran compiled in this process


def _raise_recompile_limit(limit=64):
    import torch._dynamo.config as dcfg
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name) and getattr(dcfg, name) < limit:
            setattr(dcfg, name, limit)


def compiled(fn, key):
    """torch.compile(fn) once per key, cached for the process.

    The batch dimension is compiled as dynamic (one kernel serves every batch size > 1,
    so a study that runs batches of 16, 24 and 8 compiles once); the grid dims stay
    static so the inner loops vectorise. The first argument must be the batched state;
    every argument with the same rank (or rank 1) and the same leading size is batched.
    """
    fn_c = _COMPILED.get(key, False)
    if fn_c is False:
        _raise_recompile_limit()
        fn_c = _COMPILED[key] = torch.compile(fn, dynamic=False)
    if fn_c is None:
        return None

    def call(*args):
        B, rank = args[0].shape[0], args[0].dim()
        if B > 1:
            for a in args:
                if (isinstance(a, torch.Tensor) and a.dim() in (rank, 1)
                        and a.shape[0] == B):
                    torch._dynamo.maybe_mark_dynamic(a, 0)
        return fn_c(*args)
    return call


def _make_kernel(Du, Dv, dt, decay, stencil, clamp, nd):
    def kernel(Up, Vp, F, K):
        return _padded_step(Up, Vp, F, K, Du, Dv, dt, decay, stencil, clamp, nd)
    return kernel


def _field_finite_and_small(t: torch.Tensor) -> bool:
    m = t.detach().abs().amax()
    return bool(torch.isfinite(m)) and float(m) <= _SAFE_FIELD_MAX


def _as_field(value, name, batch, grid, device, dtype) -> torch.Tensor:
    """A scalar, grid-shaped or (B, *grid) value as a tensor on the right device/dtype."""
    if isinstance(value, (int, float)):
        return torch.full(grid, float(value), device=device, dtype=dtype)
    t = torch.as_tensor(value, device=device, dtype=dtype)
    if t.shape not in (grid, (batch, *grid)):
        g = ", ".join(str(s) for s in grid)
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected a scalar, ({g}) "
            f"shared by the batch, or ({batch}, {g}) per member"
        )
    return t.clone()


class GrayScott:
    """A batch of Gray-Scott media on a periodic H x W (or D x H x W) grid.

    Attributes U, V (B, *grid) and F, K (grid-shaped shared, or (B, *grid) per member)
    are plain tensors: read them, or assign new ones (the shape is checked at the next
    step). A stepped state is always a new tensor, so a reference taken earlier keeps
    the old state.

    depth=None gives a 2D (B, H, W) medium; depth=D a 3D (B, D, H, W) one (stencil
    default "seven_point", or "twentyseven_point"). compile: "auto", True or False (see
    the module docstring).

    Example:
        gs = GrayScott(256, 256, batch=8)
        gs.V = cue                      # (8, 256, 256)
        gs.step(500)
    """

    def __init__(self, height: int, width: int, batch: int = 1, F=F0, K=K0, Du: float = DU,
                 Dv: float = DV, dt: float = DT, decay: float | None = DECAY,
                 stencil: str | None = None, clamp: bool = True, device=None,
                 dtype: torch.dtype = torch.float32, check_every: int = 100,
                 depth: int | None = None, compile="auto"):
        dims = (("depth", depth),) if depth is not None else ()
        for name, n in dims + (("height", height), ("width", width), ("batch", batch)):
            if isinstance(n, bool) or int(n) != n or n < 1:
                raise ValueError(f"{name}={n} must be a positive integer")
        nd = 2 if depth is None else 3
        grid = tuple(int(n) for n in ((height, width) if depth is None
                                      else (depth, height, width)))
        if min(grid) < 3:
            raise ValueError(f"grid {'x'.join(map(str, grid))} is too small: the stencil "
                             f"needs >= 3 cells per side")
        stencil = DEFAULT_STENCIL[nd] if stencil is None else stencil
        check_stability(Du, Dv, dt, stencil)
        if stencil_dims(stencil) != nd:
            raise ValueError(f"stencil={stencil!r} is for {stencil_dims(stencil)}D grids but "
                             f"this medium is {nd}D; use one of "
                             f"{sorted(STENCILS if nd == 2 else STENCILS_3D)}")
        if decay is not None and not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay={decay} must be in [0, 1] (1 or None = off)")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype={dtype} must be torch.float32 or torch.float64")
        if compile not in ("auto", True, False):
            raise ValueError(f"compile={compile!r} must be 'auto', True or False")
        self.height, self.width, self.batch = int(height), int(width), int(batch)
        self.depth = None if depth is None else int(depth)
        self.grid, self.ndim = grid, nd
        self.Du, self.Dv, self.dt, self.decay = Du, Dv, dt, decay
        self.stencil, self.clamp = stencil, clamp
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        self.check_every = max(1, int(check_every))
        self.compile = compile
        self._plain = {"U": None, "V": None}   # authoritative (B, *grid) tensors, or
        self._pad = {"U": None, "V": None}     # padded (B, *(grid + 2)) from the kernel
        self._handed = {"U": None, "V": None}  # _version of a plain copy handed out
        self._inner = (Ellipsis, *((slice(1, -1),) * nd))
        shape = (self.batch, *grid)
        self.U = torch.ones(shape, device=self.device, dtype=dtype)
        self.V = torch.zeros(shape, device=self.device, dtype=dtype)
        self.F = _as_field(F, "F", self.batch, grid, self.device, dtype)
        self.K = _as_field(K, "K", self.batch, grid, self.device, dtype)
        self.steps_taken = 0
        self._first_bad_step = torch.full((), -1, device=self.device, dtype=torch.long)
        self._work_done = 0.0       # cell-updates so far (for compile="auto")
        self._verified = (None,)    # identities of the inputs last found finite
        self._last_path = None

    # -- state ---------------------------------------------------------------------------
    # U and V read like plain contiguous tensors. After a compiled step the state lives in
    # padded tensors; reading U or V hands out a contiguous copy of the interior (one
    # copy, cached), and an in-place change to that copy is honoured at the next step
    # (tensor._version tells). Library code that steps in a loop reads the state through
    # field() instead, which costs nothing.
    @property
    def U(self) -> torch.Tensor:
        return self._public("U")

    @U.setter
    def U(self, value) -> None:
        self._plain["U"], self._pad["U"], self._handed["U"] = value, None, None

    @property
    def V(self) -> torch.Tensor:
        return self._public("V")

    @V.setter
    def V(self, value) -> None:
        self._plain["V"], self._pad["V"], self._handed["V"] = value, None, None

    def _public(self, name) -> torch.Tensor:
        plain = self._plain[name]
        if plain is None:
            plain = self._plain[name] = self._pad[name][self._inner].contiguous()
            self._handed[name] = plain._version
        return plain

    def field(self, name: str) -> torch.Tensor:
        """The current U or V without copying (may be a non-contiguous view; read only)."""
        plain = self._plain[name]
        return plain if plain is not None else self._pad[name][self._inner]

    def _padded_field(self, name) -> torch.Tensor:
        """U or V as a padded tensor with a valid periodic halo (packs it if needed)."""
        plain, pad = self._plain[name], self._pad[name]
        if pad is None or (plain is not None and plain._version != self._handed[name]):
            pad = torch.empty((self.batch, *(g + 2 for g in self.grid)), device=self.device,
                              dtype=self.dtype)
            pad[self._inner].copy_(plain)
            self._pad[name] = pad
        self._plain[name], self._handed[name] = None, None
        return fill_halo(pad, self.ndim)

    @property
    def cells(self) -> int:
        """Cells updated per step (batch x grid)."""
        return self.batch * math.prod(self.grid)

    def reset(self, V=None, U=None) -> None:
        """U = 1 (or U), V = 0 (or V); F, K unchanged."""
        shape = (self.batch, *self.grid)
        self.U = (torch.ones(shape, device=self.device, dtype=self.dtype) if U is None
                  else self._state_tensor(U, "U"))
        self.V = (torch.zeros(shape, device=self.device, dtype=self.dtype) if V is None
                  else self._state_tensor(V, "V"))

    def _state_tensor(self, value, name) -> torch.Tensor:
        t = torch.as_tensor(value, device=self.device, dtype=self.dtype)
        if t.shape == self.grid:
            t = t.expand(self.batch, *self.grid)
        if t.shape != (self.batch, *self.grid):
            g = ", ".join(str(s) for s in self.grid)
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected "
                             f"({self.batch}, {g}) or ({g})")
        return t.clone()

    def _check_shapes(self) -> None:
        full = (self.batch, *self.grid)
        for name in ("U", "V"):
            t = self._plain[name]
            if t is not None and (not isinstance(t, torch.Tensor) or t.shape != full
                                  or t.dtype != self.dtype or t.device != self.device):
                setattr(self, name, self._state_tensor(t, name))
        for name in ("F", "K"):
            t = getattr(self, name)
            if (not isinstance(t, torch.Tensor) or t.shape not in (self.grid, full)
                    or t.dtype != self.dtype or t.device != self.device):
                setattr(self, name, _as_field(t, name, self.batch, self.grid, self.device,
                                              self.dtype))

    # -- path choice ---------------------------------------------------------------------
    def _key(self):
        return ("gs", self.Du, self.Dv, self.dt, self.decay, self.stencil, self.clamp,
                self.ndim, self.device.type)

    def _shapes(self):
        return (self.batch, self.grid, tuple(self.F.shape), tuple(self.K.shape), self.dtype)

    def use_compiled(self, steps: int = 1) -> bool:
        """Whether the next `steps` steps would run on the compiled path (see compile=)."""
        if self.compile is False or not compiler_available(self.device):
            return False
        key = self._key()
        if key in _COMPILED and _COMPILED[key] is None:
            return False  # compiling failed before: stay eager
        if self.compile is True:
            return True
        if self.cells < AUTO_COMPILE_MIN_CELLS:
            return False
        if (key, self._shapes()) in _COMPILED_SHAPES:
            return True   # already compiled for exactly this shape: free to use
        return self._work_done + steps * self.cells >= AUTO_COMPILE_WORK

    def _identity(self):
        """Which tensors hold the inputs now (and whether a plain one was modified in
        place). The padded tensors are only ever written by the kernel and fill_halo."""
        stamp = []
        for name in ("U", "V"):
            plain, pad = self._plain[name], self._pad[name]
            if pad is not None and (plain is None or plain._version == self._handed[name]):
                stamp.append((id(pad), None))   # a handed-out copy, unmodified
            else:
                stamp.append((id(plain), plain._version))
        return tuple(stamp) + tuple((id(t), t._version) for t in (self.F, self.K))

    def _holders(self):
        return (self._plain["U"], self._pad["U"], self._plain["V"], self._pad["V"],
                self.F, self.K)

    def _inputs_provably_finite(self) -> bool:
        """Clamp on and finite, moderate U, V, F, K: every later state is finite (values
        stay in [0, 1], no division), so no per-step NaN check is needed. Re-checked
        (one reduction each) only when one of the tensors is replaced or modified."""
        if not self.clamp:
            return False
        ident = self._identity()
        if ident == self._verified[0]:
            return self._verified[1]
        ok = all(_field_finite_and_small(t) for t in
                 (self.field("U"), self.field("V"), self.F, self.K))
        self._verified = (ident, ok, self._holders())  # kept alive: ids stay unique
        return ok

    def trust_finite(self) -> None:
        """Declare the current U, V, F, K finite (for callers that produced them from
        finite inputs by clamped updates, e.g. scarring.evolve); skips the re-check."""
        self._verified = (self._identity(), True, self._holders())

    # -- stepping ------------------------------------------------------------------------
    def step(self, n: int = 1, *, compiled: bool | None = None) -> "GrayScott":
        """Advance every batch member n steps.

        Finiteness is tracked on the device (no host sync) and checked every
        `check_every` steps and at the end of a multi-step call; a non-finite U or V
        raises SimulationError naming the first bad step.
        compiled: None lets `compile=` decide; True/False choose the path for this call
        (a caller that knows how many steps follow, like scarring.evolve, decides once
        with use_compiled(steps)). The compiled path also needs a compiler and inputs
        that are provably finite; otherwise the eager path runs.
        """
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"n={n} must be a non-negative integer")
        n = int(n)
        if n == 0:
            return self
        self._check_shapes()
        fast = self.use_compiled(n) if compiled is None else (
            compiled and self.compile is not False and compiler_available(self.device)
            and _COMPILED.get(self._key(), True) is not None)
        if fast and self._inputs_provably_finite():
            self._step_compiled(n)
        else:
            self._step_eager(n)
        if n > 1:
            self.check_finite()
        return self

    def _after_step(self, track: bool) -> None:
        self.steps_taken += 1
        self._work_done += self.cells
        if track:
            # a sum is NaN/Inf iff some element is (or the state has blown up anyway)
            finite = torch.isfinite(self.field("U").sum() + self.field("V").sum())
            self._first_bad_step = torch.where(
                finite | (self._first_bad_step >= 0), self._first_bad_step,
                torch.full_like(self._first_bad_step, self.steps_taken))
        if self.steps_taken % self.check_every == 0:
            self.check_finite()

    def _step_eager(self, n: int) -> None:
        self._last_path = "eager"
        for _ in range(n):
            self.U, self.V = gray_scott_step(self.field("U"), self.field("V"), self.F,
                                             self.K, self.Du, self.Dv, self.dt, self.decay,
                                             self.stencil, self.clamp)
            self._after_step(track=True)

    def kernel(self):
        """The compiled one-step kernel for this configuration:
        (Up, Vp, F, K) -> (Up', Vp'), padded layout (see _padded_step)."""
        return compiled(_make_kernel(self.Du, self.Dv, self.dt, self.decay, self.stencil,
                                     self.clamp, self.ndim), self._key())

    def _step_compiled(self, n: int) -> None:
        kernel = self.kernel()
        shapes = (self._key(), self._shapes())
        try:
            for i in range(n):
                Up, Vp = kernel(self._padded_field("U"), self._padded_field("V"),
                                self.F, self.K)
                self._pad["U"], self._pad["V"] = Up, Vp
                self._after_step(track=False)
                if i == 0:
                    _COMPILED_SHAPES.add(shapes)
                    self._last_path = "compiled"
            self.trust_finite()
        except SimulationError:
            raise
        except Exception as exc:  # no working compiler after all: fall back, once
            if shapes in _COMPILED_SHAPES:
                raise
            warnings.warn(f"torch.compile failed ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                          f"using the eager stepper", RuntimeWarning)
            _COMPILED[self._key()] = None
            self._step_eager(n)

    def check_finite(self) -> None:
        """Raise SimulationError if U or V became NaN/Inf at any step so far (one sync)."""
        first_bad = int(self._first_bad_step.item())
        U, V = self.field("U"), self.field("V")
        if first_bad < 0 and self._last_path == "compiled" and not (
                bool(torch.isfinite(U.sum() + V.sum()))):
            first_bad = self.steps_taken  # cannot happen with finite inputs; be safe
            self._first_bad_step.fill_(first_bad)
        if first_bad >= 0:
            bad = (~torch.isfinite(U) | ~torch.isfinite(V)).flatten(1).any(1)
            raise SimulationError(
                f"non-finite U or V (NaN/Inf) first at step {first_bad}, batch member(s) "
                f"{bad.nonzero().flatten().tolist()}; check F, K, Du, Dv, dt and the "
                f"initial state (F in [{self.F.min().item():.4g}, {self.F.max().item():.4g}],"
                f" K in [{self.K.min().item():.4g}, {self.K.max().item():.4g}])")
