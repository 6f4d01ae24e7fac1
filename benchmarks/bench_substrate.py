"""Benchmark the Gray-Scott steppers on the study's own states, side by side.

    python -m benchmarks.bench_substrate                # full run: prints every table
    python -m benchmarks.bench_substrate --write-docs   # the same, then rewrites docs/performance.md
    python -m benchmarks.bench_substrate --quick        # seconds: tiny grids (never writes docs)

States (every path steps the same tensors):
  noise    a training start: U = 1, V = clamp(0.2 * target + N(0, 0.1^2), 0, 1), F = F0,
           K = K0 (per member, so that both states have the same memory layout).
  scarred  a scarred arm of the real protocol, built with the library at the protocol's
           grid (256^2): scarring.Study.store trains the square-spots target for
           1000 steps (phase 1), then the phase-2 cue (15 %) is recalled for
           RECALL_STEPS steps. Mostly U = 1, V decaying toward 0 around the pattern, with
           per-member scarred F, K: what every scarred arm of phases 2 and 3 looks like.
Paths:
  published          benchmarks/published.py run as published: one grid per call (batch 1)
                     with its host sync (.item()) every step. The baseline: every ratio is
                     per-cell throughput against it, on the same state and grid.
  published_batched  the same code at the configuration's batch in one conv2d call.
  eager              GrayScott(compile=False).
  compiled           GrayScott(compile=True): torch.compile'd, one kernel call per step.
  kernel             GrayScott(compile="auto") on the CPU: the hand-written numba kernel
                     (common/cpu_kernel.py).
Timing: ROUNDS interleaved rounds (every path sees the same load), each at least
MIN_ROUND_S seconds (at most MAX_ROUND_S) and, on the compiled path, at least
MIN_RUN_STEPS steps (one GrayScott.run: its fixed cost, packing and checks, is included). Ratios are the geometric mean of the
paired per-round ratios with a 95% t-interval on their logarithm. The last line printed
is `speedup_vs_published_step=<x>`: compiled at 256^2, batch 32, float32, on the scarred
state, against the published step at batch 1 on the same state. Nothing is asserted.
"""
from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from dataclasses import dataclass
from typing import ClassVar, Optional

from benchmarks.measure import ROOT, cpu_model, fmt_ratio, load_average, noise_state, ratio_stat
from common import cli
from common.cli import FIGURE_FORMATS, arg

OUT_MD = ROOT / "docs" / "performance.md"
SCALING_FIGURE = "figures/performance_scaling.png"   # under docs/; the suffix follows --format

# ---- knobs (most are flags) ----------------------------------------------------------
GRIDS = ["256x256"]
BATCHES = [1, 32]
DTYPES = ["float32"]
ALL_PATHS = ["published", "published_batched", "eager", "compiled", "kernel"]
PATHS = ["published", "compiled", "kernel"]
STATE_GRID = "256x256"      # the protocol's grid: the scarred state exists only there
RECALL_STEPS = 300          # recall steps from the cue before the scarred state is taken
TRAIN_STEPS = 1000          # phase-1 training steps
MAX_BATCHED_CELLS = 1 << 22  # published_batched above this (batch x grid) is skipped: minutes
ROUNDS = 5
MIN_ROUND_S = 0.3
MAX_ROUND_S = 4.0           # ... and at most this long (at least one step)
MIN_RUN_STEPS = 100         # compiled: a run's fixed cost (packing, checks) is ~3 steps
MAX_ROUND_STEPS = 400
HEADLINE = ("256x256", 32, "float32", "scarred")
E2E_REPEATS = 2
E2E_TIMEOUT_S = 1800
QUICK = dict(grids=["32x32", "8x8x8"], batches=[1, 4], dtypes=["float32"],
             paths=["published", "published_batched", "eager", "kernel"], rounds=2)
QUICK_TIMING = dict(MIN_ROUND_S=0.01, MAX_ROUND_S=0.2, MIN_RUN_STEPS=5, MAX_ROUND_STEPS=10,
                    TRAIN_STEPS=30, RECALL_STEPS=20)


# ---- states ------------------------------------------------------------------------------
def parse_grid(text):
    try:
        dims = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in (2, 3) or min(dims) < 8:
        raise ValueError(f"grid {text!r}: want HxW or DxHxW with sides >= 8")
    return dims


def scarred_state(grid, batch, dtype, device):
    """(U, V, F, K, target) of a scarred arm during phase-2 recall (module docstring),
    built with the library's own store/recall path on `device`."""
    import scarring
    from patterns import make_pattern
    from protocol import Protocol
    target = make_pattern("square_spots", *grid).to(dtype)
    seeds = list(range(batch))
    study = scarring.Study(Protocol(dtype=str(dtype).replace("torch.", "")), device=device)
    stored = study.store(target[None], seeds, TRAIN_STEPS, progress="scarred state: training")
    cue = study.cues(target[None], seeds, 0.15)[:, 0]
    gs = scarring.GrayScott(*grid, batch=batch, F=stored["F"], K=stored["K"],
                            device=device, dtype=dtype)
    gs.reset(V=cue.to(device))
    gs.run(RECALL_STEPS)
    return (*(t.cpu() for t in (gs.U, gs.V, gs.F, gs.K)), target)


class States:
    """Every state the run needs, built once (the scarred one at the largest batch)."""

    def __init__(self, device, batches, dtypes, want_scarred):
        self.device, self.cache = device, {}
        self.scarred = {}
        if want_scarred:
            for dt in dtypes:
                print(f"building the scarred state ({STATE_GRID}, batch {max(batches)}, {dt})"
                      " ...", flush=True)
                self.scarred[dt] = scarred_state(parse_grid(STATE_GRID), max(batches),
                                                 _dtype(dt), device)

    def get(self, name, grid, batch, dt):
        if name == "scarred":
            U, V, F, K, target = self.scarred[dt]
            return U[:batch], V[:batch], F[:batch], K[:batch], target
        return noise_state(grid, batch, _dtype(dt))


def _dtype(name):
    import torch
    return getattr(torch, name)


# ---- timing ------------------------------------------------------------------------------
def synchronize(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One path stepping one state, ready to be timed."""

    def __init__(self, path, state, device):
        import substrate
        from benchmarks.published import Published
        U, V, F, K, target = (t.to(device) for t in state)
        self.path, self.device = path, device
        grid = V.shape[1:]
        if path == "published":          # as published: one grid per call
            U, V, F, K = U[:1], V[:1], F[0], K[0]
        if path.startswith("published"):
            self.sim = Published(U.clone(), V.clone(), F.clone(), K.clone(), target, len(grid))
            self.min_steps = 1
        else:
            self.sim = substrate.GrayScott(grid[-2], grid[-1], batch=V.shape[0], F=F, K=K,
                                           depth=grid[0] if len(grid) == 3 else None,
                                           device=device, dtype=V.dtype,
                                           compile="auto" if path == "kernel"
                                           else path.startswith("compiled"))
            self.sim.reset(U=U, V=V)
            self.min_steps = MIN_RUN_STEPS if path.startswith(("compiled", "kernel")) else 1
        self.cells = V[:1].numel() if path == "published" else V.numel()
        self.first_call_s = self.run(1)     # compiles on the compiled path
        per_step = max(self.run(2) / 2, 1e-7)
        steps = min(MAX_ROUND_STEPS, max(self.min_steps, math.ceil(MIN_ROUND_S / per_step)))
        self.steps = int(max(1, min(steps, MAX_ROUND_S // per_step)))

    def run(self, n):
        synchronize(self.device)
        t = time.perf_counter()
        self.sim.step(n)
        synchronize(self.device)
        return time.perf_counter() - t

    def seconds_per_cell(self):
        """One timing round: seconds per cell-update."""
        return self.run(self.steps) / (self.steps * self.cells)

    @property
    def fell_back(self):
        want = {"kernel": "kernel"}.get(self.path, "compiled")
        return self.path.startswith(("compiled", "kernel")) and self.sim.last_path != want


def measure(setups, device, rounds):
    """setups: {label: (path, state)}. Returns ({label: [seconds per cell-update, one per
    round]}, {label: first-call seconds}); the rounds of every label are interleaved."""
    runners = {label: Runner(path, state, device) for label, (path, state) in setups.items()}
    times = {label: [] for label in runners}
    for _ in range(rounds):
        for label, r in runners.items():
            times[label].append(r.seconds_per_cell())
    if any(r.fell_back for r in runners.values()):
        print("  note: the compiled path or the kernel fell back (no compiler or numba?)",
              flush=True)
    return times, {label: r.first_call_s for label, r in runners.items()}


# ---- sections ----------------------------------------------------------------------------
def paths_for(paths, grid, batch):
    """published_batched only where it differs from published and takes seconds, not
    minutes."""
    return [p for p in paths if p != "published_batched"
            or 1 < batch and batch * math.prod(grid) <= MAX_BATCHED_CELLS]


def table_section(args, states, device):
    """Every path, grid, batch, dtype and state. Returns (markdown lines, headline ratio
    or None)."""
    md = ["| grid | batch | dtype | state | path | Mcells/s (best round) | vs published, "
          "batch 1 | first call s |", "|---|---|---|---|---|---|---|---|"]
    headline = None
    for grid in args.grids:
        label = "x".join(map(str, grid))
        names = ["noise"] + (["scarred"] if label == STATE_GRID and states.scarred else [])
        for batch in args.batches:
            for dt in args.dtypes:
                for name in names:
                    print(f"[{device.type}] {label} batch {batch} {dt} {name} ...", flush=True)
                    state = states.get(name, grid, batch, dt)
                    paths = paths_for(args.paths, grid, batch)
                    times, first = measure({p: (p, state) for p in paths}, device, args.rounds)
                    for p in paths:
                        r = (ratio_stat(times["published"], times[p])
                             if "published" in times else None)
                        md.append(f"| {label} | {batch} | {dt} | {name} | {p} | "
                                  f"{1e-6 / min(times[p]):.3g} | "
                                  f"{fmt_ratio(r) if r else '-'} | {first[p]:.2f} |")
                        print(f"    {p:18s} {1e-6 / min(times[p]):9.1f} Mcells/s  "
                              f"{fmt_ratio(r) if r else ''}", flush=True)
                    if (label, batch, dt, name) == HEADLINE:
                        best = next(p for p in ("kernel", "compiled", "eager")
                                    if p in times)
                        headline = ratio_stat(times["published"], times[best]) | {"path": best}
    return md + [""], headline


def states_section(args, states, device):
    """Per-step time on the scarred state over the noise state, per path, at the
    protocol's grid and the largest batch (interleaved rounds)."""
    grid, batch = parse_grid(STATE_GRID), max(args.batches)
    md = [f"### Scarred state against noise state ({STATE_GRID}, batch {batch})", "",
          "Time per step on the scarred state / time per step on the noise state (same "
          "layout, same process, interleaved rounds; > 1 means the scarred state is slower).",
          "", "| dtype | path | scarred / noise |", "|---|---|---|"]
    for dt in args.dtypes:
        print(f"[{device.type}] states {dt} ...", flush=True)
        setups = {}
        for p in args.paths:
            for name in ("noise", "scarred"):
                setups[(p, name)] = (p, states.get(name, grid, batch, dt))
        times, _ = measure(setups, device, args.rounds)
        for p in args.paths:
            r = ratio_stat(times[(p, "scarred")], times[(p, "noise")])
            md.append(f"| {dt} | {p} | {fmt_ratio(r)} |")
            print(f"    {p:18s} scarred/noise {fmt_ratio(r)}", flush=True)
    return md + [""]


def threads_section(args, states, device):
    """The headline configuration at 1 and 2 CPU threads."""
    import torch
    grid, batch, dt, name = parse_grid(HEADLINE[0]), HEADLINE[1], HEADLINE[2], HEADLINE[3]
    md = [f"### Threads ({HEADLINE[0]}, batch {batch}, {dt}, {name} state)", "",
          "With 2 OpenMP threads every parallel region waits until both cores are free; on "
          "a shared 2-core machine under load (see the load average) that wait, a scheduler "
          "time slice, dominates a step, and most of all the published step's, which syncs "
          "with the host every step. Read the 2-thread rows against the load.", "",
          "| threads | path | Mcells/s (best round) | vs published, batch 1 |",
          "|---|---|---|---|"]
    saved = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"[cpu] threads={threads} headline ...", flush=True)
        paths = paths_for(args.paths, grid, batch)
        times, _ = measure({p: (p, states.get(name, grid, batch, dt)) for p in paths},
                           device, args.rounds)
        for p in paths:
            md.append(f"| {threads} | {p} | {1e-6 / min(times[p]):.3g} | "
                      f"{fmt_ratio(ratio_stat(times['published'], times[p]))} |")
    torch.set_num_threads(saved)
    return md + [""]


def time_script(argv, sim_pattern):
    """(wall s, simulation s or None, status, stdout) of `python <argv>` from the
    repository root in this environment (threads as a user gets them): start-up,
    compilation, figures and videos included."""
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=E2E_TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, None, f"timed out after {E2E_TIMEOUT_S} s", ""
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return (None, None, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}",
                proc.stdout)
    found = re.search(sim_pattern, proc.stdout)
    return wall, float(found.group(1)) if found else None, "ok", proc.stdout


def e2e_section(args):
    """The default study (8 seeds, figures and videos) and the published single-seed
    protocol, one after the other, alternating, E2E_REPEATS times each."""
    import tempfile
    md = ["## End to end: the default study against the published protocol", "",
          "Fresh processes, one after the other, alternating, with the threads a user gets "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs), "
          "inductor's disk cache warm after the first run. Ours is the default "
          "`python scarring_validation.py` (8 seeds, 256^2, phases 1-3, figures and videos). "
          "The published side is `python -m benchmarks.published`: the published protocol "
          "for one seed, as published (batch 1, a host sync every step), without its "
          "figures (so it is an underestimate of the published script).", "",
          "| command | wall s | simulation s | rest s (start-up, compile, figures) | status |",
          "|---|---|---|---|---|"]
    walls = {"ours": [], "published": []}
    splits = {"ours": [], "published": []}   # (simulation s, rest s) per run
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("published", ["-m", "benchmarks.published"], r"simulation_s=([\d.]+)"),
                ("ours", ["scarring_validation.py", "--out", str(Path(tmp) / "out")],
                 r"simulation wall time ([\d.]+) s")]
        for _ in range(args.e2e_repeats):
            for name, argv, pattern in runs:
                print(f"end to end: {name} ...", flush=True)
                wall, sim, status, stdout = time_script(argv, pattern)
                if wall is not None:
                    walls[name].append(wall)
                if wall is not None and sim is not None:
                    splits[name].append((sim, wall - sim))
                if name == "ours":
                    args.ours_stdout = stdout
                rest = f"{wall - sim:.1f}" if wall is not None and sim is not None else "-"
                md.append(f"| `python {' '.join(argv[:2]) if name == 'published' else argv[0]}`"
                          f" | {'-' if wall is None else f'{wall:.1f}'} | "
                          f"{'-' if sim is None else f'{sim:.1f}'} | {rest} | {status} |")
                print(f"    {status} wall {wall}", flush=True)
    if walls["ours"] and walls["published"]:
        verdict = "faster" if max(walls["ours"]) < min(walls["published"]) else "not faster"
        md += ["", f"Default 8-seed study: {', '.join(f'{w:.1f}' for w in walls['ours'])} s; "
                   f"published single seed: {', '.join(f'{w:.1f}' for w in walls['published'])}"
                   f" s: the 8-seed study is **{verdict}** in every pair."]
        ratios = [p / o for o, p in zip(walls["ours"], walls["published"])]
        stat = (ratio_stat(walls["published"], walls["ours"]) if len(ratios) > 1 else
                {"mean": ratios[0], "low": None, "high": None})
        from benchmarks.kernel_targets import target_row
        args.target_rows.append(target_row(
            "end to end: default 8-seed run vs one published seed (published / ours)",
            stat, 1.0, reason=e2e_reason(splits)))
    return md + [""]


def e2e_reason(splits) -> str:
    """Where each side's wall time goes (means over the runs): simulation and the rest."""
    if not (splits["ours"] and splits["published"]):
        return "the split into simulation and the rest was not measured"
    mean = lambda xs: sum(xs) / len(xs)   # noqa: E731
    (o_sim, o_rest), (p_sim, p_rest) = ([mean(x) for x in zip(*splits[k])]
                                        for k in ("ours", "published"))
    return (f"ours simulates {o_sim:.1f} s (8 seeds, a control arm, phases 1-3, every "
            f"step on the kernel) and spends {o_rest:.1f} s on start-up, statistics, "
            f"figures and videos; the published seed simulates {p_sim:.1f} s and spends "
            f"{p_rest:.1f} s on the rest")


def targets_sections(args, states):
    """The kernel's targets against the compiled path, blocking in time by k, the
    roofline and the scaling figure (benchmarks/kernel_targets.py, blocking.py,
    roofline.py)."""
    import torch

    from benchmarks import kernel_targets as kt
    from benchmarks import roofline as rl
    md = ["## The CPU kernel against the compiled path", ""]
    for section, rows in (kt.throughput_targets(states, args.rounds),
                          kt.dead_background_target(args.rounds),
                          kt.startup_target(torch.get_num_threads())):
        md += section
        args.target_rows += rows
    if args.battery_seeds:
        section, rows = kt.battery_condition_target(args.battery_rounds, args.battery_seeds)
        md += section
        args.target_rows += rows
    print("[targets] blocking in time ...", flush=True)
    from benchmarks import blocking
    md += blocking.measure(rounds=args.rounds, threads=2)[0] + [""]
    rates = {}
    for line in md:   # the headline configuration's best rates, from the table above
        m = re.match(r"\| 32 \| (\d+) \| (\d+) \|", line)
        if m:
            rates = {"kernel": float(m.group(1)), "compiled": float(m.group(2))}
    scaling, png = None, None
    if not args.no_scaling:
        print("[targets] scaling ...", flush=True)
        scaling = rl.scaling({"kernel": "auto", "compiled": True})
        if args.write_docs:
            png = scaling_figure(scaling, OUT_MD.parent)
    md += kt.roofline_section(rates, 2, png, scaling)
    return md


def scaling_figure(scaling, docs) -> str:
    """Draw the scaling figure into docs/figures/ in the run's --format and --dpi; its
    path relative to docs (for the page's link)."""
    from benchmarks import roofline as rl

    path = rl.plot_scaling(scaling, ["kernel", "compiled"], Path(docs) / SCALING_FIGURE,
                           note=f"; {os.cpu_count()} CPUs, load {load_average()}")
    return path.relative_to(docs).as_posix()


# ---- the report --------------------------------------------------------------------------
def machine_description(device):
    import torch
    text = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


def preamble(args, command):
    return ["# Substrate performance", "",
            "Written by `python -m benchmarks.bench_substrate --write-docs` (do not edit by "
            "hand).", "", f"Command: `{command}`", "",
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average at "
            f"start (1/5/15 min): {load_average()}.", "",
            "States: **noise** = a training start (U = 1, V = 0.2 x target + N(0, 0.1^2), F0, "
            "K0 per member); **scarred** = a scarred arm of the real protocol at 256^2 "
            f"(phase-1 training, {TRAIN_STEPS} steps, then {RECALL_STEPS} recall steps from "
            "the 15% cue), built with the library. Paths: **published** = "
            "`benchmarks/published.py` as published, one grid per call with a host sync "
            "every step: the baseline, at batch 1, on the same state; **published_batched** "
            "= the same at the row's batch in one conv2d call; **eager** = "
            "`GrayScott(compile=False)`; **compiled** = `GrayScott(compile=True)` (torch.compile); "
            "**kernel** = `GrayScott(compile='auto')` on the CPU: the hand-written numba "
            "kernel (`common/cpu_kernel.py`). Each "
            f"ratio is the geometric mean of {args.rounds} paired, interleaved rounds with "
            "its 95% interval; Mcells/s is the best round. 'first call' includes "
            "compilation. The scarred state is built by our stepper, which flushes "
            "subnormals (below), so the published step timed on it meets fewer subnormals "
            "than on its own trajectory: the ratios on that state are conservative.", "",
            "Subnormal floats: outside a pattern V decays geometrically and would pass "
            "through subnormal floats (and V * V through them earlier), which x86 handles in "
            "slow microcode. Every path of ours sets |U|, |V| below "
            "`substrate.FLUSH_BELOW` (1e-18) to 0 after each step, inside the compiled "
            "kernel, so it holds on every worker thread, in float32 and float64; the "
            "published step does not (as published). On CUDA, float32 add, multiply and "
            "FMA handle subnormals in hardware at full speed (NVIDIA, 'CUDA Pro Tip: Flush "
            "Denormals with Confidence', developer.nvidia.com/blog/cuda-pro-tip-flush-"
            "denormals-confidence), so there the flush changes nothing but the numbers "
            "below 1e-18.", ""]


def write_docs(md):
    text = "\n".join(md) + "\n"
    OUT_MD.write_text(text)
    print(f"wrote {OUT_MD}")


@dataclass
class Args:
    """The benchmark's flags. common/cli.py builds the parser from them, with the flags
    every script has: --config, --save-config, --version; --quick shrinks only what the
    command line (or the config file) does not set."""
    study: ClassVar[str] = "bench_substrate"   # a --config results check names it
    grids: tuple[str, ...] = arg(tuple(GRIDS), "HxW or DxHxW")
    batches: tuple[int, ...] = arg(tuple(BATCHES), "batch sizes (each >= 1)")
    dtypes: tuple[str, ...] = arg(tuple(DTYPES), "float types", choices=("float32", "float64"))
    paths: tuple[str, ...] = arg(tuple(PATHS), "steppers timed; published (the baseline) is "
                                 "always included", choices=tuple(ALL_PATHS))
    rounds: int = arg(ROUNDS, "interleaved timing rounds", lo=1)
    e2e_repeats: int = arg(E2E_REPEATS, "end-to-end pairs (0 to skip)", lo=0)
    device: str = arg("cpu", "torch device", choices=("cpu", "cuda"))
    threads: Optional[int] = arg(None, "CPU threads of the tables (default: torch's "
                                 "default); the threads section measures 1 and 2, the "
                                 "end-to-end runs use the environment's", lo=1)
    reference_log: Optional[str] = arg(None, "stdout of `python scarring_validation.py` at "
                                       "another commit: the default run's table is compared "
                                       "with it, line by line", metavar="FILE")
    no_scaling: bool = arg(False, "skip the Mcells/s against grid and batch sweep (and its "
                                  "figure)")
    battery_seeds: int = arg(0, "seeds of the associative-battery target (one condition, "
                                "256^2, kernel against compiled; minutes per seed and round; "
                                "0: not run)")
    battery_rounds: int = arg(1, "interleaved rounds of the associative-battery target")
    quick: bool = arg(False, "tiny grids, no compilation, no end-to-end runs (seconds); "
                             "never writes docs")
    write_docs: bool = arg(False, f"rewrite {OUT_MD.relative_to(ROOT)} and its scaling "
                                  f"figure (a full run only)")
    format: str = arg("png", "file format of the scaling figure (docs/figures/"
                             "performance_scaling.FORMAT)", choices=FIGURE_FORMATS)
    dpi: Optional[int] = arg(None, "resolution of the scaling figure in dots per inch "
                                   "(None: its own, 90)", lo=30, hi=1200)

    def check(self) -> None:
        if self.quick and self.write_docs:
            raise ValueError("--write-docs needs a full run: a --quick run never writes docs")
        if self.battery_seeds < 0 or self.battery_rounds < 1:
            raise ValueError(f"--battery-seeds {self.battery_seeds} must be >= 0 and "
                             f"--battery-rounds {self.battery_rounds} >= 1")
        if min(self.batches) < 1:
            raise ValueError(f"--batches {' '.join(map(str, self.batches))}: each must be >= 1")
        for g in self.grids:
            parse_grid(g)


def parse(argv):
    """The flags, checked (one line and exit 2 otherwise), as Args with grids as tuples of
    ints and lists for the list flags."""
    from common import limits

    args = cli.parse(Args, argv, description=__doc__.split("\n\n")[0],
                     quick={**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in QUICK.items()}, "e2e_repeats": 0})
    args.grids = [parse_grid(g) for g in args.grids]
    args.batches, args.dtypes = list(args.batches), list(args.dtypes)
    args.paths = list(args.paths) if "published" in args.paths else ["published", *args.paths]
    itemsize = max(8 if d == "float64" else 4 for d in args.dtypes)
    for grid in args.grids:   # the largest batch of each grid, before anything is built
        limits.check_media(max(args.batches), math.prod(grid), itemsize, args.device,
                           f"grid {'x'.join(map(str, grid))} at batch {max(args.batches)}",
                           "use smaller --grids or --batches")
    if args.quick:
        globals().update(QUICK_TIMING)
    labels = ["x".join(map(str, g)) for g in args.grids]
    if args.quick or HEADLINE[0] not in labels or HEADLINE[1] not in args.batches \
            or HEADLINE[2] not in args.dtypes:   # the headline: a configuration measured
        flat = [label for label, g in zip(labels, args.grids) if len(g) == 2]
        globals().update(STATE_GRID=flat[0] if flat else "",
                         HEADLINE=(flat[0] if flat else labels[0], max(args.batches),
                                   args.dtypes[0], "scarred" if flat else "noise"))
    return args


def main(argv=None):
    args = parse(argv)
    cli.start(args, announce=False)   # the figure's --format and --dpi
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = "python -m benchmarks.bench_substrate " + " ".join(
        argv if argv is not None else sys.argv[1:])
    md = preamble(args, command.strip())
    args.targets_at = len(md)     # the targets table goes first, once it is known
    md += [f"## {device.type.upper()}: {machine_description(device)}", ""]
    want_scarred = any("x".join(map(str, g)) == STATE_GRID for g in args.grids)
    states = States(device, args.batches, args.dtypes, want_scarred)
    table, headline = table_section(args, states, device)
    md += table
    if states.scarred:
        md += states_section(args, states, device)
    if device.type == "cpu" and not args.quick:
        md += threads_section(args, states, device)
    args.target_rows, args.ours_stdout = [], None
    if device.type == "cpu" and not args.quick and states.scarred:
        md += targets_sections(args, states)
    if device.type != "cuda":
        md += ["## GPU", "", "Unmeasured: no GPU was available to this run (none was lent to the "
               "kernel's session either). The kernel is CPU-only; on CUDA the compiled "
               "path (Triton) serves as before.", ""]
    if args.e2e_repeats:
        md += e2e_section(args)
    if args.target_rows or args.ours_stdout:
        from benchmarks import kernel_targets as kt
        section, rows = kt.exactness_section(args.ours_stdout, args.reference_log)
        md += section
        md = md[:args.targets_at] + kt.targets_table(args.target_rows + rows) + \
            md[args.targets_at:]
    if headline is None:
        raise ValueError(f"the headline configuration {HEADLINE} was not measured: include "
                         f"grid {HEADLINE[0]}, batch {HEADLINE[1]} and {HEADLINE[2]}")
    md += ["## Headline", "", f"{headline['path']} vs the published step at batch 1, {HEADLINE[0]}, "
           f"batch {HEADLINE[1]}, {HEADLINE[2]}, {HEADLINE[3]} state: **{fmt_ratio(headline)}**"
           f" (n = {headline['n']} rounds).", ""]
    print("\n".join(md))
    if args.write_docs:
        write_docs(md)
    print(f"speedup_vs_published_step={headline['mean']:.2f}")


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
