"""The machine's own limits, and how the step's cost grows with the work.

    python -m benchmarks.roofline            # prints the limits and the scaling table

Used by benchmarks/bench_substrate.py (--write-docs puts them in docs/performance.md and
the figure in docs/figures/performance_scaling.png). Two microbenchmarks give the limits a
step is measured against:
  copy bandwidth  numpy copying a 128 MiB float32 array into another (bytes read plus
                  bytes written per second), one thread, the best of a few rounds;
  FMA rate        numba, fastmath, y = a * y + b over a 4 KiB float32 array (L1), flops =
                  2 per FMA, one thread; beside it the ISA's peak at the clock (2 FMA
                  pipes x 8 lanes x 2 flops x MHz).
Both timed by the thread's CPU clock: on a machine shared by several developers the wall
clock counts other processes' turns. Limits are per core; x threads for the machine.
A step's fractions of them: Mcells/s x BYTES_PER_CELL (its compulsory traffic when every
step streams the state from memory: U, V, F, K read, U, V written) over the bandwidth, and
Mcells/s x FLOPS_PER_CELL (the nine-point step's adds and multiplies; clamp and flush not
counted) over the peak.
"""
from __future__ import annotations

import math
import time

import numpy as np

FLOPS_PER_CELL = 38       # 2 x 10 (stencil) + 2 (U V V) + 7 (U) + 7 (V) + 1 (decay) + 1 (feed)
BYTES_PER_CELL = {"float32": 24, "float64": 48}
SCALING_GRIDS = [64, 128, 256, 512, 1024, 2048]
SCALING_BATCHES = [1, 4, 16, 64]
SCALING_STEPS = 20


def copy_bandwidth(mib=128, rounds=5) -> float:
    """Bytes per second of a large array copy (read + write) on one thread, timed by the
    thread's CPU clock (on a shared machine wall time counts other processes' turns)."""
    src = np.ones(mib << 18, dtype=np.float32)
    dst = np.ones_like(src)          # touched: no page faults in the timing
    best = math.inf
    for _ in range(rounds):
        t = time.thread_time()
        np.copyto(dst, src)
        best = min(best, time.thread_time() - t)
    return 2 * src.nbytes / best


def _fma_kernel():
    from numba import njit

    @njit(fastmath=True, cache=True)
    def fma(y, reps):
        a, b = np.float32(0.999), np.float32(1e-4)
        for _ in range(reps):
            for i in range(y.size):
                y[i] = y[i] * a + b
        return y[0]
    return fma


def fma_rate(reps=20000) -> float:
    """Flops per second of float32 fused multiply-adds on one thread over a 4 KiB array
    (L1-resident; one load and one store per vector of FMAs), CPU-clock timed."""
    fma = _fma_kernel()
    y = np.ones(1024, dtype=np.float32)
    fma(y, 1)
    best = math.inf
    for _ in range(5):
        t = time.thread_time()
        fma(y, reps)
        best = min(best, time.thread_time() - t)
    return 2 * y.size * reps / best


def fma_peak_from_clock() -> float | None:
    """The per-core float32 FMA peak the ISA allows: 2 FMA pipes x 8 lanes (AVX2) x 2
    flops x the clock (/proc/cpuinfo's MHz); None if unknown or without AVX2/FMA."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    mhz = next((line for line in info.splitlines() if line.startswith("cpu MHz")), None)
    if " avx2" not in flags or " fma" not in flags or mhz is None:
        return None
    return 2 * 8 * 2 * float(mhz.split(":")[1]) * 1e6


def scaling(paths, grids=SCALING_GRIDS, batches=SCALING_BATCHES, steps=SCALING_STEPS,
            batch_grid=256, rounds=3):
    """Mcells/s (best of `rounds`, paths interleaved) of each path on a training start:
    against the grid at batch 1, and against the batch at batch_grid^2. paths: {name:
    GrayScott compile argument}. Returns {(path, grid, batch): Mcells/s}."""
    import substrate
    from benchmarks.measure import noise_state
    out = {}
    points = [(g, 1) for g in grids] + [(batch_grid, b) for b in batches if b != 1]
    for grid, batch in points:
        U, V, F, K, _ = noise_state((grid, grid), batch, _torch_float32())
        sims = {}
        for name, compile in paths.items():
            gs = substrate.GrayScott(grid, grid, batch=batch, F=F, K=K, device="cpu",
                                     compile=compile)
            gs.reset(U=U, V=V)
            gs.run(2)
            sims[name] = gs
        n = max(2, min(steps, int(2e7 // (batch * grid * grid)) or 2))
        for _ in range(rounds):
            for name, gs in sims.items():
                t = time.perf_counter()
                gs.run(n)
                rate = batch * grid * grid * n / (time.perf_counter() - t) / 1e6
                out[(name, grid, batch)] = max(out.get((name, grid, batch), 0.0), rate)
        print(f"  scaling {grid}^2 batch {batch}: " + ", ".join(
            f"{name} {out[(name, grid, batch)]:.0f}" for name in paths) + " Mcells/s",
            flush=True)
    return out


def _torch_float32():
    import torch
    return torch.float32


def plot_scaling(result, paths, path_png, grids=SCALING_GRIDS, batches=SCALING_BATCHES,
                 batch_grid=256, note=""):
    """Two panels: Mcells/s against the grid side (batch 1) and against the batch, saved
    in the run's --format and --dpi (common.figures.save_figure); returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in paths:
        a.plot(grids, [result.get((name, g, 1), np.nan) for g in grids], "o-", label=name)
        b.plot(batches, [result.get((name, batch_grid, n), np.nan) if n != 1 else
                         result.get((name, batch_grid, 1), np.nan) for n in batches], "o-",
               label=name)
    a.set(xscale="log", yscale="log", xlabel="grid side (batch 1)", ylabel="Mcells/s",
          title="cost against the grid")
    b.set(xscale="log", yscale="log", xlabel=f"batch ({batch_grid}^2)", ylabel="Mcells/s",
          title="cost against the batch")
    a.set_xticks(grids, [str(g) for g in grids])
    b.set_xticks(batches, [str(n) for n in batches])
    a.legend()
    fig.suptitle(f"Gray-Scott step throughput, training start, float32{note}", fontsize=9)
    from common.figures import save_figure   # the run's --format and --dpi
    return save_figure(fig, path_png)


if __name__ == "__main__":
    import torch
    threads = torch.get_num_threads()
    print(f"copy bandwidth {copy_bandwidth() / 1e9:.1f} GB/s")
    print(f"FMA rate (one thread) {fma_rate() / 1e9:.1f} GFlop/s; the ISA's peak at the "
          f"clock {(fma_peak_from_clock() or 0) / 1e9:.1f} GFlop/s per core")
