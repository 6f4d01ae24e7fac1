"""Benchmark the Gray-Scott steppers side by side and write docs/performance.md.

    python -m benchmarks.bench_substrate            # full table (several minutes)
    python -m benchmarks.bench_substrate --quick    # seconds: tiny grids, no compile
    python -m benchmarks.bench_substrate --help

Paths compared, on every grid / batch / dtype (and on CUDA when present):
  published  benchmarks/published.py: our plain re-implementation of the published
             stepper, written from the equations: a separate circularly padded conv2d
             (conv3d for 3D) per field, new tensors every step, and a host sync every
             step (the similarity to the target read back with .item(), as the published
             training loop does for its gate). "published (no sync)" drops that readback.
  eager      substrate.GrayScott(compile=False): gray_scott_step with in-place
             temporaries and the per-step NaN tracking on the device.
  compiled   substrate.GrayScott(compile=True): the torch.compile'd padded-slice kernel,
             writing in place into the other of two padded buffers per field.
Each figure is the best of ROUNDS timing rounds of at least MIN_ROUND_S seconds (the
machine is shared, so the best round is the least disturbed one); the rounds of the
paths are interleaved so every path sees the same load. The last line printed is
`speedup_vs_published_step=<x>`: compiled vs published at 256^2, batch 32, float32.
Not a test: nothing here is asserted.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch

import substrate
from benchmarks.published import Published
from metrics import summarize
from patterns import make_pattern, make_pattern_3d

# ---- knobs (each is a flag) -----------------------------------------------------------
GRIDS = ["128x128", "256x256", "1024x1024", "64x64x64"]
BATCHES = [1, 32]
DTYPES = ["float32", "float64"]
PATHS = ["published", "eager", "compiled"]
SCALING_BATCHES = [1, 4, 8, 16, 32]
VALIDATION_SEEDS = [1, 8, 32]
MIN_ROUND_S = 0.4          # each timing round runs at least this long ...
MAX_ROUND_STEPS = 200      # ... and at most this many steps
ROUNDS = 3
VALIDATION_TIMEOUT_S = 1800
HEADLINE = ("256x256", 32, "float32")
OUT_MD = ROOT / "docs" / "performance.md"

QUICK_GRIDS = ["32x32", "16x16x16"]
QUICK_BATCHES = [1, 4]
QUICK_DTYPES = ["float32"]
QUICK_PATHS = ["published", "eager"]


# ---- timing -------------------------------------------------------------------------------
def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_grid(text):
    dims = tuple(int(x) for x in text.lower().split("x"))
    if len(dims) not in (2, 3) or min(dims) < 3:
        raise ValueError(f"grid {text!r}: want HxW or DxHxW with sides >= 3")
    return dims


def initial_state(grid, batch, dtype, device):
    """A spotted start (target pattern + noise), the same for every path."""
    if len(grid) == 2:
        target = make_pattern("square_spots", *grid, dtype=dtype)
    else:
        target = make_pattern_3d("corner_balls", *grid, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((batch, *grid), generator=g, dtype=torch.float64).to(dtype)
    V = (0.2 * target + 0.1 * noise).clamp(0, 1)
    return target.to(device), V.to(device)


class Runner:
    """One path on one configuration, ready to be timed."""

    def __init__(self, path, grid, batch, dtype, device):
        self.path, self.device = path, device
        target, V = initial_state(grid, batch, dtype, device)
        nd = len(grid)
        if path.startswith("published"):
            F = torch.full(grid, substrate.F0, dtype=dtype, device=device)
            K = torch.full(grid, substrate.K0, dtype=dtype, device=device)
            self.sim = Published(torch.ones_like(V), V, F, K, target, nd,
                                 sync=(path == "published"))
        else:
            gs = substrate.GrayScott(grid[-2], grid[-1], batch=batch,
                                     depth=grid[0] if nd == 3 else None, device=device,
                                     dtype=dtype, compile=(path == "compiled"))
            gs.reset(V=V)
            self.sim = gs
        t = time.perf_counter()
        self.run(1)           # compiles on the compiled path (cached for the process)
        self.first_call_s = time.perf_counter() - t
        self.steps = self.calibrate()

    def run(self, n):
        synchronize(self.device)
        t = time.perf_counter()
        self.sim.step(n)
        synchronize(self.device)
        return time.perf_counter() - t

    def calibrate(self):
        per_step = self.run(1)
        return int(max(1, min(MAX_ROUND_STEPS, math.ceil(MIN_ROUND_S / max(per_step, 1e-6)))))

    def timed_round(self):
        return self.run(self.steps) / self.steps


def measure(paths, grid, batch, dtype, device, rounds):
    """{path: (seconds per step (best round), first call seconds)} with interleaved rounds."""
    runners = {}
    for p in paths:
        try:
            runners[p] = Runner(p, grid, batch, dtype, device)
        except torch.OutOfMemoryError:
            print(f"  {p}: out of memory, skipped", flush=True)
    times = {p: [] for p in runners}
    for _ in range(rounds):
        for p, r in runners.items():
            times[p].append(r.timed_round())
    measure.last_rounds = times   # per-round seconds per step, for paired ratios
    out = {p: (min(times[p]), runners[p].first_call_s) for p in runners}
    if "compiled" in runners and runners["compiled"].sim._last_path != "compiled":
        print("  note: the compiled path fell back to eager (no compiler?)", flush=True)
        out["compiled"] = out["compiled"] + ("fell back to eager",)
    del runners
    return out


def bytes_per_step(grid, batch, itemsize, path):
    """Bytes one step must read and write at the least: U, V in and out (read padded on
    the compiled path) and F, K (shared) once."""
    cells = batch * math.prod(grid)
    if path == "compiled":
        padded = batch * math.prod(g + 2 for g in grid)
        return (2 * padded + 2 * cells + 2 * math.prod(grid)) * itemsize
    return (4 * cells + 2 * math.prod(grid)) * itemsize


def copy_bandwidth(device, dtype=torch.float32, nbytes=256 << 20):
    """Measured device-to-device copy bandwidth (bytes read + written per second)."""
    n = nbytes // torch.tensor([], dtype=dtype).element_size()
    x = torch.rand(n, dtype=dtype, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        t = time.perf_counter()
        y.copy_(x)
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def machine_description(device):
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text


def load_average():
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---- end-to-end ---------------------------------------------------------------------------
def time_script(argv, timeout):
    """Wall time of `python <argv>` from the repository root, including Python start-up
    and (for our script) compilation. Returns (seconds or None, status)."""
    t = time.perf_counter()
    try:
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    return wall, "ok"


# ---- main ---------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grids", nargs="+", default=GRIDS, help="HxW or DxHxW")
    p.add_argument("--batches", nargs="+", type=int, default=BATCHES)
    p.add_argument("--dtypes", nargs="+", default=DTYPES, choices=["float32", "float64"])
    p.add_argument("--paths", nargs="+", default=PATHS,
                   choices=["published", "published_nosync", "eager", "compiled"])
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--validation-seeds", nargs="*", type=int, default=VALIDATION_SEEDS,
                   help="end-to-end scarring_validation.py runs (none to skip)")
    p.add_argument("--validation-timeout", type=int, default=VALIDATION_TIMEOUT_S)
    p.add_argument("--scaling-batches", nargs="*", type=int, default=SCALING_BATCHES)
    p.add_argument("--device", default=None, help="cpu, cuda (default: every one present)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every path and the end-to-end runs (default: "
                        "torch's default); the headline is also measured at 1 and 2 threads")
    p.add_argument("--out-md", default=str(OUT_MD), help="where to write the Markdown report")
    p.add_argument("--quick", action="store_true",
                   help="tiny grids, eager paths only, no end-to-end runs (seconds)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.grids, args.batches, args.dtypes = QUICK_GRIDS, QUICK_BATCHES, QUICK_DTYPES
        args.paths, args.rounds = QUICK_PATHS, 1
        args.validation_seeds, args.scaling_batches = [], []
        global MIN_ROUND_S, MAX_ROUND_STEPS
        MIN_ROUND_S, MAX_ROUND_STEPS = 0.02, 5
    if args.rounds < 1:
        raise ValueError("--rounds must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    grids = [parse_grid(g) for g in args.grids]
    devices = ([torch.device(args.device)] if args.device else
               [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                        else []))
    paths = list(args.paths)
    if "published" in paths and "published_nosync" not in paths and not args.quick:
        paths.insert(1, "published_nosync")
    command = "python -m benchmarks.bench_substrate " + " ".join(
        argv if argv is not None else sys.argv[1:])
    md = ["# Substrate performance", "",
          "Written by `benchmarks/bench_substrate.py` (do not edit by hand).", "",
          f"Command: `{command.strip()}`", "",
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
          f"Load average at start (1/5/15 min): {load_average()}.", "",
          "Paths: **published** = our plain re-implementation of the published stepper "
          "(circular pad + conv2d per field, new tensors each step, the similarity read "
          "back to the host every step); **published (no sync)** = the same without the "
          "readback; **eager** = `GrayScott(compile=False)`; **compiled** = "
          "`GrayScott(compile=True)` (torch.compile, padded-slice kernel writing in place "
          "into ping-pong buffers). Best of "
          f"{args.rounds} interleaved rounds (each >= {MIN_ROUND_S} s or "
          f"{MAX_ROUND_STEPS} steps). 'first call' is the first step including compilation "
          "(the inductor cache in the temp folder makes later processes faster). "
          "'GB/s' = minimal bytes one step must move / time; 'copy %' = that against the "
          "measured device-to-device copy bandwidth.", ""]
    headline, md_headline_rounds = None, None
    for device in devices:
        bw = copy_bandwidth(device)
        md += [f"## {device.type.upper()}: {machine_description(device)}", "",
               f"Measured copy bandwidth: {bw / 1e9:.1f} GB/s (read + write).", ""]
        if device.type == "cpu":
            md += ["The CPU is shared with other jobs while this runs (see the load "
                   "average): every figure is pessimistic, and the ratios, measured in the "
                   "same interleaved rounds, are the robust part.", ""]
        md += ["| grid | batch | dtype | path | ms/step | Mcells/s | vs published | "
               "first call (s) | GB/s | copy % |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for grid in grids:
            for batch in args.batches:
                for dt_name in args.dtypes:
                    dtype = getattr(torch, dt_name)
                    cells = batch * math.prod(grid)
                    label = "x".join(map(str, grid))
                    print(f"[{device.type}] {label} batch {batch} {dt_name} ...", flush=True)
                    res = measure(paths, grid, batch, dtype, device, args.rounds)
                    base = res.get("published", (None,))[0]
                    for p, r in res.items():
                        sec, first = r[0], r[1]
                        note = f" ({r[2]})" if len(r) > 2 else ""
                        ratio = f"{base / sec:.1f}x" if base else "-"
                        gbs = bytes_per_step(grid, batch, dtype.itemsize, p) / sec
                        name = "published (no sync)" if p == "published_nosync" else p
                        md.append(f"| {label} | {batch} | {dt_name} | {name}{note} | "
                                  f"{sec * 1e3:.2f} | {cells / sec / 1e6:.1f} | {ratio} | "
                                  f"{first:.2f} | {gbs / 1e9:.2f} | {100 * gbs / bw:.0f}% |")
                        print(f"    {name:20s} {sec * 1e3:9.2f} ms/step "
                              f"{cells / sec / 1e6:9.1f} Mcells/s  {ratio}", flush=True)
                    if device.type == "cpu" and (label, batch, dt_name) == HEADLINE and base:
                        best = "compiled" if "compiled" in res else (
                            "eager" if "eager" in res else None)
                        if best:
                            headline = (base / res[best][0], best,
                                        res.get("published_nosync", (None,))[0] and
                                        res["published_nosync"][0] / res[best][0])
                            rounds = measure.last_rounds
                            paired = [a / b for a, b in zip(rounds["published"],
                                                            rounds[best])]
                            md_headline_rounds = summarize(paired)
        md.append("")
        if device.type == "cpu" and not args.quick:
            md += threads_section(device, args)
        if args.scaling_batches:
            md += scaling_section(device, args)
    if not any(d.type == "cuda" for d in devices):
        md += ["## GPU", "", "No GPU was available to this run: the GPU table (and the "
               "fraction of the card's copy bandwidth reached at 1024^2) is pending. The "
               "code is device-agnostic; run `python -m benchmarks.bench_substrate` on a "
               "CUDA machine to fill it in.", ""]
    if args.validation_seeds:
        md += validation_section(args)
    if headline is None:  # quick mode or a custom grid list: use the first configuration
        headline = quick_headline(grids[0], args.batches[-1], args.dtypes[0], devices[0],
                                  paths)
    ratio, best, nosync = headline
    where = (f"{HEADLINE[0]}, batch {HEADLINE[1]}, {HEADLINE[2]}, CPU" if not args.quick
             else "the quick configuration")
    md += ["## Headline", "",
           f"{best} vs published stepper at {where}: **{ratio:.1f}x** (best rounds)"
           + (f"; {nosync:.1f}x vs the published step without its per-step sync"
              if nosync else "") + "."]
    if md_headline_rounds is not None and md_headline_rounds["n"] > 1:
        st = md_headline_rounds
        md.append(f"Paired per-round ratios: mean {st['mean']:.1f}x, 95% interval "
                  f"[{st['ci95_low']:.1f}, {st['ci95_high']:.1f}] over {st['n']} rounds.")
    md.append("")
    out = Path(args.out_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md) + "\n")
    print(f"wrote {out}")
    if nosync:
        print(f"speedup_vs_published_step_nosync={nosync:.2f}")
    print(f"speedup_vs_published_step={ratio:.2f}")


def quick_headline(grid, batch, dt_name, device, paths):
    res = measure([p for p in paths if p in ("published", "eager", "compiled")], grid, batch,
                  getattr(torch, dt_name), device, 1)
    best = "compiled" if "compiled" in res else "eager"
    return res["published"][0] / res[best][0], best, None


def threads_section(device, args):
    """The headline configuration at 1 and 2 CPU threads (same process, interleaved)."""
    grid, batch, dt_name = parse_grid(HEADLINE[0]), HEADLINE[1], HEADLINE[2]
    md = [f"### Threads ({HEADLINE[0]}, batch {batch}, {dt_name})", "",
          "With 2 OpenMP threads every parallel region waits until both cores are free; on "
          "this shared machine that wait (often a scheduler time slice, ~10-30 ms) can "
          "dominate a step, so the thread count changes the figures a lot.", "",
          "| threads | path | ms/step | Mcells/s | vs published |", "|---|---|---|---|---|"]
    saved = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"[cpu] threads={threads} headline ...", flush=True)
        res = measure(["published", "published_nosync", "eager", "compiled"], grid, batch,
                      getattr(torch, dt_name), device, args.rounds)
        for p, r in res.items():
            name = "published (no sync)" if p == "published_nosync" else p
            md.append(f"| {threads} | {name} | {r[0] * 1e3:.2f} | "
                      f"{batch * math.prod(grid) / r[0] / 1e6:.1f} | "
                      f"{res['published'][0] / r[0]:.1f}x |")
    torch.set_num_threads(saved)
    return md + [""]


def scaling_section(device, args):
    """Compiled 256^2 float32: ms/step against batch, and total time against steps."""
    grid, dtype = (256, 256), torch.float32
    md = [f"### Scaling on {device.type.upper()} (compiled path, 256^2, float32)", "",
          "| batch | ms/step | Mcells/s | ms/step per member |", "|---|---|---|---|"]
    print(f"[{device.type}] scaling ...", flush=True)
    for batch in args.scaling_batches:
        sec = measure(["compiled"], grid, batch, dtype, device, args.rounds)["compiled"][0]
        md.append(f"| {batch} | {sec * 1e3:.2f} | {batch * 65536 / sec / 1e6:.1f} | "
                  f"{sec * 1e3 / batch:.3f} |")
    r = Runner("compiled", grid, 8, dtype, device)
    md += ["", "| steps (batch 8) | total s | ms/step |", "|---|---|---|"]
    for n in (50, 100, 200, 400):
        best = min(r.run(n) for _ in range(2))
        md.append(f"| {n} | {best:.3f} | {best / n * 1e3:.2f} |")
    gs_short = {}
    for mode in ("auto", False):
        _, V = initial_state(grid, 1, dtype, device)
        gs = substrate.GrayScott(256, 256, batch=1, device=device, compile=mode)
        gs.reset(V=V)
        t = time.perf_counter()
        gs.step(100)
        synchronize(device)
        gs_short[mode] = (time.perf_counter() - t, gs._last_path)
    md += ["", "Short run (256^2, batch 1, 100 steps, a fresh medium): compile='auto' took "
           f"{gs_short['auto'][0]:.2f} s on the {gs_short['auto'][1]} path, compile=False "
           f"{gs_short[False][0]:.2f} s: 'auto' does not compile a run this small "
           f"(threshold {substrate.AUTO_COMPILE_WORK:.0e} cell-updates, or a shape "
           "already compiled in this process).", ""]
    return md


def validation_section(args):
    """End to end, same machine, one after the other: the published protocol (one seed,
    benchmarks/published.py) and our default scarring_validation.py run for N seeds."""
    md = ["## End to end: scarring_validation.py against the published protocol", "",
          "Wall time of each command from a fresh Python process, start-up, compilation "
          "(inductor's disk cache warm after the first run), figures and videos included; "
          f"OMP_NUM_THREADS={torch.get_num_threads()}. The published side is "
          "`benchmarks/published.py`: our plain re-implementation of the published "
          "single-seed protocol (5400 published steps at batch 1, a host sync every step). "
          "It draws no figures or videos, so it is faster than the published script "
          "itself (which the issue puts at about 15 s on this machine).", "",
          "| command | seeds | wall s | s per seed | status |", "|---|---|---|---|---|"]
    rows = [(["-m", "benchmarks.published"], 1, "python -m benchmarks.published")]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.validation_seeds:
            rows.append((["scarring_validation.py", "--seeds", str(n), "--out",
                          str(Path(tmp) / f"s{n}")], n,
                         f"python scarring_validation.py --seeds {n}"))
        for argv, n, label in rows:
            print(f"{label} ...", flush=True)
            wall, status = time_script(argv, args.validation_timeout)
            md.append(f"| `{label}` | {n} | {'-' if wall is None else f'{wall:.1f}'} | "
                      f"{'-' if wall is None else f'{wall / n:.2f}'} | {status} |")
            print(f"    {status} {wall}", flush=True)
    return md + [""]


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
