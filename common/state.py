"""A medium's saved state: one documented .npz file that reloads without running code.

    save_state(path, U=..., V=..., F=..., K=..., step=1000, seeds=[0, 1], rule=...,
               protocol=..., extra={"phase2_scarred_V": ...})
    state = load_state(path)      # {"U", "V", "F", "K": tensors, "step", "seeds", ...}
    members(state, [1, 0, 1])     # some of its batch members (a sweep's points x seeds)
    file_digest(path)             # its sha256: work keyed on the file's content

The file is a plain numpy .npz (a zip of .npy arrays; np.load(path) opens it, no pickles):

| key          | what                                                                       |
|--------------|----------------------------------------------------------------------------|
| U, V         | (B, *grid) float32 or float64: the substrate and the activator             |
| F, K         | grid-shaped (shared by the batch) or (B, *grid), same dtype: feed and kill |
| extra.NAME   | any further array the writer stores (final fields of other arms, cues, ...)|
| metadata     | a 0-d unicode array holding one JSON object (below)                        |

metadata: {"format": "parametric-scarring-state", "format_version": 1,
"package_version", "git_commit" (or "not a git checkout"), "step" (steps the medium has
run), "seeds" (the run seeds of the batch), "rule" (StorageRule.as_dict() or null),
"protocol" (the protocol's constants as a dict), "substrate" (GrayScott's physics
constants, or null), "extra" (the names of the extra arrays)}.

load_state checks everything it returns (keys, shapes, dtypes, finiteness, F and K
within the physical range, the metadata's types) and raises ValueError with one line
naming the file and the problem; a missing file is FileNotFoundError.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "parametric-scarring-state"
FORMAT_VERSION = 1
EXTRA_PREFIX = "extra."
FIELD_RANGE = (0.0, 1.0)   # feed and kill rates (substrate.FIELD_RANGE)
DTYPES = ("float32", "float64")
MAX_METADATA_CHARS = 10_000_000   # a metadata string this long is not ours


def _numpy(x, name: str) -> np.ndarray:
    """A tensor or array as a numpy array (on the host), or a one-line ValueError."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"save_state: {name} is not a numeric array")
    return a


def _metadata(step, seeds, rule, protocol, substrate, extra_names) -> dict:
    from common.provenance import git_commit, package_version

    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"save_state: step={step!r} must be an integer >= 0")
    seeds = [int(s) for s in seeds]
    if rule is not None and hasattr(rule, "as_dict"):
        rule = rule.as_dict()
    if protocol is not None and not isinstance(protocol, dict):
        import dataclasses
        protocol = dataclasses.asdict(protocol)
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "package_version": package_version(), "git_commit": git_commit(),
            "step": int(step), "seeds": seeds, "rule": rule, "protocol": protocol or {},
            "substrate": substrate, "extra": list(extra_names)}


def save_state(path, *, U, V, F, K, step: int, seeds, rule=None, protocol=None,
               extra: dict | None = None, substrate: dict | None = None) -> Path:
    """Write one state file (the module docstring has its layout), atomically: the file
    appears whole or not at all. U, V: (B, *grid); F, K: grid-shaped or (B, *grid);
    rule: a StorageRule or its as_dict() (None: none); protocol: a Protocol or a dict;
    extra: {name: array} stored beside them; substrate: GrayScott's physics constants.
    Checked as load_state checks, so a file written here always loads."""
    arrays = {name: _numpy(x, name) for name, x in (("U", U), ("V", V), ("F", F), ("K", K))}
    extra = {str(k): _numpy(v, f"extra {k!r}") for k, v in (extra or {}).items()}
    meta = _metadata(step, seeds, rule, protocol, substrate, extra)
    _check_arrays(arrays, f"save_state({path})")
    _check_meta(meta, f"save_state({path})")
    arrays.update({EXTRA_PREFIX + k: v for k, v in extra.items()})
    arrays["metadata"] = np.array(json.dumps(meta, allow_nan=False))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_arrays(a: dict, where: str) -> None:
    """U, V, F, K: shapes that fit together, one float dtype, finite, F and K in range."""
    U, V, F, K = a["U"], a["V"], a["F"], a["K"]
    if U.ndim not in (3, 4) or U.shape != V.shape:
        raise ValueError(f"{where}: U {U.shape} and V {V.shape} must have one shape, "
                         f"(B, H, W) or (B, D, H, W)")
    grid = U.shape[1:]
    for name, X in (("F", F), ("K", K)):
        if X.shape not in (grid, U.shape):
            raise ValueError(f"{where}: {name} has shape {X.shape}; expected {grid} (shared) "
                             f"or {U.shape} (per member)")
    dtypes = {str(X.dtype) for X in (U, V, F, K)}
    if len(dtypes) != 1 or not dtypes <= set(DTYPES):
        raise ValueError(f"{where}: U, V, F, K have dtypes {sorted(dtypes)}; expected one of "
                         f"{list(DTYPES)} for all four")
    for name, X in (("U", U), ("V", V), ("F", F), ("K", K)):
        if not np.isfinite(X).all():
            raise ValueError(f"{where}: {name} has NaN or Inf values")
    for name, X in (("F", F), ("K", K)):
        lo, hi = float(X.min()), float(X.max())
        if lo < FIELD_RANGE[0] or hi > FIELD_RANGE[1]:
            raise ValueError(f"{where}: {name} spans [{lo:.4g}, {hi:.4g}]; feed and kill "
                             f"rates must lie in {list(FIELD_RANGE)}")


def _check_meta(meta, where: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{where}: not a {FORMAT} file (its metadata names no such format)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: format_version {version!r} must be an integer >= 1")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where}: format_version {version} is newer than this code reads "
                         f"({FORMAT_VERSION}); update the code")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{where}: step {step!r} must be an integer >= 0")
    seeds = meta.get("seeds")
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              and s >= 0 for s in seeds):
        raise ValueError(f"{where}: seeds {seeds!r} must be a list of integers >= 0")
    for key in ("rule", "substrate"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ValueError(f"{where}: {key} must be an object or null")
    if not isinstance(meta.get("protocol"), dict):
        raise ValueError(f"{where}: protocol must be an object")
    if not isinstance(meta.get("extra"), list) or not all(isinstance(e, str)
                                                          for e in meta["extra"]):
        raise ValueError(f"{where}: extra must be a list of array names")


def load_state(path, sha256: str | None = None) -> dict:
    """The state saved by save_state as {"U", "V", "F", "K": float tensors on the CPU,
    "extra": {name: tensor}, "step", "seeds", "rule", "protocol", "substrate",
    "format_version", "package_version", "git_commit"}, every part checked (ValueError,
    one line, naming the file and the problem). sha256: the file_digest the file must
    have (work planned on its content, run later: a changed file is refused)."""
    import torch

    path = Path(path)
    where = f"state file {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    if sha256 is not None and file_digest(path) != sha256:
        raise ValueError(f"{where}: its content changed since the work was planned (sha256 "
                         f"{file_digest(path)[:12]}..., expected {sha256[:12]}...)")
    if not zipfile.is_zipfile(path):   # np.load would try to unpickle anything else
        raise ValueError(f"{where}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            missing = sorted({"U", "V", "F", "K", "metadata"} - names)
            if missing:
                raise ValueError(f"{where}: keys {missing} missing (has {sorted(names)})")
            raw = z["metadata"]
            if raw.dtype.kind != "U" or raw.ndim != 0 or raw.dtype.itemsize > 4 * MAX_METADATA_CHARS:
                raise ValueError(f"{where}: metadata must be one JSON string")
            arrays = {k: z[k] for k in names - {"metadata"}}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{where}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        # numpy refuses object arrays without allow_pickle: such a file is not ours
        if "pickle" in str(exc):
            raise ValueError(f"{where}: holds pickled (object) arrays, which are never "
                             f"loaded") from None
        raise ValueError(f"{where}: unreadable array ({str(exc).splitlines()[0]})") from None
    try:
        meta = json.loads(str(raw[()]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: metadata is not valid JSON ({exc.msg})") from None
    _check_meta(meta, where)
    _check_arrays(arrays, where)
    extra_names = set(meta["extra"])
    stored = {k[len(EXTRA_PREFIX):] for k in arrays if k.startswith(EXTRA_PREFIX)}
    if stored != extra_names:
        raise ValueError(f"{where}: extra arrays {sorted(stored)} do not match the metadata's "
                         f"list {sorted(extra_names)}")
    unknown = sorted(k for k in arrays if k not in "UVFK" and not k.startswith(EXTRA_PREFIX))
    if unknown:
        raise ValueError(f"{where}: unexpected arrays {unknown}")
    return {**{k: torch.from_numpy(arrays[k]) for k in "UVFK"},
            "extra": {k: torch.from_numpy(arrays[EXTRA_PREFIX + k]) for k in meta["extra"]},
            **{k: meta[k] for k in ("step", "seeds", "rule", "protocol", "substrate",
                                    "format_version", "package_version", "git_commit")}}


def check_fits(state: dict, *, grid, batch: int | None = None, source="--init-from",
               grid_flag="--grid") -> None:
    """Refuse, in one line, a loaded state whose grid (an int for H = W, or a tuple; None:
    any) or batch differs from the run's (grid_flag: the flag that set the grid)."""
    shape = tuple(state["U"].shape)
    want = shape[1:] if grid is None else (grid, grid) if isinstance(grid, int) else tuple(grid)
    if shape[1:] != want:
        raise ValueError(f"{source}: the saved state's grid is {'x'.join(map(str, shape[1:]))} "
                         f"but this run's is {'x'.join(map(str, want))} ({grid_flag})")
    if batch is not None and shape[0] != batch:
        raise ValueError(f"{source}: the saved state holds {shape[0]} batch members but this "
                         f"run has {batch} (--seeds)")


def file_digest(path) -> str:
    """The sha256 of a state file's bytes: keys work done from it (a sweep's chunks, a
    study's cache) on its content rather than its path."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def members(state: dict, index) -> dict:
    """The state of some of its batch members (index: a slice or a list of member
    indices, repeats allowed): U, V and per-member F, K indexed, shared F, K kept."""
    per_member = state["U"].dim()
    return {**state, **{k: state[k][index] if state[k].dim() == per_member else state[k]
                        for k in "UVFK"}}
