"""Pictures and videos for the main study (the I/O edge: nothing here touches physics).

`save_fields` and `write_video` are generic (any list of (H, W) fields); `write_all`
draws the main study's figures from the results of scarring_validation.py.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

CMAP = "viridis"


def save_fields(path, fields, titles, ncols=None, suptitle=None, vmax=1.0, cmap=CMAP):
    """A row (or grid) of 2D fields with titles, one shared colour scale."""
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
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_video(path, frames_by_panel, labels, fps=20, scale=2):
    """MP4 (OpenCV, mp4v) of several V-field sequences side by side.

    frames_by_panel: list of (T, H, W) tensors in [0, 1], one per panel.
    """
    import cv2

    T = min(len(f) for f in frames_by_panel)
    H, W = frames_by_panel[0].shape[-2:]
    size = (W * scale * len(frames_by_panel), H * scale)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path} (mp4v codec unavailable)")
    try:
        for t in range(T):
            panels = []
            for frames, label in zip(frames_by_panel, labels):
                img = (frames[t].clamp(0, 1).numpy() * 255).astype(np.uint8)
                img = cv2.resize(img, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
                img = cv2.applyColorMap(img, cv2.COLORMAP_VIRIDIS)
                cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (255, 255, 255), 1, cv2.LINE_AA)
                panels.append(img)
            writer.write(np.concatenate(panels, axis=1))
    finally:
        writer.release()


def _band(ax, steps, curves, label, color):
    """Mean curve over seeds with its 95% interval shaded. curves: (T, S)."""
    from metrics import t_quantile_975

    c = curves.double().numpy()
    mean = c.mean(1)
    S = c.shape[1]
    ax.plot(steps, mean, label=label, color=color)
    if S > 1:
        half = t_quantile_975(S - 1) * c.std(1, ddof=1) / np.sqrt(S)
        ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.25, lw=0)


def _bar_err(stat):
    if stat["ci95_low"] is None:
        return 0.0
    return stat["ci95_high"] - stat["mean"]


def summary_figure(path, results):
    c = results["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    _band(ax, c["phase1_steps"], c["phase1_scarred"], "scarred", "C0")
    _band(ax, c["phase1_steps"], c["phase1_control"], "control (no scarring)", "C3")
    ax.axhline(results["config"]["gate"], color="gray", ls=":", lw=1, label="scar gate")
    ax.set(title="Phase 1: training", xlabel="step", ylabel="cosine similarity to target",
           ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[1]
    _band(ax, c["phase2_steps"], c["phase2_scarred"], "scarred F/K, cue", "C0")
    _band(ax, c["phase2_steps"], c["phase2_control"], "default F/K, cue", "C3")
    _band(ax, c["phase2_steps"], c["phase2_uncued"], "scarred F/K, no cue", "C2")
    ax.set(title="Phase 2: recall", xlabel="step", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[2]
    p3 = results["phase3"]
    names = list(p3["pattern_recall_qualities"])
    x = np.arange(len(names))
    for offset, key, label, color in ((-0.27, "pattern_recall_qualities", "scarred", "C0"),
                                      (0.0, "control_recall_qualities", "default F/K", "C3"),
                                      (0.27, "cue_similarities", "cue at step 0", "0.6")):
        stats = [p3[key][n] for n in names]
        ax.bar(x + offset, [s["mean"] for s in stats], 0.25, yerr=[_bar_err(s) for s in stats],
               capsize=3, label=label, color=color)
    ax.axhline(0.8, color="k", ls="--", lw=1, label="published claim (> 0.80)")
    ax.set_xticks(x, names, fontsize=8)
    ax.set(title="Phase 3: recall after storing all three", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    n = results["phase1"]["scarred_final_similarity"]["n"]
    fig.suptitle(f"Parametric scarring, mean and 95% interval over {n} seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_all(out, results, target, targets, p1, p2, p3, video=True):
    """Every PNG (and MP4) of the main study into `out`."""
    out = Path(out)
    S = len(results["seeds"])
    names = list(targets)
    save_fields(out / "target.png", [target] + list(targets.values()),
                ["phase 1-2 target"] + [f"phase 3 {n}" for n in names])
    s1 = results["phase1"]
    save_fields(out / "phase1_training.png", [target, p1["V"][0], p1["V"][S]],
                ["target", f"scarred (sim {p1['final']['cosine'][0]:.2f})",
                 f"control (sim {p1['final']['cosine'][S]:.2f})"],
                suptitle=f"Phase 1, seed {results['seeds'][0]}: V after training")
    f2 = p2["final"]["cosine"]
    save_fields(out / "phase2_recall.png",
                [p2["cue"][0], p2["V"][0], p2["V"][S], p2["V"][2 * S]],
                [f"cue (sim {p2['cue_metrics']['cosine'][0]:.2f})", f"scarred (sim {f2[0]:.2f})",
                 f"control (sim {f2[S]:.2f})", f"scarred, no cue (sim {f2[2 * S]:.2f})"],
                suptitle=f"Phase 2, seed {results['seeds'][0]}: V after recall")
    P = len(names)
    f3 = p3["final"]["cosine"]
    fields, titles = [], []
    for i, n in enumerate(names):
        fields += [targets[n], p3["cues"][i * S], p3["V"][i * S], p3["V"][P * S + i * S]]
        titles += [f"{n}", "cue", f"scarred (sim {f3[i * S]:.2f})",
                   f"control (sim {f3[P * S + i * S]:.2f})"]
    save_fields(out / "phase3_recall.png", fields, titles, ncols=4,
                suptitle=f"Phase 3, seed {results['seeds'][0]}: recall of each stored pattern")
    cfg = results["config"]
    save_fields(out / "scar_maps.png",
                [p1["F"][0].cpu(), p1["K"][0].cpu(), p3["F"][0].cpu(), p3["K"][0].cpu()],
                [f"phase 1 F (F0={cfg['f0']})", f"phase 1 K (K0={cfg['k0']})",
                 "phase 3 F (A+B+C)", "phase 3 K (A+B+C)"], ncols=4, vmax=0.08, cmap="magma",
                suptitle=f"Scar maps, seed {results['seeds'][0]} (scar strength "
                         f"{s1['total_scar_strength']['per_seed'][0]:.1f})")
    summary_figure(out / "summary.png", results)
    if video:
        fr1 = p1["run"]["frames"]   # (T, 2, H, W): seed 0 scarred, seed 0 control
        write_video(out / "phase1_training.mp4", [fr1[:, 0], fr1[:, 1]], ["scarred", "control"])
        fr2 = p2["run"]["frames"]
        write_video(out / "phase2_recall.mp4", [fr2[:, 0], fr2[:, 1]],
                    ["scarred recall", "control recall"])


# ---- panels shared by the studies ---------------------------------------------------------

def plot_matrix(ax, mean, rows, cols, title, vmin=0.0, vmax=1.0, cmap="viridis"):
    """Heat map of a (C, P) matrix with its values written in the cells."""
    m = np.asarray(mean, dtype=float)
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if m[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_title(title, fontsize=8)
    return im


def plot_band(ax, x, stats, label, **kw):
    """Mean line with its 95% interval as a band, from a list of summarize dicts."""
    mean = [s["mean"] for s in stats]
    lo = [s["ci95_low"] if s["ci95_low"] is not None else s["mean"] for s in stats]
    hi = [s["ci95_high"] if s["ci95_high"] is not None else s["mean"] for s in stats]
    line, = ax.plot(x, mean, marker="o", ms=3, label=label, **kw)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
    return line

