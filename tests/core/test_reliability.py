"""The failures of a reliability pass, each as the test that names it: caches that are plain
data, one memory check, output folders (markers, lock, user files, stale stages, modes,
SIGINT), one-line errors, values that cannot mean what they say, the sweep's limits and
chunk files. Small and in-process wherever the script allows."""
import errno
import json
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import cache, cli, limits, sweep

ROOT = Path(__file__).resolve().parents[2]


def no_memory(monkeypatch, free=2 ** 20):
    """This machine, with only `free` bytes available to the one memory check."""
    monkeypatch.setattr(limits, "available", lambda device="cpu": free)


# ---- caches: plain data, keyed on settings and code, a bad entry is a miss ----------------

class Planted:
    """A pickle that runs code when loaded (what a planted cache file could hold)."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (Path(self.sentinel),))


def associative_entry(tmp_path):
    from experiments import associative

    args = cli.parse(associative.Args, ["--quick", "--rule", "match_map", "--cache",
                                        str(tmp_path / "c"), "--out", str(tmp_path / "o")],
                     quick=associative.QUICK)
    return associative, args, associative._cache_entry(args, "match_map", args.seed_list())


def test_an_associative_cache_file_never_runs_code(tmp_path, capsys):
    associative, args, entry = associative_entry(tmp_path)
    entry.path.parent.mkdir(parents=True)
    sentinel = tmp_path / "ran"
    entry.path.write_bytes(pickle.dumps(Planted(sentinel)))
    assert associative.load_cached(args, "match_map", args.seed_list()) is None
    assert not sentinel.exists()
    assert "unreadable" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "empty", "wrongly_shaped", "foreign"])
def test_a_damaged_cache_entry_is_a_miss_with_one_warning(tmp_path, capsys, damage):
    import torch

    associative, args, entry = associative_entry(tmp_path)
    entry.save(({"settled": {}}, {"figure": torch.zeros(2)}))   # lacks what a condition has
    data = entry.path.read_bytes()
    if damage == "truncated":
        entry.path.write_bytes(data[:len(data) // 2])
    elif damage == "empty":
        entry.path.write_bytes(b"")
    elif damage == "foreign":
        buf = __import__("io").BytesIO()
        torch.save({"format": "something else", "value": 1}, buf)
        entry.path.write_bytes(buf.getvalue())
    assert associative.load_cached(args, "match_map", args.seed_list()) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cache ") and "recomputing" in err[0]


def test_a_cache_entry_round_trips_plain_data_and_says_its_commit(tmp_path, capsys):
    import numpy as np
    import torch

    entry = cache.Entry(tmp_path, "x", {"a": 1})
    entry.save({"t": torch.arange(3), "n": np.float64(0.5), "a": np.ones(2), "s": [1, None]})
    value = cache.Entry(tmp_path, "x", {"a": 1}).load(check=lambda v: v["t"])
    assert value["n"] == 0.5 and torch.equal(value["a"], torch.ones(2, dtype=torch.float64))
    assert "computed at commit" in capsys.readouterr().out
    assert cache.Entry(tmp_path, "x", {"a": 2}).load() is None   # other settings: other file
    assert oct(entry.path.stat().st_mode & 0o777) == oct(0o666 & ~cli._umask())


def test_a_cached_condition_from_other_code_is_recomputed_with_a_warning(tmp_path, capsys,
                                                                           monkeypatch):
    entry = cache.Entry(tmp_path, "x", {"a": 1})
    entry.save({"v": 1})
    monkeypatch.setattr(cache, "code_hash", lambda: "other code")
    assert entry.load() is None
    assert "computed by other code (commit" in capsys.readouterr().err


def test_a_cache_folder_that_is_a_file_is_refused_before_any_work(tmp_path):
    from experiments import associative

    (tmp_path / "file").write_text("x")
    args = cli.parse(associative.Args, ["--quick", "--rule", "match_map", "--cache",
                                        str(tmp_path / "file"), "--out", str(tmp_path / "o")],
                     quick=associative.QUICK)
    with pytest.raises(ValueError, match="exists and is not a folder"):
        associative.load_cached(args, "match_map", args.seed_list())


# ---- output folders ---------------------------------------------------------------------

def test_a_study_never_replaces_a_sweeps_chunk_folder(tmp_path):
    import scarring_validation as main_study

    chunks = tmp_path / "out.chunks"
    (chunks / "chunks").mkdir(parents=True)
    (chunks / cli.CHUNKS_MARKER).write_text("sweep chunks\n")
    legacy = tmp_path / "old.chunks"       # chunk folders of earlier versions
    legacy.mkdir()
    (legacy / cli.MARKER).write_text("sweep chunks\n")
    for folder in (chunks, legacy):
        with pytest.raises(ValueError, match="a sweep's chunk folder"):
            cli.parse(main_study.Args, ["--quick", "--out", str(folder)])
        with pytest.raises(ValueError, match="a sweep's chunk folder"):
            with cli.staged_output(folder, "x"):
                pass
    assert (chunks / "chunks").is_dir()
    cli.check_out_dir(chunks, kind="chunks")          # the sweep itself may add to it
    run = tmp_path / "run"
    with cli.staged_output(run, "x"):
        pass
    with pytest.raises(ValueError, match="a study's output folder"):
        cli.check_out_dir(run, kind="chunks")


def test_files_a_user_adds_to_an_output_folder_are_kept(tmp_path):
    out = tmp_path / "o"
    with cli.staged_output(out, "toy") as stage:
        (stage / "a.txt").write_text("run 1")
        (stage / "b.txt").write_text("run 1")
    (out / "NOTES.txt").write_text("my notes")
    (out / "b.txt").write_text("edited")                   # the run's own file: replaced
    with cli.staged_output(out, "toy") as stage:
        (stage / "a.txt").write_text("run 2")
    assert (out / "NOTES.txt").read_text() == "my notes"
    assert (out / "a.txt").read_text() == "run 2" and not (out / "b.txt").exists()
    with cli.staged_output(out, "toy") as stage:          # a name the run now writes too
        (stage / "NOTES.txt").write_text("run 3")
    assert (out / "NOTES.txt").read_text() == "run 3"
    assert (out / "NOTES.txt.user").read_text() == "my notes"


def test_stale_staging_folders_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "o"
    for name in (".o.partial-abc", ".o.old-def"):
        (tmp_path / name / "x").mkdir(parents=True)
    (tmp_path / ".other.partial-abc").mkdir()            # another folder's: not ours
    with cli.staged_output(out, "toy") as stage:
        (stage / "a.txt").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-abc", "o"]


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "o"
    cli.lock_output(out)
    try:
        code = ("import sys; from common import cli\n"
                "def main(): cli.lock_output(sys.argv[1])\n"
                "cli.run_cli(main)")
        proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    finally:
        cli.unlock_output(out)
    assert proc.returncode == 2
    assert proc.stderr == f"error: another run (pid {os.getpid()}) is writing {out}; wait " \
                          f"for it or choose another --out\n"
    assert not (tmp_path / ".o.lock").exists()           # released and removed
    cli.lock_output(out)                                  # free again
    cli.unlock_output(out)


def test_sigint_after_the_output_is_complete_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMITTED", [])

    def main():
        with cli.staged_output(tmp_path / "o", "toy") as stage:
            (stage / "a.txt").write_text("1")
        raise KeyboardInterrupt   # while printing the summary

    with pytest.raises(SystemExit) as exc:
        cli.run_cli(main)
    assert exc.value.code == 0 and "output was complete" in capsys.readouterr().err

    def unfinished():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "COMMITTED", [])
    with pytest.raises(SystemExit) as exc:
        cli.run_cli(unfinished)
    assert exc.value.code == 130


def test_every_output_file_is_0644_tables_too(tmp_path):
    old = os.umask(0o022)
    try:
        paths = sweep.write_table(tmp_path, [{"a": 1}], formats=("csv", "jsonl"))
        paths.append(cli.write_json_atomic(tmp_path / "r.json", {"a": 1}))
        with cli.staged_output(tmp_path / "o", "toy") as stage:
            (stage / "x").write_text("1")
        paths += list((tmp_path / "o").iterdir())
    finally:
        os.umask(old)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in paths} == {
        p.name: oct(0o644) for p in paths}
    assert oct(stat.S_IMODE((tmp_path / "o").stat().st_mode)) == oct(0o755)


# ---- one line for file-system and memory errors -------------------------------------------

def run_cli_line(main, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.run_cli(main)
    return exc.value.code, capsys.readouterr().err


def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, capsys):
    out = tmp_path / "o"

    def main():
        with cli.staged_output(out, "toy") as stage:
            (stage / "a.txt").write_text("1")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # as savefig's write

    code, err = run_cli_line(main, capsys)
    assert code == 2 and err == f"error: {out}: No space left on device\n"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_os_and_memory_errors_are_one_line(capsys):
    def unreadable():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", "/some/file")

    code, err = run_cli_line(unreadable, capsys)
    assert code == 2 and err == "error: /some/file: Is a directory\n"

    def exhausted():
        raise MemoryError("Unable to allocate 2.00 GiB for an array")

    code, err = run_cli_line(exhausted, capsys)
    assert code == 2 and err.count("\n") == 1 and "2.00 GiB" in err

    def bug():
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        cli.run_cli(bug)


# ---- the one memory check -----------------------------------------------------------------

STUDIES = ["scarring_validation", "experiments.cue_specificity", "experiments.capacity",
           "experiments.robustness", "experiments.ablations"]


@pytest.mark.parametrize("module", STUDIES)
def test_a_study_too_large_for_memory_is_refused_before_any_work(module, tmp_path,
                                                                  monkeypatch):
    import importlib

    import patterns
    study = importlib.import_module(module)
    no_memory(monkeypatch)

    def never(*a, **k):
        raise AssertionError("a target was built before the memory check")

    monkeypatch.setattr(patterns, "make_pattern", never)
    monkeypatch.setattr(patterns, "phase3_targets", never)
    t = time.perf_counter()
    with pytest.raises(limits.SizeError, match=r"needs about .* GiB on cpu but only 0.0 GiB"):
        study.main(["--quick", "--threads", "1", "--device", "cpu", "--out",
                    str(tmp_path / "o")])
    assert time.perf_counter() - t < 30   # refused before the minutes of work


def test_the_medium_and_the_scripts_share_one_memory_check(monkeypatch):
    import substrate

    no_memory(monkeypatch)
    with pytest.raises(limits.SizeError, match="32x32 grid with batch 100"):
        substrate.GrayScott(32, 32, batch=100, device="cpu")
    with pytest.raises(limits.SizeError):
        cli.check_memory(100, 32 * 32, "float32", "cpu")


def test_a_sweep_grid_too_large_for_memory_is_refused(tmp_path):
    from experiments import sweep as study

    with pytest.raises(limits.SizeError, match="a chunk of 9 members at 16384x16384"):
        study.parse_args(["--quick", "--grid", "16384", "--out", str(tmp_path / "o")])


def test_a_gzipped_mnist_file_is_sized_before_it_is_decompressed(tmp_path, monkeypatch):
    import gzip
    import struct

    from models import continual_learning as cl

    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 4_000_000, 28, 28)  # 3 GiB promised
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(4096))
    no_memory(monkeypatch, free=10 ** 8)
    with pytest.raises(limits.SizeError, match="decompressed .3,136,000,016 bytes"):
        cl.read_idx(path)
    small = bytes([0, 0, 8, 1]) + struct.pack(">1I", 10)
    with gzip.open(path, "wb") as f:                          # more data than promised
        f.write(small + bytes(10 ** 6))
    with pytest.raises(ValueError, match="more data than its IDX header promises"):
        cl.read_idx(path)


def test_nca_growth_refuses_a_decompression_bomb_and_a_text_weights_file(tmp_path,
                                                                         monkeypatch):
    from PIL import Image

    import patterns
    from experiments import nca_growth
    from models import nca

    Image.new("RGBA", (40, 40), (255, 0, 0, 255)).save(tmp_path / "big.png")
    monkeypatch.setattr(patterns, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        nca_growth.load_target(tmp_path / "big.png", 32, 10)
    (tmp_path / "text.pt").write_text("hello, not weights\n")
    with pytest.raises(ValueError, match="not a readable torch file"):
        nca.load_weights(tmp_path / "text.pt")


# ---- the benchmark's command line ---------------------------------------------------------

@pytest.fixture
def bench(monkeypatch):
    from benchmarks import bench_substrate
    for name in ("HEADLINE", "STATE_GRID", *bench_substrate.QUICK_TIMING):
        monkeypatch.setattr(bench_substrate, name, getattr(bench_substrate, name))
    return bench_substrate


def test_benchmark_quick_never_overrides_explicit_flags(bench):
    args = bench.parse(["--quick", "--rounds", "1", "--grids", "48x48", "--batches", "2",
                        "--paths", "eager"])
    assert (args.grids, args.batches, args.rounds, args.paths) == (
        [(48, 48)], [2], 1, ["published", "eager"])
    assert bench.HEADLINE == ("48x48", 2, "float32", "scarred")
    quick = bench.parse(["--quick"])
    assert quick.grids == [(32, 32), (8, 8, 8)] and quick.batches == [1, 4]


@pytest.mark.parametrize("argv, words", [
    (["--batches", "0"], "--batches 0: each must be >= 1"),
    (["--grids", "100000x100000"], "grid 100000x100000 at batch 4 needs about"),
    (["--grids", "axb"], "want HxW or DxHxW"),
    (["--battery-seeds", "-1"], "--battery-seeds -1 must be >= 0"),
    (["--battery-rounds", "0"], "--battery-rounds 0 >= 1"),
])
def test_benchmark_refuses_bad_sizes_in_one_line(bench, argv, words, capsys):
    with pytest.raises((SystemExit, ValueError)) as exc:
        bench.parse(["--quick", *argv])
    err = capsys.readouterr().err if exc.type is SystemExit else str(exc.value)
    assert words in err and err.strip().count("\n") == 0


# ---- values that cannot mean what they say --------------------------------------------------

def test_empty_strings_are_refused(tmp_path):
    import scarring_validation as main_study
    from experiments import sweep as study

    with pytest.raises(ValueError, match="--target-image '': empty"):
        cli.parse(main_study.Args, ["--quick", "--target-image", ""])
    for argv in (["--grid-f0", ""], ["--grid-file", " "]):
        with pytest.raises(ValueError, match="empty|give a file path"):
            study.parse_args(["--quick", "--out", str(tmp_path / "o"), *argv])


def test_a_shift_of_a_whole_period_is_refused():
    from experiments import cue_specificity as study

    with pytest.raises(ValueError, match="--shift 256: moves the cue by 32 cells on a "
                                         "32-cell grid, a whole period"):
        cli.parse(study.Args, ["--quick", "--shift", "256"], quick=study.QUICK)
    assert cli.parse(study.Args, ["--quick", "--shift", "8"], quick=study.QUICK).shift == 8


def test_a_duplicate_yaml_key_is_refused(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("f0: 0.03\nk0: 0.06\nf0: 0.04\n")
    with pytest.raises(sweep.GridError, match=r"key 'f0' appears twice \(line 3\)"):
        sweep.load_grid_file(path, ["f0", "k0"])


def test_the_stability_error_tells_the_user_to_lower_dt():
    import substrate

    with pytest.raises(ValueError, match=r"lower dt to <= 0.625 \(or Du to <= 1.25\)"):
        substrate.check_stability(2.0, 0.1, 1.0, "nine_point")


@pytest.mark.parametrize("value, off", [("", False), ("0", False), ("false", False),
                                        ("1", True), ("yes", True)])
def test_substrate_no_compile_reads_as_a_switch(monkeypatch, value, off):
    from common import compiling

    monkeypatch.setenv("SUBSTRATE_NO_COMPILE", value)
    assert compiling.no_compile_requested() is off


# ---- the sweep: bounded before any work, damaged chunk files run again ----------------------

def test_huge_sweep_grids_are_refused_at_once(tmp_path):
    t = time.perf_counter()
    with pytest.raises(sweep.GridError, match="n=1000000000 must be an integer in"):
        sweep.parse_values("0.01:0.08:1000000000", "f0")
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("f0: '0.01:0.08:100000'\nk0: '0.01:0.08:100000'\n")
    with pytest.raises(sweep.GridError, match="10,000,000,000 points"):
        sweep.load_grid_file(grid_file, ["f0", "k0"])
    assert len(sweep.parse_values(list(range(100_000)), "f0")) == 100_000   # linear check
    with pytest.raises(sweep.GridError, match="seeds is more than"):
        sweep.plan({"f0": list(range(1000))}, list(range(10_000)), 10)
    assert time.perf_counter() - t < 30   # the quadratic check took minutes (a hang)


def toy_runner(points, seeds, **fixed):
    return [{**p, "seed": s, "cosine": 0.5 + 0.01 * s} for p in points for s in seeds]


def test_a_chunk_file_cut_edited_or_empty_is_run_again(tmp_path, capsys):
    grid, seeds = {"f0": [1, 2]}, [0, 1]

    def check_row(row):
        if not -1 <= row["cosine"] <= 1:
            raise ValueError(f"cosine={row['cosine']} out of range")

    def again(**kw):
        return sweep.run_sweep(toy_runner, grid, seeds, tmp_path, batch=2, formats=("csv",),
                               progress=False, check_row=check_row, **kw)

    first = again()
    files = [sweep.chunk_path(tmp_path, c) for c in first.chunks]
    record = json.loads(files[0].read_text())
    cut = dict(record, rows=record["rows"][:1])
    edited = dict(record, rows=[dict(record["rows"][0], cosine=123.0), record["rows"][1]])
    unsigned = {k: v for k, v in edited.items() if k != "rows_sha256"}
    for bad in (cut, edited, unsigned, None, []):
        files[0].write_text(json.dumps(bad))
        capsys.readouterr()
        result = again()
        assert result.summary["done"] == 1 and result.rows == first.rows
        err = capsys.readouterr().err
        assert err.count("warning: chunk file") == 1, err
    tampered = dict(record, rows=[dict(record["rows"][0], cosine=0.9), record["rows"][1]])
    files[0].write_text(json.dumps(tampered))               # in range, but not its digest
    assert again().summary["done"] == 1


def test_the_sweep_has_no_kill_hook_in_normal_runs():
    from experiments import sweep as study

    source = Path(study.__file__).read_text()
    assert "SCARRING_SWEEP_TEST_KILL_AFTER" not in source and "SIGKILL" not in source
    assert not hasattr(study, "KILL_AFTER_ENV")
