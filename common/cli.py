"""The command line every script shares, CleanRL-style: a dataclass of arguments feeds it.

Each script declares its knobs as a dataclass whose fields carry their default, help and
allowed range (`arg(...)`); `parse` turns that into argparse flags (`train_steps` ->
`--train-steps`), applies `--quick` to the defaults the user did not set, and validates
every value once, up front, with one clear line naming the flag and its allowed range.
`RunArgs` holds the flags every study takes (--seeds --seed --device --out --quick
--threads --quiet --format --dpi --init-from).

Also here, the edges of a run: `staged_output` (a run's files appear together or not at
all; one run at a time per folder; files a user added are kept), `envelope` (the keys every results JSON starts with), `write_json_atomic`,
`progress` (bars on a terminal, a line every few seconds in a log) and `run_cli` (expected
errors as one line on stderr, exit code 2).

Nothing here imports torch at module level: `--help` must answer before the heavy imports.
Scripts take their heavy modules through `lazy(...)` for the same reason.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import typing
from pathlib import Path

from common import readers
from common.provenance import NOT_A_CHECKOUT, git_commit, package_version  # noqa: F401  (re-exported)
from protocol import arg  # noqa: F401  (re-exported: scripts declare flags with it)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_ROOT = Path("scarring_results")   # every study writes under scarring_results/<study>/
SCHEMA_VERSION = 2
MARKER = ".scarring_run"   # a study's output folder: ours to replace (it lists the run's files)
CHUNKS_MARKER = ".scarring_chunks"   # a sweep's chunk folder: kept, added to, never replaced
MAX_SEED = 2 ** 63 // 100_000 - 1   # noise generator seeds are seed * 100000 + stream
FIGURE_FORMATS = ("png", "pdf", "svg")
# The flags every parser has besides its dataclass's: they steer parsing, not the run.
CONFIG_FLAGS = ("config", "save_config", "version")

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
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{where}: empty; give a value or leave the flag out")
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


@functools.lru_cache(maxsize=None)
def _flag_kinds(cls) -> tuple:
    """(field, element type, is_sequence) of each flag field (cached: a sweep validates
    every grid point, and resolving the type hints is most of the cost)."""
    hints = typing.get_type_hints(cls)
    return tuple((f, *_base_type(hints[f.name])) for f in dataclasses.fields(cls)
                 if "help" in f.metadata)


def validate(obj, fields=None) -> None:
    """Check every field of a dataclass built from `arg` fields (or only those named in
    `fields`), then its own `check()`."""
    for f, kind, sequence in _flag_kinds(type(obj)):
        if fields is not None and f.name not in fields:
            continue
        value = getattr(obj, f.name)
        for v in (value if sequence and value is not None else [value]):
            check_value(f.name, v, f.metadata, kind)
    for klass in reversed(type(obj).__mro__):   # every class's own cross-field checks
        if "check" in vars(klass):
            vars(klass)["check"](obj)


# ---- the flags every study takes --------------------------------------------------------


@dataclasses.dataclass
class RunArgs:
    """--seeds --seed --device --out --quick --threads --quiet --format --dpi --init-from."""
    study: typing.ClassVar[str] = "study"   # names the default output folder and the JSON
    members_per_seed: typing.ClassVar[int] = 10   # media per seed in the largest batch (the
    # memory check at start: the main study's phase 2 runs 4 per seed, phase 3 six)

    seeds: int = arg(8, "number of independent seeds, run as one batch", lo=1, hi=100_000)
    seed: int = arg(0, "first seed; the run uses seeds SEED .. SEED+SEEDS-1", lo=0,
                    hi=MAX_SEED)
    device: typing.Optional[str] = arg(None, "torch device, e.g. cpu or cuda (default: "
                                       "cuda if present, else cpu)")
    out: typing.Optional[str] = arg(None, "output folder (default: scarring_results/<study>); "
                                    "replaced whole by each run (files you add are kept)")
    quick: bool = arg(False, "a smoke run (small grid, few steps): checks that everything "
                             "runs; its numbers are not comparable with the published ones")
    threads: typing.Optional[int] = arg(None, "torch CPU threads (default: torch's choice; "
                                        "1 is often faster on a loaded machine)", lo=1)
    quiet: bool = arg(False, "no progress bars")
    format: str = arg("png", "file format of the figures", choices=FIGURE_FORMATS)
    dpi: typing.Optional[int] = arg(None, "figure resolution in dots per inch (default: each "
                                    "figure's own, 60-110); fields are drawn cell for cell "
                                    "at any value", lo=30, hi=1200)
    init_from: typing.Optional[str] = arg(None, "start from a saved Gray-Scott state (a run's "
                                          "fields.npz, common/state.py); its grid and batch "
                                          "must be this run's --grid and --seeds, and the "
                                          "run's flags and --seed win over the file's",
                                          metavar="FILE")
    # What a saved state (--init-from) starts in this study, said in --help and at the
    # start; None: the study refuses one, for the reason below (its state is not one
    # Gray-Scott medium per seed on --grid).
    saved_state_starts: typing.ClassVar[typing.Optional[str]] = None
    saved_state_refusal: typing.ClassVar[str] = "its state is not a Gray-Scott medium"

    def check(self) -> None:
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"--seed {self.seed} with --seeds {self.seeds}: the last seed "
                             f"must be <= {MAX_SEED}")
        if self.init_from is not None and type(self).saved_state_starts is None:
            raise ValueError(f"--init-from {self.init_from}: {self.study} cannot start from a "
                             f"saved Gray-Scott state: {type(self).saved_state_refusal}")
        check_out_dir(self.out_dir())

    def saved_state(self) -> typing.Optional[dict]:
        """The --init-from state (common.state.load_state: U, V, F, K and the file's
        metadata, plus "source": where it came from, for the results), checked against
        this run's grid and its batch of one member per seed; None without --init-from.
        Read once per run (a one-line error for a file that does not fit)."""
        if self.init_from is None:
            return None
        cached = self.__dict__.get("_saved_state")
        if cached is not None and cached[0] == self.init_from:
            return cached[1]
        from common.state import check_fits, load_state

        state = load_state(self.init_from)
        for flag, grid in self.saved_state_grids().items():
            check_fits(state, grid=grid, grid_flag=flag)
        check_fits(state, grid=None, batch=self.seeds)
        state["source"] = {"path": str(self.init_from), "step": state["step"],
                           "seeds": state["seeds"],
                           "package_version": state["package_version"],
                           "git_commit": state["git_commit"]}
        self.__dict__["_saved_state"] = (self.init_from, state)
        return state

    def saved_state_grids(self) -> dict:
        """{flag: grid} of the media a saved state starts (each must be its grid): --grid,
        where the study has one; a study whose stores run on other grids says so here."""
        return {"--grid": getattr(self, "grid", None)}

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
        if f.name == "init_from":   # the one flag whose meaning each study words itself
            starts = getattr(cls, "saved_state_starts", None)
            kw["help"] = f.metadata["help"] + (
                f"; in this study: {starts}" if starts else
                f"; this study refuses one: {getattr(cls, 'saved_state_refusal', '')}")
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
    parser.add_argument("--config", metavar="FILE", help="read flags from a YAML or JSON file "
                        "(keys are flag names; a results.json's config block reruns its run); "
                        "flags on the command line win")
    parser.add_argument("--save-config", metavar="FILE", dest="save_config",
                        help="write the effective flags to FILE (.yaml, .yml or .json) and exit")
    parser.add_argument("--version", action=_version_action(), nargs=0,
                        help="print the version and git commit and exit")
    return parser


def version_text() -> str:
    return f"parametric-scarring {package_version()} (git commit: {git_commit()})"


def _version_action():
    import argparse

    class Version(argparse.Action):
        """Prints version_text() (computed only when asked: it runs git)."""

        def __call__(self, parser, namespace, values, option_string=None):
            print(version_text())
            parser.exit()

    return Version


def parse(cls, argv=None, *, description: str | None = None, quick: dict | None = None):
    """An instance of the dataclass `cls` from the command line, validated.

    quick: {field: value} that --quick uses instead of the defaults; a flag the user gives
    explicitly always wins. --help prints every flag with its help, default and quick value.
    """
    parser = build_parser(cls, description, quick)
    given = vars(parser.parse_args(argv))     # only the flags on the command line
    config_file, save_to = given.pop("config", None), given.pop("save_config", None)
    from_file = read_config(config_file, cls) if config_file is not None else {}
    # precedence: defaults < --quick's values < the config file < the command line
    values = dict(quick or {}) if given.get("quick", from_file.get("quick")) else {}
    values.update(from_file)
    values.update(given)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    args = cls(**values)
    validate(args)
    if save_to is not None:
        write_config(save_to, args)
        print(f"wrote the effective flags to {save_to}; run them with --config {save_to}")
        sys.exit(0)
    return args


# ---- config files -------------------------------------------------------------------------


def flag_fields(cls) -> dict:
    """{field name: (element type, is_sequence)} of the dataclass fields that are flags."""
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)
            if "help" in f.metadata}


def _json_load_unique(text: str, where: str):
    def pairs(items):
        keys = [k for k, _ in items]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"{where}: key {twice[0]!r} appears twice")
        return dict(items)

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON at line {exc.lineno} ({exc.msg})") from None


def read_config(path, cls) -> dict:
    """The flags a config file sets, as {field name: value}, checked against cls.

    A YAML (.yaml, .yml, anything else) or JSON (.json) mapping of flag names (train_steps,
    train-steps or --train-steps) to values; or a results file of this study, whose
    `config` block is read (less `out`, so a rerun never replaces the run it checks, and
    less the keys that are recorded settings rather than flags). Values are checked when
    the arguments are validated; an unknown key or a wrong type is one line here."""
    path = Path(path)
    where = f"--config {path}"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read it ({exc})") from None
    data = (_json_load_unique(text, where) if path.suffix.lower() == ".json"
            else readers.load_yaml_unique(text, where))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must hold a mapping of flag names to values, not "
                         f"{type(data).__name__}")
    fields = flag_fields(cls)
    recorded = "schema_version" in data and isinstance(data.get("config"), dict)
    if recorded:   # a results file: its config block, if it is this study's
        if data.get("study") != cls.study:
            raise ValueError(f"{where}: is a results file of study {data.get('study')!r}, "
                             f"not {cls.study!r}")
        data = {k: v for k, v in data["config"].items() if k in fields and k != "out"}
    values = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name in CONFIG_FLAGS or name not in fields:
            raise ValueError(f"{where}: unknown key {key!r} (not a flag of this script; "
                             f"see --help)")
        if name in values:
            raise ValueError(f"{where}: key {key!r} given twice (as {name})")
        values[name] = _config_value(name, value, *fields[name], where)
    return values


_TYPE_TEXT = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _config_value(name, value, kind, sequence, where):
    """A config file's value in the type of its flag (YAML reads 1e-3 as a string, and an
    integer where a float is meant is that float)."""
    def one(v):
        if v is None:
            return v
        if kind is float and isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            raise ValueError(f"{where}: {name}: {v!r} must be {_TYPE_TEXT.get(kind, kind)}")
        return v

    if sequence and value is not None:
        return tuple(one(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return one(value)


def write_config(path, args) -> Path:
    """The flags of args as a config file (YAML for .yaml/.yml, JSON for .json)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"--save-config {path}: name a .yaml, .yml or .json file")
    values = {name: list(v) if isinstance(v, tuple) else v
              for name in flag_fields(type(args)) for v in [getattr(args, name)]}
    if suffix == ".json":
        text = json.dumps(values, indent=2) + "\n"
    else:
        import yaml
        text = yaml.safe_dump(values, sort_keys=False)
    write_text_atomic(path, text)
    return path


def write_text_atomic(path, text: str) -> Path:
    """Write text beside `path`, then rename it into place (mode 0644 under umask 022)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                               prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def check_memory(members: int, cells: int, dtype, device) -> None:
    """Refuse, before any work, a run whose largest batch cannot fit in memory (the one
    check, common.limits.check, with a study's words)."""
    from common import limits

    limits.check_media(members, cells, _itemsize(dtype), device)


def _itemsize(dtype) -> int:
    return getattr(dtype, "itemsize", None) or {"float64": 8, "double": 8}.get(
        str(dtype).replace("torch.", ""), 4)


def apply_threads(threads) -> None:
    if threads is not None:
        import torch
        torch.set_num_threads(int(threads))


def start(args, announce: bool = True) -> tuple:
    """The common start of a run: (seeds, device); sets threads, quiet progress and the
    figures' format and dpi, and says what runs where (a --quick run says it is a smoke
    run); announce=False: the settings only, (None, None)."""
    global QUIET
    from common import figure_options

    QUIET = bool(getattr(args, "quiet", False))
    figure_options.FORMAT = getattr(args, "format", "png")
    figure_options.DPI = getattr(args, "dpi", None)
    if not announce:
        return None, None
    seeds = args.seed_list()
    apply_threads(args.threads)
    device = resolve_device(args.device)
    grid = getattr(args, "grid", None)
    if isinstance(grid, int) and not isinstance(grid, bool):
        check_memory(len(seeds) * type(args).members_per_seed, grid * grid,
                     getattr(args, "dtype", "float32"), device)
    saved = args.saved_state() if hasattr(args, "saved_state") else None   # checked now
    lock_output(args.out_dir())
    print(f"{type(args).study}: {len(seeds)} seed{'s' * (len(seeds) != 1)} on {device}"
          f"{f', grid {grid}x{grid}' if grid else ''}, output -> {args.out_dir()}/", flush=True)
    if saved is not None:
        print(f"from the saved state {args.init_from} (step {saved['step']}, seeds "
              f"{saved['seeds']}): {type(args).saved_state_starts}", flush=True)
        if saved["seeds"] != seeds:
            print(f"note: the saved state was run with seeds {saved['seeds']}; this run's "
                  f"noise draws use --seed/--seeds ({seeds})", flush=True)
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


def folder_kind(folder: Path) -> str | None:
    """"run" (a study's output), "chunks" (a sweep's chunk folder), "empty", or None
    (someone else's folder)."""
    folder = Path(folder)
    if (folder / CHUNKS_MARKER).is_file():
        return "chunks"
    if (folder / MARKER).is_file():
        try:   # chunk folders of earlier versions carried the run marker, saying so
            legacy = (folder / MARKER).read_text().startswith("sweep chunks")
        except (OSError, UnicodeDecodeError):
            legacy = False
        return "chunks" if legacy else "run"
    return "empty" if not any(folder.iterdir()) else None


KIND_WORDS = {"run": f"a study's output folder ({MARKER})",
              "chunks": f"a sweep's chunk folder ({CHUNKS_MARKER})"}


def check_out_dir(out, kind: str = "run") -> Path:
    """Refuse, before any long work, a folder a run must not write: one that exists and is
    not a folder, someone else's non-empty folder, or a folder of the other kind (a study
    never replaces a sweep's chunks). kind: "run" (replaced whole by staged_output) or
    "chunks" (a sweep's work folder, added to)."""
    out = Path(out)
    parent = out.resolve().parent
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    found = folder_kind(out) if out.is_dir() else "empty"
    if found is None:
        raise ValueError(f"--out {out}: folder exists, is not empty and was not written by a "
                         f"run of this project ({MARKER} missing); choose a new or empty folder")
    if found not in ("empty", kind):
        raise ValueError(f"{out} is {KIND_WORDS[found]}, not {KIND_WORDS[kind]}: choose "
                         f"another folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write_test_"):
            pass
    except OSError as exc:
        raise PermissionError(f"output folder {out} is not writable "
                              f"({exc.strerror or exc})") from None
    return out


_LOCKS: dict = {}   # resolved output folder -> open lock file held by this process


def _lock_path(out: Path) -> Path:
    out = Path(out).resolve()
    return out.parent / f".{out.name}.lock"


def lock_output(out) -> None:
    """Hold the output folder's lock until this run has written it (staged_output lets it
    go): a second run on the same folder is refused at its start instead of silently
    replacing the first one's output. The kernel releases the lock when a process dies,
    so a killed run never blocks the next."""
    import fcntl

    key = Path(out).resolve()
    if key in _LOCKS:
        return
    path = _lock_path(key)
    key.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise ValueError(f"another run (pid {pid}) is writing {out}; wait for it or "
                             f"choose another --out") from None
        try:   # the holder before us may have removed the file as we opened it: retry
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _LOCKS[key] = f


def unlock_output(out) -> None:
    key = Path(out).resolve()
    f = _LOCKS.pop(key, None)
    if f is not None:
        _lock_path(key).unlink(missing_ok=True)   # while held, so no one else's lock
        f.close()   # closing the file releases the lock


def _remove_stale_stages(out: Path) -> None:
    """Staging folders of runs that died (SIGKILL, power cut) before they cleaned up. Only
    called with the folder's lock held, so none of them belongs to a live run."""
    import glob

    for stale in out.resolve().parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind = stale.name[len(out.name) + 2:].split("-", 1)[0]
        if kind in ("partial", "old") and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _run_files(out: Path) -> set[str] | None:
    """Names of the entries the run that wrote `out` made (None: not recorded, i.e. a
    folder of an earlier version: all of it is the run's)."""
    try:
        record = json.loads((out / MARKER).read_text())
        return set(record["files"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _keep_user_files(old: Path, stage: Path) -> list[str]:
    """Move what a user added to the previous output folder into the new one (a name the
    new run also wrote keeps the user's file as NAME.user). Returns the names kept."""
    theirs = _run_files(old)
    if theirs is None:
        return []
    kept = []
    for entry in sorted(old.iterdir()):
        if entry.name in theirs or entry.name == MARKER:
            continue
        target = stage / entry.name
        if target.exists() or target.is_symlink():
            target = stage / f"{entry.name}.user"
            print(f"warning: this run also wrote {entry.name}; your file is kept as "
                  f"{target.name}", file=sys.stderr)
        os.replace(entry, target)
        kept.append(target.name)
    return kept


COMMITTED: list = []   # output folders this process has finished writing


@contextlib.contextmanager
def staged_output(out, study: str = ""):
    """Yield a fresh folder beside `out`; on success swap it in as `out` whole.

    A run's files therefore appear together or not at all: an interrupted or failed run
    leaves the previous run's folder untouched, and a folder never mixes two runs. Only a
    folder that a previous run wrote (it holds the marker file) or an empty one is replaced;
    files a user added to it are carried into the new folder. The folder's lock is held
    throughout (see lock_output), and staging folders left by killed runs are removed.
    """
    out = check_out_dir(out)
    lock_output(out)
    try:
        _remove_stale_stages(out)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-",
                                      dir=out.resolve().parent))
        os.chmod(stage, 0o777 & ~_umask())   # mkdtemp makes 0700; give the usual mode
        try:
            yield stage
            from common.report import write_index   # the run's report page, index.html
            write_index(stage)
            written = sorted(p.name for p in stage.iterdir())
            write_json_atomic(stage / MARKER, {"study": study, "files": written})
            if out.is_dir():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=stage.parent))
                _keep_user_files(out, stage)
                os.replace(out, old / out.name)
                os.replace(stage, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(stage, out)
            COMMITTED.append(out)
        except BaseException as exc:
            if isinstance(exc, OSError) and not exc.filename:   # e.g. a full disk mid-write
                exc.filename = str(out)
            shutil.rmtree(stage, ignore_errors=True)
            raise
    finally:
        unlock_output(out)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


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
    crash never leaves a half-written file (common.sweep.write_atomic)."""
    from common.sweep import write_atomic

    text = json.dumps(_json_safe(data), indent=2, allow_nan=False)
    write_atomic(path, text.encode())
    return Path(path)


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
            "seeds": list(seeds), "package_version": package_version(),
            "git_commit": git_commit(), "versions": versions,
            "device": device, "hardware": hardware, "wall_time_s": wall_time_s,
            "smoke_run": bool(getattr(args, "quick", False)),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config_of(args),
            **({"init_from": args.saved_state()["source"]}
               if getattr(args, "init_from", None) is not None else {})}


# ---- the entry point --------------------------------------------------------------------


def run_cli(main) -> None:
    """Call main(); turn expected failures into one line on stderr and exit code 2: bad
    values, missing files, file-system errors (naming the file) and memory exhaustion
    (naming the size). Figures go to files: the Agg backend is chosen here, in
    command-line runs only."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        main()
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the output is complete: exit 0
    except KeyboardInterrupt:
        if COMMITTED:
            print(f"interrupted after the output was complete in {COMMITTED[-1]}",
                  file=sys.stderr)
            sys.exit(0)
        print("interrupted (no output written)", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:   # noqa: BLE001  (SystemExit passes through below)
        line = error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


def error_line(exc: BaseException) -> str | None:
    """The one line a command-line user sees for an expected failure (None: a bug, whose
    traceback they should see)."""
    if isinstance(exc, (ValueError, ImportError)) or type(exc).__name__ == "SimulationError":
        return " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "alloc" in str(exc)
                                        and "memory" in str(exc).lower()):
        detail = " ".join(str(exc).split())[:200]
        return (f"out of memory{': ' + detail if detail else ''}: use a smaller --grid, "
                f"fewer --seeds or a smaller input")
    if isinstance(exc, OSError):
        if isinstance(exc, (FileNotFoundError, PermissionError)) and not exc.filename:
            return " ".join(str(exc).split())
        where = exc.filename or "a file"
        where = f"{where} -> {exc.filename2}" if exc.filename2 else where
        why = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
        return f"{where}: {why}"
    return None
