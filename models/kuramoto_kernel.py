"""The Kuramoto medium's steps (models/kuramoto.py) as a CPU kernel (numba): the free step
of a recall, and the training step (teacher) fused with the Hebbian coupling scar.

The torch step builds the 28 rolled copies of sin(theta) and cos(theta) at radius 3 and
their products with the per-edge couplings J every step: about 120 whole-grid tensors
written and read again. Here one pass per step and member does the same arithmetic in
float32 without any copy:

* sin and cos of every cell once per step, into a buffer padded periodically by the
  radius, by a branch-free polynomial (Cody-Waite reduction to |r| <= pi/4, Cephes'
  single-precision sinf/cosf polynomials: a few ulp) that the compiler vectorises; libm's
  scalar sinf would cost more than the whole coupling sum;
* the two neighbour sums sum_e J_{i,e} sin_j and sum_e J_{i,e} cos_j row by row, edge by
  edge, in float32 in the order of the edges (torch's mean over the edge axis), so the
  drive is coupling_drive's cos_i * mean(J sin_j) - sin_i * mean(J cos_j);
* theta + dt (omega + drive), wrapped into [0, 2 pi) as torch.remainder does (exactly,
  for a step of less than one turn; larger steps take fmod);
* training: the teacher's teacher * sin(pull - theta) in the drive, then the scar
  J_{i,e} += rate * ((cos_i cos_j + sin_i sin_j) - bias) from the new phases, as
  Kuramoto.scar writes it (the new phases' sin and cos serve the next step too).

Each member runs all its steps while its state sits in the core's cache (blocking in
time); members that share one seed's fields (a recall's cues) read one copy of J. The
result matches the torch step to float32 rounding (tests/models/test_media_2a.py), not
bit for bit: the phases of a chaotic medium then drift apart over many steps as any two
float32 programs would. Threads: numba's, set to torch's count by the caller. Cached on
disk (cache=True), so a fresh process only loads the compiled code.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

F32 = np.float32
TWO_PI = F32(2 * math.pi)
TWO_OVER_PI = F32(2 / math.pi)
# pi / 2 in three float32 parts (Cody-Waite): k * part is exact for the small k here
PIO2_1, PIO2_2, PIO2_3 = F32(1.5703125), F32(4.837512969970703125e-4), F32(7.54978995489188216e-8)
S1, S2, S3 = F32(-1.6666654611e-1), F32(8.3321608736e-3), F32(-1.9515295891e-4)
C1, C2, C3 = F32(4.166664568298827e-2), F32(-1.388731625493765e-3), F32(2.443315711809948e-5)
HALF, ONE, ZERO, FOUR, QUARTER = F32(0.5), F32(1.0), F32(0.0), F32(4.0), F32(0.25)


@njit(cache=True, nogil=True, inline="always")
def _sincos(x):
    """(sin x, cos x) in float32, branch-free (selects), a few ulp for |x| < 1e4."""
    k = np.floor(x * TWO_OVER_PI + HALF)
    r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3
    z = r * r
    sr = r + r * z * (S1 + z * (S2 + z * S3))
    cr = ONE - HALF * z + z * z * (C1 + z * (C2 + z * C3))
    q = k - FOUR * np.floor(k * QUARTER)          # the quadrant, 0..3
    odd = (q == ONE) | (q == F32(3.0))
    s = cr if odd else sr
    c = sr if odd else cr
    s = -s if q >= F32(2.0) else s
    c = -c if (q == ONE) | (q == F32(2.0)) else c
    return s, c


@njit(cache=True, nogil=True, boundscheck=False)
def _edge_row(j, s, c, acc_s, acc_c, n):
    """acc_s += j * s, acc_c += j * c over n cells of a row: views that start at index 0,
    so that no index can be negative (numba's wrap check would keep the loop scalar)."""
    for x in range(n):
        acc_s[x] += j[x] * s[x]
        acc_c[x] += j[x] * c[x]


@njit(cache=True, nogil=True, boundscheck=False)
def _sincos_padded(theta, sp, cp, r):
    """sin and cos of theta (H, W) into sp, cp (H + 2r, W + 2r), padded periodically."""
    H, W = theta.shape
    for y in range(H):
        for x in range(W):
            s, c = _sincos(theta[y, x])
            sp[y + r, x + r] = s
            cp[y + r, x + r] = c
        for x in range(r):                       # periodic columns
            sp[y + r, x] = sp[y + r, W + x]
            cp[y + r, x] = cp[y + r, W + x]
            sp[y + r, W + r + x] = sp[y + r, r + x]
            cp[y + r, W + r + x] = cp[y + r, r + x]
    for y in range(r):                           # periodic rows
        sp[y, :] = sp[H + y, :]
        cp[y, :] = cp[H + y, :]
        sp[H + r + y, :] = sp[r + y, :]
        cp[H + r + y, :] = cp[r + y, :]


@njit(cache=True, nogil=True, boundscheck=False)
def _scar_row(j, si, ci, s, c, n, rate, bias):
    """The Hebbian rule on one edge's row: j += rate * ((c_i c_j + s_i s_j) - bias)."""
    for x in range(n):
        j[x] = j[x] + rate * ((ci[x] * c[x] + si[x] * s[x]) - bias)


@njit(cache=True, nogil=True, boundscheck=False)
def _member(theta, omega, J, pull, dy, dx, r, dt, steps, train, teacher, rate, bias,
            sp, cp, acc_s, acc_c):
    """`steps` Euler steps of one member, in place: theta (H, W), omega (H, W),
    J (E, H, W); sp, cp (H + 2r, W + 2r) and acc_s, acc_c (W,) scratch. train: each step
    adds teacher * sin(pull - theta) to the drive and then writes the Hebbian scar into
    J from the new phases (Kuramoto.step with a target, then Kuramoto.scar)."""
    H, W = theta.shape
    E = J.shape[0]
    inv_e = F32(1.0) / F32(E)
    _sincos_padded(theta, sp, cp, r)
    for _ in range(steps):
        for y in range(H):
            acc_s[:] = ZERO
            acc_c[:] = ZERO
            for e in range(E):
                yy, xx = y + r + dy[e], r + dx[e]
                _edge_row(J[e, y], sp[yy, xx:], cp[yy, xx:], acc_s, acc_c, W)
            wide = False
            for x in range(W):
                s, c = sp[y + r, x + r], cp[y + r, x + r]
                d = omega[y, x] + (c * (acc_s[x] * inv_e) - s * (acc_c[x] * inv_e))
                if train:
                    d = d + teacher * _sincos(pull[y, x] - theta[y, x])[0]
                t = theta[y, x] + dt * d
                wide |= (t < -TWO_PI) | (t >= TWO_PI + TWO_PI)
                # torch.remainder(t, 2 pi): fmod, then + 2 pi below 0; for t in
                # [-2 pi, 4 pi) this is exactly one subtraction or addition
                t = t - TWO_PI if t >= TWO_PI else t
                theta[y, x] = t + TWO_PI if t < ZERO else t
            if wide:                                 # a step of a turn or more
                for x in range(W):
                    t = theta[y, x]
                    if t < ZERO or t >= TWO_PI:
                        m = np.fmod(t, TWO_PI)
                        theta[y, x] = m + TWO_PI if m < ZERO else m
        _sincos_padded(theta, sp, cp, r)             # the new phases: the next step's too
        if train:
            for y in range(H):
                for e in range(E):
                    yy, xx = y + r + dy[e], r + dx[e]
                    _scar_row(J[e, y], sp[y + r, r:], cp[y + r, r:], sp[yy, xx:],
                              cp[yy, xx:], W, rate, bias)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def run(theta, omega, J, member_omega, member_J, dy, dx, r, dt, steps, train, pull, teacher,
        rate, bias):
    """`steps` steps of every member b of theta (B, H, W) in place, with
    omega[member_omega[b]] (H, W) and J[member_J[b]] (E, H, W); one member per thread at
    a time, through all its steps. train: pull (B, H, W) holds the teacher's target phases
    and the Hebbian scar is written into J in place (each member its own J); otherwise
    free steps (pull is not read)."""
    B, H, W = theta.shape
    for i in prange(B):
        b = np.intp(i)
        sp = np.empty((H + 2 * r, W + 2 * r), dtype=np.float32)
        cp = np.empty((H + 2 * r, W + 2 * r), dtype=np.float32)
        acc_s = np.empty(W, dtype=np.float32)
        acc_c = np.empty(W, dtype=np.float32)
        _member(theta[b], omega[member_omega[b]], J[member_J[b]], pull[b if train else 0],
                dy, dx, r, dt, steps, train, teacher, rate, bias, sp, cp, acc_s, acc_c)
    return 0
