"""Audio: spectrograms of synthetic vowels and spoken digits scarred into the medium.

Three parts (`--parts`), each run with every storage rule asked for (`--rules`, default
`--rule`, the published match-map):

  published  the published vowel task with its own encoding and constants (two sines per
             vowel, linear-frequency dB image in [0, 1], 256 x 256): /a/ alone (trained
             --train-steps, recalled --recall-steps from a --multi-cue-strength cue) against
             the unscarred medium, then /a/, /i/, /u/ stored in turn (--multi-train-steps
             each) and each recalled (--multi-recall-steps) from its own cue.
  vowels     the same three, then five vowels (a e i o u), from the formant synthesiser
             (inputs.audio.synthesize_vowel): each seed stores one synthesis token per
             vowel and is cued with another token (noise in the synthesis) plus cue noise,
             at --vowel-grid, in each --encodings.
  digits     spoken digits from --audio-dir (FSDD names {digit}_{speaker}_{index}.wav):
             one template per digit (the mean image of --template-speaker's
             --template-recordings; one index = one recording), cued by the speaker's
             other recordings (held out) and by every other speaker's, at --digit-grid.

Every cue is classified by the stored template nearest (cosine) to what it became:
the medium (the recalled V), the unscarred medium (the rule's own background), and three
read-outs without a medium: the cue itself at step 0, the cue binarised at its two-means
threshold, and the modern Hopfield network of experiments/baselines.py on that binary cue.
A tie (an empty V) is no answer. Rates carry Wilson 95% intervals over the units
named in the JSON (vowels: seed x vowel, each seed its own tokens; digits: recordings,
the rate averaged over seeds, which differ only in cue and training noise); medium and
cue are compared by an exact McNemar (sign) test over the same units. The medium counts
as useful only where its interval lies above the cue's.

Encodings (ENCODINGS): "contiguous" is the plain log-mel image; "islands" redraws it as
separate dots (inputs.audio.dot_lattice), because the scars of a contiguous image form
one connected network that any cue lights whole.

audio.json: the envelope, then "rules": {rule: {"published": {"single_a", "three"},
"vowels": {"3" | "5": {encoding: task}}, "digits": {encoding: task}}}. A task holds its
classes, grid, cue strength, encoding, cost and "groups" ("all", or "held_out" and
"other_speakers"), each with "accuracy" per method (a stats block: mean = the rate, Wilson interval, n),
"mcnemar_medium_vs_cue", "own_similarity" (cosine to the own template: cue at step 0,
medium, unscarred; t-interval over units), "confusion" (rows: class; columns: answer,
the last "none"), "similarity_by_class", "mechanism" and "verdict".

    python -m experiments.audio --sonify          # default: 8 seeds (digits 2)
    python -m experiments.audio --quick           # a smoke run: 32 x 32, few steps
    python -m experiments.audio --parts digits --rules channel surround --out DIR
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg
from protocol import Protocol, noise_seeds, protocol_of

torch, metrics, scarring, audio, hopfield, saved_states = cli.lazy_modules(
    "torch", "metrics", "scarring", "inputs.audio", "models.hopfield", "common.state")

PARTS = ("published", "vowels", "digits")
ENCODING_NAMES = ("contiguous", "islands")
DEFAULT_AUDIO_DIR = cli.ROOT / "assets" / "fsdd"
METHODS = ("medium", "unscarred", "cue", "cue_binarised", "modern_hopfield")
VOWEL_SETS = {3: "aiu", 5: "aeiou"}

# Encodings: (SpectrogramEncoding keywords, dot lattice (spacing, radius) in cells or None,
# cue strength). The cue strengths and dots are the best each encoding reached in the
# exploration (docs/findings/audio.md): a dotted cue must be stronger to kick a dot.
ENCODINGS = {
    "vowels": {"contiguous": ({}, None, 0.2),
               "islands": ({"preemphasis": 0.97, "mask_db": 20.0}, (8, 2.0), 0.3)},
    "digits": {"contiguous": ({}, None, 0.2),
               "islands": ({"mask_db": 30.0}, (8, 2.0), 0.4)},
}
LIT = 0.3            # a cell is lit (or in a template's mask) above this: the match level
TEMPLATE_TOKEN, CUE_TOKEN = 0, 100   # synthesis noise draws ("other" role) of each vowel
PUBLISHED = {"a_recall": 0.888, "a_unscarred": 0.452, "ratio": 1.97, "discrimination": 1 / 3}


@dataclass
class Args(RunArgs, Protocol):
    """The Protocol's flags (the published audio task shares its scar constants), with
    the audio task's recall length, plus the audio knobs."""
    study: ClassVar[str] = "audio"
    saved_state_starts: ClassVar[str] = (
        "every store of every part run starts from its U, V on its F, K; its grid must be "
        "each part's (--grid, --vowel-grid, --digit-grid) and the digits take its first "
        "--digit-seeds members")
    multi_recall_steps: int = arg(500, "recall steps of every stored set (the published "
                                       "audio task's 500)", lo=1)
    parts: tuple[str, ...] = arg(PARTS, "parts to run", choices=PARTS)
    rules: tuple[str, ...] | None = arg(None, "run every part with each of these storage "
                                           "rules (scarring.RULES; default: --rule)")
    encodings: tuple[str, ...] = arg(ENCODING_NAMES, "image encodings of vowels and digits",
                                     choices=ENCODING_NAMES)
    vowel_sets: tuple[int, ...] = arg((3, 5), "vowel sets: 3 (a i u) and/or 5 (a e i o u)",
                                      choices=(3, 5))
    vowel_grid: int = arg(64, "grid of the synthetic vowels", lo=16, hi=4096)
    digit_grid: int = arg(128, "grid of the spoken digits", lo=16, hi=4096)
    digit_seeds: int = arg(4, "seeds of the digits (the first of the run's seeds; they vary "
                              "only cue and training noise: intervals are over recordings)",
                           lo=1, hi=100_000)
    audio_dir: str | None = arg(None, "folder of WAVs named {digit}_{speaker}_{index}.wav "
                                         "(default: the shipped assets/fsdd)")
    template_speaker: str = arg("jackson", "speaker whose recordings make the templates")
    template_recordings: tuple[int, ...] = arg((0, 1, 2, 3, 4), "recording indices averaged "
                                               "into each digit's template (one index: one "
                                               "recording); the speaker's others are held out",
                                               lo=0)
    beta_per_sqrt_n: float = arg(1.0, "modern Hopfield beta * sqrt(N)", lo=0.0, lo_open=True)
    sonify: bool = arg(False, "also write WAVs (Griffin-Lim) of one digit's template and its "
                              "recalled V")

    def check(self) -> None:
        for name in self.rules or ():
            if name not in scarring.RULES:
                raise ValueError(f"--rules {name!r}: must be among "
                                 f"{', '.join(sorted(scarring.RULES))}")
        if self.init_from and "digits" in self.parts and self.digit_seeds > self.seeds:
            raise ValueError(f"--digit-seeds {self.digit_seeds}: with --init-from at most "
                             f"--seeds ({self.seeds}), the saved state's members")

    def saved_state_grids(self) -> dict:
        grids = {"published": ("--grid", self.grid), "vowels": ("--vowel-grid", self.vowel_grid),
                 "digits": ("--digit-grid", self.digit_grid)}
        return dict(grids[part] for part in self.parts)

    def rule_names(self) -> list[str]:
        return list(dict.fromkeys(self.rules or (self.rule,)))


QUICK = {"grid": 32, "vowel_grid": 32, "digit_grid": 32, "seeds": 2, "digit_seeds": 1,
         "train_steps": 40, "recall_steps": 30, "multi_train_steps": 30, "multi_recall_steps": 30}


# ---- inputs ------------------------------------------------------------------------------

def encoding(part: str, name: str):
    """(SpectrogramEncoding, dots or None, cue strength) of an ENCODINGS entry."""
    kw, dots, cue = ENCODINGS[part][name]
    return audio.SpectrogramEncoding(**kw), dots, cue


def draw(images, dots):
    return images if dots is None else audio.dot_lattice(images, *dots)


def vowel_images(vowels: str, grid: int, seeds, part_enc, first_index: int):
    """(S, P, H, W): one synthesis token per seed and vowel (noise role "other")."""
    enc, dots, _ = part_enc
    return torch.stack([torch.stack([
        draw(audio.vowel_image(v, grid, grid, enc=enc,
                               seed=noise_seeds([s], "other", first_index + i)[0]), dots)
        for i, v in enumerate(vowels)]) for s in seeds])


def load_digits(args) -> audio.DigitData:
    """Find and read every recording the digits part needs, up front (one clear error
    for a missing folder, no FSDD names, an unknown speaker, a bad WAV)."""
    folder = Path(args.audio_dir) if args.audio_dir else DEFAULT_AUDIO_DIR
    if args.audio_dir is not None and not folder.is_dir():
        raise FileNotFoundError(f"--audio-dir {folder}: folder not found")
    recs = audio.find_recordings(folder)
    speaker = args.template_speaker
    if speaker not in {r.speaker for r in recs}:
        raise audio.AudioError(f"--template-speaker {speaker!r}: no recordings in {folder} "
                               f"(speakers: {', '.join(sorted({r.speaker for r in recs}))})")
    templates, held, others, digits = audio.split_digits(recs, speaker, args.template_recordings)
    if len(digits) < 2:
        wanted = " ".join(map(str, args.template_recordings))
        raise audio.AudioError(f"--template-recordings {wanted}: {speaker} has them for "
                               f"{len(digits)} digit(s) in {folder}; at least 2 are needed")
    if not held and not others:
        raise audio.AudioError(f"{folder}: no recordings left to cue with (all of {speaker}'s "
                               f"are templates and there is no other speaker)")
    used = templates + held + others
    return audio.DigitData(folder, templates, held, others,
                           dict(zip(used, audio.load_recordings(used))), digits)


def digit_images(data, grid: int, part_enc):
    """Templates (P, H, W), cue images (C, H, W), labels (C,) and the group slices."""
    enc, dots, _ = part_enc
    templates, cues, labels, groups = audio.digit_task_images(data, grid, grid, enc)
    return draw(templates, dots), draw(cues, dots), labels, groups


# ---- store, recall, classify --------------------------------------------------------------

def run_task(study, templates, cue_images, labels, seeds, strength, beta_per_sqrt_n,
             progress) -> dict:
    """Store the templates (in turn, --multi-train-steps each), recall every cue on the
    scarred and on the unscarred medium in one batch, and classify each cue (METHODS)."""
    p, S = study.protocol, len(seeds)
    T = templates if templates.dim() == 4 else templates.unsqueeze(0).expand(S, *templates.shape)
    T = T.to(study.device, study.dtype)
    P = T.shape[1]
    cues = study.cues(cue_images, seeds, strength)
    store = study.store(T, seeds, p.multi_train_steps, snapshots=range(1, P + 1),
                        progress=f"{progress} store")
    F0, K0 = study.default_fields(S)
    res = study.recall(torch.cat([store["F"], F0]), torch.cat([store["K"], K0]),
                       cues.repeat(2, 1, 1, 1), torch.cat([T, T]), p.multi_recall_steps,
                       metric_names=("cosine",), return_fields=True,
                       progress=f"{progress} recall")
    sims = {"cue": res["initial"]["cosine"][:S], "medium": res["final"]["cosine"][:S],
            "unscarred": res["final"]["cosine"][S:]}
    preds = {k: metrics.nearest(v) for k, v in sims.items()}
    preds.update(no_medium_predictions(T.cpu(), cues.cpu(), beta_per_sqrt_n))
    V = res["V"]
    scars = [store["snapshots"][k][0][0] - (store["snapshots"][k - 1][0][0] if k > 1 else F0[0])
             for k in range(1, P + 1)]
    return {"templates": T.cpu(), "cues": cues.cpu(), "labels": labels, "sims": sims,
            "preds": preds, "V": V[:S], "V_unscarred": V[S:],
            "scar_maps": torch.stack(scars).cpu(),
            "train_similarity": store["train_similarity"].cpu(),
            "scarred_fraction": ((store["F"] != F0) | (store["K"] != K0)).float().mean().item()}


def no_medium_predictions(T, cues, beta_per_sqrt_n: float) -> dict:
    """(S, C) nearest templates of two read-outs without a medium: the cue binarised at
    its two-means threshold (what a medium that only thresholds its cue could do), and the
    modern Hopfield network's recall from that binary cue (bipolar templates at the match
    level, as in experiments/baselines.py)."""
    S, _, H, W = cues.shape
    beta = beta_per_sqrt_n / math.sqrt(H * W)
    out = {"cue_binarised": [], "modern_hopfield": []}
    for s in range(S):
        query = hopfield.binarize(cues[s])
        net = hopfield.ModernHopfield(hopfield.to_bipolar(T[s]), beta)
        xi, _ = net.recall(query)
        for name, state in (("cue_binarised", query), ("modern_hopfield", xi)):
            out[name].append(metrics.nearest(metrics.cosine_matrix(
                hopfield.to_image(state, H, W), T[s])))
    return {k: torch.stack(v) for k, v in out.items()}


def mechanism(raw, idx) -> dict:
    """Where the recalled V of the cues idx lights (metrics.template_leak at LIT)."""
    return metrics.template_leak(raw["templates"], raw["V"][:, idx], raw["labels"][idx], LIT)


def summarize_group(raw, idx, per_recording: bool, classes) -> dict:
    """Accuracy of every method with its interval, McNemar, own-class similarities,
    confusion matrices and the mechanism numbers, over the cues idx (a slice)."""
    lab = raw["labels"][idx]
    P = len(classes)

    def units(x):   # (S, C) -> per-unit values
        x = x.double()
        return x.mean(0) if per_recording else x.flatten()

    correct = {m: units(raw["preds"][m][:, idx] == lab) for m in METHODS}
    own = {m: raw["sims"][m][:, idx].gather(2, lab.view(1, -1, 1).expand(
        raw["sims"][m].shape[0], -1, 1)).squeeze(2) for m in ("cue", "medium", "unscarred")}
    confusion = {m: torch.zeros(P, P + 1, dtype=torch.long).index_put_(   # last: no answer
        (lab.repeat(raw["preds"][m].shape[0]), raw["preds"][m][:, idx].flatten() % (P + 1)),
        torch.tensor(1), accumulate=True).tolist() for m in METHODS}
    sim_by_class = {m: torch.stack([raw["sims"][m][:, idx][:, lab == c].mean((0, 1))
                                    for c in range(P)]).tolist() for m in raw["sims"]}
    acc = {m: stats.rate(v, "wilson") for m, v in correct.items()}
    return {
        "n_units": int(correct["medium"].numel()),
        "unit": "recording (correct share over seeds)" if per_recording else "seed x cue",
        "chance": 1 / P, "accuracy": acc,
        "mcnemar_medium_vs_cue": stats.sign_test(correct["medium"], correct["cue"],
                                                 ("medium", "cue")),
        "own_similarity": {m: stats.summarize(units(v), bounds=metrics.BOUNDS["cosine"])
                           for m, v in own.items()},
        "confusion": confusion,   # rows: true class; columns: answer, last "none" (a tie)
        "similarity_by_class": sim_by_class,
        "mechanism": mechanism(raw, idx),
        "verdict": {"medium_beats_cue": acc["medium"]["ci95_low"] > acc["cue"]["ci95_high"],
                    "cue_beats_medium": acc["cue"]["ci95_low"] > acc["medium"]["ci95_high"],
                    "medium_beats_unscarred":
                        acc["medium"]["ci95_low"] > acc["unscarred"]["ci95_high"],
                    "medium_above_chance": acc["medium"]["ci95_low"] > 1 / P}}


def task_block(raw, classes, groups, per_recording, **about) -> dict:
    P = len(classes)
    return {**about, "classes": classes,
            "train_similarity": [stats.summarize(raw["train_similarity"][p],
                                                   bounds=metrics.BOUNDS["cosine"])
                                 for p in range(P)],
            "scarred_fraction": raw["scarred_fraction"],
            "groups": {g: summarize_group(raw, idx, per_recording, classes)
                       for g, idx in groups.items()}}


# ---- the parts ---------------------------------------------------------------------------

def run_published(study, seeds, args) -> tuple[dict, dict]:
    """The published task: /a/ alone against the unscarred medium, then a, i, u."""
    p, S = study.protocol, len(seeds)
    T = torch.stack([audio.published_vowel_image(v, p.grid, p.grid) for v in "aiu"])
    t0 = time.perf_counter()
    a = T[:1].to(study.device, study.dtype)
    store = study.store(a, seeds, p.train_steps, progress="published /a/ store")
    cues = study.cues(a, seeds, p.multi_cue_strength)
    F0, K0 = study.default_fields(S)
    res = study.recall(torch.cat([store["F"], F0]), torch.cat([store["K"], K0]),
                       cues.repeat(2, 1, 1, 1), a, p.recall_steps, metric_names=("cosine",),
                       progress="published /a/ recall")
    recall, control = res["final"]["cosine"][:S, 0, 0], res["final"]["cosine"][S:, 0, 0]
    cos = metrics.BOUNDS["cosine"]
    single = {"cue_step0": stats.summarize(res["initial"]["cosine"][:S, 0, 0], bounds=cos),
              "recall": stats.summarize(recall, bounds=cos),
              "unscarred": stats.summarize(control, bounds=cos),
              "ratio": stats.summarize(recall / control),
              "train_similarity": stats.summarize(store["train_similarity"][0], bounds=cos),
              "published": PUBLISHED}
    raw = run_task(study, T, T, torch.arange(3), seeds, p.multi_cue_strength,
                   args.beta_per_sqrt_n, "published a,i,u")
    masks = T > LIT
    three = task_block(raw, list("aiu"), {"all": slice(0, 3)}, False, grid=p.grid,
                       cue_strength=p.multi_cue_strength, encoding="published (two sines, "
                       "linear-frequency dB, min-max to [0, 1])",
                       mask_area_per_vowel=masks.float().mean((1, 2)).tolist(),
                       mask_union_area=masks.any(0).float().mean().item(),
                       cost_s=time.perf_counter() - t0)
    return {"single_a": single, "three": three}, [("published_three", raw, list("aiu"))]


def run_vowels(study, seeds, args) -> tuple[dict, dict]:
    """Three and five synthetic vowels, in each encoding."""
    body, figs = {}, []
    for n in args.vowel_sets:
        vowels = VOWEL_SETS[n]
        for name in args.encodings:
            t0 = time.perf_counter()
            pe = encoding("vowels", name)
            T = vowel_images(vowels, args.vowel_grid, seeds, pe, TEMPLATE_TOKEN)
            X = vowel_images(vowels, args.vowel_grid, seeds, pe, CUE_TOKEN)
            raw = run_task(study, T, X, torch.arange(n), seeds, pe[2], args.beta_per_sqrt_n,
                           f"{n} vowels {name}")
            body.setdefault(str(n), {})[name] = task_block(
                raw, list(vowels), {"all": slice(0, n)}, False, grid=args.vowel_grid,
                cue_strength=pe[2], encoding=describe(pe), cost_s=time.perf_counter() - t0)
            figs.append((f"vowels_{n}_{name}", raw, list(vowels)))
    return body, figs


def run_digits(study, seeds, args, data: audio.DigitData) -> tuple[dict, dict]:
    """One template per digit; held-out and other speakers' recordings as cues."""
    body, figs = {}, []
    for name in args.encodings:
        t0 = time.perf_counter()
        pe = encoding("digits", name)
        T, X, lab, groups = digit_images(data, args.digit_grid, pe)
        raw = run_task(study, T, X, lab, seeds, pe[2], args.beta_per_sqrt_n, f"digits {name}")
        body[name] = task_block(
            raw, [str(d) for d in data.digits], groups, True, grid=args.digit_grid,
            cue_strength=pe[2], encoding=describe(pe), cost_s=time.perf_counter() - t0,
            template_speaker=args.template_speaker,
            template_recordings=list(args.template_recordings),
            cues={"held_out": [r.path.name for r in data.held_out],
                  "other_speakers": [r.path.name for r in data.others]})
        figs.append((f"digits_{name}", raw, body[name]["classes"]))
    return body, figs


def describe(pe) -> dict:
    enc, dots, _ = pe
    return {"spectrogram": asdict(enc), "dots": None if dots is None else
            {"spacing": dots[0], "radius": dots[1]}}


# ---- figures and sound ---------------------------------------------------------------------

def plot_examples(path, raw, classes, title, low_at_bottom=True) -> None:
    """Per class (rows): its template, the first cue of the class, what the medium and
    the unscarred medium made of it, and the scar the class added (F change), seed 0."""
    import matplotlib.pyplot as plt

    from common import figures

    lab = raw["labels"]
    cols = ("template", "cue (seed 0)", "recall V", "unscarred V", "scar added (F)")
    fig, axes = plt.subplots(len(classes), 5, figsize=(7.5, 1.45 * len(classes) + 0.4),
                             squeeze=False)
    smax = float(raw["scar_maps"].abs().max()) or 1.0
    for c, name in enumerate(classes):
        i = int((lab == c).nonzero()[0]) if (lab == c).any() else None
        panels = (raw["templates"][0, c], None if i is None else raw["cues"][0, i],
                  None if i is None else raw["V"][0, i],
                  None if i is None else raw["V_unscarred"][0, i], raw["scar_maps"][c])
        for j, img in enumerate(panels):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is not None:
                scar = j == 4
                ax.imshow(img.numpy(), cmap="RdBu_r" if scar else "magma",
                          vmin=-smax if scar else 0, vmax=smax if scar else 1)
            if c == 0:
                ax.set_title(cols[j], fontsize=7)
        axes[c, 0].set_ylabel(name, fontsize=8)
    rows = "low frequencies at the bottom" if low_at_bottom else "0 Hz at the top, as published"
    fig.suptitle(f"{title}; seed 0 (images: {rows}, colour 0..1; scar: F change, red up)",
                 fontsize=7)
    figures.save_figure(fig, path)


def plot_confusions(path, entries) -> None:
    """One row per (task, cue group), one column per method: the share of each class's
    cues (rows) classified as each template (columns)."""
    import matplotlib.pyplot as plt

    from common import figures

    fig, axes = plt.subplots(len(entries), len(METHODS), squeeze=False,
                             figsize=(3.0 * len(METHODS), 2.8 * len(entries)))
    for r, (label, block, classes) in enumerate(entries):
        for j, m in enumerate(METHODS):
            counts = torch.tensor(block["confusion"][m], dtype=torch.float64)
            share = counts / counts.sum(1, keepdim=True).clamp_min(1)
            acc = block["accuracy"][m]
            figures.plot_matrix(axes[r, j], share.numpy(), classes, [*classes, "none"],
                                f"{label}\n{m}: {acc['mean']:.2f} [{acc['ci95_low']:.2f}, "
                                f"{acc['ci95_high']:.2f}]",
                                cbar_label="share of the class's cues" if j == len(METHODS) - 1
                                else None, xlabel="answer (nearest template)", ylabel="class")
    figures.save_figure(fig, path)


def plot_accuracy(path, entries, rule) -> None:
    """Accuracy of the medium and the baselines per task, Wilson 95% intervals; the
    black tick is chance."""
    import matplotlib.pyplot as plt
    import numpy as np

    from common import figures

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(entries)), 4.2))
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        acc = [e[1]["accuracy"][m] for e in entries]
        rate = np.array([a["mean"] for a in acc])
        err = np.array([[a["mean"] - a["ci95_low"] for a in acc],
                        [a["ci95_high"] - a["mean"] for a in acc]])
        ax.bar(np.arange(len(entries)) + (j - (len(METHODS) - 1) / 2) * width, rate, width,
               yerr=np.maximum(err, 0), capsize=2, label=m.replace("_", " "))
    for i, e in enumerate(entries):
        ax.hlines(e[1]["chance"], i - 0.45, i + 0.45, colors="k", lw=1)
    ax.set_xticks(range(len(entries)), [e[0] for e in entries], rotation=30, ha="right",
                  fontsize=7)
    ax.set_ylim(0, 1.22)
    ax.set_ylabel("share of cues nearest their own template")
    ax.set_title(f"rule {rule}: medium vs no-medium baselines (Wilson 95%); tick = chance",
                 fontsize=8)
    ax.legend(fontsize=7, ncol=len(METHODS), loc="upper center")
    figures.save_figure(fig, path)


def sonify(out, raw, data: audio.DigitData, part_enc, prefix) -> list[str]:
    """The first held-out digit's template and its recalled V back to sound (Griffin-Lim
    via inputs.audio.image_to_audio), at the length of its recording."""
    import soundfile

    enc = part_enc[0]
    i = 0
    rec = (data.held_out + data.others)[i]
    sr = audio.FSDD_SAMPLE_RATE
    frames = audio.log_mel_db(data.sounds[rec], sr, enc).shape[1]
    c = int(raw["labels"][i])
    names = []
    for what, img in (("template", raw["templates"][0, c]), ("recall", raw["V"][0, i])):
        img = audio.PEAK * img / img.max().clamp_min(1e-6)
        name = f"{prefix}_{rec.path.stem}_{what}.wav"
        soundfile.write(str(out / name), audio.image_to_audio(img, sr, frames, enc), sr)
        names.append(name)
    return names


# ---- the run -----------------------------------------------------------------------------

def run_rule(args, rule, seeds, digit_seeds, data, device) -> tuple[dict, dict]:
    """Every part asked for, with one storage rule."""
    protocol, saved = replace(protocol_of(args), rule=rule), args.saved_state()

    def study(grid, n=len(seeds)):   # each part on its own grid (a saved state's n first)
        initial = None if saved is None else saved_states.members(saved, slice(0, n))
        return scarring.Study(replace(protocol, grid=grid), device, initial=initial)

    body, figs = {"rule": scarring.storage_rule(protocol).as_dict()}, []
    parts = {"published": lambda: run_published(study(args.grid), seeds, args),
             "vowels": lambda: run_vowels(study(args.vowel_grid), seeds, args),
             "digits": lambda: run_digits(study(args.digit_grid, len(digit_seeds)),
                                          digit_seeds, args, data)}
    for part in PARTS:
        if part in args.parts:
            body[part], more = parts[part]()
            figs += more
    return body, figs


def entries_of(body) -> dict:
    """{part: [(label, group block, classes)]} for the figures and the report."""
    out = {}
    if "published" in body:
        b = body["published"]["three"]
        out["published"] = [(f"published a,i,u {b['grid']}^2", b["groups"]["all"], b["classes"])]
    for n, by_enc in body.get("vowels", {}).items():
        for name, b in by_enc.items():
            out.setdefault("vowels", []).append(
                (f"{n} vowels {name} {b['grid']}^2", b["groups"]["all"], b["classes"]))
    for name, b in body.get("digits", {}).items():
        for g, block in b["groups"].items():
            out.setdefault("digits", []).append(
                (f"digits {name} {g.replace('_', ' ')} {b['grid']}^2", block, b["classes"]))
    return out


def write_outputs(out, rule, body, figs, data, args) -> None:
    """Figures (and sound) of one rule's run; the file names carry the rule when several ran."""
    tag = f"_{rule}" if len(args.rule_names()) > 1 else ""
    entries = entries_of(body)
    for part, es in entries.items():
        plot_confusions(out / f"audio_confusion_{part}{tag}.png", es)
    plot_accuracy(out / f"audio_accuracy{tag}.png", [e for es in entries.values() for e in es],
                  rule)
    for key, raw, classes in figs:
        plot_examples(out / f"audio_examples_{key}{tag}.png", raw, classes,
                      f"{key.replace('_', ' ')}, rule {rule}", not key.startswith("published"))
    if args.sonify and "digits" in body:
        name = args.encodings[0]
        raw = next(r for key, r, _ in figs if key == f"digits_{name}")
        body["digits"][name]["sonification"] = sonify(
            out, raw, data, encoding("digits", name), f"audio{tag}_{name}")


def print_report(bodies, wall) -> None:
    print(f"{Args.study}: {wall:.0f} s")
    for rule, body in bodies.items():
        print(f"rule {rule}:")
        if "published" in body:
            s = body["published"]["single_a"]
            print(f"  published /a/: recall {stats.format_stat(s['recall'])} (its cue at step "
                  f"0 {stats.format_stat(s['cue_step0'])}), unscarred "
                  f"{stats.format_stat(s['unscarred'])}, ratio {stats.format_stat(s['ratio'])}"
                  f" (published 0.888, 0.452, 1.97)")
        for es in entries_of(body).values():
            for label, g, _ in es:
                acc, own, mc = g["accuracy"], g["own_similarity"], g["mcnemar_medium_vs_cue"]
                print(f"  {label} (n={g['n_units']}): " + ", ".join(
                    f"{m.replace('modern_', '')} {stats.format_stat(acc[m])}" for m in METHODS)
                    + f"; McNemar p={mc['p_value']:.2g}; own recall "
                    f"{own['medium']['mean']:.3f} (cue at step 0 {own['cue']['mean']:.3f}); "
                    f"lit {g['mechanism']['lit_fraction']:.2f}, others' cells lit "
                    f"{g['mechanism']['others_exclusive_lit']:.2f}")


def check_libraries(parts) -> None:
    """One line naming the audio packages a part needs (the "audio" extra) if missing."""
    import importlib.util

    need = (["librosa"] if {"vowels", "digits"} & set(parts) else []) + \
        (["soundfile"] if "digits" in parts else [])
    missing = [name for name in need if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"--parts {' '.join(parts)} needs {', '.join(missing)}: pip install "
                          f"{' '.join(missing)} (or pip install '.[audio]')")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    check_libraries(args.parts)
    data = load_digits(args) if "digits" in args.parts else None   # bad input fails first
    seeds, device = cli.start(args)
    digit_seeds = list(range(args.seed, args.seed + args.digit_seeds))
    t0 = time.perf_counter()
    bodies, figs = {}, {}
    for rule in args.rule_names():
        bodies[rule], figs[rule] = run_rule(args, rule, seeds, digit_seeds, data, device)
    wall = time.perf_counter() - t0
    all_seeds = sorted(set(seeds) | (set(digit_seeds) if data else set()))
    result = {**cli.envelope(args, all_seeds, device, wall), "rules": bodies}
    result["config"].update(
        digit_seed_list=digit_seeds, encodings_table=ENCODINGS, lit_level=LIT,
        audio_dir=str(data.folder) if data else None,
        vowel_formants=dict(audio.VOWEL_FORMANTS),
        formant_bandwidths=list(audio.FORMANT_BANDWIDTHS),
        published_formants=dict(audio.PUBLISHED_FORMANTS),
        wilson="stats.rate (Wilson score interval of the units' correct shares)")
    with cli.staged_output(args.out_dir(), Args.study) as out:
        for rule, body in bodies.items():
            write_outputs(out, rule, body, figs[rule], data, args)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
    print_report(bodies, wall)


if __name__ == "__main__":
    cli.run_cli(main)
