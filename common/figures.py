"""Pictures and videos for the main study (the I/O edge: nothing here touches physics).

`save_fields` and `write_video` are generic (any list of (H, W) fields); `write_all`
draws the main study's figures from the results of scarring_validation.py.
The matplotlib backend is left alone (importing this in a notebook keeps the notebook's
backend); command-line entry points choose one before drawing.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from common import figure_options

CMAP = "viridis"
VIDEO_CRF = 18          # libx264 quality (0 lossless .. 51 worst; 18 looks lossless)
VIDEO_PRESET = "veryfast"   # libx264 speed: 2.5x faster than its default on our fields,
                            # same size within 3% (100 frames of 512 x 1024)


MIN_FONT_PT = 8          # no annotation is drawn smaller (save_figure enforces it)
PANEL_INCHES = 2.6       # a field panel's target width; the cell scale is an integer
VECTOR_FORMATS = ("pdf", "svg")
MAX_AUTO_DPI = 600       # the most save_figure raises the dpi to (a bound on file size)


def figure_format() -> str:
    return figure_options.FORMAT


def figure_path(path) -> Path:
    """path with the suffix of the run's --format (scripts name their figures .png)."""
    path = Path(path)
    return path.with_suffix("." + figure_format()) if path.suffix == ".png" else path


def figure_dpi(default: int) -> int:
    """The run's --dpi, or the figure's own default."""
    return int(figure_options.DPI) if figure_options.DPI is not None else int(default)


def _image_cells_dpi(fig) -> float:
    """The dpi at which every image of the figure gets at least one pixel per cell."""
    need = 0.0
    for ax in fig.axes:
        for im in ax.get_images():
            rows, cols = im.get_array().shape[:2]
            box = ax.get_position()
            w_in, h_in = box.width * fig.get_figwidth(), box.height * fig.get_figheight()
            if w_in > 0 and h_in > 0:
                need = max(need, cols / w_in, rows / h_in)
    return need


def prepare_for_print(fig, path) -> None:
    """What every saved figure gets: no text below MIN_FONT_PT, and images drawn cell for
    cell (nearest neighbour on raster output, the raw array embedded in PDF and SVG)."""
    import matplotlib.text

    fig.canvas.draw()   # creates the tick labels, so that they are found below
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_text() and text.get_fontsize() < MIN_FONT_PT:
            text.set_fontsize(MIN_FONT_PT)
    vector = Path(path).suffix.lstrip(".") in VECTOR_FORMATS
    for ax in fig.axes:
        for im in ax.get_images():
            im.set_interpolation("none" if vector else "nearest")


def save_figure(fig, path, dpi: int = 90, layout: bool = True) -> Path:
    """Lay out, write and close a figure, in the run's --format and --dpi (the dpi raised
    where an image would get less than one pixel per cell); returns the path written."""
    path = figure_path(path)
    prepare_for_print(fig, path)
    if layout:
        fig.tight_layout()
    dpi = max(figure_dpi(dpi), min(MAX_AUTO_DPI, math.ceil(_image_cells_dpi(fig))))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def field_layout(shape, n: int, ncols: int, dpi: int, title_lines: int = 1,
                 suptitle: bool = False) -> dict:
    """Pixel geometry of a grid of field panels drawn cell for cell: each cell is an
    integer `scale` x `scale` block of pixels and every panel starts on a whole pixel, so
    the PNG holds each field exactly (as imsave would write it, enlarged)."""
    H, W = shape
    nrows = (n + ncols - 1) // ncols
    scale = max(1, round(PANEL_INCHES * dpi / max(H, W)))
    px = lambda inches: int(math.ceil(inches * dpi))   # noqa: E731
    pw, ph = W * scale, H * scale
    gap, title = px(0.15), px(0.2 + 0.17 * title_lines)
    top = px(0.4) if suptitle else px(0.05)
    bar = px(1.0)   # the colour bar and its label
    width = px(0.1) + ncols * pw + (ncols - 1) * gap + bar
    height = top + nrows * (title + ph) + (nrows - 1) * gap + px(0.1)
    panels = [(px(0.1) + (i % ncols) * (pw + gap),
               top + (i // ncols) * (title + ph + gap) + title) for i in range(n)]
    return {"scale": scale, "panel": (pw, ph), "size": (width, height), "panels": panels,
            "top": top, "bar_x": px(0.1) + ncols * pw + (ncols - 1) * gap + px(0.15),
            "bar_w": px(0.15)}


def save_fields(path, fields, titles, ncols=None, suptitle=None, vmax=1.0, cmap=CMAP,
                cbar_label="V (activator concentration)", dpi: int = 90) -> Path:
    """A row (or grid) of 2D fields with titles, one shared colour scale, its colour bar
    labelled `cbar_label` (say what the colour is: "V", "F", "cosine similarity").

    Drawn cell for cell: every field is shown at an integer number of pixels per cell
    (field_layout), never resampled between cells; returns the path written."""
    path = figure_path(path)
    dpi = figure_dpi(dpi)
    arrays = [f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
              for f in fields]
    n = len(arrays)
    ncols = ncols or n
    lines = max(str(t).count("\n") + 1 for t in titles)
    geo = field_layout(arrays[0].shape, n, ncols, dpi, lines, bool(suptitle))
    Wf, Hf = geo["size"]
    fig = plt.figure(figsize=(Wf / dpi, Hf / dpi), dpi=dpi)
    pw, ph = geo["panel"]
    top = vmax if vmax is not None else max(float(a.max()) for a in arrays)
    for a, title, (x, y) in zip(arrays, titles, geo["panels"]):
        if a.shape != arrays[0].shape:
            raise ValueError(f"save_fields: fields of shapes {a.shape} and {arrays[0].shape}")
        ax = fig.add_axes((x / Wf, 1 - (y + ph) / Hf, pw / Wf, ph / Hf))
        im = ax.imshow(a, cmap=cmap, vmin=0, vmax=top, interpolation="nearest", aspect="auto")
        ax.axis("off")
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10, y=1 - geo["top"] * 0.35 / Hf)
    cax = fig.add_axes((geo["bar_x"] / Wf, 1 - (geo["panels"][0][1] + ph) / Hf,
                        geo["bar_w"] / Wf, ph / Hf))
    fig.colorbar(im, cax=cax, label=cbar_label)
    prepare_for_print(fig, path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


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

    c = np.asarray(curves.cpu() if isinstance(curves, torch.Tensor) else curves, dtype=np.float64)
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
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    grid = cfg["grid"]
    smoke = "" if results["reference_scale"] else f" - smoke run at {grid}x{grid}"
    fig.suptitle(f"Parametric scarring, mean and 95% interval over {n} seeds{smoke}",
                 fontsize=11)
    save_figure(fig, path)


def _bar_errs(stats):
    """Asymmetric error bars [[below], [above]] from summarize dicts (0 where undefined)."""
    lo = [s["mean"] - s["ci95_low"] if s["ci95_low"] is not None else 0.0 for s in stats]
    hi = [s["ci95_high"] - s["mean"] if s["ci95_high"] is not None else 0.0 for s in stats]
    return [lo, hi]


def _first_seed(stat) -> float:
    return stat["per_seed"][0]


def write_all(out, results, fields, video=True) -> None:
    """Every figure (and, with the frame stacks, the MP4s) of the main study into `out`,
    from its results and its fields (scarring_validation.run_fields: the arrays of
    fields.npz), so a finished run redraws without simulating (--replot). Field panels
    show the first seed; their titles quote that seed's figures from the results."""
    out = Path(out)
    seed, cfg = results["seeds"][0], results["config"]
    r1, r2, r3 = results["phase1"], results["phase2"], results["phase3"]
    names = list(r3["pattern_recall_qualities"])
    targets = dict(zip(names, fields["phase3_targets"]))
    save_fields(out / "target.png", [fields["target"]] + list(targets.values()),
                ["phase 1-2 target"] + [f"phase 3 {n}" for n in names])
    save_fields(out / "phase1_training.png",
                [fields["target"], fields["phase1_scarred_V"][0], fields["phase1_control_V"][0]],
                ["target", f"scarred (sim {_first_seed(r1['scarred_final_similarity']):.2f})",
                 f"control (sim {_first_seed(r1['control_final_similarity']):.2f})"],
                suptitle=f"Phase 1, seed {seed}: V after {cfg['train_steps']} training steps")
    save_fields(out / "phase2_recall.png",
                [fields["phase2_cue"][0], fields["phase2_scarred_V"][0],
                 fields["phase2_control_V"][0], fields["phase2_uncued_V"][0]],
                [f"cue (sim {_first_seed(r2['cue_similarity']):.2f})",
                 f"scarred (sim {_first_seed(r2['scarred_recall_quality']):.2f})",
                 f"control (sim {_first_seed(r2['control_recall_quality']):.2f})",
                 f"scarred, no cue (sim {_first_seed(r2['uncued_recall_quality']):.2f})"],
                suptitle=f"Phase 2, seed {seed}: V after {cfg['recall_steps']} recall steps")
    panels, titles = [], []
    for i, n in enumerate(names):
        panels += [targets[n], fields["phase3_cues"][0, i], fields["phase3_scarred_V"][0, i],
                   fields["phase3_control_V"][0, i]]
        titles += [f"{n}", "cue",
                   f"scarred (sim {_first_seed(r3['pattern_recall_qualities'][n]):.2f})",
                   f"control (sim {_first_seed(r3['control_recall_qualities'][n]):.2f})"]
    save_fields(out / "phase3_recall.png", panels, titles, ncols=4,
                suptitle=f"Phase 3, seed {seed}: recall of each stored pattern "
                         f"({cfg['multi_recall_steps']} steps)")
    strength = _first_seed(r1["total_scar_strength"])
    save_fields(out / "scar_maps.png",
                [fields["phase1_F"][0], fields["phase1_K"][0], fields["phase3_F"][0],
                 fields["phase3_K"][0]],
                [f"phase 1 F (F0={cfg['f0']})", f"phase 1 K (K0={cfg['k0']})",
                 "phase 3 F (A+B+C)", "phase 3 K (A+B+C)"], ncols=4, vmax=cfg["f_max"],
                cmap="magma", suptitle=f"Scar maps, seed {seed} (scar strength {strength:.1f})",
                cbar_label="F and K")
    summary_figure(out / "summary.png", results)
    if video and "frames_phase1_scarred" in fields:
        fr1 = (fields["frames_phase1_scarred"], fields["frames_phase1_control"])
        write_video(out / "phase1_training.mp4", list(fr1), ["scarred", "control"],
                    steps=_frame_steps(cfg["train_steps"], len(fr1[0])))
        fr2 = (fields["frames_phase2_scarred"], fields["frames_phase2_control"])
        write_video(out / "phase2_recall.mp4", list(fr2), ["scarred recall", "control recall"],
                    steps=_frame_steps(cfg["recall_steps"], len(fr2[0])))


def _frame_steps(steps: int, frames: int) -> list[int]:
    """The simulation step of each of `frames` frames filmed every max(1, steps // 100)
    steps from step 0 (memory.Frames)."""
    every = max(1, steps // 100)
    return [i * every for i in range(frames)]


# ---- panels shared by the studies ---------------------------------------------------------

def plot_matrix(ax, mean, rows, cols, title, vmin=0.0, vmax=1.0, cmap="viridis", n=None, *,
                cbar_label, xlabel="stored pattern", ylabel="cue"):
    """Heat map of a (C, P) matrix with its values written in the cells, a colour bar
    labelled with the matrix's own quantity (cbar_label, required: "IoU", "cosine
    similarity"; None: no bar, e.g. when panels share one) and the number of seeds behind
    each mean in the title (n)."""
    m = np.asarray(mean, dtype=float)
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_title(title if n is None else f"{title} (n = {n})", fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
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
    save_figure(fig, path, dpi=60)


def associative_capacity(body, path, n) -> None:
    """Settled completion and selectivity (cosine) against k, each condition and the
    modern Hopfield network on the same cues; mean and 95% interval."""

    curves = {name: e["capacity"] for name, e in body["conditions"].items() if "capacity" in e}
    curves["modern Hopfield"] = body["references"]["modern_hopfield"]["capacity"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, cap in curves.items():
        ks = cap["ks"]
        st = [cap["by_k"][str(k)]["settled"] for k in ks]
        style = {"ls": "--", "color": "k"} if name == "modern Hopfield" else {}
        plot_band(axes[0], ks, [s["completion"]["cosine"] for s in st], name, **style)
        plot_band(axes[1], ks, [s["completion"]["iou"] for s in st], name, **style)
        kk = [k for k, s in zip(ks, st) if "selectivity" in s]
        if kk:
            plot_band(axes[2], kk, [cap["by_k"][str(k)]["settled"]["selectivity"]["cosine"]
                                         for k in kk], name, **style)
    for ax, title, line in zip(axes, ("completion (cosine)", "completion (IoU)",
                                      "selectivity of half cues (cosine)"), (0.8, 0.8, 0.5)):
        ax.axhline(line, color="gray", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="k stored (held-out blobs)", title=f"{title}, settled, n={n}")
    axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, path, dpi=70)


def associative_targets(body, path, n, names_of_patterns=("A", "B", "C")) -> None:
    """Each condition's settled read-outs against the issue's targets (dots: mean; bars:
    95% interval; dotted line: the target)."""

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
    save_figure(fig, path, dpi=70)


def _dots(ax, y, stats, label) -> None:
    mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats])
    lo = np.array([m if s["ci95_low"] is None else s["ci95_low"] for s, m in zip(stats, mean)])
    hi = np.array([m if s["ci95_high"] is None else s["ci95_high"] for s, m in zip(stats, mean)])
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", ms=3, label=label, lw=0.8)
