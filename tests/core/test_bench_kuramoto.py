"""benchmarks/bench_kuramoto end to end at a tiny size, and its bad input."""
import re

import pytest

from benchmarks import bench_kuramoto
from common import cli


@pytest.mark.slow
def test_quick_benchmark_prints_both_cases_with_a_ratio(capsys):
    bench_kuramoto.main(["--quick"])
    out = capsys.readouterr().out
    for kind in ("recall", "train"):
        line = next(x for x in out.splitlines() if x.startswith(f"{kind} 32^2"))
        assert re.search(r"speed-up [0-9.]+x \[[0-9.]+, [0-9.]+\]", line), line


def test_bad_rounds_is_one_clear_error():
    with pytest.raises(ValueError, match="--rounds 1: must be >= 2"):   # run_cli: one line
        bench_kuramoto.main(["--rounds", "1"])


def test_config_file_sets_flags_and_the_command_line_wins(tmp_path, capsys):
    """The Kuramoto benchmark takes the shared command line: --save-config writes the
    effective flags, --config reads them back, a flag given wins, --version answers."""
    saved = tmp_path / "k.yaml"
    with pytest.raises(SystemExit) as done:
        bench_kuramoto.main(["--quick", "--members", "3", "--save-config", str(saved)])
    assert done.value.code == 0
    args = cli.parse(bench_kuramoto.Args, ["--config", str(saved), "--steps", "5"],
                     quick=bench_kuramoto.QUICK)
    assert (args.grids, args.members, args.steps, args.rounds) == ((32,), 3, 5, 3)
    with pytest.raises(SystemExit):
        bench_kuramoto.main(["--version"])
    assert "parametric-scarring" in capsys.readouterr().out
