"""Tests for the store/recall path (scarring.py) and the four memory studies.

Hand-made cases with known answers for the read-outs, invariants of storage and recall
on tiny grids, and every study's --quick run end to end (run concurrently, once).
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metrics
import patterns
import scarring
from protocol import Protocol, noise_seeds
from substrate import F0, K0
from tests.schema_check import check_results

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("cue_specificity", "capacity", "robustness", "ablations")


# ----------------------------------------------------------------- read-outs, hand-made

def test_discrimination_per_seed_known_answers():
    eye = torch.eye(3)
    same = torch.full((3, 3), 0.6)              # same recall whatever the cue: an imprint
    m = torch.stack([eye, same, 0.5 * eye + 0.2])
    d = metrics.discrimination_per_seed(m)
    assert torch.allclose(d, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64))


def test_discrimination_picks_the_stored_block():
    # 4 cues x 3 patterns; only cues 0, 1 and patterns 0, 1 are the stored square block
    m = torch.zeros(1, 4, 3)
    m[0, 0, 0], m[0, 1, 1] = 0.9, 0.7
    m[0, 0, 1], m[0, 1, 0] = 0.1, 0.3
    m[0, 2:, :] = 5.0                           # rows outside the block must not count
    d = metrics.discrimination_per_seed(m, rows=[0, 1], cols=[0, 1])
    assert d.item() == pytest.approx(((0.9 - 0.1) + (0.7 - 0.3)) / 2)
    with pytest.raises(ValueError):
        metrics.discrimination_per_seed(m, rows=[0, 1], cols=[0])


def test_capacity_readout_known_answers():
    ks = [1, 2, 4, 8, 16]
    # recall falls below 0.7 at k = 8
    assert metrics.capacity_readout(ks, [0.9, 0.85, 0.8, 0.6, 0.9]) == 4
    # discrimination's interval touches chance at k = 4 (k = 1 has none)
    assert metrics.capacity_readout(ks, [0.9] * 5, [None, 0.2, -0.01, 0.3, 0.3]) == 2
    # a pass after a failure does not count: capacity is the unbroken run from the start
    assert metrics.capacity_readout(ks, [0.5, 0.9, 0.9, 0.9, 0.9]) == 0
    assert metrics.capacity_readout(ks, [0.9] * 5, [None, 0.1, 0.1, 0.1, 0.1]) == 16
    assert metrics.capacity_readout(ks, [0.9, float("nan"), 0.9, 0.9, 0.9]) == 1
    with pytest.raises(ValueError):
        metrics.capacity_readout([1, 4, 2], [0.9] * 3)
    with pytest.raises(ValueError):
        metrics.capacity_readout(ks, [0.9] * 4)


# ----------------------------------------------------------------- patterns and noise

def test_slot_patterns_equal_area_and_disjoint():
    p = patterns.slot_patterns(8, 64, 64, slots_per_side=8, spots=8, seed=3, disjoint=True)
    assert p.shape == (8, 64, 64)
    areas = (p > 0).flatten(1).sum(1)
    assert len(set(areas.tolist())) == 1 and areas[0] > 0
    assert ((p > 0).sum(0) <= 1).all()          # no cell in two disjoint patterns
    q = patterns.slot_patterns(20, 64, 64, spots=8, seed=3, disjoint=False)
    assert len(set((q > 0).flatten(1).sum(1).tolist())) == 1
    assert ((q > 0).sum(0) > 1).any()           # independent draws do overlap
    with pytest.raises(ValueError):
        patterns.slot_patterns(9, 64, 64, spots=8, disjoint=True)


def test_noise_seeds_distinct_and_cues_batch_independent():
    a = noise_seeds([0, 1], "train", 0) + noise_seeds([0, 1], "cue", 0)
    assert len(set(a)) == 4
    t = torch.zeros(2, 16, 16)
    t[0, 4:8, 4:8] = 0.8
    both = scarring.make_cues(t, 0.2, 0.05, seeds=[5, 6])
    alone = scarring.make_cues(t, 0.2, 0.05, seeds=[6])
    assert both.shape == (2, 2, 16, 16)
    assert torch.equal(both[1], alone[0])       # a seed gives the same cue in any batch
    assert not torch.equal(both[0, 0], both[0, 1])  # cue c and cue c' get different noise
    with pytest.raises(ValueError):
        scarring.make_cues(t, 1.5, 0.05, seeds=[0])


# ----------------------------------------------------------------- storage and recall

def test_store_without_rule_leaves_fields_and_with_rule_scars_only_the_target():
    t = torch.zeros(1, 24, 24)
    t[0, 6:18, 6:18] = 0.8                       # a big square: trains above the gate
    study = scarring.Study(Protocol(grid=24, gate=0.0), "cpu")
    ctrl = study.store(t, [0, 1], steps=30, scar=False)
    assert torch.all(ctrl["F"] == F0) and torch.all(ctrl["K"] == K0)
    assert torch.all(ctrl["scar_strength"] == 0)
    scar = study.store(t, [0, 1], steps=30, snapshots=(1,))
    changed = (scar["F"] != F0) | (scar["K"] != K0)
    assert changed.any()
    assert not changed[:, t[0] == 0].any()       # scars only where the target is
    assert torch.all(scar["scar_strength"] > 0)
    assert torch.equal(scar["snapshots"][1][0], scar["F"])


def test_recall_shapes_zero_cue_and_damage():
    S, C, P, H = 2, 3, 2, 16
    pats = torch.zeros(P, H, H)
    pats[0, :8], pats[1, 8:] = 0.8, 0.8
    cues = torch.zeros(S, C, H, H)
    cues[:, 1, :8] = 0.5
    cues[:, 2] = 0.3
    study = scarring.Study(Protocol(grid=H), "cpu")
    res = study.recall(F0, K0, cues, pats, steps=5, damage=torch.ones(H, H), damage_step=3)
    for key in ("initial", "before_damage", "after_damage", "final"):
        for m in metrics.METRIC_NAMES:
            assert res[key][m].shape == (S, C, P)
            assert torch.isfinite(res[key][m]).all()
    # an all-zero V stays zero: every similarity is 0 (reference empty rule)
    assert torch.all(res["final"]["cosine"][:, 0] == 0)
    # the cue of pattern 0 matches pattern 0 at step 0 and not pattern 1
    assert torch.allclose(res["initial"]["cosine"][:, 1, 0], torch.ones(S))
    assert torch.all(res["initial"]["cosine"][:, 1, 1] == 0)
    # a lesion over the whole grid empties V
    assert torch.all(res["after_damage"]["cosine"] == 0)
    with pytest.raises(ValueError):
        study.recall(F0, K0, cues, pats, steps=5, damage=torch.ones(H, H))


# ----------------------------------------------------------------- the studies, end to end

@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Run every study's --quick mode once (concurrently) into a temporary folder."""
    base = tmp_path_factory.mktemp("memory_quick")
    # one thread each: four small runs side by side on a shared 2-core machine
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    for name in SCRIPTS:
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"experiments.{name}", "--quick", "--seeds", "2",
             "--device", "cpu", "--out", str(base / name)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name} failed: {err[-2000:]}"
        results[name] = check_results(base / name / f"{name}.json")
        assert (base / name / f"{name}.png").is_file()
        assert "SMOKE RUN" in out
    return results


def _all_finite(obj):
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


@pytest.mark.slow
def test_cue_specificity_quick(quick_runs):
    r = quick_runs["cue_specificity"]
    mx = r["matrix"]
    C, P = len(mx["cues"]), len(mx["patterns"])
    assert P == 5 and C >= 10
    for m in ("cosine", "iou", "pearson"):
        assert len(mx[m]["mean"]) == C and all(len(row) == P for row in mx[m]["mean"])
        assert len(mx[m]["per_seed"]) == 2
        assert math.isfinite(r["discrimination"][m]["mean"])
    assert len(mx["initial"]["cosine"]["mean"]) == C
    assert r["seeds"] == [0, 1]
    assert _all_finite(r["matrix"]) and _all_finite(r["discrimination"])


@pytest.mark.slow
def test_capacity_quick(quick_runs):
    r = quick_runs["capacity"]
    assert set(r["by_k"]) == {"1", "2", "4"}
    for k, e in r["by_k"].items():
        for m in ("cosine", "iou", "pearson"):
            assert math.isfinite(e[m]["mean_recall"]["mean"])
            assert len(e[m]["mean_recall"]["per_seed"]) == 2
            assert (e[m]["discrimination"] is None) == (k == "1")
    assert set(r["capacity"]) == {"overlapping", "disjoint"}
    assert all(isinstance(v, int) for v in r["capacity"]["overlapping"].values())
    assert _all_finite(r["by_k"])


@pytest.mark.slow
def test_robustness_quick(quick_runs):
    r = quick_runs["robustness"]
    assert set(r["groups"]) == {"strength", "noise", "damage"}
    assert [row["value"] for row in r["groups"]["damage"]] == ["none", "disc", "left half"]
    for row in r["groups"]["strength"]:
        for arm in ("scarred", "control"):
            assert math.isfinite(row[arm]["cosine"]["final"]["mean"])
    assert _all_finite(r["groups"])


@pytest.mark.slow
def test_ablations_quick(quick_runs):
    r = quick_runs["ablations"]
    assert "reference" in r["conditions"]
    ref = r["conditions"]["reference"]
    for m in ("cosine", "iou", "pearson"):
        assert math.isfinite(ref[m]["recall"]["mean"])
        assert ref["minus_reference"][m]["recall"]["mean"] == 0.0
    assert _all_finite(r["conditions"])


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "0"], "--seeds 0"), (["--ks", "0", "2"], "--ks 0"),
    (["--quick", "--ks", "0"], "--ks 0"),          # --quick never overrides an explicit flag
    (["--ks", "4", "2"], "must increase"), (["--gate", "5"], "--gate 5.0")])
def test_bad_input_gives_one_line_error(tmp_path, capsys, argv, needle):
    """Bad flags end in one 'error:' line and exit code 2 (in-process: no extra start-up)."""
    from common import cli
    from experiments import capacity

    with pytest.raises(SystemExit) as exc:
        cli.run_cli(lambda: capacity.main(argv + ["--out", str(tmp_path / "o")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_quick_keeps_explicit_flags():
    from common import cli
    from experiments import capacity

    args = cli.parse(capacity.Args, ["--quick", "--ks", "1", "3", "--grid", "48"],
                     quick=capacity.QUICK)
    assert args.ks == (1, 3) and args.grid == 48            # explicit flags win
    assert args.multi_train_steps == capacity.QUICK["multi_train_steps"]   # quick shrinks the rest
