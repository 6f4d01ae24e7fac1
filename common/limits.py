"""The one size and memory check: every script, the sweep, the benchmark and the medium
itself ask `check` before they allocate (grids, batches, grid points, decompressed files),
so a run that cannot fit is refused in one line before any work, never by a MemoryError
or the kernel's OOM killer half an hour in.

No torch import at module level (scripts check sizes before their heavy imports); a CUDA
device is asked through torch only when one is named.
"""
from __future__ import annotations

import math
import os

GIB = 2 ** 30
TENSORS_PER_MEMBER = 14   # U, V, F, K, their padded copies and a step's temporaries


class SizeError(ValueError):
    """A run, grid or file too large for this machine: one line, naming the size."""


def available(device="cpu") -> int | None:
    """Bytes free for new data on the device (None if unknown)."""
    if str(device).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():   # said elsewhere (cli.resolve_device)
            return None
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
            else:
                free = None
    except (OSError, ValueError, IndexError):
        free = None
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return min(free, _address_space_left())


def _address_space_left() -> int:
    """The process's address-space limit (ulimit -v) less what it already maps: a limit
    below the free memory is what a large allocation runs into first."""
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return math.inf
    if limit == resource.RLIM_INFINITY:
        return math.inf
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(limit - used, 0)


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def check(need: int, what: str, device="cpu", advice: str = "use a smaller grid or batch") \
        -> None:
    """Refuse (SizeError, one line) when `need` bytes for `what` do not fit on `device`."""
    free = available(device)
    if free is not None and need > free:
        raise SizeError(f"{what} needs about {gib(need)} on {device} but only {gib(free)} "
                        f"is available: {advice}")


def state_bytes(members: int, cells: int, itemsize: int = 4,
                tensors: int = TENSORS_PER_MEMBER) -> int:
    """Bytes of `members` media of `cells` cells each (with the stepper's temporaries)."""
    return int(tensors) * int(members) * int(cells) * int(itemsize)


def check_media(members: int, cells: int, itemsize: int = 4, device="cpu",
                what: str | None = None, advice: str = "use a smaller --grid or fewer --seeds",
                tensors: int = TENSORS_PER_MEMBER) -> None:
    """`check` for a batch of media: the common case of every study."""
    check(state_bytes(members, cells, itemsize, tensors),
          what or f"a batch of {members} media of {cells:,} cells", device, advice)
