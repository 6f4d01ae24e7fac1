"""Backpropagation through the Gray-Scott substrate.

The physics is substrate.gray_scott_step; this module only unrolls it with autograd:

* `rollout`: T steps, the first T - grad_steps without a graph (truncated BPTT), the
  last grad_steps with one, optionally cut into torch.utils.checkpoint segments so the
  memory grows with the segment length, not with the rollout length.
* pattern losses that compare patterns, not pixels (translation invariant):
  `radial_spectrum_loss` (radially averaged log power spectrum, also rotation
  invariant), `log_spectrum_loss` (Yang's loss, docs/references.md: L2 of the log 2D power
  spectrum)
  and `stats_loss` (quantiles of V plus its mean gradient energy).
* bounded parametrisation of (Du, Dv, F, K): p = lo + (hi - lo) * sigmoid(z), with hi for
  Du, Dv inside the explicit-Euler stability bound (substrate.STENCIL_BOUND), so every
  parameter the optimiser can reach is positive and stable.
* `RecoveryObjective`: loss and gradient of a batch of parameter sets (one per start),
  with the NaN/overflow guard (per member, never raising).
* `fit_gradient`: Adam direction + backtracking on the step size (a rejected step, non-
  finite or worse, is undone and the learning rate halved; an accepted one grows it),
  with a stopping rule, vectorised over starts. `fit_evolution`: a plain (mu/mu, lambda)
  evolution strategy on the same budget of simulated steps (the gradient-free baseline).

Everything is batched over a leading dimension: B starts run as one tensor.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from substrate import STABILITY_LIMIT, STENCIL_BOUND, check_stability, gray_scott_step

PARAM_NAMES = ("Du", "Dv", "F", "K")
OVERFLOW = 1e3           # |U| or |V| above this counts as a blow-up
STABILITY_MARGIN = 0.95  # Du, Dv bounded at 95% of the explicit-Euler limit
F_RANGE = (1e-3, 0.1)    # Yang's 0.1 * sigmoid range for F and k, kept off zero
K_RANGE = (1e-3, 0.1)
D_MIN = 1e-3


@dataclass(frozen=True)
class Physics:
    """How the substrate steps. Default: Yang's setting (docs/references.md: 5-point stencil,
    no decay, no clamp). Physics(stencil="nine_point", decay=DECAY, clamp=True) is the
    reference."""
    stencil: str = "five_point"
    decay: float | None = None
    clamp: bool = False
    dt: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, protocol) -> "Physics":
        """The protocol's substrate (stencil, decay, dt) with the clamp on: the physics a
        field learned by backprop is trained in and then stored with."""
        return cls(stencil=protocol.stencil, decay=protocol.substrate()["decay"], clamp=True,
                   dt=protocol.dt)


# --------------------------------------------------------------------------- parameters
def param_bounds(physics: Physics = Physics(), margin: float = STABILITY_MARGIN) -> torch.Tensor:
    """(4, 2) lower/upper bounds of (Du, Dv, F, K): positive, and Du, Dv stable."""
    d_max = margin * STABILITY_LIMIT / (physics.dt * STENCIL_BOUND[physics.stencil])
    check_stability(d_max, d_max, physics.dt, physics.stencil)  # the bound itself is stable
    return torch.tensor([[D_MIN, d_max], [D_MIN, d_max], list(F_RANGE), list(K_RANGE)],
                        dtype=torch.float64)


def to_params(z: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Unconstrained z (B, 4) -> parameters (B, 4) inside bounds."""
    b = bounds.to(z)
    return b[:, 0] + (b[:, 1] - b[:, 0]) * torch.sigmoid(z)


def to_raw(p: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Parameters (B, 4) strictly inside bounds -> unconstrained z (inverse of to_params)."""
    b = bounds.to(p)
    x = (p - b[:, 0]) / (b[:, 1] - b[:, 0])
    if not ((x > 0) & (x < 1)).all():
        raise ValueError(f"parameters {p.tolist()} are not strictly inside the bounds "
                         f"{bounds.tolist()} (Du, Dv, F, K)")
    return torch.logit(x)


def bounded(a: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Logits -> values in (lo, hi): a learned field's parameterisation."""
    return lo + (hi - lo) * torch.sigmoid(a)


def logit_of(x: float, lo: float, hi: float) -> float:
    """The logit whose `bounded` value is x (lo < x < hi): a learned field's start."""
    return float(np.log((x - lo) / (hi - x)))


def as_fields(p: torch.Tensor):
    """(B, 4) parameters -> Du, Dv, F, K each (B, 1, 1), broadcasting over the grid."""
    p = p.view(-1, 4, 1, 1)
    return p[:, 0], p[:, 1], p[:, 2], p[:, 3]


# --------------------------------------------------------------------------- rollout
def initial_state(seeds, height: int, width: int, dtype=torch.float64, device="cpu",
                  squares: int = 6, size: int = 8, noise: float = 0.02):
    """Yang-style start, one per seed: U = 1 + noise, V = noise, plus `squares` random
    size x size squares set to U = 0.5, V = 0.25; clamped U to [0, 1.5], V to [0, 1].
    Each seed has its own generator, so a seed gives the same state alone or in a batch."""
    Us, Vs = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        U = 1.0 + noise * torch.randn(height, width, generator=g, dtype=torch.float64)
        V = noise * torch.randn(height, width, generator=g, dtype=torch.float64)
        for _ in range(squares):
            r = int(torch.randint(0, height, (1,), generator=g))
            c = int(torch.randint(0, width, (1,), generator=g))
            rows = torch.arange(r, r + size) % height
            cols = torch.arange(c, c + size) % width
            U[rows[:, None], cols[None, :]] = 0.5
            V[rows[:, None], cols[None, :]] = 0.25
        Us.append(U.clamp(0.0, 1.5))
        Vs.append(V.clamp(0.0, 1.0))
    return (torch.stack(Us).to(device=device, dtype=dtype),
            torch.stack(Vs).to(device=device, dtype=dtype))


def _steps(U, V, F, K, Du, Dv, n: int, physics: Physics):
    for _ in range(n):
        U, V = gray_scott_step(U, V, F, K, Du, Dv, physics.dt, physics.decay,
                               physics.stencil, physics.clamp)
    return U, V


def rollout(U, V, F, K, Du, Dv, steps: int, physics: Physics = Physics(),
            grad_steps: int | None = None, checkpoint_every: int = 0):
    """Advance (U, V) `steps` steps; F, K, Du, Dv broadcast against (B, H, W).

    grad_steps=None: full BPTT; otherwise only the last grad_steps carry a graph (the
    earlier ones run under no_grad: truncated BPTT). checkpoint_every > 0 wraps each
    segment of that many graph steps in torch.utils.checkpoint (recomputed in backward).
    """
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps={steps} must be a non-negative integer")
    g = steps if grad_steps is None else max(0, min(int(grad_steps), steps))
    free = steps - g
    if free:
        with torch.no_grad():
            U, V = _steps(U, V, _detach(F), _detach(K), _detach(Du), _detach(Dv), free,
                          physics)
    done = 0
    while done < g:
        n = min(checkpoint_every, g - done) if checkpoint_every > 0 else g - done
        if checkpoint_every > 0:
            U, V = checkpoint(_steps, U, V, F, K, Du, Dv, n, physics, use_reentrant=False)
        else:
            U, V = _steps(U, V, F, K, Du, Dv, n, physics)
        done += n
    return U, V


def _detach(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


# --------------------------------------------------------------------------- losses
def _centred(V):
    return V - V.mean(dim=(-2, -1), keepdim=True)


def _expand_target(V, target):
    target = target.to(V)
    if target.dim() == 2:
        target = target.expand_as(V)
    if target.shape != V.shape:
        raise ValueError(f"V has shape {tuple(V.shape)} but target {tuple(target.shape)}")
    return target


def log_spectrum(V, eps: float = 1e-8):
    """Yang's spectrum: log(|FFT2(v - mean v)|^2 + eps), shape (B, H, W)."""
    return torch.log(torch.fft.fft2(_centred(V)).abs().square() + eps)


def log_spectrum_loss(V, target, eps: float = 1e-8):
    """Mean squared difference of the log 2D power spectra (Yang's loss), (B,)."""
    target = _expand_target(V, target)
    return (log_spectrum(V, eps) - log_spectrum(target, eps)).square().mean(dim=(-2, -1))


def _radial_index(height, width, device):
    ky = torch.fft.fftfreq(height, device=device) * height
    kx = torch.fft.fftfreq(width, device=device) * width
    r = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long()
    return r, min(height, width) // 2


def radial_spectrum(V, eps: float = 1e-6):
    """log of the radially averaged power spectrum of v - mean v, bins |k| = 1 .. N/2
    (cycles per grid), shape (B, N/2). Translation and rotation invariant."""
    H, W = V.shape[-2:]
    P = torch.fft.fft2(_centred(V)).abs().square() / (H * W)
    r, nbins = _radial_index(H, W, V.device)
    flat = P.flatten(-2)
    idx = r.flatten().expand_as(flat)
    sums = torch.zeros(*flat.shape[:-1], r.max() + 1, dtype=P.dtype, device=P.device)
    sums = sums.scatter_add(-1, idx, flat)
    counts = torch.bincount(r.flatten(), minlength=int(r.max()) + 1).to(P)
    return torch.log(sums / counts + eps)[..., 1:nbins + 1]


def radial_spectrum_loss(V, target, eps: float = 1e-6):
    """Mean squared difference of the log radially averaged power spectra, (B,)."""
    target = _expand_target(V, target)
    return (radial_spectrum(V, eps) - radial_spectrum(target, eps)).square().mean(-1)


STAT_QUANTILES = 32


def pattern_stats(V):
    """(B, Q + 1): Q evenly spaced quantiles of V (differentiable through sort) and the
    root mean squared gradient (the pattern's length scale times its contrast)."""
    flat = V.flatten(-2).sort(dim=-1).values
    n = flat.shape[-1]
    ranks = torch.linspace(0, n - 1, STAT_QUANTILES, device=V.device).round().long()
    q = flat[..., ranks]
    gy = V - V.roll(1, dims=-2)
    gx = V - V.roll(1, dims=-1)
    grad = torch.sqrt((gx.square() + gy.square()).mean(dim=(-2, -1)) + 1e-12)
    return torch.cat([q, grad.unsqueeze(-1)], dim=-1)


def stats_loss(V, target):
    """Statistics matching: squared distance of pattern_stats (value distribution and
    gradient energy; translation and rotation invariant), scaled by 100, (B,)."""
    target = _expand_target(V, target)
    return 100.0 * (pattern_stats(V) - pattern_stats(target)).square().mean(-1)


def combined_loss(V, target):
    """stats_loss + radial_spectrum_loss: the statistics give a gradient where the
    spectra have none (a uniform, pattern-free state), the spectrum pins the length
    scale once a pattern exists, (B,)."""
    return stats_loss(V, target) + radial_spectrum_loss(V, target)


LOSSES = {"radial": radial_spectrum_loss, "log2d": log_spectrum_loss, "stats": stats_loss,
          "combined": combined_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


# --------------------------------------------------------------------------- NaN guard
def finite_members(*tensors) -> torch.Tensor:
    """(B,) bool: members whose every value is finite and below OVERFLOW in magnitude."""
    ok = None
    for t in tensors:
        f = torch.isfinite(t) & (t.abs() < OVERFLOW)
        f = f.flatten(1).all(1) if t.dim() > 1 else f
        ok = f if ok is None else ok & f
    return ok


# --------------------------------------------------------------------------- objective
class RecoveryObjective:
    """Pattern loss of a batch of parameter sets against one target V field.

    Each member starts from its own initial state (U0[i], V0[i]); the loss compares the V
    field after `steps` steps with `target` (H, W). `sim_steps` counts the cost: one per
    member and forward step, plus 2 per member and backpropagated step.
    """

    def __init__(self, target, U0, V0, steps, loss="radial", physics: Physics = Physics(),
                 grad_steps=None, checkpoint_every=0, bounds=None):
        self.target, self.U0, self.V0 = target, U0, V0
        self.steps, self.grad_steps = int(steps), grad_steps
        self.checkpoint_every = int(checkpoint_every)
        self.loss_name, self.loss_fn = loss, get_loss(loss)
        self.physics = physics
        self.bounds = param_bounds(physics) if bounds is None else bounds
        self.sim_steps = 0

    def __call__(self, z, members=None, need_grad=True):
        """z (b, 4) unconstrained; members: indices into U0/V0 (default 0..b-1).
        Returns (loss (b,), grad dloss/dz (b, 4) or None, final V (b, H, W), ok (b,))."""
        idx = torch.arange(z.shape[0]) if members is None else torch.as_tensor(members)
        U, V = self.U0[idx], self.V0[idx]
        g = self.steps if self.grad_steps is None else min(self.grad_steps, self.steps)
        z = z.detach().to(U.dtype).requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            Du, Dv, F, K = as_fields(to_params(z, self.bounds))
            U, V = rollout(U, V, F, K, Du, Dv, self.steps, self.physics,
                           grad_steps=g if need_grad else 0,
                           checkpoint_every=self.checkpoint_every)
            ok = finite_members(U, V)
            # a blown-up member would poison the batch's backward: mask its state first
            Vs = torch.where(ok.view(-1, 1, 1), V, torch.zeros_like(V))
            loss = self.loss_fn(Vs, self.target)
            ok = ok & torch.isfinite(loss)
            grad = None
            if need_grad:
                grad, = torch.autograd.grad(torch.where(ok, loss, 0.0).sum(), z)
                ok = ok & torch.isfinite(grad).all(1)
        self.sim_steps += len(idx) * (self.steps + (2 * g if need_grad else 0))
        loss = torch.where(ok, loss.detach(), torch.full_like(loss.detach(), math.inf))
        return loss, grad, V.detach(), ok


# --------------------------------------------------------------------------- optimisers
@dataclass
class FitConfig:
    lr: float = 0.1          # initial step in z (logit) space
    lr_max: float = 0.5
    lr_min: float = 1e-3     # stop a start whose step fell below this
    grow: float = 1.2        # lr *= grow after an accepted step
    cut: float = 0.5         # lr *= cut after a rejected (worse or non-finite) step
    slack: float = 1e-3      # accept a step if loss <= accepted loss * (1 + slack)
    patience: int = 8        # stop after this many evaluations without a 1e-3 improvement
    flat_grad: float = 1e-10  # |dloss/dz| below this everywhere: a plateau, stop/restart
    rel_improve: float = 1e-3
    max_iters: int = 60
    budget_steps: int | None = None  # stop when the objective has spent this many
    betas: tuple = (0.9, 0.999)


class _Starts:
    """The per-start state of fit_gradient (rows of z0): the accepted point and its loss,
    the proposal, Adam moments and direction, step size, best points (of this run of the
    start and over its restarts), and the record of every evaluation."""

    def __init__(self, z0: torch.Tensor, cfg: FitConfig):
        B = z0.shape[0]
        self.cfg = cfg
        self.z_acc, self.z = z0.clone(), z0.clone()
        self.loss_acc = torch.full((B,), math.inf, dtype=torch.float64)
        self.best = torch.full((B,), math.inf, dtype=torch.float64)       # this run
        self.best_ever = torch.full((B,), math.inf, dtype=torch.float64)  # over restarts
        self.z_best = z0.clone()
        self.lr = torch.full((B,), cfg.lr, dtype=torch.float64)
        self.m, self.v = torch.zeros_like(z0), torch.zeros_like(z0)
        self.t = torch.zeros(B)
        self.direction = torch.zeros_like(z0)
        self.since_best = torch.zeros(B, dtype=torch.long)
        self.active = torch.ones(B, dtype=torch.bool)
        self.stop_reason, self.restarts = [""] * B, [0] * B
        self.history = [[] for _ in range(B)]         # (evaluation, loss, accepted) per start
        self.run_path = [[z0[i].tolist()] for i in range(B)]  # accepted z of the current run
        self.best_path = [list(p) for p in self.run_path]     # ... of the run with best_ever
        self.events = []

    def step(self, i, it, li, ok, grad, bounds, restart, log) -> None:
        """One evaluation of start i (loss li, finite ok, gradient grad): record it, accept
        or reject it, propose the next point, and restart or stop the start when a
        stopping rule fires."""
        accepted = ok and bool(li <= self.loss_acc[i] * (1 + self.cfg.slack))
        self.history[i].append((it, li if math.isfinite(li) else None, accepted))
        if not ok:
            self._non_finite(i, it, bounds, log)
        if accepted:
            self._accept(i, li, grad)
        else:
            self.since_best[i] += 1
            self.lr[i] *= self.cfg.cut
        self.z[i] = self.z_acc[i] - self.lr[i] * self.direction[i]
        if not math.isfinite(float(self.loss_acc[i])):
            # even the start point failed: nothing accepted to go back to; shrink it
            self.z[i] = 0.5 * self.z_acc[i]
            self.z_acc[i] = self.z[i]
        reason = self._stop_reason(i, accepted, grad)
        if reason and restart is not None:
            self._restart(i, restart(i))
            if log:
                log(f"restart: start {i} iteration {it} ({reason})")
        elif reason:
            self.active[i], self.stop_reason[i] = False, reason

    def _non_finite(self, i, it, bounds, log) -> None:
        lr, cut = float(self.lr[i]), float(self.lr[i] * self.cfg.cut)
        params = to_params(self.z[i:i + 1], bounds)[0].tolist()
        self.events.append({"iteration": it, "start": i, "event": "non-finite",
                            "lr_before": lr, "lr_after": cut, "params": params})
        if log:
            log(f"NaN guard: start {i} iteration {it}: non-finite state/loss/grad at "
                f"{params}; step rejected, lr {lr:.3g} -> {cut:.3g}")

    def _accept(self, i, li, grad) -> None:
        """Take the proposal of start i and update its Adam direction."""
        cfg = self.cfg
        if li < self.best[i] * (1 - cfg.rel_improve):
            self.since_best[i] = 0
        else:
            self.since_best[i] += 1
        self.best[i] = min(self.best[i], li)
        self.z_acc[i], self.loss_acc[i] = self.z[i], li
        self.run_path[i].append(self.z[i].tolist())
        if li < self.best_ever[i]:
            self.best_ever[i], self.z_best[i] = li, self.z[i]
            self.best_path[i] = list(self.run_path[i])
        if self.t[i] > 0:
            self.lr[i] = min(self.lr[i] * cfg.grow, cfg.lr_max)
        g = grad.to(self.m)
        b1, b2 = cfg.betas
        self.t[i] += 1
        self.m[i] = b1 * self.m[i] + (1 - b1) * g
        self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
        mh = self.m[i] / (1 - b1 ** self.t[i])
        vh = self.v[i] / (1 - b2 ** self.t[i])
        self.direction[i] = mh / (vh.sqrt() + 1e-12)

    def _stop_reason(self, i, accepted, grad) -> str:
        cfg = self.cfg
        if accepted and float(grad.abs().max()) < cfg.flat_grad:
            return "flat: zero gradient (a pattern-free plateau)"
        if self.lr[i] < cfg.lr_min:
            return "step below lr_min"
        if self.since_best[i] >= cfg.patience:
            return f"no improvement in {cfg.patience}"
        return ""

    def _restart(self, i, z_new) -> None:
        """Start i begins again at z_new, keeping its best point ever."""
        self.restarts[i] += 1
        self.z[i] = self.z_acc[i] = z_new.to(self.z)
        self.loss_acc[i] = self.best[i] = math.inf
        self.lr[i], self.t[i], self.since_best[i] = self.cfg.lr, 0, 0
        self.m[i], self.v[i], self.direction[i] = 0, 0, 0
        self.run_path[i] = [self.z[i].tolist()]


def fit_gradient(objective: RecoveryObjective, z0: torch.Tensor, cfg: FitConfig = FitConfig(),
                 progress=None, log=None, restart=None) -> dict:
    """Gradient descent with backtracking, vectorised over starts (rows of z0).

    Per start: evaluate loss and gradient at the proposal; if it is non-finite (the NaN
    guard) or worse than the last accepted point, reject it, halve the step and retry
    along the last accepted Adam direction; otherwise accept, grow the step, update the
    Adam moments and propose the next point. A start stops when its step falls below
    lr_min or after `patience` evaluations without improvement; with `restart` (a
    callable i -> new z row) a stopped start begins again from a fresh point while budget
    is left (multi-start with restarts), keeping its best point ever. Everything stops
    at max_iters evaluations or at the budget.
    """
    from common.cli import progress as progress_bar

    st = _Starts(z0, cfg)
    start = time.time()
    it = 0
    with progress_bar(cfg.max_iters, progress) as bar:
        for it in range(1, cfg.max_iters + 1):
            idx = st.active.nonzero().flatten()
            if len(idx) == 0:
                break
            if cfg.budget_steps is not None and objective.sim_steps >= cfg.budget_steps:
                for i in idx.tolist():
                    st.stop_reason[i] = "budget"
                break
            loss, grad, _, ok = objective(st.z[idx], members=idx)
            for j, i in enumerate(idx.tolist()):
                st.step(i, it, float(loss[j]), bool(ok[j]), grad[j], objective.bounds,
                        restart, log)
            bar.update(1)
    stop_reason = [r or "max_iters" for r in st.stop_reason]
    return {"z": st.z_best, "params": to_params(st.z_best, objective.bounds),
            "loss": st.best_ever, "best_start": int(torch.argmin(st.best_ever)),
            "history": st.history, "path": st.best_path, "events": st.events,
            "iterations": it, "stop_reason": stop_reason, "restarts": st.restarts,
            "sim_steps": objective.sim_steps, "wall_s": time.time() - start}


def _evolve_start(objective, z_start, per_start, popsize, sigma0, gen, restart, b,
                  sigma_min, patience):
    """One start of fit_evolution: generations of `popsize` candidates around the mean
    until the start's budget is spent. Returns (best z, best loss, history, path,
    restarts)."""
    spent0 = objective.sim_steps
    mean, sigma, mu = z_start.clone(), sigma0, max(1, popsize // 4)
    best_z, best_l, run_best = z_start.clone(), math.inf, math.inf
    hist, pth, restarts = [], [mean.tolist()], 0
    fresh, stall = True, 0
    while objective.sim_steps - spent0 + popsize * objective.steps <= per_start:
        cand = mean + sigma * torch.randn(popsize, 4, generator=gen, dtype=z_start.dtype)
        if fresh:
            cand[0], fresh = mean, False
        loss, _, _, _ = objective(cand, need_grad=False)
        order = torch.argsort(loss)
        lb = float(loss[order[0]])
        if lb < run_best * (1 - 1e-3):
            run_best, stall = lb, 0
            sigma *= 1.2
        else:
            sigma *= 0.82
            stall += 1
        if lb < best_l:
            best_l, best_z = lb, cand[order[0]].clone()
            pth.append(best_z.tolist())
        mean = cand[order[:mu]].mean(0)
        hist.append((objective.sim_steps - spent0, best_l))
        if (sigma < sigma_min or stall >= patience) and restart is not None:
            mean, sigma, run_best, fresh = restart(b).to(z_start), sigma0, math.inf, True
            restarts, stall = restarts + 1, 0
    return best_z, best_l, hist, pth, restarts


def fit_evolution(objective: RecoveryObjective, z0: torch.Tensor, budget_steps: int,
                  popsize: int = 8, sigma0: float = 0.5, seed: int = 0, progress=None,
                  restart=None, sigma_min: float = 0.02, patience: int = 3) -> dict:
    """(mu/mu, lambda) evolution strategy in z space, one run per start (rows of z0),
    the budget split equally among starts. Each generation evaluates `popsize`
    candidates as one batch from the start's own initial state; the mean moves to the
    average of the best quarter; sigma grows 1.2x when a generation improves on the best
    so far and shrinks 0.82x otherwise (a 1/5th-success-style rule); with `restart`, a
    run whose sigma fell below sigma_min, or that has not improved for `patience`
    generations, begins again from restart(i). Non-finite
    candidates score +inf (the same guard as the gradient)."""
    from common.cli import progress as progress_bar

    B = z0.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    per_start = budget_steps // B
    out_z, out_loss, history, path, restarts = [], [], [], [], []
    start = time.time()
    U0, V0 = objective.U0, objective.V0
    with progress_bar(B, progress) as bar:
        for b in range(B):
            # evaluate all candidates of this start from its own initial state
            objective.U0 = U0[b:b + 1].expand(popsize, -1, -1)
            objective.V0 = V0[b:b + 1].expand(popsize, -1, -1)
            z, loss, hist, pth, nr = _evolve_start(objective, z0[b], per_start, popsize,
                                                   sigma0, gen, restart, b, sigma_min,
                                                   patience)
            objective.U0, objective.V0 = U0, V0
            out_z.append(z)
            out_loss.append(loss)
            history.append(hist)
            path.append(pth)
            restarts.append(nr)
            bar.update(1)
    z = torch.stack(out_z)
    loss = torch.tensor(out_loss, dtype=torch.float64)
    return {"z": z, "params": to_params(z, objective.bounds), "loss": loss,
            "best_start": int(torch.argmin(loss)), "history": history, "path": path,
            "restarts": restarts, "sim_steps": objective.sim_steps,
            "wall_s": time.time() - start}


# --------------------------------------------------------------------------- scars
def cosine(V, target):
    """Differentiable cosine similarity per member, (B,) (metrics.cosine_similarity
    without its empty-field rule, which has no gradient)."""
    v, t = V.flatten(1), _expand_target(V, target).flatten(1)
    return (v * t).sum(1) / (v.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-12)


__all__ = ["Physics", "PARAM_NAMES", "param_bounds", "to_params", "to_raw", "as_fields",
           "initial_state", "rollout", "LOSSES", "get_loss", "radial_spectrum_loss",
           "log_spectrum_loss", "stats_loss", "finite_members", "RecoveryObjective",
           "FitConfig", "fit_gradient", "fit_evolution", "cosine"]
