"""Scarring beside the associative memories a researcher would pick instead (issue 5).

Methods, all on the same targets, the same cues and the same grid (64 x 64 by default):
  scarring        Gray-Scott with scars stored sequentially (scarring.store_patterns, 500
                  scarred steps per pattern), recall by running the medium from the cue
  unscarred       the same recall on the default F0/K0 medium (the control)
  hopfield_sync   classical Hebbian Hopfield (hopfield.py), synchronous updates
  hopfield_async  the same, asynchronous (random order, one cell at a time)
  hopfield_centred the covariance rule for biased patterns (rows minus their mean),
                  synchronous: the classical network with the standard fix for sparse images
  modern_hopfield Ramsauer et al. 2020, xi <- P^T softmax(beta P xi)
  nca             the seed-002 NCA trained to regrow the three reference targets from
                  their 15% cue (weights/nca_cue.pt; --retrain-nca trains it anew)
  cue             the cue itself, untouched (what every method starts from)

Hopfield networks get the cue binarised at its two-means threshold; their output is read
back as PEAK * (s + 1) / 2. Every recalled field is scored against every stored pattern
with the three metrics (cosine, iou, pearson).

Studies: (1) recall of the protocol's three patterns (A = square_spots offset by -1/4 of
the grid, B = ring, C = line) from the 15% cue: cue x pattern matrices and discrimination
index; (2) capacity: k equal-area random 3-spot patterns (patterns.random_spot_patterns,
a fresh family per seed), k up to where each method breaks; (3) robustness: cue noise
std and cue occlusion (the left part of the cue zeroed); (4) cost: numbers stored per
pattern, training and recall time on this machine (2 CPU cores shared with other jobs:
timings are pessimistic).

    python -m experiments.baselines                   # 8 seeds, 64 x 64 (minutes on CPU)
    python -m experiments.baselines --quick --out /tmp/b   # smoke test
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import metrics
import patterns
import scarring
from common import cli as experiment
from common import figures
from models import hopfield, nca
from patterns import make_pattern
from substrate import F0, K0

NAME = "baselines"
ROOT = Path(__file__).resolve().parents[1]
NCA_WEIGHTS = ROOT / "weights" / "nca_cue.pt"

GRID = 64
THREADS = 1
TRAIN_STEPS = 500          # scarred steps per pattern (protocol phase 3)
RECALL_STEPS = 500         # Gray-Scott recall steps (protocol phase 2)
CUE_STRENGTH = 0.15        # the 15% cue (protocol phase 2)
CUE_NOISE = scarring.CUE_NOISE
CAPACITY_KS = (1, 2, 4, 8, 16, 32)
SPOTS, SPOT_RADIUS = 3, 5.0   # capacity family: 3 discs of radius 5 cells per pattern
NOISE_LEVELS = (0.05, 0.1, 0.2)
OCCLUSIONS = (0.25, 0.5)   # fraction of columns (from the left) zeroed in the cue
BETA_PER_SQRT_N = 1.0      # modern Hopfield beta = this / sqrt(N) (attention scaling)
ASYNC_SWEEPS = 20
RECALL_THRESHOLD = 0.7     # capacity: mean recall cosine must stay above this...
# NCA (cue recall): trained on 32 x 32 crops of the 64 x 64 targets (the rule is local and
# translation-invariant, so crops keep the scale while costing a quarter of the CPU)
NCA_CROP, NCA_CROP_STRIDE = 32, 16
NCA_TRAIN_STEPS, NCA_TIME_BUDGET_S = 3000, 600.0
NCA_POOL, NCA_BATCH, NCA_ROLLOUT, NCA_LR = 128, 4, (12, 24), 2e-3
NCA_RECALL_STEPS = 24

QUICK = dict(grid=32, train_steps=20, recall_steps=20, ks=(1, 2), noise_levels=(0.05, 0.2),
             occlusions=(0.5,), async_sweeps=2, nca_recall_steps=4)
METHODS = ("scarring", "unscarred", "hopfield_sync", "hopfield_async", "hopfield_centred",
           "modern_hopfield", "nca", "cue")


# ------------------------------------------------------------------ patterns and cues

def reference_patterns(H, W) -> tuple[list[str], torch.Tensor]:
    s = W / 256
    names = ["A_spots", "B_ring", "C_line"]
    pats = torch.stack([make_pattern("square_spots", H, W, offset=(-64 * s, -64 * s)),
                        make_pattern("ring", H, W), make_pattern("line", H, W)])
    return names, pats


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

class Methods:
    """store(pats) then recall(cues) for every method; records the times."""

    def __init__(self, cfg, seeds, nca_model):
        self.cfg, self.seeds, self.nca = cfg, list(seeds), nca_model

    def store(self, method, pats, snapshots=()):
        """pats (S, P, H, W). Returns (memory object, seconds)."""
        t0 = time.perf_counter()
        S, P, H, W = pats.shape
        if method == "scarring":
            mem = scarring.store_patterns(pats, self.seeds, steps=self.cfg["train_steps"],
                                        snapshots=snapshots, progress=None)
        elif method in ("hopfield_sync", "hopfield_async", "hopfield_centred"):
            mem = [hopfield.ClassicalHopfield(hopfield.to_bipolar(pats[s]),
                                              centred=method == "hopfield_centred") for s in range(S)]
        elif method == "modern_hopfield":
            beta = self.cfg["beta_per_sqrt_n"] / math.sqrt(H * W)
            mem = [hopfield.ModernHopfield(hopfield.to_bipolar(pats[s]), beta) for s in range(S)]
        else:  # unscarred, nca, cue: nothing stored per pattern (the NCA was trained once)
            mem = None
        return mem, time.perf_counter() - t0

    def recall(self, method, mem, cues, fields=None):
        """cues (S, C, H, W) -> recalled V (S, C, H, W), seconds."""
        t0 = time.perf_counter()
        S, C, H, W = cues.shape
        if method in ("scarring", "unscarred"):
            F, K = (fields if fields is not None else (mem["F"], mem["K"])) if method == "scarring" \
                else (F0, K0)
            out = scarring.recall_matrix(F, K, cues, cues[:, :1], steps=self.cfg["recall_steps"],
                                       metric_names=(), return_fields=True)
            V = out["V"]
        elif method in ("hopfield_sync", "hopfield_async", "hopfield_centred", "modern_hopfield"):
            V = []
            for s in range(S):
                q = hopfield.binarize(cues[s])
                if method in ("hopfield_sync", "hopfield_centred"):
                    x, _ = mem[s].recall_sync(q)
                elif method == "hopfield_async":
                    x, _ = mem[s].recall_async(q, max_sweeps=self.cfg["async_sweeps"],
                                               seed=self.seeds[s])
                else:
                    x, _ = mem[s].recall(q)
                V.append(hopfield.to_image(x, H, W))
            V = torch.stack(V)
        elif method == "nca":
            g = torch.Generator().manual_seed(self.seeds[0] * 7919 + 5)
            with torch.no_grad():
                x = self.nca(nca.cue_state(cues.reshape(-1, H, W)), self.cfg["nca_recall_steps"], g)
            V = x[:, 0].clamp(0, 1).reshape(S, C, H, W)
        elif method == "cue":
            V = cues.clone()
        else:
            raise ValueError(f"unknown method {method!r}")
        return V, time.perf_counter() - t0


def stored_numbers(method, mem, n_patterns, N, nca_params) -> dict:
    """Numbers the memory holds, total and per pattern (per seed mean for scarring)."""
    if method == "scarring":
        changed = ((mem["F"] != F0) | (mem["K"] != K0)).flatten(1).sum(1).double()
        total = 2 * changed  # an F and a K value per scarred cell
        return {"total": metrics.summarize(total), "per_pattern": metrics.summarize(total / n_patterns),
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


def summarize_scores(sc: dict, names=None) -> dict:
    """Recall (own-pattern score, mean over patterns per seed), per pattern, the mean
    matrix and the discrimination index, for each metric."""
    out = {}
    for m, x in sc.items():
        S, C, P = x.shape
        n = min(C, P)
        diag = x[:, range(n), range(n)]
        entry = {"recall": metrics.summarize(diag.mean(1)),
                 "recall_per_pattern": [metrics.summarize(diag[:, i]) for i in range(n)],
                 "matrix_mean": x.mean(0)}
        if n >= 2:
            entry["discrimination"] = metrics.summarize(metrics.discrimination_per_seed(x))
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


def train_nca_cue(pats, cfg, seed, progress=True):
    """Train the NCA to turn the 15% cue of each crop of the stored patterns into it."""
    targets = nca_crops(pats, cfg["nca_crop"], cfg["nca_crop_stride"])
    strength = cfg["cue_strength"]

    def start(idx, g):
        t = targets[idx, 0]
        cue = (strength * t + CUE_NOISE * torch.randn(t.shape, generator=g)).clamp(0, 1)
        return nca.cue_state(cue)

    model = nca.NCA()
    hist = nca.train(model, targets, start, cfg["nca_train_steps"], pool_size=cfg["nca_pool"],
                     batch=cfg["nca_batch"], rollout=cfg["nca_rollout"], lr=NCA_LR, seed=seed,
                     time_budget_s=cfg["nca_time_budget"], progress="train NCA" if progress else None)
    return model, hist


# ------------------------------------------------------------------ the studies

def study_reference(methods, seeds, cfg):
    H = W = cfg["grid"]
    names, pats = reference_patterns(H, W)
    S = len(seeds)
    pats_s = pats.unsqueeze(0).expand(S, *pats.shape).contiguous()
    cue_sets = {"cue15": scarring.make_cues(pats, cfg["cue_strength"], CUE_NOISE, seeds)}
    for sd in cfg["noise_levels"]:
        if sd != CUE_NOISE:
            cue_sets[f"noise{sd:g}"] = scarring.make_cues(pats, cfg["cue_strength"], sd, seeds)
    for f in cfg["occlusions"]:
        cue_sets[f"occlude{f:g}"] = occlude(cue_sets["cue15"], f)
    res, examples = {}, {}
    for method in METHODS:
        mem, t_store = methods.store(method, pats_s)
        entry = {"train_seconds_all_seeds": t_store,
                 "stored_numbers": stored_numbers(method, mem, len(names), H * W,
                                                  methods.nca.n_params())}
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
            entry["scar_strength"] = metrics.summarize(mem["scar_strength"][-1])
            entry["train_similarity"] = [metrics.summarize(x) for x in mem["train_similarity"]]
        res[method] = entry
    return {"patterns": names, "cue_sets": list(cue_sets), "methods": res}, pats, examples


def study_capacity(methods, seeds, cfg):
    H = W = cfg["grid"]
    ks = list(cfg["ks"])
    kmax = ks[-1]
    fam = torch.stack([patterns.random_spot_patterns(kmax, H, W, spots=SPOTS, radius=cfg["spot_radius"],
                                                   seed=1000 + s, disjoint=False) for s in seeds])
    cues_all = scarring.make_cues(fam, cfg["cue_strength"], CUE_NOISE, seeds)
    res = {}
    for method in METHODS:
        curve = []
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
        cap = metrics.capacity_readout(
            ks, [c["cosine"]["recall"]["mean"] for c in curve],
            [c["cosine"]["discrimination"]["ci95_low"] if c["cosine"]["discrimination"] else None
             for c in curve], recall_threshold=cfg["recall_threshold"])
        res[method] = {"curve": curve, "capacity": cap}
        if method == "scarring":
            res[method]["store_seconds_all_k"] = t_store
    return {"ks": ks, "family": {"spots": SPOTS, "radius": cfg["spot_radius"], "disjoint": False,
                                 "seed": "1000 + run seed"},
            "capacity_rule": f"largest k with mean recall cosine > {cfg['recall_threshold']} and the "
                             f"discrimination 95% lower bound > 0 at every k up to it",
            "methods": res}


# ------------------------------------------------------------------ figure

def plot(result, pats, examples, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = result["reference"]["methods"]
    methods = [m for m in METHODS if m in ref]
    fig = plt.figure(figsize=(16, 11))
    # row 1: recalled fields (seed 0) per method, one column per method, stacked patterns
    for j, m in enumerate(methods):
        ax = fig.add_subplot(4, len(methods), j + 1)
        ax.imshow(torch.cat(list(examples[m]), dim=0).numpy(), cmap="magma", vmin=0, vmax=0.8)
        ax.set_title(m, fontsize=8)
        ax.axis("off")
    # row 2: matrices (cosine) per method
    for j, m in enumerate(methods):
        ax = fig.add_subplot(4, len(methods), len(methods) + j + 1)
        figures.plot_matrix(ax, np.asarray(ref[m]["cue15"]["cosine"]["matrix_mean"]),
                           result["reference"]["patterns"], result["reference"]["patterns"],
                           f"disc {ref[m]['cue15']['cosine']['discrimination']['mean']:.2f}")
    # row 3: recall bars per metric, and robustness
    ax = fig.add_subplot(4, 2, 5)
    x = np.arange(len(methods))
    for i, met in enumerate(("cosine", "iou", "pearson")):
        st = [ref[m]["cue15"][met]["recall"] for m in methods]
        mean = [s["mean"] for s in st]
        err = [[s["mean"] - (s["ci95_low"] if s["ci95_low"] is not None else s["mean"]) for s in st],
               [(s["ci95_high"] if s["ci95_high"] is not None else s["mean"]) - s["mean"] for s in st]]
        ax.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=err, label=met, capsize=2)
    ax.set_xticks(x, methods, rotation=20, fontsize=8)
    ax.set_ylabel("recall of own pattern (15% cue)")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(4, 2, 6)
    sets = result["reference"]["cue_sets"]
    for m in methods:
        ax.plot(range(len(sets)), [ref[m][c]["iou"]["recall"]["mean"] for c in sets], "o-", label=m)
    ax.set_xticks(range(len(sets)), sets, fontsize=8)
    ax.set_ylabel("recall IoU")
    ax.set_title("robustness (cue noise std, cue occlusion)", fontsize=9)
    ax.legend(fontsize=7)
    # row 4: capacity
    cap = result["capacity"]
    for i, met in enumerate(("cosine", "iou")):
        ax = fig.add_subplot(4, 3, 10 + i)
        for m in methods:
            figures.plot_band(ax, cap["ks"], [c[met]["recall"] for c in cap["methods"][m]["curve"]], m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("patterns stored k")
        ax.set_ylabel(f"recall {met}")
        ax.legend(fontsize=6)
    ax = fig.add_subplot(4, 3, 12)
    for m in methods:
        st = [c["cosine"]["discrimination"] for c in cap["methods"][m]["curve"]]
        ks = [k for k, s in zip(cap["ks"], st) if s]
        if ks:
            figures.plot_band(ax, ks, [s for s in st if s], m)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("patterns stored k")
    ax.set_ylabel("discrimination (cosine)")
    fig.subplots_adjust(hspace=0.45, wspace=0.35)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, "baselines_results")
    p.add_argument("--grid", type=int, default=GRID, help=f"grid side (default {GRID})")
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="scarred steps per pattern")
    p.add_argument("--recall-steps", type=int, default=RECALL_STEPS, help="Gray-Scott recall steps")
    p.add_argument("--cue-strength", type=float, default=CUE_STRENGTH)
    p.add_argument("--ks", default=",".join(map(str, CAPACITY_KS)), help="capacity pattern counts")
    p.add_argument("--beta-per-sqrt-n", type=float, default=BETA_PER_SQRT_N,
                   help="modern Hopfield beta * sqrt(N)")
    p.add_argument("--nca-weights", default=str(NCA_WEIGHTS), help="cue-recall NCA weights")
    p.add_argument("--retrain-nca", action="store_true", help="train the cue NCA anew (overwrites --nca-weights)")
    p.add_argument("--nca-time-budget", type=float, default=NCA_TIME_BUDGET_S)
    p.add_argument("--nca-train-steps", type=int, default=NCA_TRAIN_STEPS)
    experiment.add_threads_arg(p, THREADS)
    args = p.parse_args(argv)
    experiment.apply_threads(args)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)
    out = experiment.prepare_out_dir(args.out)
    try:
        ks = sorted({int(k) for k in args.ks.split(",") if k.strip()})
    except ValueError:
        raise ValueError(f"--ks {args.ks!r}: give comma-separated integers, e.g. 1,2,4") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"--ks {args.ks!r}: need pattern counts >= 1")
    if not 0.0 < args.cue_strength <= 1.0:
        raise ValueError(f"--cue-strength {args.cue_strength} must be in (0, 1]")
    if args.grid < 16:
        raise ValueError(f"--grid {args.grid} is too small (>= 16)")
    for flag in ("train_steps", "recall_steps", "nca_train_steps"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1")
    if not args.beta_per_sqrt_n > 0:
        raise ValueError("--beta-per-sqrt-n must be > 0")
    cfg = dict(grid=args.grid, train_steps=args.train_steps, recall_steps=args.recall_steps,
               cue_strength=args.cue_strength, ks=ks, noise_levels=NOISE_LEVELS, occlusions=OCCLUSIONS,
               async_sweeps=ASYNC_SWEEPS, nca_recall_steps=NCA_RECALL_STEPS, spot_radius=SPOT_RADIUS,
               beta_per_sqrt_n=args.beta_per_sqrt_n, recall_threshold=RECALL_THRESHOLD,
               nca_crop=NCA_CROP, nca_crop_stride=NCA_CROP_STRIDE, nca_train_steps=args.nca_train_steps,
               nca_time_budget=args.nca_time_budget, nca_pool=NCA_POOL, nca_batch=NCA_BATCH,
               nca_rollout=NCA_ROLLOUT)
    if args.quick:
        cfg.update(QUICK)
        cfg["spot_radius"] = SPOT_RADIUS * cfg["grid"] / GRID
        cfg.update(nca_train_steps=2, nca_time_budget=60.0, nca_pool=4, nca_batch=2, nca_rollout=(2, 3),
                   nca_crop=16)
    if device.type != "cpu":
        print(f"note: {device} requested; this study runs on the CPU (its timings are CPU timings)")

    # the cue-recall NCA: shipped weights, or train now
    weights = Path(args.nca_weights)
    H = W = cfg["grid"]
    if args.quick or args.retrain_nca or not weights.is_file():
        _, ref_pats = reference_patterns(H, W)
        model, hist = train_nca_cue(ref_pats, cfg, args.seed, progress=not args.quick)
        meta = {"grid": H, "history": hist, "command": experiment.environment_info(device)["command"]}
        if not args.quick:
            weights.parent.mkdir(parents=True, exist_ok=True)
            nca.save_weights(model, weights, meta)
        nca_info = {"trained_now": True, "weights": None if args.quick else str(weights)}
    else:
        model, meta = nca.load_weights(weights)
        if meta.get("grid") != H:
            print(f"note: {weights} was trained on {meta.get('grid')}x{meta.get('grid')} targets; "
                  f"running it at {H}x{W}")
        nca_info = {"trained_now": False, "weights": str(weights)}
    model.eval()
    hist = meta["history"]
    nca_info.update(params=model.n_params(), steps_done=hist["steps_done"], train_seconds=hist["seconds"],
                    loss_first=hist["loss"][0], loss_last_10_mean=float(np.mean(hist["loss"][-10:])),
                    train_config=hist["config"], train_command=meta.get("command"), grid=meta.get("grid"))

    methods = Methods(cfg, seeds, model)
    t0 = time.perf_counter()
    reference, pats, examples = study_reference(methods, seeds, cfg)
    capacity = study_capacity(methods, seeds, cfg)
    result = {"study": NAME, "seeds": seeds, "config": cfg, "methods": list(METHODS), "nca": nca_info,
              "reference": reference, "capacity": capacity, "seconds": time.perf_counter() - t0,
              "timing_note": "2 CPU cores shared with other jobs: timings are pessimistic",
              "environment": experiment.environment_info(device)}
    experiment.write_json_atomic(out / f"{NAME}.json", result)
    plot(result, pats, examples, out / f"{NAME}.png")

    ref = reference["methods"]
    print(f"{'method':16s} {'cosine':>24s} {'iou':>24s} {'discrimination(cos)':>24s}  capacity")
    for m in METHODS:
        c = ref[m]["cue15"]
        print(f"{m:16s} {metrics.format_stat(c['cosine']['recall']):>24s} "
              f"{metrics.format_stat(c['iou']['recall']):>24s} "
              f"{metrics.format_stat(c['cosine']['discrimination']):>24s}  "
              f"{capacity['methods'][m]['capacity']}")
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    experiment.run_cli(main)
