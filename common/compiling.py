"""torch.compile, once per kernel, and the padded buffers of the substrate's fast path.

Nothing here is physics: it decides whether this machine can compile (a C++ compiler for
CPU kernels, Triton for CUDA ones), compiles a function once per process and key, for
static shapes (one kernel per batch size and grid), and lays out the state the compiled
kernel reads: circularly padded buffers (a one-cell halo), so that every neighbour is a
plain slice (no index arithmetic for the wrap, so the kernel vectorises). Two buffers per
field alternate ("ping-pong"): each step reads one and writes the other in place, so no
step allocates memory (returning fresh multi-megabyte tensors instead was measured
1.8-2.2x slower on CPU when this path was written).
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
    The environment variable SUBSTRATE_NO_COMPILE=1 (or true, yes, on) switches compiling
    off; unset, empty, 0, false, no or off leave it on."""
    device = torch.device(device)
    return _compiler_available(device.type, no_compile_requested(), os.environ.get("CXX"))


def no_compile_requested() -> bool:
    """SUBSTRATE_NO_COMPILE read as a switch: "0" means compile, as it reads."""
    value = os.environ.get("SUBSTRATE_NO_COMPILE", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"SUBSTRATE_NO_COMPILE={value!r}: use 1 (no compiling) or 0 (compile)")


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
    against 1-3 s for one with a dynamic batch dimension (measured here), and a
    study uses only a handful of batch sizes. Past the recompile limit (64 shapes) dynamo
    runs the function uncompiled: the same numbers, more slowly.
    """
    fn_c = _COMPILED.get(key, False)
    if fn_c is False:
        _raise_recompile_limit()
        fn_c = _COMPILED[key] = torch.compile(fn, dynamic=False)
    return fn_c


# ---- padded buffers ------------------------------------------------------------------------

def pad(X: torch.Tensor, nd: int) -> torch.Tensor:
    """X (B, *grid) circularly padded by one cell on its last nd dims (a new tensor)."""
    P = X.new_empty((*X.shape[:-nd], *(n + 2 for n in X.shape[-nd:])))
    P[(Ellipsis, *((slice(1, -1),) * nd))].copy_(X)
    fill_halo(halo_copies(P, nd))
    return P


def halo_copies(P: torch.Tensor, nd: int) -> list:
    """The (destination, source) views whose copies make the one-cell halo of P (padded
    on its last nd dims) periodic; axis by axis, so edges and corners come out right.
    (Writing the halo inside the compiled kernel instead made inductor rewrite the whole
    buffer with masked loads: 2-5x slower per step at 256^2, batch 32.)"""
    pairs = []
    for axis in range(P.dim() - nd, P.dim()):
        n = P.shape[axis] - 2
        pairs += [(P.select(axis, 0), P.select(axis, n)),
                  (P.select(axis, n + 1), P.select(axis, 1))]
    return pairs


def fill_halo(pairs) -> None:
    """Copy every (destination, source) pair of halo_copies, in order."""
    for dst, src in pairs:
        dst.copy_(src)
