"""The Gray-Scott step as a hand-written CPU kernel (numba), with quiet ground skipped.

Nothing here decides physics: the per-cell arithmetic is gray_scott_step's (substrate.py),
operation for operation in the same order and the same dtype (no fused multiply-add, no
reassociation), so a step here is bit-identical to the eager torch step. What it adds:

* one pass per step: the stencil, the reaction, decay, clamp and the subnormal flush per
  cell, with per-cell (shared or per-member) F and K, float32 or float64, any batch;
* blocking in time by member: with enough members, each thread takes whole members
  through every step up to the next record (a 256^2 float32 member's U, V, F, K and
  second buffers are 1.25 MB: they stay in the core's cache instead of the whole batch
  streaming through memory every step); with fewer members than that, the bands of each
  step are shared among the threads;
* exact skipping of quiet ground: each member is cut into bands of BAND_ROWS rows. A band
  that did not change in the previous step, with both neighbouring bands unchanged too,
  reads exactly the inputs it read then, so it would produce exactly the values it
  produced then: it is not stepped. The buffer it would write already holds them (it
  was written two steps ago and nothing has changed since), so a skip writes nothing.
  This covers the fixed point U = 1, V = 0 (where the step is the identity in floating
  point too: every term is an exact 0) and equally the dead ground a pattern leaves,
  where U sits a few ulps below 1 and rounding has stopped moving it. The first step of
  a run computes every band (the second buffer is fresh); F and K are fixed during a
  run except through the fused feed factor (below), whose change re-steps the member.
* a fused feed factor: F = F_base * clamp(1 - gain * (mean V - set_point), 0, 1) per
  member after every step (scarring.GlobalInhibition's hook), or the lit-area form
  F = F_base * clamp(1 - gain * max((share lit - area) / area, 0), 0, 1)
  (models/media.py AreaInhibition).

Threads: numba's, set to torch's count for each run (the project's --threads). The
functions are cached on disk by numba (cache=True, next to this file in __pycache__), so a
fresh process only loads them (docs/performance.md measures it).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import numba
import numpy as np
from numba import njit, prange


def _skip_blas_probe():
    """Load numba's array implementations without their import-time BLAS probe.

    A fresh process that loads a cached function first loads every implementation of
    numba's CPU target, and numba.np.arraymath probes for BLAS at import by importing
    scipy.linalg: ~0.4 s of a ~1.3 s first step, for nothing this kernel uses. With scipy
    installed the probe's answer is known (BLAS is there), so it is taken as given; any
    numba code that compiles a BLAS call still imports scipy then (numba.np.linalg's own
    ensure_blas is untouched)."""
    if "numba.np.arraymath" in sys.modules or importlib.util.find_spec("scipy") is None:
        return
    from numba.np import linalg
    probe = linalg.ensure_blas
    linalg.ensure_blas = lambda: None
    try:
        from numba.np import arraymath
    finally:
        linalg.ensure_blas = probe
    arraymath.ensure_blas = probe


_skip_blas_probe()

# numba's own thread pool, not its OpenMP one: the OpenMP threads of a second runtime
# (torch has its own) spin after each parallel region and slowed the torch operations
# run between kernel calls 6x here (a scar hook: 31 ms before the first kernel call,
# 189 ms after). An explicit NUMBA_THREADING_LAYER wins.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

# The skip tiles: TILE_ROWS x TILE_COLS cells. A tile is skipped only when it and its 8
# neighbours were unchanged: smaller tiles skip closer to a pattern's edge, at the cost
# of a flag and a shorter vector loop per tile (measured: docs/performance.md).
TILE_ROWS = 4
TILE_COLS = 256


@njit(cache=True, nogil=True, inline="always")
def _finish(x, zero, one, flush, clamp):
    """substrate._finish for one value: clamp to [0, 1], then flush below FLUSH_BELOW."""
    if clamp:
        x = max(x, zero)
        x = min(x, one)
        return zero if x < flush else x
    return zero if abs(x) < flush else x


@njit(cache=True, nogil=True, inline="always")
def _cell(uu, uc, ud, vu, vc, vd, f, k, j, jm, jp, nine, w, c, use_decay, clamp):
    """New (u, v) of cell j of a row, its rows above (uu, vu) and below (ud, vd); jm, jp
    its column neighbours. The stencils are substrate._stencil_of_padded's, the
    reaction gray_scott_step's, in their order."""
    wx, wd, wc = w
    Du, Dv, dt, decay, zero, one, flush = c
    u, v = uc[j], vc[j]
    cu = uu[j] + ud[j] + uc[jm] + uc[jp]
    cv = vu[j] + vd[j] + vc[jm] + vc[jp]
    if nine:
        su = wx * cu + wd * (uu[jm] + uu[jp] + ud[jm] + ud[jp]) - u
        sv = wx * cv + wd * (vu[jm] + vu[jp] + vd[jm] + vd[jp]) - v
    else:
        su = cu - wc * u
        sv = cv - wc * v
    uvv = u * v * v
    un = u + dt * (Du * su - uvv + f * (one - u))
    vn = v + dt * (Dv * sv + uvv - (k + f) * v)
    if use_decay:
        vn = vn * decay
    return _finish(un, zero, one, flush, clamp), _finish(vn, zero, one, flush, clamp)


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _interior(uu, uc, ud, vu, vc, vd, fr, kr, uo, vo, n, scale, nine, w, c, use_decay,
              clamp):
    """n cells of a row whose neighbours need no wrap: row views starting one column
    to the left of the first (u*, v*) or at it (fr, kr, uo, vo)."""
    for k in range(n):
        un, vn = _cell(uu, uc, ud, vu, vc, vd, fr[k] * scale, kr[k], k + 1, k, k + 2,
                       nine, w, c, use_decay, clamp)
        uo[k] = un
        vo[k] = vn


@njit(cache=True, nogil=True, boundscheck=False)
def _tile_step(Ui, Vi, Uo, Vo, F, K, scale, r0, r1, c0, c1, nine, w, c, flags):
    """Step the cells [r0, r1) x [c0, c1) of one member (2D Ui, Vi -> Uo, Vo; F, K 2D;
    scale its feed factor). Returns True when any value changed."""
    H, W = Ui.shape
    changed = False
    lo, hi = max(c0, 1), min(c1, W - 1)
    use_decay, clamp = flags
    for i in range(r0, r1):
        im = i - 1 if i > 0 else H - 1
        ip = i + 1 if i < H - 1 else 0
        # the edge columns wrap; the interior loop reads row views that start one
        # column left of it, so that every index is provably >= 0 (no negative-index
        # wrap check) and it has no reduction: it vectorises (either one undone made
        # it scalar, 3-4x slower)
        if c0 == 0:
            uo, vo = _cell(Ui[im], Ui[i], Ui[ip], Vi[im], Vi[i], Vi[ip], F[i, 0] * scale,
                           K[i, 0], 0, W - 1, 1, nine, w, c, use_decay, clamp)
            Uo[i, 0], Vo[i, 0] = uo, vo
        if c1 == W:
            uo, vo = _cell(Ui[im], Ui[i], Ui[ip], Vi[im], Vi[i], Vi[ip],
                           F[i, W - 1] * scale, K[i, W - 1], W - 1, W - 2, 0, nine, w, c,
                           use_decay, clamp)
            Uo[i, W - 1], Vo[i, W - 1] = uo, vo
        uu, uc, ud = Ui[im, lo - 1:], Ui[i, lo - 1:], Ui[ip, lo - 1:]
        vu, vc, vd = Vi[im, lo - 1:], Vi[i, lo - 1:], Vi[ip, lo - 1:]
        fr, kr, uo, vo = F[i, lo:], K[i, lo:], Uo[i, lo:], Vo[i, lo:]
        # the protocol's step (nine_point, decay, clamp) with its switches as constants,
        # so that the compiler drops the other branches from the loop: 1.55x faster
        if nine and use_decay and clamp:
            _interior(uu, uc, ud, vu, vc, vd, fr, kr, uo, vo, hi - lo, scale, True, w, c,
                      True, True)
        else:
            _interior(uu, uc, ud, vu, vc, vd, fr, kr, uo, vo, hi - lo, scale, nine, w, c,
                      use_decay, clamp)
        if not changed:   # stops at the first changed cell: costs little in live ground
            for j in range(c0, c1):
                if Uo[i, j] != Ui[i, j] or Vo[i, j] != Vi[i, j]:
                    changed = True
                    break
    return changed


@njit(cache=True, nogil=True, boundscheck=False)
def _tile_sum(X, r0, r1, c0, c1):
    s = 0.0
    for i in range(r0, r1):
        for j in range(c0, c1):
            s += X[i, j]
    return s


@njit(cache=True, nogil=True, boundscheck=False)
def _tile_count(X, r0, r1, c0, c1, above):
    n = 0.0
    for i in range(r0, r1):
        for j in range(c0, c1):
            if X[i, j] > above:
                n += 1.0
    return n


@njit(cache=True, nogil=True, boundscheck=False)
def _new_factor(scale, total, cells, fp):
    """The feed factor into scale[1], each operation rounded to the state's dtype like
    the torch hook. fp = (gain, level, lit): with lit < 0, GlobalInhibition.feed's
    clamp(1 - gain * (mean V - level), 0, 1), total the sum of V (summed in float64, so
    the mean's last bit may differ from torch's); with lit >= 0, the lit-area
    inhibition's clamp(1 - gain * max((share - level) / level, 0), 0, 1)
    (models/media.py AreaInhibition), total the count of cells with V > lit (exact)."""
    gain, level, lit = fp
    scale[1] = total / cells
    scale[1] = scale[1] - scale.dtype.type(level)
    if lit >= 0.0:
        scale[1] = scale[1] / scale.dtype.type(level)
        scale[1] = max(scale[1], scale.dtype.type(0.0))
    scale[1] = scale.dtype.type(gain) * scale[1]
    scale[1] = scale.dtype.type(1.0) - scale[1]
    scale[1] = min(max(scale[1], scale.dtype.type(0.0)), scale.dtype.type(1.0))


@njit(cache=True, nogil=True, boundscheck=False)
def _tile(A_U, A_V, B_U, B_V, F, K, member, tile, s, chg, vsum, scale, shape, nine, w, c,
          flags, feed, lit):
    """Tile `tile` (row-major over the tile grid) of member b at step s (run-relative,
    from 1): step it, or skip it when it and its 8 neighbours did not change at step
    s - 1 (module docstring). Step s reads buffer A when s is odd, B when even.
    chg (2, tiles) of member b: the flags of the previous and current step, by parity;
    vsum (tiles,): each tile's sum of V, or with lit >= 0 its count of V > lit (feed
    only)."""
    b = np.intp(member)  # a prange index may be unsigned: mixed with int it types as float
    H, W = A_U.shape[1], A_U.shape[2]
    tr, tc = shape
    ny, nx = -(-H // tr), -(-W // tc)
    ty, tx = tile // nx, tile % nx
    prev, cur = (s - 1) % 2, s % 2
    need = s == 1 or scale[0] != scale[1]
    if not need:
        for dy in (-1, 0, 1):
            y = (ty + dy) % ny
            for dx in (-1, 0, 1):
                if chg[prev, y * nx + (tx + dx) % nx]:
                    need = True
    if not need:
        chg[cur, tile] = False
        return
    r0, c0 = ty * tr, tx * tc
    r1, c1 = min(H, r0 + tr), min(W, c0 + tc)
    fb = b if F.shape[0] > 1 else np.intp(0)
    if s % 2 == 1:
        changed = _tile_step(A_U[b], A_V[b], B_U[b], B_V[b], F[fb], K[fb], scale[1],
                             r0, r1, c0, c1, nine, w, c, flags)
    else:
        changed = _tile_step(B_U[b], B_V[b], A_U[b], A_V[b], F[fb], K[fb], scale[1],
                             r0, r1, c0, c1, nine, w, c, flags)
    chg[cur, tile] = changed
    if feed and (changed or s == 1):
        V_new = B_V[b] if s % 2 == 1 else A_V[b]
        vsum[tile] = (_tile_count(V_new, r0, r1, c0, c1, V_new.dtype.type(lit)) if lit >= 0.0
                      else _tile_sum(V_new, r0, r1, c0, c1))


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run_members(A_U, A_V, B_U, B_V, F, K, first, last, chg, vsum, scale, shape, nine, w,
                c, flags, feed, fp):
    """Steps first..last of every member, one member per thread at a time: the member
    goes through all of them while it sits in the core's cache."""
    B, H, W = A_U.shape
    nt = chg.shape[2]
    for b in prange(B):
        for s in range(first, last + 1):
            for t in range(nt):
                _tile(A_U, A_V, B_U, B_V, F, K, b, t, s, chg[b], vsum[b], scale[b], shape,
                      nine, w, c, flags, feed, fp[2])
            scale[b, 0] = scale[b, 1]
            if feed:
                _new_factor(scale[b], vsum[b].sum(), H * W, fp)
    return 0


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run_tiles(A_U, A_V, B_U, B_V, F, K, first, last, chg, vsum, scale, shape, nine, w, c,
              flags, feed, fp):
    """The same steps with the bands of each step shared among the threads (for fewer
    members than threads): one parallel region per step."""
    B, H, W = A_U.shape
    nt = chg.shape[2]
    for s in range(first, last + 1):
        for bt in prange(B * nt):
            i = np.intp(bt)
            b = i // nt
            _tile(A_U, A_V, B_U, B_V, F, K, b, i - b * nt, s, chg[b], vsum[b], scale[b],
                  shape, nine, w, c, flags, feed, fp[2])
        for m in range(B):
            scale[m, 0] = scale[m, 1]
            if feed:
                _new_factor(scale[m], vsum[m].sum(), H * W, fp)
    return 0


# ---- the host side: arguments, flags, threads ------------------------------------------------

class State:
    """What the kernel carries between calls of one run: per member the changed flags of
    the last two steps (by parity) per tile, each tile's sum of V, and the feed factor
    used by the last step (scale[:, 0]) and for the next (scale[:, 1])."""

    def __init__(self, batch, height, width, dtype, tile=None):
        self.shape = tile or (TILE_ROWS, TILE_COLS)
        tiles = -(-height // self.shape[0]) * -(-width // self.shape[1])
        self.changed = np.ones((batch, 2, tiles), dtype=np.bool_)
        self.vsum = np.zeros((batch, tiles), dtype=np.float64)
        self.scale = np.ones((batch, 2), dtype=_np_dtype(dtype))

    def step_everything(self):
        """The next step computes every tile (its inputs may have changed anywhere)."""
        self.changed[:] = True

    def step_everything_next(self):
        """As step_everything, through the feed factor (the flags are rewritten by the
        step before the next one reads them)."""
        self.scale[:, 0] = np.nan


def _np_dtype(dtype):
    return np.dtype(str(dtype).replace("torch.", ""))


def arguments(dtype, Du, Dv, dt, decay, stencil, clamp, flush, feed):
    """(nine, w, c, flags, feed, fp): the kernel's constant arguments, numbers in the
    state's dtype; flags = (decay on, clamp on)."""
    t = _np_dtype(dtype).type
    use_decay = decay is not None and decay != 1.0
    c = (t(Du), t(Dv), t(dt), t(decay if use_decay else 1.0), t(0.0), t(1.0), t(flush))
    nine = stencil == "nine_point"
    w = (t(0.2), t(0.05), t(1.0)) if nine else (t(1.0), t(0.0), t(4.0))
    fp = (0.0, 0.0, -1.0) if feed is None else (float(feed[0]), float(feed[1]),
                                                 float(feed[2]) if len(feed) > 2 else -1.0)
    return nine, w, c, (use_decay, bool(clamp)), feed is not None, fp


def use_threads(n):
    """numba's thread count for the next runs: n (the project's torch threads), capped at
    the pool numba started with."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def run(A_U, A_V, B_U, B_V, F, K, first, last, state, args):
    """Steps first..last (run-relative, from 1) of every member. F, K (1 or B, H, W)."""
    nine, w, c, flags, feed, fp = args
    threads = numba.get_num_threads()
    batch = A_U.shape[0]
    driver = run_members if batch >= threads and (batch % threads == 0
                                                  or batch >= 4 * threads) else run_tiles
    driver(A_U, A_V, B_U, B_V, F, K, first, last, state.changed, state.vsum, state.scale,
           state.shape, nine, w, c, flags, feed, fp)
