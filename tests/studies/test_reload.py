"""A run of the main script reloads: fields.npz is a saved state (common/state.py),
--init-from continues it, --replot redraws its figures without simulating, and its
results.json, read back as --config, reruns it to the same numbers."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import scarring
import scarring_validation as sv
from common.state import load_state
from substrate import GrayScott

TINY = ["--quick", "--grid", "32", "--train-steps", "60", "--recall-steps", "20",
        "--multi-train-steps", "20", "--multi-recall-steps", "10", "--device", "cpu",
        "--quiet", "--seeds", "2"]
PNGS = ["target.png", "phase1_training.png", "phase2_recall.png", "phase3_recall.png",
        "scar_maps.png", "summary.png"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reload") / "run"
    sv.main([*TINY, "--save-frames", "--out", str(out)])
    return out


def _numbers(results):
    return {k: results[k] for k in ("phase1", "phase2", "phase3", "curves")}


def test_fields_npz_is_a_state_file_that_reloads_as_a_medium(first_run):
    state = load_state(first_run / "fields.npz")
    assert state["V"].shape == (2, 32, 32) and state["step"] == 60 and state["seeds"] == [0, 1]
    assert state["rule"]["rule"] == "match_map" and state["protocol"]["grid"] == 32
    assert {"phase2_scarred_V", "phase3_F", "target", "frames_phase1_scarred"} <= set(
        state["extra"])
    results = json.loads((first_run / "results.json").read_text())
    assert results["package_version"] and results["git_commit"]
    gs = GrayScott.load(first_run / "fields.npz", compile=False)
    assert gs.steps_taken == 60 and gs.decay == results["config"]["decay"]
    assert torch.equal(gs.F, state["F"]) and gs.F.max() > results["config"]["f0"]   # scarred


def test_replot_redraws_every_figure_without_simulating(first_run, tmp_path, monkeypatch):
    def no_simulation(*a, **kw):
        raise AssertionError("--replot simulated")

    monkeypatch.setattr(scarring.Study, "store", no_simulation)
    monkeypatch.setattr(scarring.Study, "recall", no_simulation)
    monkeypatch.setattr(GrayScott, "run", no_simulation)
    out = tmp_path / "again"
    sv.main(["--replot", str(first_run), "--out", str(out)])
    for name in PNGS:   # the same pixels as the run drew
        a, b = (np.asarray(Image.open(d / name)) for d in (first_run, out))
        assert a.shape == b.shape and np.array_equal(a, b), name
    assert (out / "phase1_training.mp4").stat().st_size > 0


def test_replot_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        from common import cli
        cli.run_cli(lambda: sv.main(["--replot", str(tmp_path)]))
    assert info.value.code == 2
    assert "needs results.json and fields.npz" in capsys.readouterr().err


def test_results_json_as_config_reruns_to_the_same_numbers(first_run, tmp_path):
    out = tmp_path / "rerun"
    sv.main(["--config", str(first_run / "results.json"), "--no-video", "--out", str(out)])
    a, b = (json.loads((d / "results.json").read_text()) for d in (first_run, out))
    assert _numbers(a) == _numbers(b)
    assert a["config"]["train_steps"] == b["config"]["train_steps"] == 60


def test_init_from_continues_training_exactly(first_run, tmp_path):
    """60 steps, saved, then 60 more from the saved state = 120 steps in one go."""
    cont, whole = tmp_path / "continued", tmp_path / "whole"
    sv.main([*TINY, "--no-video", "--init-from", str(first_run / "fields.npz"),
             "--out", str(cont)])
    sv.main(["--config", str(first_run / "results.json"), "--train-steps", "120",
             "--no-video", "--out", str(whole)])
    a, b = (load_state(d / "fields.npz") for d in (cont, whole))
    assert a["step"] == b["step"] == 120
    started = json.loads((cont / "results.json").read_text())["init_from"]
    assert started["step"] == 60 and started["path"].endswith("fields.npz")
    for k in "UVFK":
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("flags, needle", [
    (["--grid", "48"], "the saved state's grid is 32x32 but this run's is 48x48"),
    (["--seeds", "3"], "holds 2 batch members but this run has 3"),
])
def test_init_from_is_checked_against_the_grid_and_seeds(first_run, tmp_path, capsys,
                                                        flags, needle):
    from common import cli

    with pytest.raises(SystemExit):
        cli.run_cli(lambda: sv.main([*TINY, *flags, "--init-from",
                                     str(first_run / "fields.npz"), "--out",
                                     str(tmp_path / "o")]))
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
