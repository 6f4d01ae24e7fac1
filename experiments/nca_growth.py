"""The Growing NCA (Mordvintsev et al. 2020, docs/references.md) as a study of its own:
grow an emoji-like RGBA image from one seed cell (models/nca.py), then measure it.

Diagnostics, each over --seeds independent stochastic roll-outs (the update mask is random):
  * SSIM / PSNR against the target at every growth step (and of an empty canvas, the floor)
  * regeneration: grow, zero a central disc of several radii, count steps until SSIM is
    back to RECOVER_FRACTION of its pre-damage value
  * radially averaged power spectra of the grown image vs the target
  * hidden-state PCA: the 12 hidden channels over the living cells of the grown pattern,
    and the trajectory of the mean hidden state over growth

The target is drawn by us (draw_target, below) and shipped as assets/nca_target.png;
nothing is downloaded. Trained weights ship in weights/nca_emoji.pt and are loaded when
present; --retrain trains anew and replaces them (a full run only, written atomically;
--quick trains a tiny model and keeps it in the output folder). Training is cut by
--time-budget; the JSON records how many steps it got.

    python -m experiments.nca_growth                  # diagnostics with shipped weights
    python -m experiments.nca_growth --retrain        # retrain first (minutes, CPU)
    python -m experiments.nca_growth --quick          # a smoke run, tiny model
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import stats
from common import cli
from common.cli import RunArgs, arg

torch = cli.lazy("torch")
np = cli.lazy("numpy")
metrics = cli.lazy("metrics")
nca = cli.lazy("models.nca")
patterns = cli.lazy("patterns")

ROOT = Path(__file__).resolve().parents[1]
TARGET_PATH = ROOT / "assets" / "nca_target.png"
WEIGHTS_PATH = ROOT / "weights" / "nca_emoji.pt"

LR = 2e-3
DAMAGE_BEST = 1         # regenerating variant: damage the best member of each batch
DAMAGE_FRACTIONS = (0.125, 0.25, 0.375, 0.5)  # damage radius as a fraction of the half-width
RECOVER_FRACTION = 0.95  # "recovered" = SSIM back to this fraction of its pre-damage value
SSIM_WINDOW = 11         # nca.ssim's window: the smallest grid it can score


@dataclass
class Args(RunArgs):
    study: ClassVar[str] = "nca_growth"
    saved_state_refusal: ClassVar[str] = (
        "its medium is a neural cellular automaton, not Gray-Scott")
    retrain: bool = arg(False, "train anew even if weights exist, and replace --weights (a "
                               "full run only)")
    weights: str = arg(str(WEIGHTS_PATH), "weights file to load (or to write when training)")
    target: str = arg(str(TARGET_PATH), "RGBA target image")
    draw_target: bool = arg(False, "(re)draw the shipped target image into --target first")
    train_steps: int = arg(2000, "optimiser steps requested (the original: 8000)", lo=1)
    time_budget: float = arg(600.0, "training seconds cap", lo=0.0, lo_open=True)
    grid: int = arg(32, "training and diagnostic canvas side (the original: 72)",
                    lo=SSIM_WINDOW, hi=1024)
    target_size: int = arg(22, "the target is resized to this side and centred (the "
                               "original: 40 in 72)", lo=3)

    def check(self) -> None:
        if self.target_size > self.grid:
            raise ValueError(f"--target-size {self.target_size}: must be <= --grid "
                             f"{self.grid}")


QUICK = dict(grid=16, target_size=10, train_steps=3, time_budget=60.0)

# The study's fixed settings (not flags); --quick shrinks them too.
SETTINGS = dict(rollout=(24, 36),   # steps per roll-out, uniform (the original: 64-96 on 72^2)
                pool=256, batch=4,
                grow_steps=64,      # diagnostic growth length
                regen_steps=64)     # steps allowed to recover after damage
QUICK_SETTINGS = dict(rollout=(4, 8), pool=8, batch=2, grow_steps=12, regen_steps=8)


def settings_of(args) -> dict:
    return {**SETTINGS, **(QUICK_SETTINGS if args.quick else {})}


def draw_target(path=TARGET_PATH, size: int = 128) -> Path:
    """Draw the shipped target: a yellow chick-like face (body, wing, eye, beak, tuft) on a
    transparent canvas, drawn 4x larger and downsampled for anti-aliasing. RGBA PNG."""
    from PIL import Image, ImageDraw

    s = 4 * size
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    u = s / 128.0
    box = lambda x0, y0, x1, y1: [x0 * u, y0 * u, x1 * u, y1 * u]
    d.ellipse(box(14, 26, 114, 122), fill=(250, 200, 40, 255))           # body
    d.ellipse(box(62, 70, 104, 104), fill=(235, 150, 20, 255))           # wing
    d.ellipse(box(38, 52, 54, 68), fill=(30, 30, 30, 255))               # eye
    d.ellipse(box(43, 55, 48, 60), fill=(255, 255, 255, 255))            # eye glint
    d.polygon([(12 * u, 74 * u), (30 * u, 64 * u), (30 * u, 84 * u)], fill=(230, 70, 30, 255))  # beak
    d.polygon([(56 * u, 28 * u), (64 * u, 4 * u), (72 * u, 28 * u)], fill=(250, 200, 40, 255))  # tuft
    img = img.resize((size, size), Image.LANCZOS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def load_target(path, grid: int, size: int) -> torch.Tensor:
    """(4, grid, grid) premultiplied RGBA in [0, 1]: the image resized to size x size, centred."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target image not found: {path} (draw it with --draw-target)")
    if not 3 <= size <= grid:
        raise ValueError(f"target size {size} must be in [3, grid={grid}]")
    with patterns.open_image(path) as im:   # missing, not an image, or a bomb: one line
        try:
            im = im.convert("RGBA").resize((size, size), Image.LANCZOS)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"cannot decode {path} ({exc.__class__.__name__})") from None
    a = torch.as_tensor(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    a[:3] *= a[3:4]  # premultiplied alpha: transparent cells are all zero
    if a[3].sum() < 1:
        raise ValueError(f"target image {path} is fully transparent")
    out = torch.zeros(4, grid, grid)
    o = (grid - size) // 2
    out[:, o:o + size, o:o + size] = a
    return out


def train_model(target, args, settings, progress=True):
    torch.manual_seed(args.seed)   # the initial weights: the same for the same --seed
    model = nca.NCA()
    grid = target.shape[-1]
    start = lambda idx, g: nca.seed_state(len(idx), grid, grid)
    hist = nca.train(model, target.unsqueeze(0), start, args.train_steps,
                     pool_size=settings["pool"], batch=settings["batch"],
                     rollout=settings["rollout"], lr=LR,
                     damage_best=DAMAGE_BEST if settings["pool"] > 8 else 0, seed=args.seed,
                     time_budget_s=args.time_budget,
                     progress="train NCA" if progress else None)
    return model, hist


def pca(X: np.ndarray, n: int):
    """Principal components of the rows of X: (explained variance ratio of the first n,
    scores (rows, n)). Plain SVD of the centred data (sign of each component arbitrary)."""
    Xc = X - X.mean(0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    var = S ** 2
    n = min(n, len(S))
    return var[:n] / max(var.sum(), 1e-30), U[:, :n] * S[:n]


# ---- diagnostics ------------------------------------------------------------------------

def growth(model, target, B, steps, g):
    """Grow B members from the seed cell for `steps` steps: ({"growth": read-outs},
    states by step, mean hidden state of member 0 by step)."""
    x = nca.seed_state(B, target.shape[-1], target.shape[-1])
    ssim_t, psnr_t, alive_t, hidden_mean, states = [], [], [], [], {}
    for t in range(steps + 1):
        if t > 0:
            x = model.step(x, g)
        img = nca.rgba(x)
        ssim_t.append(nca.ssim(img, target))
        psnr_t.append(nca.psnr(img, target))
        alive_t.append((x[:, 3] > nca.ALIVE_THRESHOLD).flatten(1).sum(1).float())
        hidden_mean.append(x[0, 4:].flatten(1).mean(1))
        states[t] = x.clone()
    ssim_t, psnr_t, alive_t = torch.stack(ssim_t), torch.stack(psnr_t), torch.stack(alive_t)
    empty = torch.zeros_like(target).unsqueeze(0)
    checkpoints = sorted({0, *[int(round(f * steps)) for f in (0.25, 0.5, 0.75, 1.0)]})
    summary = {"steps": list(range(steps + 1)), "ssim_mean": ssim_t.mean(1),
               "psnr_mean": psnr_t.mean(1), "alive_mean": alive_t.mean(1),
               "at": {str(t): {"ssim": stats.summarize(ssim_t[t]),
                               "psnr": stats.summarize(psnr_t[t]),
                               "alive_cells": stats.summarize(alive_t[t])}
                      for t in checkpoints},
               "ssim_empty": float(nca.ssim(empty, target)[0]),
               "psnr_empty": float(nca.psnr(empty, target)[0])}
    return summary, states, hidden_mean


def regeneration(model, grown, target, steps, g) -> dict:
    """Zero a central disc of each DAMAGE_FRACTIONS radius, regrow `steps` steps."""
    grid, B = grown.shape[-1], grown.shape[0]
    pre = nca.ssim(nca.rgba(grown), target)
    regen = {}
    for frac in DAMAGE_FRACTIONS:
        r = frac * grid / 2
        y = nca.damage_disc(grown, r)
        curve = [nca.ssim(nca.rgba(y), target)]
        for _ in range(steps):
            y = model.step(y, g)
            curve.append(nca.ssim(nca.rgba(y), target))
        curve = torch.stack(curve)                               # (T+1, B)
        ok = curve >= RECOVER_FRACTION * pre
        first = torch.where(ok.any(0), ok.float().argmax(0).float(), torch.full((B,), math.nan))
        rec = first[~torch.isnan(first)]
        regen[f"{r:g}"] = {
            "radius_cells": r, "ssim_before": stats.summarize(pre),
            "ssim_just_after_damage": stats.summarize(curve[0]),
            "ssim_after_regen": stats.summarize(curve[-1]),
            "recovered_fraction": float((~torch.isnan(first)).float().mean()),
            "steps_to_recover": stats.summarize(rec) if len(rec) else None,
            "steps_to_recover_per_seed": first, "ssim_curve_mean": curve.mean(1)}
    return regen


def spectra(target, states, steps) -> dict:
    """Radially averaged power spectra (RGB, mean over seeds) of the target and of the
    grown images at 1/4, 1/2 and all of the growth."""
    spec_steps = sorted({int(round(f * steps)) for f in (0.25, 0.5, 1.0)})
    curves = {"target": nca.radial_power_spectrum(target[:3].numpy())}
    for t in spec_steps:
        img = nca.rgba(states[t])[:, :3].numpy()
        curves[f"step_{t}"] = np.mean([nca.radial_power_spectrum(im) for im in img], axis=0)
    tgt, fin = curves["target"], curves[f"step_{spec_steps[-1]}"]
    err = float(np.mean(np.abs(np.log10(fin[1:] + 1e-12) - np.log10(tgt[1:] + 1e-12))))
    return {"steps": spec_steps, "curves": curves, "mean_abs_log10_error_final_vs_target": err}


def hidden_pca(grown, hidden_mean) -> dict:
    """PCA of the hidden channels over the living cells of member 0, and of the mean
    hidden state's trajectory over growth."""
    grid = grown.shape[-1]
    alive = grown[0, 3] > nca.ALIVE_THRESHOLD
    cells = grown[0, 4:][:, alive].T.numpy().astype(np.float64)     # (n_alive, 12)
    pca_cells = None
    if cells.shape[0] >= 3:
        ratio, scores = pca(cells, 3)
        pc1 = np.zeros((grid, grid))
        pc1[alive.numpy()] = scores[:, 0]
        pca_cells = {"explained_variance_ratio": ratio, "n_cells": cells.shape[0], "pc1_map": pc1}
    traj = torch.stack(hidden_mean).numpy().astype(np.float64)
    traj = (traj - traj.mean(0)) / (traj.std(0) + 1e-6)
    ratio, scores = pca(traj, 2)
    return {"hidden_cells": pca_cells,
            "mean_hidden_trajectory": {"explained_variance_ratio": ratio, "trajectory": scores}}


def diagnostics(model, target, seeds, settings) -> tuple[dict, dict]:
    """Every diagnostic over the seeds' roll-outs: (results, RGBA frames of member 0)."""
    steps = settings["grow_steps"]
    g = torch.Generator().manual_seed(int(seeds[0]) * 7919 + 1)
    with torch.no_grad():
        grown_summary, states, hidden_mean = growth(model, target, len(seeds), steps, g)
        grown = states[steps].clone()
        res = {"growth": grown_summary,
               "regeneration": regeneration(model, grown, target, settings["regen_steps"], g),
               "spectra": spectra(target, states, steps),
               "pca": hidden_pca(grown, hidden_mean)}
    shown = sorted({0, *[int(round(f * steps)) for f in (0.125, 0.25, 0.5, 0.75, 1.0)]})
    return res, {t: nca.rgba(states[t][:1])[0] for t in shown}


# ---- figure -------------------------------------------------------------------------------

def _show_rgba(ax, im, title):
    """An RGBA image on white."""
    ax.imshow(np.clip(im.permute(1, 2, 0).numpy()[..., :3]
                      + (1 - im[3:4].permute(1, 2, 0).numpy()), 0, 1))
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _plot_growth(ax, g, n):
    ax.plot(g["steps"], np.asarray(g["ssim_mean"]), label="SSIM")
    ax.axhline(g["ssim_empty"], ls=":", c="gray", label="SSIM of an empty canvas")
    ax.set_xlabel("growth step")
    ax.set_ylabel("SSIM (mean over seeds)")
    ax.set_title(f"growth from one cell, n={n}, {g['steps'][-1]} steps", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot(g["steps"], np.asarray(g["psnr_mean"]), c="C1", label="PSNR")
    ax2.set_ylabel("PSNR (dB, mean over seeds)", color="C1")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.22, 1))


def _plot_hidden(fig, ax_map, ax_traj, pca_res):
    pc = pca_res["hidden_cells"]
    if pc is not None:
        im = ax_map.imshow(pc["pc1_map"], cmap="coolwarm")
        fig.colorbar(im, ax=ax_map, label="PC1 score")
        ax_map.set_title(f"hidden PC1 over living cells ({pc['explained_variance_ratio'][0]:.0%}"
                         f" var), seed 0", fontsize=9)
    ax_map.axis("off")
    tr = np.asarray(pca_res["mean_hidden_trajectory"]["trajectory"])
    ax_traj.plot(tr[:, 0], tr[:, 1], "-o", ms=2, label="over growth")
    ax_traj.plot(*tr[0], "go", label="first step")
    ax_traj.plot(*tr[-1], "ro", label="last step")
    ax_traj.set_xlabel("PC1 of the mean hidden state")
    ax_traj.set_ylabel("PC2")
    ax_traj.set_title("mean hidden state over growth (PCA), seed 0", fontsize=9)
    ax_traj.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))


def plot(res, frames, target, loss, n, path):
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(20, 9))
    cols = len(frames) + 1
    _show_rgba(fig.add_subplot(3, cols, 1), target.clamp(0, 1), "target")
    for i, (t, im) in enumerate(frames.items()):
        _show_rgba(fig.add_subplot(3, cols, i + 2), im.clamp(0, 1), f"step {t} (seed 0)")
    _plot_growth(fig.add_subplot(3, 3, 4), res["growth"], n)
    ax = fig.add_subplot(3, 3, 5)
    for k, v in res["regeneration"].items():
        ax.plot(np.asarray(v["ssim_curve_mean"]), label=f"disc radius {k}")
    ax.set_xlabel("steps after damage")
    ax.set_ylabel("SSIM (mean over seeds)")
    ax.set_title(f"regeneration, n={n}, {len(v['ssim_curve_mean']) - 1} steps", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax = fig.add_subplot(3, 3, 6)
    ax.semilogy(loss)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (MSE)")
    ax.set_title("training loss", fontsize=9)
    ax = fig.add_subplot(3, 3, 7)
    for k, v in res["spectra"]["curves"].items():
        v = np.asarray(v)
        ax.semilogy(np.arange(1, len(v)), v[1:], label=k, lw=2 if k == "target" else 1)
    ax.set_xlabel("radial frequency bin")
    ax.set_ylabel("power (RGB, mean over seeds)")
    ax.set_title(f"power spectra, n={n}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    _plot_hidden(fig, fig.add_subplot(3, 3, 8), fig.add_subplot(3, 3, 9), res["pca"])
    fig.subplots_adjust(hspace=0.45, wspace=0.95, left=0.05, right=0.92)
    from common import figures
    figures.save_figure(fig, path, dpi=90, layout=False)


# ---- the run ------------------------------------------------------------------------------

def get_model(args, target, settings):
    """(model, training record, loss curve, weights to keep in the output folder or None):
    a tiny model trained now (--quick), a model trained now and written to --weights
    (--retrain or missing weights), or the shipped one."""
    weights = Path(args.weights)
    command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    if args.quick:  # never touch the weights file in a smoke run
        if args.retrain:
            print(f"note: --quick trains a tiny model; {weights} is not written")
        model, hist = train_model(target, args, settings, progress=False)
        return model, {"trained_now": True, **hist}, hist["loss"], {"history": hist}
    if args.retrain or not weights.is_file():
        model, hist = train_model(target, args, settings)
        meta = {"grid": args.grid, "target_size": args.target_size, "target": str(args.target),
                "command": command, "history": hist}
        nca.write_weights(model, weights, meta)
        return model, {"trained_now": True, **meta}, hist["loss"], None
    model, meta = nca.load_weights(weights)
    if meta.get("grid") != args.grid or meta.get("target_size") != args.target_size:
        raise ValueError(f"{weights} was trained at grid {meta.get('grid')} / target "
                         f"{meta.get('target_size')}; pass matching --grid/--target-size or "
                         f"--retrain")
    return model, {"trained_now": False, "weights": str(weights), **meta}, \
        meta["history"]["loss"], None


def training_record(meta, loss) -> dict:
    hist = meta.get("history", meta)
    return {"trained_now": meta["trained_now"], "steps_done": hist.get("steps_done"),
            "seconds": hist.get("seconds"), "loss_first": loss[0] if loss else None,
            "loss_last_10_mean": float(np.mean(loss[-10:])) if loss else None,
            "config": hist.get("config"), "command": meta.get("command")}


def report(res, training, grow_steps):
    g = res["growth"]["at"][str(grow_steps)]
    print(f"trained {training['steps_done']} steps; loss {training['loss_first']:.4f} -> "
          f"{training['loss_last_10_mean']:.4f}")
    print(f"grown at step {grow_steps}: SSIM {stats.format_stat(g['ssim'])} "
          f"(empty canvas {res['growth']['ssim_empty']:.3f}), PSNR "
          f"{stats.format_stat(g['psnr'], 1)} dB")
    for k, v in res["regeneration"].items():
        s = stats.format_stat(v["steps_to_recover"], 1) if v["steps_to_recover"] else "never"
        print(f"damage r={k}: SSIM {v['ssim_before']['mean']:.3f} -> "
              f"{v['ssim_just_after_damage']['mean']:.3f} -> {v['ssim_after_regen']['mean']:.3f};"
              f" recovered {v['recovered_fraction']:.0%}, steps {s}")


def main(argv=None):
    args = cli.parse(Args, argv, description=__doc__.split("\n")[0], quick=QUICK)
    seeds, device = cli.start(args)
    if device.type != "cpu":
        print(f"note: {device} requested; this study runs on the CPU")
    settings = settings_of(args)
    if args.draw_target:
        draw_target(args.target)
    target = load_target(args.target, args.grid, args.target_size)
    t0 = time.perf_counter()
    model, meta, loss, quick_weights = get_model(args, target, settings)
    model.eval()
    t1 = time.perf_counter()
    res, frames = diagnostics(model, target, seeds, settings)
    t2 = time.perf_counter()
    result = {**cli.envelope(args, seeds, "cpu", t2 - t0),
              "constants": {"LR": LR, "DAMAGE_BEST": DAMAGE_BEST,
                            "DAMAGE_FRACTIONS": DAMAGE_FRACTIONS,
                            "RECOVER_FRACTION": RECOVER_FRACTION},
              "model": {"params": model.n_params(), "channels": model.channels,
                        "hidden": model.hidden, "fire_rate": model.fire_rate},
              "training": training_record(meta, loss), "diagnostics_seconds": t2 - t1, **res}
    result["config"].update(settings)
    with cli.staged_output(args.out_dir(), Args.study) as out:
        if quick_weights is not None:
            nca.save_weights(model, out / "nca_emoji_quick.pt", quick_weights)
        cli.write_json_atomic(out / f"{Args.study}.json", result)
        plot(res, frames, target, loss, len(seeds), out / f"{Args.study}.png")
    report(res, result["training"], settings["grow_steps"])
    print(f"wrote {args.out_dir() / (Args.study + '.json')} and "
          f"{args.out_dir() / (Args.study + '.png')}")


if __name__ == "__main__":
    cli.run_cli(main)
