"""The Gray-Scott step as a hand-written CPU kernel (numba), with quiet ground skipped.

Nothing here decides physics: the per-cell arithmetic is gray_scott_step's (substrate.py),
operation for operation in the same order and the same dtype (no fused multiply-add, no
reassociation), so a step here is bit-identical to the eager torch step. What it adds:

* one pass per step: the stencil, the reaction, decay, clamp and the subnormal flush per
  cell, with per-cell (shared or per-member) F and K, float32 or float64, any batch;
* blocking in time by member: with enough members, each thread takes whole members
  through every step up to the next record (a 256^2 float32 member's U, V, F, K and
  second buffers are 1.5 MB: they stay in the core's cache instead of the whole batch
  streaming through memory every step); with fewer members than that, the bands of each
  step are shared among the threads;
* blocking in time within a member (bigger members, or fewer members than threads): k
  steps per band of rows while the band and its k-row halo sit in cache, the halo
  computed again by each band that needs it (below; k chosen by measurement, BLOCK). Not
  under the fused feed factor, which needs the mean of V (or the lit area) over the
  whole member after every step: those runs step one step at a time;
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
  (models/media.py AreaInhibition);
* a fused scar rule: the published match-map rule (scarring.ScarRule) after every step
  of a training run, so that training, too, needs no compiler.

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

# Blocking in time: (k steps per block, band rows) for runs that block (block_for). Measured
# with benchmarks/blocking.py (docs/performance.md): k = 3 with 32-row bands gained 1.2-1.3x
# at 512^2 and 1024^2 and 1.8-1.9x at 2048^2 (batch 1-2, 1 and 2 threads), and 1.4-1.5x at
# 256^2 batch 1 on 2 threads (a parallel region per block instead of per step); k = 5 and
# 9 gained no more (their longer halos cost what the cache saved).
BLOCK = (3, 32)
# ... except where each thread takes whole members (run_members) of at most this many
# cells: such a member (256^2 float32: 1.5 MB with its F, K and second buffers) already
# stays in the cache through all the steps of a call, and blocking measured 0.85-1.1x.
MEMBER_IN_CACHE_CELLS = 256 * 256


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


# ---- the published scar rule fused: a training run's update after every step ------------
#
# scarring.ScarRule's update, per member after each step on the new V: the cosine of V to
# the member's target (metrics.cosine_similarity: 0 when V or the target sums below
# `empty`), then, while it exceeds the gate, F += f_step and K -= k_step where V and the
# target both exceed the threshold (and the relaxation toward F0, K0 by `relax`), F, K
# clamped. The update is the torch rule's operation for operation in the state's dtype,
# so F, K match it bit for bit; the cosine is summed in float64 here (any order), so its
# last float32 bit may differ from torch's, which matters only when it lies within that
# bit of the gate. A scarring run steps every tile: the rule moves F, K under live ground.


@njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc"})
def _cosine(V, T, tt, tsum, empty):
    """cos(V, T) of one member (2D): dot / (|V| |T|), 0 when V or T sums below empty;
    tt, tsum: T's sum of squares and its sum (float64). Reassociated: it vectorises."""
    dot, vv, vs = 0.0, 0.0, 0.0
    H, W = V.shape
    for i in range(H):
        for j in range(W):
            v, t = np.float64(V[i, j]), np.float64(T[i, j])
            dot += v * t
            vv += v * v
            vs += v
    if vs < empty or tsum < empty:
        return 0.0
    return dot / max(np.sqrt(vv) * np.sqrt(tt), 1e-12)


@njit(cache=True, nogil=True, boundscheck=False)
def _scar(V, T, F, K, gated, everywhere, sp):
    """One update of F, K (2D, in place) from V and T (module text above): sp = (threshold,
    f_step, k_step, relax, F0, K0, F_min, F_max, K_min, K_max) in the state's dtype.
    Ungated, F and K stay as they are, only clamped (everywhere: on the run's first step,
    after which every value stays clamped)."""
    if not (gated or everywhere):
        return
    thr, df, dk, relax, F0, K0, Fmin, Fmax, Kmin, Kmax = sp
    H, W = V.shape
    decay = gated and relax > 0
    for i in range(H):
        for j in range(W):
            f, k = F[i, j], K[i, j]
            if gated and V[i, j] > thr and T[i, j] > thr:
                f = f + df
                k = k - dk
            if decay:
                f = f - relax * (f - F0)
                k = k - relax * (k - K0)
            F[i, j] = min(max(f, Fmin), Fmax)
            K[i, j] = min(max(k, Kmin), Kmax)


@njit(cache=True, nogil=True, boundscheck=False)
def _scar_member(A_V, B_V, F, K, T, tt, tsum, b, s, sim, gate, empty, sp):
    """The rule after step s of member b: its cosine into sim[b], then the update."""
    tb = b if T.shape[0] > 1 else np.intp(0)
    V = B_V[b] if s % 2 == 1 else A_V[b]
    sim[b] = _cosine(V, T[tb], tt[tb], tsum[tb], empty)
    _scar(V, T[tb], F[b], K[b], F.dtype.type(sim[b]) > gate, s == 1, sp)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run_members_scar(A_U, A_V, B_U, B_V, F, K, T, tt, tsum, first, last, chg, vsum,
                     scale, shape, nine, w, c, flags, sim, gate, empty, sp):
    """Steps first..last of every member with the scar rule after each, one member per
    thread at a time (run_members). F, K (B, H, W) per member; T (1 or B, H, W)."""
    B, H, W = A_U.shape
    nt = chg.shape[2]
    for b in prange(B):
        for s in range(first, last + 1):
            scale[b, 0] = np.nan   # step every tile (the rule changes F, K)
            for t in range(nt):
                _tile(A_U, A_V, B_U, B_V, F, K, b, t, s, chg[b], vsum[b], scale[b], shape,
                      nine, w, c, flags, False, -1.0)
            _scar_member(A_V, B_V, F, K, T, tt, tsum, np.intp(b), s, sim, gate, empty, sp)
    return 0


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run_tiles_scar(A_U, A_V, B_U, B_V, F, K, T, tt, tsum, first, last, chg, vsum, scale,
                   shape, nine, w, c, flags, sim, gate, empty, sp):
    """The same with the tiles of each step shared among the threads (run_tiles)."""
    B, H, W = A_U.shape
    nt = chg.shape[2]
    for s in range(first, last + 1):
        scale[:, 0] = np.nan
        for bt in prange(B * nt):
            i = np.intp(bt)
            b = i // nt
            _tile(A_U, A_V, B_U, B_V, F, K, b, i - b * nt, s, chg[b], vsum[b], scale[b],
                  shape, nine, w, c, flags, False, -1.0)
        for b in prange(B):
            _scar_member(A_V, B_V, F, K, T, tt, tsum, np.intp(b), s, sim, gate, empty, sp)
    return 0


# ---- blocking in time within a member: k steps per band while it sits in cache ----------
#
# A band is BAND_ROWS full-width rows of one member. Its k steps run in a scratch of
# BAND_ROWS + 2k rows: the band and a k-row halo each side, copied from the input buffer;
# step j computes the rows that still have valid neighbours (the halo shrinks by a row
# per step: the halo's rows are computed again by each band that needs them), and step k
# writes the band's own rows to the output buffer. Every cell of every step is _cell's
# arithmetic on the same inputs as a single step's, so k blocked steps are bit-identical
# to k single steps. Blocks have odd lengths, so that a block reads the buffer of its
# first step's parity and writes the other one, as k single steps would.
#
# Quiet ground, per group of TILE_ROWS full-width rows: a group that did not change in any
# step of the previous block, with every row within k of it unchanged too, sits at an
# exact fixed point of the step (each of its cells' inputs is what it was a step
# earlier), so it would stay there for the k steps of this block: it is not computed. The
# output buffer already holds its values (it was the previous block's input, and nothing
# changed during that block). Within a band the computed rows are one range, from the
# first group that needs a step to the last.


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _row(uu, uc, ud, vu, vc, vd, fr, kr, uo, vo, scale, nine, w, c, flags):
    """One full-width row (periodic columns): input rows above (uu, vu), at (uc, vc) and
    below (ud, vd); F, K rows fr, kr; output rows uo, vo."""
    W = uc.shape[0]
    use_decay, clamp = flags
    uo[0], vo[0] = _cell(uu, uc, ud, vu, vc, vd, fr[0] * scale, kr[0], 0, W - 1, 1, nine,
                         w, c, use_decay, clamp)
    uo[W - 1], vo[W - 1] = _cell(uu, uc, ud, vu, vc, vd, fr[W - 1] * scale, kr[W - 1],
                                 W - 1, W - 2, 0, nine, w, c, use_decay, clamp)
    if nine and use_decay and clamp:   # the protocol's switches as constants (_tile_step)
        _interior(uu, uc, ud, vu, vc, vd, fr[1:], kr[1:], uo[1:], vo[1:], W - 2, scale,
                  True, w, c, True, True)
    else:
        _interior(uu, uc, ud, vu, vc, vd, fr[1:], kr[1:], uo[1:], vo[1:], W - 2, scale,
                  nine, w, c, use_decay, clamp)


@njit(cache=True, nogil=True, boundscheck=False)
def _band_block(Ui, Vi, Uo, Vo, F, K, r0, r1, k, SU, SV, cur, gr, nine, w, c, flags):
    """Steps 1..k of the rows [r0, r1) of one member (2D): Ui, Vi (input buffer) ->
    Uo, Vo; SU, SV (2, >= r1 - r0 + 2k, W) scratch, row m of which is the member's row
    r0 - k + m (periodic). cur (groups,): set True for each group of gr rows whose rows
    changed in any of the k steps."""
    H = Ui.shape[0]
    n = r1 - r0 + 2 * k
    for j in range(1, k + 1):
        src, dst = (j - 1) % 2, j % 2
        for m in range(j, n - j):
            g = (r0 - k + m) % H
            if j == 1:        # the first step reads the input buffer: no copy
                gm, gp = g - 1 if g > 0 else H - 1, g + 1 if g < H - 1 else 0
                uu, uc, ud, vu, vc, vd = Ui[gm], Ui[g], Ui[gp], Vi[gm], Vi[g], Vi[gp]
            else:
                uu, uc, ud = SU[src, m - 1], SU[src, m], SU[src, m + 1]
                vu, vc, vd = SV[src, m - 1], SV[src, m], SV[src, m + 1]
            if j == k:
                uo, vo = Uo[g], Vo[g]
            else:
                uo, vo = SU[dst, m], SV[dst, m]
            _row(uu, uc, ud, vu, vc, vd, F[g], K[g], uo, vo, c[5], nine, w, c, flags)
            if k <= m < n - k and not cur[g // gr]:
                for x in range(uo.shape[0]):
                    if uo[x] != uc[x] or vo[x] != vc[x]:
                        cur[g // gr] = True
                        break


@njit(cache=True, nogil=True, boundscheck=False)
def _band(A_U, A_V, B_U, B_V, F, K, b, band, s0, k, rows, chg, SU, SV, nine, w, c, flags):
    """Band `band` (of `rows` rows) of member b for steps s0 + 1 .. s0 + k (k odd): the
    quiet groups skipped (see above). chg (2, groups) of member b: the flags of the
    previous and this block, by the parity of their first step."""
    H = A_U.shape[1]
    gr = np.intp(TILE_ROWS)
    prev, cur = s0 % 2, (s0 + 1) % 2
    r0, r1 = band * rows, min(H, band * rows + rows)
    lo, hi = r1, r0       # the rows to compute: from the first group needing it to the last
    for g0 in range(r0, r1, gr):
        need = s0 == 0
        if not need:
            for off in range(-k, gr + k):
                if chg[prev, ((g0 + off) % H) // gr]:
                    need = True
                    break
        chg[cur, g0 // gr] = False
        if need:
            lo = min(lo, g0)
            hi = min(r1, g0 + gr)
    if lo >= hi:
        return
    b = np.intp(b)
    fb = b if F.shape[0] > 1 else np.intp(0)
    if s0 % 2 == 0:
        _band_block(A_U[b], A_V[b], B_U[b], B_V[b], F[fb], K[fb], lo, hi, k, SU, SV,
                    chg[cur], gr, nine, w, c, flags)
    else:
        _band_block(B_U[b], B_V[b], A_U[b], A_V[b], F[fb], K[fb], lo, hi, k, SU, SV,
                    chg[cur], gr, nine, w, c, flags)


@njit(cache=True, nogil=True)
def _blocks(first, last, k):
    """The blocks of steps first..last: (start, length) with odd lengths <= k."""
    out = []
    s = first - 1
    while s < last:
        n = min(k, last - s)
        if n % 2 == 0:
            n -= 1
        out.append((s, n))
        s += n
    return out


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run_members_blocked(A_U, A_V, B_U, B_V, F, K, first, last, chg, k, rows, nine, w, c,
                        flags):
    """Steps first..last of every member in blocks of k steps per band, one member per
    thread at a time."""
    B, H, W = A_U.shape
    blocks = _blocks(first, last, k)
    bands = -(-H // rows)
    for b in prange(B):
        SU = np.empty((2, rows + 2 * k, W), A_U.dtype)
        SV = np.empty((2, rows + 2 * k, W), A_U.dtype)
        for s0, n in blocks:
            for band in range(bands):
                _band(A_U, A_V, B_U, B_V, F, K, b, band, s0, n, rows, chg[b], SU, SV, nine,
                      w, c, flags)
    return 0


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run_bands_blocked(A_U, A_V, B_U, B_V, F, K, first, last, chg, k, rows, nine, w, c,
                      flags, threads):
    """The same blocks with the bands of each block shared among the threads (for fewer
    members than threads): one parallel region per block, each thread with its scratch."""
    B, H, W = A_U.shape
    bands = -(-H // rows)
    for s0, n in _blocks(first, last, k):
        for t in prange(threads):
            SU = np.empty((2, rows + 2 * k, W), A_U.dtype)
            SV = np.empty((2, rows + 2 * k, W), A_U.dtype)
            for i in range(t, B * bands, threads):
                b = i // bands
                _band(A_U, A_V, B_U, B_V, F, K, b, i - b * bands, s0, n, rows, chg[b], SU,
                      SV, nine, w, c, flags)
    return 0


# ---- the host side: arguments, flags, threads ------------------------------------------------

class State:
    """What the kernel carries between calls of one run: per member the changed flags of
    the last two steps (by parity) per tile, each tile's sum of V, and the feed factor
    used by the last step (scale[:, 0]) and for the next (scale[:, 1]); with blocking in
    time (block = (k steps, band rows), k > 1), the changed flags of the last two blocks
    per group of TILE_ROWS rows instead."""

    def __init__(self, batch, height, width, dtype, tile=None, block=None):
        self.shape = tile or (TILE_ROWS, TILE_COLS)
        self.block = block or block_for(batch, height, width)
        tiles = -(-height // self.shape[0]) * -(-width // self.shape[1])
        self.changed = np.ones((batch, 2, tiles), dtype=np.bool_)
        self.group_changed = np.ones((batch, 2, -(-height // TILE_ROWS)), dtype=np.bool_)
        self.vsum = np.zeros((batch, tiles), dtype=np.float64)
        self.scale = np.ones((batch, 2), dtype=_np_dtype(dtype))
        self.similarity = np.zeros(batch, dtype=np.float64)   # the fused scar rule's cosine

    def step_everything(self):
        """The next step computes every tile (its inputs may have changed anywhere)."""
        self.changed[:] = True
        self.group_changed[:] = True

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


def _by_members(batch, threads):
    """Whole members per thread (run_members) rather than each step's bands shared."""
    return batch >= threads and (batch % threads == 0 or batch >= 4 * threads)


def block_for(batch, height, width, threads=None):
    """(k, band rows): the steps per band of one block and the band's height, chosen by
    measurement (BLOCK, MEMBER_IN_CACHE_CELLS); k = 1 steps one step at a time."""
    threads = threads or numba.get_num_threads()
    if _by_members(batch, threads) and height * width <= MEMBER_IN_CACHE_CELLS:
        return (1, BLOCK[1])
    return BLOCK


def scar_arguments(dtype, target, gate, empty, constants):
    """(T, tt, tsum, gate, empty, sp): the fused scar rule's arguments (run's `scar`).
    target: (1 or B, H, W) array; constants: (threshold, f_step, k_step, relax, F0, K0,
    F_min, F_max, K_min, K_max), cast to the state's dtype like torch casts a scalar."""
    t = _np_dtype(dtype).type
    T = np.ascontiguousarray(target, dtype=_np_dtype(dtype))
    wide = T.astype(np.float64).reshape(T.shape[0], -1)
    tt = np.ascontiguousarray((wide * wide).sum(1))
    return (T, tt, np.ascontiguousarray(wide.sum(1)), t(gate), float(empty),
            tuple(t(x) for x in constants))


def run(A_U, A_V, B_U, B_V, F, K, first, last, state, args, scar=None):
    """Steps first..last (run-relative, from 1) of every member. F, K (1 or B, H, W).
    Blocking in time only without the fused feed factor: that one needs the mean of V
    (or the lit area) over the whole member after every step, which a band's k steps do
    not have; nor under the fused scar rule (scar: scar_arguments; F, K per member,
    updated in place; each step's cosine in state.similarity), for the same reason."""
    nine, w, c, flags, feed, fp = args
    threads = numba.get_num_threads()
    batch, height, width = A_U.shape
    by_members = _by_members(batch, threads)
    if scar is not None:
        T, tt, tsum, gate, empty, sp = scar
        driver = run_members_scar if by_members else run_tiles_scar
        driver(A_U, A_V, B_U, B_V, F, K, T, tt, tsum, first, last, state.changed,
               state.vsum, state.scale, state.shape, nine, w, c, flags, state.similarity,
               gate, empty, sp)
        return
    k, rows = state.block
    if k > 1 and not feed and width >= 3:
        if by_members:
            run_members_blocked(A_U, A_V, B_U, B_V, F, K, first, last, state.group_changed,
                                k, rows, nine, w, c, flags)
        else:
            run_bands_blocked(A_U, A_V, B_U, B_V, F, K, first, last, state.group_changed,
                              k, rows, nine, w, c, flags, threads)
        return
    driver = run_members if by_members else run_tiles
    driver(A_U, A_V, B_U, B_V, F, K, first, last, state.changed, state.vsum, state.scale,
           state.shape, nine, w, c, flags, feed, fp)
