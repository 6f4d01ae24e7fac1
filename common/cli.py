"""The command line every script shares, CleanRL-style: a dataclass of arguments feeds it.

Each script declares its knobs as a dataclass whose fields carry their default, help and
allowed range (`arg(...)`); `parse` turns that into argparse flags (`train_steps` ->
`--train-steps`), applies `--quick` to the defaults the user did not set, and validates
every value once, up front, with one clear line naming the flag and its allowed range.
`RunArgs` holds the flags every study takes (--seeds --seed --device --out --quick
--threads --quiet).

Also here, the edges of a run: `staged_output` (a run's files appear together or not at
all), `envelope` (the keys every results JSON starts with), `write_json_atomic`,
`progress` (bars on a terminal, a line every few seconds in a log) and `run_cli` (expected
errors as one line on stderr, exit code 2).

Nothing here imports torch at module level: `--help` must answer before the heavy imports.
Scripts take their heavy modules through `lazy(...)` for the same reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

from protocol import arg  # noqa: F401  (re-exported: scripts declare flags with it)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_ROOT = Path("scarring_results")   # every study writes under scarring_results/<study>/
SCHEMA_VERSION = 2
MARKER = ".scarring_run"   # written into every output folder: marks it as ours to replace
MAX_SEED = 2 ** 63 // 100_000 - 1   # noise generator seeds are seed * 100000 + stream

# ---- declaring arguments ----------------------------------------------------------------


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(hint):
    """(element type, is_sequence) of a field's type: int, float, str, bool or a tuple."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (tuple, list):
        return args[0], True
    if args:   # Optional[X] / X | None
        return _base_type(args[0])
    return hint, False


def _range_text(meta) -> str:
    lo, hi = meta["lo"], meta["hi"]
    if meta["choices"] is not None:
        return "one of " + ", ".join(map(str, meta["choices"]))
    if lo is not None and hi is not None:
        return f"in {'(' if meta['lo_open'] else '['}{lo}, {hi}{')' if meta['hi_open'] else ']'}"
    if lo is not None:
        return f"{'>' if meta['lo_open'] else '>='} {lo}"
    if hi is not None:
        return f"{'<' if meta['hi_open'] else '<='} {hi}"
    return ""


def check_value(name: str, value, meta, kind) -> None:
    """Raise ValueError unless value fits the field's type and range."""
    if value is None:
        return
    where = f"{flag(name)} {value!r}"
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: must be true or false")
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where}: must be an integer")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: must be a number")
        if meta["finite"] and not math.isfinite(value):
            raise ValueError(f"{where}: must be a finite number")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ValueError(f"{where}: must be {_range_text(meta)}")
    lo, hi = meta["lo"], meta["hi"]
    below = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    above = hi is not None and (value >= hi if meta["hi_open"] else value > hi)
    if below or above or (kind is float and math.isnan(value)):
        raise ValueError(f"{where}: must be {_range_text(meta)}")


def validate(obj) -> None:
    """Check every field of a dataclass built from `arg` fields, then its own `check()`."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if "help" not in f.metadata:
            continue
        kind, sequence = _base_type(hints[f.name])
        value = getattr(obj, f.name)
        for v in (value if sequence and value is not None else [value]):
            check_value(f.name, v, f.metadata, kind)
    for klass in reversed(type(obj).__mro__):   # every class's own cross-field checks
        if "check" in vars(klass):
            vars(klass)["check"](obj)


# ---- the flags every study takes --------------------------------------------------------


@dataclasses.dataclass
class RunArgs:
    """--seeds --seed --device --out --quick --threads --quiet."""
    study: typing.ClassVar[str] = "study"   # names the default output folder and the JSON

    seeds: int = arg(8, "number of independent seeds, run as one batch", lo=1, hi=100_000)
    seed: int = arg(0, "first seed; the run uses seeds SEED .. SEED+SEEDS-1", lo=0,
                    hi=MAX_SEED)
    device: typing.Optional[str] = arg(None, "torch device, e.g. cpu or cuda (default: "
                                       "cuda if present, else cpu)")
    out: typing.Optional[str] = arg(None, "output folder (default: scarring_results/<study>); "
                                    "replaced whole by each run")
    quick: bool = arg(False, "a smoke run (small grid, few steps): checks that everything "
                             "runs; its numbers are not comparable with the published ones")
    threads: typing.Optional[int] = arg(None, "torch CPU threads (default: torch's choice; "
                                        "1 is often faster on a loaded machine)", lo=1)
    quiet: bool = arg(False, "no progress bars")

    def check(self) -> None:
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"--seed {self.seed} with --seeds {self.seeds}: the last seed "
                             f"must be <= {MAX_SEED}")
        if self.out is not None and not self.out.strip():
            raise ValueError("--out '': give a folder path")
        check_out_dir(self.out_dir())

    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else RESULTS_ROOT / self.study


def _help_text(f, quick) -> str:
    text = f.metadata["help"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, bool):
        return text
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    text += f" (default: {shown}"
    if quick and f.name in quick:
        q = quick[f.name]
        text += f"; --quick: {' '.join(map(str, q)) if isinstance(q, tuple) else q}"
    return text + ")"


def _one_line_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse, with a usage error as one line (like every other error here)."""

        def error(self, message):
            print(f"error: {message} (see --help)", file=sys.stderr)
            sys.exit(2)

    return Parser


def build_parser(cls, description: str | None = None, quick: dict | None = None):
    import argparse

    parser = _one_line_parser()(description=description, allow_abbrev=False,
                                argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        kind, sequence = _base_type(hints[f.name])
        kw = {"help": _help_text(f, quick), "dest": f.name}
        if kind is bool:
            parser.add_argument(flag(f.name), action="store_true", **kw)
            continue
        kw["type"] = {int: int, float: float}.get(kind, str)
        if sequence:
            kw["nargs"] = "+"
        if f.metadata["choices"] is not None:
            kw["choices"] = f.metadata["choices"]
        kw["metavar"] = f.metadata["metavar"] or (None if "choices" in kw else f.name.upper())
        parser.add_argument(flag(f.name), **kw)
    return parser


def parse(cls, argv=None, *, description: str | None = None, quick: dict | None = None):
    """An instance of the dataclass `cls` from the command line, validated.

    quick: {field: value} that --quick uses instead of the defaults; a flag the user gives
    explicitly always wins. --help prints every flag with its help, default and quick value.
    """
    parser = build_parser(cls, description, quick)
    given = vars(parser.parse_args(argv))     # only the flags on the command line
    values = dict(quick or {}) if given.get("quick") else {}
    values.update(given)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    args = cls(**values)
    validate(args)
    return args


def split_commas(argv, *flags) -> list[str]:
    """argv (default: sys.argv[1:]) with the values of the given list flags split at
    commas, so that `--ks 1,2,4` reads as `--ks 1 2 4`: scripts whose list flags once took
    comma lists keep accepting them. Only the named flags: other values may hold commas."""
    out, inside = [], False
    for token in (sys.argv[1:] if argv is None else argv):
        name, eq, value = token.partition("=")
        if token.startswith("--"):
            inside = name in flags
            out += [name, *filter(None, value.split(","))] if inside and eq else [token]
        elif inside:
            out += list(filter(None, token.split(",")))
        else:
            out.append(token)
    return out


def config_of(args) -> dict:
    """The arguments as a plain dict (for results files)."""
    return dataclasses.asdict(args)


# ---- heavy imports, devices, threads ---------------------------------------------------


class lazy:
    """The module `name`, imported on its first attribute access (so --help stays fast).

    A plain proxy, deliberately not a sys.modules entry: code that scans sys.modules
    (torch's import does) must not trigger half-finished imports."""

    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def lazy_modules(*names: str) -> tuple:
    """lazy(name) for each name: `torch, scarring = lazy_modules("torch", "scarring")`."""
    return tuple(lazy(n) for n in names)


def resolve_device(name):
    """A usable torch device from --device (None: cuda if present, else cpu)."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda devices are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


TENSORS_PER_MEMBER = 12   # U, V, F, K, two padded buffers per field, temporaries of a step


def available_memory(device) -> int | None:
    """Bytes free for new tensors on the device (None if unknown)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def check_memory(members: int, cells: int, dtype, device) -> None:
    """Refuse, before any work, a run whose largest batch cannot fit in memory."""
    import torch

    need = members * cells * torch.finfo(dtype).bits // 8 * TENSORS_PER_MEMBER
    free = available_memory(device)
    if free is not None and need > free:
        raise ValueError(f"this run needs about {need / 2**30:.1f} GiB for its largest batch "
                         f"({members} media of {cells:,} cells) but {free / 2**30:.1f} GiB "
                         f"is free on {device}: use a smaller --grid or fewer --seeds")


def apply_threads(threads) -> None:
    if threads is not None:
        import torch
        torch.set_num_threads(int(threads))


def start(args) -> tuple:
    """The common start of a run: (seeds, device); sets threads and quiet progress and
    says what runs where (a --quick run says it is a smoke run)."""
    global QUIET
    QUIET = bool(getattr(args, "quiet", False))
    seeds = args.seed_list()
    apply_threads(args.threads)
    device = resolve_device(args.device)
    grid = getattr(args, "grid", None)
    print(f"{type(args).study}: {len(seeds)} seed{'s' * (len(seeds) != 1)} on {device}"
          f"{f', grid {grid}x{grid}' if grid else ''}, output -> {args.out_dir()}/", flush=True)
    if getattr(args, "quick", False):
        print("SMOKE RUN (--quick): checks that everything runs; its numbers are not "
              "comparable with the published or documented ones", flush=True)
    return seeds, device


# ---- progress ----------------------------------------------------------------------------

QUIET = False
LOG_EVERY_S = 5.0   # without a terminal, one progress line at most this often


class progress:
    """A progress bar for `total` units: tqdm on a terminal, a plain line every few
    seconds otherwise (logs of batch systems), nothing with --quiet or desc=None.
    Use as a context manager; call update(n)."""

    def __init__(self, total: int, desc: str | None):
        self.total, self.desc, self.n = total, desc, 0
        self.on = desc is not None and not QUIET
        self.bar = None
        self.t0 = self.last = time.monotonic()
        if self.on and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.on:
            now = time.monotonic()
            if now - self.last >= LOG_EVERY_S or self.n >= self.total:
                self.last = now
                print(f"{self.desc}: {self.n}/{self.total} ({self.n / max(self.total, 1):.0%}), "
                      f"{now - self.t0:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- outputs ----------------------------------------------------------------------------


def _is_ours_or_empty(out: Path) -> bool:
    return (out / MARKER).is_file() or not any(out.iterdir())


def check_out_dir(out) -> Path:
    """Refuse an output folder a run must not replace (before any long work)."""
    out = Path(out)
    parent = out.resolve().parent
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not _is_ours_or_empty(out):
        raise ValueError(f"--out {out}: folder exists, is not empty and was not written by a "
                         f"run of this project ({MARKER} missing); choose a new or empty folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write_test_"):
            pass
    except OSError as exc:
        raise PermissionError(f"output folder {out} is not writable "
                              f"({exc.strerror or exc})") from None
    return out


@contextlib.contextmanager
def staged_output(out, study: str = ""):
    """Yield a fresh folder beside `out`; on success swap it in as `out` whole.

    A run's files therefore appear together or not at all: an interrupted or failed run
    leaves the previous run's folder untouched, and a folder never mixes two runs. Only a
    folder that a previous run wrote (it holds the marker file) or an empty one is replaced.
    """
    out = check_out_dir(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.resolve().parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)   # mkdtemp makes 0700; give the folder the usual mode
    try:
        (stage / MARKER).write_text(f"{study}\n")
        yield stage
        if out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=stage.parent))
            os.replace(out, old / out.name)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _json_safe(obj):
    """Tensors and numpy values to plain Python; non-finite floats to None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "detach"):   # a torch tensor
        return _json_safe(obj.detach().cpu().tolist())
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return _json_safe(obj.item())
    if hasattr(obj, "tolist"):  # numpy array
        return _json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)   # dtypes, devices, paths


def write_json_atomic(path, data) -> Path:
    """Write JSON to a temporary file beside `path`, then rename it into place, so a
    crash never leaves a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(data), f, indent=2, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def git_commit() -> str:
    """The repository's commit (with "-dirty" when tracked files changed), or "unknown"."""
    try:
        run = dict(cwd=ROOT, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def envelope(args, seeds, device, wall_time_s: float) -> dict:
    """The keys every results JSON starts with (docs/results_schema.md)."""
    import numpy
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": numpy.__version__, "platform": platform.platform()}
    device = str(device)
    hardware = {"cpu_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        hardware["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return {"schema_version": SCHEMA_VERSION, "study": type(args).study,
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "seeds": list(seeds), "git_commit": git_commit(), "versions": versions,
            "device": device, "hardware": hardware, "wall_time_s": wall_time_s,
            "smoke_run": bool(getattr(args, "quick", False)),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config_of(args)}


# ---- the entry point --------------------------------------------------------------------


def run_cli(main) -> None:
    """Call main(); turn expected failures into one line on stderr and exit code 2.
    Figures go to files: the Agg backend is chosen here, in command-line runs only."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        main()
    except (ValueError, FileNotFoundError, PermissionError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted (no output written)", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if type(exc).__name__ == "SimulationError":   # substrate's, without importing it
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise


# ---- a cache of finished results (resume a long run, or split it over processes) --------

def cache_file(folder, name: str, key) -> Path:
    """The file of result `name` computed under `key` (anything JSON can write: the
    settings that determine it) in `folder`."""
    import hashlib

    text = json.dumps(key, sort_keys=True, default=str)
    return Path(folder) / f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:16]}.pt"


def load_cache(path):
    """The payload saved at path (None: no path, or nothing there yet). Tensors, numbers,
    strings, lists and dicts only: nothing read back runs code."""
    if path is None or not Path(path).is_file():
        return None
    import torch

    print(f"taken from {path}", flush=True)
    return torch.load(path, weights_only=True)


def save_cache(path, payload) -> None:
    """Write (payload, the commit it was computed at) beside its final name, then rename it
    into place (a cache is keyed by settings, not by code: the commit says which code)."""
    if path is None:
        return
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(payload, tuple) and payload and isinstance(payload[0], dict):
        payload[0]["computed_at_commit"] = git_commit()
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
