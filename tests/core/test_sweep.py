"""common/sweep.py: grids, chunking, resumable chunk files, executors, the table.

The runner here is a tiny fake (no physics): its rows depend only on the point and the
seed, so every way of running a sweep must give the same table, byte for byte.
"""
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common import sweep
from common.sweep import GridError, SlurmOptions, SweepIncomplete

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("f0", "k0", "cue_strength", "grid")
GRID = {"f0": [0.01, 0.02, 0.03, 0.04, 0.05], "k0": [0.05, 0.06]}   # 10 points
SEEDS = [0, 1, 2]
DIE_AT = "SWEEP_TEST_DIE_AT"         # fail on this runner call (1 = the first) ...
HARD = "SWEEP_TEST_HARD_KILL"        # ... by os._exit (a kill) instead of an exception
COUNTER = "SWEEP_TEST_COUNTER"       # file counting the runner calls across processes


def fake_runner(points, seeds, scale=1.0):
    """Rows from the point and seed alone; fails on call DIE_AT when that is set."""
    if os.environ.get(COUNTER):
        path = Path(os.environ[COUNTER])
        calls = int(path.read_text() or 0) + 1 if path.exists() else 1
        path.write_text(str(calls))
        if os.environ.get(DIE_AT) and calls == int(os.environ[DIE_AT]):
            if os.environ.get(HARD):
                os._exit(3)
            raise RuntimeError(f"simulated crash on call {calls}")
    return [{**p, "seed": s, "score": scale * (100 * p["f0"] + p.get("k0", 0)) + s / 1000,
             "ok": p["f0"] > 0.02} for p in points for s in seeds]


def run(out, grid=GRID, seeds=SEEDS, **kw):
    kw.setdefault("batch", 6)
    kw.setdefault("progress", False)
    return sweep.run_sweep(fake_runner, grid, seeds, out, **kw)


def table_bytes(out):
    return (Path(out) / "table.csv").read_bytes()


def chunk_files(out):
    return sorted((Path(out) / sweep.CHUNKS_DIR).glob("*.json"))


# ---- grid parsing ---------------------------------------------------------------------------

def test_range_is_inclusive_and_clean():
    v = sweep.parse_values("0.010:0.080:36", "f0")
    assert len(v) == 36 and v[0] == 0.01 and v[-1] == 0.08
    assert v[1] == 0.012 and v[18] == 0.046      # rounded, not 0.012000000000000002
    assert sweep.parse_values("0.040:0.070:31", "k0")[15] == 0.055
    assert sweep.parse_values("0.5:0.5:1", "x") == [0.5]


def test_lists_numbers_and_integer_ranges():
    assert sweep.parse_values("0.1, 0.2,0.3", "x") == [0.1, 0.2, 0.3]
    assert sweep.parse_values("64:256:4", "grid") == [64, 128, 192, 256]
    assert all(isinstance(v, int) for v in sweep.parse_values("64:256:4", "grid"))
    assert sweep.parse_values([0.1, "0.2,0.3"], "x") == [0.1, 0.2, 0.3]
    assert sweep.parse_values(0.037, "f0") == [0.037]
    assert sweep.parse_values("1:2:3", "x") == [1.0, 1.5, 2.0]


@pytest.mark.parametrize("spec, words", [
    ("0.01:0.08:0", ["n=0", "in [1, 100,000]"]),
    ("0.01:0.08:2.5", ["n=2.5", "integer"]),
    ("0.08:0.01:5", ["lo=0.08 > hi=0.01"]),
    ("0.01:abc:5", ["'abc' is not a number"]),
    ("0.01,x", ["'x' is not a number"]),
    ("0.01:0.08", ["lo:hi:n"]),
    ("0.01,,0.02", ["empty value"]),
    ("nan", ["must be finite"]),
    ("0.1,0.2,0.1", ["0.1 appears twice"]),
    ("", ["empty value"]),
])
def test_bad_values_give_one_clear_line(spec, words):
    with pytest.raises(GridError) as err:
        sweep.parse_values(spec, "f0")
    msg = str(err.value)
    assert "\n" not in msg and "--grid-f0" in msg
    for w in words:
        assert w in msg


def test_unknown_constant_lists_the_allowed_ones():
    with pytest.raises(GridError, match=r"unknown constant 'f1'; allowed: f0, k0"):
        sweep.parse_grid({"f1": "0.1,0.2"}, allowed=NAMES)
    with pytest.raises(GridError, match="empty"):
        sweep.parse_grid({}, allowed=NAMES)


def test_grid_files_yaml_and_json(tmp_path):
    y = tmp_path / "g.yaml"
    y.write_text("f0: 0.010:0.080:8\nk0: [0.05, 0.06]\ngrid: 64\n")
    assert sweep.load_grid_file(y, NAMES) == {"f0": sweep.parse_values("0.010:0.080:8"),
                                              "k0": [0.05, 0.06], "grid": [64]}
    j = tmp_path / "g.json"
    j.write_text(json.dumps({"f0": "0.01,0.02", "k0": [0.05]}))
    assert sweep.load_grid_file(j, NAMES) == {"f0": [0.01, 0.02], "k0": [0.05]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("f0: [0.01, 0.02\n")
    with pytest.raises(GridError, match="not valid YAML"):
        sweep.load_grid_file(bad, NAMES)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 0.01\n")
    with pytest.raises(GridError, match="expected a mapping"):
        sweep.load_grid_file(lst, NAMES)
    with pytest.raises(GridError, match="cannot read"):
        sweep.load_grid_file(tmp_path / "missing.yaml", NAMES)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("du: 0.1\n")
    with pytest.raises(GridError, match="unknown constant 'du'"):
        sweep.load_grid_file(unknown, NAMES)


def test_flags_build_the_grid(tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    sweep.add_grid_flags(parser, NAMES)
    sweep.add_executor_flags(parser)
    f = tmp_path / "g.yaml"
    f.write_text("f0: 0.01,0.02\nk0: 0.05\n")
    args = parser.parse_args(["--grid-file", str(f), "--grid-k0", "0.04:0.06:3",
                              "--grid-cue-strength", "0.1,0.2", "--batch", "9"])
    assert sweep.grid_from_flags(args, NAMES) == {
        "f0": [0.01, 0.02], "k0": [0.04, 0.05, 0.06], "cue_strength": [0.1, 0.2]}
    assert sweep.executor_from_flags(args)["batch"] == 9


# ---- expansion and chunking -------------------------------------------------------------------

def test_expand_is_the_product_in_order():
    pts = sweep.expand({"a": [1, 2], "b": [10, 20, 30]})
    assert pts[:3] == [{"a": 1, "b": 10}, {"a": 1, "b": 20}, {"a": 1, "b": 30}]
    assert len(pts) == 6


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7, 9, 30, 100])
def test_every_point_and_seed_exactly_once(batch):
    blocks = sweep.pack(10, SEEDS, batch)
    members = [(p, s) for idx, seeds in blocks for p in idx for s in seeds]
    assert sorted(members) == sorted((p, s) for p in range(10) for s in SEEDS)
    assert all(len(idx) * len(seeds) <= batch for idx, seeds in blocks)
    if batch >= len(SEEDS):   # whole points, as many as fit
        assert all(len(idx) == batch // len(SEEDS) for idx, _ in blocks[:-1])
    else:                     # one point per block, its seeds sliced
        assert len(blocks) == 10 * -(-len(SEEDS) // batch)


def test_per_batch_constants_are_never_mixed_in_a_chunk(tmp_path):
    grid = {"f0": [0.01, 0.02, 0.03], "grid": [32, 64]}   # grid varies fastest
    chunks = sweep.plan(grid, SEEDS, 30, per_batch=("grid", "du"))
    assert [{p["grid"] for p in c.points} for c in chunks] == [{32}, {64}]
    assert sorted(i for c in chunks for i in c.point_indices) == list(range(6))
    mixed = sweep.plan(grid, SEEDS, 30)
    assert len(mixed) == 1
    seen = []

    def takes_grid_once(points, seeds, grid):
        seen.append(grid)
        assert {p["grid"] for p in points} == {grid}
        return fake_runner(points, seeds)

    res = sweep.run_sweep(takes_grid_once, grid, SEEDS, tmp_path, batch=30,
                          per_batch=("grid",), progress=False)
    assert seen == [32, 64]
    assert [(r["f0"], r["grid"]) for r in res.rows[::3]] == [
        (p["f0"], p["grid"]) for p in sweep.expand(grid)]


def test_bad_plans_are_refused():
    with pytest.raises(GridError, match="batch=0"):
        sweep.pack(4, SEEDS, 0)
    with pytest.raises(GridError, match="a seed appears twice"):
        sweep.plan(GRID, [0, 0], 4)
    with pytest.raises(GridError, match="'f0' is both swept and fixed"):
        sweep.plan(GRID, SEEDS, 4, fixed={"f0": 0.03})
    with pytest.raises(GridError, match="plain JSON"):
        sweep.plan(GRID, SEEDS, 4, fixed={"x": object()})
    with pytest.raises(GridError, match="--executor 'ssh'"):
        run("unused", executor="ssh")


def test_hash_follows_the_configuration():
    base = sweep.plan(GRID, SEEDS, 6, {"grid": 64}, "1", "r")
    assert [c.hash for c in base] == [c.hash for c in sweep.plan(GRID, SEEDS, 6, {"grid": 64},
                                                                 "1", "r")]
    moved = dict(GRID, f0=[0.01, 0.02, 0.03, 0.04, 0.055])     # last f0 changed
    changed = [a.hash != b.hash for a, b in zip(base, sweep.plan(moved, SEEDS, 6, {"grid": 64},
                                                                 "1", "r"))]
    assert changed == [False, False, False, False, True]      # chunk 4 holds f0 = 0.05
    for other in (sweep.plan(GRID, SEEDS, 6, {"grid": 128}, "1", "r"),
                  sweep.plan(GRID, SEEDS, 6, {"grid": 64}, "2", "r"),
                  sweep.plan(GRID, [0, 1, 3], 6, {"grid": 64}, "1", "r")):
        assert all(a.hash != b.hash for a, b in zip(base, other))


# ---- running, the table and resuming ---------------------------------------------------------

def test_table_rows_in_grid_then_seed_order(tmp_path):
    res = run(tmp_path, fixed={"scale": 2.0}, batch=4)   # 1 point per chunk, 10 chunks
    assert res.summary["done"] == 10 and res.summary["failed"] == 0
    rows = sweep.read_table(tmp_path / "table.csv")
    assert [(r["f0"], r["k0"], r["seed"]) for r in rows] == [
        (p["f0"], p["k0"], s) for p in sweep.expand(GRID) for s in SEEDS]
    assert list(rows[0]) == ["f0", "k0", "seed", "scale", "score", "ok"]
    assert (rows[4]["f0"], rows[4]["k0"], rows[4]["seed"]) == (0.01, 0.06, 1)
    assert rows[4]["score"] == pytest.approx(2.0 * (100 * 0.01 + 0.06) + 0.001)
    assert rows == res.rows
    assert {p.name for p in res.tables} == {"table.csv", "table.parquet"} or \
        {p.name for p in res.tables} == {"table.csv", "table.jsonl"}


def test_table_does_not_depend_on_the_chunking(tmp_path):
    tables = []
    for batch in (1, 2, 5, 30):
        run(tmp_path / str(batch), batch=batch)
        tables.append(table_bytes(tmp_path / str(batch)))
    assert all(t == tables[0] for t in tables)


def test_jsonl_and_parquet_tables(tmp_path):
    res = run(tmp_path, formats=("csv", "jsonl"))
    assert sweep.read_table(tmp_path / "table.jsonl") == res.rows
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (optional) not installed")
    run(tmp_path / "pq", formats=("parquet",))
    assert pq.read_table(tmp_path / "pq" / "table.parquet").to_pylist() == res.rows


def test_rerun_skips_done_chunks(tmp_path, monkeypatch):
    run(tmp_path)
    first = table_bytes(tmp_path)
    counter = tmp_path / "calls"
    monkeypatch.setenv(COUNTER, str(counter))
    res = run(tmp_path)
    assert res.summary["skipped"] == 5 and res.summary["done"] == 0
    assert not counter.exists() and table_bytes(tmp_path) == first


def test_resume_after_a_failed_chunk_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    run(tmp_path / "whole")
    monkeypatch.setenv(COUNTER, str(tmp_path / "calls"))
    monkeypatch.setenv(DIE_AT, "3")
    with pytest.raises(SweepIncomplete, match="simulated crash") as err:
        run(tmp_path / "cut", fail_fast=True)
    assert err.value.summary["done"] == 2 and err.value.summary["failed"] == 1
    assert len(chunk_files(tmp_path / "cut")) == 2
    assert not (tmp_path / "cut" / "table.csv").exists()
    monkeypatch.delenv(DIE_AT)
    res = run(tmp_path / "cut")
    assert res.summary["skipped"] == 2 and res.summary["done"] == 3
    assert table_bytes(tmp_path / "cut") == table_bytes(tmp_path / "whole")


def test_a_failing_chunk_does_not_stop_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv(COUNTER, str(tmp_path / "calls"))
    monkeypatch.setenv(DIE_AT, "2")
    with pytest.raises(SweepIncomplete, match="1 of 5 chunks are not done"):
        run(tmp_path / "out")
    assert len(chunk_files(tmp_path / "out")) == 4


def test_resume_after_a_hard_kill(tmp_path):
    """The sweep process dies (os._exit, no cleanup) during its 4th chunk; a rerun
    finishes the rest and gives the uninterrupted table."""
    run(tmp_path / "whole")
    script = textwrap.dedent(f"""
        from common import sweep
        from tests.core.test_sweep import fake_runner, GRID, SEEDS
        sweep.run_sweep(fake_runner, GRID, SEEDS, {str(tmp_path / 'cut')!r}, batch=6,
                        progress=False)
    """)
    env = dict(os.environ, **{COUNTER: str(tmp_path / "calls"), DIE_AT: "4", HARD: "1"})
    proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, env=env)
    assert proc.returncode == 3
    assert len(chunk_files(tmp_path / "cut")) == 3
    assert not list((tmp_path / "cut" / sweep.CHUNKS_DIR).glob(".*.tmp"))
    res = run(tmp_path / "cut")
    assert (res.summary["skipped"], res.summary["done"]) == (3, 2)
    assert table_bytes(tmp_path / "cut") == table_bytes(tmp_path / "whole")


def test_a_changed_constant_reruns_only_its_chunks(tmp_path, monkeypatch):
    run(tmp_path)
    moved = dict(GRID, f0=[0.01, 0.02, 0.03, 0.04, 0.055])
    res = run(tmp_path, grid=moved)
    assert (res.summary["skipped"], res.summary["done"]) == (4, 1)
    assert res.summary["stale_chunk_files"] == 1        # the old f0 = 0.05 chunk, ignored
    assert [r["f0"] for r in res.rows][-6:] == [0.055] * 6
    res = run(tmp_path, grid=moved, fixed={"scale": 3.0})     # a fixed setting: all re-run
    assert res.summary["done"] == 5
    res = run(tmp_path, grid=moved, version="2")              # the code version: all re-run
    assert res.summary["done"] == 5


def test_a_damaged_or_foreign_chunk_file_is_rerun(tmp_path):
    run(tmp_path)
    files = chunk_files(tmp_path)
    files[0].write_text('{"rows": [')                          # truncated
    saved = json.loads(files[1].read_text())
    saved["config"]["fixed"] = {"scale": 9.0}                  # someone else's chunk
    files[1].write_text(json.dumps(saved))
    res = run(tmp_path)
    assert (res.summary["skipped"], res.summary["done"]) == (3, 2)


def test_runner_rows_are_checked(tmp_path):
    def drops_a_seed(points, seeds):
        return fake_runner(points, seeds)[1:]

    with pytest.raises(SweepIncomplete, match="returned 5 rows for 6"):
        sweep.run_sweep(drops_a_seed, GRID, SEEDS, tmp_path, batch=6, progress=False)

    def wrong_point(points, seeds):
        return [dict(r, f0=0.5) for r in fake_runner(points, seeds)]

    with pytest.raises(SweepIncomplete, match="not in this chunk"):
        sweep.run_sweep(wrong_point, GRID, SEEDS, tmp_path, batch=6, progress=False)


def test_write_atomic_leaves_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def broken(*a):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk gone"):
        sweep.write_atomic(target, b"new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


# ---- executors ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_parallel_workers_give_the_same_table(tmp_path):
    run(tmp_path / "one")
    res = run(tmp_path / "two", workers=2)
    assert res.summary["done"] == 5
    assert table_bytes(tmp_path / "two") == table_bytes(tmp_path / "one")
    with pytest.raises(GridError, match="module-level function"):
        sweep.run_sweep(lambda points, seeds: [], GRID, SEEDS, tmp_path / "three",
                        workers=2, progress=False)


@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_submitit_executor_gives_the_same_table(tmp_path, cluster):
    pytest.importorskip("submitit", reason="submitit (optional, for Slurm) not installed")
    run(tmp_path / "ref", batch=15)
    res = run(tmp_path / "sub", batch=15, executor="slurm", poll_s=0.1,
              slurm=SlurmOptions(cluster=cluster, time=5))
    assert res.summary["done"] == 2
    assert table_bytes(tmp_path / "sub") == table_bytes(tmp_path / "ref")
    again = run(tmp_path / "sub", batch=15, executor="slurm", poll_s=0.1,
                slurm=SlurmOptions(cluster=cluster, time=5))
    assert again.summary["skipped"] == 2


def test_slurm_options_reach_sbatch(tmp_path, monkeypatch):
    """The options become #SBATCH lines (submitit's own sbatch text; srun faked present)."""
    submitit = pytest.importorskip("submitit", reason="submitit (optional) not installed")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    opts = SlurmOptions(partition="gpu", time="1:30:00", gpus_per_task=1, cpus_per_task=4,
                        mem="16G", array_parallelism=20, additional={"account": "lab"})
    ex = sweep.make_submitit_executor(tmp_path, opts)
    text = ex._executor._make_submission_file_text("python -c pass", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-task=1", "--cpus-per-task=4",
                 "--mem=16G", "--account=lab", "--job-name=sweep"):
        assert f"#SBATCH {line}\n" in text, line


@pytest.mark.parametrize("opts, words", [
    (SlurmOptions(time="an hour"), "--slurm-time 'an hour'"),
    (SlurmOptions(time=0), "at least 1 minute"),
    (SlurmOptions(mem="16 GB"), "--slurm-mem '16 GB'"),
    (SlurmOptions(cpus_per_task=0), "--slurm-cpus-per-task 0"),
    (SlurmOptions(gpus_per_task=-1), "--slurm-gpus-per-task -1"),
])
def test_bad_slurm_options(opts, words):
    with pytest.raises(GridError, match=words.replace("(", r"\(")):
        opts.parameters()


def test_slurm_time_formats():
    assert [sweep.parse_minutes(t) for t in (45, "45", "01:00:00", "0:30:30", "1-00:00:00")] \
        == [45, 45, 60, 31, 1440]


# ---- progress and heatmap --------------------------------------------------------------------

def test_progress_prints_rate_limited_lines():
    stream = io.StringIO()
    prog = sweep.Progress(10, SEEDS, stream=stream, every=3600)
    prog.done, prog.members = 2, 6
    prog.update()                  # within `every` of the start: silent
    prog.update(force=True)
    prog.update(force=True)        # nothing new: not repeated
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: 2/10 chunks (2 run, 0 skipped")
    assert "points/s" in lines[0]
    prog.every = 0
    prog.failed = 1
    prog.update()
    assert "1 failed" in stream.getvalue().splitlines()[-1]


def test_heatmap_cells_and_file(tmp_path):
    rows = run(tmp_path).rows
    xs, ys, mean, n = sweep.cell_means(rows, "score")
    assert (xs, ys) == (GRID["f0"], GRID["k0"])
    assert n == [[3] * 5, [3] * 5]
    assert mean[1][0] == pytest.approx(100 * 0.01 + 0.06 + 0.001)
    sweep.heatmap(tmp_path / "score.png", rows, "score", label="score")
    sweep.heatmap(tmp_path / "log.png", rows, "score", log=True)
    assert (tmp_path / "score.png").stat().st_size > 10_000
