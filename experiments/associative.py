"""Can a scar rule make the medium an associative memory? Every storage rule, one protocol.

Conditions (--rules; --rule NAME runs one):
  match_map           the published rule on the reference medium (F0, K0)
  graded              graded, soft-bounded scars (scarring.py, family 1)
  channel             excitable channels in a dead background (family 2)
  surround            channels with an inhibitory moat (family 3)
  surround_inhibited  surround, recalled with global inhibition of the feed
                      (scarring.SurroundInhibitedScar with its scarring.GlobalInhibition)
  junction            surround, and cells an earlier pattern holds become junctions that
                      belong to neither pattern (scarring.JunctionScar; idea 5)
  learned             per-cell F, K learned by gradient through the substrate (family 4),
                      at --learn-grid, at the match-map rule's total scar size there (the
                      size penalty is swept until it matches); compared with match_map on
                      the same grid

The imprint battery, per condition, on the protocol's three patterns (A = square_spots
offset by -1/4 of the grid, B = ring, C = line; stored in that order, --multi-train-steps
each, the main study's training starts): full cues (--multi-cue-strength), half and quarter
cues (A: its spots, B: arcs, C: segments, the part drawn per seed), arcs of the ring and
segments of the line (--arc-fractions), half cues of B and C at other strengths
(--half-strengths), uniform V (--uniform-levels, no noise) and pure noise
(--noise-levels) amplitude scans, and never-stored patterns of A's family (four discs)
placed per seed with 25-50% of their area on the stored patterns (on) or none within 4
cells (off). Every recall runs to --settle-steps (or until every recall has settled, after
--settle-min) and is read at the protocol's recall length (--multi-recall-steps) and
settled. Capacity: k = --ks patterns of a held-out family (random blobs, four discs of
radius 18 reference cells each, drawn per seed), stored in turn; full and half cues of up
to --capacity-cued of them, beside the modern Hopfield network (models/hopfield.py, as in
experiments/baselines.py) on the same cues.

Read-outs (docs/findings/associative.md):
completion, selectivity, rejection, settled, each by cosine and by IoU (masks at 0.3),
beside the cue's own score at step 0; mean and 95% percentile-bootstrap interval over
seeds (a condition identical in every seed is reported as n = 1), Wilson intervals for
rates. Writes associative.json, associative_rows.png (per condition: a half cue of the
ring, its recall and the scar map), associative_capacity.png and associative_targets.png.

    python -m experiments.associative --quick
    python -m experiments.associative                    # every condition, 8 seeds
    python -m experiments.associative --rules surround surround_inhibited --seeds 8
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, np, metrics, patterns, scarring = cli.lazy_modules(
    "torch", "numpy", "metrics", "patterns", "scarring")
memory, hopfield, battery = cli.lazy_modules("memory", "models.hopfield", "models.associative")

CONDITIONS = ("match_map", "graded", "channel", "surround", "surround_inhibited", "junction",
              "learned")
CHUNK = 500                             # steps between settle checks and curve records
BLOB_COUNT = 4                          # held-out family: discs per pattern
SCARRED_BY = 1e-6                       # a cell is scarred once F or K moved by more than this
TARGETS = {"completion": (">=", 0.8), "selectivity": (">=", 0.5), "uniform": ("<=", 0.3),
           "rejection": ("<=", 0.3), "stored": (">=", 0.9), "capacity": (">=", 8)}


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "associative"
    saved_state_starts: ClassVar[str] = (
        "every store starts from its U, V on its condition's own unscarred F, K (not the "
        "saved F, K: each rule stores into its own medium); on --learn-grid, the learned "
        "condition's match-map reference only if that equals --grid")
    rule: Optional[str] = arg(None, "run this one condition only (default: every condition "
                              "in --rules)", choices=CONDITIONS)
    rules: tuple[str, ...] = arg(CONDITIONS, "conditions to run, in this order",
                                 choices=CONDITIONS)
    settle_steps: int = arg(6000, "longest recall in steps; the settled read-out is taken "
                                  "here, or earlier once every recall has settled", lo=1)
    settle_min: int = arg(3000, "no settled read-out before this step", lo=1)
    settle_tol: float = arg(1e-3, "settled: mean |change of V| per cell per 100 steps below "
                                  "this, for every recall of the batch", lo=0.0, lo_open=True)
    uniform_levels: tuple[float, ...] = arg((0.03, 0.06, 0.12, 0.24), "uniform V starts (no "
                                            "noise): the amplitude scan", lo=0.0, hi=1.0)
    noise_levels: tuple[float, ...] = arg((0.05, 0.1, 0.2, 0.3), "pure-noise starts: noise "
                                          "standard deviations", lo=0.0, lo_open=True, hi=1.0)
    arc_fractions: tuple[float, ...] = arg((0.1, 0.25, 0.5, 0.75, 0.9), "kept fractions of "
                                           "the ring's arcs and the line's segments (0.25 "
                                           "and 0.5 are always run)", lo=0.0, lo_open=True,
                                           hi=1.0, hi_open=True)
    half_strengths: tuple[float, ...] = arg((0.1, 0.4), "other strengths of the half cues "
                                            "of B and C", lo=0.0, lo_open=True, hi=1.0)
    ks: tuple[int, ...] = arg((1, 3, 8, 16), "capacity: numbers of stored held-out "
                              "patterns, increasing", lo=1, hi=64)
    capacity_steps: int = arg(3000, "capacity: recall steps (settled read-out)", lo=1)
    capacity_cued: int = arg(4, "capacity: stored patterns cued at each k, at most", lo=1)
    blob_count: int = arg(BLOB_COUNT, "capacity: discs per held-out pattern (1: every "
                          "pattern is one connected disc)", lo=1, hi=16)
    beta_per_sqrt_n: float = arg(1.0, "modern Hopfield beta * sqrt(N)", lo=0.0, lo_open=True)
    learn_grid: int = arg(64, "learned scars: grid (backprop through 256^2 does not fit the "
                              "budget)", lo=16, hi=512)
    learn_iters: int = arg(25, "learned scars: gradient iterations", lo=1)
    learn_steps: int = arg(150, "learned scars: recall steps trained through (full BPTT)", lo=1)
    learn_lams: tuple[float, ...] = arg((2e-3, 4e-3, 8e-3, 1.6e-2), "learned scars: size "
                                        "penalties swept to match the match-map scar size",
                                        lo=0.0)
    learn_sweep_seeds: int = arg(1, "learned scars: seeds of the penalty sweep", lo=1)
    learn_lr: float = arg(0.3, "learned scars: Adam learning rate on the logits", lo=0.0,
                          lo_open=True)
    cache: Optional[str] = arg(None, "folder of finished conditions: each condition is saved "
                               "there when done and taken from there by a later run with the "
                               "same settings (resume a long run, or split it over processes)")

    def check(self) -> None:
        if self.rule is not None:
            self.rules = (self.rule,)
        if len(set(self.rules)) != len(self.rules):
            raise ValueError(f"--rules {' '.join(self.rules)}: a condition is repeated")
        if list(self.ks) != sorted(set(self.ks)):
            raise ValueError(f"--ks {' '.join(map(str, self.ks))}: must increase strictly")
        if not self.multi_recall_steps <= self.settle_min <= self.settle_steps:
            raise ValueError(f"need --multi-recall-steps ({self.multi_recall_steps}) <= "
                             f"--settle-min ({self.settle_min}) <= --settle-steps "
                             f"({self.settle_steps})")
        if self.capacity_steps < self.multi_recall_steps:
            raise ValueError(f"--capacity-steps {self.capacity_steps}: must be >= "
                             f"--multi-recall-steps ({self.multi_recall_steps})")


QUICK = dict(seeds=2, grid=32, multi_train_steps=30, multi_recall_steps=20, settle_steps=60,
             settle_min=40, uniform_levels=(0.12,), noise_levels=(0.2,), arc_fractions=(0.5,),
             half_strengths=(0.4,), ks=(1, 3), capacity_steps=40, capacity_cued=2,
             learn_grid=32, learn_iters=2, learn_steps=10, learn_lams=(1e-3, 1e-2),
             learn_sweep_seeds=1)


# ---- conditions -----------------------------------------------------------------------------

@dataclass
class Condition:
    """One row of the study: a storage rule (None: learned fields), a recall option."""
    name: str
    rule: object
    inhibition: object = None
    grid: int = 256

    def background(self, p):
        return (p.f0, p.k0) if self.rule is None else self.rule.background(p.f0, p.k0)


def make_condition(name: str, protocol, grid: int) -> Condition:
    base = scarring.storage_rule(dataclasses.replace(protocol, rule="match_map"))
    if name == "learned":
        return Condition(name, None, grid=grid)
    rule = (base if name == "match_map" else scarring.JunctionScar() if name == "junction"
            else scarring.make_rule(name))
    return Condition(name, rule, rule.recall_inhibition(), grid=grid)


def store(study, cond, targets, seeds, snapshots=(), progress=None) -> dict:
    """Store targets in turn with the condition's rule (its own `prepare` step if any)."""
    steps = study.protocol.multi_train_steps
    first = NOISE["phase3_starts"][1]
    return study.store(targets, seeds, steps, rule=cond.rule, snapshots=snapshots,
                       first_index=first, progress=progress)


# ---- recall, read at the protocol's length and settled ----------------------------------------

def recall(study, F, K, cues, pats, max_steps: int, read_steps: int, min_steps: int,
           tol: float, inhibition=None, progress=None) -> dict:
    """Run every cue (S, C, H, W) on per-seed fields F, K (S, H, W) for up to max_steps
    steps on the engine (memory.recall); a recall stops (memory.Settle) once it changes
    by less than tol per cell per 100 steps over a window of CHUNK steps, from min_steps
    on. Returns {"read": V at read_steps, "final": V when it stopped, "steps": steps run,
    "curves": {"steps", "cosine": (T, S, C, P)}, "change": (T, S, C) per 100 steps at
    each check (nan once stopped), "settled_at": (S, C) step it stopped at (nan: never)}."""
    S, C, H, W = cues.shape
    dev = dict(device=study.device, dtype=study.dtype)
    pats = torch.as_tensor(pats).to(**dev)
    pats = (pats.expand(S, *pats.shape) if pats.dim() == 3 else pats).repeat_interleave(C, 0)
    window = min(CHUNK, min_steps)
    trackers = [memory.Curves(pats, window),
                memory.Frames(None, max_steps, every=0, at={read_steps}),
                memory.Settle(tol * window / 100.0, window, max(min_steps, read_steps))]
    fields = {"F": F.to(**dev).repeat_interleave(C, 0), "K": K.to(**dev).repeat_interleave(C, 0)}
    medium = dataclasses.replace(study.medium, inhibition=inhibition)
    res = memory.recall(medium, fields, cues.to(**dev).reshape(S * C, H, W), max_steps,
                        study.settings(progress), trackers)
    settled_at = res["settled_at"].view(S, C)
    steps = max_steps if settled_at.isnan().any() else int(settled_at.max())
    return {"read": res["frames"][0].view(S, C, H, W), "final": res["V"].view(S, C, H, W).cpu(),
            "steps": steps, "change": (res["change"] * 100.0 / window).view(-1, S, C),
            "curves": {"steps": res["steps"], "cosine": res["similarity"].double()
                       .view(-1, S, C, pats.shape[1])}, "settled_at": settled_at}


# ---- the imprint battery's cues -----------------------------------------------------------------

def abc_battery(study, pats, seeds, args) -> battery.Battery:
    """Every cue of the imprint battery for the three stored patterns pats (3, H, W)."""
    p, grid = study.protocol, pats.shape[-1]
    S, noise = len(seeds), p.cue_noise
    b = battery.Battery(seeds, grid)
    idx = iter(range(400, 10_000))              # noise draws of the cues beyond phase 3's
    role, first = NOISE["phase3_cues"]
    for i, n in enumerate(battery.NAMES):              # the phase-3 cues themselves (same draws)
        b.add(f"full {n}", study.cues(pats[i:i + 1], seeds, p.multi_cue_strength, role,
                                      first + i)[:, 0], torch.ones(S, grid, grid, dtype=torch.bool), i)
    fractions = sorted(set(args.arc_fractions) | {0.25, 0.5})
    for i, (n, kind) in enumerate(zip(battery.NAMES, battery.PART_KIND)):
        mask = pats[i] > battery.THRESHOLD
        for f in ([0.25, 0.5] if kind == "components" else fractions):
            keep = battery.part_masks(mask, kind, f, seeds, salt=i)
            b.add(f"part {n} {f:g}", patterns.masked_cue(
                pats[i], keep, p.multi_cue_strength, noise,
                scarring.noise_seeds(seeds, "cue", next(idx))), keep, i)
        if kind != "components":
            keep = battery.part_masks(mask, kind, 0.5, seeds, salt=i)
            for s in args.half_strengths:
                b.add(f"part {n} 0.5 s={s:g}", patterns.masked_cue(
                    pats[i], keep, s, noise, scarring.noise_seeds(seeds, "cue", next(idx))),
                    keep, i)
    for level in args.uniform_levels:
        b.add(f"uniform {level:g}", patterns.uniform_cue(grid, grid, level, 0.0, seeds))
    for j, sd in enumerate(args.noise_levels):
        b.add(f"noise {sd:g}", patterns.uniform_cue(grid, grid, 0.0, sd, scarring.noise_seeds(
            seeds, "other", 400 + j)))
    union = (pats > battery.THRESHOLD).any(0)
    for where in ("on", "off"):
        q = battery.foreign_patterns(union, grid, seeds, where == "on")
        b.foreign[where] = q
        b.add(f"never-stored {where}", patterns.make_cue(
            q, p.multi_cue_strength, noise, scarring.noise_seeds(seeds, "cue", next(idx))),
            q > battery.THRESHOLD)
    return b


# ---- read-outs ----------------------------------------------------------------------------------

def _hi(s):   # the upper end of an interval (the mean when n = 1)
    return s["mean"] if s["ci95_high"] is None else s["ci95_high"]


def _lo(s):
    return s["mean"] if s["ci95_low"] is None else s["ci95_low"]


def judge(settled: dict) -> dict:
    """The issue's targets on the settled read-outs (cosine), each on the far end of its
    interval: completion and selectivity of the half cues and stored-cue recall per
    pattern (lower end), uniform V at every level and never-stored cues (upper end)."""
    def ok(value, target):
        op, bound = TARGETS[target]
        return value is not None and (value >= bound if op == ">=" else value <= bound)

    parts = settled["parts"]
    verdict = {
        "completion": {n: ok(_lo(parts[f"{n} 0.5"]["completion"]["cosine"]), "completion")
                       for n in battery.NAMES},
        "selectivity": {n: ok(_lo(settled["selectivity_half"][n]["cosine"]), "selectivity")
                        for n in battery.NAMES},
        "stored": {n: ok(_lo(settled["stored"][n]["cosine"]), "stored") for n in battery.NAMES},
        "uniform": {lvl: ok(_hi(v["largest"]["cosine"]), "uniform")
                    for lvl, v in settled["uniform"].items()},
        "rejection": {w: ok(_hi(v["largest"]["cosine"]), "rejection")
                      for w, v in settled["never_stored"].items()},
    }
    flat = [x for group in verdict.values() for x in group.values()]
    verdict.update(passed=sum(flat), of=len(flat), all=all(flat))
    return verdict


# ---- one condition on the three reference patterns ------------------------------------------------

def run_abc(study, cond: Condition, pats, seeds, args, fields=None, tag="") -> dict:
    """Store A, B, C (or take learned fields), run the battery, read out at the protocol's
    recall length and settled. Returns the JSON entry and the fields for the figures."""
    p, t0 = study.protocol, time.perf_counter()
    S = len(seeds)
    if fields is None:
        stored = store(study, cond, pats, seeds, progress=f"{tag}store")
        F, K = stored["F"], stored["K"]
        training = {"train_similarity": battery.summarize_tree(dict(zip(battery.NAMES, stored["train_similarity"]))),
                    "scar_size_after": battery.summarize_tree(dict(zip(battery.NAMES, stored["scar_strength"])))}
    else:
        F, K = fields
        training = {}
    background = cond.background(p)
    scarred = memory.scarred_cells({"F": F, "K": K}, dict(zip("FK", background)),
                                   tolerance=SCARRED_BY).cpu()
    b = abc_battery(study, pats, seeds, args)
    cues = b.stacked()
    res = recall(study, F, K, cues, pats, args.settle_steps, p.multi_recall_steps,
                 args.settle_min, args.settle_tol, cond.inhibition, progress=f"{tag}recall")
    tree = {when: battery.summarize_tree(battery.abc_readouts(b, V, pats, scarred))
            for when, V in (("step0", cues.cpu()), ("read", res["read"]),
                            ("settled", res["final"]))}
    entry = {"grid": pats.shape[-1], "n_seeds": S, "rule": _rule_dict(cond),
             "cues": b.names, **training,
             "scar_size": battery.stat(scarring.scar_strength(F, K, *background).cpu()),
             "scar_map": battery.percolation(scarred), "settle": battery.settle_summary(res), **tree,
             "verdict": judge(tree["settled"]), "curves": battery.mean_curves(b, res),
             "wall_s": time.perf_counter() - t0}
    figure = {"F": F[0].cpu(), "F_bg": background[0], "half_B_keep": b.keep[b.index("part B 0.5")][0],
              "cue": cues[0, b.index("part B 0.5")].cpu(),
              "read": res["read"][0, b.index("part B 0.5")],
              "settled": res["final"][0, b.index("part B 0.5")],
              "uniform": res["final"][0, b.index(f"uniform {max(args.uniform_levels):g}")]
              if args.uniform_levels else None}
    return entry, figure


def _rule_dict(cond: Condition) -> dict:
    rule = {"rule": "learned"} if cond.rule is None else cond.rule.as_dict()
    if cond.inhibition is not None:
        rule["global_inhibition"] = dataclasses.asdict(cond.inhibition)
    return rule


def hopfield_abc(study, pats, seeds, args) -> dict:
    """The modern Hopfield network on the same battery (its one-shot output is both the
    read and the settled state)."""
    b = abc_battery(study, pats, seeds, args)
    cues = b.stacked()
    V = hopfield.modern_recall_images(pats.expand(len(seeds), *pats.shape).cpu(), cues.cpu(),
                                      args.beta_per_sqrt_n)
    scarred = torch.zeros(len(seeds), *pats.shape[-2:], dtype=torch.bool)
    tree = {"step0": battery.summarize_tree(battery.abc_readouts(b, cues.cpu(), pats, scarred)),
            "settled": battery.summarize_tree(battery.abc_readouts(b, V, pats, scarred))}
    return {**tree, "verdict": judge(tree["settled"])}


# ---- capacity on a held-out family ---------------------------------------------------------------

def run_capacity(study, cond: Condition, seeds, args, tag="") -> dict:
    """Store the held-out family in turn (fields kept after each k), recall full and half
    cues of up to --capacity-cued stored patterns and a uniform V at every k."""
    p = study.protocol
    fam = battery.held_out(args.ks[-1], p.grid, seeds, args.blob_count).to(study.device, study.dtype)
    stored = store(study, cond, fam, seeds, snapshots=args.ks, progress=f"{tag}store family")
    background = cond.background(p)
    by_k = {}
    for k in args.ks:
        F, K = stored["snapshots"][k]
        pats, cued = battery.capacity_patterns(fam, k, args.capacity_cued)
        cues, keeps = battery.capacity_cues(study, pats, len(cued), seeds)
        res = recall(study, F, K, cues, pats, args.capacity_steps, p.multi_recall_steps,
                     args.capacity_steps, args.settle_tol, cond.inhibition,
                     progress=f"{tag}recall k={k}")
        pc = pats.cpu()
        scarred = memory.scarred_cells({"F": F, "K": K}, dict(zip("FK", background)),
                                       tolerance=SCARRED_BY).cpu()
        by_k[str(k)] = {"cued": cued, "scar_map": battery.percolation(scarred),
                        "settle": battery.settle_summary(res),
                        **{when: battery.summarize_tree(battery.capacity_readouts(V, pc, len(cued), keeps))
                           for when, V in (("step0", cues.cpu()), ("settled", res["final"]))}}
    return {"ks": list(args.ks), "by_k": by_k, "capacity": battery.capacity_of(args.ks, by_k)}


def hopfield_capacity(study, seeds, args) -> dict:
    """The modern Hopfield network on the capacity study's patterns and cues."""
    fam = battery.held_out(args.ks[-1], study.protocol.grid, seeds, args.blob_count)
    by_k = {}
    for k in args.ks:
        pats, cued = battery.capacity_patterns(fam, k, args.capacity_cued)
        cues, keeps = battery.capacity_cues(study, pats.to(study.device, study.dtype), len(cued), seeds)
        V = hopfield.modern_recall_images(pats.cpu(), cues.cpu(), args.beta_per_sqrt_n)
        by_k[str(k)] = {"cued": cued, "settled": battery.summarize_tree(
            battery.capacity_readouts(V, pats, len(cued), keeps))}
    return {"ks": list(args.ks), "by_k": by_k, "capacity": battery.capacity_of(args.ks, by_k)}


# ---- family 4: scars learned by gradient ---------------------------------------------------------

def learned_condition(study, pats, seeds, args) -> tuple:
    """Sweep the size penalty on the first --learn-sweep-seeds seeds until the learned
    scar is the size of the match-map scar on the same grid, then learn every seed's
    fields with the penalty whose size came closest. Returns (learned fields, record,
    the match-map fields on the same grid)."""
    mm = make_condition("match_map", study.protocol, pats.shape[-1])
    stored = store(study, mm, pats, seeds, progress="learned: match-map store")
    goal = float(scarring.scar_strength(stored["F"], stored["K"], *mm.background(study.protocol)).mean())
    sweep_seeds = seeds[:args.learn_sweep_seeds]
    sweep = []
    for lam in args.learn_lams:
        F, K, hist = battery.learn_fields(study, pats, sweep_seeds, lam, args, "learned sweep: ")
        size = float(scarring.scar_strength(F, K, study.protocol.f0, study.protocol.k0).mean())
        sweep.append({"lambda": lam, "scar_size": size, "final_loss": hist[-1]["loss"]})
    best = min(sweep, key=lambda r: abs(math.log(max(r["scar_size"], 1e-9) / goal)))
    F, K, hist = battery.learn_fields(study, pats, seeds, best["lambda"], args, "learned: ")
    return (F, K), {"match_map_scar_size": goal, "sweep": sweep, "lambda": best["lambda"],
                    "sweep_seeds": list(sweep_seeds), "history": hist,
                    "iterations": args.learn_iters, "recall_steps_trained": args.learn_steps,
                    "late_step": battery.LEARN_LATE, "late_gradient_steps": battery.LEARN_LATE_GRAD}, \
        (stored["F"], stored["K"])


# ---- a connected shape stored alone --------------------------------------------------------------

def connected_alone(study, seeds, args) -> dict:
    """The issue's planning measurement, recomputed: the ring, and separately the line,
    stored alone with the match-map rule (--train-steps scarred steps, the phase-1
    training start), cued with the whole shape, half of it and a quarter of it at the
    phase-2 cue strength, recalled to --settle-steps on the scar and on the unscarred
    medium. Cosine to the whole shape at every record, and completion at the end."""
    p, grid = study.protocol, study.protocol.grid
    pats = torch.stack(list(patterns.phase3_targets(grid).values())).to(study.device, study.dtype)
    S, out = len(seeds), {}
    for name, i in (("ring", 1), ("line", 2)):
        pat = pats[i:i + 1]
        stored = study.store(pat, seeds, p.train_steps, first_index=NOISE["phase1_start"][1],
                             progress=f"{name} alone: store")
        keeps = [torch.ones(S, grid, grid, dtype=torch.bool)] + [
            battery.part_masks(pat[0].cpu() > battery.THRESHOLD, battery.PART_KIND[i], f, seeds, salt=i) for f in (0.5, 0.25)]
        cues = torch.stack([patterns.masked_cue(pat[0], k.to(pat.device), p.cue_strength, p.cue_noise,
                                                scarring.noise_seeds(seeds, *NOISE["phase2_cue"]))
                            for k in keeps], 1)
        F0, K0 = study.default_fields(S)
        res = recall(study, torch.cat([stored["F"], F0]), torch.cat([stored["K"], K0]),
                     cues.repeat(2, 1, 1, 1), pat, args.settle_steps,
                     min(p.recall_steps, args.settle_steps), args.settle_steps, args.settle_tol,
                     progress=f"{name} alone: recall")
        V, cos = res["final"], res["curves"]["cosine"][..., 0]          # (T, 2S, 3)
        entry = {"steps": res["curves"]["steps"]}
        for arm, rows in (("scarred", slice(0, S)), ("unscarred", slice(S, 2 * S))):
            entry[arm] = {cue: {"cosine": [battery.stat(c) for c in cos[:, rows, j]],
                                "completion": battery.summarize_tree(battery.completion_pair(
                                    V[rows, j], V[rows, 0], pat[0].cpu(), keeps[j]))
                                if j else None}
                          for j, cue in enumerate(("full", "half", "quarter"))}
        out[name] = entry
    return out


# ---- the study ------------------------------------------------------------------------------------

def run(args, seeds, device) -> tuple:
    """Every condition of --rules; the modern Hopfield references. (results, figures)."""
    protocol = dataclasses.replace(protocol_of(args), rule="match_map")
    study = scarring.Study(protocol, device, initial=args.saved_state(), saved_fields=False)
    pats = torch.stack(list(patterns.phase3_targets(args.grid).values())).to(device, study.dtype)
    conditions, figures = {}, {}
    for name in args.rules:
        cached = load_cached(args, name, seeds)
        if cached is not None:
            conditions[name], figures[name] = cached
        elif name == "learned":
            conditions[name], figures[name] = run_learned(protocol, device, seeds, args)
        else:
            cond = make_condition(name, protocol, args.grid)
            conditions[name], figures[name] = run_abc(study, cond, pats, seeds, args,
                                                      tag=f"{name}: ")
            conditions[name]["capacity"] = run_capacity(study, cond, seeds, args, f"{name}: ")
        if cached is None:
            save_cached(args, name, seeds, conditions[name], figures[name])
        print_condition(name, conditions[name], flush=True)
    references = {"connected_shape_alone": connected_alone(study, seeds, args),
                  "modern_hopfield": {"abc": hopfield_abc(study, pats, seeds, args),
                                      "capacity": hopfield_capacity(study, seeds, args),
                                      "beta_per_sqrt_n": args.beta_per_sqrt_n}}
    return {"conditions": conditions, "references": references,
            "verdict": overall_verdict(conditions)}, figures


NOT_SETTINGS = ("rule", "rules", "out", "quiet", "threads", "device", "cache")
LEARN_ONLY = ("learn_grid", "learn_iters", "learn_steps", "learn_lams", "learn_sweep_seeds",
              "learn_lr")
CAPACITY_ONLY = ("ks", "capacity_steps", "capacity_cued", "beta_per_sqrt_n", "blob_count")


def _cache_entry(args, name, seeds):
    """The cache entry of condition `name` under these settings (None: no --cache)."""
    if args.cache is None:
        return None
    from common import cache, state

    skip = NOT_SETTINGS + (CAPACITY_ONLY if name == "learned" else LEARN_ONLY)
    settings = {k: v for k, v in cli.config_of(args).items() if k not in skip}
    if args.init_from is not None:   # keyed on the saved state's content, not its path
        settings["init_from"] = state.file_digest(args.init_from)
    return cache.Entry(args.cache, name, {"seeds": list(seeds), "settings": settings})


def load_cached(args, name, seeds):
    """(entry, figure) of a finished condition, or None; an entry that does not read as
    a condition (print_condition fails on it) is recomputed."""
    import contextlib
    import io

    entry = _cache_entry(args, name, seeds)

    def check(value):
        with contextlib.redirect_stdout(io.StringIO()):
            print_condition(name, value[0])

    return None if entry is None else entry.load(check)


def save_cached(args, name, seeds, entry, figure) -> None:
    cached = _cache_entry(args, name, seeds)
    if cached is not None:
        cached.save((entry, figure))


def run_learned(protocol, device, seeds, args) -> tuple:
    """Family 4 on its own grid, beside the match-map rule on that grid."""
    initial = args.saved_state() if args.learn_grid == args.grid else None
    small = scarring.Study(dataclasses.replace(protocol, grid=args.learn_grid), device,
                           initial=initial, saved_fields=False)
    pats = torch.stack(list(patterns.phase3_targets(args.learn_grid).values())).to(device, small.dtype)
    fields, record, mm_fields = learned_condition(small, pats, seeds, args)
    cond = Condition("learned", None, grid=args.learn_grid)
    entry, figure = run_abc(small, cond, pats, seeds, args, fields=fields, tag="learned: ")
    mm = make_condition("match_map", small.protocol, args.learn_grid)
    entry["match_map_same_grid"], _ = run_abc(small, mm, pats, seeds, args, fields=mm_fields,
                                              tag="learned: match-map: ")
    entry["learning"] = record
    return entry, figure


def overall_verdict(conditions) -> dict:
    ranking = sorted(((n, c["verdict"]["passed"], c["verdict"]["of"]) for n, c in conditions.items()),
                     key=lambda r: -r[1])
    return {"memory": [n for n, c in conditions.items() if c["verdict"]["all"]],
            "ranking": [{"condition": n, "targets_passed": p, "of": o} for n, p, o in ranking],
            "closest": ranking[0][0] if ranking else None,
            "capacity": {n: c["capacity"]["capacity"] for n, c in conditions.items()
                         if "capacity" in c}}


def print_condition(name, e, flush=False) -> None:
    s = e["settled"]
    comp = " ".join(f"{n} {stats.format_stat(s['parts'][f'{n} 0.5']['completion']['cosine'])}" for n in battery.NAMES)
    sel = " ".join(f"{n} {stats.format_stat(s['selectivity_half'][n]['cosine'])}" for n in battery.NAMES)
    sto = " ".join(f"{n} {stats.format_stat(s['stored'][n]['cosine'])}" for n in battery.NAMES)
    uni = " ".join(f"{lvl}: {stats.format_stat(v['largest']['cosine'])}" for lvl, v in s["uniform"].items())
    rej = " ".join(f"{w}: {stats.format_stat(v['largest']['cosine'])}" for w, v in s["never_stored"].items())
    v = e["verdict"]
    print(f"  {name} ({e['grid']}^2, settled after {e['settle']['steps_run']} steps, "
          f"{v['passed']}/{v['of']} targets): half-cue completion {comp}; selectivity {sel}; "
          f"stored {sto}; uniform V largest {uni}; never-stored largest {rej}"
          + (f"; capacity {e['capacity']['capacity']}" if "capacity" in e else ""), flush=flush)


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    cli.check_out_dir(args.out_dir())
    t0 = time.perf_counter()
    body, figures = run(args, seeds, device)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall),
              "definitions": DEFINITIONS, "targets": {k: list(v) for k, v in TARGETS.items()},
              **body}
    result["config"].update(rules=list(args.rules), chunk=CHUNK, threshold=battery.THRESHOLD,
                            foreign_on_fraction=list(battery.FOREIGN_ON), foreign_moat=battery.FOREIGN_MOAT,
                            held_out_family={"pattern": "blobs", "count": args.blob_count,
                                             "radius": battery.BLOB_RADIUS},
                            learned={"uniform": battery.LEARN_UNIFORM, "late_step": battery.LEARN_LATE,
                                     "late_gradient_steps": battery.LEARN_LATE_GRAD})
    from common import figures as plots   # plotting at the edge, imported only here
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plots.associative_rows(figures, body["conditions"], out / "associative_rows.png")
        plots.associative_capacity(body, out / "associative_capacity.png", len(seeds))
        plots.associative_targets(body, out / "associative_targets.png", len(seeds),
                                  battery.NAMES)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    for name, entry in body["conditions"].items():
        print_condition(name, entry)
    print(f"  verdict: associative memory: {body['verdict']['memory'] or 'none'}; closest: "
          f"{body['verdict']['closest']}")


DEFINITIONS = {
    "completion": "cosine similarity to P on the cells of P's mask that the cue did not "
                  "contain, divided by the same after recall from the full cue (also by IoU "
                  "of masks at 0.3 on those cells)",
    "selectivity": "with k patterns stored, the recall from pattern i's cue: similarity to "
                   "P_i minus the largest similarity to any other stored P_j",
    "uniform": "recall from a uniform V (no noise): the largest similarity to any stored "
               "pattern",
    "rejection": "recall from a never-stored pattern Q's cue: the largest similarity to any "
                 "stored pattern, and the IoU of the output mask with Q's (amplified)",
    "settled": "read after the recall has run to settle_steps, or earlier (after "
               "settle_min) once every recall of the batch changes by less than settle_tol "
               "per cell per 100 steps; also read at the protocol's recall length",
    "capacity": "the largest k of the unbroken run of k's from the smallest with mean "
                "settled completion >= 0.8 and mean selectivity >= 0.5 (cosine)",
    "intervals": "mean and 95% percentile-bootstrap interval over seeds; n = 1 where every "
                 "seed gave the same value; rates with Wilson intervals",
}


if __name__ == "__main__":
    cli.run_cli(main)
