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
                cmap="magma", suptitle=f"Scar maps, seed {seed} (scar strength {strength:.1f})")
    summary_figure(out / "summary.png", results)
    save_final_fields(out, p1, p2, p3)
    if video:
        fr1 = (a1["scarred"]["frames"][:, 0], a1["control"]["frames"][:, 0])
        write_video(out / "phase1_training.mp4", list(fr1), ["scarred", "control"])
        write_video(out / "phase2_recall.mp4", [p2["frames"]["scarred"], p2["frames"]["control"]],
                    ["scarred recall", "control recall"])


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


def save_figure(fig, path, dpi: int = 90) -> None:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
