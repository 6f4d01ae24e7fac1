"""The Growing Neural Cellular Automaton of Mordvintsev et al. (Distill 2020; docs/references.md).

A cell holds 16 channels: RGBA (0-3; alpha > 0.1 means alive) and 12 hidden ones. One
step (as in the original notebook, docs/references.md):

    perception = [x, sobel_x * x, sobel_y * x]            (depthwise, 48 channels)
    dx = W2 relu(W1 perception + b1) + b2                  (1x1 convs, 128 hidden, W2 = 0 at init)
    x  = x + dx * (rand < fire_rate)                       (stochastic per-cell update)
    x  = x * (alive(x_before) & alive(x_after))            (alive = maxpool3(alpha) > 0.1)

Training (`train`) uses the sample pool: batches are drawn from a pool of states, rolled
out for a random number of steps, scored by MSE on the visible channels against their
targets, written back; the worst one is replaced by a fresh start, and (optionally) the
best ones are damaged by a random disc. Adam with per-variable gradient normalisation
g / (|g| + 1e-8). The same code trains the emoji grower (one RGBA target, grown from one
seed cell) and the cue-recall NCA of the baseline comparison (several gray targets, each
regrown from its 15% cue).

SSIM/PSNR and the radially averaged power spectrum used by the growth diagnostics live
here too (pure tensor/array functions).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as Fn

from models.adam import adam_state, adam_step

CHANNELS = 16
HIDDEN = 128
FIRE_RATE = 0.5
ALIVE_THRESHOLD = 0.1


class NCA(nn.Module):
    """The original update rule. forward(x, steps) runs `steps` stochastic updates."""

    def __init__(self, channels: int = CHANNELS, hidden: int = HIDDEN,
                 fire_rate: float = FIRE_RATE):
        super().__init__()
        if channels < 4:
            raise ValueError(f"channels={channels}: need at least 4 (RGBA)")
        if not 0.0 < fire_rate <= 1.0:
            raise ValueError(f"fire_rate={fire_rate} must be in (0, 1]")
        self.channels, self.hidden, self.fire_rate = channels, hidden, fire_rate
        ident = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
        sobel_x = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])) / 8
        kernels = torch.stack([ident, sobel_x, sobel_x.t()])            # (3, 3, 3)
        # depthwise: for each channel c, outputs [c, dx c, dy c]
        self.register_buffer("kernel", kernels.repeat(channels, 1, 1).unsqueeze(1))
        self.w1 = nn.Conv2d(3 * channels, hidden, 1)
        self.w2 = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.w2.weight)
        nn.init.zeros_(self.w2.bias)

    def alive(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) bool: a living cell or a neighbour of one."""
        return Fn.max_pool2d(x[:, 3:4], 3, stride=1, padding=1) > ALIVE_THRESHOLD

    def perceive(self, x: torch.Tensor) -> torch.Tensor:
        return Fn.conv2d(x, self.kernel, padding=1, groups=self.channels)

    def step(self, x: torch.Tensor, generator: torch.Generator | None = None,
             fire_rate: float | None = None) -> torch.Tensor:
        """One stochastic update of a (B, C, H, W) state. Pure: returns the new state."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"state has shape {tuple(x.shape)}; expected (B, {self.channels}, H, W)")
        rate = self.fire_rate if fire_rate is None else fire_rate
        pre = self.alive(x)
        dx = self.w2(torch.relu(self.w1(self.perceive(x))))
        if rate < 1.0:
            u = torch.rand(x.shape[0], 1, *x.shape[2:], generator=generator,
                           device=x.device, dtype=x.dtype) if generator is not None else \
                torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
            dx = dx * (u < rate).to(x.dtype)
        x = x + dx
        return x * (pre & self.alive(x)).to(x.dtype)

    def forward(self, x: torch.Tensor, steps: int = 1, generator=None) -> torch.Tensor:
        for _ in range(int(steps)):
            x = self.step(x, generator)
        return x

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def seed_state(batch: int, height: int, width: int, channels: int = CHANNELS,
               device=None, dtype=torch.float32) -> torch.Tensor:
    """The original start: all zeros except one centre cell with channels 3.. set to 1."""
    x = torch.zeros(batch, channels, height, width, device=device, dtype=dtype)
    x[:, 3:, height // 2, width // 2] = 1.0
    return x


def cue_state(cue: torch.Tensor, channels: int = CHANNELS) -> torch.Tensor:
    """Start for cue recall: channel 0 = the (B, H, W) cue, alpha = 1 everywhere (every
    cell of the medium is alive, as in the Gray-Scott grid), other channels 0."""
    B, H, W = cue.shape
    x = torch.zeros(B, channels, H, W, device=cue.device, dtype=cue.dtype)
    x[:, 0] = cue
    x[:, 3] = 1.0
    return x


def damage_disc(x: torch.Tensor, radius: float, center=None) -> torch.Tensor:
    """Zero every channel inside a disc (dist < radius) at `center` (x, y); default the
    grid centre. Returns a new tensor."""
    H, W = x.shape[-2:]
    cx, cy = (W // 2, H // 2) if center is None else center
    yy, xx = torch.meshgrid(torch.arange(H, device=x.device), torch.arange(W, device=x.device),
                            indexing="ij")
    keep = ((xx - cx) ** 2 + (yy - cy) ** 2 >= radius ** 2).to(x.dtype)
    return x * keep


def rgba(x: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) RGBA read-out clamped to [0, 1]."""
    return x[:, :4].clamp(0.0, 1.0)


def _check_training(targets, batch, pool_size, rollout) -> tuple[int, int]:
    if targets.dim() != 4:
        raise ValueError(f"targets has shape {tuple(targets.shape)}; expected (T, V, H, W)")
    if batch > pool_size:
        raise ValueError(f"batch={batch} larger than pool_size={pool_size}")
    lo, hi = int(rollout[0]), int(rollout[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"rollout={rollout} must satisfy 1 <= low <= high")
    return lo, hi


@torch.no_grad()
def _damage_best(x, targets, tidx, damage_best, damage_radius, g) -> None:
    """Zero a random disc in the `damage_best` members of x closest to their targets
    (the regeneration curriculum), in place."""
    H, W = x.shape[-2:]
    prev = ((x[:, :targets.shape[1]] - targets[tidx]) ** 2).mean((1, 2, 3))
    for b in prev.argsort()[:damage_best].tolist():
        r = float(torch.empty(1).uniform_(*damage_radius, generator=g)) * H / 2
        c = (int(torch.randint(W // 4, 3 * W // 4, (1,), generator=g)),
             int(torch.randint(H // 4, 3 * H // 4, (1,), generator=g)))
        x[b:b + 1] = damage_disc(x[b:b + 1], r, c)


def _normalised_adam_step(params, adam, t: int, lr: float) -> None:
    """Adam on per-variable normalised gradients g / (|g| + 1e-8)."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad /= p.grad.norm() + 1e-8
        adam_step(params, [p.grad for p in params], adam, t, lr)


def train(model: NCA, targets: torch.Tensor, start_fn, steps: int, pool_size: int = 256,
          batch: int = 8, rollout=(64, 96), lr: float = 2e-3, lr_drop_step: int = 2000,
          damage_best: int = 0, damage_radius=(0.1, 0.4), seed: int = 0,
          time_budget_s: float | None = None, progress: str | None = None) -> dict:
    """Sample-pool training, as in the original notebook. Trains `model` in place.

    targets: (T, V, H, W), V visible channels scored by MSE against x[:, :V].
    start_fn(idx, generator) -> (len(idx), C, H, W) fresh start states for target indices idx.
    Each pool entry is a (state, target index) pair; target indices are spread evenly.
    damage_best > 0: the best `damage_best` of each batch get a random disc of radius
    damage_radius * H/2 zeroed (the regenerating variant).
    Stops after `steps` optimiser steps or `time_budget_s` seconds, whichever is first.
    Returns {"loss": [...], "steps_done", "seconds", "config"}.
    """
    from common.cli import progress as progress_bar

    lo, hi = _check_training(targets, batch, pool_size, rollout)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    V = targets.shape[1]
    pool_idx = torch.arange(pool_size) % targets.shape[0]
    pool = start_fn(pool_idx, g)
    params = [p for p in model.parameters() if p.requires_grad]
    adam = adam_state(params)
    losses, t0 = [], time.perf_counter()
    with progress_bar(steps, progress) as bar:
        for it in range(steps):
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
            sel = torch.randperm(pool_size, generator=g)[:batch]
            x, tidx = pool[sel].clone(), pool_idx[sel]
            if damage_best > 0:
                _damage_best(x, targets, tidx, damage_best, damage_radius, g)
            x = model(x, int(torch.randint(lo, hi + 1, (1,), generator=g)), generator=g)
            per = ((x[:, :V] - targets[tidx]) ** 2).mean((1, 2, 3))
            loss = per.mean()
            if not torch.isfinite(loss):
                raise ValueError(f"NCA training diverged (loss {loss.item()}) at step {it}; "
                                 f"lower --lr")
            for p in params:
                p.grad = None
            loss.backward()
            _normalised_adam_step(params, adam, it + 1, lr * (0.1 if it >= lr_drop_step else 1.0))
            with torch.no_grad():   # back into the pool; the worst member starts afresh
                x = x.detach()
                worst = int(per.argmax())
                x[worst:worst + 1] = start_fn(tidx[worst:worst + 1], g)
                pool[sel] = x
            losses.append(float(loss.detach()))
            bar.update(1)
    return {"loss": losses, "steps_done": len(losses), "seconds": time.perf_counter() - t0,
            "config": {"pool_size": pool_size, "batch": batch, "rollout": [lo, hi], "lr": lr,
                       "lr_drop_step": lr_drop_step, "damage_best": damage_best,
                       "damage_radius": list(damage_radius), "seed": seed,
                       "steps_requested": steps, "time_budget_s": time_budget_s}}


def write_weights(model: NCA, path, meta: dict) -> None:
    """save_weights into a temporary file beside `path`, then renamed into place: an
    interrupted write leaves the previous weights whole."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_weights(model, tmp, meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(model: NCA, path, meta: dict) -> None:
    """Tensors, numbers, strings, lists and dicts only, so `load_weights` can read the
    file without unpickling arbitrary objects."""
    torch.save({"state_dict": model.state_dict(), "channels": model.channels,
                "hidden": model.hidden, "fire_rate": model.fire_rate, "meta": meta}, path)


def load_weights(path, device=None) -> tuple[NCA, dict]:
    """Model and meta from a `save_weights` file. Only tensors and plain containers are
    unpickled (torch.load(weights_only=True)): a file holding any other object, which could
    run code on loading, is refused with a one-line ValueError."""
    import pickle
    import warnings

    def refuse(why):
        return ValueError(f"cannot load NCA weights from {path}: {why}")

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NCA weights not found: {path}")
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location=device or "cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported" in ln), "")
        detail = detail.split(" was not")[0].replace("WeightsUnpickler error: ", "")
        raise refuse(f"refused, not a file of tensors and plain data only (loading other "
                     f"objects could run code){'; ' + detail if detail else ''}") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeDecodeError) as exc:   # what garbage bytes raise in torch.load
        raise refuse(f"not a readable torch file ({exc.__class__.__name__})") from None
    keys = ("state_dict", "channels", "hidden", "fire_rate")
    if not isinstance(blob, dict) or any(k not in blob for k in keys):
        raise refuse(f"expected a dict with keys {', '.join(keys)}")
    try:
        model = NCA(int(blob["channels"]), int(blob["hidden"]), float(blob["fire_rate"]))
        model.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise refuse(f"weights do not fit the NCA ({exc.__class__.__name__})") from None
    meta = blob.get("meta", {})
    return model.to(device or "cpu"), meta if isinstance(meta, dict) else {}


# ---- diagnostics (pure functions) ------------------------------------------------------

def _gauss_window(size=11, sigma=1.5, dtype=torch.float64):
    ax = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
    valid region only) of (B, C, H, W) images against (C, H, W) or (B, C, H, W); per member."""
    a = a.to(torch.float64)
    b = b.to(torch.float64).expand_as(a)
    C = a.shape[1]
    w = _gauss_window().to(a.device).expand(C, 1, 11, 11)
    f = lambda z: Fn.conv2d(z, w, groups=C)
    mu_a, mu_b = f(a), f(b)
    saa = f(a * a) - mu_a ** 2
    sbb = f(b * b) - mu_b ** 2
    sab = f(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per member; capped at 100 dB for identical images."""
    mse = ((a.to(torch.float64) - b.to(torch.float64).expand_as(a)) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))).clamp(max=100.0)


def radial_power_spectrum(img: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of a (H, W) (or (C, H, W), averaged over C) image,
    mean removed; bin r = integer distance from the zero frequency, r < min(H, W) // 2."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(0)
    P = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    H, W = P.shape
    y, x = np.indices((H, W))
    r = np.hypot(x - W // 2, y - H // 2).astype(int)
    rmax = min(H, W) // 2
    sums = np.bincount(r.ravel(), weights=P.ravel(), minlength=rmax)[:rmax]
    counts = np.bincount(r.ravel(), minlength=rmax)[:rmax]
    return sums / np.maximum(counts, 1)
