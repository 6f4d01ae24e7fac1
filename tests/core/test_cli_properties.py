"""Property-based tests of every script's command line (hypothesis): random values for
every flag give either a clear refusal (exit 2 with one line on stderr, or the one line
run_cli prints for the exception) or a run, never a traceback. Most draws stop at the
start of the run (cli.start), so they check parsing and every up-front check in a few
milliseconds; one slow test runs the main study end to end on random small settings and
finds no NaN in its results."""
import contextlib
import dataclasses
import importlib
import io
import json
import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import cli, sweep

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["scarring_validation"] + sorted(
    f"experiments.{p.stem}" for p in (ROOT / "experiments").glob("*.py")
    if p.stem != "__init__")
PATH_FIELDS = {"out", "work", "cache", "target_image", "audio_dir", "nca_weights",
               "mnist_dir", "weights", "target"}
EXAMPLES = 6    # per script: parse-and-check draws are milliseconds each


class Started(Exception):
    """Raised in place of cli.start: every check before the run's work has passed."""


def junk():
    return st.sampled_from(["", " ", "x", "-1", "1e999", "nan", "0x10", "1,2", "3.5", "--"])


def number(kind):
    if kind is int:
        return st.one_of(st.integers(-3, 400), st.sampled_from([0, 2 ** 31, 10 ** 12, 2 ** 63]))
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.floats(-2.0, 2.0), st.sampled_from([0.0, 1e-300, 1e300]))


def paths(tmp: Path):
    return st.sampled_from([str(tmp / "new"), str(tmp / "file.txt"), str(tmp / "folder"),
                            str(tmp / "foreign"), "", " ", str(tmp / "file.txt" / "below")])


def valid_number(meta, kind):
    """A value inside the field's range (a run), small where the range allows."""
    lo = meta["lo"] if meta["lo"] is not None else 0
    hi = meta["hi"] if meta["hi"] is not None else lo + 100
    if kind is int:
        return st.integers(int(math.ceil(lo)) + meta["lo_open"], int(min(hi, lo + 100)))
    return st.floats(lo, hi, exclude_min=meta["lo_open"], exclude_max=meta["hi_open"],
                     allow_nan=False)


def field_values(draw, f, kind, sequence, tmp):
    """Command-line tokens for one field: mostly values it accepts, else out-of-range
    numbers, junk text, empty strings, files where folders belong and the like."""
    meta = f.metadata
    if kind is bool:
        return []
    if f.name in PATH_FIELDS:
        one = paths(tmp)
    elif meta["choices"] is not None:
        one = st.one_of(st.sampled_from([str(c) for c in meta["choices"]]), junk())
    elif kind in (int, float):
        one = st.one_of(valid_number(meta, kind).map(str), number(kind).map(str), junk())
    else:
        one = st.one_of(st.sampled_from(["cpu", "cuda", "meta", "match_map"]), junk(),
                        st.text(max_size=6))
    if sequence:
        return draw(st.lists(one, min_size=0, max_size=3))
    return [draw(one)]


GRID_SPEC = st.one_of(st.sampled_from(["0.03,0.05", "0.02:0.06:3", "0.05:0.02:3", "", "x",
                                        "0.01:0.08:1000000000", "0.03,0.03"]),
                      st.text(alphabet="0123456789.:,-e", max_size=10))
SWEEP_FLAGS = {   # the sweep's own flags beside its dataclass (argparse, common/sweep.py)
    "--grid-f0": GRID_SPEC, "--grid-k0": GRID_SPEC, "--grid-train-steps": GRID_SPEC,
    "--grid-file": st.sampled_from(["", "missing.yaml"]),
    "--batch": st.one_of(st.integers(-1, 100).map(str), junk()),
    "--workers": st.one_of(st.integers(-1, 3).map(str), junk()),
    "--executor": st.sampled_from(["local", "slurm", "x"]),
    "--slurm-time": st.sampled_from(["60", "1:00:00", "0", "x"]),
    "--slurm-mem": st.sampled_from(["16G", "lots"])}


def draw_argv(draw, cls, tmp, extra=None) -> list[str]:
    """--out in a scratch folder, --quick, and up to four other flags drawn at random."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if "help" in f.metadata]
    argv = ["--out", str(tmp / "new"), "--quick"]
    for f in draw(st.lists(st.sampled_from(fields), max_size=4, unique_by=lambda f: f.name)):
        kind, sequence = cli._base_type(hints[f.name])
        argv += [cli.flag(f.name), *field_values(draw, f, kind, sequence, tmp)]
    for name, values in draw(st.fixed_dictionaries({}, optional=extra or {})).items():
        argv += [name, values]
    return argv


def outcome(call) -> str:
    """'ran' or 'refused'; fails the test on anything a user would see as a traceback."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            call()
    except Started:
        return "ran"
    except SystemExit as exc:
        lines = err.getvalue().strip().splitlines()
        assert exc.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
            (exc.code, err.getvalue())
        return "refused"
    except BaseException as exc:  # noqa: BLE001
        line = cli.error_line(exc)
        assert line is not None, f"a traceback: {type(exc).__name__}: {exc}"
        assert "\n" not in line and line.strip(), repr(line)
        return "refused"
    return "ran"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_properties")
    (tmp / "file.txt").write_text("not what any flag wants\n")
    (tmp / "folder").mkdir()
    (tmp / "foreign").mkdir()
    (tmp / "foreign" / "theirs.txt").write_text("someone else's\n")
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("module", SCRIPTS)
def test_random_flags_give_a_refusal_or_a_run_never_a_traceback(module, folders,
                                                                monkeypatch):
    import torch

    script = importlib.import_module(module)
    real_start, threads = cli.start, torch.get_num_threads()

    def started(args, **kw):
        try:
            real_start(args, **kw)   # threads, device, the memory check, the output lock
        finally:
            torch.set_num_threads(threads)
            cli.unlock_output(args.out_dir())
        raise Started

    monkeypatch.setattr(cli, "start", started)
    if hasattr(script, "load_digits"):        # audio reads its WAV files before start
        monkeypatch.setattr(script, "load_digits", lambda args: None)
    seen = set()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        argv = draw_argv(data.draw, script.Args, folders,
                         SWEEP_FLAGS if module == "experiments.sweep" else None)
        seen.add(outcome(lambda: script.main(argv)))

    check()
    assert "ran" in seen   # the first draw (no flags beyond --quick) passes every check


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(spec=st.one_of(st.text(alphabet="0123456789.:,-+e nai", max_size=14),
                      st.lists(st.one_of(st.integers(), st.floats()), max_size=4)))
def test_random_sweep_grid_specs_give_one_line_or_finite_unique_values(spec):
    try:
        values = sweep.parse_values(spec, "f0")
    except sweep.GridError as exc:
        assert "\n" not in str(exc) and "--grid-f0" in str(exc)
        return
    assert 1 <= len(values) <= sweep.MAX_POINTS and len(set(values)) == len(values)
    assert all(math.isfinite(v) for v in values)


BENCH_FLAGS = {"--grids": st.lists(st.one_of(st.sampled_from(["8x8", "12x10", "8x8x8",
                                                              "100000x100000", "4x4", "axb"]),
                                             st.text(max_size=5)), max_size=2),
               "--batches": st.lists(st.one_of(st.integers(-2, 6), junk()), max_size=2),
               "--dtypes": st.lists(st.sampled_from(["float32", "float64", "half"]), max_size=2),
               "--paths": st.lists(st.sampled_from(["eager", "compiled", "x"]), max_size=2),
               "--rounds": st.lists(st.one_of(st.integers(-1, 3), junk()), max_size=1),
               "--e2e-repeats": st.lists(st.integers(-1, 2), max_size=1),
               "--device": st.lists(st.sampled_from(["cpu", "cuda", "tpu", ""]), max_size=1),
               "--threads": st.lists(st.integers(-1, 2), max_size=1)}


def test_random_benchmark_flags_give_a_refusal_or_a_run(monkeypatch):
    from benchmarks import bench_substrate as bench

    for name in ("HEADLINE", "STATE_GRID", *bench.QUICK_TIMING):
        monkeypatch.setattr(bench, name, getattr(bench, name))

    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(flags=st.fixed_dictionaries({}, optional=BENCH_FLAGS),
           quick=st.booleans(), docs=st.booleans())
    def check(flags, quick, docs):
        argv = ["--quick"] * quick + ["--write-docs"] * docs
        for name, values in flags.items():
            argv += [name, *map(str, values)]
        outcome(lambda: bench.parse(argv))

    check()


@pytest.mark.slow
def test_random_small_runs_of_the_main_study_have_no_nan(tmp_path):
    import scarring_validation as main_study

    @settings(max_examples=2, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(grid=st.integers(16, 24), steps=st.integers(1, 6),
           cue=st.floats(0.0, 1.0), scar=st.floats(0.0, 0.01), seeds=st.integers(1, 2))
    def check(grid, steps, cue, scar, seeds):
        out = tmp_path / "run"
        argv = ["--quick", "--no-video", "--threads", "1", "--device", "cpu", "--quiet",
                "--grid", str(grid), "--train-steps", str(steps), "--recall-steps",
                str(steps), "--multi-train-steps", str(steps), "--multi-recall-steps",
                str(steps), "--cue-strength", repr(cue), "--scar-strength", repr(scar),
                "--seeds", str(seeds), "--out", str(out)]
        if outcome(lambda: main_study.main(argv)) == "refused":
            return
        text = (out / "results.json").read_text()
        assert "NaN" not in text and "Infinity" not in text
        results = json.loads(text)
        for phase in ("phase1", "phase2"):
            for key, value in results[phase].items():
                if isinstance(value, dict) and "mean" in value:
                    assert value["mean"] is not None, (phase, key)

    check()
