"""Seed 002 as a study of its own: grow an emoji-like RGBA image from one seed cell with the
Growing Neural Cellular Automaton (nca.py), then measure it.

Diagnostics, each over --seeds independent stochastic roll-outs (the update mask is random):
  * SSIM / PSNR against the target at every growth step (and of an empty canvas, the floor)
  * regeneration: grow, zero a central disc of several radii, count steps until SSIM is
    back to RECOVER_FRACTION of its pre-damage value
  * radially averaged power spectra of the grown image vs the target
  * hidden-state PCA: the 12 hidden channels over the living cells of the grown pattern,
    and the trajectory of the mean hidden state over growth

The target is drawn by us (draw_target, below) and shipped as assets/nca_target.png;
nothing is downloaded. Trained weights ship in weights/nca_emoji.pt and are loaded when
present; --retrain trains anew (and overwrites them). On 2 shared CPU cores training is
cut by --time-budget; the JSON records how many steps it got.

    python -m experiments.nca_growth                  # diagnostics with shipped weights
    python -m experiments.nca_growth --retrain        # retrain first (minutes, CPU)
    python -m experiments.nca_growth --quick --out /tmp/q   # smoke test, tiny model
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import metrics
from common import cli as experiment
from models import nca

ROOT = Path(__file__).resolve().parents[1]
TARGET_PATH = ROOT / "assets" / "nca_target.png"
WEIGHTS_PATH = ROOT / "weights" / "nca_emoji.pt"

GRID = 32               # training/diagnostic canvas (CPU budget; the original used 72)
TARGET_SIZE = 22        # the target is resized to this and centred (the original: 40 in 72)
TRAIN_STEPS = 2000      # optimiser steps requested (the original: 8000)
TIME_BUDGET_S = 600.0   # ...but stop after this many seconds
POOL = 256
BATCH = 4
ROLLOUT = (24, 36)      # steps per roll-out, uniform (the original: 64-96 on 72 x 72)
LR = 2e-3
THREADS = 1
DAMAGE_BEST = 1         # regenerating variant: damage the best member of each batch
GROW_STEPS = 64         # diagnostic growth length
REGEN_STEPS = 64        # steps allowed to recover after damage
DAMAGE_FRACTIONS = (0.125, 0.25, 0.375, 0.5)  # damage radius as a fraction of the half-width
RECOVER_FRACTION = 0.95  # "recovered" = SSIM back to this fraction of its pre-damage value

QUICK = dict(GRID=16, TARGET_SIZE=10, TRAIN_STEPS=3, ROLLOUT=(4, 8), POOL=8, BATCH=2,
             GROW_STEPS=12, REGEN_STEPS=8, TIME_BUDGET_S=60.0)


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
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA").resize((size, size), Image.LANCZOS)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read {path} as an image ({exc.__class__.__name__})") from None
    a = torch.as_tensor(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    a[:3] *= a[3:4]  # premultiplied alpha: transparent cells are all zero
    if a[3].sum() < 1:
        raise ValueError(f"target image {path} is fully transparent")
    out = torch.zeros(4, grid, grid)
    o = (grid - size) // 2
    out[:, o:o + size, o:o + size] = a
    return out


def plain(obj):
    """numpy arrays to lists (experiment.write_json_atomic treats any object with .item as
    a scalar, which fails for arrays)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def train_model(target, cfg, seed, progress=True):
    model = nca.NCA()
    grid = target.shape[-1]
    start = lambda idx, g: nca.seed_state(len(idx), grid, grid)
    hist = nca.train(model, target.unsqueeze(0), start, cfg["TRAIN_STEPS"], pool_size=cfg["POOL"],
                     batch=cfg["BATCH"], rollout=cfg["ROLLOUT"], lr=LR,
                     damage_best=DAMAGE_BEST if cfg["POOL"] > 8 else 0, seed=seed,
                     time_budget_s=cfg["TIME_BUDGET_S"],
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


@torch.no_grad()
def diagnostics(model, target, seeds, cfg) -> dict:
    grid = target.shape[-1]
    B = len(seeds)
    g = torch.Generator().manual_seed(int(seeds[0]) * 7919 + 1)
    x = nca.seed_state(B, grid, grid)
    ssim_t, psnr_t, alive_t, hidden_mean, states = [], [], [], [], {}
    for t in range(cfg["GROW_STEPS"] + 1):
        if t > 0:
            x = model.step(x, g)
        img = nca.rgba(x)
        ssim_t.append(nca.ssim(img, target))
        psnr_t.append(nca.psnr(img, target))
        alive_t.append((x[:, 3] > nca.ALIVE_THRESHOLD).flatten(1).sum(1).float())
        hidden_mean.append(x[0, 4:].flatten(1).mean(1))
        states[t] = x.clone()
    ssim_t, psnr_t, alive_t = torch.stack(ssim_t), torch.stack(psnr_t), torch.stack(alive_t)
    grown = x.clone()
    empty = torch.zeros_like(target).unsqueeze(0)
    floor = {"ssim_empty": float(nca.ssim(empty, target)[0]),
             "psnr_empty": float(nca.psnr(empty, target)[0])}
    checkpoints = sorted({0, *[int(round(f * cfg["GROW_STEPS"])) for f in (0.25, 0.5, 0.75, 1.0)]})
    growth = {"steps": list(range(cfg["GROW_STEPS"] + 1)),
              "ssim_mean": ssim_t.mean(1), "psnr_mean": psnr_t.mean(1), "alive_mean": alive_t.mean(1),
              "at": {str(t): {"ssim": metrics.summarize(ssim_t[t]), "psnr": metrics.summarize(psnr_t[t]),
                              "alive_cells": metrics.summarize(alive_t[t])} for t in checkpoints},
              **floor}

    # regeneration after central damage
    pre = nca.ssim(nca.rgba(grown), target)
    regen = {}
    for frac in DAMAGE_FRACTIONS:
        r = frac * grid / 2
        y = nca.damage_disc(grown, r)
        curve = [nca.ssim(nca.rgba(y), target)]
        for _ in range(cfg["REGEN_STEPS"]):
            y = model.step(y, g)
            curve.append(nca.ssim(nca.rgba(y), target))
        curve = torch.stack(curve)                               # (T+1, B)
        ok = curve >= RECOVER_FRACTION * pre
        first = torch.where(ok.any(0), ok.float().argmax(0).float(), torch.full((B,), math.nan))
        rec = first[~torch.isnan(first)]
        regen[f"{r:g}"] = {
            "radius_cells": r, "ssim_before": metrics.summarize(pre),
            "ssim_just_after_damage": metrics.summarize(curve[0]),
            "ssim_after_regen": metrics.summarize(curve[-1]),
            "recovered_fraction": float((~torch.isnan(first)).float().mean()),
            "steps_to_recover": metrics.summarize(rec) if len(rec) else None,
            "steps_to_recover_per_seed": first, "ssim_curve_mean": curve.mean(1)}

    # radially averaged power spectra (RGB, mean over seeds)
    spec_steps = sorted({int(round(f * cfg["GROW_STEPS"])) for f in (0.25, 0.5, 1.0)})
    spectra = {"target": nca.radial_power_spectrum(target[:3].numpy())}
    for t in spec_steps:
        img = nca.rgba(states[t])[:, :3].numpy()
        spectra[f"step_{t}"] = np.mean([nca.radial_power_spectrum(im) for im in img], axis=0)
    tgt, fin = spectra["target"], spectra[f"step_{spec_steps[-1]}"]
    spec_err = float(np.mean(np.abs(np.log10(fin[1:] + 1e-12) - np.log10(tgt[1:] + 1e-12))))

    # hidden-state PCA
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
    pca_traj = {"explained_variance_ratio": ratio, "trajectory": scores}
    return {"growth": growth, "regeneration": regen,
            "spectra": {"steps": spec_steps, "curves": spectra,
                        "mean_abs_log10_error_final_vs_target": spec_err},
            "pca": {"hidden_cells": pca_cells, "mean_hidden_trajectory": pca_traj},
            "_frames": {t: nca.rgba(states[t][:1])[0] for t in
                        sorted({0, *[int(round(f * cfg["GROW_STEPS"])) for f in (0.125, 0.25, 0.5, 0.75, 1.0)]})}}


def plot(res, target, loss, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = res["_frames"]
    fig = plt.figure(figsize=(15, 8))
    n = len(frames) + 1
    show = lambda ax, im, title: (ax.imshow(np.clip(im.permute(1, 2, 0).numpy()[..., :3]
                                                    + (1 - im[3:4].permute(1, 2, 0).numpy()), 0, 1)),
                                  ax.set_title(title, fontsize=9), ax.axis("off"))
    ax = fig.add_subplot(3, n, 1)
    show(ax, target.clamp(0, 1), "target")
    for i, (t, im) in enumerate(frames.items()):
        show(fig.add_subplot(3, n, i + 2), im.clamp(0, 1), f"step {t}")
    g = res["growth"]
    ax = fig.add_subplot(3, 3, 4)
    ax.plot(g["steps"], g["ssim_mean"].numpy() if hasattr(g["ssim_mean"], "numpy") else g["ssim_mean"], label="SSIM")
    ax.axhline(g["ssim_empty"], ls=":", c="gray", label="empty canvas")
    ax.set_xlabel("growth step"); ax.set_ylabel("SSIM (mean over seeds)"); ax.legend(fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(g["steps"], g["psnr_mean"], c="C1"); ax2.set_ylabel("PSNR dB", color="C1")
    ax = fig.add_subplot(3, 3, 5)
    for k, v in res["regeneration"].items():
        ax.plot(v["ssim_curve_mean"], label=f"r={k}")
    ax.set_xlabel("steps after damage"); ax.set_ylabel("SSIM"); ax.legend(fontsize=8)
    ax.set_title("regeneration", fontsize=9)
    ax = fig.add_subplot(3, 3, 6)
    ax.semilogy(loss); ax.set_xlabel("training step"); ax.set_ylabel("loss (MSE)")
    ax.set_title("training loss", fontsize=9)
    ax = fig.add_subplot(3, 3, 7)
    for k, v in res["spectra"]["curves"].items():
        ax.semilogy(np.arange(1, len(v)), v[1:], label=k, lw=2 if k == "target" else 1)
    ax.set_xlabel("radial frequency bin"); ax.set_ylabel("power"); ax.legend(fontsize=8)
    ax = fig.add_subplot(3, 3, 8)
    pc = res["pca"]["hidden_cells"]
    if pc is not None:
        im = ax.imshow(pc["pc1_map"], cmap="coolwarm"); plt.colorbar(im, ax=ax)
        ax.set_title(f"hidden PC1 over living cells ({pc['explained_variance_ratio'][0]:.0%} var)", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(3, 3, 9)
    tr = res["pca"]["mean_hidden_trajectory"]["trajectory"]
    ax.plot(tr[:, 0], tr[:, 1], "-o", ms=2); ax.plot(*tr[0], "go"); ax.plot(*tr[-1], "ro")
    ax.set_title("mean hidden state over growth (PCA)", fontsize=9)
    fig.subplots_adjust(hspace=0.35, wspace=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_args(p, "nca_results")
    p.add_argument("--retrain", action="store_true", help="train anew even if weights exist")
    p.add_argument("--weights", default=str(WEIGHTS_PATH), help="weights file to load / write")
    p.add_argument("--target", default=str(TARGET_PATH), help="RGBA target image")
    p.add_argument("--draw-target", action="store_true", help="(re)draw the shipped target image")
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS)
    p.add_argument("--time-budget", type=float, default=TIME_BUDGET_S, help="training seconds cap")
    p.add_argument("--grid", type=int, default=GRID)
    p.add_argument("--target-size", type=int, default=TARGET_SIZE)
    experiment.add_threads_arg(p, THREADS)
    args = p.parse_args(argv)
    experiment.apply_threads(args)
    seeds = experiment.seed_list(args)
    device = experiment.resolve_device(args.device)  # the CPU path is what was measured
    out = experiment.prepare_out_dir(args.out)
    cfg = dict(GRID=args.grid, TARGET_SIZE=args.target_size, TRAIN_STEPS=args.train_steps,
               ROLLOUT=ROLLOUT, POOL=POOL, BATCH=BATCH, GROW_STEPS=GROW_STEPS,
               REGEN_STEPS=REGEN_STEPS, TIME_BUDGET_S=args.time_budget)
    if args.quick:
        cfg.update(QUICK)
    if args.train_steps < 1 or args.time_budget <= 0:
        raise ValueError("--train-steps must be >= 1 and --time-budget > 0")
    if args.draw_target:
        draw_target(args.target)
    target = load_target(args.target, cfg["GRID"], cfg["TARGET_SIZE"])

    weights = Path(args.weights)
    meta, loss = {}, []
    if args.quick:  # never touch the shipped weights in a smoke test
        model, hist = train_model(target, cfg, args.seed, progress=False)
        nca.save_weights(model, out / "nca_emoji_quick.pt", {"history": hist})
        meta, loss = {"trained_now": True, **hist}, hist["loss"]
    elif args.retrain or not weights.is_file():
        model, hist = train_model(target, cfg, args.seed)
        weights.parent.mkdir(parents=True, exist_ok=True)
        m = {"grid": cfg["GRID"], "target_size": cfg["TARGET_SIZE"], "target": str(args.target),
             "command": experiment.environment_info(device)["command"], "history": hist}
        nca.save_weights(model, weights, m)
        meta, loss = {"trained_now": True, **m}, hist["loss"]
    else:
        model, m = nca.load_weights(weights)
        if m.get("grid") != cfg["GRID"] or m.get("target_size") != cfg["TARGET_SIZE"]:
            raise ValueError(f"{weights} was trained at grid {m.get('grid')} / target "
                             f"{m.get('target_size')}; pass matching --grid/--target-size or --retrain")
        meta, loss = {"trained_now": False, "weights": str(weights), **m}, m["history"]["loss"]
    model.eval()
    t0 = time.perf_counter()
    res = diagnostics(model, target, seeds, cfg)
    diag_s = time.perf_counter() - t0
    plot(res, target, loss, out / "nca_growth.png")
    res.pop("_frames")
    hist = meta.get("history", meta)
    result = {"study": "nca_growth", "seeds": seeds, "config": cfg,
              "constants": {"LR": LR, "DAMAGE_BEST": DAMAGE_BEST, "DAMAGE_FRACTIONS": DAMAGE_FRACTIONS,
                            "RECOVER_FRACTION": RECOVER_FRACTION},
              "model": {"params": model.n_params(), "channels": model.channels, "hidden": model.hidden,
                        "fire_rate": model.fire_rate},
              "training": {"trained_now": meta["trained_now"], "steps_done": hist.get("steps_done"),
                           "seconds": hist.get("seconds"), "loss_first": loss[0] if loss else None,
                           "loss_last_10_mean": float(np.mean(loss[-10:])) if loss else None,
                           "config": hist.get("config"), "command": meta.get("command")},
              "diagnostics_seconds": diag_s, **res,
              "environment": experiment.environment_info(device)}
    experiment.write_json_atomic(out / "nca_growth.json", plain(result))
    g = res["growth"]["at"][str(cfg["GROW_STEPS"])]
    print(f"trained {hist.get('steps_done')} steps; loss {loss[0]:.4f} -> {np.mean(loss[-10:]):.4f}")
    print(f"grown at step {cfg['GROW_STEPS']}: SSIM {metrics.format_stat(g['ssim'])} "
          f"(empty canvas {res['growth']['ssim_empty']:.3f}), PSNR {metrics.format_stat(g['psnr'], 1)} dB")
    for k, v in res["regeneration"].items():
        s = metrics.format_stat(v["steps_to_recover"], 1) if v["steps_to_recover"] else "never"
        print(f"damage r={k}: SSIM {v['ssim_before']['mean']:.3f} -> {v['ssim_just_after_damage']['mean']:.3f}"
              f" -> {v['ssim_after_regen']['mean']:.3f}; recovered {v['recovered_fraction']:.0%}, steps {s}")
    print(f"wrote {out / 'nca_growth.json'} and {out / 'nca_growth.png'}")


if __name__ == "__main__":
    experiment.run_cli(main)
