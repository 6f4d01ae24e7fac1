"""Blocking in time in the CPU kernel: the steps per band k measured per grid and batch.

    python -m benchmarks.blocking --threads 2            # prints the table
    python -m benchmarks.blocking --quick                # seconds: tiny grids

Each configuration runs STEPS steps cut into calls of RECORD_EVERY (the recall's shape)
on the kernel's own drivers (common/cpu_kernel.run with an explicit (k, band rows)),
every k from the same state, interleaved over rounds; the ratio is k = 1's time over
k's, the geometric mean of the paired rounds with its 95% interval. bench_substrate
--write-docs puts the same table in docs/performance.md; cpu_kernel.BLOCK is chosen
from it.
"""
from __future__ import annotations

import time

from benchmarks.measure import fmt_ratio, load_average, noise_state, ratio_stat

# (grid, batch, state): "live" = the training-start noise state (live everywhere),
# "quiet" = the same noise in a corner of 1/16 of each side and the fixed point U = 1,
# V = 0 elsewhere (quiet ground: the skipping and the blocking together)
CONFIGS = [((256, 256), 1, "live"), ((256, 256), 8, "live"), ((256, 256), 32, "live"),
           ((512, 512), 1, "live"), ((1024, 1024), 1, "live"), ((2048, 2048), 1, "live"),
           ((1024, 1024), 1, "quiet")]
KS = [1, 3, 5, 9]
BAND_ROWS = 32
STEPS = 100
RECORD_EVERY = 10
QUICK = dict(configs=[((32, 32), 1, "live"), ((32, 32), 4, "quiet")], ks=[1, 3], steps=20,
             rounds=2)


def make_state(grid, batch, kind):
    """(U, V, F, K), float32: kind "live" or "quiet" (CONFIGS)."""
    import torch
    U, V, F, K = noise_state(grid, batch, torch.float32)[:4]
    if kind == "quiet":
        h, w = max(1, grid[0] // 16), max(1, grid[1] // 16)
        Uq, Vq = torch.ones_like(U), torch.zeros_like(V)
        Uq[:, :h, :w], Vq[:, :h, :w] = U[:, :h, :w], V[:, :h, :w]
        U, V = Uq, Vq
    return U, V, F, K


def _runner(U, V, F, K, k, rows):
    """A function that runs the configured steps from (U, V) and returns its seconds."""
    import numpy as np

    import substrate
    from common import cpu_kernel as ck
    start = [U.numpy(), V.numpy()]
    A = [a.copy() for a in start]
    B = [np.empty_like(a) for a in start]
    args = ck.arguments(U.dtype, 0.16, 0.08, 1.0, 0.9995, "nine_point", True,
                        substrate.FLUSH_BELOW, None)

    def run(steps):
        for a, s in zip(A, start):
            a[:] = s
        state = ck.State(*U.shape, U.dtype, block=(k, rows))
        t = time.perf_counter()
        for first in range(1, steps + 1, RECORD_EVERY):
            ck.run(*A, *B, F.numpy(), K.numpy(), first, min(steps, first + RECORD_EVERY - 1),
                   state, args)
        return time.perf_counter() - t
    return run


def measure(configs=CONFIGS, ks=KS, rows=BAND_ROWS, steps=STEPS, rounds=4, threads=2):
    """(markdown lines, {(grid, batch, state): {k: ratio stat}})."""
    import torch

    from common import cpu_kernel as ck
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    ck.use_threads(threads)
    chosen = ck.BLOCK
    md = ["### Blocking in time (k steps per band of rows, a k-row halo recomputed)", "",
          f"The kernel runs k = {chosen[0]} with {chosen[1]}-row bands, except where each "
          "thread takes whole members of at most "
          f"{ck.MEMBER_IN_CACHE_CELLS} cells (k = 1: such a member stays in cache anyway), "
          "and under the fused feed inhibition (k = 1: it needs the mean of V or the lit area "
          "after every step). Exact: bit-identical to single steps (tests/core/test_cpu_kernel.py). "
          "Measured with `python -m benchmarks.blocking`; states: live = the training-"
          "start noise state, quiet = that noise in a corner 1/16 of each side, the fixed "
          "point elsewhere (both skipping and blocking at work). "
          f"{steps} steps in calls of {RECORD_EVERY}, band {rows} rows, float32, nine-point "
          f"stencil, {threads} threads, {rounds} interleaved rounds; load average at start "
          f"{load_average()}. Ratio: time with k = 1 / time with k (> 1: blocking is "
          "faster).", "",
          "| grid | batch | state | " + " | ".join(f"k = {k}" for k in ks[1:]) +
          " | k = 1 Mcells/s (best) |", "|---|---|---|" + "---|" * len(ks)]
    results = {}
    for grid, batch, kind in configs:
        U, V, F, K = make_state(grid, batch, kind)
        runners = {k: _runner(U, V, F, K, k, rows) for k in ks}
        for run in runners.values():
            run(2 * max(ks))          # compiles (or loads) and warms the caches
        times = {k: [] for k in ks}
        for _ in range(rounds):
            for k, run in runners.items():
                times[k].append(run(steps))
        stats = {k: ratio_stat(times[ks[0]], times[k]) for k in ks[1:]}
        results[(grid, batch, kind)] = stats
        cells = batch * grid[0] * grid[1] * steps
        md.append(f"| {grid[0]}x{grid[1]} | {batch} | {kind} | "
                  + " | ".join(fmt_ratio(stats[k]) for k in ks[1:])
                  + f" | {cells / min(times[ks[0]]) / 1e6:.0f} |")
        print(md[-1], flush=True)
    torch.set_num_threads(saved)
    return md, results


def main(argv=None):
    from common.cli import _one_line_parser
    p = _one_line_parser()(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    p.add_argument("--rows", type=int, default=BAND_ROWS,
                   help=f"band rows, a multiple of 4 (default {BAND_ROWS})")
    p.add_argument("--quick", action="store_true", help="tiny grids, seconds")
    args = p.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.rows < 4 or args.rows % 4:
        p.error(f"--threads {args.threads}, --rounds {args.rounds}, --rows {args.rows}: "
                "threads and rounds must be >= 1, rows a multiple of 4 (>= 4)")
    kw = QUICK if args.quick else {}
    md, _ = measure(rows=args.rows, threads=args.threads,
                    rounds=kw.get("rounds", args.rounds),
                    **{k: v for k, v in kw.items() if k != "rounds"})
    print("\n".join(md))


if __name__ == "__main__":
    main()
