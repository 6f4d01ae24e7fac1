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

import math
import os
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from benchmarks.measure import cpu_model, fmt_ratio, load_average, ratio_stat
from common import cli
from common.cli import arg
from models.kuramoto import Kuramoto

PATHS = ("torch", "kernel")


@dataclass
class Args:
    """The benchmark's flags (common/cli.py builds the parser: --config, --save-config and
    --version too; --quick shrinks only what the command line does not set)."""
    study: ClassVar[str] = "bench_kuramoto"   # a --config results check names it
    grids: tuple[int, ...] = arg((64, 128), "grid sizes H = W", lo=4, hi=4096)
    members: int = arg(8, "cues (recall) or seeds (train)", lo=1, hi=4096)
    steps: int = arg(20, "steps of every member per round", lo=1)
    rounds: int = arg(7, "interleaved timing rounds", lo=2)
    threads: int = arg(1, "torch and numba CPU threads", lo=1)
    quick: bool = arg(False, "32^2, 2 members, 3 steps, 3 rounds (seconds)")


QUICK = dict(grids=(32,), members=2, steps=3, rounds=3)


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
    a = cli.parse(Args, argv, description=__doc__.split("\n\n")[0], quick=QUICK)
    if os.environ.get("SUBSTRATE_NO_KERNEL"):
        raise ValueError("SUBSTRATE_NO_KERNEL is set: there is no kernel to compare")
    torch.set_num_threads(a.threads)
    print(f"{cpu_model()}, {os.cpu_count()} cores, "
          f"{a.threads} thread(s), load average {load_average()}")
    for grid in a.grids:
        for kind in ("recall", "train"):
            fn = case(kind, grid, a.members, a.steps)
            timed("kernel", fn)                       # compile or load the kernel
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
    cli.run_cli(main)
