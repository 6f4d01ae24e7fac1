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
  `torch.compile`d kernel (compiling.py) reads them with plain slices (vectorisable: no
  index arithmetic for the wrap), does the whole update in one pass and writes the new
  U, V in place into the interior of a second padded buffer (two per field, used in
  turn, so no step allocates memory); a few tiny copies then refresh the halo.
  `step_with` fuses a per-step epilogue (scarring.evolve's similarity and scar update)
  into the same kernel. Kernels are compiled for static shapes, one per batch size.
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
import warnings

import torch
import torch.nn.functional as tnf

from common import compiling
from common.compiling import compiler_available  # noqa: F401  (re-exported)

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
# U and V each live in a circularly padded buffer (a one-cell halo), so the kernel reads
# every neighbour with a plain slice: no index arithmetic for the wrap, so it vectorises.
# Two buffers per field alternate ("ping-pong"): each step reads one and writes the
# interior of the other in place, so no step allocates memory (returning fresh
# multi-megabyte tensors instead made a step 1.8-2.2x slower on CPU: docs/findings.md).

def padded_step(Up, Vp, F, K, Du, Dv, dt, decay, stencil, clamp, nd):
    """One step from circularly padded Up, Vp (B, *(grid + 2)) with a valid halo.
    Pure: returns the new interior U, V (B, *grid). The expressions are those of
    gray_scott_step, so the numbers are the same to float rounding."""
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
    return U_new, V_new


def halo_copies(P: torch.Tensor, nd: int) -> list:
    """The (destination, source) views whose copies make the one-cell halo of P (padded
    on its last nd dims) periodic; axis by axis, so edges and corners come out right."""
    pairs = []
    for axis in range(P.dim() - nd, P.dim()):
        n = P.shape[axis] - 2
        pairs += [(P.select(axis, 0), P.select(axis, n)),
                  (P.select(axis, n + 1), P.select(axis, 1))]
    return pairs


def fill_halo(P: torch.Tensor, nd: int, pairs=None) -> torch.Tensor:
    """Make the one-cell halo of P periodic, in place (pairs: halo_copies(P, nd), which a
    stepping loop builds once per buffer, since building the views costs more than
    the copies on small grids)."""
    for dst, src in (pairs if pairs is not None else halo_copies(P, nd)):
        dst.copy_(src)
    return P


def _make_kernel(physics, nd, epilogue=None):
    """The compiled unit: one step from (Up, Vp) into the interiors of (Uo, Vo), then
    optionally epilogue(V_new, F, K, *extra) -> (F_new | None, K_new | None, out), whose
    F_new / K_new are written back into F, K in place. Fusing the epilogue (a similarity,
    a scar update) into the step's kernel saves a pass over the state per step."""
    inner = (Ellipsis, *((slice(1, -1),) * nd))

    def kernel(Up, Vp, F, K, Uo, Vo, *extra):
        U_new, V_new = padded_step(Up, Vp, F, K, *physics, nd)
        Uo[inner].copy_(U_new)
        Vo[inner].copy_(V_new)
        if epilogue is None:
            return None
        F_new, K_new, out = epilogue(V_new, F, K, *extra)
        if F_new is not None:
            F.copy_(F_new)
        if K_new is not None:
            K.copy_(K_new)
        return out
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
    step). Reading U or V gives a snapshot: a reference taken earlier keeps the old state.

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
        # The state of each field lives in exactly one of two forms:
        #   _plain[name]: a plain (B, *grid) tensor (set by the user, or a snapshot), or
        #   _pad[name]:   the padded buffer the compiled kernel last wrote (halo valid);
        #                 _spare[name] is the other buffer of the pair, written next.
        # _handed[name] is the _version of a snapshot handed out from _pad, so that an
        # in-place edit of that snapshot is seen (and honoured) at the next step.
        self._plain = {"U": None, "V": None}
        self._pad = {"U": None, "V": None}
        self._spare = {"U": None, "V": None}
        self._handed = {"U": None, "V": None}
        self._halo = {}   # id(padded buffer) -> its halo_copies views
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
        """A plain contiguous tensor of the state (a copy of the padded interior after a
        compiled step, made once and cached until the next step)."""
        plain = self._plain[name]
        if plain is None:
            plain = self._plain[name] = self._pad[name][self._inner].contiguous()
            self._handed[name] = plain._version
        return plain

    def field(self, name: str) -> torch.Tensor:
        """The current U or V without copying: read-only, and valid only until the next
        step (on the compiled path it is a view of a buffer that a later step rewrites).
        Library code that steps in a loop reads the state this way."""
        plain = self._plain[name]
        return plain if plain is not None else self._pad[name][self._inner]

    def _padded(self, name) -> tuple[torch.Tensor, torch.Tensor]:
        """(current, spare) padded buffers of U or V, the current one holding the state
        with a valid halo (packed from the plain tensor if that is where the state is)."""
        plain, pad, spare = self._plain[name], self._pad[name], self._spare[name]
        if pad is None or (plain is not None and plain._version != self._handed[name]):
            shape = (self.batch, *(g + 2 for g in self.grid))
            if spare is None or spare.shape != shape or spare.dtype != self.dtype:
                spare = torch.empty(shape, device=self.device, dtype=self.dtype)
            spare[self._inner].copy_(plain)
            pad, spare = fill_halo(spare, self.ndim), pad
            self._pad[name], self._handed[name] = pad, plain._version
        if spare is None:
            spare = torch.empty_like(pad)
        self._spare[name] = spare
        return pad, spare

    def _halo_pairs(self, buf) -> list:
        pairs = self._halo.get(id(buf))
        if pairs is None or pairs[0][0]._base is not buf:
            if len(self._halo) >= 8:   # buffers were reallocated: forget the old ones
                self._halo.clear()
            pairs = self._halo[id(buf)] = halo_copies(buf, self.ndim)
        return pairs

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
    def _key(self, epilogue_key=None):
        return ("gs", self.Du, self.Dv, self.dt, self.decay, self.stencil, self.clamp,
                self.ndim, self.device.type, epilogue_key)

    def _shapes(self):
        return (self.batch, self.grid, tuple(self.F.shape), tuple(self.K.shape), self.dtype)

    def use_compiled(self, steps: int = 1, epilogue_key=None) -> bool:
        """Whether the next `steps` steps would run on the compiled path (see compile=)."""
        if self.compile is False or not compiling.compiler_available(self.device):
            return False
        key = self._key(epilogue_key)
        if compiling.failed(key):
            return False  # compiling failed before: stay eager
        if self.compile is True:
            return True
        if self.cells < AUTO_COMPILE_MIN_CELLS:
            return False
        if compiling.ran(key, self._shapes()):
            return True   # already compiled for exactly this shape: free to use
        return self._work_done + steps * self.cells >= AUTO_COMPILE_WORK

    def _identity(self):
        """Which tensors hold the inputs now (and whether a plain one was modified in
        place). The padded buffers are only ever written by the kernel and fill_halo."""
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

    def _fast(self, steps, compiled, epilogue_key=None) -> bool:
        if compiled is None:
            fast = self.use_compiled(steps, epilogue_key)
        else:
            fast = (compiled and self.compile is not False
                    and compiling.compiler_available(self.device)
                    and not compiling.failed(self._key(epilogue_key)))
        return fast and self._inputs_provably_finite()

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
        if not (self._fast(n, compiled) and self._step_compiled(n)):
            self._step_eager(n)
        if n > 1:
            self.check_finite()
        return self

    def step_with(self, epilogue, key, *args, compiled: bool | None = None,
                  keeps_finite: bool = False):
        """One step, then `epilogue(V, F, K, *args) -> (F_new, K_new, out)` on the new V;
        returns out. F_new / K_new (or None to leave them) replace F and K, which must
        be per member, (B, *grid). On the compiled path the epilogue is fused into
        the step's kernel (no extra pass over the state, no extra launch).

        epilogue must be pure (tensors in, tensors out) and `key` (hashable) must identify
        it and its constants: it names the compiled kernel. keeps_finite=True declares
        that it maps finite F, K to finite F, K (e.g. a clamped update), which spares a
        finiteness check of F, K before the next compiled step. scarring.evolve uses this
        for the similarity and the scar update of every training step.
        """
        self._check_shapes()
        if self.F.shape != (self.batch, *self.grid) or self.K.shape != self.F.shape:
            raise ValueError(f"step_with needs F and K per member, shape ({self.batch}, "
                             f"{', '.join(map(str, self.grid))}); got F {tuple(self.F.shape)}"
                             f", K {tuple(self.K.shape)}")
        out = None
        fused = self._fast(1, compiled, key)
        if fused:
            fused, out = self._step_compiled(1, epilogue, key, args)
            if fused and keeps_finite:
                self.trust_finite()
        if not fused:
            self._step_eager(1)
            F_new, K_new, out = epilogue(self.field("V"), self.F, self.K, *args)
            if F_new is not None:
                self.F = F_new
            if K_new is not None:
                self.K = K_new
        return out

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

    def kernel(self, epilogue=None, key=None):
        """The compiled kernel for this configuration (see _make_kernel):
        (Up, Vp, F, K, Uo, Vo, *extra) -> epilogue's out (None without one)."""
        physics = (self.Du, self.Dv, self.dt, self.decay, self.stencil, self.clamp)
        return compiling.compiled(_make_kernel(physics, self.ndim, epilogue),
                                  self._key(key))

    def _step_compiled(self, n: int, epilogue=None, key=None, args=()):
        """n compiled steps. Returns False if compiling is not possible here after all
        (the caller then steps eagerly); with an epilogue, returns (True, its out)."""
        full_key, shapes = self._key(key), self._shapes()
        kernel = self.kernel(epilogue, key)
        out = None
        try:
            for i in range(n):
                (Up, Uo), (Vp, Vo) = self._padded("U"), self._padded("V")
                out = kernel(Up, Vp, self.F, self.K, Uo, Vo, *args)
                for name, written, read in (("U", Uo, Up), ("V", Vo, Vp)):
                    fill_halo(written, self.ndim, self._halo_pairs(written))
                    self._pad[name], self._spare[name] = written, read
                    self._plain[name], self._handed[name] = None, None
                if i == 0:
                    compiling.mark_ran(full_key, shapes)
                    self._last_path = "compiled"
                self._after_step(track=False)
        except SimulationError:
            raise
        except Exception as exc:  # no working compiler after all: fall back, once
            if compiling.ran(full_key, shapes):
                raise
            warnings.warn(f"torch.compile failed ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                          f"using the eager stepper", RuntimeWarning)
            compiling.mark_failed(full_key)
            return (False, None) if epilogue is not None else False
        if epilogue is None:
            self.trust_finite()   # clamped steps from finite inputs stay finite
        return (True, out) if epilogue is not None else True

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
