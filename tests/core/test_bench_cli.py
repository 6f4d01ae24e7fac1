"""The benchmark script has the command line every script has (common/cli.py): --config,
--save-config, --version, and --format and --dpi that reach its scaling figure."""
import json

import pytest
from PIL import Image

from common import cli, figure_options


@pytest.fixture
def bench(monkeypatch):
    from benchmarks import bench_substrate
    for name in ("HEADLINE", "STATE_GRID", *bench_substrate.QUICK_TIMING):
        monkeypatch.setattr(bench_substrate, name, getattr(bench_substrate, name))
    monkeypatch.setattr(figure_options, "FORMAT", figure_options.FORMAT)
    monkeypatch.setattr(figure_options, "DPI", figure_options.DPI)
    return bench_substrate


def test_benchmark_reads_a_config_file_and_the_command_line_wins(bench, tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text("grids: [48x48]\nrounds: 3\nquick: true\nformat: pdf\n")
    args = bench.parse(["--config", str(config), "--rounds", "1"])
    assert (args.grids, args.rounds, args.format, args.quick) == ([(48, 48)], 1, "pdf", True)
    assert args.batches == [1, 4] and args.e2e_repeats == 0   # --quick fills the rest
    config.write_text(json.dumps({"rounds": 0}))
    with pytest.raises(ValueError, match="--rounds 0: must be >= 1"):
        bench.parse(["--config", str(config)])
    config.write_text("round: 2\n")
    with pytest.raises(ValueError, match="unknown key 'round'"):
        bench.parse(["--config", str(config)])


def test_benchmark_saves_its_config_and_prints_its_version(bench, tmp_path, capsys):
    saved = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as done:
        bench.parse(["--quick", "--rounds", "1", "--save-config", str(saved)])
    assert done.value.code == 0
    flags = json.loads(saved.read_text())
    assert flags["rounds"] == 1 and flags["grids"] == ["32x32", "8x8x8"] and flags["quick"]
    assert bench.parse(["--config", str(saved)]).grids == [(32, 32), (8, 8, 8)]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        bench.parse(["--version"])
    assert capsys.readouterr().out.startswith("parametric-scarring ")


@pytest.mark.parametrize("fmt, dpi", [("svg", None), ("png", 150)])
def test_benchmark_format_and_dpi_reach_the_scaling_figure(bench, tmp_path, fmt, dpi):
    argv = ["--quick", "--format", fmt] + (["--dpi", str(dpi)] if dpi else [])
    cli.start(bench.parse(argv), announce=False)
    (tmp_path / "figures").mkdir()
    scaling = {(path, g, 1): 100.0 + g for path in ("kernel", "compiled") for g in (64, 256)}
    name = bench.scaling_figure(scaling, tmp_path)
    assert name == f"figures/performance_scaling.{fmt}"
    written = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert written == [f"performance_scaling.{fmt}"]
    if fmt == "svg":
        assert (tmp_path / name).read_text().lstrip().startswith("<?xml")
    else:   # 9 inches wide at the asked resolution
        assert Image.open(tmp_path / name).size[0] == 9 * dpi


def test_benchmark_main_applies_format_and_dpi_before_its_work(bench, monkeypatch):
    class Started(Exception):
        pass

    seen = []

    def first_work(*a):
        seen.append((figure_options.FORMAT, figure_options.DPI))
        raise Started

    monkeypatch.setattr(bench, "States", first_work)
    with pytest.raises(Started):
        bench.main(["--quick", "--format", "pdf", "--dpi", "200"])
    assert seen == [("pdf", 200)]
