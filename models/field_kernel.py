"""The Hebbian neural field's coupling sum as a CPU kernel (numba).

h[b, y, x] = sum_k W[s, k, y, x] * u[b, (y + dy_k) mod H, (x + dx_k) mod W], where member
b reads the weights of its seed s = b // (members per seed).

Why by hand: the torch form (models/media.py, coupled_input_torch: a torch.roll and an
addcmul per offset) allocates and streams a rolled copy of the whole batch for each of
the M offsets. At the compete study's 256^2 recall (240 members, M = 128) that is a
fresh 63 MB tensor 128 times a step; measured on the 2-core AMD EPYC here, 27 s a step,
against 0.1 s for 8 members. This kernel works one output row at a time in a small
accumulator, reading each offset's source row in place, so its cost grows with the batch
and nothing is allocated (docs/findings/compete.md gives the measured ratio). The terms
are added in the same order as the torch form, each as a fused multiply-add (fastmath
lets LLVM contract them, as torch's vectorised addcmul does), which matched the torch
form bit for bit here; the test holds it to float32 rounding.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from common.cpu_kernel import use_threads


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _coupled_input(u, W, dy, dx, per_seed, out):
    H, Wd = u.shape[1], u.shape[2]
    S, M = W.shape[0], W.shape[1]
    for job in prange(S * H):
        s, y = job // H, job % H
        acc = np.empty(Wd, np.float32)
        for c in range(per_seed):
            b = s * per_seed + c
            acc[:] = 0.0
            for k in range(M):
                src = u[b, (y + dy[k]) % H]
                w = W[s, k, y]
                shift = dx[k] % Wd
                n = Wd - shift
                # x + shift wraps once: two contiguous runs, so each loop vectorises
                for x in range(n):
                    acc[x] += w[x] * src[x + shift]
                for x in range(n, Wd):
                    acc[x] += w[x] * src[x - n]
            out[b, y] = acc


def coupled_input(u, W, offsets):
    """(B, H, W) coupling sum for float32 CPU tensors u (B, H, W) and W (S, M, H, W),
    B a multiple of S; offsets: M pairs (dy, dx). Runs on torch's thread count."""
    import torch
    un = np.ascontiguousarray(u.detach().numpy())
    Wn = np.ascontiguousarray(W.detach().numpy())
    dy = np.array([o[0] for o in offsets], dtype=np.int64)
    dx = np.array([o[1] for o in offsets], dtype=np.int64)
    out = np.empty_like(un)
    use_threads(torch.get_num_threads())
    _coupled_input(un, Wn, dy, dx, un.shape[0] // W.shape[0], out)
    return torch.from_numpy(out)
