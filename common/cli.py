"""The edges every experiment script shares: flags, output folder, atomic JSON, errors.

Physics lives in substrate/scarring/patterns/metrics; this module only does I/O and the
command-line conventions (--seeds, --seed, --device, --out, --quick), so that every
script in the project behaves the same way.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def add_common_args(parser, default_out: str, default_seeds: int = 8):
    """--seeds, --seed, --device, --out, --quick (the flags every study takes)."""
    parser.add_argument("--seeds", type=int, default=default_seeds,
                        help=f"number of independent seeds, run as one batch (default {default_seeds})")
    parser.add_argument("--seed", type=int, default=0,
                        help="first seed; the run uses seeds SEED .. SEED+SEEDS-1 (default 0)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda (default: cuda if present, else cpu)")
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--quick", action="store_true",
                        help="a much smaller run (small grid, few steps) for smoke tests")
    return parser


def add_threads_arg(parser, default: int = 1):
    """--threads: torch CPU threads. On a shared 2-core machine one thread can be ~10x
    faster than two (each parallel region waits for the busy second core)."""
    parser.add_argument("--threads", type=int, default=default,
                        help=f"torch CPU threads (default {default})")
    return parser


def apply_threads(args) -> None:
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads} must be >= 1")
    torch.set_num_threads(args.threads)


def seed_list(args) -> list[int]:
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds}: need at least 1 seed")
    return list(range(args.seed, args.seed + args.seeds))


def resolve_device(name) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def prepare_out_dir(path) -> Path:
    """Create the output folder and prove it is writable, or raise a clear error."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_test_"):
            pass
    except OSError as exc:
        raise PermissionError(f"output folder {out} is not writable ({exc.strerror or exc})") from None
    return out


def _json_safe(obj):
    """Tensors and numpy values to plain Python; non-finite floats to None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.detach().cpu().tolist())
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        return _json_safe(obj.item())
    if hasattr(obj, "tolist"):  # numpy array
        return _json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    return obj


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


def environment_info(device) -> dict:
    """What ran the experiment: versions and hardware, for the results file."""
    import numpy

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(), "device": str(device),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def run_cli(main) -> None:
    """Call main(); turn expected failures into one line on stderr and exit code 2."""
    from substrate import SimulationError

    try:
        main()
    except (ValueError, FileNotFoundError, PermissionError, SimulationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
