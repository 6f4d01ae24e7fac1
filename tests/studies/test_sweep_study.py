"""The sweep study (experiments/sweep.py): the script end to end at a tiny size, resuming
after a hard kill, bad grid input, --help without torch, the submitit path; the runner
against the main study and against itself in smaller batches; the regime classifier and
the per-point verdicts on hand-made cases."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import regimes
from experiments import sweep as study
from tests.schema_check import check_results

ROOT = Path(__file__).resolve().parents[2]
# 2 x 2 points x 2 seeds at 24 x 24, a few steps; --batch 2: 4 chunks of one point each
TINY = ["--quick", "--grid", "24", "--train-steps", "60", "--recall-steps", "20",
        "--grid-f0", "0.03,0.05", "--grid-k0", "0.055,0.06", "--seeds", "2", "--batch", "2",
        "--device", "cpu", "--quiet"]
COLUMNS = ["f0", "k0", "seed", "grid", "scar_strength", "cue_strength", "train_scarred_cosine",
           "train_control_cosine", "total_scar_strength", "cue_cosine", "cue_iou",
           "scarred_recall_cosine", "control_recall_cosine", "uncued_recall_cosine",
           "scarred_recall_iou", "control_recall_pearson", "improvement_ratio", "regime",
           "recall_regime"]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "experiments.sweep", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    proc = run(*TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.mark.slow
def test_tiny_sweep_writes_the_table_heatmaps_and_envelope(tiny):
    out, proc = tiny
    rows = study.sweep.read_table(out / "table.csv")
    assert len(rows) == 2 * 2 * 2
    assert [(r["f0"], r["k0"], r["seed"]) for r in rows[:3]] == [
        (0.03, 0.055, 0), (0.03, 0.055, 1), (0.03, 0.06, 0)]     # grid order, then seeds
    assert all(c in rows[0] for c in COLUMNS)
    assert all(r["scar_strength"] == 0.003 for r in rows)   # the constant, not the measure
    for r in rows:
        for key in ("cue_cosine", "scarred_recall_cosine", "control_recall_cosine"):
            assert -1 <= r[key] <= 1
        assert r["regime"] in regimes.REGIMES and r["recall_regime"] in regimes.REGIMES
    # a seed's cue is the same draw at every point (the main study's noise)
    for seed in (0, 1):
        assert len({r["cue_cosine"] for r in rows if r["seed"] == seed}) == 1
    report = check_results(out / "sweep.json")
    assert report["study"] == "sweep" and report["smoke_run"] is True
    assert report["grid"] == {"f0": [0.03, 0.05], "k0": [0.055, 0.06]}
    assert report["cost"]["chunks"] == 4 and len(report["points"]) == 4
    assert all(p["n"] == 2 for p in report["points"])
    for name in report["figures"] + ["table.csv"]:
        assert (out / name).stat().st_size > 0, name
    assert {"scarred_recall.png", "control_recall.png", "ratio.png", "uncued_recall.png",
            "holds.png", "regime.png"} <= set(report["figures"])
    assert (out.parent / "run.chunks" / "chunks").is_dir()     # the work folder stays
    assert (out.parent / "run.chunks" / study.cli.CHUNKS_MARKER).is_file()   # not a study's
    assert "SMOKE RUN" in proc.stdout


# The sweep with its runner wrapped to SIGKILL the process (no clean-up, like a power cut)
# when called for the (N+1)-th time, i.e. after N chunk files were written. Test-only: the
# script itself has no such hook.
KILLER = """
import functools, os, signal, sys
import experiments.sweep as study
limit, calls, real = int(sys.argv[1]), [], study.run_points

@functools.wraps(real)   # same name, so the same chunk hashes
def run_points(*args, **kwargs):
    calls.append(1)
    if len(calls) > limit:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

study.run_points = run_points
study.main(sys.argv[2:])
"""


def run_killed_after(chunks, *args):
    return subprocess.run([sys.executable, "-c", KILLER, str(chunks), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_table(tiny, tmp_path):
    out = tmp_path / "run"
    killed = run_killed_after(2, *TINY, "--out", str(out))
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()                                  # nothing half-written
    assert len(list((tmp_path / "run.chunks" / "chunks").glob("*.json"))) == 2
    resumed = run(*TINY, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    report = check_results(out / "sweep.json")
    assert report["cost"]["skipped"] == 2 and report["cost"]["done"] == 2
    assert (out / "table.csv").read_bytes() == (tiny[0] / "table.csv").read_bytes()


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_table(tiny, tmp_path):
    pytest.importorskip("submitit", reason="submitit (optional, for Slurm) is not installed")
    out = tmp_path / "run"
    proc = run(*TINY, "--out", str(out), "--executor", "slurm", "--slurm-cluster", "local",
               "--batch", "8")                     # one array task (each starts Python)
    assert proc.returncode == 0, proc.stderr
    # the same rows whatever the executor and the chunking
    assert (out / "table.csv").read_bytes() == (tiny[0] / "table.csv").read_bytes()
    assert any((tmp_path / "run.chunks" / "submitit").glob("*_log.out"))


@pytest.mark.parametrize("argv, words", [
    (["--grid-f0", "0.06:0.02:3"], "--grid-f0 '0.06:0.02:3': lo=0.06 > hi=0.02"),
    (["--grid-k0", "0.05:0.06"], "a range is lo:hi:n"),
    (["--grid-f0", "0.02,x"], "'x' is not a number"),
    (["--grid-f0", "0.005,0.03"], "grid point (f0=0.005): --f0 0.005: must lie in the scar"),
    (["--grid-train-steps", "10.5"], "--train-steps 10.5: must be an integer"),
    (["--grid-du", "0.1,5"], "grid point (du=5): unstable"),
    (["--batch", "0"], "batch=0 must be an integer >= 1"),
    (["--work", "WORK_INSIDE_OUT"], "must lie outside --out"),
])
def test_bad_grid_input_is_refused_before_any_work(argv, words, tmp_path):
    argv = [str(tmp_path / "o" / "w") if a == "WORK_INSIDE_OUT" else a for a in argv]
    with pytest.raises(ValueError) as err:
        study.parse_args(["--quick", "--out", str(tmp_path / "o"), *argv])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_grid_input_gives_one_line_and_exit_code_2(tmp_path):
    proc = run("--quick", "--out", str(tmp_path / "o"), "--grid-f0", "0.06:0.02:3")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --grid-f0 '0.06:0.02:3': lo=0.06 > hi=0.02 (need lo <= hi)"]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.chunks").exists()


def test_help_lists_the_sweep_flags():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "experiments.sweep",
                           "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "experiments.sweep" in imported or "protocol" in imported   # the log works
    assert "torch" not in imported and "numpy" not in imported
    assert "--grid-f0" in proc.stdout and "--slurm-partition" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert "per chunk (default 60)" in text and "processes (default 2; --quick: 1)" in text


# ------------------------------------------------------------------ the runner in-process

def tiny_settings(**over):
    from protocol import Protocol
    p = Protocol(grid=24, train_steps=60, recall_steps=20, multi_train_steps=30,
                 multi_recall_steps=20)
    return {**study.protocol_fields(p), "device": "cpu", **over}


def test_a_point_in_a_batch_equals_the_point_alone():
    """Per-member F0/K0: members do not see each other (phase 3 included)."""
    fixed = {k: v for k, v in tiny_settings(phase3=True).items() if k not in ("f0", "k0")}
    points = [{"f0": 0.03, "k0": 0.06}, {"f0": 0.05, "k0": 0.055}]
    batch = study.run_points(points, [0, 1], **fixed)
    alone = study.run_points(points[1:], [1], **fixed)[0]
    for key, value in alone.items():
        if isinstance(value, float):
            assert batch[3][key] == pytest.approx(value, abs=1e-6), key
        else:
            assert batch[3][key] == value, key


def test_the_published_point_matches_the_main_study():
    """Same noise draws, rule and medium as scarring_validation's phases 1 and 2."""
    import torch

    import patterns
    import scarring
    import scarring_validation as main_study
    from protocol import Protocol

    fixed = tiny_settings()
    row = study.run_points([{"f0": fixed.pop("f0"), "k0": fixed.pop("k0")}], [3], **fixed)[0]
    p = Protocol(grid=24, train_steps=60, recall_steps=20, record_every=10)
    s = scarring.Study(p, torch.device("cpu"))
    target = patterns.make_pattern("square_spots", 24, 24)
    p1 = main_study.phase1(s, target, [3])
    p2 = main_study.phase2(s, target, p1["F"], p1["K"], [3])
    expected = {"train_scarred_cosine": p1["arms"]["scarred"]["final"]["cosine"],
                "train_control_cosine": p1["arms"]["control"]["final"]["cosine"],
                "total_scar_strength": p1["scar_strength"],
                "cue_cosine": p2["cue_metrics"]["cosine"],
                **{f"{a}_recall_{m}": p2["arms"][a]["final"][m]
                   for a in ("scarred", "control", "uncued") for m in ("cosine", "iou")}}
    for key, value in expected.items():
        assert row[key] == pytest.approx(float(value[0]), abs=1e-5), key


# ------------------------------------------------------------------ the regime classifier

def disc(n, cy, cx, r):
    y, x = np.mgrid[:n, :n]
    dy, dx = (y - cy + n / 2) % n - n / 2, (x - cx + n / 2) % n - n / 2   # on the torus
    return dy ** 2 + dx ** 2 <= r ** 2


@pytest.mark.parametrize("name, field", [
    ("decays", np.zeros((64, 64))),
    ("fills", np.full((64, 64), 0.3)),
    ("spots", 0.5 * (disc(64, 10, 10, 4) | disc(64, 40, 30, 5) | disc(64, 20, 50, 3))),
    ("spots", 0.5 * disc(64, 0, 0, 6)),                     # one disc across both edges
    ("stripes", 0.5 * (np.arange(64)[:, None] % 8 < 4) * np.ones((1, 64))),
    ("holes", 0.5 * ~(disc(64, 10, 10, 5) | disc(64, 40, 40, 6) | disc(64, 50, 12, 5)
                      | disc(64, 25, 35, 5) | disc(64, 12, 40, 4) | disc(64, 45, 60, 5))),
])
def test_regime_classifier_on_hand_made_fields(name, field):
    assert regimes.classify_regime(field)["regime"] == name


def test_periodic_labels_join_pieces_across_the_edges():
    mask = disc(32, 0, 0, 5)
    labels = regimes.periodic_labels(mask)
    assert len(np.unique(labels[mask])) == 1
    assert len(np.unique(regimes.periodic_labels(disc(32, 16, 16, 3) | disc(32, 0, 16, 3))[
        disc(32, 16, 16, 3) | disc(32, 0, 16, 3)])) == 2


def test_point_verdicts_use_the_means_and_both_interval_ends():
    def rows(f0, recalls, controls):
        return [{"f0": f0, "seed": s, "scarred_recall_cosine": a, "control_recall_cosine": b,
                 "improvement_ratio": a / max(b, 0.01), "regime": "spots",
                 "recall_regime": "spots"} for s, (a, b) in enumerate(zip(recalls, controls))]
    points = study.summarize_points(
        rows(0.01, [0.90, 0.91, 0.92], [0.30, 0.31, 0.30])        # holds surely
        + rows(0.02, [0.60, 0.95, 0.75], [0.30, 0.30, 0.30])      # mean 0.767: holds, unsure
        + rows(0.03, [0.95, 0.95, 0.95], [0.80, 0.80, 0.80])      # ratio 1.19: fails
        + rows(0.04, [0.95, 0.96, 0.94], [0.0, 0.02, 0.001]), ["f0"])  # control ~ 0: holds
    assert [(p["holds"], p["holds_at_ci_low"], p["holds_at_ci_high"]) for p in points] == [
        (True, True, True), (True, False, True), (False, False, False), (True, True, True)]
    assert points[3]["control_recall_cosine"][1] == 0.0     # the interval stays in [0, 1]
    assert points[3]["improvement_ratio"][1] >= 0.0
    o = study.overview(points)
    assert (o["holds_on_mean"], o["holds_at_ci_low"], o["holds_at_ci_high"]) == (3, 2, 3)


def test_heatmap_axes_prefer_f0_k0_and_skip_single_values():
    assert study.figure_axes({"f0": [0.03], "k0": [0.06]}) is None
    assert study.figure_axes({"grid": [64, 128], "f0": [0.02, 0.03], "k0": [0.05, 0.06],
                              "gate": [0.5]}) == ("f0", "k0", ["grid"])
    assert study.figure_axes({"cue_strength": [0.1, 0.2], "gate": [0.3, 0.5]}) == (
        "cue_strength", "gate", [])
