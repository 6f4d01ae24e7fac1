"""The shared command line (common/cli.py) and the protocol's constants (protocol.py)."""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import pytest

from common import cli
from common.cli import RunArgs, arg
from protocol import ROLES, Protocol, noise_seeds


@dataclass
class Toy(RunArgs):
    study: ClassVar[str] = "toy"
    steps: int = arg(100, "steps", lo=1)
    rate: float = arg(0.5, "a rate", lo=0.0, hi=1.0, hi_open=True)
    names: tuple[str, ...] = arg(("a",), "names", choices=("a", "b"))
    sizes: tuple[int, ...] = arg((1, 2), "sizes", lo=1)
    label: Optional[str] = arg(None, "a label")
    flag: bool = arg(False, "a switch")


QUICK = {"steps": 5, "sizes": (1,)}


def test_flags_come_from_the_fields_with_help_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.parse(Toy, ["--help"], quick=QUICK)
    text = capsys.readouterr().out
    for flag in ("--steps", "--rate", "--names", "--sizes", "--label", "--flag", "--seeds",
                 "--seed", "--device", "--out", "--quick", "--threads", "--quiet"):
        assert flag in text
    assert "(default: 100; --quick: 5)" in text


def test_quick_shrinks_defaults_but_never_an_explicit_flag():
    a = cli.parse(Toy, ["--quick"], quick=QUICK)
    assert (a.steps, a.sizes, a.quick) == (5, (1,), True)
    b = cli.parse(Toy, ["--quick", "--steps", "70"], quick=QUICK)
    assert b.steps == 70 and b.sizes == (1,)
    c = cli.parse(Toy, ["--steps", "70", "--sizes", "3", "4"], quick=QUICK)
    assert (c.steps, c.sizes, c.quick) == (70, (3, 4), False)


def test_no_abbreviated_flags_and_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse(Toy, ["--ste", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: unrecognized arguments")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "0"], "--steps 0: must be >= 1"),
    (["--rate", "1"], "--rate 1.0: must be in [0.0, 1.0)"),
    (["--rate", "nan"], "--rate nan: must be a finite number"),
    (["--rate=-inf"], "--rate -inf: must be a finite number"),
    (["--sizes", "2", "0"], "--sizes 0: must be >= 1"),
    (["--seed", str(2 ** 63)], "--seed"),
    (["--threads", "0"], "--threads 0"),
    (["--out", ""], "--out ''"),
])
def test_each_bad_value_is_named_with_its_range(argv, needle):
    with pytest.raises(ValueError, match=".*") as exc:
        cli.parse(Toy, argv)
    assert needle in str(exc.value)


def test_protocol_defaults_are_the_published_constants_and_validate():
    p = Protocol()
    cli.validate(p)
    assert (p.f0, p.k0, p.du, p.dv, p.dt, p.decay) == (0.037, 0.060, 0.16, 0.08, 1.0, 0.9995)
    assert (p.scar_strength, p.k_ratio, p.match_threshold, p.gate) == (0.003, 0.5, 0.3, 0.5)
    import scarring

    rule = scarring.storage_rule(p)
    assert (rule.strength, rule.F_max, rule.K_min, rule.F0, rule.K0) == (0.003, 0.08, 0.03,
                                                                          0.037, 0.060)
    with pytest.raises(ValueError, match="unstable"):
        scarring.check_protocol(Protocol(dt=9.0))
    with pytest.raises(ValueError, match="--f0 0.5"):
        cli.validate(Protocol(f0=0.5))
    with pytest.raises(ValueError, match="--rule 'x'"):
        scarring.check_protocol(Protocol(rule="x"))


def test_noise_seeds_are_distinct_per_role_and_index_and_batch_free():
    drawn = {s for role in ROLES for i in range(3) for s in noise_seeds([0, 1, 7], role, i)}
    assert len(drawn) == len(ROLES) * 3 * 3
    assert noise_seeds([7], "cue", 2) == noise_seeds([0, 7], "cue", 2)[1:]
    with pytest.raises(ValueError):
        noise_seeds([0], "cue", 10_000)


def test_staged_output_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "run"
    with cli.staged_output(out, "toy") as stage:
        (stage / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first" and (out / cli.MARKER).is_file()
    with pytest.raises(KeyboardInterrupt):
        with cli.staged_output(out, "toy") as stage:
            (stage / "b.txt").write_text("second")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == sorted([cli.MARKER, "a.txt", "index.html"])
    with cli.staged_output(out, "toy") as stage:
        (stage / "c.txt").write_text("third")
    assert sorted(p.name for p in out.iterdir()) == sorted([cli.MARKER, "c.txt", "index.html"])
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_foreign_folder_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by a run"):
        with cli.staged_output(tmp_path, "toy"):
            pass
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_json_is_strict_and_tensors_become_lists(tmp_path):
    import torch

    path = cli.write_json_atomic(tmp_path / "r.json", {"x": torch.tensor([1.5, float("nan")]),
                                                        "y": float("inf"), "z": torch.float32})
    assert json.loads(path.read_text()) == {"x": [1.5, None], "y": None, "z": "torch.float32"}


def test_envelope_keys(tmp_path):
    a = cli.parse(Toy, ["--out", str(tmp_path / "o")])
    env = cli.envelope(a, [0], "cpu", 1.0)
    assert env["study"] == "toy" and env["schema_version"] == cli.SCHEMA_VERSION
    assert env["config"]["steps"] == 100 and env["smoke_run"] is False
    assert env["git_commit"] == "not a git checkout" or len(env["git_commit"].split("-")[0]) == 40
    assert env["package_version"] == cli.package_version() != "unknown"


def test_lazy_module_imports_on_first_use():
    import sys
    mod = cli.lazy("json")
    assert mod.dumps([1]) == "[1]" and mod.loads is sys.modules["json"].loads


SCRIPTS = ["scarring_validation", "benchmarks.bench_substrate"] + sorted(
    f"experiments.{p.stem}" for p in (Path(__file__).parents[2] / "experiments").glob("*.py")
    if p.stem != "__init__")
HEAVY = {"torch", "matplotlib", "librosa", "soundfile", "scipy"}


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_script_answers_help_without_its_heavy_imports(module):
    """--help is instant: it must not import torch, plotting or audio libraries."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--quick" in proc.stdout
    for common_flag in ("--format", "--dpi", "--config", "--save-config", "--version"):
        assert common_flag in proc.stdout, common_flag
    if module != "benchmarks.bench_substrate":   # a study (the benchmark is none)
        assert "--init-from" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "common.cli" in imported   # the import log was read
    assert not HEAVY & imported, sorted(HEAVY & imported)
