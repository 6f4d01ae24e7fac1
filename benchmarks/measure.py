"""Helpers the benchmarks share: the repository root, the training-start state every path
is timed on, paired ratios with their interval, and the machine's load."""
from __future__ import annotations

import math
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def noise_state(grid, batch, dtype):
    """(U, V, F, K, target) of a training start, on the CPU."""
    import torch

    import substrate
    from patterns import make_pattern, make_pattern_3d
    target = (make_pattern("square_spots", *grid) if len(grid) == 2
              else make_pattern_3d("corner_balls", *grid)).to(dtype)
    g = torch.Generator().manual_seed(0)
    V = (0.2 * target + 0.1 * torch.randn((batch, *grid), generator=g, dtype=dtype)).clamp(0, 1)
    F = torch.full((batch, *grid), substrate.F0, dtype=dtype)
    return torch.ones_like(V), V, F, torch.full_like(F, substrate.K0), target


def ratio_stat(base, other):
    """Geometric mean of base/other over paired rounds, with a 95% t-interval."""
    from stats import summarize
    s = summarize([math.log(b / o) for b, o in zip(base, other)])
    lo = None if s["ci95_low"] is None else math.exp(s["ci95_low"])
    hi = None if s["ci95_high"] is None else math.exp(s["ci95_high"])
    return {"mean": math.exp(s["mean"]), "low": lo, "high": hi, "n": s["n"]}


def fmt_ratio(r):
    if r["low"] is None:
        return f"{r['mean']:.1f}x"
    return f"{r['mean']:.1f}x [{r['low']:.1f}, {r['high']:.1f}]"


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
