"""An independent, plainly written Gray-Scott step in numpy float64 (for the tests only).

Written from the equations in docs/protocol.md with np.roll, not from substrate.py.
"""
import numpy as np

NINE = {(-1, -1): 0.05, (-1, 0): 0.2, (-1, 1): 0.05, (0, -1): 0.2, (0, 0): -1.0,
        (0, 1): 0.2, (1, -1): 0.05, (1, 0): 0.2, (1, 1): 0.05}
FIVE = {(-1, 0): 1.0, (1, 0): 1.0, (0, -1): 1.0, (0, 1): 1.0, (0, 0): -4.0}


def laplacian(X, weights):
    """Sum over stencil offsets of w * X[i + di, j + dj] with periodic wrap (last two axes)."""
    out = np.zeros_like(X)
    for (di, dj), w in weights.items():
        out += w * np.roll(X, shift=(-di, -dj), axis=(-2, -1))
    return out


def step(U, V, F, K, Du=0.16, Dv=0.08, dt=1.0, decay=0.9995, stencil="nine_point", clamp=True):
    weights = NINE if stencil == "nine_point" else FIVE
    lu, lv = laplacian(U, weights), laplacian(V, weights)
    uvv = U * V * V
    U2 = U + dt * (Du * lu - uvv + F * (1 - U))
    V2 = V + dt * (Dv * lv + uvv - (K + F) * V)
    if decay is not None:
        V2 = V2 * decay
    if clamp:
        U2, V2 = np.clip(U2, 0, 1), np.clip(V2, 0, 1)
    return U2, V2
