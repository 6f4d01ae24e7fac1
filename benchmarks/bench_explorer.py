"""Frames per second of the explorer as a user sees them: in the page, in a real browser.

    python -m benchmarks.bench_explorer            # 128^2 and 256^2, 5 rounds of 3 s each
    python -m benchmarks.bench_explorer --quick    # 64^2, 2 rounds of 1 s

Starts `python -m explorer` (its own process, as users run it), opens the page in the
system chromium (Playwright, headless), and for each grid and mode counts the frames the
page draws in each round: "recall" (the medium running freely after a uniform kick of
0.2, which lights it everywhere: the most activity there is) and "training" (the rule's
scar update fused into each step). Both at the page's default speed (10 steps a frame)
and the server's frame cap (30 frames/s). Frames/s is the mean over rounds with a 95%
t interval (stats.summarize); the browser, the server and the rest of the machine share
its cores, so the load average is printed beside it. Beside it, the server's own cost: the
CPU time (time.process_time, one torch thread) of one frame, advance and encoding, of an
explorer.session.Session in this process, and the frame rate that cost allows on one
free core. Nothing is asserted.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from common import cli
from common.cli import arg


@dataclass
class Args:
    grids: tuple[int, ...] = arg((128, 256), "grid sides to measure", lo=16, hi=512)
    rounds: int = arg(5, "rounds per grid and mode", lo=2, hi=100)
    round_s: float = arg(3.0, "seconds per round", lo=0.5, hi=60.0)
    speed: int = arg(10, "steps per frame (the page's default)", lo=1, hi=200)
    quick: bool = arg(False, "a smoke run: 64^2, 2 rounds of 1 s")


QUICK = {"grids": (64,), "rounds": 2, "round_s": 1.0}


def _count_frames(page, seconds: float) -> float:
    start = page.evaluate("window.explorer.state.frames")
    time.sleep(seconds)
    return (page.evaluate("window.explorer.state.frames") - start) / seconds


def cpu_per_frame(grid: int, mode: str, speed: int, frames: int) -> float:
    """Seconds of CPU per frame (advance + encode) of a Session, in this process."""
    import torch

    from explorer.session import Session

    torch.set_num_threads(1)
    session = Session(tempfile.mkdtemp(prefix="bench_explorer_"), grid=grid)
    session.steps_per_frame = speed
    session.apply({"type": "train", "steps": 10 ** 6} if mode == "training"
                  else {"type": "kick", "level": 0.2, "noise": 0.0})
    for _ in range(3):                   # warm up
        session.advance()
    start = time.process_time()
    for _ in range(frames):
        session.advance()
        session.frame()
    return (time.process_time() - start) / frames


def main(argv=None) -> None:
    args = cli.parse(Args, argv, description=__doc__.splitlines()[0], quick=QUICK)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ImportError("playwright is not installed (pip install playwright)") from None
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise FileNotFoundError("no chromium on this machine (apt-get install chromium)")
    from stats import summarize

    folder = tempfile.mkdtemp(prefix="bench_explorer_")
    server = subprocess.Popen([sys.executable, "-m", "explorer", "--port", "0", "--folder",
                               folder, "--threads", "1"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(bypass_csp=True)
            page.goto(url)
            page.wait_for_function("window.explorer && window.explorer.state.server")
            send = "window.explorer.send"
            print(f"machine: {os.cpu_count()} CPUs, load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (before)")
            for grid in args.grids:
                page.evaluate(f"{send}({{type: 'new', grid: {grid}, rule: 'match_map'}})")
                page.wait_for_function(f"window.explorer.state.server.grid === {grid}")
                page.evaluate(f"{send}({{type: 'speed', steps: {args.speed}}})")
                page.evaluate(f"{send}({{type: 'kick', level: 0.2}})")   # warm up, unmeasured
                time.sleep(1.0)
                for mode in ("recall", "training"):
                    rates = []
                    for _ in range(args.rounds):
                        start = ({"type": "kick", "level": 0.2} if mode == "recall"
                                 else {"type": "train", "steps": 20_000})
                        if mode == "training":
                            page.evaluate(f"{send}({{type: 'new', grid: {grid}, "
                                          f"rule: 'match_map'}})")
                        page.evaluate(f"{send}({start!r})".replace("'", "\""))
                        time.sleep(0.3)
                        rates.append(_count_frames(page, args.round_s))
                        page.evaluate(f"{send}({{type: 'pause'}})")
                    s = summarize(rates)
                    costs = summarize([cpu_per_frame(grid, mode, args.speed, 20)
                                       for _ in range(args.rounds)])
                    print(f"{grid}x{grid} {mode:8s} in the page {s['mean']:5.1f} frames/s "
                          f"[{s['ci95_low']:.1f}, {s['ci95_high']:.1f}] (n = {len(rates)} "
                          f"rounds of {args.round_s:g} s, {args.speed} steps/frame); server "
                          f"CPU {costs['mean'] * 1e3:.1f} ms/frame [{costs['ci95_low'] * 1e3:.1f}, "
                          f"{costs['ci95_high'] * 1e3:.1f}] = {1 / costs['mean']:.0f} "
                          f"frames/s on one free core; rounds {' '.join(f'{r:.0f}' for r in rates)}")
            print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} (after)")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    cli.run_cli(main)
