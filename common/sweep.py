"""Parameter sweeps: a grid of constants x seeds, packed into batched chunks, resumable.

Nothing here is physics: the study is a `runner` function passed in,

    runner(points, seeds, **fixed) -> list of row dicts

called once per chunk with a few points (dicts of the swept constants) and seeds; it runs
every point x seed as one batch (the substrate takes F and K per batch member) and returns
one row per point and seed. The sweep adds the constants, the seed and the fixed settings
to each row, so a row reads on its own.

    grid = parse_grid({"f0": "0.010:0.080:36", "k0": "0.040:0.070:31"}, allowed=NAMES)
    result = run_sweep(runner, grid, seeds=[0, 1, 2], out="sweep_out", batch=63,
                       fixed={"grid": 128})

Grids: per constant a range `lo:hi:n` (n values, both ends included) or a list `a,b,c`,
on the command line (`--grid-f0 0.010:0.080:36`) or in a YAML/JSON file that maps each
constant to a range string, a list or a number. The points are the product, in the
order the constants are given (the last one varies fastest).

Chunks: the points x seeds are cut into chunks of at most `batch` members (whole points
with all their seeds when batch >= len(seeds), else one point and a slice of the seeds).
A chunk's hash covers its points, seeds, the fixed settings, the runner's name, `version`
(bump it when the code changes the numbers) and SCHEMA_VERSION. Each finished chunk is
written atomically to OUT/chunks/HASH.json (temp file in the same folder, fsync,
os.replace), so a rerun skips every chunk whose file exists, a killed sweep loses only
the chunks in flight, and changing a constant re-runs exactly the chunks it touches.
The table (OUT/table.csv, plus table.parquet with pyarrow, else table.jsonl) is rebuilt
from the chunk files in a fixed order: point by point in grid order, seeds in the given
order, whatever the chunking or the executor.

Executors: "local" runs the chunks in this process (workers=1) or in N spawned worker
processes; "slurm" submits one array task per chunk with submitit (optional: `pip
install submitit`), each task writing its chunk file into OUT on the shared file system.
SlurmOptions(cluster="local" or "debug") runs the same path without Slurm (tests).
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import pickle
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import readers

SCHEMA_VERSION = 1          # chunk file layout; part of every chunk hash
CHUNKS_DIR = "chunks"
TABLE_STEM = "table"
PROGRESS_EVERY_S = 5.0      # seconds between progress lines when stderr is not a terminal
SUBMITIT_POLL_S = 5.0       # how often the slurm executor asks whether tasks are done
ROUND_DIGITS = 12           # range values rounded to this many significant digits, so
                            # 0.010:0.080:36 gives 0.012, not 0.012000000000000002
MAX_POINTS = 100_000        # grid points of one sweep (checked before any list is built)
MAX_MEMBERS = 1_000_000     # points x seeds of one sweep


class GridError(ValueError):
    """Bad grid input: one line naming the value and the rule it breaks."""


class SweepSubmitted(RuntimeError):
    """--no-wait: the chunks are submitted and the submitting process may end now."""

    def __init__(self, message, job_ids):
        super().__init__(message)
        self.job_ids = job_ids


class SweepIncomplete(RuntimeError):
    """Some chunks failed; the ones that finished are kept and a rerun retries the rest."""

    def __init__(self, message, summary):
        super().__init__(message)
        self.summary = summary


# ---- grids -------------------------------------------------------------------------------

_INT = re.compile(r"^[+-]?\d+$")


def _number(text: str, name: str, spec: str):
    text = text.strip()
    if _INT.match(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise GridError(f"--grid-{_flag(name)} {spec!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise GridError(f"--grid-{_flag(name)} {spec!r}: {text!r} must be finite")
    return value


def _range(spec: str, name: str) -> list:
    parts = spec.split(":")
    if len(parts) != 3:
        raise GridError(f"--grid-{_flag(name)} {spec!r}: a range is lo:hi:n (3 fields)")
    lo, hi = _number(parts[0], name, spec), _number(parts[1], name, spec)
    n = _number(parts[2], name, spec)
    if not isinstance(n, int) or not 1 <= n <= MAX_POINTS:
        raise GridError(f"--grid-{_flag(name)} {spec!r}: n={parts[2].strip()} must be an "
                        f"integer in [1, {MAX_POINTS:,}]")
    if n > 1 and lo > hi:
        raise GridError(f"--grid-{_flag(name)} {spec!r}: lo={lo} > hi={hi} (need lo <= hi)")
    if n == 1:
        return [lo]
    values = [float(f"{lo + (hi - lo) * i / (n - 1):.{ROUND_DIGITS}g}") for i in range(n)]
    if isinstance(lo, int) and isinstance(hi, int) and all(v.is_integer() for v in values):
        values = [int(v) for v in values]
    return values


def parse_values(spec, name: str = "value") -> list:
    """One constant's values: 'lo:hi:n', 'a,b,c', a number, or a list of numbers."""
    if isinstance(spec, bool):
        raise GridError(f"--grid-{_flag(name)} {spec!r}: expected numbers, not a boolean")
    if isinstance(spec, (int, float)):
        values = [_number(repr(spec), name, repr(spec))]
    elif isinstance(spec, (list, tuple)):
        values = [v for item in spec for v in parse_values(item, name)]
    elif isinstance(spec, str):
        spec = spec.strip()
        if ":" in spec:
            values = _range(spec, name)
        else:
            items = [s for s in spec.split(",")]
            if not spec or any(not s.strip() for s in items):
                raise GridError(f"--grid-{_flag(name)} {spec!r}: empty value in the list")
            values = [_number(s, name, spec) for s in items]
    else:
        raise GridError(f"--grid-{_flag(name)} {spec!r}: expected a range, a list or a number")
    if not values:
        raise GridError(f"--grid-{_flag(name)}: no values given")
    if len(values) > MAX_POINTS:
        raise GridError(f"--grid-{_flag(name)}: {len(values):,} values, more than the "
                        f"{MAX_POINTS:,} a sweep takes")
    repeated = sorted(v for v, count in Counter(values).items() if count > 1)
    if repeated:
        raise GridError(f"--grid-{_flag(name)} {spec!r}: value {repeated[0]} appears twice "
                        f"(each point must be unique)")
    return values


def parse_grid(specs: Mapping, allowed: Sequence[str] | None = None) -> dict:
    """{name: spec} to {name: [values]}, checked (see parse_values); names in `allowed`."""
    if not specs:
        raise GridError("the grid is empty: give at least one constant to sweep")
    grid = {}
    for name, spec in specs.items():
        if allowed is not None and name not in allowed:
            raise GridError(f"unknown constant {name!r}; allowed: {', '.join(allowed)}")
        grid[name] = parse_values(spec, name)
    points = math.prod(len(v) for v in grid.values())
    if points > MAX_POINTS:
        raise GridError(f"the grid has {points:,} points ("
                        f"{' x '.join(str(len(v)) for v in grid.values())}), more than the "
                        f"{MAX_POINTS:,} a sweep takes: split it or use fewer values")
    return grid


def load_grid_file(path, allowed: Sequence[str] | None = None) -> dict:
    """A YAML or JSON file mapping each constant to a range string, a list or a number
    (JSON is YAML: one parser reads both)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GridError(f"grid file {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        specs = readers.load_yaml_unique(text, f"grid file {path}")
    except ValueError as exc:
        raise GridError(str(exc)) from None
    if not isinstance(specs, dict):
        raise GridError(f"grid file {path}: expected a mapping of constant -> values, got "
                        f"{type(specs).__name__}")
    return parse_grid({str(k): v for k, v in specs.items()}, allowed)


def expand(grid: Mapping[str, Sequence]) -> list[dict]:
    """Every point of the product, in grid order (the last constant varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


def _flag(name: str) -> str:
    return str(name).replace("_", "-")


# ---- chunks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """One batched runner call: `points` (indices into the expanded grid) x `seeds`."""
    index: int
    point_indices: tuple
    points: tuple
    seeds: tuple
    config: dict = field(compare=False, repr=False)
    hash: str = ""

    @property
    def members(self) -> int:
        return len(self.points) * len(self.seeds)


def pack(n_points: int, seeds: Sequence, batch: int) -> list[tuple[list[int], list]]:
    """Cut n_points x seeds into blocks of at most `batch` members (point, seed pairs):
    batch // len(seeds) whole points per block, or one point and a slice of the seeds
    when batch < len(seeds). Every pair lands in exactly one block."""
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise GridError(f"batch={batch} must be an integer >= 1")
    seeds, batch = list(seeds), int(batch)
    if batch >= len(seeds):
        per = batch // len(seeds)
        return [(list(range(i, min(i + per, n_points))), seeds)
                for i in range(0, n_points, per)]
    return [([p], seeds[j:j + batch]) for p in range(n_points)
            for j in range(0, len(seeds), batch)]


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def runner_name(runner: Callable) -> str:
    return f"{getattr(runner, '__module__', '?')}.{getattr(runner, '__qualname__', repr(runner))}"


def plan(grid: Mapping, seeds: Sequence, batch: int, fixed: Mapping | None = None,
         version: str = "1", runner: str = "", per_batch: Sequence[str] = ()) -> list[Chunk]:
    """The sweep's chunks, each with its configuration and hash. per_batch: constants
    the runner can only take once per batched call (the grid size, Du, Dv, the scar
    rule's constants...): no chunk mixes two values of one of them, and the runner
    also gets each one's value as a keyword argument."""
    seeds = _check_seeds(seeds)
    points = math.prod(len(v) for v in grid.values())
    if points * len(seeds) > MAX_MEMBERS:
        raise GridError(f"{points:,} points x {len(seeds):,} seeds is more than the "
                        f"{MAX_MEMBERS:,} members a sweep takes: use fewer points or seeds")
    fixed = dict(fixed or {})
    both = sorted(set(grid) & set(fixed))
    if both:
        raise GridError(f"constant {both[0]!r} is both swept and fixed; give it once")
    try:
        _canonical(fixed)
    except (TypeError, ValueError) as exc:
        raise GridError(f"fixed settings must be plain JSON values (numbers, strings, "
                        f"lists): {exc}") from None
    points = expand(grid)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(tuple(p.get(n) for n in per_batch), []).append(i)
    blocks = [([idx[j] for j in block], block_seeds) for idx in groups.values()
              for block, block_seeds in pack(len(idx), seeds, batch)]
    chunks = []
    for index, (idx, chunk_seeds) in enumerate(blocks):
        config = {"schema": SCHEMA_VERSION, "version": str(version), "runner": runner,
                  "points": [points[i] for i in idx], "seeds": list(chunk_seeds),
                  "fixed": fixed, "per_batch": [n for n in per_batch if n in grid]}
        digest = hashlib.sha256(_canonical(config).encode()).hexdigest()[:20]
        chunks.append(Chunk(index, tuple(idx), tuple(points[i] for i in idx),
                            tuple(chunk_seeds), config, digest))
    return chunks


def _check_seeds(seeds) -> list:
    seeds = list(seeds)
    if not seeds:
        raise GridError("seeds: need at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise GridError(f"seeds {seeds}: each seed must be an integer")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"seeds {seeds}: a seed appears twice")
    return seeds


# ---- chunk files ----------------------------------------------------------------------------

def write_atomic(path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one, never
    part: a unique temp file in the same folder, fsync, os.replace, fsync the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return   # folders cannot be opened on some systems; the rename is still atomic
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def chunk_path(out, chunk: Chunk) -> Path:
    return Path(out) / CHUNKS_DIR / f"{chunk.hash}.json"


def load_chunk(out, chunk: Chunk, check_row: Callable | None = None,
               warn: bool = False) -> list | None:
    """The chunk's rows if its file exists with the same configuration and rows that fit
    it (see chunk_problem), else None: a damaged or foreign file is a miss, rerun (with a
    warning line when `warn`)."""
    path = chunk_path(out, chunk)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        saved = exc
    problem = chunk_problem(saved, chunk, check_row)
    if problem is not None:
        if warn:
            print(f"warning: chunk file {path}: {problem}; running it again", file=sys.stderr,
                  flush=True)
        return None
    return saved["rows"]


def rows_digest(rows) -> str:
    return hashlib.sha256(_canonical(rows).encode()).hexdigest()


def chunk_problem(saved, chunk: Chunk, check_row: Callable | None = None) -> str | None:
    """Why a chunk file's content cannot stand for the chunk (None: it can): it must be
    this chunk's record, its rows one per point x seed in order with plain, finite values,
    matching their digest, and accepted by check_row (which raises ValueError)."""
    if isinstance(saved, Exception):
        return f"unreadable ({type(saved).__name__})"
    if not isinstance(saved, dict) or saved.get("hash") != chunk.hash \
            or saved.get("config") != chunk.config:
        return "not this chunk's record"
    rows = saved.get("rows")
    if not isinstance(rows, list) or len(rows) != chunk.members:
        return (f"{len(rows) if isinstance(rows, list) else 'no'} rows for "
                f"{chunk.members} points x seeds")
    expected = [(p, s) for p in chunk.points for s in chunk.seeds]
    for row, (point, seed) in zip(rows, expected):
        if not isinstance(row, dict) or row.get("seed") != seed \
                or any(row.get(k) != v for k, v in point.items()):
            return f"a row is not the one of {dict(point)}, seed {seed}"
        for key, value in row.items():
            if not (value is None or isinstance(value, (str, bool, int)) or (
                    isinstance(value, float) and math.isfinite(value))):
                return f"{key}={value!r} is not a finite number, a string or empty"
        if check_row is not None:
            try:
                check_row(row)
            except ValueError as exc:
                return str(exc)
    if "rows_sha256" in saved and saved["rows_sha256"] != rows_digest(rows):
        return "its rows do not match their digest (edited or damaged)"
    return None


def _finite_or_none(row: dict) -> dict:
    """NaN and infinities (e.g. a correlation of a uniform field) are written as empty."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in row.items()}


def _complete_rows(rows, chunk: Chunk, fixed: Mapping) -> list:
    """Check that rows cover the chunk's points x seeds exactly once; put the constants,
    the seed and the scalar fixed settings first in each row."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"the runner must return a list of dicts, got {type(rows).__name__}")
    names = list(chunk.points[0])
    expected = {(tuple(p.values()), s): (p, s) for p in chunk.points for s in chunk.seeds}
    scalars = {k: v for k, v in fixed.items() if isinstance(v, (int, float, str, bool))}
    out = {}
    for row in rows:
        missing = [n for n in names + ["seed"] if n not in row]
        if missing:
            raise ValueError(f"a runner row lacks {missing}: each row must carry the swept "
                             f"constants and the seed")
        key = (tuple(row[n] for n in names), row["seed"])
        if key not in expected or key in out:
            raise ValueError(f"runner row for {dict(zip(names, key[0]))}, seed {key[1]} is "
                             f"{'repeated' if key in out else 'not in this chunk'}")
        p, s = expected[key]
        out[key] = {**p, "seed": s, **scalars, **{k: v for k, v in row.items()
                                                  if k not in p and k != "seed"}}
    if len(out) != len(expected):
        raise ValueError(f"the runner returned {len(out)} rows for {len(expected)} "
                         f"points x seeds")
    return [out[(tuple(p.values()), s)] for p in chunk.points for s in chunk.seeds]


def run_chunk(runner: Callable, chunk: Chunk, out) -> dict:
    """Run one chunk and write its file atomically: what every executor calls."""
    t = time.perf_counter()
    fixed = chunk.config["fixed"]
    shared = {n: chunk.points[0][n] for n in chunk.config["per_batch"]}
    rows = runner([dict(p) for p in chunk.points], list(chunk.seeds), **fixed, **shared)
    rows = [_finite_or_none(r) for r in _complete_rows(rows, chunk, fixed)]
    wall = time.perf_counter() - t
    record = {"hash": chunk.hash, "config": chunk.config, "wall_s": wall, "rows": rows,
              "rows_sha256": rows_digest(rows)}
    path = chunk_path(out, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record).encode())
    return {"index": chunk.index, "members": chunk.members, "wall_s": wall}


# ---- executors ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmOptions:
    """Slurm job-array settings (submitit). time: minutes or [D-]HH:MM:SS; mem: e.g. 16G.
    cluster: "slurm", or submitit's "local"/"debug" to run the same path without Slurm.
    additional: any other sbatch option, e.g. {"account": "lab", "qos": "short"}."""
    partition: str | None = None
    time: str | int = 60
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int = 256
    additional: dict = field(default_factory=dict)
    cluster: str = "slurm"
    account: str | None = None      # shared clusters: whose allocation is charged
    qos: str | None = None          # the quality of service (queue limits, priority)
    constraint: str | None = None   # node features, e.g. "a100" or "a100|h100"

    def minutes(self) -> int:
        return parse_minutes(self.time)

    def parameters(self) -> dict:
        """submitit AutoExecutor parameters (slurm_* ones are ignored off Slurm)."""
        for name, least in (("gpus_per_task", 0), ("cpus_per_task", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) != v or v < least):
                raise GridError(f"--slurm-{_flag(name)} {v}: must be an integer >= {least}")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(self.mem)):
            raise GridError(f"--slurm-mem {self.mem!r}: expected a size like 16G or 4000M")
        if self.cluster not in ("slurm", "local", "debug"):
            raise GridError(f"slurm cluster {self.cluster!r} is not one of slurm, local, debug")
        for name in ("account", "qos", "constraint", "partition"):
            v = getattr(self, name)   # each becomes one #SBATCH line: no spaces, no newlines
            if v is not None and not re.fullmatch(r"[A-Za-z0-9_.,:|&!*\[\]()+=@/-]+", str(v)):
                raise GridError(f"--slurm-{name} {v!r}: expected one word such as a name "
                                f"or a feature expression (letters, digits, _.,:|&!*[]()+=@/-)")
        params = {"timeout_min": self.minutes(), "slurm_partition": self.partition,
                  "slurm_gpus_per_task": self.gpus_per_task, "cpus_per_task": self.cpus_per_task,
                  "slurm_mem": self.mem, "slurm_array_parallelism": self.array_parallelism,
                  "name": "sweep"}
        extra = {k: getattr(self, k) for k in ("account", "qos", "constraint")
                 if getattr(self, k) is not None}
        if self.additional or extra:
            params["slurm_additional_parameters"] = {**extra, **dict(self.additional)}
        return {k: v for k, v in params.items() if v is not None}


def parse_minutes(text) -> int:
    """Slurm time: minutes, HH:MM:SS, or D-HH:MM:SS -> whole minutes (rounded up)."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", s)
    if m:
        d, h, mi, sec = (int(x or 0) for x in m.groups())
        minutes = math.ceil((((d * 24 + h) * 60 + mi) * 60 + sec) / 60)
    elif re.fullmatch(r"\d+", s):
        minutes = int(s)
    else:
        raise GridError(f"--slurm-time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    if minutes < 1:
        raise GridError(f"--slurm-time {text!r}: must be at least 1 minute")
    return minutes


def _init_worker(threads: int) -> None:
    """Worker processes: `threads` CPU threads each (so N workers do not oversubscribe)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:  # spawn may have imported it with the main module already
        sys.modules["torch"].set_num_threads(threads)


def _run_in_process(runner, chunks, out, report, fail_fast):
    for chunk in chunks:
        try:
            report(chunk, run_chunk(runner, chunk, out), None)
        except Exception as exc:  # noqa: BLE001  (recorded, the sweep goes on)
            report(chunk, None, exc)
            if fail_fast:
                return


def _run_in_workers(runner, chunks, out, report, fail_fast, workers, threads):
    try:
        pickle.dumps(runner)
    except Exception as exc:  # noqa: BLE001  (lambdas, closures, local functions)
        raise GridError(f"--workers {workers}: the runner {runner_name(runner)} cannot be "
                        f"sent to worker processes ({exc}); use a module-level function") \
            from None
    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads,)) as pool:
        futures = {pool.submit(run_chunk, runner, c, str(out)): c for c in chunks}
        for fut in cf.as_completed(futures):
            exc = fut.exception()
            report(futures[fut], None if exc else fut.result(), exc)
            if exc and fail_fast:
                for f in futures:
                    f.cancel()
                return


def make_submitit_executor(folder, options: SlurmOptions):
    """A submitit AutoExecutor with the options applied (raises if submitit is absent)."""
    try:
        import submitit
    except ImportError:
        raise GridError("--executor slurm needs submitit: pip install submitit") from None
    params = options.parameters()
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    executor.update_parameters(**params)
    return executor


JOBS_DIR = "jobs"   # CHUNKS_DIR/jobs/HASH.json: the job that was submitted for a chunk


def job_record_path(out, chunk: Chunk) -> Path:
    return Path(out) / CHUNKS_DIR / JOBS_DIR / f"{chunk.hash}.json"


def record_job(out, chunk: Chunk, job_id, cluster: str) -> None:
    """Remember which job computes a chunk, so that a later run (--collect, or a rerun
    after the submitting process died) waits for it instead of submitting it again."""
    path = job_record_path(out, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"hash": chunk.hash, "job_id": str(job_id), "cluster": cluster,
              "submitted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(path, json.dumps(record).encode())


def load_job_record(out, chunk: Chunk) -> dict | None:
    try:
        record = json.loads(job_record_path(out, chunk).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("hash") == chunk.hash else None


def job_is_active(out, record: dict) -> bool:
    """Whether a recorded job may still write its chunk (pending or running), as submitit
    sees it (Slurm: squeue/sacct). Debug jobs run inside the submitting process, so
    none outlives it; without submitit nothing can be asked, and the job counts as gone."""
    try:
        import submitit
    except ImportError:
        return False
    folder = Path(out) / "submitit"
    try:
        if record.get("cluster") == "slurm":
            job = submitit.SlurmJob(folder=folder, job_id=record["job_id"])
        elif record.get("cluster") == "local":
            job = submitit.LocalJob(folder=folder, job_id=record["job_id"])
        else:
            return False
        return not job.done()
    except Exception:  # noqa: BLE001  (an unknown or expired job id: not running)
        return False


def _submit(runner, chunks, out, options: SlurmOptions) -> list:
    """One job array, one task per chunk; each task's job id recorded beside the chunks."""
    executor = make_submitit_executor(Path(out) / "submitit", options)
    jobs = executor.map_array(run_chunk, [runner] * len(chunks), chunks,
                              [str(out)] * len(chunks))
    for job, chunk in zip(jobs, chunks):
        record_job(out, chunk, job.job_id, options.cluster)
    return jobs


def _run_submitit(runner, chunks, out, report, fail_fast, options: SlurmOptions, poll_s,
                  in_flight=()):
    """Submit `chunks` and wait for them, and for the chunks whose jobs an earlier run
    submitted and that are still running (in_flight: they are not submitted again)."""
    jobs = _submit(runner, chunks, out, options) if chunks else []
    pending = dict(zip(jobs, chunks))
    waiting = list(in_flight)
    while pending or waiting:
        for job in [j for j in pending if j.done()]:
            chunk = pending.pop(job)
            try:
                report(chunk, job.result(), None)
            except Exception as exc:  # noqa: BLE001
                report(chunk, None, exc)
                if fail_fast:
                    for j in pending:
                        j.cancel(check=False)
                    return
        for chunk in list(waiting):
            active = job_is_active(out, load_job_record(out, chunk) or {})
            if load_chunk(out, chunk) is not None:   # read after asking: no race with the job
                waiting.remove(chunk)
                report(chunk, {"index": chunk.index, "members": chunk.members}, None)
            elif not active:
                waiting.remove(chunk)
                report(chunk, None, RuntimeError(
                    f"job {(load_job_record(out, chunk) or {}).get('job_id')} ended without "
                    f"writing its chunk file"))
        if pending or waiting:
            time.sleep(poll_s)


def _array_id(jobs) -> str:
    """The job array's id from its tasks' ids (ARRAY_TASK on Slurm)."""
    ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
    return ", ".join(ids)


SBATCH = {"slurm_partition": "partition", "timeout_min": "time", "cpus_per_task":
          "cpus-per-task", "slurm_gpus_per_task": "gpus-per-task", "slurm_mem": "mem",
          "name": "job-name"}


def dry_run_text(chunks: Sequence[Chunk], out, executor: str,
                 slurm: SlurmOptions | None = None) -> str:
    """What a run would do, without doing it: each chunk (done, running as a recorded job,
    or to run) and, for Slurm, the job array and the #SBATCH options it would submit."""
    lines, todo = [], []
    for c in chunks:
        record = load_job_record(out, c)
        if load_chunk(out, c) is not None:
            status = "done"
        elif executor == "slurm" and record and job_is_active(out, record):
            status = f"running (job {record['job_id']})"
        else:
            status, todo = "to run", todo + [c]
        lines.append(f"  chunk {c.index:4d} {c.hash}  {len(c.points)} point(s) x "
                     f"{len(c.seeds)} seed(s) = {c.members:4d} members  {status}")
    head = [f"dry run: {len(chunks)} chunk(s) in {out}, {len(todo)} to run; nothing is run "
            f"or submitted"]
    if executor != "slurm" or not todo:
        return "\n".join(head + lines)
    options = slurm or SlurmOptions()
    params = options.parameters()
    array = [f"job array of {len(todo)} task(s), one per chunk to run (chunks "
             f"{', '.join(str(c.index) for c in todo)}); submitit writes its sbatch file "
             f"with these options:",
             f"  #SBATCH --array=0-{len(todo) - 1}%{min(options.array_parallelism, len(todo))}"]
    array += [f"  #SBATCH --{SBATCH[k]}={v}" for k, v in params.items() if k in SBATCH]
    array += [f"  #SBATCH --{k}={v}" for k, v in
              params.get("slurm_additional_parameters", {}).items()]
    return "\n".join(head + lines + array)


# ---- the table ---------------------------------------------------------------------------------

def collect(out, chunks: Sequence[Chunk], seeds: Sequence[int],
            check_row: Callable | None = None) -> list[dict] | None:
    """All rows in table order (grid order, then `seeds` order); None if a chunk is
    missing. The order does not depend on how the points were chunked."""
    rank = {s: i for i, s in enumerate(seeds)}
    keyed = []
    for chunk in chunks:
        rows = load_chunk(out, chunk, check_row)
        if rows is None:
            return None
        members = [(p, s) for p in chunk.point_indices for s in chunk.seeds]
        keyed += [((p, rank[s]), row) for (p, s), row in zip(members, rows)]
    keyed.sort(key=lambda kr: kr[0])
    return [row for _, row in keyed]


def _columns(rows) -> list[str]:
    cols = {}
    for row in rows:
        for k in row:
            cols.setdefault(k, None)
    return list(cols)


def table_formats() -> tuple[str, ...]:
    """csv always; parquet when pyarrow is installed, else JSON lines."""
    try:
        import pyarrow  # noqa: F401
        return ("csv", "parquet")
    except ImportError:
        return ("csv", "jsonl")


def write_table(out, rows: list[dict], formats: Sequence[str] | None = None) -> list[Path]:
    """OUT/table.csv (+ .parquet or .jsonl), each written atomically."""
    formats = table_formats() if formats is None else tuple(formats)
    cols, paths = _columns(rows), []
    for fmt in formats:
        path = Path(out) / f"{TABLE_STEM}.{fmt}"
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            data = buf.getvalue().encode()
        elif fmt == "jsonl":
            data = "".join(json.dumps({c: r.get(c) for c in cols}) + "\n" for r in rows).encode()
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows]), sink)
            data = sink.getvalue().to_pybytes()
        else:
            raise GridError(f"table format {fmt!r} is not one of csv, jsonl, parquet")
        write_atomic(path, data)
        paths.append(path)
    return paths


def read_table(path) -> list[dict]:
    """Rows of a table.csv (numbers parsed back) or table.jsonl."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    with open(path, newline="") as f:
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _cell(text: str):
    if text == "":
        return None
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)


# ---- progress and the driver ---------------------------------------------------------------

class Progress:
    """Chunk counts and points/s: a rewritten line on a terminal, else a line every
    PROGRESS_EVERY_S seconds (logs stay short)."""

    def __init__(self, total, seeds, stream=None, every=PROGRESS_EVERY_S, enabled=True):
        self.total, self.n_seeds, self.every = total, len(seeds), every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = self.skipped = self.failed = self.members = 0
        self.printed = None
        self.errors: list[str] = []
        self.start = self.last = time.perf_counter()

    def line(self) -> str:
        wall = time.perf_counter() - self.start
        rate = self.members / self.n_seeds / wall if wall > 0 else 0.0
        return (f"sweep: {self.done + self.skipped}/{self.total} chunks ({self.done} run, "
                f"{self.skipped} skipped, {self.failed} failed), {rate:.2f} points/s, "
                f"{wall:.0f} s")

    def update(self, force=False) -> None:
        """force: the final line (skipped off a terminal when it would repeat the last)."""
        if not self.enabled:
            return
        now, counts = time.perf_counter(), (self.done, self.skipped, self.failed)
        if self.tty:
            print("\r" + self.line(), end="\n" if force else "", file=self.stream, flush=True)
        elif (force and counts != self.printed) or now - self.last >= self.every:
            print(self.line(), file=self.stream, flush=True)
            self.last, self.printed = now, counts

    def summary(self) -> dict:
        wall = time.perf_counter() - self.start
        return {"chunks": self.total, "done": self.done, "skipped": self.skipped,
                "failed": self.failed, "members_run": self.members,
                "points_per_s": self.members / self.n_seeds / wall if wall > 0 else 0.0,
                "members_per_s": self.members / wall if wall > 0 else 0.0,
                "wall_s": wall, "errors": self.errors}


@dataclass
class SweepResult:
    rows: list
    tables: list
    summary: dict
    chunks: list


def run_sweep(runner: Callable, grid: Mapping, seeds: Sequence[int], out, *,
              fixed: Mapping | None = None, batch: int = 32, version: str = "1",
              executor: str = "local", workers: int = 1, threads: int = 1,
              slurm: SlurmOptions | None = None, formats: Sequence[str] | None = None,
              per_batch: Sequence[str] = (), fail_fast: bool = False,
              progress: bool = True, poll_s: float = SUBMITIT_POLL_S,
              check_row: Callable | None = None, submit_only: bool = False,
              collect_only: bool = False) -> SweepResult:
    """Run every chunk not done yet, then rebuild the table from the chunk files.

    grid: {name: [values]} (parse_grid); seeds: ints; fixed: settings passed to every
    runner call as keyword arguments (plain JSON values); per_batch: swept constants
    that one runner call takes once for its whole batch (see plan). executor "local" (workers=1:
    in this process; workers=N: N spawned processes with `threads` CPU threads each) or
    "slurm" (submitit, `slurm` options). A failing chunk is recorded and the others go
    on (fail_fast stops at the first); then SweepIncomplete is raised and the finished
    chunks stay on disk for the rerun. check_row(row) raises ValueError for a row a chunk
    file cannot hold (values out of their range): such a file is run again. Returns the
    rows, the table paths and a summary.

    With "slurm", each submitted chunk's job id is recorded (record_job) and a chunk whose
    job is still pending or running is never submitted again. submit_only: submit the
    chunks not done and not running, then raise SweepSubmitted at once (the submitting
    process may end). collect_only: submit nothing; build the table if every chunk is
    done, else raise SweepIncomplete saying which are still running and which are missing.
    """
    if executor not in ("local", "slurm"):
        raise GridError(f"--executor {executor!r} is not one of local, slurm")
    if submit_only and (executor != "slurm" or collect_only):
        raise GridError("--no-wait submits and returns: it needs --executor slurm and "
                        "cannot be combined with --collect")
    for name, n in (("workers", workers), ("threads", threads)):
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise GridError(f"--{name} {n}: must be an integer >= 1")
    chunks = plan(grid, seeds, batch, fixed, version, runner_name(runner), per_batch)
    out = Path(out)
    (out / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    todo = [c for c in chunks if load_chunk(out, c, check_row, warn=True) is None]
    # chunks an earlier run submitted and whose jobs still run are waited for, not resubmitted
    in_flight = [c for c in todo if executor == "slurm" or collect_only
                 if job_is_active(out, load_job_record(out, c) or {})]
    todo = [c for c in todo if c in in_flight or load_chunk(out, c, check_row) is None]
    fresh = [c for c in todo if c not in in_flight]
    prog = Progress(len(chunks), seeds, enabled=progress)
    prog.skipped = len(chunks) - len(todo)

    def report(chunk, result, exc):
        if exc is None:
            prog.done += 1
            prog.members += result["members"]
        else:
            prog.failed += 1
            prog.errors.append(f"chunk {chunk.index} ({chunk.hash}): "
                               f"{type(exc).__name__}: {exc}")
            if prog.enabled:
                traceback.print_exception(exc, file=prog.stream)
        prog.update()

    if collect_only:
        pass
    elif submit_only:
        jobs = _submit(runner, fresh, out, slurm or SlurmOptions()) if fresh else []
        raise SweepSubmitted(
            f"submitted {len(jobs)} chunk(s) as job array "
            f"{_array_id(jobs) or '(none)'}; {len(in_flight)} chunk(s) still running from "
            f"before, {prog.skipped} done; gather them with --collect",
            [str(j.job_id) for j in jobs])
    elif todo and executor == "slurm":
        _run_submitit(runner, fresh, out, report, fail_fast, slurm or SlurmOptions(), poll_s,
                      in_flight)
    elif todo and workers > 1:
        _run_in_workers(runner, todo, out, report, fail_fast, int(workers), int(threads))
    elif todo:
        _run_in_process(runner, todo, out, report, fail_fast)
    prog.update(force=True)
    summary = prog.summary()
    planned = {chunk_path(out, c).name for c in chunks}
    summary["stale_chunk_files"] = sum(p.name not in planned
                                       for p in (out / CHUNKS_DIR).glob("*.json"))
    rows = collect(out, chunks, list(seeds), check_row)
    if rows is None and collect_only:
        running = [c for c in in_flight if load_chunk(out, c, check_row) is None]
        missing = sum(load_chunk(out, c, check_row) is None for c in chunks) - len(running)
        ids = sorted({load_job_record(out, c)["job_id"] for c in running})
        raise SweepIncomplete(f"{len(chunks) - len(running) - missing} of {len(chunks)} "
                              f"chunks are done, {len(running)} still running (jobs "
                              f"{', '.join(ids) or '-'}), {missing} missing (never submitted "
                              f"or their job failed: a run without --collect submits "
                              f"them)", summary)
    if rows is None:
        missing = sum(load_chunk(out, c, check_row) is None for c in chunks)
        first = summary["errors"][0] if summary["errors"] else "not run"
        raise SweepIncomplete(f"{missing} of {len(chunks)} chunks are not done (first: "
                              f"{first}); finished chunks are kept in {out / CHUNKS_DIR}, "
                              f"rerun to do the rest", summary)
    return SweepResult(rows, write_table(out, rows, formats), summary, chunks)


# ---- command-line flags (argparse) ---------------------------------------------------------

def add_grid_flags(parser, names: Sequence[str]) -> None:
    """--grid-NAME per sweepable constant, and --grid-file."""
    group = parser.add_argument_group("sweep grid (lo:hi:n, both ends included, or a,b,c)")
    for name in names:
        group.add_argument(f"--grid-{_flag(name)}", dest=f"grid_{name}", metavar="SPEC",
                           help=f"values of {name}")
    group.add_argument("--grid-file", metavar="PATH",
                       help="YAML/JSON file mapping constants to ranges or lists")


def grid_from_flags(args, names: Sequence[str]) -> dict:
    """The grid from --grid-file, then the --grid-NAME flags (a flag wins)."""
    specs = {}
    path = getattr(args, "grid_file", None)
    if path is not None:
        if not path.strip():
            raise GridError("--grid-file '': give a file path or leave the flag out")
        specs.update(load_grid_file(path, names))
    for name in names:
        spec = getattr(args, f"grid_{name}", None)
        if spec is not None:
            specs[name] = spec
    return parse_grid(specs, names)


def add_executor_flags(parser) -> None:
    g = parser.add_argument_group("sweep execution")
    g.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: this machine; slurm: one job-array task per chunk (submitit)")
    g.add_argument("--batch", type=int, default=32,
                   help="most batch members (points x seeds) per chunk (default 32)")
    g.add_argument("--workers", type=int, default=1,
                   help="local worker processes (default 1: in this process)")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-time", default="60", help="minutes or [D-]HH:MM:SS per task")
    g.add_argument("--slurm-gpus-per-task", type=int)
    g.add_argument("--slurm-cpus-per-task", type=int)
    g.add_argument("--slurm-mem", help="memory per task, e.g. 16G")
    g.add_argument("--slurm-array-parallelism", type=int, default=256,
                   help="most array tasks running at once (default 256)")
    g.add_argument("--slurm-account", help="the account charged (sbatch --account)")
    g.add_argument("--slurm-qos", help="quality of service (sbatch --qos)")
    g.add_argument("--slurm-constraint", help="node features, e.g. a100 (sbatch --constraint)")
    g.add_argument("--no-wait", action="store_true", dest="no_wait",
                   help="slurm: submit the chunks not done and not running, record their job "
                        "ids in the chunk folder and return; gather them with --collect")
    g.add_argument("--collect", action="store_true",
                   help="submit nothing: build the results from the finished chunks (says "
                        "which are still running or missing)")
    g.add_argument("--dry-run", action="store_true", dest="dry_run",
                   help="print the chunks and the job array a run would submit, and exit")


def executor_from_flags(args) -> dict:
    """run_sweep keyword arguments from add_executor_flags' flags."""
    slurm = SlurmOptions(partition=args.slurm_partition, time=args.slurm_time,
                         gpus_per_task=args.slurm_gpus_per_task,
                         cpus_per_task=args.slurm_cpus_per_task, mem=args.slurm_mem,
                         array_parallelism=args.slurm_array_parallelism,
                         account=getattr(args, "slurm_account", None),
                         qos=getattr(args, "slurm_qos", None),
                         constraint=getattr(args, "slurm_constraint", None))
    slurm.parameters()  # bad options fail here, before any work
    no_wait, collect_only = bool(getattr(args, "no_wait", False)), bool(getattr(args, "collect", False))
    if no_wait and (args.executor != "slurm" or collect_only):
        raise GridError("--no-wait submits and returns: it needs --executor slurm and "
                        "cannot be combined with --collect")
    return {"executor": args.executor, "batch": args.batch, "workers": args.workers,
            "slurm": slurm, "submit_only": no_wait, "collect_only": collect_only}


# ---- heatmap (the edge: matplotlib is imported only here) --------------------------------

PUBLISHED_POINT = (0.037, 0.060)   # (F0, K0) of the reference study


def cell_means(rows, metric: str, x: str = "f0", y: str = "k0"):
    """(xs, ys, mean[y][x], n[y][x]) over the seeds of each (x, y) cell; NaN/None skipped."""
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    acc = {}
    for r in rows:
        v = r.get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc.setdefault((r[x], r[y]), []).append(float(v))
    mean = [[(sum(acc[(a, b)]) / len(acc[(a, b)])) if (a, b) in acc else math.nan
             for a in xs] for b in ys]
    n = [[len(acc.get((a, b), ())) for a in xs] for b in ys]
    return xs, ys, mean, n


def _edges(values):
    """Cell edges halfway between sorted centres (one extra half step at each end)."""
    if len(values) == 1:
        return [values[0] - 0.5, values[0] + 0.5]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(values)]
    return [2 * values[0] - mids[0]] + mids + [2 * values[-1] - mids[-1]]


def heatmap(path, rows, metric: str, label: str | None = None, x: str = "f0", y: str = "k0",
            xlabel: str = "F0 (feed)", ylabel: str = "K0 (kill)", vmin=None, vmax=None,
            log: bool = False, marked=PUBLISHED_POINT, cmap: str = "viridis") -> None:
    """The seed mean of `metric` over (x, y) with the published point marked; the title
    gives n (seeds) per cell. log: a logarithmic colour scale (e.g. for a ratio)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    xs, ys, mean, n = cell_means(rows, metric, x, y)
    counts = sorted({c for line in n for c in line})
    n_text = f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}-{counts[-1]}"
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    norm = LogNorm(vmin=vmin, vmax=vmax) if log else None
    mesh = ax.pcolormesh(_edges(xs), _edges(ys), mean, cmap=cmap, norm=norm,
                         vmin=None if log else vmin, vmax=None if log else vmax)
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label(f"{label or metric} (mean over seeds)")
    if marked is not None:
        ax.plot(*marked, marker="*", ms=14, mfc="white", mec="black",
                label=f"published point ({marked[0]}, {marked[1]})", ls="none")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{label or metric}: {len(xs)} x {len(ys)} points, {n_text} seeds per "
                 f"cell", fontsize=10)
    fig.tight_layout()
    from common import figures
    figures.save_figure(fig, path, dpi=110, layout=False)
