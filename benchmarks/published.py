"""The published stepper and its single-seed protocol, re-implemented plainly: the baseline
that benchmarks/bench_substrate.py measures our stepper against.

    python -m benchmarks.published            # the published protocol, one seed, timed
    python -m benchmarks.published --help

Written by us from the equations and constants of docs/protocol.md (the published code
is not in this repository), in the published style: a separate circularly padded
conv2d (conv3d in 3D) per field, new tensors every step, and a host sync every step
(the similarity to the target read back with .item(), as the published loop does for
its scar gate and its logging). It uses none of our modules' fast paths, only the
constants, the target patterns and the reference similarity.

`run_protocol` runs phases 1-3 for one seed at batch 1 (5400 steps at 256^2) and returns
the final similarities. It prints them, and the wall time since Python started, so the
end-to-end comparison with scarring_validation.py counts start-up on both sides.
Figures and videos are not drawn here, so this side's wall time is an underestimate of
the published script's.
"""
from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as tnf  # noqa: E402

import substrate  # noqa: E402
from metrics import cosine_similarity  # noqa: E402
from patterns import make_pattern  # noqa: E402


class Published:
    """The published step: circular pad + conv per field, fresh tensors, a host sync."""

    def __init__(self, U, V, F, K, target, nd=2, sync=True):
        self.U, self.V, self.F, self.K, self.target = U, V, F, K, target
        self.nd, self.sync = nd, sync
        if nd == 2:
            w = torch.tensor(substrate.NINE_POINT)
        else:
            w = torch.tensor(substrate.STENCILS_3D["seven_point"])
        self.w = w.to(U).view(1, 1, *w.shape)
        self.conv = tnf.conv2d if nd == 2 else tnf.conv3d
        self.last = None

    def lap(self, X):
        return self.conv(tnf.pad(X.unsqueeze(1), (1, 1) * self.nd, mode="circular"),
                         self.w)[:, 0]

    def step(self, n=1):
        Du, Dv, dt, decay = substrate.DU, substrate.DV, substrate.DT, substrate.DECAY
        for _ in range(n):
            U, V, F, K = self.U, self.V, self.F, self.K
            lap_u, lap_v = self.lap(U), self.lap(V)
            uvv = U * V * V
            U2 = U + dt * (Du * lap_u - uvv + F * (1 - U))
            V2 = V + dt * (Dv * lap_v + uvv - (K + F) * V)
            V2 = V2 * decay
            self.U, self.V = torch.clamp(U2, 0, 1), torch.clamp(V2, 0, 1)
            if self.sync:
                self.last = cosine_similarity(self.V, self.target, self.nd).sum().item()
        return self


def _start(target, strength, noise, generator):
    V = (strength * target + noise * torch.randn(target.shape, generator=generator))
    return V.clamp(0, 1).unsqueeze(0)


def _run(target, F, K, V, steps, scar):
    """`steps` published steps from U = 1, V; scar F, K in place while similarity > 0.5."""
    sim = Published(torch.ones_like(V), V, F, K, target)
    for _ in range(steps):
        sim.step()
        if scar and sim.last > 0.5:                    # the host-side gate
            match = ((sim.V[0] > 0.3) & (target > 0.3)).float()
            F.add_(0.003 * match).clamp_(0.01, 0.08)
            K.sub_(0.0015 * match).clamp_(0.03, 0.08)
    return sim.last


def run_protocol(grid=256, seed=0, scale=1.0):
    """Phases 1-3 of the protocol (docs/protocol.md) for one seed; `scale` shrinks every
    step count."""
    g = torch.Generator().manual_seed(seed)
    n = lambda steps: max(1, int(steps * scale))  # noqa: E731
    fresh = lambda: (torch.full((grid, grid), substrate.F0),  # noqa: E731
                     torch.full((grid, grid), substrate.K0))
    spots = make_pattern("square_spots", grid, grid)
    F, K = fresh()
    out = {"phase1_scarred": _run(spots, F, K, _start(spots, 0.2, 0.1, g), n(1000), True)}
    out["phase1_control"] = _run(spots, *fresh(), _start(spots, 0.2, 0.1, g), n(1000), False)
    cue = _start(spots, 0.15, 0.05, g)
    out["phase2_scarred"] = _run(spots, F.clone(), K.clone(), cue, n(500), False)
    out["phase2_control"] = _run(spots, *fresh(), cue, n(500), False)
    q = grid // 4
    patterns = [make_pattern("square_spots", grid, grid, offset=(-q, -q)),
                make_pattern("ring", grid, grid), make_pattern("line", grid, grid)]
    F, K = fresh()
    for p in patterns:
        _run(p, F, K, _start(p, 0.2, 0.1, g), n(500), True)
    for name, p in zip("ABC", patterns):
        out[f"phase3_{name}"] = _run(p, F.clone(), K.clone(), _start(p, 0.2, 0.05, g),
                                     n(300), False)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every step count (e.g. 0.01 for a smoke test)")
    args = p.parse_args(argv)
    if args.grid < 16 or not 0 < args.scale <= 1:
        p.error(f"--grid {args.grid} must be >= 16 and --scale {args.scale} in (0, 1]")
    t = time.perf_counter()
    out = run_protocol(args.grid, args.seed, args.scale)
    for k, v in out.items():
        print(f"{k:16s} {v:.3f}")
    now = time.perf_counter()
    print(f"simulation_s={now - t:.2f}")
    print(f"wall_s={now - T_START:.2f}")


if __name__ == "__main__":
    main()
