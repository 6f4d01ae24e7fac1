"""Pictures and videos for the main study (the I/O edge: nothing here touches physics).

`save_fields` and `write_video` are generic (any list of (H, W) fields); `write_all`
draws the main study's figures from the results of scarring_validation.py.
The matplotlib backend is left alone (importing this in a notebook keeps the notebook's
backend); command-line entry points choose one before drawing.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

CMAP = "viridis"
VIDEO_CRF = 18          # libx264 quality (0 lossless .. 51 worst; 18 looks lossless)
VIDEO_PRESET = "veryfast"   # libx264 speed: 2.5x faster than its default on our fields,
                            # same size within 3% (100 frames of 512 x 1024)


def save_fields(path, fields, titles, ncols=None, suptitle=None, vmax=1.0, cmap=CMAP,
                cbar_label="V (activator concentration)"):
    """A row (or grid) of 2D fields with titles, one shared colour scale, its colour bar
    labelled `cbar_label` (say what the colour is: "V", "F", "cosine similarity")."""
    n = len(fields)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.7 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, field, title in zip(axes.flat, fields, titles):
        field = field.cpu().numpy() if isinstance(field, torch.Tensor) else field
        im = ax.imshow(field, cmap=cmap, vmin=0, vmax=vmax if vmax is not None else field.max())
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label=cbar_label)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _video_frame(frames_by_panel, labels, t, step_text, scale):
    """One RGB uint8 frame: the panels side by side (viridis), each labelled, the step
    counter in the first panel's lower left corner, padded to even height and width
    (yuv420p needs even sizes)."""
    import cv2

    panels = []
    for i, (frames, label) in enumerate(zip(frames_by_panel, labels)):
        f = frames[t]
        f = f.detach().cpu().float().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
        img = (np.clip(np.nan_to_num(f), 0, 1) * 255).astype(np.uint8)
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale),
                         interpolation=cv2.INTER_NEAREST)
        img = cv2.applyColorMap(img, cv2.COLORMAP_VIRIDIS)[..., ::-1]   # BGR -> RGB
        img = np.ascontiguousarray(img)
        for text, org in ((label, (6, 18)), (step_text if i == 0 else "", (6, img.shape[0] - 8))):
            if text:   # white on a black box: readable on any field colour
                (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
                x, y = org
                cv2.rectangle(img, (x - 3, y - th - 3), (x + tw + 3, y + base), (0, 0, 0), -1)
                cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                            cv2.LINE_AA)
        panels.append(img)
    frame = np.concatenate(panels, axis=1)
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def _encode_h264(path, frames, fps) -> None:
    """Frames (iterable of equal (H, W, 3) uint8 RGB, H and W even) to an H.264 MP4 with
    the ffmpeg binary imageio-ffmpeg ships (no system ffmpeg needed)."""
    import imageio_ffmpeg

    writer = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = imageio_ffmpeg.write_frames(
                    str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                    quality=None, macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-crf", str(VIDEO_CRF), "-preset", VIDEO_PRESET,
                                   "-movflags", "+faststart"])
                writer.send(None)
            writer.send(frame)
    finally:
        if writer is not None:
            writer.close()


def _encode_mp4v(path, frames, fps) -> None:
    """Fallback: OpenCV's MPEG-4 part 2 (mp4v) encoder; plays in VLC, not in browsers."""
    import cv2

    writer = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {path} (mp4v codec unavailable)")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        if writer is not None:
            writer.release()


def write_video(path, frames_by_panel, labels, steps=None, fps=20, scale=2) -> str:
    """MP4 of several V-field sequences side by side, the simulation step burned into
    every frame.

    frames_by_panel: list of (T, H, W) tensors or arrays in [0, 1], one per panel (T may
    differ: the shortest wins). labels: one per panel. steps: the simulation step of each
    frame (at least T values; default the frame index, shown as "frame t").
    H.264 in yuv420p with even frame sizes and the index up front (+faststart), so
    browsers and slide software play it, through imageio-ffmpeg's bundled encoder; if that
    package is missing, a warning and OpenCV's mp4v instead. Written beside `path` and
    renamed into place at the end: an interrupted write leaves any earlier file intact.
    Returns the codec used, "h264" or "mp4v".
    """
    path = Path(path)
    if len(labels) != len(frames_by_panel) or not frames_by_panel:
        raise ValueError(f"{len(frames_by_panel)} panels but {len(labels)} labels")
    T = min(len(f) for f in frames_by_panel)
    if steps is not None and len(steps) < T:
        raise ValueError(f"steps has {len(steps)} values for {T} frames")
    texts = [f"step {steps[t]}" if steps is not None else f"frame {t}" for t in range(T)]
    frames = (_video_frame(frames_by_panel, labels, t, texts[t], scale) for t in range(T))
    tmp = path.with_name(f".{path.stem}.partial{path.suffix or '.mp4'}")
    try:
        try:
            import imageio_ffmpeg  # noqa: F401
            encode, codec = _encode_h264, "h264"
        except ImportError:
            warnings.warn(f"{path.name}: imageio-ffmpeg is not installed, so the video is "
                          f"MPEG-4 part 2 (mp4v), which browsers do not play; "
                          f"pip install imageio-ffmpeg for H.264", stacklevel=2)
            encode, codec = _encode_mp4v, "mp4v"
        encode(tmp, frames, fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return codec


def _band(ax, steps, curves, label, color, bounds=(0.0, 1.0)):
    """Mean curve over seeds with its 95% interval shaded (a t interval clipped to the
    metric's bounds, as stats.summarize does). curves: (T, S)."""
    from stats import t_quantile_975

    c = curves.double().numpy()
    mean = c.mean(1)
    S = c.shape[1]
    ax.plot(steps, mean, label=label, color=color)
    if S > 1:
        half = t_quantile_975(S - 1) * c.std(1, ddof=1) / np.sqrt(S)
        lo, hi = np.clip(mean - half, *bounds), np.clip(mean + half, *bounds)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.25, lw=0)


def summary_figure(path, results):
    c, cfg = results["curves"], results["config"]
    n = results["phase1"]["scarred_final_similarity"]["n"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    _band(ax, c["phase1_steps"], c["phase1_scarred"], "scarred", "C0")
    _band(ax, c["phase1_steps"], c["phase1_control"], "control (no scarring)", "C3")
    ax.axhline(cfg["gate"], color="gray", ls=":", lw=1, label="scar gate")
    ax.set(title=f"Phase 1: training ({cfg['train_steps']} steps, {n} seeds)", xlabel="step",
           ylabel="cosine similarity to target")
    ax = axes[1]
    _band(ax, c["phase2_steps"], c["phase2_scarred"], "scarred F/K, cue", "C0")
    _band(ax, c["phase2_steps"], c["phase2_control"], "default F/K, cue", "C3")
    _band(ax, c["phase2_steps"], c["phase2_uncued"], "scarred F/K, no cue", "C2")
    _band(ax, c["phase2_steps"], c["phase2_control_uncued"], "default F/K, no cue", "C7")
    ax.set(title=f"Phase 2: recall ({cfg['recall_steps']} steps, {n} seeds)", xlabel="step",
           ylabel="cosine similarity to target")
    ax = axes[2]
    p3 = results["phase3"]
    names = list(p3["pattern_recall_qualities"])
    x = np.arange(len(names))
    for offset, key, label, color in ((-0.27, "pattern_recall_qualities", "scarred", "C0"),
                                      (0.0, "control_recall_qualities", "default F/K", "C3"),
                                      (0.27, "cue_similarities", "cue at step 0", "0.6")):
        stats = [p3[key][name] for name in names]
        ax.bar(x + offset, [s["mean"] for s in stats], 0.25, yerr=_bar_errs(stats),
               capsize=3, label=label, color=color)
    if results["reference_scale"]:
        ax.axhline(0.8, color="k", ls="--", lw=1, label="published claim (> 0.80)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set(title=f"Phase 3: recall of each of 3 stored ({cfg['multi_recall_steps']} steps, "
                 f"{n} seeds)", ylabel="cosine similarity to its pattern")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    grid = cfg["grid"]
    smoke = "" if results["reference_scale"] else f" - smoke run at {grid}x{grid}"
    fig.suptitle(f"Parametric scarring, mean and 95% interval over {n} seeds{smoke}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bar_errs(stats):
    """Asymmetric error bars [[below], [above]] from summarize dicts (0 where undefined)."""
    lo = [s["mean"] - s["ci95_low"] if s["ci95_low"] is not None else 0.0 for s in stats]
    hi = [s["ci95_high"] - s["mean"] if s["ci95_high"] is not None else 0.0 for s in stats]
    return [lo, hi]


def write_all(out, results, target, targets, p1, p2, p3, video=True):
    """Every PNG (and MP4) of the main study into `out`, and the final fields as .npz."""
    out = Path(out)
    seed, names, cfg = results["seeds"][0], list(targets), results["config"]
    a1, a2, a3 = p1["arms"], p2["arms"], p3["arms"]
    save_fields(out / "target.png", [target] + list(targets.values()),
                ["phase 1-2 target"] + [f"phase 3 {n}" for n in names])
    save_fields(out / "phase1_training.png", [target, a1["scarred"]["V"][0], a1["control"]["V"][0]],
                ["target", f"scarred (sim {a1['scarred']['final']['cosine'][0]:.2f})",
                 f"control (sim {a1['control']['final']['cosine'][0]:.2f})"],
                suptitle=f"Phase 1, seed {seed}: V after {cfg['train_steps']} training steps")
    sim = {arm: a2[arm]["final"]["cosine"][0] for arm in a2}
    save_fields(out / "phase2_recall.png",
                [p2["cue"][0], a2["scarred"]["V"][0], a2["control"]["V"][0], a2["uncued"]["V"][0]],
                [f"cue (sim {p2['cue_metrics']['cosine'][0]:.2f})",
                 f"scarred (sim {sim['scarred']:.2f})", f"control (sim {sim['control']:.2f})",
                 f"scarred, no cue (sim {sim['uncued']:.2f})"],
                suptitle=f"Phase 2, seed {seed}: V after {cfg['recall_steps']} recall steps")
    fields, titles = [], []
    for i, n in enumerate(names):
        sc, ct = a3["scarred"], a3["control"]
        fields += [targets[n], p3["cues"][0, i], sc["V"][0, i], ct["V"][0, i]]
        titles += [f"{n}", "cue", f"scarred (sim {sc['matrix']['cosine'][0, i, i]:.2f})",
                   f"control (sim {ct['matrix']['cosine'][0, i, i]:.2f})"]
    save_fields(out / "phase3_recall.png", fields, titles, ncols=4,
                suptitle=f"Phase 3, seed {seed}: recall of each stored pattern "
                         f"({cfg['multi_recall_steps']} steps)")
    strength = results["phase1"]["total_scar_strength"]["per_seed"][0]
    save_fields(out / "scar_maps.png",
                [p1["F"][0].cpu(), p1["K"][0].cpu(), p3["F"][0].cpu(), p3["K"][0].cpu()],
                [f"phase 1 F (F0={cfg['f0']})", f"phase 1 K (K0={cfg['k0']})",
                 "phase 3 F (A+B+C)", "phase 3 K (A+B+C)"], ncols=4, vmax=cfg["f_max"],
                cmap="magma", suptitle=f"Scar maps, seed {seed} (scar strength {strength:.1f})",
                cbar_label="F and K")
    summary_figure(out / "summary.png", results)
    save_final_fields(out, p1, p2, p3)
    if video:
        fr1 = (a1["scarred"]["frames"][:, 0], a1["control"]["frames"][:, 0])
        write_video(out / "phase1_training.mp4", list(fr1), ["scarred", "control"],
                    steps=_frame_steps(cfg["train_steps"], len(fr1[0])))
        fr2 = (p2["frames"]["scarred"], p2["frames"]["control"])
        write_video(out / "phase2_recall.mp4", list(fr2), ["scarred recall", "control recall"],
                    steps=_frame_steps(cfg["recall_steps"], len(fr2[0])))


def _frame_steps(steps: int, frames: int) -> list[int]:
    """The simulation step of each of `frames` frames filmed every max(1, steps // 100)
    steps from step 0 (scarring.evolve's frame_every)."""
    every = max(1, steps // 100)
    return [i * every for i in range(frames)]


def save_final_fields(out, p1, p2, p3) -> None:
    """The final V of every arm and the scarred F, K, as arrays to re-plot without
    re-running: fields.npz (keys phase1_scarred_V, ..., phase3_F; seeds first)."""
    arrays = {f"phase1_{a}_V": r["V"] for a, r in p1["arms"].items()}
    arrays.update({f"phase2_{a}_V": r["V"] for a, r in p2["arms"].items()})
    arrays.update({f"phase3_{a}_V": r["V"] for a, r in p3["arms"].items()})
    arrays.update(phase1_F=p1["F"], phase1_K=p1["K"], phase3_F=p3["F"], phase3_K=p3["K"],
                  phase2_cue=p2["cue"], phase3_cues=p3["cues"])
    np.savez_compressed(Path(out) / "fields.npz",
                        **{k: v.detach().cpu().numpy() for k, v in arrays.items()})


# ---- panels shared by the studies ---------------------------------------------------------

def plot_matrix(ax, mean, rows, cols, title, vmin=0.0, vmax=1.0, cmap="viridis", n=None,
                cbar_label="cosine similarity", xlabel="stored pattern", ylabel="cue"):
    """Heat map of a (C, P) matrix with its values written in the cells, a labelled
    colour bar (cbar_label=None: none, e.g. when panels share one) and the number of
    seeds behind each mean in the title (n)."""
    m = np.asarray(mean, dtype=float)
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if m[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_title(title if n is None else f"{title} (n = {n})", fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    if cbar_label is not None:
        ax.figure.colorbar(im, ax=ax, label=cbar_label, shrink=0.85)
    return im


def plot_band(ax, x, stats, label, ylabel=None, **kw):
    """Mean line with its 95% interval as a band, from a list of summarize dicts.

    The band is never cut by the axis: with autoscaling it is inside the data limits
    anyway; if the caller fixed the y limits before, they are widened to hold it (set
    limits after this call only from the band, e.g. via ax.get_ylim()). ylabel: the y
    axis label (say what the metric is, "cosine similarity")."""
    mean = [s["mean"] for s in stats]
    lo = [s["ci95_low"] if s["ci95_low"] is not None else s["mean"] for s in stats]
    hi = [s["ci95_high"] if s["ci95_high"] is not None else s["mean"] for s in stats]
    fixed = not ax.get_autoscaley_on()
    line, = ax.plot(x, mean, marker="o", ms=3, label=label, **kw)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), lw=0)
    finite = [v for v in lo + hi if v is not None and np.isfinite(v)]
    if fixed and finite:
        y0, y1 = ax.get_ylim()
        pad = 0.02 * (max(finite) - min(finite) or 1.0)
        ax.set_ylim(min(y0, min(finite) - pad), max(y1, max(finite) + pad))
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    return line


def save_figure(fig, path, dpi: int = 90) -> None:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


# ---- experiments/associative.py ------------------------------------------------------

def associative_rows(figures, conditions, path) -> None:
    """Per condition (seed 0): the half cue of the ring, its recall at the protocol's
    length and settled, the settled uniform V, and the scar map (F minus the background)."""
    names = list(figures)
    fig, axes = plt.subplots(len(names), 5, figsize=(8, 1.7 * len(names) + 0.4), squeeze=False)
    for row, name in zip(axes, names):
        f, e = figures[name], conditions[name]
        comp = e["settled"]["parts"]["B 0.5"]["completion"]["cosine"]["mean"]
        settled = (f"settled (step {e['settle']['steps_run']}), completion "
                   f"{'nan' if comp is None else f'{comp:.2f}'}")
        panels = (("half cue of B (cyan: kept part)", f["cue"], "magma", (0, 0.6)),
                  ("recall at the protocol's length", f["read"], "magma", (0, 0.6)),
                  (settled, f["settled"], "magma", (0, 0.6)),
                  ("uniform V start, settled", f["uniform"], "magma", (0, 0.6)),
                  ("scar map: F - F background", f["F"] - f["F_bg"], "coolwarm", (-0.05, 0.05)))
        for ax, (title, img, cmap, (lo, hi)) in zip(row, panels):
            if img is not None:
                ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].contour(f["half_B_keep"].float(), levels=[0.5], colors="cyan", linewidths=0.5)
        row[0].set_ylabel(f"{name}\n({e['grid']}^2)", fontsize=7)
    fig.suptitle("V in [0, 0.6]; seed 0", fontsize=7)
    from common import figures as figs
    figs.save_figure(fig, path, dpi=60)


def associative_capacity(body, path, n) -> None:
    """Settled completion and selectivity (cosine) against k, each condition and the
    modern Hopfield network on the same cues; mean and 95% interval."""
    from common import figures as figs

    curves = {name: e["capacity"] for name, e in body["conditions"].items() if "capacity" in e}
    curves["modern Hopfield"] = body["references"]["modern_hopfield"]["capacity"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, cap in curves.items():
        ks = cap["ks"]
        st = [cap["by_k"][str(k)]["settled"] for k in ks]
        style = {"ls": "--", "color": "k"} if name == "modern Hopfield" else {}
        figs.plot_band(axes[0], ks, [s["completion"]["cosine"] for s in st], name, **style)
        figs.plot_band(axes[1], ks, [s["completion"]["iou"] for s in st], name, **style)
        kk = [k for k, s in zip(ks, st) if "selectivity" in s]
        if kk:
            figs.plot_band(axes[2], kk, [cap["by_k"][str(k)]["settled"]["selectivity"]["cosine"]
                                         for k in kk], name, **style)
    for ax, title, line in zip(axes, ("completion (cosine)", "completion (IoU)",
                                      "selectivity of half cues (cosine)"), (0.8, 0.8, 0.5)):
        ax.axhline(line, color="gray", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="k stored (held-out blobs)", title=f"{title}, settled, n={n}")
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figs.save_figure(fig, path, dpi=70)


def associative_targets(body, path, n, names_of_patterns=("A", "B", "C")) -> None:
    """Each condition's settled read-outs against the issue's targets (dots: mean; bars:
    95% interval; dotted line: the target)."""
    from common import figures as figs

    conds = body["conditions"]
    names = list(conds)
    panels = (("half-cue completion", lambda s, p: s["parts"][f"{p} 0.5"]["completion"]["cosine"], 0.8),
              ("half-cue selectivity", lambda s, p: s["selectivity_half"][p]["cosine"], 0.5),
              ("stored-cue recall", lambda s, p: s["stored"][p]["cosine"], 0.9))
    fig, axes = plt.subplots(1, 5, figsize=(15, 0.35 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    for ax, (title, get, line) in zip(axes, panels):
        for j, p in enumerate(names_of_patterns):
            _dots(ax, y + 0.2 * (j - 1), [get(conds[c]["settled"], p) for c in names], p)
        ax.axvline(line, color="gray", ls=":")
        ax.set_title(title, fontsize=8)
    for ax, (title, key) in zip(axes[3:], (("uniform V: largest", "uniform"),
                                           ("never-stored: largest", "never_stored"))):
        levels = list(conds[names[0]]["settled"][key])
        for j, lvl in enumerate(levels):
            _dots(ax, y + 0.8 * (j / max(1, len(levels) - 1) - 0.5) * (len(levels) > 1),
                  [conds[c]["settled"][key][lvl]["largest"]["cosine"] for c in names], lvl)
        ax.axvline(0.3, color="gray", ls=":")
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.legend(fontsize=5)
        ax.set_xlabel(f"cosine, settled, n={n}", fontsize=7)
    axes[0].set_yticks(y, names, fontsize=7)
    figs.save_figure(fig, path, dpi=70)


def _dots(ax, y, stats, label) -> None:
    mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats])
    lo = np.array([m if s["ci95_low"] is None else s["ci95_low"] for s, m in zip(stats, mean)])
    hi = np.array([m if s["ci95_high"] is None else s["ci95_high"] for s, m in zip(stats, mean)])
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", ms=3, label=label, lw=0.8)
