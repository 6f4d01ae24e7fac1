"""Benchmark the Kuramoto medium's step (models/kuramoto.py): the torch step against the
numba kernel (models/kuramoto_kernel.py), side by side in one process.

    python -m benchmarks.bench_kuramoto                  # 64^2 and 128^2, 7 rounds
    python -m benchmarks.bench_kuramoto --quick          # seconds

Two cases, each on the shapes the battery runs (radius 3: 28 couplings per cell):
  recall  free steps of --members cues that share one seed's fields (one J, expanded),
          as models/memories_2a.KuramotoMemory.recall runs them;
  train   the teacher's steps, each followed by the Hebbian coupling scar, of --members
          seeds with their own J (Kuramoto.train).
Timing: --rounds interleaved rounds (both paths see the same load), each --steps steps of
every member. Ratios are the geometric mean of the paired per-round ratios with a 95%
t-interval on their logarithm (benchmarks/measure.py). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

from benchmarks.measure import fmt_ratio, load_average, ratio_stat
from models.kuramoto import Kuramoto

PATHS = ("torch", "kernel")


def machine() -> str:
    """The processor's model name (Linux), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(path: str, fn) -> float:
    """Seconds of fn() on the torch path (SUBSTRATE_NO_KERNEL set) or the kernel's."""
    before = os.environ.pop("SUBSTRATE_NO_KERNEL", None)
    if path == "torch":
        os.environ["SUBSTRATE_NO_KERNEL"] = "1"
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        os.environ.pop("SUBSTRATE_NO_KERNEL", None)
        if before is not None:
            os.environ["SUBSTRATE_NO_KERNEL"] = before


def case(kind: str, grid: int, members: int, steps: int):
    """A closure running `steps` steps of the case on the current path."""
    g = torch.Generator().manual_seed(0)
    m = Kuramoto()
    E = len(m.offsets)
    theta = 2 * math.pi * torch.rand(members, grid, grid, generator=g)
    if kind == "recall":
        fields = {"omega": torch.zeros(1, grid, grid).expand(members, grid, grid),
                  "J": torch.randn(1, E, grid, grid, generator=g).expand(members, E, grid, grid)}
        return lambda: m.step((theta,), fields, steps)
    target = (torch.rand(members, 1, grid, grid, generator=g) > 0.7).float()
    fields = m.fields(members, grid, grid)
    return lambda: m.train(fields, target, steps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grids", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--members", type=int, default=8, help="cues (recall) or seeds (train)")
    ap.add_argument("--steps", type=int, default=20, help="steps of every member per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="32^2, 2 members, 3 rounds")
    a = ap.parse_args(argv)
    if a.quick:
        a.grids, a.members, a.steps, a.rounds = [32], 2, 3, 3
    for name, lo in (("members", 1), ("steps", 1), ("rounds", 2), ("threads", 1)):
        if getattr(a, name) < lo:
            ap.error(f"--{name} {getattr(a, name)}: must be >= {lo}")
    torch.set_num_threads(a.threads)
    print(f"{machine()}, {os.cpu_count()} cores, "
          f"{a.threads} thread(s), load average {load_average()}")
    for grid in a.grids:
        for kind in ("recall", "train"):
            fn = case(kind, grid, a.members, a.steps)
            timed("kernel", fn)                       # compile or load the kernel
            if os.environ.get("SUBSTRATE_NO_KERNEL"):
                ap.error("SUBSTRATE_NO_KERNEL is set: there is no kernel to compare")
            times = {p: [] for p in PATHS}
            for _ in range(a.rounds):
                for p in PATHS:
                    times[p].append(timed(p, fn))
            per = {p: 1e3 * min(t) / (a.members * a.steps) for p, t in times.items()}
            r = ratio_stat(times["torch"], times["kernel"])
            print(f"{kind} {grid}^2, {a.members} members x {a.steps} steps, {a.rounds} rounds: "
                  f"torch {per['torch']:.3f} ms, kernel {per['kernel']:.3f} ms per member-step "
                  f"(best round); kernel speed-up {fmt_ratio(r)}")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
