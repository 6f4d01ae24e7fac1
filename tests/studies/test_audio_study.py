"""experiments/audio.py: end to end at a tiny size, its read-outs on known cases, and one
clear line for each bad input. The script runs in this process (main(argv)) so that the
slow imports (torch, librosa, matplotlib) are paid once for the whole file."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import metrics
import stats
from common import cli
from experiments import audio as study
from tests.schema_check import check_results

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "fsdd"
SCHEMA = json.loads((ROOT / "docs" / "results.schema.json").read_text())
ENVELOPE = {**SCHEMA["$defs"]["envelope"], "$defs": SCHEMA["$defs"]}


def tiny_audio_dir(path: Path) -> Path:
    """Three digits: jackson's recordings 0 (templates) and 5 (held out), theo's 0."""
    path.mkdir()
    for digit in (0, 1, 2):
        for name in (f"{digit}_jackson_0.wav", f"{digit}_jackson_5.wav", f"{digit}_theo_0.wav"):
            shutil.copy(ASSETS / name, path / name)
    return path


def run(argv, capsys):
    """The script as the command line runs it: (exit code, stderr)."""
    code = 0
    try:
        cli.run_cli(lambda: study.main(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- read-outs, known cases

def test_sign_test_counts_units_and_drops_ties():
    medium = torch.tensor([1.0, 1.0, 0.5, 0.0, 1.0])
    cue = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0])
    r = stats.sign_test(medium, cue, ("medium", "cue"))
    assert (r["medium_better"], r["cue_better"]) == (2, 1)
    assert r["p_value"] == pytest.approx(1.0)
    assert stats.sign_test(torch.ones(3), torch.ones(3))["p_value"] == 1.0


def test_nearest_gives_no_answer_for_a_tie():
    sims = torch.tensor([[0.1, 0.9, 0.3], [0.0, 0.0, 0.0], [0.5, 0.2, 0.5]])
    assert metrics.nearest(sims).tolist() == [1, -1, -1]


def test_mechanism_counts_other_templates_lit_cells():
    T = torch.zeros(1, 2, 4, 4)
    T[0, 0, :2], T[0, 1, 2:] = 0.8, 0.8           # two disjoint halves
    V = T.clone()
    V[0, 0, 2, :2] = 1.0                          # recall of 0 also lights 2 of 1's 8 cells
    raw = {"templates": T, "V": V, "labels": torch.tensor([0, 1])}
    m = study.mechanism(raw, slice(0, 2))
    assert m["others_exclusive_lit"] == pytest.approx((2 / 8 + 0) / 2)
    assert m["template_union_area"] == 1.0 and m["template_area"] == 0.5


# ---------------------------------------------------------------- the script, end to end

@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, capsys):
    audio_dir = tiny_audio_dir(tmp_path / "wavs")
    out = tmp_path / "out"
    code, err = run(["--quick", "--quiet", "--threads", "1", "--vowel-sets", "3",
                     "--vowel-grid", "24", "--audio-dir", str(audio_dir),
                     "--template-recordings", "0", "--sonify", "--out", str(out)], capsys)
    assert code == 0, err
    res = check_results(out / "audio.json")
    assert list(res)[:3] == ["schema_version", "study", "command"] and res["smoke_run"]
    body = res["rules"]["match_map"]
    single = body["published"]["single_a"]
    assert 0 <= single["recall"]["mean"] <= 1 and single["published"]["ratio"] == 1.97
    digits = body["digits"]["contiguous"]
    assert digits["classes"] == ["0", "1", "2"] and digits["grid"] == study.QUICK["digit_grid"]
    assert body["vowels"]["3"]["islands"]["grid"] == 24      # each part on its own grid
    held, others = digits["groups"]["held_out"], digits["groups"]["other_speakers"]
    assert held["n_units"] == 3 and others["n_units"] == 3
    assert held["chance"] == pytest.approx(1 / 3)
    for block in (held, others, body["vowels"]["3"]["islands"]["groups"]["all"]):
        for m in study.METHODS:
            a = block["accuracy"][m]
            assert 0 <= a["ci95_low"] <= a["mean"] <= a["ci95_high"] <= 1
        counts = torch.tensor(block["confusion"]["medium"])
        assert counts.shape[1] == counts.shape[0] + 1          # last column: no answer
        assert int(counts.sum()) == block["n_units"] * (1 if block["unit"] == "seed x cue"
                                                        else len(res["config"]["digit_seed_list"]))
    for name in ("audio_accuracy.png", "audio_confusion_digits.png",
                 "audio_examples_digits_islands.png", "audio_examples_published_three.png",
                 *digits["sonification"]):
        assert (out / name).stat().st_size > 0, name


def test_missing_audio_dir_is_one_line(tmp_path, capsys):
    code, err = run(["--quick", "--parts", "digits", "--audio-dir", str(tmp_path / "none"),
                     "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--audio-dir" in err and "not found" in err
    assert not (tmp_path / "out").exists()


def test_folder_without_fsdd_names_is_one_line(tmp_path, capsys):
    (tmp_path / "wavs").mkdir()
    shutil.copy(ASSETS / "0_jackson_0.wav", tmp_path / "wavs" / "zero.wav")
    code, err = run(["--quick", "--parts", "digits", "--audio-dir", str(tmp_path / "wavs"),
                     "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "{digit}_{speaker}_{index}.wav" in err


def test_bad_wav_is_one_line_naming_the_file(tmp_path, capsys):
    wavs = tiny_audio_dir(tmp_path / "wavs")
    (wavs / "1_theo_0.wav").write_bytes(b"RIFF not really a wave file")
    code, err = run(["--quick", "--parts", "digits", "--audio-dir", str(wavs),
                     "--template-recordings", "0", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "1_theo_0.wav" in err and "cannot read" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, words", [
    (["--template-speaker", "nobody"], ["--template-speaker", "jackson"]),
    (["--template-recordings", "9", "--audio-dir", "WAVS"], ["--template-recordings", "1 digit"]),
    (["--rules", "match_map", "no_such_rule"], ["no_such_rule", "channel"]),
])
def test_other_bad_inputs_are_one_line(argv, words, tmp_path, capsys):
    wavs = tiny_audio_dir(tmp_path / "wavs")
    shutil.copy(ASSETS / "0_jackson_9.wav", wavs)    # digit 0 only has a recording 9
    argv = [str(wavs) if a == "WAVS" else a for a in argv]
    code, err = run(["--quick", "--parts", "digits", *argv, "--out", str(tmp_path / "o")],
                    capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err, err


def test_missing_audio_package_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "soundfile" else real(name, *a))
    code, err = run(["--quick", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "soundfile" in err and "pip install" in err and "librosa" not in err


def test_help_lists_the_audio_flags():
    r = subprocess.run([sys.executable, "-m", "experiments.audio", "--help"], check=False,
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--audio-dir", "--rules", "--rule", "--parts", "--quick", "--seeds",
                 "--device", "--out", "--sonify"):
        assert flag in r.stdout, flag
