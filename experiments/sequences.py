"""Sequences: can a scarred medium replay A, then B, then C from a cue of A alone?

Stores ordered sequences of patterns as per-cell F, K fields (models/sequences.py), runs
the medium from a cue and records the similarity of V to every item over time; the
order recovered is the items sorted by the time of their peaks (metrics.sequence_readout).
Three sections (--sections):

  reference  the protocol's A (square_spots, offset), B (ring), C (line) under every
             mechanism tried (CONDITIONS, each with the hypothesis it tests), each medium
             cued with A (the first item), B and C (non-first items) and noise alone;
             controls: the unscarred medium with and without the death schedule.
  random     random blob sequences (--blobs discs per item, drawn per seed) of each of
             --lengths, depth-coded and replayed under the death schedule (stored by the
             rule, stored on the dead background, and painted), cued with the first item,
             the second item and noise; control: the unscarred medium under the schedule.
  hopfield   sequence Hopfield baselines on the same patterns (models/hopfield.py): the
             asymmetric Hebbian network (plain and with a delay) and the modern
             (softmax) sequence variant, cued with binarised cues, at --hopfield-grids.

Read-outs for every condition and cue over the seeds: the exact-order rate (every item
peaks, in order) with its Clopper-Pearson interval, also with every peak >=
--peak-target (the issue's target); Kendall tau between intended and recovered order
(BCa bootstrap interval); each item's peak height and hold time (time at or above
--peak-target; t intervals clipped to the bounds). Curves are drawn with 95% bands.

What the mechanism is (docs/findings/sequences.md): the order is written in the
scars' depths and read out by an external clock (a global K that rises over time and
kills the shallowest lit item first); fronts only carry the cue's ignition into every
item. Times (--fill, --hold, --channel-width) are given at 64 x 64 and scale with the grid.

    python -m experiments.sequences            # default: 8 seeds, 64 x 64, every section
    python -m experiments.sequences --grid 256 --sections reference --multi-train-steps 500 \\
        --conditions depth_schedule_stored depth_schedule_stored_dead unscarred_schedule
    python -m experiments.sequences --quick    # a smoke run
"""
from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch, metrics, patterns, scarring, sq, hopfield = cli.lazy_modules(
    "torch", "metrics", "patterns", "scarring", "models.sequences", "models.hopfield")

# Reference-battery conditions: key -> (name, layout, schedule, hypothesis). layout:
# "stored" (the rule's phase-3 storage), "uniform" (items and channels painted at the
# match-map clamps), "depth" (painted at depth set-points), "depth_stored" (the rule,
# saturating at each item's depth), "none" (the unscarred medium). schedule: None,
# "death" or "death_dead" (the death schedule with the whole medium raised from step 0).
CONDITIONS = {
    "scars_only": ("scars only (stored by the rule)", "stored", None,
                   "the reference geometry already touches (C crosses A's centre spot and "
                   "B): fronts leaving A's scar may carry activity into C, then B"),
    "channels": ("channels (static)", "uniform", None,
                 "thin scarred paths from A to B and from B to C carry the front leaving A "
                 "into B, then C"),
    "channels_schedule": ("channels + death schedule, no depth code", "uniform", "death",
                          "control for the depth code: with every item at one depth the "
                          "rising K should kill them together, so no order is read out"),
    "depth_static": ("depth-coded channels (static)", "depth", None,
                     "A at a K where a lit region holds but cannot be invaded, B and C "
                     "deeper: fronts run only forward, but nothing switches an item off"),
    "depth_schedule_painted": ("depth-coded + death schedule (painted)", "depth", "death",
                               "a rising global K kills the shallowest lit item first, so "
                               "the lit set slides A -> A,B,C -> B,C -> C"),
    "depth_schedule_stored": ("depth-coded + death schedule (stored by the rule)",
                              "depth_stored", "death",
                              "the same, with each item's scar laid down by the storage "
                              "rule saturating at its depth"),
    "depth_schedule_stored_dead": ("depth-coded + death schedule, dead background (stored)",
                                   "depth_stored", "death_dead",
                                   "noise-born spots in the unscarred medium (F0, K0 "
                                   "self-replicates) reach and light B and C; the whole "
                                   "medium raised by --dead-offset from step 0 (set-points "
                                   "stored that much deeper) kills them"),
    "unscarred": ("unscarred (static)", "none", None,
                  "control: the cue alone, no scars"),
    "unscarred_schedule": ("unscarred + death schedule", "none", "death",
                           "control: the clock alone, no scars"),
}
SECTIONS = ("reference", "random", "hopfield")
REFERENCE_CUES = ("cue A", "cue B", "cue C", "noise only")
RANDOM_CUES = ("cue first", "cue second", "noise only")
HOPFIELD_NETS = ("asymmetric", "asymmetric_delay", "modern")
BLOB_SEED_SPAN = 10_000   # blob item i of run seed s is drawn with seed s * span + i


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "sequences"
    saved_state_refusal: ClassVar[str] = (
        "most of its conditions paint F and K directly instead of storing them, so a "
        "saved medium would reach only some")
    grid: int = arg(64, "grid size H = W (times and widths below scale with grid / 64)",
                    lo=16, hi=4096)
    multi_train_steps: int = arg(300, "training steps per item for the conditions stored by "
                                 "the rule (500 at 256 x 256)", lo=1)
    sections: tuple[str, ...] = arg(SECTIONS, "sections to run", choices=SECTIONS)
    conditions: tuple[str, ...] = arg(tuple(CONDITIONS), "reference-battery conditions "
                                      "(see CONDITIONS)", choices=tuple(CONDITIONS))
    lengths: tuple[int, ...] = arg((3, 5, 8), "random sequence lengths", lo=2, hi=12)
    fill: int = arg(800, "steps (at 64 x 64) before the schedule starts to kill: fronts "
                    "carry the cue's ignition into every item", lo=1)
    hold: int = arg(300, "steps (at 64 x 64) during which each item is the shallowest alive",
                    lo=1)
    k_second: float = arg(0.04, "K of B (A, B, C depth code); A sits at the holding K",
                          lo=0.0, hi=0.052)
    spacing: float = arg(0.01, "K step between successive items of A, B, C", lo=0.0,
                         lo_open=True, hi=0.05)
    random_k_second: float = arg(0.045, "K of the second item of a random sequence",
                                 lo=0.0, hi=0.052)
    random_spacing: float = arg(0.007, "K step between successive items of a random sequence",
                                lo=0.0, lo_open=True, hi=0.05)
    cue_threshold: float = arg(0.0, "zero every cue cell at or below this before the replay "
                               "(0: off); 0.1 strips the cue's noise, which otherwise "
                               "ignites the deepest scars", lo=0.0, hi=1.0, hi_open=True)
    dead_offset: float = arg(0.005, "K raise of the whole medium from step 0 in the "
                             "dead-background condition (K0 + offset: spots die)", lo=0.0,
                             hi=0.02)
    channel_width: float = arg(2.0, "width of the channels in cells at 64 x 64", lo=0.5,
                               hi=16.0)
    fan: int = arg(4, "channels from each item to points spread over the next", lo=1, hi=32)
    blobs: int = arg(3, "discs per random item", lo=1, hi=20)
    blob_radius: float = arg(18.0, "disc radius in reference-grid (256) cells", lo=2.0,
                             hi=64.0)
    min_peak: float = arg(0.2, "an item whose similarity never reaches this never peaks",
                          lo=0.0, hi=1.0)
    peak_target: float = arg(0.6, "target peak similarity; also the hold-time threshold",
                             lo=0.0, hi=1.0)
    hopfield_grids: tuple[int, ...] = arg((64, 256), "grids of the Hopfield baselines",
                                          lo=8, hi=1024)
    beta: float = arg(0.05, "inverse temperature of the modern sequence network", lo=0.0,
                      lo_open=True, hi=100.0)
    delay: int = arg(3, "delay (updates) of the delayed asymmetric network", lo=1, hi=50)

    def check(self) -> None:
        if len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"--lengths {' '.join(map(str, self.lengths))}: repeated length")
        ks = [self.random_k_second - self.random_spacing * i for i in range(max(self.lengths) - 1)]
        if ks and ks[-1] < 0:
            raise ValueError(f"--lengths {max(self.lengths)} at --random-spacing "
                             f"{self.random_spacing} from --random-k-second "
                             f"{self.random_k_second} needs K < 0: lower the spacing")
        if self.k_second - self.spacing < 0:
            raise ValueError(f"--k-second {self.k_second} - --spacing {self.spacing} < 0")


QUICK = dict(grid=32, multi_train_steps=30, fill=200, hold=100, lengths=(3,),
             hopfield_grids=(32,))


# ---- read-out summaries ---------------------------------------------------------------

def curve_band(curves):
    """(T, S, P) curves -> {"mean", "ci95_low", "ci95_high"}: (T, P) lists, t interval of
    the mean over seeds clipped to [0, 1] (cosine of non-negative fields)."""
    c = torch.as_tensor(curves, dtype=torch.float64)
    mean = c.mean(1)
    half = (stats.t_quantile_975(c.shape[1] - 1) * c.std(1) / math.sqrt(c.shape[1])
            if c.shape[1] > 1 else torch.zeros_like(mean))
    keep = lambda x: (x.clamp(0, 1) * 1e4).round().div(1e4).tolist()   # 4 decimals: a figure
    return {"mean": keep(mean), "ci95_low": keep(mean - half), "ci95_high": keep(mean + half)}


def summarize_replay(curves, steps, args, order=None) -> dict:
    """Every read-out of (T, S, P) curves with its interval (module docstring). steps:
    the T record steps, evenly spaced (None: 0 .. T - 1)."""
    ro = metrics.sequence_readout(curves, order, steps, args.min_peak, args.peak_target)
    T, P = curves.shape[0], curves.shape[-1]
    every = 1.0 if steps is None or T < 2 else float(steps[1] - steps[0])
    total = T * every      # hold times count records: at most every record
    hit = ro["exact_order"] & (ro["peak_height"] >= args.peak_target).all(1)
    return {"exact_order": stats.rate(ro["exact_order"], "clopper_pearson"),
            "exact_order_and_peaks": stats.rate(hit, "clopper_pearson"),
            "kendall_tau": stats.summarize(ro["kendall_tau"], "bootstrap_bca"),
            "peak_height": [stats.summarize(ro["peak_height"][:, i], bounds=(0.0, 1.0)) for i in range(P)],
            "hold_time": [stats.summarize(ro["hold_time"][:, i], bounds=(0.0, float(total)))
                          for i in range(P)],
            "peak_time": ro["peak_time"], "orders": ro["order"], "curve": curve_band(curves)}


def short(stat, digits=2) -> str:
    return stats.format_stat(stat, digits)


def rate_text(stat) -> str:
    return f"{stat['k']}/{stat['n']} [{stat['ci95_low']:.2f}, {stat['ci95_high']:.2f}]"


# ---- the reference battery --------------------------------------------------------------

def reference_media(args, media, items, keys):
    """{key: (F, K, schedule)} for the chosen conditions."""
    S = len(media.seeds)
    masks = (items > 0.3).cpu().expand(S, *items.shape)
    channels = media.channels(masks)
    depth = sq.depth_setpoints(3, args.k_second, args.spacing)
    dead = [(f, k - args.dead_offset) for f, k in depth]
    uniform = [(sq.F_SCAR, sq.K_SCAR)] * 3
    start = NOISE["phase3_starts"][1]
    schedules = {
        None: None,
        "death": lambda sp: sq.death_schedule([k for _, k in sp], media.fill, media.hold),
        "death_dead": lambda sp: sq.death_schedule([k for _, k in sp], media.fill, media.hold,
                                                   offset=args.dead_offset)}
    built, out = {}, {}
    for key in keys:
        _, layout, schedule, _ = CONDITIONS[key]
        sp = dead if schedule == "death_dead" else uniform if layout == "uniform" else depth
        cache = (layout, tuple(sp))
        if cache not in built:
            if layout == "stored":
                st = media.study.store(items, media.seeds, args.multi_train_steps,
                                       first_index=start)
                built[cache] = (st["F"], st["K"], st["train_similarity"])
            elif layout in ("uniform", "depth"):
                built[cache] = (*media.painted(masks, sp, channels), None)
            elif layout == "depth_stored":
                st = media.stored_depth(items, sp, channels, start)
                built[cache] = (st["F"], st["K"], st["train_similarity"])
            else:
                built[cache] = (*media.unscarred(), None)
        F, K, train = built[cache]
        sched = schedules[schedule](sp if layout != "none" else depth) if schedule else None
        out[key] = (F, K, sched, train, sp if layout != "none" else None)
    return out, channels


def run_reference(args, media):
    p = media.study.protocol
    targets = patterns.phase3_targets(p.grid)
    names = list(targets)
    items = torch.stack(list(targets.values())).to(media.study.device, media.study.dtype)
    built, channels = reference_media(args, media, items, args.conditions)
    cues = media.cues(items.expand(len(media.seeds), *items.shape), NOISE["phase3_cues"][1])
    outside = ~((items > 0.3).cpu().any(0) | channels[0].any(0))
    steps = media.fill + 3 * media.hold
    out = {"items": names, "steps": steps, "fill": media.fill, "hold": media.hold,
           "cue_step0_cosine": {}, "conditions": {}}
    step0 = metrics.similarity_curves(cues.transpose(0, 1), items)     # (C, S, P)
    for c, cue in enumerate(REFERENCE_CUES):
        out["cue_step0_cosine"][cue] = [stats.summarize(step0[c, :, i], bounds=(0, 1)) for i in range(3)]
    frames = {}
    with cli.progress(len(built), "reference conditions") as bar:
        for key, (F, K, sched, train, sp) in built.items():
            t0 = time.perf_counter()
            r = media.replay(F, K, cues, items, steps, sched, outside)
            name, layout, _, why = CONDITIONS[key]
            entry = {"name": name, "hypothesis": why, "layout": layout,
                     "setpoints": sp, "schedule": None if sched is None else vars(sched),
                     "train_similarity": None if train is None else stats.summarize_tensor(train.T),
                     "cues": {}}
            for c, cue in enumerate(REFERENCE_CUES):
                entry["cues"][cue] = summarize_replay(r["curves"][:, :, c], r["steps"], args)
                entry["cues"][cue]["lit_outside_max"] = stats.summarize(r["lit_outside"][:, :, c].amax(0), bounds=(0.0, 1.0))
            frames[key] = sq.peak_frames(r, entry["cues"]["cue A"])
            entry["peak_frame_steps"] = frames[key][1]
            entry["seconds"] = time.perf_counter() - t0
            out["conditions"][key] = entry
            bar.update()
    out["record_steps"] = r["steps"]
    return out, frames, items


# ---- random sequences ---------------------------------------------------------------------

def blob_items(length, grid, seeds, count, radius):
    """(S, L, H, W): item i of run seed s is `count` discs placed by seed s * span + i."""
    return torch.stack([torch.stack([patterns.make_pattern(
        "blobs", grid, grid, seed=BLOB_SEED_SPAN * s + i, count=count, radius=radius)
        for i in range(length)]) for s in seeds])


def run_random(args, media):
    p = media.study.protocol
    out = {"family": f"{args.blobs} blobs of radius {args.blob_radius} (reference cells) "
                     f"per item, drawn per seed", "lengths": {}}
    with cli.progress(len(args.lengths), "random sequences") as bar:
        for L in args.lengths:
            t0 = time.perf_counter()
            items = blob_items(L, p.grid, media.seeds, args.blobs, args.blob_radius).to(
                media.study.device, media.study.dtype)
            masks = (items > 0.3).cpu()
            channels = media.channels(masks)
            sp = sq.depth_setpoints(L, args.random_k_second, args.random_spacing)
            sched = sq.death_schedule([k for _, k in sp], media.fill, media.hold)
            steps = media.fill + L * media.hold
            cues = media.cues(items[:, :2], NOISE["phase3_cues"][1])
            outside = ~(masks.any(1) | channels.any(1))
            st = media.stored_depth(items, sp, channels, NOISE["phase3_starts"][1])
            arms = {"depth_schedule_stored": (st["F"], st["K"], RANDOM_CUES, sched)}
            dead_sp = [(f, k - args.dead_offset) for f, k in sp]
            dead_sched = None
            if dead_sp[-1][1] >= 0:     # the deepest item must stay at K >= 0
                dead = media.stored_depth(items, dead_sp, channels, NOISE["phase3_starts"][1])
                dead_sched = sq.death_schedule([k for _, k in dead_sp], media.fill, media.hold,
                                               offset=args.dead_offset)
                arms["depth_schedule_stored_dead"] = (dead["F"], dead["K"], RANDOM_CUES,
                                                      dead_sched)
            arms["depth_schedule_painted"] = (*media.painted(masks, sp, channels), RANDOM_CUES,
                                              sched)
            arms["unscarred_schedule"] = (*media.unscarred(), RANDOM_CUES[:1], sched)
            entry = {"setpoints": sp, "steps": steps, "schedule": vars(sched),
                     "dead_setpoints": dead_sp if dead_sched else
                     f"not run: the deepest item would need K = {dead_sp[-1][1]:.4f} < 0",
                     "dead_schedule": vars(dead_sched) if dead_sched else None,
                     "train_similarity": stats.summarize_tensor(st["train_similarity"].T),
                     "overlap_fraction": float(((masks.sum(1) > 1).sum((1, 2)).float()
                                                / masks.any(1).sum((1, 2))).mean()),
                     "conditions": {}}
            for key, (F, K, names, schedule) in arms.items():
                r = media.replay(F, K, cues[:, :len(names)], items, steps, schedule, outside,
                                 film=False)
                entry["conditions"][key] = {
                    cue: {**summarize_replay(r["curves"][:, :, i], r["steps"], args),
                          "lit_outside_max": stats.summarize(r["lit_outside"][:, :, i].amax(0), bounds=(0.0, 1.0))}
                    for i, cue in enumerate(names)}
            entry["record_steps"] = r["steps"]
            entry["seconds"] = time.perf_counter() - t0
            out["lengths"][str(L)] = entry
            bar.update()
    return out


# ---- Hopfield sequence baselines --------------------------------------------------------

def hopfield_nets(xi, args):
    H = hopfield
    return {"asymmetric": H.SequenceHopfield(xi, centred=True),
            "asymmetric_delay": H.SequenceHopfield(xi, delay=args.delay, centred=True),
            "modern": H.ModernSequenceHopfield(xi, beta=args.beta, centred=True)}


def run_hopfield(args, seeds, cue_noise, strength):
    """The three sequence networks on the reference A, B, C and the random blob
    sequences, per grid; binarised protocol cues of the first and second item, noise."""
    out = {}
    for grid in args.hopfield_grids:
        seqs = {"reference": torch.stack(list(patterns.phase3_targets(grid).values()))
                .expand(len(seeds), 3, grid, grid)}
        for L in (args.lengths if "random" in args.sections else ()):
            seqs[f"random L={L}"] = blob_items(L, grid, seeds, args.blobs, args.blob_radius)
        out[str(grid)] = {}
        for name, items in seqs.items():
            S, P = items.shape[:2]
            cues = torch.cat([scarring.make_cues(items[:, :2], strength, cue_noise, seeds,
                                                 first_index=NOISE["phase3_cues"][1]),
                              scarring.make_cues(torch.zeros(1, grid, grid), 0.0, cue_noise,
                                                 seeds, *NOISE["phase2_no_cue"])], 1)
            s0 = hopfield.binarize(cues.reshape(-1, grid, grid)).view(S, 3, -1)
            steps = (args.delay + 1) * P
            res = {}
            for net_name, net in hopfield_nets(hopfield.to_bipolar(items), args).items():
                traj = net.replay(s0, steps)                               # (T, S, 3, N)
                imgs = hopfield.to_image(traj.reshape(-1, grid * grid), grid, grid)
                curves = metrics.similarity_curves(imgs.view(steps + 1, S * 3, grid, grid),
                                                   items.repeat_interleave(3, 0))
                curves = curves.view(steps + 1, S, 3, P)
                res[net_name] = {cue: summarize_replay(curves[:, :, c], None, args)
                                 for c, cue in enumerate(RANDOM_CUES)}
            out[str(grid)][name] = res
    return out


# ---- targets, report, figures ------------------------------------------------------------

def targets(body):
    """The issue's targets, met or not, with the numbers they rest on."""
    out = {}
    ref = body.get("reference", {}).get("conditions", {})
    for key in ("depth_schedule_stored", "depth_schedule_stored_dead"):
        if key in ref:
            s = ref[key]["cues"]["cue A"]["exact_order_and_peaks"]
            out[f"reference A->B->C, {key}: exact order with every peak >= target in >= 90%"] = {
                **s, "met": s["mean"] >= 0.9}
    five = body.get("random", {}).get("lengths", {}).get("5", {}).get("conditions", {})
    for key in ("depth_schedule_stored", "depth_schedule_stored_dead"):
        if key in five:
            s = five[key]["cue first"]["exact_order"]
            out[f"random length 5, {key}: exact order in >= 50%"] = {
                **s, "met": s["mean"] >= 0.5}
    return out


def print_report(body):
    ref = body.get("reference")
    if ref:
        print(f"reference A, B, C ({ref['steps']} steps; fill {ref['fill']}, hold {ref['hold']}):")
        for key, e in ref["conditions"].items():
            for cue, s in e["cues"].items():
                print(f"  {key:27s} {cue:10s} exact {rate_text(s['exact_order'])} "
                      f"+peaks {s['exact_order_and_peaks']['k']}/{s['exact_order_and_peaks']['n']} "
                      f"tau {short(s['kendall_tau'])} peaks "
                      f"{' '.join(short(h) for h in s['peak_height'])} lit outside "
                      f"{s['lit_outside_max']['mean']:.3f}")
    for L, e in body.get("random", {}).get("lengths", {}).items():
        for key, cond in e["conditions"].items():
            for cue, s in cond.items():
                print(f"  L={L} {key:23s} {cue:10s} exact {rate_text(s['exact_order'])} "
                      f"tau {short(s['kendall_tau'])}")
    for grid, seqs in body.get("hopfield", {}).items():
        for name, nets in seqs.items():
            for net, cues in nets.items():
                s = cues["cue first"]
                print(f"  hopfield {grid} {name:12s} {net:17s} exact {rate_text(s['exact_order'])} "
                      f"tau {short(s['kendall_tau'])} peaks "
                      + " ".join(f"{h['mean']:.2f}" for h in s["peak_height"]))
    for name, t in body["targets"].items():
        print(f"  target: {name}: {t['k']}/{t['n']} [{t['ci95_low']:.2f}, {t['ci95_high']:.2f}]"
              f" -> {'met' if t['met'] else 'NOT met'}")


def save(fig, path) -> None:
    """Lay out below the suptitle, write and close a figure."""

    fig.tight_layout(rect=(0, 0, 1, 0.97))
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


def plot_curves(ax, steps, band, names, title, colors=None):
    import matplotlib.pyplot as plt

    mean, lo, hi = (torch.tensor(band[k]) for k in ("mean", "ci95_low", "ci95_high"))
    cmap = plt.get_cmap("viridis" if mean.shape[1] > 3 else "tab10")
    for i, name in enumerate(names):
        col = (colors or {}).get(i, cmap(i / max(1, mean.shape[1] - 1)) if mean.shape[1] > 3
                                 else cmap(i))
        ax.plot(steps, mean[:, i], color=col, lw=1.2, label=name)
        ax.fill_between(steps, lo[:, i], hi[:, i], color=col, alpha=0.25, lw=0)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=7)
    ax.tick_params(labelsize=6)


def figure_reference(ref, out, n):
    import matplotlib.pyplot as plt

    keys = list(ref["conditions"])
    fig, axes = plt.subplots(len(keys), 4, figsize=(13, 1.9 * len(keys) + 0.6), squeeze=False)
    steps = ref["record_steps"]
    for row, key in enumerate(keys):
        e = ref["conditions"][key]
        for col, cue in enumerate(REFERENCE_CUES):
            s = e["cues"][cue]
            plot_curves(axes[row, col], steps, s["curve"], ref["items"],
                        f"{textwrap.shorten(e['name'], 46)}\n{cue}: exact order {s['exact_order']['k']}/"
                        f"{s['exact_order']['n']}")
            if e["schedule"]:
                for t in e["schedule"]["steps"][1:]:
                    axes[row, col].axvline(t, color="0.6", lw=0.5, ls=":")
        axes[row, 0].set_ylabel("cosine to item", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=7)
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"Replay of A, B, C: similarity of V to each item, mean and 95% band over "
                 f"{n} seeds (dotted: schedule breakpoints)", fontsize=9)
    save(fig, out / "sequences_reference.png")


def figure_frames(ref, frames, items, out):
    import matplotlib.pyplot as plt

    keys = list(frames)
    fig, axes = plt.subplots(len(keys) + 1, 3, figsize=(6.4, 2.1 * (len(keys) + 1)),
                             squeeze=False)
    for i, name in enumerate(ref["items"]):
        axes[0, i].imshow(items[i].cpu(), cmap="magma", vmin=0, vmax=1)
        axes[0, i].set_title(f"stored {name}", fontsize=7)
    for row, key in enumerate(keys, start=1):
        s = ref["conditions"][key]["cues"]["cue A"]
        for i, (V, when) in enumerate(zip(*frames[key])):
            axes[row, i].imshow(V.cpu(), cmap="magma", vmin=0, vmax=1)
            h = s["peak_height"][i]["per_seed"][0]
            axes[row, i].set_title(f"{textwrap.shorten(ref['conditions'][key]['name'], 40)}\n"
                                   f"{ref['items'][i][0]} peak {h:.2f} at "
                                   f"{'-' if when is None else when}", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("V at each item's peak after a cue of A (seed 0; colour: V in [0, 1])",
                 fontsize=8)
    save(fig, out / "sequences_frames.png")


def figure_random(rnd, out, n):
    import matplotlib.pyplot as plt

    Ls = list(rnd["lengths"])
    panels = [("depth_schedule_stored", "cue first"), ("depth_schedule_stored", "cue second"),
              ("depth_schedule_stored", "noise only"), ("depth_schedule_painted", "cue first"),
              ("unscarred_schedule", "cue first")]
    fig, axes = plt.subplots(len(Ls), len(panels), figsize=(15, 2.2 * len(Ls) + 0.6),
                             squeeze=False)
    for row, L in enumerate(Ls):
        e = rnd["lengths"][L]
        for col, (key, cue) in enumerate(panels):
            s = e["conditions"][key][cue]
            plot_curves(axes[row, col], e["record_steps"], s["curve"],
                        [f"item {i + 1}" for i in range(int(L))],
                        f"L={L} {key}\n{cue}: exact {s['exact_order']['k']}/{s['exact_order']['n']}"
                        f", tau {s['kendall_tau']['mean']:.2f}")
        axes[row, -1].legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"Random blob sequences: similarity to each item, mean and 95% band over {n} "
                 f"seeds", fontsize=9)
    save(fig, out / "sequences_random.png")


def figure_summary(body, out):
    """Exact-order rates (Clopper-Pearson) and Kendall tau (bootstrap) of every arm."""
    import matplotlib.pyplot as plt

    rows = []
    for key, e in body.get("reference", {}).get("conditions", {}).items():
        rows.append((f"ABC {key}", e["cues"]["cue A"]))
    for L, e in body.get("random", {}).get("lengths", {}).items():
        for key, cond in e["conditions"].items():
            rows.append((f"L={L} {key}", cond["cue first"]))
    for grid, seqs in body.get("hopfield", {}).items():
        for name, nets in seqs.items():
            for net, cues in nets.items():
                rows.append((f"Hopfield {grid} {name} {net}", cues["cue first"]))
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.22 * len(rows) + 1.4), sharey=True)
    panels = ((axes[0], "exact_order", 0.0, "exact order", "C0"),
              (axes[0], "exact_order_and_peaks", 0.3, "exact order, every peak >= target", "C1"),
              (axes[1], "kendall_tau", 0.0, "Kendall tau", "C0"))
    for ax, key, shift, label, color in panels:
        st = [r[1][key] for r in rows]
        m = [s["mean"] for s in st]
        err = [[s["mean"] - (s["ci95_low"] if s["ci95_low"] is not None else s["mean"]) for s in st],
               [(s["ci95_high"] if s["ci95_high"] is not None else s["mean"]) - s["mean"] for s in st]]
        ax.errorbar(m, [i + shift for i in range(len(rows))], xerr=err, fmt="o", ms=3,
                    capsize=2, color=color, label=label)
        ax.axvline(0, color="0.7", lw=0.5)
        ax.tick_params(labelsize=6)
    axes[0].set_title("rates, first item cued (Clopper-Pearson 95%)", fontsize=8)
    axes[1].set_title("Kendall tau, first item cued (bootstrap BCa 95%)", fontsize=8)
    y = range(len(rows))
    axes[0].axvline(0.9, color="C3", lw=0.8, ls="--", label="A->B->C target 0.9")
    axes[0].axvline(0.5, color="C2", lw=0.8, ls="--", label="length-5 target 0.5")
    axes[0].legend(fontsize=6, loc="lower right")
    axes[0].set_yticks(list(y), [r[0] for r in rows], fontsize=6)
    axes[0].invert_yaxis()
    save(fig, out / "sequences_summary.png")


# ---- main ---------------------------------------------------------------------------------

def main(argv=None):
    args = cli.parse(Args, cli.split_commas(argv, "--sections", "--conditions", "--lengths",
                                            "--hopfield-grids"),
                     description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    study = scarring.Study(protocol_of(args), device)
    if any(CONDITIONS[k][1] == "depth_stored" for k in args.conditions) or "random" in args.sections:
        sq.depth_rule(study.rule, sq.F_SCAR, sq.K_SCAR)      # refuse a rule that cannot code depth
    media = sq.SequenceMedia(study, seeds, fill=args.fill, hold=args.hold,
                             channel_width=args.channel_width, fan=args.fan,
                             train_steps=args.multi_train_steps,
                             cue_threshold=args.cue_threshold)
    t0 = time.perf_counter()
    body, frames = {}, None
    if "reference" in args.sections:
        body["reference"], frames, items = run_reference(args, media)
    if "random" in args.sections:
        body["random"] = run_random(args, media)
    if "hopfield" in args.sections:
        body["hopfield"] = run_hopfield(args, seeds, args.cue_noise, args.multi_cue_strength)
    body["targets"] = targets(body)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), **body}
    result["config"].update(rule=study.rule.as_dict(), background=media.background,
                            fill_steps=media.fill, hold_steps=media.hold,
                            channel_width_cells=media.width,
                            conditions_described={k: CONDITIONS[k][0] for k in args.conditions})
    with cli.staged_output(args.out_dir(), Args.study) as out:
        if "reference" in body:
            figure_reference(body["reference"], out, len(seeds))
            figure_frames(body["reference"], frames, items, out)
        if "random" in body:
            figure_random(body["random"], out, len(seeds))
        figure_summary(body, out)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print(f"{Args.study}: {len(seeds)} seeds, grid {args.grid}, {wall:.0f} s -> {args.out_dir()}")
    print_report(body)


if __name__ == "__main__":
    cli.run_cli(main)
