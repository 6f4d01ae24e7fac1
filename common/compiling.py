"""torch.compile, once per kernel, for the substrate's fast path.

Nothing here is physics: it decides whether this machine can compile (a C++ compiler for
CPU kernels, Triton for CUDA ones), compiles a function once per process and key, and
compiles for static shapes (one kernel per batch size and grid).
substrate.GrayScott is the only caller; it falls back to its eager path when compiling
is unavailable or fails.

Compiled kernels are cached on disk by inductor (in the system temp folder), so a second
process pays only the tracing, not the C++ build: see docs/performance.md for both costs.
"""
from __future__ import annotations

import functools
import os
import shutil

import torch

_COMPILED: dict = {}      # key -> compiled callable, or None once compiling has failed
_RAN_SHAPES: set = set()  # (key, shapes) that already ran compiled in this process


def compiler_available(device) -> bool:
    """True when torch.compile can build kernels for this device here.
    The environment variable SUBSTRATE_NO_COMPILE switches compiling off."""
    device = torch.device(device)
    return _compiler_available(device.type, bool(os.environ.get("SUBSTRATE_NO_COMPILE")),
                               os.environ.get("CXX"))


@functools.lru_cache(maxsize=None)
def _compiler_available(device_type: str, switched_off: bool, cxx) -> bool:
    # cached: the search of PATH costs ~0.3 ms, more than a small compiled step
    if switched_off:
        return False
    if device_type == "cuda":
        try:
            from torch.utils._triton import has_triton
            return bool(has_triton())
        except Exception:  # pragma: no cover - depends on the install
            return False
    if device_type != "cpu":
        return False
    return bool((cxx and shutil.which(cxx)) or shutil.which("g++") or shutil.which("clang++")
                or shutil.which("c++"))


def failed(key) -> bool:
    """True once compiling the kernel `key` has failed in this process."""
    return key in _COMPILED and _COMPILED[key] is None


def mark_failed(key) -> None:
    _COMPILED[key] = None


def ran(key, shapes) -> bool:
    """Whether kernel `key` already ran for these shapes (so using it again is free)."""
    return (key, shapes) in _RAN_SHAPES


def mark_ran(key, shapes) -> None:
    _RAN_SHAPES.add((key, shapes))


def _raise_recompile_limit(limit=64):
    import torch._dynamo.config as dcfg
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name) and getattr(dcfg, name) < limit:
            setattr(dcfg, name, limit)


def compiled(fn, key):
    """torch.compile(fn) once per key, cached for the process; None if it failed before.

    Shapes are static: each batch size (and grid) gets its own kernel, built the first
    time it is seen. Static kernels trace in ~0.2-0.5 s with inductor's disk cache warm,
    against 1-3 s for one with a dynamic batch dimension (docs/performance.md), and a
    study uses only a handful of batch sizes. Past the recompile limit (64 shapes) dynamo
    runs the function uncompiled: the same numbers, more slowly.
    """
    fn_c = _COMPILED.get(key, False)
    if fn_c is False:
        _raise_recompile_limit()
        fn_c = _COMPILED[key] = torch.compile(fn, dynamic=False)
    return fn_c
