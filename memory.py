"""The one store/recall engine: every study stores and recalls through it, on any medium.

A medium (`Medium`) brings physics and a local learning rule, nothing else; the engine
owns the loops:

* `store(medium, targets, seeds, steps, settings)`: for each pattern in turn, the
  medium's `prepare` step, the training start clamp(s * target + noise) (noise role
  "train", one draw per seed and pattern), `steps` steps with the medium's `scar` rule
  after each step; the fields carry from one pattern to the next.
* `recall(medium, fields, cues, steps, settings, trackers)`: every cue as one batch
  member, run on its fields, observed by trackers.

Trackers watch a recall without owning its loop: `Curves` (similarity to a target every
k steps), `Frames` (V of a few members), `Settle` (stop each member once its state
changes less than a tolerance over a window, and record when: settled members leave
the batch and cost nothing more), `Damage` (a lesion at one step), `LitOutside` (lit
cells away from the patterns), `FieldSchedule` (fields that change during the recall, e.g.
a rising kill rate). A per-step hook such as global inhibition is a medium option: the
medium applies it inside its own step (fused into the compiled kernel for Gray-Scott).

A medium is a frozen dataclass registered by name (`register_medium`, `MEDIA`), so a
script reaches it with `--medium NAME`. It implements the methods of `Medium`; the
engine runs it through `Medium.simulation`, whose default (`Simulation`) steps one step
at a time in Python. The Gray-Scott medium with a storage rule (scarring.GrayScottMedium)
overrides it with the fused, compiled stepper.

This module imports no other module of the project but metrics, patterns and protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from metrics import METRICS, cosine_similarity, similarity_curves, state_change
from patterns import make_cue
from protocol import noise_seeds


# ---- the plug-in ---------------------------------------------------------------------------

class Medium:
    """A medium: its per-cell parameters ("fields"), its state, its physics and the local
    rule that writes patterns into its fields. A frozen (hashable) dataclass; every method
    is pure (tensors in, tensors out), batched over the leading dimension B.

    fields(batch, height, width, protocol) -> {name: (B, H, W)}: the unscarred medium.
    initial_state(V0, fields) -> state tuple, started from activity V0 (B, H, W) (a cue
        or a training start); with V0 = 0 it is the medium at rest (a lesion resets to it).
    step(state, fields, steps) -> state after `steps` steps.
    activity(state) -> (B, H, W): what similarities and read-outs see.
    scar(state, target, fields, similarity) -> {name: field}: the fields after one step
        of the learning rule (similarity (B,): cosine of the activity to the target; a
        member at -1 is not being trained and must be left unchanged).
    prepare(fields, target) -> fields: a step before each pattern is stored (default:
        none).
    background(protocol) -> {name: scalar or field}: the unscarred medium, for the scar
        strength and the scarred cells.
    """
    name: ClassVar[str] = ""

    def fields(self, batch: int, height: int, width: int, protocol=None) -> dict:
        raise NotImplementedError

    def initial_state(self, V0: torch.Tensor, fields: dict) -> tuple:
        raise NotImplementedError

    def step(self, state: tuple, fields: dict, steps: int) -> tuple:
        raise NotImplementedError

    def activity(self, state: tuple) -> torch.Tensor:
        raise NotImplementedError

    def scar(self, state: tuple, target, fields: dict, similarity) -> dict:
        return fields

    def prepare(self, fields: dict, target) -> dict:
        return fields

    def background(self, protocol=None) -> dict:
        raise NotImplementedError

    def simulation(self, state: tuple, fields: dict) -> "Simulation":
        """The object the engine runs (override for a faster stepper)."""
        return Simulation(self, state, fields)


MEDIA: dict[str, type] = {}


def register_medium(cls):
    """Class decorator: make a Medium selectable by name (`--medium NAME`)."""
    if not cls.name or cls.name in MEDIA:
        raise ValueError(f"medium name {cls.name!r} is empty or taken")
    MEDIA[cls.name] = cls
    return cls


class Simulation:
    """A batch of one medium in motion: state and fields, and `run`, the loop the engine
    calls. This default steps one step at a time through Medium.step and Medium.scar."""

    def __init__(self, medium: Medium, state: tuple, fields: dict):
        self.medium, self.state, self.fields = medium, tuple(state), dict(fields)

    @property
    def batch(self) -> int:
        return self.activity().shape[0]

    def activity(self) -> torch.Tensor:
        return self.medium.activity(self.state)

    def reset(self, V0: torch.Tensor) -> None:
        """Start every member again from activity V0, fields unchanged."""
        self.state = tuple(self.medium.initial_state(V0, self.fields))

    def lesion(self, mask: torch.Tensor) -> None:
        """Reset the cells of mask (B, H, W) to the medium at rest."""
        rest = self.medium.initial_state(torch.zeros_like(self.activity()), self.fields)
        self.state = tuple(torch.where(mask, r, s) for r, s in zip(rest, self.state))

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members `index` (the others leave the batch)."""
        self.state = tuple(s[index] for s in self.state)
        self.fields = {k: (f[index] if f.dim() == self.state[0].dim() else f)
                       for k, f in self.fields.items()}

    def run(self, steps: int, target=None, learn: bool = False, every: int = 0,
            on_record=None) -> None:
        """Advance `steps` steps. learn: apply the medium's scar rule toward `target` after
        every step. on_record(step, activity, similarity) after step s of this run when s
        is a multiple of `every` and after the last step (similarity: the learning rule's
        cosine to the target, None without learning)."""
        every = every or steps
        for i in range(1, steps + 1):
            self.state = tuple(self.medium.step(self.state, self.fields, 1))
            similarity = None
            if learn:
                V = self.medium.activity(self.state)
                similarity = cosine_similarity(V, target)
                self.fields = dict(self.medium.scar(self.state, target, self.fields, similarity))
            if on_record is not None and (i % every == 0 or i == steps):
                on_record(i, self.medium.activity(self.state), similarity)


# ---- how a store or recall runs -----------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """How the engine runs (not what it stores): the device and float type, the training
    start clamp(train_strength * target + N(0, train_noise^2)), and a progress label."""
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    train_strength: float = 0.2
    train_noise: float = 0.1
    progress: str | None = None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def per_seed(x, S: int, name: str, dims: int) -> torch.Tensor:
    """x (array-like) with `dims` trailing dims, shared (no seed dim) or per seed: returns
    (S, ...), a view where x is shared."""
    x = torch.as_tensor(x)
    if x.dim() == dims:
        return x.unsqueeze(0).expand(S, *x.shape)
    if x.dim() == dims + 1 and x.shape[0] == S:
        return x
    raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {dims} dims shared by "
                     f"the seeds or {dims + 1} dims with {S} seeds first")


def as_fields(fields: dict, S: int, H: int, W: int, settings: Settings) -> dict:
    """Each field as an (S, H, W) tensor (a copy) from a scalar, (H, W) or (S, H, W)."""
    out = {}
    for name, value in fields.items():
        if isinstance(value, (int, float)):
            out[name] = torch.full((S, H, W), float(value), device=settings.torch_device,
                                   dtype=settings.dtype)
            continue
        t = torch.as_tensor(value, device=settings.torch_device, dtype=settings.dtype)
        if t.shape == (H, W):
            t = t.expand(S, H, W)
        if t.shape != (S, H, W):
            raise ValueError(f"{name} has shape {tuple(t.shape)}; expected a scalar, ({H}, "
                             f"{W}) or ({S}, {H}, {W})")
        out[name] = t.clone()
    return out


def scar_strength(fields: dict, background: dict) -> torch.Tensor:
    """Total scar per member, (B,): sum over the grid of sum_f |f - f_background|."""
    total = None
    for name, f in fields.items():
        f = f.unsqueeze(0) if f.dim() == 2 else f
        d = (f - background[name]).abs()
        total = d if total is None else total + d
    return total.flatten(1).sum(1)


def scarred_cells(fields: dict, background: dict, tolerance: float = 0.0) -> torch.Tensor:
    """Bool (B, H, W): cells where some field differs from the unscarred medium by more
    than `tolerance` (0: any difference at all)."""
    out = None
    for name, f in fields.items():
        d = (f - background[name]).abs() > tolerance
        out = d if out is None else out | d
    return out


# ---- trackers ------------------------------------------------------------------------------

class Tracker:
    """Watches a run without owning its loop.

    every: record(step, activity, similarity, run) is called on the device at step 0,
    at each multiple of `every` and at the end of each stretch (similarity: the learning
    rule's cosine to the target while storing, else None); nothing waits for the host.
    marks(steps): the steps at which the loop stops and calls at_mark(step, sim, run) on
    the host (a lesion, a change of the fields, a settle check). run.active holds the
    original indices of the members still in the batch, run.batch their original number.
    """
    every: int = 0

    def marks(self, steps: int) -> set:
        return set()

    def record(self, step, activity, similarity, run) -> None:
        pass

    def at_mark(self, step, sim, run) -> None:
        pass

    def result(self) -> dict:
        return {}


def _put(full: torch.Tensor, run, part: torch.Tensor) -> torch.Tensor:
    """A full-batch copy of `full` whose rows of the active members are `part`."""
    if run.active.shape[0] == run.batch:
        return part
    out = full.clone()
    out[run.active] = part.to(out.dtype)
    return out


class Curves(Tracker):
    """Similarity of each member's activity to its target every `every` steps: target
    (H, W) shared or (B, H, W) per member gives result {"steps": [..], "similarity":
    (T, B)}; targets (B, P, H, W) give (T, B, P), one curve per pattern. metric: a name
    in metrics.METRICS. On the CPU; a member that left the batch keeps its last value."""

    def __init__(self, target: torch.Tensor, every: int, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} is not one of {sorted(METRICS)}")
        self.target, self.every, self.metric = target, int(every), metric
        self.steps, self.values = [], []
        self.ends = set()

    def record(self, step, activity, similarity, run):
        if (step % self.every and step not in self.ends) or (self.steps and self.steps[-1] == step):
            return
        t = self.target
        if t.dim() > 2 and run.active.shape[0] != run.batch:
            t = t[run.active]
        if t.dim() == 4:
            similarity = similarity_curves(activity.unsqueeze(0), t, self.metric)[0]
        elif similarity is None or self.metric != "cosine":
            similarity = METRICS[self.metric](activity, t)
        self.steps.append(step)
        self.values.append(_put(self.values[-1], run, similarity) if self.values else similarity)

    def result(self):
        return {"steps": list(self.steps), "similarity": torch.stack(self.values).cpu()}


class Frames(Tracker):
    """Activity of the members `members` (original indices; None: every member) every
    `every` steps (default: about 100 frames over `steps`; 0: none) from step 0 on, and
    at each step of `at`: result {"frames": (N, M, H, W), "frame_steps": [..]} on the CPU. A
    member that left the batch keeps the frame it left with."""

    def __init__(self, members, steps: int, count: int = 100, every: int | None = None,
                 at=()):
        self.members = None if members is None else list(members)
        self.every = max(1, int(steps) // count) if every is None else int(every)
        self.at = {int(t) for t in at}
        self.frames, self.frame_steps = [], []

    def marks(self, steps):
        return {t for t in self.at if not self.every or t % self.every}

    def record(self, step, activity, similarity, run):
        if (not self.every or step % self.every) and step not in self.at:
            return
        if self.frame_steps and self.frame_steps[-1] == step:
            return
        members = range(run.batch) if self.members is None else self.members
        if run.active.shape[0] == run.batch:
            frame = activity[list(members)].clone()
        else:
            where = {int(a): i for i, a in enumerate(run.active.tolist())}
            frame = self.frames[-1].clone()
            for j, m in enumerate(members):
                if m in where:
                    frame[j] = activity[where[m]]
        self.frames.append(frame)
        self.frame_steps.append(step)

    def at_mark(self, step, sim, run):
        self.record(step, sim.activity(), None, run)

    def result(self):
        return {"frames": torch.stack(self.frames).cpu() if self.frames else None,
                "frame_steps": list(self.frame_steps)}


class LitOutside(Tracker):
    """Fraction of the cells of a mask (B, H, W) (e.g. every cell away from the patterns)
    where the activity exceeds `level`, at the records of a Curves tracker of the same
    cadence (every `every` steps, the end, a lesion): result {"lit_outside": (T, B)} on
    the CPU."""

    def __init__(self, mask: torch.Tensor, every: int, level: float = 0.2):
        self.mask, self.every, self.level = mask.bool(), int(every), float(level)
        self.cells = self.mask.flatten(1).sum(1).clamp_min(1)
        self.values, self.ends = [], set()

    def record(self, step, activity, similarity, run):
        if step % self.every and step not in self.ends:
            return
        rows = run.active
        lit = ((activity > self.level) & self.mask[rows]).flatten(1).sum(1) / self.cells[rows]
        self.values.append(_put(self.values[-1], run, lit) if self.values else lit)

    def result(self):
        return {"lit_outside": torch.stack(self.values).cpu()}


class Damage(Tracker):
    """A lesion: at step `step` the cells of mask (B, H, W) are reset to the medium at
    rest and the run goes on. result {"before_damage", "after_damage": (B, H, W)}."""

    def __init__(self, mask: torch.Tensor, step: int):
        self.mask, self.step = mask.bool(), int(step)
        self.before = self.after = None

    def marks(self, steps):
        if not 0 <= self.step <= steps:
            raise ValueError(f"damage_step={self.step} must be in [0, {steps}]")
        return {self.step}

    def at_mark(self, step, sim, run):
        self.before = sim.activity().clone()
        sim.lesion(self.mask[run.active])
        self.after = sim.activity().clone()

    def result(self):
        return {"before_damage": self.before, "after_damage": self.after}


class FieldSchedule(Tracker):
    """Fields that change during a recall: at step 0 and every `every` steps the fields
    become change(step, base_fields) (piecewise constant in between), e.g. a global
    offset of the kill rate that rises over the recall."""

    def __init__(self, change, every: int, steps_hint: int | None = None):
        self.change, self.period = change, int(every)
        self.base = None

    def marks(self, steps):
        return set(range(0, int(steps), self.period))

    def at_mark(self, step, sim, run):
        if self.base is None:
            self.base = dict(sim.fields)
        sim.fields = dict(self.change(step, {k: v[run.active] for k, v in self.base.items()}))


class Settle(Tracker):
    """Stops each member once its activity changes by less than `tolerance` (mean
    |change| per cell, metrics.state_change) over `window` steps, from `min_steps` on:
    the member leaves the batch and costs nothing more. result {"settled_at": (B,)
    float64 step at which it was found settled (nan: never), "change": (T, B) change over
    each window (nan once settled), "check_steps": the T steps of the checks}."""

    def __init__(self, tolerance: float, window: int, min_steps: int = 0):
        if not tolerance > 0 or int(window) < 1:
            raise ValueError(f"settle tolerance={tolerance} must be > 0 and window="
                             f"{window} >= 1")
        self.tolerance, self.window, self.min_steps = float(tolerance), int(window), int(min_steps)
        self.previous, self.settled_at, self.changes, self.check_steps = None, None, [], []

    def marks(self, steps):
        return set(range(self.window, int(steps) + 1, self.window))

    def at_mark(self, step, sim, run):
        V = sim.activity()
        if self.settled_at is None:
            self.settled_at = torch.full((run.batch,), math.nan, dtype=torch.float64)
            self.previous = run.start_activity
        change = state_change(self.previous, V).double().cpu()
        full = torch.full((run.batch,), math.nan, dtype=torch.float64)
        full[run.active.cpu()] = change
        self.changes.append(full)
        self.check_steps.append(step)
        done = change < self.tolerance if step >= self.min_steps else torch.zeros_like(
            change, dtype=torch.bool)
        self.settled_at[run.active.cpu()[done]] = float(step)
        keep = ~done.to(V.device)
        self.previous = V[keep].clone()
        if done.any():
            run.drop(done.to(V.device))

    def result(self):
        return {"settled_at": self.settled_at, "check_steps": self.check_steps,
                "change": torch.stack(self.changes) if self.changes else None}


# ---- the loops -----------------------------------------------------------------------------

class _Run:
    """Book-keeping of one run: which original members are still in the batch, and the
    final state of those that left."""

    def __init__(self, sim: Simulation):
        self.sim, self.batch = sim, sim.batch
        self.start_activity = sim.activity().clone()
        self.active = torch.arange(self.batch, device=self.start_activity.device)
        self.final = None

    def drop(self, mask: torch.Tensor) -> None:
        """Members `mask` (over the current batch) leave; their state is kept as final."""
        if self.final is None:
            self.final = [s.new_empty(self.batch, *s.shape[1:]) for s in self.sim.state]
        for full, s in zip(self.final, self.sim.state):
            full[self.active[mask]] = s[mask]
        self.active = self.active[~mask]
        if self.active.numel():     # when the last ones leave, the run ends (no empty batch)
            self.sim.keep(~mask)

    def finish(self) -> tuple:
        if self.final is None:
            return self.sim.state
        if self.active.numel():
            for full, s in zip(self.final, self.sim.state):
                full[self.active] = s
        return tuple(self.final)


def _drive(sim: Simulation, run: _Run, steps: int, trackers, target=None, learn=False,
           progress: str | None = None) -> None:
    """Run `steps` steps under the trackers: one sim.run per stretch between marks."""
    from common.cli import progress as progress_bar

    marks = {t: t.marks(steps) for t in trackers}
    stops = sorted({m for ms in marks.values() for m in ms if 0 < m < steps} | {steps})
    cadences = [t.every for t in trackers if t.every] + ([50] if progress else [])
    every = math.gcd(*cadences) if cadences else 0
    ends = {steps} | {s for t in trackers if isinstance(t, Damage) for s in marks[t]}
    for t in trackers:    # curves also record at the end and around a lesion
        t.ends = ends
    for t in trackers:
        t.record(0, sim.activity(), None, run)
    for t in trackers:
        if 0 in marks[t]:
            t.at_mark(0, sim, run)
    bar = progress_bar(steps, progress)
    now = 0
    for stop in stops:
        if run.active.numel() == 0:
            break
        start = now

        def on_record(step, activity, similarity, start=start):
            for t in trackers:
                if t.every:
                    t.record(start + step, activity, similarity, run)
            bar.update(start + step - bar.n)

        members_target = target
        if target is not None and target.dim() > 2 and run.active.shape[0] != run.batch:
            members_target = target[run.active]
        # on_record's steps count from this stretch's start: a cadence dividing it
        cadence = math.gcd(every, start) if every and start else every
        sim.run(stop - now, target=members_target, learn=learn, every=cadence,
                on_record=on_record)
        now = stop
        for t in trackers:
            if stop in marks[t]:
                t.at_mark(stop, sim, run)
    bar.close()


def store(medium: Medium, targets: torch.Tensor, seeds, steps: int, settings: Settings,
          fields: dict | None = None, learn: bool = True, first_index: int = 0,
          snapshots=(), record_every: int | None = None, frame_members=None,
          protocol=None, background: dict | None = None,
          initial: tuple | None = None) -> dict:
    """Store targets (P, H, W) shared by the seeds, or (S, P, H, W) per seed, one after the
    other (module docstring); learn=False: the same training without the rule (the
    control). fields: the starting fields (default: the medium's unscarred fields).
    initial: the medium's state (e.g. (U, V), each (S, H, W)) that the first pattern's
    training starts from instead of the training start (a saved state continued).
    snapshots: pattern counts k after which a copy of the fields is kept. record_every:
    sample the similarity curve this often (default: only the end); frame_members: seed
    indices whose activity is filmed (~100 frames).

    Returns {"fields": the final fields, each also under its own name (e.g. "F", "K");
    "V": (S, H, W) final activity; "train_similarity": (P, S) cosine at the end of each
    pattern's training; "scar_strength": (P, S) after each pattern, against the unscarred
    medium (or `background`: {name: scalar or field}); "snapshots": {k: fields}; "curves": [{"steps", "similarity": (T, S)}] and
    "frames": [(N, M, H, W) or None] per pattern}.
    """
    seeds = list(seeds)
    S = len(seeds)
    if S < 1:
        raise ValueError("store needs at least one seed")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps} must be a positive integer")
    t = per_seed(targets, S, "targets", 3).to(device=settings.torch_device, dtype=settings.dtype)
    P, H, W = t.shape[1:]
    snapshots = {int(k) for k in snapshots}
    bad = [k for k in snapshots if not 1 <= k <= P]
    if bad:
        raise ValueError(f"snapshots {sorted(bad)} outside 1..{P} stored patterns")
    background = medium.background(protocol) if background is None else background
    current = as_fields(background if fields is None else fields, S, H, W, settings)
    sim = None
    out = {"train_similarity": [], "scar_strength": [], "snapshots": {}, "curves": [],
           "frames": []}
    for p in range(P):
        start = make_cue(t[:, p], settings.train_strength, settings.train_noise,
                         noise_seeds(seeds, "train", first_index + p))
        if sim is not None:
            current = sim.fields
        if learn:
            current = dict(medium.prepare(current, t[:, p]))
        if sim is None:
            state = medium.initial_state(start, current) if initial is None else tuple(
                x.to(device=settings.torch_device, dtype=settings.dtype) for x in initial)
            sim = medium.simulation(state, current)
        else:
            sim.fields = current
            sim.reset(start)
        trackers = [Curves(t[:, p], int(record_every or steps))]
        if frame_members:
            trackers.append(Frames(frame_members, steps))
        label = settings.progress
        if label and P > 1:
            label = f"{label} {p + 1}/{P}"
        _drive(sim, _Run(sim), int(steps), trackers, target=t[:, p], learn=learn,
               progress=label)
        curve = trackers[0].result()
        out["train_similarity"].append(curve["similarity"][-1])
        out["scar_strength"].append(scar_strength(sim.fields, background).cpu())
        out["curves"].append(curve)
        out["frames"].append(trackers[1].result()["frames"] if frame_members else None)
        if p + 1 in snapshots:
            out["snapshots"][p + 1] = {k: v.clone() for k, v in sim.fields.items()}
    out["train_similarity"] = torch.stack(out["train_similarity"])
    out["scar_strength"] = torch.stack(out["scar_strength"])
    out.update(sim.fields, fields=dict(sim.fields), V=sim.activity(), state=sim.state)
    return out


def recall(medium: Medium, fields: dict, cues: torch.Tensor, steps: int,
           settings: Settings, trackers=(), state: tuple | None = None) -> dict:
    """Run every cue, (B, H, W), as one batch member on its fields ({name: (B, H, W),
    (H, W) or a scalar}) for `steps` steps, observed by `trackers` (members that a Settle
    tracker stops leave the batch). Returns {"V": (B, H, W) final activity (a settled
    member's from when it settled), "state": the final state, "start": the activity at
    step 0} and every tracker's result. state: start from this full state instead (cues
    then only give the shape), e.g. to run on from where another run stopped."""
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps={steps} must be a non-negative integer")
    cues = torch.as_tensor(cues).to(device=settings.torch_device, dtype=settings.dtype)
    B, H, W = cues.shape
    fields = as_fields(fields, B, H, W, settings)
    start = medium.initial_state(cues, fields) if state is None else tuple(
        s.to(device=settings.torch_device, dtype=settings.dtype) for s in state)
    sim = medium.simulation(start, fields)
    run = _Run(sim)
    if steps:
        _drive(sim, run, int(steps), list(trackers), progress=settings.progress)
    else:
        for t in trackers:
            t.record(0, sim.activity(), None, run)
    state = run.finish()
    out = {"state": state, "V": medium.activity(state), "start": run.start_activity}
    for t in trackers:
        out.update(t.result())
    return out
