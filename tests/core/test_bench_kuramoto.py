"""benchmarks/bench_kuramoto end to end at a tiny size, and its bad input."""
import re

import pytest

from benchmarks import bench_kuramoto


@pytest.mark.slow
def test_quick_benchmark_prints_both_cases_with_a_ratio(capsys):
    bench_kuramoto.main(["--quick"])
    out = capsys.readouterr().out
    for kind in ("recall", "train"):
        line = next(x for x in out.splitlines() if x.startswith(f"{kind} 32^2"))
        assert re.search(r"speed-up [0-9.]+x \[[0-9.]+, [0-9.]+\]", line), line


def test_bad_rounds_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        bench_kuramoto.main(["--rounds", "1"])
    assert e.value.code == 2 and "--rounds 1: must be >= 2" in capsys.readouterr().err
