"""Scarring beside the associative memories a researcher would pick instead.

Methods, all on the same targets, the same cues and the same grid (64 x 64 by default):
  scarring        Gray-Scott with scars stored sequentially (scarring.Study: the protocol's
                  rule, medium and training start; --train-steps scarred steps per pattern),
                  recall by running the medium from the cue
  unscarred       the same recall on the default F0/K0 medium (the control)
  hopfield_sync   classical Hebbian Hopfield (hopfield.py), synchronous updates
  hopfield_async  the same, asynchronous (random order, one cell at a time)
  hopfield_centred the covariance rule for biased patterns (rows minus their mean),
                  synchronous: the classical network with the standard fix for sparse images
  modern_hopfield Ramsauer et al. 2020, xi <- P^T softmax(beta P xi)
  nca             the growing NCA of Mordvintsev et al. trained to regrow the three
                  reference targets from their 15% cue (weights/nca_cue.pt; --retrain-nca
                  trains it anew)
  cue             the cue itself, untouched (what every method starts from)

Hopfield networks get the cue binarised at its two-means threshold; their output is read
back as PEAK * (s + 1) / 2. Every recalled field is scored against every stored pattern
with the three metrics (cosine, iou, pearson).

Studies: (1) recall of the protocol's three patterns (A = square_spots offset by -1/4 of
the grid, B = ring, C = line) from the protocol's 15% cue (the main study's phase-2 noise
draws): cue x pattern matrices and discrimination index; (2) capacity: k equal-area
random 3-spot patterns (patterns.random_spot_patterns, a fresh family per seed), k up to
where each method breaks; (3) robustness: cue noise std and cue occlusion (the left part
of the cue zeroed); (4) cost: numbers stored per pattern, training and recall time on
this machine (every method runs on the CPU, so that the timings compare).

    python -m experiments.baselines            # 8 seeds, 64 x 64 (minutes on CPU)
    python -m experiments.baselines --quick    # a smoke run
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import NOISE, Protocol, protocol_of

torch = cli.lazy("torch")
np = cli.lazy("numpy")
memory = cli.lazy("memory")
metrics = cli.lazy("metrics")
patterns = cli.lazy("patterns")
scarring = cli.lazy("scarring")
hopfield = cli.lazy("models.hopfield")
nca = cli.lazy("models.nca")

ROOT = Path(__file__).resolve().parents[1]
NCA_WEIGHTS = ROOT / "weights" / "nca_cue.pt"

GRID = 64
CAPACITY_KS = (1, 2, 4, 8, 16, 32)
SPOTS, SPOT_RADIUS = 3, 5.0   # capacity family: 3 discs of radius 5 cells per pattern (64^2)
PATTERN_NAMES = ("A_spots", "B_ring", "C_line")   # protocol.PHASE3_PATTERNS, short names
METHODS = ("scarring", "unscarred", "hopfield_sync", "hopfield_async", "hopfield_centred",
           "modern_hopfield", "nca", "cue")
NCA_LR = 2e-3


@dataclass
class Args(RunArgs, Protocol):
    study: ClassVar[str] = "baselines"
    saved_state_refusal: ClassVar[str] = (
        "it compares memories that are not Gray-Scott media (Hopfield networks, an NCA, "
        "...) on the same patterns from the same start")
    grid: int = arg(GRID, "grid side H = W (the reference geometry scales with it)", lo=16,
                    hi=4096)
    train_steps: int = arg(500, "scarred training steps per pattern (the protocol's phase-3 "
                                "length)", lo=1)
    ks: tuple[int, ...] = arg(CAPACITY_KS, "capacity: numbers of stored patterns k (sorted, "
                              "repeats dropped; '1,2,4' is read as '1 2 4')", lo=1, hi=1000)
    beta_per_sqrt_n: float = arg(1.0, "modern Hopfield beta * sqrt(N) (attention scaling)",
                                 lo=0.0, lo_open=True)
    nca_weights: str = arg(str(NCA_WEIGHTS), "cue-recall NCA weights file")
    retrain_nca: bool = arg(False, "train the cue NCA anew and write it to --nca-weights (a "
                                   "full run only: --quick trains a tiny NCA and writes none)")
    nca_time_budget: float = arg(600.0, "seconds cap on the NCA training", lo=0.0,
                                 lo_open=True)
    nca_train_steps: int = arg(3000, "NCA optimiser steps (at most)", lo=1)

    def check(self) -> None:
        if self.cue_strength <= 0:
            raise ValueError(f"--cue-strength {self.cue_strength}: must be in (0, 1]")
        self.ks = tuple(sorted(set(self.ks)))


QUICK = dict(grid=32, train_steps=20, recall_steps=20, ks=(1, 2), nca_train_steps=2,
             nca_time_budget=60.0)

# The study's fixed settings (not flags); --quick shrinks them too.
SETTINGS = dict(
    noise_levels=(0.05, 0.1, 0.2),   # cue noise std of the robustness cue sets
    occlusions=(0.25, 0.5),          # fraction of columns (from the left) zeroed in the cue
    async_sweeps=20,
    recall_threshold=0.7,            # capacity: mean recall cosine must stay above this
    spot_radius=SPOT_RADIUS,
    # NCA (cue recall): trained on 32 x 32 crops of the 64 x 64 targets (the rule is local
    # and translation-invariant, so crops keep the scale while costing a quarter of the CPU)
    nca_crop=32, nca_crop_stride=16, nca_pool=128, nca_batch=4, nca_rollout=(12, 24),
    nca_recall_steps=24)
QUICK_SETTINGS = dict(noise_levels=(0.05, 0.2), occlusions=(0.5,), async_sweeps=2,
                      nca_recall_steps=4, nca_pool=4, nca_batch=2, nca_rollout=(2, 3),
                      nca_crop=16)


def settings_of(args) -> dict:
    """The fixed settings of this run (--quick: the small ones; the capacity spots scale
    with the quick grid)."""
    s = dict(SETTINGS)
    if args.quick:
        s.update(QUICK_SETTINGS, spot_radius=SPOT_RADIUS * args.grid / GRID)
    return s


# ------------------------------------------------------------------ patterns and cues

def reference_patterns(grid) -> tuple[list[str], torch.Tensor]:
    """The protocol's phase-3 targets (patterns.phase3_targets) under their short names."""
    return list(PATTERN_NAMES), torch.stack(list(patterns.phase3_targets(grid).values()))


def occlude(cues: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero the leftmost `fraction` of the columns of every cue."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"occlusion fraction {fraction} must be in [0, 1)")
    out = cues.clone()
    out[..., : int(round(fraction * cues.shape[-1]))] = 0.0
    return out


def score(V: torch.Tensor, pats: torch.Tensor) -> dict:
    """V (S, C, H, W) against pats (S, P, H, W): {metric: (S, C, P)}."""
    S, C, H, W = V.shape
    P = pats.shape[1]
    v = V.unsqueeze(2).expand(S, C, P, H, W).reshape(-1, H, W)
    p = pats.unsqueeze(1).expand(S, C, P, H, W).reshape(-1, H, W).to(V.dtype)
    return {m: f(v, p).reshape(S, C, P) for m, f in metrics.METRICS.items()}


# ------------------------------------------------------------------ the methods

HOPFIELD = ("hopfield_sync", "hopfield_async", "hopfield_centred", "modern_hopfield")


class Methods:
    """store(pats) then recall(cues) for every method; records the times."""

    def __init__(self, study, args, settings, seeds, nca_model):
        self.study, self.args, self.settings = study, args, settings
        self.seeds, self.nca = list(seeds), nca_model

    def store(self, method, pats, snapshots=()):
        """pats (S, P, H, W). Returns (memory object, seconds)."""
        t0 = time.perf_counter()
        S, P, H, W = pats.shape
        if method == "scarring":
            mem = self.study.store(pats, self.seeds, self.args.train_steps,
                                   snapshots=snapshots, progress=None)
        elif method in ("hopfield_sync", "hopfield_async", "hopfield_centred"):
            mem = [hopfield.ClassicalHopfield(hopfield.to_bipolar(pats[s]),
                                              centred=method == "hopfield_centred")
                   for s in range(S)]
        elif method == "modern_hopfield":
            mem = hopfield.modern_nets(pats, self.args.beta_per_sqrt_n)
        else:  # unscarred, nca, cue: nothing stored per pattern (the NCA was trained once)
            mem = None
        return mem, time.perf_counter() - t0

    def recall(self, method, mem, cues, fields=None):
        """cues (S, C, H, W) -> recalled V (S, C, H, W), seconds."""
        t0 = time.perf_counter()
        if method in ("scarring", "unscarred"):
            p = self.study.protocol
            if method == "unscarred":
                F, K = p.f0, p.k0
            else:
                F, K = fields if fields is not None else (mem["F"], mem["K"])
            V = self.study.recall(F, K, cues, cues[:, :1], p.recall_steps, metric_names=(),
                                  return_fields=True)["V"]
        elif method in HOPFIELD:
            V = self._hopfield_recall(method, mem, cues)
        elif method == "nca":
            S, C, H, W = cues.shape
            g = torch.Generator().manual_seed(self.seeds[0] * 7919 + 5)
            with torch.no_grad():
                x = self.nca(nca.cue_state(cues.reshape(-1, H, W).float()),   # float32 weights
                             self.settings["nca_recall_steps"], g)
            V = x[:, 0].clamp(0, 1).reshape(S, C, H, W)
        elif method == "cue":
            V = cues.clone()
        else:
            raise ValueError(f"unknown method {method!r}")
        return V, time.perf_counter() - t0

    def _hopfield_recall(self, method, mem, cues):
        recall = None   # the modern network's own recall
        if method in ("hopfield_sync", "hopfield_centred"):
            def recall(net, q, s):
                return net.recall_sync(q)
        elif method == "hopfield_async":
            def recall(net, q, s):
                return net.recall_async(q, max_sweeps=self.settings["async_sweeps"],
                                        seed=self.seeds[s])
        return hopfield.recall_images(mem, cues, recall)


def stored_numbers(method, mem, n_patterns, N, nca_params, f0, k0) -> dict:
    """Numbers the memory holds, total and per pattern (per seed mean for scarring)."""
    if method == "scarring":
        changed = memory.scarred_cells({"F": mem["F"], "K": mem["K"]}, {"F": f0, "K": k0})
        changed = changed.flatten(1).sum(1).double()
        total = 2 * changed  # an F and a K value per scarred cell
        return {"total": stats.summarize(total),
                "per_pattern": stats.summarize(total / n_patterns),
                "what": "F and K values of the cells whose F or K differs from F0/K0"}
    if method in ("hopfield_sync", "hopfield_async", "hopfield_centred"):
        return {"total": mem[0].stored_numbers(), "per_pattern": N,
                "what": "bipolar pattern rows (1 bit each); a dense W would hold N(N-1)/2"}
    if method == "modern_hopfield":
        return {"total": mem[0].stored_numbers(), "per_pattern": N, "what": "pattern rows"}
    if method == "nca":
        return {"total": nca_params, "per_pattern": nca_params / n_patterns,
                "what": "NCA weights shared by all patterns (trained on the 3 reference targets)"}
    return {"total": 0, "per_pattern": 0, "what": "nothing stored"}


def summarize_scores(sc: dict) -> dict:
    """Recall (own-pattern score, mean over patterns per seed), per pattern, the mean
    matrix and the discrimination index, for each metric."""
    out = {}
    for m, x in sc.items():
        S, C, P = x.shape
        n = min(C, P)
        diag = x[:, range(n), range(n)]
        entry = {"recall": stats.summarize(diag.mean(1)),
                 "recall_per_pattern": [stats.summarize(diag[:, i]) for i in range(n)],
                 "matrix_mean": x.mean(0)}
        if n >= 2:
            entry["discrimination"] = stats.summarize(metrics.discrimination_per_seed(x))
        out[m] = entry
    return out


# ------------------------------------------------------------------ NCA (cue recall)

def nca_crops(pats: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """All crop x crop windows at `stride` of (P, H, W) patterns: (T, 1, crop, crop)."""
    H, W = pats.shape[-2:]
    crop = min(crop, H, W)
    ys = list(range(0, H - crop + 1, stride)) or [0]
    xs = list(range(0, W - crop + 1, stride)) or [0]
    return torch.stack([pats[p, y:y + crop, x:x + crop] for p in range(pats.shape[0])
                        for y in ys for x in xs]).unsqueeze(1)


def train_nca_cue(pats, args, settings, progress=True):
    """Train the NCA to turn the protocol's cue of each crop of the stored patterns into it."""
    targets = nca_crops(pats, settings["nca_crop"], settings["nca_crop_stride"])
    strength, noise = args.cue_strength, args.cue_noise

    def start(idx, g):
        t = targets[idx, 0]
        cue = (strength * t + noise * torch.randn(t.shape, generator=g)).clamp(0, 1)
        return nca.cue_state(cue)

    torch.manual_seed(args.seed)   # the initial weights: the same for the same --seed
    model = nca.NCA()
    hist = nca.train(model, targets, start, args.nca_train_steps,
                     pool_size=settings["nca_pool"], batch=settings["nca_batch"],
                     rollout=settings["nca_rollout"], lr=NCA_LR, seed=args.seed,
                     time_budget_s=args.nca_time_budget,
                     progress="train NCA" if progress else None)
    return model, hist


def cue_nca(args, settings):
    """The cue-recall NCA and what the results say about it: the shipped weights, or one
    trained now (--retrain-nca, missing weights, or a tiny one in --quick). Weights are
    written only by a full run, atomically."""
    weights = Path(args.nca_weights)
    if args.quick or args.retrain_nca or not weights.is_file():
        _, ref_pats = reference_patterns(args.grid)
        model, hist = train_nca_cue(ref_pats, args, settings, progress=not args.quick)
        meta = {"grid": args.grid, "history": hist,
                "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
        if not args.quick:
            nca.write_weights(model, weights, meta)
        info = {"trained_now": True, "weights": None if args.quick else str(weights)}
    else:
        model, meta = nca.load_weights(weights)
        if meta.get("grid") != args.grid:
            print(f"note: {weights} was trained on {meta.get('grid')}x{meta.get('grid')} "
                  f"targets; running it at {args.grid}x{args.grid}")
        info = {"trained_now": False, "weights": str(weights)}
    model.eval()
    hist = meta["history"]
    info.update(params=model.n_params(), steps_done=hist["steps_done"],
                train_seconds=hist["seconds"], loss_first=hist["loss"][0],
                loss_last_10_mean=float(np.mean(hist["loss"][-10:])),
                train_config=hist["config"], train_command=meta.get("command"),
                grid=meta.get("grid"))
    return model, info


# ------------------------------------------------------------------ the studies

def reference_cue_sets(study, pats, seeds, settings) -> dict:
    """{name: (S, C, H, W)}: the protocol's cue, noisier cues, occluded cues."""
    p = study.protocol
    sets = {"cue15": study.cues(pats, seeds, p.cue_strength, *NOISE["phase2_cue"])}
    for sd in settings["noise_levels"]:
        if sd != p.cue_noise:
            sets[f"noise{sd:g}"] = scarring.make_cues(pats, p.cue_strength, sd, seeds,
                                                      *NOISE["phase2_cue"])
    for f in settings["occlusions"]:
        sets[f"occlude{f:g}"] = occlude(sets["cue15"], f)
    return sets


def study_reference(methods, seeds, grid):
    """Every method on the three reference patterns from every cue set."""
    study = methods.study
    names, pats = reference_patterns(grid)
    S = len(seeds)
    pats_s = pats.unsqueeze(0).expand(S, *pats.shape).contiguous()
    cue_sets = reference_cue_sets(study, pats, seeds, methods.settings)
    res, examples = {}, {}
    for method in METHODS:
        mem, t_store = methods.store(method, pats_s)
        entry = {"train_seconds_all_seeds": t_store,
                 "stored_numbers": stored_numbers(method, mem, len(names), grid * grid,
                                                  methods.nca.n_params(),
                                                  study.protocol.f0, study.protocol.k0)}
        for cname, cues in cue_sets.items():
            V, t_rec = methods.recall(method, mem, cues)
            if not torch.isfinite(V).all():
                raise ValueError(f"{method} produced non-finite values on cue set {cname}")
            entry[cname] = summarize_scores(score(V, pats_s))
            entry[cname]["recall_seconds_all_seeds"] = t_rec
            entry[cname]["recall_seconds_per_cue"] = t_rec / (S * len(names))
            if cname == "cue15":
                examples[method] = V[0]
        if method == "scarring":
            entry["scar_strength"] = stats.summarize(mem["scar_strength"][-1])
            entry["train_similarity"] = [stats.summarize(x) for x in mem["train_similarity"]]
        res[method] = entry
    return {"patterns": names, "cue_sets": list(cue_sets), "methods": res}, pats, examples


def capacity_curve(methods, method, fam, cues_all, ks):
    """Recall of k = ks stored patterns (scarring: one sequential store, F/K kept at
    each k); returns (curve, seconds to store all k for scarring or None)."""
    curve, t_store = [], None
    if method == "scarring":
        mem, t_store = methods.store(method, fam, snapshots=ks)
    for k in ks:
        pats, cues = fam[:, :k], cues_all[:, :k]
        if method == "scarring":
            V, t_rec = methods.recall(method, mem, cues, fields=mem["snapshots"][k])
            ts = None
        else:
            m, ts = methods.store(method, pats)
            V, t_rec = methods.recall(method, m, cues)
        sc = summarize_scores(score(V, pats))
        curve.append({"k": k, **{mname: {"recall": v["recall"],
                                         "discrimination": v.get("discrimination")}
                                 for mname, v in sc.items()},
                      "store_seconds": ts, "recall_seconds": t_rec})
    return curve, t_store


def study_capacity(methods, seeds, grid):
    study, s = methods.study, methods.settings
    ks = list(methods.args.ks)
    fam = torch.stack([patterns.random_spot_patterns(ks[-1], grid, grid, spots=SPOTS,
                                                     radius=s["spot_radius"], seed=1000 + sd,
                                                     disjoint=False) for sd in seeds])
    cues_all = study.cues(fam, seeds, study.protocol.cue_strength, *NOISE["phase2_cue"])
    res = {}
    for method in METHODS:
        curve, t_store = capacity_curve(methods, method, fam, cues_all, ks)
        cap = metrics.capacity_readout(
            ks, [c["cosine"]["recall"]["mean"] for c in curve],
            [c["cosine"]["discrimination"]["ci95_low"] if c["cosine"]["discrimination"]
             else None for c in curve], recall_threshold=s["recall_threshold"])
        res[method] = {"curve": curve, "capacity": cap}
        if method == "scarring":
            res[method]["store_seconds_all_k"] = t_store
    return {"ks": ks, "family": {"spots": SPOTS, "radius": s["spot_radius"], "disjoint": False,
                                 "seed": "1000 + run seed"},
            "capacity_rule": f"largest k with mean recall cosine > {s['recall_threshold']} and "
                             f"the discrimination 95% lower bound > 0 at every k up to it",
            "methods": res}


# ------------------------------------------------------------------ figure

def _plot_examples(fig, ref, methods, examples, names, n):
    """Rows 1-2: recalled fields (seed 0) and cosine matrices, one column per method."""
    from common import figures

    for j, m in enumerate(methods):
        ax = fig.add_subplot(4, len(methods), j + 1)
        im = ax.imshow(torch.cat(list(examples[m]), dim=0).numpy(), cmap="magma", vmin=0,
                       vmax=0.8)
        ax.set_title(m, fontsize=8)
        ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.08, label="V (seed 0; A, B, C top to bottom)")
    for j, m in enumerate(methods):
        ax = fig.add_subplot(4, len(methods), len(methods) + j + 1)
        cos = ref[m]["cue15"]["cosine"]
        im = figures.plot_matrix(ax, np.asarray(cos["matrix_mean"]), names, names,
                                 f"disc {cos['discrimination']['mean']:.2f}",
                                 cbar_label=None)   # one bar for the row, below
        ax.set_xlabel("stored pattern", fontsize=7)
        if j == 0:
            ax.set_ylabel(f"cue (mean of n={n})", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.08, label="cosine similarity")


def _plot_recall_bars(ax, ref, methods, n, steps):
    x = np.arange(len(methods))
    for i, met in enumerate(("cosine", "iou", "pearson")):
        st = [ref[m]["cue15"][met]["recall"] for m in methods]
        mean = [s["mean"] for s in st]
        err = [[s["mean"] - (s["ci95_low"] if s["ci95_low"] is not None else s["mean"])
                for s in st],
               [(s["ci95_high"] if s["ci95_high"] is not None else s["mean"]) - s["mean"]
                for s in st]]
        ax.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=err, label=met, capsize=2)
    ax.set_xticks(x, methods, rotation=20, fontsize=8)
    ax.set_xlabel("method")
    ax.set_ylabel("similarity to own pattern")
    ax.set_title(f"recall from the 15% cue (mean, 95% interval; n={n}, "
                 f"{steps} Gray-Scott steps)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))


def _plot_robustness(ax, result, ref, methods, n):
    sets = result["reference"]["cue_sets"]
    for m in methods:
        ax.plot(range(len(sets)), [ref[m][c]["iou"]["recall"]["mean"] for c in sets], "o-",
                label=m)
    ax.set_xticks(range(len(sets)), sets, fontsize=8)
    ax.set_xlabel("cue set (noise std, occluded fraction)")
    ax.set_ylabel("recall IoU (mean)")
    ax.set_title(f"robustness (n={n})", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))


def _plot_capacity(fig, cap, methods, n):
    from common import figures

    for i, met in enumerate(("cosine", "iou")):
        ax = fig.add_subplot(4, 3, 10 + i)
        for m in methods:
            figures.plot_band(ax, cap["ks"],
                              [c[met]["recall"] for c in cap["methods"][m]["curve"]], m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("patterns stored k")
        ax.set_ylabel(f"recall ({met})")
        ax.set_title(f"capacity, mean and 95% interval, n={n}", fontsize=9)
    ax = fig.add_subplot(4, 3, 12)
    for m in methods:
        st = [c["cosine"]["discrimination"] for c in cap["methods"][m]["curve"]]
        ks = [k for k, s in zip(cap["ks"], st) if s]
        if ks:
            figures.plot_band(ax, ks, [s for s in st if s], m)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("patterns stored k")
    ax.set_ylabel("discrimination index (cosine)")
    ax.set_title(f"discrimination, n={n}", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))


def plot(result, examples, path):
    import matplotlib.pyplot as plt

    ref = result["reference"]["methods"]
    methods = [m for m in METHODS if m in ref]
    n, steps = len(result["seeds"]), result["config"]["recall_steps"]
    fig = plt.figure(figsize=(18, 12))
    _plot_examples(fig, ref, methods, examples, result["reference"]["patterns"], n)
    _plot_recall_bars(fig.add_subplot(4, 2, 5), ref, methods, n, steps)
    _plot_robustness(fig.add_subplot(4, 2, 6), result, ref, methods, n)
    _plot_capacity(fig, result["capacity"], methods, n)
    fig.subplots_adjust(hspace=0.6, wspace=0.5, right=0.88)
    from common import figures
    figures.save_figure(fig, path, dpi=80, layout=False)


# ------------------------------------------------------------------ main

def run(args, seeds) -> dict:
    """The NCA, then both studies on the CPU."""
    settings = settings_of(args)
    model, nca_info = cue_nca(args, settings)
    study = scarring.Study(protocol_of(args), "cpu")
    methods = Methods(study, args, settings, seeds, model)
    t0 = time.perf_counter()
    reference, _, examples = study_reference(methods, seeds, args.grid)
    capacity = study_capacity(methods, seeds, args.grid)
    return {"settings": settings, "rule": study.rule.as_dict(), "nca": nca_info,
            "reference": reference, "capacity": capacity, "examples": examples,
            "wall": time.perf_counter() - t0}


def report(reference, capacity):
    ref = reference["methods"]
    print(f"{'method':16s} {'cosine':>24s} {'iou':>24s} {'discrimination(cos)':>24s}  capacity")
    for m in METHODS:
        c = ref[m]["cue15"]
        print(f"{m:16s} {stats.format_stat(c['cosine']['recall']):>24s} "
              f"{stats.format_stat(c['iou']['recall']):>24s} "
              f"{stats.format_stat(c['cosine']['discrimination']):>24s}  "
              f"{capacity['methods'][m]['capacity']}")


def main(argv=None):
    args = cli.parse(Args, cli.split_commas(argv, "--ks"),
                     description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    if device.type != "cpu":
        print(f"note: {device} requested; this study runs on the CPU (its timings are CPU "
              f"timings)")
    r = run(args, seeds)
    result = {**cli.envelope(args, seeds, "cpu", r["wall"]), "methods": list(METHODS),
              "nca": r["nca"], "reference": r["reference"], "capacity": r["capacity"],
              "timing_note": "every method on the CPU; a shared machine makes timings "
                             "pessimistic"}
    result["config"].update(r["settings"], scar_rule=r["rule"])
    with cli.staged_output(args.out_dir(), Args.study) as out:
        cli.write_json_atomic(out / f"{Args.study}.json", result)
        plot(result, r["examples"], out / f"{Args.study}.png")
    report(r["reference"], r["capacity"])
    print(f"wrote {args.out_dir() / (Args.study + '.json')} and "
          f"{args.out_dir() / (Args.study + '.png')}")


if __name__ == "__main__":
    cli.run_cli(main)
