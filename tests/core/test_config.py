"""--config FILE (YAML or JSON), --save-config, --version: common/cli.py."""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from common import cli
from common.cli import RunArgs, arg

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Args(RunArgs):
    study: ClassVar[str] = "toy"
    steps: int = arg(100, "steps", lo=1)
    rate: float = arg(0.5, "a rate", lo=0.0, hi=1.0)
    names: tuple[str, ...] = arg(("a", "b"), "names")
    mode: str = arg("fast", "mode", choices=("fast", "slow"))
    plain: bool = arg(False, "a switch")


QUICK = {"steps": 5, "seeds": 2}


def _parse(argv):
    return cli.parse(Args, argv, quick=QUICK)


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_a_yaml_file_sets_flags_and_the_command_line_wins(tmp_path):
    cfg = _write(tmp_path / "c.yaml", "steps: 7\nrate: 1e-3\nnames: [x, y, z]\n"
                                      "--mode: slow\nplain: true\n")
    a = _parse(["--config", cfg, "--steps", "9"])
    assert (a.steps, a.rate, a.names, a.mode, a.plain) == (9, 0.001, ("x", "y", "z"), "slow", True)
    assert isinstance(a.rate, float)


def test_precedence_defaults_quick_file_command_line(tmp_path):
    cfg = _write(tmp_path / "c.json", json.dumps({"quick": True, "seeds": 4}))
    a = _parse(["--config", cfg])
    assert (a.steps, a.seeds) == (5, 4)         # quick's value, then the file's
    assert _parse(["--config", cfg, "--seeds", "1"]).seeds == 1


@pytest.mark.parametrize("name, text, needle", [
    ("d.yaml", "steps: 3\nsteps: 4\n", "key 'steps' appears twice (line 2)"),
    ("d.json", '{"steps": 3, "steps": 4}', "key 'steps' appears twice"),
    ("u.yaml", "stepz: 3\n", "unknown key 'stepz'"),
    ("t.yaml", "steps: 2.5\n", "steps: 2.5 must be an integer"),
    ("b.yaml", "plain: 1\n", "plain: 1 must be true or false"),
    ("r.yaml", "rate: 7\n", "--rate 7.0: must be in [0.0, 1.0]"),
    ("l.yaml", "- 1\n- 2\n", "must hold a mapping"),
    ("s.yaml", "steps: [\n", "not valid YAML at line 2"),
    ("x.yaml", "!!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ("c.yaml", "config: other.yaml\n", "unknown key 'config'"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, name, text, needle):
    with pytest.raises(ValueError) as info:
        _parse(["--config", _write(tmp_path / name, text)])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_results_file_is_read_through_its_config_block(tmp_path):
    results = {"schema_version": 2, "study": "toy", "seeds": [0],
               "config": {"steps": 11, "rate": 0.25, "names": ["q"], "mode": "slow",
                          "plain": False, "seeds": 3, "seed": 1, "device": None,
                          "out": "somewhere/else", "quick": False, "threads": None,
                          "quiet": True, "format": "png", "dpi": None,
                          "scar_rule": {"rule": "x"}}}      # recorded, not a flag
    a = _parse(["--config", _write(tmp_path / "results.json", json.dumps(results))])
    assert (a.steps, a.rate, a.names, a.seeds, a.seed) == (11, 0.25, ("q",), 3, 1)
    assert a.out is None                       # a rerun never replaces the run it checks
    results["study"] = "other"
    with pytest.raises(ValueError, match="results file of study 'other', not 'toy'"):
        _parse(["--config", _write(tmp_path / "results.json", json.dumps(results))])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_config_writes_what_config_reads(tmp_path, suffix, capsys):
    path = tmp_path / f"saved{suffix}"
    with pytest.raises(SystemExit) as info:
        _parse(["--quick", "--rate", "0.125", "--names", "p", "q", "--save-config", str(path)])
    assert info.value.code == 0 and "wrote the effective flags" in capsys.readouterr().out
    assert _parse(["--config", str(path)]) == _parse(["--quick", "--rate", "0.125",
                                                      "--names", "p", "q"])
    with pytest.raises(ValueError, match="name a .yaml, .yml or .json file"):
        _parse(["--save-config", str(tmp_path / "x.txt")])


def test_version_prints_the_version_and_commit():
    proc = subprocess.run([sys.executable, "scarring_validation.py", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"parametric-scarring {cli.package_version()} (git commit: ")
    assert cli.package_version() not in ("", "unknown")


def test_git_commit_outside_a_checkout_says_so(monkeypatch, tmp_path):
    from common import provenance
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    assert cli.git_commit() == "not a git checkout"
