"""The reference study's constants, in one place (docs/protocol.md tells the study).

`Protocol` is a dataclass: each field is one constant of the study, with its default (the
published value), its help and its allowed range, and it is also a command-line flag of
the same name (`scar_strength` -> `--scar-strength`) in every script that takes the
protocol. It is validated once (common.cli.validate). Edit a default here and every study
follows.

`noise_seeds` is the one noise draw of the project: the generator seed of every random
field (a training start, a cue) follows from the run seed, a role and an index, so a seed
gives the same draw alone or inside a batch and two draws never coincide.

This module is pure data: it imports nothing of the project and no torch, so scripts build
their command line from it before the heavy imports (--help is fast), and every module may
import it. The checks that need the physics or the rule registry are
scarring.check_protocol; building the rule is scarring.storage_rule.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def arg(default, help: str, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None,
        finite=True, metavar=None):
    """A dataclass field that is also a command-line flag (common.cli builds the flag).

    lo/hi bound the value (inclusive unless lo_open/hi_open); choices restrict it to a set;
    floats must be finite unless finite=False. A None default means "not set" (the range
    applies only to values given). Tuples of numbers become `nargs="+"` flags.
    """
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open,
            "choices": choices, "finite": finite, "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)

# The study's three patterns for phase 3 (and the memory studies that repeat it): name,
# patterns.make_pattern shape, offset in reference-grid cells (scaled with the grid).
PHASE3_PATTERNS = (("A_square_spots", "square_spots", (-64, -64)),
                   ("B_ring", "ring", (0, 0)),
                   ("C_line", "line", (0, 0)))

# The published single-run figures (docs/protocol.md); None = not published.
PUBLISHED = {
    "phase1": {"scarred_final_similarity": 0.515, "control_final_similarity": 0.118},
    "phase2": {"scarred_recall_quality": 0.933, "control_recall_quality": 0.326,
               "improvement_ratio": 2.86},
    "phase3": {"pattern_recall_qualities": "each > 0.80 (claimed)",
               "min_recall": "> 0.80 (claimed)"},
}

# Which noise draw (noise_seeds role, first index) each part of the study uses. The memory
# studies that repeat a phase (experiments/cue_specificity.py, robustness.py, capacity.py)
# use the same draws, so a seed gives the same training start and cue in all of them.
NOISE = {"phase1_start": ("train", 0), "phase2_cue": ("cue", 0), "phase2_no_cue": ("cue", 100),
         "phase3_starts": ("train", 0), "phase3_cues": ("cue", 0)}

# Noise streams: generator seed = seed * STREAM_SPAN + ROLE * ROLE_SPAN + index.
STREAM_SPAN = 100_000
ROLE_SPAN = 10_000
ROLES = {"train": 1, "cue": 2, "other": 3}


def noise_seeds(seeds, role: str, index: int = 0) -> list[int]:
    """Generator seeds for the noise of (run seed, role, index): distinct across roles
    and indices (index < 10,000), repeatable, independent of the batch they sit in."""
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not one of {sorted(ROLES)}")
    if not 0 <= int(index) < ROLE_SPAN:
        raise ValueError(f"index={index} must be in [0, {ROLE_SPAN})")
    return [int(s) * STREAM_SPAN + ROLES[role] * ROLE_SPAN + int(index) for s in seeds]


@dataclass
class Protocol:
    """The constants of the reference study (docs/protocol.md)."""
    # substrate
    grid: int = arg(256, "grid size H = W (the reference geometry scales with it)", lo=16,
                    hi=16_384)
    f0: float = arg(0.037, "default feed F of the unscarred medium", lo=0.0, hi=1.0)
    k0: float = arg(0.060, "default kill K of the unscarred medium", lo=0.0, hi=1.0)
    du: float = arg(0.16, "U diffusion", lo=0.0, hi=10.0)
    dv: float = arg(0.08, "V diffusion", lo=0.0, hi=10.0)
    dt: float = arg(1.0, "time step", lo=0.0, lo_open=True, hi=10.0)
    decay: float = arg(0.9995, "V decay factor every step (1 = off)", lo=0.0, hi=1.0)
    stencil: str = arg("nine_point", "Laplacian stencil (nine_point is the reference)",
                       choices=("nine_point", "five_point"))
    dtype: str = arg("float32", "floating-point type of the simulation",
                     choices=("float32", "float64"))
    # storage rule
    pattern: str = arg("square_spots", "the pattern of phases 1-2 and of every study that "
                       "stores one pattern (a name in patterns.PATTERNS: add one there)")
    rule: str = arg("match_map", "storage rule (scarring.RULES; match_map is the published "
                                 "one and the only one the flags below configure)")
    scar_strength: float = arg(0.003, "F increment per scarring step on matched cells",
                               lo=0.0, hi=1.0)
    k_ratio: float = arg(0.5, "K decrement as a fraction of the F increment", lo=0.0, hi=10.0)
    match_threshold: float = arg(0.3, "a cell matches when V and the target exceed this",
                                 lo=0.0, hi=1.0, hi_open=True)
    gate: float = arg(0.5, "scar only while the cosine similarity to the target is above "
                           "this", lo=-1.0, hi=1.0, hi_open=True)
    f_min: float = arg(0.01, "lower clamp of scarred F", lo=0.0, hi=1.0)
    f_max: float = arg(0.08, "upper clamp of scarred F", lo=0.0, hi=1.0)
    k_min: float = arg(0.03, "lower clamp of scarred K", lo=0.0, hi=1.0)
    k_max: float = arg(0.08, "upper clamp of scarred K", lo=0.0, hi=1.0)
    # phases
    train_steps: int = arg(1000, "phase 1: training steps of each arm", lo=1)
    train_init_strength: float = arg(0.2, "training start V = clamp(s * target + noise)",
                                     lo=0.0, hi=1.0)
    train_noise: float = arg(0.1, "standard deviation of the training start's noise",
                             lo=0.0, hi=1.0)
    recall_steps: int = arg(500, "phase 2: recall steps", lo=1)
    cue_strength: float = arg(0.15, "phase 2 cue V = clamp(s * target + noise)", lo=0.0,
                              hi=1.0)
    cue_noise: float = arg(0.05, "standard deviation of every cue's noise", lo=0.0, hi=1.0)
    multi_train_steps: int = arg(500, "phase 3: training steps per pattern", lo=1)
    multi_recall_steps: int = arg(300, "phase 3: recall steps", lo=1)
    multi_cue_strength: float = arg(0.20, "phase 3 cue strength", lo=0.0, hi=1.0)
    record_every: int = arg(10, "similarity curves are sampled every this many steps", lo=1)

    def check(self) -> None:
        """Checks that involve more than one constant (each field's range is checked by
        common.cli.validate before this; the physics by scarring.check_protocol)."""
        if not (self.f_min <= self.f_max and self.k_min <= self.k_max):
            raise ValueError(f"scar clamps reversed: F [{self.f_min}, {self.f_max}], "
                             f"K [{self.k_min}, {self.k_max}]")
        if not self.f_min <= self.f0 <= self.f_max:
            raise ValueError(f"--f0 {self.f0}: must lie in the scar clamp range "
                             f"[{self.f_min}, {self.f_max}] (--f-min, --f-max)")
        if not self.k_min <= self.k0 <= self.k_max:
            raise ValueError(f"--k0 {self.k0}: must lie in the scar clamp range "
                             f"[{self.k_min}, {self.k_max}] (--k-min, --k-max)")

    # -- what the constants build (pure data) ----------------------------------------------
    def substrate(self) -> dict:
        """GrayScott keyword arguments of this protocol's medium (physics only)."""
        return {"Du": self.du, "Dv": self.dv, "dt": self.dt,
                "decay": None if self.decay == 1.0 else self.decay, "stencil": self.stencil}

    def torch_dtype(self):
        import torch
        return torch.float64 if self.dtype == "float64" else torch.float32


def protocol_of(args) -> Protocol:
    """The Protocol part of an Args dataclass that extends it."""
    return Protocol(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Protocol)})
