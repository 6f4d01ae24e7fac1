"""The sequences and composition studies: their interval summaries, the pieces the
scripts add to models/sequences.py (filming, the lit fraction outside the items, the
raised schedule, depth-coding any rule) and the imprint's scar-mask prediction on
hand-made grids, then both scripts end to end at a tiny size (--quick, run concurrently,
once), bad input as one line, and --help without torch."""
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
import torch

import scarring
from models import sequences as sq

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "results.schema.json").read_text())


# ----------------------------------------------------------------- replay and storage pieces

def test_replay_films_chosen_runs_and_counts_lit_cells_outside():
    H = W = 20
    disc = torch.zeros(H, W)
    disc[6:14, 6:14] = 0.8
    F, K = sq.layout_fields(disc[None] > 0, [(0.08, 0.03)])
    cues = torch.stack([0.5 * disc, torch.zeros(H, W)])          # lit cue, empty cue
    outside = torch.ones(H, W, dtype=torch.bool)
    outside[4:16, 4:16] = False                                   # away from the disc
    r = sq.replay(F, K, cues, disc[None], steps=30, record_every=10, frame_steps=(5, 30),
                  frame_members=[(0, 1), (0, 0)], outside=outside)
    assert r["frame_steps"] == [5, 30] and r["frames"].shape == (2, 2, H, W)
    assert torch.all(r["frames"][:, 0] == 0)                      # member (0, 1): empty cue
    assert r["frames"][1, 1].max() > 0.2                          # member (0, 0): lit disc
    assert r["steps"].tolist() == [0, 10, 20, 30]                 # records unchanged by films
    assert r["lit_outside"].shape == (4, 1, 2) and torch.all(r["lit_outside"][:, 0, 1] == 0)
    with pytest.raises(ValueError, match="frame_members"):
        sq.replay(F, K, cues, disc[None], steps=10, frame_members=[(0, 2)])
    with pytest.raises(ValueError, match="frame_steps"):
        sq.replay(F, K, cues, disc[None], steps=10, frame_steps=(11,))


def test_death_schedule_offset_raises_the_medium_from_the_start():
    plain = sq.death_schedule([0.057, 0.04], fill=100, hold=50)
    raised = sq.death_schedule([0.052, 0.035], fill=100, hold=50, offset=0.005)
    assert raised.at(0)[1] == pytest.approx(0.005) and raised.at(100)[1] == pytest.approx(0.005)
    # items stored `offset` deeper die when the plain schedule kills them
    for t in (150, 200, 10_000):
        assert raised.at(t)[1] - 0.005 == pytest.approx(plain.at(t)[1])
    with pytest.raises(ValueError, match="offset"):
        sq.death_schedule([0.05], 10, 10, offset=-0.001)


@dataclass(frozen=True)
class NoSaturation(scarring.StorageRule):
    name: ClassVar[str] = "no_saturation_test"
    rate: float = 0.1


def test_depth_rule_moves_each_rules_saturation_point():
    mm = sq.depth_rule(scarring.ScarRule(), 0.08, 0.045)
    assert (mm.F_max, mm.K_min) == (0.08, 0.045) and mm.K_max == scarring.ScarRule().K_max
    channel = sq.depth_rule(scarring.make_rule("channel"), 0.07, 0.04)
    assert (channel.F_on, channel.K_on) == (0.07, 0.04)
    with pytest.raises(ValueError, match="no_saturation_test"):
        sq.depth_rule(NoSaturation(), 0.08, 0.04)


def test_imprint_mask_lights_the_scarred_regions_the_cue_touches():
    from experiments.composition import imprint_mask

    F = torch.full((1, 12, 12), 0.037)
    K = torch.full((1, 12, 12), 0.060)
    F[0, 2:4, 2:9] = 0.08                       # scar 1: a bar
    F[0, 4:9, 7:9] = 0.08                       # ... joined to a leg (one region)
    K[0, 9:11, 0:2] = 0.03                      # scar 2: a corner block (K only)
    cue = torch.zeros(12, 12)
    cue[2:4, 2:4] = 0.8                         # lands on the bar only
    m = imprint_mask(F, K, (0.037, 0.060), cue)
    assert m[0, 8, 8] and m[0, 2, 8]            # the whole connected scar lights
    assert not m[0, 10, 0] and not m[0, 0, 0]   # the untouched scar and bare medium do not
    assert m.sum() == 2 * 7 + 5 * 2
    near = torch.zeros(12, 12)
    near[7:9, 0:2] = 0.8                        # one cell above the corner block
    assert not imprint_mask(F, K, (0.037, 0.060), near)[0, 10, 0]
    assert imprint_mask(F, K, (0.037, 0.060), near, reach=1)[0, 10, 0]


# ----------------------------------------------------------------- the scripts end to end

QUICK = {
    "sequences": ["--conditions", "depth_schedule_stored", "unscarred_schedule"],
    "composition": [],
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("sequence_studies")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", f"experiments.{name}", "--quick", "--seeds", "2", "--device",
         "cpu", "--threads", "1", "--out", str(base / name), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, extra in QUICK.items()}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name} failed: {stderr[-2000:]}"
        assert "SMOKE RUN" in stdout
        out[name] = (json.loads((base / name / f"{name}.json").read_text()), base / name)
    return out


def _finite(obj):
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


@pytest.mark.slow
def test_sequences_quick(quick_runs):
    r, out = quick_runs["sequences"]
    jsonschema.validate(r, SCHEMA)
    assert r["study"] == "sequences" and r["smoke_run"] and r["seeds"] == [0, 1]
    for png in ("reference", "frames", "random", "summary"):
        assert (out / f"sequences_{png}.png").is_file()
    ref = r["reference"]
    assert list(ref["conditions"]) == ["depth_schedule_stored", "unscarred_schedule"]
    cue = ref["conditions"]["depth_schedule_stored"]["cues"]["cue A"]
    assert cue["exact_order"]["n"] == 2 and cue["exact_order"]["method"] == "clopper_pearson"
    assert len(cue["peak_height"]) == 3 and len(cue["curve"]["mean"][0]) == 3
    assert all(0 <= s["ci95_low"] <= s["ci95_high"] <= 1 for s in cue["peak_height"])
    assert len(cue["curve"]["mean"]) == len(ref["record_steps"])
    assert set(r["random"]["lengths"]) == {"3"}
    L3 = r["random"]["lengths"]["3"]["conditions"]
    assert set(L3) == {"depth_schedule_stored", "depth_schedule_stored_dead",
                       "depth_schedule_painted", "unscarred_schedule"}
    assert set(L3["unscarred_schedule"]) == {"cue first"}
    nets = r["hopfield"]["32"]["reference"]
    assert set(nets) == {"asymmetric", "asymmetric_delay", "modern"}
    assert -1 <= nets["modern"]["cue first"]["kendall_tau"]["mean"] <= 1
    assert any(name.startswith("reference") for name in r["targets"])
    assert _finite(ref) and _finite(r["random"])


@pytest.mark.slow
def test_composition_quick(quick_runs):
    r, out = quick_runs["composition"]
    jsonschema.validate(r, SCHEMA)
    assert r["study"] == "composition" and r["smoke_run"]
    assert (out / "composition_table.png").is_file() and (out / "composition_frames.png").is_file()
    for family, cases in (("strokes", {"a", "a_L", "b", "whole", "c", "d", "d_ref"}),
                          ("scenes", {"a", "b", "b_places", "whole", "c", "d", "d_ref"})):
        fam = r["families"][family]
        assert set(fam["cases"]) == cases
        for row in fam["cases"].values():
            for when in ("cue_step0", "recall", "settled", "unscarred_settled", "imprint_settled"):
                assert set(row[when]) == {"cosine", "iou"}
                assert 0 <= row[when]["cosine"]["mean"] <= 1
            assert row["imprint_predicts"]
        assert isinstance(fam["verdict"]["composes"], bool)
        assert len(fam["additivity"]) == 2
    assert _finite(r["families"])


@pytest.mark.parametrize("script, argv, needle", [
    ("sequences", ["--lengths", "1"], "--lengths 1"),
    ("sequences", ["--conditions", "telepathy"], "telepathy"),
    ("sequences", ["--lengths", "12", "--random-spacing", "0.01"], "needs K < 0"),
    ("composition", ["--settle-steps", "100"], "--settle-steps 100"),
    ("composition", ["--families", "poems"], "poems")])
def test_bad_input_gives_one_line_error(tmp_path, capsys, script, argv, needle):
    from common import cli

    module = __import__(f"experiments.{script}", fromlist=["main"])
    with pytest.raises(SystemExit) as exc:
        cli.run_cli(lambda: module.main(argv + ["--out", str(tmp_path / "o")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


