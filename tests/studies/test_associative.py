"""experiments/associative.py: the script end to end at a tiny size, one-line errors for
bad flags, and its read-out helpers on made-up arrays."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import associative as assoc
from tests.schema_check import check_results
from models import associative as battery

ROOT = Path(__file__).resolve().parents[2]


def _run(*flags, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "experiments.associative", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("assoc") / "run"
    r = _run("--quick", "--rules", "junction", "learned", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out, check_results(out / "associative.json"), r.stdout


@pytest.mark.slow
def test_quick_run_writes_every_output_and_the_read_outs(quick_run):
    out, res, stdout = quick_run
    for name in ("associative.json", "associative_rows.png", "associative_capacity.png",
                 "associative_targets.png"):
        assert (out / name).is_file()
    assert res["smoke_run"] and res["study"] == "associative"
    assert set(res["conditions"]) == {"junction", "learned"}
    j = res["conditions"]["junction"]
    for when in ("step0", "read", "settled"):
        half_b = j[when]["parts"]["B 0.5"]
        assert set(half_b) == {"completion", "own", "kept_fraction"}
        assert 0.45 <= half_b["kept_fraction"]["mean"] <= 0.55
    # a 20% cue lies below the 0.3 mask threshold: its IoU is 0 at step 0, and completion
    # by IoU is undefined there (the full cue's own IoU on the missing cells is 0 too)
    assert j["step0"]["parts"]["B 0.5"]["own"]["iou"]["mean"] == 0.0
    assert j["step0"]["parts"]["B 0.5"]["completion"]["iou"]["mean"] is None
    # uniform V without noise is the same start in every seed: one measurement at step 0
    assert all(v["largest"]["cosine"]["method"] == "exact" for v in j["step0"]["uniform"].values())
    assert j["verdict"]["of"] == 3 * 3 + len(j["settled"]["uniform"]) + 2
    assert j["capacity"]["ks"] == [1, 3] and j["capacity"]["by_k"]["3"]["cued"] == [0, 2]
    learned = res["conditions"]["learned"]
    assert learned["learning"]["lambda"] in (1e-3, 1e-2)
    assert "match_map_same_grid" in learned and "capacity" not in learned
    ring = res["references"]["connected_shape_alone"]["ring"]
    assert ring["steps"][0] == 0 and ring["steps"][-1] == 60
    assert ring["scarred"]["half"]["completion"]["cosine"]["n"] >= 1
    assert len(ring["unscarred"]["quarter"]["cosine"]) == len(ring["steps"])
    hop = res["references"]["modern_hopfield"]
    assert set(hop["capacity"]["by_k"]) == {"1", "3"}
    assert res["verdict"]["closest"] in res["conditions"]
    assert "SMOKE RUN" in stdout


@pytest.mark.parametrize("flags, says", [
    (["--rules", "nope"], "--rules"),
    (["--rule", "surround", "--settle-min", "50", "--settle-steps", "40"], "--settle-min"),
    (["--ks", "3", "1"], "--ks"),
    (["--uniform-levels", "1.5"], "--uniform-levels"),
    (["--rules", "channel", "channel"], "repeated"),
])
def test_bad_flags_give_one_error_line(flags, says):
    r = _run("--quick", *flags, "--out", "/nonexistent/never", timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr


def test_rule_flag_runs_one_condition():
    args = assoc.cli.parse(assoc.Args, ["--rule", "channel"], quick=assoc.QUICK)
    assert args.rules == ("channel",)
    assert assoc.cli.parse(assoc.Args, [], quick=assoc.QUICK).rules == assoc.CONDITIONS


# ---- helpers on made-up arrays -------------------------------------------------------------

def test_stat_reports_identical_seeds_as_exact_and_bounds_the_interval():
    same = battery.stat([0.4, 0.4, 0.4])
    assert same["method"] == "exact" and same["ci95_low"] == same["ci95_high"] == pytest.approx(0.4)
    s = battery.stat([0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    assert 0.0 <= s["ci95_low"] < s["mean"] < s["ci95_high"] <= 1.0 and s["n"] == 8
    nan = battery.stat([0.5, float("nan"), 0.7])
    assert nan["n"] == 2 and nan["nan_seeds"] == 1 and nan["per_seed"][1] is None


def test_masked_iou_and_completion_pair():
    target = torch.zeros(4, 4)
    target[:, :2] = 0.8
    keep = torch.zeros(4, 4, dtype=torch.bool)
    keep[:2, :2] = True
    full = target[None].clone()
    half = (target * keep)[None]
    pair = battery.completion_pair(full, full, target, keep)
    assert pair["cosine"].item() == pytest.approx(1.0) and pair["iou"].item() == 1.0
    dark = battery.completion_pair(half, full, target, keep)
    assert dark["cosine"].item() == 0.0 and dark["iou"].item() == 0.0
    # grown beyond the pattern: IoU on the missing cells only counts those cells
    region = ~keep & (target > 0.3)
    assert battery.masked_iou(torch.ones(1, 4, 4), target, region).item() == 1.0
    assert math.isnan(battery.completion_pair(half, half, target, keep)["iou"].item())


def test_percolation_sees_a_spanning_cluster():
    scar = torch.zeros(2, 6, 6, dtype=torch.bool)
    scar[0, 2, :] = True                          # a row from edge to edge
    scar[1, 2, 1:5] = True                        # stops short of both edges
    p = battery.percolation(scar)
    assert p["spans_the_grid"]["k"] == 1
    assert p["largest_cluster_share"]["per_seed"] == pytest.approx([6 / 36, 4 / 36])


def test_judge_uses_the_far_end_of_each_interval():
    def s(mean, lo=None, hi=None):
        return {"mean": mean, "ci95_low": lo, "ci95_high": hi}
    good = {"parts": {f"{n} 0.5": {"completion": {"cosine": s(0.9, 0.85, 0.95)}}
                      for n in battery.NAMES},
            "selectivity_half": {n: {"cosine": s(0.6, 0.55, 0.65)} for n in battery.NAMES},
            "stored": {n: {"cosine": s(0.95, 0.92, 0.97)} for n in battery.NAMES},
            "uniform": {"0.12": {"largest": {"cosine": s(0.0)}}},
            "never_stored": {"on": {"largest": {"cosine": s(0.2, 0.1, 0.29)}}}}
    assert assoc.judge(good)["all"]
    good["never_stored"]["on"]["largest"]["cosine"] = s(0.2, 0.1, 0.35)   # upper end too high
    v = assoc.judge(good)
    assert not v["all"] and v["passed"] == v["of"] - 1


def test_part_masks_nest_and_keep_their_fraction():
    ring = torch.zeros(64, 64, dtype=torch.bool)
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    d = ((x - 32) ** 2 + (y - 32) ** 2).float().sqrt()
    ring[(d > 10) & (d < 15)] = True
    a = battery.part_masks(ring, "arc", 0.25, [0, 1], salt=1)
    b = battery.part_masks(ring, "arc", 0.5, [0, 1], salt=1)
    assert (a & ~b).sum() == 0                          # nested: same start per seed
    assert abs(b[0].sum().item() / ring.sum().item() - 0.5) < 0.05
    assert not torch.equal(b[0], b[1])                 # drawn per seed


def test_held_out_family_has_the_asked_number_of_discs():
    """--blob-count 1 makes every held-out pattern one connected disc; the default, four
    separate discs (patterns drawn per seed, the same for the same seed)."""
    from scipy.ndimage import label

    one = battery.held_out(3, 64, [0, 1], count=1)
    four = battery.held_out(3, 64, [0, 1], count=4)
    assert one.shape == four.shape == (2, 3, 64, 64)
    assert all(label(p.numpy() > 0)[1] == 1 for p in one.flatten(0, 1))
    assert max(label(p.numpy() > 0)[1] for p in four.flatten(0, 1)) > 1
    assert torch.equal(battery.held_out(3, 64, [1], count=1)[0], one[1])


@pytest.mark.slow
def test_battery_condition_target_times_both_paths_and_compares_read_outs():
    from benchmarks import kernel_targets as kt
    md, rows = kt.battery_condition_target(rounds=1, seeds=1, grid=32, settle_steps=60,
                                           settle_min=40)
    assert len(rows) == 3 and all(r["met"] in ("met", "not met") for r in rows)
    text = "\n".join(md)
    assert "1 seeds x 29 cues = 29 recalls at 32x32" in text and "kernel" in text
    # 60 steps: the compiled path's last-bit differences have not grown yet
    assert float(rows[2]["measured"]) < 5e-4 and rows[2]["met"] == "met"
