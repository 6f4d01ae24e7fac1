"""The Gray-Scott substrate: a batched explicit-Euler stepper with per-cell feed/kill.

The physics, exactly as the reference study runs it (docs/protocol.md):

    lapU, lapV = stencil(U), stencil(V)               # periodic (torus) boundary
    uvv = U * V * V
    U'  = U + dt * (Du * lapU - uvv + F * (1 - U))
    V'  = V + dt * (Dv * lapV + uvv - (K + F) * V)
    V' *= decay                                      # 0.9995 every step
    U', V' = clamp(U', 0, 1), clamp(V', 0, 1)
    U', V' = 0 where below FLUSH_BELOW               # no subnormal floats (see there)

States are (B, H, W), or (B, D, H, W) for a 3D medium: B seeds or patterns advance in
one call. F and K are one grid-shaped field shared by the batch or one per member.

`gray_scott_step` is the pure reference step (tensors in, tensors out). `GrayScott` holds
the state as plain tensors and owns the loop, `GrayScott.run`, on one of three paths that
give the same numbers to float rounding: eager (gray_scott_step, a finiteness flag kept
on the device), compiled (common/compiling.py: one torch.compile'd kernel per step,
reading circularly padded ping-pong buffers with plain slices, a per-step hook fused in)
or, on the CPU, the hand-written kernel (common/cpu_kernel.py, numba: bit-identical to
the eager step, quiet ground skipped exactly, no compiler needed at run time).
With clamp on and finite inputs every value stays in [0, 1], so the fast paths check
finiteness once per run (and replay the run eagerly to name the step if it failed).
compile="auto": a 2D CPU medium runs on the kernel (with no hook, or one it fuses:
fused_feed; SUBSTRATE_NO_KERNEL switches it off); otherwise only runs big enough to repay
compiling (AUTO_COMPILE_*) are compiled, when a C++ compiler (CPU) or Triton (CUDA) is
present. compile=True and False name the compiled and the eager path. Nothing in the
loop waits for the host.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings

import torch
import torch.nn.functional as tnf

from common import compiling, limits
from common.compiling import compiler_available  # noqa: F401  (re-exported)
from protocol import Protocol

# Reference constants (docs/protocol.md, section 1): the defaults of a GrayScott medium.
_REFERENCE = Protocol()
F0, K0 = _REFERENCE.f0, _REFERENCE.k0
DU, DV, DT, DECAY = _REFERENCE.du, _REFERENCE.dv, _REFERENCE.dt, _REFERENCE.decay

# Stencils. The reference one has no 1/h^2 factor; its isotropic diffusion coefficient
# is 0.3, so the *effective* diffusion constants are 0.3 * Du and 0.3 * Dv.
NINE_POINT = ((0.05, 0.2, 0.05), (0.2, -1.0, 0.2), (0.05, 0.2, 0.05))
FIVE_POINT = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
STENCILS = {"nine_point": NINE_POINT, "five_point": FIVE_POINT}

# Largest |eigenvalue| of each stencil on a periodic grid (reached at the checkerboard
# mode); check_stability explains how it bounds dt.
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

# Physical range of the feed and kill rates (per step, dimensionless): a negative rate
# or one above 1 is not a Gray-Scott medium (and would make the reaction bound moot).
FIELD_RANGE = (0.0, 1.0)

# U and V below this magnitude are set to exactly 0 after every step. Outside a pattern
# V decays geometrically toward 0 and would pass through subnormal floats (below 1.2e-38
# in float32), which x86 handles in slow microcode: 2-3x slower steps on the study's own
# states. At 1e-18 not even V * V (the reaction's smallest product) is subnormal. Far
# below anything measurable: the metrics see changes of 1e-7 (float32 rounding), and
# the homogeneous state U = 1, V = 0 is linearly stable (V that small only decays).
FLUSH_BELOW = 1e-18

# compile="auto": compile only when a step covers at least this many cells (batch x
# grid) and the run has at least this many cell-updates ahead of it (or behind it).
AUTO_COMPILE_MIN_CELLS = 1 << 17
AUTO_COMPILE_WORK = 2e8
# Peak memory of a run, in state-sized tensors (B x grid): U, V, two padded buffers
# each, F, K per member with their hook copies, and the eager path's temporaries.
MEMORY_TENSORS = 14


_KERNEL_DECLINED: set = set()   # hooks the kernel did not fuse (warned once each)


def kernel_available() -> bool:
    """True when the hand-written CPU kernel (numba) can run here; the environment
    variable SUBSTRATE_NO_KERNEL switches it off (the compiled or eager path then)."""
    if os.environ.get("SUBSTRATE_NO_KERNEL"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def fused_feed(hook):
    """(gain, level, lit) when hook is a feed inhibition the CPU kernel runs inside its
    step: a bound `epilogue` of an object with `kernel_feed_inhibition()`, promising, per
    member, K unchanged and out None, either (lit < 0, scarring.GlobalInhibition)
    F = F_base * clamp(1 - gain * (mean V - level), 0, 1), or (lit >= 0, the lit-area
    inhibition of models/media.py) F = F_base * clamp(1 - gain * max((share of cells
    with V > lit - level) / level, 0), 0, 1). None for any other hook."""
    owner = getattr(hook, "__self__", None)
    spec = getattr(owner, "kernel_feed_inhibition", None)
    if spec is None or getattr(hook, "__name__", None) != "epilogue":
        return None
    gain, level, *lit = spec()
    return float(gain), float(level), float(lit[0]) if lit else -1.0


def fused_scar(hook, hook_args):
    """The fused scar rule the CPU kernel runs inside its step when hook is a training
    hook that offers one: `hook.kernel_scar(*hook_args)` returning a dict with "target"
    ((1 or B, H, W) tensor), "gate", "empty" and "constants" (common.cpu_kernel's
    scar_arguments), and "out": V -> the hook's out on that V (what on_record gets).
    None for any other hook, or when kernel_scar declines (returns None)."""
    spec = getattr(hook, "kernel_scar", None)
    return None if spec is None else spec(*hook_args)


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


def _number(name, value, low=None, high=None, low_open=False) -> float:
    """value as a finite float in [low, high] (or (low, high]), else one clear ValueError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (math.isfinite(value) and (low is None or value > low or (value == low and not low_open))
              and (high is None or value <= high))
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        span = f"{'(' if low_open else '['}{lo}, {'inf' if high is None else high}]"
        raise ValueError(f"{name}={value!r} must be a finite number in {span}")
    return value


def check_stability(Du: float, Dv: float, dt: float, stencil: str = "nine_point", *,
                    F_max: float = 0.0, K_max: float = 0.0, V_max: float = 0.0) -> None:
    """Raise ValueError unless explicit Euler is stable for these constants.

    Linearise one step about a state (U, V) with rates F, K and freeze the coefficients
    (von Neumann analysis, species by species). A Fourier mode of U then decays at rate
    Du * mu + r_U and one of V at Dv * mu + r_V, with mu in [0, bound] the stencil's
    eigenvalues (STENCIL_BOUND: the checkerboard mode) and r the reaction's own decay
    rate, read off the equations:
        r_U = V^2 + F     from  d/dU [-U V^2 + F (1 - U)]
        r_V = F + K       from  d/dV [U V^2 - (F + K) V], whose +2UV part is growth:
                          the instability that makes patterns, not a numerical one.
    Euler multiplies the mode by 1 - dt * rate, which stays >= -1 (no growing
    checkerboard) iff
        dt * (Du * bound + V_max^2 + F_max) <= 2   and   dt * (Dv * bound + F_max + K_max) <= 2.
    F_max = K_max = V_max = 0 gives the pure-diffusion bound. GrayScott checks the bound
    with the largest F, K and V of the state at construction and at the start of every
    run (V_max = 1, the clamp's ceiling, covers every clamped state: the reference
    constants pass it with F <= 0.74). Example: dt = 12, Du = Dv = 0.01 passes the
    diffusion bound but fails this one as soon as V exceeds 0.34.
    """
    bound = _bound(stencil)
    dt = _number("dt", dt, 0.0, low_open=True)
    F_max = _number("F_max", F_max, *FIELD_RANGE)
    K_max = _number("K_max", K_max, *FIELD_RANGE)
    V_max = _number("V_max", V_max, 0.0, 1.0)
    for name, D, rate, what in (("Du", Du, V_max ** 2 + F_max, "V_max^2 + F_max"),
                                ("Dv", Dv, F_max + K_max, "F_max + K_max")):
        D = _number(name, D, 0.0)
        product = dt * (D * bound + rate)
        if product > STABILITY_LIMIT:
            reaction = f" + {what} = {rate:.4g}" if rate else ""
            raise ValueError(
                f"unstable: dt * ({name} * {bound}{reaction}) = {product:.4g} exceeds "
                f"{STABILITY_LIMIT} for the {stencil} stencil: lower dt to <= "
                f"{STABILITY_LIMIT / (D * bound + rate):.4g} (or {name} to <= "
                f"{max(STABILITY_LIMIT / dt - rate, 0.0) / bound:.4g}) (dt={dt}, "
                f"{name}={D}, F_max={F_max:.4g}, K_max={K_max:.4g}, V_max={V_max:.4g})")


# ---- stencils and the step --------------------------------------------------------------

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


def _finish(X: torch.Tensor, clamp: bool) -> torch.Tensor:
    """Clamp to [0, 1] (if clamp) and set |X| < FLUSH_BELOW to 0 (module docstring)."""
    if clamp:
        X = X.clamp(0.0, 1.0)
        return torch.where(X < FLUSH_BELOW, 0.0, X)
    return torch.where(X.abs() < FLUSH_BELOW, 0.0, X)


def _finish_(X: torch.Tensor, clamp: bool) -> torch.Tensor:
    """_finish in place (bit-identical), for the eager path's fresh temporaries."""
    if clamp:
        return tnf.threshold_(X.clamp_(0.0, 1.0), FLUSH_BELOW, 0.0)  # x <= t -> 0
    return X.masked_fill_(X.abs() < FLUSH_BELOW, 0.0)


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
        return _finish(U_new, clamp), _finish(V_new, clamp)
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
    return _finish_(U_new, clamp), _finish_(V_new, clamp)


# ---- the compiled kernel ------------------------------------------------------------------

def _inner(nd):
    return (Ellipsis, *((slice(1, -1),) * nd))


def padded_step(Up, Vp, F, K, Du, Dv, dt, decay, stencil, clamp, nd):
    """One step from circularly padded Up, Vp (B, *(grid + 2)) with a valid halo.
    Pure: returns the new interior U, V (B, *grid). The expressions are those of
    gray_scott_step, so the numbers are the same to float rounding."""
    U, V = Up[_inner(nd)], Vp[_inner(nd)]
    uvv = U * V * V
    U_new = U + dt * (Du * _stencil_of_padded(Up, stencil) - uvv + F * (1.0 - U))
    V_new = V + dt * (Dv * _stencil_of_padded(Vp, stencil) + uvv - (K + F) * V)
    if decay is not None and decay != 1.0:
        V_new = V_new * decay
    return _finish(U_new, clamp), _finish(V_new, clamp)


def _make_kernel(physics, nd, hook, constants):
    """The compiled unit: one step from (Up, Vp) into the interiors of (Uo, Vo), then
    hook(V_new, F, K, *hook_args) -> (F_new, K_new, out), written back into F, K in
    place; returns out. hook_args are the kernel's tensor arguments merged with the
    baked-in constants ({position: value}). Fusing the hook (a similarity, a scar
    update) into the step saves a pass over the state per step."""
    def kernel(Up, Vp, F, K, Uo, Vo, *tensors):
        U_new, V_new = padded_step(Up, Vp, F, K, *physics, nd)
        Uo[_inner(nd)].copy_(U_new)
        Vo[_inner(nd)].copy_(V_new)
        if hook is None:
            return None
        F_new, K_new, out = hook(V_new, F, K, *_merge(tensors, constants))
        F.copy_(F_new)
        K.copy_(K_new)
        return out
    return kernel


def _merge(tensors, constants) -> tuple:
    """The hook's arguments: tensors in order, constants ({position: value}) in place."""
    it = iter(tensors)
    return tuple(constants[i] if i in constants else next(it)
                 for i in range(len(tensors) + len(constants)))


# ---- the stepper -----------------------------------------------------------------------------

def _device(device) -> torch.device:
    """device (default: cuda if present, else cpu) as a torch.device that holds data."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device (e.g. cpu, cuda)") from exc
    if device.type == "meta" or (device.type == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"device={device} cannot run the medium here (no data on meta; "
                         f"CUDA available: {torch.cuda.is_available()})")
    return device


def _count(name, n, least=0) -> int:
    """n as an int >= least (an integral float is accepted), else a clear ValueError."""
    ok = isinstance(n, numbers.Real) and not isinstance(n, bool) and math.isfinite(n) \
        and int(n) == n and n >= least
    if not ok:
        raise ValueError(f"{name}={n!r} must be an integer >= {least}")
    return int(n)


class GrayScott:
    """A batch of Gray-Scott media on a periodic H x W (or D x H x W) grid.

    U, V (B, *grid) and F, K (grid-shaped shared, or (B, *grid) per member) are plain
    tensor attributes: read them, or assign new ones (checked at the next run). Du, Dv,
    dt, decay, stencil and clamp are plain attributes too, re-checked at every run.
    depth=None gives a 2D (B, H, W) medium; depth=D a 3D (B, D, H, W) one (stencil
    default "seven_point", or "twentyseven_point"). compile: "auto", True or False (see
    the module docstring). Every argument is checked here, before anything is
    allocated: F and K finite and in FIELD_RANGE, the stability bound (check_stability)
    with their largest values, and the memory the run will need.

    Example:
        gs = GrayScott(256, 256, batch=8)
        gs.V = cue                      # (8, 256, 256)
        gs.run(500)
    """

    def __init__(self, height: int, width: int, batch: int = 1, F=F0, K=K0, Du: float = DU,
                 Dv: float = DV, dt: float = DT, decay: float | None = DECAY,
                 stencil: str | None = None, clamp: bool = True, device=None,
                 dtype: torch.dtype = torch.float32, depth: int | None = None,
                 compile="auto"):
        dims = (("depth", depth),) if depth is not None else ()
        grid = tuple(_count(name, n, 1) for name, n in
                     dims + (("height", height), ("width", width)))
        self.batch = _count("batch", batch, 1)
        if min(grid) < 3:
            raise ValueError(f"grid {'x'.join(map(str, grid))} is too small: the stencil "
                             f"needs >= 3 cells per side")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype={dtype} must be torch.float32 or torch.float64")
        if compile not in ("auto", True, False):
            raise ValueError(f"compile={compile!r} must be 'auto', True or False")
        self.grid, self.ndim = grid, len(grid)
        self.height, self.width = grid[-2], grid[-1]
        self.depth = grid[0] if depth is not None else None
        self.Du, self.Dv, self.dt, self.decay = Du, Dv, dt, decay
        self.stencil = DEFAULT_STENCIL[self.ndim] if stencil is None else stencil
        self.clamp, self.compile, self.dtype = clamp, compile, dtype
        self.device = _device(device)
        self._check_physics()
        self._check_memory()
        self.F, self.K = self._coerce(F, "F"), self._coerce(K, "K")
        self.reset()
        self._check_state()
        self.steps_taken = 0      # steps run since construction
        self.last_path = None     # "eager" or "compiled": the path of the last run
        self._work_done = 0.0     # cell-updates so far (for compile="auto")

    @property
    def cells(self) -> int:
        """Cells updated per step (batch x grid)."""
        return self.batch * math.prod(self.grid)

    # -- checks ------------------------------------------------------------------------------
    def _check_physics(self) -> None:
        """The scalar constants: cheap, so re-checked at the start of every run."""
        _number("Du", self.Du, 0.0)
        _number("Dv", self.Dv, 0.0)
        _number("dt", self.dt, 0.0, low_open=True)
        if self.decay is not None:
            _number("decay", self.decay, 0.0, 1.0)
        if self.clamp not in (True, False):
            raise ValueError(f"clamp={self.clamp!r} must be True or False")
        if stencil_dims(self.stencil) != self.ndim:
            raise ValueError(f"stencil={self.stencil!r} is for {stencil_dims(self.stencil)}D "
                             f"grids but this medium is {self.ndim}D; use one of "
                             f"{sorted(STENCILS if self.ndim == 2 else STENCILS_3D)}")
        check_stability(self.Du, self.Dv, self.dt, self.stencil)

    def _check_memory(self) -> None:
        need = MEMORY_TENSORS * self.batch * math.prod(g + 2 for g in self.grid) \
            * self.dtype.itemsize
        limits.check(need, f"a {'x'.join(map(str, self.grid))} grid with batch {self.batch} "
                     f"in {str(self.dtype).replace('torch.', '')} ({MEMORY_TENSORS} "
                     f"state-sized tensors)", self.device, "use a smaller grid or batch")

    def _check_state(self) -> None:
        """U, V, F, K: shapes (coerced to this medium's dtype and device), finite, F and K
        in FIELD_RANGE, and the stability bound with their largest values (one host
        sync)."""
        full = (self.batch, *self.grid)
        for name in "UVFK":
            t = getattr(self, name)
            if not (isinstance(t, torch.Tensor) and t.dtype == self.dtype
                    and t.device == self.device
                    and t.shape in ((full, self.grid) if name in "FK" else (full,))):
                setattr(self, name, self._coerce(t, name))
        tensors = (self.U, self.V, self.F, self.K)
        lo, hi = torch.stack([torch.stack(torch.aminmax(t.detach())) for t in tensors]).T \
            .double().tolist()
        for name, a, b in zip("UVFK", lo, hi):
            if not (math.isfinite(a) and math.isfinite(b)):
                raise ValueError(f"{name} has NaN or Inf values (min {a}, max {b}); every "
                                 f"value of U, V, F, K must be finite")
        for name, a, b in zip("FK", lo[2:], hi[2:]):
            if a < FIELD_RANGE[0] or b > FIELD_RANGE[1]:
                raise ValueError(f"{name} spans [{a:.4g}, {b:.4g}]; feed and kill rates "
                                 f"must lie in {list(FIELD_RANGE)}")
        check_stability(self.Du, self.Dv, self.dt, self.stencil, F_max=hi[2], K_max=hi[3],
                        V_max=min(max(abs(lo[1]), abs(hi[1])), 1.0))

    def _coerce(self, value, name) -> torch.Tensor:
        """value as a tensor of this medium (a copy): U, V (B, *grid), a grid-shaped one
        repeated per member; F, K a scalar, grid-shaped (shared) or (B, *grid)."""
        full, field = (self.batch, *self.grid), name in ("F", "K")
        if field and isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = torch.full(self.grid, _number(name, value, *FIELD_RANGE))
        t = torch.as_tensor(value, device=self.device, dtype=self.dtype)
        if not field and t.shape == self.grid:
            t = t.expand(full)
        if t.shape not in ((self.grid, full) if field else (full,)):
            g = ", ".join(map(str, self.grid))
            want = (f"a scalar, ({g}) shared by the batch, or ({self.batch}, {g}) per member"
                    if field else f"({self.batch}, {g}) or ({g})")
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {want}")
        return t.clone()

    def reset(self, V=None, U=None) -> None:
        """U = 1 (or U), V = 0 (or V); F, K unchanged."""
        shape = (self.batch, *self.grid)
        self.U = (torch.ones(shape, device=self.device, dtype=self.dtype) if U is None
                  else self._coerce(U, "U"))
        self.V = (torch.zeros(shape, device=self.device, dtype=self.dtype) if V is None
                  else self._coerce(V, "V"))

    # -- saving and loading ----------------------------------------------------------------
    def physics(self) -> dict:
        """The scalar constants of this medium, as GrayScott keyword arguments."""
        return {"Du": self.Du, "Dv": self.Dv, "dt": self.dt, "decay": self.decay,
                "stencil": self.stencil, "clamp": self.clamp}

    def save(self, path, *, seeds=None, rule=None, protocol=None, extra=None):
        """Write U, V, F, K, the steps taken and the physics constants to one state file
        (common.state.save_state; seeds default to 0 .. batch-1)."""
        from common.state import save_state

        return save_state(path, U=self.U, V=self.V, F=self.F, K=self.K,
                          step=self.steps_taken,
                          seeds=list(range(self.batch)) if seeds is None else seeds,
                          rule=rule, protocol=protocol, extra=extra, substrate=self.physics())

    @classmethod
    def load(cls, path, device=None, compile="auto") -> "GrayScott":
        """A medium rebuilt from a state file (common.state.load_state): its grid, batch,
        dtype, U, V, F, K, steps taken and physics constants (the defaults where the file
        has none); the rest of the file (seeds, rule, protocol, extra) is `.saved`."""
        from common.state import load_state

        state = load_state(path)
        U = state["U"]
        grid = tuple(U.shape[1:])
        physics = dict(state["substrate"] or {})
        unknown = sorted(set(physics) - {"Du", "Dv", "dt", "decay", "stencil", "clamp"})
        if unknown:
            raise ValueError(f"state file {path}: unknown substrate constants {unknown}")
        gs = cls(*grid[-2:], batch=U.shape[0], F=state["F"], K=state["K"], device=device,
                 dtype=U.dtype, depth=grid[0] if len(grid) == 3 else None, compile=compile,
                 **physics)
        gs.reset(U=U, V=state["V"])
        gs._check_state()
        gs.steps_taken = state["step"]
        gs.saved = {k: state[k] for k in ("seeds", "rule", "protocol", "extra", "step",
                                          "package_version", "git_commit")}
        return gs

    # -- running -------------------------------------------------------------------------------
    def step(self, n: int = 1) -> "GrayScott":
        """Advance every batch member n steps (run(n)); returns self."""
        self.run(n)
        return self

    def run(self, steps: int, hook=None, hook_args=(), record_every: int = 0,
            on_record=None) -> None:
        """Advance every batch member `steps` steps, in one loop.

        hook(V, F, K, *hook_args) -> (F_new, K_new, out), if given, runs after every step
        on the new V (a scar update, a similarity): F_new, K_new become F, K (per member,
        (B, *grid): a shared F, K is expanded for the run). On the compiled path it is
        fused into the step's kernel, so it must be pure tensor arithmetic; hook itself
        and the non-tensor hook_args (hashable) name the compiled kernel, so a new value
        of either compiles a new one.
        on_record(step, U, V, out), if given, is called after step s = record_every,
        2 * record_every, ... and after the last step (s counts from 1 in this run);
        U, V are views valid only during the call, out is the hook's (None without a
        hook). Compute what you want to keep there, on the device: the loop never
        waits for the host.

        Checked before the first step: every constant (they may have been reassigned),
        the shapes of U, V, F, K, their finiteness and range, and the stability bound.
        A state that still becomes NaN/Inf (e.g. clamp off and blowing up) raises
        SimulationError naming the first bad step.
        """
        steps, record_every = _count("steps", steps), _count("record_every", record_every)
        self._check_physics()
        self._check_state()
        if steps == 0:
            return
        loop = dict(steps=steps, hook=hook, record_every=record_every or steps,
                    on_record=on_record)
        tensors = [a for a in hook_args if isinstance(a, torch.Tensor)]
        constants = {i: a for i, a in enumerate(hook_args) if not isinstance(a, torch.Tensor)}
        key = self._key(hook, constants)
        result = None
        fused = self._kernel_fusion(hook, hook_args)
        if fused is not None:
            result = self._run_kernel(hook_args=tuple(hook_args), fused=fused, **loop)
        elif self._use_compiled(steps, key):
            result = self._run_compiled(key, tensors, constants, **loop)
        if result is None:
            result = self._run_eager(hook_args=tuple(hook_args), **loop) + ("eager",)
        self._finish_run(steps, *result)

    def _key(self, hook, constants):
        physics = (self.Du, self.Dv, self.dt, self.decay, self.stencil, self.clamp)
        return ("gray_scott", physics, self.ndim, self.device.type, hook,
                tuple(sorted(constants.items())))

    def _kernel_fusion(self, hook, hook_args):
        """(feed, scar) when the hand-written CPU kernel serves the run, else None. It
        serves compile="auto" runs of 2D CPU media with no hook (None, None) or one it
        fuses (fused_feed's or fused_scar's spec); any other hook runs on the compiled
        path (or eagerly), which fuses arbitrary tensor code: said once per hook."""
        if not (self.compile == "auto" and self.device.type == "cpu" and self.ndim == 2
                and kernel_available()):
            return None
        if hook is None:
            return None, None
        feed = fused_feed(hook)
        scar = None if feed is not None else fused_scar(hook, hook_args)
        if feed is not None or scar is not None:
            return feed, scar
        name = getattr(hook, "__qualname__", repr(hook))
        kinds = [type(a).__name__ for a in hook_args if not isinstance(a, (torch.Tensor, int))]
        if kinds:   # a hook the kernel fuses for some arguments (a rule) names them
            name += f" with {', '.join(kinds)}"
        if name not in _KERNEL_DECLINED:
            _KERNEL_DECLINED.add(name)
            warnings.warn(f"the CPU kernel does not fuse the hook {name}: its runs take the "
                          f"compiled path (or the eager one)", RuntimeWarning, stacklevel=4)
        return None

    def _run_kernel(self, steps, hook, hook_args, record_every, on_record, fused):
        """The run on the CPU kernel (common/cpu_kernel.py): (U, V, F, K, first bad step
        or -1, "kernel"). fused: _kernel_fusion's (feed, scar), run inside the kernel's
        step."""
        from common import cpu_kernel as ck
        ck.use_threads(torch.get_num_threads())
        feed, scar = fused
        # two buffers per field: step s reads A (s odd) or B (s even) and writes the other
        A_U, A_V = self.U.contiguous().clone(), self.V.contiguous().clone()
        B_U, B_V = torch.empty_like(A_U), torch.empty_like(A_V)
        F, K = self._fields_for(hook)
        F, K = (X.reshape(-1, *self.grid).contiguous() for X in (F, K))
        F_run, refresh = F, False
        state = ck.State(self.batch, self.height, self.width, self.dtype)
        if feed is not None:   # hook_args = (F_base,): F = F_base * factor after each step
            F_run = hook_args[0].to(self.dtype).expand(self.batch, *self.grid).contiguous()
            refresh = not torch.equal(F_run, F.expand_as(F_run))
        args = ck.arguments(self.dtype, self.Du, self.Dv, self.dt, self.decay, self.stencil,
                            self.clamp, FLUSH_BELOW, feed)
        scar_args = None
        if scar is not None:
            target = scar["target"].to(self.dtype).reshape(-1, *self.grid)
            scar_args = ck.scar_arguments(self.dtype, target.numpy(), scar["gate"],
                                          scar["empty"], scar["constants"])
        arrays = [t.numpy() for t in (A_U, A_V, B_U, B_V)]
        done = 0
        while done < steps:
            end = min(steps, (done // record_every + 1) * record_every)
            start = done + 1
            if refresh and done == 0:     # step 1 reads F; the rest F_base * factor
                ck.run(*arrays, F.numpy(), K.numpy(), 1, 1, state, args)
                state.step_everything_next()
                start = 2
            if start <= end:
                ck.run(*arrays, F_run.numpy(), K.numpy(), start, end, state, args, scar_args)
            done = end
            if on_record is not None:
                U_now, V_now = (B_U, B_V) if done % 2 else (A_U, A_V)
                on_record(done, U_now, V_now, None if scar is None else scar["out"](V_now))
        U, V = (B_U, B_V) if steps % 2 else (A_U, A_V)
        if feed is not None:
            F = F_run * torch.from_numpy(state.scale[:, 1]).view(-1, *[1] * self.ndim)
        elif scar is None:
            F, K = self.F, self.K
        if self.clamp or bool(torch.isfinite(U.sum() + V.sum())):
            return U, V, F, K, -1, "kernel"
        # a blow-up (clamp off): replay eagerly to name the step
        first_bad = self._run_eager(steps, hook, hook_args, steps, None)[-1]
        return U, V, F, K, first_bad if first_bad >= 0 else None, "kernel"

    def _use_compiled(self, steps, key) -> bool:
        if self.compile is False or not compiling.compiler_available(self.device) \
                or compiling.failed(key):
            return False
        if self.compile is True:
            return True
        if self.cells < AUTO_COMPILE_MIN_CELLS:
            return False
        return (compiling.ran(key, self._shapes())
                or self._work_done + steps * self.cells >= AUTO_COMPILE_WORK)

    def _shapes(self):
        return (self.batch, self.grid, tuple(self.F.shape), tuple(self.K.shape), self.dtype)

    def _fields_for(self, hook):
        """F, K for the run: per-member copies when a hook rewrites them."""
        if hook is None:
            return self.F, self.K
        full = (self.batch, *self.grid)
        return self.F.expand(full).clone(), self.K.expand(full).clone()

    def _run_eager(self, steps, hook, hook_args, record_every, on_record):
        """The run on the eager path: (U, V, F, K, first bad step of the run or -1)."""
        U, V = self.U, self.V
        F, K = self._fields_for(hook)
        first_bad = torch.full((), -1, device=self.device, dtype=torch.long)
        for i in range(1, steps + 1):
            U, V = gray_scott_step(U, V, F, K, self.Du, self.Dv, self.dt, self.decay,
                                   self.stencil, self.clamp)
            out = None
            if hook is not None:
                F, K, out = hook(V, F, K, *hook_args)
            # a sum is NaN/Inf iff some element is (or the state has blown up anyway)
            finite = torch.isfinite(U.sum() + V.sum())
            first_bad = torch.where(finite | (first_bad >= 0), first_bad,
                                    torch.full_like(first_bad, i))
            if on_record is not None and (i % record_every == 0 or i == steps):
                on_record(i, U, V, out)
        return U, V, F, K, int(first_bad)

    def _run_compiled(self, key, tensors, constants, steps, hook, record_every, on_record):
        """The run on the compiled path: (U, V, F, K, first bad step or -1, "compiled"),
        or None if compiling turned out to be impossible here (nothing has changed
        then, and the caller runs eagerly)."""
        physics = (self.Du, self.Dv, self.dt, self.decay, self.stencil, self.clamp)
        kernel = compiling.compiled(_make_kernel(physics, self.ndim, hook, constants), key)
        nd, inner = self.ndim, _inner(self.ndim)
        # ping-pong: step i reads buffers[(i - 1) % 2] and writes buffers[i % 2]
        buffers = [(compiling.pad(self.U, nd), compiling.pad(self.V, nd))]
        buffers.append(tuple(torch.empty_like(t) for t in buffers[0]))
        F, K = self._fields_for(hook)
        halos = [compiling.halo_copies(U, nd) + compiling.halo_copies(V, nd)
                 for U, V in buffers]   # built once per run: they cost more than the copies
        out = None
        for i in range(1, steps + 1):
            (Up, Vp), (Uo, Vo) = buffers[(i - 1) % 2], buffers[i % 2]
            try:
                out = kernel(Up, Vp, F, K, Uo, Vo, *tensors)
            except Exception as exc:  # no working compiler after all: fall back, once
                if i > 1 or compiling.ran(key, self._shapes()):
                    raise
                first = str(exc).splitlines()[0] if str(exc) else ""
                warnings.warn(f"torch.compile failed ({exc.__class__.__name__}: "
                              f"{first}); using the eager stepper", RuntimeWarning,
                              stacklevel=3)
                compiling.mark_failed(key)
                return None
            compiling.fill_halo(halos[i % 2])
            if on_record is not None and (i % record_every == 0 or i == steps):
                on_record(i, Uo[inner], Vo[inner], out)
        compiling.mark_ran(key, self._shapes())
        U, V = (t[inner].contiguous() for t in buffers[steps % 2])
        # with clamp on and no hook every value stays in [0, 1]; otherwise one check
        # (a NaN, once there, stays: it spreads through the stencil and survives clamp)
        if (self.clamp and hook is None) or bool(torch.isfinite(U.sum() + V.sum())):
            return U, V, F, K, -1, "compiled"
        # cannot happen with clamp on and a finite hook: replay eagerly to name the step
        first_bad = self._run_eager(steps, hook, _merge(tensors, constants), steps, None)[-1]
        return U, V, F, K, first_bad if first_bad >= 0 else None, "compiled"

    def _finish_run(self, steps, U, V, F, K, first_bad, path) -> None:
        """Write the run's state back, or raise SimulationError naming the first bad step
        (first_bad: step of this run, -1 if none, None if not found again)."""
        if first_bad is not None and first_bad < 0:
            self.U, self.V, self.F, self.K = U, V, F, K
            self.steps_taken += steps
            self._work_done += steps * self.cells
            self.last_path = path
            return
        start = self.steps_taken
        where = (f"first at step {start + first_bad} (step {first_bad} of this run)"
                 if first_bad is not None else
                 f"between steps {start + 1} and {start + steps}")
        bad = (~torch.isfinite(U) | ~torch.isfinite(V)).flatten(1).any(1)
        raise SimulationError(
            f"non-finite U or V (NaN/Inf) {where}, batch member(s) "
            f"{bad.nonzero().flatten().tolist()}; it started finite, so the constants or "
            f"the hook made it blow up (dt={self.dt}, Du={self.Du}, Dv={self.Dv}, "
            f"clamp={self.clamp}); the state is left as it was before the run")
