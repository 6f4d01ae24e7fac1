"""Caches of finished work (a long run resumed, or split over processes): plain data only.

An entry is one torch file read back with torch.load(weights_only=True): tensors, numbers,
strings, None and dicts/lists/tuples of them, nothing that runs code when loaded. Its name
holds a hash of the settings that produced it; inside, beside the value, it records those
settings, a hash of the project's code and the git commit. An entry is used only when all
of that matches and the caller's `check` accepts the value; anything else (unreadable,
truncated, empty, another format, other settings, other code, a value of the wrong shape)
is a miss that the caller recomputes, after one warning line on stderr. So a cache never
outlives the code that computed it, and a damaged or planted file costs a recomputation,
never a crash or code execution.

    entry = cache.Entry(args.cache, "match_map", settings)
    value = entry.load(check=lambda v: v["settled"])    # None: compute it
    ...
    entry.save(value)
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

FORMAT = "scarring-cache/1"
ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("", "common", "models", "experiments", "inputs")   # the code a value can
# depend on (tests, benchmarks and docs cannot change a study's numbers)


def code_hash() -> str:
    """A hash of every Python source of the project: a cache is keyed on the code that
    computed it (any change is a miss; coarse, never stale)."""
    h = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).glob("*.py")):
            h.update(f"{folder}/{path.name}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:20]


def settings_key(settings) -> str:
    return json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def check_folder(folder, flag: str = "--cache") -> Path:
    """The cache folder, refused in one line when the path is something else."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder}: exists and is not a folder")
    return folder


def plain(value, where: str = "value"):
    """value with numpy arrays and scalars as tensors and numbers; TypeError on anything
    that torch.load(weights_only=True) would not read back."""
    import torch

    if isinstance(value, dict):
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or type(value) in (str, bool, int, float):
        return value
    if type(value).__module__ == "numpy":   # before float: numpy.float64 is a float
        return torch.as_tensor(value) if getattr(value, "ndim", 0) else value.item()
    raise TypeError(f"cache: {where} is a {type(value).__name__}, not plain data")


class Entry:
    """One cached value: `name` under `settings` (a JSON-able mapping) in `folder`."""

    def __init__(self, folder, name: str, settings):
        self.folder = check_folder(folder)
        self.name = name
        self.settings = json.loads(settings_key(settings))
        digest = hashlib.sha256(settings_key([name, self.settings]).encode()).hexdigest()
        self.path = self.folder / f"{name}-{digest[:16]}.pt"

    def load(self, check: Callable | None = None):
        """The value, or None (a miss, with one warning line unless there is no file).
        check(value) raises (any exception) when the value has the wrong shape."""
        import pickle
        import warnings

        import torch

        if not self.path.exists():
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError,
                KeyError, TypeError, AttributeError, IndexError, UnicodeDecodeError) as exc:
            return self._miss(f"unreadable ({type(exc).__name__})")
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            return self._miss("not a cache entry of this project")
        if blob.get("name") != self.name or blob.get("settings") != self.settings:
            return self._miss("made under other settings")
        if blob.get("code") != code_hash():
            return self._miss(f"computed by other code (commit {blob.get('commit')})")
        try:
            if check is not None:
                check(blob["value"])
        except Exception as exc:  # noqa: BLE001  (any way a value can be malformed)
            return self._miss(f"wrongly shaped ({type(exc).__name__}: {exc})")
        print(f"{self.name}: taken from {self.path} (computed at commit "
              f"{blob.get('commit')})", flush=True)
        return blob["value"]

    def _miss(self, why: str):
        warn(f"cache {self.path}: {why}; recomputing {self.name}")
        return None

    def save(self, value) -> Path:
        """Write the entry atomically (a reader sees the old file or the whole new one)."""
        import io

        import torch

        from common.provenance import git_commit
        from common.sweep import write_atomic

        blob = {"format": FORMAT, "name": self.name, "settings": self.settings,
                "code": code_hash(), "commit": git_commit(), "value": plain(value)}
        buf = io.BytesIO()
        torch.save(blob, buf)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, buf.getvalue())
        return self.path
