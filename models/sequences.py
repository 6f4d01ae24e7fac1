"""Sequence storage on the scarred Gray-Scott medium: scar layouts and feed schedules.

A sequence of items (patterns) is stored as per-cell F, K fields, and replayed by
running the medium from a cue of the first item while recording the similarity of V to
every item over time (`replay`; read the curves with metrics.sequence_readout).

What the physics allows (measured in a homogeneous medium at F = 0.08, the match map's
F clamp; scratch probes, 48 x 48, reference stepper):
    K <= 0.052   a lit region invades unlit cells: a front at 0.01-0.05 cells/step
                 (fastest at low K; 0.003 cells/step at K = 0.054)
    K 0.056-0.058 a lit region holds its shape: it neither spreads nor dies
    K 0.060-0.064 a lit region shrinks to a lasting spot of 40-80 cells
    K >= 0.065   a lit region dies within ~100 steps (no slow lingering before it)
U = 1, V = 0 is stable everywhere, so an unlit region lights only where a lit one
touches it (or a kick lands). A lit region at a K that holds or invades stays lit for
good: nothing in a static field switches an item off once the replay has moved on.

Mechanisms built here (each is F, K fields, plus an optional global schedule):
* layout channels (`chain_channels`): thin scarred paths from item i to item i + 1, so
  the front leaving item i is carried into item i + 1 (`fan` paths to points spread over
  item i + 1, so that it fills from many places at once);
* set-points per item and channel (`layout_fields`, `depth_setpoints`): the first item
  at a K where a lit region holds but cannot be invaded (nothing downstream relights
  it), the later items ever deeper (lower K);
* a global schedule (`Schedule`, `death_schedule`): offsets dF(t), dK(t) added to every
  cell; a rising K kills the shallowest lit item first, so with depth falling along the
  sequence the lit set slides from item to item. The order is written in the depths and
  read out by the clock; the fronts only carry the cue's ignition to every item.
* `store_sequence`: the depth-coded scars laid down by the match-map rule itself
  (scarring.store_patterns, one clamp per item), channels painted on top;
* `learn_fields`: static per-cell F, K fitted by backprop through the replay to a loss
  on the similarity curves (`sequence_loss`), to test whether any static field replays.
* `SequenceMedia`: these on one scarring.Study, for a study script: times and widths
  scaled from 64 x 64, the layouts, the protocol cues, the filmed replay (`peak_frames`).
All functions are pure (tensors in, tensors out) except `replay`, which runs GrayScott.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import memory
from memory import per_seed
from protocol import NOISE
from scarring import GrayScottMedium
from substrate import F0, K0

# The match-map rule's clamps, where its scar saturates (scarring.ScarRule).
F_SCAR, K_SCAR = 0.08, 0.03
# Thresholds on K at F = F_SCAR (module docstring): invasion below, death above.
K_INVADE, K_HOLD, K_DIE = 0.052, 0.057, 0.065


def _masks(items) -> torch.Tensor:
    m = torch.as_tensor(items)
    if m.dim() != 3 or m.shape[0] < 1:
        raise ValueError(f"items have shape {tuple(m.shape)}; expected (P, H, W)")
    return m > 0.3 * m.max().clamp_min(1e-12) if m.dtype != torch.bool else m


def _segment(height: int, width: int, a, b, width_cells: float) -> torch.Tensor:
    """Cells within width_cells / 2 of the segment a-b ((row, col) points; no wrap)."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                          torch.arange(width, dtype=torch.float64), indexing="ij")
    ay, ax = float(a[0]), float(a[1])
    dy, dx = float(b[0]) - ay, float(b[1]) - ax
    length2 = max(dy * dy + dx * dx, 1e-12)
    t = (((y - ay) * dy + (x - ax) * dx) / length2).clamp(0, 1)
    return (y - ay - t * dy) ** 2 + (x - ax - t * dx) ** 2 <= (width_cells / 2) ** 2


def spread_points(mask: torch.Tensor, count: int) -> torch.Tensor:
    """`count` cells of mask spread over it (farthest-point sampling from its first
    cell): (count, 2) (row, col). Fewer if the mask has fewer cells."""
    cells = mask.nonzero().to(torch.float64)
    if len(cells) == 0:
        raise ValueError("cannot pick points on an empty mask")
    chosen = [0]
    dist = ((cells - cells[0]) ** 2).sum(1)
    for _ in range(min(count, len(cells)) - 1):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, ((cells - cells[i]) ** 2).sum(1))
    return cells[chosen]


def channel(source: torch.Tensor, target: torch.Tensor, width_cells: float = 2.0,
            fan: int = 1) -> torch.Tensor:
    """Bool (H, W): straight paths from source to target, one to each of `fan` points
    spread over target (fan=1: the closest pair of cells), each from the source cell
    nearest that point; cells of source and target themselves are excluded."""
    H, W = source.shape
    src = source.nonzero().to(torch.float64)
    if len(src) == 0 or not target.any():
        raise ValueError("a channel needs non-empty source and target masks")
    if fan == 1:
        tgt = target.nonzero().to(torch.float64)
        d = torch.cdist(tgt, src)
        flat = int(d.argmin())
        ends = [(tgt[flat // d.shape[1]], src[flat % d.shape[1]])]
    else:
        ends = [(p, src[int(((src - p) ** 2).sum(1).argmin())])
                for p in spread_points(target, fan)]
    path = torch.zeros(H, W, dtype=torch.bool)
    for p, q in ends:
        path |= _segment(H, W, q, p, width_cells)
    return path & ~source & ~target


def chain_channels(items, width_cells: float = 2.0, fan: int = 1) -> torch.Tensor:
    """(P - 1, H, W) bool: channel i runs from item i to item i + 1, avoiding every item."""
    m = _masks(items)
    union = m.any(0)
    return torch.stack([channel(m[i], m[i + 1], width_cells, fan) & ~union
                        for i in range(len(m) - 1)]) if len(m) > 1 else m[:0]


def layout_fields(items, item_setpoints, channels=None, channel_setpoints=None,
                  F_base: float = F0, K_base: float = K0):
    """(F, K) fields (H, W): F_base, K_base everywhere, then each channel and each item
    set to its own (F, K) set-point (items painted last, in order: a later item wins a
    shared cell). item_setpoints: P pairs; channel_setpoints: one pair per channel."""
    m = _masks(items)
    if len(item_setpoints) != len(m):
        raise ValueError(f"{len(item_setpoints)} item set-points for {len(m)} items")
    F = torch.full(m.shape[1:], float(F_base))
    K = torch.full(m.shape[1:], float(K_base))
    layers = []
    if channels is not None and len(channels):
        if channel_setpoints is None or len(channel_setpoints) != len(channels):
            raise ValueError("give one (F, K) set-point per channel")
        layers += list(zip(torch.as_tensor(channels).bool(), channel_setpoints))
    layers += list(zip(m, item_setpoints))
    for mask, (f, k) in layers:
        F = torch.where(mask, torch.tensor(float(f)), F)
        K = torch.where(mask, torch.tensor(float(k)), K)
    return F, K


def depth_setpoints(n: int, k_second: float = 0.045, spacing: float = 0.007,
                    k_first: float = K_HOLD, F: float = F_SCAR) -> list:
    """(F, K) set-points coding position in the sequence by depth: the first item at a
    K where a lit region holds but cannot be invaded (so no later item relights it), the
    rest invadable, K falling by `spacing` from k_second. The spacing must exceed the
    band in which a lit region shrinks before it dies (K_DIE - K_HOLD ~ 0.008), or an
    item is already shrinking when the one before it dies."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    ks = [k_first] + [k_second - spacing * i for i in range(n - 1)]
    if ks[-1] < 0:
        raise ValueError(f"{n} items at spacing {spacing} from K = {k_second} need K < 0; "
                         f"use a smaller spacing or fewer items")
    return [(F, k) for k in ks]


@dataclass(frozen=True)
class Schedule:
    """Global offsets dF(t), dK(t) added to every cell's F and K: piecewise linear
    through the breakpoints (steps[i], dF[i], dK[i]), constant outside them."""
    steps: tuple = (0,)
    dF: tuple = (0.0,)
    dK: tuple = (0.0,)

    def __post_init__(self):
        if not (len(self.steps) == len(self.dF) == len(self.dK) >= 1):
            raise ValueError("Schedule needs equally many steps, dF and dK (at least one)")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"Schedule steps {self.steps} must increase strictly")

    def at(self, step: float) -> tuple[float, float]:
        s = self.steps
        if step <= s[0]:
            return self.dF[0], self.dK[0]
        for i in range(1, len(s)):
            if step <= s[i]:
                w = (step - s[i - 1]) / (s[i] - s[i - 1])
                return (self.dF[i - 1] + w * (self.dF[i] - self.dF[i - 1]),
                        self.dK[i - 1] + w * (self.dK[i] - self.dK[i - 1]))
        return self.dF[-1], self.dK[-1]


def death_schedule(item_K, fill: int, hold: int, k_die: float = K_DIE,
                   margin: float = 0.002, offset: float = 0.0) -> Schedule:
    """A rising global K that kills the items one after the other: dK = offset for
    `fill` steps (fronts carry the cue's ignition into every item), then it rises
    linearly through item i's death (k_die - K_i + margin) at fill + (i + 1) * hold.
    With K falling along the sequence, item i is the shallowest item alive in
    [fill + i hold, fill + (i + 1) hold]. offset > 0 raises the whole medium from the
    start (store every set-point offset deeper to keep the items where they were): the
    unscarred medium then sits at K0 + offset."""
    if fill < 1 or hold < 1:
        raise ValueError(f"fill={fill} and hold={hold} must be >= 1")
    if not offset >= 0:
        raise ValueError(f"offset={offset} must be >= 0")
    kills = [max(float(offset), k_die - float(k) + margin) for k in item_K]
    if any(b < a for a, b in zip(kills, kills[1:])):
        raise ValueError(f"item K {list(item_K)} must not rise along the sequence")
    steps = (0, fill, *(fill + (i + 1) * hold for i in range(len(kills))))
    return Schedule(steps, (0.0,) * len(steps), (float(offset), float(offset), *kills))


def ramp(start: int, stop: int, dK_stop: float, dK_start: float = 0.0) -> Schedule:
    """dK constant at dK_start until `start`, rising linearly to dK_stop at `stop`."""
    return Schedule(steps=(0, start, stop), dF=(0.0, 0.0, 0.0),
                    dK=(dK_start, dK_start, dK_stop))


def replay(F, K, cues, items, steps: int, record_every: int = 10,
           schedule: Schedule | None = None, frame_every: int | None = None,
           metric: str = "cosine", substrate: dict | None = None, device=None,
           dtype=torch.float32, frame_steps=(), frame_members=None, outside=None,
           lit_level: float = 0.2) -> dict:
    """Run the medium from each cue and record the similarity of V to every item.

    F, K: (S, H, W) per-seed fields (or (H, W) shared); cues: (S, C, H, W) starting V
    (U = 1), or (C, H, W) shared; items: (P, H, W) or (S, P, H, W). All S x C runs are
    one GrayScott batch. schedule: global offsets added to F and K, updated every
    record_every steps (piecewise constant between updates).
    Frames of V are kept every frame_every steps (a multiple of record_every, with step
    0) and at each step in frame_steps, for every run or only the (s, c) pairs in
    frame_members. outside: a bool (H, W) or (S, H, W) mask (e.g. every cell away from
    the items): the fraction of its cells with V > lit_level is recorded too.
    Returns {"steps": (T,) record steps, "curves": (T, S, C, P) similarity of V to each
    item, "frames": (T', S', C', H, W) V (S' x C' = all runs, or (T', M, H, W) for M
    frame_members) or None, "frame_steps": the T' steps filmed, "lit_outside": (T, S, C)
    or None}.
    """
    if int(steps) != steps or steps < 1 or int(record_every) != record_every or record_every < 1:
        raise ValueError(f"steps={steps} and record_every={record_every} must be positive "
                         f"integers")
    if frame_every is not None and (frame_every < 1 or frame_every % record_every):
        raise ValueError(f"frame_every={frame_every} must be a multiple of record_every="
                         f"{record_every}")
    if any(t != int(t) or not 0 <= t <= steps for t in frame_steps):
        raise ValueError(f"frame_steps {sorted(frame_steps)} must be integers in [0, {steps}]")
    settings = memory.Settings(str(torch.device(device) if device is not None else "cpu"), dtype)
    cues = torch.as_tensor(cues)
    S = F.shape[0] if isinstance(F, torch.Tensor) and F.dim() == 3 else (
        cues.shape[0] if cues.dim() == 4 else 1)
    cues = per_seed(cues, S, "cues", 3).to(device=settings.device, dtype=dtype)
    _, C, H, W = cues.shape
    pats = per_seed(items, S, "items", 3).to(device=settings.device, dtype=dtype)
    if pats.shape[-2:] != (H, W):
        raise ValueError(f"items are {tuple(pats.shape[-2:])} but cues are ({H}, {W})")
    members = None if frame_members is None else [int(s) * C + int(c) for s, c in frame_members]
    if members is not None and any(not 0 <= m < S * C for m in members):
        raise ValueError(f"frame_members {list(frame_members)} outside {S} seeds x {C} cues")
    fields = {n: per_seed(x, S, n, 2).to(device=settings.device, dtype=dtype)
              .repeat_interleave(C, 0) for n, x in (("F", F), ("K", K))}
    trackers = [memory.Curves(pats.repeat_interleave(C, 0), record_every, metric)]
    if frame_every or frame_steps:
        trackers.append(memory.Frames(members, steps, every=frame_every or 0,
                                      at=frame_steps))
    if schedule is not None:
        def shifted(step, base):
            dF, dK = schedule.at(step)
            return {"F": base["F"] + dF, "K": base["K"] + dK}
        trackers.append(memory.FieldSchedule(shifted, record_every))
    if outside is not None:
        mask = per_seed(torch.as_tensor(outside).bool(), S, "outside", 2).to(settings.device)
        trackers.append(memory.LitOutside(mask.repeat_interleave(C, 0), record_every, lit_level))
    res = memory.recall(GrayScottMedium(**(substrate or {})), fields,
                        cues.reshape(S * C, H, W), int(steps), settings, trackers)
    frames = res.get("frames")
    if frames is not None and members is None:
        frames = frames.view(-1, S, C, H, W)
    lit = res.get("lit_outside")
    return {"steps": torch.tensor(res["steps"]),
            "curves": res["similarity"].view(-1, S, C, pats.shape[1]),
            "frames": frames, "frame_steps": res.get("frame_steps", []),
            "lit_outside": None if lit is None else lit.view(-1, S, C)}


def depth_rule(rule, F: float, K: float):
    """`rule` with its saturation point moved to (F, K), so that its scar ends at that
    depth: the match-map rule's clamps (F_max, K_min), or a regime rule's target regime
    (F_on, K_on). ValueError for a rule with neither (it cannot code depth)."""
    from dataclasses import fields, replace

    names = {f.name for f in fields(rule)}
    for f_name, k_name in (("F_max", "K_min"), ("F_on", "K_on")):
        if {f_name, k_name} <= names:
            return replace(rule, **{f_name: float(F), k_name: float(K)})
    raise ValueError(f"--rule {rule.name}: depth-coded storage needs a rule with a "
                     f"saturation point to move (F_max/K_min or F_on/K_on)")


def store_sequence(study, items, seeds, setpoints, steps: int = 500, channels=None,
                   channel_setpoints=None, rule=None, first_index: int = 0, F=None,
                   K=None) -> dict:
    """Depth-coded storage through the engine: items stored in order by study.store
    (scarring.Study), item i with `rule` (default the study's) saturating at its own
    set-point (`depth_rule`), scars accumulating; then channels (a layout, not learned)
    painted at their set-points. For the match-map rule the set-points must not get
    shallower along the sequence: its clamps apply to the whole field, and a K_min above
    an earlier item's K would raise that item.

    items: (P, H, W) or (S, P, H, W). channels: (P - 1, H, W) or (S, P - 1, H, W) bool.
    F, K: the starting medium (default the rule's unscarred one). Returns the last
    study.store output with "F", "K" (S, H, W) including the channels and
    "train_similarity" (P, S) of every item."""
    seeds = list(seeds)
    S = len(seeds)
    t = per_seed(items, S, "items", 3)
    ks = [float(k) for _, k in setpoints]
    if len(setpoints) != t.shape[1] or any(b > a for a, b in zip(ks, ks[1:])):
        raise ValueError(f"need {t.shape[1]} set-points with K not rising; got {setpoints}")
    rule = study.rule if rule is None else rule
    sims = []
    for i, (f, k) in enumerate(setpoints):
        out = study.store(t[:, i:i + 1], seeds, steps, rule=depth_rule(rule, f, k), F=F, K=K,
                          first_index=first_index + i)
        F, K = out["F"], out["K"]
        sims.append(out["train_similarity"][0])
    if channels is not None and len(channel_setpoints or ()):
        ch = per_seed(torch.as_tensor(channels).bool(), S, "channels", 3).to(F.device)
        for c, (f, k) in enumerate(channel_setpoints):
            F = torch.where(ch[:, c], torch.tensor(float(f), dtype=F.dtype, device=F.device), F)
            K = torch.where(ch[:, c], torch.tensor(float(k), dtype=K.dtype, device=K.device), K)
    out.update(F=F, K=K, train_similarity=torch.stack(sims))
    return out


# ---- learned fields: backprop through the replay ------------------------------------------

def window_targets(T: int, P: int, order=None) -> torch.Tensor:
    """(T, P) one-hot: record t belongs to item order[floor(t * P / T)] (equal windows)."""
    order = list(range(P)) if order is None else list(order)
    idx = torch.tensor([order[min(P - 1, t * P // T)] for t in range(T)])
    return torch.nn.functional.one_hot(idx, P).to(torch.float64)


def sequence_loss(curves: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss on (T, B, P) similarity curves against (T, P) one-hot windows: in each
    record, 1 - the similarity to the item that should be shown, plus the mean
    similarity to the others. 0 = each item alone, exactly in its window."""
    t = targets.to(curves.dtype).unsqueeze(1)
    own = (curves * t).sum(-1)
    others = (curves * (1 - t)).sum(-1) / max(1, curves.shape[-1] - 1)
    return (1 - own + others).mean()


def _segment_cosines(U, V, F, K, items, n, stencil, decay):
    from substrate import DT, DU, DV, gray_scott_step
    for _ in range(n):
        U, V = gray_scott_step(U, V, F, K, DU, DV, DT, decay, stencil, True)
    v = V.flatten(1)
    p = items.flatten(1)
    cos = (v @ p.t()) / (v.norm(dim=1, keepdim=True) * p.norm(dim=1)).clamp_min(1e-12)
    return U, V, cos


def differentiable_curves(F, K, cues, items, steps: int, record_every: int,
                          stencil: str = "nine_point", decay=None):
    """Similarity curves (T, B, P) of a replay that gradients flow through (reference
    physics; cosine without the empty-field rule), checkpointed per record."""
    from torch.utils.checkpoint import checkpoint

    from substrate import DECAY
    decay = DECAY if decay is None else decay
    U, V = torch.ones_like(cues), cues
    out = []
    for _ in range(int(steps) // int(record_every)):
        U, V, cos = checkpoint(_segment_cosines, U, V, F, K, items, int(record_every),
                               stencil, decay, use_reentrant=False)
        out.append(cos)
    return torch.stack(out)


def learn_fields(items, cue_fn, steps: int, record_every: int, iters: int,
                 lr: float = 0.1, F_range=(0.01, 0.08), K_range=(0.0, 0.08), init=None,
                 targets=None, log=None, dtype=torch.float32):
    """Per-cell static F, K (H, W) that make the replay show the items in order.

    items: (P, H, W); cue_fn(iteration) -> (B, H, W) fresh cues of the first item;
    the loss is sequence_loss on differentiable_curves against `targets` (default equal
    windows in item order). Fields are bounded by a sigmoid in F_range, K_range, start
    at init (F, K) (default F0, K0). Adam on the logits. Returns (F, K, loss history)."""
    from models.adam import adam_state, adam_step

    P, H, W = items.shape
    T = int(steps) // int(record_every)
    targets = window_targets(T, P) if targets is None else targets
    F_init, K_init = (F0, K0) if init is None else init

    def logit(x, lo, hi):
        x = torch.as_tensor(x, dtype=dtype).expand(H, W)
        return torch.logit(((x - lo) / (hi - lo)).clamp(1e-3, 1 - 1e-3))

    aF = logit(F_init, *F_range).clone().requires_grad_(True)
    aK = logit(K_init, *K_range).clone().requires_grad_(True)
    moments, history = adam_state([aF, aK]), []
    for it in range(int(iters)):
        F = F_range[0] + (F_range[1] - F_range[0]) * torch.sigmoid(aF)
        K = K_range[0] + (K_range[1] - K_range[0]) * torch.sigmoid(aK)
        cues = cue_fn(it).to(dtype)
        curves = differentiable_curves(F, K, cues, items.to(dtype), steps, record_every)
        loss = sequence_loss(curves, targets)
        if not torch.isfinite(loss):
            lr *= 0.5
            continue
        grads = torch.autograd.grad(loss, [aF, aK])
        adam_step([aF, aK], grads, moments, it + 1, lr)
        history.append(loss.item())
        if log:
            log(it, history[-1], curves.detach())
    with torch.no_grad():
        F = F_range[0] + (F_range[1] - F_range[0]) * torch.sigmoid(aF)
        K = K_range[0] + (K_range[1] - K_range[0]) * torch.sigmoid(aK)
    return F.float(), K.float(), history


MAX_FRAMES = 300          # frames kept per filmed run (the peak frames are picked from these)


class SequenceMedia:
    """A sequence study's media on one Study: times and channel widths given at 64 x 64
    and scaled to the study's grid, the rule's uniform background, the painted and the
    stored (depth-coded) layouts, the protocol cues, and the filmed replay.

    fill, hold: steps at 64 x 64 before the schedule kills and per item; channel_width:
    cells at 64 x 64; fan: channels from each item to the next; train_steps: storage
    steps per item; cue_threshold: cue cells at or below it are zeroed (0: off)."""

    def __init__(self, study, seeds, *, fill: int, hold: int, channel_width: float,
                 fan: int, train_steps: int, cue_threshold: float = 0.0):
        self.study, self.seeds = study, seeds
        self.fan, self.train_steps, self.cue_threshold = fan, train_steps, cue_threshold
        p = study.protocol
        self.scale = p.grid / 64
        self.fill = max(1, round(fill * self.scale))
        self.hold = max(1, round(hold * self.scale))
        self.width = channel_width * self.scale
        bg = study.rule.background(p.f0, p.k0)
        if any(isinstance(x, torch.Tensor) and x.dim() > 0 for x in bg):
            raise ValueError(f"--rule {p.rule}: painted layouts need a uniform background")
        self.background = tuple(float(x) for x in bg)

    def painted(self, masks, setpoints, channels):
        """Per-seed painted (F, K): masks (S, P, H, W), channels (S, P - 1, H, W)."""
        Fb, Kb = self.background
        fields = [layout_fields(m, setpoints, c, setpoints[1:], Fb, Kb)
                  for m, c in zip(masks, channels)]
        dev = dict(device=self.study.device, dtype=self.study.dtype)
        return (torch.stack([f for f, _ in fields]).to(**dev),
                torch.stack([k for _, k in fields]).to(**dev))

    def stored_depth(self, items, setpoints, channels, first_index):
        return store_sequence(self.study, items, self.seeds, setpoints, self.train_steps,
                              channels=channels, channel_setpoints=setpoints[1:],
                              first_index=first_index, F=self.background[0],
                              K=self.background[1])

    def unscarred(self):
        return self.study.default_fields(len(self.seeds))

    def channels(self, masks):
        return torch.stack([chain_channels(m, self.width, self.fan) for m in masks])

    def cues(self, items, first_index):
        """(S, C, H, W) protocol cues of items (S, C, H, W) plus noise only (last)."""
        p, H = self.study.protocol, items.shape[-1]
        cued = self.study.cues(items, self.seeds, p.multi_cue_strength, "cue", first_index)
        noise = self.study.cues(torch.zeros(1, H, H), self.seeds, 0.0, *NOISE["phase2_no_cue"])
        cues = torch.cat([cued, noise], 1)
        theta = self.cue_threshold
        return torch.where(cues > theta, cues, torch.zeros_like(cues)) if theta > 0 else cues

    def replay(self, F, K, cues, items, steps, schedule, outside, film=True):
        p = self.study.protocol
        every = p.record_every
        records = steps // every + 1
        frame_every = every * max(1, math.ceil(records / MAX_FRAMES)) if film else None
        return replay(F, K, cues, items, steps, every, schedule=schedule,
                      substrate=p.substrate(), device=self.study.device,
                      dtype=self.study.dtype, frame_every=frame_every,
                      frame_members=[(0, 0)] if film else None, outside=outside)


def peak_frames(r, summary):
    """V of seed 0, first cue, at each item's peak: ([(H, W)], [step]) (nearest frame).
    r: a filmed replay's result; summary: its read-out with "peak_time" (S, P)."""
    steps = torch.tensor(r["frame_steps"], dtype=torch.float64)
    out, when = [], []
    for t in summary["peak_time"][0].tolist():
        i = 0 if t != t else int((steps - t).abs().argmin())   # never peaks: step 0
        out.append(r["frames"][i, 0])
        when.append(None if t != t else int(steps[i]))
    return out, when
