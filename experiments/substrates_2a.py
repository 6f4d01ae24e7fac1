"""Experiment 2A's substrates, scarred: the public study's three-substrate vowel comparison
and its audio-injection experiments 1A-rev1 and 1A-rev2, reproduced with seeds.

Three parts (`--parts`):

  2a    The public study's experiment 2A: the three published vowel images (a, i, u; the
        encoding of inputs.audio.published_vowel_image) at --grid (128^2 as published)
        are stored, then each is cued by a copy that keeps --cue-keep of its cells (the
        published code zeroes each cell with probability 0.7) and the recalled state is
        classified by the stored image of highest Pearson correlation (2A's read-out).
        Substrates (--substrates), the first three as 2A defined them:
          rd                Gray-Scott, the image written straight into F (+0.01 x) and
                            K (-0.005 x); cue V += 0.5 cue, 50 steps; the state carries
                            from one cue to the next (2A never resets between cues).
          hopfield          2A's continuous Hopfield substrate (weights 1/N, T 0.5).
          kuramoto          2A's oscillators: coupling 0.1 over radius 3, natural
                            frequencies uniform in [0.8, 1.2], dt 0.01; cue theta +=
                            pi cue; up to --kuramoto-max-steps until the order parameter
                            exceeds 0.7; read cos(theta); no scar (2A's store wrote none).
          rd_trained        Gray-Scott scarred by the project's --rule during training
                            (scarring.Study: the protocol's phase-3 store), cue V = 0.5 cue.
          hopfield_gain     the Hopfield substrate with weight scale 1 (loop gain 1/T = 2).
          kuramoto_hebbian  models.kuramoto with Hebbian coupling scars (radius 3).
        Beside each: the cue alone read the same way (what no medium does).
  rev2  1A-rev2: each vowel's waveform (inputs.audio.published_phoneme_audio) split into
        five bands (Butterworth, zero phase) injected at five discs along the midline
        ("tonotopic"); the three emergent V patterns are compared (off-diagonal cosine),
        then the medium trains on each vowel in turn with the published self-target scar
        (match map of V with itself every 100 samples, scaled to the sample rate) and
        each vowel is re-presented; the answer is the emergent pattern nearest the recall.
  rev1  1A-rev1: the same with the raw waveform injected into one central disc.
  battery  the competing-memories battery (battery.py: compete, refuse, complete,
        overlap, capacity) on the Kuramoto medium with Hebbian coupling scars and on the
        Hopfield substrate at weight scale 1 (models/memories_2a.py), at --battery-grid.

Time scale of rev1/rev2: the published runs took 10 medium steps per sample at 44.1 kHz
(220,500 steps per 0.5 s vowel); by default this runs --audio-rate 8000 and
--steps-per-sample 2 (8,000 steps) with the injection per sample scaled so that the drive
per medium step is the published one. The published runs had no randomness; here the
seed draws a small V noise (--start-noise) on every start. Every presentation starts
from the published equilibrium (a V = 0.5 disc run 2 x --recall-steps before the
emergent patterns, 1 x before training and recall: the published 1,000 and 500) and
settles --recall-steps (500) after its sound.

substrates_2a.json: the envelope, then "2a": {substrate: {accuracy, cue_accuracy,
own_r, best_other_r, ...}}, "rev2" and "rev1": {off_diagonal, accuracy, ...}, each beside
"published"; "battery": {medium: battery.run_battery's rows and verdict}.

    python -m experiments.substrates_2a --threads 1           # 8 seeds, 128^2
    python -m experiments.substrates_2a --quick               # seconds
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import ClassVar

from common import cli
from common.cli import RunArgs, arg
import stats
from protocol import Protocol, noise_seeds

torch, np, memory, metrics, audio, substrate, kuramoto, hopfield_substrate = cli.lazy_modules(
    "torch", "numpy", "memory", "metrics", "inputs.audio", "substrate", "models.kuramoto",
    "models.hopfield_substrate")

PARTS = ("2a", "rev2", "rev1", "battery")
MEDIA_2A = ("kuramoto", "hopfield_substrate")
SUBSTRATES = ("rd", "hopfield", "kuramoto", "rd_trained", "hopfield_gain", "kuramoto_hebbian")
VOWELS = "aiu"
BATTERY_ROWS = ("compete", "refuse", "complete", "overlap", "capacity")   # battery.ROWS
PUBLISHED = {"2a": {"rd": 0.667, "hopfield": 1.000, "kuramoto": 0.333},
             "rev2": {"accuracy": 1 / 3, "off_diagonal": 0.833},
             "rev1": {"accuracy": 1 / 3, "off_diagonal": 0.811}}
# 2A's direct write of a pattern x into the medium: F += 0.01 x, K -= 0.005 x, clamped.
RD_WRITE, RD_F_RANGE, RD_K_RANGE, RD_INJECT, RD_RECALL = 0.01, (0.01, 0.08), (0.035, 0.08), 0.5, 50
# 1A-rev1/rev2 geometry on the 256 grid (scaled with --audio-grid): the disc of the
# equilibrium start, rev1's injection disc, rev2's bands (Hz) and their disc centres (x).
REF_GRID, EQ_RADIUS, REV1_RADIUS, REV2_RADIUS = 256, 20, 20, 15
REV2_BANDS = ((0, 500, 32), (500, 1000, 64), (1000, 2000, 128), (2000, 4000, 192),
              (4000, 8000, 224))
REV = {"rev1": {"strength": 0.05, "scar_inside_sample": True},
       "rev2": {"strength": 0.1, "scar_inside_sample": False}}
PUBLISHED_RATE, PUBLISHED_STEPS_PER_SAMPLE, SCAR_EVERY_PUBLISHED = 44100, 10, 100


@dataclass
class Args(RunArgs, Protocol):
    """The Protocol's flags (rd_trained and the audio parts use its medium and rule), plus:"""
    study: ClassVar[str] = "substrates_2a"
    grid: int = arg(128, "grid of part 2a (2A's 128)", lo=16, hi=1024)
    parts: tuple[str, ...] = arg(PARTS, "parts to run", choices=PARTS)
    substrates: tuple[str, ...] = arg(SUBSTRATES, "substrates of part 2a", choices=SUBSTRATES)
    cue_keep: float = arg(0.3, "share of a pattern's cells a 2a cue keeps (2A's code: 0.3)",
                          lo=0.0, hi=1.0, lo_open=True)
    kuramoto_max_steps: int = arg(10_000, "most recall steps of 2A's oscillators per cue",
                                  lo=10)
    hebbian_train_steps: int = arg(100, "kuramoto_hebbian: training steps per pattern", lo=1)
    hebbian_recall_steps: int = arg(400, "kuramoto_hebbian: recall steps", lo=1)
    audio_grid: int = arg(128, "grid of rev1/rev2 (published 256; geometry scales)",
                          lo=32, hi=1024)
    audio_rate: int = arg(8000, "sample rate of the injected waveform, Hz (published 44100)",
                          lo=1000, hi=44100)
    steps_per_sample: int = arg(2, "medium steps per audio sample (published 10)", lo=1, hi=100)
    audio_seconds: float = arg(0.5, "length of each vowel, s (published 0.5)", lo=0.01, hi=2.0)
    battery_grid: int = arg(64, "grid of the battery part (the issue's target: 256)", lo=32,
                            hi=1024)
    battery_media: tuple[str, ...] = arg(MEDIA_2A, "media run on the battery "
                                         "(models/memories_2a.py)", choices=MEDIA_2A)
    battery_max_steps: int = arg(3000, "most recall steps of the battery's media; a recall "
                                 "stops earlier once settled (the issue reads at >= 3,000 "
                                 "steps or settled)", lo=10)
    battery_rows: tuple[str, ...] = arg(BATTERY_ROWS, "battery rows to run", choices=BATTERY_ROWS)
    battery_ks: tuple[int, ...] = arg((1, 2, 4, 8, 16), "stored counts of the capacity row",
                                      lo=1, hi=64)
    start_noise: float = arg(0.01, "std of the V noise on every rev1/rev2 start (the "
                                   "published runs: none)", lo=0.0, hi=0.5)

    def check(self) -> None:
        if self.audio_rate < 2 * 2420 and {"rev1", "rev2"} & set(self.parts):
            raise ValueError(f"--audio-rate {self.audio_rate}: must be >= 4840 Hz (the "
                             f"vowels reach 2,420 Hz)")


QUICK = {"grid": 32, "audio_grid": 32, "seeds": 2, "kuramoto_max_steps": 40,
         "hebbian_train_steps": 10, "hebbian_recall_steps": 20, "multi_train_steps": 20,
         "multi_recall_steps": 20, "recall_steps": 20, "audio_rate": 5000, "audio_seconds": 0.05,
         "steps_per_sample": 1, "battery_grid": 32, "battery_ks": (1, 2),
         "battery_max_steps": 400}


# ---- part 2a -----------------------------------------------------------------------------

def gen(seed: int):
    return torch.Generator().manual_seed(int(seed))


def draws(seeds, role: str, index: int, shape, kind="rand"):
    """(S, *shape) draws, one generator per seed (protocol.noise_seeds)."""
    fn = torch.rand if kind == "rand" else torch.randn
    return torch.stack([fn(shape, generator=gen(s)) for s in noise_seeds(seeds, role, index)])


def rd_published(T, cues, p):
    """2A's RD: write every image into F, K; recall the cues in turn, state carried."""
    S = cues.shape[0]
    F = (p.f0 + RD_WRITE * T.sum(0)).clamp(*RD_F_RANGE).expand(S, -1, -1)
    K = (p.k0 - 0.5 * RD_WRITE * T.sum(0)).clamp(*RD_K_RANGE).expand(S, -1, -1)
    U, V = torch.ones_like(cues[:, 0]), torch.zeros_like(cues[:, 0])
    out = []
    for i in range(cues.shape[1]):
        V = (V + RD_INJECT * cues[:, i]).clamp(0.0, 1.0)
        for _ in range(RD_RECALL):
            U, V = substrate.gray_scott_step(U, V, F, K, p.du, p.dv, p.dt, p.decay, p.stencil)
        out.append(V)
    return torch.stack(out, 1), {"recall_steps": RD_RECALL}


def rd_trained(T, cues, p, seeds, device):
    """The project's rule scars during training (scarring.Study); fresh recall per cue."""
    import scarring

    study = scarring.Study(replace(p, grid=T.shape[-1]), device)
    store = study.store(T, seeds, p.multi_train_steps)
    res = study.recall(store["F"], store["K"], RD_INJECT * cues, T, p.multi_recall_steps,
                       metric_names=("pearson",), return_fields=True)
    return res["V"], {"recall_steps": p.multi_recall_steps,
                      "scarred_fraction": float(memory.scarred_cells({"F": store["F"]}, {"F": p.f0})
                                                .float().mean())}


def hopfield_run(T, cues, scale):
    S, C, H, W = cues.shape
    m = hopfield_substrate.HopfieldSubstrate(scale=scale)
    fields = m.fields(S, H, W)
    for i in range(T.shape[0]):
        fields = m.scar(None, T[i].expand(S, H, W), fields)
    fields = {"p": fields["p"]}      # (S, P, N): each seed's C cues share it
    (x,), taken = m.settle(m.initial_state(cues.flatten(0, 1)), fields)
    return x.view(S, C, H, W), {"steps_taken_mean": float(taken.float().mean()),
                                "final_abs_mean": float(x.abs().mean())}


def kuramoto_published(T, cues, seeds, max_steps):
    """2A's oscillators: random phases and frequencies, cues added to the phases in turn,
    each run until the order parameter passes 0.7 (or max_steps)."""
    S, C, H, W = cues.shape
    m = kuramoto.Kuramoto(coupling=0.1, omega=1.0, omega_spread=0.4, dt=0.01, scar_field="none",
                          readout="cosine")
    omega = draws(seeds, "other", 0, (H, W))
    fields = {"omega": 1.0 + (omega - 0.5) * 0.4, "J": torch.tensor(0.1)}
    theta = draws(seeds, "other", 1, (H, W)) * 2 * math.pi
    out, steps_run, order = [], [], []
    for i in range(C):
        theta = torch.remainder(theta + math.pi * cues[:, i], 2 * math.pi)
        run = torch.zeros(S, dtype=torch.long)
        moving = torch.ones(S, dtype=torch.bool)
        for _ in range(max_steps // 10):
            (new,) = m.step((theta,), fields, 10)
            theta = torch.where(moving.view(-1, 1, 1), new, theta)
            run += 10 * moving.long()
            moving &= kuramoto.order_parameter(theta) <= 0.7
            if not moving.any():
                break
        out.append(m.activity((theta,)))
        steps_run.append(run.float().mean().item())
        order.append(kuramoto.order_parameter(theta).mean().item())
    return torch.stack(out, 1), {"steps_run_mean": steps_run, "order_parameter": order}


def kuramoto_hebbian(T, cues, seeds, args):
    S, C, H, W = cues.shape
    m = kuramoto.Kuramoto()
    fields = m.fields(S, H, W)
    noise = 0.1 * draws(seeds, "train", 0, (T.shape[0], H, W), "randn")
    fields = m.train(fields, T.expand(S, -1, -1, -1), args.hebbian_train_steps, noise)
    fields = {k: v.repeat_interleave(C, 0) for k, v in fields.items()}
    (theta,) = m.initial_state(cues.flatten(0, 1))
    theta = theta + 0.1 * draws(seeds, "cue", 50, (C, H, W), "randn").flatten(0, 1)
    state = m.step((theta,), fields, args.hebbian_recall_steps)
    act = m.activity(state)
    order = float(kuramoto.order_parameter(state[0]).mean())
    return act.view(S, C, H, W), {"J_mean": float(fields["J"].mean()), "order_parameter": order,
                                  "lit_fraction": float((act > 0.5).float().mean())}


def classify(states, T):
    """(S, C, H, W) states against (P, H, W) images: Pearson (S, C, P), answers (S, C)."""
    S, C = states.shape[:2]
    r = torch.stack([metrics.pearson(states.flatten(0, 1).double(), t.double())
                     for t in T], -1).view(S, C, -1)
    return r, r.argmax(-1)


def accuracy_block(r, pred) -> dict:
    S, C, P = r.shape
    correct = (pred == torch.arange(C)).double()
    own = r.diagonal(dim1=1, dim2=2)
    other = r.masked_fill(torch.eye(C, dtype=torch.bool), -2).amax(-1)
    trials = int(correct.sum())
    lo, hi = stats.wilson_interval(trials, S * C)
    return {"accuracy": stats.summarize_tensor(correct.mean(1), bounds=(0, 1)),
            "trials": {"correct": trials, "n": S * C, "wilson_low": lo, "wilson_high": hi},
            "own_r": stats.summarize_tensor(own.mean(1), bounds=(-1, 1)),
            "best_other_r": stats.summarize_tensor(other.mean(1), bounds=(-1, 1)),
            "answers": pred.tolist()}


def run_2a(args, seeds, device):
    p, G = args, args.grid
    T = torch.stack([audio.published_vowel_image(v, G, G) for v in VOWELS])
    keep = draws(seeds, "cue", 0, (len(VOWELS), G, G)) <= args.cue_keep
    cues = T * keep
    body, examples = {}, {}
    cue_r, cue_pred = classify(cues, T)
    body["cue_alone"] = accuracy_block(cue_r, cue_pred)
    for name in args.substrates:
        t0 = time.perf_counter()
        with cli.progress(1, f"2a {name}") as bar:
            if name == "rd":
                states, info = rd_published(T, cues, p)
            elif name == "rd_trained":
                states, info = rd_trained(T, cues, p, seeds, device)
            elif name in ("hopfield", "hopfield_gain"):
                states, info = hopfield_run(T, cues, "published" if name == "hopfield" else 1.0)
            elif name == "kuramoto":
                states, info = kuramoto_published(T, cues, seeds, args.kuramoto_max_steps)
            else:
                states, info = kuramoto_hebbian(T, cues, seeds, args)
            bar.update(1)
        r, pred = classify(states.cpu(), T)
        body[name] = {**accuracy_block(r, pred), "mechanism": info,
                      "published": PUBLISHED["2a"].get(name),
                      "cost_s": time.perf_counter() - t0}
        examples[name] = states[0].cpu()
    return body, {"T": T, "cues": cues[0], "states": examples}


# ---- parts rev1 and rev2 -------------------------------------------------------------------

def disc(cx: float, cy: float, radius: float, grid: int):
    yy, xx = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return (((xx - cx) ** 2 + (yy - cy) ** 2).sqrt() < radius).float()


def band_signals(x, rate: int):
    """(M, T) zero-phase Butterworth band signals of x (1A-rev2's five bands; a band
    above the Nyquist frequency is the high-pass its code falls back to)."""
    from scipy.signal import butter, filtfilt

    nyq = rate / 2
    out = []
    for lo, hi, _ in REV2_BANDS:
        lo_n, hi_n = (min(max(f / nyq, 0.01), 0.99) for f in (lo, hi))
        if lo == 0:
            b, a = butter(4, hi_n, btype="low")
        elif hi >= nyq:
            b, a = butter(4, lo_n, btype="high")
        else:
            b, a = butter(4, [lo_n, hi_n], btype="band")
        out.append(filtfilt(b, a, x))
    return np.stack(out)


def injection(part: str, args):
    """(drive (P, M, T) per sample and disc, masks (M, H, W)) of each vowel."""
    G, s = args.audio_grid, args.audio_grid / REF_GRID
    waves = [audio.published_phoneme_audio(v, args.audio_seconds, args.audio_rate)
             for v in VOWELS]
    # the published drive per medium step: strength / 10 per step at 10 steps per sample
    strength = REV[part]["strength"] * args.steps_per_sample / PUBLISHED_STEPS_PER_SAMPLE
    if part == "rev1":
        masks = disc(G / 2, G / 2, REV1_RADIUS * s, G)[None]
        sig = np.stack([w[None] for w in waves])
    else:
        masks = torch.stack([disc(x * s, G / 2, REV2_RADIUS * s, G) for _, _, x in REV2_BANDS])
        sig = np.stack([band_signals(w, args.audio_rate) for w in waves])
    return torch.as_tensor(sig * strength, dtype=torch.float32), masks


def match_scar(V, F, K, p):
    """The published self-target scar: target = V itself (its gate always passes)."""
    m = V > p.match_threshold
    F = torch.where(m, F + p.scar_strength, F).clamp(p.f_min, p.f_max)
    K = torch.where(m, K - p.k_ratio * p.scar_strength, K).clamp(p.k_min, p.k_max)
    return F, K


def present(gs, drive, masks, args, p, part, scar: bool, eq_steps: int, start_noise):
    """reset_to_equilibrium, stream the drive (B, M, T), settle; F, K scarred in place
    when scar (the match map of V with itself every SCAR_EVERY_PUBLISHED published
    samples' worth of time)."""
    G = gs.width
    gs.reset(V=(0.5 * disc(G / 2, G / 2, EQ_RADIUS * G / REF_GRID, G)).expand(gs.batch, G, G))
    gs.run(eq_steps)
    gs.V = (gs.V + start_noise).clamp(0.0, 1.0)
    every = max(1, round(SCAR_EVERY_PUBLISHED * args.audio_rate / PUBLISHED_RATE))
    inside = REV[part]["scar_inside_sample"]
    n = drive.shape[-1]
    for i in range(n):
        gs.V = (gs.V + torch.einsum("bm,mhw->bhw", drive[:, :, i], masks)).clamp(0.0, 1.0)
        if scar and i % every == 0 and inside:
            for _ in range(args.steps_per_sample):
                gs.run(1)
                gs.F, gs.K = match_scar(gs.V, gs.F, gs.K, p)
        else:
            gs.run(args.steps_per_sample)
            if scar and i % every == 0:
                gs.F, gs.K = match_scar(gs.V, gs.F, gs.K, p)
    gs.run(p.recall_steps)     # the published settle: 500 steps


def run_rev(part: str, args, seeds, device):
    """Emergent patterns (no scar), scarred training on each vowel in turn, recall."""
    p, S, P, G = args, len(seeds), len(VOWELS), args.audio_grid
    drive, masks = injection(part, args)
    t0 = time.perf_counter()
    noise = lambda role, i, n: (args.start_noise * draws(seeds, role, i, (n, G, G), "randn")   # noqa: E731
                                ).flatten(0, 1)

    def medium(batch):
        return substrate.GrayScott(G, G, batch=batch, F=p.f0, K=p.k0, Du=p.du, Dv=p.dv, dt=p.dt,
                                   decay=p.decay, stencil=p.stencil, device=device)

    with cli.progress(3, f"{part} emergent patterns") as bar:
        gs = medium(S * P)
        present(gs, drive.repeat(S, 1, 1), masks, args, p, part, False, 2 * p.recall_steps,
                noise("other", 0, P))
        emergent = gs.V.view(S, P, G, G).clone()
        bar.update(3)
    cos = torch.stack([metrics.cosine_similarity(emergent.flatten(0, 1), emergent[:, j]
                                                 .repeat_interleave(P, 0)) for j in range(P)], -1)
    cos = cos.view(S, P, P)
    off = cos.masked_select(~torch.eye(P, dtype=torch.bool)).view(S, -1).mean(1)
    with cli.progress(P, f"{part} training") as bar:
        gs = medium(S)
        gs.F, gs.K = torch.full((S, G, G), p.f0), torch.full((S, G, G), p.k0)
        for v in range(P):
            present(gs, drive[v:v + 1].expand(S, -1, -1), masks, args, p, part, True,
                    p.recall_steps, noise("train", v, 1))
            bar.update(1)
        F, K = gs.F.clone(), gs.K.clone()
    with cli.progress(1, f"{part} recall") as bar:
        gs = medium(S * P)
        gs.F, gs.K = F.repeat_interleave(P, 0), K.repeat_interleave(P, 0)
        present(gs, drive.repeat(S, 1, 1), masks, args, p, part, False, p.recall_steps,
                noise("cue", 0, P))
        recalled = gs.V.view(S, P, G, G)
        bar.update(1)
    sims = torch.stack([metrics.cosine_similarity(recalled.flatten(0, 1),
                                                  emergent[:, j].repeat_interleave(P, 0))
                        for j in range(P)], -1).view(S, P, P)
    pred = sims.argmax(-1)
    spread = (recalled - recalled[:, :1]).abs().flatten(2).amax(-1)   # recall vs /a/'s
    correct = (pred == torch.arange(P)).double()
    body = {"off_diagonal": stats.summarize_tensor(off, bounds=(0, 1)),
            "similarity_matrix": cos.mean(0).tolist(),
            "accuracy": stats.summarize_tensor(correct.mean(1), bounds=(0, 1)),
            "answers": pred.tolist(), "recall_similarity": sims.mean(0).tolist(),
            "recall_max_difference_between_vowels": stats.summarize_tensor(spread[:, 1:].amax(1)),
            "scarred_fraction": stats.summarize_tensor(
                memory.scarred_cells({"F": F}, {"F": p.f0}, tolerance=1e-9).float().mean((1, 2))),
            "F_at_clamp_fraction": stats.summarize_tensor((F >= p.f_max - 1e-6).float().mean((1, 2))),
            "emergent_std": stats.summarize_tensor(emergent.std((2, 3)).mean(1)),
            "published": PUBLISHED[part],
            "time_scale": {"audio_rate": args.audio_rate, "steps_per_sample": args.steps_per_sample,
                           "steps_per_vowel": drive.shape[-1] * args.steps_per_sample,
                           "published_steps_per_vowel": int(PUBLISHED_RATE * 0.5 * 10)},
            "cost_s": time.perf_counter() - t0}
    return body, {"emergent": emergent[0], "recalled": recalled[0], "F": F[0]}


# ---- part battery ------------------------------------------------------------------------

def run_battery_part(args, seeds):
    """The competing-memories battery (battery.py) on each 2A medium."""
    import battery
    from models.memories_2a import MEMORIES

    cfg = battery.BatteryConfig(grid=args.battery_grid, ks=tuple(args.battery_ks),
                                k_main=min(4, max(2, args.battery_ks[-1])),
                                rows=tuple(args.battery_rows))
    body, figs = {}, {}
    for name in args.battery_media:
        t0 = time.perf_counter()
        memory = MEMORIES[name](max_steps=args.battery_max_steps)
        out = battery.run_battery(memory, seeds, cfg,
                                  progress=lambda m: None if args.quiet else print(m, flush=True))
        figs[name] = out.pop("figure", None)
        body[name] = {**out, "grid": args.battery_grid, "max_steps": args.battery_max_steps,
                      "settle_every_recall": memory.settle_summary(),
                      "cost_s": time.perf_counter() - t0}
    return body, figs


# ---- figure, report, run ------------------------------------------------------------------

def plot(path, figs, bodies) -> None:
    """Rows: the 2A images and seed 0's cues; each substrate's recalled states; rev1/rev2's
    emergent patterns, recalls and F scar (seed 0)."""
    import matplotlib.pyplot as plt

    from common import figures

    rows = []
    if "2a" in figs:
        f = figs["2a"]
        rows.append(("images", list(f["T"]), None))
        rows.append(("cues (seed 0)", list(f["cues"]), None))
        for name, st in f["states"].items():
            acc = bodies["2a"][name]["accuracy"]
            rows.append((f"{name}\nacc {acc['mean']:.2f}", list(st), None))
    for part in ("rev2", "rev1"):
        if part in figs:
            f, b = figs[part], bodies[part]
            rows.append((f"{part} emergent\noff-diag {b['off_diagonal']['mean']:.2f}",
                         list(f["emergent"]), None, (0.0, 1.0)))
            rows.append((f"{part} recall\nacc {b['accuracy']['mean']:.2f}",
                         list(f["recalled"]), f["F"], (0.0, 1.0)))
    for name, f in figs.get("battery", {}).items():
        if f is None:          # no compete/refuse/complete rows: no figure row
            continue
        v = bodies["battery"][name]["verdict"]
        rows.append((f"{name}\nbattery {bodies['battery'][name]['grid']}^2\ncompete "
                     f"{v['compete']}", [f["cue_mixed"], f["mixed"], f["cue_noise"]], f["noise"]))
    if not rows:       # a battery of capacity and overlap only: nothing to show
        fig = plt.figure(figsize=(3, 1))
        fig.text(0.5, 0.5, "no rows to show (battery without compete/refuse/complete)",
                 ha="center", fontsize=6)
        figures.save_figure(fig, path)
        return
    battery_only = set(figs) == {"battery"}
    fig, axes = plt.subplots(len(rows), 4, figsize=(6.4, 1.6 * len(rows)), squeeze=False)
    for r, (label, imgs, extra, *scale) in enumerate(rows):
        vmin, vmax = scale[0] if scale else (None, None)
        for c in range(4):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = imgs[c] if c < len(imgs) else extra
            if img is not None:
                ax.imshow(img.float().numpy(), cmap="magma" if c < 3 else "viridis",
                          **({"vmin": vmin, "vmax": vmax} if c < 3 else
                             {"vmin": 0.01, "vmax": 0.08} if vmin is not None else {}))
            if r == 0:
                ax.set_title((("mixed cue", "its state when read", "noise-0.1 cue",
                               "its state when read") if battery_only else
                              ("/a/ | mixed cue", "/i/ | its recall", "/u/ | noise cue",
                               "F scar (rev) | noise recall"))[c], fontsize=6)
        axes[r, 0].set_ylabel(label, fontsize=6)
    fig.suptitle("the competing-memories battery (seed 0; colour scale per panel)" if battery_only
                 else "2A substrates and 1A-rev1/rev2 (seed 0; 2A rows: colour scale per panel; "
                 "rev rows: V on 0..1; F scar 0.01..0.08)", fontsize=7)
    figures.save_figure(fig, path)


def fmt(stat) -> str:
    return stats.format_stat(stat)


def print_report(bodies, wall) -> None:
    print(f"{Args.study}: {wall:.0f} s")
    for name, b in bodies.get("2a", {}).items():
        t = b["trials"]
        print(f"  2a {name}: accuracy {fmt(b['accuracy'])} ({t['correct']}/{t['n']} trials, "
              f"Wilson [{t['wilson_low']:.2f}, {t['wilson_high']:.2f}]); own r "
              f"{fmt(b['own_r'])}, best other r {fmt(b['best_other_r'])}"
              + (f"; published {b['published']:.3f}" if b.get("published") is not None else ""))
    for part in ("rev2", "rev1"):
        if part in bodies:
            b = bodies[part]
            print(f"  {part}: off-diagonal cosine {fmt(b['off_diagonal'])} (published "
                  f"{b['published']['off_diagonal']:.3f}); accuracy {fmt(b['accuracy'])} "
                  f"(published 0.333); recalls of different vowels differ by at most "
                  f"{fmt(b['recall_max_difference_between_vowels'])}; F at its clamp on "
                  f"{fmt(b['F_at_clamp_fraction'])} of the grid")
    for name, b in bodies.get("battery", {}).items():
        parts = []
        if "compete" in b:
            parts.append(f"compete {fmt(b['compete']['rate'])} (larger {fmt(b['compete']['larger'])},"
                         f" smaller {fmt(b['compete']['smaller'])})")
        if "refuse" in b:
            refuse = max(r["settled"]["mean"] for r in b["refuse"].values())
            parts.append(f"refuse worst {refuse:.3f} (failed: "
                         f"{', '.join(b['verdict']['refuse_failed']) or 'none'})")
        if "complete" in b:
            parts.append(f"complete {fmt(b['complete']['settled'])}")
        if "capacity" in b:
            parts.append(f"capacity {b['capacity']['capacity']} (far end "
                         f"{b['capacity']['capacity_far_end']})")
        if "settle" in b:
            parts.append(f"settled {b['settle']['settled_share']:.3f} of the main cues, "
                         f"{b['settle']['steps']:.0f} steps on average (at most {b['max_steps']})")
        a = b["settle_every_recall"]
        parts.append(f"every recall: settled {a['settled']}/{a['recalls']}, "
                     f"{a['steps_mean']:.0f} steps on average")
        print(f"  battery {name} ({b['grid']}^2): " + "; ".join(parts) + f"; verdict {b['verdict']}")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    # the largest batch: kuramoto_hebbian's per-edge couplings, every seed x vowel
    cli.check_memory(args.seeds * len(VOWELS) * len(kuramoto.disc_offsets(3)),
                     max(args.grid, args.audio_grid) ** 2, torch.float32,
                     cli.resolve_device(args.device))
    seeds, device = cli.start(args)
    t0 = time.perf_counter()
    bodies, figs = {}, {}
    for part in PARTS:
        if part not in args.parts:
            continue
        if part == "2a":
            bodies[part], figs[part] = run_2a(args, seeds, device)
        elif part == "battery":
            bodies[part], figs[part] = run_battery_part(args, seeds)
        else:
            bodies[part], figs[part] = run_rev(part, args, seeds, device)
    wall = time.perf_counter() - t0
    result = {**cli.envelope(args, seeds, device, wall), **bodies}
    with cli.staged_output(args.out_dir(), Args.study) as out:
        plot(out / "substrates_2a.png", figs, bodies)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print_report(bodies, wall)


if __name__ == "__main__":
    cli.run_cli(main)
